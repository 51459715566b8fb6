//! `layout`: writes OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
//!
//! * [`Layout::add_image`]: config + layers + manifest for one platform, OCI or Docker schema2 media
//!   types ([`Flavor`]); the config is a valid image config (architecture/os/variant matching the
//!   platform, `rootfs.diff_ids` = sha256 of each layer's uncompressed tar).
//! * [`Layout::add_index`]: an OCI image index or a Docker manifest list over manifest descriptors.
//! * [`Layout::add_attestation`]: a buildx-style attestation manifest (in-toto layer) and its index
//!   entry (`unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`,
//!   `vnd.docker.reference.digest: <subject>`).
//! * [`Layout::write_index_json`]: the top `index.json`. Upstream `soci convert --standalone` does
//!   not need an `org.opencontainers.image.ref.name` (it takes a single non-index entry as the
//!   image, a single index entry as the list to walk, several entries as the list itself), so the
//!   ref name is optional.
//!
//! Input JSON is written with `serde_json` (keys sorted, compact or pretty per [`JsonStyle`]); it
//! deliberately is *not* Go-canonical, because upstream re-marshals manifests and indexes anyway.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Media type strings.
pub mod mt {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_ND_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
}

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for x in h {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// OCI or Docker schema2 media types for manifests/configs/indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
}

/// How input JSON blobs are serialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JsonStyle {
    #[default]
    Compact,
    /// Pretty-printed (like many registries' stored Docker manifests).
    Pretty,
}

/// A platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Platform {
        let mut it = s.split('/');
        let os = it.next().unwrap_or_default().to_string();
        let architecture = it.next().unwrap_or_default().to_string();
        let variant = it.next().map(str::to_string);
        Platform {
            architecture,
            os,
            variant,
        }
    }
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architecture".into(), json!(self.architecture));
        m.insert("os".into(), json!(self.os));
        if let Some(v) = &self.variant {
            m.insert("variant".into(), json!(v));
        }
        Value::Object(m)
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("mediaType".into(), json!(self.media_type));
        m.insert("digest".into(), json!(self.digest));
        m.insert("size".into(), json!(self.size));
        if !self.annotations.is_empty() {
            m.insert("annotations".into(), json!(self.annotations));
        }
        if let Some(p) = &self.platform {
            m.insert("platform".into(), p.to_json());
        }
        Value::Object(m)
    }
    pub fn with_platform(mut self, p: Platform) -> Self {
        self.platform = Some(p);
        self
    }
    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
}

/// One image layer: its blob, media type and uncompressed digest.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    pub blob: Vec<u8>,
    /// sha256 of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: String,
}

impl Layer {
    /// Encode `tar` with `enc` under `media_type`.
    pub fn new(media_type: &str, tar: &[u8], enc: &crate::compress::Encoding) -> Layer {
        Layer {
            media_type: media_type.to_string(),
            blob: crate::compress::encode(tar, enc),
            diff_id: sha256_digest(tar),
        }
    }
}

/// One single-platform image.
#[derive(Clone, Debug)]
pub struct Image {
    pub flavor: Flavor,
    pub platform: Platform,
    pub layers: Vec<Layer>,
    pub json: JsonStyle,
    /// Manifest annotations (OCI only).
    pub annotations: BTreeMap<String, String>,
}

impl Image {
    pub fn new(flavor: Flavor, platform: &str, layers: Vec<Layer>) -> Image {
        Image {
            flavor,
            platform: Platform::parse(platform),
            layers,
            json: JsonStyle::Compact,
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI layout directory being written.
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Create `root` (and `oci-layout`, `blobs/sha256/`).
    pub fn create(root: &Path) -> io::Result<Layout> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Path of a blob by digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.root, digest)
    }
    /// Store a blob, return a descriptor of `media_type`.
    pub fn add_blob(&self, media_type: &str, bytes: &[u8]) -> io::Result<Descriptor> {
        let digest = sha256_digest(bytes);
        fs::write(self.blob_path(&digest), bytes)?;
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }
    /// Store a JSON value as a blob.
    pub fn add_json(
        &self,
        media_type: &str,
        v: &Value,
        style: JsonStyle,
    ) -> io::Result<Descriptor> {
        let bytes = match style {
            JsonStyle::Compact => serde_json::to_vec(v)?,
            JsonStyle::Pretty => serde_json::to_vec_pretty(v)?,
        };
        self.add_blob(media_type, &bytes)
    }
    /// Delete a blob (to model partially pulled multi-platform images).
    pub fn remove_blob(&self, digest: &str) -> io::Result<()> {
        fs::remove_file(self.blob_path(digest))
    }

    /// Write config, layers and manifest. Returns the manifest descriptor with `platform` set.
    pub fn add_image(&self, img: &Image) -> io::Result<Descriptor> {
        let (manifest_mt, config_mt) = match img.flavor {
            Flavor::Oci => (mt::OCI_MANIFEST, mt::OCI_CONFIG),
            Flavor::Docker => (mt::DOCKER_MANIFEST, mt::DOCKER_CONFIG),
        };
        let p = &img.platform;
        let mut config = json!({
            "architecture": p.architecture,
            "os": p.os,
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/",
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": img.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": img.layers.iter().enumerate().map(|(i, _)| json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("/bin/sh -c #(nop) layer {i}"),
            })).collect::<Vec<_>>(),
        });
        if let Some(v) = &p.variant {
            config["variant"] = json!(v);
        }
        let cfg = self.add_json(config_mt, &config, img.json)?;
        let mut layers = Vec::new();
        for l in &img.layers {
            layers.push(self.add_blob(&l.media_type, &l.blob)?.to_json());
        }
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": manifest_mt,
            "config": cfg.to_json(),
            "layers": layers,
        });
        if !img.annotations.is_empty() {
            m["annotations"] = json!(img.annotations);
        }
        Ok(self
            .add_json(manifest_mt, &m, img.json)?
            .with_platform(p.clone()))
    }

    /// An OCI index / Docker manifest list over `manifests`.
    pub fn add_index(
        &self,
        flavor: Flavor,
        manifests: &[Descriptor],
        style: JsonStyle,
    ) -> io::Result<Descriptor> {
        let t = match flavor {
            Flavor::Oci => mt::OCI_INDEX,
            Flavor::Docker => mt::DOCKER_LIST,
        };
        let v = json!({
            "schemaVersion": 2,
            "mediaType": t,
            "manifests": manifests.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        self.add_json(t, &v, style)
    }

    /// A buildx-style attestation manifest for `subject`; returns its index entry.
    pub fn add_attestation(&self, subject: &Descriptor) -> io::Result<Descriptor> {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{"name": "pkg:docker/example/app@latest", "digest": {"sha256": subject.digest.trim_start_matches("sha256:")}}],
            "predicate": {"builder": {"id": "https://github.com/docker/buildx"}, "buildType": "https://mobyproject.org/buildkit@v1"},
        });
        let layer = self
            .add_json(mt::IN_TOTO, &statement, JsonStyle::Compact)?
            .annotate(
                "in-toto.io/predicate-type",
                "https://slsa.dev/provenance/v0.2",
            );
        let config = json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.clone()]},
        });
        let cfg = self.add_json(mt::OCI_CONFIG, &config, JsonStyle::Compact)?;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": cfg.to_json(),
            "layers": [layer.to_json()],
        });
        Ok(self
            .add_json(mt::OCI_MANIFEST, &m, JsonStyle::Compact)?
            .with_platform(Platform::parse("unknown/unknown"))
            .annotate("vnd.docker.reference.digest", &subject.digest)
            .annotate("vnd.docker.reference.type", "attestation-manifest"))
    }

    /// Write `index.json` listing `top` (normally one descriptor). If `ref_name` is given, every
    /// entry gets `org.opencontainers.image.ref.name`.
    pub fn write_index_json(&self, top: &[Descriptor], ref_name: Option<&str>) -> io::Result<()> {
        let entries: Vec<Value> = top
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(r) = ref_name {
                    d.annotations
                        .insert("org.opencontainers.image.ref.name".into(), r.into());
                }
                d.to_json()
            })
            .collect();
        let v = json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": entries});
        fs::write(self.root.join("index.json"), serde_json::to_vec(&v)?)
    }
}

/// `<root>/blobs/<alg>/<hex>` for `alg:hex`.
pub fn blob_path(root: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    root.join("blobs").join(alg).join(hex)
}

/// Total size in bytes of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += dir_size(&e.path()),
                Ok(t) if t.is_file() => n += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    n
}
