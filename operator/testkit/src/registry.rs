//! `registry`: a real OCI registry for tests — Debian's `docker-registry` (distribution 2.8.2)
//! on a free 127.0.0.1 port with a temporary storage directory, optionally behind htpasswd
//! basic auth — plus a small blocking client to push OCI layouts into it and pull images back
//! with every digest checked.
//!
//! * [`registry_binary`]: `$SOCI_REGISTRY_BIN`, else `/usr/bin/docker-registry`, `None` if absent.
//! * [`LocalRegistry::start`] / [`LocalRegistry::start_with_basic_auth`] /
//!   [`LocalRegistry::start_with_config`] (extra config, e.g. `notifications`): spawn, wait until `/v2/`
//!   answers, kill on drop. Its access log (every request, in order) is kept in [`LocalRegistry::log`].
//! * [`RegistryHttp`]: push a layout's image ([`RegistryHttp::push_layout`]), pull an image's whole
//!   graph ([`RegistryHttp::pull_graph`]) and write it as a layout ([`write_layout`]).

use crate::layout::sha256_digest;
use crate::oracle::TempDir;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The registry program, if installed.
pub fn registry_binary() -> Option<PathBuf> {
    let p = std::env::var_os("SOCI_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
    p.is_file().then_some(p)
}

/// The registry binary, or `None` after printing why the test is skipped. Panics instead when
/// `SOCI_REGISTRY_REQUIRED=1` (CI), so a missing registry cannot pass silently there.
pub fn registry_or_skip(test: &str) -> Option<PathBuf> {
    match registry_binary() {
        Some(p) => Some(p),
        None if std::env::var("SOCI_REGISTRY_REQUIRED").is_ok_and(|v| v == "1") => {
            panic!(
                "{test}: docker-registry not found (apt install docker-registry) and SOCI_REGISTRY_REQUIRED=1"
            )
        }
        None => {
            eprintln!("SKIPPED {test}: docker-registry not found (apt install docker-registry)");
            None
        }
    }
}

pub struct LocalRegistry {
    child: Child,
    port: u16,
    dir: TempDir,
    credentials: Option<(String, String)>,
}

impl LocalRegistry {
    pub fn start() -> io::Result<Self> {
        Self::spawn(None, "")
    }

    /// Anonymous, with `extra` (top-level YAML sections, e.g. `notifications:`) appended to
    /// the generated config; it must not repeat a section the config has (`version`, `log`,
    /// `storage`, `http`).
    pub fn start_with_config(extra: &str) -> io::Result<Self> {
        Self::spawn(None, extra)
    }

    /// htpasswd basic auth with one user (bcrypt, as distribution requires).
    pub fn start_with_basic_auth(user: &str, password: &str) -> io::Result<Self> {
        Self::spawn(Some((user.to_string(), password.to_string())), "")
    }

    fn spawn(credentials: Option<(String, String)>, extra: &str) -> io::Result<Self> {
        let binary = registry_binary().ok_or_else(|| other("docker-registry not installed"))?;
        let dir = TempDir::new("soci-registry")?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage)?;
        // A port that was free a moment ago; a lost race shows up as a failed start, retried.
        let mut last_error = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: soci-testkit\n",
                storage.display()
            );
            if let Some((user, password)) = &credentials {
                let hash = bcrypt::hash(password, 4).map_err(|e| other(e.to_string()))?;
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: soci-testkit\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            config.push_str(extra);
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config)?;
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path)?;
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            match wait_ready(&mut child, port, &log_path, Duration::from_secs(20)) {
                Ok(()) => {
                    return Ok(LocalRegistry {
                        child,
                        port,
                        dir,
                        credentials,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| other("registry did not start")))
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps a blob's bytes (filesystem driver layout).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Everything the registry logged so far (one access-log line per request).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A docker `config.json` directory with this registry's credentials (empty `auths` when
    /// anonymous); `password` overrides the real one (to test wrong credentials).
    pub fn docker_config(&self, password: Option<&str>) -> io::Result<PathBuf> {
        let dir = self
            .dir
            .path()
            .join(format!("docker-config-{}", password.unwrap_or("")));
        fs::create_dir_all(&dir)?;
        let auths = match &self.credentials {
            Some((user, real)) => json!({ self.host(): {
                "username": user, "password": password.unwrap_or(real)
            }}),
            None => json!({}),
        };
        fs::write(
            dir.join("config.json"),
            json!({ "auths": auths }).to_string(),
        )?;
        Ok(dir)
    }

    /// A client with this registry's credentials.
    pub fn client(&self) -> RegistryHttp {
        RegistryHttp::new(&self.host(), self.credentials.clone())
    }
}

/// Polls `GET /v2/` until the registry answers (200, or 401 behind auth).
fn wait_ready(child: &mut Child, port: u16, log: &Path, timeout: Duration) -> io::Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) = child.try_wait()? {
            return Err(other(format!(
                "docker-registry exited with {status}: {}",
                fs::read_to_string(log).unwrap_or_default()
            )));
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req =
                format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
            let mut reply = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut reply).is_ok()
                && (reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.1 401"))
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(other(format!(
        "docker-registry did not answer within {timeout:?}"
    )))
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking distribution-API client for tests (monolithic uploads, exact bytes).
pub struct RegistryHttp {
    base: String,
    credentials: Option<(String, String)>,
    http: reqwest::blocking::Client,
}

/// One pulled image: the root descriptor and every blob of its graph by digest.
pub struct PulledImage {
    pub root: Value,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl RegistryHttp {
    pub fn new(host: &str, credentials: Option<(String, String)>) -> Self {
        Self {
            base: format!("http://{host}/v2"),
            credentials,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.credentials {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    fn fail(what: &str, r: reqwest::blocking::Response) -> io::Error {
        let status = r.status();
        other(format!(
            "{what}: HTTP {status}: {}",
            r.text().unwrap_or_default()
        ))
    }

    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> io::Result<String> {
        let digest = sha256_digest(bytes);
        let start = self
            .request(
                reqwest::Method::POST,
                &format!("{}/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .map_err(|e| other(e.to_string()))?;
        if start.status().as_u16() != 202 {
            return Err(Self::fail("starting upload", start));
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| other("no upload location"))?
            .to_string();
        let mut url = reqwest::Url::parse(&format!(
            "http://{}",
            self.base.trim_start_matches("http://")
        ))
        .and_then(|b| b.join(&location))
        .map_err(|e| other(e.to_string()))?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let put = self
            .request(reqwest::Method::PUT, url.as_str())
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .map_err(|e| other(e.to_string()))?;
        if put.status().as_u16() != 201 {
            return Err(Self::fail("finishing upload", put));
        }
        Ok(digest)
    }

    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        let r = self
            .request(
                reqwest::Method::PUT,
                &format!("{}/{repo}/manifests/{reference}", self.base),
            )
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .map_err(|e| other(e.to_string()))?;
        if r.status().as_u16() != 201 {
            return Err(Self::fail(&format!("PUT manifest {repo}:{reference}"), r));
        }
        Ok(())
    }

    /// `(bytes, content type)` of a manifest, `None` on 404.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> io::Result<Option<(Vec<u8>, String)>> {
        let r = self
            .request(
                reqwest::Method::GET,
                &format!("{}/{repo}/manifests/{reference}", self.base),
            )
            .header("accept", MANIFEST_TYPES.join(", "))
            .send()
            .map_err(|e| other(e.to_string()))?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => {
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Ok(Some((
                    r.bytes().map_err(|e| other(e.to_string()))?.to_vec(),
                    ct,
                )))
            }
            _ => Err(Self::fail(&format!("GET manifest {repo}:{reference}"), r)),
        }
    }

    pub fn get_blob(&self, repo: &str, digest: &str) -> io::Result<Option<Vec<u8>>> {
        let r = self
            .request(
                reqwest::Method::GET,
                &format!("{}/{repo}/blobs/{digest}", self.base),
            )
            .send()
            .map_err(|e| other(e.to_string()))?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(r.bytes().map_err(|e| other(e.to_string()))?.to_vec())),
            _ => Err(Self::fail(&format!("GET blob {repo}@{digest}"), r)),
        }
    }

    /// Pushes the image of an OCI layout as `repo:tag` and returns its root descriptor. The
    /// root is the single `index.json` entry, or an OCI index of all entries; index entries
    /// whose manifests the layout lacks are dropped (a registry refuses dangling references).
    pub fn push_layout(&self, layout: &Path, repo: &str, tag: &str) -> io::Result<Value> {
        let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let root = match entries.as_slice() {
            [one] => strip_descriptor(one),
            _ => {
                let bytes = serde_json::to_vec(&json!({
                    "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries
                }))?;
                fs::write(
                    crate::layout::blob_path(layout, &sha256_digest(&bytes)),
                    &bytes,
                )?;
                json!({"mediaType": OCI_INDEX, "digest": sha256_digest(&bytes), "size": bytes.len()})
            }
        };
        let pushed = self.push_node(layout, repo, &root)?;
        let bytes = fs::read(crate::layout::blob_path(
            layout,
            pushed["digest"].as_str().unwrap(),
        ))?;
        self.push_manifest(repo, tag, pushed["mediaType"].as_str().unwrap(), &bytes)?;
        Ok(pushed)
    }

    /// Pushes a descriptor's graph, children first; returns the descriptor as pushed (an index
    /// rewritten without its missing entries gets a new digest).
    fn push_node(&self, layout: &Path, repo: &str, desc: &Value) -> io::Result<Value> {
        let media_type = desc["mediaType"].as_str().unwrap_or("").to_string();
        let digest = desc["digest"].as_str().unwrap_or("").to_string();
        let mut bytes = fs::read(crate::layout::blob_path(layout, &digest))?;
        if media_type.contains("index") || media_type.contains("manifest.list") {
            let mut doc: Value = serde_json::from_slice(&bytes)?;
            let children = doc["manifests"].as_array().cloned().unwrap_or_default();
            let mut kept = Vec::new();
            for child in &children {
                let d = child["digest"].as_str().unwrap_or("");
                if crate::layout::blob_path(layout, d).is_file() {
                    let pushed = self.push_node(layout, repo, child)?;
                    let mut entry = child.clone();
                    entry["digest"] = pushed["digest"].clone();
                    entry["size"] = pushed["size"].clone();
                    kept.push(entry);
                }
            }
            if kept.len() != children.len() {
                doc["manifests"] = Value::Array(kept);
                bytes = serde_json::to_vec(&doc)?;
                fs::write(
                    crate::layout::blob_path(layout, &sha256_digest(&bytes)),
                    &bytes,
                )?;
            }
        } else if media_type.contains("manifest") {
            let doc: Value = serde_json::from_slice(&bytes)?;
            let mut blobs = vec![doc["config"].clone()];
            blobs.extend(doc["layers"].as_array().cloned().unwrap_or_default());
            for b in blobs {
                let d = b["digest"].as_str().unwrap_or("");
                self.push_blob(repo, &fs::read(crate::layout::blob_path(layout, d))?)?;
            }
        } else {
            return Err(other(format!("unexpected root media type {media_type}")));
        }
        let digest = sha256_digest(&bytes);
        self.push_manifest(repo, &digest, &media_type, &bytes)?;
        Ok(json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
    }

    /// Every manifest and blob reachable from `repo:reference`, each checked against its
    /// digest (and the root against the tag's `Docker-Content-Digest` semantics: its bytes).
    pub fn pull_graph(&self, repo: &str, reference: &str) -> io::Result<PulledImage> {
        let (bytes, content_type) = self
            .get_manifest(repo, reference)?
            .ok_or_else(|| other(format!("{repo}:{reference} not found")))?;
        let doc: Value = serde_json::from_slice(&bytes)?;
        let media_type = doc["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(content_type);
        let root =
            json!({"mediaType": media_type, "digest": sha256_digest(&bytes), "size": bytes.len()});
        let mut blobs = BTreeMap::new();
        self.pull_node(repo, &root, Some(bytes), &mut blobs)?;
        Ok(PulledImage { root, blobs })
    }

    fn pull_node(
        &self,
        repo: &str,
        desc: &Value,
        known: Option<Vec<u8>>,
        out: &mut BTreeMap<String, Vec<u8>>,
    ) -> io::Result<()> {
        let digest = desc["digest"].as_str().unwrap_or("").to_string();
        if out.contains_key(&digest) {
            return Ok(());
        }
        let media_type = desc["mediaType"].as_str().unwrap_or("");
        let is_manifest = MANIFEST_TYPES.contains(&media_type);
        let bytes = match known {
            Some(b) => b,
            None if is_manifest => self
                .get_manifest(repo, &digest)?
                .map(|(b, _)| b)
                .ok_or_else(|| other(format!("manifest {digest} missing from {repo}")))?,
            None => self
                .get_blob(repo, &digest)?
                .ok_or_else(|| other(format!("blob {digest} missing from {repo}")))?,
        };
        if sha256_digest(&bytes) != digest {
            return Err(other(format!(
                "{digest} in {repo}: content has another digest"
            )));
        }
        if desc["size"].as_u64() != Some(bytes.len() as u64) {
            return Err(other(format!(
                "{digest} in {repo}: size differs from its descriptor"
            )));
        }
        out.insert(digest, bytes.clone());
        if is_manifest {
            let doc: Value = serde_json::from_slice(&bytes)?;
            let mut children = doc["manifests"].as_array().cloned().unwrap_or_default();
            if doc.get("config").is_some() {
                children.push(doc["config"].clone());
            }
            children.extend(doc["layers"].as_array().cloned().unwrap_or_default());
            for c in children {
                self.pull_node(repo, &c, None, out)?;
            }
        }
        Ok(())
    }
}

/// Descriptor fields that a registry keeps (`mediaType`, `digest`, `size`).
fn strip_descriptor(d: &Value) -> Value {
    json!({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]})
}

/// Writes a pulled image as an OCI layout whose `index.json` lists just its root.
pub fn write_layout(dir: &Path, image: &PulledImage) -> io::Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for (digest, bytes) in &image.blobs {
        fs::write(crate::layout::blob_path(dir, digest), bytes)?;
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [image.root]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
}
