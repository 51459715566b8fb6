//! The admission webhook on the proving ground: the API server calls the operator (a host
//! process) by URL on loopback, with the CA bundle the operator writes into the webhook
//! configuration. Most Pods are created with `dryRun=All`: the API server runs admission and
//! answers with the Pod as it would be stored, without a Pod to clean up. Run through
//! `e2e/rust-tests`.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use soci_e2e::webhook::*;
use soci_e2e::*;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const ORIGINALS: &str = "soci.dev/original-images";

macro_rules! start {
    ($name:expr) => {
        match Ctx::start($name).await? {
            None => return Ok(()),
            Some(t) => t,
        }
    };
}

fn pod(ns: &str, name: &str, image: &str, labels: Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": image}],
        },
    }))?)
}

/// The Pod as the API server would store it (dry run): its image, and the originals annotation.
async fn admitted(
    t: &Ctx,
    ns: &str,
    image: &str,
    labels: Value,
) -> Result<(String, Option<String>)> {
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), ns);
    let name = format!("dry-{}", random_suffix());
    let created = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod(ns, &name, image, labels)?,
        )
        .await
        .with_context(|| format!("dry-run Pod in {ns} naming {image}"))?;
    let image = created
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    let originals = created
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINALS).cloned());
    Ok((image, originals))
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_moves_only_indexed_fresh_images() -> Result<()> {
    let t = start!("admission_moves_only_indexed_fresh_images");
    // The operator's own namespace (its Secret's) is never rewritten: Pods go to two others.
    let apps = t.namespace("apps").await?;
    let plain = t.namespace("plain").await?;
    label_namespace(&t, &apps).await?;
    let port = free_port()?;
    let hook = install_webhook(&t, port, &[&apps, &plain]).await?;
    let args = webhook_args(port, &hook.name, &[&t.ns, &apps, &plain], &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut op = t.operator_with(&[("POD_NAMESPACE", &t.ns)], &args)?;
    ca_bundle(&t, &hook.name, SECS(60)).await?;

    let repo = t.repo("hooked");
    let source = format!("{repo}:v1");
    tokio::task::block_in_place(|| t.push_image(&source))?;
    // The same image indexed in both namespaces: `plain` has the index but did not opt in.
    for ns in [&apps, &plain] {
        t.apply_in(
            ns,
            "hooked",
            json!({"images": [{"name": "main", "image": source}]}),
        )
        .await?;
    }
    let ready = t.wait_true(&apps, "hooked", "Ready", SECS(180)).await?;
    t.wait_true(&plain, "hooked", "Ready", SECS(180)).await?;
    let deploy = deploy(&ready);
    let source_digest = first_image(&ready)
        .and_then(|i| i.source_digest.clone())
        .context("no sourceDigest")?;
    ensure!(deploy.contains('@'), "deploy reference {deploy:?}");

    // The view is rebuilt within a second of the status.
    let moved = poll(SECS(10), Duration::from_millis(300), async || {
        let (image, _) = admitted(&t, &apps, &source, json!({})).await.ok()?;
        (image == deploy).then_some(())
    })
    .await;
    ensure!(
        moved.is_some(),
        "a Pod naming {source} in {apps} was not moved to {deploy}"
    );
    let (_, originals) = admitted(&t, &apps, &source, json!({})).await?;
    let originals: Value = serde_json::from_str(&originals.context("no originals annotation")?)?;
    ensure!(
        originals["main"] == source.as_str(),
        "originals: {originals}"
    );

    let pinned = format!("{repo}@{source_digest}");
    ensure!(
        admitted(&t, &apps, &pinned, json!({})).await?.0 == deploy,
        "{pinned} not moved"
    );
    let opted_out = admitted(&t, &apps, &source, json!({LABEL: "disabled"})).await?;
    ensure!(
        opted_out == (source.clone(), None),
        "an opted-out Pod was changed: {opted_out:?}"
    );
    // `plain`'s index may have turned Ready a moment ago: the view follows within a second.
    let opted_in = poll(SECS(10), Duration::from_millis(300), async || {
        let (image, _) = admitted(&t, &plain, &source, json!({LABEL: "enabled"}))
            .await
            .ok()?;
        (image == deploy).then_some(())
    })
    .await;
    ensure!(
        opted_in.is_some(),
        "an opted-in Pod of an unlabelled namespace was not moved to {deploy}"
    );
    // The view has `plain`'s index now; the namespace did not opt in.
    let unlabelled = admitted(&t, &plain, &source, json!({})).await?;
    ensure!(
        unlabelled == (source.clone(), None),
        "a Pod of an unlabelled namespace was changed: {unlabelled:?}"
    );
    let other_tag = format!("{repo}:v2");
    tokio::task::block_in_place(|| t.push_image(&other_tag))?;
    ensure!(
        admitted(&t, &apps, &other_tag, json!({})).await?.0 == other_tag,
        "{other_tag} is not indexed, yet moved"
    );
    t.note(format!(
        "moved {source} to {deploy}; pinned, opted-in moved; opted-out, unlabelled, unindexed left"
    ));

    // A Deployment's Pods (named after admission) are moved too, with an Event.
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &apps);
    let app: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": apps},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hooked"}},
            "template": {
                "metadata": {"labels": {"app": "hooked"}},
                "spec": {"hostNetwork": true, "automountServiceAccountToken": false,
                         "nodeSelector": {"soci-e2e/none": "true"},
                         "containers": [{"name": "main", "image": source}]},
            },
        },
    }))?;
    deployments.create(&PostParams::default(), &app).await?;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &apps);
    let pod_image = poll(SECS(60), SECS(1), async || {
        let list = pods
            .list(&ListParams::default().labels("app=hooked"))
            .await
            .ok()?;
        list.items.first()?.spec.as_ref()?.containers[0]
            .image
            .clone()
    })
    .await
    .context("the Deployment made no Pod in 60 s")?;
    ensure!(
        pod_image == deploy,
        "the Deployment's Pod runs {pod_image}, not {deploy}"
    );
    let events: Api<Event> = Api::namespaced(t.client.clone(), &apps);
    let announced = poll(SECS(20), SECS(1), async || {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("LazyLoadingImages"))
            .then_some(())
    })
    .await;
    ensure!(announced.is_some(), "no LazyLoadingImages Event in {apps}");

    // The tag moves after indexing: a Pod naming it is left alone (it would roll back), while
    // the indexed digest still moves.
    tokio::task::block_in_place(|| t.push_image(&source))?;
    tokio::time::sleep(SECS(2)).await;
    let stale = admitted(&t, &apps, &source, json!({})).await?;
    ensure!(
        stale == (source.clone(), None),
        "a moved tag was rewritten to the old digest: {stale:?}"
    );
    ensure!(
        admitted(&t, &apps, &pinned, json!({})).await?.0 == deploy,
        "the indexed digest is no longer moved"
    );
    let metrics = op.metrics()?;
    let outcome = |o: &str| {
        metric_value(
            &metrics,
            &format!("soci_operator_admission_requests_total{{outcome=\"{o}\"}}"),
        )
        .unwrap_or(0.0)
    };
    ensure!(
        outcome("rewritten") >= 5.0 && outcome("stale_tag") >= 1.0,
        "admission metrics:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("admission"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    t.note(format!("after the tag moved: left as written; outcomes rewritten={} stale_tag={} not_indexed={} skipped={}",
        outcome("rewritten"), outcome("stale_tag"), outcome("not_indexed"), outcome("skipped")));

    // The webhook is down: Pods are admitted unchanged, at once (failurePolicy Ignore).
    op.kill();
    let started = Instant::now();
    let down = admitted(&t, &apps, &pinned, json!({})).await?;
    let took = started.elapsed();
    ensure!(
        down == (pinned.clone(), None),
        "with the webhook down: {down:?}"
    );
    ensure!(
        took < SECS(5),
        "with the webhook down a Pod took {took:?} to be admitted"
    );
    t.note(format!(
        "webhook down: admitted unchanged in {} ms",
        took.as_millis()
    ));
    drop(hook);
    t.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_certificate_rotation_loses_nothing() -> Result<()> {
    let t = start!("admission_certificate_rotation_loses_nothing");
    let apps = t.namespace("apps").await?;
    label_namespace(&t, &apps).await?;
    let port = free_port()?;
    let hook = install_webhook(&t, port, &[&apps]).await?;
    // Short lives: the CA and the serving certificate are both renewed within ~2 minutes.
    let args = webhook_args(
        port,
        &hook.name,
        &[&t.ns, &apps],
        &[
            "--webhook-ca-validity",
            "3m",
            "--webhook-cert-validity",
            "3m",
            "--webhook-cert-renew-before",
            "2m",
            "--webhook-cert-check-interval",
            "10s",
            "--webhook-ca-publish-delay",
            "10s",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = t.operator_with(&[("POD_NAMESPACE", &t.ns)], &args)?;
    let first_bundle = ca_bundle(&t, &hook.name, SECS(60)).await?;
    let repo = t.repo("rotated");
    let source = format!("{repo}:v1");
    tokio::task::block_in_place(|| t.push_image(&source))?;
    t.apply_in(
        &apps,
        "rotated",
        json!({"images": [{"name": "main", "image": source}]}),
    )
    .await?;
    let ready = t.wait_true(&apps, "rotated", "Ready", SECS(180)).await?;
    let deploy = deploy(&ready);
    let digest = first_image(&ready)
        .and_then(|i| i.source_digest.clone())
        .context("no sourceDigest")?;
    let pinned = format!("{repo}@{digest}");
    // The view follows the status within a second; the count starts once it has.
    let moved = poll(SECS(10), Duration::from_millis(300), async || {
        let (image, _) = admitted(&t, &apps, &pinned, json!({})).await.ok()?;
        (image == deploy).then_some(())
    })
    .await;
    ensure!(moved.is_some(), "{pinned} was not moved to {deploy}");

    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &t.ns);
    let serving = async || -> Option<Vec<u8>> {
        secrets
            .get("soci-webhook-tls")
            .await
            .ok()?
            .data?
            .get("tls.crt")
            .map(|b| b.0.clone())
    };
    let first_leaf = serving()
        .await
        .context("no serving certificate in the Secret")?;
    let mut leaves = vec![first_leaf];
    let (mut requests, mut missed) = (0, Vec::new());
    let deadline = Instant::now() + SECS(240);
    // Traffic until the serving certificate has changed twice (the second under a new CA).
    while leaves.len() < 3 && Instant::now() < deadline {
        let (image, _) = admitted(&t, &apps, &pinned, json!({})).await?;
        requests += 1;
        if image != deploy {
            missed.push(format!(
                "request {requests} at {:?}: {image}",
                Instant::now()
            ));
        }
        if let Some(leaf) = serving().await
            && leaves.last() != Some(&leaf)
        {
            t.note(format!(
                "serving certificate {} after {requests} requests",
                leaves.len()
            ));
            leaves.push(leaf);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last_bundle = ca_bundle(&t, &hook.name, SECS(5)).await?;
    ensure!(
        leaves.len() >= 3,
        "the serving certificate changed {} times in 240 s",
        leaves.len() - 1
    );
    ensure!(last_bundle != first_bundle, "the CA bundle never changed");
    if !missed.is_empty() {
        bail!(
            "{} of {requests} admissions were not rewritten during the rotation:\n{}",
            missed.len(),
            missed.join("\n")
        );
    }
    t.note(format!(
        "{requests} admissions through two certificate rotations and a new CA, none lost"
    ));
    drop(hook);
    t.pass();
    Ok(())
}
