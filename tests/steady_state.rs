//! A steady state with no remote change causes no writes to mirrors, counted by the API
//! server's own `apiserver_request_total` (this binary holds this one test only, so no other
//! test writes mirrors meanwhile) and by the operator's metrics.

mod common;
mod support;

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use support::*;

/// Writes to `emrrayclusters` of the kinds the operator sends (create, update, patch, apply,
/// delete). DELETECOLLECTION is left out: only the namespace controller sends it, once per
/// resource type for every namespace it cleans up, mirrors or not.
fn mirror_writes(metrics: &str) -> f64 {
    ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
        .iter()
        .map(|v| common::count_requests(metrics, v, "emrrayclusters"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_writes_no_mirror() {
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
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(env.client.clone());
    common::wait_for(
        Duration::from_secs(180),
        "no namespace terminating",
        || async {
            let list = namespaces.list(&Default::default()).await.unwrap();
            let terminating = list
                .items
                .iter()
                .any(|n| n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating"));
            (!terminating).then_some(())
        },
    )
    .await;
    // Let the first sync's writes settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let versions: Vec<(String, String)> = env
        .mirror_list()
        .await
        .iter()
        .map(|m| (m.name_any(), m.resource_version().unwrap()))
        .collect();
    let before = mirror_writes(&common::apiserver_metrics(&env.client).await);
    let syncs_before = env.sim.state.stats().requests;
    let op_writes_before = env.operators[0].writes();
    let own_mirror_writes = |text: String| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("emr_ray_operator_kube_writes_total{"))
            .filter(|l| l.contains("resource=\"emrrayclusters\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let op_mirror_writes_before = own_mirror_writes(env.operators[0].metrics.encode());

    // Three sync intervals with no remote change.
    tokio::time::sleep(Duration::from_secs(35)).await;

    let after = mirror_writes(&common::apiserver_metrics(&env.client).await);
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
        own_mirror_writes(env.operators[0].metrics.encode()) - op_mirror_writes_before,
        0.0,
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
