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
use optin_protocol::scope::{GrantId, Granularity};
use optin_protocol::signal::Kinds;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{Browser, LastConnection};
use crate::core::command::{GrantState, GrantView, Request, Response};
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
    record_connection(&home, args).await;
    // Standard input and output are blocking files: each frame is read and written on a
    // blocking thread, one at a time, so no async worker ever waits on the browser.
    while let Some(message) = blocking(|| read_frame(&mut std::io::stdin().lock())).await? {
        let reply = answer(&home, &message).await;
        blocking(move || write_frame(&mut std::io::stdout().lock(), &reply)).await?;
    }
    Ok(())
}

/// Runs blocking I/O off the async workers and waits for it.
async fn blocking<T: Send + 'static>(io: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(io).await.context("the native host's I/O failed")?
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
pub fn write_frame(output: &mut impl Write, message: &impl Serialize) -> Result<()> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len()).context("reply too large")?;
    output.write_all(&len.to_ne_bytes())?;
    output.write_all(&body)?;
    output.flush()?;
    Ok(())
}

/// Records when the extension connected, for `optin status` and `optin browser status`;
/// losing it only loses that display.
async fn record_connection(home: &Home, args: &[String]) {
    let browser = if args.iter().any(|a| a == FIREFOX_EXTENSION_ID) { Browser::Firefox } else { Browser::Chromium };
    let record = LastConnection { at: crate::core::now(), browser };
    let home = home.clone();
    // The record is synced to disk before it replaces the last one: blocking work.
    let _ = blocking(move || record.record(&home)).await;
}

/// A message as it arrives: the id its reply echoes, and the rest, read as a [`Message`]
/// only once the id is known, so that a wrong message is refused under its own id.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: u64,
    // Flattened, which also means only a JSON object is read: a struct alone would read an
    // array as its fields in order.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// What the extension asks, by its `type`. Fields the host does not read are ignored, so a
/// newer extension may send more.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Message {
    /// Whether the agent runs, and the host's version.
    Hello,
    /// Store these signals, all or nothing.
    Signals {
        /// The signals, each validated before any is stored.
        #[serde(deserialize_with = "signal_list")]
        signals: Vec<Value>,
    },
    /// The grants, by their terms.
    Grants,
    /// Revoke a grant.
    Revoke {
        /// Which.
        #[serde(deserialize_with = "grant_id")]
        grant_id: GrantId,
    },
    /// A type this host does not know. Read as such rather than failing to parse, so the
    /// refusal never echoes what the extension sent.
    #[serde(other)]
    Unknown,
}

fn signal_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Vec::deserialize(d).map_err(|_: D::Error| D::Error::custom("`signals` must be a list"))
}

fn grant_id<'de, D: Deserializer<'de>>(d: D) -> Result<GrantId, D::Error> {
    GrantId::deserialize(d).map_err(|_: D::Error| D::Error::custom("`grant_id` must be a grant id (g_…)"))
}

/// A reply: the id of the message it answers (absent only when the message had no id that
/// could be read), whether it worked, and the answer.
#[derive(Debug, Serialize)]
struct Reply {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    ok: bool,
    #[serde(flatten)]
    answer: Answer,
}

impl Reply {
    fn new(id: Option<u64>, outcome: Result<Answer, Failure>) -> Reply {
        match outcome {
            Ok(answer) => Reply { id, ok: true, answer },
            Err(Failure::Refused(error)) => Reply { id, ok: false, answer: Answer::Failed { retry: false, error } },
            Err(Failure::Retry(error)) => Reply { id, ok: false, answer: Answer::Failed { retry: true, error } },
        }
    }
}

/// What a reply says besides its id and `ok`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Answer {
    /// To `hello`.
    Hello { agent: AgentState, version: &'static str },
    /// To `signals`: every signal is stored, or was already.
    Stored { stored: usize, duplicates: usize },
    /// To `grants`.
    Grants { grants: Vec<GrantTerms> },
    /// To `revoke`: the agent no longer honours the grant.
    Revoked {},
    /// The message failed; with `retry`, nothing is wrong with it but it cannot be done now.
    Failed {
        #[serde(skip_serializing_if = "is_false")]
        retry: bool,
        error: String,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Whether an agent answers on the admin socket.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum AgentState {
    Running,
    Stopped,
}

/// A grant as the extension sees it: its terms, never its token or key.
#[derive(Debug, Serialize)]
struct GrantTerms {
    grant_id: GrantId,
    marketer: String,
    purpose: String,
    kinds: Kinds,
    granularity: Granularity,
    #[serde(with = "optin_protocol::timestamp::serde")]
    expires_at: OffsetDateTime,
    state: GrantState,
}

impl From<GrantView> for GrantTerms {
    fn from(g: GrantView) -> GrantTerms {
        GrantTerms {
            grant_id: g.grant_id,
            marketer: g.marketer,
            purpose: g.purpose,
            kinds: g.terms.kinds,
            granularity: g.terms.granularity,
            expires_at: g.terms.expires_at,
            state: g.state,
        }
    }
}

async fn answer(home: &Home, bytes: &[u8]) -> Reply {
    let envelope = match serde_json::from_slice::<Envelope>(bytes) {
        Ok(envelope) => envelope,
        Err(e) if e.is_data() => return Reply::new(None, Err(Failure::Refused("message has no numeric id".into()))),
        Err(_) => return Reply::new(None, Err(Failure::Refused("message is not JSON".into()))),
    };
    let outcome = match Message::deserialize(Value::Object(envelope.rest)) {
        Ok(message) => handle(home, message).await,
        Err(e) => Err(Failure::Refused(e.to_string())),
    };
    Reply::new(Some(envelope.id), outcome)
}

#[derive(Debug)]
enum Failure {
    /// The request is wrong: do not send it again.
    Refused(String),
    /// Nothing is wrong with it, but it cannot be done now.
    Retry(String),
}

/// An answer of the wrong kind: the agent is another version of optin, not the request at
/// fault, so the extension keeps what it sent and tries again.
fn unexpected() -> Failure {
    Failure::Retry("unexpected answer from the agent (is it another version of optin?)".into())
}

async fn handle(home: &Home, message: Message) -> Result<Answer, Failure> {
    match message {
        Message::Hello => {
            let running = matches!(crate::session::call(&home.admin_socket(), &Request::Status).await, Ok(Some(_)));
            Ok(Answer::Hello { agent: if running { AgentState::Running } else { AgentState::Stopped }, version: env!("CARGO_PKG_VERSION") })
        }
        Message::Signals { signals } => {
            if signals.is_empty() || signals.len() > MAX_SIGNALS {
                return Err(Failure::Refused(format!("send 1 to {MAX_SIGNALS} signals at a time")));
            }
            // Validate here too, so a bad batch is refused (not retried) even with no agent.
            let mut ndjson = String::new();
            for (i, s) in signals.iter().enumerate() {
                optin_protocol::signal::parse_value(s, &crate::merchant::registrable).map_err(|e| Failure::Refused(format!("signal {}: {e}", i + 1)))?;
                ndjson.push_str(&s.to_string());
                ndjson.push('\n');
            }
            match forward(home, Request::Ingest { ndjson, dry_run: false }).await? {
                Response::Ingested { stored, duplicates } => Ok(Answer::Stored { stored, duplicates }),
                _ => Err(unexpected()),
            }
        }
        Message::Grants => match forward(home, Request::Grants).await? {
            Response::Grants { grants } => Ok(Answer::Grants { grants: grants.into_iter().map(GrantTerms::from).collect() }),
            _ => Err(unexpected()),
        },
        Message::Revoke { grant_id } => match forward(home, Request::Revoke { grant_id }).await? {
            Response::Revoked { .. } => Ok(Answer::Revoked {}),
            _ => Err(unexpected()),
        },
        Message::Unknown => Err(Failure::Refused("unknown message type: this host knows hello, signals, grants and revoke".into())),
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::answer;
    use crate::core::command::{Request, Response};
    use crate::home::Home;

    /// The reply to `message`, as the extension reads it.
    async fn reply(home: &Home, message: &str) -> Value {
        serde_json::to_value(answer(home, message.as_bytes()).await).expect("a reply serializes")
    }

    fn refused(id: u64, error: &str) -> Value {
        json!({"id": id, "ok": false, "error": error})
    }

    #[tokio::test]
    async fn replies_keep_the_shape_the_extension_reads() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = Home::open_or_create(&dir.path().join("home")).expect("a home");
        let search = json!({"id": "s-1", "kind": "search", "at": optin_protocol::timestamp::format(crate::core::now()),
                            "query": "tent", "engine": "duckduckgo.com", "source": "extension"});
        let no_id = json!({"ok": false, "error": "message has no numeric id"});
        let cases = [
            (
                json!({"type": "hello", "id": 1, "version": "0.1.0"}).to_string(),
                json!({"id": 1, "ok": true, "agent": "stopped", "version": env!("CARGO_PKG_VERSION")}),
            ),
            (json!({"type": "signals", "id": 2, "signals": [search]}).to_string(), json!({"id": 2, "ok": true, "stored": 1, "duplicates": 0})),
            (
                json!({"type": "signals", "id": 3, "signals": [search], "sent_at": "now"}).to_string(),
                json!({"id": 3, "ok": true, "stored": 0, "duplicates": 1}),
            ),
            ("{not json".to_owned(), json!({"ok": false, "error": "message is not JSON"})),
            (r#"{"type":"hello","id":1} trailing"#.to_owned(), json!({"ok": false, "error": "message is not JSON"})),
            (r#"{"type":"hello"}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":-1}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":1.5}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":"4"}"#.to_owned(), no_id.clone()),
            (r#"[4,"hello"]"#.to_owned(), no_id),
            (json!({"type": "signals", "id": 5, "signals": "all of them"}).to_string(), refused(5, "`signals` must be a list")),
            (json!({"type": "signals", "id": 6}).to_string(), refused(6, "missing field `signals`")),
            (json!({"type": "signals", "id": 7, "signals": []}).to_string(), refused(7, "send 1 to 100 signals at a time")),
            (json!({"type": "revoke", "id": 8, "grant_id": "g_nope"}).to_string(), refused(8, "`grant_id` must be a grant id (g_…)")),
            (json!({"type": "revoke", "id": 9, "grant_id": "g_000000000000000000000000"}).to_string(), refused(9, "no grant g_000000000000000000000000")),
            (json!({"type": "launch-missiles", "id": 10}).to_string(), refused(10, "unknown message type: this host knows hello, signals, grants and revoke")),
            (json!({"id": 11}).to_string(), refused(11, "missing field `type`")),
        ];
        for (message, expected) in cases {
            assert_eq!(reply(&home, &message).await, expected, "{message}");
        }
    }

    #[tokio::test]
    async fn grants_are_listed_by_their_terms_and_revoked() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = Home::open_or_create(&dir.path().join("home")).expect("a home");
        let grant = Request::Grant {
            marketer: "acme.example".into(),
            kinds: "search,cart".parse().expect("kinds"),
            granularity: "raw".parse().expect("a granularity"),
            window: "30d".parse().expect("a span"),
            expires: "90d".parse().expect("a span"),
            purpose: "shoe ads".into(),
        };
        let Ok(Response::Granted { bundle }) = crate::session::execute(&home, grant).await else { panic!("no grant made") };
        let listed = json!({"id": 1, "ok": true, "grants": [{
            "grant_id": bundle.grant_id.as_str(),
            "marketer": "acme.example",
            "purpose": "shoe ads",
            "kinds": ["search", "cart"],
            "granularity": "raw",
            "expires_at": optin_protocol::timestamp::format(bundle.terms.expires_at),
            "state": "active",
        }]});
        assert_eq!(reply(&home, r#"{"type":"grants","id":1}"#).await, listed);
        let revoke = json!({"type": "revoke", "id": 2, "grant_id": bundle.grant_id.as_str()}).to_string();
        assert_eq!(reply(&home, &revoke).await, json!({"id": 2, "ok": true}));
        let mut revoked = listed;
        revoked["id"] = json!(3);
        revoked["grants"][0]["state"] = json!("revoked");
        assert_eq!(reply(&home, r#"{"type":"grants","id":3}"#).await, revoked);
    }
}
