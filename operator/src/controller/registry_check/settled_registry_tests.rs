//! The cheap recheck of settled images against a real registry (Debian's `docker-registry`),
//! counting the requests in its access log: one HEAD per tag, and every change seen.

use super::*;
use crate::api::condition::LAZY_LOAD_READY;
use crate::api::{Condition, ConditionStatus};
use crate::controller::cleanup::registry_tests::{
    client, convert_and_record, push_case, registry_with_case, runtime,
};
use soci_testkit::registry::LocalRegistry;

/// The requests the registry logged after the first `skip` lines: `METHOD path`.
fn requests(registry: &LocalRegistry, skip: usize) -> Vec<String> {
    access_lines(registry).into_iter().skip(skip).collect()
}

fn access_lines(registry: &LocalRegistry) -> Vec<String> {
    registry
        .log()
        .lines()
        .filter_map(|line| {
            // Apache-style access lines: `... "HEAD /v2/app/manifests/v1 HTTP/1.1" 200 ...`.
            let quoted = line.split('"').nth(1)?;
            let mut parts = quoted.split(' ');
            let method = parts.next()?;
            let path = parts.next()?;
            path.starts_with("/v2/").then(|| format!("{method} {path}"))
        })
        .collect()
}

#[test]
fn a_settled_image_costs_one_head_per_tag_and_notices_every_move() {
    let Some((registry, http)) = registry_with_case(
        "a_settled_image_costs_one_head_per_tag_and_notices_every_move",
        "app",
        "v1",
    ) else {
        return;
    };
    let client = client();
    let rt = runtime();
    let source = format!("{}/app:v1", registry.host());
    let mut before = rt.block_on(convert_and_record(&client, &source, None));
    before.conditions = vec![Condition::new(
        LAZY_LOAD_READY,
        ConditionStatus::True,
        Reason::Verified,
        "deploy",
    )];
    let settled = settled_image("app", &source, None, &before).expect("settled");

    let start = access_lines(&registry).len();
    let seen = rt.block_on(recheck_settled(&client, &settled));
    assert_eq!(seen.as_ref(), Some(&settled.observation));
    assert_eq!(
        requests(&registry, start),
        vec![
            "HEAD /v2/app/manifests/v1",
            "HEAD /v2/app/manifests/v1-soci"
        ],
        "a settled image must cost exactly one HEAD per tag"
    );

    // The source tag moves: the recheck says so (the full check then rebuilds).
    push_case(&http, "ustar-basic", "app", "v1");
    assert_eq!(rt.block_on(recheck_settled(&client, &settled)), None);
    push_case(&http, "multiarch-all-platforms", "app", "v1");
    assert!(rt.block_on(recheck_settled(&client, &settled)).is_some());

    // The target tag is overwritten, then deleted.
    push_case(&http, "ustar-basic", "app", "v1-soci");
    assert_eq!(rt.block_on(recheck_settled(&client, &settled)), None);
    let target = RegistryRef::parse(&format!("{}/app:v1-soci", registry.host())).unwrap();
    let overwritten = rt
        .block_on(client.manifest_digest(&target, "v1-soci"))
        .unwrap()
        .unwrap();
    assert_ne!(Some(&overwritten), before.target_digest.as_ref());
    assert!(
        rt.block_on(client.delete_manifest(&target, &overwritten))
            .unwrap()
    );
    assert_eq!(
        rt.block_on(client.manifest_digest(&target, "v1-soci"))
            .unwrap(),
        None
    );
    assert_eq!(rt.block_on(recheck_settled(&client, &settled)), None);
}
