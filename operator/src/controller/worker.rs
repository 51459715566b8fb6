//! The worker Job: how a [`BuildRequest`] becomes a restricted Job running `soci-operator
//! build`, how the worker reports (JSON in its termination message), and how a finished Job is
//! read back into a [`JobState`].

use super::plan::{BuildRequest, Failure, FailureClass, JobState, ObservedJob};
use crate::api::{IndexVersion, SociIndex, SociIndexSpec};
use crate::reason::Reason;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, KeyToPath, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    ProjectedVolumeSource, SeccompProfile, SecretProjection, SecurityContext, Toleration, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "soci-operator";
pub const OWNER_UID_LABEL: &str = "soci.dev/owner-uid";
pub const IMAGE_LABEL: &str = "soci.dev/image";
/// [`super::naming::build_key`]: Jobs of other SociIndexes building the same bytes are found by it.
pub const BUILD_KEY_LABEL: &str = "soci.dev/build-key";
pub const SOURCE_ANNOTATION: &str = "soci.dev/source";
pub const TARGET_ANNOTATION: &str = "soci.dev/target";
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

/// Namespaces named by a flag: none (the default), some, or every one (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceSet {
    #[default]
    None,
    Some(std::collections::BTreeSet<String>),
    All,
}

impl NamespaceSet {
    /// The flag's values: namespace names, or `*` for every namespace.
    pub fn from_values(values: &[String]) -> Self {
        if values.iter().any(|v| v == "*") {
            return Self::All;
        }
        let names: std::collections::BTreeSet<String> = values
            .iter()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if names.is_empty() {
            Self::None
        } else {
            Self::Some(names)
        }
    }

    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::None => false,
            Self::Some(names) => names.contains(namespace),
            Self::All => true,
        }
    }
}

/// What the admin lets a tenant's spec decide. Creating a SociIndex must give no more power
/// than the tenant had: a spec-given ServiceAccount would run the worker with that account's
/// rights and token, node selectors and tolerations would place it on nodes kept for others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPolicy {
    /// `--allow-spec-service-account`: where `spec.credentials.serviceAccountName` is honoured.
    pub service_account: NamespaceSet,
    /// `--allow-spec-scheduling`: where `spec.job.nodeSelector` and `spec.job.tolerations` are.
    pub scheduling: NamespaceSet,
    /// `--operator-credentials-namespaces`: where a SociIndex without `secretRefs` uses the
    /// operator's own `--registry-config` (elsewhere it is anonymous).
    pub operator_credentials: NamespaceSet,
}

/// Whether the spec asks only for what the admin allows in `namespace`; otherwise every image
/// stalls with `SpecNotAllowed` (nothing is looked up, no Job is made).
pub fn admit(namespace: &str, spec: &SociIndexSpec, policy: &TenantPolicy) -> Result<(), Failure> {
    let refused = |field: &str, flag: &str, value: &str| {
        Failure::permanent(
            Reason::SpecNotAllowed,
            format!(
                "{field} {value} is not allowed in namespace {namespace}: the operator honours it only in the namespaces {flag} names; remove it, or ask the cluster admin"
            ),
        )
    };
    if let Some(account) = spec
        .credentials
        .as_ref()
        .and_then(|c| c.service_account_name.as_deref())
        && !policy.service_account.contains(namespace)
    {
        return Err(refused(
            "spec.credentials.serviceAccountName",
            "--allow-spec-service-account",
            &format!("{account:?}"),
        ));
    }
    if let Some(job) = &spec.job
        && !policy.scheduling.contains(namespace)
    {
        if !job.node_selector.is_empty() {
            let keys: Vec<&str> = job.node_selector.keys().map(String::as_str).collect();
            return Err(refused(
                "spec.job.nodeSelector",
                "--allow-spec-scheduling",
                &format!("({})", keys.join(", ")),
            ));
        }
        if !job.tolerations.is_empty() {
            return Err(refused(
                "spec.job.tolerations",
                "--allow-spec-scheduling",
                &format!("({} given)", job.tolerations.len()),
            ));
        }
    }
    Ok(())
}

/// The worker's report, written as JSON to its termination message (at most 4 KiB).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    pub ok: bool,
    /// `transient` or `permanent` when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// The `LazyLoadReady` reason when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
    #[serde(default)]
    pub soci_indexes: usize,
    #[serde(default)]
    pub layers_indexed: usize,
    #[serde(default)]
    pub layers_skipped: usize,
    /// Compressed bytes of the layers indexed (absent from older workers: 0).
    #[serde(default)]
    pub bytes_indexed: u64,
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

/// A Job and its last Pod as the plan sees them. The Pod's termination message (the worker's
/// JSON result) classifies a failure; without it the exit code does, then the Job's reason.
pub fn observe_job(job: &Job, pods: &[Pod]) -> Option<ObservedJob> {
    let labels = job.metadata.labels.as_ref()?;
    let image_name = labels.get(IMAGE_LABEL)?.clone();
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let true_condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let finished_at = status.completion_time.as_ref().map(|t| t.0).or_else(|| {
        true_condition("Failed").and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
    });
    let state = if true_condition("Complete").is_some() {
        JobState::Succeeded
    } else if let Some(failed) = true_condition("Failed") {
        JobState::Failed(job_failure(
            failed.reason.as_deref().unwrap_or(""),
            failed.message.as_deref().unwrap_or(""),
            last_termination(pods),
        ))
    } else {
        JobState::Running
    };
    Some(ObservedJob {
        name: job.metadata.name.clone()?,
        image_name,
        state,
        finished_at,
        deleting: job.metadata.deletion_timestamp.is_some(),
    })
}

/// The (exit code, message) of the newest terminated worker container among the Job's Pods.
fn last_termination(pods: &[Pod]) -> Option<(i32, String)> {
    pods.iter()
        .filter_map(|p| {
            let started = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let terminated = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.clone())?;
            Some((started, terminated))
        })
        .max_by_key(|(started, _)| *started)
        .map(|(_, t)| (t.exit_code, t.message.unwrap_or_default()))
}

pub fn job_failure(
    job_reason: &str,
    job_message: &str,
    termination: Option<(i32, String)>,
) -> Failure {
    if job_reason == "DeadlineExceeded" {
        return Failure::permanent(
            Reason::DeadlineExceeded,
            format!(
                "the build ran past spec.job.activeDeadlineSeconds and was stopped ({job_message})"
            ),
        );
    }
    let Some((exit_code, message)) = termination else {
        return Failure::transient(
            Reason::BuildFailed,
            format!("the worker failed without a result ({job_reason}: {job_message})"),
        );
    };
    if let Ok(result) = serde_json::from_str::<WorkerResult>(message.trim()) {
        let class = match result.error_class.as_deref() {
            Some(text) if text == FailureClass::Transient.as_str() => FailureClass::Transient,
            _ => FailureClass::Permanent,
        };
        return Failure {
            class,
            // A reason this version does not know (a newer worker) is a build failure.
            reason: result
                .reason
                .as_deref()
                .and_then(Reason::parse)
                .unwrap_or(Reason::BuildFailed),
            message: result
                .message
                .unwrap_or_else(|| format!("exit code {exit_code}")),
        };
    }
    // No JSON: the message is the tail of the log (FallbackToLogsOnError).
    let tail: String = message
        .trim()
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let text = format!("exit code {exit_code}: {tail}");
    Failure {
        class: FailureClass::of_exit_code(exit_code),
        reason: Reason::BuildFailed,
        message: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImageSpec, JobSettings, SociIndexSpec};
    use crate::controller::plan::BuildSettings;

    fn owner() -> SociIndex {
        let mut o = SociIndex::new(
            "apps",
            SociIndexSpec {
                images: vec![ImageSpec {
                    name: "web".into(),
                    image: "127.0.0.1:5000/web:v1".into(),
                }],
                target: None,
                platforms: vec!["linux/amd64".into()],
                min_layer_size: None,
                span_size: None,
                index_version: None,
                credentials: None,
                interval: None,
                suspend: false,
                deletion_policy: None,
                job: Some(JobSettings {
                    active_deadline_seconds: Some(600),
                    ..Default::default()
                }),
            },
        );
        o.metadata.namespace = Some("team".into());
        o.metadata.uid = Some("uid-1".into());
        o
    }

    fn request() -> BuildRequest {
        BuildRequest {
            job_name: "soci-build-0123".into(),
            image_name: "web".into(),
            source: "127.0.0.1:5000/web@sha256:aa".into(),
            source_digest: "sha256:aa".into(),
            target: "127.0.0.1:5000/web:v1-soci".into(),
            settings: BuildSettings::from_spec(&owner().spec),
        }
    }

    #[test]
    fn worker_job_is_restricted_owned_labelled_and_bounded() {
        let options = WorkerOptions {
            image: "reg/soci-operator:1".into(),
            pod: WorkerPodConfig {
                host_network: Some(true),
                env: vec![EnvVar {
                    name: "KUBERNETES_SERVICE_HOST".into(),
                    value: Some("127.0.0.1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            insecure_registries: vec!["reg".into()],
            allowed_registries: vec!["*.corp.example".into()],
            denied_registries: vec!["bad.corp.example".into()],
            tenants: TenantPolicy::default(),
        };
        let job = build_job(&owner(), &request(), &options);
        let meta = &job.metadata;
        assert_eq!(meta.name.as_deref(), Some("soci-build-0123"));
        assert_eq!(meta.namespace.as_deref(), Some("team"));
        let owner_ref = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner_ref.kind.as_str(), owner_ref.controller),
            ("SociIndex", Some(true))
        );
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[OWNER_UID_LABEL], "uid-1");
        assert_eq!(labels[IMAGE_LABEL], "web");
        assert_eq!(labels[BUILD_KEY_LABEL].len(), 24);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.backoff_limit, Some(DEFAULT_BACKOFF_LIMIT));
        assert!(spec.ttl_seconds_after_finished.is_some());
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.host_network, Some(true));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let args = c.args.as_ref().unwrap().join(" ");
        assert!(args.starts_with(
            "build --source 127.0.0.1:5000/web@sha256:aa --target 127.0.0.1:5000/web:v1-soci"
        ));
        assert!(args.contains("--platform linux/amd64"));
        assert!(args.contains("--insecure-registry reg"));
        assert!(args.contains("--allowed-registries *.corp.example"));
        assert!(args.contains("--denied-registries bad.corp.example"));
        assert_eq!(c.env.as_ref().unwrap()[0].name, "KUBERNETES_SERVICE_HOST");
    }

    /// An in-place target tells the worker to re-check the tag before rewriting it.
    #[test]
    fn an_in_place_target_makes_the_worker_recheck_its_tag() {
        let args = |o: &SociIndex| {
            let job = build_job(o, &request(), &WorkerOptions::default());
            job.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap()
        };
        let in_place = "--in-place".to_string();
        assert!(!args(&owner()).contains(&in_place));
        let mut o = owner();
        o.spec.target = Some(crate::api::TargetSpec {
            in_place: Some(true),
            ..Default::default()
        });
        assert!(args(&o).contains(&in_place));
    }

    #[test]
    fn a_service_account_and_a_secret_reach_the_worker() {
        let mut o = owner();
        o.spec.credentials = Some(crate::api::Credentials {
            secret_refs: vec![
                crate::api::SecretRef {
                    name: "pull".into(),
                },
                crate::api::SecretRef {
                    name: "push".into(),
                },
            ],
            service_account_name: Some("builder".into()),
        });
        let allowed = WorkerOptions {
            tenants: TenantPolicy {
                service_account: NamespaceSet::from_values(&["team".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let job = build_job(&o, &request(), &allowed);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(true));
        assert_eq!(pod.service_account_name.as_deref(), Some("builder"));
        let volume = &pod.volumes.unwrap()[0];
        let projected = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
        let names: Vec<(&str, &str)> = projected
            .iter()
            .map(|p| {
                let s = p.secret.as_ref().unwrap();
                (s.name.as_str(), s.items.as_ref().unwrap()[0].path.as_str())
            })
            .collect();
        assert_eq!(
            names,
            [("pull", "0/config.json"), ("push", "1/config.json")]
        );
        let args = pod.containers[0].args.as_ref().unwrap().join(" ");
        assert!(
            args.contains(&format!(
                "--registry-config {REGISTRY_CONFIG_DIR}/0/config.json --registry-config {REGISTRY_CONFIG_DIR}/1/config.json"
            )),
            "{args}"
        );
    }

    #[test]
    fn failures_are_classified_from_result_exit_code_and_job_reason() {
        let result = serde_json::to_string(&WorkerResult {
            ok: false,
            error_class: Some("permanent".into()),
            reason: Some(Reason::ImageNotFound.to_string()),
            message: Some("no such manifest".into()),
            ..Default::default()
        })
        .unwrap();
        let f = job_failure("BackoffLimitExceeded", "", Some((1, result)));
        assert_eq!(
            (f.class, f.reason),
            (FailureClass::Permanent, Reason::ImageNotFound)
        );
        let f = job_failure("BackoffLimitExceeded", "", Some((3, "error: 503".into())));
        assert_eq!(f.class, FailureClass::Transient);
        let f = job_failure("BackoffLimitExceeded", "", Some((1, "error: bad".into())));
        assert_eq!(
            (f.class, f.reason),
            (FailureClass::Permanent, Reason::BuildFailed)
        );
        let f = job_failure("DeadlineExceeded", "too slow", None);
        assert_eq!(
            (f.class, f.reason),
            (FailureClass::Permanent, Reason::DeadlineExceeded)
        );
        let f = job_failure("BackoffLimitExceeded", "", None);
        assert_eq!(f.class, FailureClass::Transient);
    }

    #[test]
    fn results_without_byte_counts_still_parse() {
        let old: WorkerResult =
            serde_json::from_str(r#"{"ok":true,"sociIndexes":1,"layersIndexed":2}"#).unwrap();
        assert_eq!((old.layers_indexed, old.bytes_indexed), (2, 0));
        let new: WorkerResult =
            serde_json::from_str(r#"{"ok":true,"bytesIndexed":12582912}"#).unwrap();
        assert_eq!(new.bytes_indexed, 12 << 20);
    }

    #[test]
    fn pod_config_rejects_unknown_fields() {
        let ok: WorkerPodConfig =
            serde_yaml::from_str("hostNetwork: true\nenv: [{name: A, value: b}]\n").unwrap();
        assert_eq!(ok.host_network, Some(true));
        assert!(serde_yaml::from_str::<WorkerPodConfig>("hostNetwrok: true\n").is_err());
    }

    fn with_service_account(o: &mut SociIndex) {
        o.spec.credentials = Some(crate::api::Credentials {
            secret_refs: vec![],
            service_account_name: Some("cluster-admin-ish".into()),
        });
    }

    fn with_scheduling(o: &mut SociIndex, selector: bool, tolerations: bool) {
        let job = o.spec.job.get_or_insert_with(Default::default);
        if selector {
            job.node_selector = [(
                "node-role.kubernetes.io/control-plane".to_string(),
                String::new(),
            )]
            .into();
        }
        if tolerations {
            job.tolerations = vec![Toleration {
                key: Some("node-role.kubernetes.io/control-plane".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }];
        }
    }

    #[test]
    fn spec_fields_that_change_what_a_worker_pod_can_be_need_the_admins_leave() {
        let deny = TenantPolicy::default();
        type Case = (&'static str, fn(&mut SociIndex), &'static str);
        let cases: Vec<Case> = vec![
            (
                "serviceAccountName",
                with_service_account,
                "--allow-spec-service-account",
            ),
            (
                "nodeSelector",
                |o| with_scheduling(o, true, false),
                "--allow-spec-scheduling",
            ),
            (
                "tolerations",
                |o| with_scheduling(o, false, true),
                "--allow-spec-scheduling",
            ),
        ];
        for (what, set, flag) in cases {
            let mut o = owner();
            set(&mut o);
            let refused = admit("team", &o.spec, &deny).expect_err(what);
            assert_eq!(
                (refused.class, refused.reason),
                (FailureClass::Permanent, Reason::SpecNotAllowed),
                "{what}"
            );
            assert!(refused.message.contains(what), "{}", refused.message);
            assert!(refused.message.contains(flag), "{}", refused.message);
            assert!(
                refused.message.contains("namespace team"),
                "{}",
                refused.message
            );
            // Allowed for this namespace, or for every one.
            let allow = |names: &[&str]| {
                let set = NamespaceSet::from_values(
                    &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                );
                TenantPolicy {
                    service_account: set.clone(),
                    scheduling: set,
                    ..Default::default()
                }
            };
            assert!(admit("team", &o.spec, &allow(&["team"])).is_ok(), "{what}");
            assert!(admit("team", &o.spec, &allow(&["*"])).is_ok(), "{what}");
            assert!(
                admit("team", &o.spec, &allow(&["other"])).is_err(),
                "{what}"
            );
        }
        // Resources and deadlines are the tenant's own quota's business: always accepted.
        assert!(admit("team", &owner().spec, &deny).is_ok());
    }

    #[test]
    fn a_worker_job_never_carries_what_the_admin_did_not_allow() {
        let mut o = owner();
        with_service_account(&mut o);
        with_scheduling(&mut o, true, true);
        let options = WorkerOptions {
            pod: WorkerPodConfig {
                node_selector: [("pool".to_string(), "build".to_string())].into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let pod = build_job(&o, &request(), &options)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.service_account_name, None);
        assert_eq!(pod.automount_service_account_token, Some(false));
        // The admin's own worker Pod config still applies; the spec's additions do not.
        assert_eq!(
            pod.node_selector,
            Some([("pool".to_string(), "build".to_string())].into())
        );
        assert_eq!(pod.tolerations, None);

        let allowed = WorkerOptions {
            tenants: TenantPolicy {
                service_account: NamespaceSet::All,
                scheduling: NamespaceSet::All,
                ..Default::default()
            },
            ..options
        };
        let pod = build_job(&o, &request(), &allowed)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("cluster-admin-ish")
        );
        assert_eq!(pod.node_selector.unwrap().len(), 2);
        assert_eq!(pod.tolerations.unwrap().len(), 1);
    }

    fn docker_config(job: &Job) -> Vec<Option<String>> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "DOCKER_CONFIG")
            .map(|e| e.value.clone())
            .collect()
    }

    #[test]
    fn a_worker_without_secrets_is_anonymous_unless_its_namespace_may_use_the_operators() {
        // The admin's worker Pod config points every worker at a config of its own.
        let options = WorkerOptions {
            pod: WorkerPodConfig {
                env: vec![EnvVar {
                    name: "DOCKER_CONFIG".into(),
                    value: Some("/etc/operator-docker".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let anonymous = build_job(&owner(), &request(), &options);
        assert_eq!(
            docker_config(&anonymous),
            [Some(ANONYMOUS_DOCKER_CONFIG.to_string())]
        );
        let args = anonymous
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        assert!(!args.iter().any(|a| a == "--registry-config"), "{args:?}");

        let trusted = WorkerOptions {
            tenants: TenantPolicy {
                operator_credentials: NamespaceSet::from_values(&["team".into()]),
                ..Default::default()
            },
            ..options.clone()
        };
        assert_eq!(
            docker_config(&build_job(&owner(), &request(), &trusted)),
            [Some("/etc/operator-docker".to_string())]
        );

        let mut with_secret = owner();
        with_secret.spec.credentials = Some(crate::api::Credentials {
            secret_refs: vec![crate::api::SecretRef {
                name: "pull".into(),
            }],
            service_account_name: None,
        });
        assert_eq!(
            docker_config(&build_job(&with_secret, &request(), &options)),
            [Some("/etc/operator-docker".to_string())],
            "its own Secrets come first (--registry-config); the admin's config stays as configured"
        );
    }

    #[test]
    fn namespace_sets_from_flag_values() {
        assert_eq!(NamespaceSet::from_values(&[]), NamespaceSet::None);
        assert!(!NamespaceSet::None.contains("team"));
        let some = NamespaceSet::from_values(&["a".into(), " b ".into(), "".into()]);
        assert!(some.contains("a") && some.contains("b") && !some.contains("c"));
        assert_eq!(
            NamespaceSet::from_values(&["a".into(), "*".into()]),
            NamespaceSet::All
        );
        assert!(NamespaceSet::All.contains("anything"));
    }
}
