//! The HTTPS listener: accepting TLS connections under a cap, serving each with hyper
//! (HTTP/1.1 or HTTP/2 by ALPN), and the waits that keep a slow or silent peer from holding
//! a slot: handshake, first request, idle time, drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts and serves connections until `stop`, then lets in-flight ones finish (bounded).
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
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
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await.context("TLS handshake timed out")??;
    // A peer that completes the handshake and then says nothing is told goodbye with a TLS
    // close_notify (RFC 8446, section 6.1), so it can tell a deliberate close from a cut
    // line. Waiting here, before hyper owns the stream, is what lets us send it. Bytes that
    // arrived with the handshake are already decrypted inside rustls, where the socket's
    // readiness would not show them.
    let buffered = tls.get_mut().1.process_new_packets().map(|state| state.plaintext_bytes_to_read() > 0).unwrap_or(false);
    if !buffered && tokio::time::timeout(HEADER_TIMEOUT, tls.get_ref().0.readable()).await.is_err() {
        let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
        return Ok(());
    }
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
