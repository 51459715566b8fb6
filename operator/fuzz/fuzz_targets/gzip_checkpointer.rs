//! The gzip checkpointer must never panic on arbitrary input, chunking must not matter, and
//! stopping at every deflate block (upstream's way) must give the same zinfo as stopping only
//! where a checkpoint may follow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soci_format::zinfo::GzipCheckpointer;

type Zinfo = (Vec<u8>, Vec<[u8; 32]>);

fn run(data: &[u8], span: u64, chunk: usize, every_block: bool) -> Result<Zinfo, String> {
    let mut cp = GzipCheckpointer::new(span, 64 << 20).map_err(|e| e.to_string())?;
    if every_block {
        cp.stop_at_every_block();
    }
    for piece in data.chunks(chunk.max(1)) {
        cp.push::<()>(piece, &mut |_| Ok(()))
            .map_err(|e| format!("{e:?}"))?;
    }
    let z = cp.finish().map_err(|e| e.to_string())?;
    Ok((z.blob, z.span_digests))
}

fuzz_target!(|data: &[u8]| {
    // Small spans (from the last byte) so that short inputs still make many checkpoints.
    let span = 1 + u64::from(data.last().copied().unwrap_or(0)) * 16;
    let reference = run(data, span, data.len(), true);
    let whole = run(data, span, data.len(), false);
    let split = run(data, span, 1 + (data.len() % 97), false);
    assert_eq!(reference.is_ok(), whole.is_ok());
    assert_eq!(whole.is_ok(), split.is_ok());
    if let (Ok(r), Ok(a), Ok(b)) = (reference, whole, split) {
        assert!(r == a, "every-block and quiet zinfo differ");
        assert!(a == b, "chunking changed the zinfo");
    }
});
