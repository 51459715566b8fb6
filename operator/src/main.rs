//! `soci-operator`: the controller, the worker and the workstation tool, one subcommand each.
//! This file only parses arguments and maps errors to exit codes; the rest is the library.

use clap::{Parser, Subcommand};
use soci_operator::{commands, exit, registry};
use std::process::ExitCode;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  permanent failure: retrying the same input will fail again (bad image or flags,
     401/403, 404, digest or size mismatch)
  2  usage error (unknown flag, malformed argument)
  3  transient failure: the registry kept failing (5xx, 429, resets, truncated bodies)
     after every retry; retrying later may succeed";

#[derive(Parser)]
#[command(
    name = "soci-operator",
    version,
    about = "Builds SOCI indexes for container images",
    after_help = EXIT_CODES_HELP
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
    #[command(after_help = EXIT_CODES_HELP)]
    Convert(commands::convert::ConvertArgs),
    /// Report whether an image is bound to a SOCI index, per platform and per layer.
    #[command(after_help = EXIT_CODES_HELP)]
    Inspect(commands::inspect::InspectArgs),
    /// Check an image's SOCI binding the way the soci-snapshotter checks it (exit 1 if it fails).
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(commands::verify::VerifyArgs),
    /// Print the CustomResourceDefinitions (or write them with --write DIR).
    Crd(commands::crd::CrdArgs),
    /// Run the SociIndex controller.
    Run(Box<commands::run::RunArgs>),
    /// The worker of a build Job: convert one image and report the result as JSON.
    #[command(after_help = EXIT_CODES_HELP)]
    Build(Box<commands::build::BuildArgs>),
}

fn main() -> ExitCode {
    registry::limits::return_freed_memory_promptly();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ztoc(args) => commands::ztoc::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Crd(args) => commands::crd::run(args),
        Command::Run(args) => commands::run::run(*args),
        Command::Build(args) => commands::build::run(*args),
        Command::Verify(args) => commands::verify::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}
