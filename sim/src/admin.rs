//! The unsigned admin API under `/admin/` (listed in the module documentation of [`super`]):
//! one handler per route, each a thin wrapper over a [`SimState`] method.

use super::jobs::SimJob;
use super::{ClusterDetail, Faults, SimState};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use emr_ray_operator::emr::model::{ClusterState, RayCluster};
use emr_ray_operator::emr::queues::{QueueResources, WorkspaceQueue};
use serde::Deserialize;

/// The admin routes, to be nested under `/admin`.
pub(super) fn router() -> Router<SimState> {
    Router::new()
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
        .route(
            "/workspaces/{ws}/clusters/{id}/detail",
            get(admin_get_detail).put(admin_put_detail),
        )
        .route("/workspaces/{ws}/generate", post(admin_generate))
        .route(
            "/workspaces/{ws}/queues",
            get(admin_get_queues).put(admin_put_queues),
        )
        .route(
            "/workspaces/{ws}/queues/{name}/usage",
            put(admin_put_queue_usage),
        )
        .route(
            "/workspaces/{ws}/jobs",
            get(admin_list_jobs).post(admin_post_job),
        )
        .route(
            "/workspaces/{ws}/jobs/{id}",
            put(admin_put_job).delete(admin_delete_job),
        )
        .route("/workspaces/{ws}/generate-jobs", post(admin_generate_jobs))
        .route("/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/stats", get(admin_get_stats).delete(admin_delete_stats))
        .route("/access-keys", post(admin_add_key))
}

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

async fn admin_get_detail(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
) -> Response {
    match st.cluster(&ws, &id) {
        Some(_) => axum::Json(st.detail(&ws, &id).unwrap_or_default()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn admin_put_detail(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
    axum::Json(d): axum::Json<ClusterDetail>,
) -> StatusCode {
    if st.set_detail(&ws, &id, d) {
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

async fn admin_get_queues(State(st): State<SimState>, Path(ws): Path<String>) -> Response {
    match st.queues(&ws) {
        Some(q) => axum::Json(q).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Replaces the workspace's queues (the API's queue objects; resources as JSON strings).
async fn admin_put_queues(
    State(st): State<SimState>,
    Path(ws): Path<String>,
    axum::Json(queues): axum::Json<Vec<WorkspaceQueue>>,
) -> StatusCode {
    st.set_queues(&ws, queues);
    StatusCode::NO_CONTENT
}

/// What a queue uses: `{"cpu": 2, "memoryGi": 8, "gpu": 0}` (numbers), or `{"raw": "..."}` to
/// send any `usedResource` string (hostile values included).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageRequest {
    #[serde(default)]
    cpu: Option<f64>,
    #[serde(default)]
    memory_gi: Option<f64>,
    #[serde(default)]
    gpu: Option<f64>,
    #[serde(default)]
    raw: Option<String>,
}

async fn admin_put_queue_usage(
    State(st): State<SimState>,
    Path((ws, name)): Path<(String, String)>,
    axum::Json(u): axum::Json<UsageRequest>,
) -> StatusCode {
    let used = u.raw.unwrap_or_else(|| {
        QueueResources {
            cpu: u.cpu,
            memory_gi: u.memory_gi,
            gpu: u.gpu,
        }
        .to_wire()
    });
    if st.set_queue_usage(&ws, &name, used) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateJobsRequest {
    count: usize,
    #[serde(default)]
    prefix: Option<String>,
    /// Jobs are submitted within the last this many seconds (default a day).
    #[serde(default)]
    spread_secs: Option<u64>,
}

async fn admin_list_jobs(State(st): State<SimState>, Path(ws): Path<String>) -> impl IntoResponse {
    let jobs: Vec<serde_json::Value> = st
        .jobs(&ws)
        .into_iter()
        .map(|j| {
            let mut v = serde_json::to_value(&j.job).unwrap_or_default();
            if let (Some(o), Some(t)) = (v.as_object_mut(), j.task_biz_id) {
                o.insert("taskBizId".into(), t.into());
            }
            v
        })
        .collect();
    axum::Json(jobs)
}

/// Adds or replaces a job (by `submissionId`).
async fn admin_post_job(
    State(st): State<SimState>,
    Path(ws): Path<String>,
    axum::Json(v): axum::Json<serde_json::Value>,
) -> Response {
    match SimJob::from_json(v) {
        Ok(j) if !j.job.submission_id.is_empty() => {
            st.upsert_job(&ws, j.clone());
            (StatusCode::OK, axum::Json(j.job)).into_response()
        }
        Ok(_) => (StatusCode::BAD_REQUEST, "submissionId is required").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn admin_put_job(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
    axum::Json(mut v): axum::Json<serde_json::Value>,
) -> Response {
    if let Some(o) = v.as_object_mut() {
        o.insert("submissionId".into(), id.into());
    }
    match SimJob::from_json(v) {
        Ok(j) => {
            st.upsert_job(&ws, j.clone());
            axum::Json(j.job).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn admin_delete_job(
    State(st): State<SimState>,
    Path((ws, id)): Path<(String, String)>,
) -> StatusCode {
    if st.remove_job(&ws, &id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn admin_generate_jobs(
    State(st): State<SimState>,
    Path(ws): Path<String>,
    axum::Json(req): axum::Json<GenerateJobsRequest>,
) -> Response {
    if req.count > 1_000_000 {
        return (StatusCode::BAD_REQUEST, "count must be at most 1000000").into_response();
    }
    let prefix = req.prefix.unwrap_or_else(|| "ray-job".to_string());
    let spread = std::time::Duration::from_secs(req.spread_secs.unwrap_or(86_400).max(1));
    let ids = st.generate_jobs(&ws, req.count, &prefix, spread);
    axum::Json(serde_json::json!({ "generated": ids.len(), "submissionIds": ids })).into_response()
}
