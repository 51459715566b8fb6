//! `verify`: checks an image's SOCI binding the way the soci-snapshotter checks it when it pulls
//! (`fs/fs.go`, `fs/artifact_fetcher.go`, `fs/layer/layer.go`, `fs/span-manager/`):
//!
//! * per platform, the image manifest's `com.amazon.soci.index-digest` annotation names a SOCI
//!   index that lives as a manifest in the same repository (a dangling annotation disables
//!   lazy loading: the snapshotter does not fall back to v1);
//! * the index JSON is in Go canonical form (the snapshotter re-marshals it and stores it under
//!   the fetched digest; other bytes fail the store), its config media type is the v1 or v2
//!   artifact type, it has zTOCs;
//! * every zTOC is present, matches its digest, parses, and passes the load-time checks: span
//!   count = checkpoint count = span digest count, span offsets strictly increasing (a
//!   zero-length span is refused), the TOC's header/data offsets consistent, and it was built
//!   for a blob of the layer's size;
//! * with `deep`, each indexed layer is streamed once: its digest, the gzip header before the
//!   first checkpoint, and every span's sha256 against the zTOC's span digests.
//!
//! A finding is a [`Problem`] in the report (the image is not what the snapshotter needs); an
//! `Err` means the check itself could not run (registry unreachable after retries, image
//! missing), so the caller can tell "bad binding" from "try again later".

use crate::image::registry_io::RegistrySource;
use crate::image::{BlobReader, ImageSource, VerifiedReader};
use crate::inspect_report::{ImageEntries, JsonRead, MAX_LAYERS, image_entries};
use crate::registry::limits::{self, BODY_MEMORY, Held, append_counted};
use crate::registry::{RegistryClient, RegistryError, RegistryRef};
use anyhow::Result;
use sha2::{Digest, Sha256};
use soci_format::oci::{self, Descriptor, Manifest};
use soci_format::ztoc::{CompressionAlgorithm, Ztoc, hex_lower};
use soci_format::ztoc_reader::{self, SpanRange};
use std::sync::Arc;

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationReport {
    pub image: String,
    pub digest: String,
    pub media_type: String,
    pub deep: bool,
    /// No problem anywhere, and at least one platform bound to a SOCI index.
    pub ok: bool,
    pub platforms: Vec<PlatformVerification>,
    /// Problems of the image as a whole (nothing bound at all).
    pub problems: Vec<String>,
    /// Facts worth knowing that do not stop lazy loading.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformVerification {
    pub platform: String,
    pub manifest: String,
    /// `bound` (the v2 annotation names a SOCI index), `bound-v1` (a v1 SOCI index refers to
    /// the manifest, found through the referrers API or tag schema) or `unbound`.
    pub binding: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soci_index: Option<String>,
    pub ztocs_checked: usize,
    /// Spans re-hashed against the layer (only with `deep`).
    pub spans_checked: usize,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ztoc: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = &self.layer {
            write!(f, "layer {l}: ")?;
        }
        if let Some(z) = &self.ztoc {
            write!(f, "zTOC {z}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl VerificationReport {
    /// Every problem, one line each, naming the platform and layer.
    pub fn problem_lines(&self) -> Vec<String> {
        let mut lines = self.problems.clone();
        for p in &self.platforms {
            for problem in &p.problems {
                lines.push(format!("platform {}: {problem}", p.platform));
            }
        }
        lines
    }
}

/// Verifies the binding of a registry image.
pub async fn verify_binding(
    client: Arc<RegistryClient>,
    reference: RegistryRef,
    deep: bool,
) -> Result<VerificationReport> {
    verify(&RegistrySource::new(client, reference), deep).await
}

/// Turns an error into a finding, unless it is a transient registry failure (the check could
/// not run: that is the caller's error, exit code 3).
fn finding(e: anyhow::Error) -> Result<String> {
    if e.chain().any(|c| {
        c.downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::is_transient)
    }) {
        return Err(e);
    }
    Ok(format!("{e:#}"))
}

/// Verifies the binding of any image source (registry or layout).
pub async fn verify<S: ImageSource>(source: &S, deep: bool) -> Result<VerificationReport> {
    let mut json = JsonRead::default();
    let ImageEntries {
        target,
        manifests: entries,
        mut notes,
    } = image_entries(source, &mut json).await?;
    let mut platforms = Vec::new();
    for entry in &entries {
        platforms.push(verify_platform(source, &mut json, entry, deep, &mut notes).await?);
    }
    let mut problems = Vec::new();
    if !platforms.iter().any(|p| p.binding.starts_with("bound")) {
        problems.push(
            "no image manifest is bound to a SOCI index (no com.amazon.soci.index-digest annotation): the snapshotter will pull it in full".to_string(),
        );
    }
    let ok = problems.is_empty() && platforms.iter().all(|p| p.problems.is_empty());
    Ok(VerificationReport {
        image: source.describe(),
        digest: target.digest,
        media_type: target.media_type,
        deep,
        ok,
        platforms,
        problems,
        notes,
    })
}

async fn verify_platform<S: ImageSource>(
    source: &S,
    json: &mut JsonRead,
    entry: &Descriptor,
    deep: bool,
    notes: &mut Vec<String>,
) -> Result<PlatformVerification> {
    let platform = match &entry.platform {
        Some(p) => soci_format::platform::format(p),
        None => "(single manifest)".into(),
    };
    let mut report = PlatformVerification {
        platform: platform.clone(),
        manifest: entry.digest.clone(),
        binding: "unbound",
        soci_index: None,
        ztocs_checked: 0,
        spans_checked: 0,
        problems: Vec::new(),
    };
    let problem = |message: String| Problem {
        layer: None,
        ztoc: None,
        message,
    };
    let bytes = match json.read(source, entry).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            report
                .problems
                .push(problem(format!("image manifest {} missing", entry.digest)));
            return Ok(report);
        }
        Err(e) => {
            report.problems.push(problem(finding(e)?));
            return Ok(report);
        }
    };
    let manifest = match Manifest::from_json(&bytes) {
        Ok(m) => m,
        Err(e) => {
            report
                .problems
                .push(problem(format!("image manifest {}: {e}", entry.digest)));
            return Ok(report);
        }
    };
    drop(bytes);
    let layer_count = manifest.layers.as_ref().map_or(0, Vec::len);
    if layer_count > MAX_LAYERS {
        report.problems.push(problem(format!(
            "image manifest {} lists {layer_count} layers; at most {MAX_LAYERS} are checked",
            entry.digest
        )));
        return Ok(report);
    }
    let annotated = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(oci::ANNOTATION_SOCI_INDEX_DIGEST))
        .cloned();
    // Without the v2 annotation the snapshotter looks for v1 referrers (when v1 is enabled).
    let v1_referrer = match &annotated {
        Some(_) => None,
        None => match source.soci_v1_referrers(&entry.digest).await {
            Ok(found) => found.into_iter().next().map(|d| d.digest),
            Err(e) => {
                report.problems.push(problem(format!(
                    "looking up v1 SOCI indexes: {}",
                    finding(e)?
                )));
                return Ok(report);
            }
        },
    };
    let index_digest = match (annotated, v1_referrer) {
        (Some(digest), _) => {
            report.binding = "bound";
            digest
        }
        (None, Some(digest)) => {
            report.binding = "bound-v1";
            notes.push(format!(
                "platform {platform}: found through a v1 SOCI index {digest} that refers to the manifest; soci-snapshotter 0.10 and later read v1 indexes only with pull_modes.soci_v1.enable = true"
            ));
            digest
        }
        (None, None) => {
            notes.push(format!(
                "platform {platform}: not bound to a SOCI index (pulled in full)"
            ));
            return Ok(report);
        }
    };
    report.soci_index = Some(index_digest.clone());

    // The SOCI index, fetched by digest from the manifests endpoint, as the snapshotter does.
    let desc = Descriptor::new(oci::MEDIA_TYPE_OCI_MANIFEST, &index_digest, 0);
    let index_bytes = match json.read(source, &desc).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            report.problems.push(problem(format!(
                "the annotation names SOCI index {index_digest}, which the repository does not have: the snapshotter will not lazy-load this image (no fallback to v1)"
            )));
            return Ok(report);
        }
        Err(e) => {
            report.problems.push(problem(format!(
                "SOCI index {index_digest}: {}",
                finding(e)?
            )));
            return Ok(report);
        }
    };
    let index = match Manifest::from_json(&index_bytes) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(problem(format!(
                "SOCI index {index_digest} does not decode: {e}"
            )));
            return Ok(report);
        }
    };
    let canonical = index.to_go_json();
    if canonical != index_bytes {
        let at = canonical
            .iter()
            .zip(&index_bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(index_bytes.len()));
        report.problems.push(problem(format!(
            "SOCI index {index_digest} is not in Go canonical JSON form (first difference at byte {at}; {} bytes, re-marshalled {}): the snapshotter re-marshals it and its store refuses the digest, so the image is pulled in full",
            index_bytes.len(),
            canonical.len()
        )));
    }
    match index.config.media_type.as_str() {
        oci::SOCI_INDEX_ARTIFACT_TYPE_V1 if report.binding == "bound-v1" => {}
        oci::SOCI_INDEX_ARTIFACT_TYPE_V2 if report.binding == "bound-v1" => {
            report.problems.push(problem(format!(
                "SOCI index {index_digest} is listed as a v1 referrer but is a v2 index"
            )))
        }
        oci::SOCI_INDEX_ARTIFACT_TYPE_V2 => {
            if index.subject.is_some() {
                notes.push(format!(
                    "platform {platform}: SOCI index {index_digest} is v2 but has a subject (upstream never writes one)"
                ));
            }
        }
        oci::SOCI_INDEX_ARTIFACT_TYPE_V1 => notes.push(format!(
            "platform {platform}: the v2 annotation names a v1 SOCI index {index_digest} (the snapshotter accepts it)"
        )),
        other => report.problems.push(problem(format!(
            "SOCI index {index_digest} has config media type {other:?}: unknown index version"
        ))),
    }
    if !index.artifact_type.is_empty() {
        notes.push(format!(
            "platform {platform}: SOCI index {index_digest} has a top-level artifactType {:?} (upstream never writes one)",
            index.artifact_type
        ));
    }
    if index.media_type != oci::MEDIA_TYPE_OCI_MANIFEST {
        report.problems.push(problem(format!(
            "SOCI index {index_digest} has media type {:?}, not an OCI image manifest",
            index.media_type
        )));
    }
    if index.config.digest != oci::SOCI_EMPTY_CONFIG_DIGEST {
        notes.push(format!(
            "platform {platform}: SOCI index {index_digest} config is {} (upstream writes the {{}} blob)",
            index.config.digest
        ));
    }

    let layers = manifest.layers.clone().unwrap_or_default();
    let ztocs: Vec<Descriptor> = index
        .layers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.media_type == oci::SOCI_ZTOC_MEDIA_TYPE)
        .collect();
    if ztocs.len() > MAX_LAYERS {
        report.problems.push(problem(format!(
            "SOCI index {index_digest} lists {} zTOCs; at most {MAX_LAYERS} are checked",
            ztocs.len()
        )));
        return Ok(report);
    }
    if ztocs.is_empty() {
        report
            .problems
            .push(problem(format!("SOCI index {index_digest} has no zTOCs")));
    }
    for z in &ztocs {
        let Some(layer_digest) = z.annotation(oci::ANNOTATION_IMAGE_LAYER_DIGEST) else {
            report.problems.push(Problem {
                layer: None,
                ztoc: Some(z.digest.clone()),
                message: "no com.amazon.soci.image-layer-digest annotation".into(),
            });
            continue;
        };
        let Some(layer) = layers.iter().find(|l| l.digest == layer_digest) else {
            notes.push(format!(
                "platform {platform}: zTOC {} is for layer {layer_digest}, which the image does not have",
                z.digest
            ));
            continue;
        };
        report.ztocs_checked += 1;
        let messages = verify_ztoc(source, layer, z, deep, &mut report.spans_checked).await?;
        for message in messages {
            report.problems.push(Problem {
                layer: Some(layer.digest.clone()),
                ztoc: Some(z.digest.clone()),
                message,
            });
        }
    }
    Ok(report)
}

/// Reads a zTOC whole (flatbuffers need the whole buffer), its size and sha256 checked while
/// it streams (a byte past the descriptor's size stops it), into one buffer; what arrives is
/// counted in the process's body memory, and the [`Held`] share lasts as long as the caller
/// keeps it.
async fn read_ztoc_blob<S: ImageSource>(source: &S, z: &Descriptor) -> Result<(Vec<u8>, Held)> {
    let label = format!("zTOC {}", z.digest);
    let mut reader = VerifiedReader::new(source.open_blob(z).await?, z, label.clone());
    let mut held = Held::new(&BODY_MEMORY);
    let size = z.size.max(0) as u64;
    // The size is checked (at most 48 MiB): one buffer, never moved, resident as it fills.
    let mut out = Vec::with_capacity(size as usize);
    while let Some(chunk) = reader.next_chunk().await? {
        append_counted(&label, &mut out, &chunk, size, &mut held)?;
    }
    Ok((out, held))
}

/// The problems of one zTOC (empty when it is fine).
async fn verify_ztoc<S: ImageSource>(
    source: &S,
    layer: &Descriptor,
    z: &Descriptor,
    deep: bool,
    spans_checked: &mut usize,
) -> Result<Vec<String>> {
    // Before any request: a size we would not read is refused as declared.
    if z.size <= 0 || z.size as u64 > limits::ZTOC.bytes {
        return Ok(vec![format!(
            "the descriptor declares {} bytes; a zTOC must have 1 to {} bytes (not downloaded)",
            z.size,
            limits::ZTOC.bytes
        )]);
    }
    match source.blob_present(z).await {
        Ok(true) => {}
        Ok(false) => {
            return Ok(vec![
                "zTOC blob missing from the repository: this layer will be pulled in full".into(),
            ]);
        }
        Err(e) => return Ok(vec![finding(e)?]),
    }
    let (bytes, _held) = match read_ztoc_blob(source, z).await {
        Ok(b) => b,
        Err(e) => return Ok(vec![finding(e)?]),
    };
    let parsed = ztoc_reader::read_ztoc(&bytes);
    // The parsed zTOC is what the checks read; the raw bytes go now (the share of the body
    // memory stays until the parsed copy goes too).
    drop(bytes);
    let ztoc = match parsed {
        Ok(t) => t,
        Err(e) => return Ok(vec![format!("does not parse: {e}")]),
    };
    let mut problems = Vec::new();
    if ztoc.compressed_archive_size != layer.size {
        problems.push(format!(
            "built for a blob of {} bytes, the layer has {}",
            ztoc.compressed_archive_size, layer.size
        ));
    }
    let expected = match oci::diff_compression(&layer.media_type) {
        Some("gzip") => Some(CompressionAlgorithm::Gzip),
        Some("" | "unknown") => Some(CompressionAlgorithm::Uncompressed),
        _ => None,
    };
    if expected.is_some_and(|a| a != ztoc_reader::algorithm(&ztoc)) {
        problems.push(format!(
            "compression {:?} does not match the layer's media type {}",
            ztoc_reader::algorithm(&ztoc),
            layer.media_type
        ));
    }
    if let Err(e) = ztoc_reader::check_toc(&ztoc) {
        problems.push(e.to_string());
    }
    let spans = match ztoc_reader::span_ranges(&ztoc, layer.size.max(0) as u64) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e.to_string());
            return Ok(problems);
        }
    };
    if deep && problems.is_empty() {
        match rehash_layer(source, layer, &ztoc, &spans).await {
            Ok(mismatches) => {
                *spans_checked += spans.len();
                problems.extend(mismatches);
            }
            Err(e) => problems.push(finding(e)?),
        }
    }
    Ok(problems)
}

/// Streams the layer once, hashing every span's compressed bytes (spans may overlap by the
/// one byte a checkpoint shares with the previous span). Also checks the layer's digest and,
/// for gzip, that the bytes before the first checkpoint are a gzip header.
async fn rehash_layer<S: ImageSource>(
    source: &S,
    layer: &Descriptor,
    ztoc: &Ztoc,
    spans: &[SpanRange],
) -> Result<Vec<String>> {
    let mut reader = VerifiedReader::new(
        source.open_blob(layer).await?,
        layer,
        format!("layer {}", layer.digest),
    );
    let mut hashers: Vec<Option<Sha256>> = spans.iter().map(|_| None).collect();
    let mut digests: Vec<Option<String>> = vec![None; spans.len()];
    let mut head = Vec::new();
    let head_len = spans.first().map_or(0, |s| s.compressed.start) as usize;
    let mut first_open = 0usize;
    let mut offset = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        let chunk_end = offset + chunk.len() as u64;
        if head.len() < head_len {
            let take = (head_len - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        let mut i = first_open;
        while i < spans.len() && spans[i].compressed.start < chunk_end {
            let r = &spans[i].compressed;
            if r.end > offset {
                let from = r.start.max(offset) - offset;
                let to = r.end.min(chunk_end) - offset;
                hashers[i]
                    .get_or_insert_with(Sha256::new)
                    .update(&chunk[from as usize..to as usize]);
                if r.end <= chunk_end {
                    let h = hashers[i].take().unwrap_or_default();
                    digests[i] = Some(format!("sha256:{}", hex_lower(&h.finalize())));
                }
            }
            if r.end <= chunk_end && i == first_open {
                first_open += 1;
            }
            i += 1;
        }
        offset = chunk_end;
    }
    let mut problems = Vec::new();
    if ztoc_reader::algorithm(ztoc) == CompressionAlgorithm::Gzip
        && !(head.len() >= 10 && head[0] == 0x1f && head[1] == 0x8b && head[2] == 8)
    {
        problems.push(format!(
            "the {head_len} bytes before the first checkpoint are not a gzip header"
        ));
    }
    let mut wrong = Vec::new();
    for (i, (got, want)) in digests
        .iter()
        .zip(&ztoc.compression.span_digests)
        .enumerate()
    {
        if got.as_deref() != Some(want.as_str()) {
            wrong.push((i, want.clone(), got.clone().unwrap_or_default()));
        }
    }
    if let Some((i, want, got)) = wrong.first() {
        problems.push(format!(
            "{} of {} span digests do not match the layer (first: span {i} [{}..{}] zTOC says {want}, the layer's bytes give {got}): the snapshotter fails reads of those spans (EIO)",
            wrong.len(),
            spans.len(),
            spans[*i].compressed.start,
            spans[*i].compressed.end
        ));
    }
    Ok(problems)
}
