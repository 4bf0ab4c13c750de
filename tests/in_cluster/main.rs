//! The chart end to end on a real node: the image `make image` built, imported into the node's
//! containerd, installed with `helm install` and run by the kubelet as its users run it — the
//! in-cluster configuration, the chart's ServiceAccount and RBAC as the only rights, user 65532
//! on a read-only root, the probes, two replicas and their Lease, `helm upgrade`, secure
//! metrics (the default: HTTPS and a token, as Prometheus scrapes), SIGTERM, RRSA with a token the kubelet projects and the simulator's STS verifies
//! against the API server's own issuer, and `helm uninstall`.
//!
//! It needs the node (`tests/control-plane/kcp.sh up --node`) and the image archive
//! (`make image`); `make test` provides both and runs it with `--ignored` (it is ignored in the
//! plain `cargo test` run, which has no node).

// The helpers every test binary shares (not the namespaces, CRDs and API server metrics of
// `common/mod.rs`: this test runs against the chart as installed).
#[path = "../common/base.rs"]
mod common;
mod image;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use emr_ray_operator::api::EmrRayCluster;
use emr_sim::oidc::OidcProvider;
use emr_sim::{SimConfig, SimHandle, Simulator};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

const CHART: &str = "charts/emr-ray-operator";
const RELEASE: &str = "emr-ray-operator";
const RELEASE_NS: &str = "emr-system";
const LEASE: &str = "emr-ray-operator-leader";
const SIM_HOST: &str = "emr-sim.test";
/// The API server's service-account issuer (`kcp`'s `--service-account-issuer`).
const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const OIDC_PROVIDER_ARN: &str = "acs:ram::1234567890:oidc-provider/ack-rrsa-kcp";
const ROLE_ARN: &str = "acs:ram::1234567890:role/emr-ray-operator";
const TENANT_NS: &str = "ml";
const RRSA_NS: &str = "ml-rrsa";
const WS_ID: &str = "w-d2d82aa09155";
const RRSA_WS_ID: &str = "w-rrsa00000001";

/// Figures the closing summary prints.
#[derive(Default)]
struct Figures(Vec<(String, String)>);

impl Figures {
    fn add(&mut self, what: &str, value: impl std::fmt::Display) {
        eprintln!("in-cluster: {what}: {value}");
        self.0.push((what.to_string(), value.to_string()));
    }
}

#[tokio::test]
#[ignore = "needs the node (kcp.sh up --node) and the image (make image): run by `make test`"]
async fn chart_on_a_real_node() {
    let client = common::client().await;
    let mut figures = Figures::default();
    node_is_ready(&client).await;
    // What an earlier run on this node may have left (the test leaves what `helm uninstall`
    // leaves, then removes it at the end).
    remove_everything();
    import_image();
    let bridge: IpAddr = std::env::var("KCP_NODE_BRIDGE_IP")
        .unwrap_or_else(|_| "10.244.0.1".into())
        .parse()
        .expect("KCP_NODE_BRIDGE_IP is an IP address");
    let sim = start_simulator(bridge).await;
    let values = base_values(bridge);
    let scraper = Scraper::new(&client).await;

    install_and_mirror(&client, &sim, &values, &mut figures).await;
    two_replicas_one_leader_and_sigterm(&client, &scraper, &mut figures).await;
    upgrade_rolls_without_losing_mirrors(&client, &scraper, &sim).await;
    secure_metrics(&client, &scraper).await;
    rrsa_with_the_kubelets_token(&client, &sim, &mut figures).await;
    uninstall_leaves_what_the_readme_says(&client).await;

    remove_everything();
    eprintln!("in-cluster figures:");
    for (what, value) in &figures.0 {
        eprintln!("  {what}: {value}");
    }
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// `helm install` with the chart's defaults but for the simulator's endpoint and name: the pod
/// is Ready, runs as 65532 on a read-only root, and mirrors the workspace with only the
/// chart's ServiceAccount.
async fn install_and_mirror(
    client: &Client,
    sim: &SimHandle,
    values: &Value,
    figures: &mut Figures,
) {
    let started = Instant::now();
    helm(
        &[
            "install",
            RELEASE,
            CHART,
            "-n",
            RELEASE_NS,
            "--create-namespace",
        ],
        values,
    );
    let pods = wait_ready_pods(client, 1, Duration::from_secs(120)).await;
    figures.add(
        "helm install → pod Ready",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    let pod = &pods[0];
    let pid = operator_pid(pod);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65532"),
        "the operator runs as 65532: {uid_line}"
    );
    assert!(root_is_read_only(pid), "the container's root is read-only");

    create_namespace(TENANT_NS);
    kubectl_apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "emr-credentials", "namespace": TENANT_NS},
        "stringData": {
            "accessKeyId": emr_sim::DEFAULT_ACCESS_KEY_ID,
            "accessKeySecret": emr_sim::DEFAULT_ACCESS_KEY_SECRET,
        },
    }));
    kubectl_apply(workspace(
        TENANT_NS,
        "prod",
        WS_ID,
        sim,
        json!({"secretRef": {"name": "emr-credentials"}}),
    ));
    let want = sim.state.clusters(WS_ID).len();
    let mirrors = wait_mirrors(client, TENANT_NS, want, Duration::from_secs(60)).await;
    figures.add("mirrors of workspace ml/prod", mirrors.len());
    let table = run(common::kubectl().args(["get", "emrrayclusters", "-n", TENANT_NS]));
    for m in &mirrors {
        assert!(
            table.contains(m.metadata.name.as_deref().unwrap_or("?")),
            "{table}"
        );
    }
}

/// `replicas: 2`: one Lease holder; deleting it (SIGTERM) ends its process before the grace
/// period, releases the Lease and hands over within the lease duration, and the new leader
/// writes nothing that was already right.
async fn two_replicas_one_leader_and_sigterm(
    client: &Client,
    scraper: &Scraper,
    figures: &mut Figures,
) {
    upgrade(&["replicas=2"]);
    let pods = wait_ready_pods(client, 2, Duration::from_secs(120)).await;
    let leader = wait_for_leader(client, &pods).await;
    let leaders: Vec<&str> = {
        let mut v = Vec::new();
        for p in &pods {
            if scraper.pod_metric(p, "emr_ray_operator_leader", None).await == Some(1.0) {
                v.push(p.metadata.name.as_deref().unwrap_or_default());
            }
        }
        v
    };
    assert_eq!(
        leaders,
        vec![leader.as_str()],
        "exactly the Lease holder says it leads"
    );
    let pdb: PodDisruptionBudget = Api::namespaced(client.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's PodDisruptionBudget");
    let pdb = common::wait_for(Duration::from_secs(30), "PDB status", || {
        let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), RELEASE_NS);
        let name = pdb.metadata.name.clone().unwrap_or_default();
        async move {
            let p = api.get(&name).await.ok()?;
            let s = p.status.clone()?;
            (s.current_healthy == 2).then_some(p)
        }
    })
    .await;
    assert_eq!(pdb.status.map(|s| s.disruptions_allowed), Some(1));

    let before = mirror_versions(client, TENANT_NS).await;
    let old = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(leader.as_str()))
        .expect("leader pod")
        .clone();
    let pid = operator_pid(&old);
    let grace = 30;
    let t0 = Instant::now();
    Api::<Pod>::namespaced(client.clone(), RELEASE_NS)
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("deleting the leader pod");
    // When each was first seen (polled every 100 ms: the times are measured).
    let seen = || std::cell::Cell::new(None::<Duration>);
    let (exited, released, handed_over) = (seen(), seen(), seen());
    let _ = common::poll(
        Duration::from_secs(grace),
        Duration::from_millis(100),
        || async {
            if exited.get().is_none() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                exited.set(Some(t0.elapsed()));
            }
            let holder = lease_holder(client).await;
            if released.get().is_none() && holder.is_none() {
                released.set(Some(t0.elapsed()));
            }
            if handed_over.get().is_none() && holder.as_deref().is_some_and(|h| h != leader) {
                handed_over.set(Some(t0.elapsed()));
            }
            (exited.get().is_some() && handed_over.get().is_some())
                .then_some(())
                .ok_or(())
        },
    )
    .await;
    let (exited, released, handed_over) = (exited.get(), released.get(), handed_over.get());
    let exited = exited.unwrap_or_else(|| panic!("the operator ignored SIGTERM for {grace}s"));
    let handed_over = handed_over.expect("no replica took the Lease over");
    // The standby tries every renew period (5 s): a hand-over well inside that is the leader's
    // release, not the lease running out; the empty holder was seen, or the hand-over was that
    // fast.
    assert!(
        released.is_some() || handed_over < Duration::from_secs(5),
        "the leader released the Lease on SIGTERM"
    );
    figures.add(
        "SIGTERM → process exit",
        format!("{:.1} s", exited.as_secs_f64()),
    );
    figures.add(
        "pod deletion → Lease released",
        released.map_or("not seen empty (taken at once)".into(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        }),
    );
    figures.add(
        "leader hand-over",
        format!("{:.1} s", handed_over.as_secs_f64()),
    );
    assert!(
        handed_over < Duration::from_secs(15),
        "hand-over within the lease duration (15 s)"
    );
    let pods = wait_ready_pods(client, 2, Duration::from_secs(120)).await;
    let new_leader = wait_for_leader(client, &pods).await;
    wait_synced(scraper, &pods, &new_leader).await;
    let after = mirror_versions(client, TENANT_NS).await;
    assert_eq!(
        before, after,
        "no mirror lost, none written again by the new leader"
    );
}

/// `helm upgrade` with changed values rolls the pods; no mirror is lost and a remote change
/// still reaches its mirror through the new leader.
async fn upgrade_rolls_without_losing_mirrors(client: &Client, scraper: &Scraper, sim: &SimHandle) {
    let before = mirror_versions(client, TENANT_NS).await;
    let pods = upgrade_and_roll(client, &["logLevel=debug"]).await;
    let leader = wait_for_leader(client, &pods).await;
    wait_synced(scraper, &pods, &leader).await;
    let after = mirror_versions(client, TENANT_NS).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "no mirror lost in the rollout"
    );
    let id = sim.state.clusters(WS_ID)[0].cluster_id.clone();
    assert!(sim.state.set_state(
        WS_ID,
        &id,
        emr_ray_operator::emr::model::ClusterState::Stopped
    ));
    let api: Api<EmrRayCluster> = Api::namespaced(client.clone(), TENANT_NS);
    common::wait_for(
        Duration::from_secs(40),
        "the remote change in its mirror",
        || {
            let api = api.clone();
            let id = id.clone();
            async move {
                let list = api.list(&ListParams::default()).await.ok()?;
                list.items
                    .into_iter()
                    .find(|m| m.spec.cluster_id == id)
                    .and_then(|m| m.status)
                    .filter(|s| s.state.as_deref() == Some("Stopped"))
            }
        },
    )
    .await;
}

/// Secure metrics, the chart's default: at the metrics Service's endpoints, HTTPS with the
/// operator's generated certificate; no token, 401; a token bound to the chart's
/// metrics-reader role, 200; plain HTTP gets no HTTP answer; the probes' port answers plain
/// HTTP without a token. The default NetworkPolicy is rendered (this node's network does not
/// enforce policies: the scrapes come from the node, which policies never block anyway).
/// Then `metrics.tls.secretName`: the pods serve the certificate of a kubernetes.io/tls
/// Secret, which a scraper verifies against its CA by the Service's DNS name, as the
/// ServiceMonitor's tlsConfig says.
async fn secure_metrics(client: &Client, scraper: &Scraper) {
    let policy = run(common::kubectl().args([
        "get",
        "networkpolicy",
        RELEASE,
        "-n",
        RELEASE_NS,
        "-o",
        "json",
    ]));
    let policy: Value = serde_json::from_str(&policy).expect("NetworkPolicy JSON");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"][0]["port"], 8080,
        "{policy}"
    );
    let endpoints = service_endpoints(client, &format!("{RELEASE}-metrics")).await;
    assert_eq!(
        endpoints.len(),
        2,
        "both replicas behind the metrics Service: {endpoints:?}"
    );
    let plain = reqwest::Client::new();
    for ep in &endpoints {
        let url = format!("https://{ep}/metrics");
        let anonymous = scraper.http.get(&url).send().await.expect("GET /metrics");
        assert_eq!(anonymous.status().as_u16(), 401, "{url} without a token");
        let body = scraper.scrape(ep).await;
        assert!(body.contains("emr_ray_operator_leader"), "{body}");
        let cleartext = plain
            .get(format!("http://{ep}/metrics"))
            .bearer_auth(&scraper.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(cleartext.is_err(), "plain HTTP answered: {cleartext:?}");
        let ip = ep.rsplit_once(':').expect("ip:port").0;
        let health = plain
            .get(format!("http://{ip}:8081/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(
            health.status().as_u16(),
            200,
            "/healthz, plain HTTP, no token"
        );
    }

    // A certificate from a Secret, verified against its CA.
    let secret = format!("{RELEASE}-metrics-tls");
    let host = format!("{RELEASE}-metrics.{RELEASE_NS}.svc");
    let (ca, cert, key) = common::test_certificate("in-cluster test CA", &[&host]);
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    kubectl_apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": secret, "namespace": RELEASE_NS},
        "data": {"tls.crt": b64(&cert), "tls.key": b64(&key), "ca.crt": b64(&ca)},
    }));
    upgrade_and_roll(client, &[&format!("metrics.tls.secretName={secret}")]).await;
    let endpoints = service_endpoints(client, &format!("{RELEASE}-metrics")).await;
    for ep in endpoints {
        let addr: SocketAddr = ep.parse().expect("endpoint address");
        let verifying = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .resolve(&host, addr)
            .build()
            .unwrap();
        let url = format!("https://{host}:{}/metrics", addr.port());
        let r = common::wait_for(Duration::from_secs(20), "a verified scrape", || {
            let req = verifying.get(&url).bearer_auth(&scraper.token);
            async move {
                let r = req.send().await.ok()?;
                (r.status().as_u16() == 200).then_some(r)
            }
        })
        .await;
        let body = r.text().await.expect("metrics body");
        assert!(body.contains("emr_ray_operator_leader"), "{body}");
    }
}

/// RRSA for real: the kubelet projects the chart's ServiceAccount token (audience
/// `sts.aliyuncs.com`); the simulator's STS verifies it against the API server's discovery
/// document and keys; the workspace mirrors with the STS credentials it returns.
async fn rrsa_with_the_kubelets_token(client: &Client, sim: &SimHandle, figures: &mut Figures) {
    // Public issuer discovery, as the Kubernetes documentation sets it up for external verifiers.
    kubectl_apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "service-account-issuer-discovery-public"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "system:service-account-issuer-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
    }));
    let (server, ca) = api_server_and_ca();
    let provider = OidcProvider::discover(
        SA_ISSUER,
        Some(&server),
        Some(&ca),
        vec!["sts.aliyuncs.com".into()],
    )
    .await
    .expect("OIDC discovery of the API server's issuer");
    let kid = provider.jwks.keys[0]
        .common
        .key_id
        .clone()
        .expect("the API server names its key");
    sim.state.add_oidc_provider(OIDC_PROVIDER_ARN, provider);
    sim.state.generate(RRSA_WS_ID, 3, "ray-rrsa");

    let sts = format!("http://{SIM_HOST}:{}/", sim.addr.port());
    upgrade_and_roll(
        client,
        &[
            "rrsa.enabled=true",
            &format!("rrsa.roleArn={ROLE_ARN}"),
            &format!("rrsa.oidcProviderArn={OIDC_PROVIDER_ARN}"),
            &format!("rrsa.stsEndpoint={sts}"),
        ],
    )
    .await;
    create_namespace(RRSA_NS);
    kubectl_apply(json!({
        "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrClusterCredentials",
        "metadata": {"name": "operator-rrsa"},
        "spec": {"source": {"rrsa": {}}, "namespaces": [RRSA_NS]},
    }));
    kubectl_apply(workspace(
        RRSA_NS,
        "rrsa",
        RRSA_WS_ID,
        sim,
        json!({"clusterCredentialsRef": {"name": "operator-rrsa"}}),
    ));
    let mirrors = wait_mirrors(client, RRSA_NS, 3, Duration::from_secs(60)).await;
    figures.add("mirrors of the RRSA workspace", mirrors.len());
    let subjects = sim.state.stats().sts_verified_subjects;
    let sa = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}");
    assert!(
        subjects.contains_key(&sa),
        "STS verified the chart's ServiceAccount token: {subjects:?}"
    );
    // A well-formed token for the right issuer and audience, naming the API server's key but
    // not signed by it, is refused by the same STS.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid);
    let forged_token = jsonwebtoken::encode(
        &header,
        &json!({"iss": SA_ISSUER, "aud": ["sts.aliyuncs.com"],
                "sub": format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}"),
                "iat": now, "nbf": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-api-servers-key"),
    )
    .unwrap();
    let forged = reqwest::Client::new()
        .post(format!(
            "http://{}/?Action=AssumeRoleWithOIDC&Version=2015-04-01&Format=JSON",
            sim.addr
        ))
        .form(&[
            ("RoleArn", ROLE_ARN),
            ("OIDCProviderArn", OIDC_PROVIDER_ARN),
            ("OIDCToken", forged_token.as_str()),
            ("RoleSessionName", "x"),
        ])
        .send()
        .await
        .expect("STS call");
    assert_eq!(forged.status().as_u16(), 400);
    let body = forged.text().await.unwrap();
    assert!(
        body.contains("AuthenticationFail.OIDCToken.Invalid"),
        "{body}"
    );
}

/// `helm uninstall` removes what the chart rendered; the CRDs (Helm never deletes what it
/// installed from `crds/`), the workspaces and mirrors (objects of those CRDs, the users'),
/// and the Lease (the operator's, not the chart's) remain — as the README says.
async fn uninstall_leaves_what_the_readme_says(client: &Client) {
    let cluster_scoped = || {
        run(common::kubectl().args([
            "get",
            "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings",
            "-o",
            "name",
        ]))
    };
    let namespaced = || {
        run(common::kubectl().args([
            "get",
            "services,poddisruptionbudgets,roles,rolebindings,serviceaccounts,deployments,networkpolicies",
            "-n",
            RELEASE_NS,
            "-o",
            "name",
        ]))
    };
    let release = format!("{RELEASE}-{RELEASE_NS}");
    let before = (cluster_scoped(), namespaced());
    assert!(before.0.contains(&release), "{}", before.0);
    for kind in [
        "service/",
        "poddisruptionbudget.policy/",
        "role.rbac.authorization.k8s.io/",
        "rolebinding.rbac.authorization.k8s.io/",
        "networkpolicy.networking.k8s.io/",
    ] {
        assert!(
            before.1.contains(&format!("{kind}{RELEASE}")),
            "{kind} before uninstall: {}",
            before.1
        );
    }
    run(common::helm().args([
        "uninstall",
        RELEASE,
        "-n",
        RELEASE_NS,
        "--wait",
        "--timeout",
        "120s",
    ]));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NS);
    assert!(deployments.get_opt(RELEASE).await.unwrap().is_none());
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), RELEASE_NS);
    assert!(sas.get_opt(RELEASE).await.unwrap().is_none());
    common::wait_for(
        Duration::from_secs(60),
        "the operator's pods gone",
        || async {
            let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
            pods.list(&ListParams::default().labels("app.kubernetes.io/name=emr-ray-operator"))
                .await
                .ok()
                .filter(|l| l.items.is_empty())
        },
    )
    .await;
    let remaining = cluster_scoped();
    assert!(
        !remaining.contains(&release),
        "cluster-scoped objects of the release remain:\n{remaining}"
    );
    let remaining = namespaced();
    assert!(
        !remaining.contains(&format!("/{RELEASE}")),
        "objects of the release remain in {RELEASE_NS}:\n{remaining}"
    );
    for crd in [
        "emrworkspaces.emr.aliyun.io",
        "emrrayclusters.emr.aliyun.io",
        "emrclustercredentials.emr.aliyun.io",
    ] {
        run(common::kubectl().args(["get", "crd", crd]));
    }
    assert!(
        !mirror_versions(client, TENANT_NS).await.is_empty(),
        "mirrors are kept"
    );
    run(common::kubectl().args(["get", "emrworkspace", "prod", "-n", TENANT_NS]));
    run(common::kubectl().args(["get", "emrclustercredentials", "operator-rrsa"]));
    // The Lease is the operator's own object, not the chart's: it stays. Helm removes the RBAC
    // while the pods are still stopping, so the last holder may not be able to release it; it
    // then expires after its duration.
    let _: Lease = Api::namespaced(client.clone(), RELEASE_NS)
        .get(LEASE)
        .await
        .expect("the Lease remains");
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Deletes the release, the test's namespaces, cluster-scoped objects and the CRDs (and with
/// them the cluster credentials), and waits until they are gone.
fn remove_everything() {
    let _ = common::helm()
        .args(["uninstall", RELEASE, "-n", RELEASE_NS, "--wait"])
        .output();
    run(common::kubectl().args([
        "delete",
        "--ignore-not-found",
        "--wait",
        "--timeout=120s",
        "namespace",
        TENANT_NS,
        RRSA_NS,
        "monitoring",
        RELEASE_NS,
    ]));
    run(common::kubectl().args([
        "delete",
        "--ignore-not-found",
        "--wait",
        "--timeout=120s",
        "clusterrolebinding/prometheus-emr-ray-operator-metrics",
        "clusterrolebinding/service-account-issuer-discovery-public",
    ]));
    let _ = common::kubectl()
        .args([
            "delete",
            "--ignore-not-found",
            "--wait",
            "--timeout=120s",
            "crd",
            "emrworkspaces.emr.aliyun.io",
            "emrrayclusters.emr.aliyun.io",
            "emrclustercredentials.emr.aliyun.io",
        ])
        .output();
}

async fn node_is_ready(client: &Client) {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing nodes");
    let ready = nodes.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    assert!(
        ready,
        "no Ready node: start the control plane with `tests/control-plane/kcp.sh up --node`"
    );
}

fn import_image() {
    let archive = common::repo_root().join("target/image/emr-ray-operator.oci.tar");
    assert!(
        archive.is_file(),
        "{} is missing: run `make image`",
        archive.display()
    );
    run(Command::new("bash")
        .arg(common::repo_root().join("tests/control-plane/kcp.sh"))
        .args(["node-import"])
        .arg(&archive));
}

async fn start_simulator(bridge: IpAddr) -> SimHandle {
    let mut cfg = SimConfig::with_default_fixture();
    cfg.listen = SocketAddr::new(bridge, 0);
    let sim = Simulator::start(cfg)
        .await
        .expect("simulator on the node's bridge");
    sim.state.generate(WS_ID, 12, "ray-node");
    sim
}

fn base_values(bridge: IpAddr) -> Value {
    json!({
        "security": {"allowedEndpoints": [format!("http://{SIM_HOST}:*")]},
        "hostAliases": [{"ip": bridge.to_string(), "hostnames": [SIM_HOST]}],
    })
}

fn workspace(ns: &str, name: &str, id: &str, sim: &SimHandle, credentials: Value) -> Value {
    json!({
        "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "regionId": "cn-hangzhou", "workspaceId": id,
            "endpoint": format!("http://{SIM_HOST}:{}", sim.addr.port()),
            "credentials": credentials, "syncInterval": "10s",
        },
    })
}

/// `helm upgrade --reuse-values --set S…` of the release.
fn upgrade(sets: &[&str]) {
    let mut args = vec![
        "upgrade",
        RELEASE,
        CHART,
        "-n",
        RELEASE_NS,
        "--reuse-values",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(&args, &json!({}));
}

/// [`upgrade`] with values that change the pod template, then waits until both pods are new
/// and Ready.
async fn upgrade_and_roll(client: &Client, sets: &[&str]) -> Vec<Pod> {
    let old = pod_names(&wait_ready_pods(client, 2, Duration::from_secs(60)).await);
    upgrade(sets);
    wait_rolled(client, &old).await
}

/// `helm ARGS -f <values>` in the repository.
fn helm(args: &[&str], values: &Value) {
    let file = std::env::temp_dir().join(format!("in-cluster-values-{}.yaml", std::process::id()));
    std::fs::write(&file, serde_json::to_string(values).unwrap()).unwrap();
    run(common::helm()
        .current_dir(common::repo_root())
        .args(args)
        .arg("-f")
        .arg(&file));
}

fn kubectl_apply(obj: Value) {
    let file = std::env::temp_dir().join(format!("in-cluster-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, serde_json::to_string(&obj).unwrap()).unwrap();
    run(common::kubectl()
        .args(["apply", "--server-side", "-f"])
        .arg(&file));
    let _ = std::fs::remove_file(file);
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create_namespace(name: &str) {
    kubectl_apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
}

fn pod_names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Exactly `n` operator pods, all Ready (and none terminating).
async fn wait_ready_pods(client: &Client, n: usize, timeout: Duration) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    common::wait_for(timeout, &format!("{n} Ready operator pods"), || {
        let api = api.clone();
        async move {
            let pods = api
                .list(&ListParams::default().labels("app.kubernetes.io/name=emr-ray-operator"))
                .await
                .ok()?
                .items;
            (pods.len() == n && pods.iter().all(is_ready)).then_some(pods)
        }
    })
    .await
}

/// The Deployment rolled: every pod is new (none of `old`), Ready, and the rollout is complete.
async fn wait_rolled(client: &Client, old: &[String]) -> Vec<Pod> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NS);
    common::wait_for(Duration::from_secs(180), "the rollout", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get(RELEASE).await.ok()?;
            let s = d.status.clone()?;
            let want = d.spec.as_ref()?.replicas.unwrap_or(1);
            (s.observed_generation == d.metadata.generation
                && s.updated_replicas == Some(want)
                && s.ready_replicas == Some(want)
                && s.replicas == Some(want))
            .then_some(())
        }
    })
    .await;
    let pods = wait_ready_pods(client, 2, Duration::from_secs(120)).await;
    assert!(
        pod_names(&pods).iter().all(|p| !old.contains(p)),
        "every pod was replaced"
    );
    pods
}

async fn lease_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), RELEASE_NS)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// The Lease holder, once it is one of `pods`.
async fn wait_for_leader(client: &Client, pods: &[Pod]) -> String {
    let names = pod_names(pods);
    common::wait_for(
        Duration::from_secs(60),
        "a leader among the pods",
        || async { lease_holder(client).await.filter(|h| names.contains(h)) },
    )
    .await
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

/// A scraper as Prometheus is one: a ServiceAccount in `monitoring` bound to the chart's
/// metrics-reader ClusterRole (the binding may precede the role: RBAC resolves it when asked),
/// with a one-hour token, over HTTPS. The generated self-signed certificate is not verified
/// (the ServiceMonitor's `insecureSkipVerify`); `secure_metrics` verifies a CA-signed one.
struct Scraper {
    http: reqwest::Client,
    token: String,
}

impl Scraper {
    async fn new(client: &Client) -> Scraper {
        create_namespace("monitoring");
        kubectl_apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "prometheus", "namespace": "monitoring"}}));
        kubectl_apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "prometheus-emr-ray-operator-metrics"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": format!("{RELEASE}-{RELEASE_NS}-metrics-reader")},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}],
        }));
        Scraper {
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap(),
            token: common::service_account_token(client, "monitoring", "prometheus").await,
        }
    }

    /// The `/metrics` text at `ip:port`, once it answers 200.
    async fn scrape(&self, addr: &str) -> String {
        let url = format!("https://{addr}/metrics");
        let r = common::wait_for(Duration::from_secs(20), "an authorized scrape", || {
            let req = self.http.get(&url).bearer_auth(&self.token);
            async move {
                let r = req.send().await.ok()?;
                (r.status().as_u16() == 200).then_some(r)
            }
        })
        .await;
        r.text().await.expect("metrics body")
    }

    /// A sample of `name` from the pod's `/metrics`, summed over `label`.
    async fn pod_metric(&self, p: &Pod, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let text = self
            .http
            .get(format!("https://{}:8080/metrics", pod_ip(p)))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .text()
            .await
            .ok()?;
        let filter: Vec<(&str, &str)> = label.into_iter().collect();
        Some(common::metric_sum(&text, name, &filter))
    }
}

/// The leader has run a sync of `ml/prod` since it took over.
async fn wait_synced(scraper: &Scraper, pods: &[Pod], leader: &str) {
    let pod = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(leader))
        .expect("leader pod");
    common::wait_for(
        Duration::from_secs(60),
        "the new leader's first sync",
        || async {
            let n = scraper
                .pod_metric(
                    pod,
                    "emr_ray_operator_last_successful_sync_timestamp_seconds",
                    Some(("workspace", "prod")),
                )
                .await?;
            (n > 0.0).then_some(())
        },
    )
    .await;
}

async fn mirror_versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<EmrRayCluster>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing mirrors")
        .items
        .into_iter()
        .map(|m| {
            (
                m.metadata.name.unwrap_or_default(),
                m.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_mirrors(
    client: &Client,
    ns: &str,
    n: usize,
    timeout: Duration,
) -> Vec<EmrRayCluster> {
    let api: Api<EmrRayCluster> = Api::namespaced(client.clone(), ns);
    common::wait_for(timeout, &format!("{n} mirrors in {ns}"), || {
        let api = api.clone();
        async move {
            let items = api.list(&ListParams::default()).await.ok()?.items;
            (items.len() == n && items.iter().all(|m| m.status.is_some())).then_some(items)
        }
    })
    .await
}

/// `ip:port` of the ready endpoints of Service `name` (what kube-proxy would route to: the node
/// has no kube-proxy, so the test resolves the Service as it would).
async fn service_endpoints(client: &Client, name: &str) -> Vec<String> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), RELEASE_NS);
    common::wait_for(
        Duration::from_secs(60),
        "the metrics Service's endpoints",
        || {
            let api = api.clone();
            async move {
                let slices = api
                    .list(
                        &ListParams::default()
                            .labels(&format!("kubernetes.io/service-name={name}")),
                    )
                    .await
                    .ok()?
                    .items;
                let mut out = Vec::new();
                for s in slices {
                    let port = s
                        .ports
                        .as_ref()?
                        .iter()
                        .find(|p| p.name.as_deref() == Some("metrics"))?
                        .port?;
                    for e in s.endpoints {
                        if e.conditions.as_ref().and_then(|c| c.ready) == Some(true) {
                            out.extend(e.addresses.iter().map(|a| format!("{a}:{port}")));
                        }
                    }
                }
                (out.len() == 2).then_some(out)
            }
        },
    )
    .await
}

/// The host PID of the operator process of `pod` (its cgroup names the pod's UID).
fn operator_pid(pod: &Pod) -> u32 {
    let uid = pod.metadata.uid.clone().expect("pod uid");
    let cgroup_uid = uid.replace('-', "_");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"/usr/local/bin/emr-ray-operator\0") {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(&uid) || cgroup.contains(&cgroup_uid) {
            return pid;
        }
    }
    panic!("no operator process of pod {uid} on this host");
}

fn root_is_read_only(pid: u32) -> bool {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 5 && f[4] == "/" && f[5].split(',').any(|o| o == "ro")
    })
}

/// The API server's URL and CA from the admin kubeconfig.
fn api_server_and_ca() -> (String, Vec<u8>) {
    let kc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(common::kubeconfig_path()).expect("kubeconfig"),
    )
    .expect("kubeconfig YAML");
    let cluster = &kc["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("server").to_string();
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .expect("CA data");
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .expect("CA base64");
    (server, ca)
}
