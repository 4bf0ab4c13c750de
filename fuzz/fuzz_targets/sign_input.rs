//! The request parts the simulator's verifier canonicalises from what it received (raw query,
//! raw path, `Authorization`), with the same `sign` functions the client signs with.
#![no_main]

use emr_ray_operator::emr::sign::{
    acs3_canonical_headers, canonical_query, canonical_uri, parse_acs3_authorization, parse_query,
    parse_roa_authorization, roa_string_to_sign,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (path, query, auth) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );

    // Canonical URI: only unreserved characters, `/` and upper-case `%XX`; idempotent.
    let uri = canonical_uri(path);
    assert!(
        uri.bytes()
            .all(|b| b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b'%')),
        "{path:?} -> {uri:?}"
    );
    assert_eq!(canonical_uri(&uri), uri, "{path:?}");

    // Canonical query: decoding it again gives the same pairs, sorted.
    let pairs = parse_query(query);
    let canonical = canonical_query(&pairs);
    let mut reparsed = parse_query(&canonical);
    let mut sorted = pairs.clone();
    sorted.sort_by_key(|(k, v)| {
        (
            emr_ray_operator::emr::sign::rfc3986_encode(k),
            emr_ray_operator::emr::sign::rfc3986_encode(v),
        )
    });
    reparsed.retain(|(k, v)| !(k.is_empty() && v.is_empty()));
    sorted.retain(|(k, v)| !(k.is_empty() && v.is_empty()));
    assert_eq!(reparsed, sorted, "{query:?} -> {canonical:?}");
    assert_eq!(canonical_query(&parse_query(&canonical)), canonical);

    let headers: Vec<(String, String)> = auth
        .split('\n')
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    if let Some(a) = parse_acs3_authorization(auth) {
        assert!(!a.access_key_id.is_empty() && !a.signature.is_empty());
        let _ = acs3_canonical_headers(&headers, &a.signed_headers);
    }
    if let Some((id, sig)) = parse_roa_authorization(auth) {
        assert!(!id.is_empty() && !sig.is_empty());
    }
    let _ = roa_string_to_sign("GET", path, &pairs, &headers);
});
