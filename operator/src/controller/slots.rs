//! The worker Jobs active now, across every watched namespace, for the Job caps and the
//! `soci_operator_jobs{state}` gauge: reflector stores of the Jobs labelled
//! `app.kubernetes.io/managed-by=soci-operator` (listed at start, so the count is right after a
//! restart) plus the Jobs this process created that the watch has not shown yet.
//!
//! The label only selects what is watched: anyone who may create Jobs can copy it. A Job counts
//! (holds a slot, is waited for as a shared build) only when its controller ownerReference names
//! a SociIndex that is in the SociIndex stores now, in the Job's namespace, and it is not
//! suspended.

use super::naming::registry_host;
use super::plan::Capacity;
use super::worker::{BUILD_KEY_LABEL, DEFAULT_DEADLINE_SECONDS, SOURCE_ANNOTATION};
use crate::api::SociIndex;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// A created Job the watch has not delivered within this long is no longer counted from here.
const PENDING_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    Running,
    Succeeded,
    Failed,
}

impl JobPhase {
    pub fn label(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed => "failed",
        }
    }
}

pub fn phase(job: &Job) -> JobPhase {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_true = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is_true("Complete") {
        JobPhase::Succeeded
    } else if is_true("Failed") {
        JobPhase::Failed
    } else {
        JobPhase::Running
    }
}

/// The SociIndexes in the stores now: uid → namespace.
pub type LiveIndexes = HashMap<String, String>;

/// The uid in `job`'s controller ownerReference when it names a SociIndex (`soci.dev`).
fn controller_ref(job: &Job) -> Option<&str> {
    job.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .filter(|o| o.kind == "SociIndex" && o.api_version.starts_with("soci.dev/"))
        .map(|o| o.uid.as_str())
}

/// The uid of the live SociIndex that controls `job`: its controller ownerReference names a
/// SociIndex that is in the Job's own namespace now. Labels only index the Jobs: anyone who may
/// create Jobs can copy them, so they prove nothing.
pub fn live_owner<'a>(job: &'a Job, live: &LiveIndexes) -> Option<&'a str> {
    let uid = controller_ref(job)?;
    let namespace = job.metadata.namespace.as_deref()?;
    (live.get(uid).map(String::as_str) == Some(namespace)).then_some(uid)
}

fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// Holds a build slot: a Job of a live SociIndex, running, not suspended, not being deleted.
fn is_active(job: &Job, live: &LiveIndexes) -> bool {
    phase(job) == JobPhase::Running
        && job.metadata.deletion_timestamp.is_none()
        && !is_suspended(job)
        && live_owner(job, live).is_some()
}

/// The Job caps; `None`: no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub total: Option<usize>,
    pub per_registry: Option<usize>,
    pub per_namespace: Option<usize>,
}

impl Caps {
    /// Caps of 0 mean "no cap".
    pub fn new(total: usize, per_registry: usize, per_namespace: usize) -> Self {
        let cap = |n: usize| (n > 0).then_some(n);
        Self {
            total: cap(total),
            per_registry: cap(per_registry),
            per_namespace: cap(per_namespace),
        }
    }
}

/// A Job this process created that the watch may not show yet, as the caps count it.
pub struct Unseen<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub registry: &'a str,
}

/// The capacity left for a build of an object in `namespace`, by `jobs` (what the stores
/// hold) and `pending` (created, not yet seen).
pub fn capacity<'a>(
    jobs: impl Iterator<Item = &'a Job>,
    pending: impl Iterator<Item = Unseen<'a>>,
    live: &LiveIndexes,
    caps: Caps,
    namespace: &str,
) -> Capacity {
    let mut c = Capacity {
        max_total: caps.total,
        max_per_registry: caps.per_registry,
        max_per_namespace: caps.per_namespace,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for job in jobs {
        let job_namespace = job.namespace().unwrap_or_default();
        seen.insert((job_namespace.clone(), job.name_any()));
        if is_active(job, live) {
            let source = job
                .annotations()
                .get(SOURCE_ANNOTATION)
                .map(String::as_str)
                .unwrap_or_default();
            c.active_total += 1;
            *c.active_per_registry
                .entry(registry_host(source))
                .or_default() += 1;
            c.active_in_namespace += usize::from(job_namespace == namespace);
        }
    }
    for p in pending {
        if !seen.contains(&(p.namespace.to_string(), p.name.to_string())) {
            c.active_total += 1;
            *c.active_per_registry
                .entry(p.registry.to_string())
                .or_default() += 1;
            c.active_in_namespace += usize::from(p.namespace == namespace);
        }
    }
    c
}

/// How long a build of another SociIndex is waited for at most: a Job that runs longer (or
/// claims no deadline) is not waited for, so a Job that never ends cannot hold other objects'
/// builds for ever. (Ours always carry a deadline; this is the default one.)
pub const MAX_SHARED_WAIT: Duration = Duration::from_secs(DEFAULT_DEADLINE_SECONDS as u64);

/// Whether a running Job is still within the time it may be waited for.
fn within_shared_wait(job: &Job, now: Timestamp) -> bool {
    let Some(created) = job.metadata.creation_timestamp.as_ref() else {
        return false;
    };
    let Some(deadline) = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .filter(|s| *s > 0)
    else {
        return false;
    };
    let limit = Duration::from_secs(deadline.unsigned_abs()).min(MAX_SHARED_WAIT);
    let age = now.duration_since(created.0);
    !age.is_negative() && age.unsigned_abs() < limit
}

/// Running Jobs of live SociIndexes other than `uid`, by build key → `namespace/name`.
pub fn builds_elsewhere<'a>(
    jobs: impl Iterator<Item = &'a Job>,
    uid: &str,
    live: &LiveIndexes,
    now: Timestamp,
) -> BTreeMap<String, String> {
    jobs.filter(|job| {
        is_active(job, live) && live_owner(job, live) != Some(uid) && within_shared_wait(job, now)
    })
    .filter_map(|job| {
        let key = job.labels().get(BUILD_KEY_LABEL)?;
        let at = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
        Some((key.clone(), at))
    })
    .collect()
}

/// Whether `job` is controlled by the SociIndex `uid` (by its ownerReference, not its labels).
pub fn controlled_by(job: &Job, uid: &str) -> bool {
    controller_ref(job) == Some(uid)
}

/// `(namespace, name)` of a Job.
type JobKey = (String, String);

/// A Job this process created that the watch may not show yet.
#[derive(Clone)]
struct Pending {
    registry: String,
    build_key: String,
    owner_uid: String,
    at: Instant,
}

pub struct JobTracker {
    stores: RwLock<Vec<Store<Job>>>,
    /// The SociIndex stores: which owners are live, and what other objects claim.
    indexes: RwLock<Vec<Store<SociIndex>>>,
    pending: Mutex<HashMap<JobKey, Pending>>,
    caps: Caps,
    /// Held from reading the capacity to creating the Jobs, so that two reconciles never
    /// hand out the same slot.
    pub lock: tokio::sync::Mutex<()>,
    /// How many stores (Job and SociIndex) have their initial list. (Not
    /// `Store::wait_until_ready`: its one-shot channel wakes only the last of several waiters,
    /// and the Controller waits on the SociIndex stores already.)
    synced: tokio::sync::watch::Sender<usize>,
}

impl JobTracker {
    pub fn new(caps: Caps) -> Self {
        Self {
            stores: RwLock::default(),
            indexes: RwLock::default(),
            pending: Mutex::default(),
            caps,
            lock: tokio::sync::Mutex::new(()),
            synced: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn add_store(&self, store: Store<Job>) {
        crate::locks::write(&self.stores).push(store);
    }

    /// A SociIndex store; its watch calls [`Self::mark_synced`] on its first complete list.
    pub fn add_index_store(&self, store: Store<SociIndex>) {
        crate::locks::write(&self.indexes).push(store);
    }

    fn stores(&self) -> Vec<Store<Job>> {
        crate::locks::read(&self.stores).clone()
    }

    /// Every SociIndex in the stores now.
    pub fn indexes(&self) -> Vec<Arc<SociIndex>> {
        self.indexes
            .read()
            .unwrap()
            .iter()
            .flat_map(|s| s.state())
            .collect()
    }

    fn live(&self) -> LiveIndexes {
        self.indexes()
            .iter()
            .filter_map(|o| Some((o.metadata.uid.clone()?, o.namespace()?)))
            .collect()
    }

    /// Called once per store (Job or SociIndex), on its first complete list.
    pub fn mark_synced(&self) {
        self.synced.send_modify(|n| *n += 1);
    }

    /// Waits until every Job and SociIndex store has its initial list.
    pub async fn wait_ready(&self) {
        let want = crate::locks::read(&self.stores).len() + crate::locks::read(&self.indexes).len();
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|n| *n >= want).await;
    }
    pub fn created(
        &self,
        namespace: &str,
        name: &str,
        source: &str,
        build_key: &str,
        owner_uid: &str,
    ) {
        crate::locks::lock(&self.pending).insert(
            (namespace.to_string(), name.to_string()),
            Pending {
                registry: registry_host(source),
                build_key: build_key.to_string(),
                owner_uid: owner_uid.to_string(),
                at: Instant::now(),
            },
        );
    }

    /// The watch has delivered this Job: it is counted from the store from now on. (Left in
    /// `pending`, a Job deleted soon after would count as running until the entry expired.)
    pub fn seen(&self, namespace: &str, name: &str) {
        self.pending
            .lock()
            .unwrap()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Every Job in the stores, and the created ones the watch has not delivered yet (expired
    /// entries dropped).
    fn snapshot(&self) -> (Vec<Arc<Job>>, Vec<(JobKey, Pending)>) {
        let jobs: Vec<_> = self.stores().iter().flat_map(|s| s.state()).collect();
        let seen: std::collections::HashSet<_> = jobs
            .iter()
            .map(|j| (j.namespace().unwrap_or_default(), j.name_any()))
            .collect();
        let mut pending = crate::locks::lock(&self.pending);
        pending.retain(|_, p| p.at.elapsed() < PENDING_TTL);
        let unseen = pending
            .iter()
            .filter(|(key, _)| !seen.contains(*key))
            .map(|(key, p)| (key.clone(), p.clone()))
            .collect();
        (jobs, unseen)
    }

    /// The capacity left for a build of an object in `namespace`.
    pub fn capacity(&self, namespace: &str) -> Capacity {
        let (jobs, pending) = self.snapshot();
        capacity(
            jobs.iter().map(|j| j.as_ref()),
            pending.iter().map(|((ns, name), p)| Unseen {
                namespace: ns,
                name,
                registry: &p.registry,
            }),
            &self.live(),
            self.caps,
            namespace,
        )
    }

    /// The worker Jobs of one SociIndex, from the watch (no API request per reconcile): those
    /// its ownerReference says it controls.
    pub fn owned(&self, namespace: &str, uid: &str) -> Vec<Arc<Job>> {
        self.stores()
            .iter()
            .flat_map(|s| s.state())
            .filter(|job| job.namespace().as_deref() == Some(namespace) && controlled_by(job, uid))
            .collect()
    }

    /// Running builds of other SociIndexes, in every watched namespace, including the Jobs just
    /// created that the watch has not delivered yet (two objects reconciled together must not
    /// both start the build).
    pub fn builds_elsewhere(&self, uid: &str) -> BTreeMap<String, String> {
        let (jobs, pending) = self.snapshot();
        let mut found = builds_elsewhere(
            jobs.iter().map(|j| j.as_ref()),
            uid,
            &self.live(),
            Timestamp::now(),
        );
        for ((namespace, name), p) in pending {
            if p.owner_uid != uid {
                found
                    .entry(p.build_key)
                    .or_insert_with(|| format!("{namespace}/{name}"));
            }
        }
        found
    }

    /// Worker Jobs of live SociIndexes by phase (for the `soci_operator_jobs` gauge).
    pub fn phases(&self) -> [(JobPhase, i64); 3] {
        let mut counts = [
            (JobPhase::Running, 0),
            (JobPhase::Succeeded, 0),
            (JobPhase::Failed, 0),
        ];
        let live = self.live();
        for store in self.stores() {
            for job in store.state() {
                if live_owner(&job, &live).is_none() {
                    continue;
                }
                let p = phase(&job);
                if let Some(c) = counts.iter_mut().find(|(q, _)| *q == p) {
                    c.1 += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::worker::OWNER_UID_LABEL;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn owner_ref(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "soci.dev/v1alpha1".into(),
            kind: "SociIndex".into(),
            name: "web".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// A Job as the operator creates it for the SociIndex `uid` in `ns`, created at t(0).
    fn ours(ns: &str, name: &str, uid: &str, source: &str, condition: Option<&str>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                creation_timestamp: Some(Time(t(0))),
                labels: Some(
                    [
                        (OWNER_UID_LABEL.to_string(), uid.to_string()),
                        (BUILD_KEY_LABEL.to_string(), format!("key-{name}")),
                    ]
                    .into(),
                ),
                annotations: Some([(SOURCE_ANNOTATION.to_string(), source.to_string())].into()),
                owner_references: Some(vec![owner_ref(uid)]),
                ..Default::default()
            },
            spec: Some(JobSpec {
                active_deadline_seconds: Some(600),
                ..Default::default()
            }),
            status: Some(JobStatus {
                conditions: condition.map(|c| {
                    vec![JobCondition {
                        type_: c.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn live(objects: &[(&str, &str)]) -> LiveIndexes {
        objects
            .iter()
            .map(|(uid, ns)| (uid.to_string(), ns.to_string()))
            .collect()
    }

    fn caps(total: usize, per_registry: usize, per_namespace: usize) -> Caps {
        Caps::new(total, per_registry, per_namespace)
    }

    #[test]
    fn only_running_jobs_of_live_owners_and_unseen_creations_take_slots() {
        let mut deleting = ours("ns", "d", "uid-a", "reg-b/z@sha256:4", None);
        deleting.metadata.deletion_timestamp = Some(Time(t(1)));
        let jobs = [
            ours("ns", "a", "uid-a", "reg-a:5000/x@sha256:1", None),
            ours(
                "ns",
                "b",
                "uid-a",
                "reg-a:5000/y@sha256:2",
                Some("Complete"),
            ),
            ours("ns", "c", "uid-a", "reg-b/z@sha256:3", Some("Failed")),
            deleting,
            ours("other", "e", "uid-b", "reg-b/z@sha256:5", None),
        ];
        let pending = [
            // Already in the store: not counted twice.
            Unseen {
                namespace: "ns",
                name: "a",
                registry: "reg-a:5000",
            },
            Unseen {
                namespace: "ns",
                name: "new",
                registry: "reg-a:5000",
            },
        ];
        let c = capacity(
            jobs.iter(),
            pending.into_iter(),
            &live(&[("uid-a", "ns"), ("uid-b", "other")]),
            caps(4, 2, 3),
            "ns",
        );
        assert_eq!(c.active_total, 3);
        assert_eq!(c.active_per_registry["reg-a:5000"], 2);
        assert_eq!(c.active_per_registry["reg-b"], 1);
        assert_eq!(
            c.active_in_namespace, 2,
            "a and new; e is in another namespace"
        );
        assert_eq!(
            (c.max_total, c.max_per_registry, c.max_per_namespace),
            (Some(4), Some(2), Some(3))
        );
        assert_eq!(phase(&jobs[1]), JobPhase::Succeeded);
        assert_eq!(phase(&jobs[2]), JobPhase::Failed);
    }

    /// Jobs anyone with `create jobs` can make: our labels, but no live SociIndex controls them.
    fn forgeries() -> Vec<(&'static str, Job)> {
        let mut no_owner = ours("ns", "no-owner", "uid-a", "reg/x@sha256:1", None);
        no_owner.metadata.owner_references = None;
        let gone_owner = ours("ns", "gone-owner", "uid-gone", "reg/x@sha256:1", None);
        // uid-b is a live SociIndex, but in namespace "other": an ownerReference cannot cross.
        let cross_namespace = ours("ns", "cross-namespace", "uid-b", "reg/x@sha256:1", None);
        let mut not_controller = ours("ns", "not-controller", "uid-a", "reg/x@sha256:1", None);
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        let mut other_kind = ours("ns", "other-kind", "uid-a", "reg/x@sha256:1", None);
        other_kind.metadata.owner_references.as_mut().unwrap()[0].kind = "ConfigMap".into();
        let mut other_group = ours("ns", "other-group", "uid-a", "reg/x@sha256:1", None);
        other_group.metadata.owner_references.as_mut().unwrap()[0].api_version =
            "evil.example/v1".into();
        let mut suspended = ours("ns", "suspended", "uid-a", "reg/x@sha256:1", None);
        suspended.spec.as_mut().unwrap().suspend = Some(true);
        vec![
            ("labels without an ownerReference", no_owner),
            ("owner not in the stores", gone_owner),
            ("owner in another namespace", cross_namespace),
            ("ownerReference that is not the controller", not_controller),
            ("controller of another kind", other_kind),
            ("controller of another API group", other_group),
            ("suspended", suspended),
        ]
    }

    #[test]
    fn a_forged_or_suspended_job_holds_no_slot() {
        let live = live(&[("uid-a", "ns"), ("uid-b", "other")]);
        for (what, job) in forgeries() {
            let c = capacity(
                std::iter::once(&job),
                std::iter::empty(),
                &live,
                caps(1, 1, 1),
                "ns",
            );
            assert_eq!(
                (c.active_total, c.active_in_namespace),
                (0, 0),
                "{what} took a slot"
            );
            assert!(c.clone().take("reg").is_ok(), "{what}");
        }
    }

    #[test]
    fn a_forged_or_suspended_job_is_never_waited_for_as_a_shared_build() {
        let live = live(&[("uid-a", "ns"), ("uid-b", "other"), ("uid-c", "third")]);
        for (what, job) in forgeries() {
            let found = builds_elsewhere(std::iter::once(&job), "uid-c", &live, t(10));
            assert!(found.is_empty(), "{what} is waited for: {found:?}");
        }
        // The same Job with a live owner is.
        let real = ours("ns", "real", "uid-a", "reg/x@sha256:1", None);
        let found = builds_elsewhere(std::iter::once(&real), "uid-c", &live, t(10));
        assert_eq!(
            found,
            [("key-real".to_string(), "ns/real".to_string())].into()
        );
    }

    #[test]
    fn a_build_elsewhere_is_waited_for_only_within_its_deadline() {
        let live = live(&[("uid-a", "ns")]);
        let job = ours("ns", "slow", "uid-a", "reg/x@sha256:1", None);
        let waited = |job: &Job, now| {
            !builds_elsewhere(std::iter::once(job), "uid-c", &live, now).is_empty()
        };
        assert!(waited(&job, t(599)));
        assert!(!waited(&job, t(600)), "past its activeDeadlineSeconds");
        let mut endless = job.clone();
        endless.spec.as_mut().unwrap().active_deadline_seconds = None;
        assert!(!waited(&endless, t(1)), "no deadline: never waited for");
        let mut long = job.clone();
        long.spec.as_mut().unwrap().active_deadline_seconds = Some(i64::MAX);
        assert!(waited(&long, t(1)));
        assert!(
            !waited(&long, t(MAX_SHARED_WAIT.as_secs() as i64)),
            "a huge deadline is cut to {MAX_SHARED_WAIT:?}"
        );
    }

    #[test]
    fn builds_of_other_objects_are_found_by_key_while_they_run() {
        let live = live(&[("uid-a", "ns"), ("uid-b", "ns")]);
        let mut unlabelled = ours("ns", "unlabelled", "uid-b", "reg/x@sha256:1", None);
        unlabelled.metadata.labels = None;
        let jobs = [
            ours("ns", "mine", "uid-a", "reg/x@sha256:1", None),
            ours("ns", "theirs", "uid-b", "reg/x@sha256:1", None),
            ours(
                "ns",
                "theirs-done",
                "uid-b",
                "reg/x@sha256:1",
                Some("Complete"),
            ),
            unlabelled,
        ];
        let found = builds_elsewhere(jobs.iter(), "uid-a", &live, t(1));
        assert_eq!(
            found,
            [("key-theirs".to_string(), "ns/theirs".to_string())].into()
        );
        let found = builds_elsewhere(jobs.iter(), "uid-b", &live, t(1));
        assert_eq!(
            found,
            [("key-mine".to_string(), "ns/mine".to_string())].into()
        );
    }

    #[test]
    fn a_jobs_owner_is_its_owner_reference_not_its_label() {
        let job = ours("ns", "a", "uid-a", "reg/x@sha256:1", None);
        assert!(controlled_by(&job, "uid-a"));
        let mut relabelled = job.clone();
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(OWNER_UID_LABEL.into(), "uid-b".into());
        assert!(!controlled_by(&relabelled, "uid-b"));
        assert!(controlled_by(&relabelled, "uid-a"));
    }

    #[tokio::test]
    async fn a_job_just_created_is_a_build_elsewhere_before_the_watch_shows_it() {
        let t = JobTracker::new(caps(4, 2, 0));
        t.created("ns-a", "soci-build-1", "reg/x@sha256:1", "key-1", "uid-a");
        assert_eq!(
            t.builds_elsewhere("uid-b"),
            [("key-1".to_string(), "ns-a/soci-build-1".to_string())].into()
        );
        assert!(t.builds_elsewhere("uid-a").is_empty());
        assert_eq!(t.capacity("ns-a").active_total, 1);
        assert_eq!(t.capacity("ns-a").active_in_namespace, 1);
        assert_eq!(t.capacity("ns-b").active_in_namespace, 0);
    }

    #[tokio::test]
    async fn a_job_seen_then_deleted_frees_its_slot() {
        let t = JobTracker::new(caps(4, 1, 0));
        t.created("ns", "soci-build-1", "reg-a/x@sha256:1", "key-1", "uid-a");
        assert_eq!(t.capacity("ns").active_per_registry["reg-a"], 1);
        // The watch delivers it, it finishes and is deleted: nothing of it is left.
        t.seen("ns", "soci-build-1");
        assert_eq!(t.capacity("ns").active_total, 0);
        assert!(t.builds_elsewhere("uid-b").is_empty());
    }

    #[tokio::test]
    async fn the_caps_wait_for_every_job_and_sociindex_store() {
        let t = JobTracker::new(caps(4, 2, 2));
        let (jobs, _job_writer) = kube::runtime::reflector::store::<Job>();
        let (indexes, _index_writer) = kube::runtime::reflector::store::<SociIndex>();
        t.add_store(jobs);
        t.add_index_store(indexes);
        let ready =
            || async { tokio::time::timeout(Duration::from_millis(50), t.wait_ready()).await };
        assert!(ready().await.is_err(), "ready before any list");
        t.mark_synced();
        assert!(
            ready().await.is_err(),
            "ready with the Jobs listed but not the SociIndexes (their owners)"
        );
        t.mark_synced();
        assert!(ready().await.is_ok());
    }

    #[test]
    fn zero_caps_mean_no_cap() {
        assert_eq!(
            caps(0, 3, 0),
            Caps {
                total: None,
                per_registry: Some(3),
                per_namespace: None
            }
        );
    }
}
