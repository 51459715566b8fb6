//! `data`: deterministic file contents — pseudo-random (xorshift64*, fixed seeds, no `rand` crate),
//! English-like text, zeros, and a mix. The same seed always gives the same bytes.

/// xorshift64* generator.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Avoid the all-zero state; scramble small seeds.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0; slight modulo bias is fine for test data).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Incompressible bytes.
pub fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// All zeros.
pub fn zeros(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

const WORDS: &[&str] = &[
    "the",
    "layer",
    "index",
    "span",
    "checkpoint",
    "container",
    "image",
    "snapshot",
    "lazy",
    "pull",
    "registry",
    "manifest",
    "digest",
    "sha256",
    "gzip",
    "deflate",
    "window",
    "block",
    "tar",
    "header",
    "kubernetes",
    "node",
    "pod",
    "runtime",
    "of",
    "and",
    "to",
    "in",
    "is",
    "a",
    "for",
    "with",
    "on",
    "config",
    "platform",
    "amd64",
    "arm64",
    "linux",
    "file",
    "directory",
    "symlink",
    "device",
    "/usr/lib/x86_64-linux-gnu",
    "libc.so.6",
    "0x7f3a",
    "ENOENT",
    "{\"key\": 42}",
    "#include",
];

/// Text made of words, punctuation and newlines (compresses ~3-4x, like source/config files).
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut r = XorShift::new(seed ^ 0x7465_7874);
    let mut v = Vec::with_capacity(len + 32);
    let mut col = 0;
    while v.len() < len {
        let w = WORDS[r.below(WORDS.len() as u64) as usize];
        v.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 72 || r.below(40) == 0 {
            v.push(b'\n');
            col = 0;
        } else if r.below(12) == 0 {
            v.extend_from_slice(b", ");
        } else {
            v.push(b' ');
        }
    }
    v.truncate(len);
    v
}

/// Blocks of text, random and zeros interleaved (64 KiB pieces), like a binary with data sections.
pub fn mixed(seed: u64, len: usize) -> Vec<u8> {
    let mut r = XorShift::new(seed ^ 0x6d69_7865);
    let mut v = Vec::with_capacity(len);
    let mut i = 0u64;
    while v.len() < len {
        let n = (len - v.len()).min(65536);
        match r.below(3) {
            0 => v.extend(text(seed.wrapping_add(i), n)),
            1 => v.extend(random(seed.wrapping_add(i), n)),
            _ => v.extend(zeros(n)),
        }
        i += 1;
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn deterministic() {
        assert_eq!(super::random(1, 100), super::random(1, 100));
        assert_ne!(super::random(1, 100), super::random(2, 100));
        assert_eq!(super::text(3, 1000).len(), 1000);
        assert_eq!(super::mixed(3, 200_000).len(), 200_000);
    }
}
