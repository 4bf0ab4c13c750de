//! Mirrors left without an owner. `kubectl delete emrworkspace NAME --cascade=orphan` makes the
//! garbage collector take the workspace's owner reference off its mirrors — cluster and job
//! mirrors alike — and keep them: they would stay `Ready=True` for ever, and no tenant may
//! delete them (the mirrors are read-only). The operator never writes a mirror without its
//! owner, so a managed mirror without one is such a leftover:
//!
//! * a workspace of the name in its `spec.workspaceRef` exists (it came back): its next sync
//!   takes the mirror over like its own (`write::existing_mirrors`, `jobs::ExistingJob::of`),
//!   the sweep only wakes it;
//! * none exists (asked of the API server, not of the cache, which may lag): the mirror is
//!   deleted, on the condition that it is unchanged since it was seen (its resourceVersion
//!   and UID: a mirror taken over meanwhile is never deleted).
//!
//! Cluster mirrors are found in the mirror watch's store (its index of mirrors without a
//! controller), at no cost. Job mirrors are not watched (see [`super::jobs`]): [`JobOrphans`]
//! looks for them with a paged LIST of the managed job mirrors — after a workspace of this
//! controller was deleted (the only way they arise while the operator runs), once after the
//! operator starts leading (those orphaned while it was down), and every
//! [`JOB_PASS_PERIOD`] (any other way one was missed).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::Context;
use crate::api::{EmrRayCluster, EmrRayJob, EmrWorkspace, LABEL_MANAGED_BY, MANAGED_BY};
use crate::metrics::{KubeResource, WriteOperation};

/// Most orphans of one kind deleted in one sweep (the rest wait for the next one: never a
/// storm).
const MAX_DELETES_PER_SWEEP: usize = 100;

/// A mirror without a controlling owner, as seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Orphan {
    namespace: String,
    name: String,
    /// The workspace it names (`spec.workspaceRef`).
    workspace_ref: String,
    resource_version: Option<String>,
    uid: Option<String>,
}

/// One sweep of the cluster mirrors (run by the leader every few seconds). Returns the
/// workspaces to wake so that they take their orphaned mirrors over.
pub async fn sweep(
    ctx: &Context,
    workspaces: &Store<EmrWorkspace>,
) -> Vec<ObjectRef<EmrWorkspace>> {
    let orphans = ctx.caches.mirrors.store().orphans(None);
    if orphans.is_empty() {
        return Vec::new();
    }
    let orphans = orphans
        .into_iter()
        .map(|m| Orphan {
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            workspace_ref: m.workspace_ref.clone(),
            resource_version: m.resource_version.clone(),
            uid: None,
        })
        .collect();
    settle::<EmrRayCluster>(ctx, workspaces, orphans, KubeResource::EmrRayClusters)
        .await
        .0
}

/// How often the job mirrors are looked through when nothing asked for it sooner.
pub const JOB_PASS_PERIOD: Duration = Duration::from_secs(300);
/// Job mirrors per page of the pass's LIST.
const JOB_PAGE: u32 = 500;
/// Most pages of one pass (a bound on its cost; the rest is reached by the next pass, which
/// is then due at the next sweep).
const MAX_JOB_PAGES: usize = 100;
/// Most orphaned job mirrors kept from one pass (the rest are found by the next).
const MAX_JOB_ORPHANS: usize = 1000;

/// The job-mirror part of the sweep: when a pass is due, one paged LIST of this controller's
/// managed job mirrors (its namespace scope; in a shard, those labelled for it), of which only
/// those without a controller are kept.
pub struct JobOrphans {
    api: Api<EmrRayJob>,
    selector: String,
    next_pass: Option<Instant>,
    /// Where the previous pass stopped, when it hit [`MAX_JOB_PAGES`].
    resume: Option<String>,
}

impl JobOrphans {
    /// `ns`: the controller's namespace (`None`: all); `shard`: the shard's label selector.
    pub fn new(client: kube::Client, ns: Option<&str>, shard: Option<&str>) -> Self {
        let mut selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        if let Some(shard) = shard {
            selector.push_str(&format!(",{shard}"));
        }
        JobOrphans {
            api: match ns {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            },
            selector,
            next_pass: None,
            resume: None,
        }
    }

    /// One sweep: a pass if one is due (see the module), else nothing. Returns the workspaces
    /// to wake.
    pub async fn sweep(
        &mut self,
        ctx: &Context,
        workspaces: &Store<EmrWorkspace>,
    ) -> Vec<ObjectRef<EmrWorkspace>> {
        let now = Instant::now();
        let asked = ctx.caches.job_orphans_due.swap(false, Ordering::SeqCst);
        if !pass_due(asked, self.next_pass, self.resume.is_some(), now) {
            return Vec::new();
        }
        self.next_pass = now.checked_add(JOB_PASS_PERIOD);
        let orphans = match self.list().await {
            Ok(o) => o,
            // No EmrRayJob CRD installed (older CRDs): no job mirror to look at.
            Err(kube::Error::Api(e)) if e.code == 404 => return Vec::new(),
            Err(e) => {
                warn!(error = %e, "listing the job mirrors for orphans failed; next sweep");
                ctx.caches.job_orphans_due.store(true, Ordering::SeqCst);
                return Vec::new();
            }
        };
        let full = orphans.len() >= MAX_JOB_ORPHANS;
        let (wake, more) =
            settle::<EmrRayJob>(ctx, workspaces, orphans, KubeResource::EmrRayJobs).await;
        if more || full {
            ctx.caches.job_orphans_due.store(true, Ordering::SeqCst);
        }
        wake
    }

    /// The managed job mirrors without a controller, at most [`MAX_JOB_PAGES`] pages from
    /// where the previous pass stopped.
    async fn list(&mut self) -> Result<Vec<Orphan>, kube::Error> {
        let mut lp = ListParams::default().labels(&self.selector).limit(JOB_PAGE);
        let mut found = Vec::new();
        for _ in 0..MAX_JOB_PAGES {
            if let Some(token) = self.resume.take() {
                lp = lp.continue_token(&token);
            }
            let page = match self.api.list(&lp).await {
                Ok(p) => p,
                // The continue token expired: the next pass starts over.
                Err(kube::Error::Api(e)) if e.code == 410 => {
                    self.resume = None;
                    return Ok(found);
                }
                Err(e) => return Err(e),
            };
            for m in &page.items {
                if found.len() < MAX_JOB_ORPHANS && !has_controller(m) {
                    found.push(Orphan {
                        namespace: m.namespace().unwrap_or_default(),
                        name: m.name_any(),
                        workspace_ref: m.spec.workspace_ref.clone(),
                        resource_version: m.resource_version(),
                        uid: m.uid(),
                    });
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => self.resume = Some(c),
                None => return Ok(found),
            }
        }
        debug!(
            pages = MAX_JOB_PAGES,
            "job mirror pass stopped at its page bound; it goes on at the next sweep"
        );
        Ok(found)
    }
}

/// Whether a job pass runs now: asked for (a workspace was deleted, or the last pass did not
/// finish its work), never run yet, its period passed, or a paged pass to go on with. Pure.
fn pass_due(asked: bool, next_pass: Option<Instant>, resuming: bool, now: Instant) -> bool {
    asked || resuming || next_pass.is_none_or(|t| now >= t)
}

fn has_controller<K: Resource>(m: &K) -> bool {
    m.owner_references()
        .iter()
        .any(|o| o.controller == Some(true))
}

/// Wakes the returning workspaces of `orphans` and deletes those of workspaces that are gone
/// (at most [`MAX_DELETES_PER_SWEEP`]). Returns the workspaces to wake and whether deletes
/// were left for the next sweep (the bound, or a failure).
async fn settle<K>(
    ctx: &Context,
    workspaces: &Store<EmrWorkspace>,
    orphans: Vec<Orphan>,
    kind: KubeResource,
) -> (Vec<ObjectRef<EmrWorkspace>>, bool)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
{
    let mut by_workspace: BTreeMap<(String, String), Vec<Orphan>> = BTreeMap::new();
    for m in orphans {
        by_workspace
            .entry((m.namespace.clone(), m.workspace_ref.clone()))
            .or_default()
            .push(m);
    }
    let mut wake = Vec::new();
    let mut deleted = 0;
    let mut more = false;
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
                more = true;
                continue;
            }
        }
        let api: Api<K> = Api::namespaced(ctx.kube.client.clone(), &ns);
        for m in mirrors {
            if deleted >= MAX_DELETES_PER_SWEEP {
                return (wake, true);
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: m.resource_version.clone(),
                    uid: m.uid.clone(),
                }),
                ..DeleteParams::background()
            };
            match api.delete(&m.name, &dp).await {
                Ok(_) => {
                    deleted += 1;
                    ctx.metrics.count_write(kind, WriteOperation::DeleteOrphan);
                    info!(namespace = %ns, mirror = %m.name, resource = kind.as_str(), workspace = %name, "deleted a mirror whose workspace was deleted with --cascade=orphan");
                }
                // Gone already, or changed since (adopted): nothing to do.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    more = true;
                    warn!(namespace = %ns, mirror = %m.name, resource = kind.as_str(), error = %e, "deleting an orphaned mirror failed; next sweep");
                }
            }
        }
    }
    (wake, more)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_pass_runs_when_asked_at_start_after_its_period_or_to_go_on() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let earlier = now - Duration::from_secs(1);
        // (asked, next pass, resuming) -> due
        let rows = [
            (false, None, false, true, "never run: after the start"),
            (false, Some(later), false, false, "within the period"),
            (true, Some(later), false, true, "a workspace was deleted"),
            (false, Some(earlier), false, true, "the period passed"),
            (false, Some(later), true, true, "a paged pass to go on with"),
        ];
        for (asked, next, resuming, want, what) in rows {
            assert_eq!(pass_due(asked, next, resuming, now), want, "{what}");
        }
    }
}
