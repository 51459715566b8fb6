//! A whole layer: gzip or tar bytes in, zTOC or a clean error out; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soci_format::layer_indexer::{IndexerLimits, LayerCompression, LayerIndexer};

fuzz_target!(|data: &[u8]| {
    let compression = if data.first().is_some_and(|b| b & 1 == 0) {
        LayerCompression::Gzip
    } else {
        LayerCompression::Uncompressed
    };
    let limits = IndexerLimits { max_entries: 10_000, max_uncompressed_bytes: 64 << 20 };
    let Ok(mut indexer) = LayerIndexer::new(compression, 4096, limits) else { return };
    let body = data.get(1..).unwrap_or_default();
    for piece in body.chunks(4096) {
        if indexer.push(piece).is_err() {
            return;
        }
    }
    let _ = indexer.finish();
});
