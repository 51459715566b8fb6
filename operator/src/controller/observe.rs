//! Observe: what the registry, the credentials, the Jobs and their Pods say about one
//! SociIndex, as plain facts for the plan. Registry failures become facts here (an image's
//! [`Failure`](super::plan::Failure)); only Kubernetes API failures are errors.

use super::plan::{self, ImageObservation, ObservedJob};
use super::{Context, credentials, registry_check, worker};
use crate::api::SociIndex;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use std::time::Instant;

/// Who the object is: the keys every step uses.
pub struct Identity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Identity {
    pub fn of(object: &SociIndex) -> anyhow::Result<Self> {
        Ok(Self {
            namespace: object
                .namespace()
                .context("SociIndex without a namespace")?,
            name: object.name_any(),
            uid: object
                .metadata
                .uid
                .clone()
                .context("SociIndex without a uid")?,
        })
    }
}

/// Everything the plan needs to know that is not in the object itself.
pub struct Observed {
    /// One per spec image, in spec order; empty while suspended.
    pub images: Vec<ImageObservation>,
    /// The object's own worker Jobs.
    pub jobs: Vec<ObservedJob>,
}

/// Observes the registry for every spec image, then (once the Job and SociIndex stores are
/// listed, right after a restart too) the object's Jobs, and marks the targets another
/// namespace's SociIndex holds.
pub async fn observe(
    ctx: &Context,
    object: &SociIndex,
    who: &Identity,
    reconcile_request: Option<&str>,
) -> anyhow::Result<Observed> {
    let mut images = if object.spec.suspend {
        vec![]
    } else {
        images(ctx, object, who, reconcile_request).await
    };
    ctx.jobs.wait_ready().await;
    // A target another namespace's SociIndex named first stays that object's.
    let claims = plan::claims_outside(
        ctx.jobs.indexes().iter().map(|o| o.as_ref()),
        &who.namespace,
    );
    plan::apply_target_conflicts(object, &mut images, &claims);
    let jobs = jobs(ctx, who).await?;
    Ok(Observed { images, jobs })
}

/// Each spec image: its source resolved and its target checked, with the object's own Secrets
/// (else anonymous, or the operator's credentials where the admin allows). A verified image
/// whose status was written for this very spec takes the cheap path (one HEAD per tag) until
/// its full check is due.
async fn images(
    ctx: &Context,
    object: &SociIndex,
    who: &Identity,
    reconcile_request: Option<&str>,
) -> Vec<ImageObservation> {
    let spec = &object.spec;
    let settings = plan::BuildSettings::from_spec(spec);
    // A Secret that is missing or unusable is every image's failure, and so is a spec asking
    // for more than the admin allows (before any look-up).
    let registry = match worker::admit(&who.namespace, spec, &ctx.worker.tenants) {
        Ok(()) => {
            credentials::registry_for(
                &ctx.client,
                &ctx.registry,
                &ctx.credentials,
                &who.namespace,
                spec.credentials.as_ref(),
                &ctx.worker.tenants.operator_credentials,
            )
            .await
        }
        Err(refused) => Err(refused),
    };
    let previous = object
        .status
        .as_ref()
        .filter(|s| plan::status_is_current(s, object.metadata.generation, reconcile_request));
    let mut images = Vec::new();
    for image in &spec.images {
        if let Ok(client) = &registry
            && let Some(previous) = previous
            && let Some(before) = previous.images.iter().find(|s| s.name == image.name)
            && let Some(settled) = registry_check::settled_image(
                &image.name,
                &image.image,
                spec.target.as_ref(),
                before,
            )
            && !ctx.full_checks.due(&who.uid, &image.name, Instant::now())
            && let Some(observation) = registry_check::recheck_settled(client, &settled).await
        {
            ctx.metrics
                .image_checks
                .with_label_values(&["settled"])
                .inc();
            images.push(observation);
            continue;
        }
        ctx.metrics.image_checks.with_label_values(&["full"]).inc();
        let resolved = match &registry {
            Ok(client) => {
                registry_check::resolve(client, &image.image, spec.target.as_ref(), &image.name)
                    .await
            }
            Err(failure) => Err(failure.clone()),
        };
        let target = match (&resolved, &registry) {
            (Ok(r), Ok(client)) => Some(registry_check::target_binding(client, r, &settings).await),
            _ => None,
        };
        if let Some(Ok(plan::TargetCheck::Bound { .. })) = &target {
            ctx.full_checks
                .checked(&who.uid, &image.name, Instant::now());
        }
        images.push(ImageObservation {
            name: image.name.clone(),
            resolved,
            target,
        });
    }
    images
}

/// The object's worker Jobs from the store; a failed one with its Pods (their termination
/// message is the worker's result).
async fn jobs(ctx: &Context, who: &Identity) -> anyhow::Result<Vec<ObservedJob>> {
    let mut jobs = Vec::new();
    for job in ctx.jobs.owned(&who.namespace, &who.uid) {
        let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0;
        let pods = if failed {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &who.namespace);
            pods.list(
                &ListParams::default()
                    .labels(&format!("batch.kubernetes.io/job-name={}", job.name_any())),
            )
            .await
            .context("listing worker Pods")?
            .items
        } else {
            vec![]
        };
        jobs.extend(worker::observe_job(&job, &pods));
    }
    Ok(jobs)
}
