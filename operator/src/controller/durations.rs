//! Durations as the API writes them (Go's `90s`, `1h30m`), their bounds, the backoff and jitter
//! of requeues, and RFC 3339 times: integer arithmetic that saturates, never a panic.

use crate::api::condition::quote;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::time::Duration;

const BACKOFF_BASE: Duration = Duration::from_secs(15);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// The bounds of `spec.interval` (the CRD holds the same), `--default-interval`,
/// `--full-check-interval` and `--reconcile-timeout`: often enough to matter, rarely enough not
/// to hammer a registry.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_INTERVAL: Duration = Duration::from_secs(720 * 3600);

/// Why [`parse_duration`] refused a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    Malformed,
    /// Well-formed, but longer than [`Duration::MAX`].
    TooLong,
}

/// A Go duration as the CRD admits it (`90s`, `30m`, `1h30m`, `1.5h`, `500ms`), in checked
/// integer nanoseconds: never a panic, whatever the text. Fraction digits below a nanosecond
/// are dropped.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    use DurationError::*;
    if text.is_empty() {
        return Err(Malformed);
    }
    // `None` once a sum or product has overflowed; the syntax is still checked to the end.
    let mut total: Option<u128> = Some(0);
    let mut rest = text;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        if whole.is_empty() {
            return Err(Malformed);
        }
        let (fraction, after) = match after.strip_prefix('.') {
            Some(tail) => match split_digits(tail) {
                ("", _) => return Err(Malformed),
                split => split,
            },
            None => ("", after),
        };
        let (unit, after): (u128, &str) = if let Some(a) = after.strip_prefix("ms") {
            (1_000_000, a)
        } else if let Some(a) = after.strip_prefix('s') {
            (1_000_000_000, a)
        } else if let Some(a) = after.strip_prefix('m') {
            (60_000_000_000, a)
        } else if let Some(a) = after.strip_prefix('h') {
            (3_600_000_000_000, a)
        } else {
            return Err(Malformed);
        };
        // More digits than u128 holds fail to parse, as does any product past it.
        let mut part = whole.parse::<u128>().ok().and_then(|w| w.checked_mul(unit));
        let mut scale = unit;
        for digit in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part = part.and_then(|p| p.checked_add(u128::from(digit - b'0') * scale));
        }
        total = total.zip(part).and_then(|(t, p)| t.checked_add(p));
        rest = after;
    }
    let total = total.ok_or(TooLong)?;
    let seconds = u64::try_from(total / 1_000_000_000).map_err(|_| TooLong)?;
    Ok(Duration::new(seconds, (total % 1_000_000_000) as u32))
}

fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    )
}

/// An interval (`spec.interval`, the interval flags) within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`],
/// or why not (the text quoted, cut short: an object that bypassed the CRD may hold anything).
pub fn bounded_interval(text: &str) -> Result<Duration, String> {
    let quoted = quote(text);
    let outside = || format!("{quoted} is outside 10s..720h (30 days)");
    let duration = parse_duration(text).map_err(|e| match e {
        DurationError::TooLong => outside(),
        DurationError::Malformed => format!("{quoted} is not a duration like 30s, 5m or 1h30m"),
    })?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&duration) {
        return Err(outside());
    }
    Ok(duration)
}

/// Capped exponential backoff after `failures` transient failures in a row.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

/// The interval stretched by up to +10%, by a fraction fixed per object, so that many objects
/// created together do not hit the registry together (and the plan stays deterministic).
/// Integer arithmetic that saturates: no interval makes it panic.
pub fn jittered(interval: Duration, uid: &str) -> Duration {
    let h = Sha256::digest(uid.as_bytes());
    let fraction = u128::from(u16::from_be_bytes([h[0], h[1]]));
    let extra = interval.as_nanos().saturating_mul(fraction) / (10 * u128::from(u16::MAX));
    interval.saturating_add(nanos_saturating(extra))
}

/// `nanos` as a Duration, [`Duration::MAX`] when longer.
fn nanos_saturating(nanos: u128) -> Duration {
    match u64::try_from(nanos / 1_000_000_000) {
        Ok(seconds) => Duration::new(seconds, (nanos % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}

pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b3c1f5e-uid";

    /// Longer than any Duration the API can hold.
    fn huge_interval() -> Duration {
        Duration::from_secs(18_000_000_000_000_000_000)
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("10").ok(), None);
        assert_eq!(parse_duration("").ok(), None);
        assert_eq!(parse_duration("5d").ok(), None);
        assert_eq!(parse_duration("1.5h").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("0.25s").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("2m0.5s").ok(),
            Some(Duration::from_millis(120_500))
        );
        // Below a nanosecond, fraction digits are dropped.
        assert_eq!(
            parse_duration("1.0000000009s").ok(),
            Some(Duration::from_secs(1))
        );
        for malformed in [".5h", "1.h", "1h1", "h", "1..5s", "-1s", "1 h", "1µs"] {
            assert_eq!(parse_duration(malformed).ok(), None, "{malformed}");
        }
    }

    #[test]
    fn absurd_durations_are_refused_without_a_panic() {
        // Past u64 seconds: Duration::from_secs_f64 used to panic on this inside the reconcile.
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Malformed)
        );
        // More digits than u128 holds, and products past it.
        assert_eq!(parse_duration(&format!("1{}s", "0".repeat(60))).ok(), None);
        assert_eq!(parse_duration(&format!("{}h", "9".repeat(38))).ok(), None);
        assert_eq!(
            parse_duration("1h".repeat(100_000).as_str()).ok(),
            Some(Duration::from_secs(360_000_000))
        );
        // Fits a Duration, so it parses; the bounds refuse it.
        let huge = parse_duration("5000000000000000h").ok().unwrap();
        assert_eq!(huge.as_secs(), 18_000_000_000_000_000_000);
        for text in [
            "99999999999999999999h",
            "5000000000000000h",
            "721h",
            "9s",
            "0s",
        ] {
            let why = bounded_interval(text).unwrap_err();
            assert!(why.ends_with("is outside 10s..720h (30 days)"), "{why}");
        }
        for text in ["1h1", "", "99999999999999999999d"] {
            let why = bounded_interval(text).unwrap_err();
            assert!(
                why.ends_with("is not a duration like 30s, 5m or 1h30m"),
                "{why}"
            );
        }
        assert_eq!(bounded_interval("720h"), Ok(MAX_INTERVAL));
        assert_eq!(bounded_interval("10s"), Ok(MIN_INTERVAL));
        // A very long text is quoted cut short.
        assert!(bounded_interval(&"9".repeat(100_000)).unwrap_err().len() < 200);
    }

    #[test]
    fn jitter_and_backoff_saturate() {
        // jittered used to panic here (Duration::mul_f64 past Duration::MAX).
        assert_eq!(jittered(Duration::MAX, UID), Duration::MAX);
        assert_eq!(jittered(huge_interval(), UID), Duration::MAX);
        let hour = Duration::from_secs(3600);
        let j = jittered(hour, UID);
        assert!(j >= hour && j <= hour + hour / 10, "{j:?}");
        assert_eq!(jittered(hour, UID), j, "fixed per object");
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), BACKOFF_BASE);
    }
}
