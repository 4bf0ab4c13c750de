//! What the operator remembers between reconciles, as types with their invariants:
//!
//! * [`WorkspaceStates`]: per workspace, the last complete listing (the clusters' identities,
//!   states and digests), the schedule, the failure being reported and the write backoff;
//! * [`MirrorCache`](super::cache::MirrorCache): a workspace's mirrors as the watch-fed store has them, rescanned only when
//!   the watch reported a change, and overlaid with our own writes until the store catches up.
//!
//! `resourceVersion`s are opaque: they are only ever compared for equality.
//!
//! (Over 500 lines: four small caches with their invariants; about a third is unit tests.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use crate::api::{Reason, SyncFailure, WriteFailure, WriteRefusal};
use crate::emr::{ClusterState, RayCluster};

/// A complete, successful listing of one workspace, as kept between reconciles: per cluster its
/// ID, its state and a digest of the cluster as listed (≈0.1 KiB), never the cluster itself.
///
/// The clusters of a listing decoded in a reconcile ([`Decoded`]) are handed to that
/// reconcile's plan and dropped with it. A plan needed later (a mirror edited or deleted by
/// hand, an owner change) lists the workspace again (see `reconcile::sync`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    /// Clusters by ID.
    clusters: BTreeMap<String, Listed>,
    /// The listing ended on a full page followed by an empty one. The API has no total count, so
    /// it cannot be told apart from a listing a faulty server cut short: removals seen in it
    /// are not trusted.
    pub on_page_boundary: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Listed {
    state: Option<ClusterState>,
    /// [`cluster_digest`] of the cluster as listed.
    digest: u64,
}

/// The clusters of a listing decoded in this reconcile, by ID (in ID order): what a plan reads
/// of the remote side. Never kept past the reconcile.
pub type Decoded = BTreeMap<String, RayCluster>;

/// A digest of a cluster as listed: equal digests, the listing gave the same cluster (its JSON,
/// field for field). Only ever compared within one process.
fn cluster_digest(c: &RayCluster) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    // Serializing a decoded model cannot fail; were it to, the ID and state still count.
    serde_json::to_vec(c).unwrap_or_default().hash(&mut h);
    c.cluster_id.hash(&mut h);
    c.state.as_ref().map(ClusterState::as_str).hash(&mut h);
    h.finish()
}

impl Listing {
    /// The listing of `clusters` (the clusters themselves are dropped: see [`Self::decoded`]).
    pub fn new(clusters: Vec<RayCluster>, page_size: usize) -> Self {
        Self::decoded(clusters, page_size).0
    }

    /// The listing of `clusters`, and the clusters by ID for this reconcile's plan.
    pub fn decoded(clusters: Vec<RayCluster>, page_size: usize) -> (Self, Decoded) {
        let on_page_boundary =
            !clusters.is_empty() && clusters.len().is_multiple_of(page_size.max(1));
        let decoded: Decoded = clusters
            .into_iter()
            .map(|c| (c.cluster_id.clone(), c))
            .collect();
        let listing = Listing {
            clusters: decoded
                .iter()
                .map(|(id, c)| {
                    let listed = Listed {
                        state: c.state.clone(),
                        digest: cluster_digest(c),
                    };
                    (id.clone(), listed)
                })
                .collect(),
            on_page_boundary,
        };
        (listing, decoded)
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.clusters.contains_key(id)
    }

    /// The cluster IDs, in order.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.clusters.keys()
    }

    /// Each cluster's ID and state (`None`: the listing did not say), in ID order.
    pub fn states(&self) -> impl Iterator<Item = (&String, Option<&ClusterState>)> {
        self.clusters.iter().map(|(id, c)| (id, c.state.as_ref()))
    }

    /// A digest of cluster `id` as listed (equal digests: the listing gave the same cluster).
    pub fn digest(&self, id: &str) -> Option<u64> {
        self.clusters.get(id).map(|c| c.digest)
    }
}

/// A sync failure as remembered (the status shows it as [`SyncFailure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    pub code: Option<String>,
    pub request_id: Option<String>,
    /// RFC 3339: when this reason was first seen.
    pub since: String,
    pub consecutive: i64,
    /// It came from a remote call (the EMR API or STS): a requested sync waits for its
    /// backoff (see `decide::called_the_remote`).
    pub called_remote: bool,
}

impl Failure {
    /// The next failure after `previous` (same reason: same `since`).
    pub fn next(
        previous: Option<&Failure>,
        reason: Reason,
        message: String,
        code: Option<String>,
        request_id: Option<String>,
        now: &str,
    ) -> Self {
        let (since, consecutive) = match previous {
            Some(f) if f.reason == reason => (f.since.clone(), f.consecutive.saturating_add(1)),
            Some(f) => (now.to_string(), f.consecutive.saturating_add(1)),
            None => (now.to_string(), 1),
        };
        Failure {
            reason,
            message,
            code,
            request_id,
            since,
            consecutive,
            called_remote: false,
        }
    }

    pub fn to_status(&self) -> SyncFailure {
        SyncFailure {
            reason: self.reason.to_string(),
            message: self.message.clone(),
            code: self.code.clone(),
            request_id: self.request_id.clone(),
            since: self.since.clone(),
            consecutive_failures: self.consecutive,
        }
    }
}

/// Refused mirror writes of the last write pass, and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteTrouble {
    pub refusal: WriteRefusal,
    /// The first refusal, with the mirror it concerns.
    pub message: String,
    pub mirrors: usize,
    pub failed: usize,
    pub since: String,
    pub consecutive: u32,
    /// No mirror write before this (per-workspace backoff).
    pub retry_at: Instant,
    /// Mirrors whose last write was refused: tried last, so that others are not held up.
    pub refused: HashSet<String>,
}

impl WriteTrouble {
    /// Whether the refusal needs a person (RBAC, policy, invalid or oversized object).
    pub fn is_permanent(&self) -> bool {
        self.refusal.is_permanent()
    }

    pub fn to_status(&self) -> WriteFailure {
        WriteFailure {
            reason: self.refusal.to_string(),
            message: self.message.clone(),
            mirrors: self.mirrors as i64,
            failed: self.failed as i64,
            since: self.since.clone(),
            consecutive_failures: i64::from(self.consecutive),
        }
    }

    /// Backoff after the `n`-th consecutive failed write pass: 5 s doubling up to `cap`, or the
    /// API server's `Retry-After` when it asked for longer.
    pub fn backoff(n: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
        crate::backoff::exponential(n, Duration::from_secs(5), cap)
            .max(retry_after.unwrap_or_default().min(cap))
    }
}

/// What the operator remembers about one workspace between reconciles.
#[derive(Clone, Debug, Default)]
pub struct WorkspaceState {
    /// The workspace object this state belongs to; a new UID (deleted and re-created) resets it.
    pub uid: String,
    /// The last complete listing.
    pub listing: Option<Arc<Listing>>,
    /// The page digests of the last complete listing (pages found unchanged by them are not
    /// decoded: `listing` stands).
    pub page_digests: Option<crate::emr::PageDigests>,
    /// RFC 3339 time of the last complete listing.
    pub last_success: Option<String>,
    /// RFC 3339 time of the last listing attempt (kept here, not read back from the cached
    /// object, which may lag behind our own status writes).
    pub last_attempt: Option<String>,
    /// When the next remote listing is due.
    pub next_due: Option<Instant>,
    /// Generation of the spec the last listing was made for.
    pub synced_generation: Option<i64>,
    /// The failure of the latest listing attempt, `None` after a success.
    pub failure: Option<Failure>,
    /// Refused mirror writes of the latest write pass, `None` once every write succeeded.
    pub write_trouble: Option<WriteTrouble>,
    /// The last `requestedAt` annotation value a listing was run for.
    pub handled_request: Option<String>,
    /// A listing was due and its namespace had no slot free: it is still due when the
    /// workspace is woken (a slot freed) or its fallback timer fires.
    pub waiting_for_slot: bool,
    /// The state of each listed cluster, as exported in the `cluster_state` metric.
    pub exported_states: Arc<crate::metrics::ClusterStateMap>,
    /// Sharded replicas: the workspace's mirrors labelled for another shard have been looked
    /// up (once after its namespace joined this replica's shard) and taken into the plan.
    pub adopted: bool,
    /// What the last plan left the mirrors as, when it had nothing more to do (every write
    /// succeeded, nothing refused).
    pub settled: Option<Settled>,
    /// When the last remote listing started (a listing to refresh the data a plan needs comes
    /// at most every `REFRESH_GAP` after it: see `reconcile::sync`).
    pub listed_at: Option<Instant>,
    /// Why its unhealthy clusters are unhealthy: what `GetRayCluster` gave, and when to ask.
    pub diagnoses: super::diagnose::Diagnoses,
    /// The queues of the last complete queue listing (`None` before the first).
    pub queues: Option<Arc<Vec<crate::api::WorkspaceQueueStatus>>>,
    /// Set while queue listings fail.
    pub queue_failure: Option<crate::api::QueueListingFailure>,
    /// The queues as exported in the `queue_resource` metric.
    pub exported_queues: Option<Arc<Vec<crate::api::WorkspaceQueueStatus>>>,
    /// The job mirrors (`spec.jobs`).
    pub jobs: super::jobs::JobsState,
}

/// What the mirrors were left as by the last plan that had nothing more to do: the same listing
/// (the same `Arc`: a listing equal to the one before keeps it; or none yet, again), the same
/// owner, the same mirrors (a digest of their names and versions — after a write pass, the
/// versions our writes gave them, so that the watch showing our own writes changes nothing) and
/// the same staleness (a failing workspace's mirrors marked once stay as they are). A sync with
/// the same inputs would plan nothing again, so it skips the plan (and needs no decoded listing,
/// nor the mirrors' statuses read).
#[derive(Clone, Debug)]
pub struct Settled {
    pub listing: Option<Arc<Listing>>,
    pub inputs: u64,
    /// Mirror names were held by another workspace's mirror (not among the inputs): planned
    /// again at every scheduled listing, when the other workspace may have let them go.
    pub conflicts: bool,
}

impl Settled {
    /// Whether a plan from `listing` and inputs digest `inputs` would find nothing to do.
    /// `listing_now`: the workspace is listed on its schedule in this reconcile.
    pub fn covers(
        this: Option<&Settled>,
        listing: Option<&Arc<Listing>>,
        inputs: u64,
        listing_now: bool,
    ) -> bool {
        let Some(s) = this else {
            return false;
        };
        let same_listing = match (&s.listing, listing) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_listing && s.inputs == inputs && !(s.conflicts && listing_now)
    }
}

impl WorkspaceState {
    /// The latest attempt succeeded and its listing is complete: removals may be trusted
    /// (unless it ended on a page boundary).
    pub fn listing_is_current(&self) -> bool {
        self.failure.is_none() && self.listing.is_some()
    }

    /// Mirror writes may be sent now (not backing off after refusals).
    /// Drops the failure being reported if it has this reason (its cause is gone).
    pub fn clear_failure(&mut self, reason: Reason) {
        if self.failure.as_ref().is_some_and(|f| f.reason == reason) {
            self.failure = None;
        }
    }

    pub fn may_write(&self, now: Instant) -> bool {
        self.write_trouble
            .as_ref()
            .is_none_or(|t| now >= t.retry_at)
    }

    /// When the operator must look at the workspace again: the next listing, or the end of the
    /// write backoff if that comes first.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let retry = self.write_trouble.as_ref().map(|t| t.retry_at);
        match (self.next_due, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Every workspace's [`WorkspaceState`], by `namespace/name`.
#[derive(Default)]
pub struct WorkspaceStates(Mutex<HashMap<String, WorkspaceState>>);

impl WorkspaceStates {
    /// The state of `key`, reset when the workspace's UID changed.
    pub fn get(&self, key: &str, uid: &str) -> WorkspaceState {
        let mut map = lock(&self.0);
        let entry = map.entry(key.to_string()).or_default();
        if entry.uid != uid {
            *entry = WorkspaceState {
                uid: uid.to_string(),
                ..Default::default()
            };
        }
        entry.clone()
    }

    pub fn put(&self, key: &str, st: WorkspaceState) {
        lock(&self.0).insert(key.to_string(), st);
    }

    pub fn remove(&self, key: &str) -> Option<WorkspaceState> {
        lock(&self.0).remove(key)
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.0).keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_plan_covers_the_same_listing_object_and_inputs_only() {
        let l = Arc::new(Listing::new(vec![], 100));
        let settled = Settled {
            listing: Some(l.clone()),
            inputs: 7,
            conflicts: false,
        };
        assert!(Settled::covers(Some(&settled), Some(&l), 7, false));
        assert!(Settled::covers(Some(&settled), Some(&l), 7, true));
        assert!(
            !Settled::covers(Some(&settled), Some(&l), 8, false),
            "mirrors changed"
        );
        let equal_but_new = Arc::new(Listing::new(vec![], 100));
        assert!(!Settled::covers(
            Some(&settled),
            Some(&equal_but_new),
            7,
            false
        ));
        assert!(!Settled::covers(Some(&settled), None, 7, false));
        assert!(!Settled::covers(None, Some(&l), 7, false));
        // Settled before any listing: until the first one.
        let unlisted = Settled {
            listing: None,
            ..settled.clone()
        };
        assert!(Settled::covers(Some(&unlisted), None, 7, false));
        assert!(!Settled::covers(Some(&unlisted), Some(&l), 7, false));
        // With names held elsewhere: settled between listings, planned again at each.
        let conflicts = Settled {
            conflicts: true,
            ..settled
        };
        assert!(Settled::covers(Some(&conflicts), Some(&l), 7, false));
        assert!(!Settled::covers(Some(&conflicts), Some(&l), 7, true));
    }

    #[test]
    fn listing_flags_page_boundaries() {
        let c = |id: &str| RayCluster {
            cluster_id: id.into(),
            ..Default::default()
        };
        assert!(!Listing::new(vec![], 2).on_page_boundary);
        assert!(!Listing::new(vec![c("a")], 2).on_page_boundary);
        assert!(Listing::new(vec![c("a"), c("b")], 2).on_page_boundary);
        assert_eq!(Listing::new(vec![c("a"), c("b")], 2).len(), 2);
    }

    #[test]
    fn a_listing_keeps_identities_and_hands_back_the_clusters_once() {
        let a = RayCluster {
            cluster_id: "a".into(),
            name: Some("n".into()),
            state: Some(ClusterState::Other("Resizing".into())),
            worker_spec: Some(vec![Default::default()]),
            ..Default::default()
        };
        let b = RayCluster {
            cluster_id: "b".into(),
            ..Default::default()
        };
        let (l, decoded) = Listing::decoded(vec![b.clone(), a.clone()], 100);
        let back: Vec<_> = decoded.into_values().collect();
        assert_eq!(
            back,
            vec![a.clone(), b.clone()],
            "in ID order, field for field"
        );
        // The digest tells any change of a cluster as listed, and nothing else.
        let again = Listing::new(vec![a.clone(), b.clone()], 100);
        assert_eq!(again, l, "the same clusters, the same listing");
        assert_eq!(again.digest("a"), l.digest("a"));
        let renamed = RayCluster {
            name: Some("m".into()),
            ..a.clone()
        };
        let changed = Listing::new(vec![renamed, b.clone()], 100);
        assert_ne!(changed.digest("a"), l.digest("a"));
        assert_eq!(changed.digest("b"), l.digest("b"));
        assert_ne!(changed, l);
        assert_eq!(l.digest("c"), None);
        let states: Vec<_> = l
            .states()
            .map(|(id, s)| (id.as_str(), s.cloned()))
            .collect();
        assert_eq!(states, vec![("a", a.state), ("b", None)]);
        assert!(l.contains("a") && !l.contains("c"));
    }

    #[test]
    fn failures_count_and_keep_their_start() {
        let f1 = Failure::next(None, Reason::Throttled, "m".into(), None, None, "t1");
        let f2 = Failure::next(Some(&f1), Reason::Throttled, "m".into(), None, None, "t2");
        assert_eq!((f2.since.as_str(), f2.consecutive), ("t1", 2));
        let f3 = Failure::next(Some(&f2), Reason::Timeout, "m".into(), None, None, "t3");
        assert_eq!((f3.since.as_str(), f3.consecutive), ("t3", 3));
        assert_eq!(f3.to_status().reason, "Timeout");
    }

    #[test]
    fn write_backoff_grows_is_capped_and_honours_retry_after() {
        let cap = Duration::from_secs(300);
        assert_eq!(WriteTrouble::backoff(1, cap, None), Duration::from_secs(5));
        assert_eq!(WriteTrouble::backoff(2, cap, None), Duration::from_secs(10));
        assert_eq!(
            WriteTrouble::backoff(7, cap, None),
            Duration::from_secs(300)
        );
        assert_eq!(WriteTrouble::backoff(u32::MAX, cap, None), cap);
        assert_eq!(
            WriteTrouble::backoff(1, cap, Some(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
        assert_eq!(
            WriteTrouble::backoff(1, cap, Some(Duration::from_secs(u64::MAX))),
            cap
        );
    }

    #[test]
    fn states_reset_on_a_new_uid() {
        let s = WorkspaceStates::default();
        let mut st = s.get("ns/a", "u1");
        st.last_success = Some("t".into());
        s.put("ns/a", st);
        assert_eq!(s.get("ns/a", "u1").last_success.as_deref(), Some("t"));
        assert_eq!(s.get("ns/a", "u2").last_success, None);
        assert!(s.remove("ns/a").is_some());
        assert!(s.keys().is_empty());
    }
}
