//! `optin serve`: the HTTPS API for marketers and feeders, and the admin socket for the
//! person's CLI and native host, over one [`Core`].
//!
//! [`serve`] runs both on listeners it is given until a shutdown future completes, so tests
//! run it in-process; [`run`] is the binary's way in: it opens the home, binds, prints the
//! ready line and stops on SIGINT/SIGTERM. On shutdown the listeners stop accepting,
//! requests in flight finish (bounded), and the store is flushed before `serve` returns.
//!
//! - [`http`]: the only module that knows HTTP (routes, problem+json);
//! - [`listener`]: TLS connections, their cap and their timeouts;
//! - [`admin`]: the admin socket's server side.
//!
//! Beside them run the push sender ([`crate::push`]), which only connects out, and the audit
//! pruner ([`prune`]), which keeps the audit log within the person's bound.
//!
//! The certificate comes from [`crate::tls`], which the offline session uses too.

pub mod admin;
pub mod http;
pub mod listener;
pub mod prune;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::core::{Core, CoreConfig};
use crate::home::Home;
use crate::keys::Keys;
use crate::store::{Address, Store};
use crate::tls::{self, TlsSource};

/// Most marketer connections open at once, unless `optin serve --max-connections` says
/// otherwise: far more than one person's marketers need, and few enough file descriptors
/// to stay under a default limit of 1024.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

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
    /// The address bundles name instead of the one listened on.
    pub public_url: Option<String>,
    /// How pushes reach inboxes.
    pub outbound: crate::outbound::OutboundConfig,
    /// How much of the audit log is kept.
    pub audit_keep: crate::store::AuditKeep,
}

/// What [`serve`] listens on.
pub struct Listeners {
    /// The HTTPS listener.
    pub https: TcpListener,
    /// Its TLS settings.
    pub tls: Arc<rustls::ServerConfig>,
    /// Most HTTPS connections at once.
    pub max_connections: usize,
    /// The admin socket and the uid allowed to use it, if any.
    pub admin: Option<(UnixListener, u32)>,
    /// The client pushes go out through; without one, push events wait in the queue.
    pub pushes: Option<crate::outbound::Client>,
}

/// Serves the HTTPS API and the admin socket over `core` until `shutdown` completes; then
/// stops accepting, lets in-flight work finish (bounded) and flushes the store.
pub async fn serve(listeners: Listeners, core: Arc<Core>, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin = listeners.admin.map(|(socket, owner)| tokio::spawn(admin::serve(socket, owner, core.clone(), stop_rx.clone())));
    let acceptor = TlsAcceptor::from(listeners.tls);
    let pushes = listeners.pushes.map(|client| tokio::spawn(crate::push::run(core.clone(), client, stop_rx.clone())));
    let pruner = tokio::spawn(prune::run(core.clone(), stop_rx.clone()));
    let https = tokio::spawn(listener::accept_loop(listeners.https, acceptor, http::app(core.clone()), listeners.max_connections, stop_rx));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    https.await.context("listener task failed")??;
    if let Some(pushes) = pushes {
        pushes.await.context("push task failed")?;
    }
    if let Some(admin) = admin {
        admin.await.context("admin task failed")??;
    }
    pruner.await.context("audit pruner failed")?;
    core.flush()?;
    Ok(())
}

/// `--public-url`: an `https` origin, a host name or IP address and a port (443 if none), with
/// nothing else, since a marketer adds the API's paths to it. Written back in one form, so
/// bundles name the agent the same way whatever was typed.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let refused = |why: &str| format!("{why}: expected https://HOST or https://HOST:PORT, like https://optin.example.net:7676");
    let uri: hyper::Uri = text.parse().map_err(|_| refused("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(refused("not https"));
    }
    let authority = uri.authority().ok_or_else(|| refused("no host"))?;
    if authority.as_str().contains('@') {
        return Err(refused("a user name has no place in it"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(refused("a path or query has no place in it"));
    }
    if text.contains('#') {
        return Err(refused("a fragment has no place in it"));
    }
    // A host name or an IP address, nothing a URL parser lets through besides (a zone id,
    // sub-delimiters, a trailing dot): bundles carry it to every marketer.
    let host = authority.host().to_ascii_lowercase();
    let is_ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok(),
    };
    if !is_ip && optin_protocol::signal::plain_domain(&host).ok().as_deref() != Some(host.as_str()) {
        return Err(refused("not a host name or IP address"));
    }
    // The port always written, as bundles name the agent (`https://host:port`).
    match authority.port_u16().unwrap_or(443) {
        0 => Err(refused("port 0")),
        port => Ok(format!("https://{host}:{port}")),
    }
}

/// Runs the agent of a home until SIGINT or SIGTERM: the binary's `optin serve`.
pub async fn run(config: ServeConfig) -> Result<()> {
    let home = Home::open_or_create(&config.home)?;
    let keys = Keys::load_or_create(&home)?;
    let identity = tls::load(&home, &config.tls)?;
    let https = TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = https.local_addr()?;
    let store = Store::open_waiting(&home.store(), Duration::from_secs(5))?;
    let url = format!("https://{addr}");
    // What bundles name: where marketers reach the agent, which a forwarded port or a public
    // name makes other than where it listens. Stored, so bundles made offline name it too.
    let public = config.public_url.clone().unwrap_or_else(|| url.clone());
    store.set_address(&Address { url: public.clone(), cert_sha256: identity.sha256.clone() })?;
    // The offline CLI and native host derive cart states with the same delay.
    store.set_abandon_after(config.abandon_after)?;
    let core =
        CoreConfig { abandon_after: config.abandon_after, agent_url: public.clone(), cert_sha256: identity.sha256.clone(), audit_keep: config.audit_keep };
    let core = Arc::new(Core::new(store, keys, core));

    // Listen for signals before announcing readiness: a SIGTERM right after the ready line
    // must stop the agent gracefully, not kill it. The admin socket is bound before it too,
    // so a command issued right after the ready line reaches the agent.
    let shutdown = shutdown_signal()?;
    let admin = admin::bind(&home)?;
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(home.root())?);
    let pushes = crate::outbound::Client::new(config.outbound).context("cannot set up pushes")?;
    let listeners = Listeners { https, tls: identity.config, max_connections: config.max_connections, admin: Some((admin, owner)), pushes: Some(pushes) };

    // The ready line is how scripts learn the address; a closed stdout must not stop the
    // agent (println! would panic), so a failed write is only logged.
    let mut ready = format!("listening on {url} (certificate sha256 {})\n", identity.sha256);
    // On a line of its own, so the ready line reads the same for every script that waits on it.
    if public != url {
        ready.push_str(&format!("bundles name {public}\n"));
    }
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout(), ready.as_bytes()).and_then(|()| std::io::Write::flush(&mut std::io::stdout())) {
        tracing::warn!(error = %e, "cannot print the ready line");
    }
    tracing::info!(%addr, "agent ready");
    let result = serve(listeners, core, shutdown).await;
    let _ = std::fs::remove_file(home.admin_socket());
    result
}

/// Registers SIGTERM and SIGINT handlers now; the future completes on the first signal.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
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
