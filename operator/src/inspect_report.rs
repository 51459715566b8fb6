//! The readiness report of an image (`inspect`): per platform, whether the image manifest is
//! bound to a SOCI index (v2: the `com.amazon.soci.index-digest` annotation, which is how the
//! soci-snapshotter finds it; v1: a SOCI index manifest whose `subject` is the image manifest,
//! found through the referrers API or tag schema), and per layer whether it has a zTOC, is too small, is in an
//! unsupported compression, or names a zTOC that is missing.

use crate::conversion_engine::compression_of_media_type;
use crate::image::ImageSource;
use crate::registry::limits::{BODY_MEMORY, Held};
use anyhow::{Result, anyhow, bail};
use soci_format::oci::{self, Descriptor, Index, Manifest};
use std::collections::HashMap;

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub image: String,
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<PlatformReport>,
    /// Notes about the image as a whole (for example SOCI entries that lost `artifactType`).
    pub notes: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformReport {
    pub platform: String,
    pub manifest: String,
    /// The digest of the image config (a SOCI-enabled copy keeps its source's).
    pub config: String,
    /// `v2` (bound by the manifest annotation) or `v1` (a SOCI index v1 refers to the
    /// manifest) when the SOCI index is readable, else `none`.
    pub binding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soci_index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub layers: Vec<LayerStatus>,
    pub layers_indexed: usize,
    pub bytes_indexed_percent: f64,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerStatus {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    /// `indexed`, `too-small`, `unsupported`, `missing-ztoc`, or `not-indexed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ztoc: Option<String>,
}

/// Image manifests of one index that we check: each costs requests and memory, and a registry
/// decides how many there are. Multi-platform images have a few dozen at most.
pub const MAX_IMAGE_MANIFESTS: usize = 128;
/// Layers of one image manifest (overlayfs stacks at most about 128 of them).
pub const MAX_LAYERS: usize = 1024;

fn is_soci_entry(d: &Descriptor) -> bool {
    d.artifact_type
        .starts_with("application/vnd.amazon.soci.index")
        || d.annotation(oci::ANNOTATION_IMAGE_MANIFEST_DIGEST)
            .is_some()
}

/// The JSON one report reads, counted in the process's registry body memory for as long as the
/// report is being made (its source keeps every document it fetched until then): a registry
/// serving many large manifests gets a transient failure, not the operator's memory.
pub struct JsonRead {
    held: Held,
    total: u64,
}

impl Default for JsonRead {
    fn default() -> Self {
        Self {
            held: Held::new(&BODY_MEMORY),
            total: 0,
        }
    }
}

impl JsonRead {
    /// `bytes` more that the report's source keeps.
    pub fn count(&mut self, what: &str, bytes: u64) -> Result<()> {
        self.total += bytes;
        self.held.grow_to(what, self.total)?;
        Ok(())
    }

    /// `source.read_json(desc)`, counted.
    pub async fn read<S: ImageSource>(
        &mut self,
        source: &S,
        desc: &Descriptor,
    ) -> Result<Option<Vec<u8>>> {
        let bytes = source.read_json(desc).await?;
        if let Some(b) = &bytes {
            let what = format!("{}: reading {}", source.describe(), desc.digest);
            self.count(&what, b.len() as u64)?;
        }
        Ok(bytes)
    }
}

/// What an image's root names, as `inspect` and `verify` both read it.
pub struct ImageEntries {
    pub target: Descriptor,
    /// The image manifests, without attestations and SOCI index entries.
    pub manifests: Vec<Descriptor>,
    /// SOCI index entries that lost their `artifactType`.
    pub notes: Vec<String>,
}

pub async fn image_entries<S: ImageSource>(
    source: &S,
    json: &mut JsonRead,
) -> Result<ImageEntries> {
    let target = source.resolve().await?.target;
    // The source keeps the root it resolved.
    json.count(&source.describe(), target.size.max(0) as u64)?;
    let mut notes = Vec::new();
    let mut manifests = Vec::new();
    if !oci::is_index_type(&target.media_type) {
        manifests.push(target.clone());
        return Ok(ImageEntries {
            target,
            manifests,
            notes,
        });
    }
    let bytes = json
        .read(source, &target)
        .await?
        .ok_or_else(|| anyhow!("{}: image index missing", source.describe()))?;
    let index = Index::from_json(&bytes).map_err(|e| anyhow!("{}: {e}", source.describe()))?;
    drop(bytes);
    for d in index.manifests.unwrap_or_default() {
        if is_soci_entry(&d) {
            if d.artifact_type.is_empty() {
                notes.push(format!(
                    "SOCI index entry {} has no artifactType (skopeo copy 1.9 drops it): the soci-snapshotter finds v2 indexes through the image manifest annotation, so lazy loading is unaffected; tools that list SOCI indexes by artifactType will not see it",
                    d.digest
                ));
            }
            continue;
        }
        let attestation = d
            .platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
        if !attestation && oci::is_manifest_type(&d.media_type) {
            manifests.push(d);
        }
    }
    if manifests.len() > MAX_IMAGE_MANIFESTS {
        bail!(
            "{}: the image index lists {} image manifests; at most {MAX_IMAGE_MANIFESTS} are checked",
            source.describe(),
            manifests.len()
        );
    }
    Ok(ImageEntries {
        target,
        manifests,
        notes,
    })
}

pub async fn inspect<S: ImageSource>(source: &S, min_layer_size: i64) -> Result<ImageReport> {
    inspect_with(source, min_layer_size, true).await
}

/// [`inspect`], optionally without looking for v1 SOCI indexes (referrers) of manifests that
/// carry no v2 annotation: the controller compares a source's layers, and checks a v2 target,
/// where those look-ups are two wasted requests per manifest on registries without the
/// referrers API.
pub async fn inspect_with<S: ImageSource>(
    source: &S,
    min_layer_size: i64,
    find_v1: bool,
) -> Result<ImageReport> {
    let mut json = JsonRead::default();
    let ImageEntries {
        target,
        manifests: entries,
        notes,
    } = image_entries(source, &mut json).await?;
    let mut platforms = Vec::new();
    for entry in entries {
        platforms.push(inspect_manifest(source, &mut json, &entry, min_layer_size, find_v1).await?);
    }
    Ok(ImageReport {
        image: source.describe(),
        digest: target.digest,
        media_type: target.media_type,
        platforms,
        notes,
    })
}

async fn inspect_manifest<S: ImageSource>(
    source: &S,
    json: &mut JsonRead,
    entry: &Descriptor,
    min_layer_size: i64,
    find_v1: bool,
) -> Result<PlatformReport> {
    let bytes = json
        .read(source, entry)
        .await?
        .ok_or_else(|| anyhow!("{}: manifest {} missing", source.describe(), entry.digest))?;
    let manifest = Manifest::from_json(&bytes)
        .map_err(|e| anyhow!("{}: manifest {}: {e}", source.describe(), entry.digest))?;
    drop(bytes);
    let layer_count = manifest.layers.as_ref().map_or(0, Vec::len);
    if layer_count > MAX_LAYERS {
        bail!(
            "{}: manifest {} lists {layer_count} layers; at most {MAX_LAYERS} are checked",
            source.describe(),
            entry.digest
        );
    }
    let platform = match &entry.platform {
        Some(p) => soci_format::platform::format(p),
        None => "(from config)".into(),
    };
    let mut report = PlatformReport {
        platform,
        manifest: entry.digest.clone(),
        config: manifest.config.digest.clone(),
        binding: "none".into(),
        soci_index: None,
        problem: None,
        layers: Vec::new(),
        layers_indexed: 0,
        bytes_indexed_percent: 0.0,
    };
    // Layer digest → zTOC descriptor, from the bound SOCI index.
    let mut ztocs: HashMap<String, Descriptor> = HashMap::new();
    // v2: the annotation (which the snapshotter prefers); v1: a referrer of the manifest.
    let annotated = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(oci::ANNOTATION_SOCI_INDEX_DIGEST))
        .cloned();
    let found = match annotated {
        Some(digest) => Some((digest, "v2")),
        None if !find_v1 => None,
        None => source
            .soci_v1_referrers(&entry.digest)
            .await?
            .into_iter()
            .next()
            .map(|d| (d.digest, "v1")),
    };
    if let Some((digest, binding)) = found {
        report.soci_index = Some(digest.clone());
        let desc = Descriptor::new(oci::MEDIA_TYPE_OCI_MANIFEST, &digest, 0);
        match json.read(source, &desc).await {
            Ok(Some(b)) => match Manifest::from_json(&b) {
                Ok(m)
                    if m.config.media_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V2
                        || m.config.media_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V1 =>
                {
                    report.binding = binding.into();
                    for z in m.layers.unwrap_or_default() {
                        if let Some(layer) = z.annotation(oci::ANNOTATION_IMAGE_LAYER_DIGEST) {
                            ztocs.insert(layer.to_string(), z.clone());
                        }
                    }
                }
                Ok(m) => {
                    report.problem = Some(format!(
                        "SOCI index {digest} has config media type {:?}",
                        m.config.media_type
                    ))
                }
                Err(e) => report.problem = Some(format!("SOCI index {digest}: {e}")),
            },
            Ok(None) => {
                report.problem = Some(format!(
                    "annotation names SOCI index {digest}, which is missing: the snapshotter will not lazy-load this image"
                ))
            }
            Err(e) => return Err(e),
        }
    }
    let (mut total, mut indexed_bytes) = (0i64, 0i64);
    for layer in manifest.layers.unwrap_or_default() {
        total += layer.size;
        let mut ztoc = None;
        let status = if let Some(z) = ztocs.get(&layer.digest) {
            ztoc = Some(z.digest.clone());
            if source.blob_present(z).await? {
                indexed_bytes += layer.size;
                report.layers_indexed += 1;
                "indexed"
            } else {
                "missing-ztoc"
            }
        } else if !matches!(compression_of_media_type(&layer.media_type), Ok(Some(_))) {
            "unsupported"
        } else if layer.size < min_layer_size {
            "too-small"
        } else {
            "not-indexed"
        };
        report.layers.push(LayerStatus {
            digest: layer.digest,
            media_type: layer.media_type,
            size: layer.size,
            status,
            ztoc,
        });
    }
    report.bytes_indexed_percent = if total > 0 {
        (indexed_bytes as f64 * 1000.0 / total as f64).round() / 10.0
    } else {
        0.0
    };
    Ok(report)
}
