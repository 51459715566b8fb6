//! The registry client against a hostile registry (`soci_testkit::hostile`, loopback only):
//! endless, giant and dripping bodies, error bodies that never end, `Retry-After: 60` on every
//! answer, `Link` loops and `Link`s to another host, "digests" that are tags or paths, and
//! pre-signed URLs in error text. Each case asserts the error, and that it came in bounded time
//! (the policy's deadlines are shortened to a second or two here).

use super::auth::CredentialStore;
use super::blobs::RegistryBlobReader;
use super::error::PermanentCause;
use super::{RegistryClient, RegistryError, RegistryOptions, RegistryRef, RetryPolicy};
use crate::image::BlobReader;
use soci_format::oci::{self, Descriptor};
use soci_testkit::hostile::{HostileServer, Reply, Request};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadlines of a second or two, so every hostile case ends fast.
pub(crate) fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        request_timeout: Duration::from_secs(1),
        operation_budget: Duration::from_secs(2),
        max_retry_after: Duration::from_millis(300),
        max_retry_after_total: Duration::from_millis(700),
        min_stream_rate: 64 << 10,
    }
}

pub(crate) fn client_with(
    policy: RetryPolicy,
    credentials: CredentialStore,
) -> Arc<RegistryClient> {
    Arc::new(
        RegistryClient::new(RegistryOptions {
            credentials,
            insecure_registries: Vec::new(),
            ca_bundle: None,
            retry: policy,
        })
        .unwrap(),
    )
}

pub(crate) fn client() -> Arc<RegistryClient> {
    client_with(fast_policy(), CredentialStore::default())
}

/// A registry that needs no authentication (`/v2/` answers 200) and answers everything else
/// with `handler`.
pub(crate) fn registry(
    handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> HostileServer {
    HostileServer::start(move |req: &Request| {
        if req.path_only() == "/v2/" {
            Reply::json(&serde_json::json!({}))
        } else {
            handler(req)
        }
    })
    .unwrap()
}

pub(crate) fn repo(server: &HostileServer, name: &str) -> RegistryRef {
    RegistryRef::parse(&format!("{}/{name}:v1", server.host())).unwrap()
}

/// The requests other than the `/v2/` handshake.
pub(crate) fn api_requests(server: &HostileServer) -> Vec<Request> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path_only() != "/v2/")
        .collect()
}

/// `future`'s output, failing the test if it takes longer than `limit`, and how long it took.
pub(crate) async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(limit, future).await {
        Ok(v) => (v, started.elapsed()),
        Err(_) => panic!("not done within {limit:?}: the registry holds the client"),
    }
}

const SECONDS_10: Duration = Duration::from_secs(10);

/// Reads the blob `desc` of `server`'s repository `a` to its end within 10 s: the registry
/// error the read stops with, and how long it took.
async fn read_to_error(server: &HostileServer, desc: &Descriptor) -> (RegistryError, Duration) {
    let mut reader = RegistryBlobReader::new(client(), repo(server, "a"), desc);
    let (result, took) = within(SECONDS_10, async {
        while reader.next_chunk().await?.is_some() {}
        anyhow::Ok(())
    })
    .await;
    (
        result.unwrap_err().downcast::<RegistryError>().unwrap(),
        took,
    )
}

fn permanent(e: &RegistryError, cause: PermanentCause, text: &str) {
    assert_eq!(e.permanent_cause, Some(cause), "{e}");
    assert!(e.to_string().contains(text), "{e}");
}

fn manifest_reply() -> Reply {
    Reply::status(200).header("Content-Type", oci::MEDIA_TYPE_OCI_MANIFEST)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_declaring_more_than_4_mib_is_refused_before_its_body_is_read() {
    let server = registry(|_| {
        manifest_reply()
            .body(vec![b' '; 100])
            .declared_length(5 << 20)
    });
    let (result, _) = within(SECONDS_10, client().get_manifest(&repo(&server, "a"), "v1")).await;
    let e = result.err().expect("refused");
    permanent(
        &e,
        PermanentCause::TooLarge,
        "declares 5242880 bytes, more than the 4 MiB limit for a manifest or index",
    );
    // Refused on the head: one request, not retried.
    assert_eq!(api_requests(&server).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_manifest_stops_one_chunk_past_4_mib() {
    let server = registry(|_| Reply::endless(vec![b'{'; 64 << 10]));
    let (result, _) = within(SECONDS_10, client().get_manifest(&repo(&server, "a"), "v1")).await;
    let e = result.err().expect("refused");
    permanent(
        &e,
        PermanentCause::TooLarge,
        "larger than the 4 MiB limit for a manifest or index",
    );
    // What the server managed to write: what we read plus the socket buffers.
    assert!(server.bytes_sent() < 12 << 20, "{}", server.bytes_sent());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_blob_declaring_a_terabyte_is_refused_before_reading() {
    let server = registry(|_| Reply::status(200).declared_length(1 << 40));
    let digest = oci::sha256_digest(b"{}");
    let (result, _) = within(
        SECONDS_10,
        client().get_small_blob(&repo(&server, "a"), &digest),
    )
    .await;
    permanent(
        &result.unwrap_err(),
        PermanentCause::TooLarge,
        "more than the 4 MiB limit for a config blob",
    );
}

/// An error answer with a body far larger than anything we keep, that never ends: 4 MiB sent
/// of a declared terabyte, then silence.
fn giant_error(status: u16) -> Reply {
    Reply::status(status)
        .header("Content-Type", "text/html")
        .body(b"<html>no</html>".repeat(280_000))
        .declared_length(1 << 40)
}

#[tokio::test(flavor = "multi_thread")]
async fn giant_error_bodies_cost_a_few_kib_and_no_wait() {
    // 403 (read by `expect_status`), 401 without credentials and 503 (both read in `send`).
    for (status, cause) in [
        (403, Some(PermanentCause::Unauthorized)),
        (401, Some(PermanentCause::Unauthorized)),
        (503, None),
    ] {
        let server = registry(move |_| giant_error(status));
        let (result, took) =
            within(SECONDS_10, client().get_manifest(&repo(&server, "a"), "v1")).await;
        let e = result.err().expect("an error");
        assert_eq!(e.permanent_cause, cause, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("HTTP {status}: <html>no</html>")),
            "{text}"
        );
        assert!(text.len() < 1024, "{} bytes", text.len());
        // The 64 KiB are there at once: no attempt waits for the rest.
        assert!(took < Duration::from_secs(2), "{status}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dripped_manifest_ends_at_the_request_deadline() {
    // One byte every 100 ms: each read comes well within any read timeout.
    let server =
        registry(|_| manifest_reply().drip(vec![b' '; 10_000], Duration::from_millis(100)));
    let (result, took) = within(SECONDS_10, client().get_manifest(&repo(&server, "a"), "v1")).await;
    let e = result.err().expect("cut");
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("timed out") || e.to_string().contains("budget"),
        "{e}"
    );
    // The operation's budget (2 s) bounds all its attempts.
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_body_that_never_comes_and_headers_that_never_come_end_in_time() {
    let server = registry(|req| {
        if req.path.contains("silent-head") {
            Reply::status(200).after(Duration::from_secs(30))
        } else {
            manifest_reply().body("{").declared_length(1000)
        }
    });
    let c = client();
    for name in ["silent-body", "silent-head"] {
        let (result, took) = within(SECONDS_10, c.get_manifest(&repo(&server, name), "v1")).await;
        let e = result.err().expect("cut");
        assert!(e.is_transient(), "{name}: {e}");
        assert!(took < Duration::from_secs(4), "{name}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_60_on_every_answer_is_honoured_only_so_long() {
    let server = registry(|_| Reply::status(429).header("Retry-After", "60"));
    let policy = RetryPolicy {
        max_retries: 5,
        operation_budget: Duration::from_secs(60),
        ..fast_policy()
    };
    let c = client_with(policy, CredentialStore::default());
    let (result, took) = within(SECONDS_10, c.get_manifest(&repo(&server, "a"), "v1")).await;
    let e = result.err().expect("gave up");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("Retry-After"), "{e}");
    // 300 ms honoured twice (600 ms); a third would pass the 700 ms total.
    assert_eq!(api_requests(&server).len(), 3);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

fn tags_page(link: Option<String>) -> Reply {
    let r = Reply::json(&serde_json::json!({"name": "a", "tags": []}));
    match link {
        Some(l) => r.header("Link", format!("<{l}>; rel=\"next\"")),
        None => r,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_to_the_same_page_stops_at_once() {
    let server = registry(|req| tags_page(Some(req.path.clone())));
    let (result, _) = within(SECONDS_10, client().list_tags(&repo(&server, "a"), 100)).await;
    permanent(
        &result.unwrap_err(),
        PermanentCause::Invalid,
        "the pages loop",
    );
    assert_eq!(api_requests(&server).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_chain_of_pages_stops_at_the_page_cap() {
    let server = registry(|req| {
        let n: u64 = req
            .path
            .split("last=")
            .nth(1)
            .and_then(|v| v.split('&').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tags_page(Some(format!("/v2/a/tags/list?last={}&n=1000", n + 1)))
    });
    let (result, _) = within(SECONDS_10, client().list_tags(&repo(&server, "a"), 100)).await;
    permanent(
        &result.unwrap_err(),
        PermanentCause::Invalid,
        "more than 100 pages",
    );
    assert_eq!(api_requests(&server).len(), super::limits::MAX_TAG_PAGES);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_to_another_host_is_not_followed_and_gets_no_credentials() {
    let elsewhere = registry(|_| tags_page(None));
    let other = format!("http://{}/v2/a/tags/list?n=1000", elsewhere.host());
    let server = registry(move |_| tags_page(Some(other.clone())));
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        server.host(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "user:secret")
    );
    let credentials = CredentialStore::from_json(config.as_bytes(), "test").unwrap();
    let c = client_with(fast_policy(), credentials);
    let (result, _) = within(SECONDS_10, c.list_tags(&repo(&server, "a"), 100)).await;
    permanent(
        &result.unwrap_err(),
        PermanentCause::Invalid,
        "another origin",
    );
    // The registry got the credentials; the other host got nothing at all.
    assert!(
        api_requests(&server)
            .iter()
            .all(|r| r.header("authorization").is_some())
    );
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_lists_past_4_mib_are_refused_declared_or_endless() {
    let subject = oci::sha256_digest(b"subject");
    for declared in [true, false] {
        let server = registry(move |_| {
            if declared {
                Reply::status(200).declared_length(2 << 30)
            } else {
                Reply::endless(vec![b' '; 64 << 10])
            }
        });
        let (result, _) = within(
            SECONDS_10,
            client().referrers(&repo(&server, "a"), &subject, None),
        )
        .await;
        let e = result.unwrap_err();
        permanent(
            &e,
            PermanentCause::TooLarge,
            "4 MiB limit for a referrers list",
        );
        assert_eq!(
            e.to_string().contains("declares 2147483648 bytes"),
            declared,
            "{e}"
        );
    }
}

const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// "Digests" a hostile manifest, header or status may carry.
fn bad_digests() -> Vec<String> {
    vec![
        "latest".into(),
        "sha256:../../../v2/other/blobs/x".into(),
        format!("sha256:{}", HEX64.to_uppercase()),
        format!("sha256:{}/..", &HEX64[3..]),
        format!("sha256:{HEX64}?n=1"),
        format!("md5:{}", &HEX64[..32]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn digests_that_are_tags_or_paths_never_reach_the_registry() {
    let server = registry(|_| Reply::status(200).body("{}"));
    let c = client();
    let r = repo(&server, "a");
    for bad in bad_digests() {
        let mut errors: Vec<(&str, RegistryError)> = vec![
            ("blob_size", c.blob_size(&r, &bad).await.unwrap_err()),
            (
                "get_small_blob",
                c.get_small_blob(&r, &bad).await.unwrap_err(),
            ),
            ("has_manifest", c.has_manifest(&r, &bad).await.unwrap_err()),
            ("delete_blob", c.delete_blob(&r, &bad).await.unwrap_err()),
            (
                "delete_manifest",
                c.delete_manifest(&r, &bad).await.unwrap_err(),
            ),
            ("referrers", c.referrers(&r, &bad, None).await.unwrap_err()),
            ("mount_blob", c.mount_blob(&r, &r, &bad).await.unwrap_err()),
        ];
        if bad.contains(':') {
            // With a colon it is read as a digest; without, as a tag (a valid one here).
            errors.push((
                "get_manifest",
                c.get_manifest(&r, &bad).await.err().unwrap(),
            ));
            errors.push((
                "manifest_digest",
                c.manifest_digest(&r, &bad).await.unwrap_err(),
            ));
        }
        let desc = Descriptor::new("application/octet-stream", &bad, 10);
        let mut reader = RegistryBlobReader::new(c.clone(), r.clone(), &desc);
        let read = reader.next_chunk().await.unwrap_err();
        let read = read.downcast_ref::<RegistryError>().unwrap().clone();
        errors.push(("blob read", read));
        for (call, e) in errors {
            assert_eq!(
                e.permanent_cause,
                Some(PermanentCause::Invalid),
                "{call} {bad}: {e}"
            );
            assert!(
                e.to_string().contains("is not a valid digest"),
                "{call}: {e}"
            );
        }
    }
    // Tags are checked too when they go into a path.
    let e = c.get_manifest(&r, "../../etc").await.err().unwrap();
    assert!(e.to_string().contains("is not a valid tag"), "{e}");
    assert!(
        server.requests().is_empty(),
        "requests reached the registry: {:?}",
        server
            .requests()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_content_digest_header_that_is_not_a_digest_is_not_believed() {
    let body = br#"{"schemaVersion":2}"#;
    let upper = format!("sha256:{}", HEX64.to_uppercase());
    let server = registry(move |req| {
        let r = manifest_reply().header("Docker-Content-Digest", upper.clone());
        match (req.method.as_str(), req.path.contains("/also-get/")) {
            ("HEAD", _) => r,
            (_, true) => r.body(body.to_vec()),
            (_, false) => manifest_reply().body(body.to_vec()),
        }
    });
    let c = client();
    // The HEAD's header is not a digest: the content's own digest, from a GET.
    let (digest, _) = within(SECONDS_10, c.manifest_digest(&repo(&server, "a"), "v1")).await;
    assert_eq!(digest.unwrap(), Some(oci::sha256_digest(body)));
    // A GET that says so too: the registry contradicts the content.
    let (result, _) = within(
        SECONDS_10,
        c.manifest_digest(&repo(&server, "also-get"), "v1"),
    )
    .await;
    permanent(
        &result.unwrap_err(),
        PermanentCause::DigestMismatch,
        "content has digest",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_signed_redirect_url_never_reaches_an_error_message() {
    // The "bucket" redirects to itself: reqwest gives up after 10 redirects, naming the last
    // URL it was sent to, the pre-signed one.
    let bucket = HostileServer::start(|req: &Request| {
        Reply::status(307).header("Location", req.path.clone())
    })
    .unwrap();
    let location = format!(
        "http://{}/bucket/blob?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=s3cr3t",
        bucket.host()
    );
    let server = registry(move |_| Reply::status(307).header("Location", location.clone()));
    let content = b"layer";
    let desc = Descriptor::new("application/octet-stream", &oci::sha256_digest(content), 5);
    let mut reader = RegistryBlobReader::new(client(), repo(&server, "a"), &desc);
    let (result, _) = within(SECONDS_10, reader.next_chunk()).await;
    let error = result.unwrap_err();
    assert!(!bucket.requests().is_empty(), "the redirect was followed");
    assert!(format!("{error:#}").contains("redirect"), "{error:#}");
    let failure = crate::reason::failure_of(&error);
    for text in [format!("{error:#}"), failure.message] {
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("AKIAEXAMPLE"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dripped_blob_ends_at_the_deadline_its_size_allows() {
    let content: Vec<u8> = (0..10_000).map(|i| i as u8).collect();
    let desc = Descriptor::new(
        "application/octet-stream",
        &oci::sha256_digest(&content),
        content.len() as i64,
    );
    // Each byte resets the read timeout and counts as progress; 10,000 of them take 500 s.
    let served = content.clone();
    let server =
        registry(move |_| Reply::status(200).drip(served.clone(), Duration::from_millis(50)));
    let (e, took) = read_to_error(&server, &desc).await;
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("too slow"), "{e}");
    // 1 s per request plus 10,000 bytes at 64 KiB/s.
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_blob_stops_one_chunk_past_its_descriptor() {
    let desc = Descriptor::new(
        "application/octet-stream",
        &oci::sha256_digest(b"x"),
        1 << 20,
    );
    let server = registry(|_| Reply::endless(vec![b'x'; 64 << 10]));
    let (e, _) = read_to_error(&server, &desc).await;
    permanent(
        &e,
        PermanentCause::DigestMismatch,
        "more than the descriptor's 1048576 bytes",
    );
}
