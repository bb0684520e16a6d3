//! `optin-inbox serve`: HTTPS (rustls, HTTP/1.1 and HTTP/2 by ALPN) on loopback by default,
//! publishing the requests and taking pushes ([`http`]). Every wait is bounded: the TLS
//! handshake, a connection's first request, the time idle between requests, a body's arrival,
//! and the drain at shutdown; at most `max_connections` are served at once, the rest wait in
//! the kernel's backlog.

pub mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::home::{check_private, write_new, Home};
use crate::receive::Inbox;
use crate::store::Store;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 16;

/// How much the server takes on at once, and how long it waits for a peer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Bytes of push bodies held in memory at once (at least one largest body).
    pub body_budget: usize,
    /// A TLS handshake.
    pub handshake: Duration,
    /// A connection's first request, after the handshake.
    pub first_request: Duration,
    /// A kept-alive connection between requests.
    pub idle: Duration,
}

impl Limits {
    /// These caps, with the waits SPEC.md gives an agent's own listener: 10 s for the
    /// handshake and the first request, 30 s idle.
    pub fn new(max_connections: usize, body_budget: usize) -> Limits {
        Limits { max_connections, body_budget, handshake: Duration::from_secs(10), first_request: Duration::from_secs(10), idle: Duration::from_secs(30) }
    }
}

/// The certificate to serve: the marketer's own, or the home's, made on first start.
#[derive(Clone, Debug, Default)]
pub struct TlsSource {
    /// A certificate chain and its key (PEM).
    pub user: Option<(PathBuf, PathBuf)>,
}

/// Makes the home's self-signed certificate if it has none, for the domain and every name
/// under it (an agent checks the inbox's name against it) and `localhost`.
pub fn ensure_self_signed(home: &Home, domain: &str) -> Result<()> {
    if home.tls_cert().exists() && home.tls_key().exists() {
        return Ok(());
    }
    let names = vec![domain.to_owned(), format!("*.{domain}"), "localhost".to_owned()];
    let made = rcgen::generate_simple_self_signed(names).context("cannot make a self-signed certificate")?;
    write_new(&home.tls_key(), made.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(&home.tls_cert(), made.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The TLS configuration to serve, and the certificate file (for the ready line).
pub fn load_tls(home: &Home, domain: &str, source: &TlsSource) -> Result<(Arc<rustls::ServerConfig>, PathBuf)> {
    let (cert, key) = match &source.user {
        Some(pair) => pair.clone(),
        None => {
            ensure_self_signed(home, domain)?;
            (home.tls_cert(), home.tls_key())
        }
    };
    check_private(&key)?;
    let chain = read_chain(&cert)?;
    let pem = std::fs::read(&key).with_context(|| format!("cannot read key {}", key.display()))?;
    // The parser's error can quote a line of the file, which would be key material.
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| anyhow::anyhow!("{} is not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| format!("{} and {} do not make a usable certificate and key", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read certificate {}", path.display()))?;
    let chain =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().with_context(|| format!("{} is not a PEM certificate chain", path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(chain)
}

/// Accepts and serves connections until `stop` turns true, then lets in-flight ones finish
/// (bounded by [`DRAIN_TIMEOUT`]).
pub async fn serve<S: Store>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    inbox: Arc<Inbox<S>>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let bodies = http::body_budget(limits.body_budget);
    let max_connections = limits.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p?,
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Running out of file descriptors passes: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, inbox, bodies, stop) = (acceptor.clone(), inbox.clone(), bodies.clone(), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(tcp, peer, acceptor, inbox, bodies, limits, stop).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow with the uptime.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("in-flight connections did not finish in time; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

/// What the watchdog of one connection reads: requests under way, and when the last ended.
struct Activity {
    limits: Limits,
    started: Instant,
    in_flight: AtomicUsize,
    answered: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX), SeqCst);
    }

    /// How long the connection has waited for a request, if none is under way, and the bound
    /// on that wait: the first request's, or the idle time between requests.
    fn waiting(&self) -> Option<(Duration, Duration)> {
        if self.in_flight.load(SeqCst) > 0 {
            return None;
        }
        let since = self.started.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(SeqCst)));
        let limit = if self.answered.load(SeqCst) == 0 { self.limits.first_request } else { self.limits.idle };
        Some((since, limit))
    }
}

async fn connection<S: Store>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    inbox: Arc<Inbox<S>>,
    bodies: Arc<Semaphore>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let tls = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await.context("TLS handshake timed out")??;
    let activity =
        Arc::new(Activity { limits, started: Instant::now(), in_flight: AtomicUsize::new(0), answered: AtomicUsize::new(0), last_ms: AtomicU64::new(0) });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer also runs while a kept-alive connection waits, so it is set to the
    // idle bound; the watchdog below holds the first request to its shorter one.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_STREAMS);
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let (inbox, bodies, seen) = (inbox.clone(), bodies.clone(), seen.clone());
        seen.in_flight.fetch_add(1, SeqCst);
        async move {
            let response = http::answer(inbox, bodies, request).await;
            seen.touch();
            seen.answered.fetch_add(1, SeqCst);
            seen.in_flight.fetch_sub(1, SeqCst);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            result = conn.as_mut() => return result.map_err(|e| anyhow::anyhow!(e)),
            _ = stop.changed() => break,
            _ = watchdog.tick() => {
                if activity.waiting().is_some_and(|(since, limit)| since >= limit) {
                    tracing::debug!(%peer, "closing a connection that waited too long for a request");
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await {
        Ok(result) => result.map_err(|e| anyhow::anyhow!(e)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::requests::{Catalog, Published};
    use crate::store::{Keep, Sqlite};

    /// A server on 127.0.0.1:0 with a certificate made for the test, and a client trusting it.
    async fn start(limits: Limits) -> (SocketAddr, Arc<rustls::ClientConfig>, watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().to_owned());
        let (tls, cert) = load_tls(&home, "acme.example", &TlsSource::default()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(read_chain(&cert).unwrap().remove(0)).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tolerance = optin_protocol::webhook::DEFAULT_TOLERANCE;
        let inbox = Arc::new(Inbox {
            store: Sqlite::in_memory(),
            domain: "acme.example".into(),
            requests: Catalog::fixed(Published::default()),
            tolerance,
            keep: Keep::Erase,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, tls, inbox, limits, stopped));
        (addr, Arc::new(client), stop, server)
    }

    async fn connect(addr: SocketAddr, client: &Arc<rustls::ClientConfig>) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("acme.example").unwrap();
        tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp).await.unwrap()
    }

    /// Reads until the server closes; how long that took.
    async fn closed_after(mut tls: tokio_rustls::client::TlsStream<TcpStream>) -> Duration {
        let started = Instant::now();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut sink)).await.expect("the server closes the connection");
        started.elapsed()
    }

    #[tokio::test]
    async fn a_silent_or_idle_connection_is_closed_and_frees_its_slot() {
        // Idle far longer than the first request's wait, so each close shows which bound made it.
        let limits = Limits { first_request: Duration::from_millis(300), idle: Duration::from_secs(2), ..Limits::new(1, 0) };
        let (addr, client, stop, server) = start(limits).await;
        // Says nothing after the handshake: closed after the first request's wait.
        let silent = closed_after(connect(addr, &client).await).await;
        assert!(silent >= Duration::from_millis(250) && silent < Duration::from_millis(1500), "{silent:?}");
        // The one slot is free again: a request is answered, then the idle wait closes it.
        let mut tls = connect(addr, &client).await;
        tls.write_all(b"GET /.well-known/optin-request.json HTTP/1.1\r\nHost: acme.example\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        tls.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 404");
        let idle = closed_after(tls).await;
        assert!(idle >= Duration::from_millis(1800) && idle < Duration::from_secs(5), "{idle:?}");
        stop.send(true).unwrap();
        server.await.unwrap().unwrap();
    }
}
