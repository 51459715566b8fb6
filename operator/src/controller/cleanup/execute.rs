//! Carrying out a [`CleanupPlan`]: restores, then deletes, each re-checked where a push since
//! observing could have moved a tag; and one object's whole cleanup ([`clean_up`]).

use super::observe::observe;
use super::plan::{CleanupPlan, Protected, Step, owned_targets, plan_cleanup};
use crate::api::SociIndexStatus;
use crate::registry::error::PermanentCause;
use crate::registry::{RegistryClient, RegistryError};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Done {
    pub deleted: usize,
    pub already_gone: usize,
    pub restored: Vec<String>,
    pub left: Vec<String>,
}

pub async fn execute(client: &RegistryClient, plan: &CleanupPlan) -> anyhow::Result<Done> {
    let mut done = Done {
        left: plan.left.clone(),
        ..Default::default()
    };
    for step in &plan.steps {
        match step {
            Step::RestoreTag {
                tag,
                source_digest,
                replaces,
            } => {
                let name = tag.tag.clone().unwrap_or_default();
                // Checked again right before the write: a push since observing wins.
                let now = client.get_manifest(tag, &name).await?.map(|m| m.digest);
                if now.as_deref() != Some(replaces.as_str()) {
                    done.left
                        .push(format!("{tag}: moved while cleaning up; left as it is"));
                    continue;
                }
                let Some(source) = client.get_manifest(tag, source_digest).await? else {
                    done.left
                        .push(format!("{tag}: {source_digest} is gone; not restored"));
                    continue;
                };
                client
                    .put_manifest(tag, &name, &source.media_type, source.bytes.into())
                    .await?;
                done.restored.push(format!("{tag} → {source_digest}"));
            }
            Step::DeleteTag { tag } => {
                let name = tag.tag.clone().unwrap_or_default();
                match client.delete_manifest(tag, &name).await {
                    Ok(_) => done.deleted += 1,
                    Err(e) if e.is_transient() => return Err(e.into()),
                    // Registries before OCI 1.1 (distribution 2.x) delete only by digest.
                    Err(e) => done.left.push(format!(
                        "{tag}: shares its manifest with another tag and the registry cannot remove a tag alone ({e}); left"
                    )),
                }
            }
            Step::DeleteManifest { repo, digest } => {
                if client.delete_manifest(repo, digest).await? {
                    done.deleted += 1;
                } else {
                    done.already_gone += 1;
                }
            }
            Step::DeleteBlob { repo, digest } => {
                if client.delete_blob(repo, digest).await? {
                    done.deleted += 1;
                } else {
                    done.already_gone += 1;
                }
            }
        }
    }
    Ok(done)
}

/// Observe, plan and execute for one object's status, keeping what others deploy.
pub async fn clean_up(
    client: &RegistryClient,
    status: Option<&SociIndexStatus>,
    protected: &Protected,
) -> anyhow::Result<Done> {
    let owned = owned_targets(status);
    let seen = observe(client, &owned, protected).await?;
    let plan = plan_cleanup(&owned, &seen, protected);
    execute(client, &plan).await
}

/// Retrying does not help: the registry refuses deletes, or our credentials may not delete.
pub fn is_refusal(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|c| c.downcast_ref::<RegistryError>())
        .any(|e| {
            matches!(
                e.permanent_cause,
                Some(PermanentCause::Unsupported | PermanentCause::Unauthorized)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::FailureClass;
    use crate::reason::failure_of;

    #[test]
    fn refusals_are_told_apart_from_other_failures() {
        let refused: anyhow::Error =
            RegistryError::permanent(PermanentCause::Unsupported, "DELETE x", "405").into();
        assert!(is_refusal(&refused.context("cleaning up")));
        let denied: anyhow::Error =
            RegistryError::permanent(PermanentCause::Unauthorized, "DELETE x", "401").into();
        assert!(is_refusal(&denied));
        let flaky: anyhow::Error = RegistryError::transient("DELETE x", "503").into();
        assert!(!is_refusal(&flaky));
        assert_eq!(failure_of(&flaky).class, FailureClass::Transient);
    }
}
