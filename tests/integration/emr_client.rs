//! The EMR client against the in-process simulator, over HTTP.

use crate::common;
use crate::support::{creds, sim};
use emr_ray_operator::api::Reason;
use emr_ray_operator::emr::{
    ClientConfig, CredentialResolver, CredentialSource, Credentials, EmrClient, ErrorKind,
    RequestOutcome, RrsaConfig, SignatureVersion,
};
use emr_sim::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_WORKSPACE, Faults, SimState,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fast retries, generous rate limit: tests control timing explicitly.
fn cfg() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        listing_timeout: Duration::from_secs(30),
        requests_per_second: 1000.0,
        burst: 1000,
        ..ClientConfig::default()
    }
}

fn client(c: ClientConfig) -> EmrClient {
    EmrClient::new(c).expect("client")
}

/// Records every attempt's outcome code.
fn recording(c: &mut ClientConfig) -> Arc<Mutex<Vec<RequestOutcome>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    c.observer = Some(Arc::new(move |o: &RequestOutcome| {
        s.lock().unwrap().push(o.clone())
    }));
    seen
}

fn codes(seen: &Arc<Mutex<Vec<RequestOutcome>>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|o| o.code.clone())
        .collect()
}

#[tokio::test]
async fn lists_reference_example_with_both_signatures() {
    let sim = sim().await;
    for sig in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RoaHmacSha1,
    ] {
        let mut c = cfg();
        c.signature = sig;
        let seen = recording(&mut c);
        let listing = client(c)
            .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
            .await
            .unwrap_or_else(|e| panic!("{sig:?}: {e}"));
        assert_eq!(listing.clusters.len(), 1);
        assert_eq!(listing.pages, 1);
        assert_eq!(listing.requests, 1);
        assert_eq!(listing.request_ids.len(), 1);
        assert_eq!(codes(&seen), vec!["200"]);
        let c = &listing.clusters[0];
        assert_eq!(c.cluster_id, "ray-uiulpgow9xljimm1");
        assert_eq!(c.worker_spec.as_ref().unwrap()[0].max_replica, Some(10));
    }
    let st = sim.state.stats();
    assert_eq!((st.requests, st.ok, st.rejected_auth), (2, 2, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn sts_credentials_with_security_token() {
    let sim = sim().await;
    sim.state
        .add_sts_credentials("STS.key", "sts-secret", "CAIStoken", None);
    let ok = Credentials::new("STS.key", "sts-secret").with_security_token("CAIStoken");
    for sig in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RoaHmacSha1,
    ] {
        let c = client(ClientConfig {
            signature: sig,
            ..cfg()
        });
        c.list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &ok)
            .await
            .unwrap();
        let no_token = Credentials::new("STS.key", "sts-secret");
        let e = c
            .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &no_token)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth, "{e}");
        let wrong = Credentials::new("STS.key", "sts-secret").with_security_token("CAISother");
        let e = c
            .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &wrong)
            .await
            .unwrap_err();
        assert_eq!(
            e.code.as_deref(),
            Some("InvalidSecurityToken.MismatchWithAccessKey")
        );
        assert!(!format!("{e} {e:?}").contains("CAISother"));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn rrsa_assume_role_with_oidc_against_simulator() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.payload.sig\n").unwrap();
    let rrsa = RrsaConfig {
        role_arn: "acs:ram::1234567890:role/emr-ray".into(),
        oidc_provider_arn: "acs:ram::1234567890:oidc-provider/ack-rrsa-c1".into(),
        token_file: token_file.clone(),
        session_name: "emr-ray-operator".into(),
        sts_endpoint: Some(sim.base_url()),
        duration_seconds: 3600,
    };
    let resolver = CredentialResolver::default();
    let src = CredentialSource::Rrsa(rrsa.clone());
    let c1 = resolver.resolve(&src).await.unwrap();
    assert!(c1.access_key_id.starts_with("STS."));
    assert!(c1.security_token.is_some());
    // Cached: no second STS call.
    let c2 = resolver.resolve(&src).await.unwrap();
    assert_eq!(c1.access_key_id, c2.access_key_id);
    assert_eq!(sim.state.stats().sts_requests, 1);
    let listing = client(cfg())
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &c1)
        .await
        .unwrap();
    assert_eq!(listing.clusters.len(), 1);
    // Missing token file → CredentialsUnavailable.
    let bad = CredentialSource::Rrsa(RrsaConfig {
        token_file: dir.path().join("missing"),
        ..rrsa
    });
    let e = CredentialResolver::default()
        .resolve(&bad)
        .await
        .unwrap_err();
    assert_eq!(Reason::from(e.kind).as_str(), "CredentialsUnavailable");
    assert_eq!(
        e.kind,
        ErrorKind::Credentials,
        "no STS call: a local failure"
    );
    assert_eq!(sim.state.stats().sts_requests, 1, "STS was not called");
    // STS refuses (an OIDC provider it does not know): the same reason, but STS was called —
    // a remote failure, whose backoff a requested sync waits for.
    sim.state.add_oidc_provider(
        "acs:ram::1234567890:oidc-provider/another",
        emr_sim::oidc::OidcProvider {
            issuer: "https://issuer.example".into(),
            client_ids: vec!["sts.aliyuncs.com".into()],
            jwks: jsonwebtoken::jwk::JwkSet { keys: vec![] },
        },
    );
    let e = CredentialResolver::default()
        .resolve(&src)
        .await
        .unwrap_err();
    assert_eq!(Reason::from(e.kind).as_str(), "CredentialsUnavailable");
    assert_eq!(e.kind, ErrorKind::Sts, "{}", e.message);
    assert_eq!(e.code.as_deref(), Some("EntityNotExist.OIDCProvider"));
    assert_eq!(sim.state.stats().sts_requests, 2);
    sim.shutdown().await;
}

/// 0→1, 1→1, 99→1, 100→2, 101→2, 250→3 requests.
#[tokio::test]
async fn paging_uses_the_minimal_number_of_requests() {
    let sim = sim().await;
    let c = client(cfg());
    for (n, expected_requests) in [(0, 1), (1, 1), (99, 1), (100, 2), (101, 2), (250, 3)] {
        let ws = format!("w-paging{n}");
        sim.state.ensure_workspace(&ws);
        let ids = sim.state.generate(&ws, n, "p");
        sim.state.reset_stats();
        let listing = c
            .list_ray_clusters(&sim.base_url(), &ws, &creds())
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        let got: Vec<String> = listing
            .clusters
            .iter()
            .map(|c| c.cluster_id.clone())
            .collect();
        assert_eq!(got, ids, "{n} clusters in order");
        let st = sim.state.stats();
        assert_eq!(st.requests, expected_requests, "{n} clusters");
        assert_eq!(st.by_workspace[&ws], expected_requests);
        assert_eq!(listing.requests as u64, expected_requests);
        assert_eq!(listing.pages as u64, expected_requests);
        assert_eq!(listing.request_ids.len() as u64, expected_requests);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn configurable_page_size_and_encoded_workspace_id() {
    let sim = sim().await;
    let ws = "w x*y~ü/z";
    sim.state.generate(ws, 7, "enc");
    for sig in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RoaHmacSha1,
    ] {
        sim.state.reset_stats();
        let listing = client(ClientConfig {
            page_size: 3,
            signature: sig,
            ..cfg()
        })
        .list_ray_clusters(&sim.base_url(), ws, &creds())
        .await
        .unwrap_or_else(|e| panic!("{sig:?}: {e}"));
        assert_eq!(listing.clusters.len(), 7);
        assert_eq!(sim.state.stats().requests, 3);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn max_pages_is_a_hard_limit() {
    let sim = sim().await;
    sim.state.generate("w-big", 250, "big");
    let e = client(ClientConfig {
        max_pages: 2,
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), "w-big", &creds())
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Incomplete);
    assert_eq!(Reason::from(e.kind).as_str(), "IncompleteListing");
    assert_eq!(sim.state.stats().requests, 2);
    sim.shutdown().await;
}

// ----- error classes -----

#[tokio::test]
async fn wrong_secret_is_auth_and_not_retried() {
    let sim = sim().await;
    let mut c = cfg();
    let seen = recording(&mut c);
    let bad = Credentials::new(DEFAULT_ACCESS_KEY_ID, "definitely-wrong-secret");
    for sig in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RoaHmacSha1,
    ] {
        sim.state.reset_stats();
        let e = client(ClientConfig {
            signature: sig,
            ..c.clone()
        })
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &bad)
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(Reason::from(e.kind).as_str(), "AuthenticationFailed");
        assert_eq!(e.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(e.http_status, Some(400));
        assert!(e.request_id.is_some());
        assert!(!e.is_retryable());
        let text = format!("{e} {e:?}");
        assert!(!text.contains("definitely-wrong-secret"), "{text}");
        assert!(!text.contains(DEFAULT_ACCESS_KEY_SECRET));
        let st = sim.state.stats();
        assert_eq!((st.requests, st.rejected_auth), (1, 1));
    }
    assert_eq!(codes(&seen), vec!["SignatureDoesNotMatch"; 2]);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_access_key() {
    let sim = sim().await;
    let e = client(cfg())
        .list_ray_clusters(
            &sim.base_url(),
            DEFAULT_WORKSPACE,
            &Credentials::new("LTAI5tUnknown", "x"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.code.as_deref(), Some("InvalidAccessKeyId.NotFound"));
    assert_eq!(e.http_status, Some(404));
    assert_eq!(sim.state.stats().requests, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_workspace_is_not_found() {
    let sim = sim().await;
    let e = client(cfg())
        .list_ray_clusters(&sim.base_url(), "w-doesnotexist", &creds())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(Reason::from(e.kind).as_str(), "WorkspaceNotFound");
    assert_eq!(sim.state.stats().requests, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn endpoint_without_simulator_is_remote_unavailable() {
    // A port that was just free: connection refused, retried, then RemoteUnavailable.
    let port = common::free_port();
    let mut c = cfg();
    c.max_retries = 1;
    let seen = recording(&mut c);
    let e = client(c)
        .list_ray_clusters(
            &url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            "w-1",
            &creds(),
        )
        .await
        .unwrap_err();
    assert_eq!(Reason::from(e.kind).as_str(), "RemoteUnavailable", "{e}");
    assert_eq!(codes(&seen), vec!["connect", "connect"]);
}

// ----- faults -----

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let sim = sim().await;
    sim.state.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let mut c = cfg();
    // Clear the fault as soon as the client has seen one 5xx: deterministic "fail, then succeed".
    let st: SimState = sim.state.clone();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    c.observer = Some(Arc::new(move |o: &RequestOutcome| {
        s2.lock().unwrap().push(o.code.clone());
        if o.http_status.is_some_and(|s| s >= 500) {
            st.set_faults(Faults::default());
        }
    }));
    let listing = client(c)
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
        .await
        .unwrap();
    assert_eq!(listing.clusters.len(), 1);
    assert_eq!(listing.requests, 2);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0] == "ServiceUnavailable" || seen[0] == "InternalError",
        "{seen:?}"
    );
    assert_eq!(seen[1], "200");
    assert_eq!(sim.state.stats().faults_injected, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn persistent_server_errors_fail_after_retries() {
    let sim = sim().await;
    sim.state.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let e = client(ClientConfig {
        max_retries: 2,
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(Reason::from(e.kind).as_str(), "RemoteUnavailable");
    assert!(e.is_retryable());
    assert_eq!(sim.state.stats().requests, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let sim = sim().await;
    sim.state.set_faults(Faults {
        throttle_next: 2,
        throttle_retry_after_secs: 1,
        ..Faults::default()
    });
    let mut c = cfg();
    let seen = recording(&mut c);
    let t0 = Instant::now();
    let listing = client(c)
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
        .await
        .unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(listing.clusters.len(), 1);
    assert_eq!(listing.requests, 3);
    assert_eq!(
        codes(&seen),
        vec!["Throttling.User", "Throttling.User", "200"]
    );
    assert!(
        elapsed >= Duration::from_millis(1950),
        "waited {elapsed:?}, expected 2 x 1s"
    );
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn persistent_throttling_is_reported() {
    let sim = sim().await;
    sim.state.set_faults(Faults {
        throttle_rate: 1.0,
        throttle_retry_after_secs: 1,
        ..Faults::default()
    });
    let e = client(ClientConfig {
        max_retries: 1,
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(Reason::from(e.kind).as_str(), "Throttled");
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(sim.state.stats().requests, 2);
    // A retry-after beyond the listing deadline is not waited for.
    sim.state.set_faults(Faults {
        throttle_rate: 1.0,
        throttle_retry_after_secs: 60,
        ..Faults::default()
    });
    let t0 = Instant::now();
    let e = client(ClientConfig {
        listing_timeout: Duration::from_secs(5),
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert!(t0.elapsed() < Duration::from_secs(2));
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_above_request_timeout_is_timeout() {
    let sim = sim().await;
    sim.state.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let mut c = ClientConfig {
        request_timeout: Duration::from_millis(300),
        max_retries: 1,
        ..cfg()
    };
    let seen = recording(&mut c);
    let e = client(c)
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert_eq!(Reason::from(e.kind).as_str(), "Timeout");
    assert_eq!(codes(&seen), vec!["timeout", "timeout"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn listing_timeout_bounds_the_whole_listing() {
    let sim = sim().await;
    sim.state.generate("w-slow", 300, "slow");
    sim.state.set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    let t0 = Instant::now();
    let e = client(ClientConfig {
        listing_timeout: Duration::from_millis(1000),
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), "w-slow", &creds())
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < Duration::from_millis(1500));
    sim.shutdown().await;
}

#[tokio::test]
async fn persistent_truncated_or_malformed_bodies_are_malformed() {
    let sim = sim().await;
    for faults in [
        Faults {
            truncated_body_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            malformed_body_rate: 1.0,
            ..Faults::default()
        },
    ] {
        sim.state.set_faults(faults.clone());
        sim.state.reset_stats();
        let mut c = cfg();
        let seen = recording(&mut c);
        let e = client(c)
            .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed, "{faults:?}: {e}");
        assert_eq!(Reason::from(e.kind).as_str(), "MalformedResponse");
        // One attempt plus two retries.
        assert_eq!(codes(&seen), vec!["malformed"; 3], "{faults:?}");
        assert_eq!(sim.state.stats().requests, 3);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_transient_malformed_body_is_retried() {
    let sim = sim().await;
    sim.state.set_faults(Faults {
        truncated_body_rate: 1.0,
        ..Faults::default()
    });
    let st = sim.state.clone();
    let mut c = cfg();
    c.observer = Some(Arc::new(move |o: &RequestOutcome| {
        if o.code == "malformed" {
            st.set_faults(Faults::default());
        }
    }));
    let listing = client(c)
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
        .await
        .unwrap();
    assert_eq!((listing.clusters.len(), listing.requests), (1, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn repeated_page_is_an_incomplete_listing() {
    let sim = sim().await;
    sim.state.generate("w-rep", 150, "rep");
    sim.state.set_faults(Faults {
        repeat_page: true,
        ..Faults::default()
    });
    let e = client(cfg())
        .list_ray_clusters(&sim.base_url(), "w-rep", &creds())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Incomplete, "{e}");
    assert_eq!(Reason::from(e.kind).as_str(), "IncompleteListing");
    assert!(e.request_id.is_some());
    assert_eq!(sim.state.stats().requests, 2);
    sim.shutdown().await;
}

/// `end_early`: after page 1 the server answers an empty page although more clusters exist.
/// After a FULL page, an empty page is exactly what a workspace of 100 clusters looks like: the
/// reference gives no total count, so the client cannot detect it and returns page 1's clusters.
/// What the client does guarantee: no duplicates, pages in order, and it stops at the empty page
/// (it does not invent or drop anything it received).
#[tokio::test]
async fn ending_early_after_a_full_page_is_undetectable() {
    let sim = sim().await;
    let ids = sim.state.generate("w-early", 250, "early");
    sim.state.set_faults(Faults {
        end_early: true,
        ..Faults::default()
    });
    let listing = client(cfg())
        .list_ray_clusters(&sim.base_url(), "w-early", &creds())
        .await
        .unwrap();
    let got: Vec<String> = listing
        .clusters
        .iter()
        .map(|c| c.cluster_id.clone())
        .collect();
    assert_eq!(got, ids[..100].to_vec());
    assert_eq!((listing.pages, listing.requests), (2, 2));
    assert_eq!(sim.state.stats().faults_injected, 1);
    // With fewer than one page the fault has no effect: the listing is complete.
    sim.state.generate("w-early-small", 42, "s");
    let listing = client(cfg())
        .list_ray_clusters(&sim.base_url(), "w-early-small", &creds())
        .await
        .unwrap();
    assert_eq!(listing.clusters.len(), 42);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_is_shared_by_all_callers() {
    let sim = sim().await;
    for i in 0..12 {
        sim.state.generate(&format!("w-rl{i}"), 150, "rl");
    }
    sim.state.reset_stats();
    let (rps, burst) = (5.0, 5u32);
    let c = client(ClientConfig {
        requests_per_second: rps,
        burst,
        ..cfg()
    });
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let c = c.clone();
            let url = sim.base_url();
            tokio::spawn(async move {
                c.list_ray_clusters(&url, &format!("w-rl{i}"), &creds())
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().clusters.len(), 150);
    }
    let st = sim.state.stats();
    assert_eq!(st.requests, 24);
    // GCRA: at most `burst` at once plus `rps` per second; +2 absorbs scheduling jitter between
    // the client's permit and the server's clock. Without the limiter all 24 land within a second.
    assert!(
        st.max_requests_in_any_second <= burst as u64 + rps as u64 + 2,
        "{st:?}"
    );
    // 24 requests, 5 of them burst, the other 19 at 5/s: at least ~3.8s.
    assert!(
        t0.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        t0.elapsed()
    );
    sim.shutdown().await;
}

/// What one listing reads is bounded in bytes, whatever its page count: a listing one byte
/// over `max_listing_bytes` fails with `TooManyClusters` on the page that crosses it, reading
/// no further and retrying nothing; exactly at the limit it succeeds.
#[tokio::test]
async fn listing_bytes_are_bounded() {
    let sim = sim().await;
    let ws = "w-bytes";
    sim.state.ensure_workspace(ws);
    sim.state.generate(ws, 250, "b");
    let total = client(cfg())
        .list_ray_clusters(&sim.base_url(), ws, &creds())
        .await
        .unwrap();
    assert_eq!(total.pages, 3);
    assert!(total.bytes > 0);

    let at_limit = client(ClientConfig {
        max_listing_bytes: total.bytes,
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), ws, &creds())
    .await
    .expect("a listing of exactly the limit");
    assert_eq!(at_limit.clusters.len(), 250);

    sim.state.reset_stats();
    let err = client(ClientConfig {
        max_listing_bytes: total.bytes - 1,
        ..cfg()
    })
    .list_ray_clusters(&sim.base_url(), ws, &creds())
    .await
    .expect_err("one byte over the limit");
    assert_eq!(err.kind, ErrorKind::TooManyClusters);
    assert!(
        err.message.contains("--max-listing-bytes"),
        "{}",
        err.message
    );
    assert!(err.message.contains("after 2 pages"), "{}", err.message);
    assert_eq!(sim.state.stats().requests, 3, "no retry, no further page");
    sim.shutdown().await;
}

/// What all listings hold at once is bounded, and one budget key (namespace) holds at most its
/// share: a listing that would hold more fails at once as throttled (nothing read, nothing
/// waited for); once the others finish, the same listing goes through.
#[tokio::test]
async fn bytes_held_by_all_listings_at_once_are_bounded() {
    const MIB: usize = 1024 * 1024;
    let sim = sim().await;
    let ws = "w-inflight";
    sim.state.ensure_workspace(ws);
    sim.state.generate(ws, 250, "f");
    // Every request takes 400 ms: the first listing is inside its first page while the others
    // start.
    sim.state.set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    // Each page may be 1 MiB: a listing reading a page holds 1 MiB + what it read. 2.5 MiB in
    // all, 1.25 MiB per namespace.
    let c = client(ClientConfig {
        max_body_bytes: MIB,
        max_listing_bytes_in_flight: 5 * MIB / 2,
        budget_share: 0.5,
        ..cfg()
    });
    let url = sim.base_url();
    let list = |key: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.list_ray_clusters_within(Some(key), &url, ws, &creds())
                .await
        }
    };
    // A listing holds its bytes before it sends: once its request has reached the simulator.
    // (Polled often: all of this happens within the first page's 400 ms.)
    let state = &sim.state;
    let arrived = |n: u64| async move {
        common::poll(Duration::from_secs(5), Duration::from_millis(5), || async {
            let seen = state.stats().arrived;
            if seen >= n { Ok(()) } else { Err(seen) }
        })
        .await
        .unwrap_or_else(|seen| panic!("{seen} requests arrived, waiting for {n}"))
    };
    let first = tokio::spawn(list("a"));
    arrived(1).await;
    let t0 = std::time::Instant::now();
    let same_namespace = list("a").await.expect_err("namespace a holds its share");
    assert_eq!(same_namespace.kind, ErrorKind::Throttled);
    assert!(
        same_namespace
            .message
            .contains("this namespace's listings hold 1.0 MiB of 1.2 MiB")
            && same_namespace
                .message
                .contains("--max-listing-bytes-in-flight"),
        "{}",
        same_namespace.message
    );
    assert!(t0.elapsed() < Duration::from_millis(300), "refused at once");
    let other = tokio::spawn(list("b"));
    arrived(2).await;
    let over_all = list("c")
        .await
        .expect_err("2 MiB held, 3 would be over 2.5");
    assert_eq!(over_all.kind, ErrorKind::Throttled);
    assert!(
        over_all
            .message
            .contains("all listings hold 2.0 MiB of 2.5 MiB"),
        "{}",
        over_all.message
    );
    assert_eq!(first.await.unwrap().unwrap().clusters.len(), 250);
    assert_eq!(other.await.unwrap().unwrap().clusters.len(), 250);
    // Released: the refused listings now go through.
    assert_eq!(list("a").await.unwrap().clusters.len(), 250);
    assert_eq!(list("c").await.unwrap().clusters.len(), 250);
    sim.shutdown().await;
}

/// One credential identity (AccessKey ID) sends at most its rate, whichever namespaces use it,
/// and one namespace at most its share of it: tenants sharing cluster credentials cannot get
/// them throttled for each other. Lower bounds only (a rate limit guarantees them).
#[tokio::test]
async fn one_credential_identity_keeps_its_rate_whatever_the_namespaces() {
    let sim = sim().await;
    let ws = "w-identity";
    sim.state.ensure_workspace(ws);
    // pageSize 1: 21 requests a listing.
    sim.state.generate(ws, 20, "i");
    let url = sim.base_url();
    let run = |share: f64| {
        client(ClientConfig {
            page_size: 1,
            burst: 2,
            budget_share: share,
            // The operator-wide budget does not bite: the identity's does.
            identity_requests_per_second: Some(20.0),
            ..cfg()
        })
    };
    let list = |c: &EmrClient, ns: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.list_ray_clusters_within(Some(ns), &url, ws, &creds())
                .await
                .unwrap()
        }
    };
    // Alone, a namespace gets half the identity's rate: 21 requests at 10/s.
    let half = run(0.5);
    let t0 = Instant::now();
    assert_eq!(list(&half, "a").await.requests, 21);
    assert!(
        t0.elapsed() >= Duration::from_millis(1700),
        "{:?}",
        t0.elapsed()
    );
    // Two namespaces on one identity share its 20/s: 42 requests take about 2 s, although
    // each namespace alone could send 20/s.
    let whole = run(1.0);
    let t0 = Instant::now();
    let (a, b) = tokio::join!(list(&whole, "a"), list(&whole, "b"));
    assert_eq!(a.requests + b.requests, 42);
    assert!(
        t0.elapsed() >= Duration::from_millis(1700),
        "{:?}",
        t0.elapsed()
    );
    sim.shutdown().await;
}

const EXAMPLE: &str = "ray-uiulpgow9xljimm1";

fn oom_detail() -> emr_sim::ClusterDetail {
    serde_json::from_value(serde_json::json!({
        "instances": [{"type": "head", "containerStateReason": "OOMKilled",
                       "containerExitCode": 137, "createTime": 1723722279800i64}],
        "submitToken": "secret-token",
    }))
    .unwrap()
}

#[tokio::test]
async fn get_ray_cluster_with_both_signatures_decodes_only_the_instances() {
    let sim = sim().await;
    assert!(
        sim.state
            .set_detail(DEFAULT_WORKSPACE, EXAMPLE, oom_detail())
    );
    for sig in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RoaHmacSha1,
    ] {
        let mut c = cfg();
        c.signature = sig;
        let seen = recording(&mut c);
        let d = client(c)
            .get_ray_cluster_within(None, &sim.base_url(), DEFAULT_WORKSPACE, EXAMPLE, &creds())
            .await
            .unwrap_or_else(|e| panic!("{sig:?}: {e}"));
        assert_eq!(d.cluster_id, EXAMPLE);
        assert!(d.request_id.is_some());
        let i = &d.instances.as_ref().unwrap()[0];
        assert_eq!(i.container_state_reason.as_deref(), Some("OOMKilled"));
        assert_eq!(i.container_exit_code, Some(137));
        assert!(!format!("{d:?}").contains("secret-token"));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].operation, seen[0].code.as_str()),
            ("GetRayCluster", "200")
        );
    }
    let st = sim.state.stats();
    assert_eq!((st.requests, st.ok, st.rejected_auth), (2, 2, 0));
    assert_eq!(st.by_action["GetRayCluster"], 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn get_ray_cluster_refusals_and_faults() {
    let sim = sim().await;
    let get = |c: ClientConfig, creds: Credentials, id: &'static str| {
        let url = sim.base_url();
        async move {
            client(c)
                .get_ray_cluster_within(Some("ns"), &url, DEFAULT_WORKSPACE, id, &creds)
                .await
        }
    };
    // An unknown cluster: 404, not retried.
    let e = get(cfg(), creds(), "ray-nope").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.code.as_deref(), Some("InvalidRayClusterId.NotFound"));
    assert_eq!(sim.state.stats().requests, 1);
    // A wrong secret: refused by the signature check, not retried.
    let e = get(
        cfg(),
        Credentials::new(DEFAULT_ACCESS_KEY_ID, "wrong"),
        EXAMPLE,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(sim.state.stats().rejected_auth, 1);
    // Throttled with x-acs-retry-after: waited for, then answered.
    sim.state.reset_stats();
    sim.state.set_faults(Faults {
        throttle_next: 1,
        throttle_retry_after_secs: 1,
        ..Faults::default()
    });
    let t0 = Instant::now();
    get(cfg(), creds(), EXAMPLE).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(sim.state.stats().by_action["GetRayCluster"], 2);
    // Persistent 5xx on GetRayCluster only: retried max_retries times, then reported.
    sim.state.reset_stats();
    sim.state.set_faults(Faults {
        server_error_rate: 1.0,
        actions: vec!["GetRayCluster".into()],
        ..Faults::default()
    });
    let e = get(cfg(), creds(), EXAMPLE).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(sim.state.stats().requests, u64::from(cfg().max_retries) + 1);
    client(cfg())
        .list_ray_clusters(&sim.base_url(), DEFAULT_WORKSPACE, &creds())
        .await
        .expect("the listing is not faulted");
    // A body over the cap fails as malformed without being read whole.
    sim.state.set_faults(Faults::default());
    let mut big = oom_detail();
    big.instances[0].message = Some("m".repeat(64 * 1024));
    assert!(sim.state.set_detail(DEFAULT_WORKSPACE, EXAMPLE, big));
    let e = get(
        ClientConfig {
            max_body_bytes: 16 * 1024,
            ..cfg()
        },
        creds(),
        EXAMPLE,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Malformed);
    assert!(e.message.contains("larger than the limit"), "{e}");
    sim.shutdown().await;
}

/// A listing given the digests of the last one decodes nothing when every page is as it was
/// (each answer has its own request ID), and everything when one page changed.
#[tokio::test]
async fn an_unchanged_listing_is_told_by_its_page_digests() {
    let sim = sim().await;
    let ws = "w-digests";
    let ids = sim.state.generate(ws, 250, "d");
    let c = client(cfg());
    let url = sim.base_url();
    let first = c
        .list_ray_clusters_since(None, &url, ws, &creds(), None)
        .await
        .unwrap();
    assert!(!first.unchanged);
    assert_eq!((first.clusters.len(), first.digests.len()), (250, 3));
    let again = c
        .list_ray_clusters_since(None, &url, ws, &creds(), Some(&first.digests))
        .await
        .unwrap();
    assert!(again.unchanged, "same pages, other request IDs");
    assert!(again.clusters.is_empty(), "nothing decoded");
    assert_eq!((again.requests, again.request_ids.len()), (3, 3));
    assert_eq!(again.digests, first.digests);
    // One cluster of the second page changes: every page is decoded, in order.
    assert!(sim.state.set_state(ws, &ids[150], "Resizing".into()));
    let changed = c
        .list_ray_clusters_since(None, &url, ws, &creds(), Some(&first.digests))
        .await
        .unwrap();
    assert!(!changed.unchanged);
    let got: Vec<&str> = changed
        .clusters
        .iter()
        .map(|c| c.cluster_id.as_str())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(changed.digests, first.digests);
    // A cluster more: the last page differs and is decoded with the others.
    sim.state.generate(ws, 1, "e");
    let grown = c
        .list_ray_clusters_since(None, &url, ws, &creds(), Some(&changed.digests))
        .await
        .unwrap();
    assert!(!grown.unchanged);
    assert_eq!(grown.clusters.len(), 251);
    sim.shutdown().await;
}
