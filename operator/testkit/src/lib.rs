//! Test support for soci-operator: a deterministic corpus of tar layers and OCI image layouts,
//! and the upstream `soci` CLI as the compatibility oracle.
//!
//! - [`tarw`]: tar writer with byte-level control (USTAR, GNU, PAX flavours, V7, bsdtar shapes).
//! - [`compress`]: gzip (levels, header fields, multi-member, sync flushes), raw-block zstd.
//! - [`data`]: deterministic file contents (xorshift random, text, zeros, mixed).
//! - [`layout`]: OCI image layout writer (OCI/Docker manifests, indexes, attestations).
//! - [`corpus`]: the conversion cases with their flags and expected outcome.
//! - [`oracle`]: locate/run upstream `soci convert --standalone`, run ours, compare layouts.
//! - [`fault_proxy`]: a seeded fault-injecting HTTP proxy (5xx, 429, resets, stalls, cut bodies).
//! - [`hostile`]: a loopback HTTP server whose every answer the test chooses (hostile registries).
//! - [`link_proxy`]: a TCP proxy paced like a network link of a given speed (benchmarks).
//! - [`registry`]: a real local registry (Debian's `docker-registry`) and a small client for it.

pub mod bench;
pub mod bench_registry;
pub mod compress;
pub mod corpus;
pub mod data;
pub mod fault_proxy;
pub mod hostile;
pub mod layout;
pub mod link_proxy;
pub mod oracle;
pub mod registry;
pub mod tarw;

pub use corpus::{CorpusCase, Expect, Scale, corpus};
pub use oracle::{
    TempDir, check_sync_flush_divergence, compare_layouts, upstream_convert, upstream_soci,
};
