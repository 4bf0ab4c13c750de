//! The cleaners and decoders of remote strings (`emr::text`, `ClusterState`): any text, any
//! cap. What comes out has no control or invisible character, no whitespace at its ends or
//! twice in a row, keeps within its cap, is a prefix of the uncut cleaning, and comes back
//! unchanged when cleaned again; a state's metric label is one of a fixed set; an accepted
//! cluster ID makes a valid name and label value, a refused one a short clean message; a page
//! carrying the text in every string field decodes clean (or fails with a short clean message).
#![no_main]

use emr_ray_operator::controller::mirror::{label_value, mirror_name};
use emr_ray_operator::emr::text::{
    MAX_CLUSTER_ID, MAX_CODE_CHARS, MAX_MESSAGE_CHARS, MAX_SHORT, MAX_STATE, MAX_TEXT, MAX_URL,
    TRUNCATED, clean, clean_text, cluster_id_problem, decode_error, is_cluster_id, is_invisible,
    request_id,
};
use emr_ray_operator::emr::{ClusterState, ListRayClusterResponse};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Clean: nothing a terminal would misrender, single spaces only, trimmed.
fn check_clean(s: &str, what: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() || is_invisible(c)),
        "{what}: uncleaned character in {s:?}"
    );
    assert_eq!(s, s.trim(), "{what}: untrimmed {s:?}");
    assert!(
        !s.chars().any(|c| c.is_whitespace() && c != ' ') && !s.contains("  "),
        "{what}: whitespace not collapsed in {s:?}"
    );
}

fn check_bytes(s: &str, max: usize, what: &str) {
    check_clean(s, what);
    assert!(s.len() <= max, "{what}: {} bytes over {max}", s.len());
}

/// Every string in a decoded value is clean.
fn walk(v: &Value, path: &str) {
    match v {
        Value::String(s) => check_bytes(s, MAX_TEXT, path),
        Value::Array(a) => a.iter().for_each(|v| walk(v, path)),
        Value::Object(o) => o.iter().for_each(|(k, v)| walk(v, &format!("{path}.{k}"))),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    let s = s.as_ref();
    let max = usize::from(flags) * 4;

    // `clean`: a byte cap with the marker.
    let full = clean(s, usize::MAX);
    check_clean(&full, "clean uncut");
    let cut = clean(s, max);
    check_bytes(&cut, max, "clean");
    assert_eq!(clean(&cut, max), cut, "clean is idempotent");
    assert_eq!(clean(&full, usize::MAX), full, "clean is idempotent uncut");
    if full.len() <= max {
        assert_eq!(cut, full, "nothing cut under the cap");
    } else {
        let kept = cut.strip_suffix(TRUNCATED).unwrap_or(&cut);
        assert!(
            cut.ends_with(TRUNCATED) || max < TRUNCATED.len(),
            "a cut is marked: {cut:?}"
        );
        assert!(
            full.starts_with(kept),
            "{kept:?} is not a prefix of {full:?}"
        );
    }

    // `clean_text`: a character cap with `…`.
    let t = clean_text(s, usize::from(flags));
    check_clean(&t, "clean_text");
    assert!(t.chars().count() <= usize::from(flags) + 1);
    assert_eq!(
        clean_text(&t, usize::from(flags) + 1),
        t,
        "clean_text is idempotent"
    );
    let id = request_id(s);
    check_clean(&id, "request_id");
    assert!(id.chars().count() <= MAX_CODE_CHARS + 1);

    // A state: cleaned, capped, a fixed set of labels, stable when decoded again.
    let state = ClusterState::from(s);
    check_bytes(state.as_str(), MAX_STATE, "state");
    assert_eq!(
        ClusterState::from(state.as_str()),
        state,
        "states decode stably"
    );
    assert!(ClusterState::LABELS.contains(&ClusterState::label(Some(&state))));
    if let ClusterState::Other(o) = &state {
        assert!(
            !ClusterState::KNOWN.contains(&o.as_str()),
            "{o:?} is a known state"
        );
    }

    // A cluster ID: accepted as it is, or refused with a short clean message.
    match cluster_id_problem(s) {
        None if s.is_empty() => {}
        None => {
            assert!(is_cluster_id(s) && s.len() <= MAX_CLUSTER_ID);
            let name = mirror_name(s);
            assert!(
                !name.is_empty()
                    && name.len() <= 63
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-'),
                "{s:?} -> name {name:?}"
            );
            let label = label_value(s);
            assert!(
                label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                "{s:?} -> label {label:?}"
            );
        }
        Some(problem) => {
            assert!(!is_cluster_id(s));
            check_clean(&problem, "cluster ID problem");
            assert!(problem.chars().count() < 200, "{problem}");
        }
    }

    // A page with the text in every string field.
    let page = json!({"requestId": s, "rayClusters": [{
        "clusterId": if flags & 1 == 0 { "ray-fuzz" } else { s },
        "name": s, "displayReleaseVersion": s, "description": s, "networkServiceName": s,
        "state": s, "creator": s, "creatorName": s, "modifier": s, "modifierName": s,
        "userId": s, "instanceId": s, "dashboardUrl": s, "grpcEndpoint": s, "message": s,
        "headSpec": {"queueName": s, "cpu": s, "memory": s, "gpuSpec": s},
        "workerSpec": [{"groupName": s, "workerType": s, "queueName": s, "cpu": s,
                        "memory": s, "gpuSpec": s}],
    }]})
    .to_string();
    match serde_json::from_str::<ListRayClusterResponse>(&page) {
        Ok(p) => {
            let v = serde_json::to_value(&p).expect("a page serializes");
            walk(&v, "page");
            let again: ListRayClusterResponse =
                serde_json::from_value(v.clone()).expect("a decoded page decodes again");
            assert_eq!(again, p, "decoding is idempotent");
            for c in p.ray_clusters.iter().flatten() {
                assert!(
                    c.cluster_id.is_empty()
                        || c.cluster_id == "ray-fuzz"
                        || is_cluster_id(&c.cluster_id)
                );
                for (f, cap) in [
                    (&c.name, MAX_SHORT),
                    (&c.description, MAX_TEXT),
                    (&c.dashboard_url, MAX_URL),
                    (&c.message, MAX_TEXT),
                ] {
                    check_bytes(f.as_deref().unwrap_or_default(), cap, "field");
                }
            }
        }
        Err(e) => {
            assert!(flags & 1 == 1 && !is_cluster_id(s), "{e}");
            let m = decode_error(&e);
            check_clean(&m, "decode error");
            assert!(m.chars().count() <= MAX_MESSAGE_CHARS + 64, "{m}");
        }
    }

    // Anything at all as a page: a decoding error is short and clean.
    if let Err(e) = serde_json::from_slice::<ListRayClusterResponse>(rest) {
        let m = decode_error(&e);
        check_clean(&m, "decode error of raw bytes");
        assert!(m.chars().count() <= MAX_MESSAGE_CHARS + 64, "{m}");
    }
});
