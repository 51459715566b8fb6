//! Starts the webhook on this replica: its view of the SociIndexes, its serving certificate
//! (rotated by the operator, or mounted files), and the HTTPS server.

use super::admission::{self, AdmissionMetrics, AdmissionState};
use super::resolve::TagResolver;
use super::{cert_rotator, sync, tls};
use crate::controller::Context;
use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often mounted certificate files are looked at.
const FILES_POLL: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from.
pub enum CertSource {
    /// The operator keeps it (and its CA) in a Secret and the caBundle of a configuration.
    Managed(cert_rotator::RotatorOptions),
    /// `tls.crt` and `tls.key` in a directory (a mounted cert-manager Secret).
    Files(PathBuf),
}

pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub certs: CertSource,
    /// The namespaces the operator watches (empty: all): the SociIndexes the view holds.
    pub namespaces: Vec<String>,
    pub cluster_policy_indexes: bool,
    /// kube-system, the operator's namespace and the admin's.
    pub excluded_namespaces: Vec<String>,
    pub tag_timeout: Duration,
    pub tag_cache: Duration,
}

/// Binds the listener (an error here stops start-up: a flag is wrong) and spawns the rest.
pub async fn start(ctx: Arc<Context>, options: WebhookOptions) -> Result<()> {
    let metrics = AdmissionMetrics::new()?;
    metrics.register(&ctx.metrics.registry)?;
    let resolver = TagResolver::new(ctx.clone(), options.tag_timeout, options.tag_cache);
    let state = Arc::new(AdmissionState::new(
        ctx.clone(),
        resolver,
        options.excluded_namespaces,
        metrics,
    ));
    let cert = Arc::new(tls::ServingCert::new());
    match options.certs {
        CertSource::Managed(rotator) => {
            let secrets = kube::Api::namespaced(ctx.client.clone(), &rotator.namespace);
            tokio::spawn(tls::follow_secret(
                secrets,
                rotator.secret_name.clone(),
                cert.clone(),
            ));
            let client = ctx.client.clone();
            tokio::spawn(async move {
                if let Err(e) = cert_rotator::run(client, rotator).await {
                    tracing::error!(error = %e, "the webhook's certificate rotation stopped");
                }
            });
        }
        CertSource::Files(dir) => {
            tokio::spawn(tls::follow_files(dir, cert.clone(), FILES_POLL));
        }
    }
    tokio::spawn(sync::run(
        state.clone(),
        options.namespaces,
        options.cluster_policy_indexes,
    ));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding the admission webhook to {}", options.listen))?;
    tracing::info!(listen = %options.listen, path = admission::PATH, "admission webhook listening");
    tokio::spawn(async move {
        if let Err(e) = tls::serve_tls(
            listener,
            cert,
            admission::router(state),
            std::future::pending(),
        )
        .await
        {
            tracing::error!(error = %e, "the admission webhook stopped");
        }
    });
    Ok(())
}
