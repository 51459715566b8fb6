//! The cleanup decision, pure: the targets the status records as ours and what the registry
//! holds now in; tag restores, manifest and blob deletions out.

use crate::api::{SociIndex, SociIndexStatus};
use crate::registry::RegistryRef;
use std::collections::{BTreeMap, BTreeSet};

/// `registry/repository`, and a digest in it.
pub(super) type Key = (String, String);

pub(super) fn repo_of(r: &RegistryRef) -> String {
    format!("{}/{}", r.registry, r.repository)
}

pub(super) fn key(r: &RegistryRef, digest: &str) -> Key {
    (repo_of(r), digest.to_string())
}

/// One image's target as the status records it: what we pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub image_name: String,
    /// The source as given in the spec (tag or digest reference).
    pub source: RegistryRef,
    /// The target tag reference.
    pub target: RegistryRef,
    pub target_digest: String,
    /// The digest we built from (for an in-place target: what the tag held before us).
    pub source_digest: Option<String>,
    pub soci_indexes: Vec<String>,
    /// The target is the source tag itself.
    pub in_place: bool,
}

/// The targets of `status` that we pushed; images without a recorded target digest (never
/// built, or unparseable references) have nothing of ours to remove.
pub fn owned_targets(status: Option<&SociIndexStatus>) -> Vec<Owned> {
    let Some(status) = status else {
        return vec![];
    };
    status
        .images
        .iter()
        .filter_map(|i| {
            let source = RegistryRef::parse(&i.image).ok()?;
            let target = RegistryRef::parse(i.target.as_deref()?).ok()?;
            target.tag.as_ref()?;
            let in_place = repo_of(&source) == repo_of(&target) && source.tag == target.tag;
            Some(Owned {
                image_name: i.name.clone(),
                source,
                target,
                target_digest: i.target_digest.clone()?,
                source_digest: i.source_digest.clone(),
                soci_indexes: i
                    .platforms
                    .iter()
                    .filter_map(|p| p.soci_index_digest.clone())
                    .collect(),
                in_place,
            })
        })
        .collect()
}

/// An entry of a manifest we read, as far as cleanup cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub digest: String,
    /// A SOCI index manifest (by its artifact type).
    pub soci_index: bool,
    /// An image manifest's `com.amazon.soci.index-digest` annotation.
    pub bound_to: Option<String>,
}

/// What the registry holds now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Tag reference (`registry/repo:tag`) → the digest it points at; `None`: no such tag.
    pub tags: BTreeMap<String, Option<String>>,
    /// Manifests read: an image index's entries, a SOCI index's zTOC blobs (an image
    /// manifest has none that cleanup could touch).
    pub manifests: BTreeMap<Key, Vec<Child>>,
    /// Source manifests that can be read again, to restore an in-place tag.
    pub restorable: BTreeSet<Key>,
    /// Repositories (`registry/repo`) with too many tags to check them all: nothing in them
    /// is deleted, since another tag might share it.
    pub unlisted: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Put the source manifest back under the tag (only while it still holds `replaces`).
    RestoreTag {
        tag: RegistryRef,
        source_digest: String,
        replaces: String,
    },
    /// Remove just the tag (OCI 1.1; not every registry can): its manifest is shared.
    DeleteTag {
        tag: RegistryRef,
    },
    DeleteManifest {
        repo: RegistryRef,
        digest: String,
    },
    DeleteBlob {
        repo: RegistryRef,
        digest: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanupPlan {
    /// In order: restores, image indexes, other manifests (parents before children), blobs.
    pub steps: Vec<Step>,
    /// What is left in place, and why.
    pub left: Vec<String>,
}

/// What other SociIndexes deploy (`status.images[].deploy`, `registry/repo:tag@digest`): a
/// cleanup never deletes it, nor untags or restores a tag that still holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protected {
    /// `(registry/repo, digest)`.
    pub(super) keys: BTreeSet<Key>,
    /// `registry/repo:tag` → the digests other objects deploy from it.
    tags: BTreeMap<String, BTreeSet<String>>,
    /// `registry/repo@digest` → who deploys it (`namespace/name`), for messages.
    by: BTreeMap<String, String>,
}

impl Protected {
    /// From `(namespace/name, deploy reference)` pairs; unparseable references are ignored.
    /// (The digest only decides what is kept: it never goes into a URL.)
    pub fn new<'a>(deploys: impl IntoIterator<Item = (String, &'a str)>) -> Self {
        let mut p = Self::default();
        for (object, deploy) in deploys {
            let Some((reference, digest)) = deploy.rsplit_once('@') else {
                continue;
            };
            let Ok(r) = RegistryRef::parse(reference) else {
                continue;
            };
            let digest = digest.to_string();
            p.keys.insert(key(&r, &digest));
            p.by.entry(format!("{}@{digest}", repo_of(&r)))
                .or_insert(object);
            if let Some(tag) = &r.tag {
                p.tags
                    .entry(format!("{}:{tag}", repo_of(&r)))
                    .or_default()
                    .insert(digest);
            }
        }
        p
    }

    /// The deploy references of every live object but `uid` (one being deleted too lets go of
    /// its own: two objects deleted together must not keep each other's content for ever).
    pub fn of_others<'a>(objects: impl IntoIterator<Item = &'a SociIndex>, uid: &str) -> Self {
        Self::new(
            objects
                .into_iter()
                .filter(|o| {
                    o.metadata.uid.as_deref() != Some(uid)
                        && o.metadata.deletion_timestamp.is_none()
                })
                .flat_map(|o| {
                    let who = format!(
                        "{}/{}",
                        o.metadata.namespace.as_deref().unwrap_or_default(),
                        o.metadata.name.as_deref().unwrap_or_default()
                    );
                    o.status
                        .iter()
                        .flat_map(|s| s.images.iter())
                        .filter_map(move |i| Some((who.clone(), i.deploy.as_deref()?)))
                }),
        )
    }

    fn deployer(&self, repo: &RegistryRef, digest: &str) -> Option<&str> {
        self.by
            .get(&format!("{}@{digest}", repo_of(repo)))
            .map(String::as_str)
    }
}

pub fn plan_cleanup(owned: &[Owned], seen: &Seen, protected: &Protected) -> CleanupPlan {
    let mut plan = CleanupPlan::default();
    // Digests tags point at once cleanup is done: they and what they reference stay.
    let mut remaining: Vec<Key> = Vec::new();
    let mut indexes: Vec<(RegistryRef, String)> = Vec::new();
    let mut manifests: Vec<(RegistryRef, String)> = Vec::new();
    let mut blobs: Vec<(RegistryRef, String)> = Vec::new();
    let tag_now = |r: &RegistryRef| seen.tags.get(&r.to_string()).cloned().flatten();
    // Owned target tags whose fate is decided here; every other tag stays.
    let mut handled: BTreeSet<String> = BTreeSet::new();
    let mut untag: Vec<(RegistryRef, String)> = Vec::new();

    for o in owned {
        handled.insert(o.target.to_string());
        let repo = o.target.with_reference(&o.target_digest);
        if let Some(s) = &o.source_digest {
            remaining.push(key(&o.source, s));
        }
        if !o.in_place
            && o.source.tag.is_some()
            && let Some(d) = tag_now(&o.source)
        {
            remaining.push(key(&o.source, &d));
        }
        match tag_now(&o.target) {
            Some(d)
                if d == o.target_digest
                    && protected
                        .tags
                        .get(&o.target.to_string())
                        .is_some_and(|ds| ds.contains(&d)) =>
            {
                plan.left.push(format!(
                    "{}: SociIndex {} deploys it too; the tag and its content stay",
                    o.target,
                    protected.deployer(&o.target, &d).unwrap_or("another")
                ));
                remaining.push(key(&o.target, &d));
            }
            Some(d) if d == o.target_digest => {
                if !o.in_place {
                    untag.push((o.target.clone(), d.clone()));
                }
                if o.in_place {
                    match &o.source_digest {
                        Some(s)
                            if *s != o.target_digest
                                && seen.restorable.contains(&key(&o.source, s)) =>
                        {
                            plan.steps.push(Step::RestoreTag {
                                tag: o.target.clone(),
                                source_digest: s.clone(),
                                replaces: d,
                            });
                        }
                        _ => {
                            plan.left.push(format!(
                                "{}: the original image is not recorded or no longer in the registry, so the tag keeps the SOCI-enabled image",
                                o.target
                            ));
                            remaining.push(key(&o.target, &d));
                        }
                    }
                }
            }
            Some(other) => {
                plan.left.push(format!(
                    "{}: the tag was pushed again since (it holds {other}, not our {}); left as it is",
                    o.target, o.target_digest
                ));
                remaining.push(key(&o.target, &other));
            }
            None => {}
        }
        indexes.push((repo.clone(), o.target_digest.clone()));
        let entries = seen
            .manifests
            .get(&key(&o.target, &o.target_digest))
            .cloned()
            .unwrap_or_default();
        // The image manifests our build annotated with one of our SOCI indexes.
        for e in &entries {
            if e.bound_to
                .as_ref()
                .is_some_and(|b| o.soci_indexes.contains(b))
            {
                manifests.push((repo.clone(), e.digest.clone()));
            }
        }
        for soci in &o.soci_indexes {
            manifests.push((repo.clone(), soci.clone()));
            for z in seen
                .manifests
                .get(&key(&o.target, soci))
                .into_iter()
                .flatten()
            {
                blobs.push((repo.clone(), z.digest.clone()));
            }
        }
    }

    for (tag, digest) in &seen.tags {
        if let (false, Some(d), Ok(r)) = (
            handled.contains(tag),
            digest.as_ref(),
            RegistryRef::parse(tag),
        ) {
            remaining.push(key(&r, d));
        }
    }

    // What other objects deploy stays, with all it references, whichever tag points at it.
    remaining.extend(protected.keys.iter().cloned());

    let mut keep: BTreeSet<Key> = BTreeSet::new();
    for root in &remaining {
        keep.insert(root.clone());
        for child in seen.manifests.get(root).into_iter().flatten() {
            let child_key = (root.0.clone(), child.digest.clone());
            keep.insert(child_key.clone());
            let mut socis = vec![];
            if child.soci_index {
                socis.push(child_key);
            }
            if let Some(b) = &child.bound_to {
                socis.push((root.0.clone(), b.clone()));
            }
            for s in socis {
                keep.insert(s.clone());
                for z in seen.manifests.get(&s).into_iter().flatten() {
                    keep.insert((s.0.clone(), z.digest.clone()));
                }
            }
        }
    }

    // A tag whose manifest another tag also names: deleting the manifest would drop both.
    for (tag, digest) in &untag {
        if keep.contains(&key(tag, digest)) {
            plan.steps.push(Step::DeleteTag { tag: tag.clone() });
        }
    }
    let mut done: BTreeSet<Key> = BTreeSet::new();
    let mut kept = 0;
    let mut push = |plan: &mut CleanupPlan, repo: &RegistryRef, digest: &str, blob: bool| {
        let k = key(repo, digest);
        if seen.unlisted.contains(&k.0) {
            if done.insert(k) {
                kept += 1;
            }
            return;
        }
        if keep.contains(&k) {
            if done.insert(k) {
                kept += 1;
            }
            return;
        }
        if !done.insert(k) {
            return;
        }
        let repo = repo.clone();
        let digest = digest.to_string();
        plan.steps.push(if blob {
            Step::DeleteBlob { repo, digest }
        } else {
            Step::DeleteManifest { repo, digest }
        });
    };
    for (repo, d) in &indexes {
        push(&mut plan, repo, d, false);
    }
    for (repo, d) in &manifests {
        push(&mut plan, repo, d, false);
    }
    for (repo, d) in &blobs {
        push(&mut plan, repo, d, true);
    }
    if kept > 0 {
        plan.left.push(format!(
            "{kept} manifests and blobs kept: another tag (or the source) still references them"
        ));
    }
    for repo in &seen.unlisted {
        plan.left.push(format!(
            "{repo}: too many tags to check which share our content; nothing deleted there"
        ));
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
