//! Names the controller derives: the worker Job's name, the key of a build, the target tag,
//! and the registry a build counts against. Deterministic, so a restarted controller finds its
//! Jobs again and one Job serves every SociIndex that wants the same bytes.

use super::plan::BuildSettings;
use crate::api::TargetSpec;
use crate::registry::RegistryRef;
use sha2::{Digest, Sha256};

pub const DEFAULT_TAG_SUFFIX: &str = "-soci";

/// The deterministic name of the Job that builds `source_digest` for one image of one object
/// with these settings: the same inputs never build twice, and a crashed controller finds its
/// Job again.
pub fn job_name(
    uid: &str,
    image_name: &str,
    source_digest: &str,
    target: &str,
    settings: &BuildSettings,
) -> String {
    let hex = short_hash(&[uid, image_name, source_digest, target], settings, 8);
    format!("soci-build-{hex}")
}

/// What a build produces, whoever asks for it: the same source digest into the same target tag
/// with the same settings gives the same bytes, so one Job serves every SociIndex that wants it.
pub fn build_key(source_digest: &str, target: &str, settings: &BuildSettings) -> String {
    short_hash(&[source_digest, target], settings, 12)
}

/// The first `bytes` bytes, in hex, of the sha256 of `parts` (each NUL-terminated) and
/// `settings`.
fn short_hash(parts: &[&str], settings: &BuildSettings, bytes: usize) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(format!("{settings:?}").as_bytes());
    h.finalize()
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The target tag reference for a source reference, per `spec.target`.
pub fn target_reference(
    source: &RegistryRef,
    target: Option<&TargetSpec>,
    image_name: &str,
) -> Result<RegistryRef, String> {
    let source_tag = source.tag.clone().unwrap_or_else(|| {
        // A digest-only source still gets a stable, readable tag.
        source
            .digest
            .as_deref()
            .unwrap_or("latest")
            .replace(':', "-")
    });
    let target = target.cloned().unwrap_or_default();
    let tag = if target.in_place == Some(true) {
        match &source.tag {
            Some(t) => t.clone(),
            None => return Err("target.inPlace needs a source tag, not only a digest".into()),
        }
    } else if let Some(template) = &target.tag_template {
        template
            .replace("{tag}", &source_tag)
            .replace("{name}", image_name)
    } else {
        format!(
            "{source_tag}{}",
            target.tag_suffix.as_deref().unwrap_or(DEFAULT_TAG_SUFFIX)
        )
    };
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'))
        });
    if !valid {
        return Err(format!("target tag {tag:?} is not a valid tag"));
    }
    if target.in_place != Some(true) && source.tag.as_deref() == Some(tag.as_str()) {
        return Err(format!(
            "target tag {tag:?} is the source tag: set target.inPlace to rewrite it"
        ));
    }
    Ok(source.with_reference(&tag))
}

/// The registry host a build request counts against (`--max-jobs-per-registry`).
pub fn registry_host(source: &str) -> String {
    RegistryRef::parse(source)
        .map(|r| r.registry)
        .unwrap_or_else(|_| source.split('/').next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IndexVersion;

    const UID: &str = "0b3c1f5e-uid";
    const DIGEST_A: &str = "sha256:aaaa";
    const DIGEST_B: &str = "sha256:bbbb";
    const TARGET: &str = "127.0.0.1:5000/app:v1-soci";

    #[test]
    fn job_names_are_deterministic_short_and_depend_on_every_input() {
        let settings = BuildSettings {
            platforms: vec![],
            min_layer_size: 10 << 20,
            span_size: 4 << 20,
            index_version: IndexVersion::V2,
        };
        let a = job_name(UID, "app", DIGEST_A, TARGET, &settings);
        assert_eq!(a, job_name(UID, "app", DIGEST_A, TARGET, &settings));
        assert!(a.len() <= 63 && a.starts_with("soci-build-"));
        let mut other = settings.clone();
        other.span_size += 1;
        for b in [
            job_name("other", "app", DIGEST_A, TARGET, &settings),
            job_name(UID, "web", DIGEST_A, TARGET, &settings),
            job_name(UID, "app", DIGEST_B, TARGET, &settings),
            job_name(UID, "app", DIGEST_A, "x/y:z", &settings),
            job_name(UID, "app", DIGEST_A, TARGET, &other),
        ] {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn target_tags_follow_the_spec_and_never_take_the_source_tag_unasked() {
        let src = RegistryRef::parse("127.0.0.1:5000/app:v1").unwrap();
        let tag = |t: Option<TargetSpec>| {
            target_reference(&src, t.as_ref(), "web").map(|r| r.to_string())
        };
        assert_eq!(tag(None).unwrap(), "127.0.0.1:5000/app:v1-soci");
        let suffix = TargetSpec {
            tag_suffix: Some(".lazy".into()),
            ..Default::default()
        };
        assert_eq!(tag(Some(suffix)).unwrap(), "127.0.0.1:5000/app:v1.lazy");
        let template = TargetSpec {
            tag_template: Some("{name}-{tag}-x".into()),
            ..Default::default()
        };
        assert_eq!(tag(Some(template)).unwrap(), "127.0.0.1:5000/app:web-v1-x");
        let in_place = TargetSpec {
            in_place: Some(true),
            ..Default::default()
        };
        assert_eq!(
            tag(Some(in_place.clone())).unwrap(),
            "127.0.0.1:5000/app:v1"
        );
        let same = TargetSpec {
            tag_template: Some("{tag}".into()),
            ..Default::default()
        };
        assert!(tag(Some(same)).unwrap_err().contains("inPlace"));
        let bad = TargetSpec {
            tag_template: Some("-{tag}".into()),
            ..Default::default()
        };
        assert!(tag(Some(bad)).is_err());

        let digest_only =
            RegistryRef::parse(&format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64))).unwrap();
        let r = target_reference(&digest_only, None, "web").unwrap();
        assert_eq!(
            r.tag.as_deref(),
            Some(format!("sha256-{}-soci", "a".repeat(64)).as_str())
        );
        assert!(target_reference(&digest_only, Some(&in_place), "web").is_err());
    }

    #[test]
    fn registry_hosts_come_from_the_source_reference() {
        assert_eq!(
            registry_host("127.0.0.1:5000/app@sha256:aa"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("ghcr.io/org/app:v1"), "ghcr.io");
    }
}
