//! The push-driven reader

use std::io::Read;

use super::fields::{parse_numeric, parse_string};
use super::header::{
    BlockKind, Header, data_length, decode_header, is_header_only_type, is_zero_block,
    padding_after,
};
use super::pax::{merge_pax, parse_pax};
use super::sparse::{
    PaxSparse, SparseEntry, SparseMap1x0, parse_sparse_map_0x1, pax_sparse_version, record,
    scan_old_gnu_sparse, valid_sparse_entries,
};
use super::{
    BLOCK_SIZE, FormatSet, MAX_SPECIAL_FILE_SIZE, PAX_GNU_SPARSE_NAME, PAX_GNU_SPARSE_REAL_SIZE,
    PAX_GNU_SPARSE_SIZE, PaxRecords, TYPE_DIR, TYPE_GNU_LONG_LINK, TYPE_GNU_LONG_NAME,
    TYPE_GNU_SPARSE, TYPE_REG, TYPE_REG_A, TYPE_X_GLOBAL_HEADER, TYPE_X_HEADER, TarEntry, TarError,
    header_error,
};
use crate::gotime::{GoTime, parse_go_int};

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
        self.old_gnu_sparse_next(entry, fragments, descriptor_bytes, is_extended, on_entry)
    }

    /// After an old GNU sparse block: wait for an extension block if `is_extended`, else
    /// finish the entry.
    fn old_gnu_sparse_next(
        &mut self,
        entry: Box<EntryInProgress>,
        fragments: Vec<SparseEntry>,
        descriptor_bytes: usize,
        is_extended: bool,
        on_entry: &mut dyn FnMut(TarEntry) -> Result<(), TarError>,
    ) -> Result<(), TarError> {
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
        let is_extended = self.block[504] != 0;
        self.old_gnu_sparse_next(entry, fragments, descriptor_bytes, is_extended, on_entry)
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
#[path = "reader_tests.rs"]
mod tests;
