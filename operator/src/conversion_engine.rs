//! The whole conversion of one image, whatever it is read from and written to:
//! resolve and plan (pure, in `soci_format::conversion_plan`, over the source's small JSON blobs),
//! build the zTOCs of the planned layers in parallel (each streamed once from the source into
//! a `LayerIndexer` on a blocking thread), assemble the new manifests and image index (pure),
//! then write: blobs first (zTOCs, new JSON, the source's layers and configs), then manifests
//! children before parents, and last the commit (the tag, or the layout's `index.json`), so
//! that nothing incomplete is ever visible.

use crate::image::layout::ResolvedRoot;
use crate::image::{BlobReader, ImageSink, ImageSource, PutOutcome, VerifiedReader};
use crate::progress::Progress;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use soci_format::conversion_plan::{
    ConversionPlan, ConvertOptions, IndexVersion, LayerPlan, LayerToIndex, PlatformSelection,
    ZtocInfo, plan_conversion,
};
use soci_format::layer_indexer::{IndexerLimits, LayerCompression, LayerIndexer};
use soci_format::oci::{self, Descriptor, Index, Manifest};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// Chunks queued between a layer's reader and its indexing thread: bounds memory per layer
/// to this many chunks (256 KiB from files, the indexer's own piece size; smaller from the
/// network).
const INDEXER_QUEUE: usize = 8;

/// How a layer media type is read (containerd's `DiffCompression`, as upstream uses it);
/// `None` for layers upstream skips (zstd, wrapped types), an error for non-layer types.
pub fn compression_of_media_type(media_type: &str) -> Result<Option<LayerCompression>> {
    if !oci::is_layer_type(media_type) {
        bail!("media type {media_type:?} is not a layer type");
    }
    Ok(match oci::diff_compression(media_type) {
        Some("gzip") => Some(LayerCompression::Gzip),
        Some("unknown") => Some(LayerCompression::Uncompressed),
        Some("") if media_type == "application/vnd.oci.image.layer.v1.tar" => {
            Some(LayerCompression::Uncompressed)
        }
        _ => None,
    })
}

#[derive(Debug, Clone)]
pub struct ConvertSettings {
    pub platforms: PlatformSelection,
    pub span_size: u64,
    pub min_layer_size: i64,
    pub index_version: IndexVersion,
    /// Layers indexed (and blobs written) at once.
    pub jobs: usize,
    pub limits: IndexerLimits,
    /// Upstream's opt-in `xattr` optimisation: mark layers without xattrs `disable-xattrs`.
    pub optimize_xattrs: bool,
    pub progress: Progress,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    #[serde(skip)]
    pub xattr_free: bool,
    pub layer_digest: String,
    pub ztoc_digest: String,
    pub ztoc_size: u64,
    pub spans: usize,
    pub files: usize,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub seconds: f64,
}

/// What writing the result did, counted per blob or manifest.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferReport {
    pub written: usize,
    pub bytes_written: u64,
    /// Mounted from the source repository, or hard-linked from the source layout.
    pub linked: usize,
    pub already_present: usize,
}

impl TransferReport {
    fn add(&mut self, outcome: PutOutcome) {
        match outcome {
            PutOutcome::Written(n) => {
                self.written += 1;
                self.bytes_written += n;
            }
            PutOutcome::Linked => self.linked += 1,
            PutOutcome::Present => self.already_present += 1,
        }
    }
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvertReport {
    pub source: String,
    pub destination: String,
    pub image_index: Descriptor,
    pub soci_indexes: Vec<Descriptor>,
    pub layers: Vec<LayerReport>,
    pub skipped_layers: Vec<String>,
    pub already_converted: bool,
    pub transfer: TransferReport,
    pub seconds: f64,
}

fn convert_options(settings: &ConvertSettings) -> ConvertOptions {
    ConvertOptions {
        platforms: settings.platforms.clone(),
        min_layer_size: settings.min_layer_size,
        span_size: settings.span_size as i64,
        index_version: settings.index_version,
        host_platform: soci_format::platform::host_platform(),
    }
}

/// Resolves the source image and plans its conversion (no layer is read).
pub async fn plan<S: ImageSource>(
    source: &S,
    settings: &ConvertSettings,
) -> Result<(ResolvedRoot, ConversionPlan)> {
    let root = source.resolve().await?;
    let blobs = source.json_blobs(&root).await?;
    let plan = plan_conversion(&root.target, &*blobs, &convert_options(settings))
        .map_err(|e| anyhow!("{}: {e}", source.describe()))?;
    drop(blobs);
    Ok((root, plan))
}

pub async fn convert<S: ImageSource, D: ImageSink>(
    source: &S,
    mut sink: D,
    settings: &ConvertSettings,
) -> Result<ConvertReport> {
    let started = Instant::now();
    let (root, plan) = plan(source, settings).await?;
    sink.starts_from(&root.target);
    let skipped_layers = plan
        .skipped_layers()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();

    let layers = plan.layers_to_index();
    let built = build_ztocs(source, &layers, settings).await?;
    let ztoc_infos: BTreeMap<String, ZtocInfo> = built
        .iter()
        .map(|(layer, (bytes, report))| {
            let info = ZtocInfo {
                digest: bytes.digest.clone(),
                size: bytes.bytes.len() as i64,
                disable_xattrs: settings.optimize_xattrs && report.xattr_free,
            };
            (layer.clone(), info)
        })
        .collect();
    let output = plan
        .assemble(&ztoc_infos)
        .map_err(|e| anyhow!("{}: {e}", source.describe()))?;

    let mut new_blobs: HashMap<String, Bytes> = HashMap::new();
    for (desc, bytes) in output.blobs.iter().chain(root.synthesized.iter()) {
        new_blobs.insert(desc.digest.clone(), Bytes::from(bytes.clone()));
    }
    let ztocs: HashMap<String, &ZtocBlob> = built
        .values()
        .map(|(ztoc, _)| (ztoc.digest.clone(), ztoc))
        .collect();

    let mut roots = vec![output.image_index.clone()];
    if matches!(settings.index_version, IndexVersion::V1) {
        roots.extend(output.soci_indexes.iter().map(|(_, d)| d.clone()));
    }
    let mut graph = WriteList::default();
    for r in &roots {
        collect_writes(r, source, &new_blobs, &ztocs, &mut graph).await?;
    }
    let destination = sink.describe();
    let transfer = write_all(source, sink, &graph, &roots, settings).await?;

    let mut layer_reports: Vec<LayerReport> = layers
        .iter()
        .filter_map(|l| built.get(&l.descriptor.digest).map(|(_, r)| r.clone()))
        .collect();
    layer_reports.sort_by(|a, b| a.layer_digest.cmp(&b.layer_digest));
    Ok(ConvertReport {
        source: source.describe(),
        destination,
        image_index: output.image_index,
        soci_indexes: output.soci_indexes.into_iter().map(|(_, d)| d).collect(),
        layers: layer_reports,
        skipped_layers,
        already_converted: output.already_converted,
        transfer,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Builds every planned layer's zTOC, `settings.jobs` at a time. The first failure stops the
/// remaining work and is returned with the layer named.
async fn build_ztocs<S: ImageSource>(
    source: &S,
    layers: &[LayerToIndex],
    settings: &ConvertSettings,
) -> Result<HashMap<String, (ZtocBlob, LayerReport)>> {
    settings.progress.indexing(
        layers.len(),
        layers.iter().map(|l| l.descriptor.size.max(0) as u64).sum(),
    );
    stream::iter(layers)
        .map(|layer| async move {
            let built = build_one(source, layer, settings).await?;
            settings
                .progress
                .layer_done(&layer.descriptor.digest, &built.0.digest);
            Ok::<_, anyhow::Error>((layer.descriptor.digest.clone(), built))
        })
        .buffer_unordered(settings.jobs.max(1))
        .try_collect()
        .await
}

/// Streams one layer into a `LayerIndexer` running on a blocking thread. The reader checks
/// size and digest as the bytes pass; a mismatch fails the layer even if indexing succeeded.
async fn build_one<S: ImageSource>(
    source: &S,
    layer: &LayerToIndex,
    settings: &ConvertSettings,
) -> Result<(ZtocBlob, LayerReport)> {
    let started = Instant::now();
    let desc = &layer.descriptor;
    let label = format!(
        "layer {} ({}) of {}",
        desc.digest,
        desc.media_type,
        source.describe()
    );
    let mut reader = VerifiedReader::new(source.open_blob(desc).await?, desc, label.clone());
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(INDEXER_QUEUE);
    let (compression, span_size, limits) = (layer.compression, settings.span_size, settings.limits);
    let indexing = tokio::task::spawn_blocking(move || {
        let mut indexer = LayerIndexer::new(compression, span_size, limits)?;
        while let Some(chunk) = receiver.blocking_recv() {
            indexer.push(&chunk)?;
        }
        indexer.finish()
    });
    let mut read_error = None;
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => {
                settings.progress.indexed_bytes(chunk.len() as u64);
                if sender.send(chunk).await.is_err() {
                    break; // the indexer failed; its error is reported below
                }
            }
            Ok(None) => break,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
    }
    drop(sender);
    let indexed = indexing.await.context("indexing thread")?;
    if let Some(e) = read_error {
        return Err(e.context(label));
    }
    let built = indexed.with_context(|| label.clone())?;
    let report = LayerReport {
        xattr_free: built.xattr_free,
        layer_digest: desc.digest.clone(),
        ztoc_digest: built.bytes.digest().to_string(),
        ztoc_size: built.bytes.len(),
        spans: built.span_count,
        files: built.file_count,
        compressed_size: built.compressed_size,
        uncompressed_size: built.uncompressed_archive_size,
        seconds: started.elapsed().as_secs_f64(),
    };
    let ztoc = ZtocBlob {
        digest: built.bytes.digest().to_string(),
        bytes: Bytes::from(built.bytes.into_vec()),
    };
    Ok((ztoc, report))
}

/// A built zTOC as one buffer, shared (not copied) with every write of it.
struct ZtocBlob {
    digest: String,
    bytes: Bytes,
}

enum Content<'z> {
    New(Bytes),
    Ztoc(&'z ZtocBlob),
    FromSource,
}

/// Everything the result references, in write order: blobs (any order), then manifests with
/// children before parents.
#[derive(Default)]
struct WriteList<'z> {
    seen: HashSet<String>,
    blobs: Vec<(Descriptor, Content<'z>)>,
    manifests: Vec<(Descriptor, Bytes)>,
}

/// Adds `desc` and what it references that exists: new blobs from this conversion, zTOCs, or
/// content of the source. Content the source never had (a platform that was not pulled into
/// a layout) is left dangling, as upstream does.
fn collect_writes<'a, 'z: 'a, S: ImageSource>(
    desc: &'a Descriptor,
    source: &'a S,
    new_blobs: &'a HashMap<String, Bytes>,
    ztocs: &'a HashMap<String, &'z ZtocBlob>,
    list: &'a mut WriteList<'z>,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        if !list.seen.insert(desc.digest.clone()) {
            return Ok(());
        }
        let is_json =
            oci::is_index_type(&desc.media_type) || oci::is_manifest_type(&desc.media_type);
        let json = if let Some(bytes) = new_blobs.get(&desc.digest) {
            if !is_json {
                list.blobs.push((desc.clone(), Content::New(bytes.clone())));
                return Ok(());
            }
            bytes.clone()
        } else if let Some(ztoc) = ztocs.get(&desc.digest) {
            list.blobs.push((desc.clone(), Content::Ztoc(ztoc)));
            return Ok(());
        } else if is_json {
            match source.read_json(desc).await? {
                Some(bytes) => Bytes::from(bytes),
                None => return Ok(()),
            }
        } else {
            if source.has_blob(desc).await? {
                list.blobs.push((desc.clone(), Content::FromSource));
            }
            return Ok(());
        };
        let children = if oci::is_index_type(&desc.media_type) {
            Index::from_json(&json)
                .map_err(|e| anyhow!("index {}: {e}", desc.digest))?
                .manifests
                .unwrap_or_default()
        } else {
            let m =
                Manifest::from_json(&json).map_err(|e| anyhow!("manifest {}: {e}", desc.digest))?;
            let mut c = vec![m.config];
            c.extend(m.layers.unwrap_or_default());
            c
        };
        for child in &children {
            collect_writes(child, source, new_blobs, ztocs, list).await?;
        }
        list.manifests.push((desc.clone(), json));
        Ok(())
    })
}

async fn write_all<S: ImageSource, D: ImageSink>(
    source: &S,
    sink: D,
    list: &WriteList<'_>,
    roots: &[Descriptor],
    settings: &ConvertSettings,
) -> Result<TransferReport> {
    let mut report = TransferReport::default();
    let sink_ref = &sink;
    let progress = &settings.progress;
    progress.writing(list.blobs.len() + list.manifests.len());
    let bytes_written = std::sync::atomic::AtomicU64::new(0);
    let counted = |outcome: &PutOutcome| {
        let n = match outcome {
            PutOutcome::Written(n) => *n,
            _ => 0,
        };
        let total = bytes_written.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        progress.wrote(total);
    };
    let counted = &counted;
    let outcomes: Vec<PutOutcome> = stream::iter(&list.blobs)
        .map(|(desc, content)| async move {
            let outcome = match content {
                Content::New(bytes) => sink_ref.put_blob(desc, bytes.clone()).await,
                Content::Ztoc(ztoc) => sink_ref.put_blob(desc, ztoc.bytes.clone()).await,
                Content::FromSource => sink_ref.copy_blob(source, desc).await,
            }
            .with_context(|| format!("writing blob {} to {}", desc.digest, sink_ref.describe()))?;
            counted(&outcome);
            Ok::<_, anyhow::Error>(outcome)
        })
        .buffer_unordered(settings.jobs.max(1))
        .try_collect()
        .await?;
    outcomes.into_iter().for_each(|o| report.add(o));
    for (desc, bytes) in &list.manifests {
        let outcome = sink
            .put_manifest(desc, bytes.clone())
            .await
            .with_context(|| format!("writing manifest {} to {}", desc.digest, sink.describe()))?;
        counted(&outcome);
        report.add(outcome);
    }
    let by_digest: HashMap<&str, &Bytes> = list
        .manifests
        .iter()
        .map(|(d, b)| (d.digest.as_str(), b))
        .collect();
    let mut committed = Vec::new();
    for root in roots {
        let bytes = by_digest
            .get(root.digest.as_str())
            .map(|b| (*b).clone())
            .unwrap_or_default();
        committed.push((root.clone(), bytes));
    }
    let destination = sink.describe();
    sink.commit(committed)
        .await
        .with_context(|| format!("publishing {destination}"))?;
    Ok(report)
}

/// The plan as `--dry-run` shows it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub source: String,
    pub image: Descriptor,
    pub platforms: Vec<PlatformPlanReport>,
    /// Layers without a zTOC, with the reason (also those of platforms dropped for having none).
    pub skipped_layers: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformPlanReport {
    pub platform: String,
    pub manifest: String,
    pub layers: Vec<LayerPlanReport>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerPlanReport {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    /// `index`, or `skip`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub fn plan_report(source: &str, plan: &ConversionPlan, min_layer_size: i64) -> PlanReport {
    let platforms = plan
        .platforms()
        .iter()
        .map(|p| PlatformPlanReport {
            platform: soci_format::platform::format(&p.platform),
            manifest: p.manifest.digest.clone(),
            layers: p
                .layers
                .iter()
                .map(|(d, action)| {
                    let (action, reason) = match action {
                        LayerPlan::Index(_) => ("index", None),
                        LayerPlan::TooSmall => (
                            "skip",
                            Some(format!("smaller than min-layer-size {min_layer_size}")),
                        ),
                        LayerPlan::Unsupported { compression } => (
                            "skip",
                            Some(format!("unsupported compression {compression:?}")),
                        ),
                        LayerPlan::Prefetch => ("skip", Some("prefetch artifact".into())),
                    };
                    LayerPlanReport {
                        digest: d.digest.clone(),
                        media_type: d.media_type.clone(),
                        size: d.size,
                        action,
                        reason,
                    }
                })
                .collect(),
        })
        .collect();
    PlanReport {
        source: source.to_string(),
        image: plan.target().clone(),
        platforms,
        skipped_layers: plan
            .skipped_layers()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_map_like_containerd() {
        use LayerCompression::*;
        let c = |m| compression_of_media_type(m).unwrap();
        assert_eq!(c("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Gzip));
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar"),
            Some(Uncompressed)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar"),
            Some(Uncompressed)
        );
        assert_eq!(c("application/vnd.oci.image.layer.v1.tar+zstd"), None);
        assert!(compression_of_media_type("application/vnd.oci.image.config.v1+json").is_err());
    }
}
