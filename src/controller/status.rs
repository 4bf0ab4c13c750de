//! The pure decision of a workspace's status: counts from the last listing, the failure being
//! reported, the write refusals, and the kstatus conditions. `Ready=True` only when the last
//! listing succeeded **and** every mirror it implies was written.

use crate::api::conditions::{ConditionSet, ConditionType};
use std::collections::{BTreeMap, HashMap};

use crate::api::{EmrWorkspaceStatus, Reason};
use crate::emr::ClusterState;
use crate::time::Time;

use super::state::WorkspaceState;

/// Everything [`workspace_status`] decides from.
pub struct Input<'a> {
    pub prev: &'a EmrWorkspaceStatus,
    pub generation: Option<i64>,
    pub suspended: bool,
    pub state: &'a WorkspaceState,
    /// A remote listing was attempted in this reconcile.
    pub attempted: bool,
    /// The sync interval in effect, as shown (`None` when the spec's does not parse).
    pub interval: Option<String>,
    /// The endpoint that is called (`None` when it cannot be resolved).
    pub endpoint: Option<String>,
    pub now: &'a Time,
}

/// The workspace's status. Pure.
pub fn workspace_status(i: &Input<'_>) -> EmrWorkspaceStatus {
    let st = i.state;
    let mut s = EmrWorkspaceStatus {
        observed_generation: i.generation,
        last_sync_attempt_time: if i.attempted {
            Some(i.now.to_string())
        } else {
            st.last_attempt
                .clone()
                .or_else(|| i.prev.last_sync_attempt_time.clone())
        },
        last_successful_sync_time: st
            .last_success
            .clone()
            .or_else(|| i.prev.last_successful_sync_time.clone()),
        endpoint: i.endpoint.clone(),
        last_failure: st.failure.as_ref().map(|f| f.to_status()),
        last_write_failure: st.write_trouble.as_ref().map(|t| t.to_status()),
        sync_interval: i.interval.clone(),
        last_handled_reconcile_at: st
            .handled_request
            .clone()
            .or_else(|| i.prev.last_handled_reconcile_at.clone()),
        // A failed queue listing (or none yet since a restart) keeps the queues shown.
        queues: st
            .queues
            .as_deref()
            .map_or_else(|| i.prev.queues.clone(), |q| q.clone()),
        queue_listing_failure: st.queue_failure.clone(),
        ..Default::default()
    };
    match &st.listing {
        Some(l) => {
            s.clusters = Some(l.len() as i64);
            s.clusters_by_state = clusters_by_state(l.states().map(|(_, state)| state));
            s.ready_clusters = Some(
                s.clusters_by_state
                    .get(ClusterState::Running.as_str())
                    .copied()
                    .unwrap_or(0),
            );
        }
        None => {
            s.clusters = i.prev.clusters;
            s.ready_clusters = i.prev.ready_clusters;
            s.clusters_by_state = i.prev.clusters_by_state.clone();
        }
    }
    let mut c = ConditionSet::new(&i.prev.conditions, i.generation, *i.now);
    if i.suspended {
        c.set(
            ConditionType::Ready,
            false,
            Reason::Suspended,
            "syncing is suspended (spec.suspend); mirrors are kept as they are".into(),
        );
    } else if let Some(f) = &st.failure {
        let mut msg = f.message.clone();
        if st.listing.is_some() {
            msg.push_str(&format!(
                "; mirrors keep the data of the last successful listing ({})",
                s.last_successful_sync_time.as_deref().unwrap_or("unknown")
            ));
        }
        c.failing(f.reason, f.reason.is_stalling(), msg);
    } else if let Some(t) = &st.write_trouble {
        let written = t.mirrors.saturating_sub(t.failed);
        let msg = format!(
            "{written} of {} mirrors written; first refusal ({}): {}",
            t.mirrors, t.refusal, t.message
        );
        c.failing(Reason::MirrorWriteFailed, t.is_permanent(), msg);
    } else if st.listing.is_some() {
        let n = s.clusters.unwrap_or(0);
        c.set(
            ConditionType::Ready,
            true,
            Reason::Synced,
            format!("{n} Ray cluster(s) mirrored"),
        );
    } else {
        let msg = "waiting for the first listing".to_string();
        c.set(ConditionType::Ready, false, Reason::Pending, msg.clone());
        c.set(ConditionType::Reconciling, true, Reason::Pending, msg);
    }
    s.conditions = c.build();
    s
}

/// Most states outside the documented five that `clustersByState` names: the clusters of any
/// further ones (the fewest clusters first, then by name) count under `Other`, so that a remote
/// server cannot grow the workspace's status or the series kube-state-metrics derives from it.
pub const MAX_OTHER_STATES: usize = 8;

/// Clusters per state: the documented states and `Unknown` (no state) by name, at most
/// [`MAX_OTHER_STATES`] other states by their (cleaned, capped) name, the rest as `Other`. Pure.
pub fn clusters_by_state<'a>(
    states: impl Iterator<Item = Option<&'a ClusterState>>,
) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    let mut others: HashMap<&str, i64> = HashMap::new();
    for state in states {
        match state {
            Some(ClusterState::Other(name)) => *others.entry(name).or_default() += 1,
            known => {
                *out.entry(ClusterState::label(known).to_string())
                    .or_default() += 1
            }
        }
    }
    let mut others: Vec<(&str, i64)> = others.into_iter().collect();
    others.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let (named, rest) = others.split_at(others.len().min(MAX_OTHER_STATES));
    for (name, n) in named {
        *out.entry((*name).to_string()).or_default() += n;
    }
    let rest: i64 = rest.iter().map(|(_, n)| n).sum();
    if rest > 0 {
        *out.entry("Other".to_string()).or_default() += rest;
    }
    out
}

/// Whether `new` must be written over `prev`: when anything but the sync times changed, or when
/// the times were last written a heartbeat ago — an idle operator is nearly silent to the API
/// server (the operator's own metrics carry the exact times).
pub fn needs_write(
    new: &EmrWorkspaceStatus,
    prev: &EmrWorkspaceStatus,
    heartbeat: std::time::Duration,
    now: jiff::Timestamp,
) -> bool {
    if new == prev {
        return false;
    }
    let without_times = |s: &EmrWorkspaceStatus| EmrWorkspaceStatus {
        last_sync_attempt_time: None,
        last_successful_sync_time: None,
        jobs: s.jobs.clone().map(|j| crate::api::WorkspaceJobsStatus {
            last_successful_list_time: None,
            ..j
        }),
        ..s.clone()
    };
    if without_times(new) != without_times(prev) {
        return true;
    }
    let written = prev
        .last_sync_attempt_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match written {
        Some(t) => now.duration_since(t).unsigned_abs() >= heartbeat,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::api::WriteRefusal;
    use crate::api::conditions::is_true;
    use crate::controller::state::{Failure, Listing, WriteTrouble};
    use crate::emr::{ClusterState, RayCluster};

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn listed(n: usize) -> Option<Arc<Listing>> {
        let clusters = (0..n)
            .map(|i| RayCluster {
                cluster_id: format!("c{i}"),
                state: Some(if i == 0 {
                    ClusterState::Error
                } else {
                    ClusterState::Running
                }),
                ..Default::default()
            })
            .collect();
        Some(Arc::new(Listing::new(clusters, 100)))
    }

    fn failure(reason: Reason) -> Option<Failure> {
        Some(Failure::next(
            None,
            reason,
            "boom".into(),
            Some("Code".into()),
            None,
            NOW,
        ))
    }

    fn trouble(refusal: WriteRefusal) -> Option<WriteTrouble> {
        Some(WriteTrouble {
            refusal,
            message: "EmrRayCluster c1: denied".into(),
            mirrors: 500,
            failed: 500,
            since: NOW.into(),
            consecutive: 3,
            retry_at: Instant::now(),
            refused: HashSet::new(),
        })
    }

    fn status(st: WorkspaceState, suspended: bool) -> EmrWorkspaceStatus {
        workspace_status(&Input {
            prev: &EmrWorkspaceStatus::default(),
            generation: Some(2),
            suspended,
            state: &st,
            attempted: true,
            interval: Some("1m".into()),
            endpoint: None,
            now: &Time::test(0),
        })
    }

    fn ready(s: &EmrWorkspaceStatus) -> (String, String) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Ready)
            .unwrap();
        (c.status.to_string(), c.reason.clone())
    }

    /// `(Ready, reason, Stalled, Reconciling)`.
    type Expected = (&'static str, &'static str, bool, bool);

    /// `(what, state, suspended) → Expected`: the README's table.
    #[test]
    fn condition_reasons() {
        let rows: Vec<(&str, WorkspaceState, bool, Expected)> = vec![
            (
                "listed, all written",
                WorkspaceState {
                    listing: listed(3),
                    ..Default::default()
                },
                false,
                ("True", "Synced", false, false),
            ),
            (
                "nothing yet",
                WorkspaceState::default(),
                false,
                ("False", "Pending", false, true),
            ),
            (
                "suspended",
                WorkspaceState {
                    listing: listed(3),
                    failure: failure(Reason::Throttled),
                    ..Default::default()
                },
                true,
                ("False", "Suspended", false, false),
            ),
            (
                "transient failure",
                WorkspaceState {
                    listing: listed(3),
                    failure: failure(Reason::Throttled),
                    ..Default::default()
                },
                false,
                ("False", "Throttled", false, true),
            ),
            (
                "failure a person must fix",
                WorkspaceState {
                    failure: failure(Reason::SecretNotFound),
                    ..Default::default()
                },
                false,
                ("False", "SecretNotFound", true, false),
            ),
            (
                "writes refused by RBAC or policy",
                WorkspaceState {
                    listing: listed(3),
                    write_trouble: trouble(WriteRefusal::Forbidden),
                    ..Default::default()
                },
                false,
                ("False", "MirrorWriteFailed", true, false),
            ),
            (
                "writes throttled by the API server",
                WorkspaceState {
                    listing: listed(3),
                    write_trouble: trouble(WriteRefusal::Throttled),
                    ..Default::default()
                },
                false,
                ("False", "MirrorWriteFailed", false, true),
            ),
            (
                "listing failure wins over write refusals",
                WorkspaceState {
                    listing: listed(3),
                    failure: failure(Reason::AuthenticationFailed),
                    write_trouble: trouble(WriteRefusal::Forbidden),
                    ..Default::default()
                },
                false,
                ("False", "AuthenticationFailed", true, false),
            ),
        ];
        for (what, st, suspended, (r, reason, stalled, reconciling)) in rows {
            let s = status(st, suspended);
            assert_eq!(ready(&s), (r.to_string(), reason.to_string()), "{what}");
            assert_eq!(
                is_true(&s.conditions, ConditionType::Stalled),
                stalled,
                "{what}: Stalled"
            );
            assert_eq!(
                is_true(&s.conditions, ConditionType::Reconciling),
                reconciling,
                "{what}: Reconciling"
            );
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(2))
            );
        }
    }

    #[test]
    fn counts_and_write_failure_details() {
        let s = status(
            WorkspaceState {
                listing: listed(500),
                write_trouble: trouble(WriteRefusal::Forbidden).map(|mut t| {
                    t.failed = 88;
                    t
                }),
                ..Default::default()
            },
            false,
        );
        assert_eq!(s.clusters, Some(500));
        assert_eq!(s.ready_clusters, Some(499));
        assert_eq!(s.clusters_by_state.get("Error"), Some(&1));
        let msg = &s.conditions[0].message;
        assert!(
            msg.starts_with("412 of 500 mirrors written; first refusal (Forbidden)"),
            "{msg}"
        );
        let wf = s.last_write_failure.unwrap();
        assert_eq!(
            (wf.reason.as_str(), wf.mirrors, wf.failed),
            ("Forbidden", 500, 88)
        );
    }

    #[test]
    fn clusters_by_state_has_a_bounded_set_of_keys() {
        let other = |s: &str| Some(ClusterState::Other(s.to_string()));
        let mut states = vec![
            Some(ClusterState::Running),
            Some(ClusterState::Running),
            None,
            other("Hibernating"),
            other("Hibernating"),
            other("Resizing"),
        ];
        let m = clusters_by_state(states.iter().map(Option::as_ref));
        let expected = [
            ("Hibernating", 2),
            ("Resizing", 1),
            ("Running", 2),
            ("Unknown", 1),
        ];
        assert_eq!(
            m,
            expected.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        );
        // A hostile endpoint with a state per cluster: the most common keep their names.
        states.extend((0..1000).map(|i| other(&format!("S{i:04}"))));
        let m = clusters_by_state(states.iter().map(Option::as_ref));
        assert_eq!(m.len(), 3 + MAX_OTHER_STATES, "{m:?}");
        assert_eq!(m.get("Hibernating"), Some(&2));
        assert_eq!(m.get("S0000"), Some(&1));
        assert_eq!(m.get("Other"), Some(&(1002 - MAX_OTHER_STATES as i64)));
        assert_eq!(m.values().sum::<i64>(), states.len() as i64);
    }

    #[test]
    fn only_news_or_a_heartbeat_is_written() {
        let hb = std::time::Duration::from_secs(300);
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let prev = EmrWorkspaceStatus {
            clusters: Some(3),
            last_sync_attempt_time: Some("2026-01-01T00:00:00Z".into()),
            last_successful_sync_time: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let later = |secs: i64| EmrWorkspaceStatus {
            last_sync_attempt_time: Some(crate::time::rfc3339(
                t0 + jiff::SignedDuration::from_secs(secs),
            )),
            ..prev.clone()
        };
        let at = |secs: i64| t0 + jiff::SignedDuration::from_secs(secs);
        assert!(!needs_write(&prev, &prev, hb, at(10)));
        assert!(
            !needs_write(&later(60), &prev, hb, at(60)),
            "only the times: no write"
        );
        assert!(needs_write(&later(300), &prev, hb, at(300)), "heartbeat");
        let news = EmrWorkspaceStatus {
            clusters: Some(4),
            ..later(60)
        };
        assert!(needs_write(&news, &prev, hb, at(60)), "news");
        let first = EmrWorkspaceStatus::default();
        assert!(needs_write(&later(1), &first, hb, at(1)));
        // The job listing time is a sync time too; the job counts are news.
        let jobs = |time: &str, failed: i64| crate::api::WorkspaceJobsStatus {
            total: Some(10),
            failed: Some(failed),
            last_successful_list_time: Some(time.into()),
            ..Default::default()
        };
        let with_jobs = |secs: i64, time: &str, failed: i64| EmrWorkspaceStatus {
            jobs: Some(jobs(time, failed)),
            ..later(secs)
        };
        let prev_jobs = with_jobs(0, "2026-01-01T00:00:00Z", 1);
        assert!(!needs_write(
            &with_jobs(60, "2026-01-01T00:01:00Z", 1),
            &prev_jobs,
            hb,
            at(60)
        ));
        assert!(needs_write(
            &with_jobs(60, "2026-01-01T00:01:00Z", 2),
            &prev_jobs,
            hb,
            at(60)
        ));
    }

    #[test]
    fn counts_survive_a_restart_without_a_listing() {
        let prev = EmrWorkspaceStatus {
            clusters: Some(7),
            last_successful_sync_time: Some("t0".into()),
            ..Default::default()
        };
        let st = WorkspaceState {
            failure: failure(Reason::Timeout),
            ..Default::default()
        };
        let s = workspace_status(&Input {
            prev: &prev,
            generation: Some(1),
            suspended: false,
            state: &st,
            attempted: false,
            interval: None,
            endpoint: None,
            now: &Time::test(0),
        });
        assert_eq!(s.clusters, Some(7));
        assert_eq!(s.last_successful_sync_time.as_deref(), Some("t0"));
        assert_eq!(s.last_sync_attempt_time, None);
    }
}
