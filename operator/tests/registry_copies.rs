//! Copies of a converted image made by the tools users use, and what `inspect` and `verify`
//! say about them:
//!
//! * `crane copy` (go-containerregistry, built by `e2e/tools.sh`) keeps the image index byte for
//!   byte: same digest, verify passes, nothing to note.
//! * Debian's `skopeo copy --all` (1.9.3) rewrites the index without `artifactType` on the SOCI
//!   index entries (new digest). The soci-snapshotter finds v2 indexes through the image
//!   manifest's `com.amazon.soci.index-digest` annotation, which survives, so `verify` passes;
//!   `inspect` and `verify` note the lost `artifactType` and what it means.
//!
//! Skips without docker-registry (unless `SOCI_REGISTRY_REQUIRED=1`) and without skopeo or crane
//! (unless `SOCI_COMPAT_REQUIRED=1`).

mod common;

use common::{describe, run_ours};
use serde_json::Value;
use soci_format::oci::{self, Index, sha256_digest};
use soci_testkit::oracle::TempDir;
use soci_testkit::registry::{LocalRegistry, registry_or_skip};
use soci_testkit::{Scale, corpus, upstream_soci};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool_or_skip(test: &str, name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Some(p.clone());
    }
    if std::env::var("SOCI_COMPAT_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{test}: {name} not found ({candidates:?}) and SOCI_COMPAT_REQUIRED=1");
    }
    eprintln!("SKIPPED {test}: {name} not found");
    None
}

fn crane() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("CRANE_BIN") {
        c.push(PathBuf::from(p));
    }
    if let Some(dir) = upstream_soci().as_deref().and_then(Path::parent) {
        c.push(dir.join("crane"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        c.push(PathBuf::from(h).join(".cache/soci-operator/tools/bin/crane"));
    }
    c
}

fn run_tool(bin: &Path, args: &[&str], tmp: &Path) {
    let out = Command::new(bin)
        .args(args)
        .env("HOME", tmp)
        .env("DOCKER_CONFIG", tmp.join("docker"))
        .output()
        .expect("run tool");
    assert!(out.status.success(), "{bin:?} {args:?}: {}", describe(&out));
}

fn verify_json(reference: &str) -> Value {
    let out = run_ours(&["verify", "--deep", "-o", "json", reference]);
    assert!(
        out.status.success(),
        "verify {reference}: {}",
        describe(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn crane_and_skopeo_copies_tell_the_truth() {
    if registry_or_skip("crane_and_skopeo_copies_tell_the_truth").is_none() {
        return;
    }
    let test = "crane_and_skopeo_copies_tell_the_truth";
    let Some(skopeo) = tool_or_skip(test, "skopeo", &[PathBuf::from("/usr/bin/skopeo")]) else {
        return;
    };
    let Some(crane) = tool_or_skip(test, "crane", &crane()) else {
        return;
    };
    let registry = LocalRegistry::start().expect("registry");
    let client = registry.client();
    let tmp = TempDir::new("soci-copies").unwrap();
    let case = corpus(Scale::Quick)
        .into_iter()
        .find(|c| c.name == "multiarch-all-platforms")
        .unwrap();
    let layout = tmp.path().join("src");
    (case.write)(&layout).unwrap();
    client.push_layout(&layout, "copies/src", "v1").unwrap();
    let host = registry.host();
    let converted = format!("{host}/copies/src:soci");
    let mut args = vec!["convert", &*format!("{host}/copies/src:v1"), &*converted]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(case.convert_args.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ours(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let (original, _) = client.get_manifest("copies/src", "soci").unwrap().unwrap();
    let report = verify_json(&converted);
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n.as_str().unwrap().contains("artifactType"))
    );

    // crane: the same bytes, the same digest.
    let crane_ref = format!("{host}/copies/crane:v1");
    run_tool(
        &crane,
        &["copy", "--insecure", &converted, &crane_ref],
        tmp.path(),
    );
    let (copied, _) = client.get_manifest("copies/crane", "v1").unwrap().unwrap();
    assert_eq!(sha256_digest(&copied), sha256_digest(&original));
    let report = verify_json(&crane_ref);
    assert_eq!(report["digest"], sha256_digest(&original).as_str());
    let inspect = run_ours(&["inspect", &crane_ref]);
    assert!(inspect.status.success());
    assert!(!String::from_utf8_lossy(&inspect.stdout).contains("artifactType"));

    // skopeo 1.9.3: artifactType dropped from the SOCI entries, new index digest; the image
    // manifests (with their annotation) are copied byte for byte, so lazy loading still works.
    let skopeo_ref = format!("{host}/copies/skopeo:v1");
    run_tool(
        &skopeo,
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{converted}"),
            &format!("docker://{skopeo_ref}"),
        ],
        tmp.path(),
    );
    let (copied, _) = client.get_manifest("copies/skopeo", "v1").unwrap().unwrap();
    let index = Index::from_json(&copied).unwrap();
    let soci_entries: Vec<_> = index
        .manifests
        .as_ref()
        .unwrap()
        .iter()
        .filter(|d| {
            d.annotation(oci::ANNOTATION_IMAGE_MANIFEST_DIGEST)
                .is_some()
        })
        .collect();
    assert!(!soci_entries.is_empty());
    if soci_entries.iter().any(|d| !d.artifact_type.is_empty()) {
        eprintln!(
            "note: this skopeo keeps artifactType; the lost-artifactType path is not exercised"
        );
    } else {
        assert_ne!(sha256_digest(&copied), sha256_digest(&original));
    }
    let report = verify_json(&skopeo_ref);
    assert_eq!(report["ok"], true, "{report}");
    let lost = soci_entries.iter().any(|d| d.artifact_type.is_empty());
    let notes = report["notes"].to_string();
    assert_eq!(notes.contains("has no artifactType"), lost, "{report}");
    let inspect = run_ours(&["inspect", &skopeo_ref]);
    assert!(inspect.status.success(), "{}", describe(&inspect));
    let text = String::from_utf8_lossy(&inspect.stdout);
    if lost {
        assert!(text.contains("has no artifactType"), "{text}");
        assert!(text.contains("annotation"), "{text}");
    }
    assert!(text.contains("v2"), "{text}");
}
