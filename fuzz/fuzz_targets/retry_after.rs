//! An `x-acs-retry-after` header value: never a panic, never longer than the cap, and every
//! positive whole number of seconds honoured (capped), however many digits it has.
#![no_main]

use emr_ray_operator::emr::client::{MAX_RETRY_AFTER, parse_retry_after};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    // What the client sees: a header value that `HeaderValue::to_str` accepts.
    let Ok(v) = std::str::from_utf8(data) else {
        return;
    };
    let got = parse_retry_after(v);
    if let Some(d) = got {
        assert!(d > Duration::ZERO && d <= MAX_RETRY_AFTER, "{v:?} -> {d:?}");
    }
    // Oracle: a positive integer of seconds (optionally `+`), surrounding whitespace ignored.
    let t = v.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let n = digits.trim_start_matches('0');
        let want = if n.is_empty() {
            None
        } else if n.len() > 4 || n.parse::<u64>().unwrap() >= MAX_RETRY_AFTER.as_secs() {
            Some(MAX_RETRY_AFTER)
        } else {
            Some(Duration::from_secs(n.parse().unwrap()))
        };
        assert_eq!(got, want, "{v:?}");
    } else {
        assert_eq!(got, None, "{v:?}");
    }
});
