//! The push-driven reader: entry offsets and the end of the archive, TypeRegA, GNU long names,
//! the meta entry limit, sticky errors, and chunking invariance under mutation.

use crate::tar::test_support::*;
use crate::tar::*;

#[test]
fn v01_simple_file_then_single_zero_block() {
    let (entries, end) = run(&vector1().0);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        summary(&entries[0]),
        (s("a.txt"), '0', 5, 512, s(EPOCH), Format::Ustar)
    );
    let e = &entries[0];
    assert_eq!((e.mode, e.uid, e.gid), (0o644, 0, 0));
    assert_eq!(
        (e.uname.as_slice(), e.gname.as_slice()),
        (&b"root"[..], &b"root"[..])
    );
    assert_eq!(
        (e.devmajor, e.devminor, e.pax_records.as_ref()),
        (0, 0, None)
    );
    assert_eq!(end, Ok(1536));
}

#[test]
fn v02_zero_block_then_garbage() {
    let outcome = run(&vector1().raw(&[1; BLOCK_SIZE]).0);
    assert_eq!(outcome.0.len(), 1);
    assert!(is_header_error(&outcome), "{:?}", outcome.1);
}

#[test]
fn v03_two_zero_blocks_stop_reading() {
    let (entries, end) = run(&vector1().zero().raw(b"garbage that is never read").0);
    assert_eq!(entries.len(), 1);
    assert_eq!(end, Ok(2048));
}

#[test]
fn v04_end_inside_padding() {
    let (entries, end) = run(&Archive::new()
        .header(h("a").size(5))
        .raw(b"hello")
        .raw(&[0; 10])
        .0);
    assert_eq!(entries.len(), 1);
    assert_eq!(end, Ok(527));
}

#[test]
fn v05_end_inside_data() {
    let (entries, end) = run(&Archive::new().header(h("a").size(5)).raw(b"hel").0);
    assert_eq!(entries.len(), 1);
    assert_eq!(end, Err(TarError::UnexpectedEof));
}

#[test]
fn v06_partial_header() {
    let bytes = Archive::new()
        .header(h("a.txt").size(5))
        .data(b"hello")
        .raw(&[0; 100])
        .0;
    let (entries, end) = run(&bytes);
    assert_eq!(entries.len(), 1);
    assert_eq!(end, Err(TarError::UnexpectedEof));
}

#[test]
fn v15_type_reg_a() {
    let bytes = Archive::new()
        .header(h("d/").typeflag(0))
        .header(h("f").typeflag(0).size(5))
        .data(b"hello")
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("d/"), '5', 0, 512, s(EPOCH), Format::Ustar)
    );
    assert_eq!(
        summary(&entries[1]),
        (s("f"), '0', 5, 1024, s(EPOCH), Format::Ustar)
    );
    assert_eq!(end, Ok(2560));
}

#[test]
fn v16_type_reg_a_sees_pax_path() {
    let e = only_entry(
        &Archive::new()
            .x(&[("path", "dd/")])
            .header(h("ff").typeflag(0))
            .end(),
    );
    assert_eq!(summary(&e), (s("dd/"), '5', 0, 1536, s(EPOCH), Format::Pax));
    assert_eq!(e.pax_records, Some(pax_map(&[("path", "dd/")])));
}

#[test]
fn v17_type_reg_a_sees_gnu_long_name() {
    let bytes = Archive::new()
        .meta(HeaderBlock::gnu(), b'L', b"ld/\0")
        .header(HeaderBlock::gnu().name(b"x").typeflag(0))
        .end();
    let e = only_entry(&bytes);
    assert_eq!(summary(&e), (s("ld/"), '5', 0, 1536, s(EPOCH), Format::Gnu));
}

#[test]
fn v26_long_name_cut_at_first_nul() {
    let bytes = Archive::new()
        .meta(HeaderBlock::gnu(), b'L', b"long\0\0junk\0\0")
        .header(HeaderBlock::gnu().name(b"short"))
        .end();
    assert_eq!(only_entry(&bytes).name, b"long");
}

#[test]
fn v27_long_name_beats_pax_path() {
    let l_then_x = Archive::new()
        .meta(HeaderBlock::gnu(), b'L', b"lname\0")
        .x(&[("path", "pname")])
        .header(h("short"))
        .end();
    let x_then_l = Archive::new()
        .x(&[("path", "pname")])
        .meta(HeaderBlock::gnu(), b'L', b"lname\0")
        .header(h("short"))
        .end();
    for bytes in [l_then_x, x_then_l] {
        let e = only_entry(&bytes);
        assert_eq!(
            summary(&e),
            (s("lname"), '0', 0, 2560, s(EPOCH), Format::Unknown)
        );
        assert_eq!(e.pax_records, Some(pax_map(&[("path", "pname")])));
    }
}

#[test]
fn v33_meta_entry_size_limit() {
    let value = vec![b'a'; MAX_SPECIAL_FILE_SIZE - 17];
    let exactly = record(b"comment", &value);
    assert_eq!(exactly.len(), MAX_SPECIAL_FILE_SIZE);
    let bytes = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &exactly)
        .header(h("f"))
        .end();
    let e = only_entry(&bytes);
    assert_eq!(e.data_offset, 512 + MAX_SPECIAL_FILE_SIZE as u64 + 512);

    let too_long = vec![b'a'; MAX_SPECIAL_FILE_SIZE + 1];
    let bytes = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &too_long)
        .header(h("f"))
        .end();
    assert_eq!(run(&bytes).1, Err(TarError::FieldTooLong));
    // A declared size far beyond the limit also fails once 1 MiB + 1 bytes are there…
    let huge_long_name = || HeaderBlock::ustar().typeflag(b'L').size(1 << 33);
    let bytes = Archive::new().header(huge_long_name()).raw(&too_long).0;
    assert_eq!(run(&bytes).1, Err(TarError::FieldTooLong));
    // …and is cut short before that.
    let bytes = Archive::new()
        .header(huge_long_name())
        .raw(&too_long[..1000])
        .0;
    assert_eq!(run(&bytes).1, Err(TarError::UnexpectedEof));
}

#[test]
fn v46_type_reg_a_directory_with_data() {
    let outcome = run(&Archive::new()
        .header(h("d/").typeflag(0).size(5))
        .data(b"hello")
        .end());
    assert_eq!(outcome.0.len(), 1);
    assert_eq!(
        summary(&outcome.0[0]),
        (s("d/"), '5', 5, 512, s(EPOCH), Format::Ustar)
    );
    assert!(is_header_error(&outcome));
}

#[test]
fn worked_example_gnu_long_name() {
    let name = vec![b'n'; 127];
    let mut data = name.clone();
    data.push(0);
    let bytes = Archive::new()
        .header(HeaderBlock::gnu().name(b"./").typeflag(b'5'))
        .meta(HeaderBlock::gnu().name(b"././@LongLink"), b'L', &data)
        .header(HeaderBlock::gnu().name(&name[..100]))
        .end();
    let (entries, _) = run(&bytes);
    assert_eq!(entries[0].data_offset, 512);
    assert_eq!(
        (entries[1].name.clone(), entries[1].data_offset),
        (name, 512 + 1536)
    );
    assert_eq!(entries[1].format, Format::Gnu);
}

#[test]
fn long_name_and_link_replacement() {
    let bytes = Archive::new()
        .meta(HeaderBlock::gnu(), b'L', b"first\0")
        .meta(HeaderBlock::gnu(), b'L', b"")
        .meta(HeaderBlock::gnu(), b'K', b"target")
        .header(
            HeaderBlock::gnu()
                .name(b"short")
                .linkname(b"old")
                .typeflag(b'2'),
        )
        .end();
    let e = only_entry(&bytes);
    // An empty 'L' replaces the earlier one, and an empty name is not applied.
    assert_eq!(
        (e.name.as_slice(), e.linkname.as_slice()),
        (&b"short"[..], &b"target"[..])
    );
    assert_eq!(e.data_offset, 3072);
}

#[test]
fn end_of_archive_table() {
    assert_eq!(run(b""), (vec![], Ok(0)));
    assert_eq!(run(&[0; 100]).1, Err(TarError::UnexpectedEof));
    assert_eq!(run(&[0; BLOCK_SIZE]).1, Ok(512));
    assert_eq!(run(&[0; BLOCK_SIZE + 1]).1, Err(TarError::UnexpectedEof));
    assert_eq!(run(&[0; 3 * BLOCK_SIZE]).1, Ok(1024));
    // End right after data with no padding needed, and right after a header.
    assert_eq!(
        run(&Archive::new().header(h("a").size(512)).data(&[7; 512]).0).1,
        Ok(1024)
    );
    assert_eq!(run(&Archive::new().header(h("a")).0).1, Ok(512));
    // End inside meta data, and after an 'L' (its name vanishes).
    let cut_meta = Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &records(&[("path", "p")]))
        .0;
    assert_eq!(run(&cut_meta[..520]).1, Err(TarError::UnexpectedEof));
    assert_eq!(run(&cut_meta[..530]).1, Ok(530));
    assert_eq!(run(&cut_meta).1, Ok(1024));
}

#[test]
fn callback_error_aborts_and_sticks() {
    let bytes = Archive::new().header(h("a")).header(h("b")).end();
    let mut tar = TarStreamReader::new();
    let mut seen = 0;
    let abort = TarError::Aborted("stop".into());
    let result = tar.push(&bytes, &mut |_| {
        seen += 1;
        Err(TarError::Aborted("stop".into()))
    });
    assert_eq!((result, seen), (Err(abort.clone()), 1));
    assert!(tar.is_done());
    assert_eq!(tar.push(&bytes, &mut |_| Ok(())), Err(abort.clone()));
    assert_eq!(tar.finish(), Err(abort));
    assert_eq!(tar.position(), 512);
}

#[test]
fn bytes_after_the_end_are_ignored() {
    let mut tar = TarStreamReader::new();
    tar.push(&[0; 1024], &mut |_| Ok(())).expect("zero blocks");
    assert!(tar.is_done());
    tar.push(b"trailing garbage", &mut |_| panic!("no entries"))
        .expect("ignored");
    assert_eq!((tar.position(), tar.finish()), (1024, Ok(1024)));
    assert_eq!(read_all(&[0u8; 10240][..]), Ok((vec![], 1024)));
}

/// Seeds for mutation: a mix of every kind of entry.
fn corpus() -> Vec<Vec<u8>> {
    let fragments: Vec<(i64, i64)> = (0..30).map(|i| (i * 1024, 512)).collect();
    vec![
        vector1().zero().0,
        Archive::new()
            .x(&[("path", "dd/"), ("size", "7"), ("mtime", "-1.5")])
            .header(h("ff").typeflag(0))
            .data(b"1234567")
            .end(),
        Archive::new()
            .meta(HeaderBlock::gnu(), b'L', b"long\0")
            .meta(HeaderBlock::gnu(), b'K', b"link\0")
            .header(HeaderBlock::gnu().typeflag(b'2'))
            .end(),
        Archive::new()
            .meta(HeaderBlock::ustar(), b'g', &records(&[("comment", "c")]))
            .header(h("f").size(3))
            .data(b"abc")
            .end(),
        old_gnu_sparse(&fragments, 30 * 1024, 30 * 512)
            .data(&vec![1; 30 * 512])
            .end(),
        sparse_1_0(b"1\n2\n3\n", 515).data(b"").data(b"abc").end(),
        Archive::new()
            .x(&[
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.offset", "2"),
                ("GNU.sparse.numbytes", "3"),
                ("GNU.sparse.size", "10"),
            ])
            .header(h("f").size(3))
            .data(b"abc")
            .end(),
        Archive::new()
            .header(h("n").set(508, b"tar\0").field(345, 131, b"p"))
            .header(h("d/").typeflag(0))
            .end(),
    ]
}

fn fix_checksum(bytes: &mut [u8], block_index: usize) {
    let start = block_index * BLOCK_SIZE;
    let Some(slice) = bytes.get_mut(start..start + BLOCK_SIZE) else {
        return;
    };
    let block: &mut [u8; BLOCK_SIZE] = slice.try_into().expect("block");
    let (unsigned, _) = checksums(block);
    block[148..156].copy_from_slice(format!("{unsigned:06o}\0 ").as_bytes());
}

#[test]
fn mutated_archives_never_panic_and_are_chunking_invariant() {
    const INTERESTING: &[u8] = b"\0 0179\n=.,-+xgLKS5\x80\xff";
    let corpus = corpus();
    let mut lcg = Lcg(0xDEC0DE);
    for iteration in 0..2000 {
        let mut bytes = corpus[lcg.below(corpus.len())].clone();
        for _ in 0..1 + lcg.below(8) {
            if bytes.is_empty() {
                break;
            }
            let at = lcg.below(bytes.len());
            match lcg.below(6) {
                0 => bytes[at] = lcg.next() as u8,
                1 => bytes[at] = INTERESTING[lcg.below(INTERESTING.len())],
                2 => bytes.truncate(at),
                3 => {
                    // Rewrite a numeric-looking field with random octal digits.
                    let digits = format!("{:o}", lcg.next());
                    let end = (at + digits.len()).min(bytes.len());
                    bytes[at..end].copy_from_slice(&digits.as_bytes()[..end - at]);
                }
                4 => {
                    let block = at / BLOCK_SIZE * BLOCK_SIZE;
                    let end = (block + BLOCK_SIZE).min(bytes.len());
                    let copy = bytes[block..end].to_vec();
                    bytes.splice(block..block, copy);
                }
                _ => bytes.insert(at, lcg.next() as u8),
            }
            // Let most mutations get past the checksum.
            if lcg.below(4) != 0 {
                fix_checksum(&mut bytes, at / BLOCK_SIZE);
            }
        }
        let whole = feed(&bytes, || usize::MAX);
        let chunked = feed_random_chunks(&bytes, iteration);
        assert_eq!(whole, chunked, "iteration {iteration}");
    }
}
