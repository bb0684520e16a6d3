//! `optin native-host`: the browser extension's way in, started by the browser.
//!
//! Native messaging frames (a 4-byte length in native byte order, then UTF-8 JSON) on
//! stdin/stdout. Like keepassxc-proxy, the host holds nothing itself: it forwards each
//! request to the running agent over the admin socket, and when no agent runs it opens the
//! store for that one request and closes it at once, so it never locks the agent out.
//!
//! The host answers only the optin extension (its id is checked against the caller the
//! browser names in argv), validates every message, and never hands the extension a token,
//! key or grant secret: grants are listed by their terms only.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::core::command::{Request, Response};
use crate::home::Home;

/// The Chromium extension id (from the manifest's fixed key).
pub const CHROMIUM_EXTENSION_ID: &str = include_str!("../../../extension/EXTENSION_ID");
/// The Firefox add-on id.
pub const FIREFOX_EXTENSION_ID: &str = "optin@optin.dev";
/// Largest message accepted from the extension.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Most signals in one message.
pub const MAX_SIGNALS: usize = 100;

/// The origin Chromium passes as argv[1] for our extension.
pub fn chromium_origin() -> String {
    format!("chrome-extension://{}/", CHROMIUM_EXTENSION_ID.trim())
}

/// Whether the browser's arguments name our extension: Chromium passes the caller's origin,
/// Firefox the manifest path and then the add-on id.
pub fn caller_allowed(args: &[String]) -> bool {
    let origin = chromium_origin();
    args.iter().any(|a| *a == origin || a == FIREFOX_EXTENSION_ID)
}

/// Runs the host until the browser closes stdin.
pub async fn run(home_dir: &Path, args: &[String]) -> Result<()> {
    if !caller_allowed(args) {
        bail!("refusing to serve a caller other than the optin extension ({})", args.first().map_or("no caller named", String::as_str));
    }
    // Signals the extension sends are stored even into a home made just now: the person
    // installed the host for this, and losing the batch would be worse than a fresh store.
    let home = Home::open_or_create(home_dir)?;
    record_connection(&home, args);
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    while let Some(message) = read_frame(&mut stdin)? {
        let reply = answer(&home, &message).await;
        write_frame(&mut stdout, &reply)?;
    }
    Ok(())
}

/// Reads one frame; `None` at a clean end of input.
pub fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("cannot read from the browser"),
    }
    let len = u32::from_ne_bytes(len) as usize;
    if len > MAX_MESSAGE {
        bail!("message of {len} bytes exceeds {MAX_MESSAGE}");
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).context("truncated message from the browser")?;
    Ok(Some(body))
}

/// Writes one frame.
pub fn write_frame(output: &mut impl Write, value: &Value) -> Result<()> {
    let body = serde_json::to_vec(value)?;
    let len = u32::try_from(body.len()).context("reply too large")?;
    output.write_all(&len.to_ne_bytes())?;
    output.write_all(&body)?;
    output.flush()?;
    Ok(())
}

fn record_connection(home: &Home, args: &[String]) {
    // Read by `optin browser status`; losing it only loses that display.
    let caller = if args.iter().any(|a| a == FIREFOX_EXTENSION_ID) { "firefox" } else { "chromium" };
    let record = json!({ "at": optin_protocol::timestamp::format(crate::core::now()), "browser": caller });
    let _ = crate::home::write_private(&home.root().join("browser/last-connection.json"), record.to_string().as_bytes());
}

async fn answer(home: &Home, message: &[u8]) -> Value {
    let Ok(request) = serde_json::from_slice::<Value>(message) else {
        return json!({ "ok": false, "error": "message is not JSON" });
    };
    let id = match request.get("id") {
        Some(Value::Number(n)) if n.is_u64() => Value::Number(n.clone()),
        _ => return json!({ "ok": false, "error": "message has no numeric id" }),
    };
    let mut reply = match handle(home, &request).await {
        Ok(v) => v,
        Err(Failure::Refused(error)) => json!({ "ok": false, "error": error }),
        Err(Failure::Retry(error)) => json!({ "ok": false, "retry": true, "error": error }),
    };
    reply["id"] = id;
    reply
}

enum Failure {
    /// The request is wrong: do not send it again.
    Refused(String),
    /// Nothing is wrong with it, but it cannot be done now.
    Retry(String),
}

async fn handle(home: &Home, request: &Value) -> Result<Value, Failure> {
    let refused = |e: &str| Failure::Refused(e.to_owned());
    match request.get("type").and_then(Value::as_str) {
        Some("hello") => {
            let running = matches!(crate::session::call(&home.admin_socket(), &Request::Status).await, Ok(Some(_)));
            Ok(json!({ "ok": true, "agent": if running { "running" } else { "stopped" }, "version": env!("CARGO_PKG_VERSION") }))
        }
        Some("signals") => {
            let list = request.get("signals").and_then(Value::as_array).ok_or_else(|| refused("`signals` must be a list"))?;
            if list.is_empty() || list.len() > MAX_SIGNALS {
                return Err(Failure::Refused(format!("send 1 to {MAX_SIGNALS} signals at a time")));
            }
            // Validate here too, so a bad batch is refused (not retried) even with no agent.
            let mut ndjson = String::new();
            for (i, s) in list.iter().enumerate() {
                optin_protocol::signal::parse_value(s, &crate::merchant::registrable).map_err(|e| Failure::Refused(format!("signal {}: {e}", i + 1)))?;
                ndjson.push_str(&s.to_string());
                ndjson.push('\n');
            }
            match forward(home, Request::Ingest { ndjson, dry_run: false }).await? {
                Response::Ingested { stored, duplicates } => Ok(json!({ "ok": true, "stored": stored, "duplicates": duplicates })),
                _ => Err(refused("unexpected answer from the agent")),
            }
        }
        Some("grants") => match forward(home, Request::Grants).await? {
            Response::Grants { grants } => {
                let grants: Vec<Value> = grants
                    .into_iter()
                    .map(|g| {
                        json!({
                            "grant_id": g.grant_id,
                            "marketer": g.marketer,
                            "purpose": g.purpose,
                            "kinds": g.terms.kinds,
                            "granularity": g.terms.granularity,
                            "expires_at": optin_protocol::timestamp::format(g.terms.expires_at),
                            "state": g.state,
                        })
                    })
                    .collect();
                Ok(json!({ "ok": true, "grants": grants }))
            }
            _ => Err(refused("unexpected answer from the agent")),
        },
        Some("revoke") => {
            let id = request
                .get("grant_id")
                .and_then(Value::as_str)
                .and_then(optin_protocol::scope::GrantId::parse)
                .ok_or_else(|| refused("`grant_id` must be a grant id (g_…)"))?;
            forward(home, Request::Revoke { grant_id: id }).await?;
            Ok(json!({ "ok": true }))
        }
        Some(other) => Err(Failure::Refused(format!("unknown message type `{}`", other.chars().take(32).collect::<String>()))),
        None => Err(refused("message has no type")),
    }
}

/// Runs a request through the session: refused when the request is wrong, retried when
/// optin cannot take it now (see `ErrorKind`).
async fn forward(home: &Home, request: Request) -> Result<Response, Failure> {
    crate::session::execute(home, request).await.map_err(|failed| {
        if failed.kind.retryable() {
            Failure::Retry(failed.message)
        } else {
            Failure::Refused(failed.message)
        }
    })
}
