//! Registry push events → reconcile requests. An event never acts by itself (Flux's model): it
//! sets the reconcile-request annotation on every SociIndex whose images name the pushed tag and
//! on every policy that follows the pushed repository, so filters, caps and checks apply
//! exactly as for polling.

use super::Context;
use crate::api::policy::{ClusterSociIndexPolicy, PolicySpec, SociIndexPolicy};
use crate::api::{RECONCILE_REQUEST_ANNOTATION, SociIndex, SociIndexSpec};
use crate::receiver::{PushEvent, names_pushed};
use crate::registry::RegistryRef;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One object is asked at most this often (a burst of pushes of one tag is one request).
const COALESCE: Duration = Duration::from_secs(2);

/// Whether a SociIndex names the pushed tag (by tag: a digest reference cannot move).
pub fn index_names(spec: &SociIndexSpec, event: &PushEvent) -> bool {
    spec.images.iter().any(|image| {
        RegistryRef::parse(&image.image).is_ok_and(|r| {
            r.digest.is_none()
                && names_pushed(
                    event,
                    &r.registry,
                    &r.repository,
                    r.tag.as_deref().or(Some("latest")),
                )
        })
    })
}

/// Whether a policy follows the pushed repository.
pub fn policy_follows(spec: &PolicySpec, event: &PushEvent) -> bool {
    spec.sources.repositories.iter().any(|source| {
        RegistryRef::parse(&source.repository)
            .is_ok_and(|r| names_pushed(event, &r.registry, &r.repository, None))
    })
}

/// `soci_operator_push_triggers_total{kind}`: reconciles requested by push events.
pub fn trigger_counter(registry: &prometheus::Registry) -> anyhow::Result<IntCounterVec> {
    let counter = IntCounterVec::new(
        prometheus::Opts::new(
            "soci_operator_push_triggers_total",
            "Reconciles requested by registry push events, by the kind of object reached",
        ),
        &["kind"],
    )?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

/// Consumes the receiver's events until the channel closes.
pub async fn dispatch(
    ctx: Arc<Context>,
    metrics: IntCounterVec,
    mut events: mpsc::Receiver<PushEvent>,
) {
    let mut asked: HashMap<String, Instant> = HashMap::new();
    while let Some(event) = events.recv().await {
        asked.retain(|_, at| at.elapsed() < COALESCE);
        if let Err(e) = dispatch_one(&ctx, &metrics, &event, &mut asked).await {
            tracing::warn!(error = %format!("{e:#}"), repository = %event.repository, "acting on a push event");
        }
    }
}

async fn dispatch_one(
    ctx: &Context,
    metrics: &IntCounterVec,
    event: &PushEvent,
    asked: &mut HashMap<String, Instant>,
) -> anyhow::Result<()> {
    let now = Timestamp::now().to_string();
    let patch =
        serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUEST_ANNOTATION: now}}});
    // The stores once synced (the leader); a standby, which has none, lists.
    let indexes: Vec<Arc<SociIndex>> = if ctx.synced.load(std::sync::atomic::Ordering::Relaxed) {
        ctx.jobs.indexes()
    } else {
        let all: Api<SociIndex> = Api::all(ctx.client.clone());
        all.list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect()
    };
    for index in indexes.iter().filter(|i| index_names(&i.spec, event)) {
        let namespace = index.namespace().unwrap_or_default();
        if first_ask(
            asked,
            &format!("SociIndex/{namespace}/{}", index.name_any()),
        ) {
            let api: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
            api.patch(
                &index.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            metrics.with_label_values(&["SociIndex"]).inc();
        }
    }
    let namespaced: Api<SociIndexPolicy> = Api::all(ctx.client.clone());
    for policy in namespaced.list(&ListParams::default()).await?.items {
        if policy_follows(&policy.spec.policy, event) {
            let namespace = policy.namespace().unwrap_or_default();
            if first_ask(
                asked,
                &format!("SociIndexPolicy/{namespace}/{}", policy.name_any()),
            ) {
                let api: Api<SociIndexPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
                api.patch(
                    &policy.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                metrics
                    .with_label_values(&[SociIndexPolicy::kind(&()).as_ref()])
                    .inc();
            }
        }
    }
    let cluster: Api<ClusterSociIndexPolicy> = Api::all(ctx.client.clone());
    for policy in cluster.list(&ListParams::default()).await?.items {
        if policy_follows(&policy.spec.policy, event)
            && first_ask(
                asked,
                &format!("ClusterSociIndexPolicy/{}", policy.name_any()),
            )
        {
            cluster
                .patch(
                    &policy.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            metrics
                .with_label_values(&[ClusterSociIndexPolicy::kind(&()).as_ref()])
                .inc();
        }
    }
    Ok(())
}

fn first_ask(asked: &mut HashMap<String, Instant>, key: &str) -> bool {
    if asked.contains_key(key) {
        return false;
    }
    asked.insert(key.to_string(), Instant::now());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageSpec;
    use crate::api::policy::{PolicySources, RepositorySource};

    fn event(repository: &str, tag: Option<&str>) -> PushEvent {
        PushEvent {
            registry: "127.0.0.1:5000".into(),
            repository: repository.into(),
            tag: tag.map(str::to_string),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
        }
    }

    fn index(images: &[&str]) -> SociIndexSpec {
        let images = images
            .iter()
            .map(|i| ImageSpec {
                name: "i".into(),
                image: i.to_string(),
            })
            .collect();
        serde_json::from_value::<SociIndexSpec>(serde_json::json!({"images": []}))
            .map(|mut s| {
                s.images = images;
                s
            })
            .unwrap()
    }

    #[test]
    fn a_push_reaches_the_indexes_naming_its_tag_and_the_policies_following_its_repository() {
        let pushed = event("team/app", Some("v2"));
        assert!(index_names(
            &index(&["127.0.0.1:5000/team/app:v2"]),
            &pushed
        ));
        assert!(!index_names(
            &index(&["127.0.0.1:5000/team/app:v1"]),
            &pushed
        ));
        assert!(!index_names(
            &index(&["127.0.0.1:5001/team/app:v2"]),
            &pushed
        ));
        // A digest reference does not move with a push.
        let pinned = format!("127.0.0.1:5000/team/app@sha256:{}", "b".repeat(64));
        assert!(!index_names(&index(&[&pinned]), &pushed));
        // No tag written means latest.
        assert!(index_names(
            &index(&["127.0.0.1:5000/team/app"]),
            &event("team/app", Some("latest"))
        ));

        let policy = |repository: &str| PolicySpec {
            sources: PolicySources {
                repositories: vec![RepositorySource {
                    repository: repository.into(),
                    tags: Default::default(),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(policy_follows(&policy("127.0.0.1:5000/team/app"), &pushed));
        assert!(!policy_follows(
            &policy("127.0.0.1:5000/team/other"),
            &pushed
        ));
        assert!(!policy_follows(&PolicySpec::default(), &pushed));
    }

    #[test]
    fn one_object_is_asked_once_per_burst() {
        let mut asked = HashMap::new();
        assert!(first_ask(&mut asked, "SociIndex/a/b"));
        assert!(!first_ask(&mut asked, "SociIndex/a/b"));
        assert!(first_ask(&mut asked, "SociIndex/a/c"));
    }
}
