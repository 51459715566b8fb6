//! Registry push events on the proving ground: a real `docker-registry` whose `notifications`
//! endpoint is the operator's receiver (`--push-receiver-listen`, loopback). With `interval:
//! 1h`, only the event can make the operator look again: a moved tag is rebuilt, a new tag of a
//! followed repository gets its child, and the time from the push to `Ready` is printed. A
//! registry sending the wrong token gets 401 and triggers nothing. The operators here run
//! cluster-wide (the policy controllers need it), so `e2e/rust-tests` runs this file alone.

use anyhow::{Context, Result, ensure};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use soci_e2e::*;
use soci_operator::api::SociIndex;
use soci_operator::api::policy::SociIndexPolicy;
use soci_testkit::registry::LocalRegistry;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

macro_rules! start {
    ($name:expr) => {
        match Ctx::start($name).await? {
            Some(t) => t,
            None => return Ok(()),
        }
    };
}

/// A registry that notifies `port` of every push (pulls, mounts and deletes ignored), sending
/// `token`.
fn notifying_registry(port: u16, token: &str) -> Result<LocalRegistry> {
    let config = format!(
        "notifications:\n  endpoints:\n    - name: soci\n      url: http://127.0.0.1:{port}/hook/registry\n      headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 1s\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull, mount, delete]\n"
    );
    LocalRegistry::start_with_config(&config).context("starting a notifying docker-registry")
}

/// A cluster-wide operator with the receiver on `port` and `token` in a file.
async fn receiving_operator(t: &Ctx, port: u16, token: &str) -> Result<Operator> {
    let file = tempfile_in(t, "push-token", token)?;
    let listen = format!("127.0.0.1:{port}");
    t.cluster_operator(&[
        "--push-receiver-listen",
        &listen,
        "--push-receiver-token-file",
        &file,
    ])
    .await
}

fn tempfile_in(t: &Ctx, name: &str, content: &str) -> Result<String> {
    let path = std::env::temp_dir().join(format!("{}-{name}", t.ns));
    std::fs::write(&path, content)?;
    Ok(path.to_string_lossy().to_string())
}

/// push-moves-tag: a SociIndex of `REG/app:v1` with `interval: 1h` is Ready; the tag is pushed
/// again with other content; the event makes the operator resolve it now and build the new
/// digest. Prints the push-to-Ready latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_moves_tag() -> Result<()> {
    let t = start!("push-moves-tag");
    let port = free_port()?;
    let registry = notifying_registry(port, "right-token")?;
    let op = receiving_operator(&t, port, "right-token").await?;
    let image = format!("{}/e2e/app:v1", registry.host());
    t.push_image(&image)?;
    let first = t.digest(&image).context("digest of v1")?;
    t.apply("moving", &image, json!({"interval": "1h"})).await?;
    let o = t.wait_ready("moving", SECS(300)).await?;
    ensure!(first_image(&o).and_then(|i| i.source_digest.clone()) == Some(first.clone()));

    t.push_image(&image)?;
    let pushed = Instant::now();
    let second = t.digest(&image).context("digest of the new v1")?;
    ensure!(second != first, "the second push has the same digest");
    let ns = t.ns.clone();
    t.wait_for(&ns, "moving", SECS(240), "Ready on the new digest", |o| {
        is_ready(o) && first_image(o).and_then(|i| i.source_digest.as_deref()) == Some(&second)
    })
    .await?;
    let latency = pushed.elapsed();
    t.note(format!(
        "push to Ready on the new digest: {:.1} s (interval 1h; build included)",
        latency.as_secs_f64()
    ));
    let accepted = op.metric("soci_operator_push_requests_total{outcome=\"accepted\"}");
    ensure!(
        accepted.unwrap_or(0.0) >= 1.0,
        "no accepted push request: {accepted:?}"
    );
    t.pass();
    Ok(())
}

/// push-new-tag-policy: two repository policies (`^1.2`, `interval: 1h`) have listed once,
/// one following a registry that notifies with the right token, one a registry that sends a
/// wrong one. Pushing `1.2.5` to each: the first gets a Ready child within build time plus
/// seconds (`2.0.0`, outside the range, gets none); the second's events are refused (401) and it
/// gets no child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_new_tag_policy() -> Result<()> {
    let t = start!("push-new-tag-policy");
    let port = free_port()?;
    let right = notifying_registry(port, "right-token")?;
    let wrong = notifying_registry(port, "wrong-token")?;
    let op = receiving_operator(&t, port, "right-token").await?;
    let followed = format!("{}/e2e/api", right.host());
    let refused = format!("{}/e2e/api", wrong.host());
    for repository in [&followed, &refused] {
        t.push_image(&format!("{repository}:1.2.4"))?;
    }
    let policies: Api<SociIndexPolicy> = Api::namespaced(t.client.clone(), &t.ns);
    for (name, repository) in [("follow", &followed), ("follow-wrong", &refused)] {
        let policy = json!({
            "apiVersion": "soci.dev/v1alpha1",
            "kind": "SociIndexPolicy",
            "metadata": {"name": name, "namespace": t.ns},
            "spec": {
                "sources": {"repositories": [{"repository": repository, "tags": {"semver": "^1.2"}}]},
                "interval": "1h",
                "template": {"interval": "1h"},
            },
        });
        policies
            .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&policy))
            .await?;
    }
    let indexes: Api<SociIndex> = Api::namespaced(t.client.clone(), &t.ns);
    let ready_child = async |reference: String| {
        let list = indexes.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|c| is_ready(c) && first_image_spec(c) == reference)
            .then_some(())
    };
    for repository in [&followed, &refused] {
        let reference = format!("{repository}:1.2.4");
        poll(SECS(300), SECS(2), async || {
            ready_child(reference.clone()).await
        })
        .await
        .with_context(|| format!("no Ready child for {reference}"))?;
    }
    let before = op
        .metric("soci_operator_push_requests_total{outcome=\"unauthorized\"}")
        .unwrap_or(0.0);

    for repository in [&followed, &refused] {
        t.push_image(&format!("{repository}:1.2.5"))?;
    }
    t.push_image(&format!("{followed}:2.0.0"))?;
    let pushed = Instant::now();
    poll(SECS(300), SECS(1), async || {
        ready_child(format!("{followed}:1.2.5")).await
    })
    .await
    .context("no Ready child for 1.2.5 after its push (the interval is 1h)")?;
    let latency = pushed.elapsed().as_secs_f64();
    t.note(format!(
        "push of 1.2.5 to its Ready child: {latency:.1} s (interval 1h; build included)"
    ));
    let children: Vec<String> = indexes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(first_image_spec)
        .collect();
    ensure!(
        !children.iter().any(|image| image.ends_with(":2.0.0")),
        "2.0.0 is outside ^1.2 but got a child: {children:?}"
    );
    ensure!(
        !children.contains(&format!("{refused}:1.2.5")),
        "a push sent with the wrong token made a child: {children:?}"
    );
    let unauthorized = op
        .metric("soci_operator_push_requests_total{outcome=\"unauthorized\"}")
        .unwrap_or(0.0);
    ensure!(
        unauthorized > before,
        "the wrong token's pushes were not refused: {before} → {unauthorized}"
    );
    t.pass();
    Ok(())
}

fn first_image_spec(o: &SociIndex) -> String {
    o.spec
        .images
        .first()
        .map(|i| i.image.clone())
        .unwrap_or_default()
}
