//! The plan, transition by transition, without a cluster.

use super::*;
use crate::api::{ImageSpec, IndexSettings, SociIndexSpec};
use crate::api::{PlatformStatus, TargetSpec};
use crate::controller::durations::*;
use crate::controller::naming::*;

const UID: &str = "0b3c1f5e-uid";
const SRC: &str = "127.0.0.1:5000/app@sha256:aaaa";
const DIGEST_A: &str = "sha256:aaaa";
const DIGEST_B: &str = "sha256:bbbb";
const TARGET: &str = "127.0.0.1:5000/app:v1-soci";

fn spec(images: &[&str]) -> SociIndexSpec {
    SociIndexSpec {
        images: images
            .iter()
            .map(|n| ImageSpec {
                name: n.to_string(),
                image: format!("127.0.0.1:5000/{n}:v1"),
            })
            .collect(),
        settings: IndexSettings {
            interval: Some("10m".into()),
            ..Default::default()
        },
        suspend: false,
    }
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn resolved(name: &str, digest: &str) -> Result<Resolved, Failure> {
    Ok(Resolved {
        source: format!("127.0.0.1:5000/{name}@{digest}"),
        digest: digest.into(),
        target: TARGET.into(),
    })
}

fn seen(name: &str, digest: &str, target: TargetCheck) -> ImageObservation {
    ImageObservation {
        name: name.into(),
        resolved: resolved(name, digest),
        target: Some(Ok(target)),
    }
}

fn bound() -> TargetCheck {
    TargetCheck::Bound {
        digest: "sha256:tttt".into(),
        platforms: vec![PlatformStatus {
            platform: "linux/amd64".into(),
            soci_index_digest: Some("sha256:iiii".into()),
            layers_indexed: 1,
            layers_too_small: 0,
            layers_unsupported: 0,
            bytes_indexed_percent: "100.0".into(),
        }],
    }
}

fn name_for(spec: &SociIndexSpec, image: &str, digest: &str) -> String {
    job_name(UID, image, digest, TARGET, &BuildSettings::from_spec(spec))
}

fn job(name: &str, image: &str, state: JobState, finished: Option<Timestamp>) -> ObservedJob {
    ObservedJob {
        name: name.into(),
        image_name: image.into(),
        state,
        finished_at: finished,
        deleting: false,
    }
}

struct Run<'a> {
    spec: &'a SociIndexSpec,
    generation: i64,
    status: Option<&'a SociIndexStatus>,
    request: Option<&'a str>,
    images: Vec<ImageObservation>,
    jobs: Vec<ObservedJob>,
    now: Timestamp,
    default_interval: Duration,
    capacity: Capacity,
    builds_elsewhere: BTreeMap<String, String>,
}

impl<'a> Run<'a> {
    fn new(spec: &'a SociIndexSpec, images: Vec<ImageObservation>) -> Self {
        Self {
            spec,
            generation: 1,
            status: None,
            request: None,
            images,
            jobs: vec![],
            now: t(0),
            default_interval: DEFAULT_INTERVAL,
            capacity: Capacity::default(),
            builds_elsewhere: BTreeMap::new(),
        }
    }

    fn plan(self) -> Plan {
        let p = plan(PlanInput {
            uid: UID,
            generation: Some(self.generation),
            spec: self.spec,
            status: self.status,
            reconcile_request: self.request,
            images: self.images,
            jobs: self.jobs,
            now: self.now,
            default_interval: self.default_interval,
            capacity: self.capacity,
            builds_elsewhere: self.builds_elsewhere,
        });
        // Never a hot loop: whatever happens, the next look is at least a second away.
        if let Some(r) = p.requeue_after {
            assert!(r >= Duration::from_secs(1), "requeue {r:?}");
        }
        assert_eq!(p.status.observed_generation, Some(self.generation));
        p
    }
}

fn cond<'a>(conditions: &'a [Condition], t: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == t)
}

/// A condition's reason, which the plan writes from the vocabulary only.
fn reason_of(c: &Condition) -> Reason {
    Reason::parse(&c.reason).unwrap_or_else(|| panic!("{} is not a Reason", c.reason))
}

fn top(p: &Plan, t: &str) -> Option<(ConditionStatus, Reason)> {
    cond(&p.status.conditions, t).map(|c| (c.status, reason_of(c)))
}

fn lazy(p: &Plan, image: usize) -> (ConditionStatus, Reason) {
    let c = cond(&p.status.images[image].conditions, LAZY_LOAD_READY).expect("LazyLoadReady");
    (c.status, reason_of(c))
}

fn is(status: ConditionStatus, reason: Reason) -> Option<(ConditionStatus, Reason)> {
    Some((status, reason))
}

#[test]
fn a_missing_target_starts_one_build_and_reports_progress() {
    let s = spec(&["app"]);
    let p = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]).plan();
    assert_eq!(p.create.len(), 1);
    let request = &p.create[0];
    assert_eq!(request.job_name, name_for(&s, "app", DIGEST_A));
    assert_eq!(request.source, SRC);
    assert_eq!(request.target, TARGET);
    assert!(p.delete.is_empty());
    assert_eq!(lazy(&p, 0), (ConditionStatus::Unknown, Reason::Building));
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, Reason::Progressing)
    );
    assert_eq!(
        top(&p, RECONCILING),
        is(ConditionStatus::True, Reason::Progressing)
    );
    assert_eq!(top(&p, STALLED), None);
    assert_eq!(
        p.status.images[0].job.as_deref(),
        Some(request.job_name.as_str())
    );
    assert_eq!(p.status.summary.as_deref(), Some("0/1"));
    assert_eq!(p.requeue_after, Some(RUNNING_JOB_RECHECK));
}

#[test]
fn a_running_build_is_waited_for_not_duplicated() {
    let s = spec(&["app"]);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(
        &name_for(&s, "app", DIGEST_A),
        "app",
        JobState::Running,
        None,
    )];
    let p = run.plan();
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(lazy(&p, 0), (ConditionStatus::Unknown, Reason::Building));
    assert_eq!(
        top(&p, RECONCILING),
        is(ConditionStatus::True, Reason::Progressing)
    );
}

#[test]
fn a_finished_build_with_a_verified_target_is_ready() {
    let s = spec(&["app"]);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    let name = name_for(&s, "app", DIGEST_A);
    run.jobs = vec![job(&name, "app", JobState::Succeeded, Some(t(-5)))];
    let p = run.plan();
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(lazy(&p, 0), (ConditionStatus::True, Reason::Verified));
    assert_eq!(top(&p, READY), is(ConditionStatus::True, Reason::Verified));
    assert_eq!(top(&p, RECONCILING), None);
    assert_eq!(top(&p, STALLED), None);
    let image = &p.status.images[0];
    assert_eq!(
        image.deploy.as_deref(),
        Some("127.0.0.1:5000/app:v1-soci@sha256:tttt")
    );
    assert_eq!(image.source_digest.as_deref(), Some(DIGEST_A));
    assert_eq!(image.job.as_deref(), Some(name.as_str()));
    assert_eq!(
        image.last_build_time.as_deref(),
        Some(rfc3339(t(-5)).as_str())
    );
    assert_eq!(image.platforms.len(), 1);
    assert_eq!((p.status.ready_images, p.status.desired_images), (1, 1));
    // Settled: the next look is the interval, stretched by the object's fixed jitter.
    let r = p.requeue_after.unwrap();
    assert!(
        r >= Duration::from_secs(600) && r <= Duration::from_secs(660),
        "{r:?}"
    );
}

#[test]
fn an_already_bound_target_is_verified_without_a_job() {
    let s = spec(&["app"]);
    let p = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    assert!(p.create.is_empty());
    assert_eq!(top(&p, READY), is(ConditionStatus::True, Reason::Verified));
    assert_eq!(p.status.images[0].job, None);
}

#[test]
fn permanent_resolve_failures_stall_with_their_reason_and_build_nothing() {
    for why in [
        Reason::InvalidReference,
        Reason::ImageNotFound,
        Reason::Unauthorized,
    ] {
        let s = spec(&["app"]);
        let run = Run::new(
            &s,
            vec![ImageObservation {
                name: "app".into(),
                resolved: Err(Failure::permanent(why, "what to fix")),
                target: None,
            }],
        );
        let p = run.plan();
        assert!(p.create.is_empty(), "{why}");
        assert_eq!(lazy(&p, 0), (ConditionStatus::False, why));
        assert_eq!(top(&p, READY), is(ConditionStatus::False, why));
        assert_eq!(top(&p, STALLED), is(ConditionStatus::True, why));
        assert_eq!(top(&p, RECONCILING), None);
        let message = &cond(&p.status.conditions, READY).unwrap().message;
        assert!(
            message.contains("app") && message.contains("what to fix"),
            "{message}"
        );
        // Stalled objects are looked at again only after the interval.
        assert!(p.requeue_after.unwrap() >= Duration::from_secs(600));
    }
}

#[test]
fn transient_registry_failures_back_off_and_do_not_stall() {
    let s = spec(&["app"]);
    let observation = ImageObservation {
        name: "app".into(),
        resolved: Err(Failure::transient(Reason::RegistryUnavailable, "503")),
        target: None,
    };
    let p1 = Run::new(&s, vec![observation.clone()]).plan();
    assert_eq!(
        lazy(&p1, 0),
        (ConditionStatus::Unknown, Reason::RegistryUnavailable)
    );
    assert_eq!(top(&p1, STALLED), None);
    assert_eq!(
        top(&p1, RECONCILING),
        is(ConditionStatus::True, Reason::Progressing)
    );
    let first = p1.requeue_after.unwrap();
    let mut run = Run::new(&s, vec![observation]);
    run.status = Some(&p1.status);
    let p2 = run.plan();
    assert!(p2.requeue_after.unwrap() > first, "backoff grows");
    assert_eq!(p2.status.images[0].failures, 2);
    assert_eq!(backoff(30), BACKOFF_MAX);
}

#[test]
fn a_transient_target_check_failure_keeps_the_last_deployable_target() {
    let s = spec(&["app"]);
    let ready = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    let mut run = Run::new(
        &s,
        vec![ImageObservation {
            name: "app".into(),
            resolved: resolved("app", DIGEST_A),
            target: Some(Err(Failure::transient(
                Reason::RegistryUnavailable,
                "reset",
            ))),
        }],
    );
    run.status = Some(&ready.status);
    let p = run.plan();
    assert!(p.create.is_empty());
    assert_eq!(p.status.images[0].deploy, ready.status.images[0].deploy);
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, Reason::Progressing)
    );
}

#[test]
fn a_permanent_build_failure_stalls_until_the_spec_changes_or_a_retry_is_requested() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let failed = JobState::Failed(Failure::permanent(
        Reason::NoIndexableLayers,
        "all layers small",
    ));
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(&name, "app", failed, Some(t(-1)))];
    let stalled = run.plan();
    assert!(stalled.create.is_empty() && stalled.delete.is_empty());
    assert_eq!(
        lazy(&stalled, 0),
        (ConditionStatus::False, Reason::NoIndexableLayers)
    );
    assert_eq!(
        top(&stalled, STALLED),
        is(ConditionStatus::True, Reason::NoIndexableLayers)
    );

    // The Job is gone (TTL), same generation: still stalled, nothing rebuilt.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&stalled.status);
    let p = run.plan();
    assert!(p.create.is_empty(), "no rebuild of a permanent failure");
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, Reason::NoIndexableLayers)
    );

    // A new generation lifts the stall.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&stalled.status);
    run.generation = 2;
    assert_eq!(run.plan().create.len(), 1);

    // So does a new reconcile request, once.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&stalled.status);
    run.request = Some("2026-11-26T20:00:00Z");
    let retried = run.plan();
    assert_eq!(retried.create.len(), 1);
    assert_eq!(
        retried.status.last_handled_reconcile_at.as_deref(),
        Some("2026-11-26T20:00:00Z")
    );
}

#[test]
fn a_build_past_its_deadline_is_reported_not_retried() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(
        &name,
        "app",
        JobState::Failed(crate::controller::worker::job_failure(
            "DeadlineExceeded",
            "",
            None,
        )),
        Some(t(-1)),
    )];
    let p = run.plan();
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, Reason::DeadlineExceeded)
    );
}

#[test]
fn a_transient_build_failure_is_retried_after_a_backoff() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let failed = JobState::Failed(Failure::transient(Reason::BuildFailed, "registry 503"));
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(&name, "app", failed.clone(), Some(t(-3)))];
    let waiting = run.plan();
    assert!(waiting.delete.is_empty() && waiting.create.is_empty());
    assert_eq!(
        waiting.requeue_after,
        Some(backoff(1) - Duration::from_secs(3))
    );
    assert_eq!(top(&waiting, STALLED), None);
    assert_eq!(
        lazy(&waiting, 0),
        (ConditionStatus::Unknown, Reason::BuildFailed)
    );

    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(&name, "app", failed, Some(t(-3)))];
    run.now = t(60);
    let due = run.plan();
    assert_eq!(due.delete, vec![name.clone()]);
    assert!(due.create.is_empty(), "re-created once the old Job is gone");
    assert_eq!(due.status.images[0].failures, 1);

    // Next reconcile: the failed Job is gone, so the same build is started again.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&due.status);
    run.now = t(65);
    let again = run.plan();
    assert_eq!(again.create.len(), 1);
    assert_eq!(again.create[0].job_name, name);
}

#[test]
fn a_moved_tag_builds_the_new_digest_and_drops_the_old_job() {
    let s = spec(&["app"]);
    let mut first = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    let old = name_for(&s, "app", DIGEST_A);
    first.jobs = vec![job(&old, "app", JobState::Succeeded, Some(t(-100)))];
    let ready = first.plan();

    let mut run = Run::new(
        &s,
        vec![seen(
            "app",
            DIGEST_B,
            TargetCheck::NotBound {
                message: "target has no image manifest for the source".into(),
            },
        )],
    );
    run.status = Some(&ready.status);
    run.jobs = vec![job(&old, "app", JobState::Succeeded, Some(t(-100)))];
    let p = run.plan();
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].job_name, name_for(&s, "app", DIGEST_B));
    assert_ne!(p.create[0].job_name, old);
    assert_eq!(p.delete, vec![old]);
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::Unknown, Reason::TargetDrifted)
    );
    assert_eq!(
        p.status.images[0].deploy, None,
        "the old target is not this source's"
    );
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, Reason::Progressing)
    );
}

#[test]
fn a_verified_target_deleted_later_is_rebuilt_once() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let done = || vec![job(&name, "app", JobState::Succeeded, Some(t(-100)))];
    let mut first = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    first.jobs = done();
    let ready = first.plan();

    // The target is gone: the finished Job (same name) is deleted, nothing created yet.
    let mut gone = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    gone.status = Some(&ready.status);
    gone.jobs = done();
    let p = gone.plan();
    assert!(p.create.is_empty());
    assert_eq!(p.delete, vec![name.clone()]);
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::Unknown, Reason::TargetDrifted)
    );
    assert!(p.requeue_after.is_some());

    // With the Job gone, the same build is created again.
    let mut rebuild = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    rebuild.status = Some(&p.status);
    let again = rebuild.plan();
    assert_eq!(again.create.len(), 1);
    assert_eq!(again.create[0].job_name, name);

    // A rebuild that succeeds without a binding stalls: no loop.
    let mut failed = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    failed.status = Some(&again.status);
    failed.jobs = done();
    let stalled = failed.plan();
    assert!(stalled.create.is_empty() && stalled.delete.is_empty());
    assert_eq!(
        lazy(&stalled, 0),
        (ConditionStatus::False, Reason::VerificationFailed)
    );
}

#[test]
fn a_succeeded_job_whose_target_does_not_verify_is_retried_once_then_stalls() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(&name, "app", JobState::Succeeded, Some(t(-1)))];
    let retried = run.plan();
    assert_eq!(retried.delete, vec![name.clone()]);
    assert_eq!(retried.status.images[0].failures, 1);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&retried.status);
    run.jobs = vec![job(&name, "app", JobState::Succeeded, Some(t(-1)))];
    let p = run.plan();
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::False, Reason::VerificationFailed)
    );
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, Reason::VerificationFailed)
    );
}

#[test]
fn ready_is_unknown_while_any_image_progresses_and_stalled_only_when_nothing_does() {
    let s = spec(&["a", "b", "c"]);
    let images = vec![
        seen("a", DIGEST_A, bound()),
        ImageObservation {
            name: "b".into(),
            resolved: Err(Failure::permanent(Reason::ImageNotFound, "gone")),
            target: None,
        },
        seen("c", DIGEST_A, TargetCheck::Missing),
    ];
    let p = Run::new(&s, images.clone()).plan();
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, Reason::Progressing)
    );
    assert_eq!(top(&p, STALLED), None);
    assert_eq!((p.status.ready_images, p.status.desired_images), (1, 3));
    assert_eq!(p.create.len(), 1);

    let mut settled = images;
    settled[2] = seen("c", DIGEST_A, bound());
    let p = Run::new(&s, settled).plan();
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::False, Reason::ImageNotFound)
    );
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, Reason::ImageNotFound)
    );
    assert_eq!(top(&p, RECONCILING), None);
}

#[test]
fn transition_times_move_only_with_status() {
    let s = spec(&["app"]);
    let first = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    run.status = Some(&first.status);
    run.now = t(500);
    let second = run.plan();
    assert_eq!(
        second.status, first.status,
        "an unchanged world writes nothing new"
    );

    let mut run = Run::new(&s, vec![seen("app", DIGEST_B, TargetCheck::Missing)]);
    run.status = Some(&second.status);
    run.now = t(900);
    let third = run.plan();
    let ready = cond(&third.status.conditions, READY).unwrap();
    assert_eq!(ready.last_transition_time, rfc3339(t(900)));
}

#[test]
fn suspended_objects_build_nothing_and_keep_their_status() {
    let mut s = spec(&["app"]);
    let ready = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    s.suspend = true;
    let mut run = Run::new(&s, vec![]);
    run.status = Some(&ready.status);
    run.generation = 2;
    let p = run.plan();
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.requeue_after, None);
    assert_eq!(top(&p, READY), is(ConditionStatus::True, Reason::Verified));
    assert_eq!(p.status.images, ready.status.images);
}

#[test]
fn jobs_of_images_removed_from_the_spec_are_deleted() {
    let s = spec(&["app"]);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    run.jobs = vec![job("soci-build-gone", "old", JobState::Running, None)];
    assert_eq!(run.plan().delete, vec!["soci-build-gone".to_string()]);
}

#[test]
fn early_status_marks_a_new_generation_unknown_once() {
    let early = early_status(Some(1), None, t(0)).unwrap();
    assert_eq!(
        cond(&early.conditions, READY).unwrap().status,
        ConditionStatus::Unknown
    );
    assert_eq!(
        cond(&early.conditions, RECONCILING).unwrap().status,
        ConditionStatus::True
    );
    assert_eq!(early.observed_generation, Some(1));
    assert_eq!(early_status(Some(1), Some(&early), t(1)), None);
    assert!(early_status(Some(2), Some(&early), t(1)).is_some());
}

#[test]
fn a_plan_with_an_absurd_interval_neither_panics_nor_waits_for_ever() {
    // An object that bypassed the CRD: the reconcile stalls it (check_spec) before planning,
    // and the plan itself stays total.
    for interval in [
        "99999999999999999999h",
        "5000000000000000h",
        "1ms",
        "garbage",
    ] {
        let mut s = spec(&["app"]);
        s.interval = Some(interval.into());
        let p = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
        let after = p.requeue_after.unwrap();
        assert!(
            after >= MIN_INTERVAL && after <= jittered(DEFAULT_INTERVAL, UID),
            "{interval}: {after:?}"
        );
    }
    let mut s = spec(&["app"]);
    s.interval = Some("720h".into());
    let p = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    assert_eq!(p.requeue_after, Some(jittered(MAX_INTERVAL, UID)));
}

/// Every way a spec can be out of the CRD's bounds, and a word the message must hold.
fn invalid_specs() -> Vec<(SociIndexSpec, &'static str)> {
    use crate::api::{Credentials, JobSettings, SecretRef, limits};
    use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let base = spec(&["app"]);
    let with = |change: &dyn Fn(&mut SociIndexSpec)| {
        let mut s = base.clone();
        change(&mut s);
        s
    };
    let names: Vec<String> = (0..=limits::MAX_IMAGES).map(|i| format!("i{i}")).collect();
    let many: Vec<&str> = names.iter().map(String::as_str).collect();
    let job = |j: JobSettings| with(&|s| s.job = Some(j.clone()));
    let credentials = |c: Credentials| with(&|s| s.credentials = Some(c.clone()));
    vec![
        (
            with(&|s| s.interval = Some("99999999999999999999h".into())),
            "spec.interval",
        ),
        (
            with(&|s| s.interval = Some("5000000000000000h".into())),
            "outside 10s..720h",
        ),
        (
            with(&|s| s.interval = Some("5s".into())),
            "outside 10s..720h",
        ),
        (
            with(&|s| s.interval = Some("1d".into())),
            "is not a duration",
        ),
        (with(&|s| s.images.clear()), "spec.images has 0 entries"),
        (spec(&many), "spec.images has 257 entries"),
        (spec(&["app", "app"]), "two entries named \"app\""),
        (spec(&["Upper_case"]), "not a DNS label"),
        (spec(&["a".repeat(64).as_str()]), "not a DNS label"),
        (
            with(&|s| s.images[0].image = "r/".repeat(300)),
            "spec.images[app].image",
        ),
        (
            with(&|s| s.platforms = vec!["linux/amd64".into(); 33]),
            "spec.platforms has 33",
        ),
        (
            with(&|s| s.platforms = vec!["x".repeat(65)]),
            "spec.platforms entry",
        ),
        (
            with(&|s| s.platforms = vec![String::new()]),
            "spec.platforms entry",
        ),
        (
            with(&|s| s.min_layer_size = Some(-1)),
            "spec.minLayerSize is -1",
        ),
        (
            with(&|s| s.min_layer_size = Some(i64::MAX)),
            "spec.minLayerSize",
        ),
        (with(&|s| s.span_size = Some(0)), "spec.spanSize is 0"),
        (with(&|s| s.span_size = Some(i64::MAX)), "spec.spanSize"),
        (
            with(&|s| {
                s.target = Some(TargetSpec {
                    tag_suffix: Some("-".repeat(65)),
                    ..Default::default()
                })
            }),
            "spec.target.tagSuffix",
        ),
        (
            with(&|s| {
                s.target = Some(TargetSpec {
                    tag_template: Some("{tag}".repeat(30)),
                    ..Default::default()
                })
            }),
            "spec.target.tagTemplate",
        ),
        (
            with(&|s| {
                s.target = Some(TargetSpec {
                    tag_suffix: Some("-x".into()),
                    in_place: Some(true),
                    ..Default::default()
                })
            }),
            "at most one of",
        ),
        (
            credentials(Credentials {
                secret_refs: vec![SecretRef { name: "s".into() }; 9],
                service_account_name: None,
            }),
            "secretRefs has 9",
        ),
        (
            credentials(Credentials {
                secret_refs: vec![SecretRef {
                    name: "../etc".into(),
                }],
                service_account_name: None,
            }),
            "not a DNS subdomain",
        ),
        (
            credentials(Credentials {
                secret_refs: vec![],
                service_account_name: Some("a".repeat(254)),
            }),
            "serviceAccountName",
        ),
        (
            job(JobSettings {
                node_selector: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..Default::default()
            }),
            "nodeSelector has 33",
        ),
        (
            job(JobSettings {
                node_selector: [("k".into(), "v".repeat(64))].into(),
                ..Default::default()
            }),
            "nodeSelector value",
        ),
        (
            job(JobSettings {
                tolerations: vec![Toleration::default(); 33],
                ..Default::default()
            }),
            "tolerations has 33",
        ),
        (
            job(JobSettings {
                tolerations: vec![Toleration {
                    key: Some("k".repeat(318)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            "tolerations key",
        ),
        (
            job(JobSettings {
                resources: Some(ResourceRequirements {
                    limits: Some(
                        (0..17)
                            .map(|i| (format!("example.com/r{i}"), Quantity("1".into())))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "resources.limits has 17",
        ),
        (
            job(JobSettings {
                active_deadline_seconds: Some(i64::MAX),
                ..Default::default()
            }),
            "activeDeadlineSeconds",
        ),
        (
            job(JobSettings {
                backoff_limit: Some(-1),
                ..Default::default()
            }),
            "backoffLimit is -1",
        ),
    ]
}

#[test]
fn a_spec_out_of_the_crd_bounds_is_named_for_an_invalid_spec_stall() {
    assert_eq!(check_spec(&spec(&["app"])), Ok(()));
    for (bad, word) in invalid_specs() {
        let why = check_spec(&bad).expect_err(word);
        assert!(why.contains(word), "{word:?} not in {why:?}");
        assert!(why.len() < 300, "{why}");
    }
    // The largest spec the CRD admits passes.
    use crate::api::limits;
    let names: Vec<String> = (0..limits::MAX_IMAGES).map(|i| format!("i{i}")).collect();
    let mut largest = spec(&names.iter().map(String::as_str).collect::<Vec<_>>());
    largest.platforms = vec!["p".repeat(limits::MAX_PLATFORM); limits::MAX_PLATFORMS];
    largest.interval = Some("720h".into());
    largest.span_size = Some(limits::MAX_SPAN_SIZE);
    largest.min_layer_size = Some(limits::MAX_MIN_LAYER_SIZE);
    assert_eq!(check_spec(&largest), Ok(()));
}

#[test]
fn an_invalid_spec_stalls_and_keeps_what_was_pushed() {
    let s = spec(&["app"]);
    let ready = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    let why = "spec.interval \"5s\" is outside 10s..720h (30 days)";
    let stalled = boundary_object_status(
        Boundary::Stalled,
        Some(&ready.status),
        Some(2),
        Reason::InvalidSpec,
        why,
        t(60),
    );
    for kind in [READY, STALLED] {
        let c = cond(&stalled.conditions, kind).unwrap();
        assert_eq!(c.reason, Reason::InvalidSpec);
        assert_eq!(c.message, why);
        assert_eq!(c.observed_generation, Some(2));
    }
    assert_eq!(
        cond(&stalled.conditions, READY).unwrap().status,
        ConditionStatus::False
    );
    assert_eq!(
        cond(&stalled.conditions, STALLED).unwrap().status,
        ConditionStatus::True
    );
    assert_eq!(stalled.observed_generation, Some(2));
    assert_eq!(
        stalled.images, ready.status.images,
        "cleanup needs what was pushed"
    );
    // The next reconcile builds the same status: nothing to write, no Event again.
    let again = boundary_object_status(
        Boundary::Stalled,
        Some(&stalled),
        Some(2),
        Reason::InvalidSpec,
        why,
        t(120),
    );
    assert_eq!(again, stalled);
    // A fixed spec (a new generation) plans as usual again.
    let mut fixed = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    fixed.generation = 3;
    fixed.status = Some(&stalled);
    let p = fixed.plan();
    assert_eq!(top(&p, READY), is(ConditionStatus::True, Reason::Verified));
    assert_eq!(top(&p, STALLED), None);
}

#[test]
fn the_plan_keeps_the_status_of_many_images_and_platforms_under_the_budget() {
    use crate::api::budget::{STATUS_BUDGET, fit};
    let names: Vec<String> = (0..256).map(|i| format!("image-{i:03}")).collect();
    let s = spec(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let platforms: Vec<PlatformStatus> = (0..32)
        .map(|i| PlatformStatus {
            platform: format!("linux/arch{i:02}"),
            soci_index_digest: Some(format!("sha256:{}", "i".repeat(64))),
            layers_indexed: 9,
            layers_too_small: 1,
            layers_unsupported: 0,
            bytes_indexed_percent: "97.5".into(),
        })
        .collect();
    let observations = names
        .iter()
        .map(|n| {
            seen(
                n,
                DIGEST_A,
                TargetCheck::Bound {
                    digest: format!("sha256:{}", "t".repeat(64)),
                    platforms: platforms.clone(),
                },
            )
        })
        .collect();
    let p = Run::new(&s, observations).plan();
    let size = serde_json::to_vec(&p.status).unwrap().len();
    assert!(size <= STATUS_BUDGET, "{size}");
    assert_eq!(p.status.ready_images, 256);
    let ready = cond(&p.status.conditions, READY).unwrap();
    assert!(
        ready.message.contains("status size budget"),
        "{}",
        ready.message
    );
    let mut refit = p.status.clone();
    fit(&mut refit, STATUS_BUDGET);
    assert_eq!(
        refit, p.status,
        "planned statuses compare equal between reconciles"
    );
}

#[test]
fn a_created_job_starting_to_run_changes_nothing_in_the_status() {
    // Otherwise every build costs an extra status write (and watch event).
    let s = spec(&["app"]);
    let created = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]).plan();
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&created.status);
    run.jobs = vec![job(
        &created.create[0].job_name,
        "app",
        JobState::Running,
        None,
    )];
    run.now = t(5);
    assert_eq!(run.plan().status, created.status);
}

fn seen_on(name: &str, registry: &str) -> ImageObservation {
    ImageObservation {
        name: name.into(),
        resolved: Ok(Resolved {
            source: format!("{registry}/{name}@{DIGEST_A}"),
            digest: DIGEST_A.into(),
            target: format!("{registry}/{name}:v1-soci"),
        }),
        target: Some(Ok(TargetCheck::Missing)),
    }
}

#[test]
fn job_caps_hold_builds_back_as_queued() {
    struct Case {
        what: &'static str,
        max_total: Option<usize>,
        max_per_registry: Option<usize>,
        active_total: usize,
        active: &'static [(&'static str, usize)],
        /// (image, registry) of each build due.
        due: &'static [(&'static str, &'static str)],
        created: &'static [&'static str],
    }
    const A: &str = "reg-a.example:5000";
    const B: &str = "reg-b.example";
    let cases = [
        Case {
            what: "no caps",
            max_total: None,
            max_per_registry: None,
            active_total: 50,
            active: &[(A, 50)],
            due: &[("x", A), ("y", A)],
            created: &["x", "y"],
        },
        Case {
            what: "global cap reached by other objects' Jobs",
            max_total: Some(2),
            max_per_registry: None,
            active_total: 2,
            active: &[(B, 2)],
            due: &[("x", A)],
            created: &[],
        },
        Case {
            what: "global cap leaves one slot: the first due image takes it",
            max_total: Some(3),
            max_per_registry: None,
            active_total: 2,
            active: &[(B, 2)],
            due: &[("x", A), ("y", B), ("z", A)],
            created: &["x"],
        },
        Case {
            what: "registry cap reached on one registry, free on another",
            max_total: Some(10),
            max_per_registry: Some(1),
            active_total: 1,
            active: &[(A, 1)],
            due: &[("x", A), ("y", B), ("z", B)],
            created: &["y"],
        },
        Case {
            what: "both caps with room",
            max_total: Some(4),
            max_per_registry: Some(2),
            active_total: 1,
            active: &[(A, 1)],
            due: &[("x", A), ("y", A), ("z", B)],
            created: &["x", "z"],
        },
        Case {
            what: "a cap of 0 lets nothing start",
            max_total: Some(0),
            max_per_registry: None,
            active_total: 0,
            active: &[],
            due: &[("x", A)],
            created: &[],
        },
    ];
    for case in cases {
        let names: Vec<&str> = case.due.iter().map(|(n, _)| *n).collect();
        let s = spec(&names);
        let mut run = Run::new(&s, case.due.iter().map(|(n, r)| seen_on(n, r)).collect());
        run.capacity = Capacity {
            max_total: case.max_total,
            max_per_registry: case.max_per_registry,
            active_total: case.active_total,
            active_per_registry: case
                .active
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            ..Default::default()
        };
        let p = run.plan();
        let created: Vec<&str> = p.create.iter().map(|r| r.image_name.as_str()).collect();
        assert_eq!(created, case.created, "{}", case.what);
        assert_eq!(
            p.queued,
            case.due.len() - case.created.len(),
            "{}",
            case.what
        );
        for (i, (name, _)) in case.due.iter().enumerate() {
            let expected = if case.created.contains(name) {
                Reason::Building
            } else {
                Reason::Queued
            };
            assert_eq!(
                lazy(&p, i),
                (ConditionStatus::Unknown, expected),
                "{}: image {name}",
                case.what
            );
        }
        if p.queued > 0 {
            // Waiting builds are looked at again soon, and the object is still progressing.
            assert!(p.requeue_after.unwrap() <= QUEUED_RECHECK, "{}", case.what);
            assert_eq!(
                top(&p, READY),
                is(ConditionStatus::Unknown, Reason::Progressing)
            );
            let message = &cond(&p.status.images[0].conditions, LAZY_LOAD_READY)
                .unwrap()
                .message;
            assert!(created_or_waiting(message), "{}: {message}", case.what);
        }
    }
}

fn created_or_waiting(message: &str) -> bool {
    message.contains("is building") || message.contains("waiting for a build slot")
}

#[test]
fn a_queued_build_starts_once_a_slot_is_free() {
    let s = spec(&["app"]);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.capacity = Capacity {
        max_total: Some(1),
        active_total: 1,
        ..Default::default()
    };
    let queued = run.plan();
    assert!(queued.create.is_empty());
    assert_eq!(lazy(&queued, 0), (ConditionStatus::Unknown, Reason::Queued));

    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&queued.status);
    run.now = t(20);
    run.capacity = Capacity {
        max_total: Some(1),
        active_total: 0,
        ..Default::default()
    };
    let started = run.plan();
    assert_eq!(started.create.len(), 1);
    assert_eq!(started.queued, 0);
    assert_eq!(
        lazy(&started, 0),
        (ConditionStatus::Unknown, Reason::Building)
    );
}

#[test]
fn the_default_interval_applies_only_without_a_spec_interval() {
    let mut s = spec(&["app"]);
    s.interval = None;
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    run.default_interval = Duration::from_secs(300);
    let p = run.plan();
    let after = p.requeue_after.unwrap();
    assert!(
        after >= Duration::from_secs(300) && after <= Duration::from_secs(330),
        "{after:?}"
    );
    s.interval = Some("10m".into());
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    run.default_interval = Duration::from_secs(300);
    let after = run.plan().requeue_after.unwrap();
    assert!(after >= Duration::from_secs(600), "{after:?}");
}

#[test]
fn an_in_place_tag_resolving_to_our_target_keeps_the_original_source_digest() {
    let s = spec(&["app"]);
    let first = Run::new(&s, vec![seen("app", DIGEST_A, bound())]).plan();
    assert_eq!(
        first.status.images[0].source_digest.as_deref(),
        Some(DIGEST_A)
    );
    // The tag now holds what we pushed (in place): the status still names what we built from.
    let mut run = Run::new(&s, vec![seen("app", "sha256:tttt", bound())]);
    run.status = Some(&first.status);
    let second = run.plan();
    assert_eq!(
        second.status.images[0].source_digest.as_deref(),
        Some(DIGEST_A)
    );
    // A genuinely new source digest is recorded as usual.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_B, bound())]);
    run.status = Some(&second.status);
    assert_eq!(
        run.plan().status.images[0].source_digest.as_deref(),
        Some(DIGEST_B)
    );
}

#[test]
fn a_build_running_for_another_object_is_waited_for_not_started_twice() {
    let s = spec(&["app"]);
    let settings = BuildSettings::from_spec(&s);
    let key = build_key(DIGEST_A, TARGET, &settings);
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.builds_elsewhere = [(key.clone(), "other-ns/soci-build-1234".to_string())].into();
    let p = run.plan();
    assert!(p.create.is_empty(), "{:?}", p.create);
    assert_eq!(lazy(&p, 0), (ConditionStatus::Unknown, Reason::Building));
    let message = &cond(&p.status.images[0].conditions, LAZY_LOAD_READY)
        .unwrap()
        .message;
    assert!(message.contains("other-ns/soci-build-1234"), "{message}");
    assert_eq!(p.requeue_after, Some(QUEUED_RECHECK));
    assert_eq!(p.queued, 0);

    // Another source digest, target or setting is another build: it starts here.
    for other in [
        build_key(DIGEST_B, TARGET, &settings),
        build_key(DIGEST_A, "127.0.0.1:5000/app:v1-other", &settings),
        build_key(
            DIGEST_A,
            TARGET,
            &BuildSettings {
                span_size: 1 << 20,
                ..settings.clone()
            },
        ),
    ] {
        assert_ne!(other, key);
        let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
        run.builds_elsewhere = [(other, "other-ns/soci-build-1234".to_string())].into();
        assert_eq!(run.plan().create.len(), 1);
    }

    // Once the other build has bound the target, this object is ready without a Job of its own.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, bound())]);
    run.builds_elsewhere = [(key, "other-ns/soci-build-1234".to_string())].into();
    let p = run.plan();
    assert!(p.create.is_empty());
    assert_eq!(top(&p, READY), is(ConditionStatus::True, Reason::Verified));
}
