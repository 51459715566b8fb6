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
    #[error("too many checkpoints ({0})")]
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
    /// The last `WINDOW_SIZE` bytes of output, circular; `window_pos` is the oldest byte.
    window: Box<[u8]>,
    window_pos: usize,
    blob: Vec<u8>,
    checkpoints: Vec<Checkpoint>,
    span_hasher: Option<Sha256>,
    span_digests: Vec<[u8; 32]>,
    last_input_byte: u8,
    member_ended: bool,
    magic_seen: usize,
    stalled_calls: u32,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Output produced per inflate call at most.
const OUTPUT_CHUNK: usize = 128 * 1024;
/// Checkpoints are counted with an i32 on the wire.
const MAX_CHECKPOINTS: usize = i32::MAX as usize;

impl GzipCheckpointer {
    pub fn new(span_size: u64, max_uncompressed: u64) -> Result<Self, ZinfoError> {
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
            window_pos: 0,
            blob,
            checkpoints: Vec::new(),
            span_hasher: None,
            span_digests: Vec::new(),
            last_input_byte: 0,
            member_ended: false,
            magic_seen: 0,
            stalled_calls: 0,
        })
    }

    pub fn total_in(&self) -> u64 {
        self.total_in
    }

    pub fn total_out(&self) -> u64 {
        self.total_out
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
            let step = self
                .inflater
                .inflate_block(input, &mut self.output)
                .map_err(ZinfoError::from)?;
            let consumed = &input[..step.consumed];
            if let Some(&last) = consumed.last() {
                self.last_input_byte = last;
                if let Some(hasher) = &mut self.span_hasher {
                    hasher.update(consumed);
                }
            }
            input = &input[step.consumed..];
            self.total_in += step.consumed as u64;
            if step.produced > 0 {
                let produced = &self.output[..step.produced];
                self.total_out += step.produced as u64;
                if self.total_out > self.max_uncompressed {
                    return Err(ZinfoError::TooLarge(self.max_uncompressed).into());
                }
                remember(&mut self.window, &mut self.window_pos, produced);
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
        if self.checkpoints.len() >= MAX_CHECKPOINTS {
            return Err(ZinfoError::TooManyCheckpoints(self.checkpoints.len()));
        }
        if let Some(hasher) = self.span_hasher.take() {
            self.span_digests.push(hasher.finalize().into());
        }
        let mut hasher = Sha256::new();
        if bits != 0 {
            // The span starts at the partially used byte before the boundary.
            hasher.update([self.last_input_byte]);
        }
        self.span_hasher = Some(hasher);

        let checkpoint = Checkpoint {
            compressed_offset: self.total_in,
            uncompressed_offset: self.total_out,
            bits,
        };
        self.blob
            .extend_from_slice(&checkpoint.compressed_offset.to_le_bytes());
        self.blob
            .extend_from_slice(&checkpoint.uncompressed_offset.to_le_bytes());
        self.blob.push(bits);
        // The 32 KiB before `out`, oldest first: zeros on the left while out < 32 KiB.
        self.blob.extend_from_slice(&self.window[self.window_pos..]);
        self.blob.extend_from_slice(&self.window[..self.window_pos]);
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
        if let Some(hasher) = self.span_hasher.take() {
            self.span_digests.push(hasher.finalize().into());
        }
        let count = self.checkpoints.len() as i32;
        self.blob[0..4].copy_from_slice(&count.to_le_bytes());
        self.blob[4..12].copy_from_slice(&(self.span_size as i64).to_le_bytes());
        Ok(GzipZinfo {
            blob: self.blob,
            checkpoints: self.checkpoints,
            span_digests: self.span_digests,
            compressed_size: self.total_in,
            uncompressed_size: self.total_out,
        })
    }
}

/// Appends `data` to the circular `window` whose oldest byte is at `pos`.
fn remember(window: &mut [u8], pos: &mut usize, data: &[u8]) {
    let data = &data[data.len().saturating_sub(window.len())..];
    let first = (window.len() - *pos).min(data.len());
    window[*pos..*pos + first].copy_from_slice(&data[..first]);
    let rest = &data[first..];
    window[..rest.len()].copy_from_slice(rest);
    *pos = (*pos + data.len()) % window.len();
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
