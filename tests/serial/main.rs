//! Tests that count the API server's requests or restart it: they run one at a time (each takes
//! [`common::serial`]), after the integration tests, in their own binary.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use emr_ray_operator::api::EmrWorkspaceStatus;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use common::wait_for;
use support::condition;

mod fairness;
mod fault_suite;
mod steady_state;
mod write_refusals;

// The helpers only these tests use.

/// Waits until no namespace is terminating: the namespace controller's deletions of earlier
/// tests' objects would count as writes in the API server's request metrics.
pub async fn wait_no_namespace_terminating(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for(
        Duration::from_secs(180),
        "no namespace terminating",
        || async {
            let list = namespaces.list(&Default::default()).await.unwrap();
            let terminating = list
                .items
                .iter()
                .any(|n| n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating"));
            (!terminating).then_some(())
        },
    )
    .await
}

/// Serialises the tests that take it (those that count the API server's requests or restart
/// it): hold the guard for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    trace_operator();
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The in-process operators' log: with `EMR_TEST_LOG` set (a tracing filter, e.g.
/// `emr_ray_operator=debug`) on stderr (run with `--nocapture`); otherwise their mirror writes
/// and warnings go to [`operator_log_path`], which a failed check quotes ([`operator_log`]).
fn trace_operator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (filter, to_file) = match std::env::var("EMR_TEST_LOG") {
            Ok(filter) => (filter, false),
            Err(_) => (
                "warn,emr_ray_operator::controller::apply=debug,\
                 emr_ray_operator::controller::cache=debug"
                    .to_string(),
                true,
            ),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false);
        let _ = if to_file {
            match std::fs::File::create(operator_log_path()) {
                Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
                Err(_) => return,
            }
        } else {
            builder.with_writer(std::io::stderr).try_init()
        };
    });
}

pub fn operator_log_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serial-operators-{}.log", std::process::id()))
}

/// The last `max` lines of the operator log that contain `needle`.
pub fn operator_log(needle: &str, max: usize) -> Vec<String> {
    let text = std::fs::read_to_string(operator_log_path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    lines[lines.len().saturating_sub(max)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// The workspace's Ready condition: (status, reason, message); empty when it has none.
pub fn ready_of(st: &EmrWorkspaceStatus) -> (String, String, String) {
    condition(&st.conditions, "Ready")
        .map(|c| (c.status.to_string(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Writes to `emrrayclusters` the API server has seen, of the kinds the operator sends.
/// DELETECOLLECTION is left out: only the namespace controller sends it, once per resource type
/// for every namespace it cleans up, mirrors or not.
pub async fn apiserver_mirror_writes(client: &kube::Client) -> f64 {
    let metrics = common::apiserver_metrics(client).await;
    common::count_write_requests(&metrics, "emrrayclusters")
        - common::count_requests(&metrics, "DELETECOLLECTION", "emrrayclusters")
}
