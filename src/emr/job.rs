//! Typed model of `ListRayJob` (`GET /api/v1/workspaces/{workspaceId}/rayJob`), field for
//! field as the official SDK (`alibabacloud-emr-serverless-spark20230808` 2.3.0,
//! `ListRayJobResponseBodyRayJobs`) names and types them: times are epoch milliseconds,
//! `duration` whole seconds, `cuHours` a float.
//!
//! Like [`super::model`], every string is cleaned and capped as it is decoded
//! ([`super::text`]); a `submissionId` that is not one fails the page (it names a mirror and
//! is never altered). The request's `submitTime` filter is the SDK's "shrunk" JSON object
//! `{"startTime":ms,"endTime":ms}` sent as one query string ([`SubmitWindow::shrunk`]).

use super::text::de;
use serde::{Deserialize, Serialize};

/// Action name of the job listing.
pub const ACTION_LIST_RAY_JOB: &str = "ListRayJob";

/// One page of `ListRayJob`. Unlike `ListRayCluster`, it carries `totalCount`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListRayJobResponse {
    #[serde(default, alias = "RequestId", deserialize_with = "de::request_id")]
    pub request_id: Option<String>,
    /// `None` when the field is absent (a malformed page); `Some(vec![])` for an empty page.
    #[serde(default)]
    pub ray_jobs: Option<Vec<RayJob>>,
    /// Jobs matching the filters, over all pages (a hint: the listing cross-checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
}

/// A remote Ray job, as the SDK's `ListRayJobResponseBodyRayJobs` names its fields.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RayJob {
    /// Empty when the page has none (the listing fails); otherwise [`super::text::is_cluster_id`]
    /// (the same shape rules: visible, no quote or backslash, at most 128 bytes).
    #[serde(default, deserialize_with = "submission_id")]
    pub submission_id: String,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// `Submitted`, `Pending`, `Running`, `Succeeded`, `Failed`, `Cancelling`, `Cancelled`,
    /// `Timeout` (others kept, cleaned and capped).
    #[serde(
        default,
        deserialize_with = "de::state",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    /// State of the job's Ray cluster: `Deleted`, `Submitted`, `Pending`, `Running`.
    #[serde(
        default,
        deserialize_with = "de::state",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_state: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_queue: Option<String>,
    /// Epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cu_hours: Option<f64>,
    #[serde(
        default,
        deserialize_with = "de::short",
        skip_serializing_if = "Option::is_none"
    )]
    pub creator_name: Option<String>,
    /// Carries an access token in its query: never copy it anywhere unredacted.
    #[serde(
        default,
        deserialize_with = "de::url",
        skip_serializing_if = "Option::is_none"
    )]
    pub dashboard_url: Option<String>,
}

/// The job states the SDK documents (a job mirror's `status.state` and condition reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Submitted,
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelling,
    Cancelled,
    Timeout,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Submitted,
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelling,
        JobState::Cancelled,
        JobState::Timeout,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "Submitted",
            JobState::Pending => "Pending",
            JobState::Running => "Running",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
            JobState::Cancelling => "Cancelling",
            JobState::Cancelled => "Cancelled",
            JobState::Timeout => "Timeout",
        }
    }

    /// One of the documented states, by its exact name.
    pub fn parse(s: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl crate::api::reason::AsReason for JobState {
    fn as_reason(self) -> &'static str {
        self.as_str()
    }
}

impl RayJob {
    /// The job's documented state, if it has one.
    pub fn state(&self) -> Option<JobState> {
        self.status.as_deref().and_then(JobState::parse)
    }

    /// The job ended unsuccessfully (`Failed` or `Timeout`).
    pub fn failed(&self) -> bool {
        matches!(self.state(), Some(JobState::Failed | JobState::Timeout))
    }
}

fn submission_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || super::text::is_cluster_id(&s) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!(
            "submissionId {:?} ({} bytes) is not a Ray submission ID (1 to {} bytes of visible \
             characters, no space, quote or backslash)",
            super::text::excerpt(&s),
            s.len(),
            super::text::MAX_CLUSTER_ID
        )))
    }
}

/// The `submitTime` filter: jobs submitted in `[start_ms, end_ms]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitWindow {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl SubmitWindow {
    /// The last `retention` up to `now_ms`.
    pub fn last(retention: std::time::Duration, now_ms: i64) -> Self {
        let span = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        SubmitWindow {
            start_ms: now_ms.saturating_sub(span).max(0),
            end_ms: now_ms,
        }
    }

    /// The query value the SDK sends (`Utils.array_to_string_with_specified_style(...,
    /// 'json')`): the JSON object `{"startTime":…,"endTime":…}`.
    pub fn shrunk(&self) -> String {
        serde_json::json!({"startTime": self.start_ms, "endTime": self.end_ms}).to_string()
    }

    /// Parses a shrunk value (the simulator's side); either bound may be missing.
    pub fn parse(s: &str) -> Result<(Option<i64>, Option<i64>), String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct W {
            #[serde(default)]
            start_time: Option<i64>,
            #[serde(default)]
            end_time: Option<i64>,
        }
        let w: W = serde_json::from_str(s).map_err(|e| super::text::decode_error(&e))?;
        Ok((w.start_time, w.end_time))
    }

    pub fn contains(&self, ms: i64) -> bool {
        (self.start_ms..=self.end_ms).contains(&ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_sdk_field_names_and_cleans_strings() {
        let page: ListRayJobResponse = serde_json::from_str(
            r#"{"requestId":"R1","totalCount":1,"rayJobs":[{"submissionId":"raysubmit_1",
            "name":"etl\u202e","status":"Failed","clusterState":"Deleted","resourceQueue":"root_queue",
            "submitTime":1700000000000,"startTime":1700000001000,"endTime":1700000061000,
            "duration":60,"cuHours":0.25,"creatorName":"Alice",
            "dashboardUrl":"https://gw.example?token=secret","extra":1}]}"#,
        )
        .unwrap();
        assert_eq!(page.total_count, Some(1));
        let j = &page.ray_jobs.unwrap()[0];
        assert_eq!(j.submission_id, "raysubmit_1");
        assert_eq!(j.name.as_deref(), Some("etl"));
        assert_eq!(j.duration, Some(60));
        assert_eq!(j.cu_hours, Some(0.25));
        assert!(j.failed());
    }

    #[test]
    fn a_bad_submission_id_fails_the_page() {
        let r: Result<ListRayJobResponse, _> =
            serde_json::from_str(r#"{"rayJobs":[{"submissionId":"a b"}]}"#);
        assert!(r.unwrap_err().to_string().contains("submissionId"));
    }

    #[test]
    fn window_is_shrunk_like_the_sdk() {
        let w = SubmitWindow::last(std::time::Duration::from_secs(60), 100_000);
        assert_eq!(w.shrunk(), r#"{"endTime":100000,"startTime":40000}"#);
        assert_eq!(
            SubmitWindow::parse(&w.shrunk()),
            Ok((Some(40_000), Some(100_000)))
        );
        assert!(SubmitWindow::parse("{").is_err());
        assert!(w.contains(40_000) && w.contains(100_000) && !w.contains(39_999));
    }
}
