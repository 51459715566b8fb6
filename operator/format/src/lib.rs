//! The SOCI wire formats, with no async and no Kubernetes in them, so that every piece can be
//! unit tested and fuzzed on its own.
//!
//! - [`tar`]: a push-driven tar reader with Go `archive/tar` semantics (upstream's TOC comes from it).
//! - [`gotime`]: Go's `time.Unix` / `Time.MarshalText` in UTC.
