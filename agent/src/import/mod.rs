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
//! A row that cannot be read (a NULL or non-UTF-8 URL, a time out of range, a search the
//! agent would refuse) is skipped and counted by reason ([`row::Skip`]); it never ends the
//! import. Turning one row's values into a search is one pure function, [`row::search`].
//!
//! The parts depend on each other in one direction only: this module uses all of them;
//! `chromium` and `firefox` use `snapshot`, `row`, `visit` and `error`; `row` uses
//! `engines` and `visit` (and this module's [`HistorySearch`]); `profile` and `snapshot`
//! use `error`; `engines`, `visit` and `error` use none of the others.

use std::collections::HashSet;
use std::path::Path;

mod chromium;
pub mod engines;
mod error;
mod firefox;
mod profile;
pub mod row;
mod snapshot;
mod visit;

#[cfg(test)]
mod tests;

use time::OffsetDateTime;

pub use crate::browser::Browser;
use engines::Engines;
pub use error::HistoryError;
pub use profile::default_profile;
use row::Skipped;
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

impl HistorySearch {
    /// The search as one NDJSON line (without the newline), as the agent ingests it.
    pub fn ndjson(&self) -> String {
        let line = serde_json::json!({
            "id": self.id,
            "kind": "search",
            "at": optin_protocol::timestamp::format(self.at),
            "query": self.query,
            "engine": self.engine,
            "source": self.source,
        });
        line.to_string()
    }
}

/// What a history holds: its searches, oldest first, and the rows that could not be read.
#[derive(Debug, Default)]
pub struct Found {
    /// Each search once.
    pub searches: Vec<HistorySearch>,
    /// The rows skipped, counted by reason.
    pub skipped: Skipped,
}

/// Reads the searches in a profile's history, oldest first, and counts the rows skipped.
///
/// `since` drops visits before that instant. Only a private copy of the database is
/// opened, never the browser's file.
pub fn read_searches(browser: Browser, profile: &Path, since: Option<OffsetDateTime>, engines: &Engines) -> Result<Found, HistoryError> {
    if !profile.is_dir() {
        return Err(HistoryError::ProfileNotFound { path: profile.to_owned() });
    }
    let db = profile.join(database_name(browser));
    if !db.is_file() {
        return Err(HistoryError::DatabaseNotFound { path: db });
    }
    let snapshot = Snapshot::take(&db)?;
    let rows = match browser {
        Browser::Chrome | Browser::Chromium => chromium::searches(&snapshot, browser, since, engines)?,
        Browser::Firefox => firefox::searches(&snapshot, since, engines)?,
    };
    drop(snapshot);

    let mut seen = HashSet::new();
    let mut found = Found::default();
    for row in rows {
        match row {
            // Chromium writes every visit of a redirect chain with the same time; if two of
            // them had the same URL they would be one search.
            Ok(search) => {
                if seen.insert(search.id.clone()) {
                    found.searches.push(search);
                }
            }
            Err(why) => found.skipped.add(why),
        }
    }
    found.searches.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Ok(found)
}
