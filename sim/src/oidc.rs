//! OIDC providers of the simulator's STS: `AssumeRoleWithOIDC` verifies the OIDC token the way
//! the real STS does for an OIDC provider registered in RAM — signature against the issuer's
//! published keys (OIDC discovery, then its `jwks_uri`), issuer, audience (the provider's client
//! IDs, `sts.aliyuncs.com` on ACK), expiry and not-before.
//!
//! A provider is registered with the issuer URL the tokens carry and, optionally, the base URL
//! to fetch discovery from (a Kubernetes API server's issuer, `https://kubernetes.default.svc…`,
//! is not reachable from where the simulator runs; the discovery document is fetched from the
//! API server itself and its `jwks_uri`, when it names the issuer's origin, is fetched from the
//! same base). With no provider registered the simulator accepts any non-empty token, as it
//! always did (tests of the operator's STS client that have no issuer at hand).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

/// An OIDC provider, as `POST /admin/oidc-providers` or [`super::SimState::add_oidc_provider`]
/// registers it.
#[derive(Clone, Debug)]
pub struct OidcProvider {
    pub issuer: String,
    /// Accepted audiences.
    pub client_ids: Vec<String>,
    pub jwks: JwkSet,
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub subject: String,
    pub issuer: String,
    pub audience: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iss: String,
}

/// Largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

impl OidcProvider {
    /// Fetches `<base>/.well-known/openid-configuration` (base: `discovery_base`, else the
    /// issuer), checks that it names `issuer`, then fetches its key set. `ca_pem`: a CA to trust
    /// for those requests (a test API server's).
    pub async fn discover(
        issuer: &str,
        discovery_base: Option<&str>,
        ca_pem: Option<&[u8]>,
        client_ids: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        let http = http.build()?;
        let base = discovery_base.unwrap_or(issuer).trim_end_matches('/');
        let doc: Discovery = serde_json::from_slice(
            &fetch(&http, &format!("{base}/.well-known/openid-configuration")).await?,
        )?;
        anyhow::ensure!(
            doc.issuer == issuer,
            "discovery at {base} names issuer {:?}, not {issuer:?}",
            doc.issuer
        );
        let jwks_uri = match doc.jwks_uri.strip_prefix(issuer.trim_end_matches('/')) {
            Some(path) if discovery_base.is_some() => format!("{base}{path}"),
            _ => doc.jwks_uri.clone(),
        };
        let jwks: JwkSet = serde_json::from_slice(&fetch(&http, &jwks_uri).await?)?;
        anyhow::ensure!(!jwks.keys.is_empty(), "{jwks_uri} publishes no keys");
        Ok(OidcProvider {
            issuer: issuer.to_string(),
            client_ids,
            jwks,
        })
    }

    /// Verifies `token`: a key of this provider signed it, for this issuer and one of the
    /// client IDs, and it is within its validity.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        let jwk = match &header.kid {
            Some(kid) => self.jwks.find(kid),
            None if self.jwks.keys.len() == 1 => self.jwks.keys.first(),
            None => None,
        }
        .ok_or("signed by a key the provider does not publish")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| format!("rejected: {e}"))?;
        Ok(VerifiedToken {
            subject: data.claims.sub,
            issuer: data.claims.iss,
            audience: self.client_ids.join(","),
        })
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let resp = http.get(url).send().await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "GET {url}: HTTP {}",
        resp.status()
    );
    emr_ray_operator::emr::client::read_body(resp, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|(e, _)| anyhow::anyhow!("GET {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    // An HMAC key set stands in for the API server's RSA keys: the checks under test (issuer,
    // audience, expiry, key ID, signature) are the same for every algorithm.
    fn provider() -> OidcProvider {
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c2VjcmV0LWtleS1vbmUtZm9yLXRlc3Rz"}
        ]}))
        .unwrap();
        OidcProvider {
            issuer: "https://kubernetes.default.svc.cluster.local".into(),
            client_ids: vec!["sts.aliyuncs.com".into()],
            jwks,
        }
    }

    fn token(kid: &str, secret: &[u8], claims: serde_json::Value) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn claims(iss: &str, aud: &str, exp_from_now: i64) -> serde_json::Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        serde_json::json!({
            "iss": iss, "aud": [aud], "sub": "system:serviceaccount:emr-system:emr-ray-operator",
            "iat": now - 10, "nbf": now - 10, "exp": now + exp_from_now,
        })
    }

    #[test]
    fn verifies_issuer_audience_expiry_key_and_signature() {
        let p = provider();
        let secret = b"secret-key-one-for-tests";
        let iss = "https://kubernetes.default.svc.cluster.local";
        let ok = token("k1", secret, claims(iss, "sts.aliyuncs.com", 600));
        assert_eq!(
            p.verify(&ok).unwrap().subject,
            "system:serviceaccount:emr-system:emr-ray-operator"
        );
        let cases = [
            (
                "wrong issuer",
                token(
                    "k1",
                    secret,
                    claims("https://evil.example", "sts.aliyuncs.com", 600),
                ),
            ),
            (
                "wrong audience",
                token("k1", secret, claims(iss, "api", 600)),
            ),
            (
                "expired",
                token("k1", secret, claims(iss, "sts.aliyuncs.com", -600)),
            ),
            (
                "unknown key",
                token("k2", secret, claims(iss, "sts.aliyuncs.com", 600)),
            ),
            (
                "forged signature",
                token(
                    "k1",
                    b"another-secret",
                    claims(iss, "sts.aliyuncs.com", 600),
                ),
            ),
            ("not a token", "abc.def".to_string()),
            ("empty", String::new()),
        ];
        for (what, t) in cases {
            assert!(p.verify(&t).is_err(), "{what} must be refused");
        }
    }
}
