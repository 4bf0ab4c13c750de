//! The reconciler: one `EmrWorkspace` in, read-only `EmrRayCluster` mirrors out.
//!
//! Each workspace is listed remotely every `syncInterval` (with jitter). The last complete listing
//! is kept in memory, so a mirror deleted or edited on the Kubernetes side is repaired without a
//! remote call. Only what differs is written, with server-side apply. A mirror is deleted (or
//! marked gone) only after a complete, successful listing no longer contains it; a failed listing
//! never deletes, blanks or downgrades a mirror.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use rand::Rng;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::crd::*;
use crate::emr::{
    CredentialResolver, CredentialSource, Credentials, EmrClient, EmrError, RayCluster, RrsaConfig,
    SecretString,
};
use crate::metrics::{ClusterStateLabels, FailureLabels, Metrics, WorkspaceLabels};
use crate::mirror::{self, Staleness};

/// Concurrent Kubernetes writes per workspace sync.
const WRITE_CONCURRENCY: usize = 16;
/// Per-mirror events are skipped (and summarised on the workspace) above this many per sync.
const MAX_MIRROR_EVENTS_PER_SYNC: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialisation error: {0}")]
    Json(#[from] serde_json::Error),
}

/// Everything the reconciler needs, shared by all workspaces.
pub struct Context {
    pub client: kube::Client,
    pub emr: EmrClient,
    pub credentials: CredentialResolver,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub mirrors: Store<EmrRayCluster>,
    /// Which workspaces' mirrors changed since they were last looked up in `mirrors`.
    pub mirror_changes: Arc<MirrorChanges>,
    /// Per workspace UID: its mirrors as last looked up, reused while nothing changed.
    mirror_cache: Mutex<HashMap<String, Arc<MirrorsByName>>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub listing_timeout: Duration,
    pub default_interval: Duration,
    state: Mutex<HashMap<String, WorkspaceState>>,
    /// Mirrors as our own last writes returned them, until the watch-fed store catches up.
    written: Mutex<HashMap<String, Written>>,
}

/// The result of one of our writes to a mirror (`None`: we deleted it).
struct Written {
    obj: Option<Arc<EmrRayCluster>>,
    at: Instant,
}

/// How long our own writes override the store (which lags behind them by a watch event).
const WRITTEN_TTL: Duration = Duration::from_secs(30);

fn resource_version(m: &EmrRayCluster) -> u64 {
    m.resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        emr: EmrClient,
        credentials: CredentialResolver,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        mirrors: Store<EmrRayCluster>,
        mirror_changes: Arc<MirrorChanges>,
        secrets: Store<PartialObjectMeta<Secret>>,
        listing_timeout: Duration,
        default_interval: Duration,
    ) -> Self {
        Context {
            client,
            emr,
            credentials,
            recorder,
            metrics,
            mirrors,
            mirror_changes,
            mirror_cache: Mutex::new(HashMap::new()),
            secrets,
            listing_timeout,
            default_interval,
            state: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    fn record_write(&self, ns: &str, name: &str, mut obj: Option<EmrRayCluster>) {
        if let Some(o) = obj.as_mut() {
            o.metadata.managed_fields = None;
        }
        let mut w = self.written.lock().unwrap();
        let now = Instant::now();
        w.retain(|_, e| now.duration_since(e.at) < WRITTEN_TTL);
        w.insert(
            format!("{ns}/{name}"),
            Written {
                obj: obj.map(Arc::new),
                at: now,
            },
        );
    }

    /// The mirrors a workspace controls (keyed by cluster ID) as the store has them, corrected
    /// by our own recent writes that the store has not seen yet. The store is scanned only when
    /// the watch reported a change to one of the workspace's mirrors (or restarted): a steady
    /// state costs no scan of all mirrors per reconcile.
    fn current_mirrors(&self, ns: &str, owner_uid: &str) -> HashMap<String, Arc<EmrRayCluster>> {
        let owned = |m: &EmrRayCluster| {
            m.metadata.namespace.as_deref() == Some(ns)
                && m.metadata.owner_references.as_ref().is_some_and(|refs| {
                    refs.iter()
                        .any(|o| o.uid == owner_uid && o.controller == Some(true))
                })
        };
        let cached = if self.mirror_changes.take(owner_uid) {
            None
        } else {
            self.mirror_cache.lock().unwrap().get(owner_uid).cloned()
        };
        let base = match cached {
            Some(c) => c,
            None => {
                let scanned: HashMap<String, Arc<EmrRayCluster>> = self
                    .mirrors
                    .state()
                    .into_iter()
                    .filter(|m| owned(m))
                    .map(|m| (m.name_any(), m))
                    .collect();
                let scanned = Arc::new(scanned);
                self.mirror_cache
                    .lock()
                    .unwrap()
                    .insert(owner_uid.to_string(), scanned.clone());
                scanned
            }
        };
        let mut by_name: HashMap<String, Arc<EmrRayCluster>> = (*base).clone();
        let prefix = format!("{ns}/");
        let now = Instant::now();
        let mut written = self.written.lock().unwrap();
        written.retain(|k, e| {
            if now.duration_since(e.at) >= WRITTEN_TTL {
                return false;
            }
            let Some(name) = k.strip_prefix(&prefix) else {
                return true;
            };
            match &e.obj {
                Some(ours) if owned(ours) => match by_name.get(name) {
                    // The store has caught up with our write (or gone past it).
                    Some(theirs) if resource_version(theirs) >= resource_version(ours) => false,
                    _ => {
                        by_name.insert(name.to_string(), ours.clone());
                        true
                    }
                },
                Some(_) => true,
                None => {
                    by_name.remove(name);
                    true
                }
            }
        });
        by_name
            .into_values()
            .map(|m| (m.spec.cluster_id.clone(), m))
            .collect()
    }
}

/// A workspace's mirrors by object name.
type MirrorsByName = HashMap<String, Arc<EmrRayCluster>>;

/// Mirror changes seen by the watch, per owning workspace UID, so that the reconciler rescans
/// the mirror store only for workspaces whose mirrors changed.
#[derive(Default)]
pub struct MirrorChanges {
    changed: Mutex<std::collections::HashSet<String>>,
    /// Set when the watch (re)lists: every workspace must rescan.
    all: std::sync::atomic::AtomicBool,
    /// Workspaces that have scanned since the last relist.
    scanned_since_relist: Mutex<std::collections::HashSet<String>>,
}

impl MirrorChanges {
    /// Records a watch event for this mirror.
    pub fn touched(&self, m: &EmrRayCluster) {
        let mut changed = self.changed.lock().unwrap();
        for o in m.metadata.owner_references.iter().flatten() {
            changed.insert(o.uid.clone());
        }
    }

    /// Records that the watch started a new complete list.
    pub fn relisted(&self) {
        self.all.store(true, std::sync::atomic::Ordering::SeqCst);
        self.scanned_since_relist.lock().unwrap().clear();
    }

    /// Whether the workspace must rescan; clears its mark (before the scan, so that an event
    /// arriving during the scan marks it again).
    fn take(&self, owner_uid: &str) -> bool {
        let marked = self.changed.lock().unwrap().remove(owner_uid);
        let relisted = self.all.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .scanned_since_relist
                .lock()
                .unwrap()
                .insert(owner_uid.to_string());
        marked || relisted
    }
}

/// What the operator remembers about a workspace between reconciles.
#[derive(Clone, Default)]
struct WorkspaceState {
    uid: String,
    /// The last complete listing, keyed by cluster ID.
    listing: Option<Arc<BTreeMap<String, RayCluster>>>,
    last_success: Option<String>,
    /// When the next remote listing is due.
    next_due: Option<Instant>,
    /// Generation of the spec the last listing was made for.
    synced_generation: Option<i64>,
    /// resourceVersion of the credentials Secret used for the last listing.
    secret_version: Option<String>,
    failure: Option<SyncFailure>,
    last_state: BTreeMap<String, String>,
    /// The last listing ended on a full page followed by an empty one: it may be cut short, so
    /// mirrors missing from it are kept (marked) rather than deleted.
    listing_on_boundary: bool,
}

/// The shortest sync interval honoured, whatever the spec or flags say.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// `spec.syncInterval`, or the operator's default when it is not set.
fn effective_interval(ws: &EmrWorkspace, ctx: &Context) -> Option<Duration> {
    match ws.spec.sync_interval.as_deref() {
        Some(s) if !s.trim().is_empty() => parse_duration(s),
        _ => Some(ctx.default_interval),
    }
}

/// Formats a whole-second duration the way users write them (`90s` → `1m30s`).
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn key(ws: &EmrWorkspace) -> String {
    format!("{}/{}", ws.namespace().unwrap_or_default(), ws.name_any())
}

/// Parses a Kubernetes-style duration (`90s`, `1m30s`, `1.5h`, `500ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn jitter(d: Duration, fraction: f64) -> Duration {
    let f = rand::rng().random_range(0.0..fraction.max(f64::MIN_POSITIVE));
    d + d.mul_f64(f)
}

/// Why a sync failed: before the remote call (credentials, configuration) or in it.
#[derive(Debug)]
enum SyncError {
    Local {
        reason: &'static str,
        message: String,
    },
    Remote(EmrError),
}

impl SyncError {
    fn local(reason: &'static str, message: String) -> Self {
        SyncError::Local { reason, message }
    }
    fn reason(&self) -> &'static str {
        match self {
            SyncError::Local { reason, .. } => reason,
            SyncError::Remote(e) => e.reason(),
        }
    }
    fn code(&self) -> Option<String> {
        match self {
            SyncError::Local { .. } => None,
            SyncError::Remote(e) => e.code.clone(),
        }
    }
    fn request_id(&self) -> Option<String> {
        match self {
            SyncError::Local { .. } => None,
            SyncError::Remote(e) => e.request_id.clone(),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Local { .. } => None,
            SyncError::Remote(e) => e.retry_after,
        }
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Local { message, .. } => f.write_str(message),
            SyncError::Remote(e) => e.fmt(f),
        }
    }
}

impl From<EmrError> for SyncError {
    fn from(e: EmrError) -> Self {
        SyncError::Remote(e)
    }
}

/// Reasons a person must act on: they are reported as `Stalled`.
fn is_stalling(reason: &str) -> bool {
    matches!(
        reason,
        "AuthenticationFailed"
            | "PermissionDenied"
            | "InvalidRequest"
            | "WorkspaceNotFound"
            | "InvalidEndpoint"
            | "SecretNotFound"
            | "SecretKeyMissing"
            | "CredentialsUnavailable"
            | "InvalidSpec"
    )
}

pub async fn reconcile(ws: Arc<EmrWorkspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    // Decisions need the mirror and Secret caches: wait for their first complete list.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        wait_ready(&ctx.mirrors).await;
        wait_ready(&ctx.secrets).await;
    })
    .await;
    let k = key(&ws);
    if ws.meta().deletion_timestamp.is_some() {
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    let uid = ws.uid().unwrap_or_default();
    let mut st = {
        let mut map = ctx.state.lock().unwrap();
        let entry = map.entry(k.clone()).or_default();
        if entry.uid != uid {
            *entry = WorkspaceState {
                uid: uid.clone(),
                ..Default::default()
            };
        }
        entry.clone()
    };
    let generation = ws.meta().generation;
    let Some(interval) = effective_interval(&ws, &ctx) else {
        let failure = failure_from(
            &st,
            "InvalidSpec",
            format!("syncInterval {:?} is not a duration", ws.spec.sync_interval),
            None,
            None,
        );
        st.failure = Some(failure);
        write_workspace_status(&ws, &ctx, &st, false).await?;
        store_state(&ctx, &k, st);
        return Ok(Action::await_change());
    };
    let interval = interval.max(MIN_SYNC_INTERVAL);

    if ws.spec.suspend {
        write_workspace_status(&ws, &ctx, &st, false).await?;
        store_state(&ctx, &k, st);
        return Ok(Action::await_change());
    }

    let secret_version = current_secret_version(&ws, &ctx);
    let now = Instant::now();
    let due = st.next_due.is_none_or(|d| now >= d)
        || st.synced_generation != generation
        || (ws.spec.credentials.secret_ref.is_some() && st.secret_version != secret_version);

    if !due {
        // Repair any drift on the Kubernetes side from the last listing; no remote call.
        apply_mirrors(&ws, &ctx, &mut st).await?;
        let wait = st.next_due.map(|d| d.saturating_duration_since(now));
        store_state(&ctx, &k, st);
        return Ok(wait.map_or(Action::await_change(), Action::requeue));
    }

    // A remote sync.
    let labels = WorkspaceLabels {
        namespace: ws.namespace().unwrap_or_default(),
        workspace: ws.name_any(),
    };
    ctx.metrics.sync_attempts.get_or_create(&labels).inc();
    let started = Instant::now();
    st.synced_generation = generation;
    st.secret_version = secret_version;
    let result = list_checked(&ws, &ctx).await;
    let requeue = match result {
        Ok((map, on_boundary)) => {
            st.listing_on_boundary = on_boundary;
            let recovered = st.failure.take();
            if let Some(prev) = recovered {
                publish(
                    &ctx,
                    &ws.object_ref(&()),
                    EventType::Normal,
                    "SyncRecovered",
                    format!(
                        "listing succeeded again after {} failed attempt(s) ({})",
                        prev.consecutive_failures, prev.reason
                    ),
                )
                .await;
            }
            st.listing = Some(Arc::new(map));
            st.last_success = Some(mirror::now_rfc3339());
            ctx.metrics
                .last_success
                .get_or_create(&labels)
                .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
            jitter(interval, 0.1)
        }
        Err(e) => {
            let reason = e.reason().to_string();
            ctx.metrics
                .sync_failures
                .get_or_create(&FailureLabels {
                    namespace: labels.namespace.clone(),
                    workspace: labels.workspace.clone(),
                    reason: reason.clone(),
                })
                .inc();
            let failure = failure_from(&st, &reason, e.to_string(), e.code(), e.request_id());
            let changed = st.failure.as_ref().map(|f| f.reason.as_str()) != Some(reason.as_str());
            if changed {
                publish(
                    &ctx,
                    &ws.object_ref(&()),
                    EventType::Warning,
                    "SyncFailed",
                    failure.message.clone(),
                )
                .await;
            }
            warn!(workspace = %k, reason = %reason, error = %e, "remote listing failed");
            let n = failure.consecutive_failures.clamp(1, 16) as u32;
            st.failure = Some(failure);
            let backoff = Duration::from_secs(5)
                .saturating_mul(2u32.saturating_pow(n - 1))
                .min(interval);
            let backoff = match e.retry_after() {
                Some(ra) => ra.max(Duration::from_secs(1)),
                None => backoff,
            };
            jitter(backoff, 0.2)
        }
    };
    st.next_due = Some(Instant::now() + requeue);
    let applied = apply_mirrors(&ws, &ctx, &mut st).await;
    ctx.metrics
        .sync_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let status_result = write_workspace_status(&ws, &ctx, &st, true).await;
    store_state(&ctx, &k, st);
    applied?;
    status_result?;
    Ok(Action::requeue(requeue))
}

fn store_state(ctx: &Context, k: &str, st: WorkspaceState) {
    ctx.state.lock().unwrap().insert(k.to_string(), st);
}

/// Drops what is remembered about a workspace, and its metric series.
fn forget_key(ctx: &Context, k: &str) {
    let Some(st) = ctx.state.lock().unwrap().remove(k) else {
        return;
    };
    let (namespace, workspace) = k.split_once('/').unwrap_or(("", k));
    let labels = WorkspaceLabels {
        namespace: namespace.to_string(),
        workspace: workspace.to_string(),
    };
    ctx.metrics.last_success.remove(&labels);
    ctx.metrics.workspace_clusters.remove(&labels);
    ctx.metrics.workspace_ready.remove(&labels);
    ctx.metrics.sync_attempts.remove(&labels);
    ctx.metrics.sync_duration.remove(&labels);
    for (id, old) in &st.last_state {
        for s in states_for(old) {
            ctx.metrics.cluster_state.remove(&ClusterStateLabels {
                namespace: labels.namespace.clone(),
                workspace: labels.workspace.clone(),
                cluster_id: id.clone(),
                name: mirror::mirror_name(id),
                state: s,
            });
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
    let gone: Vec<String> = ctx
        .state
        .lock()
        .unwrap()
        .keys()
        .filter(|k| !live.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        debug!(workspace = %k, "workspace deleted; forgetting it");
        forget_key(ctx, &k);
    }
}

fn failure_from(
    st: &WorkspaceState,
    reason: &str,
    message: String,
    code: Option<String>,
    request_id: Option<String>,
) -> SyncFailure {
    let (since, n) = match &st.failure {
        Some(f) if f.reason == reason => (f.since.clone(), f.consecutive_failures + 1),
        Some(f) => (mirror::now_rfc3339(), f.consecutive_failures + 1),
        None => (mirror::now_rfc3339(), 1),
    };
    SyncFailure {
        reason: reason.to_string(),
        message,
        code,
        request_id,
        since,
        consecutive_failures: n,
    }
}

fn current_secret_version(ws: &EmrWorkspace, ctx: &Context) -> Option<String> {
    let sr = ws.spec.credentials.secret_ref.as_ref()?;
    let ns = ws.namespace().unwrap_or_default();
    ctx.secrets
        .get(&ObjectRef::new(&sr.name).within(&ns))
        .and_then(|s| s.resource_version())
}

fn by_id(clusters: Vec<RayCluster>) -> BTreeMap<String, RayCluster> {
    clusters
        .into_iter()
        .map(|c| (c.cluster_id.clone(), c))
        .collect()
}

/// Lists the workspace, and says whether the listing ended exactly on a page boundary (a full
/// page followed by an empty one). The API has no total count, so such a listing cannot be told
/// apart from one that a faulty server cut short: removals seen in it are not trusted.
async fn list_checked(
    ws: &EmrWorkspace,
    ctx: &Context,
) -> Result<(BTreeMap<String, RayCluster>, bool), SyncError> {
    let clusters = list_remote(ws, ctx).await?;
    let page = ctx.emr.config().page_size.max(1) as usize;
    let on_boundary = !clusters.is_empty() && clusters.len() % page == 0;
    Ok((by_id(clusters), on_boundary))
}

/// Resolves credentials and the endpoint, then lists the workspace.
async fn list_remote(ws: &EmrWorkspace, ctx: &Context) -> Result<Vec<RayCluster>, SyncError> {
    let creds = resolve_credentials(ws, ctx).await?;
    let endpoint = crate::emr::endpoint::resolve(
        &ws.spec.region_id,
        ws.spec.network == EndpointNetwork::Vpc,
        ws.spec.endpoint.as_deref(),
    )?;
    let listing = tokio::time::timeout(
        ctx.listing_timeout + Duration::from_secs(5),
        ctx.emr
            .list_ray_clusters(&endpoint, &ws.spec.workspace_id, &creds),
    )
    .await
    .map_err(|_| EmrError {
        kind: crate::emr::ErrorKind::Timeout,
        code: None,
        message: format!(
            "listing did not finish within {}s",
            ctx.listing_timeout.as_secs()
        ),
        request_id: None,
        http_status: None,
        retry_after: None,
    })??;
    debug!(workspace = %key(ws), clusters = listing.clusters.len(), requests = listing.requests, "listed");
    Ok(listing.clusters)
}

async fn resolve_credentials(ws: &EmrWorkspace, ctx: &Context) -> Result<Credentials, SyncError> {
    let c = &ws.spec.credentials;
    if let Some(sr) = &c.secret_ref {
        let ns = ws.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let secret = match api.get_opt(&sr.name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(SyncError::local(
                    "SecretNotFound",
                    format!("Secret {ns}/{} does not exist", sr.name),
                ));
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(SyncError::local(
                    "CredentialsUnavailable",
                    format!(
                        "the operator may not read Secret {ns}/{}: {}",
                        sr.name, s.message
                    ),
                ));
            }
            Err(e) => {
                return Err(SyncError::local(
                    "CredentialsUnavailable",
                    format!("reading Secret {ns}/{} failed: {e}", sr.name),
                ));
            }
        };
        let data = secret.data.unwrap_or_default();
        let get = |k: &str| -> Option<String> {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let id = get(sr.id_key()).ok_or_else(|| {
            SyncError::local(
                "SecretKeyMissing",
                format!(
                    "Secret {ns}/{} has no non-empty key {:?} (the AccessKey ID)",
                    sr.name,
                    sr.id_key()
                ),
            )
        })?;
        let secret_value = get(sr.secret_key()).ok_or_else(|| {
            SyncError::local(
                "SecretKeyMissing",
                format!(
                    "Secret {ns}/{} has no non-empty key {:?} (the AccessKey secret)",
                    sr.name,
                    sr.secret_key()
                ),
            )
        })?;
        let token = get(sr.token_key());
        return Ok(Credentials {
            access_key_id: id,
            access_key_secret: SecretString::from(secret_value),
            security_token: token.map(SecretString::from),
        });
    }
    let source = if let Some(r) = &c.rrsa {
        let mut cfg = RrsaConfig::from_env().unwrap_or_else(|_| RrsaConfig {
            role_arn: String::new(),
            oidc_provider_arn: String::new(),
            token_file: Default::default(),
            session_name: "emr-ray-operator".to_string(),
            sts_endpoint: None,
            duration_seconds: 3600,
        });
        if let Some(v) = &r.role_arn {
            cfg.role_arn = v.clone();
        }
        if let Some(v) = &r.oidc_provider_arn {
            cfg.oidc_provider_arn = v.clone();
        }
        if let Some(v) = &r.oidc_token_file_path {
            cfg.token_file = v.into();
        }
        if let Some(v) = &r.session_name {
            cfg.session_name = v.clone();
        }
        if cfg.role_arn.is_empty()
            || cfg.oidc_provider_arn.is_empty()
            || cfg.token_file.as_os_str().is_empty()
        {
            return Err(SyncError::local(
                "CredentialsUnavailable",
                "RRSA needs roleArn, oidcProviderArn and oidcTokenFilePath (in the spec or the operator's ALIBABA_CLOUD_* environment)".to_string(),
            ));
        }
        CredentialSource::Rrsa(cfg)
    } else {
        CredentialSource::Environment
    };
    Ok(ctx.credentials.resolve(&source).await?)
}

/// Writes the mirrors so that they match the last listing; deletes (or marks gone) mirrors
/// missing from it only when the latest attempt was a complete success.
async fn apply_mirrors(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
) -> Result<(), Error> {
    let ns = ws.namespace().unwrap_or_default();
    let ws_uid = ws.uid().unwrap_or_default();
    let existing = ctx.current_mirrors(&ns, &ws_uid);
    let stale = st
        .failure
        .as_ref()
        .map(|f| Staleness::from_failure(f, st.last_success.as_deref()));
    let now = mirror::now_rfc3339();
    let api: Api<EmrRayCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = OwnerReference {
        api_version: EmrWorkspace::api_version(&()).to_string(),
        kind: EmrWorkspace::kind(&()).to_string(),
        name: ws.name_any(),
        uid: ws_uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };

    let mut jobs: Vec<MirrorJob> = Vec::new();
    if let Some(listing) = st.listing.clone() {
        for (id, cluster) in listing.iter() {
            let prev = existing.get(id).cloned();
            let mut desired = mirror::remote_status(cluster);
            let prev_status = prev.as_ref().and_then(|p| p.status.clone());
            let prev_conds = prev_status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let generation = prev.as_ref().and_then(|p| p.meta().generation).or(Some(1));
            desired.observed_generation = generation;
            desired.conditions =
                mirror::mirror_conditions(&desired, &prev_conds, generation, stale.as_ref(), &now);
            jobs.push(MirrorJob {
                name: mirror::mirror_name(id),
                cluster_id: id.clone(),
                prev,
                desired: Some(desired),
                delete: false,
            });
        }
    }
    // Mirrors that the last listing does not contain.
    let complete_and_current = st.failure.is_none() && st.listing.is_some();
    let unconfirmed = Staleness {
        reason: "RemovalUnconfirmed".to_string(),
        message: "not in the last listing, which ended exactly on a page boundary and may have \
                  been cut short; kept until a listing that ends on a short page confirms the \
                  removal"
            .to_string(),
    };
    // Keeps a mirror's last known data, with conditions saying whether it is gone or stale.
    let keep = |m: &Arc<EmrRayCluster>, id: &str, gone: bool, staleness: Option<&Staleness>| {
        let mut desired = m.status.clone().unwrap_or_default();
        desired.gone = desired.gone || gone;
        let prev_conds = desired.conditions.clone();
        desired.conditions =
            mirror::mirror_conditions(&desired, &prev_conds, m.meta().generation, staleness, &now);
        MirrorJob {
            name: m.name_any(),
            cluster_id: id.to_string(),
            prev: Some(m.clone()),
            desired: Some(desired),
            delete: false,
        }
    };
    for (id, m) in &existing {
        if st.listing.as_ref().is_some_and(|l| l.contains_key(id)) {
            continue;
        }
        if complete_and_current && st.listing_on_boundary {
            jobs.push(keep(m, id, false, Some(&unconfirmed)));
        } else if complete_and_current {
            if ws.spec.gone_cluster_policy == GoneClusterPolicy::Delete {
                jobs.push(MirrorJob {
                    name: m.name_any(),
                    cluster_id: id.clone(),
                    prev: Some(m.clone()),
                    desired: None,
                    delete: true,
                });
            } else {
                jobs.push(keep(m, id, true, None));
            }
        } else if let Some(s) = &stale {
            // No trustworthy listing: keep the last known status, only say it is stale.
            jobs.push(keep(m, id, false, Some(s)));
        }
    }

    // A name held by a mirror of another workspace (two EmrWorkspaces of one namespace listing
    // the same remote clusters): leave it alone instead of failing the apply on every retry.
    let mut conflicts = Vec::new();
    jobs.retain(|j| {
        if j.prev.is_some() {
            return true;
        }
        let other = ctx
            .mirrors
            .get(&ObjectRef::new(&j.name).within(&ns))
            .filter(|m| {
                m.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid != ws_uid)
            });
        match other {
            Some(m) => {
                conflicts.push(format!("{} (owned by {})", j.name, m.spec.workspace_ref));
                false
            }
            None => true,
        }
    });
    if !conflicts.is_empty() {
        conflicts.sort();
        warn!(workspace = %key(ws), ?conflicts, "mirror names held by another workspace");
        publish(
            ctx,
            &ws.object_ref(&()),
            EventType::Warning,
            "MirrorNameConflict",
            format!(
                "{} cluster(s) are already mirrored by another EmrWorkspace in this namespace \
                 (the same remote workspace twice?): {}",
                conflicts.len(),
                conflicts.join(", ")
            ),
        )
        .await;
    }

    // Metrics for the listing.
    update_state_metrics(ws, ctx, st);

    let events_budget =
        jobs.iter().filter(|j| j.prev.is_none() || j.delete).count() <= MAX_MIRROR_EVENTS_PER_SYNC;
    let spec = |cluster_id: &str| EmrRayClusterSpec {
        workspace_ref: ws.name_any(),
        workspace_id: ws.spec.workspace_id.clone(),
        region_id: ws.spec.region_id.clone(),
        cluster_id: cluster_id.to_string(),
    };
    let results: Vec<Result<Outcome, Error>> = futures::stream::iter(jobs)
        .map(|job| {
            let api = api.clone();
            let owner = owner.clone();
            let desired_spec = spec(&job.cluster_id);
            async move { apply_one(ctx, &api, ws, owner, desired_spec, job, events_budget).await }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut created = 0;
    let mut deleted = 0;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(Outcome::Created) => created += 1,
            Ok(Outcome::Deleted) => deleted += 1,
            Ok(_) => {}
            Err(e) => {
                warn!(workspace = %key(ws), error = %e, "writing a mirror failed");
                first_err.get_or_insert(e);
            }
        }
    }
    if created + deleted > 0 && !events_budget {
        publish(
            ctx,
            &ws.object_ref(&()),
            EventType::Normal,
            "MirrorsSynced",
            format!("created {created} and deleted {deleted} EmrRayCluster mirrors"),
        )
        .await;
    }
    if created + deleted > 0 {
        info!(workspace = %key(ws), created, deleted, "mirrors updated");
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct MirrorJob {
    name: String,
    cluster_id: String,
    prev: Option<Arc<EmrRayCluster>>,
    desired: Option<EmrRayClusterStatus>,
    delete: bool,
}

enum Outcome {
    Unchanged,
    Created,
    Updated,
    Deleted,
}

fn desired_labels(ws: &EmrWorkspace, cluster_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_WORKSPACE.to_string(),
            mirror::label_value(&ws.name_any()),
        ),
        (
            LABEL_WORKSPACE_ID.to_string(),
            mirror::label_value(&ws.spec.workspace_id),
        ),
        (
            LABEL_CLUSTER_ID.to_string(),
            mirror::label_value(cluster_id),
        ),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ])
}

async fn apply_one(
    ctx: &Context,
    api: &Api<EmrRayCluster>,
    ws: &EmrWorkspace,
    owner: OwnerReference,
    spec: EmrRayClusterSpec,
    job: MirrorJob,
    events: bool,
) -> Result<Outcome, Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if job.delete {
        match api.delete(&job.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Outcome::Unchanged),
            Err(e) => return Err(e.into()),
        }
        ctx.metrics.count_write("emrrayclusters", "delete");
        ctx.record_write(&ws.namespace().unwrap_or_default(), &job.name, None);
        remove_state_metric(ctx, ws, &job.cluster_id);
        if events {
            publish(
                ctx,
                &ws.object_ref(&()),
                EventType::Normal,
                "MirrorDeleted",
                format!(
                    "deleted EmrRayCluster {}: remote cluster {} is no longer listed",
                    job.name, job.cluster_id
                ),
            )
            .await;
        }
        return Ok(Outcome::Deleted);
    }
    let Some(desired) = job.desired else {
        return Ok(Outcome::Unchanged);
    };
    let labels = desired_labels(ws, &job.cluster_id);
    let meta_ok = job.prev.as_ref().is_some_and(|p| {
        p.spec == spec
            && labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))
            && p.annotations().get(ANNOTATION_CLUSTER_ID) == Some(&job.cluster_id)
            && p.owner_references()
                .iter()
                .any(|o| o.uid == owner.uid && o.controller == Some(true))
    });
    let mut outcome = Outcome::Unchanged;
    let mut object_ref = job.prev.as_ref().map(|p| p.object_ref(&()));
    if !meta_ok {
        let obj = json!({
            "apiVersion": EmrRayCluster::api_version(&()),
            "kind": EmrRayCluster::kind(&()),
            "metadata": {
                "name": job.name,
                "labels": labels,
                "annotations": { ANNOTATION_CLUSTER_ID: job.cluster_id },
                "ownerReferences": [owner],
            },
            "spec": spec,
        });
        let res = api.patch(&job.name, &pp, &Patch::Apply(&obj)).await?;
        ctx.metrics.count_write("emrrayclusters", "apply");
        ctx.record_write(
            &ws.namespace().unwrap_or_default(),
            &job.name,
            Some(res.clone()),
        );
        object_ref = Some(res.object_ref(&()));
        outcome = if job.prev.is_none() {
            Outcome::Created
        } else {
            Outcome::Updated
        };
    }
    let prev_status = job.prev.as_ref().and_then(|p| p.status.as_ref());
    // A freshly created object has no status yet; otherwise write only on a difference.
    if !matches!(outcome, Outcome::Created) && prev_status == Some(&desired) {
        return Ok(outcome);
    }
    let obj = json!({
        "apiVersion": EmrRayCluster::api_version(&()),
        "kind": EmrRayCluster::kind(&()),
        "metadata": { "name": job.name },
        "status": desired,
    });
    let res = api
        .patch_status(&job.name, &pp, &Patch::Apply(&obj))
        .await?;
    ctx.metrics.count_write("emrrayclusters", "apply-status");
    // Like the apply above: until the watch delivers this status, a reconcile must not take
    // the store's older object for the current one and write the status again (with a new
    // lastTransitionTime).
    ctx.record_write(&ws.namespace().unwrap_or_default(), &job.name, Some(res));

    // Events.
    if let Some(r) = &object_ref {
        let old_state = prev_status.and_then(|s| s.state.clone());
        if matches!(outcome, Outcome::Created) {
            if events {
                publish(
                    ctx,
                    r,
                    EventType::Normal,
                    "Created",
                    format!(
                        "mirroring remote Ray cluster {} ({})",
                        job.cluster_id,
                        desired.state.as_deref().unwrap_or("state unknown")
                    ),
                )
                .await;
            }
        } else if old_state != desired.state {
            let to = desired.state.clone().unwrap_or_else(|| "Unknown".into());
            let kind = if to == "Error" {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let mut note = format!(
                "state changed from {} to {to}",
                old_state.as_deref().unwrap_or("Unknown")
            );
            if to == "Error"
                && let Some(m) = desired.message.as_deref().filter(|m| !m.is_empty())
            {
                note.push_str(": ");
                note.push_str(m);
            }
            publish(ctx, r, kind, "StateChanged", note).await;
        } else if !prev_status.is_some_and(|p| p.gone) && desired.gone {
            publish(
                ctx,
                r,
                EventType::Warning,
                "RemoteClusterGone",
                "the remote Ray cluster is no longer listed; kept because goneClusterPolicy is Keep"
                    .to_string(),
            )
            .await;
        }
    }
    Ok(match outcome {
        Outcome::Created => Outcome::Created,
        _ => Outcome::Updated,
    })
}

fn update_state_metrics(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
    let Some(listing) = &st.listing else { return };
    let ns = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    for (id, c) in listing.iter() {
        let state = c
            .state
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "Unknown".into());
        current.insert(id.clone(), state);
    }
    // Drop the series of clusters that are gone or changed state.
    for (id, old) in &st.last_state {
        if current.get(id) != Some(old) {
            for s in states_for(old) {
                ctx.metrics.cluster_state.remove(&ClusterStateLabels {
                    namespace: ns.clone(),
                    workspace: name.clone(),
                    cluster_id: id.clone(),
                    name: mirror::mirror_name(id),
                    state: s,
                });
            }
        }
    }
    for (id, state) in &current {
        if st.last_state.get(id) == Some(state) {
            continue;
        }
        for s in states_for(state) {
            ctx.metrics
                .cluster_state
                .get_or_create(&ClusterStateLabels {
                    namespace: ns.clone(),
                    workspace: name.clone(),
                    cluster_id: id.clone(),
                    name: mirror::mirror_name(id),
                    state: s.clone(),
                })
                .set(i64::from(&s == state));
        }
    }
    st.last_state = current;
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

fn remove_state_metric(ctx: &Context, ws: &EmrWorkspace, cluster_id: &str) {
    let ns = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let mut map = ctx.state.lock().unwrap();
    if let Some(st) = map.get_mut(&key(ws))
        && let Some(old) = st.last_state.remove(cluster_id)
    {
        for s in states_for(&old) {
            ctx.metrics.cluster_state.remove(&ClusterStateLabels {
                namespace: ns.clone(),
                workspace: name.clone(),
                cluster_id: cluster_id.to_string(),
                name: mirror::mirror_name(cluster_id),
                state: s,
            });
        }
    }
}

/// Builds and writes the workspace status (at most once per call, only when it differs).
async fn write_workspace_status(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &WorkspaceState,
    attempted: bool,
) -> Result<(), Error> {
    let prev = ws.status.clone().unwrap_or_default();
    let generation = ws.meta().generation;
    let now = mirror::now_rfc3339();
    let mut s = EmrWorkspaceStatus {
        observed_generation: generation,
        last_sync_attempt_time: if attempted {
            Some(now.clone())
        } else {
            prev.last_sync_attempt_time.clone()
        },
        last_successful_sync_time: st
            .last_success
            .clone()
            .or(prev.last_successful_sync_time.clone()),
        endpoint: crate::emr::endpoint::resolve(
            &ws.spec.region_id,
            ws.spec.network == EndpointNetwork::Vpc,
            ws.spec.endpoint.as_deref(),
        )
        .ok()
        .map(|u| u.to_string()),
        last_failure: st.failure.clone(),
        sync_interval: effective_interval(ws, ctx)
            .map(|d| format_duration(d.max(MIN_SYNC_INTERVAL))),
        ..Default::default()
    };
    if let Some(l) = &st.listing {
        s.clusters = Some(l.len() as i64);
        for c in l.values() {
            let state = c
                .state
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "Unknown".into());
            *s.clusters_by_state.entry(state).or_default() += 1;
        }
        s.ready_clusters = Some(s.clusters_by_state.get("Running").copied().unwrap_or(0));
    } else {
        s.clusters = prev.clusters;
        s.ready_clusters = prev.ready_clusters;
        s.clusters_by_state = prev.clusters_by_state.clone();
    }
    let c = &prev.conditions;
    let mut conds = Vec::new();
    if ws.spec.suspend {
        conds.push(mirror::condition(
            c,
            "Ready",
            false,
            "Suspended",
            "syncing is suspended (spec.suspend); mirrors are kept as they are".into(),
            generation,
            &now,
        ));
    } else if let Some(f) = &st.failure {
        let mut msg = f.message.clone();
        if st.listing.is_some() {
            msg.push_str(&format!(
                "; mirrors keep the data of the last successful listing ({})",
                s.last_successful_sync_time.as_deref().unwrap_or("unknown")
            ));
        }
        conds.push(mirror::condition(
            c,
            "Ready",
            false,
            &f.reason,
            msg.clone(),
            generation,
            &now,
        ));
        if is_stalling(&f.reason) {
            conds.push(mirror::condition(
                c, "Stalled", true, &f.reason, msg, generation, &now,
            ));
        } else {
            conds.push(mirror::condition(
                c,
                "Reconciling",
                true,
                "RetryingAfterError",
                format!("retrying after {}: {}", f.reason, f.message),
                generation,
                &now,
            ));
        }
    } else if st.listing.is_some() {
        let n = s.clusters.unwrap_or(0);
        conds.push(mirror::condition(
            c,
            "Ready",
            true,
            "Synced",
            format!("{n} Ray cluster(s) mirrored"),
            generation,
            &now,
        ));
    } else {
        conds.push(mirror::condition(
            c,
            "Ready",
            false,
            "Pending",
            "waiting for the first listing".into(),
            generation,
            &now,
        ));
        conds.push(mirror::condition(
            c,
            "Reconciling",
            true,
            "Pending",
            "waiting for the first listing".into(),
            generation,
            &now,
        ));
    }
    s.conditions = conds;

    let labels = WorkspaceLabels {
        namespace: ws.namespace().unwrap_or_default(),
        workspace: ws.name_any(),
    };
    ctx.metrics
        .workspace_clusters
        .get_or_create(&labels)
        .set(s.clusters.unwrap_or(0));
    ctx.metrics
        .workspace_ready
        .get_or_create(&labels)
        .set(i64::from(
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
        ));

    if s == prev {
        return Ok(());
    }
    let api: Api<EmrWorkspace> =
        Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    let obj = json!({
        "apiVersion": EmrWorkspace::api_version(&()),
        "kind": EmrWorkspace::kind(&()),
        "metadata": { "name": ws.name_any() },
        "status": s,
    });
    match api
        .patch_status(
            &ws.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
    {
        Ok(_) => {}
        // The workspace was deleted meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    ctx.metrics.count_write("emrworkspaces", "apply-status");
    Ok(())
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note, 1024)),
        action: "Sync".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        debug!(error = %e, "publishing an event failed");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub fn error_policy(_ws: Arc<EmrWorkspace>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(jitter(Duration::from_secs(5), 0.5))
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn stalling_reasons() {
        assert!(is_stalling("AuthenticationFailed"));
        assert!(is_stalling("SecretNotFound"));
        assert!(!is_stalling("Throttled"));
        assert!(!is_stalling("RemoteUnavailable"));
    }
}
