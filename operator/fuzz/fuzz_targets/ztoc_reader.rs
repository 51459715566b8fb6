//! The zTOC reader on arbitrary bytes: the first 8 bytes are the layer size a manifest declares
//! (the target also tries 0, 2^40, i64::MAX and u64::MAX), the rest the zTOC. Errors, never a
//! panic, an abort, or memory out of proportion to the input; what parses writes back to the
//! same zTOC. The checks live in `soci_format::fuzzing`, which `cargo test` also runs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| soci_format::fuzzing::ztoc_reader(data));
