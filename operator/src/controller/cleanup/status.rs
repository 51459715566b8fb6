//! The object's status while a cleanup is retried.

use super::CLEANUP_RETRYING;
use crate::api::condition::{self, RECONCILING, STALLED};
use crate::api::{Condition, ConditionStatus, SociIndexStatus};
use crate::controller::durations::rfc3339;
use k8s_openapi::jiff::Timestamp;

/// The status while a cleanup is retried: `Reconciling` says why the object stays (what users
/// and kstatus read besides the Events); the images stay as they are, still deployable.
pub fn retrying_status(
    status: Option<&SociIndexStatus>,
    generation: Option<i64>,
    note: &str,
    now: Timestamp,
) -> SociIndexStatus {
    let mut next = status.cloned().unwrap_or_default();
    let mut wanted: Vec<Condition> = next
        .conditions
        .iter()
        .filter(|c| c.type_ != RECONCILING && c.type_ != STALLED)
        .cloned()
        .collect();
    let mut message = note.to_string();
    condition::truncate(&mut message, 1024);
    wanted.push(Condition::new(
        RECONCILING,
        ConditionStatus::True,
        CLEANUP_RETRYING,
        message,
    ));
    // Same text as before for the same failure: a retry that fails alike writes nothing.
    if let Some(previous) = condition::find(&next.conditions, RECONCILING)
        && previous.reason == CLEANUP_RETRYING
        && strip_wait(&previous.message) == strip_wait(note)
    {
        return next;
    }
    next.conditions = condition::merge(&next.conditions, wanted, generation, &rfc3339(now));
    next
}

/// The note without its "retrying in Ns" part, which grows with the backoff.
fn strip_wait(note: &str) -> &str {
    note.split("; retrying in ").next().unwrap_or(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::READY as READY_TYPE;

    #[test]
    fn a_retried_cleanup_is_in_the_status_once_per_failure() {
        use k8s_openapi::jiff::Timestamp;
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_060).unwrap();
        let ready = Condition::new(READY_TYPE, ConditionStatus::True, "Verified", "1/1");
        let stalled = Condition::new(STALLED, ConditionStatus::True, "BuildFailed", "x");
        let before = SociIndexStatus {
            conditions: condition::merge(
                &[],
                vec![ready, stalled],
                Some(3),
                "2026-01-01T00:00:00Z",
            ),
            ready_images: 1,
            ..Default::default()
        };
        let note = "removing what was pushed failed: 503; retrying in 15s (the object stays until it succeeds)";
        let first = retrying_status(Some(&before), Some(3), note, t0);
        let reconciling = condition::find(&first.conditions, RECONCILING).expect("Reconciling");
        assert_eq!(reconciling.status, ConditionStatus::True);
        assert_eq!(reconciling.reason, CLEANUP_RETRYING);
        assert!(reconciling.message.contains("503"));
        assert!(condition::find(&first.conditions, STALLED).is_none());
        // Ready and the images are left as they were: the target is still deployable.
        let kept = condition::find(&first.conditions, READY_TYPE).unwrap();
        assert_eq!(
            (kept.status, kept.last_transition_time.as_str()),
            (ConditionStatus::True, "2026-01-01T00:00:00Z")
        );
        assert_eq!(first.ready_images, 1);

        // The same failure with a longer backoff changes nothing (no write).
        let longer = note.replace("15s", "30s");
        assert_eq!(retrying_status(Some(&first), Some(3), &longer, t1), first);
        // Another failure updates the message, not the transition time.
        let other = retrying_status(
            Some(&first),
            Some(3),
            "removing what was pushed failed: timeout; retrying in 60s",
            t1,
        );
        let c = condition::find(&other.conditions, RECONCILING).unwrap();
        assert!(c.message.contains("timeout"));
        assert_eq!(c.last_transition_time, reconciling.last_transition_time);
    }
}
