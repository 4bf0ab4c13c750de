//! What the reconciler is handed: the operator-wide [`Settings`] and the shared [`Context`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;

use super::apply::WriteLimiter;
use super::cache::MirrorCache;
use super::shard;
use super::state::{self, WorkspaceStates};
use crate::api::{EmrWorkspace, Interval};
use crate::emr::{CredentialResolver, EmrClient};
use crate::metrics::{Metrics, WorkspaceLabels};

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
    /// Set once `workspaces` has its first complete list.
    pub workspaces_ready: super::lifecycle::Readiness,
    pub settings: Settings,
    pub write_limiter: WriteLimiter,
    /// Cancelled when this replica stops leading: in-flight reconciles stop writing at once.
    pub stop: CancellationToken,
    pub(super) states: WorkspaceStates,
    /// Per namespace: the listings it may run at once.
    pub(super) namespace_slots: state::NamespaceSlots,
    /// Consecutive reconcile errors per workspace, for [`error_policy`]'s backoff.
    pub(super) errors: Mutex<HashMap<String, u32>>,
    /// UIDs of workspaces that left the watch (deleted), and when: a reconcile still in flight
    /// writes nothing more for them. Kept for [`DEPARTED_TTL`].
    pub(super) departed: Mutex<HashMap<String, Instant>>,
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
            workspaces_ready: super::lifecycle::Readiness::default(),
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

/// `namespace/name` of a workspace: the key of what is remembered about it.
pub(super) fn key(ws: &EmrWorkspace) -> String {
    format!("{}/{}", ws.namespace().unwrap_or_default(), ws.name_any())
}

/// The metric labels of a workspace's series.
pub(super) fn labels(ws: &EmrWorkspace) -> WorkspaceLabels {
    WorkspaceLabels {
        namespace: ws.namespace().unwrap_or_default(),
        workspace: ws.name_any(),
    }
}
