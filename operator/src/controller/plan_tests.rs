//! The plan, transition by transition, without a cluster.

use super::*;
use crate::api::{ImageSpec, SociIndexSpec};

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
        target: None,
        platforms: vec![],
        min_layer_size: None,
        span_size: None,
        index_version: None,
        credentials: None,
        interval: Some("10m".into()),
        suspend: false,
        deletion_policy: None,
        job: None,
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

fn top(p: &Plan, t: &str) -> Option<(ConditionStatus, String)> {
    cond(&p.status.conditions, t).map(|c| (c.status, c.reason.clone()))
}

fn lazy(p: &Plan, image: usize) -> (ConditionStatus, String) {
    let c = cond(&p.status.images[image].conditions, LAZY_LOAD_READY).expect("LazyLoadReady");
    (c.status, c.reason.clone())
}

fn is(status: ConditionStatus, reason: &str) -> Option<(ConditionStatus, String)> {
    Some((status, reason.to_string()))
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
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::Unknown, reason::BUILDING.into())
    );
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, reason::PROGRESSING)
    );
    assert_eq!(
        top(&p, RECONCILING),
        is(ConditionStatus::True, reason::PROGRESSING)
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
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::Unknown, reason::BUILDING.into())
    );
    assert_eq!(
        top(&p, RECONCILING),
        is(ConditionStatus::True, reason::PROGRESSING)
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
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::True, reason::VERIFIED.into())
    );
    assert_eq!(top(&p, READY), is(ConditionStatus::True, reason::VERIFIED));
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
    assert_eq!(top(&p, READY), is(ConditionStatus::True, reason::VERIFIED));
    assert_eq!(p.status.images[0].job, None);
}

#[test]
fn permanent_resolve_failures_stall_with_their_reason_and_build_nothing() {
    for why in [
        reason::INVALID_REFERENCE,
        reason::IMAGE_NOT_FOUND,
        reason::UNAUTHORIZED,
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
        assert_eq!(lazy(&p, 0), (ConditionStatus::False, why.to_string()));
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
        resolved: Err(Failure::transient(reason::REGISTRY_UNAVAILABLE, "503")),
        target: None,
    };
    let p1 = Run::new(&s, vec![observation.clone()]).plan();
    assert_eq!(
        lazy(&p1, 0),
        (
            ConditionStatus::Unknown,
            reason::REGISTRY_UNAVAILABLE.into()
        )
    );
    assert_eq!(top(&p1, STALLED), None);
    assert_eq!(
        top(&p1, RECONCILING),
        is(ConditionStatus::True, reason::PROGRESSING)
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
                reason::REGISTRY_UNAVAILABLE,
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
        is(ConditionStatus::Unknown, reason::PROGRESSING)
    );
}

#[test]
fn a_permanent_build_failure_stalls_until_the_spec_changes_or_a_retry_is_requested() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let failed = JobState::Failed(Failure::permanent(
        reason::NO_INDEXABLE_LAYERS,
        "all layers small",
    ));
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.jobs = vec![job(&name, "app", failed, Some(t(-1)))];
    let stalled = run.plan();
    assert!(stalled.create.is_empty() && stalled.delete.is_empty());
    assert_eq!(
        lazy(&stalled, 0),
        (ConditionStatus::False, reason::NO_INDEXABLE_LAYERS.into())
    );
    assert_eq!(
        top(&stalled, STALLED),
        is(ConditionStatus::True, reason::NO_INDEXABLE_LAYERS)
    );

    // The Job is gone (TTL), same generation: still stalled, nothing rebuilt.
    let mut run = Run::new(&s, vec![seen("app", DIGEST_A, TargetCheck::Missing)]);
    run.status = Some(&stalled.status);
    let p = run.plan();
    assert!(p.create.is_empty(), "no rebuild of a permanent failure");
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, reason::NO_INDEXABLE_LAYERS)
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
        is(ConditionStatus::True, reason::DEADLINE_EXCEEDED)
    );
}

#[test]
fn a_transient_build_failure_is_retried_after_a_backoff() {
    let s = spec(&["app"]);
    let name = name_for(&s, "app", DIGEST_A);
    let failed = JobState::Failed(Failure::transient(reason::BUILD_FAILED, "registry 503"));
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
        (ConditionStatus::Unknown, reason::BUILD_FAILED.into())
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
        (ConditionStatus::Unknown, reason::TARGET_DRIFTED.into())
    );
    assert_eq!(
        p.status.images[0].deploy, None,
        "the old target is not this source's"
    );
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, reason::PROGRESSING)
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
        (ConditionStatus::Unknown, reason::TARGET_DRIFTED.into())
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
        (ConditionStatus::False, reason::VERIFICATION_FAILED.into())
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
        (ConditionStatus::False, reason::VERIFICATION_FAILED.into())
    );
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, reason::VERIFICATION_FAILED)
    );
}

#[test]
fn ready_is_unknown_while_any_image_progresses_and_stalled_only_when_nothing_does() {
    let s = spec(&["a", "b", "c"]);
    let images = vec![
        seen("a", DIGEST_A, bound()),
        ImageObservation {
            name: "b".into(),
            resolved: Err(Failure::permanent(reason::IMAGE_NOT_FOUND, "gone")),
            target: None,
        },
        seen("c", DIGEST_A, TargetCheck::Missing),
    ];
    let p = Run::new(&s, images.clone()).plan();
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::Unknown, reason::PROGRESSING)
    );
    assert_eq!(top(&p, STALLED), None);
    assert_eq!((p.status.ready_images, p.status.desired_images), (1, 3));
    assert_eq!(p.create.len(), 1);

    let mut settled = images;
    settled[2] = seen("c", DIGEST_A, bound());
    let p = Run::new(&s, settled).plan();
    assert_eq!(
        top(&p, READY),
        is(ConditionStatus::False, reason::IMAGE_NOT_FOUND)
    );
    assert_eq!(
        top(&p, STALLED),
        is(ConditionStatus::True, reason::IMAGE_NOT_FOUND)
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
    assert_eq!(top(&p, READY), is(ConditionStatus::True, reason::VERIFIED));
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
fn job_names_are_deterministic_short_and_depend_on_every_input() {
    let s = spec(&["app"]);
    let settings = BuildSettings::from_spec(&s);
    let a = job_name(UID, "app", DIGEST_A, TARGET, &settings);
    assert_eq!(a, job_name(UID, "app", DIGEST_A, TARGET, &settings));
    assert!(a.len() <= 63 && a.starts_with("soci-build-"));
    let mut other = settings.clone();
    other.span_size += 1;
    for b in [
        job_name("other", "app", DIGEST_A, TARGET, &settings),
        job_name(UID, "web", DIGEST_A, TARGET, &settings),
        job_name(UID, "app", DIGEST_B, TARGET, &settings),
        job_name(UID, "app", DIGEST_A, "x/y:z", &settings),
        job_name(UID, "app", DIGEST_A, TARGET, &other),
    ] {
        assert_ne!(a, b);
    }
}

#[test]
fn target_tags_follow_the_spec_and_never_take_the_source_tag_unasked() {
    let src = RegistryRef::parse("127.0.0.1:5000/app:v1").unwrap();
    let tag =
        |t: Option<TargetSpec>| target_reference(&src, t.as_ref(), "web").map(|r| r.to_string());
    assert_eq!(tag(None).unwrap(), "127.0.0.1:5000/app:v1-soci");
    let suffix = TargetSpec {
        tag_suffix: Some(".lazy".into()),
        ..Default::default()
    };
    assert_eq!(tag(Some(suffix)).unwrap(), "127.0.0.1:5000/app:v1.lazy");
    let template = TargetSpec {
        tag_template: Some("{name}-{tag}-x".into()),
        ..Default::default()
    };
    assert_eq!(tag(Some(template)).unwrap(), "127.0.0.1:5000/app:web-v1-x");
    let in_place = TargetSpec {
        in_place: Some(true),
        ..Default::default()
    };
    assert_eq!(
        tag(Some(in_place.clone())).unwrap(),
        "127.0.0.1:5000/app:v1"
    );
    let same = TargetSpec {
        tag_template: Some("{tag}".into()),
        ..Default::default()
    };
    assert!(tag(Some(same)).unwrap_err().contains("inPlace"));
    let bad = TargetSpec {
        tag_template: Some("-{tag}".into()),
        ..Default::default()
    };
    assert!(tag(Some(bad)).is_err());

    let digest_only =
        RegistryRef::parse(&format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64))).unwrap();
    let r = target_reference(&digest_only, None, "web").unwrap();
    assert_eq!(
        r.tag.as_deref(),
        Some(format!("sha256-{}-soci", "a".repeat(64)).as_str())
    );
    assert!(target_reference(&digest_only, Some(&in_place), "web").is_err());
}

#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("5d"), None);
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
                reason::BUILDING
            } else {
                reason::QUEUED
            };
            assert_eq!(
                lazy(&p, i),
                (ConditionStatus::Unknown, expected.to_string()),
                "{}: image {name}",
                case.what
            );
        }
        if p.queued > 0 {
            // Waiting builds are looked at again soon, and the object is still progressing.
            assert!(p.requeue_after.unwrap() <= QUEUED_RECHECK, "{}", case.what);
            assert_eq!(
                top(&p, READY),
                is(ConditionStatus::Unknown, reason::PROGRESSING)
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
    assert_eq!(
        lazy(&queued, 0),
        (ConditionStatus::Unknown, reason::QUEUED.into())
    );

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
        (ConditionStatus::Unknown, reason::BUILDING.into())
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
fn registry_hosts_come_from_the_source_reference() {
    assert_eq!(
        registry_host("127.0.0.1:5000/app@sha256:aa"),
        "127.0.0.1:5000"
    );
    assert_eq!(registry_host("ghcr.io/org/app:v1"), "ghcr.io");
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
    assert_eq!(
        lazy(&p, 0),
        (ConditionStatus::Unknown, reason::BUILDING.into())
    );
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
    assert_eq!(top(&p, READY), is(ConditionStatus::True, reason::VERIFIED));
}
