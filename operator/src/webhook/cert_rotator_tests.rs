//! [`reconcile`] against a mocked Kubernetes API (tower-test, as `controller/api_tests.rs`): the
//! requests it sends, in order, and what it makes of the answers.

use super::*;
use crate::webhook::certs::{IssuedPair, issue_ca, issue_leaf};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use std::time::UNIX_EPOCH;
use tower_test::mock::{self, Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const SECRET_PATH: &str = "/api/v1/namespaces/soci-system/secrets/soci-webhook-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/soci-system/secrets";
const CONFIG_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/soci-operator";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn options() -> RotatorOptions {
    RotatorOptions {
        namespace: "soci-system".into(),
        secret_name: "soci-webhook-tls".into(),
        webhook_configuration: "soci-operator".into(),
        dns_names: vec!["soci-webhook.soci-system.svc".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        settings: Settings::default(),
    }
}

fn names() -> ServingNames {
    let o = options();
    ServingNames::new(&o.dns_names, &o.ip_addresses).unwrap()
}

fn client() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
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

async fn next(
    handle: &mut ApiHandle,
) -> (
    Method,
    String,
    serde_json::Value,
    SendResponse<Response<Body>>,
) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (method, path, body, send)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A settled Secret (a CA and its leaf, issued an hour before [`now`]) as JSON.
fn settled_secret(labelled: bool) -> (serde_json::Value, IssuedPair) {
    let at = now() - Duration::from_secs(3600);
    let ca = issue_ca(at, Settings::DEFAULT_CA_VALIDITY).unwrap();
    let leaf = issue_leaf(&ca, &names(), at, at + Settings::DEFAULT_LEAF_VALIDITY).unwrap();
    let mut meta = serde_json::json!({
        "name": "soci-webhook-tls", "namespace": "soci-system", "resourceVersion": "41",
    });
    if labelled {
        meta["labels"] = serde_json::json!({ MANAGED_BY_LABEL: MANAGED_BY });
    }
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": SECRET_TYPE,
        "data": {
            "ca.crt": b64(ca.cert_pem.as_bytes()),
            "ca.key": b64(ca.key_pem.as_bytes()),
            "tls.crt": b64(leaf.cert_pem.as_bytes()),
            "tls.key": b64(leaf.key_pem.as_bytes()),
        },
    });
    (secret, ca)
}

fn configuration(bundles: &[Option<String>]) -> serde_json::Value {
    let webhooks: Vec<_> = bundles
        .iter()
        .enumerate()
        .map(|(i, bundle)| {
            let mut client_config =
                serde_json::json!({ "url": format!("https://127.0.0.1:8443/mutate-{i}") });
            if let Some(b) = bundle {
                client_config["caBundle"] = serde_json::json!(b);
            }
            serde_json::json!({
                "name": format!("pods-{i}.soci.dev"),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": client_config,
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "soci-operator", "resourceVersion": "7" },
        "webhooks": webhooks,
    })
}

/// Fails the test if the client sends anything more.
async fn assert_no_more_requests(mut handle: ApiHandle, client: Client) {
    drop(client);
    assert!(
        handle.next_request().await.is_none(),
        "an unexpected further request"
    );
}

#[tokio::test]
async fn a_missing_secret_is_created_and_the_bundle_written_into_every_webhook() {
    let (client, mut handle) = client();
    let server = tokio::spawn(async move {
        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::GET, SECRET_PATH));
        send.send_response(status_error(404, "NotFound"));

        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::POST, SECRETS_PATH));
        assert_eq!(body["type"], SECRET_TYPE);
        assert_eq!(body["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        for key in ["tls.crt", "tls.key", "ca.crt", "ca.key"] {
            assert!(body["data"][key].is_string(), "{key} missing: {body}");
        }
        let bundle = body["data"]["ca.crt"].as_str().unwrap().to_string();
        send.send_response(answer(201, body));

        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::GET, CONFIG_PATH));
        send.send_response(answer(200, configuration(&[None, Some(b64(b"old"))])));

        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::PUT, CONFIG_PATH));
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        for webhook in body["webhooks"].as_array().unwrap() {
            assert_eq!(webhook["clientConfig"]["caBundle"], bundle.as_str());
        }
        send.send_response(answer(200, body));
        handle
    });
    let outcome = reconcile(&client, &options(), &names(), now())
        .await
        .unwrap();
    assert_eq!(outcome.secret, SecretChange::Created);
    assert_eq!(outcome.bundle, BundleChange::Patched(2));
    assert_no_more_requests(server.await.unwrap(), client).await;
}

#[tokio::test]
async fn a_conflict_rereads_and_takes_the_other_replicas_secret() {
    let (client, mut handle) = client();
    let (theirs, theirs_ca) = settled_secret(true);
    let their_bundle = b64(theirs_ca.cert_pem.as_bytes());
    let server = tokio::spawn(async move {
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        send.send_response(status_error(404, "NotFound"));
        // Another replica created it meanwhile.
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::POST);
        send.send_response(status_error(409, "AlreadyExists"));
        // Read again: theirs is settled, so no write.
        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::GET, SECRET_PATH));
        send.send_response(answer(200, theirs));
        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::GET, CONFIG_PATH));
        send.send_response(answer(200, configuration(&[Some(their_bundle)])));
        handle
    });
    let outcome = reconcile(&client, &options(), &names(), now())
        .await
        .unwrap();
    assert_eq!(outcome.secret, SecretChange::Unchanged);
    assert_eq!(outcome.bundle, BundleChange::AlreadyCurrent);
    assert_no_more_requests(server.await.unwrap(), client).await;
}

#[tokio::test]
async fn an_update_carries_the_resource_version_read_and_a_409_rereads() {
    let (client, mut handle) = client();
    // A settled Secret whose leaf has expired by `now + 2 years`.
    let (stale, _) = settled_secret(true);
    let later = now() + 2 * Settings::DEFAULT_LEAF_VALIDITY;
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut handle).await;
        send.send_response(answer(200, stale.clone()));
        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::PUT, SECRET_PATH));
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_ne!(body["data"]["tls.crt"], stale["data"]["tls.crt"]);
        send.send_response(status_error(409, "Conflict"));
        // Re-read: still stale (say the other write was an unrelated label): write again.
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        let mut newer = stale.clone();
        newer["metadata"]["resourceVersion"] = "42".into();
        send.send_response(answer(200, newer));
        let (method, _, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        send.send_response(answer(200, body));
        let (_, path, _, send) = next(&mut handle).await;
        assert_eq!(path, CONFIG_PATH);
        send.send_response(status_error(404, "NotFound"));
        handle
    });
    let outcome = reconcile(&client, &options(), &names(), later)
        .await
        .unwrap();
    assert_eq!(outcome.secret, SecretChange::Updated);
    assert_eq!(outcome.bundle, BundleChange::ConfigurationMissing);
    assert_no_more_requests(server.await.unwrap(), client).await;
}

#[tokio::test]
async fn an_unmanaged_secret_is_left_alone() {
    let (client, mut handle) = client();
    let (foreign, _) = settled_secret(false);
    let server = tokio::spawn(async move {
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        send.send_response(answer(200, foreign));
        handle
    });
    // Even with an expired leaf nothing is written.
    let later = now() + 2 * Settings::DEFAULT_LEAF_VALIDITY;
    let error = reconcile(&client, &options(), &names(), later)
        .await
        .unwrap_err();
    assert!(matches!(error, RotatorError::Unmanaged { .. }), "{error}");
    assert!(error.to_string().contains("not rewriting"), "{error}");
    assert_no_more_requests(server.await.unwrap(), client).await;
}

#[tokio::test]
async fn the_bundle_is_written_only_where_it_differs() {
    for (bundles, want) in [
        (vec![true, true], BundleChange::AlreadyCurrent),
        (vec![true, false], BundleChange::Patched(1)),
    ] {
        let (client, mut handle) = client();
        let (secret, ca) = settled_secret(true);
        let current = b64(ca.cert_pem.as_bytes());
        let bundles: Vec<Option<String>> = bundles
            .iter()
            .map(|&same| Some(if same { current.clone() } else { b64(b"stale") }))
            .collect();
        let server = tokio::spawn(async move {
            let (_, path, _, send) = next(&mut handle).await;
            assert_eq!(path, SECRET_PATH);
            send.send_response(answer(200, secret));
            let (_, path, _, send) = next(&mut handle).await;
            assert_eq!(path, CONFIG_PATH);
            send.send_response(answer(200, configuration(&bundles)));
            if want != BundleChange::AlreadyCurrent {
                let (method, _, body, send) = next(&mut handle).await;
                assert_eq!(method, Method::PUT);
                for webhook in body["webhooks"].as_array().unwrap() {
                    assert_eq!(webhook["clientConfig"]["caBundle"], current.as_str());
                }
                send.send_response(answer(200, body));
            }
            handle
        });
        let outcome = reconcile(&client, &options(), &names(), now())
            .await
            .unwrap();
        assert_eq!(outcome.secret, SecretChange::Unchanged);
        assert_eq!(outcome.bundle, want);
        assert_no_more_requests(server.await.unwrap(), client).await;
    }
}

#[test]
fn backoff_doubles_up_to_its_cap_and_resets() {
    let mut b = Backoff::new(Duration::from_secs(10));
    let waits: Vec<u64> = (0..6).map(|_| b.next_wait().as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    b.reset();
    assert_eq!(b.next_wait(), Duration::from_secs(1));
}
