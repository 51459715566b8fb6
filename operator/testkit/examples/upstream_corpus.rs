//! Runs every corpus case through the upstream `soci` CLI only and prints one line per case
//! (input size, time, outcome, SOCI index / zTOC counts), to validate the corpus itself.
//!
//! `cargo run -p soci-testkit --example upstream_corpus -- [--full] [--list] [--write-only DIR] [NAME-SUBSTRING…]`
//! `--list` prints name, expectation, flags and description (tab-separated).
//! `--write-only DIR` writes the input layouts under DIR/<case> and does not run upstream.
//! Exit status 1 if any case did not behave as its `expect` says.

use soci_testkit::oracle::{run_upstream_case, upstream_soci};
use soci_testkit::{Scale, corpus};
use std::path::PathBuf;

fn main() {
    let mut scale = Scale::Quick;
    let mut write_only: Option<PathBuf> = None;
    let mut filters = Vec::new();
    let mut list = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--full" => scale = Scale::Full,
            "--write-only" => write_only = it.next().map(PathBuf::from),
            "--list" => list = true,
            _ => filters.push(a),
        }
    }
    let cases: Vec<_> = corpus(scale)
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    if list {
        for c in &cases {
            println!(
                "{}\t{:?}\t{}\t{}",
                c.name,
                c.expect,
                c.convert_args.join(" "),
                c.about
            );
        }
        return;
    }
    if let Some(dir) = write_only {
        for c in &cases {
            let p = dir.join(&c.name);
            let _ = std::fs::remove_dir_all(&p);
            (c.write)(&p).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            println!(
                "{:<40} {:>10} {}",
                c.name,
                soci_testkit::layout::dir_size(&p),
                p.display()
            );
        }
        return;
    }
    let Some(soci) = upstream_soci() else {
        eprintln!("SKIPPED: upstream soci not built (run e2e/tools.sh soci)");
        std::process::exit(2);
    };
    println!("upstream: {}", soci.display());
    let mut bad = 0;
    let mut total_bytes = 0;
    for c in &cases {
        let r = run_upstream_case(&soci, c);
        total_bytes += r.input_bytes;
        let ok = r.as_expected();
        if !ok {
            bad += 1;
        }
        let outcome = match &r.result {
            Ok(()) => format!("ok: {} SOCI index(es), {} zTOC(s)", r.soci_indexes, r.ztocs),
            Err(e) => format!(
                "FAILED: {}",
                e.lines().find(|l| l.contains("stderr")).unwrap_or(e).trim()
            ),
        };
        println!(
            "{} {:<40} {:<20} {:>10} B {:>7.2}s  {}",
            if ok { "  " } else { "!!" },
            r.name,
            format!("{:?}", r.expect),
            r.input_bytes,
            r.elapsed.as_secs_f64(),
            outcome
        );
    }
    println!(
        "{} cases, {} bytes of input layouts, {} unexpected",
        cases.len(),
        total_bytes,
        bad
    );
    if bad > 0 {
        std::process::exit(1);
    }
}
