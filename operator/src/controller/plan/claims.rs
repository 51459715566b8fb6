//! Targets across tenants: a target another namespace's SociIndex named first stays that
//! object's (`TargetConflict`), unless both build the same bytes.

use super::facts::{BuildSettings, Failure, ImageObservation};
use crate::api::SociIndex;
use crate::controller::naming::target_reference;
use crate::reason::Reason;
use crate::registry::RegistryRef;
use k8s_openapi::jiff::Timestamp;

/// One image target a SociIndex names: from its spec (the status may be older), with the
/// source digest its status records for that very target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetClaim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub image_name: String,
    /// `registry/repo:tag`, as [`target_reference`] writes it.
    pub target: String,
    /// The spec image, normalised (`registry/repo:tag` or `@digest`).
    pub source: String,
    pub source_digest: Option<String>,
    pub settings: BuildSettings,
}

impl TargetClaim {
    /// Who came first: the older object (then the smaller uid) keeps the target.
    fn precedes(&self, other: &TargetClaim) -> bool {
        let order = |c: &TargetClaim| (c.created.is_none(), c.created, c.uid.clone());
        order(self) < order(other)
    }

    /// Whether both write the same bytes into the target: the same settings, and the same
    /// source (the digest its status records, or the same spec image, which resolves alike).
    fn same_build(&self, other: &TargetClaim) -> bool {
        self.settings == other.settings
            && (self.source == other.source
                || (self.source_digest.is_some() && self.source_digest == other.source_digest))
    }
}

/// The targets `object` names, one per spec image that has a valid one.
pub fn target_claims(object: &SociIndex) -> Vec<TargetClaim> {
    let settings = BuildSettings::from_spec(&object.spec);
    let status = object.status.as_ref();
    object
        .spec
        .images
        .iter()
        .filter_map(|image| {
            let source = RegistryRef::parse(&image.image).ok()?;
            let target = target_reference(&source, object.spec.target.as_ref(), &image.name)
                .ok()?
                .to_string();
            let source_digest = status
                .and_then(|s| s.images.iter().find(|i| i.name == image.name))
                .filter(|i| i.target.as_deref() == Some(target.as_str()))
                .and_then(|i| i.source_digest.clone());
            Some(TargetClaim {
                namespace: object.metadata.namespace.clone().unwrap_or_default(),
                name: object.metadata.name.clone().unwrap_or_default(),
                uid: object.metadata.uid.clone().unwrap_or_default(),
                created: object.metadata.creation_timestamp.as_ref().map(|t| t.0),
                image_name: image.name.clone(),
                target,
                source: source.to_string(),
                source_digest,
                settings: settings.clone(),
            })
        })
        .collect()
}

/// The claims of every object outside `namespace` (a tenant's own objects may share a target
/// among themselves: they build it once, see `builds_elsewhere`).
pub fn claims_outside<'a>(
    objects: impl IntoIterator<Item = &'a SociIndex>,
    namespace: &str,
) -> Vec<TargetClaim> {
    objects
        .into_iter()
        .filter(|o| o.metadata.namespace.as_deref() != Some(namespace))
        .flat_map(target_claims)
        .collect()
}

/// `TargetConflict` for each image of `object` whose resolved target another namespace's
/// SociIndex named first and builds differently: two tenants never overwrite each other's
/// target. The image stalls (no Job, no target check) until the other lets the target go or
/// builds the same thing.
pub fn apply_target_conflicts(
    object: &SociIndex,
    images: &mut [ImageObservation],
    others: &[TargetClaim],
) {
    let mine = target_claims(object);
    for observation in images {
        let Ok(resolved) = &observation.resolved else {
            continue;
        };
        let Some(me) = mine.iter().find(|c| c.image_name == observation.name) else {
            continue;
        };
        let me = TargetClaim {
            target: resolved.target.clone(),
            source_digest: Some(resolved.digest.clone()),
            ..me.clone()
        };
        let first = others.iter().find(|other| {
            other.target == me.target
                && other.namespace != me.namespace
                && other.precedes(&me)
                && !other.same_build(&me)
        });
        if let Some(other) = first {
            let builds = match &other.source_digest {
                Some(d) => format!("{} ({d})", other.source),
                None => other.source.clone(),
            };
            observation.resolved = Err(Failure::permanent(
                Reason::TargetConflict,
                format!(
                    "target {} is already the target of SociIndex {}/{} (image {}), which came first and builds it from {builds}{}; choose another target (target.tagSuffix or target.tagTemplate) or build the same source with the same settings",
                    me.target,
                    other.namespace,
                    other.name,
                    other.image_name,
                    if other.settings == me.settings {
                        ""
                    } else {
                        " with other settings"
                    },
                ),
            ));
            observation.target = None;
        }
    }
}
