//! Kubernetes Events on status transitions, and the per-object bookkeeping behind the
//! `soci_operator_images{reason}` and `soci_operator_job_slots_waiting` gauges. The comparisons
//! are pure (old status vs new status), so an Event is emitted once per transition, never on
//! every reconcile.

use crate::api::condition::{self, LAZY_LOAD_READY, STALLED};
use crate::api::{ConditionStatus, ImageStatus, SociIndexStatus};
use crate::reason::Reason;
use std::collections::{BTreeMap, HashMap};

pub const BUILD_STARTED: &str = "BuildStarted";
pub const READY_EVENT: &str = "Ready";
pub const BUILD_FAILED_EVENT: &str = "BuildFailed";
pub const STALLED_EVENT: &str = "Stalled";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// The condition reason behind a failure (counted in `soci_operator_reconcile_errors_total`).
    pub failure_reason: Option<String>,
}

/// The Events a status change deserves: an image became ready, an image's build failed (a new
/// failure, permanent or retried), the object became Stalled (or stalled for another reason).
/// `BuildStarted` is emitted where the Job is created.
pub fn transitions(old: Option<&SociIndexStatus>, new: &SociIndexStatus) -> Vec<Notice> {
    let mut notices = Vec::new();
    let mut ready = Vec::new();
    for image in &new.images {
        let Some(now) = condition::find(&image.conditions, LAZY_LOAD_READY) else {
            continue;
        };
        let before = old
            .and_then(|o| o.images.iter().find(|i| i.name == image.name))
            .and_then(|i| condition::find(&i.conditions, LAZY_LOAD_READY));
        if now.status == ConditionStatus::True {
            if !before.is_some_and(|b| b.status == ConditionStatus::True) {
                ready.push((image.name.as_str(), now.message.as_str()));
            }
            continue;
        }
        // A permanent failure is one transition; a retried one is new with every attempt
        // (its message names the failed Job).
        let repeat = before.is_some_and(|b| {
            b.status == now.status
                && b.reason == now.reason
                && (now.status == ConditionStatus::False || b.message == now.message)
        });
        if is_build_failure(&now.reason) && !repeat {
            notices.push(Notice {
                warning: true,
                reason: BUILD_FAILED_EVENT,
                note: format!("image {}: {}: {}", image.name, now.reason, now.message),
                failure_reason: Some(now.reason.clone()),
            });
        }
    }
    // One Event for every image that became ready in this reconcile (an object of many images
    // already bound would otherwise write one per image).
    let note = match ready.as_slice() {
        [] => None,
        [(name, message)] => Some(format!("image {name}: {message}")),
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
            let mut note = format!("{} images became ready: {}", many.len(), names.join(", "));
            condition::truncate(&mut note, 1024);
            Some(note)
        }
    };
    if let Some(note) = note {
        notices.insert(
            0,
            Notice {
                warning: false,
                reason: READY_EVENT,
                note,
                failure_reason: None,
            },
        );
    }
    if let Some(stalled) = condition::find(&new.conditions, STALLED)
        && stalled.status == ConditionStatus::True
    {
        let before = old.and_then(|o| condition::find(&o.conditions, STALLED));
        if !before.is_some_and(|b| b.status == ConditionStatus::True && b.reason == stalled.reason)
        {
            notices.push(Notice {
                warning: true,
                reason: STALLED_EVENT,
                note: format!("{}: {}", stalled.reason, stalled.message),
                // Build failures are counted with their image's BuildFailed Event already.
                failure_reason: (!is_build_failure(&stalled.reason))
                    .then(|| stalled.reason.clone()),
            });
        }
    }
    notices
}

fn is_build_failure(why: &str) -> bool {
    use Reason::*;
    matches!(
        Reason::parse(why),
        Some(BuildFailed | VerificationFailed | DeadlineExceeded | NoIndexableLayers)
    )
}

/// What each object contributes to the gauges, keyed `namespace/name`.
#[derive(Debug, Default)]
pub struct ObjectStats {
    objects: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    status: SociIndexStatus,
    queued: usize,
}

impl ObjectStats {
    /// The status last planned for the object by this process.
    pub fn previous(&self, key: &str) -> Option<&SociIndexStatus> {
        self.objects.get(key).map(|e| &e.status)
    }

    /// Keeps what the Events and gauges read (conditions, per image its name and conditions):
    /// the rest of a status is large, and the object store has it already.
    pub fn update(&mut self, key: &str, status: SociIndexStatus, queued: usize) {
        let status = SociIndexStatus {
            conditions: status.conditions,
            images: status
                .images
                .into_iter()
                .map(|i| ImageStatus {
                    name: i.name,
                    conditions: i.conditions,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.objects
            .insert(key.to_string(), Entry { status, queued });
    }

    pub fn remove(&mut self, key: &str) {
        self.objects.remove(key);
    }

    /// Drops objects that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.objects.retain(|k, _| exists(k));
    }

    /// Images by their `LazyLoadReady` reason, over every object.
    pub fn reasons(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for entry in self.objects.values() {
            for image in &entry.status.images {
                if let Some(c) = condition::find(&image.conditions, LAZY_LOAD_READY) {
                    *counts.entry(c.reason.clone()).or_default() += 1;
                }
            }
        }
        counts
    }

    pub fn queued(&self) -> usize {
        self.objects.values().map(|e| e.queued).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, ImageStatus};

    fn status(
        images: &[(&str, ConditionStatus, &str, &str)],
        stalled: Option<&str>,
    ) -> SociIndexStatus {
        SociIndexStatus {
            images: images
                .iter()
                .map(|(name, s, why, message)| ImageStatus {
                    name: name.to_string(),
                    conditions: vec![Condition::new(LAZY_LOAD_READY, *s, why, *message)],
                    ..Default::default()
                })
                .collect(),
            conditions: stalled
                .map(|why| vec![Condition::new(STALLED, ConditionStatus::True, why, "m")])
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn reasons(n: &[Notice]) -> Vec<&str> {
        n.iter().map(|n| n.reason).collect()
    }

    use ConditionStatus::{False, True, Unknown};

    #[test]
    fn events_follow_transitions_only() {
        let building = status(&[("web", Unknown, "Building", "Job a is building")], None);
        let ready = status(&[("web", True, "Verified", "deploy x")], None);
        let failed = status(
            &[("web", False, "BuildFailed", "exit 1")],
            Some("BuildFailed"),
        );
        let retrying = status(
            &[("web", Unknown, "BuildFailed", "Job a: 503; retrying")],
            None,
        );
        let retrying_again = status(
            &[("web", Unknown, "BuildFailed", "Job b: 503; retrying")],
            None,
        );
        let not_found = status(
            &[("web", False, "ImageNotFound", "gone")],
            Some("ImageNotFound"),
        );
        let queued = status(&[("web", Unknown, "Queued", "waiting")], None);
        let cases: Vec<(&str, Option<&SociIndexStatus>, &SociIndexStatus, Vec<&str>)> = vec![
            ("first look, building", None, &building, vec![]),
            ("first look, already ready", None, &ready, vec![READY_EVENT]),
            ("build finished", Some(&building), &ready, vec![READY_EVENT]),
            ("still ready", Some(&ready), &ready, vec![]),
            ("still building", Some(&building), &building, vec![]),
            ("queued", Some(&building), &queued, vec![]),
            (
                "build failed for good",
                Some(&building),
                &failed,
                vec![BUILD_FAILED_EVENT, STALLED_EVENT],
            ),
            ("still failed", Some(&failed), &failed, vec![]),
            (
                "transient failure",
                Some(&building),
                &retrying,
                vec![BUILD_FAILED_EVENT],
            ),
            ("same transient failure", Some(&retrying), &retrying, vec![]),
            (
                "next attempt failed",
                Some(&retrying),
                &retrying_again,
                vec![BUILD_FAILED_EVENT],
            ),
            (
                "stalled for another reason",
                Some(&failed),
                &not_found,
                vec![STALLED_EVENT],
            ),
            (
                "not found from the start",
                None,
                &not_found,
                vec![STALLED_EVENT],
            ),
            ("recovered", Some(&failed), &ready, vec![READY_EVENT]),
        ];
        for (what, old, new, want) in cases {
            let got = transitions(old, new);
            assert_eq!(reasons(&got), want, "{what}");
            for n in &got {
                assert_eq!(n.warning, n.reason != READY_EVENT, "{what}");
                assert!(
                    n.note.contains("web") || n.reason == STALLED_EVENT,
                    "{what}"
                );
            }
        }
        let failure = &transitions(Some(&building), &failed)[0];
        assert_eq!(failure.failure_reason.as_deref(), Some("BuildFailed"));
        assert!(failure.note.contains("exit 1"));
    }

    #[test]
    fn images_ready_together_make_one_event() {
        let building = status(
            &[
                ("a", Unknown, "Building", "Job 1"),
                ("b", Unknown, "Building", "Job 2"),
                ("c", True, "Verified", "deploy c"),
            ],
            None,
        );
        let ready = status(
            &[
                ("a", True, "Verified", "deploy a"),
                ("b", True, "Verified", "deploy b"),
                ("c", True, "Verified", "deploy c"),
            ],
            None,
        );
        let got = transitions(Some(&building), &ready);
        assert_eq!(reasons(&got), vec![READY_EVENT]);
        assert_eq!(got[0].note, "2 images became ready: a, b");
        let got = transitions(None, &ready);
        assert_eq!(got[0].note, "3 images became ready: a, b, c");
    }

    #[test]
    fn the_bookkeeping_keeps_only_what_events_and_gauges_read() {
        let mut full = status(&[("a", True, "Verified", "deploy a")], Some("BuildFailed"));
        full.images[0].deploy = Some("reg/app:v1-soci@sha256:1".into());
        full.images[0].source_digest = Some("sha256:2".into());
        full.summary = Some("1/1".into());
        let mut stats = ObjectStats::default();
        stats.update("ns/x", full.clone(), 0);
        let kept = stats.previous("ns/x").unwrap();
        assert_eq!(kept.conditions, full.conditions);
        assert_eq!(kept.images[0].name, "a");
        assert_eq!(kept.images[0].conditions, full.images[0].conditions);
        assert_eq!(
            (kept.images[0].deploy.as_ref(), kept.summary.as_ref()),
            (None, None)
        );
        // What the Events compare is unchanged by the slimming.
        assert!(transitions(Some(kept), &full).is_empty());
    }

    #[test]
    fn gauges_count_each_object_once_and_forget_deleted_ones() {
        let mut stats = ObjectStats::default();
        let two = status(
            &[("a", True, "Verified", ""), ("b", Unknown, "Queued", "")],
            None,
        );
        stats.update("ns/x", two.clone(), 1);
        stats.update("ns/y", status(&[("a", True, "Verified", "")], None), 0);
        // A second reconcile of the same object replaces its contribution.
        stats.update("ns/x", two, 1);
        assert_eq!(
            stats.reasons(),
            BTreeMap::from([("Queued".into(), 1), ("Verified".into(), 2)])
        );
        assert_eq!(stats.queued(), 1);
        stats.remove("ns/x");
        assert_eq!(stats.reasons(), BTreeMap::from([("Verified".into(), 1)]));
        assert_eq!(stats.queued(), 0);
        stats.retain(|k| k != "ns/y");
        assert!(stats.reasons().is_empty());
        assert!(stats.previous("ns/y").is_none());
    }
}
