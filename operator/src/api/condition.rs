//! Conditions the way kstatus and Flux read them: `type`, `status`, `reason`, `message`,
//! `lastTransitionTime` (changed only when `status` changes) and `observedGeneration`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const LAZY_LOAD_READY: &str = "LazyLoadReady";
/// The longest `message` a condition carries (metav1.Condition allows 32768; the status holds
/// one per image, so less here).
pub const MAX_MESSAGE: usize = 1024;
/// The longest `reason`.
pub const MAX_REASON: usize = 128;
/// The reason of a condition made with a reason that is not a CamelCase word (it may come from
/// a worker's termination message, which any Pod can write).
pub const UNKNOWN_REASON: &str = "Unknown";
/// Ends a cut text.
pub const TRUNCATED: &str = "… (truncated)";

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
    #[schemars(
        length(min = 1, max = MAX_REASON),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// For a person: what happened and what to do.
    #[schemars(length(max = MAX_MESSAGE))]
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
        reason: impl AsRef<str>,
        message: impl Into<String>,
    ) -> Self {
        let mut message = message.into();
        truncate(&mut message, MAX_MESSAGE);
        let reason = reason.as_ref();
        let reason = if is_reason(reason) {
            reason
        } else {
            UNKNOWN_REASON
        };
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

/// What the CRD admits as a `reason`: one CamelCase word, as metav1.Condition has it.
pub fn is_reason(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b':');
    match bytes {
        [] => false,
        [first, ..] if !first.is_ascii_alphabetic() => false,
        [.., last] if !(last.is_ascii_alphanumeric() || *last == b'_') => false,
        _ => bytes.len() <= MAX_REASON && bytes.iter().all(inner),
    }
}

/// `text` in quotes, cut short (it may be as long as the API server admits).
pub fn quote(text: &str) -> String {
    let mut quoted = format!("{text:?}");
    truncate(&mut quoted, 80);
    quoted
}

/// Shortens `text` to at most `max` bytes on a character boundary, ending it with
/// [`TRUNCATED`] (or as much of the marker as fits).
pub fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let marker = if TRUNCATED.len() <= max {
        TRUNCATED
    } else {
        ""
    };
    let mut cut = max - marker.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(marker);
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
        assert!(c.message.len() <= MAX_MESSAGE);
        assert!(c.message.ends_with(TRUNCATED));
        // Four-byte characters, every cut position, and limits smaller than the marker.
        for max in 0..40 {
            let mut text = "😀".repeat(20);
            truncate(&mut text, max);
            assert!(text.len() <= max, "{max}: {text}");
        }
        let mut short = "fits".to_string();
        truncate(&mut short, 4);
        assert_eq!(short, "fits");
    }

    #[test]
    fn a_reason_that_is_not_one_camel_case_word_becomes_unknown() {
        for bad in [
            "",
            "two words",
            "1Leading",
            "Trailing:",
            "Quote\"",
            "Ünicode",
            &"A".repeat(MAX_REASON + 1),
        ] {
            let c = Condition::new(READY, ConditionStatus::False, bad, "m");
            assert_eq!(c.reason, UNKNOWN_REASON, "{bad:?}");
        }
        for good in [
            "BuildFailed",
            "A",
            "Reason_2",
            "Kind:Sub,Other",
            &"A".repeat(MAX_REASON),
        ] {
            assert_eq!(
                Condition::new(READY, ConditionStatus::True, good, "").reason,
                good
            );
        }
    }
}
