//! Apply, for a policy: create and update its children, start and stop their retention clocks,
//! delete the expired ones. A name held by an object the policy does not control is never
//! written: a new child is created (never applied over what exists).

use super::plan::{
    ChildrenPlan, IMAGE_ANNOTATION, Owner, POLICY_KIND_LABEL, POLICY_NAME_LABEL, POLICY_UID_LABEL,
    SOURCE_ANNOTATION, UNUSED_SINCE_ANNOTATION, WantedChild,
};
use crate::api::SociIndex;
use crate::controller::durations::rfc3339;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;

pub const FIELD_MANAGER: &str = "soci-operator-policy";

/// What applying did, for the status and the Events.
#[derive(Debug, Default)]
pub struct Applied {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    /// Names found taken while creating.
    pub conflicts: Vec<String>,
}

/// The child object: its labels, annotations and controller reference to the policy.
pub fn child_object(owner: &Owner, wanted: &WantedChild) -> SociIndex {
    let label_value: String = owner.name.chars().take(63).collect();
    let labels = BTreeMap::from([
        (POLICY_UID_LABEL.to_string(), owner.uid.clone()),
        (
            POLICY_NAME_LABEL.to_string(),
            label_value.trim_end_matches(['-', '.', '_']).to_string(),
        ),
        (POLICY_KIND_LABEL.to_string(), owner.kind.to_string()),
    ]);
    let annotations = BTreeMap::from([
        (IMAGE_ANNOTATION.to_string(), wanted.reference.clone()),
        (SOURCE_ANNOTATION.to_string(), wanted.source.clone()),
    ]);
    SociIndex {
        metadata: ObjectMeta {
            name: Some(wanted.name.clone()),
            namespace: Some(owner.child_namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "soci.dev/v1alpha1".into(),
                kind: owner.kind.into(),
                name: owner.name.clone(),
                uid: owner.uid.clone(),
                controller: Some(true),
                // No finalizer rights on the policy needed; garbage collection still follows.
                block_owner_deletion: Some(false),
            }]),
            ..Default::default()
        },
        spec: wanted.spec.clone(),
        status: None,
    }
}

pub async fn apply(
    api: &Api<SociIndex>,
    owner: &Owner,
    plan: &ChildrenPlan,
    existing: &[String],
    now: Timestamp,
) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();
    for wanted in &plan.apply {
        let object = child_object(owner, wanted);
        if existing.contains(&wanted.name) {
            let mut patch = serde_json::to_value(&object)?;
            patch["apiVersion"] = "soci.dev/v1alpha1".into();
            patch["kind"] = "SociIndex".into();
            if let Some(metadata) = patch["metadata"].as_object_mut() {
                metadata.remove("namespace");
            }
            api.patch(
                &wanted.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            continue;
        }
        match api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &object,
            )
            .await
        {
            Ok(_) => applied.created.push(wanted.name.clone()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                applied.conflicts.push(wanted.name.clone())
            }
            Err(e) => return Err(e.into()),
        }
    }
    let annotate = |value: Option<String>| serde_json::json!({"metadata": {"annotations": {UNUSED_SINCE_ANNOTATION: value}}});
    for name in &plan.mark_used {
        api.patch(name, &PatchParams::default(), &Patch::Merge(annotate(None)))
            .await?;
    }
    for name in &plan.mark_unused {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(annotate(Some(rfc3339(now)))),
        )
        .await?;
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => applied.deleted.push(name.clone()),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::policy::plan::{Candidate, child_spec};

    #[test]
    fn a_child_is_labelled_annotated_and_controlled_by_its_policy() {
        let owner = Owner {
            kind: "ClusterSociIndexPolicy",
            name: "platform".into(),
            uid: "uid-1".into(),
            child_namespace: "soci-system".into(),
        };
        let image = Candidate {
            reference: "r/a:v1".into(),
            digest: None,
            source: "r/a".into(),
            pull_secrets: Default::default(),
            seen: None,
        };
        let wanted = WantedChild {
            name: "platform-0123456789".into(),
            reference: image.reference.clone(),
            source: image.source.clone(),
            spec: child_spec(&Default::default(), &image),
        };
        let child = child_object(&owner, &wanted);
        assert_eq!(child.metadata.namespace.as_deref(), Some("soci-system"));
        let labels = child.metadata.labels.unwrap();
        assert_eq!(labels[POLICY_UID_LABEL], "uid-1");
        assert_eq!(labels[POLICY_KIND_LABEL], "ClusterSociIndexPolicy");
        let annotations = child.metadata.annotations.unwrap();
        assert_eq!(annotations[IMAGE_ANNOTATION], "r/a:v1");
        assert_eq!(annotations[SOURCE_ANNOTATION], "r/a");
        let reference = &child.metadata.owner_references.unwrap()[0];
        assert_eq!(reference.controller, Some(true));
        assert_eq!(reference.block_owner_deletion, Some(false));
        assert_eq!(reference.kind, "ClusterSociIndexPolicy");
        assert_eq!(child.spec.images[0].image, "r/a:v1");
    }
}
