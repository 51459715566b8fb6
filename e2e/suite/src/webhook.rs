//! The admission webhook on the proving ground: a MutatingWebhookConfiguration that the API
//! server calls by URL on loopback (the chart's two entries, limited to a test's namespaces),
//! and the flags of an operator that serves it.

use crate::{Ctx, poll};
use anyhow::{Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

pub const LABEL: &str = "soci.dev/lazy-loading";
/// The Secret the operator keeps its webhook certificates in (in its `POD_NAMESPACE`).
pub const CERT_SECRET: &str = "soci-webhook-tls";

/// The test's MutatingWebhookConfiguration (cluster-scoped: deleted when the test ends). Its
/// two entries are the chart's, limited to the test's namespaces.
pub struct WebhookConfig<'a> {
    t: &'a Ctx,
    pub name: String,
}

impl Drop for WebhookConfig<'_> {
    fn drop(&mut self) {
        let _ = self.t.kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

pub async fn install_webhook<'a>(
    t: &'a Ctx,
    port: u16,
    namespaces: &[&str],
) -> Result<WebhookConfig<'a>> {
    let name = t.ns.clone();
    let entry = |which: &str| {
        let (namespace_rule, object_selector) = if which == "namespaces" {
            (
                json!({"key": LABEL, "operator": "In", "values": ["enabled"]}),
                json!({"matchExpressions": [
                    {"key": LABEL, "operator": "NotIn", "values": ["disabled"]},
                    {"key": "soci.dev/owner-uid", "operator": "DoesNotExist"},
                ]}),
            )
        } else {
            (
                json!({"key": LABEL, "operator": "NotIn", "values": ["enabled"]}),
                json!({"matchLabels": {LABEL: "enabled"}, "matchExpressions": [
                    {"key": "soci.dev/owner-uid", "operator": "DoesNotExist"},
                ]}),
            )
        };
        json!({
            "name": format!("{which}.lazy-loading.soci.dev"),
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate-pods")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 2,
            "reinvocationPolicy": "IfNeeded",
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces},
                namespace_rule,
            ]},
            "objectSelector": object_selector,
        })
    };
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [entry("namespaces"), entry("pods")],
    }))?;
    let api: Api<MutatingWebhookConfiguration> = Api::all(t.client.clone());
    api.create(&PostParams::default(), &config).await?;
    Ok(WebhookConfig { t, name })
}

/// The CA bundle of every entry, once the operator has written it into all of them.
pub async fn ca_bundle(t: &Ctx, name: &str, timeout: Duration) -> Result<Vec<u8>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(t.client.clone());
    poll(timeout, Duration::from_millis(500), async || {
        let config = api.get(name).await.ok()?;
        let bundles: Vec<Vec<u8>> = config
            .webhooks?
            .iter()
            .map(|w| {
                w.client_config
                    .ca_bundle
                    .clone()
                    .map(|b| b.0)
                    .unwrap_or_default()
            })
            .collect();
        (bundles.iter().all(|b| !b.is_empty()) && bundles.windows(2).all(|w| w[0] == w[1]))
            .then(|| bundles[0].clone())
    })
    .await
    .with_context(|| format!("no caBundle in {name} after {timeout:?}"))
}

pub async fn label_namespace(t: &Ctx, ns: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(t.client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {LABEL: "enabled"}}})),
    )
    .await?;
    Ok(())
}

/// The webhook's arguments for an operator over `namespaces`, its Secret in the first one.
pub fn webhook_args(port: u16, config: &str, namespaces: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--webhook-listen".into(),
        format!("127.0.0.1:{port}"),
        "--webhook-cert-secret".into(),
        CERT_SECRET.into(),
        "--webhook-configuration".into(),
        config.into(),
        "--webhook-cert-ip".into(),
        "127.0.0.1".into(),
        // A moved tag shows within a second.
        "--webhook-tag-cache".into(),
        "1s".into(),
    ];
    for ns in namespaces {
        args.extend(["--namespace".into(), ns.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}
