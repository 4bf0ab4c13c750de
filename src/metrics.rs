//! Prometheus metrics served on `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Declares a metric label value enum: a fixed set, each variant with its string on the wire.
macro_rules! label_values {
    ($(#[$m:meta])* $enum_name:ident { $( $(#[$doc:meta])* $name:ident => $s:literal ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
        pub enum $enum_name {
            $( $(#[$doc])* $name, )*
        }

        impl $enum_name {
            pub const ALL: &'static [$enum_name] = &[$($enum_name::$name),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $enum_name::$name => $s, )*
                }
            }
        }

        impl EncodeLabelValue for $enum_name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }

        impl std::fmt::Display for $enum_name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// The Kubernetes resources the operator writes (`resource` of `kube_writes` and
    /// `kube_write_refusals`).
    KubeResource {
        EmrRayClusters => "emrrayclusters",
        EmrRayJobs => "emrrayjobs",
        EmrWorkspaces => "emrworkspaces",
    }
}

label_values! {
    /// The kinds of write the operator sends (`operation` of `kube_writes`).
    WriteOperation {
        /// Server-side apply of the object.
        Apply => "apply",
        /// Server-side apply of the status subresource.
        ApplyStatus => "apply-status",
        Delete => "delete",
        /// Deleting a mirror whose workspace is gone.
        DeleteOrphan => "delete-orphan",
    }
}

label_values! {
    /// A resource queue's quantity (`resource` of `queue_resource`).
    QueueResource {
        /// Cores.
        Cpu => "cpu",
        MemoryGibibytes => "memory_gibibytes",
        /// Devices.
        Gpu => "gpu",
    }
}

label_values! {
    /// Which of a queue's figures (`kind` of `queue_resource`).
    QueueFigure {
        Min => "min",
        Max => "max",
        Used => "used",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkspaceLabels {
    pub namespace: String,
    pub workspace: String,
}

/// The end of an OpenMetrics exposition.
const EOF: &str = "# EOF\n";

/// A workspace's listed clusters: cluster ID → (mirror name, state label). The label is one of
/// [`ClusterState::LABELS`](crate::emr::ClusterState::LABELS): a remote server cannot grow the
/// label set (its cluster IDs are [`is_cluster_id`](crate::emr::text::is_cluster_id), its mirror
/// names DNS labels).
pub type ClusterStateMap = BTreeMap<String, (String, &'static str)>;

/// The `cluster_state` series: 1 for each listed cluster's current state and 0 for the other
/// documented states (kube-state-metrics' StateSet shape). Encoded at scrape time from one small
/// map per workspace, replaced whole when a listing changes it (five labelled gauges per cluster
/// held in a metric family cost ≈1.2 KiB per cluster, this ≈100 bytes), and written out one
/// workspace at a time ([`Metrics::exposition`]).
#[derive(Debug, Default)]
pub struct ClusterStates(RwLock<BTreeMap<(String, String), Arc<ClusterStateMap>>>);

impl ClusterStates {
    /// Sets the clusters of workspace `namespace/workspace` (an empty map drops its series).
    pub fn set(&self, namespace: &str, workspace: &str, states: Arc<ClusterStateMap>) {
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), workspace.to_string());
        if states.is_empty() {
            all.remove(&key);
        } else {
            all.insert(key, states);
        }
    }

    pub fn remove(&self, namespace: &str, workspace: &str) {
        self.set(namespace, workspace, Arc::default());
    }

    /// Series exported, for tests.
    pub fn len(&self) -> usize {
        let all = self.0.read().unwrap_or_else(|p| p.into_inner());
        all.values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClusterStates {
    /// Each workspace's series, one exposition-text chunk per workspace, from a snapshot (a
    /// scrape never holds the lock while writing out).
    fn chunks(&self) -> impl Iterator<Item = String> + Send + 'static {
        let all: Vec<((String, String), Arc<ClusterStateMap>)> = {
            let all = self.0.read().unwrap_or_else(|p| p.into_inner());
            all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        all.into_iter().map(|((namespace, workspace), clusters)| {
            let mut out = String::with_capacity(clusters.len() * 6 * 160);
            for (id, (name, state)) in clusters.iter() {
                for s in states_for(state) {
                    out.push_str(CLUSTER_STATE);
                    for (i, (k, v)) in [
                        ("namespace", namespace.as_str()),
                        ("workspace", workspace.as_str()),
                        ("cluster_id", id.as_str()),
                        ("name", name.as_str()),
                        ("state", s),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        out.push(if i == 0 { '{' } else { ',' });
                        out.push_str(k);
                        out.push_str("=\"");
                        escape_label_value(v, &mut out);
                        out.push('"');
                    }
                    out.push_str(if s == *state { "} 1\n" } else { "} 0\n" });
                }
            }
            out
        })
    }
}

const CLUSTER_STATE: &str = "emr_ray_operator_cluster_state";

/// An OpenMetrics label value: backslash, double quote and line feed escaped.
fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The documented states, plus the cluster's own label when it is not one of them (`Other`,
/// `Unknown`).
pub fn states_for(state: &'static str) -> impl Iterator<Item = &'static str> {
    const KNOWN: [&str; 5] = crate::emr::ClusterState::KNOWN;
    let own = (!KNOWN.contains(&state)).then_some(state);
    KNOWN.iter().copied().chain(own)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub namespace: String,
    pub workspace: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The EMR API action (`ListRayCluster`, `GetRayCluster`): a fixed set.
    pub operation: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub resource: KubeResource,
    /// A [`WriteRefusal`](crate::api::WriteRefusal): a fixed set.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// A variant of the reconciler's error type: a fixed set.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource: KubeResource,
    pub operation: WriteOperation,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// The metrics server's verdict on the token (`allowed`, `forbidden`, `unauthenticated`,
    /// `error`): a fixed set.
    pub result: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// 1 for the cluster's current state, 0 for the other documented states.
    pub cluster_state: Arc<ClusterStates>,
    pub sync_attempts: Family<WorkspaceLabels, Counter>,
    pub sync_failures: Family<FailureLabels, Counter>,
    pub sync_duration: Family<WorkspaceLabels, Histogram>,
    /// Every reconcile, however it ends (see [`Metrics::reconcile_timer`]).
    pub reconcile_duration: Histogram,
    pub remote_requests: Family<CodeLabels, Counter>,
    pub last_success: Family<WorkspaceLabels, Gauge<f64, AtomicU64>>,
    pub workspace_clusters: Family<WorkspaceLabels, Gauge>,
    pub workspace_ready: Family<WorkspaceLabels, Gauge>,
    pub workspace_mirrors_unwritten: Family<WorkspaceLabels, Gauge>,
    pub workspace_suspended: Family<WorkspaceLabels, Gauge>,
    /// Ray jobs in the retention window (last complete job listing), for `spec.jobs`.
    pub workspace_jobs: Family<WorkspaceLabels, Gauge>,
    /// Of those, `Failed` or `Timeout`.
    pub workspace_jobs_failed: Family<WorkspaceLabels, Gauge>,
    /// Jobs the operator saw turn `Failed` or `Timeout` (see `controller::jobs::new_failures`).
    pub job_failures: Family<WorkspaceLabels, Counter>,
    pub kube_writes: Family<WriteLabels, Counter>,
    pub kube_write_refusals: Family<RefusalLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconciles: Counter,
    pub is_leader: Gauge,
    /// Reviews (TokenReview, then SubjectAccessReview) of `/metrics` callers' tokens.
    pub metrics_auth_reviews: Family<ReviewLabels, Counter>,
    /// `/metrics` requests refused without a review: the review budget was spent.
    pub metrics_auth_throttled: Counter,
    /// Listings in flight per namespace (each holds one of the controller's reconcile slots).
    pub namespace_listings: Family<NamespaceLabels, Gauge>,
    /// Capacity and use of each resource queue of a workspace.
    pub queue_resource: Family<QueueLabels, Gauge<f64, AtomicU64>>,
}

/// One quantity of one queue: `resource` is `cpu` (cores), `memory_gibibytes` or `gpu`
/// (devices); `kind` is `min`, `max` or `used`. At most 64 queues per workspace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub namespace: String,
    pub workspace: String,
    pub queue: String,
    pub resource: QueueResource,
    pub kind: QueueFigure,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("emr_ray_operator");
        let m = Metrics {
            cluster_state: Arc::default(),
            sync_attempts: Family::default(),
            sync_failures: Family::default(),
            sync_duration: Family::new_with_constructor(duration_histogram),
            reconcile_duration: duration_histogram(),
            remote_requests: Family::default(),
            last_success: Family::default(),
            workspace_clusters: Family::default(),
            workspace_ready: Family::default(),
            workspace_mirrors_unwritten: Family::default(),
            workspace_suspended: Family::default(),
            workspace_jobs: Family::default(),
            workspace_jobs_failed: Family::default(),
            job_failures: Family::default(),
            kube_writes: Family::default(),
            kube_write_refusals: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Counter::default(),
            is_leader: Gauge::default(),
            metrics_auth_reviews: Family::default(),
            metrics_auth_throttled: Counter::default(),
            namespace_listings: Family::default(),
            queue_resource: Family::default(),
            registry: Registry::default(),
        };
        m.register_into(&mut registry);
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Registers every metric, in the order (and so the exposition order) of the fields.
    fn register_into(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "sync_attempts",
            "Remote listings attempted per workspace",
            m.sync_attempts.clone(),
        );
        registry.register(
            "sync_failures",
            "Failed remote listings per workspace and reason",
            m.sync_failures.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Duration of a workspace sync (remote listing, mirror writes and status write); its count is the number of syncs completed",
            m.sync_duration.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of every reconcile of a workspace, however it ends (most neither list nor write)",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "remote_requests",
            "HTTP requests to the EMR OpenAPI by action (operation) and result code",
            m.remote_requests.clone(),
        );
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "Unix time of the last complete, successful listing per workspace",
            m.last_success.clone(),
        );
        registry.register(
            "workspace_clusters",
            "Ray clusters in the last complete listing per workspace",
            m.workspace_clusters.clone(),
        );
        registry.register(
            "workspace_ready",
            "1 when the workspace's Ready condition is True",
            m.workspace_ready.clone(),
        );
        registry.register(
            "workspace_mirrors_unwritten",
            "Mirrors of the workspace the Kubernetes API server refused to write (or that were not \
             attempted after a refusal) in the last write pass; 0 when every mirror is written",
            m.workspace_mirrors_unwritten.clone(),
        );
        registry.register(
            "workspace_suspended",
            "1 while the workspace has spec.suspend set (its alerts are silenced on purpose)",
            m.workspace_suspended.clone(),
        );
        registry.register(
            "workspace_jobs",
            "Ray jobs in the retention window at the last complete job listing, per workspace \
             with spec.jobs.enabled",
            m.workspace_jobs.clone(),
        );
        registry.register(
            "workspace_jobs_failed",
            "Ray jobs Failed or Timeout in the retention window at the last complete job \
             listing, per workspace with spec.jobs.enabled",
            m.workspace_jobs_failed.clone(),
        );
        registry.register(
            "job_failures",
            "Ray jobs seen to end Failed or Timeout, per workspace with spec.jobs.enabled: a job \
             counts once, when a complete job listing shows it failed and the previous one did \
             not (the first listing after the operator starts counts none and knows the jobs \
             failed in their mirrors, so one that failed meanwhile counts at the next listing; \
             a workspace that just enabled jobs counts none of the failures it already had)",
            m.job_failures.clone(),
        );
        registry.register(
            "kube_writes",
            "Write requests sent to the Kubernetes API by resource and operation",
            m.kube_writes.clone(),
        );
        registry.register(
            "kube_write_refusals",
            "Write requests the Kubernetes API server refused, by resource and reason",
            m.kube_write_refusals.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error",
            m.reconcile_errors.clone(),
        );
        registry.register("reconciles", "Reconciliations run", m.reconciles.clone());
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.is_leader.clone(),
        );
        registry.register(
            "metrics_auth_reviews",
            "Reviews (TokenReview, then SubjectAccessReview) of the tokens of /metrics callers not in the cache, by result",
            m.metrics_auth_reviews.clone(),
        );
        registry.register(
            "metrics_auth_throttled",
            "/metrics requests refused (429) without a review because the review budget was spent",
            m.metrics_auth_throttled.clone(),
        );
        registry.register(
            "namespace_listings_in_flight",
            "Remote listings in flight per namespace, each holding one of the operator's reconcile \
             slots (at most the namespace's share, --namespace-share of --concurrency)",
            m.namespace_listings.clone(),
        );
        registry.register(
            "queue_resource",
            "Capacity (kind min, max) and use (kind used) of each resource queue of a workspace, \
             in cores (cpu), GiB (memory_gibibytes) or devices (gpu), from the last complete \
             queue listing",
            m.queue_resource.clone(),
        );
    }

    /// The exposition text in chunks: the registry's metrics, then the `cluster_state` series
    /// one workspace at a time (with a series per cluster and state the text runs to megabytes:
    /// served as a stream, it is never held whole), then the end marker.
    pub fn exposition(&self) -> impl Iterator<Item = String> + Send + 'static {
        let mut head = String::new();
        prometheus_client::encoding::text::encode(&mut head, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        let head = match head.strip_suffix(EOF) {
            Some(h) => h.to_string(),
            None => head,
        };
        let descriptor = format!(
            "# HELP {CLUSTER_STATE} State of each mirrored Ray cluster: 1 for its current \
             state, 0 for the others.\n# TYPE {CLUSTER_STATE} gauge\n"
        );
        [head, descriptor]
            .into_iter()
            .chain(self.cluster_state.chunks())
            .chain(std::iter::once(EOF.to_string()))
    }

    /// The whole exposition text.
    pub fn encode(&self) -> String {
        self.exposition().collect()
    }

    pub fn count_refusal(&self, resource: KubeResource, refusal: crate::api::WriteRefusal) {
        self.kube_write_refusals
            .get_or_create(&RefusalLabels {
                resource,
                reason: refusal.metric_label().to_string(),
            })
            .inc();
    }

    /// A guard that observes `reconcile_duration_seconds` when dropped: a reconcile's time is
    /// recorded however it ends (an error, leadership lost, a cancelled future).
    pub fn reconcile_timer(&self) -> Timer {
        Timer {
            started: std::time::Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    pub fn count_reconcile_error(&self, label: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: label.to_string(),
            })
            .inc();
    }

    pub fn count_metrics_review(&self, result: &str) {
        self.metrics_auth_reviews
            .get_or_create(&ReviewLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn count_write(&self, resource: KubeResource, operation: WriteOperation) {
        self.kube_writes
            .get_or_create(&WriteLabels {
                resource,
                operation,
            })
            .inc();
    }
}

/// Observes the time from its creation to its drop (see [`Metrics::reconcile_timer`]).
pub struct Timer {
    started: std::time::Instant,
    histogram: Histogram,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_labels_keep_their_strings() {
        let m = Metrics::default();
        m.count_write(KubeResource::EmrRayClusters, WriteOperation::ApplyStatus);
        m.count_write(KubeResource::EmrRayJobs, WriteOperation::DeleteOrphan);
        m.count_refusal(
            KubeResource::EmrWorkspaces,
            crate::api::WriteRefusal::Forbidden,
        );
        m.queue_resource
            .get_or_create(&QueueLabels {
                namespace: "ns".into(),
                workspace: "ws".into(),
                queue: "q".into(),
                resource: QueueResource::MemoryGibibytes,
                kind: QueueFigure::Used,
            })
            .set(1.0);
        let text = m.encode();
        for want in [
            r#"kube_writes_total{resource="emrrayclusters",operation="apply-status"} 1"#,
            r#"kube_writes_total{resource="emrrayjobs",operation="delete-orphan"} 1"#,
            r#"kube_write_refusals_total{resource="emrworkspaces",reason="Forbidden"} 1"#,
            r#"resource="memory_gibibytes",kind="used"} 1"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[test]
    fn cluster_states_are_a_state_set_per_listed_cluster() {
        let m = Metrics::default();
        let map = |v: &[(&str, &'static str)]| -> Arc<ClusterStateMap> {
            Arc::new(
                v.iter()
                    .map(|(id, s)| (id.to_string(), (format!("m-{id}"), *s)))
                    .collect(),
            )
        };
        m.cluster_state
            .set("ns", "ws", map(&[("a", "Running"), ("b", "Other")]));
        let text = m.encode();
        let line = |id: &str, state: &str, v: i64| {
            format!(
                "emr_ray_operator_cluster_state{{namespace=\"ns\",workspace=\"ws\",cluster_id=\"{id}\",name=\"m-{id}\",state=\"{state}\"}} {v}\n"
            )
        };
        assert!(text.contains("# TYPE emr_ray_operator_cluster_state gauge"));
        assert!(text.contains(&line("a", "Running", 1)), "{text}");
        assert!(text.contains(&line("a", "Error", 0)));
        // A state outside the documented five is `Other`, a series of its own.
        assert!(text.contains(&line("b", "Other", 1)));
        assert!(text.contains(&line("b", "Stopped", 0)));
        assert_eq!(m.cluster_state.len(), 2);
        assert_eq!(
            text.matches("emr_ray_operator_cluster_state{").count(),
            5 + 6
        );

        m.cluster_state.set("ns", "ws", map(&[("a", "Error")]));
        let text = m.encode();
        assert!(text.contains(&line("a", "Error", 1)));
        assert!(
            !text.contains("cluster_id=\"b\""),
            "a cluster gone drops its series"
        );
        m.cluster_state.remove("ns", "ws");
        assert!(m.cluster_state.is_empty());
        assert!(!m.encode().contains("emr_ray_operator_cluster_state{"));
    }

    #[test]
    fn the_exposition_is_one_text_with_escaped_remote_values() {
        let m = Metrics::default();
        m.reconciles.inc();
        let hostile = Arc::new(ClusterStateMap::from([(
            "a\"b\\c\nd".to_string(),
            ("m".to_string(), "Weird\"}"),
        )]));
        m.cluster_state.set("ns", "ws", hostile);
        let text = m.encode();
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
        assert!(text.contains("emr_ray_operator_reconciles_total 1\n"));
        assert!(
            text.contains("cluster_id=\"a\\\"b\\\\c\\nd\",name=\"m\",state=\"Weird\\\"}\"} 1\n")
        );
        // Every line is a comment or a sample: no value broke out of its quotes.
        for line in text.lines() {
            assert!(
                line.starts_with('#')
                    || line
                        .rsplit_once(' ')
                        .is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
                "{line}"
            );
        }
        let help: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
        assert!(help.iter().all(|l| l.ends_with('.')), "{help:?}");
    }
}
