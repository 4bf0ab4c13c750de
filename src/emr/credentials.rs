//! Access-key credentials: static, from the SDK's environment variables, or RRSA (OIDC role for
//! service accounts on ACK) through STS `AssumeRoleWithOIDC`.

use super::error::{EmrError, ErrorKind};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A secret (an AccessKey secret, an STS token): `secrecy`'s `SecretString`, so it never shows
/// in `Debug`/`Display` output and its bytes are zeroized when dropped, behind an `Arc` so that
/// the clones the resolver hands to every listing share one allocation (zeroized when the last
/// clone goes) instead of copying the secret.
#[derive(Clone)]
pub struct SecretString(Arc<secrecy::SecretString>);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(Arc::new(secrecy::SecretString::from(s.into())))
    }
    /// The secret itself: only for signing.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&*self.0)
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString::new(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An access key, optionally with an STS security token.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: SecretString,
    pub security_token: Option<SecretString>,
}

pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
pub const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
pub const ENV_STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
pub const ENV_VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Credentials {
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Credentials {
            access_key_id: id.into(),
            access_key_secret: SecretString::new(secret.into()),
            security_token: None,
        }
    }

    pub fn with_security_token(mut self, token: impl Into<String>) -> Self {
        self.security_token = Some(SecretString::new(token.into()));
        self
    }

    /// `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, optional
    /// `ALIBABA_CLOUD_SECURITY_TOKEN`.
    pub fn from_env() -> Result<Self, EmrError> {
        let id = env_nonempty(ENV_ACCESS_KEY_ID);
        let secret = env_nonempty(ENV_ACCESS_KEY_SECRET);
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id,
                access_key_secret: secret.into(),
                security_token: env_nonempty(ENV_SECURITY_TOKEN).map(SecretString::from),
            }),
            _ => Err(EmrError::new(
                ErrorKind::Credentials,
                format!(
                    "environment variables {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} must both be set"
                ),
            )),
        }
    }
}

/// RRSA settings (what ACK injects into pods of an RRSA-enabled service account).
#[derive(Clone, Debug)]
pub struct RrsaConfig {
    pub role_arn: String,
    pub oidc_provider_arn: String,
    pub token_file: PathBuf,
    pub session_name: String,
    /// `None`: `https://sts.aliyuncs.com`.
    pub sts_endpoint: Option<url::Url>,
    /// Default 3600, minimum 900.
    pub duration_seconds: u32,
}

impl RrsaConfig {
    /// `ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`,
    /// `ALIBABA_CLOUD_OIDC_TOKEN_FILE` (required); `ALIBABA_CLOUD_ROLE_SESSION_NAME` (default
    /// `emr-ray-operator`); endpoint from `ALIBABA_CLOUD_STS_ENDPOINT`, else
    /// `sts[-vpc].<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com` (VPC when
    /// `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true`), else `sts.aliyuncs.com`.
    pub fn from_env() -> Result<Self, EmrError> {
        let missing = |n: &str| {
            EmrError::new(
                ErrorKind::Credentials,
                format!("RRSA: environment variable {n} is not set"),
            )
        };
        let role_arn = env_nonempty(ENV_ROLE_ARN).ok_or_else(|| missing(ENV_ROLE_ARN))?;
        let oidc_provider_arn =
            env_nonempty(ENV_OIDC_PROVIDER_ARN).ok_or_else(|| missing(ENV_OIDC_PROVIDER_ARN))?;
        let token_file =
            env_nonempty(ENV_OIDC_TOKEN_FILE).ok_or_else(|| missing(ENV_OIDC_TOKEN_FILE))?;
        let sts_endpoint = if let Some(e) = env_nonempty(ENV_STS_ENDPOINT) {
            let e = if e.contains("://") {
                e
            } else {
                format!("https://{e}")
            };
            Some(url::Url::parse(&e).map_err(|err| {
                EmrError::new(
                    ErrorKind::Config,
                    format!("invalid {ENV_STS_ENDPOINT}: {err}"),
                )
            })?)
        } else if let Some(region) = env_nonempty(ENV_STS_REGION) {
            let vpc = env_nonempty(ENV_VPC_ENDPOINT_ENABLED)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let host = if vpc { "sts-vpc" } else { "sts" };
            if !super::endpoint::valid_region(&region) {
                return Err(EmrError::new(
                    ErrorKind::Config,
                    format!("invalid {ENV_STS_REGION} {region:?}"),
                ));
            }
            Some(
                url::Url::parse(&format!("https://{host}.{region}.aliyuncs.com/"))
                    .map_err(|e| EmrError::new(ErrorKind::Config, e.to_string()))?,
            )
        } else {
            None
        };
        Ok(RrsaConfig {
            role_arn,
            oidc_provider_arn,
            token_file: PathBuf::from(token_file),
            session_name: env_nonempty(ENV_ROLE_SESSION_NAME)
                .unwrap_or_else(|| "emr-ray-operator".to_string()),
            sts_endpoint,
            duration_seconds: 3600,
        })
    }
}

/// Where credentials come from.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    Static(Credentials),
    /// The SDK's environment variables, read at each resolution.
    Environment,
    Rrsa(RrsaConfig),
}

/// Credentials are refreshed when this much validity or less remains (as the official SDK).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(180);

#[derive(Clone)]
struct Cached {
    creds: Credentials,
    expiration: jiff::Timestamp,
}

/// Resolves a [`CredentialSource`]; RRSA credentials are cached per role/provider/token file
/// and refreshed when 180 s or less remain.
#[derive(Clone, Default)]
pub struct CredentialResolver {
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    // Serialises STS calls so that concurrent reconciles do not all call STS at once.
    refresh: Arc<tokio::sync::Mutex<()>>,
    http: Arc<std::sync::OnceLock<reqwest::Client>>,
}

impl fmt::Debug for CredentialResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialResolver").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct StsResponse {
    #[serde(
        rename = "RequestId",
        default,
        deserialize_with = "super::text::de::request_id"
    )]
    request_id: Option<String>,
    #[serde(rename = "Credentials")]
    credentials: Option<StsCredentials>,
}

#[derive(Deserialize)]
struct StsCredentials {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "AccessKeySecret")]
    access_key_secret: String,
    #[serde(rename = "SecurityToken")]
    security_token: String,
    #[serde(rename = "Expiration")]
    expiration: String,
}

impl CredentialResolver {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn resolve(&self, src: &CredentialSource) -> Result<Credentials, EmrError> {
        match src {
            CredentialSource::Static(c) => Ok(c.clone()),
            CredentialSource::Environment => Credentials::from_env(),
            CredentialSource::Rrsa(cfg) => self.resolve_rrsa(cfg).await,
        }
    }

    fn cache_key(cfg: &RrsaConfig) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            cfg.role_arn,
            cfg.oidc_provider_arn,
            cfg.token_file.display(),
            cfg.session_name,
            cfg.sts_endpoint.as_ref().map(|u| u.as_str()).unwrap_or("")
        )
    }

    fn cached(&self, key: &str) -> Option<Credentials> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(key)?;
        let margin = jiff::SignedDuration::try_from(REFRESH_MARGIN).unwrap_or_default();
        let remaining = c.expiration.duration_since(jiff::Timestamp::now());
        (remaining > margin).then(|| c.creds.clone())
    }

    async fn resolve_rrsa(&self, cfg: &RrsaConfig) -> Result<Credentials, EmrError> {
        let key = Self::cache_key(cfg);
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let _guard = self.refresh.lock().await;
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let fresh = self.assume_role_with_oidc(cfg).await?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, fresh.clone());
        Ok(fresh.creds)
    }

    /// Reads the OIDC token, calls STS `AssumeRoleWithOIDC` and parses its credentials.
    async fn assume_role_with_oidc(&self, cfg: &RrsaConfig) -> Result<Cached, EmrError> {
        let token = read_oidc_token(cfg).await?;
        let (url, body) = sts_request(cfg, &token);
        let http = match self.http.get() {
            Some(h) => h,
            None => {
                let built = reqwest::Client::builder()
                    .connect_timeout(STS_TIMEOUT)
                    .timeout(STS_TIMEOUT)
                    // Like the listing: a redirect would resend the OIDC token to another host.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| cred_err(format!("RRSA: cannot build the STS client: {e}")))?;
                self.http.get_or_init(|| built)
            }
        };
        let resp = http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                sts_err(format!(
                    "RRSA: AssumeRoleWithOIDC request failed: {}",
                    e.without_url()
                ))
            })?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            return Err(sts_err(format!(
                "RRSA: AssumeRoleWithOIDC answered a redirect (HTTP {status}); redirects are \
                 not followed"
            ))
            .with_status(status));
        }
        let bytes = crate::emr::client::read_body(resp, MAX_STS_RESPONSE_BYTES)
            .await
            .map_err(|(e, _)| {
                sts_err(format!(
                    "RRSA: reading AssumeRoleWithOIDC response: {}",
                    e.message
                ))
            })?;
        parse_sts_response(status, &bytes)
    }
}

/// Timeout of one STS request (connect, and the whole exchange).
const STS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest STS answer read (a real one is about 1.5 KiB).
const MAX_STS_RESPONSE_BYTES: usize = 64 * 1024;

/// A failure before STS was called (settings, the token file, the client).
fn cred_err(m: String) -> EmrError {
    EmrError::new(ErrorKind::Credentials, m)
}

/// A failure of the STS call itself (sent, or its answer).
fn sts_err(m: String) -> EmrError {
    EmrError::new(ErrorKind::Sts, m)
}

/// Largest OIDC token file read (a projected service-account token is a few KiB).
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// How long reading the token file may take (a FIFO or a device would block forever).
const TOKEN_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The OIDC token from the projected token file, trimmed; an empty, oversized or slow file is
/// an error.
async fn read_oidc_token(cfg: &RrsaConfig) -> Result<String, EmrError> {
    use tokio::io::AsyncReadExt;
    let path = cfg.token_file.display();
    let read = async {
        let file = tokio::fs::File::open(&cfg.token_file).await?;
        let mut buf = Vec::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .await?;
        Ok::<_, std::io::Error>(buf)
    };
    let bytes = tokio::time::timeout(TOKEN_READ_TIMEOUT, read)
        .await
        .map_err(|_| cred_err(format!("RRSA: reading OIDC token file {path} timed out")))?
        .map_err(|e| cred_err(format!("RRSA: cannot read OIDC token file {path}: {e}")))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(cred_err(format!(
            "RRSA: OIDC token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes"
        )));
    }
    let token = String::from_utf8(bytes)
        .map_err(|_| cred_err(format!("RRSA: OIDC token file {path} is not UTF-8")))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(cred_err(format!(
            "RRSA: OIDC token file {} is empty",
            cfg.token_file.display()
        )));
    }
    Ok(token.to_string())
}

/// The `AssumeRoleWithOIDC` URL (common parameters in the query) and its form-encoded body.
fn sts_request(cfg: &RrsaConfig, token: &str) -> (url::Url, String) {
    let mut url = cfg
        .sts_endpoint
        .clone()
        .unwrap_or_else(|| url::Url::parse("https://sts.aliyuncs.com/").expect("static url"));
    let timestamp = crate::time::now_rfc3339();
    url.query_pairs_mut()
        .append_pair("Version", "2015-04-01")
        .append_pair("Action", "AssumeRoleWithOIDC")
        .append_pair("Format", "JSON")
        .append_pair("Timestamp", &timestamp);
    let duration = cfg.duration_seconds.max(900).to_string();
    let form: Vec<(&str, &str)> = vec![
        ("RoleArn", cfg.role_arn.as_str()),
        ("OIDCProviderArn", cfg.oidc_provider_arn.as_str()),
        ("OIDCToken", token),
        ("RoleSessionName", cfg.session_name.as_str()),
        ("DurationSeconds", duration.as_str()),
    ];
    let body = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                super::sign::rfc3986_encode(k),
                super::sign::rfc3986_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    (url, body)
}

/// What an STS answer comes to, for the `sts_response` fuzz target: the AccessKey ID and the
/// expiration, or the error (whose text must never quote the secrets a body carries).
#[doc(hidden)]
pub fn parse_sts_answer(status: u16, bytes: &[u8]) -> Result<(String, jiff::Timestamp), EmrError> {
    parse_sts_response(status, bytes).map(|c| (c.creds.access_key_id, c.expiration))
}

/// An STS answer: a remote error, or the temporary credentials and their expiration.
fn parse_sts_response(status: u16, bytes: &[u8]) -> Result<Cached, EmrError> {
    if !(200..300).contains(&status) {
        let remote = EmrError::from_response(status, bytes, None, None);
        let mut e = sts_err(format!(
            "RRSA: AssumeRoleWithOIDC failed: {}",
            remote.message
        ));
        e.code = remote.code;
        e.request_id = remote.request_id;
        e.http_status = Some(status);
        return Err(e);
    }
    // Only where the body is malformed, never serde's text: it quotes the body, which carries
    // credentials.
    let parsed: StsResponse = serde_json::from_slice(bytes).map_err(|e| {
        sts_err(format!(
            "RRSA: malformed AssumeRoleWithOIDC response ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let c = parsed.credentials.ok_or_else(|| {
        sts_err("RRSA: AssumeRoleWithOIDC response has no Credentials".to_string())
            .with_request_id(parsed.request_id.clone())
    })?;
    let expiration: jiff::Timestamp = c.expiration.parse().map_err(|e: jiff::Error| {
        // jiff's error quotes the input too.
        sts_err(format!(
            "RRSA: invalid Expiration {:?}: {}",
            super::text::excerpt(&c.expiration),
            super::text::clean_text(&e.to_string(), super::text::MAX_MESSAGE_CHARS / 2)
        ))
    })?;
    Ok(Cached {
        creds: Credentials {
            access_key_id: c.access_key_id,
            access_key_secret: c.access_key_secret.into(),
            security_token: Some(c.security_token.into()),
        },
        expiration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-route HTTP server on loopback answering every request with `head` and then
    /// `body_chunks` chunks of 64 KiB (a chunked body when more than none); counts requests.
    async fn serve(
        head: &'static str,
        body_chunks: usize,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..body_chunks {
                        let frame = format!("{:x}\r\n", chunk.len());
                        if sock.write_all(frame.as_bytes()).await.is_err()
                            || sock.write_all(&chunk).await.is_err()
                            || sock.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (addr, hits)
    }

    fn rrsa_to(endpoint: std::net::SocketAddr, dir: &std::path::Path) -> RrsaConfig {
        let token_file = dir.join("token");
        std::fs::write(&token_file, "eyJ.token.sig").unwrap();
        RrsaConfig {
            role_arn: "acs:ram::1:role/r".into(),
            oidc_provider_arn: "acs:ram::1:oidc-provider/p".into(),
            token_file,
            session_name: "s".into(),
            sts_endpoint: Some(format!("http://{endpoint}/").parse().unwrap()),
            duration_seconds: 3600,
        }
    }

    #[tokio::test]
    async fn sts_redirects_are_not_followed() {
        let (target, target_hits) = serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 0).await;
        let head: &'static str = Box::leak(
            format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target}/\r\ncontent-length: 0\r\n\r\n")
                .into_boxed_str(),
        );
        let (sts, _) = serve(head, 0).await;
        let dir = tempfile::tempdir().unwrap();
        let err = CredentialResolver::new()
            .resolve(&CredentialSource::Rrsa(rrsa_to(sts, dir.path())))
            .await
            .unwrap_err();
        assert!(err.message.contains("redirect"), "{}", err.message);
        assert_eq!(
            target_hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the token went nowhere else"
        );
    }

    #[tokio::test]
    async fn sts_bodies_are_capped() {
        let (sts, _) = serve(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            10_000,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let err = CredentialResolver::new()
            .resolve(&CredentialSource::Rrsa(rrsa_to(sts, dir.path())))
            .await
            .unwrap_err();
        assert!(
            err.message.contains("larger than the limit"),
            "{}",
            err.message
        );
    }

    /// What was tried decides the kind: a failure of the STS call is `Sts` (a remote call: a
    /// retry waits for the backoff), one before it (settings, the token file) is
    /// `Credentials`. Both are reported as `CredentialsUnavailable`.
    #[tokio::test]
    async fn sts_failures_are_remote_and_token_file_failures_local() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |cfg: RrsaConfig| async move {
            CredentialResolver::new()
                .resolve(&CredentialSource::Rrsa(cfg))
                .await
                .unwrap_err()
        };
        let refusing = serve(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 77\r\n\r\n\
             {\"Code\":\"AuthenticationFail.OIDCToken.Invalid\",\"Message\":\"The token is bad.\"}",
            0,
        )
        .await
        .0;
        let e = resolve(rrsa_to(refusing, dir.path())).await;
        assert_eq!(e.kind, ErrorKind::Sts, "{}", e.message);
        assert_eq!(e.http_status, Some(400));
        assert_eq!(
            e.code.as_deref(),
            Some("AuthenticationFail.OIDCToken.Invalid")
        );
        // Nothing listens there: the call was still made.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = resolve(rrsa_to(closed, dir.path())).await;
        assert_eq!(e.kind, ErrorKind::Sts, "{}", e.message);
        let e = resolve(RrsaConfig {
            token_file: dir.path().join("missing"),
            ..rrsa_to(refusing, dir.path())
        })
        .await;
        assert_eq!(e.kind, ErrorKind::Credentials, "{}", e.message);
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Credentials::new("LTAIid", "topsecret").with_security_token("tok3n");
        let dbg = format!("{c:?}");
        assert!(dbg.contains("LTAIid"));
        assert!(!dbg.contains("topsecret"));
        assert!(!dbg.contains("tok3n"));
        assert_eq!(c.access_key_secret.to_string(), "***");
        assert_eq!(c.access_key_secret.expose(), "topsecret");
    }
}
