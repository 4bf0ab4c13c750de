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
//! Around that main run, each in a namespace of its own (deleted, and gone, before the next):
//! * idle RSS: the operator on an empty namespace, ready and 5 s later (`--idle-rss`);
//! * scale points: the initial sync at smaller sizes (`--scales`), for the least-squares slope
//!   of peak RSS per mirror and its projection to 100,000 mirrors;
//! * raw writer: the same mirrors and statuses server-side-applied with the operator's write
//!   parallelism and nothing else, the floor of the initial sync (`--raw-writer`);
//! * shards: the same initial sync split over `--shards` operator processes;
//! * jobs (`--jobs-per-workspace`, 0 skips it): `spec.jobs` on `--jobs-workspaces` workspaces
//!   with that many jobs in the window each: remote requests and job mirror writes per
//!   interval, memory per job mirror (see `bench/jobs.rs`). `--only-jobs` runs nothing else.
//!
//! `--only-idle` measures the idle RSS alone (3 runs of it take under a minute).
//!
//! Every figure with a goal is printed beside it, and whether it was met.
//!
//! Needs KUBECONFIG pointing at a control plane (`tests/control-plane/kcp.sh up`).

mod jobs;
mod measure;
mod phases;
mod raw;
mod report;
mod scale;
mod shards;

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
use serde_json::json;

use emr_ray_operator::api::{self as crd, EmrRayCluster, EmrWorkspace};
use emr_ray_operator::emr::RayCluster;
use measure::{Proc, Writes, apiserver_writes, free_port, writes};
use phases::{churn, initial_sync, naive_baseline, steady_state, stop_operator};
use report::{MainRun, Results, report};

use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, SimConfig, SimHandle, Simulator};

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
    /// Scale points measured before the main run, in mirrors (comma-separated; each rounded to
    /// whole workspaces of `--clusters`); empty skips them.
    #[arg(long, default_value = "1000,5000")]
    scales: String,
    /// Operator processes of the sharded initial sync (0 or 1 skips it; at most 26).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Measure the raw writer (the initial sync's writes alone, without the operator).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    raw_writer: bool,
    /// Measure the operator's RSS on an empty namespace.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idle_rss: bool,
    /// Ray jobs in the retention window per workspace of the jobs run (0 skips it).
    #[arg(long, default_value_t = 1000)]
    jobs_per_workspace: usize,
    /// Workspaces of the jobs run (each with `--clusters` clusters).
    #[arg(long, default_value_t = 10)]
    jobs_workspaces: usize,
    /// Run only the jobs run.
    #[arg(long, default_value_t = false)]
    only_jobs: bool,
    /// Run only the idle RSS measurement.
    #[arg(long, default_value_t = false)]
    only_idle: bool,
}

impl Args {
    /// The `--scales` points, in mirrors.
    fn scale_points(&self) -> anyhow::Result<Vec<usize>> {
        self.scales
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("--scales: {s:?} is not a positive number"))
            })
            .collect()
    }
}

fn expected_state(c: &RayCluster) -> Option<String> {
    c.state.as_ref().map(|s| s.as_str().to_string())
}

/// Mirrors whose state equals the simulator's, and the number of mirrors.
fn correct_mirrors(
    watch: &MirrorWatch,
    expected: &HashMap<String, Option<String>>,
) -> (usize, usize) {
    let all = watch.mirrors();
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

/// The state the simulator has for each cluster of the setup's workspaces.
fn expected_states(setup: &Setup) -> HashMap<String, Option<String>> {
    let mut expected = HashMap::new();
    for id in &setup.ws_ids {
        for c in setup.sim.state.clusters(id) {
            expected.insert(c.cluster_id.clone(), expected_state(&c));
        }
    }
    expected
}

/// Waits until every expected mirror is correct and there are no others; the time it took.
async fn wait_all_correct(
    watch: &MirrorWatch,
    expected: &HashMap<String, Option<String>>,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let total = expected.len();
    let start = Instant::now();
    loop {
        let (ok, n) = correct_mirrors(watch, expected);
        if ok == total && n == total {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "initial sync incomplete after {}s: {ok}/{total} correct, {n} mirrors",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh namespace `emr-bench-<random>`, assigned to shard `shard` if given.
async fn create_namespace(client: &kube::Client, shard: Option<&str>) -> anyhow::Result<String> {
    let ns = format!(
        "emr-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let labels = match shard {
        Some(key) => json!({ (crd::LABEL_SHARD): key }),
        None => json!({}),
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(json!({"apiVersion":"v1","kind":"Namespace",
                "metadata":{"name": ns, "labels": labels}})),
        )
        .await?;
    Ok(ns)
}

/// Deletes `ns` and waits (up to 600 s) until it is gone, so that its deletion does not
/// overlap the next measurement.
async fn delete_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(ns, &DeleteParams::background()).await?;
    let start = Instant::now();
    while api.get_opt(ns).await?.is_some() {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("namespace {ns} still there 600s after its deletion");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Says that a phase group is done, and how long the bench has run.
fn progress(what: &str, start: Instant) {
    println!(
        "bench: {what} done, {:.0}s since the start",
        start.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.interval < 10 {
        bail!("--interval must be at least 10 (the CRD's minimum)");
    }
    if args.steady_intervals == 0 {
        bail!("--steady-intervals must be at least 1 (the main run's scale point is its first)");
    }
    if args.shards > 26 {
        bail!("--shards: at most 26 (shard keys a to z)");
    }
    let scales = args.scale_points()?;
    let client = kube::Client::try_default()
        .await
        .context("KUBECONFIG must point at a control plane (tests/control-plane/kcp.sh up)")?;
    crd::install_crds(&client).await?;

    let start = Instant::now();
    if args.only_idle {
        report::report_idle(&scale::idle_rss(&args, &client).await?);
        return Ok(());
    }
    let jobs_run = match args.jobs_per_workspace {
        0 => None,
        _ => Some(jobs::jobs_run(&args, &client).await?),
    };
    progress("jobs run", start);
    if args.only_jobs {
        if let Some(r) = &jobs_run {
            jobs::report_jobs(r, args.interval);
        }
        return Ok(());
    }
    let idle = match args.idle_rss {
        true => Some(scale::idle_rss(&args, &client).await?),
        false => None,
    };
    progress("idle RSS", start);
    let mut points = Vec::new();
    for n in scales {
        points.push(scale::scale_point(&args, &client, n).await?);
    }
    progress("scale points", start);
    let main_run = main_run(&args, &client).await?;
    points.push(scale::Point::of_main(&args, &main_run));
    progress("main run", start);
    let raw = match args.raw_writer {
        true => Some(raw::raw_writer(&args, &client).await?),
        false => None,
    };
    progress("raw writer", start);
    let shards = match args.shards {
        0 | 1 => None,
        n => Some(shards::sharded_sync(&args, &client, n).await?),
    };
    progress("shards", start);
    let missed = main_run.churn.missed;
    report(&Results {
        args: &args,
        idle,
        points,
        main: main_run,
        raw,
        shards,
    });
    if let Some(r) = &jobs_run {
        jobs::report_jobs(r, args.interval);
    }
    if missed > 0 {
        bail!("{missed} churn changes were not mirrored in time");
    }
    Ok(())
}

/// The W × C run: initial sync, steady state, churn, then (operator stopped) the naive
/// baseline; its namespace is gone when this returns.
async fn main_run(args: &Args, client: &kube::Client) -> anyhow::Result<MainRun> {
    let interval = Duration::from_secs(args.interval);
    let setup = setup(args, client, "main run", args.workspaces, 0).await?;
    let mut watch = watch_mirrors(client, &setup.namespaces).await?;
    let mut expected = expected_states(&setup);

    let (initial, mut child, op) = initial_sync(args, client, &setup, &watch, &expected).await?;
    watch.drain();
    let mut steady = steady_state(args, client, &setup, &op, interval).await?;
    steady.changes_seen = watch.drain();
    let churn = churn(
        args,
        client,
        &setup,
        &op,
        &mut watch,
        &mut expected,
        interval,
    )
    .await?;
    stop_operator(&mut child).await;
    let naive = match args.naive_intervals {
        0 => None,
        _ => Some(naive_baseline(args, client, &setup, &watch.api, interval).await?),
    };
    watch.stop();
    delete_namespace(client, &setup.ns).await?;
    setup.sim.shutdown().await;
    Ok(MainRun {
        total: setup.total,
        initial,
        steady,
        churn,
        naive,
    })
}

/// The namespace(s), the simulator with W × C clusters, the credentials Secret and the W
/// EmrWorkspaces pointing at the simulator.
struct Setup {
    /// The namespace (the first one when sharded).
    ns: String,
    /// Every namespace of the setup: `ns` alone, or one per shard.
    namespaces: Vec<String>,
    sim: SimHandle,
    ws_ids: Vec<String>,
    /// W × C.
    total: usize,
    workspaces: Api<EmrWorkspace>,
}

/// `n_workspaces` × `--clusters` in a fresh namespace for `phase` (named in the progress
/// line); with `shards` > 1, in one fresh namespace per shard, labelled with the shard key
/// [`shard_key`]`(k)` (a workspace's shard is its namespace's), workspace i in namespace
/// `i % shards`.
async fn setup(
    args: &Args,
    client: &kube::Client,
    phase: &str,
    n_workspaces: usize,
    shards: usize,
) -> anyhow::Result<Setup> {
    let mut namespaces = Vec::new();
    for k in 0..shards.max(1) {
        let shard = (shards > 1).then(|| shard_key(k));
        namespaces.push(create_namespace(client, shard.as_deref()).await?);
    }
    let ns = namespaces[0].clone();
    let pp = PatchParams::apply("bench").force();

    // Simulator with W × C clusters.
    let mut cfg = SimConfig::with_default_fixture();
    cfg.workspaces.clear();
    let sim = Simulator::start(cfg).await?;
    let ws_ids: Vec<String> = (0..n_workspaces)
        .map(|i| format!("w-bench{i:04}"))
        .collect();
    for id in &ws_ids {
        sim.state.generate(id, args.clusters, &format!("ray-{id}"));
        // The product's two default queues: each sync lists them (one ListWorkspaceQueues page).
        sim.state.set_queues(id, bench_queues());
    }
    let total = n_workspaces * args.clusters;
    let endpoint = sim.base_url().as_str().trim_end_matches('/').to_string();
    println!(
        "bench: {phase}: {n_workspaces} workspaces x {} clusters = {total} clusters, syncInterval {}s, \
         namespace(s) {}{}",
        args.clusters,
        args.interval,
        namespaces.join(", "),
        match shards {
            0 | 1 => String::new(),
            n => format!(", {n} shards"),
        }
    );

    for ns in &namespaces {
        Api::<Secret>::namespaced(client.clone(), ns)
            .patch("emr", &pp, &Patch::Apply(json!({
                "apiVersion":"v1","kind":"Secret","metadata":{"name":"emr"},
                "stringData":{"accessKeyId": DEFAULT_ACCESS_KEY_ID, "accessKeySecret": DEFAULT_ACCESS_KEY_SECRET}})))
            .await?;
    }
    let workspaces: Api<EmrWorkspace> = Api::namespaced(client.clone(), &ns);
    for (i, id) in ws_ids.iter().enumerate() {
        Api::<EmrWorkspace>::namespaced(client.clone(), &namespaces[i % namespaces.len()])
            .patch(&format!("ws-{i:04}"), &pp, &Patch::Apply(json!({
                "apiVersion":"emr.aliyun.io/v1alpha1","kind":"EmrWorkspace",
                "metadata":{"name": format!("ws-{i:04}")},
                "spec":{"regionId":"cn-hangzhou","workspaceId": id,"endpoint": endpoint,
                        "credentials":{"secretRef":{"name":"emr"}},"syncInterval": format!("{}s", args.interval)}})))
            .await?;
    }
    Ok(Setup {
        ns,
        namespaces,
        sim,
        ws_ids,
        total,
        workspaces,
    })
}

/// The shard key of shard `i`: `a`, `b`, … (`i` < 26).
fn shard_key(i: usize) -> String {
    char::from(b'a' + (i % 26) as u8).to_string()
}

/// A reflector over the mirrors of each namespace, and every applied mirror as (cluster ID,
/// state, seen at).
struct MirrorWatch {
    /// The mirrors of the first namespace.
    api: Api<EmrRayCluster>,
    stores: Vec<Store<EmrRayCluster>>,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Option<String>, Instant)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MirrorWatch {
    /// Forgets the mirror updates seen so far; how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Every mirror of every namespace watched.
    fn mirrors(&self) -> Vec<std::sync::Arc<EmrRayCluster>> {
        self.stores.iter().flat_map(Store::state).collect()
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Watches the mirrors of `namespaces` (at least one) until every watch has listed them.
async fn watch_mirrors(
    client: &kube::Client,
    namespaces: &[String],
) -> anyhow::Result<MirrorWatch> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<String>, Instant)>();
    let (mut stores, mut tasks) = (Vec::new(), Vec::new());
    for ns in namespaces {
        let mirrors_api: Api<EmrRayCluster> = Api::namespaced(client.clone(), ns);
        let (store, writer) = reflector::store();
        let tx = tx.clone();
        let watch = reflector(writer, watcher(mirrors_api, watcher::Config::default()))
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
        tasks.push(tokio::spawn(watch));
        store.wait_until_ready().await?;
        stores.push(store);
    }
    let first = namespaces.first().context("no namespace to watch")?;
    Ok(MirrorWatch {
        api: Api::namespaced(client.clone(), first),
        stores,
        rx,
        tasks,
    })
}

/// `root_queue` and `dev_queue`, as a new workspace has them.
fn bench_queues() -> Vec<emr_ray_operator::emr::WorkspaceQueue> {
    ["root_queue", "dev_queue"]
        .into_iter()
        .map(|name| {
            let r = |cpu: f64| emr_ray_operator::emr::QueueResources {
                cpu: Some(cpu),
                memory_gi: Some(cpu * 4.0),
                gpu: Some(0.0),
            };
            emr_ray_operator::emr::WorkspaceQueue {
                queue_name: Some(name.into()),
                queue_status: Some("RUNNING".into()),
                queue_type: Some("instance".into()),
                max_resource: Some(r(1000.0).to_wire()),
                used_resource: Some(r(10.0).to_wire()),
                ..Default::default()
            }
        })
        .collect()
}
