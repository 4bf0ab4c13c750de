//! Secure metrics with the operator binary run as the chart runs it (`run --metrics-secure
//! --metrics-cert-dir …`), against the real control plane's TokenReview and
//! SubjectAccessReview: HTTPS with the mounted certificate, the answers for each kind of
//! caller, plain HTTP refused, and the bound on reviews that a flood of made-up tokens can
//! cause, read from the operator's own counter.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// The review budget the operator runs with here.
const REVIEWS_PER_SECOND: u32 = 2;
const REVIEW_BURST: u32 = 4;

/// A test CA and a serving certificate it signed for 127.0.0.1 and localhost, written as
/// `tls.crt`/`tls.key` into `dir` (what a mounted kubernetes.io/tls Secret holds). Returns the
/// CA's PEM.
fn write_certificate(dir: &Path) -> String {
    let (ca, cert, key) = common::test_certificate("metrics test CA", &["127.0.0.1", "localhost"]);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    ca
}

/// The operator binary; killed on drop. Its log goes to a file shown on failure.
struct OperatorProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl OperatorProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create<K>(api: &Api<K>, obj: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_metrics_of_the_operator_process() {
    let client = common::client().await;
    common::install_crds(&client).await;
    let ns = common::TestNamespace::create_on(client.clone(), "metrics-tls").await;
    let name = ns.name.clone();

    // A scraper bound to a metrics-reader role, and an authenticated stranger without it.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    for sa in ["scraper", "stranger"] {
        create(&sas, json!({"metadata": {"name": sa}})).await;
    }
    let role = format!("metrics-reader-{name}");
    create(
        &Api::<ClusterRole>::all(client.clone()),
        json!({"metadata": {"name": role},
               "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
    )
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        json!({"metadata": {"name": role},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": name}]}),
    )
    .await;
    let scraper = common::service_account_token(&client, &name, "scraper").await;
    let stranger = common::service_account_token(&client, &name, "stranger").await;

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("metrics-tls");
    std::fs::create_dir(&certs).unwrap();
    let ca = write_certificate(&certs);
    let (port, health_port) = (common::free_port(), common::free_port());
    let log = dir.path().join("operator.log");
    let op = OperatorProcess {
        child: Command::new(env!("CARGO_BIN_EXE_emr-ray-operator"))
            .args(["run", "--namespaces", &name, "--leader-election=false"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--metrics-secure=true", "--metrics-cert-dir"])
            .arg(&certs)
            .args([
                "--metrics-reviews-per-second",
                &REVIEWS_PER_SECOND.to_string(),
                "--metrics-review-burst",
                &REVIEW_BURST.to_string(),
            ])
            .env("KUBECONFIG", common::kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the operator"),
        log,
    };

    // Health: plain HTTP, no token, its own port.
    let plain = reqwest::Client::new();
    common::wait_for(Duration::from_secs(30), "/readyz", || async {
        let r = plain
            .get(format!("http://127.0.0.1:{health_port}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Metrics: HTTPS with the certificate from the files, verified against the test CA.
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let get = |token: Option<String>| {
        let mut r = https.get(&url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await }
    };
    let anonymous = get(None)
        .await
        .expect("a TLS connection verified by the CA");
    assert_eq!(anonymous.status(), 401, "no token");
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        get(Some(stranger)).await.unwrap().status(),
        403,
        "authenticated, no role"
    );
    let scrape = |token: String| {
        let get = &get;
        async move {
            let r = get(Some(token)).await.unwrap();
            assert_eq!(r.status(), 200, "the reader role's token");
            r.text().await.unwrap()
        }
    };
    let body = scrape(scraper.clone()).await;
    assert!(body.contains("emr_ray_operator_leader"), "{body}");
    assert_eq!(
        https
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "health is not on the metrics port"
    );

    // Plain HTTP on the metrics port gets no HTTP answer (the TLS handshake fails), with or
    // without a token.
    for token in [None, Some(&scraper)] {
        let mut r = plain.get(format!("http://127.0.0.1:{port}/metrics"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let answer = r.timeout(Duration::from_secs(10)).send().await;
        assert!(answer.is_err(), "plain HTTP answered: {answer:?}");
    }

    // A flood of made-up tokens: at most the budget's reviews (burst, then the rate), the rest
    // refused with 429 at once; the scraper's cached answer survives it.
    let reviews =
        |text: &str| common::metric_sum(text, "emr_ray_operator_metrics_auth_reviews_total", &[]);
    let throttled =
        |text: &str| common::metric_sum(text, "emr_ray_operator_metrics_auth_throttled_total", &[]);
    let before = scrape(scraper.clone()).await;
    // Ten waves of 30 over about two seconds: the burst, then the rate's refills.
    let started = Instant::now();
    let mut codes: Vec<u16> = Vec::new();
    for _ in 0..10 {
        let wave: Vec<u16> = futures::stream::iter(0..30)
            .map(|_| {
                let token = format!("made-up-{}", uuid::Uuid::new_v4());
                let get = &get;
                async move {
                    get(Some(token))
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }
            })
            .buffer_unordered(30)
            .collect()
            .await;
        codes.extend(wave);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    let after = scrape(scraper.clone()).await;
    let reviewed = reviews(&after) - reviews(&before);
    let refused = codes.iter().filter(|c| **c == 429).count();
    // The scraper's own answer may have expired meanwhile (allowed answers last a minute):
    // one review more.
    let bound =
        f64::from(REVIEW_BURST) + (f64::from(REVIEWS_PER_SECOND) * took.as_secs_f64()).ceil() + 1.0;
    eprintln!(
        "flood: {} requests in {:.2} s, {reviewed} reviews (bound {bound}), {refused} refused with 429",
        codes.len(),
        took.as_secs_f64()
    );
    assert!(
        codes.iter().all(|c| *c == 401 || *c == 429),
        "made-up tokens get 401 or 429: {codes:?}\n{}",
        op.log()
    );
    assert!(reviewed >= 1.0, "some made-up tokens were reviewed");
    assert!(reviewed <= bound, "{reviewed} reviews, bound {bound}");
    assert_eq!(
        throttled(&after) - throttled(&before),
        refused as f64,
        "every 429 is counted, none reviewed"
    );
    assert!(
        refused as f64 >= codes.len() as f64 - bound,
        "{refused} refused"
    );
    assert!(!op.log().contains("made-up-"), "tokens never logged");

    drop(op);
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}
