//! The worker Jobs active now, across every watched namespace, for the Job caps and the
//! `soci_operator_jobs{state}` gauge: reflector stores of the Jobs labelled
//! `app.kubernetes.io/managed-by=soci-operator` (listed at start, so the count is right after a
//! restart) plus the Jobs this process created that the watch has not shown yet.

use super::plan::{Capacity, registry_host};
use super::worker::{BUILD_KEY_LABEL, OWNER_UID_LABEL, SOURCE_ANNOTATION};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// A created Job the watch has not delivered within this long is no longer counted from here.
const PENDING_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    Running,
    Succeeded,
    Failed,
}

impl JobPhase {
    pub fn label(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed => "failed",
        }
    }
}

pub fn phase(job: &Job) -> JobPhase {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_true = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is_true("Complete") {
        JobPhase::Succeeded
    } else if is_true("Failed") {
        JobPhase::Failed
    } else {
        JobPhase::Running
    }
}

/// Holds a build slot: running and not being deleted.
fn is_active(job: &Job) -> bool {
    phase(job) == JobPhase::Running && job.metadata.deletion_timestamp.is_none()
}

/// The capacity left by `jobs` (what the stores hold) and `pending` (created, not yet seen:
/// `(namespace, name) -> registry`).
pub fn capacity<'a>(
    jobs: impl Iterator<Item = &'a Job>,
    pending: impl Iterator<Item = (&'a (String, String), &'a String)>,
    max_total: Option<usize>,
    max_per_registry: Option<usize>,
) -> Capacity {
    let mut c = Capacity {
        max_total,
        max_per_registry,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for job in jobs {
        seen.insert((job.namespace().unwrap_or_default(), job.name_any()));
        if is_active(job) {
            let source = job
                .annotations()
                .get(SOURCE_ANNOTATION)
                .map(String::as_str)
                .unwrap_or_default();
            c.active_total += 1;
            *c.active_per_registry
                .entry(registry_host(source))
                .or_default() += 1;
        }
    }
    for (key, registry) in pending {
        if !seen.contains(key) {
            c.active_total += 1;
            *c.active_per_registry.entry(registry.clone()).or_default() += 1;
        }
    }
    c
}

/// Running Jobs not owned by `uid`, by build key → `namespace/name`.
pub fn builds_elsewhere<'a>(
    jobs: impl Iterator<Item = &'a Job>,
    uid: &str,
) -> BTreeMap<String, String> {
    jobs.filter(|job| {
        is_active(job) && job.labels().get(OWNER_UID_LABEL).map(String::as_str) != Some(uid)
    })
    .filter_map(|job| {
        let key = job.labels().get(BUILD_KEY_LABEL)?;
        let at = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
        Some((key.clone(), at))
    })
    .collect()
}

/// `(namespace, name)` of a Job.
type JobKey = (String, String);

/// A Job this process created that the watch may not show yet.
#[derive(Clone)]
struct Pending {
    registry: String,
    build_key: String,
    owner_uid: String,
    at: Instant,
}

pub struct JobTracker {
    stores: RwLock<Vec<Store<Job>>>,
    pending: Mutex<HashMap<JobKey, Pending>>,
    max_total: Option<usize>,
    max_per_registry: Option<usize>,
    /// Held from reading the capacity to creating the Jobs, so that two reconciles never
    /// hand out the same slot.
    pub lock: tokio::sync::Mutex<()>,
    /// How many stores have their initial list. (Not `Store::wait_until_ready`: its one-shot
    /// channel wakes only the last of several waiters.)
    synced: tokio::sync::watch::Sender<usize>,
}

impl JobTracker {
    /// Caps of 0 mean "no cap".
    pub fn new(max_total: usize, max_per_registry: usize) -> Self {
        Self {
            stores: RwLock::default(),
            pending: Mutex::default(),
            max_total: (max_total > 0).then_some(max_total),
            max_per_registry: (max_per_registry > 0).then_some(max_per_registry),
            lock: tokio::sync::Mutex::new(()),
            synced: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn add_store(&self, store: Store<Job>) {
        self.stores.write().unwrap().push(store);
    }

    fn stores(&self) -> Vec<Store<Job>> {
        self.stores.read().unwrap().clone()
    }

    /// Called once per store, on its first complete list.
    pub fn mark_synced(&self) {
        self.synced.send_modify(|n| *n += 1);
    }

    /// Waits until every Job store has its initial list.
    pub async fn wait_ready(&self) {
        let want = self.stores.read().unwrap().len();
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|n| *n >= want).await;
    }

    pub fn created(
        &self,
        namespace: &str,
        name: &str,
        source: &str,
        build_key: &str,
        owner_uid: &str,
    ) {
        self.pending.lock().unwrap().insert(
            (namespace.to_string(), name.to_string()),
            Pending {
                registry: registry_host(source),
                build_key: build_key.to_string(),
                owner_uid: owner_uid.to_string(),
                at: Instant::now(),
            },
        );
    }

    /// The watch has delivered this Job: it is counted from the store from now on. (Left in
    /// `pending`, a Job deleted soon after would count as running until the entry expired.)
    pub fn seen(&self, namespace: &str, name: &str) {
        self.pending
            .lock()
            .unwrap()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Every Job in the stores, and the created ones the watch has not delivered yet (expired
    /// entries dropped).
    fn snapshot(&self) -> (Vec<Arc<Job>>, Vec<(JobKey, Pending)>) {
        let jobs: Vec<_> = self.stores().iter().flat_map(|s| s.state()).collect();
        let seen: std::collections::HashSet<_> = jobs
            .iter()
            .map(|j| (j.namespace().unwrap_or_default(), j.name_any()))
            .collect();
        let mut pending = self.pending.lock().unwrap();
        pending.retain(|_, p| p.at.elapsed() < PENDING_TTL);
        let unseen = pending
            .iter()
            .filter(|(key, _)| !seen.contains(*key))
            .map(|(key, p)| (key.clone(), p.clone()))
            .collect();
        (jobs, unseen)
    }

    pub fn capacity(&self) -> Capacity {
        let (jobs, pending) = self.snapshot();
        capacity(
            jobs.iter().map(|j| j.as_ref()),
            pending.iter().map(|(k, p)| (k, &p.registry)),
            self.max_total,
            self.max_per_registry,
        )
    }

    /// The worker Jobs of one SociIndex, from the watch (no API request per reconcile).
    pub fn owned(&self, namespace: &str, uid: &str) -> Vec<Arc<Job>> {
        self.stores()
            .iter()
            .flat_map(|s| s.state())
            .filter(|job| {
                job.namespace().as_deref() == Some(namespace)
                    && job.labels().get(OWNER_UID_LABEL).map(String::as_str) == Some(uid)
            })
            .collect()
    }

    /// Running builds of other SociIndexes, in every watched namespace, including the Jobs just
    /// created that the watch has not delivered yet (two objects reconciled together must not
    /// both start the build).
    pub fn builds_elsewhere(&self, uid: &str) -> BTreeMap<String, String> {
        let (jobs, pending) = self.snapshot();
        let mut found = builds_elsewhere(jobs.iter().map(|j| j.as_ref()), uid);
        for ((namespace, name), p) in pending {
            if p.owner_uid != uid {
                found
                    .entry(p.build_key)
                    .or_insert_with(|| format!("{namespace}/{name}"));
            }
        }
        found
    }

    /// Owned worker Jobs by phase (for the `soci_operator_jobs` gauge).
    pub fn phases(&self) -> [(JobPhase, i64); 3] {
        let mut counts = [
            (JobPhase::Running, 0),
            (JobPhase::Succeeded, 0),
            (JobPhase::Failed, 0),
        ];
        for store in self.stores() {
            for job in store.state() {
                let p = phase(&job);
                if let Some(c) = counts.iter_mut().find(|(q, _)| *q == p) {
                    c.1 += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn job(name: &str, source: &str, condition: Option<&str>, deleting: bool) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                annotations: Some([(SOURCE_ANNOTATION.to_string(), source.to_string())].into()),
                deletion_timestamp: deleting.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            },
            status: Some(JobStatus {
                conditions: condition.map(|c| {
                    vec![JobCondition {
                        type_: c.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_running_jobs_and_unseen_creations_take_slots() {
        let jobs = [
            job("a", "reg-a:5000/x@sha256:1", None, false),
            job("b", "reg-a:5000/y@sha256:2", Some("Complete"), false),
            job("c", "reg-b/z@sha256:3", Some("Failed"), false),
            job("d", "reg-b/z@sha256:4", None, true),
            job("e", "reg-b/z@sha256:5", None, false),
        ];
        let pending = [
            // Already in the store: not counted twice.
            (
                ("ns".to_string(), "a".to_string()),
                "reg-a:5000".to_string(),
            ),
            (
                ("ns".to_string(), "new".to_string()),
                "reg-a:5000".to_string(),
            ),
        ];
        let c = capacity(
            jobs.iter(),
            pending.iter().map(|(k, r)| (k, r)),
            Some(4),
            Some(2),
        );
        assert_eq!(c.active_total, 3);
        assert_eq!(c.active_per_registry["reg-a:5000"], 2);
        assert_eq!(c.active_per_registry["reg-b"], 1);
        assert_eq!((c.max_total, c.max_per_registry), (Some(4), Some(2)));
        assert_eq!(phase(&jobs[1]), JobPhase::Succeeded);
        assert_eq!(phase(&jobs[2]), JobPhase::Failed);
    }

    #[test]
    fn builds_of_other_objects_are_found_by_key_while_they_run() {
        let labelled = |name: &str, owner: &str, key: &str, condition: Option<&str>| {
            let mut j = job(name, "reg/x@sha256:1", condition, false);
            j.metadata.labels = Some(
                [
                    (OWNER_UID_LABEL.to_string(), owner.to_string()),
                    (BUILD_KEY_LABEL.to_string(), key.to_string()),
                ]
                .into(),
            );
            j
        };
        let jobs = [
            labelled("mine", "uid-a", "k1", None),
            labelled("theirs", "uid-b", "k2", None),
            labelled("theirs-done", "uid-b", "k3", Some("Complete")),
            job("unlabelled", "reg/x@sha256:1", None, false),
        ];
        let found = builds_elsewhere(jobs.iter(), "uid-a");
        assert_eq!(found, [("k2".to_string(), "ns/theirs".to_string())].into());
        let found = builds_elsewhere(jobs.iter(), "uid-b");
        assert_eq!(found, [("k1".to_string(), "ns/mine".to_string())].into());
    }

    #[test]
    fn a_job_just_created_is_a_build_elsewhere_before_the_watch_shows_it() {
        let t = JobTracker::new(4, 2);
        t.created("ns-a", "soci-build-1", "reg/x@sha256:1", "key-1", "uid-a");
        assert_eq!(
            t.builds_elsewhere("uid-b"),
            [("key-1".to_string(), "ns-a/soci-build-1".to_string())].into()
        );
        assert!(t.builds_elsewhere("uid-a").is_empty());
        assert_eq!(t.capacity().active_total, 1);
    }

    #[test]
    fn a_job_seen_then_deleted_frees_its_slot() {
        let t = JobTracker::new(4, 1);
        t.created("ns", "soci-build-1", "reg-a/x@sha256:1", "key-1", "uid-a");
        assert_eq!(t.capacity().active_per_registry["reg-a"], 1);
        // The watch delivers it, it finishes and is deleted: nothing of it is left.
        t.seen("ns", "soci-build-1");
        assert_eq!(t.capacity().active_total, 0);
        assert!(t.builds_elsewhere("uid-b").is_empty());
    }

    #[test]
    fn zero_caps_mean_no_cap() {
        let t = JobTracker::new(0, 3);
        assert_eq!((t.max_total, t.max_per_registry), (None, Some(3)));
    }
}
