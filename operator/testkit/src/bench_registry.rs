//! `soci-bench registry`: registry→registry conversion of a large multi-layer image from a
//! local `docker-registry`, side by side in one run with
//! (a) downloading its layers once (plain HTTP GETs, all layers, the same parallelism as ours),
//! (b) our `soci-operator convert REG/src REG/dst`,
//! (c) upstream's pipeline: `crane pull --format oci` + `soci convert --standalone` +
//!     `crane push --index`.
//! Seconds, the ratio to (a), and peak RSS (from `wait4`, per child; the largest step for (c)).
//!
//!   soci-bench registry [--work DIR] [--layers N] [--total-mib M] [--jobs J] [--skip-upstream]
//!                       [--link-mbit S]
//! `--link-mbit S`: every contender reaches the registry through a proxy that paces the bytes
//! like an S Mbit/s link (shared by all connections, each direction): loopback is faster than
//! two cores inflate, so without it (b) measures the CPU, not the registry.
//!   soci-bench registry download BASE_URL JOBS DIGEST...   (contender (a), run as a child)
//!   soci-bench registry push HOST LAYOUT REPO TAG   (pushes the image, run as a child)

use crate::bench::{Measured, measure, mib, write_layout};
use crate::data::XorShift;
use crate::link_proxy::LinkProxy;
use crate::registry::LocalRegistry;
use crate::tarw::{BLOCK, write_streamed_file};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

struct Options {
    work: PathBuf,
    layers: u64,
    total_mib: u64,
    jobs: usize,
    skip_upstream: bool,
    link_mbit: Option<f64>,
}

fn parse(args: &[String]) -> io::Result<Options> {
    let mut o = Options {
        work: std::env::temp_dir().join("soci-bench-registry"),
        layers: 5,
        total_mib: 800,
        jobs: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(4),
        skip_upstream: false,
        link_mbit: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| io::Error::other(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--work" => o.work = PathBuf::from(value()?),
            "--layers" => o.layers = value()?.parse().map_err(io::Error::other)?,
            "--total-mib" => o.total_mib = value()?.parse().map_err(io::Error::other)?,
            "--jobs" => o.jobs = value()?.parse().map_err(io::Error::other)?,
            "--skip-upstream" => o.skip_upstream = true,
            "--link-mbit" => o.link_mbit = Some(value()?.parse().map_err(io::Error::other)?),
            other => return Err(io::Error::other(format!("unknown flag {other}"))),
        }
    }
    o.layers = o.layers.max(1);
    o.jobs = o.jobs.max(1);
    Ok(o)
}

/// Entry point of `soci-bench registry ...`.
pub fn main(args: &[String]) -> io::Result<()> {
    if args.first().map(String::as_str) == Some("download") {
        return download(&args[1..]);
    }
    if let [cmd, host, layout, repo, tag] = args
        && cmd == "push"
    {
        // A child: pushing reads whole blobs, and exec carries a parent's peak RSS over
        // into the children it starts.
        return crate::registry::RegistryHttp::new(host, None)
            .push_layout(Path::new(layout), repo, tag)
            .map(|_| ());
    }
    run(&parse(args)?)
}

/// Contender (a): GET every blob once, `jobs` at a time, bytes discarded.
fn download(args: &[String]) -> io::Result<()> {
    let [base, jobs, digests @ ..] = args else {
        return Err(io::Error::other("download BASE_URL JOBS DIGEST..."));
    };
    let jobs: usize = jobs.parse().map_err(io::Error::other)?;
    let queue = Mutex::new(digests.to_vec());
    let total = Mutex::new(0u64);
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .map_err(io::Error::other)?;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..jobs {
            handles.push(s.spawn(|| -> io::Result<()> {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let Some(d) = queue.lock().unwrap().pop() else {
                        return Ok(());
                    };
                    let mut r = client
                        .get(format!("{base}/blobs/{d}"))
                        .send()
                        .map_err(io::Error::other)?;
                    if !r.status().is_success() {
                        return Err(io::Error::other(format!("GET {d}: {}", r.status())));
                    }
                    let mut n = 0u64;
                    loop {
                        let k = r.read(&mut buf)?;
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    *total.lock().unwrap() += n;
                }
            }));
        }
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("panic"))))
    })?;
    println!("{}", total.lock().unwrap());
    Ok(())
}

/// A gzip tar of about `total` bytes: binaries-like random data, text, zeros (streamed).
fn write_layer(path: &Path, total: u64, seed: u64) -> io::Result<u64> {
    let tmp = path.with_extension("partial");
    let file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    let mut gz = GzEncoder::new(file, Compression::default());
    let mut rng = XorShift::new(seed);
    let words: Vec<&str> =
        "the quick brown fox jumps over lazy dog layer image index span checkpoint registry node pod"
            .split(' ')
            .collect();
    let (mut written, mut index) = (0u64, 0u64);
    let mut chunk = Vec::new();
    while written < total {
        let kind = index % 3;
        let size = (1 << 16) + rng.below(6 << 20) as usize;
        chunk.clear();
        match kind {
            0 => {
                while chunk.len() < size {
                    chunk.extend_from_slice(
                        words[rng.below(words.len() as u64) as usize].as_bytes(),
                    );
                    chunk.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
                }
                chunk.truncate(size);
            }
            1 => {
                // Low-entropy "binary": random bytes from a small alphabet.
                chunk.resize(size, 0);
                rng.fill(&mut chunk);
                for b in chunk.iter_mut() {
                    *b &= 0x1f;
                }
            }
            _ => {
                chunk.resize(size, 0);
                rng.fill(&mut chunk[..size / 3]);
            }
        }
        written += write_streamed_file(
            &mut gz,
            format!("data/{seed}/{index:06}"),
            &chunk,
            1_700_000_000,
        )?;
        index += 1;
    }
    gz.write_all(&[0u8; BLOCK * 2])?;
    gz.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(written)
}

fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(o: &Options) -> io::Result<()> {
    let me = std::env::current_exe()?;
    let ours = std::env::var_os("SOCI_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| me.with_file_name("soci-operator"));
    if !ours.exists() {
        return Err(io::Error::other(format!(
            "{} not found (cargo build --release -p soci-operator)",
            ours.display()
        )));
    }
    if crate::registry::registry_binary().is_none() {
        return Err(io::Error::other("docker-registry not found"));
    }
    fs::create_dir_all(&o.work)?;
    let per_layer = (o.total_mib << 20) / o.layers;
    let mut layers = Vec::new();
    let mut tar_bytes = 0u64;
    for i in 0..o.layers {
        let path = o.work.join(format!("layer-{i}-{per_layer}.tar.gz"));
        if !path.exists() {
            eprintln!("generating layer {i} ({} MiB of tar)", per_layer >> 20);
            let status = Command::new(&me)
                .arg("registry-generate")
                .arg(&path)
                .args([per_layer.to_string(), (100 + i).to_string()])
                .status();
            // Older binaries without the generator subcommand: generate in-process.
            if !status.is_ok_and(|s| s.success()) {
                write_layer(&path, per_layer, 100 + i)?;
            }
        }
        tar_bytes += per_layer;
        layers.push(path);
    }
    let layout = o.work.join(format!("layout-{}x{per_layer}", o.layers));
    let _ = fs::remove_dir_all(&layout);
    let descs = write_layout(&layout, &layers, None)?;
    let compressed: u64 = descs.iter().map(|(_, s)| s).sum();

    let registry = LocalRegistry::start()?;
    let host = registry.host();
    let pushed = Command::new(&me)
        .args(["registry", "push", host.as_str()])
        .arg(&layout)
        .args(["bench/src", "v1"])
        .status()?;
    if !pushed.success() {
        return Err(io::Error::other("pushing the image failed"));
    }
    // From here on every contender goes through the link, if one is set.
    let link = match o.link_mbit {
        Some(mbit) => Some(LinkProxy::start(&host, mbit)?),
        None => None,
    };
    let host = link.as_ref().map(LinkProxy::host).unwrap_or(host);
    let over_link = || link.as_ref().map(|l| l.bytes()).unwrap_or((0, 0));
    let src = format!("{host}/bench/src:v1");
    eprintln!(
        "pushed {} layers, {} MiB compressed, to {src}",
        o.layers,
        compressed >> 20
    );

    let mut rows: Vec<(String, Measured)> = Vec::new();
    let mut carried: Vec<(u64, u64)> = Vec::new();
    let mut before = over_link();
    let mut carried_since = || {
        let now = over_link();
        let delta = (now.0 - before.0, now.1 - before.1);
        before = now;
        delta
    };
    // (a) download once.
    let mut cmd = Command::new(&me);
    cmd.args(["registry", "download"])
        .arg(format!("http://{host}/v2/bench/src"))
        .arg(o.jobs.to_string())
        .args(descs.iter().map(|(d, _)| d.clone()));
    let download = measure(&mut cmd)?;
    carried.push(carried_since());
    // (b) ours.
    let mut cmd = Command::new(&ours);
    cmd.args(["convert", src.as_str()])
        .arg(format!("{host}/bench/ours:soci"))
        .arg("--jobs")
        .arg(o.jobs.to_string())
        .env("TZ", "UTC")
        .env("DOCKER_CONFIG", o.work.join("no-docker-config"));
    let ours_m = measure(&mut cmd)?;
    carried.push(carried_since());
    let verify = Command::new(&ours)
        .arg("verify")
        .arg(format!("{host}/bench/ours:soci"))
        .stdout(Stdio::null())
        .status()?;
    if !verify.success() {
        return Err(io::Error::other("our converted image does not verify"));
    }
    carried_since(); // the check's own reads are nobody's
    rows.push((
        format!("(a) download layers once ({} parallel GETs)", o.jobs),
        download,
    ));
    rows.push(("(b) soci-operator convert registry→registry".into(), ours_m));

    // (c) upstream pipeline.
    let upstream = if o.skip_upstream {
        None
    } else {
        crate::oracle::upstream_soci()
    };
    let crane = upstream
        .as_deref()
        .and_then(Path::parent)
        .map(|d| d.join("crane"))
        .filter(|p| p.is_file());
    let mut upstream_steps = Vec::new();
    if let (Some(soci), Some(crane)) = (upstream, crane) {
        let dir = o.work.join("upstream");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root"))?;
        fs::create_dir_all(dir.join("tmp"))?;
        let pulled = dir.join("pulled");
        let out = dir.join("out");
        let env_home = dir.join("home");
        fs::create_dir_all(&env_home)?;
        let pull = measure(
            Command::new(&crane)
                .args(["pull", "--insecure", "--format", "oci", src.as_str()])
                .arg(&pulled)
                .env("HOME", &env_home),
        )?;
        let convert = measure(
            Command::new(&soci)
                .arg("--root")
                .arg(dir.join("root"))
                .args(["convert", "--standalone", "--format", "oci-dir"])
                .arg(&pulled)
                .arg(&out)
                .env("TZ", "UTC")
                .env("TMPDIR", dir.join("tmp")),
        )?;
        let push = measure(
            Command::new(&crane)
                .args(["push", "--insecure", "--index"])
                .arg(&out)
                .arg(format!("{host}/bench/upstream:soci"))
                .env("HOME", &env_home),
        )?;
        carried.push(carried_since());
        let total = Measured {
            seconds: pull.seconds + convert.seconds + push.seconds,
            max_rss_kib: pull
                .max_rss_kib
                .max(convert.max_rss_kib)
                .max(push.max_rss_kib),
            stdout: String::new(),
        };
        upstream_steps = vec![
            ("    crane pull --format oci", pull),
            ("    soci convert --standalone", convert),
            ("    crane push --index", push),
        ];
        rows.push(("(c) upstream: pull + soci convert + push".into(), total));
        let _ = fs::remove_dir_all(&dir);
    } else {
        eprintln!("upstream soci or crane not found (or --skip-upstream): no (c)");
    }

    println!(
        "registry benchmark: {} gzip layers, {:.1} MiB compressed / {:.1} MiB tar, jobs {}, link {}, load average {}",
        o.layers,
        compressed as f64 / 1048576.0,
        tar_bytes as f64 / 1048576.0,
        o.jobs,
        o.link_mbit
            .map(|m| format!("{m} Mbit/s (paced proxy)"))
            .unwrap_or_else(|| "loopback (unpaced)".into()),
        load()
    );
    println!(
        "{:<48} {:>8} {:>12} {:>12} {:>20}",
        "contender", "seconds", "x download", "peak RSS", "MiB down/up on link"
    );
    let base = rows[0].1.seconds;
    for (i, (name, m)) in rows.iter().enumerate() {
        let link_column = match (&link, carried.get(i)) {
            (Some(_), Some((down, up))) => format!(
                "{:.1}/{:.1}",
                *down as f64 / 1048576.0,
                *up as f64 / 1048576.0
            ),
            _ => "-".into(),
        };
        println!(
            "{:<48} {:>8.2} {:>11.2}x {:>12} {:>20}",
            name,
            m.seconds,
            m.seconds / base,
            mib(m.max_rss_kib),
            link_column
        );
        if name.starts_with("(c)") {
            for (step, s) in &upstream_steps {
                println!(
                    "{:<48} {:>8.2} {:>12} {:>12}",
                    step,
                    s.seconds,
                    "",
                    mib(s.max_rss_kib)
                );
            }
        }
    }
    let ratio = rows[1].1.seconds / base;
    println!(
        "ours / download = {ratio:.2}x (target <= 1.2x){}",
        rows.get(2)
            .map(|(_, m)| format!(
                "; upstream pipeline / ours = {:.2}x",
                m.seconds / rows[1].1.seconds
            ))
            .unwrap_or_default()
    );
    Ok(())
}

/// `soci-bench registry-generate PATH BYTES SEED` (a child, so the parent's RSS stays small).
pub fn generate(args: &[String]) -> io::Result<()> {
    let [path, bytes, seed] = args else {
        return Err(io::Error::other("registry-generate PATH BYTES SEED"));
    };
    write_layer(
        Path::new(path),
        bytes.parse().map_err(io::Error::other)?,
        seed.parse().map_err(io::Error::other)?,
    )
    .map(|_| ())
}
