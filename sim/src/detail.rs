//! What `GetRayCluster` adds to a listed cluster in the simulator: its instances and the
//! secret-bearing fields the official SDK's `GetRayClusterResponseBody` has (field names and
//! types from `alibabacloud_emr_serverless_spark20230808` 2.3.0, `models/
//! _get_ray_cluster_response_body.py`). Set per cluster with the admin API
//! (`PUT /admin/workspaces/{ws}/clusters/{id}/detail`); strings are sent exactly as set, so
//! tests can seed hostile or secret values.

use emr_ray_operator::emr::model::RayCluster;
use serde::{Deserialize, Serialize};

/// Everything `GetRayCluster` answers beyond the listed cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterDetail {
    pub instances: Vec<Instance>,
    /// Secret: the token for submitting Ray jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submit_token: Option<String>,
    /// Carries a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_url: Option<String>,
    /// Carries a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_url_inner: Option<String>,
    /// Secret: additional parameters (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_ids: Option<Vec<String>>,
    /// Replaces the listed cluster's `dashboardUrl` (which carries a token) when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// Added to `headSpec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_spec: Option<HeadDetail>,
    /// Added to every `workerSpec[]` group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_spec: Option<GroupDetail>,
}

/// `instances[]` (`GetRayClusterResponseBodyInstances`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Instance {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state_message: Option<String>,
    /// Any JSON, so that tests can send a hostile value (the SDK's type is `int`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_exit_code: Option<serde_json::Value>,
    /// Epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
}

/// The head's secret-bearing fields (`GetRayClusterResponseBodyHeadSpec`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct HeadDetail {
    #[serde(flatten)]
    pub group: GroupDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gft_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gft_config: Option<GftConfig>,
}

/// `env`, `rayStartParams` and `displayReleaseVersion` of a head or worker group.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct GroupDetail {
    /// Secret: environment variables (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Secret: Ray start parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ray_start_params: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_release_version: Option<String>,
}

/// `GetRayClusterResponseBodyHeadSpecGftConfig`: GCS fault tolerance's Redis.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct GftConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<String>,
}

/// The `GetRayCluster` body: the listed cluster's fields, then the detail's, and `requestId`.
pub fn body(cluster: &RayCluster, detail: Option<&ClusterDetail>, request_id: &str) -> Vec<u8> {
    let mut v = serde_json::to_value(cluster).unwrap_or_default();
    let default = ClusterDetail::default();
    let d = detail.unwrap_or(&default);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("requestId".into(), request_id.into());
        obj.insert(
            "instances".into(),
            serde_json::to_value(&d.instances).unwrap_or_default(),
        );
        let top = serde_json::to_value(ClusterDetail {
            instances: Vec::new(),
            head_spec: None,
            worker_spec: None,
            ..d.clone()
        })
        .unwrap_or_default();
        if let Some(top) = top.as_object() {
            for (k, val) in top {
                if k != "instances" {
                    obj.insert(k.clone(), val.clone());
                }
            }
        }
        if let (Some(head), Some(spec)) = (
            &d.head_spec,
            obj.get_mut("headSpec").and_then(|h| h.as_object_mut()),
        ) {
            merge(spec, head);
        }
        if let (Some(group), Some(groups)) = (
            &d.worker_spec,
            obj.get_mut("workerSpec").and_then(|w| w.as_array_mut()),
        ) {
            for g in groups.iter_mut().filter_map(|g| g.as_object_mut()) {
                merge(g, group);
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn merge(into: &mut serde_json::Map<String, serde_json::Value>, from: &impl Serialize) {
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(from) {
        into.extend(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_sdks_field_names() {
        let cluster: RayCluster = serde_json::from_value(serde_json::json!({
            "clusterId": "ray-1", "state": "Error",
            "headSpec": {"cpu": "2"}, "workerSpec": [{"groupName": "g1"}, {"groupName": "g2"}],
        }))
        .unwrap();
        let detail: ClusterDetail = serde_json::from_value(serde_json::json!({
            "instances": [{"type": "head", "containerExitCode": 137, "containerStateReason": "OOMKilled"}],
            "submitToken": "t", "jobUrl": "j", "jobUrlInner": "ji", "extraParam": "e",
            "dashboardUrl": "https://d?token=x",
            "headSpec": {"env": "he", "rayStartParams": "hr", "gftEnabled": true,
                         "gftConfig": {"redisPassword": "p", "redisUrl": "u", "redisUsername": "n"}},
            "workerSpec": {"env": "we", "rayStartParams": "wr"},
        }))
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&body(&cluster, Some(&detail), "R")).unwrap();
        assert_eq!(v["requestId"], "R");
        assert_eq!(v["clusterId"], "ray-1");
        assert_eq!(v["instances"][0]["type"], "head");
        assert_eq!(v["instances"][0]["containerExitCode"], 137);
        assert_eq!(v["submitToken"], "t");
        assert_eq!(v["jobUrlInner"], "ji");
        assert_eq!(v["dashboardUrl"], "https://d?token=x");
        assert_eq!(v["headSpec"]["cpu"], "2");
        assert_eq!(v["headSpec"]["env"], "he");
        assert_eq!(v["headSpec"]["gftConfig"]["redisPassword"], "p");
        assert_eq!(v["workerSpec"][1]["groupName"], "g2");
        assert_eq!(v["workerSpec"][1]["rayStartParams"], "wr");
        let v: serde_json::Value = serde_json::from_slice(&body(&cluster, None, "R")).unwrap();
        assert_eq!(v["instances"], serde_json::json!([]));
    }
}
