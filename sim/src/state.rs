//! The simulator's shared state: workspaces and their clusters, access keys, seen nonces,
//! fault settings and statistics. Every operation of the admin API is a method here.

use super::detail::ClusterDetail;
use super::oidc::OidcProvider;
use super::verify::{self, KeyEntry, NonceCache, Received, Rejection};
use super::{Faults, SimConfig, SimStats, chance, generate};
use emr_ray_operator::emr::model::{ClusterState, RayCluster};
use emr_ray_operator::emr::queues::WorkspaceQueue;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

#[derive(Default)]
struct StatsInner {
    stats: SimStats,
    window: VecDeque<Instant>,
}

struct Inner {
    workspaces: Mutex<BTreeMap<String, Vec<RayCluster>>>,
    /// What `GetRayCluster` adds to a cluster, by workspace and cluster ID.
    details: Mutex<HashMap<(String, String), ClusterDetail>>,
    /// Ray jobs by workspace (see [`super::jobs`]).
    jobs: Mutex<BTreeMap<String, Vec<super::jobs::SimJob>>>,
    keys: Mutex<HashMap<String, KeyEntry>>,
    nonces: Mutex<NonceCache>,
    faults: Mutex<Faults>,
    stats: Mutex<StatsInner>,
    /// OIDC providers of STS `AssumeRoleWithOIDC`, by ARN.
    oidc: Mutex<BTreeMap<String, OidcProvider>>,
    /// Queues of `ListWorkspaceQueues`, by workspace (a workspace exists by `workspaces`).
    queues: Mutex<BTreeMap<String, Vec<WorkspaceQueue>>>,
}

/// Shared simulator state; every operation of the admin API is available here.
#[derive(Clone)]
pub struct SimState(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    pub fn new(cfg: &SimConfig) -> Self {
        let state = SimState(Arc::new(Inner {
            workspaces: Mutex::new(cfg.workspaces.clone()),
            details: Mutex::new(HashMap::new()),
            jobs: Mutex::new(BTreeMap::new()),
            keys: Mutex::new(HashMap::new()),
            nonces: Mutex::new(NonceCache::default()),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(StatsInner::default()),
            oidc: Mutex::new(BTreeMap::new()),
            queues: Mutex::new(BTreeMap::new()),
        }));
        for (id, secret) in &cfg.access_keys {
            state.add_access_key(id, secret);
        }
        state
    }

    /// Inserts or replaces (by `clusterId`) a cluster; creates the workspace if needed.
    pub fn upsert_cluster(&self, ws: &str, c: RayCluster) {
        let mut w = lock(&self.0.workspaces);
        let list = w.entry(ws.to_string()).or_default();
        match list.iter_mut().find(|x| x.cluster_id == c.cluster_id) {
            Some(existing) => *existing = c,
            None => list.push(c),
        }
    }

    /// Sets what `GetRayCluster` answers for a cluster beyond its listed fields (instances,
    /// secrets); `false` when the cluster does not exist.
    pub fn set_detail(&self, ws: &str, id: &str, detail: ClusterDetail) -> bool {
        if self.cluster(ws, id).is_none() {
            return false;
        }
        lock(&self.0.details).insert((ws.to_string(), id.to_string()), detail);
        true
    }

    pub fn detail(&self, ws: &str, id: &str) -> Option<ClusterDetail> {
        lock(&self.0.details)
            .get(&(ws.to_string(), id.to_string()))
            .cloned()
    }

    /// One cluster as listed.
    pub fn cluster(&self, ws: &str, id: &str) -> Option<RayCluster> {
        lock(&self.0.workspaces)
            .get(ws)?
            .iter()
            .find(|c| c.cluster_id == id)
            .cloned()
    }

    pub fn remove_cluster(&self, ws: &str, id: &str) -> bool {
        lock(&self.0.details).remove(&(ws.to_string(), id.to_string()));
        let mut w = lock(&self.0.workspaces);
        match w.get_mut(ws) {
            Some(list) => {
                let before = list.len();
                list.retain(|c| c.cluster_id != id);
                list.len() != before
            }
            None => false,
        }
    }

    pub fn set_state(&self, ws: &str, id: &str, state: ClusterState) -> bool {
        let mut w = lock(&self.0.workspaces);
        let Some(c) = w
            .get_mut(ws)
            .and_then(|l| l.iter_mut().find(|c| c.cluster_id == id))
        else {
            return false;
        };
        let now = jiff::Timestamp::now().as_millisecond();
        if matches!(state, ClusterState::Starting | ClusterState::Running)
            && !matches!(
                c.state,
                Some(ClusterState::Starting) | Some(ClusterState::Running)
            )
        {
            c.start_time = Some(now);
        }
        c.state = Some(state);
        c.modified_time = Some(now);
        true
    }

    pub fn clusters(&self, ws: &str) -> Vec<RayCluster> {
        lock(&self.0.workspaces)
            .get(ws)
            .cloned()
            .unwrap_or_default()
    }

    /// Creates an empty workspace (no-op if it exists).
    pub fn ensure_workspace(&self, ws: &str) {
        lock(&self.0.workspaces).entry(ws.to_string()).or_default();
    }

    /// Deletes a workspace, its clusters, its queues and its jobs.
    pub fn remove_workspace(&self, ws: &str) -> bool {
        lock(&self.0.queues).remove(ws);
        lock(&self.0.jobs).remove(ws);
        lock(&self.0.workspaces).remove(ws).is_some()
    }

    /// Whether workspace `ws` exists.
    pub fn has_workspace(&self, ws: &str) -> bool {
        lock(&self.0.workspaces).contains_key(ws)
    }

    pub(super) fn jobs_lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<super::jobs::SimJob>>> {
        lock(&self.0.jobs)
    }

    /// Replaces the queues of a workspace (creating the workspace if needed).
    pub fn set_queues(&self, ws: &str, queues: Vec<WorkspaceQueue>) {
        self.ensure_workspace(ws);
        lock(&self.0.queues).insert(ws.to_string(), queues);
    }

    /// The queues of a workspace; `None` when the workspace does not exist.
    pub fn queues(&self, ws: &str) -> Option<Vec<WorkspaceQueue>> {
        if !lock(&self.0.workspaces).contains_key(ws) {
            return None;
        }
        Some(lock(&self.0.queues).get(ws).cloned().unwrap_or_default())
    }

    /// Sets what queue `name` of `ws` uses (the API's `usedResource` string); `false` when there
    /// is no such queue.
    pub fn set_queue_usage(&self, ws: &str, name: &str, used_resource: String) -> bool {
        let mut q = lock(&self.0.queues);
        match q
            .get_mut(ws)
            .and_then(|l| l.iter_mut().find(|q| q.queue_name.as_deref() == Some(name)))
        {
            Some(queue) => {
                queue.used_resource = Some(used_resource);
                true
            }
            None => false,
        }
    }

    /// Workspace IDs with their cluster counts.
    pub fn workspaces(&self) -> BTreeMap<String, usize> {
        lock(&self.0.workspaces)
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// Replaces the clusters of a workspace.
    pub fn set_clusters(&self, ws: &str, clusters: Vec<RayCluster>) {
        lock(&self.0.workspaces).insert(ws.to_string(), clusters);
    }

    /// Appends `count` generated clusters (names `<prefix>-<n>`); returns their IDs.
    pub fn generate(&self, ws: &str, count: usize, prefix: &str) -> Vec<String> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut w = lock(&self.0.workspaces);
        let list = w.entry(ws.to_string()).or_default();
        let start = list.len();
        let mut ids = Vec::with_capacity(count);
        let mut seen: std::collections::HashSet<String> =
            list.iter().map(|c| c.cluster_id.clone()).collect();
        for i in 0..count {
            let mut c = generate::cluster(prefix, start + i, now);
            while !seen.insert(c.cluster_id.clone()) {
                c = generate::cluster(prefix, start + i, now);
            }
            ids.push(c.cluster_id.clone());
            list.push(c);
        }
        ids
    }

    pub fn set_faults(&self, f: Faults) {
        *lock(&self.0.faults) = f;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.0.faults).clone()
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.0.stats).stats.clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.0.stats) = StatsInner::default();
    }

    pub fn add_access_key(&self, id: &str, secret: &str) {
        lock(&self.0.keys).insert(
            id.to_string(),
            KeyEntry {
                secret: secret.to_string(),
                security_token: None,
                expiration: None,
            },
        );
    }

    /// An STS access key that must come with `security_token`.
    pub fn add_sts_credentials(
        &self,
        id: &str,
        secret: &str,
        security_token: &str,
        expiration: Option<SystemTime>,
    ) {
        lock(&self.0.keys).insert(
            id.to_string(),
            KeyEntry {
                secret: secret.to_string(),
                security_token: Some(security_token.to_string()),
                expiration,
            },
        );
    }

    /// Registers (or replaces) the OIDC provider `arn`. Once one is registered,
    /// `AssumeRoleWithOIDC` verifies every token against the provider its request names.
    pub fn add_oidc_provider(&self, arn: &str, provider: OidcProvider) {
        lock(&self.0.oidc).insert(arn.to_string(), provider);
    }

    /// `None` while no provider is registered (any token is accepted); otherwise the provider
    /// `arn` names, if any.
    pub(super) fn oidc_provider(&self, arn: &str) -> Option<Option<OidcProvider>> {
        let providers = lock(&self.0.oidc);
        (!providers.is_empty()).then(|| providers.get(arn).cloned())
    }

    fn key(&self, id: &str) -> Option<KeyEntry> {
        lock(&self.0.keys).get(id).cloned()
    }

    pub(super) fn count_request(&self, ws: Option<&str>, action: Option<&str>) {
        let now = Instant::now();
        let mut s = lock(&self.0.stats);
        s.stats.requests += 1;
        if let Some(action) = action {
            *s.stats.by_action.entry(action.to_string()).or_default() += 1;
        }
        if let Some(ws) = ws {
            *s.stats.by_workspace.entry(ws.to_string()).or_default() += 1;
        }
        while s
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            s.window.pop_front();
        }
        s.window.push_back(now);
        let n = s.window.len() as u64;
        if n > s.stats.max_requests_in_any_second {
            s.stats.max_requests_in_any_second = n;
        }
    }

    pub(super) fn bump(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut lock(&self.0.stats).stats);
    }

    /// Verifies a request's signature against the known keys and the seen nonces.
    pub(super) fn verify(&self, received: &Received<'_>) -> Result<String, Rejection> {
        let mut nonces = lock(&self.0.nonces);
        verify::verify(received, |id| self.key(id), &mut nonces)
    }

    /// Whether this request is throttled: one of the next `throttleNext`, else by
    /// `throttleRate`.
    pub(super) fn take_throttle(&self) -> bool {
        let mut f = lock(&self.0.faults);
        if f.throttle_next > 0 {
            f.throttle_next -= 1;
            true
        } else {
            chance(f.throttle_rate)
        }
    }

    /// Whether this request is answered with a server error: one of the next
    /// `serverErrorNext`, else by `serverErrorRate`.
    pub(super) fn take_server_error(&self) -> bool {
        let mut f = lock(&self.0.faults);
        if f.server_error_next > 0 {
            f.server_error_next -= 1;
            true
        } else {
            chance(f.server_error_rate)
        }
    }

    /// Page `page_num` (from 1) of `page_size` clusters, as bent by the `repeatPage` and
    /// `endEarly` faults; `None` for an unknown workspace.
    pub(super) fn page(
        &self,
        ws: &str,
        page_num: usize,
        page_size: usize,
        faults: &Faults,
    ) -> Option<Vec<RayCluster>> {
        let w = lock(&self.0.workspaces);
        let list = w.get(ws)?;
        let effective = if page_num > 1 && faults.repeat_page {
            1
        } else {
            page_num
        };
        if page_num > 1 && faults.end_early {
            Some(Vec::new())
        } else {
            let start = (effective - 1).saturating_mul(page_size);
            Some(list.iter().skip(start).take(page_size).cloned().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_WORKSPACE;

    #[test]
    fn the_next_server_errors_are_certain() {
        let st = SimState::new(&SimConfig::with_default_fixture());
        st.set_faults(Faults {
            server_error_next: 2,
            ..Default::default()
        });
        let taken: Vec<bool> = (0..3).map(|_| st.take_server_error()).collect();
        // Then `serverErrorRate` (0) decides.
        assert_eq!(taken, [true, true, false]);
    }

    #[test]
    fn state_ops() {
        let st = SimState::new(&SimConfig::with_default_fixture());
        let id = "ray-uiulpgow9xljimm1";
        assert!(st.set_state(DEFAULT_WORKSPACE, id, ClusterState::Stopped));
        assert_eq!(
            st.clusters(DEFAULT_WORKSPACE)[0].state,
            Some(ClusterState::Stopped)
        );
        let ids = st.generate("w-x", 5, "gen");
        assert_eq!(ids.len(), 5);
        assert_eq!(st.clusters("w-x").len(), 5);
        assert!(st.remove_cluster("w-x", &ids[0]));
        assert!(!st.remove_cluster("w-x", &ids[0]));
        assert_eq!(st.workspaces()["w-x"], 4);
    }
}
