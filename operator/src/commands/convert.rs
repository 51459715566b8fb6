//! `soci-operator convert SRC DST`: the SOCI conversion of one image, like upstream
//! `soci convert --standalone --format oci-dir`, with byte-identical output.

use crate::conversion::{ConvertSettings, convert};
use crate::image::ImageRef;
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use soci_format::convert::{IndexVersion, PlatformSelection};
use soci_format::layer_indexer::IndexerLimits;

#[derive(Clone, Copy, ValueEnum)]
enum IndexVersionArg {
    V1,
    V2,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Optimization {
    Xattr,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The image to convert: oci:DIR[:REF] (an OCI image layout).
    source: String,
    /// Where the SOCI-enabled image goes: oci:DIR[:REF] (a new OCI image layout).
    destination: String,
    /// Convert only these platforms (os/arch[/variant]); repeatable. Default: the image's
    /// platform for a single manifest, the host's for a multi-platform image.
    #[arg(long = "platform", short = 'p')]
    platforms: Vec<String>,
    /// Convert every platform of a multi-platform image (wins over --platform, as upstream).
    #[arg(long)]
    all_platforms: bool,
    /// Uncompressed bytes between checkpoints.
    #[arg(long, default_value_t = 4 << 20)]
    span_size: u64,
    /// Layers smaller than this (compressed) are not indexed.
    #[arg(long, default_value_t = 10 << 20)]
    min_layer_size: i64,
    /// SOCI index manifest version: v2 binds the index to the image; v1 is for old runtimes.
    #[arg(long, value_enum, default_value = "v2")]
    index_version: IndexVersionArg,
    /// Layers indexed in parallel.
    #[arg(long, default_value_t = default_jobs())]
    jobs: usize,
    /// Refuse layers with more tar entries than this.
    #[arg(long, default_value_t = IndexerLimits::default().max_entries)]
    max_entries: usize,
    /// Refuse layers that inflate to more bytes than this.
    #[arg(long, default_value_t = IndexerLimits::default().max_uncompressed_bytes)]
    max_uncompressed_bytes: u64,
    /// Optional optimisations, as upstream: `xattr` marks layers without xattrs so the runtime
    /// skips xattr lookups (breaks volume mounts of such layers; opt-in).
    #[arg(long = "optimizations", value_enum)]
    optimizations: Vec<Optimization>,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: OutputFormat,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(4)
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if args.span_size == 0 {
        bail!("--span-size must be greater than zero");
    }
    if args.min_layer_size < 0 {
        bail!("--min-layer-size must not be negative");
    }
    let source = ImageRef::parse(&args.source)?;
    let destination = ImageRef::parse(&args.destination)?;
    let platforms = if args.all_platforms {
        PlatformSelection::All
    } else if args.platforms.is_empty() {
        PlatformSelection::Default
    } else {
        PlatformSelection::List(args.platforms.clone())
    };
    let settings = ConvertSettings {
        platforms,
        span_size: args.span_size,
        min_layer_size: args.min_layer_size,
        index_version: match args.index_version {
            IndexVersionArg::V1 => IndexVersion::V1,
            IndexVersionArg::V2 => IndexVersion::V2,
        },
        jobs: args.jobs.max(1),
        limits: IndexerLimits {
            max_entries: args.max_entries,
            max_uncompressed_bytes: args.max_uncompressed_bytes,
        },
        optimize_xattrs: args.optimizations.contains(&Optimization::Xattr),
    };
    let report = convert(&source, &destination, &settings)?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text => {
            for skipped in &report.skipped_layers {
                println!("skipped {skipped}");
            }
            for soci in &report.soci_indexes {
                println!("soci index {} ({} bytes)", soci.digest, soci.size);
            }
            println!(
                "image index {} ({} bytes) written to {} in {:.2}s",
                report.image_index.digest,
                report.image_index.size,
                args.destination,
                report.seconds
            );
        }
    }
    Ok(())
}
