//! The seed corpus of the `ztoc_reader` fuzz target (`operator/fuzz`): zTOCs built from every
//! layer of the testkit's quick corpus (tar flavours, gzip shapes) and upstream's golden
//! vector, each with the layer size its manifest declares. `cargo test` runs the fuzz entry
//! function over every seed, a few mutants of each, and every input fuzzing ever broke (a
//! smoke test on stable Rust); `e2e/fuzz` writes the seeds out as the fuzzer's starting corpus
//! by running this test with `SOCI_FUZZ_SEED_DIR` set.

use soci_format::fuzzing::{split_ztoc_input, ztoc_input, ztoc_reader};
use soci_format::layer_indexer::{IndexerLimits, LayerCompression, LayerIndexer};
use soci_format::ztoc::{CompressionInfo, FileMetadata, Ztoc};
use soci_testkit::oracle::TempDir;
use soci_testkit::{Scale, corpus};
use std::collections::BTreeMap;
use std::path::Path;

/// Seeds larger than this are left out: libFuzzer mutates short inputs faster.
const MAX_SEED_BYTES: usize = 256 << 10;

/// The zTOC of a layer blob, if it is one we index (gzip or tar).
fn ztoc_of(blob: &[u8]) -> Option<Vec<u8>> {
    let (compression, span) = if blob.starts_with(&[0x1f, 0x8b]) {
        (LayerCompression::Gzip, 1 << 20)
    } else if blob.get(257..262) == Some(b"ustar") {
        (LayerCompression::Uncompressed, 1 << 16)
    } else {
        return None;
    };
    let mut indexer = LayerIndexer::new(compression, span, IndexerLimits::default()).ok()?;
    indexer.push(blob).ok()?;
    let built = indexer.finish().ok()?;
    Some(ztoc_input(built.compressed_size, &built.bytes.to_vec()))
}

fn layer_seeds(layout: &Path, seeds: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(dir) = std::fs::read_dir(layout.join("blobs/sha256")) else {
        return;
    };
    for file in dir.flatten() {
        let Ok(blob) = std::fs::read(file.path()) else {
            continue;
        };
        if let Some(seed) = ztoc_of(&blob).filter(|s| s.len() <= MAX_SEED_BYTES) {
            let name = file.file_name().to_string_lossy()[..16].to_string();
            seeds.insert(format!("layer-{name}"), seed);
        }
    }
}

/// Upstream's golden vector (`ztoc/ztoc_test.go`): two empty entries, 64 KiB of checkpoints.
fn golden() -> Vec<u8> {
    let z = Ztoc {
        version: "0.9".into(),
        build_tool_identifier: "AWS SOCI CLI".into(),
        compressed_archive_size: 2_000_000,
        uncompressed_archive_size: 2_500_000,
        toc: vec![
            FileMetadata {
                mod_time: "0001-01-01T00:00:00Z".into(),
                ..Default::default()
            };
            2
        ],
        compression: CompressionInfo {
            algorithm: None,
            max_span_id: 3,
            span_digests: vec![],
            checkpoints: vec![0; 65536],
        },
    };
    ztoc_input(2_000_000, &z.into_bytes().unwrap().to_vec())
}

fn seeds() -> BTreeMap<String, Vec<u8>> {
    let mut seeds = BTreeMap::new();
    seeds.insert("golden".to_string(), golden());
    let tmp = TempDir::new("soci-ztoc-seeds").unwrap();
    for (i, case) in corpus(Scale::Quick).into_iter().enumerate() {
        let layout = tmp.path().join(format!("{i}"));
        if (case.write)(&layout).is_ok() {
            layer_seeds(&layout, &mut seeds);
        }
        let _ = std::fs::remove_dir_all(&layout);
    }
    seeds
}

/// Cheap mutants of a seed: cut short, declared as a huge layer, one byte flipped in places.
fn mutants(seed: &[u8]) -> Vec<Vec<u8>> {
    let (_, ztoc) = split_ztoc_input(seed);
    let mut out = vec![
        ztoc_input(1 << 40, ztoc),
        ztoc_input(u64::MAX, ztoc),
        seed[..seed.len() / 2].to_vec(),
    ];
    let mut state = seed.len() as u64 | 1;
    for _ in 0..16 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut m = seed.to_vec();
        let i = (state % m.len() as u64) as usize;
        m[i] ^= (state >> 32) as u8 | 1;
        out.push(m);
    }
    out
}

#[test]
fn the_ztoc_fuzz_entry_runs_clean_over_the_seed_corpus() {
    let seeds = seeds();
    let layers = seeds.keys().filter(|k| k.starts_with("layer-")).count();
    assert!(layers >= 20, "only {layers} layer zTOCs from the corpus");
    for (name, seed) in &seeds {
        let (declared, ztoc) = split_ztoc_input(seed);
        let z = soci_format::ztoc_reader::read_ztoc(ztoc)
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        if name != "golden" {
            // A real layer's spans are sound for its own size. (Its TOC may fail `check_toc`:
            // some corpus layers are built to show what the snapshotter refuses.)
            soci_format::ztoc_reader::span_ranges(&z, declared)
                .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
        ztoc_reader(seed);
        for m in mutants(seed) {
            ztoc_reader(&m);
        }
    }
    if let Some(dir) = std::env::var_os("SOCI_FUZZ_SEED_DIR") {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        for (name, seed) in &seeds {
            std::fs::write(dir.join(name), seed).unwrap();
        }
        eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
}

/// Every input that ever broke the target, kept as a file (what libFuzzer saved).
#[test]
fn ztoc_fuzz_regressions_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/ztoc_reader");
    let mut ran = 0;
    for file in std::fs::read_dir(&dir).unwrap().flatten() {
        ztoc_reader(&std::fs::read(file.path()).unwrap());
        ran += 1;
    }
    assert!(ran > 0, "no regression inputs in {}", dir.display());
}
