//! What one tenant's objects may do to another's through the plan: the per-namespace Job cap
//! and targets named by SociIndexes in two namespaces.

use super::*;
use crate::api::{ImageStatus, SociIndex};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const REG: &str = "127.0.0.1:5000";
const D_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const D_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn object(
    namespace: &str,
    name: &str,
    uid: &str,
    created: i64,
    spec: serde_json::Value,
) -> SociIndex {
    let mut o = SociIndex::new(name, serde_json::from_value(spec).unwrap());
    o.metadata.namespace = Some(namespace.into());
    o.metadata.uid = Some(uid.into());
    o.metadata.creation_timestamp = Some(Time(t(created)));
    o.metadata.generation = Some(1);
    o
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn spec_of(image: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({"images": [{"name": "web", "image": image}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    spec
}

fn observed(target: &str, digest: &str) -> ImageObservation {
    ImageObservation {
        name: "web".into(),
        resolved: Ok(Resolved {
            source: format!("{REG}/app@{digest}"),
            digest: digest.into(),
            target: target.into(),
        }),
        target: Some(Ok(TargetCheck::Missing)),
    }
}

fn plan_for(object: &SociIndex, images: Vec<ImageObservation>, capacity: Capacity) -> Plan {
    plan(PlanInput {
        uid: object.metadata.uid.as_deref().unwrap(),
        generation: object.metadata.generation,
        spec: &object.spec,
        status: object.status.as_ref(),
        reconcile_request: None,
        images,
        jobs: vec![],
        now: t(1000),
        default_interval: DEFAULT_INTERVAL,
        capacity,
        builds_elsewhere: BTreeMap::new(),
    })
}

fn lazy(p: &Plan) -> &Condition {
    condition::find(&p.status.images[0].conditions, LAZY_LOAD_READY).unwrap()
}

/// The first SociIndex (ns-a, created at 0) builds `app:v1` into `app:v1-soci`.
fn first() -> SociIndex {
    object(
        "ns-a",
        "first",
        "uid-a",
        0,
        spec_of(&format!("{REG}/app:v1"), serde_json::json!({})),
    )
}

/// A later SociIndex in ns-b whose target is `app:v1-soci` too, however it names it.
fn second(image: &str, extra: serde_json::Value) -> SociIndex {
    object("ns-b", "second", "uid-b", 10, spec_of(image, extra))
}

/// The second object for `image`, its tag template landing on `v1-soci`.
fn second_into_v1_soci(image: &str) -> SociIndex {
    second(
        image,
        serde_json::json!({"target": {"tagTemplate": "v1-soci"}}),
    )
}

fn conflict_of(me: &SociIndex, others: &[&SociIndex], digest: &str) -> Option<Failure> {
    let claims = claims_outside(
        others.iter().copied(),
        me.metadata.namespace.as_deref().unwrap(),
    );
    let mut images = vec![observed(&format!("{REG}/app:v1-soci"), digest)];
    apply_target_conflicts(me, &mut images, &claims);
    images.remove(0).resolved.err()
}

#[test]
fn a_target_another_namespace_named_first_with_another_source_is_a_conflict() {
    let first = first();
    // Another source, its template landing on the same tag.
    let other_source = second_into_v1_soci(&format!("{REG}/app:v2"));
    let f = conflict_of(&other_source, &[&first], D_B).expect("a conflict");
    assert_eq!(
        (f.class, f.reason),
        (FailureClass::Permanent, Reason::TargetConflict)
    );
    assert!(f.message.contains("ns-a/first"), "{}", f.message);
    assert!(
        f.message.contains(&format!("{REG}/app:v1-soci")),
        "{}",
        f.message
    );
    // The same source with other settings writes other bytes: a conflict as well.
    let other_settings = second(
        &format!("{REG}/app:v1"),
        serde_json::json!({"spanSize": 1048576}),
    );
    let f = conflict_of(&other_settings, &[&first], D_A).expect("a conflict");
    assert!(f.message.contains("other settings"), "{}", f.message);
    // The first one keeps its target: the later object is the one that yields.
    assert!(conflict_of(&first, &[&other_source, &other_settings], D_A).is_none());
}

#[test]
fn objects_that_build_the_same_thing_share_a_target() {
    let first = first();
    let same = second(&format!("{REG}/app:v1"), serde_json::json!({}));
    assert!(conflict_of(&same, &[&first], D_A).is_none());
    // Pinned by the digest the first one's status records for that target: the same build.
    let mut recorded = first.clone();
    recorded.status = Some(SociIndexStatus {
        images: vec![ImageStatus {
            name: "web".into(),
            target: Some(format!("{REG}/app:v1-soci")),
            source_digest: Some(D_A.into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let pinned = second_into_v1_soci(&format!("{REG}/app@{D_A}"));
    assert!(conflict_of(&pinned, &[&recorded], D_A).is_none());
    // Without that record it is another source (a tag may move): a conflict.
    assert!(conflict_of(&pinned, &[&first], D_A).is_some());
}

#[test]
fn objects_of_one_namespace_are_no_conflict_for_each_other() {
    let first = first();
    let mut neighbour = second_into_v1_soci(&format!("{REG}/app:v2"));
    neighbour.metadata.namespace = Some("ns-a".into());
    assert!(conflict_of(&neighbour, &[&first], D_B).is_none());
}

#[test]
fn a_conflicting_image_stalls_without_a_job_and_says_with_whom() {
    let first = first();
    let later = second_into_v1_soci(&format!("{REG}/app:v2"));
    let claims = claims_outside([&first], "ns-b");
    let mut images = vec![observed(&format!("{REG}/app:v1-soci"), D_B)];
    apply_target_conflicts(&later, &mut images, &claims);
    let p = plan_for(&later, images, Capacity::default());
    assert!(p.create.is_empty(), "{:?}", p.create);
    let l = lazy(&p);
    assert_eq!(
        (l.status, Reason::parse(&l.reason).unwrap()),
        (ConditionStatus::False, Reason::TargetConflict)
    );
    let stalled = condition::find(&p.status.conditions, STALLED).expect("Stalled");
    assert_eq!(stalled.reason, Reason::TargetConflict);
    assert!(
        stalled.message.contains("ns-a/first"),
        "{}",
        stalled.message
    );
    // Looked at again after the interval (the other may let the target go), not in a loop.
    assert!(p.requeue_after.unwrap() >= DEFAULT_INTERVAL);
}

#[test]
fn one_namespace_cannot_take_every_job_slot() {
    let flooding = first();
    let cap = |in_namespace: usize| Capacity {
        max_total: Some(4),
        max_per_namespace: Some(2),
        active_total: 2,
        active_in_namespace: in_namespace,
        ..Default::default()
    };
    // Its namespace runs 2 of 4: its next build waits although slots are free elsewhere.
    let p = plan_for(
        &flooding,
        vec![observed(&format!("{REG}/app:v1-soci"), D_A)],
        cap(2),
    );
    assert!(p.create.is_empty());
    assert_eq!(p.queued, 1);
    let l = lazy(&p);
    assert_eq!(
        (l.status, Reason::parse(&l.reason).unwrap()),
        (ConditionStatus::Unknown, Reason::Queued)
    );
    assert!(
        l.message.contains("--max-jobs-per-namespace"),
        "{}",
        l.message
    );
    // Another namespace gets one of the free slots.
    let other = second(&format!("{REG}/app:v1"), serde_json::json!({}));
    let p = plan_for(
        &other,
        vec![observed(&format!("{REG}/app:v1-soci"), D_A)],
        cap(0),
    );
    assert_eq!(p.create.len(), 1);
    // Several images of one object count against the cap one by one.
    let mut c = cap(1);
    assert!(c.take("r").is_ok());
    assert!(c.take("r").unwrap_err().contains("2 of 2"));
    // 0 (no cap) is None.
    let mut unlimited = Capacity {
        active_in_namespace: 1000,
        ..Default::default()
    };
    assert!(unlimited.take("r").is_ok());
}
