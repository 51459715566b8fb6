//! The registry references and the converted image the cleanup tests share.

use super::plan::{Child, Key, Owned, Seen};
use crate::registry::RegistryRef;
use k8s_openapi::jiff::Timestamp;

pub(super) const REG: &str = "127.0.0.1:5000";

pub(super) fn r(s: &str) -> RegistryRef {
    RegistryRef::parse(&format!("{REG}/{s}")).unwrap()
}

pub(super) fn k(repo: &str, digest: &str) -> Key {
    (format!("{REG}/{repo}"), digest.to_string())
}

pub(super) fn entry(digest: &str) -> Child {
    Child {
        digest: digest.into(),
        soci_index: false,
        bound_to: None,
    }
}

pub(super) fn bound(digest: &str, soci: &str) -> Child {
    Child {
        bound_to: Some(soci.into()),
        ..entry(digest)
    }
}

pub(super) fn soci(digest: &str) -> Child {
    Child {
        soci_index: true,
        ..entry(digest)
    }
}

/// `app:v1` (source index `src` with manifest `m`) converted to `tag` as index `idx`: the
/// annotated manifest `am` bound to SOCI index `si`, which lists zTOCs `z1`, `z2`.
pub(super) fn converted(tag: &str, tag_points_at: Option<&str>) -> (Owned, Seen) {
    let owned = Owned {
        image_name: "app".into(),
        source: r("app:v1"),
        target: r(&format!("app:{tag}")),
        target_digest: "idx".into(),
        source_digest: Some("src".into()),
        soci_indexes: vec!["si".into()],
        in_place: tag == "v1",
    };
    let mut seen = Seen::default();
    seen.tags.insert(
        format!("{REG}/app:{tag}"),
        tag_points_at.map(str::to_string),
    );
    if tag != "v1" {
        seen.tags
            .insert(format!("{REG}/app:v1"), Some("src".to_string()));
    }
    seen.manifests
        .insert(k("app", "idx"), vec![bound("am", "si"), soci("si")]);
    seen.manifests
        .insert(k("app", "si"), vec![entry("z1"), entry("z2")]);
    seen.manifests.insert(k("app", "src"), vec![entry("m")]);
    seen.restorable.insert(k("app", "src"));
    seen.restorable.insert(k("app", "idx"));
    (owned, seen)
}

pub(super) fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}
