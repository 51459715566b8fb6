use super::*;
use crate::flatbuf::GoFlatBuilder;
use crate::ztoc::tar_zinfo_bytes;

fn digest() -> String {
    format!("sha256:{}", "a".repeat(64))
}

fn uncompressed(span_size: i64, size: i64, max_span_id: i32, digests: usize) -> Ztoc {
    Ztoc {
        version: "0.9".into(),
        build_tool_identifier: "AWS SOCI CLI v0.2".into(),
        compressed_archive_size: size,
        uncompressed_archive_size: size,
        toc: Vec::new(),
        compression: CompressionInfo {
            algorithm: Some(CompressionAlgorithm::Uncompressed),
            max_span_id,
            span_digests: vec![digest(); digests],
            checkpoints: tar_zinfo_bytes(span_size, size),
        },
    }
}

fn gzip_blob(checkpoints: &[(i64, i64, u8)]) -> Vec<u8> {
    let mut blob = Vec::new();
    blob.extend_from_slice(&(checkpoints.len() as i32).to_le_bytes());
    blob.extend_from_slice(&(1i64 << 22).to_le_bytes());
    for &(input, output, bits) in checkpoints {
        blob.extend_from_slice(&input.to_le_bytes());
        blob.extend_from_slice(&output.to_le_bytes());
        blob.push(bits);
        blob.extend_from_slice(&[0u8; crate::zinfo::WINDOW_SIZE]);
    }
    blob
}

/// A 2^40-byte layer in 1-byte spans: the span count is refused before a single span is
/// listed (it used to collect 2^40 ranges and abort on the allocation).
#[test]
fn a_2_pow_40_layer_in_1_byte_spans_is_refused_before_listing_spans() {
    let z = uncompressed(1, 1 << 40, 0, 1);
    let bytes = z.into_bytes().unwrap().to_vec();
    let z = read_ztoc(&bytes).unwrap();
    let e = span_ranges(&z, 1 << 40).unwrap_err();
    assert!(e.0.contains("1099511627776 spans, more than"), "{e}");
}

/// Fewer spans than MAX_SPANS, but not what max_span_id says: refused before listing.
#[test]
fn a_span_count_that_disagrees_with_max_span_id_is_refused() {
    let z = uncompressed(1, 1 << 23, 0, 1);
    let e = span_ranges(&z, 1 << 23).unwrap_err();
    assert!(
        e.0.contains("max_span_id 0 but the checkpoints make 8388608 spans"),
        "{e}"
    );
    let z = uncompressed(1 << 20, 1 << 22, 3, 1);
    let e = span_ranges(&z, 1 << 22).unwrap_err();
    assert!(e.0.contains("1 span digests for 4 spans"), "{e}");
}

#[test]
fn bad_tar_zinfo_sizes_are_errors() {
    for (span, size, layer, want) in [
        (0, 100, 100, "span size 0"),
        (-1, 100, 100, "span size -1"),
        (i64::MIN, 100, 100, "span size"),
        (10, -1, u64::MAX, "TarZinfo size -1 differs"),
        (10, 100, 101, "TarZinfo size 100 differs"),
    ] {
        let z = uncompressed(span, size, 0, 1);
        let e = span_ranges(&z, layer).unwrap_err();
        assert!(e.0.contains(want), "{span} {size} {layer}: {e}");
    }
    // The largest span of a layer near i64::MAX: ends are clamped, never wrapped.
    let z = uncompressed(i64::MAX - 1, i64::MAX, 1, 2);
    let spans = span_ranges(&z, i64::MAX as u64).unwrap();
    assert_eq!(spans[1].compressed, (i64::MAX - 1) as u64..i64::MAX as u64);
}

/// A first checkpoint at compressed offset 0 with unused bits would start its span at
/// byte -1 (a subtraction overflow panic in debug builds, a wrap in release).
#[test]
fn a_checkpoint_at_offset_0_with_unused_bits_is_an_error() {
    let mut z = uncompressed(1, 1, 1, 2);
    z.compression.algorithm = Some(CompressionAlgorithm::Gzip);
    z.compression.checkpoints = gzip_blob(&[(0, 0, 3), (100, 1000, 0)]);
    let e = span_ranges(&z, 200).unwrap_err();
    assert!(e.0.contains("checkpoint 0 at compressed offset 0"), "{e}");
}

#[test]
fn truncated_and_miscounted_zinfo_blobs_are_errors() {
    let blob = gzip_blob(&[(10, 0, 0), (100, 1000, 0)]);
    for cut in [0, 4, 11, 12, 13, blob.len() - 1] {
        assert!(parse_gzip_zinfo(&blob[..cut]).is_err(), "cut at {cut}");
    }
    let mut lying = blob.clone();
    lying[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
    let e = parse_gzip_zinfo(&lying).unwrap_err();
    assert!(e.0.contains("does not hold 2147483647 checkpoints"), "{e}");
    lying[0..4].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(parse_gzip_zinfo(&lying).is_err());
    let mut negative = blob.clone();
    negative[12..20].copy_from_slice(&(-5i64).to_le_bytes());
    assert!(
        parse_gzip_zinfo(&negative)
            .unwrap_err()
            .0
            .contains("invalid")
    );
    assert!(parse_tar_zinfo(&[0xff; 3]).is_err());
    assert!(parse_tar_zinfo(&[0x10, 0, 0, 0, 0xfc, 0xff, 0xff, 0xff]).is_err());
}

/// A zTOC whose TOC vector lists `copies` offsets, all to one FileMetadata table with a
/// `name_len`-byte name (a few KiB of input that would copy the name `copies` times).
fn shared_entry_ztoc(copies: usize, name_len: usize) -> Vec<u8> {
    let mut b = GoFlatBuilder::new();
    let name = b.create_string(&vec![b'n'; name_len]);
    b.start_object(14);
    b.add_offset(0, name);
    let entry = b.end_object();
    let entries = b.create_offset_vector(&vec![entry; copies]);
    b.start_object(1);
    b.add_offset(0, entries);
    let toc = b.end_object();
    b.start_object(6);
    b.add_offset(4, toc);
    let root = b.end_object();
    let parts = b.finish(root);
    [parts.head, parts.tail].concat()
}

#[test]
fn offsets_pointing_at_the_same_bytes_do_not_multiply_memory() {
    // 4096 copies of a 16 KiB name: 64 MiB from a 32 KiB zTOC.
    let bytes = shared_entry_ztoc(4096, 16 << 10);
    assert!(bytes.len() < 40 << 10);
    let e = read_ztoc(&bytes).unwrap_err();
    assert!(e.0.contains("more than"), "{e}");
    assert!(e.0.contains("bytes of memory"), "{e}");
    // Distinct entries of the same total size read fine.
    let mut z = uncompressed(1 << 20, 1 << 20, 0, 1);
    z.toc = (0..64)
        .map(|i| FileMetadata {
            name: format!("{i:016}").repeat(1024).into_bytes(),
            file_type: "reg",
            ..Default::default()
        })
        .collect();
    let back = read_ztoc(&z.clone().into_bytes().unwrap().to_vec()).unwrap();
    assert_eq!(back.toc, z.toc);
}

/// Many empty entries sharing one table: each costs a FileMetadata in memory but only
/// four bytes of input.
#[test]
fn many_entries_on_one_table_are_refused() {
    let bytes = shared_entry_ztoc(200_000, 0);
    let e = read_ztoc(&bytes).unwrap_err();
    assert!(e.0.contains("bytes of memory"), "{e}");
}

/// A vector length from the buffer that runs past its end: refused before allocating.
#[test]
fn a_vector_length_past_the_end_is_an_error() {
    let mut bytes = shared_entry_ztoc(1, 4);
    let at = {
        let buf = Buf(&bytes);
        let root = buf.table(buf.follow(0).unwrap()).unwrap();
        let toc = root.table(4).unwrap().unwrap();
        buf.follow(toc.field(0, 4).unwrap().unwrap()).unwrap()
    };
    assert_eq!(bytes[at..at + 4], 1u32.to_le_bytes());
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = read_ztoc(&bytes).unwrap_err();
    assert!(e.0.contains("beyond the end"), "{e}");
}
