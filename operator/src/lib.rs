//! `soci-operator`: builds and keeps SOCI indexes for a cluster's container images.
//!
//! One library behind one binary: the controller (`run`), the worker of a build Job (`build`) and
//! the workstation tool (`convert`, `inspect`, `verify`, `ztoc`, `crd`) are subcommands of the
//! binary in `main.rs`, which only parses arguments and maps errors to exit codes. The SOCI wire
//! formats live in the `soci-format` crate, free of Kubernetes and async code.

pub mod api;
pub mod commands;
pub mod controller;
pub mod conversion_engine;
pub mod image;
pub mod inspect_report;
pub mod locks;
pub mod progress;
pub mod registry;
pub mod verification;

/// Exit codes the controller acts on (documented in `--help` and the README).
pub mod exit {
    pub const PERMANENT_FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const TRANSIENT_FAILURE: u8 = 3;

    /// An argument that is well-formed for clap but unusable (exit code 2).
    #[derive(Debug)]
    pub struct UsageError(pub String);

    impl std::fmt::Display for UsageError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for UsageError {}

    /// The exit code for a failure: transient only when a registry failure that exhausted
    /// its retries is the cause.
    pub fn code_for(error: &anyhow::Error) -> u8 {
        for cause in error.chain() {
            if cause.downcast_ref::<UsageError>().is_some() {
                return USAGE;
            }
            if let Some(e) = cause.downcast_ref::<crate::registry::RegistryError>() {
                return if e.is_transient() {
                    TRANSIENT_FAILURE
                } else {
                    PERMANENT_FAILURE
                };
            }
        }
        PERMANENT_FAILURE
    }
}
