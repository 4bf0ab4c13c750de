//! Why a cluster is not healthy: which listed clusters need their instances (`GetRayCluster`),
//! what was fetched, and which failing instance a mirror's condition names.
//!
//! A cluster is *unhealthy* when it is `Error`, or `Starting`/`Stopping` for longer than
//! `--stuck-cluster-after` (counted from when this process first listed it in that state: a
//! restarted operator waits the bound again). Its details are fetched once per *listed form*
//! (a digest of the cluster as the listing gave it): never again while the listing shows the
//! same cluster, again when anything in it changes. A failed fetch is retried with a backoff
//! and leaves what was fetched before (or what the mirror already shows) in place. A healthy
//! cluster's entry is forgotten and its mirror's instances dropped.
//!
//! Everything here is pure: time comes in as an argument, remote calls are made by the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::RayClusterInstance;
use crate::emr::ClusterState;
use crate::emr::model::RayInstance;
use crate::time::rfc3339_millis;

use super::state::Listing;

/// Most `GetRayCluster` calls one sync of a workspace makes, so that a workspace with many
/// newly failed clusters does not hold its reconcile slot long; the rest follow in reconciles
/// [`BACKLOG_PAUSE`] apart (no listing in between).
pub const MAX_FETCHES_PER_SYNC: usize = 16;
/// The pause between the reconciles that fetch a backlog.
pub const BACKLOG_PAUSE: Duration = Duration::from_secs(1);

/// The remembered diagnoses of one workspace's clusters, by cluster ID.
///
/// Invariants: only clusters of the last listing in `Error`, `Starting` or `Stopping` have an
/// entry; `generation` changes whenever what [`Diagnoses::view`] answers may have changed (so
/// a settled workspace re-plans its mirrors then, and only then).
#[derive(Clone, Debug, Default)]
pub struct Diagnoses {
    entries: HashMap<String, Diagnosis>,
    generation: u64,
}

#[derive(Clone, Debug)]
struct Diagnosis {
    state: ClusterState,
    /// The listed form the entry is for.
    listed: u64,
    /// When this process first listed the cluster in `state`.
    since: Instant,
    /// `Error`, or in `state` for longer than the bound.
    unhealthy: bool,
    /// The listed form `instances` were fetched for (a success).
    fetched_for: Option<u64>,
    /// The last successful fetch's instances (of this state).
    instances: Option<Arc<[RayClusterInstance]>>,
    /// Failed fetches of this listed form in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// What a mirror shows as its instances.
#[derive(Clone, Debug, PartialEq)]
pub enum View<'a> {
    /// The last fetched instances.
    Fetched(&'a [RayClusterInstance]),
    /// Unhealthy, nothing fetched yet in this process (or every fetch failed): keep what the
    /// mirror shows.
    Keep,
    /// Healthy (or not yet for long enough): none.
    Drop,
}

impl Diagnoses {
    /// Follows a listing: entries for its unhealthy clusters, none for the others. Returns
    /// the IDs whose details are due now, at most [`MAX_FETCHES_PER_SYNC`].
    pub fn observe(
        &mut self,
        listing: &Listing,
        now: Instant,
        stuck_after: Duration,
    ) -> Vec<String> {
        let before = self.entries.len();
        self.entries.retain(|id, _| listing.contains(id));
        let mut changed = self.entries.len() != before;
        for (id, state) in listing.states() {
            let watched = matches!(
                state,
                Some(ClusterState::Error | ClusterState::Starting | ClusterState::Stopping)
            );
            let (Some(state), Some(listed)) = (
                state.filter(|_| watched),
                listing.digest(id).filter(|_| watched),
            ) else {
                changed |= self.entries.remove(id).is_some();
                continue;
            };
            if self.entries.get(id).is_none_or(|e| e.state != *state) {
                // New, or in another state: what was fetched for the old one goes.
                changed = true;
                self.entries.insert(
                    id.clone(),
                    Diagnosis {
                        state: state.clone(),
                        listed,
                        since: now,
                        unhealthy: false,
                        fetched_for: None,
                        instances: None,
                        failures: 0,
                        retry_at: None,
                    },
                );
            }
            let Some(e) = self.entries.get_mut(id) else {
                continue;
            };
            if e.listed != listed {
                // Another form: fetched again at once.
                e.listed = listed;
                e.failures = 0;
                e.retry_at = None;
            }
            let unhealthy = *state == ClusterState::Error
                || now.saturating_duration_since(e.since) >= stuck_after;
            changed |= unhealthy != e.unhealthy;
            e.unhealthy = unhealthy;
        }
        if changed {
            self.generation = self.generation.wrapping_add(1);
        }
        self.due(now)
    }

    /// The IDs whose details are due now (in ID order), at most [`MAX_FETCHES_PER_SYNC`].
    pub fn due(&self, now: Instant) -> Vec<String> {
        let mut due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.unhealthy
                    && e.fetched_for != Some(e.listed)
                    && e.retry_at.is_none_or(|t| t <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        due.sort();
        due.truncate(MAX_FETCHES_PER_SYNC);
        due
    }

    /// Puts the fetches due now off until `until` (the namespace had no slot free for them):
    /// nothing else about them changes.
    pub fn defer(&mut self, now: Instant, until: Instant) {
        for e in self.entries.values_mut() {
            if e.unhealthy && e.fetched_for != Some(e.listed) && e.retry_at.is_none_or(|t| t <= now)
            {
                e.retry_at = Some(until);
            }
        }
    }

    /// The listed form the entry of `id` is for (what a fetch started now is for).
    pub fn listed(&self, id: &str) -> Option<u64> {
        self.entries.get(id).map(|e| e.listed)
    }

    /// Records a fetch made for listed form `listed` of `id`: the instances, or a failure
    /// (retried after a backoff doubling from 5 s up to `cap`, or the remote's retry-after).
    pub fn record(
        &mut self,
        id: &str,
        listed: u64,
        result: Result<Vec<RayClusterInstance>, Option<Duration>>,
        now: Instant,
        cap: Duration,
    ) {
        let Some(e) = self.entries.get_mut(id).filter(|e| e.listed == listed) else {
            // The cluster changed or left meanwhile: the next listing decides.
            return;
        };
        match result {
            Ok(instances) => {
                e.fetched_for = Some(listed);
                e.failures = 0;
                e.retry_at = None;
                if e.instances.as_deref() != Some(instances.as_slice()) {
                    e.instances = Some(instances.into());
                    self.generation = self.generation.wrapping_add(1);
                }
            }
            Err(retry_after) => {
                e.failures = e.failures.saturating_add(1);
                let backoff = crate::backoff::exponential(e.failures, Duration::from_secs(5), cap);
                let wait = retry_after.map_or(backoff, |r| r.max(Duration::from_secs(1)));
                e.retry_at = now.checked_add(wait);
            }
        }
    }

    /// What the mirror of `id` shows as its instances.
    pub fn view(&self, id: &str) -> View<'_> {
        match self.entries.get(id) {
            Some(Diagnosis {
                instances: Some(i), ..
            }) => View::Fetched(i),
            Some(e) if e.unhealthy => View::Keep,
            _ => View::Drop,
        }
    }

    /// When a retry, a cluster's stuck bound, or (shortly after `now`) the rest of a backlog
    /// longer than [`MAX_FETCHES_PER_SYNC`] is next due.
    pub fn next_wakeup(&self, stuck_after: Duration, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| {
                if !e.unhealthy {
                    e.since.checked_add(stuck_after)
                } else if e.fetched_for != Some(e.listed) {
                    e.retry_at.or_else(|| now.checked_add(BACKLOG_PAUSE))
                } else {
                    None
                }
            })
            .min()
    }

    /// Changes whenever [`Self::view`] may answer differently.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A remote instance as a mirror shows it: times in RFC 3339 (strings were cleaned and capped
/// as they were decoded).
pub fn instance_status(i: &RayInstance) -> RayClusterInstance {
    RayClusterInstance {
        instance_type: i.instance_type.clone(),
        instance_id: i.instance_id.clone(),
        phase: i.phase.clone(),
        reason: i.reason.clone(),
        message: i.message.clone(),
        container_state: i.container_state.clone(),
        container_state_reason: i.container_state_reason.clone(),
        container_state_message: i.container_state_message.clone(),
        container_exit_code: i.container_exit_code,
        create_time: i.create_time.and_then(rfc3339_millis),
        start_time: i.start_time.and_then(rfc3339_millis),
    }
}

fn is_head(i: &RayClusterInstance) -> bool {
    i.instance_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("head"))
}

/// Whether an instance is failing: a non-zero exit code, a failed or unknown phase, or a
/// container that is not running for a reason (`CrashLoopBackOff`, `ImagePullBackOff`, ...).
fn is_failing(i: &RayClusterInstance) -> bool {
    let eq = |v: &Option<String>, w: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(w));
    let has = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    i.container_exit_code.is_some_and(|c| c != 0)
        || eq(&i.phase, "Failed")
        || eq(&i.phase, "Unknown")
        || (has(&i.container_state_reason)
            && !eq(&i.container_state, "Running")
            && !eq(&i.container_state_reason, "Completed")
            && !eq(&i.container_state_reason, "ContainerCreating"))
}

/// The failing instance a condition names — the head first, then the first failing worker —
/// as `head: OOMKilled, exit 137` or `worker <instanceId>: CrashLoopBackOff`; `None` when no
/// instance is failing.
pub fn failing_summary(instances: &[RayClusterInstance]) -> Option<String> {
    let failing = instances
        .iter()
        .filter(|i| is_failing(i))
        .find(|i| is_head(i))
        .or_else(|| instances.iter().find(|i| is_failing(i)))?;
    let who = if is_head(failing) {
        "head".to_string()
    } else {
        let kind = failing
            .instance_type
            .as_deref()
            .filter(|t| !t.is_empty())
            .map_or("instance".to_string(), str::to_lowercase);
        match failing.instance_id.as_deref().filter(|i| !i.is_empty()) {
            Some(id) => format!("{kind} {id}"),
            None => kind,
        }
    };
    let reason = [
        &failing.container_state_reason,
        &failing.reason,
        &failing.phase,
        &failing.container_state,
    ]
    .into_iter()
    .find_map(|r| r.as_deref().filter(|r| !r.is_empty()));
    let what = match (reason, failing.container_exit_code) {
        (Some(r), Some(c)) if c != 0 => format!("{r}, exit {c}"),
        (Some(r), _) => r.to_string(),
        (None, Some(c)) => format!("exit {c}"),
        (None, None) => "failing".to_string(),
    };
    Some(format!("{who}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emr::RayCluster;

    fn instance(
        kind: &str,
        id: &str,
        reason: Option<&str>,
        code: Option<i32>,
    ) -> RayClusterInstance {
        RayClusterInstance {
            instance_type: Some(kind.into()),
            instance_id: Some(id.into()),
            phase: Some(
                if code.is_some_and(|c| c != 0) {
                    "Failed"
                } else {
                    "Running"
                }
                .into(),
            ),
            container_state: Some(
                if reason.is_some() {
                    "Terminated"
                } else {
                    "Running"
                }
                .into(),
            ),
            container_state_reason: reason.map(Into::into),
            container_exit_code: code,
            ..Default::default()
        }
    }

    #[test]
    fn the_head_is_named_first_then_a_failing_worker() {
        let healthy_head = instance("HEAD", "h", None, None);
        let oom_head = instance("head", "h", Some("OOMKilled"), Some(137));
        let ok_worker = instance("worker", "w-1", None, Some(0));
        let crashing = RayClusterInstance {
            phase: Some("Running".into()),
            container_state: Some("Waiting".into()),
            container_state_reason: Some("CrashLoopBackOff".into()),
            ..instance("WORKER", "w-2", None, None)
        };
        let table: &[(&[RayClusterInstance], Option<&str>)] = &[
            (&[], None),
            (&[healthy_head.clone(), ok_worker.clone()], None),
            (
                &[ok_worker.clone(), crashing.clone(), oom_head.clone()],
                Some("head: OOMKilled, exit 137"),
            ),
            (
                &[healthy_head.clone(), ok_worker.clone(), crashing.clone()],
                Some("worker w-2: CrashLoopBackOff"),
            ),
            (
                &[instance("worker", "w-3", None, Some(1)), crashing.clone()],
                Some("worker w-3: Failed, exit 1"),
            ),
            (
                &[RayClusterInstance {
                    instance_type: Some("head".into()),
                    container_exit_code: Some(-1),
                    ..Default::default()
                }],
                Some("head: exit -1"),
            ),
            (
                &[RayClusterInstance {
                    phase: Some("Pending".into()),
                    container_state: Some("Waiting".into()),
                    container_state_reason: Some("ContainerCreating".into()),
                    ..instance("head", "h", None, None)
                }],
                None,
            ),
        ];
        for (instances, want) in table {
            assert_eq!(
                failing_summary(instances).as_deref(),
                *want,
                "{instances:?}"
            );
        }
    }

    fn listing(clusters: &[(&str, ClusterState, &str)]) -> Listing {
        let clusters = clusters
            .iter()
            .map(|(id, state, message)| RayCluster {
                cluster_id: id.to_string(),
                state: Some(state.clone()),
                message: Some(message.to_string()),
                ..Default::default()
            })
            .collect();
        Listing::new(clusters, 100)
    }

    #[test]
    fn details_are_fetched_once_per_listed_form_and_retried_after_a_failure() {
        let stuck = Duration::from_secs(600);
        let t0 = Instant::now();
        let mut d = Diagnoses::default();
        let l1 = listing(&[
            ("a", ClusterState::Error, "boom"),
            ("b", ClusterState::Running, ""),
            ("c", ClusterState::Starting, ""),
        ]);
        assert_eq!(d.observe(&l1, t0, stuck), vec!["a".to_string()]);
        assert_eq!(d.view("a"), View::Keep);
        assert_eq!(d.view("b"), View::Drop);
        assert_eq!(d.view("c"), View::Drop, "not starting for long yet");
        let fetched = vec![instance("head", "h", Some("OOMKilled"), Some(137))];
        let g = d.generation();
        d.record("a", d.listed("a").unwrap(), Ok(fetched.clone()), t0, stuck);
        assert_ne!(d.generation(), g);
        assert_eq!(d.view("a"), View::Fetched(&fetched));
        // The same listing again: nothing due, nothing changed.
        let g = d.generation();
        assert!(
            d.observe(&l1, t0 + Duration::from_secs(60), stuck)
                .is_empty()
        );
        assert_eq!(d.generation(), g);
        // Starting for longer than the bound: due once.
        let later = t0 + stuck;
        assert_eq!(d.observe(&l1, later, stuck), vec!["c".to_string()]);
        assert_eq!(d.view("c"), View::Keep);
        // A failed fetch keeps the view and is retried after a backoff, not before.
        d.record("c", d.listed("c").unwrap(), Err(None), later, stuck);
        assert_eq!(d.view("c"), View::Keep);
        assert!(d.due(later + Duration::from_secs(1)).is_empty());
        assert_eq!(
            d.next_wakeup(stuck, later),
            Some(later + Duration::from_secs(5))
        );
        assert_eq!(d.due(later + Duration::from_secs(5)), vec!["c".to_string()]);
        d.record(
            "c",
            d.listed("c").unwrap(),
            Err(Some(Duration::from_secs(30))),
            later,
            stuck,
        );
        assert!(d.due(later + Duration::from_secs(29)).is_empty());
        // A changed cluster is fetched again at once, keeping its last instances meanwhile.
        let l2 = listing(&[
            ("a", ClusterState::Error, "boom again"),
            ("b", ClusterState::Running, ""),
            ("c", ClusterState::Starting, ""),
        ]);
        assert_eq!(
            d.observe(&l2, later, stuck),
            vec!["a".to_string()],
            "c is still backing off"
        );
        assert_eq!(d.view("a"), View::Fetched(&fetched));
        // A fetch for a form that changed meanwhile is not recorded.
        let stale = d.listed("a").unwrap().wrapping_add(1);
        d.record("a", stale, Ok(Vec::new()), later, stuck);
        assert_eq!(d.view("a"), View::Fetched(&fetched));
        // Healthy again: forgotten, its instances dropped.
        let l3 = listing(&[
            ("a", ClusterState::Running, ""),
            ("c", ClusterState::Running, ""),
        ]);
        assert!(d.observe(&l3, later, stuck).is_empty());
        assert_eq!(d.view("a"), View::Drop);
        assert!(d.is_empty());
        // Error → Starting (a restart): the old instances go.
        let mut d = Diagnoses::default();
        d.observe(&l1, t0, stuck);
        d.record("a", d.listed("a").unwrap(), Ok(fetched.clone()), t0, stuck);
        let l4 = listing(&[("a", ClusterState::Starting, "boom")]);
        assert!(d.observe(&l4, t0, stuck).is_empty());
        assert_eq!(d.view("a"), View::Drop);
    }

    /// With no namespace slot free, the due fetches wait for `until`, and only they: a fetch
    /// backing off for longer keeps its own deadline.
    #[test]
    fn fetches_put_off_for_want_of_a_slot_come_back_at_the_given_time() {
        let stuck = Duration::from_secs(600);
        let t0 = Instant::now();
        let mut d = Diagnoses::default();
        let l = listing(&[
            ("a", ClusterState::Error, "boom"),
            ("b", ClusterState::Error, "bang"),
        ]);
        assert_eq!(d.observe(&l, t0, stuck).len(), 2);
        d.record(
            "b",
            d.listed("b").unwrap(),
            Err(Some(Duration::from_secs(30))),
            t0,
            stuck,
        );
        let until = t0 + Duration::from_secs(1);
        d.defer(t0, until);
        assert!(d.due(t0).is_empty(), "nothing due before the slot retry");
        assert_eq!(d.next_wakeup(stuck, t0), Some(until));
        assert_eq!(d.due(until), vec!["a".to_string()]);
        assert_eq!(d.view("a"), View::Keep, "the view is unchanged");
        assert!(
            d.due(t0 + Duration::from_secs(29)).len() == 1,
            "b keeps its backoff"
        );
    }

    #[test]
    fn fetches_per_sync_are_bounded() {
        let clusters: Vec<(String, ClusterState, &str)> = (0..100)
            .map(|i| (format!("c{i:03}"), ClusterState::Error, ""))
            .collect();
        let refs: Vec<(&str, ClusterState, &str)> = clusters
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.clone(), *c))
            .collect();
        let mut d = Diagnoses::default();
        let now = Instant::now();
        let stuck = Duration::from_secs(600);
        let due = d.observe(&listing(&refs), now, stuck);
        assert_eq!(due.len(), MAX_FETCHES_PER_SYNC);
        assert_eq!(due[0], "c000");
        for id in &due {
            d.record(id, d.listed(id).unwrap(), Ok(Vec::new()), now, stuck);
        }
        // The rest soon, without waiting for a listing.
        assert_eq!(d.next_wakeup(stuck, now), Some(now + BACKLOG_PAUSE));
        assert_eq!(d.due(now)[0], format!("c{:03}", MAX_FETCHES_PER_SYNC));
    }
}
