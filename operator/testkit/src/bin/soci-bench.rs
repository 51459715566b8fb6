//! `soci-bench`: zTOC build speed and memory, side by side with the references, in one run.
//!
//!   soci-bench run [--work DIR] [--mixed-mib N] [--large-gib N] [--skip-upstream]
//!
//! Generates (once, cached in the work dir) a gzip layer of mixed content (program binaries, text,
//! already-compressed data, zeros) and a multi-GiB layer, then runs each contender as a child
//! process and reports uncompressed MB/s and peak RSS (from `wait4`):
//! raw zlib-rs inflate (the ceiling), our `ztoc`, our `convert`, and upstream
//! `soci convert --standalone`.
//!
//!   soci-bench registry [--layers N] [--total-mib M] [--jobs J] [--skip-upstream]
//!     (registry→registry convert vs. downloading the layers vs. upstream's pipeline; see
//!     `soci_testkit::bench_registry`)
//!   soci-bench inflate FILE   (the raw-inflate contender: inflate to nowhere, print bytes)
//!   soci-bench generate FILE BYTES SEED   (writes a layer; run as a child by `run`)

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use soci_testkit::bench::{Measured, measure, write_layout};
use soci_testkit::data::XorShift;
use soci_testkit::tarw::{BLOCK, write_streamed_file};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("inflate") if args.len() == 2 => inflate(Path::new(&args[1])),
        Some("generate") if args.len() == 4 => generate(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("registry") => soci_testkit::bench_registry::main(&args[1..]),
        Some("registry-generate") => soci_testkit::bench_registry::generate(&args[1..]),
        _ => {
            eprintln!(
                "usage: soci-bench run [--work DIR] [--mixed-mib N] [--large-gib N] [--skip-upstream]\n       soci-bench registry [--layers N] [--total-mib M] [--jobs J] [--skip-upstream]\n       soci-bench inflate FILE"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("soci-bench: {e}");
        std::process::exit(1);
    }
}

/// `generate PATH BYTES SEED`, run as a child: Linux carries a parent's peak RSS over into the
/// children it starts (exec keeps the old `maxrss`), so the big generator must not be the parent.
fn generate(args: &[String]) -> io::Result<()> {
    let bytes = args[1].parse().map_err(io::Error::other)?;
    let seed = args[2].parse().map_err(io::Error::other)?;
    write_layer(Path::new(&args[0]), bytes, seed).map(|_| ())
}

fn inflate(path: &Path) -> io::Result<()> {
    let mut decoder = MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, File::open(path)?));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = decoder.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    println!("{total}");
    Ok(())
}

struct Options {
    work: PathBuf,
    mixed_mib: u64,
    large_gib: u64,
    skip_upstream: bool,
}

fn parse(args: &[String]) -> io::Result<Options> {
    let mut o = Options {
        work: std::env::temp_dir().join("soci-bench"),
        mixed_mib: 300,
        large_gib: 3,
        skip_upstream: false,
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
            "--mixed-mib" => o.mixed_mib = value()?.parse().map_err(io::Error::other)?,
            "--large-gib" => o.large_gib = value()?.parse().map_err(io::Error::other)?,
            "--skip-upstream" => o.skip_upstream = true,
            other => return Err(io::Error::other(format!("unknown flag {other}"))),
        }
    }
    Ok(o)
}

/// Writes a gzip-compressed tar of about `total` bytes of mixed content, streaming.
fn write_layer(path: &Path, total: u64, seed: u64) -> io::Result<u64> {
    let tmp = path.with_extension("partial");
    let file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    let mut gz = GzEncoder::new(file, Compression::default());
    let mut rng = XorShift::new(seed);
    let binaries = program_bytes();
    let mut written = 0u64;
    let mut index = 0u64;
    let words: Vec<&str> =
        "the quick brown fox jumps over lazy dog layer image index span checkpoint registry node pod container lazy loading snapshot"
            .split(' ')
            .collect();
    let mut chunk = Vec::new();
    while written < total {
        let kind = index % 4;
        let size = (1 << 16) + rng.below(8 << 20) as usize;
        chunk.clear();
        match kind {
            0 => {
                // program binaries: slices of real executables
                let start = rng.below(binaries.len().max(1) as u64) as usize;
                while chunk.len() < size {
                    let end = (start + size - chunk.len()).min(binaries.len());
                    chunk.extend_from_slice(&binaries[start.min(end)..end]);
                    if end == binaries.len() && chunk.len() < size {
                        chunk.extend_from_slice(
                            &binaries[..(size - chunk.len()).min(binaries.len())],
                        );
                    }
                }
            }
            1 => {
                while chunk.len() < size {
                    chunk.extend_from_slice(
                        words[rng.below(words.len() as u64) as usize].as_bytes(),
                    );
                    chunk.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
                }
                chunk.truncate(size);
            }
            2 => {
                chunk.resize(size, 0);
                rng.fill(&mut chunk);
            }
            _ => chunk.resize(size, 0),
        }
        written += write_streamed_file(
            &mut gz,
            format!(
                "data/{index:06}.{}",
                ["bin", "txt", "gz", "zero"][kind as usize]
            ),
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

/// Bytes of real executables on this machine, for the "binaries" share of the data.
fn program_bytes() -> Vec<u8> {
    for candidate in [
        "/usr/bin/perl",
        "/usr/bin/python3",
        "/usr/bin/git",
        "/bin/bash",
    ] {
        if let Ok(b) = fs::read(candidate)
            && b.len() > 1 << 20
        {
            return b;
        }
    }
    let mut v = vec![0u8; 4 << 20];
    XorShift::new(7).fill(&mut v);
    v
}

fn our_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SOCI_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().expect("own path");
    me.with_file_name("soci-operator")
}

fn upstream_binary() -> Option<PathBuf> {
    soci_testkit::oracle::upstream_soci()
}

fn run(args: &[String]) -> io::Result<()> {
    let o = parse(args)?;
    fs::create_dir_all(&o.work)?;
    let ours = our_binary();
    if !ours.exists() {
        return Err(io::Error::other(format!(
            "{} not found (build it with --release)",
            ours.display()
        )));
    }
    let upstream = if o.skip_upstream {
        None
    } else {
        upstream_binary()
    };
    println!(
        "machine: {} cores; our binary {}; upstream {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ours.display(),
        upstream
            .as_ref()
            .map_or("not run".into(), |p| p.display().to_string())
    );

    let mut datasets = vec![("mixed", o.mixed_mib << 20, 11u64)];
    if o.large_gib > 0 {
        datasets.push(("large", o.large_gib << 30, 23));
    }
    for (name, bytes, seed) in datasets {
        let layer = o.work.join(format!("{name}-{bytes}.tar.gz"));
        if !layer.exists() {
            eprintln!(
                "generating {} ({} MiB of tar)...",
                layer.display(),
                bytes >> 20
            );
            measure(
                Command::new(std::env::current_exe()?)
                    .arg("generate")
                    .arg(&layer)
                    .arg(bytes.to_string())
                    .arg(seed.to_string()),
            )?;
        }
        let layout = o.work.join(format!("{name}-{bytes}-layout"));
        if !layout.join("index.json").exists() {
            write_layout(&layout, std::slice::from_ref(&layer), Some("bench"))?;
        }
        let compressed = fs::metadata(&layer)?.len();
        println!("\n== {name}: {} MiB compressed", compressed >> 20);

        let raw = measure(
            Command::new(std::env::current_exe()?)
                .arg("inflate")
                .arg(&layer),
        )?;
        let uncompressed: u64 = raw.stdout.trim().parse().map_err(io::Error::other)?;
        println!("{} MiB uncompressed", uncompressed >> 20);
        let mbps = |m: &Measured| uncompressed as f64 / 1e6 / m.seconds;
        println!(
            "{:<38} {:>10} {:>10} {:>9} {:>12}",
            "contender", "seconds", "MB/s", "% of raw", "peak RSS MiB"
        );
        // "% of raw": throughput relative to raw inflate of the same layer (target ≥ 85% for ztoc).
        let row = |label: &str, m: &Measured| {
            println!(
                "{label:<38} {:>10.2} {:>10.1} {:>8.0}% {:>12.1}",
                m.seconds,
                mbps(m),
                100.0 * raw.seconds / m.seconds,
                m.max_rss_kib as f64 / 1024.0
            );
        };
        row("raw zlib-rs inflate (flate2)", &raw);

        let ztoc_out = o.work.join(format!("{name}.ztoc"));
        let ztoc = measure(
            Command::new(&ours)
                .arg("ztoc")
                .arg(&layer)
                .arg("--output")
                .arg(&ztoc_out),
        )?;
        row("soci-operator ztoc", &ztoc);
        let ztoc_size = fs::metadata(&ztoc_out)?.len();

        let dst = o.work.join(format!("{name}-ours-out"));
        let _ = fs::remove_dir_all(&dst);
        let convert = measure(
            Command::new(&ours)
                .args(["convert", "--min-layer-size", "0"])
                .arg(format!("oci:{}", layout.display()))
                .arg(format!("oci:{}", dst.display())),
        )?;
        row("soci-operator convert", &convert);

        if let Some(up) = &upstream {
            let dst = o.work.join(format!("{name}-upstream-out"));
            let root = o.work.join("upstream-root");
            let _ = fs::remove_dir_all(&dst);
            let _ = fs::remove_dir_all(&root);
            let m = measure(
                Command::new(up)
                    .env("TZ", "UTC")
                    .arg("--root")
                    .arg(&root)
                    .args([
                        "convert",
                        "--standalone",
                        "--format",
                        "oci-dir",
                        "--min-layer-size",
                        "0",
                    ])
                    .arg(&layout)
                    .arg(&dst),
            )?;
            row("upstream soci convert --standalone", &m);
            println!(
                "ours vs upstream (convert): {:.2}x",
                m.seconds / convert.seconds
            );
        }
        println!(
            "ours (ztoc) vs raw inflate: {:.0}%",
            100.0 * raw.seconds / ztoc.seconds
        );
        println!(
            "zTOC size {:.1} MiB; peak RSS of ztoc minus zTOC size: {:.1} MiB",
            ztoc_size as f64 / 1048576.0,
            ztoc.max_rss_kib as f64 / 1024.0 - ztoc_size as f64 / 1048576.0
        );
    }
    Ok(())
}
