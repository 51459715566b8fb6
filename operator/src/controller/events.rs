//! Events: the one publisher of a SociIndex's Events, and the Events of its status transitions
//! (which the pure [`super::transitions`] finds).

use super::Context;
use super::transitions;
use crate::api::{SociIndex, SociIndexStatus};
use crate::locks::lock;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

/// The API server caps an Event's note at 1 KiB.
const MAX_NOTE: usize = 1000;

/// What an Event is about (its `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Build,
    Reconcile,
    Delete,
    /// The admission webhook moved a Pod to SOCI-enabled images.
    Admit,
}

impl EventAction {
    /// `Build` for the build reasons (`BuildStarted`, `BuildFailed`, ...), else `Reconcile`.
    pub fn for_reason(reason: &str) -> Self {
        if reason.starts_with("Build") {
            Self::Build
        } else {
            Self::Reconcile
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Build => "Build",
            Self::Reconcile => "Reconcile",
            Self::Delete => "Delete",
            Self::Admit => "Admit",
        }
    }
}

/// The Event `object` gets: the note cut short on a character boundary.
pub fn event(warning: bool, action: EventAction, reason: &str, note: impl Into<String>) -> Event {
    let mut note = note.into();
    crate::api::condition::truncate(&mut note, MAX_NOTE);
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: action.as_str().into(),
        secondary: None,
    }
}

/// Publishes one Event of `object`; a failure is logged, never fatal (Events are best effort).
pub async fn publish(
    ctx: &Context,
    object: &SociIndex,
    warning: bool,
    action: EventAction,
    reason: &str,
    note: impl Into<String>,
) {
    let event = event(warning, action, reason, note);
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(error = %e, name = %object.name_any(), %reason, "publishing an Event");
    }
}

/// Publishes the Events of what changed between the last status this process planned (else the
/// object's) and `status`, counts new failures by reason, and records the object's gauge
/// contributions (`queued`: its builds waiting for a Job slot).
pub async fn announce(ctx: &Context, object: &SociIndex, status: &SociIndexStatus, queued: usize) {
    let key = super::object_key(object);
    let previous = lock(&ctx.stats).previous(&key).cloned();
    let notices = transitions::transitions(previous.as_ref().or(object.status.as_ref()), status);
    ctx.record_status(&key, Some((status.clone(), queued)));
    for notice in notices {
        if let Some(reason) = &notice.failure_reason {
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[reason])
                .inc();
        }
        let action = EventAction::for_reason(notice.reason);
        publish(
            ctx,
            object,
            notice.warning,
            action,
            notice.reason,
            notice.note,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_on_a_character_boundary_within_the_api_cap() {
        let long = "é".repeat(2000);
        let e = event(true, EventAction::Delete, "CleanupFailed", long);
        let note = e.note.unwrap();
        assert!(note.len() <= MAX_NOTE, "{}", note.len());
        assert!(note.starts_with('é'));
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.action, "Delete");
        assert_eq!(EventAction::for_reason("BuildStarted"), EventAction::Build);
        assert_eq!(EventAction::for_reason("Ready"), EventAction::Reconcile);
    }
}
