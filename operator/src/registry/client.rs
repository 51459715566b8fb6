//! The HTTP side of the distribution API. oci-client does the authentication handshake (the
//! `/v2/` challenge, basic credentials or the bearer-token exchange); every registry request
//! goes through [`RegistryClient::send`] on our own reqwest client, because we need what
//! oci-client's calls hide: the exact status (and `Retry-After`) to classify failures, `Range`
//! reads, exact manifest bytes, mounts that fall back to uploads, and chunked uploads.

use super::auth::CredentialStore;
use super::error::{PermanentCause, RegistryError, RegistryResult};
use super::reference::{RegistryRef, is_loopback_host};
use anyhow::{Context, Result};
use base64::Engine;
use oci_client::RegistryOperation;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Registry requests sent, by HTTP method (token handshakes not included); the operator exports
/// it as `soci_operator_registry_requests_total`.
pub static REQUESTS: std::sync::LazyLock<prometheus::IntCounterVec> =
    std::sync::LazyLock::new(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "soci_operator_registry_requests_total",
                "Registry requests sent, by method (token handshakes not included)",
            ),
            &["method"],
        )
        .expect("valid metric")
    });

/// How hard to try before a transient failure becomes the command's failure (exit code 3).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: fail at once).
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// A server's `Retry-After` is honoured up to this much; beyond it we would rather fail
/// (transient) and let the controller come back later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// Capped exponential backoff with ±25% jitter (so parallel layer streams that failed
    /// together do not retry in lockstep); a `Retry-After` wins when it is longer.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failures.min(16))
            .min(self.max_delay);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = 0.75 + (nanos % 1000) as f64 / 2000.0;
        let backoff = exp.mul_f64(jitter);
        match retry_after {
            Some(r) => r.min(MAX_RETRY_AFTER).max(backoff),
            None => backoff,
        }
    }
}

pub struct RegistryOptions {
    pub credentials: CredentialStore,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// PEM bundle of extra trusted CAs.
    pub ca_bundle: Option<PathBuf>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Pull,
    Push,
}

type AuthKey = (String, String, Access);

pub struct RegistryClient {
    http: reqwest::Client,
    options: RegistryOptions,
    extra_roots: Vec<Certificate>,
    /// One oci-client per registry (its protocol is per client), used only for the handshake.
    handshakes: Mutex<HashMap<String, oci_client::Client>>,
    /// `Authorization` value per registry, repository and access (`None`: anonymous).
    authorizations: Mutex<HashMap<AuthKey, Option<HeaderValue>>>,
}

impl RegistryClient {
    pub fn new(options: RegistryOptions) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("soci-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // A stalled body counts as a dropped connection: the read resumes with Range.
            .read_timeout(Duration::from_secs(60));
        let mut extra_roots = Vec::new();
        if let Some(path) = &options.ca_bundle {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading CA bundle {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing CA bundle {}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
            extra_roots = split_pem_bundle(&pem)
                .into_iter()
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .collect();
        }
        Ok(Self {
            http: builder.build().context("building the HTTP client")?,
            options,
            extra_roots,
            handshakes: Mutex::new(HashMap::new()),
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// A client like this one (insecure registries, CA bundle, retries) with other credentials:
    /// a SociIndex's own Secrets.
    pub fn with_credentials(&self, credentials: CredentialStore) -> Result<Self> {
        Self::new(RegistryOptions {
            credentials,
            insecure_registries: self.options.insecure_registries.clone(),
            ca_bundle: self.options.ca_bundle.clone(),
            retry: self.options.retry,
        })
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.options.retry
    }

    fn plain_http(&self, registry: &str) -> bool {
        is_loopback_host(registry)
            || self
                .options
                .insecure_registries
                .iter()
                .any(|r| r == registry)
    }

    /// `scheme://api-host/v2/<repository>/<tail>`.
    pub fn url(&self, reference: &RegistryRef, tail: &str) -> String {
        let scheme = if self.plain_http(&reference.registry) {
            "http"
        } else {
            "https"
        };
        format!(
            "{scheme}://{}/v2/{}/{tail}",
            reference.api_host(),
            reference.repository
        )
    }

    fn handshake_client(&self, registry: &str) -> oci_client::Client {
        let mut clients = self.handshakes.lock().expect("lock");
        clients
            .entry(registry.to_string())
            .or_insert_with(|| {
                oci_client::Client::new(ClientConfig {
                    protocol: if self.plain_http(registry) {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    extra_root_certificates: self.extra_roots.clone(),
                    connect_timeout: Some(Duration::from_secs(15)),
                    read_timeout: Some(Duration::from_secs(60)),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// The `Authorization` header for this repository and access, from the cache or a fresh
    /// handshake.
    async fn authorization(
        &self,
        reference: &RegistryRef,
        access: Access,
    ) -> RegistryResult<Option<HeaderValue>> {
        let key = (
            reference.registry.clone(),
            reference.repository.clone(),
            access,
        );
        if let Some(v) = self.authorizations.lock().expect("lock").get(&key) {
            return Ok(v.clone());
        }
        let what = format!("authenticating to {}", reference.registry);
        let credentials = self
            .options
            .credentials
            .lookup(&reference.registry)
            .map_err(|e| {
                RegistryError::permanent(PermanentCause::Unauthorized, &what, format!("{e:#}"))
            })?;
        let operation = match access {
            Access::Pull => RegistryOperation::Pull,
            Access::Push => RegistryOperation::Push,
        };
        let client = self.handshake_client(&reference.registry);
        let header = match client
            .auth(&reference.to_oci(), &credentials, operation)
            .await
        {
            Ok(Some(token)) => Some(format!("Bearer {token}")),
            Ok(None) => match &credentials {
                RegistryAuth::Basic(user, password) => Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                )),
                RegistryAuth::Bearer(token) => Some(format!("Bearer {token}")),
                RegistryAuth::Anonymous => None,
            },
            Err(e) => return Err(classify_handshake_error(&what, e)),
        };
        let header = header
            .map(|h| {
                let mut v = HeaderValue::from_str(&h).map_err(|_| {
                    RegistryError::permanent(
                        PermanentCause::Invalid,
                        &what,
                        "credentials are not a valid header",
                    )
                })?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        self.authorizations
            .lock()
            .expect("lock")
            .insert(key, header.clone());
        Ok(header)
    }

    fn forget_authorization(&self, reference: &RegistryRef, access: Access) {
        self.authorizations.lock().expect("lock").remove(&(
            reference.registry.clone(),
            reference.repository.clone(),
            access,
        ));
    }

    /// One request, authenticated. A 401 on a cached token (expired) triggers one new
    /// handshake. Transport failures are classified; the status is left to the caller, except
    /// that retryable statuses (408, 429, 5xx) become transient errors here.
    pub async fn send(
        &self,
        what: &str,
        reference: &RegistryRef,
        access: Access,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> RegistryResult<reqwest::Response> {
        let mut refreshed = false;
        loop {
            let auth = self.authorization(reference, access).await?;
            let mut request = build(&self.http);
            if let Some(a) = &auth {
                request = request.header(AUTHORIZATION, a.clone());
            }
            let request = request
                .build()
                .map_err(|e| RegistryError::from_reqwest(what, &e))?;
            REQUESTS
                .with_label_values(&[request.method().as_str()])
                .inc();
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| RegistryError::from_reqwest(what, &e))?;
            let status = response.status().as_u16();
            if status == 401 && auth.is_some() && !refreshed {
                refreshed = true;
                self.forget_authorization(reference, access);
                continue;
            }
            if status == 401 && auth.is_none() {
                let body = response.bytes().await.unwrap_or_default();
                let mut e = RegistryError::from_status(what, status, &body, None);
                e.cause = format!(
                    "{} — no credentials for {} in {}",
                    e.cause,
                    reference.registry,
                    self.options.credentials.origin()
                );
                return Err(e);
            }
            if matches!(status, 408 | 429 | 500..=599) {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = response.bytes().await.unwrap_or_default();
                return Err(RegistryError::from_status(what, status, &body, retry_after));
            }
            return Ok(response);
        }
    }

    /// Runs `operation` until it succeeds, fails permanently, or has failed transiently
    /// `max_retries + 1` times.
    pub async fn retrying<T, F, Fut>(&self, operation: F) -> RegistryResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = RegistryResult<T>>,
    {
        let policy = self.options.retry;
        let mut failures = 0;
        loop {
            match operation().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && failures < policy.max_retries => {
                    let delay = policy.delay(failures, e.retry_after);
                    eprintln!("retrying in {:.1}s: {e}", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    failures += 1;
                }
                Err(mut e) => {
                    if e.is_transient() && failures > 0 {
                        e.cause = format!("{} (gave up after {} attempts)", e.cause, failures + 1);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Fails with the status's classification unless it is one of `expected`.
pub async fn expect_status(
    what: &str,
    response: reqwest::Response,
    expected: &[u16],
) -> RegistryResult<reqwest::Response> {
    let status = response.status().as_u16();
    if expected.contains(&status) {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(RegistryError::from_status(what, status, &body, None))
}

fn classify_handshake_error(what: &str, error: OciDistributionError) -> RegistryError {
    match error {
        OciDistributionError::RequestError(e) => RegistryError::from_reqwest(what, &e),
        OciDistributionError::ServerError { code, message, .. } => {
            RegistryError::from_status(what, code, message.as_bytes(), None)
        }
        OciDistributionError::AuthenticationFailure(reason) => RegistryError::permanent(
            PermanentCause::Unauthorized,
            what,
            format!("token request refused: {}", reason.trim()),
        ),
        OciDistributionError::UnauthorizedError { url } => RegistryError::permanent(
            PermanentCause::Unauthorized,
            what,
            format!("unauthorized at {url}"),
        ),
        other => RegistryError::permanent(PermanentCause::Invalid, what, other.to_string()),
    }
}

/// oci-client wants one certificate per entry.
fn split_pem_bundle(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(format!("{}\n", &rest[start..stop]).into_bytes());
        rest = &rest[stop..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let first = p.delay(0, None);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let late = p.delay(30, None);
        assert!(late <= Duration::from_millis(2500) && late >= Duration::from_millis(1500));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(3600))), MAX_RETRY_AFTER);
    }

    #[test]
    fn pem_bundles_split_per_certificate() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";
        let bundle = format!("{one}\n# comment\n{one}\n");
        assert_eq!(split_pem_bundle(bundle.as_bytes()).len(), 2);
        assert!(split_pem_bundle(b"nothing").is_empty());
    }
}
