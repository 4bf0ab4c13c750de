//! Checks shared by the fuzz targets that turn remote bodies into status (included with
//! `#[path = "common/mod.rs"] mod common;`: each target is its own binary).

use emr_ray_operator::emr::text::is_invisible;
use serde_json::Value;

/// `s` holds no control or invisible character.
pub fn check_clean(s: &str, what: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() || is_invisible(c)),
        "{what}: uncleaned character in {s:?}"
    );
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
