//! `soci-operator inspect REF`: is this image ready to be lazily loaded, per platform and per
//! layer (see `inspect_report.rs`). A report, not a check: exit code 0 whatever it finds.

use super::registry_args::RegistryArgs;
use crate::exit::UsageError;
use crate::image::ImageRef;
use crate::image::layout_io::LayoutSource;
use crate::image::registry_io::RegistrySource;
use crate::inspect_report::{ImageReport, inspect};
use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The image: a registry reference or oci:DIR[:REF].
    image: String,
    /// Layers below this size (compressed) without a zTOC are reported as too small.
    #[arg(long, default_value_t = 10 << 20)]
    min_layer_size: i64,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: OutputFormat,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let image = ImageRef::parse(&args.image).map_err(|e| UsageError(format!("{e:#}")))?;
    let report = super::runtime()?.block_on(async {
        match &image {
            ImageRef::Layout { dir, reference } => {
                inspect(
                    &LayoutSource::open(dir, reference.clone())?,
                    args.min_layer_size,
                )
                .await
            }
            ImageRef::Registry(r) => {
                let source = RegistrySource::new(args.registry.client()?, r.clone());
                inspect(&source, args.min_layer_size).await
            }
        }
    })?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text => print_table(&report),
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn print_table(report: &ImageReport) {
    println!(
        "image {} {} ({})",
        report.image, report.digest, report.media_type
    );
    println!(
        "{:<16} {:<8} {:<14} {:>14} {:>8}",
        "PLATFORM", "BINDING", "SOCI INDEX", "LAYERS INDEXED", "BYTES"
    );
    for p in &report.platforms {
        println!(
            "{:<16} {:<8} {:<14} {:>14} {:>7.1}%",
            p.platform,
            p.binding,
            p.soci_index.as_deref().map(short).unwrap_or("-"),
            format!("{}/{}", p.layers_indexed, p.layers.len()),
            p.bytes_indexed_percent
        );
        for l in &p.layers {
            println!(
                "  layer {} {:>12} bytes  {}{}",
                short(&l.digest),
                l.size,
                l.status,
                l.ztoc
                    .as_deref()
                    .map(|z| format!(" (ztoc {})", short(z)))
                    .unwrap_or_default()
            );
        }
        if let Some(problem) = &p.problem {
            println!("  problem: {problem}");
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
}
