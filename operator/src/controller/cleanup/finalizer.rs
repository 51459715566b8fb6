//! The `soci.dev/cleanup` finalizer: present exactly while `deletionPolicy` is `Delete`.

use crate::api::{DeletionPolicy, SociIndex, SociIndexSpec};
use crate::controller::Context;
use anyhow::Context as _;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

pub const CLEANUP_FINALIZER: &str = "soci.dev/cleanup";

pub fn wants_finalizer(spec: &SociIndexSpec) -> bool {
    spec.deletion_policy == Some(DeletionPolicy::Delete)
}

/// Adds the finalizer while the policy is `Delete`, removes it (deleting nothing) otherwise.
pub async fn sync_finalizer(object: &SociIndex, ctx: &Context) -> anyhow::Result<()> {
    let has = object.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
    let wants = wants_finalizer(&object.spec);
    if has == wants {
        return Ok(());
    }
    set_finalizer(object, ctx, wants).await
}

pub(super) async fn set_finalizer(
    object: &SociIndex,
    ctx: &Context,
    present: bool,
) -> anyhow::Result<()> {
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(CLEANUP_FINALIZER.to_string());
    }
    // The resourceVersion makes this a compare-and-swap: others' finalizers are never lost.
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing holds it any more.
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(()),
        Err(e) => Err(e).context(if present {
            "adding the cleanup finalizer"
        } else {
            "removing the cleanup finalizer"
        }),
    }
}
