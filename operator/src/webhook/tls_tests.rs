//! A real TLS server on 127.0.0.1 with generated CAs, and clients that trust only what they are
//! told to.

use super::*;
use crate::webhook::certs::{IssuedPair, ServingNames, issue_ca, issue_leaf};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

const HOUR: Duration = Duration::from_secs(3600);

fn names() -> ServingNames {
    ServingNames::new(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap()
}

/// A CA and a leaf from it, valid now.
fn ca_and_leaf() -> (IssuedPair, IssuedPair) {
    let now = SystemTime::now();
    let ca = issue_ca(now - HOUR, 24 * HOUR).unwrap();
    let leaf = issue_leaf(&ca, &names(), now - HOUR, now + HOUR).unwrap();
    (ca, leaf)
}

fn load(cert: &ServingCert, leaf: &IssuedPair) {
    cert.load_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
        .unwrap();
}

/// A client trusting only `cas`; `h2`: HTTP/2 only (ALPN h2).
fn client(cas: &[&IssuedPair], h2: bool) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for der in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
            roots.add(der.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .timeout(Duration::from_secs(10));
    if h2 {
        builder = builder.http2_prior_knowledge();
    } else {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

struct Server {
    url: String,
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Server {
    async fn start(cert: Arc<ServingCert>, max_connections: usize, handshake: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_bounded(
            listener,
            cert,
            app,
            async move {
                let _ = stopped.await;
            },
            max_connections,
            handshake,
        ));
        Server {
            url: format!("https://127.0.0.1:{}/", addr.port()),
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, http::Version), String> {
    match client.get(url).send().await {
        Ok(r) => Ok((r.status().as_u16(), r.version())),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test]
async fn serves_http1_and_http2_and_switches_certificates_without_a_restart() {
    let cert = Arc::new(ServingCert::new());
    let server = Server::start(cert.clone(), MAX_CONNECTIONS, HANDSHAKE_TIMEOUT).await;
    let (ca1, leaf1) = ca_and_leaf();
    let (ca2, leaf2) = ca_and_leaf();

    // Nothing loaded: the handshake fails, the server stays up.
    let before = get(&client(&[&ca1], false), &server.url).await;
    assert!(before.is_err(), "{before:?}");

    load(&cert, &leaf1);
    assert_eq!(
        get(&client(&[&ca1], false), &server.url).await,
        Ok((200, http::Version::HTTP_11))
    );
    assert_eq!(
        get(&client(&[&ca1], true), &server.url).await,
        Ok((200, http::Version::HTTP_2))
    );
    // A client trusting another CA only is refused.
    assert!(get(&client(&[&ca2], false), &server.url).await.is_err());

    // The swap: new connections get the leaf of the second CA.
    let old_only = client(&[&ca1], false);
    load(&cert, &leaf2);
    assert_eq!(
        get(&client(&[&ca1, &ca2], true), &server.url).await,
        Ok((200, http::Version::HTTP_2))
    );
    assert_eq!(
        get(&client(&[&ca2], false), &server.url).await,
        Ok((200, http::Version::HTTP_11))
    );
    let refused = get(&client(&[&ca1], false), &server.url).await;
    assert!(
        refused.is_err(),
        "a client trusting only the old CA: {refused:?}"
    );
    drop(old_only);
    server.stop().await;
}

#[tokio::test]
async fn a_broken_or_mismatched_pair_keeps_the_current_certificate() {
    let cert = ServingCert::new();
    let (_, leaf1) = ca_and_leaf();
    let (_, leaf2) = ca_and_leaf();
    assert!(matches!(
        cert.load_pem(b"not pem", leaf1.key_pem.as_bytes()),
        Err(TlsError::NoCertificate)
    ));
    assert!(!cert.is_loaded());
    load(&cert, &leaf1);
    let served = cert.current().unwrap();
    // leaf1's certificate with leaf2's key.
    let mismatch = cert.load_pem(leaf1.cert_pem.as_bytes(), leaf2.key_pem.as_bytes());
    assert!(matches!(mismatch, Err(TlsError::Rustls(_))), "{mismatch:?}");
    assert!(Arc::ptr_eq(&served, &cert.current().unwrap()));
    // The same pair again is no change.
    let reloaded = cert.load_pem(leaf1.cert_pem.as_bytes(), leaf1.key_pem.as_bytes());
    assert!(!reloaded.unwrap(), "the same pair counted as a change");
}

#[tokio::test]
async fn the_file_watcher_picks_up_a_rewritten_pair() {
    let dir = soci_testkit::oracle::TempDir::new("soci-webhook-tls").unwrap();
    let (ca1, leaf1) = ca_and_leaf();
    let (ca2, leaf2) = ca_and_leaf();
    let write = |pair: &IssuedPair| {
        std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
    };
    write(&leaf1);
    let cert = Arc::new(ServingCert::new());
    let watcher = tokio::spawn(follow_files(
        dir.path().to_path_buf(),
        cert.clone(),
        Duration::from_millis(50),
    ));
    let server = Server::start(cert.clone(), MAX_CONNECTIONS, HANDSHAKE_TIMEOUT).await;
    let until_served = |ca: IssuedPair| {
        let url = server.url.clone();
        async move {
            let client = client(&[&ca], false);
            for _ in 0..100 {
                if get(&client, &url).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(
        until_served(ca1.clone()).await,
        "the first pair was never served"
    );

    // A half-written update (the new certificate, the old key): refused, the old pair served.
    std::fs::write(dir.path().join("tls.crt"), &leaf2.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get(&client(&[&ca1], false), &server.url).await.is_ok());

    write(&leaf2);
    assert!(
        until_served(ca2).await,
        "the rewritten pair was never served"
    );
    assert!(get(&client(&[&ca1], false), &server.url).await.is_err());
    watcher.abort();
    server.stop().await;
}

#[tokio::test]
async fn connections_are_capped_and_a_silent_handshake_is_cut() {
    let cert = Arc::new(ServingCert::new());
    let (ca, leaf) = ca_and_leaf();
    load(&cert, &leaf);
    let handshake = Duration::from_millis(500);
    let server = Server::start(cert, 1, handshake).await;
    // One connection that never says hello holds the only slot ...
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quick = reqwest::Client::builder()
        .tls_backend_preconfigured({
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
                roots.add(der.unwrap()).unwrap();
            }
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth()
        })
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(
        get(&quick, &server.url).await.is_err(),
        "a second connection was served beside the first"
    );
    // ... until the handshake timeout closes it.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = silent.shutdown().await;
    assert_eq!(
        get(&client(&[&ca], false), &server.url).await,
        Ok((200, http::Version::HTTP_11))
    );
    server.stop().await;
}

/// [`follow_secret`] on a mocked API: the initial list loads the pair, a watch event swaps it,
/// a broken pair in a later event keeps it.
#[tokio::test]
async fn the_secret_watch_loads_and_swaps_the_pair() {
    use base64::Engine;
    use http::{Request, Response};
    use kube::client::Body;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = |pair: &IssuedPair, rv: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "soci-webhook-tls", "namespace": "soci-system", "resourceVersion": rv },
            "data": { "tls.crt": b64(&pair.cert_pem), "tls.key": b64(&pair.key_pem) },
        })
    };
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let cert = Arc::new(ServingCert::new());
    let (_, leaf1) = ca_and_leaf();
    let (_, leaf2) = ca_and_leaf();
    let follower = tokio::spawn(follow_secret(
        kube::Api::namespaced(client, "soci-system"),
        "soci-webhook-tls".into(),
        cert.clone(),
    ));
    let served_der = |cert: &ServingCert| cert.current().map(|k| k.cert[0].to_vec());
    let der_of = |pair: &IssuedPair| {
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };

    let (request, send) = handle.next_request().await.unwrap();
    let uri = request.uri().to_string();
    assert!(
        uri.contains("fieldSelector=metadata.name%3Dsoci-webhook-tls"),
        "{uri}"
    );
    assert!(!uri.contains("watch=true"), "{uri}");
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "SecretList", "metadata": { "resourceVersion": "10" },
        "items": [secret(&leaf1, "10")],
    });
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&list).unwrap(),
    )));

    let (request, send) = handle.next_request().await.unwrap();
    assert!(request.uri().to_string().contains("watch=true"));
    let mut broken = secret(&leaf2, "12");
    broken["data"]["tls.key"] = b64(&leaf1.key_pem).into();
    let events = [
        serde_json::json!({ "type": "MODIFIED", "object": secret(&leaf2, "11") }),
        serde_json::json!({ "type": "MODIFIED", "object": broken }),
    ];
    let mut body = Vec::new();
    for event in events {
        body.extend(serde_json::to_vec(&event).unwrap());
        body.push(b'\n');
    }
    send.send_response(Response::new(Body::from(body)));

    // The watcher asks again once that body ends: by then both events were handled.
    let (request, _hold) = handle.next_request().await.unwrap();
    assert!(request.uri().to_string().contains("watch=true"));
    assert_eq!(served_der(&cert), Some(der_of(&leaf2)));
    follower.abort();
}
