//! The simulator's verifier and admin API, with requests built by hand (reqwest + the sign
//! module). (The `emr-sim` binary is tested in `sim/tests/`.)

use crate::support::{creds, sim};
use emr_ray_operator::api::Reason;
use emr_ray_operator::emr::client::{host_header, signed_headers};
use emr_ray_operator::emr::{
    ClientConfig, Credentials, EmrClient, EmrError, ErrorKind, SignatureVersion, sign,
};
use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_WORKSPACE, SimHandle};
use serde_json::Value;
use std::time::{Duration, SystemTime};

const SIGS: [SignatureVersion; 2] = [
    SignatureVersion::Acs3HmacSha256,
    SignatureVersion::RoaHmacSha1,
];

fn list_url(sim: &SimHandle, ws: &str, query: &str) -> url::Url {
    let mut u = sim.base_url();
    u.set_path(&format!(
        "/api/v1/workspaces/{}/rayCluster",
        sign::rfc3986_encode(ws)
    ));
    u.set_query(Some(query).filter(|q| !q.is_empty()));
    u
}

struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or("")
    }
}

async fn send(url: &url::Url, headers: &[(String, String)], body: Option<&'static str>) -> Answer {
    let mut req = reqwest::Client::new().get(url.clone());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.expect("JSON body");
    Answer {
        status,
        body,
        headers,
    }
}

fn set(h: &mut [(String, String)], name: &str, value: &str) {
    h.iter_mut()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no header {name}"))
        .1 = value.to_string();
}

fn signed(sig: SignatureVersion, url: &url::Url, c: &Credentials) -> Vec<(String, String)> {
    signed_headers(sig, "GET", url, "emr-sim-test", c, "ListRayCluster")
}

/// Re-signs `headers` (after edits) with `secret`, replacing `authorization`.
fn resign(
    sig: SignatureVersion,
    url: &url::Url,
    headers: &mut Vec<(String, String)>,
    secret: &str,
) {
    headers.retain(|(k, _)| k != "authorization");
    let query = sign::parse_query(url.query().unwrap_or(""));
    let auth = match sig {
        SignatureVersion::Acs3HmacSha256 => {
            let names = sign::acs3_default_signed_names(headers);
            let hashed = headers
                .iter()
                .find(|(k, _)| k == "x-acs-content-sha256")
                .unwrap()
                .1
                .clone();
            let s = sign::acs3_sign(
                &sign::Acs3Input {
                    method: "GET",
                    path: url.path(),
                    query: &query,
                    headers,
                    signed_headers: &names,
                    hashed_payload: &hashed,
                },
                secret,
            );
            sign::acs3_authorization(DEFAULT_ACCESS_KEY_ID, &s.signed_headers, &s.signature)
        }
        SignatureVersion::RoaHmacSha1 => {
            let sts = sign::roa_string_to_sign("GET", url.path(), &query, headers);
            sign::roa_authorization(DEFAULT_ACCESS_KEY_ID, &sign::roa_signature(secret, &sts))
        }
    };
    headers.push(("authorization".into(), auth));
}

#[test]
fn every_signature_vector_of_the_repo_copy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/signature-vectors.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let obj_pairs = |v: &Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, x) in v.as_object().into_iter().flatten() {
            match x {
                Value::Array(a) => out.extend(
                    a.iter()
                        .map(|s| (k.clone(), s.as_str().unwrap().to_string())),
                ),
                s => out.push((k.clone(), s.as_str().unwrap().to_string())),
            }
        }
        out
    };
    let mut n = 0;
    for t in v["roa_hmac_sha1"].as_array().unwrap() {
        let sig = sign::roa_signature(
            t["secret"].as_str().unwrap(),
            t["string_to_sign"].as_str().unwrap(),
        );
        if let Some(s) = t["signature"].as_str() {
            assert_eq!(sig, s);
        }
        if let Some(a) = t["authorization"].as_str() {
            assert_eq!(
                sign::roa_authorization(t["access_key_id"].as_str().unwrap(), &sig),
                a
            );
        }
        n += 1;
    }
    for t in v["roa_string_to_sign"].as_array().unwrap() {
        let sts = sign::roa_string_to_sign(
            t["method"].as_str().unwrap(),
            t["pathname"].as_str().unwrap(),
            &obj_pairs(&t["query"]),
            &obj_pairs(&t["headers"]),
        );
        assert_eq!(sts, t["string_to_sign"].as_str().unwrap());
        n += 1;
    }
    for t in v["acs3_hmac_sha256"].as_array().unwrap() {
        let headers = obj_pairs(&t["headers"]);
        let hashed = t["hashed_payload"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| sign::sha256_hex(t["body"].as_str().unwrap().as_bytes()));
        let names = sign::acs3_default_signed_names(&headers);
        let s = sign::acs3_sign(
            &sign::Acs3Input {
                method: t["method"].as_str().unwrap(),
                path: t["canonical_uri"].as_str().unwrap(),
                query: &obj_pairs(&t["query"]),
                headers: &headers,
                signed_headers: &names,
                hashed_payload: &hashed,
            },
            t["secret"].as_str().unwrap(),
        );
        if let Some(cr) = t["canonical_request"].as_str() {
            assert_eq!(s.canonical_request, cr);
        }
        assert_eq!(
            sign::acs3_authorization(
                t["access_key_id"].as_str().unwrap(),
                &s.signed_headers,
                &s.signature
            ),
            t["authorization"].as_str().unwrap()
        );
        n += 1;
    }
    assert_eq!(n, 9);
}

#[tokio::test]
async fn hand_signed_requests_are_accepted_and_shaped_like_the_reference() {
    let sim = sim().await;
    for sig in SIGS {
        let url = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=100");
        let a = send(&url, &signed(sig, &url, &creds()), None).await;
        assert_eq!(a.status, 200, "{sig:?}: {}", a.body);
        let rid = a.body["requestId"].as_str().unwrap();
        assert_eq!(a.headers["x-acs-request-id"].to_str().unwrap(), rid);
        let expected: Value = serde_json::from_str(emr_sim::REFERENCE_EXAMPLE).unwrap();
        assert_eq!(a.body["rayClusters"], expected["rayClusters"]);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn tampered_requests_are_rejected() {
    let sim = sim().await;
    for sig in SIGS {
        let url = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=100");
        // One changed (signed) header.
        let mut h = signed(sig, &url, &creds());
        set(
            &mut h,
            "x-acs-signature-nonce",
            "0123456789abcdef0123456789abcdef",
        );
        let a = send(&url, &h, None).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "SignatureDoesNotMatch"),
            "{sig:?} header"
        );
        // One changed query value.
        let h = signed(sig, &url, &creds());
        let other = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=99");
        let a = send(&other, &h, None).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "SignatureDoesNotMatch"),
            "{sig:?} query"
        );
        // Another path (workspace).
        let h = signed(sig, &url, &creds());
        let other = list_url(&sim, "w-other", "pageNum=1&pageSize=100");
        let a = send(&other, &h, None).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "SignatureDoesNotMatch"),
            "{sig:?} path"
        );
        // Wrong secret.
        let h = signed(sig, &url, &Credentials::new(DEFAULT_ACCESS_KEY_ID, "wrong"));
        let a = send(&url, &h, None).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "SignatureDoesNotMatch"),
            "{sig:?} secret"
        );
        // Error body shape.
        for k in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
            assert!(a.body[k].is_string(), "{k} in {}", a.body);
        }
        assert_eq!(a.body["HostId"].as_str().unwrap(), host_header(&url));
        // Re-signing the edited request with the right secret makes it valid again: the
        // verifier recomputes from what it received.
        let mut h = signed(sig, &url, &creds());
        set(
            &mut h,
            "x-acs-signature-nonce",
            &uuid::Uuid::new_v4().simple().to_string(),
        );
        resign(sig, &url, &mut h, DEFAULT_ACCESS_KEY_SECRET);
        assert_eq!(send(&url, &h, None).await.status, 200, "{sig:?} resigned");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn authorization_header_problems() {
    let sim = sim().await;
    let url = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=100");
    for sig in SIGS {
        let mut h = signed(sig, &url, &creds());
        h.retain(|(k, _)| k != "authorization");
        let a = send(&url, &h, None).await;
        assert_eq!((a.status, a.code()), (400, "IncompleteSignature"));
        for garbled in [
            "ACS3-HMAC-SHA256 Credential=x",
            "acs nocolon",
            "Bearer abc",
            "acs :",
        ] {
            let mut h = signed(sig, &url, &creds());
            set(&mut h, "authorization", garbled);
            let a = send(&url, &h, None).await;
            assert_eq!(
                (a.status, a.code()),
                (400, "IncompleteSignature"),
                "{garbled}"
            );
        }
        let h = signed(sig, &url, &Credentials::new("LTAI5tNobody", "x"));
        let a = send(&url, &h, None).await;
        assert_eq!((a.status, a.code()), (404, "InvalidAccessKeyId.NotFound"));
    }
    // V3: an x-acs-* header that is not signed.
    let mut h = signed(SignatureVersion::Acs3HmacSha256, &url, &creds());
    h.push(("x-acs-extra".into(), "1".into()));
    let a = send(&url, &h, None).await;
    assert_eq!((a.status, a.code()), (400, "IncompleteSignature"));
    assert_eq!(sim.state.stats().ok, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn timestamps_more_than_15_minutes_off_are_expired() {
    let sim = sim().await;
    let url = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=100");
    for offset in [-16i64 * 60, 16 * 60] {
        let when = if offset < 0 {
            SystemTime::now() - Duration::from_secs(offset.unsigned_abs())
        } else {
            SystemTime::now() + Duration::from_secs(offset as u64)
        };
        // V3
        let mut h = signed(SignatureVersion::Acs3HmacSha256, &url, &creds());
        let ts = jiff::Timestamp::try_from(when).unwrap();
        set(
            &mut h,
            "x-acs-date",
            &ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        resign(
            SignatureVersion::Acs3HmacSha256,
            &url,
            &mut h,
            DEFAULT_ACCESS_KEY_SECRET,
        );
        let a = send(&url, &h, None).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "InvalidTimeStamp.Expired"),
            "{offset}"
        );
        // ROA
        let mut h = signed(SignatureVersion::RoaHmacSha1, &url, &creds());
        set(&mut h, "date", &httpdate::fmt_http_date(when));
        resign(
            SignatureVersion::RoaHmacSha1,
            &url,
            &mut h,
            DEFAULT_ACCESS_KEY_SECRET,
        );
        let a = send(&url, &h, None).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "InvalidTimeStamp.Expired"),
            "{offset}"
        );
    }
    // 14 minutes off is fine.
    let mut h = signed(SignatureVersion::Acs3HmacSha256, &url, &creds());
    let ts = jiff::Timestamp::try_from(SystemTime::now() - Duration::from_secs(14 * 60)).unwrap();
    set(
        &mut h,
        "x-acs-date",
        &ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    resign(
        SignatureVersion::Acs3HmacSha256,
        &url,
        &mut h,
        DEFAULT_ACCESS_KEY_SECRET,
    );
    assert_eq!(send(&url, &h, None).await.status, 200);
    let e = EmrError::from_response(400, br#"{"Code":"InvalidTimeStamp.Expired"}"#, None, None);
    assert_eq!(Reason::from(e.kind).as_str(), "AuthenticationFailed");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reused_nonce_is_rejected() {
    let sim = sim().await;
    let url = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=100");
    for sig in SIGS {
        let h = signed(sig, &url, &creds());
        assert_eq!(send(&url, &h, None).await.status, 200);
        let a = send(&url, &h, None).await;
        assert_eq!((a.status, a.code()), (400, "SignatureNonceUsed"), "{sig:?}");
        let e = EmrError::from_response(a.status, a.body.to_string().as_bytes(), None, None);
        assert_eq!(e.kind, ErrorKind::Auth);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn content_sha256_must_match_the_body() {
    let sim = sim().await;
    let url = list_url(&sim, DEFAULT_WORKSPACE, "pageNum=1&pageSize=100");
    let h = signed(SignatureVersion::Acs3HmacSha256, &url, &creds());
    let a = send(&url, &h, Some("unexpected body")).await;
    assert_eq!((a.status, a.code()), (400, "SignatureDoesNotMatch"));
    sim.shutdown().await;
}

#[tokio::test]
async fn page_parameters() {
    let sim = sim().await;
    sim.state.generate("w-params", 25, "pp");
    // pageSize defaults to 20, pageNum to 1.
    let url = list_url(&sim, "w-params", "");
    let a = send(
        &url,
        &signed(SignatureVersion::Acs3HmacSha256, &url, &creds()),
        None,
    )
    .await;
    assert_eq!(a.body["rayClusters"].as_array().unwrap().len(), 20);
    let url = list_url(&sim, "w-params", "pageNum=2");
    let a = send(
        &url,
        &signed(SignatureVersion::RoaHmacSha1, &url, &creds()),
        None,
    )
    .await;
    assert_eq!(a.body["rayClusters"].as_array().unwrap().len(), 5);
    let url = list_url(&sim, "w-params", "pageNum=9&pageSize=100");
    let a = send(
        &url,
        &signed(SignatureVersion::Acs3HmacSha256, &url, &creds()),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["rayClusters"].as_array().unwrap().len(), 0);
    for q in [
        "pageSize=0",
        "pageSize=101",
        "pageSize=abc",
        "pageNum=0",
        "pageNum=-1",
    ] {
        let url = list_url(&sim, "w-params", q);
        let a = send(
            &url,
            &signed(SignatureVersion::Acs3HmacSha256, &url, &creds()),
            None,
        )
        .await;
        assert_eq!((a.status, a.code()), (400, "InvalidParameter"), "{q}");
        let e = EmrError::from_response(a.status, a.body.to_string().as_bytes(), None, None);
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert_eq!(Reason::from(e.kind).as_str(), "InvalidRequest");
        assert!(!e.is_retryable());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_api() {
    let sim = sim().await;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let admin = |p: &str| base.join(&format!("admin/{p}")).unwrap();
    let r: Value = http
        .post(admin("workspaces/w-adm/generate"))
        .json(&serde_json::json!({"count": 3, "prefix": "team"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["generated"], 3);
    let id = r["clusterIds"][0].as_str().unwrap().to_string();
    let list: Vec<Value> = http
        .get(admin("workspaces/w-adm/clusters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["name"], "team-0");
    assert!(list[0]["dashboardUrl"].as_str().unwrap().contains("token="));
    let s = http
        .put(admin(&format!("workspaces/w-adm/clusters/{id}/state")))
        .json(&serde_json::json!({"state": "Stopping"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 204);
    assert_eq!(
        sim.state.clusters("w-adm")[0]
            .state
            .as_ref()
            .unwrap()
            .as_str(),
        "Stopping"
    );
    let s = http
        .put(admin("workspaces/w-adm/clusters/ray-manual"))
        .json(&serde_json::json!({"name": "manual", "state": "Running"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 200);
    assert_eq!(sim.state.clusters("w-adm").len(), 4);
    let s = http
        .delete(admin(&format!("workspaces/w-adm/clusters/{id}")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 204);
    assert_eq!(sim.state.clusters("w-adm").len(), 3);
    // Faults round trip.
    http.put(admin("faults"))
        .json(&serde_json::json!({"throttleNext": 1, "throttleRetryAfterSecs": 1}))
        .send()
        .await
        .unwrap();
    let f: Value = http
        .get(admin("faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["throttleNext"], 1);
    assert_eq!(sim.state.faults().throttle_next, 1);
    // Stats.
    let url = list_url(&sim, "w-adm", "pageSize=100");
    let a = send(
        &url,
        &signed(SignatureVersion::Acs3HmacSha256, &url, &creds()),
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "Throttling.User"));
    assert_eq!(a.headers["x-acs-retry-after"], "1");
    let st: Value = http
        .get(admin("stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["requests"], 1);
    assert_eq!(st["faultsInjected"], 1);
    assert_eq!(st["byWorkspace"]["w-adm"], 1);
    http.delete(admin("stats")).send().await.unwrap();
    assert_eq!(sim.state.stats().requests, 0);
    // Access keys.
    http.post(admin("access-keys"))
        .json(&serde_json::json!({"accessKeyId": "LTAI5tSecond", "accessKeySecret": "s2"}))
        .send()
        .await
        .unwrap();
    let listing = EmrClient::new(ClientConfig::default())
        .unwrap()
        .list_ray_clusters(&base, "w-adm", &Credentials::new("LTAI5tSecond", "s2"))
        .await
        .unwrap();
    assert_eq!(listing.clusters.len(), 3);
    sim.shutdown().await;
}
