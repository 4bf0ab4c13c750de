//! The `list` subcommand: lists the Ray clusters of a workspace, like `kubectl get`.

use anyhow::Context as _;

use crate::api::{
    DEFAULT_ACCESS_KEY_ID_KEY, DEFAULT_ACCESS_KEY_SECRET_KEY, DEFAULT_SECURITY_TOKEN_KEY,
    SecretCredentials,
};
use crate::emr::credentials::ENV_ROLE_ARN;
use crate::emr::model::{RayCluster, format_quantity};
use crate::emr::redact::redact_cluster;
use crate::emr::{
    ClientConfig, CredentialResolver, CredentialSource, EmrClient, RrsaConfig, SignatureVersion,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureArg {
    /// ACS3-HMAC-SHA256 (default)
    Acs3,
    /// ROA HMAC-SHA1
    Roa,
}

/// List the Ray clusters of an EMR Serverless Spark workspace.
///
/// Credentials: by default the ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET /
/// ALIBABA_CLOUD_SECURITY_TOKEN environment variables; RRSA (ALIBABA_CLOUD_ROLE_ARN,
/// ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE) when ALIBABA_CLOUD_ROLE_ARN
/// is set; or a Kubernetes Secret with --secret NAMESPACE/NAME (current kubeconfig).
#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// Region, e.g. cn-hangzhou.
    #[arg(long)]
    pub region: String,
    /// Workspace ID, e.g. w-d2d82aa09155.
    #[arg(long)]
    pub workspace: String,
    /// Explicit endpoint URL (overrides --region/--vpc), e.g. http://127.0.0.1:8480.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Use the VPC endpoint.
    #[arg(long)]
    pub vpc: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    #[arg(long, value_enum, default_value = "acs3")]
    pub signature: SignatureArg,
    /// Read credentials from this Kubernetes Secret.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub secret: Option<String>,
    /// Key of the AccessKey ID in the Secret (as `secretRef.accessKeyIdKey`).
    #[arg(long, default_value = DEFAULT_ACCESS_KEY_ID_KEY, requires = "secret")]
    pub access_key_id_key: String,
    /// Key of the AccessKey secret (as `secretRef.accessKeySecretKey`).
    #[arg(long, default_value = DEFAULT_ACCESS_KEY_SECRET_KEY, requires = "secret")]
    pub access_key_secret_key: String,
    /// Optional key holding an STS security token (as `secretRef.securityTokenKey`).
    #[arg(long, default_value = DEFAULT_SECURITY_TOKEN_KEY, requires = "secret")]
    pub security_token_key: String,
}

pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    let endpoint = crate::emr::endpoint::resolve(&args.region, args.vpc, args.endpoint.as_deref())?;
    let source = credential_source(&args).await?;
    let creds = CredentialResolver::default().resolve(&source).await?;
    let client = EmrClient::new(ClientConfig {
        signature: match args.signature {
            SignatureArg::Acs3 => SignatureVersion::Acs3HmacSha256,
            SignatureArg::Roa => SignatureVersion::RoaHmacSha1,
        },
        ..ClientConfig::default()
    })?;
    let listing = client
        .list_ray_clusters(&endpoint, &args.workspace, &creds)
        .await
        .with_context(|| format!("listing Ray clusters of workspace {}", args.workspace))?;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let out = match args.output {
        OutputFormat::Table => render_table(&listing.clusters, false, now_ms),
        OutputFormat::Wide => render_table(&listing.clusters, true, now_ms),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&redacted(&listing.clusters))?;
            s.push('\n');
            s
        }
        OutputFormat::Yaml => serde_yaml::to_string(&redacted(&listing.clusters))?,
    };
    print!("{out}");
    Ok(())
}

async fn credential_source(args: &ListArgs) -> anyhow::Result<CredentialSource> {
    if let Some(secret) = &args.secret {
        return Ok(CredentialSource::Static(
            secret_credentials(args, secret).await?,
        ));
    }
    if std::env::var(ENV_ROLE_ARN).is_ok_and(|v| !v.trim().is_empty()) {
        return Ok(CredentialSource::Rrsa(RrsaConfig::from_env()?));
    }
    Ok(CredentialSource::Environment)
}

async fn secret_credentials(
    args: &ListArgs,
    reference: &str,
) -> anyhow::Result<crate::emr::Credentials> {
    let (ns, name) = reference
        .split_once('/')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--secret must be NAMESPACE/NAME, got {reference:?}"))?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes with the current kubeconfig")?;
    let keys = SecretCredentials {
        name: name.to_string(),
        access_key_id_key: Some(args.access_key_id_key.clone()),
        access_key_secret_key: Some(args.access_key_secret_key.clone()),
        security_token_key: Some(args.security_token_key.clone()),
    };
    Ok(crate::controller::credentials::from_secret(&client, ns, &keys).await?)
}

/// Clusters with their endpoints redacted.
pub fn redacted(clusters: &[RayCluster]) -> Vec<RayCluster> {
    clusters.iter().cloned().map(redact_cluster).collect()
}

/// kubectl-style age: `45s`, `12m`, `5h`, `3d`, `2y`.
pub fn format_age(create_ms: Option<i64>, now_ms: i64) -> String {
    let Some(created) = create_ms else {
        return "<unknown>".into();
    };
    let secs = ((now_ms - created) / 1000).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s if s < 86400 * 365 * 2 => format!("{}d", s / 86400),
        s => format!("{}y", s / (86400 * 365)),
    }
}

/// Renders the kubectl-like table.
pub fn render_table(clusters: &[RayCluster], wide: bool, now_ms: i64) -> String {
    let mut header = vec!["NAME", "DISPLAY-NAME", "STATE", "VERSION", "WORKERS", "AGE"];
    if wide {
        header.extend(["ENDPOINT", "CPU", "MEMORY", "CREATOR"]);
    }
    let dash = || "-".to_string();
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for c in clusters {
        let mut row = vec![
            c.cluster_id.clone(),
            c.name.clone().unwrap_or_else(dash),
            c.state.as_ref().map(|s| s.to_string()).unwrap_or_else(dash),
            c.display_release_version.clone().unwrap_or_else(dash),
            c.desired_resources().workers.unwrap_or(0).to_string(),
            format_age(c.create_time, now_ms),
        ];
        if wide {
            let totals = c.desired_resources();
            row.push(
                c.grpc_endpoint
                    .as_deref()
                    .map(crate::emr::redact::redact_endpoint)
                    .unwrap_or_else(dash),
            );
            row.push(totals.cpu.map(format_quantity).unwrap_or_else(dash));
            row.push(
                totals
                    .memory_gi
                    .map(|m| format!("{}Gi", format_quantity(m)))
                    .unwrap_or_else(dash),
            );
            row.push(
                c.creator_name
                    .clone()
                    .or_else(|| c.creator.clone())
                    .unwrap_or_else(dash),
            );
        }
        rows.push(row);
    }
    if clusters.is_empty() {
        return "No Ray clusters found.\n".to_string();
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i + 1 == cols {
                    v.clone()
                } else {
                    format!("{v:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> RayCluster {
        let page: crate::emr::model::ListRayClusterResponse =
            serde_json::from_str(include_str!("../../tests/data/reference-example.json")).unwrap();
        page.ray_clusters.unwrap().remove(0)
    }

    #[test]
    fn redaction() {
        let json = serde_json::to_string(&redacted(&[example()])).unwrap();
        assert!(!json.contains("xxxxxxxxx"));
        assert!(json.contains("grpcEndpoint"));
    }

    #[test]
    fn table() {
        let c = example();
        let now = c.create_time.unwrap() + 3 * 86400 * 1000;
        let t = render_table(std::slice::from_ref(&c), false, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("ray-uiulpgow9xljimm1"));
        assert!(lines[1].contains("Running"));
        assert!(lines[1].ends_with("3d"));
        let w = render_table(&[c], true, now);
        assert!(w.contains("CREATOR"));
        assert!(w.contains("6"), "2 + 2*2 cpus: {w}");
        assert!(w.contains("24Gi"), "{w}");
        assert!(w.contains("Alice"));
        assert!(!w.contains("token"));
        assert_eq!(render_table(&[], false, 0), "No Ray clusters found.\n");
    }

    #[derive(clap::Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        list: ListArgs,
    }

    #[test]
    fn args_parse() {
        use clap::Parser as _;
        let w = Wrapper::try_parse_from(["x", "--region", "cn-hangzhou", "--workspace", "w-1"])
            .unwrap();
        assert_eq!(w.list.output, OutputFormat::Table);
        assert_eq!(w.list.signature, SignatureArg::Acs3);
        assert!(w.list.secret.is_none());
        let w = Wrapper::try_parse_from([
            "x",
            "--region",
            "cn-hangzhou",
            "--workspace",
            "w-1",
            "-o",
            "wide",
            "--signature",
            "roa",
            "--secret",
            "ns/creds",
            "--access-key-id-key",
            "id",
        ])
        .unwrap();
        assert_eq!(w.list.output, OutputFormat::Wide);
        assert_eq!(w.list.signature, SignatureArg::Roa);
        assert_eq!(w.list.access_key_id_key, "id");
        assert_eq!(w.list.access_key_secret_key, "accessKeySecret");
        assert!(
            Wrapper::try_parse_from([
                "x",
                "--region",
                "r",
                "--workspace",
                "w",
                "--access-key-id-key",
                "id"
            ])
            .is_err(),
            "key flags need --secret"
        );
        assert!(Wrapper::try_parse_from(["x", "--workspace", "w"]).is_err());
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(Some(0), 45_000), "45s");
        assert_eq!(format_age(Some(0), 600_000), "10m");
        assert_eq!(format_age(Some(0), 5 * 3_600_000), "5h");
        assert_eq!(format_age(None, 0), "<unknown>");
    }
}
