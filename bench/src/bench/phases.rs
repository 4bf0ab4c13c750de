//! The four measured phases of the main run: initial sync, steady state, churn and the naive
//! baseline, each a function returning its figures; and starting and stopping the operator.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use rand::seq::SliceRandom;
use serde_json::json;

use emr_ray_operator::api::{EmrRayCluster, EmrWorkspace, LABEL_SHARD};
use emr_ray_operator::controller::mirror;
use emr_ray_operator::emr::{ClientConfig, ClusterState, Credentials, EmrClient, RayCluster};
use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET};

use super::{
    Args, MirrorWatch, Proc, Setup, Writes, apiserver_writes, free_port, wait_all_correct, writes,
};

/// Phase 1: what it took until every mirror was correct.
pub(super) struct Initial {
    pub(super) time: Duration,
    pub(super) requests: u64,
    /// Remote requests of each workspace until its mirrors were all correct, summed.
    pub(super) requests_until_written: u64,
    pub(super) writes_m: Writes,
    pub(super) writes_w: Writes,
    pub(super) cpu: f64,
    pub(super) rss: u64,
}

/// Longest wait for an initial sync.
pub(super) const SYNC_LIMIT: Duration = Duration::from_secs(900);

/// Starts the operator and waits (up to [`SYNC_LIMIT`]) until every mirror is correct.
pub(super) async fn initial_sync(
    args: &Args,
    client: &kube::Client,
    setup: &Setup,
    watch: &MirrorWatch,
    expected: &HashMap<String, Option<String>>,
) -> anyhow::Result<(Initial, tokio::process::Child, Proc)> {
    let port = free_port()?;
    let mut op = Proc {
        pid: 0,
        metrics: Some(port),
    };
    // Nothing of the operator's own yet: its counters start at 0.
    let writes_m0 = Writes {
        api: apiserver_writes(client, "emrrayclusters").await?,
        own: 0.0,
    };
    let writes_w0 = Writes {
        api: apiserver_writes(client, "emrworkspaces").await?,
        own: 0.0,
    };
    setup.sim.state.reset_stats();
    let child = spawn_operator(
        args,
        &setup.namespaces,
        &format!("127.0.0.1:{port}"),
        "127.0.0.1:0",
        None,
    )?;
    op.pid = Proc::of(&child).pid;
    // Each workspace's remote requests when its last mirror became correct: the goal counts
    // listings until a workspace's mirrors are written; later ones follow its sync interval.
    let mut until_written: HashMap<String, u64> = HashMap::new();
    let start = Instant::now();
    loop {
        for ws in workspaces_written(watch, expected, args.clusters) {
            if let std::collections::hash_map::Entry::Vacant(e) = until_written.entry(ws) {
                let n = setup.sim.state.stats().by_workspace.get(e.key()).copied();
                e.insert(n.unwrap_or(0));
            }
        }
        if until_written.len() == setup.ws_ids.len() {
            break;
        }
        if start.elapsed() > SYNC_LIMIT {
            bail!(
                "initial sync incomplete after {}s: {} of {} workspaces written",
                SYNC_LIMIT.as_secs(),
                until_written.len(),
                setup.ws_ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (and no mirror more than expected)
    wait_all_correct(watch, expected, SYNC_LIMIT).await?;
    let time = start.elapsed();
    let requests = setup.sim.state.stats().requests;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let initial = Initial {
        time,
        requests,
        requests_until_written: until_written.values().sum(),
        writes_m: writes(client, &op, "emrrayclusters").await? - writes_m0,
        writes_w: writes(client, &op, "emrworkspaces").await? - writes_w0,
        cpu: op.cpu_seconds(),
        rss: op.status_kb("VmHWM:"),
    };
    Ok((initial, child, op))
}

/// The workspaces (remote IDs) whose `per_workspace` mirrors are all correct.
fn workspaces_written(
    watch: &MirrorWatch,
    expected: &HashMap<String, Option<String>>,
    per_workspace: usize,
) -> Vec<String> {
    let mut correct: HashMap<String, usize> = HashMap::new();
    for m in watch.mirrors() {
        let ok = expected.get(&m.spec.cluster_id).is_some_and(|want| {
            m.status
                .as_ref()
                .is_some_and(|s| &s.state == want && s.display_name.is_some())
        });
        if ok {
            *correct.entry(m.spec.workspace_id.clone()).or_default() += 1;
        }
    }
    correct
        .into_iter()
        .filter(|(_, n)| *n >= per_workspace)
        .map(|(ws, _)| ws)
        .collect()
}

/// The release operator as a child process, watching `namespaces` only, serving plain
/// `/metrics` on `metrics_addr` and `/readyz` on `health_addr`, and with `shard`, only the
/// workspaces of the namespaces whose shard key is `shard`.
///
/// `BENCH_OPERATOR_WRAPPER` (words split on spaces) runs it under another program, e.g.
/// `heaptrack -o /tmp/ht`: the RSS and CPU figures are then the wrapper's process's, not the
/// operator's (a profile, not a measurement).
pub(super) fn spawn_operator(
    args: &Args,
    namespaces: &[String],
    metrics_addr: &str,
    health_addr: &str,
    shard: Option<&str>,
) -> anyhow::Result<tokio::process::Child> {
    let selector = shard.map(|k| format!("{LABEL_SHARD}={k}"));
    let wrapper = std::env::var("BENCH_OPERATOR_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = tokio::process::Command::new(program);
            c.args(words).arg(&args.operator_bin);
            c
        }
        None => tokio::process::Command::new(&args.operator_bin),
    };
    command
        .args([
            "run",
            "--namespaces",
            &namespaces.join(","),
            "--leader-election=false",
            "--allowed-endpoints",
            "http://127.0.0.1:*",
            "--namespace-share",
            "1",
            "--metrics-addr",
            metrics_addr,
            // The bench reads its own /metrics, not a scraper with a token.
            "--metrics-secure=false",
            "--health-addr",
            health_addr,
            "--concurrency",
            &args.concurrency.to_string(),
            "--requests-per-second",
            &args.requests_per_second.to_string(),
            "--burst",
            &args.requests_per_second.to_string(),
        ])
        .args(
            selector
                .iter()
                .flat_map(|s| ["--shard-selector", s.as_str()]),
        )
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
        })
}

/// Phase 2: `steady_intervals` intervals with no remote change.
pub(super) struct Steady {
    pub(super) writes_m: Writes,
    pub(super) writes_w: Writes,
    pub(super) requests: u64,
    pub(super) cpu: f64,
    /// Operator peak and current RSS (KiB) one interval after the initial sync: the main run's
    /// scale point.
    pub(super) point_hwm: u64,
    pub(super) point_rss: u64,
    /// Mirror changes the watch saw in this namespace (filled in by the caller): the API
    /// server's write counters are cluster-wide, so writes elsewhere would inflate `writes_m`;
    /// a write that changes nothing is counted there and not here.
    pub(super) changes_seen: usize,
}

pub(super) async fn steady_state(
    args: &Args,
    client: &kube::Client,
    setup: &Setup,
    op: &Proc,
    interval: Duration,
) -> anyhow::Result<Steady> {
    let writes_m1 = writes(client, op, "emrrayclusters").await?;
    let writes_w1 = writes(client, op, "emrworkspaces").await?;
    let cpu1 = op.cpu_seconds();
    setup.sim.state.reset_stats();
    tokio::time::sleep(interval).await;
    let (point_hwm, point_rss) = (op.status_kb("VmHWM:"), op.status_kb("VmRSS:"));
    tokio::time::sleep(interval * args.steady_intervals.saturating_sub(1)).await;
    let writes_m = writes(client, op, "emrrayclusters").await? - writes_m1;
    let writes_w = writes(client, op, "emrworkspaces").await? - writes_w1;
    Ok(Steady {
        writes_m,
        writes_w,
        requests: setup.sim.state.stats().requests,
        cpu: op.cpu_seconds() - cpu1,
        point_hwm,
        point_rss,
        changes_seen: 0,
    })
}

/// Phase 3: `churn_fraction` of the clusters change state each interval.
pub(super) struct Churn {
    pub(super) per_interval: usize,
    /// Writes to mirrors, per interval.
    pub(super) writes: Vec<Writes>,
    /// Remote change → mirror update, sorted.
    pub(super) latencies: Vec<Duration>,
    /// Changes not mirrored within interval + 5 s.
    pub(super) missed: usize,
    /// Operator peak RSS (KiB) and CPU seconds for the whole run, after the churn.
    pub(super) final_rss: u64,
    pub(super) final_cpu: f64,
}

pub(super) async fn churn(
    args: &Args,
    client: &kube::Client,
    setup: &Setup,
    op: &Proc,
    watch: &mut MirrorWatch,
    expected: &mut HashMap<String, Option<String>>,
    interval: Duration,
) -> anyhow::Result<Churn> {
    let sim = &setup.sim;
    let all_ids: Vec<(String, String)> = setup
        .ws_ids
        .iter()
        .flat_map(|w| {
            sim.state
                .clusters(w)
                .into_iter()
                .map(move |c| (w.clone(), c.cluster_id))
        })
        .collect();
    let per_interval = ((setup.total as f64) * args.churn_fraction)
        .round()
        .max(1.0) as usize;
    let mut churn = Churn {
        per_interval,
        writes: Vec::new(),
        latencies: Vec::new(),
        missed: 0,
        final_rss: 0,
        final_cpu: 0.0,
    };
    for _ in 0..args.churn_intervals {
        let w0 = writes(client, op, "emrrayclusters").await?;
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
        await_mirrored(watch, &mut pending, &mut churn.latencies, deadline).await;
        churn.missed += pending.len();
        // Let the rest of the interval pass so each interval has exactly one sync per workspace.
        tokio::time::sleep(Duration::from_secs(1)).await;
        churn
            .writes
            .push(writes(client, op, "emrrayclusters").await? - w0);
    }
    churn.latencies.sort();
    churn.final_rss = op.status_kb("VmHWM:");
    churn.final_cpu = op.cpu_seconds();
    Ok(churn)
}

/// Removes from `pending` (cluster ID → (wanted state, changed at)) each change the watch sees
/// mirrored before `deadline`, recording its delay.
async fn await_mirrored(
    watch: &mut MirrorWatch,
    pending: &mut HashMap<String, (String, Instant)>,
    latencies: &mut Vec<Duration>,
    deadline: Instant,
) {
    while !pending.is_empty() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), watch.rx.recv()).await {
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
}

/// Stops the operator (graceful).
pub(super) async fn stop_operator(child: &mut tokio::process::Child) {
    let wrapped = std::env::var("BENCH_OPERATOR_WRAPPER").is_ok_and(|w| !w.trim().is_empty());
    if let Some(pid) = child.id() {
        // Under a wrapper the operator is one of its descendants: it is stopped, and the
        // wrapper (a profiler writing its data) ends after it.
        let pid = match wrapped {
            true => operator_descendant(pid).unwrap_or(pid),
            false => pid,
        };
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let wait = Duration::from_secs(if wrapped { 300 } else { 20 });
    let _ = tokio::time::timeout(wait, child.wait()).await;
}

/// The descendant of `pid` started with the operator's arguments (found by its
/// `--leader-election=false`), if any.
fn operator_descendant(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find_map(|c| {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            let ours = cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == b"--leader-election=false");
            if ours {
                Some(c)
            } else {
                operator_descendant(c)
            }
        })
}

/// Field manager of the naive baseline.
const NAIVE: &str = "naive-kubectl-apply";

/// Phase 4: a naive loop that lists every workspace and re-applies every mirror and its status.
pub(super) struct Naive {
    /// Writes to mirrors, per interval.
    pub(super) writes: Vec<f64>,
    /// Duration of each pass.
    pub(super) times: Vec<Duration>,
    pub(super) requests: u64,
}

pub(super) async fn naive_baseline(
    args: &Args,
    client: &kube::Client,
    setup: &Setup,
    mirrors_api: &Api<EmrRayCluster>,
    interval: Duration,
) -> anyhow::Result<Naive> {
    let emr = EmrClient::new(ClientConfig {
        requests_per_second: args.requests_per_second,
        burst: args.requests_per_second as u32,
        ..ClientConfig::default()
    })?;
    let creds = Credentials::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET);
    let url = setup.sim.base_url();
    let ws_list = setup.workspaces.list(&Default::default()).await?.items;
    let mut naive_writes = Vec::new();
    let mut naive_times = Vec::new();
    setup.sim.state.reset_stats();
    for _ in 0..args.naive_intervals {
        let w0 = apiserver_writes(client, "emrrayclusters").await?;
        let t0 = Instant::now();
        for ws in &ws_list {
            let listing = emr
                .list_ray_clusters(&url, &ws.spec.workspace_id, &creds)
                .await?;
            let concurrency = args.concurrency as usize;
            apply_mirrors(mirrors_api, ws, listing.clusters, concurrency, NAIVE).await;
        }
        naive_times.push(t0.elapsed());
        naive_writes.push(apiserver_writes(client, "emrrayclusters").await? - w0);
        let rest = interval.saturating_sub(t0.elapsed());
        tokio::time::sleep(rest).await;
    }
    Ok(Naive {
        writes: naive_writes,
        times: naive_times,
        requests: setup.sim.state.stats().requests,
    })
}

/// Server-side-applies the mirror and then the status of every cluster of `ws` (with `ws` as
/// controlling owner), `concurrency` clusters at a time, as field manager `manager`; the
/// number of refused writes.
pub(super) async fn apply_mirrors(
    mirrors_api: &Api<EmrRayCluster>,
    ws: &EmrWorkspace,
    clusters: Vec<RayCluster>,
    concurrency: usize,
    manager: &str,
) -> usize {
    let owner = json!({"apiVersion": EmrWorkspace::api_version(&()), "kind": "EmrWorkspace",
        "name": ws.name_any(), "uid": ws.uid(), "controller": true, "blockOwnerDeletion": true});
    let pp = PatchParams::apply(manager).force();
    let now = emr_ray_operator::time::Time::now();
    futures::stream::iter(clusters)
        .map(|c| {
            let (api, owner, pp, now) = (mirrors_api, &owner, &pp, &now);
            async move {
                let name = mirror::mirror_name(&c.cluster_id);
                let obj = json!({"apiVersion":"emr.aliyun.io/v1alpha1","kind":"EmrRayCluster",
                    "metadata":{"name": name, "ownerReferences":[owner]},
                    "spec":{"workspaceRef": ws.name_any(),"workspaceId": ws.spec.workspace_id,
                            "regionId": ws.spec.region_id,"clusterId": c.cluster_id}});
                let spec = api.patch(&name, pp, &Patch::Apply(&obj)).await;
                let mut st = mirror::remote_status(&c);
                st.conditions = mirror::mirror_conditions(&st, &[], Some(1), None, *now);
                let obj = json!({"apiVersion":"emr.aliyun.io/v1alpha1","kind":"EmrRayCluster",
                    "metadata":{"name": name},"status": st});
                let status = api.patch_status(&name, pp, &Patch::Apply(&obj)).await;
                usize::from(spec.is_err()) + usize::from(status.is_err())
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |sum, failed| futures::future::ready(sum + failed))
        .await
}
