//! Listing benchmark: starts the simulator in-process with N clusters (default 10,000) in one
//! workspace, lists them with the client, and prints requests, wall time and the peak heap
//! allocated by the listing, plus the process's VmHWM.
//!
//! `cargo run --release -p emr-bench --bin bench-list [-- --clusters 10000 --iterations 3]`
//!
//! Heap accounting: a counting global allocator counts only allocations made on threads that
//! are marked as "client" (the main thread, which runs the client on a current-thread tokio
//! runtime, HTTP connection tasks included). The simulator runs on its own runtime and threads,
//! so its allocations are not counted; VmHWM is process-wide and includes the simulator.

use clap::Parser;
use emr_ray_operator::emr::{ClientConfig, Credentials, EmrClient, EmrError, Listing};
use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, SimConfig, Simulator};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

struct CountingAlloc;

static CURRENT: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static TOTAL: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

fn add(n: i64) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
    if n > 0 {
        TOTAL.fetch_add(n, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            add(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && counted() {
            add(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            CURRENT.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[derive(Parser, Debug)]
#[command(
    name = "bench-list",
    about = "Benchmark one ListRayCluster listing against the simulator"
)]
struct Args {
    /// Clusters in the workspace.
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    /// Listings to run (the first one includes connection setup).
    #[arg(long, default_value_t = 3)]
    iterations: u32,
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// Client rate limit; high by default so the benchmark measures the client, not the limit.
    #[arg(long, default_value_t = 1000.0)]
    requests_per_second: f64,
    /// Use the ROA HMAC-SHA1 signature instead of ACS3.
    #[arg(long)]
    roa: bool,
    /// Pages of a hostile endpoint (each just under the 8 MiB body cap) listed with the
    /// operator's defaults, once alone and then by `--hostile-listings` listings at once (0: skip).
    #[arg(long, default_value_t = 100)]
    hostile_pages: u32,
    /// Listings of the hostile endpoint at once, each for its own namespace (the operator's
    /// default `--concurrency`).
    #[arg(long, default_value_t = 8)]
    hostile_listings: u32,
}

fn vm_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

fn mib(b: i64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

fn build_client(args: &Args) -> anyhow::Result<EmrClient> {
    Ok(EmrClient::new(ClientConfig {
        page_size: args.page_size,
        requests_per_second: args.requests_per_second,
        burst: args.requests_per_second.max(1.0) as u32,
        signature: if args.roa {
            emr_ray_operator::emr::SignatureVersion::RoaHmacSha1
        } else {
            emr_ray_operator::emr::SignatureVersion::Acs3HmacSha256
        },
        listing_timeout: Duration::from_secs(600),
        ..ClientConfig::default()
    })?)
}

/// Heap use of one listing, in bytes, relative to the heap before it.
struct HeapUse {
    /// Peak while listing.
    peak: i64,
    /// Still allocated once the listing returned (the result included).
    retained: i64,
    /// Still allocated once the clusters were dropped.
    after_drop: i64,
    /// Allocated in all while listing.
    total: i64,
}

/// Runs `f` with this thread's allocations counted; returns its result, the wall time and the
/// heap use. `release` lets go of what the caller will not keep, before the after-drop figure.
fn measured<T>(f: impl FnOnce() -> T, release: impl FnOnce(&mut T)) -> (T, Duration, HeapUse) {
    COUNTED.with(|c| c.set(true));
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let total0 = TOTAL.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut out = f();
    let wall = t.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let retained = CURRENT.load(Ordering::Relaxed) - base;
    let total = TOTAL.load(Ordering::Relaxed) - total0;
    release(&mut out);
    let after_drop = CURRENT.load(Ordering::Relaxed) - base;
    COUNTED.with(|c| c.set(false));
    let heap = HeapUse {
        peak,
        retained,
        after_drop,
        total,
    };
    (out, wall, heap)
}

/// Runs `list` [`measured`]; returns the listing (its clusters dropped), the
/// number of clusters, the wall time and the heap use.
fn counted_listing(
    list: impl FnOnce() -> Result<Listing, EmrError>,
) -> anyhow::Result<(Listing, usize, Duration, HeapUse)> {
    let mut n = 0;
    let (listing, wall, heap) = measured(list, |l: &mut Result<Listing, EmrError>| {
        if let Ok(l) = l {
            n = l.clusters.len();
            drop(std::mem::take(&mut l.clusters));
        }
    });
    Ok((listing?, n, wall, heap))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ws = "w-bench0000001";

    // Simulator on its own runtime and threads (not counted).
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("emr-sim")
        .enable_all()
        .build()?;
    let sim = sim_rt.block_on(Simulator::start(SimConfig::with_default_fixture()))?;
    let t = Instant::now();
    sim.state.generate(ws, args.clusters, "bench");
    println!(
        "simulator: {} clusters generated in workspace {ws} in {:?}, listening on {}",
        args.clusters,
        t.elapsed(),
        sim.base_url()
    );

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = build_client(&args)?;
    let creds = Credentials::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET);
    let url = sim.base_url();
    println!(
        "client: pageSize={} rate limit={}/s signature={}",
        args.page_size,
        args.requests_per_second,
        if args.roa {
            "ROA HMAC-SHA1"
        } else {
            "ACS3-HMAC-SHA256"
        }
    );

    for i in 1..=args.iterations {
        sim.state.reset_stats();
        let (listing, n, wall, heap) =
            counted_listing(|| client_rt.block_on(client.list_ray_clusters(&url, ws, &creds)))?;
        let stats = sim.state.stats();
        println!(
            "listing {i}: clusters={n} pages={} requests={} (simulator saw {}) wall={:.1} ms \
             peak_heap={} ({} B) retained_with_result={} after_drop={} allocated_total={}",
            listing.pages,
            listing.requests,
            stats.requests,
            wall.as_secs_f64() * 1000.0,
            mib(heap.peak),
            heap.peak,
            mib(heap.retained),
            mib(heap.after_drop),
            mib(heap.total),
        );
        if n != args.clusters {
            anyhow::bail!("listed {n} clusters, expected {}", args.clusters);
        }
    }
    println!(
        "process: VmHWM={} VmRSS={} (process-wide, simulator included)",
        vm_status("VmHWM:"),
        vm_status("VmRSS:")
    );
    sim_rt.block_on(sim.shutdown());
    if args.hostile_pages > 0 {
        hostile(&args, &sim_rt, &client_rt, &creds)?;
    }
    Ok(())
}

/// A body of `bytes` bytes (just under) for page `page`: 100 clusters with unique IDs and
/// long descriptions.
fn hostile_page(page: u32, bytes: usize) -> String {
    let per = bytes / 100 - 128;
    let text = "x".repeat(per);
    let clusters: Vec<String> = (0..100)
        .map(|i| {
            format!(r#"{{"clusterId":"ray-h{page}-{i}","state":"Running","description":"{text}"}}"#)
        })
        .collect();
    format!(
        r#"{{"requestId":"R","rayClusters":[{}]}}"#,
        clusters.join(",")
    )
}

/// Item 7 of issue 18: an allowed endpoint answering `--hostile-pages` pages of ~8 MiB. With
/// the operator's defaults (8 MiB a page, 64 MiB a listing, 128 MiB all listings at once, a
/// namespace half of it) a listing stops after 8 pages, and `--hostile-listings` of them at once
/// hold at most 128 MiB between them: the peak heap of the client says what that costs.
fn hostile(
    args: &Args,
    server_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    creds: &Credentials,
) -> anyhow::Result<()> {
    const PAGE: usize = 8 * 1024 * 1024 - 64 * 1024;
    let pages = args.hostile_pages;
    let served = std::sync::Arc::new(AtomicI64::new(0));
    let counter = served.clone();
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url: url::Url = format!("http://{}", listener.local_addr()?).parse()?;
    let app = axum::Router::new().fallback(
        move |q: axum::extract::Query<std::collections::BTreeMap<String, String>>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let page: u32 = q.get("pageNum").and_then(|p| p.parse().ok()).unwrap_or(1);
                let body = if page <= pages {
                    hostile_page(page, PAGE)
                } else {
                    r#"{"requestId":"R","rayClusters":[]}"#.to_string()
                };
                ([("content-type", "application/json")], body)
            }
        },
    );
    server_rt.spawn(async move { axum::serve(listener, app).await });
    let client = EmrClient::new(ClientConfig {
        requests_per_second: args.requests_per_second,
        burst: args.requests_per_second.max(1.0) as u32,
        listing_timeout: Duration::from_secs(600),
        budget_share: 0.5,
        ..ClientConfig::default()
    })?;
    println!(
        "hostile endpoint: {pages} pages of {} each; client: 8 MiB a page, 64 MiB a listing, \
         128 MiB all listings at once (a namespace: half)",
        mib(PAGE as i64)
    );
    let ws = "w-hostile";
    // Runs `f` measured and prints its figures beside what it says of its outcome.
    let report = |what: &str, f: &dyn Fn() -> String| {
        let (outcome, wall, heap) = measured(f, |_| {});
        println!(
            "hostile, {what}: {} requests wall={:.1} ms peak_heap={} after={} -> {outcome}",
            served.swap(0, Ordering::Relaxed),
            wall.as_secs_f64() * 1000.0,
            mib(heap.peak),
            mib(heap.after_drop),
        );
    };
    report("1 listing", &|| {
        client_rt
            .block_on(client.list_ray_clusters_within(Some("ns-0"), &url, ws, creds))
            .map(|l| format!("listed {} clusters", l.clusters.len()))
            .unwrap_or_else(|e| format!("{:?}: {}", e.kind, e.message))
    });
    let n = args.hostile_listings;
    report(&format!("{n} listings at once"), &|| {
        let all = client_rt.block_on(futures::future::join_all((0..n).map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .list_ray_clusters_within(Some(&format!("ns-{i}")), &url, ws, creds)
                    .await
            }
        })));
        let mut kinds = std::collections::BTreeMap::<String, u32>::new();
        for r in all {
            let k = match r {
                Ok(_) => "listed".to_string(),
                Err(e) if e.message.contains("--max-listing-bytes-in-flight") => {
                    "refused: too much in flight".to_string()
                }
                Err(e) => format!("{:?}", e.kind),
            };
            *kinds.entry(k).or_default() += 1;
        }
        format!("{kinds:?}")
    });
    println!(
        "process: VmHWM={} VmRSS={} (process-wide, the hostile server's bodies included)",
        vm_status("VmHWM:"),
        vm_status("VmRSS:")
    );
    Ok(())
}
