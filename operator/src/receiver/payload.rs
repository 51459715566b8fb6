//! The bodies registries POST when an image is pushed, parsed into [`PushEvent`]s. Pure: no I/O.
//!
//! * distribution (`docker-registry`, the CNCF Distribution registry): the notification
//!   envelope `{"events": [...]}`, content type `application/vnd.docker.distribution.events.v2+json`.
//!   Kept: `action == "push"` of a manifest or index (OCI or Docker v2); the host is that of
//!   `target.url`, else `request.host`. Blob pushes, pulls, mounts and deletes are ignored.
//! * Harbor: the webhook payload `{"type": "PUSH_ARTIFACT", "event_data": {...}}`; every
//!   resource of a `PUSH_ARTIFACT` is kept, its host and repository taken from `resource_url`
//!   (`host[:port]/repo:tag` or `host[:port]/repo@digest`). Other types are ignored.
//!
//! The format is told by shape (an `events` array, or a `type` field). Everything is bounded:
//! at most [`MAX_EVENTS`] events per body, names as long as distribution allows them, and a
//! kept event with a malformed name rejects the whole body with a message saying what is wrong.

use super::PushEvent;
use serde::Deserialize;
use serde_json::Value;

/// Events (distribution) or resources (Harbor) taken from one body; more is a bad request.
pub const MAX_EVENTS: usize = 64;
/// Longest repository name (distribution's own limit).
pub const MAX_REPOSITORY: usize = 255;
/// Longest tag (the OCI distribution spec's limit).
pub const MAX_TAG: usize = 128;
/// Longest registry host, digest, event id.
const MAX_HOST: usize = 255;
const MAX_DIGEST: usize = 200;
const MAX_ID: usize = 256;

/// The manifest and index types whose push can move a tag.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One kept event and the key that identifies a redelivery of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// distribution: `dist:` and the event id; Harbor (no ids): `harbor:`, `occur_at` and the
    /// resource. The same delivery sent again has the same key.
    pub key: String,
    pub event: PushEvent,
}

/// What one body held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub notifications: Vec<Notification>,
    /// Events read and deliberately dropped (pulls, blob pushes, other Harbor types...).
    pub ignored: usize,
}

/// Why a body was refused (answered 400); the message is sent back as the response body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

fn bad(msg: impl Into<String>) -> PayloadError {
    PayloadError(msg.into())
}

/// Parses a body of either format (told by shape).
pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    // serde_json refuses nesting deeper than 128 levels, so a hostile depth is a clean error.
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(bad("the body is not a JSON object"));
    };
    if map.contains_key("events") {
        parse_distribution(value)
    } else if map.contains_key("type") {
        parse_harbor(value)
    } else {
        Err(bad(
            "neither a distribution notification (an \"events\" array) nor a Harbor webhook (a \"type\" field)",
        ))
    }
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Value>,
}

#[derive(Deserialize)]
struct DistEvent {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    target: Option<DistTarget>,
    #[serde(default)]
    request: Option<DistRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DistTarget {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct DistRequest {
    #[serde(default)]
    host: Option<String>,
}

/// distribution's notification envelope.
pub fn parse_distribution(value: Value) -> Result<Parsed, PayloadError> {
    let envelope: Envelope =
        serde_json::from_value(value).map_err(|e| bad(format!("distribution envelope: {e}")))?;
    if envelope.events.len() > MAX_EVENTS {
        return Err(bad(format!(
            "{} events in one envelope; at most {MAX_EVENTS} are taken",
            envelope.events.len()
        )));
    }
    let mut parsed = Parsed::default();
    for (i, raw) in envelope.events.into_iter().enumerate() {
        let event: DistEvent =
            serde_json::from_value(raw).map_err(|e| bad(format!("events[{i}]: {e}")))?;
        let is_push = event.action.as_deref() == Some("push");
        let target = match event.target {
            Some(target)
                if is_push
                    && target
                        .media_type
                        .as_deref()
                        .is_some_and(|m| MANIFEST_MEDIA_TYPES.contains(&media_type_essence(m))) =>
            {
                target
            }
            _ => {
                parsed.ignored += 1;
                continue;
            }
        };
        let at = |msg: String| bad(format!("events[{i}]: {msg}"));
        let id = event
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| at("a push without an id".into()))?;
        if id.len() > MAX_ID || id.chars().any(char::is_control) {
            return Err(at("the id is too long or has control characters".into()));
        }
        let host = match target.url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => host_of_url(url).map_err(at)?,
            None => event
                .request
                .and_then(|r| r.host)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    at("neither target.url nor request.host names the registry".into())
                })?,
        };
        let registry = check_host(&host).map_err(at)?;
        let repository = target
            .repository
            .ok_or_else(|| at("target.repository is missing".into()))?;
        check_repository(&repository).map_err(at)?;
        let tag = target.tag.filter(|t| !t.is_empty());
        if let Some(t) = &tag {
            check_tag(t).map_err(at)?;
        }
        let digest = target.digest.filter(|d| !d.is_empty());
        if let Some(d) = &digest {
            check_digest(d).map_err(at)?;
        }
        parsed.notifications.push(Notification {
            key: format!("dist:{id}"),
            event: PushEvent {
                registry,
                repository,
                tag,
                digest,
            },
        });
    }
    Ok(parsed)
}

#[derive(Deserialize)]
struct HarborPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    occur_at: Option<Value>,
    #[serde(default)]
    event_data: Option<HarborData>,
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    resources: Vec<HarborResource>,
    #[serde(default)]
    repository: Option<HarborRepository>,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    resource_url: Option<String>,
}

#[derive(Deserialize)]
struct HarborRepository {
    #[serde(default)]
    repo_full_name: Option<String>,
}

/// Harbor's webhook payload (the HTTP endpoint's `Default` format).
pub fn parse_harbor(value: Value) -> Result<Parsed, PayloadError> {
    let payload: HarborPayload =
        serde_json::from_value(value).map_err(|e| bad(format!("Harbor webhook: {e}")))?;
    if payload.kind != "PUSH_ARTIFACT" {
        return Ok(Parsed {
            notifications: Vec::new(),
            ignored: 1,
        });
    }
    let data = payload
        .event_data
        .ok_or_else(|| bad("PUSH_ARTIFACT without event_data"))?;
    if data.resources.len() > MAX_EVENTS {
        return Err(bad(format!(
            "{} resources in one webhook; at most {MAX_EVENTS} are taken",
            data.resources.len()
        )));
    }
    if data.resources.is_empty() {
        return Err(bad("PUSH_ARTIFACT without resources"));
    }
    let occur_at = match payload.occur_at {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if s.len() <= 64 => s,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(bad("occur_at is neither a number nor a short string")),
    };
    let full_name = data.repository.and_then(|r| r.repo_full_name);
    let mut parsed = Parsed::default();
    for (i, resource) in data.resources.into_iter().enumerate() {
        let at = |msg: String| bad(format!("event_data.resources[{i}]: {msg}"));
        let url = resource
            .resource_url
            .filter(|u| !u.is_empty())
            .ok_or_else(|| at("resource_url is missing".into()))?;
        let (host, rest) = url
            .split_once('/')
            .ok_or_else(|| at(format!("resource_url {url:?} is not host/repository")))?;
        let registry = check_host(host).map_err(at)?;
        // `repo@digest` or `repo:tag`; a ':' after the last '/' starts the tag.
        let repository = match rest.split_once('@') {
            Some((repo, _)) => repo,
            None => match rest.rfind(':') {
                Some(colon) if !rest[colon..].contains('/') => &rest[..colon],
                _ => rest,
            },
        }
        .to_string();
        check_repository(&repository).map_err(at)?;
        if let Some(full) = &full_name
            && !full.is_empty()
            && *full != repository
        {
            return Err(at(format!(
                "resource_url names {repository:?} but repository.repo_full_name is {full:?}"
            )));
        }
        let tag = resource.tag.filter(|t| !t.is_empty());
        if let Some(t) = &tag {
            check_tag(t).map_err(at)?;
        }
        let digest = resource.digest.filter(|d| !d.is_empty());
        if let Some(d) = &digest {
            check_digest(d).map_err(at)?;
        }
        parsed.notifications.push(Notification {
            key: format!(
                "harbor:{occur_at}:{registry}/{repository}:{}@{}",
                tag.as_deref().unwrap_or(""),
                digest.as_deref().unwrap_or("")
            ),
            event: PushEvent {
                registry,
                repository,
                tag,
                digest,
            },
        });
    }
    Ok(parsed)
}

/// `application/vnd.oci.image.manifest.v1+json; charset=utf-8` → the part before parameters.
fn media_type_essence(m: &str) -> &str {
    m.split(';').next().unwrap_or("").trim()
}

/// The `host[:port]` of `http(s)://host[:port]/...`, as an image reference names it (an
/// explicit default port of the scheme dropped).
fn host_of_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("target.url {url:?} is not an http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("target.url carries user information".into());
    }
    let host = match scheme.to_ascii_lowercase().as_str() {
        "https" => authority.strip_suffix(":443").unwrap_or(authority),
        "http" => authority.strip_suffix(":80").unwrap_or(authority),
        _ => return Err(format!("target.url {url:?} is not an http(s) URL")),
    };
    Ok(host.to_string())
}

/// A registry host as image references write it, lowercased: a DNS name or IPv4 address, or
/// a bracketed IPv6 address, and an optional port.
fn check_host(host: &str) -> Result<String, String> {
    let bad = || format!("{host:?} is not a registry host[:port]");
    if host.is_empty() || host.len() > MAX_HOST {
        return Err(bad());
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if let Some(name) = name
        && !name.split('.').all(label_ok)
    {
        return Err(bad());
    }
    if let Some(port) = port {
        let valid = (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(bad());
        }
    }
    Ok(host.to_ascii_lowercase())
}

/// distribution's repository grammar: `/`-separated components of lowercase letters and
/// digits, joined by `.`, `_`, `__` or runs of `-`.
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.len() > MAX_REPOSITORY {
        return Err(format!(
            "a repository name must be 1 to {MAX_REPOSITORY} characters (got {})",
            repo.len()
        ));
    }
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator: `.`, `_`, `__` or one or more `-`, between alphanumerics.
            let start = i;
            match b[i] {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if i < b.len() && b[i] == b'_' {
                        i += 1;
                    }
                }
                b'-' => {
                    while i < b.len() && b[i] == b'-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
            if i == start || i >= b.len() || !alnum(b[i]) {
                return false;
            }
        }
        true
    };
    if !repo.split('/').all(component_ok) {
        return Err(format!("{repo:?} is not a repository name"));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let ok = tag.len() <= MAX_TAG
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = tag.chars().take(MAX_TAG + 1).collect();
        Err(format!(
            "{shown:?} is not a tag (at most {MAX_TAG} of [A-Za-z0-9_.-])"
        ))
    }
}

/// `algorithm:encoded` as the OCI image spec defines a digest; sha256/sha512 checked exactly.
fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || {
        let shown: String = digest.chars().take(80).collect();
        format!("{shown:?} is not a digest")
    };
    if digest.len() > MAX_DIGEST {
        return Err(bad());
    }
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    let hex = |n: usize| {
        encoded.len() == n
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let encoded_ok = match algorithm {
        "sha256" => hex(64),
        "sha512" => hex(128),
        _ => {
            !encoded.is_empty()
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        }
    };
    if algorithm_ok && encoded_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
#[path = "payload_tests.rs"]
mod tests;
