//! The part of the test helpers every test binary uses (the in-cluster test includes only
//! this file): the control plane and clients for it, the tools, waiting, the metrics text,
//! service-account tokens and test certificates. The rest is in `mod.rs`.

use std::{
    future::Future,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

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
    #[allow(dead_code, reason = "read by the serial fault suite only")]
    pub log: PathBuf,
}

impl Kcp {
    /// `kcp up --data-dir D --port P --keep`: restartable on the same data and port (blocking).
    #[allow(
        dead_code,
        reason = "the serial fault suite restarts a control plane of its own; no other test does"
    )]
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

pub async fn kubeconfig_path_async() -> PathBuf {
    tokio::task::spawn_blocking(kubeconfig_path)
        .await
        .expect("starting the control plane panicked")
}

pub async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> Client {
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
#[allow(dead_code, reason = "not used by the serial tests")]
pub fn kubectl() -> Command {
    tool("kubectl")
}

/// Pinned `helm` from `.cache/bin` (built on demand) with `KUBECONFIG` set.
#[allow(dead_code, reason = "not used by the serial tests")]
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

/// A one-hour token of ServiceAccount `ns/sa_name` (which must exist), from the TokenRequest API.
#[allow(dead_code, reason = "not used by the serial tests")]
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

/// A test CA named `ca_name` and a serving certificate it signed for `hosts`:
/// (CA PEM, certificate PEM, key PEM).
#[allow(dead_code, reason = "not used by the serial tests")]
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
