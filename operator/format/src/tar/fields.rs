//! Field parsing (strconv.go)

/// `parser.parseString`: the bytes before the first NUL.
pub(super) fn parse_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|&c| c == 0) {
        Some(nul) => &field[..nul],
        None => field,
    }
}

/// `parser.parseNumeric`: base-256 when the top bit is set, octal otherwise.
pub(super) fn parse_numeric(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return parse_octal(field);
    };
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    let invert = if first & 0x40 != 0 { 0xff } else { 0x00 };
    let mut value: u64 = 0;
    for (i, &byte) in field.iter().enumerate() {
        let mut byte = byte ^ invert;
        if i == 0 {
            byte &= 0x7f; // the marker bit is not part of the value
        }
        if value >> 56 != 0 {
            return None;
        }
        value = value << 8 | u64::from(byte);
    }
    let value = i64::try_from(value).ok()?;
    // Two's complement: the inverted magnitude V stands for -V-1.
    Some(if invert == 0xff { !value } else { value })
}

/// `parser.parseOctal`: trim spaces and NULs at both ends, empty is 0, cut at an interior NUL,
/// then strict octal digits.
pub(super) fn parse_octal(field: &[u8]) -> Option<i64> {
    let is_pad = |c: &u8| *c == b' ' || *c == 0;
    let start = field.iter().position(|c| !is_pad(c)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|c| !is_pad(c))
        .map_or(start, |i| i + 1);
    let trimmed = &field[start..end];
    if trimmed.is_empty() {
        return Some(0);
    }
    let digits = parse_string(trimmed);
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &c in digits {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    // Go converts with int64(x), wrapping; unreachable with fields of at most 12 digits.
    Some(value as i64)
}

/// Parses numeric fields, remembering the first failure like Go's `parser.err` so that the error
/// is reported after the whole block has been decoded.
#[derive(Default)]
pub(super) struct NumericFields {
    pub(super) first_error: Option<&'static str>,
}

impl NumericFields {
    pub(super) fn parse(&mut self, field: &[u8], what: &'static str) -> i64 {
        parse_numeric(field).unwrap_or_else(|| {
            self.first_error.get_or_insert(what);
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::test_support::*;

    #[test]
    fn numbers_base256() {
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        let mut minus_two = [0xff; 12];
        minus_two[11] = 0xfe;
        assert_eq!(parse_numeric(&minus_two), Some(-2));
        assert_eq!(
            parse_numeric(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Some(4_611_686_018_427_387_903)
        );
        assert_eq!(
            parse_numeric(&[0xc0, 0, 0, 0, 0, 0, 0, 0]),
            Some(-4_611_686_018_427_387_904)
        );
        let mut too_big = [0u8; 12];
        too_big[0] = 0x80;
        too_big[4] = 0x80;
        assert_eq!(parse_numeric(&too_big), None);
        let mut max = [0xffu8; 12];
        max[..4].copy_from_slice(&[0x80, 0, 0, 0]);
        max[4] = 0x7f;
        assert_eq!(parse_numeric(&max), Some(i64::MAX));
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]),
            Some(3_000_000)
        );
        assert_eq!(
            parse_numeric(&[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xed, 0x30, 0x08, 0x80
            ]),
            Some(-315_619_200)
        );
        assert_eq!(
            parse_numeric(&base256(12, 253_402_300_800)),
            Some(253_402_300_800)
        );
        assert_eq!(parse_numeric(&base256(8, -5)), Some(-5));
    }

    #[test]
    fn numbers_octal() {
        assert_eq!(parse_numeric(b"  644 \0\0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0 12 \0 "), Some(0o12));
        assert_eq!(parse_numeric(b"64\x004\0\0\0\0"), Some(0o64));
        assert_eq!(parse_numeric(b"64 4\0\0\0\0"), None);
        assert_eq!(parse_numeric(b"0000648\0"), None);
        assert_eq!(parse_numeric(b"+0000644"), None);
        assert_eq!(parse_numeric(b"777777777777"), Some(68_719_476_735));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"        "), Some(0));
        assert_eq!(parse_numeric(b""), Some(0));
        assert_eq!(parse_numeric(b"0_12\0"), None);
    }
}
