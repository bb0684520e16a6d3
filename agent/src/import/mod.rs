//! Reads searches from a browser's own history database (`optin import`).
//!
//! This module only reads: it finds the profile ([`default_profile`]), copies the database
//! into a private temporary directory and opens the copy (`snapshot`), reads the visits in
//! the browser's own schema (`chromium`, `firefox`) and returns the searches it finds. The
//! caller decides what to store.
//!
//! What counts as a search:
//! - Chromium and Chrome: visits whose URL matches the shared engine rules
//!   ([`engines`]), and visits of URLs the browser itself recorded in
//!   `keyword_search_terms` (searches through any search engine registered in the browser,
//!   including ones the rules do not know). A visit found both ways counts once.
//! - Firefox: visits whose URL matches the engine rules (Firefox keeps no search-terms
//!   table).
//!
//! Each search gets an id derived from the browser, the URL and the visit time, so importing
//! the same history twice yields the same ids and the store can drop the repeats.
//!
//! The parts depend on each other in one direction only: this module uses all of them;
//! `chromium` and `firefox` use `snapshot`, `visit` and `error`; `profile` and `snapshot`
//! use `error`; `engines`, `visit` and `error` use none of the others.

use std::collections::HashSet;
use std::path::Path;

mod chromium;
pub mod engines;
mod error;
mod firefox;
mod profile;
mod snapshot;
mod visit;

#[cfg(test)]
mod tests;

use time::OffsetDateTime;

pub use crate::browser::Browser;
use engines::{clean_query, search_host, Engines};
pub use error::HistoryError;
pub use profile::default_profile;
use snapshot::Snapshot;

/// The `source` recorded on searches imported from `browser`.
pub fn source(browser: Browser) -> &'static str {
    match browser {
        Browser::Chrome => "chrome-history",
        Browser::Chromium => "chromium-history",
        Browser::Firefox => "firefox-history",
    }
}

/// The history database's file name inside a profile directory.
pub fn database_name(browser: Browser) -> &'static str {
    match browser {
        Browser::Chrome | Browser::Chromium => "History",
        Browser::Firefox => "places.sqlite",
    }
}

/// One search found in a browser's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySearch {
    /// `h-` and 32 hex digits; the same for the same visit on every import.
    pub id: String,
    /// When the search page was visited.
    pub at: OffsetDateTime,
    /// The search text, trimmed and bounded like live searches.
    pub query: String,
    /// The engine's domain, e.g. `google.com`.
    pub engine: String,
    /// `chrome-history`, `chromium-history` or `firefox-history`.
    pub source: &'static str,
}

/// Reads the searches in a profile's history, oldest first.
///
/// `since` drops visits before that instant. Only a private copy of the database is
/// opened, never the browser's file.
pub fn read_searches(browser: Browser, profile: &Path, since: Option<OffsetDateTime>, engines: &Engines) -> Result<Vec<HistorySearch>, HistoryError> {
    if !profile.is_dir() {
        return Err(HistoryError::ProfileNotFound { path: profile.to_owned() });
    }
    let db = profile.join(database_name(browser));
    if !db.is_file() {
        return Err(HistoryError::DatabaseNotFound { path: db });
    }
    let snapshot = Snapshot::take(&db)?;
    let visits = match browser {
        Browser::Chrome | Browser::Chromium => chromium::visits(&snapshot, browser, since)?,
        Browser::Firefox => firefox::visits(&snapshot, since)?,
    };
    drop(snapshot);

    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for v in visits {
        // A rules match wins over the browser's own term: the extension records live searches
        // from the URL the same way, so both paths give the same engine and text.
        let hit = engines.match_url(&v.url).map(|h| (h.engine, h.query)).or_else(|| {
            let term = clean_query(v.keyword_term.as_deref()?)?;
            Some((search_host(&v.url)?, term))
        });
        let Some((engine, query)) = hit else { continue };
        let id = search_id(browser, &v.url, v.raw_time);
        // Chromium writes every visit of a redirect chain with the same time; if two of them
        // had the same URL they would be one search.
        if !seen.insert(id.clone()) {
            continue;
        }
        out.push(HistorySearch { id, at: v.at, query, engine, source: source(browser) });
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// `h-` + the first 32 hex digits of SHA-256(browser | url | raw visit time).
fn search_id(browser: Browser, url: &str, raw_time: i64) -> String {
    let input = format!("{}|{}|{}", browser.name(), url, raw_time);
    // A SHA-256 digest is 32 bytes, so the first 16 always exist.
    format!("h-{}", optin_protocol::hex(&optin_protocol::sha256(input.as_bytes())[..16]))
}
