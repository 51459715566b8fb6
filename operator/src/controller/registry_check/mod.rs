//! The controller's registry look-ups: resolving a source image to a digest, and checking that
//! the target tag holds a valid SOCI binding of that digest. [`target_binding`] is the one seam
//! where the stricter `verify` logic (operator/src/verification.rs) will plug in.
//!
//! Here, the look-ups; [`compare`](mod@compare) is the pure comparison of the two inspect
//! reports behind [`target_binding`], [`settled`] the cheap recheck of an image whose binding
//! the previous full check verified (one HEAD per tag).

pub mod compare;
pub mod settled;

pub use compare::compare;
pub use settled::{SettledImage, recheck_settled, settled_image};

use super::naming::target_reference;
use super::plan::{BuildSettings, Failure, Resolved, TargetCheck};
use crate::api::{IndexVersion, TargetSpec};
use crate::image::registry_io::RegistrySource;
use crate::inspect_report::inspect_with;
use crate::reason::{Reason, failure_of};
use crate::registry::{RegistryClient, RegistryRef};
use crate::verification::verify_binding;
use std::sync::Arc;

/// Resolves the spec image to `repo@digest` and computes its target tag reference.
pub async fn resolve(
    client: &RegistryClient,
    image: &str,
    target: Option<&TargetSpec>,
    image_name: &str,
) -> Result<Resolved, Failure> {
    let source = RegistryRef::parse(image)
        .map_err(|e| Failure::permanent(Reason::InvalidReference, format!("spec image: {e:#}")))?;
    let target = target_reference(&source, target, image_name)
        .map_err(|m| Failure::permanent(Reason::InvalidReference, m))?;
    let found = client
        .get_manifest(&source, source.manifest_reference())
        .await
        .map_err(|e| failure_of(&e.into()))?;
    let Some(found) = found else {
        return Err(Failure::permanent(
            Reason::ImageNotFound,
            format!("{source}: no such tag or digest in the registry"),
        ));
    };
    Ok(Resolved {
        source: source.with_reference(&found.digest).to_string(),
        digest: found.digest,
        target: target.to_string(),
    })
}

/// Whether `resolved.target` holds a valid SOCI v2 binding of `resolved.source`: the target
/// has, for every selected platform of the source, an image manifest with the same layers,
/// bound to a readable SOCI index whose zTOCs are all present.
pub async fn target_binding(
    client: &Arc<RegistryClient>,
    resolved: &Resolved,
    settings: &BuildSettings,
) -> Result<TargetCheck, Failure> {
    let target = RegistryRef::parse(&resolved.target)
        .map_err(|e| Failure::permanent(Reason::InvalidReference, format!("{e:#}")))?;
    let Some(found) = client
        .get_manifest(&target, target.manifest_reference())
        .await
        .map_err(|e| failure_of(&e.into()))?
    else {
        return Ok(TargetCheck::Missing);
    };
    // Only its digest is needed from here on; the bytes (up to 4 MiB) go now.
    let found_digest = found.digest;
    let source = RegistryRef::parse(&resolved.source)
        .map_err(|e| Failure::permanent(Reason::InvalidReference, format!("{e:#}")))?;
    let min = settings.min_layer_size;
    // The source's layers are compared, not its bindings; a v2 target needs no v1 look-up.
    let source_report = inspect_with(&RegistrySource::new(client.clone(), source), min, false)
        .await
        .map_err(|e| failure_of(&e))?;
    let pinned_target = target.with_reference(&found_digest);
    let find_v1 = settings.index_version == IndexVersion::V1;
    let target_report = inspect_with(
        &RegistrySource::new(client.clone(), pinned_target),
        min,
        find_v1,
    )
    .await
    .map_err(|e| failure_of(&e))?;
    let binding = match settings.index_version {
        IndexVersion::V2 => "v2",
        IndexVersion::V1 => "v1",
    };
    let check = compare(
        &source_report,
        &target_report,
        &settings.platforms,
        &resolved.digest,
        binding,
    );
    let TargetCheck::Bound { platforms, .. } = &check else {
        return Ok(check);
    };
    // What the snapshotter checks when it loads the index (canonical JSON, zTOCs parseable,
    // span offsets increasing): a bound target failing it is not lazily loadable.
    let report = verify_binding(client.clone(), target.with_reference(&found_digest), false)
        .await
        .map_err(|e| failure_of(&e))?;
    let problems: Vec<String> = report
        .platforms
        .iter()
        .filter(|v| {
            platforms.iter().any(|p| {
                p.platform == v.platform
                    || (p.soci_index_digest.is_some() && p.soci_index_digest == v.soci_index)
            })
        })
        .flat_map(|v| {
            v.problems
                .iter()
                .map(move |problem| format!("platform {}: {problem}", v.platform))
        })
        .collect();
    if problems.is_empty() {
        Ok(check)
    } else {
        Ok(TargetCheck::NotBound {
            message: format!("the target fails verification: {}", problems.join("; ")),
        })
    }
}

#[cfg(test)]
#[path = "settled_registry_tests.rs"]
mod registry_tests;

#[cfg(test)]
#[path = "check_hostile_tests.rs"]
mod hostile_tests;
