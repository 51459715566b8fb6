//! The policy controllers: `SociIndexPolicy` and `ClusterSociIndexPolicy` find images
//! themselves and keep one child SociIndex per image.
//!
//! One reconcile ([`reconcile`]) reads as its steps: [`observe`] (the workloads from the Pod
//! store, CronJobs, the repositories' tags, the children) → [`plan`] (pure: include/exclude, one
//! entry per reference, the cap, which children to apply, mark or delete, the status; the
//! workloads' images in [`workloads`]) → [`apply`] (the children) → the status write and
//! Events. [`runtime`] runs both Controllers and the Pod watch that triggers them.

pub mod apply;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod workloads;

use crate::api::policy::{ClusterSociIndexPolicy, PolicySpec, PolicyStatus, SociIndexPolicy};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::sync::Arc;

pub use metrics::PolicyMetrics;

pub struct PolicyContext {
    pub main: Arc<super::Context>,
    /// Every Pod the operator watches, trimmed to what the workloads source reads.
    pub pods: Store<Pod>,
    pub metrics: PolicyMetrics,
}

/// A policy of either kind.
#[derive(Clone, Copy)]
pub enum PolicyRef<'a> {
    Namespaced(&'a SociIndexPolicy),
    Cluster(&'a ClusterSociIndexPolicy),
}

impl PolicyRef<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespaced(_) => "SociIndexPolicy",
            Self::Cluster(_) => "ClusterSociIndexPolicy",
        }
    }

    pub fn spec(&self) -> &PolicySpec {
        match self {
            Self::Namespaced(p) => &p.spec.policy,
            Self::Cluster(p) => &p.spec.policy,
        }
    }

    pub fn status(&self) -> Option<&PolicyStatus> {
        match self {
            Self::Namespaced(p) => p.status.as_ref(),
            Self::Cluster(p) => p.status.as_ref(),
        }
    }

    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Self::Namespaced(p) => &p.metadata,
            Self::Cluster(p) => &p.metadata,
        }
    }

    /// Where its children live.
    pub fn child_namespace(&self) -> String {
        match self {
            Self::Namespaced(p) => p.namespace().unwrap_or_default(),
            Self::Cluster(p) => p.spec.child_namespace.clone(),
        }
    }

    /// `namespace/name`, or the name of a cluster policy: its metric label.
    pub fn key(&self) -> String {
        match self {
            Self::Namespaced(p) => {
                format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
            }
            Self::Cluster(p) => p.name_any(),
        }
    }

    pub fn object_ref(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        use kube::Resource;
        match self {
            Self::Namespaced(p) => p.object_ref(&()),
            Self::Cluster(p) => p.object_ref(&()),
        }
    }
}
