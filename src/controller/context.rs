//! What the reconciler is handed: the operator-wide [`Settings`] and the shared [`Context`].

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;

use super::apply::WriteLimiter;
use super::cache::MirrorCache;
use super::shard;
use super::state::WorkspaceStates;
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

/// Everything the reconciler needs, shared by all workspaces of one controller, in four parts:
/// the Kubernetes side, the EMR side, what the reconciler reads and remembers, and its
/// settings.
///
/// Locks (eleven, each with one owner): four maps in [`Caches`], six in the mirror cache (whose
/// order is written in [`super::cache`]) and the shard's namespace set
/// ([`super::shard::ShardNamespaces`]). [`Caches`]' maps and the shard's set are each taken
/// alone — never while another lock is held — and none is held across an `.await`.
pub struct Context {
    pub kube: Kube,
    pub remote: Remote,
    pub caches: Caches,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Cancelled when this replica stops leading: in-flight reconciles stop writing at once.
    pub stop: CancellationToken,
}

/// The Kubernetes side: the client, the Event recorder and the operator-wide write budget.
pub struct Kube {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub write_limiter: WriteLimiter,
}

/// The EMR side: the OpenAPI client and the credential resolver (with its STS cache).
pub struct Remote {
    pub emr: EmrClient,
    pub credentials: CredentialResolver,
}

/// What the reconciler reads and remembers between reconciles.
pub struct Caches {
    /// The workspaces' mirrors (the watch-fed store and the overlay of our writes).
    pub mirrors: MirrorCache,
    /// Every watched workspace (to find duplicates).
    pub workspaces: Store<EmrWorkspace>,
    /// Set once `workspaces` has its first complete list.
    pub workspaces_ready: super::lifecycle::Readiness,
    /// Per workspace: the last listing, the schedule, the failure and the write backoff.
    pub(super) states: WorkspaceStates,
    /// Per namespace: the listings it may run at once.
    pub(super) namespace_slots: super::slots::NamespaceSlots,
    /// Consecutive reconcile errors per workspace, for `error_policy`'s backoff.
    pub(super) errors: Mutex<HashMap<String, u32>>,
    /// UIDs of workspaces that left the watch (deleted), and when: a reconcile still in flight
    /// writes nothing more for them. Kept for `DEPARTED_TTL`.
    pub(super) departed: Mutex<HashMap<String, Instant>>,
    /// A workspace left this controller since the last pass over the job mirrors: its job
    /// mirrors may have been orphaned (see [`super::orphans::JobOrphans`]).
    pub(super) job_orphans_due: AtomicBool,
}

impl Caches {
    /// The caches of a controller: its mirror cache and workspace store (with its readiness);
    /// `listings_per_namespace` bounds each namespace's listings at once.
    pub fn new(
        mirrors: MirrorCache,
        workspaces: Store<EmrWorkspace>,
        workspaces_ready: super::lifecycle::Readiness,
        listings_per_namespace: usize,
    ) -> Self {
        Caches {
            mirrors,
            workspaces,
            workspaces_ready,
            states: WorkspaceStates::default(),
            namespace_slots: super::slots::NamespaceSlots::new(listings_per_namespace),
            errors: Mutex::default(),
            departed: Mutex::default(),
            job_orphans_due: AtomicBool::new(false),
        }
    }

    /// Where a workspace waiting for its namespace's listing slot is woken when one frees
    /// (the controller's `reconcile_on` stream).
    pub fn wake_slot_waiters_with(
        &self,
        wake: futures::channel::mpsc::UnboundedSender<super::slots::Waiter>,
    ) {
        self.namespace_slots.wake_with(wake);
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
