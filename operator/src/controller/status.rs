//! Status: the one server-side apply write of a SociIndex's status, then its Events.

use super::{Context, FIELD_MANAGER, events};
use crate::api::{SociIndex, SociIndexStatus};
use anyhow::Context as _;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

/// Writes `status` when it differs from the object's, then announces what changed (Events,
/// gauges; `queued`: its builds waiting for a Job slot).
pub async fn report(
    ctx: &Context,
    object: &SociIndex,
    status: &SociIndexStatus,
    queued: usize,
) -> anyhow::Result<()> {
    if object.status.as_ref() != Some(status) {
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let indexes: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
        write(&indexes, &name, status).await?;
        tracing::info!(
            %namespace, %name,
            ready = status.ready_images,
            desired = status.desired_images,
            "status updated"
        );
    }
    events::announce(ctx, object, status, queued).await;
    Ok(())
}

/// The server-side apply patch that writes `status`. Every status is planned within the size
/// budget already; fitting it here keeps any other writer's there too.
pub fn patch(status: &SociIndexStatus) -> serde_json::Value {
    let mut status = status.clone();
    crate::api::budget::fit(&mut status, crate::api::budget::STATUS_BUDGET);
    serde_json::json!({
        "apiVersion": "soci.dev/v1alpha1",
        "kind": "SociIndex",
        "status": status,
    })
}

/// Applies `status` to the object `name` (forcing: the operator owns the status).
pub async fn write(
    api: &Api<SociIndex>,
    name: &str,
    status: &SociIndexStatus,
) -> anyhow::Result<()> {
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch(status)),
    )
    .await
    .with_context(|| format!("writing the status of {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, ConditionStatus, ImageStatus, PlatformStatus};

    #[test]
    fn the_status_patch_is_a_server_side_apply_of_the_fitted_status() {
        let mut status = SociIndexStatus {
            conditions: vec![Condition::new(
                crate::api::condition::READY,
                ConditionStatus::True,
                "Verified",
                "ok",
            )],
            ..Default::default()
        };
        status.images = (0..2)
            .map(|i| ImageStatus {
                name: format!("i{i}"),
                platforms: vec![
                    PlatformStatus {
                        platform: "p".repeat(200_000),
                        ..Default::default()
                    };
                    1
                ],
                ..Default::default()
            })
            .collect();
        let patch = patch(&status);
        assert_eq!(patch["apiVersion"], "soci.dev/v1alpha1");
        assert_eq!(patch["kind"], "SociIndex");
        let text = patch.to_string();
        assert!(
            text.len() <= crate::api::budget::STATUS_BUDGET + 100,
            "{}",
            text.len()
        );
        assert_eq!(patch["status"]["images"].as_array().unwrap().len(), 2);
    }
}
