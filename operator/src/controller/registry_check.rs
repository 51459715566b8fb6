//! The controller's registry look-ups: resolving a source image to a digest, and checking that
//! the target tag holds a valid SOCI binding of that digest. [`target_binding`] is the one seam
//! where the stricter `verify` logic (operator/src/verification.rs) will plug in.

use super::plan::{BuildSettings, Failure, Resolved, TargetCheck, reason, target_reference};
use crate::api::{IndexVersion, PlatformStatus, TargetSpec};
use crate::image::registry_io::RegistrySource;
use crate::readiness::{ImageReport, inspect};
use crate::registry::error::PermanentCause;
use crate::registry::{RegistryClient, RegistryError, RegistryRef};
use crate::verification::verify_binding;
use std::sync::Arc;

/// Maps a registry failure to the reason and class the plan acts on.
pub fn failure_of(error: &anyhow::Error) -> Failure {
    let message = format!("{error:#}");
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<RegistryError>() {
            if e.is_transient() {
                return Failure::transient(reason::REGISTRY_UNAVAILABLE, message);
            }
            let why = match e.permanent_cause {
                Some(PermanentCause::NotFound) => reason::IMAGE_NOT_FOUND,
                Some(PermanentCause::Unauthorized) => reason::UNAUTHORIZED,
                _ => reason::BUILD_FAILED,
            };
            return Failure::permanent(why, message);
        }
    }
    Failure::permanent(reason::BUILD_FAILED, message)
}

/// Resolves the spec image to `repo@digest` and computes its target tag reference.
pub async fn resolve(
    client: &RegistryClient,
    image: &str,
    target: Option<&TargetSpec>,
    image_name: &str,
) -> Result<Resolved, Failure> {
    let source = RegistryRef::parse(image)
        .map_err(|e| Failure::permanent(reason::INVALID_REFERENCE, format!("spec image: {e:#}")))?;
    let target = target_reference(&source, target, image_name)
        .map_err(|m| Failure::permanent(reason::INVALID_REFERENCE, m))?;
    let found = client
        .get_manifest(&source, source.manifest_reference())
        .await
        .map_err(|e| failure_of(&e.into()))?;
    let Some(found) = found else {
        return Err(Failure::permanent(
            reason::IMAGE_NOT_FOUND,
            format!("{source}: no such tag or digest in the registry"),
        ));
    };
    let mut pinned = source.clone();
    pinned.tag = None;
    pinned.digest = Some(found.digest.clone());
    Ok(Resolved {
        source: pinned.to_string(),
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
        .map_err(|e| Failure::permanent(reason::INVALID_REFERENCE, format!("{e:#}")))?;
    let Some(found) = client
        .get_manifest(&target, target.manifest_reference())
        .await
        .map_err(|e| failure_of(&e.into()))?
    else {
        return Ok(TargetCheck::Missing);
    };
    let source = RegistryRef::parse(&resolved.source)
        .map_err(|e| Failure::permanent(reason::INVALID_REFERENCE, format!("{e:#}")))?;
    let min = settings.min_layer_size;
    let source_report = inspect(&RegistrySource::new(client.clone(), source), min)
        .await
        .map_err(|e| failure_of(&e))?;
    let pinned_target = target.with_reference(&found.digest);
    let target_report = inspect(&RegistrySource::new(client.clone(), pinned_target), min)
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
    let report = verify_binding(client.clone(), target.with_reference(&found.digest), false)
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
        let layers: Vec<&str> = p.layers.iter().map(|l| l.digest.as_str()).collect();
        let matching = target.platforms.iter().find(|t| {
            t.layers
                .iter()
                .map(|l| l.digest.as_str())
                .eq(layers.iter().copied())
        });
        let Some(t) = matching else {
            return TargetCheck::NotBound {
                message: format!(
                    "target {} has no image manifest for platform {} of source {source_digest} (the source tag moved, or the target was overwritten)",
                    target.image, p.platform
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::{LayerStatus, PlatformReport};

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

    #[test]
    fn registry_errors_map_to_reasons_and_classes() {
        let not_found: anyhow::Error =
            RegistryError::permanent(PermanentCause::NotFound, "GET x", "404").into();
        assert_eq!(failure_of(&not_found).reason, reason::IMAGE_NOT_FOUND);
        let denied: anyhow::Error =
            RegistryError::permanent(PermanentCause::Unauthorized, "GET x", "401").into();
        assert_eq!(failure_of(&denied).reason, reason::UNAUTHORIZED);
        let flaky: anyhow::Error = RegistryError::transient("GET x", "503").into();
        let f = failure_of(&flaky);
        assert_eq!(f.class, super::super::plan::FailureClass::Transient);
    }
}
