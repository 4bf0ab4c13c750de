//! End-to-end tests of `EmrRayJob` mirrors (`spec.jobs`) on the real control plane, against the
//! simulator's `ListRayJob`.

use std::time::Duration;

use crate::common;
use crate::support::*;
use emr_ray_operator::api::{EmrRayJob, WorkspaceJobsStatus};
use emr_ray_operator::controller::jobs::job_name;
use emr_ray_operator::emr::RayJob;
use emr_sim::Faults;
use emr_sim::jobs::SimJob;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;

const ONE_INTERVAL: Duration = Duration::from_secs(40);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn job(id: &str, status: &str, submitted_ago_secs: i64) -> SimJob {
    let submitted = now_ms() - submitted_ago_secs * 1000;
    let ended = matches!(status, "Succeeded" | "Failed").then_some(submitted + 120_000);
    SimJob {
        job: RayJob {
            submission_id: id.into(),
            name: Some(format!("etl-{id}")),
            status: Some(status.into()),
            cluster_state: Some(
                if ended.is_some() {
                    "Deleted"
                } else {
                    "Running"
                }
                .into(),
            ),
            resource_queue: Some("root_queue".into()),
            submit_time: Some(submitted),
            start_time: Some(submitted + 1000),
            end_time: ended,
            duration: Some(119),
            cu_hours: Some(0.5),
            creator_name: Some("Alice".into()),
            dashboard_url: Some(format!(
                "https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/jobs/{id}?token=JOBSECRET42"
            )),
        },
        task_biz_id: None,
    }
}

fn jobs_api(env: &Env) -> Api<EmrRayJob> {
    Api::namespaced(env.client.clone(), &env.ns.name)
}

async fn job_mirrors(env: &Env) -> Vec<EmrRayJob> {
    jobs_api(env)
        .list(&ListParams::default())
        .await
        .expect("list job mirrors")
        .items
}

async fn wait_job<F>(env: &Env, id: &str, what: &str, pred: F) -> EmrRayJob
where
    F: Fn(&EmrRayJob) -> bool,
{
    let name = job_name(id);
    common::wait_for(ONE_INTERVAL, what, || async {
        match jobs_api(env).get_opt(&name).await.expect("get job mirror") {
            Some(m) if m.status.is_some() && pred(&m) => Some(m),
            _ => None,
        }
    })
    .await
}

async fn wait_jobs_status<F>(env: &Env, ws: &str, what: &str, pred: F) -> WorkspaceJobsStatus
where
    F: Fn(&WorkspaceJobsStatus) -> bool,
{
    common::wait_until(ONE_INTERVAL, what, || async {
        let st = env.status(ws).await;
        match st.jobs.clone().filter(|j| pred(j)) {
            Some(j) => Ok(j),
            None => Err(format!(
                "status {st:?}; simulator {:?}",
                env.sim.state.stats()
            )),
        }
    })
    .await
}

fn state_of(m: &EmrRayJob) -> Option<&str> {
    m.status.as_ref().and_then(|s| s.state.as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_mirrored_updated_pruned_and_never_pruned_by_a_bad_listing() {
    let mut env = Env::new("e2e-jobs").await;
    let st = &env.sim.state;
    st.upsert_job(WS, job("raysubmit_ok", "Succeeded", 3600));
    st.upsert_job(WS, job("raysubmit_bad", "Failed", 7200));
    st.upsert_job(WS, job("raysubmit_run", "Running", 600));
    // Outside the window: never listed, never mirrored.
    st.upsert_job(WS, job("raysubmit_old", "Succeeded", 3 * 86_400));
    env.create_workspace(
        "prod",
        json!({"jobs": {"enabled": true, "retention": "24h"}}),
    )
    .await;
    env.start();

    // Mirrors with status, conditions, identity and no token.
    let ok = wait_job(&env, "raysubmit_ok", "succeeded job mirrored", |_| true).await;
    let ws = env.workspaces().get("prod").await.unwrap();
    let owner = &ok.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (ws.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(
        ok.labels()
            .get("emr.aliyun.io/workspace")
            .map(String::as_str),
        Some("prod")
    );
    assert_eq!(ok.spec.submission_id, "raysubmit_ok");
    let s = ok.status.clone().unwrap();
    assert_eq!(s.state.as_deref(), Some("Succeeded"));
    assert_eq!(s.name.as_deref(), Some("etl-raysubmit_ok"));
    assert_eq!(s.resource_queue.as_deref(), Some("root_queue"));
    assert_eq!(s.cluster_state.as_deref(), Some("Deleted"));
    assert_eq!(s.duration.as_deref(), Some("1m59s"));
    assert_eq!(s.cu_hours, Some(0.5));
    assert_eq!(s.creator_name.as_deref(), Some("Alice"));
    assert_eq!(s.observed_generation, ok.metadata.generation);
    for t in [&s.submit_time, &s.start_time, &s.end_time] {
        let t = t.as_deref().expect("time set");
        assert!(
            t.parse::<jiff::Timestamp>().is_ok() && t.ends_with('Z'),
            "{t}"
        );
    }
    assert_eq!(
        s.dashboard_url.as_deref(),
        Some("https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/jobs/raysubmit_ok")
    );
    let ready = condition(&s.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Succeeded")
    );
    let bad = wait_job(&env, "raysubmit_bad", "failed job mirrored", |_| true).await;
    let conds = &bad.status.as_ref().unwrap().conditions;
    assert_eq!(
        condition(conds, "Stalled").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        condition(conds, "Ready").map(|c| c.status.as_str()),
        Some("False")
    );
    let run = wait_job(&env, "raysubmit_run", "running job mirrored", |_| true).await;
    let conds = &run.status.as_ref().unwrap().conditions;
    assert_eq!(
        condition(conds, "Reconciling").map(|c| c.status.as_str()),
        Some("True")
    );
    let all = serde_json::to_string(&job_mirrors(&env).await).unwrap();
    assert!(
        !all.contains("JOBSECRET42"),
        "a dashboard token reached a mirror"
    );
    assert!(
        jobs_api(&env)
            .get_opt(&job_name("raysubmit_old"))
            .await
            .unwrap()
            .is_none(),
        "a job outside the retention window was mirrored"
    );
    let js = wait_jobs_status(&env, "prod", "status.jobs counts", |j| j.total == Some(3)).await;
    assert_eq!(js.failed, Some(1));
    assert_eq!(js.by_state.get("Running"), Some(&1));
    assert_eq!(js.retention.as_deref(), Some("24h"));
    assert!(js.reason.is_none());
    // The request carried the window: the simulator filtered by submitTime.
    assert!(
        env.sim
            .state
            .stats()
            .by_action
            .get("ListRayJob")
            .copied()
            .unwrap_or(0)
            >= 1
    );

    // kubectl columns like KubeRay's RayJob.
    let out = common::kubectl()
        .args(["get", "emrrayjobs", "-n", &env.ns.name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    for col in [
        "NAME",
        "JOB STATUS",
        "DEPLOYMENT STATUS",
        "START TIME",
        "END TIME",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing in {header:?}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains("Succeeded") && l.contains("Deleted")),
        "{text}"
    );

    // Steady state: a sync with nothing changed writes no job mirror and no workspace status.
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    let writes = env.operators[0].writes_to("emrrayjobs");
    let status_writes = env.operators[0].writes_to("emrworkspaces");
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert_eq!(
        env.operators[0].writes_to("emrrayjobs"),
        writes,
        "steady state wrote job mirrors"
    );
    assert_eq!(
        env.operators[0].writes_to("emrworkspaces"),
        status_writes,
        "steady state wrote the workspace status"
    );

    // A job's change reaches its mirror.
    env.sim
        .state
        .upsert_job(WS, job("raysubmit_run", "Succeeded", 600));
    let run = wait_job(&env, "raysubmit_run", "running job now Succeeded", |m| {
        state_of(m) == Some("Succeeded")
    })
    .await;
    let conds = &run.status.as_ref().unwrap().conditions;
    assert_eq!(
        condition(conds, "Ready").map(|c| c.status.as_str()),
        Some("True")
    );
    assert!(condition(conds, "Reconciling").is_none());

    // A job leaving the window (here: its submission moved back beyond it) is deleted.
    env.sim
        .state
        .upsert_job(WS, job("raysubmit_ok", "Succeeded", 2 * 86_400));
    common::wait_for(
        ONE_INTERVAL,
        "mirror of a job out of the window deleted",
        || async {
            jobs_api(&env)
                .get_opt(&job_name("raysubmit_ok"))
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    // A failed job listing deletes nothing and blanks nothing; the workspace says why.
    env.sim.state.set_faults(Faults {
        server_error_rate: 1.0,
        only_action: Some("ListRayJob".into()),
        ..Default::default()
    });
    env.sim.state.remove_job(WS, "raysubmit_bad");
    let js = wait_jobs_status(&env, "prod", "job listing failure in status", |j| {
        j.reason.is_some()
    })
    .await;
    assert_eq!(js.reason.as_deref(), Some("RemoteUnavailable"), "{js:?}");
    assert_eq!(
        js.total,
        Some(2),
        "counts of the last complete listing are kept"
    );
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    let bad = jobs_api(&env)
        .get(&job_name("raysubmit_bad"))
        .await
        .unwrap();
    assert_eq!(
        state_of(&bad),
        Some("Failed"),
        "a failed listing changed a mirror"
    );
    // The cluster listing is unaffected.
    let ready = condition(&env.status("prod").await.conditions, "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready.status.as_str(), "True");

    // A partial job listing (the server ends early: fewer jobs than its totalCount) deletes
    // nothing either.
    env.sim.state.set_faults(Faults::default());
    env.sim
        .state
        .upsert_job(WS, job("raysubmit_bad", "Failed", 7200));
    env.sim
        .state
        .generate_jobs(WS, 100, "bulk", Duration::from_secs(3600));
    common::wait_for(Duration::from_secs(90), "102 job mirrors", || async {
        (job_mirrors(&env).await.len() == 102).then_some(())
    })
    .await;
    env.sim.state.set_faults(Faults {
        end_early: true,
        only_action: Some("ListRayJob".into()),
        ..Default::default()
    });
    env.sim.state.remove_job(WS, "raysubmit_bad");
    let js = wait_jobs_status(&env, "prod", "partial job listing in status", |j| {
        j.reason.is_some()
    })
    .await;
    assert_eq!(js.reason.as_deref(), Some("IncompleteListing"), "{js:?}");
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert_eq!(
        job_mirrors(&env).await.len(),
        102,
        "a partial listing deleted job mirrors"
    );
    // Once listings are complete again, the vanished job's mirror goes.
    env.sim.state.set_faults(Faults::default());
    common::wait_for(ONE_INTERVAL, "vanished job's mirror deleted", || async {
        (job_mirrors(&env).await.len() == 101).then_some(())
    })
    .await;
    assert!(
        jobs_api(&env)
            .get_opt(&job_name("raysubmit_bad"))
            .await
            .unwrap()
            .is_none()
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_off_by_default_and_disabling_deletes_the_mirrors() {
    let mut env = Env::new("e2e-jobs-off").await;
    env.sim
        .state
        .upsert_job(WS, job("raysubmit_x", "Running", 60));
    env.create_workspace("prod", json!({})).await;
    env.start();
    env.wait_ready("prod", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    env.wait_next_sync(0, "prod", ONE_INTERVAL).await;
    assert!(
        job_mirrors(&env).await.is_empty(),
        "jobs mirrored without spec.jobs"
    );
    assert_eq!(
        env.sim.state.stats().by_action.get("ListRayJob"),
        None,
        "jobs listed"
    );
    assert!(env.status("prod").await.jobs.is_none());

    env.create_workspace("prod", json!({"jobs": {"enabled": true}}))
        .await;
    wait_job(&env, "raysubmit_x", "job mirrored once enabled", |_| true).await;
    let js = wait_jobs_status(&env, "prod", "default retention", |j| j.total == Some(1)).await;
    assert_eq!(js.retention.as_deref(), Some("168h"));

    env.create_workspace("prod", json!({"jobs": {"enabled": false}}))
        .await;
    common::wait_for(
        ONE_INTERVAL,
        "job mirrors deleted once disabled",
        || async { job_mirrors(&env).await.is_empty().then_some(()) },
    )
    .await;
    common::wait_for(ONE_INTERVAL, "status.jobs cleared", || async {
        env.status("prod").await.jobs.is_none().then_some(())
    })
    .await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_out_of_bounds_is_refused_at_admission() {
    let env = Env::new("e2e-jobs-adm").await;
    for (retention, why) in [
        ("30m", "at least 1h"),
        ("2161h", "at most 2160h"),
        ("7d", ""),
    ] {
        let r = env
            .workspaces()
            .patch(
                "bad",
                &kube::api::PatchParams::apply("tests"),
                &kube::api::Patch::Apply(json!({
                    "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                    "metadata": {"name": "bad"},
                    "spec": {"regionId": "cn-hangzhou", "workspaceId": WS,
                             "credentials": {"secretRef": {"name": "emr-credentials"}},
                             "jobs": {"enabled": true, "retention": retention}},
                })),
            )
            .await;
        let e = r.expect_err(retention).to_string();
        assert!(e.contains(why), "{retention}: {e}");
    }
    env.teardown().await;
}

/// Deletes workspace `name` with `--cascade=orphan` and waits until it is gone and its job
/// mirrors have no owner — or, `swept`, until they have no owner or are gone (a running
/// operator may delete them at once).
async fn orphan_jobs_workspace(env: &Env, name: &str, jobs: usize, swept: bool) {
    env.workspaces()
        .delete(name, &kube::api::DeleteParams::orphan())
        .await
        .unwrap();
    common::wait_until(
        Duration::from_secs(120),
        "the workspace to be orphaned",
        || async {
            let ws = env.workspaces().get_opt(name).await.unwrap();
            let l = job_mirrors(env).await;
            let ownerless = l.iter().all(|m| m.owner_references().is_empty());
            if ws.is_none() && ownerless && (l.len() == jobs || swept) {
                return Ok(());
            }
            Err(format!(
                "workspace: {:?}; job mirrors: {:?}",
                ws.map(|w| w.metadata.deletion_timestamp.is_some()),
                l.iter()
                    .map(|m| (m.name_any(), m.owner_references().len()))
                    .collect::<Vec<_>>()
            ))
        },
    )
    .await;
}

/// The two job mirrors, once both are controlled by workspace `uid`.
async fn owned_by(env: &Env, uid: &str) -> Option<Vec<EmrRayJob>> {
    let l = job_mirrors(env).await;
    (l.len() == 2
        && l.iter().all(|m| {
            m.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        }))
    .then_some(l)
}

/// `kubectl delete emrworkspace --cascade=orphan` leaves the job mirrors without an owner, as
/// it does the cluster mirrors: a workspace of that name coming back takes them over (the same
/// objects), and without one they are deleted instead of staying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_job_mirrors_are_adopted_again_or_deleted() {
    let mut env = Env::new("e2e-job-orphan").await;
    env.sim
        .state
        .upsert_job(WS, job("raysubmit_orph_a", "Running", 600));
    env.sim
        .state
        .upsert_job(WS, job("raysubmit_orph_b", "Succeeded", 3600));
    env.wait_garbage_collector_watches_crds().await;
    // A long interval: nothing here waits for a periodic sync.
    let spec = json!({"syncInterval": "10m", "jobs": {"enabled": true, "retention": "24h"}});
    env.create_workspace("prod", spec.clone()).await;
    env.start();
    let uid = env.workspaces().get("prod").await.unwrap().uid().unwrap();
    common::wait_for(ONE_INTERVAL, "2 job mirrors", || owned_by(&env, &uid)).await;
    let uids = |l: &[EmrRayJob]| {
        let mut u: Vec<String> = l.iter().filter_map(|m| m.uid()).collect();
        u.sort();
        u
    };
    let before = uids(&job_mirrors(&env).await);

    // The workspace comes back while the operator is down: at its start the new workspace
    // takes over the very same job mirrors.
    env.operators.pop().unwrap().stop().await;
    orphan_jobs_workspace(&env, "prod", 2, false).await;
    env.create_workspace("prod", spec).await;
    let uid = env.workspaces().get("prod").await.unwrap().uid().unwrap();
    env.start();
    let adopted = common::wait_for(
        Duration::from_secs(60),
        "the job mirrors owned by the new workspace",
        || owned_by(&env, &uid),
    )
    .await;
    assert_eq!(uids(&adopted), before, "adopted, not created again");

    // Orphaned while the operator runs, and no workspace comes back: deleted within a sweep
    // (every 10 s) after the workspace went, the namespace left clean.
    orphan_jobs_workspace(&env, "prod", 2, true).await;
    common::wait_for(
        Duration::from_secs(45),
        "orphaned job mirrors deleted",
        || async { job_mirrors(&env).await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(
        env.operators[0].metric(
            "emr_ray_operator_kube_writes_total",
            &[("operation", "delete-orphan"), ("resource", "emrrayjobs")]
        ),
        2.0
    );
    env.teardown().await;
}
