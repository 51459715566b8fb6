//! What the benchmarks (`soci-bench run` and `soci-bench registry`) share: a child process
//! timed with its peak RSS, and the OCI layout their contenders read.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct Measured {
    pub seconds: f64,
    pub max_rss_kib: i64,
    pub stdout: String,
}

/// Runs a child to completion; peak RSS from `wait4`. A failing child is an error carrying its
/// stderr.
pub fn measure(cmd: &mut Command) -> io::Result<Measured> {
    let started = Instant::now();
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("piped");
    let mut stderr = child.stderr.expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    stdout.read_to_string(&mut out)?;
    let err = err_thread.join().unwrap_or_default();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(io::Error::other(format!("{cmd:?} failed: {}", err.trim())));
    }
    Ok(Measured {
        seconds,
        max_rss_kib: usage.ru_maxrss,
        stdout: out,
    })
}

/// `kib` as `N.N MiB`.
pub fn mib(kib: i64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The lowercase hex sha256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// An OCI layout holding one linux/amd64 image of these gzip layers (hard-linked when the file
/// system allows), its `index.json` entry named `ref_name` if given. Returns the layer digests
/// and sizes.
pub fn write_layout(
    dir: &Path,
    layers: &[PathBuf],
    ref_name: Option<&str>,
) -> io::Result<Vec<(String, u64)>> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let mut descs = Vec::new();
    for l in layers {
        let hex = sha256_file(l)?;
        let target = blobs.join(&hex);
        if !target.exists() && fs::hard_link(l, &target).is_err() {
            fs::copy(l, &target)?;
        }
        descs.push((format!("sha256:{hex}"), fs::metadata(l)?.len()));
    }
    let put = |bytes: &[u8]| -> io::Result<String> {
        let hex: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        fs::write(blobs.join(&hex), bytes)?;
        Ok(format!("sha256:{hex}"))
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = put(config)?;
    let layer_json: Vec<String> = descs
        .iter()
        .map(|(d, s)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{s}}}"#
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_json.join(",")
    );
    let manifest_digest = put(manifest.as_bytes())?;
    let annotations = ref_name
        .map(|r| format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{r}"}}"#))
        .unwrap_or_default();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{}{annotations}}}]}}"#,
            manifest.len()
        ),
    )?;
    Ok(descs)
}
