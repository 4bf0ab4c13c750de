//! The result tables: the scale points with their fitted line, then one row per figure, in
//! phase order, with its goal beside it and whether it was met.

use super::phases::{Churn, Initial, Naive, Steady};
use super::raw::Raw;
use super::scale::{Idle, Point, fit};
use super::shards::Sharded;
use super::{Args, Writes};

/// The operator's default `--status-heartbeat` (the bench does not set it), in seconds.
const HEARTBEAT_SECONDS: u64 = 300;
/// The size the peak RSS goal is stated for.
const GOAL_MIRRORS: usize = 10_000;
const GOAL_PEAK_MIB: f64 = 30.0;
const GOAL_IDLE_MIB: f64 = 12.0;
/// The slope of peak RSS over the scale points (what a mirror costs).
const GOAL_SLOPE_KIB: f64 = 1.0;
/// The projection's size and its goal.
const PROJECT_MIRRORS: f64 = 100_000.0;
const GOAL_PROJECTED_MIB: f64 = 128.0;
const GOAL_STEADY_CPU_PER_INTERVAL: f64 = 0.15;
const GOAL_RAW_RATIO: f64 = 1.2;

/// The W × C run's figures.
pub(super) struct MainRun {
    /// W × C.
    pub(super) total: usize,
    pub(super) initial: Initial,
    pub(super) steady: Steady,
    pub(super) churn: Churn,
    /// `None` with `--naive-intervals 0`.
    pub(super) naive: Option<Naive>,
}

/// Everything measured; the optional phases are `None` when skipped.
pub(super) struct Results<'a> {
    pub(super) args: &'a Args,
    pub(super) idle: Option<Idle>,
    /// The `--scales` points, then the main run's.
    pub(super) points: Vec<Point>,
    pub(super) main: MainRun,
    pub(super) raw: Option<Raw>,
    pub(super) shards: Option<Sharded>,
}

/// A figure without a goal.
fn row(name: &str, value: String) {
    print_row(name, &value, "", "");
}

/// A figure and its goal: `met` is `None` where the goal does not apply to this run.
fn goal_row(name: &str, value: String, goal: &str, met: Option<bool>) {
    let met = match met {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    };
    print_row(name, &value, goal, met);
}

fn print_row(name: &str, value: &str, goal: &str, met: &str) {
    println!("| {name:<64} | {value:>30} | {goal:<34} | {met:<3} |");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The API server's count, and the operator's own beside it.
/// Marked `*` where they differ (see [`report_others`]).
fn both(w: Writes) -> String {
    let mark = if w.api == w.own { "" } else { "*" };
    format!("{}{mark} (own {})", w.api, w.own)
}

/// The count a goal is judged on: the smaller of the two. The API server's counts every
/// client's writes, cluster-wide; the operator's own cannot include another client's, and a
/// write it counts that never reached the API server is not one.
fn judged(w: Writes) -> f64 {
    w.api.min(w.own)
}

/// The API server's counts of `v`.
fn api(v: &[Writes]) -> Vec<f64> {
    v.iter().map(|w| w.api).collect()
}

fn avg(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// ListWorkspaceQueues pages per workspace sync (counted in every remote-request figure).
const QUEUE_PAGES_PER_WS: usize = 1;

/// The tables of every figure, in phase order.
pub(super) fn report(r: &Results) {
    let args = r.args;
    // Remote requests of one workspace sync: its pages of clusters (100 a page), then its one
    // page of queues (ListWorkspaceQueues; the bench's workspaces have two queues each).
    let pages_per_ws = args.clusters / 100 + 1 + QUEUE_PAGES_PER_WS;
    report_points(&r.points);
    println!();
    print_row("measure", "value", "goal", "met");
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(66),
        "-".repeat(32),
        "-".repeat(36),
        "-".repeat(5)
    );
    if let Some(idle) = &r.idle {
        report_idle(idle);
    }
    report_initial(args, r.main.total, pages_per_ws, &r.main.initial);
    if let Some(raw) = &r.raw {
        report_raw(raw, &r.main.initial);
    }
    report_steady(args, pages_per_ws, &r.main.steady);
    report_churn(args, &r.main.churn);
    report_memory(r);
    if let Some(sharded) = &r.shards {
        report_shards(sharded, &r.main.initial);
    }
    if let Some(naive) = &r.main.naive {
        report_naive(args, naive, &r.main.steady, &r.main.churn);
    }
    report_others(&r.main);
}

/// A note when the API server counted more writes than the operator sent: its counters are
/// cluster-wide, so another client wrote to the control plane meanwhile, and its figures
/// (marked `*`) are inflated.
fn report_others(main: &MainRun) {
    let all = [
        main.initial.writes_m,
        main.initial.writes_w,
        main.steady.writes_m,
        main.steady.writes_w,
    ];
    let extra: f64 = all
        .iter()
        .chain(&main.churn.writes)
        .map(|w| (w.api - w.own).max(0.0))
        .sum();
    if extra > 0.0 {
        println!();
        println!(
            "* the API server counted {extra} writes to emrrayclusters/emrworkspaces more than \
             the operator sent (its counters are cluster-wide): another client wrote to the \
             control plane during the main run. The write goals are judged on the smaller \
             count, the operator's own, and so are the ratios to the naive loop (whose writes \
             are the API server's count)."
        );
    }
}

/// The scale points and the least-squares line of peak RSS through them (nothing with fewer
/// than two points).
fn report_points(points: &[Point]) {
    if points.len() < 2 {
        return;
    }
    println!();
    println!("Scale points (RSS one interval after the initial sync; the last is the main run):");
    println!();
    println!("| mirrors | workspaces | initial sync | CPU s | peak RSS (VmHWM) | RSS (VmRSS) |");
    println!("|--------:|-----------:|-------------:|------:|-----------------:|------------:|");
    for p in points {
        println!(
            "| {:>7} | {:>10} | {:>11.1}s | {:>5.1} | {:>12.1} MiB | {:>7.1} MiB |",
            p.mirrors,
            p.workspaces,
            p.time.as_secs_f64(),
            p.cpu,
            mib(p.hwm),
            mib(p.rss)
        );
    }
    println!();
    match fit(points) {
        Some(f) => {
            let projected = f.at(PROJECT_MIRRORS) / 1024.0;
            println!(
                "Peak RSS slope: {:.2} KiB per mirror ({:.2} MiB per 1,000 mirrors; goal ≤ \
                 {GOAL_SLOPE_KIB} KiB), intercept {:.1} MiB; projection at 100,000 mirrors: \
                 {projected:.1} MiB, within the goal of {GOAL_PROJECTED_MIB} MiB: {}",
                f.slope,
                f.slope * 1000.0 / 1024.0,
                f.intercept / 1024.0,
                if projected <= GOAL_PROJECTED_MIB {
                    "yes"
                } else {
                    "no"
                }
            );
        }
        None => println!("Peak RSS slope: — (the points have a single size)"),
    }
}

pub(super) fn report_idle(idle: &Idle) {
    goal_row(
        "idle operator RSS (empty namespace, ready + 5 s)",
        format!("{:.1} MiB (peak {:.1})", mib(idle.rss), mib(idle.hwm)),
        &format!("≤ {GOAL_IDLE_MIB} MiB"),
        Some(mib(idle.rss) <= GOAL_IDLE_MIB),
    );
    row(
        "idle operator RSS: anonymous / file-backed (binary, libraries)",
        format!("{:.1} / {:.1} MiB", mib(idle.anon), mib(idle.file)),
    );
    row(
        "idle operator: start -> /readyz OK",
        format!("{:.2}s", idle.ready_after.as_secs_f64()),
    );
}

/// The peak RSS goal, which is stated for [`GOAL_MIRRORS`] only.
fn peak_goal(total: usize, kib: u64) -> Option<bool> {
    (total == GOAL_MIRRORS).then(|| mib(kib) <= GOAL_PEAK_MIB)
}

fn report_initial(args: &Args, total: usize, pages_per_ws: usize, initial: &Initial) {
    let Initial {
        time,
        requests,
        requests_until_written,
        writes_m,
        writes_w,
        cpu,
        rss,
    } = initial;
    let floor = (args.workspaces * pages_per_ws) as u64;
    row(
        "initial sync: time until every mirror is correct",
        format!("{:.1}s", time.as_secs_f64()),
    );
    goal_row(
        "initial sync: remote requests until each workspace was written",
        format!("{requests_until_written} (floor {floor})"),
        "at the floor (W × (cluster pages + 1 queue page))",
        Some(*requests_until_written <= floor),
    );
    row(
        "initial sync: remote requests until the last was written",
        format!("{requests} (written workspaces are listed again each interval)"),
    );
    row(
        "initial sync: API writes to emrrayclusters (create + status)",
        format!(
            "{}; {:.2}/mirror",
            both(*writes_m),
            writes_m.api / total as f64
        ),
    );
    row(
        "initial sync: API writes to emrworkspaces (status)",
        both(*writes_w),
    );
    row("initial sync: operator CPU seconds", format!("{cpu:.1}"));
    goal_row(
        "operator peak RSS after initial sync",
        format!("{:.1} MiB", mib(*rss)),
        &format!("≤ {GOAL_PEAK_MIB} MiB at 10,000 mirrors"),
        peak_goal(total, *rss),
    );
}

fn report_raw(raw: &Raw, initial: &Initial) {
    row(
        "raw writer: same mirrors + statuses, operator's parallelism",
        format!(
            "{:.1}s ({} writes, {} refused)",
            raw.time.as_secs_f64(),
            raw.writes,
            raw.failed
        ),
    );
    let ratio = initial.time.as_secs_f64() / raw.time.as_secs_f64().max(1e-3);
    goal_row(
        "initial sync time / raw writer time",
        format!("{ratio:.2}x"),
        &format!("≤ {GOAL_RAW_RATIO}x"),
        Some(ratio <= GOAL_RAW_RATIO),
    );
}

fn report_steady(args: &Args, pages_per_ws: usize, steady: &Steady) {
    let n = args.steady_intervals;
    // At most one heartbeat per workspace per heartbeat period begun during the phase.
    let periods = (u64::from(n) * args.interval)
        .div_ceil(HEARTBEAT_SECONDS)
        .max(1);
    let allowed_w = args.workspaces as f64 * periods as f64;
    goal_row(
        &format!("steady ({n} intervals): API writes to mirrors"),
        both(steady.writes_m),
        "0",
        Some(judged(steady.writes_m) == 0.0),
    );
    row(
        &format!("steady ({n} intervals): mirror changes seen in the namespace"),
        format!("{}", steady.changes_seen),
    );
    goal_row(
        &format!("steady ({n} intervals): API writes to workspaces"),
        both(steady.writes_w),
        &format!("≤ {allowed_w} (1 heartbeat/ws per 5 min)"),
        Some(judged(steady.writes_w) <= allowed_w),
    );
    row(
        &format!("steady ({n} intervals): remote requests"),
        format!(
            "{} (floor {})",
            steady.requests,
            args.workspaces * pages_per_ws * n as usize
        ),
    );
    let per_interval = steady.cpu / f64::from(n.max(1));
    goal_row(
        &format!("steady ({n} intervals): operator CPU seconds"),
        format!("{:.1} ({per_interval:.2}/interval)", steady.cpu),
        &format!("≤ {GOAL_STEADY_CPU_PER_INTERVAL} core-s per interval"),
        Some(per_interval <= GOAL_STEADY_CPU_PER_INTERVAL),
    );
}

fn report_churn(args: &Args, churn: &Churn) {
    let per_interval = churn.per_interval;
    let latencies = &churn.latencies;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    row(
        &format!(
            "churn: clusters changed per interval ({:.0}%)",
            args.churn_fraction * 100.0
        ),
        format!("{per_interval}"),
    );
    let all: f64 = churn.writes.iter().map(|w| judged(*w)).sum();
    let own = avg(&churn.writes.iter().map(|w| w.own).collect::<Vec<_>>());
    let api_avg = avg(&api(&churn.writes));
    let mark = if api_avg == own { "" } else { "*" };
    goal_row(
        "churn: API writes to mirrors per interval",
        format!("{api_avg:.0}{mark} (own {own:.0}; target {per_interval})"),
        "= clusters changed",
        // One write per change; a change made just before an interval's count may land in the
        // next one, so the intervals are judged together.
        Some(all <= (per_interval * churn.writes.len()) as f64 * 1.02),
    );
    row(
        "churn: remote change -> mirror update, p50 / p95 / max",
        format!("{} / {} / {}", pct(0.5), pct(0.95), pct(1.0)),
    );
    goal_row(
        "churn: changes not mirrored within interval+5s",
        format!("{}", churn.missed),
        "0",
        Some(churn.missed == 0),
    );
}

/// The main run's peak RSS and CPU, and the projection of the scale points' line.
fn report_memory(r: &Results) {
    let churn = &r.main.churn;
    goal_row(
        "operator peak RSS (whole run)",
        format!("{:.1} MiB", mib(churn.final_rss)),
        &format!("≤ {GOAL_PEAK_MIB} MiB at 10,000 mirrors"),
        peak_goal(r.main.total, churn.final_rss),
    );
    row(
        "operator CPU seconds (whole run)",
        format!("{:.1}", churn.final_cpu),
    );
    let Some(f) = fit(&r.points) else {
        return;
    };
    goal_row(
        "peak RSS slope over the scale points (least squares)",
        format!(
            "{:.2} KiB/mirror, intercept {:.1} MiB",
            f.slope,
            f.intercept / 1024.0
        ),
        &format!("≤ {GOAL_SLOPE_KIB} KiB per mirror"),
        Some(f.slope <= GOAL_SLOPE_KIB),
    );
    let projected = f.at(PROJECT_MIRRORS) / 1024.0;
    goal_row(
        "peak RSS projected at 100,000 mirrors",
        format!("{projected:.1} MiB"),
        &format!("≤ {GOAL_PROJECTED_MIB} MiB"),
        Some(projected <= GOAL_PROJECTED_MIB),
    );
}

fn report_shards(sharded: &Sharded, initial: &Initial) {
    let n = sharded.procs.len();
    row(
        &format!("{n} shards: time until every mirror is correct"),
        format!(
            "{:.1}s (1 replica: {:.1}s)",
            sharded.time.as_secs_f64(),
            initial.time.as_secs_f64()
        ),
    );
    row(
        &format!("{n} shards: remote requests"),
        format!("{} (1 replica: {})", sharded.requests, initial.requests),
    );
    for p in &sharded.procs {
        row(
            &format!("shard {}: operator peak RSS / CPU seconds", p.key),
            format!(
                "{:.1} MiB / {:.1} (1 replica: {:.1} MiB / {:.1})",
                mib(p.hwm),
                p.cpu,
                mib(initial.rss),
                initial.cpu
            ),
        );
    }
}

fn report_naive(args: &Args, naive: &Naive, steady: &Steady, churn: &Churn) {
    let naive_avg = avg(&naive.writes);
    // The operator's side judged as its goals are (see `judged`).
    let churn_avg = avg(&churn.writes.iter().map(|w| judged(*w)).collect::<Vec<_>>());
    let steady_per_interval = judged(steady.writes_m) / f64::from(args.steady_intervals.max(1));
    row(
        "naive re-apply loop: API writes to mirrors per interval",
        format!("{naive_avg:.0}"),
    );
    row(
        "naive re-apply loop: time per pass",
        format!(
            "{:.1}s",
            naive.times.iter().map(|d| d.as_secs_f64()).sum::<f64>()
                / naive.times.len().max(1) as f64
        ),
    );
    row(
        "naive re-apply loop: remote requests per interval",
        format!(
            "{}",
            naive.requests / u64::from(args.naive_intervals.max(1))
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
}
