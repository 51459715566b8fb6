//! `soci-operator run`: the SociIndex controller. Each reconcile observes (registry look-ups,
//! owned Jobs), plans with the pure [`plan::plan`], and applies (Jobs created or deleted, the
//! status written with server-side apply when it changed).

pub mod plan;
pub mod registry_check;
pub mod worker;

use crate::api::{RECONCILE_REQUEST_ANNOTATION, SociIndex, SociIndexStatus};
use crate::registry::RegistryClient;
use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use plan::{ImageObservation, JobState, PlanInput};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::{MANAGED_BY, MANAGED_BY_LABEL, OWNER_UID_LABEL, WorkerOptions};

pub const FIELD_MANAGER: &str = "soci-operator";
/// How soon a reconcile that failed on the Kubernetes API is tried again.
const API_ERROR_RETRY: Duration = Duration::from_secs(30);

pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    duration: HistogramVec,
    jobs_created: IntCounterVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("soci_operator_reconciles_total", "Reconciles by result"),
            &["result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "soci_operator_reconcile_duration_seconds",
                "Time one reconcile took",
            ),
            &["result"],
        )?;
        let jobs_created = IntCounterVec::new(
            Opts::new("soci_operator_jobs_total", "Worker Jobs by action"),
            &["action"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(jobs_created.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            duration,
            jobs_created,
        })
    }
}

pub struct Context {
    pub client: Client,
    pub registry: Arc<RegistryClient>,
    pub worker: WorkerOptions,
    pub metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct ReconcileError(anyhow::Error);

/// Runs the controller until a termination signal. `namespace`: watch only that one.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) -> anyhow::Result<()> {
    let (indexes, jobs): (Api<SociIndex>, Api<Job>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    indexes
        .list(&ListParams::default().limit(1))
        .await
        .context("listing SociIndexes (is the CRD installed? run `soci-operator crd`)")?;
    let owned_jobs = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    Controller::new(indexes, watcher::Config::default())
        .owns(jobs, owned_jobs)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile not run");
            }
        })
        .await;
    Ok(())
}

fn error_policy(object: Arc<SociIndex>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %object.name_any(), namespace = ?object.namespace(), error = %error, "reconcile failed");
    ctx.metrics.reconciles.with_label_values(&["error"]).inc();
    Action::requeue(API_ERROR_RETRY)
}

async fn reconcile(object: Arc<SociIndex>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_inner(&object, &ctx).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .duration
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
    }
    result.map_err(ReconcileError)
}

async fn reconcile_inner(object: &SociIndex, ctx: &Context) -> anyhow::Result<Action> {
    if object.metadata.deletion_timestamp.is_some() {
        // Owned Jobs go with the object (owner references); deletionPolicy Delete is not yet
        // implemented, so nothing pushed is removed.
        return Ok(Action::await_change());
    }
    let namespace = object
        .namespace()
        .context("SociIndex without a namespace")?;
    let name = object.name_any();
    let uid = object
        .metadata
        .uid
        .clone()
        .context("SociIndex without a uid")?;
    let indexes: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = object.metadata.generation;
    let spec = &object.spec;

    if !spec.suspend
        && let Some(early) =
            plan::early_status(generation, object.status.as_ref(), Timestamp::now())
    {
        write_status(&indexes, &name, &early).await?;
    }

    let settings = plan::BuildSettings::from_spec(spec);
    let mut images = Vec::new();
    if !spec.suspend {
        for image in &spec.images {
            let resolved = registry_check::resolve(
                &ctx.registry,
                &image.image,
                spec.target.as_ref(),
                &image.name,
            )
            .await;
            let target = match &resolved {
                Ok(r) => Some(registry_check::target_binding(&ctx.registry, r, &settings).await),
                Err(_) => None,
            };
            images.push(ImageObservation {
                name: image.name.clone(),
                resolved,
                target,
            });
        }
    }

    let owned = jobs_api
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .context("listing worker Jobs")?;
    let mut jobs = Vec::new();
    for job in &owned.items {
        let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0;
        let pods = if failed {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            pods.list(
                &ListParams::default()
                    .labels(&format!("batch.kubernetes.io/job-name={}", job.name_any())),
            )
            .await
            .context("listing worker Pods")?
            .items
        } else {
            vec![]
        };
        jobs.extend(worker::observe_job(job, &pods));
    }

    let reconcile_request = object
        .annotations()
        .get(RECONCILE_REQUEST_ANNOTATION)
        .map(String::as_str);
    let planned = plan::plan(PlanInput {
        uid: &uid,
        generation,
        spec,
        status: object.status.as_ref(),
        reconcile_request,
        images,
        jobs: jobs.clone(),
        now: Timestamp::now(),
    });

    for job_name in &planned.delete {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match jobs_api.delete(job_name, &params).await {
            Ok(_) => {
                ctx.metrics
                    .jobs_created
                    .with_label_values(&["deleted"])
                    .inc();
                tracing::info!(%namespace, %name, job = %job_name, "deleted worker Job");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).context(format!("deleting Job {job_name}")),
        }
    }
    let mut requeue = planned.requeue_after;
    for request in &planned.create {
        let job = worker::build_job(object, request, &ctx.worker);
        match jobs_api.create(&PostParams::default(), &job).await {
            Ok(_) => {
                ctx.metrics
                    .jobs_created
                    .with_label_values(&["created"])
                    .inc();
                tracing::info!(%namespace, %name, job = %request.job_name, image = %request.image_name, source = %request.source, target = %request.target, "created worker Job");
            }
            // Still there (being deleted after a transient failure): try again shortly.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                requeue = Some(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context(format!("creating Job {}", request.job_name)),
        }
    }
    let running = jobs.iter().any(|j| j.state == JobState::Running);
    let current = object.status.clone().unwrap_or_default();
    if planned.status != current {
        write_status(&indexes, &name, &planned.status).await?;
        tracing::info!(
            %namespace, %name,
            ready = planned.status.ready_images,
            desired = planned.status.desired_images,
            "status updated"
        );
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None if running => Action::requeue(plan::RUNNING_JOB_RECHECK),
        None => Action::await_change(),
    })
}

async fn write_status(
    api: &Api<SociIndex>,
    name: &str,
    status: &SociIndexStatus,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "soci.dev/v1alpha1",
        "kind": "SociIndex",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .with_context(|| format!("writing the status of {name}"))?;
    Ok(())
}
