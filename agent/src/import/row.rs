//! One history row to one search: the pure step of the import, on the values SQLite
//! returned, with no database in sight.
//!
//! A history database is written by another program and may hold anything: SQLite does not
//! enforce column types, a profile can be damaged or edited by hand, and synced rows come
//! from other machines. So every row is read here into a search, into nothing (most visits
//! are not searches), or into a [`Skip`] saying why it could not be used. A bad row costs
//! that row, never the import, and the person is told how many rows were skipped and why,
//! by reason only: a row's content is never shown, because it is text from outside that a
//! terminal could take for commands.

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::types::ValueRef;

use super::engines::{clean_query, search_host, Engines};
use super::{chromium, firefox, source, visit, HistorySearch};
use crate::browser::Browser;

/// The values of one row that make a search, as SQLite returned them.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// The page's address (`urls.url`, `moz_places.url`).
    pub url: ValueRef<'a>,
    /// The visit time, microseconds from the browser's epoch.
    pub time: ValueRef<'a>,
    /// The term the browser stored for the URL, if any (Chromium only; Firefox passes
    /// [`ValueRef::Null`]).
    pub term: ValueRef<'a>,
}

/// Why a row was skipped. The reasons are a fixed set, so a summary of them is bounded and
/// holds nothing read from the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Skip {
    /// The URL is NULL.
    NoUrl,
    /// The URL is stored as a number or a blob.
    UrlNotText,
    /// The URL is text but not UTF-8.
    UrlNotUtf8,
    /// The search term is stored but is not UTF-8 text (the URL alone is not a search).
    TermNotText,
    /// The visit time is NULL or not an integer.
    NoTime,
    /// The visit time is before 1970 or after 9999.
    TimeOutOfRange,
    /// The search breaks a rule every signal must keep (e.g. the engine's host is not a
    /// domain name); the agent would refuse it.
    NotASignal,
}

impl Skip {
    /// A short name for JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Skip::NoUrl => "no-url",
            Skip::UrlNotText => "url-not-text",
            Skip::UrlNotUtf8 => "url-not-utf8",
            Skip::TermNotText => "term-not-text",
            Skip::NoTime => "no-time",
            Skip::TimeOutOfRange => "time-out-of-range",
            Skip::NotASignal => "not-a-signal",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::NoUrl => "no URL",
            Skip::UrlNotText => "a URL that is not text",
            Skip::UrlNotUtf8 => "a URL that is not UTF-8",
            Skip::TermNotText => "a search term that is not UTF-8 text",
            Skip::NoTime => "no visit time",
            Skip::TimeOutOfRange => "a visit time out of range",
            Skip::NotASignal => "a search the agent would refuse",
        })
    }
}

/// How many rows were skipped, per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped(BTreeMap<Skip, usize>);

impl Skipped {
    /// Counts one more row skipped for `why`.
    pub fn add(&mut self, why: Skip) {
        *self.0.entry(why).or_default() += 1;
    }

    /// All rows skipped.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Each reason with its count, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (Skip, usize)> + '_ {
        self.0.iter().map(|(why, n)| (*why, *n))
    }
}

/// The search in one row: `Ok(None)` when the row is a visit but not a search, `Err` when it
/// cannot be read. Checks what it needs in the order that skips the fewest rows: a URL no
/// rule matches and with no stored term is not a search, whatever its time says.
pub fn search(browser: Browser, row: &Row<'_>, engines: &Engines) -> Result<Option<HistorySearch>, Skip> {
    let url = match row.url {
        ValueRef::Null => return Err(Skip::NoUrl),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).map_err(|_| Skip::UrlNotUtf8)?,
        ValueRef::Integer(_) | ValueRef::Real(_) | ValueRef::Blob(_) => return Err(Skip::UrlNotText),
    };
    // A rules match wins over the browser's own term: the extension records live searches
    // from the URL the same way, so both paths give the same engine and text.
    let hit = match engines.match_url(url) {
        Some(hit) => Some((hit.engine, hit.query)),
        None => {
            let term = match row.term {
                ValueRef::Null => None,
                ValueRef::Text(bytes) => Some(std::str::from_utf8(bytes).map_err(|_| Skip::TermNotText)?),
                ValueRef::Integer(_) | ValueRef::Real(_) | ValueRef::Blob(_) => return Err(Skip::TermNotText),
            };
            term.and_then(clean_query).and_then(|query| Some((search_host(url)?, query)))
        }
    };
    let Some((engine, query)) = hit else { return Ok(None) };
    let ValueRef::Integer(raw_time) = row.time else { return Err(Skip::NoTime) };
    let epoch = match browser {
        Browser::Chrome | Browser::Chromium => chromium::EPOCH_US,
        Browser::Firefox => firefox::EPOCH_US,
    };
    let at = visit::instant(raw_time, epoch).ok_or(Skip::TimeOutOfRange)?;
    let found = HistorySearch { id: search_id(browser, url, raw_time), at, query, engine, source: source(browser) };
    // The agent validates every signal it is given and refuses a batch for one bad line;
    // checked here with the same rules, a search it would refuse costs only its own row.
    optin_protocol::signal::parse_line(&found.ndjson(), &crate::merchant::registrable).map_err(|_| Skip::NotASignal)?;
    Ok(Some(found))
}

/// `h-` + the first 32 hex digits of SHA-256(browser | url | raw visit time).
pub(super) fn search_id(browser: Browser, url: &str, raw_time: i64) -> String {
    let input = format!("{}|{}|{}", browser.name(), url, raw_time);
    // A SHA-256 digest is 32 bytes, so the first 16 always exist.
    format!("h-{}", optin_protocol::hex(&optin_protocol::sha256(input.as_bytes())[..16]))
}
