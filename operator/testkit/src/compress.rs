//! `compress`: the layer-blob encodings the corpus needs.
//!
//! * [`gzip`]: one gzip member at level 0..=9 (flate2 `GzBuilder`, mtime 0), optionally with
//!   FNAME / FCOMMENT / FEXTRA header fields ([`GzHeader`]).
//! * [`gzip_multi_member`]: pigz/mgzip-like — the input is split at arbitrary byte positions and
//!   each piece is compressed as an independent member; members are concatenated.
//! * [`gzip_flushed`]: one member written with raw `flate2::Compress` and a hand-made gzip header
//!   and trailer (crc32 from `flate2::Crc`), with `FlushCompress::Sync` either *before any data*
//!   (an empty first stored block: upstream then records two checkpoints at uncompressed offset 0,
//!   i.e. a zero-length span) and/or every N input bytes.
//! * [`zstd_raw`]: a valid zstd frame made of raw (stored) blocks — enough for a `tar+zstd` layer,
//!   whose bytes upstream never inflates (it skips zstd layers by media type).
//! * [`Encoding`] + [`encode`]: the same as an enum, so corpus cases can be described as data.

use flate2::{Compress, Compression, Crc, FlushCompress, GzBuilder, Status};
use std::io::Write;

/// Optional gzip header fields.
#[derive(Clone, Debug, Default)]
pub struct GzHeader {
    pub filename: Option<Vec<u8>>,
    pub comment: Option<Vec<u8>>,
    pub extra: Option<Vec<u8>>,
    pub mtime: u32,
}

/// A single gzip member at `level` (0..=9) with a plain 10-byte header.
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    gzip_with(data, level, &GzHeader::default())
}

/// A single gzip member with the given header fields.
pub fn gzip_with(data: &[u8], level: u32, h: &GzHeader) -> Vec<u8> {
    let mut b = GzBuilder::new().mtime(h.mtime);
    if let Some(f) = &h.filename {
        b = b.filename(f.clone());
    }
    if let Some(c) = &h.comment {
        b = b.comment(c.clone());
    }
    if let Some(x) = &h.extra {
        b = b.extra(x.clone());
    }
    let mut enc = b.write(
        Vec::with_capacity(data.len() / 2 + 64),
        Compression::new(level),
    );
    enc.write_all(data).expect("write to Vec");
    enc.finish().expect("finish to Vec")
}

/// Independent members for `data[0..s0]`, `data[s0..s1]`, …, `data[sn..]` (split points outside
/// the data or not increasing are clamped; an empty piece yields an empty member).
pub fn gzip_multi_member(data: &[u8], level: u32, splits: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &s in splits {
        let s = s.clamp(start, data.len());
        out.extend(gzip(&data[start..s], level));
        start = s;
    }
    out.extend(gzip(&data[start..], level));
    out
}

/// Raw deflate of `input` with `flush`, appended to `out`.
fn deflate_into(c: &mut Compress, mut input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let before_in = c.total_in();
        let st = c.compress_vec(input, out, flush).expect("deflate");
        let used = (c.total_in() - before_in) as usize;
        input = &input[used..];
        match flush {
            FlushCompress::Finish => {
                if st == Status::StreamEnd {
                    return;
                }
            }
            _ => {
                // Done when all input is consumed and the last call left spare output room
                // (so the flush marker was completely written).
                if input.is_empty() && out.len() < out.capacity() {
                    return;
                }
            }
        }
    }
}

/// One gzip member written with raw deflate; `sync_at_start` emits a sync flush (an empty stored
/// block) before any data; `flush_every` (> 0) emits a sync flush after every that many input
/// bytes.
pub fn gzip_flushed(data: &[u8], level: u32, sync_at_start: bool, flush_every: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut c = Compress::new(Compression::new(level), false);
    if sync_at_start {
        deflate_into(&mut c, &[], FlushCompress::Sync, &mut out);
    }
    if flush_every > 0 {
        for chunk in data.chunks(flush_every) {
            deflate_into(&mut c, chunk, FlushCompress::Sync, &mut out);
        }
        deflate_into(&mut c, &[], FlushCompress::Finish, &mut out);
    } else {
        deflate_into(&mut c, data, FlushCompress::Finish, &mut out);
    }
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A zstd frame (magic `28 b5 2f fd`) holding `data` in raw blocks of up to 128 KiB, no checksum.
pub fn zstd_raw(data: &[u8]) -> Vec<u8> {
    const MAX: usize = 128 * 1024;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    out.push(0x00); // FHD: no FCS, not single segment, no checksum, no dict id
    out.push(7 << 3); // window descriptor: 2^(10+7) = 128 KiB
    let mut chunks: Vec<&[u8]> = data.chunks(MAX).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let last = (i + 1 == n) as u32;
        let h = last | (c.len() as u32) << 3; // type 0 = raw
        out.extend_from_slice(&h.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}

/// How a layer's tar is encoded into a blob.
#[derive(Clone, Debug)]
pub enum Encoding {
    /// The tar itself (`…tar` media types).
    None,
    /// Single member at this level.
    Gzip(u32),
    /// Single member with header fields.
    GzipHeader(u32, GzHeader),
    /// Members split at these uncompressed offsets.
    MultiMember(u32, Vec<usize>),
    /// Raw deflate with sync flushes: (level, sync_at_start, flush_every).
    Flushed(u32, bool, usize),
    /// zstd raw-block frame.
    Zstd,
    /// Gzip at this level followed by these trailing bytes (upstream rejects trailing garbage).
    GzipTrailing(u32, Vec<u8>),
}

impl Encoding {
    /// True for gzip-family encodings.
    pub fn is_gzip(&self) -> bool {
        !matches!(self, Encoding::None | Encoding::Zstd)
    }
}

/// Encode `tar` as `enc`.
pub fn encode(tar: &[u8], enc: &Encoding) -> Vec<u8> {
    match enc {
        Encoding::None => tar.to_vec(),
        Encoding::Gzip(l) => gzip(tar, *l),
        Encoding::GzipHeader(l, h) => gzip_with(tar, *l, h),
        Encoding::MultiMember(l, s) => gzip_multi_member(tar, *l, s),
        Encoding::Flushed(l, s, e) => gzip_flushed(tar, *l, *s, *e),
        Encoding::Zstd => zstd_raw(tar),
        Encoding::GzipTrailing(l, t) => {
            let mut v = gzip(tar, *l);
            v.extend_from_slice(t);
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        MultiGzDecoder::new(b).read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn round_trips() {
        let d = crate::data::text(1, 300_000);
        for l in [0, 1, 6, 9] {
            assert_eq!(gunzip(&gzip(&d, l)), d);
        }
        let h = GzHeader {
            filename: Some(b"layer.tar".to_vec()),
            comment: Some(b"hi".to_vec()),
            extra: Some(b"AB\x02\x00xy".to_vec()),
            mtime: 1,
        };
        let g = gzip_with(&d, 6, &h);
        assert_eq!(g[3], 4 | 8 | 16);
        assert_eq!(gunzip(&g), d);
        assert_eq!(
            gunzip(&gzip_multi_member(&d, 6, &[0, 1000, 1000, 77777])),
            d
        );
        let f = gzip_flushed(&d, 6, true, 0);
        // Header, then an empty stored block `00 00 00 ff ff` (BFINAL=0, BTYPE=00).
        assert_eq!(&f[10..15], &[0, 0, 0, 0xff, 0xff]);
        assert_eq!(gunzip(&f), d);
        assert_eq!(gunzip(&gzip_flushed(&d, 1, false, 4096)), d);
        let z = zstd_raw(&d);
        assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(z.len(), d.len() + 6 + 3 * d.len().div_ceil(128 * 1024));
    }
}
