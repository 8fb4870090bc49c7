//! Time as the host hands it in: a monotonic instant in nanoseconds since the host's epoch.
//!
//! Owns `Time` and Go-style duration text (`"10s"`, `"1m30s"`), which Consul's API uses on the
//! wire. Never reads a clock: every instant comes from the `now` argument of `Node::step`.

use core::fmt;
use core::ops::{Add, Sub};
pub use core::time::Duration;

/// A monotonic instant, nanoseconds since the host's epoch (process start or simulation start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub const MAX: Time = Time(u64::MAX);

    pub fn from_nanos(n: u64) -> Time {
        Time(n)
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}s", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

/// Why a Go duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration \"{0}\"")]
pub struct DurationError(pub String);

/// Parses Go's `time.ParseDuration` syntax: `[-+]?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+` or `"0"`.
/// Negative durations are refused: nothing in Consul's API means anything by them.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_string());
    let s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| err())? };
        let mut value = int.checked_mul(scale).ok_or_else(err)?;
        let mut place = scale;
        for d in frac_part.chars() {
            place /= 10;
            let digit = u128::from(d.to_digit(10).ok_or_else(err)?) * place;
            value = value.checked_add(digit).ok_or_else(err)?;
        }
        total = total.checked_add(value).ok_or_else(err)?;
        rest = next;
    }
    let nanos = u64::try_from(total).map_err(|_| err())?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats like Go's `time.Duration.String()`: `"0s"`, `"500ms"`, `"1.5s"`, `"1m30s"`, `"1h0m0s"`.
pub fn format_go_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(n, div));
    }
    let secs = n / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = fraction(n % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `n / div` as a decimal with trailing zeros trimmed.
fn fraction(n: u128, div: u128) -> String {
    let (int, frac) = (n / div, n % div);
    if frac == 0 {
        return int.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ok = [
            ("0", 0),
            ("10s", 10_000_000_000),
            ("1m30s", 90_000_000_000),
            ("100ms", 100_000_000),
            ("1.5h", 5_400_000_000_000),
            ("2h45m", 9_900_000_000_000),
            ("300us", 300_000),
            (".5s", 500_000_000),
        ];
        for (s, n) in ok {
            assert_eq!(parse_go_duration(s), Ok(Duration::from_nanos(n)), "{s}");
        }
        for bad in [
            "",
            "15",
            "-1s",
            "1x",
            "s",
            "1.2.3s",
            "1 s",
            "340282366920938463463374607431.9s",
            "99999999999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (10_000_000_000, "10s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500, "1.5µs"),
        ];
        for (n, s) in cases {
            assert_eq!(format_go_duration(Duration::from_nanos(n)), s);
        }
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(n in 0u64..10_000_000_000_000) {
            let d = Duration::from_nanos(n);
            proptest::prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
    }
}
