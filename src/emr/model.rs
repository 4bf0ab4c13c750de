//! Typed model of the `ListRayCluster` response (see `shared/reference/list-ray-cluster.md`).
//!
//! Every field is optional on the wire: a missing optional field never fails a listing, unknown
//! extra fields are ignored, and an unknown `state` value is kept (cleaned and capped).
//!
//! Every string is cleaned and capped here, as it is decoded ([`super::text`]): whatever uses a
//! decoded [`RayCluster`] (status, Events, logs, metrics, error messages) only ever sees bounded
//! text without control, bidirectional or invisible characters. A `clusterId` that is not an EMR
//! cluster ID ([`super::text::is_cluster_id`]) fails the page instead: it is never altered.

use super::text::{self, de};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One page of `ListRayCluster`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListRayClusterResponse {
    #[serde(default, alias = "RequestId", deserialize_with = "de::request_id")]
    pub request_id: Option<String>,
    /// `None` when the field is absent (a malformed page); `Some(vec![])` for an empty page.
    #[serde(default)]
    pub ray_clusters: Option<Vec<RayCluster>>,
}

/// A remote Ray cluster, exactly as the reference names its fields.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RayCluster {
    /// Empty when the page has none (the listing fails); otherwise [`text::is_cluster_id`].
    #[serde(default, deserialize_with = "de::cluster_id")]
    pub cluster_id: String,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_release_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ClusterState>,
    /// Epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub creator: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub creator_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub modifier: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub modifier_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_id: Option<String>,
    /// Carries an access token in its query: never copy it anywhere unredacted.
    #[serde(
        default,
        deserialize_with = "de::url",
        skip_serializing_if = "Option::is_none"
    )]
    pub dashboard_url: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::url",
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<bool>,
    #[serde(
        default,
        deserialize_with = "de::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_spec: Option<HeadSpec>,
    /// At most [`MAX_WORKER_GROUPS`]: the rest are skipped as they are read (a page of `{},`
    /// would otherwise decode to hundreds of bytes per three it sent).
    #[serde(
        default,
        deserialize_with = "worker_groups",
        skip_serializing_if = "Option::is_none"
    )]
    pub worker_spec: Option<Vec<WorkerSpec>>,
}

/// Most worker groups kept of a cluster (the mirror shows them all, the totals add them up).
pub const MAX_WORKER_GROUPS: usize = 64;

/// `workerSpec`, keeping the first [`MAX_WORKER_GROUPS`] and skipping the rest unbuilt.
fn worker_groups<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<WorkerSpec>>, D::Error> {
    capped(d, MAX_WORKER_GROUPS)
}

/// A list, keeping its first `max` elements and skipping the rest unbuilt (a body of `{},`
/// would otherwise decode to hundreds of bytes per three it sent).
fn capped<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
) -> Result<Option<Vec<T>>, D::Error> {
    struct Capped<T> {
        max: usize,
        of: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Capped<T> {
        type Value = Option<Vec<T>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = Vec::new();
            while kept.len() < self.max {
                match seq.next_element::<T>()? {
                    Some(w) => kept.push(w),
                    None => return Ok(Some(kept)),
                }
            }
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Some(kept))
        }
    }
    d.deserialize_option(Capped {
        max,
        of: std::marker::PhantomData,
    })
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeadSpec {
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_scaling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub worker_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica: Option<i64>,
}

/// `GetRayCluster` (`GET /api/v1/workspaces/{workspaceId}/rayCluster/{clusterId}`, as the official
/// SDK `alibabacloud-emr-serverless-spark20230808` 2.3.0 gives it: a flat body, no `data`
/// wrapper), reduced to what the operator keeps.
///
/// **Only these fields are ever decoded.** The body also carries secrets — `submitToken`,
/// `headSpec.gftConfig.{redisPassword,redisUsername,redisUrl}`, the head and worker `env`,
/// `rayStartParams`, `extraParam`, and the tokens in `jobUrl`, `jobUrlInner` and
/// `dashboardUrl` — which no struct here names, so serde skips them without building a string
/// (the rest of the cluster the listing already gives).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetRayClusterResponse {
    #[serde(default, alias = "RequestId", deserialize_with = "de::request_id")]
    pub request_id: Option<String>,
    /// Empty when the body has none; otherwise [`text::is_cluster_id`] (or the body fails).
    #[serde(default, deserialize_with = "de::cluster_id")]
    pub cluster_id: String,
    #[serde(default)]
    pub state: Option<ClusterState>,
    /// At most [`MAX_INSTANCES`]: the rest are skipped unbuilt.
    #[serde(default, deserialize_with = "instances")]
    pub instances: Option<Vec<RayInstance>>,
}

/// Most instances (pods) kept of a cluster: enough to name the failing ones, bounded whatever
/// the size of the cluster.
pub const MAX_INSTANCES: usize = 32;
/// Longest instance message kept, in bytes (two per instance, [`MAX_INSTANCES`] instances).
pub const MAX_INSTANCE_MESSAGE: usize = 1024;

fn instances<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<RayInstance>>, D::Error> {
    capped(d, MAX_INSTANCES)
}

/// One node (pod) of a Ray cluster, as `GetRayCluster`'s `instances[]` gives it; every string
/// cleaned and capped, the exit code a bounded integer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RayInstance {
    /// The node type (head or worker).
    #[serde(default, rename = "type", deserialize_with = "de::short")]
    pub instance_type: Option<String>,
    #[serde(default, deserialize_with = "de::short")]
    pub instance_id: Option<String>,
    /// The pod phase.
    #[serde(default, deserialize_with = "de::short")]
    pub phase: Option<String>,
    #[serde(default, deserialize_with = "de::short")]
    pub reason: Option<String>,
    #[serde(default, deserialize_with = "instance_message")]
    pub message: Option<String>,
    /// The main container's state.
    #[serde(default, deserialize_with = "de::short")]
    pub container_state: Option<String>,
    #[serde(default, deserialize_with = "de::short")]
    pub container_state_reason: Option<String>,
    #[serde(default, deserialize_with = "instance_message")]
    pub container_state_message: Option<String>,
    /// In `i32` (a Kubernetes exit code); anything else is dropped, never fails the body.
    #[serde(default, deserialize_with = "exit_code")]
    pub container_exit_code: Option<i32>,
    /// Epoch milliseconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub create_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub start_time: Option<i64>,
}

fn instance_message<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| text::clean(&s, MAX_INSTANCE_MESSAGE)))
}

/// A number that fits `i64` (floats with no fraction too); `None` for anything else (a string,
/// a huge or fractional number, an object: skipped, not built).
fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Lenient;
    impl<'de> serde::de::Visitor<'de> for Lenient {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v).ok())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok((v.fract() == 0.0 && v.abs() < 9e15).then_some(v as i64))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_option(Lenient)
}

fn exit_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    Ok(lenient_i64(d)?.and_then(|v| i32::try_from(v).ok()))
}

/// The remote state. Values outside the reference are kept in `Other`, cleaned and capped at
/// [`text::MAX_STATE`] bytes; as a metric label they are all `Other` ([`ClusterState::label`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClusterState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Error,
    Other(String),
}

impl ClusterState {
    pub fn as_str(&self) -> &str {
        match self {
            ClusterState::Starting => "Starting",
            ClusterState::Running => "Running",
            ClusterState::Stopping => "Stopping",
            ClusterState::Stopped => "Stopped",
            ClusterState::Error => "Error",
            ClusterState::Other(s) => s,
        }
    }

    /// The five states the reference documents.
    pub const KNOWN: [&'static str; 5] = ["Starting", "Running", "Stopping", "Stopped", "Error"];

    /// The label of a state in metrics: one of [`Self::LABELS`], so that a remote server cannot
    /// grow the label set (`Other` for every state outside the reference, `Unknown` for none).
    pub fn label(state: Option<&ClusterState>) -> &'static str {
        match state {
            None => "Unknown",
            Some(ClusterState::Other(_)) => "Other",
            Some(ClusterState::Starting) => "Starting",
            Some(ClusterState::Running) => "Running",
            Some(ClusterState::Stopping) => "Stopping",
            Some(ClusterState::Stopped) => "Stopped",
            Some(ClusterState::Error) => "Error",
        }
    }

    /// Every value [`Self::label`] gives.
    pub const LABELS: [&'static str; 7] = [
        "Starting", "Running", "Stopping", "Stopped", "Error", "Other", "Unknown",
    ];
}

impl ClusterState {
    fn known(s: &str) -> Option<Self> {
        Some(match s {
            "Starting" => ClusterState::Starting,
            "Running" => ClusterState::Running,
            "Stopping" => ClusterState::Stopping,
            "Stopped" => ClusterState::Stopped,
            "Error" => ClusterState::Error,
            _ => return None,
        })
    }
}

/// A state as decoded: cleaned first ([`text::clean`], so that what is shown and what is
/// matched are the same text: ` Running\u{200B}` is `Running`), then one of the documented
/// five or `Other`.
impl From<&str> for ClusterState {
    fn from(s: &str) -> Self {
        if let Some(known) = ClusterState::known(s) {
            return known;
        }
        let cleaned = text::clean(s, text::MAX_STATE);
        ClusterState::known(&cleaned).unwrap_or(ClusterState::Other(cleaned))
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ClusterState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ClusterState::from(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_is_cleaned_and_capped_as_it_is_decoded() {
        let huge = format!("a\u{202E}\u{200B}\n{}", "é".repeat(1 << 20));
        let page = serde_json::json!({
            "requestId": huge, "rayClusters": [{
                "clusterId": "ray-abc", "name": huge, "description": huge, "message": huge,
                "state": huge, "dashboardUrl": huge, "creatorName": "\u{202E}evil\u{7}",
                "headSpec": {"queueName": huge, "cpu": " 2\u{200B} "},
                "workerSpec": [{"groupName": huge, "memory": huge}],
            }]
        });
        let page: ListRayClusterResponse = serde_json::from_value(page).unwrap();
        let id = page.request_id.unwrap();
        assert!(id.starts_with("a é") && id.chars().count() <= text::MAX_CODE_CHARS + 1);
        let c = &page.ray_clusters.unwrap()[0];
        let cap = |s: &Option<String>, max: usize| {
            let s = s.as_deref().unwrap();
            assert!(
                s.len() <= max && s.ends_with(text::TRUNCATED),
                "{}",
                s.len()
            );
            assert!(s.starts_with("a é"), "{}", &s[..10]);
        };
        cap(&c.name, text::MAX_SHORT);
        cap(&c.description, text::MAX_TEXT);
        cap(&c.message, text::MAX_TEXT);
        cap(&c.dashboard_url, text::MAX_URL);
        let head = c.head_spec.as_ref().unwrap();
        cap(&head.queue_name, text::MAX_SHORT);
        assert_eq!(head.cpu.as_deref(), Some("2"));
        cap(
            &c.worker_spec.as_ref().unwrap()[0].group_name,
            text::MAX_SHORT,
        );
        cap(&c.worker_spec.as_ref().unwrap()[0].memory, text::MAX_SHORT);
        assert_eq!(c.creator_name.as_deref(), Some("evil"));
        let ClusterState::Other(state) = c.state.clone().unwrap() else {
            panic!("{:?}", c.state)
        };
        assert!(state.len() <= text::MAX_STATE && state.ends_with(text::TRUNCATED));
        assert_eq!(ClusterState::label(c.state.as_ref()), "Other");
        // Decoded again (serialized and read back), nothing changes.
        let again: RayCluster = serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
        assert_eq!(&again, c);
    }

    #[test]
    fn a_cluster_id_that_is_not_one_fails_the_page_with_a_short_quote() {
        let id = format!("ray-\u{202E}{}", "x".repeat(1 << 20));
        let body = serde_json::json!({"rayClusters": [{"clusterId": id}]}).to_string();
        let e = serde_json::from_str::<ListRayClusterResponse>(&body).unwrap_err();
        let m = text::decode_error(&e);
        assert!(
            m.contains("is not an EMR cluster ID") && m.len() < 400,
            "{m}"
        );
        assert!(!m.contains('\u{202E}'), "{m}");
        let ok: ListRayClusterResponse =
            serde_json::from_str(r#"{"rayClusters":[{"name":"no id"}]}"#).unwrap();
        assert_eq!(ok.ray_clusters.unwrap()[0].cluster_id, "");
    }

    #[test]
    fn worker_groups_past_the_cap_are_skipped_unbuilt() {
        let groups = vec!["{}"; MAX_WORKER_GROUPS * 100].join(",");
        let json = format!(r#"{{"clusterId":"c","workerSpec":[{groups}],"name":"after"}}"#);
        let c: RayCluster = serde_json::from_str(&json).unwrap();
        assert_eq!(c.worker_spec.unwrap().len(), MAX_WORKER_GROUPS);
        assert_eq!(
            c.name.as_deref(),
            Some("after"),
            "the rest of the object is read"
        );
        let c: RayCluster = serde_json::from_str(r#"{"clusterId":"c","workerSpec":null}"#).unwrap();
        assert_eq!(c.worker_spec, None);
        let c: RayCluster =
            serde_json::from_str(r#"{"clusterId":"c","workerSpec":[{"replica":2}]}"#).unwrap();
        assert_eq!(c.worker_spec.unwrap()[0].replica, Some(2));
    }

    #[test]
    fn get_ray_cluster_keeps_capped_instances_and_never_a_secret() {
        let huge = format!("x\u{202E}{}", "m".repeat(1 << 16));
        let instance = serde_json::json!({
            "type": "head", "phase": "Failed", "reason": huge, "message": huge,
            "containerState": "Terminated", "containerStateReason": "OOMKilled",
            "containerStateMessage": huge, "containerExitCode": 137,
            "createTime": 1723722279800i64, "startTime": "soon", "instanceId": "ray-1-head",
        });
        let mut many = vec![instance.clone(); MAX_INSTANCES * 10];
        many[1]["containerExitCode"] = serde_json::json!(1e300);
        many[2]["containerExitCode"] = serde_json::json!(-(1i64 << 40));
        many[3]["containerExitCode"] = serde_json::json!("137");
        many[4]["containerExitCode"] = serde_json::json!({"nested": [1, 2]});
        let body = serde_json::json!({
            "requestId": "R", "clusterId": "ray-1", "state": "Error", "instances": many,
            "submitToken": "SECRET", "jobUrl": "https://x?token=SECRET", "extraParam": "SECRET",
            "headSpec": {"env": "SECRET", "rayStartParams": "SECRET",
                         "gftConfig": {"redisPassword": "SECRET"}},
            "workerSpec": [{"env": "SECRET"}], "dashboardUrl": "https://d?token=SECRET",
        });
        let r: GetRayClusterResponse = serde_json::from_value(body).unwrap();
        assert_eq!(r.cluster_id, "ray-1");
        assert_eq!(r.state, Some(ClusterState::Error));
        let list = r.instances.clone().unwrap();
        assert_eq!(list.len(), MAX_INSTANCES);
        let first = &list[0];
        assert_eq!(first.instance_type.as_deref(), Some("head"));
        assert_eq!(first.container_state_reason.as_deref(), Some("OOMKilled"));
        assert_eq!(first.container_exit_code, Some(137));
        assert_eq!(first.create_time, Some(1723722279800));
        assert_eq!(first.start_time, None, "a string is not a time");
        assert!(first.reason.as_ref().unwrap().len() <= text::MAX_SHORT);
        for m in [&first.message, &first.container_state_message] {
            let m = m.as_deref().unwrap();
            assert!(m.len() <= MAX_INSTANCE_MESSAGE && m.ends_with(text::TRUNCATED));
            assert!(!m.contains('\u{202E}'));
        }
        for bad in &list[1..5] {
            assert_eq!(bad.container_exit_code, None, "{bad:?}");
        }
        assert!(!format!("{r:?}").contains("SECRET"));
        let r: GetRayClusterResponse = serde_json::from_str(r#"{"instances":null}"#).unwrap();
        assert_eq!(r.instances, None);
    }

    #[test]
    fn unknown_state_and_fields_are_tolerated() {
        let page: ListRayClusterResponse = serde_json::from_str(
            r#"{"requestId":"r","rayClusters":[{"clusterId":"c","state":"Hibernating","newField":1}]}"#,
        )
        .unwrap();
        let c = &page.ray_clusters.unwrap()[0];
        assert_eq!(c.state, Some(ClusterState::Other("Hibernating".into())));
        assert_eq!(
            ClusterState::from(" Run\u{200B}ning\n"),
            ClusterState::Running
        );
        assert_eq!(
            ClusterState::from("Hi\u{202E}ber\tnating"),
            ClusterState::Other("Hiber nating".into())
        );
        assert_eq!(c.name, None);
    }
}

/// What a cluster asks for at its desired replicas: the one place that sums them (the mirrors'
/// `desiredWorkerReplicas`/`desiredCPU`/`desiredMemory` and the `list` command's columns).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DesiredResources {
    /// Sum of the worker groups' `replica` (`None` without `workerSpec`).
    pub workers: Option<i64>,
    /// CPU cores of head and workers (`None` when a value is missing or unparsable).
    pub cpu: Option<f64>,
    /// Memory in GiB of head and workers (`None` when a value is missing or unparsable).
    pub memory_gi: Option<f64>,
}

impl RayCluster {
    /// Totals over the head (1 replica unless stated) and the worker groups (0 unless stated).
    /// Remote numbers are untrusted: sums saturate, negative replicas count as 0.
    pub fn desired_resources(&self) -> DesiredResources {
        let workers = self.worker_spec.as_deref().unwrap_or_default();
        let mut cpu = Some(0.0);
        let mut mem = Some(0.0);
        let mut add = |c: Option<&str>, m: Option<&str>, replicas: i64| {
            let r = replicas.max(0) as f64;
            cpu = cpu.zip(c.and_then(parse_cpu)).map(|(t, v)| t + v * r);
            mem = mem.zip(m.and_then(parse_memory_gi)).map(|(t, v)| t + v * r);
        };
        if let Some(h) = &self.head_spec {
            add(
                h.cpu.as_deref(),
                h.memory.as_deref(),
                h.replica.unwrap_or(1),
            );
        }
        for w in workers {
            add(
                w.cpu.as_deref(),
                w.memory.as_deref(),
                w.replica.unwrap_or(0),
            );
        }
        let has_resources = self.head_spec.is_some() || !workers.is_empty();
        let finite = |v: f64| v.is_finite().then_some(v);
        DesiredResources {
            workers: self.worker_spec.as_ref().map(|ws| {
                ws.iter()
                    .filter_map(|w| w.replica)
                    .fold(0i64, |a, r| a.saturating_add(r.max(0)))
            }),
            cpu: cpu.filter(|_| has_resources).and_then(finite),
            memory_gi: mem.filter(|_| has_resources).and_then(finite),
        }
    }
}

/// CPU cores as a number (`2`, `0.5`, `500m`).
pub fn parse_cpu(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('m') {
        Some(m) => m.trim().parse::<f64>().ok()? / 1000.0,
        None => s.parse::<f64>().ok()?,
    };
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Memory in GiB (`8Gi`, `8`, `512Mi`, `1Ti`, `8G`; the reference's unit is Gi).
pub fn parse_memory_gi(s: &str) -> Option<f64> {
    let s = s.trim();
    let units = [
        ("Ki", 1.0 / (1024.0 * 1024.0)),
        ("Mi", 1.0 / 1024.0),
        ("Gi", 1.0),
        ("Ti", 1024.0),
        ("G", 1.0),
        ("M", 1.0 / 1024.0),
    ];
    let (n, factor) = units
        .iter()
        .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((s, 1.0));
    let v = n.trim().parse::<f64>().ok()? * factor;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A number as people write it: `4`, `1.5`, `0.125` (at most three decimals).
pub fn format_quantity(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && v.abs() < 9e15 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod resource_tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_cpu("-1"), None);
        assert_eq!(parse_memory_gi("512Mi"), Some(0.5));
        assert_eq!(parse_memory_gi("8Gi"), Some(8.0));
        assert_eq!(parse_memory_gi("1e400"), None);
        assert_eq!(format_quantity(1.5), "1.5");
        assert_eq!(format_quantity(4.0), "4");
    }

    #[test]
    fn totals_default_head_to_one_and_workers_to_zero() {
        let c = RayCluster {
            head_spec: Some(HeadSpec {
                cpu: Some("2".into()),
                memory: Some("8Gi".into()),
                ..Default::default()
            }),
            worker_spec: Some(vec![
                WorkerSpec {
                    cpu: Some("500m".into()),
                    memory: Some("512Mi".into()),
                    replica: Some(2),
                    ..Default::default()
                },
                WorkerSpec {
                    cpu: Some("4".into()),
                    memory: Some("4Gi".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let r = c.desired_resources();
        assert_eq!(r.workers, Some(2));
        assert_eq!(r.cpu, Some(3.0));
        assert_eq!(r.memory_gi, Some(9.0));
        let hostile = RayCluster {
            worker_spec: Some(vec![
                WorkerSpec {
                    replica: Some(i64::MAX),
                    ..Default::default()
                },
                WorkerSpec {
                    replica: Some(i64::MAX),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        assert_eq!(hostile.desired_resources().workers, Some(i64::MAX));
        assert_eq!(
            RayCluster::default().desired_resources(),
            DesiredResources::default()
        );
    }
}
