//! Lazy loading on the proving ground's node (soci-snapshotter v0.16.1, `e2e/proving-ground up
//! --soci`), ported from `e2e/lazy-tests`. Each test converts its own image shape through the
//! operator (its own namespace, operator and seed, so its layers are new to the node), runs a Pod
//! from `status.images[].deploy` and checks, per layer, what the snapshotter did: a layer with a
//! zTOC in the bound SOCI index must be a remote snapshot, FUSE-mounted, never fetched whole;
//! every other layer a local snapshot. Files deep in the big layer are read through the Pod and
//! compared. `soci-operator inspect` / `verify` must agree with the snapshotter, and every
//! `LazyLoadReady=True` must match what the node did. Run through `e2e/rust-tests`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use soci_e2e::node::{self, LayerSeen, NodeImage};
use soci_e2e::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Starts the test, or returns (after `SKIP`) when the proving ground is not up with soci.
macro_rules! start {
    ($name:expr) => {
        match Ctx::start($name).await? {
            None => return Ok(()),
            Some(t) => {
                if let Some(why) = node::lazy_unavailable(&t) {
                    say(format!("SKIP {}: {why}", $name));
                    t.pass();
                    return Ok(());
                }
                t
            }
        }
    };
}

/// What a layout of the image generator holds, and the files the test reads back.
struct Generated {
    layout: PathBuf,
    /// (path in the image, sha256).
    files: Vec<(String, String)>,
}

/// Writes CASE with the test kit's image generator (a seed of its own: layers no node has seen).
fn generate(t: &Ctx, case: &str) -> Result<Generated> {
    let generator = std::env::var_os("SOCI_E2E_LAZY_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| operator_bin().with_file_name("examples/lazy_images"));
    let seed = u64::from_str_radix(&random_suffix(), 16)?;
    let out = t.work.path().join("layouts");
    let listed = run_cmd(
        Command::new(&generator)
            .args(["--busybox", "/bin/busybox", "--seed", &seed.to_string()])
            .arg(&out)
            .arg(case),
    )
    .with_context(|| format!("{} (built by e2e/rust-tests)", generator.display()))?;
    let files = listed
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            (f.next()? == case).then_some(())?;
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    Ok(Generated {
        layout: out.join(case),
        files,
    })
}

/// Pushes a layout as REF; returns REF pinned by digest.
fn push(t: &Ctx, layout: &Path, reference: &str) -> Result<String> {
    t.crane(&["push", &layout.to_string_lossy(), reference])?;
    let digest = t
        .digest(reference)
        .ok_or_else(|| anyhow!("{reference} is not in the registry after the push"))?;
    Ok(format!("{reference}@{digest}"))
}

/// Upstream's conversion of the layout (`soci convert --standalone`), pushed as REF.
fn upstream_conversion(t: &Ctx, layout: &Path, reference: &str) -> Result<String> {
    let dir = t.work.path().join(format!("upstream-{}", random_suffix()));
    let (root, tmp, out) = (dir.join("root"), dir.join("tmp"), dir.join("out"));
    std::fs::create_dir_all(&tmp)?;
    run_cmd(
        Command::new(t.g.tool("soci"))
            .env("TZ", "UTC")
            .env("TMPDIR", &tmp)
            .arg("--root")
            .arg(&root)
            .args(["convert", "--standalone", "--format", "oci-dir"])
            .arg(layout)
            .arg(&out),
    )
    .context("upstream soci convert")?;
    push(t, &out, reference)
}

/// Converts the image through the operator (SociIndex `cases`, one image named CASE) and
/// returns the Ready object; the operator is returned so that it outlives the checks.
async fn converted(t: &Ctx, case: &str, image: &str) -> Result<(Operator, api::SociIndex)> {
    let operator = t.operator()?;
    t.apply_in(
        &t.ns,
        "cases",
        json!({"images": [{"name": case, "image": image}]}),
    )
    .await?;
    let o = t.wait_ready("cases", SECS(900)).await?;
    Ok((operator, o))
}

/// The status of image CASE says LazyLoadReady=True, deploy = target@targetDigest, and per
/// platform (`*`: the only one) indexed/tooSmall/unsupported layer counts.
fn check_counts(
    o: &api::SociIndex,
    case: &str,
    want: &[(&str, (i32, i32, i32))],
) -> Result<String> {
    let image = o
        .status
        .as_ref()
        .and_then(|s| s.images.iter().find(|i| i.name == case))
        .ok_or_else(|| anyhow!("{case}: not in the status"))?;
    let lazy = image.conditions.iter().find(|c| c.type_ == "LazyLoadReady");
    ensure!(
        lazy.is_some_and(|c| c.status == api::ConditionStatus::True),
        "{case}: LazyLoadReady {lazy:?}"
    );
    let deploy = image.deploy.clone().unwrap_or_default();
    let digest = image.target_digest.clone().unwrap_or_default();
    ensure!(
        !digest.is_empty() && deploy.ends_with(&format!("@{digest}")),
        "{case}: deploy {deploy} is not target@targetDigest"
    );
    for (platform, counts) in want {
        let found: Vec<&api::PlatformStatus> = image
            .platforms
            .iter()
            .filter(|p| *platform == "*" || p.platform == *platform)
            .collect();
        ensure!(
            found.len() == 1,
            "{case}: platform {platform} in {:?}",
            image
                .platforms
                .iter()
                .map(|p| &p.platform)
                .collect::<Vec<_>>()
        );
        let p = found[0];
        let have = (p.layers_indexed, p.layers_too_small, p.layers_unsupported);
        ensure!(
            have == *counts,
            "{case} {}: indexed/tooSmall/unsupported {have:?}, want {counts:?}",
            p.platform
        );
    }
    Ok(deploy)
}

/// What the node did with an image, for the claim check.
#[derive(Debug, Clone)]
struct Ran {
    reference: String,
    lazy: usize,
    indexed: usize,
}

impl Ran {
    fn all_lazy(&self) -> bool {
        self.indexed > 0 && self.lazy == self.indexed
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Every indexed layer is mounted lazily.
    Lazy,
    /// The snapshotter refuses the index: indexed layers fall back, and our `verify` refuses it.
    Refused,
}

/// `inspect` lists the same indexed layers as the SOCI index itself.
fn check_inspect(t: &Ctx, reference: &str, image: &NodeImage) -> Result<()> {
    let report: Value = serde_json::from_str(&t.soci(&["inspect", reference, "-o", "json"])?)?;
    let p = report["platforms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest"] == image.manifest.as_str())
        .ok_or_else(|| anyhow!("inspect: no platform with manifest {}", image.manifest))?;
    let mut want: Vec<&str> = image
        .layers
        .iter()
        .filter(|l| l.indexed)
        .map(|l| l.digest.as_str())
        .collect();
    let mut got: Vec<&str> = p["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["status"] == "indexed")
        .filter_map(|l| l["digest"].as_str())
        .collect();
    want.sort();
    got.sort();
    ensure!(
        p["layersIndexed"].as_u64() == Some(want.len() as u64) && got == want,
        "inspect disagrees with the SOCI index: {} indexed, {got:?}, want {want:?}",
        p["layersIndexed"]
    );
    t.note(format!(
        "inspect: {} binding {}, {}/{} layers indexed",
        p["platform"],
        p["binding"],
        p["layersIndexed"],
        p["layers"].as_array().map_or(0, Vec::len)
    ));
    Ok(())
}

/// `verify` accepts what the snapshotter mounts lazily and refuses what it refuses.
fn check_verify(t: &Ctx, reference: &str, image: &NodeImage, expect: Expect) -> Result<()> {
    let out = Command::new(operator_bin())
        .args(["verify", reference, "-o", "json"])
        .output()?;
    let rc = out.status.code().unwrap_or(-1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!({}));
    let p = report["platforms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest"] == image.manifest.as_str())
        .cloned()
        .unwrap_or(json!({}));
    let problems: Vec<&str> = p["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["message"].as_str())
        .collect();
    let indexed = image.layers.iter().filter(|l| l.indexed).count() as u64;
    match expect {
        Expect::Lazy => {
            ensure!(
                rc == 0 && report["ok"] == true && p["ztocsChecked"].as_u64() == Some(indexed),
                "verify disagrees with what the snapshotter accepts: exit {rc}, {p}"
            );
            t.note(format!("verify: ok, {indexed} zTOCs checked"));
        }
        Expect::Refused => {
            ensure!(
                rc == 1 && report["ok"] != true && !problems.is_empty(),
                "verify accepts what the snapshotter refuses: exit {rc}, {p}"
            );
            t.note(format!("verify: refused: {}", problems[0]));
        }
    }
    Ok(())
}

/// Whether one layer did what the index promises, else why not.
fn layer_problem(l: &LayerSeen, expect: Expect) -> Option<String> {
    let d = &l.layer.digest[7..19.min(l.layer.digest.len())];
    let how = l.how();
    if !l.prepared {
        return Some(format!(
            "layer {d}: the snapshotter prepared no snapshot for it (already on the node?)"
        ));
    }
    let pulled = l.local || l.deferred;
    match (l.layer.indexed, expect) {
        (true, Expect::Lazy) if !(l.remote && l.fuse) => Some(format!(
            "layer {d}: indexed but not mounted lazily ({how}, FUSE {})",
            l.fuse
        )),
        (true, Expect::Lazy) if l.full_gets > 0 => {
            Some(format!("layer {d}: indexed but its blob was fetched whole"))
        }
        (true, Expect::Refused) if l.remote || !pulled || l.remote_errors.is_empty() => {
            Some(format!(
                "layer {d}: expected the snapshotter to refuse its zTOC and pull it, saw {how}"
            ))
        }
        (false, _) if l.remote || !pulled => Some(format!("layer {d}: not indexed, yet {how}")),
        _ => None,
    }
}

/// One image on the node: the registry's account of it, `inspect` and `verify`, then a Pod from
/// it, the files read back through the Pod, and per layer what the snapshotter did.
async fn check_image(
    t: &Ctx,
    pod: &str,
    reference: &str,
    files: &[(String, String)],
    expect: Expect,
) -> Result<Ran> {
    check_image_as(t, pod, reference, reference, files, expect).await
}

/// [`check_image`] for a Pod that names `pod_image` and must end up running `reference` (the
/// admission webhook moves it there).
async fn check_image_as(
    t: &Ctx,
    pod: &str,
    pod_image: &str,
    reference: &str,
    files: &[(String, String)],
    expect: Expect,
) -> Result<Ran> {
    t.note(reference);
    // A blocking HTTP client: not on the async runtime's own threads.
    let image = tokio::task::block_in_place(|| node::node_image(reference))
        .with_context(|| format!("cannot read {reference} from the registry"))?;
    let indexed = image.layers.iter().filter(|l| l.indexed).count();
    ensure!(
        indexed > 0,
        "{reference}: the SOCI index bound to its linux/amd64 manifest has no zTOC"
    );
    check_inspect(t, reference, &image)?;
    check_verify(t, reference, &image, expect)?;

    let soci_mark = node::LogMark::new(&t.g.soci_log);
    let registry_mark = node::LogMark::new(&t.g.dir.join("logs/registry.log"));
    if let Err(e) = node::run_pod(t, pod, pod_image, SECS(180)).await {
        let _ = node::forget(t, pod, reference, &image).await;
        return Err(e);
    }
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(t.client.clone(), &t.ns);
    let running = pods.get(pod).await?;
    let ran_image = running
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    if ran_image != reference {
        let _ = node::forget(t, pod, reference, &image).await;
        bail!("Pod {pod} named {pod_image} and runs {ran_image}, not {reference}");
    }
    let mut bad_reads = vec![];
    for (path, sum) in files {
        match node::sha256_in_pod(t, pod, path) {
            Ok(got) if got == *sum => t.note(format!("read {path}: sha256 ok")),
            Ok(got) => bad_reads.push(format!("{path}: got '{got}' want {sum}")),
            Err(e) => bad_reads.push(format!("{path}: {e:#}")),
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let seen = node::observe(&image, &soci_mark.since(), &registry_mark.since(), &mounts);
    node::forget(t, pod, reference, &image)
        .await
        .context("could not clear the node")?;
    ensure!(
        bad_reads.is_empty(),
        "wrong bytes read through the Pod: {bad_reads:?}"
    );

    let mut problems = vec![];
    for l in &seen {
        t.note(format!(
            "layer {} {} -> {}{} ({} full / {} range GETs, {} of {} bytes){}",
            &l.layer.digest[7..19.min(l.layer.digest.len())],
            if l.layer.indexed {
                "indexed  "
            } else {
                "unindexed"
            },
            l.how(),
            l.mountpoint
                .as_deref()
                .filter(|_| l.fuse)
                .map(|m| format!(", FUSE {m}"))
                .unwrap_or_default(),
            l.full_gets,
            l.range_gets,
            l.bytes_fetched,
            l.layer.size,
            l.remote_errors
                .first()
                .map(|e| format!(" remote refused: {}", &e[..e.len().min(160)]))
                .unwrap_or_default(),
        ));
        problems.extend(layer_problem(l, expect));
    }
    let lazy = seen
        .iter()
        .filter(|l| l.layer.indexed && l.remote && l.fuse)
        .count();
    t.note(format!(
        "{lazy} of {indexed} indexed layer(s) mounted lazily"
    ));
    ensure!(
        problems.is_empty(),
        "the snapshotter did not do what the index promises: {problems:?}"
    );
    Ok(Ran {
        reference: reference.to_string(),
        lazy,
        indexed,
    })
}

/// Every image the status calls LazyLoadReady=True was run on the node with all of its
/// linux/amd64 indexed layers (the status count) mounted lazily.
fn check_claims(status: &api::SociIndexStatus, ran: &HashMap<String, Ran>) -> Result<()> {
    let mut bad = vec![];
    for image in &status.images {
        let claimed = image
            .conditions
            .iter()
            .any(|c| c.type_ == "LazyLoadReady" && c.status == api::ConditionStatus::True);
        if !claimed {
            continue;
        }
        let platform = image
            .platforms
            .iter()
            .find(|p| p.platform == "linux/amd64")
            .or(if image.platforms.len() == 1 {
                image.platforms.first()
            } else {
                None
            });
        let deploy = image.deploy.clone().unwrap_or_default();
        match (ran.get(&deploy), platform) {
            (None, _) => bad.push(format!(
                "{}: claimed ready, never run on the node ({deploy})",
                image.name
            )),
            (Some(o), Some(p)) if o.all_lazy() && o.lazy == p.layers_indexed as usize => {}
            (Some(o), p) => bad.push(format!(
                "{}: LazyLoadReady=True ({:?} layer(s) indexed) but the snapshotter mounted {} of {} lazily: {}",
                image.name,
                p.map(|p| p.layers_indexed),
                o.lazy,
                o.indexed,
                o.reference
            )),
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        bail!("a LazyLoadReady=True claim is not what the node did: {bad:?}")
    }
}

/// What [`lazy_run`] leaves: the generated image, the operator (kept running for the checks),
/// the Ready object, its deploy reference and how the node ran it.
struct LazyRun {
    generated: Generated,
    _operator: Operator,
    o: api::SociIndex,
    deploy: String,
    ran: Ran,
}

/// Generates CASE, pushes it as `<repo CASE>:v1`, converts it through the operator, checks the
/// layer counts and runs the deploy reference lazily (Pod `run-CASE`).
async fn lazy_run(t: &Ctx, case: &str, counts: &[(&str, (i32, i32, i32))]) -> Result<LazyRun> {
    let generated = generate(t, case)?;
    let image = push(t, &generated.layout, &format!("{}:v1", t.repo(case)))?;
    let (operator, o) = converted(t, case, &image).await?;
    let deploy = check_counts(&o, case, counts)?;
    let ran = check_image(
        t,
        &format!("run-{case}"),
        &deploy,
        &generated.files,
        Expect::Lazy,
    )
    .await?;
    Ok(LazyRun {
        generated,
        _operator: operator,
        o,
        deploy,
        ran,
    })
}

/// One image shape converted by the operator and run lazily; its claim checked.
async fn lazy_case(t: &Ctx, case: &str, counts: &[(&str, (i32, i32, i32))]) -> Result<()> {
    let run = lazy_run(t, case, counts).await?;
    check_claims(
        run.o.status.as_ref().unwrap(),
        &HashMap::from([(run.deploy, run.ran)]),
    )?;
    t.pass();
    Ok(())
}

// bash: multi-arch index (amd64 runs, arm64 indexed): lazy
#[tokio::test(flavor = "multi_thread")]
async fn lazy_multiarch() -> Result<()> {
    let t = start!("lazy-multiarch");
    lazy_case(
        &t,
        "multiarch",
        &[("linux/amd64", (1, 1, 0)), ("linux/arm64", (1, 1, 0))],
    )
    .await
}

// bash: small + zstd + big gzip layers: big one lazy, others pulled
#[tokio::test(flavor = "multi_thread")]
async fn lazy_mixed_layers() -> Result<()> {
    let t = start!("lazy-mixed");
    lazy_case(&t, "mixed", &[("*", (1, 2, 1))]).await
}

// bash: Docker media types: lazy
#[tokio::test(flavor = "multi_thread")]
async fn lazy_docker_media_types() -> Result<()> {
    let t = start!("lazy-docker");
    lazy_case(&t, "docker", &[("*", (1, 1, 0))]).await
}

// bash: gzip stream starting with a sync flush (our index): lazy; upstream's sync-flush index:
// refused by the snapshotter and by our verify; LazyLoadReady=True claims match the node; the
// claim check catches a false LazyLoadReady=True.
#[tokio::test(flavor = "multi_thread")]
async fn lazy_syncflush_ours_and_upstreams_refused() -> Result<()> {
    let t = start!("lazy-syncflush");
    let LazyRun {
        generated,
        _operator,
        o,
        deploy,
        ran: ours,
    } = lazy_run(&t, "syncflush", &[("*", (1, 1, 0))]).await?;
    let upstream_ref = format!("{}:v1-upstream", t.repo("syncflush"));
    let upstream = upstream_conversion(&t, &generated.layout, &upstream_ref)?;
    let theirs = check_image(
        &t,
        "run-syncflush-upstream",
        &upstream,
        &generated.files,
        Expect::Refused,
    )
    .await?;
    let ran = HashMap::from([(deploy, ours), (upstream.clone(), theirs)]);
    let status = o.status.clone().unwrap();
    check_claims(&status, &ran)?;
    // What an operator that trusted any bound index would report: the claim moved to
    // upstream's index of the same layer, which the snapshotter refuses.
    let mut doctored = status;
    for image in &mut doctored.images {
        image.deploy = Some(upstream.clone());
    }
    let caught = check_claims(&doctored, &ran)
        .err()
        .ok_or_else(|| anyhow!("the claim check accepted a false claim"))?;
    ensure!(
        format!("{caught:#}").contains("syncflush: LazyLoadReady=True"),
        "the claim check failed for another reason: {caught:#}"
    );
    t.note("a false LazyLoadReady=True claim is caught");
    t.pass();
    Ok(())
}

// bash: same image, our conversion / upstream soci convert / crane copy of ours: lazy
#[tokio::test(flavor = "multi_thread")]
async fn lazy_same_image_ours_upstreams_and_a_crane_copy() -> Result<()> {
    let t = start!("lazy-twice");
    let LazyRun {
        generated,
        _operator,
        o,
        deploy,
        ran: ours,
    } = lazy_run(&t, "twice", &[("*", (1, 1, 0))]).await?;
    let copy_ref = format!("{}:v1", t.repo("copy"));
    t.crane(&["copy", &deploy, &copy_ref])?;
    let copy = format!(
        "{copy_ref}@{}",
        t.digest(&copy_ref).ok_or_else(|| anyhow!("no copy"))?
    );
    check_image(&t, "run-copy", &copy, &generated.files, Expect::Lazy).await?;
    let upstream = upstream_conversion(
        &t,
        &generated.layout,
        &format!("{}:v1-upstream", t.repo("twice")),
    )?;
    check_image(
        &t,
        "run-twice-upstream",
        &upstream,
        &generated.files,
        Expect::Lazy,
    )
    .await?;
    check_claims(o.status.as_ref().unwrap(), &HashMap::from([(deploy, ours)]))?;
    t.pass();
    Ok(())
}

#[test]
fn the_claim_check_refuses_claims_the_node_did_not_make_true() {
    let status: api::SociIndexStatus = serde_json::from_value(json!({
        "images": [{
            "name": "a", "image": "r/a:v1", "deploy": "r/a:v1-soci@sha256:1",
            "platforms": [{"platform": "linux/amd64", "layersIndexed": 2, "layersTooSmall": 0,
                           "layersUnsupported": 0, "bytesIndexedPercent": "90"}],
            "conditions": [{"type": "LazyLoadReady", "status": "True", "reason": "Verified",
                            "message": "", "lastTransitionTime": "2026-12-02T00:00:00Z"}],
        }],
        "conditions": [],
    }))
    .unwrap();
    let ran = |lazy, indexed| {
        HashMap::from([(
            "r/a:v1-soci@sha256:1".to_string(),
            Ran {
                reference: "r/a:v1-soci@sha256:1".into(),
                lazy,
                indexed,
            },
        )])
    };
    assert!(check_claims(&status, &ran(2, 2)).is_ok());
    assert!(check_claims(&status, &ran(1, 2)).is_err());
    assert!(
        check_claims(&status, &ran(1, 1)).is_err(),
        "status says 2 indexed"
    );
    assert!(check_claims(&status, &HashMap::new()).is_err(), "never run");
}

// The admission webhook: a Pod naming the source tag, in a labelled namespace, is moved to the
// SOCI-enabled image, and the node mounts its indexed layers lazily.
#[tokio::test(flavor = "multi_thread")]
async fn lazy_through_admission() -> Result<()> {
    use soci_e2e::webhook::*;
    let t = start!("lazy-through-admission");
    let case = "docker";
    let generated = generate(&t, case)?;
    let source = push(&t, &generated.layout, &format!("{}:v1", t.repo(case)))?;
    // The operator's own namespace is never rewritten: its Secret lives in another.
    let home = t.namespace("operator").await?;
    label_namespace(&t, &t.ns).await?;
    let port = free_port()?;
    let hook = install_webhook(&t, port, &[&t.ns]).await?;
    let args = webhook_args(port, &hook.name, &[&t.ns, &home], &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = t.operator_with(&[("POD_NAMESPACE", &home)], &args)?;
    ca_bundle(&t, &hook.name, SECS(60)).await?;
    t.apply_in(
        &t.ns,
        "cases",
        json!({"images": [{"name": case, "image": source}]}),
    )
    .await?;
    let o = t.wait_ready("cases", SECS(900)).await?;
    let deploy = check_counts(&o, case, &[("*", (1, 1, 0))])?;
    // The webhook's view follows the status within a second.
    tokio::time::sleep(SECS(2)).await;
    let ran = check_image_as(
        &t,
        "admitted",
        &source,
        &deploy,
        &generated.files,
        Expect::Lazy,
    )
    .await?;
    check_claims(
        o.status.as_ref().context("a status")?,
        &HashMap::from([(deploy, ran)]),
    )?;
    drop(hook);
    t.pass();
    Ok(())
}
