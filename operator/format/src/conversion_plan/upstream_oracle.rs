//! Test-only (declared `#[cfg(test)]` in `conversion_plan/mod.rs`): the upstream `soci` CLI as
//! the oracle; its unwraps and panics fail a test, never a conversion.

use super::*;
use crate::oci::*;
use std::io::Write;
use std::path::{Path, PathBuf};

fn soci_bin() -> Option<PathBuf> {
    let p = match std::env::var_os("SOCI_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME")?).join(".cache/soci-operator/tools/bin/soci")
        }
    };
    p.is_file().then_some(p)
}

struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> Tmp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let p = std::env::temp_dir().join(format!("soci-format-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    Tmp(p)
}

struct Layout(PathBuf);

impl Layout {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout(dir.to_path_buf())
    }
    fn put(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = sha256_digest(bytes);
        std::fs::write(self.0.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        Descriptor::new(media_type, &d, bytes.len() as i64)
    }
    fn finish(&self, root: &Descriptor) {
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_INDEX.into(),
            manifests: Some(vec![root.clone()]),
            ..Default::default()
        };
        std::fs::write(self.0.join("index.json"), index.to_go_json()).unwrap();
    }
}

impl Layout {
    /// A gzip layer of one file `name` holding 2000 bytes of noise from `seed`.
    fn noise_layer(&self, media_type: &str, name: &str, seed: u64) -> Descriptor {
        self.put(media_type, &gzip(&tar(&[(name, &noise(seed, 2000))])))
    }
}

impl BlobSource for Layout {
    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.0.join("blobs/sha256").join(&digest[7..])) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A ustar archive of regular files.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Content that does not compress much (so the layer is above the minimum size).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b'a' + ((x >> 33) % 26) as u8
        })
        .collect()
}

fn image(
    layout: &Layout,
    manifest_type: &str,
    os: &str,
    arch: &str,
    variant: &str,
    layers: &[Descriptor],
    annotations: &str,
) -> Descriptor {
    let config_type = if manifest_type == MEDIA_TYPE_DOCKER_MANIFEST {
        MEDIA_TYPE_DOCKER_CONFIG
    } else {
        MEDIA_TYPE_OCI_CONFIG
    };
    let variant = if variant.is_empty() {
        String::new()
    } else {
        format!(r#","variant":"{variant}""#)
    };
    let config = layout.put(
        config_type,
        format!(r#"{{"architecture":"{arch}","os":"{os}"{variant},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#).as_bytes(),
    );
    let layers: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                l.media_type, l.digest, l.size
            )
        })
        .collect();
    let json = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{manifest_type}\",\n   \"config\": {{\"mediaType\":\"{}\",\"digest\":\"{}\",\"size\":{}}},\n   \"layers\": [{}]{annotations}\n}}",
        config.media_type,
        config.digest,
        config.size,
        layers.join(",")
    );
    layout.put(manifest_type, json.as_bytes())
}

/// Upstream's conversion of `src` into `<a new temporary directory named after name>/out`.
/// `image` without annotations, with its platform (linux) on the descriptor.
fn linux_image(
    layout: &Layout,
    manifest_type: &str,
    arch: &str,
    variant: &str,
    layers: &[Descriptor],
) -> Descriptor {
    let mut d = image(layout, manifest_type, "linux", arch, variant, layers, "");
    d.platform = Some(Platform::new("linux", arch, variant));
    d
}

fn run_upstream(soci: &Path, src: &Path, name: &str, args: &[&str]) -> (Tmp, PathBuf) {
    let dst = tmp(name);
    let out = dst.0.join("out");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if let Err(e) = soci_testkit::oracle::upstream_convert(soci, src, &out, &args) {
        panic!("upstream failed: {e}");
    }
    (dst, out)
}

/// Upstream's output layout in `dir`, its image index's descriptor and that index.
fn their_output(dir: &Path) -> (Layout, Descriptor, Index) {
    let theirs = Layout(dir.to_path_buf());
    let top = Index::from_json(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let desc = top.manifests.unwrap()[0].clone();
    let index = Index::from_json(&theirs.get(&desc.digest).unwrap().unwrap()).unwrap();
    (theirs, desc, index)
}

/// The zTOCs of upstream's v2 SOCI indexes in `index`, by layer digest.
fn their_ztocs(theirs: &Layout, index: &Index) -> BTreeMap<String, ZtocInfo> {
    let mut ztocs = BTreeMap::new();
    for entry in index
        .manifests
        .iter()
        .flatten()
        .filter(|e| e.artifact_type == SOCI_INDEX_ARTIFACT_TYPE_V2)
    {
        let soci_index = Manifest::from_json(&theirs.get(&entry.digest).unwrap().unwrap()).unwrap();
        for z in soci_index.layers.unwrap() {
            let layer = z
                .annotation(ANNOTATION_IMAGE_LAYER_DIGEST)
                .unwrap()
                .to_string();
            ztocs.insert(
                layer,
                ZtocInfo {
                    digest: z.digest,
                    size: z.size,
                    disable_xattrs: false,
                },
            );
        }
    }
    ztocs
}

/// Converts `src` with upstream and with our plan (given upstream's zTOCs); compares.
fn compare(soci: &Path, src: &Path, args: &[&str], opts: &ConvertOptions) -> Descriptor {
    let (_dst, dst_dir) = run_upstream(soci, src, "upstream-out", args);
    let (theirs, their_index_desc, their_index) = their_output(&dst_dir);
    let ztocs = their_ztocs(&theirs, &their_index);

    let source = Layout(src.to_path_buf());
    let top = Index::from_json(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let target = top.manifests.unwrap()[0].clone();
    let plan = plan_conversion(&target, &source, opts).unwrap();
    let ours = plan.assemble(&ztocs).unwrap();
    assert_eq!(ours.image_index, their_index_desc, "image index differs");
    for (desc, bytes) in ours.blobs.iter().chain(&ours.orphan_blobs) {
        let theirs = theirs.get(&desc.digest).unwrap();
        assert_eq!(
            theirs.as_deref(),
            Some(&bytes[..]),
            "blob {} differs or is missing upstream",
            desc.digest
        );
    }
    // Every blob upstream added is one of ours (or a zTOC).
    let before: BTreeSet<String> = std::fs::read_dir(src.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let ours_set: BTreeSet<String> = ours
        .blobs
        .iter()
        .chain(&ours.orphan_blobs)
        .map(|(d, _)| d.digest[7..].to_string())
        .collect();
    let ztoc_set: BTreeSet<String> = ztocs.values().map(|z| z.digest[7..].to_string()).collect();
    for entry in std::fs::read_dir(dst_dir.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            before.contains(&name) || ours_set.contains(&name) || ztoc_set.contains(&name),
            "upstream wrote a blob we did not: {name}"
        );
    }
    ours.image_index
}

/// The upstream binary (`None`, said on stderr, if absent), and a new layout in a temporary
/// directory named after `name`.
fn setup(name: &str) -> Option<(PathBuf, Tmp, Layout)> {
    let Some(soci) = soci_bin() else {
        eprintln!("upstream soci binary not found; skipped");
        return None;
    };
    let src = tmp(name);
    let layout = Layout::new(&src.0);
    Some((soci, src, layout))
}

fn opts(platforms: PlatformSelection, min_layer_size: i64) -> ConvertOptions {
    ConvertOptions {
        platforms,
        min_layer_size,
        span_size: 1 << 22,
        index_version: IndexVersion::V2,
        host_platform: platform::default_spec("linux", platform::goarch()),
    }
}

#[test]
fn single_manifest_matches_upstream() {
    let Some((soci, src, layout)) = setup("single") else {
        return;
    };
    let big = layout.put(
        MEDIA_TYPE_OCI_LAYER_GZIP,
        &gzip(&tar(&[("a.txt", &noise(1, 3000)), ("b/c.txt", b"hello")])),
    );
    let small = layout.put(MEDIA_TYPE_OCI_LAYER_GZIP, &gzip(&tar(&[])));
    let plain = layout.put(MEDIA_TYPE_OCI_LAYER, &tar(&[("p.txt", &noise(2, 700))]));
    let annotations = ",\n   \"annotations\": {\"org.opencontainers.image.title\": \"<a & b>\", \"x\\u2028\": \"é😀\"}";
    let target = image(
        &layout,
        MEDIA_TYPE_OCI_MANIFEST,
        "linux",
        "arm64",
        "v8",
        &[big, small, plain],
        annotations,
    );
    let mut root = target.clone();
    root.annotations = Some(BTreeMap::from([(
        "org.opencontainers.image.ref.name".into(),
        "v1".into(),
    )]));
    layout.finish(&root);
    compare(
        &soci,
        &src.0,
        &["--min-layer-size", "100"],
        &opts(PlatformSelection::Default, 100),
    );
}

#[test]
fn multi_arch_matches_upstream_and_is_idempotent() {
    let Some((soci, src, layout)) = setup("multi") else {
        return;
    };
    let shared = layout.noise_layer(MEDIA_TYPE_OCI_LAYER_GZIP, "shared", 3);
    let amd_only = layout.noise_layer(MEDIA_TYPE_OCI_LAYER_GZIP, "amd", 4);
    let arm_only = layout.noise_layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, "arm", 5);
    let arm_tar = layout.put(MEDIA_TYPE_DOCKER_LAYER, &tar(&[("t", &noise(6, 600))]));
    let small = layout.put(MEDIA_TYPE_OCI_LAYER_GZIP, &gzip(&tar(&[])));
    let mut amd = linux_image(
        &layout,
        MEDIA_TYPE_OCI_MANIFEST,
        "amd64",
        "",
        &[shared.clone(), amd_only, small],
    );
    let arm = linux_image(
        &layout,
        MEDIA_TYPE_DOCKER_MANIFEST,
        "arm64",
        "v8",
        &[shared, arm_only, arm_tar],
    );
    let statement = layout.put(
        MEDIA_TYPE_IN_TOTO,
        br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#,
    );
    let att_config = layout.put(MEDIA_TYPE_OCI_CONFIG, br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#);
    let att_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"in-toto.io/predicate-type":"https://spdx.dev/Document"}}}}]}}"#,
        att_config.media_type,
        att_config.digest,
        att_config.size,
        statement.media_type,
        statement.digest,
        statement.size
    );
    let mut att = layout.put(MEDIA_TYPE_OCI_MANIFEST, att_json.as_bytes());
    att.platform = Some(Platform::new("unknown", "unknown", ""));
    att.annotations = Some(BTreeMap::from([
        ("vnd.docker.reference.digest".into(), amd.digest.clone()),
        (
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        ),
    ]));
    amd.annotations = Some(BTreeMap::from([("com.example.note".into(), "a&b".into())]));
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_OCI_INDEX.into(),
        manifests: Some(vec![amd, arm, att]),
        annotations: Some(BTreeMap::from([(
            "org.opencontainers.image.created".into(),
            "2025-01-01T00:00:00Z".into(),
        )])),
        ..Default::default()
    };
    let root = layout.put(MEDIA_TYPE_OCI_INDEX, &index.to_go_json());
    layout.finish(&root);

    let args = ["--min-layer-size", "100", "--all-platforms"];
    let all = opts(PlatformSelection::All, 100);
    let first = compare(&soci, &src.0, &args, &all);
    compare(
        &soci,
        &src.0,
        &["--min-layer-size", "100", "--platform", "linux/arm64"],
        &opts(PlatformSelection::List(vec!["linux/arm64".into()]), 100),
    );
    compare(
        &soci,
        &src.0,
        &["--min-layer-size", "100"],
        &opts(PlatformSelection::Default, 100),
    );

    // Re-convert upstream's output: same digest for both.
    let (_dst, out) = run_upstream(&soci, &src.0, "upstream-first", &args);
    let again = compare(&soci, &out, &args, &all);
    assert_eq!(again, first);
}

#[test]
fn manifest_list_with_missing_child_matches_upstream() {
    let Some((soci, src, layout)) = setup("missing") else {
        return;
    };
    let l1 = layout.noise_layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, "one", 7);
    let l2 = layout.noise_layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, "two", 8);
    let l3 = layout.noise_layer(MEDIA_TYPE_DOCKER_LAYER_GZIP, "three", 9);
    let amd = linux_image(&layout, MEDIA_TYPE_DOCKER_MANIFEST, "amd64", "", &[l1]);
    let arm = linux_image(&layout, MEDIA_TYPE_DOCKER_MANIFEST, "arm64", "v8", &[l2]);
    let ppc = linux_image(&layout, MEDIA_TYPE_DOCKER_MANIFEST, "ppc64le", "", &[l3]);
    // arm64 was not pulled.
    std::fs::remove_file(src.0.join("blobs/sha256").join(&arm.digest[7..])).unwrap();
    let list = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_DOCKER_MANIFEST_LIST.into(),
        manifests: Some(vec![amd, arm.clone(), ppc.clone()]),
        ..Default::default()
    };
    let mut pretty = list.to_go_json();
    pretty.insert(1, b' ');
    let root = layout.put(MEDIA_TYPE_DOCKER_MANIFEST_LIST, &pretty);
    layout.finish(&root);

    let index_json = std::fs::read(src.0.join("index.json")).unwrap();
    let resolved = standalone_layout_root(&index_json, &layout).unwrap();
    let (synth_desc, synth) = resolved.synthesized.clone().unwrap();
    assert_eq!(resolved.target, synth_desc);
    assert_eq!(
        Index::from_json(&synth).unwrap().manifests.unwrap().len(),
        2
    );

    for (args, selection) in [
        (vec!["--min-layer-size", "100"], PlatformSelection::Default),
        (
            vec!["--min-layer-size", "100", "--all-platforms"],
            PlatformSelection::All,
        ),
    ] {
        let (_dst, out) = run_upstream(&soci, &src.0, "missing-out", &args);
        let (theirs, their_desc, their_index) = their_output(&out);
        assert_eq!(
            theirs.get(&synth_desc.digest).unwrap().as_deref(),
            Some(&synth[..])
        );
        let ztocs = their_ztocs(&theirs, &their_index);
        // Our source: the layout plus the synthesized list, as upstream sees it.
        let mut source: HashMap<String, Vec<u8>> = HashMap::new();
        for entry in std::fs::read_dir(src.0.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            source.insert(
                format!("sha256:{}", entry.file_name().into_string().unwrap()),
                std::fs::read(entry.path()).unwrap(),
            );
        }
        source.insert(synth_desc.digest.clone(), synth.clone());
        let plan =
            plan_conversion(&resolved.target, &source, &opts(selection.clone(), 100)).unwrap();
        let ours = plan.assemble(&ztocs).unwrap();
        assert_eq!(ours.image_index, their_desc, "{selection:?}");
        for (d, b) in &ours.blobs {
            assert_eq!(
                theirs.get(&d.digest).unwrap().as_deref(),
                Some(&b[..]),
                "{selection:?} {}",
                d.digest
            );
        }
    }

    // Only one platform present: converted as a single-manifest image.
    std::fs::remove_file(src.0.join("blobs/sha256").join(&ppc.digest[7..])).unwrap();
    let resolved = standalone_layout_root(&index_json, &layout).unwrap();
    assert_eq!(resolved.synthesized, None);
    assert_eq!(resolved.target.media_type, MEDIA_TYPE_DOCKER_MANIFEST);
    assert_eq!(
        resolved.target.platform,
        Some(Platform::new("linux", "amd64", ""))
    );
    let (_dst, out) = run_upstream(&soci, &src.0, "missing-one", &["--min-layer-size", "100"]);
    let (theirs, their_desc, their_index) = their_output(&out);
    // One platform: one SOCI index (after the image manifest) with one zTOC.
    let manifests = their_index.manifests.clone().unwrap();
    assert_eq!(manifests[1].artifact_type, SOCI_INDEX_ARTIFACT_TYPE_V2);
    let ztocs = their_ztocs(&theirs, &their_index);
    assert_eq!(ztocs.len(), 1);
    let plan = plan_conversion(
        &resolved.target,
        &layout,
        &opts(PlatformSelection::Default, 100),
    )
    .unwrap();
    assert_eq!(plan.assemble(&ztocs).unwrap().image_index, their_desc);
}
