//! Registry repositories as a conversion source and sink.

use super::layout::ResolvedRoot;
use super::{BytesReader, ImageSink, ImageSource, PutOutcome, VerifiedReader};
use crate::registry::blobs::RegistryBlobReader;
use crate::registry::error::PermanentCause;
use crate::registry::referrers::referrer_descriptor;
use crate::registry::{RegistryClient, RegistryError, RegistryRef};
use anyhow::{Result, bail};
use bytes::Bytes;
use soci_format::conversion_plan::BlobSource;
use soci_format::oci::{self, Descriptor, Index, Manifest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Descriptors walked when collecting an image's JSON blobs (containerd's walk limit).
const MAX_DESCRIPTORS: usize = 10_000;

/// What the planner gets for one digest: the bytes, absent, or a permanent failure to report
/// when (and only if) the planner asks for it.
type JsonEntry = Result<Option<Vec<u8>>, String>;

pub struct RegistrySource {
    client: Arc<RegistryClient>,
    reference: RegistryRef,
    /// Manifests, indexes and configs fetched so far, by digest.
    json: Mutex<HashMap<String, JsonEntry>>,
}

impl RegistrySource {
    pub fn new(client: Arc<RegistryClient>, reference: RegistryRef) -> Self {
        Self {
            client,
            reference,
            json: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, digest: &str) -> Option<JsonEntry> {
        crate::locks::lock(&self.json).get(digest).cloned()
    }

    /// Fetches one JSON blob through the endpoint its media type calls for. Permanent
    /// failures are recorded for the planner; transient ones (retries exhausted) abort.
    async fn fetch_json(&self, desc: &Descriptor) -> Result<JsonEntry> {
        if let Some(hit) = self.cached(&desc.digest) {
            return Ok(hit);
        }
        let fetched =
            if oci::is_manifest_type(&desc.media_type) || oci::is_index_type(&desc.media_type) {
                self.client
                    .get_manifest(&self.reference, &desc.digest)
                    .await
                    .map(|m| m.map(|m| m.bytes))
            } else {
                self.client
                    .get_small_blob(&self.reference, &desc.digest)
                    .await
            };
        let entry = match fetched {
            Ok(v) => Ok(v),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => Err(e.to_string()),
        };
        self.json
            .lock()
            .expect("lock")
            .insert(desc.digest.clone(), entry.clone());
        Ok(entry)
    }
}

struct Prefetched(HashMap<String, JsonEntry>);

impl BlobSource for Prefetched {
    fn get(&self, digest: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        self.0.get(digest).cloned().unwrap_or(Ok(None))
    }
}

fn children(desc: &Descriptor, bytes: &[u8]) -> Vec<Descriptor> {
    if oci::is_index_type(&desc.media_type) {
        Index::from_json(bytes)
            .map(|i| i.manifests.unwrap_or_default())
            .unwrap_or_default()
    } else if oci::is_manifest_type(&desc.media_type) {
        Manifest::from_json(bytes)
            .map(|m| {
                let mut out = vec![m.config];
                out.extend(m.layers.unwrap_or_default());
                out
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

impl ImageSource for RegistrySource {
    type Reader = RegistryBlobReader;

    fn describe(&self) -> String {
        self.reference.to_string()
    }

    async fn resolve(&self) -> Result<ResolvedRoot> {
        let reference = self.reference.manifest_reference();
        let Some(found) = self.client.get_manifest(&self.reference, reference).await? else {
            return Err(RegistryError::permanent(
                PermanentCause::NotFound,
                format!("resolving {}", self.reference),
                "manifest unknown (no such tag or digest)",
            )
            .into());
        };
        if !oci::is_manifest_type(&found.media_type) && !oci::is_index_type(&found.media_type) {
            bail!(
                "{}: unsupported manifest media type {:?}",
                self.reference,
                found.media_type
            );
        }
        let target = Descriptor::new(&found.media_type, &found.digest, found.bytes.len() as i64);
        self.json
            .lock()
            .expect("lock")
            .insert(found.digest.clone(), Ok(Some(found.bytes)));
        Ok(ResolvedRoot {
            target,
            synthesized: None,
        })
    }

    /// Walks the image like containerd's `images.Children` (indexes, manifests, configs; not
    /// layers) and hands the planner everything it may read.
    async fn json_blobs<'a>(
        &'a self,
        root: &'a ResolvedRoot,
    ) -> Result<Box<dyn BlobSource + Send + Sync + 'a>> {
        let mut stack = vec![root.target.clone()];
        let mut seen = std::collections::HashSet::new();
        while let Some(desc) = stack.pop() {
            if !seen.insert(desc.digest.clone()) || seen.len() > MAX_DESCRIPTORS {
                continue;
            }
            let is_json = oci::is_manifest_type(&desc.media_type)
                || oci::is_index_type(&desc.media_type)
                || oci::is_config_type(&desc.media_type);
            if !is_json {
                continue;
            }
            if let Ok(Some(bytes)) = self.fetch_json(&desc).await? {
                stack.extend(children(&desc, &bytes).into_iter().rev());
            }
        }
        Ok(Box::new(Prefetched(crate::locks::lock(&self.json).clone())))
    }

    async fn read_json(&self, desc: &Descriptor) -> Result<Option<Vec<u8>>> {
        match self.fetch_json(desc).await? {
            Ok(v) => Ok(v),
            Err(message) => bail!("{}: {message}", self.reference),
        }
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        if oci::is_manifest_type(&desc.media_type) || oci::is_index_type(&desc.media_type) {
            return Ok(self.read_json(desc).await?.is_some());
        }
        // Layers and configs of a pushed image exist: the registry checked them on push.
        Ok(true)
    }

    async fn blob_present(&self, desc: &Descriptor) -> Result<bool> {
        if oci::is_manifest_type(&desc.media_type) || oci::is_index_type(&desc.media_type) {
            return Ok(self
                .client
                .has_manifest(&self.reference, &desc.digest)
                .await?);
        }
        Ok(self
            .client
            .blob_size(&self.reference, &desc.digest)
            .await?
            .is_some())
    }

    async fn open_blob(&self, desc: &Descriptor) -> Result<RegistryBlobReader> {
        Ok(RegistryBlobReader::new(
            self.client.clone(),
            self.reference.clone(),
            desc,
        ))
    }

    fn registry_repository(&self) -> Option<&RegistryRef> {
        Some(&self.reference)
    }

    async fn soci_v1_referrers(&self, subject: &str) -> Result<Vec<Descriptor>> {
        Ok(self
            .client
            .referrers(
                &self.reference,
                subject,
                Some(oci::SOCI_INDEX_ARTIFACT_TYPE_V1),
            )
            .await?)
    }
}

/// A repository to push the converted image to; `reference.tag` is written last.
pub struct RegistrySink {
    client: Arc<RegistryClient>,
    reference: RegistryRef,
    tag: String,
    /// The tag is the source's own (an in-place target): rewrite it only if it still names
    /// the image the conversion started from.
    in_place: bool,
    /// The digest of the source root the conversion started from.
    source_digest: Option<String>,
}

impl RegistrySink {
    pub fn new(client: Arc<RegistryClient>, reference: RegistryRef) -> Result<Self> {
        if reference.digest.is_some() {
            bail!(
                "destination {reference} names a digest; give a tag (the digest of the result is only known after conversion)"
            );
        }
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
        Ok(Self {
            client,
            reference,
            tag,
            in_place: false,
            source_digest: None,
        })
    }

    /// The destination tag is the source's own tag: right before it is written, it must
    /// still name the source digest the conversion started from, or nothing is tagged (an
    /// image pushed to the tag meanwhile is not overwritten).
    pub fn in_place(mut self) -> Self {
        self.in_place = true;
        self
    }

    /// Refuses to tag when an in-place tag no longer names `source_digest`.
    async fn check_in_place_tag(&self) -> Result<()> {
        if !self.in_place {
            return Ok(());
        }
        let Some(expected) = &self.source_digest else {
            bail!(
                "in-place target {}: the source digest the conversion started from is unknown; not tagging",
                self.reference
            );
        };
        let current = self
            .client
            .manifest_digest(&self.reference, &self.tag)
            .await?;
        if current.as_deref() != Some(expected.as_str()) {
            bail!(
                "in-place target {}: the tag now names {}, not the source {expected} this conversion started from (pushed to meanwhile?); not overwriting it",
                self.reference,
                current.as_deref().unwrap_or("nothing")
            );
        }
        Ok(())
    }
}

impl RegistrySink {
    /// Whether the destination repository already has the blob (a HEAD).
    async fn has(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self
            .client
            .blob_size(&self.reference, &desc.digest)
            .await?
            .is_some())
    }
}

impl ImageSink for RegistrySink {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    fn starts_from(&mut self, source_root: &Descriptor) {
        self.source_digest = Some(source_root.digest.clone());
    }

    async fn put_blob(&self, desc: &Descriptor, bytes: Bytes) -> Result<PutOutcome> {
        if self.has(desc).await? {
            return Ok(PutOutcome::Present);
        }
        let n = self
            .client
            .upload_blob(&self.reference, desc, || {
                let bytes = bytes.clone();
                async move { Ok(BytesReader::new(bytes)) }
            })
            .await?;
        Ok(PutOutcome::Written(n))
    }

    async fn copy_blob<S: ImageSource>(&self, source: &S, desc: &Descriptor) -> Result<PutOutcome> {
        if self.has(desc).await? {
            return Ok(PutOutcome::Present);
        }
        if let Some(from) = source.registry_repository()
            && from.registry == self.reference.registry
            && from.repository != self.reference.repository
            && self
                .client
                .mount_blob(&self.reference, from, &desc.digest)
                .await?
        {
            return Ok(PutOutcome::Linked);
        }
        let label = format!("blob {} of {}", desc.digest, source.describe());
        let n = self
            .client
            .upload_blob(&self.reference, desc, || async {
                Ok(VerifiedReader::new(
                    source.open_blob(desc).await?,
                    desc,
                    label.clone(),
                ))
            })
            .await?;
        Ok(PutOutcome::Written(n))
    }

    async fn put_manifest(&self, desc: &Descriptor, bytes: Bytes) -> Result<PutOutcome> {
        if self
            .client
            .has_manifest(&self.reference, &desc.digest)
            .await?
        {
            return Ok(PutOutcome::Present);
        }
        let n = bytes.len() as u64;
        self.client
            .put_manifest(&self.reference, &desc.digest, &desc.media_type, bytes)
            .await?;
        Ok(PutOutcome::Written(n))
    }

    /// The tag, last: everything it references is in the repository by now. Other roots
    /// with a `subject` (v1 SOCI indexes) are listed first under their subject's referrers tag
    /// where the registry has no referrers API, so the snapshotter can find them.
    async fn commit(self, roots: Vec<(Descriptor, Bytes)>) -> Result<()> {
        let mut roots = roots.into_iter();
        let Some((root, bytes)) = roots.next() else {
            bail!("nothing to tag");
        };
        let mut by_subject: std::collections::BTreeMap<String, Vec<Descriptor>> =
            Default::default();
        for (desc, manifest_bytes) in roots {
            let subject = Manifest::from_json(&manifest_bytes)
                .ok()
                .and_then(|m| m.subject)
                .map(|s| s.digest);
            if let Some(subject) = subject {
                let listed = referrer_descriptor(&manifest_bytes)
                    .map_err(|e| anyhow::anyhow!("manifest {}: {e}", desc.digest))?;
                by_subject.entry(subject).or_default().push(listed);
            }
        }
        for (subject, referrers) in &by_subject {
            self.client
                .add_referrers(&self.reference, subject, referrers)
                .await?;
        }
        // As late as it can be: a push to the tag after this HEAD still races the PUT, but
        // the window is one round trip instead of the whole build.
        self.check_in_place_tag().await?;
        self.client
            .put_manifest(&self.reference, &self.tag, &root.media_type, bytes)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cleanup::registry_tests::{
        client, convert_settings, push_case, registry_with_case, runtime,
    };
    use crate::conversion_engine::convert;
    use soci_testkit::registry::RegistryHttp;

    fn tagged(http: &RegistryHttp, repo: &str, tag: &str) -> String {
        let graph = http.pull_graph(repo, tag).unwrap();
        graph.root["digest"].as_str().unwrap().to_string()
    }

    /// The worker's case: the controller pinned the source tag's digest, and an image was
    /// pushed to the tag before the in-place build came to write it. The push is kept.
    #[test]
    fn an_in_place_tag_pushed_to_during_the_build_is_not_overwritten() {
        let Some((registry, http)) = registry_with_case(
            "an_in_place_tag_pushed_to_during_the_build_is_not_overwritten",
            "race",
            "v1",
        ) else {
            return;
        };
        let started_from = tagged(&http, "race", "v1");
        push_case(&http, "docker-moby-modes-whiteouts", "race", "v1");
        let theirs = tagged(&http, "race", "v1");
        assert_ne!(theirs, started_from);

        let client = client();
        let rt = runtime();
        let host = registry.host();
        let source = RegistryRef::parse(&format!("{host}/race@{started_from}")).unwrap();
        let target = RegistryRef::parse(&format!("{host}/race:v1")).unwrap();
        let sink = RegistrySink::new(client.clone(), target.clone())
            .unwrap()
            .in_place();
        let e = rt
            .block_on(convert(
                &RegistrySource::new(client.clone(), source.clone()),
                sink,
                &convert_settings(),
            ))
            .unwrap_err();
        let message = format!("{e:#}");
        assert!(
            message.contains(&format!(
                "in-place target {target}: the tag now names {theirs}, not the source {started_from} this conversion started from"
            )),
            "{message}"
        );
        assert_eq!(tagged(&http, "race", "v1"), theirs, "the push was kept");

        // Not in place (a tag of its own): the same build writes the tag.
        let sink = RegistrySink::new(client.clone(), target.clone()).unwrap();
        let report = rt
            .block_on(convert(
                &RegistrySource::new(client.clone(), source),
                sink,
                &convert_settings(),
            ))
            .unwrap();
        assert_eq!(tagged(&http, "race", "v1"), report.image_index.digest);
    }

    /// In place with nothing pushed meanwhile (`convert repo:tag repo:tag`): the tag is
    /// rewritten.
    #[test]
    fn an_in_place_tag_that_still_names_the_source_is_rewritten() {
        let Some((registry, http)) = registry_with_case(
            "an_in_place_tag_that_still_names_the_source_is_rewritten",
            "same",
            "v1",
        ) else {
            return;
        };
        let started_from = tagged(&http, "same", "v1");
        let client = client();
        let rt = runtime();
        let target = RegistryRef::parse(&format!("{}/same:v1", registry.host())).unwrap();
        let sink = RegistrySink::new(client.clone(), target.clone())
            .unwrap()
            .in_place();
        let report = rt
            .block_on(convert(
                &RegistrySource::new(client.clone(), target.clone()),
                sink,
                &convert_settings(),
            ))
            .unwrap();
        assert_ne!(report.image_index.digest, started_from);
        assert_eq!(tagged(&http, "same", "v1"), report.image_index.digest);

        // A sink told in place but never told where the conversion started refuses.
        let sink = RegistrySink::new(client.clone(), target)
            .unwrap()
            .in_place();
        let e = rt.block_on(sink.check_in_place_tag()).unwrap_err();
        assert!(
            format!("{e:#}").contains("is unknown; not tagging"),
            "{e:#}"
        );
    }
}
