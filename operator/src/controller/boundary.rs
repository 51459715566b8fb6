//! The reconcile boundary: each reconcile the Controllers run is guarded, so that a panic or a
//! reconcile past `--reconcile-timeout` ends that reconcile alone, is reported in the object's
//! status and is retried with backoff.

use super::reconcile::{ReconcileError, reconcile};
use super::{Context, plan, status};
use crate::api::{SociIndex, SociIndexStatus};
use crate::reason::Reason;
use futures_util::FutureExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// How long the status write after a panic or a timeout may take (the reconcile's own time is
/// over by then).
const BOUNDARY_WRITE_GRACE: Duration = Duration::from_secs(30);
/// The longest panic message a status carries.
const MAX_PANIC_MESSAGE: usize = 512;

/// What became of a future run by [`guarded`].
#[derive(Debug, PartialEq)]
pub enum Guarded<T> {
    Finished(T),
    /// It panicked, with this message (cut short).
    Panicked(String),
    /// It was still running at the deadline, and was dropped.
    TimedOut,
}

/// Runs `future`, catching a panic and giving up at `deadline`. kube-runtime runs each reconcile
/// on its own task and re-raises its panic in the task that drives the Controller, which would
/// end the reconciles of every object; the deadline keeps one object from holding a reconcile
/// slot for ever.
pub async fn guarded<F: Future>(future: F, deadline: Duration) -> Guarded<F::Output> {
    // Unwind safety: a reconcile shares only the Context, whose locks tolerate poisoning and
    // whose data is consistent between statements.
    match tokio::time::timeout(deadline, AssertUnwindSafe(future).catch_unwind()).await {
        Ok(Ok(output)) => Guarded::Finished(output),
        Ok(Err(payload)) => Guarded::Panicked(panic_message(payload.as_ref())),
        Err(_) => Guarded::TimedOut,
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`), cut short.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let mut message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    crate::api::condition::truncate(&mut message, MAX_PANIC_MESSAGE);
    message
}

/// The status a reconcile that did not return leaves: a panic stalls the object
/// (`InternalError`), a timeout marks it as retrying (`ReconcileTimeout`). `None` for an error the
/// reconcile returned itself (it wrote what it knew).
pub fn boundary_status(
    error: &ReconcileError,
    previous: Option<&SociIndexStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<SociIndexStatus> {
    match error {
        ReconcileError::Failed(_) => None,
        ReconcileError::Panicked(message) => Some(plan::boundary_object_status(
            plan::Boundary::Stalled,
            previous,
            generation,
            Reason::InternalError,
            &format!(
                "the reconcile panicked (a bug in soci-operator; it is retried with backoff): {message}"
            ),
            now,
        )),
        ReconcileError::TimedOut(after) => Some(plan::boundary_object_status(
            plan::Boundary::Retrying,
            previous,
            generation,
            Reason::ReconcileTimeout,
            &format!(
                "the reconcile did not finish within {} (--reconcile-timeout): abandoned, retried with backoff",
                humantime(*after)
            ),
            now,
        )),
    }
}

/// `5m`, `90s`, `1h30m`: how the flags spell a duration.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut text = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    if text.is_empty() {
        text = format!("{}ms", d.as_millis());
    }
    text
}

/// The reconcile the Controllers run: [`reconcile`] inside [`guarded`], a panic or a timeout
/// reported in the object's status (a fresh read of it, else the one the reconcile started
/// from) and returned as an error, so `error_policy` retries with backoff.
pub(super) async fn reconcile_at_boundary(
    object: Arc<SociIndex>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let deadline = ctx.reconcile_timeout;
    let error = match guarded(reconcile(object.clone(), ctx.clone()), deadline).await {
        Guarded::Finished(result) => return result,
        Guarded::Panicked(message) => {
            ctx.metrics.reconcile_panics.inc();
            tracing::error!(name = %object.name_any(), namespace = ?object.namespace(), panic = %message, "reconcile panicked: the object is Stalled (InternalError)");
            ReconcileError::Panicked(message)
        }
        Guarded::TimedOut => ReconcileError::TimedOut(deadline),
    };
    let write = async {
        let api: Api<SociIndex> =
            Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        let current = match api.get_status(&object.name_any()).await {
            Ok(fresh) => Arc::new(fresh),
            Err(_) => object.clone(),
        };
        let Some(status) = boundary_status(
            &error,
            current.status.as_ref(),
            current.metadata.generation,
            Timestamp::now(),
        ) else {
            return Ok(());
        };
        status::report(&ctx, &current, &status, 0).await
    };
    match tokio::time::timeout(BOUNDARY_WRITE_GRACE, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(name = %object.name_any(), error = %format!("{e:#}"), "writing the status after a failed reconcile")
        }
        Err(_) => {
            tracing::warn!(name = %object.name_any(), "writing the status after a failed reconcile timed out")
        }
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_is_caught_and_its_task_survives() {
        let outcome = guarded(
            async {
                tokio::task::yield_now().await;
                panic!("index out of bounds: the len is 0 but the index is 7")
            },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            outcome,
            Guarded::<()>::Panicked("index out of bounds: the len is 0 but the index is 7".into())
        );
        // kube-runtime spawns each reconcile and unwraps the JoinError: a guarded one never
        // makes that unwrap panic.
        let task = tokio::spawn(guarded(
            async { panic!("{}", "é".repeat(2000)) },
            Duration::from_secs(5),
        ));
        let Guarded::<()>::Panicked(message) = task.await.expect("the task did not panic") else {
            panic!("not caught");
        };
        assert!(message.len() <= MAX_PANIC_MESSAGE, "{}", message.len());
        assert!(message.ends_with(crate::api::condition::TRUNCATED));
        let any = guarded(
            async { std::panic::panic_any(42u8) },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            any,
            Guarded::<()>::Panicked("a panic without a message".into())
        );
        let fine = guarded(async { 7 }, Duration::from_secs(5)).await;
        assert_eq!(fine, Guarded::Finished(7));
    }

    #[tokio::test]
    async fn a_reconcile_past_its_deadline_is_abandoned() {
        let started = std::time::Instant::now();
        let outcome = guarded(std::future::pending::<()>(), Duration::from_millis(50)).await;
        assert_eq!(outcome, Guarded::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_panic_stalls_the_object_and_a_timeout_marks_it_retrying() {
        use crate::api::condition::{READY, RECONCILING, STALLED, find};
        use crate::api::{ConditionStatus, ImageStatus};
        let previous = SociIndexStatus {
            images: vec![ImageStatus {
                name: "app".into(),
                deploy: Some("r/app:v1-soci@sha256:t".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let panicked = ReconcileError::Panicked("attempt to divide by zero".into());
        let stalled = boundary_status(&panicked, Some(&previous), Some(4), now).unwrap();
        let ready = find(&stalled.conditions, READY).unwrap();
        let stall = find(&stalled.conditions, STALLED).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "InternalError")
        );
        assert_eq!(
            (stall.status, stall.reason.as_str()),
            (ConditionStatus::True, "InternalError")
        );
        assert!(
            stall.message.ends_with("attempt to divide by zero"),
            "{}",
            stall.message
        );
        assert_eq!(stalled.observed_generation, Some(4));
        assert_eq!(
            stalled.images, previous.images,
            "what was pushed stays recorded"
        );
        // Written with the normal status write.
        let patch = crate::controller::status::patch(&stalled);
        assert_eq!(
            patch["status"]["conditions"][1]["reason"],
            serde_json::json!("InternalError")
        );

        let timed_out = ReconcileError::TimedOut(Duration::from_secs(300));
        let retrying = boundary_status(&timed_out, Some(&previous), Some(4), now).unwrap();
        let ready = find(&retrying.conditions, READY).unwrap();
        let reconciling = find(&retrying.conditions, RECONCILING).unwrap();
        assert_eq!(ready.status, ConditionStatus::Unknown);
        assert_eq!(reconciling.reason, "ReconcileTimeout");
        assert!(
            reconciling.message.contains("within 5m"),
            "{}",
            reconciling.message
        );
        assert!(find(&retrying.conditions, STALLED).is_none());

        let failed = ReconcileError::Failed(anyhow::anyhow!("the API server said no"));
        assert_eq!(
            boundary_status(&failed, Some(&previous), Some(4), now),
            None
        );
    }

    #[test]
    fn durations_are_spelled_like_the_flags() {
        assert_eq!(humantime(Duration::from_secs(300)), "5m");
        assert_eq!(humantime(Duration::from_secs(5430)), "1h30m30s");
        assert_eq!(humantime(Duration::from_millis(50)), "50ms");
    }
}
