//! The retry and resume paths against a scripted HTTP server on loopback: a body cut short is
//! resumed with `Range`, a registry that ignores `Range` is handled, 429 honours
//! `Retry-After`, and a registry that keeps failing ends as a transient error.

use super::auth::CredentialStore;
use super::blobs::RegistryBlobReader;
use super::{RegistryClient, RegistryOptions, RegistryRef, RetryPolicy};
use crate::image::{BlobReader, VerifiedReader};
use soci_format::oci::Descriptor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted answer: status line and headers, body, and where to cut the connection.
struct Reply {
    head: String,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

fn reply(status: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    Reply {
        head,
        body: body.to_vec(),
        cut_after: None,
    }
}

type Handler = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

/// Serves `handler(n, request_head)` for the n-th non-`/v2/` request; records request heads.
async fn serve(handler: Handler) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let r = if head.starts_with("GET /v2/ ") {
                reply("200 OK", &[], b"{}")
            } else {
                log.lock().unwrap().push(head.clone());
                n += 1;
                handler(n, &head)
            };
            let _ = socket.write_all(r.head.as_bytes()).await;
            let body = match r.cut_after {
                Some(k) => &r.body[..k],
                None => &r.body[..],
            };
            let _ = socket.write_all(body).await;
            let _ = socket.shutdown().await;
        }
    });
    (port, seen)
}

fn client(max_retries: u32) -> Arc<RegistryClient> {
    Arc::new(
        RegistryClient::new(RegistryOptions {
            credentials: CredentialStore::default(),
            insecure_registries: Vec::new(),
            ca_bundle: None,
            retry: RetryPolicy {
                max_retries,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
        })
        .unwrap(),
    )
}

fn blob(n: usize) -> (Vec<u8>, Descriptor) {
    let content: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let desc = Descriptor::new(
        "application/octet-stream",
        &soci_format::oci::sha256_digest(&content),
        n as i64,
    );
    (content, desc)
}

async fn read_all(reader: &mut impl BlobReader) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = reader.next_chunk().await? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_body_resumes_with_range() {
    let (content, desc) = blob(100_000);
    let served = content.clone();
    let (port, seen) = serve(Arc::new(move |n, _head| match n {
        1 => {
            let mut r = reply("200 OK", &[], &served);
            r.cut_after = Some(30_000);
            r
        }
        _ => {
            let rest = &served[30_000..];
            reply(
                "206 Partial Content",
                &[(
                    "Content-Range",
                    format!("bytes 30000-99999/{}", served.len()),
                )],
                rest,
            )
        }
    }))
    .await;
    let repo = RegistryRef::parse(&format!("127.0.0.1:{port}/a/b:v1")).unwrap();
    let inner = RegistryBlobReader::new(client(3), repo, &desc);
    let mut reader = VerifiedReader::new(inner, &desc, "test blob".into());
    assert_eq!(read_all(&mut reader).await.unwrap(), content);
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(!heads[0].to_ascii_lowercase().contains("range:"));
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("range: bytes=30000-"),
        "{}",
        heads[1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn range_ignored_by_the_registry_skips_what_was_read() {
    let (content, desc) = blob(50_000);
    let served = content.clone();
    let (port, _) = serve(Arc::new(move |n, _| {
        let mut r = reply("200 OK", &[], &served);
        if n == 1 {
            r.cut_after = Some(12_345);
        }
        r
    }))
    .await;
    let repo = RegistryRef::parse(&format!("127.0.0.1:{port}/a:v1")).unwrap();
    let mut reader = VerifiedReader::new(
        RegistryBlobReader::new(client(3), repo, &desc),
        &desc,
        "t".into(),
    );
    assert_eq!(read_all(&mut reader).await.unwrap(), content);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_waits_for_retry_after() {
    let manifest =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let (port, seen) = serve(Arc::new(move |n, _| match n {
        1 => reply("429 Too Many Requests", &[("Retry-After", "1".into())], b""),
        _ => reply(
            "200 OK",
            &[(
                "Content-Type",
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            manifest,
        ),
    }))
    .await;
    let repo = RegistryRef::parse(&format!("127.0.0.1:{port}/a:v1")).unwrap();
    let started = Instant::now();
    let got = client(3).get_manifest(&repo, "v1").await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(got.bytes, manifest);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_server_errors_end_transient_and_not_found_is_permanent() {
    let (port, seen) = serve(Arc::new(|_, head: &str| {
        if head.contains("/manifests/missing") {
            reply(
                "404 Not Found",
                &[],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            )
        } else {
            reply("503 Service Unavailable", &[], b"busy")
        }
    }))
    .await;
    let repo = RegistryRef::parse(&format!("127.0.0.1:{port}/a:v1")).unwrap();
    let c = client(2);
    let e = c.get_manifest(&repo, "v1").await.err().unwrap();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 3);
    // A 404 for a manifest is an answer (`None`), for a blob read a permanent failure.
    assert!(c.get_manifest(&repo, "missing").await.unwrap().is_none());
    let (_, desc) = blob(10);
    let err = read_all(&mut RegistryBlobReader::new(c.clone(), repo, &desc)).await;
    assert!(err.is_err());
}

/// Valid digests (the client refuses anything else before sending).
const GONE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const LOCKED: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const FLAKY: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

#[tokio::test(flavor = "multi_thread")]
async fn deletes_map_gone_refused_and_flaky_answers() {
    let (port, seen) = serve(Arc::new(|n, head: &str| {
        if head.contains(&format!("/manifests/{GONE}")) {
            reply("404 Not Found", &[], b"")
        } else if head.contains(&format!("/manifests/{LOCKED}")) {
            reply(
                "405 Method Not Allowed",
                &[],
                br#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#,
            )
        } else if head.contains(&format!("/blobs/{FLAKY}")) && n < 5 {
            reply("503 Service Unavailable", &[], b"busy")
        } else {
            reply("202 Accepted", &[], b"")
        }
    }))
    .await;
    let repo = RegistryRef::parse(&format!("127.0.0.1:{port}/a:v1")).unwrap();
    let c = client(3);
    assert!(!c.delete_manifest(&repo, GONE).await.unwrap());
    let refused = c.delete_manifest(&repo, LOCKED).await.unwrap_err();
    assert_eq!(
        refused.permanent_cause,
        Some(super::error::PermanentCause::Unsupported)
    );
    assert!(
        refused.to_string().contains("does not allow deletes"),
        "{refused}"
    );
    assert!(c.delete_blob(&repo, FLAKY).await.unwrap());
    let heads = seen.lock().unwrap().clone();
    assert!(heads.iter().all(|h| h.starts_with("DELETE ")), "{heads:?}");
    // One answer each for the manifests, then two 503s and the 202 for the blob.
    assert_eq!(heads.len(), 5, "{heads:?}");
}
