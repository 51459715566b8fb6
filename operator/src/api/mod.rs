//! The `SociIndex` API (`soci.dev/v1alpha1`): Rust types from which the CRD is generated, and
//! the CRD text (`soci-operator crd`). The schema carries the validation the API server
//! enforces: list-map keys, enums, bounds and CEL rules with messages a person can act on.

pub mod budget;
pub mod condition;
pub mod crd;
pub mod policy;

pub use condition::{Condition, ConditionStatus};

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The bounds the CRD schema states, checked again by the controller (`plan::check_spec`) for
/// an object that bypassed the schema (an older CRD): what the worker, the Job template and the
/// status can carry.
pub mod limits {
    pub const MAX_IMAGES: usize = 256;
    pub const MAX_IMAGE_NAME: usize = 63;
    /// A reference: name (at most 255, as distribution has it), tag and digest.
    pub const MAX_IMAGE_REFERENCE: usize = 512;
    pub const MAX_PLATFORMS: usize = 32;
    /// `os/arch[/variant]`.
    pub const MAX_PLATFORM: usize = 64;
    /// 1 TiB: no layer is larger; more only means "index nothing".
    pub const MAX_MIN_LAYER_SIZE: i64 = 1 << 40;
    pub const MIN_SPAN_SIZE: i64 = 1 << 16;
    /// 1 GiB: the snapshotter fetches a whole span to read one file of it.
    pub const MAX_SPAN_SIZE: i64 = 1 << 30;
    pub const MAX_INTERVAL_TEXT: usize = 32;
    pub const MAX_TAG_SUFFIX: usize = 64;
    pub const MAX_TAG_TEMPLATE: usize = 128;
    pub const MAX_SECRET_REFS: usize = 8;
    /// A DNS subdomain: Secret and ServiceAccount names.
    pub const MAX_OBJECT_NAME: usize = 253;
    pub const MAX_NODE_SELECTOR: usize = 32;
    /// A label key: a DNS-subdomain prefix, `/`, a name of 63.
    pub const MAX_LABEL_KEY: usize = 317;
    pub const MAX_LABEL_VALUE: usize = 63;
    pub const MAX_TOLERATIONS: usize = 32;
    /// Entries of each of `resources.limits`, `.requests` and `.claims`.
    pub const MAX_RESOURCE_ENTRIES: usize = 16;
    pub const MIN_ACTIVE_DEADLINE_SECONDS: i64 = 30;
    pub const MAX_ACTIVE_DEADLINE_SECONDS: i64 = 86400;
    pub const MAX_BACKOFF_LIMIT: i32 = 10;
}

/// A DNS subdomain (RFC 1123), as Secret and ServiceAccount names are.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

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
    #[schemars(length(min = 1, max = limits::MAX_IMAGES))]
    pub images: Vec<ImageSpec>,
    /// Everything but the images: what a policy's template gives its children too.
    #[serde(flatten)]
    pub settings: IndexSettings,
    /// Stop reconciling: no registry checks, no Jobs; the status is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Reads of `spec.target`, `spec.interval`, ... go to the shared settings.
impl std::ops::Deref for SociIndexSpec {
    type Target = IndexSettings;
    fn deref(&self) -> &IndexSettings {
        &self.settings
    }
}

impl std::ops::DerefMut for SociIndexSpec {
    fn deref_mut(&mut self) -> &mut IndexSettings {
        &mut self.settings
    }
}

/// How a SociIndex's images are indexed: its spec without the images (and `suspend`), and a
/// policy's `template`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexSettings {
    /// Where the SOCI-enabled image is written. Default: the source tag with suffix `-soci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// Platforms to index (`os/arch[/variant]`). Default: every platform of the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_PLATFORMS),
        inner(length(min = 1, max = limits::MAX_PLATFORM))
    )]
    pub platforms: Vec<String>,
    /// Layers smaller than this many bytes (compressed) get no zTOC. Default 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = limits::MAX_MIN_LAYER_SIZE))]
    pub min_layer_size: Option<i64>,
    /// Uncompressed bytes between checkpoints (64 KiB to 1 GiB). Default 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::MIN_SPAN_SIZE, max = limits::MAX_SPAN_SIZE))]
    pub span_size: Option<i64>,
    /// SOCI index manifest version: `v2` (default) binds the index to the image; `v1` is for
    /// old runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_version: Option<IndexVersion>,
    /// Registry credentials for the worker and the controller's own registry checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// How often tags are re-resolved and targets re-verified (Go duration: `30m`, `1h`),
    /// between 10s and 720h (30 days). Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "interval_schema")]
    pub interval: Option<String>,
    /// `Retain` (default) keeps what was pushed when this object is deleted. `Delete` adds the
    /// finalizer `soci.dev/cleanup`, which on deletion removes what the status records as
    /// pushed: the target image index (and so its tag, unless the tag was pushed again since),
    /// its SOCI index manifests and zTOC blobs. An in-place target gets its original image back
    /// under the tag instead (if the tag still holds ours); the source image is never touched.
    /// Content another live SociIndex deploys is kept. Transient registry errors are retried
    /// with backoff until the operator's `--cleanup-timeout` (default 10m) after the deletion;
    /// then, or at once on a permanent failure (a registry that refuses deletes, HTTP 405 /
    /// UNSUPPORTED; credentials that may not delete), the finalizer is released with a Warning
    /// event naming what was left in place.
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
        length(min = 1, max = limits::MAX_IMAGE_NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A tag or digest reference (`registry/repo:tag`, `registry/repo@sha256:...`).
    #[schemars(length(min = 1, max = limits::MAX_IMAGE_REFERENCE))]
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
    #[schemars(
        length(min = 1, max = limits::MAX_TAG_SUFFIX),
        regex(pattern = r"^[A-Za-z0-9_.-]+$")
    )]
    pub tag_suffix: Option<String>,
    /// The target tag, with `{tag}` (the source tag) and `{name}` (the image's name) replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_TAG_TEMPLATE))]
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
    /// `kubernetes.io/dockerconfigjson` Secrets in this namespace. Without them the object is
    /// anonymous: the operator's own credentials serve only namespaces its admin names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_SECRET_REFS))]
    pub secret_refs: Vec<SecretRef>,
    /// The worker runs as this ServiceAccount (its pull secrets, workload identity); its token
    /// is mounted. Only in namespaces the operator's admin allows (`--allow-spec-service-account`);
    /// elsewhere the image stalls with `SpecNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = limits::MAX_OBJECT_NAME),
        regex(pattern = DNS_SUBDOMAIN)
    )]
    pub service_account_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    #[schemars(
        length(min = 1, max = limits::MAX_OBJECT_NAME),
        regex(pattern = DNS_SUBDOMAIN)
    )]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    /// At most 16 entries in each of `limits`, `requests` and `claims`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bounded_resources")]
    pub resources: Option<ResourceRequirements>,
    /// At most 32 labels (keys up to 317 characters, values up to 63).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = limits::MAX_NODE_SELECTOR,
        "additionalProperties" = {"type": "string", "maxLength": limits::MAX_LABEL_VALUE},
        "x-kubernetes-validations" = [{
            "rule": "self.all(k, size(k) <= 317)",
            "message": "nodeSelector keys are label keys: at most 317 characters"
        }]
    ))]
    pub node_selector: BTreeMap<String, String>,
    /// At most 32 (keys up to 317 characters, values up to 63).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "bounded_tolerations")]
    pub tolerations: Vec<Toleration>,
    /// Seconds a build may run before it is stopped and reported. Default 1800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(
        min = limits::MIN_ACTIVE_DEADLINE_SECONDS,
        max = limits::MAX_ACTIVE_DEADLINE_SECONDS
    ))]
    pub active_deadline_seconds: Option<i64>,
    /// Pod retries of a failed build inside one Job. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = limits::MAX_BACKOFF_LIMIT))]
    pub backoff_limit: Option<i32>,
}

/// The schema of `Vec<Toleration>` with bounds on the list and on each string.
fn bounded_tolerations(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Toleration>>();
    schema.insert("maxItems".into(), limits::MAX_TOLERATIONS.into());
    if let Some(properties) = schema
        .get_mut("items")
        .and_then(|items| items.get_mut("properties"))
        .and_then(|p| p.as_object_mut())
    {
        for (name, max) in [
            ("key", limits::MAX_LABEL_KEY),
            ("value", limits::MAX_LABEL_VALUE),
            ("operator", 16),
            ("effect", 32),
        ] {
            if let Some(property) = properties.get_mut(name).and_then(|p| p.as_object_mut()) {
                property.insert("maxLength".into(), max.into());
            }
        }
    }
    schema
}

/// An optional Go duration between 10s and 720h: `spec.interval`, a policy's `interval`.
fn interval_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_schema(
        generator,
        "duration(self) >= duration('10s') && duration(self) <= duration('720h')",
        "interval must be between 10s and 720h (30 days)",
    )
}

/// An optional Go duration of at most 720h: a policy's `retention`.
fn retention_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_schema(
        generator,
        "duration(self) <= duration('720h')",
        "retention must be at most 720h (30 days)",
    )
}

/// An optional Go duration text (bounded, by pattern), with a CEL `rule` on its value.
fn duration_schema(
    generator: &mut schemars::SchemaGenerator,
    rule: &str,
    message: &str,
) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Option<String>>();
    schema.insert("maxLength".into(), limits::MAX_INTERVAL_TEXT.into());
    schema.insert("pattern".into(), r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$".into());
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([{"rule": rule, "message": message}]),
    );
    schema
}

/// The schema of `Option<LabelSelector>` with bounded labels and expressions.
fn bounded_label_selector(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let mut schema = generator.subschema_for::<Option<LabelSelector>>();
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return schema;
    };
    if let Some(labels) = properties
        .get_mut("matchLabels")
        .and_then(|p| p.as_object_mut())
    {
        labels.insert("maxProperties".into(), limits::MAX_NODE_SELECTOR.into());
        labels.insert(
            "additionalProperties".into(),
            serde_json::json!({"type": "string", "maxLength": limits::MAX_LABEL_VALUE}),
        );
    }
    if let Some(expressions) = properties
        .get_mut("matchExpressions")
        .and_then(|p| p.as_object_mut())
    {
        expressions.insert("maxItems".into(), limits::MAX_NODE_SELECTOR.into());
        if let Some(fields) = expressions
            .get_mut("items")
            .and_then(|i| i.get_mut("properties"))
            .and_then(|p| p.as_object_mut())
        {
            for (name, max) in [("key", limits::MAX_LABEL_KEY), ("operator", 16)] {
                if let Some(field) = fields.get_mut(name).and_then(|f| f.as_object_mut()) {
                    field.insert("maxLength".into(), max.into());
                }
            }
            if let Some(values) = fields.get_mut("values").and_then(|f| f.as_object_mut()) {
                values.insert("maxItems".into(), limits::MAX_NODE_SELECTOR.into());
                values.insert(
                    "items".into(),
                    serde_json::json!({"type": "string", "maxLength": limits::MAX_LABEL_VALUE}),
                );
            }
        }
    }
    schema
}

/// The schema of `Option<ResourceRequirements>` with at most 16 limits, requests and claims,
/// and bounded strings.
fn bounded_resources(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Option<ResourceRequirements>>();
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return schema;
    };
    for name in ["limits", "requests"] {
        if let Some(map) = properties.get_mut(name).and_then(|p| p.as_object_mut()) {
            map.insert("maxProperties".into(), limits::MAX_RESOURCE_ENTRIES.into());
            if let Some(quantity) = map
                .get_mut("additionalProperties")
                .and_then(|q| q.as_object_mut())
            {
                quantity.insert("maxLength".into(), 64.into());
            }
        }
    }
    if let Some(claims) = properties.get_mut("claims").and_then(|p| p.as_object_mut()) {
        claims.insert("maxItems".into(), limits::MAX_RESOURCE_ENTRIES.into());
        if let Some(fields) = claims
            .get_mut("items")
            .and_then(|i| i.get_mut("properties"))
            .and_then(|p| p.as_object_mut())
        {
            for field in fields.values_mut().filter_map(|f| f.as_object_mut()) {
                field.insert("maxLength".into(), 63.into());
            }
        }
    }
    schema
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
