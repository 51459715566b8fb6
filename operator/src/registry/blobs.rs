//! Blobs: HEAD, small reads, streaming reads that survive dropped connections (resumed with
//! `Range`), cross-repository mounts, and uploads (monolithic when small, chunked otherwise,
//! so memory stays at one chunk whatever the blob size).

use super::client::RetryBudget;
use super::client::{Access, RegistryClient, expect_status};
use super::digest::check_digest;
use super::error::{PermanentCause, RegistryError, RegistryResult};
use super::limits::{self, read_body};
use super::manifests::header_text;
use super::reference::RegistryRef;
use crate::image::BlobReader;
use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use sha2::{Digest, Sha256};
use soci_format::oci::Descriptor;
use std::future::Future;
use std::sync::Arc;

/// Upload chunk size: blobs up to this size go in one PUT, larger ones in PATCHes of it.
pub const UPLOAD_CHUNK: usize = 8 << 20;

impl RegistryClient {
    /// HEAD a blob: its size when the repository has it.
    pub async fn blob_size(&self, repo: &RegistryRef, digest: &str) -> RegistryResult<Option<u64>> {
        let what = format!("HEAD blob {digest} in {}", repo.repository_display());
        let url = self.blob_url(&what, repo, digest)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Pull, |c| c.head(&url))
                .await?;
            match response.status().as_u16() {
                200 => Ok(Some(
                    header_text(&response, CONTENT_LENGTH.as_str())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )),
                404 => Ok(None),
                _ => expect_status(&what, response, &[]).await.map(|_| None),
            }
        })
        .await
    }

    /// DELETE a blob from one repository (its link there; other repositories keep theirs).
    /// `false` when it was already gone.
    pub async fn delete_blob(&self, repo: &RegistryRef, digest: &str) -> RegistryResult<bool> {
        let what = format!("DELETE blob {digest} in {}", repo.repository_display());
        let url = self.blob_url(&what, repo, digest)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Push, |c| c.delete(&url))
                .await?;
            super::manifests::deleted(&what, response).await
        })
        .await
    }

    /// GET a small blob (a config), checked against its digest. `None` when absent.
    pub async fn get_small_blob(
        &self,
        repo: &RegistryRef,
        digest: &str,
    ) -> RegistryResult<Option<Vec<u8>>> {
        let what = format!("GET blob {digest} in {}", repo.repository_display());
        let url = self.blob_url(&what, repo, digest)?;
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Pull, |c| c.get(&url))
                .await?;
            if response.status().as_u16() == 404 {
                return Ok(None);
            }
            let response = expect_status(&what, response, &[200]).await?;
            let (bytes, _memory) = read_body(&what, response, limits::CONFIG).await?;
            let actual = soci_format::oci::sha256_digest(&bytes);
            if actual != digest {
                return Err(RegistryError::permanent(
                    PermanentCause::DigestMismatch,
                    &what,
                    format!("content has digest {actual}"),
                ));
            }
            Ok(Some(bytes))
        })
        .await
    }

    /// Mounts `digest` from `from` (same registry) into `repo`. `false` when the registry
    /// declined (it then opened an upload session instead, which we cancel).
    pub async fn mount_blob(
        &self,
        repo: &RegistryRef,
        from: &RegistryRef,
        digest: &str,
    ) -> RegistryResult<bool> {
        let what = format!(
            "mounting blob {digest} from {} into {}",
            from.repository_display(),
            repo.repository_display()
        );
        check_digest(&what, digest)?;
        let base = self.url(repo, "blobs/uploads/");
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| RegistryError::permanent(PermanentCause::Invalid, &what, e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", &from.repository);
        self.retrying(&what, || async {
            let response = self
                .send(&what, repo, Access::Push, |c| c.post(url.clone()))
                .await?;
            match response.status().as_u16() {
                201 => Ok(true),
                202 => {
                    if let Ok(location) = upload_location(&what, &url, &response) {
                        let _ = self
                            .send(&what, repo, Access::Push, |c| c.delete(location.clone()))
                            .await;
                    }
                    Ok(false)
                }
                _ => expect_status(&what, response, &[]).await.map(|_| false),
            }
        })
        .await
    }

    /// Uploads the blob `desc` from the chunks `open` yields. A transient failure restarts the
    /// upload with a fresh reader (registries cannot be trusted to resume a session).
    pub async fn upload_blob<R, F, Fut>(
        &self,
        repo: &RegistryRef,
        desc: &Descriptor,
        open: F,
    ) -> anyhow::Result<u64>
    where
        R: BlobReader,
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<R>>,
    {
        let policy = self.retry_policy();
        let mut failures = 0;
        loop {
            let reader = open().await?;
            match self.upload_once(repo, desc, reader).await {
                Ok(n) => return Ok(n),
                Err(e) => {
                    let transient = e
                        .downcast_ref::<RegistryError>()
                        .is_some_and(RegistryError::is_transient);
                    if !transient || failures >= policy.max_retries {
                        return Err(e);
                    }
                    let delay = policy.delay(failures, None);
                    eprintln!("retrying upload in {:.1}s: {e:#}", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    failures += 1;
                }
            }
        }
    }

    async fn upload_once<R: BlobReader>(
        &self,
        repo: &RegistryRef,
        desc: &Descriptor,
        mut reader: R,
    ) -> anyhow::Result<u64> {
        let what = format!(
            "uploading blob {} to {}",
            desc.digest,
            repo.repository_display()
        );
        check_digest(&what, &desc.digest)?;
        let start_url = reqwest::Url::parse(&self.url(repo, "blobs/uploads/"))?;
        let response = self
            .send(&what, repo, Access::Push, |c| c.post(start_url.clone()))
            .await?;
        let response = expect_status(&what, response, &[202]).await?;
        let mut location = upload_location(&what, &start_url, &response)?;

        let mut hasher = Sha256::new();
        let mut sent: u64 = 0;
        let mut buffer = BytesMut::with_capacity(UPLOAD_CHUNK.min(desc.size.max(0) as usize + 1));
        let mut finished = false;
        loop {
            while buffer.len() < UPLOAD_CHUNK {
                match reader.next_chunk().await? {
                    Some(chunk) => {
                        hasher.update(&chunk);
                        buffer.extend_from_slice(&chunk);
                    }
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            if finished {
                break;
            }
            // A full chunk and more to come: PATCH it.
            let chunk = buffer.split().freeze();
            let end = sent + chunk.len() as u64 - 1;
            let range = format!("{sent}-{end}");
            let response = self
                .send(&what, repo, Access::Push, |c| {
                    c.patch(location.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, range.clone())
                        .body(chunk.clone())
                })
                .await?;
            let response = expect_status(&what, response, &[202]).await?;
            location = upload_location(&what, &location, &response)?;
            sent += chunk.len() as u64;
        }
        let tail: Bytes = buffer.freeze();
        let total = sent + tail.len() as u64;
        let actual = format!(
            "sha256:{}",
            soci_format::ztoc::hex_lower(&hasher.finalize())
        );
        if actual != desc.digest || total != desc.size as u64 {
            return Err(RegistryError::permanent(
                PermanentCause::DigestMismatch,
                &what,
                format!(
                    "source content has digest {actual} and {total} bytes; descriptor says {} bytes",
                    desc.size
                ),
            )
            .into());
        }
        let mut finish = location.clone();
        finish.query_pairs_mut().append_pair("digest", &desc.digest);
        let response = self
            .send(&what, repo, Access::Push, |c| {
                c.put(finish.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(tail.clone())
            })
            .await?;
        expect_status(&what, response, &[201]).await?;
        Ok(total)
    }
}

fn upload_location(
    what: &str,
    base: &reqwest::Url,
    response: &reqwest::Response,
) -> RegistryResult<reqwest::Url> {
    let text = header_text(response, LOCATION.as_str()).ok_or_else(|| {
        RegistryError::permanent(
            PermanentCause::Invalid,
            what,
            "no Location in the upload response",
        )
    })?;
    base.join(&text).map_err(|e| {
        RegistryError::permanent(
            PermanentCause::Invalid,
            what,
            format!("bad Location {text:?}: {e}"),
        )
    })
}

/// A blob read from a registry in chunks as they arrive. A dropped or stalled connection, or a
/// body that ends early, is resumed from the next byte with `Range` (or, if the registry
/// ignores `Range`, by skipping what we already have). Gives up after `max_retries`
/// consecutive failures without progress, or when the whole read (resumes and waits included)
/// passes the deadline its size allows ([`super::RetryPolicy::stream_deadline`]), so a
/// registry dripping bytes cannot hold it. Digest checking is the caller's (see
/// `image::VerifiedReader`).
pub struct RegistryBlobReader {
    client: Arc<RegistryClient>,
    repo: RegistryRef,
    digest: String,
    size: u64,
    received: u64,
    /// Bytes still to drop from a 200 answer to a ranged request.
    skip: u64,
    response: Option<reqwest::Response>,
    /// Set when the first request is sent.
    budget: Option<RetryBudget>,
    done: bool,
}

impl RegistryBlobReader {
    pub fn new(client: Arc<RegistryClient>, repo: RegistryRef, desc: &Descriptor) -> Self {
        Self {
            client,
            repo,
            digest: desc.digest.clone(),
            size: desc.size.max(0) as u64,
            received: 0,
            skip: 0,
            response: None,
            budget: None,
            done: false,
        }
    }

    fn what(&self) -> String {
        format!(
            "GET blob {} in {}",
            self.digest,
            self.repo.repository_display()
        )
    }

    fn budget(&mut self) -> &mut RetryBudget {
        let policy = self.client.retry_policy();
        let deadline = policy.stream_deadline(self.size);
        self.budget
            .get_or_insert_with(|| RetryBudget::new(policy, deadline))
    }

    async fn open(&mut self) -> RegistryResult<()> {
        let what = self.what();
        let url = self.client.blob_url(&what, &self.repo, &self.digest)?;
        let offset = self.received;
        let deadline = self.budget().deadline();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(self.too_slow());
        }
        // The stream's own deadline, not the per-request one (a large blob takes long), also
        // around the authentication `send` may do first.
        let sent = self.client.send(&what, &self.repo, Access::Pull, |c| {
            let r = c.get(&url).timeout(left);
            if offset > 0 {
                r.header(RANGE, format!("bytes={offset}-"))
            } else {
                r
            }
        });
        let response = match tokio::time::timeout_at(deadline, sent).await {
            Ok(response) => response?,
            Err(_) => return Err(self.too_slow()),
        };
        let response = expect_status(&what, response, &[200, 206]).await?;
        self.skip = 0;
        if offset > 0 {
            if response.status().as_u16() == 200 {
                self.skip = offset;
            } else {
                let range = header_text(&response, CONTENT_RANGE.as_str()).unwrap_or_default();
                let start = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(offset) {
                    return Err(RegistryError::transient(
                        &what,
                        format!(
                            "asked for bytes from {offset}, got range {:?}",
                            limits::cut(&range, 100)
                        ),
                    ));
                }
            }
        }
        self.response = Some(response);
        Ok(())
    }

    fn too_slow(&self) -> RegistryError {
        let (received, size) = (self.received, self.size);
        let budget = self
            .budget
            .as_ref()
            .map(RetryBudget::budget)
            .unwrap_or_default();
        RegistryError::transient(
            self.what(),
            format!(
                "{received} of {size} bytes after {:.1}s, the most a blob of this size may take: the registry is too slow",
                budget.as_secs_f64()
            ),
        )
    }

    /// Counts a failure; `Err` when it is permanent, the retries are spent or the deadline
    /// has passed.
    async fn failed(&mut self, mut error: RegistryError) -> RegistryResult<()> {
        self.response = None;
        if error.is_transient() && tokio::time::Instant::now() >= self.budget().deadline() {
            let slow = self.too_slow();
            error.cause = format!("{} ({})", error.cause, slow.cause);
            return Err(error);
        }
        let Some(delay) = self.budget().next_delay(&mut error) else {
            return Err(error);
        };
        eprintln!(
            "resuming at byte {} in {:.1}s: {error}",
            self.received,
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn next(&mut self) -> RegistryResult<Option<Bytes>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.response.is_none()
                && let Err(e) = self.open().await
            {
                self.failed(e).await?;
                continue;
            }
            let response = self.response.as_mut().expect("opened above");
            match response.chunk().await {
                Ok(Some(mut chunk)) => {
                    if self.skip > 0 {
                        let drop = self.skip.min(chunk.len() as u64) as usize;
                        self.skip -= drop as u64;
                        chunk = chunk.slice(drop..);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    self.received += chunk.len() as u64;
                    self.budget().progressed();
                    if self.received > self.size {
                        return Err(RegistryError::permanent(
                            PermanentCause::DigestMismatch,
                            self.what(),
                            format!("more than the descriptor's {} bytes", self.size),
                        ));
                    }
                    return Ok(Some(chunk));
                }
                Ok(None) if self.received >= self.size => {
                    self.done = true;
                    self.response = None;
                    return Ok(None);
                }
                Ok(None) => {
                    let e = RegistryError::transient(
                        self.what(),
                        format!("body ended after {} of {} bytes", self.received, self.size),
                    );
                    self.failed(e).await?;
                }
                Err(e) => {
                    let e = RegistryError::from_reqwest(&self.what(), &e);
                    self.failed(e).await?;
                }
            }
        }
    }
}

impl BlobReader for RegistryBlobReader {
    async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        Ok(self.next().await?)
    }
}
