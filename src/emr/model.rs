//! Typed model of the `ListRayCluster` response (see `shared/reference/list-ray-cluster.md`).
//!
//! Every field is optional on the wire: a missing optional field never fails a listing, unknown
//! extra fields are ignored, and an unknown `state` value is kept as-is.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One page of `ListRayCluster`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListRayClusterResponse {
    #[serde(default, alias = "RequestId")]
    pub request_id: Option<String>,
    /// `None` when the field is absent (a malformed page); `Some(vec![])` for an empty page.
    #[serde(default)]
    pub ray_clusters: Option<Vec<RayCluster>>,
}

/// A remote Ray cluster, exactly as the reference names its fields.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RayCluster {
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_release_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modifier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Carries an access token in its query: never copy it anywhere unredacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_spec: Option<HeadSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_spec: Option<Vec<WorkerSpec>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeadSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_scaling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica: Option<i64>,
}

/// The remote state. Values outside the reference are kept verbatim in `Other`.
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
}

impl From<&str> for ClusterState {
    fn from(s: &str) -> Self {
        match s {
            "Starting" => ClusterState::Starting,
            "Running" => ClusterState::Running,
            "Stopping" => ClusterState::Stopping,
            "Stopped" => ClusterState::Stopped,
            "Error" => ClusterState::Error,
            other => ClusterState::Other(other.to_string()),
        }
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
    fn unknown_state_and_fields_are_tolerated() {
        let page: ListRayClusterResponse = serde_json::from_str(
            r#"{"requestId":"r","rayClusters":[{"clusterId":"c","state":"Hibernating","newField":1}]}"#,
        )
        .unwrap();
        let c = &page.ray_clusters.unwrap()[0];
        assert_eq!(c.state, Some(ClusterState::Other("Hibernating".into())));
        assert_eq!(c.name, None);
    }
}
