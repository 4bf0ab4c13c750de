//! A `GetRayCluster` response body, as a hostile or broken endpoint may send it, through
//! everything that turns it into a mirror's `instances[]` and its `Stalled` message: at most
//! `MAX_INSTANCES` instances, every string clean (no control or invisible character) and
//! capped, times in RFC 3339 — or into a decoding error, which is short and clean.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check_clean, walk};
use emr_ray_operator::controller::diagnose::{failing_summary, instance_status};
use emr_ray_operator::emr::model::{GetRayClusterResponse, MAX_INSTANCE_MESSAGE, MAX_INSTANCES};
use libfuzzer_sys::fuzz_target;

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    s.len() >= 20
        && s.ends_with('Z')
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b'T'
        && s.bytes()
            .all(|c| c.is_ascii_digit() || b"-T:.Z".contains(&c))
}

fuzz_target!(|data: &[u8]| {
    let Some(detail) = common::decode::<GetRayClusterResponse>(data, |p| p.request_id.as_deref())
    else {
        return;
    };
    let instances: Vec<_> = detail
        .instances
        .iter()
        .flatten()
        .map(instance_status)
        .collect();
    assert!(
        instances.len() <= MAX_INSTANCES,
        "{} instances",
        instances.len()
    );
    for i in &instances {
        for t in [&i.create_time, &i.start_time].into_iter().flatten() {
            assert!(is_rfc3339_utc(t), "timestamp {t:?}");
        }
        walk(
            &serde_json::to_value(i).expect("an instance serialises"),
            "instance",
            MAX_INSTANCE_MESSAGE,
        );
    }
    if let Some(summary) = failing_summary(&instances) {
        check_clean(&summary, "Stalled message");
        assert!(summary.len() <= 2 * MAX_INSTANCE_MESSAGE, "{summary}");
    }
});
