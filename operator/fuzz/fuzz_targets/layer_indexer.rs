//! A whole layer: gzip or tar bytes in, zTOC or a clean error out; never a panic. Chunking and
//! where the hashing runs must not change the zTOC, and the blob digest must be the blob's.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use soci_format::layer_indexer::{IndexerLimits, IndexerOptions, LayerCompression, LayerIndexer};

fn build(
    compression: LayerCompression,
    body: &[u8],
    chunk: usize,
    background_hashing: bool,
) -> Option<(String, Option<String>)> {
    let limits = IndexerLimits {
        max_entries: 10_000,
        max_uncompressed_bytes: 64 << 20,
    };
    let options = IndexerOptions {
        blob_digest: true,
        background_hashing,
    };
    let mut indexer = LayerIndexer::with_options(compression, 4096, limits, options).ok()?;
    for piece in body.chunks(chunk.max(1)) {
        indexer.push(piece).ok()?;
    }
    let built = indexer.finish().ok()?;
    Some((built.bytes.digest().to_string(), built.blob_digest))
}

fuzz_target!(|data: &[u8]| {
    let compression = if data.first().is_some_and(|b| b & 1 == 0) {
        LayerCompression::Gzip
    } else {
        LayerCompression::Uncompressed
    };
    let body = data.get(1..).unwrap_or_default();
    let a = build(compression, body, 4096, true);
    let b = build(compression, body, 1 + body.len() % 97, false);
    assert_eq!(a, b);
    if let Some((_, blob)) = a {
        let want: String = Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(blob, Some(format!("sha256:{want}")));
    }
});
