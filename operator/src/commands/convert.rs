//! `soci-operator convert SRC DST`: the SOCI conversion of one image, like upstream
//! `soci convert --standalone`, with byte-identical output; each side is an OCI image layout
//! (`oci:DIR[:REF]`) or a registry reference.

use super::IndexVersionArg;
use super::registry_args::RegistryArgs;
use crate::conversion_engine::{
    ConvertReport, ConvertSettings, PlanReport, convert, plan, plan_report,
};
use crate::exit::UsageError;
use crate::image::layout_io::{LayoutSink, LayoutSource};
use crate::image::registry_io::{RegistrySink, RegistrySource};
use crate::image::{ImageRef, ImageSource};
use crate::registry::RegistryClient;
use anyhow::Result;
use clap::{Args, ValueEnum};
use soci_format::conversion_plan::PlatformSelection;
use soci_format::layer_indexer::IndexerLimits;
use std::sync::Arc;

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
    /// The image to convert: a registry reference (host[:port]/repo[:tag][@digest]; docker.io
    /// names are normalised like docker's) or oci:DIR[:REF] (an OCI image layout).
    source: String,
    /// Where the SOCI-enabled image goes: a registry reference with a tag (written last, once
    /// everything it references is pushed) or oci:DIR[:REF] (a new OCI image layout).
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
    /// Layers indexed (and blobs written) in parallel.
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
    /// Print the plan (per platform: the layers to index, those skipped and why) and write
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: OutputFormat,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(4)
}

enum Outcome {
    Converted(ConvertReport),
    Planned(PlanReport),
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if args.span_size == 0 {
        return Err(UsageError("--span-size must be greater than zero".into()).into());
    }
    if args.min_layer_size < 0 {
        return Err(UsageError("--min-layer-size must not be negative".into()).into());
    }
    let source = ImageRef::parse(&args.source).map_err(|e| UsageError(format!("{e:#}")))?;
    let destination =
        ImageRef::parse(&args.destination).map_err(|e| UsageError(format!("{e:#}")))?;
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
        index_version: args.index_version.into(),
        jobs: args.jobs.max(1),
        limits: IndexerLimits {
            max_entries: args.max_entries,
            max_uncompressed_bytes: args.max_uncompressed_bytes,
        },
        optimize_xattrs: args.optimizations.contains(&Optimization::Xattr),
        progress: crate::progress::Progress::for_stderr(),
    };
    let uses_registry =
        matches!(source, ImageRef::Registry(_)) || matches!(destination, ImageRef::Registry(_));
    let client = if uses_registry {
        Some(args.registry.client()?)
    } else {
        None
    };
    let outcome = super::runtime()?.block_on(async {
        let job = Job {
            destination: &destination,
            settings: &settings,
            client: client.as_ref(),
            dry_run: args.dry_run,
        };
        match &source {
            ImageRef::Layout { dir, reference } => {
                job.run(&LayoutSource::open(dir, reference.clone())?).await
            }
            ImageRef::Registry(r) => {
                let client = client.clone().expect("client made for registry references");
                job.run(&RegistrySource::new(client, r.clone())).await
            }
        }
    });
    settings.progress.finish();
    let outcome = outcome?;
    match (outcome, args.output) {
        (Outcome::Converted(report), OutputFormat::Json) => {
            println!("{}", serde_json::to_string(&report)?)
        }
        (Outcome::Planned(report), OutputFormat::Json) => {
            println!("{}", serde_json::to_string(&report)?)
        }
        (Outcome::Converted(report), OutputFormat::Text) => {
            for skipped in &report.skipped_layers {
                println!("skipped {skipped}");
            }
            for soci in &report.soci_indexes {
                println!("soci index {} ({} bytes)", soci.digest, soci.size);
            }
            let t = &report.transfer;
            println!(
                "image index {} ({} bytes) written to {} in {:.2}s ({} written, {} bytes; {} linked or mounted; {} already present)",
                report.image_index.digest,
                report.image_index.size,
                args.destination,
                report.seconds,
                t.written,
                t.bytes_written,
                t.linked,
                t.already_present
            );
        }
        (Outcome::Planned(report), OutputFormat::Text) => print_plan(&report),
    }
    Ok(())
}

struct Job<'a> {
    destination: &'a ImageRef,
    settings: &'a ConvertSettings,
    client: Option<&'a Arc<RegistryClient>>,
    dry_run: bool,
}

impl Job<'_> {
    async fn run<S: ImageSource>(&self, source: &S) -> Result<Outcome> {
        if self.dry_run {
            let (_, planned) = plan(source, self.settings).await?;
            return Ok(Outcome::Planned(plan_report(
                &source.describe(),
                &planned,
                self.settings.min_layer_size,
            )));
        }
        let report = match self.destination {
            ImageRef::Layout { dir, reference } => {
                let sink = LayoutSink::create(dir, reference.clone())?;
                convert(source, sink, self.settings).await?
            }
            ImageRef::Registry(r) => {
                let client = self.client.expect("client made for registry references");
                let mut sink = RegistrySink::new(client.clone(), r.clone())
                    .map_err(|e| UsageError(format!("{e:#}")))?;
                // `convert repo:tag repo:tag` rewrites the source tag itself.
                if source.registry_repository() == Some(r) {
                    sink = sink.in_place();
                }
                convert(source, sink, self.settings).await?
            }
        };
        Ok(Outcome::Converted(report))
    }
}

fn print_plan(report: &PlanReport) {
    println!(
        "plan for {} ({} {})",
        report.source, report.image.media_type, report.image.digest
    );
    for p in &report.platforms {
        println!("platform {} (manifest {}):", p.platform, p.manifest);
        for l in &p.layers {
            match &l.reason {
                None => println!("  index {} {} bytes {}", l.digest, l.size, l.media_type),
                Some(why) => println!(
                    "  skip  {} {} bytes {} ({why})",
                    l.digest, l.size, l.media_type
                ),
            }
        }
    }
    for s in &report.skipped_layers {
        println!("skipped {s}");
    }
    println!("dry run: nothing was written");
}
