//! Table tests of [`plan`]: one row per rule of the README's gone/keep and condition tables.

use super::*;
use crate::api::{ANNOTATION_CLUSTER_ID, ConditionStatus, ConditionType, EmrRayCluster, Reason};
use crate::emr::{ClusterState, RayCluster};

/// 2026-01-01T00:00:00Z.
const NOW: &Time = &Time::test(1_767_225_600);

fn owner(policy: GoneClusterPolicy) -> Owner {
    Owner {
        namespace: "ns".into(),
        name: "ws".into(),
        uid: "uid-1".into(),
        workspace_id: "w-1".into(),
        region_id: "cn-hangzhou".into(),
        policy,
        shard: None,
    }
}

fn cluster(id: &str, state: ClusterState) -> RayCluster {
    RayCluster {
        cluster_id: id.into(),
        name: Some(format!("name-{id}")),
        state: Some(state),
        ..Default::default()
    }
}

/// The mirror the operator would have written for `c`, as the cache holds it.
fn mirrored(o: &Owner, c: &RayCluster) -> Arc<CachedMirror> {
    Arc::new(CachedMirror::of(&mirror_object(o, c)))
}

/// The mirror the operator would have written for `c` (as the plan writes it).
fn mirror_object(o: &Owner, c: &RayCluster) -> EmrRayCluster {
    let mut m = EmrRayCluster::new(&mirror::mirror_name(&c.cluster_id), o.spec(&c.cluster_id));
    m.metadata.namespace = Some(o.namespace.clone());
    m.metadata.labels = Some(o.labels(&c.cluster_id));
    m.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_CLUSTER_ID.to_string(),
        c.cluster_id.clone(),
    )]));
    m.metadata.owner_references = Some(vec![o.reference()]);
    m.metadata.generation = Some(1);
    let mut st = mirror::remote_status(c);
    st.observed_generation = Some(1);
    st.conditions = mirror::mirror_conditions(&st, &[], Some(1), None, *NOW);
    m.status = Some(st);
    m
}

/// The cache's records of `objects`, by cluster ID.
fn cached(objects: &[EmrRayCluster]) -> HashMap<String, Arc<CachedMirror>> {
    objects
        .iter()
        .map(|m| (m.spec.cluster_id.clone(), Arc::new(CachedMirror::of(m))))
        .collect()
}

/// Plans as `write::write_mirrors` does: from the cache's records, then, when that plan names
/// mirrors it needs whole ([`Plan::missing`]), again with the statuses of `objects` (what the
/// API server holds).
fn plan_as_written(input: Input<'_>, objects: &[EmrRayCluster]) -> Plan {
    let first = plan(&input);
    if first.missing.is_empty() {
        return first;
    }
    assert!(
        first
            .actions
            .iter()
            .all(|a| !first.missing.contains(&a.cluster_id))
    );
    let statuses: HashMap<String, EmrRayClusterStatus> = objects
        .iter()
        .filter_map(|m| Some((m.spec.cluster_id.clone(), m.status.clone()?)))
        .collect();
    let again = plan(&Input {
        statuses: Some(&statuses),
        ..input
    });
    assert!(again.missing.is_empty(), "{:?}", again.missing);
    again
}

/// What happened to each cluster ID, as a compact word.
fn outcome(p: &Plan, id: &str) -> &'static str {
    match p.actions.iter().find(|a| a.cluster_id == id) {
        None if p
            .conflicts
            .iter()
            .any(|c| c.name == mirror::mirror_name(id)) =>
        {
            "conflict"
        }
        None => "unchanged",
        Some(a) => match &a.write {
            Write::Delete => "delete",
            Write::Apply(_) if a.prev.is_none() => "create",
            Write::Apply(_) => "repair-with-status",
            Write::Metadata => "repair",
            Write::Status(s) if s.gone => "mark-gone",
            Write::Status(s) => {
                let synced = s
                    .conditions
                    .iter()
                    .find(|c| c.type_ == ConditionType::Synced)
                    .unwrap();
                if synced.status == ConditionStatus::False {
                    match synced.reason.as_str() {
                        "RemovalUnconfirmed" => "mark-unconfirmed",
                        _ => "mark-stale",
                    }
                } else {
                    "update"
                }
            }
        },
    }
}

struct Case {
    what: &'static str,
    policy: GoneClusterPolicy,
    /// `None`: no complete listing yet.
    listed: Option<Vec<RayCluster>>,
    on_boundary: bool,
    /// The latest attempt failed with this reason.
    failed: Option<Reason>,
    existing: Vec<RayCluster>,
    /// Names held by another workspace.
    foreign: &'static [&'static str],
    expect: &'static [(&'static str, &'static str)],
    mirrors: usize,
}

fn run(case: &Case) -> Plan {
    let o = owner(case.policy);
    let decoded = case.listed.clone().map(|l| {
        let (mut listing, clusters) = Listing::decoded(l, 100);
        listing.on_page_boundary = case.on_boundary;
        (listing, clusters)
    });
    let listing = decoded.as_ref().map(|(l, _)| l);
    // A failed attempt decoded nothing: the plan has the last listing's identities only.
    let clusters = decoded
        .as_ref()
        .filter(|_| case.failed.is_none())
        .map(|(_, c)| c);
    let objects: Vec<EmrRayCluster> = case.existing.iter().map(|c| mirror_object(&o, c)).collect();
    let existing = cached(&objects);
    let stale = case
        .failed
        .map(|r| Staleness::from_failure(r, None, Some("2025-12-31T23:59:00Z")));
    let held: HashMap<String, String> = case
        .foreign
        .iter()
        .map(|name| (name.to_string(), "other".to_string()))
        .collect();
    plan_as_written(
        Input {
            owner: &o,
            listing,
            clusters,
            listing_is_current: case.failed.is_none() && listing.is_some(),
            stale: stale.as_ref(),
            existing: &existing,
            held_elsewhere: &held,
            refused: &HashSet::new(),
            diagnoses: &Default::default(),
            statuses: None,
            now: NOW,
        },
        &objects,
    )
}

#[test]
fn gone_keep_stale_boundary_and_conflict_rules() {
    use ClusterState::*;
    use GoneClusterPolicy::*;
    let a = || cluster("ray-a", Running);
    let b = || cluster("ray-b", Running);
    let b_err = || cluster("ray-b", Error);
    let cases = [
        Case {
            what: "listed and new: created",
            policy: Delete,
            listed: Some(vec![a()]),
            on_boundary: false,
            failed: None,
            existing: vec![],
            foreign: &[],
            expect: &[("ray-a", "create")],
            mirrors: 1,
        },
        Case {
            what: "listed and unchanged: no write",
            policy: Delete,
            listed: Some(vec![a()]),
            on_boundary: false,
            failed: None,
            existing: vec![a()],
            foreign: &[],
            expect: &[("ray-a", "unchanged")],
            mirrors: 1,
        },
        Case {
            what: "listed with a new state: status only",
            policy: Delete,
            listed: Some(vec![a(), b_err()]),
            on_boundary: false,
            failed: None,
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "unchanged"), ("ray-b", "update")],
            mirrors: 2,
        },
        Case {
            what: "gone from a complete listing, policy Delete: deleted",
            policy: Delete,
            listed: Some(vec![a()]),
            on_boundary: false,
            failed: None,
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "unchanged"), ("ray-b", "delete")],
            mirrors: 1,
        },
        Case {
            what: "gone from a complete listing, policy Keep: kept, gone",
            policy: Keep,
            listed: Some(vec![a()]),
            on_boundary: false,
            failed: None,
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "unchanged"), ("ray-b", "mark-gone")],
            mirrors: 2,
        },
        Case {
            what: "everything gone from an empty complete listing: deleted",
            policy: Delete,
            listed: Some(vec![]),
            on_boundary: false,
            failed: None,
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "delete"), ("ray-b", "delete")],
            mirrors: 0,
        },
        Case {
            what: "listing ended on a page boundary: removal unconfirmed, kept",
            policy: Delete,
            listed: Some(vec![a()]),
            on_boundary: true,
            failed: None,
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "unchanged"), ("ray-b", "mark-unconfirmed")],
            mirrors: 2,
        },
        Case {
            what: "page boundary with policy Keep: not marked gone either",
            policy: Keep,
            listed: Some(vec![a()]),
            on_boundary: true,
            failed: None,
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-b", "mark-unconfirmed")],
            mirrors: 2,
        },
        Case {
            what: "latest attempt failed: listed mirrors kept, marked stale, nothing deleted",
            policy: Delete,
            listed: Some(vec![a()]),
            on_boundary: false,
            failed: Some(Reason::RemoteUnavailable),
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "mark-stale"), ("ray-b", "mark-stale")],
            mirrors: 2,
        },
        Case {
            what: "failed before any listing: existing mirrors kept, marked stale",
            policy: Delete,
            listed: None,
            on_boundary: false,
            failed: Some(Reason::AuthenticationFailed),
            existing: vec![a(), b()],
            foreign: &[],
            expect: &[("ray-a", "mark-stale"), ("ray-b", "mark-stale")],
            mirrors: 2,
        },
        Case {
            what: "no listing yet and no failure: nothing touched",
            policy: Delete,
            listed: None,
            on_boundary: false,
            failed: None,
            existing: vec![a()],
            foreign: &[],
            expect: &[("ray-a", "unchanged")],
            mirrors: 1,
        },
        Case {
            what: "name held by another workspace's mirror: left alone, reported",
            policy: Delete,
            listed: Some(vec![a(), b()]),
            on_boundary: false,
            failed: None,
            existing: vec![],
            foreign: &["ray-b"],
            expect: &[("ray-a", "create"), ("ray-b", "conflict")],
            mirrors: 1,
        },
    ];
    for case in &cases {
        let p = run(case);
        for (id, want) in case.expect {
            assert_eq!(outcome(&p, id), *want, "{}: {id}", case.what);
        }
        assert_eq!(p.mirrors, case.mirrors, "{}: mirrors", case.what);
        assert!(
            case.failed.is_none() || p.actions.iter().all(|a| a.write != Write::Delete),
            "{}: a failed listing never deletes",
            case.what
        );
    }
}

#[test]
fn stale_marks_carry_the_failure_reason_and_keep_the_data() {
    let a = cluster("ray-a", ClusterState::Running);
    let p = run(&Case {
        what: "throttled",
        policy: GoneClusterPolicy::Delete,
        listed: Some(vec![a.clone()]),
        on_boundary: false,
        failed: Some(Reason::Throttled),
        existing: vec![a],
        foreign: &[],
        expect: &[],
        mirrors: 1,
    });
    let Write::Status(s) = &p.actions[0].write else {
        panic!("{:?}", p.actions[0].write)
    };
    let synced = s
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Synced)
        .unwrap();
    assert_eq!(
        (synced.status, synced.reason.as_str()),
        (ConditionStatus::False, "Throttled")
    );
    assert_eq!(s.state.as_deref(), Some("Running"));
    assert_eq!(s.display_name.as_deref(), Some("name-ray-a"));
}

#[test]
fn events_follow_the_writes() {
    use ClusterState::*;
    let p = run(&Case {
        what: "events",
        policy: GoneClusterPolicy::Keep,
        listed: Some(vec![cluster("ray-a", Error), cluster("ray-c", Running)]),
        on_boundary: false,
        failed: None,
        existing: vec![cluster("ray-a", Running), cluster("ray-b", Running)],
        foreign: &[],
        expect: &[],
        mirrors: 3,
    });
    let ev = |id: &str| {
        p.actions
            .iter()
            .find(|a| a.cluster_id == id)
            .unwrap()
            .event
            .clone()
    };
    assert_eq!(
        ev("ray-a"),
        Some(MirrorEvent::StateChanged {
            from: Some("Running".into()),
            to: Some("Error".into()),
            message: None
        })
    );
    assert_eq!(ev("ray-b"), Some(MirrorEvent::Gone));
    assert_eq!(
        ev("ray-c"),
        Some(MirrorEvent::Created {
            state: Some("Running".into())
        })
    );
    assert!(!p.summarize_events);
}

#[test]
fn many_creations_are_summarised_and_refused_mirrors_go_last() {
    let listed: Vec<RayCluster> = (0..30)
        .map(|i| cluster(&format!("ray-{i:02}"), ClusterState::Running))
        .collect();
    let o = owner(GoneClusterPolicy::Delete);
    let (listing, clusters) = Listing::decoded(listed, 100);
    let refused = HashSet::from(["ray-00".to_string()]);
    let p = plan(&Input {
        owner: &o,
        listing: Some(&listing),
        clusters: Some(&clusters),
        listing_is_current: true,
        stale: None,
        existing: &HashMap::new(),
        held_elsewhere: &HashMap::new(),
        refused: &refused,
        diagnoses: &Default::default(),
        statuses: None,
        now: NOW,
    });
    assert!(p.summarize_events);
    assert_eq!(p.actions.len(), 30);
    assert_eq!(p.actions[0].name, "ray-01");
    assert_eq!(p.actions[29].name, "ray-00");
}

#[test]
fn metadata_drift_is_repaired() {
    let a = cluster("ray-a", ClusterState::Running);
    let o = owner(GoneClusterPolicy::Delete);
    let mut m = mirror_object(&o, &a);
    m.metadata.labels.as_mut().unwrap().remove(LABEL_WORKSPACE);
    let existing = HashMap::from([("ray-a".to_string(), Arc::new(CachedMirror::of(&m)))]);
    let (listing, clusters) = Listing::decoded(vec![a], 100);
    let p = plan(&Input {
        owner: &o,
        listing: Some(&listing),
        clusters: Some(&clusters),
        listing_is_current: true,
        stale: None,
        existing: &existing,
        held_elsewhere: &HashMap::new(),
        refused: &HashSet::new(),
        diagnoses: &Default::default(),
        statuses: None,
        now: NOW,
    });
    assert_eq!(outcome(&p, "ray-a"), "repair");
    assert_eq!(p.actions[0].event, None, "a repair is not a state change");
}

#[test]
fn remote_ids_that_map_to_one_name_never_share_a_mirror() {
    let a = cluster("Ray_1", ClusterState::Running);
    let hostile_id = mirror::mirror_name("Ray_1");
    let b = cluster(&hostile_id, ClusterState::Error);
    assert_eq!(
        mirror::mirror_name(&hostile_id),
        mirror::mirror_name("Ray_1")
    );
    let o = owner(GoneClusterPolicy::Delete);
    let (listing, clusters) = Listing::decoded(vec![a, b], 100);
    let p = plan(&Input {
        owner: &o,
        listing: Some(&listing),
        clusters: Some(&clusters),
        listing_is_current: true,
        stale: None,
        existing: &HashMap::new(),
        held_elsewhere: &HashMap::new(),
        refused: &HashSet::new(),
        diagnoses: &Default::default(),
        statuses: None,
        now: NOW,
    });
    assert_eq!(p.actions.len(), 1, "one object, one writer");
    assert_eq!(p.conflicts.len(), 1);
    assert_eq!(p.mirrors, 1);
}

#[test]
fn the_shard_label_of_mirrors_is_the_namespaces_never_the_workspaces() {
    let mut ws = EmrWorkspace::new(
        "ws",
        serde_json::from_value(serde_json::json!({
            "regionId": "cn-hangzhou", "workspaceId": "w-1",
            "credentials": {"secretRef": {"name": "s"}}
        }))
        .unwrap(),
    );
    // The tenant labels its workspace for shard b; its namespace is in shard a (or in none).
    ws.metadata.labels = Some([(LABEL_SHARD.to_string(), "b".to_string())].into());
    for namespace in [Some("a"), None] {
        let o = Owner::of(&ws, namespace.map(String::from));
        assert_eq!(o.shard.as_deref(), namespace);
        assert_eq!(
            o.labels("ray-a").get(LABEL_SHARD).map(String::as_str),
            namespace
        );
    }
}

#[test]
fn a_workspace_moved_to_another_shard_relabels_its_mirrors() {
    let a = cluster("ray-a", ClusterState::Running);
    let b = cluster("ray-b", ClusterState::Running);
    let (listing, clusters) = Listing::decoded(vec![a.clone(), b.clone()], 100);
    let run_with = |o: &Owner, existing: &HashMap<String, Arc<CachedMirror>>| {
        plan(&Input {
            owner: o,
            listing: Some(&listing),
            clusters: Some(&clusters),
            listing_is_current: true,
            stale: None,
            existing,
            held_elsewhere: &HashMap::new(),
            refused: &HashSet::new(),
            diagnoses: &Default::default(),
            statuses: None,
            now: NOW,
        })
    };
    let unsharded = owner(GoneClusterPolicy::Delete);
    let shard = |s: &str| Owner {
        shard: Some(s.into()),
        ..owner(GoneClusterPolicy::Delete)
    };
    for (what, before, after) in [
        ("into a shard", unsharded.clone(), shard("a")),
        ("between shards", shard("a"), shard("b")),
        ("back to the default shard", shard("b"), unsharded.clone()),
    ] {
        let existing = HashMap::from([
            ("ray-a".to_string(), mirrored(&before, &a)),
            ("ray-b".to_string(), mirrored(&after, &b)),
        ]);
        let p = run_with(&after, &existing);
        assert_eq!(outcome(&p, "ray-a"), "repair", "{what}");
        assert_eq!(outcome(&p, "ray-b"), "unchanged", "{what}");
        assert_eq!(p.actions[0].event, None, "{what}: not a creation");
        assert_eq!(
            after.labels("ray-a").get(LABEL_SHARD),
            after.shard.as_ref(),
            "{what}"
        );
    }
}

#[test]
fn instances_are_shown_kept_on_a_failed_fetch_and_dropped_when_healthy() {
    use crate::api::RayClusterInstance;
    use crate::controller::diagnose::Diagnoses;
    use std::time::{Duration, Instant};
    let o = owner(GoneClusterPolicy::Delete);
    let stuck = Duration::from_secs(600);
    let oom = vec![RayClusterInstance {
        instance_type: Some("head".into()),
        container_state_reason: Some("OOMKilled".into()),
        container_exit_code: Some(137),
        ..Default::default()
    }];
    let run_with = |c: &RayCluster, objects: &[EmrRayCluster], d: &Diagnoses| {
        let (listing, clusters) = Listing::decoded(vec![c.clone()], 100);
        let existing = cached(objects);
        plan_as_written(
            Input {
                owner: &o,
                listing: Some(&listing),
                clusters: Some(&clusters),
                listing_is_current: true,
                stale: None,
                existing: &existing,
                held_elsewhere: &HashMap::new(),
                refused: &HashSet::new(),
                diagnoses: d,
                statuses: None,
                now: NOW,
            },
            objects,
        )
    };
    let status_of = |p: &Plan| match &p.actions[0].write {
        Write::Status(s) | Write::Apply(s) => s.clone(),
        Write::Metadata => panic!("the status is unchanged"),
        Write::Delete => panic!("deleted"),
    };
    let stalled = |s: &EmrRayClusterStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Stalled && c.status == ConditionStatus::True)
            .map(|c| c.message.clone())
    };
    // An Error cluster whose instances were fetched: shown, and named by Stalled.
    let failed = RayCluster {
        message: Some("the cluster failed".into()),
        ..cluster("ray-a", ClusterState::Error)
    };
    let mut d = Diagnoses::default();
    let now = Instant::now();
    let listing = Listing::new(vec![failed.clone()], 100);
    assert_eq!(d.observe(&listing, now, stuck), vec!["ray-a".to_string()]);
    let existing = [mirror_object(&o, &cluster("ray-a", ClusterState::Running))];
    // Nothing fetched yet: the remote message, no instances.
    let s = status_of(&run_with(&failed, &existing, &d));
    assert!(s.instances.is_empty());
    assert_eq!(stalled(&s).as_deref(), Some("the cluster failed"));
    d.record(
        "ray-a",
        d.listed("ray-a").unwrap(),
        Ok(oom.clone()),
        now,
        stuck,
    );
    let s = status_of(&run_with(&failed, &existing, &d));
    assert_eq!(s.instances, oom);
    assert_eq!(stalled(&s).as_deref(), Some("head: OOMKilled, exit 137"));
    // Another process (a restart) whose fetch failed: the mirror keeps what it shows.
    let mut shown = mirror_object(&o, &failed);
    shown.status = Some(s.clone());
    let existing = [shown];
    let mut restarted = Diagnoses::default();
    restarted.observe(&listing, now, stuck);
    restarted.record(
        "ray-a",
        restarted.listed("ray-a").unwrap(),
        Err(None),
        now,
        stuck,
    );
    let p = run_with(&failed, &existing, &restarted);
    assert_eq!(outcome(&p, "ray-a"), "unchanged", "{:?}", p.actions);
    // Running again: the instances go.
    let healthy = cluster("ray-a", ClusterState::Running);
    restarted.observe(&Listing::new(vec![healthy.clone()], 100), now, stuck);
    let s = status_of(&run_with(&healthy, &existing, &restarted));
    assert!(s.instances.is_empty());
    assert_eq!(stalled(&s), None);
}

#[test]
fn a_failed_listing_plans_from_the_identities_it_kept() {
    use ClusterState::*;
    // The last complete listing had a (its mirror shows more than its state) and b (its mirror
    // deleted by hand since); this attempt failed, so nothing was decoded.
    let a = RayCluster {
        message: Some("all good".into()),
        ..cluster("ray-a", Running)
    };
    let p = run(&Case {
        what: "failed, one mirror deleted by hand",
        policy: GoneClusterPolicy::Delete,
        listed: Some(vec![a.clone(), cluster("ray-b", Starting)]),
        on_boundary: false,
        failed: Some(Reason::RemoteUnavailable),
        existing: vec![a],
        foreign: &[],
        expect: &[],
        mirrors: 2,
    });
    assert_eq!(p.mirrors, 2);
    let status = |id: &str| match &p.actions.iter().find(|x| x.cluster_id == id).unwrap().write {
        Write::Status(s) | Write::Apply(s) => s.clone(),
        other => panic!("{id}: {other:?}"),
    };
    let synced = |s: &EmrRayClusterStatus| {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Synced)
            .unwrap();
        (c.status, c.reason.clone())
    };
    // a keeps everything it shows; only its conditions say the data is stale.
    assert_eq!(outcome(&p, "ray-a"), "mark-stale");
    let sa = status("ray-a");
    assert_eq!(sa.message.as_deref(), Some("all good"));
    assert_eq!(sa.display_name.as_deref(), Some("name-ray-a"));
    assert_eq!(
        synced(&sa),
        (ConditionStatus::False, "RemoteUnavailable".to_string())
    );
    // b is created again from what the listing kept: its ID and state, marked stale.
    assert_eq!(outcome(&p, "ray-b"), "create");
    let sb = status("ray-b");
    assert_eq!(sb.state.as_deref(), Some("Starting"));
    assert_eq!(sb.display_name, None);
    assert_eq!(
        synced(&sb),
        (ConditionStatus::False, "RemoteUnavailable".to_string())
    );
}

#[test]
fn a_plan_that_must_keep_data_names_the_mirrors_it_needs_whole() {
    use ClusterState::*;
    let o = owner(GoneClusterPolicy::Keep);
    let (a, b) = (cluster("ray-a", Running), cluster("ray-b", Running));
    let objects = [mirror_object(&o, &a), mirror_object(&o, &b)];
    let existing = cached(&objects);
    // A complete listing without b: a is planned from the cache's digest (nothing to write),
    // b is kept (marked gone), which needs its status whole.
    let (listing, clusters) = Listing::decoded(vec![a.clone()], 100);
    let input = Input {
        owner: &o,
        listing: Some(&listing),
        clusters: Some(&clusters),
        listing_is_current: true,
        stale: None,
        existing: &existing,
        held_elsewhere: &HashMap::new(),
        refused: &HashSet::new(),
        diagnoses: &Default::default(),
        statuses: None,
        now: NOW,
    };
    let first = plan(&input);
    assert!(first.actions.is_empty(), "{:?}", first.actions);
    assert_eq!(first.missing, vec!["ray-b".to_string()]);
    assert_eq!(first.mirrors, 2);
    let p = plan_as_written(input, &objects);
    assert_eq!(outcome(&p, "ray-a"), "unchanged");
    assert_eq!(outcome(&p, "ray-b"), "mark-gone");
    let Write::Status(s) = &p.actions[0].write else {
        panic!("{:?}", p.actions)
    };
    // Everything b showed is kept.
    assert_eq!(s.display_name.as_deref(), Some("name-ray-b"));
}
