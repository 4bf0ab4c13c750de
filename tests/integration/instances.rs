//! "Why is this cluster not healthy?": `GetRayCluster` instances on the mirrors, end to end
//! against the real control plane, the simulator (which verifies every signature) and the
//! operator — in process, and as a process whose log and `/metrics` are searched for secrets.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use emr_ray_operator::emr::{ClusterState, EmrClient, RayCluster, SignatureVersion};
use emr_sim::{ClusterDetail, Faults};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::json;

/// One sync interval (10 s) plus jitter and slack.
const ONE_INTERVAL: Duration = Duration::from_secs(25);

fn get_calls(env: &Env) -> u64 {
    env.sim
        .state
        .stats()
        .by_action
        .get("GetRayCluster")
        .copied()
        .unwrap_or(0)
}

fn detail(v: serde_json::Value) -> ClusterDetail {
    serde_json::from_value(v).unwrap()
}

fn oom_head() -> ClusterDetail {
    detail(json!({"instances": [
        {"type": "head", "instanceId": "ray-uiulpgow9xljimm1-head-0", "phase": "Failed",
         "reason": "Error", "message": "The node was low on resource: memory.",
         "containerState": "Terminated", "containerStateReason": "OOMKilled",
         "containerStateMessage": "Killed", "containerExitCode": 137,
         "createTime": 1723722279800i64, "startTime": 1723722280800i64},
        {"type": "worker", "instanceId": "ray-uiulpgow9xljimm1-worker-0", "phase": "Running",
         "containerState": "Running", "containerExitCode": 0, "createTime": 1723722279800i64},
    ]}))
}

fn crashing_worker() -> ClusterDetail {
    detail(json!({"instances": [
        {"type": "head", "instanceId": "ray-uiulpgow9xljimm1-head-0", "phase": "Running",
         "containerState": "Running"},
        {"type": "worker", "instanceId": "ray-uiulpgow9xljimm1-worker-1", "phase": "Running",
         "containerState": "Waiting", "containerStateReason": "CrashLoopBackOff",
         "containerExitCode": 1},
    ]}))
}

fn stalled_message(m: &emr_ray_operator::api::EmrRayCluster) -> Option<String> {
    let s = m.status.as_ref()?;
    condition(&s.conditions, "Stalled")
        .filter(|c| c.status.as_str() == "True")
        .map(|c| c.message.clone())
}

/// The example cluster, as listed, with another remote message (a change of the listing).
fn with_message(env: &Env, message: &str) -> RayCluster {
    let mut c = env.sim.state.cluster(WS, EXAMPLE_CLUSTER).unwrap();
    c.message = Some(message.to_string());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_cluster_names_its_failing_instance_once_per_change() {
    let mut env = Env::new("e2e-instances").await;
    assert!(env.sim.state.set_detail(WS, EXAMPLE_CLUSTER, oom_head()));
    env.create_workspace("prod", json!({})).await;
    env.start();
    env.wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "Running mirror", |m| {
        m.status.as_ref().unwrap().state.as_deref() == Some("Running")
    })
    .await;
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert_eq!(get_calls(&env), 0, "a healthy cluster is never fetched");

    // Error: one GetRayCluster, the instances on the mirror, Stalled names the head.
    assert!(
        env.sim
            .state
            .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Error)
    );
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "instances shown", |m| {
            !m.status.as_ref().unwrap().instances.is_empty()
        })
        .await;
    let s = m.status.clone().unwrap();
    assert_eq!(s.state.as_deref(), Some("Error"));
    assert_eq!(
        stalled_message(&m).as_deref(),
        Some("head: OOMKilled, exit 137")
    );
    assert_eq!(s.instances.len(), 2);
    let head = &s.instances[0];
    assert_eq!(head.instance_type.as_deref(), Some("head"));
    assert_eq!(
        head.instance_id.as_deref(),
        Some("ray-uiulpgow9xljimm1-head-0")
    );
    assert_eq!(head.phase.as_deref(), Some("Failed"));
    assert_eq!(head.reason.as_deref(), Some("Error"));
    assert_eq!(
        head.message.as_deref(),
        Some("The node was low on resource: memory.")
    );
    assert_eq!(head.container_state.as_deref(), Some("Terminated"));
    assert_eq!(head.container_state_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(head.container_state_message.as_deref(), Some("Killed"));
    assert_eq!(head.container_exit_code, Some(137));
    assert_eq!(head.create_time.as_deref(), Some("2024-08-15T11:44:39Z"));
    assert_eq!(head.start_time.as_deref(), Some("2024-08-15T11:44:40Z"));
    assert_eq!(s.instances[1].container_exit_code, Some(0));
    assert_eq!(get_calls(&env), 1, "one GetRayCluster for one change");
    // The Warning Event of the state change names the failing instance too.
    let note = common::wait_for(Duration::from_secs(10), "the Error event", || async {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), &env.ns.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .find_map(|e| e.note.filter(|n| n.contains("to Error")))
    })
    .await;
    assert_eq!(
        note,
        "state changed from Running to Error: head: OOMKilled, exit 137"
    );
    let op = &env.operators[0];
    assert_eq!(
        op.metric(
            "emr_ray_operator_remote_requests_total",
            &[("operation", "GetRayCluster"), ("code", "200")]
        ),
        1.0
    );

    // Unchanged intervals: no call, no write.
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    let writes = env.operators[0].writes_to("emrrayclusters");
    for _ in 0..2 {
        env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    }
    assert_eq!(get_calls(&env), 1, "no call while nothing changes");
    assert_eq!(
        env.operators[0].writes_to("emrrayclusters"),
        writes,
        "no mirror write while nothing changes"
    );

    // The listing changes (another message): fetched once more, a worker is failing now.
    env.sim
        .state
        .set_detail(WS, EXAMPLE_CLUSTER, crashing_worker());
    env.sim
        .state
        .upsert_cluster(WS, with_message(&env, "worker lost"));
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "the worker named", |m| {
            stalled_message(m).as_deref()
                == Some("worker ray-uiulpgow9xljimm1-worker-1: CrashLoopBackOff, exit 1")
        })
        .await;
    assert_eq!(
        m.status.as_ref().unwrap().message.as_deref(),
        Some("worker lost")
    );
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert_eq!(get_calls(&env), 2, "one more call for one more change");

    // Running again: the instances go, Stalled goes, and nothing more is fetched.
    assert!(
        env.sim
            .state
            .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Running)
    );
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "recovered", |m| {
            let s = m.status.as_ref().unwrap();
            s.state.as_deref() == Some("Running") && s.instances.is_empty()
        })
        .await;
    assert_eq!(stalled_message(&m), None);
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert_eq!(get_calls(&env), 2);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_get_ray_cluster_keeps_the_mirror_and_is_retried() {
    let mut env = Env::new("e2e-instances-fail").await;
    env.sim.state.set_detail(WS, EXAMPLE_CLUSTER, oom_head());
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Error);
    env.create_workspace("prod", json!({})).await;
    env.start();
    env.wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "instances shown", |m| {
        stalled_message(m).as_deref() == Some("head: OOMKilled, exit 137")
    })
    .await;
    assert_eq!(get_calls(&env), 1);

    // Every GetRayCluster fails from now on (listings do not); the cluster changes.
    env.sim.state.set_faults(Faults {
        server_error_rate: 1.0,
        actions: vec!["GetRayCluster".into()],
        ..Default::default()
    });
    env.sim
        .state
        .set_detail(WS, EXAMPLE_CLUSTER, crashing_worker());
    env.sim
        .state
        .upsert_cluster(WS, with_message(&env, "still failing"));
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "new message", |m| {
            m.status.as_ref().unwrap().message.as_deref() == Some("still failing")
        })
        .await;
    // Two failed attempts (each is the client's retries), a backoff apart: retried, and the
    // mirror still shows what was fetched before.
    let failed_once = common::wait_for(ONE_INTERVAL, "a failed GetRayCluster", || async {
        (env.sim.state.stats().faults_injected >= 1).then(|| get_calls(&env))
    })
    .await;
    common::wait_for(
        Duration::from_secs(60),
        "GetRayCluster retried after a backoff",
        || async { (get_calls(&env) > failed_once + 1).then_some(()) },
    )
    .await;
    let still = env
        .mirrors()
        .get(&m.metadata.name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(
        stalled_message(&still).as_deref(),
        Some("head: OOMKilled, exit 137"),
        "a failed fetch never blanks the mirror's instances"
    );
    assert_eq!(still.status.as_ref().unwrap().instances.len(), 2);
    let ws = env.status("prod").await;
    assert!(
        condition(&ws.conditions, "Ready").is_some_and(|c| c.status.as_str() == "True"),
        "the workspace's listing is fine: {:?}",
        ws.conditions
    );
    assert!(
        env.operators[0].metric(
            "emr_ray_operator_remote_requests_total",
            &[("operation", "GetRayCluster")]
        ) >= 3.0
    );

    // The remote recovers: the retry shows the new instances.
    env.sim.state.set_faults(Faults::default());
    env.wait_mirror(
        EXAMPLE_CLUSTER,
        Duration::from_secs(90),
        "recovered fetch",
        |m| {
            stalled_message(m).as_deref()
                == Some("worker ray-uiulpgow9xljimm1-worker-1: CrashLoopBackOff, exit 1")
        },
    )
    .await;
    env.teardown().await;
}

struct OperatorProcess {
    child: Child,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every object of every namespaced resource the API server serves in `ns`, as JSON.
async fn everything_in(client: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for o in list.items {
                let what = format!(
                    "{}/{}",
                    ar.plural,
                    o.metadata.name.clone().unwrap_or_default()
                );
                out.push((what, serde_json::to_string(&o).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_get_ray_cluster_reaches_objects_events_logs_or_metrics() {
    let env = Env::new("e2e-instances-secrets").await;
    let marker = format!("SeCrEt{}", uuid::Uuid::new_v4().simple());
    let m = |field: &str| format!("{marker}-{field}");
    // Every secret field of GetRayCluster, each with its own marker; the listed dashboard URL
    // carries one in its token too.
    let mut cluster = env.sim.state.cluster(WS, EXAMPLE_CLUSTER).unwrap();
    cluster.dashboard_url = Some(format!(
        "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/?token={}",
        m("listedDashboardToken")
    ));
    env.sim.state.upsert_cluster(WS, cluster);
    let mut seeded = oom_head();
    let secrets = detail(json!({
        "submitToken": m("submitToken"),
        "jobUrl": format!("https://job.example/?token={}", m("jobUrl")),
        "jobUrlInner": format!("http://job.internal/?token={}", m("jobUrlInner")),
        "dashboardUrl": format!("https://dash.example/?token={}", m("dashboardUrl")),
        "extraParam": format!("{{\"key\":\"{}\"}}", m("extraParam")),
        "headSpec": {"env": format!("{{\"TOKEN\":\"{}\"}}", m("headEnv")),
                     "rayStartParams": m("headRayStartParams"), "gftEnabled": true,
                     "gftConfig": {"redisPassword": m("redisPassword"),
                                   "redisUsername": m("redisUsername"),
                                   "redisUrl": format!("redis://{}@redis:6379", m("redisUrl"))}},
        "workerSpec": {"env": format!("{{\"TOKEN\":\"{}\"}}", m("workerEnv")),
                       "rayStartParams": m("workerRayStartParams")},
    }));
    seeded.submit_token = secrets.submit_token;
    seeded.job_url = secrets.job_url;
    seeded.job_url_inner = secrets.job_url_inner;
    seeded.dashboard_url = secrets.dashboard_url;
    seeded.extra_param = secrets.extra_param;
    seeded.head_spec = secrets.head_spec;
    seeded.worker_spec = secrets.worker_spec;
    env.sim.state.set_detail(WS, EXAMPLE_CLUSTER, seeded);
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Error);

    // The test can fail: the simulator's own signed answer carries every marker.
    let endpoint = env.sim.base_url();
    let url = EmrClient::cluster_url(&endpoint, WS, EXAMPLE_CLUSTER);
    let creds = crate::support::creds();
    let headers = emr_ray_operator::emr::client::signed_headers(
        SignatureVersion::Acs3HmacSha256,
        "GET",
        &url,
        "secrets-test",
        &creds,
        "GetRayCluster",
    );
    let mut req = reqwest::Client::new().get(url.clone());
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let body = req.send().await.unwrap().text().await.unwrap();
    for field in [
        "submitToken",
        "jobUrl",
        "jobUrlInner",
        "dashboardUrl",
        "extraParam",
        "headEnv",
        "headRayStartParams",
        "redisPassword",
        "redisUsername",
        "redisUrl",
        "workerEnv",
        "workerRayStartParams",
    ] {
        assert!(body.contains(&m(field)), "{field} not seeded: {body}");
    }
    env.sim.state.reset_stats();

    // The operator as a process, logging at debug, metrics in plain HTTP.
    env.create_workspace("prod", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let (port, health_port) = (common::free_port(), common::free_port());
    let _op = OperatorProcess {
        child: Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
            .args([
                "run",
                "--namespaces",
                &env.ns.name,
                "--leader-election=false",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args([
                "--metrics-secure=false",
                "--allowed-endpoints",
                "http://127.0.0.1:*",
            ])
            .env("KUBECONFIG", common::kubeconfig_path())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("operator.stderr")).unwrap())
            .spawn()
            .expect("spawn the operator"),
    };
    env.wait_mirror(
        EXAMPLE_CLUSTER,
        Duration::from_secs(60),
        "instances shown",
        |m| stalled_message(m).as_deref() == Some("head: OOMKilled, exit 137"),
    )
    .await;
    assert_eq!(get_calls(&env), 1);
    // A sync more, so that its log lines and Events are there too.
    let attempts = |text: &str| {
        common::metric_sum(
            text,
            "emr_ray_operator_sync_attempts_total",
            &[("workspace", "prod")],
        )
    };
    let scrape = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let before = attempts(&scrape().await.unwrap());
    let metrics = common::wait_for(ONE_INTERVAL, "one more sync", || async {
        let text = scrape().await?;
        (attempts(&text) > before).then_some(text)
    })
    .await;
    assert!(
        common::metric_sum(
            &metrics,
            "emr_ray_operator_remote_requests_total",
            &[("operation", "GetRayCluster")]
        ) >= 1.0,
        "the metrics saw the call"
    );

    let mut searched = vec![
        ("/metrics".to_string(), metrics),
        (
            "operator log".to_string(),
            std::fs::read_to_string(&log).unwrap()
                + &std::fs::read_to_string(dir.path().join("operator.stderr")).unwrap(),
        ),
    ];
    assert!(
        searched[1].1.contains("GetRayCluster") || searched[1].1.contains("instances"),
        "the log is the operator's debug log: {}",
        searched[1].1.len()
    );
    let objects = everything_in(&env.client, &env.ns.name).await;
    for kind in ["emrrayclusters/", "emrworkspaces/", "events/"] {
        assert!(
            objects.iter().any(|(what, _)| what.starts_with(kind)),
            "no {kind} listed"
        );
    }
    searched.extend(objects);
    let found: Vec<&String> = searched
        .iter()
        .filter(|(_, text)| text.contains(&marker))
        .map(|(what, _)| what)
        .collect();
    assert!(found.is_empty(), "a secret reached: {found:?}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_starting_for_too_long_shows_why() {
    let mut env = Env::new("e2e-instances-stuck").await;
    assert!(env.sim.state.set_detail(
        WS,
        EXAMPLE_CLUSTER,
        detail(json!({"instances": [
            {"type": "head", "instanceId": "ray-uiulpgow9xljimm1-head-0", "phase": "Pending",
             "containerState": "Waiting", "containerStateReason": "ImagePullBackOff",
             "containerStateMessage": "Back-off pulling image"},
        ]})),
    ));
    assert!(
        env.sim
            .state
            .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Starting)
    );
    env.create_workspace("prod", json!({})).await;
    let stuck_after = Duration::from_secs(15);
    env.operators.push(start_operator(
        &env.client,
        emr_ray_operator::operator::OperatorConfig {
            stuck_cluster_after: stuck_after,
            ..operator_config(&env.ns.name)
        },
    ));
    let started = tokio::time::Instant::now();
    env.wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "Starting mirror", |m| {
        m.status.as_ref().unwrap().state.as_deref() == Some("Starting")
    })
    .await;
    assert_eq!(get_calls(&env), 0, "not stuck yet");
    let m = env
        .wait_mirror(
            EXAMPLE_CLUSTER,
            Duration::from_secs(45),
            "stuck: instances",
            |m| !m.status.as_ref().unwrap().instances.is_empty(),
        )
        .await;
    assert!(
        started.elapsed() >= stuck_after,
        "fetched after {:?}",
        started.elapsed()
    );
    let s = m.status.unwrap();
    let reconciling = condition(&s.conditions, "Reconciling").unwrap();
    assert_eq!(
        reconciling.message,
        "Ray cluster is Starting; head: ImagePullBackOff"
    );
    assert!(
        condition(&s.conditions, "Stalled").is_none(),
        "still Starting: kstatus InProgress, not Failed"
    );
    assert_eq!(get_calls(&env), 1);
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert_eq!(get_calls(&env), 1, "once per change");
    assert!(
        env.sim
            .state
            .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Running)
    );
    env.wait_mirror(
        EXAMPLE_CLUSTER,
        ONE_INTERVAL,
        "running: no instances",
        |m| {
            let s = m.status.as_ref().unwrap();
            s.state.as_deref() == Some("Running") && s.instances.is_empty()
        },
    )
    .await;
    env.teardown().await;
}
