//! `tarw`: a tar writer with byte-level control, to produce the archive shapes real tools write.
//!
//! Two levels:
//! * [`Header`] + [`TarBuilder::header`] / [`TarBuilder::data`] / [`TarBuilder::raw_block`]: write any
//!   header block field by field (magic, numeric encoding, typeflag), the checksum is computed for you
//!   ([`set_checksum`]).
//! * [`Entry`] + [`TarBuilder::append`] with a [`Style`]: one logical entry written the way a given tool
//!   writes it — USTAR with prefix split, GNU (`ustar  \0`, `'L'`/`'K'` long names, base-256 numbers),
//!   GNU tar `--format=posix` (an `'x'` before every entry), Go's `archive/tar` default (USTAR, PAX only
//!   when needed), CPython's PAX (float `mtime` on every entry), V7 (no magic, typeflag `'\0'`) and bsdtar's
//!   restricted pax (numeric fields ending in a space, `LIBARCHIVE.xattr.*` + `SCHILY.xattr.*`).
//!
//! Extra shapes for edge cases: PAX global headers ([`TarBuilder::pax_global`]), old GNU sparse `'S'`
//! ([`TarBuilder::gnu_sparse_old`]), PAX sparse 0.0 / 1.0 ([`TarBuilder::pax_sparse_0_0`],
//! [`TarBuilder::pax_sparse_1_0`]), custom trailers ([`TarBuilder::finish_with`]).
//!
//! Names, links, unames and PAX values are byte strings (`Vec<u8>`), so non-UTF-8 names are possible.

use std::io;

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// Size of a tar record (GNU tar / bsdtar pad the archive to a multiple of this).
pub const RECORD: usize = 10240;

/// How numeric header fields are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumEnc {
    /// `width-1` zero-padded octal digits then NUL (Go, GNU tar, Python). Error if it does not fit.
    Octal,
    /// Octal if it fits, else GNU base-256 (first byte 0x80 / 0xff for negatives).
    OctalOrBase256,
    /// Always base-256.
    Base256,
    /// bsdtar: 8-byte fields `"000644 \0"`, 12-byte fields `"00000000000 "`.
    OctalSpace,
}

/// The magic/version field pair at offsets 257..265.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// `"ustar\0"` + `"00"`.
    Ustar,
    /// `"ustar "` + `" \0"`.
    Gnu,
    /// All NUL (V7).
    V7,
}

/// A header block described field by field. Strings are truncated to their field width without a
/// terminating NUL when they fill it (exactly like real writers).
#[derive(Clone, Debug)]
pub struct Header {
    pub name: Vec<u8>,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    pub mtime: i64,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
    pub magic: Magic,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// `None` = field left NUL.
    pub devmajor: Option<i64>,
    pub devminor: Option<i64>,
    /// USTAR prefix (offset 345, 155 bytes). Ignored for GNU/V7 magic.
    pub prefix: Vec<u8>,
    pub enc: NumEnc,
}

impl Header {
    /// A USTAR header with Go-writer defaults (mode 0644, root/root, mtime 0, typeflag `'0'`).
    pub fn new(name: impl Into<Vec<u8>>) -> Header {
        Header {
            name: name.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            typeflag: b'0',
            linkname: Vec::new(),
            magic: Magic::Ustar,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            devmajor: Some(0),
            devminor: Some(0),
            prefix: Vec::new(),
            enc: NumEnc::Octal,
        }
    }

    /// Encode into a block with a valid checksum.
    pub fn to_block(&self) -> io::Result<[u8; BLOCK]> {
        let mut b = [0u8; BLOCK];
        put_str(&mut b[0..100], &self.name);
        put_num(&mut b[100..108], self.mode, self.enc)?;
        put_num(&mut b[108..116], self.uid, self.enc)?;
        put_num(&mut b[116..124], self.gid, self.enc)?;
        put_num(&mut b[124..136], self.size, self.enc)?;
        put_num(&mut b[136..148], self.mtime, self.enc)?;
        b[156] = self.typeflag;
        put_str(&mut b[157..257], &self.linkname);
        match self.magic {
            Magic::Ustar => {
                b[257..263].copy_from_slice(b"ustar\0");
                b[263..265].copy_from_slice(b"00");
            }
            Magic::Gnu => {
                b[257..263].copy_from_slice(b"ustar ");
                b[263..265].copy_from_slice(b" \0");
            }
            Magic::V7 => {}
        }
        if self.magic != Magic::V7 {
            put_str(&mut b[265..297], &self.uname);
            put_str(&mut b[297..329], &self.gname);
            if let Some(v) = self.devmajor {
                put_num(&mut b[329..337], v, self.enc)?;
            }
            if let Some(v) = self.devminor {
                put_num(&mut b[337..345], v, self.enc)?;
            }
        }
        if self.magic == Magic::Ustar {
            put_str(&mut b[345..500], &self.prefix);
        }
        set_checksum(&mut b);
        Ok(b)
    }
}

/// Streams one regular file (header, data, padding) into a tar being written, for inputs too
/// large to build as [`Entry`] lists in memory. Returns the archive bytes written.
pub fn write_streamed_file(
    w: &mut impl io::Write,
    name: impl Into<Vec<u8>>,
    data: &[u8],
    mtime: i64,
) -> io::Result<u64> {
    let mut h = Header::new(name);
    h.size = data.len() as i64;
    h.mtime = mtime;
    w.write_all(&h.to_block()?)?;
    w.write_all(data)?;
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    w.write_all(&[0u8; BLOCK][..pad])?;
    Ok((BLOCK + data.len() + pad) as u64)
}

/// Compute and store the header checksum (`"%06o\0 "` of the unsigned byte sum with the checksum
/// field counted as spaces).
pub fn set_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| x as u32).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// True if the stored checksum matches the unsigned sum (used by the tests).
pub fn checksum_ok(b: &[u8; BLOCK]) -> bool {
    let field = &b[148..156];
    let txt: String = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(txt.trim(), 8) else {
        return false;
    };
    let mut c = *b;
    c[148..156].copy_from_slice(b"        ");
    c.iter().map(|&x| x as u32).sum::<u32>() == stored
}

fn put_str(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
}

fn octal_fits(v: i64, digits: usize) -> bool {
    v >= 0 && (digits >= 21 || (v as u64) < (1u64 << (3 * digits)))
}

/// Encode a number into a header field.
pub fn put_num(field: &mut [u8], v: i64, enc: NumEnc) -> io::Result<()> {
    let w = field.len();
    match enc {
        NumEnc::Octal => {
            if !octal_fits(v, w - 1) {
                return Err(invalid(format!(
                    "{v} does not fit an octal field of {w} bytes"
                )));
            }
            let s = format!("{:0width$o}", v, width = w - 1);
            field[..w - 1].copy_from_slice(s.as_bytes());
            field[w - 1] = 0;
        }
        NumEnc::OctalOrBase256 => {
            if octal_fits(v, w - 1) {
                put_num(field, v, NumEnc::Octal)?;
            } else {
                put_num(field, v, NumEnc::Base256)?;
            }
        }
        NumEnc::Base256 => {
            let bytes = v.to_be_bytes();
            let fill = if v < 0 { 0xff } else { 0 };
            for x in field.iter_mut() {
                *x = fill;
            }
            field[w - 8..].copy_from_slice(&bytes);
            if v >= 0 {
                field[0] |= 0x80;
            } // negatives: leading 0xff already has 0x80 set
        }
        NumEnc::OctalSpace => {
            let digits = if w == 8 { 6 } else { w - 1 };
            if !octal_fits(v, digits) {
                return Err(invalid(format!(
                    "{v} does not fit bsdtar field of {w} bytes"
                )));
            }
            let s = format!("{:0width$o} ", v, width = digits);
            field[..s.len()].copy_from_slice(s.as_bytes());
        }
    }
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A point in time: `secs + nanos / 1e9` with `0 <= nanos < 1e9` (so -1.5 s is `{-2, 500000000}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn secs(secs: i64) -> Time {
        Time { secs, nanos: 0 }
    }
    /// PAX text as GNU tar / Go write it: `"1700000000.123456789"`, `"-1.5"`, fraction trailing
    /// zeros trimmed, no fraction when whole.
    pub fn pax(&self) -> String {
        if self.nanos == 0 {
            return self.secs.to_string();
        }
        let (sign, secs, nanos) = if self.secs < 0 {
            ("-", -(self.secs + 1), 1_000_000_000 - self.nanos)
        } else {
            ("", self.secs, self.nanos)
        };
        let frac = format!("{nanos:09}");
        format!("{sign}{secs}.{}", frac.trim_end_matches('0'))
    }
    /// PAX text with all 9 fractional digits (GNU tar's atime/ctime).
    pub fn pax9(&self) -> String {
        if self.secs < 0 && self.nanos > 0 {
            return self.pax();
        }
        format!("{}.{:09}", self.secs, self.nanos)
    }
}

/// Entry kinds (typeflags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `'0'`
    Reg,
    /// `'\0'` (old regular file; a name ending in `/` makes it a directory for Go).
    RegA,
    /// `'1'`
    Hardlink,
    /// `'2'`
    Symlink,
    /// `'3'`
    Char,
    /// `'4'`
    Block,
    /// `'5'`
    Dir,
    /// `'6'`
    Fifo,
    /// Any other typeflag, data written per `data`.
    Other(u8),
}

impl Kind {
    pub fn typeflag(self) -> u8 {
        match self {
            Kind::Reg => b'0',
            Kind::RegA => 0,
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
            Kind::Other(c) => c,
        }
    }
}

/// One logical tar entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub ctime: Option<Time>,
    pub linkname: Vec<u8>,
    pub devmajor: i64,
    pub devminor: i64,
    pub data: Vec<u8>,
    /// Written as `SCHILY.xattr.<key>` (and `LIBARCHIVE.xattr.<key>` by bsdtar).
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Extra PAX records written verbatim (forces an `'x'` in PAX-capable styles).
    pub pax: Vec<(String, Vec<u8>)>,
    /// Override the header size field (default: `data.len()` for data-carrying kinds, else 0).
    pub size_override: Option<i64>,
}

const DEFAULT_MTIME: i64 = 1_700_000_000;

impl Entry {
    fn base(name: impl Into<Vec<u8>>, kind: Kind, mode: i64) -> Entry {
        Entry {
            name: name.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            mtime: Time::secs(DEFAULT_MTIME),
            atime: None,
            ctime: None,
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
            data: Vec::new(),
            xattrs: Vec::new(),
            pax: Vec::new(),
            size_override: None,
        }
    }
    pub fn file(name: impl Into<Vec<u8>>, data: impl Into<Vec<u8>>) -> Entry {
        let mut e = Entry::base(name, Kind::Reg, 0o644);
        e.data = data.into();
        e
    }
    /// Directory; the name is used as given (add the trailing `/` yourself if wanted).
    pub fn dir(name: impl Into<Vec<u8>>) -> Entry {
        Entry::base(name, Kind::Dir, 0o755)
    }
    pub fn symlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        let mut e = Entry::base(name, Kind::Symlink, 0o777);
        e.linkname = target.into();
        e
    }
    pub fn hardlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        let mut e = Entry::base(name, Kind::Hardlink, 0o644);
        e.linkname = target.into();
        e
    }
    pub fn char_dev(name: impl Into<Vec<u8>>, major: i64, minor: i64) -> Entry {
        let mut e = Entry::base(name, Kind::Char, 0o666);
        e.devmajor = major;
        e.devminor = minor;
        e
    }
    pub fn block_dev(name: impl Into<Vec<u8>>, major: i64, minor: i64) -> Entry {
        let mut e = Entry::base(name, Kind::Block, 0o660);
        e.devmajor = major;
        e.devminor = minor;
        e
    }
    pub fn fifo(name: impl Into<Vec<u8>>) -> Entry {
        Entry::base(name, Kind::Fifo, 0o644)
    }
    /// Overlay whiteout `<dir>/.wh.<name>` (an empty regular file).
    pub fn whiteout(dir: &str, name: &str) -> Entry {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{}/.wh.{name}", dir.trim_end_matches('/'))
        };
        Entry::base(p, Kind::Reg, 0o644)
    }
    /// Opaque-directory marker `<dir>/.wh..wh..opq`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::whiteout(dir, ".wh..opq")
    }
    pub fn mode(mut self, m: i64) -> Self {
        self.mode = m;
        self
    }
    pub fn kind(mut self, k: Kind) -> Self {
        self.kind = k;
        self
    }
    pub fn mtime(mut self, secs: i64) -> Self {
        self.mtime = Time::secs(secs);
        self
    }
    pub fn mtime_t(mut self, t: Time) -> Self {
        self.mtime = t;
        self
    }
    pub fn times(mut self, atime: Time, ctime: Time) -> Self {
        self.atime = Some(atime);
        self.ctime = Some(ctime);
        self
    }
    pub fn owner(mut self, uid: i64, gid: i64, uname: &str, gname: &str) -> Self {
        self.uid = uid;
        self.gid = gid;
        self.uname = uname.as_bytes().to_vec();
        self.gname = gname.as_bytes().to_vec();
        self
    }
    pub fn xattr(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.push((key.to_string(), value.into()));
        self
    }
    pub fn pax_record(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.pax.push((key.to_string(), value.into()));
        self
    }
    pub fn size_override(mut self, size: i64) -> Self {
        self.size_override = Some(size);
        self
    }
    fn carries_data(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Hardlink | Kind::Symlink | Kind::Char | Kind::Block | Kind::Dir | Kind::Fifo
        )
    }
    fn header_size(&self) -> i64 {
        self.size_override.unwrap_or(if self.carries_data() {
            self.data.len() as i64
        } else {
            0
        })
    }
}

/// Which tool's conventions [`TarBuilder::append`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// POSIX USTAR, long names split into prefix/name (Go's `splitUSTARPath`, UTF-8 allowed raw like
    /// CPython's USTAR_FORMAT); error if a name/link/number cannot be represented.
    Ustar,
    /// GNU tar `--format=gnu`: `"ustar  \0"`, `'L'`/`'K'` for names/links over 100 bytes, base-256
    /// for out-of-range numbers, dev fields only on devices, xattrs/extra PAX records dropped.
    Gnu,
    /// GNU tar `--format=posix`: an `'x'` (`<dir>/PaxHeaders/<base>`) before every entry with
    /// `atime`/`ctime` (9 fraction digits), `mtime` when fractional, `path`/`linkpath` when long or
    /// non-ASCII, `uid`/`gid`/`size` when out of range, `SCHILY.xattr.*`.
    GnuPosix,
    /// Go `archive/tar` with `Format` unset (containerd/moby layer diffs): USTAR when possible
    /// (prefix split), else an `'x'` (`<dir>/PaxHeaders.0/<base>`) with sorted records; mtime rounded.
    GoDefault,
    /// CPython `tarfile` PAX_FORMAT: an `'x'` (`././@PaxHeader`) before every entry with
    /// `mtime=<float>` (e.g. `1700000000.0`), `path` when long/non-ASCII.
    Python,
    /// V7: no magic, typeflag `'\0'` for regular files *and* directories (name must end in `/`),
    /// no uname/gname/dev fields; names must fit 100 bytes.
    V7,
    /// bsdtar restricted pax: USTAR blocks with space-terminated numeric fields; an `'x'`
    /// (`<dir>/PaxHeader/<base>`) only when needed, then also fractional `mtime`; xattrs twice as
    /// `LIBARCHIVE.xattr.<k>` (base64) and `SCHILY.xattr.<k>`.
    Bsdtar,
}

/// Builds a tar archive in memory.
#[derive(Default)]
pub struct TarBuilder {
    buf: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Append raw bytes (no padding, no checks).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// Append a raw block; if `fix_checksum`, its checksum is recomputed first.
    pub fn raw_block(&mut self, mut block: [u8; BLOCK], fix_checksum: bool) {
        if fix_checksum {
            set_checksum(&mut block);
        }
        self.buf.extend_from_slice(&block);
    }
    pub fn header(&mut self, h: &Header) -> io::Result<()> {
        let b = h.to_block()?;
        self.buf.extend_from_slice(&b);
        Ok(())
    }
    /// Append data padded with NULs to a block boundary.
    pub fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        let r = self.buf.len() % BLOCK;
        if r != 0 {
            self.buf.resize(self.buf.len() + BLOCK - r, 0);
        }
    }

    /// A PAX extended header (`'x'`) with the given records, named `name`.
    pub fn pax(
        &mut self,
        name: &[u8],
        records: &[(String, Vec<u8>)],
        enc: NumEnc,
    ) -> io::Result<()> {
        self.pax_typed(b'x', name, records, enc)
    }
    /// A PAX global header (`'g'`), e.g. `git archive`'s `pax_global_header` with `comment=<commit>`.
    pub fn pax_global(&mut self, name: &[u8], records: &[(String, Vec<u8>)]) -> io::Result<()> {
        self.pax_typed(b'g', name, records, NumEnc::Octal)
    }
    fn pax_typed(
        &mut self,
        flag: u8,
        name: &[u8],
        records: &[(String, Vec<u8>)],
        enc: NumEnc,
    ) -> io::Result<()> {
        let data = pax_records(records);
        let mut h = Header::new(name.to_vec());
        h.typeflag = flag;
        h.size = data.len() as i64;
        h.enc = enc;
        h.uname.clear();
        h.gname.clear();
        self.header(&h)?;
        self.data(&data);
        Ok(())
    }
    /// A GNU long name (`'L'`) or long link (`'K'`) entry: `././@LongLink`, data = value + NUL.
    pub fn gnu_long(&mut self, flag: u8, value: &[u8]) -> io::Result<()> {
        let mut h = Header::new(b"././@LongLink".to_vec());
        h.magic = Magic::Gnu;
        h.typeflag = flag;
        h.mode = 0;
        h.size = value.len() as i64 + 1;
        h.devmajor = None;
        h.devminor = None;
        h.enc = NumEnc::OctalOrBase256;
        self.header(&h)?;
        let mut d = value.to_vec();
        d.push(0);
        self.data(&d);
        Ok(())
    }

    /// Append an entry written the way `style` writes it.
    pub fn append(&mut self, e: &Entry, style: Style) -> io::Result<()> {
        match style {
            Style::Ustar => self.append_ustar(e),
            Style::Gnu => self.append_gnu(e),
            Style::GnuPosix | Style::GoDefault | Style::Python | Style::Bsdtar => {
                self.append_pax(e, style)
            }
            Style::V7 => self.append_v7(e),
        }
    }
    pub fn append_all(&mut self, entries: &[Entry], style: Style) -> io::Result<()> {
        for e in entries {
            self.append(e, style)?;
        }
        Ok(())
    }

    fn base_header(e: &Entry, enc: NumEnc) -> Header {
        let mut h = Header::new(e.name.clone());
        h.mode = e.mode;
        h.uid = e.uid;
        h.gid = e.gid;
        h.size = e.header_size();
        h.mtime = e.mtime.secs;
        h.typeflag = e.kind.typeflag();
        h.linkname = e.linkname.clone();
        h.uname = e.uname.clone();
        h.gname = e.gname.clone();
        h.devmajor = Some(e.devmajor);
        h.devminor = Some(e.devminor);
        h.enc = enc;
        h
    }

    fn finish_entry(&mut self, h: &Header, e: &Entry) -> io::Result<()> {
        self.header(h)?;
        if e.carries_data() {
            self.data(&e.data);
        } else if !e.data.is_empty() {
            // Data on a header-only type: written anyway (Go will then misparse — caller's choice).
            self.data(&e.data);
        }
        Ok(())
    }

    fn append_ustar(&mut self, e: &Entry) -> io::Result<()> {
        let mut h = Self::base_header(e, NumEnc::Octal);
        if e.name.len() > 100 {
            let (p, n) = split_ustar_path(&e.name).ok_or_else(|| {
                invalid(format!(
                    "USTAR cannot split {:?}",
                    String::from_utf8_lossy(&e.name)
                ))
            })?;
            h.prefix = p;
            h.name = n;
        }
        if e.linkname.len() > 100 {
            return Err(invalid(
                "USTAR cannot store a link name over 100 bytes".into(),
            ));
        }
        self.finish_entry(&h, e)
    }

    fn append_gnu(&mut self, e: &Entry) -> io::Result<()> {
        if e.linkname.len() > 100 {
            self.gnu_long(b'K', &e.linkname)?;
        }
        if e.name.len() > 100 {
            self.gnu_long(b'L', &e.name)?;
        }
        let mut h = Self::base_header(e, NumEnc::OctalOrBase256);
        h.magic = Magic::Gnu;
        if !matches!(e.kind, Kind::Char | Kind::Block) {
            h.devmajor = None;
            h.devminor = None;
        }
        self.finish_entry(&h, e)
    }

    fn append_v7(&mut self, e: &Entry) -> io::Result<()> {
        if e.name.len() > 100 || e.linkname.len() > 100 {
            return Err(invalid("V7 names and links must fit 100 bytes".into()));
        }
        let mut h = Self::base_header(e, NumEnc::Octal);
        h.magic = Magic::V7;
        if matches!(e.kind, Kind::Reg | Kind::Dir) {
            h.typeflag = 0;
        }
        if e.kind == Kind::Dir && !e.name.ends_with(b"/") {
            h.name.push(b'/');
        }
        self.finish_entry(&h, e)
    }

    fn append_pax(&mut self, e: &Entry, style: Style) -> io::Result<()> {
        let enc = if style == Style::Bsdtar {
            NumEnc::OctalSpace
        } else {
            NumEnc::Octal
        };
        let mut recs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut h = Self::base_header(e, enc);
        let ascii = |s: &[u8]| s.iter().all(|&c| c < 0x80);

        // Name.
        let long_name = e.name.len() > 100;
        match style {
            Style::GoDefault | Style::Bsdtar => {
                if !ascii(&e.name) || (long_name && split_ustar_path(&e.name).is_none()) {
                    recs.push(("path".into(), e.name.clone()));
                    h.name = to_ascii_trunc(&e.name, 100);
                } else if long_name {
                    let (p, n) = split_ustar_path(&e.name).unwrap();
                    h.prefix = p;
                    h.name = n;
                }
            }
            Style::GnuPosix | Style::Python => {
                if !ascii(&e.name) || long_name {
                    recs.push(("path".into(), e.name.clone()));
                    h.name = to_ascii_trunc(&e.name, 100);
                }
            }
            _ => unreachable!(),
        }
        if !ascii(&e.linkname) || e.linkname.len() > 100 {
            recs.push(("linkpath".into(), e.linkname.clone()));
            h.linkname = to_ascii_trunc(&e.linkname, 100);
        }
        // Numbers out of range.
        let digits8 = if enc == NumEnc::OctalSpace { 6 } else { 7 };
        for (key, v, field) in [("uid", e.uid, &mut h.uid), ("gid", e.gid, &mut h.gid)] {
            if !octal_fits(v, digits8) {
                recs.push((key.into(), v.to_string().into_bytes()));
                *field = 0;
            }
        }
        if !octal_fits(h.size, 11) {
            recs.push(("size".into(), h.size.to_string().into_bytes()));
            h.size = 0;
        }
        // Times.
        let mt = e.mtime;
        match style {
            Style::GoDefault => {
                // Rounded to the nearest second (Go's USTAR/PAX writer drops sub-second mtime
                // unless the format is forced to PAX); out-of-range seconds go to PAX.
                let secs = mt.secs + if mt.nanos >= 500_000_000 { 1 } else { 0 };
                h.mtime = secs;
                if !octal_fits(secs, 11) {
                    recs.push(("mtime".into(), secs.to_string().into_bytes()));
                    h.mtime = 0;
                }
            }
            Style::GnuPosix => {
                if mt.nanos != 0 || !octal_fits(mt.secs, 11) {
                    recs.push(("mtime".into(), mt.pax9().into_bytes()));
                }
                let at = e.atime.unwrap_or(mt);
                let ct = e.ctime.unwrap_or(mt);
                recs.push(("atime".into(), at.pax9().into_bytes()));
                recs.push(("ctime".into(), ct.pax9().into_bytes()));
                h.mtime = mt.secs.max(0);
            }
            Style::Python => {
                // str(float): 7 significant fraction digits at most, always a ".0" for whole values.
                let f = mt.secs as f64 + mt.nanos as f64 / 1e9;
                let mut s = format!("{f}");
                if !s.contains('.') {
                    s.push_str(".0");
                }
                recs.push(("mtime".into(), s.into_bytes()));
                h.mtime = mt.secs.max(0);
            }
            Style::Bsdtar => {
                h.mtime = mt.secs.max(0);
                if !octal_fits(mt.secs, 11) {
                    recs.push(("mtime".into(), mt.pax().into_bytes()));
                }
            }
            _ => unreachable!(),
        }
        if style != Style::GnuPosix {
            if let Some(a) = e.atime {
                recs.push(("atime".into(), a.pax().into_bytes()));
            }
            if let Some(c) = e.ctime {
                recs.push(("ctime".into(), c.pax().into_bytes()));
            }
        }
        for (k, v) in &e.xattrs {
            if style == Style::Bsdtar {
                recs.push((format!("LIBARCHIVE.xattr.{k}"), base64(v).into_bytes()));
            }
            recs.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        recs.extend(e.pax.iter().cloned());

        let always = matches!(style, Style::GnuPosix | Style::Python);
        if always || !recs.is_empty() {
            if style == Style::Bsdtar && mt.nanos != 0 && !recs.iter().any(|(k, _)| k == "mtime") {
                recs.push(("mtime".into(), mt.pax().into_bytes()));
            }
            if style == Style::GoDefault {
                recs.sort();
            }
            let xname = match style {
                Style::Python => b"././@PaxHeader".to_vec(),
                Style::GoDefault => pax_header_name(&e.name, "PaxHeaders.0"),
                Style::GnuPosix => pax_header_name(&e.name, "PaxHeaders"),
                Style::Bsdtar => pax_header_name(&e.name, "PaxHeader"),
                _ => unreachable!(),
            };
            self.pax(&xname, &recs, enc)?;
        }
        self.finish_entry(&h, e)
    }

    /// Old GNU sparse file (`'S'`): `fragments` = (offset, length) of the stored data pieces in the
    /// expanded file; `data` = the concatenated stored pieces. At most 4 fragments (no extension
    /// blocks).
    pub fn gnu_sparse_old(
        &mut self,
        name: &[u8],
        real_size: i64,
        fragments: &[(i64, i64)],
        data: &[u8],
    ) -> io::Result<()> {
        assert!(fragments.len() <= 4);
        let mut h = Header::new(name.to_vec());
        h.magic = Magic::Gnu;
        h.typeflag = b'S';
        h.size = data.len() as i64;
        h.devmajor = None;
        h.devminor = None;
        h.mtime = DEFAULT_MTIME;
        let mut b = h.to_block()?;
        for (i, &(off, len)) in fragments.iter().enumerate() {
            let at = 386 + 24 * i;
            put_num(&mut b[at..at + 12], off, NumEnc::Octal)?;
            put_num(&mut b[at + 12..at + 24], len, NumEnc::Octal)?;
        }
        put_num(&mut b[483..495], real_size, NumEnc::Octal)?;
        self.raw_block(b, true);
        self.data(data);
        Ok(())
    }

    /// PAX sparse format 0.0 (GNU tar `--sparse-version=0.0`): records `GNU.sparse.size`,
    /// `GNU.sparse.numblocks` and alternating `GNU.sparse.offset`/`GNU.sparse.numbytes`.
    pub fn pax_sparse_0_0(
        &mut self,
        name: &[u8],
        real_size: i64,
        fragments: &[(i64, i64)],
        data: &[u8],
    ) -> io::Result<()> {
        let mut recs = vec![
            (
                "GNU.sparse.size".to_string(),
                real_size.to_string().into_bytes(),
            ),
            (
                "GNU.sparse.numblocks".to_string(),
                fragments.len().to_string().into_bytes(),
            ),
        ];
        for &(o, l) in fragments {
            recs.push(("GNU.sparse.offset".into(), o.to_string().into_bytes()));
            recs.push(("GNU.sparse.numbytes".into(), l.to_string().into_bytes()));
        }
        self.pax(&pax_header_name(name, "PaxHeaders"), &recs, NumEnc::Octal)?;
        let mut h = Header::new(name.to_vec());
        h.size = data.len() as i64;
        h.mtime = DEFAULT_MTIME;
        self.header(&h)?;
        self.data(data);
        Ok(())
    }

    /// PAX sparse format 1.0 (GNU tar / bsdtar default): header name `./GNUSparseFile.0/<name>`,
    /// records `GNU.sparse.major=1`, `minor=0`, `name`, `realsize`; the data starts with the map
    /// (`n\noff\nlen\n…` padded to 512) followed by the stored pieces.
    pub fn pax_sparse_1_0(
        &mut self,
        name: &[u8],
        real_size: i64,
        fragments: &[(i64, i64)],
        data: &[u8],
    ) -> io::Result<()> {
        let recs = vec![
            ("GNU.sparse.major".to_string(), b"1".to_vec()),
            ("GNU.sparse.minor".to_string(), b"0".to_vec()),
            ("GNU.sparse.name".to_string(), name.to_vec()),
            (
                "GNU.sparse.realsize".to_string(),
                real_size.to_string().into_bytes(),
            ),
        ];
        let mut fake = b"./GNUSparseFile.0/".to_vec();
        fake.extend_from_slice(name);
        self.pax(&pax_header_name(&fake, "PaxHeaders"), &recs, NumEnc::Octal)?;
        let mut map = format!("{}\n", fragments.len()).into_bytes();
        for &(o, l) in fragments {
            map.extend_from_slice(format!("{o}\n{l}\n").as_bytes());
        }
        let r = map.len() % BLOCK;
        if r != 0 {
            map.resize(map.len() + BLOCK - r, 0);
        }
        map.extend_from_slice(data);
        let mut h = Header::new(to_ascii_trunc(&fake, 100));
        h.size = map.len() as i64;
        h.mtime = DEFAULT_MTIME;
        self.header(&h)?;
        self.data(&map);
        Ok(())
    }

    /// Two zero blocks; if `pad_record`, then NULs up to a multiple of [`RECORD`].
    pub fn finish(self, pad_record: bool) -> Vec<u8> {
        self.finish_with(2, pad_record)
    }
    /// `zero_blocks` end-of-archive blocks (0, 1 or 2 — Go accepts all three), optional record padding.
    pub fn finish_with(mut self, zero_blocks: usize, pad_record: bool) -> Vec<u8> {
        self.buf.resize(self.buf.len() + zero_blocks * BLOCK, 0);
        if pad_record {
            let r = self.buf.len() % RECORD;
            if r != 0 {
                self.buf.resize(self.buf.len() + RECORD - r, 0);
            }
        }
        self.buf
    }
}

/// Encode PAX records `"<len> key=value\n"`.
pub fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ' '=' '\n'
        let mut len = body + 1;
        loop {
            let digits = len.to_string().len();
            if body + digits == len {
                break;
            }
            len = body + digits;
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Go's `splitUSTARPath` without the ASCII restriction.
pub fn split_ustar_path(name: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut length = name.len();
    if length <= 100 {
        return None;
    } else if length > 156 {
        length = 156;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&c| c == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > 100 || nlen == 0 || i > 155 {
        return None;
    }
    Some((name[..i].to_vec(), name[i + 1..].to_vec()))
}

fn to_ascii_trunc(s: &[u8], n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.iter().copied().filter(|&c| c < 0x80).collect();
    v.truncate(n);
    v
}

fn pax_header_name(name: &[u8], dir: &str) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (d, base) = match trimmed.iter().rposition(|&c| c == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"."[..], trimmed),
    };
    let mut out = d.to_vec();
    out.push(b'/');
    out.extend_from_slice(dir.as_bytes());
    out.push(b'/');
    out.extend_from_slice(base);
    to_ascii_trunc(&out, 100)
}

/// Standard base64 without padding (libarchive's xattr encoding).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        let k = c.len() + 1;
        for i in 0..k {
            s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(t: &[u8]) -> Vec<[u8; BLOCK]> {
        t.chunks(BLOCK).map(|c| c.try_into().unwrap()).collect()
    }

    #[test]
    fn every_style_writes_valid_blocks() {
        let long = "d/".repeat(60) + "file-with-a-long-name.txt";
        let entries = vec![
            Entry::dir("etc/"),
            Entry::file("etc/hosts", b"127.0.0.1 localhost\n".to_vec()),
            Entry::file(long.clone(), vec![7u8; 1000]).mtime_t(Time {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            }),
            Entry::symlink("link", "etc/hosts"),
            Entry::fifo("fifo"),
        ];
        for style in [
            Style::Ustar,
            Style::Gnu,
            Style::GnuPosix,
            Style::GoDefault,
            Style::Python,
            Style::Bsdtar,
        ] {
            let mut t = TarBuilder::new();
            t.append_all(&entries, style).unwrap();
            let out = t.finish(true);
            assert_eq!(out.len() % RECORD, 0, "{style:?}");
            let bs = blocks(&out);
            // First block is a header for every style.
            assert!(checksum_ok(&bs[0]), "{style:?}");
        }
        let mut t = TarBuilder::new();
        t.append(&Entry::file("x", b"abc".to_vec()), Style::V7)
            .unwrap();
        let out = t.finish(false);
        assert_eq!(out.len(), 4 * BLOCK);
        assert!(checksum_ok(&blocks(&out)[0]));
        assert_eq!(&out[257..265], &[0u8; 8]);
        assert_eq!(out[156], 0);
    }

    #[test]
    fn numbers_and_records() {
        let mut f = [0u8; 8];
        put_num(&mut f, 0o644, NumEnc::Octal).unwrap();
        assert_eq!(&f, b"0000644\0");
        put_num(&mut f, 0o644, NumEnc::OctalSpace).unwrap();
        assert_eq!(&f, b"000644 \0");
        let mut f = [0u8; 12];
        put_num(&mut f, -315619200, NumEnc::OctalOrBase256).unwrap();
        assert_eq!(&f[..4], &[0xff; 4]);
        assert_eq!(i64::from_be_bytes(f[4..].try_into().unwrap()), -315619200);
        put_num(&mut f, 0, NumEnc::OctalSpace).unwrap();
        assert_eq!(&f, b"00000000000 ");
        assert_eq!(
            pax_records(&[("path".into(), b"p".to_vec())]),
            b"9 path=p\n"
        );
        assert_eq!(pax_records(&[("a".into(), vec![b'x'; 93])])[..3], *b"99 ");
        assert_eq!(pax_records(&[("a".into(), vec![b'x'; 94])]).len(), 101);
        assert_eq!(
            Time {
                secs: -2,
                nanos: 500_000_000
            }
            .pax(),
            "-1.5"
        );
        assert_eq!(
            Time {
                secs: 5,
                nanos: 120_000_000
            }
            .pax(),
            "5.12"
        );
        assert_eq!(base64(b"ab"), "YWI");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn ustar_split_and_gnu_long() {
        let name = format!("{}/{}", "p".repeat(150), "n".repeat(100));
        let (p, n) = split_ustar_path(name.as_bytes()).unwrap();
        assert_eq!(p.len(), 150);
        assert_eq!(n.len(), 100);
        assert!(split_ustar_path("x".repeat(300).as_bytes()).is_none());
        let mut t = TarBuilder::new();
        t.append(&Entry::file("y".repeat(300), b"hi".to_vec()), Style::Gnu)
            .unwrap();
        let out = t.finish(false);
        // 'L' header + 1 data block (301 bytes) + header + data + 2 zero blocks.
        assert_eq!(out.len(), 6 * BLOCK);
        assert_eq!(out[156], b'L');
        assert_eq!(&out[257..265], b"ustar  \0");
        for b in blocks(&out)[..1].iter().chain(&blocks(&out)[2..3]) {
            assert!(checksum_ok(b));
        }
    }
}
