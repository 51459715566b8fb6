//! The registry credentials of one SociIndex: the docker-config Secrets its
//! `spec.credentials.secretRefs` name, in its own namespace, read with `get` only (the
//! controller reads no other Secret). The controller's own look-ups use them, as the worker does.

#[cfg(test)]
use super::plan::FailureClass;
use super::plan::{Failure, reason};
use crate::api::Credentials;
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
                reason::UNAUTHORIZED,
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
                reason::UNAUTHORIZED,
                format!(
                    "{what} has neither .dockerconfigjson nor .dockercfg (type kubernetes.io/dockerconfigjson expected)"
                ),
            ));
        };
        let store = CredentialStore::from_json(&config, what.clone())
            .map_err(|e| Failure::permanent(reason::UNAUTHORIZED, format!("{e:#}")))?;
        merged = Some(match merged {
            Some(m) => m.merge(store),
            None => store,
        });
    }
    Ok(merged.unwrap_or_default())
}

/// The client for a SociIndex: `base` when it names no Secrets, else one with their
/// credentials (cached while the Secrets do not change).
pub async fn registry_for(
    kube: &Client,
    base: &Arc<RegistryClient>,
    cache: &CredentialCache,
    namespace: &str,
    credentials: Option<&Credentials>,
) -> Result<Arc<RegistryClient>, Failure> {
    let refs = credentials.map(|c| c.secret_refs.as_slice()).unwrap_or(&[]);
    if refs.is_empty() {
        return Ok(base.clone());
    }
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let mut secrets = Vec::new();
    let mut key = vec![namespace.to_string()];
    for r in refs {
        let secret = api.get_opt(&r.name).await.map_err(|e| {
            Failure::transient(
                reason::UNAUTHORIZED,
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
    if let Some(client) = cache.0.lock().expect("cache lock").get(&key) {
        return Ok(client.clone());
    }
    let store = store_from_secrets(namespace, &secrets)?;
    let client = Arc::new(base.with_credentials(store).map_err(|e| {
        Failure::permanent(reason::UNAUTHORIZED, format!("registry client: {e:#}"))
    })?);
    let mut cache = cache.0.lock().expect("cache lock");
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, client.clone());
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
    fn a_missing_secret_is_retried_a_wrong_one_stalls() {
        let missing = store_from_secrets("ns", &[("gone".into(), None)]).unwrap_err();
        assert_eq!(missing.class, FailureClass::Transient, "{missing:?}");
        assert!(missing.message.contains("ns/gone"), "{}", missing.message);
        let wrong =
            store_from_secrets("ns", &[("tls".into(), secret("tls.crt", "x"))]).unwrap_err();
        assert_eq!(wrong.class, FailureClass::Permanent);
        assert_eq!(wrong.reason, reason::UNAUTHORIZED);
        let garbage = store_from_secrets("ns", &[("bad".into(), secret(".dockerconfigjson", "{"))])
            .unwrap_err();
        assert_eq!(garbage.class, FailureClass::Permanent);
        assert!(garbage.message.contains("ns/bad"), "{}", garbage.message);
    }
}
