//! The reconcile of one SociIndex, step by step:
//!
//! 1. [`super::observe`]: the registry, the credentials, the Jobs → plain facts;
//! 2. [`super::plan`]: the pure decision (Jobs to create and delete, the new status);
//! 3. [`super::apply`]: the Jobs deleted and created, under the Job-slot lock;
//! 4. [`super::status`]: one server-side apply of the status when it changed;
//! 5. [`super::events`]: the Events of what changed, and the gauges.
//!
//! A deleted object goes to [`super::cleanup`] instead. The boundary around each
//! reconcile (panics caught, a deadline) is in [`super::boundary`].

use super::observe::{self, Identity};
use super::{Context, apply, cleanup, events, object_key, plan, status};
use crate::api::{RECONCILE_REQUEST_ANNOTATION, SociIndex};
use crate::reason::Reason;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use plan::{JobState, PlanInput};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest requeue a reconcile asks for (kube's scheduler adds it to an `Instant`).
const MAX_REQUEUE: Duration = Duration::from_secs(40 * 24 * 3600);

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
    pub fn reason(&self) -> Reason {
        match self {
            Self::Failed(e) if e.chain().any(|c| c.is::<kube::Error>()) => Reason::KubernetesApi,
            Self::Failed(_) | Self::Panicked(_) => Reason::InternalError,
            Self::TimedOut(_) => Reason::ReconcileTimeout,
        }
    }
}

pub fn error_policy(object: Arc<SociIndex>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let retry = ctx.retries.failed(&object.uid().unwrap_or_default());
    tracing::warn!(name = %object.name_any(), namespace = ?object.namespace(), error = %error, reason = %error.reason(), ?retry, "reconcile failed");
    ctx.metrics.reconciles.with_label_values(&["error"]).inc();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.reason().as_str()])
        .inc();
    Action::requeue(retry)
}

pub async fn reconcile(
    object: Arc<SociIndex>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
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
        let stalled = plan::boundary_object_status(
            plan::Boundary::Stalled,
            object.status.as_ref(),
            object.metadata.generation,
            Reason::InvalidSpec,
            &problem,
            Timestamp::now(),
        );
        status::report(ctx, object, &stalled, 0).await?;
        return Ok(Action::await_change());
    }
    cleanup::sync_finalizer(object, ctx).await?;
    let who = Identity::of(object)?;
    let generation = object.metadata.generation;
    if !object.spec.suspend
        && let Some(early) =
            plan::early_status(generation, object.status.as_ref(), Timestamp::now())
    {
        let api: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &who.namespace);
        status::write(&api, &who.name, &early).await?;
    }
    let reconcile_request = object
        .annotations()
        .get(RECONCILE_REQUEST_ANNOTATION)
        .map(String::as_str);

    let observed = observe::observe(ctx, object, &who, reconcile_request).await?;
    let running = observed.jobs.iter().any(|j| j.state == JobState::Running);

    // Held from reading the free slots to creating the Jobs: two reconciles never hand out
    // the same slot.
    let slots = ctx.jobs.lock.lock().await;
    let planned = plan::plan(PlanInput {
        uid: &who.uid,
        generation,
        spec: &object.spec,
        status: object.status.as_ref(),
        reconcile_request,
        images: observed.images,
        jobs: observed.jobs,
        now: Timestamp::now(),
        default_interval: ctx.default_interval,
        capacity: ctx.jobs.capacity(&who.namespace),
        builds_elsewhere: ctx.jobs.builds_elsewhere(&who.uid),
    });
    let applied = apply::jobs(ctx, object, &planned).await?;
    drop(slots);

    for note in applied.started {
        let action = events::EventAction::Build;
        events::publish(
            ctx,
            object,
            false,
            action,
            super::transitions::BUILD_STARTED,
            note,
        )
        .await;
    }
    status::report(ctx, object, &planned.status, planned.queued).await?;
    Ok(next_look(
        applied.retry_after.or(planned.requeue_after),
        running,
    ))
}

/// When to reconcile again without a change: as the plan says, else in a minute while a Job
/// runs, else on the next change only.
fn next_look(requeue: Option<Duration>, running: bool) -> Action {
    match requeue {
        Some(after) => Action::requeue(after.min(MAX_REQUEUE)),
        None if running => Action::requeue(plan::RUNNING_JOB_RECHECK),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_errors_are_labelled_by_what_went_wrong() {
        let api = kube::Error::Api(
            kube::core::Status::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        );
        let failed = ReconcileError::Failed(anyhow::Error::new(api).context("writing the status"));
        assert_eq!(failed.reason().as_str(), "KubernetesAPI");
        let other = ReconcileError::Failed(anyhow::anyhow!("SociIndex without a uid"));
        assert_eq!(other.reason(), Reason::InternalError);
        assert_eq!(
            ReconcileError::Panicked("x".into()).reason(),
            Reason::InternalError
        );
        assert_eq!(
            ReconcileError::TimedOut(Duration::from_secs(1)).reason(),
            Reason::ReconcileTimeout
        );
    }
}
