//! The EMR side of the simulator: the signed `ListRayCluster` (`GET
//! /api/v1/workspaces/{ws}/rayCluster`) and `GetRayCluster` (`GET
//! /api/v1/workspaces/{ws}/rayCluster/{clusterId}`), and the unsigned STS `AssumeRoleWithOIDC`,
//! answered in the order of checks documented in [`super`].

use super::verify::Received;
use super::{Faults, SimState, chance};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use emr_ray_operator::emr::model::ListRayClusterResponse;
use emr_ray_operator::emr::sign;
use rand::Rng as _;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Every non-admin request: STS `AssumeRoleWithOIDC` or the signed `ListRayCluster`.
pub(super) async fn api(State(st): State<SimState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let reply = Reply {
        request_id: new_request_id(),
        host: parts
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("emr-serverless-spark.cn-hangzhou.aliyuncs.com")
            .to_string(),
    };
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return reply.error(
            400,
            "InvalidParameter",
            "The request body is too large or unreadable.",
        );
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
        return sts_assume_role_with_oidc(&st, &body, &reply);
    }

    st.bump(|s| s.arrived += 1);
    let faults = st.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }

    let route = route(&raw_path).filter(|_| method == "GET");
    st.count_request(
        route.as_ref().map(|r| r.workspace()),
        route.as_ref().map(Route::action),
    );
    let Some(route) = route else {
        return reply.error(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
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
    if let Some(refused) = check_signature_and_action(&st, &received, route.action(), &reply) {
        return refused;
    }
    let applies = faults.applies_to(route.action());
    let faults = if applies { faults } else { Faults::default() };
    if applies && let Some(failure) = injected_failure(&st, &faults, &reply) {
        return failure;
    }
    match &route {
        Route::List(ws) => list_ray_cluster(&st, ws, &query, &faults, &reply),
        Route::Get(ws, id) => get_ray_cluster(&st, ws, id, &faults, &reply),
        Route::Queues(ws) => super::queues::list_workspace_queues(&st, ws, &query, &faults, &reply),
        Route::Jobs(ws) => list_ray_job(&st, ws, &query, &faults, &reply),
    }
}

/// `GetRayCluster`: the listed cluster, its [`super::detail::ClusterDetail`], the body faults.
fn get_ray_cluster(st: &SimState, ws: &str, id: &str, faults: &Faults, reply: &Reply) -> Response {
    if !st.has_workspace(ws) {
        return reply.unknown_workspace(ws);
    }
    let Some(cluster) = st.cluster(ws, id) else {
        return reply.error(
            404,
            "InvalidRayClusterId.NotFound",
            &format!("The specified Ray cluster {id} does not exist."),
        );
    };
    let detail = st.detail(ws, id);
    let bytes = super::detail::body(&cluster, detail.as_ref(), &reply.request_id);
    body_with_faults(st, faults, reply, bytes)
}

/// `ListRayJob`: parameters, workspace, then the page with the body faults.
fn list_ray_job(
    st: &SimState,
    ws: &str,
    query: &[(String, String)],
    faults: &Faults,
    reply: &Reply,
) -> Response {
    let q = match super::jobs::JobQuery::parse(query) {
        Ok(q) => q,
        Err(m) => return reply.error(400, "InvalidParameter", &m),
    };
    if !st.has_workspace(ws) {
        return reply.unknown_workspace(ws);
    }
    let mut page = super::jobs::page(&st.jobs(ws), &q, faults);
    if q.page_num > 1 && (faults.repeat_page || faults.end_early) {
        st.bump(|s| s.faults_injected += 1);
    }
    page.request_id = Some(reply.request_id.clone());
    page_body(st, faults, reply, &page)
}

/// Signature (see [`super::verify`]), then `x-acs-version` and `x-acs-action`: the refusal, if
/// any.
fn check_signature_and_action(
    st: &SimState,
    received: &Received<'_>,
    expected_action: &str,
    reply: &Reply,
) -> Option<Response> {
    if let Err(r) = st.verify(received) {
        st.bump(|s| s.rejected_auth += 1);
        return Some(reply.error(r.status, r.code, &r.message));
    }
    let header = |n: &str| {
        received
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    match header("x-acs-version") {
        Some(emr_ray_operator::emr::API_VERSION) => {}
        other => {
            return Some(reply.error(
                400,
                "InvalidVersion",
                &format!(
                    "Specified parameter Version is not valid: {:?}.",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    if let Some(action) = header("x-acs-action")
        && action != expected_action
    {
        return Some(reply.error(
            404,
            "InvalidAction.NotFound",
            &format!("Specified api {action:?} is not found, please check your url and method."),
        ));
    }
    None
}

/// The throttling and server-error faults: the injected failure, if any.
pub(super) fn injected_failure(st: &SimState, faults: &Faults, reply: &Reply) -> Option<Response> {
    if st.take_throttle() {
        st.bump(|s| s.faults_injected += 1);
        let mut r = reply.error(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        );
        if faults.throttle_retry_after_secs > 0 {
            r.headers_mut().insert(
                "x-acs-retry-after",
                HeaderValue::from(faults.throttle_retry_after_secs),
            );
        }
        return Some(r);
    }
    if st.take_server_error() {
        st.bump(|s| s.faults_injected += 1);
        return Some(if rand::rng().random_bool(0.5) {
            reply.error(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
        } else {
            reply.error(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error, exception or failure.",
            )
        });
    }
    None
}

/// Parameters, workspace, then the page with the body faults.
fn list_ray_cluster(
    st: &SimState,
    ws: &str,
    query: &[(String, String)],
    faults: &Faults,
    reply: &Reply,
) -> Response {
    let page_size = match parse_int_param(
        query,
        "pageSize",
        20,
        |n| (1..=100).contains(&n),
        "an integer from 1 to 100",
    ) {
        Ok(n) => n as usize,
        Err(m) => return reply.error(400, "InvalidParameter", &m),
    };
    let page_num = match parse_int_param(
        query,
        "pageNum",
        1,
        |n| n >= 1,
        "an integer greater than or equal to 1",
    ) {
        Ok(n) => n as usize,
        Err(m) => return reply.error(400, "InvalidParameter", &m),
    };

    let Some(page) = st.page(ws, page_num, page_size, faults) else {
        return reply.unknown_workspace(ws);
    };
    if page_num > 1 && (faults.repeat_page || faults.end_early) {
        st.bump(|s| s.faults_injected += 1);
    }

    let response = ListRayClusterResponse {
        request_id: Some(reply.request_id.clone()),
        ray_clusters: Some(page),
    };
    page_body(st, faults, reply, &response)
}

/// The 200 answer, or a truncated or malformed one as the body faults say.
pub(super) fn page_body(
    st: &SimState,
    faults: &Faults,
    reply: &Reply,
    response: &impl serde::Serialize,
) -> Response {
    body_with_faults(
        st,
        faults,
        reply,
        serde_json::to_vec(&response).unwrap_or_default(),
    )
}

/// The 200 answer `bytes`, or a truncated or malformed one as the body faults say.
fn body_with_faults(st: &SimState, faults: &Faults, reply: &Reply, mut bytes: Vec<u8>) -> Response {
    let request_id = &reply.request_id;
    if chance(faults.truncated_body_rate) {
        st.bump(|s| s.faults_injected += 1);
        bytes.truncate(bytes.len() / 2);
        return json_response(200, request_id, bytes);
    }
    if chance(faults.malformed_body_rate) {
        st.bump(|s| s.faults_injected += 1);
        let body = if rand::rng().random_bool(0.5) {
            b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec()
        } else {
            serde_json::to_vec(&serde_json::json!({"requestId": request_id, "data": []}))
                .unwrap_or_default()
        };
        return json_response(200, request_id, body);
    }
    st.bump(|s| s.ok += 1);
    json_response(200, request_id, bytes)
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
fn sts_assume_role_with_oidc(st: &SimState, body: &[u8], reply: &Reply) -> Response {
    let request_id = &reply.request_id;
    st.bump(|s| s.sts_requests += 1);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    for required in ["RoleArn", "OIDCProviderArn", "OIDCToken"] {
        if form.get(required).is_none_or(|v| v.trim().is_empty()) {
            return reply.error(
                400,
                "MissingParameter",
                &format!(
                    "The input parameter \"{required}\" that is mandatory for processing this request is not supplied."
                ),
            );
        }
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let verified = match st.oidc_provider(field("OIDCProviderArn")) {
        None => None,
        Some(None) => {
            return reply.error(
                404,
                "EntityNotExist.OIDCProvider",
                "The specified OIDC provider does not exist.",
            );
        }
        Some(Some(provider)) => match provider.verify(field("OIDCToken").trim()) {
            Ok(v) => Some(v),
            Err(why) => {
                tracing::info!(%why, "simulated STS refused an OIDC token");
                return reply.error(
                    400,
                    "AuthenticationFail.OIDCToken.Invalid",
                    "The OIDC token is invalid.",
                );
            }
        },
    };
    if let Some(v) = &verified {
        st.bump(|s| {
            *s.sts_verified_subjects
                .entry(v.subject.clone())
                .or_default() += 1
        });
    }
    let duration: u64 = form
        .get("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    if !(900..=43200).contains(&duration) {
        return reply.error(
            400,
            "InvalidParameter.DurationSeconds",
            "The parameter DurationSeconds is invalid.",
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
    let exp = emr_ray_operator::time::rfc3339_system(expiration).unwrap_or_default();
    let session = form
        .get("RoleSessionName")
        .cloned()
        .unwrap_or_else(|| "session".into());
    let role = form.get("RoleArn").cloned().unwrap_or_default();
    let body = serde_json::json!({
        "RequestId": request_id,
        "AssumedRoleUser": {"AssumedRoleId": format!("3{}:{session}", rand_str(&mut rng, 17)), "Arn": format!("{role}/{session}")},
        "OIDCTokenInfo": match &verified {
            Some(v) => serde_json::json!({"Subject": v.subject, "Issuer": v.issuer, "ClientIds": v.audience}),
            None => serde_json::json!({"Subject": "system:serviceaccount:emr-ray:operator", "Issuer": "https://oidc-ack.cn-hangzhou.aliyuncs.com", "ClientIds": "sts.aliyuncs.com"}),
        },
        "Credentials": {"AccessKeyId": id, "AccessKeySecret": secret, "SecurityToken": token, "Expiration": exp},
    });
    json_response(
        200,
        request_id,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
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

/// Who an answer is for: every error body names the request ID and the host.
pub(super) struct Reply {
    host: String,
    pub(super) request_id: String,
}

impl Reply {
    /// Error body `{"RequestId","HostId","Code","Message","Recommend"}`.
    /// 404 `InvalidWorkspaceId.NotFound`: what every API answers for a workspace that does not
    /// exist.
    pub(super) fn unknown_workspace(&self, ws: &str) -> Response {
        self.error(
            404,
            "InvalidWorkspaceId.NotFound",
            &format!("The specified workspace {ws} does not exist."),
        )
    }

    pub(super) fn error(&self, status: u16, code: &str, message: &str) -> Response {
        let request_id = &self.request_id;
        let body = serde_json::json!({
            "RequestId": request_id,
            "HostId": self.host,
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
}

/// What an API path asks for, with its decoded path parameters.
#[derive(Debug, PartialEq)]
enum Route {
    /// `/api/v1/workspaces/{ws}/rayCluster`: `ListRayCluster`.
    List(String),
    /// `/api/v1/workspaces/{ws}/rayCluster/{clusterId}`: `GetRayCluster`.
    Get(String, String),
    /// `/api/v1/workspaces/{ws}/queues`: `ListWorkspaceQueues`.
    Queues(String),
    /// `/api/v1/workspaces/{ws}/rayJob`: `ListRayJob`.
    Jobs(String),
}

impl Route {
    fn workspace(&self) -> &str {
        match self {
            Route::List(ws) | Route::Get(ws, _) | Route::Queues(ws) | Route::Jobs(ws) => ws,
        }
    }

    /// The `x-acs-action` the route answers to.
    fn action(&self) -> &'static str {
        match self {
            Route::List(_) => emr_ray_operator::emr::ACTION_LIST_RAY_CLUSTER,
            Route::Get(..) => emr_ray_operator::emr::ACTION_GET_RAY_CLUSTER,
            Route::Queues(_) => emr_ray_operator::emr::ACTION_LIST_WORKSPACE_QUEUES,
            Route::Jobs(_) => emr_ray_operator::emr::ACTION_LIST_RAY_JOB,
        }
    }
}

fn route(raw_path: &str) -> Option<Route> {
    let rest = raw_path.strip_prefix("/api/v1/workspaces/")?;
    let (ws, rest) = rest.split_once('/')?;
    if ws.is_empty() {
        return None;
    }
    let ws = sign::percent_decode(ws);
    match rest {
        "queues" => return Some(Route::Queues(ws)),
        "rayJob" => return Some(Route::Jobs(ws)),
        _ => {}
    }
    match rest.strip_prefix("rayCluster")? {
        "" => Some(Route::List(ws)),
        id => {
            let id = id.strip_prefix('/')?;
            (!id.is_empty() && !id.contains('/')).then(|| Route::Get(ws, sign::percent_decode(id)))
        }
    }
}

pub(super) fn parse_int_param(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let list = |ws: &str| Some(Route::List(ws.into()));
        assert_eq!(route("/api/v1/workspaces/w-1/rayCluster"), list("w-1"));
        assert_eq!(route("/api/v1/workspaces/w%20x/rayCluster"), list("w x"));
        assert!(route("/api/v1/workspaces//rayCluster").is_none());
        assert!(route("/api/v1/workspaces/a/b/rayCluster").is_none());
        assert_eq!(
            route("/api/v1/workspaces/w-1/rayCluster/ray-a%2Fb"),
            Some(Route::Get("w-1".into(), "ray-a/b".into()))
        );
        assert!(route("/api/v1/workspaces/w-1/rayCluster/").is_none());
        assert!(route("/api/v1/workspaces/w-1/rayCluster/a/b").is_none());
        assert!(route("/api/v1/workspaces/w-1/rayClusters").is_none());
        assert_eq!(
            route("/api/v1/workspaces/w-1/queues"),
            Some(Route::Queues("w-1".into()))
        );
        assert!(route("/api/v1/workspaces/w-1/queues/x").is_none());
        assert_eq!(
            route("/api/v1/workspaces/w-1/rayJob"),
            Some(Route::Jobs("w-1".into()))
        );
        assert!(route("/api/v1/workspaces/w-1/rayJob/x").is_none());
    }
}
