//! Apply: the plan's Jobs deleted and created. Runs while the caller holds the Job-slot lock,
//! so the slots the plan counted are the ones taken; Events wait until the lock is released.

use super::plan::Plan;
use super::{Context, worker};
use crate::api::SociIndex;
use anyhow::Context as _;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use std::time::Duration;

/// What applying did, for the steps after it.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Set when a Job could not be created yet (the old one is still being deleted).
    pub retry_after: Option<Duration>,
    /// One note per Job created (the `BuildStarted` Events).
    pub started: Vec<String>,
}

/// Deletes the plan's obsolete Jobs (gone already is fine), then creates its new ones.
pub async fn jobs(ctx: &Context, object: &SociIndex, planned: &Plan) -> anyhow::Result<Applied> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut applied = Applied::default();
    for job_name in &planned.delete {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(job_name, &params).await {
            Ok(_) => {
                ctx.metrics
                    .jobs_created
                    .with_label_values(&["deleted"])
                    .inc();
                tracing::info!(%namespace, %name, job = %job_name, "deleted worker Job");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).context(format!("deleting Job {job_name}")),
        }
    }
    let uid = object.metadata.uid.clone().unwrap_or_default();
    for request in &planned.create {
        let job = worker::build_job(object, request, &ctx.worker);
        match api.create(&PostParams::default(), &job).await {
            Ok(_) => {
                ctx.jobs.created(
                    &namespace,
                    &request.job_name,
                    &request.source,
                    &request.build_key(),
                    &uid,
                );
                ctx.metrics
                    .jobs_created
                    .with_label_values(&["created"])
                    .inc();
                tracing::info!(%namespace, %name, job = %request.job_name, image = %request.image_name, source = %request.source, target = %request.target, "created worker Job");
                applied.started.push(format!(
                    "Job {} is building image {} ({} -> {})",
                    request.job_name, request.image_name, request.source, request.target
                ));
            }
            // Still there (being deleted after a transient failure): try again shortly.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                applied.retry_after = Some(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context(format!("creating Job {}", request.job_name)),
        }
    }
    Ok(applied)
}
