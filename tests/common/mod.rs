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
#![allow(dead_code)]

use std::{
    future::Future,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::Duration,
};

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
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

const READY_TIMEOUT: Duration = Duration::from_secs(240);

struct ControlPlane {
    kubeconfig: PathBuf,
    /// The `kcp up` child when this process started it. Never dropped (it lives in a
    /// static), so its stdin stays open until the process exits.
    _kcp: Option<Mutex<Kcp>>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// Root of the repository (the crate's manifest dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<repo>/.cache/bin`, where `kcp.sh build` puts `kcp`, `kubectl` and `helm`.
pub fn bin_dir() -> PathBuf {
    repo_root().join(".cache").join("bin")
}

fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        if let Some(kc) = std::env::var_os("EMR_TEST_KUBECONFIG").filter(|v| !v.is_empty()) {
            let kubeconfig = PathBuf::from(kc);
            assert!(
                kubeconfig.is_file(),
                "EMR_TEST_KUBECONFIG={} does not exist (start one with tests/control-plane/kcp.sh up)",
                kubeconfig.display()
            );
            return ControlPlane {
                kubeconfig,
                _kcp: None,
            };
        }
        start_control_plane()
    })
}

fn run_kcp_sh(target: &str) {
    let script = repo_root().join("tests/control-plane/kcp.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(target)
        .status()
        .unwrap_or_else(|e| panic!("running {} {target}: {e}", script.display()));
    assert!(
        status.success(),
        "{} {target} failed: {status}",
        script.display()
    );
}

fn start_control_plane() -> ControlPlane {
    // Cheap when the binary is up to date (only compares mtimes).
    run_kcp_sh("build-kcp");
    let log_path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kcp-{}.log", std::process::id()));
    let kcp = Kcp::spawn(&["up"], &log_path);
    ControlPlane {
        kubeconfig: kcp.kubeconfig.clone(),
        _kcp: Some(Mutex::new(kcp)),
    }
}

/// A control plane this process runs (`kcp up --exit-on-stdin-close …`): it stops when stopped,
/// dropped, or when the process exits (its stdin closes).
pub struct Kcp {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub kubeconfig: PathBuf,
    pub log: PathBuf,
}

impl Kcp {
    /// `kcp up --data-dir D --port P --keep`: restartable on the same data and port (blocking).
    pub fn start(data_dir: &Path, port: u16, log: &Path) -> Kcp {
        let data = data_dir.to_string_lossy().into_owned();
        let port = port.to_string();
        Kcp::spawn(&["up", "--data-dir", &data, "--port", &port, "--keep"], log)
    }

    /// Runs `kcp ARGS --exit-on-stdin-close` and waits for its `KCP_READY` line (blocking).
    fn spawn(args: &[&str], log: &Path) -> Kcp {
        let kcp = bin_dir().join("kcp");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut child = Command::new(&kcp)
            .args(args)
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", kcp.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("KCP_READY ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
                // keep draining so kcp can never block on a full pipe
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "control plane did not become ready ({e:?}); log {}:\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        };
        let kubeconfig = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("kubeconfig="))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("malformed ready line: {line}"));
        Kcp {
            stdin: child.stdin.take(),
            child: Some(child),
            kubeconfig,
            log: log.to_path_buf(),
        }
    }

    /// SIGTERM and wait for the exit (blocking).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let t = std::time::Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if t.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.stdin.take();
    }
}

impl Drop for Kcp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client for the control plane of `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", kubeconfig.display()));
    client_from_kubeconfig(kc).await
}

/// Path of the admin kubeconfig of the test control plane (starting it if needed).
///
/// Blocks while the control plane starts; from async code prefer [`client`].
pub fn kubeconfig_path() -> PathBuf {
    control_plane().kubeconfig.clone()
}

async fn kubeconfig_path_async() -> PathBuf {
    tokio::task::spawn_blocking(kubeconfig_path)
        .await
        .expect("starting the control plane panicked")
}

async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("building kube config");
    Client::try_from(config).expect("building kube client")
}

/// A fresh admin (`system:masters`) client for the test control plane.
pub async fn client() -> Client {
    client_for(&kubeconfig_path_async().await).await
}

fn tool(name: &str) -> Command {
    let kubeconfig = kubeconfig_path();
    let mut cmd = Command::new(bin_dir().join(name));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir()];
    paths.extend(std::env::split_paths(&path));
    cmd.env("KUBECONFIG", kubeconfig)
        .env("PATH", std::env::join_paths(paths).expect("PATH"));
    cmd
}

/// `kubectl` (the `kcp` multi-call binary) with `KUBECONFIG` set to the test control plane.
pub fn kubectl() -> Command {
    tool("kubectl")
}

/// Pinned `helm` from `.cache/bin` (built on demand) with `KUBECONFIG` set.
pub fn helm() -> Command {
    helm_path();
    tool("helm")
}

/// Path of the pinned `helm` in `.cache/bin`, built on demand. Needs no control plane.
pub fn helm_path() -> PathBuf {
    let bin = bin_dir().join("helm");
    if !bin.is_file() {
        run_kcp_sh("build");
    }
    bin
}

/// How often [`wait_for`] and [`wait_until`] look.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The tests' one poll loop: calls `f` every `every` until it returns `Ok`, for at most
/// `timeout` (`f` is called at least once, and once more at the deadline). `Err` carries the
/// last value `f` saw, for the caller's message on timeout.
pub async fn poll<F, Fut, T, E>(timeout: Duration, every: Duration, mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(last) if tokio::time::Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Polls `f` every 250ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(timeout, POLL_EVERY, || {
        let seen = f();
        async move { seen.await.ok_or(()) }
    })
    .await
    .unwrap_or_else(|()| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Runs `check` (which asserts) on every poll for `window`: for "nothing happens" assertions,
/// which have no event to wait for. The caller says why `window` is long enough.
pub async fn hold_for<F, Fut>(window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let _ = poll(window, POLL_EVERY, || {
        let checked = check();
        async move { Err::<(), ()>(checked.await) }
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

/// One sample of Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text (and OpenMetrics) exposition: every sample line, comments skipped.
/// The one parser of the tests.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let Some(close) = line.rfind('}') else {
                    continue;
                };
                (
                    &line[..open],
                    parse_labels(&line[open + 1..close]),
                    &line[close + 1..],
                )
            }
            None => {
                let mut parts = line.splitn(2, ' ');
                let name = parts.next().unwrap_or_default();
                (name, Vec::new(), parts.next().unwrap_or_default())
            }
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Parses `a="x",b="y"` (with `\"`, `\\` and `\n` escapes).
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim_start_matches([',', ' ']).to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
        rest = &after[end..];
    }
    out
}

/// Sum of the samples named `name` whose labels include every `(label, value)` of `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| filter.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
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

/// Like [`count_requests`], only for answers with HTTP `code` (e.g. `"403"`).
pub fn count_requests_with_code(metrics: &str, verb: &str, resource: &str, code: &str) -> f64 {
    metric_sum(
        metrics,
        "apiserver_request_total",
        &[
            ("verb", &verb.to_ascii_uppercase()),
            ("resource", resource),
            ("code", code),
        ],
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
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
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

/// A one-hour token of ServiceAccount `ns/sa_name` (which must exist), from the TokenRequest API.
pub async fn service_account_token(client: &Client, ns: &str, sa_name: &str) -> String {
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let tr: TokenRequest = sas
        .create_subresource("token", sa_name, &PostParams::default(), &tr)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa_name}: {e}"));
    tr.status.expect("TokenRequest without status").token
}

/// A client authenticated as ServiceAccount `ns/sa_name` (which must exist), using a
/// one-hour token from the TokenRequest API and the cluster CA/server of the admin
/// kubeconfig.
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

/// A test CA named `ca_name` and a serving certificate it signed for `hosts`:
/// (CA PEM, certificate PEM, key PEM).
pub fn test_certificate(ca_name: &str, hosts: &[&str]) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}
