//! Typed model of `ListWorkspaceQueues` (`GET /api/v1/workspaces/{workspaceId}/queues`), as the
//! official SDK `alibabacloud-emr-serverless-spark20230808` 2.3.0 names and types it
//! (`ListWorkspaceQueuesResponseBody{,Queues}`): the request takes `environment` and `regionId`;
//! the response has `queues[]`, `nextToken`, `maxResults`, `totalCount` and `requestId`.
//!
//! `minResource`, `maxResource` and `usedResource` are **strings** in the SDK; the product's
//! documentation shows them as JSON objects encoded in that string (`{"cpu": "2","memory":
//! "2Gi"}`). [`QueueResources::parse`] reads them robustly: each of `cpu`, `memory`, `gpu` may be a
//! string or a number; a value that is not a non-negative finite quantity is dropped (`None`),
//! a string that is not a JSON object gives no values at all. Nothing here panics on input.
//!
//! Every string is cleaned and capped as it is decoded ([`super::text`]); at most
//! [`MAX_ENVIRONMENTS`] environments are kept per queue.

use super::model::{parse_cpu, parse_memory_gi};
use super::text::{self, de};
use serde::{Deserialize, Deserializer, Serialize};

/// Action name of the queue listing.
pub const ACTION_LIST_WORKSPACE_QUEUES: &str = "ListWorkspaceQueues";
/// Environments kept per queue (the product knows `dev` and `production`).
pub const MAX_ENVIRONMENTS: usize = 8;
/// Longest `nextToken` accepted; a longer one fails the listing.
pub const MAX_NEXT_TOKEN: usize = 1024;

/// One page of `ListWorkspaceQueues`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListWorkspaceQueuesResponse {
    #[serde(
        default,
        alias = "RequestId",
        deserialize_with = "de::request_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
    /// `None` when the field is absent (a malformed page); `Some(vec![])` for an empty page.
    #[serde(default)]
    pub queues: Option<Vec<WorkspaceQueue>>,
    /// Kept exactly (it goes back to the server), or the page fails when it is longer than
    /// [`MAX_NEXT_TOKEN`]. Absent or empty: the last page.
    #[serde(
        default,
        deserialize_with = "next_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
}

/// One queue. The fields the operator uses come first; the rest are the SDK's, kept so that the
/// simulator answers the SDK's whole model (the operator ignores them).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceQueue {
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_name: Option<String>,
    /// E.g. `RUNNING`.
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_status: Option<String>,
    /// `instance` or `instanceChildren`.
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "environments",
        skip_serializing_if = "Option::is_none"
    )]
    pub environments: Option<Vec<String>>,
    /// JSON object in a string: see [`QueueResources::parse`].
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_resource: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_resource: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub used_resource: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub workspace_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub region_id: Option<String>,
    /// Epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub creator: Option<String>,
    /// `PayAsYouGo` or `Pre`.
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub payment_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_category: Option<String>,
    /// JSON in a string, e.g. `{"arch": "x86"}`.
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_scope: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub properties: Option<String>,
}

fn next_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(t) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if t.len() > MAX_NEXT_TOKEN {
        return Err(serde::de::Error::custom(format!(
            "nextToken is {} bytes, more than {MAX_NEXT_TOKEN}",
            t.len()
        )));
    }
    Ok((!t.is_empty()).then_some(t))
}

/// At most [`MAX_ENVIRONMENTS`] strings, each cleaned; other elements (numbers, objects) are
/// dropped.
fn environments<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let Some(v) = Option::<Vec<serde_json::Value>>::deserialize(d)? else {
        return Ok(None);
    };
    Ok(Some(
        v.iter()
            .filter_map(|e| e.as_str())
            .map(|s| text::clean(s, text::MAX_STATE))
            .filter(|s| !s.is_empty())
            .take(MAX_ENVIRONMENTS)
            .collect(),
    ))
}

/// A queue's `cpu` (cores), `memory` (GiB) and `gpu` (devices), each `None` when absent or not a
/// non-negative finite quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueResources {
    pub cpu: Option<f64>,
    pub memory_gi: Option<f64>,
    pub gpu: Option<f64>,
}

impl QueueResources {
    /// Reads `{"cpu": "2", "memory": "8Gi", "gpu": "0"}` (values strings or numbers; `cpu` may be
    /// `500m`, `memory` `512Mi`, `8Gi`, `8G` or a bare number of GiB). Anything else gives
    /// `None`s: the value is dropped, never guessed.
    pub fn parse(s: Option<&str>) -> QueueResources {
        let Some(obj) = s
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            })
        else {
            return QueueResources::default();
        };
        let field = |k: &str, parse: fn(&str) -> Option<f64>| -> Option<f64> {
            let v = match obj.get(k)? {
                serde_json::Value::String(s) => parse(s)?,
                serde_json::Value::Number(n) => n.as_f64()?,
                _ => return None,
            };
            (v.is_finite() && v >= 0.0).then_some(v)
        };
        QueueResources {
            cpu: field("cpu", parse_cpu),
            memory_gi: field("memory", parse_memory_gi),
            gpu: field("gpu", parse_cpu),
        }
    }

    /// The JSON-in-a-string form the API sends (used by the simulator).
    pub fn to_wire(&self) -> String {
        let mut m = serde_json::Map::new();
        let q = super::model::format_quantity;
        if let Some(v) = self.cpu {
            m.insert("cpu".into(), q(v).into());
        }
        if let Some(v) = self.memory_gi {
            m.insert("memory".into(), format!("{}Gi", q(v)).into());
        }
        if let Some(v) = self.gpu {
            m.insert("gpu".into(), q(v).into());
        }
        serde_json::Value::Object(m).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_example() {
        let page: ListWorkspaceQueuesResponse = serde_json::from_str(
            r#"{"requestId":"R1","totalCount":1,"maxResults":20,"nextToken":"",
                "queues":[{"queueName":"dev_queue","queueStatus":"RUNNING","queueType":"instance",
                "environments":["dev", 3, "production\u202e"],"workspaceId":"w-1234abcd",
                "maxResource":"{\"cpu\": \"2\",\"memory\": \"2Gi\"}",
                "minResource":"{\"cpu\": \"2\",\"memory\": \"2Gi\"}",
                "usedResource":"{\"cpu\": 1.5,\"memory\": \"512Mi\",\"gpu\":\"1\"}",
                "allowActions":[{"actionArn":"x"}],"createTime":1723722279800}]}"#,
        )
        .unwrap();
        assert_eq!(page.next_token, None);
        assert_eq!(page.total_count, Some(1));
        let q = &page.queues.unwrap()[0];
        assert_eq!(q.queue_name.as_deref(), Some("dev_queue"));
        assert_eq!(
            q.environments.as_deref(),
            Some(&["dev".to_string(), "production".to_string()][..])
        );
        assert_eq!(
            QueueResources::parse(q.max_resource.as_deref()),
            QueueResources {
                cpu: Some(2.0),
                memory_gi: Some(2.0),
                gpu: None
            }
        );
        assert_eq!(
            QueueResources::parse(q.used_resource.as_deref()),
            QueueResources {
                cpu: Some(1.5),
                memory_gi: Some(0.5),
                gpu: Some(1.0)
            }
        );
    }

    #[test]
    fn hostile_quantities_are_dropped() {
        for s in [
            "",
            "2",
            "[1,2]",
            "{",
            "null",
            r#"{"cpu":"-1","memory":"1e400Gi","gpu":{"a":1}}"#,
            r#"{"cpu":"NaN","memory":"Infinity","gpu":"1e999"}"#,
            r#"{"cpu":-3,"memory":true,"gpu":null}"#,
        ] {
            assert_eq!(
                QueueResources::parse(Some(s)),
                QueueResources::default(),
                "{s:?}"
            );
        }
        assert_eq!(QueueResources::parse(None), QueueResources::default());
        let huge = format!(r#"{{"cpu":"{}"}}"#, "9".repeat(400));
        assert_eq!(QueueResources::parse(Some(&huge)).cpu, None);
    }

    #[test]
    fn long_tokens_fail_the_page_and_environments_are_capped() {
        let long = format!(r#"{{"queues":[],"nextToken":"{}"}}"#, "a".repeat(2000));
        assert!(serde_json::from_str::<ListWorkspaceQueuesResponse>(&long).is_err());
        let many = format!(
            r#"{{"queues":[{{"environments":[{}]}}]}}"#,
            vec!["\"e\""; 100].join(",")
        );
        let page: ListWorkspaceQueuesResponse = serde_json::from_str(&many).unwrap();
        assert_eq!(
            page.queues.unwrap()[0].environments.as_ref().unwrap().len(),
            MAX_ENVIRONMENTS
        );
    }

    #[test]
    fn wire_round_trip() {
        let r = QueueResources {
            cpu: Some(16.0),
            memory_gi: Some(64.0),
            gpu: Some(0.0),
        };
        assert_eq!(QueueResources::parse(Some(&r.to_wire())), r);
    }
}
