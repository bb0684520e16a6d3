//! Shareable signals: what the person's browsing produced and chose to keep.
//!
//! Signals arrive as NDJSON, one JSON object per line (see SPEC.md, "Signals"). They are
//! parsed here, once, into [`Signal`] values that are valid by construction. Every refusal
//! names the line and the field, because a person fixing a file by hand needs both.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::timestamp;

/// The kinds of signal, in the order the store and slices list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A query typed into a search engine or a shop's search box.
    Search,
    /// The items in a shopping cart at one merchant.
    Cart,
    /// A completed order.
    Purchase,
}

impl Kind {
    /// All kinds, in order.
    pub const ALL: [Kind; 3] = [Kind::Search, Kind::Cart, Kind::Purchase];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Search => "search",
            Kind::Cart => "cart",
            Kind::Purchase => "purchase",
        }
    }

    /// A stable one-byte tag, used as the leading byte of store keys.
    pub fn tag(self) -> u8 {
        match self {
            Kind::Search => 1,
            Kind::Cart => 2,
            Kind::Purchase => 3,
        }
    }

    /// The kind of a store-key tag.
    pub fn from_tag(tag: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a kind name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind `{0}`: expected search, cart or purchase")]
pub struct KindError(pub String);

impl FromStr for Kind {
    type Err = KindError;
    fn from_str(text: &str) -> Result<Kind, KindError> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text).ok_or_else(|| KindError(text.chars().take(32).collect()))
    }
}

/// A non-empty set of kinds, written `search,cart`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kinds(BTreeSet<Kind>);

impl Kinds {
    /// Every kind.
    pub fn all() -> Kinds {
        Kinds(Kind::ALL.into_iter().collect())
    }

    /// The set of `kinds`, or `None` if empty.
    pub fn new(kinds: impl IntoIterator<Item = Kind>) -> Option<Kinds> {
        let set: BTreeSet<Kind> = kinds.into_iter().collect();
        (!set.is_empty()).then_some(Kinds(set))
    }

    /// Whether `kind` is in the set.
    pub fn contains(&self, kind: Kind) -> bool {
        self.0.contains(&kind)
    }

    /// The kinds in order.
    pub fn iter(&self) -> impl Iterator<Item = Kind> + '_ {
        self.0.iter().copied()
    }

    /// Whether every kind of `self` is in `other`.
    pub fn is_subset(&self, other: &Kinds) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The kinds of both sets, or `None` if they share none.
    pub fn intersect(&self, other: &Kinds) -> Option<Kinds> {
        Kinds::new(self.0.intersection(&other.0).copied())
    }
}

impl FromStr for Kinds {
    type Err = KindError;
    fn from_str(text: &str) -> Result<Kinds, KindError> {
        let kinds = text.split(',').map(|k| k.trim().parse()).collect::<Result<Vec<Kind>, _>>()?;
        Kinds::new(kinds).ok_or_else(|| KindError(String::new()))
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Kind::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Kinds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Kinds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kinds, D::Error> {
        let list = Vec::<Kind>::deserialize(d)?;
        Kinds::new(list).ok_or_else(|| serde::de::Error::custom("empty list of kinds"))
    }
}

/// Limits on what one signal may hold. Explicit so that feeders know them (SPEC.md); the
/// browser extension reads the same numbers from `extension/limits.json` (its `signal`
/// section), and a test holds the two equal.
pub mod limits {
    /// Longest line of NDJSON, in bytes.
    pub const LINE_BYTES: usize = 64 * 1024;
    /// Most signals in one batch.
    pub const BATCH_SIGNALS: usize = 10_000;
    /// Longest `id`.
    pub const ID_CHARS: usize = 128;
    /// Longest search query.
    pub const QUERY_CHARS: usize = 512;
    /// Longest category path.
    pub const CATEGORY_CHARS: usize = 256;
    /// Longest item name.
    pub const NAME_CHARS: usize = 256;
    /// Longest SKU.
    pub const SKU_CHARS: usize = 64;
    /// Longest order id.
    pub const ORDER_ID_CHARS: usize = 128;
    /// Longest source label.
    pub const SOURCE_CHARS: usize = 32;
    /// Longest merchant or engine domain, as written (a DNS name's length).
    pub const MERCHANT_CHARS: usize = 253;
    /// Most items in a cart or purchase.
    pub const ITEMS: usize = 200;
    /// Largest quantity of one item.
    pub const QUANTITY: u64 = 10_000;
}

/// A signal's identifier: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SignalId(String);

impl SignalId {
    /// Parses an id.
    pub fn parse(text: &str) -> Option<SignalId> {
        let ok = (1..=limits::ID_CHARS).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| SignalId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A non-negative decimal amount written as a string (`"89.90"`): prices are never floats.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Decimal(String);

impl Decimal {
    /// Parses `digits[.digits]`, at most 12 integer and 4 fractional digits.
    pub fn parse(text: &str) -> Option<Decimal> {
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let digits = |s: &str, max| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        let ok = digits(int, 12) && frac.map_or(true, |f| digits(f, 4));
        ok.then(|| Decimal(text.to_owned()))
    }

    /// The amount as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Decimal {
    type Error = String;
    fn try_from(text: String) -> Result<Decimal, String> {
        Decimal::parse(&text).ok_or_else(|| format!("`{text}` is not a decimal amount"))
    }
}

/// A line of a cart or an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Item {
    /// What the shop calls it.
    pub name: String,
    /// The shop's stock-keeping unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// A taxonomy path such as `Apparel & Accessories > Shoes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Unit price.
    pub price: Decimal,
    /// How many, at least 1.
    pub quantity: u64,
}

/// The kind-specific part of a signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// A search.
    Search {
        /// The query text.
        query: String,
        /// The engine's domain, like `duckduckgo.com`.
        engine: String,
    },
    /// A cart: the items in it at `at`.
    Cart {
        /// The merchant's registrable domain.
        merchant: String,
        /// ISO 4217 code.
        currency: String,
        /// The cart's items.
        items: Vec<Item>,
    },
    /// A purchase.
    Purchase {
        /// The merchant's registrable domain.
        merchant: String,
        /// ISO 4217 code.
        currency: String,
        /// What was paid.
        total: Decimal,
        /// The merchant's order number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<String>,
        /// The order's items.
        items: Vec<Item>,
    },
}

impl Body {
    /// The kind of this body.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Search { .. } => Kind::Search,
            Body::Cart { .. } => Kind::Cart,
            Body::Purchase { .. } => Kind::Purchase,
        }
    }

    /// The merchant of a cart or purchase.
    pub fn merchant(&self) -> Option<&str> {
        match self {
            Body::Search { .. } => None,
            Body::Cart { merchant, .. } | Body::Purchase { merchant, .. } => Some(merchant),
        }
    }
}

/// One validated signal. Serializes to the same JSON object it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Signal {
    /// Its id: given by the feeder, or derived from its content (SPEC.md, "Signals", rule 5).
    pub id: SignalId,
    /// When it happened.
    #[serde(with = "crate::timestamp::serde")]
    pub at: OffsetDateTime,
    /// What produced it (`extension`, `chrome-history`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A taxonomy path such as `Apparel & Accessories > Shoes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The kind and its fields.
    #[serde(flatten)]
    pub body: Body,
    /// The sensitive topics it matched when it was stored ([`crate::sensitive`]), which the
    /// agent sets at ingest; never given by a feeder, never part of a slice. Written only
    /// when there is one, so other signals serialize as they were parsed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

impl Signal {
    /// The kind.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// The id of a signal given without one. Purchases with an order number are identified
    /// by merchant and order number, so the same order fed twice (a reloaded confirmation
    /// page) is stored once; other signals by a digest of their content, so re-ingesting the
    /// same file adds nothing.
    fn derive_id(at: OffsetDateTime, category: Option<&str>, body: &Body) -> SignalId {
        let material = match body {
            Body::Purchase { merchant, order_id: Some(order), .. } => {
                format!("purchase\n{merchant}\n{order}")
            }
            _ => {
                let json = serde_json::to_string(body).unwrap_or_default();
                format!("{}\n{}\n{json}", timestamp::format(at), category.unwrap_or(""))
            }
        };
        let prefix = match body.kind() {
            Kind::Search => "s-",
            Kind::Cart => "c-",
            Kind::Purchase => "p-",
        };
        SignalId(format!("{prefix}{}", &crate::hex::encode(&crate::sha256(material.as_bytes()))[..32]))
    }
}

/// A signal as this crate serializes it, read back without validation.
#[derive(serde::Deserialize)]
struct Stored {
    id: String,
    #[serde(with = "crate::timestamp::serde")]
    at: OffsetDateTime,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    sensitive: Vec<String>,
    #[serde(flatten)]
    body: Body,
}

impl Signal {
    /// Reads back a signal from JSON that [`Signal`]'s own serialization wrote (a store's
    /// record), checking its shape but not re-validating every rule, which [`parse_value`]
    /// already did on the way in. Never use it on input from outside.
    pub fn from_stored_json(bytes: &[u8]) -> Result<Signal, serde_json::Error> {
        let s: Stored = serde_json::from_slice(bytes)?;
        Ok(Signal { id: SignalId(s.id), at: s.at, source: s.source, category: s.category, body: s.body, sensitive: s.sensitive })
    }
}

/// Where a signal was refused and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct SignalError {
    /// The JSON path of the offending field (`items[2].price`), if one is to blame.
    pub field: Option<String>,
    /// What was wrong, in words.
    pub reason: String,
}

/// A refused batch: the first bad line decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// One line was not a valid signal.
    #[error("line {line}: {error}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        error: SignalError,
    },
    /// The batch held more signals than allowed.
    #[error("batch holds more than {max} signals")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

impl BatchError {
    /// The 1-based line number at fault, if one is.
    pub fn line(&self) -> Option<usize> {
        match self {
            BatchError::Line { line, .. } => Some(*line),
            BatchError::TooMany { .. } => None,
        }
    }

    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            BatchError::Line { error, .. } => error.field.as_deref(),
            BatchError::TooMany { .. } => None,
        }
    }
}

/// Turns a merchant as written (a host name or a domain) into the merchant to store, or
/// says why it is not one. The agent passes a public-suffix-aware function; this crate
/// offers [`plain_domain`].
pub type MerchantFn<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Whether category path `inner` lies within `outer`: the same path, or one below it
/// (`A > B` is within `A`; `A2` is not). Grant filters and sensitive topics both compare
/// categories by it.
pub fn category_within(inner: &str, outer: &str) -> bool {
    inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with(" > "))
}

/// Lowercases a host name and checks its syntax, without public-suffix knowledge.
pub fn plain_domain(text: &str) -> Result<String, String> {
    let host = text.trim_end_matches('.').to_ascii_lowercase();
    let label_ok =
        |l: &str| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-');
    if host.len() <= 253 && host.contains('.') && host.split('.').all(label_ok) {
        Ok(host)
    } else {
        Err(String::from("not a domain name"))
    }
}

/// Parses an NDJSON batch. Blank lines are skipped. All or nothing: the first bad line
/// refuses the batch.
pub fn parse_batch(text: &str, merchant: MerchantFn<'_>) -> Result<Vec<Signal>, BatchError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if out.len() == limits::BATCH_SIGNALS {
            return Err(BatchError::TooMany { max: limits::BATCH_SIGNALS });
        }
        let signal = parse_line(line, merchant).map_err(|error| BatchError::Line { line: index + 1, error })?;
        out.push(signal);
    }
    Ok(out)
}

/// Parses one NDJSON line.
pub fn parse_line(line: &str, merchant: MerchantFn<'_>) -> Result<Signal, SignalError> {
    if line.len() > limits::LINE_BYTES {
        return Err(whole(format!("line is longer than {} bytes", limits::LINE_BYTES)));
    }
    // serde_json keeps the last of two equal keys; a feeder that sends two would mean one and
    // get the other, so a line naming a key twice is refused. Found while the line is read,
    // in the one parse.
    let Checked { value, duplicate } = serde_json::from_str(line).map_err(|e| whole(format!("not JSON: {e}")))?;
    if let Some(path) = duplicate {
        return Err(at(&path, "given more than once".into()));
    }
    parse_value(&value, merchant)
}

/// Reads a JSON document into a [`Value`], with the path of the first key that an object in it
/// names twice, if any. For the other documents of this crate that refuse repeated keys as
/// signals do (consent requests, push events).
pub(crate) fn read_json_once(text: &str) -> Result<(Value, Option<String>), serde_json::Error> {
    let Checked { value, duplicate } = serde_json::from_str(text)?;
    Ok((value, duplicate))
}

/// A JSON document read into a [`Value`], with the path of the first key that an object in
/// it names twice, if any (paths as in errors: `items[0].name`). Paths are built only for a
/// repeated key, on the way back up, so a clean line costs no more than a plain parse.
struct Checked {
    value: Value,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checker)
    }
}

/// Reads one JSON value.
struct Checker;

/// `inner`, a path below `outer`: `items` and `[1].name` make `items[1].name`.
fn below(outer: &str, inner: &str) -> String {
    if inner.starts_with('[') {
        format!("{outer}{inner}")
    } else {
        format!("{outer}.{inner}")
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Checker {
    type Value = Checked;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(self)
    }
}

fn leaf(value: Value) -> Checked {
    Checked { value, duplicate: None }
}

impl<'de> serde::de::Visitor<'de> for Checker {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        Ok(leaf(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        Ok(leaf(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        Ok(leaf(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        // JSON has no NaN or infinity, so every number it holds is one here.
        Ok(leaf(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        Ok(leaf(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        Ok(leaf(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(leaf(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let (mut values, mut duplicate) = (Vec::new(), None);
        while let Some(inner) = seq.next_element_seed(Checker)? {
            if duplicate.is_none() {
                duplicate = inner.duplicate.map(|d| below(&format!("[{}]", values.len()), &d));
            }
            values.push(inner.value);
        }
        Ok(Checked { value: Value::Array(values), duplicate })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let (mut object, mut duplicate) = (Map::new(), None);
        while let Some(key) = map.next_key::<String>()? {
            let inner = map.next_value_seed(Checker)?;
            if duplicate.is_none() {
                duplicate = if object.contains_key(&key) { Some(key.clone()) } else { inner.duplicate.map(|d| below(&key, &d)) };
            }
            object.insert(key, inner.value);
        }
        Ok(Checked { value: Value::Object(object), duplicate })
    }
}

/// Parses one signal from a JSON value (a line already decoded, or a stored record).
pub fn parse_value(value: &Value, merchant: MerchantFn<'_>) -> Result<Signal, SignalError> {
    let obj = value.as_object().ok_or_else(|| whole("a signal must be a JSON object".into()))?;
    let f = Fields { obj, prefix: String::new() };
    let kind: Kind = {
        let text = f.string("kind", 16)?;
        text.parse().map_err(|e: KindError| at("kind", e.to_string()))?
    };
    let allowed: &[&str] = match kind {
        Kind::Search => &["query", "engine"],
        Kind::Cart => &["merchant", "currency", "items"],
        Kind::Purchase => &["merchant", "currency", "total", "order_id", "items"],
    };
    f.only(&[&["id", "kind", "at", "source", "category"], allowed].concat())?;

    let id = match f.opt_string("id", limits::ID_CHARS)? {
        Some(text) => Some(SignalId::parse(&text).ok_or_else(|| at("id", "use 1 to 128 characters of A-Z a-z 0-9 . _ : -".into()))?),
        None => None,
    };
    let when = {
        let text = f.string("at", 64)?;
        timestamp::parse(&text).ok_or_else(|| at("at", format!("`{text}` is not an RFC 3339 timestamp")))?
    };
    let source = f.opt_string("source", limits::SOURCE_CHARS)?;
    let category = f.opt_string("category", limits::CATEGORY_CHARS)?;
    let body = match kind {
        Kind::Search => Body::Search {
            query: f.string("query", limits::QUERY_CHARS)?,
            engine: domain(&f.string("engine", limits::MERCHANT_CHARS)?, &plain_domain).map_err(|r| at("engine", r))?,
        },
        Kind::Cart => Body::Cart {
            merchant: domain(&f.string("merchant", limits::MERCHANT_CHARS)?, merchant).map_err(|r| at("merchant", r))?,
            currency: f.currency()?,
            items: f.items(true)?,
        },
        Kind::Purchase => Body::Purchase {
            merchant: domain(&f.string("merchant", limits::MERCHANT_CHARS)?, merchant).map_err(|r| at("merchant", r))?,
            currency: f.currency()?,
            total: f.decimal("total")?,
            order_id: f.opt_string("order_id", limits::ORDER_ID_CHARS)?,
            items: f.items(false)?,
        },
    };
    let id = id.unwrap_or_else(|| Signal::derive_id(when, category.as_deref(), &body));
    Ok(Signal { id, at: when, source, category, body, sensitive: Vec::new() })
}

fn domain(text: &str, merchant: MerchantFn<'_>) -> Result<String, String> {
    merchant(text).map_err(|reason| format!("`{}` is {reason}", text.chars().take(64).collect::<String>()))
}

fn whole(reason: String) -> SignalError {
    SignalError { field: None, reason }
}

fn at(field: &str, reason: String) -> SignalError {
    SignalError { field: Some(field.to_owned()), reason }
}

/// Field access on one JSON object, naming fields by their full path in errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl Fields<'_> {
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail(&self, name: &str, reason: impl Into<String>) -> SignalError {
        SignalError { field: Some(self.path(name)), reason: reason.into() }
    }

    fn only(&self, known: &[&str]) -> Result<(), SignalError> {
        match self.obj.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.fail(&k.chars().take(64).collect::<String>(), "unknown field")),
            None => Ok(()),
        }
    }

    fn opt_string(&self, name: &str, max: usize) -> Result<Option<String>, SignalError> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() {
                    Err(self.fail(name, "must not be empty"))
                } else if s.chars().count() > max {
                    Err(self.fail(name, format!("longer than {max} characters")))
                } else if s.chars().any(crate::is_control_or_bidi) {
                    Err(self.fail(name, "contains control or bidirectional formatting characters"))
                } else {
                    Ok(Some(s.to_owned()))
                }
            }
            Some(_) => Err(self.fail(name, "must be a string")),
        }
    }

    fn string(&self, name: &str, max: usize) -> Result<String, SignalError> {
        self.opt_string(name, max)?.ok_or_else(|| self.fail(name, "is required"))
    }

    fn decimal(&self, name: &str) -> Result<Decimal, SignalError> {
        match self.obj.get(name) {
            Some(Value::Number(_)) => Err(self.fail(name, "must be a decimal string like \"89.90\", not a number")),
            _ => {
                let text = self.string(name, 20)?;
                Decimal::parse(&text).ok_or_else(|| self.fail(name, format!("`{text}` is not a decimal amount like \"89.90\"")))
            }
        }
    }

    fn currency(&self) -> Result<String, SignalError> {
        let text = self.string("currency", 3)?;
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(text)
        } else {
            Err(self.fail("currency", format!("`{text}` is not a three-letter ISO 4217 code like EUR")))
        }
    }

    fn items(&self, allow_empty: bool) -> Result<Vec<Item>, SignalError> {
        let list = match self.obj.get("items") {
            Some(Value::Array(list)) => list,
            None | Some(Value::Null) if allow_empty => return Ok(Vec::new()),
            None | Some(Value::Null) => return Err(self.fail("items", "is required")),
            Some(_) => return Err(self.fail("items", "must be a list")),
        };
        if list.len() > limits::ITEMS {
            return Err(self.fail("items", format!("more than {} items", limits::ITEMS)));
        }
        if list.is_empty() && !allow_empty {
            return Err(self.fail("items", "must not be empty"));
        }
        list.iter()
            .enumerate()
            .map(|(i, value)| {
                let prefix = format!("{}items[{i}].", self.prefix);
                let obj =
                    value.as_object().ok_or_else(|| SignalError { field: Some(format!("{}items[{i}]", self.prefix)), reason: "must be an object".into() })?;
                let f = Fields { obj, prefix };
                f.only(&["name", "sku", "category", "price", "quantity"])?;
                let quantity = match obj.get("quantity") {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .filter(|q| (1..=limits::QUANTITY).contains(q))
                        .ok_or_else(|| f.fail("quantity", format!("must be a whole number from 1 to {}", limits::QUANTITY)))?,
                };
                Ok(Item {
                    name: f.string("name", limits::NAME_CHARS)?,
                    sku: f.opt_string("sku", limits::SKU_CHARS)?,
                    category: f.opt_string("category", limits::CATEGORY_CHARS)?,
                    price: f.decimal("price")?,
                    quantity,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(line: &str) -> Result<Signal, SignalError> {
        parse_line(line, &plain_domain)
    }

    #[test]
    fn parses_each_kind_and_round_trips() {
        for line in [
            r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"trail running shoes","engine":"duckduckgo.com","category":"Apparel & Accessories > Shoes"}"#,
            r#"{"kind":"cart","at":"2026-11-20T10:05:00Z","merchant":"shoes.example","currency":"EUR","items":[{"name":"Trail X","sku":"TX-1","price":"89.90","quantity":1}]}"#,
            r#"{"id":"o-1","kind":"purchase","at":"2026-11-21T09:00:00Z","merchant":"shoes.example","currency":"EUR","total":"89.90","order_id":"A-1","items":[{"name":"Trail X","price":"89.90","quantity":1}]}"#,
        ] {
            let signal = parse(line).unwrap();
            let json = serde_json::to_value(&signal).unwrap();
            let again = parse_value(&json, &plain_domain).unwrap();
            assert_eq!(signal, again, "{line}");
            let stored = Signal::from_stored_json(&serde_json::to_vec(&signal).unwrap()).unwrap();
            assert_eq!(signal, stored, "{line}");
            // A mark the agent set is kept in its store's record, and read back.
            let marked = Signal { sensitive: vec!["health".into()], ..signal.clone() };
            let json = serde_json::to_value(&marked).unwrap();
            assert_eq!(json["sensitive"], serde_json::json!(["health"]), "{line}");
            assert_eq!(Signal::from_stored_json(json.to_string().as_bytes()).unwrap(), marked, "{line}");
            assert!(serde_json::to_value(&signal).unwrap().get("sensitive").is_none(), "no mark, no member: {line}");
        }
    }

    #[test]
    fn derived_ids_are_stable_and_purchases_key_on_order() {
        let a = parse(r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com"}"#).unwrap();
        let b = parse(r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com"}"#).unwrap();
        assert_eq!(a.id, b.id);
        assert!(a.id.as_str().starts_with("s-"));
        let p1 = parse(r#"{"kind":"purchase","at":"2026-11-21T09:00:00Z","merchant":"shop.example","currency":"EUR","total":"1","order_id":"A-1","items":[{"name":"x","price":"1"}]}"#).unwrap();
        let p2 = parse(r#"{"kind":"purchase","at":"2026-11-21T09:00:05Z","merchant":"SHOP.example","currency":"EUR","total":"1","order_id":"A-1","items":[{"name":"x","price":"1"}]}"#).unwrap();
        assert_eq!(p1.id, p2.id, "same order at the same merchant is one purchase");
    }

    #[test]
    fn rejects_bad_signals_naming_the_field() {
        for (line, field) in [
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q"}"#, "engine"),
            (r#"{"kind":"walk","at":"2026-11-20T10:00:00Z"}"#, "kind"),
            (r#"{"kind":"search","at":"yesterday","query":"q","engine":"bing.com"}"#, "at"),
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com","x":1}"#, "x"),
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"","engine":"bing.com"}"#, "query"),
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"shoes \u202egnp.exe","engine":"bing.com"}"#, "query"),
            (
                r#"{"kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR","items":[{"name":"x\u2066y","price":"1"}]}"#,
                "items[0].name",
            ),
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"not a host"}"#, "engine"),
            (r#"{"kind":"search","id":"has space","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com"}"#, "id"),
            (r#"{"kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"eur","items":[]}"#, "currency"),
            (r#"{"kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR","items":[{"name":"x","price":89.9}]}"#, "items[0].price"),
            (r#"{"kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR","items":[{"name":"x","price":"1,5"}]}"#, "items[0].price"),
            (
                r#"{"kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR","items":[{"name":"x","price":"1","quantity":0}]}"#,
                "items[0].quantity",
            ),
            (r#"{"kind":"purchase","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR","total":"1","items":[]}"#, "items"),
            (r#"{"kind":"purchase","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR","items":[{"name":"x","price":"1"}]}"#, "total"),
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com","merchant":"s.example"}"#, "merchant"),
            // The agent marks sensitive topics at ingest; a feeder cannot.
            (r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com","sensitive":[]}"#, "sensitive"),
        ] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.field.as_deref(), Some(field), "{line}: {err}");
        }
    }

    #[test]
    fn rejects_keys_given_twice_naming_the_first() {
        let search = r#""kind":"search","at":"2026-11-20T10:00:00Z","engine":"bing.com""#;
        let cart = r#""kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"s.example","currency":"EUR""#;
        for (line, field) in [
            (format!(r#"{{{search},"query":"shoes","query":"hats"}}"#), "query"),
            (format!(r#"{{"kind":"purchase",{search},"query":"q"}}"#), "kind"),
            (format!(r#"{{{cart},"items":[{{"name":"x","price":"1"}},{{"name":"y","name":"z","price":"2"}}]}}"#), "items[1].name"),
        ] {
            let err = parse(&line).expect_err(&line);
            assert_eq!((err.field.as_deref(), err.reason.as_str()), (Some(field), "given more than once"), "{line}");
        }
        // The same key in two different objects is no repetition.
        parse(&format!(r#"{{{cart},"items":[{{"name":"x","price":"1"}},{{"name":"y","price":"2"}}]}}"#)).expect("distinct objects");
    }

    #[test]
    fn rejects_non_objects_without_a_field() {
        for line in ["[]", "1", "{", "\"x\""] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.field, None);
        }
    }

    #[test]
    fn batch_names_the_line() {
        let text = "\n{\"kind\":\"search\",\"at\":\"2026-11-20T10:00:00Z\",\"query\":\"q\",\"engine\":\"bing.com\"}\n{\"kind\":\"search\"}\n";
        let err = parse_batch(text, &plain_domain).unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert_eq!(err.field(), Some("at"));
        assert_eq!(err.to_string(), "line 3: field `at`: is required");
    }

    /// The `signal` section of the limits file the extension reads: every limit in it, and
    /// no other, is one of [`limits`], with the same value.
    #[test]
    fn the_limits_are_the_ones_in_the_shared_limits_file() {
        let file: Value = serde_json::from_str(include_str!("../../extension/limits.json")).expect("limits.json is JSON");
        let ours = json!({
            "line_bytes": limits::LINE_BYTES,
            "id_chars": limits::ID_CHARS,
            "query_chars": limits::QUERY_CHARS,
            "category_chars": limits::CATEGORY_CHARS,
            "name_chars": limits::NAME_CHARS,
            "sku_chars": limits::SKU_CHARS,
            "order_id_chars": limits::ORDER_ID_CHARS,
            "source_chars": limits::SOURCE_CHARS,
            "merchant_chars": limits::MERCHANT_CHARS,
            "items": limits::ITEMS,
            "quantity": limits::QUANTITY,
        });
        assert_eq!(file["signal"], ours);
    }

    #[test]
    fn decimals() {
        for ok in ["0", "89.90", "123456789012.1234"] {
            assert!(Decimal::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", ".5", "5.", "-1", "1e3", "1.23456", "1234567890123", " 1"] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }
}
