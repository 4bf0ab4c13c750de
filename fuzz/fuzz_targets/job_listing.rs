//! A `ListRayJob` response body, as a hostile or broken endpoint may send it, decoded as the
//! client decodes a job page, then through everything that turns its jobs into `EmrRayJob`
//! mirrors (`plan_jobs`: names, labels, status, kstatus conditions): every kept string clean (no
//! control or invisible character) and capped, every submission ID one the mirror can be named
//! and labelled after, times in RFC 3339, at most one write per job — or a decoding error, which
//! is short and clean. The same bytes as a `submitTime` filter value (the simulator's side) parse
//! or fail without panicking, and the filter the client sends parses back to itself.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check_clean, is_dns_label, is_label_value, is_rfc3339_utc};
use emr_ray_operator::controller::jobs::{JobWrite, job_labels, job_name, plan_jobs};
use emr_ray_operator::controller::plan::Owner;
use emr_ray_operator::emr::job::{JobState, ListRayJobResponse, SubmitWindow};
use emr_ray_operator::emr::text::{MAX_CLUSTER_ID, MAX_SHORT, MAX_STATE, MAX_URL, is_cluster_id};
use emr_ray_operator::time::Time;
use libfuzzer_sys::fuzz_target;

fn check_window(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = SubmitWindow::parse(s);
    }
    if data.len() >= 16 {
        let a = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let b = i64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        let w = SubmitWindow {
            start_ms: a.min(b),
            end_ms: a.max(b),
        };
        assert_eq!(
            SubmitWindow::parse(&w.shrunk()),
            Ok((Some(w.start_ms), Some(w.end_ms)))
        );
        let last = SubmitWindow::last(std::time::Duration::from_millis(a as u64), b);
        assert!(last.start_ms >= 0 && last.start_ms <= last.end_ms.max(0));
    }
}

fuzz_target!(|data: &[u8]| {
    check_window(data);
    let Some(page) = common::decode::<ListRayJobResponse>(data, |p| p.request_id.as_deref()) else {
        return;
    };
    let jobs = page.ray_jobs.unwrap_or_default();
    for j in &jobs {
        let id = &j.submission_id;
        assert!(
            id.is_empty() || is_cluster_id(id),
            "submissionId {id:?} kept"
        );
        assert!(id.len() <= MAX_CLUSTER_ID);
        for (what, s, max) in [
            ("name", &j.name, MAX_SHORT),
            ("status", &j.status, MAX_STATE),
            ("clusterState", &j.cluster_state, MAX_STATE),
            ("resourceQueue", &j.resource_queue, MAX_SHORT),
            ("creatorName", &j.creator_name, MAX_SHORT),
            ("dashboardUrl", &j.dashboard_url, MAX_URL),
        ] {
            if let Some(s) = s {
                check_clean(s, what);
                assert!(s.len() <= max, "{what}: {} bytes", s.len());
            }
        }
        assert_eq!(
            j.failed(),
            matches!(j.state(), Some(JobState::Failed | JobState::Timeout))
        );
    }
    // The client fails a page with an empty or repeated submission ID; what reaches the plan
    // has neither.
    let mut seen = std::collections::HashSet::new();
    let listed: Vec<_> = jobs
        .into_iter()
        .filter(|j| !j.submission_id.is_empty() && seen.insert(j.submission_id.clone()))
        .collect();
    let owner = Owner {
        name: "ws".into(),
        namespace: "team-a".into(),
        uid: "uid-1".into(),
        workspace_id: "w-1234abcd".into(),
        region_id: "cn-hangzhou".into(),
        policy: Default::default(),
        shard: None,
    };
    let now: Time = "2024-01-01T00:00:01Z".parse().expect("a time");
    let (writes, conflicts) = plan_jobs(Some(&listed), true, &[], now);
    assert!(
        writes.len() + conflicts.len() == listed.len(),
        "one write per job"
    );
    for j in &listed {
        let name = job_name(&j.submission_id);
        assert!(is_dns_label(&name), "{:?} -> {name:?}", j.submission_id);
        for (k, v) in job_labels(&owner, &j.submission_id) {
            assert!(is_label_value(&v), "label {k}={v:?}");
        }
    }
    for w in &writes {
        let JobWrite::Apply { name, status, .. } = w else {
            panic!("a first listing only creates: {w:?}")
        };
        assert!(is_dns_label(name), "{name:?}");
        for t in [&status.submit_time, &status.start_time, &status.end_time]
            .into_iter()
            .flatten()
        {
            assert!(is_rfc3339_utc(t), "timestamp {t:?}");
        }
        if let Some(u) = &status.dashboard_url {
            check_clean(u, "dashboardUrl");
            assert!(u.len() <= MAX_URL);
            assert!(!u.contains(['?', '#']), "query/fragment kept: {u:?}");
        }
        assert!(status.cu_hours.is_none_or(f64::is_finite));
        common::walk(
            &serde_json::to_value(status).expect("the status serialises"),
            "status",
            MAX_URL,
        );
        for cond in &status.conditions {
            common::check_condition(&cond.message, &cond.reason, cond.status.as_str());
        }
    }
});
