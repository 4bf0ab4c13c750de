//! The one RFC 3339 formatter (whole seconds, UTC, `Z`), used by the EMR client's signatures, the
//! simulator, and every timestamp the operator writes into status.

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
}
