//! `soci-operator convert` against a real registry: Debian's `docker-registry` (distribution
//! 2.8.2), started by each test on a free loopback port (see `soci_testkit::registry`).
//!
//! * `corpus_matches_upstream_through_registry`: every Quick corpus case is pushed to the
//!   registry, pulled back as a layout for upstream `soci convert --standalone`, and converted
//!   registry→registry by us; the tag we push must name the same image index digest as
//!   upstream's output, and the image pulled back must be byte-identical to upstream's.
//! * basic auth (right, wrong and missing credentials), cross-registry copies and the
//!   `oci:`→registry / registry→`oci:` paths, a corrupt source blob (no tag written), the tag
//!   written last (read from the registry's own access log), `--dry-run`, exit code 3.
//!
//! Environment: without `/usr/bin/docker-registry` (or `SOCI_REGISTRY_BIN`) the tests print
//! `SKIPPED` and pass, unless `SOCI_REGISTRY_REQUIRED=1`. The corpus test also needs upstream
//! `soci` (`SOCI_BIN`, see `compat_upstream.rs`; skipped unless `SOCI_COMPAT_REQUIRED=1`).

mod common;

use common::{describe, run_ours, say};
use serde_json::Value;
use soci_testkit::oracle::{TempDir, upstream_convert};
use soci_testkit::registry::{LocalRegistry, RegistryHttp, registry_or_skip, write_layout};
use soci_testkit::{
    CorpusCase, Expect, Scale, check_sync_flush_divergence, compare_layouts, corpus, upstream_soci,
};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The digest of the image index an upstream output layout holds.
fn top_digest(layout: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The image a corpus case's layout holds, in its own repository of `registry`.
fn push_case(
    client: &RegistryHttp,
    tmp: &Path,
    case: &CorpusCase,
    repo: &str,
) -> Result<(), String> {
    let src = tmp.join("src");
    (case.write)(&src).map_err(|e| format!("writing the layout: {e}"))?;
    client
        .push_layout(&src, repo, "v1")
        .map_err(|e| format!("pushing the layout: {e}"))?;
    Ok(())
}

fn run_case(
    registry: &LocalRegistry,
    soci: &Path,
    case: &CorpusCase,
    index: usize,
) -> Result<String, String> {
    let tmp = TempDir::new(&format!("soci-reg-{}", case.name)).map_err(|e| e.to_string())?;
    let client = registry.client();
    let src_repo = format!("corpus/{index}-src");
    let dst_repo = format!("corpus/{index}-dst");
    push_case(&client, tmp.path(), case, &src_repo)?;

    // Upstream converts the image exactly as the registry serves it.
    let pulled = client
        .pull_graph(&src_repo, "v1")
        .map_err(|e| format!("pulling the source back: {e}"))?;
    let pulled_dir = tmp.path().join("pulled");
    write_layout(&pulled_dir, &pulled).map_err(|e| e.to_string())?;
    let theirs = tmp.path().join("upstream");
    let up = upstream_convert(soci, &pulled_dir, &theirs, &case.convert_args);

    let src_ref = format!("{}/{src_repo}:v1", registry.host());
    let dst_ref = format!("{}/{dst_repo}:soci", registry.host());
    let mut args = vec!["convert", src_ref.as_str(), dst_ref.as_str()];
    args.extend(case.convert_args.iter().map(String::as_str));
    let me = run_ours(&args);
    let tag = client
        .get_manifest(&dst_repo, "soci")
        .map_err(|e| e.to_string())?;
    let at = format!(" [in {}]", tmp.path().display());

    match (up, case.expect) {
        (Err(_), _) => {
            if me.status.code() != Some(1) {
                return Err(format!(
                    "upstream fails on this image; ours must exit 1{at}\n{}",
                    describe(&me)
                ));
            }
            if tag.is_some() {
                return Err(format!("ours failed but wrote the tag{at}"));
            }
            Ok("both failed, no tag written".into())
        }
        (Ok(()), Expect::UpstreamFails) => {
            Err(format!("corpus expects upstream to fail, it succeeded{at}"))
        }
        (Ok(()), expect) => {
            if !me.status.success() {
                return Err(format!("ours failed{at}\n{}", describe(&me)));
            }
            let converted = client
                .pull_graph(&dst_repo, "soci")
                .map_err(|e| format!("pulling the result back: {e}{at}"))?;
            let ours_dir = tmp.path().join("ours");
            write_layout(&ours_dir, &converted).map_err(|e| e.to_string())?;
            if expect == Expect::Identical {
                let want = top_digest(&theirs);
                let got = converted.root["digest"].as_str().unwrap_or("");
                if got != want {
                    let detail = compare_layouts(&ours_dir, &theirs)
                        .err()
                        .unwrap_or_default();
                    return Err(format!(
                        "tag points to {got}, upstream made {want}{at}\n{detail}"
                    ));
                }
                compare_layouts(&ours_dir, &theirs).map_err(|e| format!("{e}{at}"))?;
                Ok(format!("identical {want}"))
            } else {
                let n = check_sync_flush_divergence(&ours_dir, &theirs, None)
                    .map_err(|e| format!("{e}{at}"))?;
                Ok(format!(
                    "sync-flush class: {n} zTOC(s) differ, structure identical"
                ))
            }
        }
    }
}

#[test]
fn corpus_matches_upstream_through_registry() {
    if registry_or_skip("corpus_matches_upstream_through_registry").is_none() {
        return;
    }
    let Some(soci) = upstream_soci() else {
        if std::env::var("SOCI_COMPAT_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("upstream soci not built and SOCI_COMPAT_REQUIRED=1");
        }
        say("SKIPPED corpus_matches_upstream_through_registry: upstream soci not built");
        return;
    };
    let registry = LocalRegistry::start().expect("start registry");
    let cases = corpus(Scale::Quick);
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<String, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let t = Instant::now();
                    let r = run_case(&registry, &soci, case, i);
                    say(&format!(
                        "{} {:<40} {:>6.2}s  {}",
                        if r.is_ok() { "ok  " } else { "FAIL" },
                        case.name,
                        t.elapsed().as_secs_f64(),
                        match &r {
                            Ok(m) => m.as_str(),
                            Err(e) => e.lines().next().unwrap_or(""),
                        }
                    ));
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(i, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("--- {}: {e}", cases[*i].name))
        })
        .collect();
    let identical = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|m| m.starts_with("identical")))
        .count();
    say(&format!(
        "registry corpus: {} cases, {identical} identical to upstream, {} failed",
        results.len(),
        failures.len()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(identical >= 40, "too few cases compared ({identical})");
}

/// A small two-layer image above the default-sized threshold we pass (`--min-layer-size 0`).
/// `inspect REF -o json`, which must succeed.
fn inspect_json(reference: &str) -> Value {
    run_ok_json(&["inspect", reference, "-o", "json"])
}

/// The entry of `platform` in an `inspect` report.
fn platform_of(report: &Value, platform: &str) -> Value {
    report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == platform)
        .unwrap_or_else(|| panic!("no {platform} in {report}"))
        .clone()
}

/// The corpus case most tests convert: small, two layers.
const SAMPLE_CASE: &str = "docker-moby-modes-whiteouts";

/// The Quick corpus case NAME.
fn case_named(name: &str) -> CorpusCase {
    corpus(Scale::Quick)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no corpus case {name}"))
}

fn sample_case() -> CorpusCase {
    case_named(SAMPLE_CASE)
}

/// A registry with corpus case CASE pushed to `REPO:v1`, the temporary directory it was
/// written in and the source reference `<registry>/REPO:v1`.
struct Pushed {
    registry: LocalRegistry,
    tmp: TempDir,
    src: String,
}

/// [`Pushed`] for `test` (the temporary directory named after `tmp`); `None` when
/// `registry_or_skip(test)` says to skip.
fn pushed(test: &str, tmp: &str, case: &str, repo: &str) -> Option<Pushed> {
    registry_or_skip(test)?;
    let registry = LocalRegistry::start().expect("registry");
    let tmp = TempDir::new(tmp).unwrap();
    push_case(&registry.client(), tmp.path(), &case_named(case), repo).unwrap();
    let src = format!("{}/{repo}:v1", registry.host());
    Some(Pushed { registry, tmp, src })
}

/// Runs ours with `args`, which must succeed.
fn run_ok(args: &[&str]) -> std::process::Output {
    let out = run_ours(args);
    assert!(out.status.success(), "{}", describe(&out));
    out
}

/// [`run_ok`], its stdout read as JSON.
fn run_ok_json(args: &[&str]) -> Value {
    serde_json::from_slice(&run_ok(args).stdout).unwrap()
}

#[test]
fn basic_auth_right_wrong_and_missing_credentials() {
    if registry_or_skip("basic_auth_right_wrong_and_missing_credentials").is_none() {
        return;
    }
    let registry = LocalRegistry::start_with_basic_auth("tester", "s3cret").expect("registry");
    let tmp = TempDir::new("soci-reg-auth").unwrap();
    push_case(&registry.client(), tmp.path(), &sample_case(), "auth/src").unwrap();
    let src = format!("{}/auth/src:v1", registry.host());
    let dst = format!("{}/auth/dst:soci", registry.host());

    let good = registry.docker_config(None).unwrap();
    let good = good.to_str().unwrap();
    run_ok(&[
        "convert",
        &src,
        &dst,
        "--min-layer-size",
        "0",
        "--registry-config",
        good,
    ]);
    assert!(
        registry
            .client()
            .get_manifest("auth/dst", "soci")
            .unwrap()
            .is_some()
    );

    let wrong = registry.docker_config(Some("nope")).unwrap();
    let started = Instant::now();
    let dst2 = format!("{}/auth/dst2:soci", registry.host());
    let out = run_ours(&[
        "convert",
        &src,
        &dst2,
        "--min-layer-size",
        "0",
        "--registry-config",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        stderr.contains("auth/src"),
        "message names the image: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wrong credentials must fail fast"
    );
    assert!(!stderr.contains("retrying"), "401 is not retried: {stderr}");

    let out = run_ours(&["convert", &src, &dst2, "--min-layer-size", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));
    assert!(
        registry
            .client()
            .get_manifest("auth/dst2", "soci")
            .unwrap()
            .is_none()
    );
}

#[test]
fn layout_and_cross_registry_paths_agree_with_oci_to_oci() {
    if registry_or_skip("layout_and_cross_registry_paths_agree_with_oci_to_oci").is_none() {
        return;
    }
    let source_registry = LocalRegistry::start().expect("registry");
    let target_registry = LocalRegistry::start_with_basic_auth("u", "p").expect("registry");
    let tmp = TempDir::new("soci-reg-paths").unwrap();
    let case = case_named("multiarch-all-platforms");
    push_case(&source_registry.client(), tmp.path(), &case, "app").unwrap();
    // The reference result: oci: → oci: of the image as the registry holds it.
    let pulled = source_registry.client().pull_graph("app", "v1").unwrap();
    write_layout(&tmp.path().join("pulled"), &pulled).unwrap();
    let pulled_ref = format!("oci:{}", tmp.path().join("pulled").display());
    let reference = tmp.path().join("reference");
    run_ok(&[
        "convert",
        &pulled_ref,
        &format!("oci:{}", reference.display()),
        "--min-layer-size",
        "0",
        "--all-platforms",
    ]);
    let want = top_digest(&reference);
    let config = target_registry.docker_config(None).unwrap();
    let config = config.to_str().unwrap();
    let common = [
        "--min-layer-size",
        "0",
        "--all-platforms",
        "--registry-config",
        config,
    ];

    // registry → another registry: blobs are copied (no mount across registries).
    let src = format!("{}/app:v1", source_registry.host());
    let dst = format!("{}/copy:soci", target_registry.host());
    let mut args = vec!["convert", src.as_str(), dst.as_str(), "-o", "json"];
    args.extend(common);
    let report = run_ok_json(&args);
    assert_eq!(report["imageIndex"]["digest"], want.as_str());
    assert_eq!(report["transfer"]["linked"], 0);
    let copied = target_registry.client().pull_graph("copy", "soci").unwrap();
    assert_eq!(copied.root["digest"], want.as_str());
    write_layout(&tmp.path().join("copied"), &copied).unwrap();
    compare_layouts(&tmp.path().join("copied"), &reference).unwrap();

    // Run again: everything is already there, only the tag is written again.
    let report = run_ok_json(&args);
    assert_eq!(report["transfer"]["written"], 0, "{report}");

    // oci: → registry.
    let dst = format!("{}/from-layout:soci", target_registry.host());
    let mut args = vec!["convert", pulled_ref.as_str(), dst.as_str()];
    args.extend(common);
    run_ok(&args);
    let pushed = target_registry
        .client()
        .pull_graph("from-layout", "soci")
        .unwrap();
    assert_eq!(pushed.root["digest"], want.as_str());

    // registry → oci: (streamed into the layout, each blob verified).
    let out_dir = tmp.path().join("from-registry");
    let dst = format!("oci:{}", out_dir.display());
    let mut args = vec!["convert", src.as_str(), dst.as_str()];
    args.extend(common);
    run_ok(&args);
    assert_eq!(top_digest(&out_dir), want);
    compare_layouts(&out_dir, &reference).unwrap();

    // Same registry, other repository: layers and configs are mounted, not uploaded.
    let dst = format!("{}/mounted:soci", source_registry.host());
    let report = run_ok_json(&[
        "convert",
        &src,
        &dst,
        "--min-layer-size",
        "0",
        "--all-platforms",
        "-o",
        "json",
    ]);
    assert!(
        report["transfer"]["linked"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(report["imageIndex"]["digest"], want.as_str());
}

#[test]
fn corrupt_source_blob_fails_permanently_without_tag() {
    let Some(Pushed {
        registry,
        tmp: _tmp,
        src,
    }) = pushed(
        "corrupt_source_blob_fails_permanently_without_tag",
        "soci-reg-corrupt",
        SAMPLE_CASE,
        "bad",
    )
    else {
        return;
    };
    let manifest = registry
        .client()
        .get_manifest("bad", "v1")
        .unwrap()
        .unwrap()
        .0;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Flip one byte in the registry's stored copy: it still serves it under the old digest.
    let path = registry.blob_data_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let dst = format!("{}/bad-out:soci", registry.host());
    let out = run_ours(&["convert", &src, &dst, "--min-layer-size", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&layer), "names the layer: {stderr}");
    assert!(stderr.contains("bad:v1"), "names the image: {stderr}");
    assert!(stderr.contains("digest"), "names the cause: {stderr}");
    assert!(
        registry
            .client()
            .get_manifest("bad-out", "soci")
            .unwrap()
            .is_none()
    );
}

#[test]
fn tag_is_written_last() {
    let Some(Pushed {
        registry,
        tmp: _tmp,
        src,
    }) = pushed(
        "tag_is_written_last",
        "soci-reg-order",
        "multiarch-all-platforms",
        "order/src",
    )
    else {
        return;
    };
    let before = registry.log().lines().count();
    let dst = format!("{}/order/dst:soci", registry.host());
    let report = run_ok_json(&[
        "convert",
        &src,
        &dst,
        "--min-layer-size",
        "0",
        "--all-platforms",
        "-o",
        "json",
    ]);
    // The registry's access log, in arrival order: every write request of this run.
    let log = registry.log();
    let writes: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| {
            (l.contains("\"PUT /v2/") || l.contains("\"POST /v2/") || l.contains("\"PATCH /v2/"))
                && l.contains("/v2/order/dst/")
        })
        .collect();
    assert!(writes.len() > 3, "writes seen: {writes:?}");
    let last = writes.last().unwrap();
    assert!(
        last.contains("\"PUT /v2/order/dst/manifests/soci "),
        "last write: {last}"
    );
    let tag_writes = writes
        .iter()
        .filter(|l| l.contains("/manifests/soci "))
        .count();
    assert_eq!(tag_writes, 1);
    // The index itself was not pushed before the tag (nothing may point at it early).
    let index = report["imageIndex"]["digest"].as_str().unwrap();
    let manifests_before: Vec<&&str> = writes[..writes.len() - 1]
        .iter()
        .filter(|l| l.contains("/manifests/"))
        .collect();
    assert!(!manifests_before.is_empty());
    assert!(
        manifests_before
            .iter()
            .all(|l| l.contains("/manifests/sha256:")),
        "only digests before the tag: {manifests_before:?}"
    );
    let _ = index;
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let Some(Pushed { registry, tmp, src }) = pushed(
        "dry_run_prints_the_plan_and_writes_nothing",
        "soci-reg-dry",
        SAMPLE_CASE,
        "dry",
    ) else {
        return;
    };
    let dst = format!("{}/dry-out:soci", registry.host());
    let before = registry.log().lines().count();
    let plan = run_ok_json(&[
        "convert",
        &src,
        &dst,
        "--dry-run",
        "--min-layer-size",
        "1000",
        "-o",
        "json",
    ]);
    let layers = plan["platforms"][0]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert!(layers.iter().any(|l| l["action"] == "index"), "{plan}");
    assert!(plan["platforms"][0]["platform"] == "linux/amd64", "{plan}");
    let log = registry.log();
    let wrote = log
        .lines()
        .skip(before)
        .any(|l| l.contains("\"PUT ") || l.contains("\"POST ") || l.contains("\"PATCH "));
    assert!(!wrote, "dry run wrote to the registry:\n{log}");
    assert!(
        registry
            .client()
            .get_manifest("dry-out", "soci")
            .unwrap()
            .is_none()
    );

    let out_dir = tmp.path().join("never");
    let dst = format!("oci:{}", out_dir.display());
    let out = run_ok(&[
        "convert",
        &src,
        &dst,
        "--dry-run",
        "--min-layer-size",
        "1000",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("platform linux/amd64"), "{text}");
    assert!(text.contains("  index sha256:"), "{text}");
    assert!(text.contains("dry run: nothing was written"), "{text}");
    // A plan with nothing to index fails like upstream, and still writes nothing.
    let out = run_ours(&[
        "convert",
        &src,
        &dst,
        "--dry-run",
        "--min-layer-size",
        "100000000",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ztocs created"));
    assert!(!out_dir.exists());
}

#[test]
fn unreachable_registry_is_transient_exit_3() {
    // No registry needed: a closed loopback port refuses connections (a transient fault).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = format!("127.0.0.1:{port}/nothing:v1");
    let out = run_ours(&[
        "convert",
        &src,
        "oci:/nonexistent/never",
        "--max-retries",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("transient"), "{stderr}");
    assert!(stderr.contains("retrying"), "retried once: {stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let out = run_ours(&["convert", "oci:/x", "oci:/y", "--span-size", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = run_ours(&["convert", "Not A Ref", "oci:/y"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = run_ours(&["convert", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let help = run_ours(&["convert", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("3  transient failure"));
}

#[test]
fn inspect_reports_binding_per_platform_and_layer() {
    let Some(Pushed {
        registry,
        tmp: _tmp,
        src,
    }) = pushed(
        "inspect_reports_binding_per_platform_and_layer",
        "soci-reg-inspect",
        "multiarch-all-platforms",
        "insp",
    )
    else {
        return;
    };
    let dst = format!("{}/insp:soci", registry.host());

    // Before conversion: nothing is bound.
    let report = inspect_json(&src);
    let platforms = report["platforms"].as_array().unwrap();
    assert_eq!(
        platforms.len(),
        3,
        "attestations are not platforms: {report}"
    );
    assert!(platforms.iter().all(|p| p["binding"] == "none"), "{report}");

    run_ok(&[
        "convert",
        &src,
        &dst,
        "--min-layer-size",
        "0",
        "--platform",
        "linux/amd64",
    ]);
    let report = inspect_json(&dst);
    let amd64 = platform_of(&report, "linux/amd64");
    assert_eq!(amd64["binding"], "v2", "{report}");
    assert_eq!(amd64["layersIndexed"], 2, "{report}");
    assert_eq!(amd64["bytesIndexedPercent"], 100.0);
    let arm = platform_of(&report, "linux/arm64/v8");
    assert_eq!(arm["binding"], "none");
    assert_eq!(arm["layers"][0]["status"], "too-small", "{report}");
    let out = run_ours(&["inspect", &dst, "-o", "json", "--min-layer-size", "0"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&Value> = report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["layers"].as_array().unwrap())
        .map(|l| &l["status"])
        .collect();
    assert!(statuses.contains(&&Value::from("not-indexed")), "{report}");

    // Delete one zTOC from the registry: inspect reports it missing.
    let ztoc = amd64["layers"][0]["ztoc"].as_str().unwrap();
    std::fs::remove_file(registry.blob_data_path(ztoc)).unwrap();
    let out = run_ok(&["inspect", &dst]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing-ztoc"), "{text}");
    assert!(text.contains("linux/amd64"), "{text}");
}

#[test]
fn large_layer_is_uploaded_in_chunks() {
    if registry_or_skip("large_layer_is_uploaded_in_chunks").is_none() {
        return;
    }
    let registry = LocalRegistry::start().expect("registry");
    let tmp = TempDir::new("soci-reg-chunks").unwrap();
    let case = case_named("default-flags-10mib-layer");
    let src = tmp.path().join("src");
    (case.write)(&src).unwrap();
    let reference = tmp.path().join("reference");
    run_ok(&[
        "convert",
        &format!("oci:{}", src.display()),
        &format!("oci:{}", reference.display()),
    ]);

    let before = registry.log().lines().count();
    let dst = format!("{}/chunks:soci", registry.host());
    run_ok(&["convert", &format!("oci:{}", src.display()), &dst]);
    let log = registry.log();
    let patches = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("\"PATCH /v2/chunks/blobs/uploads/"))
        .count();
    assert!(patches >= 1, "the >8 MiB layer goes up in PATCHes:\n{log}");
    let pulled = registry.client().pull_graph("chunks", "soci").unwrap();
    assert_eq!(pulled.root["digest"], top_digest(&reference).as_str());
}

/// v1 indexes on a registry without the referrers API (docker-registry 2.8): each is listed
/// under its image manifest's referrers tag (`sha256-<hex>`), where `inspect` and `verify` (and
/// the snapshotter, with v1 enabled) find it; converting again lists nothing twice.
#[test]
fn v1_indexes_are_listed_under_the_referrers_tag() {
    let Some(Pushed {
        registry,
        tmp: _tmp,
        src,
    }) = pushed(
        "v1_indexes_are_listed_under_the_referrers_tag",
        "soci-reg-v1",
        "multiarch-all-platforms",
        "v1img",
    )
    else {
        return;
    };
    let client = registry.client();
    let dst = format!("{}/v1img:v1-soci", registry.host());
    let convert = || {
        let out = run_ours(&[
            "convert",
            &src,
            &dst,
            "--index-version",
            "v1",
            "--min-layer-size",
            "0",
            "--platform",
            "linux/amd64",
            "-o",
            "json",
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let result = convert();
    let soci_indexes: Vec<String> = result["sociIndexes"]
        .as_array()
        .unwrap_or_else(|| panic!("no sociIndexes in {result}"))
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(soci_indexes.len(), 1, "{result}");

    // The amd64 manifest of the (unchanged) image, and its referrers tag.
    let report = inspect_json(&dst);
    let amd64 = platform_of(&report, "linux/amd64");
    assert_eq!(amd64["binding"], "v1", "{report}");
    assert_eq!(amd64["sociIndex"], soci_indexes[0].as_str(), "{report}");
    assert_eq!(amd64["layersIndexed"], 2, "{report}");
    let manifest = amd64["manifest"].as_str().unwrap();
    let tag = manifest.replace(':', "-");
    let listed = || {
        let (bytes, _) = client
            .get_manifest("v1img", &tag)
            .unwrap()
            .unwrap_or_else(|| panic!("no referrers tag {tag}"));
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    let index = listed();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], soci_indexes[0].as_str());
    assert_eq!(
        entries[0]["artifactType"],
        "application/vnd.amazon.soci.index.v1+json"
    );
    // Other platforms got no index and no tag.
    let arm = platform_of(&report, "linux/arm64/v8");
    assert_eq!(arm["binding"], "none", "{report}");

    let verified = run_ok_json(&["verify", &dst, "-o", "json"]);
    let bound: Vec<&Value> = verified["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["binding"] == "bound-v1")
        .collect();
    assert_eq!(bound.len(), 1, "{verified}");

    convert();
    assert_eq!(listed()["manifests"].as_array().unwrap().len(), 1);
}
