//! The admission benchmark (`e2e/admission-bench`; ignored by `cargo test`, not in CI):
//! INDEXES SociIndexes in the operator's view (suspended, each with one ready image whose status
//! the benchmark writes: no build, no registry), then the webhook's latency for a Pod naming one
//! of them by digest, measured two ways and printed side by side:
//! - directly: AdmissionReviews POSTed to the operator's `/mutate-pods` (TLS, one connection);
//! - through the API server: dry-run Pod creations in a namespace the webhook serves, next to
//!   the same creations in a namespace it does not (the reference: the API server alone).
//!
//! Sizes: SOCI_BENCH_INDEXES (1000), SOCI_BENCH_REQUESTS (2000 direct; a quarter through the
//! API server, per namespace).

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use soci_e2e::*;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn digest_of(i: usize) -> String {
    format!("sha256:{:064x}", i + 1)
}

fn target_digest_of(i: usize) -> String {
    format!("sha256:{:064x}", (i + 1) << 32)
}

/// p50 and p99 in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

fn pod(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hostNetwork": true, "automountServiceAccountToken": false,
                 "containers": [{"name": "main", "image": image}]},
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: e2e/admission-bench"]
async fn admission_latency() -> Result<()> {
    let Some(t) = Ctx::start("admission_latency").await? else {
        return Ok(());
    };
    let indexes = env_usize("SOCI_BENCH_INDEXES", 1000);
    let requests = env_usize("SOCI_BENCH_REQUESTS", 2000);
    let apps = t.namespace("apps").await?;
    let base = t.namespace("base").await?;
    for ns in [&apps, &base] {
        t.kubectl(&["label", "namespace", ns, "soci.dev/lazy-loading=enabled"])?;
    }
    let port = free_port()?;
    let config = t.ns.clone();
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": config},
        "webhooks": [{
            "name": "namespaces.lazy-loading.soci.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate-pods")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 2,
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [apps]}]},
        }],
    });
    let file = t.work.path().join("webhook.json");
    std::fs::write(&file, serde_json::to_vec(&webhook)?)?;
    t.kubectl(&["create", "-f", &file.to_string_lossy()])?;
    struct Cleanup<'a>(&'a Ctx, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.kubectl(&[
                "delete",
                "mutatingwebhookconfiguration",
                &self.1,
                "--wait=false",
            ]);
        }
    }
    let _cleanup = Cleanup(&t, config.clone());
    let listen = format!("127.0.0.1:{port}");
    let op = t.operator_with(
        &[("POD_NAMESPACE", &t.ns)],
        &[
            "--namespace",
            &t.ns,
            "--namespace",
            &apps,
            "--webhook-listen",
            &listen,
            "--webhook-cert-secret",
            "soci-webhook-tls",
            "--webhook-configuration",
            &config,
            "--webhook-cert-ip",
            "127.0.0.1",
        ],
    )?;

    let started = Instant::now();
    let api = t.indexes(&apps);
    let registry = &t.g.registry;
    for i in 0..indexes {
        let name = format!("bench-{i}");
        let image = format!("{registry}/bench/img-{i}:v1");
        t.apply_in(
            &apps,
            &name,
            json!({"images": [{"name": "main", "image": image}], "suspend": true}),
        )
        .await?;
        let target = format!("{registry}/bench/img-{i}:v1-soci");
        let status = json!({"status": {"images": [{
            "name": "main", "image": image,
            "sourceDigest": digest_of(i), "target": target, "targetDigest": target_digest_of(i),
            "deploy": format!("{target}@{}", target_digest_of(i)),
            "conditions": [{"type": "LazyLoadReady", "status": "True", "reason": "Verified",
                            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    let written = started.elapsed();
    let synced = poll(
        Duration::from_secs(120),
        Duration::from_millis(500),
        async || {
            (op.metric("soci_operator_admission_indexed_images")? >= indexes as f64).then_some(())
        },
    )
    .await;
    ensure!(
        synced.is_some(),
        "the webhook's view did not reach {indexes} images in 120 s"
    );
    t.note(format!(
        "{indexes} SociIndexes written in {:.1} s; the view holds them all",
        written.as_secs_f64()
    ));

    let middle = indexes / 2;
    let image = format!("{registry}/bench/img-{middle}@{}", digest_of(middle));
    let moved_to = format!(
        "{registry}/bench/img-{middle}:v1-soci@{}",
        target_digest_of(middle)
    );

    // Directly, trusting only the operator's CA.
    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &t.ns);
    let ca = secrets
        .get("soci-webhook-tls")
        .await?
        .data
        .and_then(|d| d.get("ca.crt").map(|b| b.0.clone()))
        .context("no ca.crt")?;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": apps, "operation": "CREATE", "userInfo": {},
            "object": pod(&apps, "bench", &image), "dryRun": false,
        },
    });
    let body = serde_json::to_vec(&review)?;
    let url = format!("https://{listen}/mutate-pods");
    let direct = tokio::task::block_in_place(|| -> Result<Vec<Duration>> {
        let certs = reqwest::Certificate::from_pem_bundle(&ca)?;
        let client = reqwest::blocking::Client::builder()
            .tls_certs_only(certs)
            .build()?;
        let mut samples = Vec::with_capacity(requests);
        for i in 0..requests {
            let sent = Instant::now();
            let answer: Value =
                serde_json::from_slice(&client.post(&url).body(body.clone()).send()?.bytes()?)?;
            samples.push(sent.elapsed());
            if i == 0 {
                ensure!(!answer["response"]["patch"].is_null(), "no patch: {answer}");
            }
        }
        Ok(samples)
    })?;

    // Through the API server: the webhook's namespace, and the reference without it.
    let through = requests / 4;
    let timed = |ns: String| {
        let client = t.client.clone();
        let image = image.clone();
        async move {
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let mut samples = Vec::with_capacity(through);
            let mut images = Vec::new();
            for i in 0..through {
                let p: Pod = serde_json::from_value(pod(&ns, &format!("bench-{i}"), &image))?;
                let sent = Instant::now();
                let created = pods
                    .create(
                        &PostParams {
                            dry_run: true,
                            ..Default::default()
                        },
                        &p,
                    )
                    .await?;
                samples.push(sent.elapsed());
                if i == 0 {
                    images.push(
                        created
                            .spec
                            .and_then(|s| s.containers[0].image.clone())
                            .unwrap_or_default(),
                    );
                }
            }
            anyhow::Ok((samples, images))
        }
    };
    let (hooked, hooked_images) = timed(apps.clone()).await?;
    let (plain, _) = timed(base.clone()).await?;
    ensure!(
        hooked_images.first() == Some(&moved_to),
        "the API server's Pod: {hooked_images:?}, not {moved_to}"
    );

    let (d50, d99) = percentiles(direct);
    let (h50, h99) = percentiles(hooked);
    let (p50, p99) = percentiles(plain);
    say(format!(
        "\nadmission latency, {indexes} SociIndexes in the view, a Pod naming an indexed digest\n\
         {:<60} {:>9} {:>9}\n\
         {:<60} {:>9.2} {:>9.2}\n\
         {:<60} {:>9.2} {:>9.2}\n\
         {:<60} {:>9.2} {:>9.2}\n\
         {:<60} {:>9.2} {:>9.2}",
        "",
        "p50 ms",
        "p99 ms",
        format!("webhook, direct ({requests} requests, TLS, keep-alive)"),
        d50,
        d99,
        format!("API server dry-run create, with the webhook ({through})"),
        h50,
        h99,
        format!("API server dry-run create, no webhook ({through}, reference)"),
        p50,
        p99,
        "difference through the API server",
        h50 - p50,
        h99 - p99,
    ));
    t.pass();
    Ok(())
}
