//! The apply and status steps against a mocked Kubernetes API (tower-test, as controller-rs
//! tests its reconciler): the requests each step sends, in order, and what it makes of the
//! answers — without a cluster.

use super::plan::{BuildRequest, BuildSettings, Plan};
use super::{Context, FullChecks, Metrics, apply, slots, status};
use crate::api::condition::{READY, STALLED};
use crate::api::{Condition, ConditionStatus, SociIndex, SociIndexStatus};
use crate::reason::Reason;
use crate::registry::auth::CredentialStore;
use crate::registry::{RegistryClient, RegistryOptions, RetryPolicy};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use std::sync::Arc;
use std::time::Duration;
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn context() -> (Context, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let registry = RegistryClient::new(RegistryOptions {
        credentials: CredentialStore::default(),
        insecure_registries: vec![],
        ca_bundle: None,
        retry: RetryPolicy::default(),
    })
    .unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "soci-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context {
        client,
        registry: Arc::new(registry),
        worker: Default::default(),
        metrics: Metrics::new().unwrap(),
        default_interval: Duration::from_secs(3600),
        full_checks: FullChecks::new(Duration::ZERO),
        jobs: slots::JobTracker::new(slots::Caps::new(0, 0, 0)),
        stats: Default::default(),
        recorder,
        synced: Default::default(),
        standby: Default::default(),
        credentials: Default::default(),
        reconcile_timeout: Duration::from_secs(300),
        retries: Default::default(),
        cleanup_timeout: Duration::from_secs(600),
    };
    (ctx, handle)
}

fn object() -> SociIndex {
    let mut o = SociIndex::new(
        "web",
        serde_json::from_value(serde_json::json!({
            "images": [{"name": "main", "image": "127.0.0.1:5000/app:v1"}]
        }))
        .unwrap(),
    );
    o.metadata.namespace = Some("team-a".into());
    o.metadata.uid = Some("uid-1".into());
    o.metadata.generation = Some(1);
    o
}

fn request(job: &str) -> BuildRequest {
    BuildRequest {
        job_name: job.into(),
        image_name: "main".into(),
        source: "127.0.0.1:5000/app@sha256:aaaa".into(),
        source_digest: "sha256:aaaa".into(),
        target: "127.0.0.1:5000/app:v1-soci".into(),
        settings: BuildSettings {
            platforms: vec![],
            min_layer_size: 10 << 20,
            span_size: 4 << 20,
            index_version: Default::default(),
        },
    }
}

fn answer(code: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str) -> Response<Body> {
    answer(
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": reason, "reason": reason, "code": code,
        }),
    )
}

/// The next request: its method, path with query, and JSON body (if any).
async fn next(
    handle: &mut ApiHandle,
) -> (
    Method,
    String,
    serde_json::Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (method, uri, body, send)
}

#[tokio::test]
async fn apply_deletes_then_creates_and_tolerates_gone_and_still_deleting_jobs() {
    let (ctx, mut handle) = context();
    let planned = Plan {
        create: vec![request("soci-build-new"), request("soci-build-busy")],
        delete: vec!["soci-build-gone".into(), "soci-build-old".into()],
        status: SociIndexStatus::default(),
        requeue_after: None,
        queued: 0,
    };
    let object = object();
    let server = tokio::spawn(async move {
        let mut seen = vec![];
        for _ in 0..4 {
            let (method, uri, body, send) = next(&mut handle).await;
            seen.push((method.clone(), uri.clone()));
            match (method.as_str(), uri.as_str()) {
                ("DELETE", u) if u.contains("soci-build-gone") => {
                    send.send_response(status_error(404, "NotFound"))
                }
                ("DELETE", _) => {
                    assert_eq!(body["propagationPolicy"], "Background");
                    send.send_response(answer(
                        200,
                        serde_json::json!({"kind": "Status", "status": "Success"}),
                    ))
                }
                ("POST", _) if body["metadata"]["name"] == "soci-build-busy" => {
                    send.send_response(status_error(409, "AlreadyExists"))
                }
                ("POST", _) => send.send_response(answer(201, body)),
                other => panic!("unexpected request {other:?}"),
            }
        }
        seen
    });
    let applied = apply::jobs(&ctx, &object, &planned).await.unwrap();
    let seen = server.await.unwrap();
    let jobs = "/apis/batch/v1/namespaces/team-a/jobs";
    assert_eq!(
        seen,
        vec![
            (Method::DELETE, format!("{jobs}/soci-build-gone?")),
            (Method::DELETE, format!("{jobs}/soci-build-old?")),
            (Method::POST, format!("{jobs}?")),
            (Method::POST, format!("{jobs}?")),
        ]
    );
    // The Job that is still being deleted is created again shortly; the other one started.
    assert_eq!(applied.retry_after, Some(Duration::from_secs(5)));
    assert_eq!(applied.started.len(), 1);
    assert!(applied.started[0].starts_with("Job soci-build-new is building image main"));
}

#[tokio::test]
async fn apply_stops_at_the_first_api_failure() {
    let (ctx, mut handle) = context();
    let planned = Plan {
        create: vec![request("soci-build-new")],
        delete: vec!["soci-build-old".into()],
        status: SociIndexStatus::default(),
        requeue_after: None,
        queued: 0,
    };
    let object = object();
    let server = tokio::spawn(async move {
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::DELETE);
        send.send_response(status_error(500, "InternalError"));
        handle
    });
    let error = apply::jobs(&ctx, &object, &planned).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("deleting Job soci-build-old"),
        "{error:#}"
    );
    // No Job was created after the failed delete.
    let mut handle = server.await.unwrap();
    drop(ctx);
    assert!(handle.next_request().await.is_none());
}

fn ready(status: ConditionStatus) -> SociIndexStatus {
    SociIndexStatus {
        observed_generation: Some(1),
        conditions: vec![Condition::new(
            READY,
            status,
            Reason::Progressing,
            "working",
        )],
        ..Default::default()
    }
}

#[tokio::test]
async fn status_is_one_forced_server_side_apply_then_its_events() {
    let (ctx, mut handle) = context();
    let mut object = object();
    object.status = Some(ready(ConditionStatus::Unknown));
    // The object becomes Stalled: one transition, one Warning Event.
    let mut planned = ready(ConditionStatus::False);
    planned.conditions = vec![
        Condition::new(
            READY,
            ConditionStatus::False,
            Reason::InvalidSpec,
            "spec.images is empty",
        ),
        Condition::new(
            STALLED,
            ConditionStatus::True,
            Reason::InvalidSpec,
            "spec.images is empty",
        ),
    ];
    let sent = planned.clone();
    let mut written = object.clone();
    written.status = Some(planned.clone());
    let written = serde_json::to_value(&written).unwrap();
    let server = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/apis/soci.dev/v1alpha1/namespaces/team-a/sociindexes/web/status?&force=true&fieldManager=soci-operator"
        );
        assert_eq!(body["kind"], "SociIndex");
        assert_eq!(body["status"], serde_json::to_value(&sent).unwrap());
        send.send_response(answer(200, written));
        // Then the Event of the transition.
        let mut events = vec![];
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.method(), Method::POST);
            assert_eq!(
                request.uri().path(),
                "/apis/events.k8s.io/v1/namespaces/team-a/events"
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let event: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            send.send_response(answer(201, event.clone()));
            events.push((event["type"].clone(), event["reason"].clone()));
        }
        events
    });
    status::report(&ctx, &object, &planned, 0).await.unwrap();
    drop(ctx);
    let events = server.await.unwrap();
    assert_eq!(events, vec![("Warning".into(), "Stalled".into())]);
}

#[tokio::test]
async fn an_unchanged_status_is_not_written() {
    let (ctx, mut handle) = context();
    let mut object = object();
    let unchanged = ready(ConditionStatus::Unknown);
    object.status = Some(unchanged.clone());
    status::report(&ctx, &object, &unchanged, 0).await.unwrap();
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "a request was sent");
}

#[tokio::test]
async fn a_failed_status_write_is_the_reconciles_error() {
    let (ctx, mut handle) = context();
    let object = object();
    let server = tokio::spawn(async move {
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        send.send_response(status_error(409, "Conflict"));
    });
    let error = status::report(&ctx, &object, &ready(ConditionStatus::True), 0)
        .await
        .unwrap_err();
    server.await.unwrap();
    assert!(
        format!("{error:#}").contains("writing the status of web"),
        "{error:#}"
    );
    assert!(error.chain().any(|c| c.is::<kube::Error>()));
}
