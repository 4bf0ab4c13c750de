//! Scale benchmark against the real control plane and the EMR simulator (`make bench`).
//!
//! Runs the release operator binary as a child process (so that its peak RSS and CPU time are
//! its own), the simulator in this process, and measures:
//! 1. initial sync of W workspaces × C clusters: time until every mirror is correct, remote
//!    requests, API-server write requests, operator peak RSS and CPU seconds;
//! 2. steady state for N intervals with no remote change: writes to mirrors, remote requests,
//!    operator CPU;
//! 3. churn: 1% of the clusters change state each interval: writes per interval and the delay
//!    from the remote change to the mirror update;
//! 4. a naive baseline that re-applies every mirror each interval (what a `kubectl apply` loop
//!    does), in the same run, and the ratios.
//!
//! Needs KUBECONFIG pointing at a control plane (`tests/control-plane/kcp.sh up`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use rand::seq::SliceRandom;
use serde_json::json;

use emr_ray_operator::api::{self as crd, EmrRayCluster, EmrWorkspace};
use emr_ray_operator::controller::mirror;
use emr_ray_operator::emr::{ClientConfig, ClusterState, Credentials, EmrClient};
use emr_ray_operator::sim::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, SimConfig, Simulator,
};

#[derive(Parser, Debug)]
#[command(name = "bench", about = "Scale benchmark of emr-ray-operator")]
struct Args {
    #[arg(long, default_value_t = 100)]
    workspaces: usize,
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// syncInterval of every workspace, in seconds (minimum 10).
    #[arg(long, default_value_t = 10)]
    interval: u64,
    #[arg(long, default_value_t = 10)]
    steady_intervals: u32,
    #[arg(long, default_value_t = 3)]
    churn_intervals: u32,
    /// Fraction of clusters changed per churn interval.
    #[arg(long, default_value_t = 0.01)]
    churn_fraction: f64,
    /// Intervals of the naive baseline.
    #[arg(long, default_value_t = 2)]
    naive_intervals: u32,
    /// Operator binary (a release build).
    #[arg(long, default_value = "target/release/emr-ray-operator")]
    operator_bin: PathBuf,
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    #[arg(long, default_value_t = 100.0)]
    requests_per_second: f64,
}

/// Write requests per resource, from the API server's `apiserver_request_total`.
async fn apiserver_writes(client: &kube::Client, resource: &str) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some(close) = rest.rfind('}') else {
            continue;
        };
        let labels = &rest[..close];
        let write = ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
            .iter()
            .any(|v| labels.contains(&format!("verb=\"{v}\"")));
        if write && labels.contains(&format!("resource=\"{resource}\"")) {
            total += rest[close + 1..].trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(total)
}

struct Proc {
    pid: u32,
}

impl Proc {
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which is in parentheses).
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the name.
        (ticks(11) + ticks(12)) / 100.0
    }
    fn status_kb(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn expected_state(c: &emr_ray_operator::emr::RayCluster) -> Option<String> {
    c.state.as_ref().map(|s| s.as_str().to_string())
}

/// Mirrors whose state equals the simulator's, and the number of mirrors.
fn correct_mirrors(
    store: &Store<EmrRayCluster>,
    expected: &HashMap<String, Option<String>>,
) -> (usize, usize) {
    let all = store.state();
    let ok = all
        .iter()
        .filter(|m| {
            expected.get(&m.spec.cluster_id).is_some_and(|want| {
                m.status
                    .as_ref()
                    .is_some_and(|s| &s.state == want && s.display_name.is_some())
            })
        })
        .count();
    (ok, all.len())
}

fn row(name: &str, value: String) {
    println!("| {name:<58} | {value:>22} |");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.interval < 10 {
        bail!("--interval must be at least 10 (the CRD's minimum)");
    }
    let interval = Duration::from_secs(args.interval);
    let client = kube::Client::try_default()
        .await
        .context("KUBECONFIG must point at a control plane (tests/control-plane/kcp.sh up)")?;
    crd::install_crds(&client).await?;
    let ns = format!(
        "emr-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let pp = PatchParams::apply("bench").force();
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &pp,
            &Patch::Apply(json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":ns}})),
        )
        .await?;

    // Simulator with W × C clusters.
    let mut cfg = SimConfig::with_default_fixture();
    cfg.workspaces.clear();
    let sim = Simulator::start(cfg).await?;
    let ws_ids: Vec<String> = (0..args.workspaces)
        .map(|i| format!("w-bench{i:04}"))
        .collect();
    for id in &ws_ids {
        sim.state.generate(id, args.clusters, &format!("ray-{id}"));
    }
    let total = args.workspaces * args.clusters;
    let endpoint = sim.base_url().as_str().trim_end_matches('/').to_string();
    println!(
        "bench: {} workspaces x {} clusters = {total} clusters, syncInterval {}s, namespace {ns}",
        args.workspaces, args.clusters, args.interval
    );

    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch("emr", &pp, &Patch::Apply(json!({
            "apiVersion":"v1","kind":"Secret","metadata":{"name":"emr"},
            "stringData":{"accessKeyId": DEFAULT_ACCESS_KEY_ID, "accessKeySecret": DEFAULT_ACCESS_KEY_SECRET}})))
        .await?;
    let workspaces: Api<EmrWorkspace> = Api::namespaced(client.clone(), &ns);
    for (i, id) in ws_ids.iter().enumerate() {
        workspaces
            .patch(&format!("ws-{i:04}"), &pp, &Patch::Apply(json!({
                "apiVersion":"emr.aliyun.io/v1alpha1","kind":"EmrWorkspace",
                "metadata":{"name": format!("ws-{i:04}")},
                "spec":{"regionId":"cn-hangzhou","workspaceId": id,"endpoint": endpoint,
                        "credentials":{"secretRef":{"name":"emr"}},"syncInterval": format!("{}s", args.interval)}})))
            .await?;
    }

    // Watch the mirrors.
    let mirrors_api: Api<EmrRayCluster> = Api::namespaced(client.clone(), &ns);
    let (store, writer) = reflector::store();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<String>, Instant)>();
    let watch = reflector(
        writer,
        watcher(mirrors_api.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |o| {
        if let Ok(m) = o {
            let _ = tx.send((
                m.spec.cluster_id.clone(),
                m.status.as_ref().and_then(|s| s.state.clone()),
                Instant::now(),
            ));
        }
        futures::future::ready(())
    });
    let watch_task = tokio::spawn(watch);
    store.wait_until_ready().await?;

    let mut expected: HashMap<String, Option<String>> = HashMap::new();
    for id in &ws_ids {
        for c in sim.state.clusters(id) {
            expected.insert(c.cluster_id.clone(), expected_state(&c));
        }
    }

    // 1. Initial sync.
    let writes_m0 = apiserver_writes(&client, "emrrayclusters").await?;
    let writes_w0 = apiserver_writes(&client, "emrworkspaces").await?;
    sim.state.reset_stats();
    let start = Instant::now();
    let mut child = tokio::process::Command::new(&args.operator_bin)
        .args([
            "run",
            "--namespaces",
            &ns,
            "--leader-election=false",
            "--metrics-addr",
            "127.0.0.1:0",
            "--concurrency",
            &args.concurrency.to_string(),
            "--requests-per-second",
            &args.requests_per_second.to_string(),
            "--burst",
            &args.requests_per_second.to_string(),
        ])
        .env(
            "RUST_LOG",
            std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build --release)",
                args.operator_bin.display()
            )
        })?;
    let op = Proc {
        pid: child.id().unwrap_or(0),
    };
    loop {
        let (ok, n) = correct_mirrors(&store, &expected);
        if ok == total && n == total {
            break;
        }
        if start.elapsed() > Duration::from_secs(900) {
            bail!("initial sync incomplete after 900s: {ok}/{total} correct, {n} mirrors");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let initial_time = start.elapsed();
    let initial_requests = sim.state.stats().requests;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let initial_writes_m = apiserver_writes(&client, "emrrayclusters").await? - writes_m0;
    let initial_writes_w = apiserver_writes(&client, "emrworkspaces").await? - writes_w0;
    let initial_cpu = op.cpu_seconds();
    let initial_rss = op.status_kb("VmHWM:");
    while rx.try_recv().is_ok() {}

    // 2. Steady state.
    let writes_m1 = apiserver_writes(&client, "emrrayclusters").await?;
    let writes_w1 = apiserver_writes(&client, "emrworkspaces").await?;
    let cpu1 = op.cpu_seconds();
    sim.state.reset_stats();
    tokio::time::sleep(interval * args.steady_intervals).await;
    let steady_writes_m = apiserver_writes(&client, "emrrayclusters").await? - writes_m1;
    let steady_writes_w = apiserver_writes(&client, "emrworkspaces").await? - writes_w1;
    let steady_requests = sim.state.stats().requests;
    let steady_cpu = op.cpu_seconds() - cpu1;
    while rx.try_recv().is_ok() {}

    // 3. Churn.
    let all_ids: Vec<(String, String)> = ws_ids
        .iter()
        .flat_map(|w| {
            sim.state
                .clusters(w)
                .into_iter()
                .map(move |c| (w.clone(), c.cluster_id))
        })
        .collect();
    let per_interval = ((total as f64) * args.churn_fraction).round().max(1.0) as usize;
    let mut churn_writes = Vec::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut missed = 0usize;
    for _ in 0..args.churn_intervals {
        let w0 = apiserver_writes(&client, "emrrayclusters").await?;
        let mut pick = all_ids.clone();
        pick.shuffle(&mut rand::rng());
        pick.truncate(per_interval);
        let mut pending: HashMap<String, (String, Instant)> = HashMap::new();
        for (ws, id) in &pick {
            let now_state = expected.get(id).cloned().flatten();
            let next = if now_state.as_deref() == Some("Running") {
                ClusterState::Stopped
            } else {
                ClusterState::Running
            };
            sim.state.set_state(ws, id, next.clone());
            expected.insert(id.clone(), Some(next.as_str().to_string()));
            pending.insert(id.clone(), (next.as_str().to_string(), Instant::now()));
        }
        let deadline = Instant::now() + interval + Duration::from_secs(5);
        while !pending.is_empty() && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(Some((id, state, at))) => {
                    if let Some((want, t0)) = pending.get(&id)
                        && state.as_deref() == Some(want.as_str())
                    {
                        latencies.push(at.duration_since(*t0));
                        pending.remove(&id);
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        missed += pending.len();
        // Let the rest of the interval pass so each interval has exactly one sync per workspace.
        tokio::time::sleep(Duration::from_secs(1)).await;
        churn_writes.push(apiserver_writes(&client, "emrrayclusters").await? - w0);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    let final_rss = op.status_kb("VmHWM:");
    let final_cpu = op.cpu_seconds();

    // Stop the operator (graceful).
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;

    // 4. Naive baseline: list every workspace and re-apply every mirror and its status.
    let emr = EmrClient::new(ClientConfig {
        requests_per_second: args.requests_per_second,
        burst: args.requests_per_second as u32,
        ..ClientConfig::default()
    })?;
    let creds = Credentials::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET);
    let url = sim.base_url();
    let ws_list = workspaces.list(&Default::default()).await?.items;
    let mut naive_writes = Vec::new();
    let mut naive_times = Vec::new();
    sim.state.reset_stats();
    for _ in 0..args.naive_intervals {
        let w0 = apiserver_writes(&client, "emrrayclusters").await?;
        let t0 = Instant::now();
        for ws in &ws_list {
            let listing = emr
                .list_ray_clusters(&url, &ws.spec.workspace_id, &creds)
                .await?;
            let owner = json!({"apiVersion": EmrWorkspace::api_version(&()), "kind": "EmrWorkspace",
                "name": ws.name_any(), "uid": ws.uid(), "controller": true, "blockOwnerDeletion": true});
            let api = mirrors_api.clone();
            futures::stream::iter(listing.clusters)
                .map(|c| {
                    let api = api.clone();
                    let owner = owner.clone();
                    let ws = ws.clone();
                    async move {
                        let name = mirror::mirror_name(&c.cluster_id);
                        let pp = PatchParams::apply("naive-kubectl-apply").force();
                        let obj = json!({"apiVersion":"emr.aliyun.io/v1alpha1","kind":"EmrRayCluster",
                            "metadata":{"name": name, "ownerReferences":[owner]},
                            "spec":{"workspaceRef": ws.name_any(),"workspaceId": ws.spec.workspace_id,
                                    "regionId": ws.spec.region_id,"clusterId": c.cluster_id}});
                        let _ = api.patch(&name, &pp, &Patch::Apply(&obj)).await;
                        let mut st = mirror::remote_status(&c);
                        st.conditions = mirror::mirror_conditions(&st, &[], Some(1), None, &emr_ray_operator::time::now_rfc3339());
                        let obj = json!({"apiVersion":"emr.aliyun.io/v1alpha1","kind":"EmrRayCluster",
                            "metadata":{"name": name},"status": st});
                        let _ = api.patch_status(&name, &pp, &Patch::Apply(&obj)).await;
                    }
                })
                .buffer_unordered(args.concurrency as usize)
                .collect::<Vec<_>>()
                .await;
        }
        naive_times.push(t0.elapsed());
        naive_writes.push(apiserver_writes(&client, "emrrayclusters").await? - w0);
        let rest = interval.saturating_sub(t0.elapsed());
        tokio::time::sleep(rest).await;
    }
    let naive_requests = sim.state.stats().requests;

    // Report.
    let avg = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let churn_avg = avg(&churn_writes);
    let naive_avg = avg(&naive_writes);
    let steady_per_interval = steady_writes_m / f64::from(args.steady_intervals);
    let pages_per_ws = args.clusters / 100 + 1;
    println!();
    println!("| {:<58} | {:>22} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(60), "-".repeat(24));
    row(
        "initial sync: time until every mirror is correct",
        format!("{:.1}s", initial_time.as_secs_f64()),
    );
    row(
        "initial sync: remote requests (floor: pages by the API's rules)",
        format!(
            "{initial_requests} (floor {})",
            args.workspaces * pages_per_ws
        ),
    );
    row(
        "initial sync: API writes to emrrayclusters (create + status)",
        format!(
            "{initial_writes_m} ({:.2}/mirror)",
            initial_writes_m / total as f64
        ),
    );
    row(
        "initial sync: API writes to emrworkspaces (status)",
        format!("{initial_writes_w}"),
    );
    row(
        "initial sync: operator CPU seconds",
        format!("{initial_cpu:.1}"),
    );
    row(
        "operator peak RSS after initial sync",
        format!("{:.1} MiB", initial_rss as f64 / 1024.0),
    );
    row(
        &format!(
            "steady ({} intervals): API writes to mirrors",
            args.steady_intervals
        ),
        format!("{steady_writes_m}"),
    );
    row(
        &format!(
            "steady ({} intervals): API writes to workspaces",
            args.steady_intervals
        ),
        format!("{steady_writes_w}"),
    );
    row(
        &format!(
            "steady ({} intervals): remote requests",
            args.steady_intervals
        ),
        format!(
            "{steady_requests} (floor {})",
            args.workspaces * pages_per_ws * args.steady_intervals as usize
        ),
    );
    row(
        &format!(
            "steady ({} intervals): operator CPU seconds",
            args.steady_intervals
        ),
        format!("{steady_cpu:.1}"),
    );
    row(
        &format!(
            "churn: clusters changed per interval ({:.0}%)",
            args.churn_fraction * 100.0
        ),
        format!("{per_interval}"),
    );
    row(
        "churn: API writes to mirrors per interval",
        format!("{churn_avg:.0} (target {per_interval})"),
    );
    row(
        "churn: remote change -> mirror update, p50 / p95 / max",
        format!("{} / {} / {}", pct(0.5), pct(0.95), pct(1.0)),
    );
    row(
        "churn: changes not mirrored within interval+5s",
        format!("{missed}"),
    );
    row(
        "operator peak RSS (whole run)",
        format!("{:.1} MiB", final_rss as f64 / 1024.0),
    );
    row(
        "operator CPU seconds (whole run)",
        format!("{final_cpu:.1}"),
    );
    row(
        "naive re-apply loop: API writes to mirrors per interval",
        format!("{naive_avg:.0}"),
    );
    row(
        "naive re-apply loop: time per pass",
        format!(
            "{:.1}s",
            naive_times.iter().map(|d| d.as_secs_f64()).sum::<f64>()
                / naive_times.len().max(1) as f64
        ),
    );
    row(
        "naive re-apply loop: remote requests per interval",
        format!(
            "{}",
            naive_requests / u64::from(args.naive_intervals.max(1))
        ),
    );
    row(
        "ratio naive / operator writes per interval, steady",
        if steady_per_interval == 0.0 {
            format!("inf ({naive_avg:.0} vs 0)")
        } else {
            format!("{:.0}x", naive_avg / steady_per_interval)
        },
    );
    row(
        "ratio naive / operator writes per interval, 1% churn",
        format!("{:.0}x", naive_avg / churn_avg.max(1.0)),
    );

    watch_task.abort();
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::background())
        .await?;
    sim.shutdown().await;
    if missed > 0 {
        bail!("{missed} churn changes were not mirrored in time");
    }
    Ok(())
}
