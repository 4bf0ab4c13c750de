//! The reconciler: one `EmrWorkspace` in, read-only `EmrRayCluster` (and `EmrRayJob`) mirrors
//! out. [`reconcile()`] reads top to bottom (see its file): guards, spec, listing, diagnosis,
//! mirrors, status, requeue — each step in the file its name gives:
//!
//! * [`reconcile`](mod@reconcile) — the flow and [`error_policy`]; [`decide`] — every decision
//!   of it, pure and table-tested;
//! * [`listing`] — the remote listing and the diagnosis of unhealthy clusters;
//!   [`credentials`] — a workspace's access key;
//! * [`write`](mod@write) — the mirror writes and the status write; [`plan`] decides the mirror writes and
//!   [`status`] the workspace status (pure); [`apply`] performs writes, Events and write
//!   metrics; [`mirror`] turns a remote cluster into a mirror's status (pure); [`jobs`] the job
//!   mirrors; [`queues`], `series` the queue and cluster metric series;
//! * [`context`] — the shared [`Context`] and [`Settings`]; [`error`] — [`Error`], [`SyncError`];
//!   [`lifecycle`] — workspaces that leave this replica;
//! * [`state`] — what is remembered per workspace between reconciles; [`cache`] — the compact
//!   record of each mirror the watch reports (a digest of its status, not the status) and the
//!   overlay of our own writes; [`shard`] — the namespaces a sharded replica serves;
//!   [`orphans`] — mirrors left without an owner.
//!
//! Each workspace is listed remotely every `syncInterval` (with jitter). Of the last complete
//! listing only the clusters' identities, states and digests are kept, so a mirror deleted or
//! edited on the Kubernetes side is repaired from a listing made for it at once (at most every
//! 5 s a workspace; it counts as the interval's listing). Writes the API server refuses are
//! backed off per workspace and reported in status; each retry lists the workspace the same way,
//! so that the listings stay about one per interval once the backoff reaches it.

pub mod apply;
pub mod cache;
pub mod context;
pub mod credentials;
pub mod decide;
pub mod diagnose;
pub mod error;
pub mod jobs;
pub mod lifecycle;
pub mod listing;
pub mod mirror;
pub mod orphans;
pub mod plan;
pub mod queues;
pub mod reconcile;
mod series;
pub mod shard;
pub mod slots;
pub mod state;
pub mod status;
pub mod write;

pub use context::{Context, Settings};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every value the
/// reconciler guards is valid after any partial update (maps of independent entries, counters).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub use decide::effective_interval;
pub use error::{Error, SyncError};
pub use lifecycle::{Readiness, forget, namespace_left, prune_deleted};
pub use reconcile::{error_policy, reconcile};
