//! Wiring: controllers per watched namespace, the HTTP endpoints (`http`), leader election
//! and graceful shutdown.

pub mod http;
pub mod leader;
pub mod metrics_auth;
pub mod shard;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{EmrRayCluster, EmrWorkspace, Interval, LABEL_MANAGED_BY, MANAGED_BY};
use crate::controller::apply::WriteLimiter;
use crate::controller::cache::MirrorStore;
use crate::controller::cache::{MirrorCache, MirrorChanges};
use crate::controller::context::{Caches, Kube, Remote};
use crate::controller::shard::{Change, ShardNamespaces};
use crate::controller::{Context, Settings, error_policy, reconcile};
use crate::emr::endpoint::{EndpointPattern, EndpointPolicy};
use crate::emr::{ClientConfig, CredentialResolver, EmrClient};
use crate::metrics::{CodeLabels, Metrics};
use http::{HttpConfig, SecureMetrics};
use leader::{LeaderElector, LeaseConfig};
use shard::ShardSelector;

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Namespaces to watch; empty means all namespaces.
    pub namespaces: Vec<String>,
    pub concurrency: u16,
    /// Where `/metrics` is served (`None`: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// Where `/healthz` and `/readyz` are served, plain HTTP (`None`: nowhere).
    pub health_addr: Option<SocketAddr>,
    /// `Some`: `/metrics` over HTTPS, only to callers whose bearer token a TokenReview
    /// accepts and whom a SubjectAccessReview allows `get` on `/metrics`. `None`: plain HTTP,
    /// open.
    pub secure_metrics: Option<SecureMetrics>,
    pub leader_election: Option<LeaseConfig>,
    pub identity: String,
    pub requests_per_second: f64,
    /// Remote requests per second of one credential identity (`None`: `requests_per_second`).
    pub requests_per_second_per_identity: Option<f64>,
    pub burst: u32,
    pub request_timeout: Duration,
    pub listing_timeout: Duration,
    /// Sync interval of workspaces that do not set `spec.syncInterval`.
    pub default_sync_interval: Interval,
    /// Kubernetes write requests per second (and burst), across all workspaces.
    pub kube_writes_per_second: u32,
    pub kube_write_burst: u32,
    /// Kubernetes write requests in flight at once, across all workspaces.
    pub kube_writes_in_flight: usize,
    /// Longest per-workspace backoff after the API server refused mirror writes.
    pub write_backoff_cap: Duration,
    /// Endpoints credentials may be sent to, besides the official ones.
    pub allowed_endpoints: Vec<EndpointPattern>,
    /// Most clusters mirrored per workspace (more: `TooManyClusters`, nothing pruned).
    pub max_clusters_per_workspace: usize,
    /// Most Ray jobs mirrored per workspace with `spec.jobs` (more in the retention window:
    /// `TooManyJobs`, nothing pruned).
    pub max_jobs_per_workspace: usize,
    /// Largest remote response body per page, in bytes.
    pub max_response_bytes: usize,
    /// Largest sum of the response bodies of one workspace's listing, in bytes.
    pub max_listing_bytes: usize,
    /// Largest sum of the remote data all listings hold at once, in bytes.
    pub max_listing_bytes_in_flight: usize,
    /// Share (0–1] of the remote request budget and of the reconcile slots one namespace may use.
    pub namespace_share: f64,
    /// A status whose only news is the sync times is written at most this often.
    pub status_heartbeat: Duration,
    /// A cluster `Starting`/`Stopping` for longer than this has its instances fetched.
    pub stuck_cluster_after: Duration,
    /// The workspaces (and their mirrors) this replica set serves; `None`: all of them.
    pub shard_selector: Option<ShardSelector>,
}

impl OperatorConfig {
    /// Defaults for embedding the operator (tests, benchmarks, the demo): every namespace, no
    /// HTTP endpoints, no leader election.
    pub fn embedded(identity: &str) -> Self {
        OperatorConfig {
            namespaces: Vec::new(),
            concurrency: 8,
            metrics_addr: None,
            health_addr: None,
            secure_metrics: None,
            leader_election: None,
            identity: identity.to_string(),
            requests_per_second: 10.0,
            requests_per_second_per_identity: None,
            burst: 20,
            request_timeout: Duration::from_secs(10),
            listing_timeout: Duration::from_secs(120),
            default_sync_interval: Interval::from_secs(60),
            kube_writes_per_second: 1000,
            kube_write_burst: 1000,
            kube_writes_in_flight: 128,
            write_backoff_cap: Duration::from_secs(300),
            allowed_endpoints: Vec::new(),
            max_clusters_per_workspace: 10_000,
            max_jobs_per_workspace: 5_000,
            max_response_bytes: 8 * 1024 * 1024,
            max_listing_bytes: 64 * 1024 * 1024,
            max_listing_bytes_in_flight: 128 * 1024 * 1024,
            namespace_share: 0.5,
            status_heartbeat: Duration::from_secs(300),
            stuck_cluster_after: Duration::from_secs(600),
            shard_selector: None,
        }
    }

    /// Listings one namespace may run at once: its share of the reconcile slots (at least one).
    pub fn listings_per_namespace(&self) -> usize {
        ((f64::from(self.concurrency) * self.namespace_share.clamp(0.0, 1.0)).floor() as usize)
            .max(1)
    }
}

/// Runs the operator until `shutdown` is cancelled.
/// `metrics` is the registry this replica reports into (shared so that embedding programs, such
/// as tests and benchmarks, can read it).
pub async fn run(
    client: kube::Client,
    cfg: OperatorConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let observer_metrics = metrics.clone();
    let emr = EmrClient::new(ClientConfig {
        request_timeout: cfg.request_timeout,
        listing_timeout: cfg.listing_timeout,
        requests_per_second: cfg.requests_per_second,
        burst: cfg.burst,
        max_clusters: cfg.max_clusters_per_workspace,
        max_body_bytes: cfg.max_response_bytes,
        max_listing_bytes: cfg.max_listing_bytes,
        max_listing_bytes_in_flight: cfg.max_listing_bytes_in_flight,
        budget_share: cfg.namespace_share.clamp(0.01, 1.0),
        identity_requests_per_second: cfg.requests_per_second_per_identity,
        observer: Some(Arc::new(move |o: &crate::emr::RequestOutcome| {
            observer_metrics
                .remote_requests
                .get_or_create(&CodeLabels {
                    operation: o.operation.to_string(),
                    code: crate::emr::error::code_label(&o.code).to_string(),
                })
                .inc();
        })),
        ..ClientConfig::default()
    })?;
    let ready = Arc::new(AtomicBool::new(false));
    let leader_flag = Arc::new(AtomicBool::new(false));
    let http = http::serve(
        &HttpConfig {
            metrics_addr: cfg.metrics_addr,
            health_addr: cfg.health_addr,
            secure_metrics: cfg.secure_metrics.clone(),
        },
        client.clone(),
        metrics.clone(),
        ready.clone(),
        leader_flag.clone(),
        shutdown.clone(),
    )
    .await?;
    let shared = Shared {
        client: client.clone(),
        emr,
        credentials: CredentialResolver::default(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "emr-ray-operator".into(),
                instance: Some(cfg.identity.clone()),
            },
        ),
        metrics: metrics.clone(),
        write_limiter: WriteLimiter::new(
            cfg.kube_writes_per_second,
            cfg.kube_write_burst,
            cfg.kube_writes_in_flight,
        ),
        cfg: cfg.clone(),
    };

    match cfg.leader_election.clone() {
        None => {
            leader_flag.store(true, Ordering::Relaxed);
            metrics.is_leader.set(1);
            run_controllers(&shared, ready.clone(), shutdown.clone()).await;
        }
        Some(lease) => lead_and_run(&shared, lease, ready, leader_flag, &shutdown).await,
    }
    if http.serving() {
        // The servers stop with the operator.
        shutdown.cancel();
        http.stopped().await;
    }
    info!("operator stopped");
    Ok(())
}

/// Runs the controllers while this replica holds the lease, until `shutdown`. Losing the lease
/// cancels the controllers' token: in-flight reconciles stop before another replica can take
/// over (see `leader`).
async fn lead_and_run(
    shared: &Shared,
    lease: LeaseConfig,
    ready: Arc<AtomicBool>,
    leader_flag: Arc<AtomicBool>,
    shutdown: &CancellationToken,
) {
    let metrics = &shared.metrics;
    let client = &shared.client;
    let release = CancellationToken::new();
    let elector = LeaderElector::new(client.clone(), lease);
    let (mut rx, elector_task) = elector.run(release.clone());
    // A standby replica is ready: it can take over at any moment.
    ready.store(true, Ordering::Relaxed);
    loop {
        // Wait to lead (or shut down).
        while !*rx.borrow() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
            }
        }
        if shutdown.is_cancelled() || !*rx.borrow() {
            break;
        }
        leader_flag.store(true, Ordering::Relaxed);
        metrics.is_leader.set(1);
        let term = shutdown.child_token();
        let lost = {
            let term = term.clone();
            let mut rx = rx.clone();
            tokio::spawn(async move {
                while *rx.borrow() {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
                term.cancel();
            })
        };
        run_controllers(shared, Arc::new(AtomicBool::new(false)), term.clone()).await;
        lost.abort();
        leader_flag.store(false, Ordering::Relaxed);
        metrics.is_leader.set(0);
        if shutdown.is_cancelled() {
            break;
        }
        warn!("leadership lost; controllers stopped, waiting to lead again");
    }
    // Controllers have stopped writing: give the lease up for a fast takeover.
    release.cancel();
    let _ = elector_task.await;
}

#[derive(Clone)]
struct Shared {
    client: kube::Client,
    emr: EmrClient,
    credentials: CredentialResolver,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    write_limiter: WriteLimiter,
    cfg: OperatorConfig,
}

/// Runs one controller per watched namespace (or one for all) until `token` is cancelled.
async fn run_controllers(shared: &Shared, ready: Arc<AtomicBool>, token: CancellationToken) {
    let scopes: Vec<Option<String>> = if shared.cfg.namespaces.is_empty() {
        vec![None]
    } else {
        shared.cfg.namespaces.iter().cloned().map(Some).collect()
    };
    let n = scopes.len();
    let readiness = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runs = scopes.into_iter().map(|ns| {
        let shared = shared.clone();
        let token = token.clone();
        let ready = ready.clone();
        let readiness = readiness.clone();
        async move {
            run_controller(&shared, ns.as_deref(), token, move || {
                if readiness.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    ready.store(true, Ordering::Relaxed);
                }
            })
            .await
        }
    });
    futures::future::join_all(runs).await;
}

/// How often forgotten workspaces are pruned and orphaned mirrors swept.
const ORPHAN_SWEEP_PERIOD: Duration = Duration::from_secs(10);

/// How long in-flight reconciles get to finish once the controller is told to stop (below the
/// chart's 30 s `terminationGracePeriodSeconds`, so the lease is still released in time).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watch of the operator's mirrors: the store of their compact records (see
/// [`crate::controller::cache`]), the record of which workspaces' mirrors changed, and the
/// stream of touched mirrors for the controller. `shard`: the shard selector, if any.
fn mirror_watch(
    api: Api<EmrRayCluster>,
    shard: Option<String>,
) -> (
    Arc<MirrorStore>,
    Arc<MirrorChanges>,
    impl futures::Stream<Item = Result<EmrRayCluster, watcher::Error>>,
) {
    let store = Arc::new(MirrorStore::default());
    let changes = Arc::new(MirrorChanges::default());
    // A shard caches only its own workspaces' mirrors (they carry their namespace's shard label).
    let mut selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    if let Some(shard) = shard {
        selector.push_str(&format!(",{shard}"));
    }
    let (store_in_stream, changes_in_stream) = (store.clone(), changes.clone());
    let stream = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .inspect(move |ev| {
            let Ok(ev) = ev else { return };
            // The store first, as a reflector does: a reconcile triggered by this event sees it.
            let former_owner = store_in_stream.apply(ev);
            match ev {
                watcher::Event::Apply(m)
                | watcher::Event::Delete(m)
                | watcher::Event::InitApply(m) => changes_in_stream.touched(m, former_owner),
                watcher::Event::Init | watcher::Event::InitDone => changes_in_stream.relisted(),
            }
        })
        .touched_objects();
    (store, changes, stream)
}

/// A shard's namespace watch: the namespaces its selector matches (one, with `--namespaces`),
/// metadata only, into `served`. A namespace that joins the shard (or is relabelled within it)
/// wakes its workspaces; one that leaves has them forgotten. Runs until `token` is cancelled.
#[allow(clippy::too_many_arguments)]
async fn watch_namespaces(
    client: kube::Client,
    ns: Option<String>,
    selector: ShardSelector,
    served: Arc<ShardNamespaces>,
    ctx: Arc<Context>,
    workspaces: reflector::Store<EmrWorkspace>,
    wake: futures::channel::mpsc::UnboundedSender<reflector::ObjectRef<EmrWorkspace>>,
    token: CancellationToken,
) {
    let mut cfg = watcher::Config::default().labels(&selector.to_string());
    if let Some(ns) = &ns {
        cfg = cfg.fields(&format!("metadata.name={ns}"));
    }
    // Metadata only: a namespace's labels are all a shard needs.
    let mut events = watcher(Api::<PartialObjectMeta<Namespace>>::all(client), cfg)
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            _ = token.cancelled() => return,
            ev = events.next() => ev,
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                warn!(error = %e, shard = %selector, "watching the shard's namespaces failed; retrying");
                continue;
            }
            None => return,
        };
        for change in served.apply(&ev) {
            let namespace = change.namespace();
            match &change {
                Change::Joined(_) | Change::Relabelled(_) => {
                    info!(%namespace, shard = %selector, ?change, "serving the namespace's workspaces");
                    for ws in workspaces.state() {
                        if ws.namespace().as_deref() == Some(namespace) {
                            let _ = wake.unbounded_send(reflector::ObjectRef::from_obj(&*ws));
                        }
                    }
                }
                Change::Left(_) => {
                    info!(%namespace, shard = %selector, "the namespace left the shard; forgetting its workspaces");
                    crate::controller::namespace_left(&ctx, namespace);
                }
            }
        }
    }
}

/// The reconciler's context for one controller: the shared clients, this controller's caches
/// (its mirror cache, its workspace store and that store's readiness), the settings from the
/// operator's configuration, and the token that stops its writes.
fn context(
    shared: &Shared,
    mirrors: MirrorCache,
    (workspaces, workspaces_ready): (reflector::Store<EmrWorkspace>, crate::controller::Readiness),
    served: Option<Arc<ShardNamespaces>>,
    token: CancellationToken,
) -> Context {
    let cfg = &shared.cfg;
    let settings = Settings {
        listing_timeout: cfg.listing_timeout,
        default_interval: cfg.default_sync_interval,
        write_backoff_cap: cfg.write_backoff_cap,
        endpoints: EndpointPolicy::with(cfg.allowed_endpoints.clone()),
        listings_per_namespace: cfg.listings_per_namespace(),
        status_heartbeat: cfg.status_heartbeat,
        stuck_cluster_after: cfg.stuck_cluster_after,
        shard: served,
        max_jobs_per_workspace: cfg.max_jobs_per_workspace,
    };
    Context {
        kube: Kube {
            client: shared.client.clone(),
            recorder: shared.recorder.clone(),
            write_limiter: shared.write_limiter.clone(),
        },
        remote: Remote {
            emr: shared.emr.clone(),
            credentials: shared.credentials.clone(),
        },
        caches: Caches::new(
            mirrors,
            workspaces,
            workspaces_ready,
            settings.listings_per_namespace,
        ),
        settings,
        metrics: shared.metrics.clone(),
        stop: token,
    }
}

async fn run_controller(
    shared: &Shared,
    ns: Option<&str>,
    token: CancellationToken,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let client = &shared.client;
    let workspaces: Api<EmrWorkspace> = api(client, ns);
    let mirrors_api: Api<EmrRayCluster> = api(client, ns);

    // Secrets are never listed or watched (their data would reach the operator and its caches):
    // a sync reads the one Secret it needs with `get`.
    let shard = shared.cfg.shard_selector.as_ref();
    // In a shard: the namespaces it serves, as its namespace watch reports them.
    let served = shard.map(|_| Arc::new(ShardNamespaces::default()));
    let (mirrors, changes, mirror_stream) =
        mirror_watch(mirrors_api, shard.map(ToString::to_string));
    // Our own reflector for workspaces, so that its readiness can be awaited (its stream is
    // built below, once the context exists).
    let (ws_store, ws_writer) = reflector::store();
    let ws_ready = crate::controller::Readiness::default();
    let ws_ready_set = ws_ready.clone();

    let ctx = Arc::new(context(
        shared,
        MirrorCache::new(mirrors.clone(), changes),
        (ws_store.clone(), ws_ready.clone()),
        served.clone(),
        token.clone(),
    ));
    // Workspaces woken to take over mirrors left without an owner (see controller::orphans),
    // of a namespace that joined this shard, or waiting for their namespace's listing slot
    // when one frees (controller::slots).
    let (wake, woken) = futures::channel::mpsc::unbounded();
    ctx.caches.wake_slot_waiters_with(wake.clone());
    if let (Some(selector), Some(served)) = (shard, &served) {
        tokio::spawn(watch_namespaces(
            client.clone(),
            ns.map(str::to_string),
            selector.clone(),
            served.clone(),
            ctx.clone(),
            ws_store.clone(),
            wake.clone(),
            token.clone(),
        ));
        // Which workspaces are ours is known from the namespace watch's first list on.
        tokio::select! {
            _ = token.cancelled() => return,
            _ = served.wait_ready() => {}
        }
    }
    // Every workspace in scope is watched, whatever its labels: in a shard, its namespace's
    // label says whether it is served (reconcile looks it up; a tenant cannot move its
    // workspace by labelling it). A deleted workspace is forgotten at once: its mirrors are
    // not touched.
    let forget_ctx = ctx.clone();
    let ws_stream = reflector(ws_writer, watcher(workspaces, watcher::Config::default()))
        .default_backoff()
        .inspect(move |ev| match ev {
            Ok(watcher::Event::Delete(ws)) => crate::controller::forget(&forget_ctx, ws),
            // The reflector applied it: the store is ready.
            Ok(watcher::Event::InitDone) => ws_ready_set.set(),
            _ => {}
        })
        .applied_objects();
    let ctrl = Controller::for_stream(ws_stream, ws_store.clone()).reconcile_on(woken);
    let ws_store_ready = ws_store.clone();
    let m2 = mirrors.clone();
    let (prune_ctx, prune_token) = (ctx.clone(), token.clone());
    let mut job_orphans = crate::controller::orphans::JobOrphans::new(
        client.clone(),
        ns,
        shard.map(|s| s.to_string()).as_deref(),
    );
    let ws_listed = ws_ready.clone();
    tokio::spawn(async move {
        ws_ready.wait().await;
        m2.wait_ready().await;
        on_ready();
        loop {
            tokio::select! {
                _ = prune_token.cancelled() => break,
                _ = tokio::time::sleep(ORPHAN_SWEEP_PERIOD) => {}
            }
            // Deleted workspaces are not reconciled again: forget them (and their metric series).
            crate::controller::prune_deleted(&prune_ctx, &ws_store_ready);
            let mut woken = crate::controller::orphans::sweep(&prune_ctx, &ws_store_ready).await;
            woken.extend(job_orphans.sweep(&prune_ctx, &ws_store_ready).await);
            woken.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            woken.dedup();
            for ws in woken {
                let _ = wake.unbounded_send(ws);
            }
        }
    });
    info!(
        namespace = ns.unwrap_or("<all>"),
        shard = %shard.map(ToString::to_string).unwrap_or_else(|| "<all>".into()),
        "starting controller"
    );
    let run = ctrl
        .with_config(controller::Config::default().concurrency(shared.cfg.concurrency))
        .owns_stream(mirror_stream)
        .graceful_shutdown_on(token.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile error");
            }
        });
    // A graceful shutdown waits for the reconciles in flight, but not for ever: kube-runtime's
    // runner waits for its store's first list before it ends, so with an API server that never
    // answered (the store never listed, nothing ever ran) it would never end.
    let stop_waiting = async {
        token.cancelled().await;
        if ws_listed.is_set() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            "reconciles still running after the grace period were dropped"
        } else {
            "the workspaces were never listed: no reconcile ran"
        }
    };
    tokio::select! {
        () = run => {}
        why = stop_waiting => warn!(namespace = ns.unwrap_or("<all>"), "controller stopped without waiting: {why}"),
    }
    info!(namespace = ns.unwrap_or("<all>"), "controller stopped");
}
