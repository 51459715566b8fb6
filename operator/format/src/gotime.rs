//! Go time semantics for tar mod times: `time.Unix`, `Time.MarshalText` and `archive/tar`'s
//! `parsePAXTime` (spec §12 of `go-tar-semantics.md`).
//!
//! Zone policy: **`Local` is UTC.** Go's `Reader.Next()` returns times in the `Local` zone and
//! `MarshalText` renders them with that zone's offset, so the text depends on the machine. We only
//! reproduce UTC (every time ends in `Z`); the upstream oracle is run with `TZ=UTC`, which is also
//! what containers and CI use in practice.

/// Seconds from 0000-01-01T00:00:00Z to the Unix epoch (proleptic Gregorian, year 0 exists).
const UNIX_SECS_AT_YEAR_0: i64 = 62_167_219_200;
/// Unix seconds of the first instant that no longer has a 4-digit year (10000-01-01T00:00:00Z).
const UNIX_SECS_AT_YEAR_10000: i64 = 253_402_300_800;
/// Unix seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z).
const UNIX_SECS_AT_GO_ZERO: i64 = -62_135_596_800;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// An instant as Go's `time.Time` holds it: seconds since the Unix epoch plus nanoseconds in
/// `[0, 1e9)`. The zone is always UTC (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoTime {
    pub sec: i64,
    pub nsec: u32,
}

impl GoTime {
    /// Go's zero `time.Time{}` (what `archive/tar` reports as the mod time of a `'g'` entry).
    /// It is the same instant as `time.Unix(-62135596800, 0)`, so it marshals identically.
    pub const ZERO: GoTime = GoTime {
        sec: UNIX_SECS_AT_GO_ZERO,
        nsec: 0,
    };

    /// Go's `time.Unix(sec, nsec)`: brings `nsec` into `[0, 1e9)` by moving whole seconds into
    /// `sec`. Overflow wraps, as in Go.
    pub fn unix(sec: i64, nsec: i64) -> GoTime {
        let (mut sec, mut nsec) = (sec, nsec);
        if !(0..NANOS_PER_SEC).contains(&nsec) {
            let carry = nsec / NANOS_PER_SEC; // truncating, like Go
            sec = sec.wrapping_add(carry);
            nsec -= carry * NANOS_PER_SEC;
            if nsec < 0 {
                nsec += NANOS_PER_SEC;
                sec = sec.wrapping_sub(1);
            }
        }
        // `nsec` is in [0, 1e9) here, so the conversion cannot fail.
        GoTime {
            sec,
            nsec: u32::try_from(nsec).unwrap_or(0),
        }
    }

    /// Whether this is Go's zero time (`Time.IsZero`).
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// Go's `Time.MarshalText` in UTC: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with the fraction's
    /// trailing zeros removed. `None` when the year is outside `[0, 9999]`, where Go returns an
    /// error (and the upstream TOC marshaller then stores an empty string).
    pub fn marshal_text(&self) -> Option<String> {
        // Checking the range first also keeps the calendar arithmetic far from overflow.
        if !(-UNIX_SECS_AT_YEAR_0..UNIX_SECS_AT_YEAR_10000).contains(&self.sec) {
            return None;
        }
        let days = self.sec.div_euclid(SECS_PER_DAY);
        let secs_of_day = self.sec.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let mut text = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        );
        if self.nsec != 0 {
            let fraction = format!("{:09}", self.nsec);
            text.push('.');
            text.push_str(fraction.trim_end_matches('0'));
        }
        text.push('Z');
        Some(text)
    }
}

/// The proleptic Gregorian date of a day count relative to 1970-01-01 (H. Hinnant's
/// `civil_from_days`). Valid for any `days` whose year fits comfortably in `i64`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // month is in 1..=12 and day in 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// Go's `strconv.ParseInt(s, 10, 64)`: an optional `+` or `-`, then one or more ASCII digits
/// (leading zeros allowed, no spaces or underscores), within the `i64` range.
pub(crate) fn parse_go_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'+', rest)) => (false, rest),
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(c - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `archive/tar`'s `parsePAXTime` (spec §12.3): `secs[.fraction]`, the fraction truncated to
/// nanoseconds, and a leading `-` on the seconds applying to the fraction too.
#[expect(
    clippy::result_unit_err,
    reason = "the only failure is Go's ErrHeader, which the tar reader reports with context"
)]
pub fn parse_pax_time(s: &[u8]) -> Result<GoTime, ()> {
    let (secs_text, fraction) = match s.iter().position(|&c| c == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &[][..]),
    };
    let secs = parse_go_int(secs_text).ok_or(())?;
    if fraction.is_empty() {
        return Ok(GoTime::unix(secs, 0));
    }
    if !fraction.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    // Right-pad to 9 digits, ignore the rest: truncation, not rounding.
    let nsec = (0..9).fold(0i64, |acc, i| {
        acc * 10 + fraction.get(i).map_or(0, |&c| i64::from(c - b'0'))
    });
    if secs_text.first() == Some(&b'-') {
        Ok(GoTime::unix(secs, -nsec))
    } else {
        Ok(GoTime::unix(secs, nsec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sec: i64, nsec: i64) -> Option<String> {
        GoTime::unix(sec, nsec).marshal_text()
    }

    fn pax_text(s: &str) -> Option<String> {
        parse_pax_time(s.as_bytes())
            .expect("valid PAX time")
            .marshal_text()
    }

    #[test]
    fn unix_normalises_nanoseconds() {
        assert_eq!(
            GoTime::unix(1, 1_500_000_000),
            GoTime {
                sec: 2,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            GoTime::unix(1, -1),
            GoTime {
                sec: 0,
                nsec: 999_999_999
            }
        );
        assert_eq!(
            GoTime::unix(0, -1_500_000_000),
            GoTime {
                sec: -2,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            GoTime::unix(-1, -1_000_000_000),
            GoTime { sec: -2, nsec: 0 }
        );
        assert_eq!(
            GoTime::unix(5, 999_999_999),
            GoTime {
                sec: 5,
                nsec: 999_999_999
            }
        );
        // Go wraps on overflow instead of panicking.
        assert_eq!(
            GoTime::unix(i64::MIN, -1),
            GoTime {
                sec: i64::MAX,
                nsec: 999_999_999
            }
        );
        assert_eq!(
            GoTime::unix(i64::MAX, NANOS_PER_SEC),
            GoTime {
                sec: i64::MIN,
                nsec: 0
            }
        );
    }

    #[test]
    fn marshal_text_examples() {
        assert_eq!(text(0, 0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            text(1, 500_000_000).as_deref(),
            Some("1970-01-01T00:00:01.5Z")
        );
        assert_eq!(
            text(1, 100).as_deref(),
            Some("1970-01-01T00:00:01.0000001Z")
        );
        assert_eq!(
            text(1, 120_000_000).as_deref(),
            Some("1970-01-01T00:00:01.12Z")
        );
        assert_eq!(text(-1, 0).as_deref(), Some("1969-12-31T23:59:59Z"));
        assert_eq!(
            GoTime::ZERO.marshal_text().as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        assert!(GoTime::ZERO.is_zero());
        assert!(!GoTime::unix(0, 0).is_zero());
    }

    #[test]
    fn marshal_text_range_limits() {
        assert_eq!(
            text(253_402_300_799, 999_999_999).as_deref(),
            Some("9999-12-31T23:59:59.999999999Z")
        );
        assert_eq!(text(253_402_300_800, 0), None);
        assert_eq!(
            text(-62_167_219_200, 0).as_deref(),
            Some("0000-01-01T00:00:00Z")
        );
        assert_eq!(text(-62_167_219_201, 999_999_999), None);
        assert_eq!(text(i64::MAX, 999_999_999), None);
        assert_eq!(text(i64::MIN, 0), None);
        // Reachability examples of §12.4.
        assert_eq!(
            text(8_589_934_591, 0).as_deref(),
            Some("2242-03-16T12:56:31Z")
        );
        assert_eq!(
            text(68_719_476_735, 0).as_deref(),
            Some("4147-08-20T07:32:15Z")
        );
        assert_eq!(
            text(-315_619_200, 0).as_deref(),
            Some("1960-01-01T00:00:00Z")
        );
        // Leap day in year 0 (divisible by 400) and a non-leap century.
        assert_eq!(
            text(-62_162_121_600, 0).as_deref(),
            Some("0000-02-29T00:00:00Z")
        );
        assert_eq!(
            text(-2_203_891_200, 0).as_deref(),
            Some("1900-03-01T00:00:00Z")
        );
    }

    #[test]
    fn parse_pax_time_accepts() {
        assert_eq!(pax_text("1.").as_deref(), Some("1970-01-01T00:00:01Z"));
        assert_eq!(pax_text("+0.5").as_deref(), Some("1970-01-01T00:00:00.5Z"));
        assert_eq!(pax_text("-0.5").as_deref(), Some("1969-12-31T23:59:59.5Z"));
        assert_eq!(
            pax_text("-0.000000001").as_deref(),
            Some("1969-12-31T23:59:59.999999999Z")
        );
        assert_eq!(pax_text("-1.5").as_deref(), Some("1969-12-31T23:59:58.5Z"));
        assert_eq!(
            pax_text("1.9999999999").as_deref(),
            Some("1970-01-01T00:00:01.999999999Z")
        );
        assert_eq!(
            parse_pax_time(b"1.0000000000000000000000001"),
            Ok(GoTime { sec: 1, nsec: 0 })
        );
        assert_eq!(
            parse_pax_time(b"00001.5"),
            Ok(GoTime {
                sec: 1,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            pax_text("1.1234567891").as_deref(),
            Some("1970-01-01T00:00:01.123456789Z")
        );
        // GNU tar's and libarchive's spellings of pre-1970 fractional times (§12.3).
        assert_eq!(
            pax_text("-315619199.75").as_deref(),
            Some("1960-01-01T00:00:00.25Z")
        );
        assert_eq!(
            pax_text("-315619200.25").as_deref(),
            Some("1959-12-31T23:59:59.75Z")
        );
        assert_eq!(
            parse_pax_time(b"-9223372036854775808"),
            Ok(GoTime {
                sec: i64::MIN,
                nsec: 0
            })
        );
        // The negative correction wraps like Go instead of panicking.
        assert_eq!(
            parse_pax_time(b"-9223372036854775808.5"),
            Ok(GoTime {
                sec: i64::MAX,
                nsec: 500_000_000
            })
        );
    }

    #[test]
    fn parse_pax_time_rejects() {
        for bad in [
            "",
            ".5",
            "-.5",
            "1..5",
            "1.5.",
            "1.-5",
            "1.+5",
            " 1",
            "1 ",
            "1_0",
            "0x10",
            "１",
            "9223372036854775808",
            "-9223372036854775809",
            "1.5e3",
            "+",
            "-",
            "++1",
            "abc",
        ] {
            assert_eq!(parse_pax_time(bad.as_bytes()), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn parse_go_int_follows_strconv() {
        let cases: [(&str, Option<i64>); 13] = [
            ("0012", Some(12)),
            ("+11", Some(11)),
            ("-5", Some(-5)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("", None),
            ("+", None),
            ("-", None),
            (" 1", None),
            ("1 ", None),
            ("1_000", None),
            ("+-1", None),
            ("18446744073709551616", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_int(input.as_bytes()), want, "{input:?}");
        }
    }

    /// An independent, deliberately naive calendar: walk whole years, then whole months.
    fn naive_civil(sec: i64) -> (i64, u32, u32, i64) {
        fn is_leap(y: i64) -> bool {
            (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
        }
        let mut days = (sec + UNIX_SECS_AT_YEAR_0).div_euclid(SECS_PER_DAY);
        let secs_of_day = (sec + UNIX_SECS_AT_YEAR_0).rem_euclid(SECS_PER_DAY);
        let mut year = 0;
        loop {
            let len = if is_leap(year) { 366 } else { 365 };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let month_lengths = [
            31,
            if is_leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while days >= month_lengths[month] {
            days -= month_lengths[month];
            month += 1;
        }
        (year, month as u32 + 1, days as u32 + 1, secs_of_day)
    }

    #[test]
    fn marshal_text_matches_naive_calendar() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let span = (UNIX_SECS_AT_YEAR_10000 + UNIX_SECS_AT_YEAR_0) as u64;
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let sec = (state >> 11) as i64 % span as i64 - UNIX_SECS_AT_YEAR_0;
            let nsec = ((state >> 3) % 3) as u32 * 250_000_000;
            let (y, mo, d, s) = naive_civil(sec);
            let mut expected = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            match nsec {
                0 => {}
                500_000_000 => expected.push_str(".5"),
                _ => expected.push_str(".25"),
            }
            expected.push('Z');
            let got = GoTime { sec, nsec }.marshal_text();
            assert_eq!(got.as_deref(), Some(expected.as_str()), "sec {sec}");
        }
    }
}
