//! The admission decision and its view, without a cluster.

use super::rewrite::*;
use super::view::IndexView;
use crate::api::condition::LAZY_LOAD_READY;
use crate::api::{
    Condition, ConditionStatus, ImageStatus, SociIndex, SociIndexSpec, SociIndexStatus,
};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

const SRC: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const TGT: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const OTHER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn index(ns: &str, name: &str, image: &str, ready: bool) -> SociIndex {
    let mut o = SociIndex::new(
        name,
        SociIndexSpec {
            images: vec![],
            settings: Default::default(),
            suspend: false,
        },
    );
    o.metadata.namespace = Some(ns.into());
    let source = crate::registry::RegistryRef::parse(image).unwrap();
    let target = format!(
        "{}:{}-soci",
        source.repository_display(),
        source.tag.clone().unwrap_or("latest".into())
    );
    o.status = Some(SociIndexStatus {
        images: vec![ImageStatus {
            name: "app".into(),
            image: image.into(),
            source_digest: Some(SRC.into()),
            target: Some(target.clone()),
            target_digest: Some(TGT.into()),
            deploy: Some(format!("{target}@{TGT}")),
            conditions: vec![Condition::new(
                LAZY_LOAD_READY,
                if ready {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                "Verified",
                "",
            )],
            ..Default::default()
        }],
        ..Default::default()
    });
    o
}

fn pod(images: &[(&str, &str)], init: &[(&str, &str)]) -> Pod {
    let containers = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(name, image)| serde_json::json!({"name": name, "image": image}))
            .collect::<Vec<_>>()
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "team"},
        "spec": {"containers": containers(images), "initContainers": containers(init)}
    }))
    .unwrap()
}

fn look(view: &IndexView, ns: &str, image: &str) -> FirstLook {
    let p = pod(&[("app", image)], &[]);
    let (slot, policy) = container_slots(&p).remove(0);
    first_look(view, ns, &slot, policy.as_deref(), &BTreeMap::new())
}

#[test]
fn a_digest_reference_moves_only_to_the_index_built_from_that_digest() {
    let view = IndexView::build(&[index("team", "a", "127.0.0.1:5000/app:v1", true)], false);
    let moved = look(&view, "team", &format!("127.0.0.1:5000/app@{SRC}"));
    let FirstLook::Move(image) = moved else {
        panic!("{moved:?}")
    };
    assert_eq!(image.deploy, format!("127.0.0.1:5000/app:v1-soci@{TGT}"));
    // A tag beside the digest does not matter; the digest does.
    assert!(matches!(
        look(&view, "team", &format!("127.0.0.1:5000/app:v9@{SRC}")),
        FirstLook::Move(_)
    ));
    assert_eq!(
        look(&view, "team", &format!("127.0.0.1:5000/app@{OTHER}")),
        FirstLook::Keep(Keep::NotIndexed)
    );
    assert_eq!(
        look(&view, "team", &format!("127.0.0.1:5000/other@{SRC}")),
        FirstLook::Keep(Keep::NotIndexed)
    );
}

#[test]
fn only_ready_indexes_of_the_pods_namespace_count() {
    let view = IndexView::build(
        &[
            index("team", "a", "127.0.0.1:5000/app:v1", false),
            index("elsewhere", "b", "127.0.0.1:5000/app:v1", true),
        ],
        true,
    );
    assert_eq!(
        look(&view, "team", &format!("127.0.0.1:5000/app@{SRC}")),
        FirstLook::Keep(Keep::NotIndexed)
    );
    assert!(matches!(
        look(&view, "elsewhere", &format!("127.0.0.1:5000/app@{SRC}")),
        FirstLook::Move(_)
    ));
}

#[test]
fn cluster_policy_children_count_everywhere_only_when_allowed() {
    let mut child = index("soci-system", "c", "127.0.0.1:5000/app:v1", true);
    child.metadata.labels = Some(
        [(
            crate::controller::policy::plan::POLICY_KIND_LABEL.to_string(),
            "ClusterSociIndexPolicy".to_string(),
        )]
        .into(),
    );
    let digest_ref = format!("127.0.0.1:5000/app@{SRC}");
    let allowed = IndexView::build(std::slice::from_ref(&child), true);
    assert!(matches!(
        look(&allowed, "team", &digest_ref),
        FirstLook::Move(_)
    ));
    let refused = IndexView::build(std::slice::from_ref(&child), false);
    assert_eq!(
        look(&refused, "team", &digest_ref),
        FirstLook::Keep(Keep::NotIndexed)
    );
    assert!(matches!(
        look(&refused, "soci-system", &digest_ref),
        FirstLook::Move(_)
    ));
}

#[test]
fn a_tag_needs_a_fresh_resolution_and_moves_only_when_it_still_matches() {
    let view = IndexView::build(&[index("team", "a", "127.0.0.1:5000/app:v1", true)], false);
    let FirstLook::Resolve {
        reference,
        candidates,
    } = look(&view, "team", "127.0.0.1:5000/app:v1")
    else {
        panic!("a tag is resolved first")
    };
    assert_eq!(reference.tag.as_deref(), Some("v1"));
    assert!(matches!(
        after_resolution(Ok(Some(SRC)), &candidates),
        Decision::Move(_)
    ));
    // The tag moved since indexing: moving the Pod would roll it back.
    assert_eq!(
        after_resolution(Ok(Some(OTHER)), &candidates),
        Decision::Keep(Keep::StaleTag)
    );
    assert_eq!(
        after_resolution(Ok(None), &candidates),
        Decision::Keep(Keep::StaleTag)
    );
    assert_eq!(
        after_resolution(Err(()), &candidates),
        Decision::Keep(Keep::ResolutionFailed)
    );
    // Built in place: the tag already names the SOCI-enabled image.
    assert_eq!(
        after_resolution(Ok(Some(TGT)), &candidates),
        Decision::Keep(Keep::AlreadyEnabled)
    );
    // Another tag of the same repository is not indexed.
    assert_eq!(
        look(&view, "team", "127.0.0.1:5000/app:v2"),
        FirstLook::Keep(Keep::NotIndexed)
    );
}

#[test]
fn a_pinned_policy_child_serves_its_tag() {
    // A workloads policy names `ref:tag@digest`; a Pod naming `ref:tag` is resolved against it.
    let view = IndexView::build(
        &[index(
            "team",
            "a",
            &format!("127.0.0.1:5000/app:v1@{SRC}"),
            true,
        )],
        false,
    );
    let FirstLook::Resolve { candidates, .. } = look(&view, "team", "127.0.0.1:5000/app:v1") else {
        panic!("a tag is resolved first")
    };
    assert!(matches!(
        after_resolution(Ok(Some(SRC)), &candidates),
        Decision::Move(_)
    ));
}

#[test]
fn docker_hub_short_names_match_their_normalised_form() {
    let view = IndexView::build(
        &[index("team", "a", "docker.io/library/busybox:1.36", true)],
        false,
    );
    assert!(matches!(
        look(&view, "team", "busybox:1.36"),
        FirstLook::Resolve { .. }
    ));
    assert!(matches!(
        look(&view, "team", &format!("busybox@{SRC}")),
        FirstLook::Move(_)
    ));
}

#[test]
fn pull_never_recorded_and_unparsable_images_stay() {
    let view = IndexView::build(&[index("team", "a", "127.0.0.1:5000/app:v1", true)], false);
    let digest_ref = format!("127.0.0.1:5000/app@{SRC}");
    let p = pod(&[("app", &digest_ref)], &[]);
    let (slot, _) = container_slots(&p).remove(0);
    assert_eq!(
        first_look(&view, "team", &slot, Some("Never"), &BTreeMap::new()),
        FirstLook::Keep(Keep::PullNever)
    );
    let recorded = [("app".to_string(), "x".to_string())].into();
    assert_eq!(
        first_look(&view, "team", &slot, None, &recorded),
        FirstLook::Keep(Keep::AlreadyRewritten)
    );
    assert_eq!(
        look(&view, "team", "Not An Image!"),
        FirstLook::Keep(Keep::NotIndexed)
    );
}

#[test]
fn excluded_namespaces_opted_out_and_mirror_pods_are_skipped() {
    let excluded = vec!["kube-system".to_string(), "soci-system".to_string()];
    let mut p = pod(&[("app", "x")], &[]);
    assert_eq!(
        pod_skip(&p, "kube-system", &excluded),
        Some(PodSkip::ExcludedNamespace)
    );
    assert_eq!(pod_skip(&p, "team", &excluded), None);
    p.metadata.labels = Some([(LAZY_LOADING_LABEL.to_string(), "disabled".to_string())].into());
    assert_eq!(pod_skip(&p, "team", &excluded), Some(PodSkip::OptedOut));
    p.metadata.labels = None;
    p.metadata.annotations =
        Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
    assert_eq!(pod_skip(&p, "team", &excluded), Some(PodSkip::MirrorPod));
    p.metadata.annotations = None;
    p.metadata.labels = Some(
        [(
            crate::controller::worker::OWNER_UID_LABEL.to_string(),
            "uid".to_string(),
        )]
        .into(),
    );
    assert_eq!(pod_skip(&p, "team", &excluded), Some(PodSkip::OperatorPod));
}

#[test]
fn the_patch_moves_images_and_records_the_originals() {
    let view = IndexView::build(&[index("team", "a", "127.0.0.1:5000/app:v1", true)], false);
    let digest_ref = format!("127.0.0.1:5000/app@{SRC}");
    let p = pod(
        &[("side", "127.0.0.1:5000/other:v1"), ("app", &digest_ref)],
        &[("setup", &digest_ref)],
    );
    let moves: Vec<_> = container_slots(&p)
        .into_iter()
        .filter_map(|(slot, policy)| {
            match first_look(&view, "team", &slot, policy.as_deref(), &BTreeMap::new()) {
                FirstLook::Move(image) => Some((slot, image)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(moves.len(), 2, "the init container and the app container");
    let patch = patch(&p, &moves, &BTreeMap::new()).unwrap();
    let mut patched = serde_json::to_value(&p).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    let patched: Pod = serde_json::from_value(patched).unwrap();
    let spec = patched.spec.as_ref().unwrap();
    let deploy = format!("127.0.0.1:5000/app:v1-soci@{TGT}");
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("127.0.0.1:5000/other:v1")
    );
    assert_eq!(spec.containers[1].image.as_deref(), Some(deploy.as_str()));
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].image.as_deref(),
        Some(deploy.as_str())
    );
    let recorded = recorded_originals(&patched);
    assert_eq!(recorded.get("app"), Some(&digest_ref));
    assert_eq!(recorded.get("init:setup"), Some(&digest_ref));
    // A reinvocation finds both recorded and moves nothing again.
    for (slot, policy) in container_slots(&patched) {
        let again = first_look(&view, "team", &slot, policy.as_deref(), &recorded);
        assert!(matches!(again, FirstLook::Keep(_)), "{again:?}");
    }
    assert!(super::rewrite::patch(&patched, &[], &recorded).is_none());
}

#[test]
fn the_patch_adds_to_existing_annotations() {
    let view = IndexView::build(&[index("team", "a", "127.0.0.1:5000/app:v1", true)], false);
    let digest_ref = format!("127.0.0.1:5000/app@{SRC}");
    let mut p = pod(&[("app", &digest_ref)], &[]);
    p.metadata.annotations = Some([("keep".to_string(), "me".to_string())].into());
    let (slot, _) = container_slots(&p).remove(0);
    let FirstLook::Move(image) = first_look(&view, "team", &slot, None, &BTreeMap::new()) else {
        panic!()
    };
    let patch = patch(&p, &[(slot, image)], &BTreeMap::new()).unwrap();
    let mut patched = serde_json::to_value(&p).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(patched["metadata"]["annotations"]["keep"], "me");
    assert!(patched["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION].is_string());
}
