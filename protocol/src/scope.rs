//! Grant terms and the one place that decides what a request may see.
//!
//! A grant's [`Terms`] are what the person allowed. A token may carry [`Caveat`]s that narrow
//! them ([`Terms::narrow`]); a request ([`SliceQuery`]) may ask for less than the narrowed
//! terms, never more. [`Terms::evaluate`] turns the three into the [`Applied`] scope the slice
//! is cut to, or a [`ScopeError`] naming the field that asked too much. Nothing else in the
//! system decides scope.
//!
//! Time is part of scope. A `category` item shows only its day, so at that granularity every
//! time bound is a whole UTC day too: were a bound allowed inside a day, a client could move
//! it a second at a time and watch an item appear, and learn the exact time the grant hides.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, Time, UtcOffset};

use crate::signal::{Body, Kind, Kinds, Signal};
use crate::span::Span;
use crate::timestamp;

/// A grant's identifier: `g_` and 24 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GrantId(String);

impl GrantId {
    /// The id made of 12 random bytes.
    pub fn from_bytes(bytes: [u8; 12]) -> GrantId {
        GrantId(format!("g_{}", crate::hex::encode(&bytes)))
    }

    /// Parses `g_` and 24 lowercase hex digits.
    pub fn parse(text: &str) -> Option<GrantId> {
        let hex = text.strip_prefix("g_")?;
        (hex.len() == 24 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then(|| GrantId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for GrantId {
    type Err = String;
    fn from_str(text: &str) -> Result<GrantId, String> {
        GrantId::try_from(text.to_owned())
    }
}

impl TryFrom<String> for GrantId {
    type Error = String;
    fn try_from(text: String) -> Result<GrantId, String> {
        GrantId::parse(&text).ok_or_else(|| format!("`{}` is not a grant id", text.chars().take(40).collect::<String>()))
    }
}

impl From<GrantId> for String {
    fn from(id: GrantId) -> String {
        id.0
    }
}

/// How much of each signal a slice shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// Every field of the signal.
    Raw,
    /// Only kind, category and day.
    Category,
    /// Counts per kind and category over the window, never a signal: see [`crate::noise`].
    Aggregate,
}

impl Granularity {
    /// Whether `self` shows more than `other`.
    pub fn is_finer_than(self, other: Granularity) -> bool {
        self.rank() < other.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Granularity::Raw => 0,
            Granularity::Category => 1,
            Granularity::Aggregate => 2,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Raw => "raw",
            Granularity::Category => "category",
            Granularity::Aggregate => "aggregate",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(text: &str) -> Result<Granularity, String> {
        match text {
            "raw" => Ok(Granularity::Raw),
            "category" => Ok(Granularity::Category),
            "aggregate" => Ok(Granularity::Aggregate),
            _ => Err(format!("unknown granularity `{}`: expected raw, category or aggregate", text.chars().take(32).collect::<String>())),
        }
    }
}

/// What a grant allows: the person's consent, and every token's upper bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Who the slices are for: the marketer, or a partner a caveat named.
    pub audience: String,
    /// The kinds that may be shared.
    pub kinds: Kinds,
    /// How much of each signal.
    pub granularity: Granularity,
    /// How far back a slice may reach from the moment it is cut.
    pub window: Span,
    /// When the grant (or the token) stops working.
    #[serde(with = "crate::timestamp::serde")]
    pub expires_at: OffsetDateTime,
    /// Only signals within these taxonomy paths ([`Filters`]); absent: any. Absent in the
    /// terms of every grant made before filters existed, whose stored bytes and MACs stay as
    /// they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Only signals at these merchants, registrable domains ([`Filters`]); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// At `raw`, only these fields of each signal; absent: every field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// At most this many slices per hour or day; absent: no limit beyond the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<crate::rate::Rate>,
    /// At `aggregate`, the noise added to each count and the budget it spends; absent:
    /// exact counts, which only a grant made that way has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<crate::noise::Noise>,
}

// Defined with the signals whose categories it compares, so that `sensitive`, which this
// module builds on for the never-share list, matches categories by the same rule without
// depending back on this module.
pub use crate::signal::category_within;

/// The category and merchant filters of a grant, and the one rule for which signals they
/// admit. Each filter that is present must admit a signal; a filter admits only what it can
/// vouch for, so a signal that names nothing the filter could judge is left out:
///
/// - **categories**: every category the signal shows must lie within one of the paths
///   ([`category_within`]): its own `category`, and for carts and purchases each item's
///   (an item without one shows its signal's). A signal that shows no category at all is
///   left out. So a search is admitted only when it carries a category within the filter,
///   and a cart holding one item outside the filter is left out whole, since its other
///   items, and a purchase's total, would tell what the person did outside it.
/// - **merchants**: the signal's merchant must be one of them. Searches have no merchant, so
///   a grant with a merchant filter admits no searches.
#[derive(Clone, Copy, Debug)]
pub struct Filters<'a> {
    /// Category paths; `None`: any.
    pub categories: Option<&'a [String]>,
    /// Registrable domains; `None`: any.
    pub merchants: Option<&'a [String]>,
}

impl Filters<'_> {
    /// Whether `signal` passes every filter present.
    pub fn admit(&self, signal: &Signal) -> bool {
        self.categories.map_or(true, |paths| within_categories(paths, signal))
            && self.merchants.map_or(true, |m| signal.body.merchant().is_some_and(|s| m.iter().any(|x| x == s)))
    }
}

fn within_categories(paths: &[String], signal: &Signal) -> bool {
    let within = |category: Option<&str>| category.is_some_and(|c| paths.iter().any(|p| category_within(c, p)));
    let own = signal.category.as_deref();
    match &signal.body {
        Body::Search { .. } => within(own),
        Body::Cart { items, .. } | Body::Purchase { items, .. } => {
            // A signal with no category of its own and no items shows none.
            let shows_some = own.is_some() || !items.is_empty();
            shows_some && own.map_or(true, |c| within(Some(c))) && items.iter().all(|item| within(item.category.as_deref().or(own)))
        }
    }
}

/// A restriction a token carries. Caveats only ever narrow (see [`Terms::narrow`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caveat {
    /// Only these kinds.
    Kinds(Kinds),
    /// At most this granularity.
    Granularity(Granularity),
    /// At most this look-back window.
    Window(Span),
    /// No later than this.
    Expires(OffsetDateTime),
    /// Slices name this audience (a marketer's partner).
    Audience(String),
    /// Only signals within these taxonomy paths (a set, printed sorted).
    Categories(BTreeSet<String>),
    /// Only carts and purchases at these merchants (a set of lowercase domains, printed sorted).
    Merchants(BTreeSet<String>),
    /// At `raw`, only these fields.
    Fields(crate::fields::Fields),
    /// At most this many slices per hour or day.
    Rate(crate::rate::Rate),
}

/// Whether `text` is a taxonomy path as grants and requests hold them: segments joined by
/// ` > `, each non-empty, unpadded and without a `>` of its own, at most [`crate::signal::limits::CATEGORY_CHARS`]
/// characters, nothing that hides or steers text.
pub fn taxonomy_path(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.chars().count() <= crate::signal::limits::CATEGORY_CHARS
        && !text.chars().any(crate::is_hidden_or_control)
        && text.split(" > ").all(|part| !part.is_empty() && part.trim() == part && !part.contains('>'));
    if ok {
        Ok(())
    } else {
        Err(format!("must be a taxonomy path like `Apparel & Accessories > Shoes`, at most {} characters", crate::signal::limits::CATEGORY_CHARS))
    }
}

/// The characters a category caveat writes as `%XX`: the list separator, the escape itself,
/// and the two that JSON would escape in a token's body (which must hold no escapes).
const CATEGORY_ESCAPES: [(char, &str); 4] = [('%', "%25"), (',', "%2C"), ('"', "%22"), ('\\', "%5C")];

fn encode_category(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match CATEGORY_ESCAPES.iter().find(|(e, _)| *e == c) {
            Some((_, code)) => out.push_str(code),
            None => out.push(c),
        }
    }
    out
}

/// Decodes one path of a `categories=` caveat; `%` only in the four codes, uppercase.
fn decode_category(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i..i + 3)?;
        out.push(CATEGORY_ESCAPES.iter().find(|(_, c)| *c == code)?.0);
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The items of a comma-separated caveat list, as a set; an empty item or list is refused.
fn caveat_list(value: &str, item: impl Fn(&str) -> Result<String, String>) -> Result<BTreeSet<String>, String> {
    let mut set = BTreeSet::new();
    for part in value.split(',') {
        if part.is_empty() {
            return Err("an empty entry in the list".into());
        }
        set.insert(item(part)?);
    }
    Ok(set)
}

/// Why a caveat was refused. Unknown caveats are refused, never skipped: a verifier that
/// ignored a restriction it did not understand would widen the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("caveat `{text}`: {reason}")]
pub struct CaveatError {
    /// The caveat as written (truncated).
    pub text: String,
    /// What was wrong.
    pub reason: String,
}

impl FromStr for Caveat {
    type Err = CaveatError;
    fn from_str(text: &str) -> Result<Caveat, CaveatError> {
        let fail = |reason: &str| CaveatError { text: text.chars().take(64).collect(), reason: reason.into() };
        let (key, value) = text.split_once('=').ok_or_else(|| fail("expected key=value"))?;
        match key {
            "kinds" => value.parse().map(Caveat::Kinds).map_err(|e: crate::signal::KindError| fail(&e.to_string())),
            "granularity" => value.parse().map(Caveat::Granularity).map_err(|e: String| fail(&e)),
            "window" => value.parse().map(Caveat::Window).map_err(|e: crate::span::SpanError| fail(&e.to_string())),
            "expires" => timestamp::parse(value).map(Caveat::Expires).ok_or_else(|| fail("not an RFC 3339 timestamp")),
            "aud" => {
                // A host name, as the partner knows itself: nothing a terminal or a person
                // could read as something else.
                let host = crate::signal::plain_domain(value).ok().filter(|h| h == value && h.len() <= 128);
                host.map(Caveat::Audience).ok_or_else(|| fail("audience must be a lowercase host name like partner.example"))
            }
            "categories" => caveat_list(value, |part| {
                let path = decode_category(part).ok_or("`%` is written only as %25, %2C, %22 or %5C")?;
                taxonomy_path(&path)?;
                Ok(path)
            })
            .map(Caveat::Categories)
            .map_err(|e| fail(&e)),
            "merchants" => caveat_list(value, |part| {
                crate::signal::plain_domain(part)
                    .ok()
                    .filter(|d| d == part)
                    .ok_or_else(|| format!("`{}` is not a lowercase domain name like shoes.example", part.chars().take(64).collect::<String>()))
            })
            .map(Caveat::Merchants)
            .map_err(|e| fail(&e)),
            "fields" => value.parse().map(Caveat::Fields).map_err(|e: crate::fields::FieldError| fail(&e.to_string())),
            "rate" => value.parse().map(Caveat::Rate).map_err(|e: crate::rate::RateError| fail(&e.to_string())),
            _ => Err(fail("unknown caveat")),
        }
    }
}

impl fmt::Display for Caveat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caveat::Kinds(k) => write!(f, "kinds={k}"),
            Caveat::Granularity(g) => write!(f, "granularity={g}"),
            Caveat::Window(w) => write!(f, "window={w}"),
            Caveat::Expires(at) => write!(f, "expires={}", timestamp::format(*at)),
            Caveat::Audience(a) => write!(f, "aud={a}"),
            Caveat::Categories(paths) => write!(f, "categories={}", paths.iter().map(|p| encode_category(p)).collect::<Vec<_>>().join(",")),
            Caveat::Merchants(domains) => write!(f, "merchants={}", domains.iter().cloned().collect::<Vec<_>>().join(",")),
            Caveat::Fields(fields) => write!(f, "fields={fields}"),
            Caveat::Rate(rate) => write!(f, "rate={rate}"),
        }
    }
}

/// What a slice request asks for; every field optional (defaults: all the grant allows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceQuery {
    /// Only these kinds.
    pub kinds: Option<Kinds>,
    /// Signals at or after.
    pub since: Option<OffsetDateTime>,
    /// Signals before.
    pub until: Option<OffsetDateTime>,
    /// How much of each signal.
    pub granularity: Option<Granularity>,
    /// Most items in this page.
    pub limit: Option<u32>,
    /// Where the previous page ended (opaque to the marketer).
    pub cursor: Option<String>,
}

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1000;

impl SliceQuery {
    /// Parses the query-string pairs of `GET /v1/slice`. Unknown or repeated parameters are
    /// refused, so a typo never silently widens a request to its defaults.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<SliceQuery, ScopeError> {
        let mut q = SliceQuery::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            let bad = |reason: String| ScopeError::Invalid { field: key.chars().take(32).collect(), reason };
            if seen.contains(&key) {
                return Err(bad("given more than once".into()));
            }
            match key {
                "kinds" => q.kinds = Some(value.parse().map_err(|e: crate::signal::KindError| bad(e.to_string()))?),
                "since" => q.since = Some(timestamp::parse(value).ok_or_else(|| bad("not an RFC 3339 timestamp".into()))?),
                "until" => q.until = Some(timestamp::parse(value).ok_or_else(|| bad("not an RFC 3339 timestamp".into()))?),
                "granularity" => q.granularity = Some(value.parse().map_err(bad)?),
                "limit" => {
                    // Digits only: `u32::from_str` also takes a leading `+`, which no
                    // documented form of the parameter has.
                    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                    let n: u32 = value.parse().ok().filter(|_| digits).ok_or_else(|| bad(format!("must be a whole number from 1 to {MAX_LIMIT}")))?;
                    if !(1..=MAX_LIMIT).contains(&n) {
                        return Err(bad(format!("must be a whole number from 1 to {MAX_LIMIT}")));
                    }
                    q.limit = Some(n);
                }
                "cursor" => {
                    if value.is_empty() || value.len() > 512 {
                        return Err(bad("malformed cursor".into()));
                    }
                    q.cursor = Some(value.to_owned());
                }
                _ => return Err(bad("unknown parameter".into())),
            }
            seen.push(key);
        }
        Ok(q)
    }
}

/// The scope a slice was actually cut to. Slices state it so the marketer knows exactly
/// what they were given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Kinds included.
    pub kinds: Kinds,
    /// Granularity of the items.
    pub granularity: Granularity,
    /// Earliest signal time included.
    #[serde(with = "crate::timestamp::serde")]
    pub since: OffsetDateTime,
    /// Signals strictly before this time.
    #[serde(with = "crate::timestamp::serde")]
    pub until: OffsetDateTime,
    /// Most items in this page.
    pub limit: u32,
    /// The grant's category filter, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// The grant's merchant filter, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// At `raw`, the fields each item shows besides [`crate::fields::ALWAYS`], when the
    /// grant shares fewer than all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// The person's never-share list, which the agent sets after [`Terms::evaluate`]. Not
    /// part of the slice: a marketer learns nothing of it. Its default withholds every
    /// shipped sensitive topic.
    #[serde(skip)]
    pub never_share: crate::sensitive::NeverShare,
}

impl Applied {
    /// Whether a stored signal belongs in a slice cut to this scope: of a kind included, in
    /// `since ≤ at < until`, passing the grant's [`Filters`], and not withheld by the
    /// never-share list. The slicer asks it of every signal it reads, so pull slices,
    /// previews, pushes and counts keep the same filters and exclusions.
    pub fn admits(&self, signal: &Signal) -> bool {
        Terms::admits(self, signal.kind(), signal.at) && self.filters().admit(signal) && !self.never_share.withholds(signal)
    }

    /// The grant's filters, as applied.
    pub fn filters(&self) -> Filters<'_> {
        Filters { categories: self.categories.as_deref(), merchants: self.merchants.as_deref() }
    }
}

/// Why a request gets nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The grant or token has expired.
    #[error("the grant expired at {}", timestamp::format(*.0))]
    Expired(OffsetDateTime),
    /// The request asks for more than the grant allows (HTTP 403).
    #[error("`{field}` exceeds the grant: {reason}")]
    Exceeds {
        /// The query parameter that asked too much.
        field: &'static str,
        /// What the grant allows instead.
        reason: String,
    },
    /// The request is malformed (HTTP 400).
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The query parameter at fault.
        field: String,
        /// What was wrong.
        reason: String,
    },
}

impl Terms {
    /// The terms after one caveat, or `None` when the caveat leaves no kind, category or
    /// merchant in common. Each only narrows:
    ///
    /// - `categories`: a caveat's path within a granted one is kept, a granted path within a
    ///   caveat's is kept, the others are dropped (a grant without the filter keeps the
    ///   caveat's paths);
    /// - `merchants` and `fields`: the lists intersect (an absent list is every one); fields
    ///   in common may be none, which leaves only [`crate::fields::ALWAYS`];
    /// - `rate`: the narrowest of the two ([`crate::rate::Rate::narrowest`]).
    ///
    /// (A token with two different audiences is refused by [`crate::token::Token::verify`].)
    pub fn narrow(&self, caveat: &Caveat) -> Option<Terms> {
        let mut t = self.clone();
        match caveat {
            Caveat::Kinds(k) => t.kinds = t.kinds.intersect(k)?,
            Caveat::Granularity(g) => {
                if g.is_finer_than(t.granularity) {
                    // A caveat can never widen; asking for finer keeps the grant's granularity.
                } else {
                    t.granularity = *g;
                }
            }
            Caveat::Window(w) => t.window = t.window.min(*w),
            Caveat::Expires(at) => t.expires_at = t.expires_at.min(*at),
            Caveat::Audience(a) => t.audience = a.clone(),
            Caveat::Categories(paths) => {
                let kept: BTreeSet<String> = match &t.categories {
                    None => paths.clone(),
                    Some(granted) => paths
                        .iter()
                        .filter(|c| granted.iter().any(|g| category_within(c, g)))
                        .chain(granted.iter().filter(|g| paths.iter().any(|c| category_within(g, c))))
                        .cloned()
                        .collect(),
                };
                (!kept.is_empty()).then_some(())?;
                t.categories = Some(kept.into_iter().collect());
            }
            Caveat::Merchants(domains) => {
                let kept: Vec<String> = match &t.merchants {
                    None => domains.iter().cloned().collect(),
                    Some(granted) => domains.iter().filter(|d| granted.contains(d)).cloned().collect(),
                };
                (!kept.is_empty()).then_some(())?;
                t.merchants = Some(kept);
            }
            Caveat::Fields(fields) => {
                let asked = fields.to_vec();
                t.fields = Some(match &t.fields {
                    None => asked,
                    Some(granted) => crate::fields::intersect(granted, &asked),
                });
            }
            Caveat::Rate(rate) => t.rate = Some(t.rate.map_or(*rate, |r| r.narrowest(*rate))),
        }
        Some(t)
    }

    /// Decides the scope of a slice cut `now` for `query`.
    pub fn evaluate(&self, query: &SliceQuery, now: OffsetDateTime) -> Result<Applied, ScopeError> {
        if now >= self.expires_at {
            return Err(ScopeError::Expired(self.expires_at));
        }
        let kinds = match &query.kinds {
            None => self.kinds.clone(),
            Some(asked) => {
                if let Some(k) = asked.iter().find(|k| !self.kinds.contains(*k)) {
                    return Err(ScopeError::Exceeds { field: "kinds", reason: format!("kind `{k}` is not granted; granted: {}", self.kinds) });
                }
                asked.clone()
            }
        };
        let granularity = match query.granularity {
            None => self.granularity,
            Some(g) if g.is_finer_than(self.granularity) => {
                return Err(ScopeError::Exceeds { field: "granularity", reason: format!("`{g}` is finer than the granted `{}`", self.granularity) })
            }
            Some(g) => g,
        };
        // A `category` item and a count show each signal's category: terms whose fields
        // leave it out are never cut that coarse, or the category they keep back would show.
        if granularity != Granularity::Raw && !self.shares("category") {
            return Err(ScopeError::Exceeds {
                field: "granularity",
                reason: format!("`{granularity}` shows each signal's category, which the grant's fields leave out"),
            });
        }
        let window_edge = now - self.window.duration();
        let (earliest, latest) = match granularity {
            Granularity::Raw => (window_edge, now),
            Granularity::Category | Granularity::Aggregate => {
                // Only days the window covers whole, and never today: the edge of a window
                // that moves with `now`, or a slice that ends at `now`, would show the moment
                // an item enters or leaves it to a client that asks again and again.
                let today = day_start(now);
                let first = next_day_start(window_edge).unwrap_or(today);
                (first, today)
            }
        };
        let since = match query.since {
            // A window that holds no whole day before today serves nothing, not an error.
            None => earliest.min(latest),
            Some(s) if s < earliest => {
                return Err(ScopeError::Exceeds {
                    field: "since",
                    reason: format!("the grant's window of {} reaches back to {}", self.window, timestamp::format(earliest)),
                })
            }
            Some(s) => s,
        };
        if granularity != Granularity::Raw {
            // A bound inside a day is refused, not floored: flooring `since` would quietly
            // widen the request, flooring `until` would quietly answer another question than
            // the one asked. A refusal holds no item, so it tells a bisecting client nothing.
            for (field, bound) in [("since", query.since), ("until", query.until)] {
                if let Some(at) = bound.filter(|at| *at != day_start(*at)) {
                    return Err(ScopeError::Invalid {
                        field: field.into(),
                        reason: format!("at `{granularity}` granularity a bound is a whole UTC day, like {}", timestamp::format(day_start(at))),
                    });
                }
            }
        }
        // Nothing is known about the future: a later `until` is clamped, not refused.
        let until = query.until.map_or(latest, |u| u.min(latest));
        if since > until {
            return Err(ScopeError::Invalid { field: "until".into(), reason: "must not be before `since`".into() });
        }
        Ok(Applied {
            kinds,
            granularity,
            since,
            until,
            limit: query.limit.unwrap_or(DEFAULT_LIMIT),
            // A slice request cannot name filters: it gets the grant's, always.
            categories: self.categories.clone(),
            merchants: self.merchants.clone(),
            // Fields are a `raw` choice; a coarser item shows none of them anyway.
            fields: self.fields.clone().filter(|_| granularity == Granularity::Raw),
            never_share: crate::sensitive::NeverShare::default(),
        })
    }

    /// The field that a filter caveat among `caveats` reads and that items cut under these
    /// terms (the grant's, narrowed by those caveats) do not show, if there is one; the agent
    /// refuses such a token. A holder chooses its caveats and can try one after another, and
    /// every token of a grant sees the same item ids and days: were `merchants=` honoured
    /// where items leave the merchant out, the items each caveat keeps would tell every
    /// item's merchant. A `categories` caveat reads `category`, and for carts and purchases
    /// `items.category`; a `merchants` caveat reads `merchant`. Noisy counts are the
    /// exception: every new filter is a new answer, which spends the grant's budget.
    pub fn unshown_filter_field(&self, caveats: &[Caveat]) -> Option<&'static str> {
        if self.noise.is_some() {
            return None;
        }
        let with_items = self.kinds.contains(Kind::Cart) || self.kinds.contains(Kind::Purchase);
        caveats.iter().find_map(|caveat| {
            let reads: &[&'static str] = match caveat {
                Caveat::Categories(_) if with_items => &["category", "items.category"],
                Caveat::Categories(_) => &["category"],
                Caveat::Merchants(_) => &["merchant"],
                _ => &[],
            };
            reads.iter().copied().find(|field| !self.shows(field))
        })
    }

    /// Whether the terms' `fields` share `field` (absent: every field).
    fn shares(&self, field: &str) -> bool {
        self.fields.as_ref().map_or(true, |shared| shared.iter().any(|f| f == field))
    }

    /// Whether an item cut under these terms shows `field`: at `raw` when the fields share
    /// it; a `category` item, or an exact count, shows the signal's own `category` only.
    fn shows(&self, field: &str) -> bool {
        match self.granularity {
            Granularity::Raw => self.shares(field),
            Granularity::Category | Granularity::Aggregate => field == "category" && self.shares(field),
        }
    }

    /// Whether a signal of `kind` at `at` lies inside `applied` (used when re-checking items).
    pub fn admits(applied: &Applied, kind: Kind, at: OffsetDateTime) -> bool {
        applied.kinds.contains(kind) && at >= applied.since && at < applied.until
    }
}

/// When a grant made at `now` to last `lifetime` expires: `now + lifetime` rounded up to the
/// next UTC midnight (or exactly it, when it is one), so the grant never lasts less than
/// asked and at most a day more. `None` past the representable years.
///
/// A day, not a second: two grants made the same day for the same lifetime carry the same
/// `expires_at`, so marketers comparing bundles cannot tell that they were made together.
pub fn grant_expiry(now: OffsetDateTime, lifetime: Span) -> Option<OffsetDateTime> {
    next_day_start(now.checked_add(lifetime.duration())?)
}

/// The UTC midnight that begins the day of `at`.
fn day_start(at: OffsetDateTime) -> OffsetDateTime {
    // Times here are UTC already (the timestamp parser converts them); a time that could not be
    // moved to UTC would lie outside the years the parser accepts.
    at.checked_to_offset(UtcOffset::UTC).unwrap_or(at).replace_time(Time::MIDNIGHT)
}

/// `at` if it is a UTC midnight, else the next one; `None` past the representable years.
fn next_day_start(at: OffsetDateTime) -> Option<OffsetDateTime> {
    let start = day_start(at);
    if start == at {
        Some(at)
    } else {
        start.checked_add(Duration::DAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn terms() -> Terms {
        Terms {
            audience: "acme".into(),
            kinds: "search,cart".parse().unwrap(),
            granularity: Granularity::Raw,
            window: "30d".parse().unwrap(),
            expires_at: datetime!(2027-01-01 0:00 UTC),
            categories: None,
            merchants: None,
            fields: None,
            rate: None,
            noise: None,
        }
    }

    fn query(text: &str) -> Result<SliceQuery, ScopeError> {
        let pairs: Vec<(&str, &str)> = text.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
        SliceQuery::from_pairs(pairs)
    }

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    #[test]
    fn defaults_to_everything_granted() {
        let applied = terms().evaluate(&query("").unwrap(), NOW).unwrap();
        assert_eq!(applied.kinds.to_string(), "search,cart");
        assert_eq!(applied.since, datetime!(2026-10-24 12:00 UTC));
        assert_eq!(applied.until, NOW);
        assert_eq!(applied.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn rejects_requests_beyond_the_grant() {
        for (q, field) in [("kinds=purchase", "kinds"), ("kinds=search,purchase", "kinds"), ("since=2026-01-01T00:00:00Z", "since")] {
            match terms().evaluate(&query(q).unwrap(), NOW) {
                Err(ScopeError::Exceeds { field: f, .. }) => assert_eq!(f, field, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        let coarse = Terms { granularity: Granularity::Category, ..terms() };
        assert!(matches!(coarse.evaluate(&query("granularity=raw").unwrap(), NOW), Err(ScopeError::Exceeds { field: "granularity", .. })));
    }

    #[test]
    fn rejects_malformed_queries() {
        for (q, field) in [
            ("kinds=walks", "kinds"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("limit=+5", "limit"),
            ("limit=-5", "limit"),
            ("limit= 5", "limit"),
            ("since=yesterday", "since"),
            ("kind=search", "kind"),
            ("limit=1&limit=2", "limit"),
            ("granularity=fine", "granularity"),
        ] {
            match query(q) {
                Err(ScopeError::Invalid { field: f, .. }) => assert_eq!(f, field, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    /// What a query comes to: the `since` and `until` applied, or a refusal's status and field.
    #[derive(Debug, PartialEq, Eq)]
    enum Bounds {
        Applied(String, String),
        Refused(u16, String),
    }

    fn bounds(terms: &Terms, q: &str, now: OffsetDateTime) -> Bounds {
        match terms.evaluate(&query(q).unwrap(), now) {
            Ok(a) => Bounds::Applied(timestamp::format(a.since), timestamp::format(a.until)),
            Err(ScopeError::Exceeds { field, .. }) => Bounds::Refused(403, field.into()),
            Err(ScopeError::Invalid { field, .. }) => Bounds::Refused(400, field),
            Err(other) => panic!("{q}: {other}"),
        }
    }

    #[test]
    fn category_bounds_are_whole_utc_days() {
        let with = |granularity, window: &str| Terms { granularity, window: window.parse().unwrap(), ..terms() };
        let (category, raw) = (with(Granularity::Category, "30d"), with(Granularity::Raw, "30d"));
        let (day, hour) = (with(Granularity::Category, "1d"), with(Granularity::Category, "1h"));
        let midnight = datetime!(2026-11-23 0:00 UTC);
        let late = datetime!(2026-11-23 23:59:59 UTC);
        let ok = |since: &str, until: &str| Bounds::Applied(since.into(), until.into());
        let refused = |status, field: &str| Bounds::Refused(status, field.into());
        let cases: Vec<(&Terms, &str, OffsetDateTime, Bounds)> = vec![
            // The window's edge moves up to the first day it covers whole; today is not over.
            (&category, "", NOW, ok("2026-10-25T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "", midnight, ok("2026-10-24T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "", late, ok("2026-10-25T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "since=2026-11-01T00:00:00Z", NOW, ok("2026-11-01T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "since=2026-10-25T00:00:00Z", NOW, ok("2026-10-25T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "since=2026-10-24T00:00:00Z", NOW, refused(403, "since")),
            (&category, "since=2026-11-23T00:00:00Z", NOW, ok("2026-11-23T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "since=2026-11-24T00:00:00Z", NOW, refused(400, "until")),
            // A bound inside a day is refused, whatever its offset says.
            (&category, "since=2026-11-01T00:00:01Z", NOW, refused(400, "since")),
            (&category, "since=2026-11-01T12:00:00Z", NOW, refused(400, "since")),
            (&category, "since=2026-11-01T00:00:00.5Z", NOW, refused(400, "since")),
            (&category, "since=2026-11-01T00:00:00+01:00", NOW, refused(400, "since")),
            (&category, "since=2026-11-01T01:00:00+01:00", NOW, ok("2026-11-01T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "until=2026-11-10T00:00:00Z", NOW, ok("2026-10-25T00:00:00Z", "2026-11-10T00:00:00Z")),
            (&category, "until=2026-11-10T23:59:59Z", NOW, refused(400, "until")),
            (&category, "until=2026-11-23T12:00:00Z", NOW, refused(400, "until")),
            // Asking beyond the grant is named first, whatever else is wrong.
            (&category, "since=2026-10-01T00:00:00Z&until=2026-11-01T12:00:00Z", NOW, refused(403, "since")),
            (&category, "since=2026-10-24T12:00:00Z", NOW, refused(403, "since")),
            (&category, "since=2026-11-01T00:00:00Z&until=2026-11-01T12:00:00Z", NOW, refused(400, "until")),
            (&category, "since=2026-11-10T00:00:00Z&until=2026-11-05T00:00:00Z", NOW, refused(400, "until")),
            // A later `until` is clamped to the start of today.
            (&category, "until=2026-11-24T00:00:00Z", NOW, ok("2026-10-25T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&category, "until=9999-12-31T00:00:00Z", NOW, ok("2026-10-25T00:00:00Z", "2026-11-23T00:00:00Z")),
            // A window that holds no whole day before today serves nothing.
            (&day, "", NOW, ok("2026-11-23T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&day, "", midnight, ok("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&hour, "", NOW, ok("2026-11-23T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&hour, "since=2026-11-23T00:00:00Z", NOW, refused(403, "since")),
            // The rule follows the granularity applied: a raw grant asking for categories too.
            (&raw, "granularity=category", NOW, ok("2026-10-25T00:00:00Z", "2026-11-23T00:00:00Z")),
            (&raw, "granularity=category&since=2026-11-01T10:00:00Z", NOW, refused(400, "since")),
            (&raw, "", NOW, ok("2026-10-24T12:00:00Z", "2026-11-23T12:00:00Z")),
            (&raw, "since=2026-11-01T10:00:00Z&until=2026-11-20T10:00:01Z", NOW, ok("2026-11-01T10:00:00Z", "2026-11-20T10:00:01Z")),
        ];
        for (terms, q, now, expected) in cases {
            assert_eq!(bounds(terms, q, now), expected, "{} {}, {q:?} at {}", terms.granularity, terms.window, timestamp::format(now));
        }
    }

    #[test]
    fn grants_expire_at_the_next_utc_midnight() {
        let cases: [(OffsetDateTime, &str, Option<OffsetDateTime>); 9] = [
            // Made at any moment of one day, a 90-day grant expires at the same midnight...
            (datetime!(2026-11-23 0:00:01 UTC), "90d", Some(datetime!(2027-02-22 0:00 UTC))),
            (datetime!(2026-11-23 12:34:56 UTC), "90d", Some(datetime!(2027-02-22 0:00 UTC))),
            (datetime!(2026-11-23 12:34:57 UTC), "90d", Some(datetime!(2027-02-22 0:00 UTC))),
            (datetime!(2026-11-23 23:59:59 UTC), "90d", Some(datetime!(2027-02-22 0:00 UTC))),
            // ...and never sooner than asked: a lifetime ending on a midnight keeps it.
            (datetime!(2026-11-23 0:00 UTC), "90d", Some(datetime!(2027-02-21 0:00 UTC))),
            (datetime!(2026-11-23 23:59:59 UTC), "1s", Some(datetime!(2026-11-24 0:00 UTC))),
            (datetime!(2026-11-23 12:00 UTC), "2s", Some(datetime!(2026-11-24 0:00 UTC))),
            (datetime!(2026-11-23 12:00 UTC), "12h", Some(datetime!(2026-11-24 0:00 UTC))),
            (datetime!(9999-12-31 12:00 UTC), "1s", None),
        ];
        for (now, lifetime, expected) in cases {
            assert_eq!(grant_expiry(now, lifetime.parse().unwrap()), expected, "{lifetime} from {}", timestamp::format(now));
        }
    }

    #[test]
    fn expired_terms_serve_nothing() {
        let t = terms();
        assert!(matches!(t.evaluate(&SliceQuery::default(), t.expires_at), Err(ScopeError::Expired(_))));
    }

    #[test]
    fn caveats_only_narrow() {
        let t = terms();
        for (caveat, check) in [
            ("kinds=search,purchase", Box::new(|n: &Terms| n.kinds.to_string() == "search") as Box<dyn Fn(&Terms) -> bool>),
            ("granularity=category", Box::new(|n: &Terms| n.granularity == Granularity::Category)),
            ("window=90d", Box::new(|n: &Terms| n.window.to_string() == "30d")),
            ("window=7d", Box::new(|n: &Terms| n.window.to_string() == "1w")),
            ("expires=2030-01-01T00:00:00Z", Box::new(|n: &Terms| n.expires_at == datetime!(2027-01-01 0:00 UTC))),
            ("expires=2026-12-01T00:00:00Z", Box::new(|n: &Terms| n.expires_at == datetime!(2026-12-01 0:00 UTC))),
            ("aud=partner.example", Box::new(|n: &Terms| n.audience == "partner.example")),
        ] {
            let c: Caveat = caveat.parse().unwrap();
            assert_eq!(c.to_string().parse::<Caveat>().unwrap(), c);
            assert!(check(&t.narrow(&c).unwrap()), "{caveat}");
        }
        let coarse = Terms { granularity: Granularity::Category, ..terms() };
        assert_eq!(coarse.narrow(&"granularity=raw".parse().unwrap()).unwrap().granularity, Granularity::Category);
        assert!(t.narrow(&"kinds=purchase".parse().unwrap()).is_none());
    }

    /// A stored signal from its JSON (ids and times do not matter to the filters).
    fn signal(json: serde_json::Value) -> Signal {
        let mut v = json;
        v["id"] = "x-1".into();
        v["at"] = "2026-11-20T10:00:00Z".into();
        Signal::from_stored_json(v.to_string().as_bytes()).unwrap()
    }

    /// A filter as terms hold it.
    type Filter = Option<Vec<String>>;

    #[test]
    fn filters_admit_only_what_they_can_vouch_for() {
        use serde_json::json;
        let shoes = || vec!["Apparel > Shoes".to_string()];
        let shops = || vec!["shoes.example".to_string()];
        let search = |category: Option<&str>| {
            let mut v = json!({"kind": "search", "query": "q", "engine": "duckduckgo.com"});
            if let Some(c) = category {
                v["category"] = c.into();
            }
            signal(v)
        };
        let cart = |merchant: &str, own: Option<&str>, items: &[Option<&str>]| {
            let items: Vec<_> = items
                .iter()
                .map(|c| match c {
                    Some(c) => json!({"name": "n", "price": "1.00", "quantity": 1, "category": c}),
                    None => json!({"name": "n", "price": "1.00", "quantity": 1}),
                })
                .collect();
            let mut v = json!({"kind": "cart", "merchant": merchant, "currency": "EUR", "items": items});
            if let Some(c) = own {
                v["category"] = c.into();
            }
            signal(v)
        };
        let (c, m) = (Some(shoes()), Some(shops()));
        let cases: Vec<(&str, Filter, Filter, Signal, bool)> = vec![
            ("no filter admits anything", None, None, search(None), true),
            ("a search in the category", c.clone(), None, search(Some("Apparel > Shoes")), true),
            ("a search below it", c.clone(), None, search(Some("Apparel > Shoes > Running")), true),
            ("a search above it", c.clone(), None, search(Some("Apparel")), false),
            ("a look-alike path", c.clone(), None, search(Some("Apparel > Shoes2")), false),
            ("a search without a category", c.clone(), None, search(None), false),
            ("a cart whose items are all within", c.clone(), None, cart("shoes.example", None, &[Some("Apparel > Shoes > Boots")]), true),
            ("a cart within by its own category", c.clone(), None, cart("shoes.example", Some("Apparel > Shoes"), &[None]), true),
            ("an item outside leaves the cart out", c.clone(), None, cart("shoes.example", Some("Apparel > Shoes"), &[None, Some("Health > Pharmacy")]), false),
            ("an uncategorised item, no own category", c.clone(), None, cart("shoes.example", None, &[Some("Apparel > Shoes"), None]), false),
            ("a cart's own category outside", c.clone(), None, cart("shoes.example", Some("Health"), &[Some("Apparel > Shoes")]), false),
            ("an empty cart without a category", c.clone(), None, cart("shoes.example", None, &[]), false),
            ("a cart at a listed merchant", None, m.clone(), cart("shoes.example", None, &[None]), true),
            ("a cart elsewhere", None, m.clone(), cart("other.example", None, &[None]), false),
            ("a merchant is matched whole", None, m.clone(), cart("bigshoes.example", None, &[None]), false),
            ("searches have no merchant", None, m.clone(), search(Some("Apparel > Shoes")), false),
            ("both filters, both pass", c.clone(), m.clone(), cart("shoes.example", Some("Apparel > Shoes"), &[None]), true),
            ("both filters, one fails", c.clone(), m.clone(), cart("other.example", Some("Apparel > Shoes"), &[None]), false),
        ];
        for (name, categories, merchants, signal, admitted) in cases {
            let t = Terms { categories, merchants, ..terms() };
            let applied = t.evaluate(&SliceQuery::default(), NOW).unwrap();
            assert_eq!(applied.admits(&signal), admitted, "{name}");
        }
    }

    #[test]
    fn filters_travel_from_the_terms_to_the_scope_applied() {
        let bare = terms().evaluate(&SliceQuery::default(), NOW).unwrap();
        let json = serde_json::to_string(&bare).unwrap();
        assert!(!json.contains("categories") && !json.contains("merchants"), "absent filters are not written: {json}");
        let t = Terms { categories: Some(vec!["Toys".into()]), merchants: Some(vec!["toys.example".into()]), ..terms() };
        let applied = t.evaluate(&SliceQuery::default(), NOW).unwrap();
        assert_eq!((applied.categories.as_deref(), applied.merchants.as_deref()), (Some(&["Toys".to_string()][..]), Some(&["toys.example".to_string()][..])));
        // Caveats narrow other terms and keep the filters.
        let narrowed = t.narrow(&"kinds=cart".parse().unwrap()).unwrap();
        assert_eq!(narrowed.categories, t.categories);
        // Terms written before filters existed read as terms without them, and write back the same bytes.
        let old = r#"{"audience":"acme","kinds":["search"],"granularity":"raw","window":"30d","expires_at":"2027-01-01T00:00:00Z"}"#;
        let read: Terms = serde_json::from_str(old).unwrap();
        assert_eq!((read.categories.clone(), read.merchants.clone()), (None, None));
        assert_eq!(serde_json::to_string(&read).unwrap(), old);
    }

    #[test]
    fn rejects_unknown_caveats() {
        for text in [
            "colour=blue",
            "kinds",
            "kinds=",
            "window=forever",
            "expires=soon",
            "aud=",
            "aud=Partner Example",
            "aud=partner.example\u{202e}",
            "aud=\u{1b}[2Jx.example",
            "aud=Partner.example",
            "aud=localhost",
            "categories=",
            "categories=Apparel,",
            "categories=Apparel >",
            "categories= Apparel",
            "categories=Apparel >  Shoes",
            "categories=Food%2cDrink",
            "categories=Food%2",
            "categories=100%",
            "categories=Health%20Care",
            "categories=Apparel\u{202e}",
            "merchants=",
            "merchants=Shoes.example",
            "merchants=shoes.example,",
            "merchants=shoes.example/x",
            "merchants=localhost",
            "fields=",
            "fields=price",
            "fields=at",
            "fields=total",
            "fields=query,query",
            "rate=",
            "rate=0/day",
            "rate=1/week",
            "rate=2/Day",
        ] {
            assert!(text.parse::<Caveat>().is_err(), "{text}");
        }
    }

    #[test]
    fn filter_caveats_have_one_spelling() {
        // (as written, as it prints): a caveat reads in any order, prints in one.
        for (text, printed) in [
            ("categories=Apparel > Shoes", "categories=Apparel > Shoes"),
            ("categories=Toys,Apparel > Shoes,Toys", "categories=Apparel > Shoes,Toys"),
            ("categories=Food%2C Beverages & Tobacco", "categories=Food%2C Beverages & Tobacco"),
            ("categories=50%25 off > A%22B%5C", "categories=50%25 off > A%22B%5C"),
            ("merchants=trail.example,shoes.example", "merchants=shoes.example,trail.example"),
            ("fields=total,items.quantity,items.price", "fields=items.price,items.quantity,total"),
            ("rate=2/day", "rate=2/day"),
            ("rate=1/hour", "rate=1/hour"),
        ] {
            let caveat: Caveat = text.parse().unwrap();
            assert_eq!(caveat.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<Caveat>().unwrap(), caveat, "{printed} reads back");
        }
        let Ok(Caveat::Categories(paths)) = "categories=Food%2C Beverages & Tobacco,50%25 off".parse() else { panic!("parses") };
        assert_eq!(paths.into_iter().collect::<Vec<_>>(), ["50% off", "Food, Beverages & Tobacco"]);
    }

    /// Terms with the filters, fields and rate given (`None` for absent).
    fn filtered(categories: Option<&[&str]>, merchants: Option<&[&str]>, fields: Option<&[&str]>, rate: Option<&str>) -> Terms {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| (*s).to_owned()).collect());
        Terms { categories: list(categories), merchants: list(merchants), fields: list(fields), rate: rate.map(|r| r.parse().unwrap()), ..terms() }
    }

    #[test]
    fn filter_caveats_only_narrow() {
        let any = filtered(None, None, None, None);
        let shoes =
            filtered(Some(&["Apparel > Shoes", "Toys"]), Some(&["shoes.example", "toys.example"]), Some(&["items.name", "merchant", "query"]), Some("10/day"));
        // (terms, caveat, the terms it leaves, or None when it leaves nothing)
        let cases: Vec<(&Terms, &str, Option<Terms>)> = vec![
            (&any, "categories=Apparel", Some(filtered(Some(&["Apparel"]), None, None, None))),
            (
                &shoes,
                "categories=Apparel > Shoes > Running",
                Some(filtered(
                    Some(&["Apparel > Shoes > Running"]),
                    Some(&["shoes.example", "toys.example"]),
                    Some(&["items.name", "merchant", "query"]),
                    Some("10/day"),
                )),
            ),
            // A caveat path above a granted one keeps the granted one, never widens to it.
            (&shoes, "categories=Apparel", Some(Terms { categories: Some(vec!["Apparel > Shoes".into()]), ..shoes.clone() })),
            (
                &shoes,
                "categories=Apparel,Toys > Dolls",
                Some(Terms { categories: Some(vec!["Apparel > Shoes".into(), "Toys > Dolls".into()]), ..shoes.clone() }),
            ),
            (&shoes, "categories=Apparel > Shoes2", None),
            (&shoes, "categories=Health", None),
            (&any, "merchants=shoes.example", Some(filtered(None, Some(&["shoes.example"]), None, None))),
            (&shoes, "merchants=other.example,toys.example", Some(Terms { merchants: Some(vec!["toys.example".into()]), ..shoes.clone() })),
            (&shoes, "merchants=other.example", None),
            (
                &any,
                "fields=merchant,total,items.price,items.quantity",
                Some(filtered(None, None, Some(&["items.price", "items.quantity", "merchant", "total"]), None)),
            ),
            (&shoes, "fields=merchant,order_id", Some(Terms { fields: Some(vec!["merchant".into()]), ..shoes.clone() })),
            // Fields in common may be none: each item keeps only its kind, time and id.
            (&shoes, "fields=engine", Some(Terms { fields: Some(vec![]), ..shoes.clone() })),
            (&any, "rate=3/hour", Some(filtered(None, None, None, Some("3/hour")))),
            (&shoes, "rate=2/day", Some(Terms { rate: Some("2/day".parse().unwrap()), ..shoes.clone() })),
            (&shoes, "rate=100/day", Some(shoes.clone())),
            (&shoes, "rate=1/hour", Some(Terms { rate: Some("1/day".parse().unwrap()), ..shoes.clone() })),
        ];
        for (terms, caveat, expected) in cases {
            let c: Caveat = caveat.parse().unwrap();
            assert_eq!(terms.narrow(&c), expected, "{caveat}");
        }
    }

    #[test]
    fn narrowing_never_widens() {
        let caveats = [
            "categories=Apparel",
            "categories=Apparel > Shoes > Running,Toys",
            "categories=Health",
            "merchants=shoes.example",
            "merchants=other.example,toys.example",
            "fields=query",
            "fields=items.price,items.quantity,merchant,total",
            "rate=1/hour",
            "rate=5/day",
            "kinds=cart",
            "granularity=category",
        ];
        let grants = [
            filtered(None, None, None, None),
            filtered(Some(&["Apparel > Shoes", "Toys"]), Some(&["shoes.example", "toys.example"]), Some(&["items.name", "merchant", "query"]), Some("10/day")),
            filtered(Some(&["Apparel"]), None, Some(&["items.price", "items.quantity", "total"]), Some("2/hour")),
        ];
        let admitted = |t: &Terms, probe: &Signal| t.evaluate(&SliceQuery::default(), NOW).is_ok_and(|a| a.admits(probe));
        let probes: Vec<Signal> = [
            r#"{"kind":"search","query":"q","engine":"duckduckgo.com","category":"Apparel > Shoes > Running"}"#,
            r#"{"kind":"cart","merchant":"shoes.example","currency":"EUR","items":[{"name":"n","price":"1.00","quantity":1,"category":"Apparel > Shoes"}]}"#,
            r#"{"kind":"cart","merchant":"toys.example","currency":"EUR","category":"Toys","items":[]}"#,
            r#"{"kind":"cart","merchant":"other.example","currency":"EUR","category":"Health","items":[]}"#,
        ]
        .into_iter()
        .map(|j| signal(serde_json::from_str(j).unwrap()))
        .collect();
        // Every chain of up to three caveats over every grant: whatever the chain leaves
        // admits no signal, shares no field and allows no rate the grant did not.
        for grant in &grants {
            for a in &caveats {
                for b in &caveats {
                    for c in &caveats {
                        let chain: Vec<Caveat> = [a, b, c].iter().map(|t| t.parse().unwrap()).collect();
                        let Some(t) = chain.iter().try_fold(grant.clone(), |t, c| t.narrow(c)) else { continue };
                        let what = format!("{a}, {b}, {c}");
                        for probe in &probes {
                            assert!(!admitted(&t, probe) || admitted(grant, probe), "{what} admits what the grant does not");
                        }
                        if let Some(granted) = &grant.fields {
                            assert!(t.fields.as_ref().is_some_and(|f| f.iter().all(|x| granted.contains(x))), "{what} shares more fields");
                        }
                        if let Some(granted) = grant.rate {
                            assert!(t.rate.is_some_and(|r| r.is_within(granted)), "{what} allows a wider rate");
                        }
                        assert!(t.kinds.is_subset(&grant.kinds) && !t.granularity.is_finer_than(grant.granularity), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn fields_apply_at_raw_and_a_coarser_slice_needs_the_category_shared() {
        let t = filtered(None, None, Some(&["query"]), None);
        assert_eq!(t.evaluate(&SliceQuery::default(), NOW).unwrap().fields, Some(vec!["query".to_string()]));
        // A category item and a count show each signal's category, which these fields leave
        // out: asked for by the request or by a token's caveat, neither is cut.
        for g in [Granularity::Category, Granularity::Aggregate] {
            let coarse = SliceQuery { granularity: Some(g), ..SliceQuery::default() };
            assert!(matches!(t.evaluate(&coarse, NOW), Err(ScopeError::Exceeds { field: "granularity", .. })), "{g}");
            let by_caveat = t.narrow(&Caveat::Granularity(g)).unwrap();
            assert!(matches!(by_caveat.evaluate(&SliceQuery::default(), NOW), Err(ScopeError::Exceeds { field: "granularity", .. })), "a {g} caveat");
        }
        let with_category = filtered(None, None, Some(&["category", "query"]), None);
        let coarse = SliceQuery { granularity: Some(Granularity::Category), ..SliceQuery::default() };
        assert_eq!(with_category.evaluate(&coarse, NOW).unwrap().fields, None, "a coarser item shows no other field");
        assert_eq!(terms().evaluate(&SliceQuery::default(), NOW).unwrap().fields, None);
    }

    /// Terms at `granularity` of `kinds` with the fields given (`None` for every field).
    fn shown(granularity: Granularity, fields: Option<&[&str]>, kinds: &str) -> Terms {
        Terms { granularity, kinds: kinds.parse().unwrap(), ..filtered(None, None, fields, None) }
    }

    #[test]
    fn rejects_filter_caveats_that_read_a_field_the_items_do_not_show() {
        let categories: Caveat = "categories=Apparel".parse().unwrap();
        let merchants: Caveat = "merchants=shoes.example".parse().unwrap();
        let noise = crate::noise::Noise { epsilon: "0.5".parse().unwrap(), min_count: 5, budget: "3".parse().unwrap() };
        let noisy = Terms { noise: Some(noise), ..shown(Granularity::Aggregate, None, "search,cart") };
        // (terms after the caveats, the caveat, the field it would tell)
        let cases: Vec<(Terms, &Caveat, Option<&str>)> = vec![
            (shown(Granularity::Raw, None, "search,cart"), &categories, None),
            (shown(Granularity::Raw, None, "search,cart"), &merchants, None),
            (shown(Granularity::Raw, Some(&["merchant", "query"]), "search"), &categories, Some("category")),
            (shown(Granularity::Raw, Some(&["category", "query"]), "search"), &categories, None),
            (shown(Granularity::Raw, Some(&["category", "merchant"]), "search,cart"), &categories, Some("items.category")),
            (shown(Granularity::Raw, Some(&["category", "items.category"]), "search,cart"), &categories, None),
            (shown(Granularity::Raw, Some(&["category", "items.category"]), "cart"), &merchants, Some("merchant")),
            (shown(Granularity::Raw, Some(&[]), "search"), &categories, Some("category")),
            // A category item, and an exact count, show a signal's own category and nothing else.
            (shown(Granularity::Category, None, "search"), &categories, None),
            (shown(Granularity::Category, None, "search,cart"), &categories, Some("items.category")),
            (shown(Granularity::Category, None, "cart"), &merchants, Some("merchant")),
            (shown(Granularity::Aggregate, None, "cart"), &merchants, Some("merchant")),
            // Noisy counts: a new filter is a new answer, which spends the budget.
            (noisy, &merchants, None),
        ];
        for (terms, caveat, field) in cases {
            assert_eq!(terms.unshown_filter_field(std::slice::from_ref(caveat)), field, "{caveat} at {} with {:?}", terms.granularity, terms.fields);
        }
        let kinds: Caveat = "kinds=search".parse().unwrap();
        assert_eq!(shown(Granularity::Category, Some(&[]), "search").unshown_filter_field(&[kinds]), None, "other caveats read no field");
    }

    #[test]
    fn every_scope_withholds_by_default_and_applies_the_list_it_is_given() {
        // Terms read as a grant stores them, so members added later keep their defaults.
        let terms: Terms =
            serde_json::from_str(r#"{"audience":"acme","kinds":["search"],"granularity":"raw","window":"30d","expires_at":"2027-01-01T00:00:00Z"}"#).unwrap();
        let now = datetime!(2026-11-23 12:00 UTC);
        let applied = terms.evaluate(&SliceQuery::default(), now).unwrap();
        let search = |query: &str| {
            let v = serde_json::json!({"id": "x-1", "at": "2026-11-20T10:00:00Z", "kind": "search", "query": query, "engine": "bing.com"});
            Signal::from_stored_json(v.to_string().as_bytes()).unwrap()
        };
        assert!(applied.admits(&search("running shoes")));
        assert!(!applied.admits(&search("payday loans")), "a scope nobody filled in withholds every shipped topic");
        let included = crate::sensitive::NeverShare { included: ["financial-hardship".to_owned()].into(), ..crate::sensitive::NeverShare::default() };
        let applied = Applied { never_share: included, ..applied };
        assert!(applied.admits(&search("payday loans")));
        assert!(!applied.admits(&search("payday loans after divorce")), "every topic matched must be included");
        // The list is the person's: a slice's scope does not show it.
        let json = serde_json::to_value(&applied).unwrap();
        assert!(json.get("never_share").is_none() && !json.to_string().contains("financial"), "{json}");
    }
}
