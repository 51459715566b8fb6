//! The admission decision, pure: which of a Pod's images move to their SOCI-enabled image, and
//! the JSON patch that moves them.
//!
//! The invariant: a rewritten Pod runs exactly the image it would have run without the
//! webhook, or it is left alone. The SOCI-enabled image holds the source's image manifests
//! (config and layers) plus the SOCI annotation, so a move is safe only while the Pod's
//! reference still resolves to the digest the index was built from: a digest reference is a
//! lookup; a tag needs a fresh resolution (the caller's), and any doubt keeps the image.

use super::view::{IndexView, IndexedImage};
use crate::registry::RegistryRef;
use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The namespace label (and Pod label) that opts in (`enabled`) or a Pod out (`disabled`).
/// Pods opt in and out by label rather than annotation: the API server selects objects for a
/// webhook by label only.
pub const LAZY_LOADING_LABEL: &str = "soci.dev/lazy-loading";
/// Where a rewritten Pod records what each container named before: a JSON map from container
/// name (`init:<name>` for init containers) to the original image.
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "soci.dev/original-images";
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why a whole Pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSkip {
    /// kube-system, the operator's own namespace, or another the admin excluded.
    ExcludedNamespace,
    OptedOut,
    /// A static Pod's mirror: the kubelet runs the manifest on disk, not this object.
    MirrorPod,
    /// One of the operator's own worker Pods.
    OperatorPod,
}

/// Which list a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Init,
    App,
}

/// One container's place in the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSlot {
    pub kind: ContainerKind,
    pub position: usize,
    pub name: String,
    pub image: String,
}

impl ContainerSlot {
    /// Its key in [`ORIGINAL_IMAGES_ANNOTATION`].
    pub fn key(&self) -> String {
        match self.kind {
            ContainerKind::Init => format!("init:{}", self.name),
            ContainerKind::App => self.name.clone(),
        }
    }

    fn pointer(&self) -> PointerBuf {
        let list = match self.kind {
            ContainerKind::Init => "initContainers",
            ContainerKind::App => "containers",
        };
        let position = self.position.to_string();
        PointerBuf::from_tokens(["spec", list, position.as_str(), "image"])
    }
}

/// Why one image is kept as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// No ready SociIndex the Pod's namespace sees names it.
    NotIndexed,
    /// Recorded in the annotation already (a reinvocation): moved before, or its original.
    AlreadyRewritten,
    /// `imagePullPolicy: Never`: the node runs what it has; a new reference would not pull.
    PullNever,
    /// The tag resolves now to another digest than the one indexed: moving the Pod would roll
    /// it back to old content.
    StaleTag,
    /// The tag's fresh resolution failed or took too long: no doubt is resolved in favour of a
    /// move.
    ResolutionFailed,
    /// The tag resolves to the SOCI-enabled image already (an index built in place).
    AlreadyEnabled,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::NotIndexed => "NotIndexed",
            Keep::AlreadyRewritten => "AlreadyRewritten",
            Keep::PullNever => "PullNever",
            Keep::StaleTag => "StaleTag",
            Keep::ResolutionFailed => "ResolutionFailed",
            Keep::AlreadyEnabled => "AlreadyEnabled",
        }
    }
}

/// What happens to one image before any registry is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum FirstLook {
    Move(Arc<IndexedImage>),
    /// A tag with indexed candidates: the caller resolves `reference` once (fresh, bounded)
    /// and [`after_resolution`] decides.
    Resolve {
        reference: RegistryRef,
        candidates: Vec<Arc<IndexedImage>>,
    },
    Keep(Keep),
}

/// What happens to one image in the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Move(Arc<IndexedImage>),
    Keep(Keep),
}

/// Whether the Pod is left alone as a whole. `excluded_namespaces` holds kube-system and the
/// operator's namespace at least.
pub fn pod_skip(pod: &Pod, namespace: &str, excluded_namespaces: &[String]) -> Option<PodSkip> {
    if excluded_namespaces.iter().any(|n| n == namespace) {
        return Some(PodSkip::ExcludedNamespace);
    }
    let labels = pod.metadata.labels.as_ref();
    if labels
        .and_then(|l| l.get(LAZY_LOADING_LABEL))
        .map(String::as_str)
        == Some("disabled")
    {
        return Some(PodSkip::OptedOut);
    }
    if labels.is_some_and(|l| l.contains_key(crate::controller::worker::OWNER_UID_LABEL)) {
        return Some(PodSkip::OperatorPod);
    }
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION)) {
        return Some(PodSkip::MirrorPod);
    }
    None
}

/// Every container and init container, in order (ephemeral containers are added through their
/// own subresource, never at creation).
pub fn container_slots(pod: &Pod) -> Vec<(ContainerSlot, Option<String>)> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let slot = |kind, position, c: &Container| {
        (
            ContainerSlot {
                kind,
                position,
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
            },
            c.image_pull_policy.clone(),
        )
    };
    let init = spec.init_containers.iter().flatten().enumerate();
    let app = spec.containers.iter().enumerate();
    init.map(|(i, c)| slot(ContainerKind::Init, i, c))
        .chain(app.map(|(i, c)| slot(ContainerKind::App, i, c)))
        .collect()
}

/// The annotation's map as the Pod carries it (a reinvocation, or a Pod created from a
/// rewritten one); anything unreadable is taken as empty.
pub fn recorded_originals(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_IMAGES_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The decision for one image that needs no registry: digest references are answered here.
pub fn first_look(
    view: &IndexView,
    namespace: &str,
    slot: &ContainerSlot,
    pull_policy: Option<&str>,
    recorded: &BTreeMap<String, String>,
) -> FirstLook {
    if recorded.contains_key(&slot.key()) {
        return FirstLook::Keep(Keep::AlreadyRewritten);
    }
    if pull_policy == Some("Never") {
        return FirstLook::Keep(Keep::PullNever);
    }
    let Ok(reference) = RegistryRef::parse(&slot.image) else {
        return FirstLook::Keep(Keep::NotIndexed);
    };
    let candidates = view.candidates(namespace, &reference);
    if let Some(digest) = &reference.digest {
        // A digest wins over a tag beside it, as for containerd.
        return match candidates.into_iter().find(|c| c.source_digest == *digest) {
            Some(found) => FirstLook::Move(found),
            None => FirstLook::Keep(Keep::NotIndexed),
        };
    }
    let candidates: Vec<_> = candidates
        .into_iter()
        .filter(|c| c.source.tag == reference.tag)
        .collect();
    if candidates.is_empty() {
        return FirstLook::Keep(Keep::NotIndexed);
    }
    FirstLook::Resolve {
        reference,
        candidates,
    }
}

/// The decision for a tag once it has been resolved now: `Ok(None)` is a tag that is gone.
pub fn after_resolution(
    fresh: Result<Option<&str>, ()>,
    candidates: &[Arc<IndexedImage>],
) -> Decision {
    let digest = match fresh {
        Ok(Some(digest)) => digest,
        Ok(None) => return Decision::Keep(Keep::StaleTag),
        Err(()) => return Decision::Keep(Keep::ResolutionFailed),
    };
    if let Some(found) = candidates.iter().find(|c| c.source_digest == digest) {
        return Decision::Move(found.clone());
    }
    if candidates.iter().any(|c| c.target_digest == digest) {
        return Decision::Keep(Keep::AlreadyEnabled);
    }
    Decision::Keep(Keep::StaleTag)
}

/// The JSON patch for the moves (`None` when nothing moves): each image replaced, and the
/// originals added to what the annotation recorded before.
pub fn patch(
    pod: &Pod,
    moves: &[(ContainerSlot, Arc<IndexedImage>)],
    recorded: &BTreeMap<String, String>,
) -> Option<json_patch::Patch> {
    if moves.is_empty() {
        return None;
    }
    let mut ops = Vec::new();
    let mut originals = recorded.clone();
    for (slot, image) in moves {
        ops.push(replace(slot.pointer(), image.deploy.clone().into()));
        originals.insert(slot.key(), slot.image.clone());
    }
    let value = serde_json::to_string(&originals).unwrap_or_default();
    if pod.metadata.annotations.is_none() {
        let map = serde_json::json!({ ORIGINAL_IMAGES_ANNOTATION: value });
        ops.push(add(
            PointerBuf::from_tokens(["metadata", "annotations"]),
            map,
        ));
    } else {
        let path = PointerBuf::from_tokens(["metadata", "annotations", ORIGINAL_IMAGES_ANNOTATION]);
        ops.push(add(path, value.into()));
    }
    Some(json_patch::Patch(ops))
}

fn replace(path: PointerBuf, value: serde_json::Value) -> json_patch::PatchOperation {
    json_patch::PatchOperation::Replace(json_patch::ReplaceOperation { path, value })
}

fn add(path: PointerBuf, value: serde_json::Value) -> json_patch::PatchOperation {
    json_patch::PatchOperation::Add(json_patch::AddOperation { path, value })
}
