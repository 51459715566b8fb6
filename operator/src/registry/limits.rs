//! What a registry can make us hold or wait for. Every body we keep is read through
//! [`read_body`], which refuses a declared length past the body's limit before reading a byte
//! and stops one byte past it otherwise; error bodies are read through [`read_error_body`],
//! which keeps a few KiB and gives up after a few seconds. The time a request may take
//! (body included), the waits between retries and the pages followed are bounded in
//! [`super::RetryPolicy`] and the callers.

use super::error::{PermanentCause, RegistryError, RegistryResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// The most we keep of one kind of registry body, and what to call it in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub bytes: u64,
    pub kind: &'static str,
}

/// The distribution spec's figure: registries and clients should accept manifests up to
/// 4 MiB, and may refuse larger ones.
pub const MANIFEST: BodyLimit = BodyLimit {
    bytes: 4 * MIB,
    kind: "manifest or index",
};

/// Image configs read whole (the planner's JSON blobs).
pub const CONFIG: BodyLimit = BodyLimit {
    bytes: 4 * MIB,
    kind: "config blob",
};

/// One answer of the referrers API (an image index of descriptors).
pub const REFERRERS: BodyLimit = BodyLimit {
    bytes: 4 * MIB,
    kind: "referrers list",
};

/// One page of `/tags/list`.
pub const TAG_PAGE: BodyLimit = BodyLimit {
    bytes: 4 * MIB,
    kind: "tag list page",
};

/// zTOCs are read whole (flatbuffers need the whole buffer). Upstream zTOCs are the TOC plus
/// 32 KiB per span: a few MiB for a large layer, 48 MiB for about 6 GiB of layer at the
/// default 4 MiB spans. A descriptor declaring more is refused before the download starts.
/// At most [`BODY_MEMORY_BYTES`]: a larger one could never be read.
pub const ZTOC: BodyLimit = BodyLimit {
    bytes: 48 * MIB,
    kind: "zTOC",
};

/// Pages of `/tags/list` followed through `Link` for one listing.
pub const MAX_TAG_PAGES: usize = 100;

/// Error bodies (an OCI error envelope, an HTML page from a proxy): what we read of them...
pub const ERROR_BODY_READ: u64 = 64 * KIB;
/// ...and how long we wait for it, whatever the request's own deadline.
pub const ERROR_BODY_TIME: Duration = Duration::from_secs(5);
/// Characters of a registry's own text (error body, reason) kept in a message.
pub const REGISTRY_TEXT_CHARS: usize = 512;
/// Characters of a whole registry error message (what we did and why it failed).
pub const MESSAGE_CHARS: usize = 2048;

/// Bytes of registry bodies held in memory at once, process-wide (every SociIndex's client
/// shares it): with caps per body alone, 16 reconciles reading 4 MiB bodies, or a few large
/// zTOCs, would be more than the controller's memory. Counted while a body is read, while a
/// fetched manifest is kept, while a check keeps the JSON it read, and while a zTOC is checked.
/// The benchmark in `controller/registry_check/check_hostile_tests.rs` keeps 32 hostile checks
/// under 100 MiB with this.
pub const BODY_MEMORY_BYTES: u64 = 48 * MIB;
/// The first bytes of each body are not counted, so small manifests never wait on big ones.
pub const BODY_MEMORY_FREE: u64 = 64 * KIB;

/// Makes the allocator give freed registry bodies back. glibc raises its mmap threshold to the
/// size of each large buffer freed (up to 32 MiB), after which buffers of that size come from
/// its arenas and stay resident once freed: 32 checks reading 4 MiB bodies left 70 MiB behind
/// that [`BODY_MEMORY`] no longer counted. A fixed trim threshold turns the raising off, so
/// large buffers are mapped and unmapped. Called first thing by `main` (and the benchmark).
pub fn return_freed_memory_promptly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only sets an allocator parameter; no memory is touched.
        unsafe {
            mallopt(M_TRIM_THRESHOLD, 128 << 10);
        }
    }
}

/// A process-wide count of bytes held, with a cap; see [`BODY_MEMORY`].
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    cap: u64,
}

impl MemoryBudget {
    pub const fn new(cap: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            cap,
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Registry bodies being read into memory (JSON bodies, zTOCs).
pub static BODY_MEMORY: MemoryBudget = MemoryBudget::new(BODY_MEMORY_BYTES);

/// What one body holds of a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: &'static MemoryBudget,
    bytes: u64,
}

impl Held {
    pub fn new(budget: &'static MemoryBudget) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Makes the body's share `total` bytes (the first [`BODY_MEMORY_FREE`] free); a transient
    /// error when the budget has no room (other bodies are being read: try later).
    pub fn grow_to(&mut self, what: &str, total: u64) -> RegistryResult<()> {
        let counted = total.saturating_sub(BODY_MEMORY_FREE);
        if counted <= self.bytes {
            return Ok(());
        }
        let more = counted - self.bytes;
        if !self.budget.try_take(more) {
            return Err(RegistryError::transient(
                what,
                format!(
                    "registry bodies being read already hold {} of the operator's {} for them; try again later",
                    size_text(self.budget.used()),
                    size_text(self.budget.cap)
                ),
            ));
        }
        self.bytes = counted;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The error for a body past its limit: permanent, the same request gets the same body.
pub fn too_large(what: &str, limit: BodyLimit, declared: Option<u64>) -> RegistryError {
    let cause = match declared {
        Some(n) => format!(
            "the registry declares {n} bytes, more than the {} limit for a {}",
            size_text(limit.bytes),
            limit.kind
        ),
        None => format!(
            "the body is larger than the {} limit for a {}",
            size_text(limit.bytes),
            limit.kind
        ),
    };
    RegistryError::permanent(PermanentCause::TooLarge, what, cause)
}

/// A body we keep, read whole but never past `limit`: a declared `Content-Length` past the
/// limit is refused before reading, an undeclared (chunked) body stops one byte past it, and a
/// body shorter than it declared is a transient failure (cut short). The request's own
/// deadline (see `RetryPolicy::request_timeout`) bounds the time. The body stays counted in
/// [`BODY_MEMORY`] while the caller keeps the [`Held`].
pub async fn read_body(
    what: &str,
    mut response: reqwest::Response,
    limit: BodyLimit,
) -> RegistryResult<(Vec<u8>, Held)> {
    let declared = response.content_length();
    if let Some(n) = declared
        && n > limit.bytes
    {
        return Err(too_large(what, limit, Some(n)));
    }
    // The budget follows what arrives, not what is declared: a registry declaring 4 MiB and
    // sending a byte a minute holds nothing of it (nor resident memory: the buffer's pages
    // are touched as they are written).
    let mut held = Held::new(&BODY_MEMORY);
    let out = match declared {
        Some(n) => {
            let mut out = Vec::with_capacity(n as usize);
            while let Some(chunk) = next_chunk(what, &mut response).await? {
                append_counted(what, &mut out, &chunk, n, &mut held)?;
            }
            out
        }
        // Chunked: the chunks are kept as they came (a growing buffer would copy itself and
        // leave its old copies to the allocator) and joined once at the end.
        None => {
            let mut chunks = Vec::new();
            let mut len = 0u64;
            while let Some(chunk) = next_chunk(what, &mut response).await? {
                len += chunk.len() as u64;
                if len > limit.bytes {
                    return Err(too_large(what, limit, None));
                }
                held.grow_to(what, len)?;
                chunks.push(chunk);
            }
            let mut out = Vec::with_capacity(len as usize);
            for chunk in chunks.drain(..) {
                out.extend_from_slice(&chunk);
            }
            out
        }
    };
    if let Some(n) = declared
        && n != out.len() as u64
    {
        return Err(RegistryError::transient(
            what,
            format!("body ended after {} of {n} bytes", out.len()),
        ));
    }
    Ok((out, held))
}

async fn next_chunk(
    what: &str,
    response: &mut reqwest::Response,
) -> RegistryResult<Option<bytes::Bytes>> {
    response
        .chunk()
        .await
        .map_err(|e| RegistryError::from_reqwest(what, &e))
}

/// Appends `chunk` to `out`, the bytes held counted in `held` first. A buffer made with its
/// exact final capacity never moves (its pages become resident as they are written); one
/// that grows doubles as `Vec` does but never past `limit` (a body just under its limit must
/// not cost twice the limit).
pub fn append_counted(
    what: &str,
    out: &mut Vec<u8>,
    chunk: &[u8],
    limit: u64,
    held: &mut Held,
) -> RegistryResult<()> {
    let needed = out.len() + chunk.len();
    held.grow_to(what, needed as u64)?;
    if needed > out.capacity() {
        let doubled = (out.capacity() * 2).max(needed).max(8 * 1024);
        let target = doubled.min(limit as usize).max(needed);
        out.reserve_exact(target - out.len());
    }
    out.extend_from_slice(chunk);
    Ok(())
}

/// What we keep of an error body: at most [`ERROR_BODY_READ`] bytes, read for at most
/// [`ERROR_BODY_TIME`]; whatever fails or is left is dropped with the connection.
pub async fn read_error_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while (out.len() as u64) < ERROR_BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ERROR_BODY_READ as usize - out.len();
                    out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIME, read).await;
    out
}

/// `text` with the query string of every URL in it removed (pre-signed blob URLs carry their
/// credentials there) and cut to `max_chars` characters.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    cut(&strip_url_queries(text), max_chars)
}

/// Removes `?...` (and `#...`) from every `http://` or `https://` URL in `text`, up to the end
/// of the URL (whitespace, a quote, a bracket), leaving a marker.
pub fn strip_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        match url.find(['?', '#']) {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?…");
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first `max_chars` characters of `text`, with a marker when something was cut.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((at, _)) => format!("{}… (cut)", &text[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_queries_are_stripped_wherever_they_are() {
        let text = "error sending request for url (https://bucket.s3.amazonaws.com/blob?X-Amz-Signature=secret&X-Amz-Credential=AKIA) then HTTP://Other/x?token=t \"http://q/?a\" http://plain/path";
        let clean = strip_url_queries(text);
        assert!(!clean.contains("secret"), "{clean}");
        assert!(!clean.contains("AKIA"), "{clean}");
        assert!(!clean.contains("token=t"), "{clean}");
        assert!(!clean.contains("?a"), "{clean}");
        assert!(
            clean.contains("(https://bucket.s3.amazonaws.com/blob?…)"),
            "{clean}"
        );
        assert!(clean.contains("http://plain/path"), "{clean}");
        assert_eq!(strip_url_queries("no url? here"), "no url? here");
        assert_eq!(
            strip_url_queries("https://r/v2/a/blobs/x#frag"),
            "https://r/v2/a/blobs/x?…"
        );
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(600);
        let kept = cut(&long, REGISTRY_TEXT_CHARS);
        assert!(kept.starts_with(&"é".repeat(REGISTRY_TEXT_CHARS)));
        assert!(kept.ends_with("… (cut)"));
        assert_eq!(
            kept.chars().count(),
            REGISTRY_TEXT_CHARS + "… (cut)".chars().count()
        );
    }

    #[test]
    fn growth_never_passes_the_limit_and_is_counted() {
        static BUDGET: MemoryBudget = MemoryBudget::new(MIB);
        let mut held = Held::new(&BUDGET);
        let mut v = Vec::new();
        let limit = 300_000u64;
        while v.len() + 7_000 <= limit as usize {
            append_counted("x", &mut v, &[7u8; 7_000], limit, &mut held).unwrap();
            assert!(v.capacity() as u64 <= limit, "{}", v.capacity());
            assert_eq!(
                BUDGET.used() + BODY_MEMORY_FREE,
                v.len().max(BODY_MEMORY_FREE as usize) as u64
            );
        }
    }

    #[test]
    fn the_memory_budget_refuses_past_its_cap_and_is_given_back() {
        static BUDGET: MemoryBudget = MemoryBudget::new(MIB);
        let mut a = Held::new(&BUDGET);
        a.grow_to("a", BODY_MEMORY_FREE).unwrap();
        assert_eq!(BUDGET.used(), 0, "the first bytes are free");
        a.grow_to("a", BODY_MEMORY_FREE + 600 * KIB).unwrap();
        let mut b = Held::new(&BUDGET);
        let e = b.grow_to("b", BODY_MEMORY_FREE + 600 * KIB).unwrap_err();
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .contains("already hold 600 KiB of the operator's 1 MiB"),
            "{e}"
        );
        drop(a);
        assert_eq!(BUDGET.used(), 0);
        b.grow_to("b", BODY_MEMORY_FREE + 600 * KIB).unwrap();
        assert_eq!(BUDGET.used(), 600 * KIB);
    }

    #[test]
    fn too_large_names_the_limit_and_is_permanent() {
        let e = too_large("GET manifest r/a:v1", MANIFEST, Some(1 << 40));
        assert!(!e.is_transient());
        assert!(
            e.to_string().contains(
                "declares 1099511627776 bytes, more than the 4 MiB limit for a manifest or index"
            ),
            "{e}"
        );
        let e = too_large("x", ZTOC, None);
        assert!(e.to_string().contains("48 MiB limit for a zTOC"), "{e}");
    }
}
