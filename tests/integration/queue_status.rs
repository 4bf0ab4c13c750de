//! Queue capacity end to end on the real control plane: `status.queues` and the
//! `queue_resource` series follow the simulator's queues, a steady workspace writes nothing, a
//! failed queue listing keeps what is shown (and says so) without touching Ready, and the
//! series of a queue that left, then of a deleted workspace, are dropped.

use crate::common;
use crate::support::{Env, WS};
use emr_ray_operator::api::{EmrWorkspaceStatus, QueueQuantities};
use emr_ray_operator::emr::{QueueResources, WorkspaceQueue};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use std::time::Duration;

fn queue(name: &str, max_cpu: f64, used_cpu: f64) -> WorkspaceQueue {
    let r = |cpu: f64| QueueResources {
        cpu: Some(cpu),
        memory_gi: Some(cpu * 4.0),
        gpu: Some(0.0),
    };
    WorkspaceQueue {
        queue_name: Some(name.into()),
        queue_status: Some("RUNNING".into()),
        queue_type: Some("instance".into()),
        min_resource: Some(r(0.0).to_wire()),
        max_resource: Some(r(max_cpu).to_wire()),
        used_resource: Some(r(used_cpu).to_wire()),
        ..Default::default()
    }
}

fn used_cpu(st: &EmrWorkspaceStatus, name: &str) -> Option<String> {
    st.queues
        .iter()
        .find(|q| q.name == name)
        .and_then(|q| q.used.as_ref())
        .and_then(|u| u.cpu.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_capacity_in_status_and_metrics() {
    let mut env = Env::new("e2e-queues").await;
    env.sim.state.set_queues(
        WS,
        vec![
            queue("root_queue", 100.0, 12.0),
            queue("dev_queue", 16.0, 1.0),
        ],
    );
    env.create_workspace("ws", json!({"syncInterval": "10s"}))
        .await;
    env.start();
    let what = "status.queues with both queues";
    let st = common::wait_for(Duration::from_secs(60), what, || async {
        let st = env.status("ws").await;
        (st.queues.len() == 2).then_some(st)
    })
    .await;
    let root = st.queues.iter().find(|q| q.name == "root_queue").unwrap();
    assert_eq!(
        root.max,
        Some(QueueQuantities {
            cpu: Some("100".into()),
            memory: Some("400Gi".into()),
            gpu: Some("0".into()),
        })
    );
    assert_eq!(root.status.as_deref(), Some("RUNNING"));
    assert_eq!(st.queues[0].name, "dev_queue", "sorted by name");
    let op = &env.operators[0];
    let series = |queue: &str, resource: &str, kind: &str| {
        op.metric(
            "emr_ray_operator_queue_resource",
            &[("queue", queue), ("resource", resource), ("kind", kind)],
        )
    };
    assert_eq!(series("root_queue", "cpu", "max"), 100.0);
    assert_eq!(series("root_queue", "memory_gibibytes", "used"), 48.0);

    // Steady state: a whole sync (cluster and queue listings) writes nothing.
    env.wait_next_sync(0, "ws", Duration::from_secs(45)).await;
    let writes = op.writes();
    env.wait_next_sync(0, "ws", Duration::from_secs(45)).await;
    assert_eq!(op.writes(), writes, "a steady workspace writes nothing");

    // Use changes: the status and the series follow.
    env.sim.state.set_queue_usage(
        WS,
        "root_queue",
        QueueResources {
            cpu: Some(95.0),
            memory_gi: Some(380.0),
            gpu: Some(0.0),
        }
        .to_wire(),
    );
    common::wait_for(Duration::from_secs(45), "used cpu 95", || async {
        (used_cpu(&env.status("ws").await, "root_queue").as_deref() == Some("95")).then_some(())
    })
    .await;
    assert_eq!(series("root_queue", "cpu", "used"), 95.0);

    // A queue listing that cannot be trusted (a queue listed twice): the queues shown stay,
    // the failure is in the status and an Event, and Ready stays True (the clusters synced).
    env.sim.state.set_queues(
        WS,
        vec![
            queue("root_queue", 100.0, 1.0),
            queue("root_queue", 100.0, 2.0),
        ],
    );
    let st = common::wait_for(Duration::from_secs(45), "queueListingFailure", || async {
        let st = env.status("ws").await;
        st.queue_listing_failure.is_some().then_some(st)
    })
    .await;
    let failure = st.queue_listing_failure.clone().unwrap();
    assert_eq!(failure.reason, "IncompleteListing", "{failure:?}");
    assert!(failure.message.contains("repeats queue"), "{failure:?}");
    assert_eq!(st.queues.len(), 2, "kept: {:?}", st.queues);
    assert_eq!(used_cpu(&st, "root_queue").as_deref(), Some("95"));
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(20))
        .await;
    let events: Api<KubeEvent> = Api::namespaced(env.client.clone(), &env.ns.name);
    common::wait_for(
        Duration::from_secs(10),
        "QueueListingFailed event",
        || async {
            let evs = events.list(&ListParams::default()).await.unwrap().items;
            evs.iter()
                .any(|e| e.reason.as_deref() == Some("QueueListingFailed"))
                .then_some(())
        },
    )
    .await;

    // Recovery with dev_queue gone: the failure clears, its series go.
    env.sim
        .state
        .set_queues(WS, vec![queue("root_queue", 100.0, 50.0)]);
    common::wait_for(Duration::from_secs(45), "recovered, one queue", || async {
        let st = env.status("ws").await;
        (st.queue_listing_failure.is_none() && st.queues.len() == 1).then_some(())
    })
    .await;
    assert_eq!(series("dev_queue", "cpu", "max"), 0.0);
    assert!(
        !op.metrics.encode().contains("queue=\"dev_queue\""),
        "dev_queue's series are dropped"
    );
    assert_eq!(series("root_queue", "cpu", "used"), 50.0);

    // The workspace goes: so do its series.
    env.workspaces()
        .delete("ws", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_for(Duration::from_secs(45), "queue series dropped", || async {
        (!op.metrics
            .encode()
            .contains("emr_ray_operator_queue_resource{"))
        .then_some(())
    })
    .await;
    env.teardown().await;
}
