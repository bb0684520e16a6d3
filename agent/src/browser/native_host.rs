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
//!
//! "Does this site ask?" (`site-requests`) is the one message that makes the host connect
//! out: it fetches the consent requests the site publishes, through [`crate::site`] as
//! `optin requests fetch` does, so they are verified against the domain by the same code.
//! The domain comes from the extension's worker, which takes it from the active tab, never
//! from a page. How to connect (trusted authorities, name overrides, a proxy) comes from the
//! `OPTIN_*` variables, since the browser starts the host with no flags. Approving and
//! denying go through the session like `optin approve` and `optin deny`; the host answers
//! a grant's terms, never its bundle, which holds the marketer's token.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use optin_protocol::scope::{GrantId, Granularity, Terms};
use optin_protocol::signal::Kinds;
use optin_protocol::span::Span;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::{Browser, LastConnection};
use crate::core::command::{
    ApprovalChoices, ErrorKind, GrantState, GrantView, Rejection, RejectionReason, Request, RequestName, RequestView, Response, WouldShare,
};
use crate::home::Home;
use crate::outbound::{Client, OutboundConfig, Timeouts};
use crate::session::Failed;
use crate::site::{self, Site};

/// The Chromium extension id (from the manifest's fixed key).
pub const CHROMIUM_EXTENSION_ID: &str = include_str!("../../../extension/EXTENSION_ID");
/// The Firefox add-on id.
pub const FIREFOX_EXTENSION_ID: &str = "optin@optin.dev";
/// Largest message accepted from the extension: `native_messaging.message_bytes` in
/// `extension/limits.json`, which the extension reads too (a test holds them equal).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Most signals in one message: `native_messaging.signals_per_message` in the same file.
pub const MAX_SIGNALS: usize = 100;
/// How long a `site-requests` fetch may take in all. Shorter than a CLI fetch's minute:
/// the host answers one message at a time, so the extension's other messages wait behind
/// the fetch, and the person waits in the popup.
pub const SITE_FETCH: std::time::Duration = std::time::Duration::from_secs(30);

/// What the host works with: the person's home, and how it connects out for
/// `site-requests`, read from the environment once (a bad variable refuses each fetch,
/// naming the variable, and nothing else).
#[derive(Debug)]
pub struct Host {
    home: Home,
    outbound: Result<OutboundConfig, String>,
}

impl Host {
    /// A host for `home` connecting out with `outbound`, bounded by [`SITE_FETCH`].
    pub fn new(home: Home, outbound: Result<OutboundConfig, String>) -> Host {
        let bounded = |c: OutboundConfig| {
            let limit = |d: std::time::Duration| d.min(SITE_FETCH);
            let Timeouts { connect, handshake, request } = c.timeouts;
            OutboundConfig { timeouts: Timeouts { connect: limit(connect), handshake: limit(handshake), request: limit(request) }, ..c }
        };
        Host { home, outbound: outbound.map(bounded) }
    }
}

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
    let host = Host::new(home, site::config_from(|name| std::env::var(name).ok()));
    // Standard input and output are blocking files: each frame is read and written on a
    // blocking thread, one at a time, so no async worker ever waits on the browser.
    while let Some(incoming) = blocking(|| read_incoming(&mut std::io::stdin().lock())).await? {
        let reply = match incoming {
            Incoming::Message(message) => answer(&host, &message).await,
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
    domain: Option<Box<RawValue>>,
    name: Option<Box<RawValue>>,
    choices: Option<Box<RawValue>>,
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
            "site-requests" => {
                let domain = self.domain.ok_or("missing field `domain`")?;
                let site = serde_json::from_str::<String>(domain.get()).ok().and_then(|d| d.parse::<Site>().ok());
                let site = site.ok_or("`domain` must be a lowercase domain name, with its port when not 443 (shop.example:8443)")?;
                Ok(Message::SiteRequests { site })
            }
            "approve" => {
                let name = request_name(self.name)?;
                let choices = match self.choices {
                    None => ApprovalChoices::default(),
                    Some(raw) => choices(&raw)?,
                };
                Ok(Message::Approve { name, choices })
            }
            "deny" => Ok(Message::Deny { name: request_name(self.name)? }),
            // Named in general terms, so the refusal never echoes what the extension sent.
            _ => Err("unknown message type: this host knows hello, signals, grants, revoke, site-requests, approve and deny".into()),
        }
    }
}

/// The `name` of an `approve` or `deny` message: a request's `DOMAIN/ID` or id.
fn request_name(raw: Option<Box<RawValue>>) -> Result<RequestName, String> {
    let raw = raw.ok_or("missing field `name`")?;
    serde_json::from_str::<String>(raw.get())
        .ok()
        .and_then(|n| RequestName::parse(&n).ok())
        .ok_or_else(|| "`name` must be a request's DOMAIN/ID (or its id)".to_owned())
}

/// The narrowing choices of an `approve` message, as they come: only known members, each
/// once. An unknown or repeated member is refused rather than skipped, since a choice the
/// host skipped would approve the request's wider term without the person knowing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChoices {
    kinds: Option<Box<RawValue>>,
    granularity: Option<Box<RawValue>>,
    window: Option<Box<RawValue>>,
    expires: Option<Box<RawValue>>,
    categories: Option<Box<RawValue>>,
    merchants: Option<Box<RawValue>>,
    fields: Option<Box<RawValue>>,
    rate: Option<Box<RawValue>>,
}

/// Reads `choices`, naming the member at fault. Whether each choice narrows the request is
/// the agent's decision (`optin approve` runs the same); this only reads their types.
fn choices(raw: &RawValue) -> Result<ApprovalChoices, String> {
    const MEMBERS: &str = "kinds, granularity, window, expires, categories, merchants, fields and rate";
    let raw_text = raw.get();
    let raw: RawChoices = serde_json::from_str(raw_text).map_err(|e| {
        let e = e.to_string();
        // An unknown member is not named back: it is whatever the extension sent. A repeated
        // one is one of ours, so it is.
        if e.starts_with("unknown field") {
            format!("`choices` may hold only {MEMBERS}")
        } else if let Some(name) = ["kinds", "granularity", "window", "expires", "categories", "merchants", "fields", "rate"]
            .iter()
            .find(|n| e.starts_with(&format!("duplicate field `{n}`")))
        {
            format!("`choices.{name}` is given more than once")
        } else {
            format!("`choices` must be an object of any of {MEMBERS}")
        }
    })?;
    // A member given as null would read as absent, which keeps the request's term: a wider
    // one than a choice sent on purpose. Only a member left out keeps it.
    let members: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw_text).map_err(|_| format!("`choices` must be an object of any of {MEMBERS}"))?;
    if let Some((name, _)) = members.iter().find(|(_, v)| v.is_null()) {
        return Err(format!("`choices.{name}` must not be null: leave it out to keep the request's term"));
    }
    fn read<T: DeserializeOwned>(raw: Option<Box<RawValue>>, name: &str, what: &str) -> Result<Option<T>, String> {
        raw.map(|r| serde_json::from_str(r.get()).map_err(|_| format!("`choices.{name}` must be {what}"))).transpose()
    }
    fn list(raw: Option<Box<RawValue>>, name: &str, most: usize, what: &str) -> Result<Option<Vec<String>>, String> {
        let refused = || format!("`choices.{name}` must be a list of 1 to {most} {what}");
        match read::<Vec<String>>(raw, name, &format!("a list of 1 to {most} {what}"))? {
            Some(l) if l.is_empty() || l.len() > most => Err(refused()),
            other => Ok(other),
        }
    }
    Ok(ApprovalChoices {
        kinds: read::<Kinds>(raw.kinds, "kinds", "a list of 1 to 3 kinds: search, cart, purchase")?,
        granularity: read::<Granularity>(raw.granularity, "granularity", "raw or category")?,
        window: read::<Span>(raw.window, "window", "a span like 7d")?,
        expires: read::<Span>(raw.expires, "expires", "a span like 30d")?,
        categories: list(raw.categories, "categories", 32, "category paths")?,
        merchants: list(raw.merchants, "merchants", 64, "merchant domains")?,
        fields: list(raw.fields, "fields", optin_protocol::fields::NAMES.len(), "field names")?,
        rate: read::<optin_protocol::rate::Rate>(raw.rate, "rate", "a rate like 4/day or 1/hour")?,
        // The popup offers no noise choice: an aggregate request approved there gets the
        // default noise and budget.
        noise: Default::default(),
    })
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
                "domain" => ("domain", &mut envelope.domain),
                "name" => ("name", &mut envelope.name),
                "choices" => ("choices", &mut envelope.choices),
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
    /// Fetch the consent requests the site publishes, add them, and show them.
    SiteRequests {
        /// The site of the active tab.
        site: Site,
    },
    /// Approve a request, narrowed.
    Approve {
        /// Which.
        name: RequestName,
        /// The person's narrowing.
        choices: ApprovalChoices,
    },
    /// Deny a request.
    Deny {
        /// Which.
        name: RequestName,
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
    /// To `site-requests`: what the site asks, each request with what it would share now,
    /// and the requests of its document that were refused.
    SiteRequests { site: String, url: String, requests: Vec<SiteRequest>, refused: Vec<RefusedRequest> },
    /// To `approve`: the grant made, by its terms, and the request, approved.
    Approved { grant: ApprovedGrant, request: Box<RequestView> },
    /// To `deny`: the request, denied.
    Denied { request: Box<RequestView> },
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

/// A request the site publishes, as kept, and what its terms would share now.
#[derive(Debug, Serialize)]
struct SiteRequest {
    /// Its `DOMAIN/ID`, for `approve` and `deny`.
    name: String,
    /// It, as the agent keeps it: its document, state and where it was fetched from.
    view: Box<RequestView>,
    /// Whether it was kept before this fetch.
    already: bool,
    /// Whether the domain signed earlier requests with another key.
    key_changed: bool,
    /// What its terms would share now, while it can be approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_share: Option<WouldShare>,
}

/// A request of the site's document that the agent refused: its place, and why.
#[derive(Debug, Serialize)]
struct RefusedRequest {
    index: usize,
    error: String,
}

/// A grant made by approving: its terms, never its token or key.
#[derive(Debug, Serialize)]
struct ApprovedGrant {
    grant_id: GrantId,
    marketer: String,
    purpose: String,
    terms: Terms,
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
async fn answer(host: &Host, bytes: &[u8]) -> Reply {
    let (envelope, read) = Envelope::read(bytes);
    let id = envelope.id();
    let message = match read {
        Err(Unreadable::NotJson(e)) => Err(format!("message is not JSON: {e}")),
        Err(Unreadable::NotObject) => Err("message is not a JSON object".to_owned()),
        Ok(()) if id.is_none() => Err("message has no numeric id".to_owned()),
        Ok(()) => envelope.message(),
    };
    match message {
        Ok(message) => Reply::new(id, handle(host, message).await),
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

async fn handle(host: &Host, message: Message) -> Result<Answer, Failure> {
    let home = &host.home;
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
        Message::SiteRequests { site } => site_requests(host, &site).await,
        Message::Approve { name, choices } => match forward(home, Request::Approve { name, choices }).await? {
            Response::Approved { bundle, request, .. } => {
                let grant = ApprovedGrant { grant_id: bundle.grant_id, marketer: bundle.marketer, purpose: bundle.purpose, terms: bundle.terms };
                Ok(Answer::Approved { grant, request })
            }
            _ => Err(unexpected()),
        },
        Message::Deny { name } => match forward(home, Request::Deny { name }).await? {
            Response::Denied { request } => Ok(Answer::Denied { request }),
            _ => Err(unexpected()),
        },
    }
}

/// "Does this site ask?": fetches the site's document, has the agent verify and keep each
/// request against the domain (`crate::site`, as `optin requests fetch`), and answers each
/// kept one with what it would share now. A site that cannot be read, or is not trusted, is
/// a refusal: asking again at once would not help, and nothing was stored.
async fn site_requests(host: &Host, site: &Site) -> Result<Answer, Failure> {
    let config = host.outbound.clone().map_err(|e| Failure::Refused(format!("cannot set up HTTPS: {e}")))?;
    let client = Client::new(config).map_err(|e| Failure::Refused(format!("cannot set up HTTPS: {e}")))?;
    let published = site::fetch(&client, site).await.map_err(|e| Failure::Refused(e.to_string()))?;
    let url = published.url().to_owned();
    let outcomes =
        published.add(&host.home).await.map_err(|stopped| failure(Failed { kind: stopped.failed.kind, message: format!("{stopped}: {}", stopped.failed) }))?;
    let mut requests = Vec::new();
    for added in outcomes.added {
        let r = &added.request.request;
        let name = format!("{}/{}", r.marketer.domain, r.id);
        // The name was made from a request the agent just verified, so it parses; were it
        // not to, the request is shown without its preview rather than not at all.
        let would_share = match RequestName::parse(&name) {
            Ok(parsed) => match forward(&host.home, Request::ConsentRequest { name: parsed }).await? {
                Response::ConsentRequest { would_share, .. } => would_share,
                _ => return Err(unexpected()),
            },
            Err(_) => None,
        };
        requests.push(SiteRequest { name, view: added.request, already: added.already, key_changed: added.key_changed, would_share });
    }
    let refused = outcomes.refused.into_iter().map(|r| RefusedRequest { index: r.index, error: r.to_string() }).collect();
    Ok(Answer::SiteRequests { site: site.to_string(), url, requests, refused })
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

    use super::{answer, failure, read_incoming, Failure, Host, Incoming, MAX_MESSAGE, MAX_SIGNALS};
    use crate::core::command::{ErrorKind, Request, Response};
    use crate::home::Home;
    use crate::session::Failed;

    /// The reply to `message`, as the extension reads it, from a host that connects out
    /// with the given variables.
    async fn reply_with(home: &Home, vars: &[(&str, &str)], message: &str) -> Value {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let outbound = crate::site::config_from(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        let host = Host::new(home.clone(), outbound);
        serde_json::to_value(answer(&host, message.as_bytes()).await).expect("a reply serializes")
    }

    /// The reply to `message`, as the extension reads it.
    async fn reply(home: &Home, message: &str) -> Value {
        reply_with(home, &[], message).await
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

    /// The refusal of a `domain` that is not a site.
    const SITE: &str = "`domain` must be a lowercase domain name, with its port when not 443 (shop.example:8443)";
    /// The refusal of a `name` that is not a request's.
    const NAME: &str = "`name` must be a request's DOMAIN/ID (or its id)";
    /// The agent's answer for a request it does not hold.
    const NO_REQUEST: &str = "no request shop.example/offers-1 (`optin requests` lists them)";

    /// The refusal of a `choices` member the host does not know, which it does not name back.
    const UNKNOWN: &str = "`choices` may hold only kinds, granularity, window, expires, categories, merchants, fields and rate";

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
            (
                json!({"type": "launch-missiles", "id": 20}).to_string(),
                refused(20, "unknown message type: this host knows hello, signals, grants, revoke, site-requests, approve and deny"),
            ),
            (json!({"type": 5, "id": 21}).to_string(), refused(21, "`type` must be a string")),
            (json!({"id": 22}).to_string(), refused(22, "missing field `type`")),
            // "Does this site ask?": the domain is a name (and a port), never an address or a URL.
            (json!({"type": "site-requests", "id": 23}).to_string(), refused(23, "missing field `domain`")),
            (json!({"type": "site-requests", "id": 24, "domain": "127.0.0.1"}).to_string(), refused(24, SITE)),
            (json!({"type": "site-requests", "id": 25, "domain": "https://shop.example/"}).to_string(), refused(25, SITE)),
            (json!({"type": "site-requests", "id": 26, "domain": "Shop.example"}).to_string(), refused(26, SITE)),
            (json!({"type": "site-requests", "id": 27, "domain": ["shop.example"]}).to_string(), refused(27, SITE)),
            (json!({"type": "site-requests", "id": 28, "domain": "sh\u{1b}op.example"}).to_string(), refused(28, SITE)),
            (r#"{"type":"site-requests","id":29,"domain":"a.example","domain":"b.example"}"#.to_owned(), refused(29, "`domain` is given more than once")),
            // Approve and deny: the name and every choice are read before anything is asked.
            (json!({"type": "approve", "id": 30}).to_string(), refused(30, "missing field `name`")),
            (json!({"type": "approve", "id": 31, "name": "shop.example/../x"}).to_string(), refused(31, NAME)),
            (json!({"type": "deny", "id": 32, "name": 7}).to_string(), refused(32, NAME)),
            (json!({"type": "approve", "id": 33, "name": "shop.example/offers-1", "choices": {"kind": ["search"]}}).to_string(), refused(33, UNKNOWN)),
            (
                r#"{"type":"approve","id":34,"name":"shop.example/offers-1","choices":{"window":"7d","window":"400d"}}"#.to_owned(),
                refused(34, "`choices.window` is given more than once"),
            ),
            (
                json!({"type": "approve", "id": 35, "name": "shop.example/offers-1", "choices": "narrow"}).to_string(),
                refused(35, "`choices` must be an object of any of kinds, granularity, window, expires, categories, merchants, fields and rate"),
            ),
            (
                json!({"type": "approve", "id": 36, "name": "shop.example/offers-1", "choices": {"kinds": ["walk"]}}).to_string(),
                refused(36, "`choices.kinds` must be a list of 1 to 3 kinds: search, cart, purchase"),
            ),
            (
                json!({"type": "approve", "id": 37, "name": "shop.example/offers-1", "choices": {"kinds": []}}).to_string(),
                refused(37, "`choices.kinds` must be a list of 1 to 3 kinds: search, cart, purchase"),
            ),
            (
                json!({"type": "approve", "id": 38, "name": "shop.example/offers-1", "choices": {"window": "a week"}}).to_string(),
                refused(38, "`choices.window` must be a span like 7d"),
            ),
            (
                json!({"type": "approve", "id": 39, "name": "shop.example/offers-1", "choices": {"expires": 30}}).to_string(),
                refused(39, "`choices.expires` must be a span like 30d"),
            ),
            (
                json!({"type": "approve", "id": 40, "name": "shop.example/offers-1", "choices": {"granularity": "fine"}}).to_string(),
                refused(40, "`choices.granularity` must be raw or category"),
            ),
            (
                json!({"type": "approve", "id": 41, "name": "shop.example/offers-1", "choices": {"categories": []}}).to_string(),
                refused(41, "`choices.categories` must be a list of 1 to 32 category paths"),
            ),
            (
                json!({"type": "approve", "id": 42, "name": "shop.example/offers-1", "choices": {"merchants": "shop.example"}}).to_string(),
                refused(42, "`choices.merchants` must be a list of 1 to 64 merchant domains"),
            ),
            // Well-formed, but there is no such request: the agent says so, and nothing changed.
            (json!({"type": "approve", "id": 43, "name": "shop.example/offers-1", "choices": {"window": "7d"}}).to_string(), refused(43, NO_REQUEST)),
            (json!({"type": "deny", "id": 44, "name": "shop.example/offers-1"}).to_string(), refused(44, NO_REQUEST)),
            // A null choice would keep the request's wider term: refused, not read as absent.
            (
                json!({"type": "approve", "id": 45, "name": "shop.example/offers-1", "choices": {"kinds": ["cart"], "window": null}}).to_string(),
                refused(45, "`choices.window` must not be null: leave it out to keep the request's term"),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(reply(&home, &message).await, expected, "{message}");
        }
    }

    #[tokio::test]
    async fn a_site_that_cannot_be_fetched_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = home(&dir);
        // Nothing listens on port 1 of the loopback: the connection is refused at once.
        let message = json!({"type": "site-requests", "id": 1, "domain": "shop.test:1"}).to_string();
        let answer = reply_with(&home, &[("OPTIN_RESOLVE", "shop.test:1:127.0.0.1")], &message).await;
        assert_eq!((answer["id"].clone(), answer["ok"].clone(), answer.get("retry")), (json!(1), json!(false), None), "{answer}");
        let error = answer["error"].as_str().expect("an error");
        assert!(error.starts_with("cannot fetch the consent requests of shop.test: ") && error.ends_with("; nothing was stored"), "{error}");
        // A variable the host cannot read refuses the fetch, naming the variable.
        let bad = reply_with(&home, &[("OPTIN_PUSH_PROXY", "socks5://127.0.0.1:9050")], &message).await;
        let error = bad["error"].as_str().expect("an error");
        assert!(error.starts_with("cannot set up HTTPS: OPTIN_PUSH_PROXY: "), "{error}");
        let Ok(Response::ConsentRequests { requests }) = crate::session::execute(&home, Request::ConsentRequests).await else { panic!("no list") };
        assert!(requests.is_empty(), "nothing was stored: {requests:?}");
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
        // Read as the admin socket reads it, so members added to the command later take
        // their defaults here too.
        let grant: Request = serde_json::from_value(json!({
            "op": "grant", "marketer": "acme.example", "kinds": ["search", "cart"], "granularity": "raw",
            "window": "30d", "expires": "90d", "purpose": "shoe ads",
        }))
        .expect("a grant command");
        let Ok(Response::Granted { bundle, .. }) = crate::session::execute(&home, grant).await else { panic!("no grant made") };
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
