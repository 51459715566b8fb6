//! Sparse files: old GNU maps and extension blocks, PAX 0.0/0.1/1.0 maps, their limits and
//! validation.

use crate::tar::test_support::*;
use crate::tar::*;

#[test]
fn v37_old_sparse_in_ustar_block() {
    let outcome = run(&Archive::new().header(h("s").typeflag(b'S')).end());
    assert!(outcome.0.is_empty() && is_header_error(&outcome));
}

#[test]
fn v38_bad_sparse_0_0_records() {
    for list in [
        [("GNU.sparse.numbytes", "5"), ("GNU.sparse.offset", "0")],
        [("GNU.sparse.offset", "0,1"), ("GNU.sparse.numbytes", "5")],
    ] {
        let outcome = run(&Archive::new().x(&list).header(h("f")).end());
        assert!(outcome.0.is_empty() && is_header_error(&outcome));
    }
    let two_offsets = [("GNU.sparse.offset", "0"), ("GNU.sparse.offset", "1")];
    assert!(is_header_error(&run(&Archive::new()
        .x(&two_offsets)
        .header(h("f"))
        .end())));
}

#[test]
fn v39_sparse_0_0() {
    let bytes = Archive::new()
        .x(&[
            ("GNU.sparse.size", "10"),
            ("GNU.sparse.numblocks", "1"),
            ("GNU.sparse.offset", "2"),
            ("GNU.sparse.numbytes", "3"),
        ])
        .header(h("f").size(3))
        .data(b"abc")
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("f"), '0', 10, 1536, s(EPOCH), Format::Pax)
    );
    assert_eq!(
        entries[0].pax_records,
        Some(pax_map(&[
            ("GNU.sparse.size", "10"),
            ("GNU.sparse.numblocks", "1"),
            ("GNU.sparse.map", "2,3"),
        ]))
    );
    assert_eq!(end, Ok(3072));
}

#[test]
fn v40_sparse_fragment_past_size() {
    let list = [
        ("GNU.sparse.major", "0"),
        ("GNU.sparse.minor", "1"),
        ("GNU.sparse.numblocks", "1"),
        ("GNU.sparse.map", "2,3"),
        ("GNU.sparse.size", "4"),
    ];
    let outcome = run(&Archive::new()
        .x(&list)
        .header(h("f").size(3))
        .data(b"abc")
        .end());
    assert!(outcome.0.is_empty() && is_header_error(&outcome));
}

#[test]
fn v41_sparse_1_0_map_moves_the_offset() {
    let bytes = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &sparse_1_0_records())
        .header(h("x").size(515))
        .data(b"1\n2\n3\n")
        .data(b"abc")
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("real"), '0', 10, 2048, s(EPOCH), Format::Pax)
    );
    assert_eq!(end, Ok(3584));
}

#[test]
fn v42_sparse_1_0_map_cut_short() {
    let bytes = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &sparse_1_0_records())
        .header(h("x").size(5))
        .data(b"1\n2\n3")
        .end();
    let outcome = run(&bytes);
    assert!(outcome.0.is_empty());
    assert_eq!(outcome.1, Err(TarError::UnexpectedEof));
}

#[test]
fn v43_unknown_sparse_version_is_not_sparse() {
    for (major, minor) in [("2", "0"), ("1", ""), ("", "0"), ("0", "2")] {
        let bytes = Archive::new()
            .x(&[
                ("GNU.sparse.major", major),
                ("GNU.sparse.minor", minor),
                ("GNU.sparse.realsize", "10"),
                ("GNU.sparse.name", "real"),
            ])
            .header(h("x").size(3))
            .data(b"abc")
            .end();
        let e = only_entry(&bytes);
        assert_eq!(
            (e.name.as_slice(), e.size),
            (&b"x"[..], 3),
            "{major}.{minor}"
        );
    }
}

#[test]
fn v44_sparse_physical_length_is_pax_size() {
    let list = [
        ("size", "3"),
        ("GNU.sparse.major", "0"),
        ("GNU.sparse.minor", "1"),
        ("GNU.sparse.size", "10"),
        ("GNU.sparse.numblocks", "1"),
        ("GNU.sparse.map", "2,3"),
    ];
    let bytes = Archive::new()
        .x(&list)
        .header(h("f").size(999))
        .data(b"abc")
        .header(h("g"))
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!((entries[0].size, entries[0].data_offset), (10, 1536));
    assert_eq!(entries[1].data_offset, 2560);
    assert_eq!(end, Ok(3584));
}

#[test]
fn worked_example_old_gnu_sparse_extension_blocks() {
    let fragments: Vec<(i64, i64)> = (0..41).map(|i| (i * 1024, 512)).collect();
    let bytes = old_gnu_sparse(&fragments, 41 * 1024, 41 * 512)
        .data(&vec![b'd'; 41 * 512])
        .header(h("after"))
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("sparse"), 'S', 41 * 1024, 1536, s(EPOCH), Format::Gnu)
    );
    assert_eq!(entries[1].data_offset, 1536 + 41 * 512 + 512);
    assert_eq!(end, Ok(1536 + 41 * 512 + 512 + 1024));
    // Cut inside an extension block.
    assert_eq!(run(&bytes[..1000]).1, Err(TarError::UnexpectedEof));
    // Overlapping fragments fail validation.
    let overlapping = old_gnu_sparse(&[(0, 10), (5, 10)], 100, 0).end();
    assert!(is_header_error(&run(&overlapping)));
    // Fragments past the real size too.
    assert!(is_header_error(&run(
        &old_gnu_sparse(&[(0, 101)], 100, 0).end()
    )));
}

#[test]
fn old_gnu_sparse_extension_block_limit() {
    // Extension blocks with no descriptors, only the "more follows" byte.
    let chain = |blocks: usize| {
        let mut archive =
            Archive::new().header(HeaderBlock::gnu().name(b"s").typeflag(b'S').set(482, &[1]));
        for i in 0..blocks {
            let mut block = [0u8; BLOCK_SIZE];
            block[504] = u8::from(i + 1 < blocks);
            archive = archive.raw(&block);
        }
        archive.end()
    };
    let (entries, end) = feed_random_chunks(&chain(2047), 7);
    assert_eq!(entries[0].data_offset, 512 * 2048);
    assert!(end.is_ok());
    assert_eq!(
        feed_random_chunks(&chain(2048), 7).1,
        Err(TarError::SparseTooLong)
    );
}

#[test]
fn worked_example_sparse_1_0_two_map_blocks() {
    let mut map = b"41\n".to_vec();
    for i in 0..41u64 {
        map.extend_from_slice(format!("{:010}\n{:010}\n", i * 100_000, 512).as_bytes());
    }
    let real = records(&[
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.realsize", "5000000"),
        ("GNU.sparse.name", "real"),
    ]);
    let bytes = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &real)
        .header(h("GNUSparseFile.0/real").size(1024 + 41 * 512))
        .data(&map)
        .data(&vec![b'd'; 41 * 512])
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("real"), '0', 5_000_000, 2560, s(EPOCH), Format::Pax)
    );
    assert_eq!(end, Ok(2560 + 41 * 512 + 1024));
}

#[test]
fn sparse_1_0_map_errors() {
    // Bad tokens.
    for map in [
        &b"x\n"[..],
        b"-1\n",
        b"1\n2 \n3\n",
        b"1\n2\n\0\n",
        b"1\n-2\n3\n",
    ] {
        let outcome = run(&sparse_1_0(map, 512).data(b"").end());
        assert!(is_header_error(&outcome), "{map:?}: {:?}", outcome.1);
    }
    // The map is read through the entry's data: a header-only type has none.
    let dir = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &sparse_1_0_records())
        .header(h("d").typeflag(b'5'))
        .data(b"0\n")
        .end();
    assert_eq!(run(&dir).1, Err(TarError::UnexpectedEof));
    // Zero fragments are fine.
    let e = only_entry(&sparse_1_0(b"0\n", 512).data(b"").end());
    assert_eq!((e.size, e.data_offset), (10, 2048));
}

#[test]
fn sparse_1_0_map_block_limit() {
    let map_in_blocks = |blocks: usize| {
        let mut map = b"1\n".to_vec();
        map.resize(blocks * BLOCK_SIZE - 3, b'0');
        map.extend_from_slice(b"\n0\n");
        map
    };
    let ok = map_in_blocks(2048);
    let bytes = sparse_1_0(&ok, ok.len() as u64).end();
    let (entries, end) = feed_random_chunks(&bytes, 3);
    assert_eq!(entries[0].data_offset, 1536 + ok.len() as u64);
    assert!(end.is_ok());
    let too_long = map_in_blocks(2049);
    let bytes = sparse_1_0(&too_long, too_long.len() as u64).end();
    assert_eq!(
        feed_random_chunks(&bytes, 3).1,
        Err(TarError::SparseTooLong)
    );
}

#[test]
fn sparse_0_x_errors_and_zero_fragments() {
    let with = |list: &[(&str, &str)]| {
        run(&Archive::new()
            .x(list)
            .header(h("f").size(3))
            .data(b"abc")
            .end())
    };
    // numblocks missing, count mismatch, bad number, header-only type.
    assert!(is_header_error(&with(&[("GNU.sparse.map", "0,3")])));
    assert!(is_header_error(&with(&[
        ("GNU.sparse.numblocks", "2"),
        ("GNU.sparse.map", "0,3")
    ])));
    assert!(is_header_error(&with(&[
        ("GNU.sparse.numblocks", "1"),
        ("GNU.sparse.map", "0,x")
    ])));
    assert!(is_header_error(&with(&[
        ("GNU.sparse.numblocks", "1"),
        ("GNU.sparse.map", ",")
    ])));
    let dir = Archive::new()
        .x(&[("GNU.sparse.numblocks", "1"), ("GNU.sparse.map", "0,0")])
        .header(h("d").typeflag(b'5'))
        .end();
    assert!(is_header_error(&run(&dir)));
    // Versioned 0.1 with zero fragments is sparse (size replaced); unversioned is not.
    let e = only_entry(
        &Archive::new()
            .x(&[
                ("GNU.sparse.major", "0"),
                ("GNU.sparse.minor", "1"),
                ("GNU.sparse.numblocks", "0"),
                ("GNU.sparse.size", "9"),
            ])
            .header(h("f"))
            .end(),
    );
    assert_eq!(e.size, 9);
    let e = only_entry(
        &Archive::new()
            .x(&[("GNU.sparse.numblocks", "0"), ("GNU.sparse.size", "9")])
            .header(h("f"))
            .end(),
    );
    assert_eq!(e.size, 0);
}
