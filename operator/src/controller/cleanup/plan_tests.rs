//! The cleanup plan, case by case: what is deleted, restored, untagged or kept.

use super::super::test_support::*;
use super::*;
use crate::api::{ImageStatus, PlatformStatus};

fn deletes(plan: &CleanupPlan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::DeleteManifest { digest, .. } => Some(format!("manifest {digest}")),
            Step::DeleteBlob { digest, .. } => Some(format!("blob {digest}")),
            Step::RestoreTag { .. } | Step::DeleteTag { .. } => None,
        })
        .collect()
}

fn restores(plan: &CleanupPlan) -> Vec<(String, String)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::RestoreTag {
                tag, source_digest, ..
            } => Some((tag.to_string(), source_digest.clone())),
            _ => None,
        })
        .collect()
}

/// What cleaning up `converted`'s target deletes when nothing else references it, in order.
const ALL_OURS: [&str; 5] = [
    "manifest idx",
    "manifest am",
    "manifest si",
    "blob z1",
    "blob z2",
];

#[test]
fn an_owned_target_goes_index_first_then_soci_artifacts_and_never_the_source() {
    let (owned, seen) = converted("v1-soci", Some("idx"));
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert_eq!(deletes(&plan), ALL_OURS);
    assert!(restores(&plan).is_empty());
    assert!(plan.left.is_empty(), "{:?}", plan.left);
    // Every step is in the target's repository.
    for s in &plan.steps {
        if let Step::DeleteManifest { repo, .. } | Step::DeleteBlob { repo, .. } = s {
            assert_eq!(repo_of(repo), format!("{REG}/app"));
        }
    }
}

#[test]
fn a_target_tag_pushed_again_is_left_with_what_it_references() {
    let (owned, mut seen) = converted("v1-soci", Some("new"));
    // The new content reuses our SOCI index (and so its zTOCs), not our annotated manifest.
    seen.manifests
        .insert(k("app", "new"), vec![bound("am2", "si"), soci("si")]);
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert_eq!(deletes(&plan), ["manifest idx", "manifest am"]);
    assert!(plan.left.iter().any(|l| l.contains("pushed again")));
    assert!(plan.left.iter().any(|l| l.contains("kept")));
}

#[test]
fn a_target_tag_already_gone_still_cleans_the_rest() {
    let (owned, seen) = converted("v1-soci", None);
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert_eq!(deletes(&plan).len(), 5);
    assert!(plan.left.is_empty());
}

#[test]
fn in_place_restores_the_original_first_then_removes_ours() {
    let (owned, seen) = converted("v1", Some("idx"));
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert!(matches!(plan.steps[0], Step::RestoreTag { .. }));
    assert_eq!(restores(&plan), [(format!("{REG}/app:v1"), "src".into())]);
    assert_eq!(deletes(&plan), ALL_OURS);
    assert!(
        !deletes(&plan)
            .iter()
            .any(|d| d.ends_with(" src") || d.ends_with(" m"))
    );
}

#[test]
fn in_place_moved_by_the_user_is_not_restored() {
    let (owned, mut seen) = converted("v1", Some("users"));
    seen.manifests.insert(k("app", "users"), vec![entry("m9")]);
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert!(restores(&plan).is_empty());
    assert!(plan.left.iter().any(|l| l.contains("pushed again")));
    assert!(deletes(&plan).contains(&"manifest si".to_string()));
    assert!(!deletes(&plan).contains(&"manifest users".to_string()));
}

#[test]
fn in_place_without_a_readable_original_keeps_everything_the_tag_needs() {
    let (mut owned, mut seen) = converted("v1", Some("idx"));
    seen.restorable.remove(&k("app", "src"));
    let plan = plan_cleanup(std::slice::from_ref(&owned), &seen, &Protected::default());
    assert!(restores(&plan).is_empty());
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
    assert!(
        plan.left
            .iter()
            .any(|l| l.contains("keeps the SOCI-enabled"))
    );
    // A status whose source digest is the target's own (nothing to restore to): the same.
    owned.source_digest = Some("idx".into());
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert!(restores(&plan).is_empty());
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
}

#[test]
fn a_target_that_is_the_source_itself_is_never_deleted() {
    // indexVersion v1 (and already-converted sources): the target tag holds the source digest.
    let (mut owned, mut seen) = converted("v1-soci", Some("src"));
    owned.target_digest = "src".into();
    seen.manifests
        .insert(k("app", "src"), vec![entry("m"), soci("si")]);
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
}

#[test]
fn a_source_tag_now_holding_our_target_keeps_it() {
    // Someone retagged v1-soci as v1: deleting the index by digest would drop v1 too.
    let (owned, mut seen) = converted("v1-soci", Some("idx"));
    seen.tags
        .insert(format!("{REG}/app:v1"), Some("idx".to_string()));
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
}

#[test]
fn artifacts_shared_by_two_images_are_deleted_once_or_kept_for_the_one_that_stays() {
    let (a, mut seen) = converted("v1-soci", Some("idx"));
    let mut b = a.clone();
    b.image_name = "other".into();
    b.target = r("app:v2-soci");
    b.source = r("app:v2");
    b.source_digest = Some("src2".into());
    b.target_digest = "idx2".into();
    b.soci_indexes = vec!["si2".into()];
    seen.tags
        .insert(format!("{REG}/app:v2-soci"), Some("idx2".into()));
    seen.manifests
        .insert(k("app", "idx2"), vec![bound("am2", "si2"), soci("si2")]);
    // The same layer in both images: the same zTOC.
    seen.manifests
        .insert(k("app", "si2"), vec![entry("z2"), entry("z3")]);
    let plan = plan_cleanup(&[a.clone(), b.clone()], &seen, &Protected::default());
    let d = deletes(&plan);
    assert_eq!(d.iter().filter(|x| *x == "blob z2").count(), 1, "{d:?}");
    assert!(d.contains(&"blob z3".to_string()));

    // The second target was pushed again by someone else and references si2: z2 stays.
    seen.tags
        .insert(format!("{REG}/app:v2-soci"), Some("theirs".into()));
    seen.manifests.insert(k("app", "theirs"), vec![soci("si2")]);
    let plan = plan_cleanup(&[a, b], &seen, &Protected::default());
    let d = deletes(&plan);
    assert!(!d.contains(&"blob z2".to_string()), "{d:?}");
    assert!(!d.contains(&"manifest si2".to_string()), "{d:?}");
    assert!(d.contains(&"blob z1".to_string()), "{d:?}");
}

#[test]
fn only_images_with_a_recorded_target_digest_are_owned() {
    let platform = PlatformStatus {
        platform: "linux/amd64".into(),
        soci_index_digest: Some("sha256:si".into()),
        ..Default::default()
    };
    let status = SociIndexStatus {
        images: vec![
            ImageStatus {
                name: "built".into(),
                image: format!("{REG}/app:v1"),
                source_digest: Some("sha256:src".into()),
                target: Some(format!("{REG}/app:v1-soci")),
                target_digest: Some("sha256:idx".into()),
                platforms: vec![platform.clone()],
                ..Default::default()
            },
            ImageStatus {
                name: "in-place".into(),
                image: format!("{REG}/web:v1"),
                target: Some(format!("{REG}/web:v1")),
                target_digest: Some("sha256:idx".into()),
                ..Default::default()
            },
            ImageStatus {
                name: "never-built".into(),
                image: format!("{REG}/app:v2"),
                target: Some(format!("{REG}/app:v2-soci")),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let owned = owned_targets(Some(&status));
    assert_eq!(owned.len(), 2);
    assert!(!owned[0].in_place);
    assert_eq!(owned[0].soci_indexes, ["sha256:si"]);
    assert!(owned[1].in_place);
    assert!(owned_targets(None).is_empty());
}

#[test]
fn a_manifest_another_tag_shares_is_untagged_not_deleted() {
    // The same source and settings converted to another tag give the same index digest.
    let (owned, mut seen) = converted("v1-soci", Some("idx"));
    seen.tags
        .insert(format!("{REG}/app:v1-other"), Some("idx".into()));
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert_eq!(
        plan.steps,
        [Step::DeleteTag {
            tag: r("app:v1-soci")
        }]
    );
    assert!(plan.left.iter().any(|l| l.contains("kept")));
}

#[test]
fn a_ztoc_another_tags_soci_index_lists_is_kept() {
    // v2 of the app shares a base layer with v1, so its SOCI index lists the same zTOC.
    let (owned, mut seen) = converted("v1-soci", Some("idx"));
    seen.tags
        .insert(format!("{REG}/app:v2-soci"), Some("idx2".into()));
    seen.manifests
        .insert(k("app", "idx2"), vec![bound("am2", "si2"), soci("si2")]);
    seen.manifests.insert(k("app", "si2"), vec![entry("z1")]);
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert_eq!(
        deletes(&plan),
        ["manifest idx", "manifest am", "manifest si", "blob z2"]
    );
}

#[test]
fn a_repository_with_too_many_tags_to_check_is_left_alone() {
    let (owned, mut seen) = converted("v1-soci", Some("idx"));
    seen.unlisted.insert(format!("{REG}/app"));
    let plan = plan_cleanup(&[owned], &seen, &Protected::default());
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
    assert!(plan.left.iter().any(|l| l.contains("too many tags")));
}

fn others_deploy(deploy: &str) -> Protected {
    Protected::new([("team-b/web".to_string(), deploy)])
}

/// The plan for our image converted to `app:{tag}` (the tag at `idx`) while another
/// SociIndex deploys `app:{their_tag}@idx`.
fn plan_with_others_deploy(tag: &str, their_tag: &str) -> CleanupPlan {
    let (owned, seen) = converted(tag, Some("idx"));
    let protected = others_deploy(&format!("{REG}/app:{their_tag}@idx"));
    plan_cleanup(&[owned], &seen, &protected)
}

#[test]
fn a_target_another_sociindex_deploys_keeps_its_tag_and_everything_it_references() {
    let plan = plan_with_others_deploy("v1-soci", "v1-soci");
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert!(
        plan.left.iter().any(|l| l.contains("team-b/web")),
        "{:?}",
        plan.left
    );
}

#[test]
fn content_another_sociindex_deploys_under_another_tag_is_only_untagged_here() {
    // The other object's target tag has not been pushed (or was moved), but it deploys our
    // index by digest: nothing it needs may go.
    let plan = plan_with_others_deploy("v1-soci", "other");
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
    assert!(
        plan.steps
            .iter()
            .all(|s| matches!(s, Step::DeleteTag { tag } if tag.to_string() == format!("{REG}/app:v1-soci"))),
        "{:?}",
        plan.steps
    );
}

#[test]
fn an_in_place_target_another_sociindex_deploys_is_not_restored() {
    let plan = plan_with_others_deploy("v1", "v1");
    assert!(restores(&plan).is_empty());
    assert!(deletes(&plan).is_empty(), "{:?}", deletes(&plan));
}

#[test]
fn deploy_references_of_other_objects_are_collected_not_our_own() {
    let object = |uid: &str, deploy: &str| {
        let mut o = SociIndex::new(
            "web",
            serde_json::from_value(
                serde_json::json!({"images": [{"name": "a", "image": "r/a:1"}]}),
            )
            .unwrap(),
        );
        o.metadata.namespace = Some(format!("ns-{uid}"));
        o.metadata.uid = Some(uid.into());
        o.status = Some(SociIndexStatus {
            images: vec![ImageStatus {
                name: "a".into(),
                deploy: Some(deploy.into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        o
    };
    let ours = object("me", &format!("{REG}/app:v1-soci@idx"));
    let theirs = object("them", &format!("{REG}/app:v2-soci@idx2"));
    let mut leaving = object("leaving", &format!("{REG}/app:v3-soci@idx3"));
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0)));
    let p = Protected::of_others([&ours, &theirs, &leaving], "me");
    assert!(p.keys.contains(&k("app", "idx2")));
    assert!(
        !p.keys.contains(&k("app", "idx3")),
        "an object being deleted keeps nothing"
    );
    assert!(
        !p.keys.contains(&k("app", "idx")),
        "our own deploy is not protected from us"
    );
    assert_eq!(p.deployer(&r("app:x"), "idx2"), Some("ns-them/web"));
}
