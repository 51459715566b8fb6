//! `soci-operator verify REF [--deep]`: checks the SOCI binding the way the soci-snapshotter
//! checks it (see `verification.rs`). Exit 0 when it holds, 1 with the reasons when it does
//! not, 3 when the registry kept failing.

use super::registry_args::RegistryArgs;
use crate::exit::UsageError;
use crate::image::ImageRef;
use crate::image::layout_io::LayoutSource;
use crate::verification::{VerificationReport, verify, verify_binding};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The image: a registry reference or oci:DIR[:REF].
    image: String,
    /// Also stream every indexed layer and re-hash each span against the zTOC's span digests.
    #[arg(long)]
    deep: bool,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: OutputFormat,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: VerifyArgs) -> Result<()> {
    let image = ImageRef::parse(&args.image).map_err(|e| UsageError(format!("{e:#}")))?;
    let report = super::runtime()?.block_on(async {
        match &image {
            ImageRef::Layout { dir, reference } => {
                verify(&LayoutSource::open(dir, reference.clone())?, args.deep).await
            }
            ImageRef::Registry(r) => {
                verify_binding(args.registry.client()?, r.clone(), args.deep).await
            }
        }
    })?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text => print_text(&report),
    }
    if !report.ok {
        let lines = report.problem_lines();
        bail!(
            "{}: SOCI binding does not verify ({} problem{}):\n  {}",
            report.image,
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            lines.join("\n  ")
        );
    }
    Ok(())
}

fn print_text(report: &VerificationReport) {
    println!(
        "image {} {} ({}){}",
        report.image,
        report.digest,
        report.media_type,
        if report.deep { " [deep]" } else { "" }
    );
    for p in &report.platforms {
        let status = if !p.problems.is_empty() {
            "FAIL"
        } else if p.binding.starts_with("bound") {
            "ok"
        } else {
            "unbound"
        };
        let spans = if report.deep {
            format!(", {} spans re-hashed", p.spans_checked)
        } else {
            String::new()
        };
        println!(
            "{:<16} {:<7} manifest {} soci-index {} ({} zTOCs checked{spans})",
            p.platform,
            status,
            p.manifest,
            p.soci_index.as_deref().unwrap_or("-"),
            p.ztocs_checked,
        );
        for problem in &p.problems {
            println!("  problem: {problem}");
        }
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!(
        "{}",
        if report.ok {
            "VERIFIED"
        } else {
            "NOT VERIFIED"
        }
    );
}
