//! Talking to OCI distribution registries: references, credentials, classified failures with
//! retries, exact-byte manifests, streaming and resumable blob reads, mounts and uploads.
//!
//! - [`mod@reference`]: `host[:port]/repo[:tag][@digest]`, docker.io normalisation, loopback rules.
//! - [`address_policy`]: which hosts may be contacted (allowed/denied globs, no metadata).
//! - [`auth`]: docker `config.json` credentials and credential helpers.
//! - [`token`]: the `WWW-Authenticate` challenge and bearer-token handshake.
//! - [`client`]: the authenticated request path, retry policy, plain HTTP / CA bundle.
//! - [`manifests`], [`blobs`]: the distribution API calls we use.
//! - [`referrers`]: manifests naming a subject (v1 SOCI indexes): the API or the tag schema.
//! - [`error`]: transient versus permanent failures (exit codes 3 and 1).
//! - [`limits`], [`digest`]: what a registry can make us hold or wait for; digests checked
//!   before they go into a URL.

pub mod address_policy;
pub mod auth;
pub mod blobs;
pub mod client;
pub mod digest;
pub mod error;
pub mod limits;
pub mod manifests;
pub mod reference;
pub mod referrers;
pub mod token;

#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
pub(crate) mod hostile_tests;

pub use client::{RegistryClient, RegistryOptions, RetryPolicy};
pub use error::RegistryError;
pub use reference::RegistryRef;
