//! Test helpers shared by the tar tests: header block and archive builders, and runs of the
//! reader in one push, byte by byte and in random chunks (which must all agree).

use super::header::padding_after;
use super::*;

enum Checksum {
    Unsigned,
    Signed,
    Raw,
}

/// A header block under construction; [`HeaderBlock::bytes`] fills in the checksum.
pub(super) struct HeaderBlock {
    block: [u8; BLOCK_SIZE],
    checksum: Checksum,
}

impl HeaderBlock {
    /// §15's "H": USTAR, mode 0644, ids 0, root/root, mtime 0, typeflag '0'.
    pub(super) fn ustar() -> Self {
        const FIELDS: [(usize, &[u8]); 12] = [
            (100, b"0000644\0"),
            (108, b"0000000\0"),
            (116, b"0000000\0"),
            (124, b"00000000000\0"),
            (136, b"00000000000\0"),
            (156, b"0"),
            (257, b"ustar\0"),
            (263, b"00"),
            (265, b"root"),
            (297, b"root"),
            (329, b"0000000\0"),
            (337, b"0000000\0"),
        ];
        let block = HeaderBlock {
            block: [0; BLOCK_SIZE],
            checksum: Checksum::Unsigned,
        };
        FIELDS
            .iter()
            .fold(block, |block, &(offset, bytes)| block.set(offset, bytes))
    }

    /// §15's "G": the same with the GNU magic and version.
    pub(super) fn gnu() -> Self {
        Self::ustar().set(257, b"ustar ").set(263, b" \0")
    }

    pub(super) fn set(mut self, offset: usize, bytes: &[u8]) -> Self {
        self.block[offset..offset + bytes.len()].copy_from_slice(bytes);
        self
    }

    /// Replaces a whole field (NUL-filling the rest).
    pub(super) fn field(mut self, offset: usize, length: usize, bytes: &[u8]) -> Self {
        self.block[offset..offset + length].fill(0);
        self.set(offset, bytes)
    }

    pub(super) fn name(self, name: &[u8]) -> Self {
        self.field(0, 100, name)
    }

    pub(super) fn linkname(self, name: &[u8]) -> Self {
        self.field(157, 100, name)
    }

    pub(super) fn prefix(self, prefix: &[u8]) -> Self {
        self.field(345, 155, prefix)
    }

    pub(super) fn typeflag(self, typeflag: u8) -> Self {
        self.set(156, &[typeflag])
    }

    pub(super) fn size(self, size: u64) -> Self {
        self.set(124, format!("{size:011o}\0").as_bytes())
    }

    pub(super) fn mtime(self, mtime: u64) -> Self {
        self.set(136, format!("{mtime:011o}\0").as_bytes())
    }

    pub(super) fn signed_checksum(mut self) -> Self {
        self.checksum = Checksum::Signed;
        self
    }

    pub(super) fn raw_checksum(mut self, field: &[u8; 8]) -> Self {
        self.checksum = Checksum::Raw;
        self.set(148, field)
    }

    pub(super) fn bytes(&self) -> [u8; BLOCK_SIZE] {
        let mut block = self.block;
        let (unsigned, signed) = checksums(&block);
        let sum = match self.checksum {
            Checksum::Unsigned => unsigned,
            Checksum::Signed => signed,
            Checksum::Raw => return block,
        };
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }
}

pub(super) fn checksums(block: &[u8; BLOCK_SIZE]) -> (i64, i64) {
    let mut sums = (0, 0);
    for (i, &c) in block.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        sums.0 += i64::from(c);
        sums.1 += i64::from(c as i8);
    }
    sums
}

/// Base-256 encoding of `value` in `length` bytes.
pub(super) fn base256(length: usize, value: i64) -> Vec<u8> {
    let mut bytes = value.to_be_bytes().to_vec();
    let fill = if value < 0 { 0xff } else { 0x00 };
    while bytes.len() < length {
        bytes.insert(0, fill);
    }
    let mut bytes = bytes.split_off(bytes.len() - length);
    bytes[0] |= 0x80;
    bytes
}

/// One PAX record with its length computed like Go's `formatPAXRecord`.
pub(super) fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut length = body + body.to_string().len();
    if (body + length.to_string().len()) != length {
        length = body + length.to_string().len();
    }
    let mut out = format!("{length} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    assert_eq!(out.len(), length);
    out
}

pub(super) fn records(list: &[(&str, &str)]) -> Vec<u8> {
    list.iter()
        .flat_map(|(k, v)| record(k.as_bytes(), v.as_bytes()))
        .collect()
}

#[derive(Default)]
pub(super) struct Archive(pub(super) Vec<u8>);

impl Archive {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn header(mut self, header: HeaderBlock) -> Self {
        self.0.extend_from_slice(&header.bytes());
        self
    }

    /// Data padded to a block boundary.
    pub(super) fn data(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        let padding = padding_after(self.0.len() as u64) as usize;
        self.0.resize(self.0.len() + padding, 0);
        self
    }

    pub(super) fn raw(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        self
    }

    pub(super) fn zero(self) -> Self {
        self.raw(&[0; BLOCK_SIZE])
    }

    /// A meta entry (`'x'`, `'g'`, `'L'`, `'K'`) with `data`, in a USTAR or GNU block.
    pub(super) fn meta(self, block: HeaderBlock, typeflag: u8, data: &[u8]) -> Self {
        self.header(block.typeflag(typeflag).size(data.len() as u64))
            .data(data)
    }

    /// §15's "X(recs)".
    pub(super) fn x(self, list: &[(&str, &str)]) -> Self {
        self.meta(HeaderBlock::ustar(), b'x', &records(list))
    }

    pub(super) fn end(self) -> Vec<u8> {
        self.zero().zero().0
    }
}

pub(super) fn h(name: &str) -> HeaderBlock {
    HeaderBlock::ustar().name(name.as_bytes())
}

pub(super) type Outcome = (Vec<TarEntry>, Result<u64, TarError>);

pub(super) fn feed(bytes: &[u8], mut chunk_size: impl FnMut() -> usize) -> Outcome {
    let mut tar = TarStreamReader::new();
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_size().clamp(1, rest.len()));
        rest = tail;
        let pushed = tar.push(chunk, &mut |entry| {
            entries.push(entry);
            Ok(())
        });
        if let Err(error) = pushed {
            // Sticky: later pushes and finish report the same error.
            assert_eq!(tar.push(b"more", &mut |_| Ok(())), Err(error.clone()));
            assert_eq!(tar.finish(), Err(error.clone()));
            return (entries, Err(error));
        }
    }
    let end = tar.finish();
    assert_eq!(tar.finish(), end, "finish is sticky");
    if let Ok(end) = end {
        assert_eq!(tar.position(), end);
    }
    (entries, end)
}

pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(super) fn feed_random_chunks(bytes: &[u8], seed: u64) -> Outcome {
    let mut lcg = Lcg(seed);
    feed(bytes, || match lcg.below(4) {
        0 => 1 + lcg.below(3),
        1 => 1 + lcg.below(BLOCK_SIZE),
        2 => 500 + lcg.below(30),
        _ => 1 + lcg.below(5000),
    })
}

/// Reads `bytes` in one push, byte by byte and in random chunks; all must agree.
pub(super) fn run(bytes: &[u8]) -> Outcome {
    let whole = feed(bytes, || usize::MAX);
    assert_eq!(feed(bytes, || 1), whole, "byte-by-byte differs");
    for seed in 1..4 {
        assert_eq!(
            feed_random_chunks(bytes, seed),
            whole,
            "chunking {seed} differs"
        );
    }
    assert_eq!(read_stream(bytes), whole, "read_stream differs");
    whole
}

pub(super) fn only_entry(bytes: &[u8]) -> TarEntry {
    let (mut entries, end) = run(bytes);
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

pub(super) fn is_header_error(outcome: &Outcome) -> bool {
    matches!(outcome.1, Err(TarError::Header(_)))
}

pub(super) fn summary(entry: &TarEntry) -> (String, char, i64, u64, String, Format) {
    (
        String::from_utf8_lossy(&entry.name).into_owned(),
        entry.typeflag as char,
        entry.size,
        entry.data_offset,
        entry.mod_time_text(),
        entry.format,
    )
}

pub(super) fn s(text: &str) -> String {
    text.to_string()
}

pub(super) fn pax_map(list: &[(&str, &str)]) -> PaxRecords {
    list.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

pub(super) const EPOCH: &str = "1970-01-01T00:00:00Z";

pub(super) fn vector1() -> Archive {
    Archive::new()
        .header(h("a.txt").size(5))
        .data(b"hello")
        .zero()
}

pub(super) fn sparse_1_0_records() -> Vec<u8> {
    records(&[
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.realsize", "10"),
        ("GNU.sparse.name", "real"),
    ])
}

/// Old GNU sparse header: `fragments` (offset, length) pairs, realsize, stored data length.
pub(super) fn old_gnu_sparse(fragments: &[(i64, i64)], real_size: i64, stored: u64) -> Archive {
    let descriptor = |(offset, length): (i64, i64)| {
        let mut d = format!("{offset:011o}\0").into_bytes();
        d.extend_from_slice(format!("{length:011o}\0").as_bytes());
        d
    };
    let (in_header, rest) = fragments.split_at(fragments.len().min(4));
    let mut header = HeaderBlock::gnu()
        .name(b"sparse")
        .typeflag(b'S')
        .size(stored)
        .set(483, format!("{real_size:011o}\0").as_bytes());
    for (i, &fragment) in in_header.iter().enumerate() {
        header = header.set(386 + 24 * i, &descriptor(fragment));
    }
    let chunks: Vec<&[(i64, i64)]> = rest.chunks(21).collect();
    if !chunks.is_empty() {
        header = header.set(482, &[1]);
    }
    let mut archive = Archive::new().header(header);
    for (i, chunk) in chunks.iter().enumerate() {
        let mut block = [0u8; BLOCK_SIZE];
        for (j, &fragment) in chunk.iter().enumerate() {
            block[24 * j..24 * j + 24].copy_from_slice(&descriptor(fragment));
        }
        block[504] = u8::from(i + 1 < chunks.len());
        archive = archive.raw(&block);
    }
    archive
}

pub(super) fn sparse_1_0(map: &[u8], stored: u64) -> Archive {
    Archive::new()
        .meta(HeaderBlock::ustar(), b'x', &sparse_1_0_records())
        .header(h("x").size(stored))
        .raw(map)
}
