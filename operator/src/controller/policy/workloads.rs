//! The `workloads` source, pure: the images Pods run (containers and init containers, as
//! written and pinned to the digest the node resolved) and the images of CronJobs' templates
//! (their Pods come and go), as candidates.

use super::plan::{Candidate, WORKLOADS_SOURCE};
use crate::registry::RegistryRef;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec, ServiceAccount};
use std::collections::{BTreeMap, BTreeSet};

/// How a Pod's images are read.
pub struct WorkloadOptions<'a> {
    pub include_init_containers: bool,
    /// Use the Pods' pull secrets (and their ServiceAccounts'): only when the children live in
    /// the Pods' own namespace.
    pub pull_secrets: bool,
    /// The ServiceAccounts of the namespace, by name (for their `imagePullSecrets`).
    pub service_accounts: &'a BTreeMap<String, ServiceAccount>,
}

/// The digest in a container status's `imageID` (`repo@sha256:…`, `docker-pullable://…`);
/// `None` for a bare image id, which names a config, not a manifest.
pub fn resolved_digest(image_id: &str) -> Option<String> {
    let (_, digest) = image_id.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| digest.to_string())
}

/// The normalised reference a Pod names (`docker.io/library/nginx:latest`), or `None` when it
/// is not a reference we could index.
pub fn normalise(image: &str) -> Option<RegistryRef> {
    let mut r = RegistryRef::parse(image).ok()?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    Some(r)
}

fn key_of(r: &RegistryRef) -> String {
    let mut key = r.clone();
    if key.tag.is_some() {
        key.digest = None;
    }
    key.to_string()
}

/// The candidates of one Pod.
pub fn pod_candidates(pod: &Pod, options: &WorkloadOptions) -> Vec<Candidate> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let status = pod.status.as_ref();
    let statuses: Vec<&ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .collect();
    let secrets = if options.pull_secrets {
        pull_secrets(spec, options.service_accounts)
    } else {
        BTreeSet::new()
    };
    let seen = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    containers(spec, options.include_init_containers)
        .filter_map(|(name, image)| {
            let reference = normalise(image)?;
            let written_digest = reference.digest.clone();
            let resolved = statuses
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| resolved_digest(&s.image_id));
            Some(Candidate {
                reference: key_of(&reference),
                // What the Pod names by digest is what runs.
                digest: written_digest.or(resolved),
                source: WORKLOADS_SOURCE.into(),
                pull_secrets: secrets.clone(),
                seen,
            })
        })
        .collect()
}

/// The candidates of a CronJob's template (no digest: its next Pods resolve the tag).
pub fn cron_job_candidates(cron_job: &CronJob, options: &WorkloadOptions) -> Vec<Candidate> {
    match cron_job
        .spec
        .job_template
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
    {
        Some(spec) => template_candidates(spec, options),
        None => Vec::new(),
    }
}

/// The candidates of a workload's Pod template (a Deployment, StatefulSet, DaemonSet or
/// CronJob): what its Pods will run, also while it has none (scaled to zero, between runs).
/// No digest: the Pods that run it pin theirs.
pub fn template_candidates(spec: &PodSpec, options: &WorkloadOptions) -> Vec<Candidate> {
    let secrets = if options.pull_secrets {
        pull_secrets(spec, options.service_accounts)
    } else {
        BTreeSet::new()
    };
    containers(spec, options.include_init_containers)
        .filter_map(|(_, image)| {
            let reference = normalise(image)?;
            Some(Candidate {
                reference: key_of(&reference),
                digest: reference.digest.clone(),
                source: WORKLOADS_SOURCE.into(),
                pull_secrets: secrets.clone(),
                seen: None,
            })
        })
        .collect()
}

/// (container name, image) of the containers, and of the init containers when asked.
fn containers(spec: &PodSpec, init: bool) -> impl Iterator<Item = (&str, &str)> {
    let inits = spec.init_containers.iter().flatten().filter(move |_| init);
    spec.containers
        .iter()
        .chain(inits)
        .filter_map(|c| Some((c.name.as_str(), c.image.as_deref()?)))
}

/// What the kubelet pulls with: the Pod's `imagePullSecrets` and its ServiceAccount's.
fn pull_secrets(spec: &PodSpec, accounts: &BTreeMap<String, ServiceAccount>) -> BTreeSet<String> {
    let account = spec.service_account_name.as_deref().unwrap_or("default");
    spec.image_pull_secrets
        .iter()
        .flatten()
        .chain(
            accounts
                .get(account)
                .and_then(|a| a.image_pull_secrets.as_ref())
                .into_iter()
                .flatten(),
        )
        .filter(|s| !s.name.is_empty())
        .map(|s| s.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, LocalObjectReference, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    fn status(name: &str, image_id: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image_id: image_id.into(),
            ..Default::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                creation_timestamp: Some(Time("2026-12-01T10:00:00Z".parse().unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    container("app", "127.0.0.1:5000/app:v1"),
                    container("side", "nginx"),
                ],
                init_containers: Some(vec![container("init", "127.0.0.1:5000/init:v2")]),
                image_pull_secrets: Some(vec![LocalObjectReference {
                    name: "pod-pull".into(),
                }]),
                service_account_name: Some("builder".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![
                    status("app", &format!("127.0.0.1:5000/app@{D1}")),
                    status("side", &format!("docker-pullable://nginx@{D2}")),
                ]),
                ..Default::default()
            }),
        }
    }

    fn accounts() -> BTreeMap<String, ServiceAccount> {
        let account = ServiceAccount {
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "sa-pull".into(),
            }]),
            ..Default::default()
        };
        BTreeMap::from([("builder".to_string(), account)])
    }

    #[test]
    fn a_pod_names_its_containers_and_init_containers_pinned_to_what_runs() {
        let accounts = accounts();
        let options = WorkloadOptions {
            include_init_containers: true,
            pull_secrets: true,
            service_accounts: &accounts,
        };
        let found = pod_candidates(&pod(), &options);
        let summary: Vec<(String, Option<String>)> = found
            .iter()
            .map(|c| (c.reference.clone(), c.digest.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("127.0.0.1:5000/app:v1".to_string(), Some(D1.to_string())),
                (
                    "docker.io/library/nginx:latest".to_string(),
                    Some(D2.to_string())
                ),
                // Not started yet: no imageID, the tag is resolved by the child.
                ("127.0.0.1:5000/init:v2".to_string(), None),
            ]
        );
        let secrets: Vec<&str> = found[0].pull_secrets.iter().map(String::as_str).collect();
        assert_eq!(secrets, ["pod-pull", "sa-pull"]);
        assert_eq!(found[0].source, WORKLOADS_SOURCE);
    }

    #[test]
    fn init_containers_and_pull_secrets_only_when_asked() {
        let accounts = accounts();
        let options = WorkloadOptions {
            include_init_containers: false,
            pull_secrets: false,
            service_accounts: &accounts,
        };
        let found = pod_candidates(&pod(), &options);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|c| c.pull_secrets.is_empty()));
    }

    #[test]
    fn only_manifest_digests_count_as_resolved() {
        assert_eq!(resolved_digest(&format!("repo@{D1}")).as_deref(), Some(D1));
        // A bare id is the config's (docker-shim era), not a manifest's.
        assert_eq!(resolved_digest(D1), None);
        assert_eq!(resolved_digest("repo@sha256:abc"), None);
        assert_eq!(
            resolved_digest(&format!("repo@{}", D1.to_uppercase())),
            None
        );
        assert_eq!(resolved_digest(""), None);
    }

    #[test]
    fn a_digest_the_pod_writes_wins_over_its_status_and_bad_references_are_skipped() {
        let mut p = pod();
        p.spec.as_mut().unwrap().containers = vec![
            container("app", &format!("127.0.0.1:5000/app@{D2}")),
            container("bad", "UPPER/Case:x"),
        ];
        let accounts = BTreeMap::new();
        let options = WorkloadOptions {
            include_init_containers: false,
            pull_secrets: false,
            service_accounts: &accounts,
        };
        let found = pod_candidates(&p, &options);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reference, format!("127.0.0.1:5000/app@{D2}"));
        assert_eq!(found[0].digest.as_deref(), Some(D2));
    }

    #[test]
    fn a_cron_job_names_its_template_images() {
        use k8s_openapi::api::batch::v1::{CronJobSpec, JobSpec, JobTemplateSpec};
        use k8s_openapi::api::core::v1::PodTemplateSpec;
        let cron = CronJob {
            spec: CronJobSpec {
                job_template: JobTemplateSpec {
                    spec: Some(JobSpec {
                        template: PodTemplateSpec {
                            spec: pod().spec,
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let accounts = BTreeMap::new();
        let options = WorkloadOptions {
            include_init_containers: true,
            pull_secrets: true,
            service_accounts: &accounts,
        };
        let found = cron_job_candidates(&cron, &options);
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|c| c.digest.is_none()));
        assert_eq!(
            found[0].pull_secrets.len(),
            1,
            "the Pod's own secret, no account here"
        );
    }
}
