//! The target of a standalone conversion, from an OCI layout's `index.json`.

use super::blobs::{Blobs, json_error};
use super::{BlobSource, ConvertError};
use crate::oci::{self, Descriptor, Index};
use std::cell::RefCell;
use std::collections::HashMap;

/// The image `soci convert --standalone` converts in an OCI layout, from its `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRoot {
    pub target: Descriptor,
    /// A manifest list upstream writes into the layout when it has to narrow the list to the
    /// entries whose blobs exist (it ends up in upstream's output layout, unreferenced by the
    /// converted image unless it is the target).
    pub synthesized: Option<(Descriptor, Vec<u8>)>,
}

/// Upstream `resolveLayoutRoot` (cmd/soci/commands/internal/standalone.go), the target of a
/// standalone conversion:
/// * one `index.json` entry that is not an index → that entry;
/// * otherwise the list (the one index entry's blob, or `index.json` itself when it has several
///   entries) narrowed to the entries whose blobs exist: none → error; exactly one and it is a
///   manifest → that manifest (a multi-platform image with one platform present is converted
///   as a single-platform image); all of them and `index.json` had one entry → that entry;
///   else a new list (`json.Marshal` of the list with only the present entries, media type of
///   the original) — `synthesized`.
pub fn standalone_layout_root(
    index_json: &[u8],
    source: &dyn BlobSource,
) -> Result<LayoutRoot, ConvertError> {
    let layout = Descriptor::new(
        oci::MEDIA_TYPE_OCI_INDEX,
        "index.json",
        index_json.len() as i64,
    );
    let top = Index::from_json(index_json).map_err(|e| json_error(&layout, e))?;
    let top_entries = top.manifests.clone().unwrap_or_default();
    let Some(first) = top_entries.first() else {
        return Err(ConvertError::InvalidContent(
            "index.json contains no manifests".into(),
        ));
    };
    if top_entries.len() == 1 && !oci::is_index_type(&first.media_type) {
        return Ok(LayoutRoot {
            target: first.clone(),
            synthesized: None,
        });
    }
    let blobs = Blobs {
        source,
        cache: RefCell::new(HashMap::new()),
    };
    let (mut list, mut media_type) = (top.clone(), top.media_type.clone());
    if top_entries.len() == 1 {
        media_type = first.media_type.clone();
        let bytes = blobs.read(first)?;
        list = Index::from_json(&bytes).map_err(|e| json_error(first, e))?;
    }
    if media_type.is_empty() {
        media_type = oci::MEDIA_TYPE_OCI_INDEX.into();
    }
    let entries = list.manifests.clone().unwrap_or_default();
    let mut available = Vec::new();
    for d in &entries {
        match blobs.read(d) {
            Ok(_) => available.push(d.clone()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if available.is_empty() {
        return Err(ConvertError::InvalidContent(
            "manifest list contains no entries with available blobs".into(),
        ));
    }
    if available.len() == 1 && oci::is_manifest_type(&available[0].media_type) {
        return Ok(LayoutRoot {
            target: available.swap_remove(0),
            synthesized: None,
        });
    }
    if top_entries.len() == 1 && available.len() == entries.len() {
        return Ok(LayoutRoot {
            target: first.clone(),
            synthesized: None,
        });
    }
    list.media_type.clone_from(&media_type);
    list.manifests = Some(available);
    let bytes = list.to_go_json();
    let target = Descriptor::new(&media_type, &oci::sha256_digest(&bytes), bytes.len() as i64);
    Ok(LayoutRoot {
        target: target.clone(),
        synthesized: Some((target, bytes)),
    })
}
