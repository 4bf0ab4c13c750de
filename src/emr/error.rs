//! Errors of the EMR client, classified for retries, Kubernetes conditions and metrics.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Broad class of an [`EmrError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Signature, access key, security token, timestamp or nonce rejected.
    Auth,
    /// `Forbidden.*`, `NoPermission*`, HTTP 403 without a more specific code.
    Permission,
    /// `Throttling*` or HTTP 429.
    Throttled,
    /// 5xx, connection errors.
    Transient,
    /// A request or the whole listing took too long.
    Timeout,
    /// Other 4xx: invalid parameter, unknown API, ...
    InvalidRequest,
    /// The workspace (or another addressed resource) does not exist.
    NotFound,
    /// A 200 whose body is not the documented JSON.
    Malformed,
    /// The listing could not be completed consistently (page limit hit, repeated page, ...).
    Incomplete,
    /// Credentials could not be obtained before any remote call (missing env vars, RRSA
    /// settings, an unreadable OIDC token file).
    Credentials,
    /// The STS exchange for RRSA credentials (`AssumeRoleWithOIDC`) was attempted and failed
    /// (refused, unreachable, a redirect, a bad answer): a remote call, so a retry waits for
    /// the backoff. Reported like [`ErrorKind::Credentials`] (`CredentialsUnavailable`).
    Sts,
    /// Invalid configuration (endpoint, region, client settings).
    Config,
    /// The workspace has more clusters than the operator is configured to mirror.
    TooManyClusters,
}

/// An error of the EMR client. Never carries secrets: messages are built from server error
/// bodies (which do not echo secrets) and from our own text.
#[derive(Debug, Clone)]
pub struct EmrError {
    pub kind: ErrorKind,
    /// Remote error code (`SignatureDoesNotMatch`, `Throttling.User`, ...), if any.
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
    /// From `x-acs-retry-after` (throttling).
    pub retry_after: Option<Duration>,
}

impl EmrError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EmrError {
            kind,
            code: None,
            message: message.into(),
            request_id: None,
            http_status: None,
            retry_after: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// Whether the same call, repeated later unchanged, may succeed (throttling, 5xx, network,
    /// timeouts, malformed bodies, inconsistent listings). Authentication, permission, invalid
    /// request, not-found, credential and configuration errors need a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Throttled
                | ErrorKind::Transient
                | ErrorKind::Timeout
                | ErrorKind::Malformed
                | ErrorKind::Incomplete
        )
    }

    /// Classifies a non-2xx answer from its HTTP status and error body.
    pub fn from_response(
        status: u16,
        body: &[u8],
        header_request_id: Option<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (code, message, request_id) = match parsed {
            Some(b) => (b.code, b.message, b.request_id.or(header_request_id)),
            None => (None, None, header_request_id),
        };
        let kind = classify(status, code.as_deref());
        // Only the documented `Code`/`Message` are copied (cleaned and capped): never a raw
        // body, which a hostile or misconfigured endpoint controls.
        let code = code.map(|c| clean_text(&c, MAX_CODE_CHARS));
        let message = match message.map(|m| clean_text(&m, MAX_MESSAGE_CHARS)) {
            Some(m) if !m.is_empty() => m,
            _ if (300..400).contains(&status) => {
                format!(
                    "HTTP {status}: the endpoint answered with a redirect, which is not followed"
                )
            }
            _ if body.is_empty() => format!("HTTP {status} without an error body"),
            _ => format!("HTTP {status} with a body that is not the documented error JSON"),
        };
        let request_id = request_id.map(|r| super::text::request_id(&r));
        EmrError {
            kind,
            code,
            message,
            request_id,
            http_status: Some(status),
            retry_after: if kind == ErrorKind::Throttled || retry_after.is_some() {
                retry_after
            } else {
                None
            },
        }
    }
}

/// Remote error codes and outcome words that may become a metric label as they are; any other
/// code is `other`, so that a remote server cannot grow the label set.
const KNOWN_CODES: &[&str] = &[
    "200",
    "timeout",
    "connect",
    "network",
    "malformed",
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "ServiceUnavailable",
    "InternalError",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "SignatureNonceUsed",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "InvalidSecurityToken.Expired",
    "InvalidSecurityToken.Malformed",
    "InvalidSecurityToken.MismatchWithAccessKey",
    "InvalidTimeStamp.Expired",
    "InvalidTimeStamp.Format",
    "InvalidParameter",
    "MissingParameter",
    "InvalidAction.NotFound",
    "InvalidWorkspaceId.NotFound",
    "Forbidden.RAM",
    "NoPermission",
    "400",
    "401",
    "403",
    "404",
    "429",
    "500",
    "502",
    "503",
    "504",
];

/// The metric label of a request outcome code: one of a fixed set, `other` for the rest.
pub fn code_label(code: &str) -> &'static str {
    KNOWN_CODES
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

// The cleaning of remote text has one home, `super::text`; these are its error-text caps.
pub use super::text::{MAX_CODE_CHARS, MAX_MESSAGE_CHARS, clean_text};

/// Error body `{"RequestId","HostId","Code","Message","Recommend"}`, also lower-case variants.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", alias = "code")]
    code: Option<String>,
    #[serde(rename = "Message", alias = "message")]
    message: Option<String>,
    #[serde(rename = "RequestId", alias = "requestId", alias = "request_id")]
    request_id: Option<String>,
}

/// Maps an HTTP status and error code to an [`ErrorKind`].
pub fn classify(status: u16, code: Option<&str>) -> ErrorKind {
    if let Some(code) = code {
        let c = code.to_ascii_lowercase();
        if c.starts_with("throttling") || c.contains("flowcontrol") {
            return ErrorKind::Throttled;
        }
        if c.starts_with("signature")
            || c.starts_with("incompletesignature")
            || c.starts_with("invalidaccesskey")
            || c.starts_with("invalidsecuritytoken")
            || c.starts_with("missingsecuritytoken")
            || c.starts_with("invalidtimestamp")
            || c.starts_with("inactiveaccesskey")
            || c.starts_with("invalidauthorization")
        {
            return ErrorKind::Auth;
        }
        if c.starts_with("forbidden")
            || c.starts_with("nopermission")
            || c.contains("notauthorized")
        {
            return ErrorKind::Permission;
        }
        if c == "serviceunavailable" || c == "internalerror" || c.starts_with("serviceunavailable")
        {
            return ErrorKind::Transient;
        }
        if c.starts_with("invalidaction") || c.starts_with("invalidversion") {
            return ErrorKind::InvalidRequest;
        }
        if c.contains("workspace") && (c.contains("notfound") || c.contains("notexist")) {
            return ErrorKind::NotFound;
        }
    }
    match status {
        300..=399 => ErrorKind::Config,
        429 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Transient,
        403 => ErrorKind::Permission,
        401 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::InvalidRequest,
    }
}

impl fmt::Display for EmrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message)?,
            None => f.write_str(&self.message)?,
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for EmrError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let cases = [
            (400, "SignatureDoesNotMatch", ErrorKind::Auth),
            (404, "InvalidAccessKeyId.NotFound", ErrorKind::Auth),
            (400, "IncompleteSignature", ErrorKind::Auth),
            (400, "InvalidTimeStamp.Expired", ErrorKind::Auth),
            (400, "SignatureNonceUsed", ErrorKind::Auth),
            (400, "InvalidSecurityToken.Expired", ErrorKind::Auth),
            (400, "Throttling.User", ErrorKind::Throttled),
            (400, "Throttling", ErrorKind::Throttled),
            (503, "ServiceUnavailable", ErrorKind::Transient),
            (500, "InternalError", ErrorKind::Transient),
            (403, "Forbidden.RAM", ErrorKind::Permission),
            (403, "NoPermission", ErrorKind::Permission),
            (400, "InvalidParameter", ErrorKind::InvalidRequest),
            (404, "InvalidWorkspaceId.NotFound", ErrorKind::NotFound),
            (404, "InvalidAction.NotFound", ErrorKind::InvalidRequest),
        ];
        for (status, code, kind) in cases {
            assert_eq!(classify(status, Some(code)), kind, "{code}");
        }
        assert_eq!(classify(502, None), ErrorKind::Transient);
        assert_eq!(classify(429, None), ErrorKind::Throttled);
    }

    #[test]
    fn parses_both_body_casings() {
        let e = EmrError::from_response(
            400,
            br#"{"RequestId":"R1","HostId":"h","Code":"SignatureDoesNotMatch","Message":"bad","Recommend":"x"}"#,
            None,
            None,
        );
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(!e.is_retryable());
        assert_eq!(e.to_string(), "SignatureDoesNotMatch: bad (request id R1)");
        let e = EmrError::from_response(
            400,
            br#"{"requestId":"R2","code":"Throttling.User","message":"slow down"}"#,
            None,
            Some(Duration::from_secs(2)),
        );
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.request_id.as_deref(), Some("R2"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert!(e.is_retryable());
        let e = EmrError::from_response(502, b"<html>bad gateway</html>", Some("H".into()), None);
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(e.request_id.as_deref(), Some("H"));
        assert_eq!(
            e.to_string(),
            "HTTP 502 with a body that is not the documented error JSON (request id H)"
        );
        assert!(
            !e.to_string().contains("bad gateway"),
            "raw bodies are never copied"
        );
        let long = format!(
            r#"{{"Code":"X\n{}","Message":"{}"}}"#,
            "c".repeat(500),
            "m".repeat(5000)
        );
        let e = EmrError::from_response(400, long.as_bytes(), None, None);
        assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(e.code.unwrap().chars().count() <= MAX_CODE_CHARS + 1);
        let e = EmrError::from_response(302, b"", None, None);
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("redirect"), "{}", e.message);
    }

    #[test]
    fn metric_codes_are_a_fixed_set() {
        assert_eq!(code_label("Throttling.User"), "Throttling.User");
        assert_eq!(code_label("200"), "200");
        assert_eq!(code_label("Evil.{label=\"x\"}"), "other");
        assert_eq!(code_label(&"A".repeat(10_000)), "other");
    }
}
