//! Span checkpoints ("zinfo") of a layer, built in one streaming pass.
//!
//! For gzip layers this follows upstream's `gzip_zinfo.c` (a `zran` derivative): inflate with
//! `Z_BLOCK`, put a checkpoint right after the first member header, then at the first block
//! boundary after more than `span_size` uncompressed bytes since the previous checkpoint, never
//! inside the last block of a member; multi-member streams keep counting across members. Each
//! checkpoint stores the compressed offset of the first full byte after the boundary, the
//! uncompressed offset, the unused-bit count and the 32 KiB of output before it. The sha256 of each
//! span's compressed bytes is computed on the fly.
//!
//! One divergence from upstream, on purpose: upstream also puts a checkpoint at uncompressed offset
//! 0 after an empty first block (a stream that starts with a sync flush), which makes a zero-length
//! span that the soci-snapshotter refuses ("span offsets are non-monotonic"). We keep only the
//! first checkpoint at offset 0.
//!
//! For uncompressed tar layers the spans are fixed slices of the file (`TarZinfo`).

use crate::inflate::{BlockInflater, InflateStatus};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// Bytes of uncompressed history stored with each checkpoint.
pub const WINDOW_SIZE: usize = 32768;
/// Size of one packed checkpoint in the zinfo blob: in, out, bits, window.
pub const PACKED_CHECKPOINT_SIZE: usize = 8 + 8 + 1 + WINDOW_SIZE;
/// The blob starts with the checkpoint count (i32) and the span size (i64).
pub const BLOB_HEADER_SIZE: usize = 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offset in the compressed blob of the first full byte after the block boundary.
    pub compressed_offset: u64,
    /// Offset in the uncompressed stream.
    pub uncompressed_offset: u64,
    /// Bits of the byte before `compressed_offset` that belong to the next block (0 = aligned).
    pub bits: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum ZinfoError {
    #[error("gzip: {0}")]
    Inflate(#[from] crate::inflate::InflateError),
    #[error("gzip: unexpected end of stream after {0} compressed bytes")]
    Truncated(u64),
    #[error("gzip: not a gzip stream (bad magic bytes)")]
    NotGzip,
    #[error("gzip: decompressed size exceeds the limit of {0} bytes (decompression bomb?)")]
    TooLarge(u64),
    #[error("gzip: inflate made no progress")]
    Stalled,
    #[error("more than {0} checkpoints: the zTOC would pass 2 GiB (use a larger span size)")]
    TooManyCheckpoints(usize),
}

/// The result of a gzip pass: the zinfo blob and one digest per span.
#[derive(Debug, Clone)]
pub struct GzipZinfo {
    /// The v2 blob exactly as upstream serialises it (little-endian).
    pub blob: Vec<u8>,
    pub checkpoints: Vec<Checkpoint>,
    /// `sha256` of each span's compressed bytes, in span order.
    pub span_digests: Vec<[u8; 32]>,
    /// Compressed bytes consumed (the blob size).
    pub compressed_size: u64,
    /// Total uncompressed bytes produced.
    pub uncompressed_size: u64,
}

/// Builds a [`GzipZinfo`] from compressed bytes pushed in any chunking.
pub struct GzipCheckpointer {
    inflater: BlockInflater,
    span_size: u64,
    max_uncompressed: u64,
    total_in: u64,
    total_out: u64,
    last_checkpoint_out: u64,
    /// Inflate's output buffer. zlib-rs may scribble past the bytes it reports (fast copies), so
    /// history is kept in a separate ring, not in the output buffer as upstream's C code does.
    output: Box<[u8]>,
    /// Output history: the byte at uncompressed offset `p` lives at `p % WINDOW_SIZE`. Only bytes
    /// that can fall into the next checkpoint's window are written (see `remember`).
    window: Box<[u8]>,
    blob: Vec<u8>,
    checkpoints: Vec<Checkpoint>,
    /// `None` when the caller hashes the spans itself (from [`checkpoints`](Self::checkpoints)).
    span_hasher: Option<SpanDigester>,
    member_ended: bool,
    magic_seen: usize,
    stalled_calls: u32,
    /// Stop at every block boundary, even where no checkpoint can be (the reference behaviour).
    every_block: bool,
    /// [`MAX_CHECKPOINTS`], lowered by tests.
    max_checkpoints: usize,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Output produced per inflate call at most. zlib copies up to 32 KiB into its window on every
/// return, so between checkpoints fewer, larger calls are cheaper.
const OUTPUT_CHUNK: usize = 512 * 1024;
/// Checkpoints whose blob still fits in a zTOC (a flatbuffer of at most 2 GiB): 65,502, a
/// 256 GiB layer in 4 MiB spans. Past that upstream's builder panics and 32-bit offsets wrap,
/// and the blob alone would hold 2 GiB of memory.
pub const MAX_CHECKPOINTS: usize =
    (crate::ztoc::MAX_ZTOC_BYTES as usize - BLOB_HEADER_SIZE) / PACKED_CHECKPOINT_SIZE;

impl GzipCheckpointer {
    /// A checkpointer that also hashes every span (in [`GzipZinfo::span_digests`]).
    pub fn new(span_size: u64, max_uncompressed: u64) -> Result<Self, ZinfoError> {
        let mut cp = Self::without_span_digests(span_size, max_uncompressed)?;
        cp.span_hasher = Some(SpanDigester::new());
        Ok(cp)
    }

    /// A checkpointer that leaves `span_digests` empty: the caller hashes the compressed bytes
    /// itself, cutting spans at [`checkpoints`](Self::checkpoints) (e.g. on another thread).
    pub fn without_span_digests(span_size: u64, max_uncompressed: u64) -> Result<Self, ZinfoError> {
        let mut blob = Vec::with_capacity(BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE);
        blob.resize(BLOB_HEADER_SIZE, 0);
        Ok(Self {
            inflater: BlockInflater::new()?,
            span_size,
            max_uncompressed,
            total_in: 0,
            total_out: 0,
            last_checkpoint_out: 0,
            output: vec![0u8; OUTPUT_CHUNK].into_boxed_slice(),
            window: vec![0u8; WINDOW_SIZE].into_boxed_slice(),
            blob,
            checkpoints: Vec::new(),
            span_hasher: None,
            member_ended: false,
            magic_seen: 0,
            stalled_calls: 0,
            every_block: false,
            max_checkpoints: MAX_CHECKPOINTS,
        })
    }

    pub fn total_in(&self) -> u64 {
        self.total_in
    }

    pub fn total_out(&self) -> u64 {
        self.total_out
    }

    /// The checkpoints recorded so far. A checkpoint's compressed offset is never beyond the
    /// bytes pushed when it appeared, nor before the start of the push that made it appear.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// Makes inflate stop at every deflate block, as upstream's code does, instead of only where a
    /// checkpoint may follow. The output must be the same; tests and fuzzing compare the two.
    #[doc(hidden)]
    pub fn stop_at_every_block(&mut self) {
        self.every_block = true;
    }

    /// Inflates `input`, handing every produced uncompressed chunk to `sink` in order.
    pub fn push<E>(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        // Upstream's TOC pass uses Go's gzip reader, which accepts only gzip members.
        while self.magic_seen < GZIP_MAGIC.len() && self.magic_seen < input.len() {
            if input[self.magic_seen] != GZIP_MAGIC[self.magic_seen] {
                return Err(PushError::Zinfo(ZinfoError::NotGzip));
            }
            self.magic_seen += 1;
        }
        while !input.is_empty() {
            if self.member_ended {
                // More input after a member's trailer: another member follows.
                self.inflater.reset().map_err(ZinfoError::from)?;
                self.member_ended = false;
            }
            // No checkpoint can come before `total_out` passes `last + span`: until one output
            // byte short of that, inflate without stopping at every block (each stop costs a
            // window update in zlib); from there on, stop at each block as upstream does.
            let quiet_until = self.last_checkpoint_out.saturating_add(self.span_size);
            let (output, stop_at_block) =
                if self.checkpoints.is_empty() || self.every_block || self.total_out >= quiet_until
                {
                    (&mut self.output[..], true)
                } else {
                    let room = (quiet_until - self.total_out).min(self.output.len() as u64);
                    (&mut self.output[..room as usize], false)
                };
            let step = self
                .inflater
                .inflate(input, output, stop_at_block)
                .map_err(ZinfoError::from)?;
            if let Some(hasher) = &mut self.span_hasher {
                hasher.update(&input[..step.consumed]);
            }
            input = &input[step.consumed..];
            self.total_in += step.consumed as u64;
            if step.produced > 0 {
                let produced = &self.output[..step.produced];
                let start = self.total_out;
                self.total_out += step.produced as u64;
                if self.total_out > self.max_uncompressed {
                    return Err(ZinfoError::TooLarge(self.max_uncompressed).into());
                }
                // The next checkpoint is past `last + span`; its window starts after this.
                let needed_from = self
                    .last_checkpoint_out
                    .saturating_add(self.span_size)
                    .saturating_add(1)
                    .saturating_sub(WINDOW_SIZE as u64);
                remember(&mut self.window, start, produced, needed_from);
                sink(produced).map_err(PushError::Sink)?;
            }
            if step.consumed == 0 && step.produced == 0 && !step.at_block_boundary() {
                self.stalled_calls += 1;
                if self.stalled_calls > 2 {
                    return Err(ZinfoError::Stalled.into());
                }
            } else {
                self.stalled_calls = 0;
            }
            if step.status == InflateStatus::StreamEnd {
                self.member_ended = true;
                continue;
            }
            if step.at_block_boundary() && !step.in_last_block() && self.wants_checkpoint() {
                self.add_checkpoint(step.unused_bits())?;
            }
        }
        Ok(())
    }

    fn wants_checkpoint(&self) -> bool {
        if self.total_out == 0 {
            // Upstream adds one after every header or empty block at offset 0; a second one
            // would make a zero-length span, which the runtime refuses.
            return self.checkpoints.is_empty();
        }
        self.total_out - self.last_checkpoint_out > self.span_size
    }

    fn add_checkpoint(&mut self, bits: u8) -> Result<(), ZinfoError> {
        if self.checkpoints.len() >= self.max_checkpoints {
            return Err(ZinfoError::TooManyCheckpoints(self.max_checkpoints));
        }
        let checkpoint = Checkpoint {
            compressed_offset: self.total_in,
            uncompressed_offset: self.total_out,
            bits,
        };
        if let Some(hasher) = &mut self.span_hasher {
            hasher.cut(checkpoint);
        }
        self.blob
            .extend_from_slice(&checkpoint.compressed_offset.to_le_bytes());
        self.blob
            .extend_from_slice(&checkpoint.uncompressed_offset.to_le_bytes());
        self.blob.push(bits);
        // The 32 KiB before `out`, oldest first: zeros on the left while out < 32 KiB.
        let pos = (self.total_out % WINDOW_SIZE as u64) as usize;
        self.blob.extend_from_slice(&self.window[pos..]);
        self.blob.extend_from_slice(&self.window[..pos]);
        self.checkpoints.push(checkpoint);
        self.last_checkpoint_out = self.total_out;
        Ok(())
    }

    /// The compressed stream ended: checks it ended cleanly and returns the zinfo.
    pub fn finish(mut self) -> Result<GzipZinfo, ZinfoError> {
        if self.magic_seen < GZIP_MAGIC.len() {
            return Err(if self.total_in == 0 && self.magic_seen == 0 {
                ZinfoError::Truncated(0)
            } else {
                ZinfoError::NotGzip
            });
        }
        if !self.member_ended || self.checkpoints.is_empty() {
            return Err(ZinfoError::Truncated(self.total_in));
        }
        let span_digests = self
            .span_hasher
            .take()
            .map(SpanDigester::finish)
            .unwrap_or_default();
        let count = self.checkpoints.len() as i32;
        self.blob[0..4].copy_from_slice(&count.to_le_bytes());
        self.blob[4..12].copy_from_slice(&(self.span_size as i64).to_le_bytes());
        Ok(GzipZinfo {
            blob: self.blob,
            checkpoints: self.checkpoints,
            span_digests,
            compressed_size: self.total_in,
            uncompressed_size: self.total_out,
        })
    }
}

/// Stores the output bytes `data`, which start at uncompressed offset `start`, in the `window`
/// ring (offset `p` at `p % WINDOW_SIZE`). Bytes before `needed_from` cannot be in the next
/// checkpoint's window and are not copied: with 4 MiB spans that skips almost all copying.
fn remember(window: &mut [u8], start: u64, data: &[u8], needed_from: u64) {
    let skip = needed_from.saturating_sub(start).min(data.len() as u64) as usize;
    let skip = skip.max(data.len().saturating_sub(WINDOW_SIZE));
    let data = &data[skip..];
    if data.is_empty() {
        return;
    }
    let pos = ((start + skip as u64) % WINDOW_SIZE as u64) as usize;
    let first = (WINDOW_SIZE - pos).min(data.len());
    window[pos..pos + first].copy_from_slice(&data[..first]);
    let rest = &data[first..];
    window[..rest.len()].copy_from_slice(rest);
}

/// The sha256 of each span's compressed bytes. Span `i` runs from its checkpoint's compressed
/// offset (one byte earlier when the checkpoint has unused bits: that byte is shared) to the next
/// checkpoint's offset; the last runs to the end; bytes before the first checkpoint (the gzip
/// header) belong to no span. A cut may be announced before the bytes it falls in arrive, so the
/// same code serves inline hashing and the background hasher.
#[derive(Debug, Clone, Default)]
pub struct SpanDigester {
    /// Compressed bytes seen so far.
    position: u64,
    last_byte: u8,
    current: Option<Sha256>,
    /// Announced cuts not reached yet, in order.
    pending: VecDeque<Checkpoint>,
    digests: Vec<[u8; 32]>,
}

impl SpanDigester {
    pub fn new() -> Self {
        Self::default()
    }

    /// Announces the start of the next span. Cuts come in stream order, and never behind the
    /// bytes already hashed (a cut exactly at the current position is fine).
    pub fn cut(&mut self, checkpoint: Checkpoint) {
        debug_assert!(checkpoint.compressed_offset >= self.position);
        self.pending.push_back(checkpoint);
        self.apply_due_cuts();
    }

    /// The next compressed bytes, in stream order.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = self.pending.front().map_or(data.len(), |c| {
                c.compressed_offset
                    .saturating_sub(self.position)
                    .min(data.len() as u64) as usize
            });
            if take > 0 {
                if let Some(hasher) = &mut self.current {
                    hasher.update(&data[..take]);
                }
                self.last_byte = data[take - 1];
                self.position += take as u64;
                data = &data[take..];
            }
            self.apply_due_cuts();
        }
    }

    fn apply_due_cuts(&mut self) {
        while let Some(cut) = self.pending.front().copied() {
            if cut.compressed_offset > self.position {
                break;
            }
            self.pending.pop_front();
            if let Some(done) = self.current.take() {
                self.digests.push(done.finalize().into());
            }
            let mut hasher = Sha256::new();
            if cut.bits != 0 {
                // The span starts at the partially used byte before the boundary.
                hasher.update([self.last_byte]);
            }
            self.current = Some(hasher);
        }
    }

    /// Closes the last span; returns one digest per span.
    pub fn finish(mut self) -> Vec<[u8; 32]> {
        self.apply_due_cuts();
        if let Some(done) = self.current.take() {
            self.digests.push(done.finalize().into());
        }
        self.digests
    }
}

#[derive(Debug)]
pub enum PushError<E> {
    Zinfo(ZinfoError),
    Sink(E),
}

impl<E> From<ZinfoError> for PushError<E> {
    fn from(e: ZinfoError) -> Self {
        PushError::Zinfo(e)
    }
}

/// Fixed spans over an uncompressed tar layer: span `i` is `[i*span, min((i+1)*span, size))`.
pub struct TarSpanHasher {
    span_size: u64,
    position: u64,
    hasher: Sha256,
    span_digests: Vec<[u8; 32]>,
}

impl TarSpanHasher {
    pub fn new(span_size: u64) -> Self {
        Self {
            span_size: span_size.max(1),
            position: 0,
            hasher: Sha256::new(),
            span_digests: Vec::new(),
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let in_span = self.position % self.span_size;
            let room = (self.span_size - in_span) as usize;
            let take = room.min(data.len());
            self.hasher.update(&data[..take]);
            self.position += take as u64;
            data = &data[take..];
            if take == room {
                let done = std::mem::take(&mut self.hasher);
                self.span_digests.push(done.finalize().into());
            }
        }
    }

    /// Returns (span digests, file size). The last partial span is closed here; an exactly
    /// divisible size has no extra empty span (upstream's `MaxSpanID`).
    pub fn finish(mut self) -> (Vec<[u8; 32]>, u64) {
        // An empty file has no span at all (upstream's MaxSpanID is -1 then).
        if !self.position.is_multiple_of(self.span_size) {
            self.span_digests.push(self.hasher.finalize().into());
        }
        (self.span_digests, self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(level));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn run(compressed: &[u8], span: u64, chunk: usize) -> (GzipZinfo, Vec<u8>) {
        let mut cp = GzipCheckpointer::new(span, u64::MAX).unwrap();
        let mut out = Vec::new();
        for piece in compressed.chunks(chunk.max(1)) {
            cp.push::<()>(piece, &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .map_err(|e| match e {
                PushError::Zinfo(z) => z,
                PushError::Sink(()) => unreachable!(),
            })
            .unwrap();
        }
        (cp.finish().unwrap(), out)
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b"abcdefgh"[(x >> 16) as usize % 8]
                }
            })
            .collect()
    }

    /// The checkpoint blob of a layer must fit in a zTOC: with the old limit (i32::MAX
    /// checkpoints of 32 KiB) a long layer in small spans grew it to terabytes.
    #[test]
    fn the_checkpoint_blob_stays_within_a_ztoc() {
        let largest = BLOB_HEADER_SIZE as u64 + (MAX_CHECKPOINTS * PACKED_CHECKPOINT_SIZE) as u64;
        assert!(largest <= crate::ztoc::MAX_ZTOC_BYTES, "{largest}");
        assert_eq!(MAX_CHECKPOINTS, 65_502);
        // The limit is enforced as checkpoints appear (lowered here to keep the test small).
        let data = sample(3 << 20);
        let gz = gzip(&data, 6);
        let mut cp = GzipCheckpointer::new(1 << 18, u64::MAX).unwrap();
        cp.max_checkpoints = 3;
        let e = cp.push::<()>(&gz, &mut |_| Ok(())).unwrap_err();
        assert!(
            matches!(e, PushError::Zinfo(ZinfoError::TooManyCheckpoints(3))),
            "{e:?}"
        );
        assert_eq!(cp.checkpoints().len(), 3);
    }

    #[test]
    fn checkpoints_do_not_depend_on_chunking_and_windows_match_output() {
        let data = sample(3 << 20);
        let gz = gzip(&data, 6);
        let (a, out) = run(&gz, 1 << 18, 16384);
        assert_eq!(out, data);
        for chunk in [1usize, 7, 4096, 1 << 20] {
            if chunk == 1 && gz.len() > 200_000 {
                // byte-by-byte on a 1 MiB stream is slow in debug; one sub-range suffices
                let (b, _) = run(&gz[..], 1 << 18, 3);
                assert!(a.blob == b.blob, "chunk 3: blobs differ");
                continue;
            }
            let (b, _) = run(&gz, 1 << 18, chunk);
            assert_eq!(a.checkpoints, b.checkpoints, "chunk {chunk}");
            assert!(a.blob == b.blob, "chunk {chunk}: blobs differ");
            assert!(
                a.span_digests == b.span_digests,
                "chunk {chunk}: digests differ"
            );
        }
        assert!(a.checkpoints.len() > 5);
        assert_eq!(a.checkpoints[0].uncompressed_offset, 0);
        assert_eq!(a.checkpoints[0].compressed_offset, 10);
        for (i, cp) in a.checkpoints.iter().enumerate() {
            let base = BLOB_HEADER_SIZE + i * PACKED_CHECKPOINT_SIZE;
            let window = &a.blob[base + 17..base + PACKED_CHECKPOINT_SIZE];
            let out_off = cp.uncompressed_offset as usize;
            let start = out_off.saturating_sub(WINDOW_SIZE);
            let pad = WINDOW_SIZE - (out_off - start);
            assert!(window[..pad].iter().all(|&b| b == 0));
            assert_eq!(&window[pad..], &data[start..out_off]);
            if i > 0 {
                assert!(
                    cp.uncompressed_offset - a.checkpoints[i - 1].uncompressed_offset > 1 << 18
                );
            }
        }
        // Span digests cover [in_i - (bits?1:0), in_{i+1}) and the last runs to the end.
        for (i, cp) in a.checkpoints.iter().enumerate() {
            let start = cp.compressed_offset as usize - usize::from(cp.bits != 0);
            let end = a
                .checkpoints
                .get(i + 1)
                .map_or(gz.len(), |n| n.compressed_offset as usize);
            let expect: [u8; 32] = Sha256::digest(&gz[start..end]).into();
            assert_eq!(a.span_digests[i], expect, "span {i}");
        }
    }

    /// Compresses `data` the way odd producers do: random levels, sync/full/partial flushes at
    /// random points (empty stored blocks, blocks ending anywhere), several members.
    fn odd_gzip(data: &[u8], seed: u64) -> Vec<u8> {
        use flate2::{Compress, FlushCompress, Status};
        let mut x = seed | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let member = rest.len().min(1 + next(400_000) as usize);
            let (mine, later) = rest.split_at(member);
            rest = later;
            // A gzip member by hand: raw deflate between a minimal header and the trailer.
            out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
            let mut c = Compress::new(Compression::new(next(10) as u32), false);
            let mut input = mine;
            loop {
                let piece = input.len().min(1 + next(70_000) as usize);
                let flush = match (input.len() == piece, next(4)) {
                    (true, _) => FlushCompress::Finish,
                    (_, 0) => FlushCompress::Sync,
                    (_, 1) => FlushCompress::Full,
                    (_, 2) => FlushCompress::Partial,
                    _ => FlushCompress::None,
                };
                let mut buf = vec![0u8; piece * 2 + 1024];
                let before_in = c.total_in();
                let before_out = c.total_out();
                let status = c.compress(&input[..piece], &mut buf, flush).unwrap();
                let used = (c.total_in() - before_in) as usize;
                out.extend_from_slice(&buf[..(c.total_out() - before_out) as usize]);
                input = &input[used..];
                if status == Status::StreamEnd {
                    break;
                }
            }
            let crc = {
                let mut h = flate2::Crc::new();
                h.update(mine);
                h.sum()
            };
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(mine.len() as u32).to_le_bytes());
        }
        out
    }

    fn zinfo_of(stream: &[u8], span: u64, chunk: usize, every_block: bool) -> GzipZinfo {
        let mut cp = GzipCheckpointer::new(span, u64::MAX).unwrap();
        if every_block {
            cp.stop_at_every_block();
        }
        for piece in stream.chunks(chunk) {
            cp.push::<()>(piece, &mut |_| Ok(())).unwrap();
        }
        cp.finish().unwrap()
    }

    #[test]
    fn skipping_block_stops_between_checkpoints_changes_nothing() {
        // The reference stops at every block, as upstream does; we stop only near checkpoints.
        for seed in 1..=12u64 {
            let data = sample(200_000 + (seed as usize * 77_777) % 900_000);
            let stream = odd_gzip(&data, seed);
            for span in [1u64, 700, 4096, 65_536, 100_000 + seed * 999] {
                let want = zinfo_of(&stream, span, stream.len(), true);
                for chunk in [stream.len(), 4093] {
                    let got = zinfo_of(&stream, span, chunk, false);
                    assert_eq!(got.checkpoints, want.checkpoints, "seed {seed} span {span}");
                    assert!(got.blob == want.blob, "seed {seed} span {span}: windows");
                    assert!(
                        got.span_digests == want.span_digests,
                        "seed {seed} span {span}"
                    );
                }
            }
        }
    }

    /// One member whose blocks end exactly at each of `ends` (flushed there with `flush`).
    fn gzip_with_block_ends(data: &[u8], ends: &[usize], flush: flate2::FlushCompress) -> Vec<u8> {
        use flate2::{Compress, FlushCompress};
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        let mut c = Compress::new(Compression::new(6), false);
        let mut start = 0;
        for (i, &end) in ends.iter().chain([&data.len()]).enumerate() {
            let f = if i == ends.len() {
                FlushCompress::Finish
            } else {
                flush
            };
            let mut buf = vec![0u8; (end - start) * 2 + 1024];
            let before = c.total_out();
            c.compress(&data[start..end], &mut buf, f).unwrap();
            assert_eq!(c.total_in() as usize, end);
            out.extend_from_slice(&buf[..(c.total_out() - before) as usize]);
            start = end;
        }
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn a_block_ending_exactly_where_a_checkpoint_may_start_is_seen() {
        // The first checkpoint is at 0, so with span s the second is the first boundary after
        // s + 1 bytes: put one exactly there. Inflate must not run past it with a full buffer.
        let data = sample(300_000);
        let p = 100_000;
        for flush in [
            flate2::FlushCompress::Sync,
            flate2::FlushCompress::Full,
            flate2::FlushCompress::Partial,
        ] {
            let stream = gzip_with_block_ends(&data, &[p, 2 * p], flush);
            for span in (p as u64 - 3)..=(p as u64 + 1) {
                let want = zinfo_of(&stream, span, stream.len(), true);
                let got = zinfo_of(&stream, span, stream.len(), false);
                if span == p as u64 - 1 {
                    assert_eq!(want.checkpoints[1].uncompressed_offset, p as u64);
                }
                assert_eq!(got.checkpoints, want.checkpoints, "span {span} {flush:?}");
                assert!(got.blob == want.blob && got.span_digests == want.span_digests);
            }
        }
    }

    #[test]
    fn multi_member_and_header_fields() {
        let data = sample(600_000);
        let mut gz = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), Compression::fast());
        gz.write_all(&data[..300_000]).unwrap();
        let mut stream = gz.finish().unwrap();
        stream.extend(gzip(&data[300_000..], 9));
        let (z, out) = run(&stream, 100_000, 5000);
        assert_eq!(out, data);
        assert!(
            z.checkpoints[0].compressed_offset > 10,
            "header with fields is longer"
        );
        assert_eq!(z.uncompressed_size, 600_000);
    }

    #[test]
    fn errors_are_reported() {
        let gz = gzip(&sample(100_000), 6);
        let mut cp = GzipCheckpointer::new(1 << 20, u64::MAX).unwrap();
        cp.push::<()>(&gz[..gz.len() / 2], &mut |_| Ok(())).unwrap();
        assert!(matches!(cp.finish(), Err(ZinfoError::Truncated(_))));

        let cp = GzipCheckpointer::new(1 << 20, u64::MAX).unwrap();
        assert!(matches!(cp.finish(), Err(ZinfoError::Truncated(0))));

        let mut cp = GzipCheckpointer::new(1 << 20, u64::MAX).unwrap();
        assert!(matches!(
            cp.push::<()>(b"ustar", &mut |_| Ok(())),
            Err(PushError::Zinfo(ZinfoError::NotGzip))
        ));

        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 6] ^= 0xff; // CRC
        let mut cp = GzipCheckpointer::new(1 << 20, u64::MAX).unwrap();
        assert!(cp.push::<()>(&bad, &mut |_| Ok(())).is_err());

        let zeros = gzip(&vec![0u8; 5 << 20], 9);
        let mut cp = GzipCheckpointer::new(1 << 20, 1 << 20).unwrap();
        assert!(matches!(
            cp.push::<()>(&zeros, &mut |_| Ok(())),
            Err(PushError::Zinfo(ZinfoError::TooLarge(_)))
        ));
    }

    #[test]
    fn tar_spans_are_fixed_slices() {
        let data = sample(10_000);
        let mut h = TarSpanHasher::new(4096);
        for c in data.chunks(333) {
            h.push(c);
        }
        let (digests, size) = h.finish();
        assert_eq!(size, 10_000);
        assert_eq!(digests.len(), 3);
        let expect: [u8; 32] = Sha256::digest(&data[8192..]).into();
        assert_eq!(digests[2], expect);
        let mut h = TarSpanHasher::new(5000);
        h.push(&data);
        assert_eq!(h.finish().0.len(), 2);
    }
}
