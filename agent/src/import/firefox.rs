//! Firefox: which visits in a `places.sqlite` database count, and when they were.

use time::OffsetDateTime;

use rusqlite::types::ValueRef;

use super::engines::Engines;
use super::error::HistoryError;
use super::row::{self, Row, Skip};
use super::snapshot::Snapshot;
use super::{visit, HistorySearch};
use crate::browser::Browser;

/// Firefox counts visit times from 1970-01-01.
pub(super) const EPOCH_US: i64 = 0;

// Visit types (nsINavHistoryService.idl).
pub(super) const EMBED: i64 = 4;
pub(super) const REDIRECT_PERMANENT: i64 = 5;
pub(super) const REDIRECT_TEMPORARY: i64 = 6;
pub(super) const DOWNLOAD: i64 = 7;
pub(super) const FRAMED_LINK: i64 = 8;
pub(super) const RELOAD: i64 = 9;

/// What each visit that counts holds, oldest first: a search, or why the row was skipped.
/// Firefox keeps no search-terms table, so no visit carries a term.
pub(super) fn searches(db: &Snapshot, since: Option<OffsetDateTime>, engines: &Engines) -> Result<Vec<Result<HistorySearch, Skip>>, HistoryError> {
    let browser = Browser::Firefox;
    db.require_columns(browser, "moz_places", &["id", "url", "hidden"])?;
    db.require_columns(browser, "moz_historyvisits", &["id", "from_visit", "place_id", "visit_date", "visit_type"])?;
    // Skipped, for the reasons given for Chromium: frames (EMBED, FRAMED_LINK), reloads,
    // downloads, and hops that redirected onward. Firefox records a redirect as a visit of
    // the source followed by a REDIRECT_* visit of the target whose from_visit points back,
    // and hides the source place; the target is the page shown and is kept.
    let sql = format!(
        "SELECT p.url, v.visit_date, v.visit_type \
         FROM moz_historyvisits v JOIN moz_places p ON p.id = v.place_id \
         WHERE (v.visit_date >= ?1 OR v.visit_date IS NULL) AND p.hidden = 0 \
           AND v.visit_type NOT IN ({EMBED}, {DOWNLOAD}, {FRAMED_LINK}, {RELOAD}) \
           AND NOT EXISTS (SELECT 1 FROM moz_historyvisits r WHERE r.from_visit = v.id \
                           AND r.visit_type IN ({REDIRECT_PERMANENT}, {REDIRECT_TEMPORARY})) \
         ORDER BY v.visit_date, v.id"
    );
    db.rows(&sql, visit::stored_since(since, EPOCH_US), |row| {
        let values = Row { url: row.get_ref(0)?, time: row.get_ref(1)?, term: ValueRef::Null };
        Ok(row::search(browser, &values, engines).transpose())
    })
}
