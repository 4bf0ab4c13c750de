//! TLS for `/metrics` (with `--metrics-secure`), as controller-runtime's secure metrics server
//! does it: the serving certificate comes from a directory (`tls.crt`, `tls.key`: a
//! `kubernetes.io/tls` Secret mounted there, e.g. one that cert-manager issues and renews) or,
//! without one, is generated self-signed at start (scrapers then skip verification; they still
//! need a token, and the bytes on the wire are encrypted).
//!
//! A certificate from files is re-read every [`RELOAD_EVERY`]: a renewed Secret (the kubelet
//! swaps the mounted files atomically) is served without a restart; a pair that does not load
//! or does not match keeps the previous one (logged).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// File names in a certificate directory (those of a `kubernetes.io/tls` Secret).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
/// How often a certificate directory is re-read.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// A TLS handshake not done by then is dropped (a client that connects and says nothing
/// holds one handshake slot at most this long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const HANDSHAKES_IN_FLIGHT: usize = 64;

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// Generated at start, self-signed, for `localhost`, the host name and the loopback
    /// addresses, valid for a year (controller-runtime's default).
    SelfSigned,
    /// `tls.crt` (the chain, leaf first) and `tls.key` (PKCS#8, PKCS#1 or SEC1) in this
    /// directory, re-read every [`RELOAD_EVERY`].
    Dir(PathBuf),
}

fn provider() -> Arc<CryptoProvider> {
    // The same provider as kube's and reqwest's TLS (ring): no second crypto library.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate, replaced whole when its files change.
#[derive(Debug)]
struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The PEM files of a certificate directory as read (compared to notice a change).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemPair {
    fn read(dir: &Path) -> anyhow::Result<PemPair> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(PemPair {
            cert: read(CERT_FILE)?,
            key: read(KEY_FILE)?,
        })
    }

    /// The certified key, checked: a chain, a key rustls can sign with, and the key matching
    /// the leaf certificate.
    fn load(&self, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{CERT_FILE}: not PEM certificates"))?;
        anyhow::ensure!(!chain.is_empty(), "{CERT_FILE} holds no certificate");
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .with_context(|| format!("{KEY_FILE}: no PEM private key"))?;
        let certified = CertifiedKey::from_der(chain, key, provider)
            .with_context(|| format!("{KEY_FILE} does not go with {CERT_FILE}"))?;
        // `from_der` lets an undecidable comparison pass; a served pair must be known to match.
        certified
            .keys_match()
            .with_context(|| format!("{KEY_FILE} does not go with {CERT_FILE}"))?;
        Ok(certified)
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses), valid from yesterday
/// (clock skew) for a year.
pub fn self_signed(names: Vec<String>) -> anyhow::Result<(String, String)> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let ymd = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(d.year().into(), d.month() as u8, d.day() as u8)
    };
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    params.not_before = ymd(today.yesterday().context("date")?);
    params.not_after = ymd(today.saturating_add(jiff::Span::new().years(1)));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "emr-ray-operator metrics");
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("signing")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The names a generated certificate is for: `localhost`, this host's name and the loopback
/// addresses.
fn self_signed_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    names.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    names
}

/// The TLS configuration of the metrics server. With [`CertSource::Dir`], a task re-reads the
/// files every `reload_every` until `shutdown`.
pub fn server_config(
    source: &CertSource,
    reload_every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ServerConfig>> {
    build(source, reload_every, shutdown).map(|(config, _)| config)
}

fn build(
    source: &CertSource,
    reload_every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<ServerConfig>, Arc<CertStore>)> {
    let provider = provider();
    let (key, files) = match source {
        CertSource::SelfSigned => {
            let (cert, key) = self_signed(self_signed_names())?;
            let pair = PemPair {
                cert: cert.into_bytes(),
                key: key.into_bytes(),
            };
            info!("serving /metrics with a generated self-signed certificate");
            (pair.load(&provider)?, None)
        }
        CertSource::Dir(dir) => {
            let pair = PemPair::read(dir)?;
            let key = pair
                .load(&provider)
                .with_context(|| format!("the certificate in {}", dir.display()))?;
            info!(dir = %dir.display(), "serving /metrics with the certificate from files");
            (key, Some((dir.clone(), pair)))
        }
    };
    let store = Arc::new(CertStore {
        current: RwLock::new(Arc::new(key)),
    });
    if let Some((dir, pair)) = files {
        tokio::spawn(reload(
            dir,
            pair,
            store.clone(),
            provider.clone(),
            reload_every,
            shutdown,
        ));
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), store))
}

/// Re-reads `dir` every `every`; a changed pair that loads replaces the served one.
async fn reload(
    dir: PathBuf,
    mut served: PemPair,
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match reload_once(&dir, &served, &provider) {
            Ok(None) => {}
            Ok(Some((pair, key))) => {
                store.set(Arc::new(key));
                served = pair;
                info!(dir = %dir.display(), "metrics certificate reloaded");
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = format!("{e:#}"), "metrics certificate not reloaded; serving the previous one")
            }
        }
    }
}

/// The new pair and its key when the files differ from `served` and load; `None` when they
/// are unchanged.
fn reload_once(
    dir: &Path,
    served: &PemPair,
    provider: &CryptoProvider,
) -> anyhow::Result<Option<(PemPair, CertifiedKey)>> {
    let pair = PemPair::read(dir)?;
    if pair == *served {
        return Ok(None);
    }
    let key = pair.load(provider)?;
    Ok(Some((pair, key)))
}

/// A TCP listener whose connections are TLS streams. Handshakes run concurrently (at most
/// `HANDSHAKES_IN_FLIGHT`, each for at most `HANDSHAKE_TIMEOUT`), so a client that stalls
/// its handshake delays no one else; a connection whose handshake fails (plain HTTP, say) is
/// closed without an HTTP answer.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES_IN_FLIGHT);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // As axum's listener does: out of file descriptors and the like pass.
                debug!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, ready) = (tls.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_der(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    #[test]
    fn self_signed_certificates_load() {
        let (cert, key) = self_signed(self_signed_names()).unwrap();
        let pair = PemPair {
            cert: cert.into_bytes(),
            key: key.into_bytes(),
        };
        let loaded = pair.load(&provider()).unwrap();
        assert_eq!(loaded.cert.len(), 1);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed(vec!["a".into()]).unwrap();
        let (_, other_key) = self_signed(vec!["b".into()]).unwrap();
        let pair = PemPair {
            cert: cert.into_bytes(),
            key: other_key.into_bytes(),
        };
        let err = pair.load(&provider()).unwrap_err();
        assert!(format!("{err:#}").contains("does not go with"), "{err:#}");
        let garbage = PemPair {
            cert: b"not pem".to_vec(),
            key: b"not pem".to_vec(),
        };
        assert!(garbage.load(&provider()).is_err());
    }

    #[test]
    fn changed_files_are_reloaded_and_bad_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let write = |(cert, key): (String, String)| {
            std::fs::write(dir.path().join(CERT_FILE), cert).unwrap();
            std::fs::write(dir.path().join(KEY_FILE), key).unwrap();
        };
        let p = provider();
        write(self_signed(vec!["first".into()]).unwrap());
        let served = PemPair::read(dir.path()).unwrap();
        let first = served.load(&p).unwrap();
        assert!(
            reload_once(dir.path(), &served, &p).unwrap().is_none(),
            "unchanged"
        );

        write(self_signed(vec!["second".into()]).unwrap());
        let (pair, second) = reload_once(dir.path(), &served, &p)
            .unwrap()
            .expect("changed");
        assert_ne!(leaf_der(&first), leaf_der(&second));
        assert_eq!(pair, PemPair::read(dir.path()).unwrap());

        // Half a rotation (a new certificate, the old key) is refused: the old pair stays.
        let (third_cert, _) = self_signed(vec!["third".into()]).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), third_cert).unwrap();
        assert!(reload_once(dir.path(), &pair, &p).is_err());
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(reload_once(dir.path(), &pair, &p).is_err());
    }

    #[tokio::test]
    async fn the_store_serves_the_reloaded_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let write = |(cert, key): (String, String)| {
            std::fs::write(dir.path().join(CERT_FILE), cert).unwrap();
            std::fs::write(dir.path().join(KEY_FILE), key).unwrap();
        };
        write(self_signed(vec!["first".into()]).unwrap());
        let shutdown = CancellationToken::new();
        let (_config, store) = build(
            &CertSource::Dir(dir.path().to_path_buf()),
            Duration::from_millis(20),
            shutdown.clone(),
        )
        .unwrap();
        let current = || leaf_der(&store.get());
        let first = current();
        write(self_signed(vec!["second".into()]).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while current() == first {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    }
}
