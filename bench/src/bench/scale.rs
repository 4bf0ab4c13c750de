//! Memory against size: the operator's RSS on an empty namespace, the initial sync at smaller
//! scale points, and the least-squares line of peak RSS per mirror through them.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::phases::{SYNC_LIMIT, spawn_operator, stop_operator};
use super::report::MainRun;
use super::{
    Args, Proc, create_namespace, delete_namespace, expected_states, free_port, setup,
    wait_all_correct, watch_mirrors,
};

/// The operator on an empty namespace, 5 s after it first answered ready.
pub(super) struct Idle {
    /// Current and peak RSS, KiB.
    pub(super) rss: u64,
    pub(super) hwm: u64,
    /// Of `rss`: anonymous (heap, stacks) and file-backed (the binary's and the shared
    /// libraries' mapped pages), KiB.
    pub(super) anon: u64,
    pub(super) file: u64,
    /// From start to the first OK of `/readyz`.
    pub(super) ready_after: Duration,
}

/// Starts the operator on a fresh, empty namespace, waits until `/readyz` answers OK and 5 s
/// more, and reads its RSS.
pub(super) async fn idle_rss(args: &Args, client: &kube::Client) -> anyhow::Result<Idle> {
    let ns = create_namespace(client, None).await?;
    println!("bench: idle RSS: the operator on empty namespace {ns}");
    let port = free_port()?;
    let mut child = spawn_operator(
        args,
        std::slice::from_ref(&ns),
        "127.0.0.1:0",
        &format!("127.0.0.1:{port}"),
        None,
    )?;
    let op = Proc::of(&child);
    let start = Instant::now();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        let ok = http
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            stop_operator(&mut child).await;
            bail!("{url} not OK 60s after the operator started");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_after = start.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = Idle {
        rss: op.status_kb("VmRSS:"),
        hwm: op.status_kb("VmHWM:"),
        anon: op.status_kb("RssAnon:"),
        file: op.status_kb("RssFile:"),
        ready_after,
    };
    stop_operator(&mut child).await;
    delete_namespace(client, &ns).await?;
    Ok(idle)
}

/// One scale point: an initial sync and one more interval.
pub(super) struct Point {
    pub(super) workspaces: usize,
    pub(super) mirrors: usize,
    /// Until every mirror was correct.
    pub(super) time: Duration,
    /// Operator CPU seconds until then.
    pub(super) cpu: f64,
    /// Peak (VmHWM) and current (VmRSS) RSS one interval after the sync, KiB.
    pub(super) hwm: u64,
    pub(super) rss: u64,
}

/// The initial sync of `mirrors` (rounded to whole workspaces of `--clusters`, at least one)
/// in a fresh namespace, deleted (and gone) before this returns.
pub(super) async fn scale_point(
    args: &Args,
    client: &kube::Client,
    mirrors: usize,
) -> anyhow::Result<Point> {
    let clusters = args.clusters.max(1);
    let workspaces = ((mirrors + clusters / 2) / clusters).max(1);
    let setup = setup(args, client, "scale point", workspaces, 0).await?;
    let watch = watch_mirrors(client, &setup.namespaces).await?;
    let expected = expected_states(&setup);
    let mut child = spawn_operator(args, &setup.namespaces, "127.0.0.1:0", "127.0.0.1:0", None)?;
    let op = Proc::of(&child);
    let time = match wait_all_correct(&watch, &expected, SYNC_LIMIT).await {
        Ok(time) => time,
        Err(e) => {
            stop_operator(&mut child).await;
            delete_namespace(client, &setup.ns).await?;
            return Err(e);
        }
    };
    let cpu = op.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(args.interval)).await;
    let point = Point {
        workspaces,
        mirrors: setup.total,
        time,
        cpu,
        hwm: op.status_kb("VmHWM:"),
        rss: op.status_kb("VmRSS:"),
    };
    stop_operator(&mut child).await;
    watch.stop();
    delete_namespace(client, &setup.ns).await?;
    setup.sim.shutdown().await;
    Ok(point)
}

impl Point {
    /// The main run's point: its initial sync, and its RSS one steady interval later.
    pub(super) fn of_main(args: &Args, main: &MainRun) -> Self {
        Point {
            workspaces: args.workspaces,
            mirrors: main.total,
            time: main.initial.time,
            cpu: main.initial.cpu,
            hwm: main.steady.point_hwm,
            rss: main.steady.point_rss,
        }
    }
}

/// The least-squares line of peak RSS (KiB) against mirrors.
pub(super) struct Fit {
    /// KiB per mirror.
    pub(super) slope: f64,
    /// KiB at zero mirrors.
    pub(super) intercept: f64,
}

impl Fit {
    /// Peak RSS in KiB the line projects at `mirrors`.
    pub(super) fn at(&self, mirrors: f64) -> f64 {
        self.intercept + self.slope * mirrors
    }
}

/// The least-squares fit through the points; `None` without two distinct sizes.
pub(super) fn fit(points: &[Point]) -> Option<Fit> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.mirrors as f64).sum::<f64>() / n;
    let my = points.iter().map(|p| p.hwm as f64).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.mirrors as f64 - mx).powi(2)).sum();
    let sxy: f64 = points
        .iter()
        .map(|p| (p.mirrors as f64 - mx) * (p.hwm as f64 - my))
        .sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(Fit {
        slope,
        intercept: my - slope * mx,
    })
}
