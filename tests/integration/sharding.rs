//! Horizontal sharding end to end: three operators in-process, each serving one shard of the
//! same namespace (`sharding.emr.aliyun.io/key=a`, `=b`, and the default shard `notin (a,b)`),
//! twenty workspaces (each its own remote workspace in one simulator). Every workspace is
//! written by exactly one shard; relabelling a workspace hands it and its mirrors over; a
//! stopped shard leaves the others syncing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common;
use crate::support::{Env, Operator, operator_config, start_operator};
use emr_ray_operator::api::{EmrRayCluster, LABEL_SHARD, LABEL_WORKSPACE};
use emr_ray_operator::controller::mirror::mirror_name;
use emr_ray_operator::operator::OperatorConfig;
use emr_ray_operator::operator::shard::ShardSelector;
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

fn ws_name(i: usize) -> String {
    format!("ws-{i:02}")
}

fn remote_id(i: usize) -> String {
    format!("w-shard-{i:02}")
}

/// The shard label a workspace starts with: 0–7 `a`, 8–15 `b`, the rest none.
fn initial_shard(i: usize) -> Option<&'static str> {
    match i {
        0..8 => Some("a"),
        8..16 => Some("b"),
        _ => None,
    }
}

/// Index of the operator serving a shard label.
fn operator_of(shard: Option<&str>) -> usize {
    match shard {
        Some("a") => 0,
        Some("b") => 1,
        _ => 2,
    }
}

fn shard_operator(env: &Env, identity: &str, selector: &str) -> Operator {
    let cfg = OperatorConfig {
        identity: identity.into(),
        shard_selector: ShardSelector::parse(selector).unwrap(),
        ..operator_config(&env.ns.name)
    };
    start_operator(&env.client, cfg)
}

async fn create_workspace(
    env: &Env,
    name: &str,
    remote: &str,
    shard: Option<&str>,
    interval: &str,
) {
    let mut labels = serde_json::Map::new();
    if let Some(s) = shard {
        labels.insert(LABEL_SHARD.into(), json!(s));
    }
    env.workspaces()
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

/// Moves a workspace to another shard (`None`: the default shard) by relabelling it.
async fn relabel(env: &Env, ws: &str, shard: Option<&str>) {
    env.workspaces()
        .patch(
            ws,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL_SHARD: shard}}})),
        )
        .await
        .expect("workspace relabelled");
}

/// The workspace's mirrors by cluster ID.
async fn mirrors_of(env: &Env, ws: &str) -> BTreeMap<String, EmrRayCluster> {
    env.mirrors()
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

async fn events(env: &Env) -> Vec<KubeEvent> {
    Api::<KubeEvent>::namespaced(env.client.clone(), &env.ns.name)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
}

/// Events about `object` (a mirror or workspace name) with `reason`, by reporting instance.
fn reporters(events: &[KubeEvent], object: &str, reason: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.reporting_instance.clone().unwrap_or_default())
        .collect()
}

/// Waits until workspace `ws` has exactly the mirrors of `clusters`, each labelled for `shard`,
/// and reports that many clusters in its status.
async fn wait_mirrored(env: &Env, ws: &str, clusters: &BTreeSet<String>, shard: Option<&str>) {
    let what = format!("workspace {ws}: mirrors of {clusters:?} labelled for shard {shard:?}");
    common::wait_for(TIMEOUT, &what, || async {
        let mirrors = mirrors_of(env, ws).await;
        let ids: BTreeSet<String> = mirrors.keys().cloned().collect();
        let labelled = mirrors.values().all(|m| shard_label(m) == shard);
        let status = env.status(ws).await;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ids == *clusters && labelled && ready && status.clusters == Some(clusters.len() as i64))
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_workspaces_and_hand_them_over_by_relabelling() {
    let mut env = Env::new("e2e-shard").await;
    let mut remote: Vec<BTreeSet<String>> = Vec::new();
    for i in 0..WORKSPACES {
        let ids = env.sim.state.generate(&remote_id(i), CLUSTERS, "shard");
        remote.push(ids.into_iter().collect());
        // ws-00 is listed once by its first shard only: what changes remotely afterwards can
        // only be seen by the shard it is handed over to.
        let interval = if i == 0 { "1h" } else { "10s" };
        create_workspace(&env, &ws_name(i), &remote_id(i), initial_shard(i), interval).await;
    }
    for (identity, selector) in SHARDS {
        let op = shard_operator(&env, identity, selector);
        env.operators.push(op);
    }

    // Every workspace is mirrored, its mirrors carry its shard label.
    for (i, clusters) in remote.iter().enumerate() {
        wait_mirrored(&env, &ws_name(i), clusters, initial_shard(i)).await;
    }
    // ... and it was listed by its own shard only.
    for i in 0..WORKSPACES {
        let ws = ws_name(i);
        let own = operator_of(initial_shard(i));
        for (n, op) in env.operators.iter().enumerate() {
            let attempts = op.sync_attempts(&ws);
            if n == own {
                assert!(attempts >= 1, "{ws} never listed by {}", SHARDS[n].0);
            } else {
                assert_eq!(attempts, 0, "{ws} listed by {}", SHARDS[n].0);
            }
        }
    }
    // ... and every Event about it or its mirrors comes from its shard.
    let owner_of_object: BTreeMap<String, &str> = (0..WORKSPACES)
        .flat_map(|i| {
            let shard = SHARDS[operator_of(initial_shard(i))].0;
            let mut objects: Vec<(String, &str)> = remote[i]
                .iter()
                .map(|id| (mirror_name(id), shard))
                .collect();
            objects.push((ws_name(i), shard));
            objects
        })
        .collect();
    let all = events(&env).await;
    assert!(!all.is_empty());
    for e in &all {
        let object = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        if let Some(shard) = owner_of_object.get(&object) {
            assert_eq!(
                e.reporting_instance.as_deref(),
                Some(*shard),
                "{:?} about {object}",
                e.reason
            );
        }
    }

    // Hand-overs by relabelling: a -> b (with remote changes only the new shard can see),
    // b -> default (the label removed), default -> a.
    let first = remote[0].iter().next().unwrap().clone();
    assert!(env.sim.state.remove_cluster(&remote_id(0), &first));
    let added = env.sim.state.generate(&remote_id(0), 1, "added").remove(0);
    remote[0].remove(&first);
    remote[0].insert(added.clone());
    let moves: [(usize, Option<&str>); 3] = [(0, Some("b")), (8, None), (16, Some("a"))];
    let mut before = BTreeMap::new();
    for (i, _) in moves {
        before.insert(i, mirrors_of(&env, &ws_name(i)).await);
    }
    for (i, to) in moves {
        relabel(&env, &ws_name(i), to).await;
    }
    for (i, to) in moves {
        let ws = ws_name(i);
        let (from, to_op) = (operator_of(initial_shard(i)), operator_of(to));
        wait_mirrored(&env, &ws, &remote[i], to).await;
        // The new shard listed it; the old one forgot it (its series are gone).
        assert!(env.operators[to_op].sync_attempts(&ws) >= 1, "{ws}");
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
        let after = mirrors_of(&env, &ws).await;
        for (id, m) in &before[&i] {
            if let Some(now) = after.get(id) {
                assert_eq!(now.uid(), m.uid(), "{ws}: mirror of {id} was re-created");
            }
        }
    }
    // Let any late write of an old shard show, then check nothing moved back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = events(&env).await;
    for (i, to) in moves {
        let ws = ws_name(i);
        let new_shard = SHARDS[operator_of(to)].0;
        let after = mirrors_of(&env, &ws).await;
        assert_eq!(
            after.keys().cloned().collect::<BTreeSet<_>>(),
            remote[i],
            "{ws}"
        );
        assert!(after.values().all(|m| shard_label(m) == to), "{ws}");
        for (id, m) in &after {
            let created = reporters(&all, &m.name_any(), "Created");
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
    let gone = env.mirrors().get_opt(&mirror_name(&first)).await.unwrap();
    assert!(gone.is_none());

    // A second workspace of ws-01's remote workspace, in another shard: the names are held by
    // ws-01's mirrors, which shard b does not cache. Reported as a conflict, nothing taken.
    let held = mirrors_of(&env, "ws-01").await;
    create_workspace(&env, "ws-dup", &remote_id(1), Some("b"), "10s").await;
    common::wait_for(
        TIMEOUT,
        "a MirrorNameConflict Event about ws-dup",
        || async {
            let all = events(&env).await;
            let by = reporters(&all, "ws-dup", "MirrorNameConflict");
            (!by.is_empty()).then_some(by)
        },
    )
    .await
    .iter()
    .for_each(|r| assert_eq!(r, "shard-b"));
    env.wait_next_sync(1, "ws-dup", TIMEOUT).await;
    let after = mirrors_of(&env, "ws-01").await;
    assert_eq!(after.len(), held.len());
    for (id, m) in &held {
        let now = &after[id];
        assert_eq!(now.uid(), m.uid(), "mirror of {id}");
        assert_eq!(shard_label(now), Some("a"), "mirror of {id}");
        assert_eq!(now.owner_references()[0].name, "ws-01", "mirror of {id}");
    }
    assert!(mirrors_of(&env, "ws-dup").await.is_empty());

    // One shard stopped: the others keep syncing their workspaces, nobody takes its own over.
    let b = env.operators.remove(1);
    let b_attempts = b.sync_attempts("ws-09");
    b.stop().await;
    assert!(b_attempts >= 1);
    // Now: 0 = shard a, 1 = default.
    env.wait_next_sync(0, "ws-01", TIMEOUT).await;
    env.wait_next_sync(0, "ws-16", TIMEOUT).await;
    env.wait_next_sync(1, "ws-08", TIMEOUT).await;
    env.wait_next_sync(1, "ws-17", TIMEOUT).await;
    for op in &env.operators {
        assert_eq!(op.sync_attempts("ws-09"), 0);
    }
    env.teardown().await;
}
