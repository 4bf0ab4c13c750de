//! A `ListRayCluster` response body, as a hostile or broken endpoint may send it, through
//! everything that turns a remote cluster into a mirror: its name, label value, status and
//! conditions — every string of which is clean (no control or invisible character) and capped —
//! or into a decoding error, which is short and clean.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{is_dns_label, is_label_value, is_rfc3339_utc, walk};
use emr_ray_operator::api::Reason;
use emr_ray_operator::controller::mirror::{
    Staleness, label_value, mirror_conditions, mirror_name, remote_status,
};
use emr_ray_operator::emr::ListRayClusterResponse;
use emr_ray_operator::emr::text::MAX_TEXT;
use emr_ray_operator::time::Time;
use libfuzzer_sys::fuzz_target;

/// What the status shows of an endpoint: no query, fragment or user info.
fn check_redacted(shown: &str) {
    assert!(
        !shown.contains(['?', '#']),
        "query/fragment kept: {shown:?}"
    );
    if let Ok(u) = url::Url::parse(shown) {
        assert!(
            u.username().is_empty() && u.password().is_none(),
            "user info kept: {shown:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(page) = common::decode::<ListRayClusterResponse>(data, |p| p.request_id.as_deref())
    else {
        return;
    };
    for c in page.ray_clusters.iter().flatten() {
        let name = mirror_name(&c.cluster_id);
        assert!(is_dns_label(&name), "{:?} -> {name:?}", c.cluster_id);
        assert_eq!(name, mirror_name(&c.cluster_id), "names are stable");
        let label = label_value(&c.cluster_id);
        assert!(is_label_value(&label), "{:?} -> {label:?}", c.cluster_id);

        let status = remote_status(c);
        if let Some(e) = &status.endpoints {
            e.dashboard.as_deref().map(check_redacted);
            e.grpc.as_deref().map(check_redacted);
        }
        let memory = status.desired_memory.as_deref().map(|m| {
            m.strip_suffix("Gi")
                .unwrap_or_else(|| panic!("desiredMemory {m:?} without Gi"))
        });
        for v in [status.desired_cpu.as_deref(), memory]
            .into_iter()
            .flatten()
        {
            let n: f64 = v.parse().unwrap_or_else(|_| panic!("quantity {v:?}"));
            assert!(
                n.is_finite() && n >= 0.0 && !v.starts_with('-'),
                "quantity {v:?}"
            );
        }
        assert!(status.desired_worker_replicas.is_none_or(|w| w >= 0));
        for t in [
            &status.create_time,
            &status.start_time,
            &status.modified_time,
        ]
        .into_iter()
        .flatten()
        {
            assert!(is_rfc3339_utc(t), "timestamp {t:?}");
        }
        walk(
            &serde_json::to_value(&status).expect("the status serialises"),
            "status",
            MAX_TEXT,
        );

        let stale = Staleness::from_failure(Reason::Throttled, Some("Throttling.User"), None);
        let t1: Time = "2024-01-01T00:00:01Z".parse().expect("a time");
        let t2: Time = "2024-01-01T00:00:02Z".parse().expect("a time");
        let first = mirror_conditions(&status, &[], Some(1), None, t1);
        let again = mirror_conditions(&status, &first, Some(2), Some(&stale), t2);
        for cond in first.iter().chain(&again) {
            common::check_condition(&cond.message, &cond.reason, cond.status.as_str());
        }
    }
});
