//! Whether a target stands for its source, from the two inspect reports: pure, no registry.

use crate::api::PlatformStatus;
use crate::controller::plan::TargetCheck;
use crate::inspect_report::{ImageReport, PlatformReport};

/// The comparison behind [`target_binding`](super::target_binding), pure. `binding` is the kind the
/// spec asks for: `v2` (the manifest annotation) or `v1` (a SOCI index v1 referring to the
/// manifest). A target platform stands for a source platform when it has the same config and the
/// same layers: digests, sizes and media types, in order (conversion changes none of them).
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

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
