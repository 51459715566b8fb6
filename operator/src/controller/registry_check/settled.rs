//! The settled-image recheck: an image whose binding the previous full check verified, for
//! the same spec, is confirmed with one HEAD per tag instead of the full check.

use crate::api::condition::{self, LAZY_LOAD_READY};
use crate::api::{ConditionStatus, ImageStatus, TargetSpec};
use crate::controller::naming::target_reference;
use crate::controller::plan::{ImageObservation, Resolved, TargetCheck};
use crate::reason::Reason;
use crate::registry::digest::is_valid_digest;
use crate::registry::{RegistryClient, RegistryRef};

/// What a settled image's previous full check established, and the look-ups that would show
/// it changed: one HEAD per tag the image names.
#[derive(Debug, Clone, PartialEq)]
pub struct SettledImage {
    /// The observation to report when nothing moved (the previous check, unchanged).
    pub observation: ImageObservation,
    /// The source tag and the digest it must still point to (`None`: pinned by digest, or the
    /// tag is the target itself).
    pub source_tag: Option<(RegistryRef, String)>,
    /// The target tag and the digest it must still point to.
    pub target_tag: (RegistryRef, String),
}

/// Whether the previous status of `image` records a verified binding that one HEAD per tag can
/// confirm; `None` sends it through the full check. The caller makes sure the spec is the one
/// that status was written for (same generation, no new reconcile request).
pub fn settled_image(
    image_name: &str,
    spec_image: &str,
    target_spec: Option<&TargetSpec>,
    before: &ImageStatus,
) -> Option<SettledImage> {
    let lazy = condition::find(&before.conditions, LAZY_LOAD_READY)?;
    if lazy.status != ConditionStatus::True
        || lazy.reason != Reason::Verified.as_str()
        || before.image != spec_image
        || before.platforms.is_empty()
    {
        return None;
    }
    // A status is input too: digests that are not digests take the full check.
    let source_digest = before
        .source_digest
        .clone()
        .filter(|d| is_valid_digest(d))?;
    let target_digest = before
        .target_digest
        .clone()
        .filter(|d| is_valid_digest(d))?;
    let source = RegistryRef::parse(spec_image).ok()?;
    let target = target_reference(&source, target_spec, image_name).ok()?;
    if before.target.as_deref() != Some(target.to_string().as_str()) {
        return None;
    }
    let in_place = target_spec.and_then(|t| t.in_place) == Some(true);
    let (source_tag, resolved_digest) = match (&source.digest, in_place) {
        // Pinned: nothing to resolve, and a different pin is another build.
        (Some(pinned), _) if *pinned != source_digest => return None,
        (Some(_), _) => (None, source_digest.clone()),
        // In place, the tag is the target: its HEAD answers both questions, and it resolves to
        // what we pushed (the plan keeps the original source digest).
        (None, true) => (None, target_digest.clone()),
        (None, false) => (
            Some((source.clone(), source_digest.clone())),
            source_digest.clone(),
        ),
    };
    let pinned = source.with_reference(&resolved_digest);
    Some(SettledImage {
        observation: ImageObservation {
            name: image_name.to_string(),
            resolved: Ok(Resolved {
                source: pinned.to_string(),
                digest: resolved_digest,
                target: target.to_string(),
            }),
            target: Some(Ok(TargetCheck::Bound {
                digest: target_digest.clone(),
                platforms: before.platforms.clone(),
            })),
        },
        source_tag,
        target_tag: (target, target_digest),
    })
}

/// The HEADs of a [`SettledImage`]: its observation when every tag still points where it did,
/// `None` when one moved, vanished or could not be asked (the full check then finds out why).
pub async fn recheck_settled(
    client: &RegistryClient,
    settled: &SettledImage,
) -> Option<ImageObservation> {
    let tags = settled.source_tag.iter().chain([&settled.target_tag]);
    for (reference, expected) in tags {
        match client
            .manifest_digest(reference, reference.manifest_reference())
            .await
        {
            Ok(Some(digest)) if digest == *expected => {}
            _ => return None,
        }
    }
    Some(settled.observation.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PlatformStatus;

    const SRC: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";
    const TGT: &str = "sha256:7777777777777777777777777777777777777777777777777777777777777777";
    const OLD: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn verified_status(image: &str, target: &str) -> ImageStatus {
        ImageStatus {
            name: "web".into(),
            image: image.into(),
            source_digest: Some(SRC.into()),
            target: Some(target.into()),
            target_digest: Some(TGT.into()),
            deploy: Some(format!("{target}@{TGT}")),
            platforms: vec![PlatformStatus {
                platform: "linux/amd64".into(),
                soci_index_digest: Some("sha256:idx".into()),
                layers_indexed: 1,
                layers_too_small: 0,
                layers_unsupported: 0,
                bytes_indexed_percent: "100.0".into(),
            }],
            conditions: vec![crate::api::Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::True,
                Reason::Verified,
                "deploy",
            )],
            ..Default::default()
        }
    }

    #[test]
    fn a_verified_tag_image_is_rechecked_with_a_head_of_each_tag() {
        let before = verified_status("reg:5000/app:v1", "reg:5000/app:v1-soci");
        let settled = settled_image("web", "reg:5000/app:v1", None, &before).expect("settled");
        let (source, want) = settled
            .source_tag
            .as_ref()
            .expect("the source tag is asked");
        assert_eq!(
            (source.to_string().as_str(), want.as_str()),
            ("reg:5000/app:v1", SRC)
        );
        let (target, want) = &settled.target_tag;
        assert_eq!(
            (target.to_string().as_str(), want.as_str()),
            ("reg:5000/app:v1-soci", TGT)
        );
        let resolved = settled.observation.resolved.as_ref().unwrap();
        assert_eq!(resolved.source, format!("reg:5000/app@{SRC}"));
        assert_eq!(resolved.digest, SRC);
        assert_eq!(
            settled.observation.target,
            Some(Ok(TargetCheck::Bound {
                digest: TGT.into(),
                platforms: before.platforms.clone(),
            }))
        );
    }

    #[test]
    fn pinned_and_in_place_images_need_one_head() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = format!("reg:5000/app@{digest}");
        let mut before = verified_status(
            &pinned,
            &format!("reg:5000/app:sha256-{}-soci", "a".repeat(64)),
        );
        before.source_digest = Some(digest);
        let pinned = pinned.as_str();
        let settled = settled_image("web", pinned, None, &before).expect("settled");
        assert!(settled.source_tag.is_none());
        // Another pin than the one verified is a new build, not a recheck.
        let mut moved = before.clone();
        moved.source_digest = Some(OLD.into());
        assert!(settled_image("web", pinned, None, &moved).is_none());

        let in_place = TargetSpec {
            in_place: Some(true),
            ..Default::default()
        };
        let before = verified_status("reg:5000/app:v1", "reg:5000/app:v1");
        let settled =
            settled_image("web", "reg:5000/app:v1", Some(&in_place), &before).expect("settled");
        assert!(settled.source_tag.is_none());
        assert_eq!(settled.target_tag.1, TGT);
        // The tag resolves to what we pushed, as the full check would see it.
        assert_eq!(settled.observation.resolved.as_ref().unwrap().digest, TGT);
    }

    #[test]
    fn anything_not_verified_for_this_spec_takes_the_full_check() {
        let image = "reg:5000/app:v1";
        let good = verified_status(image, "reg:5000/app:v1-soci");
        assert!(settled_image("web", image, None, &good).is_some());
        let mut building = good.clone();
        building.conditions[0].status = ConditionStatus::Unknown;
        building.conditions[0].reason = Reason::Building.to_string();
        let mut other_image = good.clone();
        other_image.image = "reg:5000/app:v2".into();
        let mut other_target = good.clone();
        other_target.target = Some("reg:5000/app:v1-old".into());
        let mut no_digest = good.clone();
        no_digest.target_digest = None;
        let mut no_platforms = good.clone();
        no_platforms.platforms.clear();
        for (what, before) in [
            ("building", building),
            ("another image", other_image),
            ("another target", other_target),
            ("no target digest", no_digest),
            ("no platforms", no_platforms),
        ] {
            assert!(
                settled_image("web", image, None, &before).is_none(),
                "{what}"
            );
        }
        let suffix = TargetSpec {
            tag_suffix: Some("-lazy".into()),
            ..Default::default()
        };
        assert!(settled_image("web", image, Some(&suffix), &good).is_none());
    }

    #[test]
    fn digests_in_a_status_that_are_not_digests_take_the_full_check() {
        let image = "reg:5000/app:v1";
        let upper = format!("sha256:{}", "A".repeat(64));
        for bad in [
            "latest",
            "sha256:../../../v2/other/manifests/x",
            upper.as_str(),
        ] {
            let mut status = verified_status(image, "reg:5000/app:v1-soci");
            status.target_digest = Some(bad.into());
            assert!(
                settled_image("web", image, None, &status).is_none(),
                "{bad}"
            );
            let mut status = verified_status(image, "reg:5000/app:v1-soci");
            status.source_digest = Some(bad.into());
            assert!(
                settled_image("web", image, None, &status).is_none(),
                "{bad}"
            );
        }
    }
}
