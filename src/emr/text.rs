//! Remote strings, cleaned and capped where they are decoded: what the endpoint sends reaches
//! status, Events, logs, metrics and error messages only through here.
//!
//! * **Text** (names, descriptions, messages, quantities, URLs, states): control characters
//!   become spaces, bidirectional controls and zero-width or otherwise invisible format
//!   characters are dropped (they make `kubectl describe` show something other than what is
//!   there), runs of whitespace become one space, the ends are trimmed, and the result is cut to
//!   a byte cap with a visible [`TRUNCATED`] marker ([`clean`]); error codes, messages and
//!   request IDs are cut to a character cap with `…` ([`clean_text`]).
//! * **Cluster IDs** name objects, labels, annotations and metric series, so they are never
//!   altered (two IDs must not become one): an ID that is not [`is_cluster_id`] fails the page's
//!   decoding, quoted only as a short cleaned [`excerpt`] — a malformed listing, which never
//!   deletes or blanks a mirror.
//!
//! Every cleaner is idempotent: text cleaned once comes back unchanged when cleaned again (a
//! mirror's status read back from the API server is the status the operator wrote).

use serde::{Deserialize, Deserializer};

/// Longest free text kept (description, message), in bytes.
pub const MAX_TEXT: usize = 4096;
/// Longest other remote string (names, versions, quantities, queues, creators), in bytes.
pub const MAX_SHORT: usize = 512;
/// Longest endpoint URL, in bytes.
pub const MAX_URL: usize = 2048;
/// Longest state outside the documented five, in bytes.
pub const MAX_STATE: usize = 64;
/// Longest cluster ID accepted, in bytes (the reference's look like `ray-uiulpgow9xljimm1`).
pub const MAX_CLUSTER_ID: usize = 128;
/// Longest remote error message kept (characters).
pub const MAX_MESSAGE_CHARS: usize = 256;
/// Longest remote error code or request ID kept (characters).
pub const MAX_CODE_CHARS: usize = 64;
/// Longest quote of remote input in an error message (characters).
pub const MAX_EXCERPT_CHARS: usize = 32;
/// What a string cut by [`clean`] ends with.
pub const TRUNCATED: &str = "…[truncated]";

/// Characters that render as nothing or reorder what is shown: bidirectional marks, embeddings,
/// overrides and isolates, zero-width characters, the other format characters (Unicode
/// category Cf, tag characters included — they smuggle invisible ASCII) and the Hangul fillers.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}'
    )
}

/// The characters of `s` as shown: invisible ones dropped, controls and whitespace runs as one
/// space between words, nothing at either end.
fn cleaned_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    let mut pending_space = false;
    let mut started = false;
    s.chars()
        .filter(|c| !is_invisible(*c))
        .flat_map(move |c| {
            if c.is_whitespace() || c.is_control() {
                pending_space = started;
                return [None, None];
            }
            let space = std::mem::take(&mut pending_space).then_some(' ');
            started = true;
            [space, Some(c)]
        })
        .flatten()
}

/// `s` cleaned (see the module documentation) and cut to at most `max` bytes, ending with
/// [`TRUNCATED`] when cut (or cut bare when `max` is shorter than the marker).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut cut = false;
    for c in cleaned_chars(s) {
        if out.len() + c.len_utf8() > max {
            cut = true;
            break;
        }
        out.push(c);
    }
    if cut {
        let keep = max.checked_sub(TRUNCATED.len());
        let mut end = keep.unwrap_or(max).min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        if keep.is_some() {
            out.push_str(TRUNCATED);
        }
    }
    out
}

/// `s` cleaned (see the module documentation) and cut to `max` characters, with `…` when cut.
pub fn clean_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = cleaned_chars(s);
    for c in chars.by_ref().take(max) {
        out.push(c);
    }
    if chars.next().is_some() {
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('…');
    }
    out
}

/// A short cleaned quote of remote input, for error messages.
pub fn excerpt(s: &str) -> String {
    clean_text(s, MAX_EXCERPT_CHARS)
}

/// Whether `s` is a cluster ID the operator mirrors: 1 to [`MAX_CLUSTER_ID`] bytes of visible
/// characters — no whitespace, control, bidirectional or invisible character, no quote or
/// backslash (the reference's IDs are `ray-` and lower-case letters and digits; an ID in
/// another script is mirrored under a hashed name). Such an ID is safe as an annotation, a
/// metric label and a quote in any message; the mirror's name and label value come from it by
/// `controller::mirror::{mirror_name, label_value}`.
pub fn is_cluster_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CLUSTER_ID
        && s.chars().all(|c| {
            !(c.is_whitespace() || c.is_control() || is_invisible(c) || matches!(c, '"' | '\\'))
        })
}

/// What is wrong with a cluster ID, quoting a cleaned excerpt of it (`None`: it is fine, or
/// empty — a missing ID is reported by the listing, with its page).
pub fn cluster_id_problem(s: &str) -> Option<String> {
    (!s.is_empty() && !is_cluster_id(s)).then(|| {
        format!(
            "clusterId {:?} ({} bytes) is not an EMR cluster ID (1 to {MAX_CLUSTER_ID} bytes of \
             visible characters, no space, quote or backslash)",
            excerpt(s),
            s.len()
        )
    })
}

/// A remote request ID (from a body or the `x-acs-request-id` header), cleaned and capped.
pub fn request_id(s: &str) -> String {
    clean_text(s, MAX_CODE_CHARS)
}

/// A `serde_json` decoding error as a message: its text cleaned and capped (serde quotes the
/// offending input, which the endpoint controls), then its position.
pub fn decode_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let what = full.strip_suffix(&position).unwrap_or(&full);
    let what = clean_text(what, MAX_MESSAGE_CHARS);
    if e.line() == 0 {
        what
    } else {
        format!("{what}{position}")
    }
}

/// Serde helpers for the response model: each decodes an optional string and cleans it.
pub mod de {
    use super::*;

    fn optional<'de, D: Deserializer<'de>>(
        d: D,
        f: impl FnOnce(&str) -> String,
    ) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|s| f(&s)))
    }

    /// Free text: [`MAX_TEXT`].
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, |s| clean(s, MAX_TEXT))
    }

    /// Names, versions, quantities, queues, people: [`MAX_SHORT`].
    pub fn short<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, |s| clean(s, MAX_SHORT))
    }

    /// Endpoints: [`MAX_URL`] (redacted later, where they are shown).
    pub fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, |s| clean(s, MAX_URL))
    }

    /// States: [`MAX_STATE`].
    pub fn state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, |s| clean(s, MAX_STATE))
    }

    /// Request IDs: [`request_id`].
    pub fn request_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, super::request_id)
    }

    /// A cluster ID: kept exactly, or the page fails to decode ([`cluster_id_problem`]).
    pub fn cluster_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        match cluster_id_problem(&s) {
            None => Ok(s),
            Some(problem) => Err(serde::de::Error::custom(problem)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_drops_controls_bidi_and_zero_width() {
        assert_eq!(clean("  a\n\tb\x1b[31m  c ", 100), "a b [31m c");
        assert_eq!(clean("a\u{202E}b\u{200B}c\u{2066}d\u{FEFF}", 100), "abcd");
        assert_eq!(clean("tag\u{E0041}\u{E0042}s", 100), "tags");
        assert_eq!(clean("x\u{061C}y\u{200E}z\u{00AD}", 100), "xyz");
        assert_eq!(clean("名字 ✓\u{3000}ok", 100), "名字 ✓ ok");
        assert_eq!(clean("\u{202E}\u{200B} \n", 100), "");
        assert_eq!(clean("", 100), "");
    }

    #[test]
    fn clean_caps_bytes_with_a_marker() {
        assert_eq!(clean("abc", 3), "abc");
        let long = "é".repeat(1 << 20);
        let c = clean(&long, MAX_SHORT);
        assert!(
            c.len() <= MAX_SHORT && c.ends_with(TRUNCATED),
            "{}",
            c.len()
        );
        assert!(c.len() > MAX_SHORT - 2 - TRUNCATED.len());
        let spaced = format!("{} {}", "a".repeat(20), "b".repeat(20));
        assert_eq!(clean(&spaced, 20 + 1 + TRUNCATED.len()), {
            let mut s = "a".repeat(20);
            s.push_str(TRUNCATED);
            s
        });
        // Shorter than the marker: cut bare.
        assert_eq!(clean("abcdef", 4), "abcd");
        assert_eq!(clean("ééé", 5), "éé");
    }

    #[test]
    fn cleaning_is_idempotent() {
        let hostile = format!(
            "\u{202E}x\u{200B}y \t\n z{}\u{7}",
            "é\u{2066}w ".repeat(3000)
        );
        for max in [0, 1, 5, 13, 64, 512, 4096] {
            let once = clean(&hostile, max);
            assert_eq!(clean(&once, max), once, "{max}");
            assert!(once.len() <= max);
            let once = clean_text(&hostile, max);
            assert_eq!(clean_text(&once, max + 1), once, "{max}");
        }
    }

    #[test]
    fn clean_text_caps_characters() {
        assert_eq!(clean_text("  a\n\tb\x1b[31m  c ", 100), "a b [31m c");
        assert_eq!(clean_text("abcdef", 3), "abc…");
        assert_eq!(clean_text("ab cdef", 3), "ab…");
        assert_eq!(clean_text("", 3), "");
        assert_eq!(clean_text("abc", 0), "…");
        assert_eq!(clean_text("a\u{202E}b\u{200B}c", 10), "abc");
    }

    #[test]
    fn cluster_ids_are_checked_not_altered() {
        for good in [
            "ray-uiulpgow9xljimm1",
            "Ray_Cluster.01",
            "---",
            "a",
            "集群-ü",
        ] {
            assert!(is_cluster_id(good), "{good}");
            assert_eq!(cluster_id_problem(good), None);
        }
        assert!(is_cluster_id(&"a".repeat(MAX_CLUSTER_ID)));
        assert_eq!(
            cluster_id_problem(""),
            None,
            "missing: reported with its page"
        );
        let huge = format!("ray-\u{202E}{}\n\u{200B}", "x".repeat(1 << 20));
        for bad in [
            "a".repeat(MAX_CLUSTER_ID + 1),
            "ray 1".into(),
            "ray-\u{202E}1".into(),
            "ray\u{200B}1".into(),
            "ray\t1".into(),
            "ray\"}".into(),
            huge,
        ] {
            assert!(!is_cluster_id(&bad));
            let p = cluster_id_problem(&bad).unwrap();
            assert!(p.len() < 300, "{p}");
            assert!(!p.chars().any(|c| c.is_control() || is_invisible(c)), "{p}");
        }
    }

    #[test]
    fn decode_errors_quote_only_a_cleaned_excerpt() {
        let body = format!(
            r#"{{"createTime":"{}\u202e\u0007{}"}}"#,
            "x".repeat(1 << 20),
            "y".repeat(10)
        );
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct T {
            create_time: Option<i64>,
        }
        let e = serde_json::from_str::<T>(&body).unwrap_err();
        let m = decode_error(&e);
        assert!(m.chars().count() < MAX_MESSAGE_CHARS + 40, "{m}");
        assert!(m.starts_with("invalid type: string"), "{m}");
        assert!(m.ends_with(&format!("column {}", e.column())), "{m}");
        assert!(!m.chars().any(|c| c.is_control() || is_invisible(c)), "{m}");
        let e = serde_json::from_str::<T>("{").unwrap_err();
        assert_eq!(decode_error(&e), e.to_string());
    }
}
