//! EMR Serverless Spark simulator:
//! `emr-sim --listen 127.0.0.1:8480 [--fixture FILE] [--access-key ID:SECRET ...]`.
//! Prints `EMR_SIM_READY url=http://...` once listening.

use clap::Parser;
use emr_sim::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, SimConfig, Simulator, parse_fixture,
};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "emr-sim",
    about = "Simulator of the EMR Serverless Spark ListRayCluster and GetRayCluster APIs"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// Fixture: `{"requestId","rayClusters":[...]}` (workspace w-d2d82aa09155) or
    /// `{"workspaces":{"w-..":[...]}}`. Default: the reference's example.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Accepted access key as ID:SECRET, or ID:SECRET:SECURITY_TOKEN for STS credentials
    /// (repeatable). Default: LTAI5tSimulatorKey:sim-secret-please-change.
    #[arg(long = "access-key", value_name = "ID:SECRET[:TOKEN]")]
    access_keys: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = SimConfig::with_default_fixture();
    cfg.listen = args.listen;
    if let Some(path) = &args.fixture {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading fixture {}: {e}", path.display()))?;
        cfg.workspaces = parse_fixture(&text)
            .map_err(|e| anyhow::anyhow!("parsing fixture {}: {e}", path.display()))?;
    }
    let mut sts_keys = Vec::new();
    if !args.access_keys.is_empty() {
        cfg.access_keys.clear();
        for k in &args.access_keys {
            let parts: Vec<&str> = k.splitn(3, ':').collect();
            match parts.as_slice() {
                [id, secret] if !id.is_empty() && !secret.is_empty() => {
                    cfg.access_keys.push((id.to_string(), secret.to_string()))
                }
                [id, secret, token]
                    if !id.is_empty() && !secret.is_empty() && !token.is_empty() =>
                {
                    sts_keys.push((id.to_string(), secret.to_string(), token.to_string()))
                }
                _ => anyhow::bail!("--access-key must be ID:SECRET or ID:SECRET:TOKEN"),
            }
        }
    } else {
        cfg.access_keys = vec![(
            DEFAULT_ACCESS_KEY_ID.to_string(),
            DEFAULT_ACCESS_KEY_SECRET.to_string(),
        )];
    }
    let workspaces = cfg.workspaces.len();
    let handle = Simulator::start(cfg).await?;
    for (id, secret, token) in &sts_keys {
        handle.state.add_sts_credentials(id, secret, token, None);
    }
    println!("EMR_SIM_READY url={}", handle.base_url());
    std::io::stdout().flush()?;
    tracing::info!(addr = %handle.addr, workspaces, "emr-sim listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    handle.shutdown().await;
    Ok(())
}
