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

use crate::gotime::GoTime;

mod fields;
mod header;
mod pax;
mod reader;
mod sparse;

pub use reader::{TarStreamReader, read_all, read_stream};

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

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

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
}
