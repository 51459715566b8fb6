//! [`ConversionPlan::assemble`]: from the zTOC digests and sizes to every new JSON blob (the
//! `{}` config, the SOCI indexes, the annotated image manifests and the new image index).

use super::{ConversionOutput, ConversionPlan, ConvertError, IndexVersion, LayerPlan, ZtocInfo};
use crate::oci::{self, Descriptor, Manifest};
use crate::platform;
use std::collections::{BTreeMap, BTreeSet};

fn push_unique(
    out: &mut Vec<(Descriptor, Vec<u8>)>,
    seen: &mut BTreeSet<String>,
    desc: Descriptor,
    bytes: Vec<u8>,
) {
    if seen.insert(desc.digest.clone()) {
        out.push((desc, bytes));
    }
}

impl ConversionPlan {
    /// Given the zTOC built for each layer (by layer digest), produces every new JSON blob and
    /// the new image index.
    pub fn assemble(
        &self,
        ztocs: &BTreeMap<String, ZtocInfo>,
    ) -> Result<ConversionOutput, ConvertError> {
        let artifact_type = match self.version {
            IndexVersion::V1 => oci::SOCI_INDEX_ARTIFACT_TYPE_V1,
            IndexVersion::V2 => oci::SOCI_INDEX_ARTIFACT_TYPE_V2,
        };
        let mut blobs = Vec::new();
        let mut seen = BTreeSet::new();
        push_unique(
            &mut blobs,
            &mut seen,
            Descriptor::new(
                artifact_type,
                oci::SOCI_EMPTY_CONFIG_DIGEST,
                oci::SOCI_EMPTY_CONFIG_SIZE,
            ),
            oci::SOCI_EMPTY_CONFIG.to_vec(),
        );

        // One SOCI index per platform (soci `build` + `NewIndex` + `MarshalIndex`).
        let mut indexes: Vec<Descriptor> = Vec::new();
        for plan in &self.platforms {
            let mut layers = Vec::new();
            for (layer, decision) in &plan.layers {
                if !matches!(decision, LayerPlan::Index(_)) {
                    continue;
                }
                let ztoc = ztocs
                    .get(&layer.digest)
                    .ok_or_else(|| ConvertError::MissingZtoc(layer.digest.clone()))?;
                let mut d = Descriptor::new(oci::SOCI_ZTOC_MEDIA_TYPE, &ztoc.digest, ztoc.size);
                d.annotations = Some(BTreeMap::from([
                    (
                        oci::ANNOTATION_IMAGE_LAYER_MEDIA_TYPE.to_string(),
                        layer.media_type.clone(),
                    ),
                    (
                        oci::ANNOTATION_IMAGE_LAYER_DIGEST.to_string(),
                        layer.digest.clone(),
                    ),
                    (
                        oci::ANNOTATION_SPAN_SIZE.to_string(),
                        self.span_size.to_string(),
                    ),
                ]));
                if ztoc.disable_xattrs
                    && let Some(a) = d.annotations.as_mut()
                {
                    a.insert(
                        oci::ANNOTATION_DISABLE_XATTRS.to_string(),
                        "true".to_string(),
                    );
                }
                layers.push(d);
            }
            let subject = match self.version {
                IndexVersion::V1 => Some(Descriptor::new(
                    &plan.manifest.media_type,
                    &plan.manifest.digest,
                    plan.manifest.size,
                )),
                IndexVersion::V2 => None,
            };
            let document = Manifest {
                schema_version: 2,
                media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
                artifact_type: String::new(),
                config: Descriptor::new(
                    artifact_type,
                    oci::SOCI_EMPTY_CONFIG_DIGEST,
                    oci::SOCI_EMPTY_CONFIG_SIZE,
                ),
                layers: Some(layers),
                subject,
                annotations: Some(BTreeMap::from([(
                    oci::ANNOTATION_BUILD_TOOL_IDENTIFIER.to_string(),
                    oci::SOCI_BUILD_TOOL_IDENTIFIER.to_string(),
                )])),
            };
            let bytes = document.to_go_json();
            let mut desc = Descriptor::new(
                oci::MEDIA_TYPE_OCI_MANIFEST,
                &oci::sha256_digest(&bytes),
                bytes.len() as i64,
            );
            desc.artifact_type = artifact_type.into();
            push_unique(&mut blobs, &mut seen, desc.clone(), bytes);
            indexes.push(desc);
        }

        if self.version == IndexVersion::V1 {
            return Ok(ConversionOutput {
                blobs,
                image_index: self.target.clone(),
                soci_indexes: self
                    .platforms
                    .iter()
                    .map(|p| p.platform.clone())
                    .zip(indexes)
                    .collect(),
                already_converted: false,
                orphan_blobs: Vec::new(),
            });
        }

        // annotateImages: every entry whose manifest is present is re-serialised as OCI.
        let mut entries = self.index.manifests.clone().unwrap_or_default();
        let mut rewritten: Vec<(Descriptor, Vec<u8>)> = Vec::new();
        for (entry, manifest) in entries.iter_mut().zip(&self.entries) {
            let Some(manifest) = manifest else { continue };
            let idx = self
                .platforms
                .iter()
                .position(|p| p.manifest.digest == entry.digest);
            let mut manifest = manifest.clone();
            manifest.media_type = oci::MEDIA_TYPE_OCI_MANIFEST.into();
            manifest.config.media_type = oci::MEDIA_TYPE_OCI_CONFIG.into();
            if let Some(i) = idx {
                manifest
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        oci::ANNOTATION_SOCI_INDEX_DIGEST.into(),
                        indexes[i].digest.clone(),
                    );
            }
            let bytes = manifest.to_go_json();
            entry.digest = oci::sha256_digest(&bytes);
            entry.size = bytes.len() as i64;
            // Quirk: the entry's annotations are replaced by the manifest's.
            entry.annotations = manifest.annotations.clone();
            entry.media_type = oci::MEDIA_TYPE_OCI_MANIFEST.into();
            if let Some(i) = idx {
                indexes[i]
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        oci::ANNOTATION_IMAGE_MANIFEST_DIGEST.into(),
                        entry.digest.clone(),
                    );
            }
            rewritten.push((
                Descriptor::new(oci::MEDIA_TYPE_OCI_MANIFEST, &entry.digest, entry.size),
                bytes,
            ));
        }

        // addSociIndexes: replace an existing v2 entry of the same platform, else append.
        let mut soci_indexes = Vec::new();
        for (plan, index_desc) in self.platforms.iter().zip(&indexes) {
            let mut desc = index_desc.clone();
            desc.platform = Some(plan.platform.clone());
            let matcher = platform::only_strict(&platform::normalize(&plan.platform));
            let existing = entries.iter().position(|d| {
                d.artifact_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V2
                    && d.platform.as_ref().is_some_and(|p| matcher.matches(p))
            });
            match existing {
                Some(i) => entries[i] = desc.clone(),
                None => entries.push(desc.clone()),
            }
            soci_indexes.push((plan.platform.clone(), desc));
        }

        let referenced: BTreeSet<&str> = entries.iter().map(|d| d.digest.as_str()).collect();
        let mut orphan_blobs = Vec::new();
        let mut orphan_seen = BTreeSet::new();
        for (desc, bytes) in rewritten {
            if referenced.contains(desc.digest.as_str()) {
                push_unique(&mut blobs, &mut seen, desc, bytes);
            } else if !seen.contains(&desc.digest) {
                push_unique(&mut orphan_blobs, &mut orphan_seen, desc, bytes);
            }
        }

        let mut index = self.index.clone();
        index.manifests = Some(entries);
        let bytes = index.to_go_json();
        let image_index = Descriptor::new(
            oci::MEDIA_TYPE_OCI_INDEX,
            &oci::sha256_digest(&bytes),
            bytes.len() as i64,
        );
        let already_converted = image_index.digest == self.target.digest;
        push_unique(&mut blobs, &mut seen, image_index.clone(), bytes);
        Ok(ConversionOutput {
            blobs,
            image_index,
            soci_indexes,
            already_converted,
            orphan_blobs,
        })
    }
}

#[cfg(test)]
#[path = "assemble_tests.rs"]
mod tests;
