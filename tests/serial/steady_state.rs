//! A steady state with no remote change causes no writes to mirrors, counted by the API
//! server's own `apiserver_request_total` (the serial lock keeps every other test from writing
//! mirrors meanwhile) and by the operator's metrics.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use crate::common;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_writes_no_mirror() {
    let _serial = crate::serial().await;
    let mut env = Env::new("e2e-steady").await;
    env.sim.state.generate(WS, 24, "ray-steady");
    env.create_workspace("ws", json!({})).await;
    env.start();
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    common::wait_for(
        Duration::from_secs(30),
        "25 mirrors with status",
        || async {
            let l = env.mirror_list().await;
            (l.len() == 25 && l.iter().all(|m| m.status.is_some())).then_some(())
        },
    )
    .await;
    // Other test binaries' namespaces may still be being deleted (their mirrors' DELETEs would
    // count as writes): wait until no namespace is terminating.
    crate::wait_no_namespace_terminating(&env.client).await;
    // A whole sync after the first one has finished: nothing of the initial sync is in flight.
    env.wait_next_sync(0, "ws", Duration::from_secs(40)).await;
    let versions: Vec<(String, String)> = env
        .mirror_list()
        .await
        .iter()
        .map(|m| (m.name_any(), m.resource_version().unwrap()))
        .collect();
    let before = crate::apiserver_mirror_writes(&env.client).await;
    let syncs_before = env.sim.state.stats().requests;
    let op_writes_before = env.operators[0].writes();
    let op_mirror_writes_before = env.operators[0].writes_to("emrrayclusters");

    // Three whole syncs with no remote change.
    for _ in 0..3 {
        env.wait_next_sync(0, "ws", Duration::from_secs(40)).await;
    }

    let after = crate::apiserver_mirror_writes(&env.client).await;
    let syncs = env.sim.state.stats().requests - syncs_before;
    assert!(
        syncs >= 2,
        "the workspace kept syncing ({syncs} remote requests)"
    );
    assert_eq!(
        after - before,
        0.0,
        "API server saw writes to emrrayclusters in steady state"
    );
    assert_eq!(
        env.operators[0].writes_to("emrrayclusters") - op_mirror_writes_before,
        0,
        "the operator wrote mirrors in steady state"
    );
    let ws_writes = env.operators[0].writes() - op_writes_before;
    // Only the workspace status (at most once per sync) was written.
    assert!(ws_writes <= syncs, "{ws_writes} writes for {syncs} syncs");
    let now: Vec<(String, String)> = env
        .mirror_list()
        .await
        .iter()
        .map(|m| (m.name_any(), m.resource_version().unwrap()))
        .collect();
    assert_eq!(now, versions, "no mirror changed resourceVersion");
    env.teardown().await;
}
