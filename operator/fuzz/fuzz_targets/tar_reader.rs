//! The tar reader must never panic, and must give the same result however the bytes are split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soci_format::tar::{TarEntry, TarError, TarStreamReader};

fn run(data: &[u8], chunk: usize) -> (Vec<(Vec<u8>, u64, i64)>, Result<u64, String>) {
    let mut reader = TarStreamReader::new();
    let mut entries = Vec::new();
    let mut on_entry = |e: TarEntry| -> Result<(), TarError> {
        entries.push((e.name, e.data_offset, e.size));
        Ok(())
    };
    for piece in data.chunks(chunk.max(1)) {
        if let Err(e) = reader.push(piece, &mut on_entry) {
            return (entries, Err(e.to_string()));
        }
    }
    let end = reader.finish().map_err(|e| e.to_string());
    (entries, end)
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len());
    let split = run(data, 1 + (data.len() % 511));
    assert_eq!(whole, split);
});
