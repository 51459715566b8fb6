//! Manifests by exact bytes: what we fetch is hashed as received, what we push is the byte
//! string whose digest we computed, and the registry must agree on that digest.

use super::client::{Access, RegistryClient, expect_status};
use super::digest::{check_digest, is_valid_digest};
use super::error::{PermanentCause, RegistryError, RegistryResult};
use super::limits::{self, MAX_TAG_PAGES, read_body, read_error_body};
use super::reference::RegistryRef;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use soci_format::oci::sha256_digest;

/// Every manifest type we read; Docker's are converted to OCI by the conversion.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

const DIGEST_HEADER: &str = "docker-content-digest";

pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    /// The bytes' share of the process's registry body memory, given back when dropped (kept
    /// for its Drop: the bytes stay counted while kept).
    pub memory: limits::Held,
}

impl RegistryClient {
    /// GET a manifest by tag or digest. `None` when the registry has no such manifest.
    pub async fn get_manifest(
        &self,
        repo: &RegistryRef,
        reference: &str,
    ) -> RegistryResult<Option<FetchedManifest>> {
        let what = format!("GET manifest {}", repo.with_reference(reference));
        let url = self.manifest_url(&what, repo, reference)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Pull, |c| {
                    c.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if response.status().as_u16() == 404 {
                return Ok(None);
            }
            let response = expect_status(&what, response, &[200]).await?;
            let content_type = header_text(&response, CONTENT_TYPE.as_str());
            let advertised = header_text(&response, DIGEST_HEADER);
            let (bytes, memory) = read_body(&what, response, limits::MANIFEST).await?;
            let digest = sha256_digest(&bytes);
            if reference.contains(':') && reference != digest {
                return Err(RegistryError::permanent(
                    PermanentCause::DigestMismatch,
                    &what,
                    format!("content has digest {digest}"),
                ));
            }
            if let Some(a) = advertised.filter(|a| a.starts_with("sha256:"))
                && a != digest
            {
                return Err(RegistryError::permanent(
                    PermanentCause::DigestMismatch,
                    &what,
                    format!("registry says {a}, content has digest {digest}"),
                ));
            }
            let media_type = manifest_media_type(&bytes, content_type.as_deref());
            Ok(Some(FetchedManifest {
                bytes,
                media_type,
                digest,
                memory,
            }))
        })
        .await
    }

    /// HEAD a manifest: whether the repository has it.
    pub async fn has_manifest(&self, repo: &RegistryRef, digest: &str) -> RegistryResult<bool> {
        let what = format!("HEAD manifest {}", repo.with_reference(digest));
        check_digest(&what, digest)?;
        let url = self.manifest_url(&what, repo, digest)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Pull, |c| {
                    c.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            match response.status().as_u16() {
                200 => Ok(true),
                404 => Ok(false),
                _ => expect_status(&what, response, &[]).await.map(|_| false),
            }
        })
        .await
    }

    /// The digest a tag (or digest) points to now, with one HEAD: `None` when there is no such
    /// manifest. A registry that leaves out `Docker-Content-Digest` costs a GET instead.
    pub async fn manifest_digest(
        &self,
        repo: &RegistryRef,
        reference: &str,
    ) -> RegistryResult<Option<String>> {
        let what = format!("HEAD manifest {}", repo.with_reference(reference));
        let url = self.manifest_url(&what, repo, reference)?;
        let advertised = self
            .retrying(&what, || async {
                let response = self
                    .send(&what, repo, Access::Pull, |c| {
                        c.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
                    })
                    .await?;
                match response.status().as_u16() {
                    200 => {
                        Ok(Some(header_text(&response, DIGEST_HEADER).filter(|d| {
                            d.starts_with("sha256:") && is_valid_digest(d)
                        })))
                    }
                    404 => Ok(None),
                    _ => expect_status(&what, response, &[]).await.map(|_| None),
                }
            })
            .await?;
        match advertised {
            None => Ok(None),
            Some(Some(digest)) => Ok(Some(digest)),
            Some(None) => Ok(self
                .get_manifest(repo, reference)
                .await?
                .map(|found| found.digest)),
        }
    }

    /// PUT exactly `bytes` under `reference` (a tag or the bytes' digest).
    pub async fn put_manifest(
        &self,
        repo: &RegistryRef,
        reference: &str,
        media_type: &str,
        bytes: bytes::Bytes,
    ) -> RegistryResult<()> {
        let what = format!("PUT manifest {}", repo.with_reference(reference));
        let url = self.manifest_url(&what, repo, reference)?;
        let digest = sha256_digest(&bytes);
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Push, |c| {
                    c.put(&url)
                        .header(CONTENT_TYPE, media_type)
                        .body(bytes.clone())
                })
                .await?;
            let response = expect_status(&what, response, &[201]).await?;
            if let Some(stored) = header_text(&response, DIGEST_HEADER)
                && stored != digest
            {
                return Err(RegistryError::permanent(
                    PermanentCause::DigestMismatch,
                    &what,
                    format!("registry stored {stored}, we pushed {digest}"),
                ));
            }
            Ok(())
        })
        .await
    }
    /// The repository's tags (`/tags/list`, following `Link` pages), at most `limit`; `None`
    /// when there are more (the caller cannot know them all). A repository the registry does
    /// not know has none. At most [`MAX_TAG_PAGES`] pages, each read once, all on the
    /// registry's own origin: a `Link` that loops, leaves the origin or never ends is refused.
    pub async fn list_tags(
        &self,
        repo: &RegistryRef,
        limit: usize,
    ) -> RegistryResult<Option<Vec<String>>> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("GET tags of {}", repo.repository_display());
        let invalid =
            |cause: String| RegistryError::permanent(PermanentCause::Invalid, &what, cause);
        let first = reqwest::Url::parse(&self.url(repo, "tags/list?n=1000"))
            .map_err(|e| invalid(e.to_string()))?;
        let mut visited = std::collections::HashSet::new();
        let mut next = Some(first.clone());
        let mut tags = Vec::new();
        while let Some(url) = next.take() {
            if !visited.insert(url.to_string()) {
                return Err(invalid(format!(
                    "the Link header leads back to a page already read ({}): the pages loop",
                    limits::strip_url_queries(url.as_str())
                )));
            }
            if visited.len() > MAX_TAG_PAGES {
                return Err(invalid(format!(
                    "more than {MAX_TAG_PAGES} pages of tags; stopped following Link"
                )));
            }
            let (page, link) = self
                .retrying(&what, || async {
                    let response = self
                        .send(&what, repo, Access::Pull, |c| c.get(url.clone()))
                        .await?;
                    if response.status().as_u16() == 404 {
                        return Ok((Page { tags: None }, None));
                    }
                    let response = expect_status(&what, response, &[200]).await?;
                    let link = header_text(&response, "link");
                    let (bytes, _memory) = read_body(&what, response, limits::TAG_PAGE).await?;
                    let page: Page = serde_json::from_slice(&bytes).map_err(|e| {
                        RegistryError::permanent(PermanentCause::Invalid, &what, e.to_string())
                    })?;
                    Ok((page, link))
                })
                .await?;
            tags.extend(page.tags.unwrap_or_default());
            if tags.len() > limit {
                return Ok(None);
            }
            next = match link {
                Some(l) => Some(next_page(&first, &l).map_err(invalid)?),
                None => None,
            };
        }
        Ok(Some(tags))
    }

    /// DELETE a manifest by digest (the registry also drops every tag pointing at it). `false`
    /// when it was already gone.
    pub async fn delete_manifest(&self, repo: &RegistryRef, digest: &str) -> RegistryResult<bool> {
        let what = format!("DELETE manifest {}", repo.with_reference(digest));
        check_digest(&what, digest)?;
        let url = self.manifest_url(&what, repo, digest)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Push, |c| c.delete(&url))
                .await?;
            deleted(&what, response).await
        })
        .await
    }
}

/// How a DELETE answered: done (202/200/204), already gone (404), or refused. A refusal of
/// the method itself (405, or the `UNSUPPORTED` error code) is permanent and says so.
pub(crate) async fn deleted(what: &str, response: reqwest::Response) -> RegistryResult<bool> {
    let status = response.status().as_u16();
    match status {
        200 | 202 | 204 => return Ok(true),
        404 => return Ok(false),
        _ => {}
    }
    let body = read_error_body(response).await;
    if status == 405 || String::from_utf8_lossy(&body).contains("UNSUPPORTED") {
        return Err(RegistryError::permanent(
            PermanentCause::Unsupported,
            what,
            format!("HTTP {status}: the registry does not allow deletes"),
        ));
    }
    Err(RegistryError::from_status(what, status, &body, None))
}

pub(crate) fn header_text(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// The `mediaType` the document declares, else the `Content-Type` the registry sent.
fn manifest_media_type(bytes: &[u8], content_type: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    match serde_json::from_slice::<Head>(bytes) {
        Ok(h) if !h.media_type.is_empty() => h.media_type,
        _ => content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .unwrap_or_default(),
    }
}

/// The page a `Link: <target>; rel="next"` header names, resolved against the first page: it
/// must stay on the registry's own scheme, host and port (credentials go nowhere else).
fn next_page(first: &reqwest::Url, link: &str) -> Result<reqwest::Url, String> {
    let target = link
        .split('<')
        .nth(1)
        .and_then(|t| t.split('>').next())
        .ok_or_else(|| format!("unreadable Link header {:?}", limits::cut(link, 200)))?;
    let url = first
        .join(target)
        .map_err(|e| format!("bad Link target {:?}: {e}", limits::cut(target, 200)))?;
    if url.origin() != first.origin() {
        return Err(format!(
            "the Link header leads to another origin ({}); only {} is followed",
            limits::strip_url_queries(&limits::cut(url.as_str(), 200)),
            first.origin().ascii_serialization()
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_resolve_on_the_registry_origin_only() {
        let first = reqwest::Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=1000").unwrap();
        let next = next_page(&first, r#"</v2/a/tags/list?last=x&n=1000>; rel="next""#).unwrap();
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=x&n=1000"
        );
        for other in [
            r#"<http://127.0.0.1:5001/v2/a/tags/list>; rel="next""#,
            r#"<https://127.0.0.1:5000/v2/a/tags/list>; rel="next""#,
            r#"<//evil.example/v2/a/tags/list>; rel="next""#,
        ] {
            let e = next_page(&first, other).unwrap_err();
            assert!(e.contains("another origin"), "{e}");
        }
        assert!(next_page(&first, "garbage").is_err());
    }

    #[test]
    fn media_type_prefers_the_document() {
        assert_eq!(
            manifest_media_type(
                br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
                Some("application/json")
            ),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            manifest_media_type(
                br#"{"schemaVersion":2}"#,
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            ),
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
}
