//! `EmrRayJob`: a read-only mirror of one Ray job of an EMR Serverless Spark workspace, written
//! by the operator for workspaces that opt in (`spec.jobs.enabled`), and the workspace's
//! `spec.jobs` / `status.jobs`.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::crd::Condition;
use super::duration::{DurationError, Interval};

/// Label on every job mirror: the submission ID (as a label value; the exact ID is in the spec).
pub const LABEL_SUBMISSION_ID: &str = "emr.aliyun.io/submission-id";
/// How far back jobs are mirrored when `spec.jobs.retention` is not set.
pub const DEFAULT_JOB_RETENTION: &str = "168h";
/// Shortest and longest retention accepted (admission and the operator agree).
pub const MIN_JOB_RETENTION: Interval = Interval::from_secs(3600);
pub const MAX_JOB_RETENTION: Interval = Interval::from_secs(90 * 24 * 3600);

/// Ray job mirrors of a workspace (`spec.jobs`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceJobs {
    /// Mirror the workspace's Ray jobs as `EmrRayJob`s (default false). Turning it off deletes
    /// the job mirrors.
    #[serde(default)]
    pub enabled: bool,
    /// How far back, by submission time, jobs are mirrored (default `168h`, 7 days; from `1h`
    /// to `2160h`). Only this window is listed; mirrors of jobs that leave it are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')").message("jobs.retention must be at least 1h"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2160h')").message("jobs.retention must be at most 2160h (90 days)"))]
    pub retention: Option<String>,
}

impl WorkspaceJobs {
    /// The retention in effect: `retention` or the default, within the bounds.
    pub fn retention(&self) -> Result<Interval, DurationError> {
        let raw = self
            .retention
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_JOB_RETENTION);
        let v = Interval::parse_at_least(raw, MIN_JOB_RETENTION)?;
        if v > MAX_JOB_RETENTION {
            return Err(DurationError::TooLong(raw.chars().take(64).collect()));
        }
        Ok(v)
    }
}

/// The job mirrors of a workspace, in its status (`status.jobs`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceJobsStatus {
    /// The retention window in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// Jobs in the window at the last complete job listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Of those, `Failed` or `Timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// Jobs per remote status at the last complete job listing (states outside the SDK's
    /// eight count as `Other`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_state: BTreeMap<String, i64>,
    /// Last time a complete job listing succeeded (RFC 3339; like the sync times, written at
    /// most every `--status-heartbeat` when nothing else changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_list_time: Option<String>,
    /// Why the latest job listing failed (`Throttled`, `IncompleteListing`, `TooManyJobs`, …);
    /// absent after a success. The counts above stay those of the last complete listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A read-only mirror of one Ray job of an EMR Serverless Spark workspace.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "emr.aliyun.io",
    version = "v1alpha1",
    kind = "EmrRayJob",
    plural = "emrrayjobs",
    shortname = "emrrj",
    category = "emr",
    namespaced,
    status = "EmrRayJobStatus",
    selectable = ".spec.submissionId",
    selectable = ".spec.workspaceRef",
    printcolumn(name = "Job Status", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Deployment Status",
        type_ = "string",
        json_path = ".status.clusterState"
    ),
    printcolumn(name = "Job Name", type_ = "string", json_path = ".status.name"),
    printcolumn(name = "Start Time", type_ = "date", json_path = ".status.startTime"),
    printcolumn(name = "End Time", type_ = "date", json_path = ".status.endTime"),
    printcolumn(
        name = "Queue",
        type_ = "string",
        priority = "1",
        json_path = ".status.resourceQueue"
    ),
    printcolumn(
        name = "Submission ID",
        type_ = "string",
        priority = "1",
        json_path = ".spec.submissionId"
    ),
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceRef"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec of an EmrRayJob is immutable: it names the mirrored remote job"))]
#[serde(rename_all = "camelCase")]
pub struct EmrRayJobSpec {
    /// Name of the `EmrWorkspace` (same namespace) this mirror belongs to.
    pub workspace_ref: String,
    /// Remote workspace ID.
    pub workspace_id: String,
    /// Region of the workspace.
    pub region_id: String,
    /// Ray submission ID (exact, as returned by the API).
    pub submission_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmrRayJobStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Remote job status: `Submitted`, `Pending`, `Running`, `Succeeded`, `Failed`,
    /// `Cancelling`, `Cancelled`, `Timeout` (others kept, cleaned and cut to 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    /// The job's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_queue: Option<String>,
    /// State of the job's Ray cluster: `Deleted`, `Submitted`, `Pending`, `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_state: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Run time, e.g. `1h2m3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Compute units consumed (an estimate: the bill is the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cu_hours: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_name: Option<String>,
    /// Ray dashboard URL with its access token removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_defaults_and_bounds() {
        let r = |s: Option<&str>| {
            WorkspaceJobs {
                enabled: true,
                retention: s.map(str::to_string),
            }
            .retention()
        };
        assert_eq!(r(None), Ok(Interval::from_secs(7 * 24 * 3600)));
        assert_eq!(r(Some("2h")), Ok(Interval::from_secs(7200)));
        assert!(r(Some("30m")).is_err());
        assert!(r(Some("2161h")).is_err());
        assert!(r(Some("7d")).is_err());
    }
}
