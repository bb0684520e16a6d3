//! `optin import`: searches from real browser history databases. The databases are rebuilt
//! from SQL dumps of profiles that headless Chromium 156 and Firefox ESR 153 wrote while
//! browsing local pages (`agent/tests-data/history/`).

use std::path::Path;

use serde_json::Value;

use optin_tests::Home;

fn build(db: &Path, dump: &str) {
    let conn = rusqlite::Connection::open(db).expect("a new SQLite file");
    conn.execute_batch(dump).expect("the dump loads");
}

fn chromium_profile(home: &Home) -> std::path::PathBuf {
    let profile = home.scratch("chromium-profile");
    std::fs::create_dir_all(&profile).expect("mkdir");
    build(&profile.join("History"), include_str!("../../agent/tests-data/history/chromium-156-history.sql"));
    profile
}

fn firefox_profile(home: &Home) -> std::path::PathBuf {
    let profile = home.scratch("firefox-profile");
    std::fs::create_dir_all(&profile).expect("mkdir");
    build(&profile.join("places.sqlite"), include_str!("../../agent/tests-data/history/firefox-esr-153-places.sql"));
    profile
}

#[tokio::test]
async fn imports_searches_once_with_a_dry_run_first() {
    let home = Home::new();
    for (browser, profile) in [("chromium", chromium_profile(&home)), ("firefox", firefox_profile(&home))] {
        let profile = profile.to_str().expect("utf-8");
        let dry: Value = home.cli(&["import", browser, "--profile", profile, "--dry-run", "--json"]).await.json();
        let found = dry["found"].as_u64().expect("found");
        assert!(found >= 3, "{browser}: the real profile holds several searches: {dry}");
        assert_eq!(dry["stored"], found, "{browser}: a dry run counts what would be added: {dry}");
        let before = list(home.cli(&["signals", "--json"]).await.json()).len();

        let added: Value = home.cli(&["import", browser, "--profile", profile, "--json"]).await.json();
        assert_eq!(added["stored"], found, "{browser}: {added}");
        let stored = list(home.cli(&["signals", "--json", "--kind", "search"]).await.json());
        assert_eq!(stored.len() as u64, before as u64 + found, "{browser}: the dry run stored nothing, the import all");
        let ours: Vec<&Value> = stored.iter().filter(|s| s["source"] == format!("{browser}-history")).collect();
        assert_eq!(ours.len() as u64, found);
        for s in &ours {
            assert!(s["query"].as_str().is_some_and(|q| !q.is_empty()) && s["engine"].as_str().is_some(), "{s}");
        }

        let again: Value = home.cli(&["import", browser, "--profile", profile, "--json"]).await.json();
        assert_eq!((again["stored"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(found)), "importing twice adds nothing");
    }
}

#[tokio::test]
async fn rejects_damaged_and_missing_histories_changing_nothing() {
    let home = Home::new();
    let good = chromium_profile(&home);
    home.cli(&["import", "chromium", "--profile", good.to_str().expect("utf-8")]).await.ok();
    let before = list(home.cli(&["signals", "--json"]).await.json());

    let garbage = home.scratch("garbage");
    std::fs::create_dir_all(&garbage).expect("mkdir");
    std::fs::write(garbage.join("History"), b"this is not a database, just bytes \x00\x01\x02").expect("write");
    let truncated = home.scratch("truncated");
    std::fs::create_dir_all(&truncated).expect("mkdir");
    let bytes = std::fs::read(good.join("History")).expect("read");
    std::fs::write(truncated.join("History"), &bytes[..bytes.len() / 3]).expect("write");
    let empty_dir = home.scratch("empty-profile");
    std::fs::create_dir_all(&empty_dir).expect("mkdir");

    for (browser, profile, needle) in [
        ("chromium", garbage.clone(), "History"),
        ("chromium", truncated.clone(), "History"),
        ("chromium", empty_dir.clone(), "History"),
        ("firefox", empty_dir.clone(), "places.sqlite"),
        ("chromium", home.scratch("no-such-profile"), "no-such-profile"),
    ] {
        let out = home.cli(&["import", browser, "--profile", profile.to_str().expect("utf-8")]).await;
        // The error names the file at fault.
        out.fails(1, needle);
    }
    let out = home.cli(&["import", "netscape"]).await;
    out.fails(2, "netscape");
    assert_eq!(list(home.cli(&["signals", "--json"]).await.json()), before, "nothing changed");
}

/// Microseconds from 1601-01-01 (Chromium's epoch) to 1970-01-01.
const CHROMIUM_EPOCH_US: i64 = 11_644_473_600_000_000;
/// A typed navigation that is its own whole redirect chain, as Chromium writes most visits.
const TYPED_WHOLE_CHAIN: i64 = 0x3000_0001;

/// Adds `n` distinct searches to a Chromium profile, a minute apart, and the rows a damaged
/// history may hold: a NULL URL, a URL that is not UTF-8 (and would put an escape sequence
/// on the terminal if it were printed), times out of range, and a search through a host
/// that is no domain, which the agent would refuse.
fn add_bulk_and_bad_rows(profile: &Path, n: usize) {
    let conn = rusqlite::Connection::open(profile.join("History")).expect("open History");
    conn.execute_batch("BEGIN").expect("begin");
    let start = (time::macros::datetime!(2026-01-01 0:00 UTC).unix_timestamp() * 1_000_000) + CHROMIUM_EPOCH_US;
    for i in 0..n {
        let id = 1_000_000 + i as i64;
        let at = start + i as i64 * 60_000_000;
        conn.execute(
            "INSERT INTO urls (id, url, title, visit_count, last_visit_time) VALUES (?1, ?2, '', 1, ?3)",
            rusqlite::params![id, format!("https://www.google.com/search?q=bulk+{i}"), at],
        )
        .expect("insert url");
        conn.execute("INSERT INTO visits (url, visit_time, transition) VALUES (?1, ?2, ?3)", rusqlite::params![id, at, TYPED_WHOLE_CHAIN])
            .expect("insert visit");
    }
    let good = start - 60_000_000;
    conn.execute_batch(&format!(
        "INSERT INTO urls (id, url, title, visit_count, last_visit_time) VALUES
            (900, NULL, '', 1, 0),
            (901, CAST(X'68747470733A2F2F7777772E62696E672E636F6D2F7365617263683F713D1B5B33316DFF' AS TEXT), '', 1, 0),
            (902, 'https://www.bing.com/search?q=far+future', '', 1, 0),
            (903, 'http://localhost:8080/?q=%1B%5B2J', '', 1, 0);
         INSERT INTO visits (url, visit_time, transition) VALUES
            (900, {good}, {TYPED_WHOLE_CHAIN}), (901, {good}, {TYPED_WHOLE_CHAIN}),
            (902, 9223372036854775807, {TYPED_WHOLE_CHAIN}), (902, -1, {TYPED_WHOLE_CHAIN}),
            (903, {good}, {TYPED_WHOLE_CHAIN});
         INSERT INTO keyword_search_terms (keyword_id, url_id, term, normalized_term) VALUES (9, 903, 'local', 'local');
         COMMIT;"
    ))
    .expect("bad rows");
}

#[tokio::test]
async fn imports_more_searches_than_one_batch_and_skips_bad_rows() {
    let home = Home::new();
    let profile = chromium_profile(&home);
    let profile_arg = profile.to_str().expect("utf-8");
    let real: Value = home.cli(&["import", "chromium", "--profile", profile_arg, "--dry-run", "--json"]).await.json();
    let real = real["found"].as_u64().expect("found");
    // More than one batch can hold, and not a multiple of it.
    let bulk = 12_345;
    assert!(bulk > optin_protocol::signal::limits::BATCH_SIGNALS);
    add_bulk_and_bad_rows(&profile, bulk);

    let out = home.command(&["import", "chromium", "--profile", profile_arg]).timeout(std::time::Duration::from_secs(120)).run().await;
    let total = real + bulk as u64;
    let text = out.ok();
    assert!(text.contains(&format!("found {total} searches in chromium history; added {total} (0 already present)")), "{text}");
    assert!(
        text.contains(
            "skipped 5 rows that could not be read: 1 with no URL, 1 with a URL that is not UTF-8, \
             2 with a visit time out of range, 1 with a search the agent would refuse"
        ),
        "{text}"
    );
    // Counts and reasons only: nothing of the rows reaches the terminal.
    assert!(!text.contains('\u{1b}') && !text.contains("localhost") && !text.contains("far future"), "{text:?}");
    let stored = list(home.cli(&["signals", "--json", "--kind", "search"]).await.json());
    assert_eq!(stored.len() as u64, total, "every search is stored, in batches");
    assert!(stored.iter().any(|s| s["query"] == "bulk 12344"), "the last batch is stored too");

    let again: Value =
        home.command(&["import", "chromium", "--profile", profile_arg, "--json"]).timeout(std::time::Duration::from_secs(120)).run().await.json();
    assert_eq!((again["stored"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(total)), "importing twice adds nothing: {}", again["skipped"]);
    let skipped = serde_json::json!({ "no-url": 1, "url-not-utf8": 1, "time-out-of-range": 2, "not-a-signal": 1 });
    assert_eq!(again["skipped"], skipped);
}

/// The array `optin signals --json` prints.
fn list(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_else(|| panic!("not a JSON array: {v}"))
}
