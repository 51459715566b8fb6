//! registry→registry `convert` through a fault-injecting proxy (`soci_testkit::fault_proxy`:
//! 500/503, 429 with Retry-After, resets before and after the request took effect, stalls,
//! bodies cut short) in front of a real `docker-registry`, on a fixed seed and several more.
//! Every run must end either with a fully valid target (the tag exists and `verify --deep`,
//! run directly against the registry, passes) or with a clear error (exit 1 or 3, the cause
//! named) and no tag at the destination (checked directly against the registry, not through
//! the proxy) — the one exception being a tag PUT that took effect while every answer to it
//! was lost, and then the tag must name a valid image. `verify --deep` through the proxy may give up (exit 3) but never reports a
//! problem that is not there.

mod common;

use common::{describe, run_ours};
use soci_testkit::fault_proxy::{FaultConfig, FaultProxy};
use soci_testkit::oracle::TempDir;
use soci_testkit::registry::{LocalRegistry, registry_or_skip};
use soci_testkit::{Scale, corpus};
use std::time::Instant;

struct Outcome {
    succeeded: bool,
}

/// One conversion through a proxy with `config`; checks the invariant and returns the outcome.
fn run_seed(
    registry: &LocalRegistry,
    config: FaultConfig,
    max_retries: &str,
    convert_args: &[String],
) -> Outcome {
    let seed = config.seed;
    let rate = config.fault_rate;
    let proxy = FaultProxy::start(&registry.host(), config).expect("proxy");
    let src = format!("{}/faults/src:v1", proxy.host());
    let dst_repo = format!("faults/dst-{seed}-{}", (rate * 100.0) as u32);
    let dst = format!("{}/{dst_repo}:soci", proxy.host());
    let mut args = vec![
        "convert",
        src.as_str(),
        dst.as_str(),
        "--max-retries",
        max_retries,
    ];
    args.extend(convert_args.iter().map(String::as_str));
    let started = Instant::now();
    let out = run_ours(&args);
    let took = started.elapsed();
    let context = format!(
        "seed {seed} rate {rate}: {} requests, faults: {} ({took:.1?})\n{}",
        proxy.log().len(),
        proxy.summary(),
        describe(&out)
    );
    eprintln!(
        "seed {seed} rate {rate}: exit {:?} in {took:.1?}; {}",
        out.status.code(),
        proxy.summary()
    );
    // The tag, asked of the registry itself.
    let tag = registry.client().get_manifest(&dst_repo, "soci").unwrap();
    let direct = format!("{}/{dst_repo}:soci", registry.host());
    if out.status.success() {
        assert!(tag.is_some(), "success without a tag: {context}");
        let v = run_ours(&["verify", "--deep", &direct]);
        assert!(
            v.status.success(),
            "target does not verify: {context}\n{}",
            describe(&v)
        );
        // Through the proxy: passes, or gives up as transient; never a false finding.
        let v = run_ours(&["verify", "--deep", "--max-retries", "8", &dst]);
        assert!(
            matches!(v.status.code(), Some(0) | Some(3)),
            "verify through the proxy: {context}\n{}",
            describe(&v)
        );
        Outcome { succeeded: true }
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1) | Some(3)),
            "unexpected exit: {context}"
        );
        let last = stderr.lines().rev().find(|l| l.starts_with("error: "));
        let last = last.unwrap_or_else(|| panic!("no error line: {context}"));
        assert!(
            last.contains("transient") || last.contains("permanent"),
            "the error does not say what kind of failure: {last}\n{context}"
        );
        if tag.is_some() {
            // Only possible when the tag PUT took effect and every retry's answer was lost
            // (the tag is the last write, so its image must be complete and valid).
            let (last_request, last_fault) = proxy.log().last().cloned().unwrap();
            assert!(
                last_request.starts_with("PUT") && last_request.contains("/manifests/soci"),
                "the run failed but the tag was written: {context}"
            );
            eprintln!(
                "seed {seed}: tag PUT took effect but its answers were lost ({last_fault:?})"
            );
            let v = run_ours(&["verify", "--deep", &direct]);
            assert!(v.status.success(), "tag written, target invalid: {context}");
        }
        Outcome { succeeded: false }
    }
}

#[test]
fn convert_through_faults_ends_valid_or_clean() {
    if registry_or_skip("convert_through_faults_ends_valid_or_clean").is_none() {
        return;
    }
    let started = Instant::now();
    let registry = LocalRegistry::start().expect("registry");
    let tmp = TempDir::new("soci-faults").unwrap();
    let case = corpus(Scale::Quick)
        .into_iter()
        .find(|c| c.name == "multiarch-all-platforms")
        .unwrap();
    let layout = tmp.path().join("src");
    (case.write)(&layout).unwrap();
    registry
        .client()
        .push_layout(&layout, "faults/src", "v1")
        .unwrap();
    let args = case.convert_args.clone();

    // The fixed seed, then several more, at a rate the retries absorb most of the time.
    let mut outcomes = Vec::new();
    for seed in [1u64, 2, 3, 4, 5] {
        outcomes.push(run_seed(
            &registry,
            FaultConfig::new(seed, 0.15),
            "5",
            &args,
        ));
    }
    // Rough: failures are likely, somewhere in the middle of the blob writes.
    outcomes.push(run_seed(&registry, FaultConfig::new(9, 0.35), "2", &args));
    // Hostile: half the requests fail and one retry is allowed; the run must fail cleanly.
    for seed in [7u64, 8] {
        outcomes.push(run_seed(&registry, FaultConfig::new(seed, 0.6), "1", &args));
    }
    assert!(
        outcomes.iter().any(|o| o.succeeded),
        "no run survived a 15% fault rate"
    );
    assert!(
        outcomes.iter().any(|o| !o.succeeded),
        "no run failed even at 60% faults with one retry: the proxy injects nothing?"
    );
    eprintln!("fault runs took {:.1?}", started.elapsed());
}
