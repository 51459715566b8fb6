use super::*;
use crate::ztoc::tar_zinfo_bytes;

fn sample() -> Ztoc {
    let mut blob = Vec::new();
    blob.extend_from_slice(&2i32.to_le_bytes());
    blob.extend_from_slice(&(4i64 << 20).to_le_bytes());
    for (i, o, b) in [(10i64, 0i64, 0u8), (5000, 5 << 20, 3)] {
        blob.extend_from_slice(&i.to_le_bytes());
        blob.extend_from_slice(&o.to_le_bytes());
        blob.push(b);
        blob.extend_from_slice(&[7u8; crate::zinfo::WINDOW_SIZE]);
    }
    Ztoc {
        version: "0.9".into(),
        build_tool_identifier: "AWS SOCI CLI v0.2".into(),
        compressed_archive_size: 9000,
        uncompressed_archive_size: 6 << 20,
        toc: vec![
            FileMetadata {
                name: b"etc/".to_vec(),
                file_type: "dir",
                uncompressed_offset: 512,
                mode: 0o755,
                mod_time: "2024-01-01T00:00:00Z".into(),
                ..Default::default()
            },
            FileMetadata {
                name: b"etc/a".to_vec(),
                file_type: "reg",
                uncompressed_offset: 1536,
                uncompressed_size: 5 << 20,
                uid: 1000,
                gid: 1000,
                uname: b"u".to_vec(),
                gname: b"g".to_vec(),
                mod_time: "2024-01-01T00:00:00.5Z".into(),
                xattrs: vec![(b"SCHILY.xattr.user.k".to_vec(), b"v".to_vec())],
                ..Default::default()
            },
        ],
        compression: CompressionInfo {
            algorithm: Some(CompressionAlgorithm::Gzip),
            max_span_id: 1,
            span_digests: vec![format!("sha256:{}", "a".repeat(64)); 2],
            checkpoints: blob,
        },
    }
}

#[test]
fn reads_back_what_the_writer_wrote() {
    let z = sample();
    let bytes = z.clone().into_bytes().unwrap().to_vec();
    let mut back = read_ztoc(&bytes).unwrap();
    // Gzip is the schema default: the writer leaves the field out.
    assert_eq!(back.compression.algorithm, None);
    back.compression.algorithm = Some(CompressionAlgorithm::Gzip);
    assert_eq!(back, z);
    let spans = span_ranges(&back, 9000).unwrap();
    assert_eq!(
        spans,
        vec![
            SpanRange {
                compressed: 10..5000,
                uncompressed: 0..5 << 20
            },
            SpanRange {
                compressed: 4999..9000,
                uncompressed: 5 << 20..6 << 20
            },
        ]
    );
    check_toc(&back).unwrap();
}

#[test]
fn golden_vector_reads() {
    let z = Ztoc {
        version: "0.9".into(),
        build_tool_identifier: "AWS SOCI CLI".into(),
        compressed_archive_size: 2_000_000,
        uncompressed_archive_size: 2_500_000,
        toc: vec![FileMetadata::default(); 2],
        compression: CompressionInfo {
            algorithm: None,
            max_span_id: 3,
            span_digests: vec![],
            checkpoints: vec![0; 65536],
        },
    };
    let back = read_ztoc(&z.clone().into_bytes().unwrap().to_vec()).unwrap();
    assert_eq!(back, z);
    // 65536 bytes is not a zinfo blob of any checkpoint count.
    assert!(span_ranges(&back, 2_000_000).is_err());
}

#[test]
fn zero_length_span_is_refused() {
    let mut z = sample();
    // Second checkpoint at uncompressed offset 0, like upstream after a sync flush.
    let at = BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE + 8;
    z.compression.checkpoints[at..at + 8].copy_from_slice(&0i64.to_le_bytes());
    let e = span_ranges(&z, 9000).unwrap_err();
    assert!(e.0.contains("non-monotonic"), "{e}");
}

#[test]
fn counts_must_agree() {
    let mut z = sample();
    z.compression.max_span_id = 2;
    assert!(span_ranges(&z, 9000).unwrap_err().0.contains("max_span_id"));
    let mut z = sample();
    z.compression.span_digests.pop();
    assert!(
        span_ranges(&z, 9000)
            .unwrap_err()
            .0
            .contains("span digests")
    );
    // A layer shorter than the last checkpoint.
    assert!(span_ranges(&sample(), 4000).is_err());
}

#[test]
fn uncompressed_spans() {
    let mut z = sample();
    z.compression.algorithm = Some(CompressionAlgorithm::Uncompressed);
    z.compression.checkpoints = tar_zinfo_bytes(4096, 10000);
    z.compression.max_span_id = 2;
    z.compression.span_digests = vec![String::new(); 3];
    let bytes = z.into_bytes().unwrap().to_vec();
    let back = read_ztoc(&bytes).unwrap();
    assert_eq!(
        back.compression.algorithm,
        Some(CompressionAlgorithm::Uncompressed)
    );
    let spans = span_ranges(&back, 10000).unwrap();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[2].compressed, 8192..10000);
    assert!(span_ranges(&back, 10001).is_err());
}

#[test]
fn toc_header_overlap_is_refused() {
    let mut z = sample();
    z.toc[1].uncompressed_offset = 600; // header of etc/a would start at 512, data at 600: ok
    check_toc(&z).unwrap();
    z.toc[0].uncompressed_size = 1000; // etc/ data now ends at 1512 → next header at 1536 > 600
    assert!(check_toc(&z).is_err());
}

#[test]
fn garbage_and_truncations_give_errors_not_panics() {
    let bytes = sample().into_bytes().unwrap().to_vec();
    for cut in (0..bytes.len()).step_by(97) {
        let _ = read_ztoc(&bytes[..cut]);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % b.len() as u64) as usize;
            b[i] = (state >> 32) as u8;
        }
        if let Ok(z) = read_ztoc(&b) {
            let _ = span_ranges(&z, 9000);
            let _ = check_toc(&z);
        }
    }
    assert!(read_ztoc(b"").is_err());
    assert!(read_ztoc(&[0xff; 16]).is_err());
}
