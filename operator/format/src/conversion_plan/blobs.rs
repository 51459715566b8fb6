//! The source's blobs, each read once, and containerd's walks over them (children, platforms,
//! the manifest of a platform), bounded in references and nesting.

use super::{BlobSource, ConvertError};
use crate::oci::{self, Descriptor, Index, Manifest, Platform};
use crate::platform::{self, StrictMatcher};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const MAX_REFERENCES: usize = 10_000;
const MAX_NESTED_INDEXES: usize = 256;

/// The source with each blob read once.
pub(super) struct Blobs<'a> {
    pub(super) source: &'a dyn BlobSource,
    pub(super) cache: RefCell<HashMap<String, Option<Rc<[u8]>>>>,
}

impl Blobs<'_> {
    /// containerd `content.ReadBlob`.
    pub(super) fn read(&self, desc: &Descriptor) -> Result<Rc<[u8]>, ConvertError> {
        let cached = self.cache.borrow().get(&desc.digest).cloned();
        let blob = match cached {
            Some(b) => b,
            None => {
                let b = self
                    .source
                    .get(&desc.digest)
                    .map_err(|message| ConvertError::Source {
                        digest: desc.digest.clone(),
                        message,
                    })?
                    .map(Rc::from);
                self.cache
                    .borrow_mut()
                    .insert(desc.digest.clone(), b.clone());
                b
            }
        };
        blob.ok_or_else(|| ConvertError::NotFound(format!("content digest {}", desc.digest)))
    }

    fn read_manifest(&self, desc: &Descriptor, context: &str) -> Result<Manifest, ConvertError> {
        let bytes = self.read(desc)?;
        oci::validate_media_type(&bytes, &desc.media_type).map_err(|e| {
            ConvertError::InvalidContent(format!("{context}: invalid desc {}: {e}", desc.digest))
        })?;
        Manifest::from_json(&bytes).map_err(|e| json_error(desc, e))
    }

    fn read_index(&self, desc: &Descriptor, context: &str) -> Result<Index, ConvertError> {
        let bytes = self.read(desc)?;
        oci::validate_media_type(&bytes, &desc.media_type).map_err(|e| {
            ConvertError::InvalidContent(format!("{context}: invalid desc {}: {e}", desc.digest))
        })?;
        Index::from_json(&bytes).map_err(|e| json_error(desc, e))
    }

    /// containerd `images.ConfigPlatform`: the config's platform fields, normalised.
    fn config_platform(&self, config: &Descriptor) -> Result<Platform, ConvertError> {
        let bytes = self.read(config)?;
        let p = Platform::from_json(&bytes).map_err(|e| json_error(config, e))?;
        Ok(platform::normalize(&p))
    }

    /// containerd `images.Children`.
    fn children(&self, desc: &Descriptor) -> Result<Vec<Descriptor>, ConvertError> {
        if oci::is_manifest_type(&desc.media_type) {
            let m = self.read_manifest(desc, "children")?;
            let mut out = vec![m.config];
            out.extend(m.layers.unwrap_or_default());
            Ok(out)
        } else if oci::is_index_type(&desc.media_type) {
            Ok(self
                .read_index(desc, "children")?
                .manifests
                .unwrap_or_default())
        } else {
            Ok(Vec::new())
        }
    }

    /// containerd `images.Platforms`: walks the image; a descriptor carrying a platform
    /// contributes it as written (and is not descended into) unless its OS or architecture is
    /// `unknown`; an image config contributes its normalised platform.
    pub(super) fn platforms(&self, target: &Descriptor) -> Result<Vec<Platform>, ConvertError> {
        let mut out = Vec::new();
        let mut refs = 0;
        self.walk_platforms(std::slice::from_ref(target), &mut out, &mut refs, 0)?;
        Ok(out)
    }

    fn walk_platforms(
        &self,
        descs: &[Descriptor],
        out: &mut Vec<Platform>,
        refs: &mut usize,
        depth: usize,
    ) -> Result<(), ConvertError> {
        count_references(refs, descs.len(), depth)?;
        for desc in descs {
            if let Some(p) = &desc.platform {
                if p.os != "unknown" && p.architecture != "unknown" {
                    out.push(p.clone());
                }
                continue;
            }
            if oci::is_config_type(&desc.media_type) {
                out.push(self.config_platform(desc)?);
            }
            let children = self.children(desc)?;
            if !children.is_empty() {
                self.walk_platforms(&children, out, refs, depth + 1)?;
            }
        }
        Ok(())
    }

    /// containerd `images.Manifest(image, platform)`: the first manifest of a walk that, below
    /// an index, keeps only children with a matching (or no) platform, ordered by the matcher,
    /// and follows only the first; without a platform every child is followed. The whole walk
    /// runs (a later error still fails it).
    pub(super) fn manifest(
        &self,
        image: &Descriptor,
        matcher: Option<&StrictMatcher>,
    ) -> Result<Manifest, ConvertError> {
        let mut found = Vec::new();
        let mut was_index = false;
        let mut refs = 0;
        self.walk_manifest(
            &image.digest,
            vec![image.clone()],
            matcher,
            &mut found,
            &mut was_index,
            &mut refs,
            0,
        )?;
        found.into_iter().next().ok_or_else(|| {
            ConvertError::NotFound(if was_index {
                format!("no match for platform in manifest {}", image.digest)
            } else {
                format!("manifest {}", image.digest)
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_manifest(
        &self,
        image_digest: &str,
        descs: Vec<Descriptor>,
        matcher: Option<&StrictMatcher>,
        found: &mut Vec<Manifest>,
        was_index: &mut bool,
        refs: &mut usize,
        depth: usize,
    ) -> Result<(), ConvertError> {
        count_references(refs, descs.len(), depth)?;
        for desc in descs {
            if oci::is_manifest_type(&desc.media_type) {
                let manifest = self.read_manifest(&desc, "manifest")?;
                if let (true, Some(matcher)) = (desc.digest != image_digest, matcher) {
                    let platform = match &desc.platform {
                        Some(p) => p.clone(),
                        None => self.config_platform(&manifest.config)?,
                    };
                    if !matcher.matches(&platform) {
                        continue;
                    }
                }
                found.push(manifest);
            } else if oci::is_index_type(&desc.media_type) {
                let index = self.read_index(&desc, "manifest")?;
                let mut children = index.manifests.unwrap_or_default();
                if let Some(matcher) = matcher {
                    children.retain(|d| d.platform.as_ref().is_none_or(|p| matcher.matches(p)));
                    // sort.SliceStable: platform-less children last, the rest by the matcher.
                    children.sort_by(|a, b| match (&a.platform, &b.platform) {
                        (None, None) => std::cmp::Ordering::Equal,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (Some(pa), Some(pb)) => {
                            if matcher.less(pa, pb) {
                                std::cmp::Ordering::Less
                            } else if matcher.less(pb, pa) {
                                std::cmp::Ordering::Greater
                            } else {
                                std::cmp::Ordering::Equal
                            }
                        }
                    });
                    *was_index = true;
                    children.truncate(1);
                }
                if !children.is_empty() {
                    self.walk_manifest(
                        image_digest,
                        children,
                        matcher,
                        found,
                        was_index,
                        refs,
                        depth + 1,
                    )?;
                }
            } else {
                return Err(ConvertError::UnexpectedMediaType {
                    media_type: desc.media_type.clone(),
                    digest: desc.digest.clone(),
                });
            }
        }
        Ok(())
    }

    /// soci `GetImageManifestDescriptor`: for an index, the first child that matches — failing
    /// on a platform-less child met before it (quirk "manifest should have proper platform");
    /// for a manifest, the target itself unless it carries a platform that does not match.
    /// `Ok(None)` for other media types (upstream then fails in `images.Manifest`).
    pub(super) fn image_manifest_descriptor(
        &self,
        target: &Descriptor,
        matcher: &StrictMatcher,
    ) -> Result<Option<Descriptor>, ConvertError> {
        if oci::is_index_type(&target.media_type) {
            for child in self.children(target)? {
                let Some(p) = &child.platform else {
                    return Err(ConvertError::ManifestWithoutPlatform);
                };
                if matcher.matches(p) {
                    return Ok(Some(child));
                }
            }
            Err(ConvertError::NotFound("image manifest".into()))
        } else if oci::is_manifest_type(&target.media_type) {
            if target
                .platform
                .as_ref()
                .is_some_and(|p| !matcher.matches(p))
            {
                return Err(ConvertError::NotFound("image manifest".into()));
            }
            Ok(Some(target.clone()))
        } else {
            Ok(None)
        }
    }
}

fn count_references(refs: &mut usize, n: usize, depth: usize) -> Result<(), ConvertError> {
    if *refs + n > MAX_REFERENCES {
        return Err(ConvertError::TooManyDescriptors);
    }
    if depth > MAX_NESTED_INDEXES {
        return Err(ConvertError::NestingTooDeep);
    }
    *refs += n;
    Ok(())
}

pub(super) fn json_error(desc: &Descriptor, e: oci::OciJsonError) -> ConvertError {
    ConvertError::InvalidJson {
        digest: desc.digest.clone(),
        message: e.to_string(),
    }
}
