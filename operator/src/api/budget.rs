//! The status size budget. etcd refuses a request over 1.5 MiB, and a status write that fails
//! leaves the object stuck; a status grows with the images (at most 256) and with the platforms
//! each one's registry lists (unbounded when `spec.platforms` is empty). [`fit`] keeps the
//! status JSON under [`STATUS_BUDGET`] by cutting, in this order: the per-image condition
//! messages, then the per-platform detail of the images from the last one back. The `Ready`
//! condition says what was cut. What is left is set by the spec, which the CRD bounds: even
//! 256 images of the longest references stay near 650 KiB, under half of etcd's limit.
//! Cut platform detail costs the cheap settled check (those images get the full check) and
//! cleanup's list of SOCI index digests for them.

use super::SociIndexStatus;
use super::condition::{self, MAX_MESSAGE, READY};

/// The most status JSON written: far below etcd's 1.5 MiB, with room for the spec, the
/// metadata and the managed fields of the same object.
pub const STATUS_BUDGET: usize = 256 * 1024;
/// Per-image condition messages when the status is over budget.
const SHORT_MESSAGE: usize = 256;

/// What [`fit`] cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cut {
    /// Images whose per-platform detail was left out.
    pub platforms_dropped: usize,
    /// Per-image condition messages were shortened.
    pub messages_shortened: bool,
    /// Still over budget after every cut (the part set by the spec alone, which the CRD
    /// bounds, is larger).
    pub over: bool,
}

/// Cuts `status` until its JSON is at most `budget` bytes (see the module); the `Ready`
/// message ends with a note when anything was cut. Idempotent: fitting a fitted status
/// changes nothing, so the plan compares equal from one reconcile to the next.
pub fn fit(status: &mut SociIndexStatus, budget: usize) -> Cut {
    let mut cut = Cut::default();
    let mut size = json_len(status);
    if size <= budget {
        return cut;
    }
    for image in &mut status.images {
        for c in &mut image.conditions {
            if c.message.len() > SHORT_MESSAGE {
                let before = json_len(c);
                condition::truncate(&mut c.message, SHORT_MESSAGE);
                size -= before - json_len(c);
                cut.messages_shortened = true;
            }
        }
    }
    // An image's entry is an element of one JSON array: its length changes the total by
    // exactly its own change.
    for image in status.images.iter_mut().rev() {
        if size <= budget {
            break;
        }
        if image.platforms.is_empty() {
            continue;
        }
        let before = json_len(image);
        image.platforms.clear();
        size -= before - json_len(image);
        cut.platforms_dropped += 1;
    }
    cut.over = size > budget;
    if cut.platforms_dropped > 0 || cut.messages_shortened {
        note(status, &cut, budget);
    }
    cut
}

/// Appends what was cut to the `Ready` message (the message cut first so the note fits).
fn note(status: &mut SociIndexStatus, cut: &Cut, budget: usize) {
    let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == READY) else {
        return;
    };
    let mut what = Vec::new();
    if cut.platforms_dropped > 0 {
        what.push(format!(
            "the per-platform detail of {} of {} images",
            cut.platforms_dropped,
            status.images.len()
        ));
    }
    if cut.messages_shortened {
        what.push("the long image messages".to_string());
    }
    let note = format!(
        " (status size budget of {} KiB: {} cut)",
        budget / 1024,
        what.join(" and ")
    );
    if ready.message.ends_with(&note) {
        return;
    }
    condition::truncate(&mut ready.message, MAX_MESSAGE.saturating_sub(note.len()));
    ready.message.push_str(&note);
}

fn json_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{LAZY_LOAD_READY, TRUNCATED};
    use crate::api::{Condition, ConditionStatus, ImageStatus, PlatformStatus};

    fn image(i: usize, platforms: usize, message: &str) -> ImageStatus {
        let digest = format!("sha256:{}", "a".repeat(64));
        let target = format!("registry.example.com/team-{i:03}/app:v1.2.3-soci");
        ImageStatus {
            name: format!("image-{i:03}"),
            image: format!("registry.example.com/team-{i:03}/app:v1.2.3"),
            source_digest: Some(digest.clone()),
            target: Some(target.clone()),
            target_digest: Some(digest.clone()),
            deploy: Some(format!("{target}@{digest}")),
            platforms: (0..platforms)
                .map(|p| PlatformStatus {
                    platform: format!("linux/arch{p:02}/v8"),
                    soci_index_digest: Some(digest.clone()),
                    layers_indexed: 12,
                    layers_too_small: 3,
                    layers_unsupported: 1,
                    bytes_indexed_percent: "87.5".into(),
                })
                .collect(),
            job: Some("soci-build-0123456789abcdef".into()),
            last_build_time: Some("2026-01-01T00:00:00Z".into()),
            failures: 0,
            conditions: vec![Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::False,
                "BuildFailed",
                message,
            )],
        }
    }

    fn status(images: usize, platforms: usize, message: &str) -> SociIndexStatus {
        SociIndexStatus {
            observed_generation: Some(1),
            conditions: vec![Condition::new(
                READY,
                ConditionStatus::False,
                "BuildFailed",
                message,
            )],
            ready_images: 0,
            desired_images: images as i32,
            summary: Some(format!("0/{images}")),
            last_handled_reconcile_at: None,
            images: (0..images).map(|i| image(i, platforms, message)).collect(),
        }
    }

    #[test]
    fn a_status_within_the_budget_is_left_alone() {
        let mut small = status(4, 2, "registry said no");
        let before = small.clone();
        assert_eq!(fit(&mut small, STATUS_BUDGET), Cut::default());
        assert_eq!(small, before);
    }

    #[test]
    fn the_largest_status_is_cut_under_the_budget_and_says_what_was_cut() {
        // 256 images × 32 platforms with long (multi-byte) messages: several MiB uncut.
        let long = "é".repeat(4000);
        let mut big = status(256, 32, &long);
        assert!(json_len(&big) > 2 * 1024 * 1024, "{}", json_len(&big));
        let cut = fit(&mut big, STATUS_BUDGET);
        let size = json_len(&big);
        assert!(size <= STATUS_BUDGET, "{size}");
        assert!(cut.messages_shortened && !cut.over, "{cut:?}");
        assert!(
            cut.platforms_dropped > 0 && cut.platforms_dropped < 256,
            "{cut:?}"
        );
        // The detail is cut from the last image back: the first ones keep theirs.
        assert_eq!(big.images[0].platforms.len(), 32);
        assert!(big.images[255].platforms.is_empty());
        // Every image keeps what deploying and cleanup need.
        for i in &big.images {
            assert!(i.deploy.is_some() && i.target_digest.is_some());
            assert!(i.conditions[0].message.len() <= SHORT_MESSAGE);
            assert!(i.conditions[0].message.ends_with(TRUNCATED));
        }
        let ready = &big.conditions[0].message;
        assert!(ready.len() <= MAX_MESSAGE, "{}", ready.len());
        assert!(
            ready.ends_with(&format!(
                "(status size budget of 256 KiB: the per-platform detail of {} of 256 images and the long image messages cut)",
                cut.platforms_dropped
            )),
            "{ready}"
        );
        // A fitted status fits as it is: the next plan compares equal.
        let again = big.clone();
        let second = fit(&mut big, STATUS_BUDGET);
        assert_eq!(big, again);
        assert_eq!(second.platforms_dropped, 0);
    }

    #[test]
    fn many_platforms_of_one_image_are_cut_too() {
        // A registry may list any number of platforms when spec.platforms is empty.
        let mut one = status(1, 5000, "ok");
        assert!(json_len(&one) > STATUS_BUDGET);
        let cut = fit(&mut one, STATUS_BUDGET);
        assert_eq!(cut.platforms_dropped, 1);
        assert!(json_len(&one) <= STATUS_BUDGET);
    }

    #[test]
    fn the_largest_spec_the_crd_admits_leaves_a_status_far_below_etcds_limit() {
        use crate::api::limits::{MAX_IMAGE_REFERENCE, MAX_IMAGES, MAX_TAG_TEMPLATE};
        // References and messages of the longest, and a 4-MiB platform name (from a registry).
        let mut worst = status(MAX_IMAGES, 32, &"m".repeat(MAX_MESSAGE));
        for (i, image) in worst.images.iter_mut().enumerate() {
            image.name = format!("{i:0>63}");
            image.image = "r".repeat(MAX_IMAGE_REFERENCE);
            let target = "t".repeat(MAX_IMAGE_REFERENCE + MAX_TAG_TEMPLATE);
            image.deploy = Some(format!("{target}@sha256:{}", "d".repeat(64)));
            image.target = Some(target);
        }
        worst.images[0].platforms[0].platform = "p".repeat(4 << 20);
        fit(&mut worst, STATUS_BUDGET);
        let size = json_len(&worst);
        assert!(size < 1536 * 1024 / 2, "{size}");
    }

    #[test]
    fn a_status_over_budget_from_the_spec_alone_keeps_every_image() {
        let mut tiny_budget = status(256, 0, "m");
        let cut = fit(&mut tiny_budget, 1024);
        assert!(cut.over);
        assert_eq!(tiny_budget.images.len(), 256);
    }
}
