//! The manifests that name a subject (SOCI index manifest v1 points at its image manifest with
//! `subject`): the OCI referrers API where the registry has it, else the referrers tag schema
//! (`sha256-<hex>` tagging an image index of the referrers, kept by the clients that push them).
//! Debian's docker-registry 2.8 has no referrers API, so the tag schema is what runs here.

use super::client::{Access, RegistryClient, expect_status};
use super::error::{PermanentCause, RegistryError, RegistryResult};
use super::limits::{self, read_body};
use super::reference::RegistryRef;
use reqwest::header::ACCEPT;
use soci_format::oci::{self, Descriptor, Index, Manifest};

/// Where a referrers list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersSource {
    Api,
    TagSchema,
}

/// The tag the referrers tag schema uses for `digest`: `<alg>-<hex>`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The descriptor under which a referrer is listed: its media type, digest and size, its
/// artifact type (the manifest's `artifactType`, else its config's media type, as the spec
/// says) and its annotations.
pub fn referrer_descriptor(manifest_bytes: &[u8]) -> Result<Descriptor, String> {
    let manifest = Manifest::from_json(manifest_bytes).map_err(|e| e.to_string())?;
    let mut d = Descriptor::new(
        oci::MEDIA_TYPE_OCI_MANIFEST,
        &oci::sha256_digest(manifest_bytes),
        manifest_bytes.len() as i64,
    );
    d.artifact_type = if manifest.artifact_type.is_empty() {
        manifest.config.media_type.clone()
    } else {
        manifest.artifact_type.clone()
    };
    d.annotations = manifest.annotations.filter(|a| !a.is_empty());
    Ok(d)
}

/// The referrers tag's index after adding `new`: existing entries are kept in order, entries
/// already listed (same digest) are not repeated. `None` when nothing changes.
pub fn merge_referrers(
    existing: Option<&[u8]>,
    new: &[Descriptor],
) -> Result<Option<Vec<u8>>, String> {
    let mut index = match existing {
        Some(bytes) => Index::from_json(bytes).map_err(|e| format!("referrers tag index: {e}"))?,
        None => Index {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_OCI_INDEX.into(),
            ..Index::default()
        },
    };
    let manifests = index.manifests.get_or_insert_with(Vec::new);
    let before = manifests.len();
    for d in new {
        if !manifests.iter().any(|m| m.digest == d.digest) {
            manifests.push(d.clone());
        }
    }
    if existing.is_some() && manifests.len() == before {
        return Ok(None);
    }
    Ok(Some(index.to_go_json()))
}

fn filter_by_type(manifests: Vec<Descriptor>, artifact_type: Option<&str>) -> Vec<Descriptor> {
    match artifact_type {
        Some(t) => manifests
            .into_iter()
            .filter(|d| d.artifact_type == t)
            .collect(),
        None => manifests,
    }
}

impl RegistryClient {
    /// GET the referrers API. `None` when the registry does not have it (404: a registry that
    /// has it answers 200 with an empty index for an unknown subject).
    async fn referrers_api(
        &self,
        repo: &RegistryRef,
        subject: &str,
    ) -> RegistryResult<Option<Vec<Descriptor>>> {
        let what = format!("GET referrers of {}", repo.with_reference(subject));
        let url = self.referrers_url(&what, repo, subject)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Pull, |c| {
                    c.get(&url).header(ACCEPT, oci::MEDIA_TYPE_OCI_INDEX)
                })
                .await?;
            match response.status().as_u16() {
                // 400/405: registries that route `referrers` as something else.
                404 | 400 | 405 => return Ok(None),
                _ => {}
            }
            let response = expect_status(&what, response, &[200]).await?;
            let (bytes, _memory) = read_body(&what, response, limits::REFERRERS).await?;
            // Some proxies answer 200 with a non-index page for an unknown path.
            match Index::from_json(&bytes) {
                Ok(index) => Ok(Some(index.manifests.unwrap_or_default())),
                Err(_) => Ok(None),
            }
        })
        .await
    }

    /// The manifests whose `subject` is `subject` (a digest), optionally only those of
    /// `artifact_type`: through the referrers API, else the referrers tag.
    pub async fn referrers(
        &self,
        repo: &RegistryRef,
        subject: &str,
        artifact_type: Option<&str>,
    ) -> RegistryResult<Vec<Descriptor>> {
        if let Some(manifests) = self.referrers_api(repo, subject).await? {
            return Ok(filter_by_type(manifests, artifact_type));
        }
        let manifests = match self.get_manifest(repo, &referrers_tag(subject)).await? {
            Some(fetched) => Index::from_json(&fetched.bytes)
                .map_err(|e| {
                    RegistryError::permanent(
                        PermanentCause::Invalid,
                        format!(
                            "referrers tag {}",
                            repo.with_reference(&referrers_tag(subject))
                        ),
                        e.to_string(),
                    )
                })?
                .manifests
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(filter_by_type(manifests, artifact_type))
    }

    /// Lists `referrers` (already pushed manifests with `subject`) under the referrers tag of
    /// `subject` when the registry has no referrers API; with the API, the registry lists them
    /// itself and nothing is written. Read, merge, write: a concurrent writer of the same tag
    /// can lose an entry, as with every client of the tag schema.
    pub async fn add_referrers(
        &self,
        repo: &RegistryRef,
        subject: &str,
        referrers: &[Descriptor],
    ) -> RegistryResult<ReferrersSource> {
        if self.referrers_api(repo, subject).await?.is_some() {
            return Ok(ReferrersSource::Api);
        }
        let tag = referrers_tag(subject);
        let existing = self.get_manifest(repo, &tag).await?;
        let merged = merge_referrers(existing.as_ref().map(|f| f.bytes.as_slice()), referrers)
            .map_err(|e| {
                RegistryError::permanent(
                    PermanentCause::Invalid,
                    format!("referrers tag {}", repo.with_reference(&tag)),
                    e,
                )
            })?;
        if let Some(bytes) = merged {
            self.put_manifest(repo, &tag, oci::MEDIA_TYPE_OCI_INDEX, bytes.into())
                .await?;
        }
        Ok(ReferrersSource::TagSchema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soci_v1_manifest(subject: &str) -> Vec<u8> {
        let mut m = Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            config: Descriptor::new(
                oci::SOCI_INDEX_ARTIFACT_TYPE_V1,
                oci::SOCI_EMPTY_CONFIG_DIGEST,
                oci::SOCI_EMPTY_CONFIG_SIZE,
            ),
            layers: Some(vec![]),
            subject: Some(Descriptor::new(oci::MEDIA_TYPE_OCI_MANIFEST, subject, 123)),
            ..Manifest::default()
        };
        m.annotations = Some(
            [(
                oci::ANNOTATION_BUILD_TOOL_IDENTIFIER.to_string(),
                oci::SOCI_BUILD_TOOL_IDENTIFIER.to_string(),
            )]
            .into(),
        );
        m.to_go_json()
    }

    #[test]
    fn tag_schema_name() {
        assert_eq!(referrers_tag("sha256:abc"), "sha256-abc");
    }

    #[test]
    fn descriptor_takes_artifact_type_from_config_when_unset() {
        let bytes = soci_v1_manifest("sha256:aa");
        let d = referrer_descriptor(&bytes).unwrap();
        assert_eq!(d.artifact_type, oci::SOCI_INDEX_ARTIFACT_TYPE_V1);
        assert_eq!(d.digest, oci::sha256_digest(&bytes));
        assert_eq!(d.size, bytes.len() as i64);
        assert_eq!(
            d.annotation(oci::ANNOTATION_BUILD_TOOL_IDENTIFIER),
            Some(oci::SOCI_BUILD_TOOL_IDENTIFIER)
        );
    }

    #[test]
    fn merge_keeps_existing_and_skips_duplicates() {
        let a = referrer_descriptor(&soci_v1_manifest("sha256:aa")).unwrap();
        let b = referrer_descriptor(&soci_v1_manifest("sha256:bb")).unwrap();
        let first = merge_referrers(None, std::slice::from_ref(&a))
            .unwrap()
            .unwrap();
        let index = Index::from_json(&first).unwrap();
        assert_eq!(index.media_type, oci::MEDIA_TYPE_OCI_INDEX);
        assert_eq!(index.manifests.as_deref(), Some(std::slice::from_ref(&a)));
        // Same entry again: nothing to write.
        assert_eq!(
            merge_referrers(Some(&first), std::slice::from_ref(&a)).unwrap(),
            None
        );
        let second = merge_referrers(Some(&first), &[b.clone(), a.clone()])
            .unwrap()
            .unwrap();
        let index = Index::from_json(&second).unwrap();
        assert_eq!(index.manifests.unwrap(), vec![a, b]);
    }

    #[test]
    fn merge_refuses_a_tag_that_is_not_an_index() {
        assert!(merge_referrers(Some(b"not json"), &[]).is_err());
    }

    #[test]
    fn filter_keeps_only_the_asked_type() {
        let a = referrer_descriptor(&soci_v1_manifest("sha256:aa")).unwrap();
        let mut other = a.clone();
        other.artifact_type = "application/vnd.example.sbom".into();
        let kept = filter_by_type(
            vec![a.clone(), other],
            Some(oci::SOCI_INDEX_ARTIFACT_TYPE_V1),
        );
        assert_eq!(kept, vec![a]);
    }
}
