//! The official Python SDK (`alibabacloud-emr-serverless-spark20230808`, pinned in
//! `tests/sdk_conformance/requirements.txt`) against the simulator started here, in-process:
//! `tests/sdk_conformance/conformance.py` calls every simulated API with both signatures the SDK
//! offers, checks each body against the SDK's models and is refused with a wrong secret. The
//! SDK's virtual environment is set up (cached in `.cache/sdk/`) by `tests/sdk_conformance/sdk.sh`.

use crate::common::repo_root;
use emr_sim::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, SimConfig, Simulator};
use std::time::Duration;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_conforms_to_the_simulator() {
    let dir = repo_root().join("tests/sdk_conformance");
    let setup = Command::new(dir.join("sdk.sh"))
        .arg("python")
        .output()
        .await
        .expect("run tests/sdk_conformance/sdk.sh");
    assert!(
        setup.status.success(),
        "setting up the SDK's virtual environment failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8_lossy(&setup.stdout).trim().to_string();

    let sim = Simulator::start(SimConfig::with_default_fixture())
        .await
        .expect("simulator starts");
    let run = Command::new(&python)
        .arg(dir.join("conformance.py"))
        .args(["--endpoint", &sim.addr.to_string()])
        .args(["--access-key-id", DEFAULT_ACCESS_KEY_ID])
        .args(["--access-key-secret", DEFAULT_ACCESS_KEY_SECRET])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("conformance.py finishes within 120 s")
        .expect("run conformance.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the official SDK disagrees with the simulator:\n{stdout}\n{stderr}"
    );
    // Every check ran with both signature styles, and the simulator saw the wrong secrets.
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    let stats = sim.state.stats();
    assert!(stats.rejected_auth >= 4, "wrong secrets refused: {stats:?}");
    assert!(stats.ok >= 10, "genuine answers: {stats:?}");
    sim.shutdown().await;
}
