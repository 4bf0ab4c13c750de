//! The `emr-sim` binary: a fixture, two access keys (one with an STS token), the ready line,
//! and the operator's client listing through it.

use std::time::Duration;

use emr_ray_operator::emr::{ClientConfig, Credentials, EmrClient};

#[tokio::test]
async fn emr_sim_binary() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("fixture.json");
    std::fs::write(
        &fixture,
        r#"{"workspaces":{"w-bin":[{"clusterId":"ray-a","state":"Running"},{"clusterId":"ray-b","state":"Error"}]}}"#,
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_emr-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--access-key",
            "AKbin:SKbin",
            "--access-key",
            "STS.bin:SKsts:CAIStok",
            "--fixture",
        ])
        .arg(&fixture)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready in time")
        .unwrap()
        .unwrap();
    let url = line
        .strip_prefix("EMR_SIM_READY url=")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let listing = EmrClient::new(ClientConfig::default())
        .unwrap()
        .list_ray_clusters(
            &url::Url::parse(url).unwrap(),
            "w-bin",
            &Credentials::new("AKbin", "SKbin"),
        )
        .await
        .unwrap();
    assert_eq!(listing.clusters.len(), 2);
    let sts = Credentials::new("STS.bin", "SKsts").with_security_token("CAIStok");
    let listing = EmrClient::new(ClientConfig::default())
        .unwrap()
        .list_ray_clusters(&url::Url::parse(url).unwrap(), "w-bin", &sts)
        .await
        .unwrap();
    assert_eq!(listing.clusters[1].cluster_id, "ray-b");
    child.kill().await.unwrap();
}
