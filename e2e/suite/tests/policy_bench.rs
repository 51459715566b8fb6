//! The policy benchmark (`e2e/policy-bench`; ignored by `cargo test` and not in CI): PODS Pods
//! that never run (held by a scheduling gate; their specs name their images) over IMAGES
//! distinct small images of the local registry, one SociIndexPolicy over them. Prints the time
//! until the policy is Ready (every child Ready), the operator's peak RSS (VmHWM), and once
//! settled the API server's and the registry's requests per minute, with a baseline taken
//! before the operator started (the API server's metrics have no client label: the difference
//! is the operator's share; the registry's access log names the user agent).
//!
//! Sizes: SOCI_BENCH_PODS (1000), SOCI_BENCH_IMAGES (200), SOCI_BENCH_WINDOW_SECS (60, each
//! rate's window), SOCI_BENCH_JOBS (8, --max-concurrent-jobs).

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use soci_e2e::api::policy::SociIndexPolicy;
use soci_e2e::*;
use soci_testkit::compress::gzip;
use soci_testkit::layout::sha256_digest;
use soci_testkit::registry::RegistryHttp;
use soci_testkit::tarw::write_streamed_file;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pushes REPO:TAG: one small gzip layer of its own (64 KiB of noise named after SEED).
fn push_small(registry: &RegistryHttp, repo: &str, tag: &str, seed: usize) -> Result<()> {
    let mut noise = vec![0u8; 64 << 10];
    let mut x = (seed as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut tar = Vec::new();
    write_streamed_file(&mut tar, format!("data/{seed}"), &noise, 0)?;
    tar.extend([0u8; 1024]);
    let layer = gzip(&tar, 6);
    let layer_digest = registry.push_blob(repo, &layer)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/none"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&tar)]},
    }))?;
    let config_digest = registry.push_blob(repo, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "size": layer.len(), "digest": layer_digest}],
    }))?;
    registry.push_manifest(
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )?;
    Ok(())
}

/// The sum of the API server's `apiserver_request_total`, and the part of it for the
/// resources the operator works with.
fn api_requests(t: &Ctx) -> Result<(f64, BTreeMap<String, f64>)> {
    let text = t.kubectl(&["get", "--raw", "/metrics"])?;
    let mut total = 0.0;
    let mut by_resource = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        total += value;
        if let Some(r) = name
            .split("resource=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            *by_resource.entry(r.to_string()).or_insert(0.0) += value;
        }
    }
    Ok((total, by_resource))
}

/// The registry's access-log lines so far, by user agent (its first word).
fn registry_requests(t: &Ctx) -> BTreeMap<String, usize> {
    let log = std::fs::read_to_string(t.g.dir.join("logs/registry.log")).unwrap_or_default();
    let mut by_agent = BTreeMap::new();
    for line in log.lines().filter(|l| l.starts_with("127.0.0.1 - - [")) {
        let agent = line
            .rsplit_once(" \"")
            .map(|(_, a)| a.trim_end_matches('"'))
            .and_then(|a| a.split(['/', ' ']).next())
            .filter(|a| !a.is_empty())
            .unwrap_or("-");
        *by_agent.entry(agent.to_string()).or_insert(0) += 1;
    }
    by_agent
}

fn delta<K: Ord + Clone>(a: &BTreeMap<K, f64>, b: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Requests per minute over a window: API (total, by resource), registry (by agent).
struct Rates {
    api: f64,
    api_by_resource: BTreeMap<String, f64>,
    registry: BTreeMap<String, f64>,
}

async fn rates(t: &Ctx, window: Duration) -> Result<Rates> {
    let (api0, res0) = api_requests(t)?;
    let reg0 = registry_requests(t);
    tokio::time::sleep(window).await;
    let (api1, res1) = api_requests(t)?;
    let reg1 = registry_requests(t);
    let per_minute = 60.0 / window.as_secs_f64();
    let to_f = |m: BTreeMap<String, usize>| -> BTreeMap<String, f64> {
        m.into_iter().map(|(k, v)| (k, v as f64)).collect()
    };
    Ok(Rates {
        api: (api1 - api0) * per_minute,
        api_by_resource: delta(&res0, &res1)
            .into_iter()
            .map(|(k, v)| (k, v * per_minute))
            .collect(),
        registry: delta(&to_f(reg0), &to_f(reg1))
            .into_iter()
            .map(|(k, v)| (k, v * per_minute))
            .collect(),
    })
}

fn show(map: &BTreeMap<String, f64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with e2e/policy-bench"]
async fn policy_bench() -> Result<()> {
    let Some(t) = Ctx::start("policy-bench").await? else {
        return Ok(());
    };
    let ns = t.ns.clone();
    let pods_n = env_usize("SOCI_BENCH_PODS", 1000);
    let images_n = env_usize("SOCI_BENCH_IMAGES", 200).max(1);
    let window = Duration::from_secs(env_usize("SOCI_BENCH_WINDOW_SECS", 60) as u64);
    let jobs = env_usize("SOCI_BENCH_JOBS", 8).to_string();

    let phase = Instant::now();
    let repo = format!("e2e/bench-{}", ns.trim_start_matches("soci-e2e-"));
    // reqwest::blocking inside the async test: the client is made and dropped in
    // block_in_place too (its runtime may not be dropped on an async worker).
    tokio::task::block_in_place(|| -> Result<()> {
        let registry = RegistryHttp::new(&t.g.registry, None);
        for i in 0..images_n {
            push_small(&registry, &repo, &format!("i{i}"), i)?;
        }
        Ok(())
    })?;
    t.note(format!("pushed {images_n} images in {:?}", phase.elapsed()));

    let phase = Instant::now();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    let mut next = 0;
    while next < pods_n {
        let batch: Vec<_> = (next..pods_n.min(next + 25))
            .map(|i| {
                let pods = pods.clone();
                let image = format!("{}/{repo}:i{}", t.g.registry, i % images_n);
                tokio::spawn(async move {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("p{i}"), "labels": {"app": "bench"}},
                        "spec": {
                            "hostNetwork": true,
                            "schedulingGates": [{"name": "soci.dev/bench"}],
                            "containers": [{"name": "main", "image": image}],
                        },
                    }))?;
                    pods.create(&PostParams::default(), &pod).await?;
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in batch {
            task.await??;
        }
        next += 25;
    }
    t.note(format!(
        "created {pods_n} gated Pods in {:?}",
        phase.elapsed()
    ));

    t.note(format!("baseline: {window:?} without the operator ..."));
    let baseline = rates(&t, window).await?;

    let op = t
        .cluster_operator(&[
            "--max-concurrent-jobs",
            &jobs,
            "--max-jobs-per-registry",
            "0",
            "--max-jobs-per-namespace",
            "0",
        ])
        .await?;
    let started = Instant::now();
    t.apply_policy(
        &ns,
        "bench",
        json!({
            "sources": {"workloads": {}},
            "maxImages": 1000,
            "template": {"minLayerSize": 0},
        }),
    )
    .await?;
    let policies = t.policies(&ns);
    let (policy, _) = t
        .wait_policy(
            &policies,
            "bench",
            &ns,
            Duration::from_secs(3600),
            "Ready with every child Ready",
            |p: &SociIndexPolicy, c| {
                policy_true(p.status.as_ref(), "Ready")
                    && c.len() == images_n
                    && c.iter().all(is_ready)
            },
        )
        .await?;
    let ready_after = started.elapsed();
    let rss_ready = op.peak_rss_kib().context("the operator's VmHWM")?;
    t.note(format!(
        "Ready after {ready_after:?}: {:?}; measuring {window:?} settled ...",
        policy.status.as_ref().and_then(|s| s.summary.clone())
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = rates(&t, window).await?;
    let rss_settled = op.peak_rss_kib().context("the operator's VmHWM")?;
    let operator_share = settled.api - baseline.api;

    let rows = [
        (
            "pods",
            pods_n.to_string(),
            "Pods (gated, never run) the policy reads",
        ),
        (
            "images",
            images_n.to_string(),
            "distinct images they name = children",
        ),
        (
            "ready_secs",
            format!("{:.1}", ready_after.as_secs_f64()),
            "policy applied -> Ready (every child built and Ready)",
        ),
        (
            "peak_rss_mib",
            format!("{:.1}", rss_ready as f64 / 1024.0),
            "operator VmHWM when Ready",
        ),
        (
            "peak_rss_settled_mib",
            format!("{:.1}", rss_settled as f64 / 1024.0),
            "operator VmHWM after the settled window",
        ),
        (
            "api_req_per_min_baseline",
            format!("{:.0}", baseline.api),
            "API server requests/min before the operator (kubelet, controllers)",
        ),
        (
            "api_req_per_min_settled",
            format!("{:.0}", settled.api),
            "API server requests/min once settled, everyone",
        ),
        (
            "api_req_per_min_operator",
            format!("{operator_share:.0}"),
            "settled - baseline: the operator's share",
        ),
        (
            "registry_req_per_min_settled",
            format!("{:.0}", settled.registry.values().sum::<f64>()),
            "registry requests/min once settled",
        ),
    ];
    let mut report = String::from("policy-bench results\n");
    for (name, value, meaning) in rows {
        report.push_str(&format!("  {name:<30} {value:>10}   {meaning}\n"));
    }
    report.push_str(&format!(
        "  api by resource, baseline/min:  {}\n  api by resource, settled/min:   {}\n  registry by agent, settled/min: {}\n",
        show(&baseline.api_by_resource),
        show(&settled.api_by_resource),
        show(&settled.registry)
    ));
    say(report);
    t.pass();
    Ok(())
}
