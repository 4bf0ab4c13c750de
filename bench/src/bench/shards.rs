//! The initial sync split over several operator processes, one per shard key.

use std::time::Duration;

use super::phases::{SYNC_LIMIT, spawn_operator, stop_operator};
use super::{
    Args, Proc, delete_namespace, expected_states, setup, shard_key, wait_all_correct,
    watch_mirrors,
};

/// One shard's operator after the sharded initial sync.
pub(super) struct ShardProc {
    pub(super) key: String,
    /// Peak RSS, KiB.
    pub(super) hwm: u64,
    pub(super) cpu: f64,
}

/// The sharded initial sync.
pub(super) struct Sharded {
    /// Until every mirror (of every shard) was correct.
    pub(super) time: Duration,
    /// Remote requests of all shards together.
    pub(super) requests: u64,
    pub(super) procs: Vec<ShardProc>,
}

/// W × C in `shards` fresh namespaces, each labelled with its shard key (the workspaces taking
/// them in turn), and one operator process per key, each watching every namespace of the
/// setup (`--shard-selector sharding.emr.aliyun.io/key=<key>`: it serves its namespace's
/// workspaces), all started at once; the time until every mirror is correct, and each
/// process's peak RSS and CPU a second later. The namespaces are gone when this returns.
pub(super) async fn sharded_sync(
    args: &Args,
    client: &kube::Client,
    shards: usize,
) -> anyhow::Result<Sharded> {
    let setup = setup(args, client, "shards", args.workspaces, shards).await?;
    let watch = watch_mirrors(client, &setup.namespaces).await?;
    let expected = expected_states(&setup);
    setup.sim.state.reset_stats();
    let mut children = Vec::new();
    for i in 0..shards {
        let key = shard_key(i);
        let child = spawn_operator(
            args,
            &setup.namespaces,
            "127.0.0.1:0",
            "127.0.0.1:0",
            Some(&key),
        )?;
        children.push((key, child));
    }
    let synced = wait_all_correct(&watch, &expected, SYNC_LIMIT).await;
    let requests = setup.sim.state.stats().requests;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let procs = children
        .iter()
        .map(|(key, child)| {
            let op = Proc::of(child);
            ShardProc {
                key: key.clone(),
                hwm: op.status_kb("VmHWM:"),
                cpu: op.cpu_seconds(),
            }
        })
        .collect();
    for (_, child) in &mut children {
        stop_operator(child).await;
    }
    watch.stop();
    for ns in &setup.namespaces {
        delete_namespace(client, ns).await?;
    }
    setup.sim.shutdown().await;
    Ok(Sharded {
        time: synced?,
        requests,
        procs,
    })
}
