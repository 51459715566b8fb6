//! `soci-operator verify` against a real registry (Debian's `docker-registry`, see
//! `soci_testkit::registry`): it passes on images converted by us and by upstream
//! `soci convert --standalone`, and fails, naming platform, layer and cause, on damaged targets:
//! a dangling annotation, non-canonical index JSON, a wrong config media type, a zTOC with a
//! zero-length span (upstream's output for `gzip-sync-flush-start`), a wrong span digest (only
//! `--deep` sees it), zTOC bytes replaced in storage, a deleted zTOC.
//!
//! Skips without the registry binary unless `SOCI_REGISTRY_REQUIRED=1`; the upstream parts skip
//! without upstream `soci` unless `SOCI_COMPAT_REQUIRED=1`.

mod common;

use common::{describe, run_ours};
use serde_json::Value;
use soci_format::oci::{self, Manifest, sha256_digest};
use soci_testkit::oracle::{TempDir, upstream_convert};
use soci_testkit::registry::{LocalRegistry, RegistryHttp, registry_or_skip, write_layout};
use soci_testkit::{CorpusCase, Scale, corpus, upstream_soci};
use std::path::{Path, PathBuf};

fn case(name: &str) -> CorpusCase {
    corpus(Scale::Quick)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("corpus case {name}"))
}

fn upstream_or_skip(test: &str) -> Option<PathBuf> {
    match upstream_soci() {
        Some(p) => Some(p),
        None if std::env::var("SOCI_COMPAT_REQUIRED").is_ok_and(|v| v == "1") => {
            panic!("{test}: upstream soci not found and SOCI_COMPAT_REQUIRED=1")
        }
        None => {
            eprintln!("SKIPPED {test} (upstream part): upstream soci not found");
            None
        }
    }
}

/// Pushes a corpus case's image as `repo:v1`.
fn push_case(client: &RegistryHttp, tmp: &Path, case: &CorpusCase, repo: &str) {
    let src = tmp.join(format!("src-{}", repo.replace('/', "-")));
    (case.write)(&src).expect("write layout");
    client.push_layout(&src, repo, "v1").expect("push layout");
}

/// `verify` must pass (plain and `--deep`); returns the deep JSON report.
fn assert_verifies(reference: &str) -> Value {
    let out = run_ours(&["verify", reference]);
    assert!(
        out.status.success(),
        "verify {reference}: {}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("VERIFIED"));
    let out = run_ours(&["verify", "--deep", "-o", "json", reference]);
    assert!(
        out.status.success(),
        "verify --deep {reference}: {}",
        describe(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let spans: u64 = report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spansChecked"].as_u64().unwrap())
        .sum();
    assert!(spans > 0, "deep verification re-hashed no span: {report}");
    report
}

/// `verify` must fail with exit 1 and a message containing every `needles`.
fn assert_fails(args: &[&str], needles: &[&str]) -> String {
    let out = run_ours(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for n in needles {
        assert!(text.contains(n), "{args:?}: expected {n:?} in\n{text}");
    }
    text
}

#[test]
fn verify_passes_on_our_and_upstream_conversions() {
    if registry_or_skip("verify_passes_on_our_and_upstream_conversions").is_none() {
        return;
    }
    let registry = LocalRegistry::start().expect("registry");
    let client = registry.client();
    let tmp = TempDir::new("soci-verify-ok").unwrap();
    let soci = upstream_or_skip("verify_passes_on_our_and_upstream_conversions");
    for (i, name) in [
        "docker-moby-modes-whiteouts",
        "gzip-many-flushes",
        "multiarch-all-platforms",
        "uncompressed-oci-tar",
    ]
    .iter()
    .enumerate()
    {
        let Some(c) = corpus(Scale::Quick).into_iter().find(|c| c.name == *name) else {
            continue;
        };
        let repo = format!("ok/{i}");
        push_case(&client, tmp.path(), &c, &repo);
        let src = format!("{}/{repo}:v1", registry.host());
        let dst = format!("{}/{repo}:soci", registry.host());
        // Before conversion nothing is bound: verify fails and says so.
        assert_fails(&["verify", &src], &["no image manifest is bound"]);

        let mut args = vec!["convert", src.as_str(), dst.as_str()];
        args.extend(c.convert_args.iter().map(String::as_str));
        let out = run_ours(&args);
        assert!(out.status.success(), "{name}: {}", describe(&out));
        assert_verifies(&dst);

        if let Some(soci) = &soci {
            let pulled = client.pull_graph(&repo, "v1").unwrap();
            let dir = tmp.path().join(format!("pulled-{i}"));
            write_layout(&dir, &pulled).unwrap();
            let theirs = tmp.path().join(format!("upstream-{i}"));
            upstream_convert(soci, &dir, &theirs, &c.convert_args).expect("upstream convert");
            client.push_layout(&theirs, &repo, "upstream").unwrap();
            assert_verifies(&format!("{}/{repo}:upstream", registry.host()));
        }
    }

    // Upstream's zTOC for a gzip stream that starts with a sync flush has a zero-length span,
    // which the snapshotter refuses; ours has not.
    let c = case("gzip-sync-flush-start");
    push_case(&client, tmp.path(), &c, "flush");
    let src = format!("{}/flush:v1", registry.host());
    let dst = format!("{}/flush:soci", registry.host());
    let mut args = vec!["convert", src.as_str(), dst.as_str()];
    args.extend(c.convert_args.iter().map(String::as_str));
    assert!(run_ours(&args).status.success());
    assert_verifies(&dst);
    if let Some(soci) = &soci {
        let pulled = client.pull_graph("flush", "v1").unwrap();
        let dir = tmp.path().join("pulled-flush");
        write_layout(&dir, &pulled).unwrap();
        let theirs = tmp.path().join("upstream-flush");
        upstream_convert(soci, &dir, &theirs, &c.convert_args).expect("upstream convert");
        client.push_layout(&theirs, "flush", "upstream").unwrap();
        let layer = pulled_layer_digest(&client, "flush", "v1");
        let text = assert_fails(
            &["verify", &format!("{}/flush:upstream", registry.host())],
            &["span offsets are non-monotonic", "linux/amd64", &layer],
        );
        assert!(text.contains("NOT VERIFIED"), "{text}");
    }
}

/// The first layer digest of the single-platform image `repo:reference`.
fn pulled_layer_digest(client: &RegistryHttp, repo: &str, reference: &str) -> String {
    let (bytes, _) = client.get_manifest(repo, reference).unwrap().unwrap();
    let m = Manifest::from_json(&bytes).unwrap();
    m.layers.unwrap()[0].digest.clone()
}

/// The converted image's single platform: (image manifest, SOCI index) as bytes.
fn converted_parts(client: &RegistryHttp, repo: &str, tag: &str) -> (Manifest, Vec<u8>) {
    let (bytes, _) = client.get_manifest(repo, tag).unwrap().unwrap();
    let index = oci::Index::from_json(&bytes).unwrap();
    let manifests = index.manifests.unwrap();
    let image = manifests
        .iter()
        .find(|d| d.artifact_type.is_empty())
        .unwrap();
    let (mbytes, _) = client.get_manifest(repo, &image.digest).unwrap().unwrap();
    let manifest = Manifest::from_json(&mbytes).unwrap();
    let soci = manifest
        .annotations
        .as_ref()
        .unwrap()
        .get(oci::ANNOTATION_SOCI_INDEX_DIGEST)
        .unwrap()
        .clone();
    let (sbytes, _) = client.get_manifest(repo, &soci).unwrap().unwrap();
    (manifest, sbytes)
}

/// Pushes `index_bytes` as a SOCI index and a copy of `manifest` bound to it (or to
/// `digest_override`), tagged `tag`; returns the reference.
fn rebind(
    registry: &LocalRegistry,
    repo: &str,
    manifest: &Manifest,
    index_bytes: &[u8],
    digest_override: Option<&str>,
    tag: &str,
) -> String {
    let client = registry.client();
    let index_digest = sha256_digest(index_bytes);
    client
        .push_manifest(
            repo,
            &index_digest,
            oci::MEDIA_TYPE_OCI_MANIFEST,
            index_bytes,
        )
        .unwrap();
    let mut m = manifest.clone();
    m.annotations.get_or_insert_default().insert(
        oci::ANNOTATION_SOCI_INDEX_DIGEST.into(),
        digest_override.unwrap_or(&index_digest).into(),
    );
    let bytes = m.to_go_json();
    client
        .push_manifest(repo, tag, oci::MEDIA_TYPE_OCI_MANIFEST, &bytes)
        .unwrap();
    format!("{}/{repo}:{tag}", registry.host())
}

#[test]
fn verify_fails_with_the_reason_on_damaged_targets() {
    if registry_or_skip("verify_fails_with_the_reason_on_damaged_targets").is_none() {
        return;
    }
    let registry = LocalRegistry::start().expect("registry");
    let client = registry.client();
    let tmp = TempDir::new("soci-verify-bad").unwrap();
    let c = case("gzip-many-flushes");
    push_case(&client, tmp.path(), &c, "bad");
    let src = format!("{}/bad:v1", registry.host());
    let dst = format!("{}/bad:soci", registry.host());
    let mut args = vec!["convert", src.as_str(), dst.as_str()];
    args.extend(c.convert_args.iter().map(String::as_str));
    assert!(run_ours(&args).status.success());
    let (manifest, index_bytes) = converted_parts(&client, "bad", "soci");
    let index = Manifest::from_json(&index_bytes).unwrap();
    let ztoc_desc = index.layers.as_ref().unwrap()[0].clone();
    let layer = ztoc_desc
        .annotation(oci::ANNOTATION_IMAGE_LAYER_DIGEST)
        .unwrap()
        .to_string();

    // The helper itself keeps a valid binding valid.
    let good = rebind(&registry, "bad", &manifest, &index_bytes, None, "good");
    assert_verifies(&good);

    // The annotation names an index the repository lacks.
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = rebind(
        &registry,
        "bad",
        &manifest,
        &index_bytes,
        Some(&missing),
        "dangling",
    );
    assert_fails(&["verify", &r], &["does not have", &missing]);

    // Same index, pretty-printed: not Go's canonical bytes.
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&index_bytes).unwrap()).unwrap();
    let r = rebind(&registry, "bad", &manifest, &pretty, None, "pretty");
    assert_fails(&["verify", &r], &["not in Go canonical JSON form"]);

    // A config media type the snapshotter does not know.
    let mut wrong = index.clone();
    wrong.config.media_type = oci::MEDIA_TYPE_OCI_EMPTY_JSON.into();
    let r = rebind(
        &registry,
        "bad",
        &manifest,
        &wrong.to_go_json(),
        None,
        "cfg",
    );
    assert_fails(&["verify", &r], &["unknown index version"]);

    // One span digest changed inside an otherwise valid zTOC: only --deep sees it.
    let ztoc = client.get_blob("bad", &ztoc_desc.digest).unwrap().unwrap();
    let parsed = soci_format::ztoc_reader::read_ztoc(&ztoc).unwrap();
    assert!(
        parsed.compression.span_digests.len() > 1,
        "want several spans"
    );
    let target = parsed.compression.span_digests[1].as_bytes().to_vec();
    let at = ztoc
        .windows(target.len())
        .position(|w| w == target)
        .unwrap();
    let mut edited = ztoc.clone();
    let hex = at + "sha256:".len();
    edited[hex] = if edited[hex] == b'0' { b'1' } else { b'0' };
    let edited_digest = client.push_blob("bad", &edited).unwrap();
    let mut spans = index.clone();
    spans.layers.as_mut().unwrap()[0].digest = edited_digest.clone();
    let r = rebind(
        &registry,
        "bad",
        &manifest,
        &spans.to_go_json(),
        None,
        "span",
    );
    let out = run_ours(&["verify", &r]);
    assert!(out.status.success(), "shallow: {}", describe(&out));
    assert_fails(
        &["verify", "--deep", &r],
        &[
            "span digests do not match",
            "span 1 ",
            &layer,
            &edited_digest,
        ],
    );

    // zTOC bytes replaced in the registry's storage: they no longer match the digest.
    let path = registry.blob_data_path(&ztoc_desc.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert_fails(
        &["verify", &dst],
        &["content has digest", &layer, &ztoc_desc.digest],
    );

    // A deleted zTOC.
    std::fs::remove_file(&path).unwrap();
    let text = assert_fails(&["verify", &dst, "-o", "json"], &["missing"]);
    let report: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["platforms"][0]["problems"][0]["layer"],
        layer.as_str()
    );
}
