//! Tests that count the API server's requests or restart it: they run one at a time (each takes
//! [`common::serial`]), after the integration tests, in their own binary.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use emr_ray_operator::api::EmrWorkspaceStatus;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use common::wait_for;
use support::condition;

mod fairness;
mod fault_suite;
mod steady_state;
mod write_refusals;

// The helpers only these tests use.

/// Waits until no namespace is terminating: the namespace controller's deletions of earlier
/// tests' objects would count as writes in the API server's request metrics.
pub async fn wait_no_namespace_terminating(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for(
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
    .await
}

/// Serialises the tests that take it (those that count the API server's requests or restart
/// it): hold the guard for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The workspace's Ready condition: (status, reason, message); empty when it has none.
pub fn ready_of(st: &EmrWorkspaceStatus) -> (String, String, String) {
    condition(&st.conditions, "Ready")
        .map(|c| (c.status.to_string(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Writes to `emrrayclusters` the API server has seen, of the kinds the operator sends.
/// DELETECOLLECTION is left out: only the namespace controller sends it, once per resource type
/// for every namespace it cleans up, mirrors or not.
pub async fn apiserver_mirror_writes(client: &kube::Client) -> f64 {
    let metrics = common::apiserver_metrics(client).await;
    common::count_write_requests(&metrics, "emrrayclusters")
        - common::count_requests(&metrics, "DELETECOLLECTION", "emrrayclusters")
}
