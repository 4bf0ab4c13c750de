//! A workspace's `regionId`/`network`/`endpoint` (tenant input) through `endpoint::resolve`, and
//! any endpoint text (the remote dashboard URL and gRPC endpoint) through `redact_endpoint`.
#![no_main]

use emr_ray_operator::emr::endpoint::{EndpointPattern, EndpointPolicy, resolve, valid_region};
use emr_ray_operator::emr::redact::redact_endpoint;
use libfuzzer_sys::fuzz_target;

fn check_redacted(raw: &str, shown: &str) {
    assert!(!shown.contains(['?', '#']), "{raw:?} -> {shown:?}");
    if let Ok(u) = url::Url::parse(shown) {
        assert!(
            u.username().is_empty() && u.password().is_none(),
            "user info kept: {raw:?} -> {shown:?}"
        );
    }
    if let Ok(u) = url::Url::parse(raw.trim())
        && u.has_host()
    {
        // A URL keeps its scheme, host and port.
        assert!(shown.starts_with(u.scheme()), "{raw:?} -> {shown:?}");
        if let Some(h) = u.host_str() {
            assert!(shown.contains(h), "{raw:?} -> {shown:?}");
        }
        // A redacted URL stays as it is. (Text that is not a URL may still change on a second
        // pass, e.g. `FILE://u@H/x` becomes the URL `file://h/x`, and so may a `file:` URL whose
        // path starts with a drive letter, which the URL parser re-reads without its host.)
        if url::Url::parse(shown).is_ok_and(|u| u.has_host()) {
            assert_eq!(redact_endpoint(shown), shown, "idempotent: {raw:?}");
        }
    }
    let again = redact_endpoint(shown);
    assert!(!again.contains(['?', '#']), "{raw:?} -> {again:?}");
    if let Ok(u) = url::Url::parse(&again) {
        assert!(
            u.username().is_empty() && u.password().is_none(),
            "{raw:?} -> {again:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (region, explicit) = match text.split_once('\n') {
        Some((r, e)) => (r, Some(e)),
        None => (text, None),
    };
    let vpc = flags & 1 != 0;
    let explicit = explicit.filter(|_| flags & 2 != 0);

    check_redacted(text, &redact_endpoint(text));
    if let Some(e) = explicit {
        check_redacted(e, &redact_endpoint(e));
    }

    // An endpoint pattern (operator flag, EmrClusterCredentials.allowedEndpoints): parsing and
    // matching never panic, and what parses prints back as itself.
    if let Ok(p) = region.parse::<EndpointPattern>() {
        assert_eq!(
            p.to_string().parse::<EndpointPattern>().ok(),
            Some(p.clone())
        );
        if let Some(Ok(u)) = explicit.map(url::Url::parse) {
            let _ = p.matches(&u);
        }
    }

    match resolve(region, vpc, explicit) {
        Ok(url) => {
            // By default credentials go only to the official https endpoints.
            if EndpointPolicy::default().allows(&url) {
                assert_eq!(url.scheme(), "https", "{url}");
                assert!(
                    url.host_str().is_some_and(|h| h.ends_with(".aliyuncs.com")),
                    "{url}"
                );
            }
            assert!(matches!(url.scheme(), "http" | "https"), "{url}");
            assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{url}");
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "{url}"
            );
            assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
            // What is resolved is already redacted, and resolves to itself.
            assert_eq!(redact_endpoint(url.as_str()), url.as_str());
            let again = resolve("", false, Some(url.as_str())).expect("a resolved URL resolves");
            assert_eq!(again, url);
            if explicit.is_none_or(|e| e.trim().is_empty()) {
                assert!(valid_region(region));
                let prefix = if vpc {
                    "emr-serverless-spark-vpc."
                } else {
                    "emr-serverless-spark."
                };
                assert_eq!(
                    url.host_str(),
                    Some(format!("{prefix}{region}.aliyuncs.com").as_str())
                );
            }
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
