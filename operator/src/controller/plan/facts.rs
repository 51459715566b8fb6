//! What the plan is given and gives: plain facts observed from the registry and the Jobs,
//! the failures they carry, the build settings and the Job slots.

use crate::api::{IndexVersion, PlatformStatus, SociIndexSpec};
use crate::controller::naming::build_key;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

pub use crate::reason::{Failure, FailureClass};

pub const DEFAULT_MIN_LAYER_SIZE: i64 = 10 << 20;
pub const DEFAULT_SPAN_SIZE: i64 = 4 << 20;

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
