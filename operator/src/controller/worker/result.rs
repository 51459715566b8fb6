//! A finished worker Job read back: the worker's JSON report and how a failure is classified.

use super::IMAGE_LABEL;
use crate::controller::plan::{Failure, FailureClass, JobState, ObservedJob};
use crate::reason::Reason;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

/// The worker's report, written as JSON to its termination message (at most 4 KiB).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    pub ok: bool,
    /// `transient` or `permanent` when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// The `LazyLoadReady` reason when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
    #[serde(default)]
    pub soci_indexes: usize,
    #[serde(default)]
    pub layers_indexed: usize,
    #[serde(default)]
    pub layers_skipped: usize,
    /// Compressed bytes of the layers indexed (absent from older workers: 0).
    #[serde(default)]
    pub bytes_indexed: u64,
}

/// A Job and its last Pod as the plan sees them. The Pod's termination message (the worker's
/// JSON result) classifies a failure; without it the exit code does, then the Job's reason.
pub fn observe_job(job: &Job, pods: &[Pod]) -> Option<ObservedJob> {
    let labels = job.metadata.labels.as_ref()?;
    let image_name = labels.get(IMAGE_LABEL)?.clone();
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let true_condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let finished_at = status.completion_time.as_ref().map(|t| t.0).or_else(|| {
        true_condition("Failed").and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
    });
    let state = if true_condition("Complete").is_some() {
        JobState::Succeeded
    } else if let Some(failed) = true_condition("Failed") {
        JobState::Failed(job_failure(
            failed.reason.as_deref().unwrap_or(""),
            failed.message.as_deref().unwrap_or(""),
            last_termination(pods),
        ))
    } else {
        JobState::Running
    };
    Some(ObservedJob {
        name: job.metadata.name.clone()?,
        image_name,
        state,
        finished_at,
        deleting: job.metadata.deletion_timestamp.is_some(),
    })
}

/// The (exit code, message) of the newest terminated worker container among the Job's Pods.
fn last_termination(pods: &[Pod]) -> Option<(i32, String)> {
    pods.iter()
        .filter_map(|p| {
            let started = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let terminated = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.clone())?;
            Some((started, terminated))
        })
        .max_by_key(|(started, _)| *started)
        .map(|(_, t)| (t.exit_code, t.message.unwrap_or_default()))
}

pub fn job_failure(
    job_reason: &str,
    job_message: &str,
    termination: Option<(i32, String)>,
) -> Failure {
    if job_reason == "DeadlineExceeded" {
        return Failure::permanent(
            Reason::DeadlineExceeded,
            format!(
                "the build ran past spec.job.activeDeadlineSeconds and was stopped ({job_message})"
            ),
        );
    }
    let Some((exit_code, message)) = termination else {
        return Failure::transient(
            Reason::BuildFailed,
            format!("the worker failed without a result ({job_reason}: {job_message})"),
        );
    };
    if let Ok(result) = serde_json::from_str::<WorkerResult>(message.trim()) {
        let class = match result.error_class.as_deref() {
            Some(text) if text == FailureClass::Transient.as_str() => FailureClass::Transient,
            _ => FailureClass::Permanent,
        };
        return Failure {
            class,
            // A reason this version does not know (a newer worker) is a build failure.
            reason: result
                .reason
                .as_deref()
                .and_then(Reason::parse)
                .unwrap_or(Reason::BuildFailed),
            message: result
                .message
                .unwrap_or_else(|| format!("exit code {exit_code}")),
        };
    }
    // No JSON: the message is the tail of the log (FallbackToLogsOnError).
    let tail: String = message
        .trim()
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let text = format!("exit code {exit_code}: {tail}");
    Failure {
        class: FailureClass::of_exit_code(exit_code),
        reason: Reason::BuildFailed,
        message: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_from_result_exit_code_and_job_reason() {
        let result = serde_json::to_string(&WorkerResult {
            ok: false,
            error_class: Some("permanent".into()),
            reason: Some(Reason::ImageNotFound.to_string()),
            message: Some("no such manifest".into()),
            ..Default::default()
        })
        .unwrap();
        let f = job_failure("BackoffLimitExceeded", "", Some((1, result)));
        assert_eq!(
            (f.class, f.reason),
            (FailureClass::Permanent, Reason::ImageNotFound)
        );
        let f = job_failure("BackoffLimitExceeded", "", Some((3, "error: 503".into())));
        assert_eq!(f.class, FailureClass::Transient);
        let f = job_failure("BackoffLimitExceeded", "", Some((1, "error: bad".into())));
        assert_eq!(
            (f.class, f.reason),
            (FailureClass::Permanent, Reason::BuildFailed)
        );
        let f = job_failure("DeadlineExceeded", "too slow", None);
        assert_eq!(
            (f.class, f.reason),
            (FailureClass::Permanent, Reason::DeadlineExceeded)
        );
        let f = job_failure("BackoffLimitExceeded", "", None);
        assert_eq!(f.class, FailureClass::Transient);
    }

    #[test]
    fn results_without_byte_counts_still_parse() {
        let old: WorkerResult =
            serde_json::from_str(r#"{"ok":true,"sociIndexes":1,"layersIndexed":2}"#).unwrap();
        assert_eq!((old.layers_indexed, old.bytes_indexed), (2, 0));
        let new: WorkerResult =
            serde_json::from_str(r#"{"ok":true,"bytesIndexed":12582912}"#).unwrap();
        assert_eq!(new.bytes_indexed, 12 << 20);
    }
}
