//! Validates the corpus against the upstream `soci` CLI alone: every case must convert, except
//! `Expect::UpstreamFails` cases, which must fail. Ignored by default (needs the upstream binary);
//! run with `cargo test -p soci-testkit --test upstream_corpus -- --ignored --nocapture`.
//! For a per-case table use `cargo run -p soci-testkit --example upstream_corpus`.

use soci_testkit::oracle::run_upstream_case;
use soci_testkit::{Scale, corpus, upstream_soci};
use std::collections::BTreeSet;

#[test]
fn case_names_are_unique() {
    let cases = corpus(Scale::Full);
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len());
}

#[test]
#[ignore = "needs the upstream soci binary (e2e/tools.sh soci)"]
fn upstream_accepts_corpus() {
    let Some(soci) = upstream_soci() else {
        panic!("upstream soci not built (run e2e/tools.sh soci)");
    };
    let mut bad = Vec::new();
    for case in corpus(Scale::Quick) {
        let r = run_upstream_case(&soci, &case);
        println!(
            "{:<40} {:?} {} B {:.2}s {:?}",
            r.name,
            r.expect,
            r.input_bytes,
            r.elapsed.as_secs_f64(),
            r.result.as_ref().map(|_| (r.soci_indexes, r.ztocs))
        );
        if !r.as_expected() {
            bad.push(format!(
                "{}: expected {:?}, got {:?}",
                r.name, r.expect, r.result
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
