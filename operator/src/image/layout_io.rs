//! OCI image layouts as a conversion source and sink.

use super::layout::{LayoutWriter, OciLayout, ResolvedRoot};
use super::{BlobReader, ImageSink, ImageSource, PutOutcome, VerifiedReader};
use anyhow::{Context, Result};
use bytes::Bytes;
use soci_format::conversion_plan::BlobSource;
use soci_format::oci::{Descriptor, Index};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::task::block_in_place;

/// Bytes read from a layer file per chunk.
pub const LAYER_READ_CHUNK: usize = 256 << 10;

const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub struct LayoutSource {
    layout: OciLayout,
    dir: PathBuf,
    reference: Option<String>,
}

impl LayoutSource {
    pub fn open(dir: &Path, reference: Option<String>) -> Result<Self> {
        Ok(Self {
            layout: OciLayout::open(dir)?,
            dir: dir.to_path_buf(),
            reference,
        })
    }
}

/// The layout's blobs, plus the image index made while resolving the root.
struct LayoutBlobs<'a> {
    layout: &'a OciLayout,
    extra: Option<&'a (Descriptor, Vec<u8>)>,
}

impl BlobSource for LayoutBlobs<'_> {
    fn get(&self, digest: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        if let Some((desc, bytes)) = self.extra
            && desc.digest == digest
        {
            return Ok(Some(bytes.clone()));
        }
        self.layout
            .read_small_blob(digest)
            .map_err(|e| format!("{e:#}"))
    }
}

impl ImageSource for LayoutSource {
    type Reader = FileReader;

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    async fn resolve(&self) -> Result<ResolvedRoot> {
        block_in_place(|| self.layout.resolve_root(self.reference.as_deref()))
    }

    async fn json_blobs<'a>(
        &'a self,
        root: &'a ResolvedRoot,
    ) -> Result<Box<dyn BlobSource + Send + Sync + 'a>> {
        Ok(Box::new(LayoutBlobs {
            layout: &self.layout,
            extra: root.synthesized.as_ref(),
        }))
    }

    async fn read_json(&self, desc: &Descriptor) -> Result<Option<Vec<u8>>> {
        block_in_place(|| self.layout.read_small_blob(&desc.digest))
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.layout.has_blob(&desc.digest))
    }

    async fn open_blob(&self, desc: &Descriptor) -> Result<FileReader> {
        let file = block_in_place(|| self.layout.open_blob(&desc.digest))?;
        Ok(FileReader { file })
    }

    fn local_blob_path(&self, digest: &str) -> Option<PathBuf> {
        self.layout.blob_path(digest).ok().filter(|p| p.is_file())
    }

    /// A layout has no referrers API: v1 SOCI indexes are `index.json` entries (as our
    /// `convert --index-version v1` writes them) whose manifest names the subject.
    async fn soci_v1_referrers(&self, subject: &str) -> Result<Vec<Descriptor>> {
        block_in_place(|| {
            let mut found = Vec::new();
            for d in self.layout.index()?.manifests.unwrap_or_default() {
                if !soci_format::oci::is_manifest_type(&d.media_type) {
                    continue;
                }
                let Some(bytes) = self.layout.read_small_blob(&d.digest)? else {
                    continue;
                };
                let Ok(m) = soci_format::oci::Manifest::from_json(&bytes) else {
                    continue;
                };
                if m.config.media_type == soci_format::oci::SOCI_INDEX_ARTIFACT_TYPE_V1
                    && m.subject.is_some_and(|s| s.digest == subject)
                {
                    found.push(d);
                }
            }
            Ok(found)
        })
    }
}

/// A blob file read in [`LAYER_READ_CHUNK`] pieces.
pub struct FileReader {
    file: File,
}

impl BlobReader for FileReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        block_in_place(|| {
            // read_to_end fills spare capacity without zeroing it first.
            let mut chunk = Vec::with_capacity(LAYER_READ_CHUNK);
            (&mut self.file)
                .take(LAYER_READ_CHUNK as u64)
                .read_to_end(&mut chunk)?;
            Ok((!chunk.is_empty()).then(|| Bytes::from(chunk)))
        })
    }
}

/// A new layout, assembled in a hidden directory and renamed into place on commit.
pub struct LayoutSink {
    writer: LayoutWriter,
    dir: PathBuf,
    /// Written as `org.opencontainers.image.ref.name` on the `index.json` entries.
    reference: Option<String>,
}

impl LayoutSink {
    pub fn create(dir: &Path, reference: Option<String>) -> Result<Self> {
        Ok(Self {
            writer: LayoutWriter::create(dir)?,
            dir: dir.to_path_buf(),
            reference,
        })
    }
}

impl ImageSink for LayoutSink {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    async fn put_blob(&self, desc: &Descriptor, bytes: Bytes) -> Result<PutOutcome> {
        block_in_place(|| self.writer.put_blob(&desc.digest, &[&bytes]))?;
        Ok(PutOutcome::Written(bytes.len() as u64))
    }

    async fn copy_blob<S: ImageSource>(&self, source: &S, desc: &Descriptor) -> Result<PutOutcome> {
        if let Some(path) = source.local_blob_path(&desc.digest) {
            block_in_place(|| self.writer.put_blob_from_path(&desc.digest, &path))?;
            return Ok(PutOutcome::Linked);
        }
        let Some(mut staged) = block_in_place(|| self.writer.begin_blob(&desc.digest))? else {
            return Ok(PutOutcome::Present);
        };
        let label = format!("blob {} of {}", desc.digest, source.describe());
        let mut reader = VerifiedReader::new(source.open_blob(desc).await?, desc, label.clone());
        let mut written = 0u64;
        while let Some(chunk) = reader.next_chunk().await? {
            block_in_place(|| staged.write(&chunk)).with_context(|| label.clone())?;
            written += chunk.len() as u64;
        }
        block_in_place(|| staged.finish())?;
        Ok(PutOutcome::Written(written))
    }

    async fn put_manifest(&self, desc: &Descriptor, bytes: Bytes) -> Result<PutOutcome> {
        self.put_blob(desc, bytes).await
    }

    async fn commit(self, roots: Vec<(Descriptor, Bytes)>) -> Result<()> {
        let entries = roots
            .into_iter()
            .map(|(mut entry, _)| {
                if let Some(name) = &self.reference {
                    entry
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(REF_NAME_ANNOTATION.into(), name.clone());
                }
                entry
            })
            .collect();
        let layout_index = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_INDEX.into(),
            manifests: Some(entries),
            ..Default::default()
        };
        block_in_place(|| self.writer.commit(&layout_index.to_go_json()))
    }
}
