//! The HTTP side of the distribution API. Every registry request goes through
//! [`RegistryClient::send`] on our own reqwest client: the exact status (and `Retry-After`) to
//! classify failures, `Range` reads, exact manifest bytes, mounts that fall back to uploads,
//! chunked uploads. The authentication handshake is ours too (`token.rs`).
//!
//! Where requests may go is enforced here, in one place: every URL is checked against the
//! [`AddressPolicy`] before it is sent, every resolved address by the client's resolver, every
//! redirect target by its redirect policy; the `Authorization` header is attached only to
//! requests for the registry's own `host:port`, over HTTPS unless the registry may be spoken
//! to in plain HTTP. So a `Link` page or an upload `Location` naming another host, followed
//! anywhere in this crate, never carries the credentials.

use super::address_policy::{AddressPolicy, FilteringResolver, Refused, refusal_in};
use super::auth::{CredentialStore, RegistryAuth};
use super::error::{PermanentCause, RegistryError, RegistryResult};
use super::limits::read_error_body;
use super::reference::{RegistryRef, is_loopback_host};
use super::token;
use anyhow::{Context, Result};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How hard to try before a transient failure becomes the command's failure (exit code 3), and
/// how long a registry may hold us: per request, per operation, in `Retry-After` waits.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: fail at once).
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// One request from connecting to the end of its body (a registry sending a byte just
    /// before every read timeout is cut here). Blob streams get a deadline from their size
    /// instead ([`RetryPolicy::stream_deadline`]).
    pub request_timeout: Duration,
    /// One operation (a manifest GET, a HEAD, a page of tags): every attempt and every wait
    /// between attempts together.
    pub operation_budget: Duration,
    /// One `Retry-After` is honoured up to this much...
    pub max_retry_after: Duration,
    /// ...and the `Retry-After` waits of one operation together up to this much; beyond it we
    /// fail (transient) and let the controller come back later.
    pub max_retry_after_total: Duration,
    /// Slowest average rate (bytes per second) a blob stream may have: its deadline is
    /// `request_timeout + size / min_stream_rate`, resumes included.
    pub min_stream_rate: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            operation_budget: Duration::from_secs(180),
            max_retry_after: Duration::from_secs(30),
            max_retry_after_total: Duration::from_secs(60),
            min_stream_rate: 256 << 10,
        }
    }
}

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
            Some(r) => r.min(self.max_retry_after).max(backoff),
            None => backoff,
        }
    }

    /// How long a stream of `size` bytes may take, all its resumes included.
    pub fn stream_deadline(&self, size: u64) -> Duration {
        let rate = self.min_stream_rate.max(1);
        let secs = size / rate;
        self.request_timeout
            .saturating_add(Duration::from_secs(secs))
            .saturating_add(Duration::from_millis((size % rate) * 1000 / rate))
    }
}

/// One operation's retries: how many failed, what was waited, and when it must end.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryPolicy,
    budget: Duration,
    deadline: tokio::time::Instant,
    failures: u32,
    waited_for_server: Duration,
}

impl RetryBudget {
    pub fn new(policy: RetryPolicy, budget: Duration) -> Self {
        Self {
            policy,
            budget,
            deadline: tokio::time::Instant::now() + budget,
            failures: 0,
            waited_for_server: Duration::ZERO,
        }
    }

    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    pub fn attempts(&self) -> u32 {
        self.failures + 1
    }

    /// Progress was made (a blob stream received bytes): the failure count starts again; the
    /// deadline and the `Retry-After` total do not.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// After `error`, how long to wait before the next attempt; `None` to give up with `error`
    /// (permanent, retries spent, `Retry-After` total or deadline reached), which then says why.
    pub fn next_delay(&mut self, error: &mut RegistryError) -> Option<Duration> {
        if !error.is_transient() {
            return None;
        }
        let attempts = self.failures + 1;
        let delay = self.policy.delay(self.failures, error.retry_after);
        let honoured = error
            .retry_after
            .map(|asked| asked.min(self.policy.max_retry_after));
        let why = if self.failures >= self.policy.max_retries {
            if attempts == 1 {
                return None;
            }
            format!("gave up after {attempts} attempts")
        } else if let Some(wait) = honoured
            && self.waited_for_server + wait > self.policy.max_retry_after_total
        {
            format!(
                "gave up after {attempts} attempts: the registry asked for another {}s of Retry-After after {}s; at most {}s are honoured per operation",
                error.retry_after.unwrap_or_default().as_secs(),
                self.waited_for_server.as_secs(),
                self.policy.max_retry_after_total.as_secs()
            )
        } else if tokio::time::Instant::now() + delay >= self.deadline {
            format!(
                "gave up after {attempts} attempts: the next would start past the {:.1}s budget",
                self.budget.as_secs_f64()
            )
        } else {
            self.waited_for_server += honoured.unwrap_or_default();
            self.failures += 1;
            return Some(delay);
        };
        error.cause = format!("{} ({why})", error.cause);
        error.retry_after = None;
        None
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

/// An `Authorization` value (`None`: anonymous) and, for a token, when to fetch a new one.
#[derive(Clone)]
struct CachedAuthorization {
    header: Option<HeaderValue>,
    until: Option<Instant>,
}

/// Redirects followed per request (reqwest's default; a custom policy replaces it).
const MAX_REDIRECTS: usize = 10;
/// The whole `/v2/` probe or token request, body included.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RegistryClient {
    http: reqwest::Client,
    options: RegistryOptions,
    policy: Arc<AddressPolicy>,
    resolver: FilteringResolver,
    handshake_timeout: Duration,
    /// Per registry, repository and access.
    authorizations: Mutex<HashMap<AuthKey, CachedAuthorization>>,
}

impl RegistryClient {
    /// A client with the default address policy (no link-local or metadata addresses).
    #[cfg_attr(not(test), allow(dead_code))] // the commands build theirs with_policy
    pub fn new(options: RegistryOptions) -> Result<Self> {
        Self::with_policy(options, AddressPolicy::default())
    }

    /// A client that contacts only what `policy` allows.
    pub fn with_policy(options: RegistryOptions, policy: AddressPolicy) -> Result<Self> {
        Self::build(options, Arc::new(policy), FilteringResolver::system())
    }

    /// Resolving names with `inner` (behind the same address filter) instead of the system.
    #[cfg(test)]
    pub(crate) fn with_resolver(
        options: RegistryOptions,
        policy: AddressPolicy,
        inner: Arc<dyn reqwest::dns::Resolve>,
    ) -> Result<Self> {
        Self::build(options, Arc::new(policy), FilteringResolver::over(inner))
    }

    fn build(
        options: RegistryOptions,
        policy: Arc<AddressPolicy>,
        resolver: FilteringResolver,
    ) -> Result<Self> {
        let redirects = {
            let policy = policy.clone();
            let insecure = options.insecure_registries.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                let url = attempt.url();
                if let Err(refused) = policy.check_url(url) {
                    return attempt.error(refused);
                }
                let authority = url_authority(url);
                if url.scheme() == "http" && !plain_http_allowed(&insecure, &authority) {
                    let refused = Refused {
                        host: authority,
                        why: "a redirect to plain HTTP (not loopback or --insecure-registry)"
                            .into(),
                    };
                    return attempt.error(refused);
                }
                // reqwest itself drops `Authorization` when host, port or scheme change.
                attempt.follow()
            })
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("soci-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // A stalled body counts as a dropped connection: the read resumes with Range.
            .read_timeout(Duration::from_secs(60))
            .redirect(redirects)
            // A proxy would resolve names itself, out of the resolver's reach.
            .no_proxy()
            .dns_resolver(Arc::new(resolver.clone()));
        if let Some(path) = &options.ca_bundle {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading CA bundle {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing CA bundle {}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(Self {
            http: builder.build().context("building the HTTP client")?,
            options,
            policy,
            resolver,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// A client like this one (insecure registries, CA bundle, retries, address policy) with
    /// other credentials: a SociIndex's own Secrets.
    pub fn with_credentials(&self, credentials: CredentialStore) -> Result<Self> {
        let mut client = Self::build(
            RegistryOptions {
                credentials,
                insecure_registries: self.options.insecure_registries.clone(),
                ca_bundle: self.options.ca_bundle.clone(),
                retry: self.options.retry,
            },
            self.policy.clone(),
            self.resolver.clone(),
        )?;
        client.handshake_timeout = self.handshake_timeout;
        Ok(client)
    }

    #[cfg(test)]
    pub(crate) fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.options.retry
    }

    fn plain_http(&self, registry: &str) -> bool {
        plain_http_allowed(&self.options.insecure_registries, registry)
    }

    /// `scheme://api-host/v2/<repository>/<tail>`.
    pub fn url(&self, reference: &RegistryRef, tail: &str) -> String {
        format!(
            "{}/v2/{}/{tail}",
            self.origin(reference),
            reference.repository
        )
    }

    /// `scheme://api-host`.
    fn origin(&self, reference: &RegistryRef) -> String {
        let scheme = if self.plain_http(&reference.registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", reference.api_host())
    }

    /// Refuses a registry the address policy does not allow, before anything is sent.
    fn check_registry(&self, what: &str, reference: &RegistryRef) -> RegistryResult<()> {
        self.policy
            .check_registry(&reference.registry)
            .map_err(|r| RegistryError::permanent(PermanentCause::NotAllowed, what, r.to_string()))
    }

    /// Whether a request to `url` may carry the credentials made for `reference`: only to
    /// the registry API's own host and port, and over HTTPS unless the registry is allowed
    /// plain HTTP.
    fn credentials_may_go(&self, reference: &RegistryRef, url: &Url) -> bool {
        let Ok(home) = Url::parse(&self.origin(reference)) else {
            return false;
        };
        let same_authority = url
            .host_str()
            .zip(home.host_str())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
            && url.port_or_known_default() == home.port_or_known_default();
        same_authority && (url.scheme() == "https" || self.plain_http(&reference.registry))
    }

    /// The handshake for one repository and access: the `/v2/` challenge, then Basic
    /// credentials or a token from the realm (see `token.rs`).
    async fn handshake_client(
        &self,
        what: &str,
        reference: &RegistryRef,
        access: Access,
        credentials: &RegistryAuth,
    ) -> RegistryResult<(Option<String>, Option<Duration>)> {
        token::handshake(token::Handshake {
            http: &self.http,
            what,
            origin: &self.origin(reference),
            repository: &reference.repository,
            push: access == Access::Push,
            credentials,
            registry_plain_http: self.plain_http(&reference.registry),
            policy: &self.policy,
            plain_http_ok: &|authority| self.plain_http(authority),
            timeout: self.handshake_timeout,
        })
        .await
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
        if let Some(cached) = crate::locks::lock(&self.authorizations).get(&key)
            && cached.until.is_none_or(|t| Instant::now() < t)
        {
            return Ok(cached.header.clone());
        }
        let what = format!("authenticating to {}", reference.registry);
        let credentials = self
            .options
            .credentials
            .lookup(&reference.registry)
            .map_err(|e| {
                RegistryError::permanent(PermanentCause::Unauthorized, &what, format!("{e:#}"))
            })?;
        let (text, lifetime) = match &credentials {
            // A registry token is used as is, as docker does.
            RegistryAuth::Bearer(_) => (credentials.header_text(), None),
            _ => {
                self.handshake_client(&what, reference, access, &credentials)
                    .await?
            }
        };
        let header = text
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
        let until = lifetime.and_then(|l| Instant::now().checked_add(l));
        crate::locks::lock(&self.authorizations).insert(
            key,
            CachedAuthorization {
                header: header.clone(),
                until,
            },
        );
        Ok(header)
    }

    fn forget_authorization(&self, reference: &RegistryRef, access: Access) {
        crate::locks::lock(&self.authorizations).remove(&(
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
        self.check_registry(what, reference)?;
        let mut refreshed = false;
        loop {
            let auth = self.authorization(reference, access).await?;
            let mut request = build(&self.http)
                .build()
                .map_err(|e| RegistryError::from_reqwest(what, &e))?;
            // Every URL (also a `Link` or `Location` from the registry) is checked, and the
            // credentials go only where they were made for.
            self.policy.check_url(request.url()).map_err(|r| {
                RegistryError::permanent(PermanentCause::NotAllowed, what, r.to_string())
            })?;
            request.headers_mut().remove(AUTHORIZATION);
            let attached = match &auth {
                Some(a) if self.credentials_may_go(reference, request.url()) => {
                    request.headers_mut().insert(AUTHORIZATION, a.clone());
                    true
                }
                _ => false,
            };
            REQUESTS
                .with_label_values(&[request.method().as_str()])
                .inc();
            let response = self
                .http
                .execute(self.with_deadline(request))
                .await
                .map_err(|e| classify_handshake_error(what, &e))?;
            let status = response.status().as_u16();
            if status == 401 && attached && !refreshed {
                refreshed = true;
                self.forget_authorization(reference, access);
                continue;
            }
            if status == 401 && auth.is_none() {
                let body = read_error_body(response).await;
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
                let body = read_error_body(response).await;
                return Err(RegistryError::from_status(what, status, &body, retry_after));
            }
            return Ok(response);
        }
    }

    /// A request without a deadline of its own gets the policy's: from connecting to the end
    /// of the body, so a registry cannot hold it by sending a byte before each read timeout.
    fn with_deadline(&self, mut request: reqwest::Request) -> reqwest::Request {
        if request.timeout().is_none() {
            *request.timeout_mut() = Some(self.options.retry.request_timeout);
        }
        request
    }

    /// Runs `operation` until it succeeds, fails permanently, has failed transiently
    /// `max_retries + 1` times, or has used up the operation's budget (attempts and waits,
    /// `Retry-After` waits capped on their own).
    pub async fn retrying<T, F, Fut>(&self, what: &str, operation: F) -> RegistryResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = RegistryResult<T>>,
    {
        let policy = self.options.retry;
        let mut budget = RetryBudget::new(policy, policy.operation_budget);
        loop {
            let mut error = match tokio::time::timeout_at(budget.deadline(), operation()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(RegistryError::transient(
                        what,
                        format!(
                            "no answer within the operation's {:.1}s budget ({} attempts)",
                            budget.budget().as_secs_f64(),
                            budget.attempts()
                        ),
                    ));
                }
            };
            let Some(delay) = budget.next_delay(&mut error) else {
                return Err(error);
            };
            eprintln!("retrying in {:.1}s: {error}", delay.as_secs_f64());
            tokio::time::sleep(delay).await;
        }
    }
}

/// Fails with the status's classification unless it is one of `expected` (what the registry
/// said read as an error body: a few KiB, a few seconds).
pub async fn expect_status(
    what: &str,
    response: reqwest::Response,
    expected: &[u16],
) -> RegistryResult<reqwest::Response> {
    let status = response.status().as_u16();
    if expected.contains(&status) {
        return Ok(response);
    }
    let body = read_error_body(response).await;
    Err(RegistryError::from_status(what, status, &body, None))
}

/// A transport failure, or a refusal by our resolver or redirect policy (permanent: the
/// same name or redirect is refused again).
pub(super) fn classify_handshake_error(what: &str, error: &reqwest::Error) -> RegistryError {
    match refusal_in(error) {
        Some(refused) => {
            RegistryError::permanent(PermanentCause::NotAllowed, what, refused.to_string())
        }
        None => RegistryError::from_reqwest(what, error),
    }
}

/// Loopback registries, and those named by `--insecure-registry`, are spoken to over plain
/// HTTP.
fn plain_http_allowed(insecure_registries: &[String], authority: &str) -> bool {
    is_loopback_host(authority)
        || insecure_registries
            .iter()
            .any(|r| r.eq_ignore_ascii_case(authority))
}

fn url_authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(insecure: &[&str]) -> RegistryClient {
        RegistryClient::new(RegistryOptions {
            credentials: CredentialStore::default(),
            insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
            ca_bundle: None,
            retry: RetryPolicy::default(),
        })
        .unwrap()
    }

    #[test]
    fn credentials_go_only_to_the_registry_host_and_port_over_allowed_schemes() {
        let c = client(&["plain.example:5000"]);
        let may = |reference: &str, url: &str| {
            c.credentials_may_go(
                &RegistryRef::parse(reference).unwrap(),
                &Url::parse(url).unwrap(),
            )
        };
        assert!(may(
            "reg.example/a:1",
            "https://reg.example/v2/a/blobs/uploads/x"
        ));
        assert!(may(
            "reg.example/a:1",
            "https://REG.example:443/v2/a/tags/list?n=1"
        ));
        assert!(!may(
            "reg.example/a:1",
            "https://other.example/v2/a/tags/list"
        ));
        assert!(!may("reg.example/a:1", "https://reg.example:8443/v2/a/"));
        assert!(!may(
            "reg.example/a:1",
            "https://reg.example.evil.net/v2/a/"
        ));
        // Plain HTTP to a host that is neither loopback nor --insecure-registry.
        assert!(!may("reg.example/a:1", "http://reg.example:443/v2/a/"));
        assert!(!may("reg.example/a:1", "http://reg.example/v2/a/"));
        assert!(may(
            "plain.example:5000/a:1",
            "http://plain.example:5000/v2/a/"
        ));
        assert!(!may(
            "plain.example:5000/a:1",
            "http://plain.example:5001/v2/a/"
        ));
        assert!(may("127.0.0.1:5000/a:1", "http://127.0.0.1:5000/v2/a/"));
        assert!(!may("127.0.0.1:5000/a:1", "http://127.0.0.1:5001/v2/a/"));
        assert!(!may("127.0.0.1:5000/a:1", "http://localhost:5000/v2/a/"));
        // docker.io's API host is registry-1.docker.io.
        assert!(may(
            "busybox",
            "https://registry-1.docker.io/v2/library/busybox/manifests/x"
        ));
        assert!(!may(
            "busybox",
            "https://docker.io/v2/library/busybox/manifests/x"
        ));
    }

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let first = p.delay(0, None);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let late = p.delay(30, None);
        assert!(late <= Duration::from_millis(2500) && late >= Duration::from_millis(1500));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600))),
            p.max_retry_after
        );
    }

    fn busy(retry_after: Option<u64>) -> RegistryError {
        let mut e = RegistryError::transient("GET manifest r/a:v1", "HTTP 429");
        e.retry_after = retry_after.map(Duration::from_secs);
        e
    }

    #[test]
    fn retry_after_waits_are_capped_each_and_in_total() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retry_after: Duration::from_secs(2),
            max_retry_after_total: Duration::from_secs(5),
            operation_budget: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let mut budget = RetryBudget::new(policy, policy.operation_budget);
        // `Retry-After: 60` is honoured as 2 s, twice; a third would pass 5 s in total.
        assert_eq!(
            budget.next_delay(&mut busy(Some(60))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            budget.next_delay(&mut busy(Some(60))),
            Some(Duration::from_secs(2))
        );
        let mut e = busy(Some(60));
        assert_eq!(budget.next_delay(&mut e), None);
        assert!(e.is_transient());
        assert!(e.to_string().contains("at most 5s are honoured"), "{e}");
        assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
    }

    #[test]
    fn no_retry_starts_past_the_budget_and_permanent_errors_stop_at_once() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut budget = RetryBudget::new(policy, Duration::from_millis(100));
        let mut e = busy(None);
        assert_eq!(budget.next_delay(&mut e), None);
        assert!(e.to_string().contains("past the 0.1s budget"), "{e}");
        let mut budget = RetryBudget::new(policy, Duration::from_secs(60));
        let mut denied = RegistryError::permanent(PermanentCause::Unauthorized, "x", "HTTP 403");
        assert_eq!(budget.next_delay(&mut denied), None);
        assert_eq!(denied.cause, "HTTP 403");
    }

    #[test]
    fn stream_deadlines_grow_with_the_size() {
        let policy = RetryPolicy {
            request_timeout: Duration::from_secs(60),
            min_stream_rate: 1 << 20,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.stream_deadline(0), Duration::from_secs(60));
        assert_eq!(policy.stream_deadline(10 << 20), Duration::from_secs(70));
        assert_eq!(
            policy.stream_deadline(3 << 19),
            Duration::from_millis(61_500)
        );
        assert!(policy.stream_deadline(u64::MAX) > Duration::from_secs(1 << 40));
    }
}
