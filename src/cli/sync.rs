//! `emr-ray-operator sync NAMESPACE/NAME`: asks the operator for a sync now, the way
//! `flux reconcile` does — it sets the `reconcile.emr.aliyun.io/requestedAt` annotation to the
//! current time and, with `--wait`, waits until the workspace's status says it was handled.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::ConditionType;
use crate::api::{ANNOTATION_REQUESTED_AT, EmrWorkspace};

#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// The workspace, as NAMESPACE/NAME.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub workspace: String,
    /// Wait until the operator has handled the request, then print the Ready condition.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait with `--wait`.
    #[arg(long, default_value = "2m", value_parser = super::parse_interval)]
    pub timeout: crate::api::Interval,
}

pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let (ns, name) = args
        .workspace
        .split_once('/')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty())
        .ok_or_else(|| anyhow::anyhow!("expected NAMESPACE/NAME, got {:?}", args.workspace))?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes with the current kubeconfig")?;
    let api: Api<EmrWorkspace> = Api::namespaced(client, ns);
    let requested = crate::time::now_rfc3339();
    let patch = json!({"metadata": {"annotations": {ANNOTATION_REQUESTED_AT: requested}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating EmrWorkspace {ns}/{name}"))?;
    println!("requested a sync of {ns}/{name} ({ANNOTATION_REQUESTED_AT}={requested})");
    if !args.wait {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + args.timeout.as_duration();
    loop {
        let ws = api.get(name).await?;
        let status = ws.status.unwrap_or_default();
        if status.last_handled_reconcile_at.as_deref() == Some(requested.as_str()) {
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == ConditionType::Ready);
            match ready {
                Some(c) => println!("synced: Ready={} ({}): {}", c.status, c.reason, c.message),
                None => println!("synced"),
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the operator did not handle the request within {}",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
