//! Test helpers shared by the planning and assembly tests: an in-memory registry of JSON
//! blobs, images built in it, fake zTOCs, and checks on the output.

use super::*;
use crate::oci::*;

pub(super) const MIB: i64 = 1 << 20;

/// An in-memory registry of JSON blobs.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) blobs: HashMap<String, Vec<u8>>,
}

impl Fake {
    pub(super) fn put(&mut self, bytes: Vec<u8>) -> (String, i64) {
        let digest = sha256_digest(&bytes);
        let size = bytes.len() as i64;
        self.blobs.insert(digest.clone(), bytes);
        (digest, size)
    }

    pub(super) fn config(
        &mut self,
        media_type: &str,
        os: &str,
        arch: &str,
        variant: &str,
    ) -> Descriptor {
        let mut json = format!(r#"{{"architecture":"{arch}","os":"{os}""#);
        if !variant.is_empty() {
            json.push_str(&format!(r#","variant":"{variant}""#));
        }
        json.push_str(
            r#","rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":["PATH=/bin"]}}"#,
        );
        let (d, s) = self.put(json.into_bytes());
        Descriptor::new(media_type, &d, s)
    }

    /// A manifest as a registry would serve it (pretty-printed, not Go's form).
    pub(super) fn manifest(
        &mut self,
        media_type: &str,
        config: &Descriptor,
        layers: &[Descriptor],
        annotations: &str,
    ) -> Descriptor {
        let layers: Vec<String> = layers
            .iter()
            .map(|l| {
                format!(
                    r#"{{ "mediaType": "{}", "size": {}, "digest": "{}" }}"#,
                    l.media_type, l.size, l.digest
                )
            })
            .collect();
        let json = format!(
            "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{media_type}\",\n  \"config\": {{ \"mediaType\": \"{}\", \"size\": {}, \"digest\": \"{}\" }},\n  \"layers\": [{}]{annotations}\n}}\n",
            config.media_type,
            config.size,
            config.digest,
            layers.join(", ")
        );
        let (d, s) = self.put(json.into_bytes());
        Descriptor::new(media_type, &d, s)
    }

    pub(super) fn image(
        &mut self,
        media_type: &str,
        os: &str,
        arch: &str,
        variant: &str,
        layers: &[Descriptor],
    ) -> Descriptor {
        let config_type = if media_type == MEDIA_TYPE_DOCKER_MANIFEST {
            MEDIA_TYPE_DOCKER_CONFIG
        } else {
            MEDIA_TYPE_OCI_CONFIG
        };
        let config = self.config(config_type, os, arch, variant);
        self.manifest(media_type, &config, layers, "")
    }

    /// A linux image without a variant and with one layer.
    pub(super) fn linux_image(
        &mut self,
        media_type: &str,
        arch: &str,
        layer: Descriptor,
    ) -> Descriptor {
        self.image(media_type, "linux", arch, "", &[layer])
    }

    /// Two linux images of `media_type` with one 30 MiB `layer_type` layer each:
    /// amd64 (layer seed "x") and arm64 (layer seed "y"), neither in an index yet.
    pub(super) fn amd64_and_arm64(
        &mut self,
        media_type: &str,
        layer_type: &str,
    ) -> (Descriptor, Descriptor) {
        let amd = self.linux_image(media_type, "amd64", layer(layer_type, 30 * MIB, "x"));
        let arm = self.linux_image(media_type, "arm64", layer(layer_type, 30 * MIB, "y"));
        (amd, arm)
    }

    pub(super) fn index(&mut self, media_type: &str, entries: &[Descriptor]) -> Descriptor {
        let index = Index {
            schema_version: 2,
            media_type: media_type.into(),
            manifests: Some(entries.to_vec()),
            ..Default::default()
        };
        let mut json = index.to_go_json();
        json.push(b'\n');
        let (d, s) = self.put(json);
        Descriptor::new(media_type, &d, s)
    }
}

pub(super) fn layer(media_type: &str, size: i64, seed: &str) -> Descriptor {
    Descriptor::new(media_type, &sha256_digest(seed.as_bytes()), size)
}

pub(super) fn with_platform(mut d: Descriptor, os: &str, arch: &str, variant: &str) -> Descriptor {
    d.platform = Some(Platform::new(os, arch, variant));
    d
}

/// `PlatformSelection::List` of `platforms`.
pub(super) fn list(platforms: &[&str]) -> PlatformSelection {
    PlatformSelection::List(platforms.iter().map(|p| p.to_string()).collect())
}

pub(super) fn opts(platforms: PlatformSelection) -> ConvertOptions {
    ConvertOptions {
        platforms,
        min_layer_size: 10 * MIB,
        span_size: 4 * MIB,
        index_version: IndexVersion::V2,
        host_platform: platform::default_spec("linux", "amd64"),
    }
}

/// Fake zTOCs: digest and size derived from the layer digest.
pub(super) fn fake_ztocs(plan: &ConversionPlan) -> BTreeMap<String, ZtocInfo> {
    plan.layers_to_index()
        .into_iter()
        .map(|l| {
            let d = l.descriptor.digest;
            let info = ZtocInfo {
                digest: sha256_digest(format!("ztoc of {d}").as_bytes()),
                size: 1000 + d.len() as i64,
                disable_xattrs: false,
            };
            (d, info)
        })
        .collect()
}

pub(super) fn convert(
    fake: &Fake,
    target: &Descriptor,
    o: &ConvertOptions,
) -> Result<(ConversionPlan, ConversionOutput), ConvertError> {
    let plan = plan_conversion(target, &fake.blobs, o)?;
    let out = plan.assemble(&fake_ztocs(&plan))?;
    Ok((plan, out))
}

pub(super) fn blob<'a>(out: &'a ConversionOutput, digest: &str) -> &'a [u8] {
    &out.blobs
        .iter()
        .find(|(d, _)| d.digest == digest)
        .unwrap_or_else(|| panic!("no blob {digest}"))
        .1
}

pub(super) fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

pub(super) fn new_index(out: &ConversionOutput) -> Index {
    Index::from_json(blob(out, &out.image_index.digest)).unwrap()
}

/// Checks the output is self-consistent: blob digests, the config blob, ordering.
pub(super) fn check_blobs(out: &ConversionOutput) {
    for (d, bytes) in out.blobs.iter().chain(&out.orphan_blobs) {
        assert_eq!(d.digest, sha256_digest(bytes));
        assert_eq!(d.size, bytes.len() as i64);
    }
    assert_eq!(out.blobs[0].1, b"{}");
    if out.image_index.media_type == MEDIA_TYPE_OCI_INDEX
        && out
            .blobs
            .iter()
            .any(|(d, _)| d.digest == out.image_index.digest)
    {
        assert_eq!(out.blobs.last().unwrap().0.digest, out.image_index.digest);
    }
}

/// A buildx-style multi-arch image: amd64, arm64 and two attestation manifests.
pub(super) fn multi_arch(fake: &mut Fake, media_type: &str) -> (Descriptor, Vec<Descriptor>) {
    let manifest_type = if media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST {
        MEDIA_TYPE_DOCKER_MANIFEST
    } else {
        MEDIA_TYPE_OCI_MANIFEST
    };
    let amd = fake.linux_image(
        manifest_type,
        "amd64",
        layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "amd"),
    );
    let arm = fake.image(
        manifest_type,
        "linux",
        "arm64",
        "v8",
        &[
            layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "arm"),
            layer(MEDIA_TYPE_OCI_LAYER_GZIP, 30 * MIB, "shared"),
        ],
    );
    let mut att = Vec::new();
    for (i, m) in [&amd, &arm].into_iter().enumerate() {
        let cfg = {
            let (d, s) = fake.put(format!(r#"{{"n":{i}}}"#).into_bytes());
            Descriptor::new(MEDIA_TYPE_OCI_CONFIG, &d, s)
        };
        let mut a = fake.manifest(
            MEDIA_TYPE_OCI_MANIFEST,
            &cfg,
            &[layer(MEDIA_TYPE_IN_TOTO, 100, "att")],
            "",
        );
        a.platform = Some(Platform::new("unknown", "unknown", ""));
        a.annotations = Some(BTreeMap::from([
            ("vnd.docker.reference.digest".into(), m.digest.clone()),
            (
                "vnd.docker.reference.type".into(),
                "attestation-manifest".into(),
            ),
        ]));
        att.push(a);
    }
    let entries = vec![
        with_platform(amd, "linux", "amd64", ""),
        with_platform(arm, "linux", "arm64", "v8"),
        att[0].clone(),
        att[1].clone(),
    ];
    (fake.index(media_type, &entries), entries)
}
