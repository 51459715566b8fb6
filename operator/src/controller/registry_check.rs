//! The controller's registry look-ups: resolving a source image to a digest, and checking that
//! the target tag holds a valid SOCI binding of that digest. [`target_binding`] is the one seam
//! where the stricter `verify` logic (operator/src/verification.rs) will plug in.

use super::naming::target_reference;
use super::plan::{BuildSettings, Failure, ImageObservation, Resolved, TargetCheck};
use crate::api::condition::{self, LAZY_LOAD_READY};
use crate::api::{ConditionStatus, ImageStatus, IndexVersion, PlatformStatus, TargetSpec};
use crate::image::registry_io::RegistrySource;
use crate::inspect_report::{ImageReport, PlatformReport, inspect_with};
use crate::reason::{Reason, failure_of};
use crate::registry::digest::is_valid_digest;

use crate::registry::{RegistryClient, RegistryRef};
use crate::verification::verify_binding;
use std::sync::Arc;

/// Resolves the spec image to `repo@digest` and computes its target tag reference.
pub async fn resolve(
    client: &RegistryClient,
    image: &str,
    target: Option<&TargetSpec>,
    image_name: &str,
) -> Result<Resolved, Failure> {
    let source = RegistryRef::parse(image)
        .map_err(|e| Failure::permanent(Reason::InvalidReference, format!("spec image: {e:#}")))?;
    let target = target_reference(&source, target, image_name)
        .map_err(|m| Failure::permanent(Reason::InvalidReference, m))?;
    let found = client
        .get_manifest(&source, source.manifest_reference())
        .await
        .map_err(|e| failure_of(&e.into()))?;
    let Some(found) = found else {
        return Err(Failure::permanent(
            Reason::ImageNotFound,
            format!("{source}: no such tag or digest in the registry"),
        ));
    };
    Ok(Resolved {
        source: source.with_reference(&found.digest).to_string(),
        digest: found.digest,
        target: target.to_string(),
    })
}

/// Whether `resolved.target` holds a valid SOCI v2 binding of `resolved.source`: the target
/// has, for every selected platform of the source, an image manifest with the same layers,
/// bound to a readable SOCI index whose zTOCs are all present.
pub async fn target_binding(
    client: &Arc<RegistryClient>,
    resolved: &Resolved,
    settings: &BuildSettings,
) -> Result<TargetCheck, Failure> {
    let target = RegistryRef::parse(&resolved.target)
        .map_err(|e| Failure::permanent(Reason::InvalidReference, format!("{e:#}")))?;
    let Some(found) = client
        .get_manifest(&target, target.manifest_reference())
        .await
        .map_err(|e| failure_of(&e.into()))?
    else {
        return Ok(TargetCheck::Missing);
    };
    // Only its digest is needed from here on; the bytes (up to 4 MiB) go now.
    let found_digest = found.digest;
    let source = RegistryRef::parse(&resolved.source)
        .map_err(|e| Failure::permanent(Reason::InvalidReference, format!("{e:#}")))?;
    let min = settings.min_layer_size;
    // The source's layers are compared, not its bindings; a v2 target needs no v1 look-up.
    let source_report = inspect_with(&RegistrySource::new(client.clone(), source), min, false)
        .await
        .map_err(|e| failure_of(&e))?;
    let pinned_target = target.with_reference(&found_digest);
    let find_v1 = settings.index_version == IndexVersion::V1;
    let target_report = inspect_with(
        &RegistrySource::new(client.clone(), pinned_target),
        min,
        find_v1,
    )
    .await
    .map_err(|e| failure_of(&e))?;
    let binding = match settings.index_version {
        IndexVersion::V2 => "v2",
        IndexVersion::V1 => "v1",
    };
    let check = compare(
        &source_report,
        &target_report,
        &settings.platforms,
        &resolved.digest,
        binding,
    );
    let TargetCheck::Bound { platforms, .. } = &check else {
        return Ok(check);
    };
    // What the snapshotter checks when it loads the index (canonical JSON, zTOCs parseable,
    // span offsets increasing): a bound target failing it is not lazily loadable.
    let report = verify_binding(client.clone(), target.with_reference(&found_digest), false)
        .await
        .map_err(|e| failure_of(&e))?;
    let problems: Vec<String> = report
        .platforms
        .iter()
        .filter(|v| {
            platforms.iter().any(|p| {
                p.platform == v.platform
                    || (p.soci_index_digest.is_some() && p.soci_index_digest == v.soci_index)
            })
        })
        .flat_map(|v| {
            v.problems
                .iter()
                .map(move |problem| format!("platform {}: {problem}", v.platform))
        })
        .collect();
    if problems.is_empty() {
        Ok(check)
    } else {
        Ok(TargetCheck::NotBound {
            message: format!("the target fails verification: {}", problems.join("; ")),
        })
    }
}

/// The comparison behind [`target_binding`], pure. `binding` is the kind the spec asks for:
/// `v2` (the manifest annotation) or `v1` (a SOCI index v1 referring to the manifest).
/// A target platform stands for a source platform when it has the same config and the same
/// layers: digests, sizes and media types, in order (conversion changes none of them).
pub fn compare(
    source: &ImageReport,
    target: &ImageReport,
    platforms: &[String],
    source_digest: &str,
    binding: &str,
) -> TargetCheck {
    let wanted = source.platforms.iter().filter(|p| {
        platforms.is_empty() || p.platform == "(from config)" || platforms.contains(&p.platform)
    });
    let mut bound = Vec::new();
    for p in wanted {
        let mut same_layers = target.platforms.iter().filter(|t| {
            t.layers
                .iter()
                .map(|l| l.digest.as_str())
                .eq(p.layers.iter().map(|l| l.digest.as_str()))
        });
        let Some(first) = same_layers.clone().next() else {
            return TargetCheck::NotBound {
                message: format!(
                    "target {} has no image manifest for platform {} of source {source_digest} (the source tag moved, or the target was overwritten)",
                    target.image, p.platform
                ),
            };
        };
        let Some(t) = same_layers.find(|t| content_mismatch(p, t).is_none()) else {
            let mismatch = content_mismatch(p, first).unwrap_or_default();
            return TargetCheck::NotBound {
                message: format!(
                    "target {} platform {} has the layer digests of platform {} of source {source_digest}, but {mismatch}",
                    target.image, first.platform, p.platform
                ),
            };
        };
        if t.binding != binding {
            return TargetCheck::NotBound {
                message: format!(
                    "target {} platform {} is not bound to a SOCI index {binding}{}",
                    target.image,
                    t.platform,
                    t.problem
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            };
        }
        if let Some(layer) = t.layers.iter().find(|l| l.status == "missing-ztoc") {
            return TargetCheck::NotBound {
                message: format!(
                    "target {} platform {}: the zTOC of layer {} is missing",
                    target.image, t.platform, layer.digest
                ),
            };
        }
        let count = |s: &str| t.layers.iter().filter(|l| l.status == s).count() as i32;
        bound.push(PlatformStatus {
            platform: t.platform.clone(),
            soci_index_digest: t.soci_index.clone(),
            layers_indexed: count("indexed"),
            layers_too_small: count("too-small"),
            layers_unsupported: count("unsupported"),
            bytes_indexed_percent: format!("{:.1}", t.bytes_indexed_percent),
        });
    }
    if bound.is_empty() {
        return TargetCheck::NotBound {
            message: format!("source {source_digest} has none of the selected platforms"),
        };
    }
    TargetCheck::Bound {
        digest: target.digest.clone(),
        platforms: bound,
    }
}

/// What differs between a source platform and a target platform with the same layer digests:
/// the config digest, or a layer's declared size or media type (the first difference).
fn content_mismatch(source: &PlatformReport, target: &PlatformReport) -> Option<String> {
    if source.config != target.config {
        return Some(format!(
            "its config is {}, not the source's {}",
            target.config, source.config
        ));
    }
    for (i, (s, t)) in source.layers.iter().zip(&target.layers).enumerate() {
        if s.size != t.size {
            return Some(format!(
                "layer {i} ({}) is declared with {} bytes, not the source's {}",
                t.digest, t.size, s.size
            ));
        }
        if s.media_type != t.media_type {
            return Some(format!(
                "layer {i} ({}) has media type {:?}, not the source's {:?}",
                t.digest, t.media_type, s.media_type
            ));
        }
    }
    None
}

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
    use crate::inspect_report::LayerStatus;

    fn layer(digest: &str, status: &'static str) -> LayerStatus {
        LayerStatus {
            digest: digest.into(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 1,
            status,
            ztoc: None,
        }
    }

    fn report(image: &str, platforms: Vec<(&str, &str, Vec<LayerStatus>)>) -> ImageReport {
        ImageReport {
            image: image.into(),
            digest: format!("sha256:{image}"),
            media_type: String::new(),
            platforms: platforms
                .into_iter()
                .map(|(platform, binding, layers)| PlatformReport {
                    platform: platform.into(),
                    manifest: String::new(),
                    config: "sha256:cfg".into(),
                    binding: binding.into(),
                    soci_index: Some("sha256:idx".into()),
                    problem: None,
                    layers_indexed: 0,
                    bytes_indexed_percent: 50.0,
                    layers,
                })
                .collect(),
            notes: vec![],
        }
    }

    #[test]
    fn a_bound_target_with_the_same_layers_is_bound() {
        let source = report(
            "src",
            vec![(
                "(from config)",
                "none",
                vec![layer("a", "not-indexed"), layer("b", "too-small")],
            )],
        );
        let target = report(
            "tgt",
            vec![(
                "linux/amd64",
                "v2",
                vec![layer("a", "indexed"), layer("b", "too-small")],
            )],
        );
        match compare(&source, &target, &[], "sha256:src", "v2") {
            TargetCheck::Bound { digest, platforms } => {
                assert_eq!(digest, "sha256:tgt");
                assert_eq!(platforms[0].layers_indexed, 1);
                assert_eq!(platforms[0].layers_too_small, 1);
                assert_eq!(platforms[0].bytes_indexed_percent, "50.0");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn moved_source_unbound_and_damaged_targets_are_not_bound() {
        let source = report(
            "src",
            vec![("linux/amd64", "none", vec![layer("new", "not-indexed")])],
        );
        let old = report(
            "tgt",
            vec![("linux/amd64", "v2", vec![layer("old", "indexed")])],
        );
        assert!(matches!(
            compare(&source, &old, &[], "d", "v2"),
            TargetCheck::NotBound { .. }
        ));
        let unbound = report(
            "tgt",
            vec![("linux/amd64", "none", vec![layer("new", "not-indexed")])],
        );
        assert!(matches!(
            compare(&source, &unbound, &[], "d", "v2"),
            TargetCheck::NotBound { .. }
        ));
        let damaged = report(
            "tgt",
            vec![("linux/amd64", "v2", vec![layer("new", "missing-ztoc")])],
        );
        match compare(&source, &damaged, &[], "d", "v2") {
            TargetCheck::NotBound { message } => assert!(message.contains("zTOC")),
            other => panic!("{other:?}"),
        }
    }

    /// "Verified" means the target is the source's image: each difference below, alone, makes
    /// an otherwise bound target not bound.
    #[test]
    fn every_difference_from_the_source_makes_a_target_not_bound() {
        let source = report(
            "src",
            vec![(
                "linux/amd64",
                "none",
                vec![layer("a", "not-indexed"), layer("b", "not-indexed")],
            )],
        );
        let good = || {
            report(
                "tgt",
                vec![(
                    "linux/amd64",
                    "v2",
                    vec![layer("a", "indexed"), layer("b", "indexed")],
                )],
            )
        };
        assert!(matches!(
            compare(&source, &good(), &[], "d", "v2"),
            TargetCheck::Bound { .. }
        ));
        type Edit = fn(&mut PlatformReport);
        let cases: [(&str, Edit, &str); 9] = [
            (
                "config digest",
                |t| t.config = "sha256:other".into(),
                "has the layer digests of platform linux/amd64 of source d, but its config is sha256:other, not the source's sha256:cfg",
            ),
            (
                "layer size",
                |t| t.layers[1].size = 2,
                "but layer 1 (b) is declared with 2 bytes, not the source's 1",
            ),
            (
                "layer media type",
                |t| t.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                "but layer 0 (a) has media type \"application/vnd.oci.image.layer.v1.tar+zstd\", not the source's \"application/vnd.oci.image.layer.v1.tar+gzip\"",
            ),
            (
                "layer digest",
                |t| t.layers[1].digest = "c".into(),
                "has no image manifest for platform linux/amd64 of source d",
            ),
            (
                "layer order",
                |t| t.layers.swap(0, 1),
                "has no image manifest for platform",
            ),
            (
                "an extra layer",
                |t| t.layers.push(layer("c", "indexed")),
                "has no image manifest for platform",
            ),
            (
                "a missing layer",
                |t| drop(t.layers.pop()),
                "has no image manifest for platform",
            ),
            (
                "binding",
                |t| t.binding = "none".into(),
                "is not bound to a SOCI index v2",
            ),
            (
                "missing zTOC",
                |t| t.layers[0].status = "missing-ztoc",
                "the zTOC of layer a is missing",
            ),
        ];
        for (what, edit, want) in cases {
            let mut target = good();
            edit(&mut target.platforms[0]);
            match compare(&source, &target, &[], "d", "v2") {
                TargetCheck::NotBound { message } => {
                    assert!(message.contains(want), "{what}: {message}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// Two target platforms with the source's layer digests: the one with the source's config
    /// is the match, whichever comes first.
    #[test]
    fn the_target_platform_with_the_sources_config_is_chosen() {
        let source = report(
            "src",
            vec![("linux/amd64", "none", vec![layer("a", "not-indexed")])],
        );
        let mut target = report(
            "tgt",
            vec![
                ("linux/amd64/v2", "v2", vec![layer("a", "indexed")]),
                ("linux/amd64", "v2", vec![layer("a", "indexed")]),
            ],
        );
        target.platforms[0].config = "sha256:other".into();
        match compare(&source, &target, &[], "d", "v2") {
            TargetCheck::Bound { platforms, .. } => {
                assert_eq!(platforms[0].platform, "linux/amd64")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_binding_must_be_the_kind_the_spec_asks_for() {
        let source = report(
            "src",
            vec![("linux/amd64", "none", vec![layer("a", "not-indexed")])],
        );
        let v1 = report(
            "src",
            vec![("linux/amd64", "v1", vec![layer("a", "indexed")])],
        );
        assert!(matches!(
            compare(&source, &v1, &[], "d", "v1"),
            TargetCheck::Bound { .. }
        ));
        match compare(&source, &v1, &[], "d", "v2") {
            TargetCheck::NotBound { message } => assert!(message.contains("v2"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_selected_platforms_must_be_bound() {
        let source = report(
            "src",
            vec![
                ("linux/amd64", "none", vec![layer("a", "not-indexed")]),
                ("linux/arm64", "none", vec![layer("b", "not-indexed")]),
            ],
        );
        let target = report(
            "tgt",
            vec![("linux/amd64", "v2", vec![layer("a", "indexed")])],
        );
        assert!(matches!(
            compare(&source, &target, &["linux/amd64".into()], "d", "v2"),
            TargetCheck::Bound { .. }
        ));
        assert!(matches!(
            compare(&source, &target, &[], "d", "v2"),
            TargetCheck::NotBound { .. }
        ));
    }

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
