//! Where credentials go and which hosts are contacted, against hostile servers on loopback
//! that record every header they receive. Names other than loopback addresses resolve only
//! through a test resolver (never the system's), so a refused name is proven refused before
//! any connection: the resolver records what it was asked, the servers what they received.

use super::address_policy::AddressPolicy;
use super::auth::CredentialStore;
use super::client::Access;
use super::error::{PermanentCause, RegistryError};
use super::{RegistryClient, RegistryOptions, RegistryRef, RetryPolicy};
use crate::image::BytesReader;
use crate::reason::Reason;
use crate::reason::failure_of;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use soci_format::oci::Descriptor;
use soci_testkit::hostile::{HostileServer, Reply, Request};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";
/// `Basic base64(alice:s3cret)`.
const BASIC: &str = "Basic YWxpY2U6czNjcmV0";
const TOKEN: &str = "tok-1";

/// Resolves only the names it was given; records every name asked.
#[derive(Clone, Default)]
struct MapResolver {
    names: HashMap<String, Vec<IpAddr>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl MapResolver {
    fn with(mut self, name: &str, ips: &[&str]) -> Self {
        self.names.insert(
            name.to_string(),
            ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        );
        self
    }
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Resolve for MapResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        self.asked.lock().unwrap().push(host.clone());
        let found = self.names.get(&host).cloned();
        Box::pin(async move {
            let ips = found.ok_or_else(|| format!("{host}: not in the test resolver"))?;
            let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

struct Setup {
    registry: String,
    insecure: Vec<String>,
    allowed: Vec<String>,
    denied: Vec<String>,
    resolver: MapResolver,
}

impl Setup {
    fn new(registry: &str) -> Self {
        Self {
            registry: registry.into(),
            insecure: Vec::new(),
            allowed: Vec::new(),
            denied: Vec::new(),
            resolver: MapResolver::default(),
        }
    }
    fn insecure(mut self, host: &str) -> Self {
        self.insecure.push(host.into());
        self
    }
    fn denied(mut self, glob: &str) -> Self {
        self.denied.push(glob.into());
        self
    }
    fn allowed(mut self, glob: &str) -> Self {
        self.allowed.push(glob.into());
        self
    }
    fn resolve(mut self, name: &str, ips: &[&str]) -> Self {
        self.resolver = self.resolver.with(name, ips);
        self
    }
    /// A client holding alice's credentials for `registry`.
    fn client(&self) -> RegistryClient {
        let config = format!(
            r#"{{"auths":{{"{}":{{"username":"{USER}","password":"{PASSWORD}"}}}}}}"#,
            self.registry
        );
        let credentials = CredentialStore::from_json(config.as_bytes(), "test config").unwrap();
        let mut client = RegistryClient::with_resolver(
            RegistryOptions {
                credentials,
                insecure_registries: self.insecure.clone(),
                ca_bundle: None,
                retry: RetryPolicy {
                    max_retries: 0,
                    base_delay: Duration::from_millis(1),
                    max_delay: Duration::from_millis(1),
                    ..RetryPolicy::default()
                },
            },
            AddressPolicy::new(&self.allowed, &self.denied).unwrap(),
            Arc::new(self.resolver.clone()),
        )
        .unwrap();
        client.set_handshake_timeout(Duration::from_secs(2));
        client
    }
    fn reference(&self, rest: &str) -> RegistryRef {
        RegistryRef::parse(&format!("{}/{rest}", self.registry)).unwrap()
    }
    /// The error a fresh client gets fetching the manifest of `app:v1`.
    async fn manifest_error(&self) -> RegistryError {
        self.client()
            .get_manifest(&self.reference("app:v1"), "v1")
            .await
            .map(|_| ())
            .unwrap_err()
    }
    /// The error a fresh client gets fetching the small blob `digest` of `app:v1`.
    async fn small_blob_error(&self, digest: &str) -> RegistryError {
        self.client()
            .get_small_blob(&self.reference("app:v1"), digest)
            .await
            .unwrap_err()
    }
    /// The test resolver was asked for no name at all.
    fn assert_nothing_resolved(&self) {
        assert_eq!(self.resolver.asked(), Vec::<String>::new());
    }
}

fn serve(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> HostileServer {
    HostileServer::start(handler).expect("starting a hostile server")
}

fn authorization(r: &Request) -> Option<String> {
    r.header("authorization").map(str::to_string)
}

/// No request any of `servers` received carried an `Authorization` header.
fn assert_no_credentials(servers: &[&HostileServer]) {
    for s in servers {
        for r in s.requests() {
            assert_eq!(
                authorization(&r),
                None,
                "{} received credentials on {} {}",
                s.host(),
                r.method,
                r.path
            );
        }
    }
}

/// The registry's 401 with a Bearer challenge naming `realm`.
fn bearer_challenge(realm: &str) -> Reply {
    Reply::status(401).header(
        "WWW-Authenticate",
        format!(r#"Bearer realm="{realm}",service="test-registry""#),
    )
}

/// A registry whose `/v2/` answers `challenge` and whose manifests need `Bearer tok-1`.
fn token_registry(challenge: Reply) -> HostileServer {
    serve(move |req: &Request| {
        if req.path == "/v2/" {
            return challenge.clone();
        }
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            Reply::status(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .body(br#"{"schemaVersion":2}"#.to_vec())
        } else {
            Reply::status(401)
        }
    })
}

fn token_server() -> HostileServer {
    serve(|_req: &Request| Reply::json(&serde_json::json!({"token": TOKEN, "expires_in": 300})))
}

fn not_allowed(e: &RegistryError) {
    assert_eq!(
        e.permanent_cause,
        Some(PermanentCause::NotAllowed),
        "expected a policy refusal, got {e}"
    );
}

/// The failure `e` becomes on the resource has reason `RegistryNotAllowed`.
fn assert_reason_not_allowed(e: RegistryError) {
    assert_eq!(
        failure_of(&anyhow::Error::new(e)).reason,
        Reason::RegistryNotAllowed
    );
}

/// None of `servers` received any request.
fn assert_no_requests(servers: &[&HostileServer]) {
    for s in servers {
        assert!(s.requests().is_empty(), "{} was contacted", s.host());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn realm_on_another_loopback_port_gets_the_credentials_and_the_registry_only_the_token() {
    let tokens = token_server();
    let registry = token_registry(bearer_challenge(&format!("http://{}/token", tokens.host())));
    let setup = Setup::new(&registry.host());
    let client = setup.client();
    let found = client
        .get_manifest(&setup.reference("team/app:v1"), "v1")
        .await
        .unwrap();
    assert!(found.is_some());
    let asked = tokens.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(authorization(&asked[0]).as_deref(), Some(BASIC));
    assert!(
        asked[0]
            .path
            .contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{}",
        asked[0].path
    );
    assert!(asked[0].path.contains("service=test-registry"));
    for r in registry.requests() {
        let a = authorization(&r);
        assert!(
            a.is_none() || a.as_deref() == Some(&format!("Bearer {TOKEN}")),
            "{} got {a:?}",
            r.path
        );
    }
    // The token is cached: a second read needs no second token request.
    client
        .get_manifest(&setup.reference("team/app:v1"), "v1")
        .await
        .unwrap();
    assert_eq!(tokens.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_realm_on_a_non_loopback_name_is_refused_without_contacting_it() {
    let tokens = token_server();
    let port = tokens.port();
    let registry = token_registry(bearer_challenge(&format!(
        "http://auth.example.test:{port}/token"
    )));
    let setup = Setup::new(&registry.host());
    let e = setup.manifest_error().await;
    not_allowed(&e);
    assert!(e.cause.contains("plain HTTP"), "{e}");
    setup.assert_nothing_resolved();
    assert_no_requests(&[&tokens]);
    assert_no_credentials(&[&registry, &tokens]);
    assert_reason_not_allowed(e);
}

#[tokio::test(flavor = "multi_thread")]
async fn realm_on_another_host_gets_credentials_only_when_allowed_plain() {
    let tokens = token_server();
    let registry = token_registry(bearer_challenge(&format!(
        "http://auth.test:{}/token",
        tokens.port()
    )));
    let registry_name = format!("reg.test:{}", registry.port());
    let realm_name = format!("auth.test:{}", tokens.port());
    let base = || {
        Setup::new(&registry_name)
            .insecure(&registry_name)
            .resolve("reg.test", &["127.0.0.1"])
            .resolve("auth.test", &["127.0.0.1"])
    };

    // The registry is --insecure-registry, its realm is not: refused, nothing sent there.
    let setup = base();
    let e = setup.manifest_error().await;
    not_allowed(&e);
    assert_no_requests(&[&tokens]);
    assert!(!setup.resolver.asked().contains(&"auth.test".to_string()));
    assert_no_credentials(&[&registry, &tokens]);

    // Both listed: the realm gets the token request with the credentials.
    let setup = base().insecure(&realm_name);
    setup
        .client()
        .get_manifest(&setup.reference("app:v1"), "v1")
        .await
        .unwrap();
    let asked = tokens.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(authorization(&asked[0]).as_deref(), Some(BASIC));
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_realm_is_refused_before_any_lookup() {
    let tokens = token_server();
    let registry = token_registry(bearer_challenge(&format!(
        "http://metadata.google.internal:{}/computeMetadata/v1/token",
        tokens.port()
    )));
    let setup = Setup::new(&registry.host()).resolve("metadata.google.internal", &["127.0.0.1"]);
    let e = setup.manifest_error().await;
    not_allowed(&e);
    assert!(e.cause.contains("metadata"), "{e}");
    setup.assert_nothing_resolved();
    assert_no_requests(&[&tokens]);
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_token_reply_is_cut() {
    let tokens = serve(|_req: &Request| Reply::endless(vec![b'a'; 16 << 10]));
    let registry = token_registry(bearer_challenge(&format!("http://{}/token", tokens.host())));
    let setup = Setup::new(&registry.host());
    let started = Instant::now();
    let e = setup.manifest_error().await;
    assert_eq!(e.permanent_cause, Some(PermanentCause::Invalid), "{e}");
    assert!(e.cause.contains("larger than 64 KiB"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // What the server got written before we hung up: socket buffers, not the whole stream.
    assert!(tokens.bytes_sent() < 64 << 20, "{}", tokens.bytes_sent());
}

#[tokio::test(flavor = "multi_thread")]
async fn dripping_token_reply_times_out() {
    let tokens = serve(|_req: &Request| {
        Reply::status(200).drip(br#"{"token":"slow"}"#.to_vec(), Duration::from_millis(500))
    });
    let registry = token_registry(bearer_challenge(&format!("http://{}/token", tokens.host())));
    let setup = Setup::new(&registry.host());
    let started = Instant::now();
    let e = setup.manifest_error().await;
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_challenges_are_clear_errors() {
    for (challenge, expect) in [
        (r#"Bearer realm="https://unterminated"#, "unterminated"),
        (r#"Bearer realm="a",realm="b""#, "twice"),
        ("Negotiate abc", "unsupported"),
        ("Bearer service=x", "without a realm"),
        (r#"Bearer realm="not a url""#, "not a URL"),
    ] {
        let registry = token_registry(Reply::status(401).header("WWW-Authenticate", challenge));
        let setup = Setup::new(&registry.host());
        let e = setup.manifest_error().await;
        assert!(!e.is_transient(), "{challenge}: {e}");
        assert!(e.cause.contains(expect), "{challenge}: {e}");
        assert_no_credentials(&[&registry]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_replies_are_refused() {
    for (reply, expect) in [
        (
            Reply::json(&serde_json::json!({"token": "a\r\nX-Evil: 1"})),
            "not printable",
        ),
        (Reply::status(200).body(b"<html>".to_vec()), "not JSON"),
        (Reply::json(&serde_json::json!({})), "neither"),
        (
            Reply::status(401).body(b"bad password".to_vec()),
            "token request refused",
        ),
    ] {
        let tokens = serve(move |_req: &Request| reply.clone());
        let registry = token_registry(bearer_challenge(&format!("http://{}/token", tokens.host())));
        let setup = Setup::new(&registry.host());
        let e = setup.manifest_error().await;
        assert!(!e.is_transient(), "{e}");
        assert!(e.cause.contains(expect), "{expect}: {e}");
    }
}

/// A registry that asks for Basic credentials and answers `route` once they are given.
fn basic_registry(route: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> HostileServer {
    serve(move |req: &Request| {
        if req.header("authorization") != Some(BASIC) {
            return Reply::status(401).header("WWW-Authenticate", r#"Basic realm="test""#);
        }
        route(req)
    })
}

fn other_host() -> HostileServer {
    serve(|req: &Request| match req.method.as_str() {
        "PUT" => Reply::status(201),
        _ => Reply::json(&serde_json::json!({"tags": ["b"]})),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_host_link_page_gets_no_authorization() {
    let other = other_host();
    let next = format!("http://{}/v2/app/tags/list?last=a", other.host());
    let registry = basic_registry(move |_req: &Request| {
        Reply::json(&serde_json::json!({"tags": ["a"]}))
            .header("Link", format!(r#"<{next}>; rel="next""#))
    });
    let setup = Setup::new(&registry.host());
    // list_tags refuses the other origin itself; whatever it does, no credential leaves.
    let _ = setup
        .client()
        .list_tags(&setup.reference("app:v1"), 100)
        .await;
    assert_no_credentials(&[&other]);
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| authorization(r).as_deref() == Some(BASIC))
    );
}

/// The rule in `send` itself, whatever URL a caller builds (a `Link`, a `Location`).
#[tokio::test(flavor = "multi_thread")]
async fn send_attaches_authorization_only_for_the_registry_host_and_port() {
    let other = other_host();
    let registry = basic_registry(|_req: &Request| Reply::status(200));
    let setup = Setup::new(&registry.host()).resolve("localhost", &["127.0.0.1"]);
    let client = setup.client();
    let reference = setup.reference("app:v1");
    let elsewhere = format!("http://{}/v2/app/tags/list?last=a", other.host());
    let response = client
        .send("GET elsewhere", &reference, Access::Pull, |c| {
            c.get(&elsewhere)
        })
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(other.requests().len(), 1);
    assert_no_credentials(&[&other]);
    // The same server under another name is another host: no credentials either.
    let alias = format!("http://localhost:{}/v2/app/tags/list", registry.port());
    let response = client
        .send("GET alias", &reference, Access::Pull, |c| c.get(&alias))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let last = registry.requests().pop().unwrap();
    assert_eq!(authorization(&last), None);
    let own = client.url(&reference, "tags/list");
    let response = client
        .send("GET own", &reference, Access::Pull, |c| {
            c.get(&own).header("Authorization", "Basic forged")
        })
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let last = registry.requests().pop().unwrap();
    assert_eq!(authorization(&last).as_deref(), Some(BASIC));
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_host_upload_location_gets_no_authorization() {
    let other = other_host();
    let location = format!("http://{}/upload/1", other.host());
    let registry = basic_registry(move |req: &Request| match req.method.as_str() {
        "POST" => Reply::status(202).header("Location", location.clone()),
        _ => Reply::status(404),
    });
    let setup = Setup::new(&registry.host());
    let content = bytes::Bytes::from_static(b"layer bytes");
    let desc = Descriptor::new(
        "application/octet-stream",
        &soci_format::oci::sha256_digest(&content),
        content.len() as i64,
    );
    setup
        .client()
        .upload_blob(&setup.reference("app:v1"), &desc, || {
            let content = content.clone();
            async move { Ok(BytesReader::new(content)) }
        })
        .await
        .unwrap();
    let puts = other.requests();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].method, "PUT");
    assert_no_credentials(&[&other]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_host_redirect_gets_no_authorization() {
    let other = serve(|_req: &Request| Reply::status(200).body(b"{}".to_vec()));
    let target = format!("http://{}/blob", other.host());
    let registry =
        basic_registry(move |_req: &Request| Reply::status(307).header("Location", target.clone()));
    let setup = Setup::new(&registry.host());
    let digest = soci_format::oci::sha256_digest(b"{}");
    let got = setup
        .client()
        .get_small_blob(&setup.reference("app:v1"), &digest)
        .await
        .unwrap();
    assert!(got.is_some());
    assert_eq!(other.requests().len(), 1);
    assert_no_credentials(&[&other]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_to_denied_or_plain_http_names_are_refused_before_lookup() {
    let other = serve(|_req: &Request| Reply::status(200).body(b"{}".to_vec()));
    let port = other.port();
    for (target, setup_for) in [
        (
            format!("http://evil.test:{port}/blob"),
            (|s: Setup| s.denied("evil.test")) as fn(Setup) -> Setup,
        ),
        (format!("http://plain.test:{port}/blob"), |s: Setup| s),
    ] {
        let registry = basic_registry(move |_req: &Request| {
            Reply::status(307).header("Location", target.clone())
        });
        let setup = setup_for(
            Setup::new(&registry.host())
                .resolve("evil.test", &["127.0.0.1"])
                .resolve("plain.test", &["127.0.0.1"]),
        );
        let digest = soci_format::oci::sha256_digest(b"{}");
        let e = setup.small_blob_error(&digest).await;
        not_allowed(&e);
        setup.assert_nothing_resolved();
    }
    assert_no_requests(&[&other]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_loops_stop_after_ten() {
    let registry = serve(|req: &Request| {
        if req.path == "/v2/" {
            return Reply::status(200);
        }
        Reply::status(307).header("Location", req.path.clone())
    });
    let setup = Setup::new(&registry.host());
    let digest = soci_format::oci::sha256_digest(b"{}");
    let e = setup.small_blob_error(&digest).await;
    assert!(e.cause.contains("redirect"), "{e}");
    // The /v2/ probe, the request, ten redirects followed.
    assert!(
        registry.requests().len() <= 12,
        "{}",
        registry.requests().len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn name_resolving_to_a_metadata_address_is_refused_before_connect() {
    let registry = basic_registry(|_req: &Request| {
        Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(br#"{"schemaVersion":2}"#.to_vec())
    });
    let port = registry.port();
    let name = format!("evil.test:{port}");
    let setup = Setup::new(&name).insecure(&name).resolve(
        "evil.test",
        &["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"],
    );
    let e = setup.manifest_error().await;
    not_allowed(&e);
    assert!(e.cause.contains("evil.test"), "{e}");
    assert_eq!(setup.resolver.asked(), vec!["evil.test".to_string()]);
    assert_no_requests(&[&registry]);
    assert_reason_not_allowed(e);

    // A name with a metadata address among good ones: only the good ones are used.
    let setup = Setup::new(&name)
        .insecure(&name)
        .resolve("evil.test", &["169.254.169.254", "127.0.0.1"]);
    let found = setup
        .client()
        .get_manifest(&setup.reference("app:v1"), "v1")
        .await
        .unwrap();
    assert!(found.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_outside_the_allowed_list_or_in_the_denied_list_get_nothing() {
    let allowed = token_server();
    let other = token_server();
    let setup = Setup::new(&other.host()).allowed(&allowed.host());
    let e = setup.manifest_error().await;
    not_allowed(&e);
    assert!(e.cause.contains("--allowed-registries"), "{e}");
    assert_no_requests(&[&other]);

    let name = format!("blocked.test:{}", other.port());
    let setup = Setup::new(&name)
        .insecure(&name)
        .denied("*.test")
        .resolve("blocked.test", &["127.0.0.1"]);
    let e = setup.manifest_error().await;
    not_allowed(&e);
    assert!(e.cause.contains("--denied-registries"), "{e}");
    setup.assert_nothing_resolved();
    assert_no_requests(&[&other]);
    assert_reason_not_allowed(e);
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_image_on_a_refused_registry_stalls_with_registry_not_allowed() {
    use crate::controller::plan::FailureClass;
    let registry = token_server();
    let name = format!("blocked.test:{}", registry.port());
    let setup = Setup::new(&name)
        .insecure(&name)
        .denied("blocked.test")
        .resolve("blocked.test", &["127.0.0.1"]);
    let failure = crate::controller::registry_check::resolve(
        &setup.client(),
        &format!("{name}/app:v1"),
        None,
        "web",
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(failure.class, FailureClass::Permanent);
    assert_eq!(failure.reason, Reason::RegistryNotAllowed);
    assert!(
        failure.message.contains("--denied-registries"),
        "{}",
        failure.message
    );
    setup.assert_nothing_resolved();
    assert_no_requests(&[&registry]);
}
