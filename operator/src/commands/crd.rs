//! `soci-operator crd`: prints the CRDs (YAML), or writes them into a directory.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CrdArgs {
    /// Write `soci.dev_sociindexes.yaml` into this directory instead of printing it.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

pub const FILE_NAME: &str = "soci.dev_sociindexes.yaml";

pub fn run(args: CrdArgs) -> Result<()> {
    let text = crate::api::crd::yaml()?;
    match args.write {
        Some(dir) => {
            let path = dir.join(FILE_NAME);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
