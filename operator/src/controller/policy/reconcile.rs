//! One policy reconcile, step by step: check the spec, observe the sources and the children,
//! plan, apply, write the status, publish Events.

use super::plan::{self, Candidate, Owner, Settings, WORKLOADS_SOURCE};
use super::{PolicyContext, PolicyRef, apply, observe};
use crate::api::policy::{PolicyStatus, SourceStatus};
use crate::api::{RECONCILE_REQUEST_ANNOTATION, SociIndex};
use crate::controller::durations::{jittered, rfc3339};
use crate::controller::events::{EventAction, event};
use crate::registry::RegistryRef;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::collections::BTreeSet;
use std::time::Duration;

/// A policy that is not Ready comes back at least this often (its children's changes also
/// wake it).
const NOT_READY_RECHECK: Duration = Duration::from_secs(60);

pub async fn reconcile(ctx: &PolicyContext, policy: PolicyRef<'_>) -> anyhow::Result<Action> {
    let meta = policy.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    let owner = Owner {
        kind: policy.kind(),
        name: meta.name.clone().unwrap_or_default(),
        uid: uid.clone(),
        child_namespace: policy.child_namespace(),
    };
    let now = Timestamp::now();
    let generation = meta.generation;
    if meta.deletion_timestamp.is_some() {
        // Its children go with it (garbage collection of the controller reference).
        ctx.metrics.forget(policy.kind(), &policy.key());
        return Ok(Action::await_change());
    }
    let settings =
        match Settings::from_spec(policy.spec()).and_then(|s| check_sources(&policy).map(|()| s)) {
            Ok(s) => s,
            Err(why) => {
                let status = plan::invalid_status(policy.status(), generation, &why, now);
                write_status(ctx, &policy, &status).await?;
                return Ok(Action::await_change());
            }
        };
    if policy.spec().suspend {
        return Ok(Action::await_change());
    }
    let request = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECONCILE_REQUEST_ANNOTATION))
        .cloned();

    // Observe. An unsynced Pod store would look like no Pods, marking every child unused.
    if policy.spec().sources.workloads.is_some() {
        ctx.pods.wait_until_ready().await?;
    }
    let existing = observe::children(ctx, &owner.child_namespace, &uid).await?;
    let (candidates, sources, unlisted) = observe_sources(
        ctx,
        &policy,
        &settings,
        &existing,
        request.as_deref(),
        generation,
        now,
    )
    .await?;

    // Plan.
    let selection = plan::select(candidates, &settings);
    let children_plan = plan::plan_children(
        &owner,
        &policy.spec().template,
        &selection,
        &existing,
        &unlisted,
        settings.retention,
        now,
    );

    // Apply.
    let api: Api<SociIndex> = Api::namespaced(ctx.main.client.clone(), &owner.child_namespace);
    let names: Vec<String> = existing
        .iter()
        .filter(|c| c.ours)
        .map(|c| c.name.clone())
        .collect();
    let applied = apply::apply(&api, &owner, &children_plan, &names, now).await?;
    let mut children_plan = children_plan;
    children_plan
        .conflicts
        .extend(applied.conflicts.iter().cloned());

    // Status and Events.
    let status = plan::policy_status(
        &owner,
        policy.status(),
        generation,
        &selection,
        &existing,
        &children_plan,
        sources,
        request.as_deref(),
        now,
    );
    let previous_cut = policy.status().map(|s| s.cut_image_count).unwrap_or(0);
    write_status(ctx, &policy, &status).await?;
    ctx.metrics.record(
        policy.kind(),
        &policy.key(),
        i64::from(status.selected_images),
        i64::from(status.ready_children),
        i64::from(status.children),
    );
    for name in &applied.created {
        publish(
            ctx,
            &policy,
            false,
            "ChildCreated",
            format!("created SociIndex {}/{name}", owner.child_namespace),
        )
        .await;
    }
    for name in &applied.deleted {
        publish(
            ctx,
            &policy,
            false,
            "ChildDeleted",
            format!(
                "deleted SociIndex {}/{name}: its image was not selected for the retention",
                owner.child_namespace
            ),
        )
        .await;
    }
    if status.cut_image_count != previous_cut && status.cut_image_count > 0 {
        publish(
            ctx,
            &policy,
            true,
            "ImagesCut",
            format!(
                "{} selected images get no SociIndex: over maxImages ({}); see status.cutImages",
                status.cut_image_count, settings.max_images
            ),
        )
        .await;
    }

    // When to come back: the next listing, the next retention expiry, or soon while not Ready.
    let mut wait = jittered(settings.interval, &uid);
    if let Some(expiry) = children_plan.next_expiry {
        wait = wait.min(expiry + Duration::from_secs(1));
    }
    if status.ready_children < status.children || !children_plan.apply.is_empty() {
        wait = wait.min(NOT_READY_RECHECK);
    }
    Ok(Action::requeue(wait))
}

/// Repositories and tag selections the schema cannot check.
pub(crate) fn check_sources(policy: &PolicyRef<'_>) -> Result<(), String> {
    for source in &policy.spec().sources.repositories {
        RegistryRef::parse(&source.repository).map_err(|e| format!("{e:#}"))?;
        // The parsed reference has a default tag: look at the text.
        let last = source.repository.rsplit('/').next().unwrap_or_default();
        if source.repository.contains('@') || last.contains(':') {
            return Err(format!(
                "repository {:?} names a tag or digest: name only the repository",
                source.repository
            ));
        }
        crate::controller::policy_tags::validate(&source.tags)
            .map_err(|e| format!("repository {}: {e}", source.repository))?;
    }
    Ok(())
}

/// The candidates of every source, each source's status, and the sources not listed this time
/// (failed, or not due), whose children stand as they are.
async fn observe_sources(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
    settings: &Settings,
    existing: &[plan::ExistingChild],
    request: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> anyhow::Result<(Vec<Candidate>, Vec<SourceStatus>, BTreeSet<String>)> {
    let previous = policy.status();
    let mut candidates = Vec::new();
    let mut sources = Vec::new();
    let mut unlisted = BTreeSet::new();
    if policy.spec().sources.workloads.is_some() {
        let namespaces = observe::workload_namespaces(ctx, policy).await?;
        let found = observe::workload_candidates(ctx, policy, &namespaces).await?;
        ctx.metrics
            .listings
            .with_label_values(&["workloads", "ok"])
            .inc();
        let distinct: BTreeSet<&str> = found.iter().map(|c| c.reference.as_str()).collect();
        let before = previous.and_then(|p| p.sources.iter().find(|s| s.source == WORKLOADS_SOURCE));
        sources.push(workloads_status(
            before,
            distinct.len(),
            settings.interval,
            now,
        ));
        candidates.extend(found);
    }
    for source in &policy.spec().sources.repositories {
        let before =
            previous.and_then(|p| p.sources.iter().find(|s| s.source == source.repository));
        if !listing_due(
            previous,
            before,
            generation,
            request,
            settings.interval,
            now,
        ) {
            if let Some(before) = before {
                sources.push(before.clone());
            }
            unlisted.insert(source.repository.clone());
            candidates.extend(kept(existing, &source.repository));
            continue;
        }
        match observe::repository_candidates(ctx, policy, source).await {
            Ok(found) => {
                ctx.metrics
                    .listings
                    .with_label_values(&["repository", "ok"])
                    .inc();
                sources.push(SourceStatus {
                    source: source.repository.clone(),
                    last_listed: Some(rfc3339(now)),
                    images: found.len() as i32,
                    error: None,
                });
                candidates.extend(found);
            }
            Err(why) => {
                ctx.metrics
                    .listings
                    .with_label_values(&["repository", "error"])
                    .inc();
                let mut status = before.cloned().unwrap_or_else(|| SourceStatus {
                    source: source.repository.clone(),
                    ..Default::default()
                });
                let mut why = why;
                crate::api::condition::truncate(&mut why, 512);
                status.error = Some(why);
                sources.push(status);
                unlisted.insert(source.repository.clone());
                candidates.extend(kept(existing, &source.repository));
            }
        }
    }
    Ok((candidates, sources, unlisted))
}

/// The workloads source's status. Its store is read at every reconcile, but `lastListed` moves
/// only when the count changes or once per interval: a status that changed at every reconcile
/// would wake the policy again with its own write, for ever.
fn workloads_status(
    before: Option<&SourceStatus>,
    images: usize,
    interval: Duration,
    now: Timestamp,
) -> SourceStatus {
    let fresh = before.filter(|b| {
        b.images == images as i32
            && b.error.is_none()
            && b.last_listed
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| now.duration_since(t).unsigned_abs() < interval)
    });
    fresh.cloned().unwrap_or_else(|| SourceStatus {
        source: WORKLOADS_SOURCE.into(),
        last_listed: Some(rfc3339(now)),
        images: images as i32,
        error: None,
    })
}

/// Whether a repository is listed in this reconcile: never listed, a new generation, a
/// reconcile request (a push event), the last listing failed, or the interval has passed.
fn listing_due(
    previous: Option<&PolicyStatus>,
    before: Option<&SourceStatus>,
    generation: Option<i64>,
    request: Option<&str>,
    interval: Duration,
    now: Timestamp,
) -> bool {
    let Some(before) = before else { return true };
    let Some(previous) = previous else {
        return true;
    };
    if previous.observed_generation != generation
        || before.error.is_some()
        || (request.is_some() && request != previous.last_handled_reconcile_at.as_deref())
    {
        return true;
    }
    let Some(last) = before
        .last_listed
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return true;
    };
    now.duration_since(last).unsigned_abs() >= interval
}

/// The children of a source not listed this time, as candidates (those not already unused).
fn kept(existing: &[plan::ExistingChild], source: &str) -> Vec<Candidate> {
    existing
        .iter()
        .filter(|c| c.ours && c.unused_since.is_none() && c.source.as_deref() == Some(source))
        .filter_map(|c| {
            Some(Candidate {
                reference: c.reference.clone()?,
                digest: None,
                source: source.to_string(),
                pull_secrets: Default::default(),
                seen: None,
            })
        })
        .collect()
}

async fn write_status(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
    status: &PolicyStatus,
) -> anyhow::Result<()> {
    if policy.status() == Some(status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "soci.dev/v1alpha1",
        "kind": policy.kind(),
        "status": status,
    });
    let params = PatchParams::apply(crate::controller::FIELD_MANAGER).force();
    let name = policy.meta().name.clone().unwrap_or_default();
    match policy {
        PolicyRef::Namespaced(p) => {
            let api: Api<crate::api::policy::SociIndexPolicy> =
                Api::namespaced(ctx.main.client.clone(), &p.namespace().unwrap_or_default());
            api.patch_status(&name, &params, &Patch::Apply(&patch))
                .await?;
        }
        PolicyRef::Cluster(_) => {
            let api: Api<crate::api::policy::ClusterSociIndexPolicy> =
                Api::all(ctx.main.client.clone());
            api.patch_status(&name, &params, &Patch::Apply(&patch))
                .await?;
        }
    }
    Ok(())
}

async fn publish(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
    warning: bool,
    reason: &str,
    note: String,
) {
    let e = event(warning, EventAction::Reconcile, reason, note);
    if let Err(err) = ctx.main.recorder.publish(&e, &policy.object_ref()).await {
        tracing::warn!(error = %err, policy = %policy.key(), %reason, "publishing an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::{
        PolicySources, RepositorySource, SociIndexPolicy, SociIndexPolicySpec,
    };

    fn policy(repository: &str) -> SociIndexPolicy {
        SociIndexPolicy::new(
            "p",
            SociIndexPolicySpec {
                policy: crate::api::policy::PolicySpec {
                    sources: PolicySources {
                        repositories: vec![RepositorySource {
                            repository: repository.into(),
                            tags: serde_json::from_value(serde_json::json!({"semver": "^1"}))
                                .unwrap(),
                        }],
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
        )
    }

    #[test]
    fn the_workloads_status_holds_still_while_nothing_changes() {
        let t0: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let interval = Duration::from_secs(600);
        let first = workloads_status(None, 3, interval, t0);
        assert_eq!(first.last_listed.as_deref(), Some("2026-12-02T12:00:00Z"));
        let later = t0 + Duration::from_secs(30);
        // Same count within the interval: the same status, so no write wakes the policy.
        assert_eq!(workloads_status(Some(&first), 3, interval, later), first);
        // A new count, or the interval passed: a new listing time.
        assert_eq!(workloads_status(Some(&first), 4, interval, later).images, 4);
        let much_later = t0 + Duration::from_secs(601);
        assert_ne!(
            workloads_status(Some(&first), 3, interval, much_later),
            first
        );
    }

    #[test]
    fn a_repository_is_named_without_tag_or_digest() {
        for ok in [
            "127.0.0.1:5000/e2e/svc",
            "registry.example/team/api",
            "nginx",
        ] {
            let p = policy(ok);
            assert!(check_sources(&PolicyRef::Namespaced(&p)).is_ok(), "{ok}");
        }
        let digest = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));
        for bad in ["127.0.0.1:5000/app:v1", digest.as_str(), "UPPER/case"] {
            let p = policy(bad);
            assert!(check_sources(&PolicyRef::Namespaced(&p)).is_err(), "{bad}");
        }
    }
}
