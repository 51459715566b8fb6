//! The controller's full check ([`resolve`], then [`target_binding`] with its `verify` of the
//! zTOCs) against a hostile registry (`soci_testkit::hostile`, loopback): what each bad answer
//! becomes for the plan (a reason and a class), in bounded time, and which requests it cost.
//! The ignored `benchmark_*` test drives 32 such checks at once and prints the peak RSS.

use super::*;
use crate::controller::plan::FailureClass;
use crate::registry::auth::CredentialStore;
use crate::registry::hostile_tests::{
    api_requests, client, client_with, fast_policy, registry, within,
};
use soci_format::oci::{self, Descriptor, Index, Manifest};
use soci_testkit::hostile::{HostileServer, Reply, Request};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(15);

/// A source image and its bound target (`app:v1`, `app:v1-soci`), whose SOCI index names one
/// zTOC; how the zTOC blob is answered is the test's.
#[derive(Clone)]
struct BoundImage {
    source: Vec<u8>,
    target: Vec<u8>,
    index: Vec<u8>,
    ztoc: Descriptor,
}

fn json(bytes: &[u8]) -> Reply {
    Reply::status(200)
        .header("Content-Type", oci::MEDIA_TYPE_OCI_MANIFEST)
        .header("Docker-Content-Digest", oci::sha256_digest(bytes))
        .body(bytes.to_vec())
}

/// A registry answering `reply(body)` for the tag `v1` and for `body`'s digest, 404 elsewhere.
fn serving_v1(
    body: Vec<u8>,
    reply: impl Fn(&[u8]) -> Reply + Send + Sync + 'static,
) -> HostileServer {
    let digest = oci::sha256_digest(&body);
    registry(move |req| {
        if req.path_only().ends_with("/manifests/v1") || req.path.contains(&digest) {
            reply(&body)
        } else {
            Reply::status(404)
        }
    })
}

impl BoundImage {
    /// `ztoc_size` and `ztoc_digest` as the SOCI index declares them; `index_digest` the
    /// target's annotation (`None`: the real one).
    fn new(ztoc_digest: &str, ztoc_size: i64, index_digest: Option<&str>) -> Self {
        let config_bytes = br#"{"architecture":"amd64","os":"linux"}"#;
        let config = Descriptor::new(
            oci::MEDIA_TYPE_OCI_CONFIG,
            &oci::sha256_digest(config_bytes),
            config_bytes.len() as i64,
        );
        let layer = Descriptor::new(
            oci::MEDIA_TYPE_OCI_LAYER_GZIP,
            &oci::sha256_digest(b"layer"),
            20 << 20,
        );
        let manifest = |annotations: Option<BTreeMap<String, String>>| Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            config: config.clone(),
            layers: Some(vec![layer.clone()]),
            annotations,
            ..Manifest::default()
        };
        let mut ztoc = Descriptor::new(oci::SOCI_ZTOC_MEDIA_TYPE, ztoc_digest, ztoc_size);
        ztoc.annotations = Some(
            [(
                oci::ANNOTATION_IMAGE_LAYER_DIGEST.to_string(),
                layer.digest.clone(),
            )]
            .into(),
        );
        let index = Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            config: Descriptor::new(
                oci::SOCI_INDEX_ARTIFACT_TYPE_V2,
                oci::SOCI_EMPTY_CONFIG_DIGEST,
                oci::SOCI_EMPTY_CONFIG_SIZE,
            ),
            layers: Some(vec![ztoc.clone()]),
            ..Manifest::default()
        }
        .to_go_json();
        let annotation = index_digest
            .map(str::to_string)
            .unwrap_or_else(|| oci::sha256_digest(&index));
        let target = manifest(Some(
            [(oci::ANNOTATION_SOCI_INDEX_DIGEST.to_string(), annotation)].into(),
        ));
        Self {
            source: manifest(None).to_go_json(),
            target: target.to_go_json(),
            index,
            ztoc,
        }
    }

    /// The answer to `req`: the manifests by tag or digest, the zTOC's HEAD, and `ztoc` for
    /// its GET.
    fn answer(&self, req: &Request, ztoc: impl Fn() -> Reply) -> Reply {
        let path = req.path_only();
        let Some(reference) = path.strip_prefix("/v2/app/manifests/") else {
            if path == format!("/v2/app/blobs/{}", self.ztoc.digest) {
                return if req.method == "HEAD" {
                    Reply::status(200)
                } else {
                    ztoc()
                };
            }
            return Reply::status(404);
        };
        for bytes in [&self.source, &self.target, &self.index] {
            let tag = match bytes {
                b if b == &self.source => "v1",
                b if b == &self.target => "v1-soci",
                _ => "",
            };
            if reference == tag || reference == oci::sha256_digest(bytes) {
                return json(bytes);
            }
        }
        Reply::status(404)
    }
}

fn settings() -> BuildSettings {
    BuildSettings {
        platforms: vec![],
        min_layer_size: 0,
        span_size: 4 << 20,
        index_version: IndexVersion::V2,
    }
}

/// `resolve` then `target_binding`, as the reconcile does for one image.
async fn full_check(
    client: &Arc<RegistryClient>,
    server: &HostileServer,
) -> Result<TargetCheck, Failure> {
    let image = format!("{}/app:v1", server.host());
    let resolved = resolve(client, &image, None, "app").await?;
    target_binding(client, &resolved, &settings()).await
}

fn not_bound(check: Result<TargetCheck, Failure>, text: &str) {
    match check {
        Ok(TargetCheck::NotBound { message }) => assert!(message.contains(text), "{message}"),
        other => panic!("expected NotBound with {text:?}, got {other:?}"),
    }
}

fn failed(check: Result<TargetCheck, Failure>, class: FailureClass, why: Reason, text: &str) {
    match check {
        Err(f) => {
            assert_eq!((f.class, f.reason), (class, why), "{}", f.message);
            assert!(f.message.contains(text), "{}", f.message);
        }
        other => panic!("expected a {why} failure, got {other:?}"),
    }
}

fn ztoc_gets(server: &HostileServer, image: &BoundImage) -> usize {
    let path = format!("/v2/app/blobs/{}", image.ztoc.digest);
    api_requests(server)
        .iter()
        .filter(|r| r.method == "GET" && r.path_only() == path)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ztoc_declaring_100_mib_is_refused_before_its_download() {
    let image = BoundImage::new(&oci::sha256_digest(b"ztoc"), 100 << 20, None);
    let served = image.clone();
    let server = registry(move |req| served.answer(req, || Reply::endless(vec![0u8; 64 << 10])));
    let (check, _) = within(LIMIT, full_check(&client(), &server)).await;
    not_bound(
        check,
        "a zTOC must have 1 to 50331648 bytes (not downloaded)",
    );
    assert_eq!(ztoc_gets(&server, &image), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ztoc_longer_than_its_descriptor_stops_at_its_size() {
    let image = BoundImage::new(&oci::sha256_digest(b"ztoc"), 1 << 20, None);
    let served = image.clone();
    let server = registry(move |req| served.answer(req, || Reply::endless(vec![0u8; 64 << 10])));
    let (check, _) = within(LIMIT, full_check(&client(), &server)).await;
    not_bound(check, "more than the descriptor's 1048576 bytes");
    assert!(server.bytes_sent() < 16 << 20, "{}", server.bytes_sent());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ztoc_whose_bytes_are_not_its_digest_is_not_bound() {
    let image = BoundImage::new(&oci::sha256_digest(b"ztoc"), 4, None);
    let served = image.clone();
    let server = registry(move |req| served.answer(req, || Reply::status(200).body("evil")));
    let (check, _) = within(LIMIT, full_check(&client(), &server)).await;
    not_bound(check, "content has digest");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dripped_ztoc_is_a_transient_failure_in_bounded_time() {
    let image = BoundImage::new(&oci::sha256_digest(b"ztoc"), 100_000, None);
    let served = image.clone();
    let server = registry(move |req| {
        served.answer(req, || {
            Reply::status(200).drip(vec![0u8; 100_000], Duration::from_millis(50))
        })
    });
    let (check, took) = within(LIMIT, full_check(&client(), &server)).await;
    failed(
        check,
        FailureClass::Transient,
        Reason::RegistryUnavailable,
        "too slow",
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn digests_in_manifests_that_are_paths_are_refused_before_any_request() {
    // The SOCI index annotation, then the zTOC descriptor's digest.
    let traversal = "sha256:../../../../v2/other/blobs/x";
    for image in [
        BoundImage::new(&oci::sha256_digest(b"ztoc"), 10, Some(traversal)),
        BoundImage::new(traversal, 10, None),
    ] {
        let served = image.clone();
        let server = registry(move |req| served.answer(req, || Reply::status(200)));
        let (check, _) = within(LIMIT, full_check(&client(), &server)).await;
        failed(
            check,
            FailureClass::Permanent,
            Reason::BuildFailed,
            "is not a valid digest",
        );
        let paths: Vec<String> = api_requests(&server).into_iter().map(|r| r.path).collect();
        assert!(
            paths
                .iter()
                .all(|p| !p.contains("..") && !p.contains("other")),
            "{paths:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_of_a_thousand_platforms_is_refused_without_fetching_them() {
    let manifests: Vec<Descriptor> = (0..1000)
        .map(|i| {
            let mut d = Descriptor::new(
                oci::MEDIA_TYPE_OCI_MANIFEST,
                &oci::sha256_digest(format!("m{i}").as_bytes()),
                100,
            );
            d.platform = Some(soci_format::oci::Platform {
                os: "linux".into(),
                architecture: format!("arch{i}"),
                ..Default::default()
            });
            d
        })
        .collect();
    let index = Index {
        schema_version: 2,
        media_type: oci::MEDIA_TYPE_OCI_INDEX.into(),
        manifests: Some(manifests),
        ..Index::default()
    }
    .to_go_json();
    let server = serving_v1(index, |body| {
        Reply::status(200)
            .header("Content-Type", oci::MEDIA_TYPE_OCI_INDEX)
            .body(body.to_vec())
    });
    let (check, _) = within(LIMIT, full_check(&client(), &server)).await;
    match check {
        // The target is missing: the source is what the next build would read.
        Ok(TargetCheck::Missing) => {}
        other => panic!("{other:?}"),
    }
    let image = format!("{}/app:v1", server.host());
    let source = RegistrySource::new(client(), RegistryRef::parse(&image).unwrap());
    let (report, _) = within(LIMIT, inspect_with(&source, 0, false)).await;
    let e = report.expect_err("refused");
    assert!(
        format!("{e:#}").contains("1000 image manifests; at most 128"),
        "{e:#}"
    );
    assert!(
        api_requests(&server).len() < 10,
        "{}",
        api_requests(&server).len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_of_two_thousand_layers_is_refused() {
    let layers: Vec<Descriptor> = (0..2000)
        .map(|i| {
            Descriptor::new(
                oci::MEDIA_TYPE_OCI_LAYER_GZIP,
                &oci::sha256_digest(format!("l{i}").as_bytes()),
                100,
            )
        })
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
        config: Descriptor::new(oci::MEDIA_TYPE_OCI_CONFIG, &oci::sha256_digest(b"{}"), 2),
        layers: Some(layers),
        ..Manifest::default()
    }
    .to_go_json();
    let server = serving_v1(manifest, json);
    let image = format!("{}/app:v1", server.host());
    let source = RegistrySource::new(client(), RegistryRef::parse(&image).unwrap());
    let (report, _) = within(LIMIT, inspect_with(&source, 0, false)).await;
    let e = report.expect_err("refused");
    assert!(
        format!("{e:#}").contains("lists 2000 layers; at most 1024 are checked"),
        "{e:#}"
    );
    let (verified, _) = within(LIMIT, crate::verification::verify(&source, false)).await;
    let lines = verified.unwrap().problem_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lists 2000 layers; at most 1024")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_source_manifest_is_a_clear_failure_in_bounded_time() {
    let endless = registry(|_| Reply::endless(vec![b'{'; 64 << 10]));
    let (check, _) = within(LIMIT, full_check(&client(), &endless)).await;
    failed(
        check,
        FailureClass::Permanent,
        Reason::ContentTooLarge,
        "larger than the 4 MiB limit for a manifest or index",
    );
    let drip =
        registry(|_| Reply::status(200).drip(vec![b' '; 10_000], Duration::from_millis(100)));
    let (check, took) = within(LIMIT, full_check(&client(), &drip)).await;
    failed(
        check,
        FailureClass::Transient,
        Reason::RegistryUnavailable,
        "",
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const BENCH_KINDS: [&str; 8] = [
    "endless manifest",
    "declared 1 TiB manifest",
    "3.9 MiB manifest",
    "dripping manifest",
    "endless 40 MiB zTOC",
    "declared 1 GiB zTOC",
    "giant error body",
    "Retry-After 60",
];

fn bench_server(kind: usize) -> HostileServer {
    let image = BoundImage::new(&oci::sha256_digest(b"ztoc"), 40 << 20, None);
    let big = BoundImage::new(&oci::sha256_digest(b"ztoc"), 1 << 30, None);
    let near_limit = Arc::new(vec![b' '; (4 << 20) - 100_000]);
    let giant_error = Arc::new(b"busy ".repeat(800_000));
    registry(move |req| match kind {
        0 => Reply::endless(vec![b'{'; 64 << 10]),
        1 => Reply::status(200).body("{").declared_length(1 << 40),
        2 => Reply::status(200).body(near_limit.as_slice()),
        3 => Reply::status(200).drip(vec![b' '; 100_000], Duration::from_millis(20)),
        4 => image.answer(req, || Reply::endless(vec![7u8; 64 << 10])),
        5 => big.answer(req, || Reply::endless(vec![7u8; 64 << 10])),
        6 => Reply::status(500)
            .body(giant_error.as_slice())
            .declared_length(1 << 40),
        _ => Reply::status(429).header("Retry-After", "60"),
    })
}

const BENCH_SERVERS_ENV: &str = "SOCI_HOSTILE_BENCH_SERVERS";

/// The benchmark's registries, in a process of their own (so their memory is not counted):
/// run by [`benchmark_hostile_full_checks`], which reads the ports from the first line and
/// ends this process by closing its stdin.
#[test]
#[ignore = "started by benchmark_hostile_full_checks"]
fn benchmark_hostile_servers() {
    if std::env::var_os(BENCH_SERVERS_ENV).is_none() {
        return;
    }
    let servers: Vec<HostileServer> = (0..32)
        .map(|i| bench_server(i % BENCH_KINDS.len()))
        .collect();
    let ports: Vec<String> = servers.iter().map(|s| s.port().to_string()).collect();
    println!("PORTS {}", ports.join(" "));
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    let sent: u64 = servers.iter().map(HostileServer::bytes_sent).sum();
    println!("SENT {sent}");
}

/// 32 full checks at once, each against its own hostile registry (in another process):
/// endless manifests, giant declared manifests, manifests of just under 4 MiB, dripping
/// manifests, endless and giant zTOCs, giant error bodies, `Retry-After: 60`. Run alone, so the
/// peak is this test's:
/// `cargo test -p soci-operator --lib -- --ignored --nocapture --exact controller::registry_check::hostile_tests::benchmark_hostile_full_checks`
#[test]
#[ignore = "benchmark: run alone, it prints the peak RSS"]
fn benchmark_hostile_full_checks() {
    use std::io::BufRead;
    let mut servers = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "controller::registry_check::hostile_tests::benchmark_hostile_servers",
        ])
        .env(BENCH_SERVERS_ENV, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(servers.stdout.take().unwrap()).lines();
    let ports: Vec<u16> = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("PORTS ")
                .map(|p| p.split(' ').map(|n| n.parse().unwrap()).collect())
        })
        .expect("the servers' ports");
    // As `main` does.
    crate::registry::limits::return_freed_memory_promptly();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = peak_rss_kib();
    let policy = crate::registry::RetryPolicy {
        request_timeout: Duration::from_secs(2),
        operation_budget: Duration::from_secs(4),
        ..fast_policy()
    };
    let started = std::time::Instant::now();
    let outcomes = runtime.block_on(async {
        let client = client_with(policy, CredentialStore::default());
        let mut tasks = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let client = client.clone();
            let image = format!("127.0.0.1:{port}/app:v1");
            let kind = i % BENCH_KINDS.len();
            tasks.push(tokio::spawn(async move {
                let resolved = match resolve(&client, &image, None, "app").await {
                    Ok(r) => r,
                    Err(f) => return (kind, format!("{}: {}", f.reason, f.message)),
                };
                let outcome = match target_binding(&client, &resolved, &settings()).await {
                    Ok(TargetCheck::NotBound { message }) => format!("NotBound: {message}"),
                    Ok(other) => format!("{other:?}"),
                    Err(f) => format!("{}: {}", f.reason, f.message),
                };
                (kind, outcome)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let wall = started.elapsed();
    let peak = peak_rss_kib();
    drop(servers.stdin.take());
    let sent: u64 = lines
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("SENT ").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let _ = servers.wait();
    for (kind, outcome) in outcomes.iter().take(BENCH_KINDS.len()) {
        let tail: String = outcome
            .chars()
            .rev()
            .take(150)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!("{:<24} {}", BENCH_KINDS[*kind], tail);
    }
    println!(
        "32 hostile full checks: wall {:.1}s, peak RSS {:.1} MiB (before {:.1} MiB), {:.0} MiB sent by the servers",
        wall.as_secs_f64(),
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        sent as f64 / (1 << 20) as f64
    );
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
}
