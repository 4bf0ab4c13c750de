//! What goes over the wire for one page: the signed request headers, and the response read
//! (bounded) and classified into clusters or an error with its outcome code.

use super::{SignatureVersion, parse_retry_after};
use crate::emr::error::{EmrError, ErrorKind};
use crate::emr::job::ListRayJobResponse;
use crate::emr::model::{GetRayClusterResponse, ListRayClusterResponse, RayCluster};
use crate::emr::queues::ListWorkspaceQueuesResponse;
use crate::emr::{API_VERSION, Credentials, sign, text};

/// A page type: how a 2xx body decodes, its request ID and whether it has the field that holds
/// its items (a 200 without it is malformed).
pub(super) trait Page: Sized {
    /// Decodes a 2xx body. `unchanged_if`: a [`page_digest`] the page was last time (only
    /// [`ClusterPage`] reads it: a body with that digest is not decoded again).
    fn decode(body: Vec<u8>, unchanged_if: Option<u64>) -> serde_json::Result<Self>;
    fn request_id(&self) -> Option<String>;
    /// The name of the missing items field, if it is missing.
    fn missing_items(&self) -> Option<&'static str>;
}

/// A `ListRayCluster` page: decoded, or byte for byte the page it was last time (its request
/// ID aside), then not decoded.
pub(super) struct ClusterPage {
    pub(super) request_id: Option<String>,
    /// [`page_digest`] of the body.
    pub(super) digest: u64,
    pub(super) clusters: PageClusters,
}

pub(super) enum PageClusters {
    /// `None`: the body has no `rayClusters` field (malformed).
    Decoded(Option<Vec<RayCluster>>),
    /// The body has the digest asked for: kept undecoded (decoded only if another page of the
    /// same listing changed).
    Unchanged(Vec<u8>),
}

impl ClusterPage {
    /// The clusters of an [`PageClusters::Unchanged`] body (decoded before from the same bytes,
    /// so this does not fail short of a bug, which reads as a malformed page).
    pub(super) fn decode_unchanged(body: &[u8]) -> serde_json::Result<Vec<RayCluster>> {
        let page: ListRayClusterResponse = serde_json::from_slice(body)?;
        Ok(page.ray_clusters.unwrap_or_default())
    }
}

impl Page for ClusterPage {
    fn decode(body: Vec<u8>, unchanged_if: Option<u64>) -> serde_json::Result<Self> {
        if let Some((digest, request_id)) = page_digest(&body) {
            if unchanged_if == Some(digest) {
                return Ok(ClusterPage {
                    request_id: request_id.map(|id| text::request_id(&id)),
                    digest,
                    clusters: PageClusters::Unchanged(body),
                });
            }
            let page: ListRayClusterResponse = serde_json::from_slice(&body)?;
            return Ok(ClusterPage {
                request_id: page.request_id,
                digest,
                clusters: PageClusters::Decoded(page.ray_clusters),
            });
        }
        // Not even the envelope decodes: the full decode says why.
        let page: ListRayClusterResponse = serde_json::from_slice(&body)?;
        Ok(ClusterPage {
            request_id: page.request_id,
            digest: 0,
            clusters: PageClusters::Decoded(page.ray_clusters),
        })
    }
    fn request_id(&self) -> Option<String> {
        self.request_id.clone()
    }
    fn missing_items(&self) -> Option<&'static str> {
        matches!(self.clusters, PageClusters::Decoded(None)).then_some("rayClusters")
    }
}

/// The keys of [`page_digest`]: random per process, so that an endpoint cannot make two
/// different pages collide.
static PAGE_HASH: std::sync::LazyLock<std::hash::RandomState> =
    std::sync::LazyLock::new(std::hash::RandomState::new);

/// A page's envelope: only its request ID (which differs on every answer).
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default, rename = "requestId", alias = "RequestId")]
    request_id: Option<String>,
}

/// A digest of a page body with its request ID's value left out (equal digests: the same
/// bytes besides the request ID, so the same clusters), and that request ID as sent. `None`
/// when the body is not a JSON object with at most a string request ID.
pub(super) fn page_digest(body: &[u8]) -> Option<(u64, Option<String>)> {
    use std::hash::{BuildHasher, Hasher};
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let mut h = PAGE_HASH.build_hasher();
    match envelope
        .request_id
        .as_deref()
        .and_then(|id| request_id_span(body, id))
    {
        Some((start, end)) => {
            h.write(&body[..start]);
            h.write_u8(0xff);
            h.write(&body[end..]);
        }
        None => h.write(body),
    }
    Some((h.finish(), envelope.request_id))
}

/// Where in `body` the value of a `requestId` (or `RequestId`) key equal to `id` is, quotes
/// included: the first such key whose value is written exactly as `serde_json` writes `id`.
/// (Found nowhere: the digest keeps the request ID and never matches, which only costs a
/// decode.)
fn request_id_span(body: &[u8], id: &str) -> Option<(usize, usize)> {
    let value = serde_json::to_vec(id).ok()?;
    let key = b"equestId\"";
    let mut from = 0;
    while let Some(at) = find(&body[from..], key) {
        let mut i = from + at + key.len();
        let skip_ws = |i: &mut usize| {
            while body.get(*i).is_some_and(u8::is_ascii_whitespace) {
                *i += 1;
            }
        };
        skip_ws(&mut i);
        if body.get(i) == Some(&b':') {
            i += 1;
            skip_ws(&mut i);
            if body[i..].starts_with(&value) {
                return Some((i, i + value.len()));
            }
        }
        from += at + key.len();
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Page for ListRayJobResponse {
    fn decode(body: Vec<u8>, _: Option<u64>) -> serde_json::Result<Self> {
        serde_json::from_slice(&body)
    }
    fn request_id(&self) -> Option<String> {
        self.request_id.clone()
    }
    fn missing_items(&self) -> Option<&'static str> {
        self.ray_jobs.is_none().then_some("rayJobs")
    }
}

impl Page for ListWorkspaceQueuesResponse {
    fn decode(body: Vec<u8>, _: Option<u64>) -> serde_json::Result<Self> {
        serde_json::from_slice(&body)
    }
    fn request_id(&self) -> Option<String> {
        self.request_id.clone()
    }
    fn missing_items(&self) -> Option<&'static str> {
        self.queues.is_none().then_some("queues")
    }
}

/// A response: the page, its request ID and body size, or an error with the outcome code for
/// the observer.
pub(super) async fn read_response<P: Page>(
    resp: reqwest::Response,
    max_body_bytes: usize,
    unchanged_if: Option<u64>,
) -> Result<(P, Option<String>, usize), (EmrError, String)> {
    let (page, header_request_id, len, status): (P, _, _, _) =
        read_json(resp, max_body_bytes, |body| P::decode(body, unchanged_if)).await?;
    let request_id = page.request_id().or(header_request_id);
    match page.missing_items() {
        None => Ok((page, request_id, len)),
        Some(field) => Err(malformed(
            status,
            format!("response has no {field} field"),
            request_id,
        )),
    }
}

/// A `GetRayCluster` response: the cluster's kept fields, its request ID and body size.
pub(super) async fn read_detail(
    resp: reqwest::Response,
    max_body_bytes: usize,
) -> Result<(GetRayClusterResponse, Option<String>, usize), (EmrError, String)> {
    let (detail, header_request_id, len, status): (GetRayClusterResponse, _, _, _) =
        read_json(resp, max_body_bytes, |body| serde_json::from_slice(&body)).await?;
    let request_id = detail.request_id.clone().or(header_request_id);
    if detail.cluster_id.is_empty() {
        return Err(malformed(
            status,
            "response has no clusterId field".to_string(),
            request_id,
        ));
    }
    Ok((detail, request_id, len))
}

fn malformed(status: u16, m: String, rid: Option<String>) -> (EmrError, String) {
    (
        EmrError::new(ErrorKind::Malformed, m)
            .with_request_id(rid)
            .with_status(status),
        "malformed".to_string(),
    )
}

/// A 2xx body decoded as `T` by `decode` (with the header's request ID, the body size and the
/// status), or the remote error.
async fn read_json<T>(
    resp: reqwest::Response,
    max_body_bytes: usize,
    decode: impl FnOnce(Vec<u8>) -> serde_json::Result<T>,
) -> Result<(T, Option<String>, usize, u16), (EmrError, String)> {
    let status = resp.status().as_u16();
    // Cleaned and capped here, like every remote string (`text`).
    let header_request_id = resp
        .headers()
        .get("x-acs-request-id")
        .and_then(|v| v.to_str().ok())
        .map(text::request_id);
    let retry_after = resp
        .headers()
        .get("x-acs-retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = read_body(resp, max_body_bytes).await?;
    if !(200..300).contains(&status) {
        let e = EmrError::from_response(status, &body, header_request_id, retry_after);
        let code = e.code.clone().unwrap_or_else(|| status.to_string());
        return Err((e, code));
    }
    let len = body.len();
    let value: T = decode(body).map_err(|e| {
        malformed(
            status,
            format!(
                "response body is not the expected JSON: {}",
                text::decode_error(&e)
            ),
            header_request_id.clone(),
        )
    })?;
    Ok((value, header_request_id, len, status))
}

/// Reads a response body, failing (as a malformed answer) once it exceeds `max` bytes.
pub async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, (EmrError, String)> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(body_too_large(resp.status().as_u16(), max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > max {
            return Err(body_too_large(resp.status().as_u16(), max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

const BODY_TOO_LARGE: &str = "response body is larger than the limit of";

/// The error [`read_body`] gives for a body over its limit.
pub(super) fn is_body_too_large(e: &EmrError) -> bool {
    e.kind == ErrorKind::Malformed && e.message.starts_with(BODY_TOO_LARGE)
}

fn body_too_large(status: u16, max: usize) -> (EmrError, String) {
    (
        EmrError::new(
            ErrorKind::Malformed,
            format!("{BODY_TOO_LARGE} {max} bytes"),
        )
        .with_status(status),
        "malformed".to_string(),
    )
}

pub(super) fn transport_error(e: reqwest::Error) -> (EmrError, String) {
    let e = e.without_url();
    if e.is_timeout() {
        (
            EmrError::new(ErrorKind::Timeout, format!("request timed out: {e}")),
            "timeout".into(),
        )
    } else if e.is_connect() {
        (
            EmrError::new(ErrorKind::Transient, format!("cannot connect: {e}")),
            "connect".into(),
        )
    } else {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        (
            EmrError::new(ErrorKind::Transient, format!("network error: {msg}")),
            "network".into(),
        )
    }
}

/// The `Host` header value of `url` (port included when not the scheme's default).
pub fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The headers (lower-case names) of a signed, body-less request to `url`, `Authorization`
/// included. Public so tests and tools can build requests by hand.
pub fn signed_headers(
    version: SignatureVersion,
    method: &str,
    url: &url::Url,
    user_agent: &str,
    creds: &Credentials,
    action: &str,
) -> Vec<(String, String)> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut h: Vec<(String, String)> = vec![
        ("host".into(), host_header(url)),
        ("accept".into(), "application/json".into()),
        ("user-agent".into(), user_agent.into()),
        ("x-acs-action".into(), action.into()),
        ("x-acs-version".into(), API_VERSION.into()),
        ("x-acs-signature-nonce".into(), nonce),
    ];
    if let Some(token) = &creds.security_token {
        h.push(("x-acs-security-token".into(), token.expose().into()));
        h.push(("x-acs-accesskey-id".into(), creds.access_key_id.clone()));
    }
    let query = sign::parse_query(url.query().unwrap_or(""));
    match version {
        SignatureVersion::Acs3HmacSha256 => {
            h.push(("x-acs-date".into(), crate::time::now_rfc3339()));
            h.push(("x-acs-content-sha256".into(), sign::EMPTY_SHA256.into()));
            let names = sign::acs3_default_signed_names(&h);
            let signed = sign::acs3_sign(
                &sign::Acs3Input {
                    method,
                    path: url.path(),
                    query: &query,
                    headers: &h,
                    signed_headers: &names,
                    hashed_payload: sign::EMPTY_SHA256,
                },
                creds.access_key_secret.expose(),
            );
            let auth = sign::acs3_authorization(
                &creds.access_key_id,
                &signed.signed_headers,
                &signed.signature,
            );
            h.push(("authorization".into(), auth));
        }
        SignatureVersion::RoaHmacSha1 => {
            h.push((
                "date".into(),
                httpdate::fmt_http_date(std::time::SystemTime::now()),
            ));
            h.push(("x-acs-signature-method".into(), "HMAC-SHA1".into()));
            h.push(("x-acs-signature-version".into(), "1.0".into()));
            let sts = sign::roa_string_to_sign(method, url.path(), &query, &h);
            let sig = sign::roa_signature(creds.access_key_secret.expose(), &sts);
            h.push((
                "authorization".into(),
                sign::roa_authorization(&creds.access_key_id, &sig),
            ));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_digest_leaves_out_the_request_id_only() {
        let digest = |b: &str| page_digest(b.as_bytes()).map(|(d, _)| d);
        let a = digest(r#"{"requestId":"r-1","rayClusters":[{"clusterId":"c"}]}"#).unwrap();
        assert_eq!(
            page_digest(br#"{"requestId":"r-1","rayClusters":[]}"#)
                .unwrap()
                .1
                .as_deref(),
            Some("r-1")
        );
        assert_eq!(
            digest(r#"{"requestId":"r-2","rayClusters":[{"clusterId":"c"}]}"#),
            Some(a),
            "another request ID"
        );
        assert!(digest(r#"{"requestId" : "r-9","rayClusters":[{"clusterId":"d"}]}"#).is_some());
        assert_ne!(
            digest(r#"{"requestId":"r-2","rayClusters":[{"clusterId":"d"}]}"#),
            Some(a),
            "another cluster"
        );
        // The same value elsewhere is not left out: only the request ID's own.
        let b = digest(r#"{"RequestId":"x","rayClusters":[{"clusterId":"x"}]}"#);
        let c = digest(r#"{"RequestId":"y","rayClusters":[{"clusterId":"y"}]}"#);
        assert_ne!(b, c);
        assert!(b.is_some());
        // No request ID, or not JSON.
        assert!(digest(r#"{"rayClusters":[]}"#).is_some());
        assert_eq!(digest("<html>"), None);
        assert_eq!(digest(r#"{"requestId":5}"#), None);
    }

    #[test]
    fn a_cluster_page_is_decoded_unless_it_has_the_digest_asked_for() {
        let body = br#"{"requestId":"r-1","rayClusters":[{"clusterId":"ray-a"}]}"#.to_vec();
        let (d, _) = page_digest(&body).unwrap();
        let page = ClusterPage::decode(body.clone(), None).unwrap();
        assert_eq!(page.digest, d);
        assert!(matches!(&page.clusters, PageClusters::Decoded(Some(v)) if v.len() == 1));
        let page = ClusterPage::decode(body.clone(), Some(d ^ 1)).unwrap();
        assert!(matches!(page.clusters, PageClusters::Decoded(Some(_))));
        let page = ClusterPage::decode(body.clone(), Some(d)).unwrap();
        assert_eq!(page.request_id.as_deref(), Some("r-1"));
        let PageClusters::Unchanged(kept) = page.clusters else {
            panic!("not decoded again")
        };
        assert_eq!(ClusterPage::decode_unchanged(&kept).unwrap().len(), 1);
        // Malformed pages fail as before.
        assert!(ClusterPage::decode(b"{".to_vec(), None).is_err());
        let missing = ClusterPage::decode(br#"{"requestId":"r"}"#.to_vec(), None).unwrap();
        assert_eq!(missing.missing_items(), Some("rayClusters"));
    }

    #[test]
    fn signed_headers_verify_with_the_sign_module() {
        let url = url::Url::parse(
            "http://127.0.0.1:1/api/v1/workspaces/w-1/rayCluster?pageNum=1&pageSize=100",
        )
        .unwrap();
        let creds = Credentials::new("ak", "sk").with_security_token("tok");
        let h = signed_headers(
            SignatureVersion::Acs3HmacSha256,
            "GET",
            &url,
            "ua",
            &creds,
            "ListRayCluster",
        );
        let auth = h.iter().find(|(k, _)| k == "authorization").unwrap();
        let parsed = sign::parse_acs3_authorization(&auth.1).unwrap();
        assert!(
            parsed
                .signed_headers
                .contains(&"x-acs-security-token".to_string())
        );
        assert!(parsed.signed_headers.contains(&"host".to_string()));
        assert!(!format!("{h:?}").contains("sk\""));
        let h = signed_headers(
            SignatureVersion::RoaHmacSha1,
            "GET",
            &url,
            "ua",
            &creds,
            "ListRayCluster",
        );
        assert!(
            h.iter()
                .any(|(k, v)| k == "authorization" && v.starts_with("acs ak:"))
        );
    }
}
