//! The result table: one row per figure, in phase order.

use super::Args;
use super::phases::{Churn, Initial, Naive, Steady};

fn row(name: &str, value: String) {
    println!("| {name:<58} | {value:>22} |");
}

fn avg(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The table of every figure, in phase order.
pub(super) fn report(
    args: &Args,
    total: usize,
    initial: &Initial,
    steady: &Steady,
    churn: &Churn,
    naive: &Naive,
) {
    let pages_per_ws = args.clusters / 100 + 1;
    println!();
    println!("| {:<58} | {:>22} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(60), "-".repeat(24));
    report_initial(args, total, pages_per_ws, initial);
    report_steady(args, pages_per_ws, steady);
    report_churn(args, churn);
    report_naive(args, naive, steady, churn);
}

fn report_initial(args: &Args, total: usize, pages_per_ws: usize, initial: &Initial) {
    let Initial {
        time,
        requests,
        writes_m,
        writes_w,
        cpu,
        rss,
    } = initial;
    row(
        "initial sync: time until every mirror is correct",
        format!("{:.1}s", time.as_secs_f64()),
    );
    row(
        "initial sync: remote requests (floor: pages by the API's rules)",
        format!("{requests} (floor {})", args.workspaces * pages_per_ws),
    );
    row(
        "initial sync: API writes to emrrayclusters (create + status)",
        format!("{writes_m} ({:.2}/mirror)", writes_m / total as f64),
    );
    row(
        "initial sync: API writes to emrworkspaces (status)",
        format!("{writes_w}"),
    );
    row("initial sync: operator CPU seconds", format!("{cpu:.1}"));
    row(
        "operator peak RSS after initial sync",
        format!("{:.1} MiB", *rss as f64 / 1024.0),
    );
}

fn report_steady(args: &Args, pages_per_ws: usize, steady: &Steady) {
    let n = args.steady_intervals;
    row(
        &format!("steady ({n} intervals): API writes to mirrors"),
        format!("{}", steady.writes_m),
    );
    row(
        &format!("steady ({n} intervals): API writes to workspaces"),
        format!("{}", steady.writes_w),
    );
    row(
        &format!("steady ({n} intervals): remote requests"),
        format!(
            "{} (floor {})",
            steady.requests,
            args.workspaces * pages_per_ws * n as usize
        ),
    );
    row(
        &format!("steady ({n} intervals): operator CPU seconds"),
        format!("{:.1}", steady.cpu),
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
    row(
        "churn: API writes to mirrors per interval",
        format!("{:.0} (target {per_interval})", avg(&churn.writes)),
    );
    row(
        "churn: remote change -> mirror update, p50 / p95 / max",
        format!("{} / {} / {}", pct(0.5), pct(0.95), pct(1.0)),
    );
    row(
        "churn: changes not mirrored within interval+5s",
        format!("{}", churn.missed),
    );
    row(
        "operator peak RSS (whole run)",
        format!("{:.1} MiB", churn.final_rss as f64 / 1024.0),
    );
    row(
        "operator CPU seconds (whole run)",
        format!("{:.1}", churn.final_cpu),
    );
}

fn report_naive(args: &Args, naive: &Naive, steady: &Steady, churn: &Churn) {
    let naive_avg = avg(&naive.writes);
    let churn_avg = avg(&churn.writes);
    let steady_per_interval = steady.writes_m / f64::from(args.steady_intervals);
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
