//! The `cluster_state` series of the listed clusters: replaced when a listing changes them,
//! dropped when a workspace is deleted (see [`crate::metrics::ClusterStates`]).

use std::sync::Arc;

use super::state::WorkspaceState;
use super::{Context, mirror};
use crate::api::EmrWorkspace;
use crate::metrics::ClusterStateMap;
use kube::ResourceExt;

/// Exports each listed cluster's state, when the listing changed them.
pub(super) fn update(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
    let Some(listing) = &st.listing else { return };
    let changed = listing.clusters.len() != st.exported_states.len()
        || listing.clusters.iter().any(|(id, c)| {
            st.exported_states
                .get(id)
                .is_none_or(|(_, old)| old != state_of(c))
        });
    if !changed {
        return;
    }
    let current: ClusterStateMap = listing
        .clusters
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                (mirror::mirror_name(id), state_of(c).to_string()),
            )
        })
        .collect();
    st.exported_states = Arc::new(current);
    ctx.metrics.cluster_state.set(
        &ws.namespace().unwrap_or_default(),
        &ws.name_any(),
        st.exported_states.clone(),
    );
}

fn state_of(c: &crate::emr::RayCluster) -> &str {
    c.state.as_ref().map_or("Unknown", |s| s.as_str())
}
