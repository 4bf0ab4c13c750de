//! The raw writer: the initial sync's Kubernetes writes alone, the floor the operator's initial
//! sync is measured against.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;

use emr_ray_operator::api::EmrRayCluster;
use emr_ray_operator::controller::apply::WRITE_CONCURRENCY;

use super::phases::apply_mirrors;
use super::{Args, delete_namespace, setup};

/// What writing every mirror and its status took.
pub(super) struct Raw {
    /// From the first write to the last answer.
    pub(super) time: Duration,
    /// Write requests sent (a mirror and its status each).
    pub(super) writes: usize,
    /// Of those, refused.
    pub(super) failed: usize,
}

/// In a fresh namespace with the same W workspaces (and no operator), server-side-applies the
/// W × C mirrors and then each one's status — built as the naive baseline builds them, from the
/// simulator's clusters, with the workspace as controlling owner (the owners exist, so the
/// garbage collector leaves the mirrors alone) — with the operator's parallelism:
/// `--concurrency` workspaces at a time, [`WRITE_CONCURRENCY`] clusters each. Nothing else is
/// done in the timed part: no listing, no reads. The namespace is gone when this returns.
pub(super) async fn raw_writer(args: &Args, client: &kube::Client) -> anyhow::Result<Raw> {
    let setup = setup(args, client, "raw writer", args.workspaces, 0).await?;
    let ws_list = setup.workspaces.list(&Default::default()).await?.items;
    let work: Vec<_> = ws_list
        .into_iter()
        .map(|ws| {
            let clusters = setup.sim.state.clusters(&ws.spec.workspace_id);
            (ws, clusters)
        })
        .collect();
    let api: Api<EmrRayCluster> = Api::namespaced(client.clone(), &setup.ns);
    let start = Instant::now();
    let failed = futures::stream::iter(work)
        .map(|(ws, clusters)| {
            let api = &api;
            async move { apply_mirrors(api, &ws, clusters, WRITE_CONCURRENCY, "raw-writer").await }
        })
        .buffer_unordered(usize::from(args.concurrency.max(1)))
        .fold(0, |sum, failed| futures::future::ready(sum + failed))
        .await;
    let time = start.elapsed();
    delete_namespace(client, &setup.ns).await?;
    setup.sim.shutdown().await;
    Ok(Raw {
        time,
        writes: 2 * setup.total,
        failed,
    })
}
