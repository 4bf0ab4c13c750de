//! Tenancy on the real control plane: a user with only the built-in `edit` role in namespace A
//! cannot borrow the operator's identity or another tenant's credentials, cannot send
//! credentials to an endpoint of their choosing, cannot change which remote workspace an
//! `EmrWorkspace` names, and cannot delete mirrors; the operator's ServiceAccount cannot list or
//! watch Secrets.

use std::time::Duration;

use emr_ray_operator::api::EmrClusterCredentials;
use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common;
use crate::support::*;

const RELEASE: &str = "emr-ray-operator";

fn apply() -> PatchParams {
    PatchParams::apply("tests").force()
}

fn workspace(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
           "metadata": {"name": name}, "spec": spec})
}

fn can_i(verb: &str, resource: &str, ns: &str, sa: &str) -> String {
    let out = common::kubectl()
        .args(["auth", "can-i", verb, resource, "-n", ns])
        .arg(format!("--as=system:serviceaccount:{ns}:{sa}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_editor_cannot_borrow_identities_endpoints_or_mirrors() {
    let mut env = Env::new("tenant-a").await;
    let ns = env.ns.name.clone();
    let admin = env.client.clone();
    // The chart in namespace A: the aggregated roles (edit writes EmrWorkspaces), the operator's
    // RBAC, and the read-only policy (the in-process operator runs as an admin: allowed).
    let out = common::helm()
        .current_dir(common::repo_root())
        .args([
            "install",
            RELEASE,
            "charts/emr-ray-operator",
            "--namespace",
            &ns,
        ])
        .args(["--skip-crds", "--set", &format!("watchNamespaces={{{ns}}}")])
        .args([
            "--set",
            "readOnlyMirrors.extraAllowedGroups={system:masters}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // alice: the built-in "edit" role in namespace A, nothing else.
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    let alice = common::impersonating_client("alice").await;
    let alice_ws: Api<emr_ray_operator::api::EmrWorkspace> = Api::namespaced(alice.clone(), &ns);

    // Cluster credentials are for cluster admins: alice cannot create any.
    let cc_name = format!("shared-{}", &ns[ns.len() - 8..]);
    let cc = |namespaces: Vec<String>, secret_ns: &str| {
        serde_json::from_value::<EmrClusterCredentials>(json!({
            "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrClusterCredentials",
            "metadata": {"name": cc_name},
            "spec": {"source": {"secretRef": {"namespace": secret_ns, "name": "shared-key"}},
                     "namespaces": namespaces},
        }))
        .unwrap()
    };
    let err = Api::<EmrClusterCredentials>::all(alice.clone())
        .create(&PostParams::default(), &cc(vec![ns.clone()], &ns))
        .await
        .expect_err("an editor cannot create cluster credentials");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    // An admin's cluster credentials (a key in an admin-only namespace), granted to nobody.
    let admin_ns = common::TestNamespace::create_on(admin.clone(), "tenant-admin").await;
    Api::<Secret>::namespaced(admin.clone(), &admin_ns.name)
        .patch(
            "shared-key",
            &apply(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "shared-key"},
                "stringData": {"accessKeyId": DEFAULT_ACCESS_KEY_ID,
                               "accessKeySecret": DEFAULT_ACCESS_KEY_SECRET}})),
        )
        .await
        .unwrap();
    let ccs: Api<EmrClusterCredentials> = Api::all(admin.clone());
    ccs.create(&PostParams::default(), &cc(vec![], &admin_ns.name))
        .await
        .unwrap();
    env.start();

    // alice's workspace borrows them: refused, and nothing is called.
    let spec = json!({"regionId": "cn-hangzhou", "workspaceId": WS, "endpoint": env.endpoint(),
                      "syncInterval": "10s",
                      "credentials": {"clusterCredentialsRef": {"name": cc_name}}});
    alice_ws
        .patch(
            "borrow",
            &apply(),
            &Patch::Apply(workspace("borrow", spec.clone())),
        )
        .await
        .expect("an editor writes EmrWorkspaces");
    let st = env
        .wait_ready(
            "borrow",
            "False",
            Some("CredentialsNotPermitted"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        condition(&st.conditions, "Stalled")
            .unwrap()
            .status
            .as_str(),
        "True"
    );
    assert_eq!(env.sim.state.stats().requests, 0, "no remote call");

    // Granted by the admin: mirrored.
    ccs.patch(
        &cc_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"namespaces": [ns]}})),
    )
    .await
    .unwrap();
    env.wait_ready("borrow", "True", Some("Synced"), Duration::from_secs(60))
        .await;
    env.wait_mirror(EXAMPLE_CLUSTER, Duration::from_secs(20), "mirror", |_| true)
        .await;

    // A tenant cannot name an identity, a role or a file any more.
    for creds in [
        json!({"environment": {}}),
        json!({"rrsa": {"oidcTokenFilePath": "/dev/zero", "roleArn": "acs:ram::1:role/admin"}}),
    ] {
        let mut s = spec.clone();
        s["credentials"] = creds.clone();
        let err = alice_ws
            .patch(
                "identity",
                &apply(),
                &Patch::Apply(workspace("identity", s)),
            )
            .await
            .expect_err("rejected at admission");
        assert!(err.to_string().contains("credentials"), "{creds}: {err}");
    }

    // An endpoint the operator does not allow: stalled, and no credential is read or sent.
    let mut s = spec.clone();
    s["endpoint"] = json!("http://169.254.169.254");
    s["workspaceId"] = json!("w-elsewhere");
    alice_ws
        .patch(
            "elsewhere",
            &apply(),
            &Patch::Apply(workspace("elsewhere", s)),
        )
        .await
        .unwrap();
    let st = env
        .wait_ready(
            "elsewhere",
            "False",
            Some("EndpointNotAllowed"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        condition(&st.conditions, "Stalled")
            .unwrap()
            .status
            .as_str(),
        "True"
    );

    // The remote workspace an EmrWorkspace names is immutable: its ID, and the endpoint it is
    // called at (explicit, or derived from the region and network).
    for change in [
        json!({"workspaceId": "w-other"}),
        json!({"endpoint": "https://emr-serverless-spark.cn-shanghai.aliyuncs.com"}),
        json!({"network": "VPC"}),
    ] {
        let err = alice_ws
            .patch(
                "borrow",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": change })),
            )
            .await
            .expect_err("the remote identity is immutable");
        assert!(err.to_string().contains("immutable"), "{change}: {err}");
    }

    // A second workspace for the same remote workspace: DuplicateWorkspace, naming the first.
    alice_ws
        .patch(
            "borrow-again",
            &apply(),
            &Patch::Apply(workspace("borrow-again", spec.clone())),
        )
        .await
        .unwrap();
    let st = env
        .wait_ready(
            "borrow-again",
            "False",
            Some("DuplicateWorkspace"),
            Duration::from_secs(60),
        )
        .await;
    let msg = &condition(&st.conditions, "Ready").unwrap().message;
    assert!(msg.contains("borrow"), "{msg}");

    // Mirrors are the operator's: alice cannot delete one.
    let err = Api::<emr_ray_operator::api::EmrRayCluster>::namespaced(alice.clone(), &ns)
        .delete(EXAMPLE_CLUSTER, &DeleteParams::default())
        .await
        .expect_err("an editor cannot delete mirrors");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    // The operator's ServiceAccount reads Secrets one by one, never lists or watches them.
    let sa = RELEASE;
    tokio::task::spawn_blocking({
        let ns = ns.clone();
        move || {
            assert_eq!(can_i("list", "secrets", &ns, sa), "no");
            assert_eq!(can_i("watch", "secrets", &ns, sa), "no");
            assert_eq!(can_i("get", "secrets", &ns, sa), "yes");
            assert_eq!(can_i("create", "emrclustercredentials", &ns, sa), "no");
        }
    })
    .await
    .unwrap();

    let _ = ccs.delete(&cc_name, &DeleteParams::default()).await;
    let _ = common::helm()
        .args(["uninstall", RELEASE, "--namespace", &ns])
        .output();
    admin_ns.cleanup().await;
    env.teardown().await;
}

/// With secure metrics (the generated self-signed certificate), `/metrics` (which names every
/// tenant's workspaces and clusters) answers, over HTTPS, only callers that a TokenReview
/// authenticates and a SubjectAccessReview allows; the health endpoints, on their own plain
/// HTTP port, stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_metrics_need_a_token_and_the_reader_role() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let mut env = Env::new("secure-metrics").await;
    let ns = env.ns.name.clone();
    let (port, health_port) = (common::free_port(), common::free_port());
    let mut cfg = operator_config(&ns);
    cfg.metrics_addr = Some(([127, 0, 0, 1], port).into());
    cfg.health_addr = Some(([127, 0, 0, 1], health_port).into());
    cfg.secure_metrics = Some(emr_ray_operator::operator::http::SecureMetrics::self_signed());
    env.operators.push(start_operator(&env.client, cfg));
    // Self-signed: nothing to verify it against (tests/integration/metrics_security.rs checks a
    // certificate from files against its CA).
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let get = |path: &str, token: Option<&str>| {
        let url = if path == "/metrics" {
            format!("https://127.0.0.1:{port}{path}")
        } else {
            format!("http://127.0.0.1:{health_port}{path}")
        };
        let mut r = http.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    common::wait_for(Duration::from_secs(30), "the HTTP servers", || async {
        (get("/healthz", None).await == 200 && get("/metrics", None).await != 0).then_some(())
    })
    .await;
    assert_eq!(get("/metrics", None).await, 401, "no token");
    assert_eq!(
        get("/metrics", Some("not-a-token")).await,
        401,
        "invalid token"
    );

    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "prometheus"}})).unwrap();
    Api::<ServiceAccount>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let token = common::service_account_token(&env.client, &ns, "prometheus").await;
    assert_eq!(
        get("/metrics", Some(&token)).await,
        403,
        "authenticated, not allowed"
    );

    // The chart's metrics-reader role, bound to the scraper.
    let role = format!("metrics-reader-{ns}");
    let cr: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": role},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    }))
    .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": ns}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(env.client.clone())
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    // A fresh token (the 403 above is cached for half a minute per token).
    let token = common::service_account_token(&env.client, &ns, "prometheus").await;
    common::wait_for(
        Duration::from_secs(30),
        "the reader role in force",
        || async { (get("/metrics", Some(&token)).await == 200).then_some(()) },
    )
    .await;
    // Health needs no token (the kubelet has none).
    common::wait_for(
        Duration::from_secs(30),
        "/readyz without a token",
        || async { (get("/readyz", None).await == 200).then_some(()) },
    )
    .await;
    let _ = Api::<ClusterRoleBinding>::all(env.client.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(env.client.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    env.teardown().await;
}

/// Cluster credentials whose `allowedEndpoints` do not admit the workspace's endpoint are
/// refused before their Secret is read: the reason is `EndpointNotAllowed` although the Secret
/// does not even exist, and nothing is called. Once the endpoint is allowed, the same
/// credentials fail on the missing Secret — the order of the checks shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_credentials_endpoints_are_checked_before_their_secret_is_read() {
    let mut env = Env::new("cc-endpoints").await;
    let ns = env.ns.name.clone();
    let cc_name = format!("narrow-{}", &ns[ns.len() - 8..]);
    let ccs: Api<EmrClusterCredentials> = Api::all(env.client.clone());
    ccs.patch(
        &cc_name,
        &apply(),
        &Patch::Apply(json!({
            "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrClusterCredentials",
            "metadata": {"name": cc_name},
            "spec": {
                "source": {"secretRef": {"namespace": ns, "name": "does-not-exist"}},
                "namespaces": [ns],
                "allowedEndpoints": ["https://emr-serverless-spark-vpc.cn-hangzhou.aliyuncs.com"],
            },
        })),
    )
    .await
    .unwrap();
    env.start();
    env.create_workspace(
        "narrow",
        json!({"credentials": {"clusterCredentialsRef": {"name": cc_name}}}),
    )
    .await;
    let st = env
        .wait_ready(
            "narrow",
            "False",
            Some("EndpointNotAllowed"),
            Duration::from_secs(60),
        )
        .await;
    let msg = &condition(&st.conditions, "Ready").unwrap().message;
    assert!(msg.contains("cluster credentials"), "{msg}");
    assert_eq!(env.sim.state.stats().requests, 0, "nothing called");

    ccs.patch(
        &cc_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"allowedEndpoints": ["http://127.0.0.1:*"]}})),
    )
    .await
    .unwrap();
    env.wait_ready(
        "narrow",
        "False",
        Some("SecretNotFound"),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(env.sim.state.stats().requests, 0, "still nothing called");
    // The admin's Secret is the admin's business: the tenant is told where the admin looks, the
    // cause is in an Event on the cluster credentials (Events of cluster-scoped objects are in
    // `default`).
    let st = env.status("narrow").await;
    let msg = &condition(&st.conditions, "Ready").unwrap().message;
    assert!(
        !msg.contains("does-not-exist")
            && msg.contains(&format!("Events of EmrClusterCredentials {cc_name}")),
        "{msg}"
    );
    let admin_event = common::wait_for(
        Duration::from_secs(30),
        "an Event on the cluster credentials",
        || async {
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), "default")
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cc_name.as_str())
                })
        },
    )
    .await;
    let note = admin_event.note.unwrap_or_default();
    assert!(
        note.contains("does-not-exist") && note.contains("narrow"),
        "{note}"
    );

    // An invalid namespaceSelector grants nothing, and answers exactly like cluster
    // credentials that do not exist (a tenant cannot probe which exist).
    ccs.patch(
        &cc_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"namespaces": [], "namespaceSelector":
            {"matchExpressions": [{"key": "team", "operator": "Bogus", "values": ["x"]}]}}})),
    )
    .await
    .unwrap();
    let st = env
        .wait_ready(
            "narrow",
            "False",
            Some("CredentialsNotPermitted"),
            Duration::from_secs(60),
        )
        .await;
    let invalid = condition(&st.conditions, "Ready").unwrap().message.clone();
    env.create_workspace(
        "absent",
        json!({"workspaceId": "w-absent", "credentials": {"clusterCredentialsRef": {"name": cc_name.clone() + "-absent"}}}),
    )
    .await;
    let st = env
        .wait_ready(
            "absent",
            "False",
            Some("CredentialsNotPermitted"),
            Duration::from_secs(60),
        )
        .await;
    let absent = condition(&st.conditions, "Ready").unwrap().message.clone();
    assert_eq!(
        invalid.replace(&cc_name, "X"),
        absent.replace(&format!("{cc_name}-absent"), "X")
    );
    let _ = ccs.delete(&cc_name, &DeleteParams::default()).await;
    env.teardown().await;
}
