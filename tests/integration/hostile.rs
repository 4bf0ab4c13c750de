//! A hostile endpoint: a small server in the test (allowed as the workspace's endpoint) that
//! answers with what a hostile or broken service could send — unknown error codes, non-JSON
//! error bodies, a redirect to another host, an oversized body, a slow drip, an endless listing,
//! megabyte strings and an absurd `x-acs-retry-after`. For each: the operator stays up, no
//! mirror is lost or blanked, the workspace gives the right reason, memory stays bounded, and
//! nothing reaches any host but the endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use emr_ray_operator::controller::mirror::{MAX_TEXT, TRUNCATED};
use serde_json::{Value, json};

use crate::common;
use crate::support::*;

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Good,
    UnknownCode,
    NonJsonError,
    Redirect(String),
    Oversized,
    SlowDrip,
    Endless,
    LongStrings,
    HugeRetryAfter,
}

#[derive(Clone)]
struct Server {
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicU64>,
}

fn cluster(i: u64, text: &str) -> Value {
    json!({"clusterId": format!("ray-h-{i}"), "name": format!("hostile {i}{text}"),
           "state": "Running", "description": format!("cluster {i}{text}"),
           "headSpec": {"cpu": "2", "memory": "8Gi"}})
}

fn page(clusters: Vec<Value>) -> Response {
    let body = json!({"requestId": "R", "rayClusters": clusters}).to_string();
    ([("content-type", "application/json")], body).into_response()
}

async fn answer(State(s): State<Server>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let page_num: u64 = q.get("pageNum").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mode = s.mode.lock().unwrap().clone();
    match mode {
        Mode::Good if page_num == 1 => page((0..3).map(|i| cluster(i, "")).collect()),
        Mode::Good | Mode::LongStrings if page_num > 1 => page(vec![]),
        Mode::LongStrings => {
            let long = "x".repeat(1024 * 1024);
            page((0..3).map(|i| cluster(i, &long)).collect())
        }
        Mode::UnknownCode => (
            StatusCode::BAD_REQUEST,
            json!({"Code": "Evil.Code{x=\"y\"}", "Message": "no\u{1b}[31m such\nthing",
                   "RequestId": "R"})
            .to_string(),
        )
            .into_response(),
        Mode::NonJsonError => (
            StatusCode::BAD_GATEWAY,
            "<html>internal-secret-stack-trace</html>",
        )
            .into_response(),
        Mode::Redirect(to) => (
            StatusCode::FOUND,
            [(
                "location",
                format!("{to}/api/v1/workspaces/{WS}/rayCluster?pageNum=1"),
            )],
            json!({"rayClusters": []}).to_string(),
        )
            .into_response(),
        // Over the operator's default body cap (8 MiB).
        Mode::Oversized => page(vec![json!({"clusterId": "ray-big",
                                            "description": "y".repeat(9 * 1024 * 1024)})]),
        Mode::SlowDrip => {
            let drip = futures::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                (n < 120).then(|| {
                    (
                        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b" ")),
                        n + 1,
                    )
                })
            });
            Response::new(Body::from_stream(drip))
        }
        Mode::Endless => page((0..100).map(|i| cluster(page_num * 1000 + i, "")).collect()),
        Mode::HugeRetryAfter => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("x-acs-retry-after", "18446744073709551615")],
            json!({"Code": "ServiceUnavailable", "Message": "busy"}).to_string(),
        )
            .into_response(),
        Mode::Good => unreachable!(),
    }
}

async fn serve(addr: &str, s: Server) -> String {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(answer).with_state(s);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn server() -> Server {
    Server {
        mode: Arc::new(Mutex::new(Mode::Good)),
        requests: Arc::new(AtomicU64::new(0)),
    }
}

/// Peak resident set of this test process, in KiB.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_endpoint_cannot_crash_blank_or_exfiltrate() {
    let hostile = server();
    let url = serve("127.0.0.1:0", hostile.clone()).await;
    // Another host, where a redirect points: it must receive nothing.
    let elsewhere = server();
    let elsewhere_url = serve("127.0.0.2:0", elsewhere.clone()).await;

    let mut env = Env::new("hostile").await;
    env.create_workspace("ws", json!({"endpoint": url})).await;
    let mut cfg = operator_config(&env.ns.name);
    cfg.max_clusters_per_workspace = 500;
    env.operators.push(start_operator(&env.client, cfg));
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    let mirrors = common::wait_for(Duration::from_secs(30), "3 mirrors", || async {
        let l = env.mirror_list().await;
        (l.len() == 3 && l.iter().all(|m| m.status.is_some())).then_some(l)
    })
    .await;
    let before: BTreeMap<String, Value> = mirrors
        .iter()
        .map(|m| (m.metadata.name.clone().unwrap(), data_of(m)))
        .collect();
    let hwm0 = vm_hwm_kib();

    let cases = [
        (Mode::UnknownCode, "InvalidRequest"),
        (Mode::NonJsonError, "RemoteUnavailable"),
        (Mode::Redirect(elsewhere_url.clone()), "InvalidEndpoint"),
        (Mode::Oversized, "MalformedResponse"),
        (Mode::SlowDrip, "Timeout"),
        (Mode::Endless, "TooManyClusters"),
    ];
    for (mode, reason) in cases {
        *hostile.mode.lock().unwrap() = mode.clone();
        let st = env
            .wait_ready("ws", "False", Some(reason), Duration::from_secs(90))
            .await;
        assert!(
            !env.operators[0].task.is_finished(),
            "{mode:?}: the operator is up"
        );
        let now: BTreeMap<String, Value> = env
            .mirror_list()
            .await
            .iter()
            .map(|m| (m.metadata.name.clone().unwrap(), data_of(m)))
            .collect();
        assert_eq!(now, before, "{mode:?}: no mirror lost, added, or blanked");
        let f = st.last_failure.expect("lastFailure");
        let text = serde_json::to_string(&f).unwrap();
        assert!(
            !text.contains("internal-secret") && !text.contains('\u{1b}'),
            "{mode:?}: raw bodies never reach status: {text}"
        );
        assert!(f.message.len() <= 1024, "{mode:?}: {}", f.message);
        println!("hostile endpoint: {mode:?} -> {reason}: {}", f.message);
    }
    // Unknown codes do not grow the metric's label set.
    let text = env.operators[0].metrics.encode();
    assert!(
        !text.contains("Evil.Code"),
        "remote codes are not metric labels"
    );

    // Megabyte strings: mirrored, truncated with a visible marker.
    *hostile.mode.lock().unwrap() = Mode::LongStrings;
    env.wait_mirror(
        "ray-h-0",
        Duration::from_secs(60),
        "truncated description",
        |m| {
            m.status
                .as_ref()
                .and_then(|s| s.description.as_deref())
                .is_some_and(|d| d.len() <= MAX_TEXT && d.ends_with(TRUNCATED))
        },
    )
    .await;
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(30))
        .await;

    // An absurd retry-after neither panics nor blocks the operator.
    *hostile.mode.lock().unwrap() = Mode::HugeRetryAfter;
    env.wait_ready(
        "ws",
        "False",
        Some("RemoteUnavailable"),
        Duration::from_secs(60),
    )
    .await;
    assert!(!env.operators[0].task.is_finished(), "the operator is up");
    assert_eq!(env.mirror_list().await.len(), 3);

    assert_eq!(
        elsewhere.requests.load(Ordering::SeqCst),
        0,
        "the redirect target received nothing"
    );
    assert!(hostile.requests.load(Ordering::SeqCst) > 0);
    let grown = vm_hwm_kib().saturating_sub(hwm0);
    println!(
        "hostile endpoint: peak RSS of the test process grew by {} MiB",
        grown / 1024
    );
    assert!(grown < 512 * 1024, "memory bounded: grew {grown} KiB");
    env.teardown().await;
}
