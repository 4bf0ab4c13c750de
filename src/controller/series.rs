//! The `cluster_state` series of the listed clusters: replaced when a listing changes them,
//! dropped when a workspace is deleted (see [`crate::metrics::ClusterStates`]). Their `state`
//! label is one of a fixed set ([`ClusterState::label`]).

use std::sync::Arc;

use super::state::WorkspaceState;
use super::{Context, mirror};
use crate::api::EmrWorkspace;
use crate::emr::ClusterState;
use crate::metrics::ClusterStateMap;
use kube::ResourceExt;

/// Exports each listed cluster's state, when the listing changed them.
pub(super) fn update(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
    let Some(listing) = &st.listing else { return };
    let changed = listing.len() != st.exported_states.len()
        || listing.states().any(|(id, state)| {
            st.exported_states
                .get(id)
                .is_none_or(|(_, old)| *old != ClusterState::label(state))
        });
    if !changed {
        return;
    }
    let current: ClusterStateMap = listing
        .states()
        .map(|(id, state)| {
            (
                id.clone(),
                (mirror::mirror_name(id), ClusterState::label(state)),
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
