//! The pure part of a policy's reconcile: the images its sources found → the selection
//! (include/exclude, one entry per reference, the cap) → the children it wants → what to do
//! with the children that exist (apply, mark unused, delete after the retention) → its status.

use crate::api::condition::{self, READY, RECONCILING, STALLED};
use crate::api::policy::{
    PolicySpec, PolicyStatus, SociIndexTemplate, SourceStatus, policy_limits,
};
use crate::api::{
    Condition, ConditionStatus, Credentials, ImageSpec, SecretRef, SociIndex, SociIndexSpec,
};
use crate::controller::durations::{parse_duration, rfc3339};
use crate::reason::Reason;
use globset::{GlobSet, GlobSetBuilder};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Labels and annotations of a child SociIndex.
pub const POLICY_UID_LABEL: &str = "soci.dev/policy-uid";
pub const POLICY_NAME_LABEL: &str = "soci.dev/policy";
pub const POLICY_KIND_LABEL: &str = "soci.dev/policy-kind";
/// The selected reference a child stands for.
pub const IMAGE_ANNOTATION: &str = "soci.dev/policy-image";
/// The source that found it (`workloads` or a repository).
pub const SOURCE_ANNOTATION: &str = "soci.dev/policy-source";
/// Since when the image is no longer selected (the retention clock, kept on the child so that a
/// restarted operator keeps counting).
pub const UNUSED_SINCE_ANNOTATION: &str = "soci.dev/unused-since";
pub const WORKLOADS_SOURCE: &str = "workloads";

/// One image a source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `registry/repository:tag` (or `@digest` when the Pod names only a digest), normalised:
    /// what include/exclude match and what keys the child.
    pub reference: String,
    /// The digest the node resolved it to (workloads), to pin the build to what runs.
    pub digest: Option<String>,
    /// `workloads` or the repository.
    pub source: String,
    /// Pull secrets of the Pods that run it (SociIndexPolicy only).
    pub pull_secrets: BTreeSet<String>,
    /// When the newest Pod running it was created: its digest wins.
    pub seen: Option<Timestamp>,
}

/// What the policy's patterns and settings say, checked once per reconcile.
pub struct Settings {
    include: Option<GlobSet>,
    exclude: GlobSet,
    pub max_images: usize,
    pub retention: Duration,
    pub interval: Duration,
}

impl Settings {
    pub fn from_spec(spec: &PolicySpec) -> Result<Self, String> {
        let build = |patterns: &[String], what: &str| -> Result<GlobSet, String> {
            if patterns.len() > policy_limits::MAX_PATTERNS {
                return Err(format!(
                    "{what} has {} patterns (at most {})",
                    patterns.len(),
                    policy_limits::MAX_PATTERNS
                ));
            }
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                if p.len() > policy_limits::MAX_PATTERN {
                    return Err(format!(
                        "{what} pattern longer than {} characters",
                        policy_limits::MAX_PATTERN
                    ));
                }
                let glob = globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("{what} pattern {p:?}: {e}"))?;
                set.add(glob);
            }
            set.build().map_err(|e| format!("{what}: {e}"))
        };
        let include = if spec.include.is_empty() {
            None
        } else {
            Some(build(&spec.include, "include")?)
        };
        let exclude = build(&spec.exclude, "exclude")?;
        let max_images = spec.max_images.unwrap_or(policy_limits::DEFAULT_MAX_IMAGES);
        if !(1..=policy_limits::MAX_MAX_IMAGES).contains(&max_images) {
            return Err(format!(
                "maxImages must be between 1 and {}",
                policy_limits::MAX_MAX_IMAGES
            ));
        }
        let duration = |text: Option<&str>, default: &str, what: &str| {
            parse_duration(text.unwrap_or(default))
                .map_err(|e| format!("{what}: not a Go duration ({e:?})"))
        };
        let retention = duration(
            spec.retention.as_deref(),
            policy_limits::DEFAULT_RETENTION,
            "retention",
        )?;
        if retention > Duration::from_secs(720 * 3600) {
            return Err("retention must be at most 720h (30 days)".into());
        }
        let interval = match &spec.interval {
            Some(text) => crate::controller::durations::bounded_interval(text)
                .map_err(|e| format!("interval: {e}"))?,
            None => duration(None, policy_limits::DEFAULT_INTERVAL, "interval")?,
        };
        if let Some(text) = &spec.template.interval {
            crate::controller::durations::bounded_interval(text)
                .map_err(|e| format!("template.interval: {e}"))?;
        }
        Ok(Self {
            include,
            exclude,
            max_images: max_images as usize,
            retention,
            interval,
        })
    }

    /// Whether include/exclude let `reference` through (matched without its digest).
    pub fn admits(&self, reference: &str) -> bool {
        let name = reference.split('@').next().unwrap_or(reference);
        let included = self
            .include
            .as_ref()
            .is_none_or(|set| set.is_match(name) || set.is_match(reference));
        included && !(self.exclude.is_match(name) || self.exclude.is_match(reference))
    }
}

/// The images a policy selects: one per reference, in reference order, cut at the cap.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    pub images: Vec<Candidate>,
    /// Selected but past `maxImages`.
    pub cut: Vec<String>,
}

impl Selection {
    pub fn selected(&self) -> usize {
        self.images.len() + self.cut.len()
    }
}

/// Include/exclude, merged per reference (the newest Pod's digest, every Pod's pull secrets),
/// sorted, and cut at `max_images`.
pub fn select(candidates: Vec<Candidate>, settings: &Settings) -> Selection {
    let mut merged: BTreeMap<String, Candidate> = BTreeMap::new();
    for c in candidates
        .into_iter()
        .filter(|c| settings.admits(&c.reference))
    {
        match merged.get_mut(&c.reference) {
            None => {
                merged.insert(c.reference.clone(), c);
            }
            Some(m) => {
                m.pull_secrets.extend(c.pull_secrets.iter().cloned());
                let newer = c.digest.is_some() && (m.digest.is_none() || c.seen > m.seen);
                if newer {
                    m.digest = c.digest;
                    m.seen = c.seen;
                }
                // Workloads name it first; a repository that also names it keeps it.
                if c.source < m.source {
                    m.source = c.source;
                }
            }
        }
    }
    let mut images: Vec<Candidate> = merged.into_values().collect();
    let cut = images
        .split_off(settings.max_images.min(images.len()))
        .into_iter()
        .map(|c| c.reference)
        .collect();
    Selection { images, cut }
}

/// Which policy a child belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `SociIndexPolicy` or `ClusterSociIndexPolicy`.
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
    /// Where its children live.
    pub child_namespace: String,
}

/// The child's name: the policy's name (cut to 40 characters) and a hash of the policy kind,
/// name and reference, so that one reference always gets the same child.
pub fn child_name(owner: &Owner, reference: &str) -> String {
    let mut h = Sha256::new();
    for part in [owner.kind, owner.name.as_str(), reference] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix: String = owner.name.chars().take(40).collect();
    format!("{}-{hex}", prefix.trim_end_matches(['-', '.']))
}

/// The key of the child's one image: the repository's last path segment, as a SociIndex image
/// name may be written.
pub fn image_name(reference: &str) -> String {
    let name = reference.split(['@', ':']).next().unwrap_or_default();
    let name = reference
        .rsplit_once('/')
        .map(|(_, last)| last.split(['@', ':']).next().unwrap_or(last))
        .unwrap_or(name);
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    out = out.trim_matches('-').to_string();
    if out.is_empty() { "image".into() } else { out }
}

/// The spec a child gets: the template and the one image (pinned to the digest that runs).
pub fn child_spec(template: &SociIndexTemplate, image: &Candidate) -> SociIndexSpec {
    let reference = match (&image.digest, image.reference.contains('@')) {
        (Some(d), false) => format!("{}@{d}", image.reference),
        _ => image.reference.clone(),
    };
    let mut credentials = template.credentials.clone();
    if !image.pull_secrets.is_empty() {
        let c = credentials.get_or_insert_with(Credentials::default);
        let mut names: BTreeSet<String> = c.secret_refs.iter().map(|s| s.name.clone()).collect();
        names.extend(image.pull_secrets.iter().cloned());
        c.secret_refs = names
            .into_iter()
            .take(crate::api::limits::MAX_SECRET_REFS)
            .map(|name| SecretRef { name })
            .collect();
    }
    let mut settings = template.clone();
    settings.credentials = credentials;
    SociIndexSpec {
        images: vec![ImageSpec {
            name: image_name(&image.reference),
            image: reference,
        }],
        settings,
        suspend: false,
    }
}

/// A child as the plan sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingChild {
    pub name: String,
    /// Controlled by this policy (else the name is taken by someone else's object).
    pub ours: bool,
    pub spec: SociIndexSpec,
    pub reference: Option<String>,
    pub source: Option<String>,
    pub unused_since: Option<Timestamp>,
    pub ready: bool,
}

impl ExistingChild {
    pub fn of(object: &SociIndex, owner_uid: &str) -> Self {
        let annotations = &object.metadata.annotations;
        let annotation = |key: &str| annotations.as_ref().and_then(|a| a.get(key)).cloned();
        let ours = object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == owner_uid);
        let ready = object
            .status
            .as_ref()
            .and_then(|s| condition::find(&s.conditions, READY))
            .is_some_and(|c| {
                c.status == ConditionStatus::True
                    && c.observed_generation == object.metadata.generation
            });
        Self {
            name: object.metadata.name.clone().unwrap_or_default(),
            ours,
            spec: object.spec.clone(),
            reference: annotation(IMAGE_ANNOTATION),
            source: annotation(SOURCE_ANNOTATION),
            unused_since: annotation(UNUSED_SINCE_ANNOTATION).and_then(|t| t.parse().ok()),
            ready,
        }
    }
}

/// A child to create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedChild {
    pub name: String,
    pub reference: String,
    pub source: String,
    pub spec: SociIndexSpec,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChildrenPlan {
    /// Missing or different: server-side apply them.
    pub apply: Vec<WantedChild>,
    /// Selected again: clear their retention clock.
    pub mark_used: Vec<String>,
    /// No longer selected: start their retention clock.
    pub mark_unused: Vec<String>,
    /// Unused for longer than the retention.
    pub delete: Vec<String>,
    /// A wanted name held by an object this policy does not control.
    pub conflicts: Vec<String>,
    /// The next retention expiry, to come back then.
    pub next_expiry: Option<Duration>,
}

/// What to do with the children, given the selection and what exists. `failing_sources`:
/// sources whose listing failed this time, whose existing children are kept as they are.
pub fn plan_children(
    owner: &Owner,
    template: &SociIndexTemplate,
    selection: &Selection,
    existing: &[ExistingChild],
    failing_sources: &BTreeSet<String>,
    retention: Duration,
    now: Timestamp,
) -> ChildrenPlan {
    let mut plan = ChildrenPlan::default();
    let by_name: BTreeMap<&str, &ExistingChild> =
        existing.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut wanted_names = BTreeSet::new();
    for image in &selection.images {
        let name = child_name(owner, &image.reference);
        wanted_names.insert(name.clone());
        let spec = child_spec(template, image);
        match by_name.get(name.as_str()) {
            Some(child) if !child.ours => plan.conflicts.push(name),
            Some(child) => {
                if child.spec != spec
                    || child.reference.as_deref() != Some(&image.reference)
                    || child.source.as_deref() != Some(&image.source)
                {
                    plan.apply.push(WantedChild {
                        name: name.clone(),
                        reference: image.reference.clone(),
                        source: image.source.clone(),
                        spec,
                    });
                }
                if child.unused_since.is_some() {
                    plan.mark_used.push(name);
                }
            }
            None => plan.apply.push(WantedChild {
                name,
                reference: image.reference.clone(),
                source: image.source.clone(),
                spec,
            }),
        }
    }
    for child in existing
        .iter()
        .filter(|c| c.ours && !wanted_names.contains(&c.name))
    {
        if child
            .source
            .as_ref()
            .is_some_and(|s| failing_sources.contains(s))
        {
            continue;
        }
        match child.unused_since {
            None if retention.is_zero() => plan.delete.push(child.name.clone()),
            None => {
                plan.mark_unused.push(child.name.clone());
                plan.next_expiry = min_some(plan.next_expiry, Some(retention));
            }
            Some(since) => {
                let unused = now.duration_since(since).unsigned_abs();
                if unused >= retention {
                    plan.delete.push(child.name.clone());
                } else {
                    plan.next_expiry = min_some(plan.next_expiry, Some(retention - unused));
                }
            }
        }
    }
    plan
}

fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The policy's status after this reconcile: `Ready` when every selected image's child is
/// Ready and every source listed.
#[allow(clippy::too_many_arguments)]
pub fn policy_status(
    owner: &Owner,
    previous: Option<&PolicyStatus>,
    generation: Option<i64>,
    selection: &Selection,
    existing: &[ExistingChild],
    plan: &ChildrenPlan,
    sources: Vec<SourceStatus>,
    reconcile_request: Option<&str>,
    now: Timestamp,
) -> PolicyStatus {
    let ours: BTreeMap<&str, &ExistingChild> = existing
        .iter()
        .filter(|c| c.ours)
        .map(|c| (c.name.as_str(), c))
        .collect();
    // Those deleted now are no longer counted, Ready or not.
    let ready = ours
        .values()
        .filter(|c| c.ready && !plan.delete.contains(&c.name))
        .count();
    let created = plan
        .apply
        .iter()
        .filter(|w| !ours.contains_key(w.name.as_str()))
        .count();
    let total = ours.len() + created - plan.delete.len().min(ours.len());
    let selected_ready = selection
        .images
        .iter()
        .filter(|i| {
            ours.get(child_name(owner, &i.reference).as_str())
                .is_some_and(|c| c.ready)
        })
        .count();
    let wanted = selection.images.len();
    let failing = sources.iter().find(|s| s.error.is_some());
    let (ready_condition, extra) = if let Some(name) = plan.conflicts.first() {
        let message =
            format!("the child name {name} is held by a SociIndex this policy does not control");
        (
            Condition::new(
                READY,
                ConditionStatus::False,
                Reason::TargetConflict,
                &message,
            ),
            Some(Condition::new(
                STALLED,
                ConditionStatus::True,
                Reason::TargetConflict,
                &message,
            )),
        )
    } else if let Some(source) = failing {
        let message = format!(
            "listing {} failed (its children are kept): {}",
            source.source,
            source.error.as_deref().unwrap_or_default()
        );
        (
            Condition::new(
                READY,
                ConditionStatus::False,
                Reason::RegistryUnavailable,
                &message,
            ),
            Some(Condition::new(
                RECONCILING,
                ConditionStatus::True,
                Reason::RegistryUnavailable,
                &message,
            )),
        )
    } else if selected_ready < wanted || !plan.apply.is_empty() {
        let message = format!("{selected_ready} of {wanted} selected images have a Ready child");
        (
            Condition::new(READY, ConditionStatus::False, Reason::Progressing, &message),
            Some(Condition::new(
                RECONCILING,
                ConditionStatus::True,
                Reason::Progressing,
                &message,
            )),
        )
    } else {
        let mut message = format!("{wanted} selected images have a Ready child");
        if !selection.cut.is_empty() {
            message.push_str(&format!(
                "; {} more were cut by maxImages (status.cutImages)",
                selection.cut.len()
            ));
        }
        (
            Condition::new(READY, ConditionStatus::True, "Succeeded", &message),
            None,
        )
    };
    let conditions: Vec<Condition> = std::iter::once(ready_condition).chain(extra).collect();
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    PolicyStatus {
        observed_generation: generation,
        conditions: condition::merge(previous_conditions, conditions, generation, &rfc3339(now)),
        selected_images: selection.selected() as i32,
        children: total as i32,
        ready_children: ready as i32,
        summary: Some(format!("{ready}/{total}")),
        cut_image_count: selection.cut.len() as i32,
        cut_images: selection
            .cut
            .iter()
            .take(policy_limits::MAX_CUT_LISTED)
            .cloned()
            .collect(),
        sources,
        last_handled_reconcile_at: reconcile_request
            .map(str::to_string)
            .or_else(|| previous.and_then(|p| p.last_handled_reconcile_at.clone())),
    }
}

/// The status of a policy whose spec cannot be acted on: `Stalled`, `InvalidSpec`.
pub fn invalid_status(
    previous: Option<&PolicyStatus>,
    generation: Option<i64>,
    why: &str,
    now: Timestamp,
) -> PolicyStatus {
    let message = format!("the policy's spec is invalid: {why}");
    let conditions = vec![
        Condition::new(READY, ConditionStatus::False, Reason::InvalidSpec, &message),
        Condition::new(
            STALLED,
            ConditionStatus::True,
            Reason::InvalidSpec,
            &message,
        ),
    ];
    let mut status = previous.cloned().unwrap_or_default();
    status.conditions = condition::merge(&status.conditions, conditions, generation, &rfc3339(now));
    status.observed_generation = generation;
    status
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
