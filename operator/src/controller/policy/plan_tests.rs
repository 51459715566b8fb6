use super::*;
use crate::api::TargetSpec;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn now() -> Timestamp {
    "2026-12-02T12:00:00Z".parse().unwrap()
}

fn candidate(reference: &str, digest: Option<&str>, seen_hour: i8) -> Candidate {
    Candidate {
        reference: reference.into(),
        digest: digest.map(str::to_string),
        source: WORKLOADS_SOURCE.into(),
        pull_secrets: BTreeSet::new(),
        seen: Some(format!("2026-12-02T{seen_hour:02}:00:00Z").parse().unwrap()),
    }
}

fn settings(include: &[&str], exclude: &[&str], max: Option<i32>) -> Settings {
    let spec = PolicySpec {
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        max_images: max,
        ..Default::default()
    };
    Settings::from_spec(&spec).unwrap()
}

fn owner() -> Owner {
    Owner {
        kind: "SociIndexPolicy",
        name: "team".into(),
        uid: "uid-team".into(),
        child_namespace: "apps".into(),
    }
}

#[test]
fn include_and_exclude_globs_match_references_and_exclude_wins() {
    let s = settings(&["127.0.0.1:5000/team/**"], &["**/*:debug*"], None);
    for (reference, admitted) in [
        ("127.0.0.1:5000/team/app:v1", true),
        ("127.0.0.1:5000/team/deep/app:v1", true),
        (&format!("127.0.0.1:5000/team/app:v1@{D1}"), true),
        ("127.0.0.1:5000/team/app:debug-1", false),
        ("127.0.0.1:5000/other/app:v1", false),
        ("docker.io/library/nginx:latest", false),
    ] {
        assert_eq!(s.admits(reference), admitted, "{reference}");
    }
    // `*` stays inside a path segment.
    let s = settings(&["127.0.0.1:5000/*:v1"], &[], None);
    assert!(s.admits("127.0.0.1:5000/app:v1"));
    assert!(!s.admits("127.0.0.1:5000/team/app:v1"));
    // No include: everything not excluded.
    assert!(settings(&[], &[], None).admits("docker.io/library/nginx:latest"));
}

#[test]
fn bad_patterns_and_settings_are_refused_with_a_message() {
    for (spec, needle) in [
        (
            PolicySpec {
                include: vec!["a[".into()],
                ..Default::default()
            },
            "include pattern",
        ),
        (
            PolicySpec {
                max_images: Some(0),
                ..Default::default()
            },
            "maxImages",
        ),
        (
            PolicySpec {
                retention: Some("721h".into()),
                ..Default::default()
            },
            "retention",
        ),
        (
            PolicySpec {
                interval: Some("1s".into()),
                ..Default::default()
            },
            "interval",
        ),
        (
            PolicySpec {
                exclude: vec!["x".into(); 33],
                ..Default::default()
            },
            "at most 32",
        ),
    ] {
        let err = Settings::from_spec(&spec).err().expect(needle);
        assert!(err.contains(needle), "{err}");
    }
    let s = Settings::from_spec(&PolicySpec::default()).unwrap();
    assert_eq!(s.max_images, 100);
    assert_eq!(s.retention, Duration::from_secs(24 * 3600));
    assert_eq!(s.interval, Duration::from_secs(600));
}

#[test]
fn selection_merges_per_reference_keeps_the_newest_digest_and_reports_the_cut() {
    let mut older = candidate("127.0.0.1:5000/a:v1", Some(D1), 9);
    older.pull_secrets.insert("one".into());
    let mut newer = candidate("127.0.0.1:5000/a:v1", Some(D2), 10);
    newer.pull_secrets.insert("two".into());
    let unresolved = candidate("127.0.0.1:5000/a:v1", None, 11);
    let candidates = vec![
        candidate("127.0.0.1:5000/c:v1", None, 1),
        newer,
        unresolved,
        older,
        candidate("127.0.0.1:5000/b:v1", None, 1),
    ];
    let selection = select(candidates, &settings(&[], &[], Some(2)));
    let refs: Vec<&str> = selection
        .images
        .iter()
        .map(|c| c.reference.as_str())
        .collect();
    assert_eq!(refs, ["127.0.0.1:5000/a:v1", "127.0.0.1:5000/b:v1"]);
    assert_eq!(selection.images[0].digest.as_deref(), Some(D2));
    assert_eq!(selection.images[0].pull_secrets.len(), 2);
    assert_eq!(selection.cut, ["127.0.0.1:5000/c:v1"]);
    assert_eq!(selection.selected(), 3);
}

#[test]
fn child_names_are_deterministic_valid_and_differ_per_policy_and_reference() {
    let a = child_name(&owner(), "127.0.0.1:5000/a:v1");
    assert_eq!(a, child_name(&owner(), "127.0.0.1:5000/a:v1"));
    assert!(
        a.starts_with("team-") && a.len() == "team-".len() + 10,
        "{a}"
    );
    assert_ne!(a, child_name(&owner(), "127.0.0.1:5000/a:v2"));
    let cluster = Owner {
        kind: "ClusterSociIndexPolicy",
        ..owner()
    };
    assert_ne!(a, child_name(&cluster, "127.0.0.1:5000/a:v1"));
    let long = Owner {
        name: format!("{}-x", "p".repeat(39)),
        ..owner()
    };
    let name = child_name(&long, "r");
    assert!(name.len() <= 51 && !name.contains("--"), "{name}");
    assert_eq!(image_name("127.0.0.1:5000/team/My_App:v1"), "my-app");
    assert_eq!(
        image_name(&format!("docker.io/library/nginx@{D1}")),
        "nginx"
    );
    assert_eq!(image_name("r/___:v1"), "image");
}

#[test]
fn the_child_spec_is_the_template_with_the_image_pinned_and_the_pull_secrets() {
    let template = SociIndexTemplate {
        target: Some(TargetSpec {
            tag_suffix: Some("-lazy".into()),
            ..Default::default()
        }),
        credentials: Some(Credentials {
            secret_refs: vec![SecretRef {
                name: "team-pull".into(),
            }],
            ..Default::default()
        }),
        interval: Some("1h".into()),
        ..Default::default()
    };
    let mut image = candidate("127.0.0.1:5000/team/app:v1", Some(D1), 1);
    image.pull_secrets.insert("pod-pull".into());
    let spec = child_spec(&template, &image);
    assert_eq!(
        spec.images[0].image,
        format!("127.0.0.1:5000/team/app:v1@{D1}")
    );
    assert_eq!(spec.images[0].name, "app");
    assert_eq!(spec.target, template.target);
    assert_eq!(spec.interval.as_deref(), Some("1h"));
    let secrets: Vec<&str> = spec
        .credentials
        .as_ref()
        .unwrap()
        .secret_refs
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(secrets, ["pod-pull", "team-pull"]);
    // Unresolved, or a reference that is a digest already: as it is.
    assert_eq!(
        child_spec(&template, &candidate("r/a:v1", None, 1)).images[0].image,
        "r/a:v1"
    );
    let digest_only = format!("r/a@{D1}");
    assert_eq!(
        child_spec(&template, &candidate(&digest_only, Some(D1), 1)).images[0].image,
        digest_only
    );
}

fn existing(reference: &str, unused_since: Option<&str>, ready: bool) -> ExistingChild {
    let image = candidate(reference, None, 1);
    ExistingChild {
        name: child_name(&owner(), reference),
        ours: true,
        spec: child_spec(&SociIndexTemplate::default(), &image),
        reference: Some(reference.into()),
        source: Some(WORKLOADS_SOURCE.into()),
        unused_since: unused_since.map(|t| t.parse().unwrap()),
        ready,
    }
}

fn selection_of(references: &[&str]) -> Selection {
    Selection {
        images: references.iter().map(|r| candidate(r, None, 1)).collect(),
        cut: Vec::new(),
    }
}

#[test]
fn children_are_created_updated_retained_and_deleted_after_the_retention() {
    let retention = Duration::from_secs(3600);
    let children = vec![
        existing("r/kept:v1", None, true),
        existing("r/back:v1", Some("2026-12-02T11:00:00Z"), true),
        existing("r/gone:v1", None, true),
        existing("r/waiting:v1", Some("2026-12-02T11:30:00Z"), true),
        existing("r/expired:v1", Some("2026-12-02T10:59:59Z"), true),
    ];
    let selection = selection_of(&["r/kept:v1", "r/back:v1", "r/new:v1"]);
    let plan = plan_children(
        &owner(),
        &SociIndexTemplate::default(),
        &selection,
        &children,
        &BTreeSet::new(),
        retention,
        now(),
    );
    let names =
        |refs: &[&str]| -> Vec<String> { refs.iter().map(|r| child_name(&owner(), r)).collect() };
    assert_eq!(
        plan.apply
            .iter()
            .map(|w| w.name.clone())
            .collect::<Vec<_>>(),
        names(&["r/new:v1"])
    );
    assert_eq!(plan.mark_used, names(&["r/back:v1"]));
    assert_eq!(plan.mark_unused, names(&["r/gone:v1"]));
    assert_eq!(plan.delete, names(&["r/expired:v1"]));
    // The waiting child expires in 30 minutes, before the new unused one's hour.
    assert_eq!(plan.next_expiry, Some(Duration::from_secs(1800)));
}

#[test]
fn a_changed_template_reapplies_and_a_foreign_object_is_a_conflict() {
    let mut child = existing("r/a:v1", None, true);
    child.spec.interval = Some("5m".into());
    let mut foreign = existing("r/b:v1", None, true);
    foreign.ours = false;
    let plan = plan_children(
        &owner(),
        &SociIndexTemplate::default(),
        &selection_of(&["r/a:v1", "r/b:v1"]),
        &[child, foreign.clone()],
        &BTreeSet::new(),
        Duration::from_secs(60),
        now(),
    );
    assert_eq!(plan.apply.len(), 1);
    assert_eq!(plan.apply[0].spec.interval, None);
    assert_eq!(plan.conflicts, [foreign.name.clone()]);
    // A foreign object is never marked or deleted.
    let plan = plan_children(
        &owner(),
        &SociIndexTemplate::default(),
        &selection_of(&[]),
        &[foreign],
        &BTreeSet::new(),
        Duration::ZERO,
        now(),
    );
    assert_eq!(plan, ChildrenPlan::default());
}

#[test]
fn a_failing_source_keeps_its_children_and_zero_retention_deletes_at_once() {
    let mut from_repo = existing("r/repo:v1", None, true);
    from_repo.source = Some("r/repo".into());
    let gone = existing("r/gone:v1", None, true);
    let failing = BTreeSet::from(["r/repo".to_string()]);
    let plan = plan_children(
        &owner(),
        &SociIndexTemplate::default(),
        &selection_of(&[]),
        &[from_repo, gone.clone()],
        &failing,
        Duration::ZERO,
        now(),
    );
    assert_eq!(plan.delete, [gone.name]);
    assert!(plan.mark_unused.is_empty());
}

#[test]
fn the_status_is_ready_only_when_every_selected_image_has_a_ready_child() {
    let children = vec![
        existing("r/a:v1", None, true),
        existing("r/b:v1", None, false),
    ];
    let selection = selection_of(&["r/a:v1", "r/b:v1"]);
    let plan = ChildrenPlan::default();
    let status = |children: &[ExistingChild], sources: Vec<SourceStatus>| {
        policy_status(
            &owner(),
            None,
            Some(3),
            &selection,
            children,
            &plan,
            sources,
            None,
            now(),
        )
    };
    let s = status(&children, Vec::new());
    let ready = condition::find(&s.conditions, READY).unwrap();
    assert_eq!(ready.status, ConditionStatus::False);
    assert_eq!(ready.reason, Reason::Progressing);
    assert!(condition::find(&s.conditions, RECONCILING).is_some());
    assert_eq!((s.children, s.ready_children, s.selected_images), (2, 1, 2));
    assert_eq!(s.summary.as_deref(), Some("1/2"));

    let all_ready = vec![
        existing("r/a:v1", None, true),
        existing("r/b:v1", None, true),
    ];
    let s = status(&all_ready, Vec::new());
    let ready = condition::find(&s.conditions, READY).unwrap();
    assert_eq!(ready.status, ConditionStatus::True);
    assert_eq!(s.conditions.len(), 1);
    assert_eq!(ready.observed_generation, Some(3));

    let failing = vec![SourceStatus {
        source: "r/repo".into(),
        error: Some("503".into()),
        ..Default::default()
    }];
    let s = status(&all_ready, failing);
    let ready = condition::find(&s.conditions, READY).unwrap();
    assert_eq!(ready.reason, Reason::RegistryUnavailable);
    assert!(ready.message.contains("r/repo"), "{}", ready.message);
}

#[test]
fn a_child_deleted_now_counts_neither_as_a_child_nor_as_ready() {
    let children = vec![
        existing("r/kept:v1", None, true),
        existing("r/gone:v1", Some("2026-12-01T00:00:00Z"), true),
    ];
    let selection = selection_of(&["r/kept:v1"]);
    let plan = plan_children(
        &owner(),
        &SociIndexTemplate::default(),
        &selection,
        &children,
        &BTreeSet::new(),
        Duration::from_secs(60),
        now(),
    );
    assert_eq!(plan.delete, [child_name(&owner(), "r/gone:v1")]);
    let s = policy_status(
        &owner(),
        None,
        Some(1),
        &selection,
        &children,
        &plan,
        Vec::new(),
        None,
        now(),
    );
    assert_eq!((s.children, s.ready_children), (1, 1));
    assert_eq!(s.summary.as_deref(), Some("1/1"));
}

#[test]
fn the_cut_is_counted_exactly_and_listed_up_to_twenty() {
    let mut selection = selection_of(&["r/a:v1"]);
    selection.cut = (0..25).map(|i| format!("r/cut{i}:v1")).collect();
    let children = vec![existing("r/a:v1", None, true)];
    let s = policy_status(
        &owner(),
        None,
        Some(1),
        &selection,
        &children,
        &ChildrenPlan::default(),
        Vec::new(),
        None,
        now(),
    );
    assert_eq!(s.cut_image_count, 25);
    assert_eq!(s.cut_images.len(), 20);
    assert_eq!(s.selected_images, 26);
    let ready = condition::find(&s.conditions, READY).unwrap();
    assert!(
        ready.message.contains("25 more were cut"),
        "{}",
        ready.message
    );
}

#[test]
fn an_invalid_spec_stalls_with_its_reason() {
    let s = invalid_status(None, Some(2), "include pattern \"a[\": unclosed", now());
    let stalled = condition::find(&s.conditions, STALLED).unwrap();
    assert_eq!(stalled.reason, Reason::InvalidSpec);
    assert!(stalled.message.contains("a["));
    assert_eq!(s.observed_generation, Some(2));
}
