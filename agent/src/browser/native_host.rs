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
//!
//! What the extension sends comes from pages, which anyone can write. So every frame gets a
//! reply, under its id whenever the id can be read, and none ends the session: a frame that
//! is not a message, or is too long, is refused (the extension drops it) and the next one is
//! served. Each signal is read on its own, so a bad one costs only itself. A refusal means
//! the message is wrong; `retry` means optin cannot take it now. The two never mix, since a
//! feeder that retried a wrong message would send it forever, and one that dropped a message
//! optin could not take would lose it.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use optin_protocol::scope::{GrantId, Granularity};
use optin_protocol::signal::Kinds;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::{Browser, LastConnection};
use crate::core::command::{ErrorKind, GrantState, GrantView, Rejection, RejectionReason, Request, Response};
use crate::home::Home;
use crate::session::Failed;

/// The Chromium extension id (from the manifest's fixed key).
pub const CHROMIUM_EXTENSION_ID: &str = include_str!("../../../extension/EXTENSION_ID");
/// The Firefox add-on id.
pub const FIREFOX_EXTENSION_ID: &str = "optin@optin.dev";
/// Largest message accepted from the extension: `native_messaging.message_bytes` in
/// `extension/limits.json`, which the extension reads too (a test holds them equal).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Most signals in one message: `native_messaging.signals_per_message` in the same file.
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
    while let Some(incoming) = blocking(|| read_incoming(&mut std::io::stdin().lock())).await? {
        let reply = match incoming {
            Incoming::Message(message) => answer(&home, &message).await,
            Incoming::Oversized { bytes, id } => refuse_unread(id, bytes, format!("message of {bytes} bytes exceeds {MAX_MESSAGE}")),
        };
        blocking(move || write_frame(&mut std::io::stdout().lock(), &reply)).await?;
    }
    Ok(())
}

/// Runs blocking I/O off the async workers and waits for it.
async fn blocking<T: Send + 'static>(io: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(io).await.context("the native host's I/O failed")?
}

/// Reads a frame's length; `None` at a clean end of input.
fn read_length(input: &mut impl Read) -> Result<Option<usize>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => Ok(Some(u32::from_ne_bytes(len) as usize)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e).context("cannot read from the browser"),
    }
}

/// Reads one frame; `None` at a clean end of input. A frame longer than [`MAX_MESSAGE`] is an
/// error, after which the input is out of step: the host itself reads with [`read_incoming`].
pub fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let Some(len) = read_length(input)? else { return Ok(None) };
    if len > MAX_MESSAGE {
        bail!("message of {len} bytes exceeds {MAX_MESSAGE}");
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).context("truncated message from the browser")?;
    Ok(Some(body))
}

/// A frame as the host reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A message of at most [`MAX_MESSAGE`] bytes.
    Message(Vec<u8>),
    /// A longer one, read through and dropped: its length, and its id when one was found in
    /// its first [`MAX_MESSAGE`] bytes.
    Oversized {
        /// Its length.
        bytes: usize,
        /// Its id, if it could be read.
        id: Option<u64>,
    },
}

/// Reads one frame; `None` at a clean end of input. A frame longer than [`MAX_MESSAGE`] is
/// read through, not kept: its first [`MAX_MESSAGE`] bytes are searched for its id so that its
/// refusal can carry it, and the rest is discarded as it arrives. Memory stays bounded, and
/// the next frame is read from its first byte, so one oversized message is refused alone
/// instead of ending the session.
pub fn read_incoming(input: &mut impl Read) -> Result<Option<Incoming>> {
    let Some(len) = read_length(input)? else { return Ok(None) };
    if len <= MAX_MESSAGE {
        let mut body = vec![0u8; len];
        input.read_exact(&mut body).context("truncated message from the browser")?;
        return Ok(Some(Incoming::Message(body)));
    }
    let mut head = Vec::new();
    input.take(MAX_MESSAGE as u64).read_to_end(&mut head).context("cannot read from the browser")?;
    let rest = (len - head.len()) as u64;
    let drained = std::io::copy(&mut input.take(rest), &mut std::io::sink()).context("cannot read from the browser")?;
    if head.len() < MAX_MESSAGE || drained < rest {
        bail!("truncated message from the browser");
    }
    Ok(Some(Incoming::Oversized { bytes: len, id: Envelope::read(&head).0.id() }))
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

/// What the host reads of a frame first: its id, and each top-level field it knows as raw
/// JSON, read on its own afterwards. One pass over the frame, which keeps the id as soon as
/// it is met: a frame whose later part cannot be read (a lone surrogate escape in a string,
/// which no Rust string can hold; a truncated end) is still refused under its id, so the
/// extension can tell which message failed and drop it instead of sending it again. Fields
/// the host does not read are skipped unread, so a newer extension may send more.
#[derive(Debug, Default)]
struct Envelope {
    /// The `id`, when it is a whole number from 0 to 2^64-1.
    id: Option<u64>,
    /// How many `id` keys the frame had: with two, which one a reply should carry is
    /// unknowable, so it carries none.
    ids: usize,
    kind: Option<Box<RawValue>>,
    signals: Option<Box<RawValue>>,
    grant_id: Option<Box<RawValue>>,
    /// A known field given twice.
    repeated: Option<&'static str>,
}

/// Why a frame could not be read as an [`Envelope`].
#[derive(Debug)]
enum Unreadable {
    /// It is not JSON: serde_json's syntax error, which names a position, never the text.
    NotJson(serde_json::Error),
    /// It is JSON, but not an object.
    NotObject,
}

impl Envelope {
    /// Reads `bytes`, as far as they can be read: the envelope holds what was read before a
    /// failure, the id among it.
    fn read(bytes: &[u8]) -> (Envelope, Result<(), Unreadable>) {
        let mut envelope = Envelope::default();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let read = de.deserialize_map(Fields(&mut envelope)).and_then(|()| de.end());
        let read = read.map_err(|e| match e.classify() {
            serde_json::error::Category::Data => Unreadable::NotObject,
            _ => Unreadable::NotJson(e),
        });
        (envelope, read)
    }

    /// The id a reply carries.
    fn id(&self) -> Option<u64> {
        self.id.filter(|_| self.ids == 1)
    }

    /// The message, from the fields read.
    fn message(self) -> Result<Message, String> {
        if let Some(name) = self.repeated {
            return Err(format!("`{name}` is given more than once"));
        }
        let kind = self.kind.ok_or("missing field `type`")?;
        let Ok(kind) = serde_json::from_str::<String>(kind.get()) else { return Err("`type` must be a string".into()) };
        match kind.as_str() {
            "hello" => Ok(Message::Hello),
            "signals" => {
                let signals = self.signals.ok_or("missing field `signals`")?;
                let signals = serde_json::from_str(signals.get()).map_err(|_| "`signals` must be a list")?;
                Ok(Message::Signals { signals })
            }
            "grants" => Ok(Message::Grants),
            "revoke" => {
                let grant_id = self.grant_id.ok_or("missing field `grant_id`")?;
                let grant_id = serde_json::from_str(grant_id.get()).map_err(|_| "`grant_id` must be a grant id (g_…)")?;
                Ok(Message::Revoke { grant_id })
            }
            // Named in general terms, so the refusal never echoes what the extension sent.
            _ => Err("unknown message type: this host knows hello, signals, grants and revoke".into()),
        }
    }
}

/// Reads a frame's top-level object into an [`Envelope`].
struct Fields<'a>(&'a mut Envelope);

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let envelope = self.0;
        while let Some(key) = map.next_key::<String>()? {
            let (name, slot) = match key.as_str() {
                "id" => {
                    let id = map.next_value::<Box<RawValue>>()?;
                    envelope.ids += 1;
                    envelope.id = envelope.id.or_else(|| serde_json::from_str::<u64>(id.get()).ok());
                    continue;
                }
                "type" => ("type", &mut envelope.kind),
                "signals" => ("signals", &mut envelope.signals),
                "grant_id" => ("grant_id", &mut envelope.grant_id),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value::<Box<RawValue>>()?).is_some() {
                envelope.repeated.get_or_insert(name);
            }
        }
        Ok(())
    }
}

/// What the extension asks, by its `type`.
#[derive(Debug)]
enum Message {
    /// Whether the agent runs, and the host's version.
    Hello,
    /// Store these signals: each valid one, whatever the others are.
    Signals {
        /// The signals as the extension wrote them, each read on its own by the agent.
        signals: Vec<Box<RawValue>>,
    },
    /// The grants, by their terms.
    Grants,
    /// Revoke a grant.
    Revoke {
        /// Which.
        grant_id: GrantId,
    },
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
    /// To `signals`: how many are stored now or were already, and which were not stored.
    Stored { stored: usize, duplicates: usize, rejected: Vec<RejectedSignal> },
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

/// A signal of a `signals` message that was not stored: where it was, its id if it had a
/// valid one, and why, beginning with `quota:` when only the day's quota kept it out.
#[derive(Debug, Serialize)]
struct RejectedSignal {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    error: String,
}

impl From<Rejection> for RejectedSignal {
    fn from(r: Rejection) -> RejectedSignal {
        let at = format!("signals[{}]", r.index);
        let error = match r.reason {
            RejectionReason::Invalid { field: Some(field), error } => format!("{at}.{field}: {error}"),
            RejectionReason::Invalid { field: None, error } => format!("{at}: {error}"),
            RejectionReason::Quota { per_day } => format!("quota: {at} is not stored: the agent takes {per_day} new signals a day (UTC) from the extension"),
        };
        RejectedSignal { index: r.index, id: r.id, error }
    }
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

/// The reply to one frame. Every frame gets one, under its id whenever the id could be read.
async fn answer(home: &Home, bytes: &[u8]) -> Reply {
    let (envelope, read) = Envelope::read(bytes);
    let id = envelope.id();
    let message = match read {
        Err(Unreadable::NotJson(e)) => Err(format!("message is not JSON: {e}")),
        Err(Unreadable::NotObject) => Err("message is not a JSON object".to_owned()),
        Ok(()) if id.is_none() => Err("message has no numeric id".to_owned()),
        Ok(()) => envelope.message(),
    };
    match message {
        Ok(message) => Reply::new(id, handle(home, message).await),
        Err(error) => refuse_unread(id, bytes.len(), error),
    }
}

/// Refuses a frame that is not a message this host reads, and says so on standard error (the
/// browser's log): what was wrong and how long the frame was, never what it held, which is
/// page data. The reply is a refusal, so the extension drops the frame rather than send it
/// again.
fn refuse_unread(id: Option<u64>, bytes: usize, error: String) -> Reply {
    tracing::warn!(bytes, id, problem = %error, "refused a frame from the extension");
    Reply::new(id, Err(Failure::Refused(error)))
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
            // Each signal goes on as the extension wrote it and is read on its own, so one
            // that cannot be read (not even as JSON) is rejected alone.
            let signals: Vec<String> = signals.iter().map(|s| s.get().to_owned()).collect();
            // A message with no valid signal is answered here: that needs no store, so bad
            // input is never told to come back later because the store is busy.
            let (valid, rejected) = crate::core::blocking(|| crate::core::ingest::read_each(&signals));
            let (stored, duplicates, rejected) = if valid.is_empty() {
                (0, 0, rejected)
            } else {
                match forward(home, Request::ExtensionSignals { signals }).await? {
                    Response::Accepted { stored, duplicates, rejected } => (stored, duplicates, rejected),
                    _ => return Err(unexpected()),
                }
            };
            Ok(Answer::Stored { stored, duplicates, rejected: rejected.into_iter().map(RejectedSignal::from).collect() })
        }
        Message::Grants => match forward(home, Request::Grants).await? {
            Response::Grants { grants } => Ok(Answer::Grants { grants: grants.into_iter().map(GrantTerms::from).collect() }),
            _ => Err(unexpected()),
        },
        Message::Revoke { grant_id } => match forward(home, Request::Revoke { grant_id }).await? {
            Response::Revoked { .. } => Ok(Answer::Revoked {}),
            _ => Err(unexpected()),
        },
    }
}

/// How an agent answers a request line it cannot read (`serve/admin.rs`): from an agent of
/// this version that never happens, since the host writes the same types, so it means an
/// older agent that does not know the request.
const UNREADABLE_REQUEST: &str = "not an admin request: ";

/// Runs a request through the session: refused when the request is wrong, retried when
/// optin cannot take it now (see `ErrorKind`), or when the agent is of another version.
async fn forward(home: &Home, request: Request) -> Result<Response, Failure> {
    crate::session::execute(home, request).await.map_err(failure)
}

fn failure(failed: Failed) -> Failure {
    if failed.kind.retryable() {
        Failure::Retry(failed.message)
    } else if failed.kind == ErrorKind::Invalid && failed.message.starts_with(UNREADABLE_REQUEST) {
        unexpected()
    } else {
        Failure::Refused(failed.message)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{answer, failure, read_incoming, Failure, Incoming, MAX_MESSAGE, MAX_SIGNALS};
    use crate::core::command::{ErrorKind, Request, Response};
    use crate::home::Home;
    use crate::session::Failed;

    /// The reply to `message`, as the extension reads it.
    async fn reply(home: &Home, message: &str) -> Value {
        serde_json::to_value(answer(home, message.as_bytes()).await).expect("a reply serializes")
    }

    fn refused(id: u64, error: &str) -> Value {
        json!({"id": id, "ok": false, "error": error})
    }

    fn stored(id: u64, stored: usize, duplicates: usize, rejected: Value) -> Value {
        json!({"id": id, "ok": true, "stored": stored, "duplicates": duplicates, "rejected": rejected})
    }

    fn search(id: &str) -> Value {
        json!({"id": id, "kind": "search", "at": optin_protocol::timestamp::format(crate::core::now()),
               "query": "tent", "engine": "duckduckgo.com", "source": "extension"})
    }

    fn cart(id: &str, name: &str) -> Value {
        json!({"id": id, "kind": "cart", "at": optin_protocol::timestamp::format(crate::core::now()), "merchant": "shop.example",
               "currency": "EUR", "items": [{"name": name, "price": "1.00"}]})
    }

    fn home(dir: &tempfile::TempDir) -> Home {
        Home::open_or_create(&dir.path().join("home")).expect("a home")
    }

    #[test]
    fn the_limits_are_the_ones_in_the_shared_limits_file() {
        let limits: Value = serde_json::from_str(include_str!("../../../extension/limits.json")).expect("limits.json is JSON");
        assert_eq!(limits["native_messaging"], json!({"message_bytes": MAX_MESSAGE, "signals_per_message": MAX_SIGNALS}));
    }

    #[tokio::test]
    async fn replies_keep_the_shape_the_extension_reads() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = home(&dir);
        let search = search("s-1");
        let no_id = json!({"ok": false, "error": "message has no numeric id"});
        // A string no Rust string can hold: serde_json refuses it where it is read, and skips
        // it unread elsewhere, so the id and the other signals still are read.
        let lone = cart("bad-1", "x").to_string().replace(r#""name":"x""#, r#""name":"\udc00""#);
        let lone_at = lone.find(r"\udc00").expect("the escape") + r"\udc00".len();
        let controlled = cart("bad-2", "Trail\u{7}X");
        let many: Vec<Value> = (0..=MAX_SIGNALS).map(|i| self::search(&format!("m-{i}"))).collect();
        let cases = [
            (
                json!({"type": "hello", "id": 1, "version": "0.1.0"}).to_string(),
                json!({"id": 1, "ok": true, "agent": "stopped", "version": env!("CARGO_PKG_VERSION")}),
            ),
            (json!({"type": "signals", "id": 2, "signals": [search]}).to_string(), stored(2, 1, 0, json!([]))),
            (json!({"type": "signals", "id": 3, "signals": [search], "sent_at": "now"}).to_string(), stored(3, 0, 1, json!([]))),
            // The good signals of a batch are stored; the bad ones are named, by place and id.
            (
                format!(r#"{{"type":"signals","id":4,"signals":[{},{lone},{},{controlled}]}}"#, self::search("s-2"), self::search("s-3")),
                stored(
                    4,
                    2,
                    0,
                    json!([
                        {"index": 1, "id": "bad-1", "error": format!("signals[1]: not JSON: lone leading surrogate in hex escape at line 1 column {lone_at}")},
                        {"index": 3, "id": "bad-2", "error": "signals[3].items[0].name: contains control or bidirectional formatting characters"},
                    ]),
                ),
            ),
            // With no valid signal the answer needs no store.
            (
                json!({"type": "signals", "id": 5, "signals": [{"kind": "search", "at": "then"}, [1], {"id": "x y", "kind": "walk"}]}).to_string(),
                stored(
                    5,
                    0,
                    0,
                    json!([
                        {"index": 0, "error": "signals[0].at: `then` is not an RFC 3339 timestamp"},
                        {"index": 1, "error": "signals[1]: a signal must be a JSON object"},
                        {"index": 2, "error": "signals[2].kind: unknown kind `walk`: expected search, cart or purchase"},
                    ]),
                ),
            ),
            // The id is read first, so a frame that cannot be read past it is refused under it.
            (r#"{"id":6,"type":"\udc00"}"#.to_owned(), refused(6, "`type` must be a string")),
            (r#"{"type":"hello","id":7,"note":"\udc00"}"#.to_owned(), json!({"id": 7, "ok": true, "agent": "stopped", "version": env!("CARGO_PKG_VERSION")})),
            (r#"{"id":8,"type":"signals","signals":["#.to_owned(), refused(8, "message is not JSON: EOF while parsing a list at line 1 column 36")),
            (r#"{"type":"hello","id":9} trailing"#.to_owned(), refused(9, "message is not JSON: trailing characters at line 1 column 25")),
            (r#"{"id":10,"type":"hello","x":"a"b"}"#.to_owned(), refused(10, "message is not JSON: expected `,` or `}` at line 1 column 32")),
            ("{not json".to_owned(), json!({"ok": false, "error": "message is not JSON: key must be a string at line 1 column 2"})),
            ("\u{feff}{}".to_owned(), json!({"ok": false, "error": "message is not JSON: expected value at line 1 column 1"})),
            (r#"{"type":"hello"}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":-1}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":1.5}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":"4"}"#.to_owned(), no_id.clone()),
            (r#"{"type":"hello","id":11,"id":11}"#.to_owned(), no_id),
            (r#"[4,"hello"]"#.to_owned(), json!({"ok": false, "error": "message is not a JSON object"})),
            (r#""hello""#.to_owned(), json!({"ok": false, "error": "message is not a JSON object"})),
            (json!({"type": "signals", "id": 12, "signals": "all of them"}).to_string(), refused(12, "`signals` must be a list")),
            (json!({"type": "signals", "id": 13}).to_string(), refused(13, "missing field `signals`")),
            (json!({"type": "signals", "id": 14, "signals": []}).to_string(), refused(14, "send 1 to 100 signals at a time")),
            (json!({"type": "signals", "id": 15, "signals": many}).to_string(), refused(15, "send 1 to 100 signals at a time")),
            (r#"{"type":"signals","id":16,"signals":[],"signals":[]}"#.to_owned(), refused(16, "`signals` is given more than once")),
            (json!({"type": "revoke", "id": 17, "grant_id": "g_nope"}).to_string(), refused(17, "`grant_id` must be a grant id (g_…)")),
            (json!({"type": "revoke", "id": 18}).to_string(), refused(18, "missing field `grant_id`")),
            (json!({"type": "revoke", "id": 19, "grant_id": "g_000000000000000000000000"}).to_string(), refused(19, "no grant g_000000000000000000000000")),
            (json!({"type": "launch-missiles", "id": 20}).to_string(), refused(20, "unknown message type: this host knows hello, signals, grants and revoke")),
            (json!({"type": 5, "id": 21}).to_string(), refused(21, "`type` must be a string")),
            (json!({"id": 22}).to_string(), refused(22, "missing field `type`")),
        ];
        for (message, expected) in cases {
            assert_eq!(reply(&home, &message).await, expected, "{message}");
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_opened_is_retried_and_bad_input_is_not() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = home(&dir);
        // A file where the store's directory belongs: every open fails with an I/O error.
        std::fs::write(home.store(), "not a store").expect("write");
        let good = json!({"type": "signals", "id": 1, "signals": [search("s-1")]}).to_string();
        let answer = reply(&home, &good).await;
        assert_eq!((answer["id"].clone(), answer["ok"].clone(), answer["retry"].clone()), (json!(1), json!(false), json!(true)), "{answer}");
        let error = answer["error"].as_str().expect("an error");
        assert!(error.starts_with("the agent is not running and the store cannot be opened: "), "{error}");
        // Signals that are all wrong are rejected at once, store or no store: sending them
        // again could not help.
        let bad = json!({"type": "signals", "id": 2, "signals": [{"id": "b-1", "kind": "search", "at": "then"}]}).to_string();
        let rejected = json!([{"index": 0, "id": "b-1", "error": "signals[0].at: `then` is not an RFC 3339 timestamp"}]);
        assert_eq!(reply(&home, &bad).await, stored(2, 0, 0, rejected));
    }

    #[test]
    fn only_failures_of_optin_are_retried() {
        let failed = |kind, message: &str| Failed { kind, message: message.to_owned() };
        let cases = [
            (failed(ErrorKind::Invalid, "limit: too big"), false),
            (failed(ErrorKind::NotFound, "no grant g_x"), false),
            (failed(ErrorKind::Unavailable, "store error: disk full"), true),
            (failed(ErrorKind::Internal, "damaged store record"), true),
            // An older agent that cannot read the request: version skew, not bad input.
            (failed(ErrorKind::Invalid, "not an admin request: unknown variant `extension-signals`"), true),
        ];
        for (failed, retried) in cases {
            let what = format!("{failed:?}");
            assert_eq!(matches!(failure(failed), Failure::Retry(_)), retried, "{what}");
        }
    }

    #[test]
    fn oversized_frames_are_read_through_and_the_next_one_is_read() {
        fn frame(body: &[u8]) -> Vec<u8> {
            let mut out = u32::try_from(body.len()).expect("small").to_ne_bytes().to_vec();
            out.extend_from_slice(body);
            out
        }
        let padding = "a".repeat(MAX_MESSAGE);
        let with_id = format!(r#"{{"id":7,"type":"signals","signals":["{padding}"]}}"#);
        let id_late = format!(r#"{{"type":"signals","signals":["{padding}"],"id":8}}"#);
        let hello = br#"{"type":"hello","id":9}"#;
        let exact = vec![b' '; MAX_MESSAGE];
        let mut input = [frame(with_id.as_bytes()), frame(hello), frame(id_late.as_bytes()), frame(&exact), frame(b"")].concat();
        let mut reader = input.as_slice();
        let expected = [
            Incoming::Oversized { bytes: with_id.len(), id: Some(7) },
            Incoming::Message(hello.to_vec()),
            Incoming::Oversized { bytes: id_late.len(), id: None },
            Incoming::Message(exact),
            Incoming::Message(Vec::new()),
        ];
        for (i, want) in expected.into_iter().enumerate() {
            assert_eq!(read_incoming(&mut reader).expect("a frame"), Some(want), "frame {i}");
        }
        assert_eq!(read_incoming(&mut reader).expect("the end"), None);
        // An oversized frame cut short is the end of the input, not a message.
        input.truncate(frame(with_id.as_bytes()).len() - 1);
        assert!(read_incoming(&mut input.as_slice()).is_err());
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
