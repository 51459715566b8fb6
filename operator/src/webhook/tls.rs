//! The webhook's TLS server and the certificate it serves, swapped at run time without a restart.
//!
//! [`ServingCert`] is the rustls certificate resolver: every new handshake takes the certificate
//! loaded last (connections already open keep theirs; the old CA stays in the bundle until it
//! expires, so they stay valid). Until one is loaded every handshake fails, the process runs on.
//! It is fed either from the operator-managed Secret through a watch ([`follow_secret`], on
//! every replica) or from `tls.crt`/`tls.key` in a directory, a mounted Secret that cert-manager
//! writes ([`follow_files`], polled). A pair that does not parse or whose key is not the
//! certificate's is refused and the current certificate kept.
//!
//! [`serve_tls`] serves an axum [`Router`] over HTTP/1.1 and HTTP/2 (ALPN; the API server
//! speaks HTTP/2 to webhooks) with at most [`MAX_CONNECTIONS`] connections at once (more wait in
//! the listen backlog), [`HANDSHAKE_TIMEOUT`] for the TLS handshake and
//! [`HEADER_READ_TIMEOUT`] for HTTP/1.1 request headers.

use axum::Router;
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// The TLS handshake must finish within this, or the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1 request headers must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may run on after shutdown was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often [`follow_files`] looks at the files by default.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// A certificate or key file larger than this is refused (a certificate chain, not a document).
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the PEM")]
    NoCertificate,
    #[error("the PEM certificate: {0}")]
    CertificatePem(String),
    #[error("no usable private key in the PEM: {0}")]
    KeyPem(String),
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}: larger than {MAX_PEM_BYTES} bytes")]
    TooLarge(PathBuf),
    #[error("the Secret has no {0}")]
    MissingKey(&'static str),
}

/// A certificate chain and key from PEM, the key checked to be the first certificate's.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::KeyPem(e.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)?;
    // `from_der` lets an unknown consistency pass; a served pair must be known to match.
    certified.keys_match()?;
    Ok(certified)
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// sha256 of the PEM texts it came from: the same content is not loaded (nor logged) twice.
    fingerprint: [u8; 32],
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((cert_pem.len() as u64).to_be_bytes());
    hash.update(cert_pem);
    hash.update(key_pem);
    hash.finalize().into()
}

/// The certificate the server presents, replaceable at run time.
#[derive(Default)]
pub struct ServingCert {
    current: RwLock<Option<Loaded>>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl ServingCert {
    /// Nothing loaded: handshakes fail until [`ServingCert::load_pem`] succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_loaded(&self) -> bool {
        crate::locks::read(&self.current).is_some()
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        crate::locks::read(&self.current)
            .as_ref()
            .map(|l| l.key.clone())
    }

    /// Serves this pair from the next handshake on. `Ok(false)`: it is the pair served already.
    /// On an error the current certificate stays.
    pub fn load_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, TlsError> {
        let fingerprint = fingerprint(cert_pem, key_pem);
        if self.serves(&fingerprint) {
            return Ok(false);
        }
        let key = Arc::new(certified_key(cert_pem, key_pem)?);
        *crate::locks::write(&self.current) = Some(Loaded { key, fingerprint });
        Ok(true)
    }

    fn serves(&self, fingerprint: &[u8; 32]) -> bool {
        crate::locks::read(&self.current)
            .as_ref()
            .is_some_and(|l| &l.fingerprint == fingerprint)
    }

    /// Loads `tls.crt` and `tls.key` from a Secret.
    pub fn load_secret(&self, secret: &Secret) -> Result<bool, TlsError> {
        let data = secret.data.as_ref();
        let get = |key: &'static str| {
            data.and_then(|d| d.get(key))
                .map(|v| v.0.as_slice())
                .ok_or(TlsError::MissingKey(key))
        };
        self.load_pem(get(super::certs::TLS_CRT)?, get(super::certs::TLS_KEY)?)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The rustls configuration: aws-lc-rs, TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(cert: Arc<ServingCert>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; then no new connection is
/// taken and open requests get [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    cert: Arc<ServingCert>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_bounded(
        listener,
        cert,
        app,
        shutdown,
        MAX_CONNECTIONS,
        HANDSHAKE_TIMEOUT,
    )
    .await
}

async fn serve_bounded(
    listener: tokio::net::TcpListener,
    cert: Arc<ServingCert>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    max_connections: usize,
    handshake_timeout: Duration,
) -> io::Result<()> {
    let config = server_config(cert).map_err(io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "webhook: accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("webhook: TLS handshake timed out");
                    return;
                }
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder.http2().timer(TokioTimer::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "webhook: connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook: connections still open after the shutdown grace period");
    }
    Ok(())
}

/// Keeps `cert` on the Secret's `tls.crt`/`tls.key` (the operator-managed mode): a watch on
/// that one Secret, with backoff on API errors. A deleted Secret or a broken pair keeps the
/// current certificate. Runs until the task is dropped.
pub async fn follow_secret(secrets: kube::Api<Secret>, name: String, cert: Arc<ServingCert>) {
    use kube::runtime::watcher::Event;
    let mut events = std::pin::pin!(super::cert_rotator::watch_secret(secrets, &name));
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(secret) | Event::InitApply(secret)) => {
                match cert.load_secret(&secret) {
                    Ok(true) => {
                        tracing::info!(secret = %name, "webhook: serving certificate loaded")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        secret = %name, error = %e,
                        "webhook: keeping the current serving certificate"
                    ),
                }
            }
            Ok(Event::Delete(_)) => tracing::warn!(
                secret = %name,
                "webhook: the certificate Secret was deleted; keeping the current certificate"
            ),
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "webhook: watching the certificate Secret")
            }
        }
    }
}

async fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge(path.to_path_buf()));
    }
    Ok(bytes)
}

/// Loads `dir/tls.crt` and `dir/tls.key` once; `Ok(false)` when they are the pair served already.
pub async fn reload_files(dir: &Path, cert: &ServingCert) -> Result<bool, TlsError> {
    let cert_pem = read_bounded(&dir.join(super::certs::TLS_CRT)).await?;
    let key_pem = read_bounded(&dir.join(super::certs::TLS_KEY)).await?;
    cert.load_pem(&cert_pem, &key_pem)
}

/// Keeps `cert` on the files in `dir` (the cert-manager mode), looking every `poll`. The two
/// files of a mounted Secret change together, but a read may straddle the swap: the mismatched
/// pair is refused and the next poll reads the new one. Each distinct problem is logged once.
pub async fn follow_files(dir: PathBuf, cert: Arc<ServingCert>, poll: Duration) {
    let mut last_problem: Option<String> = None;
    loop {
        match reload_files(&dir, &cert).await {
            Ok(loaded) => {
                if loaded {
                    tracing::info!(dir = %dir.display(), "webhook: serving certificate loaded");
                }
                last_problem = None;
            }
            Err(e) => {
                let problem = e.to_string();
                if last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(
                        dir = %dir.display(), error = %problem,
                        "webhook: keeping the current serving certificate"
                    );
                    last_problem = Some(problem);
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
