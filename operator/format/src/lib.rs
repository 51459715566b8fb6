//! The SOCI wire formats, with no async and no Kubernetes in them, so that every piece can be
//! unit tested and fuzzed on its own.
//!
//! - [`tar`]: a push-driven tar reader with Go `archive/tar` semantics (upstream's TOC comes from it).
//! - [`gotime`]: Go's `time.Unix` / `Time.MarshalText` in UTC.
//! - [`inflate`]: gzip inflate that stops at deflate block boundaries (zlib-rs, `Z_BLOCK`).
//! - [`zinfo`]: span checkpoints and span digests, built in one streaming pass.
//! - [`ztoc`]: the zTOC model and its flatbuffer bytes (via [`flatbuf`], Go's builder semantics).
//! - [`ztoc_reader`]: reading zTOCs back (bounds-checked) and the span checks the snapshotter makes.
//! - [`layer_indexer`]: one streaming pass from layer bytes to zTOC bytes (compressed bytes are
//!   hashed on a second thread, in `blob_hasher`).
//! - [`gojson`]: Go `encoding/json` writing and reading rules (escaping, key folding, base64).
//! - [`oci`]: image-spec descriptors, manifests and indexes with Go JSON semantics; media types.
//! - [`platform`]: containerd platform parsing, normalisation and strict matching.
//! - [`conversion_plan`]: the `soci convert` / `soci create` plan, and assembly of the new JSON
//!   blobs.

mod blob_hasher;
pub mod conversion_plan;
pub mod flatbuf;
#[doc(hidden)]
pub mod fuzzing;
pub mod gojson;
pub mod gotime;
pub mod inflate;
pub mod layer_indexer;
pub mod oci;
pub mod platform;
pub mod tar;
pub mod zinfo;
pub mod ztoc;
pub mod ztoc_reader;
