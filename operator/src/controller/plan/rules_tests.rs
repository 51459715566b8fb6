//! Each rule of the chain, table-tested: which rule decides for a given set of facts, and
//! what it says. The transitions over several reconciles are in `tests.rs`.

use super::*;
use crate::controller::naming::build_key;

const SOURCE: &str = "127.0.0.1:5000/app@sha256:aaaa";
const TARGET: &str = "127.0.0.1:5000/app:v1-soci";
const JOB: &str = "soci-build-0123456789abcdef";

/// The facts of one row; `job` is the state of the Job named [`JOB`], if it exists.
struct Row {
    name: &'static str,
    target: Result<TargetCheck, Failure>,
    job: Option<(JobState, i64)>,
    previous: ImageStatus,
    honour_stalls: bool,
    elsewhere: bool,
    capacity: Capacity,
    /// The rule that decides, the condition's reason and status, and the standing.
    want: (&'static str, Reason, ConditionStatus, Standing),
    /// Whether the verdict creates a Job, and the Jobs it deletes.
    creates: bool,
    deletes: &'static [&'static str],
}

fn row(name: &'static str, want: (&'static str, Reason, ConditionStatus, Standing)) -> Row {
    Row {
        name,
        target: Ok(TargetCheck::Missing),
        job: None,
        previous: deployable_before(),
        honour_stalls: true,
        elsewhere: false,
        capacity: Capacity::default(),
        want,
        creates: false,
        deletes: &[],
    }
}

/// What an image verified before keeps: the last deployable target.
fn deployable_before() -> ImageStatus {
    ImageStatus {
        deploy: Some(format!("{TARGET}@sha256:old")),
        target_digest: Some("sha256:old".into()),
        ..Default::default()
    }
}

fn stalled_before() -> ImageStatus {
    ImageStatus {
        job: Some(JOB.into()),
        source_digest: Some("sha256:aaaa".into()),
        conditions: vec![Condition::new(
            LAZY_LOAD_READY,
            ConditionStatus::False,
            Reason::NoIndexableLayers,
            "no layer is at least 10 MiB",
        )],
        ..Default::default()
    }
}

fn rows() -> Vec<Row> {
    use ConditionStatus::{False, True, Unknown};
    use Standing::{InProgress, Stalled, Verified};
    let bound = Ok(TargetCheck::Bound {
        digest: "sha256:ffff".into(),
        platforms: vec![],
    });
    let transient = Failure::transient(Reason::RegistryUnavailable, "503");
    let permanent = Failure::permanent(Reason::BuildFailed, "exit 1");
    vec![
        Row {
            job: Some((JobState::Running, 0)),
            target: bound,
            ..row(
                "bound wins over a running Job",
                ("TargetBound", Reason::Verified, True, Verified),
            )
        },
        Row {
            target: Err(transient.clone()),
            ..row(
                "the target check failed",
                (
                    "TargetCheckFailed",
                    Reason::RegistryUnavailable,
                    Unknown,
                    InProgress,
                ),
            )
        },
        Row {
            job: Some((JobState::Running, 0)),
            ..row(
                "a Job is building",
                ("BuildRunning", Reason::Building, Unknown, InProgress),
            )
        },
        Row {
            job: Some((JobState::Succeeded, 0)),
            deletes: &[JOB],
            ..row(
                "built, then the target went: once more",
                (
                    "RebuildOnceAfterDrift",
                    Reason::TargetDrifted,
                    Unknown,
                    InProgress,
                ),
            )
        },
        Row {
            job: Some((JobState::Succeeded, 0)),
            previous: ImageStatus {
                failures: 1,
                ..Default::default()
            },
            ..row(
                "built twice and still not bound",
                (
                    "BuiltButNotBound",
                    Reason::VerificationFailed,
                    False,
                    Stalled,
                ),
            )
        },
        Row {
            job: Some((JobState::Failed(permanent), 0)),
            ..row(
                "the build failed for good",
                ("BuildFailed", Reason::BuildFailed, False, Stalled),
            )
        },
        Row {
            job: Some((JobState::Failed(transient.clone()), 1)),
            ..row(
                "a transient failure within its backoff",
                (
                    "BuildFailed",
                    Reason::RegistryUnavailable,
                    Unknown,
                    InProgress,
                ),
            )
        },
        Row {
            job: Some((JobState::Failed(transient), 3600)),
            deletes: &[JOB],
            ..row(
                "a transient failure past its backoff",
                (
                    "BuildFailed",
                    Reason::RegistryUnavailable,
                    Unknown,
                    InProgress,
                ),
            )
        },
        Row {
            previous: stalled_before(),
            ..row(
                "a permanent failure holds",
                (
                    "PermanentFailureHolds",
                    Reason::NoIndexableLayers,
                    False,
                    Stalled,
                ),
            )
        },
        Row {
            previous: stalled_before(),
            honour_stalls: false,
            creates: true,
            ..row(
                "a reconcile request lifts it",
                ("StartBuild", Reason::Building, Unknown, InProgress),
            )
        },
        Row {
            elsewhere: true,
            ..row(
                "another SociIndex builds the same bytes",
                ("BuiltElsewhere", Reason::Building, Unknown, InProgress),
            )
        },
        Row {
            capacity: Capacity {
                max_total: Some(1),
                active_total: 1,
                ..Default::default()
            },
            ..row(
                "every slot is taken",
                ("NoBuildSlot", Reason::Queued, Unknown, InProgress),
            )
        },
        Row {
            target: Ok(TargetCheck::NotBound {
                message: "overwritten".into(),
            }),
            creates: true,
            ..row(
                "the target drifted: rebuild",
                ("StartBuild", Reason::TargetDrifted, Unknown, InProgress),
            )
        },
        Row {
            creates: true,
            ..row(
                "nothing yet: build",
                ("StartBuild", Reason::Building, Unknown, InProgress),
            )
        },
    ]
}

#[test]
fn each_rule_decides_its_own_case() {
    let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
    let resolved = Resolved {
        source: SOURCE.into(),
        digest: "sha256:aaaa".into(),
        target: TARGET.into(),
    };
    let settings = BuildSettings {
        platforms: vec![],
        min_layer_size: 10 << 20,
        span_size: 4 << 20,
        index_version: Default::default(),
    };
    for row in rows() {
        let job = row.job.map(|(state, seconds_ago)| ObservedJob {
            name: JOB.into(),
            image_name: "main".into(),
            state,
            finished_at: Some(now - std::time::Duration::from_secs(seconds_ago as u64)),
            deleting: false,
        });
        let mut elsewhere = BTreeMap::new();
        if row.elsewhere {
            elsewhere.insert(
                build_key(&resolved.digest, &resolved.target, &settings),
                "other/ns".to_string(),
            );
        }
        let facts = ImageFacts {
            image_name: "main",
            resolved: &resolved,
            settings: &settings,
            previous: &row.previous,
            job_name: JOB.into(),
            current: job.as_ref(),
            drift: match &row.target {
                Ok(TargetCheck::NotBound { message }) => Some(message.clone()),
                _ => None,
            },
            target: row.target.clone(),
            honour_stalls: row.honour_stalls,
            builds_elsewhere: &elsewhere,
            now,
        };
        let mut status = row.previous.clone();
        let mut capacity = row.capacity.clone();
        let (rule, verdict) = decide(&facts, &mut status, &mut capacity);
        let got = (
            rule,
            Reason::parse(&verdict.lazy.reason).unwrap(),
            verdict.lazy.status,
            verdict.standing,
        );
        assert_eq!(got, row.want, "{}", row.name);
        assert_eq!(verdict.create.is_some(), row.creates, "{}", row.name);
        assert_eq!(verdict.delete, row.deletes, "{}", row.name);
        assert_eq!(verdict.queued, rule == "NoBuildSlot", "{}", row.name);
        // Only a Job that starts takes a slot.
        let taken = capacity.active_total - row.capacity.active_total;
        assert_eq!(taken, usize::from(verdict.create.is_some()), "{}", row.name);
        // Only a bound target is deployable; a failed check keeps the last one.
        let deploy = match rule {
            "TargetBound" => Some(format!("{TARGET}@sha256:ffff")),
            "TargetCheckFailed" => row.previous.deploy.clone(),
            _ => None,
        };
        assert_eq!(status.deploy, deploy, "{}", row.name);
        if let Some(request) = &verdict.create {
            assert_eq!(
                (request.job_name.as_str(), request.target.as_str()),
                (JOB, TARGET)
            );
        }
    }
}
