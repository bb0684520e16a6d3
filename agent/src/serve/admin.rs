//! The admin socket's server side: how the CLI (and the browser's native host) reach a
//! running agent. The client side is [`crate::session`].
//!
//! A Unix-domain socket `admin.sock` in the home, mode 0600 inside a 0700 directory, and
//! peers must run as the home's owner. Each request is one JSON line ([`Request`]); each
//! answer one JSON line ([`Reply`]).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::core::command::{ErrorKind, Reply, Request, MAX_LINE};
use crate::core::Core;
use crate::home::Home;

/// Binds the admin socket of `home` (mode 0600). Done before the agent says it is ready, so
/// a command issued right after the ready line reaches the agent.
pub fn bind(home: &Home) -> Result<UnixListener> {
    let path = home.admin_socket();
    // A socket left by an agent that was killed would make bind fail; the store lock already
    // proved that no other agent owns this home.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the admin socket until `stop`.
/// Only peers running as `owner` are answered.
pub async fn serve(listener: UnixListener, owner: u32, core: Arc<Core>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut tasks = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner => {}
            _ => {
                tracing::warn!("admin connection from another user refused");
                continue;
            }
        }
        let (core, stop) = (core.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = session(stream, &core, stop).await {
                tracing::debug!(error = %e, "admin session ended with an error");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    // Let commands in progress (a revoke waiting for its gate) finish.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Answers one peer's requests in turn. While waiting for the next request it also watches
/// `stop`, so an idle client does not hold up shutdown; a command already running finishes.
async fn session(stream: UnixStream, core: &Core, mut stop: watch::Receiver<bool>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut lines).take(MAX_LINE as u64 + 1);
        let n = tokio::select! {
            n = limited.read_until(b'\n', &mut line) => n?,
            // A request cut off here was never answered: its client sees the connection close
            // without a reply, which it treats as "try again".
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_LINE {
            Reply::Err { kind: ErrorKind::Invalid, message: format!("request longer than {MAX_LINE} bytes") }
        } else {
            // A line can be a 64 MiB ingest batch: parse it off the async workers.
            match crate::core::blocking(|| serde_json::from_slice::<Request>(&line)) {
                Ok(request) => match core.handle(request, crate::core::now()).await {
                    Ok(response) => Reply::Ok(response),
                    Err(e) => Reply::Err { kind: e.kind(), message: e.to_string() },
                },
                Err(e) => Reply::Err { kind: ErrorKind::Invalid, message: format!("not an admin request: {e}") },
            }
        };
        let mut out = serde_json::to_vec(&reply)?;
        out.push(b'\n');
        write.write_all(&out).await?;
        if line.len() > MAX_LINE {
            return Ok(());
        }
    }
}
