//! What the admission webhook answers from: every image a SociIndex made ready to load lazily,
//! keyed by repository, rebuilt from the SociIndex store (no registry or API call per request).

use crate::api::condition::{self, LAZY_LOAD_READY};
use crate::api::{ConditionStatus, Credentials, SociIndex};
use crate::controller::policy::plan::POLICY_KIND_LABEL;
use crate::registry::RegistryRef;
use crate::registry::digest::is_valid_digest;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Arc;

/// One image of one SociIndex whose `LazyLoadReady` is true.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedImage {
    /// `namespace/name` of the SociIndex.
    pub index: String,
    pub namespace: String,
    /// The image as the SociIndex names it, normalised.
    pub source: RegistryRef,
    /// What the source resolved to when the index was built and last checked.
    pub source_digest: String,
    pub target_digest: String,
    /// `target@targetDigest`: what a Pod is moved to.
    pub deploy: String,
    /// The SociIndex's credentials: a fresh tag resolution reads with what the index reads with.
    pub credentials: Option<Credentials>,
}

/// The lookup table: (scope, `registry/repository`) → images, where the scope is the
/// SociIndex's namespace, or empty for the indexes every namespace sees.
#[derive(Debug, Default)]
pub struct IndexView {
    by_repository: HashMap<(String, String), Vec<Arc<IndexedImage>>>,
    images: usize,
}

/// The scope of the indexes every namespace sees (cluster policies' children, when allowed).
const EVERY_NAMESPACE: &str = "";

impl IndexView {
    /// `cluster_policy_indexes`: whether the children of ClusterSociIndexPolicies count for
    /// Pods in every namespace (otherwise, as any SociIndex, only in their own).
    pub fn build<'a>(
        indexes: impl IntoIterator<Item = &'a SociIndex>,
        cluster_policy_indexes: bool,
    ) -> Self {
        let mut view = IndexView::default();
        for index in indexes {
            let namespace = index.namespace().unwrap_or_default();
            let every_namespace = cluster_policy_indexes
                && index.labels().get(POLICY_KIND_LABEL).map(String::as_str)
                    == Some("ClusterSociIndexPolicy");
            let scope = if every_namespace {
                EVERY_NAMESPACE.to_string()
            } else {
                namespace.clone()
            };
            for image in indexed_images(index) {
                let key = (scope.clone(), image.source.repository_display());
                view.by_repository
                    .entry(key)
                    .or_default()
                    .push(Arc::new(image));
                view.images += 1;
            }
        }
        for images in view.by_repository.values_mut() {
            // Deterministic answers whatever order the store lists in.
            images.sort_by(|a, b| a.index.cmp(&b.index));
        }
        view
    }

    /// The indexed images of `reference`'s repository a Pod in `namespace` may be moved to:
    /// its namespace's first, then those every namespace sees.
    pub fn candidates(&self, namespace: &str, reference: &RegistryRef) -> Vec<Arc<IndexedImage>> {
        let repository = reference.repository_display();
        let mut found = Vec::new();
        for scope in [namespace, EVERY_NAMESPACE] {
            if let Some(images) = self
                .by_repository
                .get(&(scope.to_string(), repository.clone()))
            {
                found.extend(images.iter().cloned());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.images
    }

    pub fn is_empty(&self) -> bool {
        self.images == 0
    }
}

/// The images of `index` that are ready: `LazyLoadReady=True` and a status whose digests and
/// deploy reference are well formed (a status is input too).
fn indexed_images(index: &SociIndex) -> Vec<IndexedImage> {
    let Some(status) = &index.status else {
        return Vec::new();
    };
    let namespace = index.namespace().unwrap_or_default();
    let name = format!("{namespace}/{}", index.name_any());
    status
        .images
        .iter()
        .filter_map(|image| {
            let ready = condition::find(&image.conditions, LAZY_LOAD_READY)?;
            if ready.status != ConditionStatus::True {
                return None;
            }
            let source = RegistryRef::parse(&image.image).ok()?;
            let source_digest = image.source_digest.clone().filter(|d| is_valid_digest(d))?;
            let target_digest = image.target_digest.clone().filter(|d| is_valid_digest(d))?;
            let deploy = image.deploy.clone()?;
            let deploy_ref = RegistryRef::parse(&deploy).ok()?;
            if deploy_ref.digest.as_deref() != Some(target_digest.as_str()) {
                return None;
            }
            Some(IndexedImage {
                index: name.clone(),
                namespace: namespace.clone(),
                source,
                source_digest,
                target_digest,
                deploy,
                credentials: index.spec.settings.credentials.clone(),
            })
        })
        .collect()
}
