//! Pure functions that turn a remote Ray cluster into the desired `EmrRayCluster` mirror:
//! its name, labels and status, and the kstatus conditions. No I/O here.

use sha2::{Digest, Sha256};

use crate::api::conditions::{ConditionSet, ConditionType};
use crate::api::{
    Condition, EmrRayClusterStatus, MirrorReason, RayEndpoints, RayHeadSpec, RayWorkerGroup, Reason,
};
use crate::emr::model::format_quantity;
use crate::emr::redact::redact_endpoint;
use crate::emr::{ClusterState, RayCluster};
use crate::time::{Time, rfc3339_millis};

use super::diagnose::failing_summary;

/// Kubernetes object names are at most 253 characters; we stay within a DNS label (63) so the
/// name can also be used as a label value.
const MAX_NAME: usize = 63;

/// A valid, stable DNS-1123 name for a remote cluster ID. IDs that are already valid names are
/// used as they are (`ray-uiulpgow9xljimm1`); anything else is lower-cased and cleaned, and gets a
/// short hash of the exact ID appended. A remote server can still pick an ID equal to another
/// ID's name: `plan` never lets two IDs share one object.
pub fn mirror_name(cluster_id: &str) -> String {
    if is_dns_label(cluster_id) {
        return cluster_id.to_string();
    }
    let mut cleaned = String::with_capacity(cluster_id.len());
    for ch in cluster_id.chars() {
        let c = ch.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            cleaned.push(c);
        } else if !cleaned.ends_with('-') {
            cleaned.push('-');
        }
    }
    let hash = hex::encode(&Sha256::digest(cluster_id.as_bytes())[..5]);
    let keep = MAX_NAME - hash.len() - 1;
    let mut base: String = cleaned.trim_matches('-').chars().take(keep).collect();
    while base.ends_with('-') {
        base.pop();
    }
    if base.is_empty() {
        format!("ray-{hash}")
    } else {
        format!("{base}-{hash}")
    }
}

/// A label value for a cluster ID (the exact ID is kept in an annotation and in the spec).
pub fn label_value(value: &str) -> String {
    if value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
    {
        value.to_string()
    } else {
        mirror_name(value)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Most worker groups mirrored.
pub use crate::emr::model::MAX_WORKER_GROUPS;
pub use crate::emr::text::{MAX_SHORT, MAX_TEXT, MAX_URL, TRUNCATED};

/// `s` cut to at most `max` bytes (at a character boundary) with a visible marker, for text
/// the operator builds (Event notes) and endpoints after redaction (which may percent-encode
/// and so lengthen them). Every mirror stays far below the API server's object size limit (a
/// mirror is at most ≈ 64 × 9 × 512 + 2 × 4096 + … ≈ 310 KiB).
pub fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &s[..end])
}

/// The status fields that come from the remote cluster (everything but conditions). Its strings
/// were cleaned and capped as the listing was decoded (`emr::text`); only the worker groups
/// are capped here, and the endpoints, which are redacted here.
pub fn remote_status(c: &RayCluster) -> EmrRayClusterStatus {
    let head = c.head_spec.as_ref();
    let workers = c.worker_spec.as_deref().unwrap_or_default();
    let totals = c.desired_resources();
    let endpoints = RayEndpoints {
        grpc: c
            .grpc_endpoint
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| truncated(&redact_endpoint(s), MAX_URL)),
        dashboard: c
            .dashboard_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|s| truncated(&redact_endpoint(s), MAX_URL)),
    };
    EmrRayClusterStatus {
        conditions: Vec::new(),
        observed_generation: None,
        state: c.state.as_ref().map(ClusterState::to_string),
        display_name: c.name.clone(),
        description: c.description.clone(),
        release_version: c.display_release_version.clone(),
        network_service_name: c.network_service_name.clone(),
        endpoints: (endpoints != RayEndpoints::default()).then_some(endpoints),
        head_spec: head.map(|h| RayHeadSpec {
            queue_name: h.queue_name.clone(),
            cpu: h.cpu.clone(),
            memory: h.memory.clone(),
            replicas: h.replica,
            gpu_spec: h.gpu_spec.clone(),
            enable_auto_scaling: h.enable_auto_scaling,
            idle_timeout_seconds: h.idle_timeout_seconds,
        }),
        worker_groups: workers
            .iter()
            .take(MAX_WORKER_GROUPS)
            .map(|w| RayWorkerGroup {
                group_name: w.group_name.clone(),
                worker_type: w.worker_type.clone(),
                replicas: w.replica,
                min_replicas: w.min_replica,
                max_replicas: w.max_replica,
                queue_name: w.queue_name.clone(),
                cpu: w.cpu.clone(),
                memory: w.memory.clone(),
                gpu_spec: w.gpu_spec.clone(),
            })
            .collect(),
        desired_worker_replicas: totals.workers,
        desired_cpu: totals.cpu.map(format_quantity),
        desired_memory: totals
            .memory_gi
            .map(|m| format!("{}Gi", format_quantity(m))),
        creator: c.creator.clone(),
        creator_name: c.creator_name.clone(),
        modifier: c.modifier.clone(),
        modifier_name: c.modifier_name.clone(),
        user_id: c.user_id.clone(),
        instance_id: c.instance_id.clone(),
        modified: c.modified,
        message: c.message.clone(),
        create_time: c.create_time.and_then(rfc3339_millis),
        start_time: c.start_time.and_then(rfc3339_millis),
        modified_time: c.modified_time.and_then(rfc3339_millis),
        // Set by the plan, from `GetRayCluster` (`diagnose`).
        instances: Vec::new(),
        gone: false,
    }
}

/// Why the data in a mirror may be out of date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staleness {
    pub reason: Reason,
    pub message: String,
}

impl Staleness {
    /// A message that stays the same across retries of the same failure, so that a failing
    /// workspace does not rewrite its mirrors on every retry.
    pub fn from_failure(reason: Reason, code: Option<&str>, last_success: Option<&str>) -> Self {
        let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
        let since = last_success
            .map(|t| format!("status is from the last successful listing at {t}"))
            .unwrap_or_else(|| "status is from before the operator started".to_string());
        Staleness {
            reason,
            message: format!("listing the workspace failed: {reason}{code}; {since}"),
        }
    }

    /// A mirror missing from a listing that ended exactly on a page boundary.
    pub fn removal_unconfirmed() -> Self {
        Staleness {
            reason: Reason::RemovalUnconfirmed,
            message: "not in the last listing, which ended exactly on a page boundary and may \
                      have been cut short; kept until a listing that ends on a short page \
                      confirms the removal"
                .to_string(),
        }
    }
}

/// The kstatus conditions of a mirror: `Ready` (True only when Running), `Reconciling` (only
/// while Starting/Stopping), `Stalled` (only on Error, naming the failing instance when the
/// instances name one, else with the remote message), and `Synced` (False while the data may
/// be stale).
pub fn mirror_conditions(
    status: &EmrRayClusterStatus,
    previous: &[Condition],
    generation: Option<i64>,
    stale: Option<&Staleness>,
    now: Time,
) -> Vec<Condition> {
    let state = status.state.as_deref().map(ClusterState::from);
    let mut out = ConditionSet::new(previous, generation, now);
    if status.gone {
        out.set(
            ConditionType::Ready,
            false,
            MirrorReason::RemoteClusterGone,
            "the remote Ray cluster is no longer listed by its workspace".to_string(),
        );
    } else {
        match &state {
            Some(ClusterState::Running) => out.set(
                ConditionType::Ready,
                true,
                MirrorReason::Running,
                "Ray cluster is Running".to_string(),
            ),
            Some(ClusterState::Other(_)) | None => out.set(
                ConditionType::Ready,
                false,
                MirrorReason::UnknownState,
                format!(
                    "Ray cluster reports state {:?}",
                    status.state.as_deref().unwrap_or("Unknown")
                ),
            ),
            Some(s) => out.set(
                ConditionType::Ready,
                false,
                MirrorReason::of_state(Some(s)),
                format!("Ray cluster is {s}"),
            ),
        };
        // The failing instance, when `GetRayCluster` named one (`head: OOMKilled, exit 137`).
        let failing = failing_summary(&status.instances);
        if let Some(s @ (ClusterState::Starting | ClusterState::Stopping)) = &state {
            let msg = match &failing {
                Some(f) => format!("Ray cluster is {s}; {f}"),
                None => format!("Ray cluster is {s}"),
            };
            out.set(
                ConditionType::Reconciling,
                true,
                MirrorReason::of_state(Some(s)),
                msg,
            );
        }
        if let Some(ClusterState::Error) = &state {
            let msg = failing
                .or_else(|| status.message.clone().filter(|m| !m.is_empty()))
                .unwrap_or_else(|| "the remote cluster is in Error state".to_string());
            out.set(
                ConditionType::Stalled,
                true,
                MirrorReason::ClusterError,
                msg,
            );
        }
    }
    match stale {
        None => out.set(
            ConditionType::Synced,
            true,
            MirrorReason::ListingSucceeded,
            "status mirrors the last complete remote listing".to_string(),
        ),
        Some(s) => out.set(ConditionType::Synced, false, s.reason, s.message.clone()),
    };
    out.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConditionStatus;
    use crate::emr::model::ListRayClusterResponse;

    fn example() -> RayCluster {
        let page: ListRayClusterResponse =
            serde_json::from_str(include_str!("../../tests/data/reference-example.json")).unwrap();
        page.ray_clusters.unwrap().remove(0)
    }

    #[test]
    fn names_are_stable_valid_and_distinct() {
        assert_eq!(mirror_name("ray-uiulpgow9xljimm1"), "ray-uiulpgow9xljimm1");
        let a = mirror_name("Ray_Cluster.1");
        let b = mirror_name("ray-cluster-1-");
        assert_ne!(a, b);
        assert!(is_dns_label(&a), "{a}");
        assert!(is_dns_label(&b), "{b}");
        assert_eq!(a, mirror_name("Ray_Cluster.1"));
        let long = "x".repeat(300);
        assert!(is_dns_label(&mirror_name(&long)));
        assert!(is_dns_label(&mirror_name("___")));
        assert!(is_dns_label(&mirror_name("集群")));
    }

    #[test]
    fn reference_example_maps_every_field() {
        let s = remote_status(&example());
        assert_eq!(s.state.as_deref(), Some("Running"));
        assert_eq!(s.display_name.as_deref(), Some("testRayCluster"));
        assert_eq!(s.desired_worker_replicas, Some(2));
        // head 2 cpu + 2 workers * 2 cpu; 8Gi + 2 * 8Gi.
        assert_eq!(s.desired_cpu.as_deref(), Some("6"));
        assert_eq!(s.desired_memory.as_deref(), Some("24Gi"));
        assert_eq!(s.create_time.as_deref(), Some("2024-08-15T11:44:39Z"));
        let e = s.endpoints.unwrap();
        assert!(e.grpc.unwrap().starts_with("ray://"));
        assert_eq!(
            e.dashboard.as_deref(),
            Some("https://emr-spark-ray-gateway-cn-hangzhou.aliyuncs.com/")
        );
        assert_eq!(
            s.head_spec.unwrap().gpu_spec.as_deref(),
            Some("ecs.gn6i-c4g1.xlarge")
        );
        assert_eq!(s.worker_groups[0].max_replicas, Some(10));
        assert_eq!(s.creator_name.as_deref(), Some("Alice"));
        assert_eq!(
            s.instance_id.as_deref(),
            Some("ray-uiulpgow9xljimm1-xxxxxxx")
        );
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        // As decoded from a hostile page: the strings are capped by the decoding (`emr::text`),
        // the worker groups and the redacted endpoints here.
        let long = format!("\u{202E}{}", "é".repeat(1_000_000));
        let c: RayCluster = serde_json::from_value(serde_json::json!({
            "clusterId": "c",
            "name": long,
            "description": long,
            "dashboardUrl": format!("https://h/{long}"),
            "workerSpec": vec![serde_json::json!({"groupName": "x".repeat(600)}); 10_000],
        }))
        .unwrap();
        let s = remote_status(&c);
        assert!(s.display_name.as_ref().unwrap().len() <= MAX_SHORT);
        assert!(s.display_name.as_ref().unwrap().ends_with(TRUNCATED));
        assert!(s.display_name.as_ref().unwrap().starts_with('é'));
        assert!(s.description.as_ref().unwrap().len() <= MAX_TEXT);
        // Percent-encoded by the redaction (6 bytes per é), cut again.
        let dashboard = s.endpoints.as_ref().unwrap().dashboard.clone().unwrap();
        assert!(dashboard.len() <= MAX_URL && dashboard.ends_with(TRUNCATED));
        assert_eq!(s.worker_groups.len(), MAX_WORKER_GROUPS);
        assert!(s.worker_groups[0].group_name.as_ref().unwrap().len() <= MAX_SHORT);
        let size = serde_json::to_vec(&s).unwrap().len();
        assert!(size < 512 * 1024, "{size} bytes");
        assert_eq!(truncated("abc", 3), "abc");
    }

    #[test]
    fn missing_fields_are_tolerated() {
        let s = remote_status(&RayCluster {
            cluster_id: "c".into(),
            ..Default::default()
        });
        assert_eq!(s.state, None);
        assert_eq!(s.desired_cpu, None);
        let conds = mirror_conditions(&s, &[], Some(1), None, Time::test(0));
        assert_eq!(conds[0].reason, "UnknownState");
    }

    #[test]
    fn conditions_follow_state_and_keep_transition_times() {
        let mut s = remote_status(&example());
        let c1 = mirror_conditions(&s, &[], Some(1), None, Time::test(1));
        assert_eq!(c1[0].status, ConditionStatus::True);
        assert_eq!(c1.len(), 2);
        let c2 = mirror_conditions(&s, &c1, Some(1), None, Time::test(2));
        assert_eq!(c1, c2, "unchanged state keeps conditions byte-identical");
        s.state = Some("Error".into());
        s.message = Some("quota exceeded".into());
        let c3 = mirror_conditions(&s, &c2, Some(1), None, Time::test(3));
        let stalled = c3
            .iter()
            .find(|c| c.type_ == ConditionType::Stalled)
            .unwrap();
        assert_eq!(stalled.message, "quota exceeded");
        assert_eq!(c3[0].last_transition_time, Time::test(3));
        s.state = Some("Starting".into());
        let c4 = mirror_conditions(&s, &c3, Some(1), None, Time::test(4));
        assert!(crate::api::conditions::is_true(
            &c4,
            ConditionType::Reconciling
        ));
        assert!(!c4.iter().any(|c| c.type_ == ConditionType::Stalled));
    }
}
