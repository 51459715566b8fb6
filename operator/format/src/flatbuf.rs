//! A flatbuffer builder with the exact semantics of the Go `flatbuffers` builder (v25.12.19) that
//! upstream serialises zTOCs with: same alignment and padding, trailing-zero vtable trimming,
//! vtable de-duplication comparing field offsets only (not object sizes), no string sharing.
//!
//! One addition: a byte vector can be placed as a *hole* — its length takes part in the layout,
//! but its content stays in the caller's buffer and is spliced in at output time. That keeps the
//! (large) checkpoint blob from being copied, so a zTOC costs its size in memory once.

pub type UOffset = u32;

const SIZE_UOFFSET: usize = 4;
const VTABLE_METADATA_FIELDS: usize = 2;

pub struct GoFlatBuilder {
    /// Bytes grow toward the front: `buf[head..]` is what has been written, minus the hole.
    buf: Vec<u8>,
    head: usize,
    minalign: usize,
    vtable: Vec<UOffset>,
    object_end: UOffset,
    vtables: Vec<UOffset>,
    nested: bool,
    /// (virtual offset at which the hole starts, hole length)
    hole: Option<(UOffset, usize)>,
}

/// The finished bytes: `head`, then the hole's bytes (owned by the caller), then `tail`.
pub struct FinishedParts {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Default for GoFlatBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GoFlatBuilder {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            minalign: 1,
            vtable: Vec::new(),
            object_end: 0,
            vtables: Vec::new(),
            nested: false,
            hole: None,
        }
    }

    fn hole_len(&self) -> usize {
        self.hole.map_or(0, |(_, len)| len)
    }

    /// Bytes written so far, the hole included (Go's `Offset()`).
    pub fn offset(&self) -> UOffset {
        (self.buf.len() - self.head + self.hole_len()) as UOffset
    }

    fn grow(&mut self, needed: usize) {
        if self.head >= needed {
            return;
        }
        let used = self.buf.len() - self.head;
        let mut new_len = self.buf.len().max(64);
        while new_len - used < needed {
            new_len *= 2;
        }
        let mut fresh = vec![0u8; new_len];
        fresh[new_len - used..].copy_from_slice(&self.buf[self.head..]);
        self.head = new_len - used;
        self.buf = fresh;
    }

    fn pad(&mut self, n: usize) {
        self.grow(n);
        for _ in 0..n {
            self.head -= 1;
            self.buf[self.head] = 0;
        }
    }

    /// Go `Prep`: align so that after `additional` bytes the offset is a multiple of `size`.
    fn prep(&mut self, size: usize, additional: usize) {
        if size > self.minalign {
            self.minalign = size;
        }
        let align = (!(self.offset() as usize + additional)).wrapping_add(1) & (size - 1);
        self.grow(align + size + additional);
        self.pad(align);
    }

    fn place(&mut self, bytes: &[u8]) {
        self.grow(bytes.len());
        self.head -= bytes.len();
        self.buf[self.head..self.head + bytes.len()].copy_from_slice(bytes);
    }

    fn prepend_scalar(&mut self, bytes: &[u8]) {
        self.prep(bytes.len(), 0);
        self.place(bytes);
    }

    pub fn prepend_uoffset(&mut self, off: UOffset) {
        self.prep(SIZE_UOFFSET, 0);
        let rel = self.offset() - off + SIZE_UOFFSET as UOffset;
        self.place(&rel.to_le_bytes());
    }

    pub fn create_string(&mut self, s: &[u8]) -> UOffset {
        self.prep(SIZE_UOFFSET, s.len() + 1);
        self.place(&[0]);
        self.place(s);
        self.end_vector(s.len())
    }

    pub fn create_byte_vector(&mut self, v: &[u8]) -> UOffset {
        self.prep(SIZE_UOFFSET, v.len());
        self.place(v);
        self.end_vector(v.len())
    }

    /// Like `create_byte_vector`, but the bytes are supplied at output time. At most one hole.
    pub fn create_byte_vector_hole(&mut self, len: usize) -> UOffset {
        assert!(self.hole.is_none(), "one hole per buffer");
        self.prep(SIZE_UOFFSET, len);
        self.hole = Some((self.offset(), len));
        self.end_vector(len)
    }

    pub fn start_vector(&mut self, elem_size: usize, num_elems: usize, alignment: usize) {
        self.nested = true;
        self.prep(SIZE_UOFFSET, elem_size * num_elems);
        self.prep(alignment, elem_size * num_elems);
    }

    /// A vector of offsets (tables or strings), elements in the given order.
    pub fn create_offset_vector(&mut self, offsets: &[UOffset]) -> UOffset {
        self.start_vector(SIZE_UOFFSET, offsets.len(), SIZE_UOFFSET);
        for &off in offsets.iter().rev() {
            self.prepend_uoffset(off);
        }
        self.end_vector(offsets.len())
    }

    pub fn end_vector(&mut self, num_elems: usize) -> UOffset {
        // Space was reserved by prep: place without another alignment step, as Go does.
        self.place(&(num_elems as u32).to_le_bytes());
        self.nested = false;
        self.offset()
    }

    pub fn start_object(&mut self, num_fields: usize) {
        debug_assert!(!self.nested);
        self.nested = true;
        self.vtable.clear();
        self.vtable.resize(num_fields, 0);
        self.object_end = self.offset();
    }

    fn slot(&mut self, slot: usize) {
        self.vtable[slot] = self.offset();
    }

    pub fn add_i64(&mut self, slot: usize, x: i64, default: i64) {
        if x != default {
            self.prepend_scalar(&x.to_le_bytes());
            self.slot(slot);
        }
    }

    pub fn add_i32(&mut self, slot: usize, x: i32, default: i32) {
        if x != default {
            self.prepend_scalar(&x.to_le_bytes());
            self.slot(slot);
        }
    }

    pub fn add_u32(&mut self, slot: usize, x: u32, default: u32) {
        if x != default {
            self.prepend_scalar(&x.to_le_bytes());
            self.slot(slot);
        }
    }

    pub fn add_i8(&mut self, slot: usize, x: i8, default: i8) {
        if x != default {
            self.prepend_scalar(&x.to_le_bytes());
            self.slot(slot);
        }
    }

    pub fn add_offset(&mut self, slot: usize, off: UOffset) {
        if off != 0 {
            self.prepend_uoffset(off);
            self.slot(slot);
        }
    }

    /// Translates a virtual offset (hole included) to an index into `buf`.
    fn index_of(&self, virtual_offset: UOffset) -> usize {
        let real = match self.hole {
            Some((at, len)) if virtual_offset > at => virtual_offset as usize - len,
            _ => virtual_offset as usize,
        };
        self.buf.len() - real
    }

    fn read_u16(&self, index: usize) -> u16 {
        u16::from_le_bytes([self.buf[index], self.buf[index + 1]])
    }

    /// Go `EndObject` / `WriteVtable`.
    pub fn end_object(&mut self) -> UOffset {
        self.prepend_scalar(&0i32.to_le_bytes());
        let object_offset = self.offset();

        while self.vtable.last() == Some(&0) {
            self.vtable.pop();
        }

        let mut existing = None;
        for &vt2_offset in self.vtables.iter().rev() {
            let start = self.index_of(vt2_offset);
            let vt2_len = self.read_u16(start) as usize;
            let fields = (vt2_len / 2).saturating_sub(VTABLE_METADATA_FIELDS);
            if fields != self.vtable.len() {
                continue;
            }
            let equal = self.vtable.iter().enumerate().all(|(i, &field)| {
                let x = self.read_u16(start + 4 + 2 * i);
                if x == 0 && field == 0 {
                    return true;
                }
                i64::from(x) == i64::from(object_offset) - i64::from(field)
            });
            if equal {
                existing = Some(vt2_offset);
                break;
            }
        }

        match existing {
            None => {
                let fields = std::mem::take(&mut self.vtable);
                for &field in fields.iter().rev() {
                    let off = if field != 0 { object_offset - field } else { 0 };
                    self.prepend_scalar(&(off as u16).to_le_bytes());
                }
                let object_size = object_offset - self.object_end;
                self.prepend_scalar(&(object_size as u16).to_le_bytes());
                let vbytes = (fields.len() + VTABLE_METADATA_FIELDS) * 2;
                self.prepend_scalar(&(vbytes as u16).to_le_bytes());
                let object_index = self.index_of(object_offset);
                let rel = self.offset() as i32 - object_offset as i32;
                self.buf[object_index..object_index + 4].copy_from_slice(&rel.to_le_bytes());
                self.vtables.push(self.offset());
                self.vtable = fields;
            }
            Some(vt2_offset) => {
                // Drop the vtable space: Go rewinds head to the object start.
                let object_index = self.index_of(object_offset);
                self.head = object_index;
                let rel = vt2_offset as i32 - object_offset as i32;
                self.buf[object_index..object_index + 4].copy_from_slice(&rel.to_le_bytes());
            }
        }
        self.vtable.clear();
        self.nested = false;
        object_offset
    }

    /// Go `Finish` (no file identifier, no size prefix).
    pub fn finish(mut self, root: UOffset) -> FinishedParts {
        self.prep(self.minalign, SIZE_UOFFSET);
        self.prepend_uoffset(root);
        let written = &self.buf[self.head..];
        match self.hole {
            None => FinishedParts {
                head: written.to_vec(),
                tail: Vec::new(),
            },
            Some((at, len)) => {
                // The `at` bytes written before the hole lie after it in memory.
                let _ = len;
                let split = written.len() - at as usize;
                FinishedParts {
                    head: written[..split].to_vec(),
                    tail: written[split..].to_vec(),
                }
            }
        }
    }
}
