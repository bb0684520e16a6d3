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

/// The array `optin signals --json` prints.
fn list(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_else(|| panic!("not a JSON array: {v}"))
}
