//! The worker Job: how a [`BuildRequest`](super::plan::BuildRequest) becomes a restricted Job
//! running `soci-operator build`, how the worker reports (JSON in its termination message), and
//! how a finished Job is read back into a [`JobState`](super::plan::JobState).
//!
//! [`job`] writes the Job, [`result`] reads a finished one back, [`tenancy`] is what the admin
//! lets a tenant's spec add to it. The labels and annotations below are what the other parts
//! of the controller find the Jobs by.

pub mod job;
pub mod result;
pub mod tenancy;

#[cfg(test)]
mod test_support;

pub use job::{
    ANONYMOUS_DOCKER_CONFIG, DEFAULT_BACKOFF_LIMIT, DEFAULT_DEADLINE_SECONDS,
    TTL_AFTER_FINISHED_SECONDS, WorkerOptions, WorkerPodConfig, build_job,
};
pub use result::{WorkerResult, job_failure, observe_job};
pub use tenancy::{NamespaceSet, TenantPolicy, admit};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "soci-operator";
pub const OWNER_UID_LABEL: &str = "soci.dev/owner-uid";
pub const IMAGE_LABEL: &str = "soci.dev/image";
/// [`super::naming::build_key`]: Jobs of other SociIndexes building the same bytes are found by it.
pub const BUILD_KEY_LABEL: &str = "soci.dev/build-key";
pub const SOURCE_ANNOTATION: &str = "soci.dev/source";
pub const TARGET_ANNOTATION: &str = "soci.dev/target";
