//! Entry points of the cargo-fuzz targets (`operator/fuzz`), kept in the crate so that a
//! stable `cargo test` runs them over the seed corpus and over every input fuzzing ever broke.
//! Each panics only when an invariant breaks; errors are the expected outcome of bad input.

use crate::ztoc::CompressionAlgorithm;
use crate::ztoc_reader::{
    MAX_SPANS, MAX_TOC_ENTRIES, check_toc, parse_gzip_zinfo, parse_tar_zinfo, read_ztoc,
    span_ranges,
};

/// Layer sizes a manifest may declare for the zTOC, besides the one the input names.
const DECLARED_SIZES: [u64; 4] = [0, 1 << 40, i64::MAX as u64, u64::MAX];

/// Splits a fuzz input into the layer size a manifest declares (the first 8 bytes, little
/// endian) and the zTOC bytes (the rest).
pub fn split_ztoc_input(data: &[u8]) -> (u64, &[u8]) {
    match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (0, data),
    }
}

/// A fuzz input for a zTOC and the layer size its manifest declares.
pub fn ztoc_input(layer_size: u64, ztoc: &[u8]) -> Vec<u8> {
    [&layer_size.to_le_bytes()[..], ztoc].concat()
}

/// The zTOC reader as the controller's verification drives it: parse, check the TOC, list
/// the spans for the declared layer size (and for absurd ones), and the checkpoint parsers on
/// the raw bytes too. What parses must write back to bytes that parse to the same zTOC.
pub fn ztoc_reader(data: &[u8]) {
    let (declared, bytes) = split_ztoc_input(data);
    let _ = parse_gzip_zinfo(bytes);
    let _ = parse_tar_zinfo(bytes);
    let Ok(z) = read_ztoc(bytes) else {
        return;
    };
    assert!(z.toc.len() <= MAX_TOC_ENTRIES);
    let _ = check_toc(&z);
    // The sizes a manifest written with the zTOC would declare to match it.
    let own = z.compressed_archive_size.max(0) as u64;
    let tar_zinfo = parse_tar_zinfo(&z.compression.checkpoints).map_or(0, |t| t.size.max(0) as u64);
    for layer_size in [declared, own, tar_zinfo].into_iter().chain(DECLARED_SIZES) {
        let Ok(spans) = span_ranges(&z, layer_size) else {
            continue;
        };
        assert_eq!(spans.len(), z.compression.span_digests.len());
        assert!(spans.len() <= MAX_SPANS);
        for s in &spans {
            assert!(s.compressed.end <= layer_size, "{s:?} beyond {layer_size}");
            assert!(s.compressed.start <= s.compressed.end, "{s:?}");
            assert!(s.uncompressed.start <= s.uncompressed.end, "{s:?}");
        }
    }
    let Ok(written) = z.clone().into_bytes() else {
        return;
    };
    let again = read_ztoc(&written.to_vec()).expect("a zTOC the writer wrote reads back");
    // Gzip is the schema default: the writer leaves it out, so it reads back as unset.
    let normalised = |mut z: crate::ztoc::Ztoc| {
        if z.compression.algorithm == Some(CompressionAlgorithm::Gzip) {
            z.compression.algorithm = None;
        }
        z
    };
    assert!(
        normalised(again) == normalised(z),
        "write/read changed the zTOC"
    );
}
