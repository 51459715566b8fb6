//! Observe, for a policy: the images its sources name now (Pods from the watch store, CronJobs,
//! ServiceAccounts and Namespaces from the API, tags from the registry) and its children.

use super::plan::{Candidate, ExistingChild, POLICY_UID_LABEL};
use super::workloads::{self, WorkloadOptions};
use super::{PolicyContext, PolicyRef};
use crate::api::SociIndex;
use crate::api::policy::{RepositorySource, policy_limits};
use crate::controller::credentials;
use crate::controller::policy_tags::select_tags;
use crate::registry::RegistryRef;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};

/// The namespaces whose workloads a policy reads.
pub async fn workload_namespaces(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
) -> anyhow::Result<BTreeSet<String>> {
    match policy {
        PolicyRef::Namespaced(p) => Ok(BTreeSet::from([p.namespace().unwrap_or_default()])),
        PolicyRef::Cluster(p) => {
            let selector = match &p.spec.namespace_selector {
                Some(s) => Selector::try_from(s.clone())?,
                None => Selector::default(),
            };
            let api: Api<Namespace> = Api::all(ctx.main.client.clone());
            let list = api
                .list_metadata(&ListParams::default().labels_from(&selector))
                .await?;
            Ok(list.items.into_iter().map(|n| n.name_any()).collect())
        }
    }
}

/// The images the Pods (from the store) and CronJobs of `namespaces` run.
pub async fn workload_candidates(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
    namespaces: &BTreeSet<String>,
) -> anyhow::Result<Vec<Candidate>> {
    let Some(source) = &policy.spec().sources.workloads else {
        return Ok(Vec::new());
    };
    let selector = match &source.selector {
        Some(s) => Selector::try_from(s.clone())?,
        None => Selector::default(),
    };
    let pull_secrets = matches!(policy, PolicyRef::Namespaced(_));
    let mut accounts = BTreeMap::new();
    if pull_secrets {
        for namespace in namespaces {
            let api: Api<ServiceAccount> = Api::namespaced(ctx.main.client.clone(), namespace);
            for account in api.list(&ListParams::default()).await?.items {
                accounts.insert(account.name_any(), account);
            }
        }
    }
    let options = WorkloadOptions {
        include_init_containers: source.include_init_containers.unwrap_or(true),
        pull_secrets,
        service_accounts: &accounts,
    };
    let mut found = Vec::new();
    for pod in ctx.pods.state() {
        let in_scope = pod
            .namespace()
            .is_some_and(|namespace| namespaces.contains(&namespace));
        if in_scope && !is_worker(&pod) && selector.matches(pod.labels()) {
            found.extend(workloads::pod_candidates(&pod, &options));
        }
    }
    for cron_job in &listed::<CronJob>(ctx, policy, namespaces, &selector).await? {
        found.extend(workloads::cron_job_candidates(cron_job, &options));
    }
    // The workloads' templates: what their Pods run, also while they have none.
    for d in &listed::<Deployment>(ctx, policy, namespaces, &selector).await? {
        if let Some(spec) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
            found.extend(workloads::template_candidates(spec, &options));
        }
    }
    for s in &listed::<StatefulSet>(ctx, policy, namespaces, &selector).await? {
        if let Some(spec) = s.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
            found.extend(workloads::template_candidates(spec, &options));
        }
    }
    for d in &listed::<DaemonSet>(ctx, policy, namespaces, &selector).await? {
        if let Some(spec) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
            found.extend(workloads::template_candidates(spec, &options));
        }
    }
    Ok(found)
}

/// The objects of kind `K` with the selector's labels in `namespaces`: one list in the
/// policy's namespace, or one cluster-wide for a cluster policy.
async fn listed<K>(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
    namespaces: &BTreeSet<String>,
    selector: &Selector,
) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let params = ListParams::default().labels_from(selector);
    let items = match policy {
        PolicyRef::Namespaced(p) => {
            let api: Api<K> =
                Api::namespaced(ctx.main.client.clone(), &p.namespace().unwrap_or_default());
            api.list(&params).await?.items
        }
        PolicyRef::Cluster(_) => {
            let api: Api<K> = Api::all(ctx.main.client.clone());
            api.list(&params).await?.items
        }
    };
    Ok(items
        .into_iter()
        .filter(|o| {
            o.meta()
                .namespace
                .as_ref()
                .is_some_and(|n| namespaces.contains(n))
        })
        .collect())
}

/// Our own worker Pods run the operator's image: never a workload to index.
fn is_worker(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    use crate::controller::worker::{MANAGED_BY, MANAGED_BY_LABEL};
    pod.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

/// The tags a repository source follows now, as candidates (the policy's cap applies to them
/// with the other sources' images, so that what it cuts is reported).
pub async fn repository_candidates(
    ctx: &PolicyContext,
    policy: &PolicyRef<'_>,
    source: &RepositorySource,
) -> Result<Vec<Candidate>, String> {
    let repository = RegistryRef::parse(&source.repository).map_err(|e| format!("{e:#}"))?;
    let namespace = policy.child_namespace();
    let registry = credentials::registry_for(
        &ctx.main.client,
        &ctx.main.registry,
        &ctx.main.credentials,
        &namespace,
        policy.spec().template.credentials.as_ref(),
        &ctx.main.worker.tenants.operator_credentials,
    )
    .await
    .map_err(|f| f.message)?;
    let tags = registry
        .list_tags(&repository, policy_limits::MAX_TAGS_LISTED)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "the repository has more than {} tags; narrow it or list fewer",
                policy_limits::MAX_TAGS_LISTED
            )
        })?;
    let selected = select_tags(&source.tags, &tags, policy_limits::MAX_TAGS_LISTED)
        .map_err(|e| e.to_string())?;
    Ok(selected
        .selected
        .into_iter()
        .map(|tag| Candidate {
            reference: repository.with_reference(&tag).to_string(),
            digest: None,
            source: source.repository.clone(),
            pull_secrets: BTreeSet::new(),
            seen: None,
        })
        .collect())
}

/// The tags of `tags` that are the targets our template writes for others of them (`v1-soci`
/// for `v1`, whatever the suffix or template): never indexed again.
pub fn own_targets(
    repository: &RegistryRef,
    tags: &[String],
    target: Option<&crate::api::TargetSpec>,
) -> BTreeSet<String> {
    let name = super::plan::image_name(&repository.to_string());
    tags.iter()
        .filter_map(|tag| {
            let source = repository.with_reference(tag);
            let written =
                crate::controller::naming::target_reference(&source, target, &name).ok()?;
            written.tag.filter(|t| t != tag)
        })
        .collect()
}

/// The children that exist: every SociIndex in the child namespace labelled with the policy's
/// uid (whether it controls them is [`ExistingChild::ours`]).
pub async fn children(
    ctx: &PolicyContext,
    namespace: &str,
    uid: &str,
) -> anyhow::Result<Vec<ExistingChild>> {
    let api: Api<SociIndex> = Api::namespaced(ctx.main.client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("{POLICY_UID_LABEL}={uid}")))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|child| ExistingChild::of(child, uid))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetSpec;

    #[test]
    fn our_own_target_tags_are_recognised_whatever_the_suffix_or_template() {
        let repo = RegistryRef::parse("127.0.0.1:5000/team/app").unwrap();
        let tags: Vec<String> = ["1.0", "1.0-lazy", "1.1", "idx-1.0", "1.0-soci"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let suffix = TargetSpec {
            tag_suffix: Some("-lazy".into()),
            ..Default::default()
        };
        let found = own_targets(&repo, &tags, Some(&suffix));
        assert!(
            found.contains("1.0-lazy") && found.contains("1.1-lazy"),
            "{found:?}"
        );
        assert!(!found.contains("1.0") && !found.contains("1.1"));
        let template = TargetSpec {
            tag_template: Some("idx-{tag}".into()),
            ..Default::default()
        };
        assert!(own_targets(&repo, &tags, Some(&template)).contains("idx-1.0"));
        assert!(own_targets(&repo, &tags, None).contains("1.0-soci"));
        // In place: the target is the tag itself, which stays a source.
        let in_place = TargetSpec {
            in_place: Some(true),
            ..Default::default()
        };
        assert!(own_targets(&repo, &tags, Some(&in_place)).is_empty());
    }
}
