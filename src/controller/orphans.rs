//! Mirrors left without an owner. `kubectl delete emrworkspace NAME --cascade=orphan` makes the
//! garbage collector take the workspace's owner reference off its mirrors and keep them: they
//! would stay `Ready=True` for ever, and no tenant may delete them (the mirrors are read-only).
//! The operator never writes a mirror without its owner, so a managed mirror without one is
//! such a leftover:
//!
//! * a workspace of the name in its `spec.workspaceRef` exists (it came back): its next sync
//!   takes the mirror over like its own (`sync::write_mirrors`), the sweep only wakes it;
//! * none exists (asked of the API server, not of the cache, which may lag): the mirror is
//!   deleted, on the condition that it is unchanged since it was seen.

use std::collections::BTreeMap;

use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, info, warn};

use super::Context;
use crate::api::{EmrRayCluster, EmrWorkspace};
use crate::metrics::{KubeResource, WriteOperation};

/// Most orphans deleted in one sweep (the rest wait for the next one: never a storm).
const MAX_DELETES_PER_SWEEP: usize = 100;

/// One sweep (run by the leader every few seconds). Returns the workspaces to wake so that
/// they take their orphaned mirrors over.
pub async fn sweep(
    ctx: &Context,
    workspaces: &Store<EmrWorkspace>,
) -> Vec<ObjectRef<EmrWorkspace>> {
    let orphans = ctx.caches.mirrors.store().orphans(None);
    if orphans.is_empty() {
        return Vec::new();
    }
    let mut by_workspace: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for m in orphans {
        by_workspace
            .entry((m.namespace.clone(), m.workspace_ref.clone()))
            .or_default()
            .push(m);
    }
    let mut wake = Vec::new();
    let mut deleted = 0;
    for ((ns, name), mirrors) in by_workspace {
        let here = ObjectRef::<EmrWorkspace>::new(&name).within(&ns);
        if let Some(ws) = workspaces.get(&here) {
            if super::lifecycle::mirror_shard(ctx, &ws).is_err() {
                // Its namespace is another shard's, which adopts the mirrors when it arrives.
                continue;
            }
            if ws.metadata.deletion_timestamp.is_none() {
                wake.push(here);
                continue;
            }
        }
        match workspace_exists(ctx, &ns, &name).await {
            // Being deleted, or not in the cache yet: not ours to delete.
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                debug!(namespace = %ns, workspace = %name, error = %e, "looking up the workspace of orphaned mirrors failed; next sweep");
                continue;
            }
        }
        let api: Api<EmrRayCluster> = Api::namespaced(ctx.kube.client.clone(), &ns);
        for m in mirrors {
            if deleted >= MAX_DELETES_PER_SWEEP {
                return wake;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: m.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&m.name, &dp).await {
                Ok(_) => {
                    deleted += 1;
                    ctx.metrics
                        .count_write(KubeResource::EmrRayClusters, WriteOperation::DeleteOrphan);
                    info!(namespace = %ns, mirror = %m.name, workspace = %name, "deleted a mirror whose workspace was deleted with --cascade=orphan");
                }
                // Gone already, or changed since (adopted): nothing to do.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    warn!(namespace = %ns, mirror = %m.name, error = %e, "deleting an orphaned mirror failed; next sweep");
                }
            }
        }
    }
    wake
}

/// Whether workspace `ns/name` exists at the API server (the operator may list workspaces, not
/// get them: a consistent list of metadata by name).
async fn workspace_exists(ctx: &Context, ns: &str, name: &str) -> Result<bool, kube::Error> {
    let api: Api<EmrWorkspace> = Api::namespaced(ctx.kube.client.clone(), ns);
    let list = api
        .list_metadata(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await?;
    Ok(!list.items.is_empty())
}
