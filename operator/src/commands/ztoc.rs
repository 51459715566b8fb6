//! `soci-operator ztoc LAYER_FILE`: the zTOC of one layer blob, for people and benchmarks.

use crate::conversion_engine::compression_of_media_type;
use crate::image::layout_io::LAYER_READ_CHUNK;
use anyhow::{Context, Result, bail};
use clap::Args;
use soci_format::layer_indexer::{IndexerLimits, LayerIndexer};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct ZtocArgs {
    /// The layer blob (gzip-compressed or plain tar).
    layer_file: PathBuf,
    /// The layer's media type; decides how it is read.
    #[arg(long, default_value = "application/vnd.oci.image.layer.v1.tar+gzip")]
    media_type: String,
    /// Uncompressed bytes between checkpoints.
    #[arg(long, default_value_t = 4 << 20)]
    span_size: u64,
    /// Where to write the zTOC bytes.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(args: ZtocArgs) -> Result<()> {
    let Some(compression) = compression_of_media_type(&args.media_type)? else {
        bail!(
            "layer media type {} is not indexable (zstd or unknown compression)",
            args.media_type
        );
    };
    let started = Instant::now();
    let mut file = File::open(&args.layer_file)
        .with_context(|| format!("opening {}", args.layer_file.display()))?;
    let mut indexer = LayerIndexer::new(compression, args.span_size, IndexerLimits::default())?;
    let mut buf = vec![0u8; LAYER_READ_CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", args.layer_file.display()))?;
        if n == 0 {
            break;
        }
        indexer
            .push(&buf[..n])
            .with_context(|| format!("layer {}", args.layer_file.display()))?;
    }
    let built = indexer
        .finish()
        .with_context(|| format!("layer {}", args.layer_file.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.output {
        let mut out = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        built.bytes.write_to(&mut out)?;
        out.flush()?;
    }
    let report = serde_json::json!({
        "ztocDigest": built.bytes.digest(),
        "ztocSize": built.bytes.len(),
        "spans": built.span_count,
        "files": built.file_count,
        "compressedSize": built.compressed_size,
        "uncompressedSize": built.uncompressed_archive_size,
        "seconds": seconds,
        "uncompressedMBPerSecond": built.uncompressed_archive_size as f64 / 1e6 / seconds.max(1e-9),
    });
    println!("{report}");
    Ok(())
}
