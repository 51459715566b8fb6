//! `soci-operator run`: the controller (see `controller/`), with its logging, metrics and
//! health endpoints.

use super::registry_args::RegistryArgs;
use crate::controller::worker::{WorkerOptions, WorkerPodConfig};
use crate::controller::{Context, Metrics};
use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct RunArgs {
    /// The image the worker Jobs run (`soci-operator build`): normally this operator's own.
    #[arg(long, value_name = "IMAGE")]
    worker_image: String,
    /// YAML or JSON added to every worker Pod: hostNetwork, env, tolerations, nodeSelector,
    /// volumes, volumeMounts, labels, annotations, priorityClassName.
    #[arg(long, value_name = "FILE")]
    worker_pod_config: Option<PathBuf>,
    /// Watch only this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve /metrics, /healthz and /readyz here; `off` serves nothing.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    init_logging(args.log_format);
    super::install_crypto_provider();
    let pod = match &args.worker_pod_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_yaml::from_str::<WorkerPodConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => WorkerPodConfig::default(),
    };
    let registry = args.registry.client()?;
    let worker = WorkerOptions {
        image: args.worker_image.clone(),
        pod,
        insecure_registries: args.registry.insecure_registries.clone(),
    };
    super::runtime()?.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
        let ctx = Arc::new(Context {
            client,
            registry,
            worker,
            metrics: Metrics::new()?,
        });
        if args.metrics_addr != "off" {
            let addr: SocketAddr = args
                .metrics_addr
                .parse()
                .with_context(|| format!("--metrics-addr {}", args.metrics_addr))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tokio::spawn(serve_metrics(listener, ctx.clone()));
        }
        tracing::info!(worker_image = %ctx.worker.image, "soci-operator controller starting");
        crate::controller::run(ctx, args.namespace).await
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A minimal HTTP/1.0 endpoint: enough for Prometheus and kubelet probes.
async fn serve_metrics(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => {
                    let families = ctx.metrics.registry.gather();
                    let text = prometheus::TextEncoder::new()
                        .encode_to_string(&families)
                        .unwrap_or_default();
                    ("200 OK", text)
                }
                "/healthz" | "/readyz" => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
