//! `oracle`: runs the upstream `soci` CLI (the compatibility oracle) and compares converted layouts.
//!
//! * [`upstream_soci`]: `$SOCI_BIN`, else `<bash e2e/tools.sh --print-dir>/soci`
//!   (`${SOCI_OPERATOR_CACHE:-$HOME/.cache/soci-operator}/tools/bin/soci`), `None` if absent.
//! * [`upstream_convert`]: `soci --root <private> convert --standalone --format oci-dir [args] SRC DST`
//!   with `TZ=UTC` and a private `TMPDIR`. Standalone mode needs no containerd; it keeps its
//!   working copy of the layout and its artifacts DB in `os.TempDir()` (hence the private
//!   `TMPDIR`), never in `--root` — the private `--root` is belt and braces.
//!   The output directory is a *copy of the whole input layout* plus the new blobs, with
//!   `index.json` = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[<converted index>]}`.
//! * [`ours_convert`]: `soci-operator convert oci:SRC oci:DST [args]` with `TZ=UTC`.
//! * [`compare_layouts`]: byte-identity of the converted image (top descriptor, then every blob
//!   reachable from it), with an explanation of what differs.
//! * [`check_sync_flush_divergence`]: for streams where upstream writes a zero-length span: the
//!   structure must match upstream, only zTOC bytes (and the digests that depend on them) may differ.
//! * [`TempDir`]: a self-deleting temporary directory (no `tempfile` dependency).

use crate::layout::{blob_path, sha256_digest};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// SOCI v2 index artifact type.
pub const SOCI_V2: &str = "application/vnd.amazon.soci.index.v2+json";
const LAYER_DIGEST_KEY: &str = "com.amazon.soci.image-layer-digest";
const INDEX_DIGEST_KEY: &str = "com.amazon.soci.index-digest";
const MANIFEST_DIGEST_KEY: &str = "com.amazon.soci.image-manifest-digest";

/// A temporary directory removed on drop (unless `SOCI_TESTKIT_KEEP=1`).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create `<$SOCI_TESTKIT_TMP or the OS temp dir>/<prefix>-<pid>-<n>-<nanos>`.
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("SOCI_TESTKIT_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = base.join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SOCI_TESTKIT_KEEP").is_none_or(|v| v != "1") {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Locate the upstream `soci` binary: `$SOCI_BIN`, else `soci` in the directory printed by
/// `bash e2e/tools.sh --print-dir` (run from the workspace root). `None` if it does not exist.
pub fn upstream_soci() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SOCI_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let root = workspace_root();
    let dir = Command::new("bash")
        .arg("e2e/tools.sh")
        .arg("--print-dir")
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .or_else(|| {
            let base = std::env::var_os("SOCI_OPERATOR_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/soci-operator"))
                })?;
            Some(base.join("tools/bin"))
        })?;
    let p = dir.join("soci");
    p.is_file().then_some(p)
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} exited with {}\nstderr: {}\nstdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// `soci convert --standalone --format oci-dir [args] SRC DST` with `TZ=UTC`, a private `--root`
/// and a private `TMPDIR` (removed afterwards). `Err` holds the exit status and output.
pub fn upstream_convert(
    soci: &Path,
    src: &Path,
    dst: &Path,
    args: &[String],
) -> Result<(), String> {
    let tmp = TempDir::new("soci-upstream").map_err(|e| format!("temp dir: {e}"))?;
    let root = tmp.path().join("root");
    let tmpdir = tmp.path().join("tmp");
    fs::create_dir_all(&root)
        .and_then(|_| fs::create_dir_all(&tmpdir))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(soci);
    cmd.arg("--root")
        .arg(&root)
        .args(["convert", "--standalone", "--format", "oci-dir"])
        .args(args)
        .arg(src)
        .arg(dst)
        .env("TZ", "UTC")
        .env("TMPDIR", &tmpdir)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE");
    run(cmd, "upstream soci convert")
}

/// `<bin> convert oci:SRC oci:DST [args]` with `TZ=UTC`.
pub fn ours_convert(bin: &Path, src: &Path, dst: &Path, args: &[String]) -> Result<(), String> {
    let mut cmd = Command::new(bin);
    cmd.arg("convert")
        .arg(format!("oci:{}", src.display()))
        .arg(format!("oci:{}", dst.display()))
        .args(args)
        .env("TZ", "UTC");
    run(cmd, "soci-operator convert")
}

/// Result of running one corpus case through upstream only.
#[derive(Debug)]
pub struct UpstreamRun {
    pub name: String,
    pub expect: crate::corpus::Expect,
    /// Bytes of the input layout.
    pub input_bytes: u64,
    pub elapsed: Duration,
    pub result: Result<(), String>,
    /// Number of SOCI indexes / zTOCs in upstream's output (0 on failure).
    pub soci_indexes: usize,
    pub ztocs: usize,
}

impl UpstreamRun {
    /// True if upstream behaved as the case expects.
    pub fn as_expected(&self) -> bool {
        (self.expect == crate::corpus::Expect::UpstreamFails) == self.result.is_err()
    }
}

/// Write a case and convert it with upstream only (used to validate the corpus itself).
pub fn run_upstream_case(soci: &Path, case: &crate::corpus::CorpusCase) -> UpstreamRun {
    let mut r = UpstreamRun {
        name: case.name.clone(),
        expect: case.expect,
        input_bytes: 0,
        elapsed: Duration::ZERO,
        result: Ok(()),
        soci_indexes: 0,
        ztocs: 0,
    };
    let tmp = match TempDir::new("soci-case") {
        Ok(t) => t,
        Err(e) => {
            r.result = Err(format!("temp dir: {e}"));
            return r;
        }
    };
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    if let Err(e) = (case.write)(&src) {
        r.result = Err(format!("writing the case failed: {e}"));
        return r;
    }
    r.input_bytes = crate::layout::dir_size(&src);
    let t = Instant::now();
    r.result = upstream_convert(soci, &src, &dst, &case.convert_args);
    r.elapsed = t.elapsed();
    if r.result.is_ok()
        && let Ok(s) = summarize(&dst)
    {
        r.soci_indexes = s.0;
        r.ztocs = s.1;
    }
    r
}

/// (number of SOCI indexes, number of zTOCs) in a converted layout.
pub fn summarize(layout: &Path) -> Result<(usize, usize), String> {
    let top = top_descriptor(layout)?;
    let idx = read_json(layout, str_field(&top, "digest"))?;
    let mut n = (0, 0);
    for m in arr(&idx, "manifests") {
        if str_field(m, "artifactType") == SOCI_V2 {
            n.0 += 1;
            let si = read_json(layout, str_field(m, "digest"))?;
            n.1 += arr(&si, "layers").len();
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Layout reading helpers.

fn read_blob(root: &Path, digest: &str) -> Result<Vec<u8>, String> {
    fs::read(blob_path(root, digest)).map_err(|e| format!("{}: blob {digest}: {e}", root.display()))
}

fn read_json(root: &Path, digest: &str) -> Result<Value, String> {
    let b = read_blob(root, digest)?;
    serde_json::from_slice(&b)
        .map_err(|e| format!("{}: blob {digest} is not JSON: {e}", root.display()))
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn annotation<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get("annotations")
        .and_then(|a| a.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The single descriptor listed by `index.json`.
fn top_descriptor(root: &Path) -> Result<Value, String> {
    let p = root.join("index.json");
    let b = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let v: Value = serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))?;
    let ms = arr(&v, "manifests");
    if ms.len() != 1 {
        return Err(format!(
            "{}: expected exactly one descriptor, found {}",
            p.display(),
            ms.len()
        ));
    }
    Ok(ms[0].clone())
}

fn platform_key(d: &Value) -> String {
    match d.get("platform") {
        None => "-".into(),
        Some(p) => {
            let mut s = format!("{}/{}", str_field(p, "os"), str_field(p, "architecture"));
            let v = str_field(p, "variant");
            if !v.is_empty() {
                s.push('/');
                s.push_str(v);
            }
            s
        }
    }
}

fn entry_kind(d: &Value) -> &'static str {
    if str_field(d, "artifactType") == SOCI_V2 {
        "soci-index"
    } else if platform_key(d) == "unknown/unknown" {
        "attestation"
    } else {
        "manifest"
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(if a.len() != b.len() {
            Some(a.len().min(b.len()))
        } else {
            None
        })
}

fn snippet(b: &[u8], at: usize) -> String {
    let s = at.saturating_sub(60);
    let e = (at + 60).min(b.len());
    format!("…{}…", String::from_utf8_lossy(&b[s..e]))
}

/// Text comparison of two JSON blobs: `None` if equal, else a description.
fn text_diff(what: &str, ours: &[u8], theirs: &[u8]) -> Option<String> {
    let at = first_diff(ours, theirs)?;
    Some(format!(
        "{what}: first difference at byte {at} (ours {} bytes, theirs {} bytes)\n      ours:   {}\n      theirs: {}",
        ours.len(),
        theirs.len(),
        snippet(ours, at),
        snippet(theirs, at)
    ))
}

/// Every blob reachable from `desc` (index → manifests → config/layers/subject): digest → present.
fn reachable(root: &Path, desc: &Value, out: &mut BTreeMap<String, bool>) {
    let digest = str_field(desc, "digest").to_string();
    if digest.is_empty() || out.contains_key(&digest) {
        return;
    }
    let path = blob_path(root, &digest);
    let present = path.is_file();
    out.insert(digest.clone(), present);
    if !present {
        return;
    }
    let mt = str_field(desc, "mediaType");
    if !(mt.ends_with("index.v1+json")
        || mt.ends_with("list.v2+json")
        || mt.ends_with("manifest.v1+json")
        || mt.ends_with("manifest.v2+json"))
    {
        return;
    }
    let Ok(v) = read_json(root, &digest) else {
        return;
    };
    for m in arr(&v, "manifests") {
        reachable(root, m, out);
    }
    if let Some(c) = v.get("config") {
        reachable(root, c, out);
    }
    for l in arr(&v, "layers") {
        reachable(root, l, out);
    }
    if let Some(s) = v.get("subject") {
        reachable(root, s, out);
    }
}

/// Compare two converted layouts. `Ok` when the descriptor in `index.json` is the same
/// (mediaType, digest, size; other annotations on it are tolerated) and every blob reachable from
/// it in `theirs` exists in `ours` with the right content. Otherwise `Err` explains what differs:
/// the image index text; per entry (paired by kind and platform) the descriptor fields; per SOCI
/// index its JSON text and, per layer, the zTOC digests/sizes and the first differing zTOC byte.
pub fn compare_layouts(ours: &Path, theirs: &Path) -> Result<(), String> {
    let mut rep: Vec<String> = Vec::new();
    let t_top = top_descriptor(theirs).map_err(|e| format!("upstream layout unreadable: {e}"))?;
    let o_top = top_descriptor(ours)?;
    let same_top = ["mediaType", "digest", "size"]
        .iter()
        .all(|k| o_top.get(*k) == t_top.get(*k));
    if same_top {
        let mut t_blobs = BTreeMap::new();
        reachable(theirs, &t_top, &mut t_blobs);
        for (d, present) in t_blobs {
            if !present {
                continue;
            }
            match fs::read(blob_path(ours, &d)) {
                Err(e) => rep.push(format!("blob {d} (present upstream) missing in ours: {e}")),
                Ok(b) if sha256_digest(&b) != d => {
                    rep.push(format!("blob {d} in ours has wrong content"))
                }
                Ok(_) => {}
            }
        }
        return if rep.is_empty() {
            Ok(())
        } else {
            Err(rep.join("\n"))
        };
    }

    rep.push(format!(
        "converted image differs:\n  ours:   {}\n  theirs: {}",
        serde_json::to_string(&o_top).unwrap_or_default(),
        serde_json::to_string(&t_top).unwrap_or_default()
    ));
    let (ob, tb) = match (
        read_blob(ours, str_field(&o_top, "digest")),
        read_blob(theirs, str_field(&t_top, "digest")),
    ) {
        (Ok(o), Ok(t)) => (o, t),
        (o, t) => {
            for e in [o.err(), t.err()].into_iter().flatten() {
                rep.push(format!("  {e}"));
            }
            return Err(rep.join("\n"));
        }
    };
    if let Some(d) = text_diff("image index", &ob, &tb) {
        rep.push(format!("  {d}"));
    }
    let (Ok(oi), Ok(ti)) = (
        serde_json::from_slice::<Value>(&ob),
        serde_json::from_slice::<Value>(&tb),
    ) else {
        rep.push("  an image index is not JSON".into());
        return Err(rep.join("\n"));
    };
    // Pair entries by (kind, platform, occurrence).
    let keyed = |idx: &Value| -> Vec<(String, Value)> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        arr(idx, "manifests")
            .iter()
            .map(|m| {
                let k = format!("{} {}", entry_kind(m), platform_key(m));
                let n = seen.entry(k.clone()).or_default();
                *n += 1;
                (format!("{k} #{n}"), m.clone())
            })
            .collect()
    };
    let oe = keyed(&oi);
    let te = keyed(&ti);
    let ok: Vec<&String> = oe.iter().map(|(k, _)| k).collect();
    let tk: Vec<&String> = te.iter().map(|(k, _)| k).collect();
    if ok != tk {
        rep.push(format!(
            "  entries (kind platform #n):\n    ours:   {ok:?}\n    theirs: {tk:?}"
        ));
    }
    for (k, t) in &te {
        let Some((_, o)) = oe.iter().find(|(ko, _)| ko == k) else {
            rep.push(format!("  [{k}] missing in ours"));
            continue;
        };
        let ot = serde_json::to_vec(o).unwrap_or_default();
        let tt = serde_json::to_vec(t).unwrap_or_default();
        if ot == tt {
            continue;
        }
        let mut fields = Vec::new();
        for f in [
            "mediaType",
            "digest",
            "size",
            "annotations",
            "platform",
            "artifactType",
        ] {
            if o.get(f) != t.get(f) {
                fields.push(format!(
                    "{f}: ours {} theirs {}",
                    o.get(f).map(Value::to_string).unwrap_or("-".into()),
                    t.get(f).map(Value::to_string).unwrap_or("-".into())
                ));
            }
        }
        rep.push(format!(
            "  [{k}] descriptor differs:\n    {}",
            fields.join("\n    ")
        ));
        if o.get("digest") == t.get("digest") {
            continue;
        }
        match (
            read_blob(ours, str_field(o, "digest")),
            read_blob(theirs, str_field(t, "digest")),
        ) {
            (Ok(obl), Ok(tbl)) => {
                if let Some(d) = text_diff(&format!("[{k}] JSON"), &obl, &tbl) {
                    rep.push(format!("    {d}"));
                }
                if entry_kind(t) == "soci-index" {
                    rep.extend(
                        compare_soci_layers(ours, theirs, &obl, &tbl)
                            .into_iter()
                            .map(|l| format!("    {l}")),
                    );
                }
            }
            (o, t) => {
                for e in [o.err(), t.err()].into_iter().flatten() {
                    rep.push(format!("    {e}"));
                }
            }
        }
    }
    for (k, _) in &oe {
        if !te.iter().any(|(kt, _)| kt == k) {
            rep.push(format!("  [{k}] only in ours"));
        }
    }
    Err(rep.join("\n"))
}

/// `key: ours X theirs Y` for every annotation whose value differs (or exists on one side only).
fn annotation_diffs(o: &Value, t: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let oa = o
        .get("annotations")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let ta = t
        .get("annotations")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let keys: BTreeSet<&String> = oa.keys().chain(ta.keys()).collect();
    keys.into_iter()
        .filter(|k| oa.get(*k) != ta.get(*k))
        .map(|k| {
            let show =
                |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "(absent)".into());
            format!("{k}: ours {} theirs {}", show(oa.get(k)), show(ta.get(k)))
        })
        .collect()
}

/// Per-layer zTOC comparison of two SOCI index documents.
fn compare_soci_layers(ours: &Path, theirs: &Path, ob: &[u8], tb: &[u8]) -> Vec<String> {
    let mut rep = Vec::new();
    let (Ok(o), Ok(t)) = (
        serde_json::from_slice::<Value>(ob),
        serde_json::from_slice::<Value>(tb),
    ) else {
        return vec!["a SOCI index is not JSON".into()];
    };
    for f in [
        "schemaVersion",
        "mediaType",
        "config",
        "annotations",
        "subject",
        "artifactType",
    ] {
        if o.get(f) != t.get(f) {
            rep.push(format!(
                "SOCI index {f}: ours {:?} theirs {:?}",
                o.get(f),
                t.get(f)
            ));
        }
    }
    let by_layer = |v: &Value| -> Vec<(String, Value)> {
        arr(v, "layers")
            .iter()
            .map(|l| (annotation(l, LAYER_DIGEST_KEY).to_string(), l.clone()))
            .collect()
    };
    let ol = by_layer(&o);
    let tl = by_layer(&t);
    let short = |d: &str| {
        d.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    for (i, (ld, tz)) in tl.iter().enumerate() {
        let Some(oi) = ol.iter().position(|(l, _)| l == ld) else {
            rep.push(format!(
                "layer {} (#{i}): upstream has zTOC {} ({} bytes), ours has none",
                short(ld),
                short(str_field(tz, "digest")),
                tz["size"]
            ));
            continue;
        };
        let oz = &ol[oi].1;
        if oi != i {
            rep.push(format!(
                "layer {}: position ours #{oi} theirs #{i}",
                short(ld)
            ));
        }
        if oz.get("mediaType") != tz.get("mediaType") {
            rep.push(format!(
                "layer {}: zTOC mediaType ours {} theirs {}",
                short(ld),
                oz["mediaType"],
                tz["mediaType"]
            ));
        }
        for d in annotation_diffs(oz, tz) {
            rep.push(format!(
                "layer {}: zTOC descriptor annotation {d}",
                short(ld)
            ));
        }
        if oz.get("digest") == tz.get("digest") {
            rep.push(format!(
                "layer {}: zTOC identical ({} bytes)",
                short(ld),
                tz["size"]
            ));
            continue;
        }
        let detail = match (
            read_blob(ours, str_field(oz, "digest")),
            read_blob(theirs, str_field(tz, "digest")),
        ) {
            (Ok(a), Ok(b)) => match first_diff(&a, &b) {
                Some(at) => format!("first differing byte at offset {at}"),
                None => "same bytes (?)".into(),
            },
            (a, b) => [a.err(), b.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
        };
        rep.push(format!(
            "layer {}: zTOC differs: ours {} ({} bytes) theirs {} ({} bytes): {detail}",
            short(ld),
            short(str_field(oz, "digest")),
            oz["size"],
            short(str_field(tz, "digest")),
            tz["size"]
        ));
    }
    for (ld, oz) in &ol {
        if !tl.iter().any(|(l, _)| l == ld) {
            rep.push(format!(
                "layer {}: ours has zTOC {} ({} bytes), upstream has none",
                short(ld),
                short(str_field(oz, "digest")),
                oz["size"]
            ));
        }
    }
    rep
}

/// Callback for [`check_sync_flush_divergence`]: `(layer digest, our zTOC, upstream zTOC)`.
pub type ZtocCheck<'a> = &'a dyn Fn(&str, &[u8], &[u8]) -> Result<(), String>;

/// The rule for `Expect::SyncFlushDivergence` (upstream records a second checkpoint at
/// uncompressed offset 0, a zero-length span that its own runtime rejects).
///
/// Checks, position by position, that the converted image index, each SOCI index and each
/// annotated image manifest are the same JSON *structure* as upstream's once the values that
/// depend on zTOC bytes are masked: zTOC `digest`/`size`, the digests/sizes of entries whose
/// digest differs, `com.amazon.soci.index-digest` and `com.amazon.soci.image-manifest-digest`.
/// JSON is compared as values (key order is not checked here). For every zTOC pair that differs,
/// `ztoc_check` (if given) decides whether the difference is acceptable — e.g. a caller that can
/// parse zTOCs asserts that ours equals upstream's minus the duplicate checkpoint.
///
/// Returns the number of zTOCs that differ (0 means ours reproduced upstream byte for byte).
pub fn check_sync_flush_divergence(
    ours: &Path,
    theirs: &Path,
    ztoc_check: Option<ZtocCheck>,
) -> Result<usize, String> {
    let cmp = match compare_layouts(ours, theirs) {
        Ok(()) => return Ok(0),
        Err(e) => e,
    };
    let t_top = top_descriptor(theirs)?;
    let o_top = top_descriptor(ours)?;
    if o_top.get("mediaType") != t_top.get("mediaType") {
        return Err(format!(
            "top descriptor mediaType differs: ours {o_top} theirs {t_top}"
        ));
    }
    let oi = read_json(ours, str_field(&o_top, "digest"))?;
    let ti = read_json(theirs, str_field(&t_top, "digest"))?;
    let om = arr(&oi, "manifests");
    let tm = arr(&ti, "manifests");
    if om.len() != tm.len() {
        return Err(format!(
            "image index has {} entries in ours, {} upstream",
            om.len(),
            tm.len()
        ));
    }
    let mask = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(a) = v.get_mut("annotations").and_then(Value::as_object_mut) {
            for k in [INDEX_DIGEST_KEY, MANIFEST_DIGEST_KEY] {
                if a.contains_key(k) {
                    a.insert(k.into(), Value::String("<masked>".into()));
                }
            }
        }
        v
    };
    let mask_desc = |v: &Value| -> Value {
        let mut v = mask(v);
        v["digest"] = Value::String("<masked>".into());
        v["size"] = Value::from(0);
        v
    };
    let mut differing = 0;
    let mut errs = Vec::new();
    for (i, (o, t)) in om.iter().zip(tm).enumerate() {
        let k = format!("entry #{i} ({} {})", entry_kind(t), platform_key(t));
        if o.get("digest") == t.get("digest") {
            if o != t {
                errs.push(format!(
                    "{k}: same digest but descriptor differs: ours {o} theirs {t}"
                ));
            }
            continue;
        }
        if mask_desc(o) != mask_desc(t) {
            errs.push(format!(
                "{k}: descriptor differs beyond digests: ours {o} theirs {t}"
            ));
        }
        let (ob, tb) = match (
            read_json(ours, str_field(o, "digest")),
            read_json(theirs, str_field(t, "digest")),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                errs.extend(
                    [a.err(), b.err()]
                        .into_iter()
                        .flatten()
                        .map(|e| format!("{k}: {e}")),
                );
                continue;
            }
        };
        if entry_kind(t) != "soci-index" {
            if mask(&ob) != mask(&tb) {
                let (a, b) = (
                    serde_json::to_vec(&mask(&ob)).unwrap_or_default(),
                    serde_json::to_vec(&mask(&tb)).unwrap_or_default(),
                );
                let d = text_diff("masked manifest", &a, &b).unwrap_or_default();
                errs.push(format!(
                    "{k}: manifest differs beyond com.amazon.soci.index-digest: {d}"
                ));
            }
            continue;
        }
        let ol = arr(&ob, "layers");
        let tl = arr(&tb, "layers");
        if ol.len() != tl.len() {
            errs.push(format!(
                "{k}: {} zTOCs in ours, {} upstream",
                ol.len(),
                tl.len()
            ));
            continue;
        }
        let mut ob2 = ob.clone();
        let mut tb2 = tb.clone();
        for (j, (oz, tz)) in ol.iter().zip(tl).enumerate() {
            if oz.get("digest") == tz.get("digest") {
                continue;
            }
            differing += 1;
            ob2["layers"][j] = mask_desc(oz);
            tb2["layers"][j] = mask_desc(tz);
            if let Some(check) = ztoc_check {
                let layer = annotation(tz, LAYER_DIGEST_KEY);
                match (
                    read_blob(ours, str_field(oz, "digest")),
                    read_blob(theirs, str_field(tz, "digest")),
                ) {
                    (Ok(a), Ok(b)) => {
                        if let Err(e) = check(layer, &a, &b) {
                            errs.push(format!("{k}: zTOC of layer {layer}: {e}"));
                        }
                    }
                    (a, b) => errs.extend(
                        [a.err(), b.err()]
                            .into_iter()
                            .flatten()
                            .map(|e| format!("{k}: {e}")),
                    ),
                }
            }
        }
        if ob2 != tb2 {
            let (a, b) = (
                serde_json::to_vec(&ob2).unwrap_or_default(),
                serde_json::to_vec(&tb2).unwrap_or_default(),
            );
            let d = text_diff("masked SOCI index", &a, &b).unwrap_or_default();
            errs.push(format!(
                "{k}: SOCI index differs beyond zTOC digests/sizes: {d}"
            ));
        }
    }
    // Blobs that are not affected must still be byte-identical: compare every reachable blob
    // whose digest appears on both sides.
    let mut ob = BTreeMap::new();
    let mut tb = BTreeMap::new();
    reachable(ours, &o_top, &mut ob);
    reachable(theirs, &t_top, &mut tb);
    let common: BTreeSet<&String> = ob.keys().filter(|d| tb.contains_key(*d)).collect();
    for d in common {
        if tb[d] && !ob[d] {
            errs.push(format!("blob {d} (present upstream) missing in ours"));
        }
    }
    if differing == 0 && errs.is_empty() {
        errs.push(format!("layouts differ but no zTOC differs:\n{cmp}"));
    }
    if errs.is_empty() {
        Ok(differing)
    } else {
        Err(errs.join("\n"))
    }
}
