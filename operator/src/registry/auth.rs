//! Credentials: docker's `config.json` (`auths`, `credHelpers`, `credsStore`), found at
//! `--registry-config`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//! The challenge/token handshake is in `token.rs`.

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One registry's credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    Basic(String, String),
    /// A registry token (`registrytoken`), sent as is.
    Bearer(String),
}

/// Never prints a secret.
impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic(user, _) => write!(f, "Basic({user:?}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl RegistryAuth {
    /// The `Authorization` value these credentials give without a token exchange.
    pub fn header_text(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            Self::Basic(user, password) => Some(basic_header(user, password)),
            Self::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }
}

pub fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
}

/// Names the fields that are set, never their values.
impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "-" };
        f.debug_struct("AuthEntry")
            .field("auth", &set(&self.auth))
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

/// The credentials of every registry named in one docker config file.
#[derive(Debug, Default)]
pub struct CredentialStore {
    /// Keyed by normalised registry host (`docker.io`, `127.0.0.1:5000`).
    auths: HashMap<String, AuthEntry>,
    helpers: HashMap<String, String>,
    default_helper: Option<String>,
    origin: Option<PathBuf>,
}

impl CredentialStore {
    /// Whether this config names credential helpers (`credHelpers`, `credsStore`): programs the
    /// operator would run with its own identity. A tenant's Secret may not.
    pub fn has_helpers(&self) -> bool {
        !self.helpers.is_empty() || self.default_helper.is_some()
    }

    /// `explicit` is `--registry-config` (a `config.json` or a directory holding one); it must
    /// exist. Without it, the docker defaults are read if present.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        let path = match explicit {
            Some(p) if p.is_dir() => p.join("config.json"),
            Some(p) => p.to_path_buf(),
            None => {
                let dir = std::env::var_os("DOCKER_CONFIG")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
                match dir {
                    Some(d) if d.join("config.json").is_file() => d.join("config.json"),
                    _ => return Ok(Self::default()),
                }
            }
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading registry config {}", path.display()))?;
        Self::from_json(&bytes, path)
    }

    /// Several configs (`--registry-config` given more than once, one per Secret): for each
    /// registry the first config that names it wins. None given: the docker defaults.
    pub fn load_all(paths: &[PathBuf]) -> Result<Self> {
        let mut stores = paths.iter().map(|p| Self::load(Some(p)));
        let Some(first) = stores.next() else {
            return Self::load(None);
        };
        stores.try_fold(first?, |merged, next| Ok(merged.merge(next?)))
    }

    /// A docker config held in memory (a Secret's `.dockerconfigjson`); `origin` names it in
    /// messages.
    pub fn from_json(bytes: &[u8], origin: impl Into<PathBuf>) -> Result<Self> {
        let origin = origin.into();
        let config: DockerConfig = serde_json::from_slice(bytes)
            .with_context(|| format!("parsing registry config {}", origin.display()))?;
        Ok(Self {
            auths: config
                .auths
                .into_iter()
                .map(|(k, v)| (normalize_config_key(&k), v))
                .collect(),
            helpers: config
                .cred_helpers
                .into_iter()
                .map(|(k, v)| (normalize_config_key(&k), v))
                .collect(),
            default_helper: config.creds_store.filter(|s| !s.is_empty()),
            origin: Some(origin),
        })
    }

    /// `self` with what `other` adds: registries `self` already names keep `self`'s entry.
    pub fn merge(mut self, other: Self) -> Self {
        for (k, v) in other.auths {
            if !self.auths.contains_key(&k) && !self.helpers.contains_key(&k) {
                self.auths.insert(k, v);
            }
        }
        for (k, v) in other.helpers {
            if !self.auths.contains_key(&k) {
                self.helpers.entry(k).or_insert(v);
            }
        }
        self.default_helper = self.default_helper.or(other.default_helper);
        self.origin = match (self.origin, other.origin) {
            (Some(a), Some(b)) => Some(PathBuf::from(format!("{} + {}", a.display(), b.display()))),
            (a, b) => a.or(b),
        };
        self
    }

    /// Where the credentials came from, for error messages.
    pub fn origin(&self) -> String {
        match &self.origin {
            Some(p) => p.display().to_string(),
            None => "no registry config (use --registry-config or DOCKER_CONFIG)".into(),
        }
    }

    /// The credentials for `registry` (normalised name, e.g. `docker.io`); anonymous when none.
    pub fn lookup(&self, registry: &str) -> Result<RegistryAuth> {
        let key = normalize_config_key(registry);
        if let Some(entry) = self.auths.get(&key)
            && let Some(auth) = entry_auth(entry, registry)?
        {
            return Ok(auth);
        }
        let helper = self.helpers.get(&key).or(self.default_helper.as_ref());
        match helper {
            Some(h) => run_credential_helper(h, registry),
            None => Ok(RegistryAuth::Anonymous),
        }
    }
}

fn entry_auth(entry: &AuthEntry, registry: &str) -> Result<Option<RegistryAuth>> {
    if let Some(token) = &entry.registry_token {
        return Ok(Some(RegistryAuth::Bearer(token.clone())));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(RegistryAuth::Basic(u.clone(), p.clone())));
    }
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .with_context(|| format!("registry config entry for {registry}: auth is not base64"))?;
        let text = String::from_utf8(decoded)
            .with_context(|| format!("registry config entry for {registry}: auth is not UTF-8"))?;
        let Some((u, p)) = text.split_once(':') else {
            bail!("registry config entry for {registry}: auth is not user:password");
        };
        return Ok(Some(RegistryAuth::Basic(u.into(), p.into())));
    }
    if entry.identity_token.is_some() {
        // An OAuth2 refresh token: our handshake does not exchange it (a POST to the realm).
        bail!(
            "registry config entry for {registry} holds an identity token, which is not supported; use username/password"
        );
    }
    Ok(None)
}

/// `docker-credential-<helper> get`, the docker credential-helper protocol: the server URL on
/// stdin, `{"Username":…,"Secret":…}` on stdout.
fn run_credential_helper(helper: &str, registry: &str) -> Result<RegistryAuth> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    if !helper
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || helper.starts_with('.')
    {
        bail!("credential helper name {helper:?} is not a plain program name");
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running credential helper {program} for {registry}"))?;
    child
        .stdin
        .take()
        .context("credential helper stdin")?
        .write_all(server.as_bytes())?;
    let out = wait_bounded(child, CREDENTIAL_HELPER_TIMEOUT)
        .with_context(|| format!("credential helper {program} for {registry}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("credentials not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        bail!(
            "credential helper {program} failed for {registry}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    #[derive(Deserialize)]
    struct HelperReply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("credential helper {program}: unexpected output"))?;
    if reply.username == "<token>" {
        bail!("credential helper {program} returned an identity token, which is not supported");
    }
    Ok(RegistryAuth::Basic(reply.username, reply.secret))
}

/// How long a credential helper may take; one that hangs would hold a reconcile for ever.
pub const CREDENTIAL_HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// What is read of a helper's output (a reply is a few hundred bytes).
const CREDENTIAL_HELPER_OUTPUT: u64 = 64 << 10;

/// The child's exit and its output (each stream cut at 64 KiB), or an error once `timeout` has
/// passed, the child killed.
fn wait_bounded(mut child: std::process::Child, timeout: Duration) -> Result<std::process::Output> {
    fn drain(stream: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stream {
                let _ = s.take(CREDENTIAL_HELPER_OUTPUT).read_to_end(&mut buf);
            }
            buf
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not answer within {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Config keys may be URLs (`https://index.docker.io/v1/`) or hosts; compare hosts.
fn normalize_config_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(json: &str) -> CredentialStore {
        let dir = std::env::temp_dir().join(format!(
            "soci-auth-test-{}-{}",
            std::process::id(),
            json.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), json).unwrap();
        let s = CredentialStore::load(Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        s
    }

    #[test]
    fn merged_configs_first_wins_per_registry() {
        let a = CredentialStore::from_json(
            br#"{"auths":{"one.example":{"username":"a","password":"1"}}}"#,
            "secret a",
        )
        .unwrap();
        let b = CredentialStore::from_json(
            br#"{"auths":{"one.example":{"username":"b","password":"2"},
                "two.example":{"username":"b","password":"3"}}}"#,
            "secret b",
        )
        .unwrap();
        let m = a.merge(b);
        assert_eq!(
            m.lookup("one.example").unwrap(),
            RegistryAuth::Basic("a".into(), "1".into())
        );
        assert_eq!(
            m.lookup("two.example").unwrap(),
            RegistryAuth::Basic("b".into(), "3".into())
        );
        assert_eq!(m.lookup("three.example").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(m.origin(), "secret a + secret b");
        assert!(CredentialStore::from_json(b"{not json", "x").is_err());
    }

    #[test]
    fn reads_docker_config_entries() {
        let s = store(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "127.0.0.1:5000":{"username":"u","password":"p"},
                "tok.example":{"registrytoken":"T"}}}"#,
        );
        assert_eq!(
            s.lookup("docker.io").unwrap(),
            RegistryAuth::Basic("user".into(), "pa:ss".into())
        );
        assert_eq!(
            s.lookup("127.0.0.1:5000").unwrap(),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            s.lookup("tok.example").unwrap(),
            RegistryAuth::Bearer("T".into())
        );
        assert_eq!(s.lookup("other.example").unwrap(), RegistryAuth::Anonymous);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!(
            "{:?} {:?}",
            RegistryAuth::Basic("user".into(), "hunter2".into()),
            RegistryAuth::Bearer("tok-secret".into())
        );
        assert!(shown.contains("user"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-secret"),
            "{shown}"
        );
    }

    #[test]
    fn a_helper_that_hangs_is_cut_off_and_a_helper_name_with_a_path_is_refused() {
        // A child that never answers on its own: `sleep` stands in for a hung helper.
        let child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let error = wait_bounded(child, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(error.to_string().contains("did not answer"), "{error}");
        for name in ["../../bin/sh", "a/b", ".hidden", "x y"] {
            let e = run_credential_helper(name, "registry.example").unwrap_err();
            assert!(e.to_string().contains("not a plain program name"), "{e}");
        }
    }

    #[test]
    fn missing_helper_is_an_error() {
        let s = store(r#"{"credsStore":"definitely-not-installed-helper"}"#);
        assert!(s.lookup("quay.io").is_err());
    }

    #[test]
    fn explicit_missing_config_is_an_error() {
        assert!(CredentialStore::load(Some(Path::new("/nonexistent/soci/config.json"))).is_err());
    }
}
