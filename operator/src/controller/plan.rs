//! The reconcile decision, as a pure function: what the controller observed (spec, status,
//! resolved digests, target checks, owned Jobs, the time) in; Jobs to create and delete, the
//! new status and when to look again out. No I/O here, so every transition is unit tested.

use crate::api::budget;
use crate::api::condition::{self, LAZY_LOAD_READY, READY, RECONCILING, STALLED};
use crate::api::limits;
use crate::api::{
    Condition, ConditionStatus, ImageStatus, IndexVersion, PlatformStatus, SociIndex,
    SociIndexSpec, SociIndexStatus, TargetSpec,
};
use crate::registry::RegistryRef;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The fallback of `--default-interval` (itself the fallback of `spec.interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_TAG_SUFFIX: &str = "-soci";
pub const DEFAULT_MIN_LAYER_SIZE: i64 = 10 << 20;
pub const DEFAULT_SPAN_SIZE: i64 = 4 << 20;
/// How often a running build is looked at even without a Job event.
pub const RUNNING_JOB_RECHECK: Duration = Duration::from_secs(60);
/// How soon a build waiting for a Job slot (the caps) is looked at again.
pub const QUEUED_RECHECK: Duration = Duration::from_secs(15);
const BACKOFF_BASE: Duration = Duration::from_secs(15);
const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Reasons of `LazyLoadReady` (and of `Ready` when an image holds it back).
pub mod reason {
    pub const VERIFIED: &str = "Verified";
    pub const BUILDING: &str = "Building";
    pub const TARGET_DRIFTED: &str = "TargetDrifted";
    pub const BUILD_FAILED: &str = "BuildFailed";
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const NO_INDEXABLE_LAYERS: &str = "NoIndexableLayers";
    pub const INVALID_REFERENCE: &str = "InvalidReference";
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    pub const REGISTRY_NOT_ALLOWED: &str = "RegistryNotAllowed";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const PROGRESSING: &str = "Progressing";
    pub const SUSPENDED: &str = "Suspended";
    /// Another namespace's SociIndex names the same target first and builds something else.
    pub const TARGET_CONFLICT: &str = "TargetConflict";
    /// The spec asks for a worker Pod the operator's configuration does not allow
    /// (`--allow-spec-service-account`, `--allow-spec-scheduling`).
    pub const SPEC_NOT_ALLOWED: &str = "SpecNotAllowed";
    /// A build is due but `--max-concurrent-jobs`, `--max-jobs-per-registry` or
    /// `--max-jobs-per-namespace` is reached.
    pub const QUEUED: &str = "Queued";
    /// The spec is outside the bounds the CRD states (an object that bypassed them).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The reconcile panicked (a bug): caught at the reconcile boundary.
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// The reconcile ran past `--reconcile-timeout`; it is retried.
    pub const RECONCILE_TIMEOUT: &str = "ReconcileTimeout";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retrying later may succeed: back off and retry.
    Transient,
    /// Retrying the same input fails again: stall until the spec changes.
    Permanent,
}

/// A failure the controller or a worker observed, with the `LazyLoadReady` reason it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub reason: String,
    pub message: String,
}

impl Failure {
    pub fn permanent(reason: &str, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn transient(reason: &str, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What the target tag holds, compared with the resolved source.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetCheck {
    /// A valid SOCI binding of this source digest, for every selected platform.
    Bound {
        digest: String,
        platforms: Vec<PlatformStatus>,
    },
    /// No such tag.
    Missing,
    /// The tag exists but is not a valid binding of this source (moved source tag, damaged or
    /// overwritten target); `message` says which.
    NotBound { message: String },
}

/// One spec image as observed: the source resolved and the target checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageObservation {
    pub name: String,
    /// The resolved source digest and the target tag reference, or why there is none.
    pub resolved: Result<Resolved, Failure>,
    /// Absent when the source could not be resolved.
    pub target: Option<Result<TargetCheck, Failure>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// `registry/repo@digest`: what the worker builds.
    pub source: String,
    pub digest: String,
    /// `registry/repo:tag`: where the result goes.
    pub target: String,
}

/// A worker Job owned by this object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedJob {
    pub name: String,
    /// The `spec.images[].name` it builds (from its label).
    pub image_name: String,
    pub state: JobState,
    pub finished_at: Option<Timestamp>,
    /// Being deleted already.
    pub deleting: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed(Failure),
}

/// A worker Job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequest {
    pub job_name: String,
    pub image_name: String,
    pub source: String,
    pub source_digest: String,
    pub target: String,
    pub settings: BuildSettings,
}

impl BuildRequest {
    /// [`build_key`] of what this Job builds.
    pub fn build_key(&self) -> String {
        build_key(&self.source_digest, &self.target, &self.settings)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Empty: every platform.
    pub platforms: Vec<String>,
    pub min_layer_size: i64,
    pub span_size: i64,
    pub index_version: IndexVersion,
}

impl BuildSettings {
    pub fn from_spec(spec: &SociIndexSpec) -> Self {
        Self {
            platforms: spec.platforms.clone(),
            min_layer_size: spec.min_layer_size.unwrap_or(DEFAULT_MIN_LAYER_SIZE),
            span_size: spec.span_size.unwrap_or(DEFAULT_SPAN_SIZE),
            index_version: spec.index_version.unwrap_or_default(),
        }
    }
}

pub struct PlanInput<'a> {
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a SociIndexSpec,
    pub status: Option<&'a SociIndexStatus>,
    /// The value of the reconcile-request annotation.
    pub reconcile_request: Option<&'a str>,
    /// One per spec image, in spec order (ignored while suspended).
    pub images: Vec<ImageObservation>,
    pub jobs: Vec<ObservedJob>,
    pub now: Timestamp,
    /// `--default-interval`: used when `spec.interval` is absent or malformed.
    pub default_interval: Duration,
    /// The worker Job slots free now (`--max-concurrent-jobs`, `--max-jobs-per-registry`,
    /// `--max-jobs-per-namespace`).
    pub capacity: Capacity,
    /// Running Jobs of other objects, by [`build_key`] → `namespace/name`: a build already
    /// running for another SociIndex is waited for, not started twice.
    pub builds_elsewhere: BTreeMap<String, String>,
}

/// The Job caps and the worker Jobs active now across every watched namespace, for the builds
/// of one object. `None`: no cap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capacity {
    pub max_total: Option<usize>,
    pub max_per_registry: Option<usize>,
    /// `--max-jobs-per-namespace`: one namespace cannot hold every slot.
    pub max_per_namespace: Option<usize>,
    pub active_total: usize,
    /// Active Jobs by the registry host of their source image.
    pub active_per_registry: BTreeMap<String, usize>,
    /// Active Jobs in the namespace of the object being planned.
    pub active_in_namespace: usize,
}

impl Capacity {
    /// Takes a slot for one more Job building from `registry`, or says which cap is reached.
    pub fn take(&mut self, registry: &str) -> Result<(), String> {
        if let Some(max) = self.max_total
            && self.active_total >= max
        {
            return Err(format!(
                "{} of {max} worker Jobs are running (--max-concurrent-jobs)",
                self.active_total
            ));
        }
        if let Some(max) = self.max_per_namespace
            && self.active_in_namespace >= max
        {
            return Err(format!(
                "{} of {max} worker Jobs are running in this namespace (--max-jobs-per-namespace)",
                self.active_in_namespace
            ));
        }
        let on_registry = self.active_per_registry.get(registry).copied().unwrap_or(0);
        if let Some(max) = self.max_per_registry
            && on_registry >= max
        {
            return Err(format!(
                "{on_registry} of {max} worker Jobs are running for {registry} (--max-jobs-per-registry)"
            ));
        }
        self.active_total += 1;
        self.active_in_namespace += 1;
        *self
            .active_per_registry
            .entry(registry.to_string())
            .or_default() += 1;
        Ok(())
    }
}

/// The registry host a build request counts against (`--max-jobs-per-registry`).
pub fn registry_host(source: &str) -> String {
    RegistryRef::parse(source)
        .map(|r| r.registry)
        .unwrap_or_else(|_| source.split('/').next().unwrap_or_default().to_string())
}

/// One image target a SociIndex names: from its spec (the status may be older), with the
/// source digest its status records for that very target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetClaim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub image_name: String,
    /// `registry/repo:tag`, as [`target_reference`] writes it.
    pub target: String,
    /// The spec image, normalised (`registry/repo:tag` or `@digest`).
    pub source: String,
    pub source_digest: Option<String>,
    pub settings: BuildSettings,
}

impl TargetClaim {
    /// Who came first: the older object (then the smaller uid) keeps the target.
    fn precedes(&self, other: &TargetClaim) -> bool {
        let order = |c: &TargetClaim| (c.created.is_none(), c.created, c.uid.clone());
        order(self) < order(other)
    }

    /// Whether both write the same bytes into the target: the same settings, and the same
    /// source (the digest its status records, or the same spec image, which resolves alike).
    fn same_build(&self, other: &TargetClaim) -> bool {
        self.settings == other.settings
            && (self.source == other.source
                || (self.source_digest.is_some() && self.source_digest == other.source_digest))
    }
}

/// The targets `object` names, one per spec image that has a valid one.
pub fn target_claims(object: &SociIndex) -> Vec<TargetClaim> {
    let settings = BuildSettings::from_spec(&object.spec);
    let status = object.status.as_ref();
    object
        .spec
        .images
        .iter()
        .filter_map(|image| {
            let source = RegistryRef::parse(&image.image).ok()?;
            let target = target_reference(&source, object.spec.target.as_ref(), &image.name)
                .ok()?
                .to_string();
            let source_digest = status
                .and_then(|s| s.images.iter().find(|i| i.name == image.name))
                .filter(|i| i.target.as_deref() == Some(target.as_str()))
                .and_then(|i| i.source_digest.clone());
            Some(TargetClaim {
                namespace: object.metadata.namespace.clone().unwrap_or_default(),
                name: object.metadata.name.clone().unwrap_or_default(),
                uid: object.metadata.uid.clone().unwrap_or_default(),
                created: object.metadata.creation_timestamp.as_ref().map(|t| t.0),
                image_name: image.name.clone(),
                target,
                source: source.to_string(),
                source_digest,
                settings: settings.clone(),
            })
        })
        .collect()
}

/// The claims of every object outside `namespace` (a tenant's own objects may share a target
/// among themselves: they build it once, see `builds_elsewhere`).
pub fn claims_outside<'a>(
    objects: impl IntoIterator<Item = &'a SociIndex>,
    namespace: &str,
) -> Vec<TargetClaim> {
    objects
        .into_iter()
        .filter(|o| o.metadata.namespace.as_deref() != Some(namespace))
        .flat_map(target_claims)
        .collect()
}

/// `TargetConflict` for each image of `object` whose resolved target another namespace's
/// SociIndex named first and builds differently: two tenants never overwrite each other's
/// target. The image stalls (no Job, no target check) until the other lets the target go or
/// builds the same thing.
pub fn apply_target_conflicts(
    object: &SociIndex,
    images: &mut [ImageObservation],
    others: &[TargetClaim],
) {
    let mine = target_claims(object);
    for observation in images {
        let Ok(resolved) = &observation.resolved else {
            continue;
        };
        let Some(me) = mine.iter().find(|c| c.image_name == observation.name) else {
            continue;
        };
        let me = TargetClaim {
            target: resolved.target.clone(),
            source_digest: Some(resolved.digest.clone()),
            ..me.clone()
        };
        let first = others.iter().find(|other| {
            other.target == me.target
                && other.namespace != me.namespace
                && other.precedes(&me)
                && !other.same_build(&me)
        });
        if let Some(other) = first {
            let builds = match &other.source_digest {
                Some(d) => format!("{} ({d})", other.source),
                None => other.source.clone(),
            };
            observation.resolved = Err(Failure::permanent(
                reason::TARGET_CONFLICT,
                format!(
                    "target {} is already the target of SociIndex {}/{} (image {}), which came first and builds it from {builds}{}; choose another target (target.tagSuffix or target.tagTemplate) or build the same source with the same settings",
                    me.target,
                    other.namespace,
                    other.name,
                    other.image_name,
                    if other.settings == me.settings {
                        ""
                    } else {
                        " with other settings"
                    },
                ),
            ));
            observation.target = None;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub create: Vec<BuildRequest>,
    /// Names of Jobs to delete (obsolete, or failed transiently and due for a retry).
    pub delete: Vec<String>,
    pub status: SociIndexStatus,
    pub requeue_after: Option<Duration>,
    /// Builds due but held back by the Job caps (`Queued`).
    pub queued: usize,
}

/// The deterministic name of the Job that builds `source_digest` for one image of one object
/// with these settings: the same inputs never build twice, and a crashed controller finds its
/// Job again.
pub fn job_name(
    uid: &str,
    image_name: &str,
    source_digest: &str,
    target: &str,
    settings: &BuildSettings,
) -> String {
    let hex = short_hash(&[uid, image_name, source_digest, target], settings, 8);
    format!("soci-build-{hex}")
}

/// What a build produces, whoever asks for it: the same source digest into the same target tag
/// with the same settings gives the same bytes, so one Job serves every SociIndex that wants it.
pub fn build_key(source_digest: &str, target: &str, settings: &BuildSettings) -> String {
    short_hash(&[source_digest, target], settings, 12)
}

/// The first `bytes` bytes, in hex, of the sha256 of `parts` (each NUL-terminated) and
/// `settings`.
fn short_hash(parts: &[&str], settings: &BuildSettings, bytes: usize) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(format!("{settings:?}").as_bytes());
    h.finalize()
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The target tag reference for a source reference, per `spec.target`.
pub fn target_reference(
    source: &RegistryRef,
    target: Option<&TargetSpec>,
    image_name: &str,
) -> Result<RegistryRef, String> {
    let source_tag = source.tag.clone().unwrap_or_else(|| {
        // A digest-only source still gets a stable, readable tag.
        source
            .digest
            .as_deref()
            .unwrap_or("latest")
            .replace(':', "-")
    });
    let target = target.cloned().unwrap_or_default();
    let tag = if target.in_place == Some(true) {
        match &source.tag {
            Some(t) => t.clone(),
            None => return Err("target.inPlace needs a source tag, not only a digest".into()),
        }
    } else if let Some(template) = &target.tag_template {
        template
            .replace("{tag}", &source_tag)
            .replace("{name}", image_name)
    } else {
        format!(
            "{source_tag}{}",
            target.tag_suffix.as_deref().unwrap_or(DEFAULT_TAG_SUFFIX)
        )
    };
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'))
        });
    if !valid {
        return Err(format!("target tag {tag:?} is not a valid tag"));
    }
    if target.in_place != Some(true) && source.tag.as_deref() == Some(tag.as_str()) {
        return Err(format!(
            "target tag {tag:?} is the source tag: set target.inPlace to rewrite it"
        ));
    }
    Ok(source.with_reference(&tag))
}

/// The bounds of `spec.interval` (the CRD holds the same), `--default-interval`,
/// `--full-check-interval` and `--reconcile-timeout`: often enough to matter, rarely enough not
/// to hammer a registry.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_INTERVAL: Duration = Duration::from_secs(720 * 3600);

/// Why [`parse_duration`] refused a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    Malformed,
    /// Well-formed, but longer than [`Duration::MAX`].
    TooLong,
}

/// A Go duration as the CRD admits it (`90s`, `30m`, `1h30m`, `1.5h`, `500ms`), in checked
/// integer nanoseconds: never a panic, whatever the text. Fraction digits below a nanosecond
/// are dropped.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    use DurationError::*;
    if text.is_empty() {
        return Err(Malformed);
    }
    // `None` once a sum or product has overflowed; the syntax is still checked to the end.
    let mut total: Option<u128> = Some(0);
    let mut rest = text;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        if whole.is_empty() {
            return Err(Malformed);
        }
        let (fraction, after) = match after.strip_prefix('.') {
            Some(tail) => match split_digits(tail) {
                ("", _) => return Err(Malformed),
                split => split,
            },
            None => ("", after),
        };
        let (unit, after): (u128, &str) = if let Some(a) = after.strip_prefix("ms") {
            (1_000_000, a)
        } else if let Some(a) = after.strip_prefix('s') {
            (1_000_000_000, a)
        } else if let Some(a) = after.strip_prefix('m') {
            (60_000_000_000, a)
        } else if let Some(a) = after.strip_prefix('h') {
            (3_600_000_000_000, a)
        } else {
            return Err(Malformed);
        };
        // More digits than u128 holds fail to parse, as does any product past it.
        let mut part = whole.parse::<u128>().ok().and_then(|w| w.checked_mul(unit));
        let mut scale = unit;
        for digit in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part = part.and_then(|p| p.checked_add(u128::from(digit - b'0') * scale));
        }
        total = total.zip(part).and_then(|(t, p)| t.checked_add(p));
        rest = after;
    }
    let total = total.ok_or(TooLong)?;
    let seconds = u64::try_from(total / 1_000_000_000).map_err(|_| TooLong)?;
    Ok(Duration::new(seconds, (total % 1_000_000_000) as u32))
}

fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    )
}

/// An interval (`spec.interval`, the interval flags) within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`],
/// or why not (the text quoted, cut short: an object that bypassed the CRD may hold anything).
pub fn bounded_interval(text: &str) -> Result<Duration, String> {
    let quoted = quote(text);
    let outside = || format!("{quoted} is outside 10s..720h (30 days)");
    let duration = parse_duration(text).map_err(|e| match e {
        DurationError::TooLong => outside(),
        DurationError::Malformed => format!("{quoted} is not a duration like 30s, 5m or 1h30m"),
    })?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&duration) {
        return Err(outside());
    }
    Ok(duration)
}

/// Capped exponential backoff after `failures` transient failures in a row.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

/// The interval stretched by up to +10%, by a fraction fixed per object, so that many objects
/// created together do not hit the registry together (and the plan stays deterministic).
/// Integer arithmetic that saturates: no interval makes it panic.
pub fn jittered(interval: Duration, uid: &str) -> Duration {
    let h = Sha256::digest(uid.as_bytes());
    let fraction = u128::from(u16::from_be_bytes([h[0], h[1]]));
    let extra = interval.as_nanos().saturating_mul(fraction) / (10 * u128::from(u16::MAX));
    interval.saturating_add(nanos_saturating(extra))
}

/// `nanos` as a Duration, [`Duration::MAX`] when longer.
fn nanos_saturating(nanos: u128) -> Duration {
    match u64::try_from(nanos / 1_000_000_000) {
        Ok(seconds) => Duration::new(seconds, (nanos % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}

pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether `status` was written for this spec (its generation) and no reconcile was requested
/// since: then its stalls hold, and its verified images need only the settled recheck. A new
/// generation or a new reconcile request lifts both.
pub fn status_is_current(
    status: &SociIndexStatus,
    generation: Option<i64>,
    reconcile_request: Option<&str>,
) -> bool {
    status.observed_generation == generation
        && (reconcile_request.is_none()
            || reconcile_request == status.last_handled_reconcile_at.as_deref())
}

/// The status to write before the slow work starts when the spec is new or changed: `Ready`
/// becomes `Unknown` and `Reconciling` true, so readers never see a stale `Ready=True` for a
/// generation that has not been looked at. `None` when nothing needs writing first.
pub fn early_status(
    generation: Option<i64>,
    status: Option<&SociIndexStatus>,
    now: Timestamp,
) -> Option<SociIndexStatus> {
    let previous = status.cloned().unwrap_or_default();
    let has_ready = condition::find(&previous.conditions, READY).is_some();
    if has_ready && previous.observed_generation == generation {
        return None;
    }
    let now = rfc3339(now);
    let mut next = previous.clone();
    next.observed_generation = generation;
    next.conditions = condition::merge(
        &previous.conditions,
        vec![
            Condition::new(
                READY,
                ConditionStatus::Unknown,
                reason::PROGRESSING,
                "reconciling the new generation",
            ),
            Condition::new(
                RECONCILING,
                ConditionStatus::True,
                reason::PROGRESSING,
                "reconciling the new generation",
            ),
        ],
        generation,
        &now,
    );
    Some(next)
}

/// `spec` against the bounds the CRD states ([`limits`]), for an object that bypassed them (an
/// older CRD, a schema that was edited): the first problem found, for an `InvalidSpec` stall.
/// What could otherwise happen is worse than a rejected apply: a panic, a worker that cannot run,
/// a Job the API server refuses on every retry, a status too large to write.
pub fn check_spec(spec: &SociIndexSpec) -> Result<(), String> {
    use limits::*;
    let count = spec.images.len();
    if count == 0 || count > MAX_IMAGES {
        return Err(format!(
            "spec.images has {count} entries: 1 to {MAX_IMAGES} are allowed"
        ));
    }
    let mut names = HashSet::new();
    for image in &spec.images {
        let name = quote(&image.name);
        if !is_dns_label(&image.name, MAX_IMAGE_NAME) {
            return Err(format!(
                "spec.images name {name} is not a DNS label (a-z, 0-9 and '-', at most {MAX_IMAGE_NAME})"
            ));
        }
        if !names.insert(image.name.as_str()) {
            return Err(format!("spec.images has two entries named {name}"));
        }
        check_length(
            &format!("spec.images[{}].image", image.name),
            &image.image,
            1,
            MAX_IMAGE_REFERENCE,
        )?;
    }
    if spec.platforms.len() > MAX_PLATFORMS {
        return Err(format!(
            "spec.platforms has {} entries: at most {MAX_PLATFORMS} are allowed",
            spec.platforms.len()
        ));
    }
    for platform in &spec.platforms {
        check_length("a spec.platforms entry", platform, 1, MAX_PLATFORM)?;
    }
    check_range(
        "spec.minLayerSize",
        spec.min_layer_size,
        0,
        MAX_MIN_LAYER_SIZE,
    )?;
    check_range(
        "spec.spanSize",
        spec.span_size,
        MIN_SPAN_SIZE,
        MAX_SPAN_SIZE,
    )?;
    if let Some(text) = &spec.interval {
        bounded_interval(text).map_err(|why| format!("spec.interval {why}"))?;
    }
    if let Some(target) = &spec.target {
        if let Some(suffix) = &target.tag_suffix {
            check_length("spec.target.tagSuffix", suffix, 1, MAX_TAG_SUFFIX)?;
        }
        if let Some(template) = &target.tag_template {
            check_length("spec.target.tagTemplate", template, 1, MAX_TAG_TEMPLATE)?;
        }
        let ways = usize::from(target.tag_suffix.is_some())
            + usize::from(target.tag_template.is_some())
            + usize::from(target.in_place == Some(true));
        if ways > 1 {
            return Err(
                "spec.target: set at most one of tagSuffix, tagTemplate and inPlace".into(),
            );
        }
    }
    if let Some(credentials) = &spec.credentials {
        if credentials.secret_refs.len() > MAX_SECRET_REFS {
            return Err(format!(
                "spec.credentials.secretRefs has {} entries: at most {MAX_SECRET_REFS} are allowed",
                credentials.secret_refs.len()
            ));
        }
        for secret in &credentials.secret_refs {
            check_object_name("spec.credentials.secretRefs name", &secret.name)?;
        }
        if let Some(account) = &credentials.service_account_name {
            check_object_name("spec.credentials.serviceAccountName", account)?;
        }
    }
    if let Some(job) = &spec.job {
        check_job(job)?;
    }
    Ok(())
}

fn check_job(job: &crate::api::JobSettings) -> Result<(), String> {
    use limits::*;
    if job.node_selector.len() > MAX_NODE_SELECTOR {
        return Err(format!(
            "spec.job.nodeSelector has {} entries: at most {MAX_NODE_SELECTOR} are allowed",
            job.node_selector.len()
        ));
    }
    for (key, value) in &job.node_selector {
        check_length("a spec.job.nodeSelector key", key, 1, MAX_LABEL_KEY)?;
        check_length("a spec.job.nodeSelector value", value, 0, MAX_LABEL_VALUE)?;
    }
    if job.tolerations.len() > MAX_TOLERATIONS {
        return Err(format!(
            "spec.job.tolerations has {} entries: at most {MAX_TOLERATIONS} are allowed",
            job.tolerations.len()
        ));
    }
    for toleration in &job.tolerations {
        if let Some(key) = &toleration.key {
            check_length("a spec.job.tolerations key", key, 0, MAX_LABEL_KEY)?;
        }
        if let Some(value) = &toleration.value {
            check_length("a spec.job.tolerations value", value, 0, MAX_LABEL_VALUE)?;
        }
        if let Some(operator) = &toleration.operator {
            check_length("a spec.job.tolerations operator", operator, 0, 16)?;
        }
        if let Some(effect) = &toleration.effect {
            check_length("a spec.job.tolerations effect", effect, 0, 32)?;
        }
    }
    if let Some(resources) = &job.resources {
        let entries = [
            ("limits", resources.limits.as_ref().map_or(0, |m| m.len())),
            (
                "requests",
                resources.requests.as_ref().map_or(0, |m| m.len()),
            ),
            ("claims", resources.claims.as_ref().map_or(0, |c| c.len())),
        ];
        for (what, n) in entries {
            if n > MAX_RESOURCE_ENTRIES {
                return Err(format!(
                    "spec.job.resources.{what} has {n} entries: at most {MAX_RESOURCE_ENTRIES} are allowed"
                ));
            }
        }
        let quantities = [&resources.limits, &resources.requests]
            .into_iter()
            .flatten()
            .flat_map(|m| m.values());
        for quantity in quantities {
            check_length("a spec.job.resources quantity", &quantity.0, 1, 64)?;
        }
        for claim in resources.claims.iter().flatten() {
            check_length("a spec.job.resources.claims name", &claim.name, 1, 63)?;
        }
    }
    check_range(
        "spec.job.activeDeadlineSeconds",
        job.active_deadline_seconds,
        MIN_ACTIVE_DEADLINE_SECONDS,
        MAX_ACTIVE_DEADLINE_SECONDS,
    )?;
    check_range(
        "spec.job.backoffLimit",
        job.backoff_limit.map(i64::from),
        0,
        i64::from(MAX_BACKOFF_LIMIT),
    )
}

/// `text` in quotes, cut short (it may be as long as the API server admits).
fn quote(text: &str) -> String {
    let mut quoted = format!("{text:?}");
    condition::truncate(&mut quoted, 80);
    quoted
}

fn check_length(what: &str, text: &str, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&text.len()) {
        return Ok(());
    }
    Err(format!(
        "{what} {} is {} bytes long: {min} to {max} are allowed",
        quote(text),
        text.len()
    ))
}

fn check_range(what: &str, value: Option<i64>, min: i64, max: i64) -> Result<(), String> {
    match value {
        Some(v) if !(min..=max).contains(&v) => {
            Err(format!("{what} is {v}: {min} to {max} are allowed"))
        }
        _ => Ok(()),
    }
}

/// A Secret or ServiceAccount name: a DNS subdomain.
fn check_object_name(what: &str, name: &str) -> Result<(), String> {
    let valid = name.len() <= limits::MAX_OBJECT_NAME
        && name.split('.').all(|label| is_dns_label(label, 63));
    if valid {
        return Ok(());
    }
    Err(format!(
        "{what} {} is not a DNS subdomain (a-z, 0-9, '-' and '.', at most {})",
        quote(name),
        limits::MAX_OBJECT_NAME
    ))
}

fn is_dns_label(label: &str, max: usize) -> bool {
    let b = label.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    !b.is_empty() && b.len() <= max && b.iter().all(inner) && b[0] != b'-' && b[b.len() - 1] != b'-'
}

/// The status of an object that the controller does not act on (`InvalidSpec`,
/// `InternalError`): `Ready` false and `Stalled` true, with `reason` and `message`. The images'
/// entries are kept: they record what was pushed (what cleanup removes, what to deploy).
pub fn stalled_status(
    previous: Option<&SociIndexStatus>,
    generation: Option<i64>,
    why: &str,
    message: &str,
    now: Timestamp,
) -> SociIndexStatus {
    boundary_status(
        previous,
        generation,
        [
            (READY, ConditionStatus::False),
            (STALLED, ConditionStatus::True),
        ],
        why,
        message,
        now,
    )
}

/// The status of an object whose reconcile was abandoned and is retried (`ReconcileTimeout`):
/// `Ready` unknown and `Reconciling` true; the images' entries are kept.
pub fn retrying_status(
    previous: Option<&SociIndexStatus>,
    generation: Option<i64>,
    why: &str,
    message: &str,
    now: Timestamp,
) -> SociIndexStatus {
    boundary_status(
        previous,
        generation,
        [
            (READY, ConditionStatus::Unknown),
            (RECONCILING, ConditionStatus::True),
        ],
        why,
        message,
        now,
    )
}

fn boundary_status(
    previous: Option<&SociIndexStatus>,
    generation: Option<i64>,
    conditions: [(&str, ConditionStatus); 2],
    why: &str,
    message: &str,
    now: Timestamp,
) -> SociIndexStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let wanted = conditions
        .into_iter()
        .map(|(type_, s)| Condition::new(type_, s, why, message))
        .collect();
    status.conditions = condition::merge(&status.conditions, wanted, generation, &rfc3339(now));
    status.observed_generation = generation;
    budget::fit(&mut status, budget::STATUS_BUDGET);
    status
}

/// Where one image stands after this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Verified,
    InProgress,
    Stalled,
}

struct ImageOutcome {
    status: ImageStatus,
    standing: Standing,
    create: Option<BuildRequest>,
    delete: Vec<String>,
    requeue: Option<Duration>,
    queued: bool,
}

pub fn plan(input: PlanInput<'_>) -> Plan {
    let now_text = rfc3339(input.now);
    let previous = input.status.cloned().unwrap_or_default();
    // The reconcile stalls a spec with an interval out of bounds before it plans
    // ([`check_spec`]); the plan holds any spec in bounds all the same.
    let interval = input
        .spec
        .interval
        .as_deref()
        .and_then(|text| bounded_interval(text).ok())
        .unwrap_or(input.default_interval)
        .clamp(MIN_INTERVAL, MAX_INTERVAL);

    if input.spec.suspend {
        let mut status = previous.clone();
        status.observed_generation = input.generation;
        let mut wanted: Vec<Condition> = previous
            .conditions
            .iter()
            .filter(|c| c.type_ == READY)
            .cloned()
            .collect();
        if wanted.is_empty() {
            wanted.push(Condition::new(
                READY,
                ConditionStatus::Unknown,
                reason::SUSPENDED,
                "suspended before the first reconcile",
            ));
        }
        status.conditions =
            condition::merge(&previous.conditions, wanted, input.generation, &now_text);
        return Plan {
            create: vec![],
            delete: vec![],
            status,
            requeue_after: None,
            queued: 0,
        };
    }

    // A new reconcile request, or a new generation, lifts the stall of every image.
    let honour_stalls = status_is_current(&previous, input.generation, input.reconcile_request);
    let settings = BuildSettings::from_spec(input.spec);

    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut images = Vec::new();
    let mut standings = Vec::new();
    let mut requeue: Option<Duration> = None;
    let mut capacity = input.capacity.clone();
    let mut queued = 0;
    for observation in &input.images {
        let spec_image = input
            .spec
            .images
            .iter()
            .find(|i| i.name == observation.name);
        let Some(spec_image) = spec_image else {
            continue;
        };
        let before = previous.images.iter().find(|s| s.name == observation.name);
        let jobs: Vec<&ObservedJob> = input
            .jobs
            .iter()
            .filter(|j| j.image_name == observation.name)
            .collect();
        let outcome = plan_image(
            &input,
            &settings,
            &spec_image.image,
            observation,
            before,
            &jobs,
            honour_stalls,
            &mut capacity,
            &now_text,
        );
        queued += usize::from(outcome.queued);
        if let Some(r) = outcome.requeue {
            requeue = Some(requeue.map_or(r, |q: Duration| q.min(r)));
        }
        create.extend(outcome.create);
        delete.extend(outcome.delete);
        standings.push((outcome.standing, observation.name.clone()));
        images.push(outcome.status);
    }
    // Jobs of images that left the spec.
    for job in &input.jobs {
        if !job.deleting && !input.images.iter().any(|o| o.name == job.image_name) {
            delete.push(job.name.clone());
        }
    }

    let desired = images.len() as i32;
    let ready = standings
        .iter()
        .filter(|(s, _)| *s == Standing::Verified)
        .count() as i32;
    let in_progress = standings.iter().any(|(s, _)| *s == Standing::InProgress);
    let first_stalled = images
        .iter()
        .zip(&standings)
        .find(|(_, (s, _))| *s == Standing::Stalled)
        .map(|(i, _)| i);

    let mut wanted = Vec::new();
    if ready == desired {
        wanted.push(Condition::new(
            READY,
            ConditionStatus::True,
            reason::VERIFIED,
            format!("{ready}/{desired} images are bound to a verified SOCI index"),
        ));
    } else if let (Some(stalled), false) = (first_stalled, in_progress) {
        let lazy = condition::find(&stalled.conditions, LAZY_LOAD_READY);
        let reason = lazy.map_or(reason::BUILD_FAILED, |c| c.reason.as_str());
        let message = format!(
            "image {}: {}",
            stalled.name,
            lazy.map_or("", |c| c.message.as_str())
        );
        wanted.push(Condition::new(
            READY,
            ConditionStatus::False,
            reason,
            message.clone(),
        ));
        wanted.push(Condition::new(
            STALLED,
            ConditionStatus::True,
            reason,
            message,
        ));
    } else {
        let waiting: Vec<&str> = images
            .iter()
            .zip(&standings)
            .filter(|(_, (s, _))| *s == Standing::InProgress)
            .map(|(i, _)| i.name.as_str())
            .collect();
        let message = format!(
            "{ready}/{desired} images ready; in progress: {}",
            waiting.join(", ")
        );
        wanted.push(Condition::new(
            READY,
            ConditionStatus::Unknown,
            reason::PROGRESSING,
            message.clone(),
        ));
        wanted.push(Condition::new(
            RECONCILING,
            ConditionStatus::True,
            reason::PROGRESSING,
            message,
        ));
    }
    if !in_progress {
        // Settled (ready or stalled): look again after the interval only.
        let next = jittered(interval, input.uid);
        requeue = Some(requeue.map_or(next, |q| q.min(next)));
    }

    let mut status = SociIndexStatus {
        observed_generation: input.generation,
        conditions: condition::merge(&previous.conditions, wanted, input.generation, &now_text),
        ready_images: ready,
        desired_images: desired,
        summary: Some(format!("{ready}/{desired}")),
        last_handled_reconcile_at: input
            .reconcile_request
            .map(str::to_string)
            .or(previous.last_handled_reconcile_at.clone()),
        images,
    };
    budget::fit(&mut status, budget::STATUS_BUDGET);
    Plan {
        create,
        delete,
        status,
        requeue_after: requeue,
        queued,
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_image(
    input: &PlanInput<'_>,
    settings: &BuildSettings,
    spec_image: &str,
    observation: &ImageObservation,
    before: Option<&ImageStatus>,
    jobs: &[&ObservedJob],
    honour_stalls: bool,
    capacity: &mut Capacity,
    now: &str,
) -> ImageOutcome {
    let previous = before.cloned().unwrap_or_default();
    let mut status = ImageStatus {
        name: observation.name.clone(),
        image: spec_image.to_string(),
        // Kept while nothing better is known: the last verified target stays deployable.
        source_digest: previous.source_digest.clone(),
        target: previous.target.clone(),
        target_digest: previous.target_digest.clone(),
        deploy: previous.deploy.clone(),
        platforms: previous.platforms.clone(),
        job: previous.job.clone(),
        last_build_time: previous.last_build_time.clone(),
        failures: previous.failures,
        conditions: vec![],
    };
    let outcome = |status: ImageStatus,
                   standing: Standing,
                   lazy: Condition,
                   create: Option<BuildRequest>,
                   delete: Vec<String>,
                   requeue: Option<Duration>| {
        let mut status = status;
        status.conditions =
            condition::merge(&previous.conditions, vec![lazy], input.generation, now);
        ImageOutcome {
            status,
            standing,
            create,
            delete,
            requeue,
            queued: false,
        }
    };
    let all_job_names = || -> Vec<String> {
        jobs.iter()
            .filter(|j| !j.deleting && j.state != JobState::Running)
            .map(|j| j.name.clone())
            .collect()
    };

    let resolved = match &observation.resolved {
        Ok(r) => r,
        Err(f) => {
            let (standing, requeue, cond_status) = failure_standing(f, &mut status);
            let lazy = Condition::new(LAZY_LOAD_READY, cond_status, &f.reason, &f.message);
            // A source that can no longer be resolved makes its finished Jobs pointless.
            let delete = if f.class == FailureClass::Permanent {
                all_job_names()
            } else {
                vec![]
            };
            return outcome(status, standing, lazy, None, delete, requeue);
        }
    };
    // In place, the tag resolves to what we pushed: the digest we built from stays recorded
    // (deletionPolicy Delete restores it).
    let resolves_to_ours = previous.target_digest.as_deref() == Some(resolved.digest.as_str())
        && previous.target.as_deref() == Some(resolved.target.as_str());
    if !resolves_to_ours || previous.source_digest.is_none() {
        status.source_digest = Some(resolved.digest.clone());
    }
    status.target = Some(resolved.target.clone());
    let name = job_name(
        input.uid,
        &observation.name,
        &resolved.digest,
        &resolved.target,
        settings,
    );
    // Jobs that build something else (an older digest, other settings) are obsolete.
    let obsolete: Vec<String> = jobs
        .iter()
        .filter(|j| j.name != name && !j.deleting)
        .map(|j| j.name.clone())
        .collect();
    let current = jobs.iter().find(|j| j.name == name && !j.deleting);
    let target = observation
        .target
        .clone()
        .unwrap_or(Ok(TargetCheck::Missing));

    // The registry answer wins: a bound target is ready whatever the Jobs say.
    match &target {
        Ok(TargetCheck::Bound { digest, platforms }) => {
            status.target_digest = Some(digest.clone());
            status.deploy = Some(format!("{}@{digest}", resolved.target));
            status.platforms = platforms.clone();
            status.failures = 0;
            if let Some(job) = current
                && job.state == JobState::Succeeded
            {
                status.job = Some(job.name.clone());
                if let Some(t) = job.finished_at {
                    status.last_build_time = Some(rfc3339(t));
                }
            }
            let lazy = Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::True,
                reason::VERIFIED,
                format!("deploy {}@{digest}", resolved.target),
            );
            return outcome(status, Standing::Verified, lazy, None, obsolete, None);
        }
        Err(f) => {
            let (standing, requeue, cond_status) = failure_standing(f, &mut status);
            let lazy = Condition::new(LAZY_LOAD_READY, cond_status, &f.reason, &f.message);
            return outcome(status, standing, lazy, None, obsolete, requeue);
        }
        Ok(TargetCheck::Missing) | Ok(TargetCheck::NotBound { .. }) => {}
    }
    // The target is not (or no longer) a valid binding of this source.
    status.target_digest = None;
    status.deploy = None;
    status.platforms.clear();
    let drift = match &target {
        Ok(TargetCheck::NotBound { message }) => Some(message.clone()),
        _ => None,
    };
    match current.map(|j| (&j.state, j)) {
        Some((JobState::Running, job)) => {
            status.job = Some(job.name.clone());
            let lazy = Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::Unknown,
                reason::BUILDING,
                format!("Job {} is building {}", job.name, resolved.target),
            );
            outcome(
                status,
                Standing::InProgress,
                lazy,
                None,
                obsolete,
                Some(RUNNING_JOB_RECHECK),
            )
        }
        Some((JobState::Succeeded, job)) if status.failures == 0 => {
            // The target was deleted or damaged after the build (or never bound): build it
            // once more. The finished Job (same name) goes first; the next reconcile creates
            // the new one. `failures` (reset when the target verifies) makes a rebuild that
            // does not bind either stall below instead of looping.
            status.failures = 1;
            let mut delete = obsolete;
            delete.push(job.name.clone());
            let lazy = Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::Unknown,
                reason::TARGET_DRIFTED,
                format!(
                    "Job {} succeeded, but {} is now {}: rebuilding",
                    job.name,
                    resolved.target,
                    drift.as_deref().unwrap_or("missing")
                ),
            );
            outcome(
                status,
                Standing::InProgress,
                lazy,
                None,
                delete,
                Some(Duration::from_secs(5)),
            )
        }
        Some((JobState::Succeeded, job)) => {
            // The worker says done, the registry disagrees: rebuilding would fail the same way.
            status.job = Some(job.name.clone());
            let message = format!(
                "Job {} succeeded but {} is not a valid SOCI binding of {}: {}",
                job.name,
                resolved.target,
                resolved.source,
                drift.as_deref().unwrap_or("the target tag is missing")
            );
            let lazy = Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::False,
                reason::VERIFICATION_FAILED,
                message,
            );
            outcome(status, Standing::Stalled, lazy, None, obsolete, None)
        }
        Some((JobState::Failed(f), job)) => {
            status.job = Some(job.name.clone());
            let message = format!("Job {}: {}", job.name, f.message);
            if f.class == FailureClass::Permanent {
                let lazy =
                    Condition::new(LAZY_LOAD_READY, ConditionStatus::False, &f.reason, message);
                return outcome(status, Standing::Stalled, lazy, None, obsolete, None);
            }
            // Transient: keep the failed Job (it blocks a re-create) until the backoff is over.
            let wait = backoff(status.failures.max(1) as u32);
            let due = job
                .finished_at
                .map(|t| input.now.duration_since(t).unsigned_abs() >= wait)
                .unwrap_or(true);
            let mut delete = obsolete;
            let requeue = if due {
                status.failures = status.failures.saturating_add(1);
                delete.push(job.name.clone());
                Duration::from_secs(5)
            } else {
                let elapsed = job
                    .finished_at
                    .map(|t| input.now.duration_since(t).unsigned_abs())
                    .unwrap_or_default();
                wait.saturating_sub(elapsed).max(Duration::from_secs(1))
            };
            // Unknown, not False: the outcome is open, and a False build reason is what marks a
            // permanent stall for later reconciles.
            let lazy = Condition::new(
                LAZY_LOAD_READY,
                ConditionStatus::Unknown,
                &f.reason,
                format!("{message}; retrying"),
            );
            outcome(
                status,
                Standing::InProgress,
                lazy,
                None,
                delete,
                Some(requeue),
            )
        }
        None => {
            // A permanent failure of this very build is not retried until the spec changes or a
            // reconcile is requested, even when its Job has been cleaned up since.
            let previous_lazy = condition::find(&previous.conditions, LAZY_LOAD_READY);
            if honour_stalls
                && previous.job.as_deref() == Some(name.as_str())
                && previous.source_digest.as_deref() == Some(resolved.digest.as_str())
                && let Some(lazy) = previous_lazy
                && lazy.status == ConditionStatus::False
                && is_permanent_build_reason(&lazy.reason)
            {
                let lazy = lazy.clone();
                return outcome(status, Standing::Stalled, lazy, None, obsolete, None);
            }
            let key = build_key(&resolved.digest, &resolved.target, settings);
            if let Some(other) = input.builds_elsewhere.get(&key) {
                // Another SociIndex's Job is building these very bytes: its result is checked
                // here like any other target once it is done.
                let lazy = Condition::new(
                    LAZY_LOAD_READY,
                    ConditionStatus::Unknown,
                    reason::BUILDING,
                    format!(
                        "Job {other} (another SociIndex) is building {} from the same source",
                        resolved.target
                    ),
                );
                return outcome(
                    status,
                    Standing::InProgress,
                    lazy,
                    None,
                    obsolete,
                    Some(QUEUED_RECHECK),
                );
            }
            if let Err(why) = capacity.take(&registry_host(&resolved.source)) {
                // No Job now; the same build is planned again once a slot is free.
                let message = match &drift {
                    Some(m) => format!("{m}; waiting for a build slot: {why}"),
                    None => format!("waiting for a build slot: {why}"),
                };
                let lazy = Condition::new(
                    LAZY_LOAD_READY,
                    ConditionStatus::Unknown,
                    reason::QUEUED,
                    message,
                );
                let mut queued = outcome(
                    status,
                    Standing::InProgress,
                    lazy,
                    None,
                    obsolete,
                    Some(QUEUED_RECHECK),
                );
                queued.queued = true;
                return queued;
            }
            status.job = Some(name.clone());
            let (why, message) = match &drift {
                Some(m) => (
                    reason::TARGET_DRIFTED,
                    format!("{m}; Job {name} is rebuilding it"),
                ),
                None => (
                    reason::BUILDING,
                    format!("Job {name} is building {}", resolved.target),
                ),
            };
            let lazy = Condition::new(LAZY_LOAD_READY, ConditionStatus::Unknown, why, message);
            let request = BuildRequest {
                job_name: name,
                image_name: observation.name.clone(),
                source: resolved.source.clone(),
                source_digest: resolved.digest.clone(),
                target: resolved.target.clone(),
                settings: settings.clone(),
            };
            outcome(
                status,
                Standing::InProgress,
                lazy,
                Some(request),
                obsolete,
                Some(RUNNING_JOB_RECHECK),
            )
        }
    }
}

fn is_permanent_build_reason(reason: &str) -> bool {
    [
        reason::BUILD_FAILED,
        reason::VERIFICATION_FAILED,
        reason::IMAGE_NOT_FOUND,
        reason::UNAUTHORIZED,
        reason::NO_INDEXABLE_LAYERS,
        reason::INVALID_REFERENCE,
        reason::DEADLINE_EXCEEDED,
    ]
    .contains(&reason)
}

/// How a registry failure seen by the controller itself weighs: permanent ones stall, transient
/// ones count towards the backoff.
fn failure_standing(
    f: &Failure,
    status: &mut ImageStatus,
) -> (Standing, Option<Duration>, ConditionStatus) {
    match f.class {
        FailureClass::Permanent => (Standing::Stalled, None, ConditionStatus::False),
        FailureClass::Transient => {
            status.failures = status.failures.saturating_add(1);
            (
                Standing::InProgress,
                Some(backoff(status.failures.max(0) as u32)),
                ConditionStatus::Unknown,
            )
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_tenant_tests.rs"]
mod tenant_tests;
