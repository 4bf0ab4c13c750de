//! Fault-injection suite: the operator against the real control plane and the EMR simulator,
//! with remote faults, a listing that once ends early, an API-server restart, a killed operator
//! process, odd remote data and a leader failover. Every scenario ends by checking that no
//! mirror was lost or corrupted.
//!
//! `fault_suite` runs the scenarios in two concurrent lanes (one per core) and prints
//! `fault suite: N faults injected, M mirrors checked, L mirrors lost` once at the end, then
//! fails if any scenario failed or any mirror was lost. Faults counted: every fault the
//! simulator injected (`SimStats::faults_injected`) plus one per infrastructure fault (API
//! server restart, operator SIGKILL, leader stop). Mirrors checked: every comparison of one
//! expected mirror with what the API server holds, at each decisive check.
//!
//! `FAULT_SUITE_ONLY=remote-faults,odd-data,...` runs a subset (names in `LANE_A`/`LANE_B`).
//!
//! `end_early_listing_keeps_every_mirror` checks a listing that *persistently* answers an empty
//! page after a full page: it looks complete, so the operator must not trust the removals it
//! implies (it keeps those mirrors, marked `Synced=False/RemovalUnconfirmed`).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use emr_ray_operator::api::{
    ANNOTATION_CLUSTER_ID, ConditionStatus, EmrRayCluster, EmrRayClusterStatus,
};
use emr_ray_operator::controller::mirror::{mirror_name, remote_status};
use emr_ray_operator::emr::text::MAX_CLUSTER_ID;
use emr_ray_operator::emr::{ClusterState, HeadSpec, RayCluster, WorkerSpec};
use emr_sim::Faults;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

// ------------------------------------------------------------------ suite-wide counters

static FAULTS_INJECTED: AtomicU64 = AtomicU64::new(0);
static MIRRORS_CHECKED: AtomicU64 = AtomicU64::new(0);
static MIRRORS_LOST: AtomicU64 = AtomicU64::new(0);

fn add_faults(n: u64) {
    FAULTS_INJECTED.fetch_add(n, Ordering::SeqCst);
}

fn summary_line() -> String {
    format!(
        "fault suite: {} faults injected, {} mirrors checked, {} mirrors lost",
        FAULTS_INJECTED.load(Ordering::SeqCst),
        MIRRORS_CHECKED.load(Ordering::SeqCst),
        MIRRORS_LOST.load(Ordering::SeqCst)
    )
}

// ------------------------------------------------------------------ checks

/// What a comparison of mirrors with what they should be found.
#[derive(Default, Debug)]
struct Report {
    checked: u64,
    /// Expected mirrors that do not exist.
    lost: Vec<String>,
    /// Everything else that is wrong (data, names, duplicates, conditions).
    problems: Vec<String>,
}

impl Report {
    fn ok(&self) -> bool {
        self.lost.is_empty() && self.problems.is_empty()
    }

    fn merge(&mut self, o: Report) {
        self.checked += o.checked;
        self.lost.extend(o.lost);
        self.problems.extend(o.problems);
    }

    fn describe(&self) -> String {
        let first = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>().join("; ");
        format!(
            "{} checked, {} lost [{}], {} other problems [{}]",
            self.checked,
            self.lost.len(),
            first(&self.lost),
            self.problems.len(),
            first(&self.problems)
        )
    }
}

/// Adds a decisive check to the suite's counters.
fn record(r: &Report) {
    MIRRORS_CHECKED.fetch_add(r.checked, Ordering::SeqCst);
    MIRRORS_LOST.fetch_add(r.lost.len() as u64, Ordering::SeqCst);
}

fn assert_ok(label: &str, r: Report) {
    record(&r);
    if !r.ok() {
        // What the operator did with the first mirrors found wrong (`ws/id: …` or `name: …`).
        let mut quoted = Vec::new();
        for p in r.lost.iter().chain(&r.problems).take(2) {
            let key = p.split(':').next().unwrap_or(p);
            let key = key.rsplit('/').next().unwrap_or(key).to_lowercase();
            quoted.push(format!("operator log on {key}:"));
            quoted.extend(crate::operator_log(&key, 30));
        }
        panic!("{label}: {}\n{}", r.describe(), quoted.join("\n"));
    }
}

/// The part of a mirror's status that comes from the remote cluster (no conditions, no
/// observedGeneration).
fn remote_part(s: Option<&EmrRayClusterStatus>) -> Value {
    let mut s = s.cloned().unwrap_or_default();
    s.conditions.clear();
    s.observed_generation = None;
    serde_json::to_value(s).expect("status serializes")
}

/// The status of the simulator's cluster `c` as the operator sees it: sent and decoded
/// (decoding cleans and caps its strings).
fn expected(c: &RayCluster) -> Value {
    let json = serde_json::to_value(c).expect("a cluster serializes");
    let decoded: RayCluster =
        serde_json::from_value(json).expect("the simulator's cluster decodes");
    remote_part(Some(&remote_status(&decoded)))
}

/// The top-level keys whose values differ, with both values shortened (they can be 1 MB).
fn diff_keys(got: &Value, want: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        got.as_object().unwrap_or(&empty),
        want.as_object().unwrap_or(&empty),
    );
    let short = |v: Option<&Value>| {
        let s = v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        if s.len() > 400 {
            let cut = (0..=400)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}...({} bytes)", &s[..cut], s.len())
        } else {
            s
        }
    };
    let mut keys: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| format!("{k}: {} instead of {}", short(a.get(k)), short(b.get(k))))
        .collect()
}

fn synced_of(m: &EmrRayCluster) -> Option<(String, String)> {
    let st = m.status.as_ref()?;
    condition(&st.conditions, "Synced").map(|c| (c.status.to_string(), c.reason.clone()))
}

/// What is wrong with mirror `m` of cluster `c`: its name, its data, `Synced`.
fn check_one(m: &EmrRayCluster, c: &RayCluster) -> Option<String> {
    let mut p = Vec::new();
    if m.name_any() != mirror_name(&c.cluster_id) {
        p.push(format!("mirror named {}", m.name_any()));
    }
    if m.status.is_none() {
        p.push("no status".to_string());
    } else {
        let (got, want) = (remote_part(m.status.as_ref()), expected(c));
        if got != want {
            p.push(format!("data differs in {:?}", diff_keys(&got, &want)));
        }
        match synced_of(m) {
            Some((s, _)) if s == "True" => {}
            other => p.push(format!("Synced is {other:?}")),
        }
    }
    (!p.is_empty()).then(|| p.join(", "))
}

/// Mirrors of workspace `ws_ref` against the simulator's clusters: exactly one mirror per
/// cluster, with the expected name, the remote data and `Synced=True`; no extra mirrors.
fn compare_with_truth(mirrors: &[EmrRayCluster], ws_ref: &str, truth: &[RayCluster]) -> Report {
    let mut r = Report::default();
    let mut by_id: BTreeMap<&str, Vec<&EmrRayCluster>> = BTreeMap::new();
    for m in mirrors.iter().filter(|m| m.spec.workspace_ref == ws_ref) {
        by_id.entry(m.spec.cluster_id.as_str()).or_default().push(m);
    }
    for c in truth {
        r.checked += 1;
        let id = c.cluster_id.as_str();
        let found = by_id.remove(id).unwrap_or_default();
        match found.as_slice() {
            [] => r.lost.push(format!("{ws_ref}/{id}")),
            [m] => r
                .problems
                .extend(check_one(m, c).map(|p| format!("{ws_ref}/{id}: {p}"))),
            many => r.problems.push(format!(
                "{ws_ref}/{id}: {} mirrors ({:?})",
                many.len(),
                many.iter().map(|m| m.name_any()).collect::<Vec<_>>()
            )),
        }
    }
    for (id, ms) in by_id {
        r.problems.push(format!(
            "{ws_ref}/{id}: {} mirror(s) of a cluster the workspace does not have",
            ms.len()
        ));
    }
    r
}

/// Mirror name -> its data (`support::data_of`: the status without the `Synced` condition).
type Snapshot = BTreeMap<String, Value>;

fn snapshot(mirrors: &[EmrRayCluster]) -> Snapshot {
    mirrors.iter().map(|m| (m.name_any(), data_of(m))).collect()
}

/// Every mirror of `before` still exists with the same data.
fn compare_with_snapshot(mirrors: &[EmrRayCluster], before: &Snapshot) -> Report {
    let now: BTreeMap<String, &EmrRayCluster> = mirrors.iter().map(|m| (m.name_any(), m)).collect();
    let mut r = Report::default();
    for (name, data) in before {
        r.checked += 1;
        match now.get(name) {
            None => r.lost.push(name.clone()),
            Some(m) => {
                let d = data_of(m);
                if &d != data {
                    r.problems
                        .push(format!("{name}: data changed in {:?}", diff_keys(&d, data)));
                }
            }
        }
    }
    r
}

/// Waits until every workspace `(name, remote id)` is Ready=True/Synced with the right cluster
/// count and its mirrors match the simulator exactly (see [`compare_with_truth`]). While
/// waiting, every Ready condition seen must be one of `allowed` (when given): conditions must
/// stay truthful during a fault. On timeout the missing mirrors count as lost.
async fn converge(
    env: &Env,
    wss: &[(&str, &str)],
    timeout: Duration,
    label: &str,
    allowed: Option<&[(&str, &str)]>,
) {
    let outcome = common::poll(timeout, Duration::from_millis(500), || async {
        let mirrors = env.mirror_list().await;
        let mut r = Report::default();
        for (name, id) in wss {
            let truth = env.sim.state.clusters(id);
            r.merge(compare_with_truth(&mirrors, name, &truth));
            let st = env.status(name).await;
            let (status, reason, _) = crate::ready_of(&st);
            let ready = (status, reason);
            if let Some(allowed) = allowed {
                assert!(
                    allowed
                        .iter()
                        .any(|(s, re)| ready.0 == *s && ready.1 == *re),
                    "{label}: workspace {name} has Ready={ready:?}, expected one of {allowed:?}; status {st:?}"
                );
            }
            if ready != ("True".to_string(), "Synced".to_string()) {
                r.problems
                    .push(format!("workspace {name}: Ready={ready:?}"));
            } else if st.clusters != Some(truth.len() as i64) {
                r.problems.push(format!(
                    "workspace {name}: status.clusters={:?}, remote has {}",
                    st.clusters,
                    truth.len()
                ));
            }
        }
        if r.ok() { Ok(r) } else { Err(r) }
    })
    .await;
    match outcome {
        Ok(r) => record(&r),
        Err(r) => assert_ok(&format!("{label} (timed out after {timeout:?})"), r),
    }
}

/// Mirror writes `op` could not send (the API server unreachable).
fn unavailable_writes(op: &Operator) -> u64 {
    op.metric(
        "emr_ray_operator_kube_write_refusals_total",
        &[("resource", "emrrayclusters"), ("reason", "Unavailable")],
    ) as u64
}

fn log_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fault-suite-{}-{name}.log", std::process::id()))
}

// ------------------------------------------------------------------ the suite

type Scenario = (&'static str, fn() -> BoxFuture<'static, ()>);

/// The longest scenario gets a lane of its own; the others share the second lane.
const LANE_A: &[Scenario] = &[("remote-faults", || remote_faults().boxed())];
const LANE_B: &[Scenario] = &[
    ("odd-data", || odd_remote_data().boxed()),
    ("operator-kill", || operator_killed_mid_sync().boxed()),
    ("apiserver-restart", || apiserver_restart_mid_sync().boxed()),
    ("leader-failover", || leader_failover_with_faults().boxed()),
    ("end-early-once", || end_early_once().boxed()),
];

fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

async fn run_lane(lane: &'static [Scenario]) -> Vec<(&'static str, Duration, Result<(), String>)> {
    let only = std::env::var("FAULT_SUITE_ONLY").unwrap_or_default();
    let mut out = Vec::new();
    for (name, scenario) in lane {
        if !only.is_empty() && !only.split(',').any(|o| o.trim() == *name) {
            continue;
        }
        let t = Instant::now();
        // Its own task, so that a failing scenario does not stop the others.
        let r = tokio::spawn(scenario()).await.map_err(panic_text);
        println!(
            "fault suite: scenario {name}: {} in {:.1}s",
            if r.is_ok() { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        out.push((*name, t.elapsed(), r));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite() {
    let _serial = crate::serial().await;
    let t = Instant::now();
    let (a, b) = tokio::join!(
        tokio::spawn(run_lane(LANE_A)),
        tokio::spawn(run_lane(LANE_B))
    );
    let results: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    println!(
        "fault suite: {} scenarios in {:.1}s",
        results.len(),
        t.elapsed().as_secs_f64()
    );
    println!("{}", summary_line());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(n, _, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
    assert_eq!(MIRRORS_LOST.load(Ordering::SeqCst), 0, "mirrors lost");
}

// ------------------------------------------------------------------ 1. remote faults

const RPS: f64 = 2.0;
const BURST: u32 = 2;

/// Five workspaces (150, 101, 101, 20 and 60 clusters: 8 pages per round, more than the rate
/// limit allows in a second) on one simulator; each fault in turn, then recovery.
async fn remote_faults() {
    const WSS: [(&str, &str, usize); 5] = [
        ("ws-a", WS, 149),
        ("ws-b", "w-fault-b", 101),
        ("ws-c", "w-fault-c", 101),
        ("ws-d", "w-fault-d", 20),
        ("ws-e", "w-fault-e", 60),
    ];
    let mut env = Env::new("fault-remote").await;
    for (name, id, n) in WSS {
        env.sim.state.generate(id, n, name);
        env.create_workspace(name, json!({ "workspaceId": id }))
            .await;
    }
    let wss: Vec<(&str, &str)> = WSS.iter().map(|(n, i, _)| (*n, *i)).collect();
    let mut cfg = operator_config(&env.ns.name);
    cfg.requests_per_second = RPS;
    cfg.burst = BURST;
    cfg.listing_timeout = Duration::from_secs(30);
    env.operators.push(start_operator(&env.client, cfg));
    converge(&env, &wss, Duration::from_secs(120), "initial sync", None).await;

    // --- 30% 5xx: the client's retries make most listings succeed; whatever the outcome,
    // the data must be right and Ready must say either Synced or RemoteUnavailable.
    let f0 = env.sim.state.stats().faults_injected;
    let changed: Vec<String> = env
        .sim
        .state
        .clusters(WS)
        .iter()
        .skip(1)
        .take(5)
        .map(|c| c.cluster_id.clone())
        .collect();
    for id in &changed {
        assert!(env.sim.state.set_state(WS, id, ClusterState::Stopped));
    }
    let mut c = env.sim.state.clusters("w-fault-c").remove(3);
    c.description = Some("changed while the remote API fails 30% of the time".into());
    env.sim.state.upsert_cluster("w-fault-c", c);
    // The first three requests fail for certain (the fault is exercised whatever chance
    // does), then 30% of them.
    env.sim.state.set_faults(Faults {
        server_error_next: 3,
        server_error_rate: 0.3,
        ..Default::default()
    });
    let allowed = [("True", "Synced"), ("False", "RemoteUnavailable")];
    common::wait_for(
        Duration::from_secs(30),
        "30% 5xx: 3 faults injected",
        || async { (env.sim.state.stats().faults_injected >= f0 + 3).then_some(()) },
    )
    .await;
    // Converged with the new data.
    converge(
        &env,
        &wss,
        Duration::from_secs(60),
        "30% 5xx",
        Some(&allowed[..]),
    )
    .await;
    env.sim.state.set_faults(Faults::default());
    converge(&env, &wss, Duration::from_secs(40), "after 30% 5xx", None).await;
    let before = snapshot(&env.mirror_list().await);
    assert_eq!(before.len(), 432);

    // --- a short throttling burst (3 requests, retry-after 1s) is absorbed by the retries:
    // Ready never leaves True.
    let f0 = env.sim.state.stats().faults_injected;
    env.sim.state.set_faults(Faults {
        throttle_next: 3,
        throttle_retry_after_secs: 1,
        ..Default::default()
    });
    // Ready is checked on every poll, first until the burst has been consumed...
    let ready_stays_true = || async {
        for (name, _) in &wss {
            let st = env.status(name).await;
            let (status, reason, _) = crate::ready_of(&st);
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("True", "Synced"),
                "short throttling burst: workspace {name} {st:?}"
            );
        }
    };
    common::wait_for(
        Duration::from_secs(45),
        "the throttling burst to be consumed",
        || async {
            ready_stays_true().await;
            (env.sim.state.stats().faults_injected >= f0 + 3).then_some(())
        },
    )
    .await;
    // ...then for a window: a "never leaves True" has no event to wait for. The throttled
    // listings retry after the 1 s retry-after and finish within ~3 s of the last throttle; 6 s
    // covers them with a margin.
    common::hold_for(Duration::from_secs(6), ready_stays_true).await;
    assert_eq!(env.sim.state.stats().faults_injected, f0 + 3);
    converge(
        &env,
        &wss,
        Duration::from_secs(30),
        "after throttling burst",
        None,
    )
    .await;
    assert_ok(
        "after throttling burst",
        compare_with_snapshot(&env.mirror_list().await, &before),
    );

    // --- persistent faults: Ready=False with the right reason on every workspace, mirrors
    // kept with their data and Synced=False, recovery when the fault clears.
    let persistent: [(&str, Faults, &str, Option<&str>); 4] = [
        (
            "throttling (retry-after 1s)",
            Faults {
                throttle_next: 1_000_000,
                throttle_retry_after_secs: 1,
                ..Default::default()
            },
            "Throttled",
            Some("Throttling.User"),
        ),
        (
            "truncated bodies",
            Faults {
                truncated_body_rate: 1.0,
                ..Default::default()
            },
            "MalformedResponse",
            None,
        ),
        (
            "malformed bodies",
            Faults {
                malformed_body_rate: 1.0,
                ..Default::default()
            },
            "MalformedResponse",
            None,
        ),
        (
            // Last: the simulator counts a request only after the latency, so requests sent
            // during the fault are counted late; the rate check is made before it clears.
            "latency 3s > request timeout 2s",
            Faults {
                latency_ms: 3000,
                ..Default::default()
            },
            "Timeout",
            None,
        ),
    ];
    for (label, faults, reason, code) in persistent {
        let t = Instant::now();
        env.sim.state.set_faults(faults);
        // The remote side also loses a cluster: a failing listing must not delete its mirror.
        // A listing of ws-d that read the old (no) faults would rightly delete it: first a sync
        // of ws-d that started under the fault (its syncs never overlap, so no earlier listing
        // is still running), then the removal, then one more sync that must keep the mirror.
        env.wait_next_sync(0, "ws-d", Duration::from_secs(90)).await;
        let removed = env.sim.state.clusters("w-fault-d").remove(0);
        assert!(
            env.sim
                .state
                .remove_cluster("w-fault-d", &removed.cluster_id)
        );
        env.wait_next_sync(0, "ws-d", Duration::from_secs(90)).await;
        for (name, _) in &wss {
            let st = env
                .wait_ready(name, "False", Some(reason), Duration::from_secs(90))
                .await;
            let f = st
                .last_failure
                .clone()
                .unwrap_or_else(|| panic!("{label}: {name} has no lastFailure"));
            assert_eq!(f.reason, reason, "{label}: {name}");
            if let Some(code) = code {
                assert_eq!(f.code.as_deref(), Some(code), "{label}: {name}");
            }
            assert_eq!(
                condition(&st.conditions, "Reconciling").map(|c| c.status.as_str()),
                Some("True"),
                "{label}: {name} is Reconciling"
            );
            assert!(
                condition(&st.conditions, "Stalled").is_none(),
                "{label}: a retryable fault is not Stalled: {st:?}"
            );
        }
        common::wait_for(
            Duration::from_secs(30),
            &format!("{label}: every mirror Synced=False/{reason}"),
            || async {
                env.mirror_list()
                    .await
                    .iter()
                    .all(|m| synced_of(m) == Some(("False".into(), reason.into())))
                    .then_some(())
            },
        )
        .await;
        assert_ok(
            &format!("{label}: during the fault"),
            compare_with_snapshot(&env.mirror_list().await, &before),
        );
        if reason == "Timeout" {
            let st = env.sim.state.stats();
            assert!(
                st.max_requests_in_any_second <= (BURST as f64 + RPS) as u64 + 2,
                "remote request rate above the limit ({RPS}/s, burst {BURST}): {st:?}"
            );
            println!(
                "fault suite: remote faults: {} requests, at most {} in one second (limit {RPS}/s, burst {BURST})",
                st.requests, st.max_requests_in_any_second
            );
        }

        // Back first, then the fault clears: a successful listing always has it.
        env.sim.state.upsert_cluster("w-fault-d", removed);
        env.sim.state.set_faults(Faults::default());
        converge(
            &env,
            &wss,
            Duration::from_secs(60),
            &format!("{label}: recovery"),
            None,
        )
        .await;
        for (name, _) in &wss {
            assert!(
                env.status(name).await.last_failure.is_none(),
                "{label}: {name} lastFailure cleared"
            );
        }
        assert_ok(
            &format!("{label}: after recovery"),
            compare_with_snapshot(&env.mirror_list().await, &before),
        );
        println!(
            "fault suite: remote faults: {label} ok in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    add_faults(env.sim.state.stats().faults_injected);
    env.teardown().await;
}

// ------------------------------------------------------------------ 2. API server restart

/// The API server (with etcd and the controller manager) is stopped while the operator's
/// first sync of 300 clusters is writing mirrors, and started again on the same data and
/// port. The same operator converges without a restart.
async fn apiserver_restart_mid_sync() {
    tokio::task::spawn_blocking(|| {
        let status = Command::new("bash")
            .arg(common::repo_root().join("tests/control-plane/kcp.sh"))
            .arg("build-kcp")
            .status()
            .expect("kcp.sh build-kcp");
        assert!(status.success(), "kcp.sh build-kcp failed");
    })
    .await
    .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("fault-kcp-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let data = dir.path().join("data");
    let log = dir.path().join("kcp.log");
    let port = common::free_port();
    let mut kcp = {
        let (data, log) = (data.clone(), log.clone());
        tokio::task::spawn_blocking(move || common::Kcp::start(&data, port, &log))
            .await
            .unwrap()
    };
    let client = common::client_for(&kcp.kubeconfig).await;
    let mut env = Env::on(client, "fault-restart").await;
    env.sim.state.generate(WS, 299, "restart");
    let truth_len = env.sim.state.clusters(WS).len();
    assert_eq!(truth_len, 300);
    env.create_workspace("ws", json!({})).await;
    env.start();

    // Stop the control plane as soon as the first sync has written a few mirrors.
    common::wait_for(
        Duration::from_secs(60),
        "the first mirror writes",
        || async { (env.operators[0].writes_to("emrrayclusters") >= 40).then_some(()) },
    )
    .await;
    let t = Instant::now();
    let unavailable_at_stop = unavailable_writes(&env.operators[0]);
    kcp = tokio::task::spawn_blocking(move || {
        kcp.stop();
        kcp
    })
    .await
    .unwrap();
    let writes_at_stop = env.operators[0].writes_to("emrrayclusters");
    add_faults(1);
    println!(
        "fault suite: apiserver restart: stopped after {writes_at_stop} mirror writes (in {:.1}s)",
        t.elapsed().as_secs_f64()
    );
    for l in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        if l.contains("did not stop") || l.contains("unexpectedly") {
            println!("fault suite: apiserver restart: kcp: {l}");
        }
    }
    assert!(
        writes_at_stop < 2 * truth_len as u64,
        "the control plane went down only after the first sync had written every mirror \
         ({writes_at_stop} writes): the restart did not interrupt the sync"
    );
    // Down until the operator has met the outage: a mirror write it could not send.
    common::wait_for(
        Duration::from_secs(60),
        "a mirror write refused as Unavailable while the control plane is down",
        || async { (unavailable_writes(&env.operators[0]) > unavailable_at_stop).then_some(()) },
    )
    .await;
    let t = Instant::now();
    kcp = {
        let (data, log) = (data.clone(), kcp.log.clone());
        let old = kcp.kubeconfig.clone();
        let k = tokio::task::spawn_blocking(move || common::Kcp::start(&data, port, &log))
            .await
            .unwrap();
        assert_eq!(k.kubeconfig, old);
        k
    };
    println!(
        "fault suite: apiserver restart: control plane back after {:.1}s",
        t.elapsed().as_secs_f64()
    );

    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(120),
        "apiserver restart: convergence",
        None,
    )
    .await;
    assert!(
        !env.operators[0].task.is_finished(),
        "the operator stopped after the API server restart"
    );
    // Its caches follow the API server again: a further sync writes no mirror.
    let w0 = env.operators[0].writes_to("emrrayclusters");
    let before = snapshot(&env.mirror_list().await);
    env.wait_next_sync(0, "ws", Duration::from_secs(40)).await;
    // What changed, if anything, before how many writes it took.
    assert_ok(
        "apiserver restart: after one more sync",
        compare_with_snapshot(&env.mirror_list().await, &before),
    );
    assert_eq!(
        env.operators[0].writes_to("emrrayclusters"),
        w0,
        "mirror writes after convergence"
    );
    env.teardown().await;
    tokio::task::spawn_blocking(move || drop(kcp))
        .await
        .unwrap();
    drop(dir);
}

// ------------------------------------------------------------------ 3. operator SIGKILL

/// The operator binary as a child process; killed on drop.
struct OperatorProcess {
    child: Child,
    metrics: String,
}

impl OperatorProcess {
    fn start(ns: &str, kubeconfig: &Path, log: &Path) -> OperatorProcess {
        let port = common::free_port();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
            .args([
                "run",
                "--namespaces",
                ns,
                "--leader-election=false",
                "--allowed-endpoints",
                "http://127.0.0.1:*",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                // Read by the test itself, without a token.
                "--metrics-secure=false",
                "--health-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn the operator");
        OperatorProcess {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    async fn metrics_text(&self) -> Option<String> {
        reqwest::get(&self.metrics).await.ok()?.text().await.ok()
    }

    async fn mirror_writes(&self) -> Option<u64> {
        Some(writes_in(&self.metrics_text().await?, "emrrayclusters"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The operator process is SIGKILLed while its first sync of 500 clusters is writing mirrors,
/// then started again: it converges without duplicates or lost mirrors and writes only what
/// is missing.
async fn operator_killed_mid_sync() {
    let env = Env::new("fault-kill").await;
    env.sim.state.generate(WS, 499, "kill");
    let truth = env.sim.state.clusters(WS);
    assert_eq!(truth.len(), 500);
    env.create_workspace("ws", json!({})).await;
    let kubeconfig = tokio::task::spawn_blocking(common::kubeconfig_path)
        .await
        .unwrap();
    let log = log_path("operator");
    let mut first = OperatorProcess::start(&env.ns.name, &kubeconfig, &log);
    common::wait_for(
        Duration::from_secs(60),
        "the first operator's mirror writes",
        || async {
            first
                .mirror_writes()
                .await
                .filter(|w| *w >= 200)
                .map(|_| ())
        },
    )
    .await;
    first.kill();
    add_faults(1);
    // Requests already sent may still land: the mirrors as they are once the API server has
    // finished them (two reads a poll apart alike; nobody else writes them until the second
    // operator starts).
    let versions = |ms: &[EmrRayCluster]| -> BTreeMap<String, Option<String>> {
        ms.iter()
            .map(|m| (m.name_any(), m.resource_version()))
            .collect()
    };
    let last = std::sync::Mutex::new(None);
    let at_kill = common::wait_for(
        Duration::from_secs(30),
        "the mirrors to stop changing after the kill",
        || async {
            let now = env.mirror_list().await;
            let prev = last.lock().unwrap().replace(versions(&now));
            (prev == Some(versions(&now))).then_some(now)
        },
    )
    .await;
    let done = truth
        .iter()
        .filter(|c| {
            at_kill
                .iter()
                .any(|m| m.spec.cluster_id == c.cluster_id && check_one(m, c).is_none())
        })
        .count();
    let needed = truth.len() - done;
    println!(
        "fault suite: operator kill: {} mirrors existed at the kill, {done} complete, {needed} to write",
        at_kill.len()
    );
    assert!(
        needed > 0 && done > 0,
        "the kill did not land in the middle of the sync ({done} of {} complete)",
        truth.len()
    );

    let second = OperatorProcess::start(&env.ns.name, &kubeconfig, &log);
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(90),
        "operator kill: convergence",
        None,
    )
    .await;
    // Its mirror writes are counted once no sync is running.
    let writes = common::wait_for(
        Duration::from_secs(30),
        "the restarted operator between syncs",
        || async {
            let text = second.metrics_text().await?;
            let sum = |name| common::metric_sum(&text, name, &[("workspace", "ws")]);
            let idle = sum("emr_ray_operator_sync_attempts_total")
                == sum("emr_ray_operator_sync_duration_seconds_count");
            idle.then(|| writes_in(&text, "emrrayclusters"))
        },
    )
    .await;
    println!(
        "fault suite: operator kill: the restarted operator made {writes} mirror writes for {needed} incomplete mirrors"
    );
    assert!(
        writes <= 2 * needed as u64 + 5,
        "write storm: {writes} mirror writes for {needed} incomplete mirrors"
    );
    // A further sync adds no mirror writes.
    let before = snapshot(&env.mirror_list().await);
    common::wait_next_sync(Duration::from_secs(40), "ws", || second.metrics_text()).await;
    assert_eq!(
        second.mirror_writes().await,
        Some(writes),
        "mirror writes after convergence"
    );
    assert_ok(
        "operator kill: after one more sync",
        compare_with_snapshot(&env.mirror_list().await, &before),
    );
    drop(second);
    env.teardown().await;
}

// ------------------------------------------------------------------ 4. odd remote data

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// Unknown states, missing fields, empty worker groups, huge strings, text with control, bidi
/// and zero-width characters, and cluster IDs that are not Kubernetes names are mirrored without
/// failing the workspace.
async fn odd_remote_data() {
    let mut env = Env::new("fault-odd").await;
    let running = Some(ClusterState::Running);
    let odd = vec![
        RayCluster {
            cluster_id: "ray-hibernating".into(),
            name: Some("sleepy".into()),
            state: Some(ClusterState::Other("Hibernating".into())),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-empty-state".into(),
            state: Some(ClusterState::Other(String::new())),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-only-id".into(),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-no-workers".into(),
            state: running.clone(),
            head_spec: Some(HeadSpec {
                cpu: Some("2".into()),
                memory: Some("8Gi".into()),
                replica: Some(1),
                ..Default::default()
            }),
            worker_spec: Some(vec![]),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-empty-worker".into(),
            state: running.clone(),
            worker_spec: Some(vec![WorkerSpec::default()]),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-long-name".into(),
            name: Some("n".repeat(10 * 1024)),
            state: running.clone(),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-huge-description".into(),
            description: Some("d".repeat(1 << 20)),
            state: running.clone(),
            ..Default::default()
        },
        // IDs that are not DNS-1123 names, each next to a valid ID it could collide with.
        RayCluster {
            cluster_id: "Ray_Cluster.01".into(),
            state: running.clone(),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "ray-cluster-01".into(),
            state: running.clone(),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "UPPER".into(),
            state: running.clone(),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "upper".into(),
            state: running.clone(),
            ..Default::default()
        },
        // The longest ID accepted: longer than a name or a label value.
        RayCluster {
            cluster_id: "a".repeat(MAX_CLUSTER_ID),
            state: running.clone(),
            ..Default::default()
        },
        // Text with control, bidi and zero-width characters: mirrored cleaned.
        RayCluster {
            cluster_id: "ray-unicode".into(),
            name: Some("名字 ✓\u{202E}\u{200B}\n".into()),
            message: Some("a\u{1b}[31m\tb".into()),
            state: Some(ClusterState::Other("\u{2066}Resizing\u{2069}".into())),
            ..Default::default()
        },
        RayCluster {
            cluster_id: "---".into(),
            state: running,
            ..Default::default()
        },
    ];
    for c in &odd {
        env.sim.state.upsert_cluster(WS, c.clone());
    }
    env.sim.state.generate(WS, 5, "normal");
    let truth = env.sim.state.clusters(WS);
    env.create_workspace("odd", json!({})).await;
    env.start();
    converge(
        &env,
        &[("odd", WS)],
        Duration::from_secs(90),
        "odd data",
        None,
    )
    .await;
    let st = env.status("odd").await;
    assert_eq!(st.clusters_by_state.get("Hibernating"), Some(&1), "{st:?}");
    assert_eq!(st.clusters_by_state.get("Resizing"), Some(&1), "{st:?}");

    let mirrors = env.mirror_list().await;
    assert_eq!(mirrors.len(), truth.len());
    let mut names = std::collections::BTreeSet::new();
    for m in &mirrors {
        let id = &m.spec.cluster_id;
        let name = m.name_any();
        assert!(is_dns_label(&name), "{id:?}: invalid name {name:?}");
        assert!(names.insert(name.clone()), "two mirrors named {name}");
        assert_eq!(
            m.annotations().get(ANNOTATION_CLUSTER_ID),
            Some(id),
            "{name}: the exact ID is kept"
        );
        for (k, v) in m.labels() {
            assert!(is_label_value(v), "{name}: label {k}={v:?} is not valid");
        }
        let s = m.status.as_ref().unwrap();
        let ready = condition(&s.conditions, "Ready").unwrap();
        let known = matches!(
            s.state.as_deref(),
            Some("Starting" | "Running" | "Stopping" | "Stopped" | "Error")
        );
        if !known {
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", "UnknownState"),
                "{name}"
            );
        }
    }
    let huge = env
        .mirrors()
        .get(&mirror_name("ray-huge-description"))
        .await
        .unwrap();
    // Remote strings are capped (with a visible marker): every mirror stays far below the
    // API server's object size limit.
    let description = huge.status.unwrap().description.unwrap();
    assert_eq!(
        description.len(),
        emr_ray_operator::controller::mirror::MAX_TEXT
    );
    assert!(description.ends_with(emr_ray_operator::controller::mirror::TRUNCATED));
    let unicode = env
        .mirrors()
        .get("ray-unicode")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(unicode.display_name.as_deref(), Some("名字 ✓"));
    assert_eq!(unicode.message.as_deref(), Some("a [31m b"));
    assert_eq!(unicode.state.as_deref(), Some("Resizing"));

    // Nothing flaps: a further sync rewrites no mirror.
    let before = snapshot(&mirrors);
    let w0 = env.operators[0].writes_to("emrrayclusters");
    env.wait_next_sync(0, "odd", Duration::from_secs(40)).await;
    assert_eq!(
        env.operators[0].writes_to("emrrayclusters"),
        w0,
        "mirror writes on an unchanged listing"
    );
    assert_ok(
        "odd data: after one more sync",
        compare_with_snapshot(&env.mirror_list().await, &before),
    );
    env.wait_ready("odd", "True", Some("Synced"), Duration::from_secs(5))
        .await;
    env.teardown().await;
}

// ------------------------------------------------------------------ 5. leader failover

/// Two replicas with leader election and 30% 5xx: the leader stops, the standby takes over,
/// no mirror is lost, and the data is right once the fault clears.
async fn leader_failover_with_faults() {
    let env = Env::new("fault-leader").await;
    env.sim.state.generate(WS, 149, "lead");
    env.create_workspace("ws", json!({})).await;
    env.sim.state.set_faults(Faults {
        server_error_rate: 0.3,
        ..Default::default()
    });
    let lease_cfg = |id: &str| {
        let mut cfg = operator_config(&env.ns.name);
        cfg.identity = id.to_string();
        cfg.leader_election = Some(emr_ray_operator::operator::leader::LeaseConfig {
            namespace: env.ns.name.clone(),
            name: "emr-ray-operator-leader".into(),
            identity: id.to_string(),
            lease_duration: Duration::from_secs(6),
            renew_every: Duration::from_secs(2),
        });
        cfg
    };
    let leases = Api::<Lease>::namespaced(env.client.clone(), &env.ns.name);
    let holder = || async {
        leases
            .get_opt("emr-ray-operator-leader")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let a = start_operator(&env.client, lease_cfg("replica-a"));
    common::wait_for(Duration::from_secs(30), "replica-a leads", || async {
        (holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = start_operator(&env.client, lease_cfg("replica-b"));
    // Before the first listing the workspace has no Ready condition, then Pending.
    let allowed = [
        ("True", "Synced"),
        ("False", "RemoteUnavailable"),
        ("False", "Pending"),
        ("", ""),
    ];
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(90),
        "leader failover: first sync under 30% 5xx",
        Some(&allowed[..]),
    )
    .await;
    assert_eq!(b.writes(), 0, "the standby never writes");
    let names: Vec<String> = env
        .mirror_list()
        .await
        .iter()
        .map(|m| m.name_any())
        .collect();
    assert_eq!(names.len(), 150);

    // Remote changes the new leader has to bring in.
    let changed: Vec<String> = env
        .sim
        .state
        .clusters(WS)
        .iter()
        .skip(10)
        .take(5)
        .map(|c| c.cluster_id.clone())
        .collect();
    for id in &changed {
        assert!(env.sim.state.set_state(WS, id, ClusterState::Stopping));
    }
    let a_metrics = a.metrics.clone();
    a.stop().await;
    add_faults(1);
    let faults_at_stop = env.sim.state.stats().faults_injected;
    let a_writes = writes_in(&a_metrics.encode(), "emrrayclusters");
    // Until the new leader has written the changes, poll that no mirror disappears.
    let t = Instant::now();
    common::wait_until(
        Duration::from_secs(60),
        "the standby to take over and write the changes",
        || async {
            let mirrors = env.mirror_list().await;
            let now: std::collections::BTreeSet<String> =
                mirrors.iter().map(|m| m.name_any()).collect();
            let missing: Vec<&String> = names.iter().filter(|n| !now.contains(*n)).collect();
            if !missing.is_empty() {
                MIRRORS_LOST.fetch_add(missing.len() as u64, Ordering::SeqCst);
                panic!("leader failover: mirrors disappeared: {missing:?}");
            }
            let done = changed.iter().all(|id| {
                mirrors.iter().any(|m| {
                    &m.spec.cluster_id == id
                        && m.status.as_ref().and_then(|s| s.state.as_deref()) == Some("Stopping")
                })
            });
            let holder = holder().await;
            if done && holder.as_deref() == Some("replica-b") && b.writes() > 0 {
                Ok(())
            } else {
                Err(format!(
                    "changes written: {done}, holder {holder:?}, b wrote {}",
                    b.writes()
                ))
            }
        },
    )
    .await;
    println!(
        "fault suite: leader failover: replica-b took over and wrote the changes in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        writes_in(&a_metrics.encode(), "emrrayclusters"),
        a_writes,
        "the stopped leader wrote"
    );
    // The new leader keeps syncing under the fault and meets a 5xx itself: its next request
    // fails for certain (then 30% of them again).
    env.sim.state.set_faults(Faults {
        server_error_next: 1,
        server_error_rate: 0.3,
        ..Default::default()
    });
    common::wait_for(
        Duration::from_secs(60),
        "leader failover: the new leader meets a 5xx",
        || async { (env.sim.state.stats().faults_injected > faults_at_stop).then_some(()) },
    )
    .await;
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(60),
        "leader failover: new leader under 30% 5xx",
        Some(&allowed[..2]),
    )
    .await;
    env.sim.state.set_faults(Faults::default());
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(60),
        "leader failover: after the fault",
        None,
    )
    .await;
    assert_eq!(holder().await.as_deref(), Some("replica-b"));
    add_faults(env.sim.state.stats().faults_injected);
    b.stop().await;
    env.teardown().await;
}

// ------------------------------------------------------------------ 6. a listing ends early

/// `end_early` for one listing: page 2 of 150 clusters comes back empty after a full page 1,
/// which looks like a complete listing of 100. The operator does not delete on a listing that
/// ends on a page boundary; the next listing is complete, so no mirror may be deleted or
/// changed.
async fn end_early_once() {
    let mut env = Env::new("fault-early-once").await;
    env.sim.state.generate(WS, 149, "once");
    env.create_workspace("ws", json!({})).await;
    let mut cfg = operator_config(&env.ns.name);
    // One request a second: the next listing comes a second or more after the short one, by
    // when the fault is off again.
    cfg.requests_per_second = 1.0;
    cfg.burst = 1;
    env.operators.push(start_operator(&env.client, cfg));
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(90),
        "end early once: initial sync",
        None,
    )
    .await;
    let before = snapshot(&env.mirror_list().await);
    assert_eq!(before.len(), 150);
    let f0 = env.sim.state.stats().faults_injected;
    env.sim.state.set_faults(Faults {
        end_early: true,
        ..Default::default()
    });
    common::wait_for(
        Duration::from_secs(30),
        "a listing that ends early",
        || async { (env.sim.state.stats().faults_injected > f0).then_some(()) },
    )
    .await;
    env.sim.state.set_faults(Faults::default());
    let r0 = env.sim.state.stats().requests;
    assert_eq!(
        env.sim.state.stats().faults_injected,
        f0 + 1,
        "one short listing"
    );
    // The next, complete listing (2 pages), with the mirror writes of that sync.
    env.wait_next_sync(0, "ws", Duration::from_secs(40)).await;
    assert!(
        env.sim.state.stats().requests >= r0 + 2,
        "a complete listing followed"
    );
    assert_ok(
        "end early once: after the short listing",
        compare_with_snapshot(&env.mirror_list().await, &before),
    );
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(30),
        "end early once: afterwards",
        None,
    )
    .await;
    add_faults(env.sim.state.stats().faults_injected);
    env.teardown().await;
}

// ------------------------------------------------------------------ known limitation: end_early

/// Persistent `end_early` with 150 clusters: page 2 always comes back empty after a full
/// page 1. The API has no total count, so the client takes this for a complete listing of 100
/// clusters (`src/emr/client.rs` documents the limitation). The operator does not trust
/// removals seen in a listing that ends exactly on a page boundary: no mirror may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_early_listing_keeps_every_mirror() {
    let _serial = crate::serial().await;
    let mut env = Env::new("fault-early").await;
    env.sim.state.generate(WS, 149, "early");
    env.create_workspace("ws", json!({})).await;
    env.start();
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(90),
        "end early: initial sync",
        None,
    )
    .await;
    let before = snapshot(&env.mirror_list().await);
    assert_eq!(before.len(), 150);
    let f0 = env.sim.state.stats().faults_injected;
    env.sim.state.set_faults(Faults {
        end_early: true,
        ..Default::default()
    });
    // Three short listings: by then the first short sync's mirror writes are done.
    common::wait_for(Duration::from_secs(40), "three short listings", || async {
        (env.sim.state.stats().faults_injected >= f0 + 3).then_some(())
    })
    .await;
    let mirrors_during = env.mirror_list().await;
    let during = compare_with_snapshot(&mirrors_during, &before);
    let unconfirmed = mirrors_during
        .iter()
        .filter(|m| {
            m.status
                .as_ref()
                .and_then(|s| condition(&s.conditions, "Synced"))
                .is_some_and(|c| {
                    c.status == ConditionStatus::False && c.reason == "RemovalUnconfirmed"
                })
        })
        .count();
    let st = env.status("ws").await;
    env.sim.state.set_faults(Faults::default());
    add_faults(env.sim.state.stats().faults_injected);
    record(&during);
    println!(
        "fault suite: end early: workspace Ready={:?} clusters={:?}; mirrors: {}",
        crate::ready_of(&st),
        st.clusters,
        during.describe()
    );
    println!("{}", summary_line());
    assert!(during.ok(), "end early: {}", during.describe());
    assert_eq!(
        unconfirmed, 50,
        "the mirrors of the unseen page are marked RemovalUnconfirmed"
    );
    converge(
        &env,
        &[("ws", WS)],
        Duration::from_secs(60),
        "end early: recovery",
        None,
    )
    .await;
    env.teardown().await;
}
