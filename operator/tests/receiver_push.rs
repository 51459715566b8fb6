//! The push-event receiver against a real registry: Debian's `docker-registry` (distribution
//! 2.8) configured with a `notifications` endpoint pointing at our receiver on loopback, with
//! the bearer token in its headers. A small image pushed by tag must arrive as a `PushEvent`
//! naming the registry, repository and tag; its blob pushes must not; the same manifest pushed
//! again by digest arrives without a tag.
//!
//! Skips without docker-registry (unless `SOCI_REGISTRY_REQUIRED=1`).

use soci_operator::receiver::{self, PushEvent, ReceiverMetrics, ReceiverOptions};
use soci_testkit::TempDir;
use soci_testkit::registry::{LocalRegistry, RegistryHttp, registry_or_skip};
use std::time::Duration;
use tokio::sync::mpsc;

const TOKEN: &str = "push-token-0123456789";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn next_event(events: &mut mpsc::Receiver<PushEvent>, what: &str) -> PushEvent {
    tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .unwrap_or_else(|_| panic!("no push event for {what} within 15 s"))
        .expect("the receiver is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_notifications_reach_the_receiver() {
    if registry_or_skip("registry_notifications_reach_the_receiver").is_none() {
        return;
    }
    let dir = TempDir::new("soci-receiver-it").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ReceiverOptions::new(addr, "/hook/registry", &token_file);
    let (tx, mut events) = mpsc::channel(16);
    let metrics = ReceiverMetrics::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(receiver::serve(
        listener,
        options,
        tx,
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let config = format!(
        "notifications:\n  endpoints:\n    - name: soci\n      url: http://{addr}/hook/registry\n      headers:\n        Authorization: [Bearer {TOKEN}]\n      timeout: 1s\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull, mount, delete]\n"
    );
    let registry = tokio::task::spawn_blocking(move || LocalRegistry::start_with_config(&config))
        .await
        .unwrap()
        .expect("docker-registry starts with a notifications endpoint");
    let host = registry.host();

    // A small image: a config and a layer blob, and an OCI manifest pushed by tag.
    // The blocking client lives and dies on blocking threads (its runtime must not be dropped
    // in async code).
    let push_host = host.clone();
    let (manifest, digest) = tokio::task::spawn_blocking(move || {
        let client = RegistryHttp::new(&push_host, None);
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = b"not really a tar, the registry does not look";
        let config_digest = client.push_blob("team/app", config).unwrap();
        let layer_digest = client.push_blob("team/app", layer).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}]
        }))
        .unwrap();
        client.push_manifest("team/app", "v1", OCI_MANIFEST, &manifest).unwrap();
        let digest = soci_testkit::layout::sha256_digest(&manifest);
        (manifest, digest)
    })
    .await
    .unwrap();

    let event = next_event(&mut events, "the push by tag").await;
    assert_eq!(
        event,
        PushEvent {
            registry: host.clone(),
            repository: "team/app".into(),
            tag: Some("v1".into()),
            digest: Some(digest.clone()),
        },
        "the first event forwarded is the manifest's (the blob pushes are ignored)"
    );
    assert!(receiver::names_pushed(
        &event,
        &host,
        "team/app",
        Some("v1")
    ));
    assert!(!receiver::names_pushed(
        &event,
        &host,
        "team/app",
        Some("v2")
    ));

    // The same manifest by digest: a push that moves no tag.
    let push_host = host.clone();
    tokio::task::spawn_blocking(move || {
        RegistryHttp::new(&push_host, None)
            .push_manifest("team/app", &digest, OCI_MANIFEST, &manifest)
            .unwrap()
    })
    .await
    .unwrap();
    let by_digest = next_event(&mut events, "the push by digest").await;
    assert_eq!(by_digest.tag, None, "{by_digest:?}");
    assert_eq!(by_digest.digest, event.digest);
    assert!(!receiver::names_pushed(
        &by_digest,
        &host,
        "team/app",
        Some("v1")
    ));
    assert!(receiver::names_pushed(&by_digest, &host, "team/app", None));

    // Nothing else was forwarded; the registry's requests were all authorized.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events.try_recv().is_err(), "an unexpected event");
    let outcome = |o: &str| metrics.requests.with_label_values(&[o]).get();
    assert_eq!(metrics.events.get(), 2);
    assert_eq!(
        outcome("unauthorized") + outcome("bad_request") + outcome("unavailable"),
        0,
        "{}",
        registry.log()
    );
    assert!(outcome("accepted") >= 2);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    drop(registry);
}
