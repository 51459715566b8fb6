//! Which platforms are converted, their image manifests, and the fate of every layer: the
//! v1 (`soci create`) and v2 (`soci convert`) plans, before any zTOC is built.

use super::blobs::{Blobs, json_error};
use super::{
    ConversionPlan, ConvertError, ConvertOptions, IndexVersion, LayerCompression, LayerPlan,
    PlatformPlan, SkipReason, SkippedLayer,
};
use crate::oci::{self, Descriptor, Index, Platform};
use crate::platform;

/// soci `buildSociLayer`'s decision for one layer, before any zTOC is built.
fn plan_layer(layer: &Descriptor, min_layer_size: i64) -> Result<LayerPlan, ConvertError> {
    if layer.media_type == oci::SOCI_PREFETCH_MEDIA_TYPE {
        return Ok(LayerPlan::Prefetch);
    }
    if !oci::is_layer_type(&layer.media_type) {
        return Err(ConvertError::NotLayerType {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        });
    }
    if layer.size < min_layer_size {
        return Ok(LayerPlan::TooSmall);
    }
    let Some(mut compression) = oci::diff_compression(&layer.media_type) else {
        return Err(ConvertError::UnknownLayerCompression {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        });
    };
    // Only the plain OCI layer type turns "" into "uncompressed"; the non-distributable tar and
    // wrapped types stay "" and are unsupported.
    if compression.is_empty() && layer.media_type == oci::MEDIA_TYPE_OCI_LAYER {
        compression = "uncompressed";
    }
    Ok(match compression {
        "gzip" => LayerPlan::Index(LayerCompression::Gzip),
        // "unknown": Docker's uncompressed types, read as tar by upstream.
        "uncompressed" | "unknown" => LayerPlan::Index(LayerCompression::Uncompressed),
        other => LayerPlan::Unsupported {
            compression: other.to_string(),
        },
    })
}

pub(super) fn parse_platforms(
    specs: &[String],
    host: &Platform,
) -> Result<Vec<Platform>, ConvertError> {
    specs
        .iter()
        .map(|s| {
            platform::parse(s, host).map_err(|e| ConvertError::InvalidPlatform {
                spec: s.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// `soci create`: one v1 index per platform (default: the host's — even for a single-manifest
/// image), platforms not de-duplicated, a platform without any zTOC is an error.
pub(super) fn plan_v1(
    target: &Descriptor,
    blobs: &Blobs<'_>,
    opts: &ConvertOptions,
    mut platforms: Vec<Platform>,
) -> Result<ConversionPlan, ConvertError> {
    if platforms.is_empty() {
        platforms.push(opts.host_platform.clone());
    }
    let mut plans = Vec::new();
    let mut skipped = Vec::new();
    for p in platforms {
        let plan = plan_platform(target, blobs, p, opts.min_layer_size)?;
        if !plan.builds_index() {
            return Err(ConvertError::EmptyIndex);
        }
        skipped.extend(skipped_layers_of(&plan, opts.min_layer_size));
        plans.push(plan);
    }
    Ok(ConversionPlan {
        version: IndexVersion::V1,
        span_size: opts.span_size,
        target: target.clone(),
        platforms: plans,
        index: Index::default(),
        entries: Vec::new(),
        skipped,
    })
}

/// `IndexBuilder.Convert`.
pub(super) fn plan_v2(
    target: &Descriptor,
    blobs: &Blobs<'_>,
    opts: &ConvertOptions,
    requested: Vec<Platform>,
) -> Result<ConversionPlan, ConvertError> {
    let all = blobs.platforms(target)?;
    let Some(first) = all.first() else {
        return Err(ConvertError::NoPlatforms);
    };
    let mut target = target.clone();
    let mut default = opts.host_platform.clone();
    if oci::is_manifest_type(&target.media_type) {
        // Quirk: a single manifest's descriptor gets its config platform, which is also the default.
        target.platform = Some(first.clone());
        default = first.clone();
    }
    let platforms = platform::dedupe(&if requested.is_empty() {
        vec![default]
    } else {
        requested
    });

    // newOciIndex: the image's own index re-read as an OCI index, or a new one around the manifest.
    let index = if oci::is_index_type(&target.media_type) {
        let bytes = blobs.read(&target)?;
        oci::validate_media_type(&bytes, &target.media_type)
            .map_err(ConvertError::InvalidContent)?;
        let mut index = Index::from_json(&bytes).map_err(|e| json_error(&target, e))?;
        index.media_type = oci::MEDIA_TYPE_OCI_INDEX.into();
        index
    } else {
        Index {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_OCI_INDEX.into(),
            manifests: Some(vec![target.clone()]),
            ..Default::default()
        }
    };

    let mut plans = Vec::new();
    let mut skipped = Vec::new();
    for p in platforms {
        // A platform without any zTOC is skipped (ErrEmptyIndex → next platform).
        let plan = plan_platform(&target, blobs, p, opts.min_layer_size)?;
        skipped.extend(skipped_layers_of(&plan, opts.min_layer_size));
        if plan.builds_index() {
            plans.push(plan);
        }
    }
    if plans.is_empty() {
        return Err(ConvertError::EmptyIndex);
    }

    // annotateImages, reading part: every entry's manifest (nil platform walk).
    let mut entries = Vec::new();
    for entry in index.manifests.iter().flatten() {
        let has_index = plans.iter().any(|p| p.manifest.digest == entry.digest);
        match blobs.manifest(entry, None) {
            Ok(m) => entries.push(Some(m)),
            Err(e) if e.is_not_found() && !has_index => entries.push(None),
            Err(e) => return Err(e),
        }
    }

    Ok(ConversionPlan {
        version: IndexVersion::V2,
        span_size: opts.span_size,
        target,
        platforms: plans,
        index,
        entries,
        skipped,
    })
}

/// soci `build` up to the zTOCs: the platform's manifest and the fate of each layer.
fn plan_platform(
    target: &Descriptor,
    blobs: &Blobs<'_>,
    platform: Platform,
    min_layer_size: i64,
) -> Result<PlatformPlan, ConvertError> {
    let matcher = platform::only_strict(&platform);
    let manifest_desc = match blobs.image_manifest_descriptor(target, &matcher) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => {
            let cause = match e {
                ConvertError::NotFound(ref what) if what == "image manifest" => {
                    "not found".to_string()
                }
                other => other.to_string(),
            };
            return Err(ConvertError::ImageManifestNotFound {
                platform: platform::format(&platform),
                cause,
            });
        }
        Err(e) => return Err(e),
    };
    let manifest = blobs.manifest(target, Some(&matcher))?;
    let manifest_desc = manifest_desc.ok_or_else(|| ConvertError::UnexpectedMediaType {
        media_type: target.media_type.clone(),
        digest: target.digest.clone(),
    })?;
    let layers = manifest
        .layers
        .unwrap_or_default()
        .into_iter()
        .map(|l| plan_layer(&l, min_layer_size).map(|p| (l, p)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PlatformPlan {
        platform,
        manifest: manifest_desc,
        layers,
    })
}

fn skipped_layers_of(plan: &PlatformPlan, min_layer_size: i64) -> Vec<SkippedLayer> {
    plan.layers
        .iter()
        .filter_map(|(layer, decision)| {
            let reason = match decision {
                LayerPlan::Index(_) => return None,
                LayerPlan::TooSmall => SkipReason::TooSmall { min_layer_size },
                LayerPlan::Unsupported { compression } => {
                    SkipReason::UnsupportedCompression(compression.clone())
                }
                LayerPlan::Prefetch => SkipReason::PrefetchArtifact,
            };
            Some(SkippedLayer {
                platform: plan.platform.clone(),
                layer: layer.clone(),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "platforms_tests.rs"]
mod tests;
