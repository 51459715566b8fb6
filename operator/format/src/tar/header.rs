//! Header blocks (format.go, Reader.readHeader)

use super::fields::{NumericFields, parse_numeric, parse_octal, parse_string};
use super::{BLOCK_SIZE, FormatSet, PaxRecords, TarError, header_error};
use crate::gotime::GoTime;

/// What the magic of a block with a valid checksum says (`block.getFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockKind {
    V7,
    Ustar,
    Star,
    Gnu,
}

pub(super) fn is_zero_block(block: &[u8; BLOCK_SIZE]) -> bool {
    block.iter().all(|&c| c == 0)
}

/// `block.getFormat`: `None` when the checksum matches neither the unsigned nor the signed sum.
pub(super) fn block_kind(block: &[u8; BLOCK_SIZE]) -> Option<BlockKind> {
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
pub(super) struct Header {
    pub(super) typeflag: u8,
    pub(super) name: Vec<u8>,
    pub(super) linkname: Vec<u8>,
    pub(super) size: i64,
    pub(super) mode: i64,
    pub(super) uid: i64,
    pub(super) gid: i64,
    pub(super) mod_time: GoTime,
    pub(super) uname: Vec<u8>,
    pub(super) gname: Vec<u8>,
    pub(super) devmajor: i64,
    pub(super) devminor: i64,
    /// The formats this block alone allows (Go's `hdr.Format` after `readHeader`).
    pub(super) block_formats: FormatSet,
    pub(super) kind: BlockKind,
    pub(super) pax_records: Option<PaxRecords>,
}

/// `Reader.readHeader` for a non-zero block.
pub(super) fn decode_header(block: &[u8; BLOCK_SIZE]) -> Result<Header, TarError> {
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
pub(super) fn is_header_only_type(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

/// `handleRegularFile`: the number of data bytes that follow the header.
pub(super) fn data_length(header: &Header) -> Result<u64, TarError> {
    if is_header_only_type(header.typeflag) {
        return Ok(0);
    }
    u64::try_from(header.size).map_err(|_| header_error("negative size"))
}

/// `blockPadding`.
pub(super) fn padding_after(length: u64) -> u64 {
    length.wrapping_neg() % BLOCK_SIZE as u64
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
