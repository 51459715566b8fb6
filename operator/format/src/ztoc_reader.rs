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
/// most a small multiple of the input in memory (see [`MEMORY_PER_INPUT_BYTE`]).
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
mod tests {
    use super::*;
    use crate::ztoc::tar_zinfo_bytes;

    fn sample() -> Ztoc {
        let mut blob = Vec::new();
        blob.extend_from_slice(&2i32.to_le_bytes());
        blob.extend_from_slice(&(4i64 << 20).to_le_bytes());
        for (i, o, b) in [(10i64, 0i64, 0u8), (5000, 5 << 20, 3)] {
            blob.extend_from_slice(&i.to_le_bytes());
            blob.extend_from_slice(&o.to_le_bytes());
            blob.push(b);
            blob.extend_from_slice(&[7u8; crate::zinfo::WINDOW_SIZE]);
        }
        Ztoc {
            version: "0.9".into(),
            build_tool_identifier: "AWS SOCI CLI v0.2".into(),
            compressed_archive_size: 9000,
            uncompressed_archive_size: 6 << 20,
            toc: vec![
                FileMetadata {
                    name: b"etc/".to_vec(),
                    file_type: "dir",
                    uncompressed_offset: 512,
                    mode: 0o755,
                    mod_time: "2024-01-01T00:00:00Z".into(),
                    ..Default::default()
                },
                FileMetadata {
                    name: b"etc/a".to_vec(),
                    file_type: "reg",
                    uncompressed_offset: 1536,
                    uncompressed_size: 5 << 20,
                    uid: 1000,
                    gid: 1000,
                    uname: b"u".to_vec(),
                    gname: b"g".to_vec(),
                    mod_time: "2024-01-01T00:00:00.5Z".into(),
                    xattrs: vec![(b"SCHILY.xattr.user.k".to_vec(), b"v".to_vec())],
                    ..Default::default()
                },
            ],
            compression: CompressionInfo {
                algorithm: Some(CompressionAlgorithm::Gzip),
                max_span_id: 1,
                span_digests: vec![format!("sha256:{}", "a".repeat(64)); 2],
                checkpoints: blob,
            },
        }
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let z = sample();
        let bytes = z.clone().into_bytes().unwrap().to_vec();
        let mut back = read_ztoc(&bytes).unwrap();
        // Gzip is the schema default: the writer leaves the field out.
        assert_eq!(back.compression.algorithm, None);
        back.compression.algorithm = Some(CompressionAlgorithm::Gzip);
        assert_eq!(back, z);
        let spans = span_ranges(&back, 9000).unwrap();
        assert_eq!(
            spans,
            vec![
                SpanRange {
                    compressed: 10..5000,
                    uncompressed: 0..5 << 20
                },
                SpanRange {
                    compressed: 4999..9000,
                    uncompressed: 5 << 20..6 << 20
                },
            ]
        );
        check_toc(&back).unwrap();
    }

    #[test]
    fn golden_vector_reads() {
        let z = Ztoc {
            version: "0.9".into(),
            build_tool_identifier: "AWS SOCI CLI".into(),
            compressed_archive_size: 2_000_000,
            uncompressed_archive_size: 2_500_000,
            toc: vec![FileMetadata::default(); 2],
            compression: CompressionInfo {
                algorithm: None,
                max_span_id: 3,
                span_digests: vec![],
                checkpoints: vec![0; 65536],
            },
        };
        let back = read_ztoc(&z.clone().into_bytes().unwrap().to_vec()).unwrap();
        assert_eq!(back, z);
        // 65536 bytes is not a zinfo blob of any checkpoint count.
        assert!(span_ranges(&back, 2_000_000).is_err());
    }

    #[test]
    fn zero_length_span_is_refused() {
        let mut z = sample();
        // Second checkpoint at uncompressed offset 0, like upstream after a sync flush.
        let at = BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE + 8;
        z.compression.checkpoints[at..at + 8].copy_from_slice(&0i64.to_le_bytes());
        let e = span_ranges(&z, 9000).unwrap_err();
        assert!(e.0.contains("non-monotonic"), "{e}");
    }

    #[test]
    fn counts_must_agree() {
        let mut z = sample();
        z.compression.max_span_id = 2;
        assert!(span_ranges(&z, 9000).unwrap_err().0.contains("max_span_id"));
        let mut z = sample();
        z.compression.span_digests.pop();
        assert!(
            span_ranges(&z, 9000)
                .unwrap_err()
                .0
                .contains("span digests")
        );
        // A layer shorter than the last checkpoint.
        assert!(span_ranges(&sample(), 4000).is_err());
    }

    #[test]
    fn uncompressed_spans() {
        let mut z = sample();
        z.compression.algorithm = Some(CompressionAlgorithm::Uncompressed);
        z.compression.checkpoints = tar_zinfo_bytes(4096, 10000);
        z.compression.max_span_id = 2;
        z.compression.span_digests = vec![String::new(); 3];
        let bytes = z.into_bytes().unwrap().to_vec();
        let back = read_ztoc(&bytes).unwrap();
        assert_eq!(
            back.compression.algorithm,
            Some(CompressionAlgorithm::Uncompressed)
        );
        let spans = span_ranges(&back, 10000).unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[2].compressed, 8192..10000);
        assert!(span_ranges(&back, 10001).is_err());
    }

    #[test]
    fn toc_header_overlap_is_refused() {
        let mut z = sample();
        z.toc[1].uncompressed_offset = 600; // header of etc/a would start at 512, data at 600: ok
        check_toc(&z).unwrap();
        z.toc[0].uncompressed_size = 1000; // etc/ data now ends at 1512 → next header at 1536 > 600
        assert!(check_toc(&z).is_err());
    }

    #[test]
    fn garbage_and_truncations_give_errors_not_panics() {
        let bytes = sample().into_bytes().unwrap().to_vec();
        for cut in (0..bytes.len()).step_by(97) {
            let _ = read_ztoc(&bytes[..cut]);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % b.len() as u64) as usize;
                b[i] = (state >> 32) as u8;
            }
            if let Ok(z) = read_ztoc(&b) {
                let _ = span_ranges(&z, 9000);
                let _ = check_toc(&z);
            }
        }
        assert!(read_ztoc(b"").is_err());
        assert!(read_ztoc(&[0xff; 16]).is_err());
    }
}

/// Hostile zTOCs: counts, offsets and sizes that come from outside must give an error before
/// anything is allocated for them.
#[cfg(test)]
mod hostile_tests {
    use super::*;
    use crate::flatbuf::GoFlatBuilder;
    use crate::ztoc::tar_zinfo_bytes;

    fn digest() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    fn uncompressed(span_size: i64, size: i64, max_span_id: i32, digests: usize) -> Ztoc {
        Ztoc {
            version: "0.9".into(),
            build_tool_identifier: "AWS SOCI CLI v0.2".into(),
            compressed_archive_size: size,
            uncompressed_archive_size: size,
            toc: Vec::new(),
            compression: CompressionInfo {
                algorithm: Some(CompressionAlgorithm::Uncompressed),
                max_span_id,
                span_digests: vec![digest(); digests],
                checkpoints: tar_zinfo_bytes(span_size, size),
            },
        }
    }

    fn gzip_blob(checkpoints: &[(i64, i64, u8)]) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend_from_slice(&(checkpoints.len() as i32).to_le_bytes());
        blob.extend_from_slice(&(1i64 << 22).to_le_bytes());
        for &(input, output, bits) in checkpoints {
            blob.extend_from_slice(&input.to_le_bytes());
            blob.extend_from_slice(&output.to_le_bytes());
            blob.push(bits);
            blob.extend_from_slice(&[0u8; crate::zinfo::WINDOW_SIZE]);
        }
        blob
    }

    /// A 2^40-byte layer in 1-byte spans: the span count is refused before a single span is
    /// listed (it used to collect 2^40 ranges and abort on the allocation).
    #[test]
    fn a_2_pow_40_layer_in_1_byte_spans_is_refused_before_listing_spans() {
        let z = uncompressed(1, 1 << 40, 0, 1);
        let bytes = z.into_bytes().unwrap().to_vec();
        let z = read_ztoc(&bytes).unwrap();
        let e = span_ranges(&z, 1 << 40).unwrap_err();
        assert!(e.0.contains("1099511627776 spans, more than"), "{e}");
    }

    /// Fewer spans than MAX_SPANS, but not what max_span_id says: refused before listing.
    #[test]
    fn a_span_count_that_disagrees_with_max_span_id_is_refused() {
        let z = uncompressed(1, 1 << 23, 0, 1);
        let e = span_ranges(&z, 1 << 23).unwrap_err();
        assert!(
            e.0.contains("max_span_id 0 but the checkpoints make 8388608 spans"),
            "{e}"
        );
        let z = uncompressed(1 << 20, 1 << 22, 3, 1);
        let e = span_ranges(&z, 1 << 22).unwrap_err();
        assert!(e.0.contains("1 span digests for 4 spans"), "{e}");
    }

    #[test]
    fn bad_tar_zinfo_sizes_are_errors() {
        for (span, size, layer, want) in [
            (0, 100, 100, "span size 0"),
            (-1, 100, 100, "span size -1"),
            (i64::MIN, 100, 100, "span size"),
            (10, -1, u64::MAX, "TarZinfo size -1 differs"),
            (10, 100, 101, "TarZinfo size 100 differs"),
        ] {
            let z = uncompressed(span, size, 0, 1);
            let e = span_ranges(&z, layer).unwrap_err();
            assert!(e.0.contains(want), "{span} {size} {layer}: {e}");
        }
        // The largest span of a layer near i64::MAX: ends are clamped, never wrapped.
        let z = uncompressed(i64::MAX - 1, i64::MAX, 1, 2);
        let spans = span_ranges(&z, i64::MAX as u64).unwrap();
        assert_eq!(spans[1].compressed, (i64::MAX - 1) as u64..i64::MAX as u64);
    }

    /// A first checkpoint at compressed offset 0 with unused bits would start its span at
    /// byte -1 (a subtraction overflow panic in debug builds, a wrap in release).
    #[test]
    fn a_checkpoint_at_offset_0_with_unused_bits_is_an_error() {
        let mut z = uncompressed(1, 1, 1, 2);
        z.compression.algorithm = Some(CompressionAlgorithm::Gzip);
        z.compression.checkpoints = gzip_blob(&[(0, 0, 3), (100, 1000, 0)]);
        let e = span_ranges(&z, 200).unwrap_err();
        assert!(e.0.contains("checkpoint 0 at compressed offset 0"), "{e}");
    }

    #[test]
    fn truncated_and_miscounted_zinfo_blobs_are_errors() {
        let blob = gzip_blob(&[(10, 0, 0), (100, 1000, 0)]);
        for cut in [0, 4, 11, 12, 13, blob.len() - 1] {
            assert!(parse_gzip_zinfo(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = blob.clone();
        lying[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
        let e = parse_gzip_zinfo(&lying).unwrap_err();
        assert!(e.0.contains("does not hold 2147483647 checkpoints"), "{e}");
        lying[0..4].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(parse_gzip_zinfo(&lying).is_err());
        let mut negative = blob.clone();
        negative[12..20].copy_from_slice(&(-5i64).to_le_bytes());
        assert!(
            parse_gzip_zinfo(&negative)
                .unwrap_err()
                .0
                .contains("invalid")
        );
        assert!(parse_tar_zinfo(&[0xff; 3]).is_err());
        assert!(parse_tar_zinfo(&[0x10, 0, 0, 0, 0xfc, 0xff, 0xff, 0xff]).is_err());
    }

    /// A zTOC whose TOC vector lists `copies` offsets, all to one FileMetadata table with a
    /// `name_len`-byte name (a few KiB of input that would copy the name `copies` times).
    fn shared_entry_ztoc(copies: usize, name_len: usize) -> Vec<u8> {
        let mut b = GoFlatBuilder::new();
        let name = b.create_string(&vec![b'n'; name_len]);
        b.start_object(14);
        b.add_offset(0, name);
        let entry = b.end_object();
        let entries = b.create_offset_vector(&vec![entry; copies]);
        b.start_object(1);
        b.add_offset(0, entries);
        let toc = b.end_object();
        b.start_object(6);
        b.add_offset(4, toc);
        let root = b.end_object();
        let parts = b.finish(root);
        [parts.head, parts.tail].concat()
    }

    #[test]
    fn offsets_pointing_at_the_same_bytes_do_not_multiply_memory() {
        // 4096 copies of a 16 KiB name: 64 MiB from a 32 KiB zTOC.
        let bytes = shared_entry_ztoc(4096, 16 << 10);
        assert!(bytes.len() < 40 << 10);
        let e = read_ztoc(&bytes).unwrap_err();
        assert!(e.0.contains("more than"), "{e}");
        assert!(e.0.contains("bytes of memory"), "{e}");
        // Distinct entries of the same total size read fine.
        let mut z = uncompressed(1 << 20, 1 << 20, 0, 1);
        z.toc = (0..64)
            .map(|i| FileMetadata {
                name: format!("{i:016}").repeat(1024).into_bytes(),
                file_type: "reg",
                ..Default::default()
            })
            .collect();
        let back = read_ztoc(&z.clone().into_bytes().unwrap().to_vec()).unwrap();
        assert_eq!(back.toc, z.toc);
    }

    /// Many empty entries sharing one table: each costs a FileMetadata in memory but only
    /// four bytes of input.
    #[test]
    fn many_entries_on_one_table_are_refused() {
        let bytes = shared_entry_ztoc(200_000, 0);
        let e = read_ztoc(&bytes).unwrap_err();
        assert!(e.0.contains("bytes of memory"), "{e}");
    }

    /// A vector length from the buffer that runs past its end: refused before allocating.
    #[test]
    fn a_vector_length_past_the_end_is_an_error() {
        let mut bytes = shared_entry_ztoc(1, 4);
        let at = {
            let buf = Buf(&bytes);
            let root = buf.table(buf.follow(0).unwrap()).unwrap();
            let toc = root.table(4).unwrap().unwrap();
            buf.follow(toc.field(0, 4).unwrap().unwrap()).unwrap()
        };
        assert_eq!(bytes[at..at + 4], 1u32.to_le_bytes());
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = read_ztoc(&bytes).unwrap_err();
        assert!(e.0.contains("beyond the end"), "{e}");
    }
}
