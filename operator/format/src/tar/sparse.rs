//! Sparse maps (readOldGNUSparseMap, readGNUSparsePAXHeaders, readGNUSparseMap1x0/0x1)

use super::fields::parse_numeric;
use super::{
    BLOCK_SIZE, MAX_SPARSE_FILE_ENTRIES, PAX_GNU_SPARSE_MAJOR, PAX_GNU_SPARSE_MAP,
    PAX_GNU_SPARSE_MINOR, PAX_GNU_SPARSE_NUM_BLOCKS, PaxRecords, TarError, header_error,
};
use crate::gotime::parse_go_int;

#[derive(Clone, Copy, Debug)]
pub(super) struct SparseEntry {
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
pub(super) fn valid_sparse_entries(fragments: &[SparseEntry], size: i64) -> bool {
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
pub(super) fn scan_old_gnu_sparse(
    area: &[u8],
    fragments: &mut Vec<SparseEntry>,
) -> Result<(), TarError> {
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
pub(super) enum PaxSparse {
    None,
    V0x,
    V1x0,
}

pub(super) fn record<'a>(records: Option<&'a PaxRecords>, key: &[u8]) -> &'a [u8] {
    records
        .and_then(|records| records.get(key))
        .map_or(&[], Vec::as_slice)
}

pub(super) fn pax_sparse_version(records: Option<&PaxRecords>) -> PaxSparse {
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
pub(super) fn parse_sparse_map_0x1(
    records: Option<&PaxRecords>,
) -> Result<Vec<SparseEntry>, TarError> {
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
pub(super) struct SparseMap1x0 {
    text: Vec<u8>,
    /// Start of the next unread token in `text`.
    cursor: usize,
    /// Newlines in `text` after `cursor` (Go's `cntNewline`).
    newlines: i64,
    /// `None` until the fragment count has been read.
    count: Option<i64>,
}

impl SparseMap1x0 {
    pub(super) fn add_block(&mut self, block: &[u8; BLOCK_SIZE]) {
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
    pub(super) fn try_parse(&mut self) -> Result<Option<Vec<SparseEntry>>, TarError> {
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

#[cfg(test)]
#[path = "sparse_tests.rs"]
mod tests;
