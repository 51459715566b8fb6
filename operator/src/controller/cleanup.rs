//! `deletionPolicy: Delete`: the `soci.dev/cleanup` finalizer and what it removes. The decision
//! ([`plan_cleanup`]) is pure: the targets the status records as ours and what the registry
//! holds now in; tag restores, manifest and blob deletions out. [`observe`] and [`execute`] are
//! the registry I/O around it, [`on_delete`] and [`sync_finalizer`] the controller's side.
//!
//! Only what the status records is deleted: the target image index (by digest), the SOCI index
//! manifests of `status.images[].platforms`, the image manifests the index bound to them, and
//! the zTOC blobs those SOCI indexes list. Whatever a tag still points at afterwards (the
//! source, a tag someone re-pushed, a target that could not be restored) is kept, with all it
//! references.

use super::Context;
use super::durations::{backoff, rfc3339};
use super::events::{EventAction, publish};
use super::plan::{Failure, FailureClass};
use super::slots::controlled_by;
use super::worker::OWNER_UID_LABEL;
use crate::api::condition::{self, RECONCILING, STALLED};
use crate::api::{
    Condition, ConditionStatus, DeletionPolicy, SociIndex, SociIndexSpec, SociIndexStatus,
};
use crate::reason::failure_of;
use crate::registry::error::PermanentCause;
use crate::registry::{RegistryClient, RegistryError, RegistryRef};
use anyhow::Context as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use soci_format::oci::{self, Index, Manifest};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

pub const CLEANUP_FINALIZER: &str = "soci.dev/cleanup";
/// How often a deleted object waits for its build Jobs to go before cleaning up.
const JOB_WAIT: Duration = Duration::from_secs(5);
/// Tags of a target repository looked at, at most, to find content other tags share.
const MAX_TAGS_CHECKED: usize = 2000;

/// `registry/repository`, and a digest in it.
type Key = (String, String);

fn repo_of(r: &RegistryRef) -> String {
    format!("{}/{}", r.registry, r.repository)
}

fn key(r: &RegistryRef, digest: &str) -> Key {
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
    keys: BTreeSet<Key>,
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

/// Reads what [`plan_cleanup`] needs: the tags, the manifests we pushed, and those the tags
/// that stay point at (with their SOCI indexes).
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

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Done {
    pub deleted: usize,
    pub already_gone: usize,
    pub restored: Vec<String>,
    pub left: Vec<String>,
}

pub async fn execute(client: &RegistryClient, plan: &CleanupPlan) -> anyhow::Result<Done> {
    let mut done = Done {
        left: plan.left.clone(),
        ..Default::default()
    };
    for step in &plan.steps {
        match step {
            Step::RestoreTag {
                tag,
                source_digest,
                replaces,
            } => {
                let name = tag.tag.clone().unwrap_or_default();
                // Checked again right before the write: a push since observing wins.
                let now = client.get_manifest(tag, &name).await?.map(|m| m.digest);
                if now.as_deref() != Some(replaces.as_str()) {
                    done.left
                        .push(format!("{tag}: moved while cleaning up; left as it is"));
                    continue;
                }
                let Some(source) = client.get_manifest(tag, source_digest).await? else {
                    done.left
                        .push(format!("{tag}: {source_digest} is gone; not restored"));
                    continue;
                };
                client
                    .put_manifest(tag, &name, &source.media_type, source.bytes.into())
                    .await?;
                done.restored.push(format!("{tag} → {source_digest}"));
            }
            Step::DeleteTag { tag } => {
                let name = tag.tag.clone().unwrap_or_default();
                match client.delete_manifest(tag, &name).await {
                    Ok(_) => done.deleted += 1,
                    Err(e) if e.is_transient() => return Err(e.into()),
                    // Registries before OCI 1.1 (distribution 2.x) delete only by digest.
                    Err(e) => done.left.push(format!(
                        "{tag}: shares its manifest with another tag and the registry cannot remove a tag alone ({e}); left"
                    )),
                }
            }
            Step::DeleteManifest { repo, digest } => {
                if client.delete_manifest(repo, digest).await? {
                    done.deleted += 1;
                } else {
                    done.already_gone += 1;
                }
            }
            Step::DeleteBlob { repo, digest } => {
                if client.delete_blob(repo, digest).await? {
                    done.deleted += 1;
                } else {
                    done.already_gone += 1;
                }
            }
        }
    }
    Ok(done)
}

/// Observe, plan and execute for one object's status, keeping what others deploy.
pub async fn clean_up(
    client: &RegistryClient,
    status: Option<&SociIndexStatus>,
    protected: &Protected,
) -> anyhow::Result<Done> {
    let owned = owned_targets(status);
    let seen = observe(client, &owned, protected).await?;
    let plan = plan_cleanup(&owned, &seen, protected);
    execute(client, &plan).await
}

/// Retrying does not help: the registry refuses deletes, or our credentials may not delete.
pub fn is_refusal(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|c| c.downcast_ref::<RegistryError>())
        .any(|e| {
            matches!(
                e.permanent_cause,
                Some(PermanentCause::Unsupported | PermanentCause::Unauthorized)
            )
        })
}

pub fn wants_finalizer(spec: &SociIndexSpec) -> bool {
    spec.deletion_policy == Some(DeletionPolicy::Delete)
}

/// Adds the finalizer while the policy is `Delete`, removes it (deleting nothing) otherwise.
pub async fn sync_finalizer(object: &SociIndex, ctx: &Context) -> anyhow::Result<()> {
    let has = object.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
    let wants = wants_finalizer(&object.spec);
    if has == wants {
        return Ok(());
    }
    set_finalizer(object, ctx, wants).await
}

async fn set_finalizer(object: &SociIndex, ctx: &Context, present: bool) -> anyhow::Result<()> {
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(CLEANUP_FINALIZER.to_string());
    }
    // The resourceVersion makes this a compare-and-swap: others' finalizers are never lost.
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing holds it any more.
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(()),
        Err(e) => Err(e).context(if present {
            "adding the cleanup finalizer"
        } else {
            "removing the cleanup finalizer"
        }),
    }
}

/// Transient cleanup failures in a row, per object uid (for the backoff).
static FAILURES: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);

/// The deletion branch of reconcile: with our finalizer and the `Delete` policy, stop the
/// builds, remove what we pushed, then release the object.
/// The status while a cleanup is retried: `Reconciling` says why the object stays (what users
/// and kstatus read besides the Events); the images stay as they are, still deployable.
pub fn retrying_status(
    status: Option<&SociIndexStatus>,
    generation: Option<i64>,
    note: &str,
    now: Timestamp,
) -> SociIndexStatus {
    let mut next = status.cloned().unwrap_or_default();
    let mut wanted: Vec<Condition> = next
        .conditions
        .iter()
        .filter(|c| c.type_ != RECONCILING && c.type_ != STALLED)
        .cloned()
        .collect();
    let mut message = note.to_string();
    condition::truncate(&mut message, 1024);
    wanted.push(Condition::new(
        RECONCILING,
        ConditionStatus::True,
        CLEANUP_RETRYING,
        message,
    ));
    // Same text as before for the same failure: a retry that fails alike writes nothing.
    if let Some(previous) = condition::find(&next.conditions, RECONCILING)
        && previous.reason == CLEANUP_RETRYING
        && strip_wait(&previous.message) == strip_wait(note)
    {
        return next;
    }
    next.conditions = condition::merge(&next.conditions, wanted, generation, &rfc3339(now));
    next
}

pub const CLEANUP_RETRYING: &str = "CleanupRetrying";

/// The note without its "retrying in Ns" part, which grows with the backoff.
fn strip_wait(note: &str) -> &str {
    note.split("; retrying in ").next().unwrap_or(note)
}

/// Why a cleanup attempt failed.
#[derive(Debug)]
pub enum CleanupError {
    /// The registry: unreachable, erroring, refusing.
    Registry(anyhow::Error),
    /// The object's Secrets could not be read or used.
    Credentials(Failure),
}

impl CleanupError {
    fn class(&self) -> FailureClass {
        match self {
            Self::Registry(e) => failure_of(e).class,
            Self::Credentials(f) => f.class,
        }
    }
}

impl std::fmt::Display for CleanupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry(e) => write!(f, "{e:#}"),
            Self::Credentials(failure) => f.write_str(&failure.message),
        }
    }
}

/// What follows a failed cleanup attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// Try again after this long (never past the timeout).
    Retry(Duration),
    /// Release the finalizer; what was pushed stays (a Warning Event lists it).
    GiveUp { reason: &'static str, why: String },
}

pub const CLEANUP_FAILED: &str = "CleanupFailed";
pub const CLEANUP_TIMED_OUT: &str = "CleanupTimedOut";

/// The decision after a failed attempt, from the deletion timestamp, the time, the error and
/// how many attempts failed in a row: a permanent failure gives up at once; a transient one is
/// retried with backoff until `timeout` after the deletion, then given up, so that the object
/// (and its namespace) can always go.
pub fn after_failure(
    deleted_at: Option<Timestamp>,
    now: Timestamp,
    error: &CleanupError,
    failures: u32,
    timeout: Duration,
) -> AfterFailure {
    if error.class() == FailureClass::Permanent {
        let why = match error {
            CleanupError::Registry(e) if is_refusal(e) => "the registry refuses the deletes",
            CleanupError::Credentials(_) => "the object's registry credentials are unusable",
            CleanupError::Registry(_) => "cleanup failed permanently",
        };
        return AfterFailure::GiveUp {
            reason: CLEANUP_FAILED,
            why: format!("{why}: {error}"),
        };
    }
    // A deletion timestamp in our future (clock skew) counts as now.
    let elapsed = deleted_at
        .map(|t| now.duration_since(t))
        .filter(|d| d.is_positive())
        .map(|d| d.unsigned_abs())
        .unwrap_or_default();
    if elapsed >= timeout {
        return AfterFailure::GiveUp {
            reason: CLEANUP_TIMED_OUT,
            why: format!(
                "still failing {}s after the deletion (--cleanup-timeout {}s): {error}",
                elapsed.as_secs(),
                timeout.as_secs()
            ),
        };
    }
    AfterFailure::Retry(
        backoff(failures)
            .min(timeout - elapsed)
            .max(Duration::from_secs(1)),
    )
}

/// What a cleanup that gave up leaves in the registry (what the status records as pushed), for
/// its Event.
pub fn left_behind(owned: &[Owned]) -> String {
    if owned.is_empty() {
        return "nothing was recorded as pushed".into();
    }
    let items: Vec<String> = owned
        .iter()
        .map(|o| {
            format!(
                "{}@{} ({} SOCI index{})",
                o.target,
                o.target_digest,
                o.soci_indexes.len(),
                if o.soci_indexes.len() == 1 { "" } else { "es" }
            )
        })
        .collect();
    items.join(", ")
}

pub async fn on_delete(object: &SociIndex, ctx: &Context) -> anyhow::Result<Action> {
    if !object.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(Action::await_change());
    }
    if !wants_finalizer(&object.spec) {
        set_finalizer(object, ctx, false).await?;
        return Ok(Action::await_change());
    }
    let namespace = object.namespace().unwrap_or_default();
    let uid = object.uid().unwrap_or_default();
    // A build still running could push after the cleanup: its Job (and Pods) go first. The
    // label lists them; the ownerReference says they are this object's.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = jobs
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .context("listing worker Jobs")?;
    let owned_jobs: Vec<&Job> = listed
        .items
        .iter()
        .filter(|j| controlled_by(j, &uid))
        .collect();
    if !owned_jobs.is_empty() {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        };
        for job in owned_jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
        {
            match jobs.delete(&job.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).context("deleting a worker Job"),
            }
        }
        return Ok(Action::requeue(JOB_WAIT));
    }

    let name = object.name_any();
    // The object's own Secrets, else anonymous: never the operator's credentials.
    let protected = Protected::of_others(ctx.jobs.indexes().iter().map(|o| o.as_ref()), &uid);
    let result = match super::credentials::cleanup_registry(
        &ctx.client,
        &ctx.registry,
        &ctx.credentials,
        &namespace,
        object.spec.credentials.as_ref(),
    )
    .await
    {
        Ok(registry) => clean_up(&registry, object.status.as_ref(), &protected)
            .await
            .map_err(CleanupError::Registry),
        Err(f) => Err(CleanupError::Credentials(f)),
    };
    let error = match result {
        Ok(done) => {
            crate::locks::lock(&FAILURES).remove(&uid);
            let mut note = format!(
                "deletionPolicy Delete: removed {} manifests and blobs ({} already gone)",
                done.deleted, done.already_gone
            );
            if !done.restored.is_empty() {
                note.push_str(&format!("; restored {}", done.restored.join(", ")));
            }
            if !done.left.is_empty() {
                note.push_str(&format!("; left: {}", done.left.join("; ")));
            }
            tracing::info!(%namespace, %name, "{note}");
            publish(ctx, object, false, EventAction::Delete, "CleanedUp", note).await;
            set_finalizer(object, ctx, false).await?;
            return Ok(Action::await_change());
        }
        Err(e) => e,
    };
    let failures = {
        let mut map = crate::locks::lock(&FAILURES);
        let n = map.entry(uid.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let deleted_at = object.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    match after_failure(
        deleted_at,
        Timestamp::now(),
        &error,
        failures,
        ctx.cleanup_timeout,
    ) {
        AfterFailure::Retry(wait) => {
            let note = format!(
                "removing what was pushed failed: {error}; retrying in {}s (the object stays until it succeeds, at most --cleanup-timeout {}s after its deletion)",
                wait.as_secs(),
                ctx.cleanup_timeout.as_secs()
            );
            tracing::warn!(%namespace, %name, "{note}");
            publish(
                ctx,
                object,
                true,
                EventAction::Delete,
                CLEANUP_RETRYING,
                note.clone(),
            )
            .await;
            let status = retrying_status(
                object.status.as_ref(),
                object.metadata.generation,
                &note,
                Timestamp::now(),
            );
            let api: Api<SociIndex> = Api::namespaced(ctx.client.clone(), &namespace);
            if object.status.as_ref() != Some(&status) {
                super::status::write(&api, &name, &status).await?;
            }
            Ok(Action::requeue(wait))
        }
        AfterFailure::GiveUp { reason, why } => {
            // Holding the object longer helps nobody: say what stays, and let it go.
            crate::locks::lock(&FAILURES).remove(&uid);
            let note = format!(
                "{why}; the finalizer is released, and this stays in the registry: {}",
                left_behind(&owned_targets(object.status.as_ref()))
            );
            tracing::warn!(%namespace, %name, "{note}");
            publish(ctx, object, true, EventAction::Delete, reason, note).await;
            set_finalizer(object, ctx, false).await?;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
#[path = "cleanup_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cleanup_registry_tests.rs"]
pub(crate) mod registry_tests;
