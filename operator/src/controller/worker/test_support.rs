//! The SociIndex and build request the worker tests share, and the spec fields a tenant may
//! not set without the admin's leave.

use crate::api::{ImageSpec, IndexSettings, JobSettings, SociIndex, SociIndexSpec};
use crate::controller::plan::{BuildRequest, BuildSettings};
use k8s_openapi::api::core::v1::Toleration;

pub(super) fn owner() -> SociIndex {
    let mut o = SociIndex::new(
        "apps",
        SociIndexSpec {
            images: vec![ImageSpec {
                name: "web".into(),
                image: "127.0.0.1:5000/web:v1".into(),
            }],
            settings: IndexSettings {
                platforms: vec!["linux/amd64".into()],
                job: Some(JobSettings {
                    active_deadline_seconds: Some(600),
                    ..Default::default()
                }),
                ..Default::default()
            },
            suspend: false,
        },
    );
    o.metadata.namespace = Some("team".into());
    o.metadata.uid = Some("uid-1".into());
    o
}

pub(super) fn request() -> BuildRequest {
    BuildRequest {
        job_name: "soci-build-0123".into(),
        image_name: "web".into(),
        source: "127.0.0.1:5000/web@sha256:aa".into(),
        source_digest: "sha256:aa".into(),
        target: "127.0.0.1:5000/web:v1-soci".into(),
        settings: BuildSettings::from_spec(&owner().spec),
    }
}

pub(super) fn with_service_account(o: &mut SociIndex) {
    o.spec.credentials = Some(crate::api::Credentials {
        secret_refs: vec![],
        service_account_name: Some("cluster-admin-ish".into()),
    });
}

pub(super) fn with_scheduling(o: &mut SociIndex, selector: bool, tolerations: bool) {
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
