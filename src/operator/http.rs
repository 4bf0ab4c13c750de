//! The HTTP endpoints, on two listeners as controller-runtime has them: `/metrics` on the
//! metrics address (with [`SecureMetrics`]: HTTPS, and only for callers a TokenReview and a
//! SubjectAccessReview allow), `/healthz` and `/readyz` on the health address, always plain
//! HTTP and open — the kubelet probes them without a token, and they say nothing but "ok".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::metrics_auth::{MetricsAuth, ReviewLimits, Verdict};
use super::tls::{self, CertSource};
use crate::metrics::Metrics;

/// `/metrics` over HTTPS for authenticated, authorized callers only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureMetrics {
    pub cert: CertSource,
    /// The budget for reviews of tokens not in the cache.
    pub reviews: ReviewLimits,
}

impl SecureMetrics {
    /// A generated self-signed certificate and the default review budget.
    pub fn self_signed() -> Self {
        SecureMetrics {
            cert: CertSource::SelfSigned,
            reviews: ReviewLimits::default(),
        }
    }
}

/// What to serve where; `None` addresses are not served.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub metrics_addr: Option<SocketAddr>,
    pub health_addr: Option<SocketAddr>,
    /// `None`: `/metrics` over plain HTTP, to anyone who reaches it.
    pub secure_metrics: Option<SecureMetrics>,
}

/// The running servers.
pub struct Servers {
    pub metrics_addr: Option<SocketAddr>,
    pub health_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Whether any endpoint is served.
    pub fn serving(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// Waits until every server has stopped (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct MetricsState {
    metrics: Arc<Metrics>,
    /// When set, `/metrics` answers only authenticated, authorized callers.
    auth: Option<MetricsAuth>,
}

struct HealthState {
    ready: Arc<AtomicBool>,
    leader: Arc<AtomicBool>,
}

async fn metrics_handler(
    State(s): State<Arc<MetricsState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(auth) = &s.auth {
        let verdict = auth.check(&headers).await;
        if verdict != Verdict::Allowed {
            let code = verdict.status();
            let mut resp = (code, code.canonical_reason().unwrap_or_default()).into_response();
            let h = resp.headers_mut();
            match verdict {
                Verdict::Unauthenticated => {
                    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                Verdict::Throttled | Verdict::Unavailable => {
                    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                Verdict::Allowed | Verdict::Forbidden => {}
            }
            return resp;
        }
    }
    let chunks = s
        .metrics
        .exposition()
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Arc<HealthState>>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (
            StatusCode::OK,
            if h.leader.load(Ordering::Relaxed) {
                "ok (leader)"
            } else {
                "ok (standby)"
            },
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds and serves the endpoints of `cfg` until `shutdown`. `ready` and `leader` are read at
/// each `/readyz`.
pub async fn serve(
    cfg: &HttpConfig,
    client: kube::Client,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    leader: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<Servers> {
    let mut servers = Servers {
        metrics_addr: None,
        health_addr: None,
        tasks: Vec::new(),
    };
    if let Some(addr) = cfg.health_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(Arc::new(HealthState { ready, leader }));
        servers
            .tasks
            .push(spawn_server(listener, app, "health", shutdown.clone()));
        info!(%bound, "serving /healthz and /readyz (HTTP)");
        servers.health_addr = Some(bound);
    }
    if let Some(addr) = cfg.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let auth = cfg
            .secure_metrics
            .as_ref()
            .map(|s| MetricsAuth::new(client.clone(), s.reviews, metrics.clone()));
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .with_state(Arc::new(MetricsState { metrics, auth }));
        match &cfg.secure_metrics {
            Some(secure) => {
                let config = tls::server_config(&secure.cert, tls::RELOAD_EVERY, shutdown.clone())?;
                let listener = tls::TlsListener::new(listener, config)?;
                servers
                    .tasks
                    .push(spawn_server(listener, app, "metrics", shutdown.clone()));
                info!(%bound, "serving /metrics (HTTPS; callers need a token allowed to get /metrics)");
            }
            None => {
                servers
                    .tasks
                    .push(spawn_server(listener, app, "metrics", shutdown.clone()));
                info!(%bound, "serving /metrics (HTTP, open)");
            }
        }
        servers.metrics_addr = Some(bound);
    }
    Ok(servers)
}

fn spawn_server<L>(
    listener: L,
    app: Router,
    what: &'static str,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            error!(error = %e, server = what, "HTTP server failed");
        }
    })
}
