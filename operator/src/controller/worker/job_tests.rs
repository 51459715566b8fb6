//! The worker Job as built: restricted, owned, bounded, and carrying only what the admin
//! allows.

use super::*;
use crate::controller::worker::tenancy::NamespaceSet;
use crate::controller::worker::test_support::{
    owner, request, with_scheduling, with_service_account,
};
use crate::controller::worker::{BUILD_KEY_LABEL, IMAGE_LABEL, OWNER_UID_LABEL};

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
fn pod_config_rejects_unknown_fields() {
    let ok: WorkerPodConfig =
        serde_yaml::from_str("hostNetwork: true\nenv: [{name: A, value: b}]\n").unwrap();
    assert_eq!(ok.host_network, Some(true));
    assert!(serde_yaml::from_str::<WorkerPodConfig>("hostNetwrok: true\n").is_err());
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
