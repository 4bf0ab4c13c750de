//! An STS `AssumeRoleWithOIDC` answer (status, body) through the RRSA credentials' parser: never
//! a panic, error text cleaned and bounded, and no error quotes the secrets a successful body
//! carries (`AccessKeySecret`, `SecurityToken`), as serde's or the date parser's errors would.
#![no_main]

use emr_ray_operator::emr::credentials::parse_sts_answer;
use emr_ray_operator::emr::text::MAX_MESSAGE_CHARS;
use libfuzzer_sys::fuzz_target;

/// The body's secrets (8 characters or more: a shorter one could occur in any text by chance),
/// unless the body also says them where an error may quote it (the request ID, the expiration).
fn secrets(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let quotable: Vec<&str> = [v.get("RequestId"), v.pointer("/Credentials/Expiration")]
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    ["/Credentials/AccessKeySecret", "/Credentials/SecurityToken"]
        .into_iter()
        .filter_map(|p| v.pointer(p).and_then(|s| s.as_str()))
        .filter(|s| s.chars().count() >= 8 && !quotable.iter().any(|q| q.contains(*s)))
        .map(str::to_string)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let status = if flags & 1 == 0 {
        200
    } else {
        400 + u16::from(flags >> 1)
    };
    match parse_sts_answer(status, body) {
        Ok((id, _expiration)) => {
            assert_eq!(status, 200);
            // (The parser skips fields it does not know without checking their escapes, so a
            // body it takes may still be refused as a whole JSON value.)
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
                assert_eq!(
                    v.pointer("/Credentials/AccessKeyId")
                        .and_then(|s| s.as_str()),
                    Some(id.as_str())
                );
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                e.message.chars().count() <= MAX_MESSAGE_CHARS * 2 + 64,
                "{} chars",
                e.message.chars().count()
            );
            assert!(!e.message.chars().any(char::is_control), "{:?}", e.message);
            if status == 200 {
                for s in secrets(body) {
                    assert!(!text.contains(&s), "secret quoted: {text:?}");
                }
            }
        }
    }
});
