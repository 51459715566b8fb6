//! Where images come from and go to, behind one seam: the conversion reads through
//! [`ImageSource`] (small JSON blobs for the planner, streamed layer reads) and writes through
//! [`ImageSink`]. `oci:DIR[:REF]` is an OCI image layout on disk ([`layout_io`]); anything else
//! is a registry reference ([`registry_io`]).

pub mod layout;
pub mod layout_io;
pub mod registry_io;

use crate::registry::RegistryRef;
use anyhow::{Result, bail};
use bytes::Bytes;
use layout::ResolvedRoot;
use sha2::{Digest, Sha256};
use soci_format::conversion_plan::BlobSource;
use soci_format::oci::Descriptor;
use std::future::Future;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, optionally naming one of its images.
    Layout {
        dir: PathBuf,
        reference: Option<String>,
    },
    /// An image in a registry.
    Registry(RegistryRef),
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                bail!("{s:?}: oci: needs a directory");
            }
            // oci:DIR:REF, where DIR itself may contain no colon after the last slash.
            let (dir, reference) = match rest.rfind(':') {
                Some(i) if !rest[i + 1..].contains('/') && i > 0 => {
                    (&rest[..i], Some(rest[i + 1..].to_string()))
                }
                _ => (rest, None),
            };
            return Ok(ImageRef::Layout {
                dir: PathBuf::from(dir),
                reference,
            });
        }
        Ok(ImageRef::Registry(RegistryRef::parse(s)?))
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Layout { dir, reference } => {
                write!(f, "oci:{}", dir.display())?;
                if let Some(r) = reference {
                    write!(f, ":{r}")?;
                }
                Ok(())
            }
            ImageRef::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// A blob as a sequence of chunks, read as they arrive (nothing is buffered whole).
pub trait BlobReader: Send {
    /// The next chunk; `None` at the end.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;
}

/// Where the image to convert is read from.
pub trait ImageSource: Sync {
    type Reader: BlobReader + 'static;

    /// The image as the user named it, for messages.
    fn describe(&self) -> String;

    /// The image to convert (the tag or digest resolved; a layout's root picked like upstream).
    fn resolve(&self) -> impl Future<Output = Result<ResolvedRoot>> + Send;

    /// The small JSON blobs (indexes, manifests, configs) the planner reads, for this root.
    fn json_blobs<'a>(
        &'a self,
        root: &'a ResolvedRoot,
    ) -> impl Future<Output = Result<Box<dyn BlobSource + Send + Sync + 'a>>> + Send;

    /// A manifest or index of the image, checked against its digest; `None` when absent.
    fn read_json(&self, desc: &Descriptor) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Whether the source holds the blob (layouts may lack platforms that were not pulled).
    fn has_blob(&self, desc: &Descriptor) -> impl Future<Output = Result<bool>> + Send;

    /// Whether the blob is really there (a HEAD for registries, where [`Self::has_blob`]
    /// trusts the registry's own push-time checks).
    fn blob_present(&self, desc: &Descriptor) -> impl Future<Output = Result<bool>> + Send {
        self.has_blob(desc)
    }

    /// Streams a blob; pair with [`VerifiedReader`] to check it.
    fn open_blob(&self, desc: &Descriptor) -> impl Future<Output = Result<Self::Reader>> + Send;

    /// A file holding the blob, when the source is on disk (sinks on disk hard-link it).
    fn local_blob_path(&self, _digest: &str) -> Option<PathBuf> {
        None
    }

    /// The repository, when the source is a registry (sinks on the same registry mount).
    fn registry_repository(&self) -> Option<&RegistryRef> {
        None
    }

    /// SOCI index manifests v1 whose `subject` is the manifest `subject` (a digest): a
    /// registry's referrers (API or tag schema), a layout's `index.json` entries.
    fn soci_v1_referrers(
        &self,
        _subject: &str,
    ) -> impl Future<Output = Result<Vec<Descriptor>>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// What writing one blob or manifest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Bytes were transferred.
    Written(u64),
    /// The destination already had it.
    Present,
    /// Mounted from another repository of the same registry, or hard-linked on disk.
    Linked,
}

/// Where the converted image is written. Blobs and manifests may be written in any order the
/// caller likes (children before parents); [`ImageSink::commit`] makes the result visible
/// (the tag, or the layout's `index.json`) and is called last.
pub trait ImageSink: Sync {
    fn describe(&self) -> String;

    /// The source root the conversion read (before anything is written), for sinks that
    /// re-check it before their commit.
    fn starts_from(&mut self, _source_root: &Descriptor) {}

    fn put_blob(
        &self,
        desc: &Descriptor,
        bytes: Bytes,
    ) -> impl Future<Output = Result<PutOutcome>> + Send;

    /// Copies a blob of the source image (a layer or config) unless already present.
    fn copy_blob<S: ImageSource>(
        &self,
        source: &S,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<PutOutcome>> + Send;

    fn put_manifest(
        &self,
        desc: &Descriptor,
        bytes: Bytes,
    ) -> impl Future<Output = Result<PutOutcome>> + Send;

    /// Publishes `roots` (the first is the converted image; v1 adds its SOCI indexes).
    fn commit(self, roots: Vec<(Descriptor, Bytes)>) -> impl Future<Output = Result<()>> + Send;
}

/// Checks a blob's size and sha256 while it streams; the end of the stream is reported only
/// when both match, so a consumer never finishes on corrupt content.
pub struct VerifiedReader<R> {
    inner: R,
    expected_digest: String,
    expected_size: u64,
    read: u64,
    hasher: Sha256,
    /// "layer sha256:… of IMAGE", for messages.
    label: String,
}

impl<R: BlobReader> VerifiedReader<R> {
    pub fn new(inner: R, desc: &Descriptor, label: String) -> Self {
        Self {
            inner,
            expected_digest: desc.digest.clone(),
            expected_size: desc.size.max(0) as u64,
            read: 0,
            hasher: Sha256::new(),
            label,
        }
    }
}

/// A blob whose bytes are not what its descriptor says: permanent.
fn mismatch(label: &str, cause: String) -> anyhow::Error {
    crate::registry::RegistryError::permanent(
        crate::registry::error::PermanentCause::DigestMismatch,
        label,
        cause,
    )
    .into()
}

impl<R: BlobReader> BlobReader for VerifiedReader<R> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        match self.inner.next_chunk().await? {
            Some(chunk) => {
                self.read += chunk.len() as u64;
                if self.read > self.expected_size {
                    return Err(mismatch(
                        &self.label,
                        format!(
                            "blob is larger than its descriptor's size {}",
                            self.expected_size
                        ),
                    ));
                }
                self.hasher.update(&chunk);
                Ok(Some(chunk))
            }
            None => {
                if self.read != self.expected_size {
                    return Err(mismatch(
                        &self.label,
                        format!(
                            "blob has {} bytes, its descriptor says {}",
                            self.read, self.expected_size
                        ),
                    ));
                }
                let actual = format!(
                    "sha256:{}",
                    soci_format::ztoc::hex_lower(&self.hasher.clone().finalize())
                );
                if actual != self.expected_digest {
                    return Err(mismatch(
                        &self.label,
                        format!("content has digest {actual}"),
                    ));
                }
                Ok(None)
            }
        }
    }
}

/// An in-memory blob as a reader (uploads of new JSON and zTOCs go through the same path).
pub struct BytesReader(Option<Bytes>);

impl BytesReader {
    pub fn new(bytes: Bytes) -> Self {
        Self(Some(bytes))
    }
}

impl BlobReader for BytesReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self.0.take().filter(|b| !b.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layout_and_registry_references() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/x").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/x".into(),
                reference: None
            }
        );
        assert_eq!(
            ImageRef::parse("oci:out:latest").unwrap(),
            ImageRef::Layout {
                dir: "out".into(),
                reference: Some("latest".into())
            }
        );
        assert!(ImageRef::parse("oci:").is_err());
        let ImageRef::Registry(r) = ImageRef::parse("docker.io/library/busybox").unwrap() else {
            panic!("not a registry reference");
        };
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert!(ImageRef::parse("Not A Reference").is_err());
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn verified_reader_rejects_wrong_content() {
        let content = Bytes::from_static(b"hello");
        let good = Descriptor::new("x", &soci_format::oci::sha256_digest(&content), 5);
        let mut r = VerifiedReader::new(BytesReader::new(content.clone()), &good, "t".into());
        assert!(block_on(r.next_chunk()).unwrap().is_some());
        assert!(block_on(r.next_chunk()).unwrap().is_none());

        let wrong_digest = Descriptor::new("x", &soci_format::oci::sha256_digest(b"other"), 5);
        let mut r =
            VerifiedReader::new(BytesReader::new(content.clone()), &wrong_digest, "t".into());
        block_on(r.next_chunk()).unwrap();
        assert!(block_on(r.next_chunk()).is_err());

        let short = Descriptor::new("x", &good.digest, 4);
        let mut r = VerifiedReader::new(BytesReader::new(content), &short, "t".into());
        assert!(block_on(r.next_chunk()).is_err());
    }
}
