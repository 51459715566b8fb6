//! `corpus`: deterministic conversion cases (OCI layouts + `convert` flags + expected outcome).
//!
//! [`corpus`] returns every case for a [`Scale`]. A case's `write` closure creates the input layout
//! in an empty or absent directory; `convert_args` are the flags passed to *both* converters
//! (upstream `soci convert --standalone --format oci-dir ARGS SRC DST` and
//! `soci-operator convert oci:SRC oci:DST ARGS`); `expect` says how the outputs must relate.
//!
//! Most cases pass `--min-layer-size 0` (and often `--span-size 65536`) so small layers get zTOCs
//! with several checkpoints cheaply; `default-flags-10mib-layer` exercises the defaults.
//! Everything is deterministic: fixed seeds ([`crate::data`]), fixed mtimes, gzip mtime 0.
//! `Scale::Quick` writes well under 60 MiB in total; `Scale::Full` adds larger layers.

use crate::compress::{Encoding, GzHeader};
use crate::data;
use crate::layout::{Descriptor, Flavor, Image, JsonStyle, Layer, Layout, mt};
use crate::tarw::{Entry, Header, Kind, NumEnc, Style, TarBuilder, Time};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Corpus size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Small and fast (a few seconds of upstream time per case at most).
    Quick,
    /// Quick plus large layers (tens of MiB, 60 000 files).
    Full,
}

/// How our output must relate to upstream's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Byte-identical converted image (see `oracle::compare_layouts`).
    Identical,
    /// Upstream records a zero-length span (two checkpoints at uncompressed offset 0) for a gzip
    /// stream with a block boundary before any output — one that starts with an empty (sync-flush)
    /// block, or an empty first member; the structure must match, zTOC bytes may differ (see
    /// `oracle::check_sync_flush_divergence`).
    SyncFlushDivergence,
    /// Upstream exits non-zero; ours must fail too.
    UpstreamFails,
}

/// Writes a case's input layout into the given directory.
pub type WriteFn = Box<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// One conversion case.
pub struct CorpusCase {
    pub name: String,
    /// One line on what the case exercises.
    pub about: String,
    pub write: WriteFn,
    pub convert_args: Vec<String>,
    pub expect: Expect,
}

impl std::fmt::Debug for CorpusCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusCase")
            .field("name", &self.name)
            .field("convert_args", &self.convert_args)
            .field("expect", &self.expect)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

const MT: i64 = 1_700_000_000;
const M0: &[&str] = &["--min-layer-size", "0"];
const M0S64: &[&str] = &["--min-layer-size", "0", "--span-size", "65536"];

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn tar(style: Style, entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut t = TarBuilder::new();
    t.append_all(entries, style)?;
    Ok(t.finish(false))
}

fn tar_padded(style: Style, entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut t = TarBuilder::new();
    t.append_all(entries, style)?;
    Ok(t.finish(true))
}

fn gz(tar: &[u8]) -> Layer {
    Layer::new(mt::OCI_LAYER_GZIP, tar, &Encoding::Gzip(6))
}

fn gz_docker(tar: &[u8]) -> Layer {
    Layer::new(mt::DOCKER_LAYER_GZIP, tar, &Encoding::Gzip(6))
}

/// A small root filesystem: dirs, text/binary/mixed files, an empty file, a symlink and a hard
/// link; `size` scales the file contents. Names follow `prefix` (`""` or `"./"`).
fn rootfs(seed: u64, size: usize, prefix: &str) -> Vec<Entry> {
    let p = |s: &str| format!("{prefix}{s}");
    vec![
        Entry::dir(p("bin/")).mtime(MT),
        Entry::dir(p("etc/")).mtime(MT),
        Entry::file(p("etc/hostname"), b"soci-testkit\n".to_vec()),
        Entry::file(p("etc/passwd"), data::text(seed, 1500)).mode(0o644),
        Entry::file(p("etc/shadow"), data::text(seed + 1, 700))
            .mode(0o640)
            .owner(0, 42, "root", "shadow"),
        Entry::dir(p("usr/")),
        Entry::dir(p("usr/lib/")),
        Entry::file(p("usr/lib/libfoo.so.1"), data::random(seed + 2, size / 4)).mode(0o755),
        Entry::dir(p("usr/share/")),
        Entry::dir(p("usr/share/doc/")),
        Entry::file(p("usr/share/doc/README"), data::text(seed + 3, size / 2)),
        Entry::file(p("bin/busybox"), data::mixed(seed + 4, size / 4)).mode(0o755),
        Entry::symlink(p("bin/sh"), "busybox"),
        Entry::hardlink(p("bin/ash"), p("bin/busybox")),
        Entry::dir(p("var/")),
        Entry::dir(p("var/log/")).owner(1000, 1000, "app", "app"),
        Entry::file(p("var/log/empty.log"), Vec::new()).owner(1000, 1000, "app", "app"),
        Entry::dir(p("tmp/")).mode(0o1777),
    ]
}

/// Write a single-platform image; `index.json` lists its manifest (no platform) with a ref name.
fn write_single(dir: &Path, flavor: Flavor, platform: &str, layers: Vec<Layer>) -> io::Result<()> {
    let lay = Layout::create(dir)?;
    let mut d = lay.add_image(&Image::new(flavor, platform, layers))?;
    d.platform = None;
    lay.write_index_json(&[d], Some("latest"))
}

fn case(
    name: &str,
    about: &str,
    convert_args: &[&str],
    expect: Expect,
    write: impl Fn(&Path) -> io::Result<()> + Send + Sync + 'static,
) -> CorpusCase {
    CorpusCase {
        name: name.into(),
        about: about.into(),
        write: Box::new(write),
        convert_args: args(convert_args),
        expect,
    }
}

/// A single-platform OCI (linux/amd64) case whose layers come from `layers`.
fn single(
    name: &str,
    about: &str,
    convert_args: &[&str],
    expect: Expect,
    layers: impl Fn() -> io::Result<Vec<Layer>> + Send + Sync + 'static,
) -> CorpusCase {
    case(name, about, convert_args, expect, move |d| {
        write_single(d, Flavor::Oci, "linux/amd64", layers()?)
    })
}

/// Multi-platform image options.
#[derive(Clone)]
struct Multi {
    flavor: Flavor,
    platforms: Vec<&'static str>,
    attestations: bool,
    /// Platforms whose manifest blob is deleted (a partial pull).
    missing: Vec<&'static str>,
    /// `index.json` lists the platform manifests directly (go-containerregistry `layout.Write`).
    flat: bool,
}

fn write_multi(dir: &Path, m: &Multi) -> io::Result<()> {
    let lay = Layout::create(dir)?;
    // A base layer shared by every platform, then one per platform.
    let shared = tar(Style::GoDefault, &rootfs(900, 120_000, ""))?;
    let mut descs: Vec<Descriptor> = Vec::new();
    for (i, p) in m.platforms.iter().enumerate() {
        let own = tar(
            Style::GoDefault,
            &[
                Entry::dir("app/"),
                Entry::file(
                    format!("app/{}.bin", p.replace('/', "-")),
                    data::mixed(100 + i as u64, 150_000),
                )
                .mode(0o755),
                Entry::file(
                    "app/config.json",
                    format!("{{\"platform\":\"{p}\"}}\n").into_bytes(),
                ),
            ],
        )?;
        let (lm, cfg_flavor) = match m.flavor {
            Flavor::Oci => (mt::OCI_LAYER_GZIP, Flavor::Oci),
            Flavor::Docker => (mt::DOCKER_LAYER_GZIP, Flavor::Docker),
        };
        let layers = vec![
            Layer::new(lm, &shared, &Encoding::Gzip(6)),
            Layer::new(lm, &own, &Encoding::Gzip(6)),
        ];
        descs.push(lay.add_image(&Image::new(cfg_flavor, p, layers))?);
    }
    let mut entries = descs.clone();
    if m.attestations {
        for d in &descs {
            entries.push(lay.add_attestation(d)?);
        }
    }
    for (p, d) in m.platforms.iter().zip(&descs) {
        if m.missing.contains(p) {
            lay.remove_blob(&d.digest)?;
        }
    }
    if m.flat {
        lay.write_index_json(&entries, None)
    } else {
        let idx = lay.add_index(m.flavor, &entries, JsonStyle::Compact)?;
        lay.write_index_json(&[idx], Some("latest"))
    }
}

fn multi(name: &str, about: &str, convert_args: &[&str], expect: Expect, m: Multi) -> CorpusCase {
    case(name, about, convert_args, expect, move |d| {
        write_multi(d, &m)
    })
}

fn std_multi() -> Multi {
    Multi {
        flavor: Flavor::Oci,
        platforms: vec!["linux/amd64", "linux/arm64/v8", "linux/arm/v7"],
        attestations: true,
        missing: vec![],
        flat: false,
    }
}

/// A tar whose entries exercise one numeric/name feature per file, for the tar-shape cases.
fn names_entries(prefix: &str) -> Vec<Entry> {
    let p = |s: String| format!("{prefix}{s}");
    let n100 = "a".repeat(100);
    let n101 = "b".repeat(101);
    let split = format!("{}/{}", "c".repeat(150), "d".repeat(100)); // 251 bytes, splittable
    let deep = format!("{}/{}", "dir".repeat(30), "e".repeat(120)); // not splittable (>100 base)
    let huge = format!("{}/f.txt", "g/".repeat(500)); // 1006 bytes
    vec![
        Entry::file(p(n100.clone()), b"exactly 100".to_vec()),
        Entry::file(p(n101), b"101".to_vec()),
        Entry::file(p(split.clone()), b"split".to_vec()),
        Entry::file(p(deep), b"deep".to_vec()),
        Entry::file(p(huge.clone()), b"huge".to_vec()),
        Entry::symlink(p("link-to-huge".into()), p(huge.clone())),
        Entry::hardlink(p("hard-to-split".into()), p(split)),
        Entry::symlink(p(format!("{}-link", "h".repeat(120))), "target"),
        Entry::file(
            p("space name with  two spaces.txt".into()),
            b"spaces".to_vec(),
        ),
        Entry::file(
            p("caf\u{e9}/na\u{ef}ve \u{1F600}.txt".into()),
            b"unicode".to_vec(),
        ),
        Entry::file(p("nfd/cafe\u{301}.txt".into()), b"nfd".to_vec()),
        Entry::file(
            p(format!(
                "{}/\u{65e5}\u{672c}\u{8a9e}.txt",
                "\u{4e2d}".repeat(40)
            )),
            b"cjk long".to_vec(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------

/// All cases for `scale`.
pub fn corpus(scale: Scale) -> Vec<CorpusCase> {
    use Expect::*;
    let mut v = Vec::new();

    // ---- tar shapes ------------------------------------------------------------------------
    v.push(single(
        "ustar-basic",
        "USTAR rootfs (dirs, files, symlink, hardlink, empty file), gzip -6, 64 KiB spans",
        M0S64,
        Identical,
        || Ok(vec![gz(&tar(Style::Ustar, &rootfs(1, 400_000, ""))?)]),
    ));
    v.push(single(
        "ustar-prefix-split",
        "USTAR names of exactly 100 bytes and longer ones split into prefix/name (up to 256 bytes)",
        M0,
        Identical,
        || {
            let mut e = Vec::new();
            for len in [99usize, 100, 101, 155, 200, 255] {
                let dir = "p".repeat(len.saturating_sub(101).max(1));
                let base = "n".repeat(len - dir.len() - 1);
                if base.len() <= 100 {
                    e.push(Entry::file(
                        format!("{dir}/{base}"),
                        format!("{len}").into_bytes(),
                    ));
                }
            }
            e.push(Entry::dir(format!(
                "{}/{}/",
                "q".repeat(120),
                "r".repeat(90)
            )));
            e.push(Entry::file("a".repeat(100), b"100".to_vec()));
            Ok(vec![gz(&tar(Style::Ustar, &e)?)])
        },
    ));
    v.push(single(
        "gnu-long-names-links",
        "GNU tar: ././@LongLink 'L'/'K' for names and link targets over 100 bytes (up to 1 KiB), unicode, spaces, ./ prefixes",
        M0,
        Identical,
        || {
            let mut e = vec![Entry::dir("./")];
            e.extend(names_entries("./"));
            Ok(vec![gz(&tar_padded(Style::Gnu, &e)?)])
        },
    ));
    v.push(single(
        "gnu-base256-numbers",
        "GNU base-256 for negative mtime, uid/gid over 2097151, mtime past 2242, big device numbers",
        M0,
        Identical,
        || {
            let e = vec![
                Entry::file("neg-mtime", b"1960".to_vec()).mtime(-315_619_200),
                Entry::file("minus-one", b"-1".to_vec()).mtime(-1),
                Entry::file("big-ids", b"ids".to_vec()).owner(3_000_000, 4_294_967_295, "big", "bigger"),
                Entry::file("year-2300", b"future".to_vec()).mtime(10_413_792_000),
                Entry::char_dev("dev/bigchar", 4095, 1_048_575),
                Entry::block_dev("dev/sda", 8, 0),
                Entry::file("zero-mtime", b"epoch".to_vec()).mtime(0),
            ];
            Ok(vec![gz(&tar_padded(Style::Gnu, &e)?)])
        },
    ));
    v.push(single(
        "gnu-posix-pax",
        "GNU tar --format=posix: an 'x' before every entry (atime/ctime with 9 digits, fractional mtime, path for long/unicode names, SCHILY xattrs)",
        M0S64,
        Identical,
        || {
            let mut e = rootfs(2, 300_000, "./");
            e.extend(names_entries("./"));
            for (i, x) in e.iter_mut().enumerate() {
                x.mtime = Time {
                    secs: MT + i as i64,
                    nanos: (i as u32 * 123_456_789) % 1_000_000_000,
                };
                x.atime = Some(Time { secs: MT + 100, nanos: 5 });
                x.ctime = Some(Time { secs: MT + 200, nanos: 999_999_999 });
            }
            e.push(Entry::file("./with-xattrs", b"x".to_vec()).xattr("user.foo", b"bar".to_vec()).xattr("security.selinux", b"system_u:object_r:bin_t:s0\0".to_vec()));
            Ok(vec![gz(&tar_padded(Style::GnuPosix, &e)?)])
        },
    ));
    v.push(single(
        "go-default-pax",
        "Go archive/tar default (containerd/BuildKit diffs): USTAR with prefix split, PAX only for unicode/unsplittable names, capability xattr",
        M0,
        Identical,
        || {
            let mut e = rootfs(3, 200_000, "");
            e.extend(names_entries(""));
            e.push(Entry::file("usr/bin/ping", data::random(33, 5000)).mode(0o755).xattr("security.capability", vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
            e.push(Entry::file("rounded-mtime", b"r".to_vec()).mtime_t(Time { secs: MT, nanos: 770_000_000 }));
            Ok(vec![gz(&tar(Style::GoDefault, &e)?)])
        },
    ));
    v.push(single(
        "python-pax",
        "CPython tarfile PAX_FORMAT: 'x' with float mtime (\"1700000000.0\", 7-digit fractions) before every entry",
        M0,
        Identical,
        || {
            let mut e = rootfs(4, 100_000, "");
            e.push(Entry::file("frac", b"f".to_vec()).mtime_t(Time { secs: 1_795_716_070, nanos: 751_137_500 }));
            e.push(Entry::file("old-frac", b"f".to_vec()).mtime_t(Time { secs: -2, nanos: 750_000_000 }));
            e.extend(names_entries("py/"));
            Ok(vec![gz(&tar_padded(Style::Python, &e)?)])
        },
    ));
    v.push(single(
        "v7",
        "V7 archive: no magic, typeflag '\\0' for files and for directories with a trailing '/'",
        M0,
        Identical,
        || {
            let e = vec![
                Entry::dir("etc"),
                Entry::file("etc/motd", data::text(5, 3000)),
                Entry::dir("usr/bin/"),
                Entry::file("usr/bin/tool", data::random(5, 20_000)).mode(0o755),
                Entry::symlink("usr/bin/t", "tool"),
                Entry::hardlink("usr/bin/tool2", "usr/bin/tool"),
            ];
            Ok(vec![gz(&tar_padded(Style::V7, &e)?)])
        },
    ));
    v.push(single(
        "bsdtar-restricted-pax",
        "bsdtar: space-terminated numeric fields, 'x' only when needed, LIBARCHIVE.xattr (base64) + SCHILY.xattr, fractional mtime",
        M0,
        Identical,
        || {
            let mut e = rootfs(6, 100_000, "");
            e.extend(names_entries(""));
            e.push(Entry::file("xattr-file", b"x".to_vec()).xattr("user.mime_type", b"text/plain".to_vec()).mtime_t(Time { secs: MT, nanos: 250_000_000 }));
            e.push(Entry::file("big-uid", b"u".to_vec()).owner(300_000, 5, "u", "g"));
            Ok(vec![gz(&tar_padded(Style::Bsdtar, &e)?)])
        },
    ));
    v.push(case(
        "docker-moby-modes-whiteouts",
        "Docker schema2 manifest/config/diff.tar.gzip; moby mode type bits (0100644/040755/0120777); .wh. whiteouts and .wh..wh..opq",
        M0,
        Identical,
        |d| {
            let base = tar(Style::GoDefault, &rootfs(7, 150_000, ""))?;
            let mut e = vec![
                Entry::dir("etc/").mode(0o40755),
                Entry::file("etc/passwd", data::text(70, 1200)).mode(0o100644),
                Entry::symlink("etc/localtime", "/usr/share/zoneinfo/UTC").mode(0o120777),
                Entry::opaque("usr/share/doc"),
                Entry::whiteout("usr/lib", "libfoo.so.1"),
                Entry::whiteout("", "tmp"),
                Entry::dir("usr/share/doc/").mode(0o40755),
                Entry::file("usr/share/doc/NEW", data::text(71, 4000)).mode(0o100644),
                Entry::file("usr/local/bin/setuid", b"#!/bin/sh\n".to_vec()).mode(0o104755),
            ];
            e.push(Entry::dir("var/cache/").mode(0o42775));
            let top = tar(Style::GoDefault, &e)?;
            write_single(d, Flavor::Docker, "linux/amd64", vec![gz_docker(&base), gz_docker(&top)])
        },
    ));
    v.push(single(
        "devices-fifos",
        "char/block devices (devmajor/devminor) and fifos in USTAR and GNU blocks",
        M0,
        Identical,
        || {
            let e = vec![
                Entry::dir("dev/"),
                Entry::char_dev("dev/null", 1, 3),
                Entry::char_dev("dev/tty0", 4, 0)
                    .mode(0o620)
                    .owner(0, 5, "root", "tty"),
                Entry::block_dev("dev/loop0", 7, 0),
                Entry::fifo("dev/initctl").mode(0o600),
            ];
            let mut t = TarBuilder::new();
            t.append_all(&e, Style::Ustar)?;
            t.append(&Entry::char_dev("dev/gnu-char", 10, 200), Style::Gnu)?;
            t.append(&Entry::fifo("dev/gnu-fifo"), Style::Gnu)?;
            t.append(&Entry::file("after", data::text(8, 10_000)), Style::Gnu)?;
            Ok(vec![gz(&t.finish(true))])
        },
    ));
    v.push(single(
        "mtime-edge-values",
        "PAX mtimes: 0, -1, -1.5, 1.000000001, 9999-12-31T23:59:59, fractional-with-trailing-zeros, nanosecond precision",
        M0,
        Identical,
        || {
            let times = [
                Time::secs(0),
                Time::secs(-1),
                Time { secs: -2, nanos: 500_000_000 },
                Time { secs: 1, nanos: 1 },
                Time::secs(253_402_300_799),
                Time { secs: MT, nanos: 120_000_000 },
                Time { secs: MT, nanos: 999_999_999 },
                Time { secs: -62_135_596_800, nanos: 0 },
            ];
            let mut e = Vec::new();
            for (i, t) in times.iter().enumerate() {
                e.push(Entry::file(format!("t{i}"), format!("{t:?}").into_bytes()).pax_record("mtime", t.pax().into_bytes()).mtime(0));
            }
            Ok(vec![gz(&tar(Style::GoDefault, &e)?)])
        },
    ));
    v.push(single(
        "mtime-year-10000",
        "GNU base-256 mtime 253402300800 (year 10000): Go's MarshalText fails, upstream records an empty mod time",
        M0,
        Identical,
        || {
            let e = vec![Entry::file("far-future", b"y10k".to_vec()).mtime(253_402_300_800), Entry::file("normal", b"n".to_vec())];
            Ok(vec![gz(&tar(Style::Gnu, &e)?)])
        },
    ));
    v.push(single(
        "pax-records-mixed",
        "PAX records: binary xattr values with NUL, empty values, comment, hdrcharset, SCHILY.acl, RHT.security.selinux, LIBARCHIVE.*, uid/gid/uname via PAX, two 'x' before one entry",
        M0,
        Identical,
        || {
            let mut t = TarBuilder::new();
            let e = Entry::file("xattrs", b"payload".to_vec())
                .xattr("user.bin", vec![0, 1, 2, 0xff, 0])
                .xattr("user.empty", Vec::new())
                .xattr("trusted.overlay.opaque", b"y".to_vec())
                .pax_record("comment", b"made by soci-testkit".to_vec())
                .pax_record("hdrcharset", b"BINARY".to_vec())
                .pax_record("SCHILY.acl.access", b"user::rw-,group::r--,other::r--".to_vec())
                .pax_record("RHT.security.selinux", b"system_u:object_r:etc_t:s0".to_vec())
                .pax_record("LIBARCHIVE.creationtime", b"1600000000".to_vec())
                .pax_record("uname", b"\xc3\xbcser".to_vec())
                .pax_record("gname", Vec::new())
                .pax_record("uid", b"4294967296".to_vec())
                .pax_record("gid", b"-5".to_vec());
            t.append(&e, Style::GoDefault)?;
            // A second 'x' replaces the first one's records.
            t.pax(b"PaxHeaders/first", &[("path".into(), b"lost".to_vec()), ("uname".into(), b"lost".to_vec())], NumEnc::Octal)?;
            t.pax(b"PaxHeaders/second", &[("path".into(), b"second-wins".to_vec())], NumEnc::Octal)?;
            t.header(&{
                let mut h = Header::new(b"ustar-name".to_vec());
                h.size = 3;
                h.mtime = MT;
                h
            })?;
            t.data(b"abc");
            // Duplicate keys: the last one wins.
            t.pax(b"PaxHeaders/dup", &[("path".into(), b"first".to_vec()), ("path".into(), b"dup-second".to_vec())], NumEnc::Octal)?;
            t.header(&Header::new(b"dup".to_vec()))?;
            Ok(vec![gz(&t.finish(false))])
        },
    ));
    v.push(single(
        "non-utf8-names",
        "GNU names/links/unames with raw Latin-1 bytes (invalid UTF-8)",
        M0,
        Identical,
        || {
            let mut e = Entry::file(b"caf\xe9.txt".to_vec(), b"latin1".to_vec());
            e.uname = b"us\xe9r".to_vec();
            let e = vec![
                Entry::dir(b"d\xe9j\xe0/".to_vec()),
                e,
                Entry::symlink(b"lnk".to_vec(), b"caf\xe9.txt".to_vec()),
                Entry::file([b"long-".to_vec(), vec![0xe9; 120]].concat(), b"l".to_vec()),
            ];
            Ok(vec![gz(&tar(Style::Gnu, &e)?)])
        },
    ));
    v.push(single(
        "odd-names",
        "names with ./ and / prefixes, //, .., trailing spaces, duplicates, a '\\0' typeflag file whose PAX path ends in '/'",
        M0,
        Identical,
        || {
            let e = vec![
                Entry::dir("./"),
                Entry::file("./a", b"1".to_vec()),
                Entry::file("/abs/path", b"2".to_vec()),
                Entry::file("x//y", b"3".to_vec()),
                Entry::file("../escape", b"4".to_vec()),
                Entry::file("trailing space ", b"5".to_vec()),
                Entry::file("./a", b"duplicate".to_vec()),
                Entry::file("rega", b"6".to_vec()).kind(Kind::RegA),
                Entry::file("rega-dir", Vec::new()).kind(Kind::RegA).pax_record("path", b"pax-dir/".to_vec()),
            ];
            Ok(vec![gz(&tar(Style::GoDefault, &e)?)])
        },
    ));
    v.push(single(
        "header-only-with-size",
        "a symlink and a directory whose size field is non-zero (Go keeps the size but skips no data)",
        M0,
        Identical,
        || {
            let e = vec![
                Entry::symlink("l", "target").size_override(600),
                Entry::dir("d/").size_override(100),
                Entry::file("after", b"after".to_vec()),
            ];
            Ok(vec![gz(&tar(Style::Ustar, &e)?)])
        },
    ));
    v.push(single(
        "archive-trailers",
        "three layers: tar padded to a 10240-byte record, tar ending in one zero block, tar with no end-of-archive blocks",
        M0,
        Identical,
        || {
            let mk = |seed| -> io::Result<TarBuilder> {
                let mut t = TarBuilder::new();
                t.append_all(&rootfs(seed, 30_000, ""), Style::GoDefault)?;
                Ok(t)
            };
            Ok(vec![gz(&mk(10)?.finish(true)), gz(&mk(11)?.finish_with(1, false)), gz(&mk(12)?.finish_with(0, false))])
        },
    ));
    v.push(single(
        "empty-layer",
        "an empty layer (two zero blocks, like Docker's empty layer) next to a normal one",
        M0,
        Identical,
        || {
            Ok(vec![
                gz(&TarBuilder::new().finish(false)),
                gz(&tar(Style::GoDefault, &rootfs(13, 20_000, ""))?),
            ])
        },
    ));
    v.push(single(
        "pax-sparse-0.0",
        "GNU PAX sparse 0.0 (GNU.sparse.offset/numbytes records): Go reports the expanded size",
        M0,
        Identical,
        || {
            let mut t = TarBuilder::new();
            t.append(&Entry::file("before", b"b".to_vec()), Style::GoDefault)?;
            t.pax_sparse_0_0(
                b"sparse00",
                1 << 20,
                &[(4096, 4096), (1 << 20, 0)],
                &data::text(14, 4096),
            )?;
            t.append(&Entry::file("after", b"a".to_vec()), Style::GoDefault)?;
            Ok(vec![gz(&t.finish(true))])
        },
    ));
    v.push(single(
        "pax-sparse-1.0",
        "GNU/bsdtar PAX sparse 1.0 (map in the data, GNU.sparse.name/realsize): data offset after the map block",
        M0,
        Identical,
        || {
            let mut t = TarBuilder::new();
            t.pax_sparse_1_0(b"sparse10", 1 << 20, &[(598_016, 4096), (1 << 20, 0)], &data::text(15, 4096))?;
            t.append(&Entry::file("after", b"a".to_vec()), Style::GoDefault)?;
            Ok(vec![gz(&t.finish(true))])
        },
    ));

    // ---- shapes upstream rejects -------------------------------------------------------------
    v.push(single(
        "pax-global-header",
        "git archive: a 'g' pax_global_header first — upstream's TOC builder rejects typeflag 'g'",
        M0,
        UpstreamFails,
        || {
            let mut t = TarBuilder::new();
            t.pax_global(
                b"pax_global_header",
                &[(
                    "comment".into(),
                    b"0123456789abcdef0123456789abcdef01234567".to_vec(),
                )],
            )?;
            t.append_all(&rootfs(16, 20_000, ""), Style::Ustar)?;
            Ok(vec![gz(&t.finish(true))])
        },
    ));
    v.push(single(
        "gnu-sparse-old",
        "old GNU sparse 'S' entry — upstream rejects the typeflag",
        M0,
        UpstreamFails,
        || {
            let mut t = TarBuilder::new();
            t.append(&Entry::file("before", b"b".to_vec()), Style::Gnu)?;
            t.gnu_sparse_old(
                b"sparse",
                1 << 20,
                &[(4096, 4096), (1 << 20, 0)],
                &data::text(17, 4096),
            )?;
            Ok(vec![gz(&t.finish(true))])
        },
    ));
    v.push(single(
        "typeflag-contiguous",
        "typeflag '7' (contiguous file) — not in upstream's type map",
        M0,
        UpstreamFails,
        || {
            Ok(vec![gz(&tar(
                Style::Ustar,
                &[Entry::file("contig", b"c".to_vec()).kind(Kind::Other(b'7'))],
            )?)])
        },
    ));
    v.push(single(
        "tar-bad-checksum",
        "a header block with a wrong checksum after a valid entry",
        M0,
        UpstreamFails,
        || {
            let mut t = TarBuilder::new();
            t.append(&Entry::file("ok", b"ok".to_vec()), Style::Ustar)?;
            let mut b = Header::new(b"bad".to_vec()).to_block()?;
            b[148] = b'7';
            t.raw_block(b, false);
            Ok(vec![gz(&t.finish(false))])
        },
    ));
    v.push(single(
        "gzip-trailing-garbage",
        "non-gzip bytes after the last gzip member",
        M0,
        UpstreamFails,
        || {
            let t = tar(Style::GoDefault, &rootfs(18, 20_000, ""))?;
            Ok(vec![Layer::new(
                mt::OCI_LAYER_GZIP,
                &t,
                &Encoding::GzipTrailing(6, b"GARBAGE!".to_vec()),
            )])
        },
    ));
    v.push(single(
        "non-layer-media-type",
        "a manifest layer with a media type that is not a layer type — a hard error upstream",
        M0,
        UpstreamFails,
        || {
            let t = tar(Style::GoDefault, &rootfs(19, 20_000, ""))?;
            let mut odd = gz(&t);
            odd.media_type = "application/vnd.example.data.v1+json".into();
            Ok(vec![
                gz(&tar(Style::GoDefault, &rootfs(20, 20_000, ""))?),
                odd,
            ])
        },
    ));
    v.push(single(
        "all-layers-below-min-size",
        "default --min-layer-size (10 MiB) with small layers only: no zTOC, empty SOCI index",
        &[],
        UpstreamFails,
        || Ok(vec![gz(&tar(Style::GoDefault, &rootfs(21, 50_000, ""))?)]),
    ));
    v.push(single(
        "zstd-only",
        "a single tar+zstd layer: skipped by media type, nothing to index",
        M0,
        UpstreamFails,
        || {
            let t = tar(Style::GoDefault, &rootfs(22, 50_000, ""))?;
            Ok(vec![Layer::new(mt::OCI_LAYER_ZSTD, &t, &Encoding::Zstd)])
        },
    ));
    v.push(single(
        "pax-header-over-1mib",
        "an 'x' header whose data exceeds Go's 1 MiB limit (archive/tar: header field too long)",
        M0,
        UpstreamFails,
        || {
            let e = Entry::file("big-xattr", b"x".to_vec())
                .xattr("user.big", data::text(23, (1 << 20) + 10));
            Ok(vec![gz(&tar(Style::GoDefault, &[e])?)])
        },
    ));
    v.push(single(
        "hardlink-with-data",
        "a hard link that carries a size and data: Go skips no data and fails on the next header",
        M0,
        UpstreamFails,
        || {
            let mut t = TarBuilder::new();
            t.append(&Entry::file("f", b"hello".to_vec()), Style::Ustar)?;
            let mut h = Header::new(b"l".to_vec());
            h.typeflag = b'1';
            h.linkname = b"f".to_vec();
            h.size = 600;
            t.header(&h)?;
            t.data(&data::text(24, 600));
            t.append(&Entry::file("after", b"a".to_vec()), Style::Ustar)?;
            Ok(vec![gz(&t.finish(false))])
        },
    ));
    v.push(single(
        "gzip-truncated",
        "a gzip stream cut short (no final block, no trailer)",
        M0,
        UpstreamFails,
        || {
            let t = tar(Style::GoDefault, &rootfs(25, 200_000, ""))?;
            let mut g = crate::compress::gzip(&t, 6);
            g.truncate(g.len() * 2 / 3);
            Ok(vec![Layer {
                media_type: mt::OCI_LAYER_GZIP.into(),
                blob: g,
                diff_id: crate::layout::sha256_digest(&t),
            }])
        },
    ));

    // ---- compression -------------------------------------------------------------------------
    let comp_tar = || -> io::Result<Vec<u8>> {
        let mut e = rootfs(30, 200_000, "");
        e.push(Entry::file("data/mixed.bin", data::mixed(31, 900_000)));
        e.push(Entry::file("data/text.txt", data::text(32, 400_000)));
        tar(Style::GoDefault, &e)
    };
    for level in [0u32, 1, 9] {
        v.push(single(
            &format!("gzip-level-{level}"),
            &format!("gzip level {level} (0 = stored blocks), 64 KiB spans"),
            M0S64,
            Identical,
            move || {
                Ok(vec![Layer::new(
                    mt::OCI_LAYER_GZIP,
                    &comp_tar()?,
                    &Encoding::Gzip(level),
                )])
            },
        ));
    }
    v.push(single(
        "gzip-header-fields",
        "gzip header with FNAME, FCOMMENT and FEXTRA (checkpoint 0 is after a longer header)",
        M0S64,
        Identical,
        move || {
            let h = GzHeader {
                filename: Some(b"layer.tar".to_vec()),
                comment: Some(b"soci-testkit \xe9 comment".to_vec()),
                extra: Some(b"SC\x04\x00abcdRA\x02\x00\x01\x02".to_vec()),
                mtime: 1_700_000_000,
            };
            Ok(vec![Layer::new(
                mt::OCI_LAYER_GZIP,
                &comp_tar()?,
                &Encoding::GzipHeader(6, h),
            )])
        },
    ));
    v.push(single(
        "gzip-multi-member",
        "pigz/mgzip-like concatenated members split at arbitrary offsets (inside headers and data)",
        M0S64,
        Identical,
        move || {
            let t = comp_tar()?;
            let splits: Vec<usize> = vec![700, 100_001, 250_000, 250_512, 777_777, 1_300_000];
            Ok(vec![Layer::new(
                mt::OCI_LAYER_GZIP,
                &t,
                &Encoding::MultiMember(6, splits),
            )])
        },
    ));
    v.push(single(
        "gzip-multi-member-empty-members",
        "multi-member gzip with empty members in the middle and at the end",
        M0S64,
        Identical,
        move || {
            let t = comp_tar()?;
            let splits: Vec<usize> = vec![300_000, 300_000, 600_000, t.len()];
            Ok(vec![Layer::new(
                mt::OCI_LAYER_GZIP,
                &t,
                &Encoding::MultiMember(1, splits),
            )])
        },
    ));
    v.push(single(
        "gzip-multi-member-empty-first",
        "an empty first gzip member: the second member's header end is another checkpoint at uncompressed offset 0 (a zero-length span, like the sync-flush case)",
        M0S64,
        SyncFlushDivergence,
        move || {
            let t = comp_tar()?;
            Ok(vec![Layer::new(
                mt::OCI_LAYER_GZIP,
                &t,
                &Encoding::MultiMember(6, vec![0]),
            )])
        },
    ));
    v.push(single(
        "gzip-sync-flush-start",
        "deflate stream that starts with a sync flush (empty stored block): upstream writes a zero-length span",
        M0S64,
        SyncFlushDivergence,
        move || Ok(vec![Layer::new(mt::OCI_LAYER_GZIP, &comp_tar()?, &Encoding::Flushed(6, true, 0))]),
    ));
    v.push(single(
        "gzip-many-flushes",
        "sync flush every 4096 input bytes (many tiny blocks and empty stored blocks)",
        M0S64,
        Identical,
        move || {
            Ok(vec![Layer::new(
                mt::OCI_LAYER_GZIP,
                &comp_tar()?,
                &Encoding::Flushed(6, false, 4096),
            )])
        },
    ));
    v.push(single(
        "uncompressed-oci-tar",
        "OCI '.tar' (uncompressed) layer next to a gzip one: TarZinfo checkpoints",
        M0S64,
        Identical,
        move || {
            let t = comp_tar()?;
            Ok(vec![
                Layer::new(mt::OCI_LAYER_TAR, &t, &Encoding::None),
                gz(&tar(Style::GoDefault, &rootfs(33, 30_000, ""))?),
            ])
        },
    ));
    v.push(case(
        "uncompressed-docker-diff-tar",
        "Docker schema2 'diff.tar' (uncompressed) layer",
        M0S64,
        Identical,
        |d| {
            let t = tar(Style::GoDefault, &rootfs(34, 300_000, ""))?;
            write_single(
                d,
                Flavor::Docker,
                "linux/amd64",
                vec![Layer::new(mt::DOCKER_LAYER_TAR, &t, &Encoding::None)],
            )
        },
    ));
    v.push(single(
        "uncompressed-span-divides-size",
        "uncompressed layer whose size is an exact multiple of the span size (20480)",
        &["--min-layer-size", "0", "--span-size", "20480"],
        Identical,
        || {
            let mut t = tar_padded(Style::Gnu, &rootfs(35, 100_000, "./"))?;
            if (t.len() / 10240) % 2 == 1 {
                t.resize(t.len() + 10240, 0);
            }
            assert_eq!(t.len() % 20480, 0);
            Ok(vec![Layer::new(mt::OCI_LAYER_TAR, &t, &Encoding::None)])
        },
    ));
    v.push(single(
        "zstd-mixed-with-gzip",
        "gzip, tar+zstd (skipped, never inflated), gzip layers",
        M0,
        Identical,
        || {
            let z = tar(Style::GoDefault, &rootfs(36, 60_000, ""))?;
            Ok(vec![
                gz(&tar(Style::GoDefault, &rootfs(37, 60_000, ""))?),
                Layer::new(mt::OCI_LAYER_ZSTD, &z, &Encoding::Zstd),
                gz(&tar(Style::GoDefault, &rootfs(38, 60_000, ""))?),
            ])
        },
    ));
    v.push(single(
        "nondistributable-and-foreign-layers",
        "OCI nondistributable tar+gzip and Docker foreign diff.tar.gzip layer media types (blobs present)",
        M0,
        Identical,
        || {
            let t1 = tar(Style::GoDefault, &rootfs(39, 40_000, ""))?;
            let t2 = tar(Style::GoDefault, &rootfs(40, 40_000, ""))?;
            Ok(vec![Layer::new(mt::OCI_LAYER_ND_GZIP, &t1, &Encoding::Gzip(6)), Layer::new(mt::DOCKER_FOREIGN_GZIP, &t2, &Encoding::Gzip(6))])
        },
    ));

    // ---- contents and sizes ------------------------------------------------------------------
    v.push(single(
        "many-spans-text",
        "3 MiB of text with 64 KiB spans: dozens of checkpoints",
        M0S64,
        Identical,
        || {
            Ok(vec![gz(&tar(
                Style::GoDefault,
                &[
                    Entry::file("big.txt", data::text(41, 3 << 20)),
                    Entry::file("tail", b"t".to_vec()),
                ],
            )?)])
        },
    ));
    v.push(single(
        "incompressible",
        "2 MiB of pseudo-random bytes (deflate emits stored blocks) with 64 KiB spans",
        M0S64,
        Identical,
        || {
            Ok(vec![gz(&tar(
                Style::GoDefault,
                &[Entry::file("random.bin", data::random(42, 2 << 20))],
            )?)])
        },
    ));
    v.push(single(
        "zeros",
        "16 MiB of zeros (a few huge deflate blocks) with 64 KiB spans",
        M0S64,
        Identical,
        || {
            Ok(vec![gz(&tar(
                Style::GoDefault,
                &[
                    Entry::file("zeros.img", data::zeros(16 << 20)),
                    Entry::file("after", b"a".to_vec()),
                ],
            )?)])
        },
    ));
    let files = if scale == Scale::Full { 60_000 } else { 20_000 };
    v.push(single(
        &format!("many-small-files-{files}"),
        "tens of thousands of small files in nested directories",
        M0,
        Identical,
        move || {
            let mut e = Vec::with_capacity(files + files / 100);
            let mut r = data::XorShift::new(43);
            for i in 0..files {
                if i % 100 == 0 {
                    e.push(Entry::dir(format!("d{:03}/", i / 100)));
                }
                let len = r.below(600) as usize;
                e.push(
                    Entry::file(
                        format!("d{:03}/file-{i:06}.txt", i / 100),
                        data::text(i as u64, len),
                    )
                    .mtime(MT + (i as i64 % 1000)),
                );
            }
            Ok(vec![gz(&tar(Style::GoDefault, &e)?)])
        },
    ));
    v.push(single(
        "min-layer-size-mixed",
        "tiny layers below --min-layer-size mixed with bigger ones (skipped layers leave no zTOC)",
        &["--min-layer-size", "100000", "--span-size", "65536"],
        Identical,
        || {
            Ok(vec![
                gz(&tar(Style::GoDefault, &rootfs(44, 4_000, ""))?),
                gz(&tar(
                    Style::GoDefault,
                    &[Entry::file("big", data::random(45, 400_000))],
                )?),
                gz(&tar(Style::GoDefault, &rootfs(46, 8_000, ""))?),
                gz(&tar(
                    Style::GoDefault,
                    &[Entry::file("big2", data::mixed(47, 900_000))],
                )?),
                gz(&TarBuilder::new().finish(false)),
            ])
        },
    ));
    {
        // Layer A is exactly --min-layer-size bytes (kept: the test is strictly-less), layer B is
        // one byte smaller (skipped). FEXTRA padding tunes the blob sizes.
        let t = tar(Style::GoDefault, &rootfs(48, 60_000, "")).expect("tar");
        let with_extra = |n: usize| {
            Layer::new(
                mt::OCI_LAYER_GZIP,
                &t,
                &Encoding::GzipHeader(
                    6,
                    GzHeader {
                        extra: Some(vec![b'x'; n]),
                        ..Default::default()
                    },
                ),
            )
        };
        let a = with_extra(100);
        let b = with_extra(99);
        let min = a.blob.len().to_string();
        let layers = Arc::new(vec![b, a]);
        v.push(single(
            "min-layer-size-boundary",
            "a layer of exactly --min-layer-size bytes (indexed) and one a byte smaller (skipped)",
            &["--min-layer-size", &min],
            Identical,
            move || Ok(layers.as_ref().clone()),
        ));
    }
    v.push(single(
        "duplicate-layer",
        "the same layer blob twice in one manifest",
        M0,
        Identical,
        || {
            let l = gz(&tar(Style::GoDefault, &rootfs(49, 50_000, ""))?);
            Ok(vec![
                l.clone(),
                gz(&tar(Style::GoDefault, &rootfs(50, 20_000, ""))?),
                l,
            ])
        },
    ));
    v.push(single(
        "optimizations-xattr",
        "--optimizations xattr: disable-xattrs annotation on layers without xattrs and without opaque dirs",
        &["--min-layer-size", "0", "--optimizations", "xattr"],
        Identical,
        || {
            Ok(vec![
                gz(&tar(Style::GoDefault, &rootfs(51, 20_000, ""))?),
                gz(&tar(Style::GoDefault, &[Entry::file("x", b"x".to_vec()).xattr("user.k", b"v".to_vec())])?),
                gz(&tar(Style::GoDefault, &[Entry::dir("o/"), Entry::opaque("o")])?),
            ])
        },
    ));
    v.push(single(
        "default-flags-10mib-layer",
        "no flags: default 4 MiB spans and 10 MiB min layer size; a >10 MiB incompressible layer plus a small skipped one",
        &[],
        Identical,
        || {
            Ok(vec![
                gz(&tar(Style::GoDefault, &rootfs(52, 40_000, ""))?),
                gz(&tar(Style::GoDefault, &[Entry::dir("opt/"), Entry::file("opt/blob.bin", data::random(53, 10_600_000))])?),
            ])
        },
    ));

    // ---- image shapes ------------------------------------------------------------------------
    v.push(multi("multiarch-default-platform", "OCI index amd64 + arm64/v8 + arm/v7 + buildx attestations, no platform flags (host linux/amd64)", M0, Identical, std_multi()));
    v.push(multi(
        "multiarch-all-platforms",
        "as multiarch-default-platform with --all-platforms (attestations are not platforms)",
        &["--min-layer-size", "0", "--all-platforms"],
        Identical,
        std_multi(),
    ));
    v.push(multi(
        "multiarch-platform-arm64",
        "--platform linux/arm64 (normalised to arm64/v8)",
        &["--min-layer-size", "0", "--platform", "linux/arm64"],
        Identical,
        std_multi(),
    ));
    v.push(multi(
        "multiarch-platform-repeated",
        "--platform linux/arm/v7 --platform linux/arm64/v8 (order of the flags kept)",
        &[
            "--min-layer-size",
            "0",
            "--platform",
            "linux/arm/v7",
            "--platform",
            "linux/arm64/v8",
        ],
        Identical,
        std_multi(),
    ));
    v.push(multi(
        "docker-manifest-list-all-platforms",
        "Docker manifest list of Docker schema2 manifests, --all-platforms (output is OCI)",
        &["--min-layer-size", "0", "--all-platforms"],
        Identical,
        Multi {
            flavor: Flavor::Docker,
            platforms: vec!["linux/amd64", "linux/arm64/v8", "linux/386"],
            attestations: false,
            missing: vec![],
            flat: false,
        },
    ));
    v.push(multi(
        "multiarch-missing-platform-blobs",
        "index whose arm/v7 manifest blob is absent (partial pull); default platform",
        M0,
        Identical,
        Multi {
            missing: vec!["linux/arm/v7"],
            ..std_multi()
        },
    ));
    v.push(multi(
        "multiarch-no-host-platform",
        "index without linux/amd64 and no platform flags",
        M0,
        UpstreamFails,
        Multi {
            platforms: vec!["linux/arm64/v8", "linux/s390x"],
            ..std_multi()
        },
    ));
    v.push(multi(
        "flat-index-json",
        "index.json listing the platform manifests directly (go-containerregistry layout.Write shape), --all-platforms",
        &["--min-layer-size", "0", "--all-platforms"],
        Identical,
        Multi { flat: true, attestations: false, ..std_multi() },
    ));
    v.push(case(
        "single-arm64-v8",
        "single-platform linux/arm64/v8 image, no flags: the image's own platform is the default",
        M0,
        Identical,
        |d| {
            write_single(
                d,
                Flavor::Oci,
                "linux/arm64/v8",
                vec![gz(&tar(Style::GoDefault, &rootfs(60, 40_000, ""))?)],
            )
        },
    ));
    v.push(case(
        "single-platform-in-index-json",
        "index.json entry carries a platform and no ref name",
        M0,
        Identical,
        |d| {
            let lay = Layout::create(d)?;
            let desc = lay.add_image(&Image::new(
                Flavor::Oci,
                "linux/amd64",
                vec![gz(&tar(Style::GoDefault, &rootfs(61, 40_000, ""))?)],
            ))?;
            lay.write_index_json(&[desc], None)
        },
    ));
    v.push(case(
        "pretty-json-annotations",
        "pretty-printed manifests/config, manifest annotations with <>& and unicode (Go re-marshals and HTML-escapes)",
        M0,
        Identical,
        |d| {
            let lay = Layout::create(d)?;
            let mut img = Image::new(Flavor::Oci, "linux/amd64", vec![gz(&tar(Style::GoDefault, &rootfs(62, 40_000, ""))?)]);
            img.json = JsonStyle::Pretty;
            img.annotations.insert("org.opencontainers.image.title".into(), "a <b> & \"c\" \u{e9}\u{2028}".into());
            img.annotations.insert("org.opencontainers.image.source".into(), "https://example.com/x?a=1&b=2".into());
            let mut desc = lay.add_image(&img)?;
            desc.platform = None;
            lay.write_index_json(&[desc], Some("v1.0"))
        },
    ));

    v.push(single(
        "tar-garbage-after-eof",
        "non-zero bytes after the two end-of-archive blocks inside the gzip stream (never read by Go)",
        M0S64,
        Identical,
        || {
            let mut t = tar(Style::GoDefault, &rootfs(63, 100_000, ""))?;
            t.extend(data::random(64, 100_000));
            Ok(vec![gz(&t)])
        },
    ));
    v.push(single(
        "tiny-span-size",
        "--span-size 1000 on a stream flushed every 4096 bytes: a checkpoint at nearly every block boundary",
        &["--min-layer-size", "0", "--span-size", "1000"],
        Identical,
        || {
            let t = tar(Style::GoDefault, &[Entry::file("t.txt", data::text(65, 60_000))])?;
            Ok(vec![Layer::new(mt::OCI_LAYER_GZIP, &t, &Encoding::Flushed(6, false, 4096))])
        },
    ));
    v.push(case(
        "single-explicit-platform-and-all",
        "single-platform image with --all-platforms and --platform linux/amd64 both given",
        &[
            "--min-layer-size",
            "0",
            "--all-platforms",
            "--platform",
            "linux/amd64",
        ],
        Identical,
        |d| {
            write_single(
                d,
                Flavor::Oci,
                "linux/amd64",
                vec![gz(&tar(Style::GoDefault, &rootfs(66, 20_000, ""))?)],
            )
        },
    ));
    v.push(case(
        "index-entry-without-platform",
        "image index whose first entry has no platform field, --all-platforms: upstream aborts (\"manifest should have proper platform\")",
        &["--min-layer-size", "0", "--all-platforms"],
        UpstreamFails,
        |d| {
            let lay = Layout::create(d)?;
            let mut a = lay.add_image(&Image::new(Flavor::Oci, "linux/arm64/v8", vec![gz(&tar(Style::GoDefault, &rootfs(67, 20_000, ""))?)]))?;
            a.platform = None;
            let b = lay.add_image(&Image::new(Flavor::Oci, "linux/amd64", vec![gz(&tar(Style::GoDefault, &rootfs(68, 20_000, ""))?)]))?;
            let idx = lay.add_index(Flavor::Oci, &[a, b], JsonStyle::Compact)?;
            lay.write_index_json(&[idx], Some("latest"))
        },
    ));
    v.push(case(
        "index-descriptor-annotations",
        "index entries with descriptor annotations and an index-level annotation (convert keeps/drops them)",
        &["--min-layer-size", "0", "--all-platforms"],
        Identical,
        |d| {
            let lay = Layout::create(d)?;
            let a = lay
                .add_image(&Image::new(Flavor::Oci, "linux/amd64", vec![gz(&tar(Style::GoDefault, &rootfs(69, 20_000, ""))?)]))?
                .annotate("org.opencontainers.image.ref.name", "amd64")
                .annotate("com.example.note", "<&>");
            let b = lay.add_image(&Image::new(Flavor::Oci, "linux/arm64/v8", vec![gz(&tar(Style::GoDefault, &rootfs(70, 20_000, ""))?)]))?;
            let att = lay.add_attestation(&a)?;
            let mut v = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": mt::OCI_INDEX,
                "manifests": [a.to_json(), b.to_json(), att.to_json()],
                "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "z": "last", "a": "first"},
            });
            v["x-unknown-field"] = serde_json::json!({"dropped": true});
            let idx = lay.add_json(mt::OCI_INDEX, &v, JsonStyle::Pretty)?;
            lay.write_index_json(&[idx], Some("latest"))
        },
    ));

    // ---- Full only ---------------------------------------------------------------------------
    if scale == Scale::Full {
        v.push(single(
            "full-big-mixed-default-flags",
            "64 MiB mixed content, default flags (16 spans)",
            &[],
            Identical,
            || {
                Ok(vec![gz(&tar(
                    Style::GoDefault,
                    &[Entry::file("big.bin", data::mixed(70, 64 << 20))],
                )?)])
            },
        ));
        v.push(single(
            "full-incompressible-32mib",
            "32 MiB random, default flags",
            &[],
            Identical,
            || {
                Ok(vec![gz(&tar(
                    Style::GoDefault,
                    &[Entry::file("r.bin", data::random(71, 32 << 20))],
                )?)])
            },
        ));
        v.push(single(
            "full-multi-member-1mib",
            "40 MiB text as ~1 MiB gzip members (bgzip/mgzip-like), 1 MiB spans",
            &["--min-layer-size", "0", "--span-size", "1048576"],
            Identical,
            || {
                let t = tar(
                    Style::GoDefault,
                    &[Entry::file("t.txt", data::text(72, 40 << 20))],
                )?;
                let splits: Vec<usize> = (1..40).map(|i| i * 1_048_576 + i * 37).collect();
                Ok(vec![Layer::new(
                    mt::OCI_LAYER_GZIP,
                    &t,
                    &Encoding::MultiMember(6, splits),
                )])
            },
        ));
        v.push(single(
            "full-uncompressed-24mib",
            "24 MiB uncompressed OCI tar layer, default flags",
            &[],
            Identical,
            || {
                Ok(vec![Layer::new(
                    mt::OCI_LAYER_TAR,
                    &tar(
                        Style::GoDefault,
                        &[Entry::file("m.bin", data::mixed(73, 24 << 20))],
                    )?,
                    &Encoding::None,
                )])
            },
        ));
    }
    v
}
