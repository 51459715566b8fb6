//! The whole conversion of one image: plan (pure, in `soci_format::convert`), build the zTOCs of
//! the planned layers in parallel (each in one streaming pass), assemble the new manifests and
//! image index (pure), then write the result so that nothing incomplete is ever visible.

use crate::image::ImageRef;
use crate::image::layout::{LayoutWriter, OciLayout};
use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use soci_format::convert::{
    BlobSource, ConvertOptions, IndexVersion, LayerToIndex, PlatformSelection, ZtocInfo,
    plan_conversion,
};
use soci_format::layer_indexer::{IndexerLimits, LayerCompression, LayerIndexer};
use soci_format::oci::{Descriptor, Index, Manifest};
use soci_format::ztoc::ZtocBytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Mutex;
use std::time::Instant;

/// Bytes read from a layer per push into the indexer.
pub const LAYER_READ_CHUNK: usize = 1 << 20;

const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// How a layer media type is read (containerd's `DiffCompression`, as upstream uses it);
/// `None` for layers upstream skips (zstd, wrapped types), an error for non-layer types.
pub fn compression_of_media_type(media_type: &str) -> Result<Option<LayerCompression>> {
    if !soci_format::oci::is_layer_type(media_type) {
        bail!("media type {media_type:?} is not a layer type");
    }
    Ok(match soci_format::oci::diff_compression(media_type) {
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
    /// Layers indexed at once.
    pub jobs: usize,
    pub limits: IndexerLimits,
    /// Upstream's opt-in `xattr` optimisation: mark layers without xattrs `disable-xattrs`.
    pub optimize_xattrs: bool,
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

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvertReport {
    pub image_index: Descriptor,
    pub soci_indexes: Vec<Descriptor>,
    pub layers: Vec<LayerReport>,
    pub skipped_layers: Vec<String>,
    pub already_converted: bool,
    pub seconds: f64,
}

/// The source layout's blobs, plus the image index made while resolving the root.
struct LayoutBlobs<'a> {
    layout: &'a OciLayout,
    extra: Option<&'a (Descriptor, Vec<u8>)>,
}

impl BlobSource for LayoutBlobs<'_> {
    fn get(&self, digest: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        if let Some((desc, bytes)) = self.extra
            && desc.digest == digest
        {
            return Ok(Some(bytes.clone()));
        }
        self.layout
            .read_small_blob(digest)
            .map_err(|e| format!("{e:#}"))
    }
}

pub fn convert(
    src: &ImageRef,
    dst: &ImageRef,
    settings: &ConvertSettings,
) -> Result<ConvertReport> {
    let started = Instant::now();
    let ImageRef::Layout {
        dir: src_dir,
        reference: src_ref,
    } = src;
    let ImageRef::Layout {
        dir: dst_dir,
        reference: dst_ref,
    } = dst;
    let source = OciLayout::open(src_dir)?;
    let root = source.resolve_root(src_ref.as_deref())?;
    let target = root.target.clone();

    let options = ConvertOptions {
        platforms: settings.platforms.clone(),
        min_layer_size: settings.min_layer_size,
        span_size: settings.span_size as i64,
        index_version: settings.index_version,
        host_platform: soci_format::platform::host_platform(),
    };
    let blobs = LayoutBlobs {
        layout: &source,
        extra: root.synthesized.as_ref(),
    };
    let plan = plan_conversion(&target, &blobs, &options)
        .map_err(|e| anyhow!("{}: {e}", src_dir.display()))?;
    let skipped_layers = plan
        .skipped_layers()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();

    let layers = plan.layers_to_index();
    let built = build_ztocs(&source, &layers, settings)?;
    let ztoc_infos: BTreeMap<String, ZtocInfo> = built
        .iter()
        .map(|(layer, (bytes, report))| {
            let info = ZtocInfo {
                digest: bytes.digest().to_string(),
                size: bytes.len() as i64,
                disable_xattrs: settings.optimize_xattrs && report.xattr_free,
            };
            (layer.clone(), info)
        })
        .collect();
    let output = plan
        .assemble(&ztoc_infos)
        .map_err(|e| anyhow!("{}: {e}", src_dir.display()))?;

    let writer = LayoutWriter::create(dst_dir)?;
    let mut new_blobs: HashMap<&str, &[u8]> = HashMap::new();
    for (desc, bytes) in output.blobs.iter().chain(root.synthesized.iter()) {
        new_blobs.insert(desc.digest.as_str(), bytes);
    }
    let ztoc_by_digest: HashMap<&str, &ZtocBytes> = built
        .values()
        .map(|(bytes, _)| (bytes.digest(), bytes))
        .collect();

    let mut roots = vec![output.image_index.clone()];
    if matches!(settings.index_version, IndexVersion::V1) {
        roots.extend(output.soci_indexes.iter().map(|(_, d)| d.clone()));
    }
    let mut seen = HashSet::new();
    for root in &roots {
        copy_graph(
            root,
            &source,
            &writer,
            &new_blobs,
            &ztoc_by_digest,
            &mut seen,
        )?;
    }

    let mut entries = Vec::new();
    for root in roots {
        let mut entry = root;
        if let Some(name) = dst_ref {
            entry
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert("org.opencontainers.image.ref.name".into(), name.clone());
        }
        entries.push(entry);
    }
    let layout_index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_OCI_INDEX.into(),
        manifests: Some(entries),
        ..Default::default()
    };
    writer.commit(&layout_index.to_go_json())?;

    let mut layer_reports: Vec<LayerReport> = layers
        .iter()
        .filter_map(|l| built.get(&l.descriptor.digest).map(|(_, r)| r.clone()))
        .collect();
    layer_reports.sort_by(|a, b| a.layer_digest.cmp(&b.layer_digest));
    Ok(ConvertReport {
        image_index: output.image_index,
        soci_indexes: output.soci_indexes.into_iter().map(|(_, d)| d).collect(),
        layers: layer_reports,
        skipped_layers,
        already_converted: output.already_converted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Builds every planned layer's zTOC, `settings.jobs` at a time. The first failure stops the
/// remaining work and is returned with the layer named.
fn build_ztocs(
    source: &OciLayout,
    layers: &[LayerToIndex],
    settings: &ConvertSettings,
) -> Result<HashMap<String, (ZtocBytes, LayerReport)>> {
    let queue = Mutex::new(layers.iter());
    let results = Mutex::new(HashMap::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = settings.jobs.clamp(1, layers.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if failure.lock().expect("lock").is_some() {
                        return;
                    }
                    let Some(layer) = queue.lock().expect("lock").next() else {
                        return;
                    };
                    match build_one(source, layer, settings) {
                        Ok(done) => {
                            eprintln!(
                                "layer {} -> ztoc {}",
                                layer.descriptor.digest,
                                done.0.digest()
                            );
                            results
                                .lock()
                                .expect("lock")
                                .insert(layer.descriptor.digest.clone(), done);
                        }
                        Err(e) => {
                            failure.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(results.into_inner().expect("lock"))
}

fn build_one(
    source: &OciLayout,
    layer: &LayerToIndex,
    settings: &ConvertSettings,
) -> Result<(ZtocBytes, LayerReport)> {
    let started = Instant::now();
    let desc = &layer.descriptor;
    let context = || format!("layer {} ({})", desc.digest, desc.media_type);
    let mut file = source.open_blob(&desc.digest).with_context(context)?;
    let mut indexer = LayerIndexer::new(layer.compression, settings.span_size, settings.limits)
        .with_context(context)?;
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; LAYER_READ_CHUNK];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(context)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > desc.size as u64 {
            bail!(
                "{}: blob is larger than its descriptor's size {}",
                context(),
                desc.size
            );
        }
        whole.update(&buf[..n]);
        indexer.push(&buf[..n]).with_context(context)?;
    }
    if read != desc.size as u64 {
        bail!(
            "{}: blob has {read} bytes, its descriptor says {}",
            context(),
            desc.size
        );
    }
    let actual = format!("sha256:{}", soci_format::ztoc::hex_lower(&whole.finalize()));
    if actual != desc.digest {
        bail!("{}: content has digest {actual}", context());
    }
    let built = indexer.finish().with_context(context)?;
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
    Ok((built.bytes, report))
}

/// Writes `desc` and everything it references that exists: new blobs from this conversion,
/// zTOCs, or blobs of the source layout.
fn copy_graph(
    desc: &Descriptor,
    source: &OciLayout,
    writer: &LayoutWriter,
    new_blobs: &HashMap<&str, &[u8]>,
    ztocs: &HashMap<&str, &ZtocBytes>,
    seen: &mut HashSet<String>,
) -> Result<()> {
    if !seen.insert(desc.digest.clone()) {
        return Ok(());
    }
    let json: Option<Vec<u8>> = if let Some(bytes) = new_blobs.get(desc.digest.as_str()) {
        writer.put_blob(&desc.digest, &[bytes])?;
        Some(bytes.to_vec())
    } else if let Some(ztoc) = ztocs.get(desc.digest.as_str()) {
        writer.put_blob(&desc.digest, &ztoc.parts())?;
        None
    } else if source.has_blob(&desc.digest) {
        writer.put_blob_from(source, &desc.digest)?;
        if is_manifest_or_index(&desc.media_type) {
            source.read_small_blob(&desc.digest)?
        } else {
            None
        }
    } else {
        // Content the source never had (a platform that was not pulled): left dangling, as upstream does.
        return Ok(());
    };
    let Some(json) = json else { return Ok(()) };
    if is_index(&desc.media_type) {
        let index = Index::from_json(&json).map_err(|e| anyhow!("index {}: {e}", desc.digest))?;
        for child in index.manifests.unwrap_or_default() {
            copy_graph(&child, source, writer, new_blobs, ztocs, seen)?;
        }
    } else if is_manifest(&desc.media_type) {
        let manifest =
            Manifest::from_json(&json).map_err(|e| anyhow!("manifest {}: {e}", desc.digest))?;
        copy_graph(&manifest.config, source, writer, new_blobs, ztocs, seen)?;
        for layer in manifest.layers.unwrap_or_default() {
            copy_graph(&layer, source, writer, new_blobs, ztocs, seen)?;
        }
    }
    Ok(())
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

fn is_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

fn is_manifest_or_index(media_type: &str) -> bool {
    is_index(media_type) || is_manifest(media_type)
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
