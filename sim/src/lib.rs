//! In-process simulator of the EMR Serverless Spark `ListRayCluster` API
//! (`shared/reference/list-ray-cluster.md`, `alibaba-openapi.md`), of `GetRayCluster`
//! (`GET /api/v1/workspaces/{ws}/rayCluster/{clusterId}`, no query parameters, a flat body:
//! as the official SDK 2.3.0 gives it, see [`detail`]) and of `ListWorkspaceQueues` (see
//! [`queues`]), with signature verification, fault injection, statistics and an unsigned admin
//! API under `/admin/`.
//!
//! Behaviour choices where the reference is silent (documented here):
//! * an unknown workspace answers **404 `InvalidWorkspaceId.NotFound`**: the real service checks
//!   the workspace before listing, and an empty list would hide a typo in a workspace ID. A
//!   workspace that exists with zero clusters answers an empty `rayClusters`;
//! * clusters are paged in insertion order (upserts replace in place, new clusters go last);
//! * a page past the end is an empty `rayClusters`;
//! * `pageSize` outside 1..=100 or not an integer, and `pageNum` < 1 or not an integer, answer
//!   400 `InvalidParameter`;
//! * an unknown path or method answers 404 `InvalidAction.NotFound`;
//! * `x-acs-version` must be `2023-08-08` (400 `InvalidVersion` otherwise); `x-acs-action`, when
//!   present, must be the route's (`ListRayCluster`, `GetRayCluster`, `ListWorkspaceQueues`);
//! * `GetRayCluster` of an unknown workspace answers 404 `InvalidWorkspaceId.NotFound`, of an
//!   unknown cluster 404 `InvalidRayClusterId.NotFound` (the reference documents no code; this
//!   follows the workspace's); the throttling, server-error, truncated and malformed-body
//!   faults apply to it as to a page;
//! * `ListWorkspaceQueues` (`GET /api/v1/workspaces/{ws}/queues`): see [`queues`];
//! * order of checks: route, signature (see [`verify`]), version, faults (throttling, 5xx),
//!   parameters, workspace, body faults. Latency is added before everything;
//! * STS `AssumeRoleWithOIDC` (unsigned, `POST /?Action=AssumeRoleWithOIDC...`) issues
//!   temporary `STS.` keys with a security token, for RRSA tests. Once an OIDC provider is
//!   registered ([`oidc`]), the token is verified against the provider the request names
//!   (signature by its published keys, issuer, audience, validity): an unknown provider answers
//!   404 `EntityNotExist.OIDCProvider`, a token that fails 400 `AuthenticationFail.OIDCToken.Invalid`.
//!   With none registered any non-empty token is accepted.
//!
//! * `ListRayJob` (`GET /api/v1/workspaces/{ws}/rayJob`) is answered as the official SDK calls
//!   it: see [`jobs`]; `x-acs-action`, when present, must name the route's action.
//!
//! Admin API (unsigned, JSON):
//! `GET /admin/workspaces`, `GET|POST /admin/workspaces/{ws}/clusters`,
//! `PUT|DELETE /admin/workspaces/{ws}/clusters/{id}`,
//! `PUT /admin/workspaces/{ws}/clusters/{id}/state {"state":"Stopped"}`,
//! `GET|PUT /admin/workspaces/{ws}/clusters/{id}/detail` (a [`ClusterDetail`]: instances and
//! the secret fields `GetRayCluster` adds),
//! `POST /admin/workspaces/{ws}/generate {"count":N,"prefix":"..."}`,
//! `PUT|DELETE /admin/workspaces/{ws}` (create empty / delete),
//! `GET|PUT /admin/workspaces/{ws}/queues` (the API's queue objects),
//! `PUT /admin/workspaces/{ws}/queues/{name}/usage {"cpu","memoryGi","gpu"}` or `{"raw":"..."}`,
//! `GET|POST /admin/workspaces/{ws}/jobs` (a job in the SDK's field names, plus an optional
//! `taskBizId`), `PUT|DELETE /admin/workspaces/{ws}/jobs/{id}`,
//! `POST /admin/workspaces/{ws}/generate-jobs {"count":N,"prefix":"..","spreadSecs":S}`,
//! `GET|PUT /admin/faults`,
//! `GET|DELETE /admin/stats`, `POST /admin/access-keys {"accessKeyId","accessKeySecret",
//! "securityToken"?}`.

mod admin;
mod api;
pub mod detail;
pub mod generate;
pub mod jobs;
pub mod oidc;
pub mod queues;
mod state;
pub mod verify;

pub use detail::ClusterDetail;
pub use state::SimState;

use axum::Router;
use emr_ray_operator::emr::model::{ListRayClusterResponse, RayCluster};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Workspace of the reference's example.
pub const DEFAULT_WORKSPACE: &str = "w-d2d82aa09155";
pub const DEFAULT_ACCESS_KEY_ID: &str = "LTAI5tSimulatorKey";
pub const DEFAULT_ACCESS_KEY_SECRET: &str = "sim-secret-please-change";
/// The reference's example response.
pub const REFERENCE_EXAMPLE: &str = include_str!("../../tests/data/reference-example.json");

pub struct SimConfig {
    /// `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// `(id, secret)`.
    pub access_keys: Vec<(String, String)>,
    pub workspaces: BTreeMap<String, Vec<RayCluster>>,
}

impl SimConfig {
    /// The reference's example cluster in workspace `w-d2d82aa09155`, access key
    /// `LTAI5tSimulatorKey` / `sim-secret-please-change`, random loopback port.
    pub fn with_default_fixture() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_keys: vec![(
                DEFAULT_ACCESS_KEY_ID.to_string(),
                DEFAULT_ACCESS_KEY_SECRET.to_string(),
            )],
            workspaces: parse_fixture(REFERENCE_EXAMPLE).expect("reference example parses"),
        }
    }
}

#[derive(Deserialize)]
struct WorkspacesFixture {
    workspaces: BTreeMap<String, Vec<RayCluster>>,
}

/// Parses a fixture: either the reference's response shape `{"requestId","rayClusters":[...]}`
/// (loaded into workspace `w-d2d82aa09155`) or `{"workspaces":{"w-..":[...]}}`.
pub fn parse_fixture(text: &str) -> anyhow::Result<BTreeMap<String, Vec<RayCluster>>> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    if v.get("workspaces").is_some() {
        let f: WorkspacesFixture = serde_json::from_value(v)?;
        return Ok(f.workspaces);
    }
    let page: ListRayClusterResponse = serde_json::from_value(v)?;
    let clusters = page
        .ray_clusters
        .ok_or_else(|| anyhow::anyhow!("fixture has neither \"workspaces\" nor \"rayClusters\""))?;
    Ok(BTreeMap::from([(DEFAULT_WORKSPACE.to_string(), clusters)]))
}

/// Fault injection settings. JSON (admin API) uses camelCase names; snake_case is accepted too.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// Fraction of requests answered 500 `InternalError` / 503 `ServiceUnavailable`.
    #[serde(alias = "server_error_rate")]
    pub server_error_rate: f64,
    /// The next N (authenticated) requests are answered 500 / 503, before `serverErrorRate`
    /// applies (a test that must see a server error does not depend on chance).
    #[serde(alias = "server_error_next")]
    pub server_error_next: u32,
    /// Fraction of requests answered 400 `Throttling.User`.
    #[serde(alias = "throttle_rate")]
    pub throttle_rate: f64,
    /// Sent as `x-acs-retry-after` on throttling when > 0.
    #[serde(alias = "throttle_retry_after_secs")]
    pub throttle_retry_after_secs: u64,
    /// The next N (authenticated) requests are throttled.
    #[serde(alias = "throttle_next")]
    pub throttle_next: u32,
    /// Added before answering any API request.
    #[serde(alias = "latency_ms")]
    pub latency_ms: u64,
    /// Fraction of 200s whose JSON body is cut in half.
    #[serde(alias = "truncated_body_rate")]
    pub truncated_body_rate: f64,
    /// Fraction of 200s whose body is not the documented JSON.
    #[serde(alias = "malformed_body_rate")]
    pub malformed_body_rate: f64,
    /// Every page after the first returns page 1 again.
    #[serde(alias = "repeat_page")]
    pub repeat_page: bool,
    /// After page 1, return an empty page although more exist.
    #[serde(alias = "end_early")]
    pub end_early: bool,
    /// When not empty, the faults above (latency aside) apply only to requests of these
    /// actions (`ListRayCluster`, `GetRayCluster`, `ListRayJob`, ...).
    pub actions: Vec<String>,
    /// When set, the faults apply only to requests of this action (a shorthand for one
    /// `actions` entry).
    #[serde(alias = "only_action", skip_serializing_if = "Option::is_none")]
    pub only_action: Option<String>,
}

impl Faults {
    /// Whether the faults apply to a request of `action`.
    pub fn applies_to(&self, action: &str) -> bool {
        (self.actions.is_empty() || self.actions.iter().any(|a| a == action))
            && self.only_action.as_deref().is_none_or(|a| a == action)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    /// API requests (admin excluded), whatever their outcome, counted once answered (after the
    /// latency fault).
    pub requests: u64,
    /// API requests received (admin and STS excluded), counted on arrival, before the latency
    /// fault: a test sees a request in flight.
    pub arrived: u64,
    pub by_workspace: BTreeMap<String, u64>,
    /// API requests by action (`ListRayCluster`, `GetRayCluster`, `ListRayJob`, ...), whatever
    /// their outcome.
    pub by_action: BTreeMap<String, u64>,
    /// Genuine 200 listings.
    pub ok: u64,
    /// Rejected by signature / key / token / time / nonce checks.
    pub rejected_auth: u64,
    pub faults_injected: u64,
    /// Maximum number of API requests received within any sliding one-second window.
    pub max_requests_in_any_second: u64,
    /// `AssumeRoleWithOIDC` calls.
    pub sts_requests: u64,
    /// Subjects of the OIDC tokens a registered provider verified, with their counts.
    pub sts_verified_subjects: BTreeMap<String, u64>,
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub state: SimState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// `http://<addr>/`.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/", self.addr)).expect("valid url")
    }

    /// Stops accepting, lets in-flight requests finish for up to a second, then aborts.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

pub struct Simulator;

impl Simulator {
    /// Binds `cfg.listen` and serves on the current tokio runtime.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
        let state = SimState::new(&cfg);
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("simulator server error: {e}");
            }
        });
        Ok(SimHandle {
            addr,
            state,
            shutdown: Some(tx),
            task,
        })
    }
}

/// The simulator's HTTP application.
pub fn router(state: SimState) -> Router {
    Router::new()
        .nest("/admin", admin::router())
        .fallback(api::api)
        .with_state(state)
}

fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures() {
        let w = parse_fixture(REFERENCE_EXAMPLE).unwrap();
        assert_eq!(w[DEFAULT_WORKSPACE][0].cluster_id, "ray-uiulpgow9xljimm1");
        let w = parse_fixture(r#"{"workspaces":{"w-a":[{"clusterId":"c1"}],"w-b":[]}}"#).unwrap();
        assert_eq!(w.len(), 2);
        assert!(parse_fixture(r#"{"requestId":"x"}"#).is_err());
    }

    #[test]
    fn faults_accept_both_casings() {
        let f: Faults =
            serde_json::from_str(r#"{"throttle_next":2,"latencyMs":5,"endEarly":true}"#).unwrap();
        assert_eq!((f.throttle_next, f.latency_ms, f.end_early), (2, 5, true));
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["throttleNext"], 2);
        let f: Faults = serde_json::from_str(r#"{"serverErrorNext":3}"#).unwrap();
        assert_eq!(f.server_error_next, 3);
    }
}
