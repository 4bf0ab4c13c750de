//! Optional authentication and authorization of `/metrics` (what controller-runtime's secure
//! metrics server does): the caller's bearer token is checked with a `TokenReview`, then a
//! `SubjectAccessReview` asks whether that user may `get` the non-resource URL `/metrics`.
//! Answers are cached for a minute per token digest; tokens are never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tracing::debug;

/// How long an answer is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most tokens remembered (a flood of random tokens evicts, never grows memory).
const CACHE_MAX: usize = 1024;
/// Longest bearer token considered.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

pub struct MetricsAuth {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], (StatusCode, Instant)>>,
}

impl MetricsAuth {
    pub fn new(client: kube::Client) -> Self {
        MetricsAuth {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `OK`, `UNAUTHORIZED` (no or invalid token) or `FORBIDDEN` (not allowed to get /metrics).
    pub async fn check(&self, headers: &HeaderMap) -> StatusCode {
        let Some(token) = bearer(headers) else {
            return StatusCode::UNAUTHORIZED;
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((code, at)) = self.lock().get(&key)
            && now.duration_since(*at) < CACHE_TTL
        {
            return *code;
        }
        let code = match self.review(token).await {
            Ok(code) => code,
            Err(e) => {
                debug!(error = %e, "reviewing a /metrics caller failed");
                // Not cached: the API server may answer next time.
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        };
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (code, now));
        code
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (StatusCode, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn review(&self, token: &str) -> Result<StatusCode, kube::Error> {
        let tr = Api::<TokenReview>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &TokenReview {
                    spec: TokenReviewSpec {
                        token: Some(token.to_string()),
                        audiences: None,
                    },
                    ..Default::default()
                },
            )
            .await?;
        let status = tr.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(StatusCode::UNAUTHORIZED);
        };
        let sar = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: user.username,
                        groups: user.groups,
                        uid: user.uid,
                        extra: user.extra,
                        non_resource_attributes: Some(NonResourceAttributes {
                            path: Some("/metrics".into()),
                            verb: Some("get".into()),
                        }),
                        resource_attributes: None,
                    },
                    ..Default::default()
                },
            )
            .await?;
        Ok(if sar.status.is_some_and(|s| s.allowed) {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        h.insert(header::AUTHORIZATION, long.parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
