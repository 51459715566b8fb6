//! The admission headline benchmark (`e2e/admission-scale-bench`; ignored by `cargo test`, not
//! in CI; needs `e2e/proving-ground up --soci`): the same Deployment, naming the source tag of
//! an image the operator indexed, scaled from 0 to REPLICAS on a wiped node, once in a
//! namespace the webhook does not serve and once in one it does. Prints, side by side, the time
//! from the scale-up until every Pod runs, the Pods' image, and the bytes the registry sent for
//! the image's blobs.
//!
//! Sizes: SOCI_BENCH_REPLICAS (10), SOCI_BENCH_LAYERS (4), SOCI_BENCH_LAYER_MIB (64, per layer
//! before compression; half noise, half text, as `e2e/pod-start-bench`).

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use soci_e2e::node::{self, LogMark};
use soci_e2e::webhook::*;
use soci_e2e::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    mode: &'static str,
    seconds: f64,
    image: String,
    fetched: u64,
}

async fn scale_up(
    t: &Ctx,
    ns: &str,
    source: &str,
    replicas: usize,
    blobs: &str,
    mode: &'static str,
) -> Result<Run> {
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), ns);
    let app: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "hostNetwork": true,
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "main", "image": source, "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/busybox", "sh", "-c",
                            "/bin/busybox head -c 4096 /bin/busybox >/dev/null; exec /bin/busybox sleep 3600"],
                    }],
                },
            },
        },
    }))?;
    deployments.create(&PostParams::default(), &app).await?;
    let registry = LogMark::new(&t.g.dir.join("logs/registry.log"));
    let started = Instant::now();
    deployments
        .patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    let running = poll(
        Duration::from_secs(600),
        Duration::from_millis(250),
        async || {
            let list = pods
                .list(&ListParams::default().labels("app=bench"))
                .await
                .ok()?;
            let up = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (up >= replicas).then_some(list.items)
        },
    )
    .await
    .with_context(|| format!("{mode}: {replicas} Pods not Running after 600 s"))?;
    let seconds = started.elapsed().as_secs_f64();
    let images: Vec<String> = running
        .iter()
        .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
        .collect();
    ensure!(
        images.windows(2).all(|w| w[0] == w[1]),
        "{mode}: the Pods run different images: {images:?}"
    );
    let fetched = node::registry_gets(&registry.since())
        .iter()
        .filter(|g| g.uri.starts_with(blobs))
        .map(|g| g.written)
        .sum();
    deployments
        .delete("bench", &DeleteParams::default())
        .await?;
    let gone = poll(
        Duration::from_secs(120),
        Duration::from_millis(500),
        async || {
            let list = pods
                .list(&ListParams::default().labels("app=bench"))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
    ensure!(
        gone.is_some(),
        "{mode}: the Pods are still there 120 s after the Deployment's deletion"
    );
    Ok(Run {
        mode,
        seconds,
        image: images.first().cloned().unwrap_or_default(),
        fetched,
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: e2e/admission-scale-bench"]
async fn admission_scale() -> Result<()> {
    let Some(t) = Ctx::start("admission_scale").await? else {
        return Ok(());
    };
    if let Some(why) = node::lazy_unavailable(&t) {
        say(format!("SKIP admission_scale: {why}"));
        t.pass();
        return Ok(());
    }
    let replicas = env_usize("SOCI_BENCH_REPLICAS", 10);
    let layers = env_usize("SOCI_BENCH_LAYERS", 4);
    let mib = env_usize("SOCI_BENCH_LAYER_MIB", 64);

    // A fresh image (its own seed): no node or snapshotter has seen its layers.
    let generator = std::env::var_os("SOCI_E2E_LAZY_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| operator_bin().with_file_name("examples/lazy_images"));
    let seed = u64::from_str_radix(&random_suffix(), 16)?;
    let out = t.work.path().join("layouts");
    run_cmd(
        Command::new(&generator)
            .args([
                "--seed",
                &seed.to_string(),
                "--bench-layers",
                &layers.to_string(),
            ])
            .args(["--bench-mib", &mib.to_string()])
            .arg(&out)
            .arg("bench"),
    )?;
    let repo = t.repo("scale");
    let source = format!("{repo}:v1");
    t.crane(&["push", &out.join("bench").to_string_lossy(), &source])?;

    let home = t.namespace("operator").await?;
    let plain = t.namespace("plain").await?;
    let lazy = t.namespace("lazy").await?;
    label_namespace(&t, &lazy).await?;
    let port = free_port()?;
    let hook = install_webhook(&t, port, &[&plain, &lazy]).await?;
    let args = webhook_args(port, &hook.name, &[&home, &plain, &lazy], &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = t.operator_with(&[("POD_NAMESPACE", &home)], &args)?;
    ca_bundle(&t, &hook.name, Duration::from_secs(60)).await?;
    // Indexed in both namespaces: only the webhook differs between the two runs.
    for ns in [&plain, &lazy] {
        t.apply_in(
            ns,
            "bench",
            json!({"images": [{"name": "bench", "image": source}]}),
        )
        .await?;
    }
    let ready = t
        .wait_true(&lazy, "bench", "Ready", Duration::from_secs(900))
        .await?;
    t.wait_true(&plain, "bench", "Ready", Duration::from_secs(900))
        .await?;
    let deploy = deploy(&ready);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let image = tokio::task::block_in_place(|| node::node_image(&deploy))?;
    let blobs = format!("/v2/{}/blobs/", image.repo);
    let size: u64 = image.layers.iter().map(|l| l.size).sum();

    let mut runs = Vec::new();
    for (ns, mode) in [(&plain, "without the webhook"), (&lazy, "with the webhook")] {
        node::remove_images(&t, &[&source, &deploy], &image, Duration::from_secs(90)).await?;
        runs.push(scale_up(&t, ns, &source, replicas, &blobs, mode).await?);
    }
    node::remove_images(&t, &[&source, &deploy], &image, Duration::from_secs(90)).await?;
    ensure!(
        runs[0].image == source,
        "without the webhook the Pods ran {}",
        runs[0].image
    );
    ensure!(
        runs[1].image == deploy,
        "with the webhook the Pods ran {}, not {deploy}",
        runs[1].image
    );

    let mut table = format!(
        "\nDeployment scaled 0 -> {replicas} on a wiped node, naming {source}\n\
         ({} layers, {:.1} MB compressed; indexed as {deploy})\n{:<22} {:>16} {:>14}  image\n",
        image.layers.len(),
        size as f64 / 1e6,
        "",
        "all Running (s)",
        "fetched (MB)",
    );
    for r in &runs {
        table.push_str(&format!(
            "{:<22} {:>16.1} {:>14.1}  {}\n",
            r.mode,
            r.seconds,
            r.fetched as f64 / 1e6,
            r.image
        ));
    }
    say(table);
    drop(hook);
    t.pass();
    Ok(())
}
