//! The cleanup against a real registry (Debian's `docker-registry`, deletes enabled; see
//! `soci_testkit::registry`): images converted the way a worker does, the status recorded the
//! way the controller does, then [`clean_up`]. Lives next to the cleanup (not in
//! `operator/tests/`) because it drives crate-private steps and shares its helpers with the
//! settled-recheck tests.

use super::*;
use crate::api::{ImageStatus, SociIndexStatus, TargetSpec};
use crate::controller::plan::{BuildSettings, TargetCheck};
use crate::controller::registry_check::{resolve, target_binding};
use crate::conversion_engine::{ConvertSettings, convert};
use crate::image::registry_io::{RegistrySink, RegistrySource};
use crate::registry::auth::CredentialStore;
use crate::registry::{RegistryClient, RegistryOptions, RegistryRef, RetryPolicy};
use soci_format::conversion_plan::{IndexVersion, PlatformSelection};
use soci_format::layer_indexer::IndexerLimits;
use soci_testkit::oracle::TempDir;
use soci_testkit::registry::{LocalRegistry, PulledImage, RegistryHttp, registry_or_skip};
use soci_testkit::{Scale, corpus};
use std::sync::Arc;

fn client_with(credentials: CredentialStore, retry: RetryPolicy) -> Arc<RegistryClient> {
    Arc::new(
        RegistryClient::new(RegistryOptions {
            credentials,
            insecure_registries: vec![],
            ca_bundle: None,
            retry,
        })
        .unwrap(),
    )
}

pub(crate) fn client() -> Arc<RegistryClient> {
    client_with(CredentialStore::default(), RetryPolicy::default())
}

/// A client with `credentials` that gives up on the first failure (no retries).
pub(crate) fn no_retry_client(credentials: CredentialStore) -> Arc<RegistryClient> {
    let retry = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    client_with(credentials, retry)
}

/// The conversion settings the registry tests build with: every platform, small spans.
pub(crate) fn convert_settings() -> ConvertSettings {
    ConvertSettings {
        platforms: PlatformSelection::All,
        span_size: 1 << 16,
        min_layer_size: 0,
        index_version: IndexVersion::V2,
        jobs: 2,
        limits: IndexerLimits::default(),
        optimize_xattrs: false,
        progress: crate::progress::Progress::lines(),
    }
}

/// A fresh local registry with the `multiarch-all-platforms` case pushed to `repo:tag`, and
/// a client for it; `None` when `registry_or_skip(test)` says to skip.
pub(crate) fn registry_with_case(
    test: &str,
    repo: &str,
    tag: &str,
) -> Option<(LocalRegistry, RegistryHttp)> {
    registry_or_skip(test)?;
    let registry = LocalRegistry::start().unwrap();
    let http = registry.client();
    push_case(&http, "multiarch-all-platforms", repo, tag);
    Some((registry, http))
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn push_case(http: &RegistryHttp, name: &str, repo: &str, tag: &str) {
    let tmp = TempDir::new("soci-cleanup-case").unwrap();
    let case = corpus(Scale::Quick)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap();
    let layout = tmp.path().join("src");
    (case.write)(&layout).unwrap();
    http.push_layout(&layout, repo, tag).unwrap();
}

/// Converts `source` to `target` as a worker would, then records the image's status as the
/// controller would after verifying the binding.
pub(crate) async fn convert_and_record(
    client: &Arc<RegistryClient>,
    source: &str,
    target_spec: Option<&TargetSpec>,
) -> ImageStatus {
    let resolved = resolve(client, source, target_spec, "app").await.unwrap();
    let settings = convert_settings();
    let src = RegistryRef::parse(&resolved.source).unwrap();
    let dst = RegistryRef::parse(&resolved.target).unwrap();
    convert(
        &RegistrySource::new(client.clone(), src),
        RegistrySink::new(client.clone(), dst).unwrap(),
        &settings,
    )
    .await
    .unwrap();
    let build = BuildSettings {
        platforms: vec![],
        min_layer_size: 0,
        span_size: 1 << 16,
        index_version: crate::api::IndexVersion::V2,
    };
    let Ok(TargetCheck::Bound { digest, platforms }) =
        target_binding(client, &resolved, &build).await
    else {
        panic!("the converted target is not bound");
    };
    assert!(platforms.iter().all(|p| p.soci_index_digest.is_some()));
    ImageStatus {
        name: "app".into(),
        image: source.into(),
        source_digest: Some(resolved.digest),
        target: Some(resolved.target),
        target_digest: Some(digest),
        platforms,
        ..Default::default()
    }
}

/// Every blob of the image is still there, byte for byte, and its manifests still pull.
fn assert_intact(http: &RegistryHttp, repo: &str, before: &PulledImage) {
    for (digest, bytes) in &before.blobs {
        // Manifests pushed as manifests are not served as blobs by distribution.
        let got = match http.get_blob(repo, digest).unwrap() {
            Some(b) => Some(b),
            None => http.get_manifest(repo, digest).unwrap().map(|(b, _)| b),
        };
        assert_eq!(
            got.as_ref(),
            Some(bytes),
            "{digest} of {repo} changed or went missing"
        );
    }
    let root = before.root["digest"].as_str().unwrap();
    let again = http.pull_graph(repo, root).unwrap();
    assert_eq!(again.blobs, before.blobs);
}

/// The zTOC digests of the SOCI index manifests the status records.
fn ztocs_of(http: &RegistryHttp, repo: &str, image: &ImageStatus) -> Vec<String> {
    let mut out = vec![];
    for p in &image.platforms {
        let digest = p.soci_index_digest.as_deref().unwrap();
        let (bytes, _) = http.get_manifest(repo, digest).unwrap().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for l in doc["layers"].as_array().unwrap() {
            out.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    assert!(!out.is_empty());
    out
}

fn status_of(image: ImageStatus) -> SociIndexStatus {
    SociIndexStatus {
        images: vec![image],
        ..Default::default()
    }
}

/// A test's registry (see [`registry_with_case`], the case at `repo:v1`), a client and a
/// runtime, and the source `<registry>/<repo>:v1`.
struct Case {
    _registry: LocalRegistry,
    http: RegistryHttp,
    client: Arc<RegistryClient>,
    rt: tokio::runtime::Runtime,
    source: String,
}

/// The [`Case`] of `test`; `None` when the test is skipped.
fn case(test: &str, repo: &str) -> Option<Case> {
    let (registry, http) = registry_with_case(test, repo, "v1")?;
    let source = format!("{}/{repo}:v1", registry.host());
    Some(Case {
        _registry: registry,
        http,
        client: client(),
        rt: runtime(),
        source,
    })
}

impl Case {
    /// Converts the source (in place with `in_place`) and records the image's status.
    fn convert(&self, in_place: bool) -> ImageStatus {
        let target = in_place.then(|| TargetSpec {
            in_place: Some(true),
            ..Default::default()
        });
        self.rt.block_on(convert_and_record(
            &self.client,
            &self.source,
            target.as_ref(),
        ))
    }

    /// Cleans up after `image` with what `protected` names kept.
    fn clean_up(&self, image: ImageStatus, protected: &Protected) -> Done {
        self.rt
            .block_on(clean_up(&self.client, Some(&status_of(image)), protected))
            .unwrap()
    }
}

#[test]
fn a_suffix_target_is_removed_and_the_source_stays_intact() {
    let Some(case) = case(
        "a_suffix_target_is_removed_and_the_source_stays_intact",
        "del",
    ) else {
        return;
    };
    let http = &case.http;
    let source_before = http.pull_graph("del", "v1").unwrap();
    let image = case.convert(false);
    let target_digest = image.target_digest.clone().unwrap();
    let ztocs = ztocs_of(http, "del", &image);
    assert!(http.get_manifest("del", "v1-soci").unwrap().is_some());

    let done = case.clean_up(image.clone(), &Protected::default());
    assert!(done.left.is_empty(), "{:?}", done.left);
    assert!(done.deleted >= 2 + ztocs.len(), "{done:?}");
    assert!(http.get_manifest("del", "v1-soci").unwrap().is_none());
    assert!(http.get_manifest("del", &target_digest).unwrap().is_none());
    for p in &image.platforms {
        let d = p.soci_index_digest.as_deref().unwrap();
        assert!(http.get_manifest("del", d).unwrap().is_none(), "{d}");
    }
    for z in &ztocs {
        assert!(http.get_blob("del", z).unwrap().is_none(), "zTOC {z}");
    }
    assert_intact(http, "del", &source_before);
    assert_eq!(
        http.pull_graph("del", "v1").unwrap().root,
        source_before.root
    );

    // Once more: everything is already gone, which is fine.
    let again = case.clean_up(image, &Protected::default());
    assert_eq!(again.deleted, 0, "{again:?}");
}

#[test]
fn an_in_place_target_gets_its_original_back() {
    let Some(case) = case("an_in_place_target_gets_its_original_back", "inp") else {
        return;
    };
    let http = &case.http;
    let source_before = http.pull_graph("inp", "v1").unwrap();
    let image = case.convert(true);
    let target_digest = image.target_digest.clone().unwrap();
    assert_ne!(
        http.pull_graph("inp", "v1").unwrap().root,
        source_before.root
    );
    let ztocs = ztocs_of(http, "inp", &image);

    let done = case.clean_up(image.clone(), &Protected::default());
    assert_eq!(done.restored.len(), 1, "{done:?}");
    assert_eq!(
        http.pull_graph("inp", "v1").unwrap().root,
        source_before.root,
        "the tag holds the original again"
    );
    assert_intact(http, "inp", &source_before);
    assert!(http.get_manifest("inp", &target_digest).unwrap().is_none());
    for z in &ztocs {
        assert!(http.get_blob("inp", z).unwrap().is_none(), "zTOC {z}");
    }
}

#[test]
fn an_in_place_tag_the_user_moved_is_left_alone() {
    let Some(case) = case("an_in_place_tag_the_user_moved_is_left_alone", "mv") else {
        return;
    };
    let http = &case.http;
    let image = case.convert(true);
    // The user pushes another image under the tag.
    push_case(http, "docker-moby-modes-whiteouts", "mv", "v1");
    let users = http.pull_graph("mv", "v1").unwrap();

    let done = case.clean_up(image, &Protected::default());
    assert!(done.restored.is_empty(), "{done:?}");
    assert!(
        done.left.iter().any(|l| l.contains("pushed again")),
        "{done:?}"
    );
    assert_eq!(http.pull_graph("mv", "v1").unwrap().root, users.root);
    assert_intact(http, "mv", &users);
}

#[test]
fn a_target_another_tag_also_names_survives_for_that_tag() {
    let Some(case) = case(
        "a_target_another_tag_also_names_survives_for_that_tag",
        "shr",
    ) else {
        return;
    };
    let http = &case.http;
    let image = case.convert(false);
    // Someone tags our target under a second name (the same conversion elsewhere does too).
    let (bytes, media_type) = http.get_manifest("shr", "v1-soci").unwrap().unwrap();
    http.push_manifest("shr", "copy", &media_type, &bytes)
        .unwrap();
    let copy = http.pull_graph("shr", "copy").unwrap();

    let done = case.clean_up(image, &Protected::default());
    // distribution 2.x removes a tag only with its manifest: ours stays, reported.
    assert_eq!(done.deleted, 0, "{done:?}");
    assert!(
        done.left
            .iter()
            .any(|l| l.contains("cannot remove a tag alone")),
        "{done:?}"
    );
    assert_intact(http, "shr", &copy);
}

#[test]
fn a_target_another_sociindex_deploys_is_not_deleted() {
    let Some(case) = case("a_target_another_sociindex_deploys_is_not_deleted", "two") else {
        return;
    };
    let http = &case.http;
    // Two SociIndexes in two namespaces build the same thing into the same target: the one
    // deleted with deletionPolicy Delete must not take the other's deploy reference with it.
    let image = case.convert(false);
    let deploy = format!(
        "{}@{}",
        image.target.as_deref().unwrap(),
        image.target_digest.as_deref().unwrap()
    );
    let before = http.pull_graph("two", "v1-soci").unwrap();
    let protected = Protected::new([("team-b/web".to_string(), deploy.as_str())]);
    let done = case.clean_up(image, &protected);
    assert_eq!(done.deleted, 0, "{done:?}");
    assert!(
        done.left.iter().any(|l| l.contains("team-b/web")),
        "{done:?}"
    );
    assert_intact(http, "two", &before);
    assert_eq!(http.pull_graph("two", "v1-soci").unwrap().root, before.root);
}

#[test]
fn a_cleanup_against_a_registry_that_is_gone_fails_transiently_then_gives_up() {
    // A registry that was there and is gone: its port now refuses connections (loopback).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = no_retry_client(CredentialStore::default());
    let digest = format!("sha256:{}", "a".repeat(64));
    let status = status_of(ImageStatus {
        name: "app".into(),
        image: format!("127.0.0.1:{port}/app:v1"),
        target: Some(format!("127.0.0.1:{port}/app:v1-soci")),
        target_digest: Some(digest.clone()),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let error = runtime()
        .block_on(clean_up(&client, Some(&status), &Protected::default()))
        .map_err(CleanupError::Registry)
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
    let timeout = std::time::Duration::from_secs(600);
    assert!(
        matches!(
            after_failure(Some(t(0)), t(30), &error, 1, timeout),
            AfterFailure::Retry(_)
        ),
        "a refused connection is worth a retry: {error}"
    );
    let AfterFailure::GiveUp { reason, why } =
        after_failure(Some(t(0)), t(600), &error, 9, timeout)
    else {
        panic!("still retrying past the timeout");
    };
    assert_eq!(reason, CLEANUP_TIMED_OUT);
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    let owned = owned_targets(Some(&status));
    assert!(left_behind(&owned).contains(&digest));
}
