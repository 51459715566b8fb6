//! JSON exactly as Go's `encoding/json` (go1.26, without the jsonv2 experiment) writes and reads it.
//!
//! Writing ([`write_str`], [`ObjectWriter`], …) reproduces `json.Marshal` byte for byte: compact,
//! no trailing newline, Go's string escaping (`appendString` in `encode.go` with `escapeHTML`):
//! `\"` `\\` `\b` `\f` `\n` `\r` `\t`, every other byte below 0x20 as `\u00xx` (lowercase hex),
//! `<` `>` `&` as `\u003c` `\u003e` `\u0026`, U+2028/U+2029 as `\u2028`/`\u2029`, and each byte of
//! invalid UTF-8 as `\ufffd`. Map keys are written in byte order (the callers use `BTreeMap`),
//! `[]byte` as standard base64 with padding.
//!
//! Reading ([`parse`]) accepts exactly what Go's scanner accepts (RFC 8259 numbers, only
//! `\" \\ \/ \b \f \n \r \t \uXXXX` escapes, no raw control bytes in strings, nesting up to
//! 10000) and decodes strings the way Go's `unquote` does: each byte of invalid UTF-8 and each
//! unpaired surrogate escape becomes U+FFFD. Objects keep their keys in input order, duplicates
//! included, so that a decoder can apply Go's "last one wins / merge" rules. Field names are
//! matched like Go does with [`key_matches`] (exact, else case-insensitive by Go's `foldName`).

use std::collections::BTreeMap;
use std::fmt;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a Go JSON string (quotes included).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_bytes_as_string(out, s.as_bytes());
}

/// Appends `s` as a Go JSON string; bytes that are not valid UTF-8 become `\ufffd` one by one,
/// as Go does for a `string` holding arbitrary bytes.
pub fn write_bytes_as_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'<' | b'>' | b'&' | 0x00..=0x1f => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ]),
                _ => out.push(b),
            }
            i += 1;
            continue;
        }
        match decode_rune(&s[i..]) {
            (Some(c), n) => {
                if c == '\u{2028}' || c == '\u{2029}' {
                    out.extend_from_slice(if c == '\u{2028}' {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                } else {
                    out.extend_from_slice(&s[i..i + n]);
                }
                i += n;
            }
            (None, _) => {
                out.extend_from_slice(b"\\ufffd");
                i += 1;
            }
        }
    }
    out.push(b'"');
}

/// Go's `utf8.DecodeRune` on a non-empty slice: the rune and its width, or `(None, 1)` for a
/// byte that does not start a valid UTF-8 sequence (overlong forms, surrogates and values above
/// U+10FFFF are invalid, exactly as in Rust's UTF-8 validation).
pub fn decode_rune(s: &[u8]) -> (Option<char>, usize) {
    let b = s[0];
    let width = match b {
        0x00..=0x7f => return (Some(b as char), 1),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (None, 1),
    };
    if s.len() < width {
        return (None, 1);
    }
    match std::str::from_utf8(&s[..width]) {
        Ok(text) => (text.chars().next(), width),
        Err(_) => (None, 1),
    }
}

/// Go's conversion of arbitrary bytes to a well-formed string: each byte that does not start a
/// valid UTF-8 sequence becomes U+FFFD (unlike `String::from_utf8_lossy`, which replaces a
/// truncated sequence by a single U+FFFD).
pub fn go_lossy_utf8(s: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(s) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        match decode_rune(&s[i..]) {
            (Some(c), n) => {
                out.push(c);
                i += n;
            }
            (None, _) => {
                out.push('\u{fffd}');
                i += 1;
            }
        }
    }
    out
}

/// Appends a Go `int64` (plain decimal).
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

/// Appends a `map[string]string` (keys in byte order, as Go sorts them).
pub fn write_string_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_str(out, v);
    }
    out.push(b'}');
}

/// Appends a `[]string` (non-nil).
pub fn write_string_array(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// Appends a `[]byte` (non-nil) as Go does: a string of standard, padded base64.
pub fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(base64_encode(data).as_bytes());
    out.push(b'"');
}

/// Writes the members of one JSON object in the order they are added.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Writes `"name":` (with the separating comma when needed) and returns the buffer for the value.
    pub fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(b':');
        self.out
    }

    pub fn finish(self) {
        self.out.push(b'}');
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding (`base64.StdEncoding.EncodeToString`).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(BASE64[(n >> 18) as usize & 63] as char);
        out.push(BASE64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            BASE64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            BASE64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// `base64.StdEncoding.Decode` as `encoding/json` uses it for `[]byte`: `\r` and `\n` are
/// ignored anywhere, padding is required, non-zero trailing bits are accepted (not strict mode).
pub fn base64_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let symbols: Vec<u8> = text
        .iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect();
    if !symbols.len().is_multiple_of(4) {
        return Err("illegal base64 data: length is not a multiple of 4".into());
    }
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(symbols.len() / 4 * 3);
    let quads = symbols.len() / 4;
    for (q, quad) in symbols.chunks(4).enumerate() {
        let last = q + 1 == quads;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(format!("illegal base64 data at input byte {}", q * 4));
        }
        let mut n = 0u32;
        for (i, &c) in quad.iter().enumerate() {
            let v = if i >= 4 - pad {
                0
            } else {
                value(c)
                    .ok_or_else(|| format!("illegal base64 data at input byte {}", q * 4 + i))?
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// A parsed JSON value. Numbers keep their literal text (Go converts them per target type).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in input order, duplicate keys included.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The JSON type name Go uses in `UnmarshalTypeError` messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the input.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Go's `maxNestingDepth` (every `[` and `{` counts, empty ones included).
const MAX_NESTING_DEPTH: usize = 10000;

/// Most values (scalars, arrays and objects) one document may hold. Go decodes into structs and
/// skips what it does not need; this parser builds the whole tree first, where a value costs
/// 32 bytes and more for 2 bytes of input (`[0,0,…]`). Real manifests, indexes and configs hold
/// far fewer (a 4 MiB manifest of descriptors about 120,000).
pub const MAX_VALUES: usize = 1 << 19;

/// Parses one JSON document (surrounding whitespace allowed, nothing else) with Go's rules.
pub fn parse(input: &[u8]) -> Result<Value, JsonError> {
    Parser {
        s: input,
        pos: 0,
        values: 0,
    }
    .document()
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Values started so far.
    values: usize,
}

enum Frame {
    Array(Vec<Value>),
    Object(Vec<(String, Value)>, String),
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, JsonError> {
        Err(JsonError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn unexpected<T>(&self, context: &str) -> Result<T, JsonError> {
        match self.peek() {
            None => self.err("unexpected end of JSON input"),
            Some(c) => self.err(format!("invalid character {:?} {context}", c as char)),
        }
    }

    /// Iterative, so that deep nesting cannot overflow the stack.
    fn document(mut self) -> Result<Value, JsonError> {
        let mut stack: Vec<Frame> = Vec::new();
        'value: loop {
            self.skip_ws();
            self.values += 1;
            if self.values > MAX_VALUES {
                return self.err(format!("more than {MAX_VALUES} values in one document"));
            }
            let mut value = match self.peek() {
                Some(b'{') => {
                    if stack.len() >= MAX_NESTING_DEPTH {
                        return self.err("exceeded max depth");
                    }
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        Value::Object(Vec::new())
                    } else {
                        let key = self.object_key()?;
                        stack.push(Frame::Object(Vec::new(), key));
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    if stack.len() >= MAX_NESTING_DEPTH {
                        return self.err("exceeded max depth");
                    }
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        Value::Array(Vec::new())
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        continue 'value;
                    }
                }
                Some(b'"') => Value::String(self.string()?),
                Some(b't') => self.literal(b"true", Value::Bool(true))?,
                Some(b'f') => self.literal(b"false", Value::Bool(false))?,
                Some(b'n') => self.literal(b"null", Value::Null)?,
                Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
                _ => return self.unexpected("looking for beginning of value"),
            };
            // Attach the finished value to its parent, closing every container that ends here.
            loop {
                match stack.last_mut() {
                    None => {
                        self.skip_ws();
                        if self.pos != self.s.len() {
                            return self.unexpected("after top-level value");
                        }
                        return Ok(value);
                    }
                    Some(Frame::Array(items)) => {
                        items.push(value);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                continue 'value;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                let Some(Frame::Array(items)) = stack.pop() else {
                                    unreachable!()
                                };
                                value = Value::Array(items);
                            }
                            _ => return self.unexpected("after array element"),
                        }
                    }
                    Some(Frame::Object(members, key)) => {
                        members.push((std::mem::take(key), value));
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.skip_ws();
                                let next = self.object_key()?;
                                if let Some(Frame::Object(_, key)) = stack.last_mut() {
                                    *key = next;
                                }
                                continue 'value;
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                let Some(Frame::Object(members, _)) = stack.pop() else {
                                    unreachable!()
                                };
                                value = Value::Object(members);
                            }
                            _ => return self.unexpected("after object key:value pair"),
                        }
                    }
                }
            }
        }
    }

    /// `"key"` then `:`; the caller has skipped whitespace before it.
    fn object_key(&mut self) -> Result<String, JsonError> {
        if self.peek() != Some(b'"') {
            return self.unexpected("looking for beginning of object key string");
        }
        let key = self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return self.unexpected("after object key");
        }
        self.pos += 1;
        Ok(key)
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        for &expected in word {
            if self.peek() != Some(expected) {
                return self.unexpected("in literal");
            }
            self.pos += 1;
        }
        Ok(value)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<String, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.unexpected("in numeric literal"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.unexpected("after decimal point in numeric literal");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.unexpected("in exponent of numeric literal");
            }
        }
        Ok(String::from_utf8(self.s[start..self.pos].to_vec()).expect("ASCII"))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let text = std::str::from_utf8(h).ok()?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    }

    fn string(&mut self) -> Result<String, JsonError> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("unexpected end of JSON input");
            };
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(String::from_utf8(out).expect("built from valid UTF-8"));
                }
                0x00..=0x1f => {
                    return self.err(format!(
                        "invalid character {:?} in string literal",
                        c as char
                    ));
                }
                b'\\' => {
                    let Some(e) = self.s.get(self.pos + 1).copied() else {
                        self.pos += 1;
                        return self.err("unexpected end of JSON input");
                    };
                    let simple = match e {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(0x08),
                        b'f' => Some(0x0c),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => {
                            self.pos += 1;
                            return self.err(format!(
                                "invalid character {:?} in string escape code",
                                e as char
                            ));
                        }
                    };
                    if let Some(b) = simple {
                        out.push(b);
                        self.pos += 2;
                        continue;
                    }
                    let Some(r) = self.hex4(self.pos + 2) else {
                        self.pos += 2;
                        return self.err("invalid character in \\u hexadecimal character escape");
                    };
                    self.pos += 6;
                    let mut ch = char::from_u32(r);
                    if (0xd800..0xe000).contains(&r) {
                        // Go: a valid pair is consumed whole; otherwise U+FFFD for this escape only.
                        ch = None;
                        if (0xd800..0xdc00).contains(&r)
                            && self.s.get(self.pos) == Some(&b'\\')
                            && self.s.get(self.pos + 1) == Some(&b'u')
                            && let Some(r2) = self.hex4(self.pos + 2)
                            && (0xdc00..0xe000).contains(&r2)
                        {
                            ch = char::from_u32(0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00));
                            self.pos += 6;
                        }
                    }
                    let ch = ch.unwrap_or('\u{fffd}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0x20..=0x7f => {
                    out.push(c);
                    self.pos += 1;
                }
                _ => match decode_rune(&self.s[self.pos..]) {
                    (Some(_), n) => {
                        out.extend_from_slice(&self.s[self.pos..self.pos + n]);
                        self.pos += n;
                    }
                    (None, _) => {
                        out.extend_from_slice("\u{fffd}".as_bytes());
                        self.pos += 1;
                    }
                },
            }
        }
    }
}

/// Go's `foldName`: ASCII letters upper-cased, other runes mapped to the smallest rune of their
/// simple case-folding orbit. Only two non-ASCII runes fold onto ASCII letters (U+017F `ſ` → `S`,
/// U+212A Kelvin sign → `K`), and struct field names here are ASCII, so other runes are kept
/// as they are (they can never match an ASCII field name either way).
pub fn fold_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            '\u{017f}' => 'S',
            '\u{212a}' => 'K',
            _ => c,
        })
        .collect()
}

/// Whether a JSON object key selects the struct field `field` (Go: exact name first, else
/// case-insensitive). Valid as a per-field test when no two fields of the struct fold alike,
/// which holds for every struct in this crate.
pub fn key_matches(key: &str, field: &str) -> bool {
    key == field || (key.len() >= field.len() && fold_name(key) == fold_name(field))
}

/// Go's `strconv.ParseInt(s, 10, 64)` on a JSON number literal (so `1.0`, `1e3` and overflow
/// are errors).
pub fn parse_i64(literal: &str) -> Option<i64> {
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    literal.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn string_escaping_matches_go() {
        // Expected values produced by go1.26 json.Marshal.
        assert_eq!(s("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(s("q\"b\\s/"), r#""q\"b\\s/""#);
        assert_eq!(s("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(
            s("\u{0}\u{1}\u{1f}\u{7f}"),
            "\"\\u0000\\u0001\\u001f\u{7f}\""
        );
        assert_eq!(s("\u{2028}x\u{2029}"), r#""\u2028x\u2029""#);
        assert_eq!(s("é€😀"), "\"é€😀\"");
        let mut out = Vec::new();
        write_bytes_as_string(&mut out, b"a\xffb\xe2\x82c\xed\xa0\x80");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\ufffdb\ufffd\ufffdc\ufffd\ufffd\ufffd""#
        );
    }

    #[test]
    fn base64_round_trip() {
        for (raw, enc) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(raw), enc);
            assert_eq!(base64_decode(enc.as_bytes()).unwrap(), raw);
        }
        assert_eq!(base64_decode(b"Zm\r\n9v").unwrap(), b"foo");
        assert_eq!(base64_decode(b"Zh==").unwrap(), b"f"); // non-zero trailing bits accepted
        assert!(base64_decode(b"Zg").is_err());
        assert!(base64_decode(b"Zg==Zg==").is_err());
        assert!(base64_decode(b"Z===").is_err());
    }

    #[test]
    fn parser_accepts_and_rejects_like_go() {
        let v = parse(br#" {"a":[1,-0.5e+3,true,false,null,"x"],"a":{}} "#).unwrap();
        let Value::Object(members) = v else { panic!() };
        assert_eq!(members.len(), 2);
        assert_eq!(
            members[0].1,
            Value::Array(vec![
                Value::Number("1".into()),
                Value::Number("-0.5e+3".into()),
                Value::Bool(true),
                Value::Bool(false),
                Value::Null,
                Value::String("x".into())
            ])
        );
        for bad in [
            &b""[..],
            b"{",
            b"[1,]",
            b"{\"a\":1,}",
            b"01",
            b"1.",
            b"-",
            b"1e",
            b"\"\\x\"",
            b"\"a\nb\"",
            b"{} {}",
            b"nul",
            b"'a'",
            b"{a:1}",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(
            parse(
                &[b'['; 10000]
                    .iter()
                    .chain([b']'; 10000].iter())
                    .copied()
                    .collect::<Vec<_>>()
            )
            .is_ok()
        );
        assert!(
            parse(
                &[b'['; 10001]
                    .iter()
                    .chain([b']'; 10001].iter())
                    .copied()
                    .collect::<Vec<_>>()
            )
            .is_err()
        );
    }

    /// Two bytes of input per value would build a tree 30 times the document's size.
    #[test]
    fn a_document_with_too_many_values_is_refused() {
        let array = |n: usize| {
            let mut doc = b"[".to_vec();
            doc.extend(std::iter::repeat_n(&b"0,"[..], n - 1).flatten());
            doc.extend_from_slice(b"0]");
            doc
        };
        // The array itself is a value too.
        assert!(parse(&array(MAX_VALUES - 1)).is_ok());
        let e = parse(&array(MAX_VALUES)).unwrap_err();
        assert!(e.message.contains("more than 524288 values"), "{e}");
        let objects = [&b"["[..], &b"{},".repeat(MAX_VALUES), b"{}]"].concat();
        assert!(parse(&objects).is_err());
    }

    #[test]
    fn string_decoding_matches_go_unquote() {
        let text = |json: &[u8]| match parse(json).unwrap() {
            Value::String(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(br#""\u0041\/\ud83d\ude00""#), "A/😀");
        assert_eq!(text(br#""\ud800x""#), "\u{fffd}x");
        assert_eq!(text(br#""\ud800\u0041""#), "\u{fffd}A");
        assert_eq!(text(br#""\udc00\ud800\udc00""#), "\u{fffd}\u{10000}");
        assert_eq!(text(b"\"a\xe2\x82b\xff\""), "a\u{fffd}\u{fffd}b\u{fffd}");
        assert_eq!(go_lossy_utf8(b"a\xe2\x82b"), "a\u{fffd}\u{fffd}b");
    }

    #[test]
    fn field_name_folding() {
        assert!(key_matches("mediaType", "mediaType"));
        assert!(key_matches("MEDIATYPE", "mediaType"));
        assert!(key_matches("\u{17f}ize", "size"));
        assert!(!key_matches("sizes", "size"));
        assert!(!key_matches("media_type", "mediaType"));
        assert_eq!(parse_i64("-12"), Some(-12));
        assert_eq!(parse_i64("1.0"), None);
        assert_eq!(parse_i64("1e3"), None);
        assert_eq!(parse_i64("9223372036854775808"), None);
    }
}
