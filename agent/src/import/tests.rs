//! Tests of the history importer: fixtures in each browser's real schema, real dumps,
//! and a table of damaged profiles.

use std::fs;
use std::path::PathBuf;

use rusqlite::Connection;
use time::macros::datetime;

use super::chromium::{AUTO_SUBFRAME, CHAIN_END, CHAIN_START, MANUAL_SUBFRAME, RELOAD, SERVER_REDIRECT};
use super::row::{search_id, Skip, Skipped};
use super::*;

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
    i64::try_from(at.unix_timestamp_nanos() / 1000).expect("test times fit") + chromium::EPOCH_US
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
        let found = read_searches(browser, dir.path(), None, &rules()).expect("read").searches;
        assert_eq!(summary(&found), chromium_expected(), "{browser}");
        assert!(found.iter().all(|s| s.source == source(browser)));
    }
}

/// A row a damaged or hand-edited history may hold, in SQL, and what the import makes of it.
struct BadRow {
    name: &'static str,
    /// The URL, as an SQL expression.
    url: &'static str,
    /// The visit time as an SQL expression; `GOOD` stands for a real time in the browser's
    /// epoch.
    time: &'static str,
    /// Chromium's search term for the URL, as an SQL expression (Firefox has none).
    term: Option<&'static str>,
    /// The query found, or why the row is skipped; `Ok(None)` when it is no search at all.
    expect: Result<Option<&'static str>, Skip>,
}

fn bad_rows() -> Vec<BadRow> {
    let row = |name, url, time, expect| BadRow { name, url, time, term: None, expect };
    vec![
        row("a good search", "'https://www.bing.com/search?q=tent'", "GOOD", Ok(Some("tent"))),
        row("NULL url", "NULL", "GOOD", Err(Skip::NoUrl)),
        row("url stored as a blob", "X'FF00'", "GOOD", Err(Skip::UrlNotText)),
        // CAST keeps the bytes: TEXT that is not UTF-8, as a damaged page can hold.
        row("url not UTF-8", "CAST(X'68747470733A2F2F7777772E62696E672E636F6D2F7365617263683F713DFF' AS TEXT)", "GOOD", Err(Skip::UrlNotUtf8)),
        row("time as text", "'https://www.bing.com/search?q=a'", "'yesterday'", Err(Skip::NoTime)),
        // INTEGER affinity keeps a real that has a fraction as a real.
        row("time as a real", "'https://www.bing.com/search?q=b'", "1.5", Err(Skip::NoTime)),
        row("time before the epoch", "'https://www.bing.com/search?q=c'", "-5", Err(Skip::TimeOutOfRange)),
        row("time after year 9999", "'https://www.bing.com/search?q=d'", "9223372036854775807", Err(Skip::TimeOutOfRange)),
        row("a bad time on a page that is no search", "'https://example.com/'", "'yesterday'", Ok(None)),
        // The engine is named after the host, and `localhost` is no domain: the agent would
        // refuse the whole batch for this one line.
        BadRow { term: Some("'local'"), ..row("a search the agent would refuse", "'http://localhost:8080/?q=local'", "GOOD", Err(Skip::NotASignal)) },
        BadRow { term: Some("X'00'"), ..row("term stored as a blob", "'https://en.wikipedia.org/w/index.php?search=x'", "GOOD", Err(Skip::TermNotText)) },
        BadRow {
            term: Some("CAST(X'FF' AS TEXT)"),
            ..row("term not UTF-8", "'https://en.wikipedia.org/w/index.php?search=y'", "GOOD", Err(Skip::TermNotText))
        },
        // A rules match does not need the term, so a bad term costs nothing.
        BadRow { term: Some("X'00'"), ..row("bad term on a rules match", "'https://www.bing.com/search?q=e'", "GOOD", Ok(Some("e"))) },
    ]
}

/// Writes one bad row into a fixture holding one good search, the way each browser would
/// store it.
fn insert_bad_row(browser: Browser, profile: &Path, bad: &BadRow) {
    let good = cv("https://www.bing.com/search?q=ok", at(0), WHOLE);
    let (db, sql) = match browser {
        Browser::Firefox => {
            write_firefox(profile, &[fv(good.url, good.at, 1)]);
            let time = bad.time.replace("GOOD", &firefox_time(at(5)).to_string());
            let sql = format!(
                "INSERT INTO moz_places (id, url, hidden, guid) VALUES (100, {}, 0, 'bad');
                 INSERT INTO moz_historyvisits (place_id, visit_date, visit_type) VALUES (100, {time}, 1);",
                bad.url
            );
            ("places.sqlite", sql)
        }
        Browser::Chrome | Browser::Chromium => {
            write_chromium(profile, &[good]);
            let time = bad.time.replace("GOOD", &chromium_time(at(5)).to_string());
            let mut sql = format!(
                "INSERT INTO urls (id, url, last_visit_time, hidden) VALUES (100, {}, 0, 0);
                 INSERT INTO visits (url, visit_time, transition) VALUES (100, {time}, {});",
                bad.url,
                LINK | WHOLE
            );
            if let Some(term) = bad.term {
                sql.push_str(&format!("INSERT INTO keyword_search_terms VALUES (1, 100, {term}, '');"));
            }
            ("History", sql)
        }
    };
    Connection::open(profile.join(db)).expect("open").execute_batch(&sql).unwrap_or_else(|e| panic!("{}: {e}", bad.name));
}

#[test]
fn skips_bad_rows_and_counts_them_by_reason() {
    for browser in [Browser::Chromium, Browser::Firefox] {
        for bad in bad_rows() {
            // Firefox keeps no terms: the cases about terms are Chromium's.
            if browser == Browser::Firefox && bad.term.is_some() {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            insert_bad_row(browser, dir.path(), &bad);
            let found = read_searches(browser, dir.path(), None, &rules()).unwrap_or_else(|e| panic!("{browser} {}: the import fails: {e}", bad.name));
            let queries: Vec<&str> = found.searches.iter().map(|s| s.query.as_str()).collect();
            let mut want_queries = vec!["ok"];
            let mut want_skipped = Skipped::default();
            match bad.expect {
                Ok(Some(query)) => want_queries.push(query),
                Ok(None) => {}
                Err(why) => want_skipped.add(why),
            }
            assert_eq!(queries, want_queries, "{browser} {}", bad.name);
            assert_eq!(found.skipped, want_skipped, "{browser} {}", bad.name);
        }
    }
}

#[test]
fn skips_every_bad_row_of_one_history_and_keeps_the_rest() {
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
    let queries: Vec<&str> = found.searches.iter().map(|s| s.query.as_str()).collect();
    // The row whose transition is text is read as a plain link and kept; it is older. The
    // visit of a URL id that does not exist is no row of the join at all.
    assert_eq!(queries, ["t", "ok"]);
    let skipped: Vec<(Skip, usize)> = found.skipped.iter().collect();
    assert_eq!(skipped, [(Skip::NoUrl, 1), (Skip::UrlNotText, 1), (Skip::NoTime, 1), (Skip::TimeOutOfRange, 2)]);
}

#[test]
fn a_row_becomes_a_search_or_a_reason() {
    use rusqlite::types::ValueRef::{self, Blob, Integer, Null, Real, Text};
    let good_time = Integer(chromium_time(at(0)));
    let url = Text(b"https://www.bing.com/search?q=tent");
    // (case, url, time, term, the query found or why the row is skipped)
    type Case<'a> = (&'a str, ValueRef<'a>, ValueRef<'a>, ValueRef<'a>, Result<Option<&'a str>, Skip>);
    let table: &[Case<'_>] = &[
        ("a search", url, good_time, Null, Ok(Some("tent"))),
        ("no search", Text(b"https://example.com/"), good_time, Null, Ok(None)),
        ("null url", Null, good_time, Null, Err(Skip::NoUrl)),
        ("real url", Real(1.0), good_time, Null, Err(Skip::UrlNotText)),
        ("blob url", Blob(b"https://www.bing.com/search?q=tent"), good_time, Null, Err(Skip::UrlNotText)),
        ("lone surrogate in url", Text(b"https://www.bing.com/search?q=\xED\xA0\x80"), good_time, Null, Err(Skip::UrlNotUtf8)),
        ("null time", url, Null, Null, Err(Skip::NoTime)),
        ("text time", url, Text(b"13400000000000000"), Null, Err(Skip::NoTime)),
        ("zero time", url, Integer(0), Null, Err(Skip::TimeOutOfRange)),
        ("epoch itself", url, Integer(chromium::EPOCH_US), Null, Err(Skip::TimeOutOfRange)),
        ("smallest time", url, Integer(i64::MIN), Null, Err(Skip::TimeOutOfRange)),
        ("largest time", url, Integer(i64::MAX), Null, Err(Skip::TimeOutOfRange)),
        ("control characters only", Text(b"https://www.bing.com/search?q=%1B%07"), good_time, Null, Ok(None)),
        ("term on an unknown engine", Text(b"https://en.wikipedia.org/w/index.php?search=x"), good_time, Text(b"wal"), Ok(Some("wal"))),
        ("term on an IPv6 host", Text(b"http://[::1]/?q=x"), good_time, Text(b"x"), Err(Skip::NotASignal)),
        ("term on a host with an underscore", Text(b"https://my_host.example/?q=x"), good_time, Text(b"x"), Err(Skip::NotASignal)),
        ("term as an integer", Text(b"https://en.wikipedia.org/"), good_time, Integer(7), Err(Skip::TermNotText)),
    ];
    for (name, url, time, term, want) in table {
        let got = row::search(Browser::Chromium, &row::Row { url: *url, time: *time, term: *term }, &rules());
        assert_eq!(got.map(|found| found.map(|s| s.query)), want.map(|q| q.map(str::to_owned)), "{name}");
    }
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
        FirefoxVisit { from: Some(3), ..fv("https://www.google.com/search?q=boots", at(3) + time::Duration::milliseconds(40), firefox::REDIRECT_PERMANENT) },
        fv("https://duckduckgo.com/?q=framed", at(4), firefox::FRAMED_LINK),
        fv("https://duckduckgo.com/?q=embedded", at(4), firefox::EMBED),
        fv("https://www.google.com/search?q=red+shoes", at(5), firefox::RELOAD),
        fv("https://search.yahoo.com/search?p=camping+stove", at(6), LINK),
        // A redirect source whose place is visible (visited directly too): still skipped.
        fv("https://duckduckgo.com/?q=via", at(7), LINK),
        FirefoxVisit { from: Some(9), ..fv("https://duckduckgo.com/?q=via+target", at(7), firefox::REDIRECT_TEMPORARY) },
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
    let found = read_searches(Browser::Firefox, dir.path(), None, &rules()).expect("read").searches;
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
        let found = read_searches(*browser, profile, Some(*since), &rules()).expect("read").searches;
        assert_eq!(found.len(), *count, "{browser} since {since}");
        assert!(found.iter().all(|s| s.at >= *since));
    }
}

#[test]
fn ids_are_stable_across_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_chromium(dir.path(), &chromium_fixture());
    let first = read_searches(Browser::Chromium, dir.path(), None, &rules()).expect("read").searches;
    let second = read_searches(Browser::Chromium, dir.path(), None, &rules()).expect("read").searches;
    assert_eq!(first, second);
    let ids: HashSet<&str> = first.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), first.len(), "ids are unique");
    for id in &ids {
        let hex = id.strip_prefix("h-").expect("h- prefix");
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    // The id names the browser, so the same profile read as Chrome is a different source.
    let chrome = read_searches(Browser::Chrome, dir.path(), None, &rules()).expect("read").searches;
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
    let found = read_searches(Browser::Firefox, &profile, None, &rules()).expect("read").searches;
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
    let found = read_searches(Browser::Chromium, &profile, None, &rules()).expect("read").searches;
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
    let found = read_searches(Browser::Chromium, dir.path(), None, &engines).expect("read").searches;
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
    let found = read_searches(Browser::Firefox, dir.path(), None, &engines).expect("read").searches;
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
        (Browser::Chrome, chromium::EPOCH_US + 1, Some(datetime!(1970-01-01 0:00:00.000001 UTC))),
        (Browser::Firefox, 1_795_431_500_675_685, Some(datetime!(2026-11-23 10:58:20.675685 UTC))),
        (Browser::Chromium, 0, None),
        (Browser::Chromium, i64::MIN, None),
        (Browser::Firefox, -1, None),
        (Browser::Firefox, i64::MAX, None),
    ];
    for (browser, raw, want) in table {
        let epoch = match browser {
            Browser::Chrome | Browser::Chromium => chromium::EPOCH_US,
            Browser::Firefox => firefox::EPOCH_US,
        };
        assert_eq!(visit::instant(*raw, epoch), *want, "{browser} {raw}");
        if let Some(at) = want {
            assert_eq!(visit::stored_since(Some(*at), epoch), *raw);
        }
    }
    assert_eq!(visit::stored_since(None, firefox::EPOCH_US), i64::MIN);
}

#[test]
fn copies_go_to_a_private_directory_removed_on_drop() {
    let dir = snapshot::private_dir().expect("temporary directory");
    let path = dir.path().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only the owner may enter");
    }
    fs::write(path.join("History"), b"a copy").expect("write");
    drop(dir);
    assert!(!path.exists(), "{} is left behind", path.display());
}
