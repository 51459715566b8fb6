//! Builds the zTOC of one layer in a single streaming pass: compressed bytes are pushed in any
//! chunking (from a file, or straight off the network), inflated once, and the inflated stream
//! feeds both the checkpointer and the tar reader. Nothing grows with the layer except the zTOC.

use crate::tar::{TarEntry, TarError, TarStreamReader};
use crate::zinfo::{GzipCheckpointer, PushError, TarSpanHasher, ZinfoError};
use crate::ztoc::{
    BUILD_TOOL_IDENTIFIER, CompressionAlgorithm, CompressionInfo, FileMetadata, ZTOC_VERSION, Ztoc,
    ZtocBytes, hex_lower, tar_zinfo_bytes,
};

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
}

enum Spans {
    Gzip(GzipCheckpointer),
    Tar(TarSpanHasher),
}

pub struct LayerIndexer {
    spans: Spans,
    span_size: u64,
    tar: TarStreamReader,
    toc: TocCollector,
    compressed_size: u64,
    max_uncompressed: u64,
}

struct TocCollector {
    entries: Vec<FileMetadata>,
    max_entries: usize,
}

impl TocCollector {
    fn add(&mut self, entry: TarEntry) -> Result<(), LayerError> {
        if self.entries.len() >= self.max_entries {
            return Err(LayerError::TooManyEntries(self.max_entries));
        }
        self.entries.push(file_metadata(entry)?);
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
        if span_size == 0 {
            return Err(LayerError::ZeroSpanSize);
        }
        let spans = match compression {
            LayerCompression::Gzip => Spans::Gzip(GzipCheckpointer::new(
                span_size,
                limits.max_uncompressed_bytes,
            )?),
            LayerCompression::Uncompressed => Spans::Tar(TarSpanHasher::new(span_size)),
        };
        Ok(Self {
            spans,
            span_size,
            tar: TarStreamReader::new(),
            toc: TocCollector {
                entries: Vec::new(),
                max_entries: limits.max_entries,
            },
            compressed_size: 0,
            max_uncompressed: limits.max_uncompressed_bytes,
        })
    }

    /// Bytes of the layer blob pushed so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.compressed_size
    }

    pub fn push(&mut self, data: &[u8]) -> Result<(), LayerError> {
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
            Spans::Gzip(checkpointer) => {
                let mut sink = |out: &[u8]| -> Result<(), TarError> {
                    if tar.is_done() {
                        return Ok(());
                    }
                    tar.push(out, &mut on_entry)
                };
                checkpointer.push(data, &mut sink).map_err(|e| match e {
                    PushError::Zinfo(z) => LayerError::Compression(z),
                    PushError::Sink(t) => LayerError::Tar(t),
                })
            }
            Spans::Tar(hasher) => {
                if self.compressed_size > self.max_uncompressed {
                    return Err(ZinfoError::TooLarge(self.max_uncompressed).into());
                }
                hasher.push(data);
                if tar.is_done() {
                    return Ok(());
                }
                tar.push(data, &mut on_entry).map_err(LayerError::Tar)
            }
        };
        match (result, collector_error) {
            (Err(_), Some(e)) => Err(e),
            (result, _) => result,
        }
    }

    pub fn finish(mut self) -> Result<BuiltZtoc, LayerError> {
        let (compression, span_digests) = match self.spans {
            Spans::Gzip(checkpointer) => {
                let zinfo = checkpointer.finish()?;
                let info = CompressionInfo {
                    algorithm: Some(CompressionAlgorithm::Gzip),
                    max_span_id: zinfo.checkpoints.len() as i32 - 1,
                    span_digests: Vec::new(),
                    checkpoints: zinfo.blob,
                };
                (info, zinfo.span_digests)
            }
            Spans::Tar(hasher) => {
                let (digests, size) = hasher.finish();
                let span = self.span_size;
                let mut max_span_id = (size / span) as i64;
                if size % span == 0 {
                    max_span_id -= 1;
                }
                let info = CompressionInfo {
                    algorithm: Some(CompressionAlgorithm::Uncompressed),
                    max_span_id: max_span_id as i32,
                    span_digests: Vec::new(),
                    checkpoints: tar_zinfo_bytes(span as i64, size as i64),
                };
                (info, digests)
            }
        };
        let uncompressed_archive_size = self.tar.finish()?;
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
            bytes: ztoc.into_bytes(),
            span_count,
            file_count,
            compressed_size: self.compressed_size,
            uncompressed_archive_size,
            xattr_free,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typeflag_quoting_matches_go() {
        assert_eq!(go_quote_rune(b'g'), "'g'");
        assert_eq!(go_quote_rune(b'S'), "'S'");
        assert_eq!(go_quote_rune(0x7f), "'\\x7f'");
    }
}
