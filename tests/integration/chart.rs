//! The Helm chart `charts/emr-ray-operator`: CRD copies, lint, rendering with several value
//! sets, and, against the real control plane, installation, read-only enforcement of mirrors
//! (ValidatingAdmissionPolicy) and the operator running with exactly the chart's RBAC.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use emr_ray_operator::api::{EmrRayCluster, EmrRayJob};
use emr_ray_operator::metrics::Metrics;
use emr_ray_operator::operator::OperatorConfig;
use emr_ray_operator::operator::leader::LeaseConfig;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CHART: &str = "charts/emr-ray-operator";
/// Release name; the chart's fullname and ServiceAccount name are then `emr-ray-operator`.
const RELEASE: &str = "emr-ray-operator";
const SA: &str = "emr-ray-operator";
const DENIED: &str =
    "EmrRayCluster and EmrRayJob objects are read-only mirrors written by emr-ray-operator";

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Offline: CRDs, lint, template
// ---------------------------------------------------------------------------------------------

#[test]
fn crds_are_generated_and_copied_into_the_chart() {
    let generated = emr_ray_operator::api::crd_yamls();
    let list = |dir: PathBuf| {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(
        list(common::repo_root().join("crds")),
        names,
        "crds/ holds exactly the generated CRDs"
    );
    assert_eq!(
        list(common::repo_root().join(CHART).join("crds")),
        names,
        "the chart's crds/ holds exactly the generated CRDs"
    );
    for (name, yaml) in generated {
        let repo_file = std::fs::read(common::repo_root().join("crds").join(name)).unwrap();
        assert!(
            repo_file == yaml.as_bytes(),
            "crds/{name} is not what crdgen generates: run `cargo run -- crdgen --out-dir crds`"
        );
        let chart_file =
            std::fs::read(common::repo_root().join(CHART).join("crds").join(name)).unwrap();
        assert!(
            chart_file == repo_file,
            "{CHART}/crds/{name} differs from crds/{name}: cp crds/*.yaml {CHART}/crds/"
        );
    }
}

/// `.cache/bin/helm` without a kubeconfig (lint and template need no cluster).
fn offline_helm() -> Command {
    let bin = common::helm_path();
    let mut cmd = Command::new(bin);
    cmd.current_dir(common::repo_root())
        .env("KUBECONFIG", "/dev/null");
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const VALUE_SETS: &[&[&str]] = &[
    &[],
    &["shards[0].name=a", "shards[1].name=b"],
    &["shards[0].name=a", "watchNamespaces={team-a,team-b}"],
    &["watchNamespaces={team-a,team-b}"],
    &["replicas=2"],
    &[
        "metrics.serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
    ],
    &[
        "readOnlyMirrors.enabled=false",
        "leaderElection.enabled=false",
    ],
    &[
        "replicas=3",
        "watchNamespaces={team-a}",
        "metrics.serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "readOnlyMirrors.extraAllowedUsers={alice}",
        "readOnlyMirrors.extraAllowedGroups={system:masters}",
        "env.ALIBABA_CLOUD_ROLE_ARN=acs:ram::1:role/emr",
        "extraEnv[0].name=ALIBABA_CLOUD_OIDC_TOKEN_FILE",
        "extraEnv[0].value=/var/run/secrets/tokens/oidc-token",
        "podAnnotations.a=b",
        "nodeSelector.kubernetes\\.io/os=linux",
        "tolerations[0].operator=Exists",
        "logFormat=text",
        "logLevel=debug",
    ],
    &[
        "metrics.secure=true",
        "metrics.serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "networkPolicy.enabled=true",
        "security.allowedEndpoints={https://proxy.internal:8443,http://127.0.0.1:*}",
        "security.maxClustersPerWorkspace=500",
    ],
    &[
        "metrics.secure=false",
        "networkPolicy.enabled=false",
        "metrics.serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
    ],
    &[
        "shards[0].name=a",
        "metrics.tls.certManager.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
    ],
    &["metrics.tls.secretName=metrics-tls", "health.port=9091"],
];

#[test]
fn helm_lint_passes() {
    for set in VALUE_SETS {
        let mut cmd = offline_helm();
        cmd.args(["lint", "--strict", CHART]);
        for s in *set {
            cmd.args(["--set", s]);
        }
        let out = run(cmd);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

fn template(set: &[&str]) -> Vec<Value> {
    let mut cmd = offline_helm();
    cmd.args([
        "template",
        RELEASE,
        CHART,
        "--namespace",
        "emr-system",
        "--kube-version",
        "1.34.0",
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    yaml_docs(&run(cmd))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn kinds(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
}

/// The operator's rules: (apiGroup, resource) -> sorted verbs.
fn rules_of(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for r in role["rules"].as_array().unwrap() {
        // (Rules on non-resource URLs have neither.)
        let none = Vec::new();
        for g in r["apiGroups"].as_array().unwrap_or(&none) {
            for res in r["resources"].as_array().unwrap_or(&none) {
                let mut verbs: Vec<String> = r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                verbs.sort();
                out.push((
                    g.as_str().unwrap().to_string(),
                    res.as_str().unwrap().to_string(),
                    verbs,
                ));
            }
        }
    }
    out.sort();
    out
}

fn expected_rules() -> Vec<(String, String, Vec<String>)> {
    let v = |g: &str, r: &str, verbs: &[&str]| {
        let mut verbs: Vec<String> = verbs.iter().map(|s| s.to_string()).collect();
        verbs.sort();
        (g.to_string(), r.to_string(), verbs)
    };
    let mut out = vec![
        v("emr.aliyun.io", "emrworkspaces", &["list", "watch"]),
        v("emr.aliyun.io", "emrworkspaces/status", &["patch"]),
        v("emr.aliyun.io", "emrworkspaces/finalizers", &["update"]),
        v(
            "emr.aliyun.io",
            "emrrayclusters",
            &["list", "watch", "create", "patch", "delete"],
        ),
        v("emr.aliyun.io", "emrrayclusters/status", &["patch"]),
        v(
            "emr.aliyun.io",
            "emrrayjobs",
            &["list", "create", "patch", "delete"],
        ),
        v("emr.aliyun.io", "emrrayjobs/status", &["patch"]),
        v("", "secrets", &["get"]),
        v("events.k8s.io", "events", &["create", "patch"]),
    ];
    out.sort();
    out
}

fn env_of(deploy: &Value) -> Vec<(String, Value)> {
    deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn env_value(deploy: &Value, name: &str) -> Option<String> {
    env_of(deploy)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, e)| e["value"].as_str().map(str::to_string))
}

#[test]
fn helm_template_renders_every_value_set() {
    for set in VALUE_SETS {
        let docs = template(set);
        assert!(
            docs.iter()
                .all(|d| d["kind"].is_string() && d["apiVersion"].is_string())
        );
        let deploy = find(&docs, "Deployment", "emr-ray-operator").expect("Deployment");
        assert!(find(&docs, "ServiceAccount", SA).is_some());
        // Secure metrics (the default): HTTPS, the operator reviews tokens; Prometheus gets a
        // reader role and sends its token. The NetworkPolicy unless turned off.
        let secure = !set.contains(&"metrics.secure=false");
        assert_eq!(
            env_value(deploy, "METRICS_SECURE").unwrap(),
            secure.to_string()
        );
        assert_eq!(
            find(
                &docs,
                "ClusterRole",
                "emr-ray-operator-emr-system-metrics-reader"
            )
            .is_some(),
            secure
        );
        if let Some(sm) = kinds(&docs, "ServiceMonitor").first() {
            let ep = &sm["spec"]["endpoints"][0];
            assert_eq!(ep["scheme"], if secure { "https" } else { "http" });
            assert_eq!(ep["bearerTokenFile"].is_string(), secure);
            assert_eq!(ep["tlsConfig"].is_object(), secure);
        }
        if set.contains(&"security.maxClustersPerWorkspace=500") {
            assert_eq!(
                env_value(deploy, "ALLOWED_ENDPOINTS").unwrap(),
                "https://proxy.internal:8443,http://127.0.0.1:*"
            );
            assert_eq!(
                env_value(deploy, "MAX_CLUSTERS_PER_WORKSPACE").unwrap(),
                "500"
            );
        }
        assert_eq!(
            kinds(&docs, "NetworkPolicy").len(),
            usize::from(!set.contains(&"networkPolicy.enabled=false"))
        );
        assert!(find(&docs, "Service", "emr-ray-operator-metrics").is_some());
        let replicas = deploy["spec"]["replicas"].as_i64().unwrap();
        assert_eq!(
            kinds(&docs, "PodDisruptionBudget").len(),
            usize::from(replicas > 1),
            "PDB only with replicas > 1 ({set:?})"
        );
        let monitoring = set.contains(&"prometheusRule.enabled=true");
        assert_eq!(
            kinds(&docs, "PrometheusRule").len(),
            usize::from(monitoring)
        );
        assert_eq!(
            kinds(&docs, "ServiceMonitor").len(),
            usize::from(monitoring)
        );
        let ro = !set.contains(&"readOnlyMirrors.enabled=false");
        assert_eq!(
            kinds(&docs, "ValidatingAdmissionPolicy").len(),
            usize::from(ro)
        );
        assert_eq!(
            kinds(&docs, "ValidatingAdmissionPolicyBinding").len(),
            usize::from(ro)
        );
        let le = !set.contains(&"leaderElection.enabled=false");
        assert_eq!(
            find(&docs, "Role", "emr-ray-operator-leader-election").is_some(),
            le
        );
        assert_eq!(
            env_value(deploy, "LEADER_ELECTION").unwrap(),
            le.to_string()
        );

        // RBAC: ClusterRole for all namespaces, else one Role per watched namespace.
        let watched: Vec<&str> = set
            .iter()
            .find_map(|s| s.strip_prefix("watchNamespaces={"))
            .map(|s| s.trim_end_matches('}').split(',').collect())
            .unwrap_or_default();
        let sharded = set.iter().any(|s| s.starts_with("shards["));
        let operator_cluster_role = find(&docs, "ClusterRole", "emr-ray-operator-emr-system");
        if watched.is_empty() {
            let cr = operator_cluster_role.expect("operator ClusterRole");
            assert_eq!(rules_of(cr), expected_rules());
            let crb = find(&docs, "ClusterRoleBinding", "emr-ray-operator-emr-system").unwrap();
            assert_eq!(crb["subjects"][0]["name"], SA);
            assert_eq!(crb["subjects"][0]["namespace"], "emr-system");
        } else {
            assert!(operator_cluster_role.is_none());
            // The only cluster-wide grants: reading cluster credentials and namespaces, and in
            // shards watching the watched namespaces.
            let mut crbs: Vec<String> = kinds(&docs, "ClusterRoleBinding")
                .into_iter()
                .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
                .filter(|name| !name.ends_with("-metrics-auth"))
                .collect();
            crbs.sort();
            let mut want = vec!["emr-ray-operator-emr-system-cluster-credentials"];
            if sharded {
                want.push("emr-ray-operator-emr-system-shards");
            }
            assert_eq!(crbs, want);
        }
        // Namespaces are listed and watched only by shards (their label assigns a shard), and
        // then only the watched ones when they are listed.
        let shards_role = find(&docs, "ClusterRole", "emr-ray-operator-emr-system-shards");
        assert_eq!(shards_role.is_some(), sharded, "{set:?}");
        if let Some(role) = shards_role {
            assert_eq!(
                rules_of(role),
                vec![(
                    "".to_string(),
                    "namespaces".to_string(),
                    vec!["list".to_string(), "watch".to_string()]
                )]
            );
            let names = &role["rules"][0]["resourceNames"];
            if watched.is_empty() {
                assert!(names.is_null(), "{names}");
            } else {
                assert_eq!(*names, json!(watched));
            }
            let crb = find(
                &docs,
                "ClusterRoleBinding",
                "emr-ray-operator-emr-system-shards",
            )
            .unwrap();
            assert_eq!(crb["roleRef"]["name"], role["metadata"]["name"]);
            assert_eq!(crb["subjects"][0]["name"], SA);
        }
        // Cluster credentials and namespaces: get only, in every mode.
        let ccr = find(
            &docs,
            "ClusterRole",
            "emr-ray-operator-emr-system-cluster-credentials",
        )
        .expect("cluster-credentials ClusterRole");
        assert_eq!(
            rules_of(ccr),
            vec![
                (
                    "".to_string(),
                    "namespaces".to_string(),
                    vec!["get".to_string()]
                ),
                (
                    "emr.aliyun.io".to_string(),
                    "emrclustercredentials".to_string(),
                    vec!["get".to_string()]
                ),
            ]
        );
        if !watched.is_empty() {
            for ns in &watched {
                let role = docs
                    .iter()
                    .find(|d| {
                        d["kind"] == "Role"
                            && d["metadata"]["namespace"] == *ns
                            && d["metadata"]["name"] == "emr-ray-operator"
                    })
                    .unwrap_or_else(|| panic!("no Role in {ns}"));
                assert_eq!(rules_of(role), expected_rules());
                assert!(docs.iter().any(|d| d["kind"] == "RoleBinding"
                    && d["metadata"]["namespace"] == *ns
                    && d["subjects"][0]["name"] == SA
                    && d["subjects"][0]["namespace"] == "emr-system"));
            }
            assert_eq!(
                env_value(deploy, "WATCH_NAMESPACES").unwrap(),
                watched.join(",")
            );
        }
        // The aggregated user roles never let users create or change mirrors.
        for cr in kinds(&docs, "ClusterRole") {
            for (g, r, verbs) in rules_of(&cr) {
                if g == "emr.aliyun.io"
                    && (r.starts_with("emrrayclusters") || r.starts_with("emrrayjobs"))
                    && cr != *operator_cluster_role.unwrap_or(&Value::Null)
                {
                    assert!(
                        verbs
                            .iter()
                            .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
                        "{} grants {verbs:?} on {r}",
                        cr["metadata"]["name"]
                    );
                }
                // Cluster credentials are for cluster admins only.
                let aggregated = cr["metadata"]["labels"].as_object().is_some_and(|l| {
                    l.keys()
                        .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to"))
                });
                assert!(
                    !(aggregated && r.starts_with("emrclustercredentials")),
                    "{} aggregates access to {r}",
                    cr["metadata"]["name"]
                );
            }
        }

        // Read-only policy.
        if ro {
            let vap = &kinds(&docs, "ValidatingAdmissionPolicy")[0];
            let text = serde_json::to_string(vap).unwrap();
            assert!(text.contains("system:serviceaccount:emr-system:emr-ray-operator"));
            assert!(text.contains(DENIED));
            let rules = &vap["spec"]["matchConstraints"]["resourceRules"][0];
            assert_eq!(rules["operations"], json!(["CREATE", "UPDATE", "DELETE"]));
            assert_eq!(
                rules["resources"],
                json!([
                    "emrrayclusters",
                    "emrrayclusters/status",
                    "emrrayjobs",
                    "emrrayjobs/status"
                ])
            );
            let binding = &kinds(&docs, "ValidatingAdmissionPolicyBinding")[0];
            assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
            assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
            assert_eq!(
                binding["spec"]["matchResources"]["resourceRules"][0]["resources"],
                json!([
                    "emrrayclusters",
                    "emrrayclusters/status",
                    "emrrayjobs",
                    "emrrayjobs/status"
                ])
            );
            let sel = &binding["spec"]["matchResources"]["namespaceSelector"];
            if watched.is_empty() {
                assert!(sel.is_null(), "all namespaces: {sel}");
            } else {
                assert_eq!(sel["matchExpressions"][0]["values"], json!(watched));
            }
        }

        // Hardened pod.
        let pod = &deploy["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(pod["serviceAccountName"], SA);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["args"], json!(["run"]));
        // The probes on the plain health port (the kubelet has no token).
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "health", "{probe}");
            assert!(c[probe]["httpGet"]["scheme"].is_null(), "{probe}: HTTP");
        }
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["ports"][0]["name"], "metrics");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        let health_port = if set.contains(&"health.port=9091") {
            9091
        } else {
            8081
        };
        assert_eq!(c["ports"][1]["name"], "health");
        assert_eq!(c["ports"][1]["containerPort"], health_port);
        assert_eq!(
            env_value(deploy, "HEALTH_ADDR").unwrap(),
            format!("0.0.0.0:{health_port}")
        );
        let env = env_of(deploy);
        let field = |n: &str| {
            env.iter()
                .find(|(k, _)| k == n)
                .map(|(_, e)| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
        };
        assert_eq!(field("POD_NAME"), Some(json!("metadata.name")));
        assert_eq!(field("POD_NAMESPACE"), Some(json!("metadata.namespace")));
        assert_eq!(
            env_value(deploy, "LEADER_ELECTION_NAMESPACE").as_deref(),
            Some("emr-system")
        );
        // Every variable the chart sets is one the binary reads (or an Alibaba Cloud one).
        let help = run_help();
        let main_rs = include_str!("../../src/cli/mod.rs");
        for (name, _) in &env {
            assert!(
                name.starts_with("ALIBABA_CLOUD_")
                    || help.contains(&format!("[env: {name}="))
                    || main_rs.contains(&format!("std::env::var(\"{name}\")")),
                "the chart sets {name}, which `emr-ray-operator run` does not read"
            );
        }
    }
}

/// `helm template` with a values document (for what `--set` cannot say, such as an empty list).
fn template_values(values: Value) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.json");
    std::fs::write(&file, values.to_string()).unwrap();
    let mut cmd = offline_helm();
    cmd.args([
        "template",
        RELEASE,
        CHART,
        "--namespace",
        "emr-system",
        "--kube-version",
        "1.34.0",
        "-f",
    ])
    .arg(&file);
    yaml_docs(&run(cmd))
}

fn volume<'a>(deploy: &'a Value, name: &str) -> Option<&'a Value> {
    deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

fn mount<'a>(deploy: &'a Value, name: &str) -> Option<&'a Value> {
    deploy["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

/// The defaults protect `/metrics`: HTTPS with a generated certificate (no Secret mounted), the
/// token review RBAC, a ServiceMonitor that sends its token and skips verification of that
/// certificate, and a NetworkPolicy admitting only the `monitoring` namespace to the metrics
/// port. An empty `metricsFrom` admits no one; a certificate Secret or cert-manager gives the
/// operator files and the ServiceMonitor a CA and a server name.
#[test]
fn helm_template_renders_secure_metrics_and_the_network_policy() {
    let deployment = |docs: &[Value]| {
        find(docs, "Deployment", "emr-ray-operator")
            .cloned()
            .unwrap()
    };
    let endpoint =
        |docs: &[Value]| kinds(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0].clone();
    let monitored = json!({"metrics": {"serviceMonitor": {"enabled": true}}});

    // Defaults.
    let docs = template_values(monitored.clone());
    let deploy = deployment(&docs);
    assert_eq!(
        env_value(&deploy, "METRICS_SECURE").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_value(&deploy, "METRICS_REVIEWS_PER_SECOND").as_deref(),
        Some("5")
    );
    assert_eq!(
        env_value(&deploy, "METRICS_REVIEW_BURST").as_deref(),
        Some("10")
    );
    assert_eq!(
        env_value(&deploy, "METRICS_CERT_DIR"),
        None,
        "generated certificate"
    );
    assert!(volume(&deploy, "metrics-tls").is_none());
    let ep = endpoint(&docs);
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["scheme"], "https");
    assert_eq!(
        ep["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(ep["tlsConfig"], json!({"insecureSkipVerify": true}));
    let auth = find(
        &docs,
        "ClusterRole",
        "emr-ray-operator-emr-system-metrics-auth",
    )
    .unwrap();
    assert_eq!(
        rules_of(auth),
        vec![
            (
                "authentication.k8s.io".into(),
                "tokenreviews".into(),
                vec!["create".into()]
            ),
            (
                "authorization.k8s.io".into(),
                "subjectaccessreviews".into(),
                vec!["create".into()]
            ),
        ]
    );
    let reader = find(
        &docs,
        "ClusterRole",
        "emr-ray-operator-emr-system-metrics-reader",
    )
    .unwrap();
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    // The Service exposes the metrics port only (health is the kubelet's).
    let svc = find(&docs, "Service", "emr-ray-operator-metrics").unwrap();
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );
    let np = &kinds(&docs, "NetworkPolicy")[0];
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        }]),
        "only the monitoring namespace, only the metrics port"
    );

    // An empty metricsFrom admits no one: no ingress rule at all (a rule without "from" would
    // admit every source).
    let docs = template_values(json!({"networkPolicy": {"metricsFrom": []}}));
    let np = &kinds(&docs, "NetworkPolicy")[0];
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    let rules = np["spec"]["ingress"].as_array().map_or(0, Vec::len);
    assert_eq!(rules, 0, "no ingress rule: {np}");
    let docs = template_values(json!({"networkPolicy": {"metricsFrom": null}}));
    assert_eq!(
        kinds(&docs, "NetworkPolicy")[0]["spec"]["ingress"]
            .as_array()
            .map_or(0, Vec::len),
        0
    );
    // Peers of the user's choice are kept as given.
    let peer = json!({"podSelector": {"matchLabels": {"app": "prometheus"}}});
    let docs = template_values(json!({"networkPolicy": {"metricsFrom": [peer]}}));
    assert_eq!(
        kinds(&docs, "NetworkPolicy")[0]["spec"]["ingress"][0]["from"],
        json!([peer])
    );

    // A certificate Secret: mounted, read from its directory, its CA verified by the scraper.
    let docs = template_values(json!({"metrics": {
        "tls": {"secretName": "my-metrics-tls"}, "serviceMonitor": {"enabled": true}}}));
    let deploy = deployment(&docs);
    let dir = env_value(&deploy, "METRICS_CERT_DIR").expect("METRICS_CERT_DIR");
    assert_eq!(
        mount(&deploy, "metrics-tls").unwrap()["mountPath"],
        dir.as_str()
    );
    assert_eq!(mount(&deploy, "metrics-tls").unwrap()["readOnly"], true);
    assert_eq!(
        volume(&deploy, "metrics-tls").unwrap()["secret"]["secretName"],
        "my-metrics-tls"
    );
    assert_eq!(
        endpoint(&docs)["tlsConfig"],
        json!({"ca": {"secret": {"name": "my-metrics-tls", "key": "ca.crt"}},
               "serverName": "emr-ray-operator-metrics.emr-system.svc"})
    );
    assert!(kinds(&docs, "Certificate").is_empty());

    // cert-manager: a Certificate for every instance's metrics Service into the mounted Secret;
    // a self-signed Issuer unless one is named.
    let docs = template_values(json!({"shards": [{"name": "a"}], "metrics": {
        "tls": {"certManager": {"enabled": true}}, "serviceMonitor": {"enabled": true}}}));
    let cert = &kinds(&docs, "Certificate")[0];
    assert_eq!(cert["spec"]["secretName"], "emr-ray-operator-metrics-tls");
    let names: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for svc in ["emr-ray-operator-metrics", "emr-ray-operator-a-metrics"] {
        assert!(names.contains(&svc), "{names:?}");
        assert!(
            names.contains(&format!("{svc}.emr-system.svc").as_str()),
            "{names:?}"
        );
    }
    let issuer = &kinds(&docs, "Issuer")[0];
    assert_eq!(issuer["spec"], json!({"selfSigned": {}}));
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );
    for name in ["emr-ray-operator", "emr-ray-operator-a"] {
        let deploy = find(&docs, "Deployment", name).unwrap();
        assert!(env_value(deploy, "METRICS_CERT_DIR").is_some(), "{name}");
        assert_eq!(
            volume(deploy, "metrics-tls").unwrap()["secret"]["secretName"],
            "emr-ray-operator-metrics-tls"
        );
    }
    assert_eq!(
        endpoint(&docs)["tlsConfig"]["ca"]["secret"]["name"],
        "emr-ray-operator-metrics-tls"
    );
    let docs = template_values(json!({"metrics": {"tls": {"certManager": {
        "enabled": true, "issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}}}}));
    assert!(kinds(&docs, "Issuer").is_empty());
    assert_eq!(
        kinds(&docs, "Certificate")[0]["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );

    // The ServiceMonitor's tlsConfig can be given whole.
    let given = json!({"ca": {"configMap": {"name": "corp-ca", "key": "ca.crt"}}, "serverName": "metrics.example"});
    let docs = template_values(
        json!({"metrics": {"serviceMonitor": {"enabled": true, "tlsConfig": given}}}),
    );
    assert_eq!(endpoint(&docs)["tlsConfig"], given);

    // Not secure: plain HTTP and no token, whatever certificate is configured; no review RBAC.
    let docs = template_values(json!({"metrics": {"secure": false,
        "tls": {"secretName": "ignored", "certManager": {"enabled": true}},
        "serviceMonitor": {"enabled": true}}}));
    let deploy = deployment(&docs);
    assert_eq!(
        env_value(&deploy, "METRICS_SECURE").as_deref(),
        Some("false")
    );
    assert_eq!(env_value(&deploy, "METRICS_CERT_DIR"), None);
    assert!(volume(&deploy, "metrics-tls").is_none());
    assert!(kinds(&docs, "Certificate").is_empty());
    assert_eq!(
        endpoint(&docs),
        json!({"port": "metrics", "path": "/metrics",
        "interval": "30s", "scrapeTimeout": "10s", "scheme": "http"})
    );
    assert!(
        find(
            &docs,
            "ClusterRole",
            "emr-ray-operator-emr-system-metrics-auth"
        )
        .is_none()
    );
}

/// `rrsa.enabled`: a kubelet-projected ServiceAccount token for STS's audience at ACK's RRSA
/// path, and the SDK's variables naming it; without the ARNs the chart refuses to render.
/// `hostAliases` lands in the pod spec.
#[test]
fn helm_template_renders_rrsa_and_host_aliases() {
    let plain = template(&[]);
    let deploy = find(&plain, "Deployment", "emr-ray-operator").unwrap();
    assert_eq!(env_value(deploy, "ALIBABA_CLOUD_OIDC_TOKEN_FILE"), None);
    assert!(deploy["spec"]["template"]["spec"]["hostAliases"].is_null());

    let docs = template(&[
        "rrsa.enabled=true",
        "rrsa.roleArn=acs:ram::1:role/emr",
        "rrsa.oidcProviderArn=acs:ram::1:oidc-provider/ack-rrsa-c1",
        "rrsa.stsEndpoint=https://sts-vpc.cn-hangzhou.aliyuncs.com",
        "hostAliases[0].ip=10.0.0.10",
        "hostAliases[0].hostnames[0]=emr.internal",
    ]);
    let deploy = find(&docs, "Deployment", "emr-ray-operator").unwrap();
    let token = "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token";
    assert_eq!(
        env_value(deploy, "ALIBABA_CLOUD_OIDC_TOKEN_FILE").as_deref(),
        Some(token)
    );
    assert_eq!(
        env_value(deploy, "ALIBABA_CLOUD_ROLE_ARN").as_deref(),
        Some("acs:ram::1:role/emr")
    );
    assert_eq!(
        env_value(deploy, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN").as_deref(),
        Some("acs:ram::1:oidc-provider/ack-rrsa-c1")
    );
    assert_eq!(
        env_value(deploy, "ALIBABA_CLOUD_STS_ENDPOINT").as_deref(),
        Some("https://sts-vpc.cn-hangzhou.aliyuncs.com")
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "rrsa-oidc-token")
        .expect("the projected token volume");
    let source = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(source["audience"], "sts.aliyuncs.com");
    assert_eq!(source["path"], "token");
    assert_eq!(source["expirationSeconds"], 3600);
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "rrsa-oidc-token")
        .expect("the token's mount");
    assert_eq!(
        format!("{}/token", mount["mountPath"].as_str().unwrap()),
        token
    );
    assert_eq!(mount["readOnly"], true);
    assert_eq!(pod["hostAliases"][0]["hostnames"][0], "emr.internal");

    let mut cmd = offline_helm();
    cmd.args(["template", RELEASE, CHART, "--set", "rrsa.enabled=true"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("rrsa.enabled needs rrsa.roleArn and rrsa.oidcProviderArn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `shards`: one Deployment (own Lease, `SHARD_SELECTOR`), metrics Service and PDB per shard,
/// plus the default instance serving the rest; pod selectors never overlap; RBAC shared.
#[test]
fn helm_template_renders_one_instance_per_shard() {
    use emr_ray_operator::operator::shard::ShardSelector;

    // Without shards: no selector, the default objects only.
    let plain = template(&[]);
    let deploy = find(&plain, "Deployment", "emr-ray-operator").unwrap();
    assert_eq!(env_value(deploy, "SHARD_SELECTOR"), None);
    assert_eq!(kinds(&plain, "Deployment").len(), 1);

    let docs = template(&[
        "replicas=2",
        "shards[0].name=a",
        "shards[0].replicas=1",
        "shards[1].name=b",
        "shards[1].resources.limits.memory=1Gi",
    ]);
    // (instance suffix, shard pod label, replicas, workspaces served, workspaces not served)
    type Labels<'a> = &'a [Option<&'a str>];
    let instances: [(&str, &str, i64, Labels, Labels); 3] = [
        (
            "",
            "default",
            2,
            &[None, Some("c")],
            &[Some("a"), Some("b")],
        ),
        ("-a", "a", 1, &[Some("a")], &[None, Some("b"), Some("c")]),
        // Replicas not set: the default instance's.
        ("-b", "b", 2, &[Some("b")], &[None, Some("a")]),
    ];
    assert_eq!(kinds(&docs, "Deployment").len(), 3);
    assert_eq!(kinds(&docs, "Service").len(), 3);
    let mut leases = Vec::new();
    let mut pod_label_sets = Vec::new();
    for (suffix, shard, replicas, served, not_served) in instances {
        let name = format!("emr-ray-operator{suffix}");
        let deploy = find(&docs, "Deployment", &name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(deploy["spec"]["replicas"], replicas, "{name}");
        let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["emr.aliyun.io/shard"], shard, "{name}");
        let selector = &deploy["spec"]["selector"]["matchLabels"];
        if shard == "default" {
            // Kept as without shards: a Deployment's selector cannot change.
            assert!(selector["emr.aliyun.io/shard"].is_null(), "{selector}");
        } else {
            assert_eq!(selector["emr.aliyun.io/shard"], shard, "{name}");
        }
        pod_label_sets.push(pod_labels.clone());
        let sel = env_value(deploy, "SHARD_SELECTOR").expect("SHARD_SELECTOR");
        let parsed = ShardSelector::parse(&sel).unwrap().expect("a selector");
        for v in served {
            assert!(parsed.matches(*v), "{name} ({sel}) must serve {v:?}");
        }
        for v in not_served {
            assert!(!parsed.matches(*v), "{name} ({sel}) must not serve {v:?}");
        }
        let lease = env_value(deploy, "LEADER_ELECTION_LEASE_NAME").unwrap();
        assert_eq!(lease, format!("emr-ray-operator-leader{suffix}"));
        leases.push(lease);
        let pod = &deploy["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], SA);
        let memory = &pod["containers"][0]["resources"]["limits"]["memory"];
        assert_eq!(memory, if shard == "b" { "1Gi" } else { "256Mi" }, "{name}");

        let svc = find(
            &docs,
            "Service",
            &format!("emr-ray-operator{suffix}-metrics"),
        )
        .unwrap_or_else(|| panic!("Service of {name}"));
        assert_eq!(svc["spec"]["selector"]["emr.aliyun.io/shard"], shard);
        assert_eq!(
            svc["metadata"]["labels"]["app.kubernetes.io/name"],
            "emr-ray-operator"
        );
        let pdb = find(&docs, "PodDisruptionBudget", &name);
        assert_eq!(pdb.is_some(), replicas > 1, "PDB of {name}");
        if let Some(pdb) = pdb {
            assert_eq!(
                pdb["spec"]["selector"]["matchLabels"]["emr.aliyun.io/shard"],
                shard
            );
        }
    }
    // Each Service and PDB selects the pods of one instance only.
    for svc in kinds(&docs, "Service") {
        let sel = svc["spec"]["selector"].as_object().unwrap();
        let matching = pod_label_sets
            .iter()
            .filter(|labels| sel.iter().all(|(k, v)| labels[k] == *v))
            .count();
        assert_eq!(matching, 1, "{}", svc["metadata"]["name"]);
    }
    // RBAC is shared; the leader-election Role names every instance's Lease.
    assert_eq!(kinds(&docs, "ServiceAccount").len(), 1);
    // The operator's, the cluster-credentials reader's, (secure metrics) the token
    // reviewer's and the shards' namespace watchers'.
    assert_eq!(kinds(&docs, "ClusterRoleBinding").len(), 4);
    let role = find(&docs, "Role", "emr-ray-operator-leader-election").unwrap();
    let mut names: Vec<String> = role["rules"][1]["resourceNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    names.sort();
    leases.sort();
    assert_eq!(names, leases);
}

fn run_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
        .args(["run", "--help"])
        .output()
        .expect("emr-ray-operator run --help");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Against the real control plane
// ---------------------------------------------------------------------------------------------

/// `helm install` into `ns`, watching `ns` only (so the read-only policy binding applies to
/// this namespace alone and never to other tests' namespaces), with the values of `set`. CRDs
/// are installed by `common::install_crds` (shared, never deleted).
fn helm_install(ns: &str, set: &[&str]) {
    let mut cmd = common::helm();
    cmd.current_dir(common::repo_root()).args([
        "install",
        RELEASE,
        CHART,
        "--namespace",
        ns,
        "--skip-crds",
        "--set",
        &format!("watchNamespaces={{{ns}}}"),
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    run(cmd);
}

fn helm_uninstall(ns: &str) {
    let mut cmd = common::helm();
    cmd.args(["uninstall", RELEASE, "--namespace", ns]);
    run(cmd);
}

fn job_obj(name: &str) -> Value {
    json!({
        "apiVersion": "emr.aliyun.io/v1alpha1",
        "kind": "EmrRayJob",
        "metadata": {"name": name},
        "spec": {"workspaceRef": "prod", "workspaceId": "w-1", "regionId": "cn-hangzhou",
                 "submissionId": name},
    })
}

fn mirror_obj(name: &str) -> Value {
    json!({
        "apiVersion": "emr.aliyun.io/v1alpha1",
        "kind": "EmrRayCluster",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "someone-else"}},
        "spec": {"workspaceRef": "prod", "workspaceId": "w-1", "regionId": "cn-hangzhou",
                 "clusterId": name},
    })
}

/// Waits until the chart's read-only policy denies an admin's mirror creation in `ns` (the API
/// server loads a new policy within seconds).
async fn wait_policy_in_force(client: &kube::Client, ns: &str) {
    let api: Api<EmrRayCluster> = Api::namespaced(client.clone(), ns);
    common::wait_for(
        Duration::from_secs(60),
        "the read-only policy in force",
        || async {
            let obj: EmrRayCluster = serde_json::from_value(mirror_obj("policy-probe")).unwrap();
            match api.create(&PostParams::default(), &obj).await {
                Err(e) if is_policy_denial(&e) => Some(()),
                Ok(_) => {
                    let _ = api.delete("policy-probe", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await
}

fn is_policy_denial(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains(DENIED))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_enforces_read_only_mirrors() {
    let ns = common::TestNamespace::new("chart-readonly").await;
    let admin = ns.client.clone();
    common::install_crds(&admin).await;
    let name = ns.name.clone();
    tokio::task::spawn_blocking({
        let n = name.clone();
        move || helm_install(&n, &[])
    })
    .await
    .unwrap();

    // The chart's objects exist (no kubelet here: pods never run, so no --wait).
    Api::<Deployment>::namespaced(admin.clone(), &name)
        .get(RELEASE)
        .await
        .expect("Deployment");
    Api::<ServiceAccount>::namespaced(admin.clone(), &name)
        .get(SA)
        .await
        .expect("ServiceAccount");
    Api::<Service>::namespaced(admin.clone(), &name)
        .get("emr-ray-operator-metrics")
        .await
        .expect("metrics Service");
    Api::<Role>::namespaced(admin.clone(), &name)
        .get(RELEASE)
        .await
        .expect("operator Role");
    Api::<RoleBinding>::namespaced(admin.clone(), &name)
        .get("emr-ray-operator-leader-election")
        .await
        .expect("leader-election RoleBinding");
    let policy_name = format!("emr-ray-operator-{name}-read-only-mirrors");
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .get(&policy_name)
        .await
        .expect("ValidatingAdmissionPolicy");
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .get(&policy_name)
        .await
        .expect("ValidatingAdmissionPolicyBinding");

    // An ordinary user who RBAC allows to write mirrors.
    Api::<ServiceAccount>::namespaced(admin.clone(), &name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "someone"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), &name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "mirror-writer"},
                "rules": [{"apiGroups": ["emr.aliyun.io"],
                           "resources": ["emrrayclusters", "emrrayclusters/status",
                                         "emrrayjobs", "emrrayjobs/status"],
                           "verbs": ["get", "list", "create", "update", "patch", "delete"]}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "mirror-writer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mirror-writer"},
                "subjects": [{"kind": "ServiceAccount", "name": "someone", "namespace": name}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let user = common::service_account_client(&admin, &name, "someone").await;
    let operator = common::service_account_client(&admin, &name, SA).await;
    let user_api: Api<EmrRayCluster> = Api::namespaced(user.clone(), &name);
    let op_api: Api<EmrRayCluster> = Api::namespaced(operator.clone(), &name);
    let admin_api: Api<EmrRayCluster> = Api::namespaced(admin.clone(), &name);

    // The user is denied creating a mirror (the binding takes a few seconds to take effect).
    let mut attempt = 0u32;
    let denial = common::wait_for(
        Duration::from_secs(60),
        "the read-only policy to deny the user's create",
        || {
            attempt += 1;
            let n = format!("user-made-{attempt}");
            let (user_api, admin_api) = (user_api.clone(), admin_api.clone());
            async move {
                match user_api
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(mirror_obj(&n)).unwrap(),
                    )
                    .await
                {
                    Err(e) if is_policy_denial(&e) => Some(e),
                    Err(e) => panic!("unexpected error creating {n} as a user: {e}"),
                    Ok(_) => {
                        // Not enforced yet: clean up and retry.
                        let _ = admin_api.delete(&n, &DeleteParams::default()).await;
                        None
                    }
                }
            }
        },
    )
    .await;
    let kube::Error::Api(status) = &denial else {
        unreachable!()
    };
    assert!(
        status
            .message
            .contains("change the remote Ray cluster or job, or its EmrWorkspace, instead"),
        "{}",
        status.message
    );
    // The user is also denied a server-side apply.
    let err = user_api
        .patch(
            "user-applied",
            &PatchParams::apply("someone"),
            &Patch::Apply(mirror_obj("user-applied")),
        )
        .await
        .expect_err("user apply is denied");
    assert!(is_policy_denial(&err), "{err}");

    // The operator's ServiceAccount may create a mirror and its status.
    let pp = PatchParams::apply("emr-ray-operator").force();
    op_api
        .patch("op-made", &pp, &Patch::Apply(mirror_obj("op-made")))
        .await
        .expect("the operator's ServiceAccount creates a mirror");
    op_api
        .patch_status(
            "op-made",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrRayCluster",
                "metadata": {"name": "op-made"},
                "status": {"state": "Running", "displayName": "made by the operator"},
            })),
        )
        .await
        .expect("the operator's ServiceAccount writes the status");

    // The user may neither update the mirror nor its status...
    let err = user_api
        .patch(
            "op-made",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tampered": "true"}}})),
        )
        .await
        .expect_err("user update is denied");
    assert!(is_policy_denial(&err), "{err}");
    let err = user_api
        .patch_status(
            "op-made",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Error"}})),
        )
        .await
        .expect_err("user status update is denied");
    assert!(is_policy_denial(&err), "{err}");
    let m = admin_api.get("op-made").await.unwrap();
    assert_eq!(m.status.unwrap().state.as_deref(), Some("Running"));
    assert!(
        !m.metadata
            .labels
            .unwrap_or_default()
            .contains_key("tampered")
    );

    // ...nor delete it (under goneClusterPolicy Keep it could never come back).
    let err = user_api
        .delete("op-made", &DeleteParams::default())
        .await
        .expect_err("user delete is denied");
    assert!(is_policy_denial(&err), "{err}");

    // Job mirrors are read-only the same way: the operator writes them, the user may not
    // create, change (status included) or delete one.
    let user_jobs: Api<EmrRayJob> = Api::namespaced(user.clone(), &name);
    let op_jobs: Api<EmrRayJob> = Api::namespaced(operator.clone(), &name);
    let err = user_jobs
        .patch(
            "user-job",
            &PatchParams::apply("someone"),
            &Patch::Apply(job_obj("user-job")),
        )
        .await
        .expect_err("user job create is denied");
    assert!(is_policy_denial(&err), "{err}");
    op_jobs
        .patch("op-job", &pp, &Patch::Apply(job_obj("op-job")))
        .await
        .expect("the operator's ServiceAccount creates a job mirror");
    op_jobs
        .patch_status(
            "op-job",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrRayJob",
                "metadata": {"name": "op-job"},
                "status": {"state": "Failed"},
            })),
        )
        .await
        .expect("the operator's ServiceAccount writes a job mirror's status");
    let err = user_jobs
        .patch_status(
            "op-job",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Succeeded"}})),
        )
        .await
        .expect_err("user job status update is denied");
    assert!(is_policy_denial(&err), "{err}");
    let err = user_jobs
        .delete("op-job", &DeleteParams::default())
        .await
        .expect_err("user job delete is denied");
    assert!(is_policy_denial(&err), "{err}");
    let j = Api::<EmrRayJob>::namespaced(admin.clone(), &name)
        .get("op-job")
        .await
        .unwrap();
    assert_eq!(j.status.unwrap().state.as_deref(), Some("Failed"));

    tokio::task::spawn_blocking({
        let n = name.clone();
        move || helm_uninstall(&n)
    })
    .await
    .unwrap();
    assert!(
        Api::<ValidatingAdmissionPolicy>::all(admin.clone())
            .get_opt(&policy_name)
            .await
            .unwrap()
            .is_none(),
        "helm uninstall removes the policy"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_runs_with_exactly_the_chart_rbac() {
    let mut env = Env::new("chart-rbac").await;
    let ns = env.ns.name.clone();
    tokio::task::spawn_blocking({
        let n = ns.clone();
        move || helm_install(&n, &[])
    })
    .await
    .unwrap();
    let sa_client = common::service_account_client(&env.client, &ns, SA).await;

    // Configured like the chart's Deployment: watch the release namespace, lease there.
    let lease_name = "emr-ray-operator-leader";
    let metrics_port = common::free_port();
    let cfg = OperatorConfig {
        namespaces: vec![ns.clone()],
        concurrency: 4,
        // Secure metrics, as the chart's defaults: its RBAC must allow the reviews.
        metrics_addr: Some(([127, 0, 0, 1], metrics_port).into()),
        secure_metrics: Some(emr_ray_operator::operator::http::SecureMetrics::self_signed()),
        leader_election: Some(LeaseConfig {
            namespace: ns.clone(),
            name: lease_name.into(),
            identity: "chart-test-0".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }),
        requests_per_second: 50.0,
        burst: 50,
        request_timeout: Duration::from_secs(2),
        listing_timeout: Duration::from_secs(20),
        allowed_endpoints: vec!["http://127.0.0.1:*".parse().unwrap()],
        ..OperatorConfig::embedded("chart-test-0")
    };
    env.create_workspace("prod", json!({})).await;
    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(emr_ray_operator::operator::run(
        sa_client.clone(),
        cfg,
        metrics.clone(),
        token.clone(),
    ));
    env.operators.push(Operator {
        token,
        metrics,
        task,
    });

    let st = env
        .wait_ready("prod", "True", Some("Synced"), Duration::from_secs(90))
        .await;
    assert_eq!(st.clusters, Some(1));
    let m = env
        .wait_mirror(
            EXAMPLE_CLUSTER,
            Duration::from_secs(30),
            "example mirror",
            |m| m.status.as_ref().and_then(|s| s.state.as_deref()) == Some("Running"),
        )
        .await;
    assert_eq!(m.spec.cluster_id, EXAMPLE_CLUSTER);

    // The lease was taken in the release namespace.
    let lease = Api::<Lease>::namespaced(env.client.clone(), &ns)
        .get(lease_name)
        .await
        .expect("leader Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("chart-test-0")
    );

    // Events were recorded (events.k8s.io create).
    let events: Api<KubeEvent> = Api::namespaced(env.client.clone(), &ns);
    common::wait_for(
        Duration::from_secs(30),
        "an event from the operator",
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| e.reporting_controller.as_deref() == Some("emr-ray-operator"))
                    .then_some(())
            }
        },
    )
    .await;

    // Nobody but the operator (and the garbage collector) deletes a mirror, not even an admin
    // outside the policy's break-glass groups (once the API server has loaded the policy).
    wait_policy_in_force(&env.client, &ns).await;
    let name = m.metadata.name.clone().unwrap();
    let err = env
        .mirrors()
        .delete(&name, &DeleteParams::default())
        .await
        .expect_err("deleting a mirror is denied");
    assert!(is_policy_denial(&err), "{err}");

    // A scraper bound to the chart's metrics-reader role reads /metrics: the operator's
    // TokenReview and SubjectAccessReview go through with the chart's RBAC alone.
    Api::<ServiceAccount>::namespaced(env.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "scraper"}})).unwrap(),
        )
        .await
        .unwrap();
    let binding = format!("scraper-{ns}");
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": binding},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": format!("{RELEASE}-{ns}-metrics-reader")},
                "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": ns}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    common::wait_for(
        Duration::from_secs(60),
        "a scrape allowed by the chart's reader role",
        || async {
            // A fresh token each time: a refusal from before the binding took effect is
            // cached per token.
            let token = common::service_account_token(&env.client, &ns, "scraper").await;
            let r = https
                .get(format!("https://127.0.0.1:{metrics_port}/metrics"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(env.client.clone())
        .delete(&binding, &DeleteParams::default())
        .await;

    // The operator reports no failed sync.
    let text = env.operators[0].metrics.encode();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("emr_ray_operator_sync_failures_total{")),
        "sync failures recorded:\n{text}"
    );

    tokio::task::spawn_blocking({
        let n = ns.clone();
        move || helm_uninstall(&n)
    })
    .await
    .unwrap();
    env.teardown().await;
}

/// A shard with exactly the chart's RBAC (`shards` and `watchNamespaces`): it lists and watches
/// its namespace by name (the ClusterRole names the watched namespaces), serves the workspaces
/// of the namespace labelled for it, and labels their mirrors with the namespace's label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_runs_with_exactly_the_chart_rbac() {
    use emr_ray_operator::api::LABEL_SHARD;
    use emr_ray_operator::operator::shard::ShardSelector;
    use k8s_openapi::api::core::v1::Namespace;

    let mut env = Env::new("chart-shard").await;
    let ns = env.ns.name.clone();
    tokio::task::spawn_blocking({
        let n = ns.clone();
        move || helm_install(&n, &["shards[0].name=a"])
    })
    .await
    .unwrap();
    let sa_client = common::service_account_client(&env.client, &ns, SA).await;
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL_SHARD: "a"}}})),
        )
        .await
        .expect("namespace labelled");
    env.create_workspace("prod", json!({})).await;
    let cfg = OperatorConfig {
        identity: "chart-shard-a".into(),
        shard_selector: ShardSelector::parse(&format!("{LABEL_SHARD}=a")).unwrap(),
        ..operator_config(&ns)
    };
    env.operators.push(start_operator(&sa_client, cfg));

    let st = env
        .wait_ready("prod", "True", Some("Synced"), Duration::from_secs(90))
        .await;
    assert_eq!(st.clusters, Some(1));
    let m = env
        .wait_mirror(
            EXAMPLE_CLUSTER,
            Duration::from_secs(30),
            "example mirror labelled for shard a",
            |m| m.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SHARD)) == Some(&"a".into()),
        )
        .await;
    assert_eq!(m.spec.cluster_id, EXAMPLE_CLUSTER);

    tokio::task::spawn_blocking({
        let n = ns.clone();
        move || helm_uninstall(&n)
    })
    .await
    .unwrap();
    env.teardown().await;
}
