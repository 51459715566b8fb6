//! The `/mutate-pods` endpoint: an AdmissionReview in, the same review answered with a JSON
//! patch (or none) out. It always allows: this webhook optimises, it never gates.

use super::resolve::TagResolver;
use super::rewrite::{self, Decision, FirstLook, Keep};
use super::view::IndexView;
use crate::controller::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub const PATH: &str = "/mutate-pods";
/// A Pod is at most etcd's 1.5 MiB; the review wraps it (and an old object on updates).
const MAX_BODY: usize = 4 << 20;
/// Events published at once; past that an admission's Event is dropped, not queued.
const MAX_EVENTS_IN_FLIGHT: usize = 32;

/// The `outcome` label values of `soci_operator_admission_requests_total`.
pub const OUTCOMES: [&str; 5] = ["rewritten", "not_indexed", "stale_tag", "error", "skipped"];

pub struct AdmissionMetrics {
    /// `soci_operator_admission_requests_total{outcome}`.
    pub requests: IntCounterVec,
    /// `soci_operator_admission_duration_seconds`.
    pub duration: Histogram,
    /// `soci_operator_admission_indexed_images`: the images the webhook can move Pods to.
    pub indexed_images: IntGauge,
}

impl AdmissionMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "soci_operator_admission_requests_total",
                "Pod admission reviews answered, by outcome",
            ),
            &["outcome"],
        )?;
        for outcome in OUTCOMES {
            requests.with_label_values(&[outcome]);
        }
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "soci_operator_admission_duration_seconds",
                "Time to answer a Pod admission review",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let indexed_images = IntGauge::new(
            "soci_operator_admission_indexed_images",
            "Images of ready SociIndexes the admission webhook can move Pods to",
        )?;
        Ok(Self {
            requests,
            duration,
            indexed_images,
        })
    }

    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.indexed_images.clone()))
    }
}

pub struct AdmissionState {
    pub ctx: Arc<Context>,
    /// Rebuilt from the SociIndex store; `None` until its first list is in.
    pub view: RwLock<Option<Arc<IndexView>>>,
    pub resolver: TagResolver,
    pub excluded_namespaces: Vec<String>,
    pub metrics: AdmissionMetrics,
    events: Arc<tokio::sync::Semaphore>,
}

impl AdmissionState {
    pub fn new(
        ctx: Arc<Context>,
        resolver: TagResolver,
        excluded_namespaces: Vec<String>,
        metrics: AdmissionMetrics,
    ) -> Self {
        Self {
            ctx,
            view: RwLock::new(None),
            resolver,
            excluded_namespaces,
            metrics,
            events: Arc::new(tokio::sync::Semaphore::new(MAX_EVENTS_IN_FLIGHT)),
        }
    }

    pub fn set_view(&self, view: IndexView) {
        self.metrics.indexed_images.set(view.len() as i64);
        *crate::locks::write(&self.view) = Some(Arc::new(view));
    }
}

pub fn router(state: Arc<AdmissionState>) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::post(mutate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn mutate(State(state): State<Arc<AdmissionState>>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            state.metrics.requests.with_label_values(&["error"]).inc();
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(e) => {
            state.metrics.requests.with_label_values(&["error"]).inc();
            return (StatusCode::BAD_REQUEST, format!("{e}")).into_response();
        }
    };
    let (response, outcome) = answer(&state, &request).await;
    state.metrics.requests.with_label_values(&[outcome]).inc();
    state
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The response and its outcome label.
async fn answer(
    state: &AdmissionState,
    request: &AdmissionRequest<Pod>,
) -> (AdmissionResponse, &'static str) {
    let allowed = AdmissionResponse::from(request);
    let (Some(pod), Operation::Create) = (&request.object, &request.operation) else {
        return (allowed, "skipped");
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    if let Some(skip) = rewrite::pod_skip(pod, &namespace, &state.excluded_namespaces) {
        tracing::debug!(%namespace, ?skip, "admission: Pod left alone");
        return (allowed, "skipped");
    }
    let Some(view) = crate::locks::read(&state.view).clone() else {
        // Not synced yet: nothing is known to be indexed.
        return (allowed, "not_indexed");
    };
    let recorded = rewrite::recorded_originals(pod);
    let mut moves = Vec::new();
    let mut kept = Vec::new();
    let mut pending = Vec::new();
    for (slot, pull_policy) in rewrite::container_slots(pod) {
        match rewrite::first_look(&view, &namespace, &slot, pull_policy.as_deref(), &recorded) {
            FirstLook::Move(image) => moves.push((slot, image)),
            FirstLook::Keep(why) => kept.push((slot, why)),
            FirstLook::Resolve {
                reference,
                candidates,
            } => pending.push((slot, reference, candidates)),
        }
    }
    // Every tag at once: the slowest bounds the answer, not their sum.
    let resolutions = futures_util::future::join_all(
        pending
            .iter()
            .map(|(_, reference, candidates)| state.resolver.resolve(reference, &candidates[0])),
    )
    .await;
    for ((slot, _, candidates), fresh) in pending.into_iter().zip(resolutions) {
        let fresh = fresh.as_ref().map(|d| d.as_deref()).map_err(|_| ());
        match rewrite::after_resolution(fresh, &candidates) {
            Decision::Move(image) => moves.push((slot, image)),
            Decision::Keep(why) => kept.push((slot, why)),
        }
    }
    for (slot, why) in &kept {
        tracing::debug!(%namespace, container = %slot.name, image = %slot.image, reason = why.as_str(), "admission: image kept");
    }
    let outcome = outcome(!moves.is_empty(), kept.iter().map(|(_, why)| *why));
    let Some(patch) = rewrite::patch(pod, &moves, &recorded) else {
        return (allowed, outcome);
    };
    let response = match allowed.clone().with_patch(patch) {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, "admission: serialising the patch; the Pod is left alone");
            return (allowed, "error");
        }
    };
    let summary: Vec<String> = moves
        .iter()
        .map(|(slot, image)| {
            format!(
                "{} from {} to {} ({})",
                slot.key(),
                slot.image,
                image.deploy,
                image.index
            )
        })
        .collect();
    tracing::info!(%namespace, name = %request.name, moved = %summary.join("; "), "admission: Pod moved to SOCI-enabled images");
    if !request.dry_run {
        publish_event(state, pod, &namespace, &request.name, summary.join("; "));
    }
    (response, outcome)
}

/// `rewritten` when anything moved; else the most telling reason an image stayed.
fn outcome(moved: bool, kept: impl Iterator<Item = Keep>) -> &'static str {
    if moved {
        return "rewritten";
    }
    let kept: Vec<Keep> = kept.collect();
    if kept.contains(&Keep::StaleTag) {
        "stale_tag"
    } else if kept.contains(&Keep::ResolutionFailed) {
        "error"
    } else {
        "not_indexed"
    }
}

/// An Event on the Pod when it has a name at admission, else on its controller (a Pod of a
/// ReplicaSet or Job is named after admission). Best effort and never awaited by the answer.
fn publish_event(state: &AdmissionState, pod: &Pod, namespace: &str, name: &str, note: String) {
    let name = Some(name)
        .filter(|n| !n.is_empty())
        .or(pod.metadata.name.as_deref());
    let regarding = match name {
        Some(name) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        },
        None => {
            let Some(owner) = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
            else {
                return;
            };
            ObjectReference {
                api_version: Some(owner.api_version.clone()),
                kind: Some(owner.kind.clone()),
                namespace: Some(namespace.to_string()),
                name: Some(owner.name.clone()),
                uid: Some(owner.uid.clone()),
                ..Default::default()
            }
        }
    };
    let Ok(permit) = state.events.clone().try_acquire_owned() else {
        return;
    };
    let recorder = state.ctx.recorder.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let event = crate::controller::events::event(
            false,
            crate::controller::events::EventAction::Admit,
            "LazyLoadingImages",
            format!("Pod moved to SOCI-enabled images: {note}"),
        );
        if let Err(e) = recorder.publish(&event, &regarding).await {
            tracing::debug!(error = %e, "admission: publishing an Event");
        }
    });
}
