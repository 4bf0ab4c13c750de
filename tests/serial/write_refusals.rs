//! The API server refuses the operator's mirror writes: the workspace says so (never
//! `Ready=True`), the refused writes stay bounded (no write storm), nothing extra is asked of the
//! remote API, and everything is written within an interval once the cause is gone.
//!
//! Refusals come from a real ValidatingAdmissionPolicy (all mirrors, then only some) and from
//! the API server's own size limit.

use std::time::{Duration, Instant};

use emr_ray_operator::emr::{ClusterState, RayCluster};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::common;
use crate::support::*;

const POLICY: &str = "emr-test-refuse-mirrors";

fn dynamic_api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// A policy (and binding for the test namespace) refusing CREATE/UPDATE of mirrors (and their
/// status) for which `allowed` is false.
async fn refuse_mirrors(env: &Env, allowed: &str) {
    let pp = PatchParams::apply("tests").force();
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["emr.aliyun.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["emrrayclusters", "emrrayclusters/status"],
            }]},
            "validations": [{"expression": allowed, "message": "refused by the test policy"}],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {
            "policyName": POLICY,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": env.ns.name,
            }}},
        },
    });
    dynamic_api(&env.client, "ValidatingAdmissionPolicy")
        .patch(POLICY, &pp, &Patch::Apply(&policy))
        .await
        .expect("policy applied");
    dynamic_api(&env.client, "ValidatingAdmissionPolicyBinding")
        .patch(POLICY, &pp, &Patch::Apply(&binding))
        .await
        .expect("binding applied");
    wait_policy(env, true).await;
}

async fn allow_mirrors(env: &Env) {
    for kind in [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        let _ = dynamic_api(&env.client, kind)
            .delete(POLICY, &DeleteParams::default())
            .await;
    }
    wait_policy(env, false).await;
}

/// Waits until a probe mirror (named like the refused ones) is refused (or accepted).
async fn wait_policy(env: &Env, refused: bool) {
    let what = format!(
        "the test policy to be {}",
        if refused { "in force" } else { "gone" }
    );
    common::wait_for(Duration::from_secs(60), &what, || async {
        let probe = format!(
            "ray-deny-probe-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let obj: emr_ray_operator::api::EmrRayCluster = serde_json::from_value(json!({
            "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrRayCluster",
            "metadata": {"name": probe},
            "spec": {"workspaceRef": "probe", "workspaceId": "probe", "regionId": "probe",
                     "clusterId": probe},
        }))
        .unwrap();
        match env.mirrors().create(&PostParams::default(), &obj).await {
            Ok(_) => {
                let _ = env.mirrors().delete(&probe, &DeleteParams::default()).await;
                (!refused).then_some(())
            }
            Err(kube::Error::Api(s)) if s.message.contains("refused by the test policy") => {
                refused.then_some(())
            }
            Err(e) => panic!("probe mirror: {e}"),
        }
    })
    .await
}

fn deny_cluster(i: usize) -> RayCluster {
    RayCluster {
        cluster_id: format!("ray-deny-{i}"),
        name: Some(format!("denied {i}")),
        state: Some(ClusterState::Running),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_mirror_writes_are_reported_bounded_and_recovered() {
    let _serial = crate::serial().await;
    let mut env = Env::new("e2e-refused").await;
    // 200 clusters: 3 requests per listing (two full pages and the empty one that ends it).
    env.sim.state.generate(WS, 194, "refused");
    for i in 0..5 {
        env.sim.state.upsert_cluster(WS, deny_cluster(i));
    }
    let total = env.sim.state.clusters(WS).len();
    assert_eq!(total, 200);

    // 1. Every mirror write refused.
    refuse_mirrors(&env, "false").await;
    crate::wait_no_namespace_terminating(&env.client).await;
    let writes0 = crate::apiserver_mirror_writes(&env.client).await;
    let listings0 = env.cluster_listings();
    let t0 = Instant::now();
    env.create_workspace("ws", json!({})).await;
    env.start();
    let st = env
        .wait_ready(
            "ws",
            "False",
            Some("MirrorWriteFailed"),
            Duration::from_secs(60),
        )
        .await;
    let (_, _, msg) = crate::ready_of(&st);
    assert!(msg.starts_with("0 of 200 mirrors written"), "{msg}");
    assert!(msg.contains("refused by the test policy"), "{msg}");
    assert_eq!(
        condition(&st.conditions, "Stalled").map(|c| c.status.as_str()),
        Some("True"),
        "a refusal by policy needs a person"
    );
    let wf = st.last_write_failure.clone().expect("lastWriteFailure");
    assert_eq!((wf.mirrors, wf.failed), (200, 200));
    assert!(
        matches!(wf.reason.as_str(), "Forbidden" | "Invalid"),
        "{}",
        wf.reason
    );
    // Refused for a while: a few intervals (10 s each).
    for _ in 0..4 {
        env.wait_next_sync(0, "ws", Duration::from_secs(40)).await;
    }
    let elapsed = t0.elapsed();
    let refused = crate::apiserver_mirror_writes(&env.client).await - writes0;
    let intervals = elapsed.as_secs_f64() / 10.0;
    // The bound: the first pass stops after its first refusal (at most one write per concurrent
    // slot, 16, was already in flight); every later pass, one interval or backoff apart, sends
    // one probe write.
    let bound = 16.0 + 2.0 * (intervals + 1.0);
    println!(
        "write refusals: {refused} refused mirror writes in {:.0}s for 200 mirrors \
         (bound {bound:.0}; one write per mirror per interval would be {:.0})",
        elapsed.as_secs_f64(),
        200.0 * intervals
    );
    assert!(refused <= bound, "{refused} refused writes in {elapsed:?}");
    assert!(refused >= 1.0, "the operator kept trying");
    let refusals_metric = env.operators[0].metric(
        "emr_ray_operator_kube_write_refusals_total",
        &[("resource", "emrrayclusters")],
    );
    assert!(refusals_metric >= 1.0 && refusals_metric <= refused);
    // The remote side keeps its own schedule: a listing per interval, never more (3 pages of
    // clusters each; the queue page and the one-off GetRayCluster of each Error cluster are
    // not listings).
    let pages = env.cluster_listings() - listings0;
    let listings = pages as f64 / 3.0;
    assert!(
        listings <= intervals + 2.0,
        "{pages} ListRayCluster requests ({listings:.1} listings) in {intervals:.1} intervals"
    );
    assert!(env.mirror_list().await.is_empty(), "no mirror was written");

    // 2. Only some mirrors refused: the others are written, the count says which.
    refuse_mirrors(&env, "!object.metadata.name.startsWith('ray-deny')").await;
    let st = common::wait_for(
        Duration::from_secs(60),
        "195 of 200 mirrors written",
        || async {
            let st = env.status("ws").await;
            let (_, reason, msg) = crate::ready_of(&st);
            (reason == "MirrorWriteFailed" && msg.starts_with("195 of 200 mirrors written"))
                .then_some(st)
        },
    )
    .await;
    let (_, _, msg) = crate::ready_of(&st);
    assert!(msg.contains("EmrRayCluster ray-deny-"), "{msg}");
    let mirrors = env.mirror_list().await;
    assert_eq!(mirrors.len(), 195);
    assert!(mirrors.iter().all(|m| {
        !m.metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("ray-deny")
    }));

    // 3. The policy is removed: every mirror is written within an interval.
    allow_mirrors(&env).await;
    let t = Instant::now();
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(25))
        .await;
    let mirrors = env.mirror_list().await;
    assert_eq!(mirrors.len(), 200);
    assert!(mirrors.iter().all(|m| m.status.is_some()));
    assert!(env.status("ws").await.last_write_failure.is_none());
    println!(
        "write refusals: recovered in {:.1}s after the policy was removed",
        t.elapsed().as_secs_f64()
    );
    env.teardown().await;
}

/// A mirror whose new status the API server refuses as invalid (here: an admission policy on
/// one remote description) affects only itself. (Remote data can no longer make a mirror too
/// large for the API server: every remote string is capped, see `controller::mirror`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_the_api_server_refuses_affects_only_itself() {
    let _serial = crate::serial().await;
    let mut env = Env::new("e2e-invalid-mirror").await;
    refuse_mirrors(
        &env,
        // (Probe mirrors are refused too, so that `refuse_mirrors` sees the policy in force.)
        "!object.metadata.name.startsWith('ray-deny-probe') && (!has(object.status) || \
         !has(object.status.description) || !object.status.description.contains('reject-me'))",
    )
    .await;
    env.sim.state.generate(WS, 9, "valid");
    let bad = RayCluster {
        cluster_id: "ray-invalid".into(),
        name: Some("invalid".into()),
        state: Some(ClusterState::Running),
        description: Some("please reject-me".into()),
        ..Default::default()
    };
    env.sim.state.upsert_cluster(WS, bad.clone());
    env.create_workspace("ws", json!({})).await;
    env.start();
    let st = env
        .wait_ready(
            "ws",
            "False",
            Some("MirrorWriteFailed"),
            Duration::from_secs(60),
        )
        .await;
    let wf = st.last_write_failure.expect("lastWriteFailure");
    assert!(
        matches!(wf.reason.as_str(), "Invalid" | "Forbidden"),
        "{}: {}",
        wf.reason,
        wf.message
    );
    assert!(wf.message.contains("ray-invalid"), "{}", wf.message);
    // The other mirrors are written.
    common::wait_for(Duration::from_secs(30), "the other mirrors", || async {
        let l = env.mirror_list().await;
        let done = l
            .iter()
            .filter(|m| m.metadata.name.as_deref() != Some("ray-invalid"))
            .filter(|m| m.status.as_ref().is_some_and(|s| s.state.is_some()))
            .count();
        (done == 10).then_some(())
    })
    .await;
    // The refused one exists and says, in its own conditions, why it has no data.
    let m = env
        .wait_mirror(
            "ray-invalid",
            Duration::from_secs(40),
            "ray-invalid marked",
            |m| {
                m.status
                    .as_ref()
                    .and_then(|s| condition(&s.conditions, "Synced"))
                    .is_some_and(|c| c.reason == "MirrorWriteFailed")
            },
        )
        .await;
    assert!(m.status.unwrap().description.is_none());
    // Fixed remotely: written within an interval.
    env.sim.state.upsert_cluster(
        WS,
        RayCluster {
            description: Some("fine".into()),
            ..bad
        },
    );
    env.wait_ready("ws", "True", Some("Synced"), Duration::from_secs(40))
        .await;
    env.wait_mirror(
        "ray-invalid",
        Duration::from_secs(10),
        "ray-invalid written",
        |m| m.status.as_ref().and_then(|s| s.description.as_deref()) == Some("fine"),
    )
    .await;
    allow_mirrors(&env).await;
    env.teardown().await;
}
