//! The admin endpoints of `soci-operator run`, on axum: `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (the watches are synced, or this replica is
//! a standby with nothing to sync).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

/// What the endpoints read: the controller's context, or a stand-in in tests.
pub trait AdminState: Send + Sync + 'static {
    fn is_ready(&self) -> bool;
    /// The metrics in the Prometheus text format, gauges refreshed.
    fn metrics_text(&self) -> String;
}

impl AdminState for crate::controller::Context {
    fn is_ready(&self) -> bool {
        crate::controller::Context::is_ready(self)
    }

    fn metrics_text(&self) -> String {
        self.refresh_gauges();
        prometheus::TextEncoder::new()
            .encode_to_string(&self.metrics.registry.gather())
            .unwrap_or_default()
    }
}

pub fn router(state: Arc<dyn AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the endpoints until the process ends; a failure of the listener is logged.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<dyn AdminState>) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "the admin endpoints stopped");
    }
}

async fn metrics(State(state): State<Arc<dyn AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics_text(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<dyn AdminState>>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Stub(AtomicBool);

    impl AdminState for Stub {
        fn is_ready(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }

        fn metrics_text(&self) -> String {
            "# TYPE up gauge\nup 1\n".into()
        }
    }

    /// One request over a real loopback connection, as Prometheus and the kubelet send it.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn endpoints_answer_probes_and_scrapes() {
        let stub = Arc::new(Stub(AtomicBool::new(false)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, stub.clone()));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, _, body) = get(addr, "/readyz").await;
        assert_eq!((code, body.as_str()), (503, "watches not synced yet\n"));
        stub.0.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, head, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert_eq!(body, "# TYPE up gauge\nup 1\n");
        assert_eq!(get(addr, "/nothing").await.0, 404);
    }
}
