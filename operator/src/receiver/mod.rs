//! The registry push-event receiver: an HTTP endpoint, on axum, that registries POST to when an
//! image is pushed (distribution's `notifications`, Harbor's webhooks), turned into
//! [`PushEvent`]s on a channel the controller reads.
//!
//! * Only `POST` on exactly [`ReceiverOptions::path`] (else 404, or 405 for another method).
//! * `Authorization: Bearer <token>`, the token being the trimmed content of
//!   [`ReceiverOptions::token_file`] (a mounted Secret), re-read when the file changes, compared
//!   in constant time (sha256 of both). Missing or wrong: 401. An empty or unreadable token
//!   file: every request 503 (never an open door), logged.
//! * Bodies over [`ReceiverOptions::max_body_bytes`]: 413 (by `Content-Length`, or while reading
//!   a chunked body); the whole body must arrive within [`ReceiverOptions::read_timeout`] (408).
//!   Not a notification of either format: 400 with the reason.
//! * Each kept event goes to the channel with `try_send` (the receiver never waits on the
//!   controller): 202 when at least one was forwarded, 200 when every event was ignored or a
//!   redelivery; a full channel: 503 with `Retry-After: 5` (the events forwarded before it are
//!   remembered, so the registry's retry forwards only the rest).
//! * Redeliveries (both formats deliver at least once) are dropped by key: the last
//!   [`DEDUP_KEYS`] forwarded events are remembered.
//! * At most [`MAX_CONNECTIONS`] connections at once, each closed after [`CONNECTION_LIFETIME`]
//!   (a bound on slow headers too), and [`MAX_IN_FLIGHT`] requests reading a body at once.

pub mod payload;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use prometheus::{IntCounter, IntCounterVec, Opts};
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// One pushed manifest or index, as a registry reported it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PushEvent {
    /// `host[:port]` as image references write it (lowercased), e.g. `127.0.0.1:5000`.
    pub registry: String,
    pub repository: String,
    /// The tag pushed to; `None` for a push by digest (e.g. the children of an index).
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Whether `event` may have moved `registry/repository[:tag]`: same registry (host compared
/// without case, Docker Hub's names alike) and repository, and either `tag` is `None` (a policy
/// following the whole repository) or the event pushed that very tag. A push by digest moves no
/// tag, so it names nothing followed by tag.
pub fn names_pushed(
    event: &PushEvent,
    registry: &str,
    repository: &str,
    tag: Option<&str>,
) -> bool {
    let same_registry = canonical_registry(&event.registry) == canonical_registry(registry);
    let hub = canonical_registry(registry) == DOCKER_HUB;
    let same_repository = if hub {
        hub_repository(&event.repository) == hub_repository(repository)
    } else {
        event.repository == repository
    };
    let same_tag = match (tag, event.tag.as_deref()) {
        (None, _) => true,
        (Some(want), Some(pushed)) => want == pushed,
        (Some(_), None) => false,
    };
    same_registry && same_repository && same_tag
}

const DOCKER_HUB: &str = "docker.io";

fn canonical_registry(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.into(),
        _ => host,
    }
}

/// Docker Hub's official images: `nginx` is `library/nginx`.
fn hub_repository(repository: &str) -> String {
    if repository.contains('/') {
        repository.to_string()
    } else {
        format!("library/{repository}")
    }
}

/// Forwarded events remembered to drop redeliveries.
pub const DEDUP_KEYS: usize = 1024;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests reading or handling a body at once; more are answered 503 (busy).
pub const MAX_IN_FLIGHT: usize = 8;
/// A connection is closed this long after it was accepted, whatever it is doing.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The token file may not be larger than this (a token, not a document).
const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// How often an unusable token file is logged again while it stays unusable.
const TOKEN_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Where to listen (the caller binds it and passes the listener to [`serve`]).
    pub listen: SocketAddr,
    /// The one path served, e.g. `/hook/registry`: `/` and `[A-Za-z0-9._~/-]` only.
    pub path: String,
    /// The bearer token, trimmed (a Secret mounted as a file).
    pub token_file: PathBuf,
    /// Largest body taken (default [`ReceiverOptions::DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// The whole body must arrive within this (default 10 s).
    pub read_timeout: Duration,
}

impl ReceiverOptions {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 3 << 20;
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// The defaults for the body cap and read timeout.
    pub fn new(
        listen: SocketAddr,
        path: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            listen,
            path: path.into(),
            token_file: token_file.into(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
        }
    }

    fn check_path(&self) -> io::Result<()> {
        let p = &self.path;
        let ok = p.starts_with('/')
            && p.len() <= 256
            && !p.contains("//")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~/-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "push receiver path {p:?}: must start with / and hold only A-Z a-z 0-9 . _ ~ / -"
                ),
            ))
        }
    }
}

/// The receiver's Prometheus metrics.
#[derive(Clone)]
pub struct ReceiverMetrics {
    /// `soci_operator_push_requests_total{outcome}`.
    pub requests: IntCounterVec,
    /// `soci_operator_push_events_total`: events forwarded to the controller.
    pub events: IntCounter,
}

/// The `outcome` label values of `soci_operator_push_requests_total`.
pub const OUTCOMES: [&str; 7] = [
    "accepted",
    "ignored",
    "unauthorized",
    "bad_request",
    "too_large",
    "busy",
    "unavailable",
];

impl ReceiverMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "soci_operator_push_requests_total",
                "Requests to the registry push-event receiver, by outcome",
            ),
            &["outcome"],
        )?;
        for outcome in OUTCOMES {
            requests.with_label_values(&[outcome]);
        }
        let events = IntCounter::new(
            "soci_operator_push_events_total",
            "Push events forwarded to the controller",
        )?;
        Ok(Self { requests, events })
    }

    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.events.clone()))
    }

    fn count(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }
}

/// The endpoint as an axum [`Router`] (for tests and for callers that serve it themselves;
/// [`serve`] adds the connection bounds).
pub fn router(
    options: ReceiverOptions,
    sink: mpsc::Sender<PushEvent>,
    metrics: ReceiverMetrics,
) -> io::Result<Router> {
    options.check_path()?;
    let path = options.path.clone();
    let shared = Arc::new(Shared {
        options,
        sink,
        metrics,
        token: Mutex::new(TokenCache::default()),
        seen: Mutex::new(Seen::default()),
        in_flight: Semaphore::new(MAX_IN_FLIGHT),
    });
    Ok(Router::new().route(&path, post(receive)).with_state(shared))
}

/// Serves the receiver on `listener` until `shutdown` completes (then in-flight requests are
/// finished). Fails at once on an invalid [`ReceiverOptions::path`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: ReceiverOptions,
    sink: mpsc::Sender<PushEvent>,
    metrics: ReceiverMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(options, sink, metrics)?;
    serve_bounded(
        listener,
        app,
        MAX_CONNECTIONS,
        CONNECTION_LIFETIME,
        shutdown,
    )
    .await
}

async fn serve_bounded(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    lifetime: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = BoundedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(max_connections)),
        lifetime,
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

struct Shared {
    options: ReceiverOptions,
    sink: mpsc::Sender<PushEvent>,
    metrics: ReceiverMetrics,
    token: Mutex<TokenCache>,
    seen: Mutex<Seen>,
    in_flight: Semaphore,
}

/// What identifies a version of the token file: a rotated Secret is a new file (new inode
/// behind the `..data` symlink), an edit in place changes the times or the length.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: (u64, u64),
    ctime: (i64, i64),
}

#[derive(Default)]
struct TokenCache {
    stamp: Option<Stamp>,
    /// The sha256 of the token, or why there is none.
    token: Option<Result<[u8; 32], String>>,
    last_logged: Option<(String, Instant)>,
}

impl TokenCache {
    /// Logs an unusable token file once, then again every minute or when the reason changes.
    fn log(&mut self, path: &std::path::Path, why: &str) {
        let again = match &self.last_logged {
            Some((last, at)) => last != why || at.elapsed() >= TOKEN_LOG_EVERY,
            None => true,
        };
        if again {
            tracing::error!(file = %path.display(), reason = why, "push receiver: no usable token, answering 503");
            self.last_logged = Some((why.to_string(), Instant::now()));
        }
    }
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: (meta.dev(), meta.ino()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    }
}

impl Shared {
    /// The sha256 of the current token, the file re-read if it changed since last time.
    async fn token(&self) -> Option<[u8; 32]> {
        let path = &self.options.token_file;
        let current = match tokio::fs::metadata(path).await {
            Ok(meta) if !meta.is_file() => Err("not a regular file".to_string()),
            Ok(meta) if meta.len() > MAX_TOKEN_FILE => Err(format!(
                "{} bytes: larger than {MAX_TOKEN_FILE}",
                meta.len()
            )),
            Ok(meta) => Ok(stamp(&meta)),
            Err(e) => Err(e.to_string()),
        };
        let stamp = match current {
            Ok(stamp) => stamp,
            Err(why) => {
                let mut cache = crate::locks::lock(&self.token);
                cache.stamp = None;
                cache.token = None;
                cache.log(path, &why);
                return None;
            }
        };
        {
            let cache = crate::locks::lock(&self.token);
            if cache.stamp.as_ref() == Some(&stamp)
                && let Some(Ok(hash)) = &cache.token
            {
                return Some(*hash);
            }
        }
        let token = match tokio::fs::read(path).await {
            Ok(bytes) if bytes.len() as u64 > MAX_TOKEN_FILE => {
                Err(format!("larger than {MAX_TOKEN_FILE} bytes"))
            }
            Ok(bytes) => match bytes.trim_ascii() {
                [] => Err("the token file is empty".to_string()),
                token => Ok(Sha256::digest(token).into()),
            },
            Err(e) => Err(e.to_string()),
        };
        let mut cache = crate::locks::lock(&self.token);
        let changed = cache.stamp.is_some() && cache.stamp.as_ref() != Some(&stamp);
        cache.stamp = Some(stamp);
        cache.token = Some(token.clone());
        match token {
            Ok(hash) => {
                if changed || cache.last_logged.is_some() {
                    tracing::info!(file = %path.display(), "push receiver: token (re)loaded");
                }
                cache.last_logged = None;
                Some(hash)
            }
            Err(why) => {
                cache.log(path, &why);
                None
            }
        }
    }
}

/// The last [`DEDUP_KEYS`] keys, oldest dropped first.
#[derive(Default)]
struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    fn insert(&mut self, key: String) {
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > DEDUP_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

/// Equal in time independent of where the bytes differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether the request carries `Authorization: Bearer <token>` with the token hashed to `want`.
fn authorized(headers: &HeaderMap, want: &[u8; 32]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, rest)) = value.split_at_checked(7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let presented: [u8; 32] = Sha256::digest(rest.trim_ascii()).into();
    constant_time_eq(&presented, want)
}

fn answer(
    metrics: &ReceiverMetrics,
    outcome: &str,
    status: StatusCode,
    message: impl Into<String>,
) -> Response {
    metrics.count(outcome);
    let mut text = message.into();
    text.push('\n');
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response();
    match status {
        StatusCode::UNAUTHORIZED => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        _ => {}
    }
    response
}

enum ReadError {
    TooLarge,
    Broken(String),
}

async fn read_body(body: axum::body::Body, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ReadError::Broken(e.to_string()))?;
        if buf.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn receive(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let metrics = &shared.metrics;
    let Some(token) = shared.token().await else {
        return answer(
            metrics,
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            "the receiver has no usable token",
        );
    };
    if !authorized(request.headers(), &token) {
        return answer(
            metrics,
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "a valid Authorization: Bearer token is required",
        );
    }
    // After the token check: unauthenticated requests cannot crowd out the registry's.
    let Ok(_permit) = shared.in_flight.try_acquire() else {
        return answer(
            metrics,
            "busy",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once",
        );
    };
    let max = shared.options.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return answer(
            metrics,
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        );
    }
    let body = request.into_body();
    let body = match tokio::time::timeout(shared.options.read_timeout, read_body(body, max)).await {
        Ok(Ok(body)) => body,
        Ok(Err(ReadError::TooLarge)) => {
            return answer(
                metrics,
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            );
        }
        Ok(Err(ReadError::Broken(e))) => {
            return answer(
                metrics,
                "bad_request",
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            );
        }
        Err(_) => {
            return answer(
                metrics,
                "bad_request",
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {:?}",
                    shared.options.read_timeout
                ),
            );
        }
    };
    let parsed = match payload::parse(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "push receiver: refused a notification");
            return answer(metrics, "bad_request", StatusCode::BAD_REQUEST, e.0);
        }
    };
    forward(&shared, parsed)
}

/// Sends the new events, remembering each one sent; stops at a full or closed channel.
fn forward(shared: &Shared, parsed: payload::Parsed) -> Response {
    let metrics = &shared.metrics;
    let mut seen = crate::locks::lock(&shared.seen);
    let (mut forwarded, mut repeated) = (0usize, 0usize);
    for notification in parsed.notifications {
        if seen.contains(&notification.key) {
            repeated += 1;
            continue;
        }
        tracing::debug!(event = ?notification.event, "push receiver: event");
        match shared.sink.try_send(notification.event) {
            Ok(()) => {
                seen.insert(notification.key);
                metrics.events.inc();
                forwarded += 1;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                return answer(
                    metrics,
                    "busy",
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("busy: {forwarded} event(s) taken, retry for the rest"),
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return answer(
                    metrics,
                    "unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the controller is not taking events",
                );
            }
        }
    }
    let summary = format!(
        "{forwarded} forwarded, {repeated} already seen, {} ignored",
        parsed.ignored
    );
    if forwarded > 0 {
        answer(metrics, "accepted", StatusCode::ACCEPTED, summary)
    } else {
        answer(metrics, "ignored", StatusCode::OK, summary)
    }
}

/// A TCP listener that serves at most `permits` connections at once, each closed (reads and
/// writes fail) `lifetime` after it was accepted.
struct BoundedListener {
    inner: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Duration,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            // Only a closed semaphore fails, and nothing closes it; were it closed, taking no
            // more connections is the safe answer.
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let stream = BoundedStream {
                        inner: stream,
                        deadline: Box::pin(tokio::time::sleep(self.lifetime)),
                        _permit: permit,
                    };
                    return (stream, addr);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "push receiver: accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

struct BoundedStream {
    inner: tokio::net::TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl BoundedStream {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn expired_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection lifetime exceeded")
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
