//! The decision for one image, as a chain of small rules (cert-manager's readiness policies are
//! the model): each looks at the facts of the image and either gives a verdict or passes. The
//! registry's answer comes first ([`TARGET_RULES`]): a target that is bound is ready whatever
//! the Jobs say. Only when it is missing or not a binding of this source do the build rules
//! ([`BUILD_RULES`]) look at the Job that builds it.

use super::facts::{
    BuildRequest, BuildSettings, Capacity, Failure, FailureClass, ImageObservation, JobState,
    ObservedJob, Resolved, TargetCheck,
};
use super::{PlanInput, QUEUED_RECHECK, RUNNING_JOB_RECHECK};
use crate::api::condition::{self, LAZY_LOAD_READY};
use crate::api::{Condition, ConditionStatus, ImageStatus};
use crate::controller::durations::{backoff, rfc3339};
use crate::controller::naming::{build_key, job_name, registry_host};
use crate::reason::Reason;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where one image stands after this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Verified,
    InProgress,
    Stalled,
}

pub struct ImageOutcome {
    pub status: ImageStatus,
    pub standing: Standing,
    pub create: Option<BuildRequest>,
    pub delete: Vec<String>,
    pub requeue: Option<Duration>,
    pub queued: bool,
}

/// What the rules of one resolved image look at.
pub struct ImageFacts<'a> {
    pub image_name: &'a str,
    pub resolved: &'a Resolved,
    pub settings: &'a BuildSettings,
    /// The image's entry in the previous status (empty on the first reconcile).
    pub previous: &'a ImageStatus,
    /// The deterministic name of the Job that builds this source into this target.
    pub job_name: String,
    /// That Job, when it exists and is not being deleted.
    pub current: Option<&'a ObservedJob>,
    /// What the target tag holds (missing when the source could not be resolved).
    pub target: Result<TargetCheck, Failure>,
    /// Why the target is not a binding of this source, when it exists.
    pub drift: Option<String>,
    /// The previous status was written for this spec: its permanent stalls hold.
    pub honour_stalls: bool,
    pub builds_elsewhere: &'a BTreeMap<String, String>,
    pub now: Timestamp,
}

/// A rule's verdict: where the image stands, its `LazyLoadReady` condition, and what to do
/// (Jobs to delete besides the obsolete ones, which always go).
pub struct Verdict {
    pub standing: Standing,
    pub lazy: Condition,
    pub create: Option<BuildRequest>,
    pub delete: Vec<String>,
    pub requeue: Option<Duration>,
    pub queued: bool,
}

impl Verdict {
    fn new(standing: Standing, lazy: Condition) -> Self {
        Self {
            standing,
            lazy,
            create: None,
            delete: vec![],
            requeue: None,
            queued: false,
        }
    }

    fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }
}

/// A rule: `None` passes to the next one. It may record what it learnt in the image's status.
pub type Rule = fn(&ImageFacts<'_>, &mut ImageStatus, &mut Capacity) -> Option<Verdict>;

/// The registry's answer, before any Job is looked at.
pub const TARGET_RULES: &[(&str, Rule)] = &[
    ("TargetBound", target_bound),
    ("TargetCheckFailed", target_check_failed),
];

/// The target is missing or not a binding of this source: what the Job says, or a new Job.
pub const BUILD_RULES: &[(&str, Rule)] = &[
    ("BuildRunning", build_running),
    ("RebuildOnceAfterDrift", rebuild_once_after_drift),
    ("BuiltButNotBound", built_but_not_bound),
    ("BuildFailed", build_failed),
    ("PermanentFailureHolds", permanent_failure_holds),
    ("BuiltElsewhere", built_elsewhere),
    ("NoBuildSlot", no_build_slot),
    ("StartBuild", start_build),
];

/// The first verdict of the chain, with the name of the rule that gave it.
pub fn decide(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    capacity: &mut Capacity,
) -> (&'static str, Verdict) {
    for (name, rule) in TARGET_RULES {
        if let Some(verdict) = rule(facts, status, capacity) {
            return (name, verdict);
        }
    }
    // The target is not (or no longer) a valid binding of this source.
    status.target_digest = None;
    status.deploy = None;
    status.platforms.clear();
    for (name, rule) in BUILD_RULES {
        if let Some(verdict) = rule(facts, status, capacity) {
            return (name, verdict);
        }
    }
    unreachable!("StartBuild always gives a verdict")
}

/// Plans one spec image: its status entry, its Jobs to create and delete, when to look again.
pub fn plan_image(
    input: &PlanInput<'_>,
    settings: &BuildSettings,
    spec_image: &str,
    observation: &ImageObservation,
    before: Option<&ImageStatus>,
    honour_stalls: bool,
    capacity: &mut Capacity,
) -> ImageOutcome {
    let previous = before.cloned().unwrap_or_default();
    let jobs: Vec<&ObservedJob> = input
        .jobs
        .iter()
        .filter(|j| j.image_name == observation.name)
        .collect();
    let mut status = ImageStatus {
        name: observation.name.clone(),
        image: spec_image.to_string(),
        // Kept while nothing better is known: the last verified target stays deployable.
        source_digest: previous.source_digest.clone(),
        target: previous.target.clone(),
        target_digest: previous.target_digest.clone(),
        deploy: previous.deploy.clone(),
        platforms: previous.platforms.clone(),
        job: previous.job.clone(),
        last_build_time: previous.last_build_time.clone(),
        failures: previous.failures,
        conditions: vec![],
    };
    let now = rfc3339(input.now);
    let finish = |mut status: ImageStatus, verdict: Verdict, delete: Vec<String>| {
        status.conditions = condition::merge(
            &previous.conditions,
            vec![verdict.lazy],
            input.generation,
            &now,
        );
        ImageOutcome {
            status,
            standing: verdict.standing,
            create: verdict.create,
            delete,
            requeue: verdict.requeue,
            queued: verdict.queued,
        }
    };

    let resolved = match &observation.resolved {
        Ok(resolved) => resolved,
        Err(failure) => {
            let verdict = registry_failure(failure, &mut status);
            // A source that can no longer be resolved makes its finished Jobs pointless.
            let delete = if failure.class == FailureClass::Permanent {
                jobs.iter()
                    .filter(|j| !j.deleting && j.state != JobState::Running)
                    .map(|j| j.name.clone())
                    .collect()
            } else {
                vec![]
            };
            return finish(status, verdict, delete);
        }
    };
    // In place, the tag resolves to what we pushed: the digest we built from stays recorded
    // (deletionPolicy Delete restores it).
    let resolves_to_ours = previous.target_digest.as_deref() == Some(resolved.digest.as_str())
        && previous.target.as_deref() == Some(resolved.target.as_str());
    if !resolves_to_ours || previous.source_digest.is_none() {
        status.source_digest = Some(resolved.digest.clone());
    }
    status.target = Some(resolved.target.clone());
    let name = job_name(
        input.uid,
        &observation.name,
        &resolved.digest,
        &resolved.target,
        settings,
    );
    // Jobs that build something else (an older digest, other settings) are obsolete.
    let obsolete: Vec<String> = jobs
        .iter()
        .filter(|j| j.name != name && !j.deleting)
        .map(|j| j.name.clone())
        .collect();
    let target = observation
        .target
        .clone()
        .unwrap_or(Ok(TargetCheck::Missing));
    let facts = ImageFacts {
        image_name: &observation.name,
        resolved,
        settings,
        previous: &previous,
        current: jobs.iter().copied().find(|j| j.name == name && !j.deleting),
        job_name: name,
        drift: match &target {
            Ok(TargetCheck::NotBound { message }) => Some(message.clone()),
            _ => None,
        },
        target,
        honour_stalls,
        builds_elsewhere: &input.builds_elsewhere,
        now: input.now,
    };
    let (_, verdict) = decide(&facts, &mut status, capacity);
    let mut delete = obsolete;
    delete.extend(verdict.delete.iter().cloned());
    finish(status, verdict, delete)
}

/// A registry failure the controller saw itself: permanent ones stall, transient ones count
/// towards the backoff.
fn registry_failure(failure: &Failure, status: &mut ImageStatus) -> Verdict {
    let (standing, condition_status, requeue) = match failure.class {
        FailureClass::Permanent => (Standing::Stalled, ConditionStatus::False, None),
        FailureClass::Transient => {
            status.failures = status.failures.saturating_add(1);
            let wait = backoff(status.failures.max(0) as u32);
            (Standing::InProgress, ConditionStatus::Unknown, Some(wait))
        }
    };
    let lazy = Condition::new(
        LAZY_LOAD_READY,
        condition_status,
        failure.reason,
        &failure.message,
    );
    Verdict {
        requeue,
        ..Verdict::new(standing, lazy)
    }
}

fn lazy(status: ConditionStatus, why: Reason, message: impl Into<String>) -> Condition {
    Condition::new(LAZY_LOAD_READY, status, why, message)
}

/// The registry answer wins: a bound target is ready whatever the Jobs say.
fn target_bound(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let Ok(TargetCheck::Bound { digest, platforms }) = &facts.target else {
        return None;
    };
    let deploy = format!("{}@{digest}", facts.resolved.target);
    status.target_digest = Some(digest.clone());
    status.deploy = Some(deploy.clone());
    status.platforms = platforms.clone();
    status.failures = 0;
    if let Some(job) = facts.current
        && job.state == JobState::Succeeded
    {
        status.job = Some(job.name.clone());
        if let Some(t) = job.finished_at {
            status.last_build_time = Some(rfc3339(t));
        }
    }
    let condition = lazy(
        ConditionStatus::True,
        Reason::Verified,
        format!("deploy {deploy}"),
    );
    Some(Verdict::new(Standing::Verified, condition))
}

/// The target could not be checked (the registry failed, or refused us).
fn target_check_failed(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let Err(failure) = &facts.target else {
        return None;
    };
    Some(registry_failure(failure, status))
}

fn build_running(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let job = facts.current.filter(|j| j.state == JobState::Running)?;
    status.job = Some(job.name.clone());
    let message = format!("Job {} is building {}", job.name, facts.resolved.target);
    let condition = lazy(ConditionStatus::Unknown, Reason::Building, message);
    Some(Verdict::new(Standing::InProgress, condition).requeue(RUNNING_JOB_RECHECK))
}

/// The target was deleted or damaged after the build (or never bound): build it once more. The
/// finished Job (same name) goes first; the next reconcile creates the new one. `failures`
/// (reset when the target verifies) makes a rebuild that does not bind either stall instead of
/// looping ([`built_but_not_bound`]).
fn rebuild_once_after_drift(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let job = facts.current.filter(|j| j.state == JobState::Succeeded)?;
    if status.failures != 0 {
        return None;
    }
    status.failures = 1;
    let message = format!(
        "Job {} succeeded, but {} is now {}: rebuilding",
        job.name,
        facts.resolved.target,
        facts.drift.as_deref().unwrap_or("missing")
    );
    let condition = lazy(ConditionStatus::Unknown, Reason::TargetDrifted, message);
    Some(Verdict {
        delete: vec![job.name.clone()],
        ..Verdict::new(Standing::InProgress, condition).requeue(Duration::from_secs(5))
    })
}

/// The worker says done, the registry disagrees: rebuilding would fail the same way.
fn built_but_not_bound(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let job = facts.current.filter(|j| j.state == JobState::Succeeded)?;
    status.job = Some(job.name.clone());
    let message = format!(
        "Job {} succeeded but {} is not a valid SOCI binding of {}: {}",
        job.name,
        facts.resolved.target,
        facts.resolved.source,
        facts
            .drift
            .as_deref()
            .unwrap_or("the target tag is missing")
    );
    let condition = lazy(ConditionStatus::False, Reason::VerificationFailed, message);
    Some(Verdict::new(Standing::Stalled, condition))
}

/// A permanent failure stalls; a transient one keeps the failed Job (it blocks a re-create)
/// until its backoff is over, then deletes it so that the next reconcile builds again.
fn build_failed(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let job = facts.current?;
    let JobState::Failed(failure) = &job.state else {
        return None;
    };
    status.job = Some(job.name.clone());
    let message = format!("Job {}: {}", job.name, failure.message);
    if failure.class == FailureClass::Permanent {
        let condition = lazy(ConditionStatus::False, failure.reason, message);
        return Some(Verdict::new(Standing::Stalled, condition));
    }
    let wait = backoff(status.failures.max(1) as u32);
    let elapsed = job
        .finished_at
        .map(|t| facts.now.duration_since(t).unsigned_abs());
    let mut delete = vec![];
    let requeue = if elapsed.is_none_or(|e| e >= wait) {
        status.failures = status.failures.saturating_add(1);
        delete.push(job.name.clone());
        Duration::from_secs(5)
    } else {
        wait.saturating_sub(elapsed.unwrap_or_default())
            .max(Duration::from_secs(1))
    };
    // Unknown, not False: the outcome is open, and a False build reason is what marks a
    // permanent stall for later reconciles.
    let condition = lazy(
        ConditionStatus::Unknown,
        failure.reason,
        format!("{message}; retrying"),
    );
    Some(Verdict {
        delete,
        ..Verdict::new(Standing::InProgress, condition).requeue(requeue)
    })
}

/// A permanent failure of this very build is not retried until the spec changes or a
/// reconcile is requested, even when its Job has been cleaned up since.
fn permanent_failure_holds(
    facts: &ImageFacts<'_>,
    _: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    if facts.current.is_some() || !facts.honour_stalls {
        return None;
    }
    let previous = facts.previous;
    let held = condition::find(&previous.conditions, LAZY_LOAD_READY).filter(|lazy| {
        previous.job.as_deref() == Some(facts.job_name.as_str())
            && previous.source_digest.as_deref() == Some(facts.resolved.digest.as_str())
            && lazy.status == ConditionStatus::False
            && Reason::is_permanent_build_failure(&lazy.reason)
    })?;
    Some(Verdict::new(Standing::Stalled, held.clone()))
}

/// Another SociIndex's Job is building these very bytes: its result is checked here like any
/// other target once it is done.
fn built_elsewhere(
    facts: &ImageFacts<'_>,
    _: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    if facts.current.is_some() {
        return None;
    }
    let key = build_key(
        &facts.resolved.digest,
        &facts.resolved.target,
        facts.settings,
    );
    let other = facts.builds_elsewhere.get(&key)?;
    let message = format!(
        "Job {other} (another SociIndex) is building {} from the same source",
        facts.resolved.target
    );
    let condition = lazy(ConditionStatus::Unknown, Reason::Building, message);
    Some(Verdict::new(Standing::InProgress, condition).requeue(QUEUED_RECHECK))
}

/// Every slot is taken (the Job caps): no Job now; the same build is planned again once a slot
/// is free.
fn no_build_slot(
    facts: &ImageFacts<'_>,
    _: &mut ImageStatus,
    capacity: &mut Capacity,
) -> Option<Verdict> {
    if facts.current.is_some() {
        return None;
    }
    let why = capacity
        .take(&registry_host(&facts.resolved.source))
        .err()?;
    let message = match &facts.drift {
        Some(m) => format!("{m}; waiting for a build slot: {why}"),
        None => format!("waiting for a build slot: {why}"),
    };
    let condition = lazy(ConditionStatus::Unknown, Reason::Queued, message);
    Some(Verdict {
        queued: true,
        ..Verdict::new(Standing::InProgress, condition).requeue(QUEUED_RECHECK)
    })
}

/// A slot is taken: create the Job.
fn start_build(
    facts: &ImageFacts<'_>,
    status: &mut ImageStatus,
    _: &mut Capacity,
) -> Option<Verdict> {
    let name = &facts.job_name;
    status.job = Some(name.clone());
    let (why, message) = match &facts.drift {
        Some(m) => (
            Reason::TargetDrifted,
            format!("{m}; Job {name} is rebuilding it"),
        ),
        None => (
            Reason::Building,
            format!("Job {name} is building {}", facts.resolved.target),
        ),
    };
    let request = BuildRequest {
        job_name: name.clone(),
        image_name: facts.image_name.to_string(),
        source: facts.resolved.source.clone(),
        source_digest: facts.resolved.digest.clone(),
        target: facts.resolved.target.clone(),
        settings: facts.settings.clone(),
    };
    Some(Verdict {
        create: Some(request),
        ..Verdict::new(
            Standing::InProgress,
            lazy(ConditionStatus::Unknown, why, message),
        )
        .requeue(RUNNING_JOB_RECHECK)
    })
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
