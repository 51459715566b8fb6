//! The assembled JSON: SOCI index and manifest bytes, the new image index, v1 subjects,
//! re-conversion and its orphan blobs.

use crate::conversion_plan::test_support::*;
use crate::conversion_plan::*;
use crate::oci::*;

#[test]
fn single_oci_manifest() {
    let mut fake = Fake::default();
    let big = layer(MEDIA_TYPE_OCI_LAYER_GZIP, 20 * MIB, "big");
    let small = layer(MEDIA_TYPE_OCI_LAYER_GZIP, MIB, "small");
    let tar = layer(MEDIA_TYPE_OCI_LAYER, 10 * MIB, "tar");
    let target = fake.image(
        MEDIA_TYPE_OCI_MANIFEST,
        "linux",
        "arm64",
        "v8",
        &[big.clone(), small.clone(), tar.clone()],
    );
    // The host is amd64; the image's own platform is the default.
    let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    check_blobs(&out);
    assert_eq!(
        plan.layers_to_index(),
        vec![
            LayerToIndex {
                descriptor: big.clone(),
                compression: LayerCompression::Gzip
            },
            LayerToIndex {
                descriptor: tar.clone(),
                compression: LayerCompression::Uncompressed
            },
        ]
    );
    let skipped = plan.skipped_layers();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].layer, small);
    assert_eq!(
        skipped[0].reason,
        SkipReason::TooSmall {
            min_layer_size: 10 * MIB
        }
    );
    assert!(
        skipped[0]
            .to_string()
            .contains("size 1048576 is less than min-layer-size 10485760"),
        "{}",
        skipped[0]
    );

    let ztocs = fake_ztocs(&plan);
    let (soci_platform, soci_desc) = &out.soci_indexes[0];
    assert_eq!(*soci_platform, Platform::new("linux", "arm64", ""));
    let soci = blob(&out, &soci_desc.digest);
    let expected_soci = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""config":{{"mediaType":"application/vnd.amazon.soci.index.v2+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"#,
            r#""layers":[{{"mediaType":"application/octet-stream","digest":"{}","size":{},"annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","com.amazon.soci.span-size":"4194304"}}}},"#,
            r#"{{"mediaType":"application/octet-stream","digest":"{}","size":{},"annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar","com.amazon.soci.span-size":"4194304"}}}}],"#,
            r#""annotations":{{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}}}"#
        ),
        ztocs[&big.digest].digest,
        ztocs[&big.digest].size,
        big.digest,
        ztocs[&tar.digest].digest,
        ztocs[&tar.digest].size,
        tar.digest
    );
    assert_eq!(text(soci), expected_soci);

    let index = new_index(&out);
    let entries = index.manifests.clone().unwrap();
    assert_eq!(entries.len(), 2);
    let image = &entries[0];
    assert_eq!(image.platform, Some(Platform::new("linux", "arm64", "")));
    assert_eq!(
        image.annotation(ANNOTATION_SOCI_INDEX_DIGEST),
        Some(soci_desc.digest.as_str())
    );
    let manifest = Manifest::from_json(blob(&out, &image.digest)).unwrap();
    assert_eq!(
        manifest.annotations.as_ref().unwrap()[ANNOTATION_SOCI_INDEX_DIGEST],
        soci_desc.digest
    );
    assert_eq!(manifest.layers.as_ref().unwrap().len(), 3);
    assert_eq!(entries[1], *soci_desc);
    assert_eq!(
        text(&entries[1].to_go_json()),
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"com.amazon.soci.image-manifest-digest":"{}"}},"platform":{{"architecture":"arm64","os":"linux"}},"artifactType":"application/vnd.amazon.soci.index.v2+json"}}"#,
            soci_desc.digest, soci_desc.size, image.digest
        )
    );
    assert_eq!(index.media_type, MEDIA_TYPE_OCI_INDEX);
    assert!(text(blob(&out, &out.image_index.digest)).starts_with(
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"#
    ));
    assert!(!out.already_converted);
    // config, SOCI index, manifest, image index.
    assert_eq!(out.blobs.len(), 4);

    // An explicit other platform is an error for a single-platform image.
    let err = convert(&fake, &target, &opts(list(&["linux/amd64"]))).unwrap_err();
    assert_eq!(err.to_string(), "image manifest for linux/amd64: not found");
    // linux/arm64/v8 strictly matches arm64 (normalised), and keeps its variant in the descriptor.
    let (_, out) = convert(&fake, &target, &opts(list(&["linux/arm64/v8"]))).unwrap();
    assert_eq!(
        out.soci_indexes[0].1.platform,
        Some(Platform::new("linux", "arm64", "v8"))
    );
}

#[test]
fn single_docker_manifest() {
    let mut fake = Fake::default();
    let gz = layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, 11 * MIB, "gz");
    let tar = layer(MEDIA_TYPE_DOCKER_LAYER, 12 * MIB, "tar");
    let target = fake.image(
        MEDIA_TYPE_DOCKER_MANIFEST,
        "Linux",
        "x86_64",
        "",
        &[gz.clone(), tar.clone()],
    );
    let (plan, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    check_blobs(&out);
    assert_eq!(
        plan.layers_to_index()
            .iter()
            .map(|l| l.compression)
            .collect::<Vec<_>>(),
        vec![LayerCompression::Gzip, LayerCompression::Uncompressed]
    );
    let index = new_index(&out);
    let entries = index.manifests.unwrap();
    // The config platform is normalised.
    assert_eq!(
        entries[0].platform,
        Some(Platform::new("linux", "amd64", ""))
    );
    assert_eq!(entries[0].media_type, MEDIA_TYPE_OCI_MANIFEST);
    let manifest = Manifest::from_json(blob(&out, &entries[0].digest)).unwrap();
    assert_eq!(manifest.media_type, MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(manifest.config.media_type, MEDIA_TYPE_OCI_CONFIG);
    // Layers keep their Docker media types, in the manifest and in the zTOC annotations.
    assert_eq!(
        manifest.layers.unwrap()[0].media_type,
        MEDIA_TYPE_DOCKER_LAYER_GZIP
    );
    let soci = Manifest::from_json(blob(&out, &out.soci_indexes[0].1.digest)).unwrap();
    assert_eq!(
        soci.layers.unwrap()[1].annotation(ANNOTATION_IMAGE_LAYER_MEDIA_TYPE),
        Some(MEDIA_TYPE_DOCKER_LAYER)
    );
}

#[test]
fn reconversion_is_idempotent() {
    let mut fake = Fake::default();
    let (multi, _) = multi_arch(&mut fake, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
    let single = fake.linux_image(
        MEDIA_TYPE_DOCKER_MANIFEST,
        "amd64",
        layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, 30 * MIB, "s"),
    );
    for (target, selection) in [
        (&multi, PlatformSelection::All),
        (&multi, PlatformSelection::Default),
        (&single, PlatformSelection::Default),
    ] {
        let o = opts(selection);
        let (plan1, out1) = convert(&fake, target, &o).unwrap();
        let mut again = Fake {
            blobs: fake.blobs.clone(),
        };
        for (d, b) in out1.blobs.iter().chain(&out1.orphan_blobs) {
            again.blobs.insert(d.digest.clone(), b.clone());
        }
        let plan2 = plan_conversion(&out1.image_index, &again.blobs, &o).unwrap();
        // Same layers, same zTOCs.
        assert_eq!(plan1.layers_to_index(), plan2.layers_to_index());
        let out2 = plan2.assemble(&fake_ztocs(&plan1)).unwrap();
        assert_eq!(out2.image_index, out1.image_index);
        assert!(out2.already_converted);
        // The old SOCI entries were re-serialised as images, then replaced.
        assert_eq!(out2.orphan_blobs.len(), out1.soci_indexes.len());
    }
}

#[test]
fn partial_reconversion_replaces_only_matching_soci_entry() {
    let mut fake = Fake::default();
    let (multi, _) = multi_arch(&mut fake, MEDIA_TYPE_OCI_INDEX);
    let (_, out1) = convert(&fake, &multi, &opts(PlatformSelection::All)).unwrap();
    for (d, b) in &out1.blobs {
        fake.blobs.insert(d.digest.clone(), b.clone());
    }
    // Re-convert only amd64: the amd64 SOCI entry is replaced in place; the arm64 one is
    // re-serialised as if it were an image (upstream quirk) and stays.
    let (_, out2) = convert(&fake, &out1.image_index, &opts(PlatformSelection::Default)).unwrap();
    let idx = new_index(&out2).manifests.unwrap();
    assert_eq!(idx.len(), 6);
    assert_eq!(idx[4], out2.soci_indexes[0].1);
    assert_eq!(idx[5].artifact_type, SOCI_INDEX_ARTIFACT_TYPE_V2);
    let mangled = Manifest::from_json(blob(&out2, &idx[5].digest)).unwrap();
    assert_eq!(mangled.config.media_type, MEDIA_TYPE_OCI_CONFIG);
    assert_eq!(
        idx[5].annotation(ANNOTATION_BUILD_TOOL_IDENTIFIER),
        Some(SOCI_BUILD_TOOL_IDENTIFIER)
    );
}

#[test]
fn annotations_are_escaped_like_go() {
    let mut fake = Fake::default();
    let config = fake.config(MEDIA_TYPE_OCI_CONFIG, "linux", "amd64", "");
    let layers = [layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "x")];
    let target = fake.manifest(
        MEDIA_TYPE_OCI_MANIFEST,
        &config,
        &layers,
        ",\n  \"annotations\": {\"b\": \"<a href=\\\"x\\\">&amp;</a>\", \"a\\u2028\": \"é😀\\u0001\\t/\"}",
    );
    let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    let idx = new_index(&out).manifests.unwrap();
    let manifest = text(blob(&out, &idx[0].digest));
    assert!(
        manifest.ends_with(&format!(
            r#""annotations":{{"a\u2028":"é😀\u0001\t/","b":"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e","com.amazon.soci.index-digest":"{}"}}}}"#,
            out.soci_indexes[0].1.digest
        )),
        "{manifest}"
    );
    assert!(
        text(blob(&out, &out.image_index.digest))
            .contains(r#""annotations":{"a\u2028":"é😀\u0001\t/","b":"\u003ca"#)
    );
}

#[test]
fn v1_indexes_with_subject() {
    let mut fake = Fake::default();
    let (target, entries) = multi_arch(&mut fake, MEDIA_TYPE_DOCKER_MANIFEST_LIST);
    let mut o = opts(PlatformSelection::All);
    o.index_version = IndexVersion::V1;
    let (_, out) = convert(&fake, &target, &o).unwrap();
    check_blobs(&out);
    assert_eq!(out.image_index, target);
    assert_eq!(out.blobs.len(), 3);
    assert_eq!(out.soci_indexes.len(), 2);
    for ((p, desc), entry) in out.soci_indexes.iter().zip(&entries) {
        assert_eq!(Some(p), entry.platform.as_ref());
        assert_eq!(desc.artifact_type, SOCI_INDEX_ARTIFACT_TYPE_V1);
        assert_eq!(desc.platform, None);
        let soci = Manifest::from_json(blob(&out, &desc.digest)).unwrap();
        assert_eq!(soci.config.media_type, SOCI_INDEX_ARTIFACT_TYPE_V1);
        assert_eq!(
            soci.subject,
            Some(Descriptor::new(
                MEDIA_TYPE_DOCKER_MANIFEST,
                &entry.digest,
                entry.size
            ))
        );
        let json = text(blob(&out, &desc.digest));
        assert!(json.contains(r#"}],"subject":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"#));
        assert!(json.ends_with(
            r#"},"annotations":{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}"#
        ));
    }
    // v1 defaults to the host platform even for a single manifest (`soci create`).
    let single = fake.linux_image(
        MEDIA_TYPE_OCI_MANIFEST,
        "arm64",
        layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "s"),
    );
    let mut o = opts(PlatformSelection::Default);
    o.index_version = IndexVersion::V1;
    let (_, out) = convert(&fake, &single, &o).unwrap();
    assert_eq!(out.soci_indexes[0].0, Platform::new("linux", "amd64", ""));
}

#[test]
fn nested_index_entries_become_their_first_manifest() {
    let mut fake = Fake::default();
    let (a, b) = fake.amd64_and_arm64(MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_LAYER_GZIP);
    let inner = fake.index(
        MEDIA_TYPE_OCI_INDEX,
        &[with_platform(b.clone(), "linux", "arm64", "")],
    );
    let target = fake.index(
        MEDIA_TYPE_OCI_INDEX,
        &[
            with_platform(a, "linux", "amd64", ""),
            with_platform(inner, "linux", "arm64", ""),
        ],
    );
    let (_, out) = convert(&fake, &target, &opts(PlatformSelection::Default)).unwrap();
    let idx = new_index(&out).manifests.unwrap();
    assert_eq!(idx[1].media_type, MEDIA_TYPE_OCI_MANIFEST);
    let m = Manifest::from_json(blob(&out, &idx[1].digest)).unwrap();
    assert_eq!(m.layers.unwrap()[0].digest, sha256_digest(b"y"));
}
