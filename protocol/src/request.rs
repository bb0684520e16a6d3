//! Consent requests: what a marketer asks of a person, signed by the marketer, and what the
//! person approves of it (SPEC.md, "Consent requests").
//!
//! A request is hostile input until proven otherwise: it comes from a web server or a file a
//! stranger handed over, and its text ends up on the person's screen. So it is read all or
//! nothing, every field bounded, with the JSON path of the first thing wrong; a key given
//! twice, a field this version does not know, a control, bidirectional or invisible
//! character anywhere are refused rather than cleaned. A [`Request`] that exists is one whose
//! every string is safe to print as it is.
//!
//! The signature binds the document to a key; the key is bound to the marketer's domain by
//! the Web PKI of the URL it was fetched from, so [`verify`] checks that the request names
//! that domain. A request handed over as a file is bound to nothing but its key, which is why
//! the domain check is the caller's to ask for.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::jws::Jwk;
// Receipts sign and open their JWS through this path too.
use crate::jws::compact;
use crate::rate::Rate;
use crate::scope::{self, Granularity, Terms};
use crate::signal::{Kind, Kinds};
use crate::span::Span;
use crate::timestamp;

/// The `typ` header of a signed request (explicit typing, RFC 8725 section 3.11), so that
/// nothing else a marketer's key signs can pass for a request.
pub const TYP: &str = "optin-request+jwt";
/// Version of the request document.
pub const VERSION: u64 = 1;
/// Where a marketer publishes its requests, under `https://DOMAIN`.
pub const WELL_KNOWN_PATH: &str = "/.well-known/optin-request.json";

/// Limits on a request. Explicit so that marketers know them (SPEC.md).
pub mod limits {
    use time::Duration;

    /// Largest request document (the JWS payload), in bytes.
    pub const DOCUMENT_BYTES: usize = 64 * 1024;
    /// Largest signed request (the compact JWS), in bytes: the document in base64url and a
    /// header.
    pub const JWS_BYTES: usize = 96 * 1024;
    /// Largest well-known document, in bytes.
    pub const PUBLISHED_BYTES: usize = 1024 * 1024;
    /// Most requests in a well-known document.
    pub const PUBLISHED_REQUESTS: usize = 8;
    /// Longest request id.
    pub const ID_CHARS: usize = 64;
    /// Longest marketer name.
    pub const NAME_CHARS: usize = 128;
    /// Longest contact (an e-mail address or an https URL).
    pub const CONTACT_CHARS: usize = 254;
    /// Longest URL.
    pub const URL_CHARS: usize = 512;
    /// Longest purpose text.
    pub const PURPOSE_CHARS: usize = 500;
    /// Longest offer text.
    pub const OFFER_CHARS: usize = 500;
    /// Most category prefixes.
    pub const CATEGORIES: usize = 32;
    /// Most merchants.
    pub const MERCHANTS: usize = 64;
    /// Longest time from `issued_at` to `expires_at`.
    pub const LIFETIME: Duration = Duration::days(400);
    /// How far `issued_at` may lie ahead of the verifier's clock.
    pub const CLOCK_SKEW: Duration = Duration::minutes(5);
    /// Shortest push schedule: a push a second would be a flood, not a schedule.
    pub const MIN_EVERY_SECONDS: u64 = 3_600;
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Larger than the limit.
    #[error("the request is larger than {max} bytes")]
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// Not a compact JWS, or its header is not the one of a request.
    #[error("not a signed request: {0}")]
    Malformed(String),
    /// The signature does not verify with the key the header names.
    #[error("the request's signature does not verify")]
    Signature,
    /// The document is wrong at `field`.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The JSON path at fault (`terms.kinds[1]`), or `.` for the whole document.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// The request names another domain than the one it was fetched from.
    #[error("the request names marketer `{found}` but was fetched from `{expected}`")]
    Domain {
        /// The domain it was fetched from.
        expected: String,
        /// The domain it names.
        found: String,
    },
    /// The request has expired.
    #[error("the request expired at {}", timestamp::format(*.0))]
    Expired(OffsetDateTime),
    /// The request was issued in the future.
    #[error("the request is issued at {}, later than now", timestamp::format(*.0))]
    NotYetValid(OffsetDateTime),
}

impl RequestError {
    /// The JSON path at fault, if a field is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            RequestError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn at(field: impl Into<String>, reason: impl Into<String>) -> RequestError {
    RequestError::Field { field: field.into(), reason: reason.into() }
}

/// `text` as it may appear in a message: at most 64 characters, with every control,
/// bidirectional or invisible character written as an escape, so that an error about hostile
/// input cannot itself steer the terminal that shows it.
pub fn shown(text: &str) -> String {
    text.chars().take(64).map(|c| if crate::is_hidden_or_control(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// A request's id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, chosen by the marketer. The
/// person types it (`optin approve ID`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl TryFrom<String> for RequestId {
    type Error = String;
    fn try_from(text: String) -> Result<RequestId, String> {
        RequestId::parse(&text).ok_or_else(|| format!("`{}` is not a request id", shown(&text)))
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        id.0
    }
}

impl RequestId {
    /// Parses an id.
    pub fn parse(text: &str) -> Option<RequestId> {
        let ok = (1..=limits::ID_CHARS).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| RequestId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One accepted purpose: a DPV concept and the label a person reads.
#[derive(Clone, Debug, Deserialize)]
struct PurposeEntry {
    code: String,
    label: String,
}

#[derive(Deserialize)]
struct PurposeTable {
    purposes: Vec<PurposeEntry>,
}

/// The accepted purposes, read once from the list that ships with the crate.
fn purposes() -> &'static [PurposeEntry] {
    static TABLE: OnceLock<Vec<PurposeEntry>> = OnceLock::new();
    // The file is part of the crate and a test reads it whole; were it ever broken, no
    // purpose would be accepted, which refuses every request rather than any wrongly.
    TABLE.get_or_init(|| serde_json::from_str::<PurposeTable>(include_str!("../data/dpv-purposes.json")).map(|t| t.purposes).unwrap_or_default())
}

/// A purpose code of the W3C Data Privacy Vocabulary that this crate accepts
/// (`protocol/data/dpv-purposes.json`), such as `dpv:PersonalisedAdvertising`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PurposeCode(String);

impl TryFrom<String> for PurposeCode {
    type Error = String;
    fn try_from(text: String) -> Result<PurposeCode, String> {
        PurposeCode::parse(&text).ok_or_else(|| format!("`{}` is not an accepted DPV purpose code", shown(&text)))
    }
}

impl From<PurposeCode> for String {
    fn from(code: PurposeCode) -> String {
        code.0
    }
}

impl PurposeCode {
    /// The code, if it is one of the accepted ones.
    pub fn parse(text: &str) -> Option<PurposeCode> {
        purposes().iter().find(|p| p.code == text).map(|p| PurposeCode(p.code.clone()))
    }

    /// Every accepted code, in the order of the list.
    pub fn all() -> impl Iterator<Item = PurposeCode> {
        purposes().iter().map(|p| PurposeCode(p.code.clone()))
    }

    /// The code, `dpv:` and the concept's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the code means, in a few plain words.
    pub fn label(&self) -> &'static str {
        purposes().iter().find(|p| p.code == self.0).map_or("", |p| p.label.as_str())
    }
}

impl fmt::Display for PurposeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `https` URL with a host name: no user info, no fragment, no IP literal, printable ASCII
/// only, at most [`limits::URL_CHARS`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpsUrl {
    text: String,
    host: String,
}

impl HttpsUrl {
    /// Parses a URL, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<HttpsUrl, String> {
        if text.len() > limits::URL_CHARS {
            return Err(format!("longer than {} characters", limits::URL_CHARS));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
            return Err("must be printable ASCII without spaces or backslashes (percent-encode the rest)".into());
        }
        let rest = text.strip_prefix("https://").ok_or("must be an https:// URL")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err("must not hold a user name or password".into());
        }
        if tail.contains('#') {
            return Err("must not hold a fragment".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if let Some(port) = port {
            let ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
            if !ok {
                return Err("has a malformed port".into());
            }
        }
        match crate::signal::plain_domain(host) {
            Ok(canonical) if canonical == host && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                Ok(HttpsUrl { text: text.to_owned(), host: canonical })
            }
            _ => Err("must name a host by a lowercase domain name, like inbox.acme.example".into()),
        }
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its host name.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for HttpsUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Who asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Marketer {
    /// The name a person knows it by.
    pub name: String,
    /// Its domain, lowercase: the audience of the grant, and the host a published request is
    /// fetched from.
    pub domain: String,
    /// How to reach it about the person's data: an e-mail address or an https URL.
    pub contact: String,
    /// Its privacy policy.
    pub privacy_policy: HttpsUrl,
}

/// What the data is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Purpose {
    /// The DPV purpose code.
    pub code: PurposeCode,
    /// The purpose in the marketer's words, one paragraph.
    pub text: String,
}

/// The terms a request asks for. Approval may narrow any of them ([`RequestedTerms::narrow`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestedTerms {
    /// The kinds of signal.
    pub kinds: Kinds,
    /// How much of each signal.
    pub granularity: Granularity,
    /// How far back a slice may reach.
    pub window: Span,
    /// How long the grant lasts once approved.
    pub duration: Span,
    /// Only signals whose category starts with one of these taxonomy paths; none: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Only signals at these merchants (registrable domains); none: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// At `raw`, only these fields of each signal ([`crate::fields`]); none: every field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// At most this many slices per hour or day; none: no limit of the grant's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// How slices reach the marketer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Delivery {
    /// The marketer fetches slices from the agent with the bundle's token.
    Pull,
    /// The agent posts slices to the marketer's inbox, signed per Standard Webhooks.
    Push {
        /// Where events are posted: the marketer's domain or a host under it.
        inbox: HttpsUrl,
        /// How often a slice is pushed, at least an hour.
        every: Span,
    },
}

/// A validated consent request (SPEC.md, "Consent requests"). Serializes to the document it
/// was read from, member for member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    /// Always [`VERSION`].
    pub version: u64,
    /// The marketer's id for this request.
    pub id: RequestId,
    /// When the marketer issued it.
    #[serde(with = "crate::timestamp::serde")]
    pub issued_at: OffsetDateTime,
    /// After this instant it cannot be approved.
    #[serde(with = "crate::timestamp::serde")]
    pub expires_at: OffsetDateTime,
    /// Who asks.
    pub marketer: Marketer,
    /// What for.
    pub purpose: Purpose,
    /// What is asked.
    pub terms: RequestedTerms,
    /// What the person gets in return, in the marketer's words.
    pub offer: String,
    /// How slices travel.
    pub delivery: Delivery,
}

impl Request {
    /// Reads a request document (the payload of the JWS), all or nothing. It does not check
    /// the signature or the time: [`verify`] does.
    pub fn parse(json: &str) -> Result<Request, RequestError> {
        if json.len() > limits::DOCUMENT_BYTES {
            return Err(RequestError::TooLarge { max: limits::DOCUMENT_BYTES });
        }
        // serde_json keeps the last of two equal keys, and another parser may keep the first:
        // a marketer's tooling and the person's agent would read two different requests.
        let (value, duplicate) = crate::signal::read_json_once(json).map_err(|e| at(".", format!("not JSON: {e}")))?;
        if let Some(path) = duplicate {
            return Err(at(shown(&path), "given more than once"));
        }
        let top = Object::root(&value)?;
        top.only(&["version", "id", "issued_at", "expires_at", "marketer", "purpose", "terms", "offer", "delivery"])?;
        match top.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
            Some(_) => return Err(at("version", format!("unsupported version: this agent reads version {VERSION}"))),
            None => return Err(at("version", "is required")),
        }
        let id = {
            let text = top.text("id", limits::ID_CHARS)?;
            RequestId::parse(&text).ok_or_else(|| at("id", "use 1 to 64 characters of A-Z a-z 0-9 . _ -"))?
        };
        let issued_at = top.time("issued_at")?;
        let expires_at = top.time("expires_at")?;
        if expires_at <= issued_at {
            return Err(at("expires_at", "must be later than issued_at"));
        }
        if expires_at - issued_at > limits::LIFETIME {
            return Err(at("expires_at", format!("must be at most {} days after issued_at", limits::LIFETIME.whole_days())));
        }
        let marketer = parse_marketer(&top.object("marketer")?)?;
        let purpose = {
            let p = top.object("purpose")?;
            p.only(&["code", "text"])?;
            let code = p.text("code", 64)?;
            let code = PurposeCode::parse(&code).ok_or_else(|| at(p.path("code"), format!("`{}` is not an accepted DPV purpose code", shown(&code))))?;
            Purpose { code, text: p.text("text", limits::PURPOSE_CHARS)? }
        };
        let terms = parse_terms(&top.object("terms")?)?;
        let offer = top.text("offer", limits::OFFER_CHARS)?;
        let delivery = parse_delivery(&top.object("delivery")?, &marketer.domain)?;
        Ok(Request { version: VERSION, id, issued_at, expires_at, marketer, purpose, terms, offer, delivery })
    }

    /// The document as compact JSON, the bytes a marketer signs.
    pub fn to_json(&self) -> String {
        // Every member is a string, a number or a list of them: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn parse_marketer(m: &Object<'_>) -> Result<Marketer, RequestError> {
    m.only(&["name", "domain", "contact", "privacy_policy"])?;
    let name = m.text("name", limits::NAME_CHARS)?;
    let domain = {
        let text = m.text("domain", 253)?;
        canonical_domain(&text).ok_or_else(|| at(m.path("domain"), format!("`{}` is not a lowercase domain name", shown(&text))))?
    };
    let contact = {
        let text = m.text("contact", limits::CONTACT_CHARS)?;
        if text.starts_with("https://") {
            HttpsUrl::parse(&text).map_err(|r| at(m.path("contact"), r))?;
        } else {
            let ok = text.split_once('@').is_some_and(|(local, host)| {
                !local.is_empty()
                    && local.len() <= 64
                    && local.bytes().all(|b| b.is_ascii_graphic() && !b"@\"\\<>()[],;:".contains(&b))
                    && canonical_domain(host).is_some()
            });
            if !ok {
                return Err(at(m.path("contact"), "must be an e-mail address like privacy@acme.example or an https:// URL"));
            }
        }
        text
    };
    let privacy_policy = HttpsUrl::parse(&m.text("privacy_policy", limits::URL_CHARS)?).map_err(|r| at(m.path("privacy_policy"), r))?;
    Ok(Marketer { name, domain, contact, privacy_policy })
}

fn parse_terms(t: &Object<'_>) -> Result<RequestedTerms, RequestError> {
    t.only(&["kinds", "granularity", "window", "duration", "categories", "merchants", "fields", "rate"])?;
    let kinds = {
        let list = t.list("kinds", Kind::ALL.len(), false)?.unwrap_or_default();
        let mut kinds = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let kind: Kind = text.parse().map_err(|e: crate::signal::KindError| at(format!("{}[{i}]", t.path("kinds")), e.to_string()))?;
            kinds.push(kind);
        }
        Kinds::new(kinds).ok_or_else(|| at(t.path("kinds"), "must not be empty"))?
    };
    let granularity = t.text("granularity", 16)?.parse().map_err(|e: String| at(t.path("granularity"), e))?;
    let window = t.span("window")?;
    let duration = t.span("duration")?;
    let categories = t.list("categories", limits::CATEGORIES, true)?;
    if let Some(list) = &categories {
        for (i, c) in list.iter().enumerate() {
            scope::taxonomy_path(c).map_err(|reason| at(format!("{}[{i}]", t.path("categories")), reason))?;
        }
    }
    let merchants = t.list("merchants", limits::MERCHANTS, true)?;
    if let Some(list) = &merchants {
        for (i, m) in list.iter().enumerate() {
            if canonical_domain(m).is_none() {
                return Err(at(format!("{}[{i}]", t.path("merchants")), format!("`{}` is not a lowercase domain name", shown(m))));
            }
        }
    }
    let fields = t.list("fields", crate::fields::NAMES.len(), true)?;
    if let Some(list) = &fields {
        crate::fields::Fields::from_list(list).map_err(|e| at(t.path("fields"), e.to_string()))?;
        if granularity != Granularity::Raw {
            return Err(at(t.path("fields"), "fields are chosen only at raw granularity"));
        }
    }
    let rate = match t.get("rate") {
        None => None,
        Some(_) => Some(t.text("rate", 16)?.parse().map_err(|e: crate::rate::RateError| at(t.path("rate"), e.to_string()))?),
    };
    Ok(RequestedTerms { kinds, granularity, window, duration, categories, merchants, fields, rate })
}

fn parse_delivery(d: &Object<'_>, marketer: &str) -> Result<Delivery, RequestError> {
    match d.text("method", 8)?.as_str() {
        "pull" => {
            d.only(&["method"])?;
            Ok(Delivery::Pull)
        }
        "push" => {
            d.only(&["method", "inbox", "every"])?;
            let inbox = HttpsUrl::parse(&d.text("inbox", limits::URL_CHARS)?).map_err(|r| at(d.path("inbox"), r))?;
            // The person consents to one marketer: the data goes to a host that marketer's
            // domain names, never to another organisation's.
            let host = inbox.host();
            if host != marketer && !host.ends_with(&format!(".{marketer}")) {
                return Err(at(d.path("inbox"), format!("must be on the marketer's domain `{marketer}` or a host under it")));
            }
            let every = d.span("every")?;
            if every.seconds() < limits::MIN_EVERY_SECONDS {
                return Err(at(d.path("every"), "must be at least 1h"));
            }
            Ok(Delivery::Push { inbox, every })
        }
        other => Err(at(d.path("method"), format!("`{}` is not a delivery method: expected pull or push", shown(other)))),
    }
}

/// `text` if it is a domain name written as [`crate::signal::plain_domain`] would write it.
fn canonical_domain(text: &str) -> Option<String> {
    crate::signal::plain_domain(text).ok().filter(|d| d == text)
}

/// One JSON object of a request, naming its fields by their full path in errors.
struct Object<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Object<'a> {
    fn root(value: &'a Value) -> Result<Object<'a>, RequestError> {
        let map = value.as_object().ok_or_else(|| at(".", "a request must be a JSON object"))?;
        Ok(Object { map, prefix: String::new() })
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    fn only(&self, known: &[&str]) -> Result<(), RequestError> {
        // The least unknown key, not the first met: the same error whichever order the map
        // keeps (serde_json's `preserve_order` feature may be on in some build).
        match self.map.keys().filter(|k| !known.contains(&k.as_str())).min() {
            Some(k) => Err(at(self.path(&shown(k)), "unknown field")),
            None => Ok(()),
        }
    }

    fn object(&self, name: &str) -> Result<Object<'a>, RequestError> {
        match self.map.get(name) {
            Some(Value::Object(map)) => Ok(Object { map, prefix: format!("{}.", self.path(name)) }),
            Some(_) => Err(at(self.path(name), "must be an object")),
            None => Err(at(self.path(name), "is required")),
        }
    }

    /// A required string: not empty, no longer than `max` characters, no leading or trailing
    /// space, nothing that hides or steers text.
    fn text(&self, name: &str, max: usize) -> Result<String, RequestError> {
        match self.map.get(name) {
            Some(Value::String(s)) => checked_text(s, max).map_err(|r| at(self.path(name), r)),
            Some(_) => Err(at(self.path(name), "must be a string")),
            None => Err(at(self.path(name), "is required")),
        }
    }

    fn time(&self, name: &str) -> Result<OffsetDateTime, RequestError> {
        let text = self.text(name, 64)?;
        timestamp::parse(&text).ok_or_else(|| at(self.path(name), format!("`{}` is not an RFC 3339 timestamp", shown(&text))))
    }

    fn span(&self, name: &str) -> Result<Span, RequestError> {
        self.text(name, 16)?.parse().map_err(|e: crate::span::SpanError| at(self.path(name), e.to_string()))
    }

    /// A list of distinct strings, at most `max` of them; absent is `None` when `optional`.
    fn list(&self, name: &str, max: usize, optional: bool) -> Result<Option<Vec<String>>, RequestError> {
        let items = match self.map.get(name) {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(at(self.path(name), "must be a list")),
            None if optional => return Ok(None),
            None => return Err(at(self.path(name), "is required")),
        };
        if items.is_empty() {
            return Err(at(self.path(name), "must not be empty (leave it out to mean any)"));
        }
        if items.len() > max {
            return Err(at(self.path(name), format!("more than {max} entries")));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.path(name));
            let text = match item {
                Value::String(s) => checked_text(s, 256).map_err(|r| at(&path, r))?,
                _ => return Err(at(path, "must be a string")),
            };
            if !seen.insert(text.clone()) {
                return Err(at(path, "given more than once"));
            }
            out.push(text);
        }
        Ok(Some(out))
    }
}

fn checked_text(s: &str, max: usize) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else if s.chars().count() > max {
        Err(format!("longer than {max} characters"))
    } else if s.chars().any(crate::is_hidden_or_control) {
        Err("contains control, bidirectional or invisible characters".into())
    } else if s.trim() != s {
        Err("must not begin or end with a space".into())
    } else {
        Ok(s.to_owned())
    }
}

/// A request whose signature verified, with the key that signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The request.
    pub request: Request,
    /// The marketer's key, from the JWS header. Its thumbprint identifies the marketer's
    /// key across fetches: a request for the same domain signed by another key is news.
    pub key: Jwk,
}

/// The protected header of a signed request: the key travels in it (RFC 7515 `jwk`), and
/// `kid` is that key's RFC 7638 thumbprint.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
    jwk: HeaderJwk,
}

/// A public key in a header: only the members an Ed25519 public key has. A header carrying a
/// private member (`d`) or anything else is refused, not skipped.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJwk {
    kty: String,
    crv: String,
    x: String,
}

/// Signs a request document with the marketer's key: a compact JWS whose header holds the
/// public key. `document` is the exact bytes signed, as [`Request::to_json`] writes them or
/// as the marketer wrote them.
pub fn sign(key: &Ed25519KeyPair, document: &[u8]) -> String {
    let jwk = Jwk::ed25519(key.public_key().as_ref());
    let header =
        Header { alg: "EdDSA".into(), kid: jwk.thumbprint(), typ: TYP.into(), jwk: HeaderJwk { kty: jwk.kty.clone(), crv: jwk.crv.clone(), x: jwk.x.clone() } };
    // A struct of strings always serializes.
    compact::sign(key, &serde_json::to_vec(&header).unwrap_or_default(), document)
}

/// Verifies a signed request and reads it: the signature with the key in its header, the
/// document all or nothing, that it is valid at `now`, and, when `fetched_from` is given (the
/// host of the well-known URL it came from), that the request names that domain as the
/// marketer's.
pub fn verify(jws: &str, fetched_from: Option<&str>, now: OffsetDateTime) -> Result<Signed, RequestError> {
    if jws.len() > limits::JWS_BYTES {
        return Err(RequestError::TooLarge { max: limits::JWS_BYTES });
    }
    let opened = compact::open(jws).map_err(|r| RequestError::Malformed(r.into()))?;
    let header: Header =
        serde_json::from_slice(&opened.header).map_err(|_| RequestError::Malformed("the header is not JSON with exactly alg, kid, typ and jwk".into()))?;
    if header.alg != "EdDSA" {
        return Err(RequestError::Malformed(format!("algorithm `{}`: only EdDSA is accepted", shown(&header.alg))));
    }
    if header.typ != TYP {
        return Err(RequestError::Malformed(format!("typ `{}`: expected {TYP}", shown(&header.typ))));
    }
    let key = Jwk { kty: header.jwk.kty, crv: header.jwk.crv, x: header.jwk.x, kid: None, alg: None, use_: None };
    let public = key.public_key().map_err(|e| RequestError::Malformed(e.to_string()))?;
    let thumbprint = key.thumbprint();
    if header.kid != thumbprint {
        return Err(RequestError::Malformed("kid is not the RFC 7638 thumbprint of the header's jwk".into()));
    }
    if !compact::verifies(&public, &opened) {
        return Err(RequestError::Signature);
    }
    let document = std::str::from_utf8(&opened.payload).map_err(|_| at(".", "not UTF-8"))?;
    let request = Request::parse(document)?;
    if let Some(expected) = fetched_from {
        let expected = expected.trim_end_matches('.').to_ascii_lowercase();
        if request.marketer.domain != expected {
            return Err(RequestError::Domain { expected: shown(&expected), found: request.marketer.domain });
        }
    }
    if now >= request.expires_at {
        return Err(RequestError::Expired(request.expires_at));
    }
    if request.issued_at > now + limits::CLOCK_SKEW {
        return Err(RequestError::NotYetValid(request.issued_at));
    }
    Ok(Signed { request, key: Jwk { kid: Some(thumbprint), alg: Some("EdDSA".into()), use_: Some("sig".into()), ..key } })
}

/// The signed requests of a well-known document `{"requests":["<JWS>",…]}`, each still to be
/// verified on its own: one bad request does not hide the others.
pub fn published(json: &str) -> Result<Vec<String>, RequestError> {
    if json.len() > limits::PUBLISHED_BYTES {
        return Err(RequestError::TooLarge { max: limits::PUBLISHED_BYTES });
    }
    let (value, duplicate) = crate::signal::read_json_once(json).map_err(|e| at(".", format!("not JSON: {e}")))?;
    if let Some(path) = duplicate {
        return Err(at(shown(&path), "given more than once"));
    }
    let top = Object::root(&value)?;
    top.only(&["requests"])?;
    let list = match top.get("requests") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(at("requests", "must be a list")),
        None => return Err(at("requests", "is required")),
    };
    if list.is_empty() || list.len() > limits::PUBLISHED_REQUESTS {
        return Err(at("requests", format!("must hold 1 to {} signed requests", limits::PUBLISHED_REQUESTS)));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.len() <= limits::JWS_BYTES => Ok(s.clone()),
            _ => Err(at(format!("requests[{i}]"), "must be a signed request (a compact JWS string)")),
        })
        .collect()
}

/// What the person chose when approving: each `None` keeps what the request asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Choices {
    /// Fewer kinds.
    pub kinds: Option<Kinds>,
    /// A coarser granularity.
    pub granularity: Option<Granularity>,
    /// A shorter window.
    pub window: Option<Span>,
    /// A shorter grant (`--expires`).
    pub expires: Option<Span>,
    /// Fewer or narrower category prefixes.
    pub categories: Option<Vec<String>>,
    /// Fewer merchants.
    pub merchants: Option<Vec<String>>,
    /// Fewer fields (at `raw`).
    pub fields: Option<Vec<String>>,
    /// A lower rate.
    pub rate: Option<Rate>,
}

/// Why an approval was refused: a choice asks for more than the request did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NarrowError {
    /// A term would be wider than the request's.
    #[error("`{term}` would widen the request: {reason}")]
    Widened {
        /// The term (`kinds`, `granularity`, `window`, `expires`, `categories`, `merchants`,
        /// `fields`, `rate`).
        term: &'static str,
        /// What the request asked instead.
        reason: String,
    },
    /// A choice is malformed.
    #[error("`{term}`: {reason}")]
    Invalid {
        /// The term.
        term: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// The terms the person approved: the request's, narrowed by [`Choices`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approved {
    /// The kinds shared.
    pub kinds: Kinds,
    /// How much of each signal.
    pub granularity: Granularity,
    /// How far back.
    pub window: Span,
    /// How long the grant lasts.
    pub duration: Span,
    /// Category prefixes, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Merchants, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// Fields shared at `raw`, if fewer than all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// The rate, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// Whether category path `inner` lies within `outer`: the same path, or one below it. The
/// same rule decides what a grant's category filter admits, so it lives with scope.
pub use crate::scope::category_within;

impl RequestedTerms {
    /// The terms after the person's choices. Any term may be narrowed, none widened: a
    /// choice wider than the request is refused naming the term, never clamped, so the
    /// person learns the request did not ask for it.
    pub fn narrow(&self, choices: &Choices) -> Result<Approved, NarrowError> {
        let widened = |term, reason: String| NarrowError::Widened { term, reason };
        let kinds = match &choices.kinds {
            None => self.kinds.clone(),
            Some(k) if k.is_subset(&self.kinds) => k.clone(),
            Some(k) => {
                let extra: Vec<&str> = k.iter().filter(|x| !self.kinds.contains(*x)).map(Kind::as_str).collect();
                return Err(widened("kinds", format!("the request asks only for {}, not {}", self.kinds, extra.join(","))));
            }
        };
        let granularity = match choices.granularity {
            None => self.granularity,
            Some(g) if g.is_finer_than(self.granularity) => {
                return Err(widened("granularity", format!("`{g}` is finer than the requested `{}`", self.granularity)))
            }
            Some(g) => g,
        };
        let window = match choices.window {
            None => self.window,
            Some(w) if w > self.window => return Err(widened("window", format!("{w} is longer than the requested {}", self.window))),
            Some(w) => w,
        };
        let duration = match choices.expires {
            None => self.duration,
            Some(d) if d > self.duration => return Err(widened("expires", format!("{d} is longer than the requested {}", self.duration))),
            Some(d) => d,
        };
        let categories = match (&choices.categories, &self.categories) {
            (None, asked) => asked.clone(),
            (Some(chosen), asked) => {
                check_choice_list("categories", chosen, limits::CATEGORIES)?;
                if let Some(c) = chosen.iter().find(|c| scope::taxonomy_path(c).is_err()) {
                    return Err(NarrowError::Invalid { term: "categories", reason: format!("`{}` is not a taxonomy path like `Apparel > Shoes`", shown(c)) });
                }
                if let Some(asked) = asked {
                    if let Some(c) = chosen.iter().find(|c| !asked.iter().any(|a| category_within(c, a))) {
                        return Err(widened("categories", format!("`{}` is not within the requested categories", shown(c))));
                    }
                }
                Some(chosen.clone())
            }
        };
        let merchants = match (&choices.merchants, &self.merchants) {
            (None, asked) => asked.clone(),
            (Some(chosen), asked) => {
                check_choice_list("merchants", chosen, limits::MERCHANTS)?;
                if let Some(m) = chosen.iter().find(|m| canonical_domain(m).is_none()) {
                    return Err(NarrowError::Invalid { term: "merchants", reason: format!("`{}` is not a lowercase domain name", shown(m)) });
                }
                if let Some(asked) = asked {
                    if let Some(m) = chosen.iter().find(|m| !asked.contains(m)) {
                        return Err(widened("merchants", format!("`{}` is not one of the requested merchants", shown(m))));
                    }
                }
                Some(chosen.clone())
            }
        };
        let fields = match (&choices.fields, &self.fields) {
            (None, asked) => asked.clone(),
            (Some(chosen), asked) => {
                let chosen = crate::fields::Fields::from_list(chosen).map_err(|e| NarrowError::Invalid { term: "fields", reason: e.to_string() })?;
                if let Some(asked) = asked {
                    if let Some(f) = chosen.iter().find(|f| !asked.iter().any(|a| a == f)) {
                        return Err(widened("fields", format!("`{f}` is not one of the requested fields")));
                    }
                }
                Some(chosen.to_vec())
            }
        };
        if fields.is_some() && granularity != Granularity::Raw {
            return Err(NarrowError::Invalid { term: "fields", reason: format!("fields are chosen only at raw granularity, not at {granularity}") });
        }
        let rate = match (choices.rate, self.rate) {
            (None, asked) => asked,
            (Some(chosen), Some(asked)) if !chosen.is_within(asked) => {
                return Err(widened("rate", format!("{chosen} allows more in some hour or day than the requested {asked}")))
            }
            (Some(chosen), _) => Some(chosen),
        };
        Ok(Approved { kinds, granularity, window, duration, categories, merchants, fields, rate })
    }
}

fn check_choice_list(term: &'static str, list: &[String], max: usize) -> Result<(), NarrowError> {
    let invalid = |reason: String| NarrowError::Invalid { term, reason };
    if list.is_empty() || list.len() > max {
        return Err(invalid(format!("give 1 to {max} entries")));
    }
    if let Some(bad) = list.iter().find(|s| checked_text(s, 256).is_err()) {
        return Err(invalid(format!("`{}` is empty, too long or holds control characters", shown(bad))));
    }
    Ok(())
}

impl Approved {
    /// The grant's [`Terms`] for `audience`, approved at `now`: the expiry is `now` plus the
    /// duration, rounded up to a UTC midnight ([`scope::grant_expiry`]). `None` past the
    /// representable years. The category and merchant filters go into the terms, so every
    /// slice cut under them keeps them ([`Terms::evaluate`]).
    pub fn terms(&self, audience: &str, now: OffsetDateTime) -> Option<Terms> {
        let expires_at = scope::grant_expiry(now, self.duration)?;
        Some(Terms {
            audience: audience.to_owned(),
            kinds: self.kinds.clone(),
            granularity: self.granularity,
            window: self.window,
            expires_at,
            categories: self.categories.clone(),
            merchants: self.merchants.clone(),
            fields: self.fields.clone(),
            rate: self.rate,
            noise: None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::b64;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    /// A push request, its members in the order [`Request::to_json`] writes them.
    pub(crate) const PUSH: &str = concat!(
        r#"{"version":1,"id":"shoes-2026-11","issued_at":"2026-11-20T00:00:00Z","expires_at":"2027-01-31T00:00:00Z","#,
        r#""marketer":{"name":"Acme Shoes","domain":"acme.example","contact":"privacy@acme.example","privacy_policy":"https://acme.example/privacy"},"#,
        r#""purpose":{"code":"dpv:PersonalisedAdvertising","text":"Show you running-shoe offers that fit what you look for."},"#,
        r#""terms":{"kinds":["search","cart"],"granularity":"category","window":"30d","duration":"90d","categories":["Apparel & Accessories > Shoes"],"merchants":["shoes.example","trail.example"]},"#,
        r#""offer":"10% off your next pair","#,
        r#""delivery":{"method":"push","inbox":"https://inbox.acme.example/optin","every":"1d"}}"#
    );

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[5u8; 32]).unwrap()
    }

    /// `PUSH` with `edit` applied to its JSON value.
    fn edited(edit: impl Fn(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(PUSH).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn parses_and_writes_back_the_same_bytes() {
        let r = Request::parse(PUSH).unwrap();
        assert_eq!(r.to_json(), PUSH);
        assert_eq!(r.purpose.code.label(), "ads chosen for you from what you share");
        assert!(matches!(&r.delivery, Delivery::Push { inbox, every } if inbox.host() == "inbox.acme.example" && every.to_string() == "1d"));
        let pull = edited(|v| v["delivery"] = serde_json::json!({"method": "pull"}));
        assert_eq!(Request::parse(&pull).unwrap().delivery, Delivery::Pull);
        let bare = edited(|v| {
            let terms = v["terms"].as_object_mut().unwrap();
            terms.remove("categories");
            terms.remove("merchants");
        });
        assert_eq!(Request::parse(&bare).unwrap().terms.categories, None);
    }

    #[test]
    fn the_purpose_list_is_dpv_codes_with_labels() {
        let codes: Vec<PurposeCode> = PurposeCode::all().collect();
        assert!(codes.len() >= 10, "{codes:?}");
        for code in codes {
            assert!(code.as_str().starts_with("dpv:") && code.as_str()[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
            assert!(!code.label().is_empty(), "{code}");
        }
        assert!(PurposeCode::parse("dpv:ServiceOptimisation").is_some());
        assert!(PurposeCode::parse("dpv:SellDataToThirdParties").is_none());
    }

    #[test]
    fn rejects_bad_requests_naming_the_field() {
        let long = |n: usize| "a".repeat(n);
        let cases: Vec<(&str, String, &str)> = vec![
            ("unknown field", edited(|v| v["colour"] = "blue".into()), "colour"),
            ("unknown nested field", edited(|v| v["marketer"]["logo"] = "x".into()), "marketer.logo"),
            ("unknown field named with a bidi override", edited(|v| v["terms"]["x\u{202e}y"] = 1.into()), "terms.x\\u{202e}y"),
            ("version 2", edited(|v| v["version"] = 2.into()), "version"),
            ("no version", edited(|v| _ = v.as_object_mut().unwrap().remove("version")), "version"),
            ("bad id", edited(|v| v["id"] = "shoes 2026".into()), "id"),
            ("long id", edited(|v| v["id"] = long(65).into()), "id"),
            ("expires before issued", edited(|v| v["expires_at"] = "2026-11-19T00:00:00Z".into()), "expires_at"),
            ("lives too long", edited(|v| v["expires_at"] = "2028-01-01T00:00:00Z".into()), "expires_at"),
            ("bad time", edited(|v| v["issued_at"] = "yesterday".into()), "issued_at"),
            ("unknown purpose code", edited(|v| v["purpose"]["code"] = "dpv:SellDataToThirdParties".into()), "purpose.code"),
            ("purpose code without prefix", edited(|v| v["purpose"]["code"] = "PersonalisedAdvertising".into()), "purpose.code"),
            ("long purpose", edited(|v| v["purpose"]["text"] = long(501).into()), "purpose.text"),
            ("newline in purpose", edited(|v| v["purpose"]["text"] = "ads\nfor you".into()), "purpose.text"),
            ("escape sequence in name", edited(|v| v["marketer"]["name"] = "Acme\u{1b}[2J".into()), "marketer.name"),
            ("bidi override in offer", edited(|v| v["offer"] = "10% \u{202e}ffo".into()), "offer"),
            ("zero-width space in name", edited(|v| v["marketer"]["name"] = "Ac\u{200b}me".into()), "marketer.name"),
            ("padded name", edited(|v| v["marketer"]["name"] = " Acme".into()), "marketer.name"),
            ("empty offer", edited(|v| v["offer"] = "".into()), "offer"),
            ("number for a string", edited(|v| v["offer"] = 10.into()), "offer"),
            ("uppercase domain", edited(|v| v["marketer"]["domain"] = "Acme.example".into()), "marketer.domain"),
            ("bare host", edited(|v| v["marketer"]["domain"] = "localhost".into()), "marketer.domain"),
            ("bad contact", edited(|v| v["marketer"]["contact"] = "call us".into()), "marketer.contact"),
            ("http privacy policy", edited(|v| v["marketer"]["privacy_policy"] = "http://acme.example/privacy".into()), "marketer.privacy_policy"),
            ("no kinds", edited(|v| v["terms"]["kinds"] = serde_json::json!([])), "terms.kinds"),
            ("unknown kind", edited(|v| v["terms"]["kinds"] = serde_json::json!(["search", "walk"])), "terms.kinds[1]"),
            ("kind twice", edited(|v| v["terms"]["kinds"] = serde_json::json!(["search", "search"])), "terms.kinds[1]"),
            ("unknown granularity", edited(|v| v["terms"]["granularity"] = "fine".into()), "terms.granularity"),
            ("window forever", edited(|v| v["terms"]["window"] = "forever".into()), "terms.window"),
            ("duration 11 years", edited(|v| v["terms"]["duration"] = "4016d".into()), "terms.duration"),
            ("empty categories", edited(|v| v["terms"]["categories"] = serde_json::json!([])), "terms.categories"),
            ("malformed category", edited(|v| v["terms"]["categories"] = serde_json::json!(["Shoes >  Running"])), "terms.categories[0]"),
            ("merchant with a path", edited(|v| v["terms"]["merchants"] = serde_json::json!(["shoes.example/x"])), "terms.merchants[0]"),
            ("too many merchants", edited(|v| v["terms"]["merchants"] = (0..65).map(|i| format!("m{i}.example")).collect()), "terms.merchants"),
            ("http inbox", edited(|v| v["delivery"]["inbox"] = "http://inbox.acme.example/optin".into()), "delivery.inbox"),
            ("inbox with user info", edited(|v| v["delivery"]["inbox"] = "https://u:p@inbox.acme.example/".into()), "delivery.inbox"),
            ("inbox at an IP address", edited(|v| v["delivery"]["inbox"] = "https://192.0.2.1/optin".into()), "delivery.inbox"),
            ("inbox with a fragment", edited(|v| v["delivery"]["inbox"] = "https://inbox.acme.example/#x".into()), "delivery.inbox"),
            ("inbox with a space", edited(|v| v["delivery"]["inbox"] = "https://inbox.acme.example/a b".into()), "delivery.inbox"),
            ("inbox on port 0", edited(|v| v["delivery"]["inbox"] = "https://inbox.acme.example:0/".into()), "delivery.inbox"),
            ("inbox elsewhere", edited(|v| v["delivery"]["inbox"] = "https://inbox.broker.example/acme".into()), "delivery.inbox"),
            ("inbox on a look-alike", edited(|v| v["delivery"]["inbox"] = "https://evilacme.example/".into()), "delivery.inbox"),
            ("long inbox", edited(|v| v["delivery"]["inbox"] = format!("https://acme.example/{}", long(500)).into()), "delivery.inbox"),
            ("push every minute", edited(|v| v["delivery"]["every"] = "1m".into()), "delivery.every"),
            ("pull with an inbox", edited(|v| v["delivery"]["method"] = "pull".into()), "delivery.every"),
            ("unknown method", edited(|v| v["delivery"]["method"] = "mail".into()), "delivery.method"),
            ("repeated key", PUSH.replacen(r#""offer":"#, r#""offer":"free shoes","offer":"#, 1), "offer"),
            ("repeated nested key", PUSH.replacen(r#""name":"Acme Shoes""#, r#""name":"Acme Shoes","name":"Evil""#, 1), "marketer.name"),
            ("not an object", "[]".into(), "."),
            ("not JSON", "{".into(), "."),
        ];
        for (name, json, field) in cases {
            let err = Request::parse(&json).expect_err(name);
            assert_eq!(err.field(), Some(field), "{name}: {err}");
            assert!(!err.to_string().chars().any(crate::is_hidden_or_control), "{name}: the message is safe to print: {err:?}");
        }
        let huge = edited(|v| v["offer"] = " ".repeat(limits::DOCUMENT_BYTES).into());
        assert_eq!(Request::parse(&huge), Err(RequestError::TooLarge { max: limits::DOCUMENT_BYTES }));
    }

    #[test]
    fn verifies_a_signed_request() {
        let jws = sign(&key(), PUSH.as_bytes());
        let signed = verify(&jws, Some("acme.example"), NOW).unwrap();
        assert_eq!(signed.request.to_json(), PUSH);
        assert_eq!(signed.key.kid.as_deref(), Some(Jwk::ed25519(key().public_key().as_ref()).thumbprint().as_str()));
        assert!(verify(&jws, Some("ACME.example."), NOW).is_ok(), "a host name is compared as DNS compares it");
        assert!(verify(&jws, None, NOW).is_ok(), "a request handed over as a file");
    }

    #[test]
    fn rejects_requests_that_do_not_verify() {
        let key = key();
        let jws = sign(&key, PUSH.as_bytes());
        let (h, rest) = jws.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let other = Ed25519KeyPair::from_seed_unchecked(&[6u8; 32]).unwrap();
        let header = |value: Value| b64::encode(value.to_string());
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let good_header = serde_json::json!({"alg": "EdDSA", "kid": jwk.thumbprint(), "typ": TYP, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jwk.x}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = good_header.clone();
            f(&mut v);
            compact::sign(&key, v.to_string().as_bytes(), PUSH.as_bytes())
        };
        let cases: Vec<(&str, String, Option<&str>, OffsetDateTime, &str)> = vec![
            ("another payload", format!("{h}.{}.{s}", b64::encode(PUSH.replace("10%", "90%"))), None, NOW, "signature does not verify"),
            ("signed by another key, naming ours", format!("{h}.{}", sign(&other, PUSH.as_bytes()).split_once('.').unwrap().1), None, NOW, "signature"),
            ("fetched from another domain", jws.clone(), Some("evil.example"), NOW, "but was fetched from `evil.example`"),
            ("fetched from a subdomain", jws.clone(), Some("www.acme.example"), NOW, "fetched from"),
            ("expired", jws.clone(), Some("acme.example"), datetime!(2027-01-31 0:00 UTC), "expired at 2027-01-31T00:00:00Z"),
            ("issued in the future", jws.clone(), None, datetime!(2026-11-19 23:54 UTC), "later than now"),
            ("alg none", format!("{}.{}.", header(serde_json::json!({"alg": "none"})), b64::encode(PUSH)), None, NOW, "header is not JSON"),
            ("alg HS256", with(&|v| v["alg"] = "HS256".into()), None, NOW, "only EdDSA"),
            ("a slice's typ", with(&|v| v["typ"] = crate::jws::TYP.into()), None, NOW, "typ"),
            ("kid of another key", with(&|v| v["kid"] = Jwk::ed25519(other.public_key().as_ref()).thumbprint().into()), None, NOW, "thumbprint"),
            ("a private key in the header", with(&|v| v["jwk"]["d"] = "AAAA".into()), None, NOW, "header is not JSON"),
            ("a crit header", with(&|v| v["crit"] = serde_json::json!(["exp"])), None, NOW, "header is not JSON"),
            ("an X25519 key", with(&|v| v["jwk"]["crv"] = "X25519".into()), None, NOW, "not an Ed25519 JWK"),
            ("two parts", format!("{h}.{}", b64::encode(PUSH)), None, NOW, "three"),
            ("four parts", format!("{jws}.x"), None, NOW, "three"),
            ("padded base64", format!("{h}=.{rest}"), None, NOW, "base64url"),
            ("too long", "a".repeat(limits::JWS_BYTES + 1), None, NOW, "larger than"),
        ];
        for (name, jws, domain, now, because) in cases {
            let err = verify(&jws, domain, now).expect_err(name);
            assert!(err.to_string().contains(because), "{name}: refused as `{err}`, expected `{because}`");
        }
        let unknown = sign(&key, edited(|v| v["purpose"]["code"] = "dpv:Profiling".into()).as_bytes());
        assert_eq!(verify(&unknown, None, NOW).unwrap_err().field(), Some("purpose.code"));
    }

    #[test]
    fn reads_the_well_known_document() {
        let jws = sign(&key(), PUSH.as_bytes());
        assert_eq!(published(&format!(r#"{{"requests":["{jws}"]}}"#)).unwrap(), vec![jws.clone()]);
        for bad in [r#"{"requests":[]}"#, r#"{"requests":"x"}"#, r#"{"requests":[1]}"#, r#"{"request":["x"]}"#, r#"{"requests":["a"],"requests":["b"]}"#, "[]"]
        {
            assert!(published(bad).is_err(), "{bad}");
        }
    }

    fn requested() -> RequestedTerms {
        Request::parse(PUSH).unwrap().terms
    }

    #[test]
    fn approval_narrows_each_term() {
        let asked = requested();
        assert_eq!(
            asked.narrow(&Choices::default()).unwrap(),
            Approved {
                kinds: asked.kinds.clone(),
                granularity: Granularity::Category,
                window: asked.window,
                duration: asked.duration,
                categories: asked.categories.clone(),
                merchants: asked.merchants.clone(),
                fields: None,
                rate: None,
            }
        );
        let choices = Choices {
            kinds: Some("cart".parse().unwrap()),
            granularity: Some(Granularity::Category),
            window: Some("7d".parse().unwrap()),
            expires: Some("30d".parse().unwrap()),
            categories: Some(vec!["Apparel & Accessories > Shoes > Running".into()]),
            merchants: Some(vec!["trail.example".into()]),
            fields: None,
            rate: Some("1/day".parse().unwrap()),
        };
        let approved = asked.narrow(&choices).unwrap();
        assert_eq!((approved.kinds.to_string(), approved.window.to_string(), approved.duration.to_string()), ("cart".into(), "1w".into(), "30d".into()));
        let terms = approved.terms("acme.example", NOW).unwrap();
        assert_eq!(terms.expires_at, datetime!(2026-12-24 0:00 UTC));
        // A request without filters may be narrowed to some.
        let open = RequestedTerms { categories: None, merchants: None, ..asked };
        let some = Choices { categories: Some(vec!["Toys".into()]), merchants: Some(vec!["toys.example".into()]), ..Choices::default() };
        assert_eq!(open.narrow(&some).unwrap().merchants, Some(vec!["toys.example".to_string()]));
    }

    #[test]
    fn fields_and_rate_are_read_and_only_narrowed() {
        let raw = |extra: &dyn Fn(&mut Value)| {
            Request::parse(&edited(|v| {
                v["terms"]["granularity"] = "raw".into();
                extra(v);
            }))
        };
        let asked = raw(&|v| {
            v["terms"]["fields"] = serde_json::json!(["merchant", "total", "items.price", "items.quantity", "items.name"]);
            v["terms"]["rate"] = "2/hour".into();
        })
        .unwrap()
        .terms;
        assert_eq!((asked.fields.as_ref().map(Vec::len), asked.rate.map(|r| r.to_string())), (Some(5), Some("2/hour".to_string())));
        let rate = |r: &str| Some(r.parse::<Rate>().unwrap());
        let fields = |l: &[&str]| Some(l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        /// The fields and rate approved, or the term refused and whether as widened.
        type Outcome = Result<(Option<Vec<String>>, Option<Rate>), (&'static str, bool)>;
        let cases: Vec<(Choices, Outcome)> = vec![
            (Choices::default(), Ok((asked.fields.clone(), rate("2/hour")))),
            (Choices { fields: fields(&["merchant", "items.name"]), ..Choices::default() }, Ok((fields(&["items.name", "merchant"]), rate("2/hour")))),
            (Choices { rate: rate("1/day"), ..Choices::default() }, Ok((asked.fields.clone(), rate("1/day")))),
            (Choices { rate: rate("48/day"), ..Choices::default() }, Err(("rate", true))),
            (Choices { rate: rate("3/hour"), ..Choices::default() }, Err(("rate", true))),
            (Choices { fields: fields(&["merchant", "query"]), ..Choices::default() }, Err(("fields", true))),
            (Choices { fields: fields(&["total"]), ..Choices::default() }, Err(("fields", false))),
            (Choices { fields: fields(&["price"]), ..Choices::default() }, Err(("fields", false))),
            (Choices { granularity: Some(Granularity::Category), ..Choices::default() }, Err(("fields", false))),
        ];
        for (choices, expected) in cases {
            let got = asked.narrow(&choices).map(|a| (a.fields, a.rate)).map_err(|e| match e {
                NarrowError::Widened { term, .. } => (term, true),
                NarrowError::Invalid { term, .. } => (term, false),
            });
            assert_eq!(got, expected, "{choices:?}");
        }
        let approved = asked.narrow(&Choices { rate: rate("1/day"), ..Choices::default() }).unwrap().terms("acme.example", NOW).unwrap();
        assert_eq!((approved.fields, approved.rate), (asked.fields.clone(), rate("1/day")));
        for (name, extra, field) in [
            ("unknown field", &(|v: &mut Value| v["terms"]["fields"] = serde_json::json!(["price"])) as &dyn Fn(&mut Value), "terms.fields"),
            ("total alone", &|v: &mut Value| v["terms"]["fields"] = serde_json::json!(["total"]), "terms.fields"),
            ("a bad rate", &|v: &mut Value| v["terms"]["rate"] = "2/week".into(), "terms.rate"),
            (
                "fields at category",
                &|v: &mut Value| {
                    v["terms"]["fields"] = serde_json::json!(["merchant"]);
                    v["terms"]["granularity"] = "category".into();
                },
                "terms.fields",
            ),
        ] {
            assert_eq!(raw(extra).unwrap_err().field(), Some(field), "{name}");
        }
    }

    #[test]
    fn rejects_widening_naming_the_term() {
        let asked = RequestedTerms { granularity: Granularity::Category, ..requested() };
        let cases: Vec<(Choices, &str)> = vec![
            (Choices { kinds: Some("search,purchase".parse().unwrap()), ..Choices::default() }, "kinds"),
            (Choices { granularity: Some(Granularity::Raw), ..Choices::default() }, "granularity"),
            (Choices { window: Some("31d".parse().unwrap()), ..Choices::default() }, "window"),
            (Choices { expires: Some("91d".parse().unwrap()), ..Choices::default() }, "expires"),
            (Choices { categories: Some(vec!["Apparel & Accessories".into()]), ..Choices::default() }, "categories"),
            (Choices { categories: Some(vec!["Apparel & Accessories > Shoes2".into()]), ..Choices::default() }, "categories"),
            (Choices { merchants: Some(vec!["shoes.example".into(), "other.example".into()]), ..Choices::default() }, "merchants"),
        ];
        for (choices, term) in cases {
            match asked.narrow(&choices) {
                Err(NarrowError::Widened { term: t, .. }) => assert_eq!(t, term, "{choices:?}"),
                other => panic!("{term}: {other:?}"),
            }
        }
        for (choices, term) in [
            (Choices { categories: Some(vec![]), ..Choices::default() }, "categories"),
            (Choices { merchants: Some(vec!["Shoes.example".into()]), ..Choices::default() }, "merchants"),
            (Choices { categories: Some(vec!["Shoes\u{202e}".into()]), ..Choices::default() }, "categories"),
        ] {
            assert!(matches!(asked.narrow(&choices), Err(NarrowError::Invalid { term: t, .. }) if t == term), "{choices:?}");
        }
    }
}
