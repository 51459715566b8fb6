//! The zTOC: a flatbuffer (`ztoc.fbs`, version `0.9`) holding the layer's table of contents and
//! its span checkpoints, serialised with upstream's exact builder call order so the bytes match.

use crate::flatbuf::GoFlatBuilder;
use sha2::{Digest, Sha256};
use std::io::{self, Write};

pub const ZTOC_VERSION: &str = "0.9";
/// The build tool identifier upstream writes into zTOCs and index annotations.
pub const BUILD_TOOL_IDENTIFIER: &str = "AWS SOCI CLI v0.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgorithm {
    Gzip,
    Uncompressed,
}

impl CompressionAlgorithm {
    fn wire_value(self) -> i8 {
        match self {
            CompressionAlgorithm::Gzip => 1,
            CompressionAlgorithm::Uncompressed => 2,
        }
    }
}

/// One tar entry as recorded in the TOC. Strings are raw bytes, as Go strings are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMetadata {
    pub name: Vec<u8>,
    pub file_type: &'static str,
    pub uncompressed_offset: i64,
    pub uncompressed_size: i64,
    pub linkname: Vec<u8>,
    pub mode: i64,
    pub uid: u32,
    pub gid: u32,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// Go `Time.MarshalText` output; empty when Go could not render it.
    pub mod_time: String,
    pub devmajor: i64,
    pub devminor: i64,
    /// All PAX records of the entry, sorted by key.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionInfo {
    /// `None` leaves the field unset (only the golden test does that).
    pub algorithm: Option<CompressionAlgorithm>,
    pub max_span_id: i32,
    /// `sha256:<hex>` per span.
    pub span_digests: Vec<String>,
    /// The zinfo blob (gzip) or the `TarZinfo` flatbuffer (uncompressed).
    pub checkpoints: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztoc {
    pub version: String,
    pub build_tool_identifier: String,
    pub compressed_archive_size: i64,
    pub uncompressed_archive_size: i64,
    pub toc: Vec<FileMetadata>,
    pub compression: CompressionInfo,
}

/// A serialised zTOC, kept in three parts so the checkpoint blob is never copied.
#[derive(Debug, Clone)]
pub struct ZtocBytes {
    head: Vec<u8>,
    checkpoints: Vec<u8>,
    tail: Vec<u8>,
    digest: String,
}

impl ZtocBytes {
    pub fn len(&self) -> u64 {
        (self.head.len() + self.checkpoints.len() + self.tail.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `sha256:<hex>` of the bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.head, &self.checkpoints, &self.tail]
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        for part in self.parts() {
            w.write_all(part)?;
        }
        Ok(())
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }

    /// The zTOC as one buffer, grown from the checkpoint blob's allocation (the bulk of a zTOC),
    /// so its bytes are never held twice.
    pub fn into_vec(self) -> Vec<u8> {
        let mut out = self.checkpoints;
        out.reserve_exact(self.head.len() + self.tail.len());
        out.splice(0..0, self.head);
        out.extend_from_slice(&self.tail);
        out
    }
}

pub fn sha256_digest_string(bytes: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for b in bytes {
        h.update(b);
    }
    format!("sha256:{}", hex_lower(&h.finalize()))
}

pub fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

// Field counts and slots from ztoc.fbs.
mod slots {
    pub const ZTOC_FIELDS: usize = 6;
    pub const ZTOC_VERSION: usize = 0;
    pub const ZTOC_BUILD_TOOL: usize = 1;
    pub const ZTOC_COMPRESSED_SIZE: usize = 2;
    pub const ZTOC_UNCOMPRESSED_SIZE: usize = 3;
    pub const ZTOC_TOC: usize = 4;
    pub const ZTOC_COMPRESSION_INFO: usize = 5;
    pub const TOC_FIELDS: usize = 1;
    pub const CI_FIELDS: usize = 4;
    pub const CI_ALGORITHM: usize = 0;
    pub const CI_MAX_SPAN_ID: usize = 1;
    pub const CI_SPAN_DIGESTS: usize = 2;
    pub const CI_CHECKPOINTS: usize = 3;
    pub const FM_FIELDS: usize = 14;
    pub const XATTR_FIELDS: usize = 2;
    pub const TAR_ZINFO_FIELDS: usize = 3;
}

/// The largest zTOC that can be written: flatbuffer offsets are 32-bit and Go's builder stops
/// at 2 GiB ("cannot grow buffer beyond 2 gigabytes").
pub const MAX_ZTOC_BYTES: u64 = (1 << 31) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the zTOC would take up to {bound} bytes, more than the {MAX_ZTOC_BYTES} a flatbuffer can address"
)]
pub struct ZtocTooLarge {
    pub bound: u64,
}

/// Bytes a flatbuffer string takes at most: length, NUL, padding to 4.
fn string_bound(len: usize) -> u64 {
    len as u64 + 8
}

impl FileMetadata {
    /// An upper bound of what this entry adds to a serialised zTOC.
    pub fn size_bound(&self) -> u64 {
        // Vector slot, table (soffset, 7 offsets, 5 i64 and 2 u32 with padding), vtable.
        let mut n: u64 = 4 + 128 + 32 + 16;
        for field in [&self.name, &self.linkname, &self.uname, &self.gname] {
            n = n.saturating_add(string_bound(field.len()));
        }
        n = n
            .saturating_add(string_bound(self.file_type.len()))
            .saturating_add(string_bound(self.mod_time.len()));
        for (key, value) in &self.xattrs {
            n = n
                .saturating_add(4 + 16 + 8 + 4)
                .saturating_add(string_bound(key.len()))
                .saturating_add(string_bound(value.len()));
        }
        n
    }
}

impl Ztoc {
    /// An upper bound of the serialised size (every field present, worst padding).
    pub fn size_bound(&self) -> u64 {
        // Root, TOC and compression tables with their vtables and alignment.
        let mut n: u64 = 512;
        n = n
            .saturating_add(string_bound(self.version.len()))
            .saturating_add(string_bound(self.build_tool_identifier.len()))
            .saturating_add(string_bound(self.compression.checkpoints.len()))
            .saturating_add(16);
        for d in &self.compression.span_digests {
            n = n.saturating_add(4 + string_bound(d.len()));
        }
        n = n.saturating_add(16);
        for fm in &self.toc {
            n = n.saturating_add(fm.size_bound());
        }
        n
    }

    /// Serialises with upstream's call order (`ztoc_marshaler.go`), taking the checkpoint blob
    /// out of `self` instead of copying it. A zTOC past [`MAX_ZTOC_BYTES`] is an error (the
    /// 32-bit offsets would wrap).
    pub fn into_bytes(self) -> Result<ZtocBytes, ZtocTooLarge> {
        let bound = self.size_bound();
        if bound > MAX_ZTOC_BYTES {
            return Err(ZtocTooLarge { bound });
        }
        let mut b = GoFlatBuilder::new();
        let version = b.create_string(self.version.as_bytes());
        let build_tool = b.create_string(self.build_tool_identifier.as_bytes());

        let mut metadata = vec![0; self.toc.len()];
        for (i, fm) in self.toc.iter().enumerate().rev() {
            metadata[i] = write_file_metadata(&mut b, fm);
        }
        let metadata_vec = b.create_offset_vector(&metadata);
        b.start_object(slots::TOC_FIELDS);
        b.add_offset(0, metadata_vec);
        let toc = b.end_object();

        let checkpoints = b.create_byte_vector_hole(self.compression.checkpoints.len());
        let digests: Vec<_> = self
            .compression
            .span_digests
            .iter()
            .map(|d| b.create_string(d.as_bytes()))
            .collect();
        let digests_vec = b.create_offset_vector(&digests);

        b.start_object(slots::CI_FIELDS);
        b.add_i32(slots::CI_MAX_SPAN_ID, self.compression.max_span_id, 0);
        b.add_offset(slots::CI_SPAN_DIGESTS, digests_vec);
        b.add_offset(slots::CI_CHECKPOINTS, checkpoints);
        if let Some(alg) = self.compression.algorithm {
            // Gzip equals the schema default and is therefore not written.
            b.add_i8(slots::CI_ALGORITHM, alg.wire_value(), 1);
        }
        let compression_info = b.end_object();

        b.start_object(slots::ZTOC_FIELDS);
        b.add_offset(slots::ZTOC_VERSION, version);
        b.add_offset(slots::ZTOC_BUILD_TOOL, build_tool);
        b.add_offset(slots::ZTOC_TOC, toc);
        b.add_i64(slots::ZTOC_COMPRESSED_SIZE, self.compressed_archive_size, 0);
        b.add_i64(
            slots::ZTOC_UNCOMPRESSED_SIZE,
            self.uncompressed_archive_size,
            0,
        );
        b.add_offset(slots::ZTOC_COMPRESSION_INFO, compression_info);
        let root = b.end_object();
        let parts = b.finish(root);
        let checkpoints = self.compression.checkpoints;
        let digest = sha256_digest_string(&[&parts.head, &checkpoints, &parts.tail]);
        let bytes = ZtocBytes {
            head: parts.head,
            checkpoints,
            tail: parts.tail,
            digest,
        };
        debug_assert!(bytes.len() <= bound, "{} > bound {bound}", bytes.len());
        Ok(bytes)
    }
}

fn write_file_metadata(b: &mut GoFlatBuilder, fm: &FileMetadata) -> u32 {
    let name = b.create_string(&fm.name);
    let file_type = b.create_string(fm.file_type.as_bytes());
    let linkname = b.create_string(&fm.linkname);
    let uname = b.create_string(&fm.uname);
    let gname = b.create_string(&fm.gname);
    let mod_time = b.create_string(fm.mod_time.as_bytes());

    let mut xattrs = Vec::with_capacity(fm.xattrs.len());
    for (key, value) in &fm.xattrs {
        let k = b.create_string(key);
        let v = b.create_string(value);
        b.start_object(slots::XATTR_FIELDS);
        b.add_offset(0, k);
        b.add_offset(1, v);
        xattrs.push(b.end_object());
    }
    let xattrs_vec = b.create_offset_vector(&xattrs);

    b.start_object(slots::FM_FIELDS);
    b.add_offset(0, name);
    b.add_offset(1, file_type);
    b.add_i64(2, fm.uncompressed_offset, 0);
    b.add_i64(3, fm.uncompressed_size, 0);
    b.add_offset(4, linkname);
    b.add_i64(5, fm.mode, 0);
    b.add_u32(6, fm.uid, 0);
    b.add_u32(7, fm.gid, 0);
    b.add_offset(8, uname);
    b.add_offset(9, gname);
    b.add_offset(10, mod_time);
    b.add_i64(11, fm.devmajor, 0);
    b.add_i64(12, fm.devminor, 0);
    b.add_offset(13, xattrs_vec);
    b.end_object()
}

/// The `TarZinfo` flatbuffer that stands in for checkpoints in uncompressed layers
/// (`zinfo.fbs`: version = 2, span_size, size), built in upstream's slot order.
pub fn tar_zinfo_bytes(span_size: i64, size: i64) -> Vec<u8> {
    let mut b = GoFlatBuilder::new();
    b.start_object(slots::TAR_ZINFO_FIELDS);
    b.add_i32(0, 2, 0);
    b.add_i64(1, span_size, 0);
    b.add_i64(2, size, 0);
    let root = b.end_object();
    let parts = b.finish(root);
    debug_assert!(parts.tail.is_empty());
    parts.head
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's golden vector (`ztoc/ztoc_test.go` `TestWriteZtoc`).
    #[test]
    fn golden_ztoc_vector() {
        let ztoc = Ztoc {
            version: "0.9".into(),
            build_tool_identifier: "AWS SOCI CLI".into(),
            compressed_archive_size: 2_000_000,
            uncompressed_archive_size: 2_500_000,
            toc: vec![
                FileMetadata {
                    mod_time: "0001-01-01T00:00:00Z".into(),
                    ..Default::default()
                },
                FileMetadata {
                    mod_time: "0001-01-01T00:00:00Z".into(),
                    ..Default::default()
                },
            ],
            compression: CompressionInfo {
                algorithm: None,
                max_span_id: 3,
                span_digests: vec![],
                checkpoints: vec![0; 65536],
            },
        };
        let bytes = ztoc.into_bytes().unwrap();
        assert_eq!(bytes.len(), 65928);
        assert_eq!(
            bytes.digest(),
            "sha256:eba28fdf50b1b57543f57dd051b2468c1d4f57b64d2006c75aa4de1d03e6c7ec"
        );
        assert_eq!(sha256_digest_string(&[&bytes.to_vec()]), bytes.digest());
        // One buffer, same bytes: what conversion writes.
        let joined = bytes.to_vec();
        let contiguous = bytes.into_vec();
        assert_eq!(contiguous.len(), 65928);
        assert!(contiguous == joined);
    }

    #[test]
    fn hole_splicing_equals_inline_vector() {
        // The same table built with the blob inline must give the same bytes.
        let blob: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut a = GoFlatBuilder::new();
        let s = a.create_string(b"x");
        let v = a.create_byte_vector(&blob);
        let t = a.create_string(b"after");
        a.start_object(3);
        a.add_offset(0, s);
        a.add_offset(1, v);
        a.add_offset(2, t);
        let root = a.end_object();
        let inline = a.finish(root);
        assert!(inline.tail.is_empty());

        let mut b = GoFlatBuilder::new();
        let s = b.create_string(b"x");
        let v = b.create_byte_vector_hole(blob.len());
        let t = b.create_string(b"after");
        b.start_object(3);
        b.add_offset(0, s);
        b.add_offset(1, v);
        b.add_offset(2, t);
        let root = b.end_object();
        let parts = b.finish(root);
        assert_eq!([&parts.head[..], &blob, &parts.tail].concat(), inline.head);
    }

    /// Sizes from a layer (names, checkpoints) that would pass 2 GiB are refused before a byte
    /// is written, instead of wrapping the 32-bit offsets.
    #[test]
    fn a_ztoc_past_2_gib_is_refused() {
        let ztoc = |checkpoints: Vec<u8>| Ztoc {
            version: ZTOC_VERSION.into(),
            build_tool_identifier: BUILD_TOOL_IDENTIFIER.into(),
            compressed_archive_size: 1,
            uncompressed_archive_size: 1,
            toc: vec![FileMetadata {
                name: b"a".to_vec(),
                file_type: "reg",
                xattrs: vec![(b"k".to_vec(), b"v".to_vec())],
                ..Default::default()
            }],
            compression: CompressionInfo {
                algorithm: None,
                max_span_id: 0,
                span_digests: vec![String::new(); 1],
                checkpoints,
            },
        };
        let small = ztoc(vec![1; 100]);
        let bound = small.size_bound();
        assert!(small.into_bytes().unwrap().len() <= bound);
        // Zeroed pages that are never touched: only the length is read.
        let big = ztoc(vec![0; MAX_ZTOC_BYTES as usize]);
        let e = big.into_bytes().unwrap_err();
        assert!(e.bound > MAX_ZTOC_BYTES, "{e}");
    }

    #[test]
    fn tar_zinfo_layout() {
        let bytes = tar_zinfo_bytes(4 << 20, 12345);
        // root offset, vtable (3 fields), table with i32 + 2 x i64
        assert_eq!(
            u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize % 4,
            0
        );
        assert!(bytes.windows(8).any(|w| w == 12345i64.to_le_bytes()));
        assert!(bytes.windows(8).any(|w| w == (4i64 << 20).to_le_bytes()));
    }
}
