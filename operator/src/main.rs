//! `soci-operator`: builds and keeps SOCI indexes. This binary is the controller, the worker and
//! the workstation tool at once; each role is a subcommand.

mod commands;
mod conversion;
mod image;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "soci-operator",
    version,
    about = "Builds SOCI indexes for container images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the zTOC of one layer blob.
    Ztoc(commands::ztoc::ZtocArgs),
    /// Convert an image into a SOCI-enabled image (SOCI index manifest v2 by default).
    Convert(commands::convert::ConvertArgs),
}

/// Exit codes the controller acts on: a permanent failure is not retried.
pub mod exit {
    pub const PERMANENT_FAILURE: u8 = 1;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ztoc(args) => commands::ztoc::run(args),
        Command::Convert(args) => commands::convert::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::PERMANENT_FAILURE)
        }
    }
}
