//! `soci-operator crd`: prints the CRDs (YAML), or writes them into a directory.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CrdArgs {
    /// Write each CRD into this directory (`soci.dev_<plural>.yaml`) instead of printing them.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

pub fn run(args: CrdArgs) -> Result<()> {
    let files = crate::api::crd::files()?;
    match args.write {
        Some(dir) => {
            for (file, text) in files {
                let path = dir.join(file);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        None => {
            let texts: Vec<String> = files.into_iter().map(|(_, text)| text).collect();
            print!("{}", texts.join("---\n"));
            Ok(())
        }
    }
}
