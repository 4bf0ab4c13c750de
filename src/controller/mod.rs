//! The reconciler: one `EmrWorkspace` in, read-only `EmrRayCluster` mirrors out.
//!
//! * [`plan`] decides the mirror writes and [`status`] the workspace status (pure);
//! * [`apply`] performs the writes, Events and write metrics;
//! * [`state`] holds what is remembered between reconciles; [`cache`] the compact record of
//!   each mirror the watch reports; [`packed`] keeps what is held long and read rarely (listed
//!   clusters, mirror statuses) as deflated JSON;
//! * [`mirror`] turns a remote cluster into a mirror's status (pure);
//! * [`credentials`] reads a workspace's access key;
//! * [`shard`] holds the namespaces a sharded replica serves.
//!
//! Each workspace is listed remotely every `syncInterval` (with jitter). The last complete
//! listing is kept in memory, so a mirror deleted or edited on the Kubernetes side is repaired
//! without a remote call. Writes the API server refuses are backed off per workspace and
//! reported in status; they never cause extra remote calls.
//!
//! (Over 500 lines: the reconcile sequence — `reconcile`, `sync`, the status write, duplicate
//! detection, `error_policy` — reads best in one place; every decision in it lives in `plan`
//! and `status`, every write in `apply`.)

pub mod apply;
pub mod cache;
pub mod credentials;
pub mod diagnose;
pub mod jobs;
pub mod mirror;
pub mod orphans;
pub mod packed;
pub mod plan;
pub mod queues;
mod series;
pub mod shard;
pub mod state;
pub mod status;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{
    ANNOTATION_REQUESTED_AT, DurationError, EmrWorkspace, EndpointNetwork, Interval, Reason,
};
use crate::emr::{CredentialResolver, EmrClient, EmrError};
use crate::metrics::{Metrics, NamespaceLabels, WorkspaceLabels};
use crate::time::now_rfc3339;
use apply::WriteLimiter;
use state::{Failure, MirrorCache, WorkspaceState, WorkspaceStates};

/// Why a reconcile failed (the workspace is retried with a growing backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the workspace status failed: {0}")]
    StatusWrite(#[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusWrite(_) => "StatusWrite",
        }
    }
}

/// Why a sync failed: before the remote call (credentials, configuration) or in it.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{message}")]
    Local { reason: Reason, message: String },
    #[error(transparent)]
    Remote(#[from] EmrError),
}

impl SyncError {
    pub fn local(reason: Reason, message: String) -> Self {
        SyncError::Local { reason, message }
    }
    pub fn reason(&self) -> Reason {
        match self {
            SyncError::Local { reason, .. } => *reason,
            SyncError::Remote(e) => Reason::from(e.kind),
        }
    }
    fn remote(&self) -> Option<&EmrError> {
        match self {
            SyncError::Local { .. } => None,
            SyncError::Remote(e) => Some(e),
        }
    }
}

/// Operator-wide settings of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listing_timeout: Duration,
    /// Sync interval of workspaces without `spec.syncInterval`.
    pub default_interval: Interval,
    /// Longest backoff after refused writes.
    pub write_backoff_cap: Duration,
    /// Where credentials may be sent.
    pub endpoints: crate::emr::endpoint::EndpointPolicy,
    /// Listings of one namespace that may run at once (the rest of the reconcile slots stay
    /// free for other tenants).
    pub listings_per_namespace: usize,
    /// A status whose only news is the sync times is written at most this often.
    pub status_heartbeat: Duration,
    /// A cluster `Starting` or `Stopping` for longer than this is unhealthy: its instances
    /// are fetched (`GetRayCluster`), as an `Error` cluster's are at once.
    pub stuck_cluster_after: Duration,
    /// This replica serves one shard: the namespaces it serves (fed by its namespace watch),
    /// with their shard label, which their workspaces' mirrors carry. `None`: every namespace,
    /// and mirrors carry no shard label.
    pub shard: Option<Arc<shard::ShardNamespaces>>,
    /// Most Ray jobs one workspace's retention window may hold (`spec.jobs`); more fails its
    /// job listing (`TooManyJobs`) without deleting any job mirror.
    pub max_jobs_per_workspace: usize,
}

/// Everything the reconciler needs, shared by all workspaces of one controller.
pub struct Context {
    pub client: kube::Client,
    pub emr: EmrClient,
    pub credentials: CredentialResolver,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub mirrors: MirrorCache,
    /// Every watched workspace (to find duplicates).
    pub workspaces: Store<EmrWorkspace>,
    pub settings: Settings,
    pub write_limiter: WriteLimiter,
    /// Cancelled when this replica stops leading: in-flight reconciles stop writing at once.
    pub stop: CancellationToken,
    states: WorkspaceStates,
    /// Per namespace: the listings it may run at once.
    namespace_slots: state::NamespaceSlots,
    /// Consecutive reconcile errors per workspace, for [`error_policy`]'s backoff.
    errors: Mutex<HashMap<String, u32>>,
    /// UIDs of workspaces that left the watch (deleted), and when: a reconcile still in flight
    /// writes nothing more for them. Kept for [`DEPARTED_TTL`].
    departed: Mutex<HashMap<String, Instant>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        emr: EmrClient,
        credentials: CredentialResolver,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        mirrors: MirrorCache,
        workspaces: Store<EmrWorkspace>,
        settings: Settings,
        write_limiter: WriteLimiter,
        stop: CancellationToken,
    ) -> Self {
        let namespace_slots = state::NamespaceSlots::new(settings.listings_per_namespace);
        Context {
            client,
            emr,
            credentials,
            recorder,
            metrics,
            mirrors,
            workspaces,
            settings,
            write_limiter,
            stop,
            states: WorkspaceStates::default(),
            namespace_slots,
            errors: Mutex::new(HashMap::new()),
            departed: Mutex::default(),
        }
    }
}

fn key(ws: &EmrWorkspace) -> String {
    format!("{}/{}", ws.namespace().unwrap_or_default(), ws.name_any())
}

fn labels(ws: &EmrWorkspace) -> WorkspaceLabels {
    WorkspaceLabels {
        namespace: ws.namespace().unwrap_or_default(),
        workspace: ws.name_any(),
    }
}

/// `spec.syncInterval` (at least [`Interval::MIN_SYNC`]), or the operator's default.
pub fn effective_interval(ws: &EmrWorkspace, default: Interval) -> Result<Interval, DurationError> {
    Ok(ws
        .spec
        .sync_interval()?
        .unwrap_or(default)
        .max(Interval::MIN_SYNC))
}

fn jitter(d: Duration, fraction: f64) -> Duration {
    let f = rand::rng().random_range(0.0..fraction.max(f64::MIN_POSITIVE));
    d.saturating_add(d.mul_f64(f))
}

/// How long a reconcile waits for the first complete list of the caches it decides on.
const CACHES_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconciles one workspace; stops at once (writing nothing more) when leadership is lost.
pub async fn reconcile(ws: Arc<EmrWorkspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let stop = ctx.stop.clone();
    tokio::select! {
        biased;
        _ = stop.cancelled() => Ok(Action::await_change()),
        r = reconcile_workspace(ws, ctx) => r,
    }
}

async fn reconcile_workspace(ws: Arc<EmrWorkspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Decisions need the mirror, workspace and namespace caches: wait for their first
    // complete list.
    let caches = tokio::time::timeout(CACHES_READY_TIMEOUT, async {
        ctx.mirrors.store().wait_ready().await;
        wait_ready(&ctx.workspaces).await;
        if let Some(shard) = &ctx.settings.shard {
            shard.wait_ready().await;
        }
    })
    .await;
    if caches.is_err() {
        // Deciding on a partial cache could create duplicates or miss mirrors to prune.
        warn!(workspace = %key(&ws), "caches not listed after {CACHES_READY_TIMEOUT:?}; trying again later");
        return Ok(Action::requeue(CACHES_READY_TIMEOUT));
    }
    let k = key(&ws);
    if mirror_shard(&ctx, &ws).is_err() {
        // Another shard's workspace (a sharded replica watches every workspace and serves those
        // of its namespaces), or one whose namespace just left: nothing is written or kept.
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    ctx.metrics.reconciles.inc();
    if ws.meta().deletion_timestamp.is_some() {
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    let uid = ws.uid().unwrap_or_default();
    let mut st = ctx.states.get(&k, &uid);
    let started = Instant::now();
    let result = sync(&ws, &ctx, &mut st).await;
    ctx.states.put(&k, st.clone());
    if has_departed(&ctx, &ws) {
        // Deleted, or its namespace moved to another shard meanwhile: not ours to write or
        // remember any more (the series this sync touched go too).
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    let attempted = result?;
    let status = write_status(&ws, &ctx, &st, attempted).await;
    if attempted {
        // A sync is listing, mirror writes and status write: its end is observable here.
        ctx.metrics
            .sync_duration
            .get_or_create(&labels(&ws))
            .observe(started.elapsed().as_secs_f64());
    }
    if status.is_ok() {
        ctx.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
    }
    status?;
    let now = Instant::now();
    // Instances are fetched only while the listing succeeds: after a failed one, its retry
    // comes first.
    let diagnoses = st
        .failure
        .is_none()
        .then(|| {
            st.diagnoses
                .next_wakeup(ctx.settings.stuck_cluster_after, now)
        })
        .flatten();
    let wakeup = match (st.next_wakeup(), diagnoses) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(match wakeup {
        Some(t)
            if !ws.spec.suspend
                && st
                    .failure
                    .as_ref()
                    .is_none_or(|f| f.reason != Reason::InvalidSpec) =>
        {
            Action::requeue(
                t.saturating_duration_since(now)
                    .max(Duration::from_millis(100)),
            )
        }
        _ => Action::await_change(),
    })
}

/// Lists remotely when due, then writes the mirrors unless backing off. Returns whether a
/// remote listing was attempted.
async fn sync(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) -> Result<bool, Error> {
    let interval = match effective_interval(ws, ctx.settings.default_interval) {
        Ok(i) => i,
        Err(e) => {
            let msg = format!("syncInterval: {e}");
            st.failure = Some(Failure::next(
                st.failure.as_ref(),
                Reason::InvalidSpec,
                msg,
                None,
                None,
                &now_rfc3339(),
            ));
            st.next_due = None;
            return Ok(false);
        }
    };
    if st
        .failure
        .as_ref()
        .is_some_and(|f| f.reason == Reason::InvalidSpec)
    {
        st.failure = None;
    }
    if ws.spec.suspend {
        return Ok(false);
    }
    if let Some(original) = duplicate_of(ws, ctx) {
        // Another workspace of the namespace owns the mirrors of this remote workspace.
        let msg = format!(
            "EmrWorkspace {original} of this namespace already mirrors remote workspace {} \
             ({}); delete this one",
            ws.spec.workspace_id, ws.spec.region_id
        );
        st.failure = Some(Failure::next(
            st.failure.as_ref(),
            Reason::DuplicateWorkspace,
            msg,
            None,
            None,
            &now_rfc3339(),
        ));
        // Looked at again every interval: when the original goes, this one takes over.
        st.next_due = Instant::now().checked_add(interval.as_duration());
        return Ok(false);
    }
    if st
        .failure
        .as_ref()
        .is_some_and(|f| f.reason == Reason::DuplicateWorkspace)
    {
        st.failure = None;
    }
    let requested = requested_sync(ws, st);
    let mut due = listing_due(
        Instant::now(),
        st.next_due,
        st.failure
            .as_ref()
            .is_some_and(|f| called_the_remote(f.reason)),
        st.synced_generation != ws.meta().generation || requested.is_some(),
    );
    // The namespace's listing slot, or none now: then this reconcile gives its slot back and
    // the listing comes again shortly, still due.
    let ns = ws.namespace().unwrap_or_default();
    let slot = due
        .then(|| ctx.namespace_slots.try_acquire(&ns))
        .flatten()
        .map(|permit| {
            let held = ctx
                .metrics
                .namespace_listings
                .get_or_create(&NamespaceLabels {
                    namespace: ns.clone(),
                })
                .clone();
            held.inc();
            (permit, Held(held))
        });
    if due && slot.is_none() {
        due = false;
        st.next_due = Instant::now().checked_add(jitter(NAMESPACE_BUSY_RETRY, 0.5));
    }
    if due {
        st.synced_generation = ws.meta().generation;
        sync::list_remote(ws, ctx, st, interval).await;
        drop(slot);
        if requested.is_some() {
            st.handled_request = requested;
        }
    }
    // Why unhealthy clusters are unhealthy: once per change, retried on its own backoff.
    sync::diagnose(ws, ctx, st, interval).await;
    series::update(ws, ctx, st);
    queues::update_series(ws, ctx, st);
    if st.may_write(Instant::now()) && !has_departed(ctx, ws) {
        // Refused writes are retried at least once an interval, so that a fixed cause is
        // repaired within one interval.
        let cap = ctx.settings.write_backoff_cap.min(interval.as_duration());
        sync::write_mirrors(ws, ctx, st, cap).await;
    }
    if !has_departed(ctx, ws) {
        jobs::write_jobs(ws, ctx, st).await;
    }
    if due && st.failure.is_none() {
        // The next listing is an interval after this sync's writes, not after its listing:
        // when the API server is slow to take the writes (an initial sync), a workspace is not
        // listed again before its mirrors are written.
        st.next_due = Instant::now().checked_add(jitter(interval.as_duration(), 0.1));
    }
    Ok(due)
}

/// Builds the workspace status and writes it when it differs.
async fn write_status(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &WorkspaceState,
    attempted: bool,
) -> Result<(), Error> {
    let prev = ws.status.clone().unwrap_or_default();
    let now = crate::time::Time::now();
    let mut s = status::workspace_status(&status::Input {
        prev: &prev,
        generation: ws.meta().generation,
        suspended: ws.spec.suspend,
        state: st,
        attempted,
        interval: effective_interval(ws, ctx.settings.default_interval)
            .ok()
            .map(|i| i.to_string()),
        endpoint: crate::emr::endpoint::resolve(
            &ws.spec.region_id,
            ws.spec.network == EndpointNetwork::Vpc,
            ws.spec.endpoint.as_deref(),
        )
        .ok()
        .map(|u| u.to_string()),
        now: &now,
    });
    s.jobs = ws.spec.jobs_enabled().and(st.jobs.summary.clone());
    let labels = labels(ws);
    ctx.metrics
        .workspace_clusters
        .get_or_create(&labels)
        .set(s.clusters.unwrap_or(0));
    ctx.metrics
        .workspace_ready
        .get_or_create(&labels)
        .set(i64::from(crate::api::conditions::is_true(
            &s.conditions,
            crate::api::ConditionType::Ready,
        )));
    ctx.metrics
        .workspace_mirrors_unwritten
        .get_or_create(&labels)
        .set(st.write_trouble.as_ref().map_or(0, |t| t.failed as i64));
    ctx.metrics
        .workspace_suspended
        .get_or_create(&labels)
        .set(i64::from(ws.spec.suspend));
    if !status::needs_write(
        &s,
        &prev,
        ctx.settings.status_heartbeat,
        jiff::Timestamp::now(),
    ) {
        return Ok(());
    }
    let api: Api<EmrWorkspace> = Api::namespaced(ctx.client.clone(), &labels.namespace);
    let _permit = ctx.write_limiter.wait().await;
    let body = serde_json::json!({ "status": s });
    match apply::apply_ssa(&api, &ws.name_any(), body, apply::Subresource::Status).await {
        Ok(_) => {}
        // The workspace was deleted meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => {
            let refused = apply::Refused::from_error(&e);
            ctx.metrics
                .count_refusal(crate::metrics::KubeResource::EmrWorkspaces, refused.refusal);
            return Err(Error::StatusWrite(e));
        }
    }
    ctx.metrics.count_write(
        crate::metrics::KubeResource::EmrWorkspaces,
        crate::metrics::WriteOperation::ApplyStatus,
    );
    Ok(())
}

/// Forgets a workspace that left this replica's watch (deleted): what is remembered about it
/// and its metric series. Its mirrors are left as they are.
pub fn forget(ctx: &Context, ws: &EmrWorkspace) {
    ctx.departed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ws.uid().unwrap_or_default(), Instant::now());
    forget_key(ctx, &key(ws));
}

/// Namespace `ns` left this replica's shard: what is remembered about its workspaces, and their
/// metric series, is dropped. Their mirrors are left to the shard that serves them now; a
/// reconcile still in flight writes nothing more (see [`has_departed`]).
pub fn namespace_left(ctx: &Context, ns: &str) {
    for k in ctx.states.keys() {
        if k.split_once('/').is_some_and(|(n, _)| n == ns) {
            forget_key(ctx, &k);
        }
    }
}

/// The shard label value a workspace's mirrors carry: none in an unsharded replica, else its
/// namespace's; [`shard::NotServed`] when this replica's shard does not serve the namespace.
/// Never a label of the workspace itself: its tenant writes that (see [`shard`]).
fn mirror_shard(ctx: &Context, ws: &EmrWorkspace) -> Result<Option<String>, shard::NotServed> {
    match &ctx.settings.shard {
        None => Ok(None),
        Some(served) => served.label(&ws.namespace().unwrap_or_default()),
    }
}

/// Whether a workspace is no longer this replica's: deleted, or its namespace left the shard.
fn has_departed(ctx: &Context, ws: &EmrWorkspace) -> bool {
    let deleted = {
        let departed = ctx.departed.lock().unwrap_or_else(|p| p.into_inner());
        !departed.is_empty() && departed.contains_key(&ws.uid().unwrap_or_default())
    };
    deleted || mirror_shard(ctx, ws).is_err()
}

/// Drops what is remembered about a workspace, and its metric series.
fn forget_key(ctx: &Context, k: &str) {
    ctx.errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(k);
    let Some(st) = ctx.states.remove(k) else {
        return;
    };
    ctx.mirrors.forget_owner(&st.uid);
    let (namespace, workspace) = k.split_once('/').unwrap_or(("", k));
    let l = WorkspaceLabels {
        namespace: namespace.to_string(),
        workspace: workspace.to_string(),
    };
    ctx.metrics.last_success.remove(&l);
    ctx.metrics.workspace_clusters.remove(&l);
    ctx.metrics.workspace_ready.remove(&l);
    ctx.metrics.workspace_mirrors_unwritten.remove(&l);
    ctx.metrics.workspace_suspended.remove(&l);
    jobs::forget_metrics(ctx, &l);
    ctx.metrics.sync_attempts.remove(&l);
    ctx.metrics.sync_duration.remove(&l);
    ctx.metrics.cluster_state.remove(namespace, workspace);
    queues::remove_series(ctx, namespace, workspace, st.exported_queues.as_deref());
}

/// Waits until a reflector store has its first complete list. Polls, rather than relying on
/// `Store::wait_until_ready`'s wake-up alone, which was seen to hang here when awaited before
/// the store became ready (kube-runtime 5.0).
pub async fn wait_ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // Not one plain `wait_until_ready().await`: kube-runtime's readiness is a oneshot receiver
    // behind a mutex, which keeps the waker of only the last task that polled it, so with
    // several waiters (reconciles, the sweep) some are never woken (seen: the orphan sweep never
    // started). A fresh future every 100 ms re-checks. Err (writer dropped) ends the wait too.
    while tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// How long a departed workspace's in-flight reconcile is watched for (longer than any sync).
const DEPARTED_TTL: Duration = Duration::from_secs(600);

/// Forgets workspaces that no longer exist (deleted workspaces are not reconciled again).
pub fn prune_deleted(ctx: &Context, workspaces: &Store<EmrWorkspace>) {
    ctx.departed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, at| at.elapsed() < DEPARTED_TTL);
    let live: std::collections::HashSet<String> =
        workspaces.state().iter().map(|ws| key(ws)).collect();
    for k in ctx.states.keys() {
        if !live.contains(&k) {
            debug!(workspace = %k, "workspace deleted; forgetting it");
            forget_key(ctx, &k);
        }
    }
}

/// A listing slot counted in `namespace_listings` while held (also when the reconcile holding
/// it is dropped: leadership lost).
struct Held(prometheus_client::metrics::gauge::Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How soon a due workspace whose namespace had no listing slot free tries again.
const NAMESPACE_BUSY_RETRY: Duration = Duration::from_secs(1);

/// Whether a listing is due at `now`: its time `next_due` has come, or a spec edit or a
/// `requestedAt` annotation asks for one early (`early`) — but never while backing off from a
/// failure of the remote API (`backing_off`): then `next_due` is a backoff or
/// `x-acs-retry-after` deadline, and asking again must not call the remote sooner (a loop of
/// annotations cannot raise the request rate). After a local failure (a missing Secret, a
/// refused endpoint) nothing was called, so a fix is picked up at once. Pure.
fn listing_due(now: Instant, next_due: Option<Instant>, backing_off: bool, early: bool) -> bool {
    next_due.is_none_or(|d| now >= d) || (early && !backing_off)
}

/// Whether a failure with this reason came from calling the EMR API (and so has a backoff a
/// request must respect). Pure.
fn called_the_remote(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::AuthenticationFailed
            | Reason::PermissionDenied
            | Reason::Throttled
            | Reason::RemoteUnavailable
            | Reason::Timeout
            | Reason::InvalidRequest
            | Reason::WorkspaceNotFound
            | Reason::MalformedResponse
            | Reason::IncompleteListing
            | Reason::TooManyClusters
    )
}

/// A `requestedAt` annotation value not handled yet (by this replica, or before, as the
/// status records).
fn requested_sync(ws: &EmrWorkspace, st: &WorkspaceState) -> Option<String> {
    // A tenant's free text: cleaned and capped before it is compared or written to status.
    let value = crate::emr::error::clean_text(ws.annotations().get(ANNOTATION_REQUESTED_AT)?, 64);
    let handled = st.handled_request.as_ref().or(ws
        .status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_ref()));
    (handled != Some(&value)).then_some(value)
}

/// The workspace of the same namespace that already mirrors the same remote workspace, if any:
/// the one that owns mirrors; when none (or both) do, the first created (on a tie, the first
/// name).
fn duplicate_of(ws: &EmrWorkspace, ctx: &Context) -> Option<String> {
    let ns = ws.namespace();
    let others: Vec<Arc<EmrWorkspace>> = ctx
        .workspaces
        .state()
        .into_iter()
        .filter(|o| o.namespace() == ns && o.uid() != ws.uid())
        .filter(|o| o.meta().deletion_timestamp.is_none())
        // (The cheap comparison first: most workspaces differ in their ID.)
        .filter(|o| {
            o.spec.workspace_id == ws.spec.workspace_id
                && remote_identity(&o.spec) == remote_identity(&ws.spec)
        })
        .collect();
    if others.is_empty() {
        return None;
    }
    let ns = ns.unwrap_or_default();
    let seniority = |w: &EmrWorkspace| Seniority {
        owns_no_mirrors: ctx
            .mirrors
            .current(&ns, &w.uid().unwrap_or_default())
            .is_empty(),
        created: w.meta().creation_timestamp.clone(),
        name: w.name_any(),
    };
    senior_to(&seniority(ws), others.iter().map(|o| seniority(o)))
}

/// What names a remote workspace: the endpoint called (scheme, host, port, base path; what `regionId`,
/// `network` and `endpoint` resolve to) and the workspace ID. Two `EmrWorkspace`s with the same
/// identity mirror the same clusters, whatever region they name; all of it is immutable. A spec
/// whose endpoint does not resolve is identified by its fields as written. Pure.
fn remote_identity(spec: &crate::api::EmrWorkspaceSpec) -> (String, String) {
    let endpoint = crate::emr::endpoint::resolve(
        &spec.region_id,
        spec.network == crate::api::EndpointNetwork::Vpc,
        spec.endpoint.as_deref(),
    );
    let origin = match endpoint {
        // The path too: an explicit endpoint's path is the base of the API's paths.
        Ok(url) => format!(
            "{}://{}:{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default().trim_end_matches('.'),
            url.port_or_known_default().unwrap_or_default(),
            url.path().trim_end_matches('/')
        ),
        Err(_) => format!(
            "{}|{:?}|{}",
            spec.region_id,
            spec.network,
            spec.endpoint.as_deref().unwrap_or_default()
        ),
    };
    (origin, spec.workspace_id.clone())
}

/// Where a workspace stands among those of one namespace that mirror the same remote
/// workspace: the one that owns mirrors first, then the first created, then the first name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seniority {
    owns_no_mirrors: bool,
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    name: String,
}

/// The workspace `me` duplicates: the most senior of `others`, if it outranks `me`. Pure.
fn senior_to(me: &Seniority, others: impl IntoIterator<Item = Seniority>) -> Option<String> {
    others.into_iter().filter(|o| o < me).min().map(|o| o.name)
}

/// Retries a failed reconcile with a per-workspace backoff: 5 s doubling up to 5 minutes.
pub fn error_policy(ws: Arc<EmrWorkspace>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = {
        let mut errors = ctx.errors.lock().unwrap_or_else(|p| p.into_inner());
        let n = errors.entry(key(&ws)).or_default();
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics.count_reconcile_error(err.metric_label());
    let wait = Duration::from_secs(5)
        .saturating_mul(1 << n.saturating_sub(1).min(6))
        .min(Duration::from_secs(300));
    warn!(workspace = %key(&ws), error = %err, retry_in = ?wait, "reconcile failed; backing off");
    Action::requeue(jitter(wait, 0.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_listings_wait_for_a_backoff() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let earlier = now - Duration::from_secs(1);
        // (next_due, backing off from a remote failure, early) -> due
        let rows = [
            (None, false, false, true, "never listed"),
            (Some(earlier), false, false, true, "the interval has passed"),
            (Some(later), false, false, false, "within the interval"),
            (Some(later), false, true, true, "asked for early, healthy"),
            (
                Some(later),
                true,
                true,
                false,
                "asked for early while backing off",
            ),
            (Some(later), true, false, false, "backing off"),
            (Some(earlier), true, true, true, "the backoff has passed"),
            (
                None,
                true,
                true,
                true,
                "failed without a deadline (invalid spec fixed)",
            ),
        ];
        for (next_due, backing_off, early, want, what) in rows {
            assert_eq!(
                listing_due(now, next_due, backing_off, early),
                want,
                "{what}"
            );
        }
        for (reason, remote) in [
            (Reason::Throttled, true),
            (Reason::AuthenticationFailed, true),
            (Reason::RemoteUnavailable, true),
            (Reason::SecretNotFound, false),
            (Reason::CredentialsNotPermitted, false),
            (Reason::EndpointNotAllowed, false),
            (Reason::InvalidSpec, false),
        ] {
            assert_eq!(called_the_remote(reason), remote, "{reason}");
        }
    }

    #[test]
    fn one_remote_identity_whatever_the_region_names() {
        let spec = |region: &str, vpc: bool, endpoint: Option<&str>, id: &str| {
            serde_json::from_value::<crate::api::EmrWorkspaceSpec>(serde_json::json!({
                "regionId": region, "workspaceId": id,
                "network": if vpc { "VPC" } else { "Public" },
                "endpoint": endpoint,
                "credentials": {"secretRef": {"name": "c"}},
            }))
            .unwrap()
        };
        let same = |a: &crate::api::EmrWorkspaceSpec, b: &crate::api::EmrWorkspaceSpec| {
            remote_identity(a) == remote_identity(b)
        };
        let hz = spec("cn-hangzhou", false, None, "w-1");
        let rows = [
            ("itself", spec("cn-hangzhou", false, None, "w-1"), true),
            (
                "the derived endpoint written out",
                spec(
                    "cn-beijing",
                    false,
                    Some("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com"),
                    "w-1",
                ),
                true,
            ),
            (
                "upper case, default port, trailing dot",
                spec(
                    "cn-shanghai",
                    false,
                    Some("HTTPS://Emr-Serverless-Spark.cn-hangzhou.aliyuncs.com.:443/"),
                    "w-1",
                ),
                true,
            ),
            (
                "another workspace",
                spec("cn-hangzhou", false, None, "w-2"),
                false,
            ),
            (
                "the VPC endpoint",
                spec("cn-hangzhou", true, None, "w-1"),
                false,
            ),
            (
                "another region",
                spec("cn-beijing", false, None, "w-1"),
                false,
            ),
            (
                "another port",
                spec(
                    "cn-hangzhou",
                    false,
                    Some("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com:8443"),
                    "w-1",
                ),
                false,
            ),
            (
                "another base path",
                spec(
                    "cn-hangzhou",
                    false,
                    Some("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/other"),
                    "w-1",
                ),
                false,
            ),
        ];
        for (what, other, want) in rows {
            assert_eq!(same(&hz, &other), want, "{what}");
        }
    }

    #[test]
    fn the_senior_workspace_keeps_the_mirrors() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s: &str| Some(Time(s.parse().unwrap()));
        let w = |owns: bool, created: &str, name: &str| Seniority {
            owns_no_mirrors: !owns,
            created: at(created),
            name: name.into(),
        };
        let t1 = "2026-01-01T00:00:00Z";
        let t2 = "2026-01-01T00:00:01Z";
        let rows = [
            ("alone", w(false, t2, "b"), vec![], None),
            (
                "older one",
                w(false, t2, "b"),
                vec![w(false, t1, "a")],
                Some("a"),
            ),
            (
                "newer one",
                w(false, t1, "a"),
                vec![w(false, t2, "b")],
                None,
            ),
            (
                "same second: first name",
                w(false, t1, "b"),
                vec![w(false, t1, "a")],
                Some("a"),
            ),
            (
                "same second, this one first",
                w(false, t1, "a"),
                vec![w(false, t1, "b")],
                None,
            ),
            (
                "the owner of mirrors, though newer",
                w(false, t1, "a"),
                vec![w(true, t2, "b")],
                Some("b"),
            ),
            (
                "owning mirrors wins over age",
                w(true, t2, "b"),
                vec![w(false, t1, "a")],
                None,
            ),
            (
                "the most senior of several",
                w(false, t2, "c"),
                vec![w(false, t1, "b"), w(true, t2, "d"), w(false, t1, "a")],
                Some("d"),
            ),
        ];
        for (what, me, others, want) in rows {
            assert_eq!(senior_to(&me, others).as_deref(), want, "{what}");
        }
    }

    #[test]
    fn a_sync_request_is_handled_once() {
        let mut ws = EmrWorkspace::new(
            "ws",
            serde_json::from_value(serde_json::json!({
                "regionId": "r", "workspaceId": "w",
                "credentials": {"secretRef": {"name": "s"}}
            }))
            .unwrap(),
        );
        let st = WorkspaceState::default();
        assert_eq!(requested_sync(&ws, &st), None, "no annotation");
        ws.metadata.annotations =
            Some([(ANNOTATION_REQUESTED_AT.to_string(), "t1".to_string())].into());
        assert_eq!(requested_sync(&ws, &st).as_deref(), Some("t1"));
        let handled = WorkspaceState {
            handled_request: Some("t1".into()),
            ..Default::default()
        };
        assert_eq!(
            requested_sync(&ws, &handled),
            None,
            "handled by this replica"
        );
        ws.status = Some(crate::api::EmrWorkspaceStatus {
            last_handled_reconcile_at: Some("t1".into()),
            ..Default::default()
        });
        assert_eq!(requested_sync(&ws, &st), None, "handled before a restart");
        ws.metadata.annotations = Some(
            [(
                ANNOTATION_REQUESTED_AT.to_string(),
                format!("t2\n{}", "x".repeat(500)),
            )]
            .into(),
        );
        let v = requested_sync(&ws, &st).unwrap();
        assert!(v.chars().count() <= 65 && !v.contains('\n'), "{v}");
        let handled = WorkspaceState {
            handled_request: Some(v),
            ..Default::default()
        };
        assert_eq!(
            requested_sync(&ws, &handled),
            None,
            "a long value is not a loop"
        );
    }

    #[test]
    fn error_labels_are_fixed() {
        let e = Error::StatusWrite(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(e.metric_label(), "StatusWrite");
    }
}
