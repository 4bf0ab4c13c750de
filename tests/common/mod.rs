//! Shared helpers for integration tests that need a real Kubernetes control plane.
//!
//! Use from an integration test file with `mod common;`.
//!
//! # Which control plane
//!
//! One control plane per test process:
//!
//! * If `EMR_TEST_KUBECONFIG` is set, that kubeconfig is used (the Makefile/CI start
//!   one with `tests/control-plane/kcp.sh up` and export
//!   `EMR_TEST_KUBECONFIG=.cache/kcp/admin.kubeconfig`).
//! * Otherwise the first test that needs it runs `tests/control-plane/kcp.sh build-kcp`
//!   (cached; a cold build takes 10-25 minutes) and spawns
//!   `.cache/bin/kcp up --exit-on-stdin-close`. The child's stdin pipe is kept open in a
//!   process-global, so the control plane lives exactly as long as the test binary: when
//!   the test process exits, stdin reaches EOF and `kcp` shuts itself down and removes its
//!   temporary data. Its log goes to `target/tmp/kcp-<pid>.log` (`CARGO_TARGET_TMPDIR`).
//!
//! Every `#[tokio::test]` has its own runtime, so nothing here keeps a [`kube::Client`]
//! in a global: call [`client`] in each test.
//!
//! # Namespaces
//!
//! Each test should create its own namespace with [`TestNamespace::new`] and call
//! [`TestNamespace::cleanup`] at its end (a failed test leaves its namespace behind,
//! labelled `emr-ray-operator-test=true`, which helps debugging; when the control
//! plane is per-process it disappears with it anyway).

#[path = "base.rs"]
mod base;
pub use base::*;

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, GetParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// Field manager used by the test helpers for server-side apply.
pub const FIELD_MANAGER: &str = "emr-ray-operator-tests";
/// Label put on every namespace created by [`TestNamespace::new`].
pub const TEST_NAMESPACE_LABEL: &str = "emr-ray-operator-test";

/// Runs `check` (which asserts) on every poll for `window`: for "nothing happens" assertions,
/// which have no event to wait for. The caller says why `window` is long enough.
pub async fn hold_for<F, Fut>(window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let _ = poll(window, POLL_EVERY, || {
        let checked = check();
        async move {
            checked.await;
            Err::<(), ()>(())
        }
    })
    .await;
}

/// [`wait_for`] whose `f` says what it saw when not done (`Err(seen)`): the panic after
/// `timeout` shows the last of it.
pub async fn wait_until<F, Fut, T, D>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, D>>,
    D: std::fmt::Debug,
{
    poll(timeout, POLL_EVERY, f).await.unwrap_or_else(|last| {
        panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}")
    })
}

/// A namespace owned by one test.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    #[allow(dead_code, reason = "not used by the serial tests")]
    /// Creates a uniquely named namespace `<prefix>-<random>` labelled
    /// `emr-ray-operator-test=true`. Call [`TestNamespace::cleanup`] at the end of the test.
    pub async fn new(prefix: &str) -> TestNamespace {
        Self::create_on(client().await, prefix).await
    }

    /// Like [`TestNamespace::new`], on the control plane of `client`.
    pub async fn create_on(client: Client, prefix: &str) -> TestNamespace {
        let mut p: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        p.truncate(40);
        let p = p.trim_matches('-');
        let p = if p.is_empty() { "test" } else { p };
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{p}-{}", &suffix[..8]);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace { name, client }
    }

    /// Deletes the namespace (the namespace controller then removes its contents).
    pub async fn cleanup(self) {
        match Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("deleting namespace {}: {e}", self.name),
        }
    }
}

/// Server-side applies one CRD (field manager [`FIELD_MANAGER`], forced) and waits until
/// it is Established. Idempotent and safe to call concurrently.
pub async fn apply_crd(client: &Client, crd: &serde_json::Value) -> CustomResourceDefinition {
    let name = crd["metadata"]["name"]
        .as_str()
        .expect("CRD without metadata.name")
        .to_string();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    wait_crd_established(client, &name).await
}

/// Waits (up to 60s) until the CRD `name` has condition Established=True.
pub async fn wait_crd_established(client: &Client, name: &str) -> CustomResourceDefinition {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    wait_for(
        Duration::from_secs(60),
        &format!("CRD {name} to be Established"),
        || async {
            let crd = api.get_opt(name).await.ok()??;
            let established = crd
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(crd)
        },
    )
    .await
}

/// Reads every YAML document in `dir/*.yaml` (sorted by file name).
pub fn read_yaml_documents(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

/// Applies every CustomResourceDefinition in `<repo>/crds/*.yaml` and waits until each
/// is Established. Does nothing if there are none. Idempotent, safe to call concurrently.
pub async fn install_crds(client: &Client) {
    for doc in read_yaml_documents(&repo_root().join("crds")) {
        if doc["kind"] == "CustomResourceDefinition" {
            apply_crd(client, &doc).await;
        }
    }
}

/// Raw Prometheus text of the apiserver's `/metrics`.
pub async fn apiserver_metrics(client: &Client) -> String {
    let req = kube::core::Request::new("")
        .get("metrics", &GetParams::default())
        .expect("building /metrics request");
    client
        .request_text(req)
        .await
        .expect("GET /metrics from the apiserver")
}

/// Sum of `apiserver_request_total` over all samples whose `verb` and `resource` labels
/// match (all codes, scopes, subresources such as `status`, versions).
///
/// Verbs are the apiserver's: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`,
/// `DELETECOLLECTION`, and `APPLY` for server-side-apply patches. `resource` is the plural
/// (e.g. `emrrayclusters`).
pub fn count_requests(metrics: &str, verb: &str, resource: &str) -> f64 {
    metric_sum(
        metrics,
        "apiserver_request_total",
        &[("verb", &verb.to_ascii_uppercase()), ("resource", resource)],
    )
}

/// Waits until a sync of workspace `ws` that started after this call has finished, as the
/// operator's own metrics (fetched by `metrics`) show: `sync_attempts_total` counts the syncs
/// started, `sync_duration_seconds_count` those finished (listing, mirror writes and status
/// write). Syncs of one workspace never overlap, so attempt `n + 1` has finished once `n + 1`
/// syncs have.
pub async fn wait_next_sync<F, Fut>(timeout: Duration, ws: &str, mut metrics: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let what = format!("a new sync of workspace {ws} to finish");
    let started = wait_for(timeout, &what, || {
        let f = metrics();
        async move {
            f.await.map(|t| {
                metric_sum(
                    &t,
                    "emr_ray_operator_sync_attempts_total",
                    &[("workspace", ws)],
                )
            })
        }
    })
    .await;
    wait_for(timeout, &what, || {
        let f = metrics();
        async move {
            let t = f.await?;
            let done = metric_sum(
                &t,
                "emr_ray_operator_sync_duration_seconds_count",
                &[("workspace", ws)],
            );
            (done > started).then_some(())
        }
    })
    .await
}

/// Sum of write requests (`POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`, `DELETECOLLECTION`)
/// to `resource`, see [`count_requests`].
pub fn count_write_requests(metrics: &str, resource: &str) -> f64 {
    [
        "POST",
        "PUT",
        "PATCH",
        "APPLY",
        "DELETE",
        "DELETECOLLECTION",
    ]
    .iter()
    .map(|v| count_requests(metrics, v, resource))
    .sum()
}

/// An admin client that impersonates `user` (in no group but `system:authenticated`): RBAC and
/// admission judge its requests as that user's.
#[allow(dead_code, reason = "not used by the serial tests")]
pub async fn impersonating_client(user: &str) -> Client {
    let path = kubeconfig_path_async().await;
    let kc = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("building kube config");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("building kube client")
}

/// A client authenticated as ServiceAccount `ns/sa_name` (which must exist), using a
/// one-hour token from the TokenRequest API and the cluster CA/server of the admin
/// kubeconfig.
#[allow(dead_code, reason = "not used by the serial tests")]
pub async fn service_account_client(client: &Client, ns: &str, sa_name: &str) -> Client {
    let token = service_account_token(client, ns, sa_name).await;

    let path = kubeconfig_path_async().await;
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
    .expect("parsing admin kubeconfig");
    let current = admin["current-context"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let contexts = admin["contexts"].as_sequence().cloned().unwrap_or_default();
    let cluster_name = contexts
        .iter()
        .find(|c| c["name"].as_str() == Some(current.as_str()))
        .or(contexts.first())
        .and_then(|c| c["context"]["cluster"].as_str().map(str::to_string))
        .expect("admin kubeconfig has no context");
    let cluster = admin["clusters"]
        .as_sequence()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["name"].as_str() == Some(cluster_name.as_str()))
        })
        .map(|c| c["cluster"].clone())
        .expect("admin kubeconfig has no cluster");
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cluster", "cluster": cluster }],
        "users": [{ "name": "sa", "user": { "token": token } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "cluster", "user": "sa", "namespace": ns } }],
        "current-context": "sa",
    });
    let kc = Kubeconfig::from_yaml(&serde_json::to_string(&kc).expect("serialize kubeconfig"))
        .expect("building service account kubeconfig");
    client_from_kubeconfig(kc).await
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}
