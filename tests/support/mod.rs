//! Operator test environment shared by the end-to-end test files: a test namespace on the real
//! control plane, the EMR simulator on a loopback port, and the operator running in-process.

use std::sync::Arc;
use std::time::Duration;

use emr_ray_operator::api::{
    Condition, ConditionType, EmrRayCluster, EmrWorkspace, EmrWorkspaceStatus,
};
use emr_ray_operator::emr::Credentials;
use emr_ray_operator::metrics::Metrics;
use emr_ray_operator::operator::{self, OperatorConfig};
use emr_sim::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_WORKSPACE, SimConfig, SimHandle,
    Simulator,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{self, TestNamespace};

pub const WS: &str = DEFAULT_WORKSPACE;
pub const EXAMPLE_CLUSTER: &str = "ray-uiulpgow9xljimm1";

/// The EMR simulator on a loopback port, serving the reference example.
pub async fn sim() -> SimHandle {
    Simulator::start(SimConfig::with_default_fixture())
        .await
        .expect("simulator starts")
}

/// The simulator's default credentials.
#[allow(
    dead_code,
    reason = "the serial tests reach the simulator through the operator only"
)]
pub fn creds() -> Credentials {
    Credentials::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)
}

pub struct Env {
    pub ns: TestNamespace,
    pub client: kube::Client,
    pub sim: SimHandle,
    pub operators: Vec<Operator>,
}

pub struct Operator {
    pub token: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    pub async fn stop(self) {
        self.token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }

    /// Kubernetes writes this replica made (from its own metrics).
    pub fn writes(&self) -> u64 {
        self.metric("emr_ray_operator_kube_writes_total", &[]) as u64
    }

    /// Writes of this replica to `resource` (`emrrayclusters`, `emrworkspaces`).
    pub fn writes_to(&self, resource: &str) -> u64 {
        writes_in(&self.metrics.encode(), resource)
    }

    /// Sum of this replica's samples of `name` with the labels of `filter`.
    pub fn metric(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        common::metric_sum(&self.metrics.encode(), name, filter)
    }

    /// Remote listings this replica attempted for workspace `ws` (all namespaces).
    #[allow(dead_code, reason = "not used by the serial tests")]
    pub fn sync_attempts(&self, ws: &str) -> u64 {
        self.metric("emr_ray_operator_sync_attempts_total", &[("workspace", ws)]) as u64
    }
}

/// The operator's Kubernetes writes to `resource` in the text of its metrics (of a replica in
/// this process: [`Operator::writes_to`]; of an operator process: its `/metrics`).
pub fn writes_in(metrics_text: &str, resource: &str) -> u64 {
    common::metric_sum(
        metrics_text,
        "emr_ray_operator_kube_writes_total",
        &[("resource", resource)],
    ) as u64
}

pub fn operator_config(ns: &str) -> OperatorConfig {
    OperatorConfig {
        namespaces: vec![ns.to_string()],
        concurrency: 4,
        requests_per_second: 50.0,
        burst: 50,
        request_timeout: Duration::from_secs(2),
        listing_timeout: Duration::from_secs(20),
        // The simulator runs on loopback.
        allowed_endpoints: vec!["http://127.0.0.1:*".parse().unwrap()],
        ..OperatorConfig::embedded("test")
    }
}

pub fn start_operator(client: &kube::Client, cfg: OperatorConfig) -> Operator {
    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(operator::run(
        client.clone(),
        cfg,
        metrics.clone(),
        token.clone(),
    ));
    Operator {
        token,
        metrics,
        task,
    }
}

impl Env {
    /// `ListRayCluster` requests the simulator has answered.
    #[allow(dead_code, reason = "used by the serial tests only")]
    pub fn cluster_listings(&self) -> u64 {
        self.sim
            .state
            .stats()
            .by_action
            .get(emr_ray_operator::emr::ACTION_LIST_RAY_CLUSTER)
            .copied()
            .unwrap_or(0)
    }

    /// Namespace + CRDs + simulator (reference example) + credentials Secret; no operator yet.
    pub async fn new(prefix: &str) -> Env {
        Self::on(common::client().await, prefix).await
    }

    /// Like [`Env::new`], on the control plane of `client`.
    pub async fn on(client: kube::Client, prefix: &str) -> Env {
        let ns = TestNamespace::create_on(client.clone(), prefix).await;
        common::install_crds(&client).await;
        let sim = sim().await;
        let env = Env {
            ns,
            client,
            sim,
            operators: Vec::new(),
        };
        env.put_secret(
            "emr-credentials",
            DEFAULT_ACCESS_KEY_ID,
            DEFAULT_ACCESS_KEY_SECRET,
        )
        .await;
        env
    }

    pub fn start(&mut self) {
        let op = start_operator(&self.client, operator_config(&self.ns.name));
        self.operators.push(op);
    }

    pub async fn put_secret(&self, name: &str, id: &str, secret: &str) {
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .patch(
                name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                    "stringData": {"accessKeyId": id, "accessKeySecret": secret},
                })),
            )
            .await
            .expect("secret applied");
    }

    pub fn endpoint(&self) -> String {
        self.sim
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_string()
    }

    /// Creates an EmrWorkspace for the simulator's default workspace; `extra` is merged into
    /// the spec.
    pub async fn create_workspace(&self, name: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "regionId": "cn-hangzhou",
            "workspaceId": WS,
            "endpoint": self.endpoint(),
            "credentials": {"secretRef": {"name": "emr-credentials"}},
            "syncInterval": "10s",
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        self.workspaces()
            .patch(
                name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(json!({
                    "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                    "metadata": {"name": name}, "spec": spec,
                })),
            )
            .await
            .expect("workspace applied");
    }

    /// Waits until the garbage collector demonstrably watches both CRDs: it orphans a probe
    /// mirror when its probe workspace is deleted with `propagationPolicy: Orphan`.
    ///
    /// The garbage collector finds new resources by rediscovery (every 30 s) and orphans only
    /// the dependents its own graph already holds: a workspace deleted before it watches
    /// `emrrayclusters` loses its orphan finalizer with the mirrors still owned, and they are
    /// then collected as garbage instead. Call this before the operator starts (the probe
    /// workspace would be synced) and before a test relies on `--cascade=orphan`.
    #[allow(dead_code, reason = "not used by the serial tests")]
    pub async fn wait_garbage_collector_watches_crds(&self) {
        let mirrors = self.mirrors();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        // Each attempt is a probe of its own; between them the collector gets 5 s to learn
        // the resource.
        let probe = || async {
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let name = format!("gc-probe-{attempt}");
            self.create_workspace(&name, json!({"workspaceId": format!("w-{name}")}))
                .await;
            let uid = self
                .workspaces()
                .get(&name)
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap();
            let probe: EmrRayCluster = serde_json::from_value(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrRayCluster",
                "metadata": {"name": name, "ownerReferences": [{
                    "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                    "name": name, "uid": uid, "controller": true,
                }]},
                "spec": {"workspaceRef": name, "workspaceId": format!("w-{name}"),
                         "regionId": "cn-hangzhou", "clusterId": name},
            }))
            .unwrap();
            mirrors
                .create(&Default::default(), &probe)
                .await
                .expect("probe mirror");
            self.workspaces()
                .delete(&name, &kube::api::DeleteParams::orphan())
                .await
                .expect("delete probe workspace");
            // Orphaned: gone workspace, probe without owner. Collected (or still owned after
            // the workspace went): the collector did not know the mirror yet; try again.
            let orphaned =
                common::wait_for(Duration::from_secs(60), "probe workspace gone", || async {
                    let gone = self.workspaces().get_opt(&name).await.unwrap().is_none();
                    let m = mirrors.get_opt(&name).await.unwrap();
                    gone.then(|| {
                        m.is_some_and(|m| {
                            m.metadata.owner_references.unwrap_or_default().is_empty()
                        })
                    })
                })
                .await;
            let _ = mirrors.delete(&name, &Default::default()).await;
            if orphaned {
                Ok(())
            } else {
                eprintln!("garbage-collector probe {attempt}: the probe mirror was not orphaned");
                Err(attempt)
            }
        };
        common::poll(Duration::from_secs(180), Duration::from_secs(5), probe)
            .await
            .unwrap_or_else(|n| {
                panic!("the garbage collector never orphaned a probe mirror ({n} attempts)")
            });
    }

    pub fn workspaces(&self) -> Api<EmrWorkspace> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub fn mirrors(&self) -> Api<EmrRayCluster> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn mirror_list(&self) -> Vec<EmrRayCluster> {
        self.mirrors()
            .list(&ListParams::default())
            .await
            .expect("list mirrors")
            .items
    }

    pub async fn status(&self, name: &str) -> EmrWorkspaceStatus {
        self.workspaces()
            .get(name)
            .await
            .expect("get workspace")
            .status
            .unwrap_or_default()
    }

    /// Waits until the workspace's Ready condition has `status` (and `reason`, if given).
    pub async fn wait_ready(
        &self,
        name: &str,
        status: &str,
        reason: Option<&str>,
        timeout: Duration,
    ) -> EmrWorkspaceStatus {
        let what = format!("workspace {name} Ready={status} reason={reason:?}");
        common::wait_for(timeout, &what, || async {
            let st = self.status(name).await;
            let ok = st.conditions.iter().any(|c| {
                c.type_ == ConditionType::Ready
                    && c.status.as_str() == status
                    && reason.is_none_or(|r| c.reason == r)
            });
            ok.then_some(st)
        })
        .await
    }

    /// Waits until a sync of workspace `name` by operator `op` that starts after this call has
    /// finished (its mirror and status writes included).
    pub async fn wait_next_sync(&self, op: usize, name: &str, timeout: Duration) {
        let metrics = self.operators[op].metrics.clone();
        common::wait_next_sync(timeout, name, move || {
            let text = metrics.encode();
            async move { Some(text) }
        })
        .await
    }

    /// Waits until the mirror of `cluster_id` exists and satisfies `pred`.
    pub async fn wait_mirror<F>(
        &self,
        cluster_id: &str,
        timeout: Duration,
        what: &str,
        pred: F,
    ) -> EmrRayCluster
    where
        F: Fn(&EmrRayCluster) -> bool,
    {
        let name = emr_ray_operator::controller::mirror::mirror_name(cluster_id);
        common::wait_for(timeout, what, || async {
            match self.mirrors().get_opt(&name).await.expect("get mirror") {
                Some(m) if m.status.is_some() && pred(&m) => Some(m),
                _ => None,
            }
        })
        .await
    }

    pub async fn teardown(self) {
        for op in self.operators {
            op.stop().await;
        }
        self.sim.shutdown().await;
        self.ns.cleanup().await;
    }
}

/// The mirror's status without the `Synced` condition (which says whether data is current).
pub fn data_of(m: &EmrRayCluster) -> serde_json::Value {
    let mut s = serde_json::to_value(m.status.clone().unwrap_or_default()).unwrap();
    if let Some(conds) = s.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        conds.retain(|c| c["type"] != "Synced");
    }
    s
}

pub fn condition<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_.as_str() == type_)
}
