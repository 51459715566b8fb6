//! Conditions the way kstatus and Flux read them: `type`, `status`, `reason`, `message`,
//! `lastTransitionTime` (changed only when `status` changes) and `observedGeneration`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const LAZY_LOAD_READY: &str = "LazyLoadReady";

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// CamelCase, machine-readable.
    pub reason: String,
    /// For a person: what happened and what to do.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// RFC 3339, UTC; changes only when `status` changes.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        let mut message = message.into();
        truncate(&mut message, 1024);
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: String::new(),
            observed_generation: None,
        }
    }
}

/// Shortens `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
}

/// The conditions to write: `wanted`, in that order, each keeping the `lastTransitionTime` of
/// the previous condition of its type when its status did not change, else `now`. Types not in
/// `wanted` are dropped (so `Reconciling` and `Stalled` disappear when they stop being true).
pub fn merge(
    previous: &[Condition],
    wanted: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
                Some(p) if p.status == c.status && !p.last_transition_time.is_empty() => {
                    p.last_transition_time.clone()
                }
                _ => now.to_string(),
            };
            c
        })
        .collect()
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(c: &Condition, time: &str) -> Condition {
        Condition {
            last_transition_time: time.into(),
            ..c.clone()
        }
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let ready = Condition::new(READY, ConditionStatus::True, "Verified", "ok");
        let previous = vec![at(&ready, "2026-01-01T00:00:00Z")];
        let changed_message = Condition::new(READY, ConditionStatus::True, "Verified", "still ok");
        let merged = merge(
            &previous,
            vec![changed_message],
            Some(3),
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(merged[0].last_transition_time, "2026-01-01T00:00:00Z");
        assert_eq!(merged[0].message, "still ok");
        assert_eq!(merged[0].observed_generation, Some(3));
    }

    #[test]
    fn transition_time_moves_when_status_changes_and_absent_types_are_dropped() {
        let previous = vec![
            at(
                &Condition::new(READY, ConditionStatus::Unknown, "Progressing", ""),
                "2026-01-01T00:00:00Z",
            ),
            at(
                &Condition::new(RECONCILING, ConditionStatus::True, "Progressing", ""),
                "2026-01-01T00:00:00Z",
            ),
        ];
        let merged = merge(
            &previous,
            vec![Condition::new(READY, ConditionStatus::True, "Verified", "")],
            Some(1),
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].last_transition_time, "2026-02-02T00:00:00Z");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let c = Condition::new(READY, ConditionStatus::False, "X", "é".repeat(1000));
        assert!(c.message.len() <= 1024);
        assert!(c.message.ends_with("..."));
    }
}
