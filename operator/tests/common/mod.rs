//! What the integration tests share: running our binary as a user would, and describing its
//! result in an assertion message. (Each test crate uses its own subset.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Printed past libtest's output capture, so it shows up in a plain `cargo test` run.
pub fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The `soci-operator` binary cargo built for these tests.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_soci-operator"))
}

/// Runs `soci-operator ARGS` in UTC with no docker credentials.
pub fn run_ours(args: &[&str]) -> Output {
    Command::new(ours())
        .args(args)
        .env("TZ", "UTC")
        .env("DOCKER_CONFIG", "/nonexistent-soci-test-docker-config")
        .output()
        .expect("run soci-operator")
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
