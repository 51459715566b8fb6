//! The parsers on payloads shaped as the registries document them, and on hostile ones.

use super::*;
use serde_json::json;

const DIGEST: &str = "sha256:fc6d5ffb5ea9d9b8f4b4b4a1b1fdf0a2fa7d7b4a4e3b1b1e2c7f0a6b5d4c3b2a";
const LAYER: &str = "sha256:4fb0d0ff4a1e2bcb3f6e1a9bdd6c1c5a7e8b9a0f1e2d3c4b5a69788796a5b4c3";

/// A distribution notification as `docker-registry` 2.8 sends it (docs/notifications.md):
/// a manifest pushed by tag.
fn manifest_push(id: &str, media_type: &str) -> Value {
    json!({
        "id": id,
        "timestamp": "2024-05-01T10:00:00.123456789Z",
        "action": "push",
        "target": {
            "mediaType": media_type,
            "digest": DIGEST,
            "size": 528,
            "length": 528,
            "repository": "team/app",
            "url": format!("http://127.0.0.1:5000/v2/team/app/manifests/{DIGEST}"),
            "tag": "v1.2.3"
        },
        "request": {
            "id": "3b0e8a52-2f1c-4b4c-8f1e-0b7c1d2e3f40",
            "addr": "127.0.0.1:41234",
            "host": "127.0.0.1:5000",
            "method": "PUT",
            "useragent": "containerd/1.7"
        },
        "actor": {},
        "source": {"addr": "registry-0:5000", "instanceID": "a0b1c2d3-e4f5-4a6b-8c9d-0e1f2a3b4c5d"}
    })
}

fn blob_push(id: &str) -> Value {
    json!({
        "id": id,
        "timestamp": "2024-05-01T10:00:00.1Z",
        "action": "push",
        "target": {
            "mediaType": "application/octet-stream",
            "digest": LAYER,
            "size": 2803255,
            "length": 2803255,
            "repository": "team/app",
            "url": format!("http://127.0.0.1:5000/v2/team/app/blobs/{LAYER}")
        },
        "request": {"host": "127.0.0.1:5000", "method": "PUT"}
    })
}

fn pull(id: &str) -> Value {
    let mut e = manifest_push(id, "application/vnd.oci.image.manifest.v1+json");
    e["action"] = json!("pull");
    e["request"]["method"] = json!("GET");
    e
}

fn envelope(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

fn harbor(kind: &str, resources: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": kind,
        "occur_at": 1714557600,
        "operator": "admin",
        "event_data": {
            "resources": resources,
            "repository": {
                "date_created": 1714557000,
                "name": "app",
                "namespace": "team",
                "repo_full_name": "team/app",
                "repo_type": "private"
            }
        }
    }))
    .unwrap()
}

fn err(body: &[u8]) -> String {
    match parse(body) {
        Ok(p) => panic!("parsed {p:?}"),
        Err(e) => e.0,
    }
}

#[test]
fn distribution_manifest_push_by_tag() {
    let parsed = parse(&envelope(vec![manifest_push(
        "ev-1",
        "application/vnd.docker.distribution.manifest.v2+json",
    )]))
    .unwrap();
    assert_eq!(parsed.ignored, 0);
    assert_eq!(
        parsed.notifications,
        vec![Notification {
            key: "dist:ev-1".into(),
            event: PushEvent {
                registry: "127.0.0.1:5000".into(),
                repository: "team/app".into(),
                tag: Some("v1.2.3".into()),
                digest: Some(DIGEST.into()),
            },
        }]
    );
}

#[test]
fn distribution_keeps_every_manifest_and_index_type() {
    for media_type in MANIFEST_MEDIA_TYPES {
        let parsed = parse(&envelope(vec![manifest_push("x", media_type)])).unwrap();
        assert_eq!(parsed.notifications.len(), 1, "{media_type}");
    }
    let with_params = "application/vnd.oci.image.index.v1+json; charset=utf-8";
    assert_eq!(
        parse(&envelope(vec![manifest_push("x", with_params)]))
            .unwrap()
            .notifications
            .len(),
        1
    );
    // Not a manifest that moves a tag: a config blob type, a schema1 manifest.
    for media_type in [
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ] {
        let parsed = parse(&envelope(vec![manifest_push("x", media_type)])).unwrap();
        assert_eq!(
            (parsed.notifications.len(), parsed.ignored),
            (0, 1),
            "{media_type}"
        );
    }
}

#[test]
fn distribution_ignores_blob_pushes_pulls_mounts_deletes() {
    let mut mount = blob_push("m");
    mount["action"] = json!("mount");
    let mut delete = manifest_push("d", "application/vnd.oci.image.manifest.v1+json");
    delete["action"] = json!("delete");
    let parsed = parse(&envelope(vec![
        blob_push("b"),
        pull("p"),
        mount,
        delete,
        manifest_push("k", "application/vnd.oci.image.index.v1+json"),
    ]))
    .unwrap();
    assert_eq!(parsed.ignored, 4);
    assert_eq!(parsed.notifications.len(), 1);
    assert_eq!(parsed.notifications[0].key, "dist:k");
    // Only ignored events: fine, nothing kept.
    let parsed = parse(&envelope(vec![blob_push("b"), pull("p")])).unwrap();
    assert_eq!((parsed.notifications.len(), parsed.ignored), (0, 2));
    let parsed = parse(&envelope(vec![])).unwrap();
    assert_eq!(parsed, Parsed::default());
}

#[test]
fn distribution_host_from_url_else_request_host() {
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let mut e = manifest_push("a", mt);
    e["target"]["url"] = json!(format!(
        "https://Registry.Example.com:443/v2/team/app/manifests/{DIGEST}"
    ));
    e["request"]["host"] = json!("ignored.example.com");
    let p = parse(&envelope(vec![e])).unwrap();
    assert_eq!(p.notifications[0].event.registry, "registry.example.com");

    let mut e = manifest_push("b", mt);
    e["target"].as_object_mut().unwrap().remove("url");
    e["request"]["host"] = json!("registry.internal:5443");
    let p = parse(&envelope(vec![e])).unwrap();
    assert_eq!(p.notifications[0].event.registry, "registry.internal:5443");

    let mut e = manifest_push("c", mt);
    e["target"]["url"] = json!("http://[::1]:5000/v2/team/app/manifests/x");
    let p = parse(&envelope(vec![e])).unwrap();
    assert_eq!(p.notifications[0].event.registry, "[::1]:5000");

    // A push by digest (no tag): kept, tag None.
    let mut e = manifest_push("d", mt);
    e["target"].as_object_mut().unwrap().remove("tag");
    let p = parse(&envelope(vec![e])).unwrap();
    assert_eq!(p.notifications[0].event.tag, None);
    assert_eq!(p.notifications[0].event.digest.as_deref(), Some(DIGEST));

    let mut e = manifest_push("e", mt);
    e["target"].as_object_mut().unwrap().remove("url");
    e.as_object_mut().unwrap().remove("request");
    assert!(err(&envelope(vec![e])).contains("names the registry"));
}

#[test]
fn harbor_push_artifact() {
    let body = harbor(
        "PUSH_ARTIFACT",
        json!([
            {"digest": DIGEST, "tag": "v1", "resource_url": "harbor.example.com/team/app:v1"},
            {"digest": DIGEST, "tag": "", "resource_url": format!("harbor.example.com:8443/team/app@{DIGEST}")}
        ]),
    );
    let parsed = parse(&body).unwrap();
    assert_eq!(parsed.ignored, 0);
    let events: Vec<_> = parsed
        .notifications
        .iter()
        .map(|n| n.event.clone())
        .collect();
    assert_eq!(
        events,
        vec![
            PushEvent {
                registry: "harbor.example.com".into(),
                repository: "team/app".into(),
                tag: Some("v1".into()),
                digest: Some(DIGEST.into()),
            },
            PushEvent {
                registry: "harbor.example.com:8443".into(),
                repository: "team/app".into(),
                tag: None,
                digest: Some(DIGEST.into()),
            },
        ]
    );
    assert_eq!(
        parsed.notifications[0].key,
        format!("harbor:1714557600:harbor.example.com/team/app:v1@{DIGEST}")
    );
    // The same delivery again: the same keys (so the server drops it).
    assert_eq!(parse(&body).unwrap(), parsed);
}

#[test]
fn harbor_other_types_are_ignored() {
    for kind in [
        "PULL_ARTIFACT",
        "DELETE_ARTIFACT",
        "SCANNING_COMPLETED",
        "QUOTA_EXCEED",
    ] {
        let parsed = parse(&harbor(kind, json!([{"resource_url": "h/x:1"}]))).unwrap();
        assert_eq!(
            (parsed.notifications.len(), parsed.ignored),
            (0, 1),
            "{kind}"
        );
    }
}

#[test]
fn harbor_inconsistent_or_incomplete() {
    let e = err(&harbor(
        "PUSH_ARTIFACT",
        json!([{"tag": "v1", "resource_url": "h.example.com/other/app:v1"}]),
    ));
    assert!(e.contains("repo_full_name"), "{e}");
    let e = err(&harbor("PUSH_ARTIFACT", json!([{"tag": "v1"}])));
    assert!(e.contains("resource_url is missing"), "{e}");
    let e = err(&harbor(
        "PUSH_ARTIFACT",
        json!([{"resource_url": "no-slash"}]),
    ));
    assert!(e.contains("not host/repository"), "{e}");
    let e = err(&harbor("PUSH_ARTIFACT", json!([])));
    assert!(e.contains("without resources"), "{e}");
    let e = err(br#"{"type":"PUSH_ARTIFACT","occur_at":1}"#);
    assert!(e.contains("without event_data"), "{e}");
}

#[test]
fn too_many_events() {
    let events: Vec<Value> = (0..MAX_EVENTS).map(|i| blob_push(&i.to_string())).collect();
    assert_eq!(
        parse(&envelope(events.clone())).unwrap().ignored,
        MAX_EVENTS
    );
    let mut more = events;
    more.push(blob_push("last"));
    let e = err(&envelope(more));
    assert_eq!(e, "65 events in one envelope; at most 64 are taken");

    let resources: Vec<Value> = (0..=MAX_EVENTS)
        .map(|i| json!({"tag": format!("t{i}"), "resource_url": format!("h.example.com/team/app:t{i}")}))
        .collect();
    let e = err(&harbor("PUSH_ARTIFACT", Value::Array(resources)));
    assert!(e.contains("at most 64"), "{e}");
}

#[test]
fn not_json_or_not_a_notification() {
    assert!(err(b"").starts_with("not valid JSON"));
    assert!(err(b"{\"events\": [").starts_with("not valid JSON"));
    assert!(err(b"\xff\xfe").starts_with("not valid JSON"));
    assert_eq!(err(b"[1,2]"), "the body is not a JSON object");
    assert_eq!(err(b"\"events\""), "the body is not a JSON object");
    assert!(err(b"{\"hello\": 1}").starts_with("neither a distribution"));
}

#[test]
fn wrong_types() {
    for body in [
        json!({"events": "push"}),
        json!({"events": {"0": {}}}),
        json!({"events": [42]}),
        json!({"events": [{"id": 1, "action": "push"}]}),
        json!({"events": [{"id": "x", "action": ["push"]}]}),
        json!({"events": [{"id": "x", "action": "push", "target": "manifest"}]}),
        json!({"events": [{"id": "x", "action": "push", "target": {"mediaType": 7}}]}),
        json!({"type": 5}),
        json!({"type": "PUSH_ARTIFACT", "event_data": {"resources": "all"}}),
        json!({"type": "PUSH_ARTIFACT", "event_data": {"resources": [{"tag": 1}]}}),
        json!({"type": "PUSH_ARTIFACT", "occur_at": [1], "event_data": {"resources": [{"resource_url": "h.example.com/team/app:1"}]}}),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        assert!(parse(&bytes).is_err(), "accepted {body}");
    }
}

#[test]
fn deep_nesting_is_refused() {
    let depth = 100_000;
    let mut body = String::from("{\"events\":[");
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push_str("]}");
    let e = err(body.as_bytes());
    assert!(e.contains("recursion limit"), "{e}");
}

#[test]
fn huge_fields_are_refused() {
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/target/repository",
            json!("a/".repeat(200) + "b"),
            "1 to 255",
        ),
        ("/target/tag", json!("t".repeat(129)), "not a tag"),
        ("/target/tag", json!("-leading-dash"), "not a tag"),
        (
            "/target/repository",
            json!("Team/App"),
            "not a repository name",
        ),
        (
            "/target/repository",
            json!("team//app"),
            "not a repository name",
        ),
        (
            "/target/repository",
            json!("team/app-"),
            "not a repository name",
        ),
        (
            "/target/repository",
            json!("../etc"),
            "not a repository name",
        ),
        ("/target/digest", json!("sha256:abc"), "not a digest"),
        (
            "/target/digest",
            json!(format!("sha256:{}", "a".repeat(10_000))),
            "not a digest",
        ),
        (
            "/target/url",
            json!(format!("http://{}/v2/x", "h".repeat(300))),
            "registry host",
        ),
        (
            "/target/url",
            json!("http://h.example.com:99999/v2/x"),
            "registry host",
        ),
        (
            "/target/url",
            json!("http://user:pw@h.example.com/v2/x"),
            "user information",
        ),
        (
            "/target/url",
            json!("ftp://h.example.com/v2/x"),
            "http(s) URL",
        ),
        (
            "/target/url",
            json!("http://bad_host!/v2/x"),
            "registry host",
        ),
        ("/id", json!("i".repeat(300)), "too long"),
        ("/id", json!(""), "without an id"),
    ];
    for (pointer, value, expected) in cases {
        let mut e = manifest_push("x", mt);
        *e.pointer_mut(pointer).unwrap() = value;
        let got = err(&envelope(vec![e]));
        assert!(got.starts_with("events[0]: "), "{pointer}: {got}");
        assert!(got.contains(expected), "{pointer}: {got}");
        assert!(
            got.len() < 1024,
            "the message repeats a huge field: {} bytes",
            got.len()
        );
    }
    // The same fields in an ignored event are not checked: the event is dropped anyway.
    let mut p = pull("p");
    p["target"]["repository"] = json!("Not A Repo");
    assert_eq!(parse(&envelope(vec![p])).unwrap().ignored, 1);
    // Longest valid names pass.
    let mut e = manifest_push("x", mt);
    e["target"]["repository"] = json!("a".repeat(255));
    e["target"]["tag"] = json!("t".repeat(128));
    assert_eq!(parse(&envelope(vec![e])).unwrap().notifications.len(), 1);
}

#[test]
fn names_with_separators() {
    for ok in [
        "a",
        "a/b",
        "a.b/c_d",
        "a__b",
        "a---b/c",
        "0/1",
        "team/sub/app",
    ] {
        assert!(check_repository(ok).is_ok(), "{ok}");
    }
    for bad in [
        "", "/a", "a/", "a..b", "a___b", "_a", "a-", "a b", "A", "a:b", "a@b",
    ] {
        assert!(check_repository(bad).is_err(), "{bad}");
    }
    for ok in ["v1", "latest", "_x", "1.2.3-rc.1", "A_b"] {
        assert!(check_tag(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".x", "-x", "a:b", "a/b", "a b"] {
        assert!(check_tag(bad).is_err(), "{bad}");
    }
    for ok in [
        "localhost",
        "127.0.0.1:5000",
        "r.example.com",
        "[::1]",
        "[fe80::1]:443",
    ] {
        assert!(check_host(ok).is_ok(), "{ok}");
    }
    for bad in [
        "", ":5000", "h:", "h:0", "h:x", "[::1", "[zz]", "[::1]x", "a..b", "-a.b", "a_b",
    ] {
        assert!(check_host(bad).is_err(), "{bad}");
    }
}
