//! The command line: `run` (the operator), `list` (check credentials), `sync` and `crdgen`.
//! (The demo, the operator with the EMR simulator, is `emr-demo` in the `emr-sim` crate.)

pub mod list;
pub mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{self, Interval};
use crate::emr::endpoint::EndpointPattern;
use crate::operator::http::SecureMetrics;
use crate::operator::leader::LeaseConfig;
use crate::operator::metrics_auth::ReviewLimits;
use crate::operator::shard::ShardSelector;
use crate::operator::tls::CertSource;
use crate::operator::{self, OperatorConfig};

#[derive(Parser, Debug)]
#[command(
    name = "emr-ray-operator",
    version,
    about = "Mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only Kubernetes resources"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `emr_ray_operator=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (the container's command).
    Run(Box<RunArgs>),
    /// List the Ray clusters of a workspace, to check credentials before installing.
    List(list::ListArgs),
    /// Ask the operator to sync a workspace now (sets `reconcile.emr.aliyun.io/requestedAt`).
    Sync(sync::SyncArgs),
    /// Print the CRDs as YAML, or write them into a directory.
    Crdgen {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespaces to watch (comma-separated); empty watches all namespaces.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,
    /// The shard this replica set serves: a label selector on the namespaces' label
    /// `sharding.emr.aliyun.io/key` (e.g. `sharding.emr.aliyun.io/key=a`, or
    /// `!sharding.emr.aliyun.io/key` for the default shard); the workspaces of the namespaces
    /// it selects are served. Empty serves every namespace.
    #[arg(long, env = "SHARD_SELECTOR", default_value = "", value_parser = check_shard_selector)]
    shard_selector: String,
    /// Workspaces reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Remote API requests per second, shared by all workspaces.
    #[arg(long, env = "EMR_REQUESTS_PER_SECOND", default_value_t = 10.0)]
    requests_per_second: f64,
    /// Remote API requests per second one credential identity (AccessKey ID) may send, all
    /// namespaces using it together (each at most its --namespace-share of it): set it under
    /// the remote's quota for one AccessKey, so that tenants sharing cluster credentials cannot
    /// get them throttled for each other. Unset: --requests-per-second.
    #[arg(long, env = "EMR_REQUESTS_PER_SECOND_PER_IDENTITY")]
    requests_per_second_per_identity: Option<f64>,
    /// Remote API request burst.
    #[arg(long, env = "EMR_REQUEST_BURST", default_value_t = 20)]
    burst: u32,
    /// Timeout of one remote HTTP request, in seconds.
    #[arg(long, env = "EMR_REQUEST_TIMEOUT_SECONDS", default_value_t = 10)]
    request_timeout_seconds: u64,
    /// Sync interval of workspaces that do not set `spec.syncInterval` (minimum 10s).
    #[arg(long, env = "DEFAULT_SYNC_INTERVAL", default_value = "60s", value_parser = parse_sync_interval)]
    default_sync_interval: Interval,
    /// Kubernetes write requests per second, across all workspaces.
    #[arg(long, env = "KUBE_WRITES_PER_SECOND", default_value_t = 1000)]
    kube_writes_per_second: u32,
    /// Kubernetes write request burst.
    #[arg(long, env = "KUBE_WRITE_BURST", default_value_t = 1000)]
    kube_write_burst: u32,
    /// Kubernetes write requests in flight at once, across all workspaces (each holds a
    /// connection and its buffers: this bounds the memory a large initial sync takes).
    #[arg(long, env = "KUBE_WRITES_IN_FLIGHT", default_value_t = 128,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    kube_writes_in_flight: u16,
    /// Longest per-workspace backoff after the API server refused mirror writes.
    #[arg(long, env = "WRITE_BACKOFF_MAX", default_value = "5m", value_parser = parse_interval)]
    write_backoff_max: Interval,
    /// Endpoints credentials may be sent to besides the official
    /// `https://emr-serverless-spark[-vpc].<region>.aliyuncs.com` (comma-separated patterns
    /// `scheme://host[:port]`, `*` for any one host label (not under `aliyuncs.com` and Alibaba
    /// Cloud's other shared domains) or any port, `{region}` for one region-shaped label; `http`
    /// only where named).
    #[arg(long, env = "ALLOWED_ENDPOINTS", value_delimiter = ',')]
    allowed_endpoints: Vec<String>,
    /// Most Ray clusters mirrored per workspace; a workspace with more stalls (TooManyClusters)
    /// and keeps its mirrors as they are.
    #[arg(long, env = "MAX_CLUSTERS_PER_WORKSPACE", default_value_t = 10_000)]
    max_clusters_per_workspace: usize,
    /// Most Ray jobs mirrored per workspace with spec.jobs.enabled; a workspace with more in
    /// its retention window reports TooManyJobs in status.jobs and keeps its job mirrors.
    #[arg(long, env = "MAX_JOBS_PER_WORKSPACE", default_value_t = 5_000)]
    max_jobs_per_workspace: usize,
    /// Largest remote response body per page, in bytes.
    #[arg(long, env = "MAX_RESPONSE_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_response_bytes: usize,
    /// Largest sum of the response bodies of one workspace's listing, in bytes (more: the
    /// listing fails with TooManyClusters and its mirrors are kept).
    #[arg(long, env = "MAX_LISTING_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_listing_bytes: usize,
    /// Largest sum of the remote data all listings hold at once, in bytes (a namespace's
    /// listings: its --namespace-share of it); a listing that would hold more fails as
    /// Throttled and is retried after a backoff.
    #[arg(long, env = "MAX_LISTING_BYTES_IN_FLIGHT", default_value_t = 128 * 1024 * 1024)]
    max_listing_bytes_in_flight: usize,
    /// Share (0–1] of the remote request budget and of the reconcile slots that one namespace's
    /// workspaces may use.
    #[arg(long, env = "NAMESPACE_SHARE", default_value_t = 0.5)]
    namespace_share: f64,
    /// Timeout of a whole workspace listing (all pages and retries), in seconds.
    #[arg(long, env = "EMR_LISTING_TIMEOUT_SECONDS", default_value_t = 120)]
    listing_timeout_seconds: u64,
    /// A workspace status whose only news is its sync times is written at most this often
    /// (`lastSyncAttemptTime` and `lastSuccessfulSyncTime` may lag by up to this much; the
    /// metrics are exact).
    #[arg(long, env = "STATUS_HEARTBEAT", default_value = "5m", value_parser = parse_interval)]
    status_heartbeat: Interval,
    /// A Ray cluster `Starting` or `Stopping` for longer than this (as this process has listed
    /// it) is stuck: its instances are fetched with `GetRayCluster` once per change and shown
    /// in its mirror's `status.instances`, as an `Error` cluster's are at once.
    #[arg(long, env = "STUCK_CLUSTER_AFTER", default_value = "10m", value_parser = parse_interval)]
    stuck_cluster_after: Interval,
    /// Serve /metrics over HTTPS, and only to callers whose bearer token a TokenReview accepts
    /// and whom a SubjectAccessReview allows `get` on the non-resource URL /metrics (the
    /// operator then needs `create` on tokenreviews and subjectaccessreviews). `false`: plain
    /// HTTP, open to whoever reaches it.
    #[arg(long, alias = "metrics-auth", env = "METRICS_SECURE", default_value_t = true,
          action = clap::ArgAction::Set)]
    metrics_secure: bool,
    /// With --metrics-secure: a directory with `tls.crt` and `tls.key` (a mounted
    /// kubernetes.io/tls Secret, e.g. cert-manager's), re-read every minute. Without it, a
    /// self-signed certificate is generated at start.
    #[arg(long, env = "METRICS_CERT_DIR")]
    metrics_cert_dir: Option<PathBuf>,
    /// With --metrics-secure: reviews per second of tokens not in the cache; callers with
    /// unknown tokens beyond it (and the burst) get 429 without a review.
    #[arg(long, env = "METRICS_REVIEWS_PER_SECOND", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    metrics_reviews_per_second: u32,
    /// With --metrics-secure: reviews that may run back to back after a quiet spell.
    #[arg(long, env = "METRICS_REVIEW_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    metrics_review_burst: u32,
    /// Address of /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of /healthz and /readyz: plain HTTP, no token (the kubelet's probes).
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Lease-based leader election (disable only when running a single replica).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE_NAME",
        default_value = "emr-ray-operator-leader"
    )]
    lease_name: String,
    #[arg(long, env = "LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    #[arg(long, env = "LEADER_ELECTION_RENEW_SECONDS", default_value_t = 5)]
    renew_seconds: u64,
    /// This replica's identity (default: POD_NAME, else hostname and a random suffix).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn check_shard_selector(s: &str) -> Result<String, String> {
    ShardSelector::parse(s).map(|_| s.to_string())
}

fn parse_sync_interval(s: &str) -> Result<Interval, String> {
    Interval::parse_at_least(s, Interval::MIN_SYNC).map_err(|e| e.to_string())
}

pub(crate) fn parse_interval(s: &str) -> Result<Interval, String> {
    Interval::parse_at_least(s, Interval::from_secs(1)).map_err(|e| e.to_string())
}

/// Logs to stderr as `format`, filtered by `level` (EnvFilter syntax).
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: `make demo > file` and a pod's log stay plain.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Cancels the token on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
            _ = term.recv() => info!("SIGTERM received, shutting down"),
        }
        t.cancel();
    });
    token
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "emr-ray-operator".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE").ok().or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
    })
}

/// The `emr-ray-operator` binary.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run(a) => run(*a).await,
        Command::List(a) => list::run(a).await,
        Command::Sync(a) => sync::run(a).await,
        Command::Crdgen { out_dir } => {
            for (name, yaml) in api::crd_yamls() {
                match &out_dir {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)?;
                        std::fs::write(dir.join(name), &yaml)?;
                    }
                    None => print!("---\n{yaml}"),
                }
            }
            Ok(())
        }
    }
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let identity = a.identity.clone().unwrap_or_else(default_identity);
    let leader_election = a.leader_election.then(|| LeaseConfig {
        namespace: a
            .leader_election_namespace
            .clone()
            .or_else(pod_namespace)
            .unwrap_or_else(|| "default".into()),
        name: a.lease_name.clone(),
        identity: identity.clone(),
        lease_duration: Duration::from_secs(a.lease_seconds.max(2)),
        renew_every: Duration::from_secs(a.renew_seconds.clamp(1, a.lease_seconds.max(2) - 1)),
    });
    let secure_metrics = match (a.metrics_secure, a.metrics_cert_dir) {
        (true, dir) => Some(SecureMetrics {
            cert: dir.map_or(CertSource::SelfSigned, CertSource::Dir),
            reviews: ReviewLimits {
                per_second: a.metrics_reviews_per_second,
                burst: a.metrics_review_burst,
            },
        }),
        (false, None) => None,
        (false, Some(_)) => anyhow::bail!("--metrics-cert-dir needs --metrics-secure=true"),
    };
    let cfg = OperatorConfig {
        namespaces: a.namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
        concurrency: a.concurrency.max(1),
        metrics_addr: Some(a.metrics_addr),
        health_addr: Some(a.health_addr),
        secure_metrics,
        leader_election,
        identity,
        requests_per_second: a.requests_per_second,
        requests_per_second_per_identity: a.requests_per_second_per_identity,
        burst: a.burst.max(1),
        request_timeout: Duration::from_secs(a.request_timeout_seconds.max(1)),
        listing_timeout: Duration::from_secs(a.listing_timeout_seconds.max(1)),
        default_sync_interval: a.default_sync_interval,
        kube_writes_per_second: a.kube_writes_per_second.max(1),
        kube_write_burst: a.kube_write_burst.max(1),
        kube_writes_in_flight: usize::from(a.kube_writes_in_flight),
        write_backoff_cap: a.write_backoff_max.as_duration(),
        allowed_endpoints: a
            .allowed_endpoints
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<EndpointPattern>())
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        max_clusters_per_workspace: a.max_clusters_per_workspace.max(1),
        max_jobs_per_workspace: a.max_jobs_per_workspace.max(1),
        max_response_bytes: a.max_response_bytes.max(64 * 1024),
        max_listing_bytes: a.max_listing_bytes.max(a.max_response_bytes.max(64 * 1024)),
        max_listing_bytes_in_flight: a
            .max_listing_bytes_in_flight
            .max(a.max_response_bytes.max(64 * 1024)),
        status_heartbeat: a.status_heartbeat.as_duration(),
        stuck_cluster_after: a.stuck_cluster_after.as_duration(),
        namespace_share: if a.namespace_share.is_finite() {
            a.namespace_share.clamp(0.01, 1.0)
        } else {
            0.5
        },
        shard_selector: ShardSelector::parse(&a.shard_selector).map_err(anyhow::Error::msg)?,
    };
    info!(
        ?cfg,
        "starting emr-ray-operator {}",
        env!("CARGO_PKG_VERSION")
    );
    operator::run(client, cfg, Default::default(), shutdown_on_signals()).await
}
