//! `Interval` (`spec.syncInterval`, duration flags): never a panic or overflow, never above
//! `Interval::MAX`, and display then parse gives the value back (to the millisecond, the
//! display's precision).
#![no_main]

use emr_ray_operator::api::Interval;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Interval::parse_at_least(s, Interval::MIN_SYNC);
    let Ok(i) = s.parse::<Interval>() else {
        return;
    };
    assert!(i <= Interval::MAX, "{s:?} -> {i:?}");
    let shown = i.to_string();
    let back: Interval = shown
        .parse()
        .unwrap_or_else(|e| panic!("{s:?} -> {shown:?} does not parse: {e}"));
    let d = i.as_duration();
    let truncated = Duration::new(d.as_secs(), d.subsec_millis() * 1_000_000);
    assert_eq!(back.as_duration(), truncated, "{s:?} -> {shown:?}");
    assert_eq!(back.to_string(), shown, "display is canonical");
});
