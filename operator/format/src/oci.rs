//! OCI image-spec v1.1.1 types (`specs-go/v1`: `Descriptor`, `Platform`, `Manifest`, `Index`)
//! with Go `encoding/json` semantics both ways, the media types containerd and SOCI use, and
//! containerd's media-type predicates (`core/images/mediatypes.go`).
//!
//! Writing (`to_go_json`) is `json.Marshal` of the Go struct: fields in struct order, `omitempty`
//! fields left out when empty (an empty map or slice counts as empty, so `None` and `Some(empty)`
//! write the same), `layers`/`manifests` written as `null` when `None` (no `omitempty` there).
//!
//! Reading (`from_json`) is `json.Unmarshal` into a zero struct:
//! * unknown fields are ignored, keys match field names exactly or else case-insensitively
//!   (Go's `foldName`), a repeated key is applied again on top of the earlier one (last scalar
//!   wins; maps, structs and pointers are merged; slice elements are decoded into the existing
//!   elements, Go's reuse of the backing array — only the part within the current length is
//!   reproduced, not stale elements between length and capacity after a shrink);
//! * `null` leaves strings, numbers and structs untouched and clears slices, maps and pointers;
//!   `[]` gives an empty (non-nil) slice; a `null` map value becomes `""`;
//! * integers must be integer literals within `int64` (`1.0` / `1e3` are errors); `data` is
//!   base64 (or, as Go allows, an array of byte values);
//! * any type mismatch is an error (Go reports it after decoding the rest; either way the
//!   result is an error).

use crate::gojson::{self, JsonError, ObjectWriter, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

// --- OCI media types (image-spec v1.1.1 `specs-go/v1/mediatype.go`) ---
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

// --- Docker media types (containerd `core/images/mediatypes.go`) ---
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_TYPE_DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";

// --- SOCI (soci-snapshotter `soci/soci_index.go`) ---
/// Artifact type (and config media type) of a v1 SOCI index (bound by `subject`).
pub const SOCI_INDEX_ARTIFACT_TYPE_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// Artifact type (and config media type) of a v2 SOCI index (bound by an image annotation).
pub const SOCI_INDEX_ARTIFACT_TYPE_V2: &str = "application/vnd.amazon.soci.index.v2+json";
/// Media type of zTOC blobs in a SOCI index's `layers`.
pub const SOCI_ZTOC_MEDIA_TYPE: &str = "application/octet-stream";
/// Media type of prefetch artifacts (never built here; such layers are ignored like upstream).
pub const SOCI_PREFETCH_MEDIA_TYPE: &str = "application/vnd.amazon.soci.prefetch.v1+json";
pub const ANNOTATION_IMAGE_LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
pub const ANNOTATION_IMAGE_LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
pub const ANNOTATION_SPAN_SIZE: &str = "com.amazon.soci.span-size";
pub const ANNOTATION_BUILD_TOOL_IDENTIFIER: &str = "com.amazon.soci.build-tool-identifier";
pub const ANNOTATION_DISABLE_XATTRS: &str = "com.amazon.soci.disable-xattrs";
/// On a v2 SOCI index's descriptor in the image index: the annotated image manifest's digest.
pub const ANNOTATION_IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";
/// On an image manifest (and its descriptor): the digest of its v2 SOCI index.
pub const ANNOTATION_SOCI_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
/// Value of the build-tool annotation written by the `soci` CLI since v0.10.0.
pub const SOCI_BUILD_TOOL_IDENTIFIER: &str = "AWS SOCI CLI v0.2";
/// The config blob of every SOCI index.
pub const SOCI_EMPTY_CONFIG: &[u8] = b"{}";
pub const SOCI_EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const SOCI_EMPTY_CONFIG_SIZE: i64 = 2;

/// `sha256:<lowercase hex>` of `bytes` (`digest.FromBytes`).
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push(char::from_digit(u32::from(b >> 4), 16).expect("hex"));
        out.push(char::from_digit(u32::from(b & 0xf), 16).expect("hex"));
    }
    out
}

/// containerd `images.IsManifestType` (no schema 1).
pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_DOCKER_MANIFEST || media_type == MEDIA_TYPE_OCI_MANIFEST
}

/// containerd `images.IsIndexType`.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// containerd `images.IsConfigType`.
pub fn is_config_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_DOCKER_CONFIG || media_type == MEDIA_TYPE_OCI_CONFIG
}

/// containerd `parseMediaTypes`: the part before the first `+`, and the `+`-separated
/// suffixes after it, sorted.
pub fn parse_media_type(media_type: &str) -> (&str, Vec<&str>) {
    match media_type.split_once('+') {
        None => (media_type, Vec::new()),
        Some((base, ext)) => {
            let mut suffixes: Vec<&str> = ext.splitn(50, '+').collect();
            suffixes.sort_unstable();
            (base, suffixes)
        }
    }
}

/// containerd `images.IsLayerType`.
pub fn is_layer_type(media_type: &str) -> bool {
    if media_type.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    matches!(
        parse_media_type(media_type).0,
        MEDIA_TYPE_DOCKER_LAYER
            | MEDIA_TYPE_DOCKER_LAYER_GZIP
            | MEDIA_TYPE_DOCKER_LAYER_FOREIGN
            | MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP
            | MEDIA_TYPE_DOCKER_LAYER_ZSTD
    )
}

/// containerd `images.DiffCompression`: `"gzip"`, `"zstd"`, `"unknown"` (Docker uncompressed
/// types, which "may have been compressed"), `""` (OCI uncompressed, or a wrapped type), or
/// `None` for a media type that is not a layer diff (`ErrNotImplemented`).
///
/// Quirk kept: for OCI types only the *last suffix in sorted order* counts, so
/// `…tar+gzip+encrypted` (suffixes sorted to `encrypted, gzip`) reads as `"gzip"`.
pub fn diff_compression(media_type: &str) -> Option<&'static str> {
    let (base, ext) = parse_media_type(media_type);
    match base {
        MEDIA_TYPE_DOCKER_LAYER | MEDIA_TYPE_DOCKER_LAYER_FOREIGN => {
            Some(if ext.is_empty() { "unknown" } else { "" })
        }
        MEDIA_TYPE_DOCKER_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP => {
            Some(if ext.is_empty() { "gzip" } else { "" })
        }
        MEDIA_TYPE_DOCKER_LAYER_ZSTD => Some(if ext.is_empty() { "zstd" } else { "" }),
        MEDIA_TYPE_OCI_LAYER | MEDIA_TYPE_OCI_LAYER_NON_DISTRIBUTABLE => Some(match ext.last() {
            Some(&"gzip") => "gzip",
            Some(&"zstd") => "zstd",
            _ => "",
        }),
        _ => None,
    }
}

/// Error from `from_json`: invalid JSON, or JSON that Go would refuse to decode into the type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciJsonError {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] JsonError),
    #[error("json: cannot unmarshal {found} into Go struct field {field} of type {go_type}")]
    Type {
        found: String,
        field: String,
        go_type: &'static str,
    },
    #[error("json: field {field}: {message}")]
    Base64 { field: String, message: String },
}

type DecodeResult = Result<(), OciJsonError>;

fn type_error(found: &Value, field: &str, go_type: &'static str) -> OciJsonError {
    let found = match found {
        Value::Number(n) => format!("number {n}"),
        other => other.kind().to_string(),
    };
    OciJsonError::Type {
        found,
        field: field.to_string(),
        go_type,
    }
}

/// The index of the struct field a key selects: exact name first, then Go's case folding.
fn field_for(key: &str, fields: &[&str]) -> Option<usize> {
    fields
        .iter()
        .position(|f| *f == key)
        .or_else(|| fields.iter().position(|f| gojson::key_matches(key, f)))
}

/// Decodes a JSON object member by member into `dst` (Go: `null` leaves a struct untouched).
fn decode_struct<T>(
    v: &Value,
    dst: &mut T,
    name: &str,
    fields: &[&str],
    mut member: impl FnMut(&mut T, usize, &Value) -> DecodeResult,
) -> DecodeResult {
    match v {
        Value::Null => Ok(()),
        Value::Object(members) => {
            for (key, value) in members {
                if let Some(i) = field_for(key, fields) {
                    member(dst, i, value)?;
                }
            }
            Ok(())
        }
        other => Err(type_error(other, name, "struct")),
    }
}

fn decode_string(v: &Value, dst: &mut String, field: &str) -> DecodeResult {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => {
            dst.clone_from(s);
            Ok(())
        }
        other => Err(type_error(other, field, "string")),
    }
}

fn decode_i64(v: &Value, dst: &mut i64, field: &str) -> DecodeResult {
    match v {
        Value::Null => Ok(()),
        Value::Number(n) => {
            *dst = gojson::parse_i64(n).ok_or_else(|| type_error(v, field, "int64"))?;
            Ok(())
        }
        other => Err(type_error(other, field, "int64")),
    }
}

/// Decodes a JSON array into a slice the way Go does: elements are decoded into the existing
/// elements where there are some, then the slice is cut to the array's length.
fn decode_slice<T: Default>(
    items: &[Value],
    vec: &mut Vec<T>,
    mut element: impl FnMut(&Value, &mut T) -> DecodeResult,
) -> DecodeResult {
    for (i, item) in items.iter().enumerate() {
        if i >= vec.len() {
            vec.push(T::default());
        }
        element(item, &mut vec[i])?;
    }
    vec.truncate(items.len());
    Ok(())
}

fn decode_opt_slice<T: Default>(
    v: &Value,
    dst: &mut Option<Vec<T>>,
    field: &str,
    element: impl FnMut(&Value, &mut T) -> DecodeResult,
) -> DecodeResult {
    match v {
        Value::Null => {
            *dst = None;
            Ok(())
        }
        Value::Array(items) => decode_slice(items, dst.get_or_insert_with(Vec::new), element),
        other => Err(type_error(other, field, "slice")),
    }
}

fn decode_string_map(
    v: &Value,
    dst: &mut Option<BTreeMap<String, String>>,
    field: &str,
) -> DecodeResult {
    match v {
        Value::Null => {
            *dst = None;
            Ok(())
        }
        Value::Object(members) => {
            let map = dst.get_or_insert_with(BTreeMap::new);
            for (key, value) in members {
                let mut s = String::new();
                decode_string(value, &mut s, field)?;
                map.insert(key.clone(), s);
            }
            Ok(())
        }
        other => Err(type_error(other, field, "map[string]string")),
    }
}

fn decode_bytes(v: &Value, dst: &mut Option<Vec<u8>>, field: &str) -> DecodeResult {
    match v {
        Value::Null => {
            *dst = None;
            Ok(())
        }
        Value::String(s) => {
            let bytes =
                gojson::base64_decode(s.as_bytes()).map_err(|message| OciJsonError::Base64 {
                    field: field.to_string(),
                    message,
                })?;
            *dst = Some(bytes);
            Ok(())
        }
        Value::Array(items) => {
            decode_slice(
                items,
                dst.get_or_insert_with(Vec::new),
                |item, b| match item {
                    Value::Null => Ok(()),
                    Value::Number(n) => {
                        *b = n
                            .parse::<u8>()
                            .ok()
                            .filter(|_| n.bytes().all(|c| c.is_ascii_digit()))
                            .ok_or_else(|| type_error(item, field, "uint8"))?;
                        Ok(())
                    }
                    other => Err(type_error(other, field, "uint8")),
                },
            )
        }
        other => Err(type_error(other, field, "[]uint8")),
    }
}

fn decode_opt_struct<T: Default>(
    v: &Value,
    dst: &mut Option<T>,
    field: &str,
    decode: impl FnOnce(&Value, &mut T) -> DecodeResult,
) -> DecodeResult {
    match v {
        Value::Null => {
            *dst = None;
            Ok(())
        }
        Value::Object(_) => decode(v, dst.get_or_insert_with(T::default)),
        other => Err(type_error(other, field, "struct")),
    }
}

fn parse_document(bytes: &[u8]) -> Result<Value, OciJsonError> {
    Ok(gojson::parse(bytes)?)
}

/// `platform` of a descriptor, and the platform fields of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// Empty = absent (`omitempty`).
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

const PLATFORM_FIELDS: &[&str] = &["architecture", "os", "os.version", "os.features", "variant"];

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        Self {
            architecture: architecture.into(),
            os: os.into(),
            variant: variant.into(),
            ..Default::default()
        }
    }

    /// `json.Unmarshal` into a zero `Platform` — also how containerd reads the platform of an
    /// image config (`ConfigPlatform`), where every other config field is ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, OciJsonError> {
        let mut p = Self::default();
        decode_platform(&parse_document(bytes)?, &mut p)?;
        Ok(p)
    }

    pub fn write_go_json(&self, out: &mut Vec<u8>) {
        let mut o = ObjectWriter::new(out);
        gojson::write_str(o.key("architecture"), &self.architecture);
        gojson::write_str(o.key("os"), &self.os);
        if !self.os_version.is_empty() {
            gojson::write_str(o.key("os.version"), &self.os_version);
        }
        if !self.os_features.is_empty() {
            gojson::write_string_array(o.key("os.features"), &self.os_features);
        }
        if !self.variant.is_empty() {
            gojson::write_str(o.key("variant"), &self.variant);
        }
        o.finish();
    }

    pub fn to_go_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_go_json(&mut out);
        out
    }
}

fn decode_platform(v: &Value, p: &mut Platform) -> DecodeResult {
    decode_struct(v, p, "Platform", PLATFORM_FIELDS, |p, i, value| match i {
        0 => decode_string(value, &mut p.architecture, "architecture"),
        1 => decode_string(value, &mut p.os, "os"),
        2 => decode_string(value, &mut p.os_version, "os.version"),
        3 => match value {
            Value::Null => {
                p.os_features.clear();
                Ok(())
            }
            Value::Array(items) => decode_slice(items, &mut p.os_features, |item, s| {
                decode_string(item, s, "os.features")
            }),
            other => Err(type_error(other, "os.features", "[]string")),
        },
        _ => decode_string(value, &mut p.variant, "variant"),
    })
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(skip_serializing_if = "slice_is_empty")]
    pub urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "map_is_empty")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(
        skip_serializing_if = "slice_is_empty",
        serialize_with = "serialize_base64"
    )]
    pub data: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
}

fn slice_is_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

fn map_is_empty(v: &Option<BTreeMap<String, String>>) -> bool {
    v.as_ref().is_none_or(BTreeMap::is_empty)
}

fn serialize_base64<S: serde::Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&gojson::base64_encode(data.as_deref().unwrap_or_default()))
}

const DESCRIPTOR_FIELDS: &[&str] = &[
    "mediaType",
    "digest",
    "size",
    "urls",
    "annotations",
    "data",
    "platform",
    "artifactType",
];

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: i64) -> Self {
        Self {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            ..Default::default()
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, OciJsonError> {
        let mut d = Self::default();
        decode_descriptor(&parse_document(bytes)?, &mut d)?;
        Ok(d)
    }

    /// The annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    pub fn write_go_json(&self, out: &mut Vec<u8>) {
        let mut o = ObjectWriter::new(out);
        gojson::write_str(o.key("mediaType"), &self.media_type);
        gojson::write_str(o.key("digest"), &self.digest);
        gojson::write_i64(o.key("size"), self.size);
        if let Some(urls) = self.urls.as_ref().filter(|u| !u.is_empty()) {
            gojson::write_string_array(o.key("urls"), urls);
        }
        if let Some(a) = self.annotations.as_ref().filter(|a| !a.is_empty()) {
            gojson::write_string_map(o.key("annotations"), a);
        }
        if let Some(data) = self.data.as_ref().filter(|d| !d.is_empty()) {
            gojson::write_base64(o.key("data"), data);
        }
        if let Some(p) = &self.platform {
            p.write_go_json(o.key("platform"));
        }
        if !self.artifact_type.is_empty() {
            gojson::write_str(o.key("artifactType"), &self.artifact_type);
        }
        o.finish();
    }

    pub fn to_go_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_go_json(&mut out);
        out
    }
}

fn decode_descriptor(v: &Value, d: &mut Descriptor) -> DecodeResult {
    decode_struct(
        v,
        d,
        "Descriptor",
        DESCRIPTOR_FIELDS,
        |d, i, value| match i {
            0 => decode_string(value, &mut d.media_type, "mediaType"),
            1 => decode_string(value, &mut d.digest, "digest"),
            2 => decode_i64(value, &mut d.size, "size"),
            3 => decode_opt_slice(value, &mut d.urls, "urls", |item, s| {
                decode_string(item, s, "urls")
            }),
            4 => decode_string_map(value, &mut d.annotations, "annotations"),
            5 => decode_bytes(value, &mut d.data, "data"),
            6 => decode_opt_struct(value, &mut d.platform, "platform", decode_platform),
            _ => decode_string(value, &mut d.artifact_type, "artifactType"),
        },
    )
}

fn write_descriptor_list(out: &mut Vec<u8>, list: &Option<Vec<Descriptor>>) {
    match list {
        None => out.extend_from_slice(b"null"),
        Some(items) => {
            out.push(b'[');
            for (i, d) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                d.write_go_json(out);
            }
            out.push(b']');
        }
    }
}

/// An image manifest (also the document form of a SOCI index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub schema_version: i64,
    pub media_type: String,
    pub artifact_type: String,
    pub config: Descriptor,
    /// `None` is written as `null` (no `omitempty` on this field).
    pub layers: Option<Vec<Descriptor>>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

const MANIFEST_FIELDS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "artifactType",
    "config",
    "layers",
    "subject",
    "annotations",
];

impl Manifest {
    pub fn from_json(bytes: &[u8]) -> Result<Self, OciJsonError> {
        let mut m = Self::default();
        decode_struct(
            &parse_document(bytes)?,
            &mut m,
            "Manifest",
            MANIFEST_FIELDS,
            |m, i, value| match i {
                0 => decode_i64(value, &mut m.schema_version, "schemaVersion"),
                1 => decode_string(value, &mut m.media_type, "mediaType"),
                2 => decode_string(value, &mut m.artifact_type, "artifactType"),
                3 => decode_descriptor(value, &mut m.config),
                4 => decode_opt_slice(value, &mut m.layers, "layers", decode_descriptor),
                5 => decode_opt_struct(value, &mut m.subject, "subject", decode_descriptor),
                _ => decode_string_map(value, &mut m.annotations, "annotations"),
            },
        )?;
        Ok(m)
    }

    pub fn to_go_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut o = ObjectWriter::new(&mut out);
        gojson::write_i64(o.key("schemaVersion"), self.schema_version);
        if !self.media_type.is_empty() {
            gojson::write_str(o.key("mediaType"), &self.media_type);
        }
        if !self.artifact_type.is_empty() {
            gojson::write_str(o.key("artifactType"), &self.artifact_type);
        }
        self.config.write_go_json(o.key("config"));
        write_descriptor_list(o.key("layers"), &self.layers);
        if let Some(s) = &self.subject {
            s.write_go_json(o.key("subject"));
        }
        if let Some(a) = self.annotations.as_ref().filter(|a| !a.is_empty()) {
            gojson::write_string_map(o.key("annotations"), a);
        }
        o.finish();
        out
    }
}

/// An image index (or a Docker manifest list read as one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub schema_version: i64,
    pub media_type: String,
    pub artifact_type: String,
    /// `None` is written as `null` (no `omitempty` on this field).
    pub manifests: Option<Vec<Descriptor>>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

const INDEX_FIELDS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "artifactType",
    "manifests",
    "subject",
    "annotations",
];

impl Index {
    pub fn from_json(bytes: &[u8]) -> Result<Self, OciJsonError> {
        let mut x = Self::default();
        decode_struct(
            &parse_document(bytes)?,
            &mut x,
            "Index",
            INDEX_FIELDS,
            |x, i, value| match i {
                0 => decode_i64(value, &mut x.schema_version, "schemaVersion"),
                1 => decode_string(value, &mut x.media_type, "mediaType"),
                2 => decode_string(value, &mut x.artifact_type, "artifactType"),
                3 => decode_opt_slice(value, &mut x.manifests, "manifests", decode_descriptor),
                4 => decode_opt_struct(value, &mut x.subject, "subject", decode_descriptor),
                _ => decode_string_map(value, &mut x.annotations, "annotations"),
            },
        )?;
        Ok(x)
    }

    pub fn to_go_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut o = ObjectWriter::new(&mut out);
        gojson::write_i64(o.key("schemaVersion"), self.schema_version);
        if !self.media_type.is_empty() {
            gojson::write_str(o.key("mediaType"), &self.media_type);
        }
        if !self.artifact_type.is_empty() {
            gojson::write_str(o.key("artifactType"), &self.artifact_type);
        }
        write_descriptor_list(o.key("manifests"), &self.manifests);
        if let Some(s) = &self.subject {
            s.write_go_json(o.key("subject"));
        }
        if let Some(a) = self.annotations.as_ref().filter(|a| !a.is_empty()) {
            gojson::write_string_map(o.key("annotations"), a);
        }
        o.finish();
        out
    }
}

/// containerd's `validateMediaType` (and soci's `ociutil.ValidateMediaType`): decodes the blob
/// into `{mediaType, config, layers, manifests, fsLayers}` (the last four as raw JSON, so a key
/// that is present counts even when its value is `null`) and refuses schema 1 and a blob whose
/// shape contradicts `media_type`.
pub fn validate_media_type(bytes: &[u8], media_type: &str) -> Result<(), String> {
    let doc = gojson::parse(bytes).map_err(|e| e.to_string())?;
    const FIELDS: &[&str] = &["mediaType", "config", "layers", "manifests", "fsLayers"];
    let mut doc_media_type = String::new();
    let mut present = [false; 5];
    decode_struct(&doc, &mut (), "unknownDocument", FIELDS, |_, i, value| {
        present[i] = true;
        if i == 0 {
            decode_string(value, &mut doc_media_type, "mediaType")
        } else {
            Ok(())
        }
    })
    .map_err(|e| e.to_string())?;
    let [_, config, layers, manifests, fs_layers] = present;
    if fs_layers {
        return Err("media-type: schema 1 not supported".into());
    }
    if is_manifest_type(media_type) && (manifests || is_index_type(&doc_media_type)) {
        return Err(format!(
            "media-type: expected manifest but found index ({media_type})"
        ));
    }
    if is_index_type(media_type) && (config || layers || is_manifest_type(&doc_media_type)) {
        return Err(format!(
            "media-type: expected index but found manifest ({media_type})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_digest() {
        assert_eq!(sha256_digest(SOCI_EMPTY_CONFIG), SOCI_EMPTY_CONFIG_DIGEST);
    }

    #[test]
    fn descriptor_field_order_and_omitempty() {
        let mut d = Descriptor::new("", "", 0);
        assert_eq!(d.to_go_json(), br#"{"mediaType":"","digest":"","size":0}"#);
        d = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, "sha256:ab", 7);
        d.urls = Some(vec!["http://x/?a=1&b=2".into()]);
        d.annotations = Some(BTreeMap::from([
            ("z".into(), "1".into()),
            ("a".into(), "<2>".into()),
        ]));
        d.data = Some(b"hi".to_vec());
        d.platform = Some(Platform {
            os_version: "10.0".into(),
            os_features: vec!["win32k".into()],
            ..Platform::new("windows", "amd64", "v2")
        });
        d.artifact_type = "t".into();
        assert_eq!(
            String::from_utf8(d.to_go_json()).unwrap(),
            concat!(
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ab","size":7,"#,
                r#""urls":["http://x/?a=1\u0026b=2"],"annotations":{"a":"\u003c2\u003e","z":"1"},"data":"aGk=","#,
                r#""platform":{"architecture":"amd64","os":"windows","os.version":"10.0","os.features":["win32k"],"variant":"v2"},"#,
                r#""artifactType":"t"}"#
            )
        );
        // Empty collections are omitted like nil ones.
        d = Descriptor::new("m", "d", 1);
        d.urls = Some(vec![]);
        d.annotations = Some(BTreeMap::new());
        d.data = Some(vec![]);
        assert_eq!(
            d.to_go_json(),
            br#"{"mediaType":"m","digest":"d","size":1}"#
        );
    }

    #[test]
    fn manifest_and_index_null_lists() {
        assert_eq!(
            Manifest::default().to_go_json(),
            br#"{"schemaVersion":0,"config":{"mediaType":"","digest":"","size":0},"layers":null}"#
        );
        assert_eq!(
            Index::default().to_go_json(),
            br#"{"schemaVersion":0,"manifests":null}"#
        );
        let i = Index {
            schema_version: 2,
            manifests: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(i.to_go_json(), br#"{"schemaVersion":2,"manifests":[]}"#);
    }

    #[test]
    fn unmarshal_go_semantics() {
        let json = br#"{
            "SchemaVersion": 2, "unknown": {"deep": [1, {"x": null}]},
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "c", "digest": "sha256:1", "size": 3, "extra": true},
            "layers": [{"mediatype": "l", "digest": "sha256:2", "size": 4, "urls": [], "data": "aGk="}],
            "annotations": {"a": "1", "b": null}, "annotations": {"c": "3"},
            "subject": null
        }"#;
        let m = Manifest::from_json(json).unwrap();
        assert_eq!(m.schema_version, 2);
        assert_eq!(m.config, Descriptor::new("c", "sha256:1", 3));
        let layers = m.layers.clone().unwrap();
        assert_eq!(layers[0].media_type, "l");
        assert_eq!(layers[0].urls, Some(vec![]));
        assert_eq!(layers[0].data.as_deref(), Some(&b"hi"[..]));
        let a = m.annotations.clone().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a["b"], "");
        assert_eq!(
            String::from_utf8(m.to_go_json()).unwrap(),
            concat!(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
                r#""config":{"mediaType":"c","digest":"sha256:1","size":3},"#,
                r#""layers":[{"mediaType":"l","digest":"sha256:2","size":4,"data":"aGk="}],"#,
                r#""annotations":{"a":"1","b":"","c":"3"}}"#
            )
        );
        // null leaves scalars alone and clears lists; [] is an empty list.
        let m = Manifest::from_json(
            br#"{"schemaVersion":2,"schemaVersion":null,"layers":[{}],"layers":null}"#,
        )
        .unwrap();
        assert_eq!(m.schema_version, 2);
        assert_eq!(m.layers, None);
        let i = Index::from_json(br#"{"manifests":[]}"#).unwrap();
        assert_eq!(i.manifests, Some(vec![]));
        // Repeated arrays decode into the existing elements (Go reuses the backing array).
        let i = Index::from_json(
            br#"{"manifests":[{"mediaType":"a","size":5}],"manifests":[{"digest":"d"}]}"#,
        )
        .unwrap();
        assert_eq!(i.manifests.unwrap()[0], Descriptor::new("a", "d", 5));
        // Type mismatches and non-integers are errors.
        for bad in [
            &br#"{"schemaVersion":"2"}"#[..],
            br#"{"schemaVersion":2.0}"#,
            br#"{"config":[]}"#,
            br#"{"layers":{}}"#,
            br#"{"annotations":{"a":1}}"#,
            br#"{"config":{"data":"!!!!"}}"#,
            br#"[]"#,
            br#"{"config":{"size":1e3}}"#,
        ] {
            assert!(
                Manifest::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(Manifest::from_json(b"null").unwrap(), Manifest::default());
    }

    #[test]
    fn platform_from_config() {
        let config = br#"{"architecture":"arm64","os":"linux","variant":"v8","config":{"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":[]},"os.features":["x"]}"#;
        let p = Platform::from_json(config).unwrap();
        assert_eq!(
            p,
            Platform {
                os_features: vec!["x".into()],
                ..Platform::new("linux", "arm64", "v8")
            }
        );
    }

    #[test]
    fn media_type_predicates() {
        assert!(is_layer_type("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(is_layer_type(
            "application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted"
        ));
        assert!(!is_layer_type(MEDIA_TYPE_OCI_CONFIG));
        assert_eq!(diff_compression(MEDIA_TYPE_OCI_LAYER_GZIP), Some("gzip"));
        assert_eq!(diff_compression(MEDIA_TYPE_OCI_LAYER), Some(""));
        assert_eq!(diff_compression(MEDIA_TYPE_OCI_LAYER_ZSTD), Some("zstd"));
        assert_eq!(
            diff_compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            Some("gzip")
        );
        assert_eq!(
            diff_compression("application/vnd.oci.image.layer.v1.tar+encrypted"),
            Some("")
        );
        assert_eq!(diff_compression(MEDIA_TYPE_DOCKER_LAYER), Some("unknown"));
        assert_eq!(diff_compression(MEDIA_TYPE_DOCKER_LAYER_GZIP), Some("gzip"));
        assert_eq!(
            diff_compression("application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted"),
            Some("")
        );
        assert_eq!(
            diff_compression("application/vnd.oci.image.layer.v2.tar"),
            None
        );
    }

    #[test]
    fn validate_media_type_like_containerd() {
        assert!(validate_media_type(br#"{"layers":[]}"#, MEDIA_TYPE_OCI_MANIFEST).is_ok());
        assert!(validate_media_type(br#"{"manifests":null}"#, MEDIA_TYPE_OCI_MANIFEST).is_err());
        assert!(validate_media_type(br#"{"Config":{}}"#, MEDIA_TYPE_OCI_INDEX).is_err());
        assert!(
            validate_media_type(
                br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                MEDIA_TYPE_DOCKER_MANIFEST_LIST
            )
            .is_err()
        );
        assert!(validate_media_type(br#"{"fsLayers":[]}"#, "x").is_err());
        assert!(validate_media_type(br#"{"mediaType":1}"#, "x").is_err());
        assert!(validate_media_type(b"null", MEDIA_TYPE_OCI_INDEX).is_ok());
    }
}
