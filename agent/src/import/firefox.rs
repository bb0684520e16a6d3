//! Firefox: which visits in a `places.sqlite` database count, and when they were.

use time::OffsetDateTime;

use super::error::HistoryError;
use super::snapshot::{integer, text, Snapshot};
use super::visit::{self, Visit};
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

/// The visits that count, oldest first. Firefox keeps no search-terms table, so no visit
/// carries a term.
pub(super) fn visits(db: &Snapshot, since: Option<OffsetDateTime>) -> Result<Vec<Visit>, HistoryError> {
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
         WHERE v.visit_date >= ?1 AND p.hidden = 0 \
           AND v.visit_type NOT IN ({EMBED}, {DOWNLOAD}, {FRAMED_LINK}, {RELOAD}) \
           AND NOT EXISTS (SELECT 1 FROM moz_historyvisits r WHERE r.from_visit = v.id \
                           AND r.visit_type IN ({REDIRECT_PERMANENT}, {REDIRECT_TEMPORARY})) \
         ORDER BY v.visit_date, v.id"
    );
    db.rows(&sql, visit::stored_since(since, EPOCH_US), |row| {
        let (Some(url), Some(raw_time)) = (text(row.get_ref(0)?), integer(row.get_ref(1)?)) else {
            return Ok(None);
        };
        let Some(at) = visit::instant(raw_time, EPOCH_US) else {
            return Ok(None);
        };
        Ok(Some(Visit { url, raw_time, at, keyword_term: None }))
    })
}
