//! `optin serve`: the TLS listener, its connections, the admin socket and shutdown.
//!
//! One task accepts; each connection runs in a task of a `JoinSet` the server waits for.
//! Connections are capped, handshakes and request heads time out, and on SIGINT/SIGTERM the
//! server stops accepting, lets in-flight requests finish (bounded), flushes the store and
//! returns.

pub mod admin;
pub mod http;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::core::{Core, CoreConfig};
use crate::home::Home;
use crate::keys::Keys;
use crate::store::Store;
use tls::TlsSource;

/// Settings of `optin serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The home.
    pub home: PathBuf,
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// The certificate to serve.
    pub tls: TlsSource,
    /// Abandonment delay of carts.
    pub abandon_after: optin_protocol::span::Span,
    /// Most connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the agent until a shutdown signal.
pub async fn serve(config: ServeConfig) -> Result<()> {
    let home = Home::open(&config.home)?;
    let keys = Keys::load_or_create(&home)?;
    let identity = tls::load(&home, &config.tls)?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let store = Store::open_waiting(&home.store(), Duration::from_secs(5))?;
    let url = format!("https://{addr}");
    store.set_meta("agent_url", &url)?;
    store.set_meta("cert_sha256", &identity.sha256)?;
    // The offline CLI and native host derive cart states with the same delay.
    store.set_meta("abandon_after", &config.abandon_after.to_string())?;
    let core =
        Arc::new(Core::new(store, keys, CoreConfig { abandon_after: config.abandon_after, agent_url: url.clone(), cert_sha256: identity.sha256.clone() }));

    // Listen for signals before announcing readiness: a SIGTERM right after the ready line
    // must stop the agent gracefully, not kill it.
    let shutdown = shutdown_signal()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_listener = admin::bind(&home)?;
    let admin = tokio::spawn(admin::serve(admin_listener, home.clone(), core.clone(), stop_rx.clone()));
    let https = tokio::spawn(accept_loop(listener, TlsAcceptor::from(identity.config), http::app(core.clone()), config.max_connections, stop_rx));

    println!("listening on {url} (certificate sha256 {})", identity.sha256);
    tracing::info!(%addr, "agent ready");

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    https.await.context("listener task failed")??;
    admin.await.context("admin task failed")??;
    core.flush()?;
    Ok(())
}

/// Registers SIGTERM and SIGINT handlers now; the future completes on the first signal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, app: axum::Router, max_connections: usize, mut stop: watch::Receiver<bool>) -> Result<()> {
    let permits = Arc::new(Semaphore::new(max_connections));
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
                    // Running out of file descriptors is transient: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(tcp, acceptor, app, stop).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow with the agent's uptime.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("in-flight connections did not finish in time; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

/// When the connection last finished a request, and how many are in flight: what the idle
/// watchdog of [`connection`] looks at.
struct Activity {
    started: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.in_flight.load(SeqCst) > 0 {
            return None;
        }
        let now = self.started.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(self.last_ms.load(SeqCst))))
    }

    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn connection(tcp: tokio::net::TcpStream, acceptor: TlsAcceptor, app: axum::Router, mut stop: watch::Receiver<bool>) -> Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await.context("TLS handshake timed out")??;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64).keep_alive_interval(Some(Duration::from_secs(30)));
    let activity = Arc::new(Activity { started: std::time::Instant::now(), last_ms: 0.into(), in_flight: 0.into() });
    let tower = TowerToHyperService::new(app);
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        seen.in_flight.fetch_add(1, SeqCst);
        let response = hyper::service::Service::call(&tower, request);
        let seen = seen.clone();
        async move {
            let result = response.await;
            seen.touch();
            seen.in_flight.fetch_sub(1, SeqCst);
            result
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    // A peer that completes the handshake and then says nothing, or keeps an idle connection,
    // would hold one of the capped slots forever: hyper's own timeout covers only HTTP/1
    // request heads, not version sniffing or idle HTTP/2. So: a first request within
    // HEADER_TIMEOUT, and no more than IDLE_TIMEOUT between requests.
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            result = conn.as_mut() => return result.map_err(|e| anyhow::anyhow!(e)),
            _ = stop.changed() => break,
            _ = watchdog.tick() => {
                let limit = if activity.last_ms.load(SeqCst) == 0 { HEADER_TIMEOUT } else { IDLE_TIMEOUT };
                if activity.idle_for().is_some_and(|idle| idle >= limit) {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    // A peer that ignores the goodbye does not hold the slot either.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
    Ok(())
}
