//! Signature verification as the real gateway does it, recomputed from what was received
//! (method, raw path, raw query, headers, body) with the same functions the client signs with.

use emr_ray_operator::emr::sign;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// Allowed clock difference, and the window in which a nonce may not be reused.
pub const SKEW: Duration = Duration::from_secs(15 * 60);

/// A rejection: HTTP status, error code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn reject(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        code,
        message: message.into(),
    }
}

/// An access key known to the simulator.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub secret: String,
    /// STS credentials: the security token that must accompany the key.
    pub security_token: Option<String>,
    pub expiration: Option<SystemTime>,
}

/// What the verifier needs from the request.
pub struct Received<'a> {
    pub method: &'a str,
    /// Raw path, still percent-encoded as received.
    pub raw_path: &'a str,
    /// Raw query string as received (without `?`).
    pub raw_query: &'a str,
    /// Headers as received (names in any case, repeated names allowed).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Received<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Nonces seen within the last [`SKEW`].
#[derive(Default)]
pub struct NonceCache {
    seen: HashMap<String, Instant>,
    last_prune: Option<Instant>,
}

impl NonceCache {
    /// Records `nonce`; `false` if it was already used within the window.
    pub fn check_and_insert(&mut self, nonce: &str) -> bool {
        let now = Instant::now();
        if self
            .last_prune
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.seen.retain(|_, t| now.duration_since(*t) < SKEW);
            self.last_prune = Some(now);
        }
        match self.seen.get(nonce) {
            Some(t) if now.duration_since(*t) < SKEW => false,
            _ => {
                self.seen.insert(nonce.to_string(), now);
                true
            }
        }
    }
}

const MSG_INCOMPLETE: &str = "The request signature does not conform to Aliyun standards.";
const MSG_KEY_NOT_FOUND: &str = "Specified access key is not found.";
const MSG_EXPIRED: &str = "Specified time stamp or date value is expired.";

fn check_time(value: Option<&str>, roa: bool) -> Result<(), Rejection> {
    let name = if roa { "Date" } else { "x-acs-date" };
    let value = value.ok_or_else(|| {
        reject(
            400,
            "InvalidTimeStamp.Format",
            format!("The {name} header is required."),
        )
    })?;
    let t: SystemTime = if roa {
        httpdate::parse_http_date(value).map_err(|_| {
            reject(
                400,
                "InvalidTimeStamp.Format",
                format!("Specified {name} header is not valid: {value:?}."),
            )
        })?
    } else {
        let ts: jiff::Timestamp = value.parse().map_err(|_| {
            reject(
                400,
                "InvalidTimeStamp.Format",
                format!("Specified {name} header is not valid: {value:?}."),
            )
        })?;
        SystemTime::from(ts)
    };
    let now = SystemTime::now();
    let diff = now.duration_since(t).unwrap_or_else(|e| e.duration());
    if diff > SKEW {
        return Err(reject(400, "InvalidTimeStamp.Expired", MSG_EXPIRED));
    }
    Ok(())
}

fn check_token(req: &Received<'_>, key: &KeyEntry) -> Result<(), Rejection> {
    let sent = req.header("x-acs-security-token");
    match (&key.security_token, sent) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(reject(
            400,
            "MissingSecurityToken",
            "SecurityToken is mandatory for this access key.",
        )),
        (None, Some(_)) => Err(reject(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )),
        (Some(expected), Some(sent)) => {
            if !sign::signatures_equal(expected, sent) {
                return Err(reject(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                ));
            }
            if key.expiration.is_some_and(|e| e <= SystemTime::now()) {
                return Err(reject(
                    400,
                    "InvalidSecurityToken.Expired",
                    "Specified SecurityToken is expired.",
                ));
            }
            Ok(())
        }
    }
}

/// Verifies the request's signature. On success returns the access key ID. `nonces` is only
/// updated once the signature is known to be valid.
pub fn verify(
    req: &Received<'_>,
    lookup: impl Fn(&str) -> Option<KeyEntry>,
    nonces: &mut NonceCache,
) -> Result<String, Rejection> {
    let auth = req
        .header("authorization")
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| reject(400, "IncompleteSignature", MSG_INCOMPLETE))?;
    let query = sign::parse_query(req.raw_query);
    if auth.starts_with(sign::ACS3_ALGORITHM) {
        let parsed = sign::parse_acs3_authorization(auth)
            .ok_or_else(|| reject(400, "IncompleteSignature", MSG_INCOMPLETE))?;
        let key = known_key(req, &parsed.access_key_id, lookup)?;
        verify_acs3(req, &query, parsed, &key, nonces)
    } else if auth.starts_with("acs ") {
        let (id, signature) = sign::parse_roa_authorization(auth)
            .ok_or_else(|| reject(400, "IncompleteSignature", MSG_INCOMPLETE))?;
        let key = known_key(req, &id, lookup)?;
        verify_roa(req, &query, (id, &signature), &key, nonces)
    } else {
        Err(reject(400, "IncompleteSignature", MSG_INCOMPLETE))
    }
}

/// The access key `id`, known and with its security token when it is an STS key.
fn known_key(
    req: &Received<'_>,
    id: &str,
    lookup: impl Fn(&str) -> Option<KeyEntry>,
) -> Result<KeyEntry, Rejection> {
    let key =
        lookup(id).ok_or_else(|| reject(404, "InvalidAccessKeyId.NotFound", MSG_KEY_NOT_FOUND))?;
    check_token(req, &key)?;
    Ok(key)
}

/// `ACS3-HMAC-SHA256` once the key is known: time, payload hash, signed headers, nonce
/// presence, then the signature; the nonce is recorded last.
fn verify_acs3(
    req: &Received<'_>,
    query: &[(String, String)],
    parsed: sign::Acs3Authorization,
    key: &KeyEntry,
    nonces: &mut NonceCache,
) -> Result<String, Rejection> {
    check_time(req.header("x-acs-date"), false)?;
    let hashed = check_acs3_payload_hash(req)?;
    check_acs3_signed_headers(req, &parsed.signed_headers)?;
    let nonce = req
        .header("x-acs-signature-nonce")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            reject(
                400,
                "IncompleteSignature",
                "The x-acs-signature-nonce header is required.",
            )
        })?;
    let signed = sign::acs3_sign(
        &sign::Acs3Input {
            method: req.method,
            path: req.raw_path,
            query,
            headers: req.headers,
            signed_headers: &parsed.signed_headers,
            hashed_payload: hashed,
        },
        &key.secret,
    );
    if !sign::signatures_equal(&signed.signature, &parsed.signature.to_ascii_lowercase()) {
        return Err(signature_mismatch(&signed.string_to_sign));
    }
    if !nonces.check_and_insert(nonce) {
        return Err(nonce_used());
    }
    Ok(parsed.access_key_id)
}

/// The `x-acs-content-sha256` header: present and equal to the SHA-256 of the body.
fn check_acs3_payload_hash<'r>(req: &'r Received<'_>) -> Result<&'r str, Rejection> {
    let hashed = req.header("x-acs-content-sha256").ok_or_else(|| {
        reject(
            400,
            "IncompleteSignature",
            "The x-acs-content-sha256 header is required.",
        )
    })?;
    if !hashed.eq_ignore_ascii_case(&sign::sha256_hex(req.body)) {
        return Err(reject(
            400,
            "SignatureDoesNotMatch",
            "The x-acs-content-sha256 header does not match the SHA-256 of the request body.",
        ));
    }
    Ok(hashed)
}

/// host, content-type and every x-acs-* header present must be signed, and every signed header
/// must be present.
fn check_acs3_signed_headers(req: &Received<'_>, signed: &[String]) -> Result<(), Rejection> {
    for name in sign::acs3_default_signed_names(req.headers) {
        if !signed.contains(&name) {
            return Err(reject(
                400,
                "IncompleteSignature",
                format!("The header {name} must be included in SignedHeaders."),
            ));
        }
    }
    for name in signed {
        if req.header(name).is_none() {
            return Err(reject(
                400,
                "IncompleteSignature",
                format!("The signed header {name} is missing from the request."),
            ));
        }
    }
    Ok(())
}

/// ROA `acs <id>:<signature>` (HMAC-SHA1) once the key is known: `Date`, method, signature,
/// then the optional nonce.
fn verify_roa(
    req: &Received<'_>,
    query: &[(String, String)],
    (id, signature): (String, &str),
    key: &KeyEntry,
    nonces: &mut NonceCache,
) -> Result<String, Rejection> {
    check_time(req.header("date"), true)?;
    if let Some(m) = req.header("x-acs-signature-method")
        && !m.eq_ignore_ascii_case("HMAC-SHA1")
    {
        return Err(reject(
            400,
            "InvalidSignatureMethod",
            format!("Specified signature method {m:?} is not supported."),
        ));
    }
    let sts = sign::roa_string_to_sign(req.method, req.raw_path, query, req.headers);
    let expected = sign::roa_signature(&key.secret, &sts);
    if !sign::signatures_equal(&expected, signature) {
        return Err(signature_mismatch(&sts));
    }
    let nonce = req
        .header("x-acs-signature-nonce")
        .filter(|n| !n.is_empty());
    if nonce.is_some_and(|n| !nonces.check_and_insert(n)) {
        return Err(nonce_used());
    }
    Ok(id)
}

fn signature_mismatch(string_to_sign: &str) -> Rejection {
    reject(
        400,
        "SignatureDoesNotMatch",
        format!(
            "Specified signature does not match our calculation. server string to sign is:{string_to_sign}"
        ),
    )
}

fn nonce_used() -> Rejection {
    reject(
        400,
        "SignatureNonceUsed",
        "Specified signature nonce was used already.",
    )
}
