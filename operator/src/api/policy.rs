//! `SociIndexPolicy` and `ClusterSociIndexPolicy` (`soci.dev/v1alpha1`): policies that find
//! images themselves (the images Pods run, the tags of registry repositories) and keep one
//! child `SociIndex` per image, made from a template.

use super::{Condition, limits};
pub use crate::controller::policy_tags::{NewestTags, TagSelection, TagSort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bounds of the policy specs and status, stated in the CRDs and checked again by the
/// controller.
pub mod policy_limits {
    /// Default of `maxImages`.
    pub const DEFAULT_MAX_IMAGES: i32 = 100;
    pub const MAX_MAX_IMAGES: i32 = 1000;
    pub const MAX_REPOSITORIES: usize = 16;
    pub const MAX_PATTERNS: usize = 32;
    pub const MAX_PATTERN: usize = 256;
    /// Images named in `status.cutImages` (the count is always exact).
    pub const MAX_CUT_LISTED: usize = 20;
    /// Tags listed per repository before the listing is refused as too long.
    pub const MAX_TAGS_LISTED: usize = 10_000;
    pub const DEFAULT_RETENTION: &str = "24h";
    pub const DEFAULT_INTERVAL: &str = "10m";
}

/// Selects images of the Pods in its own namespace and tags of registry repositories, and
/// keeps a child SociIndex (in this namespace) for each.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "soci.dev",
    version = "v1alpha1",
    kind = "SociIndexPolicy",
    plural = "sociindexpolicies",
    singular = "sociindexpolicy",
    shortname = "socipolicy",
    namespaced,
    status = "PolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Images","type":"integer","jsonPath":".status.selectedImages"}"#,
    printcolumn = r#"{"name":"Children","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SociIndexPolicySpec {
    #[serde(flatten)]
    pub policy: PolicySpec,
}

/// Selects images of the Pods in the namespaces its `namespaceSelector` picks and tags of
/// registry repositories, and keeps a child SociIndex (in `childNamespace`) for each.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "soci.dev",
    version = "v1alpha1",
    kind = "ClusterSociIndexPolicy",
    plural = "clustersociindexpolicies",
    singular = "clustersociindexpolicy",
    shortname = "csocipolicy",
    status = "PolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Images","type":"integer","jsonPath":".status.selectedImages"}"#,
    printcolumn = r#"{"name":"Children","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSociIndexPolicySpec {
    /// The namespaces whose Pods `sources.workloads` reads. Empty selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::bounded_label_selector")]
    pub namespace_selector: Option<LabelSelector>,
    /// Where the child SociIndexes live, and so whose Secrets `template.credentials` names.
    /// The Pods' own pull secrets stay in their namespaces: a cluster policy never uses them.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub child_namespace: String,
    #[serde(flatten)]
    pub policy: PolicySpec,
}

/// What both kinds of policy share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Where images are found; any combination.
    pub sources: PolicySources,
    /// Only references matching one of these globs are selected (`*` within a path segment,
    /// `**` across them: `127.0.0.1:5000/team/**`). Empty: every reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = policy_limits::MAX_PATTERNS),
        inner(length(min = 1, max = policy_limits::MAX_PATTERN))
    )]
    pub include: Vec<String>,
    /// References matching one of these globs are never selected (exclude wins over include).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = policy_limits::MAX_PATTERNS),
        inner(length(min = 1, max = policy_limits::MAX_PATTERN))
    )]
    pub exclude: Vec<String>,
    /// The most images this policy keeps children for (1 to 1000, default 100). Images past it
    /// (in reference order) are reported in `status.cutImages`, never silently dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = policy_limits::MAX_MAX_IMAGES))]
    pub max_images: Option<i32>,
    /// How long an image that stops being selected keeps its child (Go duration, 0s to 720h,
    /// default 24h); then the child is deleted, with the template's `deletionPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::retention_schema")]
    pub retention: Option<String>,
    /// How often repositories are listed again (Go duration, 10s to 720h, default 10m).
    /// Workloads are watched; push events list a repository at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::interval_schema")]
    pub interval: Option<String>,
    /// What each child SociIndex gets besides its image.
    #[serde(default)]
    pub template: SociIndexTemplate,
    /// Stop selecting: children are kept as they are, none is created or deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.workloads) || (has(self.repositories) && size(self.repositories) > 0)",
    "message": "set sources.workloads, sources.repositories or both"
}]))]
pub struct PolicySources {
    /// The images Pods run (containers and init containers), as written and pinned to the
    /// digest the node resolved (`status.containerStatuses[].imageID`); and the Pod templates
    /// of Deployments, StatefulSets, DaemonSets and CronJobs, whose Pods come and go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<WorkloadSource>,
    /// Registry repositories whose tags are followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = policy_limits::MAX_REPOSITORIES))]
    pub repositories: Vec<RepositorySource>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSource {
    /// Only Pods (and workloads) with these labels. Empty: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::bounded_label_selector")]
    pub selector: Option<LabelSelector>,
    /// Init containers' images too (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_init_containers: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySource {
    /// `registry/repository`, without tag or digest.
    #[schemars(length(min = 1, max = limits::MAX_IMAGE_REFERENCE))]
    pub repository: String,
    /// Which tags are followed.
    pub tags: TagSelection,
}

/// What every child gets besides its image: a SociIndex spec without its images. A
/// SociIndexPolicy's children also get the pull secrets of the Pods that run their image.
pub type SociIndexTemplate = super::IndexSettings;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every child Ready), and `Reconciling` / `Stalled` while they are true.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Images the sources found that pass include/exclude (before the cap).
    #[serde(default)]
    pub selected_images: i32,
    /// Child SociIndexes, and how many of them are Ready.
    #[serde(default)]
    pub children: i32,
    #[serde(default)]
    pub ready_children: i32,
    /// `ready/children`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// How many selected images got no child because of `maxImages`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut_image_count: i32,
    /// The first of them (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut_images: Vec<String>,
    /// Each source's last listing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["source"]))]
    pub sources: Vec<SourceStatus>,
    /// The reconcile-request annotation value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `workloads`, or the repository.
    pub source: String,
    /// RFC 3339: when it was last listed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_listed: Option<String>,
    /// Images it found in that listing.
    #[serde(default)]
    pub images: i32,
    /// Why the last listing failed, if it did (the previous images are kept meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A policy of either kind, as the policy controller reads it.
pub trait ImagePolicy {
    fn policy(&self) -> &PolicySpec;
    fn policy_status(&self) -> Option<&PolicyStatus>;
}

impl ImagePolicy for SociIndexPolicy {
    fn policy(&self) -> &PolicySpec {
        &self.spec.policy
    }
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}

impl ImagePolicy for ClusterSociIndexPolicy {
    fn policy(&self) -> &PolicySpec {
        &self.spec.policy
    }
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}
