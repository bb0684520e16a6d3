//! Chromium and Chrome: which visits in a `History` database count, and when they were.

use time::OffsetDateTime;

use super::engines::Engines;
use super::error::HistoryError;
use super::row::{self, Row, Skip};
use super::snapshot::{integer, Snapshot};
use super::{visit, HistorySearch};
use crate::browser::Browser;

/// Microseconds from 1601-01-01 (Chromium's epoch) to 1970-01-01.
pub(super) const EPOCH_US: i64 = 11_644_473_600_000_000;

// Page transitions (ui/base/page_transition_types.h).
const CORE_MASK: i64 = 0xFF;
pub(super) const AUTO_SUBFRAME: i64 = 3;
pub(super) const MANUAL_SUBFRAME: i64 = 4;
pub(super) const RELOAD: i64 = 8;
pub(super) const CHAIN_START: i64 = 0x1000_0000;
pub(super) const CHAIN_END: i64 = 0x2000_0000;
const CLIENT_REDIRECT: i64 = 0x4000_0000;
pub(super) const SERVER_REDIRECT: i64 = 0x8000_0000;

/// Whether a visit is a page the person actually had in front of them.
///
/// Skipped: subframes (frames inside a page, often ads, not something the person
/// searched); reloads (the same search again, not a new one); and visits that redirected
/// onward. A redirect chain is stored as one visit per hop, all with the same time: the hop
/// marked CHAIN_END is the page shown, the others (a CHAIN_START without CHAIN_END, or a
/// redirect hop in the middle) would count the same search twice. Chromium's HTTPS upgrade
/// produces such chains for every typed http address. Visits with no chain bits at all
/// (older or synced rows) are kept.
fn visit_counts(transition: i64) -> bool {
    let core = transition & CORE_MASK;
    if matches!(core, AUTO_SUBFRAME | MANUAL_SUBFRAME | RELOAD) {
        return false;
    }
    let redirect_hop = transition & (CHAIN_START | CLIENT_REDIRECT | SERVER_REDIRECT) != 0;
    transition & CHAIN_END != 0 || !redirect_hop
}

/// What each visit that counts holds, oldest first: a search, or why the row was skipped.
/// Visits that are not searches are left out.
pub(super) fn searches(
    db: &Snapshot,
    browser: Browser,
    since: Option<OffsetDateTime>,
    engines: &Engines,
) -> Result<Vec<Result<HistorySearch, Skip>>, HistoryError> {
    db.require_columns(browser, "urls", &["id", "url", "hidden"])?;
    db.require_columns(browser, "visits", &["id", "url", "visit_time", "transition"])?;
    db.require_columns(browser, "keyword_search_terms", &["keyword_id", "url_id", "term"])?;
    // `hidden` marks URLs only ever seen in subframes; the transition check below catches
    // the same visits, this catches rows whose transition was lost. A visit without a time
    // is read too, so that it is counted as skipped rather than silently missing.
    let sql = "SELECT u.url, v.visit_time, v.transition, \
                      (SELECT k.term FROM keyword_search_terms k \
                        WHERE k.url_id = u.id ORDER BY k.keyword_id LIMIT 1) \
               FROM visits v JOIN urls u ON u.id = v.url \
               WHERE (v.visit_time >= ?1 OR v.visit_time IS NULL) AND u.hidden = 0 \
               ORDER BY v.visit_time, v.id";
    db.rows(sql, visit::stored_since(since, EPOCH_US), |row| {
        // A transition that is not an integer is read as a plain link: it says nothing
        // against the visit, and the rest of the row may still be a search.
        let transition = integer(row.get_ref(2)?).unwrap_or(0);
        if !visit_counts(transition) {
            return Ok(None);
        }
        let values = Row { url: row.get_ref(0)?, time: row.get_ref(1)?, term: row.get_ref(3)? };
        Ok(row::search(browser, &values, engines).transpose())
    })
}
