//! The node side of the lazy-loading tests: which layers of an image its bound SOCI index has a
//! zTOC for, Pods that run an image, what the soci-snapshotter and the registry did for them
//! (from their logs and the mount table), and forgetting an image on the node so the next Pod
//! pulls it again. The log formats are those of soci-snapshotter v0.16.1 (JSON lines) and
//! distribution's `response completed` lines.

use crate::{Ctx, run_cmd};
use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use soci_testkit::registry::RegistryHttp;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SOCI_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
const LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
const IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";

/// Why lazy loading cannot be tested here, if it cannot.
pub fn lazy_unavailable(ctx: &Ctx) -> Option<String> {
    if ctx.g.snapshotter != "soci" {
        return Some(format!(
            "the node's snapshotter is '{}', not soci (e2e/proving-ground up --soci)",
            ctx.g.snapshotter
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse here: soci-snapshotter cannot mount lazily".into());
    }
    None
}

/// One layer of the image manifest the node runs.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    /// Its chain id: how the snapshotter keys its snapshot.
    pub chain: String,
    /// The bound SOCI index has a zTOC for it.
    pub indexed: bool,
}

/// The image manifest of `linux/ARCH` behind a reference, and its layers.
#[derive(Debug, Clone)]
pub struct NodeImage {
    pub repo: String,
    pub manifest: String,
    pub layers: Vec<Layer>,
}

fn split_reference(reference: &str) -> Result<(String, String, String)> {
    let (host, rest) = reference
        .split_once('/')
        .ok_or_else(|| anyhow!("{reference}: no registry host"))?;
    let (repo, reference) = match rest.split_once('@') {
        Some((repo, digest)) => {
            // `repo:tag@digest`: the digest wins.
            let repo = match repo.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r,
                _ => repo,
            };
            (repo.to_string(), digest.to_string())
        }
        None => {
            let (repo, tag) = rest
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("{reference}: no tag or digest"))?;
            (repo.to_string(), tag.to_string())
        }
    };
    Ok((host.to_string(), repo, reference))
}

fn json_of(bytes: &[u8]) -> Result<Value> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Chain ids of a list of diff ids (the image-spec's ChainID).
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{:x}",
                Sha256::digest(format!("{prev} {d}").as_bytes())
            ),
        };
        out.push(next);
    }
    out
}

/// The image the node runs for `reference` (linux/amd64), with which layers the SOCI index its
/// manifest names (annotation) has a zTOC for.
pub fn node_image(reference: &str) -> Result<NodeImage> {
    let (host, repo, reference) = split_reference(reference)?;
    let registry = RegistryHttp::new(&host, None);
    let manifest = |r: &str| -> Result<Value> {
        let (bytes, _) = registry
            .get_manifest(&repo, r)?
            .ok_or_else(|| anyhow!("{host}/{repo}@{r}: no such manifest"))?;
        json_of(&bytes)
    };
    let mut doc = manifest(&reference)?;
    let mut manifest_digest = reference.clone();
    if let Some(entries) = doc.get("manifests").and_then(Value::as_array) {
        let entry = entries
            .iter()
            .find(|m| {
                let soci = m["artifactType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("application/vnd.amazon.soci"))
                    || m["annotations"].get(IMAGE_MANIFEST_DIGEST).is_some();
                !soci && m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
            })
            .ok_or_else(|| anyhow!("{reference}: no linux/amd64 manifest"))?;
        manifest_digest = entry["digest"].as_str().unwrap_or_default().to_string();
        doc = manifest(&manifest_digest)?;
    }
    let config_digest = doc["config"]["digest"].as_str().unwrap_or_default();
    let config = json_of(
        &registry
            .get_blob(&repo, config_digest)?
            .ok_or_else(|| anyhow!("no config {config_digest}"))?,
    )?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let chains = chain_ids(&diff_ids);
    let mut with_ztoc = std::collections::HashSet::new();
    if let Some(index) = doc["annotations"][SOCI_INDEX_DIGEST].as_str() {
        for layer in manifest(index)?["layers"].as_array().into_iter().flatten() {
            if let Some(d) = layer["annotations"][LAYER_DIGEST].as_str() {
                with_ztoc.insert(d.to_string());
            }
        }
    }
    let layers = doc["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(chains)
        .map(|(l, chain)| {
            let digest = l["digest"].as_str().unwrap_or_default().to_string();
            Layer {
                indexed: with_ztoc.contains(&digest),
                size: l["size"].as_u64().unwrap_or_default(),
                digest,
                chain,
            }
        })
        .collect();
    Ok(NodeImage {
        repo,
        manifest: manifest_digest,
        layers,
    })
}

/// What the node did with one layer.
#[derive(Debug, Clone)]
pub struct LayerSeen {
    pub layer: Layer,
    /// A remote (lazy) snapshot was prepared.
    pub remote: bool,
    pub local: bool,
    /// The snapshotter deferred to the container runtime (it pulls the layer whole).
    pub deferred: bool,
    pub prepared: bool,
    /// The remote snapshot's mount point is a FUSE mount.
    pub fuse: bool,
    pub mountpoint: Option<String>,
    /// Why a remote mount failed (other than "no zTOC for this layer").
    pub remote_errors: Vec<String>,
    pub full_gets: usize,
    pub range_gets: usize,
    pub bytes_fetched: u64,
}

impl LayerSeen {
    pub fn how(&self) -> &'static str {
        if self.remote {
            "remote"
        } else if self.local {
            "local"
        } else if self.deferred {
            "deferred"
        } else {
            "not prepared"
        }
    }
}

/// A file's length now: where a later slice of it starts.
pub struct LogMark {
    path: PathBuf,
    at: u64,
}

impl LogMark {
    pub fn new(path: &Path) -> Self {
        let at = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            at,
        }
    }

    /// What was written after the mark.
    pub fn since(&self) -> String {
        let bytes = fs::read(&self.path).unwrap_or_default();
        let start = (self.at as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// One GET the registry answered: its path, status and bytes written.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryGet {
    pub uri: String,
    pub status: u16,
    pub written: u64,
}

/// The value of `key=` in a logfmt line (quoted or not).
fn logfmt_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split_whitespace().next(),
    }
}

/// The GETs in a slice of the registry's log.
pub fn registry_gets(log: &str) -> Vec<RegistryGet> {
    log.lines()
        .filter(|l| l.contains("msg=\"response completed\""))
        .filter(|l| logfmt_field(l, "http.request.method") == Some("GET"))
        .filter_map(|l| {
            Some(RegistryGet {
                uri: logfmt_field(l, "http.request.uri")?.to_string(),
                status: logfmt_field(l, "http.response.status")?.parse().ok()?,
                written: logfmt_field(l, "http.response.written")?.parse().ok()?,
            })
        })
        .collect()
}

/// Per layer of `image`: what the snapshotter logged for its snapshot (by chain id), whether
/// its mount point is a FUSE mount in `mounts` (`/proc/self/mounts`), how its blob was fetched.
pub fn observe(
    image: &NodeImage,
    soci_log: &str,
    registry_log: &str,
    mounts: &str,
) -> Vec<LayerSeen> {
    let entries: Vec<Value> = soci_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let fuse: std::collections::HashSet<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "fuse.rawBridge").then(|| f[1])
        })
        .collect();
    let gets = registry_gets(registry_log);
    image
        .layers
        .iter()
        .map(|layer| {
            let suffix = format!(" {}", layer.chain);
            let mine: Vec<&Value> = entries
                .iter()
                .filter(|e| e["key"].as_str().is_some_and(|k| k.ends_with(&suffix)))
                .collect();
            let said = |text: &str| mine.iter().any(|e| e["msg"] == text);
            let mountpoint = mine
                .iter()
                .find_map(|e| e["mountpoint"].as_str().map(String::from));
            let mut remote_errors: Vec<String> = mine
                .iter()
                .filter(|e| e["msg"] == "failed to prepare remote snapshot")
                .filter_map(|e| e["error"].as_str())
                .filter(|e| !e.contains("no ztoc for layer"))
                .map(String::from)
                .collect();
            remote_errors.sort();
            remote_errors.dedup();
            let blob = format!("/v2/{}/blobs/{}", image.repo, layer.digest);
            let blob_gets: Vec<&RegistryGet> = gets.iter().filter(|g| g.uri == blob).collect();
            LayerSeen {
                remote: said("remote snapshot successfully prepared."),
                local: said("local snapshot successfully prepared"),
                deferred: mine.iter().any(|e| {
                    e["msg"]
                        .as_str()
                        .is_some_and(|m| m.contains("deferring to container runtime"))
                }),
                prepared: !mine.is_empty(),
                fuse: mountpoint.as_deref().is_some_and(|m| fuse.contains(m)),
                mountpoint,
                remote_errors,
                full_gets: blob_gets
                    .iter()
                    .filter(|g| g.status == 200 && g.written >= layer.size)
                    .count(),
                range_gets: blob_gets.iter().filter(|g| g.status == 206).count(),
                bytes_fetched: blob_gets.iter().map(|g| g.written).sum(),
                layer: layer.clone(),
            }
        })
        .collect()
}

/// A Pod on the node (host network, no API token) that sleeps; the image's own busybox runs it
/// after reading a little of itself.
pub fn sleeper_pod(ns: &str, name: &str, image: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app.kubernetes.io/part-of": "soci-lazy-e2e"}},
        "spec": {
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/busybox", "sh", "-c",
                    "/bin/busybox head -c 4096 /bin/busybox >/dev/null; exec /bin/busybox sleep 3600"],
            }],
        },
    }))?)
}

/// Creates the Pod and waits until it runs.
pub async fn run_pod(ctx: &Ctx, name: &str, image: &str, timeout: Duration) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &sleeper_pod(&ctx.ns, name, image)?)
        .await
        .with_context(|| format!("creating Pod {name}"))?;
    let running =
        |p: Option<&Pod>| p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running");
    if tokio::time::timeout(timeout, await_condition(pods.clone(), name, running))
        .await
        .is_err()
    {
        let described = ctx
            .kubectl(&["describe", "pod", name, "-n", &ctx.ns])
            .unwrap_or_default();
        let tail: Vec<&str> = described.lines().rev().take(15).collect();
        bail!(
            "Pod {name} from {image} did not reach Running in {timeout:?}:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// The sha256 of a file as read through the Pod.
pub fn sha256_in_pod(ctx: &Ctx, pod: &str, path: &str) -> Result<String> {
    let out = ctx.kubectl(&[
        "exec",
        "-n",
        &ctx.ns,
        pod,
        "--",
        "/bin/busybox",
        "sha256sum",
        path,
    ])?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn crictl(ctx: &Ctx) -> Command {
    let mut c = Command::new(ctx.g.tool("crictl"));
    c.arg("-r")
        .arg(format!("unix://{}", ctx.g.containerd_address));
    c
}

/// Deletes the Pod, its sandbox and the image on the node, and waits until the node holds
/// none of the image's layer snapshots, so that the next Pod pulls it again.
pub async fn forget(ctx: &Ctx, pod: &str, reference: &str, image: &NodeImage) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    // Not forced: the Pod must be gone from the kubelet too, or it recreates the sandbox and
    // pulls the image again behind our back.
    if let Ok(p) = pods.get(pod).await {
        let uid = p.uid().unwrap_or_default();
        let _ = pods
            .delete(pod, &DeleteParams::default().grace_period(1))
            .await;
        let _ = tokio::time::timeout(
            Duration::from_secs(90),
            await_condition(pods.clone(), pod, conditions::is_deleted(&uid)),
        )
        .await;
    }
    let sandboxes = run_cmd(
        crictl(ctx)
            .args(["pods", "--namespace", &ctx.ns, "--name"])
            .arg(format!("^{pod}$"))
            .arg("-q"),
    )
    .unwrap_or_default();
    for id in sandboxes.split_whitespace() {
        let _ = run_cmd(crictl(ctx).args(["stopp", id]));
        let _ = run_cmd(crictl(ctx).args(["rmp", "-f", id]));
    }
    remove_images(ctx, &[reference], image, Duration::from_secs(60)).await?;
    // A late pull would bring the image back: check that it stays gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        run_cmd(crictl(ctx).args(["inspecti", reference])).is_err(),
        "the image {reference} came back on the node"
    );
    Ok(())
}

/// Removes `references` from the node (`crictl rmi`) and waits, at most `timeout`, until none
/// of `image`'s layer snapshots is left.
pub async fn remove_images(
    ctx: &Ctx,
    references: &[&str],
    image: &NodeImage,
    timeout: Duration,
) -> Result<()> {
    for reference in references {
        let _ = run_cmd(crictl(ctx).args(["rmi", reference]));
    }
    let chains: Vec<&str> = image.layers.iter().map(|l| l.chain.as_str()).collect();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let listed = run_cmd(
            Command::new(ctx.g.tool("ctr"))
                .args(["--address", &ctx.g.containerd_address, "-n", "k8s.io"])
                .args(["snapshots", "--snapshotter", "soci", "ls"]),
        )
        .unwrap_or_default();
        let left = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|key| chains.contains(key))
            .count();
        if left == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("the node still holds snapshots of {references:?} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_log_lines_give_method_uri_status_and_bytes() {
        let log = concat!(
            "time=\"2026\" level=info msg=\"response completed\" go.version=go1 http.request.host=127.0.0.1 ",
            "http.request.method=GET http.request.uri=\"/v2/lazy/a/blobs/sha256:ab\" http.response.status=206 ",
            "http.response.written=4096\n",
            "time=\"2026\" level=info msg=\"response completed\" http.request.method=HEAD ",
            "http.request.uri=\"/v2/lazy/a/manifests/v1\" http.response.status=200 http.response.written=0\n",
            "time=\"2026\" level=info msg=\"authorized request\" http.request.method=GET\n",
        );
        assert_eq!(
            registry_gets(log),
            vec![RegistryGet {
                uri: "/v2/lazy/a/blobs/sha256:ab".into(),
                status: 206,
                written: 4096
            }]
        );
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        let want = format!("sha256:{:x}", Sha256::digest(b"sha256:a sha256:b"));
        assert_eq!(ids[1], want);
    }

    #[test]
    fn references_split_into_host_repository_and_reference() {
        let split = |r| split_reference(r).unwrap();
        assert_eq!(
            split("127.0.0.1:5000/lazy/a:v1"),
            ("127.0.0.1:5000".into(), "lazy/a".into(), "v1".into())
        );
        assert_eq!(
            split("127.0.0.1:5000/lazy/a:v1-soci@sha256:ff"),
            ("127.0.0.1:5000".into(), "lazy/a".into(), "sha256:ff".into())
        );
        assert_eq!(
            split("127.0.0.1:5000/lazy/a@sha256:ff"),
            ("127.0.0.1:5000".into(), "lazy/a".into(), "sha256:ff".into())
        );
    }
}
