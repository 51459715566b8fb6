//! The registry credentials of one SociIndex: the docker-config Secrets its
//! `spec.credentials.secretRefs` name, in its own namespace, read with `get` only (the
//! controller reads no other Secret). The controller's own look-ups use them, as the worker does.
//! Without any, a SociIndex is anonymous, except in the namespaces the admin names with
//! `--operator-credentials-namespaces`, where the operator's own `--registry-config` serves.

use super::plan::{Failure, FailureClass};
use super::worker::NamespaceSet;
use crate::api::Credentials;
use crate::reason::Reason;
use crate::registry::RegistryClient;
use crate::registry::auth::CredentialStore;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Clients kept for Secrets seen before (building one loads the TLS roots).
const CACHE_LIMIT: usize = 256;

/// Registry clients by namespace and the Secrets' names and resource versions: a changed
/// Secret has a new version, so it gets a new client.
#[derive(Default)]
pub struct CredentialCache(Mutex<HashMap<Vec<String>, Arc<RegistryClient>>>);

/// The credentials in the Secrets, in spec order (the first naming a registry wins).
/// `secrets[i]` is `None` when the Secret does not exist.
pub fn store_from_secrets(
    namespace: &str,
    secrets: &[(String, Option<Secret>)],
) -> Result<CredentialStore, Failure> {
    let mut merged: Option<CredentialStore> = None;
    for (name, secret) in secrets {
        let what = format!("Secret {namespace}/{name} (spec.credentials.secretRefs)");
        let Some(secret) = secret else {
            // Transient: creating the Secret later is enough, no spec change needed.
            return Err(Failure::transient(
                Reason::Unauthorized,
                format!("{what} not found"),
            ));
        };
        let data = secret.data.clone().unwrap_or_default();
        let config = if let Some(json) = data.get(".dockerconfigjson") {
            json.0.clone()
        } else if let Some(legacy) = data.get(".dockercfg") {
            // The old format is the `auths` map alone.
            let mut wrapped = b"{\"auths\":".to_vec();
            wrapped.extend_from_slice(&legacy.0);
            wrapped.push(b'}');
            wrapped
        } else {
            return Err(Failure::permanent(
                Reason::Unauthorized,
                format!(
                    "{what} has neither .dockerconfigjson nor .dockercfg (type kubernetes.io/dockerconfigjson expected)"
                ),
            ));
        };
        let store = CredentialStore::from_json(&config, what.clone())
            .map_err(|e| Failure::permanent(Reason::Unauthorized, format!("{e:#}")))?;
        if store.has_helpers() {
            // A helper is a program the operator (and the worker) would run under its own
            // identity, a cloud one included: a tenant names credentials, not programs.
            return Err(Failure::permanent(
                Reason::Unauthorized,
                format!(
                    "{what} names credential helpers (credHelpers / credsStore), which a SociIndex's Secret may not: give static auths"
                ),
            ));
        }
        merged = Some(match merged {
            Some(m) => m.merge(store),
            None => store,
        });
    }
    Ok(merged.unwrap_or_default())
}

/// Where the registry credentials of a SociIndex come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Its own `secretRefs`.
    Secrets,
    /// The operator's `--registry-config`: only in the namespaces the admin names
    /// (`--operator-credentials-namespaces`).
    Operator,
    /// None at all.
    Anonymous,
}

/// The controller's checks of a SociIndex use its own Secrets; without any, the operator's
/// credentials only where the admin allows them, else none: naming a private image the
/// operator could read gives a tenant nothing.
pub fn source(
    namespace: &str,
    credentials: Option<&Credentials>,
    operator: &NamespaceSet,
) -> Source {
    let has_secrets = credentials.is_some_and(|c| !c.secret_refs.is_empty());
    if has_secrets {
        Source::Secrets
    } else if operator.contains(namespace) {
        Source::Operator
    } else {
        Source::Anonymous
    }
}

/// The cleanup of a deleted SociIndex: its own Secrets, else anonymous. Never the operator's:
/// deleting on a tenant's behalf must not use more authority than the tenant gave.
pub fn cleanup_source(credentials: Option<&Credentials>) -> Source {
    if credentials.is_some_and(|c| !c.secret_refs.is_empty()) {
        Source::Secrets
    } else {
        Source::Anonymous
    }
}

/// A client like `base` without any credentials (cached: building one loads the TLS roots).
pub fn anonymous(
    base: &Arc<RegistryClient>,
    cache: &CredentialCache,
) -> Result<Arc<RegistryClient>, Failure> {
    // No namespace is empty: the empty key is the anonymous client's.
    let key: Vec<String> = vec![];
    if let Some(client) = crate::locks::lock(&cache.0).get(&key) {
        return Ok(client.clone());
    }
    let client = Arc::new(
        base.with_credentials(CredentialStore::default())
            .map_err(|e| {
                Failure::permanent(Reason::Unauthorized, format!("registry client: {e:#}"))
            })?,
    );
    insert(cache, key, client.clone());
    Ok(client)
}

fn insert(cache: &CredentialCache, key: Vec<String>, client: Arc<RegistryClient>) {
    let mut cache = crate::locks::lock(&cache.0);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, client);
}

/// The Secrets `refs` name (`None`: not found), and their cache key: the namespace and each
/// name with its resource version.
async fn read_secrets(
    kube: &Client,
    namespace: &str,
    refs: &[crate::api::SecretRef],
) -> Result<(Vec<String>, Vec<(String, Option<Secret>)>), Failure> {
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let mut secrets = Vec::new();
    let mut key = vec![namespace.to_string()];
    for r in refs {
        let secret = api.get_opt(&r.name).await.map_err(|e| {
            Failure::transient(
                Reason::Unauthorized,
                format!("reading Secret {namespace}/{}: {e}", r.name),
            )
        })?;
        let version = secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone())
            .unwrap_or_default();
        key.push(format!("{}@{version}", r.name));
        secrets.push((r.name.clone(), secret));
    }
    Ok((key, secrets))
}

/// The client of a deleted SociIndex's cleanup ([`cleanup_source`]). A Secret that is gone is
/// permanent here: it is not coming back for an object being deleted (often it went with the
/// namespace), so the cleanup gives up at once instead of holding the object; reading it
/// failing is transient.
pub async fn cleanup_registry(
    kube: &Client,
    base: &Arc<RegistryClient>,
    cache: &CredentialCache,
    namespace: &str,
    credentials: Option<&Credentials>,
) -> Result<Arc<RegistryClient>, Failure> {
    if cleanup_source(credentials) == Source::Anonymous {
        return anonymous(base, cache);
    }
    let refs = credentials.map(|c| c.secret_refs.as_slice()).unwrap_or(&[]);
    let (_, secrets) = read_secrets(kube, namespace, refs).await?;
    let store = store_from_secrets(namespace, &secrets).map_err(|f| Failure {
        class: FailureClass::Permanent,
        ..f
    })?;
    base.with_credentials(store)
        .map(Arc::new)
        .map_err(|e| Failure::permanent(Reason::Unauthorized, format!("registry client: {e:#}")))
}

/// The client for a SociIndex's checks, by [`source`]: one with its Secrets' credentials
/// (cached while the Secrets do not change), the operator's `base` where `operator` names the
/// namespace, or an anonymous one.
pub async fn registry_for(
    kube: &Client,
    base: &Arc<RegistryClient>,
    cache: &CredentialCache,
    namespace: &str,
    credentials: Option<&Credentials>,
    operator: &NamespaceSet,
) -> Result<Arc<RegistryClient>, Failure> {
    let refs = match source(namespace, credentials, operator) {
        Source::Operator => return Ok(base.clone()),
        Source::Anonymous => return anonymous(base, cache),
        Source::Secrets => credentials.map(|c| c.secret_refs.as_slice()).unwrap_or(&[]),
    };
    let (key, secrets) = read_secrets(kube, namespace, refs).await?;
    if let Some(client) = crate::locks::lock(&cache.0).get(&key) {
        return Ok(client.clone());
    }
    let store = store_from_secrets(namespace, &secrets)?;
    let client = Arc::new(base.with_credentials(store).map_err(|e| {
        Failure::permanent(Reason::Unauthorized, format!("registry client: {e:#}"))
    })?);
    insert(cache, key, client.clone());
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::RegistryAuth;
    use k8s_openapi::ByteString;

    fn secret(key: &str, value: &str) -> Option<Secret> {
        Some(Secret {
            data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        })
    }

    #[test]
    fn secrets_merge_in_spec_order() {
        let store = store_from_secrets(
            "ns",
            &[
                (
                    "a".into(),
                    secret(
                        ".dockerconfigjson",
                        r#"{"auths":{"reg.example":{"username":"a","password":"1"}}}"#,
                    ),
                ),
                (
                    "b".into(),
                    secret(
                        ".dockercfg",
                        r#"{"reg.example":{"username":"b","password":"2"},"other.example":{"username":"b","password":"3"}}"#,
                    ),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            store.lookup("reg.example").unwrap(),
            RegistryAuth::Basic("a".into(), "1".into())
        );
        assert_eq!(
            store.lookup("other.example").unwrap(),
            RegistryAuth::Basic("b".into(), "3".into())
        );
    }

    #[test]
    fn a_secret_naming_credential_helpers_is_refused() {
        for config in [
            r#"{"credsStore":"ecr-login"}"#,
            r#"{"auths":{},"credHelpers":{"123.dkr.ecr.us-east-1.amazonaws.com":"ecr-login"}}"#,
        ] {
            let refused = store_from_secrets(
                "ns",
                &[("helper".into(), secret(".dockerconfigjson", config))],
            )
            .unwrap_err();
            assert_eq!(refused.class, FailureClass::Permanent, "{refused:?}");
            assert_eq!(refused.reason, Reason::Unauthorized);
            assert!(
                refused.message.contains("credential helpers"),
                "{}",
                refused.message
            );
        }
    }

    #[test]
    fn a_missing_secret_is_retried_a_wrong_one_stalls() {
        let missing = store_from_secrets("ns", &[("gone".into(), None)]).unwrap_err();
        assert_eq!(missing.class, FailureClass::Transient, "{missing:?}");
        assert!(missing.message.contains("ns/gone"), "{}", missing.message);
        let wrong =
            store_from_secrets("ns", &[("tls".into(), secret("tls.crt", "x"))]).unwrap_err();
        assert_eq!(wrong.class, FailureClass::Permanent);
        assert_eq!(wrong.reason, Reason::Unauthorized);
        let garbage = store_from_secrets("ns", &[("bad".into(), secret(".dockerconfigjson", "{"))])
            .unwrap_err();
        assert_eq!(garbage.class, FailureClass::Permanent);
        assert!(garbage.message.contains("ns/bad"), "{}", garbage.message);
    }

    #[test]
    fn a_sociindex_without_secrets_uses_the_operators_credentials_only_where_allowed() {
        let refs = crate::api::Credentials {
            secret_refs: vec![crate::api::SecretRef {
                name: "pull".into(),
            }],
            service_account_name: None,
        };
        let none = NamespaceSet::None;
        let team = NamespaceSet::from_values(&["team".into()]);
        assert_eq!(source("team", None, &none), Source::Anonymous);
        assert_eq!(source("team", None, &team), Source::Operator);
        assert_eq!(source("other", None, &team), Source::Anonymous);
        assert_eq!(source("team", None, &NamespaceSet::All), Source::Operator);
        // An empty list is no Secrets at all.
        let empty = crate::api::Credentials::default();
        assert_eq!(source("other", Some(&empty), &team), Source::Anonymous);
        assert_eq!(
            source("team", Some(&refs), &NamespaceSet::All),
            Source::Secrets
        );
        // The cleanup never falls back to the operator's credentials, wherever it is.
        assert_eq!(cleanup_source(None), Source::Anonymous);
        assert_eq!(cleanup_source(Some(&empty)), Source::Anonymous);
        assert_eq!(cleanup_source(Some(&refs)), Source::Secrets);
    }

    #[test]
    fn an_anonymous_tenant_cannot_read_a_private_image_the_operator_could() {
        use crate::controller::cleanup::registry_tests::{no_retry_client, push_case, runtime};
        use crate::controller::registry_check::resolve;
        use soci_testkit::registry::{LocalRegistry, registry_or_skip};
        if registry_or_skip("an_anonymous_tenant_cannot_read_a_private_image_the_operator_could")
            .is_none()
        {
            return;
        }
        let registry =
            LocalRegistry::start_with_basic_auth("operator", "operator-password").unwrap();
        push_case(
            &registry.client(),
            "multiarch-all-platforms",
            "private",
            "v1",
        );
        // The operator's own --registry-config can read it.
        let config = registry.docker_config(None).unwrap();
        let base = no_retry_client(CredentialStore::load(Some(&config)).unwrap());
        let image = format!("{}/private:v1", registry.host());
        let cache = CredentialCache::default();
        let trusted = NamespaceSet::from_values(&["platform".into()]);
        runtime().block_on(async {
            // Never contacted: no SociIndex here names a Secret.
            let kube =
                Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
            let tenant = registry_for(&kube, &base, &cache, "tenant", None, &trusted)
                .await
                .unwrap();
            let refused = resolve(&tenant, &image, None, "web").await.unwrap_err();
            assert_eq!(
                (refused.class, refused.reason),
                (FailureClass::Permanent, Reason::Unauthorized),
                "{}",
                refused.message
            );
            let platform = registry_for(&kube, &base, &cache, "platform", None, &trusted)
                .await
                .unwrap();
            assert!(resolve(&platform, &image, None, "web").await.is_ok());
            // The anonymous client is built once.
            let again = registry_for(&kube, &base, &cache, "tenant-2", None, &trusted)
                .await
                .unwrap();
            assert!(Arc::ptr_eq(&tenant, &again));
        });
    }
}
