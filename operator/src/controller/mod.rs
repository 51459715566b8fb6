//! `soci-operator run`: the SociIndex controller. Each reconcile observes (registry look-ups,
//! owned Jobs), plans with the pure [`plan::plan`], and applies (Jobs created or deleted, the
//! status written with server-side apply when it changed).

pub mod cleanup;
pub mod credentials;
pub mod leader;
pub mod plan;
pub mod registry_check;
pub mod runtime;
pub mod slots;
pub mod transitions;
pub mod worker;

use crate::api::{RECONCILE_REQUEST_ANNOTATION, SociIndex, SociIndexStatus};
use crate::locks::lock;
use crate::registry::RegistryClient;
use anyhow::Context as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use plan::{ImageObservation, JobState, PlanInput};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker::WorkerOptions;

pub const FIELD_MANAGER: &str = "soci-operator";
/// The first retry of a failed reconcile; each failure in a row doubles it.
const ERROR_RETRY_FIRST: Duration = Duration::from_secs(5);
const ERROR_RETRY_MAX: Duration = Duration::from_secs(300);
/// The longest requeue a reconcile asks for (kube's scheduler adds it to an `Instant`).
const MAX_REQUEUE: Duration = Duration::from_secs(40 * 24 * 3600);

pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    duration: HistogramVec,
    jobs_created: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_panics: IntCounter,
    pub jobs: IntGaugeVec,
    pub job_slots_waiting: IntGauge,
    pub build_duration: Histogram,
    pub indexed_bytes: IntCounter,
    pub images: IntGaugeVec,
    pub leader: IntGauge,
    pub image_checks: IntCounterVec,
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
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "soci_operator_reconcile_errors_total",
                "Failed reconciles (KubernetesAPI, InternalError, Timeout, Other) and new build/stall failures, by reason",
            ),
            &["reason"],
        )?;
        let reconcile_panics = IntCounter::new(
            "soci_operator_reconcile_panics_total",
            "Reconciles that panicked (caught: the object goes Stalled with reason InternalError)",
        )?;
        let jobs = IntGaugeVec::new(
            Opts::new("soci_operator_jobs", "Worker Jobs that exist now, by state"),
            &["state"],
        )?;
        let job_slots_waiting = IntGauge::new(
            "soci_operator_job_slots_waiting",
            "Builds waiting for a worker Job slot (--max-concurrent-jobs, --max-jobs-per-registry)",
        )?;
        let build_duration = Histogram::with_opts(
            HistogramOpts::new(
                "soci_operator_build_duration_seconds",
                "Worker Job run time, start to finish",
            )
            .buckets(vec![
                5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
            ]),
        )?;
        let indexed_bytes = IntCounter::new(
            "soci_operator_indexed_bytes_total",
            "Compressed layer bytes indexed by finished builds",
        )?;
        let images = IntGaugeVec::new(
            Opts::new(
                "soci_operator_images",
                "Images by their LazyLoadReady reason",
            ),
            &["reason"],
        )?;
        let image_checks = IntCounterVec::new(
            Opts::new(
                "soci_operator_image_checks_total",
                "Registry checks of an image: settled (one HEAD per tag) or full (manifests, SOCI index, zTOCs)",
            ),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "soci_operator_leader",
            "1 on the replica that holds the leader Lease (or runs without leader election)",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(jobs_created.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_panics.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_slots_waiting.clone()))?;
        registry.register(Box::new(build_duration.clone()))?;
        registry.register(Box::new(indexed_bytes.clone()))?;
        registry.register(Box::new(images.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(crate::registry::client::REQUESTS.clone()))?;
        registry.register(Box::new(image_checks.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            duration,
            jobs_created,
            reconcile_errors,
            reconcile_panics,
            jobs,
            job_slots_waiting,
            build_duration,
            indexed_bytes,
            images,
            leader,
            image_checks,
        })
    }
}

pub struct Context {
    pub client: Client,
    pub registry: Arc<RegistryClient>,
    pub worker: WorkerOptions,
    pub metrics: Metrics,
    /// `--default-interval`.
    pub default_interval: Duration,
    /// When each settled image last had the full check (`--full-check-interval`).
    pub full_checks: FullChecks,
    pub jobs: slots::JobTracker,
    /// Per-object gauge contributions and the last planned status (for Events).
    pub stats: Mutex<transitions::ObjectStats>,
    pub recorder: kube::runtime::events::Recorder,
    /// Set once every watch has its initial list.
    pub synced: AtomicBool,
    /// Leader election is on and this replica does not (yet) run the controllers.
    pub standby: AtomicBool,
    /// Registry clients holding SociIndexes' own Secrets.
    pub credentials: credentials::CredentialCache,
    /// `--reconcile-timeout`: a reconcile still running then is abandoned and retried.
    pub reconcile_timeout: Duration,
    /// Failed reconciles in a row, per object (the `error_policy` backoff).
    pub retries: ErrorBackoff,
    /// `--cleanup-timeout`: how long after its deletion a cleanup may keep failing.
    pub cleanup_timeout: Duration,
}

impl Context {
    /// `/readyz`: synced, or a standby (which has nothing to sync).
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) || self.standby.load(Ordering::Relaxed)
    }

    /// Recomputes the gauges read from the Job stores (called before every scrape).
    pub fn refresh_gauges(&self) {
        for (phase, count) in self.jobs.phases() {
            self.metrics
                .jobs
                .with_label_values(&[phase.label()])
                .set(count);
        }
    }

    /// Records what the object contributes now and recomputes `soci_operator_images` and
    /// `soci_operator_job_slots_waiting`; `None` removes the object.
    fn record_status(&self, key: &str, status: Option<(SociIndexStatus, usize)>) {
        let mut stats = lock(&self.stats);
        match status {
            Some((status, queued)) => stats.update(key, status, queued),
            None => stats.remove(key),
        }
        self.publish_stats(&stats);
    }

    fn publish_stats(&self, stats: &transitions::ObjectStats) {
        self.metrics.images.reset();
        for (reason, count) in stats.reasons() {
            self.metrics.images.with_label_values(&[&reason]).set(count);
        }
        self.metrics.job_slots_waiting.set(stats.queued() as i64);
    }
}

/// When each image (`uid`, image name) last had the full target check. A settled image takes the
/// cheap path (one HEAD per tag) until its full check is `every` old; an image first seen by
/// this process counts as checked now, so a restart does not re-verify the whole cluster at once
/// (the status records the last verification).
pub struct FullChecks {
    every: Duration,
    last: Mutex<std::collections::HashMap<(String, String), Instant>>,
}

impl FullChecks {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::default(),
        }
    }

    /// Whether the image is due for the full check (and, if not, it takes the cheap path).
    pub fn due(&self, uid: &str, image: &str, now: Instant) -> bool {
        if self.every.is_zero() {
            return true;
        }
        let mut last = lock(&self.last);
        let at = *last
            .entry((uid.to_string(), image.to_string()))
            .or_insert(now);
        now.duration_since(at) >= self.every
    }

    pub fn checked(&self, uid: &str, image: &str, now: Instant) {
        lock(&self.last).insert((uid.to_string(), image.to_string()), now);
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        self.retain(|u| u != uid);
    }

    /// Keeps only the objects whose uid `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.last).retain(|(u, _), _| keep(u));
    }
}

/// Failed reconciles in a row, per object uid: `error_policy` waits 5 s after the first and
/// doubles that up to 5 min; a reconcile that succeeds resets it (kube-runtime tells
/// `error_policy` only about failures, so each reconcile that returns Ok reports it here).
#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Counts one more failure of `uid` and says how long to wait before the next try.
    pub fn failed(&self, uid: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(uid.to_string()).or_default();
        *n = n.saturating_add(1);
        ERROR_RETRY_FIRST
            .saturating_mul(1 << (*n - 1).min(16))
            .min(ERROR_RETRY_MAX)
    }

    pub fn succeeded(&self, uid: &str) {
        lock(&self.failures).remove(uid);
    }

    /// Keeps only the objects whose uid `keep` accepts (the others are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.failures).retain(|uid, _| keep(uid));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// What the reconcile itself returned (mostly Kubernetes API calls that failed).
    #[error("{0:#}")]
    Failed(anyhow::Error),
    /// The reconcile panicked; the message, cut short.
    #[error("the reconcile panicked: {0}")]
    Panicked(String),
    /// The reconcile ran past `--reconcile-timeout` and was abandoned.
    #[error("the reconcile did not finish within {0:?} (--reconcile-timeout)")]
    TimedOut(Duration),
}

impl ReconcileError {
    /// The `reason` label of `soci_operator_reconcile_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Failed(e) if e.chain().any(|c| c.is::<kube::Error>()) => "KubernetesAPI",
            Self::Failed(_) => "Other",
            Self::Panicked(_) => plan::reason::INTERNAL_ERROR,
            Self::TimedOut(_) => "Timeout",
        }
    }
}

fn error_policy(object: Arc<SociIndex>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let retry = ctx.retries.failed(&object.uid().unwrap_or_default());
    tracing::warn!(name = %object.name_any(), namespace = ?object.namespace(), error = %error, reason = error.reason(), ?retry, "reconcile failed");
    ctx.metrics.reconciles.with_label_values(&["error"]).inc();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.reason()])
        .inc();
    Action::requeue(retry)
}

async fn reconcile(object: Arc<SociIndex>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    if object.metadata.deletion_timestamp.is_some() {
        ctx.record_status(&object_key(&object), None);
        if let Some(uid) = &object.metadata.uid {
            ctx.full_checks.forget(uid);
        }
    }
    let result = reconcile_inner(&object, &ctx).await;
    if result.is_ok()
        && let Some(uid) = object.uid()
    {
        ctx.retries.succeeded(&uid);
    }
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .duration
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
    }
    result.map_err(ReconcileError::Failed)
}

async fn reconcile_inner(object: &SociIndex, ctx: &Context) -> anyhow::Result<Action> {
    if object.metadata.deletion_timestamp.is_some() {
        // Owned Jobs go with the object (owner references); with deletionPolicy Delete the
        // cleanup finalizer removes what was pushed first.
        return cleanup::on_delete(object, ctx).await;
    }
    // An object that bypassed the CRD's bounds (an older CRD) is reported, not acted on.
    if let Err(problem) = plan::check_spec(&object.spec) {
        let status = plan::stalled_status(
            object.status.as_ref(),
            object.metadata.generation,
            plan::reason::INVALID_SPEC,
            &problem,
            Timestamp::now(),
        );
        report_status(ctx, object, &status, 0).await?;
        return Ok(Action::await_change());
    }
    cleanup::sync_finalizer(object, ctx).await?;
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
    let reconcile_request = object
        .annotations()
        .get(RECONCILE_REQUEST_ANNOTATION)
        .map(String::as_str);
    let mut images = Vec::new();
    if !spec.suspend {
        // The object's own Secrets, if it names any (else anonymous, or the operator's
        // credentials where the admin allows); a Secret that is missing or unusable is every
        // image's failure, and so is a spec asking for more than the admin allows (before any
        // look-up).
        let registry = match worker::admit(&namespace, spec, &ctx.worker.tenants) {
            Ok(()) => {
                credentials::registry_for(
                    &ctx.client,
                    &ctx.registry,
                    &ctx.credentials,
                    &namespace,
                    spec.credentials.as_ref(),
                    &ctx.worker.tenants.operator_credentials,
                )
                .await
            }
            Err(refused) => Err(refused),
        };
        // The status was written for this very spec: its verified images may take the cheap path.
        let previous = object
            .status
            .as_ref()
            .filter(|s| plan::status_is_current(s, generation, reconcile_request));
        for image in &spec.images {
            if let Ok(client) = &registry
                && let Some(previous) = previous
                && let Some(before) = previous.images.iter().find(|s| s.name == image.name)
                && let Some(settled) = registry_check::settled_image(
                    &image.name,
                    &image.image,
                    spec.target.as_ref(),
                    before,
                )
                && !ctx.full_checks.due(&uid, &image.name, Instant::now())
                && let Some(observation) = registry_check::recheck_settled(client, &settled).await
            {
                ctx.metrics
                    .image_checks
                    .with_label_values(&["settled"])
                    .inc();
                images.push(observation);
                continue;
            }
            ctx.metrics.image_checks.with_label_values(&["full"]).inc();
            let resolved = match &registry {
                Ok(client) => {
                    registry_check::resolve(client, &image.image, spec.target.as_ref(), &image.name)
                        .await
                }
                Err(failure) => Err(failure.clone()),
            };
            let target = match (&resolved, &registry) {
                (Ok(r), Ok(client)) => {
                    Some(registry_check::target_binding(client, r, &settings).await)
                }
                _ => None,
            };
            if let Some(Ok(plan::TargetCheck::Bound { .. })) = &target {
                ctx.full_checks.checked(&uid, &image.name, Instant::now());
            }
            images.push(ImageObservation {
                name: image.name.clone(),
                resolved,
                target,
            });
        }
    }

    // The caps need every Job and SociIndex listed (right after a restart too), and the Jobs
    // come from the same watch.
    ctx.jobs.wait_ready().await;
    // A target another namespace's SociIndex named first stays that object's.
    let claims = plan::claims_outside(ctx.jobs.indexes().iter().map(|o| o.as_ref()), &namespace);
    plan::apply_target_conflicts(object, &mut images, &claims);
    let mut jobs = Vec::new();
    for job in ctx.jobs.owned(&namespace, &uid) {
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
        jobs.extend(worker::observe_job(&job, &pods));
    }

    // Held until the Jobs are created: the slots counted here are the ones taken.
    let slots = ctx.jobs.lock.lock().await;
    let planned = plan::plan(PlanInput {
        uid: &uid,
        generation,
        spec,
        status: object.status.as_ref(),
        reconcile_request,
        images,
        jobs: jobs.clone(),
        now: Timestamp::now(),
        default_interval: ctx.default_interval,
        capacity: ctx.jobs.capacity(&namespace),
        builds_elsewhere: ctx.jobs.builds_elsewhere(&uid),
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
                ctx.jobs.created(
                    &namespace,
                    &request.job_name,
                    &request.source,
                    &request.build_key(),
                    &uid,
                );
                ctx.metrics
                    .jobs_created
                    .with_label_values(&["created"])
                    .inc();
                tracing::info!(%namespace, %name, job = %request.job_name, image = %request.image_name, source = %request.source, target = %request.target, "created worker Job");
                let note = format!(
                    "Job {} is building image {} ({} -> {})",
                    request.job_name, request.image_name, request.source, request.target
                );
                runtime::publish(ctx, object, false, transitions::BUILD_STARTED, note).await;
            }
            // Still there (being deleted after a transient failure): try again shortly.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                requeue = Some(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context(format!("creating Job {}", request.job_name)),
        }
    }
    drop(slots);
    let running = jobs.iter().any(|j| j.state == JobState::Running);
    report_status(ctx, object, &planned.status, planned.queued).await?;
    Ok(match requeue {
        Some(after) => Action::requeue(after.min(MAX_REQUEUE)),
        None if running => Action::requeue(plan::RUNNING_JOB_RECHECK),
        None => Action::await_change(),
    })
}

/// Writes `status` when it differs from the object's, and publishes what changed: the Events of
/// its transitions and the gauges (`queued`: its builds waiting for a Job slot).
pub(crate) async fn report_status(
    ctx: &Context,
    object: &SociIndex,
    status: &SociIndexStatus,
    queued: usize,
) -> anyhow::Result<()> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    if object.status.as_ref() != Some(status) {
        let indexes: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
        write_status(&indexes, &name, status).await?;
        tracing::info!(
            %namespace, %name,
            ready = status.ready_images,
            desired = status.desired_images,
            "status updated"
        );
    }
    let key = object_key(object);
    let previous = lock(&ctx.stats).previous(&key).cloned();
    let notices = transitions::transitions(previous.as_ref().or(object.status.as_ref()), status);
    ctx.record_status(&key, Some((status.clone(), queued)));
    for notice in notices {
        if let Some(reason) = &notice.failure_reason {
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[reason])
                .inc();
        }
        runtime::publish(ctx, object, notice.warning, notice.reason, notice.note).await;
    }
    Ok(())
}

/// `namespace/name`: the key of an object's gauge contributions.
pub(crate) fn object_key(object: &SociIndex) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// The server-side apply patch that writes `status`. Every status is planned within the size
/// budget already; fitting it here keeps any other writer's there too.
pub(crate) fn status_patch(status: &SociIndexStatus) -> serde_json::Value {
    let mut status = status.clone();
    crate::api::budget::fit(&mut status, crate::api::budget::STATUS_BUDGET);
    serde_json::json!({
        "apiVersion": "soci.dev/v1alpha1",
        "kind": "SociIndex",
        "status": status,
    })
}

pub(crate) async fn write_status(
    api: &Api<SociIndex>,
    name: &str,
    status: &SociIndexStatus,
) -> anyhow::Result<()> {
    let patch = status_patch(status);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .with_context(|| format!("writing the status of {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_checks_come_due_after_their_interval_and_go_with_their_object() {
        let checks = FullChecks::new(Duration::from_secs(60));
        let t0 = Instant::now();
        // First sight counts as checked: a restart does not re-verify everything at once.
        assert!(!checks.due("uid-a", "web", t0));
        assert!(!checks.due("uid-a", "web", t0 + Duration::from_secs(59)));
        assert!(checks.due("uid-a", "web", t0 + Duration::from_secs(60)));
        checks.checked("uid-a", "web", t0 + Duration::from_secs(60));
        assert!(!checks.due("uid-a", "web", t0 + Duration::from_secs(61)));
        checks.checked("uid-b", "web", t0);
        // An object gone from the stores is dropped (a later sight starts afresh).
        checks.retain(|uid| uid == "uid-b");
        assert!(!checks.due("uid-a", "web", t0 + Duration::from_secs(200)));
        assert!(checks.due("uid-b", "web", t0 + Duration::from_secs(200)));
        assert!(FullChecks::new(Duration::ZERO).due("uid-c", "web", t0));
    }

    #[test]
    fn failed_reconciles_back_off_per_object_and_success_resets() {
        let retries = ErrorBackoff::default();
        let waits: Vec<u64> = (0..9).map(|_| retries.failed("uid-a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Another object's failures are its own.
        assert_eq!(retries.failed("uid-b"), Duration::from_secs(5));
        retries.succeeded("uid-a");
        assert_eq!(retries.failed("uid-a"), Duration::from_secs(5));
        // Thousands of failures in a row neither overflow nor exceed the cap.
        for _ in 0..10_000 {
            retries.failed("uid-c");
        }
        assert_eq!(retries.failed("uid-c"), ERROR_RETRY_MAX);
        // Objects gone from the stores are forgotten.
        retries.retain(|uid| uid == "uid-b");
        assert_eq!(lock(&retries.failures).len(), 1);
    }

    #[test]
    fn reconcile_errors_are_labelled_by_what_went_wrong() {
        let api = kube::Error::Api(
            kube::core::Status::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        );
        let failed = ReconcileError::Failed(anyhow::Error::new(api).context("writing the status"));
        assert_eq!(failed.reason(), "KubernetesAPI");
        let other = ReconcileError::Failed(anyhow::anyhow!("SociIndex without a uid"));
        assert_eq!(other.reason(), "Other");
        assert_eq!(
            ReconcileError::Panicked("x".into()).reason(),
            "InternalError"
        );
        assert_eq!(
            ReconcileError::TimedOut(Duration::from_secs(1)).reason(),
            "Timeout"
        );
    }

    #[test]
    fn the_status_patch_is_a_server_side_apply_of_the_fitted_status() {
        let mut status = SociIndexStatus {
            conditions: vec![crate::api::Condition::new(
                crate::api::condition::READY,
                crate::api::ConditionStatus::True,
                "Verified",
                "ok",
            )],
            ..Default::default()
        };
        status.images = (0..2)
            .map(|i| crate::api::ImageStatus {
                name: format!("i{i}"),
                platforms: vec![
                    crate::api::PlatformStatus {
                        platform: "p".repeat(200_000),
                        ..Default::default()
                    };
                    1
                ],
                ..Default::default()
            })
            .collect();
        let patch = status_patch(&status);
        assert_eq!(patch["apiVersion"], "soci.dev/v1alpha1");
        assert_eq!(patch["kind"], "SociIndex");
        let text = patch.to_string();
        assert!(
            text.len() <= crate::api::budget::STATUS_BUDGET + 100,
            "{}",
            text.len()
        );
        assert_eq!(patch["status"]["images"].as_array().unwrap().len(), 2);
    }
}
