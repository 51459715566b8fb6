//! The gzip checkpointer must never panic on arbitrary input, and chunking must not matter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soci_format::zinfo::GzipCheckpointer;

fn run(data: &[u8], chunk: usize) -> Result<(Vec<u8>, Vec<[u8; 32]>), String> {
    let mut cp = GzipCheckpointer::new(4096, 64 << 20).map_err(|e| e.to_string())?;
    for piece in data.chunks(chunk.max(1)) {
        cp.push::<()>(piece, &mut |_| Ok(())).map_err(|e| format!("{e:?}"))?;
    }
    let z = cp.finish().map_err(|e| e.to_string())?;
    Ok((z.blob, z.span_digests))
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len());
    let split = run(data, 1 + (data.len() % 97));
    assert_eq!(whole.is_ok(), split.is_ok());
    if let (Ok(a), Ok(b)) = (whole, split) {
        assert!(a == b);
    }
});
