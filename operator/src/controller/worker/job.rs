//! The worker Job itself: a [`BuildRequest`] and the operator's worker options become a
//! restricted, owned, labelled and bounded Job running `soci-operator build`.

use super::tenancy::TenantPolicy;
use super::{
    BUILD_KEY_LABEL, IMAGE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNER_UID_LABEL, SOURCE_ANNOTATION,
    TARGET_ANNOTATION,
};
use crate::api::{IndexVersion, SociIndex};
use crate::controller::plan::BuildRequest;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec,
    ProjectedVolumeSource, SeccompProfile, SecretProjection, SecurityContext, Toleration, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_DEADLINE_SECONDS: i64 = 1800;
pub const DEFAULT_BACKOFF_LIMIT: i32 = 1;
/// Finished Jobs (and their Pods, with the result) are kept this long, then removed.
pub const TTL_AFTER_FINISHED_SECONDS: i32 = 3600;
const RESULT_PATH: &str = "/dev/termination-log";
const REGISTRY_CONFIG_DIR: &str = "/var/run/soci/registry";
/// `DOCKER_CONFIG` of an anonymous worker: a directory that holds no `config.json`.
pub const ANONYMOUS_DOCKER_CONFIG: &str = "/var/run/soci/anonymous";
/// Not root, and the conventional "nonroot" id of distroless images.
const WORKER_UID: i64 = 65532;

/// What the operator's configuration adds to every worker Pod (`--worker-pod-config FILE`,
/// YAML or JSON). Lists are appended to what the Job needs; maps are merged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerPodConfig {
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

/// What the controller passes to every worker besides the request.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    pub image: String,
    pub pod: WorkerPodConfig,
    /// `--insecure-registry` values handed on to the worker.
    pub insecure_registries: Vec<String>,
    /// `--allowed-registries` / `--denied-registries` handed on, so the worker refuses what
    /// the controller refuses (also for hosts a registry points it to).
    pub allowed_registries: Vec<String>,
    pub denied_registries: Vec<String>,
    /// Where spec fields may change what a worker Pod is, and where the operator's own
    /// credentials serve.
    pub tenants: TenantPolicy,
}

pub fn build_job(owner: &SociIndex, request: &BuildRequest, options: &WorkerOptions) -> Job {
    let spec = &owner.spec;
    let settings = &request.settings;
    let job_settings = spec.job.clone().unwrap_or_default();
    let uid = owner.metadata.uid.clone().unwrap_or_default();

    let mut args = vec![
        "build".to_string(),
        "--source".into(),
        request.source.clone(),
        "--target".into(),
        request.target.clone(),
        "--result-file".into(),
        RESULT_PATH.into(),
        "--min-layer-size".into(),
        settings.min_layer_size.to_string(),
        "--span-size".into(),
        settings.span_size.to_string(),
        "--index-version".into(),
        match settings.index_version {
            IndexVersion::V1 => "v1".into(),
            IndexVersion::V2 => "v2".into(),
        },
    ];
    if spec.target.as_ref().and_then(|t| t.in_place) == Some(true) {
        args.push("--in-place".into());
    }
    for p in &settings.platforms {
        args.extend(["--platform".into(), p.clone()]);
    }
    for r in &options.insecure_registries {
        args.extend(["--insecure-registry".into(), r.clone()]);
    }
    for g in &options.allowed_registries {
        args.extend(["--allowed-registries".into(), g.clone()]);
    }
    for g in &options.denied_registries {
        args.extend(["--denied-registries".into(), g.clone()]);
    }

    let credentials = spec.credentials.clone().unwrap_or_default();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    // Every docker-config Secret, each as its own config.json in one projected volume; the
    // worker merges them in spec order (the first naming a registry wins).
    if !credentials.secret_refs.is_empty() {
        let mut sources = Vec::new();
        for (i, secret) in credentials.secret_refs.iter().enumerate() {
            args.extend([
                "--registry-config".into(),
                format!("{REGISTRY_CONFIG_DIR}/{i}/config.json"),
            ]);
            sources.push(VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret.name.clone(),
                    items: Some(vec![KeyToPath {
                        key: ".dockerconfigjson".into(),
                        path: format!("{i}/config.json"),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        volumes.push(Volume {
            name: "registry-config".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "registry-config".into(),
            mount_path: REGISTRY_CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    volumes.extend(options.pod.volumes.iter().cloned());
    mounts.extend(options.pod.volume_mounts.iter().cloned());

    let mut labels = options.pod.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(OWNER_UID_LABEL.into(), uid);
    labels.insert(IMAGE_LABEL.into(), request.image_name.clone());
    labels.insert(BUILD_KEY_LABEL.into(), request.build_key());
    let mut annotations = BTreeMap::new();
    annotations.insert(SOURCE_ANNOTATION.into(), request.source.clone());
    annotations.insert(TARGET_ANNOTATION.into(), request.target.clone());
    let mut pod_annotations = options.pod.annotations.clone();
    pod_annotations.extend(annotations.clone());

    // What the spec may add is checked by `admit` before any build is planned; checked again
    // here, so that a Job never carries what the admin did not allow.
    let namespace = owner.metadata.namespace.as_deref().unwrap_or_default();
    let policy = &options.tenants;
    let mut node_selector = options.pod.node_selector.clone();
    let mut tolerations = options.pod.tolerations.clone();
    if policy.scheduling.contains(namespace) {
        node_selector.extend(job_settings.node_selector.clone());
        tolerations.extend(job_settings.tolerations.clone());
    }
    // No Secrets of its own and not a namespace the operator's credentials serve: anonymous.
    // A DOCKER_CONFIG that holds no config.json keeps the worker off any default docker config
    // (and off one the worker Pod config would point every worker at).
    let anonymous =
        credentials.secret_refs.is_empty() && !policy.operator_credentials.contains(namespace);
    let mut env = options.pod.env.clone();
    if anonymous {
        env.retain(|e| e.name != "DOCKER_CONFIG");
        env.push(EnvVar {
            name: "DOCKER_CONFIG".into(),
            value: Some(ANONYMOUS_DOCKER_CONFIG.into()),
            ..Default::default()
        });
    }

    let container = Container {
        name: "build".into(),
        image: Some(options.image.clone()),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        resources: job_settings.resources.clone(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        termination_message_path: Some(RESULT_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(WORKER_UID),
            run_as_group: Some(WORKER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let service_account = credentials
        .service_account_name
        .clone()
        .filter(|_| policy.service_account.contains(namespace));
    let pod_spec = PodSpec {
        restart_policy: Some("Never".into()),
        // No API access unless a ServiceAccount was asked for (its token is workload identity).
        automount_service_account_token: Some(service_account.is_some()),
        service_account_name: service_account,
        host_network: options.pod.host_network,
        priority_class_name: options.pod.priority_class_name.clone(),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        volumes: (!volumes.is_empty()).then_some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(WORKER_UID),
            run_as_group: Some(WORKER_UID),
            fs_group: Some(WORKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(request.job_name.clone()),
            namespace: owner.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: owner.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(job_settings.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT)),
            active_deadline_seconds: Some(
                job_settings
                    .active_deadline_seconds
                    .unwrap_or(DEFAULT_DEADLINE_SECONDS),
            ),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
