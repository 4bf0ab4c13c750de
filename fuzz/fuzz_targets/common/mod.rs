//! Checks shared by the fuzz targets that turn remote bodies into status (included with
//! `#[path = "common/mod.rs"] mod common;`: each target is its own binary, and uses only some).
#![allow(dead_code)]

use emr_ray_operator::emr::text::{MAX_MESSAGE_CHARS, decode_error, is_invisible};
use serde_json::Value;

/// `s` holds no control or invisible character.
pub fn check_clean(s: &str, what: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() || is_invisible(c)),
        "{what}: uncleaned character in {s:?}"
    );
}

/// A remote body decoded as the client decodes it, or `None` once the decoding error a status
/// would show was found short and clean; the request ID it carries, if any, is clean.
pub fn decode<T>(data: &[u8], request_id: impl Fn(&T) -> Option<&str>) -> Option<T>
where
    T: for<'de> serde::Deserialize<'de>,
{
    match serde_json::from_slice::<T>(data) {
        Ok(v) => {
            if let Some(id) = request_id(&v) {
                check_clean(id, "requestId");
            }
            Some(v)
        }
        Err(e) => {
            let m = decode_error(&e);
            check_clean(&m, "decode error");
            assert!(m.chars().count() <= MAX_MESSAGE_CHARS + 64, "{m}");
            None
        }
    }
}

/// Every string in `v` is clean and at most `max` bytes.
pub fn walk(v: &Value, path: &str, max: usize) {
    match v {
        Value::String(s) => {
            check_clean(s, path);
            assert!(s.len() <= max, "{path}: {} bytes", s.len());
        }
        Value::Array(a) => a.iter().for_each(|v| walk(v, path, max)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, v)| walk(v, &format!("{path}.{k}"), max)),
        _ => {}
    }
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, at most 63 characters.
pub fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

/// A condition as the API server admits it: a clean message, a reason of metav1.Condition's
/// shape, a status of `True` or `False`.
pub fn check_condition(message: &str, reason: &str, status: &str) {
    check_clean(message, "condition message");
    assert!(is_condition_reason(reason), "reason {reason:?}");
    assert!(matches!(status, "True" | "False"), "status {status:?}");
}

/// metav1.Condition's reason: `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most 1024.
pub fn is_condition_reason(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 1024
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':'))
        && b.last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `YYYY-MM-DDTHH:MM:SSZ` (what the CRD documents as RFC 3339).
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}
