//! What follows a failed cleanup attempt, and what a cleanup that gave up names as left.

use super::test_support::{REG, converted, t};
use super::*;
use crate::registry::RegistryError;
use crate::registry::error::PermanentCause;

fn registry_error(transient: bool) -> CleanupError {
    let e = if transient {
        RegistryError::transient(
            "DELETE manifest 127.0.0.1:1/app@sha256:1",
            "connection refused",
        )
    } else {
        RegistryError::permanent(
            PermanentCause::Unsupported,
            "DELETE manifest",
            "405 Method Not Allowed",
        )
    };
    CleanupError::Registry(anyhow::Error::new(e))
}

#[test]
fn a_cleanup_that_cannot_reach_its_registry_gives_up_after_the_timeout() {
    let timeout = Duration::from_secs(600);
    let gone = registry_error(true);
    // Retried with backoff while there is time left, never sleeping past the timeout.
    let AfterFailure::Retry(wait) = after_failure(Some(t(0)), t(60), &gone, 1, timeout) else {
        panic!("gave up after a minute");
    };
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(540),
        "{wait:?}"
    );
    assert_eq!(
        after_failure(Some(t(0)), t(599), &gone, 30, timeout),
        AfterFailure::Retry(Duration::from_secs(1))
    );
    // From the deletion timestamp, not from the first attempt or a restart.
    for now in [600, 601, 86_400] {
        match after_failure(Some(t(0)), t(now), &gone, 1, timeout) {
            AfterFailure::GiveUp { reason, why } => {
                assert_eq!(reason, CLEANUP_TIMED_OUT);
                assert!(
                    why.contains("--cleanup-timeout") && why.contains("connection refused"),
                    "{why}"
                );
            }
            other => panic!("{now}: {other:?}"),
        }
    }
    // A deletion timestamp ahead of our clock counts as now.
    assert!(matches!(
        after_failure(Some(t(100)), t(0), &gone, 1, timeout),
        AfterFailure::Retry(_)
    ));
    // No time at all: the first transient failure gives up.
    assert!(matches!(
        after_failure(Some(t(0)), t(0), &gone, 1, Duration::ZERO),
        AfterFailure::GiveUp { .. }
    ));
}

#[test]
fn a_permanent_cleanup_failure_gives_up_at_once() {
    let timeout = Duration::from_secs(600);
    match after_failure(Some(t(0)), t(1), &registry_error(false), 1, timeout) {
        AfterFailure::GiveUp { reason, why } => {
            assert_eq!(reason, CLEANUP_FAILED);
            assert!(why.contains("refuses the deletes"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let gone_secret = CleanupError::Credentials(crate::controller::plan::Failure::permanent(
        crate::reason::Reason::Unauthorized,
        "Secret team/regcred (spec.credentials.secretRefs) not found",
    ));
    assert!(matches!(
        after_failure(Some(t(0)), t(1), &gone_secret, 1, timeout),
        AfterFailure::GiveUp {
            reason: CLEANUP_FAILED,
            ..
        }
    ));
}

#[test]
fn what_a_cleanup_leaves_behind_is_named() {
    let (owned, _) = converted("v1-soci", Some("idx"));
    let text = left_behind(&[owned]);
    assert!(text.contains(&format!("{REG}/app:v1-soci@idx")), "{text}");
    assert!(text.contains("1 SOCI index)"), "{text}");
    assert_eq!(left_behind(&[]), "nothing was recorded as pushed");
}
