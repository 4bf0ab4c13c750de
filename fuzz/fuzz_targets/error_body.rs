//! A non-2xx answer (status, body, `x-acs-request-id`) through `EmrError::from_response`: never
//! a panic, remote text cleaned and capped, the classification that of the raw code.
#![no_main]

use emr_ray_operator::emr::error::{MAX_CODE_CHARS, MAX_MESSAGE_CHARS, classify, clean_text};
use emr_ray_operator::emr::{EmrError, ErrorKind};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fn check_text(s: &str, max: usize) {
    assert!(
        s.chars().count() <= max + 1,
        "{} chars: {s:?}",
        s.chars().count()
    );
    assert!(
        !s.chars().any(char::is_control),
        "control character kept: {s:?}"
    );
    assert_eq!(s, s.trim(), "untrimmed {s:?}");
    assert!(!s.contains("  "), "whitespace not collapsed: {s:?}");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]);
    let flags = data[2];
    let rest = &data[3..];
    // Optionally split off a header request ID (up to the first NUL byte).
    let (header_id, body) = match (flags & 1 != 0, rest.iter().position(|b| *b == 0)) {
        (true, Some(i)) => (
            Some(String::from_utf8_lossy(&rest[..i]).into_owned()),
            &rest[i + 1..],
        ),
        _ => (None, rest),
    };
    let retry_after = (flags & 2 != 0).then(|| Duration::from_secs(u64::from(flags >> 2)));
    let e = EmrError::from_response(status, body, header_id, retry_after);

    assert_eq!(e.http_status, Some(status));
    assert!(!e.message.is_empty());
    check_text(&e.message, MAX_MESSAGE_CHARS);
    if let Some(code) = &e.code {
        check_text(code, MAX_CODE_CHARS);
    }
    if let Some(id) = &e.request_id {
        check_text(id, MAX_CODE_CHARS);
    }
    if e.kind == ErrorKind::Throttled {
        assert_eq!(e.retry_after, retry_after);
    }
    // The kind comes from the raw code, so re-parse the body the same way.
    let raw_code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|_| e.code.is_some())
        .and_then(|v| {
            ["Code", "code"]
                .iter()
                .find_map(|k| v.get(k).and_then(|c| c.as_str()).map(str::to_string))
        });
    if e.code.is_none() {
        assert_eq!(e.kind, classify(status, None));
    } else if let Some(c) = raw_code {
        assert_eq!(e.kind, classify(status, Some(&c)));
    }
    let _ = e.to_string();
    let _ = e.is_retryable();

    // clean_text on its own, any cap.
    if let Ok(s) = std::str::from_utf8(rest) {
        let max = usize::from(flags);
        check_text(&clean_text(s, max), max);
    }
});
