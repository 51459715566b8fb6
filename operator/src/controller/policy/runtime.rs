//! Runs the two policy Controllers: the policies' own watches, their children's (a child's
//! status change wakes its policy), and one Pod watch, trimmed to the fields the workloads
//! source reads, that fills the Pod store and wakes the policies that may select the Pod.

use super::reconcile::reconcile;
use super::{PolicyContext, PolicyRef};
use crate::api::SociIndex;
use crate::api::policy::{ClusterSociIndexPolicy, SociIndexPolicy};
use crate::controller::boundary::{Guarded, guarded};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Pod changes come in bursts (a rollout): a policy reconciles once per burst.
const DEBOUNCE: Duration = Duration::from_secs(2);
/// Triggers waiting for a Controller; past this, a trigger is dropped (the next one, or the
/// policy's interval, comes anyway).
const TRIGGER_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

/// What a Pod keeps in the store: its identity, labels, images, pull secrets and resolved
/// digests (most of a Pod's memory is elsewhere).
pub fn trim_pod(pod: &mut Pod) {
    let keep_container = |c: &Container| Container {
        name: c.name.clone(),
        image: c.image.clone(),
        ..Default::default()
    };
    let keep_status = |s: &ContainerStatus| ContainerStatus {
        name: s.name.clone(),
        image_id: s.image_id.clone(),
        image: s.image.clone(),
        ..Default::default()
    };
    pod.metadata = ObjectMeta {
        name: pod.metadata.name.take(),
        namespace: pod.metadata.namespace.take(),
        uid: pod.metadata.uid.take(),
        labels: pod.metadata.labels.take(),
        creation_timestamp: pod.metadata.creation_timestamp.take(),
        resource_version: pod.metadata.resource_version.take(),
        ..Default::default()
    };
    pod.spec = pod.spec.take().map(|s| PodSpec {
        containers: s.containers.iter().map(keep_container).collect(),
        init_containers: s
            .init_containers
            .as_ref()
            .map(|c| c.iter().map(keep_container).collect()),
        image_pull_secrets: s.image_pull_secrets,
        service_account_name: s.service_account_name,
        ..Default::default()
    });
    pod.status = pod.status.take().map(|s| PodStatus {
        container_statuses: s
            .container_statuses
            .as_ref()
            .map(|c| c.iter().map(keep_status).collect()),
        init_container_statuses: s
            .init_container_statuses
            .as_ref()
            .map(|c| c.iter().map(keep_status).collect()),
        ..Default::default()
    });
}

/// The Pod store and the task that fills it, sending each changed Pod's namespace on.
pub fn watch_pods(
    client: kube::Client,
    namespaces: mpsc::Sender<String>,
) -> (Store<Pod>, impl std::future::Future<Output = ()>) {
    let (reader, writer) = reflector::store();
    let pods: Api<Pod> = Api::all(client);
    let task = watcher(pods, watcher::Config::default())
        .default_backoff()
        .modify(trim_pod)
        .reflect(writer)
        // Deleted Pods too: a deletion may be the only event (force deletion, Pod GC).
        .touched_objects()
        .for_each(move |pod| {
            let namespaces = namespaces.clone();
            async move {
                if let Ok(pod) = pod
                    && let Some(namespace) = pod.namespace()
                {
                    let _ = namespaces.try_send(namespace);
                }
            }
        });
    (reader, task)
}

/// The policy that controls a child SociIndex, if it is of `kind`.
fn controller_of(child: &SociIndex, kind: &str) -> Option<(String, String)> {
    child
        .owner_references()
        .iter()
        .find(|o| {
            o.controller == Some(true) && o.kind == kind && o.api_version.starts_with("soci.dev/")
        })
        .map(|o| (o.name.clone(), child.namespace().unwrap_or_default()))
}

/// Runs both Controllers until `shutdown` resolves.
pub async fn run(
    ctx: Arc<PolicyContext>,
    pod_namespaces: mpsc::Receiver<String>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = move || {
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    };
    let client = ctx.main.client.clone();
    let namespaced: Api<SociIndexPolicy> = Api::all(client.clone());
    let cluster: Api<ClusterSociIndexPolicy> = Api::all(client.clone());
    let children: Api<SociIndex> = Api::all(client.clone());
    let children_config = watcher::Config::default().labels(super::plan::POLICY_UID_LABEL);

    let namespaced_controller = Controller::new(namespaced, watcher::Config::default());
    let cluster_controller = Controller::new(cluster, watcher::Config::default());
    let namespaced_store = namespaced_controller.store();
    let cluster_store = cluster_controller.store();

    // One Pod's namespace wakes the namespaced policies there and every cluster policy.
    let (to_namespaced, namespaced_triggers) = mpsc::channel(TRIGGER_QUEUE);
    let (to_cluster, cluster_triggers) = mpsc::channel(TRIGGER_QUEUE);
    let to_cluster_by_namespace = to_cluster.clone();
    let fan_out = {
        let namespaced_store = namespaced_store.clone();
        let cluster_store = cluster_store.clone();
        let mut pod_namespaces = pod_namespaces;
        async move {
            while let Some(namespace) = pod_namespaces.recv().await {
                for policy in namespaced_store.state() {
                    if policy.namespace().as_deref() == Some(namespace.as_str())
                        && policy.spec.policy.sources.workloads.is_some()
                    {
                        let _ = to_namespaced.try_send(ObjectRef::from_obj(policy.as_ref()));
                    }
                }
                for policy in cluster_store.state() {
                    if policy.spec.policy.sources.workloads.is_some() {
                        let _ = to_cluster.try_send(ObjectRef::from_obj(policy.as_ref()));
                    }
                }
            }
        }
    };
    let fan_out = tokio::spawn(fan_out);
    let namespace_labels = tokio::spawn(wake_on_namespace_labels(
        client.clone(),
        cluster_store.clone(),
        to_cluster_by_namespace,
    ));
    let config = kube::runtime::controller::Config::default()
        .concurrency(4)
        .debounce(DEBOUNCE);

    let a = namespaced_controller
        .with_config(config.clone())
        .watches(children.clone(), children_config.clone(), |child| {
            controller_of(&child, "SociIndexPolicy")
                .map(|(name, namespace)| ObjectRef::new(&name).within(&namespace))
        })
        .reconcile_on(receive(namespaced_triggers))
        .graceful_shutdown_on(stopped())
        .run(
            |policy, ctx: Arc<PolicyContext>| async move {
                run_guarded(&ctx, PolicyRef::Namespaced(&policy)).await
            },
            |policy, error, ctx| error_policy(&ctx, policy.uid(), &policy.name_any(), error),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let b = cluster_controller
        .with_config(config)
        .watches(children, children_config, |child| {
            controller_of(&child, "ClusterSociIndexPolicy").map(|(name, _)| ObjectRef::new(&name))
        })
        .reconcile_on(receive(cluster_triggers))
        .graceful_shutdown_on(stopped())
        .run(
            |policy, ctx: Arc<PolicyContext>| async move {
                run_guarded(&ctx, PolicyRef::Cluster(&policy)).await
            },
            |policy, error, ctx| error_policy(&ctx, policy.uid(), &policy.name_any(), error),
            ctx.clone(),
        )
        .for_each(|_| async {});
    tracing::info!("policy controllers starting");
    futures_util::future::join(a, b).await;
    fan_out.abort();
    namespace_labels.abort();
}

/// A namespace whose labels change may enter or leave a cluster policy's `namespaceSelector`
/// without any Pod changing: such a change (and each namespace's first sighting) wakes the
/// cluster policies that select namespaces. Metadata only: a Namespace's spec and status are
/// not read.
async fn wake_on_namespace_labels(
    client: kube::Client,
    cluster_store: Store<ClusterSociIndexPolicy>,
    to_cluster: mpsc::Sender<ObjectRef<ClusterSociIndexPolicy>>,
) {
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let changes = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .predicate_filter(predicates::labels, Default::default());
    let mut changes = std::pin::pin!(changes);
    while let Some(changed) = changes.next().await {
        if changed.is_err() {
            continue;
        }
        for policy in cluster_store.state() {
            let selects_namespaces = policy.spec.namespace_selector.is_some();
            if selects_namespaces && policy.spec.policy.sources.workloads.is_some() {
                let _ = to_cluster.try_send(ObjectRef::from_obj(policy.as_ref()));
            }
        }
    }
}

/// One reconcile inside the boundary: a panic or a timeout ends this one alone.
async fn run_guarded(ctx: &PolicyContext, policy: PolicyRef<'_>) -> Result<Action, PolicyError> {
    let uid = policy.meta().uid.clone().unwrap_or_default();
    match guarded(reconcile(ctx, policy), ctx.main.reconcile_timeout).await {
        Guarded::Finished(Ok(action)) => {
            ctx.main.retries.succeeded(&uid);
            Ok(action)
        }
        Guarded::Finished(Err(e)) => Err(PolicyError(format!("{e:#}"))),
        Guarded::Panicked(message) => {
            ctx.main.metrics.reconcile_panics.inc();
            Err(PolicyError(format!("the reconcile panicked: {message}")))
        }
        Guarded::TimedOut => Err(PolicyError(
            "the reconcile ran past --reconcile-timeout".into(),
        )),
    }
}

fn receive<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

fn error_policy(
    ctx: &PolicyContext,
    uid: Option<String>,
    name: &str,
    error: &PolicyError,
) -> Action {
    let retry = ctx.main.retries.failed(&uid.unwrap_or_default());
    tracing::warn!(policy = %name, error = %error, ?retry, "policy reconcile failed");
    Action::requeue(retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_pod_keeps_what_the_workloads_source_reads_and_nothing_else() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "web"},
                "annotations": {"big": "x".repeat(10_000)},
                "managedFields": [{"manager": "kubectl"}],
                "creationTimestamp": "2026-12-02T10:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "r/a:v1",
                        "env": [{"name": "E", "value": "v"}], "args": ["--x"]}],
                     "initContainers": [{"name": "init", "image": "r/i:v1"}],
                     "imagePullSecrets": [{"name": "pull"}],
                     "serviceAccountName": "sa",
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running",
                       "containerStatuses": [{"name": "app", "image": "r/a:v1", "imageID": "r/a@sha256:00",
                           "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        let mut trimmed = pod.clone();
        trim_pod(&mut trimmed);
        assert!(trimmed.metadata.annotations.is_none());
        assert!(trimmed.metadata.managed_fields.is_none());
        assert_eq!(trimmed.metadata.labels, pod.metadata.labels);
        let spec = trimmed.spec.as_ref().unwrap();
        assert!(spec.containers[0].env.is_none() && spec.volumes.is_none());
        assert_eq!(spec.containers[0].image.as_deref(), Some("r/a:v1"));
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "init");
        assert_eq!(spec.image_pull_secrets.as_ref().unwrap()[0].name, "pull");
        assert_eq!(spec.service_account_name.as_deref(), Some("sa"));
        let status = trimmed.status.as_ref().unwrap();
        assert!(status.phase.is_none());
        assert_eq!(
            status.container_statuses.as_ref().unwrap()[0].image_id,
            "r/a@sha256:00"
        );
        assert!(
            serde_json::to_string(&trimmed).unwrap().len() * 4
                < serde_json::to_string(&pod).unwrap().len()
        );
    }
}
