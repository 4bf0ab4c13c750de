//! Authentication and authorization of `/metrics` callers (with `--metrics-secure`; what
//! controller-runtime's `WithAuthenticationAndAuthorization` filter does): the caller's bearer
//! token is checked with a `TokenReview`, then a `SubjectAccessReview` asks whether that user
//! may `get` the non-resource URL `/metrics`.
//!
//! `/metrics` is reachable by anyone the NetworkPolicy admits, with any token: the checks are
//! bounded so that scrapes with made-up tokens cannot turn the operator into a TokenReview
//! amplifier against the API server.
//! - Answers are cached per token digest (SHA-256; tokens are never stored or logged): allowed
//!   for [`ALLOWED_TTL`], refused (401, 403) for [`REFUSED_TTL`]. Answers for authenticated
//!   users and answers for unauthenticated tokens are held in two tables of bounded size
//!   ([`VerdictCache`]), so a flood of random tokens never evicts a real scraper's entry.
//! - A token that is not cached is reviewed only within a budget ([`ReviewBudget`]): at most
//!   `per_second` reviews a second (with a burst) and [`REVIEWS_IN_FLIGHT`] at once; past it the
//!   caller gets 429 at once, without a call to the API server.
//! - A failed review (the API server unreachable, say) answers 503 and is not cached.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::metrics::Metrics;

/// How long an allowed answer is reused (a revoked token or role keeps working this long).
pub const ALLOWED_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is reused (a newly granted role works after at most this long).
pub const REFUSED_TTL: Duration = Duration::from_secs(30);
/// Most answers remembered for authenticated users (allowed or forbidden).
pub const AUTHENTICATED_MAX: usize = 256;
/// Most answers remembered for tokens that did not authenticate.
pub const UNAUTHENTICATED_MAX: usize = 1024;
/// Reviews of uncached tokens in progress at once.
pub const REVIEWS_IN_FLIGHT: usize = 4;
/// Longest bearer token considered.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The answer to a `/metrics` caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No bearer token, or one the TokenReview did not authenticate.
    Unauthenticated,
    /// Authenticated, but not allowed to `get` `/metrics`.
    Forbidden,
    /// Not cached, and the review budget is spent.
    Throttled,
    /// The review failed (the API server did not answer).
    Unavailable,
}

impl Verdict {
    pub fn status(self) -> StatusCode {
        match self {
            Verdict::Allowed => StatusCode::OK,
            Verdict::Unauthenticated => StatusCode::UNAUTHORIZED,
            Verdict::Forbidden => StatusCode::FORBIDDEN,
            Verdict::Throttled => StatusCode::TOO_MANY_REQUESTS,
            Verdict::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `result` label of `emr_ray_operator_metrics_auth_reviews_total` (a throttled caller
    /// is not reviewed: it is counted in `emr_ray_operator_metrics_auth_throttled_total`).
    pub fn metric_label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Forbidden => "forbidden",
            Verdict::Throttled => "throttled",
            Verdict::Unavailable => "error",
        }
    }
}

/// The review budget's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewLimits {
    /// Reviews of uncached tokens per second, sustained.
    pub per_second: u32,
    /// Reviews that may happen at once after a quiet spell.
    pub burst: u32,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        ReviewLimits {
            per_second: 5,
            burst: 10,
        }
    }
}

type TokenKey = [u8; 32];

/// One bounded table of answers with their expiry.
///
/// Invariant: never more than `max` entries. Inserting into a full table first drops the
/// expired entries, then, if it is still full, the one that expires soonest.
#[derive(Debug)]
struct TtlTable {
    entries: HashMap<TokenKey, (Verdict, Instant)>,
    max: usize,
}

impl TtlTable {
    fn new(max: usize) -> Self {
        TtlTable {
            entries: HashMap::new(),
            max: max.max(1),
        }
    }

    fn get(&self, key: &TokenKey, now: Instant) -> Option<Verdict> {
        self.entries
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(v, _)| *v)
    }

    fn put(&mut self, key: TokenKey, verdict: Verdict, expires: Instant, now: Instant) {
        if self.entries.len() >= self.max && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, e)| now < *e);
            if self.entries.len() >= self.max
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| *k)
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (verdict, expires));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Cached answers by token digest: authenticated users' answers (allowed, forbidden) and
/// unauthenticated tokens' answers in separate tables, so that the second (which anyone can
/// fill with made-up tokens) never pushes out the first. Throttled and failed reviews are not
/// cached.
#[derive(Debug)]
pub struct VerdictCache {
    authenticated: TtlTable,
    unauthenticated: TtlTable,
}

impl Default for VerdictCache {
    fn default() -> Self {
        VerdictCache::new(AUTHENTICATED_MAX, UNAUTHENTICATED_MAX)
    }
}

impl VerdictCache {
    pub fn new(authenticated_max: usize, unauthenticated_max: usize) -> Self {
        VerdictCache {
            authenticated: TtlTable::new(authenticated_max),
            unauthenticated: TtlTable::new(unauthenticated_max),
        }
    }

    pub fn get(&self, key: &TokenKey, now: Instant) -> Option<Verdict> {
        self.authenticated
            .get(key, now)
            .or_else(|| self.unauthenticated.get(key, now))
    }

    pub fn put(&mut self, key: TokenKey, verdict: Verdict, now: Instant) {
        match verdict {
            Verdict::Allowed => self.authenticated.put(key, verdict, now + ALLOWED_TTL, now),
            Verdict::Forbidden => self.authenticated.put(key, verdict, now + REFUSED_TTL, now),
            Verdict::Unauthenticated => {
                self.unauthenticated
                    .put(key, verdict, now + REFUSED_TTL, now)
            }
            Verdict::Throttled | Verdict::Unavailable => {}
        }
    }

    /// Entries held (authenticated, unauthenticated).
    pub fn len(&self) -> (usize, usize) {
        (self.authenticated.len(), self.unauthenticated.len())
    }
}

/// The budget for reviews of uncached tokens: a token bucket and a cap on reviews in
/// progress. Taking from it never waits.
pub struct ReviewBudget {
    rate: DefaultDirectRateLimiter,
    in_flight: Arc<Semaphore>,
}

impl ReviewBudget {
    pub fn new(limits: ReviewLimits) -> Self {
        let per_second = NonZeroU32::new(limits.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.burst).unwrap_or(per_second);
        ReviewBudget {
            rate: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            in_flight: Arc::new(Semaphore::new(REVIEWS_IN_FLIGHT)),
        }
    }

    /// Leave to review one token now (held until the review is done), or `None`: over budget.
    pub fn try_start(&self) -> Option<OwnedSemaphorePermit> {
        // The slot first: a request turned away for want of a slot spends no rate.
        let slot = self.in_flight.clone().try_acquire_owned().ok()?;
        self.rate.check().ok()?;
        Some(slot)
    }
}

pub struct MetricsAuth {
    client: kube::Client,
    cache: Mutex<VerdictCache>,
    budget: ReviewBudget,
    metrics: Arc<Metrics>,
}

impl MetricsAuth {
    pub fn new(client: kube::Client, limits: ReviewLimits, metrics: Arc<Metrics>) -> Self {
        MetricsAuth {
            client,
            cache: Mutex::new(VerdictCache::default()),
            budget: ReviewBudget::new(limits),
            metrics,
        }
    }

    /// The caller's verdict, from the cache or, within the budget, from a review.
    pub async fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(token) = bearer(headers) else {
            return Verdict::Unauthenticated;
        };
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self.lock().get(&key, Instant::now()) {
            return v;
        }
        let Some(_slot) = self.budget.try_start() else {
            self.metrics.metrics_auth_throttled.inc();
            return Verdict::Throttled;
        };
        let verdict = match self.review(token).await {
            Ok(v) => v,
            Err(e) => {
                // The error names the request, never the token.
                debug!(error = %e, "reviewing a /metrics caller failed");
                Verdict::Unavailable
            }
        };
        self.metrics.count_metrics_review(verdict.metric_label());
        self.lock().put(key, verdict, Instant::now());
        verdict
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerdictCache> {
        crate::controller::lock(&self.cache)
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
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
            return Ok(Verdict::Unauthenticated);
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
            Verdict::Allowed
        } else {
            Verdict::Forbidden
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

    fn key(n: u32) -> TokenKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn answers_are_cached_for_their_time() {
        let t0 = Instant::now();
        let mut c = VerdictCache::default();
        c.put(key(1), Verdict::Allowed, t0);
        c.put(key(2), Verdict::Forbidden, t0);
        c.put(key(3), Verdict::Unauthenticated, t0);
        c.put(key(4), Verdict::Throttled, t0);
        c.put(key(5), Verdict::Unavailable, t0);
        let at = |d: Duration| t0 + d;
        let second = Duration::from_secs(1);
        assert_eq!(
            c.get(&key(1), at(ALLOWED_TTL - second)),
            Some(Verdict::Allowed)
        );
        assert_eq!(c.get(&key(1), at(ALLOWED_TTL)), None);
        assert_eq!(
            c.get(&key(2), at(REFUSED_TTL - second)),
            Some(Verdict::Forbidden)
        );
        assert_eq!(c.get(&key(2), at(REFUSED_TTL)), None);
        assert_eq!(
            c.get(&key(3), at(REFUSED_TTL - second)),
            Some(Verdict::Unauthenticated)
        );
        assert_eq!(c.get(&key(3), at(REFUSED_TTL)), None);
        assert_eq!(c.get(&key(4), t0), None, "throttling is not an answer");
        assert_eq!(c.get(&key(5), t0), None, "a failed review is not an answer");
        assert_eq!(c.len(), (2, 1));
    }

    #[test]
    fn a_flood_of_unknown_tokens_never_evicts_a_scraper() {
        let t0 = Instant::now();
        let mut c = VerdictCache::new(4, 8);
        c.put(key(0), Verdict::Allowed, t0);
        for n in 1..10_000 {
            c.put(key(n), Verdict::Unauthenticated, t0);
            assert!(c.len().1 <= 8, "bounded");
        }
        assert_eq!(c.get(&key(0), t0), Some(Verdict::Allowed));
        assert_eq!(c.len(), (1, 8));
        // The latest refusals are the ones kept.
        assert_eq!(c.get(&key(9_999), t0), Some(Verdict::Unauthenticated));
    }

    #[test]
    fn a_full_table_drops_the_expired_then_the_soonest_to_expire() {
        let t0 = Instant::now();
        let mut c = VerdictCache::new(3, 3);
        c.put(key(1), Verdict::Forbidden, t0); // expires at REFUSED_TTL
        c.put(key(2), Verdict::Allowed, t0); // ALLOWED_TTL
        c.put(key(3), Verdict::Allowed, t0 + Duration::from_secs(1));
        // Full: key 1 expires soonest and goes.
        c.put(key(4), Verdict::Allowed, t0 + Duration::from_secs(2));
        assert_eq!(c.len().0, 3);
        assert_eq!(c.get(&key(1), t0), None);
        assert_eq!(c.get(&key(2), t0), Some(Verdict::Allowed));
        // Later, with 2 and 3 expired, both go to make room (only one was needed).
        let later = t0 + ALLOWED_TTL + Duration::from_secs(1);
        c.put(key(5), Verdict::Allowed, later);
        assert_eq!(c.len().0, 2);
        assert_eq!(c.get(&key(4), later), Some(Verdict::Allowed));
        assert_eq!(c.get(&key(5), later), Some(Verdict::Allowed));
        // Replacing a key of a full table evicts nothing.
        let mut c = VerdictCache::new(2, 2);
        c.put(key(1), Verdict::Allowed, t0);
        c.put(key(2), Verdict::Allowed, t0);
        c.put(key(2), Verdict::Forbidden, t0);
        assert_eq!(c.get(&key(1), t0), Some(Verdict::Allowed));
        assert_eq!(c.get(&key(2), t0), Some(Verdict::Forbidden));
    }

    #[test]
    fn the_budget_bounds_reviews_by_burst_and_in_flight() {
        // Burst 3 at 1/s: three reviews, then none (the next token comes a second later,
        // far beyond this test's few microseconds).
        let budget = ReviewBudget::new(ReviewLimits {
            per_second: 1,
            burst: 3,
        });
        let mut granted = 0;
        for _ in 0..100 {
            if budget.try_start().is_some() {
                granted += 1;
            }
        }
        assert_eq!(granted, 3);

        // At most REVIEWS_IN_FLIGHT at once, however much rate is left; a finished review
        // frees its slot.
        let budget = ReviewBudget::new(ReviewLimits {
            per_second: 1000,
            burst: 1000,
        });
        let held: Vec<_> = (0..REVIEWS_IN_FLIGHT)
            .map(|_| budget.try_start().expect("a slot"))
            .collect();
        assert!(budget.try_start().is_none(), "every slot busy");
        drop(held);
        assert!(budget.try_start().is_some());
    }

    #[test]
    fn verdicts_map_to_status_codes() {
        assert_eq!(Verdict::Allowed.status(), StatusCode::OK);
        assert_eq!(Verdict::Unauthenticated.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Verdict::Forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(Verdict::Throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            Verdict::Unavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
