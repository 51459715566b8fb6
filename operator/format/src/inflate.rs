//! A safe wrapper around zlib-rs's C API that inflates gzip with `Z_BLOCK`, so that the caller
//! sees every deflate block boundary and the unused-bit count, the way upstream's `zran`-derived
//! checkpointer does. flate2 hides `data_type`, so this talks to libz-rs-sys directly.

use libz_rs_sys as z;
use std::ffi::CStr;

/// Window bits for gzip decoding with automatic header detection, as upstream uses (`47`).
const GZIP_AUTO_WINDOW_BITS: i32 = 47;

/// `data_type` flags reported by inflate (zlib manual).
const DATA_TYPE_UNUSED_BITS: i32 = 7;
const DATA_TYPE_LAST_BLOCK: i32 = 64;
const DATA_TYPE_BLOCK_BOUNDARY: i32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateStatus {
    /// Progress was made (or none was possible); call again with more input or output space.
    Ok,
    /// The end of one gzip member was reached (trailer checked).
    StreamEnd,
}

#[derive(Debug, Clone, Copy)]
pub struct InflateStep {
    pub consumed: usize,
    pub produced: usize,
    pub status: InflateStatus,
    data_type: i32,
}

impl InflateStep {
    /// The decoder stopped right after a block's end-of-block code or after a member's header.
    pub fn at_block_boundary(&self) -> bool {
        self.data_type & DATA_TYPE_BLOCK_BOUNDARY != 0
    }
    /// The block just decoded (or being decoded) is the last of its member.
    pub fn in_last_block(&self) -> bool {
        self.data_type & DATA_TYPE_LAST_BLOCK != 0
    }
    /// Bits of the last consumed byte that belong to the next block.
    pub fn unused_bits(&self) -> u8 {
        (self.data_type & DATA_TYPE_UNUSED_BITS) as u8
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InflateError(pub String);

/// An inflater that returns at every deflate block boundary.
pub struct BlockInflater {
    // Boxed: zlib's state keeps a pointer back to the stream, so it must never move.
    stream: Box<z::z_stream>,
}

// SAFETY: the stream and its state are owned exclusively by this value; nothing is shared.
unsafe impl Send for BlockInflater {}

impl BlockInflater {
    pub fn new() -> Result<Self, InflateError> {
        let mut stream = Box::new(z::z_stream::default());
        // SAFETY: `stream` is a valid, zeroed z_stream (null allocators select the defaults) and
        // the version/size arguments describe the library we link.
        let ret = unsafe {
            z::inflateInit2_(
                &mut *stream,
                GZIP_AUTO_WINDOW_BITS,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if ret != z::Z_OK {
            return Err(InflateError(format!("inflateInit2 failed ({ret})")));
        }
        Ok(Self { stream })
    }

    /// Prepares for the next gzip member after `StreamEnd`.
    pub fn reset(&mut self) -> Result<(), InflateError> {
        // SAFETY: the stream was initialised by `new`.
        let ret = unsafe { z::inflateReset2(&mut *self.stream, GZIP_AUTO_WINDOW_BITS) };
        if ret != z::Z_OK {
            return Err(InflateError(format!("inflateReset2 failed ({ret})")));
        }
        Ok(())
    }

    /// Inflates from `input` into `output`, stopping at the next block boundary.
    pub fn inflate_block(
        &mut self,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<InflateStep, InflateError> {
        self.inflate(input, output, true)
    }

    /// Inflates from `input` into `output`; with `stop_at_block` (`Z_BLOCK`) it also stops at the
    /// next block boundary, otherwise (`Z_NO_FLUSH`) only when input or output run out. Without
    /// it, inflate may decode past a boundary once `output` is full (the end-of-block code and
    /// the next block's header produce no output), so boundaries at that offset go unseen.
    pub fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        stop_at_block: bool,
    ) -> Result<InflateStep, InflateError> {
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(output.len()).unwrap_or(u32::MAX);
        let s = &mut *self.stream;
        s.next_in = input.as_ptr();
        s.avail_in = avail_in;
        s.next_out = output.as_mut_ptr();
        s.avail_out = avail_out;
        // SAFETY: next_in/next_out point at live buffers of at least avail_in/avail_out bytes,
        // which outlive the call; the stream was initialised by `new`.
        let flush = if stop_at_block {
            z::Z_BLOCK
        } else {
            z::Z_NO_FLUSH
        };
        let ret = unsafe { z::inflate(s, flush) };
        let consumed = (avail_in - s.avail_in) as usize;
        let produced = (avail_out - s.avail_out) as usize;
        // Do not keep pointers into the caller's buffers beyond this call.
        s.next_in = std::ptr::null();
        s.next_out = std::ptr::null_mut();
        let status = match ret {
            z::Z_OK | z::Z_BUF_ERROR => InflateStatus::Ok,
            z::Z_STREAM_END => InflateStatus::StreamEnd,
            z::Z_NEED_DICT => {
                return Err(InflateError("gzip stream needs a preset dictionary".into()));
            }
            _ => {
                let msg = if s.msg.is_null() {
                    format!("inflate error {ret}")
                } else {
                    // SAFETY: zlib sets msg to a static NUL-terminated string.
                    unsafe { CStr::from_ptr(s.msg) }
                        .to_string_lossy()
                        .into_owned()
                };
                return Err(InflateError(msg));
            }
        };
        Ok(InflateStep {
            consumed,
            produced,
            status,
            data_type: s.data_type,
        })
    }
}

impl Drop for BlockInflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `new` and is ended exactly once.
        unsafe {
            z::inflateEnd(&mut *self.stream);
        }
    }
}
