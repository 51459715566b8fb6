//! Header blocks: checksums, numeric fields, the USTAR/GNU/STAR layouts and prefixes, typeflags
//! and the data length they imply (vectors of `go-tar-semantics.md` §15).

use super::*;
use crate::tar::test_support::*;
use crate::tar::*;

#[test]
fn checksum_of_eight_spaces_is_rejected() {
    let bytes = vector1().raw(&[0; 0]).0;
    let mut block: [u8; BLOCK_SIZE] = bytes[..BLOCK_SIZE].try_into().expect("block");
    block[148..156].copy_from_slice(b"        ");
    assert_eq!(block_kind(&block), None);
}

#[test]
fn v07_bad_checksum() {
    let outcome = run(&Archive::new()
        .header(h("a").raw_checksum(b"0000000\0"))
        .end());
    assert!(outcome.0.is_empty());
    assert!(is_header_error(&outcome));
}

#[test]
fn v08_signed_checksum_and_raw_name() {
    let name = b"\xe9\xe9\xe9.txt";
    let e = only_entry(
        &Archive::new()
            .header(HeaderBlock::ustar().name(name).signed_checksum())
            .end(),
    );
    assert_eq!(e.name, name);
    assert_eq!(e.format, Format::Unknown);
}

#[test]
fn v09_lenient_octal() {
    let header = h("a")
        .set(100, b"  644 \0\0")
        .set(108, b"\0\0 12 \0 ")
        .set(124, b" 5          ")
        .set(136, b"\0 1234567\0 \0");
    let e = only_entry(&Archive::new().header(header).data(b"hello").end());
    assert_eq!((e.mode, e.uid, e.size), (0o644, 0o12, 5));
    assert_eq!(e.mod_time_text(), "1970-01-04T23:06:31Z");
    assert_eq!(e.format, Format::Unknown);
}

#[test]
fn v10_bad_numbers() {
    for header in [
        h("a").set(100, b"64 4\0\0\0\0"),
        h("a").set(100, b"0000648\0"),
        h("a").set(100, b"+0000644"),
        h("a").field(329, 8, b"zz"),
        h("a").field(337, 8, b"zz"),
        h("a").set(108, b"0x000001"),
        h("a").set(136, b"9999999999\0\0"),
    ] {
        let outcome = run(&Archive::new().header(header).end());
        assert!(outcome.0.is_empty());
        assert!(is_header_error(&outcome), "{:?}", outcome.1);
    }
}

#[test]
fn v11_v7_ignores_ustar_fields() {
    let header = h("a").field(257, 8, b"").field(329, 8, b"zz");
    let e = only_entry(&Archive::new().header(header).end());
    assert!(e.uname.is_empty() && e.gname.is_empty());
    assert_eq!((e.devmajor, e.format), (0, Format::Unknown));
}

#[test]
fn v12_base256_fields() {
    let header = h("a")
        .set(124, &base256(12, 5))
        .set(108, &base256(8, 3_000_000))
        .set(136, &[0xff; 12]);
    let e = only_entry(&Archive::new().header(header).data(b"hello").end());
    assert_eq!((e.size, e.uid), (5, 3_000_000));
    assert_eq!(e.mod_time_text(), "1969-12-31T23:59:59Z");
    // A base-256 field does not end in NUL: not strict USTAR.
    assert_eq!(e.format, Format::Unknown);
}

#[test]
fn v13_mtime_beyond_year_9999() {
    let e = only_entry(
        &Archive::new()
            .header(h("a").set(136, &base256(12, 253_402_300_800)))
            .end(),
    );
    assert_eq!(e.mod_time, GoTime::unix(253_402_300_800, 0));
    assert_eq!(e.mod_time.marshal_text(), None);
    assert_eq!(e.mod_time_text(), "");
}

#[test]
fn v14_negative_size() {
    let outcome = run(&Archive::new().header(h("a").set(124, &[0xff; 12])).end());
    assert!(outcome.0.is_empty() && is_header_error(&outcome));
    let dir = h("d/").typeflag(b'5').set(124, &[0xff; 12]);
    let (entries, end) = run(&Archive::new().header(dir).end());
    assert_eq!(
        summary(&entries[0]),
        (s("d/"), '5', -1, 512, s(EPOCH), Format::Unknown)
    );
    assert_eq!(end, Ok(1536));
    // TypeRegA is checked against the raw size before it becomes a directory.
    let rega = h("d/").typeflag(0).set(124, &[0xff; 12]);
    assert!(is_header_error(&run(&Archive::new().header(rega).end())));
}

#[test]
fn v18_other_typeflags_returned_as_is() {
    let flags = b"7VMNDAZQ";
    let mut archive = Archive::new();
    for &flag in flags {
        archive = archive.header(h("t").typeflag(flag).size(3)).data(b"abc");
    }
    let (entries, end) = run(&archive.end());
    assert_eq!(entries.len(), flags.len());
    for (i, (entry, &flag)) in entries.iter().zip(flags).enumerate() {
        assert_eq!((entry.typeflag, entry.size), (flag, 3));
        assert_eq!(entry.data_offset, 512 + 1024 * i as u64);
    }
    assert_eq!(end, Ok(1024 * flags.len() as u64 + 1024));
}

#[test]
fn v30_ustar_prefix() {
    let long_prefix = [b'a'; 155];
    let bytes = Archive::new()
        .header(h("").prefix(b"pre"))
        .header(h("n").prefix(b"pre/"))
        .header(h("n").prefix(&long_prefix))
        .end();
    let (entries, _) = run(&bytes);
    let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
    let mut expected_long = long_prefix.to_vec();
    expected_long.extend_from_slice(b"/n");
    assert_eq!(names, [&b"pre/"[..], b"pre//n", &expected_long]);
}

#[test]
fn v31_gnu_atime_fallback_to_prefix() {
    let e = only_entry(
        &Archive::new()
            .header(HeaderBlock::gnu().name(b"n").set(345, b"pre/fix\0"))
            .end(),
    );
    assert_eq!(
        summary(&e),
        (s("pre/fix/n"), '0', 0, 512, s(EPOCH), Format::Unknown)
    );
    // A non-ASCII would-be prefix is dropped.
    let e = only_entry(
        &Archive::new()
            .header(HeaderBlock::gnu().name(b"n").set(345, b"pr\xe9\0"))
            .end(),
    );
    assert_eq!((e.name.as_slice(), e.format), (&b"n"[..], Format::Unknown));
    // Valid GNU atime/ctime: no prefix, GNU format.
    let valid = HeaderBlock::gnu()
        .name(b"n")
        .set(345, b"00000000144\0")
        .set(357, b"00000000310\0");
    let e = only_entry(&Archive::new().header(valid).end());
    assert_eq!((e.name.as_slice(), e.format), (&b"n"[..], Format::Gnu));
}

#[test]
fn v32_star_header() {
    let star = h("n")
        .set(508, b"tar\0")
        .field(345, 131, b"starprefix")
        .set(476, b"00000000144\0")
        .set(488, b"00000000310\0");
    let e = only_entry(&Archive::new().header(star).end());
    assert_eq!(
        summary(&e),
        (s("starprefix/n"), '0', 0, 512, s(EPOCH), Format::Unknown)
    );
    // STAR atime parse errors are fatal.
    let bad = h("n").set(508, b"tar\0").set(476, b"zz");
    assert!(is_header_error(&run(&Archive::new().header(bad).end())));
}

#[test]
fn v34_symlink_size_owns_no_data() {
    let bytes = Archive::new()
        .header(h("l").typeflag(b'2').size(600))
        .header(h("after"))
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("l"), '2', 600, 512, s(EPOCH), Format::Ustar)
    );
    assert_eq!(entries[1].data_offset, 1024);
    assert_eq!(end, Ok(2048));
}

#[test]
fn v35_hardlink_with_data() {
    let outcome = run(&Archive::new()
        .header(h("k").typeflag(b'1').size(5))
        .data(b"hello")
        .end());
    assert_eq!(outcome.0.len(), 1);
    assert_eq!((outcome.0[0].typeflag, outcome.0[0].size), (b'1', 5));
    assert!(is_header_error(&outcome));
}

#[test]
fn v36_gnu_magic_with_ustar_version_is_v7() {
    let e = only_entry(
        &Archive::new()
            .header(h("n").set(257, b"ustar ").set(263, b"00"))
            .end(),
    );
    assert!(e.uname.is_empty());
    assert_eq!(e.format, Format::Unknown);
}
