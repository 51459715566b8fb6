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

use crate::oci::{Descriptor, Index, Manifest, Platform};
use crate::platform;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

pub use crate::layer_indexer::LayerCompression;
pub use layout_root::{LayoutRoot, standalone_layout_root};

use blobs::Blobs;
use platforms::{parse_platforms, plan_v1, plan_v2};

mod assemble;
mod blobs;
mod layout_root;
mod platforms;

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
}

#[cfg(test)]
mod test_support;

/// Cross-checks against the upstream `soci` binary (`$SOCI_BIN`, else
/// `$HOME/.cache/soci-operator/tools/bin/soci`; skipped when absent): upstream converts a small
/// OCI layout, and our plan, given upstream's zTOC digests and sizes, must produce the same
/// image index digest and the same bytes for every JSON blob.
#[cfg(test)]
mod upstream_oracle;
