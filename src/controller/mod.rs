//! The reconciler: one `EmrWorkspace` in, read-only `EmrRayCluster` mirrors out.
//!
//! * [`plan`] decides the mirror writes and [`status`] the workspace status (pure);
//! * [`apply`] performs the writes, Events and write metrics;
//! * [`state`] holds what is remembered between reconciles;
//! * [`mirror`] turns a remote cluster into a mirror's status (pure);
//! * [`credentials`] reads a workspace's access key.
//!
//! Each workspace is listed remotely every `syncInterval` (with jitter). The last complete
//! listing is kept in memory, so a mirror deleted or edited on the Kubernetes side is repaired
//! without a remote call. Writes the API server refuses are backed off per workspace and
//! reported in status; they never cause extra remote calls.

pub mod apply;
pub mod credentials;
pub mod mirror;
pub mod plan;
pub mod state;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{DurationError, EmrWorkspace, EndpointNetwork, Interval, Reason};
use crate::emr::{CredentialResolver, EmrClient, EmrError};
use crate::metrics::{ClusterStateLabels, FailureLabels, Metrics, WorkspaceLabels};
use crate::time::now_rfc3339;
use apply::{WriteLimiter, WriteReport, Writer, publish};
use mirror::Staleness;
use state::{Failure, Listing, MirrorCache, WorkspaceState, WorkspaceStates, WriteTrouble};

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
}

/// Everything the reconciler needs, shared by all workspaces of one controller.
pub struct Context {
    pub client: kube::Client,
    pub emr: EmrClient,
    pub credentials: CredentialResolver,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub mirrors: MirrorCache,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub settings: Settings,
    pub write_limiter: WriteLimiter,
    /// Cancelled when this replica stops leading: in-flight reconciles stop writing at once.
    pub stop: CancellationToken,
    states: WorkspaceStates,
    /// Consecutive reconcile errors per workspace, for [`error_policy`]'s backoff.
    errors: Mutex<HashMap<String, u32>>,
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
        secrets: Store<PartialObjectMeta<Secret>>,
        settings: Settings,
        write_limiter: WriteLimiter,
        stop: CancellationToken,
    ) -> Self {
        Context {
            client,
            emr,
            credentials,
            recorder,
            metrics,
            mirrors,
            secrets,
            settings,
            write_limiter,
            stop,
            states: WorkspaceStates::default(),
            errors: Mutex::new(HashMap::new()),
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
    ctx.metrics.reconciles.inc();
    // Decisions need the mirror and Secret caches: wait for their first complete list.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        wait_ready(ctx.mirrors.store()).await;
        wait_ready(&ctx.secrets).await;
    })
    .await;
    let k = key(&ws);
    if ws.meta().deletion_timestamp.is_some() {
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    let uid = ws.uid().unwrap_or_default();
    let mut st = ctx.states.get(&k, &uid);
    let started = Instant::now();
    let result = sync(&ws, &ctx, &mut st).await;
    ctx.states.put(&k, st.clone());
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
    Ok(match st.next_wakeup() {
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
    let now = Instant::now();
    let secret_version = current_secret_version(ws, ctx);
    let due = st.next_due.is_none_or(|d| now >= d)
        || st.synced_generation != ws.meta().generation
        || (ws.spec.credentials.secret_ref.is_some() && st.secret_version != secret_version);
    if due {
        st.synced_generation = ws.meta().generation;
        st.secret_version = secret_version;
        list_remote(ws, ctx, st, interval).await;
    }
    update_state_metrics(ws, ctx, st);
    if st.may_write(Instant::now()) {
        // Refused writes are retried at least once an interval, so that a fixed cause is
        // repaired within one interval.
        let cap = ctx.settings.write_backoff_cap.min(interval.as_duration());
        write_mirrors(ws, ctx, st, cap).await;
    }
    Ok(due)
}

/// One remote listing: updates the listing or the failure, and schedules the next one.
async fn list_remote(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    interval: Interval,
) {
    let labels = labels(ws);
    ctx.metrics.sync_attempts.get_or_create(&labels).inc();
    let next = match list_workspace(ws, ctx).await {
        Ok(listing) => {
            if let Some(prev) = st.failure.take() {
                publish(
                    &ctx.recorder,
                    &ws.object_ref(&()),
                    EventType::Normal,
                    "SyncRecovered",
                    format!(
                        "listing succeeded again after {} failed attempt(s) ({})",
                        prev.consecutive, prev.reason
                    ),
                )
                .await;
            }
            st.listing = Some(Arc::new(listing));
            st.last_success = Some(now_rfc3339());
            ctx.metrics
                .last_success
                .get_or_create(&labels)
                .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
            jitter(interval.as_duration(), 0.1)
        }
        Err(e) => {
            let reason = e.reason();
            ctx.metrics
                .sync_failures
                .get_or_create(&FailureLabels {
                    namespace: labels.namespace.clone(),
                    workspace: labels.workspace.clone(),
                    reason: reason.metric_label().to_string(),
                })
                .inc();
            let failure = Failure::next(
                st.failure.as_ref(),
                reason,
                e.to_string(),
                e.remote().and_then(|r| r.code.clone()),
                e.remote().and_then(|r| r.request_id.clone()),
                &now_rfc3339(),
            );
            if st.failure.as_ref().map(|f| f.reason) != Some(reason) {
                publish(
                    &ctx.recorder,
                    &ws.object_ref(&()),
                    EventType::Warning,
                    "SyncFailed",
                    failure.message.clone(),
                )
                .await;
            }
            warn!(workspace = %key(ws), %reason, error = %e, "remote listing failed");
            let n = failure.consecutive.clamp(1, 16) as u32;
            st.failure = Some(failure);
            let backoff = Duration::from_secs(5)
                .saturating_mul(1 << (n - 1))
                .min(interval.as_duration());
            let backoff = match e.remote().and_then(|r| r.retry_after) {
                Some(ra) => ra.max(Duration::from_secs(1)),
                None => backoff,
            };
            jitter(backoff, 0.2)
        }
    };
    st.next_due = Instant::now().checked_add(next);
}

/// Resolves credentials and the endpoint, then lists the workspace.
async fn list_workspace(ws: &EmrWorkspace, ctx: &Context) -> Result<Listing, SyncError> {
    let creds = credentials::for_workspace(ws, &ctx.client, &ctx.credentials).await?;
    let endpoint = crate::emr::endpoint::resolve(
        &ws.spec.region_id,
        ws.spec.network == EndpointNetwork::Vpc,
        ws.spec.endpoint.as_deref(),
    )?;
    let timeout = ctx
        .settings
        .listing_timeout
        .saturating_add(Duration::from_secs(5));
    let listing = tokio::time::timeout(
        timeout,
        ctx.emr
            .list_ray_clusters(&endpoint, &ws.spec.workspace_id, &creds),
    )
    .await
    .map_err(|_| {
        EmrError::new(
            crate::emr::ErrorKind::Timeout,
            format!(
                "listing did not finish within {}s",
                ctx.settings.listing_timeout.as_secs()
            ),
        )
    })??;
    debug!(workspace = %key(ws), clusters = listing.clusters.len(), requests = listing.requests, "listed");
    let page = ctx.emr.config().page_size.max(1) as usize;
    Ok(Listing::new(listing.clusters, page))
}

/// Plans and performs the mirror writes, and records what the API server refused.
async fn write_mirrors(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    backoff_cap: Duration,
) {
    let owner = plan::Owner::of(ws);
    let existing = ctx.mirrors.current(&owner.namespace, &owner.uid);
    let stale = st
        .failure
        .as_ref()
        .map(|f| Staleness::from_failure(f.reason, f.code.as_deref(), st.last_success.as_deref()));
    let held_elsewhere = |name: &str| {
        ctx.mirrors
            .get(&owner.namespace, name)
            .filter(|m| {
                m.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid != owner.uid)
            })
            .map(|m| m.spec.workspace_ref.clone())
    };
    let refused = st
        .write_trouble
        .as_ref()
        .map(|t| t.refused.clone())
        .unwrap_or_default();
    let now = now_rfc3339();
    let plan = plan::plan(&plan::Input {
        owner: &owner,
        listing: st.listing.as_deref(),
        listing_is_current: st.listing_is_current(),
        stale: stale.as_ref(),
        existing: &existing,
        held_elsewhere: &held_elsewhere,
        refused: &refused,
        now: &now,
    });
    let workspace = ws.object_ref(&());
    if !plan.conflicts.is_empty() {
        let names: Vec<String> = plan
            .conflicts
            .iter()
            .map(|c| format!("{} (owned by {})", c.name, c.owner))
            .collect();
        warn!(workspace = %key(ws), conflicts = ?names, "mirror names held by another workspace");
        publish(
            &ctx.recorder,
            &workspace,
            EventType::Warning,
            Reason::MirrorNameConflict.as_str(),
            format!(
                "{} cluster(s) are already mirrored by another EmrWorkspace in this namespace \
                 (the same remote workspace twice?): {}",
                names.len(),
                names.join(", ")
            ),
        )
        .await;
    }
    if plan.actions.is_empty() {
        st.write_trouble = None;
        return;
    }
    let writer = Writer {
        api: Api::namespaced(ctx.client.clone(), &owner.namespace),
        owner: &owner,
        workspace: workspace.clone(),
        cache: &ctx.mirrors,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
        limiter: &ctx.write_limiter,
        now: &now,
    };
    let probe = st.write_trouble.is_some();
    let report = apply::apply_plan(&writer, plan, probe).await;
    let before = st.write_trouble.as_ref().map(|t| t.refusal);
    st.write_trouble = next_write_trouble(st.write_trouble.take(), report, &now, backoff_cap);
    match (&st.write_trouble, before) {
        (Some(t), prev) if prev != Some(t.refusal) => {
            publish(
                &ctx.recorder,
                &workspace,
                EventType::Warning,
                Reason::MirrorWriteFailed.as_str(),
                format!(
                    "{} of {} mirrors not written ({}): {}",
                    t.failed, t.mirrors, t.refusal, t.message
                ),
            )
            .await;
        }
        (None, Some(prev)) => {
            publish(
                &ctx.recorder,
                &workspace,
                EventType::Normal,
                "MirrorWritesRecovered",
                format!("every mirror is written again (after {prev} refusals)"),
            )
            .await;
        }
        _ => {}
    }
}

/// The write trouble after a pass: `None` when nothing was refused; otherwise the refusal, with
/// a backoff that grows with each consecutive refused pass.
fn next_write_trouble(
    prev: Option<WriteTrouble>,
    report: WriteReport,
    now: &str,
    cap: Duration,
) -> Option<WriteTrouble> {
    let first = report.first?;
    let consecutive = prev.as_ref().map_or(1, |p| p.consecutive.saturating_add(1));
    let since = match &prev {
        Some(p) if p.refusal == first.refusal => p.since.clone(),
        _ => now.to_string(),
    };
    let wait = WriteTrouble::backoff(consecutive, cap, first.retry_after);
    Some(WriteTrouble {
        refusal: first.refusal,
        message: first.message,
        mirrors: report.mirrors,
        failed: report.failed,
        since,
        consecutive,
        retry_at: Instant::now()
            .checked_add(jitter(wait, 0.1))
            .unwrap_or_else(Instant::now),
        refused: report.refused,
    })
}

/// Builds the workspace status and writes it when it differs.
async fn write_status(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &WorkspaceState,
    attempted: bool,
) -> Result<(), Error> {
    let prev = ws.status.clone().unwrap_or_default();
    let now = now_rfc3339();
    let s = status::workspace_status(&status::Input {
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
            crate::api::conditions::READY,
        )));
    if s == prev {
        return Ok(());
    }
    let api: Api<EmrWorkspace> = Api::namespaced(ctx.client.clone(), &labels.namespace);
    ctx.write_limiter.wait().await;
    let body = serde_json::json!({ "status": s });
    match apply::apply_ssa(&api, &ws.name_any(), body, true).await {
        Ok(_) => {}
        // The workspace was deleted meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => {
            let refused = apply::Refused::from_error(&e);
            ctx.metrics.count_refusal("emrworkspaces", refused.refusal);
            return Err(Error::StatusWrite(e));
        }
    }
    ctx.metrics.count_write("emrworkspaces", "apply-status");
    Ok(())
}

/// Exports each listed cluster's state; drops the series of clusters gone or changed.
fn update_state_metrics(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
    let Some(listing) = &st.listing else { return };
    let current: std::collections::BTreeMap<String, String> = listing
        .clusters
        .iter()
        .map(|(id, c)| {
            let state = c.state.as_ref().map_or("Unknown", |s| s.as_str());
            (id.clone(), state.to_string())
        })
        .collect();
    let l = labels(ws);
    for (id, old) in &st.exported_states {
        if current.get(id) != Some(old) {
            for s in states_for(old) {
                ctx.metrics.cluster_state.remove(&cluster_labels(&l, id, s));
            }
        }
    }
    for (id, state) in &current {
        if st.exported_states.get(id) == Some(state) {
            continue;
        }
        for s in states_for(state) {
            let on = i64::from(&s == state);
            ctx.metrics
                .cluster_state
                .get_or_create(&cluster_labels(&l, id, s))
                .set(on);
        }
    }
    st.exported_states = current;
}

fn cluster_labels(l: &WorkspaceLabels, id: &str, state: String) -> ClusterStateLabels {
    ClusterStateLabels {
        namespace: l.namespace.clone(),
        workspace: l.workspace.clone(),
        cluster_id: id.to_string(),
        name: mirror::mirror_name(id),
        state,
    }
}

/// The documented states plus the cluster's own when it is not one of them.
fn states_for(state: &str) -> Vec<String> {
    let mut v: Vec<String> = crate::emr::ClusterState::KNOWN
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !v.iter().any(|s| s == state) {
        v.push(state.to_string());
    }
    v
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
    ctx.metrics.sync_attempts.remove(&l);
    ctx.metrics.sync_duration.remove(&l);
    for (id, old) in &st.exported_states {
        for s in states_for(old) {
            ctx.metrics.cluster_state.remove(&cluster_labels(&l, id, s));
        }
    }
}

/// Waits until a reflector store has its first complete list. Polls, rather than relying on
/// `Store::wait_until_ready`'s wake-up alone, which was seen to hang here when awaited before
/// the store became ready (kube-runtime 5.0).
pub async fn wait_ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// Forgets workspaces that no longer exist (deleted workspaces are not reconciled again).
pub fn prune_deleted(ctx: &Context, workspaces: &Store<EmrWorkspace>) {
    let live: std::collections::HashSet<String> =
        workspaces.state().iter().map(|ws| key(ws)).collect();
    for k in ctx.states.keys() {
        if !live.contains(&k) {
            debug!(workspace = %k, "workspace deleted; forgetting it");
            forget_key(ctx, &k);
        }
    }
}

fn current_secret_version(ws: &EmrWorkspace, ctx: &Context) -> Option<String> {
    let sr = ws.spec.credentials.secret_ref.as_ref()?;
    let ns = ws.namespace().unwrap_or_default();
    ctx.secrets
        .get(&ObjectRef::new(&sr.name).within(&ns))
        .and_then(|s| s.resource_version())
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

/// Workspaces (by reference) that use a given Secret, for the Secret watch.
pub fn workspaces_using_secret(
    store: &Store<EmrWorkspace>,
    secret_ns: &str,
    secret_name: &str,
) -> Vec<ObjectRef<EmrWorkspace>> {
    store
        .state()
        .iter()
        .filter(|ws| ws.namespace().as_deref() == Some(secret_ns))
        .filter(|ws| {
            ws.spec
                .credentials
                .secret_ref
                .as_ref()
                .is_some_and(|s| s.name == secret_name)
        })
        .map(|ws| ObjectRef::from_obj(ws.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WriteRefusal;
    use apply::Refused;

    fn report(refusal: Option<WriteRefusal>) -> WriteReport {
        WriteReport {
            mirrors: 10,
            failed: usize::from(refusal.is_some()) * 10,
            first: refusal.map(|refusal| Refused {
                refusal,
                message: "no".into(),
                retry_after: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn write_trouble_grows_and_clears() {
        let cap = Duration::from_secs(300);
        assert_eq!(next_write_trouble(None, report(None), "t0", cap), None);
        let t1 =
            next_write_trouble(None, report(Some(WriteRefusal::Forbidden)), "t1", cap).unwrap();
        assert_eq!((t1.consecutive, t1.since.as_str()), (1, "t1"));
        let t2 =
            next_write_trouble(Some(t1), report(Some(WriteRefusal::Forbidden)), "t2", cap).unwrap();
        assert_eq!((t2.consecutive, t2.since.as_str()), (2, "t1"));
        assert!(t2.retry_at > Instant::now() + Duration::from_secs(9));
        assert_eq!(next_write_trouble(Some(t2), report(None), "t3", cap), None);
    }

    #[test]
    fn error_labels_are_fixed() {
        let e = Error::StatusWrite(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(e.metric_label(), "StatusWrite");
    }
}
