//! `soci-hostile-registry MODE`: a registry that answers `/v2/` like a real one and every other
//! request with one kind of hostility, on 127.0.0.1, until killed. Prints `127.0.0.1:PORT` on
//! its first line. For end-to-end tests that point a SociIndex at it next to healthy ones.
//!
//!   endless   manifests (and everything else) come as a body that never ends
//!   drip      manifests come one byte every 20 s (defeats per-read timeouts)
//!   giant     manifests declare 1 TiB and send nothing more
//!   slow      no answer at all for 10 minutes

use soci_testkit::hostile::{HostileServer, Reply};
use std::io::Write;
use std::time::Duration;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let hostile: fn() -> Reply = match mode.as_str() {
        "endless" => || Reply::endless(vec![b' '; 64 << 10]).header("Content-Type", MANIFEST),
        "drip" => || {
            Reply::status(200)
                .header("Content-Type", MANIFEST)
                .drip(br#"{"schemaVersion":2}"#.to_vec(), Duration::from_secs(20))
        },
        "giant" => || {
            Reply::status(200)
                .header("Content-Type", MANIFEST)
                .declared_length(1 << 40)
        },
        "slow" => || Reply::status(200).after(Duration::from_secs(600)),
        _ => {
            eprintln!("usage: soci-hostile-registry endless|drip|giant|slow");
            std::process::exit(2);
        }
    };
    let server = match HostileServer::start(move |req| {
        if req.path_only() == "/v2/" {
            Reply::status(200).header("Docker-Distribution-API-Version", "registry/2.0")
        } else {
            hostile()
        }
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soci-hostile-registry: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", server.host());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
