//! Tests that stop parts of the proving ground: run alone (`e2e/rust-tests` runs this file
//! after `operator.rs`, one test at a time), never next to other tests.

use anyhow::{Context, Result, ensure};
use serde_json::json;
use soci_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn pid_of(dir: &Path, name: &str) -> Result<i32> {
    let text = std::fs::read_to_string(dir.join("pids").join(name))
        .with_context(|| format!("no pid file of {name}"))?;
    Ok(text.trim().parse()?)
}

/// Alive and not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid the proving ground recorded for its own process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Brings the proving ground's control plane back (`e2e/proving-ground up`), also when the
/// test fails while it is down.
struct BringBack {
    script: PathBuf,
    done: bool,
}

impl BringBack {
    fn up(&mut self) -> Result<String> {
        self.done = true;
        run_cmd(Command::new(&self.script).arg("up"))
    }
}

impl Drop for BringBack {
    fn drop(&mut self) {
        if !self.done {
            let _ = Command::new(&self.script).arg("up").output();
        }
    }
}

/// control-plane-outage: the API server and etcd stop for a minute while a build runs, then
/// come back: the operator keeps running, creates no second Job, and the object converges to
/// Ready (300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage() -> Result<()> {
    let Some(t) = Ctx::start("control-plane-outage").await? else {
        return Ok(());
    };
    let image = format!("{}:v1", t.repo("outage"));
    t.push_image(&image)?;
    let mut op = t.operator()?;
    t.apply("outage", &image, json!({})).await?;
    let job = poll(SECS(30), Duration::from_millis(500), async || {
        t.jobs(&t.ns).await.ok()?.into_iter().next()
    })
    .await;
    ensure!(job.is_some(), "no Job started");
    let mut bring_back = BringBack {
        script: repo_root().join("e2e/proving-ground"),
        done: false,
    };
    let pids = [
        pid_of(&t.g.dir, "kube-apiserver")?,
        pid_of(&t.g.dir, "etcd")?,
    ];
    for pid in pids {
        signal(pid, libc::SIGTERM);
    }
    // `proving-ground up` skips a process that is still alive, so wait until both have exited
    // (kube-apiserver can take long to shut down once etcd is gone); KILL after 30 s.
    let stopped_at = Instant::now();
    while pids.iter().any(|p| running(*p)) {
        if stopped_at.elapsed() > SECS(30) {
            pids.iter().for_each(|p| signal(*p, libc::SIGKILL));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The outage lasts a minute: that is what is tested.
    tokio::time::sleep(SECS(60).saturating_sub(stopped_at.elapsed())).await;
    ensure!(
        op.alive(),
        "the operator exited while the API server was down"
    );
    bring_back
        .up()
        .context("the control plane did not come back")?;
    t.wait_ready("outage", SECS(300))
        .await
        .context("not Ready after the outage")?;
    ensure!(op.alive(), "the operator exited");
    let jobs = t.jobs(&t.ns).await?.len();
    ensure!(jobs == 1, "want one Job, got {jobs}");
    // Leave the proving ground as found: the node's status went Unknown while the control
    // plane was away; the stages after this one need it Ready.
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(t.client.clone());
    let node_ready = |n: Option<&k8s_openapi::api::core::v1::Node>| {
        n.and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    tokio::time::timeout(
        SECS(180),
        kube::runtime::wait::await_condition(nodes, &t.g.node_name, node_ready),
    )
    .await
    .context("the node is not Ready 180 s after the outage")??;
    let errors = op
        .log_text()
        .lines()
        .filter(|l| l.to_lowercase().contains("error"))
        .count();
    t.note(format!(
        "operator log lines mentioning errors during the outage: {errors}"
    ));
    t.pass();
    Ok(())
}
