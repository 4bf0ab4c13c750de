//! The two custom resources: `EmrWorkspace` (written by users) and `EmrRayCluster` (read-only
//! mirrors written by the operator). The YAML in `crds/` is generated from these types
//! (`emr-ray-operator crdgen`) and checked by a test.

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::{ConditionStatus, ConditionType};
use super::credentials::{EmrClusterCredentials, WorkspaceCredentials};
use super::duration::{DurationError, Interval};
use super::job::{EmrRayJob, WorkspaceJobs, WorkspaceJobsStatus};
use crate::time::Time;

pub const GROUP: &str = "emr.aliyun.io";
pub const VERSION: &str = "v1alpha1";
/// Field manager used for every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "emr-ray-operator";
/// Label on every mirror: name of the owning `EmrWorkspace`.
pub const LABEL_WORKSPACE: &str = "emr.aliyun.io/workspace";
/// Label on every mirror: remote workspace ID.
pub const LABEL_WORKSPACE_ID: &str = "emr.aliyun.io/workspace-id";
/// Label on every mirror: remote cluster ID (sanitised to a label value).
pub const LABEL_CLUSTER_ID: &str = "emr.aliyun.io/cluster-id";
/// Annotation on every mirror: the exact remote cluster ID.
pub const ANNOTATION_CLUSTER_ID: &str = "emr.aliyun.io/cluster-id";
/// Annotation on an `EmrWorkspace`: any new value asks for a sync now (Flux's
/// `reconcile.fluxcd.io/requestedAt` convention); `status.lastHandledReconcileAt` echoes the
/// last value handled.
pub const ANNOTATION_REQUESTED_AT: &str = "reconcile.emr.aliyun.io/requestedAt";
/// Label that marks objects managed by this operator.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "emr-ray-operator";
/// Label assigning a **Namespace** (all its `EmrWorkspace`s) to a shard (`--shard-selector`);
/// copied onto the mirrors of its workspaces. On an `EmrWorkspace` it means nothing: tenants
/// write those, and shards are the cluster admin's to assign.
pub const LABEL_SHARD: &str = "sharding.emr.aliyun.io/key";

/// Sync interval of a workspace that does not set one, unless the operator is told otherwise
/// (`--default-sync-interval`).
pub const DEFAULT_SYNC_INTERVAL: &str = "60s";

/// An EMR Serverless Spark workspace whose Ray clusters are mirrored into this namespace.
// kube-derive's repeated `printcolumn(...)` attributes are not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "emr.aliyun.io",
    version = "v1alpha1",
    kind = "EmrWorkspace",
    plural = "emrworkspaces",
    shortname = "emrws",
    category = "emr",
    namespaced,
    status = "EmrWorkspaceStatus",
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceId"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.regionId"),
    printcolumn(name = "Clusters", type_ = "integer", json_path = ".status.clusters"),
    printcolumn(
        name = "Jobs",
        type_ = "integer",
        priority = "1",
        json_path = ".status.jobs.total"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Last Sync",
        type_ = "date",
        json_path = ".status.lastSuccessfulSyncTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.regionId == oldSelf.regionId && self.workspaceId == oldSelf.workspaceId && (has(self.endpoint) ? self.endpoint : '') == (has(oldSelf.endpoint) ? oldSelf.endpoint : '') && (has(self.network) ? self.network : 'Public') == (has(oldSelf.network) ? oldSelf.network : 'Public')").message("regionId, workspaceId, endpoint and network are immutable: together they name the remote workspace whose mirrors this EmrWorkspace owns; create a new EmrWorkspace instead"))]
#[serde(rename_all = "camelCase")]
pub struct EmrWorkspaceSpec {
    /// Alibaba Cloud region of the workspace, e.g. `cn-hangzhou`, `ap-southeast-1`. Chooses the
    /// endpoint.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^(cn|ap|eu|us|me|na|sa|rus)-[a-z]+(-[a-z0-9]+)*$')").message("regionId must be an Alibaba Cloud region ID such as cn-hangzhou or ap-southeast-1"))]
    pub region_id: String,
    /// EMR Serverless Spark workspace ID, e.g. `w-d2d82aa09155`.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    )]
    pub workspace_id: String,
    /// Explicit API endpoint URL (`https://...`), for VPC endpoints, proxies or the simulator.
    /// When empty, the endpoint is derived from `regionId` and `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("endpoint must be an http:// or https:// URL without query or fragment, e.g. https://emr-serverless-spark-vpc.cn-hangzhou.aliyuncs.com"))]
    pub endpoint: Option<String>,
    /// Which derived endpoint to use when `endpoint` is empty: `Public` (default) or `VPC`.
    #[serde(default)]
    pub network: EndpointNetwork,
    /// Where the access key comes from: `secretRef` (a Secret of this namespace) or
    /// `clusterCredentialsRef` (cluster credentials that allow this namespace).
    pub credentials: WorkspaceCredentials,
    /// How often the remote API is listed, as a duration (`30s`, `5m`, `1h`); minimum 10s.
    /// Empty: the operator's default (`--default-sync-interval`, 60s unless configured);
    /// `status.syncInterval` shows the interval in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("syncInterval must be at least 10s"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('24h')").message("syncInterval must be at most 24h"))]
    pub sync_interval: Option<String>,
    /// Stop polling the remote API. Mirrors are kept as they are.
    #[serde(default)]
    pub suspend: bool,
    /// What happens to a mirror whose remote cluster is gone from a complete listing:
    /// `Delete` (default) removes it, `Keep` keeps it with `status.gone: true`.
    #[serde(default)]
    pub gone_cluster_policy: GoneClusterPolicy,
    /// Mirror the workspace's Ray jobs as `EmrRayJob`s (opt-in; see `WorkspaceJobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<WorkspaceJobs>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EndpointNetwork {
    #[default]
    Public,
    #[serde(rename = "VPC")]
    Vpc,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum GoneClusterPolicy {
    #[default]
    Delete,
    Keep,
}

impl EmrWorkspaceSpec {
    /// `spec.jobs` when it enables job mirrors.
    pub fn jobs_enabled(&self) -> Option<&WorkspaceJobs> {
        self.jobs.as_ref().filter(|j| j.enabled)
    }

    /// `syncInterval` as an [`Interval`]: `Ok(None)` when unset (the operator's default
    /// applies); an error when it does not parse (admission normally prevents that).
    pub fn sync_interval(&self) -> Result<Option<Interval>, DurationError> {
        match self.sync_interval.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some),
        }
    }
}

/// A kstatus-compatible condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub type_: ConditionType,
    /// `True`, `False` or `Unknown`.
    #[schemars(with = "String")]
    pub status: ConditionStatus,
    // Written from the typed reasons only (`crate::api::reason::AsReason`); kept as read.
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[schemars(with = "String")]
    pub last_transition_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Details of the last failed sync, for people and alerts. Never holds secrets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncFailure {
    /// Machine-readable reason, e.g. `Throttled`, `AuthenticationFailed`, `SecretNotFound`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Error code returned by the remote API, e.g. `SignatureDoesNotMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Request ID returned by the remote API; give it to Alibaba Cloud support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When this failure reason was first seen (RFC 3339).
    pub since: String,
    /// Consecutive failed syncs.
    pub consecutive_failures: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmrWorkspaceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Last time a remote listing was attempted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_attempt_time: Option<String>,
    /// Last time a complete remote listing succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync_time: Option<String>,
    /// Remote clusters in the last complete listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<i64>,
    /// Clusters in `Running` state in the last complete listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_clusters: Option<i64>,
    /// Clusters per remote state in the last complete listing (`Unknown`: no state). At most 8
    /// states outside the documented five are named; the clusters of any others count as
    /// `Other`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters_by_state: BTreeMap<String, i64>,
    /// The sync interval in effect (`spec.syncInterval` or the operator's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<String>,
    /// The endpoint that was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The last `reconcile.emr.aliyun.io/requestedAt` value a sync was run for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Set while syncs fail; cleared by the next successful sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<SyncFailure>,
    /// Set while the Kubernetes API server refuses mirror writes; cleared when every mirror is
    /// written as desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_failure: Option<WriteFailure>,
    /// The job mirrors (`spec.jobs.enabled`): counts of the last complete job listing, and why
    /// the latest one failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<WorkspaceJobsStatus>,
    /// The workspace's resource queues (`ListWorkspaceQueues`) from the last complete queue
    /// listing, by name (at most 64). Quantities are Kubernetes quantities: `cpu` in cores
    /// (`16`, `0.5`), `memory` in GiB (`64Gi`), `gpu` in devices; a value the service did not
    /// send or sent unreadable is absent. A failed queue listing keeps these as they were and
    /// sets `queueListingFailure` (the workspace stays Ready when its clusters synced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<WorkspaceQueueStatus>,
    /// Set while listing the queues fails; cleared by the next complete queue listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_listing_failure: Option<QueueListingFailure>,
}

/// One resource queue of the workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceQueueStatus {
    pub name: String,
    /// The queue's status as the service reports it (e.g. `RUNNING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `instance` or `instanceChildren`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<String>,
    /// Guaranteed capacity (`minResource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<QueueQuantities>,
    /// Capacity limit (`maxResource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<QueueQuantities>,
    /// In use (`usedResource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<QueueQuantities>,
}

/// Quantities of a queue: `cpu` in cores, `memory` in GiB (`Gi` suffix), `gpu` in devices.
/// `cpu` and `gpu` are plain decimal numbers (what kube-state-metrics reads as a gauge value).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueQuantities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUEUE_NUMBER_PATTERN))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUEUE_MEMORY_PATTERN))]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUEUE_NUMBER_PATTERN))]
    pub gpu: Option<String>,
}

/// A queue's `cpu` and `gpu`: a non-negative decimal number (`16`, `0.5`).
pub const QUEUE_NUMBER_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?$";
/// A queue's `memory`: GiB with the `Gi` suffix (`64Gi`, `0.5Gi`).
pub const QUEUE_MEMORY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?Gi$";

/// A failing queue listing, for people and alerts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueListingFailure {
    /// Why it failed (the reasons of `lastFailure`: `Throttled`, `AuthFailed`, ...).
    pub reason: String,
    pub message: String,
    /// When queue listings started failing (RFC 3339).
    pub since: String,
}

/// Mirror writes the Kubernetes API server refused, for people and alerts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFailure {
    /// Why the first write was refused: `Forbidden`, `Invalid`, `TooLarge`, `Conflict`,
    /// `Throttled`, `ServerError`, `Unavailable` or `Other`.
    pub reason: String,
    /// The API server's message for the first refused write, with the mirror it concerns.
    pub message: String,
    /// Mirrors the workspace should have.
    pub mirrors: i64,
    /// Mirrors not written as desired (refused, or not attempted after a refusal).
    pub failed: i64,
    /// When writes started failing (RFC 3339).
    pub since: String,
    /// Consecutive write passes with a refusal.
    pub consecutive_failures: i64,
}

/// A read-only mirror of one Ray cluster of an EMR Serverless Spark workspace.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "emr.aliyun.io",
    version = "v1alpha1",
    kind = "EmrRayCluster",
    plural = "emrrayclusters",
    shortname = "emrray",
    shortname = "emrrc",
    category = "emr",
    namespaced,
    status = "EmrRayClusterStatus",
    selectable = ".spec.clusterId",
    selectable = ".spec.workspaceRef",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".status.displayName"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.releaseVersion"
    ),
    printcolumn(
        name = "Desired Workers",
        type_ = "integer",
        json_path = ".status.desiredWorkerReplicas"
    ),
    printcolumn(name = "CPUs", type_ = "string", json_path = ".status.desiredCPU"),
    printcolumn(name = "Memory", type_ = "string", json_path = ".status.desiredMemory"),
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceRef"),
    printcolumn(
        name = "Cluster ID",
        type_ = "string",
        priority = "1",
        json_path = ".spec.clusterId"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec of an EmrRayCluster is immutable: it names the mirrored remote cluster"))]
#[serde(rename_all = "camelCase")]
pub struct EmrRayClusterSpec {
    /// Name of the `EmrWorkspace` (same namespace) this mirror belongs to.
    pub workspace_ref: String,
    /// Remote workspace ID.
    pub workspace_id: String,
    /// Region of the workspace.
    pub region_id: String,
    /// Remote Ray cluster ID (exact, as returned by the API).
    pub cluster_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmrRayClusterStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Remote state: `Starting`, `Running`, `Stopping`, `Stopped`, `Error` (other values are
    /// kept, without control or invisible characters and cut to 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The remote cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Ray engine version, e.g. `ray-1.0.0 (Ray 2.47.1, Python 3.12)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<RayEndpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_spec: Option<RayHeadSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_groups: Vec<RayWorkerGroup>,
    /// Sum of `replica` over worker groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_worker_replicas: Option<i64>,
    /// Total CPU cores of head and workers at their desired replicas.
    #[serde(
        default,
        rename = "desiredCPU",
        skip_serializing_if = "Option::is_none"
    )]
    pub desired_cpu: Option<String>,
    /// Total memory of head and workers at their desired replicas (Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_memory: Option<String>,
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
    /// Whether the remote configuration has been modified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<bool>,
    /// Remote message (e.g. the error of a failed cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    /// The cluster's nodes (pods), from `GetRayCluster`, while the cluster is unhealthy:
    /// `Error`, or `Starting`/`Stopping` for longer than the operator's `--stuck-cluster-after`.
    /// Fetched once per change of the listed cluster; empty again once it is healthy. At most
    /// 32, every string cleaned and capped; no secret of the remote body is ever kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<RayClusterInstance>,
    /// True when the remote cluster is no longer listed (with `goneClusterPolicy: Keep`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

/// One node of a Ray cluster, as `GetRayCluster` reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterInstance {
    /// The node type (the head or a worker), as the remote names it.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The pod phase (`Pending`, `Running`, `Failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The main container's state (`Running`, `Waiting`, `Terminated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_state: Option<String>,
    /// E.g. `OOMKilled`, `CrashLoopBackOff`, `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_state_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_state_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_exit_code: Option<i32>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayEndpoints {
    /// Ray client / job submission endpoint (`ray://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Ray dashboard URL with its access token removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayHeadSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_scaling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayWorkerGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_spec: Option<String>,
}

/// The CRDs as YAML documents, in a stable order (`crds/` is generated from this).
pub fn crd_yamls() -> Vec<(&'static str, String)> {
    vec![
        (
            "emr.aliyun.io_emrclustercredentials.yaml",
            serde_yaml::to_string(&EmrClusterCredentials::crd()).expect("CRD serialises"),
        ),
        (
            "emr.aliyun.io_emrworkspaces.yaml",
            serde_yaml::to_string(&EmrWorkspace::crd()).expect("CRD serialises"),
        ),
        (
            "emr.aliyun.io_emrrayclusters.yaml",
            serde_yaml::to_string(&EmrRayCluster::crd()).expect("CRD serialises"),
        ),
        (
            "emr.aliyun.io_emrrayjobs.yaml",
            serde_yaml::to_string(&EmrRayJob::crd()).expect("CRD serialises"),
        ),
    ]
}

/// Installs (server-side applies) both CRDs and waits until they are established.
pub async fn install_crds(client: &kube::Client) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        EmrClusterCredentials::crd(),
        EmrWorkspace::crd(),
        EmrRayCluster::crd(),
        EmrRayJob::crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), established).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt as _;

    /// The admission rule on `regionId` is the operator's own region shape.
    #[test]
    fn region_rule_is_the_operators_region_shape() {
        let crd = serde_json::to_string(&super::EmrWorkspace::crd()).unwrap();
        let pattern = crate::emr::endpoint::REGION_PATTERN;
        assert!(
            crd.contains(&serde_json::to_string(pattern).unwrap()[1..pattern.len() + 1]),
            "the CRD's regionId rule is not {pattern}"
        );
    }
}
