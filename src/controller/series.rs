//! The `cluster_state` series of the listed clusters: exported when a listing changes them,
//! dropped when a cluster is gone or its workspace deleted.

use super::state::WorkspaceState;
use super::{Context, labels, mirror};
use crate::api::EmrWorkspace;
use crate::metrics::{ClusterStateLabels, WorkspaceLabels};

/// Exports each listed cluster's state; drops the series of clusters gone or changed.
pub(super) fn update(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
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

pub(super) fn cluster_labels(l: &WorkspaceLabels, id: &str, state: String) -> ClusterStateLabels {
    ClusterStateLabels {
        namespace: l.namespace.clone(),
        workspace: l.workspace.clone(),
        cluster_id: id.to_string(),
        name: mirror::mirror_name(id),
        state,
    }
}

/// The documented states plus the cluster's own when it is not one of them.
pub(super) fn states_for(state: &str) -> Vec<String> {
    let mut v: Vec<String> = crate::emr::ClusterState::KNOWN
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !v.iter().any(|s| s == state) {
        v.push(state.to_string());
    }
    v
}
