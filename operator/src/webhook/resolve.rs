//! Fresh tag resolutions for admission: one HEAD through the SociIndex's own credentials,
//! bounded by a timeout shorter than the webhook's, and remembered for a few seconds so that a
//! Deployment's ten Pods cost one request.

use super::view::IndexedImage;
use crate::controller::Context;
use crate::controller::credentials::registry_for;
use crate::registry::RegistryRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries kept at most; past that the expired go, and if none has, all go.
const CACHE_LIMIT: usize = 4096;

/// `Ok(None)`: no such tag; `Err(())`: no answer in time (the reason is logged).
pub type Resolution = Result<Option<String>, ()>;

pub struct TagResolver {
    ctx: Arc<Context>,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Resolution)>>,
}

impl TagResolver {
    pub fn new(ctx: Arc<Context>, timeout: Duration, ttl: Duration) -> Self {
        Self {
            ctx,
            timeout,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// What `reference` (a tag) points to now, read as `via`'s SociIndex reads it.
    pub async fn resolve(&self, reference: &RegistryRef, via: &IndexedImage) -> Resolution {
        let key = cache_key(reference, via);
        let now = Instant::now();
        if let Some((at, answer)) = crate::locks::lock(&self.cache).get(&key)
            && now.duration_since(*at) < self.ttl
        {
            return answer.clone();
        }
        let answer = match tokio::time::timeout(self.timeout, self.head(reference, via)).await {
            Ok(Ok(digest)) => Ok(digest),
            Ok(Err(why)) => {
                tracing::info!(image = %reference, index = %via.index, error = %why, "admission: resolving a tag failed; the image is kept");
                Err(())
            }
            Err(_) => {
                tracing::info!(image = %reference, index = %via.index, timeout = ?self.timeout, "admission: resolving a tag timed out; the image is kept");
                Err(())
            }
        };
        let mut cache = crate::locks::lock(&self.cache);
        if cache.len() >= CACHE_LIMIT {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| now.duration_since(*at) < ttl);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (now, answer.clone()));
        answer
    }

    async fn head(
        &self,
        reference: &RegistryRef,
        via: &IndexedImage,
    ) -> Result<Option<String>, String> {
        let ctx = &self.ctx;
        let registry = registry_for(
            &ctx.client,
            &ctx.registry,
            &ctx.credentials,
            &via.namespace,
            via.credentials.as_ref(),
            &ctx.worker.tenants.operator_credentials,
        )
        .await
        .map_err(|f| f.message)?;
        registry
            .manifest_digest(reference, reference.manifest_reference())
            .await
            .map_err(|e| e.to_string())
    }
}

/// Answers are per reference and per identity they were read with: another SociIndex's
/// Secrets may see another registry view.
fn cache_key(reference: &RegistryRef, via: &IndexedImage) -> String {
    let secrets: Vec<&str> = via
        .credentials
        .iter()
        .flat_map(|c| c.secret_refs.iter().map(|s| s.name.as_str()))
        .collect();
    format!("{reference} {} {}", via.namespace, secrets.join(","))
}
