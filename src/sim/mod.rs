//! In-process simulator of the EMR Serverless Spark `ListRayCluster` API
//! (`shared/reference/list-ray-cluster.md`, `alibaba-openapi.md`), with signature verification,
//! fault injection, statistics and an unsigned admin API under `/admin/`.
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
//!   present, must be `ListRayCluster`;
//! * order of checks: route, signature (see [`verify`]), version, faults (throttling, 5xx),
//!   parameters, workspace, body faults. Latency is added before everything;
//! * STS `AssumeRoleWithOIDC` (unsigned, `POST /?Action=AssumeRoleWithOIDC...`) issues
//!   temporary `STS.` keys with a security token, for RRSA tests; any non-empty OIDC token is
//!   accepted.
//!
//! Admin API (unsigned, JSON):
//! `GET /admin/workspaces`, `GET|POST /admin/workspaces/{ws}/clusters`,
//! `PUT|DELETE /admin/workspaces/{ws}/clusters/{id}`,
//! `PUT /admin/workspaces/{ws}/clusters/{id}/state {"state":"Stopped"}`,
//! `POST /admin/workspaces/{ws}/generate {"count":N,"prefix":"..."}`,
//! `PUT|DELETE /admin/workspaces/{ws}` (create empty / delete), `GET|PUT /admin/faults`,
//! `GET|DELETE /admin/stats`, `POST /admin/access-keys {"accessKeyId","accessKeySecret",
//! "securityToken"?}`.

pub mod generate;
pub mod verify;

use crate::emr::model::{ClusterState, ListRayClusterResponse, RayCluster};
use crate::emr::sign;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use verify::{KeyEntry, NonceCache, Received};

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
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    /// API requests (admin excluded), whatever their outcome.
    pub requests: u64,
    pub by_workspace: BTreeMap<String, u64>,
    /// Genuine 200 listings.
    pub ok: u64,
    /// Rejected by signature / key / token / time / nonce checks.
    pub rejected_auth: u64,
    pub faults_injected: u64,
    /// Maximum number of API requests received within any sliding one-second window.
    pub max_requests_in_any_second: u64,
    /// `AssumeRoleWithOIDC` calls.
    pub sts_requests: u64,
}

#[derive(Default)]
struct StatsInner {
    stats: SimStats,
    window: VecDeque<Instant>,
}

struct Inner {
    workspaces: Mutex<BTreeMap<String, Vec<RayCluster>>>,
    keys: Mutex<HashMap<String, KeyEntry>>,
    nonces: Mutex<NonceCache>,
    faults: Mutex<Faults>,
    stats: Mutex<StatsInner>,
}

/// Shared simulator state; every operation of the admin API is available here.
#[derive(Clone)]
pub struct SimState(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    pub fn new(cfg: &SimConfig) -> Self {
        let state = SimState(Arc::new(Inner {
            workspaces: Mutex::new(cfg.workspaces.clone()),
            keys: Mutex::new(HashMap::new()),
            nonces: Mutex::new(NonceCache::default()),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(StatsInner::default()),
        }));
        for (id, secret) in &cfg.access_keys {
            state.add_access_key(id, secret);
        }
        state
    }

    /// Inserts or replaces (by `clusterId`) a cluster; creates the workspace if needed.
    pub fn upsert_cluster(&self, ws: &str, c: RayCluster) {
        let mut w = lock(&self.0.workspaces);
        let list = w.entry(ws.to_string()).or_default();
        match list.iter_mut().find(|x| x.cluster_id == c.cluster_id) {
            Some(existing) => *existing = c,
            None => list.push(c),
        }
    }

    pub fn remove_cluster(&self, ws: &str, id: &str) -> bool {
        let mut w = lock(&self.0.workspaces);
        match w.get_mut(ws) {
            Some(list) => {
                let before = list.len();
                list.retain(|c| c.cluster_id != id);
                list.len() != before
            }
            None => false,
        }
    }

    pub fn set_state(&self, ws: &str, id: &str, state: ClusterState) -> bool {
        let mut w = lock(&self.0.workspaces);
        let Some(c) = w
            .get_mut(ws)
            .and_then(|l| l.iter_mut().find(|c| c.cluster_id == id))
        else {
            return false;
        };
        let now = jiff::Timestamp::now().as_millisecond();
        if matches!(state, ClusterState::Starting | ClusterState::Running)
            && !matches!(
                c.state,
                Some(ClusterState::Starting) | Some(ClusterState::Running)
            )
        {
            c.start_time = Some(now);
        }
        c.state = Some(state);
        c.modified_time = Some(now);
        true
    }

    pub fn clusters(&self, ws: &str) -> Vec<RayCluster> {
        lock(&self.0.workspaces)
            .get(ws)
            .cloned()
            .unwrap_or_default()
    }

    /// Creates an empty workspace (no-op if it exists).
    pub fn ensure_workspace(&self, ws: &str) {
        lock(&self.0.workspaces).entry(ws.to_string()).or_default();
    }

    /// Deletes a workspace and its clusters.
    pub fn remove_workspace(&self, ws: &str) -> bool {
        lock(&self.0.workspaces).remove(ws).is_some()
    }

    /// Workspace IDs with their cluster counts.
    pub fn workspaces(&self) -> BTreeMap<String, usize> {
        lock(&self.0.workspaces)
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// Replaces the clusters of a workspace.
    pub fn set_clusters(&self, ws: &str, clusters: Vec<RayCluster>) {
        lock(&self.0.workspaces).insert(ws.to_string(), clusters);
    }

    /// Appends `count` generated clusters (names `<prefix>-<n>`); returns their IDs.
    pub fn generate(&self, ws: &str, count: usize, prefix: &str) -> Vec<String> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut w = lock(&self.0.workspaces);
        let list = w.entry(ws.to_string()).or_default();
        let start = list.len();
        let mut ids = Vec::with_capacity(count);
        let mut seen: std::collections::HashSet<String> =
            list.iter().map(|c| c.cluster_id.clone()).collect();
        for i in 0..count {
            let mut c = generate::cluster(prefix, start + i, now);
            while !seen.insert(c.cluster_id.clone()) {
                c = generate::cluster(prefix, start + i, now);
            }
            ids.push(c.cluster_id.clone());
            list.push(c);
        }
        ids
    }

    pub fn set_faults(&self, f: Faults) {
        *lock(&self.0.faults) = f;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.0.faults).clone()
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.0.stats).stats.clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.0.stats) = StatsInner::default();
    }

    pub fn add_access_key(&self, id: &str, secret: &str) {
        lock(&self.0.keys).insert(
            id.to_string(),
            KeyEntry {
                secret: secret.to_string(),
                security_token: None,
                expiration: None,
            },
        );
    }

    /// An STS access key that must come with `security_token`.
    pub fn add_sts_credentials(
        &self,
        id: &str,
        secret: &str,
        security_token: &str,
        expiration: Option<SystemTime>,
    ) {
        lock(&self.0.keys).insert(
            id.to_string(),
            KeyEntry {
                secret: secret.to_string(),
                security_token: Some(security_token.to_string()),
                expiration,
            },
        );
    }

    fn key(&self, id: &str) -> Option<KeyEntry> {
        lock(&self.0.keys).get(id).cloned()
    }

    fn count_request(&self, ws: Option<&str>) {
        let now = Instant::now();
        let mut s = lock(&self.0.stats);
        s.stats.requests += 1;
        if let Some(ws) = ws {
            *s.stats.by_workspace.entry(ws.to_string()).or_default() += 1;
        }
        while s
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            s.window.pop_front();
        }
        s.window.push_back(now);
        let n = s.window.len() as u64;
        if n > s.stats.max_requests_in_any_second {
            s.stats.max_requests_in_any_second = n;
        }
    }

    fn bump(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut lock(&self.0.stats).stats);
    }
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
    let admin = Router::new()
        .route("/workspaces", get(admin_workspaces))
        .route(
            "/workspaces/{ws}",
            put(admin_put_workspace).delete(admin_delete_workspace),
        )
        .route(
            "/workspaces/{ws}/clusters",
            get(admin_list).post(admin_post_cluster),
        )
        .route(
            "/workspaces/{ws}/clusters/{id}",
            put(admin_put_cluster).delete(admin_delete_cluster),
        )
        .route("/workspaces/{ws}/clusters/{id}/state", put(admin_set_state))
        .route("/workspaces/{ws}/generate", post(admin_generate))
        .route("/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/stats", get(admin_get_stats).delete(admin_delete_stats))
        .route("/access-keys", post(admin_add_key));
    Router::new()
        .nest("/admin", admin)
        .fallback(api)
        .with_state(state)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

fn json_response(status: u16, request_id: &str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-acs-request-id", v);
    }
    r
}

/// Error body `{"RequestId","HostId","Code","Message","Recommend"}`.
fn error_response(
    status: u16,
    code: &str,
    message: &str,
    host: &str,
    request_id: &str,
) -> Response {
    let body = serde_json::json!({
        "RequestId": request_id,
        "HostId": host,
        "Code": code,
        "Message": message,
        "Recommend": format!(
            "https://api.aliyun.com/troubleshoot?q={code}&product=emr-serverless-spark&requestId={request_id}"
        ),
    });
    json_response(
        status,
        request_id,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random::<f64>() < rate
}

/// `/api/v1/workspaces/{ws}/rayCluster` → decoded `ws`.
fn route_workspace(raw_path: &str) -> Option<String> {
    let rest = raw_path.strip_prefix("/api/v1/workspaces/")?;
    let ws = rest.strip_suffix("/rayCluster")?;
    if ws.is_empty() || ws.contains('/') {
        return None;
    }
    Some(sign::percent_decode(ws))
}

fn parse_int_param(
    query: &[(String, String)],
    name: &str,
    default: i64,
    valid: impl Fn(i64) -> bool,
    rule: &str,
) -> Result<i64, String> {
    match query.iter().rev().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) if v.is_empty() => Ok(default),
        Some((_, v)) => match v.trim().parse::<i64>() {
            Ok(n) if valid(n) => Ok(n),
            _ => Err(format!(
                "The specified parameter {name} is invalid: {v:?}. It must be {rule}."
            )),
        },
    }
}

/// Every non-admin request: STS `AssumeRoleWithOIDC` or the signed `ListRayCluster`.
async fn api(State(st): State<SimState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let request_id = new_request_id();
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("emr-serverless-spark.cn-hangzhou.aliyuncs.com")
        .to_string();
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                400,
                "InvalidParameter",
                "The request body is too large or unreadable.",
                &host,
                &request_id,
            );
        }
    };
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let query = sign::parse_query(&raw_query);
    let method = parts.method.as_str().to_string();

    if method == "POST"
        && raw_path == "/"
        && query
            .iter()
            .any(|(k, v)| k == "Action" && v == "AssumeRoleWithOIDC")
    {
        return sts_assume_role_with_oidc(&st, &body, &host, &request_id);
    }

    let faults = st.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }

    let ws = route_workspace(&raw_path).filter(|_| method == "GET");
    st.count_request(ws.as_deref());
    let Some(ws) = ws else {
        return error_response(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
            &host,
            &request_id,
        );
    };

    let headers = header_pairs(&parts.headers);
    let received = Received {
        method: &method,
        raw_path: &raw_path,
        raw_query: &raw_query,
        headers: &headers,
        body: &body,
    };
    let verdict = {
        let mut nonces = lock(&st.0.nonces);
        verify::verify(&received, |id| st.key(id), &mut nonces)
    };
    if let Err(r) = verdict {
        st.bump(|s| s.rejected_auth += 1);
        return error_response(r.status, r.code, &r.message, &host, &request_id);
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    match header("x-acs-version") {
        Some(crate::emr::API_VERSION) => {}
        other => {
            return error_response(
                400,
                "InvalidVersion",
                &format!(
                    "Specified parameter Version is not valid: {:?}.",
                    other.unwrap_or("")
                ),
                &host,
                &request_id,
            );
        }
    }
    if let Some(action) = header("x-acs-action")
        && action != crate::emr::ACTION_LIST_RAY_CLUSTER
    {
        return error_response(
            404,
            "InvalidAction.NotFound",
            &format!("Specified api {action:?} is not found, please check your url and method."),
            &host,
            &request_id,
        );
    }

    // Throttling and server errors.
    let throttle = {
        let mut f = lock(&st.0.faults);
        if f.throttle_next > 0 {
            f.throttle_next -= 1;
            true
        } else {
            chance(f.throttle_rate)
        }
    };
    if throttle {
        st.bump(|s| s.faults_injected += 1);
        let mut r = error_response(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
            &host,
            &request_id,
        );
        if faults.throttle_retry_after_secs > 0 {
            r.headers_mut().insert(
                "x-acs-retry-after",
                HeaderValue::from(faults.throttle_retry_after_secs),
            );
        }
        return r;
    }
    if chance(faults.server_error_rate) {
        st.bump(|s| s.faults_injected += 1);
        return if rand::rng().random_bool(0.5) {
            error_response(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
                &host,
                &request_id,
            )
        } else {
            error_response(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error, exception or failure.",
                &host,
                &request_id,
            )
        };
    }

    let page_size = match parse_int_param(
        &query,
        "pageSize",
        20,
        |n| (1..=100).contains(&n),
        "an integer from 1 to 100",
    ) {
        Ok(n) => n as usize,
        Err(m) => return error_response(400, "InvalidParameter", &m, &host, &request_id),
    };
    let page_num = match parse_int_param(
        &query,
        "pageNum",
        1,
        |n| n >= 1,
        "an integer greater than or equal to 1",
    ) {
        Ok(n) => n as usize,
        Err(m) => return error_response(400, "InvalidParameter", &m, &host, &request_id),
    };

    let page: Vec<RayCluster> = {
        let w = lock(&st.0.workspaces);
        let Some(list) = w.get(&ws) else {
            drop(w);
            return error_response(
                404,
                "InvalidWorkspaceId.NotFound",
                &format!("The specified workspace {ws} does not exist."),
                &host,
                &request_id,
            );
        };
        let effective = if page_num > 1 && faults.repeat_page {
            1
        } else {
            page_num
        };
        if page_num > 1 && faults.end_early {
            Vec::new()
        } else {
            let start = (effective - 1).saturating_mul(page_size);
            list.iter().skip(start).take(page_size).cloned().collect()
        }
    };
    if page_num > 1 && (faults.repeat_page || faults.end_early) {
        st.bump(|s| s.faults_injected += 1);
    }

    let response = ListRayClusterResponse {
        request_id: Some(request_id.clone()),
        ray_clusters: Some(page),
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    if chance(faults.truncated_body_rate) {
        st.bump(|s| s.faults_injected += 1);
        bytes.truncate(bytes.len() / 2);
        return json_response(200, &request_id, bytes);
    }
    if chance(faults.malformed_body_rate) {
        st.bump(|s| s.faults_injected += 1);
        let body = if rand::rng().random_bool(0.5) {
            b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec()
        } else {
            serde_json::to_vec(&serde_json::json!({"requestId": request_id, "data": []}))
                .unwrap_or_default()
        };
        return json_response(200, &request_id, body);
    }
    st.bump(|s| s.ok += 1);
    json_response(200, &request_id, bytes)
}

fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Unsigned STS `AssumeRoleWithOIDC`: issues temporary credentials.
fn sts_assume_role_with_oidc(st: &SimState, body: &[u8], host: &str, request_id: &str) -> Response {
    st.bump(|s| s.sts_requests += 1);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    for required in ["RoleArn", "OIDCProviderArn", "OIDCToken"] {
        if form.get(required).is_none_or(|v| v.trim().is_empty()) {
            return error_response(
                400,
                "MissingParameter",
                &format!(
                    "The input parameter \"{required}\" that is mandatory for processing this request is not supplied."
                ),
                host,
                request_id,
            );
        }
    }
    let duration: u64 = form
        .get("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    if !(900..=43200).contains(&duration) {
        return error_response(
            400,
            "InvalidParameter.DurationSeconds",
            "The parameter DurationSeconds is invalid.",
            host,
            request_id,
        );
    }
    let mut rng = rand::rng();
    let rand_str = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| {
                let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                c[rng.random_range(0..c.len())] as char
            })
            .collect()
    };
    let id = format!("STS.NT{}", rand_str(&mut rng, 22));
    let secret = rand_str(&mut rng, 40);
    let token = format!("CAIS{}", rand_str(&mut rng, 120));
    let expiration = SystemTime::now() + Duration::from_secs(duration);
    st.add_sts_credentials(&id, &secret, &token, Some(expiration));
    let exp = crate::time::rfc3339_system(expiration).unwrap_or_default();
    let session = form
        .get("RoleSessionName")
        .cloned()
        .unwrap_or_else(|| "session".into());
    let role = form.get("RoleArn").cloned().unwrap_or_default();
    let body = serde_json::json!({
        "RequestId": request_id,
        "AssumedRoleUser": {"AssumedRoleId": format!("3{}:{session}", rand_str(&mut rng, 17)), "Arn": format!("{role}/{session}")},
        "OIDCTokenInfo": {"Subject": "system:serviceaccount:emr-ray:operator", "Issuer": "https://oidc-ack.cn-hangzhou.aliyuncs.com", "ClientIds": "sts.aliyuncs.com"},
        "Credentials": {"AccessKeyId": id, "AccessKeySecret": secret, "SecurityToken": token, "Expiration": exp},
    });
    json_response(
        200,
        request_id,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

// ----- admin API -----

#[derive(Deserialize)]
struct GenerateRequest {
    count: usize,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
struct StateRequest {
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessKeyRequest {
    access_key_id: String,
    access_key_secret: String,
    #[serde(default)]
    security_token: Option<String>,
}

async fn admin_workspaces(State(st): State<SimState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "workspaces": st.workspaces() }))
}

async fn admin_put_workspace(State(st): State<SimState>, Path(ws): Path<String>) -> StatusCode {
    st.ensure_workspace(&ws);
    StatusCode::NO_CONTENT
}

async fn admin_delete_workspace(State(st): State<SimState>, Path(ws): Path<String>) -> StatusCode {
    if st.remove_workspace(&ws) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn admin_list(State(st): State<SimState>, Path(ws): Path<String>) -> impl IntoResponse {
    axum::Json(st.clusters(&ws))
}

async fn admin_post_cluster(
    State(st): State<SimState>,
    Path(ws): Path<String>,
    axum::Json(c): axum::Json<RayCluster>,
) -> Response {
    if c.cluster_id.is_empty() {
        return (StatusCode::BAD_REQUEST, "clusterId is required").into_response();
    }
    st.upsert_cluster(&ws, c.clone());
    (StatusCode::OK, axum::Json(c)).into_response()
}

async fn admin_put_cluster(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
    axum::Json(mut c): axum::Json<RayCluster>,
) -> impl IntoResponse {
    c.cluster_id = id;
    st.upsert_cluster(&ws, c.clone());
    axum::Json(c)
}

async fn admin_delete_cluster(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
) -> StatusCode {
    if st.remove_cluster(&ws, &id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn admin_set_state(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
    axum::Json(req): axum::Json<StateRequest>,
) -> StatusCode {
    if st.set_state(&ws, &id, ClusterState::from(req.state.as_str())) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn admin_generate(
    State(st): State<SimState>,
    Path(ws): Path<String>,
    axum::Json(req): axum::Json<GenerateRequest>,
) -> Response {
    if req.count > 1_000_000 {
        return (StatusCode::BAD_REQUEST, "count must be at most 1000000").into_response();
    }
    let prefix = req.prefix.unwrap_or_else(|| "ray-cluster".to_string());
    let ids = st.generate(&ws, req.count, &prefix);
    axum::Json(serde_json::json!({ "generated": ids.len(), "clusterIds": ids })).into_response()
}

async fn admin_get_faults(State(st): State<SimState>) -> impl IntoResponse {
    axum::Json(st.faults())
}

async fn admin_put_faults(
    State(st): State<SimState>,
    axum::Json(f): axum::Json<Faults>,
) -> impl IntoResponse {
    st.set_faults(f.clone());
    axum::Json(f)
}

async fn admin_get_stats(State(st): State<SimState>) -> impl IntoResponse {
    axum::Json(st.stats())
}

async fn admin_delete_stats(State(st): State<SimState>) -> StatusCode {
    st.reset_stats();
    StatusCode::NO_CONTENT
}

async fn admin_add_key(
    State(st): State<SimState>,
    axum::Json(k): axum::Json<AccessKeyRequest>,
) -> StatusCode {
    match k.security_token {
        Some(t) => st.add_sts_credentials(&k.access_key_id, &k.access_key_secret, &t, None),
        None => st.add_access_key(&k.access_key_id, &k.access_key_secret),
    }
    StatusCode::NO_CONTENT
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
    }

    #[test]
    fn routes() {
        assert_eq!(
            route_workspace("/api/v1/workspaces/w-1/rayCluster").as_deref(),
            Some("w-1")
        );
        assert_eq!(
            route_workspace("/api/v1/workspaces/w%20x/rayCluster").as_deref(),
            Some("w x")
        );
        assert!(route_workspace("/api/v1/workspaces//rayCluster").is_none());
        assert!(route_workspace("/api/v1/workspaces/a/b/rayCluster").is_none());
    }

    #[test]
    fn state_ops() {
        let st = SimState::new(&SimConfig::with_default_fixture());
        let id = "ray-uiulpgow9xljimm1";
        assert!(st.set_state(DEFAULT_WORKSPACE, id, ClusterState::Stopped));
        assert_eq!(
            st.clusters(DEFAULT_WORKSPACE)[0].state,
            Some(ClusterState::Stopped)
        );
        let ids = st.generate("w-x", 5, "gen");
        assert_eq!(ids.len(), 5);
        assert_eq!(st.clusters("w-x").len(), 5);
        assert!(st.remove_cluster("w-x", &ids[0]));
        assert!(!st.remove_cluster("w-x", &ids[0]));
        assert_eq!(st.workspaces()["w-x"], 4);
    }
}
