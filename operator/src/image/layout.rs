//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), read and written.
//!
//! Writing is all-or-nothing: everything goes into a hidden sibling directory that is renamed to
//! the destination only once every blob and `index.json` are in place, so an interrupted run
//! leaves nothing that looks like a finished layout.

use anyhow::{Context, Result, bail};
use soci_format::oci::{Descriptor, Index};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Manifests, indexes and configs are small; a larger "JSON" blob is refused.
const MAX_JSON_BLOB: u64 = 16 << 20;
const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Checks `sha256:<64 hex>` and returns the path below `blobs/`.
pub fn blob_relative_path(digest: &str) -> Result<PathBuf> {
    let Some((alg, hex)) = digest.split_once(':') else {
        bail!("invalid digest {digest:?}");
    };
    let valid = alg == "sha256"
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        bail!("invalid or unsupported digest {digest:?} (only sha256 is supported)");
    }
    Ok(Path::new("blobs").join(alg).join(hex))
}

const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn is_index_type(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_OCI_INDEX | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

/// The image to convert, and the image index blob made for it when the layout's own list had to
/// be narrowed (that blob belongs in the output).
pub struct ResolvedRoot {
    pub target: Descriptor,
    pub synthesized: Option<(Descriptor, Vec<u8>)>,
}

pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    pub fn open(root: &Path) -> Result<Self> {
        let marker = root.join(OCI_LAYOUT_FILE);
        if !marker.is_file() {
            bail!(
                "{} is not an OCI image layout (no {OCI_LAYOUT_FILE} file)",
                root.display()
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Index::from_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The image the layout holds, resolved the way upstream's standalone mode does
    /// (`resolveLayoutRoot`): one manifest entry is the image; one index entry is that index; several
    /// entries are themselves the image index. Children whose manifests are absent are dropped, and
    /// then a new list is made (returned as a blob to store). `reference` picks one entry by its
    /// `org.opencontainers.image.ref.name` first.
    pub fn resolve_root(&self, reference: Option<&str>) -> Result<ResolvedRoot> {
        let path = self.root.join("index.json");
        let mut top = self.index()?;
        let mut list_source: Option<Vec<u8>> = None;
        if let Some(r) = reference {
            let entry = top
                .manifests
                .take()
                .unwrap_or_default()
                .into_iter()
                .find(|d| {
                    d.annotations
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME_ANNOTATION))
                        .map(String::as_str)
                        == Some(r)
                })
                .with_context(|| format!("no image named {r:?} in {}", self.root.display()))?;
            top.manifests = Some(vec![entry]);
        } else {
            list_source =
                Some(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
        let entries = top.manifests.clone().unwrap_or_default();
        if entries.is_empty() {
            bail!("{} lists no images", path.display());
        }
        if entries.len() == 1 && !is_index_type(&entries[0].media_type) {
            return Ok(ResolvedRoot {
                target: entries[0].clone(),
                synthesized: None,
            });
        }
        let (list_bytes, media_type) = if entries.len() == 1 {
            let bytes = self.read_small_blob(&entries[0].digest)?.with_context(|| {
                format!("image index {} is not in the layout", entries[0].digest)
            })?;
            (bytes, entries[0].media_type.clone())
        } else {
            let bytes = match list_source {
                Some(b) => b,
                None => top.to_go_json(),
            };
            (bytes, top.media_type.clone())
        };
        let media_type = if media_type.is_empty() {
            MEDIA_TYPE_OCI_INDEX.to_string()
        } else {
            media_type
        };
        let mut list =
            Index::from_json(&list_bytes).map_err(|e| anyhow::anyhow!("image index: {e}"))?;
        let all = list.manifests.take().unwrap_or_default();
        let total = all.len();
        let available: Vec<Descriptor> = all
            .into_iter()
            .filter(|d| self.has_blob(&d.digest))
            .collect();
        if available.is_empty() {
            bail!(
                "the image index in {} has no entries whose blobs are present",
                self.root.display()
            );
        }
        if available.len() == 1 && is_manifest_type(&available[0].media_type) {
            return Ok(ResolvedRoot {
                target: available[0].clone(),
                synthesized: None,
            });
        }
        if entries.len() == 1 && available.len() == total {
            return Ok(ResolvedRoot {
                target: entries[0].clone(),
                synthesized: None,
            });
        }
        list.media_type = media_type.clone();
        list.manifests = Some(available);
        let bytes = list.to_go_json();
        let target = Descriptor {
            media_type,
            digest: soci_format::oci::sha256_digest(&bytes),
            size: bytes.len() as i64,
            ..Default::default()
        };
        Ok(ResolvedRoot {
            target: target.clone(),
            synthesized: Some((target, bytes)),
        })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join(blob_relative_path(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// A small (JSON) blob, checked against its digest; `None` when absent.
    pub fn read_small_blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(digest)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(MAX_JSON_BLOB + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        if bytes.len() as u64 > MAX_JSON_BLOB {
            bail!("blob {digest} is larger than {MAX_JSON_BLOB} bytes; not a manifest or config");
        }
        let actual = soci_format::oci::sha256_digest(&bytes);
        if actual != digest {
            bail!(
                "blob {digest} in {} has digest {actual}",
                self.root.display()
            );
        }
        Ok(Some(bytes))
    }

    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).with_context(|| format!("opening blob {digest} ({})", path.display()))
    }
}

/// Writes a new layout into a hidden sibling directory and renames it into place on commit.
pub struct LayoutWriter {
    destination: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl LayoutWriter {
    pub fn create(destination: &Path) -> Result<Self> {
        if destination.exists() {
            let empty = destination.is_dir() && fs::read_dir(destination)?.next().is_none();
            if !empty {
                bail!(
                    "destination {} already exists and is not empty",
                    destination.display()
                );
            }
        }
        let name = destination
            .file_name()
            .with_context(|| format!("invalid destination {}", destination.display()))?
            .to_string_lossy()
            .into_owned();
        let parent = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        fs::create_dir_all(staging.join("blobs").join("sha256"))
            .with_context(|| format!("creating {}", staging.display()))?;
        Ok(Self {
            destination: destination.to_path_buf(),
            staging,
            committed: false,
        })
    }

    fn staged_blob(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.staging.join(blob_relative_path(digest)?))
    }

    /// Writes a blob given as consecutive parts.
    pub fn put_blob(&self, digest: &str, parts: &[&[u8]]) -> Result<()> {
        let path = self.staged_blob(digest)?;
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_data()?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Adds a blob from a file (another layout's): a hard link where possible, a copy otherwise.
    pub fn put_blob_from_path(&self, digest: &str, from: &Path) -> Result<()> {
        let path = self.staged_blob(digest)?;
        if path.exists() {
            return Ok(());
        }
        if fs::hard_link(from, &path).is_err() {
            let tmp = path.with_extension("tmp");
            fs::copy(from, &tmp).with_context(|| format!("copying blob {digest}"))?;
            fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// Starts writing a blob that arrives in pieces; `None` when it is already staged.
    pub fn begin_blob(&self, digest: &str) -> Result<Option<StagedBlob>> {
        let path = self.staged_blob(digest)?;
        if path.exists() {
            return Ok(None);
        }
        let tmp = path.with_extension(format!("tmp-{}", tmp_counter()));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Some(StagedBlob { file, tmp, path }))
    }

    /// Writes `oci-layout` and `index.json`, then moves the layout into place.
    pub fn commit(mut self, index_json: &[u8]) -> Result<()> {
        fs::write(self.staging.join(OCI_LAYOUT_FILE), OCI_LAYOUT_CONTENT)?;
        let index_path = self.staging.join("index.json");
        let mut f = File::create(&index_path)?;
        f.write_all(index_json)?;
        f.sync_all()?;
        if self.destination.exists() {
            fs::remove_dir(&self.destination)
                .with_context(|| format!("replacing empty {}", self.destination.display()))?;
        }
        fs::rename(&self.staging, &self.destination).with_context(|| {
            format!(
                "moving {} to {}",
                self.staging.display(),
                self.destination.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for LayoutWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn tmp_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A blob being written into a [`LayoutWriter`]; it appears under its digest on `finish`.
pub struct StagedBlob {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl StagedBlob {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .with_context(|| format!("writing {}", self.tmp.display()))
    }

    /// Call only once the content has been verified.
    pub fn finish(self) -> Result<()> {
        self.file.sync_data()?;
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("moving {} into place", self.tmp.display()))
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}
