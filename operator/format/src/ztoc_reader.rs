//! Reading zTOCs back: a bounds-checked flatbuffer reader for `ztoc.fbs` (every offset is
//! checked, so arbitrary bytes give an error, never a panic or an out-of-bounds read), the
//! checkpoint blobs inside (`gzip_zinfo` v1/v2 and `TarZinfo`), and the span ranges they imply,
//! with the checks the soci-snapshotter makes when it loads a zTOC (`fs/layer/layer.go`,
//! `fs/span-manager/span_manager.go`, `ztoc/ztoc_marshaler.go`).

use crate::zinfo::{BLOB_HEADER_SIZE, Checkpoint, PACKED_CHECKPOINT_SIZE};
use crate::ztoc::{CompressionAlgorithm, CompressionInfo, FileMetadata, Ztoc};
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zTOC: {0}")]
pub struct ZtocReadError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ZtocReadError> {
    Err(ZtocReadError(msg.into()))
}

type R<T> = Result<T, ZtocReadError>;

/// Most TOC entries (files) a zTOC may list: four times the layer indexer's default limit.
pub const MAX_TOC_ENTRIES: usize = 1 << 24;
/// Most spans a zTOC may describe (a 1 TiB layer in 64 KiB spans).
pub const MAX_SPANS: usize = 1 << 24;
/// What the parsed model may cost in memory per byte of zTOC. Upstream's writer and ours write
/// every string, table and vector once, so a real zTOC costs at most about 3× its size; offsets
/// that point at the same bytes again and again (a few KiB naming gigabytes) are refused.
const MEMORY_PER_INPUT_BYTE: usize = 8;
const MEMORY_SLACK: usize = 64 << 10;

/// Memory the model may still take; charged before every allocation the input sizes.
struct Budget {
    left: usize,
    input: usize,
}

impl Budget {
    fn for_input(len: usize) -> Self {
        Self {
            left: len
                .saturating_mul(MEMORY_PER_INPUT_BYTE)
                .saturating_add(MEMORY_SLACK),
            input: len,
        }
    }

    fn charge(&mut self, bytes: usize) -> R<()> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => err(format!(
                "a {}-byte zTOC would take more than {} bytes of memory to read (offsets point at the same data many times)",
                self.input,
                self.input
                    .saturating_mul(MEMORY_PER_INPUT_BYTE)
                    .saturating_add(MEMORY_SLACK)
            )),
        }
    }

    /// Charges `count` items of `size` bytes each (overflow is over budget).
    fn charge_items(&mut self, count: usize, size: usize) -> R<()> {
        self.charge(count.saturating_mul(size))
    }

    /// A copy of `bytes`, charged.
    fn copy(&mut self, bytes: &[u8]) -> R<Vec<u8>> {
        self.charge(bytes.len())?;
        Ok(bytes.to_vec())
    }
}

/// The flatbuffer bytes with checked little-endian reads.
#[derive(Clone, Copy)]
struct Buf<'a>(&'a [u8]);

impl<'a> Buf<'a> {
    fn slice(&self, pos: usize, len: usize) -> R<&'a [u8]> {
        match pos.checked_add(len) {
            Some(end) if end <= self.0.len() => Ok(&self.0[pos..end]),
            _ => err(format!(
                "offset {pos}+{len} beyond the end ({} bytes)",
                self.0.len()
            )),
        }
    }
    fn u16(&self, pos: usize) -> R<u16> {
        Ok(u16::from_le_bytes(self.slice(pos, 2)?.try_into().unwrap()))
    }
    fn u32(&self, pos: usize) -> R<u32> {
        Ok(u32::from_le_bytes(self.slice(pos, 4)?.try_into().unwrap()))
    }
    fn i32(&self, pos: usize) -> R<i32> {
        Ok(i32::from_le_bytes(self.slice(pos, 4)?.try_into().unwrap()))
    }
    fn i64(&self, pos: usize) -> R<i64> {
        Ok(i64::from_le_bytes(self.slice(pos, 8)?.try_into().unwrap()))
    }
    /// Follows a `uoffset` stored at `pos`.
    fn follow(&self, pos: usize) -> R<usize> {
        let off = self.u32(pos)? as usize;
        match pos.checked_add(off) {
            Some(p) if p < self.0.len() => Ok(p),
            _ => err(format!("offset at {pos} points outside the buffer")),
        }
    }
    fn table(&self, pos: usize) -> R<Table<'a>> {
        let soffset = self.i32(pos)? as i64;
        let vtable = pos as i64 - soffset;
        if vtable < 0 || vtable as usize >= self.0.len() {
            return err(format!("table at {pos} has its vtable outside the buffer"));
        }
        let vtable = vtable as usize;
        let vt_len = self.u16(vtable)? as usize;
        let obj_len = self.u16(vtable + 2)? as usize;
        if vt_len < 4 || !vt_len.is_multiple_of(2) {
            return err(format!("table at {pos}: bad vtable length {vt_len}"));
        }
        self.slice(vtable, vt_len)?;
        self.slice(pos, obj_len)?;
        Ok(Table {
            buf: *self,
            pos,
            vtable,
            vt_len,
            obj_len,
        })
    }
}

#[derive(Clone, Copy)]
struct Table<'a> {
    buf: Buf<'a>,
    pos: usize,
    vtable: usize,
    vt_len: usize,
    obj_len: usize,
}

impl<'a> Table<'a> {
    fn field(&self, slot: usize, width: usize) -> R<Option<usize>> {
        let entry = 4 + 2 * slot;
        if entry + 2 > self.vt_len {
            return Ok(None);
        }
        let off = self.buf.u16(self.vtable + entry)? as usize;
        if off == 0 {
            return Ok(None);
        }
        if off + width > self.obj_len {
            return err(format!("field {slot} lies outside its table"));
        }
        Ok(Some(self.pos + off))
    }
    fn i64(&self, slot: usize) -> R<i64> {
        self.field(slot, 8)?.map_or(Ok(0), |p| self.buf.i64(p))
    }
    fn i32(&self, slot: usize) -> R<i32> {
        self.field(slot, 4)?.map_or(Ok(0), |p| self.buf.i32(p))
    }
    fn u32(&self, slot: usize) -> R<u32> {
        self.field(slot, 4)?.map_or(Ok(0), |p| self.buf.u32(p))
    }
    fn i8(&self, slot: usize, default: i8) -> R<i8> {
        self.field(slot, 1)?
            .map_or(Ok(default), |p| Ok(self.buf.slice(p, 1)?[0] as i8))
    }
    fn bytes(&self, slot: usize) -> R<Option<&'a [u8]>> {
        match self.field(slot, 4)? {
            None => Ok(None),
            Some(p) => {
                let target = self.buf.follow(p)?;
                let len = self.buf.u32(target)? as usize;
                Ok(Some(self.buf.slice(target + 4, len)?))
            }
        }
    }
    fn string(&self, slot: usize, budget: &mut Budget) -> R<Vec<u8>> {
        match self.bytes(slot)? {
            Some(b) => budget.copy(b),
            None => Ok(Vec::new()),
        }
    }
    fn table(&self, slot: usize) -> R<Option<Table<'a>>> {
        match self.field(slot, 4)? {
            None => Ok(None),
            Some(p) => Ok(Some(self.buf.table(self.buf.follow(p)?)?)),
        }
    }
    /// A vector of offsets (to tables or strings), its length checked against the buffer.
    fn offset_vector(&self, slot: usize) -> R<OffsetVector<'a>> {
        let Some(p) = self.field(slot, 4)? else {
            return Ok(OffsetVector {
                buf: self.buf,
                start: 0,
                len: 0,
            });
        };
        let target = self.buf.follow(p)?;
        let len = self.buf.u32(target)? as usize;
        let start = target + 4;
        self.buf.slice(start, len.saturating_mul(4))?;
        Ok(OffsetVector {
            buf: self.buf,
            start,
            len,
        })
    }
}

/// A vector of offsets whose slots lie inside the buffer; each element is followed on demand.
struct OffsetVector<'a> {
    buf: Buf<'a>,
    start: usize,
    len: usize,
}

impl OffsetVector<'_> {
    /// The position element `i` points at (`i < len`, so its slot is in the buffer).
    fn get(&self, i: usize) -> R<usize> {
        self.buf.follow(self.start + 4 * i)
    }
}

fn read_string_at(buf: Buf<'_>, pos: usize, budget: &mut Budget) -> R<Vec<u8>> {
    let len = buf.u32(pos)? as usize;
    budget.copy(buf.slice(pos + 4, len)?)
}

fn file_type(raw: &[u8]) -> R<&'static str> {
    Ok(match raw {
        b"hardlink" => "hardlink",
        b"symlink" => "symlink",
        b"dir" => "dir",
        b"reg" => "reg",
        b"char" => "char",
        b"block" => "block",
        b"fifo" => "fifo",
        b"" => "",
        other => {
            return err(format!(
                "unknown file type {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    })
}

/// Parses zTOC flatbuffer bytes into the model the writer serialises (so reading what
/// [`Ztoc::into_bytes`] wrote gives the same value back). Every count is checked against the
/// buffer and [`MAX_TOC_ENTRIES`] before anything is allocated for it, and the model may cost at
/// most a small multiple of the input in memory (see `MEMORY_PER_INPUT_BYTE`).
pub fn read_ztoc(bytes: &[u8]) -> R<Ztoc> {
    let buf = Buf(bytes);
    let budget = &mut Budget::for_input(bytes.len());
    let root = buf.table(buf.follow(0)?)?;
    let mut toc = Vec::new();
    if let Some(t) = root.table(4)? {
        let entries = t.offset_vector(0)?;
        if entries.len > MAX_TOC_ENTRIES {
            return err(format!(
                "{} TOC entries, more than the {MAX_TOC_ENTRIES} accepted",
                entries.len
            ));
        }
        budget.charge_items(entries.len, size_of::<FileMetadata>())?;
        toc.reserve_exact(entries.len);
        for i in 0..entries.len {
            let fm = buf.table(entries.get(i)?)?;
            let xattr_vector = fm.offset_vector(13)?;
            budget.charge_items(xattr_vector.len, size_of::<(Vec<u8>, Vec<u8>)>())?;
            let mut xattrs = Vec::with_capacity(xattr_vector.len);
            for j in 0..xattr_vector.len {
                let x = buf.table(xattr_vector.get(j)?)?;
                xattrs.push((x.string(0, budget)?, x.string(1, budget)?));
            }
            toc.push(FileMetadata {
                name: fm.string(0, budget)?,
                file_type: file_type(fm.bytes(1)?.unwrap_or_default())?,
                uncompressed_offset: fm.i64(2)?,
                uncompressed_size: fm.i64(3)?,
                linkname: fm.string(4, budget)?,
                mode: fm.i64(5)?,
                uid: fm.u32(6)?,
                gid: fm.u32(7)?,
                uname: fm.string(8, budget)?,
                gname: fm.string(9, budget)?,
                mod_time: String::from_utf8_lossy(&fm.string(10, budget)?).into_owned(),
                devmajor: fm.i64(11)?,
                devminor: fm.i64(12)?,
                xattrs,
            });
        }
    }
    let compression = match root.table(5)? {
        None => CompressionInfo {
            algorithm: None,
            max_span_id: 0,
            span_digests: Vec::new(),
            checkpoints: Vec::new(),
        },
        Some(ci) => {
            let algorithm = match ci.field(0, 1)? {
                None => None,
                Some(_) => Some(match ci.i8(0, 1)? {
                    1 => CompressionAlgorithm::Gzip,
                    2 => CompressionAlgorithm::Uncompressed,
                    other => return err(format!("unknown compression algorithm {other}")),
                }),
            };
            let digests = ci.offset_vector(2)?;
            if digests.len > MAX_SPANS {
                return err(format!(
                    "{} span digests, more than the {MAX_SPANS} accepted",
                    digests.len
                ));
            }
            budget.charge_items(digests.len, size_of::<String>())?;
            let mut span_digests = Vec::with_capacity(digests.len);
            for i in 0..digests.len {
                let text = read_string_at(buf, digests.get(i)?, budget)?;
                span_digests.push(String::from_utf8_lossy(&text).into_owned());
            }
            CompressionInfo {
                algorithm,
                max_span_id: ci.i32(1)?,
                span_digests,
                checkpoints: match ci.bytes(3)? {
                    Some(b) => budget.copy(b)?,
                    None => Vec::new(),
                },
            }
        }
    };
    Ok(Ztoc {
        version: String::from_utf8_lossy(&root.string(0, budget)?).into_owned(),
        build_tool_identifier: String::from_utf8_lossy(&root.string(1, budget)?).into_owned(),
        compressed_archive_size: root.i64(2)?,
        uncompressed_archive_size: root.i64(3)?,
        toc,
        compression,
    })
}

/// The effective compression of a zTOC (an unset field is the schema default, gzip).
pub fn algorithm(z: &Ztoc) -> CompressionAlgorithm {
    z.compression
        .algorithm
        .unwrap_or(CompressionAlgorithm::Gzip)
}

/// A parsed gzip zinfo blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipZinfoView {
    pub span_size: i64,
    pub checkpoints: Vec<Checkpoint>,
    /// A legacy (v1) blob without checkpoint 0 (synthesised as in=10, out=0).
    pub legacy: bool,
}

/// Parses a gzip zinfo blob (v2, or legacy v1 without checkpoint 0) like `blob_to_zinfo`.
pub fn parse_gzip_zinfo(blob: &[u8]) -> R<GzipZinfoView> {
    if blob.len() < BLOB_HEADER_SIZE {
        return err(format!("zinfo blob of {} bytes is too short", blob.len()));
    }
    let n = i32::from_le_bytes(blob[0..4].try_into().unwrap());
    let span_size = i64::from_le_bytes(blob[4..12].try_into().unwrap());
    if n <= 0 {
        return err(format!("zinfo has {n} checkpoints"));
    }
    let n = n as usize;
    let body = blob.len() - BLOB_HEADER_SIZE;
    let legacy = if body == PACKED_CHECKPOINT_SIZE.saturating_mul(n) {
        false
    } else if body == PACKED_CHECKPOINT_SIZE.saturating_mul(n - 1) {
        true
    } else {
        return err(format!(
            "zinfo blob of {} bytes does not hold {n} checkpoints (expected {} bytes)",
            blob.len(),
            PACKED_CHECKPOINT_SIZE
                .saturating_mul(n)
                .saturating_add(BLOB_HEADER_SIZE)
        ));
    };
    let mut checkpoints = Vec::with_capacity(n);
    if legacy {
        checkpoints.push(Checkpoint {
            compressed_offset: 10,
            uncompressed_offset: 0,
            bits: 0,
        });
    }
    for packed in blob[BLOB_HEADER_SIZE..].chunks_exact(PACKED_CHECKPOINT_SIZE) {
        let input = i64::from_le_bytes(packed[0..8].try_into().unwrap());
        let output = i64::from_le_bytes(packed[8..16].try_into().unwrap());
        let bits = packed[16];
        if input < 0 || output < 0 || bits > 7 {
            return err(format!(
                "zinfo checkpoint {} is invalid (in {input}, out {output}, bits {bits})",
                checkpoints.len()
            ));
        }
        checkpoints.push(Checkpoint {
            compressed_offset: input as u64,
            uncompressed_offset: output as u64,
            bits,
        });
    }
    Ok(GzipZinfoView {
        span_size,
        checkpoints,
        legacy,
    })
}

/// A parsed `TarZinfo` flatbuffer (uncompressed layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarZinfoView {
    pub version: i32,
    pub span_size: i64,
    pub size: i64,
}

pub fn parse_tar_zinfo(blob: &[u8]) -> R<TarZinfoView> {
    let buf = Buf(blob);
    let t = buf.table(buf.follow(0)?)?;
    Ok(TarZinfoView {
        version: t.i32(0)?,
        span_size: t.i64(1)?,
        size: t.i64(2)?,
    })
}

/// One span: the compressed bytes its digest covers and the uncompressed bytes it yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRange {
    pub compressed: Range<u64>,
    pub uncompressed: Range<u64>,
}

/// The spans of a zTOC for a layer blob of `layer_size` bytes, after the checks the
/// soci-snapshotter makes when it loads the zTOC: the checkpoint blob parses, `max_span_id`
/// equals the checkpoint count − 1, one span digest per span, and span offsets are strictly
/// increasing (a zero-length span is refused: "span offsets are non-monotonic").
///
/// The span count is worked out and checked against `max_span_id`, the span digests and
/// [`MAX_SPANS`] before any span is listed: the layer size comes from a manifest and the span
/// size from the zTOC, so their quotient can be anything.
pub fn span_ranges(z: &Ztoc, layer_size: u64) -> R<Vec<SpanRange>> {
    let ci = &z.compression;
    let uncompressed_size = z.uncompressed_archive_size.max(0) as u64;
    let check_count = |count: u64| -> R<usize> {
        if count > MAX_SPANS as u64 {
            return err(format!("{count} spans, more than the {MAX_SPANS} accepted"));
        }
        if ci.max_span_id < 0 || ci.max_span_id as u64 + 1 != count {
            return err(format!(
                "max_span_id {} but the checkpoints make {count} spans",
                ci.max_span_id
            ));
        }
        if ci.span_digests.len() as u64 != count {
            return err(format!(
                "{} span digests for {count} spans",
                ci.span_digests.len()
            ));
        }
        Ok(count as usize)
    };
    match algorithm(z) {
        CompressionAlgorithm::Gzip => {
            let zinfo = parse_gzip_zinfo(&ci.checkpoints)?;
            let cps = &zinfo.checkpoints;
            for (i, w) in cps.windows(2).enumerate() {
                if w[1].uncompressed_offset <= w[0].uncompressed_offset
                    || w[1].compressed_offset <= w[0].compressed_offset
                {
                    return err(format!(
                        "span offsets are non-monotonic: checkpoint {} (in {}, out {}) does not follow checkpoint {i} (in {}, out {}); span {i} has zero length",
                        i + 1,
                        w[1].compressed_offset,
                        w[1].uncompressed_offset,
                        w[0].compressed_offset,
                        w[0].uncompressed_offset
                    ));
                }
            }
            let count = check_count(cps.len() as u64)?;
            let mut out = Vec::with_capacity(count);
            for (i, c) in cps.iter().enumerate() {
                // A checkpoint with unused bits shares the byte before it with its span.
                let Some(start) = c.compressed_offset.checked_sub(u64::from(c.bits != 0)) else {
                    return err(format!(
                        "checkpoint {i} at compressed offset 0 claims {} unused bits of the byte before it",
                        c.bits
                    ));
                };
                let (end, uend) = match cps.get(i + 1) {
                    Some(next) => (next.compressed_offset, next.uncompressed_offset),
                    None => (layer_size, uncompressed_size),
                };
                if end > layer_size || start >= end {
                    return err(format!(
                        "span {i} covers compressed bytes {start}..{end}, outside the layer's {layer_size} bytes"
                    ));
                }
                out.push(SpanRange {
                    compressed: start..end,
                    uncompressed: c.uncompressed_offset..uend.max(c.uncompressed_offset),
                });
            }
            Ok(out)
        }
        CompressionAlgorithm::Uncompressed => {
            let tz = parse_tar_zinfo(&ci.checkpoints)?;
            let Ok(span) = u64::try_from(tz.span_size) else {
                return err(format!("TarZinfo span size {}", tz.span_size));
            };
            if span == 0 {
                return err("TarZinfo span size 0");
            }
            if u64::try_from(tz.size) != Ok(layer_size) {
                return err(format!(
                    "TarZinfo size {} differs from the layer's {layer_size} bytes",
                    tz.size
                ));
            }
            let count = check_count(layer_size.div_ceil(span).max(1))?;
            // `i * span < layer_size` for every i < count; only the end can pass u64::MAX.
            Ok((0..count as u64)
                .map(|i| {
                    let start = i * span;
                    let r = start..start.saturating_add(span).min(layer_size);
                    SpanRange {
                        compressed: r.clone(),
                        uncompressed: r,
                    }
                })
                .collect())
        }
    }
}

/// The TOC check made on load (`flatbufferToTOC`): entries sorted by data offset, each entry's
/// header (512-aligned end of the previous entry's data) must not lie beyond its data offset.
pub fn check_toc(z: &Ztoc) -> R<()> {
    let mut entries: Vec<&FileMetadata> = z.toc.iter().collect();
    entries.sort_by_key(|f| f.uncompressed_offset);
    let mut header_offset = 0i64;
    for f in entries {
        if f.uncompressed_offset < 0 || f.uncompressed_size < 0 {
            return err(format!(
                "TOC entry {:?} has a negative offset or size",
                String::from_utf8_lossy(&f.name)
            ));
        }
        if header_offset > f.uncompressed_offset {
            return err(format!(
                "invalid TOC entry {:?}: header at {header_offset} is after its data at {}",
                String::from_utf8_lossy(&f.name),
                f.uncompressed_offset
            ));
        }
        let end = f.uncompressed_offset.saturating_add(f.uncompressed_size);
        header_offset = end.saturating_add(511) / 512 * 512;
    }
    Ok(())
}

#[cfg(test)]
#[path = "ztoc_reader_tests.rs"]
mod tests;

/// Hostile zTOCs: counts, offsets and sizes that come from outside must give an error before
/// anything is allocated for them.
#[cfg(test)]
#[path = "ztoc_reader_hostile_tests.rs"]
mod hostile_tests;
