//! A push-driven tar reader with the semantics of Go's `archive/tar` `Reader.Next()` (go1.26.8,
//! including the 1.26.2+ sparse-map limits), as described in `go-tar-semantics.md`.
//!
//! Upstream SOCI builds its TOC from the headers Go returns and from the number of bytes Go has
//! consumed when `Next()` returns (the entry's data offset). This reader reproduces both, byte for
//! byte, but is fed by the caller ([`TarStreamReader::push`]) so that it can sit behind an
//! inflater: it never reads, never buffers file data, and keeps in memory at most one meta entry
//! (≤ 1 MiB) or one sparse map (≤ 1 MiB of PAX 1.0 map text, or the fragments of an old GNU map).
//!
//! Byte strings (names, links, user and group names, PAX keys and values) are kept raw: Go strings
//! are byte strings and real archives contain Latin-1 and invalid UTF-8 names.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use crate::gotime::{GoTime, parse_go_int, parse_pax_time};

const BLOCK_SIZE: usize = 512;
/// `maxSpecialFileSize`: the largest meta entry ('x', 'g', 'L', 'K') and PAX 1.0 sparse map.
const MAX_SPECIAL_FILE_SIZE: usize = 1 << 20;
/// `maxSparseFileEntries` (Go ≥ 1.26.2).
const MAX_SPARSE_FILE_ENTRIES: usize = 1 << 20;

const TYPE_REG: u8 = b'0';
const TYPE_REG_A: u8 = b'\0';
const TYPE_DIR: u8 = b'5';
const TYPE_X_HEADER: u8 = b'x';
const TYPE_X_GLOBAL_HEADER: u8 = b'g';
const TYPE_GNU_SPARSE: u8 = b'S';
const TYPE_GNU_LONG_NAME: u8 = b'L';
const TYPE_GNU_LONG_LINK: u8 = b'K';

const PAX_GNU_SPARSE_NUM_BLOCKS: &[u8] = b"GNU.sparse.numblocks";
const PAX_GNU_SPARSE_OFFSET: &[u8] = b"GNU.sparse.offset";
const PAX_GNU_SPARSE_NUM_BYTES: &[u8] = b"GNU.sparse.numbytes";
const PAX_GNU_SPARSE_MAP: &[u8] = b"GNU.sparse.map";
const PAX_GNU_SPARSE_NAME: &[u8] = b"GNU.sparse.name";
const PAX_GNU_SPARSE_MAJOR: &[u8] = b"GNU.sparse.major";
const PAX_GNU_SPARSE_MINOR: &[u8] = b"GNU.sparse.minor";
const PAX_GNU_SPARSE_SIZE: &[u8] = b"GNU.sparse.size";
const PAX_GNU_SPARSE_REAL_SIZE: &[u8] = b"GNU.sparse.realsize";

/// PAX records as Go returns them in `Header.PAXRecords`.
pub type PaxRecords = BTreeMap<Vec<u8>, Vec<u8>>;

/// Go's `Header.Format` of a returned entry (§10). Only these four values can be returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Unknown,
    Ustar,
    Pax,
    Gnu,
}

impl fmt::Display for Format {
    /// Go's `Format.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Unknown => "<unknown>",
            Format::Ustar => "USTAR",
            Format::Pax => "PAX",
            Format::Gnu => "GNU",
        })
    }
}

/// A set of possible formats, like Go's `Format` bit set while a header is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FormatSet(u8);

impl FormatSet {
    const NONE: FormatSet = FormatSet(0);
    const USTAR: FormatSet = FormatSet(1);
    const PAX: FormatSet = FormatSet(2);
    const GNU: FormatSet = FormatSet(4);
    const USTAR_OR_PAX: FormatSet = FormatSet(1 | 2);
    const ALL: FormatSet = FormatSet(1 | 2 | 4);

    fn has(self, other: FormatSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Go's `Format.mayOnlyBe`.
    fn restrict(&mut self, other: FormatSet) {
        self.0 &= other.0;
    }

    /// The single format a returned header carries. Sets with several members never reach this
    /// point (the USTAR/PAX ambiguity is resolved before), so the order only matters in theory.
    fn to_format(self) -> Format {
        if self.has(Self::USTAR) {
            Format::Ustar
        } else if self.has(Self::PAX) {
            Format::Pax
        } else if self.has(Self::GNU) {
            Format::Gnu
        } else {
            Format::Unknown
        }
    }
}

/// An error `Reader.Next()` would return, or one from outside the tar format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// Go's `ErrHeader`, with a short reason of ours after the colon.
    #[error("archive/tar: invalid tar header: {0}")]
    Header(String),
    /// Go's `io.ErrUnexpectedEOF`: the stream ended inside something that must be complete.
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// Go's `ErrFieldTooLong`: a meta entry larger than 1 MiB.
    #[error("archive/tar: header field too long")]
    FieldTooLong,
    /// Go's `errSparseTooLong`: a sparse map beyond the 1 MiB / 2^20-fragment limits.
    #[error("archive/tar: sparse map too long")]
    SparseTooLong,
    /// The underlying reader of [`read_all`] / [`read_stream`] failed.
    #[error("read error: {0}")]
    Io(String),
    /// The caller's `on_entry` callback asked to stop, with this reason.
    #[error("{0}")]
    Aborted(String),
}

fn header_error(reason: impl Into<String>) -> TarError {
    TarError::Header(reason.into())
}

/// One entry as Go's `Reader.Next()` returns it, with the fields a TOC needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// Final name (§11), raw bytes.
    pub name: Vec<u8>,
    /// Final typeflag, after the `'\0'` → `'0'`/`'5'` conversion.
    pub typeflag: u8,
    /// Bytes of the stream consumed when `Next()` returned (P of §8).
    pub data_offset: u64,
    /// Final `Size` (§11): the expanded size for sparse files, 0 for `'g'`, reported as stored
    /// (possibly non-zero or negative) for header-only types.
    pub size: i64,
    pub linkname: Vec<u8>,
    /// Raw mode, no masking.
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// For `'g'` entries this is [`GoTime::ZERO`] (test with [`GoTime::is_zero`]).
    pub mod_time: GoTime,
    pub devmajor: i64,
    pub devminor: i64,
    /// The records of the `'x'` that preceded the entry (the `'g'`'s own for a `'g'` entry);
    /// `None` when there was none.
    pub pax_records: Option<PaxRecords>,
    pub format: Format,
}

impl TarEntry {
    /// The mod time as upstream's TOC stores it: Go's `MarshalText`, empty when that fails.
    pub fn mod_time_text(&self) -> String {
        self.mod_time.marshal_text().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Field parsing (strconv.go)
// ---------------------------------------------------------------------------------------------

/// `parser.parseString`: the bytes before the first NUL.
fn parse_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|&c| c == 0) {
        Some(nul) => &field[..nul],
        None => field,
    }
}

/// `parser.parseNumeric`: base-256 when the top bit is set, octal otherwise.
fn parse_numeric(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return parse_octal(field);
    };
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    let invert = if first & 0x40 != 0 { 0xff } else { 0x00 };
    let mut value: u64 = 0;
    for (i, &byte) in field.iter().enumerate() {
        let mut byte = byte ^ invert;
        if i == 0 {
            byte &= 0x7f; // the marker bit is not part of the value
        }
        if value >> 56 != 0 {
            return None;
        }
        value = value << 8 | u64::from(byte);
    }
    let value = i64::try_from(value).ok()?;
    // Two's complement: the inverted magnitude V stands for -V-1.
    Some(if invert == 0xff { !value } else { value })
}

/// `parser.parseOctal`: trim spaces and NULs at both ends, empty is 0, cut at an interior NUL,
/// then strict octal digits.
fn parse_octal(field: &[u8]) -> Option<i64> {
    let is_pad = |c: &u8| *c == b' ' || *c == 0;
    let start = field.iter().position(|c| !is_pad(c)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|c| !is_pad(c))
        .map_or(start, |i| i + 1);
    let trimmed = &field[start..end];
    if trimmed.is_empty() {
        return Some(0);
    }
    let digits = parse_string(trimmed);
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &c in digits {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    // Go converts with int64(x), wrapping; unreachable with fields of at most 12 digits.
    Some(value as i64)
}

/// Parses numeric fields, remembering the first failure like Go's `parser.err` so that the error
/// is reported after the whole block has been decoded.
#[derive(Default)]
struct NumericFields {
    first_error: Option<&'static str>,
}

impl NumericFields {
    fn parse(&mut self, field: &[u8], what: &'static str) -> i64 {
        parse_numeric(field).unwrap_or_else(|| {
            self.first_error.get_or_insert(what);
            0
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Header blocks (format.go, Reader.readHeader)
// ---------------------------------------------------------------------------------------------

/// What the magic of a block with a valid checksum says (`block.getFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    V7,
    Ustar,
    Star,
    Gnu,
}

fn is_zero_block(block: &[u8; BLOCK_SIZE]) -> bool {
    block.iter().all(|&c| c == 0)
}

/// `block.getFormat`: `None` when the checksum matches neither the unsigned nor the signed sum.
fn block_kind(block: &[u8; BLOCK_SIZE]) -> Option<BlockKind> {
    let stored = parse_octal(&block[148..156])?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in block.iter().enumerate() {
        // The checksum field counts as spaces.
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    if stored != unsigned && stored != signed {
        return None;
    }
    let magic = &block[257..263];
    let version = &block[263..265];
    Some(match magic {
        b"ustar\0" if &block[508..512] == b"tar\0" => BlockKind::Star,
        b"ustar\0" => BlockKind::Ustar,
        b"ustar " if version == b" \0" => BlockKind::Gnu,
        _ => BlockKind::V7,
    })
}

/// A header as `readHeader` decodes it, then as the PAX and GNU overrides change it.
#[derive(Clone, Debug)]
struct Header {
    typeflag: u8,
    name: Vec<u8>,
    linkname: Vec<u8>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mod_time: GoTime,
    uname: Vec<u8>,
    gname: Vec<u8>,
    devmajor: i64,
    devminor: i64,
    /// The formats this block alone allows (Go's `hdr.Format` after `readHeader`).
    block_formats: FormatSet,
    kind: BlockKind,
    pax_records: Option<PaxRecords>,
}

/// `Reader.readHeader` for a non-zero block.
fn decode_header(block: &[u8; BLOCK_SIZE]) -> Result<Header, TarError> {
    let kind = block_kind(block).ok_or_else(|| header_error("checksum mismatch"))?;
    let mut numbers = NumericFields::default();
    let mut header = Header {
        typeflag: block[156],
        name: parse_string(&block[0..100]).to_vec(),
        linkname: parse_string(&block[157..257]).to_vec(),
        size: numbers.parse(&block[124..136], "size"),
        mode: numbers.parse(&block[100..108], "mode"),
        uid: numbers.parse(&block[108..116], "uid"),
        gid: numbers.parse(&block[116..124], "gid"),
        mod_time: GoTime::unix(numbers.parse(&block[136..148], "mtime"), 0),
        uname: Vec::new(),
        gname: Vec::new(),
        devmajor: 0,
        devminor: 0,
        block_formats: FormatSet::NONE,
        kind,
        pax_records: None,
    };

    if kind != BlockKind::V7 {
        header.uname = parse_string(&block[265..297]).to_vec();
        header.gname = parse_string(&block[297..329]).to_vec();
        header.devmajor = numbers.parse(&block[329..337], "devmajor");
        header.devminor = numbers.parse(&block[337..345], "devminor");

        let prefix: &[u8] = match kind {
            BlockKind::Ustar => {
                // Strict USTAR (for Format only): ASCII block, numeric fields NUL-terminated.
                let nul_terminated = [136, 108, 116, 124, 148, 337, 345]
                    .iter()
                    .all(|&end| block[end - 1] == 0);
                if nul_terminated && block.is_ascii() {
                    header.block_formats = FormatSet::USTAR_OR_PAX;
                }
                parse_string(&block[345..500])
            }
            BlockKind::Star => {
                // atime and ctime are not reported, but their parse errors are fatal.
                numbers.parse(&block[476..488], "atime");
                numbers.parse(&block[488..500], "ctime");
                parse_string(&block[345..476])
            }
            BlockKind::Gnu => {
                let time_is_bad = |field: &[u8]| field[0] != 0 && parse_numeric(field).is_none();
                if time_is_bad(&block[345..357]) || time_is_bad(&block[357..369]) {
                    // Pre-Go-1.8 writers put a USTAR prefix here: use it if it is ASCII.
                    let prefix = parse_string(&block[345..500]);
                    if prefix.is_ascii() { prefix } else { &[] }
                } else {
                    header.block_formats = FormatSet::GNU;
                    &[]
                }
            }
            BlockKind::V7 => &[],
        };
        if !prefix.is_empty() {
            let mut name = Vec::with_capacity(prefix.len() + 1 + header.name.len());
            name.extend_from_slice(prefix);
            name.push(b'/');
            name.extend_from_slice(&header.name);
            header.name = name;
        }
    }

    match numbers.first_error {
        Some(field) => Err(header_error(format!("invalid numeric field {field}"))),
        None => Ok(header),
    }
}

/// `isHeaderOnlyType`: these never own data bytes, whatever their size field says.
fn is_header_only_type(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

/// `handleRegularFile`: the number of data bytes that follow the header.
fn data_length(header: &Header) -> Result<u64, TarError> {
    if is_header_only_type(header.typeflag) {
        return Ok(0);
    }
    u64::try_from(header.size).map_err(|_| header_error("negative size"))
}

/// `blockPadding`.
fn padding_after(length: u64) -> u64 {
    length.wrapping_neg() % BLOCK_SIZE as u64
}

// ---------------------------------------------------------------------------------------------
// PAX records (parsePAX, parsePAXRecord, mergePAX)
// ---------------------------------------------------------------------------------------------

/// One PAX record and the input after it.
struct PaxRecord<'a> {
    key: &'a [u8],
    value: &'a [u8],
    rest: &'a [u8],
}

/// `parsePAXRecord`: one `"<len> <key>=<value>\n"` record.
fn parse_pax_record(input: &[u8]) -> Result<PaxRecord<'_>, TarError> {
    let bad = || header_error("invalid PAX record");
    let space = input.iter().position(|&c| c == b' ').ok_or_else(bad)?;
    let (length_text, rest) = (&input[..space], &input[space + 1..]);
    let length = parse_go_int(length_text).ok_or_else(bad)?;
    let length = usize::try_from(length).map_err(|_| bad())?;
    if length < 5 || length > input.len() {
        return Err(bad());
    }
    // From here on, `length` indexes `rest`.
    let length = length
        .checked_sub(length_text.len() + 1)
        .filter(|&n| n > 0)
        .ok_or_else(bad)?;
    let (record, newline, remainder) = (&rest[..length - 1], rest[length - 1], &rest[length..]);
    if newline != b'\n' {
        return Err(bad());
    }
    let equals = record.iter().position(|&c| c == b'=').ok_or_else(bad)?;
    let (key, value) = (&record[..equals], &record[equals + 1..]);
    let valid = !key.is_empty()
        && match key {
            b"path" | b"linkpath" | b"uname" | b"gname" => !value.contains(&0),
            _ => !key.contains(&0),
        };
    if !valid {
        return Err(bad());
    }
    Ok(PaxRecord {
        key,
        value,
        rest: remainder,
    })
}

/// `parsePAX`: the records of an `'x'` or `'g'` entry; GNU sparse 0.0 offset/numbytes pairs are
/// folded into a synthesised `GNU.sparse.map`.
fn parse_pax(data: &[u8]) -> Result<PaxRecords, TarError> {
    let mut records = PaxRecords::new();
    let mut sparse_map: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let PaxRecord {
            key,
            value,
            rest: remainder,
        } = parse_pax_record(rest)?;
        rest = remainder;
        if key == PAX_GNU_SPARSE_OFFSET || key == PAX_GNU_SPARSE_NUM_BYTES {
            let expected = if sparse_map.len().is_multiple_of(2) {
                PAX_GNU_SPARSE_OFFSET
            } else {
                PAX_GNU_SPARSE_NUM_BYTES
            };
            if key != expected || value.contains(&b',') {
                return Err(header_error("invalid GNU sparse 0.0 record"));
            }
            sparse_map.push(value);
        } else {
            records.insert(key.to_vec(), value.to_vec());
        }
    }
    if !sparse_map.is_empty() {
        records.insert(PAX_GNU_SPARSE_MAP.to_vec(), sparse_map.join(&b','));
    }
    Ok(records)
}

/// `mergePAX`: applies non-empty records onto the header. Go iterates its map in random order
/// and stops at the first bad value; we use key order, which is one of Go's possible orders (it
/// only matters for a `'g'` whose records fail to merge, §5.2).
fn merge_pax(header: &mut Header, records: &PaxRecords) -> Result<(), TarError> {
    for (key, value) in records {
        if value.is_empty() {
            continue; // keep the header's value
        }
        let bad = || header_error(format!("invalid PAX {}", String::from_utf8_lossy(key)));
        match key.as_slice() {
            b"path" => header.name.clone_from(value),
            b"linkpath" => header.linkname.clone_from(value),
            b"uname" => header.uname.clone_from(value),
            b"gname" => header.gname.clone_from(value),
            b"uid" => header.uid = parse_go_int(value).ok_or_else(bad)?,
            b"gid" => header.gid = parse_go_int(value).ok_or_else(bad)?,
            b"size" => header.size = parse_go_int(value).ok_or_else(bad)?,
            b"mtime" => header.mod_time = parse_pax_time(value).map_err(|()| bad())?,
            // Access and change times are not reported, but must parse.
            b"atime" | b"ctime" => {
                parse_pax_time(value).map_err(|()| bad())?;
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sparse maps (readOldGNUSparseMap, readGNUSparsePAXHeaders, readGNUSparseMap1x0/0x1)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct SparseEntry {
    offset: i64,
    length: i64,
}

/// `appendSparseEntry`.
fn append_sparse_entry(
    fragments: &mut Vec<SparseEntry>,
    entry: SparseEntry,
) -> Result<(), TarError> {
    if fragments.len() >= MAX_SPARSE_FILE_ENTRIES {
        return Err(TarError::SparseTooLong);
    }
    fragments.push(entry);
    Ok(())
}

/// `validateSparseEntries`.
fn valid_sparse_entries(fragments: &[SparseEntry], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut previous_end = 0i64;
    for fragment in fragments {
        let Some(end) = fragment.offset.checked_add(fragment.length) else {
            return false;
        };
        if fragment.offset < 0 || fragment.length < 0 || end > size {
            return false;
        }
        if previous_end > fragment.offset {
            return false; // overlapping or out of order
        }
        previous_end = end;
    }
    true
}

/// Scans old GNU sparse descriptors (24 bytes each) until one whose offset starts with NUL.
fn scan_old_gnu_sparse(area: &[u8], fragments: &mut Vec<SparseEntry>) -> Result<(), TarError> {
    for descriptor in area.chunks_exact(24) {
        if descriptor[0] == 0 {
            break;
        }
        let offset = parse_numeric(&descriptor[..12]);
        let length = parse_numeric(&descriptor[12..]);
        let (Some(offset), Some(length)) = (offset, length) else {
            return Err(header_error("invalid old GNU sparse descriptor"));
        };
        append_sparse_entry(fragments, SparseEntry { offset, length })?;
    }
    Ok(())
}

/// Which PAX sparse format an entry's records announce (`readGNUSparsePAXHeaders`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PaxSparse {
    None,
    V0x,
    V1x0,
}

fn record<'a>(records: Option<&'a PaxRecords>, key: &[u8]) -> &'a [u8] {
    records
        .and_then(|records| records.get(key))
        .map_or(&[], Vec::as_slice)
}

fn pax_sparse_version(records: Option<&PaxRecords>) -> PaxSparse {
    let major = record(records, PAX_GNU_SPARSE_MAJOR);
    let minor = record(records, PAX_GNU_SPARSE_MINOR);
    match (major, minor) {
        (b"0", b"0" | b"1") => PaxSparse::V0x,
        (b"1", b"0") => PaxSparse::V1x0,
        _ if !major.is_empty() || !minor.is_empty() => PaxSparse::None, // unknown version
        // 0.0 and 0.1 have no version records: recognised by their map.
        _ if !record(records, PAX_GNU_SPARSE_MAP).is_empty() => PaxSparse::V0x,
        _ => PaxSparse::None,
    }
}

/// A fragment count as Go accepts it: non-negative and with `2 * n` not overflowing.
fn parse_fragment_count(text: &[u8]) -> Result<i64, TarError> {
    parse_go_int(text)
        .filter(|n| (0..=i64::MAX / 2).contains(n))
        .ok_or_else(|| header_error("invalid sparse fragment count"))
}

/// `readGNUSparseMap0x1`: the map from `GNU.sparse.numblocks` and `GNU.sparse.map`.
fn parse_sparse_map_0x1(records: Option<&PaxRecords>) -> Result<Vec<SparseEntry>, TarError> {
    let count = parse_fragment_count(record(records, PAX_GNU_SPARSE_NUM_BLOCKS))?;
    let map = record(records, PAX_GNU_SPARSE_MAP);
    let numbers: Vec<&[u8]> = if map.is_empty() {
        Vec::new()
    } else {
        map.split(|&c| c == b',').collect()
    };
    if i64::try_from(numbers.len()).ok() != Some(2 * count) {
        return Err(header_error(
            "sparse map does not match GNU.sparse.numblocks",
        ));
    }
    let mut fragments = Vec::new();
    for pair in numbers.chunks_exact(2) {
        let (Some(offset), Some(length)) = (parse_go_int(pair[0]), parse_go_int(pair[1])) else {
            return Err(header_error("invalid sparse map number"));
        };
        append_sparse_entry(&mut fragments, SparseEntry { offset, length })?;
    }
    Ok(fragments)
}

/// The PAX 1.0 sparse map being read from the start of the entry's data, block by block.
#[derive(Debug, Default)]
struct SparseMap1x0 {
    text: Vec<u8>,
    /// Start of the next unread token in `text`.
    cursor: usize,
    /// Newlines in `text` after `cursor` (Go's `cntNewline`).
    newlines: i64,
    /// `None` until the fragment count has been read.
    count: Option<i64>,
}

impl SparseMap1x0 {
    fn add_block(&mut self, block: &[u8; BLOCK_SIZE]) {
        self.text.extend_from_slice(block);
        // At most 512 per block, so this cannot overflow before the 1 MiB limit stops us.
        self.newlines += block.iter().filter(|&&c| c == b'\n').count() as i64;
    }

    /// The next newline-terminated token; the caller has checked that a newline remains.
    fn next_token(&mut self) -> &[u8] {
        let rest = &self.text[self.cursor..];
        let length = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        let token = &self.text[self.cursor..self.cursor + length];
        self.cursor = (self.cursor + length + 1).min(self.text.len());
        self.newlines -= 1;
        token
    }

    /// Parses what the blocks read so far allow: `Ok(Some(map))` when complete, `Ok(None)` when
    /// another block is needed.
    fn try_parse(&mut self) -> Result<Option<Vec<SparseEntry>>, TarError> {
        let count = match self.count {
            Some(count) => count,
            None if self.newlines >= 1 => {
                let count = parse_fragment_count(self.next_token())?;
                self.count = Some(count);
                count
            }
            None => return Ok(None),
        };
        if self.newlines < 2 * count {
            return Ok(None);
        }
        let mut fragments = Vec::new();
        for _ in 0..count {
            let offset = parse_go_int(self.next_token());
            let length = parse_go_int(self.next_token());
            let (Some(offset), Some(length)) = (offset, length) else {
                return Err(header_error("invalid sparse map number"));
            };
            append_sparse_entry(&mut fragments, SparseEntry { offset, length })?;
        }
        Ok(Some(fragments))
    }
}

// ---------------------------------------------------------------------------------------------
// The push-driven reader
// ---------------------------------------------------------------------------------------------

/// What has been learnt in the current `Next()` call before the entry itself.
#[derive(Debug)]
struct PendingMeta {
    formats: FormatSet,
    pax_records: Option<PaxRecords>,
    long_name: Vec<u8>,
    long_link: Vec<u8>,
}

impl Default for PendingMeta {
    fn default() -> Self {
        PendingMeta {
            formats: FormatSet::ALL,
            pax_records: None,
            long_name: Vec::new(),
            long_link: Vec::new(),
        }
    }
}

/// A real entry whose header is final but which still reads sparse-map blocks.
#[derive(Debug)]
struct EntryInProgress {
    header: Header,
    /// Data bytes of the entry still in the stream (Go's `physicalRemaining`).
    physical: u64,
    /// Padding after the stored data (fixed before sparse processing, like Go's `tr.pad`).
    padding: u64,
}

#[derive(Debug)]
enum State {
    /// Discarding the rest of the previous entry: `data` bytes (the stream must not end there),
    /// then `padding` bytes (the stream may end there). Never both zero.
    Skip { data: u64, padding: u64 },
    /// Collecting a header block.
    Header,
    /// Collecting the block after a zero block.
    AfterZeroBlock,
    /// Reading the data of an `'x'`, `'g'`, `'L'` or `'K'` entry: `wanted` is its size capped at
    /// 1 MiB + 1 (reading the extra byte proves the entry too long); `data` keeps ≤ 1 MiB.
    Meta {
        header: Box<Header>,
        wanted: u64,
        read: u64,
        data: Vec<u8>,
    },
    /// Collecting an old GNU sparse extension block.
    OldGnuSparse {
        entry: Box<EntryInProgress>,
        fragments: Vec<SparseEntry>,
        /// Descriptor bytes seen so far (Go's `totalSize`).
        descriptor_bytes: usize,
    },
    /// Collecting a PAX 1.0 sparse map block.
    PaxSparseMap {
        entry: Box<EntryInProgress>,
        map: SparseMap1x0,
        /// Map bytes read so far, including the block being collected.
        map_bytes: usize,
    },
    /// `Next()` returned `io.EOF`.
    Done,
    /// `Next()` returned this error; it is sticky.
    Failed(TarError),
}

impl State {
    fn skip(data: u64, padding: u64) -> State {
        if data == 0 && padding == 0 {
            State::Header
        } else {
            State::Skip { data, padding }
        }
    }
}

/// Go's `archive/tar` reader turned inside out: feed it the stream with [`push`](Self::push) and
/// it reports, through a callback, every entry `Next()` would return, at the same stream position.
#[derive(Debug)]
pub struct TarStreamReader {
    state: State,
    /// Bytes consumed so far.
    position: u64,
    /// The block being collected, and how much of it is filled.
    block: [u8; BLOCK_SIZE],
    filled: usize,
    pending: PendingMeta,
}

impl Default for TarStreamReader {
    fn default() -> Self {
        Self::new()
    }
}

impl TarStreamReader {
    pub fn new() -> Self {
        TarStreamReader {
            state: State::Header,
            position: 0,
            block: [0; BLOCK_SIZE],
            filled: 0,
            pending: PendingMeta::default(),
        }
    }

    /// Feed the next bytes of the tar stream. Calls `on_entry` for every entry that Go's `Next()`
    /// would return, in order, as soon as it is determined. Returns the sticky error once one
    /// happened (an error returned by `on_entry` becomes the sticky error too). After the end of
    /// the archive further bytes are ignored.
    pub fn push(
        &mut self,
        mut data: &[u8],
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        loop {
            match &self.state {
                State::Failed(error) => return Err(error.clone()),
                State::Done => return Ok(()),
                _ if data.is_empty() => return Ok(()),
                _ => {}
            }
            match self.consume(data, on_entry) {
                Ok(used) => data = &data[used..],
                Err(error) => {
                    self.state = State::Failed(error.clone());
                    return Err(error);
                }
            }
        }
    }

    /// The stream ended. Returns the position at which Go's `Next()` returned `io.EOF` (the
    /// `uncompressed_archive_size` of a zTOC), or the error Go would return (§9).
    pub fn finish(&mut self) -> Result<u64, TarError> {
        let outcome = match &self.state {
            State::Done => Ok(self.position),
            State::Failed(error) => Err(error.clone()),
            // End at a header boundary, or after a single zero block: a clean end.
            State::Header | State::AfterZeroBlock if self.filled == 0 => Ok(self.position),
            // End inside the padding of the previous entry: also a clean end.
            State::Skip { data: 0, .. } => Ok(self.position),
            State::Header
            | State::AfterZeroBlock
            | State::Skip { .. }
            | State::Meta { .. }
            | State::OldGnuSparse { .. }
            | State::PaxSparseMap { .. } => Err(TarError::UnexpectedEof),
        };
        self.state = match &outcome {
            Ok(_) => State::Done,
            Err(error) => State::Failed(error.clone()),
        };
        outcome
    }

    /// True once the end of the archive was reached (two zero blocks, or [`finish`](Self::finish))
    /// or an error happened: the caller may stop feeding.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Failed(_))
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Consumes a prefix of `data` (at least one byte) and performs the transitions it completes.
    fn consume(
        &mut self,
        data: &[u8],
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<usize, TarError> {
        let available = data.len() as u64;
        match &mut self.state {
            State::Skip {
                data: remaining_data,
                padding,
            } => {
                let used = available.min(*remaining_data + *padding);
                let from_data = used.min(*remaining_data);
                *remaining_data -= from_data;
                *padding -= used - from_data;
                if *remaining_data == 0 && *padding == 0 {
                    self.state = State::Header;
                }
                self.position += used;
                // `used` ≤ data.len(), so it fits in usize.
                Ok(used as usize)
            }
            State::Meta {
                wanted,
                read,
                data: buffer,
                ..
            } => {
                let used = available.min(*wanted - *read) as usize;
                let kept = used.min(MAX_SPECIAL_FILE_SIZE - buffer.len());
                buffer.extend_from_slice(&data[..kept]);
                *read += used as u64;
                let complete = *read == *wanted;
                self.position += used as u64;
                if complete {
                    let State::Meta {
                        header, read, data, ..
                    } = std::mem::replace(&mut self.state, State::Header)
                    else {
                        unreachable!("state checked above");
                    };
                    if read > MAX_SPECIAL_FILE_SIZE as u64 {
                        return Err(TarError::FieldTooLong);
                    }
                    self.on_meta_data(*header, &data, on_entry)?;
                }
                Ok(used)
            }
            State::Header
            | State::AfterZeroBlock
            | State::OldGnuSparse { .. }
            | State::PaxSparseMap { .. } => {
                let used = (BLOCK_SIZE - self.filled).min(data.len());
                self.block[self.filled..self.filled + used].copy_from_slice(&data[..used]);
                self.filled += used;
                self.position += used as u64;
                if self.filled == BLOCK_SIZE {
                    self.filled = 0;
                    self.on_block(on_entry)?;
                }
                Ok(used)
            }
            // `push` never calls us in these states; swallow the bytes if it ever did.
            State::Done | State::Failed(_) => Ok(data.len()),
        }
    }

    /// A whole block has been collected into `self.block`.
    fn on_block(
        &mut self,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        match std::mem::replace(&mut self.state, State::Header) {
            State::Header => {
                if is_zero_block(&self.block) {
                    self.state = State::AfterZeroBlock;
                    Ok(())
                } else {
                    self.on_header_block(on_entry)
                }
            }
            State::AfterZeroBlock => {
                if is_zero_block(&self.block) {
                    self.state = State::Done;
                    Ok(())
                } else {
                    Err(header_error("zero block followed by a non-zero block"))
                }
            }
            State::OldGnuSparse {
                entry,
                fragments,
                descriptor_bytes,
            } => self.continue_old_gnu_sparse(
                entry,
                fragments,
                descriptor_bytes + BLOCK_SIZE,
                on_entry,
            ),
            State::PaxSparseMap {
                mut entry,
                mut map,
                map_bytes,
            } => {
                entry.physical -= BLOCK_SIZE as u64; // checked before the block was requested
                map.add_block(&self.block);
                self.continue_pax_sparse_map(entry, map, map_bytes, on_entry)
            }
            other => {
                // Only block-collecting states reach here; restore anything else untouched.
                self.state = other;
                Ok(())
            }
        }
    }

    /// A non-zero header block (one iteration of `Reader.next`'s loop).
    fn on_header_block(
        &mut self,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        let header = decode_header(&self.block)?;
        let length = data_length(&header)?;
        self.pending.formats.restrict(header.block_formats);
        match header.typeflag {
            TYPE_X_HEADER | TYPE_X_GLOBAL_HEADER | TYPE_GNU_LONG_NAME | TYPE_GNU_LONG_LINK => {
                let only = if matches!(header.typeflag, TYPE_X_HEADER | TYPE_X_GLOBAL_HEADER) {
                    FormatSet::PAX
                } else {
                    FormatSet::GNU
                };
                self.pending.formats.restrict(only);
                let wanted = length.min(MAX_SPECIAL_FILE_SIZE as u64 + 1);
                if wanted == 0 {
                    return self.on_meta_data(header, &[], on_entry);
                }
                self.state = State::Meta {
                    header: Box::new(header),
                    wanted,
                    read: 0,
                    data: Vec::new(),
                };
                Ok(())
            }
            _ => self.finalize_entry(header, on_entry),
        }
    }

    /// The whole data (≤ 1 MiB) of a meta entry has been read.
    fn on_meta_data(
        &mut self,
        mut header: Header,
        data: &[u8],
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        // The data was read completely, only its padding is left.
        self.state = State::skip(0, padding_after(data.len() as u64));
        match header.typeflag {
            TYPE_X_HEADER => self.pending.pax_records = Some(parse_pax(data)?),
            TYPE_X_GLOBAL_HEADER => {
                let records = parse_pax(data)?;
                // Go merges onto the 'g' header itself and ignores the error, dropping the records.
                let merged = merge_pax(&mut header, &records).is_ok();
                let entry = TarEntry {
                    name: header.name,
                    typeflag: TYPE_X_GLOBAL_HEADER,
                    data_offset: self.position,
                    size: 0,
                    linkname: Vec::new(),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    uname: Vec::new(),
                    gname: Vec::new(),
                    mod_time: GoTime::ZERO,
                    devmajor: 0,
                    devminor: 0,
                    pax_records: merged.then_some(records),
                    format: self.pending.formats.to_format(),
                };
                self.pending = PendingMeta::default();
                on_entry(entry)?;
            }
            TYPE_GNU_LONG_NAME => self.pending.long_name = parse_string(data).to_vec(),
            TYPE_GNU_LONG_LINK => self.pending.long_link = parse_string(data).to_vec(),
            _ => {}
        }
        Ok(())
    }

    /// The default branch of `Reader.next`: overrides, TypeRegA, data length, sparse maps.
    fn finalize_entry(
        &mut self,
        mut header: Header,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        if let Some(records) = self.pending.pax_records.take() {
            merge_pax(&mut header, &records)?;
            header.pax_records = Some(records);
        }
        if !self.pending.long_name.is_empty() {
            header.name = std::mem::take(&mut self.pending.long_name);
        }
        if !self.pending.long_link.is_empty() {
            header.linkname = std::mem::take(&mut self.pending.long_link);
        }
        if header.typeflag == TYPE_REG_A {
            header.typeflag = if header.name.ends_with(b"/") {
                TYPE_DIR // legacy archives mark directories with a trailing slash
            } else {
                TYPE_REG
            };
        }
        // The PAX size may have changed the data length.
        let physical = data_length(&header)?;
        let mut entry = Box::new(EntryInProgress {
            padding: padding_after(physical),
            physical,
            header,
        });

        if entry.header.typeflag == TYPE_GNU_SPARSE {
            return self.start_old_gnu_sparse(entry, on_entry);
        }
        let records = entry.header.pax_records.as_ref();
        let version = pax_sparse_version(records);
        if version == PaxSparse::None {
            return self.emit(entry, on_entry);
        }
        let name = record(records, PAX_GNU_SPARSE_NAME).to_vec();
        let mut size = record(records, PAX_GNU_SPARSE_SIZE);
        if size.is_empty() {
            size = record(records, PAX_GNU_SPARSE_REAL_SIZE);
        }
        let size = if size.is_empty() {
            None
        } else {
            Some(parse_go_int(size).ok_or_else(|| header_error("invalid GNU sparse size"))?)
        };
        if !name.is_empty() {
            entry.header.name = name;
        }
        if let Some(size) = size {
            entry.header.size = size;
        }
        match version {
            PaxSparse::V1x0 => {
                self.continue_pax_sparse_map(entry, SparseMap1x0::default(), 0, on_entry)
            }
            _ => {
                let fragments = parse_sparse_map_0x1(entry.header.pax_records.as_ref())?;
                self.finish_sparse(entry, &fragments, on_entry)
            }
        }
    }

    /// `readOldGNUSparseMap`, up to the first extension block.
    fn start_old_gnu_sparse(
        &mut self,
        mut entry: Box<EntryInProgress>,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        // STAR uses 'S' with another layout: only GNU blocks are accepted.
        if entry.header.kind != BlockKind::Gnu {
            return Err(header_error("old GNU sparse entry in a non-GNU header"));
        }
        entry.header.size = parse_numeric(&self.block[483..495])
            .ok_or_else(|| header_error("invalid old GNU sparse real size"))?;
        let mut fragments = Vec::new();
        scan_old_gnu_sparse(&self.block[386..482], &mut fragments)?;
        let is_extended = self.block[482] != 0;
        // The header's descriptor area: 4 descriptors and the isextended byte.
        let descriptor_bytes = 4 * 24 + 1;
        if is_extended {
            self.state = State::OldGnuSparse {
                entry,
                fragments,
                descriptor_bytes,
            };
            Ok(())
        } else {
            self.finish_sparse(entry, &fragments, on_entry)
        }
    }

    /// An old GNU sparse extension block has been collected into `self.block`.
    fn continue_old_gnu_sparse(
        &mut self,
        entry: Box<EntryInProgress>,
        mut fragments: Vec<SparseEntry>,
        descriptor_bytes: usize,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        // Go ≥ 1.26.2 checks the descriptor bytes before scanning each block.
        if descriptor_bytes >= MAX_SPECIAL_FILE_SIZE {
            return Err(TarError::SparseTooLong);
        }
        scan_old_gnu_sparse(&self.block[..21 * 24], &mut fragments)?;
        if self.block[504] != 0 {
            self.state = State::OldGnuSparse {
                entry,
                fragments,
                descriptor_bytes,
            };
            Ok(())
        } else {
            self.finish_sparse(entry, &fragments, on_entry)
        }
    }

    /// `readGNUSparseMap1x0`: parse what has been read, or ask for the next map block.
    fn continue_pax_sparse_map(
        &mut self,
        entry: Box<EntryInProgress>,
        mut map: SparseMap1x0,
        map_bytes: usize,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        if let Some(fragments) = map.try_parse()? {
            return self.finish_sparse(entry, &fragments, on_entry);
        }
        let map_bytes = map_bytes + BLOCK_SIZE;
        if map_bytes > MAX_SPECIAL_FILE_SIZE {
            return Err(TarError::SparseTooLong);
        }
        // The map is read through the entry's data reader: it cannot run past the stored size.
        if entry.physical < BLOCK_SIZE as u64 {
            return Err(TarError::UnexpectedEof);
        }
        self.state = State::PaxSparseMap {
            entry,
            map,
            map_bytes,
        };
        Ok(())
    }

    /// `handleSparseFile` after the map is known: validate, then return the entry.
    fn finish_sparse(
        &mut self,
        entry: Box<EntryInProgress>,
        fragments: &[SparseEntry],
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        if is_header_only_type(entry.header.typeflag) {
            return Err(header_error("sparse map on a header-only type"));
        }
        if !valid_sparse_entries(fragments, entry.header.size) {
            return Err(header_error("invalid sparse map"));
        }
        self.emit(entry, on_entry)
    }

    /// Returns a real entry at the current position and prepares to skip its data.
    fn emit(
        &mut self,
        entry: Box<EntryInProgress>,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
        let EntryInProgress {
            header,
            physical,
            padding,
        } = *entry;
        let mut formats = std::mem::take(&mut self.pending).formats;
        if formats.has(FormatSet::USTAR) && formats.has(FormatSet::PAX) {
            formats.restrict(FormatSet::USTAR);
        }
        self.state = State::skip(physical, padding);
        on_entry(TarEntry {
            name: header.name,
            typeflag: header.typeflag,
            data_offset: self.position,
            size: header.size,
            linkname: header.linkname,
            mode: header.mode,
            uid: header.uid,
            gid: header.gid,
            uname: header.uname,
            gname: header.gname,
            mod_time: header.mod_time,
            devmajor: header.devmajor,
            devminor: header.devminor,
            pax_records: header.pax_records,
            format: formats.to_format(),
        })
    }
}

/// Reads a whole stream: the entries Go's `Next()` returned, and how it ended (the `io.EOF`
/// position, or the error). Entries returned before an error are kept.
pub fn read_stream(mut reader: impl Read) -> (Vec<TarEntry>, Result<u64, TarError>) {
    let mut tar = TarStreamReader::new();
    let mut entries = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while !tar.is_done() {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return (entries, Err(TarError::Io(error.to_string()))),
        };
        let pushed = tar.push(&buffer[..read], &mut |entry| {
            entries.push(entry);
            Ok(())
        });
        if let Err(error) = pushed {
            return (entries, Err(error));
        }
    }
    let end = tar.finish();
    (entries, end)
}

/// Convenience for tests and tools: reads a whole stream, failing on the first error.
pub fn read_all(reader: impl Read) -> Result<(Vec<TarEntry>, u64), TarError> {
    let (entries, end) = read_stream(reader);
    end.map(|end| (entries, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ------------------------------------------------------------------ builders

    enum Checksum {
        Unsigned,
        Signed,
        Raw,
    }

    /// A header block under construction; [`HeaderBlock::bytes`] fills in the checksum.
    struct HeaderBlock {
        block: [u8; BLOCK_SIZE],
        checksum: Checksum,
    }

    impl HeaderBlock {
        /// §15's "H": USTAR, mode 0644, ids 0, root/root, mtime 0, typeflag '0'.
        fn ustar() -> Self {
            HeaderBlock {
                block: [0; BLOCK_SIZE],
                checksum: Checksum::Unsigned,
            }
            .set(100, b"0000644\0")
            .set(108, b"0000000\0")
            .set(116, b"0000000\0")
            .set(124, b"00000000000\0")
            .set(136, b"00000000000\0")
            .set(156, b"0")
            .set(257, b"ustar\0")
            .set(263, b"00")
            .set(265, b"root")
            .set(297, b"root")
            .set(329, b"0000000\0")
            .set(337, b"0000000\0")
        }

        /// §15's "G": the same with the GNU magic and version.
        fn gnu() -> Self {
            Self::ustar().set(257, b"ustar ").set(263, b" \0")
        }

        fn set(mut self, offset: usize, bytes: &[u8]) -> Self {
            self.block[offset..offset + bytes.len()].copy_from_slice(bytes);
            self
        }

        /// Replaces a whole field (NUL-filling the rest).
        fn field(mut self, offset: usize, length: usize, bytes: &[u8]) -> Self {
            self.block[offset..offset + length].fill(0);
            self.set(offset, bytes)
        }

        fn name(self, name: &[u8]) -> Self {
            self.field(0, 100, name)
        }

        fn linkname(self, name: &[u8]) -> Self {
            self.field(157, 100, name)
        }

        fn prefix(self, prefix: &[u8]) -> Self {
            self.field(345, 155, prefix)
        }

        fn typeflag(self, typeflag: u8) -> Self {
            self.set(156, &[typeflag])
        }

        fn size(self, size: u64) -> Self {
            self.set(124, format!("{size:011o}\0").as_bytes())
        }

        fn mtime(self, mtime: u64) -> Self {
            self.set(136, format!("{mtime:011o}\0").as_bytes())
        }

        fn signed_checksum(mut self) -> Self {
            self.checksum = Checksum::Signed;
            self
        }

        fn raw_checksum(mut self, field: &[u8; 8]) -> Self {
            self.checksum = Checksum::Raw;
            self.set(148, field)
        }

        fn bytes(&self) -> [u8; BLOCK_SIZE] {
            let mut block = self.block;
            let (unsigned, signed) = checksums(&block);
            let sum = match self.checksum {
                Checksum::Unsigned => unsigned,
                Checksum::Signed => signed,
                Checksum::Raw => return block,
            };
            block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            block
        }
    }

    fn checksums(block: &[u8; BLOCK_SIZE]) -> (i64, i64) {
        let mut sums = (0, 0);
        for (i, &c) in block.iter().enumerate() {
            let c = if (148..156).contains(&i) { b' ' } else { c };
            sums.0 += i64::from(c);
            sums.1 += i64::from(c as i8);
        }
        sums
    }

    /// Base-256 encoding of `value` in `length` bytes.
    fn base256(length: usize, value: i64) -> Vec<u8> {
        let mut bytes = value.to_be_bytes().to_vec();
        let fill = if value < 0 { 0xff } else { 0x00 };
        while bytes.len() < length {
            bytes.insert(0, fill);
        }
        let mut bytes = bytes.split_off(bytes.len() - length);
        bytes[0] |= 0x80;
        bytes
    }

    /// One PAX record with its length computed like Go's `formatPAXRecord`.
    fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3;
        let mut length = body + body.to_string().len();
        if (body + length.to_string().len()) != length {
            length = body + length.to_string().len();
        }
        let mut out = format!("{length} ").into_bytes();
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
        assert_eq!(out.len(), length);
        out
    }

    fn records(list: &[(&str, &str)]) -> Vec<u8> {
        list.iter()
            .flat_map(|(k, v)| record(k.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[derive(Default)]
    struct Archive(Vec<u8>);

    impl Archive {
        fn new() -> Self {
            Self::default()
        }

        fn header(mut self, header: HeaderBlock) -> Self {
            self.0.extend_from_slice(&header.bytes());
            self
        }

        /// Data padded to a block boundary.
        fn data(mut self, data: &[u8]) -> Self {
            self.0.extend_from_slice(data);
            let padding = padding_after(self.0.len() as u64) as usize;
            self.0.resize(self.0.len() + padding, 0);
            self
        }

        fn raw(mut self, data: &[u8]) -> Self {
            self.0.extend_from_slice(data);
            self
        }

        fn zero(self) -> Self {
            self.raw(&[0; BLOCK_SIZE])
        }

        /// A meta entry (`'x'`, `'g'`, `'L'`, `'K'`) with `data`, in a USTAR or GNU block.
        fn meta(self, block: HeaderBlock, typeflag: u8, data: &[u8]) -> Self {
            self.header(block.typeflag(typeflag).size(data.len() as u64))
                .data(data)
        }

        /// §15's "X(recs)".
        fn x(self, list: &[(&str, &str)]) -> Self {
            self.meta(HeaderBlock::ustar(), b'x', &records(list))
        }

        fn end(self) -> Vec<u8> {
            self.zero().zero().0
        }
    }

    fn h(name: &str) -> HeaderBlock {
        HeaderBlock::ustar().name(name.as_bytes())
    }

    // ------------------------------------------------------------------ running

    type Outcome = (Vec<TarEntry>, Result<u64, TarError>);

    fn feed(bytes: &[u8], mut chunk_size: impl FnMut() -> usize) -> Outcome {
        let mut tar = TarStreamReader::new();
        let mut entries = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_size().clamp(1, rest.len()));
            rest = tail;
            let pushed = tar.push(chunk, &mut |entry| {
                entries.push(entry);
                Ok(())
            });
            if let Err(error) = pushed {
                // Sticky: later pushes and finish report the same error.
                assert_eq!(tar.push(b"more", &mut |_| Ok(())), Err(error.clone()));
                assert_eq!(tar.finish(), Err(error.clone()));
                return (entries, Err(error));
            }
        }
        let end = tar.finish();
        assert_eq!(tar.finish(), end, "finish is sticky");
        if let Ok(end) = end {
            assert_eq!(tar.position(), end);
        }
        (entries, end)
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn feed_random_chunks(bytes: &[u8], seed: u64) -> Outcome {
        let mut lcg = Lcg(seed);
        feed(bytes, || match lcg.below(4) {
            0 => 1 + lcg.below(3),
            1 => 1 + lcg.below(BLOCK_SIZE),
            2 => 500 + lcg.below(30),
            _ => 1 + lcg.below(5000),
        })
    }

    /// Reads `bytes` in one push, byte by byte and in random chunks; all must agree.
    fn run(bytes: &[u8]) -> Outcome {
        let whole = feed(bytes, || usize::MAX);
        assert_eq!(feed(bytes, || 1), whole, "byte-by-byte differs");
        for seed in 1..4 {
            assert_eq!(
                feed_random_chunks(bytes, seed),
                whole,
                "chunking {seed} differs"
            );
        }
        assert_eq!(read_stream(bytes), whole, "read_stream differs");
        whole
    }

    fn only_entry(bytes: &[u8]) -> TarEntry {
        let (mut entries, end) = run(bytes);
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.remove(0)
    }

    fn is_header_error(outcome: &Outcome) -> bool {
        matches!(outcome.1, Err(TarError::Header(_)))
    }

    fn summary(entry: &TarEntry) -> (String, char, i64, u64, String, Format) {
        (
            String::from_utf8_lossy(&entry.name).into_owned(),
            entry.typeflag as char,
            entry.size,
            entry.data_offset,
            entry.mod_time_text(),
            entry.format,
        )
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    fn pax_map(list: &[(&str, &str)]) -> PaxRecords {
        list.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    const EPOCH: &str = "1970-01-01T00:00:00Z";

    fn vector1() -> Archive {
        Archive::new()
            .header(h("a.txt").size(5))
            .data(b"hello")
            .zero()
    }

    // ------------------------------------------------------------------ §4.2, §3

    #[test]
    fn numbers_base256() {
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        let mut minus_two = [0xff; 12];
        minus_two[11] = 0xfe;
        assert_eq!(parse_numeric(&minus_two), Some(-2));
        assert_eq!(
            parse_numeric(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Some(4_611_686_018_427_387_903)
        );
        assert_eq!(
            parse_numeric(&[0xc0, 0, 0, 0, 0, 0, 0, 0]),
            Some(-4_611_686_018_427_387_904)
        );
        let mut too_big = [0u8; 12];
        too_big[0] = 0x80;
        too_big[4] = 0x80;
        assert_eq!(parse_numeric(&too_big), None);
        let mut max = [0xffu8; 12];
        max[..4].copy_from_slice(&[0x80, 0, 0, 0]);
        max[4] = 0x7f;
        assert_eq!(parse_numeric(&max), Some(i64::MAX));
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]),
            Some(3_000_000)
        );
        assert_eq!(
            parse_numeric(&[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xed, 0x30, 0x08, 0x80
            ]),
            Some(-315_619_200)
        );
        assert_eq!(
            parse_numeric(&base256(12, 253_402_300_800)),
            Some(253_402_300_800)
        );
        assert_eq!(parse_numeric(&base256(8, -5)), Some(-5));
    }

    #[test]
    fn numbers_octal() {
        assert_eq!(parse_numeric(b"  644 \0\0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0 12 \0 "), Some(0o12));
        assert_eq!(parse_numeric(b"64\x004\0\0\0\0"), Some(0o64));
        assert_eq!(parse_numeric(b"64 4\0\0\0\0"), None);
        assert_eq!(parse_numeric(b"0000648\0"), None);
        assert_eq!(parse_numeric(b"+0000644"), None);
        assert_eq!(parse_numeric(b"777777777777"), Some(68_719_476_735));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"        "), Some(0));
        assert_eq!(parse_numeric(b""), Some(0));
        assert_eq!(parse_numeric(b"0_12\0"), None);
    }

    #[test]
    fn checksum_of_eight_spaces_is_rejected() {
        let bytes = vector1().raw(&[0; 0]).0;
        let mut block: [u8; BLOCK_SIZE] = bytes[..BLOCK_SIZE].try_into().expect("block");
        block[148..156].copy_from_slice(b"        ");
        assert_eq!(block_kind(&block), None);
    }

    // ------------------------------------------------------------------ §15 vectors

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

    fn sparse_1_0_records() -> Vec<u8> {
        records(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "10"),
            ("GNU.sparse.name", "real"),
        ])
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

    // ------------------------------------------------------------------ §8, §5.3, §7

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

    /// Old GNU sparse header: `fragments` (offset, length) pairs, realsize, stored data length.
    fn old_gnu_sparse(fragments: &[(i64, i64)], real_size: i64, stored: u64) -> Archive {
        let descriptor = |(offset, length): (i64, i64)| {
            let mut d = format!("{offset:011o}\0").into_bytes();
            d.extend_from_slice(format!("{length:011o}\0").as_bytes());
            d
        };
        let (in_header, rest) = fragments.split_at(fragments.len().min(4));
        let mut header = HeaderBlock::gnu()
            .name(b"sparse")
            .typeflag(b'S')
            .size(stored)
            .set(483, format!("{real_size:011o}\0").as_bytes());
        for (i, &fragment) in in_header.iter().enumerate() {
            header = header.set(386 + 24 * i, &descriptor(fragment));
        }
        let chunks: Vec<&[(i64, i64)]> = rest.chunks(21).collect();
        if !chunks.is_empty() {
            header = header.set(482, &[1]);
        }
        let mut archive = Archive::new().header(header);
        for (i, chunk) in chunks.iter().enumerate() {
            let mut block = [0u8; BLOCK_SIZE];
            for (j, &fragment) in chunk.iter().enumerate() {
                block[24 * j..24 * j + 24].copy_from_slice(&descriptor(fragment));
            }
            block[504] = u8::from(i + 1 < chunks.len());
            archive = archive.raw(&block);
        }
        archive
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

    fn sparse_1_0(map: &[u8], stored: u64) -> Archive {
        Archive::new()
            .meta(HeaderBlock::ustar(), b'x', &sparse_1_0_records())
            .header(h("x").size(stored))
            .raw(map)
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

    // ------------------------------------------------------------------ §9 ends

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

    #[test]
    fn display_messages_follow_go() {
        assert_eq!(
            TarError::FieldTooLong.to_string(),
            "archive/tar: header field too long"
        );
        assert_eq!(
            TarError::SparseTooLong.to_string(),
            "archive/tar: sparse map too long"
        );
        assert_eq!(TarError::UnexpectedEof.to_string(), "unexpected EOF");
        assert_eq!(
            header_error("checksum mismatch").to_string(),
            "archive/tar: invalid tar header: checksum mismatch"
        );
        assert_eq!(Format::Unknown.to_string(), "<unknown>");
    }

    // ------------------------------------------------------------------ robustness

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
}
