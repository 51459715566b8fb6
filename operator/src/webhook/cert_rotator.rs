//! Keeps the webhook's certificate Secret and the `caBundle` of its MutatingWebhookConfiguration
//! current ([`certs::plan`] decides, this module reads and writes).
//!
//! Every replica runs [`run`]; there is no leader election: every write carries the
//! resourceVersion it was planned from, so of two replicas racing one gets 409 Conflict, reads
//! again and finds the other's result (which plans no write). A Secret without the label
//! [`MANAGED_BY_LABEL`]`=`[`MANAGED_BY`] is never rewritten. A pass runs on the plan's recheck
//! time (at most the check interval) and when the Secret or the configuration changes; API
//! errors back off, doubling up to [`MAX_BACKOFF`] (or the check interval if shorter).

use super::certs::{self, CertError, NamesError, ServingNames, Settings, State};
use futures_util::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "soci-operator";
/// The type of the Secret created.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// Conflicts in a row within one pass before it gives up (and backs off).
pub const MAX_CONFLICTS: usize = 3;
/// The longest wait after API errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct RotatorOptions {
    pub namespace: String,
    pub secret_name: String,
    /// The MutatingWebhookConfiguration whose webhooks get the `caBundle`.
    pub webhook_configuration: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum RotatorError {
    #[error(transparent)]
    Names(#[from] NamesError),
    #[error(
        "Secret {namespace}/{name} is not labelled {MANAGED_BY_LABEL}={MANAGED_BY}: not rewriting it"
    )]
    Unmanaged { namespace: String, name: String },
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("{0}: {MAX_CONFLICTS} write conflicts in a row")]
    Conflicts(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretChange {
    Created,
    Updated,
    Unchanged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleChange {
    /// This many webhooks got the new `caBundle`.
    Patched(usize),
    AlreadyCurrent,
    /// The configuration does not exist (yet); the next pass looks again.
    ConfigurationMissing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub secret: SecretChange,
    pub bundle: BundleChange,
    pub recheck_after: Duration,
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> RotatorError {
    let action = action.into();
    move |source| RotatorError::Api { action, source }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

fn managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

/// One pass at `now`: the Secret, then the `caBundle`.
pub async fn reconcile(
    client: &Client,
    options: &RotatorOptions,
    names: &ServingNames,
    now: SystemTime,
) -> Result<Outcome, RotatorError> {
    let (bundle, secret, recheck_after) = reconcile_secret(client, options, names, now).await?;
    let bundle = reconcile_bundle(client, options, bundle).await?;
    Ok(Outcome {
        secret,
        bundle,
        recheck_after,
    })
}

/// The Secret brought up to date: its `ca.crt` afterwards, what was done, when to look again.
async fn reconcile_secret(
    client: &Client,
    options: &RotatorOptions,
    names: &ServingNames,
    now: SystemTime,
) -> Result<(Vec<u8>, SecretChange, Duration), RotatorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let name = &options.secret_name;
    let what = format!("Secret {}/{name}", options.namespace);
    let settings = &options.settings;
    for _ in 0..MAX_CONFLICTS {
        let existing = secrets
            .get_opt(name)
            .await
            .map_err(api_error(format!("reading {what}")))?;
        let state = match &existing {
            Some(secret) if !managed(&secret.metadata) => {
                return Err(RotatorError::Unmanaged {
                    namespace: options.namespace.clone(),
                    name: name.clone(),
                });
            }
            Some(secret) => {
                State::from_secret_data(secret.data.as_ref().unwrap_or(&BTreeMap::new()))
            }
            None => State::empty(),
        };
        let plan = certs::plan(&state, names, now, settings);
        let written = certs::execute(&state, &plan, names, now, settings)?;
        let Some(written) = written else {
            let bundle = existing
                .and_then(|s| s.data)
                .and_then(|mut d| d.remove(certs::CA_CRT))
                .map(|b| b.0)
                .unwrap_or_default();
            return Ok((bundle, SecretChange::Unchanged, plan.recheck_after));
        };
        tracing::info!(secret = %what, plan = ?plan, "webhook certificates: writing");
        let bundle = written.ca_crt.clone().into_bytes();
        let result = match existing {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(options.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.to_string(),
                            MANAGED_BY.to_string(),
                        )])),
                        ..Default::default()
                    },
                    type_: Some(SECRET_TYPE.to_string()),
                    data: Some(written.to_data()),
                    ..Default::default()
                };
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(|_| SecretChange::Created)
            }
            Some(mut secret) => {
                // Other keys stay; the resourceVersion read makes a concurrent write a 409.
                secret
                    .data
                    .get_or_insert_with(BTreeMap::new)
                    .extend(written.to_data());
                secret.metadata.managed_fields = None;
                secrets
                    .replace(name, &PostParams::default(), &secret)
                    .await
                    .map(|_| SecretChange::Updated)
            }
        };
        match result {
            // The next pass confirms the write (and plans none) soon.
            Ok(change) => return Ok((bundle, change, certs::MIN_RECHECK)),
            Err(e) if is_conflict(&e) => {
                tracing::debug!(secret = %what, "webhook certificates: another replica wrote first; reading again");
            }
            Err(e) => return Err(api_error(format!("writing {what}"))(e)),
        }
    }
    Err(RotatorError::Conflicts(what))
}

/// Every webhook of the configuration carries `bundle` as its `caBundle`.
async fn reconcile_bundle(
    client: &Client,
    options: &RotatorOptions,
    bundle: Vec<u8>,
) -> Result<BundleChange, RotatorError> {
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = &options.webhook_configuration;
    let what = format!("MutatingWebhookConfiguration {name}");
    let want = ByteString(bundle);
    for _ in 0..MAX_CONFLICTS {
        let Some(mut configuration) = configurations
            .get_opt(name)
            .await
            .map_err(api_error(format!("reading {what}")))?
        else {
            tracing::warn!(configuration = %name, "webhook certificates: the webhook configuration does not exist; looking again at the next pass");
            return Ok(BundleChange::ConfigurationMissing);
        };
        let mut changed = 0;
        for webhook in configuration.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&want) {
                webhook.client_config.ca_bundle = Some(want.clone());
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(BundleChange::AlreadyCurrent);
        }
        configuration.metadata.managed_fields = None;
        match configurations
            .replace(name, &PostParams::default(), &configuration)
            .await
        {
            Ok(_) => {
                tracing::info!(configuration = %name, webhooks = changed, "webhook certificates: caBundle updated");
                return Ok(BundleChange::Patched(changed));
            }
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(api_error(format!("writing {what}"))(e)),
        }
    }
    Err(RotatorError::Conflicts(what))
}

/// A watch on the one object `name` of `api` (a field selector), with kube's default backoff
/// on errors.
pub fn watch_named<K>(
    api: Api<K>,
    name: &str,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config).default_backoff()
}

/// [`watch_named`] for the certificate Secret.
pub fn watch_secret(
    secrets: Api<Secret>,
    name: &str,
) -> impl Stream<Item = Result<watcher::Event<Secret>, watcher::Error>> + Send + 'static {
    watch_named(secrets, name)
}

/// Waits for the next event of `events` (errors are not changes); never, once it has ended.
async fn next_change<K>(
    events: &mut (impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin),
) {
    loop {
        match events.next().await {
            Some(Ok(_)) => return,
            Some(Err(e)) => tracing::debug!(error = %e, "webhook certificates: watch error"),
            None => std::future::pending::<()>().await,
        }
    }
}

/// Doubling waits from one second up to a cap.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);

    fn new(cap: Duration) -> Self {
        Self {
            next: Self::FIRST,
            cap: cap.max(Self::FIRST),
        }
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.next.min(self.cap);
        self.next = (self.next * 2).min(self.cap);
        wait
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// The loop every replica runs. Returns only when the options are invalid.
pub async fn run(client: Client, options: RotatorOptions) -> Result<(), RotatorError> {
    let names = ServingNames::new(&options.dns_names, &options.ip_addresses)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.namespace);
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut secret_events = std::pin::pin!(watch_secret(secrets, &options.secret_name));
    let mut configuration_events =
        std::pin::pin!(watch_named(configurations, &options.webhook_configuration));
    let mut backoff = Backoff::new(options.settings.check_interval().min(MAX_BACKOFF));
    loop {
        match reconcile(&client, &options, &names, SystemTime::now()).await {
            Ok(outcome) => {
                backoff.reset();
                tracing::debug!(?outcome, "webhook certificates: pass done");
                // At least MIN_RECHECK between passes, however many events arrive.
                tokio::time::sleep(certs::MIN_RECHECK).await;
                let rest = outcome.recheck_after.saturating_sub(certs::MIN_RECHECK);
                tokio::select! {
                    () = tokio::time::sleep(rest) => {}
                    () = next_change(&mut secret_events) => {}
                    () = next_change(&mut configuration_events) => {}
                }
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::error!(error = %e, retry_in = ?wait, "webhook certificates");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "cert_rotator_tests.rs"]
mod tests;
