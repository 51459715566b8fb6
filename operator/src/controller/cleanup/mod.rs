//! `deletionPolicy: Delete`: the `soci.dev/cleanup` finalizer and what it removes. The decision
//! ([`plan`]) is pure: the targets the status records as ours and what the registry holds now
//! in; tag restores, manifest and blob deletions out. [`observe`](mod@observe) and
//! [`execute`](mod@execute) are the registry I/O around it, [`finalizer`] adds and removes the
//! finalizer, [`status`] is what the object says while a cleanup is retried. Here: the
//! controller's side, [`on_delete`] (the deletion branch of reconcile, in order) and what
//! follows a failed attempt ([`after_failure`]).
//!
//! Only what the status records is deleted: the target image index (by digest), the SOCI index
//! manifests of `status.images[].platforms`, the image manifests the index bound to them, and
//! the zTOC blobs those SOCI indexes list. Whatever a tag still points at afterwards (the
//! source, a tag someone re-pushed, a target that could not be restored) is kept, with all it
//! references.

pub mod execute;
pub mod finalizer;
pub mod observe;
pub mod plan;
pub mod status;

pub use execute::{Done, clean_up, execute, is_refusal};
pub use finalizer::{CLEANUP_FINALIZER, sync_finalizer, wants_finalizer};
pub use observe::observe;
pub use plan::{Child, CleanupPlan, Owned, Protected, Seen, Step, owned_targets, plan_cleanup};
pub use status::retrying_status;

use super::Context;
use super::durations::backoff;
use super::events::{EventAction, publish};
use super::plan::{Failure, FailureClass};
use super::slots::controlled_by;
use super::worker::OWNER_UID_LABEL;
use crate::api::SociIndex;
use crate::reason::failure_of;
use anyhow::Context as _;
use finalizer::set_finalizer;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// How often a deleted object waits for its build Jobs to go before cleaning up.
const JOB_WAIT: Duration = Duration::from_secs(5);

/// Transient cleanup failures in a row, per object uid (for the backoff).
static FAILURES: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);

pub const CLEANUP_RETRYING: &str = "CleanupRetrying";
pub const CLEANUP_FAILED: &str = "CleanupFailed";
pub const CLEANUP_TIMED_OUT: &str = "CleanupTimedOut";

/// The deletion branch of reconcile: with our finalizer and the `Delete` policy, stop the
/// builds, remove what we pushed, then release the object.
pub async fn on_delete(object: &SociIndex, ctx: &Context) -> anyhow::Result<Action> {
    if !object.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(Action::await_change());
    }
    if !wants_finalizer(&object.spec) {
        set_finalizer(object, ctx, false).await?;
        return Ok(Action::await_change());
    }
    let namespace = object.namespace().unwrap_or_default();
    let uid = object.uid().unwrap_or_default();
    // A build still running could push after the cleanup: its Job (and Pods) go first. The
    // label lists them; the ownerReference says they are this object's.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = jobs
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .context("listing worker Jobs")?;
    let owned_jobs: Vec<&Job> = listed
        .items
        .iter()
        .filter(|j| controlled_by(j, &uid))
        .collect();
    if !owned_jobs.is_empty() {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        };
        for job in owned_jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
        {
            match jobs.delete(&job.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).context("deleting a worker Job"),
            }
        }
        return Ok(Action::requeue(JOB_WAIT));
    }

    let name = object.name_any();
    // The object's own Secrets, else anonymous: never the operator's credentials.
    let protected = Protected::of_others(ctx.jobs.indexes().iter().map(|o| o.as_ref()), &uid);
    let result = match super::credentials::cleanup_registry(
        &ctx.client,
        &ctx.registry,
        &ctx.credentials,
        &namespace,
        object.spec.credentials.as_ref(),
    )
    .await
    {
        Ok(registry) => clean_up(&registry, object.status.as_ref(), &protected)
            .await
            .map_err(CleanupError::Registry),
        Err(f) => Err(CleanupError::Credentials(f)),
    };
    let error = match result {
        Ok(done) => {
            crate::locks::lock(&FAILURES).remove(&uid);
            let mut note = format!(
                "deletionPolicy Delete: removed {} manifests and blobs ({} already gone)",
                done.deleted, done.already_gone
            );
            if !done.restored.is_empty() {
                note.push_str(&format!("; restored {}", done.restored.join(", ")));
            }
            if !done.left.is_empty() {
                note.push_str(&format!("; left: {}", done.left.join("; ")));
            }
            tracing::info!(%namespace, %name, "{note}");
            publish(ctx, object, false, EventAction::Delete, "CleanedUp", note).await;
            set_finalizer(object, ctx, false).await?;
            return Ok(Action::await_change());
        }
        Err(e) => e,
    };
    let failures = {
        let mut map = crate::locks::lock(&FAILURES);
        let n = map.entry(uid.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let deleted_at = object.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    match after_failure(
        deleted_at,
        Timestamp::now(),
        &error,
        failures,
        ctx.cleanup_timeout,
    ) {
        AfterFailure::Retry(wait) => {
            let note = format!(
                "removing what was pushed failed: {error}; retrying in {}s (the object stays until it succeeds, at most --cleanup-timeout {}s after its deletion)",
                wait.as_secs(),
                ctx.cleanup_timeout.as_secs()
            );
            tracing::warn!(%namespace, %name, "{note}");
            publish(
                ctx,
                object,
                true,
                EventAction::Delete,
                CLEANUP_RETRYING,
                note.clone(),
            )
            .await;
            let status = retrying_status(
                object.status.as_ref(),
                object.metadata.generation,
                &note,
                Timestamp::now(),
            );
            let api: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
            if object.status.as_ref() != Some(&status) {
                super::status::write(&api, &name, &status).await?;
            }
            Ok(Action::requeue(wait))
        }
        AfterFailure::GiveUp { reason, why } => {
            // Holding the object longer helps nobody: say what stays, and let it go.
            crate::locks::lock(&FAILURES).remove(&uid);
            let note = format!(
                "{why}; the finalizer is released, and this stays in the registry: {}",
                left_behind(&owned_targets(object.status.as_ref()))
            );
            tracing::warn!(%namespace, %name, "{note}");
            publish(ctx, object, true, EventAction::Delete, reason, note).await;
            set_finalizer(object, ctx, false).await?;
            Ok(Action::await_change())
        }
    }
}

/// Why a cleanup attempt failed.
#[derive(Debug)]
pub enum CleanupError {
    /// The registry: unreachable, erroring, refusing.
    Registry(anyhow::Error),
    /// The object's Secrets could not be read or used.
    Credentials(Failure),
}

impl CleanupError {
    fn class(&self) -> FailureClass {
        match self {
            Self::Registry(e) => failure_of(e).class,
            Self::Credentials(f) => f.class,
        }
    }
}

impl std::fmt::Display for CleanupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry(e) => write!(f, "{e:#}"),
            Self::Credentials(failure) => f.write_str(&failure.message),
        }
    }
}

/// What follows a failed cleanup attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// Try again after this long (never past the timeout).
    Retry(Duration),
    /// Release the finalizer; what was pushed stays (a Warning Event lists it).
    GiveUp { reason: &'static str, why: String },
}

/// The decision after a failed attempt, from the deletion timestamp, the time, the error and
/// how many attempts failed in a row: a permanent failure gives up at once; a transient one is
/// retried with backoff until `timeout` after the deletion, then given up, so that the object
/// (and its namespace) can always go.
pub fn after_failure(
    deleted_at: Option<Timestamp>,
    now: Timestamp,
    error: &CleanupError,
    failures: u32,
    timeout: Duration,
) -> AfterFailure {
    if error.class() == FailureClass::Permanent {
        let why = match error {
            CleanupError::Registry(e) if is_refusal(e) => "the registry refuses the deletes",
            CleanupError::Credentials(_) => "the object's registry credentials are unusable",
            CleanupError::Registry(_) => "cleanup failed permanently",
        };
        return AfterFailure::GiveUp {
            reason: CLEANUP_FAILED,
            why: format!("{why}: {error}"),
        };
    }
    // A deletion timestamp in our future (clock skew) counts as now.
    let elapsed = deleted_at
        .map(|t| now.duration_since(t))
        .filter(|d| d.is_positive())
        .map(|d| d.unsigned_abs())
        .unwrap_or_default();
    if elapsed >= timeout {
        return AfterFailure::GiveUp {
            reason: CLEANUP_TIMED_OUT,
            why: format!(
                "still failing {}s after the deletion (--cleanup-timeout {}s): {error}",
                elapsed.as_secs(),
                timeout.as_secs()
            ),
        };
    }
    AfterFailure::Retry(
        backoff(failures)
            .min(timeout - elapsed)
            .max(Duration::from_secs(1)),
    )
}

/// What a cleanup that gave up leaves in the registry (what the status records as pushed), for
/// its Event.
pub fn left_behind(owned: &[Owned]) -> String {
    if owned.is_empty() {
        return "nothing was recorded as pushed".into();
    }
    let items: Vec<String> = owned
        .iter()
        .map(|o| {
            format!(
                "{}@{} ({} SOCI index{})",
                o.target,
                o.target_digest,
                o.soci_indexes.len(),
                if o.soci_indexes.len() == 1 { "" } else { "es" }
            )
        })
        .collect();
    items.join(", ")
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
pub(crate) mod registry_tests;
