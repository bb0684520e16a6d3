//! Reads searches from a browser's own history database (`optin import`).
//!
//! This module only reads: it finds the profile, copies the database into a private
//! temporary directory, reads the copy and returns the searches it finds. The
//! caller decides what to store. The browser's files are never opened by SQLite: a running
//! browser holds locks on them, and SQLite opening a file with a hot journal or WAL would
//! write to it while recovering.
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

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub mod engines;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use time::OffsetDateTime;

pub use crate::browser::Browser;
use engines::{clean_query, search_host, Engines};

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

/// Why a history could not be read. Each variant names the file or directory at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error("no browser profile at {}", path.display())]
    ProfileNotFound { path: PathBuf },
    #[error("cannot pick a firefox profile from {}: {problem}", path.display())]
    FirefoxProfiles { path: PathBuf, problem: String },
    #[error("no history database at {}", path.display())]
    DatabaseNotFound { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a readable history database: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{} does not look like a {browser} history database: {detail}", path.display())]
    UnexpectedSchema { path: PathBuf, browser: Browser, detail: String },
    #[error("{} is locked by another program; close the browser and try again", path.display())]
    Locked { path: PathBuf },
}

/// Where the browser keeps its default profile on Linux, for a user whose home is `home`.
///
/// For Firefox this reads `profiles.ini` (in `~/.mozilla/firefox`, or in
/// `~/.config/mozilla/firefox` where newer releases put new profiles) and picks the profile
/// the installed Firefox uses: the `Default=` of the first `[Install…]` section, else the
/// profile marked `Default=1`, else the only profile.
pub fn default_profile(browser: Browser, home: &Path) -> Result<PathBuf, HistoryError> {
    let profile = match browser {
        Browser::Chromium => home.join(".config/chromium/Default"),
        Browser::Chrome => home.join(".config/google-chrome/Default"),
        Browser::Firefox => firefox_default_profile(home)?,
    };
    if !profile.is_dir() {
        return Err(HistoryError::ProfileNotFound { path: profile });
    }
    Ok(profile)
}

fn firefox_default_profile(home: &Path) -> Result<PathBuf, HistoryError> {
    // The legacy location wins when both exist, as it does for Firefox itself: a profile
    // created before the move to XDG directories stays where it is.
    let roots = [home.join(".mozilla/firefox"), home.join(".config/mozilla/firefox")];
    let Some(root) = roots.iter().find(|r| r.join("profiles.ini").is_file()) else {
        return Err(HistoryError::FirefoxProfiles {
            path: roots[0].join("profiles.ini"),
            problem: "file not found (is Firefox installed? pass --profile)".into(),
        });
    };
    let ini_path = root.join("profiles.ini");
    let text = fs::read(&ini_path).map_err(|source| HistoryError::Io { path: ini_path.clone(), source })?;
    let problem = |problem: &str| HistoryError::FirefoxProfiles { path: ini_path.clone(), problem: problem.to_owned() };
    let sections = parse_ini(&String::from_utf8_lossy(&text));

    let profiles: Vec<&IniSection> = sections
        .iter()
        .filter(|s| s.name.strip_prefix("Profile").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|s| s.get("Path").is_some_and(|p| !p.is_empty()))
        .collect();
    let resolve = |path: &str, relative: bool| {
        if relative {
            root.join(path)
        } else {
            PathBuf::from(path)
        }
    };
    let is_relative = |s: &IniSection| s.get("IsRelative").is_some_and(|v| v.trim() == "1");

    let install_default = sections.iter().filter(|s| s.name.starts_with("Install")).find_map(|s| s.get("Default").filter(|d| !d.is_empty()));
    if let Some(path) = install_default {
        // The install section names a profile by its Path; the matching profile section says
        // whether that path is relative. Without one, relative unless it is absolute.
        let relative = profiles.iter().find(|p| p.get("Path") == Some(path)).map_or(!Path::new(path).is_absolute(), |p| is_relative(p));
        return Ok(resolve(path, relative));
    }
    let chosen = match profiles.iter().find(|p| p.get("Default").is_some_and(|v| v.trim() == "1")) {
        Some(p) => p,
        None => match profiles.as_slice() {
            [only] => only,
            [] => return Err(problem("it lists no profiles")),
            _ => return Err(problem("several profiles and none is the default; pass --profile")),
        },
    };
    // `profiles` only holds sections with a Path, so this lookup cannot fail; fall back to
    // an error rather than assume it.
    let path = chosen.get("Path").ok_or_else(|| problem("profile without Path"))?;
    Ok(resolve(path, is_relative(chosen)))
}

struct IniSection {
    name: String,
    entries: Vec<(String, String)>,
}

impl IniSection {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A forgiving INI reader: enough for `profiles.ini`, never failing on odd lines.
fn parse_ini(text: &str) -> Vec<IniSection> {
    let mut sections: Vec<IniSection> = Vec::new();
    for line in text.trim_start_matches('\u{FEFF}').lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(IniSection { name: name.trim().to_owned(), entries: Vec::new() });
        } else if let (Some(section), Some((k, v))) = (sections.last_mut(), line.split_once('=')) {
            section.entries.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    sections
}

/// Reads the searches in a profile's history, oldest first.
///
/// `since` drops visits before that instant. Only the copy of the database is opened.
pub fn read_searches(browser: Browser, profile: &Path, since: Option<OffsetDateTime>, engines: &Engines) -> Result<Vec<HistorySearch>, HistoryError> {
    if !profile.is_dir() {
        return Err(HistoryError::ProfileNotFound { path: profile.to_owned() });
    }
    let db = profile.join(database_name(browser));
    if !db.is_file() {
        return Err(HistoryError::DatabaseNotFound { path: db });
    }
    let scratch = ScratchDir::create().map_err(|source| HistoryError::Io { path: std::env::temp_dir(), source })?;
    let copy = copy_database(&db, scratch.path())?;
    let conn = open_copy(&db, &copy)?;
    let visits = match browser {
        Browser::Chrome | Browser::Chromium => chromium_visits(&conn, &db, browser, since)?,
        Browser::Firefox => firefox_visits(&conn, &db, since)?,
    };
    drop(conn);
    drop(scratch);

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
        let Some(at) = browser_time(browser, v.time) else {
            continue;
        };
        let id = search_id(browser, &v.url, v.time);
        // Chromium writes every visit of a redirect chain with the same time; if two of them
        // had the same URL they would be one search.
        if !seen.insert(id.clone()) {
            continue;
        }
        out.push(HistorySearch { id, at, query, engine, source: source(browser) });
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// A visit that may be a search, as read from the database.
struct Visit {
    url: String,
    /// The browser's own time value (see [`browser_time`]).
    time: i64,
    /// The term Chromium recorded for the URL, if any.
    keyword_term: Option<String>,
}

/// Microseconds from 1601-01-01 (Chromium's epoch) to 1970-01-01.
const CHROMIUM_EPOCH_OFFSET_US: i64 = 11_644_473_600_000_000;

/// The instant of a stored visit time; `None` for values no real visit has.
fn browser_time(browser: Browser, raw: i64) -> Option<OffsetDateTime> {
    let unix_us = match browser {
        Browser::Chrome | Browser::Chromium => raw.checked_sub(CHROMIUM_EPOCH_OFFSET_US)?,
        Browser::Firefox => raw,
    };
    if unix_us <= 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_us) * 1000).ok()
}

/// `since` in the browser's own time unit, for filtering in SQL.
fn browser_since(browser: Browser, since: Option<OffsetDateTime>) -> i64 {
    let Some(since) = since else { return i64::MIN };
    let unix_us = since.unix_timestamp_nanos().div_euclid(1000);
    let raw = match browser {
        Browser::Chrome | Browser::Chromium => unix_us.saturating_add(i128::from(CHROMIUM_EPOCH_OFFSET_US)),
        Browser::Firefox => unix_us,
    };
    i64::try_from(raw).unwrap_or(if raw < 0 { i64::MIN } else { i64::MAX })
}

/// `h-` + the first 32 hex digits of SHA-256(browser | url | raw visit time).
fn search_id(browser: Browser, url: &str, raw_time: i64) -> String {
    let input = format!("{}|{}|{}", browser.name(), url, raw_time);
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let mut id = String::with_capacity(34);
    id.push_str("h-");
    // A SHA-256 digest is 32 bytes, so the first 16 always exist.
    for b in &digest.as_ref()[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

// Chromium page transitions (ui/base/page_transition_types.h).
const CORE_MASK: i64 = 0xFF;
const AUTO_SUBFRAME: i64 = 3;
const MANUAL_SUBFRAME: i64 = 4;
const RELOAD: i64 = 8;
const CHAIN_START: i64 = 0x1000_0000;
const CHAIN_END: i64 = 0x2000_0000;
const CLIENT_REDIRECT: i64 = 0x4000_0000;
const SERVER_REDIRECT: i64 = 0x8000_0000;

/// Whether a Chromium visit is a page the person actually had in front of them.
///
/// Skipped: subframes (frames inside a page, often ads, not something the person
/// searched); reloads (the same search again, not a new one); and visits that redirected
/// onward. A redirect chain is stored as one visit per hop, all with the same time: the hop
/// marked CHAIN_END is the page shown, the others (a CHAIN_START without CHAIN_END, or a
/// redirect hop in the middle) would count the same search twice. Chromium's HTTPS upgrade
/// produces such chains for every typed http address. Visits with no chain bits at all
/// (older or synced rows) are kept.
fn chromium_visit_counts(transition: i64) -> bool {
    let core = transition & CORE_MASK;
    if matches!(core, AUTO_SUBFRAME | MANUAL_SUBFRAME | RELOAD) {
        return false;
    }
    let redirect_hop = transition & (CHAIN_START | CLIENT_REDIRECT | SERVER_REDIRECT) != 0;
    transition & CHAIN_END != 0 || !redirect_hop
}

fn chromium_visits(conn: &Connection, db: &Path, browser: Browser, since: Option<OffsetDateTime>) -> Result<Vec<Visit>, HistoryError> {
    require_columns(conn, db, browser, "urls", &["id", "url", "hidden"])?;
    require_columns(conn, db, browser, "visits", &["id", "url", "visit_time", "transition"])?;
    require_columns(conn, db, browser, "keyword_search_terms", &["keyword_id", "url_id", "term"])?;
    // `hidden` marks URLs only ever seen in subframes; the transition check below catches
    // the same visits, this catches rows whose transition was lost.
    let sql = "SELECT u.url, v.visit_time, v.transition, \
                      (SELECT k.term FROM keyword_search_terms k \
                        WHERE k.url_id = u.id ORDER BY k.keyword_id LIMIT 1) \
               FROM visits v JOIN urls u ON u.id = v.url \
               WHERE v.visit_time >= ?1 AND u.hidden = 0 \
               ORDER BY v.visit_time, v.id";
    let since = browser_since(browser, since);
    collect_visits(conn, db, sql, since, |row| {
        let transition = integer(row.get_ref(2)?).unwrap_or(0);
        if !chromium_visit_counts(transition) {
            return Ok(None);
        }
        let (Some(url), Some(time)) = (text(row.get_ref(0)?), integer(row.get_ref(1)?)) else {
            return Ok(None);
        };
        Ok(Some(Visit { url, time, keyword_term: text(row.get_ref(3)?) }))
    })
}

// Firefox visit types (nsINavHistoryService.idl).
const FF_EMBED: i64 = 4;
const FF_REDIRECT_PERMANENT: i64 = 5;
const FF_REDIRECT_TEMPORARY: i64 = 6;
const FF_DOWNLOAD: i64 = 7;
const FF_FRAMED_LINK: i64 = 8;
const FF_RELOAD: i64 = 9;

fn firefox_visits(conn: &Connection, db: &Path, since: Option<OffsetDateTime>) -> Result<Vec<Visit>, HistoryError> {
    let browser = Browser::Firefox;
    require_columns(conn, db, browser, "moz_places", &["id", "url", "hidden"])?;
    require_columns(conn, db, browser, "moz_historyvisits", &["id", "from_visit", "place_id", "visit_date", "visit_type"])?;
    // Skipped, for the reasons given for Chromium: frames (EMBED, FRAMED_LINK), reloads,
    // downloads, and hops that redirected onward. Firefox records a redirect as a visit of
    // the source followed by a REDIRECT_* visit of the target whose from_visit points back,
    // and hides the source place; the target is the page shown and is kept.
    let sql = format!(
        "SELECT p.url, v.visit_date, v.visit_type \
         FROM moz_historyvisits v JOIN moz_places p ON p.id = v.place_id \
         WHERE v.visit_date >= ?1 AND p.hidden = 0 \
           AND v.visit_type NOT IN ({FF_EMBED}, {FF_DOWNLOAD}, {FF_FRAMED_LINK}, {FF_RELOAD}) \
           AND NOT EXISTS (SELECT 1 FROM moz_historyvisits r WHERE r.from_visit = v.id \
                           AND r.visit_type IN ({FF_REDIRECT_PERMANENT}, {FF_REDIRECT_TEMPORARY})) \
         ORDER BY v.visit_date, v.id"
    );
    let since = browser_since(browser, since);
    collect_visits(conn, db, &sql, since, |row| {
        let (Some(url), Some(time)) = (text(row.get_ref(0)?), integer(row.get_ref(1)?)) else {
            return Ok(None);
        };
        Ok(Some(Visit { url, time, keyword_term: None }))
    })
}

/// Runs `sql` with `since` as its one parameter and keeps the rows `row_visit` accepts.
///
/// SQLite does not enforce column types, so rows are read through `ValueRef` and a row
/// with an unexpected type is skipped rather than failing the whole import.
fn collect_visits(
    conn: &Connection,
    db: &Path,
    sql: &str,
    since: i64,
    mut row_visit: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<Option<Visit>>,
) -> Result<Vec<Visit>, HistoryError> {
    let sqlite = |e| sqlite_error(db, e);
    let mut stmt = conn.prepare(sql).map_err(sqlite)?;
    let mut rows = stmt.query([since]).map_err(sqlite)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite)? {
        if let Some(v) = row_visit(row).map_err(sqlite)? {
            out.push(v);
        }
    }
    Ok(out)
}

fn integer(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_owned),
        _ => None,
    }
}

/// Fails with [`HistoryError::UnexpectedSchema`] unless `table` has all of `columns`.
fn require_columns(conn: &Connection, db: &Path, browser: Browser, table: &str, columns: &[&str]) -> Result<(), HistoryError> {
    let sqlite = |e| sqlite_error(db, e);
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)").map_err(sqlite)?;
    let present = stmt.query_map([table], |row| row.get::<_, String>(0)).map_err(sqlite)?.collect::<Result<HashSet<String>, _>>().map_err(sqlite)?;
    let schema = |detail: String| HistoryError::UnexpectedSchema { path: db.to_owned(), browser, detail };
    if present.is_empty() {
        return Err(schema(format!("table {table} is missing")));
    }
    let missing: Vec<&str> = columns.iter().copied().filter(|c| !present.contains(*c)).collect();
    if !missing.is_empty() {
        return Err(schema(format!("table {table} lacks column(s) {}", missing.join(", "))));
    }
    Ok(())
}

/// Maps an SQLite error on the copy to an error about the original file.
fn sqlite_error(db: &Path, e: rusqlite::Error) -> HistoryError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) {
            return HistoryError::Locked { path: db.to_owned() };
        }
    }
    HistoryError::Corrupt { path: db.to_owned(), detail: e.to_string() }
}

/// Companion files that hold committed or half-written data the main file lacks: the
/// rollback journal (Chromium) and the write-ahead log (Firefox). Both are needed for a
/// consistent copy of a database in use. The WAL index (`-shm`) is not copied: SQLite
/// rebuilds it from the WAL, and a copy taken mid-write could be inconsistent.
const SIDECARS: [&str; 2] = ["-journal", "-wal"];

/// Copies `db` and its sidecars into `dir`; returns the copy's path.
///
/// A browser may write while we copy. The copy is retried a few times until the files'
/// sizes and modification times stay the same across it; after that the last copy is used
/// and SQLite's own checks catch what is torn.
fn copy_database(db: &Path, dir: &Path) -> Result<PathBuf, HistoryError> {
    let name = db.file_name().unwrap_or(db.as_os_str());
    let copy = dir.join(name);
    let files = |base: &Path| -> Vec<PathBuf> {
        let mut v = vec![base.to_owned()];
        for s in SIDECARS {
            let mut p = base.as_os_str().to_owned();
            p.push(s);
            v.push(PathBuf::from(p));
        }
        v
    };
    let sources = files(db);
    let targets = files(&copy);
    for _attempt in 0..3 {
        let before = stamps(&sources);
        for (src, dst) in sources.iter().zip(&targets) {
            match fs::copy(src, dst) {
                Ok(_) => {}
                // A sidecar that does not exist (or vanished since) is simply not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound && src != db => {
                    let _ = fs::remove_file(dst);
                }
                Err(source) => return Err(HistoryError::Io { path: src.clone(), source }),
            }
        }
        if stamps(&sources) == before {
            break;
        }
    }
    Ok(copy)
}

type Stamp = Option<(u64, Option<std::time::SystemTime>)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| fs::metadata(f).ok().map(|m| (m.len(), m.modified().ok()))).collect()
}

/// Opens the private copy, reporting errors against the original `db`.
fn open_copy(db: &Path, copy: &Path) -> Result<Connection, HistoryError> {
    let len = fs::metadata(copy).map_err(|source| HistoryError::Io { path: db.to_owned(), source })?.len();
    // SQLite treats an empty file as an empty database, which would surface as a confusing
    // "table missing" error.
    if len == 0 {
        return Err(HistoryError::Corrupt { path: db.to_owned(), detail: "the file is empty".into() });
    }
    // The copy is opened for writing although nothing is written to it: a browser killed
    // mid-transaction leaves a hot journal, and SQLite must roll it back into the copy before
    // the copy is consistent; a read-only connection fails there with "attempt to write a
    // readonly database". (WAL recovery likewise rebuilds the -shm index next to the copy.)
    // It is our private copy, so this never touches the browser's files, and `query_only`
    // refuses any other write.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(copy, flags).map_err(|e| sqlite_error(db, e))?;
    // Opening is lazy; reading the schema makes a non-database fail here, with a clear
    // error, rather than in the middle of a query. This first read also does the recovery.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(|e| sqlite_error(db, e))?;
    conn.execute_batch("PRAGMA query_only = ON").map_err(|e| sqlite_error(db, e))?;
    Ok(conn)
}

/// A private temporary directory, removed when dropped.
///
/// Hand-rolled because the agent does not otherwise need a temp-file crate at run time.
/// The directory is created with mode 0700 so other users cannot read the copied history.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> io::Result<ScratchDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("optin-history-{}-{nanos:x}-{n}", std::process::id()));
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            // `create` (not `create_all`) fails if the name exists, so a directory planted
            // by someone else is never reused.
            match builder.create(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free temporary directory name")))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless and private.
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The history tables as Chromium 156 creates them (from a real profile; `meta` version
    /// 70). Only the tables and indexes the importer touches.
    const CHROMIUM_SCHEMA: &str = "
        CREATE TABLE meta(key LONGVARCHAR NOT NULL UNIQUE PRIMARY KEY, value LONGVARCHAR);
        INSERT INTO meta VALUES('version', '70'), ('last_compatible_version', '16');
        CREATE TABLE urls(id INTEGER PRIMARY KEY AUTOINCREMENT,url LONGVARCHAR,title LONGVARCHAR,visit_count INTEGER DEFAULT 0 NOT NULL,typed_count INTEGER DEFAULT 0 NOT NULL,last_visit_time INTEGER NOT NULL,hidden INTEGER DEFAULT 0 NOT NULL);
        CREATE INDEX urls_url_index ON urls (url);
        CREATE TABLE visits(id INTEGER PRIMARY KEY AUTOINCREMENT,url INTEGER NOT NULL,visit_time INTEGER NOT NULL,from_visit INTEGER,external_referrer_url TEXT,transition INTEGER DEFAULT 0 NOT NULL,segment_id INTEGER,visit_duration INTEGER DEFAULT 0 NOT NULL,incremented_omnibox_typed_score BOOLEAN DEFAULT FALSE NOT NULL,opener_visit INTEGER,originator_cache_guid TEXT,originator_visit_id INTEGER,originator_from_visit INTEGER,originator_opener_visit INTEGER,is_known_to_sync BOOLEAN DEFAULT FALSE NOT NULL,consider_for_ntp_most_visited BOOLEAN DEFAULT FALSE NOT NULL,visited_link_id INTEGER DEFAULT 0 NOT NULL,app_id TEXT);
        CREATE INDEX visits_url_index ON visits (url);
        CREATE INDEX visits_from_index ON visits (from_visit);
        CREATE INDEX visits_time_index ON visits (visit_time);
        CREATE INDEX visits_originator_id_index ON visits (originator_visit_id);
        CREATE TABLE keyword_search_terms (keyword_id INTEGER NOT NULL,url_id INTEGER NOT NULL,term LONGVARCHAR NOT NULL,normalized_term LONGVARCHAR NOT NULL);
        CREATE INDEX keyword_search_terms_index1 ON keyword_search_terms (keyword_id, normalized_term);
        CREATE INDEX keyword_search_terms_index2 ON keyword_search_terms (url_id);
        CREATE INDEX keyword_search_terms_index3 ON keyword_search_terms (term);
    ";

    /// The history tables as Firefox ESR 153 creates them (from a real profile;
    /// `user_version` 86).
    const FIREFOX_SCHEMA: &str = "
        PRAGMA user_version = 86;
        CREATE TABLE moz_origins ( id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, host TEXT NOT NULL, frecency INTEGER NOT NULL, recalc_frecency INTEGER NOT NULL DEFAULT 0, alt_frecency INTEGER, recalc_alt_frecency INTEGER NOT NULL DEFAULT 0, block_until_ms INTEGER, block_pages_until_ms INTEGER, UNIQUE (prefix, host) );
        CREATE TABLE moz_places (   id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR, rev_host LONGVARCHAR, visit_count INTEGER DEFAULT 0, hidden INTEGER DEFAULT 0 NOT NULL, typed INTEGER DEFAULT 0 NOT NULL, frecency INTEGER DEFAULT -1 NOT NULL, last_visit_date INTEGER , guid TEXT, foreign_count INTEGER DEFAULT 0 NOT NULL, url_hash INTEGER DEFAULT 0 NOT NULL , description TEXT, preview_image_url TEXT, site_name TEXT, origin_id INTEGER REFERENCES moz_origins(id), recalc_frecency INTEGER NOT NULL DEFAULT 0, alt_frecency INTEGER, recalc_alt_frecency INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX moz_places_url_hashindex ON moz_places (url_hash);
        CREATE INDEX moz_places_hostindex ON moz_places (rev_host);
        CREATE INDEX moz_places_lastvisitdateindex ON moz_places (last_visit_date);
        CREATE UNIQUE INDEX moz_places_guid_uniqueindex ON moz_places (guid);
        CREATE TABLE moz_historyvisits (  id INTEGER PRIMARY KEY, from_visit INTEGER, place_id INTEGER, visit_date INTEGER, visit_type INTEGER, session INTEGER, source INTEGER DEFAULT 0 NOT NULL, triggeringPlaceId INTEGER);
        CREATE INDEX moz_historyvisits_placedateindex ON moz_historyvisits (place_id, visit_date);
        CREATE INDEX moz_historyvisits_fromindex ON moz_historyvisits (from_visit);
        CREATE INDEX moz_historyvisits_dateindex ON moz_historyvisits (visit_date);
    ";

    /// Fixed rules, so these tests do not change when the shipped engines.json does.
    const TEST_RULES: &str = r#"{"version":1,"engines":[
      {"id":"google","name":"Google","domains":["google.com","google.co.uk"],"paths":["/search"],"param":"q"},
      {"id":"bing","name":"Bing","domains":["bing.com"],"paths":["/search"],"param":"q"},
      {"id":"duckduckgo","name":"DuckDuckGo","domains":["duckduckgo.com"],"paths":["/"],"param":"q"},
      {"id":"startpage","name":"Startpage","domains":["startpage.com"],"paths":["/sp/search"],"param":"query","params":["query","q"]},
      {"id":"yahoo","name":"Yahoo","domains":["search.yahoo.com"],"paths":["/search"],"param":"p"}
    ]}"#;

    fn rules() -> Engines {
        Engines::parse(TEST_RULES).expect("test rules parse")
    }

    /// Chromium's stored time for an instant.
    fn chromium_time(at: OffsetDateTime) -> i64 {
        i64::try_from(at.unix_timestamp_nanos() / 1000).expect("test times fit") + CHROMIUM_EPOCH_OFFSET_US
    }

    fn firefox_time(at: OffsetDateTime) -> i64 {
        i64::try_from(at.unix_timestamp_nanos() / 1000).expect("test times fit")
    }

    const LINK: i64 = 0;
    const TYPED: i64 = 1;
    /// A visit that is its own whole chain, as Chromium writes an ordinary navigation.
    const WHOLE: i64 = CHAIN_START | CHAIN_END;

    /// One row of a Chromium fixture: a visit, its URL, and the term Chromium stored.
    struct ChromiumVisit {
        url: &'static str,
        at: OffsetDateTime,
        transition: i64,
        hidden: bool,
        term: Option<&'static str>,
    }

    fn cv(url: &'static str, at: OffsetDateTime, transition: i64) -> ChromiumVisit {
        ChromiumVisit { url, at, transition, hidden: false, term: None }
    }

    /// Writes a Chromium `History` file with `visits` into `profile`.
    fn write_chromium(profile: &Path, visits: &[ChromiumVisit]) {
        fs::create_dir_all(profile).expect("profile dir");
        let conn = Connection::open(profile.join("History")).expect("create History");
        conn.execute_batch(CHROMIUM_SCHEMA).expect("schema");
        for v in visits {
            let time = chromium_time(v.at);
            let url_id: i64 = match conn.query_row("SELECT id FROM urls WHERE url = ?1", [v.url], |r| r.get(0)) {
                Ok(id) => id,
                Err(_) => {
                    conn.execute(
                        "INSERT INTO urls (url, title, visit_count, last_visit_time, hidden) VALUES (?1, '', 1, ?2, ?3)",
                        rusqlite::params![v.url, time, i64::from(v.hidden)],
                    )
                    .expect("insert url");
                    conn.last_insert_rowid()
                }
            };
            conn.execute("INSERT INTO visits (url, visit_time, from_visit, transition) VALUES (?1, ?2, 0, ?3)", rusqlite::params![url_id, time, v.transition])
                .expect("insert visit");
            if let Some(term) = v.term {
                conn.execute("INSERT INTO keyword_search_terms VALUES (2, ?1, ?2, lower(?2))", rusqlite::params![url_id, term]).expect("insert term");
            }
        }
    }

    struct FirefoxVisit {
        url: &'static str,
        at: OffsetDateTime,
        visit_type: i64,
        hidden: bool,
        /// Index (in the fixture) of the visit this one came from.
        from: Option<usize>,
    }

    fn fv(url: &'static str, at: OffsetDateTime, visit_type: i64) -> FirefoxVisit {
        FirefoxVisit { url, at, visit_type, hidden: false, from: None }
    }

    fn insert_firefox(conn: &Connection, visits: &[FirefoxVisit]) {
        let mut ids = Vec::new();
        for (i, v) in visits.iter().enumerate() {
            let time = firefox_time(v.at);
            let place_id: i64 = match conn.query_row("SELECT id FROM moz_places WHERE url = ?1", [v.url], |r| r.get(0)) {
                Ok(id) => id,
                Err(_) => {
                    conn.execute(
                        "INSERT INTO moz_places (url, visit_count, hidden, last_visit_date, guid) VALUES (?1, 1, ?2, ?3, ?4)",
                        rusqlite::params![v.url, i64::from(v.hidden), time, format!("guid{i:08}")],
                    )
                    .expect("insert place");
                    conn.last_insert_rowid()
                }
            };
            let from = v.from.map_or(0, |f| ids[f]);
            conn.execute(
                "INSERT INTO moz_historyvisits (from_visit, place_id, visit_date, visit_type, session) VALUES (?1, ?2, ?3, ?4, 0)",
                rusqlite::params![from, place_id, time, v.visit_type],
            )
            .expect("insert visit");
            ids.push(conn.last_insert_rowid());
        }
    }

    /// Writes a Firefox `places.sqlite` with `visits` into `profile`.
    fn write_firefox(profile: &Path, visits: &[FirefoxVisit]) {
        fs::create_dir_all(profile).expect("profile dir");
        let conn = Connection::open(profile.join("places.sqlite")).expect("create places");
        conn.execute_batch(FIREFOX_SCHEMA).expect("schema");
        insert_firefox(&conn, visits);
    }

    /// (engine, query, time) of each search, for comparing with a table.
    fn summary(found: &[HistorySearch]) -> Vec<(String, String, OffsetDateTime)> {
        found.iter().map(|s| (s.engine.clone(), s.query.clone(), s.at)).collect()
    }

    fn expect(rows: &[(&str, &str, OffsetDateTime)]) -> Vec<(String, String, OffsetDateTime)> {
        rows.iter().map(|(e, q, t)| ((*e).to_owned(), (*q).to_owned(), *t)).collect()
    }

    const T: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

    fn at(minutes: i64) -> OffsetDateTime {
        T + time::Duration::minutes(minutes)
    }

    fn chromium_fixture() -> Vec<ChromiumVisit> {
        vec![
            // Entered out of order: results must come back sorted by time.
            cv("https://duckduckgo.com/?q=caf%C3%A9&t=h_", at(9), LINK | WHOLE),
            ChromiumVisit { term: Some("red shoes"), ..cv("https://www.google.com/search?q=red+shoes&oq=red", at(0), TYPED | WHOLE) },
            cv("https://www.bing.com/search?q=tent&form=QBLH", at(1), LINK | WHOLE),
            cv("https://example.com/shop/shoes?q=not+a+search", at(2), LINK | WHOLE),
            // A redirect chain: every hop has the same time; only the last one counts.
            cv("http://google.co.uk/search?q=boots", at(3), LINK | CHAIN_START),
            cv("https://google.co.uk/search?q=boots", at(3), LINK | SERVER_REDIRECT),
            cv("https://www.google.co.uk/search?q=boots", at(3), LINK | SERVER_REDIRECT | CHAIN_END),
            // A search through an engine the rules do not know, found by Chromium's term.
            ChromiumVisit { term: Some("  sqlite wal "), ..cv("https://en.wikipedia.org/w/index.php?search=sqlite+wal", at(4), TYPED | WHOLE) },
            cv("https://duckduckgo.com/?q=in+a+frame", at(5), AUTO_SUBFRAME),
            cv("https://duckduckgo.com/?q=clicked+in+a+frame", at(5), MANUAL_SUBFRAME | WHOLE),
            ChromiumVisit { term: Some("red shoes"), ..cv("https://www.google.com/search?q=red+shoes&oq=red", at(6), RELOAD | WHOLE) },
            ChromiumVisit { hidden: true, ..cv("https://duckduckgo.com/?q=hidden", at(7), LINK | WHOLE) },
            // Both a rules match and a term: one search, with the URL's text.
            ChromiumVisit { term: Some("Boots Sale"), ..cv("https://www.google.com/search?q=boots+sale", at(8), TYPED | WHOLE) },
            // No chain bits at all, as in old or synced rows: kept.
            cv("https://www.startpage.com/sp/search?q=old+style", at(10), TYPED),
            cv("https://www.google.com/search?q=", at(11), TYPED | WHOLE),
            // Before the `since` used below.
            cv("https://www.google.com/search?q=last+year", datetime!(2025-03-01 0:00 UTC), LINK | WHOLE),
        ]
    }

    fn chromium_expected() -> Vec<(String, String, OffsetDateTime)> {
        expect(&[
            ("google.com", "last year", datetime!(2025-03-01 0:00 UTC)),
            ("google.com", "red shoes", at(0)),
            ("bing.com", "tent", at(1)),
            ("google.co.uk", "boots", at(3)),
            ("en.wikipedia.org", "sqlite wal", at(4)),
            ("google.com", "boots sale", at(8)),
            ("duckduckgo.com", "café", at(9)),
            ("startpage.com", "old style", at(10)),
        ])
    }

    #[test]
    fn reads_chromium_searches() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_chromium(dir.path(), &chromium_fixture());
        for browser in [Browser::Chromium, Browser::Chrome] {
            let found = read_searches(browser, dir.path(), None, &rules()).expect("read");
            assert_eq!(summary(&found), chromium_expected(), "{browser}");
            assert!(found.iter().all(|s| s.source == source(browser)));
        }
    }

    #[test]
    fn skips_rows_with_unexpected_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_chromium(dir.path(), &[cv("https://www.bing.com/search?q=ok", at(0), WHOLE)]);
        let conn = Connection::open(dir.path().join("History")).expect("open");
        conn.execute_batch(
            "INSERT INTO urls (id, url, last_visit_time) VALUES (100, NULL, 0), (101, X'FF00', 0),
                                                           (102, 'https://www.bing.com/search?q=t', 0);
             INSERT INTO visits (url, visit_time, transition) VALUES (100, 13400000000000000, 0),
                    (101, 13400000000000000, 0), (102, 'yesterday', 0), (102, -5, 0),
                    (102, 9223372036854775807, 0), (102, 13400000000000000, 'typed'),
                    (999, 13400000000000000, 0);
             INSERT INTO keyword_search_terms VALUES (1, 100, 'no url', 'no url'), (1, 102, X'00', '');",
        )
        .expect("odd rows");
        drop(conn);
        let found = read_searches(Browser::Chromium, dir.path(), None, &rules()).expect("read");
        let queries: Vec<&str> = found.iter().map(|s| s.query.as_str()).collect();
        // The row whose transition is text is read as a plain link and kept; it is older.
        assert_eq!(queries, ["t", "ok"]);
    }

    fn firefox_fixture() -> Vec<FirefoxVisit> {
        const LINK: i64 = 1;
        const TYPED: i64 = 2;
        vec![
            fv("https://www.google.com/search?q=red+shoes", at(0), TYPED),
            fv("https://www.bing.com/search?q=tent", at(1), LINK),
            fv("https://example.com/shop", at(2), LINK),
            // index 3 → 4: a redirect; Firefox hides the source place.
            FirefoxVisit { hidden: true, ..fv("https://google.com/search?q=boots", at(3), LINK) },
            FirefoxVisit { from: Some(3), ..fv("https://www.google.com/search?q=boots", at(3) + time::Duration::milliseconds(40), FF_REDIRECT_PERMANENT) },
            fv("https://duckduckgo.com/?q=framed", at(4), FF_FRAMED_LINK),
            fv("https://duckduckgo.com/?q=embedded", at(4), FF_EMBED),
            fv("https://www.google.com/search?q=red+shoes", at(5), FF_RELOAD),
            fv("https://search.yahoo.com/search?p=camping+stove", at(6), LINK),
            // A redirect source whose place is visible (visited directly too): still skipped.
            fv("https://duckduckgo.com/?q=via", at(7), LINK),
            FirefoxVisit { from: Some(9), ..fv("https://duckduckgo.com/?q=via+target", at(7), FF_REDIRECT_TEMPORARY) },
            fv("https://www.startpage.com/sp/search?query=tarp", at(8), TYPED),
            fv("https://www.google.com/search?q=last+year", datetime!(2025-03-01 0:00 UTC), LINK),
        ]
    }

    fn firefox_expected() -> Vec<(String, String, OffsetDateTime)> {
        expect(&[
            ("google.com", "last year", datetime!(2025-03-01 0:00 UTC)),
            ("google.com", "red shoes", at(0)),
            ("bing.com", "tent", at(1)),
            ("google.com", "boots", at(3) + time::Duration::milliseconds(40)),
            ("search.yahoo.com", "camping stove", at(6)),
            ("duckduckgo.com", "via target", at(7)),
            ("startpage.com", "tarp", at(8)),
        ])
    }

    #[test]
    fn reads_firefox_searches() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_firefox(dir.path(), &firefox_fixture());
        let found = read_searches(Browser::Firefox, dir.path(), None, &rules()).expect("read");
        assert_eq!(summary(&found), firefox_expected());
        assert!(found.iter().all(|s| s.source == "firefox-history"));
    }

    #[test]
    fn since_drops_older_visits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chromium = dir.path().join("chromium");
        let firefox = dir.path().join("firefox");
        write_chromium(&chromium, &chromium_fixture());
        write_firefox(&firefox, &firefox_fixture());
        let table: &[(Browser, &Path, OffsetDateTime, usize)] = &[
            (Browser::Chromium, &chromium, datetime!(2026-01-01 0:00 UTC), 7),
            (Browser::Chromium, &chromium, at(3), 5),
            (Browser::Chromium, &chromium, at(3) + time::Duration::microseconds(1), 4),
            (Browser::Chromium, &chromium, at(60), 0),
            (Browser::Firefox, &firefox, datetime!(2026-01-01 0:00 UTC), 6),
            (Browser::Firefox, &firefox, at(6), 3),
            (Browser::Firefox, &firefox, datetime!(1601-01-01 0:00 UTC), 7),
        ];
        for (browser, profile, since, count) in table {
            let found = read_searches(*browser, profile, Some(*since), &rules()).expect("read");
            assert_eq!(found.len(), *count, "{browser} since {since}");
            assert!(found.iter().all(|s| s.at >= *since));
        }
    }

    #[test]
    fn ids_are_stable_across_imports() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_chromium(dir.path(), &chromium_fixture());
        let first = read_searches(Browser::Chromium, dir.path(), None, &rules()).expect("read");
        let second = read_searches(Browser::Chromium, dir.path(), None, &rules()).expect("read");
        assert_eq!(first, second);
        let ids: HashSet<&str> = first.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), first.len(), "ids are unique");
        for id in &ids {
            let hex = id.strip_prefix("h-").expect("h- prefix");
            assert_eq!(hex.len(), 32);
            assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        // The id names the browser, so the same profile read as Chrome is a different source.
        let chrome = read_searches(Browser::Chrome, dir.path(), None, &rules()).expect("read");
        assert!(chrome.iter().all(|s| !ids.contains(s.id.as_str())));
        // A pinned value: changing the id scheme would re-import every search.
        assert_eq!(
            search_id(Browser::Firefox, "https://www.google.com/search?q=x", 1_700_000_000_000_000),
            search_id(Browser::Firefox, "https://www.google.com/search?q=x", 1_700_000_000_000_000)
        );
        assert_eq!(search_id(Browser::Chromium, "u", 1), format!("h-{}", &sha256_hex("chromium|u|1")[..32]));
    }

    fn sha256_hex(s: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every file in `dir` with its bytes and modification time.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, Option<std::time::SystemTime>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                let p = e.expect("entry").path();
                let m = fs::metadata(&p).expect("metadata");
                (p.clone(), fs::read(&p).expect("read"), m.modified().ok())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn reads_visits_only_in_the_wal_and_leaves_the_original_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        let profile = dir.path().join("profile");
        fs::create_dir_all(&work).expect("dir");
        fs::create_dir_all(&profile).expect("dir");
        // Firefox keeps places.sqlite in WAL mode; after a crash the newest visits exist
        // only in places.sqlite-wal. Reproduce that by copying the files while the writer
        // still has uncheckpointed frames.
        let conn = Connection::open(work.join("places.sqlite")).expect("create");
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).expect("wal");
        assert_eq!(mode, "wal");
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;").expect("no checkpoints");
        conn.execute_batch(FIREFOX_SCHEMA).expect("schema");
        insert_firefox(&conn, &firefox_fixture());
        let wal_len = fs::metadata(work.join("places.sqlite-wal")).expect("wal").len();
        assert!(wal_len > 0);
        for name in ["places.sqlite", "places.sqlite-wal", "places.sqlite-shm"] {
            fs::copy(work.join(name), profile.join(name)).expect("copy");
        }
        drop(conn);

        let before = snapshot(&profile);
        let found = read_searches(Browser::Firefox, &profile, None, &rules()).expect("read");
        assert_eq!(summary(&found), firefox_expected());
        assert_eq!(snapshot(&profile), before, "the profile must not change");
    }

    #[test]
    fn reads_a_copy_with_a_hot_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        let profile = dir.path().join("profile");
        write_chromium(&work, &chromium_fixture());
        fs::create_dir_all(&profile).expect("dir");
        // A browser killed in the middle of a write transaction leaves History with pages of
        // the unfinished transaction and a journal holding the old pages. A tiny page cache
        // makes SQLite spill the uncommitted pages into the main file.
        let committed = fs::read(work.join("History")).expect("read");
        let conn = Connection::open(work.join("History")).expect("open");
        conn.execute_batch(
            "PRAGMA cache_size = 1;
             BEGIN;
             DELETE FROM visits;
             DELETE FROM urls;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO urls (url, last_visit_time)
                 SELECT 'https://www.bing.com/search?q=' || i, 0 FROM n;",
        )
        .expect("uncommitted changes");
        assert_ne!(fs::read(work.join("History")).expect("read"), committed, "uncommitted pages reached the main file");
        let journal = work.join("History-journal");
        assert!(fs::metadata(&journal).expect("journal").len() > 0);
        for name in ["History", "History-journal"] {
            fs::copy(work.join(name), profile.join(name)).expect("copy");
        }
        drop(conn);

        let before = snapshot(&profile);
        let found = read_searches(Browser::Chromium, &profile, None, &rules()).expect("read");
        assert_eq!(summary(&found), chromium_expected(), "the unfinished transaction is rolled back");
        assert_eq!(snapshot(&profile), before, "the profile must not change");
    }

    /// Loads a text dump of a real browser database (schema and history rows, made with
    /// the browser itself; see `agent/tests-data/history/`) into `profile/file`.
    fn load_dump(profile: &Path, file: &str, dump: &str) {
        fs::create_dir_all(profile).expect("profile dir");
        let conn = Connection::open(profile.join(file)).expect("create");
        conn.execute_batch(dump).expect("load dump");
    }

    #[test]
    fn reads_a_real_chromium_156_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dump = include_str!("../../tests-data/history/chromium-156-history.sql");
        load_dump(dir.path(), "History", dump);
        let engines = Engines::builtin().expect("shipped rules");
        let found = read_searches(Browser::Chromium, dir.path(), None, &engines).expect("read");
        // Each address was typed as http://; Chromium first tried https:// and fell back,
        // writing a three-visit redirect chain per search, and /go answered with a 302.
        assert_eq!(
            summary(&found),
            expect(&[
                ("google.com", "red running shoes", datetime!(2026-11-23 11:00:02.445418 UTC)),
                ("google.co.uk", "café near me", datetime!(2026-11-23 11:00:03.473479 UTC)),
                ("duckduckgo.com", "rust sqlite", datetime!(2026-11-23 11:00:04.494747 UTC)),
                ("startpage.com", "hiking boots", datetime!(2026-11-23 11:00:05.461238 UTC)),
                ("google.com", "redirected query", datetime!(2026-11-23 11:00:06.349165 UTC)),
                ("google.com", "red running shoes", datetime!(2026-11-23 11:00:10.331355 UTC)),
            ])
        );
    }

    #[test]
    fn reads_a_real_firefox_esr_153_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dump = include_str!("../../tests-data/history/firefox-esr-153-places.sql");
        load_dump(dir.path(), "places.sqlite", dump);
        let engines = Engines::builtin().expect("shipped rules");
        let found = read_searches(Browser::Firefox, dir.path(), None, &engines).expect("read");
        assert_eq!(
            summary(&found),
            expect(&[
                ("google.com", "red running shoes", datetime!(2026-11-23 10:58:20.675685 UTC)),
                ("google.co.uk", "café near me", datetime!(2026-11-23 10:58:21.572895 UTC)),
                ("duckduckgo.com", "rust sqlite", datetime!(2026-11-23 10:58:22.559946 UTC)),
                ("startpage.com", "hiking boots", datetime!(2026-11-23 10:58:23.632813 UTC)),
                ("search.yahoo.com", "camping stove", datetime!(2026-11-23 10:58:24.733141 UTC)),
                ("google.com", "redirected query", datetime!(2026-11-23 10:58:25.835125 UTC)),
                ("google.com", "killed before checkpoint", datetime!(2026-11-23 11:01:32.949358 UTC)),
            ])
        );
    }

    /// How a damaged profile is set up, and what the error must say.
    struct Damage {
        name: &'static str,
        browser: Browser,
        setup: fn(&Path),
        /// Text the error message must contain (besides the path).
        says: &'static str,
        /// The file or directory the message must name, relative to the profile.
        names: &'static str,
    }

    fn good_chromium(p: &Path) {
        write_chromium(p, &chromium_fixture());
    }

    #[test]
    fn rejects_damaged_profiles() {
        let table = [
            Damage { name: "missing profile dir", browser: Browser::Chromium, setup: |_| {}, says: "no browser profile at", names: "" },
            Damage {
                name: "profile without database",
                browser: Browser::Firefox,
                setup: |p| fs::create_dir_all(p).expect("dir"),
                says: "no history database at",
                names: "places.sqlite",
            },
            Damage {
                name: "database is a directory",
                browser: Browser::Chrome,
                setup: |p| fs::create_dir_all(p.join("History")).expect("dir"),
                says: "no history database at",
                names: "History",
            },
            Damage {
                name: "empty file",
                browser: Browser::Chromium,
                setup: |p| {
                    fs::create_dir_all(p).expect("dir");
                    fs::write(p.join("History"), b"").expect("write");
                },
                says: "the file is empty",
                names: "History",
            },
            Damage {
                name: "random bytes",
                browser: Browser::Firefox,
                setup: |p| {
                    fs::create_dir_all(p).expect("dir");
                    // A fixed xorshift stream: random-looking, the same on every run.
                    let mut x: u32 = 0x9E37_79B9;
                    let bytes: Vec<u8> = (0..8192)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            x.to_le_bytes()[0]
                        })
                        .collect();
                    fs::write(p.join("places.sqlite"), bytes).expect("write");
                },
                says: "is not a readable history database: file is not a database",
                names: "places.sqlite",
            },
            Damage {
                name: "text file",
                browser: Browser::Chromium,
                setup: |p| {
                    fs::create_dir_all(p).expect("dir");
                    fs::write(p.join("History"), "[History]\nnot=sqlite\n").expect("write");
                },
                says: "file is not a database",
                names: "History",
            },
            Damage {
                name: "truncated database",
                browser: Browser::Chromium,
                setup: |p| {
                    good_chromium(p);
                    let db = p.join("History");
                    let bytes = fs::read(&db).expect("read");
                    fs::write(&db, &bytes[..bytes.len() / 3]).expect("truncate");
                },
                says: "is not a readable history database: database disk image is malformed",
                names: "History",
            },
            Damage {
                name: "header only",
                browser: Browser::Chromium,
                setup: |p| {
                    good_chromium(p);
                    let db = p.join("History");
                    let bytes = fs::read(&db).expect("read");
                    fs::write(&db, &bytes[..100]).expect("truncate");
                },
                says: "is not a readable history database",
                names: "History",
            },
            Damage {
                name: "missing table",
                browser: Browser::Chromium,
                setup: |p| {
                    good_chromium(p);
                    let conn = Connection::open(p.join("History")).expect("open");
                    conn.execute_batch("DROP TABLE keyword_search_terms").expect("drop");
                },
                says: "does not look like a chromium history database: table keyword_search_terms is missing",
                names: "History",
            },
            Damage {
                name: "missing column",
                browser: Browser::Chrome,
                setup: |p| {
                    good_chromium(p);
                    let conn = Connection::open(p.join("History")).expect("open");
                    conn.execute_batch("DROP INDEX visits_time_index; ALTER TABLE visits DROP COLUMN visit_time").expect("drop");
                },
                says: "does not look like a chrome history database: table visits lacks column(s) visit_time",
                names: "History",
            },
            Damage {
                name: "firefox database in a chromium profile",
                browser: Browser::Chromium,
                setup: |p| {
                    write_firefox(p, &firefox_fixture());
                    fs::rename(p.join("places.sqlite"), p.join("History")).expect("rename");
                },
                says: "table urls is missing",
                names: "History",
            },
            Damage {
                name: "chromium database in a firefox profile",
                browser: Browser::Firefox,
                setup: |p| {
                    good_chromium(p);
                    fs::rename(p.join("History"), p.join("places.sqlite")).expect("rename");
                },
                says: "table moz_places is missing",
                names: "places.sqlite",
            },
        ];
        for d in table {
            let dir = tempfile::tempdir().expect("tempdir");
            let profile = dir.path().join("profile");
            (d.setup)(&profile);
            let err = read_searches(d.browser, &profile, None, &rules()).expect_err(d.name).to_string();
            assert!(err.contains(d.says), "{}: {err}", d.name);
            let named = if d.names.is_empty() { profile.clone() } else { profile.join(d.names) };
            assert!(err.contains(&named.display().to_string()), "{}: {err} should name {}", d.name, named.display());
        }
    }

    #[test]
    fn browser_names() {
        let table: &[(&str, Browser)] = &[("chrome", Browser::Chrome), ("Chromium", Browser::Chromium), ("FIREFOX", Browser::Firefox)];
        for (name, want) in table {
            assert_eq!(<Browser as clap::ValueEnum>::from_str(name, true).expect(name), *want);
        }
    }

    #[test]
    fn rejects_unknown_browsers() {
        for name in ["", "edge", "chrome ", "google-chrome", "firefox-esr"] {
            assert!(<Browser as clap::ValueEnum>::from_str(name, true).is_err(), "{name}");
        }
    }

    #[test]
    fn default_chromium_profiles() {
        let home = tempfile::tempdir().expect("tempdir");
        let table: &[(Browser, &str)] = &[(Browser::Chromium, ".config/chromium/Default"), (Browser::Chrome, ".config/google-chrome/Default")];
        for (browser, rel) in table {
            let err = default_profile(*browser, home.path()).expect_err("not there yet");
            assert!(matches!(err, HistoryError::ProfileNotFound { .. }), "{err}");
            fs::create_dir_all(home.path().join(rel)).expect("dir");
            assert_eq!(default_profile(*browser, home.path()).expect("found"), home.path().join(rel));
        }
    }

    /// A profiles.ini case: where the file is, what it says, and the profile (relative to
    /// home) or the error expected. `{home}` in the text stands for the home directory.
    struct IniCase {
        name: &'static str,
        dir: &'static str,
        ini: &'static str,
        expect: Result<&'static str, &'static str>,
    }

    const LEGACY: &str = ".mozilla/firefox";
    const XDG: &str = ".config/mozilla/firefox";

    #[test]
    fn default_firefox_profiles() {
        let table = [
            IniCase {
                // As written by Firefox ESR 153 on a fresh home: the install's profile wins
                // over the one marked Default=1.
                name: "install section",
                dir: XDG,
                ini: "[Profile1]\nName=default\nIsRelative=1\nPath=8hskeb8w.default\nDefault=1\n\n\
                      [Profile0]\nName=default-esr\nIsRelative=1\nPath=lgsp7pj2.default-esr\n\n\
                      [General]\nStartWithLastProfile=1\nVersion=2\n\n\
                      [Install3B6073811A6ABF12]\nDefault=lgsp7pj2.default-esr\nLocked=1\n",
                expect: Ok(".config/mozilla/firefox/lgsp7pj2.default-esr"),
            },
            IniCase {
                name: "default flag",
                dir: LEGACY,
                ini: "[General]\nVersion=2\n[Profile0]\nName=a\nIsRelative=1\nPath=a.default\n\
                      [Profile1]\nName=b\nIsRelative=1\nPath=Profiles/b.default\nDefault=1\n",
                expect: Ok(".mozilla/firefox/Profiles/b.default"),
            },
            IniCase {
                name: "only profile",
                dir: LEGACY,
                ini: "[Profile0]\nName=a\nIsRelative=1\nPath=only.default\n",
                expect: Ok(".mozilla/firefox/only.default"),
            },
            IniCase {
                name: "absolute path",
                dir: LEGACY,
                ini: "[Profile0]\nName=a\nIsRelative=0\nPath={home}/elsewhere/prof\nDefault=1\n",
                expect: Ok("elsewhere/prof"),
            },
            IniCase {
                name: "absolute install default",
                dir: LEGACY,
                ini: "[Install1]\nDefault={home}/elsewhere/prof\n[Profile0]\nPath=x\nIsRelative=1\n",
                expect: Ok("elsewhere/prof"),
            },
            IniCase {
                name: "crlf, bom and comments",
                dir: LEGACY,
                ini: "\u{FEFF}; written by hand\r\n[Profile0]\r\nName = a\r\nIsRelative = 1\r\nPath = crlf.default\r\n",
                expect: Ok(".mozilla/firefox/crlf.default"),
            },
            IniCase {
                name: "several without default",
                dir: LEGACY,
                ini: "[Profile0]\nPath=a\nIsRelative=1\n[Profile1]\nPath=b\nIsRelative=1\n",
                expect: Err("several profiles and none is the default"),
            },
            IniCase {
                name: "no profiles",
                dir: LEGACY,
                ini: "[General]\nVersion=2\n[BackgroundTasksProfiles]\nMozillaBackgroundTask-x=y\n",
                expect: Err("it lists no profiles"),
            },
            IniCase { name: "profile dir missing", dir: LEGACY, ini: "[Profile0]\nPath=gone.default\nIsRelative=1\n", expect: Err("no browser profile at") },
            IniCase { name: "garbage", dir: LEGACY, ini: "\u{0}\u{1}=[[]]\n=\n[\n]\nPath=x\n", expect: Err("it lists no profiles") },
        ];
        for case in table {
            let home = tempfile::tempdir().expect("tempdir");
            let home_str = home.path().display().to_string();
            let root = home.path().join(case.dir);
            fs::create_dir_all(&root).expect("dir");
            fs::write(root.join("profiles.ini"), case.ini.replace("{home}", &home_str)).expect("write ini");
            match case.expect {
                Ok(rel) => {
                    let want = home.path().join(rel);
                    fs::create_dir_all(&want).expect("profile dir");
                    let got = default_profile(Browser::Firefox, home.path()).expect(case.name);
                    assert_eq!(got, want, "{}", case.name);
                }
                Err(says) => {
                    let err = default_profile(Browser::Firefox, home.path()).expect_err(case.name).to_string();
                    assert!(err.contains(says), "{}: {err}", case.name);
                }
            }
        }
    }

    #[test]
    fn rejects_a_home_without_firefox() {
        let home = tempfile::tempdir().expect("tempdir");
        let err = default_profile(Browser::Firefox, home.path()).expect_err("no firefox");
        let text = err.to_string();
        assert!(matches!(err, HistoryError::FirefoxProfiles { .. }), "{text}");
        assert!(text.contains(".mozilla/firefox/profiles.ini"), "{text}");
        assert!(text.contains("pass --profile"), "{text}");
    }

    #[test]
    fn legacy_firefox_dir_wins_over_xdg() {
        let home = tempfile::tempdir().expect("tempdir");
        for (dir, prof) in [(LEGACY, "old.default"), (XDG, "new.default")] {
            let root = home.path().join(dir);
            fs::create_dir_all(root.join(prof)).expect("dir");
            fs::write(root.join("profiles.ini"), format!("[Profile0]\nPath={prof}\nIsRelative=1\n")).expect("write");
        }
        assert_eq!(default_profile(Browser::Firefox, home.path()).expect("found"), home.path().join(LEGACY).join("old.default"));
    }

    #[test]
    fn times_convert_from_both_epochs() {
        let table: &[(Browser, i64, Option<OffsetDateTime>)] = &[
            (Browser::Chromium, 13_439_905_202_445_418, Some(datetime!(2026-11-23 11:00:02.445418 UTC))),
            (Browser::Chrome, CHROMIUM_EPOCH_OFFSET_US + 1, Some(datetime!(1970-01-01 0:00:00.000001 UTC))),
            (Browser::Firefox, 1_795_431_500_675_685, Some(datetime!(2026-11-23 10:58:20.675685 UTC))),
            (Browser::Chromium, 0, None),
            (Browser::Chromium, i64::MIN, None),
            (Browser::Firefox, -1, None),
            (Browser::Firefox, i64::MAX, None),
        ];
        for (browser, raw, want) in table {
            assert_eq!(browser_time(*browser, *raw), *want, "{browser} {raw}");
            if let Some(at) = want {
                assert_eq!(browser_since(*browser, Some(*at)), *raw);
            }
        }
        assert_eq!(browser_since(Browser::Firefox, None), i64::MIN);
    }
}
