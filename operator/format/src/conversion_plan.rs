//! The conversion plan of upstream `soci convert` (soci-snapshotter v0.16.1
//! `IndexBuilder.Convert`, v2) and `soci create` (v1), split around the zTOC builds so that the
//! caller does all I/O:
//!
//! 1. [`plan_conversion`] reads the small JSON blobs (indexes, manifests, configs) through a
//!    [`BlobSource`], picks the platforms and their image manifests, and decides for every layer
//!    whether it gets a zTOC — exactly as upstream would, errors included;
//! 2. the caller builds the zTOC of each [`ConversionPlan::layers_to_index`] entry;
//! 3. [`ConversionPlan::assemble`] turns the zTOC digests and sizes into every new JSON blob:
//!    the `{}` config, the SOCI indexes, the annotated image manifests and the new image index.
//!
//! Every JSON document is written like Go's `json.Marshal` of the image-spec structs, so the
//! digests equal upstream's for the same zTOCs.
//!
//! Upstream quirks that are reproduced on purpose (each is named where it is implemented):
//! * a single-manifest image defaults to the platform of its config (normalised) and that
//!   platform is attached to the manifest's descriptor in the new index; an index defaults to
//!   the host platform (`DefaultSpec`, `linux/arm64/v8` on arm64 hosts, variant kept);
//! * "manifest should have proper platform": a platform-less child met before the first child
//!   that matches aborts the build;
//! * the layers come from containerd's `images.Manifest` walk while the SOCI v1 subject and the
//!   annotation target come from `GetImageManifestDescriptor` (they agree for real images);
//! * every entry of the index whose manifest is present is re-serialised as an OCI manifest with
//!   its config media type forced to the OCI config type, and the entry's annotations are
//!   *replaced* by the manifest's own (descriptor-only annotations are lost), even for platforms
//!   that were not converted and for attestation manifests; nested indexes become their first
//!   manifest; entries whose manifest is absent (or not a manifest/index) are left untouched;
//! * on re-conversion the old SOCI index entries are re-serialised as if they were images too
//!   and then replaced in place by the new ones (their re-serialised bytes are returned in
//!   [`ConversionOutput::orphan_blobs`], as upstream writes them to its output layout as well);
//! * `+gzip+encrypted` and other wrapped OCI media types follow containerd's `DiffCompression`
//!   (the last suffix in sorted order decides), so some are indexed as gzip.
//!
//! Not reproduced: upstream's zTOC reuse from its artifacts database (irrelevant for
//! `--standalone`, whose database starts empty; with `--force` equal anyway), prefetch
//! artifacts and the `xattr` optimisation (not offered). Walks stop after 10000 descriptors like
//! containerd's, and additionally at 256 nested indexes (no real image nests more than two).

use crate::oci::{self, Descriptor, Index, Manifest, Platform};
use crate::platform::{self, StrictMatcher};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

pub use crate::layer_indexer::LayerCompression;

/// Read access to the small JSON blobs of the source image.
pub trait BlobSource {
    /// The blob with this digest; `Ok(None)` when the source does not have it (containerd's
    /// `ErrNotFound`, which upstream tolerates in some places); `Err` for any other failure.
    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, String>;
}

impl BlobSource for HashMap<String, Vec<u8>> {
    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(HashMap::get(self, digest).cloned())
    }
}

impl BlobSource for BTreeMap<String, Vec<u8>> {
    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(BTreeMap::get(self, digest).cloned())
    }
}

/// Which platforms get a SOCI index (the CLI's `--platform` / `--all-platforms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// v2: the platform of a single-manifest image, else the host platform. v1: the host platform.
    Default,
    /// Every platform the image lists (containerd `images.Platforms`; `unknown` skipped).
    All,
    /// Platform specifiers parsed like `platforms.Parse` (`linux/arm64/v8`, `linux`, …).
    List(Vec<String>),
}

/// v2: `soci convert` (SOCI-enabled image index). v1: `soci create` (indexes bound by `subject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub platforms: PlatformSelection,
    /// Layers whose (compressed) size is below this get no zTOC.
    pub min_layer_size: i64,
    /// Only written into the `com.amazon.soci.span-size` annotations; the zTOCs are the caller's.
    pub span_size: i64,
    pub index_version: IndexVersion,
    /// What Go's `platforms.DefaultSpec()` returns on the converting host
    /// (see [`platform::host_platform`], [`platform::default_spec`]).
    pub host_platform: Platform,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            platforms: PlatformSelection::Default,
            min_layer_size: 10 << 20,
            span_size: 1 << 22,
            index_version: IndexVersion::V2,
            host_platform: platform::host_platform(),
        }
    }
}

/// The zTOC built for one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZtocInfo {
    /// `sha256:…` of the zTOC bytes.
    pub digest: String,
    pub size: i64,
    /// Add `com.amazon.soci.disable-xattrs: true` (upstream's opt-in `xattr` optimisation, for a
    /// layer with no xattrs and no opaque whiteout).
    pub disable_xattrs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerToIndex {
    pub descriptor: Descriptor,
    pub compression: LayerCompression,
}

/// What happens to one layer of a platform's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerPlan {
    /// A zTOC is built (gzip, or a plain tar: OCI `.tar`, Docker `diff.tar`).
    Index(LayerCompression),
    /// Smaller than the minimum layer size.
    TooSmall,
    /// Compressed in a format upstream cannot index (`zstd`, or `""` for wrapped/unknown).
    Unsupported { compression: String },
    /// A SOCI prefetch artifact listed as a layer: ignored.
    Prefetch,
}

/// One platform to convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformPlan {
    /// As requested (not normalised); this value goes into the SOCI index descriptor.
    pub platform: Platform,
    /// The platform's image manifest descriptor as found in the image (the v1 subject; the
    /// entry that gets the `com.amazon.soci.index-digest` annotation in v2).
    pub manifest: Descriptor,
    /// The manifest's layers in order, with what happens to each.
    pub layers: Vec<(Descriptor, LayerPlan)>,
}

impl PlatformPlan {
    /// Whether a SOCI index is built (at least one layer gets a zTOC); v2 drops platforms
    /// without one, v1 fails on them.
    pub fn builds_index(&self) -> bool {
        self.layers
            .iter()
            .any(|(_, p)| matches!(p, LayerPlan::Index(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    TooSmall { min_layer_size: i64 },
    UnsupportedCompression(String),
    PrefetchArtifact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLayer {
    pub platform: Platform,
    pub layer: Descriptor,
    pub reason: SkipReason,
}

impl fmt::Display for SkippedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: layer {} ({}) ",
            platform::format(&self.platform),
            self.layer.digest,
            self.layer.media_type
        )?;
        match &self.reason {
            SkipReason::TooSmall { min_layer_size } => {
                write!(
                    f,
                    "size {} is less than min-layer-size {min_layer_size}",
                    self.layer.size
                )
            }
            SkipReason::UnsupportedCompression(c) => {
                write!(
                    f,
                    "is compressed in an unsupported format. expect: [tar, gzip, unknown] but got {c:?}"
                )
            }
            SkipReason::PrefetchArtifact => write!(f, "is a prefetch artifact"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("reading blob {digest}: {message}")]
    Source { digest: String, message: String },
    /// containerd `ErrNotFound` class (missing content, no manifest).
    #[error("{0}: not found")]
    NotFound(String),
    /// containerd `ErrNotFound` class: a descriptor that is neither a manifest nor an index
    /// where one was expected.
    #[error("unexpected media type {media_type} for {digest}: not found")]
    UnexpectedMediaType { media_type: String, digest: String },
    #[error("{digest}: {message}")]
    InvalidJson { digest: String, message: String },
    /// Blob shape contradicting its media type, schema 1, …
    #[error("{0}")]
    InvalidContent(String),
    #[error("image does not support any platforms")]
    NoPlatforms,
    #[error("could not parse platform {spec}: {message}")]
    InvalidPlatform { spec: String, message: String },
    #[error("image manifest for {platform}: {cause}")]
    ImageManifestNotFound { platform: String, cause: String },
    /// Upstream quirk: a platform-less child met before the matching one in an index.
    #[error("manifest should have proper platform")]
    ManifestWithoutPlatform,
    #[error(
        "errors encountered while building soci layers; layer {digest} ({media_type}): not a layer mediaType"
    )]
    NotLayerType { digest: String, media_type: String },
    #[error(
        "errors encountered while building soci layers; could not determine layer compression: unrecognised mediatype {media_type} (layer {digest})"
    )]
    UnknownLayerCompression { digest: String, media_type: String },
    #[error("no ztocs created, all layers either skipped or produced errors")]
    EmptyIndex,
    #[error("no zTOC was given for layer {0}")]
    MissingZtoc(String),
    #[error("too many descriptors (limit 10000): resource exhausted")]
    TooManyDescriptors,
    #[error("indexes nested too deeply")]
    NestingTooDeep,
}

impl ConvertError {
    /// Whether containerd's `errors.Is(err, errdefs.ErrNotFound)` would hold.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ConvertError::NotFound(_)
                | ConvertError::UnexpectedMediaType { .. }
                | ConvertError::ImageManifestNotFound { .. }
        )
    }
}

const MAX_REFERENCES: usize = 10_000;
const MAX_NESTED_INDEXES: usize = 256;

/// The source with each blob read once.
struct Blobs<'a> {
    source: &'a dyn BlobSource,
    cache: RefCell<HashMap<String, Option<Rc<[u8]>>>>,
}

impl Blobs<'_> {
    /// containerd `content.ReadBlob`.
    fn read(&self, desc: &Descriptor) -> Result<Rc<[u8]>, ConvertError> {
        let cached = self.cache.borrow().get(&desc.digest).cloned();
        let blob = match cached {
            Some(b) => b,
            None => {
                let b = self
                    .source
                    .get(&desc.digest)
                    .map_err(|message| ConvertError::Source {
                        digest: desc.digest.clone(),
                        message,
                    })?
                    .map(Rc::from);
                self.cache
                    .borrow_mut()
                    .insert(desc.digest.clone(), b.clone());
                b
            }
        };
        blob.ok_or_else(|| ConvertError::NotFound(format!("content digest {}", desc.digest)))
    }

    fn read_manifest(&self, desc: &Descriptor, context: &str) -> Result<Manifest, ConvertError> {
        let bytes = self.read(desc)?;
        oci::validate_media_type(&bytes, &desc.media_type).map_err(|e| {
            ConvertError::InvalidContent(format!("{context}: invalid desc {}: {e}", desc.digest))
        })?;
        Manifest::from_json(&bytes).map_err(|e| json_error(desc, e))
    }

    fn read_index(&self, desc: &Descriptor, context: &str) -> Result<Index, ConvertError> {
        let bytes = self.read(desc)?;
        oci::validate_media_type(&bytes, &desc.media_type).map_err(|e| {
            ConvertError::InvalidContent(format!("{context}: invalid desc {}: {e}", desc.digest))
        })?;
        Index::from_json(&bytes).map_err(|e| json_error(desc, e))
    }

    /// containerd `images.ConfigPlatform`: the config's platform fields, normalised.
    fn config_platform(&self, config: &Descriptor) -> Result<Platform, ConvertError> {
        let bytes = self.read(config)?;
        let p = Platform::from_json(&bytes).map_err(|e| json_error(config, e))?;
        Ok(platform::normalize(&p))
    }

    /// containerd `images.Children`.
    fn children(&self, desc: &Descriptor) -> Result<Vec<Descriptor>, ConvertError> {
        if oci::is_manifest_type(&desc.media_type) {
            let m = self.read_manifest(desc, "children")?;
            let mut out = vec![m.config];
            out.extend(m.layers.unwrap_or_default());
            Ok(out)
        } else if oci::is_index_type(&desc.media_type) {
            Ok(self
                .read_index(desc, "children")?
                .manifests
                .unwrap_or_default())
        } else {
            Ok(Vec::new())
        }
    }

    /// containerd `images.Platforms`: walks the image; a descriptor carrying a platform
    /// contributes it as written (and is not descended into) unless its OS or architecture is
    /// `unknown`; an image config contributes its normalised platform.
    fn platforms(&self, target: &Descriptor) -> Result<Vec<Platform>, ConvertError> {
        let mut out = Vec::new();
        let mut refs = 0;
        self.walk_platforms(std::slice::from_ref(target), &mut out, &mut refs, 0)?;
        Ok(out)
    }

    fn walk_platforms(
        &self,
        descs: &[Descriptor],
        out: &mut Vec<Platform>,
        refs: &mut usize,
        depth: usize,
    ) -> Result<(), ConvertError> {
        count_references(refs, descs.len(), depth)?;
        for desc in descs {
            if let Some(p) = &desc.platform {
                if p.os != "unknown" && p.architecture != "unknown" {
                    out.push(p.clone());
                }
                continue;
            }
            if oci::is_config_type(&desc.media_type) {
                out.push(self.config_platform(desc)?);
            }
            let children = self.children(desc)?;
            if !children.is_empty() {
                self.walk_platforms(&children, out, refs, depth + 1)?;
            }
        }
        Ok(())
    }

    /// containerd `images.Manifest(image, platform)`: the first manifest of a walk that, below
    /// an index, keeps only children with a matching (or no) platform, ordered by the matcher,
    /// and follows only the first; without a platform every child is followed. The whole walk
    /// runs (a later error still fails it).
    fn manifest(
        &self,
        image: &Descriptor,
        matcher: Option<&StrictMatcher>,
    ) -> Result<Manifest, ConvertError> {
        let mut found = Vec::new();
        let mut was_index = false;
        let mut refs = 0;
        self.walk_manifest(
            &image.digest,
            vec![image.clone()],
            matcher,
            &mut found,
            &mut was_index,
            &mut refs,
            0,
        )?;
        found.into_iter().next().ok_or_else(|| {
            ConvertError::NotFound(if was_index {
                format!("no match for platform in manifest {}", image.digest)
            } else {
                format!("manifest {}", image.digest)
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_manifest(
        &self,
        image_digest: &str,
        descs: Vec<Descriptor>,
        matcher: Option<&StrictMatcher>,
        found: &mut Vec<Manifest>,
        was_index: &mut bool,
        refs: &mut usize,
        depth: usize,
    ) -> Result<(), ConvertError> {
        count_references(refs, descs.len(), depth)?;
        for desc in descs {
            if oci::is_manifest_type(&desc.media_type) {
                let manifest = self.read_manifest(&desc, "manifest")?;
                if let (true, Some(matcher)) = (desc.digest != image_digest, matcher) {
                    let platform = match &desc.platform {
                        Some(p) => p.clone(),
                        None => self.config_platform(&manifest.config)?,
                    };
                    if !matcher.matches(&platform) {
                        continue;
                    }
                }
                found.push(manifest);
            } else if oci::is_index_type(&desc.media_type) {
                let index = self.read_index(&desc, "manifest")?;
                let mut children = index.manifests.unwrap_or_default();
                if let Some(matcher) = matcher {
                    children.retain(|d| d.platform.as_ref().is_none_or(|p| matcher.matches(p)));
                    // sort.SliceStable: platform-less children last, the rest by the matcher.
                    children.sort_by(|a, b| match (&a.platform, &b.platform) {
                        (None, None) => std::cmp::Ordering::Equal,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (Some(pa), Some(pb)) => {
                            if matcher.less(pa, pb) {
                                std::cmp::Ordering::Less
                            } else if matcher.less(pb, pa) {
                                std::cmp::Ordering::Greater
                            } else {
                                std::cmp::Ordering::Equal
                            }
                        }
                    });
                    *was_index = true;
                    children.truncate(1);
                }
                if !children.is_empty() {
                    self.walk_manifest(
                        image_digest,
                        children,
                        matcher,
                        found,
                        was_index,
                        refs,
                        depth + 1,
                    )?;
                }
            } else {
                return Err(ConvertError::UnexpectedMediaType {
                    media_type: desc.media_type.clone(),
                    digest: desc.digest.clone(),
                });
            }
        }
        Ok(())
    }

    /// soci `GetImageManifestDescriptor`: for an index, the first child that matches — failing
    /// on a platform-less child met before it (quirk "manifest should have proper platform");
    /// for a manifest, the target itself unless it carries a platform that does not match.
    /// `Ok(None)` for other media types (upstream then fails in `images.Manifest`).
    fn image_manifest_descriptor(
        &self,
        target: &Descriptor,
        matcher: &StrictMatcher,
    ) -> Result<Option<Descriptor>, ConvertError> {
        if oci::is_index_type(&target.media_type) {
            for child in self.children(target)? {
                let Some(p) = &child.platform else {
                    return Err(ConvertError::ManifestWithoutPlatform);
                };
                if matcher.matches(p) {
                    return Ok(Some(child));
                }
            }
            Err(ConvertError::NotFound("image manifest".into()))
        } else if oci::is_manifest_type(&target.media_type) {
            if target
                .platform
                .as_ref()
                .is_some_and(|p| !matcher.matches(p))
            {
                return Err(ConvertError::NotFound("image manifest".into()));
            }
            Ok(Some(target.clone()))
        } else {
            Ok(None)
        }
    }
}

fn count_references(refs: &mut usize, n: usize, depth: usize) -> Result<(), ConvertError> {
    if *refs + n > MAX_REFERENCES {
        return Err(ConvertError::TooManyDescriptors);
    }
    if depth > MAX_NESTED_INDEXES {
        return Err(ConvertError::NestingTooDeep);
    }
    *refs += n;
    Ok(())
}

fn json_error(desc: &Descriptor, e: oci::OciJsonError) -> ConvertError {
    ConvertError::InvalidJson {
        digest: desc.digest.clone(),
        message: e.to_string(),
    }
}

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

/// What a conversion will do, computed before any zTOC exists.
#[derive(Debug, Clone)]
pub struct ConversionPlan {
    version: IndexVersion,
    span_size: i64,
    /// The image as converted (v2: a single manifest carries its platform here).
    target: Descriptor,
    platforms: Vec<PlatformPlan>,
    /// v2: the image index that gets the SOCI entries (`newOciIndex`).
    index: Index,
    /// v2: per entry of `index.manifests`, the manifest to re-serialise (`None`: left untouched).
    entries: Vec<Option<Manifest>>,
    /// Layers without a zTOC, of every platform planned (also v2 platforms dropped for having none).
    skipped: Vec<SkippedLayer>,
}

/// Every new blob and the new image index.
#[derive(Debug, Clone)]
pub struct ConversionOutput {
    /// New JSON blobs in a safe write order — the `{}` config, the SOCI indexes, the annotated
    /// image manifests referenced by the new index, and (v2) the image index last — each once.
    /// Some may already exist in the source (a manifest that was already OCI and unchanged).
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    /// v2: the new image index (`mediaType` OCI index, digest, size). v1: the original target.
    pub image_index: Descriptor,
    /// Per converted platform: v2, the SOCI index descriptor as it appears in the new image
    /// index (annotations, platform, artifact type); v1, `{mediaType, artifactType, digest, size}`.
    pub soci_indexes: Vec<(Platform, Descriptor)>,
    /// v2: the source already was this exact result (new image index digest == target digest),
    /// e.g. a re-conversion of an image converted with the same zTOCs. Always false for v1.
    pub already_converted: bool,
    /// Blobs upstream also writes but nothing references: re-serialisations of old SOCI index
    /// entries that were then replaced. Needed only to reproduce upstream's output directory.
    pub orphan_blobs: Vec<(Descriptor, Vec<u8>)>,
}

fn parse_platforms(specs: &[String], host: &Platform) -> Result<Vec<Platform>, ConvertError> {
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

/// Plans the conversion of the image `target` (an image index, Docker manifest list or image
/// manifest descriptor) exactly as upstream `soci convert --standalone` (v2) or `soci create`
/// (v1) would, reading only small JSON blobs from `source`.
pub fn plan_conversion(
    target: &Descriptor,
    source: &dyn BlobSource,
    opts: &ConvertOptions,
) -> Result<ConversionPlan, ConvertError> {
    let blobs = Blobs {
        source,
        cache: RefCell::new(HashMap::new()),
    };
    // The CLI resolves the requested platforms before calling the builder (`GetPlatforms`).
    let requested = match &opts.platforms {
        PlatformSelection::Default => Vec::new(),
        PlatformSelection::All => blobs.platforms(target)?,
        PlatformSelection::List(specs) => parse_platforms(specs, &opts.host_platform)?,
    };
    match opts.index_version {
        IndexVersion::V1 => plan_v1(target, &blobs, opts, requested),
        IndexVersion::V2 => plan_v2(target, &blobs, opts, requested),
    }
}

/// `soci create`: one v1 index per platform (default: the host's — even for a single-manifest
/// image), platforms not de-duplicated, a platform without any zTOC is an error.
fn plan_v1(
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
fn plan_v2(
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

fn push_unique(
    out: &mut Vec<(Descriptor, Vec<u8>)>,
    seen: &mut BTreeSet<String>,
    desc: Descriptor,
    bytes: Vec<u8>,
) {
    if seen.insert(desc.digest.clone()) {
        out.push((desc, bytes));
    }
}

impl ConversionPlan {
    pub fn index_version(&self) -> IndexVersion {
        self.version
    }

    /// The image being converted (v2: a single manifest with its platform attached).
    pub fn target(&self) -> &Descriptor {
        &self.target
    }

    /// The platforms that get a SOCI index, in order (v2: platforms without any zTOC are not
    /// listed; their layers still appear in [`Self::skipped_layers`]).
    pub fn platforms(&self) -> &[PlatformPlan] {
        &self.platforms
    }

    /// Layers to build zTOCs for, deduplicated by digest, in first-seen order. (Should one layer
    /// digest appear under two media types of different compression, the first one wins.)
    pub fn layers_to_index(&self) -> Vec<LayerToIndex> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for plan in &self.platforms {
            for (layer, decision) in &plan.layers {
                if let LayerPlan::Index(compression) = decision
                    && seen.insert(layer.digest.clone())
                {
                    out.push(LayerToIndex {
                        descriptor: layer.clone(),
                        compression: *compression,
                    });
                }
            }
        }
        out
    }

    /// Layers that get no zTOC and why, per platform.
    pub fn skipped_layers(&self) -> Vec<SkippedLayer> {
        self.skipped.clone()
    }

    /// Given the zTOC built for each layer (by layer digest), produces every new JSON blob and
    /// the new image index.
    pub fn assemble(
        &self,
        ztocs: &BTreeMap<String, ZtocInfo>,
    ) -> Result<ConversionOutput, ConvertError> {
        let artifact_type = match self.version {
            IndexVersion::V1 => oci::SOCI_INDEX_ARTIFACT_TYPE_V1,
            IndexVersion::V2 => oci::SOCI_INDEX_ARTIFACT_TYPE_V2,
        };
        let mut blobs = Vec::new();
        let mut seen = BTreeSet::new();
        push_unique(
            &mut blobs,
            &mut seen,
            Descriptor::new(
                artifact_type,
                oci::SOCI_EMPTY_CONFIG_DIGEST,
                oci::SOCI_EMPTY_CONFIG_SIZE,
            ),
            oci::SOCI_EMPTY_CONFIG.to_vec(),
        );

        // One SOCI index per platform (soci `build` + `NewIndex` + `MarshalIndex`).
        let mut indexes: Vec<Descriptor> = Vec::new();
        for plan in &self.platforms {
            let mut layers = Vec::new();
            for (layer, decision) in &plan.layers {
                if !matches!(decision, LayerPlan::Index(_)) {
                    continue;
                }
                let ztoc = ztocs
                    .get(&layer.digest)
                    .ok_or_else(|| ConvertError::MissingZtoc(layer.digest.clone()))?;
                let mut d = Descriptor::new(oci::SOCI_ZTOC_MEDIA_TYPE, &ztoc.digest, ztoc.size);
                d.annotations = Some(BTreeMap::from([
                    (
                        oci::ANNOTATION_IMAGE_LAYER_MEDIA_TYPE.to_string(),
                        layer.media_type.clone(),
                    ),
                    (
                        oci::ANNOTATION_IMAGE_LAYER_DIGEST.to_string(),
                        layer.digest.clone(),
                    ),
                    (
                        oci::ANNOTATION_SPAN_SIZE.to_string(),
                        self.span_size.to_string(),
                    ),
                ]));
                if ztoc.disable_xattrs
                    && let Some(a) = d.annotations.as_mut()
                {
                    a.insert(
                        oci::ANNOTATION_DISABLE_XATTRS.to_string(),
                        "true".to_string(),
                    );
                }
                layers.push(d);
            }
            let subject = match self.version {
                IndexVersion::V1 => Some(Descriptor::new(
                    &plan.manifest.media_type,
                    &plan.manifest.digest,
                    plan.manifest.size,
                )),
                IndexVersion::V2 => None,
            };
            let document = Manifest {
                schema_version: 2,
                media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
                artifact_type: String::new(),
                config: Descriptor::new(
                    artifact_type,
                    oci::SOCI_EMPTY_CONFIG_DIGEST,
                    oci::SOCI_EMPTY_CONFIG_SIZE,
                ),
                layers: Some(layers),
                subject,
                annotations: Some(BTreeMap::from([(
                    oci::ANNOTATION_BUILD_TOOL_IDENTIFIER.to_string(),
                    oci::SOCI_BUILD_TOOL_IDENTIFIER.to_string(),
                )])),
            };
            let bytes = document.to_go_json();
            let mut desc = Descriptor::new(
                oci::MEDIA_TYPE_OCI_MANIFEST,
                &oci::sha256_digest(&bytes),
                bytes.len() as i64,
            );
            desc.artifact_type = artifact_type.into();
            push_unique(&mut blobs, &mut seen, desc.clone(), bytes);
            indexes.push(desc);
        }

        if self.version == IndexVersion::V1 {
            return Ok(ConversionOutput {
                blobs,
                image_index: self.target.clone(),
                soci_indexes: self
                    .platforms
                    .iter()
                    .map(|p| p.platform.clone())
                    .zip(indexes)
                    .collect(),
                already_converted: false,
                orphan_blobs: Vec::new(),
            });
        }

        // annotateImages: every entry whose manifest is present is re-serialised as OCI.
        let mut entries = self.index.manifests.clone().unwrap_or_default();
        let mut rewritten: Vec<(Descriptor, Vec<u8>)> = Vec::new();
        for (entry, manifest) in entries.iter_mut().zip(&self.entries) {
            let Some(manifest) = manifest else { continue };
            let idx = self
                .platforms
                .iter()
                .position(|p| p.manifest.digest == entry.digest);
            let mut manifest = manifest.clone();
            manifest.media_type = oci::MEDIA_TYPE_OCI_MANIFEST.into();
            manifest.config.media_type = oci::MEDIA_TYPE_OCI_CONFIG.into();
            if let Some(i) = idx {
                manifest
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        oci::ANNOTATION_SOCI_INDEX_DIGEST.into(),
                        indexes[i].digest.clone(),
                    );
            }
            let bytes = manifest.to_go_json();
            entry.digest = oci::sha256_digest(&bytes);
            entry.size = bytes.len() as i64;
            // Quirk: the entry's annotations are replaced by the manifest's.
            entry.annotations = manifest.annotations.clone();
            entry.media_type = oci::MEDIA_TYPE_OCI_MANIFEST.into();
            if let Some(i) = idx {
                indexes[i]
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        oci::ANNOTATION_IMAGE_MANIFEST_DIGEST.into(),
                        entry.digest.clone(),
                    );
            }
            rewritten.push((
                Descriptor::new(oci::MEDIA_TYPE_OCI_MANIFEST, &entry.digest, entry.size),
                bytes,
            ));
        }

        // addSociIndexes: replace an existing v2 entry of the same platform, else append.
        let mut soci_indexes = Vec::new();
        for (plan, index_desc) in self.platforms.iter().zip(&indexes) {
            let mut desc = index_desc.clone();
            desc.platform = Some(plan.platform.clone());
            let matcher = platform::only_strict(&platform::normalize(&plan.platform));
            let existing = entries.iter().position(|d| {
                d.artifact_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V2
                    && d.platform.as_ref().is_some_and(|p| matcher.matches(p))
            });
            match existing {
                Some(i) => entries[i] = desc.clone(),
                None => entries.push(desc.clone()),
            }
            soci_indexes.push((plan.platform.clone(), desc));
        }

        let referenced: BTreeSet<&str> = entries.iter().map(|d| d.digest.as_str()).collect();
        let mut orphan_blobs = Vec::new();
        let mut orphan_seen = BTreeSet::new();
        for (desc, bytes) in rewritten {
            if referenced.contains(desc.digest.as_str()) {
                push_unique(&mut blobs, &mut seen, desc, bytes);
            } else if !seen.contains(&desc.digest) {
                push_unique(&mut orphan_blobs, &mut orphan_seen, desc, bytes);
            }
        }

        let mut index = self.index.clone();
        index.manifests = Some(entries);
        let bytes = index.to_go_json();
        let image_index = Descriptor::new(
            oci::MEDIA_TYPE_OCI_INDEX,
            &oci::sha256_digest(&bytes),
            bytes.len() as i64,
        );
        let already_converted = image_index.digest == self.target.digest;
        push_unique(&mut blobs, &mut seen, image_index.clone(), bytes);
        Ok(ConversionOutput {
            blobs,
            image_index,
            soci_indexes,
            already_converted,
            orphan_blobs,
        })
    }
}

/// The image `soci convert --standalone` converts in an OCI layout, from its `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRoot {
    pub target: Descriptor,
    /// A manifest list upstream writes into the layout when it has to narrow the list to the
    /// entries whose blobs exist (it ends up in upstream's output layout, unreferenced by the
    /// converted image unless it is the target).
    pub synthesized: Option<(Descriptor, Vec<u8>)>,
}

/// Upstream `resolveLayoutRoot` (cmd/soci/commands/internal/standalone.go), the target of a
/// standalone conversion:
/// * one `index.json` entry that is not an index → that entry;
/// * otherwise the list (the one index entry's blob, or `index.json` itself when it has several
///   entries) narrowed to the entries whose blobs exist: none → error; exactly one and it is a
///   manifest → that manifest (a multi-platform image with one platform present is converted
///   as a single-platform image); all of them and `index.json` had one entry → that entry;
///   else a new list (`json.Marshal` of the list with only the present entries, media type of
///   the original) — `synthesized`.
pub fn standalone_layout_root(
    index_json: &[u8],
    source: &dyn BlobSource,
) -> Result<LayoutRoot, ConvertError> {
    let layout = Descriptor::new(
        oci::MEDIA_TYPE_OCI_INDEX,
        "index.json",
        index_json.len() as i64,
    );
    let top = Index::from_json(index_json).map_err(|e| json_error(&layout, e))?;
    let top_entries = top.manifests.clone().unwrap_or_default();
    let Some(first) = top_entries.first() else {
        return Err(ConvertError::InvalidContent(
            "index.json contains no manifests".into(),
        ));
    };
    if top_entries.len() == 1 && !oci::is_index_type(&first.media_type) {
        return Ok(LayoutRoot {
            target: first.clone(),
            synthesized: None,
        });
    }
    let blobs = Blobs {
        source,
        cache: RefCell::new(HashMap::new()),
    };
    let (mut list, mut media_type) = (top.clone(), top.media_type.clone());
    if top_entries.len() == 1 {
        media_type = first.media_type.clone();
        let bytes = blobs.read(first)?;
        list = Index::from_json(&bytes).map_err(|e| json_error(first, e))?;
    }
    if media_type.is_empty() {
        media_type = oci::MEDIA_TYPE_OCI_INDEX.into();
    }
    let entries = list.manifests.clone().unwrap_or_default();
    let mut available = Vec::new();
    for d in &entries {
        match blobs.read(d) {
            Ok(_) => available.push(d.clone()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if available.is_empty() {
        return Err(ConvertError::InvalidContent(
            "manifest list contains no entries with available blobs".into(),
        ));
    }
    if available.len() == 1 && oci::is_manifest_type(&available[0].media_type) {
        return Ok(LayoutRoot {
            target: available.swap_remove(0),
            synthesized: None,
        });
    }
    if top_entries.len() == 1 && available.len() == entries.len() {
        return Ok(LayoutRoot {
            target: first.clone(),
            synthesized: None,
        });
    }
    list.media_type.clone_from(&media_type);
    list.manifests = Some(available);
    let bytes = list.to_go_json();
    let target = Descriptor::new(&media_type, &oci::sha256_digest(&bytes), bytes.len() as i64);
    Ok(LayoutRoot {
        target: target.clone(),
        synthesized: Some((target, bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::*;

    const MIB: i64 = 1 << 20;

    /// An in-memory registry of JSON blobs.
    #[derive(Default)]
    struct Fake {
        blobs: HashMap<String, Vec<u8>>,
    }

    impl Fake {
        fn put(&mut self, bytes: Vec<u8>) -> (String, i64) {
            let digest = sha256_digest(&bytes);
            let size = bytes.len() as i64;
            self.blobs.insert(digest.clone(), bytes);
            (digest, size)
        }

        fn config(&mut self, media_type: &str, os: &str, arch: &str, variant: &str) -> Descriptor {
            let mut json = format!(r#"{{"architecture":"{arch}","os":"{os}""#);
            if !variant.is_empty() {
                json.push_str(&format!(r#","variant":"{variant}""#));
            }
            json.push_str(
                r#","rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":["PATH=/bin"]}}"#,
            );
            let (d, s) = self.put(json.into_bytes());
            Descriptor::new(media_type, &d, s)
        }

        /// A manifest as a registry would serve it (pretty-printed, not Go's form).
        fn manifest(
            &mut self,
            media_type: &str,
            config: &Descriptor,
            layers: &[Descriptor],
            annotations: &str,
        ) -> Descriptor {
            let layers: Vec<String> = layers
                .iter()
                .map(|l| {
                    format!(
                        r#"{{ "mediaType": "{}", "size": {}, "digest": "{}" }}"#,
                        l.media_type, l.size, l.digest
                    )
                })
                .collect();
            let json = format!(
                "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{media_type}\",\n  \"config\": {{ \"mediaType\": \"{}\", \"size\": {}, \"digest\": \"{}\" }},\n  \"layers\": [{}]{annotations}\n}}\n",
                config.media_type,
                config.size,
                config.digest,
                layers.join(", ")
            );
            let (d, s) = self.put(json.into_bytes());
            Descriptor::new(media_type, &d, s)
        }

        fn image(
            &mut self,
            media_type: &str,
            os: &str,
            arch: &str,
            variant: &str,
            layers: &[Descriptor],
        ) -> Descriptor {
            let config_type = if media_type == MEDIA_TYPE_DOCKER_MANIFEST {
                MEDIA_TYPE_DOCKER_CONFIG
            } else {
                MEDIA_TYPE_OCI_CONFIG
            };
            let config = self.config(config_type, os, arch, variant);
            self.manifest(media_type, &config, layers, "")
        }

        fn index(&mut self, media_type: &str, entries: &[Descriptor]) -> Descriptor {
            let index = Index {
                schema_version: 2,
                media_type: media_type.into(),
                manifests: Some(entries.to_vec()),
                ..Default::default()
            };
            let mut json = index.to_go_json();
            json.push(b'\n');
            let (d, s) = self.put(json);
            Descriptor::new(media_type, &d, s)
        }
    }

    fn layer(media_type: &str, size: i64, seed: &str) -> Descriptor {
        Descriptor::new(media_type, &sha256_digest(seed.as_bytes()), size)
    }

    fn with_platform(mut d: Descriptor, os: &str, arch: &str, variant: &str) -> Descriptor {
        d.platform = Some(Platform::new(os, arch, variant));
        d
    }

    fn opts(platforms: PlatformSelection) -> ConvertOptions {
        ConvertOptions {
            platforms,
            min_layer_size: 10 * MIB,
            span_size: 4 * MIB,
            index_version: IndexVersion::V2,
            host_platform: platform::default_spec("linux", "amd64"),
        }
    }

    /// Fake zTOCs: digest and size derived from the layer digest.
    fn fake_ztocs(plan: &ConversionPlan) -> BTreeMap<String, ZtocInfo> {
        plan.layers_to_index()
            .into_iter()
            .map(|l| {
                let d = l.descriptor.digest;
                let info = ZtocInfo {
                    digest: sha256_digest(format!("ztoc of {d}").as_bytes()),
                    size: 1000 + d.len() as i64,
                    disable_xattrs: false,
                };
                (d, info)
            })
            .collect()
    }

    fn convert(
        fake: &Fake,
        target: &Descriptor,
        o: &ConvertOptions,
    ) -> Result<(ConversionPlan, ConversionOutput), ConvertError> {
        let plan = plan_conversion(target, &fake.blobs, o)?;
        let out = plan.assemble(&fake_ztocs(&plan))?;
        Ok((plan, out))
    }

    fn blob<'a>(out: &'a ConversionOutput, digest: &str) -> &'a [u8] {
        &out.blobs
            .iter()
            .find(|(d, _)| d.digest == digest)
            .unwrap_or_else(|| panic!("no blob {digest}"))
            .1
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn new_index(out: &ConversionOutput) -> Index {
        Index::from_json(blob(out, &out.image_index.digest)).unwrap()
    }

    /// Checks the output is self-consistent: blob digests, the config blob, ordering.
    fn check_blobs(out: &ConversionOutput) {
        for (d, bytes) in out.blobs.iter().chain(&out.orphan_blobs) {
            assert_eq!(d.digest, sha256_digest(bytes));
            assert_eq!(d.size, bytes.len() as i64);
        }
        assert_eq!(out.blobs[0].1, b"{}");
        if out.image_index.media_type == MEDIA_TYPE_OCI_INDEX
            && out
                .blobs
                .iter()
                .any(|(d, _)| d.digest == out.image_index.digest)
        {
            assert_eq!(out.blobs.last().unwrap().0.digest, out.image_index.digest);
        }
    }

    #[test]
    fn single_oci_manifest() {
        let mut fake = Fake::default();
        let big = layer(MEDIA_TYPE_OCI_LAYER_GZIP, 20 * MIB, "big");
        let small = layer(MEDIA_TYPE_OCI_LAYER_GZIP, MIB, "small");
        let tar = layer(MEDIA_TYPE_OCI_LAYER, 10 * MIB, "tar");
        let target = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "arm64",
            "v8",
            &[big.clone(), small.clone(), tar.clone()],
        );
        // The host is amd64; the image's own platform is the default.
        let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        check_blobs(&out);
        assert_eq!(
            plan.layers_to_index(),
            vec![
                LayerToIndex {
                    descriptor: big.clone(),
                    compression: LayerCompression::Gzip
                },
                LayerToIndex {
                    descriptor: tar.clone(),
                    compression: LayerCompression::Uncompressed
                },
            ]
        );
        let skipped = plan.skipped_layers();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].layer, small);
        assert_eq!(
            skipped[0].reason,
            SkipReason::TooSmall {
                min_layer_size: 10 * MIB
            }
        );
        assert!(
            skipped[0]
                .to_string()
                .contains("size 1048576 is less than min-layer-size 10485760"),
            "{}",
            skipped[0]
        );

        let ztocs = fake_ztocs(&plan);
        let (soci_platform, soci_desc) = &out.soci_indexes[0];
        assert_eq!(*soci_platform, Platform::new("linux", "arm64", ""));
        let soci = blob(&out, &soci_desc.digest);
        let expected_soci = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""config":{{"mediaType":"application/vnd.amazon.soci.index.v2+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"#,
                r#""layers":[{{"mediaType":"application/octet-stream","digest":"{}","size":{},"annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","com.amazon.soci.span-size":"4194304"}}}},"#,
                r#"{{"mediaType":"application/octet-stream","digest":"{}","size":{},"annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar","com.amazon.soci.span-size":"4194304"}}}}],"#,
                r#""annotations":{{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}}}"#
            ),
            ztocs[&big.digest].digest,
            ztocs[&big.digest].size,
            big.digest,
            ztocs[&tar.digest].digest,
            ztocs[&tar.digest].size,
            tar.digest
        );
        assert_eq!(text(soci), expected_soci);

        let index = new_index(&out);
        let entries = index.manifests.clone().unwrap();
        assert_eq!(entries.len(), 2);
        let image = &entries[0];
        assert_eq!(image.platform, Some(Platform::new("linux", "arm64", "")));
        assert_eq!(
            image.annotation(ANNOTATION_SOCI_INDEX_DIGEST),
            Some(soci_desc.digest.as_str())
        );
        let manifest = Manifest::from_json(blob(&out, &image.digest)).unwrap();
        assert_eq!(
            manifest.annotations.as_ref().unwrap()[ANNOTATION_SOCI_INDEX_DIGEST],
            soci_desc.digest
        );
        assert_eq!(manifest.layers.as_ref().unwrap().len(), 3);
        assert_eq!(entries[1], *soci_desc);
        assert_eq!(
            text(&entries[1].to_go_json()),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"com.amazon.soci.image-manifest-digest":"{}"}},"platform":{{"architecture":"arm64","os":"linux"}},"artifactType":"application/vnd.amazon.soci.index.v2+json"}}"#,
                soci_desc.digest, soci_desc.size, image.digest
            )
        );
        assert_eq!(index.media_type, MEDIA_TYPE_OCI_INDEX);
        assert!(text(blob(&out, &out.image_index.digest)).starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"#));
        assert!(!out.already_converted);
        // config, SOCI index, manifest, image index.
        assert_eq!(out.blobs.len(), 4);

        // An explicit other platform is an error for a single-platform image.
        let err = convert(
            &fake,
            &target,
            &opts(PlatformSelection::List(vec!["linux/amd64".into()])),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "image manifest for linux/amd64: not found");
        // linux/arm64/v8 strictly matches arm64 (normalised), and keeps its variant in the descriptor.
        let (_, out) = convert(
            &fake,
            &target,
            &opts(PlatformSelection::List(vec!["linux/arm64/v8".into()])),
        )
        .unwrap();
        assert_eq!(
            out.soci_indexes[0].1.platform,
            Some(Platform::new("linux", "arm64", "v8"))
        );
    }

    #[test]
    fn single_docker_manifest() {
        let mut fake = Fake::default();
        let gz = layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, 11 * MIB, "gz");
        let tar = layer(MEDIA_TYPE_DOCKER_LAYER, 12 * MIB, "tar");
        let target = fake.image(
            MEDIA_TYPE_DOCKER_MANIFEST,
            "Linux",
            "x86_64",
            "",
            &[gz.clone(), tar.clone()],
        );
        let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        check_blobs(&out);
        assert_eq!(
            plan.layers_to_index()
                .iter()
                .map(|l| l.compression)
                .collect::<Vec<_>>(),
            vec![LayerCompression::Gzip, LayerCompression::Uncompressed]
        );
        let index = new_index(&out);
        let entries = index.manifests.unwrap();
        // The config platform is normalised.
        assert_eq!(
            entries[0].platform,
            Some(Platform::new("linux", "amd64", ""))
        );
        assert_eq!(entries[0].media_type, MEDIA_TYPE_OCI_MANIFEST);
        let manifest = Manifest::from_json(blob(&out, &entries[0].digest)).unwrap();
        assert_eq!(manifest.media_type, MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(manifest.config.media_type, MEDIA_TYPE_OCI_CONFIG);
        // Layers keep their Docker media types, in the manifest and in the zTOC annotations.
        assert_eq!(
            manifest.layers.unwrap()[0].media_type,
            MEDIA_TYPE_DOCKER_LAYER_GZIP
        );
        let soci = Manifest::from_json(blob(&out, &out.soci_indexes[0].1.digest)).unwrap();
        assert_eq!(
            soci.layers.unwrap()[1].annotation(ANNOTATION_IMAGE_LAYER_MEDIA_TYPE),
            Some(MEDIA_TYPE_DOCKER_LAYER)
        );
    }

    /// A buildx-style multi-arch image: amd64, arm64 and two attestation manifests.
    fn multi_arch(fake: &mut Fake, media_type: &str) -> (Descriptor, Vec<Descriptor>) {
        let manifest_type = if media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST {
            MEDIA_TYPE_DOCKER_MANIFEST
        } else {
            MEDIA_TYPE_OCI_MANIFEST
        };
        let amd = fake.image(
            manifest_type,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "amd")],
        );
        let arm = fake.image(
            manifest_type,
            "linux",
            "arm64",
            "v8",
            &[
                layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "arm"),
                layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "shared"),
            ],
        );
        let mut att = Vec::new();
        for (i, m) in [&amd, &arm].into_iter().enumerate() {
            let cfg = {
                let (d, s) = fake.put(format!(r#"{{"n":{i}}}"#).into_bytes());
                Descriptor::new(MEDIA_TYPE_OCI_CONFIG, &d, s)
            };
            let mut a = fake.manifest(
                MEDIA_TYPE_OCI_MANIFEST,
                &cfg,
                &[layer(MEDIA_TYPE_IN_TOTO, 100, "att")],
                "",
            );
            a.platform = Some(Platform::new("unknown", "unknown", ""));
            a.annotations = Some(BTreeMap::from([
                ("vnd.docker.reference.digest".into(), m.digest.clone()),
                (
                    "vnd.docker.reference.type".into(),
                    "attestation-manifest".into(),
                ),
            ]));
            att.push(a);
        }
        let entries = vec![
            with_platform(amd, "linux", "amd64", ""),
            with_platform(arm, "linux", "arm64", "v8"),
            att[0].clone(),
            att[1].clone(),
        ];
        (fake.index(media_type, &entries), entries)
    }

    #[test]
    fn multi_arch_default_all_list() {
        let mut fake = Fake::default();
        let (target, entries) = multi_arch(&mut fake, MEDIA_TYPE_OCI_INDEX);

        // Default on an amd64 host: only amd64.
        let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        check_blobs(&out);
        let idx = new_index(&out).manifests.unwrap();
        assert_eq!(idx.len(), 5);
        assert_eq!(out.soci_indexes.len(), 1);
        assert_eq!(
            idx[0].annotation(ANNOTATION_SOCI_INDEX_DIGEST),
            Some(out.soci_indexes[0].1.digest.as_str())
        );
        // arm64 is present: re-serialised, not annotated (its bytes change: Go's form).
        assert_ne!(idx[1].digest, entries[1].digest);
        assert_eq!(idx[1].annotations, None);
        assert_eq!(idx[1].platform, entries[1].platform);
        // Attestations lose their descriptor annotations; keep their platform.
        assert_eq!(idx[2].annotations, None);
        assert_eq!(
            idx[2].platform,
            Some(Platform::new("unknown", "unknown", ""))
        );
        assert_eq!(idx[4], out.soci_indexes[0].1);
        assert_eq!(idx[4].platform, Some(Platform::new("linux", "amd64", "")));

        // On an arm64 host the default platform keeps DefaultSpec's variant v8.
        let mut o = opts(PlatformSelection::Default);
        o.host_platform = platform::default_spec("linux", "arm64");
        let (_, out) = convert(&fake, &target, &o).unwrap();
        let idx = new_index(&out).manifests.unwrap();
        assert!(idx[0].annotations.is_none());
        assert!(idx[1].annotation(ANNOTATION_SOCI_INDEX_DIGEST).is_some());
        assert_eq!(idx[4].platform, Some(Platform::new("linux", "arm64", "v8")));

        // All: both platforms, attestations skipped; the shared-by-digest layers once.
        let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap();
        check_blobs(&out);
        assert_eq!(plan.platforms().len(), 2);
        assert_eq!(plan.layers_to_index().len(), 3);
        let idx = new_index(&out).manifests.unwrap();
        assert_eq!(idx.len(), 6);
        assert_eq!(idx[4].platform, Some(Platform::new("linux", "amd64", "")));
        assert_eq!(idx[5].platform, Some(Platform::new("linux", "arm64", "v8")));
        for (i, soci) in [(0, &idx[4]), (1, &idx[5])] {
            assert_eq!(
                idx[i].annotation(ANNOTATION_SOCI_INDEX_DIGEST),
                Some(soci.digest.as_str())
            );
            assert_eq!(
                soci.annotation(ANNOTATION_IMAGE_MANIFEST_DIGEST),
                Some(idx[i].digest.as_str())
            );
        }

        // List: parsed, de-duplicated by strict normalised match (first raw value kept).
        let list = PlatformSelection::List(vec!["linux/arm64".into(), "linux/aarch64/v8".into()]);
        let (_, out) = convert(&fake, &target, &opts(list)).unwrap();
        assert_eq!(out.soci_indexes.len(), 1);
        assert_eq!(out.soci_indexes[0].0, Platform::new("linux", "arm64", ""));
        let err = convert(
            &fake,
            &target,
            &opts(PlatformSelection::List(vec!["linux/s390x".into()])),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "image manifest for linux/s390x: not found");
        let err = convert(
            &fake,
            &target,
            &opts(PlatformSelection::List(vec!["linux/*".into()])),
        )
        .unwrap_err();
        assert!(matches!(err, ConvertError::InvalidPlatform { .. }));
    }

    #[test]
    fn reconversion_is_idempotent() {
        let mut fake = Fake::default();
        let (multi, _) = multi_arch(&mut fake, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
        let single = fake.image(
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, 30 * MIB, "s")],
        );
        for (target, selection) in [
            (&multi, PlatformSelection::All),
            (&multi, PlatformSelection::Default),
            (&single, PlatformSelection::Default),
        ] {
            let o = opts(selection);
            let (plan1, out1) = convert(&fake, target, &o).unwrap();
            let mut again = Fake {
                blobs: fake.blobs.clone(),
            };
            for (d, b) in out1.blobs.iter().chain(&out1.orphan_blobs) {
                again.blobs.insert(d.digest.clone(), b.clone());
            }
            let plan2 = plan_conversion(&out1.image_index, &again.blobs, &o).unwrap();
            // Same layers, same zTOCs.
            assert_eq!(plan1.layers_to_index(), plan2.layers_to_index());
            let out2 = plan2.assemble(&fake_ztocs(&plan1)).unwrap();
            assert_eq!(out2.image_index, out1.image_index);
            assert!(out2.already_converted);
            // The old SOCI entries were re-serialised as images, then replaced.
            assert_eq!(out2.orphan_blobs.len(), out1.soci_indexes.len());
        }
    }

    #[test]
    fn partial_reconversion_replaces_only_matching_soci_entry() {
        let mut fake = Fake::default();
        let (multi, _) = multi_arch(&mut fake, MEDIA_TYPE_OCI_INDEX);
        let (_, out1) = convert(&fake, &multi, &opts(PlatformSelection::All)).unwrap();
        for (d, b) in &out1.blobs {
            fake.blobs.insert(d.digest.clone(), b.clone());
        }
        // Re-convert only amd64: the amd64 SOCI entry is replaced in place; the arm64 one is
        // re-serialised as if it were an image (upstream quirk) and stays.
        let (_, out2) =
            convert(&fake, &out1.image_index, &opts(PlatformSelection::Default)).unwrap();
        let idx = new_index(&out2).manifests.unwrap();
        assert_eq!(idx.len(), 6);
        assert_eq!(idx[4], out2.soci_indexes[0].1);
        assert_eq!(idx[5].artifact_type, SOCI_INDEX_ARTIFACT_TYPE_V2);
        let mangled = Manifest::from_json(blob(&out2, &idx[5].digest)).unwrap();
        assert_eq!(mangled.config.media_type, MEDIA_TYPE_OCI_CONFIG);
        assert_eq!(
            idx[5].annotation(ANNOTATION_BUILD_TOOL_IDENTIFIER),
            Some(SOCI_BUILD_TOOL_IDENTIFIER)
        );
    }

    #[test]
    fn min_layer_size_and_empty_platforms() {
        let mut fake = Fake::default();
        let amd = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 10 * MIB - 1, "a")],
        );
        let arm = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "arm64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 10 * MIB, "b")],
        );
        let target = fake.index(
            MEDIA_TYPE_OCI_INDEX,
            &[
                with_platform(amd.clone(), "linux", "amd64", ""),
                with_platform(arm, "linux", "arm64", ""),
            ],
        );
        // amd64 has nothing to index: dropped; arm64 (exactly the minimum) is indexed.
        let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap();
        assert_eq!(plan.platforms().len(), 1);
        assert_eq!(out.soci_indexes[0].0, Platform::new("linux", "arm64", ""));
        assert_eq!(plan.skipped_layers().len(), 1);
        assert_eq!(
            plan.skipped_layers()[0].platform,
            Platform::new("linux", "amd64", "")
        );
        // Only amd64: nothing at all.
        assert_eq!(
            convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err(),
            ConvertError::EmptyIndex
        );
        assert_eq!(
            convert(&fake, &amd, &opts(PlatformSelection::Default)).unwrap_err(),
            ConvertError::EmptyIndex
        );
        let mut o = opts(PlatformSelection::Default);
        o.min_layer_size = 0;
        assert!(convert(&fake, &amd, &o).is_ok());
        // v1 fails on a platform without zTOCs instead of skipping it.
        let mut o = opts(PlatformSelection::All);
        o.index_version = IndexVersion::V1;
        assert_eq!(
            convert(&fake, &target, &o).unwrap_err(),
            ConvertError::EmptyIndex
        );
    }

    #[test]
    fn zstd_and_wrapped_layers_are_skipped_non_layers_fail() {
        let mut fake = Fake::default();
        let layers = [
            layer(MEDIA_TYPE_OCI_LAYER_ZSTD, 20 * MIB, "zstd"),
            layer(MEDIA_TYPE_DOCKER_LAYER_ZSTD, 20 * MIB, "dzstd"),
            layer(MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE, 20 * MIB, "nd"),
            layer(
                "application/vnd.oci.image.layer.v1.tar+encrypted",
                20 * MIB,
                "enc",
            ),
            layer(
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                20 * MIB,
                "gzenc",
            ),
            layer(SOCI_PREFETCH_MEDIA_TYPE, 20 * MIB, "prefetch"),
            layer(
                MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE_GZIP,
                20 * MIB,
                "ndgz",
            ),
        ];
        let target = fake.image(MEDIA_TYPE_OCI_MANIFEST, "linux", "amd64", "", &layers);
        let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        let indexed: Vec<_> = plan
            .layers_to_index()
            .into_iter()
            .map(|l| l.descriptor.digest)
            .collect();
        assert_eq!(
            indexed,
            vec![layers[4].digest.clone(), layers[6].digest.clone()]
        );
        let reasons: Vec<_> = plan
            .skipped_layers()
            .into_iter()
            .map(|s| s.reason)
            .collect();
        assert_eq!(
            reasons,
            vec![
                SkipReason::UnsupportedCompression("zstd".into()),
                SkipReason::UnsupportedCompression("zstd".into()),
                SkipReason::UnsupportedCompression("".into()),
                SkipReason::UnsupportedCompression("".into()),
                SkipReason::PrefetchArtifact,
            ]
        );
        let soci = Manifest::from_json(blob(&out, &out.soci_indexes[0].1.digest)).unwrap();
        assert_eq!(soci.layers.unwrap().len(), 2);

        let mut fake = Fake::default();
        let target = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[
                layer(MEDIA_TYPE_OCI_LAYER_GZIP, 20 * MIB, "ok"),
                layer("application/vnd.example.data.v1+json", 1, "d"),
            ],
        );
        let err = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err();
        assert!(matches!(err, ConvertError::NotLayerType { .. }), "{err}");
        // An image-config type among the layers already fails containerd's platform walk,
        // which reads it as a config.
        let target = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_OCI_CONFIG, 1, "cfg")],
        );
        assert!(
            convert(&fake, &target, &opts(PlatformSelection::Default))
                .unwrap_err()
                .is_not_found()
        );
        // A layer-like OCI type containerd cannot place is a hard error too.
        let target = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(
                "application/vnd.oci.image.layer.v2.tar",
                20 * MIB,
                "x",
            )],
        );
        let err = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnknownLayerCompression { .. }),
            "{err}"
        );
    }

    #[test]
    fn docker_manifest_list_with_missing_children() {
        let mut fake = Fake::default();
        let (target, entries) = multi_arch(&mut fake, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
        // The arm64 manifest was not pulled.
        fake.blobs.remove(&entries[1].digest);
        let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        check_blobs(&out);
        let index = new_index(&out);
        assert_eq!(index.media_type, MEDIA_TYPE_OCI_INDEX);
        let idx = index.manifests.unwrap();
        assert_eq!(idx[0].media_type, MEDIA_TYPE_OCI_MANIFEST);
        // Untouched: still the Docker entry, as written.
        assert_eq!(idx[1], entries[1]);
        assert_eq!(idx[1].media_type, MEDIA_TYPE_DOCKER_MANIFEST);
        // Selecting the missing platform fails (all-platforms lists it from the descriptor).
        let err = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains(&entries[1].digest), "{err}");

        // A child without a platform must be readable to learn its platform.
        let mut fake = Fake::default();
        let a = fake.image(
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, 30 * MIB, "x")],
        );
        let b = fake.image(
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "arm64",
            "",
            &[layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, 30 * MIB, "y")],
        );
        let target = fake.index(
            MEDIA_TYPE_DOCKER_MANIFEST_LIST,
            &[with_platform(a, "linux", "amd64", ""), b.clone()],
        );
        fake.blobs.remove(&b.digest);
        assert!(
            convert(&fake, &target, &opts(PlatformSelection::Default))
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn manifest_should_have_proper_platform() {
        let mut fake = Fake::default();
        let a = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "x")],
        );
        let b = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "arm64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "y")],
        );
        // Platform-less child first: the build of any platform after it fails.
        let target = fake.index(
            MEDIA_TYPE_OCI_INDEX,
            &[b.clone(), with_platform(a.clone(), "linux", "amd64", "")],
        );
        assert_eq!(
            convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err(),
            ConvertError::ManifestWithoutPlatform
        );
        // After the match it is fine (and --all-platforms reads its platform from the config).
        let target = fake.index(
            MEDIA_TYPE_OCI_INDEX,
            &[with_platform(a, "linux", "amd64", ""), b],
        );
        let (plan, _) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        assert_eq!(plan.platforms().len(), 1);
        let err = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap_err();
        assert_eq!(err, ConvertError::ManifestWithoutPlatform);
    }

    #[test]
    fn annotations_are_escaped_like_go() {
        let mut fake = Fake::default();
        let config = fake.config(MEDIA_TYPE_OCI_CONFIG, "linux", "amd64", "");
        let layers = [layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "x")];
        let target = fake.manifest(
            MEDIA_TYPE_OCI_MANIFEST,
            &config,
            &layers,
            ",\n  \"annotations\": {\"b\": \"<a href=\\\"x\\\">&amp;</a>\", \"a\\u2028\": \"é😀\\u0001\\t/\"}",
        );
        let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        let idx = new_index(&out).manifests.unwrap();
        let manifest = text(blob(&out, &idx[0].digest));
        assert!(
            manifest.ends_with(&format!(
                r#""annotations":{{"a\u2028":"é😀\u0001\t/","b":"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e","com.amazon.soci.index-digest":"{}"}}}}"#,
                out.soci_indexes[0].1.digest
            )),
            "{manifest}"
        );
        assert!(
            text(blob(&out, &out.image_index.digest))
                .contains(r#""annotations":{"a\u2028":"é😀\u0001\t/","b":"\u003ca"#)
        );
    }

    #[test]
    fn v1_indexes_with_subject() {
        let mut fake = Fake::default();
        let (target, entries) = multi_arch(&mut fake, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
        let mut o = opts(PlatformSelection::All);
        o.index_version = IndexVersion::V1;
        let (_, out) = convert(&fake, &target, &o).unwrap();
        check_blobs(&out);
        assert_eq!(out.image_index, target);
        assert_eq!(out.blobs.len(), 3);
        assert_eq!(out.soci_indexes.len(), 2);
        for ((p, desc), entry) in out.soci_indexes.iter().zip(&entries) {
            assert_eq!(Some(p), entry.platform.as_ref());
            assert_eq!(desc.artifact_type, SOCI_INDEX_ARTIFACT_TYPE_V1);
            assert_eq!(desc.platform, None);
            let soci = Manifest::from_json(blob(&out, &desc.digest)).unwrap();
            assert_eq!(soci.config.media_type, SOCI_INDEX_ARTIFACT_TYPE_V1);
            assert_eq!(
                soci.subject,
                Some(Descriptor::new(
                    MEDIA_TYPE_DOCKER_MANIFEST,
                    &entry.digest,
                    entry.size
                ))
            );
            let json = text(blob(&out, &desc.digest));
            assert!(json.contains(r#"}],"subject":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"#));
            assert!(json.ends_with(
                r#"},"annotations":{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}"#
            ));
        }
        // v1 defaults to the host platform even for a single manifest (`soci create`).
        let single = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "arm64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "s")],
        );
        let mut o = opts(PlatformSelection::Default);
        o.index_version = IndexVersion::V1;
        let (_, out) = convert(&fake, &single, &o).unwrap();
        assert_eq!(out.soci_indexes[0].0, Platform::new("linux", "amd64", ""));
    }

    #[test]
    fn missing_ztoc_and_unknown_targets() {
        let mut fake = Fake::default();
        let target = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "x")],
        );
        let plan =
            plan_conversion(&target, &fake.blobs, &opts(PlatformSelection::Default)).unwrap();
        assert!(matches!(
            plan.assemble(&BTreeMap::new()),
            Err(ConvertError::MissingZtoc(_))
        ));
        let odd = Descriptor::new("application/vnd.example+json", &target.digest, target.size);
        assert_eq!(
            convert(&fake, &odd, &opts(PlatformSelection::Default)).unwrap_err(),
            ConvertError::NoPlatforms
        );
        let absent = Descriptor::new(MEDIA_TYPE_OCI_INDEX, &sha256_digest(b"nothing"), 7);
        assert!(
            convert(&fake, &absent, &opts(PlatformSelection::Default))
                .unwrap_err()
                .is_not_found()
        );
        // A manifest served for an index media type is refused.
        let wrong = Descriptor::new(MEDIA_TYPE_OCI_INDEX, &target.digest, target.size);
        assert!(matches!(
            convert(&fake, &wrong, &opts(PlatformSelection::Default)),
            Err(ConvertError::InvalidContent(_))
        ));
    }

    #[test]
    fn nested_index_entries_become_their_first_manifest() {
        let mut fake = Fake::default();
        let a = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "x")],
        );
        let b = fake.image(
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "arm64",
            "",
            &[layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "y")],
        );
        let inner = fake.index(
            MEDIA_TYPE_OCI_INDEX,
            &[with_platform(b.clone(), "linux", "arm64", "")],
        );
        let target = fake.index(
            MEDIA_TYPE_OCI_INDEX,
            &[
                with_platform(a, "linux", "amd64", ""),
                with_platform(inner, "linux", "arm64", ""),
            ],
        );
        let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
        let idx = new_index(&out).manifests.unwrap();
        assert_eq!(idx[1].media_type, MEDIA_TYPE_OCI_MANIFEST);
        let m = Manifest::from_json(blob(&out, &idx[1].digest)).unwrap();
        assert_eq!(m.layers.unwrap()[0].digest, sha256_digest(b"y"));
    }
}

/// Cross-checks against the upstream `soci` binary (`$SOCI_BIN`, else
/// `$HOME/.cache/soci-operator/tools/bin/soci`; skipped when absent): upstream converts a small
/// OCI layout, and our plan, given upstream's zTOC digests and sizes, must produce the same
/// image index digest and the same bytes for every JSON blob.
#[cfg(test)]
mod upstream_oracle {
    use super::*;
    use crate::oci::*;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn soci_bin() -> Option<PathBuf> {
        let p = match std::env::var_os("SOCI_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                PathBuf::from(std::env::var_os("HOME")?).join(".cache/soci-operator/tools/bin/soci")
            }
        };
        p.is_file().then_some(p)
    }

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("soci-format-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    struct Layout(PathBuf);

    impl Layout {
        fn new(dir: &Path) -> Self {
            std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
            std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
            Layout(dir.to_path_buf())
        }
        fn put(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
            let d = sha256_digest(bytes);
            std::fs::write(self.0.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
            Descriptor::new(media_type, &d, bytes.len() as i64)
        }
        fn finish(&self, root: &Descriptor) {
            let index = Index {
                schema_version: 2,
                media_type: MEDIA_TYPE_OCI_INDEX.into(),
                manifests: Some(vec![root.clone()]),
                ..Default::default()
            };
            std::fs::write(self.0.join("index.json"), index.to_go_json()).unwrap();
        }
    }

    impl BlobSource for Layout {
        fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
            match std::fs::read(self.0.join("blobs/sha256").join(&digest[7..])) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }
    }

    /// A ustar archive of regular files.
    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, content) in files {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..108].copy_from_slice(b"0000644\0");
            h[108..116].copy_from_slice(b"0000000\0");
            h[116..124].copy_from_slice(b"0000000\0");
            h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
            h[136..148].copy_from_slice(b"14000000000\0");
            h[148..156].copy_from_slice(b"        ");
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(content);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Content that does not compress much (so the layer is above the minimum size).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b'a' + ((x >> 33) % 26) as u8
            })
            .collect()
    }

    fn image(
        layout: &Layout,
        manifest_type: &str,
        os: &str,
        arch: &str,
        variant: &str,
        layers: &[Descriptor],
        annotations: &str,
    ) -> Descriptor {
        let config_type = if manifest_type == MEDIA_TYPE_DOCKER_MANIFEST {
            MEDIA_TYPE_DOCKER_CONFIG
        } else {
            MEDIA_TYPE_OCI_CONFIG
        };
        let variant = if variant.is_empty() {
            String::new()
        } else {
            format!(r#","variant":"{variant}""#)
        };
        let config = layout.put(
            config_type,
            format!(r#"{{"architecture":"{arch}","os":"{os}"{variant},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#).as_bytes(),
        );
        let layers: Vec<String> = layers
            .iter()
            .map(|l| {
                format!(
                    r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                    l.media_type, l.digest, l.size
                )
            })
            .collect();
        let json = format!(
            "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{manifest_type}\",\n   \"config\": {{\"mediaType\":\"{}\",\"digest\":\"{}\",\"size\":{}}},\n   \"layers\": [{}]{annotations}\n}}",
            config.media_type,
            config.digest,
            config.size,
            layers.join(",")
        );
        layout.put(manifest_type, json.as_bytes())
    }

    fn run_upstream(soci: &Path, src: &Path, dst: &Path, args: &[&str]) {
        let work = tmp("upstream-work");
        let root = work.0.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let out = Command::new(soci)
            .arg("--root")
            .arg(&root)
            .args(["convert", "--standalone", "--format", "oci-dir"])
            .args(args)
            .arg(src)
            .arg(dst)
            .env("TZ", "UTC")
            .env("TMPDIR", &work.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "upstream failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Converts `src` with upstream and with our plan (given upstream's zTOCs); compares.
    fn compare(soci: &Path, src: &Path, args: &[&str], opts: &ConvertOptions) -> Descriptor {
        let dst = tmp("upstream-out");
        let dst_dir = dst.0.join("out");
        run_upstream(soci, src, &dst_dir, args);
        let theirs = Layout(dst_dir.clone());
        let top = Index::from_json(&std::fs::read(dst_dir.join("index.json")).unwrap()).unwrap();
        let their_index_desc = top.manifests.unwrap()[0].clone();
        let their_index =
            Index::from_json(&theirs.get(&their_index_desc.digest).unwrap().unwrap()).unwrap();
        let mut ztocs = BTreeMap::new();
        for entry in their_index.manifests.iter().flatten() {
            if entry.artifact_type != SOCI_INDEX_ARTIFACT_TYPE_V2 {
                continue;
            }
            let soci_index =
                Manifest::from_json(&theirs.get(&entry.digest).unwrap().unwrap()).unwrap();
            for z in soci_index.layers.unwrap() {
                let layer = z
                    .annotation(ANNOTATION_IMAGE_LAYER_DIGEST)
                    .unwrap()
                    .to_string();
                ztocs.insert(
                    layer,
                    ZtocInfo {
                        digest: z.digest.clone(),
                        size: z.size,
                        disable_xattrs: false,
                    },
                );
            }
        }

        let source = Layout(src.to_path_buf());
        let top = Index::from_json(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
        let target = top.manifests.unwrap()[0].clone();
        let plan = plan_conversion(&target, &source, opts).unwrap();
        let ours = plan.assemble(&ztocs).unwrap();
        assert_eq!(ours.image_index, their_index_desc, "image index differs");
        for (desc, bytes) in ours.blobs.iter().chain(&ours.orphan_blobs) {
            let theirs = theirs.get(&desc.digest).unwrap();
            assert_eq!(
                theirs.as_deref(),
                Some(&bytes[..]),
                "blob {} differs or is missing upstream",
                desc.digest
            );
        }
        // Every blob upstream added is one of ours (or a zTOC).
        let before: BTreeSet<String> = std::fs::read_dir(src.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let ours_set: BTreeSet<String> = ours
            .blobs
            .iter()
            .chain(&ours.orphan_blobs)
            .map(|(d, _)| d.digest[7..].to_string())
            .collect();
        let ztoc_set: BTreeSet<String> =
            ztocs.values().map(|z| z.digest[7..].to_string()).collect();
        for entry in std::fs::read_dir(dst_dir.join("blobs/sha256")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                before.contains(&name) || ours_set.contains(&name) || ztoc_set.contains(&name),
                "upstream wrote a blob we did not: {name}"
            );
        }
        ours.image_index
    }

    fn opts(platforms: PlatformSelection, min_layer_size: i64) -> ConvertOptions {
        ConvertOptions {
            platforms,
            min_layer_size,
            span_size: 1 << 22,
            index_version: IndexVersion::V2,
            host_platform: platform::default_spec("linux", platform::goarch()),
        }
    }

    #[test]
    fn single_manifest_matches_upstream() {
        let Some(soci) = soci_bin() else {
            eprintln!("upstream soci binary not found; skipped");
            return;
        };
        let src = tmp("single");
        let layout = Layout::new(&src.0);
        let big = layout.put(
            MEDIA_TYPE_OCI_LAYER_GZIP,
            &gzip(&tar(&[("a.txt", &noise(1, 3000)), ("b/c.txt", b"hello")])),
        );
        let small = layout.put(MEDIA_TYPE_OCI_LAYER_GZIP, &gzip(&tar(&[])));
        let plain = layout.put(MEDIA_TYPE_OCI_LAYER, &tar(&[("p.txt", &noise(2, 700))]));
        let annotations = ",\n   \"annotations\": {\"org.opencontainers.image.title\": \"<a & b>\", \"x\\u2028\": \"é😀\"}";
        let target = image(
            &layout,
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "arm64",
            "v8",
            &[big, small, plain],
            annotations,
        );
        let mut root = target.clone();
        root.annotations = Some(BTreeMap::from([(
            "org.opencontainers.image.ref.name".into(),
            "v1".into(),
        )]));
        layout.finish(&root);
        compare(
            &soci,
            &src.0,
            &["--min-layer-size", "100"],
            &opts(PlatformSelection::Default, 100),
        );
    }

    #[test]
    fn multi_arch_matches_upstream_and_is_idempotent() {
        let Some(soci) = soci_bin() else {
            eprintln!("upstream soci binary not found; skipped");
            return;
        };
        let src = tmp("multi");
        let layout = Layout::new(&src.0);
        let shared = layout.put(
            MEDIA_TYPE_OCI_LAYER_GZIP,
            &gzip(&tar(&[("shared", &noise(3, 2000))])),
        );
        let amd_only = layout.put(
            MEDIA_TYPE_OCI_LAYER_GZIP,
            &gzip(&tar(&[("amd", &noise(4, 2000))])),
        );
        let arm_only = layout.put(
            MEDIA_TYPE_DOCKER_LAYER_GZIP,
            &gzip(&tar(&[("arm", &noise(5, 2000))])),
        );
        let arm_tar = layout.put(MEDIA_TYPE_DOCKER_LAYER, &tar(&[("t", &noise(6, 600))]));
        let small = layout.put(MEDIA_TYPE_OCI_LAYER_GZIP, &gzip(&tar(&[])));
        let mut amd = image(
            &layout,
            MEDIA_TYPE_OCI_MANIFEST,
            "linux",
            "amd64",
            "",
            &[shared.clone(), amd_only, small],
            "",
        );
        let mut arm = image(
            &layout,
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "arm64",
            "v8",
            &[shared, arm_only, arm_tar],
            "",
        );
        let statement = layout.put(
            MEDIA_TYPE_IN_TOTO,
            br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#,
        );
        let att_config = layout.put(MEDIA_TYPE_OCI_CONFIG, br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#);
        let att_json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"in-toto.io/predicate-type":"https://spdx.dev/Document"}}}}]}}"#,
            att_config.media_type,
            att_config.digest,
            att_config.size,
            statement.media_type,
            statement.digest,
            statement.size
        );
        let mut att = layout.put(MEDIA_TYPE_OCI_MANIFEST, att_json.as_bytes());
        att.platform = Some(Platform::new("unknown", "unknown", ""));
        att.annotations = Some(BTreeMap::from([
            ("vnd.docker.reference.digest".into(), amd.digest.clone()),
            (
                "vnd.docker.reference.type".into(),
                "attestation-manifest".into(),
            ),
        ]));
        amd.platform = Some(Platform::new("linux", "amd64", ""));
        arm.platform = Some(Platform::new("linux", "arm64", "v8"));
        amd.annotations = Some(BTreeMap::from([("com.example.note".into(), "a&b".into())]));
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_INDEX.into(),
            manifests: Some(vec![amd, arm, att]),
            annotations: Some(BTreeMap::from([(
                "org.opencontainers.image.created".into(),
                "2025-01-01T00:00:00Z".into(),
            )])),
            ..Default::default()
        };
        let root = layout.put(MEDIA_TYPE_OCI_INDEX, &index.to_go_json());
        layout.finish(&root);

        let args = ["--min-layer-size", "100", "--all-platforms"];
        let all = opts(PlatformSelection::All, 100);
        let first = compare(&soci, &src.0, &args, &all);
        compare(
            &soci,
            &src.0,
            &["--min-layer-size", "100", "--platform", "linux/arm64"],
            &opts(PlatformSelection::List(vec!["linux/arm64".into()]), 100),
        );
        compare(
            &soci,
            &src.0,
            &["--min-layer-size", "100"],
            &opts(PlatformSelection::Default, 100),
        );

        // Re-convert upstream's output: same digest for both.
        let dst = tmp("upstream-first");
        let out = dst.0.join("out");
        run_upstream(&soci, &src.0, &out, &args);
        let again = compare(&soci, &out, &args, &all);
        assert_eq!(again, first);
    }

    #[test]
    fn manifest_list_with_missing_child_matches_upstream() {
        let Some(soci) = soci_bin() else {
            eprintln!("upstream soci binary not found; skipped");
            return;
        };
        let src = tmp("missing");
        let layout = Layout::new(&src.0);
        let l1 = layout.put(
            MEDIA_TYPE_DOCKER_LAYER_GZIP,
            &gzip(&tar(&[("one", &noise(7, 2000))])),
        );
        let l2 = layout.put(
            MEDIA_TYPE_DOCKER_LAYER_GZIP,
            &gzip(&tar(&[("two", &noise(8, 2000))])),
        );
        let l3 = layout.put(
            MEDIA_TYPE_DOCKER_LAYER_GZIP,
            &gzip(&tar(&[("three", &noise(9, 2000))])),
        );
        let mut amd = image(
            &layout,
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "amd64",
            "",
            &[l1],
            "",
        );
        let mut arm = image(
            &layout,
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "arm64",
            "v8",
            &[l2],
            "",
        );
        let mut ppc = image(
            &layout,
            MEDIA_TYPE_DOCKER_MANIFEST,
            "linux",
            "ppc64le",
            "",
            &[l3],
            "",
        );
        amd.platform = Some(Platform::new("linux", "amd64", ""));
        arm.platform = Some(Platform::new("linux", "arm64", "v8"));
        ppc.platform = Some(Platform::new("linux", "ppc64le", ""));
        // arm64 was not pulled.
        std::fs::remove_file(src.0.join("blobs/sha256").join(&arm.digest[7..])).unwrap();
        let list = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_DOCKER_MANIFEST_LIST.into(),
            manifests: Some(vec![amd, arm.clone(), ppc.clone()]),
            ..Default::default()
        };
        let mut pretty = list.to_go_json();
        pretty.insert(1, b' ');
        let root = layout.put(MEDIA_TYPE_DOCKER_MANIFEST_LIST, &pretty);
        layout.finish(&root);

        let index_json = std::fs::read(src.0.join("index.json")).unwrap();
        let resolved = standalone_layout_root(&index_json, &layout).unwrap();
        let (synth_desc, synth) = resolved.synthesized.clone().unwrap();
        assert_eq!(resolved.target, synth_desc);
        assert_eq!(
            Index::from_json(&synth).unwrap().manifests.unwrap().len(),
            2
        );

        for (args, selection) in [
            (vec!["--min-layer-size", "100"], PlatformSelection::Default),
            (
                vec!["--min-layer-size", "100", "--all-platforms"],
                PlatformSelection::All,
            ),
        ] {
            let dst = tmp("missing-out");
            let out = dst.0.join("out");
            run_upstream(&soci, &src.0, &out, &args);
            let theirs = Layout(out.clone());
            assert_eq!(
                theirs.get(&synth_desc.digest).unwrap().as_deref(),
                Some(&synth[..])
            );
            let top = Index::from_json(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
            let their_desc = top.manifests.unwrap()[0].clone();
            let their_index =
                Index::from_json(&theirs.get(&their_desc.digest).unwrap().unwrap()).unwrap();
            let mut ztocs = BTreeMap::new();
            for entry in their_index
                .manifests
                .iter()
                .flatten()
                .filter(|e| e.artifact_type == SOCI_INDEX_ARTIFACT_TYPE_V2)
            {
                for z in Manifest::from_json(&theirs.get(&entry.digest).unwrap().unwrap())
                    .unwrap()
                    .layers
                    .unwrap()
                {
                    ztocs.insert(
                        z.annotation(ANNOTATION_IMAGE_LAYER_DIGEST)
                            .unwrap()
                            .to_string(),
                        ZtocInfo {
                            digest: z.digest,
                            size: z.size,
                            disable_xattrs: false,
                        },
                    );
                }
            }
            // Our source: the layout plus the synthesized list, as upstream sees it.
            let mut source: HashMap<String, Vec<u8>> = HashMap::new();
            for entry in std::fs::read_dir(src.0.join("blobs/sha256")).unwrap() {
                let entry = entry.unwrap();
                source.insert(
                    format!("sha256:{}", entry.file_name().into_string().unwrap()),
                    std::fs::read(entry.path()).unwrap(),
                );
            }
            source.insert(synth_desc.digest.clone(), synth.clone());
            let plan =
                plan_conversion(&resolved.target, &source, &opts(selection.clone(), 100)).unwrap();
            let ours = plan.assemble(&ztocs).unwrap();
            assert_eq!(ours.image_index, their_desc, "{selection:?}");
            for (d, b) in &ours.blobs {
                assert_eq!(
                    theirs.get(&d.digest).unwrap().as_deref(),
                    Some(&b[..]),
                    "{selection:?} {}",
                    d.digest
                );
            }
        }

        // Only one platform present: converted as a single-manifest image.
        std::fs::remove_file(src.0.join("blobs/sha256").join(&ppc.digest[7..])).unwrap();
        let resolved = standalone_layout_root(&index_json, &layout).unwrap();
        assert_eq!(resolved.synthesized, None);
        assert_eq!(resolved.target.media_type, MEDIA_TYPE_DOCKER_MANIFEST);
        assert_eq!(
            resolved.target.platform,
            Some(Platform::new("linux", "amd64", ""))
        );
        let dst = tmp("missing-one");
        let out = dst.0.join("out");
        run_upstream(&soci, &src.0, &out, &["--min-layer-size", "100"]);
        let theirs = Layout(out.clone());
        let top = Index::from_json(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let their_desc = top.manifests.unwrap()[0].clone();
        let their_index =
            Index::from_json(&theirs.get(&their_desc.digest).unwrap().unwrap()).unwrap();
        let soci_entry = their_index.manifests.clone().unwrap()[1].clone();
        let z = Manifest::from_json(&theirs.get(&soci_entry.digest).unwrap().unwrap())
            .unwrap()
            .layers
            .unwrap()[0]
            .clone();
        let ztocs = BTreeMap::from([(
            z.annotation(ANNOTATION_IMAGE_LAYER_DIGEST)
                .unwrap()
                .to_string(),
            ZtocInfo {
                digest: z.digest.clone(),
                size: z.size,
                disable_xattrs: false,
            },
        )]);
        let plan = plan_conversion(
            &resolved.target,
            &layout,
            &opts(PlatformSelection::Default, 100),
        )
        .unwrap();
        assert_eq!(plan.assemble(&ztocs).unwrap().image_index, their_desc);
    }
}
