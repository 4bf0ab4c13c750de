//! The jobs run (`--jobs-per-workspace`, 0 skips it): `--jobs-workspaces` workspaces of
//! `--clusters` clusters and `--jobs-per-workspace` Ray jobs in the retention window each. The
//! operator first mirrors the clusters with jobs off; then `spec.jobs` is enabled on every
//! workspace and the run measures: the time until every job is mirrored, the remote requests
//! (per action) and the writes to job mirrors per interval in the steady state, the writes of
//! one interval where 1% of the jobs change, the `GetRayCluster` calls of one interval where one
//! cluster per workspace goes into `Error` and of the interval after it, and the memory per job
//! mirror (the operator's RSS and peak RSS with jobs on, minus the same with jobs off, over the
//! job count). Writes are counted by the API server, with the operator's own count beside them.

use std::time::{Duration, Instant};

use anyhow::bail;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use emr_ray_operator::api::{EmrRayCluster, EmrRayJob};
use emr_ray_operator::emr::{
    ACTION_GET_RAY_CLUSTER, ACTION_LIST_RAY_CLUSTER, ACTION_LIST_RAY_JOB,
    ACTION_LIST_WORKSPACE_QUEUES, ClusterState,
};

use super::measure::Writes;
use super::phases::{SYNC_LIMIT, spawn_operator, stop_operator};
use super::{Args, Proc, delete_namespace, free_port, setup, writes};

/// One interval: the remote requests per action, and the writes to each kind.
pub(super) struct Interval {
    pub(super) list_jobs: u64,
    pub(super) list_clusters: u64,
    pub(super) list_queues: u64,
    pub(super) get_cluster: u64,
    pub(super) job_writes: Writes,
    pub(super) cluster_writes: Writes,
    pub(super) workspace_writes: Writes,
}

/// The writes to job mirrors, cluster mirrors and workspaces so far.
async fn all_writes(client: &kube::Client, op: &Proc) -> anyhow::Result<[Writes; 3]> {
    Ok([
        writes(client, op, "emrrayjobs").await?,
        writes(client, op, "emrrayclusters").await?,
        writes(client, op, "emrworkspaces").await?,
    ])
}

/// Measures one interval of `sleep` from now; `change` (to the remote side) is made after the
/// counts it starts from were taken, so every write it causes is counted.
async fn interval_of(
    client: &kube::Client,
    op: &Proc,
    sim: &emr_sim::SimHandle,
    sleep: Duration,
    change: impl FnOnce(),
) -> anyhow::Result<Interval> {
    sim.state.reset_stats();
    let [j0, c0, w0] = all_writes(client, op).await?;
    change();
    tokio::time::sleep(sleep).await;
    let [j, c, w] = all_writes(client, op).await?;
    let by = sim.state.stats().by_action;
    let n = |action: &str| by.get(action).copied().unwrap_or(0);
    Ok(Interval {
        list_jobs: n(ACTION_LIST_RAY_JOB),
        list_clusters: n(ACTION_LIST_RAY_CLUSTER),
        list_queues: n(ACTION_LIST_WORKSPACE_QUEUES),
        get_cluster: n(ACTION_GET_RAY_CLUSTER),
        job_writes: j - j0,
        cluster_writes: c - c0,
        workspace_writes: w - w0,
    })
}

/// What the jobs run measured.
pub(super) struct JobsRun {
    pub(super) workspaces: usize,
    pub(super) jobs: usize,
    pub(super) initial: Duration,
    /// The steady intervals.
    pub(super) steady: Vec<Interval>,
    /// Jobs changed in the churn interval, and the job mirror writes it took.
    pub(super) churned: usize,
    pub(super) churn_writes: f64,
    /// The interval where one cluster per workspace went into `Error`, and the one after it.
    pub(super) errored: Interval,
    pub(super) after_error: Interval,
    /// Operator RSS and peak RSS (KiB) with jobs off, then on.
    pub(super) rss_off: (u64, u64),
    pub(super) rss_on: (u64, u64),
}

async fn count<K>(api: &Api<K>) -> anyhow::Result<usize>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.list_metadata(&ListParams::default()).await?.items.len())
}

async fn wait_count<K>(api: &Api<K>, want: usize, what: &str) -> anyhow::Result<Duration>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let start = Instant::now();
    loop {
        let n = count(api).await?;
        if n == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > SYNC_LIMIT {
            bail!("{what}: {n} of {want} after {}s", SYNC_LIMIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) async fn jobs_run(args: &Args, client: &kube::Client) -> anyhow::Result<JobsRun> {
    let interval = Duration::from_secs(args.interval);
    let n_ws = args.jobs_workspaces;
    let per_ws = args.jobs_per_workspace;
    let setup = setup(args, client, "jobs run", n_ws, 0).await?;
    for id in &setup.ws_ids {
        // Within the last 12 h: all inside the 24 h window.
        setup.sim.state.generate_jobs(
            id,
            per_ws,
            &format!("job-{id}"),
            Duration::from_secs(12 * 3600),
        );
    }
    let jobs_total = n_ws * per_ws;
    println!(
        "bench: jobs run: {n_ws} workspaces x {per_ws} jobs = {jobs_total} jobs in the window"
    );
    let port = free_port()?;
    let mut child = spawn_operator(
        args,
        &setup.namespaces,
        &format!("127.0.0.1:{port}"),
        "127.0.0.1:0",
        None,
    )?;
    let op = Proc {
        pid: Proc::of(&child).pid,
        metrics: Some(port),
    };
    let clusters: Api<EmrRayCluster> = Api::namespaced(client.clone(), &setup.ns);
    let jobs: Api<EmrRayJob> = Api::namespaced(client.clone(), &setup.ns);
    wait_count(&clusters, setup.total, "cluster mirrors").await?;
    tokio::time::sleep(interval).await;
    let rss_off = (op.status_kb("VmRSS:"), op.status_kb("VmHWM:"));

    // Jobs on.
    for i in 0..n_ws {
        setup
            .workspaces
            .patch(
                &format!("ws-{i:04}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"jobs": {"enabled": true, "retention": "24h"}}})),
            )
            .await?;
    }
    let initial = wait_count(&jobs, jobs_total, "job mirrors").await?;
    tokio::time::sleep(interval).await;

    // Steady state: nothing changes.
    let mut steady = Vec::new();
    for _ in 0..args.steady_intervals.max(1) {
        steady.push(interval_of(client, &op, &setup.sim, interval, || {}).await?);
    }
    let rss_on = (op.status_kb("VmRSS:"), op.status_kb("VmHWM:"));

    // Churn: 1% of the jobs change status.
    let mut churned = 0;
    let churn = interval_of(
        client,
        &op,
        &setup.sim,
        interval + Duration::from_secs(5),
        || {
            for id in &setup.ws_ids {
                let mut all = setup.sim.state.jobs(id);
                for j in all.iter_mut().take(per_ws.div_ceil(100)) {
                    j.job.status = Some(
                        if j.job.status.as_deref() == Some("Failed") {
                            "Succeeded"
                        } else {
                            "Failed"
                        }
                        .into(),
                    );
                    churned += 1;
                }
                setup.sim.state.set_jobs(id, all);
            }
        },
    )
    .await?;
    let churn_writes = churn.job_writes.api;

    // One cluster per workspace goes into Error: one GetRayCluster each to say why, then none
    // while nothing changes.
    let errored = interval_of(
        client,
        &op,
        &setup.sim,
        interval + Duration::from_secs(5),
        || {
            for id in &setup.ws_ids {
                if let Some(c) = setup.sim.state.clusters(id).first() {
                    setup
                        .sim
                        .state
                        .set_state(id, &c.cluster_id, ClusterState::Error);
                }
            }
        },
    )
    .await?;
    let after_error = interval_of(client, &op, &setup.sim, interval, || {}).await?;

    stop_operator(&mut child).await;
    delete_namespace(client, &setup.ns).await?;
    setup.sim.shutdown().await;
    Ok(JobsRun {
        workspaces: n_ws,
        jobs: jobs_total,
        initial,
        steady,
        churned,
        churn_writes,
        errored,
        after_error,
        rss_off,
        rss_on,
    })
}

/// Prints the jobs run's figures.
pub(super) fn report_jobs(r: &JobsRun, interval: u64) {
    println!(
        "\n## Jobs ({} workspaces x {} jobs in the window = {} job mirrors, syncInterval {interval}s)",
        r.workspaces,
        r.jobs / r.workspaces.max(1),
        r.jobs
    );
    println!(
        "initial job sync (jobs enabled -> every job mirrored): {:.1}s",
        r.initial.as_secs_f64()
    );
    let per_ws = |n: u64| n as f64 / r.workspaces.max(1) as f64;
    let line = |what: &str, i: &Interval| {
        println!(
            "{what}: remote requests ListRayJob {} ({:.1}/workspace), ListRayCluster {} ({:.1}/workspace), ListWorkspaceQueues {}, GetRayCluster {}; API writes to emrrayjobs {:.0} (operator {:.0}), emrrayclusters {:.0} ({:.0}), emrworkspaces {:.0} ({:.0})",
            i.list_jobs,
            per_ws(i.list_jobs),
            i.list_clusters,
            per_ws(i.list_clusters),
            i.list_queues,
            i.get_cluster,
            i.job_writes.api,
            i.job_writes.own,
            i.cluster_writes.api,
            i.cluster_writes.own,
            i.workspace_writes.api,
            i.workspace_writes.own,
        );
    };
    for (n, i) in r.steady.iter().enumerate() {
        line(&format!("steady interval {}", n + 1), i);
    }
    println!(
        "churn interval: {} jobs changed, {:.0} API writes to emrrayjobs (status only: one per change)",
        r.churned, r.churn_writes
    );
    line(
        &format!(
            "one cluster per workspace into Error ({} clusters; goal: GetRayCluster {} = one per changed unhealthy cluster)",
            r.workspaces, r.workspaces
        ),
        &r.errored,
    );
    line(
        "the interval after (goal: GetRayCluster 0, no write)",
        &r.after_error,
    );
    let per = |on: u64, off: u64| (on.saturating_sub(off) as f64 * 1024.0) / r.jobs.max(1) as f64;
    println!(
        "operator RSS jobs off {} KiB, on {} KiB: {:.0} bytes per job mirror; peak RSS off {} KiB, on {} KiB: {:.0} bytes per job mirror",
        r.rss_off.0,
        r.rss_on.0,
        per(r.rss_on.0, r.rss_off.0),
        r.rss_off.1,
        r.rss_on.1,
        per(r.rss_on.1, r.rss_off.1)
    );
}
