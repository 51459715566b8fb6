//! What the registry holds now, as far as [`plan_cleanup`](super::plan_cleanup) needs it: the
//! tags, the manifests we pushed, and those the tags that stay point at.

use super::plan::{Child, Owned, Protected, Seen, key, repo_of};
use crate::registry::{RegistryClient, RegistryRef};
use soci_format::oci::{self, Index, Manifest};
use std::collections::BTreeMap;

/// Tags of a target repository looked at, at most, to find content other tags share.
const MAX_TAGS_CHECKED: usize = 2000;

fn children_of(bytes: &[u8], media_type: &str) -> Vec<Child> {
    if oci::is_index_type(media_type) {
        let Ok(index) = Index::from_json(bytes) else {
            return vec![];
        };
        return index
            .manifests
            .unwrap_or_default()
            .into_iter()
            .map(|d| Child {
                soci_index: d.artifact_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V2,
                bound_to: d
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(oci::ANNOTATION_SOCI_INDEX_DIGEST).cloned()),
                digest: d.digest,
            })
            .collect();
    }
    // A SOCI index manifest: its layers are the zTOCs.
    match Manifest::from_json(bytes) {
        Ok(m)
            if m.config.media_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V2
                || m.config.media_type == oci::SOCI_INDEX_ARTIFACT_TYPE_V1 =>
        {
            m.layers
                .unwrap_or_default()
                .into_iter()
                .map(|d| Child {
                    digest: d.digest,
                    soci_index: false,
                    bound_to: None,
                })
                .collect()
        }
        _ => vec![],
    }
}

/// Reads what [`plan_cleanup`](super::plan_cleanup) needs: the tags, the manifests we pushed, and
/// those the tags that stay point at (with their SOCI indexes).
pub async fn observe(
    client: &RegistryClient,
    owned: &[Owned],
    protected: &Protected,
) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut roots: Vec<(RegistryRef, String)> = Vec::new();
    for o in owned {
        let mut tags = vec![o.target.clone()];
        if !o.in_place && o.source.tag.is_some() {
            tags.push(o.source.clone());
        }
        for t in tags {
            if seen.tags.contains_key(&t.to_string()) {
                continue;
            }
            let tag = t.tag.clone().unwrap_or_default();
            let digest = client.get_manifest(&t, &tag).await?.map(|m| m.digest);
            if let Some(d) = &digest {
                roots.push((t.clone(), d.clone()));
            }
            seen.tags.insert(t.to_string(), digest);
        }
        roots.push((o.target.clone(), o.target_digest.clone()));
        for s in &o.soci_indexes {
            roots.push((o.target.clone(), s.clone()));
        }
        if let Some(s) = &o.source_digest {
            roots.push((o.source.clone(), s.clone()));
        }
    }
    // Every other tag of the target repositories: what they reference must stay.
    let repos: BTreeMap<String, RegistryRef> = owned
        .iter()
        .map(|o| (repo_of(&o.target), o.target.clone()))
        .collect();
    for (name, repo) in &repos {
        let Some(tags) = client.list_tags(repo, MAX_TAGS_CHECKED).await? else {
            seen.unlisted.insert(name.clone());
            continue;
        };
        for tag in tags {
            let t = repo.with_reference(&tag);
            if seen.tags.contains_key(&t.to_string()) {
                continue;
            }
            let digest = client.get_manifest(&t, &tag).await?.map(|m| m.digest);
            if let Some(d) = &digest {
                roots.push((t.clone(), d.clone()));
            }
            seen.tags.insert(t.to_string(), digest);
        }
    }
    // What other objects deploy from our target repositories: read, so that what it
    // references is known and kept.
    for (repo_name, digest) in &protected.keys {
        if let Some(repo) = repos.get(repo_name) {
            roots.push((repo.clone(), digest.clone()));
        }
    }
    let mut queue = roots;
    while let Some((repo, digest)) = queue.pop() {
        let k = key(&repo, &digest);
        if seen.manifests.contains_key(&k) {
            continue;
        }
        let Some(found) = client.get_manifest(&repo, &digest).await? else {
            seen.manifests.insert(k, vec![]);
            continue;
        };
        seen.restorable.insert(k.clone());
        let children = children_of(&found.bytes, &found.media_type);
        // SOCI indexes are read too, for their zTOC lists (one level; nothing deeper matters).
        for c in &children {
            if c.soci_index {
                queue.push((repo.clone(), c.digest.clone()));
            }
            if let Some(b) = &c.bound_to {
                queue.push((repo.clone(), b.clone()));
            }
        }
        seen.manifests.insert(k, children);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cleanup::test_support::{bound, entry, soci};

    #[test]
    fn children_are_read_from_indexes_and_soci_indexes() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
        {{"mediaType":"{m}","digest":"sha256:am","size":1,"annotations":{{"{a}":"sha256:si"}}}},
        {{"mediaType":"{m}","digest":"sha256:si","size":1,"artifactType":"{t}"}}]}}"#,
            oci::MEDIA_TYPE_OCI_INDEX,
            m = oci::MEDIA_TYPE_OCI_MANIFEST,
            a = oci::ANNOTATION_SOCI_INDEX_DIGEST,
            t = oci::SOCI_INDEX_ARTIFACT_TYPE_V2,
        );
        let children = children_of(index.as_bytes(), oci::MEDIA_TYPE_OCI_INDEX);
        assert_eq!(
            children,
            [bound("sha256:am", "sha256:si"), soci("sha256:si")]
        );
        let soci_manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{m}","config":{{"mediaType":"{t}","digest":"sha256:e","size":2}},
        "layers":[{{"mediaType":"{z}","digest":"sha256:z1","size":9}}]}}"#,
            m = oci::MEDIA_TYPE_OCI_MANIFEST,
            t = oci::SOCI_INDEX_ARTIFACT_TYPE_V2,
            z = oci::SOCI_ZTOC_MEDIA_TYPE,
        );
        assert_eq!(
            children_of(soci_manifest.as_bytes(), oci::MEDIA_TYPE_OCI_MANIFEST),
            [entry("sha256:z1")]
        );
        // An ordinary image manifest: its layers are never ours to delete.
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{m}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":2}},
        "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l","size":9}}]}}"#,
            m = oci::MEDIA_TYPE_OCI_MANIFEST,
        );
        assert!(children_of(image.as_bytes(), oci::MEDIA_TYPE_OCI_MANIFEST).is_empty());
    }
}
