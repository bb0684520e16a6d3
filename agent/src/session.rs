//! A session with the person's optin: the running agent over its admin socket, or the
//! store itself when no agent runs.
//!
//! The CLI and the browser's native host both reach optin this way, which is why they
//! behave the same whether or not `optin serve` runs: either the agent executes the
//! [`Request`], or this process opens the store and executes it with the same
//! [`Core::handle`].

use std::path::Path;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::core::command::{ErrorKind, Reply, Request, Response, MAX_LINE};
use crate::core::{blocking, Core, CoreConfig, CoreError};
use crate::home::Home;
use crate::keys::Keys;
use crate::store::Store;
use crate::tls::{self, TlsSource};

/// How long the CLI waits for the agent's answer. Generous: a revoke may wait for slices in
/// flight, and an ingest for a large batch's fsync.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Sends one request to the agent of `home`; `None` when no agent listens there.
pub async fn call(socket: &Path, request: &Request) -> Result<Option<Reply>> {
    tokio::time::timeout(CALL_TIMEOUT, exchange(socket, request))
        .await
        .with_context(|| format!("the agent at {} did not answer within {} s", socket.display(), CALL_TIMEOUT.as_secs()))?
}

async fn exchange(socket: &Path, request: &Request) -> Result<Option<Reply>> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot reach the agent at {}", socket.display())),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await.context("cannot send to the agent")?;
    let mut answer = Vec::new();
    BufReader::new(read).take(MAX_LINE as u64).read_until(b'\n', &mut answer).await.context("cannot read the agent's answer")?;
    if answer.is_empty() {
        anyhow::bail!("the agent closed the admin connection without answering");
    }
    Ok(Some(serde_json::from_slice(&answer).context("the agent's answer is not a reply")?))
}

/// A command that failed, on the agent or here, with what kind of failure it was.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// Whether it is the request that is wrong, or optin that cannot do it now.
    pub kind: ErrorKind,
    /// What went wrong, for the person.
    pub message: String,
}

impl Failed {
    fn unavailable(e: anyhow::Error) -> Failed {
        Failed { kind: ErrorKind::Unavailable, message: format!("{e:#}") }
    }
}

impl From<CoreError> for Failed {
    fn from(e: CoreError) -> Failed {
        Failed { kind: e.kind(), message: e.to_string() }
    }
}

/// Runs a request on the running agent, or on the store when no agent runs. Failing to
/// reach either is `unavailable`: the request may work later.
pub async fn execute(home: &Home, request: Request) -> Result<Response, Failed> {
    match call(&home.admin_socket(), &request).await.map_err(Failed::unavailable)? {
        Some(Reply::Ok(response)) => return Ok(response),
        Some(Reply::Err { kind, message }) => return Err(Failed { kind, message }),
        None => {}
    }
    let core = blocking(|| open_offline(home)).map_err(|e| Failed::unavailable(e.context("the agent is not running and the store cannot be opened")))?;
    let response = core.handle(request, crate::core::now()).await?;
    blocking(|| core.flush()).map_err(CoreError::from)?;
    // Dropping the core closes the store at once, so an agent starting now can take it.
    drop(core);
    Ok(response)
}

/// The core over the store, for when no agent runs.
pub fn open_offline(home: &Home) -> Result<Core> {
    let keys = Keys::load_or_create(home)?;
    let store = Store::open_waiting(&home.store(), std::time::Duration::from_secs(5))?;
    let (agent_url, cert_sha256) = match store.address()? {
        Some(address) => (address.url, address.cert_sha256),
        None => (format!("https://{}", crate::core::DEFAULT_LISTEN), tls::fingerprint(home, &TlsSource::default())?),
    };
    let abandon_after = match store.abandon_after()? {
        Some(delay) => delay,
        None => crate::core::DEFAULT_ABANDON_AFTER.parse().context("the default abandonment delay")?,
    };
    Ok(Core::new(store, keys, CoreConfig { abandon_after, agent_url, cert_sha256, audit_keep: Default::default() }))
}
