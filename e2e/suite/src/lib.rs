//! The harness of the operator's e2e tests against the proving ground
//! (`e2e/proving-ground up --node`).
//!
//! Every test gets a [`Ctx`]: its own namespace (random suffix; deleted when the test ends, pass
//! or fail, after the SociIndex finalizers are stripped), its own `soci-operator run` child
//! processes ([`Operator`], killed on drop, their logs printed when the test fails), so tests
//! depend neither on each other nor on their order and can run in parallel.
//!
//! The proving ground is read from the environment (`eval "$(e2e/proving-ground env)"`) or, when
//! that is not set, from `e2e/proving-ground env`. When it is not up, or has no node, each test
//! prints `SKIP <name>: the proving ground is not up` and returns: that is the only skip.
//!
//! The worker image is `SOCI_E2E_WORKER_IMAGE` (the wrapper `e2e/rust-tests` packages it once);
//! without it, the first test to need it runs `e2e/package-image` (once per test process).

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::{Value, json};
use soci_operator::api::policy::{ClusterSociIndexPolicy, PolicyStatus, SociIndexPolicy};
use soci_operator::api::{ConditionStatus, ImageStatus, SociIndex};
use soci_testkit::TempDir;
use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use soci_operator::api;

pub mod node;
pub mod webhook;

/// The proving ground's pause image (`e2e/proving-ground`'s PAUSE_TAG), in its registry.
pub const PAUSE_IMAGE: &str = "pause:3.10-soci-pg";

/// The proving ground, as `e2e/proving-ground env` describes it.
#[derive(Debug, Clone)]
pub struct Ground {
    pub kubeconfig: PathBuf,
    /// The pinned Go tools (crane, kubectl, crictl), if the env names them.
    pub tools: Option<PathBuf>,
    pub dir: PathBuf,
    /// `127.0.0.1:PORT` of the proving ground's registry.
    pub registry: String,
    pub apiserver_port: String,
    pub node_name: String,
    pub containerd_address: String,
    pub node: bool,
    /// The node's snapshotter (`soci` when started with `--soci`).
    pub snapshotter: String,
    /// The soci-snapshotter's log (JSON lines).
    pub soci_log: PathBuf,
}

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The proving ground's env: the process environment when it was evaluated there, else the
/// output of `e2e/proving-ground env`; `None` when it is not up.
fn ground() -> Option<&'static Ground> {
    static GROUND: OnceLock<Option<Ground>> = OnceLock::new();
    GROUND
        .get_or_init(|| {
            let vars = if std::env::var_os("SOCI_PG_REGISTRY").is_some() {
                std::env::vars().collect::<HashMap<_, _>>()
            } else {
                let out = Command::new(repo_root().join("e2e/proving-ground"))
                    .arg("env")
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                if !out.status.success() {
                    return None;
                }
                let mut vars = parse_env(&String::from_utf8_lossy(&out.stdout));
                // `export PATH=TOOLS:$PATH`: keep TOOLS.
                if let Some(p) = vars.get_mut("PATH") {
                    *p = p.trim_end_matches(":$PATH").to_string();
                }
                vars
            };
            let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
            let tools = get("PATH")
                .split(':')
                .map(PathBuf::from)
                .find(|d| d.join("crane").is_file());
            Some(Ground {
                kubeconfig: PathBuf::from(get("KUBECONFIG")),
                tools,
                dir: PathBuf::from(get("SOCI_PG_DIR")),
                registry: get("SOCI_PG_REGISTRY"),
                apiserver_port: get("SOCI_PG_APISERVER_PORT"),
                node_name: get("SOCI_PG_NODE_NAME"),
                containerd_address: get("SOCI_PG_CONTAINERD_ADDRESS"),
                node: get("SOCI_PG_NODE") == "1",
                snapshotter: get("SOCI_PG_SNAPSHOTTER"),
                soci_log: PathBuf::from(get("SOCI_PG_SOCI_LOG")),
            })
        })
        .as_ref()
        .filter(|g| !g.registry.is_empty() && g.kubeconfig.is_file())
}

impl Ground {
    /// A tool of the proving ground (crane, kubectl, crictl), else the one on PATH.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.tools
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    }

    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }
}

/// The soci-operator binary (debug), built by the wrapper.
pub fn operator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SOCI_E2E_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug/soci-operator")
}

/// The worker image: `SOCI_E2E_WORKER_IMAGE`, else packaged once by `e2e/package-image`.
fn worker_image(g: &Ground) -> Result<String> {
    static IMAGE: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Ok(image) = std::env::var("SOCI_E2E_WORKER_IMAGE") {
                return Ok(image);
            }
            eprintln!("packaging the worker image (e2e/package-image, release build) ...");
            let out = Command::new(repo_root().join("e2e/package-image"))
                .arg(format!("{}/soci-operator:e2e", g.registry))
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "e2e/package-image failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // The pushed reference with its digest (what `crane mutate` prints).
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Prints LINE on stderr on a line of its own, in one write (libtest's progress and other
/// tests' lines share the terminal: `e2e/rust-tests` counts the `SKIP` lines).
pub fn say(line: String) {
    let _ = std::io::stderr().write_all(format!("\n{line}\n").as_bytes());
}

/// A random lower-case suffix for names.
pub fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

/// A 127.0.0.1 port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET http://127.0.0.1:PORT/PATH`: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write: a server that reads one segment and answers must see the whole request.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {head:?}"))?;
    // The metrics endpoint may answer chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of metric `name` (the whole name with labels, as the text format writes it).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

/// Runs a command; its stdout (trimmed) on success, an error with its stderr otherwise.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `soci-operator run` child process; killed (SIGKILL) on drop.
pub struct Operator {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.port, "/metrics")?;
        ensure!(status == 200, "/metrics answered {status}");
        Ok(body)
    }

    /// One metric's value (absent: `None`; the endpoint down: `None`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics().ok()?, name)
    }

    /// The HTTP status of `GET PATH` on the metrics address.
    pub fn status_of(&self, path: &str) -> Result<u16> {
        Ok(http_get(self.port, path)?.0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait (up to 30 s, then SIGKILL).
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's context: its namespaces, client, scratch directory and operator logs.
pub struct Ctx {
    pub name: String,
    /// The test's namespace (`soci-e2e-<suffix>`).
    pub ns: String,
    pub client: Client,
    pub g: &'static Ground,
    pub work: TempDir,
    pub worker_image: String,
    namespaces: Mutex<Vec<String>>,
    /// ClusterSociIndexPolicies of this test (cluster-scoped: deleted by name at the end).
    cluster_policies: Mutex<Vec<String>>,
    logs: Mutex<Vec<PathBuf>>,
    passed: AtomicBool,
}

impl Ctx {
    /// A test's context, or `None` (after printing `SKIP`) when the proving ground is not up.
    pub async fn start(name: &str) -> Result<Option<Ctx>> {
        let skip = |why: &str| {
            say(format!("SKIP {name}: the proving ground is not up{why}"));
            Ok(None)
        };
        let Some(g) = ground() else {
            return skip("");
        };
        let client = match g.client().await {
            Ok(c) => c,
            Err(_) => return skip(""),
        };
        let probe = Api::<Namespace>::all(client.clone());
        match tokio::time::timeout(
            Duration::from_secs(10),
            probe.list(&ListParams::default().limit(1)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            _ => return skip(""),
        }
        if !g.node {
            return skip(" (it has no node: e2e/proving-ground up --node)");
        }
        let worker_image = tokio::task::block_in_place(|| worker_image(g))?;
        let ns = format!("soci-e2e-{}", random_suffix());
        let ctx = Ctx {
            name: name.to_string(),
            ns: ns.clone(),
            client,
            g,
            work: TempDir::new("soci-e2e")?,
            worker_image,
            namespaces: Mutex::new(Vec::new()),
            cluster_policies: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            passed: AtomicBool::new(false),
        };
        ctx.install_crd().await?;
        ctx.create_namespace(&ns).await?;
        ctx.write_pod_config()?;
        Ok(Some(ctx))
    }

    /// The test passed: its operator logs are not printed.
    pub fn pass(&self) {
        self.passed.store(true, Ordering::SeqCst);
        say(format!("{}: passed", self.name));
    }

    /// Prints a line of the test's own report (prefixed by its name).
    pub fn note(&self, text: impl std::fmt::Display) {
        say(format!("{}: {text}", self.name));
    }

    async fn install_crd(&self) -> Result<()> {
        let crds = Api::<CustomResourceDefinition>::all(self.client.clone());
        for (_, crd) in soci_operator::api::crd::all() {
            crds.patch(
                &crd.name_any(),
                &PatchParams::apply("soci-operator-e2e").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("installing the CRD {}", crd.name_any()))?;
            let established = conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(crds.clone(), &crd.name_any(), established),
            )
            .await
            .with_context(|| {
                format!("the CRD {} is not Established after 30 s", crd.name_any())
            })??;
        }
        Ok(())
    }

    async fn create_namespace(&self, ns: &str) -> Result<()> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        self.namespaces.lock().unwrap().push(ns.to_string());
        // Pods are refused until the namespace's default ServiceAccount exists.
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), ns);
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(accounts, "default", |sa: Option<&ServiceAccount>| {
                sa.is_some()
            }),
        )
        .await
        .with_context(|| format!("no default ServiceAccount in {ns} after 30 s"))??;
        Ok(())
    }

    /// Another namespace of this test (`<ns>-<suffix>`), deleted with the test's.
    pub async fn namespace(&self, suffix: &str) -> Result<String> {
        let ns = format!("{}-{suffix}", self.ns);
        self.create_namespace(&ns).await?;
        Ok(ns)
    }

    fn pod_config(&self) -> PathBuf {
        self.work.path().join("worker-pod.yaml")
    }

    fn write_pod_config(&self) -> Result<()> {
        // The network rule: host network, and the API server on loopback.
        fs::write(
            self.pod_config(),
            format!(
                "hostNetwork: true\nenv:\n- {{name: KUBERNETES_SERVICE_HOST, value: \"127.0.0.1\"}}\n- {{name: KUBERNETES_SERVICE_PORT, value: \"{}\"}}\n",
                self.g.apiserver_port
            ),
        )?;
        Ok(())
    }

    /// `soci-operator run --namespace NS` (the test's namespace).
    pub fn operator(&self) -> Result<Operator> {
        let ns = self.ns.clone();
        self.operator_with(&[], &["--namespace", &ns])
    }

    /// `soci-operator run ARGS` with `ENV` set; the worker image, pod config and a free metrics
    /// port are added.
    pub fn operator_with(&self, env: &[(&str, &str)], args: &[&str]) -> Result<Operator> {
        let port = free_port()?;
        let n = self.logs.lock().unwrap().len();
        let log = self.work.path().join(format!("operator-{n}.log"));
        let file = fs::File::create(&log)?;
        let child = Command::new(operator_bin())
            .arg("run")
            .arg("--worker-image")
            .arg(&self.worker_image)
            .arg("--worker-pod-config")
            .arg(self.pod_config())
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("KUBECONFIG", &self.g.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", operator_bin().display()))?;
        self.logs.lock().unwrap().push(log.clone());
        Ok(Operator { child, port, log })
    }

    // --- SociIndex -----------------------------------------------------------------------

    pub fn indexes(&self, ns: &str) -> Api<SociIndex> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn jobs_api(&self, ns: &str) -> Api<Job> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Server-side apply of a SociIndex NAME with SPEC (JSON, as the YAML would be), in NS.
    pub async fn apply_in(&self, ns: &str, name: &str, spec: Value) -> Result<SociIndex> {
        let object = json!({
            "apiVersion": "soci.dev/v1alpha1",
            "kind": "SociIndex",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        });
        Ok(self
            .indexes(ns)
            .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&object))
            .await?)
    }

    /// Applies `{images: [{name: main, image: IMAGE}], ...EXTRA}` in the test's namespace.
    pub async fn apply(&self, name: &str, image: &str, extra: Value) -> Result<SociIndex> {
        let mut spec = json!({"images": [{"name": "main", "image": image}]});
        if let (Some(s), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            s.extend(extra);
        }
        self.apply_in(&self.ns, name, spec).await
    }

    pub async fn get(&self, ns: &str, name: &str) -> Result<SociIndex> {
        Ok(self.indexes(ns).get(name).await?)
    }

    /// The object's status as JSON (for failure messages).
    pub async fn status_text(&self, ns: &str, name: &str) -> String {
        match self.indexes(ns).get_opt(name).await {
            Ok(Some(o)) => serde_json::to_string_pretty(&o.status).unwrap_or_default(),
            Ok(None) => "(no such object)".into(),
            Err(e) => format!("(get failed: {e})"),
        }
    }

    /// Waits until `cond` holds for NS/NAME, at most `timeout`; the last status in the error.
    pub async fn wait_for(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&SociIndex) -> bool,
    ) -> Result<SociIndex> {
        let found = tokio::time::timeout(
            timeout,
            await_condition(self.indexes(ns), name, |o: Option<&SociIndex>| {
                o.is_some_and(&cond)
            }),
        )
        .await;
        match found {
            Ok(Ok(Some(o))) => Ok(o),
            Ok(Ok(None)) => bail!("{ns}/{name} is gone while waiting until {what}"),
            Ok(Err(e)) => bail!("watching {ns}/{name}: {e}"),
            Err(_) => bail!(
                "{ns}/{name}: not {what} after {timeout:?}; status: {}",
                self.status_text(ns, name).await
            ),
        }
    }

    /// Waits until condition TYPE is True (`Ready`, `Stalled`).
    pub async fn wait_true(
        &self,
        ns: &str,
        name: &str,
        type_: &str,
        timeout: Duration,
    ) -> Result<SociIndex> {
        self.wait_for(ns, name, timeout, type_, |o| is_true(o, type_))
            .await
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<SociIndex> {
        self.wait_true(&self.ns, name, "Ready", timeout).await
    }

    /// [`Ctx::apply`], then [`Ctx::wait_ready`] (at most `timeout`): the Ready object.
    pub async fn apply_ready(
        &self,
        name: &str,
        image: &str,
        extra: Value,
        timeout: Duration,
    ) -> Result<SociIndex> {
        self.apply(name, image, extra).await?;
        self.wait_ready(name, timeout).await
    }

    /// Deletes NS/NAME and waits (at most `timeout`) until it is gone (finalizers done).
    pub async fn delete_and_wait(&self, ns: &str, name: &str, timeout: Duration) -> Result<()> {
        let uid = self.get(ns, name).await?.uid().unwrap_or_default();
        self.indexes(ns)
            .delete(name, &DeleteParams::default())
            .await?;
        tokio::time::timeout(
            timeout,
            await_condition(self.indexes(ns), name, conditions::is_deleted(&uid)),
        )
        .await
        .map_err(|_| anyhow!("{ns}/{name} still there after {timeout:?}"))??;
        Ok(())
    }

    /// Sets the reconcile-request annotation to a new timestamp; returns it.
    pub async fn request_reconcile(&self, ns: &str, name: &str) -> Result<String> {
        let stamp = k8s_openapi::jiff::Timestamp::now().to_string();
        self.indexes(ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    api::RECONCILE_REQUEST_ANNOTATION: stamp.clone()}}})),
            )
            .await?;
        Ok(stamp)
    }

    /// The worker Jobs owned by NS/NAME (label `soci.dev/owner-uid`), by name.
    pub async fn jobs_of(&self, ns: &str, name: &str) -> Result<Vec<String>> {
        let uid = self.get(ns, name).await?.uid().unwrap_or_default();
        let jobs = self
            .jobs_api(ns)
            .list(&ListParams::default().labels(&format!("soci.dev/owner-uid={uid}")))
            .await?;
        Ok(jobs.items.iter().map(|j| j.name_any()).collect())
    }

    /// Every Job in NS.
    pub async fn jobs(&self, ns: &str) -> Result<Vec<Job>> {
        Ok(self.jobs_api(ns).list(&ListParams::default()).await?.items)
    }

    /// The Pods of a Job.
    pub async fn pods_of_job(&self, ns: &str, job: &str) -> Result<Vec<Pod>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        Ok(pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
            .await?
            .items)
    }

    // --- policies (SociIndexPolicy, ClusterSociIndexPolicy) ----------------------------------

    /// `soci-operator run ARGS` over every namespace: the policy controllers run only so. Such
    /// an operator sees every namespace's SociIndexes, so its tests run alone (`e2e/rust-tests`
    /// runs tests/policies.rs on one thread, after the parallel suites); first it waits (up to
    /// 2 min) until the namespaces of earlier tests are gone, so that it finds nothing of
    /// theirs to reconcile, and says so if some remain.
    pub async fn cluster_operator(&self, args: &[&str]) -> Result<Operator> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let ours = self.namespaces.lock().unwrap().clone();
        let others = poll(
            Duration::from_secs(120),
            Duration::from_secs(2),
            async || {
                let list = namespaces
                    .list_metadata(&ListParams::default())
                    .await
                    .ok()?;
                let others: Vec<String> = list
                    .items
                    .iter()
                    .map(|n| n.name_any())
                    .filter(|n| n.starts_with("soci-e2e-") && !ours.contains(n))
                    .collect();
                others.is_empty().then_some(())
            },
        )
        .await;
        if others.is_none() {
            self.note("other tests' namespaces are still there after 2 min; going on");
        }
        self.operator_with(&[], args)
    }

    pub fn policies(&self, ns: &str) -> Api<SociIndexPolicy> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn cluster_policies(&self) -> Api<ClusterSociIndexPolicy> {
        Api::all(self.client.clone())
    }

    /// Server-side apply of SociIndexPolicy NS/NAME with SPEC (JSON, as the YAML would be).
    pub async fn apply_policy(&self, ns: &str, name: &str, spec: Value) -> Result<SociIndexPolicy> {
        let object = json!({
            "apiVersion": "soci.dev/v1alpha1",
            "kind": "SociIndexPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        });
        Ok(self
            .policies(ns)
            .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&object))
            .await?)
    }

    /// Server-side apply of ClusterSociIndexPolicy NAME (deleted when the test ends).
    pub async fn apply_cluster_policy(
        &self,
        name: &str,
        spec: Value,
    ) -> Result<ClusterSociIndexPolicy> {
        {
            let mut names = self.cluster_policies.lock().unwrap();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        let object = json!({
            "apiVersion": "soci.dev/v1alpha1",
            "kind": "ClusterSociIndexPolicy",
            "metadata": {"name": name},
            "spec": spec,
        });
        Ok(self
            .cluster_policies()
            .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&object))
            .await?)
    }

    /// The children of the policy with UID in NS (label `soci.dev/policy-uid`), by name.
    pub async fn children_of(&self, ns: &str, uid: &str) -> Result<Vec<SociIndex>> {
        let mut children = self
            .indexes(ns)
            .list(&ListParams::default().labels(&format!("soci.dev/policy-uid={uid}")))
            .await?
            .items;
        children.sort_by_key(|c| c.name_any());
        Ok(children)
    }

    /// Waits until `cond` holds for object NAME of API (any kind), at most `timeout`; the last
    /// status in the error.
    pub async fn wait_object<K>(
        &self,
        api: &Api<K>,
        name: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&K) -> bool,
    ) -> Result<K>
    where
        K: kube::Resource
            + Clone
            + std::fmt::Debug
            + Send
            + k8s_openapi::serde::de::DeserializeOwned
            + k8s_openapi::serde::Serialize
            + 'static,
    {
        let found = tokio::time::timeout(
            timeout,
            await_condition(api.clone(), name, |o: Option<&K>| o.is_some_and(&cond)),
        )
        .await;
        match found {
            Ok(Ok(Some(o))) => Ok(o),
            Ok(Ok(None)) => bail!("{name} is gone while waiting until {what}"),
            Ok(Err(e)) => bail!("watching {name}: {e}"),
            Err(_) => {
                let status = match api.get_opt(name).await {
                    Ok(Some(o)) => serde_json::to_value(&o)
                        .map(|v| serde_json::to_string_pretty(&v["status"]).unwrap_or_default())
                        .unwrap_or_default(),
                    Ok(None) => "(no such object)".into(),
                    Err(e) => format!("(get failed: {e})"),
                };
                bail!("{name}: not {what} after {timeout:?}; status: {status}")
            }
        }
    }

    /// Polls (every 2 s, at most `timeout`) policy NAME of API and its children in CHILD_NS
    /// until `cond` holds for both; on timeout, the policy's status and the children (reference,
    /// Ready) in the error. Children are waited on with the policy because its status alone
    /// can be Ready between two changes (a Pod that reports its digest later changes a child).
    pub async fn wait_policy<K>(
        &self,
        api: &Api<K>,
        name: &str,
        child_ns: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&K, &[SociIndex]) -> bool,
    ) -> Result<(K, Vec<SociIndex>)>
    where
        K: kube::Resource
            + Clone
            + k8s_openapi::serde::de::DeserializeOwned
            + k8s_openapi::serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let mut last = None;
        let found = poll(timeout, Duration::from_secs(2), async || {
            let policy = api.get_opt(name).await.ok()??;
            let uid = policy.meta().uid.clone()?;
            let children = self.children_of(child_ns, &uid).await.ok()?;
            if cond(&policy, &children) {
                return Some((policy, children));
            }
            last = Some((policy, children));
            None
        })
        .await;
        if let Some(found) = found {
            return Ok(found);
        }
        let (status, children) = match last {
            Some((p, c)) => (
                serde_json::to_value(&p)
                    .map(|v| serde_json::to_string_pretty(&v["status"]).unwrap_or_default())
                    .unwrap_or_default(),
                c.iter()
                    .map(|c| {
                        format!(
                            "{} ready={} image={}",
                            child_reference(c),
                            is_ready(c),
                            c.spec
                                .images
                                .first()
                                .map(|i| i.image.as_str())
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            None => ("(no such policy)".into(), String::new()),
        };
        bail!(
            "policy {name}: not {what} after {timeout:?}; status: {status}; children: [{children}]"
        )
    }

    // --- registry and tools ----------------------------------------------------------------

    /// `crane --insecure ARGS`.
    pub fn crane(&self, args: &[&str]) -> Result<String> {
        self.crane_env(&[], args)
    }

    pub fn crane_env(&self, env: &[(&str, &Path)], args: &[&str]) -> Result<String> {
        run_cmd(
            Command::new(self.g.tool("crane"))
                .arg("--insecure")
                .args(args)
                .envs(env.iter().copied()),
        )
    }

    /// The digest REF resolves to, `None` if it does not.
    pub fn digest(&self, reference: &str) -> Option<String> {
        self.crane(&["digest", reference]).ok()
    }

    /// Pushes an image of its own (a fresh 12 MiB noise layer, above the default 10 MiB minimum,
    /// so it gets a zTOC; linux/amd64) to REPO:TAG.
    pub fn push_image(&self, reference: &str) -> Result<()> {
        self.push_noise_image(reference, None, 12 << 20)
    }

    /// Like [`Ctx::push_image`], on top of the proving ground's pause image: a container of it
    /// runs (`/pause`, until stopped), so the node reports its `imageID`.
    pub fn push_runnable_image(&self, reference: &str) -> Result<()> {
        let base = format!("{}/{PAUSE_IMAGE}", self.g.registry);
        self.push_noise_image(reference, Some(&base), 12 << 20)
    }

    /// Pushes REFERENCE: BASE (else an empty base) plus one layer of NOISE random bytes and a
    /// small text file, linux/amd64.
    pub fn push_noise_image(
        &self,
        reference: &str,
        base: Option<&str>,
        noise: usize,
    ) -> Result<()> {
        let dir = TempDir::new("soci-e2e-img")?;
        let data = dir.path().join("root/data");
        fs::create_dir_all(&data)?;
        let mut bytes = vec![0u8; noise];
        fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        fs::write(data.join("noise"), bytes)?;
        let numbers: String = (1..=100000).map(|i| format!("{i}\n")).collect();
        fs::write(data.join("numbers"), numbers)?;
        let layer = dir.path().join("layer.tar");
        run_cmd(
            Command::new("tar")
                .args([
                    "--sort=name",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "-C",
                ])
                .arg(dir.path().join("root"))
                .arg("-cf")
                .arg(&layer)
                .arg("data"),
        )?;
        let layer = layer.to_string_lossy().to_string();
        let mut append = vec!["append", "-f", &layer, "-t", reference];
        match base {
            Some(base) => append.extend(["-b", base]),
            None => append.push("--oci-empty-base"),
        }
        self.crane(&append)?;
        self.crane(&[
            "mutate",
            "--set-platform",
            "linux/amd64",
            reference,
            "-t",
            reference,
        ])?;
        Ok(())
    }

    /// A repository of this test in the proving ground's registry: `REGISTRY/e2e/<what>-<suffix>`.
    pub fn repo(&self, what: &str) -> String {
        format!(
            "{}/e2e/{what}-{}",
            self.g.registry,
            self.ns.trim_start_matches("soci-e2e-")
        )
    }

    /// `soci-operator ARGS` (inspect, verify, ...).
    pub fn soci(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new(operator_bin()).args(args))
    }

    /// `kubectl ARGS` with the proving ground's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run_cmd(
            Command::new(self.g.tool("kubectl"))
                .args(args)
                .env("KUBECONFIG", &self.g.kubeconfig),
        )
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if !self.passed.load(Ordering::SeqCst) {
            // A test that timed out on a broken node says so (its Pods never ran).
            let node = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../proving-ground"))
                .arg("node-usable")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|e| format!("{e:#}"));
            say(format!("--- {}: FAILED; node: {node}", self.name));
            for log in self.logs.lock().unwrap().iter() {
                say(format!(
                    "--- {}: FAILED; operator log {} (last 60 lines):\n{}",
                    self.name,
                    log.display(),
                    tail(log, 60)
                ));
            }
        }
        // The operators are gone (dropped before the context): a cleanup finalizer left behind
        // would hold the namespace, so strip them, then delete the namespaces (not waiting).
        let namespaces = std::mem::take(&mut *self.namespaces.lock().unwrap());
        let cluster_policies = std::mem::take(&mut *self.cluster_policies.lock().unwrap());
        let g = self.g;
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(client) = g.client().await else { return };
                // Their children (in the test's namespaces) go with the namespaces anyway.
                let cluster = Api::<ClusterSociIndexPolicy>::all(client.clone());
                for name in cluster_policies {
                    let _ = cluster.delete(&name, &DeleteParams::background()).await;
                }
                for ns in namespaces {
                    let api = Api::<SociIndex>::namespaced(client.clone(), &ns);
                    if let Ok(list) = api.list(&ListParams::default()).await {
                        for o in list.items {
                            let _ = api
                                .patch(
                                    &o.name_any(),
                                    &PatchParams::default(),
                                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                                )
                                .await;
                        }
                    }
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(&ns, &DeleteParams::background())
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

// --- status helpers ------------------------------------------------------------------------

/// The object's condition TYPE.
pub fn condition<'a>(o: &'a SociIndex, type_: &str) -> Option<&'a api::Condition> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn is_true(o: &SociIndex, type_: &str) -> bool {
    condition(o, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

pub fn is_ready(o: &SociIndex) -> bool {
    is_true(o, "Ready")
}

/// The status of the first image.
pub fn first_image(o: &SociIndex) -> Option<&ImageStatus> {
    o.status.as_ref()?.images.first()
}

/// The first image's `LazyLoadReady` condition.
pub fn lazy_load(o: &SociIndex) -> Option<&api::Condition> {
    first_image(o)?
        .conditions
        .iter()
        .find(|c| c.type_ == "LazyLoadReady")
}

/// The first image's `LazyLoadReady` reason, or "".
pub fn image_reason(o: &SociIndex) -> String {
    lazy_load(o).map(|c| c.reason.clone()).unwrap_or_default()
}

/// The first image's deploy reference, or "".
pub fn deploy(o: &SociIndex) -> String {
    first_image(o)
        .and_then(|i| i.deploy.clone())
        .unwrap_or_default()
}

/// A Job that is neither Complete nor Failed.
pub fn job_active(j: &Job) -> bool {
    !j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
        })
}

/// Waits until JOB in NS is Complete.
pub async fn wait_job_complete(
    client: &Client,
    ns: &str,
    job: &str,
    timeout: Duration,
) -> Result<()> {
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    tokio::time::timeout(
        timeout,
        await_condition(jobs, job, conditions::is_job_completed()),
    )
    .await
    .map_err(|_| anyhow!("Job {job} not Complete after {timeout:?}"))??;
    Ok(())
}

/// Polls `check` every `every` until it returns `Some`, at most `timeout`. For what has no
/// watch (registry state, metrics, processes); Kubernetes objects use [`Ctx::wait_for`].
pub async fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

// --- policy status helpers -------------------------------------------------------------------

/// A policy status's condition TYPE.
pub fn policy_condition<'a>(
    s: Option<&'a PolicyStatus>,
    type_: &str,
) -> Option<&'a api::Condition> {
    s?.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition TYPE of a policy status is True.
pub fn policy_true(s: Option<&PolicyStatus>, type_: &str) -> bool {
    policy_condition(s, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// The reference a policy's child stands for (annotation `soci.dev/policy-image`), or "".
pub fn child_reference(child: &SociIndex) -> String {
    child
        .annotations()
        .get("soci.dev/policy-image")
        .cloned()
        .unwrap_or_default()
}
