//! GitOps and alerting assets in `deploy/` and the chart, checked with their real consumers
//! where one exists: the Argo CD health check runs in gopher-lua with Argo CD's library set, the
//! Prometheus rules go through `promtool check rules` and `promtool test rules` (unit tests in
//! `deploy/prometheus/tests/`, one firing and one silent case per alert, enforced here), and
//! their metric names are checked against what the operator exports; the kube-state-metrics
//! configuration's paths are checked against the CRD schemas (`tests/consumers.rs` runs the
//! real kube-state-metrics). No control plane needed; the Go tools are built by
//! `tests/tools/tools.sh` (cached in `.cache/bin`).

use crate::common;
use crate::consumer_tools;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use emr_ray_operator::api::{Condition, EmrRayClusterStatus};
use emr_ray_operator::controller::mirror::{Staleness, mirror_conditions};
use emr_ray_operator::metrics::{
    CodeLabels, FailureLabels, KubeResource, Metrics, WorkspaceLabels, WriteOperation,
};
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};

fn read(rel: &str) -> String {
    let p = common::repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Argo CD health check
// ---------------------------------------------------------------------------------------------

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1})
}

fn workspace(spec_extra: Value, status: Option<Value>) -> Value {
    let mut spec = json!({"regionId": "cn-hangzhou", "workspaceId": "w-1",
                          "credentials": {"secretRef": {"name": "s"}}, "syncInterval": "60s"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(e.clone());
    }
    let mut o = json!({"apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                       "metadata": {"name": "prod", "namespace": "ns", "generation": 1},
                       "spec": spec});
    if let Some(st) = status {
        o["status"] = st;
    }
    o
}

/// A mirror whose conditions are computed by the operator's own code for `state`.
fn mirror(state: Option<&str>, gone: bool, stale: bool) -> Value {
    let mut status = EmrRayClusterStatus {
        state: state.map(str::to_string),
        message: Some("head node failed".into()),
        gone,
        observed_generation: Some(1),
        ..Default::default()
    };
    let staleness = stale.then(|| Staleness {
        reason: emr_ray_operator::api::Reason::RemoteUnavailable,
        message: "listing failed".into(),
    });
    status.conditions = mirror_conditions(
        &status,
        &[] as &[Condition],
        Some(1),
        staleness.as_ref(),
        "2025-01-01T00:00:00Z".parse().unwrap(),
    );
    json!({"apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrRayCluster",
           "metadata": {"name": "ray-abc", "namespace": "ns", "generation": 1},
           "spec": {"workspaceRef": "prod", "workspaceId": "w-1", "regionId": "cn-hangzhou",
                    "clusterId": "ray-abc"},
           "status": status})
}

#[test]
fn argocd_health_check_maps_statuses() {
    let ready = json!({"observedGeneration": 1, "conditions": [cond("Ready", "True", "Synced", "1 Ray cluster(s) mirrored")]});
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "workspace without status",
            workspace(json!({}), None),
            "Progressing",
            "",
        ),
        (
            "workspace ready",
            workspace(json!({}), Some(ready.clone())),
            "Healthy",
            "1 Ray cluster(s) mirrored",
        ),
        (
            "workspace suspended",
            workspace(
                json!({"suspend": true}),
                Some(
                    json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "Suspended", "syncing is suspended")]}),
                ),
            ),
            "Suspended",
            "suspend",
        ),
        (
            "workspace stalled",
            workspace(
                json!({}),
                Some(json!({"observedGeneration": 1, "conditions": [
                    cond("Ready", "False", "AuthenticationFailed", "bad key"),
                    cond("Stalled", "True", "AuthenticationFailed", "bad key")]})),
            ),
            "Degraded",
            "AuthenticationFailed",
        ),
        (
            "workspace retrying",
            workspace(
                json!({}),
                Some(json!({"observedGeneration": 1, "conditions": [
                    cond("Ready", "False", "Throttled", "throttled"),
                    cond("Reconciling", "True", "RetryingAfterError", "retrying after Throttled")]})),
            ),
            "Progressing",
            "RetryingAfterError",
        ),
        (
            "workspace first listing pending",
            workspace(
                json!({}),
                Some(json!({"conditions": [
                    cond("Ready", "False", "Pending", "waiting for the first listing"),
                    cond("Reconciling", "True", "Pending", "waiting for the first listing")]})),
            ),
            "Progressing",
            "first listing",
        ),
        (
            "workspace with a newer generation than observed",
            {
                let mut w = workspace(json!({}), Some(ready.clone()));
                w["metadata"]["generation"] = json!(2);
                w
            },
            "Progressing",
            "generation 2",
        ),
        (
            "workspace with an empty status",
            workspace(json!({}), Some(json!({}))),
            "Progressing",
            "",
        ),
        (
            "mirror Running",
            mirror(Some("Running"), false, false),
            "Healthy",
            "Running",
        ),
        (
            "mirror Running, stale",
            mirror(Some("Running"), false, true),
            "Healthy",
            "",
        ),
        (
            "mirror Starting",
            mirror(Some("Starting"), false, false),
            "Progressing",
            "Starting",
        ),
        (
            "mirror Stopping",
            mirror(Some("Stopping"), false, false),
            "Progressing",
            "Stopping",
        ),
        (
            "mirror Error",
            mirror(Some("Error"), false, false),
            "Degraded",
            "head node failed",
        ),
        (
            "mirror Stopped",
            mirror(Some("Stopped"), false, false),
            "Suspended",
            "Stopped",
        ),
        (
            "mirror gone (goneClusterPolicy Keep)",
            mirror(Some("Running"), true, false),
            "Degraded",
            "no longer exists",
        ),
        (
            "mirror in an unknown state",
            mirror(Some("Upgrading"), false, false),
            "Progressing",
            "Upgrading",
        ),
        (
            "mirror without status",
            {
                let mut m = mirror(None, false, false);
                m.as_object_mut().unwrap().remove("status");
                m
            },
            "Progressing",
            "",
        ),
    ];
    let objects: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let verdicts = consumer_tools::argocd_health(
        &common::repo_root().join("deploy/argocd/health.lua"),
        &objects,
    );
    for ((what, _, want, msg_part), v) in cases.into_iter().zip(verdicts) {
        assert_eq!(v.error, None, "{what}: health.lua failed in gopher-lua");
        let (status, message) = (v.status, v.message);
        assert_eq!(status, want, "{what}: message {message:?}");
        assert!(
            message.contains(msg_part),
            "{what}: message {message:?} should contain {msg_part:?}"
        );
        assert!(!message.is_empty(), "{what}: empty message");
    }
}

#[test]
fn argocd_cm_patch_embeds_the_health_check_for_every_kind() {
    let script = read("deploy/argocd/health.lua");
    let docs = yaml_docs(&read("deploy/argocd/argocd-cm-patch.yaml"));
    assert_eq!(docs.len(), 1);
    let cm = &docs[0];
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    for kind in ["EmrWorkspace", "EmrRayCluster", "EmrRayJob"] {
        let key = format!("resource.customizations.health.emr.aliyun.io_{kind}");
        assert_eq!(
            cm["data"][&key].as_str(),
            Some(script.as_str()),
            "{key} must hold deploy/argocd/health.lua verbatim"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules
// ---------------------------------------------------------------------------------------------

/// Every sample name the operator exports, after recording one sample of each family.
fn exported_metric_names() -> BTreeSet<String> {
    let m = Metrics::default();
    let ws = WorkspaceLabels {
        namespace: "ns".into(),
        workspace: "ws".into(),
    };
    m.cluster_state.set(
        "ns",
        "ws",
        std::sync::Arc::new([("c".into(), ("n".into(), "Error"))].into()),
    );
    m.sync_attempts.get_or_create(&ws).inc();
    m.sync_failures
        .get_or_create(&FailureLabels {
            namespace: "ns".into(),
            workspace: "ws".into(),
            reason: "Throttled".into(),
        })
        .inc();
    m.sync_duration.get_or_create(&ws).observe(0.2);
    m.remote_requests
        .get_or_create(&CodeLabels {
            operation: "ListRayCluster".into(),
            code: "200".into(),
        })
        .inc();
    m.last_success.get_or_create(&ws).set(1.0);
    m.workspace_clusters.get_or_create(&ws).set(1);
    m.workspace_ready.get_or_create(&ws).set(1);
    m.workspace_jobs.get_or_create(&ws).set(3);
    m.workspace_jobs_failed.get_or_create(&ws).set(1);
    m.job_failures.get_or_create(&ws).inc();
    m.workspace_mirrors_unwritten.get_or_create(&ws).set(0);
    m.workspace_suspended.get_or_create(&ws).set(0);
    m.count_write(KubeResource::EmrRayClusters, WriteOperation::Apply);
    m.count_refusal(
        KubeResource::EmrRayClusters,
        emr_ray_operator::api::WriteRefusal::Forbidden,
    );
    m.count_reconcile_error("StatusWrite");
    m.reconciles.inc();
    m.is_leader.set(1);
    m.queue_resource
        .get_or_create(&emr_ray_operator::metrics::QueueLabels {
            namespace: "ns".into(),
            workspace: "ws".into(),
            queue: "q".into(),
            resource: emr_ray_operator::metrics::QueueResource::Cpu,
            kind: emr_ray_operator::metrics::QueueFigure::Max,
        })
        .set(1.0);
    let text = m.encode();
    let names: BTreeSet<String> = common::parse_metrics(&text)
        .into_iter()
        .map(|s| s.name)
        .collect();
    // Every family registered in the registry has at least one sample now.
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    for f in &families {
        assert!(
            names.iter().any(|n| n.starts_with(f)),
            "family {f} has no sample: give it one here\n{text}"
        );
    }
    names
}

struct Selectors(BTreeSet<String>);

impl ExprVisitor for Selectors {
    type Error = String;
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        match e {
            Expr::VectorSelector(vs) => {
                if let Some(n) = &vs.name {
                    self.0.insert(n.clone());
                }
            }
            Expr::MatrixSelector(ms) => {
                if let Some(n) = &ms.vs.name {
                    self.0.insert(n.clone());
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Parses every `expr` of a rule file's `groups` and returns (alert name, metric names).
fn rule_metrics(groups: &Value, file: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    let groups = groups["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no groups"));
    assert!(!groups.is_empty(), "{file}: empty groups");
    for g in groups {
        assert!(g["name"].is_string(), "{file}: group without name");
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .unwrap_or_else(|| panic!("{file}: rule without alert/record: {r}"))
                .to_string();
            let expr = r["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {name} without expr"));
            let ast = promql_parser::parser::parse(expr)
                .unwrap_or_else(|e| panic!("{file}: {name}: PromQL does not parse: {e}\n{expr}"));
            let mut v = Selectors(BTreeSet::new());
            walk_expr(&mut v, &ast).unwrap();
            assert!(!v.0.is_empty(), "{file}: {name} selects no metric");
            if r["alert"].is_string() {
                assert!(
                    r["labels"]["severity"].is_string(),
                    "{file}: {name} has no severity"
                );
                assert!(
                    r["annotations"]["summary"].is_string(),
                    "{file}: {name} has no summary"
                );
            }
            out.push((name, v.0));
        }
    }
    out
}

fn check_operator_rules(rules: &Value, file: &str) {
    let exported = exported_metric_names();
    let rules = rule_metrics(rules, file);
    let alerts: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "EmrRayClusterError",
        "EmrRayJobFailed",
        "EmrWorkspaceSyncFailing",
        "EmrWorkspaceSyncStale",
    ] {
        assert!(alerts.contains(want), "{file}: missing alert {want}");
    }
    for (name, metrics) in &rules {
        for m in metrics {
            assert!(
                exported.contains(m),
                "{file}: {name} uses {m}, which the operator does not export; exported: {exported:?}"
            );
        }
    }
}

#[test]
fn prometheus_rules_parse_and_use_exported_metrics() {
    let text = read("deploy/prometheus/rules.yaml");
    let docs = yaml_docs(&text);
    assert_eq!(docs.len(), 1);
    check_operator_rules(&docs[0], "deploy/prometheus/rules.yaml");
    // The chart's copy is identical.
    assert_eq!(
        read("charts/emr-ray-operator/files/prometheus-rules.yaml"),
        text,
        "charts/emr-ray-operator/files/prometheus-rules.yaml must be a copy of deploy/prometheus/rules.yaml"
    );
}

fn helm_bin() -> PathBuf {
    let bin = common::repo_root().join(".cache/bin/helm");
    if !bin.is_file() {
        let status = Command::new("bash")
            .arg(common::repo_root().join("tests/control-plane/kcp.sh"))
            .arg("build")
            .status()
            .expect("running kcp.sh build");
        assert!(status.success(), "kcp.sh build failed");
    }
    bin
}

/// The chart's PrometheusRule, rendered by the pinned helm.
fn rendered_prometheus_rule() -> Value {
    let out = Command::new(helm_bin())
        .args([
            "template",
            "emr",
            "charts/emr-ray-operator",
            "--namespace",
            "ops",
            "--kube-version",
            "1.34.0",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ])
        .current_dir(common::repo_root())
        .output()
        .expect("running helm template");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8(out.stdout).unwrap());
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule is rendered");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    rule.clone()
}

#[test]
fn chart_prometheus_rule_parses_and_uses_exported_metrics() {
    let rule = rendered_prometheus_rule();
    check_operator_rules(&rule["spec"], "rendered PrometheusRule");
    let file = yaml_docs(&read("deploy/prometheus/rules.yaml"));
    assert_eq!(
        rule["spec"], file[0],
        "PrometheusRule spec == deploy/prometheus/rules.yaml"
    );
}

/// Every shipped rules file: the two in `deploy/prometheus/` and the chart's copy.
const RULE_FILES: &[&str] = &[
    "deploy/prometheus/rules.yaml",
    "deploy/prometheus/kube-state-metrics-rules.yaml",
    "charts/emr-ray-operator/files/prometheus-rules.yaml",
];

/// The promtool unit-test files, `deploy/prometheus/tests/*.yaml`.
fn rule_test_files() -> Vec<PathBuf> {
    let dir = common::repo_root().join("deploy/prometheus/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests in {}", dir.display());
    files
}

#[test]
fn prometheus_rules_pass_promtool_check() {
    let out = consumer_tools::assert_promtool_ok(&[&["check", "rules"][..], RULE_FILES].concat());
    for f in RULE_FILES {
        assert!(out.contains(f), "promtool did not check {f}:\n{out}");
    }
}

#[test]
fn prometheus_rules_pass_promtool_unit_tests() {
    let files = rule_test_files();
    let args: Vec<&str> = ["test", "rules"]
        .into_iter()
        .chain(files.iter().map(|f| f.to_str().unwrap()))
        .collect();
    consumer_tools::assert_promtool_ok(&args);
}

/// The PrometheusRule the chart renders passes the same unit tests as
/// `deploy/prometheus/rules.yaml` (its spec is written out as a rule file and the test file
/// is pointed at it).
#[test]
fn chart_prometheus_rule_passes_promtool_unit_tests() {
    let rule = rendered_prometheus_rule();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("chart-rules.yaml");
    std::fs::write(&rules, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    let mut test: Value = serde_yaml::from_str(&read("deploy/prometheus/tests/rules.test.yaml"))
        .expect("rules.test.yaml parses");
    assert_eq!(test["rule_files"], json!(["../rules.yaml"]));
    test["rule_files"] = json!([rules.to_str().unwrap()]);
    let test_file = dir.path().join("chart-rules.test.yaml");
    std::fs::write(&test_file, serde_yaml::to_string(&test).unwrap()).unwrap();
    consumer_tools::assert_promtool_ok(&["check", "rules", rules.to_str().unwrap()]);
    consumer_tools::assert_promtool_ok(&["test", "rules", test_file.to_str().unwrap()]);
}

/// Alert names of a rules file.
fn alert_names(file: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    doc["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// Every alert of every shipped rules file has, in a promtool test file that loads that rules
/// file (or a byte-identical copy of it), at least one case where it fires and one where it
/// stays silent. A new alert without tests fails here.
#[test]
fn every_shipped_alert_has_a_firing_and_a_silent_unit_test() {
    // (rules file contents, alert) -> (firing cases, silent cases)
    let mut cases: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for tf in rule_test_files() {
        let test: Value = serde_yaml::from_str(&std::fs::read_to_string(&tf).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", tf.display()));
        let base = tf.parent().unwrap();
        let rule_files: Vec<String> = test["rule_files"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no rule_files", tf.display()))
            .iter()
            .map(|f| {
                let p = base.join(f.as_str().unwrap());
                std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("{}: {}: {e}", tf.display(), p.display()))
            })
            .collect();
        for t in test["tests"].as_array().into_iter().flatten() {
            for a in t["alert_rule_test"].as_array().into_iter().flatten() {
                let name = a["alertname"].as_str().expect("alertname").to_string();
                let firing = a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty());
                for rf in &rule_files {
                    let e = cases.entry((rf.clone(), name.clone())).or_default();
                    if firing {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
            }
        }
    }
    let mut missing = Vec::new();
    for f in RULE_FILES {
        let contents = read(f);
        let alerts = alert_names(&common::repo_root().join(f));
        assert!(!alerts.is_empty(), "{f}: no alerts");
        for alert in alerts {
            let (firing, silent) = cases
                .get(&(contents.clone(), alert.clone()))
                .copied()
                .unwrap_or_default();
            if firing == 0 || silent == 0 {
                missing.push(format!(
                    "{f}: {alert} has {firing} firing and {silent} silent case(s)"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alerts without promtool unit tests (add them to deploy/prometheus/tests/):\n{}",
        missing.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// kube-state-metrics
// ---------------------------------------------------------------------------------------------

/// The OpenAPI schema of the CRD of `kind` (from the operator's own CRD generator).
fn crd_schema(kind: &str) -> Value {
    for (_, yaml) in emr_ray_operator::api::crd_yamls() {
        let crd: Value = serde_yaml::from_str(&yaml).unwrap();
        if crd["spec"]["names"]["kind"] == kind {
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("no CRD for {kind}");
}

const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "generation",
    "creationTimestamp",
    "labels",
    "annotations",
];

/// Follows `path` in `schema`; returns the schema of the field it names.
fn resolve(schema: &Value, path: &[String], what: &str) -> Value {
    let mut node = schema.clone();
    for (i, seg) in path.iter().enumerate() {
        if i == 0 && seg == "metadata" && path.len() >= 2 {
            assert!(
                METADATA_FIELDS.contains(&path[1].as_str()),
                "{what}: unknown metadata field {}",
                path[1]
            );
            return json!({"type": if path[1] == "generation" { "integer" } else { "string" }});
        }
        let next = node["properties"][seg].clone();
        assert!(
            !next.is_null(),
            "{what}: path {path:?}: no field {seg:?} (has {:?})",
            node["properties"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        );
        node = next;
    }
    node
}

fn path_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("path must be a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("path segment").to_string())
        .collect()
}

fn is_scalar(schema: &Value) -> bool {
    matches!(
        schema["type"].as_str(),
        Some("string" | "integer" | "number" | "boolean")
    )
}

fn is_numeric_or_time(schema: &Value, path: &[String]) -> bool {
    matches!(
        schema["type"].as_str(),
        Some("integer" | "number" | "boolean")
    ) || (schema["type"] == "string"
        && path
            .last()
            .is_some_and(|l| l.ends_with("Time") || l.ends_with("Timestamp")))
        // A string the CRD restricts to a decimal number (a queue's cpu, gpu): kube-state-metrics
        // parses it (tests/integration/consumers.rs reads such series from a real one).
        || (schema["type"] == "string"
            && schema["pattern"] == emr_ray_operator::api::QUEUE_NUMBER_PATTERN)
}

/// Checks one resource of the config; returns the full metric names it defines.
fn check_ksm_resource(res: &Value) -> Vec<String> {
    let kind = res["groupVersionKind"]["kind"].as_str().expect("kind");
    assert_eq!(res["groupVersionKind"]["group"], "emr.aliyun.io");
    assert_eq!(res["groupVersionKind"]["version"], "v1alpha1");
    let schema = crd_schema(kind);
    let prefix = res["metricNamePrefix"]
        .as_str()
        .unwrap_or("kube_customresource");
    for (label, p) in res["labelsFromPath"].as_object().into_iter().flatten() {
        let s = resolve(&schema, &path_of(p), &format!("{kind} label {label}"));
        assert!(is_scalar(&s), "{kind} label {label}: not a scalar: {s}");
    }
    let mut names = Vec::new();
    for m in res["metrics"].as_array().expect("metrics") {
        let name = m["name"].as_str().expect("metric name");
        let what = format!("{kind} metric {name}");
        assert!(m["help"].is_string(), "{what}: no help");
        let each = &m["each"];
        let t = each["type"].as_str().expect("each.type");
        let body = match t {
            "Gauge" => &each["gauge"],
            "Info" => &each["info"],
            "StateSet" => &each["stateSet"],
            other => panic!("{what}: unexpected type {other}"),
        };
        assert!(body.is_object(), "{what}: no {t} body");
        let base_path = body.get("path").map(path_of).unwrap_or_default();
        let base = if base_path.is_empty() {
            schema.clone()
        } else {
            resolve(&schema, &base_path, &what)
        };
        // Relative label paths resolve inside list items (or the object itself).
        let elem = if base["type"] == "array" {
            base["items"].clone()
        } else {
            base.clone()
        };
        for (label, p) in body["labelsFromPath"].as_object().into_iter().flatten() {
            let s = resolve(&elem, &path_of(p), &format!("{what} label {label}"));
            assert!(is_scalar(&s), "{what} label {label}: not a scalar: {s}");
        }
        match t {
            "Gauge" => {
                if body.get("labelFromKey").is_some() {
                    assert_eq!(base["type"], "object", "{what}: labelFromKey needs a map");
                    let vals = &base["additionalProperties"];
                    assert!(
                        is_numeric_or_time(vals, &base_path),
                        "{what}: map values are not numeric: {vals}"
                    );
                } else if let Some(vf) = body.get("valueFrom") {
                    let s = resolve(&elem, &path_of(vf), &format!("{what} valueFrom"));
                    assert!(
                        is_numeric_or_time(&s, &path_of(vf)),
                        "{what}: valueFrom {s}"
                    );
                } else {
                    assert!(
                        is_numeric_or_time(&base, &base_path),
                        "{what}: {base_path:?} is not numeric, boolean or a timestamp: {base}"
                    );
                }
            }
            "StateSet" => {
                assert_eq!(base["type"], "string", "{what}: state is not a string");
                assert!(body["labelName"].is_string(), "{what}: no labelName");
                let list = body["list"].as_array().expect("stateSet.list");
                assert!(!list.is_empty());
            }
            "Info" => {
                assert!(
                    body["labelsFromPath"].is_object(),
                    "{what}: Info without labels"
                );
            }
            _ => unreachable!(),
        }
        names.push(format!("{prefix}_{name}"));
    }
    names
}

fn ksm_metric_names() -> BTreeSet<String> {
    let docs = yaml_docs(&read(
        "deploy/kube-state-metrics/custom-resource-config.yaml",
    ));
    assert_eq!(docs.len(), 1);
    let cfg = &docs[0];
    assert_eq!(cfg["kind"], "CustomResourceStateMetrics");
    let resources = cfg["spec"]["resources"].as_array().expect("resources");
    let kinds: BTreeSet<&str> = resources
        .iter()
        .map(|r| r["groupVersionKind"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["EmrRayCluster", "EmrRayJob", "EmrWorkspace"]),
        "every kind is covered"
    );
    resources.iter().flat_map(check_ksm_resource).collect()
}

#[test]
fn kube_state_metrics_config_references_real_fields() {
    let names = ksm_metric_names();
    for want in [
        "kube_emrraycluster_state",
        "kube_emrraycluster_info",
        "kube_emrrayjob_state",
        "kube_emrworkspace_condition",
        "kube_emrworkspace_clusters",
        "kube_emrworkspace_last_successful_sync_timestamp_seconds",
    ] {
        assert!(names.contains(want), "missing metric {want}: {names:?}");
    }
}

#[test]
fn kube_state_metrics_rules_use_configured_metrics() {
    let names = ksm_metric_names();
    let docs = yaml_docs(&read("deploy/prometheus/kube-state-metrics-rules.yaml"));
    let file = "deploy/prometheus/kube-state-metrics-rules.yaml";
    let rules = rule_metrics(&docs[0], file);
    let mut alerts = BTreeMap::new();
    for (alert, metrics) in rules {
        for m in &metrics {
            assert!(
                names.contains(m),
                "{file}: {alert} uses {m}, not defined in custom-resource-config.yaml"
            );
        }
        alerts.insert(alert, metrics);
    }
    for want in [
        "EmrRayClusterError",
        "EmrRayJobFailed",
        "EmrWorkspaceSyncFailing",
        "EmrWorkspaceSyncStale",
    ] {
        assert!(alerts.contains_key(want), "{file}: missing {want}");
    }
}

#[test]
fn deploy_readme_mentions_every_asset() {
    let readme = read("deploy/README.md");
    for f in [
        "prometheus/rules.yaml",
        "prometheus/kube-state-metrics-rules.yaml",
        "prometheus/tests/rules.test.yaml",
        "prometheus/tests/kube-state-metrics-rules.test.yaml",
        "argocd/health.lua",
        "argocd/argocd-cm-patch.yaml",
        "kube-state-metrics/custom-resource-config.yaml",
        "kube-state-metrics/rbac.yaml",
    ] {
        assert!(readme.contains(f), "deploy/README.md does not mention {f}");
        assert!(
            Path::new(&common::repo_root().join("deploy").join(f)).is_file(),
            "{f} missing"
        );
    }
}
