//! `soci-operator run`: the controller (see `controller/`), with its logging, metrics and
//! health endpoints.

use super::registry_args::RegistryArgs;
use crate::controller::runtime::{LeaderOptions, RunOptions, identity};
use crate::controller::worker::{NamespaceSet, TenantPolicy, WorkerOptions, WorkerPodConfig};
use crate::controller::{self, Context, Metrics, plan, slots};
use crate::exit::UsageError;
use crate::webhook::serve::{CertSource, WebhookOptions};
use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// Watch this namespace (repeatable; default: all namespaces).
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// How often a SociIndex without spec.interval is checked again (30s, 5m, 1h30m; 10s to
    /// 720h) [default: 1h].
    #[arg(long, value_name = "DURATION")]
    default_interval: Option<String>,
    /// How often an image that is settled (verified, nothing moved) gets the full check of its
    /// target (manifests, SOCI index, zTOCs) instead of one HEAD per tag (10s to 720h); 0: every
    /// interval.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    full_check_interval: String,
    /// A reconcile still running after this long is abandoned and retried with backoff (10s to
    /// 720h).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    reconcile_timeout: String,
    /// SociIndexes reconciled at once, over every watched namespace.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    max_concurrent_reconciles: u16,
    /// Worker Jobs running at once, over every watched namespace (0: no cap).
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_concurrent_jobs: usize,
    /// Worker Jobs running at once per source registry host (0: no cap).
    #[arg(long, default_value_t = 2, value_name = "N")]
    max_jobs_per_registry: usize,
    /// Worker Jobs running at once per namespace, so that one namespace cannot hold every
    /// slot (0: no cap).
    #[arg(long, default_value_t = 2, value_name = "N")]
    max_jobs_per_namespace: usize,
    /// Namespaces whose SociIndexes may name spec.credentials.serviceAccountName (the worker
    /// runs as it, with its token); repeatable or comma-separated, `*` for all. Default: none
    /// (such a SociIndex stalls with SpecNotAllowed).
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    allow_spec_service_account: Vec<String>,
    /// Namespaces whose SociIndexes may set spec.job.nodeSelector and spec.job.tolerations;
    /// repeatable or comma-separated, `*` for all. Default: none (SpecNotAllowed).
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    allow_spec_scheduling: Vec<String>,
    /// Namespaces where a SociIndex without spec.credentials.secretRefs uses the operator's own
    /// registry credentials (--registry-config, else the docker defaults); repeatable or
    /// comma-separated, `*` for all. Default: none (such SociIndexes are anonymous). Cleanup
    /// never uses them.
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    operator_credentials_namespaces: Vec<String>,
    /// How long after a SociIndex's deletion its cleanup (deletionPolicy Delete) may keep
    /// failing before the finalizer is released anyway, with a Warning Event listing what was
    /// left in the registry.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    cleanup_timeout: String,
    /// Run the controllers only while holding a coordination.k8s.io Lease (for replicas > 1).
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the service account's namespace).
    #[arg(long, value_name = "NS")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "soci-operator-leader", value_name = "NAME")]
    leader_election_id: String,
    /// Run the SociIndexPolicy and ClusterSociIndexPolicy controllers (`false` for an install
    /// without their CRDs). They watch every namespace's Pods, so they are off when
    /// `--namespace` scopes the operator.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    policies: bool,
    /// Serve the registry push-event receiver here (`0.0.0.0:8090`); default: off.
    #[arg(long, value_name = "ADDR")]
    push_receiver_listen: Option<SocketAddr>,
    /// The only path the receiver answers.
    #[arg(long, default_value = "/hook/registry", value_name = "PATH")]
    push_receiver_path: String,
    /// The receiver's bearer token: a file (a mounted Secret), re-read when it changes.
    #[arg(long, value_name = "FILE")]
    push_receiver_token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve /metrics, /healthz and /readyz here; `off` serves nothing.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The Pod admission webhook (docs/admission.md).
#[derive(Args)]
struct WebhookArgs {
    /// Serve the Pod admission webhook (HTTPS, `/mutate-pods`) here (`0.0.0.0:9443`); default:
    /// off. Every replica serves it.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<SocketAddr>,
    /// The Secret (in $POD_NAMESPACE) where the operator keeps the webhook's CA and serving
    /// certificate, created and rotated by the operator.
    #[arg(long, value_name = "NAME", conflicts_with = "webhook_cert_dir")]
    webhook_cert_secret: Option<String>,
    /// Instead: read the serving certificate from DIR/tls.crt and DIR/tls.key (a mounted
    /// cert-manager Secret), again whenever they change.
    #[arg(long, value_name = "DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// The MutatingWebhookConfiguration whose caBundle the operator keeps (with
    /// --webhook-cert-secret).
    #[arg(long, value_name = "NAME")]
    webhook_configuration: Option<String>,
    /// A DNS name of the serving certificate (repeatable).
    #[arg(long = "webhook-cert-dns-name", value_name = "NAME")]
    webhook_cert_dns_names: Vec<String>,
    /// An IP address of the serving certificate (repeatable).
    #[arg(long = "webhook-cert-ip", value_name = "IP")]
    webhook_cert_ips: Vec<std::net::IpAddr>,
    /// How long the operator's webhook CA is valid.
    #[arg(long, default_value = "87600h", value_name = "DURATION")]
    webhook_ca_validity: String,
    /// How long a serving certificate is valid.
    #[arg(long, default_value = "8760h", value_name = "DURATION")]
    webhook_cert_validity: String,
    /// Renew a CA or serving certificate this long before it expires.
    #[arg(long, default_value = "2160h", value_name = "DURATION")]
    webhook_cert_renew_before: String,
    /// How often the certificates are checked (and whenever their Secret changes).
    #[arg(long, default_value = "12h", value_name = "DURATION")]
    webhook_cert_check_interval: String,
    /// How long a new CA is in the caBundle before serving certificates it signed are used.
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    webhook_ca_publish_delay: String,
    /// Whether the indexes of ClusterSociIndexPolicies serve Pods in every namespace (by
    /// default they count only in their own, as any SociIndex).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    webhook_cluster_policy_indexes: bool,
    /// A namespace whose Pods are never rewritten (repeatable); kube-system and the
    /// operator's own are always excluded.
    #[arg(long = "webhook-exclude-namespace", value_name = "NS")]
    webhook_exclude_namespaces: Vec<String>,
    /// The longest a fresh tag resolution may take; past it the image is left as written.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    webhook_tag_timeout: String,
    /// How long a tag resolution is reused.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    webhook_tag_cache: String,
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
    let full_check_interval =
        duration_flag("--full-check-interval", &args.full_check_interval, true)?;
    let default_interval = match &args.default_interval {
        None => plan::DEFAULT_INTERVAL,
        Some(text) => duration_flag("--default-interval", text, false)?,
    };
    let reconcile_timeout = duration_flag("--reconcile-timeout", &args.reconcile_timeout, false)?;
    let cleanup_timeout = duration_flag("--cleanup-timeout", &args.cleanup_timeout, true)?;
    let tenants = TenantPolicy {
        service_account: NamespaceSet::from_values(&args.allow_spec_service_account),
        scheduling: NamespaceSet::from_values(&args.allow_spec_scheduling),
        operator_credentials: NamespaceSet::from_values(&args.operator_credentials_namespaces),
    };
    let leader = if args.leader_elect {
        let namespace = match &args.leader_election_namespace {
            Some(ns) => ns.clone(),
            None => lease_namespace().ok_or_else(|| {
                UsageError(
                    "--leader-elect needs --leader-election-namespace (or POD_NAMESPACE)".into(),
                )
            })?,
        };
        Some(LeaderOptions {
            namespace,
            name: args.leader_election_id.clone(),
            identity: identity(),
        })
    } else {
        None
    };
    let push_receiver = match (args.push_receiver_listen, &args.push_receiver_token_file) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(UsageError(
                "--push-receiver-listen needs --push-receiver-token-file (the bearer token)".into(),
            )
            .into());
        }
        (Some(listen), Some(token_file)) => Some(crate::receiver::ReceiverOptions::new(
            listen,
            args.push_receiver_path.clone(),
            token_file.clone(),
        )),
    };
    let webhook = webhook_options(&args.webhook, &args.namespaces)?;
    let registry = args.registry.client()?;
    let worker = WorkerOptions {
        image: args.worker_image.clone(),
        pod,
        insecure_registries: args.registry.insecure_registries.clone(),
        allowed_registries: args.registry.allowed_registries.clone(),
        denied_registries: args.registry.denied_registries.clone(),
        tenants,
    };
    super::runtime()?.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "soci-operator".into(),
                instance: Some(identity()),
            },
        );
        let ctx = Arc::new(Context {
            client,
            registry,
            worker,
            metrics: Metrics::new()?,
            default_interval,
            full_checks: controller::FullChecks::new(full_check_interval),
            jobs: slots::JobTracker::new(slots::Caps::new(
                args.max_concurrent_jobs,
                args.max_jobs_per_registry,
                args.max_jobs_per_namespace,
            )),
            stats: Default::default(),
            recorder,
            synced: Default::default(),
            standby: Default::default(),
            credentials: Default::default(),
            reconcile_timeout,
            retries: Default::default(),
            cleanup_timeout,
        });
        if args.metrics_addr != "off" {
            let addr: SocketAddr = args
                .metrics_addr
                .parse()
                .with_context(|| format!("--metrics-addr {}", args.metrics_addr))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tokio::spawn(crate::admin::serve(listener, ctx.clone()));
        }
        if let Some(options) = push_receiver {
            start_push_receiver(ctx.clone(), options).await?;
        }
        if let Some(options) = webhook {
            crate::webhook::serve::start(ctx.clone(), options).await?;
        }
        tracing::info!(worker_image = %ctx.worker.image, "soci-operator controller starting");
        let options = RunOptions {
            policies: args.policies && args.namespaces.is_empty(),
            namespaces: args.namespaces,
            leader,
            max_concurrent_reconciles: args.max_concurrent_reconciles,
        };
        crate::controller::runtime::run(ctx, options).await
    })
}

/// The push-event receiver (on every replica: a standby lists instead of reading the stores)
/// and the task that turns its events into reconcile requests. The channel between them is
/// bounded: when it is full the receiver answers 503 and the registry retries.
async fn start_push_receiver(
    ctx: Arc<Context>,
    options: crate::receiver::ReceiverOptions,
) -> Result<()> {
    let metrics = crate::receiver::ReceiverMetrics::new()?;
    metrics.register(&ctx.metrics.registry)?;
    let triggers = crate::controller::push::trigger_counter(&ctx.metrics.registry)?;
    let (sink, events) = tokio::sync::mpsc::channel(256);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding the push receiver to {}", options.listen))?;
    tracing::info!(listen = %options.listen, path = %options.path, "push receiver listening");
    tokio::spawn(async move {
        if let Err(e) =
            crate::receiver::serve(listener, options, sink, metrics, std::future::pending()).await
        {
            tracing::error!(error = %e, "the push receiver stopped");
        }
    });
    tokio::spawn(crate::controller::push::dispatch(ctx, triggers, events));
    Ok(())
}

/// The webhook's flags, checked: `None` when it is off.
fn webhook_options(
    args: &WebhookArgs,
    namespaces: &[String],
) -> Result<Option<WebhookOptions>, UsageError> {
    use crate::webhook::certs::{ServingNames, Settings};
    let Some(listen) = args.webhook_listen else {
        return Ok(None);
    };
    let duration = |flag: &str, text: &str| {
        crate::controller::durations::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| UsageError(format!("{flag} {text:?}: not a duration (500ms, 10s, 1h)")))
    };
    let own_namespace = lease_namespace();
    let certs = match (&args.webhook_cert_secret, &args.webhook_cert_dir) {
        (Some(secret), _) => {
            let namespace = own_namespace.clone().ok_or_else(|| {
                UsageError(
                    "--webhook-cert-secret needs $POD_NAMESPACE (the Secret's namespace)".into(),
                )
            })?;
            let configuration = args.webhook_configuration.clone().ok_or_else(|| {
                UsageError(
                    "--webhook-cert-secret needs --webhook-configuration (where the CA bundle goes)"
                        .into(),
                )
            })?;
            ServingNames::new(&args.webhook_cert_dns_names, &args.webhook_cert_ips)
                .map_err(|e| UsageError(format!("the webhook's certificate names: {e}")))?;
            let settings = Settings::new(
                duration("--webhook-ca-validity", &args.webhook_ca_validity)?,
                duration("--webhook-cert-validity", &args.webhook_cert_validity)?,
                duration(
                    "--webhook-cert-renew-before",
                    &args.webhook_cert_renew_before,
                )?,
                duration(
                    "--webhook-cert-check-interval",
                    &args.webhook_cert_check_interval,
                )?,
                duration("--webhook-ca-publish-delay", &args.webhook_ca_publish_delay)?,
            )
            .map_err(|e| UsageError(format!("the webhook's certificate lifetimes: {e}")))?;
            CertSource::Managed(crate::webhook::cert_rotator::RotatorOptions {
                namespace,
                secret_name: secret.clone(),
                webhook_configuration: configuration,
                dns_names: args.webhook_cert_dns_names.clone(),
                ip_addresses: args.webhook_cert_ips.clone(),
                settings,
            })
        }
        (None, Some(dir)) => CertSource::Files(dir.clone()),
        (None, None) => {
            return Err(UsageError(
                "--webhook-listen needs --webhook-cert-secret (operator-managed) or --webhook-cert-dir (cert-manager)".into(),
            ));
        }
    };
    let tag_timeout = duration("--webhook-tag-timeout", &args.webhook_tag_timeout)?;
    if tag_timeout > Duration::from_secs(10) {
        return Err(UsageError(
            "--webhook-tag-timeout: at most 10s (the API server waits 30 s at most)".into(),
        ));
    }
    let tag_cache = duration("--webhook-tag-cache", &args.webhook_tag_cache)?;
    if tag_cache > Duration::from_secs(600) {
        return Err(UsageError(
            "--webhook-tag-cache: at most 10m (a tag's answer must stay fresh)".into(),
        ));
    }
    let mut excluded_namespaces = vec!["kube-system".to_string()];
    excluded_namespaces.extend(own_namespace);
    excluded_namespaces.extend(args.webhook_exclude_namespaces.iter().cloned());
    Ok(Some(WebhookOptions {
        listen,
        certs,
        namespaces: namespaces.to_vec(),
        cluster_policy_indexes: args.webhook_cluster_policy_indexes,
        excluded_namespaces,
        tag_timeout,
        tag_cache,
    }))
}

/// A duration flag within the bounds of `spec.interval` (10s to 720h), or `0` where
/// `zero_allowed`: a clean usage error at start-up for anything else.
fn duration_flag(flag: &str, text: &str, zero_allowed: bool) -> Result<Duration, UsageError> {
    if zero_allowed && text == "0" {
        return Ok(Duration::ZERO);
    }
    crate::controller::durations::bounded_interval(text)
        .map_err(|why| UsageError(format!("{flag} {why}")))
}

/// `$POD_NAMESPACE`, else the in-cluster service account's namespace.
fn lease_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_out_of_bounds_are_usage_errors() {
        assert_eq!(
            duration_flag("--default-interval", "90m", false).unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            duration_flag("--full-check-interval", "0", true).unwrap(),
            Duration::ZERO
        );
        for (flag, text, zero) in [
            // Used to panic in Duration::from_secs_f64 at start-up.
            ("--default-interval", "99999999999999999999h", false),
            ("--full-check-interval", "5000000000000000h", true),
            ("--default-interval", "0", false),
            ("--default-interval", "1s", false),
            ("--full-check-interval", "721h", true),
            ("--reconcile-timeout", "5 minutes", false),
            ("--reconcile-timeout", "", false),
        ] {
            let error = duration_flag(flag, text, zero).unwrap_err();
            assert!(error.0.starts_with(flag), "{}", error.0);
        }
    }

    fn webhook_args(args: &[&str]) -> WebhookArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            webhook: WebhookArgs,
        }
        use clap::Parser;
        Wrapper::parse_from(std::iter::once("run").chain(args.iter().copied())).webhook
    }

    #[test]
    fn webhook_flags_are_checked_at_start_up() {
        assert!(webhook_options(&webhook_args(&[]), &[]).unwrap().is_none());
        let files = webhook_options(
            &webhook_args(&[
                "--webhook-listen",
                "127.0.0.1:9443",
                "--webhook-cert-dir",
                "/tls",
            ]),
            &[],
        )
        .unwrap()
        .unwrap();
        assert!(matches!(files.certs, CertSource::Files(_)));
        assert!(
            files
                .excluded_namespaces
                .contains(&"kube-system".to_string())
        );
        assert_eq!(files.tag_timeout, Duration::from_secs(1));
        for (args, says) in [
            (
                &["--webhook-listen", "127.0.0.1:9443"][..],
                "needs --webhook-cert-secret",
            ),
            (
                &[
                    "--webhook-listen",
                    "127.0.0.1:9443",
                    "--webhook-cert-dir",
                    "/tls",
                    "--webhook-tag-timeout",
                    "30s",
                ],
                "at most 10s",
            ),
            (
                &[
                    "--webhook-listen",
                    "127.0.0.1:9443",
                    "--webhook-cert-dir",
                    "/tls",
                    "--webhook-tag-cache",
                    "soon",
                ],
                "not a duration",
            ),
        ] {
            let error = webhook_options(&webhook_args(args), &[])
                .err()
                .expect("refused");
            assert!(error.0.contains(says), "{args:?}: {}", error.0);
        }
        // Operator-managed: bad lifetimes and no names are refused (POD_NAMESPACE may be unset
        // here, which is refused too; each case checks its own words).
        let managed = |extra: &[&str]| {
            let mut args = vec![
                "--webhook-listen",
                "127.0.0.1:9443",
                "--webhook-cert-secret",
                "tls",
                "--webhook-configuration",
                "soci",
            ];
            args.extend_from_slice(extra);
            webhook_options(&webhook_args(&args), &[])
                .err()
                .map(|e| e.0)
        };
        if lease_namespace().is_some() {
            assert!(managed(&["--webhook-cert-ip", "127.0.0.1"]).is_none());
            let no_names = managed(&[]).unwrap();
            assert!(no_names.contains("names"), "{no_names}");
            let short = managed(&[
                "--webhook-cert-ip",
                "127.0.0.1",
                "--webhook-cert-validity",
                "1h",
            ])
            .unwrap();
            assert!(short.contains("lifetimes"), "{short}");
        } else {
            let unset = managed(&["--webhook-cert-ip", "127.0.0.1"]).unwrap();
            assert!(unset.contains("POD_NAMESPACE"), "{unset}");
        }
    }
}
