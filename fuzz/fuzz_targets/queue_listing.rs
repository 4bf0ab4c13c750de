//! A `ListWorkspaceQueues` response body, as a hostile or broken endpoint may send it, decoded as
//! the client decodes a queue page, then through everything that turns it into the workspace's
//! `queues[]` and its `queue_resource` series: every kept string clean (no control or invisible
//! character) and capped, at most `MAX_ENVIRONMENTS` environments per queue and
//! `MAX_STATUS_QUEUES` queues in the status (unique names), quantities the CRD's patterns accept
//! and series values finite and non-negative (`minResource`/`maxResource`/`usedResource` are JSON
//! inside a string, read by `QueueResources::parse`); the `nextToken` kept exactly, at most
//! `MAX_NEXT_TOKEN` bytes, and sent back as the one `nextToken` of the next page's query — or a
//! decoding error, which is short and clean.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::check_clean;
use emr_ray_operator::controller::queues::{MAX_STATUS_QUEUES, queue_statuses, series_values};
use emr_ray_operator::emr::EmrClient;
use emr_ray_operator::emr::queues::{
    ListWorkspaceQueuesResponse, MAX_ENVIRONMENTS, MAX_NEXT_TOKEN, QueueResources,
};
use emr_ray_operator::emr::sign::parse_query;
use emr_ray_operator::emr::text::{MAX_SHORT, MAX_STATE};
use libfuzzer_sys::fuzz_target;

/// `^[0-9]+(\.[0-9]+)?$` (the CRD's `QUEUE_NUMBER_PATTERN`).
fn is_number(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "1"));
    [int, frac]
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_resources(r: QueueResources) {
    for v in [r.cpu, r.memory_gi, r.gpu].into_iter().flatten() {
        assert!(v.is_finite() && v >= 0.0, "quantity {v}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(page) =
        common::decode::<ListWorkspaceQueuesResponse>(data, |p| p.request_id.as_deref())
    else {
        return;
    };
    if let Some(token) = &page.next_token {
        assert!(
            !token.is_empty() && token.len() <= MAX_NEXT_TOKEN,
            "{token:?}"
        );
        let endpoint = url::Url::parse("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/")
            .expect("a URL");
        let url = EmrClient::queues_url(&endpoint, "w-1234abcd", 100, Some(token));
        assert_eq!(url.path(), "/api/v1/workspaces/w-1234abcd/queues");
        let query = parse_query(url.query().unwrap_or_default());
        assert_eq!(
            query,
            [
                ("maxResults".to_string(), "100".to_string()),
                ("nextToken".to_string(), token.clone())
            ],
            "the token goes back exactly, as one parameter"
        );
    }
    let queues = page.queues.unwrap_or_default();
    for q in &queues {
        for (what, s, max) in [
            ("queueName", &q.queue_name, MAX_SHORT),
            ("queueStatus", &q.queue_status, MAX_SHORT),
            ("queueType", &q.queue_type, MAX_SHORT),
            ("minResource", &q.min_resource, MAX_SHORT),
            ("maxResource", &q.max_resource, MAX_SHORT),
            ("usedResource", &q.used_resource, MAX_SHORT),
            ("workspaceId", &q.workspace_id, MAX_SHORT),
            ("regionId", &q.region_id, MAX_SHORT),
            ("creator", &q.creator, MAX_SHORT),
            ("paymentType", &q.payment_type, MAX_SHORT),
            ("queueCategory", &q.queue_category, MAX_SHORT),
            ("queueScope", &q.queue_scope, MAX_SHORT),
            ("properties", &q.properties, MAX_SHORT),
        ] {
            if let Some(s) = s {
                check_clean(s, what);
                assert!(s.len() <= max, "{what}: {} bytes", s.len());
            }
        }
        if let Some(envs) = &q.environments {
            assert!(
                envs.len() <= MAX_ENVIRONMENTS,
                "{} environments",
                envs.len()
            );
            for e in envs {
                check_clean(e, "environment");
                assert!(!e.is_empty() && e.len() <= MAX_STATE, "environment {e:?}");
            }
        }
        for r in [&q.min_resource, &q.max_resource, &q.used_resource] {
            check_resources(QueueResources::parse(r.as_deref()));
        }
    }
    let statuses = queue_statuses(&queues);
    assert!(
        statuses.len() <= MAX_STATUS_QUEUES,
        "{} queues",
        statuses.len()
    );
    assert!(
        statuses.windows(2).all(|w| w[0].name < w[1].name),
        "names sorted and unique"
    );
    for s in &statuses {
        assert!(!s.name.is_empty());
        for q in [&s.min, &s.max, &s.used].into_iter().flatten() {
            for n in [&q.cpu, &q.gpu].into_iter().flatten() {
                assert!(is_number(n), "number {n:?}");
            }
            if let Some(m) = &q.memory {
                let n = m
                    .strip_suffix("Gi")
                    .unwrap_or_else(|| panic!("memory {m:?}"));
                assert!(is_number(n), "memory {m:?}");
            }
        }
        common::walk(
            &serde_json::to_value(s).expect("a queue status serialises"),
            "queue",
            MAX_SHORT,
        );
        for (_, _, v) in series_values(s) {
            assert!(v.is_finite() && v >= 0.0, "series value {v}");
        }
    }
});
