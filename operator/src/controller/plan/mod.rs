//! The reconcile decision, as a pure function: what the controller observed (spec, status,
//! resolved digests, target checks, owned Jobs, the time) in; Jobs to create and delete, the
//! new status and when to look again out. No I/O here, so every transition is unit tested.
//!
//! [`plan`] runs the per-image rules ([`rules`]) for each spec image and sums them up into the
//! object's conditions.

pub mod claims;
pub mod facts;
pub mod object_status;
pub mod rules;
pub mod spec_check;

pub use claims::{TargetClaim, apply_target_conflicts, claims_outside, target_claims};
pub use facts::*;
pub use object_status::{Boundary, boundary_object_status, early_status, status_is_current};
pub use spec_check::check_spec;

use crate::api::budget;
use crate::api::condition::{self, LAZY_LOAD_READY, READY, RECONCILING, STALLED};
use crate::api::{Condition, ConditionStatus, SociIndexSpec, SociIndexStatus};
use crate::controller::durations::{
    MAX_INTERVAL, MIN_INTERVAL, bounded_interval, jittered, rfc3339,
};
use crate::reason::Reason;
use k8s_openapi::jiff::Timestamp;
use rules::{ImageOutcome, Standing, plan_image};
use std::collections::BTreeMap;
use std::time::Duration;

/// The fallback of `--default-interval` (itself the fallback of `spec.interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// How often a running build is looked at even without a Job event.
pub const RUNNING_JOB_RECHECK: Duration = Duration::from_secs(60);
/// How soon a build waiting for a Job slot (the caps) is looked at again.
pub const QUEUED_RECHECK: Duration = Duration::from_secs(15);

pub struct PlanInput<'a> {
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a SociIndexSpec,
    pub status: Option<&'a SociIndexStatus>,
    /// The value of the reconcile-request annotation.
    pub reconcile_request: Option<&'a str>,
    /// One per spec image, in spec order (ignored while suspended).
    pub images: Vec<ImageObservation>,
    pub jobs: Vec<ObservedJob>,
    pub now: Timestamp,
    /// `--default-interval`: used when `spec.interval` is absent or malformed.
    pub default_interval: Duration,
    /// The worker Job slots free now (`--max-concurrent-jobs`, `--max-jobs-per-registry`,
    /// `--max-jobs-per-namespace`).
    pub capacity: Capacity,
    /// Running Jobs of other objects, by [`build_key`](crate::controller::naming::build_key) → `namespace/name`: a build already
    /// running for another SociIndex is waited for, not started twice.
    pub builds_elsewhere: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub create: Vec<BuildRequest>,
    /// Names of Jobs to delete (obsolete, or failed transiently and due for a retry).
    pub delete: Vec<String>,
    pub status: SociIndexStatus,
    pub requeue_after: Option<Duration>,
    /// Builds due but held back by the Job caps (`Queued`).
    pub queued: usize,
}

pub fn plan(input: PlanInput<'_>) -> Plan {
    let now_text = rfc3339(input.now);
    let previous = input.status.cloned().unwrap_or_default();
    // The reconcile stalls a spec with an interval out of bounds before it plans
    // ([`check_spec`]); the plan holds any spec in bounds all the same.
    let interval = input
        .spec
        .interval
        .as_deref()
        .and_then(|text| bounded_interval(text).ok())
        .unwrap_or(input.default_interval)
        .clamp(MIN_INTERVAL, MAX_INTERVAL);

    if input.spec.suspend {
        let mut status = previous.clone();
        status.observed_generation = input.generation;
        let mut wanted: Vec<Condition> = previous
            .conditions
            .iter()
            .filter(|c| c.type_ == READY)
            .cloned()
            .collect();
        if wanted.is_empty() {
            wanted.push(Condition::new(
                READY,
                ConditionStatus::Unknown,
                Reason::Suspended,
                "suspended before the first reconcile",
            ));
        }
        status.conditions =
            condition::merge(&previous.conditions, wanted, input.generation, &now_text);
        return Plan {
            create: vec![],
            delete: vec![],
            status,
            requeue_after: None,
            queued: 0,
        };
    }

    // A new reconcile request, or a new generation, lifts the stall of every image.
    let honour_stalls = status_is_current(&previous, input.generation, input.reconcile_request);
    let settings = BuildSettings::from_spec(input.spec);

    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut images = Vec::new();
    let mut standings = Vec::new();
    let mut requeue: Option<Duration> = None;
    let mut capacity = input.capacity.clone();
    let mut queued = 0;
    for observation in &input.images {
        let spec_image = input
            .spec
            .images
            .iter()
            .find(|i| i.name == observation.name);
        let Some(spec_image) = spec_image else {
            continue;
        };
        let before = previous.images.iter().find(|s| s.name == observation.name);
        let outcome: ImageOutcome = plan_image(
            &input,
            &settings,
            &spec_image.image,
            observation,
            before,
            honour_stalls,
            &mut capacity,
        );
        queued += usize::from(outcome.queued);
        if let Some(r) = outcome.requeue {
            requeue = Some(requeue.map_or(r, |q: Duration| q.min(r)));
        }
        create.extend(outcome.create);
        delete.extend(outcome.delete);
        standings.push((outcome.standing, observation.name.clone()));
        images.push(outcome.status);
    }
    // Jobs of images that left the spec.
    for job in &input.jobs {
        if !job.deleting && !input.images.iter().any(|o| o.name == job.image_name) {
            delete.push(job.name.clone());
        }
    }

    let desired = images.len() as i32;
    let ready = standings
        .iter()
        .filter(|(s, _)| *s == Standing::Verified)
        .count() as i32;
    let in_progress = standings.iter().any(|(s, _)| *s == Standing::InProgress);
    let first_stalled = images
        .iter()
        .zip(&standings)
        .find(|(_, (s, _))| *s == Standing::Stalled)
        .map(|(i, _)| i);

    let mut wanted = Vec::new();
    if ready == desired {
        wanted.push(Condition::new(
            READY,
            ConditionStatus::True,
            Reason::Verified,
            format!("{ready}/{desired} images are bound to a verified SOCI index"),
        ));
    } else if let (Some(stalled), false) = (first_stalled, in_progress) {
        let lazy = condition::find(&stalled.conditions, LAZY_LOAD_READY);
        let reason = lazy.map_or(Reason::BuildFailed.as_str(), |c| c.reason.as_str());
        let message = format!(
            "image {}: {}",
            stalled.name,
            lazy.map_or("", |c| c.message.as_str())
        );
        wanted.push(Condition::new(
            READY,
            ConditionStatus::False,
            reason,
            message.clone(),
        ));
        wanted.push(Condition::new(
            STALLED,
            ConditionStatus::True,
            reason,
            message,
        ));
    } else {
        let waiting: Vec<&str> = images
            .iter()
            .zip(&standings)
            .filter(|(_, (s, _))| *s == Standing::InProgress)
            .map(|(i, _)| i.name.as_str())
            .collect();
        let message = format!(
            "{ready}/{desired} images ready; in progress: {}",
            waiting.join(", ")
        );
        wanted.push(Condition::new(
            READY,
            ConditionStatus::Unknown,
            Reason::Progressing,
            message.clone(),
        ));
        wanted.push(Condition::new(
            RECONCILING,
            ConditionStatus::True,
            Reason::Progressing,
            message,
        ));
    }
    if !in_progress {
        // Settled (ready or stalled): look again after the interval only.
        let next = jittered(interval, input.uid);
        requeue = Some(requeue.map_or(next, |q| q.min(next)));
    }

    let mut status = SociIndexStatus {
        observed_generation: input.generation,
        conditions: condition::merge(&previous.conditions, wanted, input.generation, &now_text),
        ready_images: ready,
        desired_images: desired,
        summary: Some(format!("{ready}/{desired}")),
        last_handled_reconcile_at: input
            .reconcile_request
            .map(str::to_string)
            .or(previous.last_handled_reconcile_at.clone()),
        images,
    };
    budget::fit(&mut status, budget::STATUS_BUDGET);
    Plan {
        create,
        delete,
        status,
        requeue_after: requeue,
        queued,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "tenant_tests.rs"]
mod tenant_tests;
