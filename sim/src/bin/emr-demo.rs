//! `emr-demo`: the operator's main job on an embedded default. It needs a
//! Kubernetes API (the local control plane from `tests/control-plane/kcp.sh up`, via
//! KUBECONFIG); it starts the EMR simulator in-process with the reference's example cluster plus a
//! few generated ones, installs the CRDs, creates an example workspace and credentials Secret,
//! runs the operator and prints `kubectl get emrworkspaces,emrrayclusters`.
//!
//! With `--in-cluster` the operator is not run in this process: the chart is installed with
//! `helm upgrade --install` on a control plane with a node (`kcp.sh up --node`, the image from
//! `make image` imported), and its pod mirrors the simulator, which then listens on the node's
//! bridge and is reached by a host name the chart's `hostAliases` give the pod.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::info;

use clap::Parser;
use emr_ray_operator::api::{self as crd, EmrWorkspace, FIELD_MANAGER};
use emr_ray_operator::cli::{LogFormat, init_tracing, shutdown_on_signals};
use emr_ray_operator::operator::{self, OperatorConfig};
use emr_sim::{SimConfig, SimHandle, Simulator};

#[derive(Parser, Debug)]
#[command(
    name = "emr-demo",
    about = "The operator on the local control plane, mirroring the EMR simulator"
)]
pub struct DemoArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    /// Namespace for the example workspace.
    #[arg(long, default_value = "emr-demo")]
    pub namespace: String,
    /// Extra generated clusters besides the reference's example.
    #[arg(long, default_value_t = 4)]
    pub extra_clusters: usize,
    /// Exit after the first complete sync instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Address of the simulator.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sim_listen: SocketAddr,
    /// Address of the operator's /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_addr: SocketAddr,
    /// kubectl to show the result with.
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    pub kubectl: String,
    /// Install the chart and let its pod run the operator on the node (`kcp.sh up --node`)
    /// instead of running the operator in this process.
    #[arg(long)]
    pub in_cluster: bool,
    /// With --in-cluster: the node's bridge address, where the simulator listens.
    #[arg(long, env = "KCP_NODE_BRIDGE_IP", default_value = "10.244.0.1")]
    pub bridge_ip: std::net::IpAddr,
    /// With --in-cluster: helm, and the chart it installs.
    #[arg(long, env = "HELM", default_value = "helm")]
    pub helm: String,
    #[arg(long, default_value = "charts/emr-ray-operator")]
    pub chart: String,
}

/// The host name the pod reaches the simulator by (`hostAliases`) with --in-cluster.
const SIM_HOST: &str = "emr-sim.test";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = DemoArgs::parse();
    init_tracing(args.log_format, &args.log_level);
    run(args, shutdown_on_signals()).await
}

async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API: start the local control plane first (tests/control-plane/kcp.sh up) and export KUBECONFIG")?;

    let mut args = args;
    if args.in_cluster && args.sim_listen.ip().is_loopback() {
        args.sim_listen = SocketAddr::new(args.bridge_ip, args.sim_listen.port());
    }
    let demo_sim = start_simulator(&args).await?;
    let (sim, ws_id) = (&demo_sim.sim, &demo_sim.workspace_id);
    let sim_url = sim.base_url();
    println!("EMR simulator listening on {sim_url} (admin API under {sim_url}admin/)");

    let ns = args.namespace.clone();
    let op_token = shutdown.child_token();
    let (workspaces, op) = if args.in_cluster {
        let release_ns = "emr-system";
        install_chart(&args, release_ns, sim.addr.ip()).await?;
        println!("chart installed: helm -n {release_ns} status emr-ray-operator");
        let endpoint = url::Url::parse(&format!("http://{SIM_HOST}:{}/", sim.addr.port()))?;
        (
            create_example(&client, &ns, &demo_sim, &endpoint).await?,
            None,
        )
    } else {
        crd::install_crds(&client)
            .await
            .context("installing CRDs")?;
        println!("CRDs installed: emrworkspaces.emr.aliyun.io, emrrayclusters.emr.aliyun.io");
        let workspaces = create_example(&client, &ns, &demo_sim, &sim_url).await?;
        let cfg = OperatorConfig {
            namespaces: vec![ns.clone()],
            concurrency: 4,
            metrics_addr: Some(args.metrics_addr),
            listing_timeout: Duration::from_secs(60),
            // The simulator runs on loopback.
            allowed_endpoints: vec!["http://127.0.0.1:*".parse().map_err(anyhow::Error::msg)?],
            ..OperatorConfig::embedded("demo")
        };
        let op = tokio::spawn(operator::run(
            client.clone(),
            cfg,
            Default::default(),
            op_token.clone(),
        ));
        (workspaces, Some(op))
    };
    println!("EmrWorkspace {ns}/demo created for workspace {ws_id}");

    let expected = sim.state.clusters(ws_id).len() as i64;
    wait_for_sync(&client, &ns, &workspaces, expected).await?;
    show_result(&args.kubectl, &ns).await;
    if args.once {
        info!("demo done (--once)");
    } else {
        println!(
            "\nThe operator keeps running (Ctrl-C stops it). Try:\n  \
             curl -X PUT {sim_url}admin/workspaces/{ws_id}/clusters/ray-uiulpgow9xljimm1/state -d '{{\"state\":\"Stopped\"}}'\n  \
             kubectl get emrrayclusters -n {ns} -w"
        );
        shutdown.cancelled().await;
    }
    op_token.cancel();
    if let Some(op) = op {
        op.await??;
    }
    demo_sim.sim.shutdown().await;
    Ok(())
}

/// `helm upgrade --install` of the chart with its defaults, except that credentials may go to
/// the simulator (plain HTTP, by the host name `hostAliases` maps to the node's bridge); waits
/// for the Deployment's pods to be Ready.
async fn install_chart(
    args: &DemoArgs,
    release_ns: &str,
    sim_ip: std::net::IpAddr,
) -> anyhow::Result<()> {
    let values = json!({
        "security": {"allowedEndpoints": [format!("http://{SIM_HOST}:*")]},
        "hostAliases": [{"ip": sim_ip.to_string(), "hostnames": [SIM_HOST]}],
    });
    let file = std::env::temp_dir().join(format!("emr-demo-values-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&values)?)?;
    let out = tokio::process::Command::new(&args.helm)
        .args(["upgrade", "--install", "emr-ray-operator", &args.chart])
        .args([
            "--namespace",
            release_ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "120s",
        ])
        .arg("-f")
        .arg(&file)
        .output()
        .await
        .with_context(|| format!("running {}", args.helm))?;
    let _ = std::fs::remove_file(&file);
    anyhow::ensure!(
        out.status.success(),
        "helm upgrade --install failed (is the node up and the image imported? `make demo \
         DEMO_ARGS=--in-cluster` does both): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The simulator with its example workspace and the access key the Secret will hold.
struct DemoSimulator {
    sim: SimHandle,
    workspace_id: String,
    access_key_id: String,
    access_key_secret: String,
}

/// Starts the simulator with the reference's example cluster plus `--extra-clusters`.
async fn start_simulator(args: &DemoArgs) -> anyhow::Result<DemoSimulator> {
    let mut sim_cfg = SimConfig::with_default_fixture();
    sim_cfg.listen = args.sim_listen;
    let (access_key_id, access_key_secret) = sim_cfg.access_keys[0].clone();
    let workspace_id = sim_cfg
        .workspaces
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "w-d2d82aa09155".into());
    let sim = Simulator::start(sim_cfg).await?;
    if args.extra_clusters > 0 {
        sim.state
            .generate(&workspace_id, args.extra_clusters, "ray-demo");
    }
    Ok(DemoSimulator {
        sim,
        workspace_id,
        access_key_id,
        access_key_secret,
    })
}

/// Applies the namespace, the credentials Secret and the `demo` EmrWorkspace.
async fn create_example(
    client: &kube::Client,
    ns: &str,
    demo_sim: &DemoSimulator,
    sim_url: &url::Url,
) -> anyhow::Result<Api<EmrWorkspace>> {
    let (key_id, key_secret) = (&demo_sim.access_key_id, &demo_sim.access_key_secret);
    let ws_id = &demo_sim.workspace_id;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
        )
        .await?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "emr-credentials",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "emr-credentials"},
                "stringData": {"accessKeyId": key_id, "accessKeySecret": key_secret},
            })),
        )
        .await?;
    let workspaces: Api<EmrWorkspace> = Api::namespaced(client.clone(), ns);
    workspaces
        .patch(
            "demo",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "emr.aliyun.io/v1alpha1", "kind": "EmrWorkspace",
                "metadata": {"name": "demo"},
                "spec": {
                    "regionId": "cn-hangzhou",
                    "workspaceId": ws_id,
                    "endpoint": sim_url.as_str().trim_end_matches('/'),
                    "credentials": {"secretRef": {"name": "emr-credentials"}},
                    "syncInterval": "10s",
                },
            })),
        )
        .await?;
    Ok(workspaces)
}

/// Waits (up to 60 s in all) for the workspace to be Ready with `expected` clusters, then for
/// every mirror to have its status.
async fn wait_for_sync(
    client: &kube::Client,
    ns: &str,
    workspaces: &Api<EmrWorkspace>,
    expected: i64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ws = workspaces.get("demo").await?;
        let st = ws.status.unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_.as_str() == "Ready" && c.status.as_str() == "True");
        if ready && st.clusters == Some(expected) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the workspace did not become Ready within 60s: {:?}", st);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mirrors: Api<crd::EmrRayCluster> = Api::namespaced(client.clone(), ns);
    loop {
        let list = mirrors.list(&Default::default()).await?;
        if list.items.len() as i64 == expected && list.items.iter().all(|m| m.status.is_some()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("mirrors did not appear within 60s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints `kubectl get emrworkspaces,emrrayclusters` (or why it could not run).
async fn show_result(kubectl: &str, ns: &str) {
    println!("\n$ kubectl get emrworkspaces,emrrayclusters -n {ns}");
    let out = tokio::process::Command::new(kubectl)
        .args(["get", "emrworkspaces,emrrayclusters", "-n", ns])
        .output()
        .await;
    match out {
        Ok(o) => {
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
        Err(e) => println!("(could not run {kubectl}: {e})"),
    }
}
