//! The plan: platform selection (default, all, a list), each layer's fate, the manifest
//! lookups and their errors (upstream's quirks included).

use crate::conversion_plan::test_support::*;
use crate::conversion_plan::*;
use crate::oci::*;

#[test]
fn multi_arch_default_all_list() {
    let mut fake = Fake::default();
    let (target, entries) = multi_arch(&mut fake, MEDIA_TYPE_OCI_INDEX);

    // Default on an amd64 host: only amd64.
    let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    check_blobs(&out);
    let idx = new_index(&out).manifests.unwrap();
    assert_eq!(idx.len(), 5);
    assert_eq!(out.soci_indexes.len(), 1);
    assert_eq!(
        idx[0].annotation(ANNOTATION_SOCI_INDEX_DIGEST),
        Some(out.soci_indexes[0].1.digest.as_str())
    );
    // arm64 is present: re-serialised, not annotated (its bytes change: Go's form).
    assert_ne!(idx[1].digest, entries[1].digest);
    assert_eq!(idx[1].annotations, None);
    assert_eq!(idx[1].platform, entries[1].platform);
    // Attestations lose their descriptor annotations; keep their platform.
    assert_eq!(idx[2].annotations, None);
    assert_eq!(
        idx[2].platform,
        Some(Platform::new("unknown", "unknown", ""))
    );
    assert_eq!(idx[4], out.soci_indexes[0].1);
    assert_eq!(idx[4].platform, Some(Platform::new("linux", "amd64", "")));

    // On an arm64 host the default platform keeps DefaultSpec's variant v8.
    let mut o = opts(PlatformSelection::Default);
    o.host_platform = platform::default_spec("linux", "arm64");
    let (_, out) = convert(&fake, &target, &o).unwrap();
    let idx = new_index(&out).manifests.unwrap();
    assert!(idx[0].annotations.is_none());
    assert!(idx[1].annotation(ANNOTATION_SOCI_INDEX_DIGEST).is_some());
    assert_eq!(idx[4].platform, Some(Platform::new("linux", "arm64", "v8")));

    // All: both platforms, attestations skipped; the shared-by-digest layers once.
    let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap();
    check_blobs(&out);
    assert_eq!(plan.platforms().len(), 2);
    assert_eq!(plan.layers_to_index().len(), 3);
    let idx = new_index(&out).manifests.unwrap();
    assert_eq!(idx.len(), 6);
    assert_eq!(idx[4].platform, Some(Platform::new("linux", "amd64", "")));
    assert_eq!(idx[5].platform, Some(Platform::new("linux", "arm64", "v8")));
    for (i, soci) in [(0, &idx[4]), (1, &idx[5])] {
        assert_eq!(
            idx[i].annotation(ANNOTATION_SOCI_INDEX_DIGEST),
            Some(soci.digest.as_str())
        );
        assert_eq!(
            soci.annotation(ANNOTATION_IMAGE_MANIFEST_DIGEST),
            Some(idx[i].digest.as_str())
        );
    }

    // List: parsed, de-duplicated by strict normalised match (first raw value kept).
    let selection = list(&["linux/arm64", "linux/aarch64/v8"]);
    let (_, out) = convert(&fake, &target, &opts(selection)).unwrap();
    assert_eq!(out.soci_indexes.len(), 1);
    assert_eq!(out.soci_indexes[0].0, Platform::new("linux", "arm64", ""));
    let err = convert(&fake, &target, &opts(list(&["linux/s390x"]))).unwrap_err();
    assert_eq!(err.to_string(), "image manifest for linux/s390x: not found");
    let err = convert(&fake, &target, &opts(list(&["linux/*"]))).unwrap_err();
    assert!(matches!(err, ConvertError::InvalidPlatform { .. }));
}

#[test]
fn min_layer_size_and_empty_platforms() {
    let mut fake = Fake::default();
    let amd = fake.linux_image(
        MEDIA_TYPE_OCI_MANIFEST,
        "amd64",
        layer(MEDIA_TYPE_OCI_LAYER_GZIP, 10 * MIB - 1, "a"),
    );
    let arm = fake.linux_image(
        MEDIA_TYPE_OCI_MANIFEST,
        "arm64",
        layer(MEDIA_TYPE_OCI_LAYER_GZIP, 10 * MIB, "b"),
    );
    let target = fake.index(
        MEDIA_TYPE_OCI_INDEX,
        &[
            with_platform(amd.clone(), "linux", "amd64", ""),
            with_platform(arm, "linux", "arm64", ""),
        ],
    );
    // amd64 has nothing to index: dropped; arm64 (exactly the minimum) is indexed.
    let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap();
    assert_eq!(plan.platforms().len(), 1);
    assert_eq!(out.soci_indexes[0].0, Platform::new("linux", "arm64", ""));
    assert_eq!(plan.skipped_layers().len(), 1);
    assert_eq!(
        plan.skipped_layers()[0].platform,
        Platform::new("linux", "amd64", "")
    );
    // Only amd64: nothing at all.
    assert_eq!(
        convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err(),
        ConvertError::EmptyIndex
    );
    assert_eq!(
        convert(&fake, &amd, &opts(PlatformSelection::Default)).unwrap_err(),
        ConvertError::EmptyIndex
    );
    let mut o = opts(PlatformSelection::Default);
    o.min_layer_size = 0;
    assert!(convert(&fake, &amd, &o).is_ok());
    // v1 fails on a platform without zTOCs instead of skipping it.
    let mut o = opts(PlatformSelection::All);
    o.index_version = IndexVersion::V1;
    assert_eq!(
        convert(&fake, &target, &o).unwrap_err(),
        ConvertError::EmptyIndex
    );
}

#[test]
fn zstd_and_wrapped_layers_are_skipped_non_layers_fail() {
    let mut fake = Fake::default();
    let layers = [
        layer(MEDIA_TYPE_OCI_LAYER_ZSTD, 20 * MIB, "zstd"),
        layer(MEDIA_TYPE_DOCKER_LAYER_ZSTD, 20 * MIB, "dzstd"),
        layer(MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE, 20 * MIB, "nd"),
        layer(
            "application/vnd.oci.image.layer.v1.tar+encrypted",
            20 * MIB,
            "enc",
        ),
        layer(
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            20 * MIB,
            "gzenc",
        ),
        layer(SOCI_PREFETCH_MEDIA_TYPE, 20 * MIB, "prefetch"),
        layer(
            MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE_GZIP,
            20 * MIB,
            "ndgz",
        ),
    ];
    let target = fake.image(MEDIA_TYPE_OCI_MANIFEST, "linux", "amd64", "", &layers);
    let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    let indexed: Vec<_> = plan
        .layers_to_index()
        .into_iter()
        .map(|l| l.descriptor.digest)
        .collect();
    assert_eq!(
        indexed,
        vec![layers[4].digest.clone(), layers[6].digest.clone()]
    );
    let reasons: Vec<_> = plan
        .skipped_layers()
        .into_iter()
        .map(|s| s.reason)
        .collect();
    assert_eq!(
        reasons,
        vec![
            SkipReason::UnsupportedCompression("zstd".into()),
            SkipReason::UnsupportedCompression("zstd".into()),
            SkipReason::UnsupportedCompression("".into()),
            SkipReason::UnsupportedCompression("".into()),
            SkipReason::PrefetchArtifact,
        ]
    );
    let soci = Manifest::from_json(blob(&out, &out.soci_indexes[0].1.digest)).unwrap();
    assert_eq!(soci.layers.unwrap().len(), 2);

    let mut fake = Fake::default();
    let target = fake.image(
        MEDIA_TYPE_OCI_MANIFEST,
        "linux",
        "amd64",
        "",
        &[
            layer(MEDIA_TYPE_OCI_LAYER_GZIP, 20 * MIB, "ok"),
            layer("application/vnd.example.data.v1+json", 1, "d"),
        ],
    );
    let err = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err();
    assert!(matches!(err, ConvertError::NotLayerType { .. }), "{err}");
    // An image-config type among the layers already fails containerd's platform walk,
    // which reads it as a config.
    let target = fake.linux_image(
        MEDIA_TYPE_OCI_MANIFEST,
        "amd64",
        layer(MEDIA_TYPE_OCI_CONFIG, 1, "cfg"),
    );
    assert!(
        convert(&fake, &target, &opts(PlatformSelection::Default))
            .unwrap_err()
            .is_not_found()
    );
    // A layer-like OCI type containerd cannot place is a hard error too.
    let target = fake.linux_image(
        MEDIA_TYPE_OCI_MANIFEST,
        "amd64",
        layer("application/vnd.oci.image.layer.v2.tar", 20 * MIB, "x"),
    );
    let err = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err();
    assert!(
        matches!(err, ConvertError::UnknownLayerCompression { .. }),
        "{err}"
    );
}

#[test]
fn docker_manifest_list_with_missing_children() {
    let mut fake = Fake::default();
    let (target, entries) = multi_arch(&mut fake, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
    // The arm64 manifest was not pulled.
    fake.blobs.remove(&entries[1].digest);
    let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    check_blobs(&out);
    let index = new_index(&out);
    assert_eq!(index.media_type, MEDIA_TYPE_OCI_INDEX);
    let idx = index.manifests.unwrap();
    assert_eq!(idx[0].media_type, MEDIA_TYPE_OCI_MANIFEST);
    // Untouched: still the Docker entry, as written.
    assert_eq!(idx[1], entries[1]);
    assert_eq!(idx[1].media_type, MEDIA_TYPE_DOCKER_MANIFEST);
    // Selecting the missing platform fails (all-platforms lists it from the descriptor).
    let err = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&entries[1].digest), "{err}");

    // A child without a platform must be readable to learn its platform.
    let mut fake = Fake::default();
    let (a, b) = fake.amd64_and_arm64(MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_LAYER_GZIP);
    let target = fake.index(
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        &[with_platform(a, "linux", "amd64", ""), b.clone()],
    );
    fake.blobs.remove(&b.digest);
    assert!(
        convert(&fake, &target, &opts(PlatformSelection::Default))
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn manifest_should_have_proper_platform() {
    let mut fake = Fake::default();
    let (a, b) = fake.amd64_and_arm64(MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_LAYER_GZIP);
    // Platform-less child first: the build of any platform after it fails.
    let target = fake.index(
        MEDIA_TYPE_OCI_INDEX,
        &[b.clone(), with_platform(a.clone(), "linux", "amd64", "")],
    );
    assert_eq!(
        convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap_err(),
        ConvertError::ManifestWithoutPlatform
    );
    // After the match it is fine (and --all-platforms reads its platform from the config).
    let target = fake.index(
        MEDIA_TYPE_OCI_INDEX,
        &[with_platform(a, "linux", "amd64", ""), b],
    );
    let (plan, _) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    assert_eq!(plan.platforms().len(), 1);
    let err = convert(&fake, &target, &opts(PlatformSelection::All)).unwrap_err();
    assert_eq!(err, ConvertError::ManifestWithoutPlatform);
}

#[test]
fn missing_ztoc_and_unknown_targets() {
    let mut fake = Fake::default();
    let target = fake.linux_image(
        MEDIA_TYPE_OCI_MANIFEST,
        "amd64",
        layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "x"),
    );
    let plan = plan_conversion(&target, &fake.blobs, &opts(PlatformSelection::Default)).unwrap();
    assert!(matches!(
        plan.assemble(&BTreeMap::new()),
        Err(ConvertError::MissingZtoc(_))
    ));
    let odd = Descriptor::new("application/vnd.example+json", &target.digest, target.size);
    assert_eq!(
        convert(&fake, &odd, &opts(PlatformSelection::Default)).unwrap_err(),
        ConvertError::NoPlatforms
    );
    let absent = Descriptor::new(MEDIA_TYPE_OCI_INDEX, &sha256_digest(b"nothing"), 7);
    assert!(
        convert(&fake, &absent, &opts(PlatformSelection::Default))
            .unwrap_err()
            .is_not_found()
    );
    // A manifest served for an index media type is refused.
    let wrong = Descriptor::new(MEDIA_TYPE_OCI_INDEX, &target.digest, target.size);
    assert!(matches!(
        convert(&fake, &wrong, &opts(PlatformSelection::Default)),
        Err(ConvertError::InvalidContent(_))
    ));
}
