//! The one RFC 3339 formatter (whole seconds, UTC, `Z`), used by the EMR client's signatures, the
//! simulator, and every timestamp the operator writes into status.

/// A point in time as the operator writes it into status (conditions' `lastTransitionTime`):
/// whole seconds, on the wire the one [`rfc3339`] string. Made with [`Time::now`] (truncated to
/// the second) or parsed from any RFC 3339 string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(jiff::Timestamp);

impl Time {
    /// Now, truncated to the second.
    pub fn now() -> Self {
        Self::from_timestamp(jiff::Timestamp::now())
    }

    /// `t` truncated to the second.
    pub fn from_timestamp(t: jiff::Timestamp) -> Self {
        Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
    }

    pub fn timestamp(self) -> jiff::Timestamp {
        self.0
    }

    /// `s` seconds after the epoch (tests: `Time::test(1)`, `Time::test(2)`, ...).
    #[cfg(test)]
    pub(crate) const fn test(s: i64) -> Self {
        Time(jiff::Timestamp::constant(s, 0))
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

impl std::str::FromStr for Time {
    type Err = jiff::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Time)
    }
}

impl serde::Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `2024-08-15T11:44:39Z`.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(jiff::Timestamp::now())
}

/// Epoch milliseconds (as the remote API returns them) as [`rfc3339`]; `None` when out of range
/// (RFC 3339 has no years before 0000).
pub fn rfc3339_millis(ms: i64) -> Option<String> {
    /// `0000-01-01T00:00:00Z`.
    const YEAR_ZERO_MS: i64 = -62_167_219_200_000;
    if ms < YEAR_ZERO_MS {
        return None;
    }
    jiff::Timestamp::from_millisecond(ms).ok().map(rfc3339)
}

/// A wall-clock time as [`rfc3339`]; `None` when out of range.
pub fn rfc3339_system(t: std::time::SystemTime) -> Option<String> {
    jiff::Timestamp::try_from(t).ok().map(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            rfc3339_millis(1_723_722_279_000).as_deref(),
            Some("2024-08-15T11:44:39Z")
        );
        assert_eq!(rfc3339_millis(i64::MAX), None);
        // Found by fuzz/listing_body: negative years gave `-001-03-02T01:29:59Z`.
        assert_eq!(
            rfc3339_millis(-62_167_219_200_000).as_deref(),
            Some("0000-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339_millis(-62_167_219_200_001), None);
        assert_eq!(rfc3339_millis(-62_200_000_000_000), None);
        assert_eq!(rfc3339_millis(i64::MIN), None);
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn time_is_the_one_format_on_the_wire() {
        let t: Time = serde_json::from_str("\"2024-08-15T11:44:39Z\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2024-08-15T11:44:39Z\""
        );
        assert_eq!(t.to_string(), "2024-08-15T11:44:39Z");
        let now = Time::now();
        assert_eq!(now.timestamp().subsec_nanosecond(), 0);
        assert_eq!(now.to_string().parse::<Time>().unwrap(), now);
        assert!(serde_json::from_str::<Time>("\"t1\"").is_err());
    }
}
