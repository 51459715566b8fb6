//! Builds the zTOC of one layer in a single streaming pass: compressed bytes are pushed in any
//! chunking (from a file, or straight off the network), inflated once, and the inflated stream
//! feeds both the checkpointer and the tar reader. Nothing grows with the layer except the zTOC.

use crate::blob_hasher::{BlobHasher, CHUNK, SpanCuts};
use crate::tar::{TarEntry, TarError, TarStreamReader};
use crate::zinfo::{GzipCheckpointer, PushError, SpanDigester, TarSpanHasher, ZinfoError};
use crate::ztoc::{
    BUILD_TOOL_IDENTIFIER, CompressionAlgorithm, CompressionInfo, FileMetadata, ZTOC_VERSION, Ztoc,
    ZtocBytes, hex_lower, tar_zinfo_bytes,
};
use crate::ztoc::{MAX_ZTOC_BYTES, ZtocTooLarge};
use crate::ztoc_reader::MAX_SPANS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    /// A plain tar stream (OCI `.tar`, Docker `diff.tar`).
    Uncompressed,
}

/// Bounds that turn hostile layers into clear errors instead of exhausted memory.
#[derive(Debug, Clone, Copy)]
pub struct IndexerLimits {
    /// Most tar entries accepted in one layer.
    pub max_entries: usize,
    /// Most uncompressed bytes accepted in one layer.
    pub max_uncompressed_bytes: u64,
}

impl Default for IndexerLimits {
    fn default() -> Self {
        Self {
            max_entries: 4_000_000,
            max_uncompressed_bytes: 1 << 40,
        }
    }
}

/// How a [`LayerIndexer`] hashes the compressed bytes.
#[derive(Debug, Clone, Copy)]
pub struct IndexerOptions {
    /// Also compute the sha256 of the whole blob ([`BuiltZtoc::blob_digest`]), so the caller
    /// can verify the layer digest without hashing the blob a second time.
    pub blob_digest: bool,
    /// Hash on a second thread while this one inflates (the default). Off: one thread only.
    pub background_hashing: bool,
}

impl Default for IndexerOptions {
    fn default() -> Self {
        Self {
            blob_digest: false,
            background_hashing: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{0}")]
    Compression(#[from] ZinfoError),
    #[error("tar: {0}")]
    Tar(#[from] TarError),
    #[error("error while reading tar header: unsupported input tar entry {0}")]
    UnsupportedEntry(String),
    #[error("tar: more than {0} entries (raise the entry limit if this layer is genuine)")]
    TooManyEntries(usize),
    #[error("span size must be greater than zero")]
    ZeroSpanSize,
    #[error("more than {0} spans: use a larger span size")]
    TooManySpans(usize),
    #[error("{0}")]
    ZtocTooLarge(#[from] ZtocTooLarge),
}

/// What a finished build yields.
pub struct BuiltZtoc {
    pub bytes: ZtocBytes,
    pub span_count: usize,
    pub file_count: usize,
    /// Size of the layer blob.
    pub compressed_size: u64,
    /// Where the tar stream ended (upstream's `uncompressed_archive_size`).
    pub uncompressed_archive_size: u64,
    /// No entry has an xattr and none is an opaque whiteout: upstream's `xattr` optimisation may
    /// mark this layer `disable-xattrs`.
    pub xattr_free: bool,
    /// `sha256:<hex>` of the whole blob, when [`IndexerOptions::blob_digest`] asked for it.
    pub blob_digest: Option<String>,
}

enum Spans {
    Gzip {
        checkpointer: Box<GzipCheckpointer>,
        /// Checkpoints already announced to the hasher.
        announced: usize,
    },
    Tar,
}

pub struct LayerIndexer {
    spans: Spans,
    hasher: BlobHasher,
    span_size: u64,
    tar: TarStreamReader,
    toc: TocCollector,
    compressed_size: u64,
    max_uncompressed: u64,
}

struct TocCollector {
    entries: Vec<FileMetadata>,
    max_entries: usize,
    /// What the entries add to the zTOC so far ([`FileMetadata::size_bound`]), and the most
    /// they may: a TOC that cannot be written (PAX records by the million) stops here, not
    /// after the whole layer was read into memory.
    bytes: u64,
    max_bytes: u64,
}

impl TocCollector {
    fn add(&mut self, entry: TarEntry) -> Result<(), LayerError> {
        if self.entries.len() >= self.max_entries {
            return Err(LayerError::TooManyEntries(self.max_entries));
        }
        let entry = file_metadata(entry)?;
        self.bytes = self.bytes.saturating_add(entry.size_bound());
        if self.bytes > self.max_bytes {
            return Err(ZtocTooLarge { bound: self.bytes }.into());
        }
        self.entries.push(entry);
        Ok(())
    }
}

/// Upstream's `getType`: every other typeflag fails the build.
fn file_type(typeflag: u8) -> Option<&'static str> {
    Some(match typeflag {
        b'1' => "hardlink",
        b'2' => "symlink",
        b'5' => "dir",
        b'0' => "reg",
        b'3' => "char",
        b'4' => "block",
        b'6' => "fifo",
        _ => return None,
    })
}

/// Go's `%q` of a byte typeflag, for the error message.
fn go_quote_rune(b: u8) -> String {
    match b {
        b'\'' => "'\\''".into(),
        b'\\' => "'\\\\'".into(),
        0 => "'\\x00'".into(),
        0x20..=0x7e => format!("'{}'", b as char),
        b'\n' => "'\\n'".into(),
        b'\t' => "'\\t'".into(),
        b'\r' => "'\\r'".into(),
        0x80..=0xff => format!("'{}'", char::from(b)),
        _ => format!("'\\x{b:02x}'"),
    }
}

fn file_metadata(e: TarEntry) -> Result<FileMetadata, LayerError> {
    let file_type = file_type(e.typeflag)
        .ok_or_else(|| LayerError::UnsupportedEntry(go_quote_rune(e.typeflag)))?;
    let xattrs = e
        .pax_records
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    Ok(FileMetadata {
        name: e.name,
        file_type,
        uncompressed_offset: e.data_offset as i64,
        uncompressed_size: e.size,
        linkname: e.linkname,
        mode: e.mode,
        // Go converts its int ids with uint32(...), which truncates.
        uid: e.uid as u32,
        gid: e.gid as u32,
        uname: e.uname,
        gname: e.gname,
        mod_time: e.mod_time.marshal_text().unwrap_or_default(),
        devmajor: e.devmajor,
        devminor: e.devminor,
        xattrs,
    })
}

impl LayerIndexer {
    pub fn new(
        compression: LayerCompression,
        span_size: u64,
        limits: IndexerLimits,
    ) -> Result<Self, LayerError> {
        Self::with_options(compression, span_size, limits, IndexerOptions::default())
    }

    pub fn with_options(
        compression: LayerCompression,
        span_size: u64,
        limits: IndexerLimits,
        options: IndexerOptions,
    ) -> Result<Self, LayerError> {
        if span_size == 0 {
            return Err(LayerError::ZeroSpanSize);
        }
        let (spans, cuts) = match compression {
            LayerCompression::Gzip => (
                Spans::Gzip {
                    checkpointer: Box::new(GzipCheckpointer::without_span_digests(
                        span_size,
                        limits.max_uncompressed_bytes,
                    )?),
                    announced: 0,
                },
                SpanCuts::Checkpoints(SpanDigester::new()),
            ),
            LayerCompression::Uncompressed => {
                (Spans::Tar, SpanCuts::Fixed(TarSpanHasher::new(span_size)))
            }
        };
        Ok(Self {
            spans,
            hasher: BlobHasher::new(cuts, options.blob_digest, options.background_hashing),
            span_size,
            tar: TarStreamReader::new(),
            toc: TocCollector {
                entries: Vec::new(),
                max_entries: limits.max_entries,
                bytes: 0,
                max_bytes: MAX_ZTOC_BYTES,
            },
            compressed_size: 0,
            max_uncompressed: limits.max_uncompressed_bytes,
        })
    }

    /// Bytes of the layer blob pushed so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.compressed_size
    }

    pub fn push(&mut self, mut data: &[u8]) -> Result<(), LayerError> {
        // In pieces of the hasher's buffer size, so the hasher starts while the rest inflates.
        while !data.is_empty() {
            let (piece, rest) = data.split_at(data.len().min(CHUNK));
            self.push_piece(piece)?;
            data = rest;
        }
        Ok(())
    }

    fn push_piece(&mut self, data: &[u8]) -> Result<(), LayerError> {
        self.compressed_size += data.len() as u64;
        let tar = &mut self.tar;
        let toc = &mut self.toc;
        // The collector's own errors (limits, unsupported types) are kept aside while the tar
        // reader unwinds with a placeholder.
        let mut collector_error = None;
        let mut on_entry = |entry: TarEntry| -> Result<(), TarError> {
            toc.add(entry).map_err(|e| {
                collector_error = Some(e);
                TarError::Aborted("entry rejected".into())
            })
        };
        let result = match &mut self.spans {
            Spans::Gzip {
                checkpointer,
                announced,
            } => {
                let mut sink = |out: &[u8]| -> Result<(), TarError> {
                    if tar.is_done() {
                        return Ok(());
                    }
                    tar.push(out, &mut on_entry)
                };
                let result = checkpointer.push(data, &mut sink).map_err(|e| match e {
                    PushError::Zinfo(z) => LayerError::Compression(z),
                    PushError::Sink(t) => LayerError::Tar(t),
                });
                // Cuts found in these bytes go to the hasher before the bytes themselves.
                for &checkpoint in &checkpointer.checkpoints()[*announced..] {
                    self.hasher.cut(checkpoint);
                }
                *announced = checkpointer.checkpoints().len();
                result
            }
            Spans::Tar => {
                if self.compressed_size > self.max_uncompressed {
                    return Err(ZinfoError::TooLarge(self.max_uncompressed).into());
                }
                // One digest per span is kept: their number is bounded before they pile up.
                if self.compressed_size.div_ceil(self.span_size) > MAX_SPANS as u64 {
                    return Err(LayerError::TooManySpans(MAX_SPANS));
                }
                if tar.is_done() {
                    Ok(())
                } else {
                    tar.push(data, &mut on_entry).map_err(LayerError::Tar)
                }
            }
        };
        match (result, collector_error) {
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e),
            (Ok(()), _) => {
                self.hasher.update(data);
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> Result<BuiltZtoc, LayerError> {
        let compression = match self.spans {
            Spans::Gzip { checkpointer, .. } => {
                let zinfo = checkpointer.finish()?;
                CompressionInfo {
                    algorithm: Some(CompressionAlgorithm::Gzip),
                    max_span_id: zinfo.checkpoints.len() as i32 - 1,
                    span_digests: Vec::new(),
                    checkpoints: zinfo.blob,
                }
            }
            Spans::Tar => {
                let size = self.compressed_size;
                let span = self.span_size;
                // Upstream's MaxSpanID: the index of the last span, -1 for an empty file.
                let max_span_id = i32::try_from(size.div_ceil(span))
                    .map_err(|_| LayerError::TooManySpans(MAX_SPANS))?
                    - 1;
                let too_big = |_| LayerError::TooManySpans(MAX_SPANS);
                CompressionInfo {
                    algorithm: Some(CompressionAlgorithm::Uncompressed),
                    max_span_id,
                    span_digests: Vec::new(),
                    checkpoints: tar_zinfo_bytes(
                        i64::try_from(span).map_err(too_big)?,
                        i64::try_from(size).map_err(too_big)?,
                    ),
                }
            }
        };
        let uncompressed_archive_size = self.tar.finish()?;
        let hashes = self.hasher.finish();
        let span_digests = hashes.span_digests;
        let span_count = span_digests.len();
        let xattr_free = self.toc.entries.iter().all(|e| {
            !e.name.ends_with(b".wh..wh..opq")
                && !e
                    .xattrs
                    .iter()
                    .any(|(k, _)| k.starts_with(b"SCHILY.xattr."))
        });
        let file_count = self.toc.entries.len();
        let ztoc = Ztoc {
            version: ZTOC_VERSION.into(),
            build_tool_identifier: BUILD_TOOL_IDENTIFIER.into(),
            compressed_archive_size: self.compressed_size as i64,
            uncompressed_archive_size: uncompressed_archive_size as i64,
            toc: std::mem::take(&mut self.toc.entries),
            compression: CompressionInfo {
                span_digests: span_digests
                    .iter()
                    .map(|d| format!("sha256:{}", hex_lower(d)))
                    .collect(),
                ..compression
            },
        };
        Ok(BuiltZtoc {
            bytes: ztoc.into_bytes()?,
            span_count,
            file_count,
            compressed_size: self.compressed_size,
            uncompressed_archive_size,
            xattr_free,
            blob_digest: hashes
                .blob_digest
                .map(|d| format!("sha256:{}", hex_lower(&d))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Write;

    /// A USTAR header for a regular file.
    fn header(name: &str, size: usize) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// A tar of files of mixed compressibility, about `total` bytes.
    fn tar(total: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut x: u32 = 7;
        let mut i = 0;
        while out.len() < total {
            let size = 1000 + (i * 37_337) % 300_000;
            out.extend_from_slice(&header(&format!("f{i}"), size));
            out.extend((0..size).map(|j| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 2 == 0 {
                    (x >> 24) as u8
                } else {
                    (j % 251) as u8
                }
            }));
            out.resize(out.len().next_multiple_of(512), 0);
            i += 1;
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn build(
        blob: &[u8],
        compression: LayerCompression,
        options: IndexerOptions,
        piece: usize,
    ) -> BuiltZtoc {
        let mut indexer =
            LayerIndexer::with_options(compression, 65_536, IndexerLimits::default(), options)
                .unwrap();
        for p in blob.chunks(piece) {
            indexer.push(p).unwrap();
        }
        indexer.finish().unwrap()
    }

    #[test]
    fn background_hashing_gives_the_same_ztoc_and_the_blob_digest() {
        let tar = tar(3 << 20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        for (blob, compression) in [
            (&gz, LayerCompression::Gzip),
            (&tar, LayerCompression::Uncompressed),
        ] {
            let inline = IndexerOptions {
                blob_digest: false,
                background_hashing: false,
            };
            let reference = build(blob, compression, inline, blob.len());
            assert!(reference.span_count > 10, "{compression:?}");
            assert!(reference.blob_digest.is_none());
            let want = format!("sha256:{}", hex_lower(&Sha256::digest(blob)));
            for piece in [4096, 1 << 20, blob.len()] {
                for background_hashing in [false, true] {
                    let options = IndexerOptions {
                        blob_digest: true,
                        background_hashing,
                    };
                    let built = build(blob, compression, options, piece);
                    assert_eq!(built.bytes.digest(), reference.bytes.digest());
                    assert_eq!(built.span_count, reference.span_count);
                    assert_eq!(built.blob_digest.as_deref(), Some(want.as_str()));
                }
            }
            let default = build(blob, compression, IndexerOptions::default(), 1 << 20);
            assert_eq!(default.bytes.digest(), reference.bytes.digest());
        }
    }

    #[test]
    fn an_abandoned_build_releases_its_hasher() {
        let mut indexer = LayerIndexer::new(
            LayerCompression::Uncompressed,
            4096,
            IndexerLimits::default(),
        )
        .unwrap();
        indexer.push(&tar(2 << 20)[..(1 << 20) + 3]).unwrap();
        drop(indexer); // must return: the hasher thread sees the hang-up
    }

    /// A TOC that could never be written stops while the layer streams (the limit is
    /// lowered from 2 GiB to keep the test small).
    #[test]
    fn a_toc_past_the_ztoc_size_limit_stops_the_build() {
        let blob = tar(1 << 20);
        let mut indexer = LayerIndexer::new(
            LayerCompression::Uncompressed,
            4096,
            IndexerLimits::default(),
        )
        .unwrap();
        indexer.toc.max_bytes = 1000;
        let e = indexer.push(&blob).unwrap_err();
        assert!(matches!(e, LayerError::ZtocTooLarge(_)), "{e}");
        assert!(e.to_string().contains("a flatbuffer can address"), "{e}");
    }

    #[test]
    fn typeflag_quoting_matches_go() {
        assert_eq!(go_quote_rune(b'g'), "'g'");
        assert_eq!(go_quote_rune(b'S'), "'S'");
        assert_eq!(go_quote_rune(0x7f), "'\\x7f'");
    }
}
