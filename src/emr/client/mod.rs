//! `ListRayCluster` client: signing, paging, retries, timeouts, client-side rate limiting; and
//! `GetRayCluster` (one cluster's instances) under the same protections.
//!
//! Paging follows the reference: `pageSize` (default 100 here) and `pageNum` from 1, until a page
//! comes back shorter than `pageSize`. There is no total count and no continuation token, so:
//!
//! * a listing either returns every page it walked or an error, never a silent prefix;
//! * a page that repeats an already-seen cluster ID (the server repeating a page, or the list
//!   changing under us) fails the listing with `IncompleteListing`;
//! * hitting `max_pages` fails the listing with `IncompleteListing`;
//! * **limitation**: a server that answers an *empty* page after a *full* page although more
//!   clusters exist is indistinguishable from a workspace holding exactly a multiple of
//!   `pageSize` clusters. The reference gives the client no way to tell them apart; such a
//!   listing looks complete.
//!
//! (Over 500 lines: paging, retries, deadlines and the rate limits of one listing belong
//! together; requests and responses are in `request.rs`; about a fifth is unit tests.)

mod inflight;
mod jobs;
mod queues;
mod request;

pub use jobs::JobListing;
pub use queues::{MAX_QUEUE_PAGES, MAX_QUEUES, QueueListing};
pub use request::read_body;
pub use request::{host_header, signed_headers};

use super::error::{EmrError, ErrorKind};
use super::model::{GetRayClusterResponse, RayCluster};
use super::sign;
use super::{ACTION_GET_RAY_CLUSTER, ACTION_LIST_RAY_CLUSTER, Credentials};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use request::{read_response, transport_error};
use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which signature the client sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureVersion {
    /// ACS3-HMAC-SHA256 (signature V3), what the official SDK sends by default.
    #[default]
    Acs3HmacSha256,
    /// ROA HMAC-SHA1 (`Authorization: acs AK:signature`).
    RoaHmacSha1,
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Per HTTP request (connect + response + body).
    pub request_timeout: Duration,
    /// Whole listing including retries and rate-limit waits.
    pub listing_timeout: Duration,
    /// 1..=100.
    pub page_size: u32,
    /// Hard page limit; reaching it fails the listing.
    pub max_pages: u32,
    /// Retries per page (so at most `max_retries + 1` requests per page).
    pub max_retries: u32,
    /// Client-side rate limit shared by everything using this client.
    pub requests_per_second: f64,
    pub burst: u32,
    pub signature: SignatureVersion,
    pub user_agent: String,
    /// Largest response body read per page; a larger one fails the listing.
    pub max_body_bytes: usize,
    /// Largest sum of the response bodies of one listing: a listing that would read more fails
    /// (`TooManyClusters`, nothing pruned) without reading further, so that what one workspace's
    /// endpoint sends is bounded whatever its page count.
    pub max_listing_bytes: usize,
    /// Largest sum of what all listings hold at once (the bytes read so far, plus the largest
    /// body of the page being read); one budget key (namespace) may hold its `budget_share`
    /// of it. A listing that would hold more fails at once as throttled (see `inflight.rs`).
    pub max_listing_bytes_in_flight: usize,
    /// Most clusters a listing may return; more fails it (`TooManyClusters`) without reading
    /// further pages.
    pub max_clusters: usize,
    /// The share (0–1] of the rate one budget key (a namespace) may use, so that one tenant's
    /// huge or slow workspaces cannot take the whole budget; 1: no per-key limit.
    pub budget_share: f64,
    /// Requests per second one credential identity (AccessKey ID) may send, whatever the
    /// namespaces using it — set it under the remote's quota for one AccessKey, so that no
    /// tenant can get a shared identity throttled; within it, one budget key may use its
    /// `budget_share`. `None`: `requests_per_second`.
    pub identity_requests_per_second: Option<f64>,
    /// Called once per HTTP attempt.
    pub observer: Option<Observer>,
}

/// Callback invoked once per HTTP attempt (e.g. to feed Prometheus metrics).
pub type Observer = Arc<dyn Fn(&RequestOutcome) + Send + Sync>;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            listing_timeout: Duration::from_secs(120),
            page_size: 100,
            max_pages: 1000,
            max_retries: 4,
            requests_per_second: 10.0,
            burst: 20,
            signature: SignatureVersion::Acs3HmacSha256,
            user_agent: format!("emr-ray-operator/{}", env!("CARGO_PKG_VERSION")),
            max_body_bytes: 8 * 1024 * 1024,
            max_listing_bytes: 64 * 1024 * 1024,
            max_listing_bytes_in_flight: 128 * 1024 * 1024,
            max_clusters: 10_000,
            budget_share: 1.0,
            identity_requests_per_second: None,
            observer: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("request_timeout", &self.request_timeout)
            .field("listing_timeout", &self.listing_timeout)
            .field("page_size", &self.page_size)
            .field("max_pages", &self.max_pages)
            .field("max_retries", &self.max_retries)
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .field("signature", &self.signature)
            .field("user_agent", &self.user_agent)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_listing_bytes", &self.max_listing_bytes)
            .field(
                "max_listing_bytes_in_flight",
                &self.max_listing_bytes_in_flight,
            )
            .field("max_clusters", &self.max_clusters)
            .field("budget_share", &self.budget_share)
            .field(
                "identity_requests_per_second",
                &self.identity_requests_per_second,
            )
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// One HTTP attempt, as reported to [`ClientConfig::observer`].
#[derive(Clone, Debug)]
pub struct RequestOutcome {
    /// The API action: [`ACTION_LIST_RAY_CLUSTER`] or [`ACTION_GET_RAY_CLUSTER`].
    pub operation: &'static str,
    /// `"200"`, the remote error code (`Throttling.User`, ...), the HTTP status when the error
    /// body has no code, or `"timeout"` / `"connect"` / `"network"` / `"malformed"`.
    pub code: String,
    pub http_status: Option<u16>,
    pub duration: Duration,
}

/// A complete listing of one workspace.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub clusters: Vec<RayCluster>,
    pub pages: u32,
    /// HTTP requests made, retries included.
    pub requests: u32,
    /// Request IDs of the successful page requests, in page order.
    pub request_ids: Vec<String>,
    /// Bytes of the page bodies read.
    pub bytes: usize,
    /// Each page's digest: given back to the next listing of the workspace, it tells an
    /// unchanged listing without decoding it.
    pub digests: PageDigests,
    /// Every page was byte for byte (its request ID aside) the page of the digests this
    /// listing was given: `clusters` is empty (not decoded), the clusters are those of the
    /// listing the digests came from.
    pub unchanged: bool,
}

/// Per page of a complete listing, a digest of its body (its request ID left out) and how many
/// clusters it held. Only ever compared within one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageDigests(Vec<(u64, usize)>);

impl PageDigests {
    /// Pages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one page request is: for [`EmrClient::fetch`].
struct Call<'a> {
    budget: Option<&'a str>,
    url: &'a url::Url,
    action: &'static str,
    /// For messages.
    workspace_id: &'a str,
    /// From 1, for messages.
    page_num: u32,
    creds: &'a Credentials,
    deadline: Instant,
    /// The page's digest last time: a body with that digest is not decoded again.
    unchanged_if: Option<u64>,
}

struct Inner {
    http: reqwest::Client,
    cfg: ClientConfig,
    limiter: DefaultDirectRateLimiter,
    /// Per budget key (a namespace): its share of the rate.
    shares: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// Per credential identity: its rate; per identity and budget key: its share of that.
    identities: Option<Identities>,
    /// What all listings hold at once.
    in_flight: Arc<inflight::InFlight>,
}

/// Budget keys remembered before idle ones are forgotten.
const MAX_IDLE_KEYS: usize = 4096;

/// The rate limits of credential identities (see
/// [`ClientConfig::identity_requests_per_second`]). Keys are AccessKey IDs (not secrets).
struct Identities {
    each: governor::DefaultKeyedRateLimiter<String>,
    /// Keyed by identity and budget key.
    shares: governor::DefaultKeyedRateLimiter<String>,
}

/// EMR Serverless Spark client: one HTTP connection pool and one rate limiter, shared by clones.
#[derive(Clone)]
pub struct EmrClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for EmrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmrClient")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// The error of a listing refused its bytes by [`inflight`].
fn too_much_in_flight(r: inflight::Refused) -> EmrError {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let whose = if r.by_share {
        "this namespace's listings hold"
    } else {
        "all listings hold"
    };
    EmrError::new(
        ErrorKind::Throttled,
        format!(
            "the operator is reading too much remote data at once: {whose} {:.1} MiB of {:.1} MiB \
             (--max-listing-bytes-in-flight, a namespace's share: --namespace-share); retried \
             after a backoff",
            mib(r.held),
            mib(r.limit)
        ),
    )
}

/// Checks one decoded page of clusters (no more than a page, every one with an ID not listed
/// on an earlier page) and adds them to the listing.
fn accept(
    page_size: usize,
    page_num: u32,
    request_id: Option<String>,
    page: Vec<RayCluster>,
    seen: &mut HashSet<String>,
    listing: &mut Listing,
) -> Result<(), EmrError> {
    let n = page.len();
    if n > page_size {
        return Err(EmrError::new(
            ErrorKind::Malformed,
            format!(
                "page {page_num} has {n} clusters although pageSize is {page_size}: the server ignores pageSize"
            ),
        )
        .with_request_id(request_id));
    }
    // Decoding accepted only valid cluster IDs (`text::is_cluster_id`: at most 128 characters
    // of a label-safe set), so quoting one in a message is safe.
    for c in page {
        if c.cluster_id.is_empty() {
            return Err(EmrError::new(
                ErrorKind::Malformed,
                format!("page {page_num} has a cluster without clusterId"),
            )
            .with_request_id(request_id));
        }
        if !seen.insert(c.cluster_id.clone()) {
            return Err(EmrError::new(
                ErrorKind::Incomplete,
                format!(
                    "page {page_num} repeats cluster {} already listed on an earlier page: the server repeated a page or the list changed while paging",
                    c.cluster_id
                ),
            )
            .with_request_id(request_id));
        }
        listing.clusters.push(c);
    }
    Ok(())
}

/// A page kept undecoded because it was unchanged that does not decode after all (a bug).
fn undecodable(page_num: u32, request_id: Option<String>, e: &serde_json::Error) -> EmrError {
    EmrError::new(
        ErrorKind::Malformed,
        format!(
            "page {page_num} does not decode: {}",
            super::text::decode_error(e)
        ),
    )
    .with_request_id(request_id)
}

/// The outcome of a paged listing run until its deadline: its own result, or a time-out that
/// says what (`what()`: "listing workspace w-1") and how far it got (`(pages, requests)`).
fn by_deadline(
    finished: Result<Result<(), EmrError>, tokio::time::error::Elapsed>,
    timeout: Duration,
    (pages, requests): (u32, u32),
    what: impl FnOnce() -> String,
) -> Result<(), EmrError> {
    finished.unwrap_or_else(|_| {
        Err(EmrError::new(
            ErrorKind::Timeout,
            format!(
                "{} did not complete within {timeout:?} ({pages} pages, {requests} requests so far)",
                what()
            ),
        ))
    })
}

/// Maximum retries of a 200 with a malformed body.
const MALFORMED_RETRIES: u32 = 2;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff_delay(attempt: u32) -> Duration {
    let max = crate::backoff::exponential(attempt.saturating_add(1), BACKOFF_BASE, BACKOFF_CAP);
    let ms = rand::rng().random_range(0..=max.as_millis() as u64);
    Duration::from_millis(ms)
}

impl EmrClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, EmrError> {
        let bad = |m: &str| EmrError::new(ErrorKind::Config, m.to_string());
        if !(1..=100).contains(&cfg.page_size) {
            return Err(bad("page_size must be between 1 and 100"));
        }
        if cfg.max_pages == 0 {
            return Err(bad("max_pages must be at least 1"));
        }
        if !(cfg.requests_per_second.is_finite() && cfg.requests_per_second > 0.0) {
            return Err(bad("requests_per_second must be a positive number"));
        }
        if cfg.request_timeout.is_zero() || cfg.listing_timeout.is_zero() {
            return Err(bad("timeouts must be positive"));
        }
        let burst = NonZeroU32::new(cfg.burst).ok_or_else(|| bad("burst must be at least 1"))?;
        let period = Duration::try_from_secs_f64(1.0 / cfg.requests_per_second)
            .map_err(|_| bad("requests_per_second is too low"))?;
        let quota = Quota::with_period(period)
            .ok_or_else(|| bad("requests_per_second is too high"))?
            .allow_burst(burst);
        let http = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.request_timeout)
            // A redirect would resend the signed request (and any STS token) to another host;
            // a 3xx is a failed listing instead.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| bad(&format!("cannot build HTTP client: {e}")))?;
        // `share` of `rate` (and of the burst), as a quota.
        let quota_of = |rate: f64, share: f64| -> Result<Quota, EmrError> {
            let share = share.clamp(0.01, 1.0);
            let period = Duration::try_from_secs_f64(1.0 / (rate * share))
                .map_err(|_| bad("a requests-per-second share is too low"))?;
            let burst = NonZeroU32::new(((f64::from(cfg.burst) * share) as u32).max(1))
                .unwrap_or(NonZeroU32::MIN);
            Ok(Quota::with_period(period)
                .ok_or_else(|| bad("requests_per_second is too high"))?
                .allow_burst(burst))
        };
        let shares = if cfg.budget_share < 1.0 {
            Some(RateLimiter::keyed(quota_of(
                cfg.requests_per_second,
                cfg.budget_share,
            )?))
        } else {
            None
        };
        let identities = match cfg.identity_requests_per_second {
            Some(rate) if rate.is_finite() && rate > 0.0 => Some(Identities {
                each: RateLimiter::keyed(quota_of(rate, 1.0)?),
                shares: RateLimiter::keyed(quota_of(rate, cfg.budget_share)?),
            }),
            Some(_) => return Err(bad("identity_requests_per_second must be positive")),
            None => None,
        };
        let in_flight = inflight::InFlight::new(
            cfg.max_listing_bytes_in_flight.max(cfg.max_body_bytes),
            cfg.budget_share,
        );
        Ok(EmrClient {
            inner: Arc::new(Inner {
                http,
                limiter: RateLimiter::direct(quota),
                shares,
                identities,
                in_flight,
                cfg,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// Lists every Ray cluster of `workspace_id`, or fails. See the module documentation.
    pub async fn list_ray_clusters(
        &self,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
    ) -> Result<Listing, EmrError> {
        self.list_ray_clusters_within(None, endpoint, workspace_id, creds)
            .await
    }

    /// [`Self::list_ray_clusters`], with every request also counted against `budget`'s share
    /// of the rate ([`ClientConfig::budget_share`]). In a span with the operation and the
    /// workspace (and the budget key: the controller's is the namespace), which the lines
    /// logged inside do not repeat.
    #[tracing::instrument(
        skip_all,
        fields(operation = ACTION_LIST_RAY_CLUSTER, namespace = budget, workspace = workspace_id)
    )]
    pub async fn list_ray_clusters_within(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
    ) -> Result<Listing, EmrError> {
        self.list_ray_clusters_since(budget, endpoint, workspace_id, creds, None)
            .await
    }

    /// [`Self::list_ray_clusters_within`], given the digests of the workspace's last complete
    /// listing: when every page comes back byte for byte as it was (its request ID aside), no
    /// page is decoded and the listing says [`Listing::unchanged`]. A page that changed makes
    /// the listing decode every page, the unchanged ones included.
    pub async fn list_ray_clusters_since(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
        previous: Option<&PageDigests>,
    ) -> Result<Listing, EmrError> {
        let (deadline, timeout) =
            self.preflight(endpoint, &[workspace_id], "workspace id is empty")?;
        let mut listing = Listing::default();
        let run = self.list_inner(
            budget,
            endpoint,
            workspace_id,
            creds,
            deadline,
            previous,
            &mut listing,
        );
        let finished = tokio::time::timeout_at(deadline, run).await;
        let progress = (listing.pages, listing.requests);
        by_deadline(finished, timeout, progress, || {
            format!("listing workspace {workspace_id}")
        })
        .map(|()| listing)
    }

    #[allow(clippy::too_many_arguments)]
    async fn list_inner(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        creds: &Credentials,
        deadline: Instant,
        previous: Option<&PageDigests>,
        listing: &mut Listing,
    ) -> Result<(), EmrError> {
        let cfg = &self.inner.cfg;
        let page_size = cfg.page_size as usize;
        let mut seen: HashSet<String> = HashSet::new();
        let mut hold = self.inner.in_flight.hold(budget);
        // Every page so far was as last time: such pages wait here undecoded.
        let mut unchanged = previous.is_some();
        let mut held: Vec<(u32, Option<String>, Vec<u8>)> = Vec::new();
        let mut count = 0usize;
        for page_num in 1..=cfg.max_pages {
            let known = previous
                .filter(|_| unchanged)
                .and_then(|p| p.0.get(page_num as usize - 1))
                .copied();
            let (page, request_id) = self
                .fetch_page(
                    budget,
                    endpoint,
                    workspace_id,
                    page_num,
                    creds,
                    deadline,
                    known.map(|(digest, _)| digest),
                    listing,
                    &mut hold,
                )
                .await?;
            listing.pages = page_num;
            if let Some(id) = request_id.clone() {
                listing.request_ids.push(id);
            }
            let n = match page.clusters {
                // The same bytes as last time: the same count, which passed every check.
                request::PageClusters::Unchanged(body) => {
                    held.push((page_num, request_id.clone(), body));
                    known.map_or(0, |(_, n)| n)
                }
                request::PageClusters::Decoded(clusters) => {
                    unchanged = false;
                    for (num, rid, body) in held.drain(..) {
                        let clusters = request::ClusterPage::decode_unchanged(&body)
                            .map_err(|e| undecodable(num, rid.clone(), &e))?;
                        accept(page_size, num, rid, clusters, &mut seen, listing)?;
                    }
                    let clusters = clusters.unwrap_or_default();
                    let n = clusters.len();
                    accept(
                        page_size,
                        page_num,
                        request_id.clone(),
                        clusters,
                        &mut seen,
                        listing,
                    )?;
                    n
                }
            };
            listing.digests.0.push((page.digest, n));
            count += n;
            if count > cfg.max_clusters {
                // Stop paging: more would only cost memory and requests.
                return Err(EmrError::new(
                    ErrorKind::TooManyClusters,
                    format!(
                        "workspace {workspace_id} has more than {} Ray clusters, the operator's \
                         limit (--max-clusters-per-workspace)",
                        cfg.max_clusters
                    ),
                )
                .with_request_id(request_id));
            }
            if n < page_size {
                listing.unchanged =
                    unchanged && previous.is_some_and(|p| p.len() == listing.digests.len());
                if !listing.unchanged {
                    for (num, rid, body) in held.drain(..) {
                        let clusters = request::ClusterPage::decode_unchanged(&body)
                            .map_err(|e| undecodable(num, rid.clone(), &e))?;
                        accept(page_size, num, rid, clusters, &mut seen, listing)?;
                    }
                }
                return Ok(());
            }
        }
        Err(EmrError::new(
            ErrorKind::Incomplete,
            format!(
                "workspace {workspace_id} has more than {} pages of {} clusters (max_pages reached)",
                cfg.max_pages, cfg.page_size
            ),
        ))
    }

    /// One page of `ListRayCluster`, with retries.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_page(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        page_num: u32,
        creds: &Credentials,
        deadline: Instant,
        unchanged_if: Option<u64>,
        listing: &mut Listing,
        hold: &mut inflight::Hold,
    ) -> Result<(request::ClusterPage, Option<String>), EmrError> {
        let url = Self::page_url(endpoint, workspace_id, page_num, self.inner.cfg.page_size);
        let call = Call {
            budget,
            url: &url,
            action: ACTION_LIST_RAY_CLUSTER,
            workspace_id,
            page_num,
            creds,
            deadline,
            unchanged_if,
        };
        self.fetch(&call, &mut listing.bytes, &mut listing.requests, hold)
            .await
    }

    /// One page of any listing, with retries, rate limits and the byte budgets; `bytes` and
    /// `requests` are the listing's running totals.
    async fn fetch<P: request::Page>(
        &self,
        call: &Call<'_>,
        bytes: &mut usize,
        requests: &mut u32,
        hold: &mut inflight::Hold,
    ) -> Result<(P, Option<String>), EmrError> {
        let Call {
            budget,
            workspace_id,
            page_num,
            creds,
            deadline,
            ..
        } = *call;
        let cfg = &self.inner.cfg;
        let mut attempt = 0u32;
        let mut malformed = 0u32;
        // What this page may still read of the listing's byte budget.
        let remaining = cfg.max_listing_bytes.saturating_sub(*bytes);
        let max_body = cfg.max_body_bytes.min(remaining);
        let listing_too_large = || {
            EmrError::new(
                ErrorKind::TooManyClusters,
                format!(
                    "the listing of workspace {workspace_id} is larger than the operator's limit \
                     of {} bytes (--max-listing-bytes) after {} pages",
                    cfg.max_listing_bytes,
                    page_num - 1
                ),
            )
        };
        if remaining == 0 {
            return Err(listing_too_large());
        }
        loop {
            self.wait_turn(budget, creds).await;
            // This page's largest body, on top of what the listing read so far.
            if let Err(r) = hold.resize(bytes.saturating_add(max_body)) {
                return Err(too_much_in_flight(r));
            }
            let started = std::time::Instant::now();
            let result = self
                .send_once::<P>(call.url, call.action, creds, max_body, call.unchanged_if)
                .await;
            // Only the bodies kept stay held.
            let _ = hold.resize(*bytes + result.as_ref().map_or(0, |(_, _, b)| *b));
            *requests += 1;
            let outcome = self.observe(call.action, started, result.as_ref().map(|_| ()));
            let err = match result {
                Ok((page, request_id, read)) => {
                    *bytes += read;
                    return Ok((page, request_id));
                }
                // A successful page over what the listing may still read (an error's body
                // over it stays what it is: throttling, 5xx).
                Err((e, _))
                    if max_body < cfg.max_body_bytes
                        && e.http_status.is_some_and(|s| (200..300).contains(&s))
                        && request::is_body_too_large(&e) =>
                {
                    return Err(listing_too_large().with_request_id(e.request_id));
                }
                Err((e, _)) => e,
            };
            tracing::debug!(
                page = page_num,
                attempt,
                code = outcome.code.as_str(),
                request_id = err.request_id.as_deref().unwrap_or(""),
                "EMR request failed: {err}"
            );
            match retry_delay(&err, attempt, &mut malformed, cfg.max_retries, deadline) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(err),
            }
            attempt += 1;
        }
    }

    /// Waits for this request's turn: the budget key's share, the credential identity's rate
    /// (and the key's share of it), then the client's rate.
    async fn wait_turn(&self, budget: Option<&str>, creds: &Credentials) {
        if let (Some(shares), Some(key)) = (&self.inner.shares, budget) {
            shares.until_key_ready(&key.to_string()).await;
        }
        if let Some(ids) = &self.inner.identities {
            // Keys come from tenants' Secrets: forget idle ones rather than grow.
            if ids.shares.len() > MAX_IDLE_KEYS {
                ids.shares.retain_recent();
                ids.each.retain_recent();
            }
            let id = &creds.access_key_id;
            if let Some(key) = budget {
                ids.shares.until_key_ready(&format!("{id}\n{key}")).await;
            }
            ids.each.until_key_ready(id).await;
        }
        self.inner.limiter.until_ready().await;
    }

    /// Reports one HTTP attempt to the observer; returns what was reported.
    fn observe(
        &self,
        operation: &'static str,
        started: std::time::Instant,
        result: Result<(), &(EmrError, String)>,
    ) -> RequestOutcome {
        let outcome = match result {
            Ok(()) => RequestOutcome {
                operation,
                code: "200".into(),
                http_status: Some(200),
                duration: started.elapsed(),
            },
            Err((e, code)) => RequestOutcome {
                operation,
                code: code.clone(),
                http_status: e.http_status,
                duration: started.elapsed(),
            },
        };
        if let Some(obs) = &self.inner.cfg.observer {
            obs(&outcome);
        }
        outcome
    }

    /// What every call checks before its first request: no empty ID (`empty` says which), an
    /// http(s) endpoint; then its deadline, `listing_timeout` from now (and that timeout).
    fn preflight(
        &self,
        endpoint: &url::Url,
        ids: &[&str],
        empty: &'static str,
    ) -> Result<(Instant, Duration), EmrError> {
        if ids.iter().any(|id| id.trim().is_empty()) {
            return Err(EmrError::new(ErrorKind::InvalidRequest, empty));
        }
        if endpoint.scheme() != "http" && endpoint.scheme() != "https" {
            return Err(EmrError::new(
                ErrorKind::Config,
                format!("endpoint must be http or https, not {}", endpoint.scheme()),
            ));
        }
        let timeout = self.inner.cfg.listing_timeout;
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Ok((deadline, timeout)),
            None => Err(EmrError::new(
                ErrorKind::Config,
                "listing timeout is too long",
            )),
        }
    }

    /// One cluster's details (`GetRayCluster`), of which only the instances, state and ID are
    /// decoded (see [`GetRayClusterResponse`]): signed, no redirect, within the request timeout
    /// and the listing timeout (retries included), its body capped at `max_body_bytes` and held
    /// in the bytes-in-flight budget while it is read, every attempt rate limited like a page
    /// (the `budget` key's share, the identity's rate), throttling and 5xx retried with backoff
    /// (or the `x-acs-retry-after` asked for). In a span like the listings', with the cluster.
    #[tracing::instrument(
        skip_all,
        fields(
            operation = ACTION_GET_RAY_CLUSTER,
            namespace = budget,
            workspace = workspace_id,
            cluster = cluster_id
        )
    )]
    pub async fn get_ray_cluster_within(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        cluster_id: &str,
        creds: &Credentials,
    ) -> Result<GetRayClusterResponse, EmrError> {
        let (deadline, timeout) = self.preflight(
            endpoint,
            &[workspace_id, cluster_id],
            "workspace or cluster id is empty",
        )?;
        let get = self.get_inner(budget, endpoint, workspace_id, cluster_id, creds, deadline);
        match tokio::time::timeout_at(deadline, get).await {
            Ok(r) => r,
            // Cluster IDs reaching here were listed, so valid (`text::is_cluster_id`): safe to quote.
            Err(_) => Err(EmrError::new(
                ErrorKind::Timeout,
                format!(
                    "GetRayCluster of cluster {cluster_id} did not complete within {timeout:?}"
                ),
            )),
        }
    }

    async fn get_inner(
        &self,
        budget: Option<&str>,
        endpoint: &url::Url,
        workspace_id: &str,
        cluster_id: &str,
        creds: &Credentials,
        deadline: Instant,
    ) -> Result<GetRayClusterResponse, EmrError> {
        let cfg = &self.inner.cfg;
        let url = Self::cluster_url(endpoint, workspace_id, cluster_id);
        let mut hold = self.inner.in_flight.hold(budget);
        let mut attempt = 0u32;
        let mut malformed = 0u32;
        loop {
            self.wait_turn(budget, creds).await;
            if let Err(r) = hold.resize(cfg.max_body_bytes) {
                return Err(too_much_in_flight(r));
            }
            let started = std::time::Instant::now();
            let result = self
                .send_signed(&url, creds, ACTION_GET_RAY_CLUSTER)
                .await
                .map(|resp| (resp, cfg.max_body_bytes));
            let result = match result {
                Ok((resp, max)) => request::read_detail(resp, max).await,
                Err(e) => Err(e),
            };
            // Nothing is kept past the decoding.
            let _ = hold.resize(0);
            let outcome =
                self.observe(ACTION_GET_RAY_CLUSTER, started, result.as_ref().map(|_| ()));
            let err = match result {
                Ok((detail, _, _)) if detail.cluster_id != cluster_id => {
                    return Err(EmrError::new(
                        ErrorKind::Malformed,
                        format!(
                            "GetRayCluster of cluster {cluster_id} answered for another cluster"
                        ),
                    )
                    .with_request_id(detail.request_id));
                }
                Ok((detail, request_id, _)) => {
                    return Ok(GetRayClusterResponse {
                        request_id,
                        ..detail
                    });
                }
                Err((e, _)) => e,
            };
            tracing::debug!(
                attempt,
                code = outcome.code.as_str(),
                request_id = err.request_id.as_deref().unwrap_or(""),
                "EMR GetRayCluster failed: {err}"
            );
            match retry_delay(&err, attempt, &mut malformed, cfg.max_retries, deadline) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(err),
            }
            attempt += 1;
        }
    }

    /// The request URL of one cluster's `GetRayCluster` (no query: the SDK sends none).
    pub fn cluster_url(endpoint: &url::Url, workspace_id: &str, cluster_id: &str) -> url::Url {
        let mut url = endpoint.clone();
        let base = endpoint.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/api/v1/workspaces/{}/rayCluster/{}",
            sign::rfc3986_encode(workspace_id),
            sign::rfc3986_encode(cluster_id)
        ));
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    /// Sends one signed, body-less GET within the request timeout.
    async fn send_signed(
        &self,
        url: &url::Url,
        creds: &Credentials,
        action: &str,
    ) -> Result<reqwest::Response, (EmrError, String)> {
        let cfg = &self.inner.cfg;
        let headers = signed_headers(cfg.signature, "GET", url, &cfg.user_agent, creds, action);
        let mut req = self
            .inner
            .http
            .get(url.clone())
            .timeout(cfg.request_timeout);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.send().await.map_err(transport_error)
    }

    /// Builds the request URL of one page.
    pub fn page_url(
        endpoint: &url::Url,
        workspace_id: &str,
        page_num: u32,
        page_size: u32,
    ) -> url::Url {
        let mut url = endpoint.clone();
        let base = endpoint.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/api/v1/workspaces/{}/rayCluster",
            sign::rfc3986_encode(workspace_id)
        ));
        url.set_query(Some(&format!("pageNum={page_num}&pageSize={page_size}")));
        url.set_fragment(None);
        url
    }

    /// One signed HTTP attempt. The error carries the outcome code for the observer.
    async fn send_once<P: request::Page>(
        &self,
        url: &url::Url,
        action: &str,
        creds: &Credentials,
        max_body: usize,
        unchanged_if: Option<u64>,
    ) -> Result<(P, Option<String>, usize), (EmrError, String)> {
        let resp = self.send_signed(url, creds, action).await?;
        read_response(resp, max_body, unchanged_if).await
    }
}

/// How long to wait before retrying after `err` (attempt `attempt`, from 0), or `None` when it
/// is not retried: throttling, 5xx, network errors and timeouts up to `max_retries`, malformed
/// bodies up to [`MALFORMED_RETRIES`], never past `deadline` (then the real cause is reported).
fn retry_delay(
    err: &EmrError,
    attempt: u32,
    malformed: &mut u32,
    max_retries: u32,
    deadline: Instant,
) -> Option<Duration> {
    let retry = match err.kind {
        ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::Timeout => attempt < max_retries,
        ErrorKind::Malformed => {
            *malformed += 1;
            *malformed <= MALFORMED_RETRIES && attempt < max_retries
        }
        _ => false,
    };
    if !retry {
        return None;
    }
    let delay = match (err.kind, err.retry_after) {
        (_, Some(d)) => d,
        (ErrorKind::Throttled, None) => Duration::from_millis(500) + backoff_delay(attempt),
        _ => backoff_delay(attempt),
    };
    Instant::now()
        .checked_add(delay)
        .filter(|t| *t < deadline)
        .map(|_| delay)
}

/// The longest `x-acs-retry-after` honoured; longer values are capped (never overflow).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// An `x-acs-retry-after` value (a positive whole number of seconds) as a delay, capped at
/// [`MAX_RETRY_AFTER`]; `None` for anything else. A number too large for `u64` is capped too.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let digits = v.strip_prefix('+').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits.parse::<u64>().unwrap_or(u64::MAX);
    (secs > 0).then(|| Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_url_encodes_workspace() {
        let ep = url::Url::parse("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com").unwrap();
        assert_eq!(
            EmrClient::page_url(&ep, "w-d2d82aa09155", 1, 100).as_str(),
            "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/api/v1/workspaces/w-d2d82aa09155/rayCluster?pageNum=1&pageSize=100"
        );
        let ep = url::Url::parse("http://127.0.0.1:8480/prefix/").unwrap();
        assert_eq!(
            EmrClient::page_url(&ep, "w/x y", 2, 5).as_str(),
            "http://127.0.0.1:8480/prefix/api/v1/workspaces/w%2Fx%20y/rayCluster?pageNum=2&pageSize=5"
        );
    }

    #[test]
    fn retry_after_is_positive_seconds_capped() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        // Found by fuzz/retry_after: more digits than u64 holds were ignored, not capped.
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after(&"0".repeat(40)), None);
        for bad in ["", "0", "-1", "1.5", "2s", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_is_bounded() {
        for a in 0..40 {
            assert!(backoff_delay(a) <= BACKOFF_CAP);
        }
        assert!(backoff_delay(0) <= BACKOFF_BASE);
    }

    #[test]
    fn config_validation() {
        for cfg in [
            ClientConfig {
                page_size: 0,
                ..Default::default()
            },
            ClientConfig {
                page_size: 101,
                ..Default::default()
            },
            ClientConfig {
                burst: 0,
                ..Default::default()
            },
            ClientConfig {
                requests_per_second: 0.0,
                ..Default::default()
            },
        ] {
            assert_eq!(EmrClient::new(cfg).unwrap_err().kind, ErrorKind::Config);
        }
        assert!(EmrClient::new(ClientConfig::default()).is_ok());
    }
}
