//! Byte-compatibility with upstream `soci convert` (awslabs/soci-snapshotter v0.16.1).
//!
//! For every case of the testkit corpus: write the input OCI layout, convert it with upstream
//! (`soci convert --standalone --format oci-dir ARGS SRC THEIRS`) and with ours
//! (`soci-operator convert oci:SRC oci:OURS ARGS`), then apply the case's rule:
//! * `Identical`: `compare_layouts` — same converted image descriptor and byte-identical blobs;
//! * `SyncFlushDivergence`: `check_sync_flush_divergence` — same structure, zTOCs may differ;
//! * `UpstreamFails`: upstream exits non-zero, so ours must exit non-zero too.
//!
//! Every case runs; failures are collected and reported together at the end.
//!
//! Environment:
//! * `SOCI_BIN`: upstream binary (default: `e2e/tools.sh --print-dir`/soci). If it is missing the
//!   test prints `SKIPPED: …` and passes — unless `SOCI_COMPAT_REQUIRED=1`, then it fails.
//! * `SOCI_COMPAT_SCALE=full`: the larger corpus.
//! * `SOCI_COMPAT_CASE=a,b`: only cases whose name contains one of these substrings.
//! * `SOCI_COMPAT_JOBS=N`: cases run in parallel (default: available CPUs).
//! * `SOCI_TESTKIT_KEEP=1`: keep the temporary directories (paths are in the report).

mod common;

use common::say;
use soci_testkit::oracle::{ours_convert, upstream_convert};
use soci_testkit::{
    CorpusCase, Expect, Scale, TempDir, check_sync_flush_divergence, compare_layouts, corpus,
    upstream_soci,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn run_case(soci: &Path, ours: &Path, case: &CorpusCase) -> Result<String, String> {
    let tmp = TempDir::new(&format!("soci-compat-{}", case.name))
        .map_err(|e| format!("temp dir: {e}"))?;
    let src = tmp.path().join("src");
    let theirs = tmp.path().join("upstream");
    let mine = tmp.path().join("ours");
    (case.write)(&src).map_err(|e| format!("writing the input layout failed: {e}"))?;
    let up = upstream_convert(soci, &src, &theirs, &case.convert_args);
    let me = ours_convert(ours, &src, &mine, &case.convert_args);
    let at = format!(" [in {}]", tmp.path().display());
    match case.expect {
        Expect::UpstreamFails => match (up, me) {
            (Ok(()), _) => Err(format!(
                "corpus expects upstream to fail, but it succeeded{at}"
            )),
            (Err(_), Ok(())) => Err(format!("upstream fails on this input, ours succeeded{at}")),
            (Err(_), Err(_)) => Ok("both failed".into()),
        },
        Expect::Identical | Expect::SyncFlushDivergence => {
            up.map_err(|e| format!("upstream failed (corpus bug?){at}: {e}"))?;
            me.map_err(|e| format!("ours failed{at}: {e}"))?;
            if case.expect == Expect::Identical {
                compare_layouts(&mine, &theirs).map_err(|e| format!("{e}{at}"))?;
                Ok("identical".into())
            } else {
                let n = check_sync_flush_divergence(&mine, &theirs, None)
                    .map_err(|e| format!("{e}{at}"))?;
                Ok(if n == 0 {
                    "identical to upstream (including its zero-length span)".into()
                } else {
                    format!("{n} zTOC(s) differ, structure identical")
                })
            }
        }
    }
}

#[test]
fn compat_upstream() {
    let required = std::env::var("SOCI_COMPAT_REQUIRED").is_ok_and(|v| v == "1");
    let Some(soci) = upstream_soci() else {
        if required {
            panic!("upstream soci not built (run e2e/tools.sh soci) and SOCI_COMPAT_REQUIRED=1");
        }
        say("SKIPPED: upstream soci not built (run e2e/tools.sh soci)");
        return;
    };
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_soci-operator"));
    let scale = if std::env::var("SOCI_COMPAT_SCALE").is_ok_and(|v| v == "full") {
        Scale::Full
    } else {
        Scale::Quick
    };
    let filters: Vec<String> = std::env::var("SOCI_COMPAT_CASE")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let cases: Vec<CorpusCase> = corpus(scale)
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    assert!(
        !cases.is_empty(),
        "no corpus case matches SOCI_COMPAT_CASE={filters:?}"
    );
    let jobs = std::env::var("SOCI_COMPAT_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .clamp(1, cases.len());
    say(&format!(
        "compat_upstream: {} case(s), {jobs} job(s), upstream {}, ours {}",
        cases.len(),
        soci.display(),
        ours.display()
    ));

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<String, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let t = Instant::now();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_case(&soci, &ours, case)
                    }))
                    .unwrap_or_else(|_| Err("panicked".into()));
                    say(&format!(
                        "{} {:<40} {:>6.2}s  {}",
                        if r.is_ok() { "ok  " } else { "FAIL" },
                        case.name,
                        t.elapsed().as_secs_f64(),
                        match &r {
                            Ok(m) => m.as_str(),
                            Err(e) => e.lines().next().unwrap_or(""),
                        }
                    ));
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });

    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(i, r)| {
            r.as_ref().err().map(|e| {
                let c = &cases[*i];
                format!(
                    "--- {} ({:?}, args {:?}): {}\n{e}",
                    c.name, c.expect, c.convert_args, c.about
                )
            })
        })
        .collect();
    say(&format!(
        "compat_upstream: {} passed, {} failed",
        results.len() - failures.len(),
        failures.len()
    ));
    if !failures.is_empty() {
        panic!(
            "{} of {} compatibility case(s) failed:\n{}",
            failures.len(),
            results.len(),
            failures.join("\n")
        );
    }
}
