//! Workspaces that leave this replica (deleted, or their namespace moved to another shard):
//! what is remembered about them and their metric series are dropped; their mirrors are left
//! as they are. And the wait for a reflector store's first complete list.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tracing::debug;

use super::context::{Context, key};
use super::{jobs, queues, shard};
use crate::api::EmrWorkspace;
use crate::metrics::WorkspaceLabels;

/// Forgets a workspace that left this replica's watch (deleted): what is remembered about it
/// and its metric series. Its mirrors are left as they are.
///
/// Deleted with `--cascade=orphan`, it left its job mirrors without an owner: the next sweep
/// looks for them (see [`super::orphans`]).
pub fn forget(ctx: &Context, ws: &EmrWorkspace) {
    crate::controller::lock(&ctx.caches.departed)
        .insert(ws.uid().unwrap_or_default(), Instant::now());
    ctx.caches.job_orphans_due.store(true, Ordering::SeqCst);
    forget_key(ctx, &key(ws));
}

/// Namespace `ns` left this replica's shard: what is remembered about its workspaces, and their
/// metric series, is dropped. Their mirrors are left to the shard that serves them now; a
/// reconcile still in flight writes nothing more (see `has_departed`).
pub fn namespace_left(ctx: &Context, ns: &str) {
    for k in ctx.caches.states.keys() {
        if k.split_once('/').is_some_and(|(n, _)| n == ns) {
            forget_key(ctx, &k);
        }
    }
}

/// The shard label value a workspace's mirrors carry: none in an unsharded replica, else its
/// namespace's; [`shard::NotServed`] when this replica's shard does not serve the namespace.
/// Never a label of the workspace itself: its tenant writes that (see [`shard`]).
pub(super) fn mirror_shard(
    ctx: &Context,
    ws: &EmrWorkspace,
) -> Result<Option<String>, shard::NotServed> {
    match &ctx.settings.shard {
        None => Ok(None),
        Some(served) => served.label(&ws.namespace().unwrap_or_default()),
    }
}

/// Whether a workspace is no longer this replica's: deleted, or its namespace left the shard.
pub(super) fn has_departed(ctx: &Context, ws: &EmrWorkspace) -> bool {
    let deleted = {
        let departed = crate::controller::lock(&ctx.caches.departed);
        !departed.is_empty() && departed.contains_key(&ws.uid().unwrap_or_default())
    };
    deleted || mirror_shard(ctx, ws).is_err()
}

/// Drops what is remembered about a workspace, and its metric series.
pub(super) fn forget_key(ctx: &Context, k: &str) {
    crate::controller::lock(&ctx.caches.errors).remove(k);
    let Some(st) = ctx.caches.states.remove(k) else {
        return;
    };
    ctx.caches.mirrors.forget_owner(&st.uid);
    let (namespace, workspace) = k.split_once('/').unwrap_or(("", k));
    let l = WorkspaceLabels {
        namespace: namespace.to_string(),
        workspace: workspace.to_string(),
    };
    ctx.metrics.last_success.remove(&l);
    ctx.metrics.workspace_clusters.remove(&l);
    ctx.metrics.workspace_ready.remove(&l);
    ctx.metrics.workspace_mirrors_unwritten.remove(&l);
    ctx.metrics.workspace_suspended.remove(&l);
    jobs::forget_metrics(ctx, &l);
    ctx.metrics.sync_attempts.remove(&l);
    ctx.metrics.sync_duration.remove(&l);
    ctx.metrics.cluster_state.remove(namespace, workspace);
    queues::remove_series(ctx, namespace, workspace, st.exported_queues.as_deref());
}

/// A watch's first complete list, as a signal any number of tasks can await: set by the watch
/// stream itself when it sees its first `InitDone` (after the reflector has stored it).
///
/// Not `Store::wait_until_ready`: kube-runtime's readiness is a oneshot receiver behind a
/// mutex, which keeps the waker of only the last task that polled it, so with several waiters
/// some are never woken — and the controller's own runner is always one of them (a task of
/// ours awaiting the store as well was never woken, and the operator never became ready).
/// Instead the watch stream that feeds the store says when its first list is complete
/// ([`Readiness::set`], on its `InitDone`), and that is published on a `watch` channel.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Readiness {
    /// The store has its first complete list (the stream feeding it passed its `InitDone`).
    pub fn set(&self) {
        self.0.send_replace(true);
    }

    /// Whether the watch has listed everything once.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the watch has listed everything once (or its setter is gone: the watch
    /// stopped with the controller).
    pub async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(|ready| *ready).await;
    }
}

/// How long a departed workspace's in-flight reconcile is watched for (longer than any sync).
const DEPARTED_TTL: Duration = Duration::from_secs(600);

/// Forgets workspaces that no longer exist (deleted workspaces are not reconciled again).
pub fn prune_deleted(ctx: &Context, workspaces: &Store<EmrWorkspace>) {
    crate::controller::lock(&ctx.caches.departed).retain(|_, at| at.elapsed() < DEPARTED_TTL);
    let live: std::collections::HashSet<String> =
        workspaces.state().iter().map(|ws| key(ws)).collect();
    for k in ctx.caches.states.keys() {
        if !live.contains(&k) {
            debug!(workspace = %k, "workspace deleted; forgetting it");
            ctx.caches.job_orphans_due.store(true, Ordering::SeqCst);
            forget_key(ctx, &k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Readiness;

    /// Every waiter is woken, however many wait (kube's own readiness wakes only the last).
    #[tokio::test]
    async fn readiness_wakes_every_waiter() {
        let ready = Readiness::default();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let r = ready.clone();
                tokio::spawn(async move { r.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        ready.set();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("woken")
                .unwrap();
        }
        // Once set, a new waiter returns at once.
        ready.wait().await;
    }
}
