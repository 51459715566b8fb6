//! Statuses of the whole object outside the per-image plan: the early write of a new
//! generation, and the boundary statuses (`InvalidSpec`, `InternalError`, `ReconcileTimeout`).

use crate::api::budget;
use crate::api::condition::{self, READY, RECONCILING, STALLED};
use crate::api::{Condition, ConditionStatus, SociIndexStatus};
use crate::controller::durations::rfc3339;
use crate::reason::Reason;
use k8s_openapi::jiff::Timestamp;

/// Whether `status` was written for this spec (its generation) and no reconcile was requested
/// since: then its stalls hold, and its verified images need only the settled recheck. A new
/// generation or a new reconcile request lifts both.
pub fn status_is_current(
    status: &SociIndexStatus,
    generation: Option<i64>,
    reconcile_request: Option<&str>,
) -> bool {
    status.observed_generation == generation
        && (reconcile_request.is_none()
            || reconcile_request == status.last_handled_reconcile_at.as_deref())
}

/// The status to write before the slow work starts when the spec is new or changed: `Ready`
/// becomes `Unknown` and `Reconciling` true, so readers never see a stale `Ready=True` for a
/// generation that has not been looked at. `None` when nothing needs writing first.
pub fn early_status(
    generation: Option<i64>,
    status: Option<&SociIndexStatus>,
    now: Timestamp,
) -> Option<SociIndexStatus> {
    let previous = status.cloned().unwrap_or_default();
    let has_ready = condition::find(&previous.conditions, READY).is_some();
    if has_ready && previous.observed_generation == generation {
        return None;
    }
    let now = rfc3339(now);
    let mut next = previous.clone();
    next.observed_generation = generation;
    next.conditions = condition::merge(
        &previous.conditions,
        vec![
            Condition::new(
                READY,
                ConditionStatus::Unknown,
                Reason::Progressing,
                "reconciling the new generation",
            ),
            Condition::new(
                RECONCILING,
                ConditionStatus::True,
                Reason::Progressing,
                "reconciling the new generation",
            ),
        ],
        generation,
        &now,
    );
    Some(next)
}

/// Where an object outside the per-image plan stands, and the conditions that say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// The controller does not act on it (`InvalidSpec`, `InternalError`): `Ready` false and
    /// `Stalled` true.
    Stalled,
    /// Its reconcile was abandoned and is retried (`ReconcileTimeout`): `Ready` unknown and
    /// `Reconciling` true.
    Retrying,
}

impl Boundary {
    fn conditions(self) -> [(&'static str, ConditionStatus); 2] {
        match self {
            Boundary::Stalled => [
                (READY, ConditionStatus::False),
                (STALLED, ConditionStatus::True),
            ],
            Boundary::Retrying => [
                (READY, ConditionStatus::Unknown),
                (RECONCILING, ConditionStatus::True),
            ],
        }
    }
}

/// The status of an object that is stalled or retried (see [`Boundary`]), with `reason` and
/// `message` on both conditions. The images' entries are kept: they record what was pushed
/// (what cleanup removes, what to deploy).
pub fn boundary_object_status(
    boundary: Boundary,
    previous: Option<&SociIndexStatus>,
    generation: Option<i64>,
    why: Reason,
    message: &str,
    now: Timestamp,
) -> SociIndexStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let wanted = boundary
        .conditions()
        .into_iter()
        .map(|(type_, s)| Condition::new(type_, s, why, message))
        .collect();
    status.conditions = condition::merge(&status.conditions, wanted, generation, &rfc3339(now));
    status.observed_generation = generation;
    budget::fit(&mut status, budget::STATUS_BUDGET);
    status
}
