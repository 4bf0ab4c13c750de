//! End-to-end tests of the operator against the real control plane and the EMR simulator.

use crate::common;

use std::time::Duration;

use crate::support::*;
use emr_ray_operator::emr::{ClusterState, RayCluster};
use emr_sim::Faults;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

/// One sync interval plus jitter and slack.
const ONE_INTERVAL: Duration = Duration::from_secs(25);

async fn events_for(env: &Env, name: &str) -> Vec<KubeEvent> {
    Api::<KubeEvent>::namespaced(env.client.clone(), &env.ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_example_is_mirrored_with_every_field() {
    let mut env = Env::new("e2e-example").await;
    env.create_workspace("prod", json!({})).await;
    env.start();
    let st = env
        .wait_ready("prod", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    assert_eq!(st.clusters, Some(1));
    assert_eq!(st.ready_clusters, Some(1));
    assert_eq!(st.clusters_by_state.get("Running"), Some(&1));
    assert!(st.last_successful_sync_time.is_some());
    assert!(st.observed_generation.is_some());
    assert!(st.last_failure.is_none());
    assert_eq!(st.sync_interval.as_deref(), Some("10s"));

    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "example mirror", |_| true)
        .await;
    let ws = env.workspaces().get("prod").await.unwrap();
    // Identity, labels and controller owner reference.
    assert_eq!(m.spec.cluster_id, EXAMPLE_CLUSTER);
    assert_eq!(m.spec.workspace_id, WS);
    assert_eq!(m.spec.workspace_ref, "prod");
    assert_eq!(m.spec.region_id, "cn-hangzhou");
    assert_eq!(
        m.labels()
            .get("emr.aliyun.io/workspace")
            .map(String::as_str),
        Some("prod")
    );
    assert_eq!(
        m.labels()
            .get("emr.aliyun.io/cluster-id")
            .map(String::as_str),
        Some(EXAMPLE_CLUSTER)
    );
    let owner = &m.owner_references()[0];
    assert_eq!(owner.uid, ws.uid().unwrap());
    assert_eq!(owner.controller, Some(true));
    // Every field of the reference.
    let s = m.status.clone().unwrap();
    assert_eq!(s.state.as_deref(), Some("Running"));
    assert_eq!(s.display_name.as_deref(), Some("testRayCluster"));
    assert_eq!(s.description.as_deref(), Some("Ray Cluster for dev."));
    assert_eq!(
        s.release_version.as_deref(),
        Some("ray-1.0.0 (Ray 2.47.1, Python 3.12)")
    );
    assert_eq!(s.network_service_name.as_deref(), Some("vpc"));
    let ep = s.endpoints.clone().unwrap();
    assert_eq!(
        ep.grpc.as_deref(),
        Some("ray://emr-spark-ray-gateway-cn-hanghzou-internal.emr.aliyuncs.com:80")
    );
    let dash = ep.dashboard.unwrap();
    assert!(dash.starts_with("https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com"));
    assert!(
        !dash.contains("token"),
        "dashboard token must be removed: {dash}"
    );
    let h = s.head_spec.clone().unwrap();
    assert_eq!(h.queue_name.as_deref(), Some("root_queue"));
    assert_eq!(h.cpu.as_deref(), Some("2"));
    assert_eq!(h.memory.as_deref(), Some("8Gi"));
    assert_eq!(h.replicas, Some(1));
    assert_eq!(h.gpu_spec.as_deref(), Some("ecs.gn6i-c4g1.xlarge"));
    assert_eq!(h.enable_auto_scaling, Some(false));
    assert_eq!(h.idle_timeout_seconds, Some(60));
    let w = &s.worker_groups[0];
    assert_eq!(w.group_name.as_deref(), Some("Group1"));
    assert_eq!(w.worker_type.as_deref(), Some("CPU"));
    assert_eq!(w.replicas, Some(2));
    assert_eq!(w.min_replicas, Some(1));
    assert_eq!(w.max_replicas, Some(10));
    assert_eq!(w.queue_name.as_deref(), Some("root_queue"));
    assert_eq!(w.gpu_spec.as_deref(), Some("ecs.gn6i-c4g1.xlarge"));
    assert_eq!(s.desired_worker_replicas, Some(2));
    assert_eq!(s.desired_cpu.as_deref(), Some("6"));
    assert_eq!(s.desired_memory.as_deref(), Some("24Gi"));
    assert_eq!(s.creator.as_deref(), Some("202077646755123991"));
    assert_eq!(s.creator_name.as_deref(), Some("Alice"));
    assert_eq!(s.modifier.as_deref(), Some("202077646755123991"));
    assert_eq!(s.modifier_name.as_deref(), Some("Alice"));
    assert_eq!(s.user_id.as_deref(), Some("1234567890"));
    assert_eq!(
        s.instance_id.as_deref(),
        Some("ray-uiulpgow9xljimm1-xxxxxxx")
    );
    assert_eq!(s.modified, Some(false));
    assert_eq!(s.message.as_deref(), Some("ok"));
    assert_eq!(s.create_time.as_deref(), Some("2024-08-15T11:44:39Z"));
    assert_eq!(s.start_time.as_deref(), Some("2024-08-15T11:44:39Z"));
    assert_eq!(s.modified_time.as_deref(), Some("2024-08-15T11:44:39Z"));
    assert_eq!(s.observed_generation, m.metadata.generation);
    let ready = condition(&s.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Running")
    );
    assert!(condition(&s.conditions, "Stalled").is_none());
    assert!(condition(&s.conditions, "Reconciling").is_none());
    // No secret anywhere in the mirror.
    let all = serde_json::to_string(&m).unwrap();
    assert!(
        !all.contains("xxxxxxxxx") && !all.contains("sim-secret"),
        "{all}"
    );

    // kubectl columns like KubeRay's.
    let out = common::kubectl()
        .args(["get", "emrrayclusters", "-n", &env.ns.name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = text.lines().next().unwrap();
    for col in [
        "NAME",
        "DISPLAY NAME",
        "STATE",
        "VERSION",
        "DESIRED WORKERS",
        "CPUS",
        "MEMORY",
        "WORKSPACE",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing in {header:?}");
    }
    let row = text.lines().nth(1).unwrap();
    for v in [EXAMPLE_CLUSTER, "testRayCluster", "Running", "24Gi", "prod"] {
        assert!(row.contains(v), "{v} missing in {row:?}");
    }
    let out = common::kubectl()
        .args(["get", "emrworkspaces", "-n", &env.ns.name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    for col in [
        "WORKSPACE",
        "REGION",
        "CLUSTERS",
        "READY",
        "LAST SYNC",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing in {header:?}");
    }
    assert!(text.lines().nth(1).unwrap().contains(WS));
    // A workspace without syncInterval uses the operator's default (60s here), shown in status.
    env.sim.state.ensure_workspace("w-empty");
    env.workspaces()
        .patch(
            "defaulted",
            &PatchParams::apply("tests"),
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                "metadata": {"name": "defaulted"},
                "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-empty",
                         "endpoint": env.endpoint(),
                         "credentials": {"secretRef": {"name": "emr-credentials"}}},
            })),
        )
        .await
        .unwrap();
    let st = env
        .wait_ready("defaulted", "True", Some("Synced"), Duration::from_secs(30))
        .await;
    assert_eq!(st.sync_interval.as_deref(), Some("1m"));
    assert_eq!(st.clusters, Some(0));
    let ws = env.workspaces().get("defaulted").await.unwrap();
    assert_eq!(ws.spec.sync_interval, None);
    // Category `emr` lists both kinds.
    let out = common::kubectl()
        .args(["get", "emr", "-n", &env.ns.name, "-o", "name"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("emrworkspace.emr.aliyun.io/prod"), "{text}");
    assert!(
        text.contains(&format!("emrraycluster.emr.aliyun.io/{EXAMPLE_CLUSTER}")),
        "{text}"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_reach_the_mirror_with_events() {
    let mut env = Env::new("e2e-state").await;
    env.create_workspace("ws", json!({})).await;
    env.start();
    env.wait_mirror(EXAMPLE_CLUSTER, Duration::from_secs(60), "mirror", |_| true)
        .await;

    assert!(
        env.sim
            .state
            .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Stopping)
    );
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "Stopping", |m| {
            m.status.as_ref().unwrap().state.as_deref() == Some("Stopping")
        })
        .await;
    let s = m.status.unwrap();
    assert_eq!(
        condition(&s.conditions, "Ready").unwrap().status.as_str(),
        "False"
    );
    assert_eq!(
        condition(&s.conditions, "Reconciling")
            .unwrap()
            .status
            .as_str(),
        "True"
    );

    // Error: Warning event and Stalled with the remote message.
    let mut c: RayCluster = env.sim.state.clusters(WS).remove(0);
    c.state = Some(ClusterState::Error);
    c.message = Some("insufficient quota in root_queue".into());
    env.sim.state.upsert_cluster(WS, c);
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "Error", |m| {
            m.status.as_ref().unwrap().state.as_deref() == Some("Error")
        })
        .await;
    let s = m.status.unwrap();
    let stalled = condition(&s.conditions, "Stalled").unwrap();
    assert_eq!(stalled.status.as_str(), "True");
    assert_eq!(stalled.message, "insufficient quota in root_queue");
    assert!(condition(&s.conditions, "Reconciling").is_none());

    let evs = common::wait_for(Duration::from_secs(10), "StateChanged events", || async {
        let evs = events_for(&env, EXAMPLE_CLUSTER).await;
        (evs.iter()
            .filter(|e| e.reason.as_deref() == Some("StateChanged"))
            .count()
            >= 2)
            .then_some(evs)
    })
    .await;
    let warning = evs
        .iter()
        .find(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("StateChanged")
        })
        .expect("a Warning event for the Error state");
    assert!(warning.note.as_deref().unwrap().contains("to Error"));
    assert!(
        warning
            .note
            .as_deref()
            .unwrap()
            .contains("insufficient quota")
    );
    assert!(evs.iter().any(|e| e.reason.as_deref() == Some("Created")));
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_remote_cluster_is_deleted_or_kept_as_gone() {
    let mut env = Env::new("e2e-removed").await;
    let extra = env.sim.state.generate(WS, 2, "ray-extra");
    let kept = env.sim.state.generate("w-keep", 2, "ray-keep");
    env.create_workspace("del", json!({})).await;
    env.create_workspace(
        "keep",
        json!({"workspaceId": "w-keep", "goneClusterPolicy": "Keep"}),
    )
    .await;
    env.start();
    common::wait_for(Duration::from_secs(60), "5 mirrors", || async {
        (env.mirror_list().await.len() == 5).then_some(())
    })
    .await;

    assert!(env.sim.state.remove_cluster(WS, &extra[0]));
    assert!(env.sim.state.remove_cluster("w-keep", &kept[0]));
    let gone_name = emr_ray_operator::controller::mirror::mirror_name(&extra[0]);
    common::wait_for(ONE_INTERVAL, "deleted mirror", || async {
        env.mirrors()
            .get_opt(&gone_name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let m = env
        .wait_mirror(&kept[0], ONE_INTERVAL, "mirror marked gone", |m| {
            m.status.as_ref().unwrap().gone
        })
        .await;
    let ready = condition(&m.status.as_ref().unwrap().conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RemoteClusterGone")
    );
    assert_eq!(env.mirror_list().await.len(), 4);
    let evs = events_for(&env, "del").await;
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("MirrorDeleted")),
        "{evs:?}"
    );
    env.teardown().await;
}

/// Every failing listing keeps every mirror as it was (no delete, no blanking), says why on
/// the workspace and on the mirrors, and recovers when the fault clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_listings_never_delete_or_change_mirrors() {
    let mut env = Env::new("e2e-faults").await;
    let extra = env.sim.state.generate(WS, 3, "ray-f");
    env.create_workspace("ws", json!({})).await;
    env.start();
    env.wait_ready("ws", "True", None, Duration::from_secs(60))
        .await;
    common::wait_for(ONE_INTERVAL, "4 mirrors", || async {
        let l = env.mirror_list().await;
        (l.len() == 4 && l.iter().all(|m| m.status.is_some())).then_some(())
    })
    .await;
    let before: Vec<serde_json::Value> = {
        let mut l = env.mirror_list().await;
        l.sort_by_key(|m| m.name_any());
        l.iter().map(data_of).collect()
    };

    type Setup = Box<dyn Fn(&Env) -> futures::future::BoxFuture<'_, ()> + Send + Sync>;
    let faults: Vec<(&str, &str, Setup)> = vec![
        (
            "5xx",
            "RemoteUnavailable",
            Box::new(|e: &Env| {
                Box::pin(async move {
                    e.sim.state.set_faults(Faults {
                        server_error_rate: 1.0,
                        ..Default::default()
                    });
                })
            }),
        ),
        (
            "throttling",
            "Throttled",
            Box::new(|e: &Env| {
                Box::pin(async move {
                    e.sim.state.set_faults(Faults {
                        throttle_rate: 1.0,
                        throttle_retry_after_secs: 1,
                        ..Default::default()
                    });
                })
            }),
        ),
        (
            "timeout",
            "Timeout",
            Box::new(|e: &Env| {
                Box::pin(async move {
                    e.sim.state.set_faults(Faults {
                        latency_ms: 3000,
                        ..Default::default()
                    });
                })
            }),
        ),
        (
            "malformed",
            "MalformedResponse",
            Box::new(|e: &Env| {
                Box::pin(async move {
                    e.sim.state.set_faults(Faults {
                        malformed_body_rate: 1.0,
                        ..Default::default()
                    });
                })
            }),
        ),
        (
            "truncated",
            "MalformedResponse",
            Box::new(|e: &Env| {
                Box::pin(async move {
                    e.sim.state.set_faults(Faults {
                        truncated_body_rate: 1.0,
                        ..Default::default()
                    });
                })
            }),
        ),
        (
            "bad signature",
            "AuthenticationFailed",
            Box::new(|e: &Env| {
                Box::pin(async move {
                    e.put_secret(
                        "emr-credentials",
                        emr_sim::DEFAULT_ACCESS_KEY_ID,
                        "wrong-secret",
                    )
                    .await;
                })
            }),
        ),
    ];
    for (name, reason, setup) in faults {
        // The remote side also loses a cluster: a failing listing must not delete its mirror.
        let removed = env
            .sim
            .state
            .clusters(WS)
            .into_iter()
            .find(|c| c.cluster_id == extra[0]);
        env.sim.state.remove_cluster(WS, &extra[0]);
        setup(&env).await;
        let st = env
            .wait_ready("ws", "False", Some(reason), Duration::from_secs(40))
            .await;
        let f = st
            .last_failure
            .clone()
            .unwrap_or_else(|| panic!("{name}: lastFailure missing"));
        assert_eq!(f.reason, reason, "{name}");
        if reason == "AuthenticationFailed" {
            assert_eq!(f.code.as_deref(), Some("SignatureDoesNotMatch"));
            assert!(f.request_id.is_some(), "{name}: request id kept");
            assert_eq!(
                condition(&st.conditions, "Stalled")
                    .unwrap()
                    .status
                    .as_str(),
                "True"
            );
        } else {
            assert_eq!(
                condition(&st.conditions, "Reconciling")
                    .unwrap()
                    .status
                    .as_str(),
                "True",
                "{name}"
            );
        }
        // Mirrors: all still there, data unchanged, Synced=False with the reason.
        common::wait_for(Duration::from_secs(15), "mirrors marked stale", || async {
            let l = env.mirror_list().await;
            l.iter()
                .all(|m| {
                    condition(&m.status.as_ref().unwrap().conditions, "Synced")
                        .is_some_and(|c| c.status.as_str() == "False" && c.reason == reason)
                })
                .then_some(())
        })
        .await;
        let mut l = env.mirror_list().await;
        l.sort_by_key(|m| m.name_any());
        assert_eq!(l.len(), 4, "{name}: no mirror lost");
        let now: Vec<serde_json::Value> = l.iter().map(data_of).collect();
        assert_eq!(now, before, "{name}: mirror data unchanged");
        let text = serde_json::to_string(&l).unwrap();
        assert!(!text.contains("wrong-secret") && !text.contains("sim-secret"));
        let ws_text = serde_json::to_string(&st).unwrap();
        assert!(!ws_text.contains("wrong-secret") && !ws_text.contains("sim-secret"));

        // Recovery.
        env.sim.state.set_faults(Faults::default());
        env.put_secret(
            "emr-credentials",
            emr_sim::DEFAULT_ACCESS_KEY_ID,
            emr_sim::DEFAULT_ACCESS_KEY_SECRET,
        )
        .await;
        if let Some(c) = removed {
            env.sim.state.upsert_cluster(WS, c);
        }
        let st = env
            .wait_ready("ws", "True", Some("Synced"), ONE_INTERVAL)
            .await;
        assert!(st.last_failure.is_none(), "{name}: failure cleared");
        common::wait_for(Duration::from_secs(15), "mirrors synced again", || async {
            let l = env.mirror_list().await;
            (l.len() == 4
                && l.iter().all(|m| {
                    condition(&m.status.as_ref().unwrap().conditions, "Synced")
                        .is_some_and(|c| c.status.as_str() == "True")
                }))
            .then_some(())
        })
        .await;
    }
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_workspace_garbage_collects_its_mirrors() {
    let mut env = Env::new("e2e-gc").await;
    env.sim.state.generate(WS, 2, "ray-gc");
    env.create_workspace("ws", json!({})).await;
    env.start();
    common::wait_for(Duration::from_secs(60), "3 mirrors", || async {
        (env.mirror_list().await.len() == 3).then_some(())
    })
    .await;
    let series = |text: &str| {
        text.contains("emr_ray_operator_cluster_state{")
            || text.contains("emr_ray_operator_workspace_clusters{")
    };
    assert!(series(&env.operators[0].metrics.encode()));
    env.workspaces()
        .delete("ws", &DeleteParams::background())
        .await
        .unwrap();
    common::wait_for(
        Duration::from_secs(60),
        "mirrors garbage-collected",
        || async { env.mirror_list().await.is_empty().then_some(()) },
    )
    .await;
    // Its metric series go too (deleted workspaces are forgotten by the operator).
    common::wait_for(
        Duration::from_secs(40),
        "metric series of the deleted workspace removed",
        || async { (!series(&env.operators[0].metrics.encode())).then_some(()) },
    )
    .await;
    env.teardown().await;
}

/// Deletes workspace `ws` with `--cascade=orphan` and waits until it is gone, with its 3 mirrors
/// left without an owner (`operator_running`: or already swept away). On a timeout the panic
/// shows what was last seen (the workspace's finalizers, each mirror's owners).
async fn orphan_workspace(env: &Env, operator_running: bool) {
    env.workspaces()
        .delete("ws", &DeleteParams::orphan())
        .await
        .unwrap();
    common::wait_until(
        Duration::from_secs(120),
        "the workspace to be orphaned",
        || async {
            let ws = env.workspaces().get_opt("ws").await.unwrap();
            let l = env.mirror_list().await;
            let orphaned = l.len() == 3 && l.iter().all(|m| m.owner_references().is_empty());
            let swept = operator_running && l.iter().all(|m| m.owner_references().is_empty());
            if ws.is_none() && (orphaned || swept) {
                return Ok(());
            }
            Err(format!(
                "workspace: {:?}; mirrors: {:?}",
                ws.map(|w| (
                    w.metadata.deletion_timestamp.is_some(),
                    w.finalizers().to_vec()
                )),
                l.iter()
                    .map(|m| (m.name_any(), m.owner_references().len()))
                    .collect::<Vec<_>>()
            ))
        },
    )
    .await;
}

/// `kubectl delete emrworkspace --cascade=orphan` leaves the mirrors without an owner: a
/// workspace of that name coming back takes them over (the same objects), and without one they
/// are deleted instead of staying `Ready=True` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_mirrors_are_adopted_again_or_deleted() {
    let mut env = Env::new("e2e-orphan").await;
    env.sim.state.generate(WS, 2, "ray-orphan");
    // A long interval: nothing here waits for a periodic sync.
    env.wait_garbage_collector_watches_crds().await;
    env.create_workspace("ws", json!({"syncInterval": "10m"}))
        .await;
    env.start();
    common::wait_for(Duration::from_secs(60), "3 mirrors", || async {
        (env.mirror_list().await.len() == 3).then_some(())
    })
    .await;
    let uids = |l: &[kube::api::ObjectMeta]| {
        let mut u: Vec<String> = l.iter().filter_map(|m| m.uid.clone()).collect();
        u.sort();
        u
    };
    let metas = |l: Vec<emr_ray_operator::api::EmrRayCluster>| -> Vec<kube::api::ObjectMeta> {
        l.into_iter().map(|m| m.metadata).collect()
    };
    let before = uids(&metas(env.mirror_list().await));
    // The workspace comes back while the operator is down: at its start the new workspace
    // takes over the very same objects.
    env.operators.pop().unwrap().stop().await;
    orphan_workspace(&env, false).await;
    env.create_workspace("ws", json!({"syncInterval": "10m"}))
        .await;
    let uid = env.workspaces().get("ws").await.unwrap().uid().unwrap();
    env.start();
    common::wait_for(
        Duration::from_secs(60),
        "the mirrors owned by the new workspace",
        || async {
            let l = env.mirror_list().await;
            (l.len() == 3
                && l.iter().all(|m| {
                    m.owner_references()
                        .iter()
                        .any(|o| o.uid == uid && o.controller == Some(true))
                }))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        uids(&metas(env.mirror_list().await)),
        before,
        "adopted, not created again"
    );

    // Orphaned while the operator runs, and no workspace comes back: deleted within a sweep
    // (every 10 s), the namespace left clean.
    orphan_workspace(&env, true).await;
    common::wait_for(
        Duration::from_secs(45),
        "orphaned mirrors deleted",
        || async { env.mirror_list().await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(
        env.operators[0].metric(
            "emr_ray_operator_kube_writes_total",
            &[("operation", "delete-orphan")]
        ),
        3.0
    );
    env.teardown().await;
}

/// A mirror deleted or edited by hand is repaired long before the next scheduled listing (10 min
/// here): the operator keeps only the identities of the listed clusters, so a repair lists the
/// workspace once (the example workspace: one page) and writes the mirror from it; the repair's
/// own writes cause no further listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_deleted_or_edited_mirror_is_repaired_with_one_listing_each() {
    let mut env = Env::new("e2e-repair").await;
    env.create_workspace("ws", json!({"syncInterval": "10m"}))
        .await;
    env.start();
    let m = env
        .wait_mirror(EXAMPLE_CLUSTER, Duration::from_secs(60), "mirror", |_| true)
        .await;
    let listings = || env.cluster_listings();
    // The initial sync's writes settled: no listing follows them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = listings();
    env.mirrors()
        .delete(&m.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let again = env
        .wait_mirror(
            EXAMPLE_CLUSTER,
            Duration::from_secs(20),
            "recreated mirror",
            |n| n.uid() != m.uid(),
        )
        .await;
    assert_eq!(data_of(&again)["state"], "Running");
    assert_eq!(
        data_of(&again)["displayName"],
        data_of(&m)["displayName"],
        "recreated with the cluster's data, not just its state"
    );
    // Longer than the operator's gap between refreshing listings: any loop would show.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after_delete = listings();
    assert!(
        after_delete - before <= 1,
        "{} listings for one repair",
        after_delete - before
    );
    // A hand edit of the status (as an admin) is reverted.
    env.mirrors()
        .patch_status(
            &m.name_any(),
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrRayCluster",
                "metadata": {"name": m.name_any()}, "status": {"state": "Stopped"},
            })),
        )
        .await
        .unwrap();
    env.wait_mirror(
        EXAMPLE_CLUSTER,
        Duration::from_secs(20),
        "reverted edit",
        |n| n.status.as_ref().unwrap().state.as_deref() == Some("Running"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after_edit = listings();
    assert!(
        after_edit - after_delete <= 1,
        "{} listings for one repair",
        after_edit - after_delete
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_problems_give_clear_conditions() {
    let mut env = Env::new("e2e-creds").await;
    env.create_workspace(
        "missing",
        json!({"credentials": {"secretRef": {"name": "nope"}}}),
    )
    .await;
    env.put_secret("bad", "LTAI5tUnknownKey", "whatever").await;
    // (Each names its own remote workspace: two EmrWorkspaces for one remote workspace are
    // duplicates.)
    env.create_workspace(
        "unknown-key",
        json!({"workspaceId": "w-unknown-key", "credentials": {"secretRef": {"name": "bad"}}}),
    )
    .await;
    env.create_workspace(
        "wrong-key-name",
        json!({"workspaceId": "w-wrong-key-name",
               "credentials": {"secretRef": {"name": "emr-credentials", "accessKeyIdKey": "id"}}}),
    )
    .await;
    env.start();
    let st = env
        .wait_ready(
            "missing",
            "False",
            Some("SecretNotFound"),
            Duration::from_secs(60),
        )
        .await;
    assert!(condition(&st.conditions, "Stalled").is_some_and(|c| c.status.as_str() == "True"));
    assert!(
        condition(&st.conditions, "Ready")
            .unwrap()
            .message
            .contains("nope")
    );
    let st = env
        .wait_ready(
            "unknown-key",
            "False",
            Some("AuthenticationFailed"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        st.last_failure.unwrap().code.as_deref(),
        Some("InvalidAccessKeyId.NotFound")
    );
    let st = env
        .wait_ready(
            "wrong-key-name",
            "False",
            Some("SecretKeyMissing"),
            Duration::from_secs(60),
        )
        .await;
    assert!(
        condition(&st.conditions, "Ready")
            .unwrap()
            .message
            .contains("\"id\"")
    );

    // Creating the missing Secret fixes the workspace at its next retry (Secrets are read by
    // name at each sync, never watched).
    env.put_secret(
        "nope",
        emr_sim::DEFAULT_ACCESS_KEY_ID,
        emr_sim::DEFAULT_ACCESS_KEY_SECRET,
    )
    .await;
    env.wait_ready("missing", "True", Some("Synced"), Duration::from_secs(20))
        .await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_at_admission() {
    let env = Env::new("e2e-admission").await;
    let cases = [
        (
            json!({"syncInterval": "5s"}),
            "syncInterval must be at least 10s",
        ),
        (json!({"syncInterval": "soon"}), "spec.syncInterval"),
        (json!({"regionId": "CN Hangzhou"}), "spec.regionId"),
        // Another service's label (a bucket's virtual host on OSS) is not a region.
        (
            json!({"regionId": "oss-cn-hangzhou"}),
            "regionId must be an Alibaba Cloud region ID",
        ),
        (
            json!({"endpoint": "ftp://x"}),
            "endpoint must be an http:// or https:// URL",
        ),
        (
            json!({"credentials": {}}),
            "set exactly one of secretRef or clusterCredentialsRef",
        ),
        (
            json!({"credentials": {"secretRef": {"name": "a"}, "clusterCredentialsRef": {"name": "b"}}}),
            "set exactly one of secretRef or clusterCredentialsRef",
        ),
        // A namespaced spec can no longer name the operator's identity, a role or a file.
        // (Rejected as an unknown field, or pruned and then refused as empty: either way the
        // message names the credentials.)
        (json!({"credentials": {"environment": {}}}), "credentials"),
        // Secret keys are at most 253 characters: a longer one is refused, not echoed in status.
        (
            json!({"credentials": {"secretRef": {"name": "a", "accessKeyIdKey": "k".repeat(254)}}}),
            "spec.credentials.secretRef.accessKeyIdKey",
        ),
        // Object names are DNS subdomains: anything else is refused at admission.
        (
            json!({"credentials": {"secretRef": {"name": "../Creds"}}}),
            "spec.credentials.secretRef.name",
        ),
        (
            json!({"credentials": {"clusterCredentialsRef": {"name": "Team_ML"}}}),
            "spec.credentials.clusterCredentialsRef.name",
        ),
        (
            json!({"goneClusterPolicy": "Forget"}),
            "spec.goneClusterPolicy",
        ),
    ];
    for (i, (extra, msg)) in cases.iter().enumerate() {
        let mut spec = json!({
            "regionId": "cn-hangzhou", "workspaceId": WS,
            "credentials": {"secretRef": {"name": "emr-credentials"}},
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let name = format!("bad-{i}");
        let err = env
            .workspaces()
            .patch(
                &name,
                &PatchParams::apply("tests"),
                &Patch::Apply(json!({
                    "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                    "metadata": {"name": name}, "spec": spec,
                })),
            )
            .await
            .expect_err("invalid spec must be rejected");
        let text = err.to_string();
        assert!(
            text.contains(msg),
            "case {extra}: {text:?} should contain {msg:?}"
        );
    }
    env.teardown().await;
}

/// Two operator replicas: only the leader writes; when it stops, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_the_standby_takes_over() {
    let env = Env::new("e2e-leader").await;
    env.create_workspace("ws", json!({})).await;
    let lease = |id: &str| {
        let mut cfg = operator_config(&env.ns.name);
        cfg.identity = id.to_string();
        cfg.leader_election = Some(emr_ray_operator::operator::leader::LeaseConfig {
            namespace: env.ns.name.clone(),
            name: "emr-ray-operator-leader".into(),
            identity: id.to_string(),
            lease_duration: Duration::from_secs(6),
            renew_every: Duration::from_secs(2),
        });
        cfg
    };
    let a = start_operator(&env.client, lease("replica-a"));
    common::wait_for(Duration::from_secs(20), "replica-a leads", || async {
        let l = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            env.client.clone(),
            &env.ns.name,
        )
        .get_opt("emr-ray-operator-leader")
        .await
        .unwrap()?;
        (l.spec?.holder_identity.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = start_operator(&env.client, lease("replica-b"));
    env.wait_mirror(EXAMPLE_CLUSTER, Duration::from_secs(60), "mirror", |_| true)
        .await;
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Stopped);
    env.wait_mirror(EXAMPLE_CLUSTER, ONE_INTERVAL, "Stopped via leader", |m| {
        m.status.as_ref().unwrap().state.as_deref() == Some("Stopped")
    })
    .await;
    assert!(a.writes() > 0, "the leader wrote");
    assert_eq!(b.writes(), 0, "the standby never writes");

    // The leader stops (graceful: releases the lease); the standby takes over.
    a.stop().await;
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Running);
    env.wait_mirror(
        EXAMPLE_CLUSTER,
        Duration::from_secs(40),
        "Running via new leader",
        |m| m.status.as_ref().unwrap().state.as_deref() == Some("Running"),
    )
    .await;
    assert!(b.writes() > 0, "the new leader writes");
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        env.client.clone(),
        &env.ns.name,
    )
    .get("emr-ray-operator-leader")
    .await
    .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-b")
    );
    b.stop().await;
    env.teardown().await;
}

/// Two EmrWorkspaces of one namespace listing the same remote workspace: the first one's
/// mirrors stay its own, the second one reports the conflict instead of fighting over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workspaces_for_one_remote_workspace_do_not_fight() {
    let mut env = Env::new("e2e-conflict").await;
    env.create_workspace("first", json!({})).await;
    env.start();
    env.wait_mirror(EXAMPLE_CLUSTER, Duration::from_secs(60), "mirror", |_| true)
        .await;
    env.create_workspace("second", json!({})).await;
    let st = env
        .wait_ready(
            "second",
            "False",
            Some("DuplicateWorkspace"),
            Duration::from_secs(30),
        )
        .await;
    let ready = condition(&st.conditions, "Ready").unwrap();
    assert!(
        ready.message.contains("EmrWorkspace first"),
        "{}",
        ready.message
    );
    assert_eq!(
        condition(&st.conditions, "Stalled")
            .unwrap()
            .status
            .as_str(),
        "True"
    );
    let m = env.mirrors().get(EXAMPLE_CLUSTER).await.unwrap();
    assert_eq!(m.owner_references().len(), 1);
    assert_eq!(m.owner_references()[0].name, "first");
    assert_eq!(m.spec.workspace_ref, "first");
    env.teardown().await;
}

/// A leader that loses its lease while a sync is in flight writes nothing more: the in-flight
/// reconcile is cancelled before another replica could take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_the_lease_stops_writing_at_once() {
    use k8s_openapi::api::coordination::v1::Lease;
    let mut env = Env::new("e2e-stepdown").await;
    env.create_workspace("ws", json!({})).await;
    let mut cfg = operator_config(&env.ns.name);
    cfg.identity = "replica-a".into();
    cfg.request_timeout = Duration::from_secs(10);
    cfg.leader_election = Some(emr_ray_operator::operator::leader::LeaseConfig {
        namespace: env.ns.name.clone(),
        name: "emr-ray-operator-leader".into(),
        identity: "replica-a".into(),
        lease_duration: Duration::from_secs(6),
        renew_every: Duration::from_secs(2),
    });
    env.operators.push(start_operator(&env.client, cfg));
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    let a = &env.operators[0];
    assert_eq!(a.metric("emr_ray_operator_leader", &[]), 1.0);

    // A slow listing that, if it finished, would change the mirror.
    env.sim.state.set_faults(Faults {
        latency_ms: 6000,
        ..Default::default()
    });
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Stopped);
    let attempts = a.sync_attempts("ws");
    common::wait_for(Duration::from_secs(30), "a listing in flight", || async {
        (a.sync_attempts("ws") > attempts).then_some(())
    })
    .await;
    // The listing started before now: its one page is answered before this.
    let answered_by = std::time::Instant::now() + Duration::from_secs(6);

    // Another holder takes the lease (as after a partition): replica-a sees it at its next
    // renewal and steps down.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns.name);
    let mut lease = leases.get("emr-ray-operator-leader").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("replica-elsewhere".into());
    spec.lease_duration_seconds = Some(3600);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        jiff::Timestamp::now(),
    ));
    leases
        .replace("emr-ray-operator-leader", &Default::default(), &lease)
        .await
        .unwrap();
    common::wait_for(Duration::from_secs(10), "replica-a steps down", || async {
        (a.metric("emr_ray_operator_leader", &[]) == 0.0).then_some(())
    })
    .await;
    let writes = a.writes();
    // A window, not a signal: "no write" has no event to wait for. It lasts until the in-flight
    // listing has been answered (6 s latency from its start) and 1 s more, in which its writes
    // would have followed.
    let window = answered_by.saturating_duration_since(std::time::Instant::now());
    common::hold_for(window + Duration::from_secs(1), || async {
        assert_eq!(a.writes(), writes, "writes after losing the lease");
    })
    .await;
    let m = env.mirrors().get(EXAMPLE_CLUSTER).await.unwrap();
    assert_eq!(
        m.status.unwrap().state.as_deref(),
        Some("Running"),
        "the mirror was not written by the replica that lost the lease"
    );
    env.teardown().await;
}

/// The README's `list --secret` example works on a Secret made exactly as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reads_a_secret_made_as_the_readme_says() {
    let env = Env::new("e2e-list").await;
    let out = common::kubectl()
        .args([
            "-n",
            &env.ns.name,
            "create",
            "secret",
            "generic",
            "readme-credentials",
        ])
        .arg(format!(
            "--from-literal=accessKeyId={}",
            emr_sim::DEFAULT_ACCESS_KEY_ID
        ))
        .arg(format!(
            "--from-literal=accessKeySecret={}",
            emr_sim::DEFAULT_ACCESS_KEY_SECRET
        ))
        .env("KUBECONFIG", common::kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
        .args([
            "list",
            "--region",
            "cn-hangzhou",
            "--workspace",
            WS,
            "-o",
            "wide",
        ])
        .args(["--endpoint", &env.endpoint()])
        .args(["--secret", &format!("{}/readme-credentials", env.ns.name)])
        .env("KUBECONFIG", common::kubeconfig_path())
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "list failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(EXAMPLE_CLUSTER), "{stdout}");
    assert!(stdout.contains("Running"), "{stdout}");
    assert!(!stdout.contains("token"), "{stdout}");
    env.teardown().await;
}

/// `emr-ray-operator sync NS/NAME --wait` (the `requestedAt` annotation) syncs a workspace
/// now, once, without waiting for its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_on_request_lists_once_now() {
    let mut env = Env::new("e2e-sync-now").await;
    env.create_workspace("ws", json!({"syncInterval": "1h"}))
        .await;
    env.start();
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Stopping);
    let requests = env.sim.state.stats().requests;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
        .args([
            "sync",
            &format!("{}/ws", env.ns.name),
            "--wait",
            "--timeout",
            "60s",
        ])
        .env("KUBECONFIG", common::kubeconfig_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sync failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("synced: Ready=True (Synced)"), "{stdout}");
    let st = env.status("ws").await;
    let ws = env.workspaces().get("ws").await.unwrap();
    assert_eq!(
        st.last_handled_reconcile_at.as_ref(),
        ws.annotations()
            .get(emr_ray_operator::api::ANNOTATION_REQUESTED_AT)
    );
    env.wait_mirror(EXAMPLE_CLUSTER, Duration::from_secs(10), "Stopping", |m| {
        m.status.as_ref().unwrap().state.as_deref() == Some("Stopping")
    })
    .await;
    // One listing (one page of clusters, one of queues), not a loop: the handled value is
    // remembered. A window after the signal above that the requested sync ran: a loop would
    // list again within a reconcile (milliseconds); 3 s leaves room for a slow machine.
    common::hold_for(Duration::from_secs(3), || async {
        assert_eq!(env.sim.state.stats().requests - requests, 2);
    })
    .await;
    env.teardown().await;
}

/// While the endpoint throttles (`x-acs-retry-after: 8`), a loop of `requestedAt` annotations
/// does not list sooner than the retry-after allows: one listing, then the next only after the
/// deadline — never one per annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_syncs_wait_for_the_backoff() {
    let mut env = Env::new("e2e-sync-backoff").await;
    env.sim.state.set_faults(Faults {
        throttle_rate: 1.0,
        throttle_retry_after_secs: 8,
        ..Faults::default()
    });
    env.create_workspace("ws", json!({"syncInterval": "1h"}))
        .await;
    env.start();
    env.wait_ready("ws", "False", None, Duration::from_secs(60))
        .await;
    let first = env.operators[0].sync_attempts("ws");
    assert!(first >= 1);
    let started = std::time::Instant::now();
    let mut n = 0;
    // Annotations every 250 ms for 5 s, all within the 8 s retry-after.
    while started.elapsed() < Duration::from_secs(5) {
        n += 1;
        env.workspaces()
            .patch(
                "ws",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    emr_ray_operator::api::ANNOTATION_REQUESTED_AT: format!("loop-{n}")}}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(n >= 15, "{n} annotations");
    assert_eq!(
        env.operators[0].sync_attempts("ws"),
        first,
        "no listing before the retry-after deadline, whatever was asked"
    );
    // The request is not lost: it is handled once the deadline has passed.
    env.sim.state.set_faults(Faults::default());
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(30))
        .await;
    common::wait_for(
        Duration::from_secs(10),
        "the last request handled",
        || async {
            let st = env.status("ws").await;
            (st.last_handled_reconcile_at.as_deref() == Some(&format!("loop-{n}"))).then_some(())
        },
    )
    .await;
    env.teardown().await;
}

/// SIGTERM stops the operator promptly even when its API server never answered: the
/// controller's store never listed, no reconcile ran, so there is nothing to wait for (before,
/// kube-runtime's runner waited for that first list for ever and the process never exited).
#[test]
fn sigterm_stops_an_operator_whose_api_server_never_answered() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: every request is refused.
    let port = common::free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("operator.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
        .args(["run", "--leader-election=false"])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn the operator");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the operator exited before SIGTERM:\n{}",
        log_text()
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let sent = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the operator did not exit within 15 s of SIGTERM:\n{}",
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}:\n{}", log_text());
    assert!(log_text().contains("operator stopped"), "{}", log_text());
}
