//! Horizontal sharding end to end: three operators in-process, each serving one shard
//! (`sharding.emr.aliyun.io/key=a`, `=b`, and the default shard `notin (a,b)`), chosen by the
//! label of a workspace's **namespace**. Three test namespaces, labelled `a`, `b` and not at all,
//! twenty workspaces among them (each its own remote workspace in one simulator). Every
//! workspace is written by its namespace's shard only, whatever label its tenant puts on the
//! workspace; relabelling a namespace hands its workspaces and their mirrors over; a stopped
//! shard leaves the others syncing.
//!
//! Each operator watches the test's three namespaces only (`namespaces`), so other tests'
//! namespaces on the shared control plane are never served.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{self, TestNamespace};
use crate::support::{Env, Operator, operator_config, start_operator};
use emr_ray_operator::api::{
    EmrRayCluster, EmrWorkspace, EmrWorkspaceStatus, LABEL_SHARD, LABEL_WORKSPACE,
};
use emr_ray_operator::controller::mirror::mirror_name;
use emr_ray_operator::operator::OperatorConfig;
use emr_ray_operator::operator::shard::ShardSelector;
use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const WORKSPACES: usize = 20;
const CLUSTERS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(90);

/// Shards by index in `env.operators`, with their selector and reporting identity.
const SHARDS: [(&str, &str); 3] = [
    ("shard-a", "sharding.emr.aliyun.io/key=a"),
    ("shard-b", "sharding.emr.aliyun.io/key=b"),
    ("shard-default", "sharding.emr.aliyun.io/key notin (a,b)"),
];

/// The test's namespaces by index, with the shard label each starts with.
const NAMESPACE_SHARDS: [Option<&str>; 3] = [Some("a"), Some("b"), None];

fn ws_name(i: usize) -> String {
    format!("ws-{i:02}")
}

fn remote_id(i: usize) -> String {
    format!("w-shard-{i:02}")
}

/// The namespace (index) of a workspace: 0–7 the first, 8–15 the second, the rest the third.
fn namespace_of(i: usize) -> usize {
    match i {
        0..8 => 0,
        8..16 => 1,
        _ => 2,
    }
}

/// The shard label a workspace's tenant puts on it, to move it elsewhere: never its
/// namespace's. It must change nothing.
fn tenant_label(i: usize) -> Option<&'static str> {
    match namespace_of(i) {
        0 => Some("b"),
        _ => Some("a"),
    }
}

/// Index of the operator serving a namespace shard label.
fn operator_of(shard: Option<&str>) -> usize {
    match shard {
        Some("a") => 0,
        Some("b") => 1,
        _ => 2,
    }
}

/// The test's namespaces, `namespaces[0]` being the environment's own.
struct Namespaces {
    names: [String; 3],
    extra: Vec<TestNamespace>,
}

impl Namespaces {
    async fn create(env: &Env) -> Namespaces {
        let mut extra = Vec::new();
        for _ in 0..2 {
            extra.push(TestNamespace::create_on(env.client.clone(), "e2e-shard").await);
        }
        let names = [
            env.ns.name.clone(),
            extra[0].name.clone(),
            extra[1].name.clone(),
        ];
        for ns in &names[1..] {
            Api::<Secret>::namespaced(env.client.clone(), ns)
                .patch(
                    "emr-credentials",
                    &PatchParams::apply("tests").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "emr-credentials"},
                        "stringData": {
                            "accessKeyId": DEFAULT_ACCESS_KEY_ID,
                            "accessKeySecret": DEFAULT_ACCESS_KEY_SECRET,
                        },
                    })),
                )
                .await
                .expect("secret applied");
        }
        Namespaces { names, extra }
    }

    async fn cleanup(self) {
        for ns in self.extra {
            ns.cleanup().await;
        }
    }
}

/// Assigns a namespace to a shard (`None`: the default shard) by labelling it, as a cluster
/// admin does.
async fn label_namespace(env: &Env, ns: &str, shard: Option<&str>) {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL_SHARD: shard}}})),
        )
        .await
        .expect("namespace labelled");
}

fn shard_operator(env: &Env, namespaces: &Namespaces, identity: &str, selector: &str) -> Operator {
    let cfg = OperatorConfig {
        identity: identity.into(),
        shard_selector: ShardSelector::parse(selector).unwrap(),
        namespaces: namespaces.names.to_vec(),
        ..operator_config(&env.ns.name)
    };
    start_operator(&env.client, cfg)
}

fn workspaces(env: &Env, ns: &str) -> Api<EmrWorkspace> {
    Api::namespaced(env.client.clone(), ns)
}

fn mirrors(env: &Env, ns: &str) -> Api<EmrRayCluster> {
    Api::namespaced(env.client.clone(), ns)
}

async fn create_workspace(
    env: &Env,
    ns: &str,
    name: &str,
    remote: &str,
    label: Option<&str>,
    interval: &str,
) {
    let mut labels = serde_json::Map::new();
    if let Some(s) = label {
        labels.insert(LABEL_SHARD.into(), json!(s));
    }
    workspaces(env, ns)
        .patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "regionId": "cn-hangzhou",
                    "workspaceId": remote,
                    "endpoint": env.endpoint(),
                    "credentials": {"secretRef": {"name": "emr-credentials"}},
                    "syncInterval": interval,
                    "goneClusterPolicy": "Delete",
                },
            })),
        )
        .await
        .expect("workspace applied");
}

/// A tenant (namespace editor) labels its own workspace: `None` removes the label.
async fn label_workspace(env: &Env, ns: &str, ws: &str, shard: Option<&str>) {
    workspaces(env, ns)
        .patch(
            ws,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL_SHARD: shard}}})),
        )
        .await
        .expect("workspace labelled");
}

async fn status(env: &Env, ns: &str, ws: &str) -> EmrWorkspaceStatus {
    workspaces(env, ns)
        .get(ws)
        .await
        .expect("get workspace")
        .status
        .unwrap_or_default()
}

/// The workspace's mirrors by cluster ID.
async fn mirrors_of(env: &Env, ns: &str, ws: &str) -> BTreeMap<String, EmrRayCluster> {
    mirrors(env, ns)
        .list(&ListParams::default().labels(&format!("{LABEL_WORKSPACE}={ws}")))
        .await
        .expect("list mirrors")
        .items
        .into_iter()
        .map(|m| (m.spec.cluster_id.clone(), m))
        .collect()
}

fn shard_label(m: &EmrRayCluster) -> Option<&str> {
    m.labels().get(LABEL_SHARD).map(String::as_str)
}

/// Every Event of the test's namespaces.
async fn events(env: &Env, namespaces: &Namespaces) -> Vec<KubeEvent> {
    let mut all = Vec::new();
    for ns in &namespaces.names {
        all.extend(
            Api::<KubeEvent>::namespaced(env.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .expect("list events")
                .items,
        );
    }
    all
}

/// The (namespace, name) of what an Event is about.
fn about(e: &KubeEvent) -> (String, String) {
    let r = e.regarding.as_ref();
    (
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// Events about `object` (a mirror or workspace name) of `ns` with `reason`, by reporting
/// instance.
fn reporters(events: &[KubeEvent], ns: &str, object: &str, reason: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| about(e) == (ns.to_string(), object.to_string()))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.reporting_instance.clone().unwrap_or_default())
        .collect()
}

/// Waits until workspace `ws` of `ns` has exactly the mirrors of `clusters`, each labelled for
/// `shard`, and reports that many clusters in its status.
async fn wait_mirrored(
    env: &Env,
    ns: &str,
    ws: &str,
    clusters: &BTreeSet<String>,
    shard: Option<&str>,
) {
    let what = format!("workspace {ns}/{ws}: mirrors of {clusters:?} labelled for shard {shard:?}");
    common::wait_for(TIMEOUT, &what, || async {
        let mirrors = mirrors_of(env, ns, ws).await;
        let ids: BTreeSet<String> = mirrors.keys().cloned().collect();
        let labelled = mirrors.values().all(|m| shard_label(m) == shard);
        let status = status(env, ns, ws).await;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_.as_str() == "Ready" && c.status.as_str() == "True");
        (ids == *clusters && labelled && ready && status.clusters == Some(clusters.len() as i64))
            .then_some(())
    })
    .await
}

/// Asserts that workspace `ws` was listed by operator `own` and by no other.
fn listed_only_by(env: &Env, ws: &str, own: usize) {
    for (n, op) in env.operators.iter().enumerate() {
        let attempts = op.sync_attempts(ws);
        if n == own {
            assert!(attempts >= 1, "{ws} never listed by {}", SHARDS[n].0);
        } else {
            assert_eq!(attempts, 0, "{ws} listed by {}", SHARDS[n].0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_namespaces_and_hand_them_over_by_relabelling() {
    let mut env = Env::new("e2e-shard").await;
    let namespaces = Namespaces::create(&env).await;
    let ns = |i: usize| namespaces.names[namespace_of(i)].as_str();
    for (n, shard) in NAMESPACE_SHARDS.iter().enumerate() {
        label_namespace(&env, &namespaces.names[n], *shard).await;
    }
    let mut remote: Vec<BTreeSet<String>> = Vec::new();
    for i in 0..WORKSPACES {
        let ids = env.sim.state.generate(&remote_id(i), CLUSTERS, "shard");
        remote.push(ids.into_iter().collect());
        // ws-00 is listed once by its first shard only: what changes remotely afterwards can
        // only be seen by the shard it is handed over to.
        let interval = if i == 0 { "1h" } else { "10s" };
        create_workspace(
            &env,
            ns(i),
            &ws_name(i),
            &remote_id(i),
            tenant_label(i),
            interval,
        )
        .await;
    }
    // A workspace of the first namespace that is suspended before its namespace moves: its
    // mirrors keep the old shard's label, unseen by the new shard's cache.
    let held_ids: BTreeSet<String> = env
        .sim
        .state
        .generate("w-shard-held", 2, "held")
        .into_iter()
        .collect();
    create_workspace(&env, ns(0), "ws-held", "w-shard-held", None, "10s").await;
    for (identity, selector) in SHARDS {
        let op = shard_operator(&env, &namespaces, identity, selector);
        env.operators.push(op);
    }
    let initial = |i: usize| NAMESPACE_SHARDS[namespace_of(i)];

    // Every workspace is mirrored, its mirrors carry its namespace's shard label (not the one
    // its tenant put on the workspace)...
    for (i, clusters) in remote.iter().enumerate() {
        wait_mirrored(&env, ns(i), &ws_name(i), clusters, initial(i)).await;
    }
    wait_mirrored(&env, ns(0), "ws-held", &held_ids, Some("a")).await;
    // ... it was listed by its namespace's shard only...
    for i in 0..WORKSPACES {
        listed_only_by(&env, &ws_name(i), operator_of(initial(i)));
    }
    // ... and every Event about it or its mirrors comes from that shard.
    let mut owner_of_object: BTreeMap<(String, String), &str> = BTreeMap::new();
    for i in 0..WORKSPACES {
        let shard = SHARDS[operator_of(initial(i))].0;
        for id in &remote[i] {
            owner_of_object.insert((ns(i).to_string(), mirror_name(id)), shard);
        }
        owner_of_object.insert((ns(i).to_string(), ws_name(i)), shard);
    }
    let all = events(&env, &namespaces).await;
    assert!(!all.is_empty());
    for e in &all {
        if let Some(shard) = owner_of_object.get(&about(e)) {
            assert_eq!(
                e.reporting_instance.as_deref(),
                Some(*shard),
                "{:?} about {:?}",
                e.reason,
                about(e)
            );
        }
    }

    // A tenant relabelling its workspace moves nothing: its namespace's shard syncs it again,
    // no other shard lists it, its mirrors keep the namespace's label.
    label_workspace(&env, ns(1), "ws-01", None).await;
    label_workspace(&env, ns(16), "ws-16", Some("b")).await;
    env.wait_next_sync(operator_of(initial(1)), "ws-01", TIMEOUT)
        .await;
    env.wait_next_sync(operator_of(initial(16)), "ws-16", TIMEOUT)
        .await;
    for i in [1, 16] {
        listed_only_by(&env, &ws_name(i), operator_of(initial(i)));
        let mirrors = mirrors_of(&env, ns(i), &ws_name(i)).await;
        assert_eq!(mirrors.len(), CLUSTERS);
        assert!(
            mirrors.values().all(|m| shard_label(m) == initial(i)),
            "{}",
            ws_name(i)
        );
    }

    // Hand-overs by relabelling the namespaces: a -> b (with remote changes only the new
    // shard can see), b -> default (the label removed), default -> a.
    let first = remote[0].iter().next().unwrap().clone();
    assert!(env.sim.state.remove_cluster(&remote_id(0), &first));
    let added = env.sim.state.generate(&remote_id(0), 1, "added").remove(0);
    remote[0].remove(&first);
    remote[0].insert(added.clone());
    workspaces(&env, ns(0))
        .patch(
            "ws-held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("ws-held suspended");
    env.wait_ready(
        "ws-held",
        "False",
        Some("Suspended"),
        Duration::from_secs(30),
    )
    .await;
    let moved_to: [Option<&str>; 3] = [Some("b"), None, Some("a")];
    let mut before = BTreeMap::new();
    for i in 0..WORKSPACES {
        before.insert(i, mirrors_of(&env, ns(i), &ws_name(i)).await);
    }
    for (n, to) in moved_to.iter().enumerate() {
        label_namespace(&env, &namespaces.names[n], *to).await;
    }
    let moved = |i: usize| moved_to[namespace_of(i)];
    for i in 0..WORKSPACES {
        let ws = ws_name(i);
        let (from, to) = (operator_of(initial(i)), operator_of(moved(i)));
        wait_mirrored(&env, ns(i), &ws, &remote[i], moved(i)).await;
        // The new shard listed it; the old one forgot it (its series are gone).
        assert!(env.operators[to].sync_attempts(&ws) >= 1, "{ws}");
        common::wait_for(
            TIMEOUT,
            &format!("{} to forget {ws}", SHARDS[from].0),
            || {
                let n = env.operators[from].sync_attempts(&ws);
                async move { (n == 0).then_some(()) }
            },
        )
        .await;
        // Kept mirrors are the same objects: taken over, not created again.
        let after = mirrors_of(&env, ns(i), &ws).await;
        for (id, m) in &before[&i] {
            if let Some(now) = after.get(id) {
                assert_eq!(now.uid(), m.uid(), "{ws}: mirror of {id} was re-created");
            }
        }
    }
    // Let any late write of an old shard show, then check nothing moved back. A window, not a
    // signal: a write that should not happen has no event to wait for. Each old shard has
    // forgotten its workspace above (at the end of its last reconcile of it); 3 s covers a
    // write already on its way and a reconcile queued before the move.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = events(&env, &namespaces).await;
    for i in 0..WORKSPACES {
        let ws = ws_name(i);
        let new_shard = SHARDS[operator_of(moved(i))].0;
        let after = mirrors_of(&env, ns(i), &ws).await;
        assert_eq!(
            after.keys().cloned().collect::<BTreeSet<_>>(),
            remote[i],
            "{ws}"
        );
        assert!(after.values().all(|m| shard_label(m) == moved(i)), "{ws}");
        for (id, m) in &after {
            let created = reporters(&all, ns(i), &m.name_any(), "Created");
            if before[&i].contains_key(id) {
                assert!(
                    !created.iter().any(|r| r == new_shard),
                    "{ws}: {new_shard} announced the kept mirror of {id} as created"
                );
            } else {
                assert_eq!(created, [new_shard], "{ws}: the added mirror of {id}");
            }
        }
    }
    // The cluster removed remotely was deleted by the new shard, which found its mirror
    // although it still carried the old shard's label (the Event is about the workspace).
    let deleted: Vec<&KubeEvent> = all
        .iter()
        .filter(|e| e.reason.as_deref() == Some("MirrorDeleted"))
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].reporting_instance.as_deref(), Some("shard-b"));
    assert!(
        deleted[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains(&first)
    );
    let gone = mirrors(&env, ns(0))
        .get_opt(&mirror_name(&first))
        .await
        .unwrap();
    assert!(gone.is_none());

    // The suspended ws-held's mirrors still carry shard a's label, so shard b's cache lacks
    // them. A workspace of another remote workspace listing a cluster of the same ID, in the
    // same namespace: shard b asks the API server before creating the mirror, finds the name
    // held, and reports a conflict; nothing is taken.
    let held = mirrors_of(&env, ns(0), "ws-held").await;
    assert!(held.values().all(|m| shard_label(m) == Some("a")));
    let shared_id = held_ids.iter().next().unwrap().clone();
    let shared = env
        .sim
        .state
        .clusters("w-shard-held")
        .into_iter()
        .find(|c| c.cluster_id == shared_id)
        .unwrap();
    env.sim.state.upsert_cluster("w-shard-dup", shared);
    create_workspace(&env, ns(0), "ws-dup", "w-shard-dup", None, "10s").await;
    common::wait_for(
        TIMEOUT,
        "a MirrorNameConflict Event about ws-dup",
        || async {
            let all = events(&env, &namespaces).await;
            let by = reporters(&all, ns(0), "ws-dup", "MirrorNameConflict");
            (!by.is_empty()).then_some(by)
        },
    )
    .await
    .iter()
    .for_each(|r| assert_eq!(r, "shard-b"));
    env.wait_next_sync(1, "ws-dup", TIMEOUT).await;
    let after = mirrors_of(&env, ns(0), "ws-held").await;
    assert_eq!(after.len(), held.len());
    for (id, m) in &held {
        let now = &after[id];
        assert_eq!(now.uid(), m.uid(), "mirror of {id}");
        assert_eq!(shard_label(now), Some("a"), "mirror of {id}");
        assert_eq!(now.owner_references()[0].name, "ws-held", "mirror of {id}");
    }
    assert!(mirrors_of(&env, ns(0), "ws-dup").await.is_empty());

    // One shard stopped: the others keep syncing their workspaces, nobody takes its own over.
    let b = env.operators.remove(1);
    let b_attempts = b.sync_attempts("ws-01");
    b.stop().await;
    assert!(b_attempts >= 1);
    // Now: 0 = shard a (the third namespace), 1 = default (the second).
    env.wait_next_sync(0, "ws-16", TIMEOUT).await;
    env.wait_next_sync(0, "ws-17", TIMEOUT).await;
    env.wait_next_sync(1, "ws-08", TIMEOUT).await;
    env.wait_next_sync(1, "ws-09", TIMEOUT).await;
    for op in &env.operators {
        assert_eq!(op.sync_attempts("ws-01"), 0);
    }
    env.teardown().await;
    namespaces.cleanup().await;
}
