//! Horizontal sharding: each operator Deployment serves the `EmrWorkspace`s of the
//! **namespaces** whose [`LABEL_SHARD`] label matches its `--shard-selector`, and caches only
//! the mirrors of those workspaces (mirrors carry their namespace's shard label). Shards are a
//! cluster admin's tool, so the label is read from the Namespace, which tenants cannot change;
//! a label on an `EmrWorkspace` means nothing (see [`crate::controller::shard`]).
//!
//! The selector may only constrain [`LABEL_SHARD`]: it is applied to the mirror watch as well,
//! and mirrors carry no other label of their namespace. A selector on any other key would hide
//! a shard's own mirrors from it.

use std::fmt;

use crate::api::LABEL_SHARD;

/// A Kubernetes label selector on [`LABEL_SHARD`] only, in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

impl ShardSelector {
    /// Parses a selector (`key=a`, `key!=a`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`,
    /// comma-separated, all on [`LABEL_SHARD`]). Empty: `Ok(None)`, every namespace.
    pub fn parse(s: &str) -> Result<Option<ShardSelector>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let mut requirements = Vec::new();
        for part in split_top_level(s)? {
            requirements.push(parse_requirement(part.trim())?);
        }
        Ok(Some(ShardSelector { requirements }))
    }

    /// Whether a namespace (or mirror) whose shard label is `value` is selected.
    pub fn matches(&self, value: Option<&str>) -> bool {
        self.requirements.iter().all(|r| match (r, value) {
            (Requirement::Exists, v) => v.is_some(),
            (Requirement::DoesNotExist, v) => v.is_none(),
            (Requirement::Equals(x), v) => v == Some(x.as_str()),
            (Requirement::NotEquals(x), v) => v != Some(x.as_str()),
            (Requirement::In(xs), Some(v)) => xs.iter().any(|x| x == v),
            (Requirement::In(_), None) => false,
            (Requirement::NotIn(xs), v) => v.is_none_or(|v| xs.iter().all(|x| x != v)),
        })
    }
}

impl fmt::Display for ShardSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Exists => LABEL_SHARD.to_string(),
                Requirement::DoesNotExist => format!("!{LABEL_SHARD}"),
                Requirement::Equals(v) => format!("{LABEL_SHARD}={v}"),
                Requirement::NotEquals(v) => format!("{LABEL_SHARD}!={v}"),
                Requirement::In(vs) => format!("{LABEL_SHARD} in ({})", vs.join(",")),
                Requirement::NotIn(vs) => format!("{LABEL_SHARD} notin ({})", vs.join(",")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {s:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {s:?}"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn check_key(key: &str) -> Result<(), String> {
    if key == LABEL_SHARD {
        Ok(())
    } else {
        Err(format!(
            "the shard selector may only use the label {LABEL_SHARD} (mirrors carry no other \
             label of their workspace), not {key:?}"
        ))
    }
}

fn check_value(v: &str) -> Result<String, String> {
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {rest:?}"))?;
    let values = inner
        .split(',')
        .map(|v| check_value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(values)
}

fn parse_requirement(r: &str) -> Result<Requirement, String> {
    if r.is_empty() {
        return Err("empty requirement in the shard selector".into());
    }
    if let Some(key) = r.strip_prefix('!') {
        check_key(key.trim())?;
        return Ok(Requirement::DoesNotExist);
    }
    for (op, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = r.split_once(op) {
            check_key(key.trim())?;
            let value = check_value(value.trim())?;
            return Ok(if neg {
                Requirement::NotEquals(value)
            } else {
                Requirement::Equals(value)
            });
        }
    }
    let mut words = r.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    check_key(key)?;
    match words.next().map(str::trim_start) {
        None => Ok(Requirement::Exists),
        Some(rest) => {
            if let Some(set) = rest.strip_prefix("notin") {
                Ok(Requirement::NotIn(parse_set(set)?))
            } else if let Some(set) = rest.strip_prefix("in") {
                Ok(Requirement::In(parse_set(set)?))
            } else {
                Err(format!("unknown operator in {r:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> ShardSelector {
        ShardSelector::parse(s).unwrap().unwrap()
    }

    #[test]
    fn empty_selects_everything() {
        assert_eq!(ShardSelector::parse("  "), Ok(None));
    }

    #[test]
    fn selectors_match_like_the_api_server() {
        let k = LABEL_SHARD;
        let rows: &[(&str, Option<&str>, bool)] = &[
            ("=a", Some("a"), true),
            ("=a", Some("b"), false),
            ("=a", None, false),
            ("==a", Some("a"), true),
            ("!=a", None, true),
            ("!=a", Some("a"), false),
            (" in (a, b)", Some("b"), true),
            (" in (a, b)", None, false),
            (" notin (a,b)", None, true),
            (" notin (a,b)", Some("c"), true),
            (" notin (a,b)", Some("a"), false),
            ("", Some("x"), true),
            ("", None, false),
        ];
        for (suffix, value, want) in rows {
            let s = format!("{k}{suffix}");
            assert_eq!(sel(&s).matches(*value), *want, "{s} on {value:?}");
        }
        assert!(sel(&format!("!{k}")).matches(None));
        assert!(!sel(&format!("!{k}")).matches(Some("a")));
        let both = sel(&format!("{k},{k}!=b"));
        assert!(both.matches(Some("a")) && !both.matches(Some("b")) && !both.matches(None));
    }

    #[test]
    fn canonical_form_round_trips() {
        let k = LABEL_SHARD;
        for s in [
            format!("{k}=a"),
            format!("!{k}"),
            format!("{k} notin (a,b)"),
            format!("{k} in (a),{k}!=b"),
        ] {
            assert_eq!(sel(&s).to_string(), s);
            assert_eq!(sel(&sel(&s).to_string()), sel(&s));
        }
        assert_eq!(
            sel(&format!(" {k}  in ( a , b ) ")).to_string(),
            format!("{k} in (a,b)")
        );
    }

    #[test]
    fn other_keys_and_bad_syntax_are_refused() {
        for bad in [
            "team=a".to_string(),
            format!("{LABEL_SHARD}=a,team=b"),
            format!("!{LABEL_SHARD}x"),
            format!("{LABEL_SHARD} in (a"),
            format!("{LABEL_SHARD} in a,b"),
            format!("{LABEL_SHARD}=-a"),
            format!("{LABEL_SHARD} exists"),
            format!("{LABEL_SHARD}=a,"),
        ] {
            assert!(ShardSelector::parse(&bad).is_err(), "{bad} accepted");
        }
    }
}
