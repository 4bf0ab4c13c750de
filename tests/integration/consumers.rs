//! The GitOps and alerting assets against their real consumers, on the real control plane with
//! the operator running against the EMR simulator:
//!
//! * kube-state-metrics (built from its Go module) with `deploy/kube-state-metrics/` (its
//!   RBAC and CustomResourceStateMetrics config) serves the series of workspaces and mirrors
//!   with the values the simulator serves;
//! * kstatus (cli-utils) and Argo CD's health Lua (gopher-lua) on objects read back from the
//!   API server;
//! * end to end: series scraped from the operator's `/metrics` and from kube-state-metrics
//!   while a cluster turns `Error`, a Ray job fails, a queue nears its maximum and the
//!   workspace's credentials go bad, replayed through `promtool test rules` against the shipped
//!   rules: the expected alerts fire.
//!
//! The Go tools come from `tests/tools/tools.sh` (see `consumer_tools`).

use crate::common;
use crate::consumer_tools;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use emr_ray_operator::api::{EmrRayCluster, EmrWorkspace};
use emr_ray_operator::controller::jobs::job_name;
use emr_ray_operator::controller::mirror::mirror_name;
use emr_ray_operator::emr::{ClusterState, QueueResources, RayJob, WorkspaceQueue};
use emr_sim::jobs::SimJob;
use emr_sim::{Faults, SimConfig, Simulator};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const KSM_CONFIG: &str = "deploy/kube-state-metrics/custom-resource-config.yaml";

// ---------------------------------------------------------------------------------------------
// Scraping
// ---------------------------------------------------------------------------------------------

/// A parsed scrape: samples and the `# TYPE` of each family.
#[derive(Debug, Clone, Default)]
struct Scrape {
    samples: Vec<common::Sample>,
    types: BTreeMap<String, String>,
    /// Unix time of the scrape, seconds.
    at: f64,
}

fn parse_exposition(text: &str) -> Scrape {
    let mut scrape = Scrape {
        at: jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
        ..Default::default()
    };
    for t in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut it = t.split_whitespace();
        if let (Some(n), Some(ty)) = (it.next(), it.next()) {
            scrape.types.insert(n.to_string(), ty.to_string());
        }
    }
    scrape.samples = common::parse_metrics(text);
    scrape
}

impl Scrape {
    /// Values of the samples called `name` whose labels include `want`.
    fn values(&self, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| want.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
            .collect()
    }

    /// The single value of `name{want...}`, if exactly one sample matches.
    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        match self.values(name, want).as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Family type of a sample name (`_total`, `_bucket`, ... suffixes resolved).
    fn type_of(&self, name: &str) -> &str {
        if let Some(t) = self.types.get(name) {
            return t;
        }
        for suffix in ["_total", "_bucket", "_count", "_sum", "_created", "_info"] {
            if let Some(t) = name.strip_suffix(suffix).and_then(|b| self.types.get(b)) {
                return t;
            }
        }
        "unknown"
    }
}

async fn scrape(url: &str) -> Option<Scrape> {
    let resp = reqwest::get(url).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(parse_exposition(&resp.text().await.ok()?))
}

/// Scrapes `url` until `ok` holds (a signal, never a fixed sleep).
async fn scrape_until<F>(url: &str, timeout: Duration, what: &str, ok: F) -> Scrape
where
    F: Fn(&Scrape) -> bool,
{
    common::wait_for(timeout, what, || async {
        scrape(url).await.filter(|s| ok(s))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// kube-state-metrics
// ---------------------------------------------------------------------------------------------

/// A running kube-state-metrics, authenticated as a ServiceAccount bound by
/// `deploy/kube-state-metrics/rbac.yaml` (so the shipped RBAC is what it runs with).
struct KubeStateMetrics {
    child: Child,
    url: String,
    binding: String,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

impl Drop for KubeStateMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KubeStateMetrics {
    async fn start(env: &Env) -> KubeStateMetrics {
        let client = env.client.clone();
        let ns = env.ns.name.as_str();
        let pp = PatchParams::apply(common::FIELD_MANAGER).force();
        // The shipped ClusterRole as is, its binding pointed at this test's ServiceAccount.
        let rbac =
            common::read_yaml_documents(&common::repo_root().join("deploy/kube-state-metrics"));
        let role = rbac
            .iter()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("rbac.yaml has a ClusterRole");
        let role_name = role["metadata"]["name"].as_str().unwrap();
        Api::<ClusterRole>::all(client.clone())
            .patch(role_name, &pp, &Patch::Apply(role))
            .await
            .expect("ClusterRole applied");
        let mut binding = rbac
            .iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .expect("rbac.yaml has a ClusterRoleBinding")
            .clone();
        assert_eq!(binding["roleRef"]["name"], role_name);
        let binding_name = format!("{}-{ns}", binding["metadata"]["name"].as_str().unwrap());
        binding["metadata"]["name"] = json!(binding_name);
        binding["subjects"][0]["namespace"] = json!(ns);
        let sa_name = binding["subjects"][0]["name"].as_str().unwrap().to_string();
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(&binding_name, &pp, &Patch::Apply(&binding))
            .await
            .expect("ClusterRoleBinding applied");
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
        sas.patch(
            &sa_name,
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": sa_name}})),
        )
        .await
        .expect("ServiceAccount applied");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = sa_kubeconfig(&client, ns, &sa_name, dir.path()).await;

        let port = common::free_port();
        let telemetry = common::free_port();
        let log_path =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kube-state-metrics-{ns}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(consumer_tools::bin("kube-state-metrics"))
            .current_dir(common::repo_root())
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--telemetry-host", "127.0.0.1"])
            .args(["--telemetry-port", &telemetry.to_string()])
            .arg("--custom-resource-state-only")
            .args(["--custom-resource-state-config-file", KSM_CONFIG])
            .args(["--namespaces", ns])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning kube-state-metrics");
        eprintln!(
            "kube-state-metrics on 127.0.0.1:{port}, log {}",
            log_path.display()
        );
        KubeStateMetrics {
            child,
            url: format!("http://127.0.0.1:{port}/metrics"),
            binding: binding_name,
            client,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(&self.binding, &DeleteParams::default())
            .await;
    }
}

/// A kubeconfig file for ServiceAccount `ns/sa` (TokenRequest), same server and CA as the
/// admin kubeconfig.
async fn sa_kubeconfig(client: &kube::Client, ns: &str, sa: &str, dir: &Path) -> PathBuf {
    let token = common::service_account_token(client, ns, sa).await;
    let admin_path = tokio::task::spawn_blocking(common::kubeconfig_path)
        .await
        .unwrap();
    let admin: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&admin_path).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    assert!(cluster.is_object(), "admin kubeconfig has no cluster");
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
        "current-context": "c",
    });
    let path = dir.join("kube-state-metrics.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}

fn with_labels<'a>(
    base: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

fn rfc3339_secs(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let ts: jiff::Timestamp = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    ts.as_millisecond() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_state_metrics_serves_workspace_and_mirror_series() {
    let mut env = Env::new("ksm").await;
    let generated = env.sim.state.generate(WS, 2, "ray-ksm");
    let queue = |name: &str, max: &str, used: &str| emr_ray_operator::emr::WorkspaceQueue {
        queue_name: Some(name.into()),
        max_resource: Some(max.into()),
        used_resource: Some(used.into()),
        ..Default::default()
    };
    env.sim.state.set_queues(
        WS,
        vec![
            queue(
                "root_queue",
                r#"{"cpu":"100","memory":"400Gi"}"#,
                r#"{"cpu":"95.5","memory":"8Gi"}"#,
            ),
            // No used cpu: no used series (not a 0).
            queue("dev_queue", r#"{"cpu":"16"}"#, r#"{"memory":"1Gi"}"#),
        ],
    );
    env.sim
        .state
        .set_state(WS, &generated[0], ClusterState::Error);
    env.sim
        .state
        .set_state(WS, &generated[1], ClusterState::Stopped);
    // 1h: no sync while the series are compared with the status.
    env.create_workspace("prod", json!({"syncInterval": "1h"}))
        .await;
    // (Its own remote workspace: two EmrWorkspaces for one remote workspace are duplicates.)
    env.create_workspace(
        "paused",
        json!({"suspend": true, "workspaceId": "w-paused"}),
    )
    .await;
    env.start();
    env.wait_ready("prod", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    env.wait_ready(
        "paused",
        "False",
        Some("Suspended"),
        Duration::from_secs(60),
    )
    .await;
    let remote = env.sim.state.clusters(WS);
    assert_eq!(remote.len(), 3);
    for c in &remote {
        let want = c.state.as_ref().unwrap().as_str().to_string();
        env.wait_mirror(&c.cluster_id, Duration::from_secs(30), "mirror", |m| {
            m.status.as_ref().and_then(|s| s.state.as_deref()) == Some(want.as_str())
        })
        .await;
    }
    let ksm = KubeStateMetrics::start(&env).await;
    let ns = env.ns.name.clone();
    let s = scrape_until(
        &ksm.url,
        Duration::from_secs(90),
        "kube-state-metrics to serve both workspaces and every mirror",
        |s| {
            s.get(
                "kube_emrworkspace_clusters",
                &[("namespace", &ns), ("workspace", "prod")],
            ) == Some(3.0)
                && s.get(
                    "kube_emrworkspace_suspended",
                    &[("namespace", &ns), ("workspace", "paused")],
                )
                .is_some()
                && s.values("kube_emrraycluster_gone", &[("namespace", &ns)])
                    .len()
                    == 3
        },
    )
    .await;

    // Workspaces: every series against the status the operator wrote.
    let ws = serde_json::to_value(env.workspaces().get("prod").await.unwrap()).unwrap();
    let st = &ws["status"];
    let wb = [("namespace", ns.as_str()), ("workspace", "prod")];
    let endpoint = st["endpoint"].as_str().unwrap();
    assert_eq!(
        s.get(
            "kube_emrworkspace_info",
            &with_labels(
                &wb,
                &[
                    ("workspace_id", WS),
                    ("region_id", "cn-hangzhou"),
                    ("endpoint", endpoint)
                ]
            )
        ),
        Some(1.0),
        "kube_emrworkspace_info"
    );
    for c in st["conditions"].as_array().unwrap() {
        let labels = with_labels(
            &wb,
            &[
                ("type", c["type"].as_str().unwrap()),
                ("status", c["status"].as_str().unwrap()),
                ("reason", c["reason"].as_str().unwrap()),
            ],
        );
        assert_eq!(
            s.get("kube_emrworkspace_condition", &labels),
            Some(1.0),
            "{labels:?}"
        );
    }
    assert_eq!(
        s.get(
            "kube_emrworkspace_condition",
            &with_labels(
                &wb,
                &[("type", "Ready"), ("status", "True"), ("reason", "Synced")]
            )
        ),
        Some(1.0),
        "kube_emrworkspace_condition"
    );
    assert_eq!(
        s.get("kube_emrworkspace_suspended", &with_labels(&wb, &[])),
        Some(0.0),
        "kube_emrworkspace_suspended"
    );
    assert_eq!(
        s.get(
            "kube_emrworkspace_consecutive_failures",
            &with_labels(&wb, &[])
        ),
        Some(0.0),
        "kube_emrworkspace_consecutive_failures"
    );
    let by_state: BTreeMap<String, usize> = remote.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.state.as_ref().unwrap().as_str().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(
        s.get("kube_emrworkspace_clusters", &with_labels(&wb, &[])),
        Some(remote.len() as f64),
        "kube_emrworkspace_clusters"
    );
    // Queues: status.queues[] quantities (cores as strings) become one series per queue.
    for (name, max, used) in [
        ("root_queue", Some(100.0), Some(95.5)),
        ("dev_queue", Some(16.0), None),
    ] {
        let l = with_labels(&wb, &[("queue", name)]);
        assert_eq!(
            s.get("kube_emrworkspace_queue_max_cpu", &l),
            max,
            "{name} max cpu"
        );
        assert_eq!(
            s.get("kube_emrworkspace_queue_used_cpu", &l),
            used,
            "{name} used cpu"
        );
    }
    assert_eq!(
        s.get("kube_emrworkspace_ready_clusters", &with_labels(&wb, &[])),
        Some(by_state.get("Running").copied().unwrap_or(0) as f64),
        "kube_emrworkspace_ready_clusters"
    );
    for (state, n) in &by_state {
        assert_eq!(
            s.get(
                "kube_emrworkspace_clusters_by_state",
                &with_labels(&wb, &[("state", state)])
            ),
            Some(*n as f64),
            "clusters_by_state {state}"
        );
    }
    assert_eq!(
        s.get(
            "kube_emrworkspace_last_successful_sync_timestamp_seconds",
            &with_labels(&wb, &[])
        ),
        Some(rfc3339_secs(&st["lastSuccessfulSyncTime"])),
        "kube_emrworkspace_last_successful_sync_timestamp_seconds"
    );
    assert_eq!(
        s.get(
            "kube_emrworkspace_last_sync_attempt_timestamp_seconds",
            &with_labels(&wb, &[])
        ),
        Some(rfc3339_secs(&st["lastSyncAttemptTime"])),
        "kube_emrworkspace_last_sync_attempt_timestamp_seconds"
    );
    // The suspended workspace.
    let p = [("namespace", ns.as_str()), ("workspace", "paused")];
    assert_eq!(
        s.get("kube_emrworkspace_suspended", &p),
        Some(1.0),
        "kube_emrworkspace_suspended"
    );
    assert_eq!(
        s.get(
            "kube_emrworkspace_condition",
            &[
                p[0],
                p[1],
                ("type", "Ready"),
                ("status", "False"),
                ("reason", "Suspended")
            ]
        ),
        Some(1.0),
        "kube_emrworkspace_condition"
    );

    // Mirrors: state from the simulator, the rest against the mirror's status.
    for c in &remote {
        let name = mirror_name(&c.cluster_id);
        let m = serde_json::to_value(env.mirrors().get(&name).await.unwrap()).unwrap();
        let ms = &m["status"];
        let lb = [
            ("namespace", ns.as_str()),
            ("name", name.as_str()),
            ("workspace", "prod"),
            ("cluster_id", c.cluster_id.as_str()),
        ];
        let state = c.state.as_ref().unwrap().as_str();
        for known in ClusterState::KNOWN {
            assert_eq!(
                s.get(
                    "kube_emrraycluster_state",
                    &with_labels(&lb, &[("state", known)])
                ),
                Some(if known == state { 1.0 } else { 0.0 }),
                "{name} state {known} (remote state {state})"
            );
        }
        assert_eq!(
            s.get(
                "kube_emrraycluster_info",
                &with_labels(
                    &lb,
                    &[
                        ("workspace_id", WS),
                        ("region_id", "cn-hangzhou"),
                        ("display_name", c.name.as_deref().unwrap_or_default()),
                        (
                            "release_version",
                            c.display_release_version.as_deref().unwrap_or_default()
                        ),
                    ]
                )
            ),
            Some(1.0),
            "{name} info"
        );
        for cond in ms["conditions"].as_array().unwrap() {
            let labels = with_labels(
                &lb,
                &[
                    ("type", cond["type"].as_str().unwrap()),
                    ("status", cond["status"].as_str().unwrap()),
                    ("reason", cond["reason"].as_str().unwrap()),
                ],
            );
            assert_eq!(
                s.get("kube_emrraycluster_condition", &labels),
                Some(1.0),
                "{labels:?}"
            );
        }
        assert_eq!(
            s.get("kube_emrraycluster_gone", &with_labels(&lb, &[])),
            Some(0.0),
            "kube_emrraycluster_gone"
        );
        assert_eq!(
            s.get(
                "kube_emrraycluster_desired_worker_replicas",
                &with_labels(&lb, &[])
            ),
            ms["desiredWorkerReplicas"].as_f64(),
            "{name} desired workers"
        );
    }
    ksm.stop().await;
    env.teardown().await;
}

// ---------------------------------------------------------------------------------------------
// kstatus and Argo CD health of real objects
// ---------------------------------------------------------------------------------------------

/// Every EmrWorkspace and EmrRayCluster of the namespace, as the API server returns them.
async fn read_back(env: &Env) -> Vec<Value> {
    let mut out = Vec::new();
    for (ar, kind) in [
        (ApiResource::erase::<EmrWorkspace>(&()), "EmrWorkspace"),
        (ApiResource::erase::<EmrRayCluster>(&()), "EmrRayCluster"),
    ] {
        let api = Api::<DynamicObject>::namespaced_with(env.client.clone(), &env.ns.name, &ar);
        for o in api.list(&ListParams::default()).await.unwrap().items {
            let mut v = serde_json::to_value(&o).unwrap();
            v["apiVersion"] = json!(ar.api_version);
            v["kind"] = json!(kind);
            out.push(v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_and_argocd_health_of_objects_read_back() {
    let mut env = Env::new("health").await;
    let ids = env.sim.state.generate(WS, 3, "ray-health");
    let states = [
        ClusterState::Starting,
        ClusterState::Error,
        ClusterState::Stopped,
    ];
    for (id, st) in ids.iter().zip(states.clone()) {
        env.sim.state.set_state(WS, id, st);
    }
    // A second simulator that throttles every request: its workspace keeps retrying.
    let throttling = Simulator::start(SimConfig::with_default_fixture())
        .await
        .unwrap();
    throttling.state.set_faults(Faults {
        throttle_rate: 1.0,
        ..Default::default()
    });
    let throttling_url = throttling
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_string();
    env.put_secret("bad-credentials", "LTAI5tUnknownKey", "whatever")
        .await;
    env.create_workspace("prod", json!({})).await;
    // (Each its own remote workspace: two EmrWorkspaces for one are duplicates.)
    env.create_workspace(
        "bad",
        json!({"workspaceId": "w-bad", "credentials": {"secretRef": {"name": "bad-credentials"}}}),
    )
    .await;
    env.create_workspace(
        "paused",
        json!({"suspend": true, "workspaceId": "w-paused"}),
    )
    .await;
    env.create_workspace(
        "throttled",
        json!({"endpoint": throttling_url, "workspaceId": "w-throttled"}),
    )
    .await;
    env.start();
    let t = Duration::from_secs(60);
    env.wait_ready("prod", "True", Some("Synced"), t).await;
    env.wait_ready("bad", "False", Some("AuthenticationFailed"), t)
        .await;
    env.wait_ready("paused", "False", Some("Suspended"), t)
        .await;
    env.wait_ready("throttled", "False", Some("Throttled"), t)
        .await;
    let mut want_state = vec![(EXAMPLE_CLUSTER.to_string(), "Running")];
    want_state.extend(ids.iter().cloned().zip(["Starting", "Error", "Stopped"]));
    for (id, st) in &want_state {
        env.wait_mirror(id, t, "mirror state", |m| {
            m.status.as_ref().and_then(|s| s.state.as_deref()) == Some(*st)
        })
        .await;
    }

    // (kind, name) -> (kstatus, Argo CD health)
    let mut want: BTreeMap<(String, String), (&str, &str)> = BTreeMap::new();
    let ws = |n: &str| ("EmrWorkspace".to_string(), n.to_string());
    let mirror = |id: &str| ("EmrRayCluster".to_string(), mirror_name(id));
    want.insert(ws("prod"), ("Current", "Healthy"));
    want.insert(ws("bad"), ("Failed", "Degraded"));
    // kstatus reads Ready=False as "still in progress" (it cannot tell suspended from
    // pending): a suspended workspace and a Stopped mirror are InProgress to Flux.
    want.insert(ws("paused"), ("InProgress", "Suspended"));
    want.insert(ws("throttled"), ("InProgress", "Progressing"));
    for (id, st) in &want_state {
        let w = match *st {
            "Running" => ("Current", "Healthy"),
            "Starting" => ("InProgress", "Progressing"),
            "Error" => ("Failed", "Degraded"),
            "Stopped" => ("InProgress", "Suspended"),
            _ => unreachable!(),
        };
        want.insert(mirror(id), w);
    }
    let objects = read_back(&env).await;
    check_consumers(&objects, &want);

    // A spec change the operator has not seen yet (stopped): observedGeneration < generation.
    for op in env.operators.drain(..) {
        op.stop().await;
    }
    env.workspaces()
        .patch(
            "prod",
            &PatchParams::apply("tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                "metadata": {"name": "prod"},
                "spec": {"regionId": "cn-hangzhou", "workspaceId": WS,
                         "endpoint": env.endpoint(),
                         "credentials": {"secretRef": {"name": "emr-credentials"}},
                         "syncInterval": "15s"},
            })),
        )
        .await
        .unwrap();
    let prod: Vec<Value> = read_back(&env)
        .await
        .into_iter()
        .filter(|o| o["kind"] == "EmrWorkspace" && o["metadata"]["name"] == "prod")
        .collect();
    assert!(
        prod[0]["status"]["observedGeneration"].as_i64()
            < prod[0]["metadata"]["generation"].as_i64(),
        "the spec change is not observed yet"
    );
    check_consumers(
        &prod,
        &BTreeMap::from([(ws("prod"), ("InProgress", "Progressing"))]),
    );
    throttling.shutdown().await;
    env.teardown().await;
}

/// Job mirrors (`spec.jobs`): kstatus and Argo CD health of each job state, and the
/// kube-state-metrics series of `deploy/kube-state-metrics/` for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mirrors_through_kstatus_argocd_health_and_kube_state_metrics() {
    use emr_ray_operator::api::EmrRayJob;

    let mut env = Env::new("health-jobs").await;
    let now = jiff::Timestamp::now().as_millisecond();
    // (state, kstatus, Argo CD health)
    let cases = [
        ("Succeeded", "Current", "Healthy"),
        ("Failed", "Failed", "Degraded"),
        ("Timeout", "Failed", "Degraded"),
        ("Submitted", "InProgress", "Progressing"),
        ("Pending", "InProgress", "Progressing"),
        ("Running", "InProgress", "Progressing"),
        ("Cancelling", "InProgress", "Progressing"),
        // kstatus reads Ready=False as in progress; Argo CD shows the final, deliberate state.
        ("Cancelled", "InProgress", "Suspended"),
    ];
    for (i, (state, _, _)) in cases.iter().enumerate() {
        env.sim.state.upsert_job(
            WS,
            SimJob {
                job: RayJob {
                    submission_id: format!("raysubmit_{}", state.to_lowercase()),
                    status: Some(state.to_string()),
                    submit_time: Some(now - 60_000 * (i as i64 + 1)),
                    cu_hours: Some(0.25),
                    ..Default::default()
                },
                task_biz_id: None,
            },
        );
    }
    env.create_workspace(
        "prod",
        json!({"syncInterval": "1h", "jobs": {"enabled": true}}),
    )
    .await;
    env.start();
    let jobs: Api<EmrRayJob> = Api::namespaced(env.client.clone(), &env.ns.name);
    common::wait_for(Duration::from_secs(60), "every job mirrored", || async {
        let l = jobs.list(&ListParams::default()).await.unwrap().items;
        (l.len() == cases.len() && l.iter().all(|j| j.status.is_some())).then_some(())
    })
    .await;

    let ar = ApiResource::erase::<EmrRayJob>(&());
    let api = Api::<DynamicObject>::namespaced_with(env.client.clone(), &env.ns.name, &ar);
    let objects: Vec<Value> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| {
            let mut v = serde_json::to_value(&o).unwrap();
            v["apiVersion"] = json!(ar.api_version);
            v["kind"] = json!("EmrRayJob");
            v
        })
        .collect();
    let want: BTreeMap<(String, String), (&str, &str)> = cases
        .iter()
        .map(|(state, k, h)| {
            let name = job_name(&format!("raysubmit_{}", state.to_lowercase()));
            (("EmrRayJob".to_string(), name), (*k, *h))
        })
        .collect();
    check_consumers(&objects, &want);

    // kube-state-metrics: one state series per job, 1 for its status.
    let ksm = KubeStateMetrics::start(&env).await;
    let ns = env.ns.name.clone();
    let s = scrape_until(
        &ksm.url,
        Duration::from_secs(90),
        "kube-state-metrics to serve every job mirror",
        |s| {
            s.values(
                "kube_emrrayjob_state",
                &[("namespace", &ns), ("state", "Failed")],
            )
            .len()
                == cases.len()
        },
    )
    .await;
    for (state, _, _) in &cases {
        let id = format!("raysubmit_{}", state.to_lowercase());
        let name = job_name(&id);
        let labels = [
            ("namespace", ns.as_str()),
            ("name", name.as_str()),
            ("workspace", "prod"),
            ("submission_id", id.as_str()),
        ];
        assert_eq!(
            s.get(
                "kube_emrrayjob_state",
                &with_labels(&labels, &[("state", state)])
            ),
            Some(1.0),
            "{state}"
        );
        let other = if *state == "Failed" {
            "Succeeded"
        } else {
            "Failed"
        };
        assert_eq!(
            s.get(
                "kube_emrrayjob_state",
                &with_labels(&labels, &[("state", other)])
            ),
            Some(0.0),
            "{state}"
        );
        assert_eq!(s.get("kube_emrrayjob_cu_hours", &labels), Some(0.25));
    }
    ksm.stop().await;
    env.teardown().await;
}

fn check_consumers(objects: &[Value], want: &BTreeMap<(String, String), (&str, &str)>) {
    let kstatus = consumer_tools::kstatus(objects);
    let health = consumer_tools::argocd_health(
        &common::repo_root().join("deploy/argocd/health.lua"),
        objects,
    );
    let mut seen = BTreeSet::new();
    for (k, h) in kstatus.iter().zip(&health) {
        let key = (k.kind.clone(), k.name.clone());
        assert_eq!(k.error, None, "kstatus failed for {key:?}");
        assert_eq!(h.error, None, "health.lua failed in gopher-lua for {key:?}");
        eprintln!(
            "{:<14} {:<32} kstatus {:<11} Argo CD {:<12} {}",
            key.0, key.1, k.status, h.status, h.message
        );
        let (want_k, want_h) = want
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected object {key:?}"));
        assert_eq!(k.status, *want_k, "kstatus of {key:?}: {}", k.message);
        assert_eq!(
            h.status, *want_h,
            "Argo CD health of {key:?}: {}",
            h.message
        );
        seen.insert(key);
    }
    let missing: Vec<_> = want.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "objects not read back: {missing:?}");
}

// ---------------------------------------------------------------------------------------------
// Alerts, end to end
// ---------------------------------------------------------------------------------------------

/// promtool's scrape interval in the replay: minute `m` of the timeline.
const HEALTHY_MINUTES: usize = 5;
const TIMELINE_MINUTES: usize = 35;
const EVAL_BROKEN: &str = "30m";
const EVAL_HEALTHY: &str = "4m";
/// Five minutes into the break: for alerts that resolve before [`EVAL_BROKEN`] (a failure
/// counted once).
const EVAL_EARLY: &str = "10m";

/// Escapes a label value for a promtool series selector.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn series_key(s: &common::Sample) -> String {
    let mut labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    labels.sort();
    format!("{}{{{}}}", s.name, labels.join(","))
}

/// promtool `input_series` replaying real scrapes on a 1m timeline: minutes
/// `0..HEALTHY_MINUTES` repeat the healthy scrape, the rest the broken one. A counter grows
/// each minute by what it grew between the two broken scrapes; a `*_timestamp_seconds` gauge
/// keeps its age (it moves with the clock if it moved between the broken scrapes, else it stays
/// where it was at the break); a series that disappears gets a staleness marker, as a real
/// scrape would give it.
fn replay(healthy: &Scrape, broken1: &Scrape, broken2: &Scrape, prefix: &str) -> Vec<Value> {
    let index = |s: &Scrape| -> BTreeMap<String, f64> {
        s.samples
            .iter()
            .filter(|x| x.name.starts_with(prefix))
            .map(|x| (series_key(x), x.value))
            .collect()
    };
    let (h, b1, b2) = (index(healthy), index(broken1), index(broken2));
    let names: BTreeMap<String, String> = [healthy, broken2]
        .iter()
        .flat_map(|s| s.samples.iter())
        .map(|x| (series_key(x), x.name.clone()))
        .collect();
    let keys: BTreeSet<&String> = h.keys().chain(b2.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let name = &names[key];
        let is_counter = broken2.type_of(name) == "counter" || name.ends_with("_total");
        let is_time = name.ends_with("_timestamp_seconds");
        let mut values = Vec::new();
        let mut present_before = false;
        for m in 0..=TIMELINE_MINUTES {
            let t = (m * 60) as f64;
            let v = if m < HEALTHY_MINUTES {
                h.get(key)
                    .map(|v| if is_time { t - (healthy.at - v) } else { *v })
            } else {
                b2.get(key).map(|v| {
                    let k = (m - HEALTHY_MINUTES) as f64;
                    let prev = b1.get(key).copied().unwrap_or(*v);
                    if is_time {
                        if *v != prev {
                            t - (broken2.at - v)
                        } else {
                            (HEALTHY_MINUTES * 60) as f64 - (broken2.at - v)
                        }
                    } else if is_counter {
                        v + k * (v - prev).max(0.0)
                    } else {
                        *v
                    }
                })
            };
            values.push(match v {
                Some(v) => {
                    present_before = true;
                    format!("{v}")
                }
                None if present_before => {
                    present_before = false;
                    "stale".to_string()
                }
                None => "_".to_string(),
            });
        }
        out.push(json!({"series": key, "values": values.join(" ")}));
    }
    out
}

/// A copy of a shipped rules file without annotations (their text is covered by the unit
/// tests in deploy/prometheus/tests/); expressions, `for:` and labels unchanged.
fn without_annotations(rel: &str, dir: &Path) -> PathBuf {
    let mut doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(common::repo_root().join(rel)).unwrap())
            .unwrap();
    for g in doc["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    let path = dir.join(Path::new(rel).file_name().unwrap());
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

fn alerts_in(rules: &Path) -> Vec<(String, String)> {
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(rules).unwrap()).unwrap();
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| {
            Some((
                r["alert"].as_str()?.to_string(),
                r["labels"]["severity"].as_str()?.to_string(),
            ))
        })
        .collect()
}

type Firing<'a> = BTreeMap<&'a str, Vec<(&'a str, String)>>;

/// Writes and runs a promtool test: no alert on the healthy minutes, exactly `firing` (alert
/// name -> its labels without severity) at `EVAL_BROKEN`, every other alert silent; and each
/// alert of `early` firing with its labels at `EVAL_EARLY` (the others are not looked at then).
fn promtool_replay(
    rules: &Path,
    input: Vec<Value>,
    firing: &Firing,
    early: &Firing,
    dir: &Path,
) -> String {
    let alerts = alerts_in(rules);
    let mut cases = Vec::new();
    let expect = |labels: Option<&Vec<(&str, String)>>, severity: &String| match labels {
        Some(labels) => {
            let mut l: BTreeMap<&str, String> = labels.iter().cloned().collect();
            l.insert("severity", severity.clone());
            json!([{"exp_labels": l}])
        }
        None => json!([]),
    };
    for (alert, severity) in &alerts {
        cases.push(json!({"eval_time": EVAL_HEALTHY, "alertname": alert, "exp_alerts": []}));
        let exp = expect(firing.get(alert.as_str()), severity);
        cases.push(json!({"eval_time": EVAL_BROKEN, "alertname": alert, "exp_alerts": exp}));
        if let Some(labels) = early.get(alert.as_str()) {
            let exp = expect(Some(labels), severity);
            cases.push(json!({"eval_time": EVAL_EARLY, "alertname": alert, "exp_alerts": exp}));
        }
    }
    for want in firing.keys().chain(early.keys()) {
        assert!(
            alerts.iter().any(|(a, _)| a == want),
            "{} has no alert {want}",
            rules.display()
        );
    }
    let test = json!({
        "rule_files": [rules.to_str().unwrap()],
        "evaluation_interval": "1m",
        "tests": [{"name": "scraped while a cluster turns Error and credentials go bad",
                   "interval": "1m", "input_series": input, "alert_rule_test": cases}],
    });
    let file = dir.join(format!(
        "{}.e2e.test.yaml",
        rules.file_stem().unwrap().to_str().unwrap()
    ));
    std::fs::write(&file, serde_yaml::to_string(&test).unwrap()).unwrap();
    let out = consumer_tools::promtool(&["test", "rules", file.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool test rules {} failed:\n{text}",
        file.display()
    );
    text
}

fn report(source: &str, rules: &str, promtool: &str, firing: &Firing, early: &Firing) {
    let verdict = promtool
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    eprintln!("{source} -> {rules}: promtool test rules {verdict}");
    eprintln!("  at {EVAL_HEALTHY} (healthy): no alert");
    for (at, alerts) in [(EVAL_EARLY, early), (EVAL_BROKEN, firing)] {
        for (alert, labels) in alerts {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            eprintln!("  at {at}: {alert}{{{}}} firing", l.join(","));
        }
    }
}

/// A Ray job of the alert test, submitted ten minutes before `now_ms`.
fn alert_job(id: &str, status: &str, now_ms: i64) -> SimJob {
    SimJob {
        job: RayJob {
            submission_id: id.into(),
            name: Some(format!("etl-{id}")),
            status: Some(status.into()),
            resource_queue: Some("root_queue".into()),
            submit_time: Some(now_ms - 600_000),
            ..Default::default()
        },
        task_biz_id: None,
    }
}

/// A queue of the alert test: `max_cpu` cores and 64 GiB, `used_cpu` cores and 8 GiB in use.
fn alert_queue(name: &str, max_cpu: f64, used_cpu: f64) -> WorkspaceQueue {
    let wire = |cpu: f64, memory_gi: f64| {
        QueueResources {
            cpu: Some(cpu),
            memory_gi: Some(memory_gi),
            gpu: Some(0.0),
        }
        .to_wire()
    };
    WorkspaceQueue {
        queue_name: Some(name.into()),
        queue_status: Some("RUNNING".into()),
        max_resource: Some(wire(max_cpu, 64.0)),
        used_resource: Some(wire(used_cpu, 8.0)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_end_to_end_from_scraped_series() {
    let mut env = Env::new("alerts").await;
    // Job mirrors on, with a succeeded job; two queues well below their maximum.
    let now = jiff::Timestamp::now().as_millisecond();
    env.sim
        .state
        .upsert_job(WS, alert_job("raysubmit_fine", "Succeeded", now));
    env.sim.state.set_queues(
        WS,
        vec![
            alert_queue("root_queue", 16.0, 2.0),
            alert_queue("dev_queue", 16.0, 1.0),
        ],
    );
    let port = common::free_port();
    let mut cfg = operator_config(&env.ns.name);
    cfg.metrics_addr = Some(([127, 0, 0, 1], port).into());
    env.operators.push(start_operator(&env.client, cfg));
    env.create_workspace(
        "prod",
        json!({"jobs": {"enabled": true, "retention": "24h"}}),
    )
    .await;
    env.wait_ready("prod", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    let ksm = KubeStateMetrics::start(&env).await;
    let ns = env.ns.name.clone();
    let op_url = format!("http://127.0.0.1:{port}/metrics");
    let name = mirror_name(EXAMPLE_CLUSTER);
    let wl = [("namespace", ns.as_str()), ("workspace", "prod")];
    let ml = [("namespace", ns.as_str()), ("name", name.as_str())];
    let root_cpu = |kind| {
        [
            wl[0],
            wl[1],
            ("queue", "root_queue"),
            ("resource", "cpu"),
            ("kind", kind),
        ]
    };
    let ksm_root = [wl[0], wl[1], ("queue", "root_queue")];
    let failed_id = "raysubmit_broken";
    let failed_name = job_name(failed_id);
    let fine_name = job_name("raysubmit_fine");

    // Healthy.
    let op_h = scrape_until(&op_url, Duration::from_secs(30), "operator: Ready", |s| {
        s.get("emr_ray_operator_workspace_ready", &wl) == Some(1.0)
            && s.get(
                "emr_ray_operator_cluster_state",
                &[ml[0], ml[1], ("state", "Running")],
            ) == Some(1.0)
            && s.get("emr_ray_operator_job_failures_total", &wl) == Some(0.0)
            && s.get("emr_ray_operator_workspace_jobs", &wl) == Some(1.0)
            && s.get("emr_ray_operator_queue_resource", &root_cpu("used")) == Some(2.0)
    })
    .await;
    let ksm_h = scrape_until(&ksm.url, Duration::from_secs(90), "ksm: Ready", |s| {
        s.get(
            "kube_emrworkspace_condition",
            &[wl[0], wl[1], ("type", "Ready"), ("status", "True")],
        ) == Some(1.0)
            && s.get(
                "kube_emrraycluster_state",
                &[ml[0], ml[1], ("state", "Running")],
            ) == Some(1.0)
            && s.get(
                "kube_emrrayjob_state",
                &[wl[0], ("name", fine_name.as_str()), ("state", "Succeeded")],
            ) == Some(1.0)
            && s.get("kube_emrworkspace_queue_used_cpu", &ksm_root) == Some(2.0)
    })
    .await;

    // Break: the remote cluster turns Error, a job fails and a queue nears its maximum CPU;
    // then the workspace's credentials go bad.
    let started = Instant::now();
    env.sim
        .state
        .set_state(WS, EXAMPLE_CLUSTER, ClusterState::Error);
    env.sim
        .state
        .upsert_job(WS, alert_job(failed_id, "Failed", now));
    env.sim.state.set_queue_usage(
        WS,
        "root_queue",
        QueueResources {
            cpu: Some(15.5),
            memory_gi: Some(8.0),
            gpu: Some(0.0),
        }
        .to_wire(),
    );
    env.wait_mirror(
        EXAMPLE_CLUSTER,
        Duration::from_secs(40),
        "mirror in Error",
        |m| m.status.as_ref().and_then(|s| s.state.as_deref()) == Some("Error"),
    )
    .await;
    // The failed job and the queue's use reached the operator before the credentials go bad.
    scrape_until(
        &op_url,
        Duration::from_secs(60),
        "operator: the job failure and the queue's use seen",
        |s| {
            s.get("emr_ray_operator_job_failures_total", &wl) == Some(1.0)
                && s.get("emr_ray_operator_queue_resource", &root_cpu("used")) == Some(15.5)
        },
    )
    .await;
    env.put_secret("emr-credentials", "LTAI5tUnknownKey", "whatever")
        .await;
    let failures = |s: &Scrape| {
        s.get(
            "emr_ray_operator_sync_failures_total",
            &[wl[0], wl[1], ("reason", "AuthenticationFailed")],
        )
        .unwrap_or(0.0)
    };
    let broken_op = |s: &Scrape| {
        failures(s) >= 1.0
            && s.get("emr_ray_operator_workspace_ready", &wl) == Some(0.0)
            && s.get(
                "emr_ray_operator_cluster_state",
                &[ml[0], ml[1], ("state", "Error")],
            ) == Some(1.0)
            && s.get("emr_ray_operator_job_failures_total", &wl) == Some(1.0)
            && s.get("emr_ray_operator_queue_resource", &root_cpu("used")) == Some(15.5)
    };
    let op_b1 = scrape_until(
        &op_url,
        Duration::from_secs(60),
        "operator: failing",
        broken_op,
    )
    .await;
    let ksm_failures = |s: &Scrape| {
        s.get("kube_emrworkspace_consecutive_failures", &wl)
            .unwrap_or(0.0)
    };
    let broken_ksm = |s: &Scrape| {
        s.get(
            "kube_emrworkspace_condition",
            &[
                wl[0],
                wl[1],
                ("type", "Ready"),
                ("status", "False"),
                ("reason", "AuthenticationFailed"),
            ],
        ) == Some(1.0)
            && s.get(
                "kube_emrraycluster_state",
                &[ml[0], ml[1], ("state", "Error")],
            ) == Some(1.0)
            && s.get(
                "kube_emrrayjob_state",
                &[wl[0], ("name", failed_name.as_str()), ("state", "Failed")],
            ) == Some(1.0)
            && s.get("kube_emrworkspace_queue_used_cpu", &ksm_root) == Some(15.5)
    };
    let ksm_b1 = scrape_until(&ksm.url, Duration::from_secs(60), "ksm: failing", |s| {
        broken_ksm(s) && ksm_failures(s) >= 1.0
    })
    .await;
    // A second broken scrape each, after at least one more failed listing.
    let f1 = failures(&op_b1);
    let op_b2 = scrape_until(
        &op_url,
        Duration::from_secs(60),
        "operator: one more failure",
        |s| broken_op(s) && failures(s) > f1,
    )
    .await;
    let k1 = ksm_failures(&ksm_b1);
    let ksm_b2 = scrape_until(
        &ksm.url,
        Duration::from_secs(60),
        "ksm: one more failure",
        |s| {
            // EmrWorkspaceSyncFailing (kube-state-metrics) needs three in a row.
            broken_ksm(s) && ksm_failures(s) > k1 && ksm_failures(s) >= 3.0
        },
    )
    .await;
    eprintln!(
        "broken series scraped {:?} after the break",
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let cluster = [
        ("namespace", ns.clone()),
        ("workspace", "prod".to_string()),
        ("name", name.clone()),
        ("cluster_id", EXAMPLE_CLUSTER.to_string()),
    ];
    let workspace = [("namespace", ns.clone()), ("workspace", "prod".to_string())];
    let with = |base: &[(&'static str, String)], extra: &[(&'static str, &str)]| {
        let mut v = base.to_vec();
        v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
        v
    };

    // The operator's metrics through deploy/prometheus/rules.yaml (= the chart's
    // PrometheusRule).
    let rules = without_annotations("deploy/prometheus/rules.yaml", dir.path());
    let input = replay(&op_h, &op_b1, &op_b2, "emr_ray_operator_");
    let firing = BTreeMap::from([
        ("EmrRayClusterError", cluster.to_vec()),
        (
            "EmrWorkspaceSyncFailing",
            with(&workspace, &[("reason", "AuthenticationFailed")]),
        ),
        ("EmrWorkspaceNotReady", workspace.to_vec()),
        ("EmrWorkspaceSyncStale", workspace.to_vec()),
        (
            "EmrQueueNearCapacity",
            with(&workspace, &[("queue", "root_queue"), ("resource", "cpu")]),
        ),
    ]);
    // The failure counted at the break fires at once and resolves 15 minutes later: silent at
    // EVAL_BROKEN (not in `firing`), as its promtool tests say.
    let early = BTreeMap::from([("EmrRayJobFailed", workspace.to_vec())]);
    let out = promtool_replay(&rules, input, &firing, &early, dir.path());
    report(
        "operator /metrics",
        "deploy/prometheus/rules.yaml",
        &out,
        &firing,
        &early,
    );

    // kube-state-metrics through deploy/prometheus/kube-state-metrics-rules.yaml.
    let rules = without_annotations(
        "deploy/prometheus/kube-state-metrics-rules.yaml",
        dir.path(),
    );
    let input = replay(&ksm_h, &ksm_b1, &ksm_b2, "kube_emr");
    let firing = BTreeMap::from([
        ("EmrRayClusterError", cluster.to_vec()),
        ("EmrWorkspaceSyncFailing", workspace.to_vec()),
        (
            "EmrWorkspaceNotReady",
            with(&workspace, &[("reason", "AuthenticationFailed")]),
        ),
        ("EmrWorkspaceSyncStale", workspace.to_vec()),
        (
            "EmrRayJobFailed",
            vec![
                ("namespace", ns.clone()),
                ("name", failed_name.clone()),
                ("workspace", "prod".to_string()),
                ("submission_id", failed_id.to_string()),
            ],
        ),
        (
            "EmrQueueNearCapacity",
            with(&workspace, &[("queue", "root_queue")]),
        ),
    ]);
    let out = promtool_replay(&rules, input, &firing, &BTreeMap::new(), dir.path());
    report(
        "kube-state-metrics",
        "deploy/prometheus/kube-state-metrics-rules.yaml",
        &out,
        &firing,
        &BTreeMap::new(),
    );

    ksm.stop().await;
    env.teardown().await;
}
