//! The `SociIndex` API (`soci.dev/v1alpha1`): Rust types from which the CRD is generated, and
//! the CRD text (`soci-operator crd`). The schema carries the validation the API server
//! enforces: list-map keys, enums, bounds and CEL rules with messages a person can act on.

pub mod condition;
pub mod crd;

pub use condition::{Condition, ConditionStatus};

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Annotation whose change asks for a reconcile now (and a retry of a stalled image).
pub const RECONCILE_REQUEST_ANNOTATION: &str = "soci.dev/reconcile-requested-at";

/// A set of images to keep SOCI-enabled: each is resolved, its target checked for a valid
/// SOCI index manifest v2 binding, and built by a worker Job when the binding is missing.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "soci.dev",
    version = "v1alpha1",
    kind = "SociIndex",
    plural = "sociindexes",
    singular = "sociindex",
    shortname = "soci",
    namespaced,
    status = "SociIndexStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Images","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SociIndexSpec {
    /// The images to index, keyed by `name`.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[schemars(length(min = 1, max = 256))]
    pub images: Vec<ImageSpec>,
    /// Where the SOCI-enabled image is written. Default: the source tag with suffix `-soci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// Platforms to index (`os/arch[/variant]`). Default: every platform of the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub platforms: Vec<String>,
    /// Layers smaller than this many bytes (compressed) get no zTOC. Default 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_layer_size: Option<i64>,
    /// Uncompressed bytes between checkpoints. Default 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536))]
    pub span_size: Option<i64>,
    /// SOCI index manifest version: `v2` (default) binds the index to the image; `v1` is for
    /// old runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_version: Option<IndexVersion>,
    /// Registry credentials for the worker and the controller's own registry checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// How often tags are re-resolved and targets re-verified (Go duration: `30m`, `1h`).
    /// Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Stop reconciling: no registry checks, no Jobs; the status is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// `Retain` (default) keeps what was pushed when this object is deleted. `Delete` adds the
    /// finalizer `soci.dev/cleanup`, which on deletion removes what the status records as
    /// pushed: the target image index (and so its tag, unless the tag was pushed again since),
    /// its SOCI index manifests and zTOC blobs. An in-place target gets its original image back
    /// under the tag instead (if the tag still holds ours); the source image is never touched.
    /// Transient registry errors are retried with backoff while the object waits; a permanent
    /// failure (a registry that refuses deletes, HTTP 405 / UNSUPPORTED; credentials that may
    /// not delete) releases the finalizer with a Warning event and leaves the content in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Settings of the worker Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Key of this entry in `spec.images` and `status.images`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A tag or digest reference (`registry/repo:tag`, `registry/repo@sha256:...`).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
}

/// Exactly one way to name the target; none means `tagSuffix: -soci`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.tagSuffix) ? 1 : 0) + (has(self.tagTemplate) ? 1 : 0) + (has(self.inPlace) && self.inPlace ? 1 : 0) <= 1",
    "message": "set at most one of tagSuffix, tagTemplate and inPlace"
}]))]
pub struct TargetSpec {
    /// Appended to the source tag (`v1` → `v1-soci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub tag_suffix: Option<String>,
    /// The target tag, with `{tag}` (the source tag) and `{name}` (the image's name) replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z0-9_{}.-]+$')",
        "message": "tagTemplate may hold only tag characters and the placeholders {tag} and {name}"
    }]))]
    pub tag_template: Option<String>,
    /// Rewrite the source tag itself (opt-in: the SOCI-enabled image replaces the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IndexVersion {
    #[default]
    #[serde(rename = "v2")]
    V2,
    #[serde(rename = "v1")]
    V1,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// `kubernetes.io/dockerconfigjson` Secrets in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub secret_refs: Vec<SecretRef>,
    /// The worker runs as this ServiceAccount (its pull secrets, workload identity); its token
    /// is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Seconds a build may run before it is stopped and reported. Default 1800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 86400))]
    pub active_deadline_seconds: Option<i64>,
    /// Pod retries of a failed build inside one Job. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SociIndexStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and `Reconciling` / `Stalled` while they are true (kstatus).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready_images: i32,
    #[serde(default)]
    pub desired_images: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The reconcile-request annotation value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub images: Vec<ImageStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    pub name: String,
    /// The image as given in the spec.
    pub image: String,
    /// What the image's tag resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// The SOCI-enabled image's tag reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
    /// What to deploy: `target@targetDigest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["platform"]))]
    pub platforms: Vec<PlatformStatus>,
    /// The worker Job of the current (or last) build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_build_time: Option<String>,
    /// Transient failures in a row (for the backoff); reset by success.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub failures: i32,
    /// `LazyLoadReady`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformStatus {
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soci_index_digest: Option<String>,
    pub layers_indexed: i32,
    pub layers_too_small: i32,
    pub layers_unsupported: i32,
    /// Share of the compressed layer bytes that have a zTOC, in percent (text: `87.5`).
    pub bytes_indexed_percent: String,
}
