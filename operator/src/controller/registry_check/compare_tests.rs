//! The comparison of a source and a target report: every difference makes a target not bound.

use super::*;
use crate::inspect_report::LayerStatus;

fn layer(digest: &str, status: &'static str) -> LayerStatus {
    LayerStatus {
        digest: digest.into(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        size: 1,
        status,
        ztoc: None,
    }
}

fn report(image: &str, platforms: Vec<(&str, &str, Vec<LayerStatus>)>) -> ImageReport {
    ImageReport {
        image: image.into(),
        digest: format!("sha256:{image}"),
        media_type: String::new(),
        platforms: platforms
            .into_iter()
            .map(|(platform, binding, layers)| PlatformReport {
                platform: platform.into(),
                manifest: String::new(),
                config: "sha256:cfg".into(),
                binding: binding.into(),
                soci_index: Some("sha256:idx".into()),
                problem: None,
                layers_indexed: 0,
                bytes_indexed_percent: 50.0,
                layers,
            })
            .collect(),
        notes: vec![],
    }
}

#[test]
fn a_bound_target_with_the_same_layers_is_bound() {
    let source = report(
        "src",
        vec![(
            "(from config)",
            "none",
            vec![layer("a", "not-indexed"), layer("b", "too-small")],
        )],
    );
    let target = report(
        "tgt",
        vec![(
            "linux/amd64",
            "v2",
            vec![layer("a", "indexed"), layer("b", "too-small")],
        )],
    );
    match compare(&source, &target, &[], "sha256:src", "v2") {
        TargetCheck::Bound { digest, platforms } => {
            assert_eq!(digest, "sha256:tgt");
            assert_eq!(platforms[0].layers_indexed, 1);
            assert_eq!(platforms[0].layers_too_small, 1);
            assert_eq!(platforms[0].bytes_indexed_percent, "50.0");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn moved_source_unbound_and_damaged_targets_are_not_bound() {
    let source = report(
        "src",
        vec![("linux/amd64", "none", vec![layer("new", "not-indexed")])],
    );
    let old = report(
        "tgt",
        vec![("linux/amd64", "v2", vec![layer("old", "indexed")])],
    );
    assert!(matches!(
        compare(&source, &old, &[], "d", "v2"),
        TargetCheck::NotBound { .. }
    ));
    let unbound = report(
        "tgt",
        vec![("linux/amd64", "none", vec![layer("new", "not-indexed")])],
    );
    assert!(matches!(
        compare(&source, &unbound, &[], "d", "v2"),
        TargetCheck::NotBound { .. }
    ));
    let damaged = report(
        "tgt",
        vec![("linux/amd64", "v2", vec![layer("new", "missing-ztoc")])],
    );
    match compare(&source, &damaged, &[], "d", "v2") {
        TargetCheck::NotBound { message } => assert!(message.contains("zTOC")),
        other => panic!("{other:?}"),
    }
}

/// "Verified" means the target is the source's image: each difference below, alone, makes
/// an otherwise bound target not bound.
#[test]
fn every_difference_from_the_source_makes_a_target_not_bound() {
    let source = report(
        "src",
        vec![(
            "linux/amd64",
            "none",
            vec![layer("a", "not-indexed"), layer("b", "not-indexed")],
        )],
    );
    let good = || {
        report(
            "tgt",
            vec![(
                "linux/amd64",
                "v2",
                vec![layer("a", "indexed"), layer("b", "indexed")],
            )],
        )
    };
    assert!(matches!(
        compare(&source, &good(), &[], "d", "v2"),
        TargetCheck::Bound { .. }
    ));
    type Edit = fn(&mut PlatformReport);
    let cases: [(&str, Edit, &str); 9] = [
        (
            "config digest",
            |t| t.config = "sha256:other".into(),
            "has the layer digests of platform linux/amd64 of source d, but its config is sha256:other, not the source's sha256:cfg",
        ),
        (
            "layer size",
            |t| t.layers[1].size = 2,
            "but layer 1 (b) is declared with 2 bytes, not the source's 1",
        ),
        (
            "layer media type",
            |t| t.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            "but layer 0 (a) has media type \"application/vnd.oci.image.layer.v1.tar+zstd\", not the source's \"application/vnd.oci.image.layer.v1.tar+gzip\"",
        ),
        (
            "layer digest",
            |t| t.layers[1].digest = "c".into(),
            "has no image manifest for platform linux/amd64 of source d",
        ),
        (
            "layer order",
            |t| t.layers.swap(0, 1),
            "has no image manifest for platform",
        ),
        (
            "an extra layer",
            |t| t.layers.push(layer("c", "indexed")),
            "has no image manifest for platform",
        ),
        (
            "a missing layer",
            |t| drop(t.layers.pop()),
            "has no image manifest for platform",
        ),
        (
            "binding",
            |t| t.binding = "none".into(),
            "is not bound to a SOCI index v2",
        ),
        (
            "missing zTOC",
            |t| t.layers[0].status = "missing-ztoc",
            "the zTOC of layer a is missing",
        ),
    ];
    for (what, edit, want) in cases {
        let mut target = good();
        edit(&mut target.platforms[0]);
        match compare(&source, &target, &[], "d", "v2") {
            TargetCheck::NotBound { message } => {
                assert!(message.contains(want), "{what}: {message}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// Two target platforms with the source's layer digests: the one with the source's config
/// is the match, whichever comes first.
#[test]
fn the_target_platform_with_the_sources_config_is_chosen() {
    let source = report(
        "src",
        vec![("linux/amd64", "none", vec![layer("a", "not-indexed")])],
    );
    let mut target = report(
        "tgt",
        vec![
            ("linux/amd64/v2", "v2", vec![layer("a", "indexed")]),
            ("linux/amd64", "v2", vec![layer("a", "indexed")]),
        ],
    );
    target.platforms[0].config = "sha256:other".into();
    match compare(&source, &target, &[], "d", "v2") {
        TargetCheck::Bound { platforms, .. } => {
            assert_eq!(platforms[0].platform, "linux/amd64")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_binding_must_be_the_kind_the_spec_asks_for() {
    let source = report(
        "src",
        vec![("linux/amd64", "none", vec![layer("a", "not-indexed")])],
    );
    let v1 = report(
        "src",
        vec![("linux/amd64", "v1", vec![layer("a", "indexed")])],
    );
    assert!(matches!(
        compare(&source, &v1, &[], "d", "v1"),
        TargetCheck::Bound { .. }
    ));
    match compare(&source, &v1, &[], "d", "v2") {
        TargetCheck::NotBound { message } => assert!(message.contains("v2"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_selected_platforms_must_be_bound() {
    let source = report(
        "src",
        vec![
            ("linux/amd64", "none", vec![layer("a", "not-indexed")]),
            ("linux/arm64", "none", vec![layer("b", "not-indexed")]),
        ],
    );
    let target = report(
        "tgt",
        vec![("linux/amd64", "v2", vec![layer("a", "indexed")])],
    );
    assert!(matches!(
        compare(&source, &target, &["linux/amd64".into()], "d", "v2"),
        TargetCheck::Bound { .. }
    ));
    assert!(matches!(
        compare(&source, &target, &[], "d", "v2"),
        TargetCheck::NotBound { .. }
    ));
}
