//! [`Interval`]: a Kubernetes-style duration (`90s`, `1m30s`, `1.5h`, `500ms`) with checked
//! parsing and a canonical display. The same type reads `spec.syncInterval`, the operator's
//! duration flags, and writes `status.syncInterval`. No input can make it panic or overflow
//! (`kube::core::Duration` parses the same syntax but multiplies floats and adds without
//! checks, which panics on a tenant's `99999999999999999999h`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A non-negative duration written the way Kubernetes users write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Interval(Duration);

/// Why a text is not an [`Interval`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{0:?} is not a duration like 30s, 5m, 1h30m or 500ms")]
    Syntax(String),
    #[error("{0:?} is longer than {max}", max = Interval::MAX)]
    TooLong(String),
    #[error("{value} is shorter than the minimum {min}")]
    TooShort { value: Interval, min: Interval },
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl Interval {
    /// Longest accepted duration (anything longer is an error, not a saturated value).
    pub const MAX: Interval = Interval(Duration::from_secs(366 * 24 * 3600));
    /// Shortest sync interval honoured, whatever the spec or flags say.
    pub const MIN_SYNC: Interval = Interval(Duration::from_secs(10));

    pub const fn from_secs(s: u64) -> Self {
        Interval(Duration::from_secs(s))
    }

    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Parses and checks `self >= min`.
    pub fn parse_at_least(s: &str, min: Interval) -> Result<Self, DurationError> {
        let v: Interval = s.parse()?;
        if v < min {
            return Err(DurationError::TooShort { value: v, min });
        }
        Ok(v)
    }
}

impl From<Interval> for Duration {
    fn from(i: Interval) -> Duration {
        i.0
    }
}

impl FromStr for Interval {
    type Err = DurationError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let syntax = || DurationError::Syntax(raw.chars().take(64).collect());
        let too_long = || DurationError::TooLong(raw.chars().take(64).collect());
        let max = Interval::MAX.0.as_nanos();
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let int_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (int_part, after) = rest.split_at(int_len);
            let (frac_part, after) = match after.strip_prefix('.') {
                Some(f) => {
                    let n = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                    f.split_at(n)
                }
                None => ("", after),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(syntax());
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ms" => 1_000_000,
                "s" => NANOS_PER_SEC,
                "m" => 60 * NANOS_PER_SEC,
                "h" => 3600 * NANOS_PER_SEC,
                _ => return Err(syntax()),
            };
            // More than 20 integer digits overflows anything we accept anyway.
            if int_part.len() > 20 {
                return Err(too_long());
            }
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| syntax())?
            };
            // Fractions beyond nanoseconds are dropped.
            let frac_digits = &frac_part[..frac_part.len().min(9)];
            let mut frac_nanos: u128 = 0;
            if !frac_digits.is_empty() {
                let f: u128 = frac_digits.parse().map_err(|_| syntax())?;
                let scale = 10u128.pow(frac_digits.len() as u32);
                frac_nanos = f * unit_nanos / scale;
            }
            let part = int
                .checked_mul(unit_nanos)
                .and_then(|v| v.checked_add(frac_nanos))
                .ok_or_else(too_long)?;
            total = total.checked_add(part).ok_or_else(too_long)?;
            if total > max {
                return Err(too_long());
            }
            rest = after;
        }
        let secs = (total / NANOS_PER_SEC) as u64;
        let nanos = (total % NANOS_PER_SEC) as u32;
        Ok(Interval(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Interval {
    /// `90s` → `1m30s`, `3600s` → `1h`, `0.5s` → `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let millis = self.0.subsec_millis();
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let mut wrote = false;
        if h > 0 {
            write!(f, "{h}h")?;
            wrote = true;
        }
        if m > 0 {
            write!(f, "{m}m")?;
            wrote = true;
        }
        if s > 0 {
            write!(f, "{s}s")?;
            wrote = true;
        }
        if millis > 0 {
            write!(f, "{millis}ms")?;
            wrote = true;
        }
        if !wrote {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Duration, DurationError> {
        s.parse::<Interval>().map(Duration::from)
    }

    #[test]
    fn parses_kubernetes_durations() {
        assert_eq!(p("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(p("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(p("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(p("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(p(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(p(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn rejects_without_panicking() {
        for bad in [
            "", "10", "5d", "s", "1..5s", "-5s", "1e3s", "1ms2", "h1", ".",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            p("99999999999999999999999h"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            p("18446744073709551615s"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(p("9000h"), Err(DurationError::TooLong(_))));
        assert!(p(&"1".repeat(10_000)).is_err());
        assert!(p(&format!("1.{}s", "9".repeat(10_000))).is_ok());
    }

    #[test]
    fn minimum() {
        assert!(matches!(
            Interval::parse_at_least("5s", Interval::MIN_SYNC),
            Err(DurationError::TooShort { .. })
        ));
        assert_eq!(
            Interval::parse_at_least("10s", Interval::MIN_SYNC),
            Ok(Interval::from_secs(10))
        );
    }

    #[test]
    fn displays_canonically() {
        for (secs, text) in [
            (60, "1m"),
            (90, "1m30s"),
            (10, "10s"),
            (3600, "1h"),
            (0, "0s"),
        ] {
            assert_eq!(Interval::from_secs(secs).to_string(), text);
        }
        assert_eq!("1.5s".parse::<Interval>().unwrap().to_string(), "1s500ms");
        // Display then parse is the identity.
        for s in ["1h2m3s", "500ms", "10s", "24h"] {
            let i: Interval = s.parse().unwrap();
            assert_eq!(i.to_string().parse::<Interval>().unwrap(), i);
        }
    }
}
