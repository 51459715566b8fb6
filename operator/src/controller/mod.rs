//! `soci-operator run`: the SociIndex controller.
//!
//! One reconcile reads as its steps ([`reconcile`]): [`observe`] (registry, credentials, Jobs →
//! facts), [`plan`] (pure: the per-image [`plan::rules`] and the object's conditions),
//! [`apply`] (Jobs), [`status`] (one server-side apply) and [`events`]. A deleted object goes
//! to [`cleanup`] (its plan, observe and execute steps, the finalizer). Around them:
//! [`runtime`] runs the Controllers, [`boundary`] guards each reconcile (a panic or a timeout
//! ends that one alone), [`slots`] keeps the Job caps, [`worker`] writes the worker Job
//! ([`worker::job`]), reads its result ([`worker::result`]) and says what a tenant may ask of it
//! ([`worker::tenancy`]), [`registry_check`] (the look-ups, the pure
//! [`compare`](mod@registry_check::compare), the [`settled`](registry_check::settled) recheck)
//! and [`credentials`] are the registry side of observing,
//! [`naming`] and [`durations`] the derived names and times, [`transitions`] the Events a
//! status change makes.

pub mod apply;
pub mod boundary;
pub mod cleanup;
pub mod credentials;
pub mod durations;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod policy_tags;
pub mod push;
pub mod reconcile;
pub mod registry_check;
pub mod runtime;
pub mod slots;
pub mod status;
pub mod transitions;
pub mod worker;

pub use metrics::Metrics;

use crate::api::{SociIndex, SociIndexStatus};
use crate::locks::lock;
use crate::registry::RegistryClient;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker::WorkerOptions;

pub const FIELD_MANAGER: &str = "soci-operator";
/// The first retry of a failed reconcile; each failure in a row doubles it.
const ERROR_RETRY_FIRST: Duration = Duration::from_secs(5);
const ERROR_RETRY_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub registry: Arc<RegistryClient>,
    pub worker: WorkerOptions,
    pub metrics: Metrics,
    /// `--default-interval`.
    pub default_interval: Duration,
    /// When each settled image last had the full check (`--full-check-interval`).
    pub full_checks: FullChecks,
    pub jobs: slots::JobTracker,
    /// Per-object gauge contributions and the last planned status (for Events).
    pub stats: Mutex<transitions::ObjectStats>,
    pub recorder: kube::runtime::events::Recorder,
    /// Set once every watch has its initial list.
    pub synced: AtomicBool,
    /// Leader election is on and this replica does not (yet) run the controllers.
    pub standby: AtomicBool,
    /// Registry clients holding SociIndexes' own Secrets.
    pub credentials: credentials::CredentialCache,
    /// `--reconcile-timeout`: a reconcile still running then is abandoned and retried.
    pub reconcile_timeout: Duration,
    /// Failed reconciles in a row, per object (the `error_policy` backoff).
    pub retries: ErrorBackoff,
    /// `--cleanup-timeout`: how long after its deletion a cleanup may keep failing.
    pub cleanup_timeout: Duration,
}

impl Context {
    /// `/readyz`: synced, or a standby (which has nothing to sync).
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) || self.standby.load(Ordering::Relaxed)
    }

    /// Recomputes the gauges read from the Job stores (called before every scrape).
    pub fn refresh_gauges(&self) {
        for (phase, count) in self.jobs.phases() {
            self.metrics
                .jobs
                .with_label_values(&[phase.label()])
                .set(count);
        }
    }

    /// Records what the object contributes now and recomputes `soci_operator_images` and
    /// `soci_operator_job_slots_waiting`; `None` removes the object.
    fn record_status(&self, key: &str, status: Option<(SociIndexStatus, usize)>) {
        let mut stats = lock(&self.stats);
        match status {
            Some((status, queued)) => stats.update(key, status, queued),
            None => stats.remove(key),
        }
        self.publish_stats(&stats);
    }

    fn publish_stats(&self, stats: &transitions::ObjectStats) {
        self.metrics.images.reset();
        for (reason, count) in stats.reasons() {
            self.metrics.images.with_label_values(&[&reason]).set(count);
        }
        self.metrics.job_slots_waiting.set(stats.queued() as i64);
    }
}

/// When each image (`uid`, image name) last had the full target check. A settled image takes the
/// cheap path (one HEAD per tag) until its full check is `every` old; an image first seen by
/// this process counts as checked now, so a restart does not re-verify the whole cluster at once
/// (the status records the last verification).
pub struct FullChecks {
    every: Duration,
    last: Mutex<std::collections::HashMap<(String, String), Instant>>,
}

impl FullChecks {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::default(),
        }
    }

    /// Whether the image is due for the full check (and, if not, it takes the cheap path).
    pub fn due(&self, uid: &str, image: &str, now: Instant) -> bool {
        if self.every.is_zero() {
            return true;
        }
        let mut last = lock(&self.last);
        let at = *last
            .entry((uid.to_string(), image.to_string()))
            .or_insert(now);
        now.duration_since(at) >= self.every
    }

    pub fn checked(&self, uid: &str, image: &str, now: Instant) {
        lock(&self.last).insert((uid.to_string(), image.to_string()), now);
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        self.retain(|u| u != uid);
    }

    /// Keeps only the objects whose uid `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.last).retain(|(u, _), _| keep(u));
    }
}

/// Failed reconciles in a row, per object uid: `error_policy` waits 5 s after the first and
/// doubles that up to 5 min; a reconcile that succeeds resets it (kube-runtime tells
/// `error_policy` only about failures, so each reconcile that returns Ok reports it here).
#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Counts one more failure of `uid` and says how long to wait before the next try.
    pub fn failed(&self, uid: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(uid.to_string()).or_default();
        *n = n.saturating_add(1);
        ERROR_RETRY_FIRST
            .saturating_mul(1 << (*n - 1).min(16))
            .min(ERROR_RETRY_MAX)
    }

    pub fn succeeded(&self, uid: &str) {
        lock(&self.failures).remove(uid);
    }

    /// Keeps only the objects whose uid `keep` accepts (the others are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.failures).retain(|uid, _| keep(uid));
    }
}

/// `namespace/name`: the key of an object's gauge contributions.
pub(crate) fn object_key(object: &SociIndex) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_checks_come_due_after_their_interval_and_go_with_their_object() {
        let checks = FullChecks::new(Duration::from_secs(60));
        let t0 = Instant::now();
        // First sight counts as checked: a restart does not re-verify everything at once.
        assert!(!checks.due("uid-a", "web", t0));
        assert!(!checks.due("uid-a", "web", t0 + Duration::from_secs(59)));
        assert!(checks.due("uid-a", "web", t0 + Duration::from_secs(60)));
        checks.checked("uid-a", "web", t0 + Duration::from_secs(60));
        assert!(!checks.due("uid-a", "web", t0 + Duration::from_secs(61)));
        checks.checked("uid-b", "web", t0);
        // An object gone from the stores is dropped (a later sight starts afresh).
        checks.retain(|uid| uid == "uid-b");
        assert!(!checks.due("uid-a", "web", t0 + Duration::from_secs(200)));
        assert!(checks.due("uid-b", "web", t0 + Duration::from_secs(200)));
        assert!(FullChecks::new(Duration::ZERO).due("uid-c", "web", t0));
    }

    #[test]
    fn failed_reconciles_back_off_per_object_and_success_resets() {
        let retries = ErrorBackoff::default();
        let waits: Vec<u64> = (0..9).map(|_| retries.failed("uid-a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Another object's failures are its own.
        assert_eq!(retries.failed("uid-b"), Duration::from_secs(5));
        retries.succeeded("uid-a");
        assert_eq!(retries.failed("uid-a"), Duration::from_secs(5));
        // Thousands of failures in a row neither overflow nor exceed the cap.
        for _ in 0..10_000 {
            retries.failed("uid-c");
        }
        assert_eq!(retries.failed("uid-c"), ERROR_RETRY_MAX);
        // Objects gone from the stores are forgotten.
        retries.retain(|uid| uid == "uid-b");
        assert_eq!(lock(&retries.failures).len(), 1);
    }
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod api_tests;
