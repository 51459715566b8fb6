//! `names_pushed` as a table, and the server over real loopback connections.

use super::*;
use serde_json::json;
use std::path::Path;

fn event(registry: &str, repository: &str, tag: Option<&str>) -> PushEvent {
    PushEvent {
        registry: registry.into(),
        repository: repository.into(),
        tag: tag.map(str::to_string),
        digest: Some(format!("sha256:{}", "ab".repeat(32))),
    }
}

/// `(registry, repository, tag)`.
type Name<'a> = (&'a str, &'a str, Option<&'a str>);

#[test]
fn names_pushed_table() {
    #[rustfmt::skip]
    let cases: &[(Name, Name, bool)] = &[
        // (event registry, repository, tag), (followed registry, repository, tag), expected
        (("127.0.0.1:5000", "app", Some("v1")), ("127.0.0.1:5000", "app", Some("v1")), true),
        (("127.0.0.1:5000", "app", Some("v1")), ("127.0.0.1:5000", "app", Some("v2")), false),
        (("127.0.0.1:5000", "app", Some("v1")), ("127.0.0.1:5000", "app", None), true),
        (("127.0.0.1:5000", "app", None), ("127.0.0.1:5000", "app", None), true),
        // A push by digest moves no tag.
        (("127.0.0.1:5000", "app", None), ("127.0.0.1:5000", "app", Some("v1")), false),
        (("127.0.0.1:5000", "app", Some("v1")), ("127.0.0.1:5001", "app", Some("v1")), false),
        (("127.0.0.1:5000", "app", Some("v1")), ("127.0.0.1", "app", Some("v1")), false),
        (("127.0.0.1:5000", "app", Some("v1")), ("127.0.0.1:5000", "app2", Some("v1")), false),
        (("127.0.0.1:5000", "team/app", Some("v1")), ("127.0.0.1:5000", "app", Some("v1")), false),
        (("Registry.Example.COM", "team/app", Some("v1")), ("registry.example.com", "team/app", Some("v1")), true),
        // Tags are case-sensitive.
        (("r.example.com", "app", Some("V1")), ("r.example.com", "app", Some("v1")), false),
        // Docker Hub's names alike, and its official images under library/.
        (("index.docker.io", "library/nginx", Some("1.27")), ("docker.io", "nginx", Some("1.27")), true),
        (("registry-1.docker.io", "team/app", Some("v1")), ("docker.io", "team/app", Some("v1")), true),
        (("docker.io", "nginx", Some("1")), ("index.docker.io", "library/nginx", Some("1")), true),
        (("docker.io", "team/nginx", Some("1")), ("docker.io", "nginx", Some("1")), false),
        // library/ is only Docker Hub's.
        (("r.example.com", "library/nginx", Some("1")), ("r.example.com", "nginx", Some("1")), false),
        (("docker.io", "library/nginx", Some("1")), ("quay.io", "library/nginx", Some("1")), false),
    ];
    for ((er, erepo, etag), (r, repo, tag), expected) in cases {
        assert_eq!(
            names_pushed(&event(er, erepo, *etag), r, repo, *tag),
            *expected,
            "event {er}/{erepo}:{etag:?} vs {r}/{repo}:{tag:?}"
        );
    }
}

#[test]
fn seen_is_bounded_and_forgets_the_oldest() {
    let mut seen = Seen::default();
    for i in 0..DEDUP_KEYS + 10 {
        seen.insert(i.to_string());
    }
    seen.insert("5000".into());
    seen.insert("5000".into());
    assert_eq!(seen.keys.len(), DEDUP_KEYS);
    assert_eq!(seen.order.len(), DEDUP_KEYS);
    assert!(!seen.contains("0") && !seen.contains("10"));
    assert!(seen.contains("11") && seen.contains(&(DEDUP_KEYS + 9).to_string()));
}

#[test]
fn bearer_header_checks() {
    let want: [u8; 32] = Sha256::digest(b"s3cret").into();
    let check = |value: Option<&str>| {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::AUTHORIZATION, v.parse().unwrap());
        }
        authorized(&headers, &want)
    };
    assert!(check(Some("Bearer s3cret")));
    assert!(check(Some("bearer s3cret ")));
    assert!(!check(None));
    assert!(!check(Some("Bearer")));
    assert!(!check(Some("Bearer ")));
    assert!(!check(Some("Bearer s3cre")));
    assert!(!check(Some("Bearer s3cret2")));
    assert!(!check(Some("Basic czNjcmV0")));
    assert!(!check(Some("s3cret")));
    assert!(constant_time_eq(&want, &want));
    let mut other = want;
    other[31] ^= 1;
    assert!(!constant_time_eq(&want, &other));
}

#[test]
fn paths_are_checked() {
    let options = |path: &str| ReceiverOptions::new(([127, 0, 0, 1], 0).into(), path, "/x");
    assert!(options("/hook/registry").check_path().is_ok());
    for bad in [
        "",
        "hook",
        "/hook/{x}",
        "/hook/*rest",
        "/a//b",
        "/a b",
        "/:x",
    ] {
        assert!(options(bad).check_path().is_err(), "{bad}");
    }
}

// ---- the server ----

const DIGEST: &str = "sha256:fc6d5ffb5ea9d9b8f4b4b4a1b1fdf0a2fa7d7b4a4e3b1b1e2c7f0a6b5d4c3b2a";
const PATH: &str = "/hook/registry";
const EVENTS_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";

fn push_body(ids_tags: &[(&str, &str)]) -> Vec<u8> {
    let events: Vec<_> = ids_tags
        .iter()
        .map(|(id, tag)| {
            json!({
                "id": id,
                "timestamp": "2024-05-01T10:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": DIGEST,
                    "size": 400,
                    "length": 400,
                    "repository": "team/app",
                    "url": format!("http://127.0.0.1:5000/v2/team/app/manifests/{DIGEST}"),
                    "tag": tag
                },
                "request": {"host": "127.0.0.1:5000", "method": "PUT"}
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

fn pull_body() -> Vec<u8> {
    let mut body: serde_json::Value = serde_json::from_slice(&push_body(&[("p", "v1")])).unwrap();
    body["events"][0]["action"] = json!("pull");
    serde_json::to_vec(&body).unwrap()
}

struct Server {
    url: String,
    addr: SocketAddr,
    events: mpsc::Receiver<PushEvent>,
    metrics: ReceiverMetrics,
    token_file: PathBuf,
    _dir: soci_testkit::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

/// Writes the token as a Secret volume does: a new file renamed over the old one.
fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(token: &str, capacity: usize, adjust: impl FnOnce(&mut ReceiverOptions)) -> Server {
    let dir = soci_testkit::TempDir::new("soci-receiver").unwrap();
    let token_file = dir.path().join("token");
    write_token(&token_file, token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = ReceiverOptions::new(addr, PATH, &token_file);
    adjust(&mut options);
    let (tx, rx) = mpsc::channel(capacity);
    let metrics = ReceiverMetrics::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, options, tx, metrics.clone(), async {
        let _ = stopped.await;
    }));
    Server {
        url: format!("http://{addr}{PATH}"),
        addr,
        events: rx,
        metrics,
        token_file,
        _dir: dir,
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn outcome(&self, outcome: &str) -> u64 {
        self.metrics.requests.with_label_values(&[outcome]).get()
    }

    fn no_event(&mut self) {
        match self.events.try_recv() {
            Err(mpsc::error::TryRecvError::Empty) => {}
            other => panic!("expected no event, got {other:?}"),
        }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap()
}

async fn post(
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut request = client()
        .post(url)
        .header(header::CONTENT_TYPE, EVENTS_TYPE)
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.unwrap(), headers)
}

#[tokio::test]
async fn right_token_forwards_the_push() {
    let mut server = start("s3cret\n", 8, |_| {}).await;
    let (status, text, _) = post(&server.url, Some("s3cret"), push_body(&[("e1", "v1")])).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(text, "1 forwarded, 0 already seen, 0 ignored\n");
    assert_eq!(
        server.events.try_recv().unwrap(),
        PushEvent {
            registry: "127.0.0.1:5000".into(),
            repository: "team/app".into(),
            tag: Some("v1".into()),
            digest: Some(DIGEST.into()),
        }
    );
    server.no_event();
    assert_eq!(server.outcome("accepted"), 1);
    assert_eq!(server.metrics.events.get(), 1);

    // The same delivery again (at least once): nothing new, 200.
    let (status, text, _) = post(&server.url, Some("s3cret"), push_body(&[("e1", "v1")])).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "0 forwarded, 1 already seen, 0 ignored\n")
    );
    server.no_event();

    // Only ignored events: 200, nothing forwarded.
    let (status, _, _) = post(&server.url, Some("s3cret"), pull_body()).await;
    assert_eq!(status, 200);
    server.no_event();
    assert_eq!(server.outcome("ignored"), 2);
    assert_eq!(server.metrics.events.get(), 1);
    server.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_token_is_401() {
    let mut server = start("s3cret", 8, |_| {}).await;
    for token in [None, Some("wrong"), Some(""), Some("s3cret-and-more")] {
        let (status, _, headers) = post(&server.url, token, push_body(&[("e1", "v1")])).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    }
    // Basic auth with the token as password is not a bearer token.
    let response = client()
        .post(&server.url)
        .basic_auth("x", Some("s3cret"))
        .body(push_body(&[("e1", "v1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    server.no_event();
    assert_eq!(server.outcome("unauthorized"), 5);
    assert_eq!(server.metrics.events.get(), 0);
    server.stop().await;
}

#[tokio::test]
async fn only_post_on_the_path() {
    let mut server = start("s3cret", 8, |_| {}).await;
    let c = client();
    let base = format!("http://{}", server.addr);
    let get = c
        .get(&server.url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let put = c
        .put(&server.url)
        .bearer_auth("s3cret")
        .body(push_body(&[("a", "v1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    for path in [
        "/",
        "/hook",
        "/hook/registry/",
        "/hook/registry/x",
        "/HOOK/registry",
        "/metrics",
    ] {
        let r = c
            .post(format!("{base}{path}"))
            .bearer_auth("s3cret")
            .body(push_body(&[("a", "v1")]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    server.no_event();
    server.stop().await;
}

#[tokio::test]
async fn bad_json_is_400() {
    let mut server = start("s3cret", 8, |_| {}).await;
    for body in [
        b"{not json".to_vec(),
        b"[]".to_vec(),
        br#"{"events": "push"}"#.to_vec(),
        br#"{"whatever": 1}"#.to_vec(),
    ] {
        let (status, text, _) = post(&server.url, Some("s3cret"), body.clone()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(!text.trim().is_empty());
    }
    let (status, text, _) = post(&server.url, Some("s3cret"), b"{\"events\":[".to_vec()).await;
    assert_eq!(status, 400);
    assert!(text.starts_with("not valid JSON"), "{text}");
    let many: Vec<(String, String)> = (0..65)
        .map(|i| (format!("e{i}"), format!("t{i}")))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (status, text, _) = post(&server.url, Some("s3cret"), push_body(&many)).await;
    assert_eq!(
        (status, text.as_str()),
        (400, "65 events in one envelope; at most 64 are taken\n")
    );
    server.no_event();
    assert_eq!(server.outcome("bad_request"), 6);
    server.stop().await;
}

/// The request and the response over a raw connection (the response read until close), so a
/// body of any framing can be sent in full before the server's answer is read.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before taking the whole body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).to_string();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    (code, response)
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let limit = 4096;
    let mut server = start("s3cret", 8, |o| o.max_body_bytes = limit).await;
    // A valid notification, padded with whitespace past the cap.
    let mut big = push_body(&[("e1", "v1")]);
    big.resize(limit + 1, b' ');
    let mut fits = push_body(&[("e2", "v2")]);
    fits.resize(limit, b' ');

    // With Content-Length: refused from the header.
    let head = |len: usize| {
        format!(
            "POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let (code, response) = raw(server.addr, &head(big.len()), &big).await;
    assert_eq!(code, 413, "{response}");
    // A huge declared length is refused without waiting for the body.
    let (code, _) = raw(server.addr, &head(1 << 40), b"").await;
    assert_eq!(code, 413);

    // Chunked, no Content-Length: refused while reading.
    let chunked_head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let (code, response) = raw(server.addr, &chunked_head, &chunked(&big, 1000)).await;
    assert_eq!(code, 413, "{response}");
    server.no_event();
    assert_eq!(server.outcome("too_large"), 3);

    // Exactly the cap, chunked and not: taken.
    let (code, response) = raw(server.addr, &chunked_head, &chunked(&fits, 1000)).await;
    assert_eq!(code, 202, "{response}");
    assert_eq!(server.events.try_recv().unwrap().tag.as_deref(), Some("v2"));
    fits = push_body(&[("e3", "v3")]);
    fits.resize(limit, b'\n');
    let (code, response) = raw(server.addr, &head(fits.len()), &fits).await;
    assert_eq!(code, 202, "{response}");
    assert_eq!(server.events.try_recv().unwrap().tag.as_deref(), Some("v3"));

    // A streamed body over reqwest (chunked, of unknown length), past the cap.
    let stream = futures_util::stream::iter(
        (0..16).map(|_| Ok::<_, io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let response = client()
        .post(&server.url)
        .bearer_auth("s3cret")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    match response {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        // The server may close before the client has sent everything.
        Err(e) => panic!("no answer to a streamed body: {e}"),
    }
    server.no_event();
    server.stop().await;
}

#[tokio::test]
async fn default_cap_is_3_mib() {
    let server = start("s3cret", 8, |_| {}).await;
    let head = |len: usize| {
        format!(
            "POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let (code, _) = raw(server.addr, &head((3 << 20) + 1), b"").await;
    assert_eq!(code, 413);
    // 3 MiB of whitespace after a pull: within the cap, read in full, ignored.
    let mut body = pull_body();
    body.resize(3 << 20, b' ');
    let (code, response) = raw(server.addr, &head(body.len()), &body).await;
    assert_eq!(code, 200, "{}", &response[..response.len().min(300)]);
    server.stop().await;
}

#[tokio::test]
async fn slow_body_is_cut_off() {
    let server = start("s3cret", 8, |o| o.read_timeout = Duration::from_millis(300)).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("answered within the read timeout")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.outcome("bad_request"), 1);
    server.stop().await;
}

#[tokio::test]
async fn full_channel_is_503_and_the_retry_forwards_the_rest() {
    let mut server = start("s3cret", 1, |_| {}).await;
    let body = push_body(&[("e1", "v1"), ("e2", "v2")]);
    let (status, text, headers) = post(&server.url, Some("s3cret"), body.clone()).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(headers.get("retry-after").unwrap(), "5");
    assert_eq!(text, "busy: 1 event(s) taken, retry for the rest\n");
    assert_eq!(server.outcome("busy"), 1);
    // Still full: the retry is refused again, and the first event is not sent twice.
    let (status, _, _) = post(&server.url, Some("s3cret"), body.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(server.events.try_recv().unwrap().tag.as_deref(), Some("v1"));
    server.no_event();
    // Room again: the retry forwards only the rest.
    let (status, text, _) = post(&server.url, Some("s3cret"), body).await;
    assert_eq!(
        (status, text.as_str()),
        (202, "1 forwarded, 1 already seen, 0 ignored\n")
    );
    assert_eq!(server.events.try_recv().unwrap().tag.as_deref(), Some("v2"));
    server.no_event();
    assert_eq!(server.metrics.events.get(), 2);
    server.stop().await;
}

#[tokio::test]
async fn closed_channel_is_503() {
    let server = start("s3cret", 1, |_| {}).await;
    let Server {
        url,
        events,
        metrics,
        stop,
        task,
        _dir,
        ..
    } = server;
    drop(events);
    let (status, _, headers) = post(&url, Some("s3cret"), push_body(&[("e1", "v1")])).await;
    assert_eq!(status, 503);
    assert!(headers.get("retry-after").is_some());
    assert_eq!(
        metrics.requests.with_label_values(&["unavailable"]).get(),
        1
    );
    stop.unwrap().send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn rotated_token_takes_effect() {
    let mut server = start("old-token", 8, |_| {}).await;
    let (status, _, _) = post(&server.url, Some("old-token"), push_body(&[("e1", "v1")])).await;
    assert_eq!(status, 202);
    server.events.try_recv().unwrap();

    write_token(&server.token_file, "  new-token\n");
    let (status, _, _) = post(&server.url, Some("old-token"), push_body(&[("e2", "v2")])).await;
    assert_eq!(status, 401);
    server.no_event();
    let (status, _, _) = post(&server.url, Some("new-token"), push_body(&[("e3", "v3")])).await;
    assert_eq!(status, 202);
    assert_eq!(server.events.try_recv().unwrap().tag.as_deref(), Some("v3"));

    // Rewritten in place (same inode), a token of another length.
    std::fs::write(&server.token_file, "third-token-longer").unwrap();
    let (status, _, _) = post(&server.url, Some("new-token"), push_body(&[("e4", "v4")])).await;
    assert_eq!(status, 401);
    let (status, _, _) = post(
        &server.url,
        Some("third-token-longer"),
        push_body(&[("e5", "v5")]),
    )
    .await;
    assert_eq!(status, 202);
    server.events.try_recv().unwrap();
    server.no_event();
    server.stop().await;
}

#[tokio::test]
async fn empty_or_missing_token_file_is_503_for_everyone() {
    let mut server = start("   \n", 8, |_| {}).await;
    for token in [None, Some(""), Some("anything")] {
        let (status, _, headers) = post(&server.url, token, push_body(&[("e1", "v1")])).await;
        assert_eq!(status, 503, "{token:?}");
        assert_eq!(headers.get("retry-after").unwrap(), "5");
    }
    // A request with the header "Bearer " and an empty token file must not match.
    let (code, _) = raw(
        server.addr,
        &format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \r\nContent-Length: 2\r\nConnection: close\r\n\r\n"),
        b"{}",
    )
    .await;
    assert_eq!(code, 503);
    std::fs::remove_file(&server.token_file).unwrap();
    let (status, _, _) = post(&server.url, Some("anything"), push_body(&[("e1", "v1")])).await;
    assert_eq!(status, 503);
    assert_eq!(server.outcome("unavailable"), 5);
    server.no_event();
    // The Secret appears: served from then on.
    write_token(&server.token_file, "s3cret");
    let (status, _, _) = post(&server.url, Some("s3cret"), push_body(&[("e1", "v1")])).await;
    assert_eq!(status, 202);
    server.events.try_recv().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn harbor_webhook_is_taken() {
    let mut server = start("s3cret", 8, |_| {}).await;
    let body = serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1714557600,
        "operator": "admin",
        "event_data": {
            "resources": [{"digest": DIGEST, "tag": "v9", "resource_url": "harbor.example.com/team/app:v9"}],
            "repository": {"name": "app", "namespace": "team", "repo_full_name": "team/app", "repo_type": "private"}
        }
    }))
    .unwrap();
    let response = client()
        .post(&server.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let event = server.events.try_recv().unwrap();
    assert!(names_pushed(
        &event,
        "harbor.example.com",
        "team/app",
        Some("v9")
    ));
    server.stop().await;
}

#[tokio::test]
async fn metrics_register_with_every_outcome() {
    let metrics = ReceiverMetrics::new().unwrap();
    let registry = prometheus::Registry::new();
    metrics.register(&registry).unwrap();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for outcome in OUTCOMES {
        assert!(
            text.contains(&format!(
                "soci_operator_push_requests_total{{outcome=\"{outcome}\"}} 0"
            )),
            "{text}"
        );
    }
    assert!(text.contains("soci_operator_push_events_total 0"), "{text}");
    // Registering twice in one registry is an error, not a silent duplicate.
    assert!(metrics.register(&registry).is_err());
}

#[tokio::test]
async fn invalid_path_fails_serve() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let options = ReceiverOptions::new(addr, "hook/{x}", "/nonexistent");
    let result = serve(
        listener,
        options,
        tx,
        ReceiverMetrics::new().unwrap(),
        std::future::pending(),
    )
    .await;
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn connections_are_bounded_in_number_and_lifetime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let lifetime = Duration::from_millis(400);
    tokio::spawn(serve_bounded(
        listener,
        app,
        1,
        lifetime,
        std::future::pending(),
    ));

    // A client dripping its headers (slow loris) holds the only connection slot...
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ...so a second connection is not served until the first is cut at its lifetime.
    let second = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        (response, started.elapsed())
    });
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the slow connection is closed at its lifetime");
    assert!(
        read.is_err() || rest.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(started.elapsed() >= Duration::from_millis(350));
    let (response, when) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        when >= Duration::from_millis(350),
        "served at {when:?}, before the slot was free"
    );
}
