//! `soci-operator`: builds and keeps SOCI indexes for a cluster's container images.
//!
//! One library behind one binary: the controller (`run`), the worker of a build Job (`build`) and
//! the workstation tool (`convert`, `inspect`, `verify`, `ztoc`, `crd`) are subcommands of the
//! binary in `main.rs`, which only parses arguments and maps errors to exit codes. The SOCI wire
//! formats live in the `soci-format` crate, free of Kubernetes and async code.

pub mod admin;
pub mod api;
pub mod commands;
pub mod controller;
pub mod conversion_engine;
pub mod image;
pub mod inspect_report;
pub mod locks;
pub mod progress;
pub mod reason;
pub mod receiver;
pub mod registry;
pub mod verification;
pub mod webhook;

pub use reason::exit;
