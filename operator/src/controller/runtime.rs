//! Running the controllers: one kube-runtime Controller per watched namespace (or one for all)
//! sharing one [`Context`], each reconciling through the [`boundary`](super::boundary) (panics
//! caught, a deadline), the worker-Job watches behind the Job caps and the Job metrics, leader
//! election, readiness, and Events.

use super::Context;
use super::boundary::reconcile_at_boundary;
use super::leader::Elector;
use super::reconcile::error_policy;
use super::slots::{JobPhase, phase};
use super::worker::{MANAGED_BY, MANAGED_BY_LABEL, WorkerResult};
use crate::api::SociIndex;
use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

pub struct RunOptions {
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub leader: Option<LeaderOptions>,
    /// `--max-concurrent-reconciles`, shared out among the namespaces' controllers. The
    /// Controller's own limit, not a semaphore inside the reconcile: a reconcile waiting for a
    /// slot would hold the object as it was when it was queued, not as it is when it runs.
    pub max_concurrent_reconciles: u16,
    /// Run the policy controllers (cluster-wide only).
    pub policies: bool,
}

pub struct LeaderOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// `POD_NAME`, else the host name: who holds the Lease and reports the Events.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "soci-operator".into())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs until a termination signal (or, when leading, until the Lease is lost: then the
/// process exits).
pub async fn run(ctx: Arc<Context>, options: RunOptions) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let scopes: Vec<Option<&str>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options
            .namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    for scope in &scopes {
        api::<SociIndex>(&ctx.client, *scope)
            .list(&ListParams::default().limit(1))
            .await
            .with_context(|| {
                format!(
                    "listing SociIndexes in {} (is the CRD installed? run `soci-operator crd`)",
                    scope.unwrap_or("all namespaces")
                )
            })?;
    }

    let elector = match &options.leader {
        Some(l) => {
            ctx.standby.store(true, Ordering::Relaxed);
            ctx.metrics.leader.set(0);
            let elector = Arc::new(Elector::new(
                ctx.client.clone(),
                &l.namespace,
                &l.name,
                &l.identity,
            ));
            tokio::select! {
                _ = elector.acquire() => {}
                _ = wait(shutdown.clone()) => {
                    tracing::info!("standby stopping");
                    return Ok(());
                }
            }
            Some(elector)
        }
        None => None,
    };
    ctx.metrics.leader.set(1);
    ctx.standby.store(false, Ordering::Relaxed);
    let keeper = elector.clone().map(|e| {
        tokio::spawn(async move {
            let why = e.keep().await;
            tracing::error!(reason = %why, "lost the leader lease: exiting so that this replica restarts as a standby");
            std::process::exit(1);
        })
    });

    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let mut background = Vec::new();
    // Job changes reach the controllers from the same watch that fills the Job store, after the
    // store has them: a reconcile triggered by a finished Job then sees it finished.
    let mut job_triggers = Vec::new();
    for scope in &scopes {
        let (reader, writer) = reflector::store();
        ctx.jobs.add_store(reader.clone());
        let (owners, triggers) = tokio::sync::mpsc::unbounded_channel();
        job_triggers.push(triggers);
        background.push(tokio::spawn(watch_jobs(
            ctx.clone(),
            api(&ctx.client, *scope),
            owned.clone(),
            reader,
            writer,
            owners,
        )));
    }
    let mut job_triggers = job_triggers.into_iter();
    let mut controllers = Vec::new();
    let mut index_stores = Vec::new();
    let mut index_synced = Vec::new();
    for scope in &scopes {
        // One store per namespace, shared by the Controller, readiness and the gauge pruning,
        // holding objects without managedFields (most of an object's memory once its status
        // lists many images).
        let (reader, writer) = reflector::store();
        let (done, synced) = tokio::sync::oneshot::channel();
        let mut done = Some(done);
        ctx.jobs.add_index_store(reader.clone());
        let tracker = ctx.clone();
        let objects = watcher(
            api::<SociIndex>(&ctx.client, *scope),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|o: &mut SociIndex| o.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event
                && let Some(done) = done.take()
            {
                let _ = done.send(());
                tracker.jobs.mark_synced();
            }
        })
        .applied_objects()
        .predicate_filter(reconcile_inputs, Default::default());
        index_stores.push(reader.clone());
        index_synced.push(synced);
        let concurrency = (options.max_concurrent_reconciles / scopes.len().max(1) as u16).max(1);
        let triggers = job_triggers.next().expect("one Job watch per scope");
        let triggers = futures_util::stream::unfold(triggers, |mut rx| async move {
            rx.recv().await.map(|owner| (owner, rx))
        });
        let controller = Controller::for_stream(objects, reader)
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
            .reconcile_on(triggers)
            .graceful_shutdown_on(wait(shutdown.clone()));
        controllers.push(
            controller
                .run(reconcile_at_boundary, error_policy, ctx.clone())
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "reconcile not run");
                    }
                }),
        );
    }
    let mut policy_controllers = None;
    if options.policies {
        let (pod_namespaces, changed) = tokio::sync::mpsc::channel(1024);
        let (pods, pod_watch) =
            super::policy::runtime::watch_pods(ctx.client.clone(), pod_namespaces);
        background.push(tokio::spawn(pod_watch));
        let policy_ctx = Arc::new(super::policy::PolicyContext {
            main: ctx.clone(),
            pods,
            metrics: super::policy::PolicyMetrics::new(&ctx.metrics.registry)?,
        });
        policy_controllers = Some(super::policy::runtime::run(
            policy_ctx,
            changed,
            shutdown.clone(),
        ));
    }
    tracing::info!(namespaces = ?options.namespaces, "controllers starting");
    background.push(tokio::spawn(readiness(ctx.clone(), index_synced)));
    background.push(tokio::spawn(prune_stats(ctx.clone(), index_stores)));
    let policies = async move {
        if let Some(run) = policy_controllers {
            run.await
        }
    };
    futures_util::future::join(futures_util::future::join_all(controllers), policies).await;

    if let Some(k) = keeper {
        k.abort();
    }
    for task in background {
        task.abort();
    }
    if let Some(e) = elector
        && let Err(e) = e.release().await
    {
        tracing::warn!(error = %format!("{e:#}"), "releasing the leader lease");
    }
    tracing::info!("controllers stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C flips the channel to `true`; a second one exits at once.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("termination signal: finishing the running reconciles");
        let _ = tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        std::process::exit(1);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn readiness(ctx: Arc<Context>, synced: Vec<tokio::sync::oneshot::Receiver<()>>) {
    for s in synced {
        let _ = s.await;
    }
    ctx.jobs.wait_ready().await;
    ctx.synced.store(true, Ordering::Relaxed);
    tracing::info!("watches synced: ready");
}

/// Objects deleted without a finalizer are never reconciled again: drop their contribution
/// to the gauges, and their full-check times, once they are gone from every store.
async fn prune_stats(ctx: Arc<Context>, stores: Vec<Store<SociIndex>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        if !ctx.synced.load(Ordering::Relaxed) {
            continue;
        }
        let objects: Vec<_> = stores.iter().flat_map(|s| s.state()).collect();
        let keys: HashSet<String> = objects.iter().map(|o| super::object_key(o)).collect();
        let uids: HashSet<String> = objects.iter().filter_map(|o| o.uid()).collect();
        ctx.full_checks.retain(|uid| uids.contains(uid));
        ctx.retries.retain(|uid| uids.contains(uid));
        let mut stats = crate::locks::lock(&ctx.stats);
        stats.retain(|k| keys.contains(k));
        ctx.publish_stats(&stats);
    }
}

/// Keeps a Job store (the caps, the jobs gauge) and observes each build once as it finishes:
/// its duration, and the bytes it indexed (from the worker's result).
async fn watch_jobs(
    ctx: Arc<Context>,
    api: Api<Job>,
    config: watcher::Config,
    reader: Store<Job>,
    writer: reflector::store::Writer<Job>,
    owners: tokio::sync::mpsc::UnboundedSender<ObjectRef<SociIndex>>,
) {
    let started = Timestamp::now();
    let mut observed: HashSet<String> = HashSet::new();
    let mut synced = false;
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|j: &mut Job| j.managed_fields_mut().clear())
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        // The store has the change now: the owner may look at it.
        if let Ok(
            watcher::Event::Apply(job)
            | watcher::Event::InitApply(job)
            | watcher::Event::Delete(job),
        ) = &event
            && let Some(owner) = owner_of(job)
        {
            let _ = owners.send(owner);
        }
        let job = match event {
            Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) => {
                ctx.jobs
                    .seen(&job.namespace().unwrap_or_default(), &job.name_any());
                job
            }
            Ok(watcher::Event::InitDone) => {
                if !synced {
                    synced = true;
                    ctx.jobs.mark_synced();
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "watching worker Jobs");
                continue;
            }
        };
        let state = phase(&job);
        let Some(uid) = job.uid() else { continue };
        if state == JobPhase::Running || observed.contains(&uid) {
            continue;
        }
        observed.insert(uid);
        if observed.len() > 1000 {
            let live: HashSet<String> = reader.state().iter().filter_map(|j| j.uid()).collect();
            observed.retain(|u| live.contains(u));
        }
        let status = job.status.clone().unwrap_or_default();
        let finished = status.completion_time.map(|t| t.0).or_else(|| {
            status
                .conditions
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
        });
        // Builds that finished before this process started were counted by its predecessor.
        let Some(finished) = finished.filter(|f| *f >= started) else {
            continue;
        };
        if let Some(start) = status.start_time {
            let seconds = finished.duration_since(start.0).as_secs_f64();
            ctx.metrics.build_duration.observe(seconds.max(0.0));
        }
        if state == JobPhase::Succeeded {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Some(bytes) = indexed_bytes(&ctx.client, &job).await {
                    ctx.metrics.indexed_bytes.inc_by(bytes);
                }
            });
        }
    }
}

/// What a reconcile acts on besides the status: the spec (its generation), the reconcile-request
/// annotation, deletion and finalizers. A change to anything else, above all the status this
/// controller writes itself, triggers no reconcile (the interval and the Job watch cover the rest).
fn reconcile_inputs(object: &SociIndex) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    object.metadata.generation.hash(&mut h);
    object
        .annotations()
        .get(crate::api::RECONCILE_REQUEST_ANNOTATION)
        .hash(&mut h);
    object.metadata.deletion_timestamp.is_some().hash(&mut h);
    object.finalizers().hash(&mut h);
    Some(h.finish())
}

/// The SociIndex that controls a worker Job (its controller ownerReference, of our API group).
fn owner_of(job: &Job) -> Option<ObjectRef<SociIndex>> {
    let owner = job
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .filter(|o| o.kind == "SociIndex" && o.api_version.starts_with("soci.dev/"))?;
    Some(ObjectRef::new(&owner.name).within(&job.namespace()?))
}

/// The `bytesIndexed` of the worker's result (its termination message).
async fn indexed_bytes(client: &Client, job: &Job) -> Option<u64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &job.namespace()?);
    let list = pods
        .list(
            &ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={}", job.name_any())),
        )
        .await
        .ok()?;
    list.items.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|c| {
                let message = c.state.as_ref()?.terminated.as_ref()?.message.as_ref()?;
                let result: WorkerResult = serde_json::from_str(message.trim()).ok()?;
                result.ok.then_some(result.bytes_indexed)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn job(owners: Vec<OwnerReference>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("soci-build-1".into()),
                namespace: Some("team-a".into()),
                owner_references: Some(owners),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn reference(kind: &str, name: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "soci.dev/v1alpha1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "uid-1".into(),
            controller: Some(controller),
            ..Default::default()
        }
    }

    #[test]
    fn only_changes_a_reconcile_acts_on_trigger_one() {
        let mut object = SociIndex::new(
            "web",
            serde_json::from_value(
                serde_json::json!({"images": [{"name": "a", "image": "r/a:1"}]}),
            )
            .unwrap(),
        );
        object.metadata.generation = Some(1);
        let base = reconcile_inputs(&object);
        let mut status_only = object.clone();
        status_only.status = Some(crate::api::SociIndexStatus {
            ready_images: 1,
            ..Default::default()
        });
        status_only.metadata.resource_version = Some("42".into());
        assert_eq!(reconcile_inputs(&status_only), base);
        let mut changed = Vec::new();
        let mut spec = object.clone();
        spec.metadata.generation = Some(2);
        changed.push(spec);
        let mut requested = object.clone();
        requested.metadata.annotations = Some(
            [(
                crate::api::RECONCILE_REQUEST_ANNOTATION.to_string(),
                "now".to_string(),
            )]
            .into(),
        );
        changed.push(requested);
        let mut deleting = object.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        changed.push(deleting);
        let mut finalized = object.clone();
        finalized.metadata.finalizers = Some(vec!["soci.dev/cleanup".into()]);
        changed.push(finalized);
        for c in &changed {
            assert_ne!(reconcile_inputs(c), base, "{:?}", c.metadata);
        }
    }

    #[test]
    fn a_job_change_reconciles_the_sociindex_that_controls_it() {
        let owned = job(vec![
            reference("ConfigMap", "other", false),
            reference("SociIndex", "web", true),
        ]);
        assert_eq!(
            owner_of(&owned),
            Some(ObjectRef::new("web").within("team-a"))
        );
        assert_eq!(
            owner_of(&job(vec![reference("SociIndex", "web", false)])),
            None
        );
        let mut other_group = reference("SociIndex", "web", true);
        other_group.api_version = "evil.example/v1".into();
        assert_eq!(owner_of(&job(vec![other_group])), None);
        assert_eq!(owner_of(&job(vec![])), None);
    }
}
