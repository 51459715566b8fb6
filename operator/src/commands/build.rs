//! `soci-operator build`: the worker a Job runs. Converts one image registry to registry (the
//! same conversion as `convert`) and writes a short JSON result to its termination message,
//! which the controller reads; exits with the `convert` exit codes.

use super::IndexVersionArg;
use super::registry_args::RegistryArgs;
use crate::controller::worker::WorkerResult;
use crate::conversion_engine::{ConvertSettings, convert};
use crate::exit::UsageError;
use crate::image::registry_io::{RegistrySink, RegistrySource};
use crate::reason::failure_of;
use crate::registry::RegistryRef;
use anyhow::Result;
use clap::Args;
use soci_format::conversion_plan::PlatformSelection;
use soci_format::layer_indexer::IndexerLimits;
use std::path::PathBuf;

#[derive(Args)]
pub struct BuildArgs {
    /// The source image, pinned by digest (`registry/repo@sha256:...`).
    #[arg(long)]
    source: String,
    /// The target tag reference (written last).
    #[arg(long)]
    target: String,
    /// The target tag is the source image's own tag (`target.inPlace`): it is rewritten only
    /// if it still names the source digest when the build is done.
    #[arg(long)]
    in_place: bool,
    /// Where the JSON result goes (the container's termination message path).
    #[arg(long, default_value = "/dev/termination-log")]
    result_file: PathBuf,
    /// Platforms to index (repeatable); none: every platform of the image.
    #[arg(long = "platform")]
    platforms: Vec<String>,
    #[arg(long, default_value_t = 10 << 20)]
    min_layer_size: i64,
    #[arg(long, default_value_t = 4 << 20)]
    span_size: u64,
    #[arg(long, value_enum, default_value = "v2")]
    index_version: IndexVersionArg,
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The termination message is cut by the kubelet at 4096 bytes.
const RESULT_LIMIT: usize = 4000;

pub fn run(args: BuildArgs) -> Result<()> {
    super::install_crypto_provider();
    let outcome = build(&args);
    let result = match &outcome {
        Ok(r) => r.clone(),
        Err(e) => failure_result(e),
    };
    let mut json = serde_json::to_string(&result)?;
    if json.len() > RESULT_LIMIT {
        let mut shorter = result.clone();
        if let Some(m) = &mut shorter.message {
            crate::api::condition::truncate(m, 1000);
        }
        json = serde_json::to_string(&shorter)?;
    }
    if let Err(e) = std::fs::write(&args.result_file, &json) {
        eprintln!("warning: writing {}: {e}", args.result_file.display());
    }
    println!("{json}");
    outcome.map(|_| ())
}

fn failure_result(error: &anyhow::Error) -> WorkerResult {
    let failure = failure_of(error);
    WorkerResult {
        ok: false,
        error_class: Some(failure.class.as_str().into()),
        reason: Some(failure.reason.as_str().into()),
        message: Some(format!("{error:#}")),
        ..Default::default()
    }
}

fn build(args: &BuildArgs) -> Result<WorkerResult> {
    if args.span_size == 0 || args.min_layer_size < 0 {
        return Err(UsageError("--span-size must be > 0 and --min-layer-size >= 0".into()).into());
    }
    let source = RegistryRef::parse(&args.source).map_err(|e| UsageError(format!("{e:#}")))?;
    let target = RegistryRef::parse(&args.target).map_err(|e| UsageError(format!("{e:#}")))?;
    let settings = ConvertSettings {
        platforms: if args.platforms.is_empty() {
            PlatformSelection::All
        } else {
            PlatformSelection::List(args.platforms.clone())
        },
        span_size: args.span_size,
        min_layer_size: args.min_layer_size,
        index_version: args.index_version.into(),
        jobs: args.jobs.max(1),
        limits: IndexerLimits::default(),
        optimize_xattrs: false,
        // A worker's log: one line per layer.
        progress: crate::progress::Progress::lines(),
    };
    let client = args.registry.client()?;
    super::runtime()?.block_on(async {
        let reader = RegistrySource::new(client.clone(), source.clone());
        let mut sink =
            RegistrySink::new(client.clone(), target).map_err(|e| UsageError(format!("{e:#}")))?;
        if args.in_place {
            sink = sink.in_place();
        }
        let report = convert(&reader, sink, &settings).await?;
        Ok(WorkerResult {
            ok: true,
            source_digest: source.digest.clone(),
            target_digest: Some(report.image_index.digest.clone()),
            soci_indexes: report.soci_indexes.len(),
            layers_indexed: report.layers.len(),
            layers_skipped: report.skipped_layers.len(),
            bytes_indexed: report.layers.iter().map(|l| l.compressed_size).sum(),
            ..Default::default()
        })
    })
}
