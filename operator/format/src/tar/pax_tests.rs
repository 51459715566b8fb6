//! PAX records: their grammar, how they merge onto the entry, `'x'` and `'g'` entries.

use super::*;
use crate::tar::test_support::*;
use crate::tar::*;

#[test]
fn v19_pax_merge() {
    let list = [
        ("path", ""),
        ("uid", "4294967296"),
        ("gid", "-5"),
        ("uname", "ü"),
        ("gname", ""),
        ("mtime", "1.1234567891"),
        ("atime", "-1.5"),
        ("ctime", "-0.5"),
        ("size", "3"),
        ("SCHILY.xattr.user.a", "v\0x"),
        ("LIBARCHIVE.creationtime", "12"),
        ("comment", "c"),
        ("linkpath", "L"),
    ];
    let bytes = Archive::new()
        .x(&list)
        .header(h("ustarname").size(99))
        .data(b"abc")
        .end();
    let (entries, end) = run(&bytes);
    let e = &entries[0];
    assert_eq!(
        summary(e),
        (
            s("ustarname"),
            '0',
            3,
            1536,
            s("1970-01-01T00:00:01.123456789Z"),
            Format::Pax
        )
    );
    assert_eq!(e.linkname, b"L");
    assert_eq!((e.uid, e.gid), (4_294_967_296, -5));
    assert_eq!(
        (e.uname.as_slice(), e.gname.as_slice()),
        ("ü".as_bytes(), &b"root"[..])
    );
    assert_eq!(e.pax_records, Some(pax_map(&list)));
    // Data is the PAX size (3 bytes), not the header's 99.
    assert_eq!(end, Ok(3072));
}

#[test]
fn v20_bad_pax_records() {
    let raw_x = |data: &[u8]| {
        Archive::new()
            .meta(HeaderBlock::ustar(), b'x', data)
            .header(h("f"))
            .end()
    };
    for bytes in [
        raw_x(b"5 a=b\n"),
        raw_x(b"6 abc\n"),
        raw_x(b"7 =abc\n"),
        raw_x(b"11 path=p\n\0\0\0"),
        raw_x(&record(b"path", b"a\0b")),
        raw_x(&record(b"ke\0y", b"v")),
        raw_x(b" 9 a=bc\n"),
        raw_x(b"3 a\n"),
        raw_x(b"abc"),
        raw_x(b"100 a=b\n"),
        raw_x(&records(&[("mtime", "1.5e3")])),
        raw_x(&records(&[("uid", "abc")])),
        raw_x(&records(&[("gid", "1 ")])),
        raw_x(&records(&[("atime", "x")])),
        raw_x(&records(&[("size", "-1")])),
    ] {
        let outcome = run(&bytes);
        assert!(outcome.0.is_empty());
        assert!(is_header_error(&outcome), "{:?}", outcome.1);
    }
}

#[test]
fn pax_record_grammar_accepts() {
    for (data, key, value) in [
        (&b"0012 path=p\n"[..], &b"path"[..], &b"p"[..]),
        (b"+11 path=p\n", b"path", b"p"),
        (b"7 a=b\n\n", b"a", b"b\n"),
        (b"8 a=b=c\n", b"a", b"b=c"),
        (b"8 a=\0\0\0\n", b"a", b"\0\0\0"),
    ] {
        assert_eq!(
            parse_pax(data),
            Ok(BTreeMap::from([(key.to_vec(), value.to_vec())]))
        );
    }
    assert_eq!(parse_pax(b""), Ok(PaxRecords::new()));
}

#[test]
fn v21_last_duplicate_wins() {
    let e = only_entry(
        &Archive::new()
            .x(&[("path", "first"), ("path", "second")])
            .header(h("f"))
            .end(),
    );
    assert_eq!(e.name, b"second");
}

#[test]
fn v22_header_only_type_with_pax_size() {
    let bytes = Archive::new()
        .x(&[("size", "100")])
        .header(h("d/").typeflag(b'5'))
        .header(h("next"))
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(
        summary(&entries[0]),
        (s("d/"), '5', 100, 1536, s(EPOCH), Format::Pax)
    );
    assert_eq!(
        summary(&entries[1]),
        (s("next"), '0', 0, 2048, s(EPOCH), Format::Ustar)
    );
    assert_eq!(end, Ok(3072));
}

#[test]
fn v23_empty_value_kept_but_not_applied() {
    let e = only_entry(
        &Archive::new()
            .x(&[("mtime", "")])
            .header(h("f").mtime(1234))
            .end(),
    );
    assert_eq!(e.mod_time_text(), "1970-01-01T00:20:34Z");
    assert_eq!(e.pax_records, Some(pax_map(&[("mtime", "")])));
}

#[test]
fn v24_second_x_replaces_first() {
    let bytes = Archive::new()
        .x(&[("path", "one"), ("uname", "u1")])
        .x(&[("path", "two")])
        .header(h("f"))
        .end();
    let e = only_entry(&bytes);
    assert_eq!(
        (e.name.as_slice(), e.uname.as_slice()),
        (&b"two"[..], &b"root"[..])
    );
    assert_eq!(e.pax_records, Some(pax_map(&[("path", "two")])));
    assert_eq!(e.data_offset, 2560);
}

#[test]
fn v25_x_then_end() {
    let (entries, end) = run(&Archive::new().x(&[("path", "one")]).end());
    assert!(entries.is_empty());
    assert_eq!(end, Ok(2048));
}

#[test]
fn v28_global_header_is_returned() {
    let list = [
        ("path", "gpath"),
        ("mtime", "5"),
        ("comment", "hi"),
        ("SCHILY.xattr.user.x", "y"),
    ];
    let bytes = Archive::new()
        .meta(HeaderBlock::ustar().mode_and_owner(), b'g', &records(&list))
        .header(h("f"))
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(entries.len(), 2);
    let g = &entries[0];
    assert_eq!(
        summary(g),
        (
            s("gpath"),
            'g',
            0,
            576,
            s("0001-01-01T00:00:00Z"),
            Format::Pax
        )
    );
    assert!(g.mod_time.is_zero());
    assert_eq!((g.mode, g.uid, g.gid, g.devmajor), (0, 0, 0, 0));
    assert!(g.uname.is_empty() && g.gname.is_empty() && g.linkname.is_empty());
    assert_eq!(g.pax_records, Some(pax_map(&list)));
    assert_eq!(
        summary(&entries[1]),
        (s("f"), '0', 0, 1536, s(EPOCH), Format::Ustar)
    );
    assert_eq!(
        entries[1].pax_records, None,
        "global records are not applied"
    );
    assert_eq!(end, Ok(2560));
}

impl HeaderBlock {
    /// Non-zero mode and owner, to show a 'g' entry drops them.
    fn mode_and_owner(self) -> Self {
        self.set(100, b"0000755\0")
            .set(108, b"0000001\0")
            .set(116, b"0000002\0")
    }
}

#[test]
fn global_header_with_bad_record_value_drops_records() {
    // mtime fails to merge before path is reached (key order): name stays, records dropped.
    let bytes = Archive::new()
        .meta(
            HeaderBlock::ustar().name(b"pax_global_header"),
            b'g',
            &records(&[("mtime", "x"), ("path", "p")]),
        )
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(entries[0].name, b"pax_global_header");
    assert_eq!(entries[0].pax_records, None);
    assert_eq!(end, Ok(2048));
}

#[test]
fn v29_global_header_discards_pending_x() {
    let bytes = Archive::new()
        .x(&[("path", "xpath")])
        .meta(HeaderBlock::ustar(), b'g', &records(&[("comment", "g")]))
        .header(h("f"))
        .end();
    let (entries, end) = run(&bytes);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].typeflag, b'g');
    assert_eq!(entries[0].pax_records, Some(pax_map(&[("comment", "g")])));
    assert_eq!(
        summary(&entries[1]),
        (s("f"), '0', 0, 2560, s(EPOCH), Format::Ustar)
    );
    assert_eq!(entries[1].pax_records, None);
    assert_eq!(end, Ok(3584));
}

#[test]
fn v45_header_only_type_with_negative_pax_size() {
    let e = only_entry(
        &Archive::new()
            .x(&[("size", "-7")])
            .header(h("l").typeflag(b'2'))
            .end(),
    );
    assert_eq!((e.typeflag, e.size, e.data_offset), (b'2', -7, 1536));
}

#[test]
fn worked_example_git_archive() {
    let comment = records(&[("comment", "0123456789abcdef0123456789abcdef01234567")]);
    assert_eq!(comment.len(), 52);
    let bytes = Archive::new()
        .meta(
            HeaderBlock::ustar().name(b"pax_global_header"),
            b'g',
            &comment,
        )
        .x(&[("path", "a/very/long/path")])
        .header(h("a/very/long"))
        .end();
    let (entries, _) = run(&bytes);
    assert_eq!(summary(&entries[0]).3, 564);
    assert_eq!(entries[0].name, b"pax_global_header");
    assert_eq!(
        (entries[1].name.as_slice(), entries[1].data_offset),
        (&b"a/very/long/path"[..], 2560)
    );
}
