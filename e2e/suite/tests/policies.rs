//! The policy controllers (SociIndexPolicy, ClusterSociIndexPolicy) against the proving ground.
//! They run only in an operator over every namespace ([`Ctx::cluster_operator`]), which sees
//! every namespace's SociIndexes, so `e2e/rust-tests` runs this file alone, on one thread.
//! Each test pushes its own images, runs its own workloads (host network, images of the local
//! registry on top of the pause image, so that their Pods run and report their digests) and
//! its own operator.

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use soci_e2e::api::policy::{ClusterSociIndexPolicy, SociIndexPolicy};
use soci_e2e::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Builds take a worker Job each, two at a time per namespace: generous.
const SETTLE: Duration = Duration::from_secs(420);

macro_rules! start {
    ($name:expr) => {
        match Ctx::start($name).await? {
            Some(t) => t,
            None => return Ok(()),
        }
    };
}

/// Server-side apply of a workload object (JSON with apiVersion, kind, metadata.name).
async fn apply_object<K>(api: &Api<K>, object: Value) -> Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + k8s_openapi::serde::de::DeserializeOwned,
{
    let name = object["metadata"]["name"]
        .as_str()
        .context("the object has no name")?
        .to_string();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&object),
        )
        .await?)
}

fn containers(list: &[(&str, &str)]) -> Value {
    list.iter()
        .map(|(name, image)| json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}))
        .collect()
}

/// A Pod spec on the host network whose containers run the given images.
fn pod_spec(main: &[(&str, &str)], init: &[(&str, &str)], restart: &str) -> Value {
    json!({
        "hostNetwork": true,
        "terminationGracePeriodSeconds": 1,
        "restartPolicy": restart,
        "containers": containers(main),
        "initContainers": containers(init),
    })
}

fn deployment(ns: &str, name: &str, main: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(main, &[], "Always")},
        },
    })
}

fn stateful_set(ns: &str, name: &str, main: &[(&str, &str)], init: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(main, init, "Always")},
        },
    })
}

/// A suspended CronJob: only its template names images.
fn cron_job(ns: &str, name: &str, main: &[(&str, &str)], init: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "schedule": "0 0 1 1 *",
            "suspend": true,
            "jobTemplate": {"spec": {"template": {"spec": pod_spec(main, init, "Never")}}},
        },
    })
}

fn pod(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": pod_spec(&[("main", image)], &[], "Always"),
    })
}

/// The references the children stand for.
fn references(children: &[api::SociIndex]) -> BTreeSet<String> {
    children.iter().map(child_reference).collect()
}

fn set(refs: &[&String]) -> BTreeSet<String> {
    refs.iter().map(|r| r.to_string()).collect()
}

/// The policy is Ready, with exactly the children for WANT, all Ready.
fn settled(
    status: Option<&api::policy::PolicyStatus>,
    children: &[api::SociIndex],
    want: &BTreeSet<String>,
) -> bool {
    policy_true(status, "Ready")
        && references(children) == *want
        && children.iter().all(is_ready)
        && status.is_some_and(|s| {
            s.children as usize == want.len() && s.ready_children as usize == want.len()
        })
}

/// The child of REFERENCE.
fn child_of<'a>(children: &'a [api::SociIndex], reference: &str) -> Option<&'a api::SociIndex> {
    children.iter().find(|c| child_reference(c) == reference)
}

fn child_image(children: &[api::SociIndex], reference: &str) -> String {
    child_of(children, reference)
        .and_then(|c| c.spec.images.first())
        .map(|i| i.image.clone())
        .unwrap_or_default()
}

// --- workloads -------------------------------------------------------------------------------

/// A namespace running a Deployment (with a sidecar that `exclude` leaves out), a StatefulSet
/// (with an init container) and a suspended CronJob: each selected image gets a child, pinned
/// to the digest its Pod runs, and every child becomes Ready; a new image version of the
/// Deployment adds a child, the old one's is marked unused and deleted after the retention;
/// deleting the Deployment deletes its child after the retention (not before); `maxImages`
/// cuts the last references and reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_workloads() -> Result<()> {
    let t = start!("policy-workloads");
    let ns = t.ns.clone();
    let started = Instant::now();
    let app1 = format!("{}:v1", t.repo("app"));
    let app2 = format!("{}:v2", t.repo("app"));
    let debug = format!("{}:v1", t.repo("debug"));
    let db = format!("{}:v1", t.repo("db"));
    let init = format!("{}:v1", t.repo("init"));
    let cron = format!("{}:v1", t.repo("cron"));
    for image in [&app1, &app2, &debug, &db, &init, &cron] {
        t.push_runnable_image(image)?;
    }
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    apply_object(
        &deployments,
        deployment(&ns, "web", &[("app", &app1), ("debug", &debug)]),
    )
    .await?;
    let sets: Api<StatefulSet> = Api::namespaced(t.client.clone(), &ns);
    apply_object(
        &sets,
        stateful_set(&ns, "db", &[("db", &db)], &[("init", &init)]),
    )
    .await?;
    let crons: Api<CronJob> = Api::namespaced(t.client.clone(), &ns);
    apply_object(&crons, cron_job(&ns, "nightly", &[("job", &cron)], &[])).await?;

    let _op = t.cluster_operator(&[]).await?;
    let spec = json!({
        "sources": {"workloads": {}},
        "exclude": ["**/debug-*"],
        "retention": "20s",
    });
    t.apply_policy(&ns, "workloads", spec.clone()).await?;
    let policies = t.policies(&ns);
    let app1_digest = t.digest(&app1).context("app:v1 was pushed")?;
    let init_digest = t.digest(&init).context("init:v1 was pushed")?;
    let want = set(&[&app1, &db, &init, &cron]);
    let (policy, children) = t
        .wait_policy(
            &policies,
            "workloads",
            &ns,
            SETTLE,
            "Ready with 4 pinned children",
            |p: &SociIndexPolicy, c| {
                settled(p.status.as_ref(), c, &want)
                    && child_image(c, &app1) == format!("{app1}@{app1_digest}")
                    && child_image(c, &init) == format!("{init}@{init_digest}")
            },
        )
        .await?;
    let status = policy.status.as_ref().context("a status")?;
    ensure!(
        status.selected_images == 4,
        "selectedImages {} (debug is excluded)",
        status.selected_images
    );
    ensure!(
        status.summary.as_deref() == Some("4/4"),
        "summary {:?}",
        status.summary
    );
    ensure!(
        status
            .sources
            .iter()
            .any(|s| s.source == "workloads" && s.last_listed.is_some() && s.images == 5),
        "sources: {:?}",
        status.sources
    );
    // The CronJob's image is not pinned (its Pods resolve the tag when they run).
    ensure!(
        child_image(&children, &cron) == cron,
        "cron child {}",
        child_image(&children, &cron)
    );
    let uid = policy.uid().unwrap_or_default();
    for c in &children {
        let owner = c.owner_references().first().context("an owner reference")?;
        ensure!(
            owner.uid == uid && owner.controller == Some(true),
            "{}: owner {owner:?}",
            c.name_any()
        );
        ensure!(
            c.name_any().starts_with("workloads-") && c.name_any().len() == "workloads-".len() + 10,
            "child name {}",
            c.name_any()
        );
    }
    t.note(format!("4 children Ready after {:?}", started.elapsed()));

    // A new version: a child for it; the old version's is marked unused, then deleted.
    let phase = Instant::now();
    apply_object(
        &deployments,
        deployment(&ns, "web", &[("app", &app2), ("debug", &debug)]),
    )
    .await?;
    t.wait_policy(
        &policies,
        "workloads",
        &ns,
        SECS(120),
        "app:v1's child marked unused",
        |_: &SociIndexPolicy, c| {
            child_of(c, &app2).is_some()
                && child_of(c, &app1)
                    .is_some_and(|o| o.annotations().contains_key("soci.dev/unused-since"))
        },
    )
    .await?;
    let want = set(&[&app2, &db, &init, &cron]);
    t.wait_policy(
        &policies,
        "workloads",
        &ns,
        SETTLE,
        "Ready with app:v2 and without app:v1",
        |p: &SociIndexPolicy, c| settled(p.status.as_ref(), c, &want),
    )
    .await?;
    t.note(format!("the update settled after {:?}", phase.elapsed()));

    // Deleting the Deployment: its child goes after the retention, not before.
    let phase = Instant::now();
    deployments
        .delete("web", &DeleteParams::foreground())
        .await?;
    let want = set(&[&db, &init, &cron]);
    t.wait_policy(
        &policies,
        "workloads",
        &ns,
        SECS(180),
        "Ready without the Deployment's child",
        |p: &SociIndexPolicy, c| settled(p.status.as_ref(), c, &want),
    )
    .await?;
    let gone_after = phase.elapsed();
    ensure!(
        gone_after >= SECS(19),
        "the child went after {gone_after:?}, before the 20 s retention"
    );
    t.note(format!(
        "the deleted Deployment's child went after {gone_after:?}"
    ));

    // maxImages: 2 of 3 (in reference order: cron, db, init): init is cut, and reported.
    let mut capped = spec.clone();
    capped["maxImages"] = json!(2);
    t.apply_policy(&ns, "workloads", capped).await?;
    let (policy, _) = t
        .wait_policy(
            &policies,
            "workloads",
            &ns,
            SECS(120),
            "reporting init as cut",
            |p: &SociIndexPolicy, _| {
                p.status.as_ref().is_some_and(|s| {
                    s.cut_image_count == 1
                        && s.cut_images == [init.clone()]
                        && s.selected_images == 3
                }) && policy_true(p.status.as_ref(), "Ready")
            },
        )
        .await?;
    let ready = policy_condition(policy.status.as_ref(), "Ready").context("Ready")?;
    ensure!(
        ready.message.contains("cut by maxImages"),
        "Ready message: {}",
        ready.message
    );
    let want = set(&[&db, &cron]);
    t.wait_policy(
        &policies,
        "workloads",
        &ns,
        SECS(120),
        "without the cut image's child",
        |p: &SociIndexPolicy, c| settled(p.status.as_ref(), c, &want),
    )
    .await?;
    t.note(format!("done after {:?}", started.elapsed()));
    t.pass();
    Ok(())
}

// --- a cluster policy over labelled namespaces ---------------------------------------------

/// A ClusterSociIndexPolicy whose namespaceSelector picks two labelled namespaces and not a
/// third: a child (in childNamespace) for the images of the two, none for the third's, none
/// in the Pods' namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_policy_namespaces() -> Result<()> {
    let t = start!("cluster-policy-namespaces");
    let started = Instant::now();
    let suffix = t.ns.trim_start_matches("soci-e2e-").to_string();
    let namespaces = Api::<Namespace>::all(t.client.clone());
    let mut images = Vec::new();
    for (what, labelled) in [("a", true), ("b", true), ("c", false)] {
        let ns = t.namespace(what).await?;
        if labelled {
            namespaces
                .patch(
                    &ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"soci.dev/e2e-policy": suffix}}})),
                )
                .await?;
        }
        let image = format!("{}:v1", t.repo(&format!("in-{what}")));
        t.push_runnable_image(&image)?;
        apply_object(
            &Api::<Pod>::namespaced(t.client.clone(), &ns),
            pod(&ns, "app", &image),
        )
        .await?;
        images.push((ns, image));
    }
    let _op = t.cluster_operator(&[]).await?;
    let name = format!("e2e-{suffix}");
    t.apply_cluster_policy(
        &name,
        json!({
            "namespaceSelector": {"matchLabels": {"soci.dev/e2e-policy": suffix}},
            "childNamespace": t.ns,
            "sources": {"workloads": {}},
        }),
    )
    .await?;
    let want = set(&[&images[0].1, &images[1].1]);
    let digests: Vec<String> = images[..2]
        .iter()
        .map(|(_, i)| t.digest(i).context("pushed"))
        .collect::<Result<_>>()?;
    let (policy, _) = t
        .wait_policy(
            &t.cluster_policies(),
            &name,
            &t.ns,
            SETTLE,
            "Ready with the two namespaces' children",
            |p: &ClusterSociIndexPolicy, c| {
                settled(p.status.as_ref(), c, &want)
                    && images[..2]
                        .iter()
                        .zip(&digests)
                        .all(|((_, i), d)| child_image(c, i) == format!("{i}@{d}"))
            },
        )
        .await?;
    let status = policy.status.as_ref().context("a status")?;
    ensure!(
        status.selected_images == 2,
        "selectedImages {}",
        status.selected_images
    );
    for (ns, _) in &images {
        let there = t.indexes(ns).list(&Default::default()).await?.items;
        ensure!(
            there.is_empty(),
            "SociIndexes in the Pods' namespace {ns}: {}",
            there.len()
        );
    }
    t.note(format!(
        "2 children Ready in {} after {:?}; none for {}",
        t.ns,
        started.elapsed(),
        images[2].0
    ));
    // The third namespace gains the label; no Pod changes, and the policy's interval (10m)
    // is far: the namespace watch wakes the policy. First the last status writes of the
    // settling children and policy pass, so that none of them wakes it instead.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let labelled = Instant::now();
    namespaces
        .patch(
            &images[2].0,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"soci.dev/e2e-policy": suffix}}})),
        )
        .await?;
    // Created at the next reconcile: within seconds when the label change wakes the policy;
    // without the namespace watch, only when something else happens to (about a minute here).
    let uid = policy.metadata.uid.clone().unwrap_or_default();
    let created = poll(
        Duration::from_secs(20),
        Duration::from_millis(500),
        async || {
            let children = t.children_of(&t.ns, &uid).await.ok()?;
            references(&children).contains(&images[2].1).then_some(())
        },
    )
    .await;
    ensure!(
        created.is_some(),
        "labelling {} made no child within 20 s",
        images[2].0
    );
    let all = set(&[&images[0].1, &images[1].1, &images[2].1]);
    t.wait_policy(
        &t.cluster_policies(),
        &name,
        &t.ns,
        SETTLE,
        "Ready with the third namespace's child too",
        |p: &ClusterSociIndexPolicy, c| settled(p.status.as_ref(), c, &all),
    )
    .await?;
    t.note(format!(
        "labelling {} added its child, Ready after {:?}",
        images[2].0,
        labelled.elapsed()
    ));
    t.pass();
    Ok(())
}

// --- a repository's tags ---------------------------------------------------------------------

/// A repository policy with `tags: {semver: ">=1.2.0, <2.0.0"}` over tags 1.2.3, 1.2.4 and
/// 2.0.0: children for 1.2.x only; 1.2.5 pushed later gets a child at the next listing
/// (interval 10s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_repository_semver() -> Result<()> {
    let t = start!("policy-repository-semver");
    let ns = t.ns.clone();
    let started = Instant::now();
    let repo = t.repo("svc");
    let tag = |v: &str| format!("{repo}:{v}");
    for v in ["1.2.3", "1.2.4", "2.0.0"] {
        t.push_image(&tag(v))?;
    }
    let _op = t.cluster_operator(&[]).await?;
    t.apply_policy(
        &ns,
        "tags",
        json!({
            "sources": {"repositories": [{"repository": repo, "tags": {"semver": ">=1.2.0, <2.0.0"}}]},
            "interval": "10s",
        }),
    )
    .await?;
    let policies = t.policies(&ns);
    let (t123, t124, t125, t200) = (tag("1.2.3"), tag("1.2.4"), tag("1.2.5"), tag("2.0.0"));
    let all_ready = |c: &[api::SociIndex], refs: &[&String]| {
        refs.iter().all(|r| child_of(c, r).is_some_and(is_ready))
    };
    let (policy, _) = t
        .wait_policy(
            &policies,
            "tags",
            &ns,
            SETTLE,
            "Ready with children for 1.2.3 and 1.2.4",
            |p: &SociIndexPolicy, c| {
                policy_true(p.status.as_ref(), "Ready") && all_ready(c, &[&t123, &t124])
            },
        )
        .await?;
    let listed = |p: &SociIndexPolicy| {
        p.status
            .as_ref()
            .and_then(|s| s.sources.iter().find(|s| s.source == repo))
            .and_then(|s| s.last_listed.clone())
    };
    let first_listing = listed(&policy).context("status.sources names the repository's listing")?;
    t.note(format!(
        "1.2.3 and 1.2.4 Ready after {:?}",
        started.elapsed()
    ));

    let phase = Instant::now();
    t.push_image(&t125)?;
    let (policy, children) = t
        .wait_policy(
            &policies,
            "tags",
            &ns,
            SETTLE,
            "Ready with a child for 1.2.5",
            |p: &SociIndexPolicy, c| {
                policy_true(p.status.as_ref(), "Ready") && all_ready(c, &[&t123, &t124, &t125])
            },
        )
        .await?;
    ensure!(
        listed(&policy).is_some_and(|l| l != first_listing),
        "lastListed did not move"
    );
    t.note(format!("1.2.5 Ready {:?} after its push", phase.elapsed()));
    // Unpinned: a repository child follows its tag.
    ensure!(
        child_image(&children, &t125) == t125,
        "1.2.5 child {}",
        child_image(&children, &t125)
    );
    ensure!(
        child_of(&children, &t200).is_none(),
        "2.0.0 got a child, outside >=1.2.0, <2.0.0 (expected while operator/src/controller/policy_tags.rs is the stub that selects every tag; needs wip/tags)"
    );
    ensure!(
        references(&children) == set(&[&t123, &t124, &t125]),
        "children {:?}",
        references(&children)
    );
    t.pass();
    Ok(())
}

// --- an invalid policy -----------------------------------------------------------------------

/// A policy whose include is not a glob (`a[`) is Stalled with InvalidSpec, naming the
/// pattern, and creates nothing though a Pod runs an image; fixed, it makes its child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_invalid_glob() -> Result<()> {
    let t = start!("policy-invalid-glob");
    let ns = t.ns.clone();
    let image = format!("{}:v1", t.repo("app"));
    t.push_runnable_image(&image)?;
    apply_object(
        &Api::<Pod>::namespaced(t.client.clone(), &ns),
        pod(&ns, "app", &image),
    )
    .await?;
    let _op = t.cluster_operator(&[]).await?;
    let policies = t.policies(&ns);
    t.apply_policy(
        &ns,
        "bad",
        json!({"sources": {"workloads": {}}, "include": ["a["]}),
    )
    .await?;
    let policy = t
        .wait_object(
            &policies,
            "bad",
            SECS(60),
            "Stalled",
            |p: &SociIndexPolicy| policy_true(p.status.as_ref(), "Stalled"),
        )
        .await?;
    for type_ in ["Stalled", "Ready"] {
        let c = policy_condition(policy.status.as_ref(), type_).context("the condition")?;
        ensure!(c.reason == "InvalidSpec", "{type_}: reason {}", c.reason);
        ensure!(
            c.message.contains("\"a[\""),
            "{type_}: the message does not name the pattern: {}",
            c.message
        );
    }
    ensure!(
        !policy_true(policy.status.as_ref(), "Ready"),
        "an invalid policy is Ready"
    );
    // Long enough for the Pod's events and a few reconciles.
    tokio::time::sleep(SECS(8)).await;
    let uid = policy.uid().unwrap_or_default();
    ensure!(
        t.children_of(&ns, &uid).await?.is_empty(),
        "an invalid policy made children"
    );
    ensure!(
        t.indexes(&ns)
            .list(&Default::default())
            .await?
            .items
            .is_empty(),
        "SociIndexes were made"
    );

    t.apply_policy(
        &ns,
        "bad",
        json!({"sources": {"workloads": {}}, "include": ["**/app-*"]}),
    )
    .await?;
    let want = set(&[&image]);
    let (policy, _) = t
        .wait_policy(
            &policies,
            "bad",
            &ns,
            SETTLE,
            "Ready once fixed",
            |p: &SociIndexPolicy, c| settled(p.status.as_ref(), c, &want),
        )
        .await?;
    ensure!(
        !policy_true(policy.status.as_ref(), "Stalled"),
        "still Stalled once fixed"
    );
    t.pass();
    Ok(())
}
