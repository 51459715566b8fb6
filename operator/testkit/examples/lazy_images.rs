//! Writes the runnable images of `e2e/lazy-tests` and `e2e/pod-start-bench` as OCI image
//! layouts: every image carries a static busybox (`/bin/busybox`, `/bin/sh`) so a Pod can run
//! it on a node without base images, and its big layer ends with a file (`/data/deep/tail.bin`)
//! that only a span fetch from deep inside the layer can return.
//!
//! `cargo run -p soci-testkit --example lazy_images -- --busybox PATH --seed N OUT CASE…`
//! Cases: multiarch, mixed, syncflush, docker, twice, bench (`--bench-layers L --bench-mib M`:
//! L gzip layers of M MiB uncompressed each, half noise, half text).
//! Prints `case<TAB>path-in-image<TAB>sha256` for each file the tests read back. The seed goes
//! into every layer, so each run pushes layers no node has seen before.

use sha2::{Digest, Sha256};
use soci_testkit::compress::Encoding;
use soci_testkit::data;
use soci_testkit::layout::{Flavor, Image, JsonStyle, Layer, Layout, mt};
use soci_testkit::tarw::{Entry, Style, TarBuilder};
use std::path::{Path, PathBuf};

struct Opts {
    busybox: Vec<u8>,
    seed: u64,
    bench_layers: usize,
    bench_mib: usize,
}

fn main() {
    let mut busybox = PathBuf::from("/bin/busybox");
    let mut seed = 1u64;
    let mut bench_layers = 4;
    let mut bench_mib = 160;
    let mut rest = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--busybox" => busybox = PathBuf::from(value()),
            "--seed" => seed = value().parse().unwrap_or_else(|_| usage("bad --seed")),
            "--bench-layers" => {
                bench_layers = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --bench-layers"))
            }
            "--bench-mib" => {
                bench_mib = value().parse().unwrap_or_else(|_| usage("bad --bench-mib"))
            }
            _ => rest.push(a),
        }
    }
    let Some((out, cases)) = rest.split_first() else {
        usage("missing OUT")
    };
    let opts = Opts {
        busybox: std::fs::read(&busybox)
            .unwrap_or_else(|e| usage(&format!("{}: {e}", busybox.display()))),
        seed,
        bench_layers,
        bench_mib,
    };
    for case in cases {
        let dir = Path::new(out).join(case);
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout::create(&dir).expect("create layout");
        let files = write_case(&layout, case, &opts).expect("write layout");
        for (path, sum) in files {
            println!("{case}\t{path}\t{sum}");
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "lazy_images: {msg}\nusage: lazy_images [--busybox PATH] [--seed N] [--bench-layers L] [--bench-mib M] OUT CASE..."
    );
    std::process::exit(2)
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.append_all(entries, Style::GoDefault).expect("tar entry");
    t.finish(false)
}

/// The small layer that makes the image runnable, marked with the case and seed.
fn busybox_layer(o: &Opts, case: &str, flavor: Flavor) -> Layer {
    let entries = [
        Entry::dir("bin/"),
        Entry::file("bin/busybox", o.busybox.clone()).mode(0o755),
        Entry::symlink("bin/sh", "busybox"),
        Entry::dir("etc/"),
        Entry::file(format!("etc/lazy-{case}"), format!("{}\n", o.seed)),
    ];
    gzip_layer(flavor, &tar(&entries), 6)
}

fn gzip_layer(flavor: Flavor, tar: &[u8], level: u32) -> Layer {
    let media_type = match flavor {
        Flavor::Oci => mt::OCI_LAYER_GZIP,
        Flavor::Docker => mt::DOCKER_LAYER_GZIP,
    };
    Layer::new(media_type, tar, &Encoding::Gzip(level))
}

/// `MiB` of noise (`/data/noise`) followed by a 1 MiB file at the end of the layer; returns the
/// tar and the tail file's sha256.
fn big_tar(seed: u64, mib: usize) -> (Vec<u8>, String) {
    let tail = data::random(seed ^ 0x7461_696c, 1 << 20);
    let sum = sha256_hex(&tail);
    let entries = [
        Entry::dir("data/"),
        Entry::file("data/noise", data::random(seed, mib << 20)),
        Entry::dir("data/deep/"),
        Entry::file("data/deep/tail.bin", tail),
    ];
    (tar(&entries), sum)
}

type Files = Vec<(String, String)>;

fn write_case(layout: &Layout, case: &str, o: &Opts) -> std::io::Result<Files> {
    let s = o.seed.wrapping_mul(1000);
    let mut files = Vec::new();
    let top = match case {
        "multiarch" => {
            let (big, sum) = big_tar(s + 1, 16);
            files.push(("/data/deep/tail.bin".to_string(), sum));
            let amd64 = Image::new(
                Flavor::Oci,
                "linux/amd64",
                vec![
                    busybox_layer(o, case, Flavor::Oci),
                    gzip_layer(Flavor::Oci, &big, 6),
                ],
            );
            // arm64 does not run here; it must only be indexed.
            let (big_arm, _) = big_tar(s + 2, 12);
            let small_arm = tar(&[
                Entry::dir("etc/"),
                Entry::file("etc/lazy-arm64", format!("{}\n", o.seed)),
            ]);
            let arm64 = Image::new(
                Flavor::Oci,
                "linux/arm64",
                vec![
                    gzip_layer(Flavor::Oci, &small_arm, 6),
                    gzip_layer(Flavor::Oci, &big_arm, 6),
                ],
            );
            let m = [layout.add_image(&amd64)?, layout.add_image(&arm64)?];
            layout.add_index(Flavor::Oci, &m, JsonStyle::Compact)?
        }
        "mixed" => {
            // zstd (unsupported, above the size minimum), a small gzip layer (too small), then
            // the big gzip layer: only the last one gets a zTOC.
            let zstd_tar = tar(&[
                Entry::dir("opt/"),
                Entry::file("opt/zstd.bin", data::mixed(s + 3, 12 << 20)),
            ]);
            let small_text = data::text(s + 4, 256 << 10);
            files.push(("/etc/small.txt".to_string(), sha256_hex(&small_text)));
            let small = tar(&[Entry::dir("etc/"), Entry::file("etc/small.txt", small_text)]);
            let (big, sum) = big_tar(s + 5, 32);
            files.push(("/data/deep/tail.bin".to_string(), sum));
            let img = Image::new(
                Flavor::Oci,
                "linux/amd64",
                vec![
                    busybox_layer(o, case, Flavor::Oci),
                    Layer::new(mt::OCI_LAYER_ZSTD, &zstd_tar, &Encoding::Zstd),
                    gzip_layer(Flavor::Oci, &small, 6),
                    gzip_layer(Flavor::Oci, &big, 6),
                ],
            );
            layout.add_image(&img)?
        }
        "syncflush" => {
            // The gzip stream starts with an empty stored block (a sync flush before any data).
            let (big, sum) = big_tar(s + 6, 20);
            files.push(("/data/deep/tail.bin".to_string(), sum));
            let img = Image::new(
                Flavor::Oci,
                "linux/amd64",
                vec![
                    busybox_layer(o, case, Flavor::Oci),
                    Layer::new(mt::OCI_LAYER_GZIP, &big, &Encoding::Flushed(6, true, 0)),
                ],
            );
            layout.add_image(&img)?
        }
        "docker" | "twice" => {
            let flavor = if case == "docker" {
                Flavor::Docker
            } else {
                Flavor::Oci
            };
            let (big, sum) = big_tar(s + if case == "docker" { 7 } else { 8 }, 20);
            files.push(("/data/deep/tail.bin".to_string(), sum));
            let img = Image::new(
                flavor,
                "linux/amd64",
                vec![busybox_layer(o, case, flavor), gzip_layer(flavor, &big, 6)],
            );
            layout.add_image(&img)?
        }
        "bench" => {
            let mut layers = vec![busybox_layer(o, case, Flavor::Oci)];
            for i in 0..o.bench_layers {
                // Half noise, half text in 1 MiB pieces: gzip keeps ~60% of it.
                let mut blob = Vec::with_capacity(o.bench_mib << 20);
                for j in 0..o.bench_mib as u64 {
                    let seed = s + 100 + (i as u64) * 10_000 + j;
                    if j % 2 == 0 {
                        blob.extend(data::random(seed, 1 << 20));
                    } else {
                        blob.extend(data::text(seed, 1 << 20));
                    }
                }
                let dir = format!("data/l{i}/");
                let t = tar(&[
                    Entry::dir(dir.clone()),
                    Entry::file(format!("{dir}blob"), blob),
                ]);
                // Level 6 like most image builders: deflate blocks of tens of KiB, so
                // checkpoints land every span (level 1 here emits few, huge blocks).
                layers.push(gzip_layer(Flavor::Oci, &t, 6));
            }
            layout.add_image(&Image::new(Flavor::Oci, "linux/amd64", layers))?
        }
        _ => usage(&format!("unknown case {case}")),
    };
    layout.write_index_json(&[top], None)?;
    Ok(files)
}
