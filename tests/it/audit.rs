//! The audit chain as the person checks it: `optin audit --verify` passes on the log the
//! agent wrote, and once a record is edited, removed or moved in the database behind
//! optin's back, it fails and names the first record that is not as the chain committed
//! to it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use optin_tests::{fixture, now, Agent, Home};

/// Records the log of [`recorded`] holds.
const RECORDS: u64 = 6;

/// A stopped agent's home whose log holds [`RECORDS`] records: granted, served, refused,
/// sharing paused, sharing resumed, revoked.
async fn recorded() -> Home {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200);
    assert_eq!(agent.get("/v1/slice?kinds=purchase", Some(&bundle.token)).await.status.as_u16(), 403);
    agent.cli(&["pause"]).await.ok();
    agent.cli(&["resume"]).await.ok();
    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    let home = agent.stop();
    let events: Vec<String> = home.cli(&["audit", "--json"]).await.json().as_array().expect("records").iter().map(|r| r["event"]["type"].to_string()).collect();
    assert_eq!(events, [r#""granted""#, r#""served""#, r#""refused""#, r#""sharing""#, r#""sharing""#, r#""revoked""#]);
    home
}

/// A copy of `home` in a new temporary directory, with its permissions.
fn copy_of(home: &Home) -> Home {
    let copy = Home::new();
    copy_dir(home.path(), copy.path());
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).expect("make a directory");
    for entry in std::fs::read_dir(from).expect("read a directory") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_type().expect("a file type").is_file() {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
    let mode = std::fs::metadata(from).expect("metadata").permissions().mode();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("permissions");
}

/// A change made to the database with no agent running, as with a database editor.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Backdates a record by a day: it still reads.
    Edit(u64),
    Delete(u64),
    Swap(u64, u64),
    /// Makes a record's bytes something that is not a record.
    Damage(u64),
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Opens the store of `home` with sled itself, as the store's layout in SPEC.md describes it.
fn with_store(home: &Home, f: impl FnOnce(&sled::Db)) {
    // No agent runs, but sled's own threads may hold a store this process closed a moment
    // longer, and its lock with it: wait for them, as optin does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(home.path().join("store")) {
            Ok(db) => break db,
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("cannot open the store: {e}"),
        }
    };
    f(&db);
    db.flush().expect("flush");
}

fn tamper(home: &Home, how: Tamper) {
    with_store(home, |db| {
        let log = db.open_tree("audit").expect("the audit tree");
        let get = |seq: u64| log.get(key(seq)).expect("read").unwrap_or_else(|| panic!("no record {seq}"));
        match how {
            Tamper::Edit(seq) => {
                let mut record: Value = serde_json::from_slice(&get(seq)).expect("a JSON record");
                let at = optin_protocol::timestamp::parse(record["at"].as_str().expect("at")).expect("a time");
                record["at"] = optin_tests::ts(at - time::Duration::days(1)).into();
                log.insert(key(seq), serde_json::to_vec(&record).expect("JSON")).expect("write");
            }
            Tamper::Delete(seq) => {
                log.remove(key(seq)).expect("remove");
            }
            Tamper::Swap(a, b) => {
                let (x, y) = (get(a), get(b));
                log.insert(key(a), y).expect("write");
                log.insert(key(b), x).expect("write");
            }
            Tamper::Damage(seq) => {
                log.insert(key(seq), &b"{\"seq\":"[..]).expect("write");
            }
        }
    });
}

async fn verifies(home: &Home, records: u64) {
    let out = home.cli(&["audit", "--verify"]).await;
    assert_eq!(out.ok().trim(), format!("audit chain intact ({records} records)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_tampered_log_naming_the_first_bad_record() {
    let original = recorded().await;
    verifies(&original, RECORDS).await;
    let cases = [
        (Tamper::Edit(1), 1),
        (Tamper::Edit(3), 3),
        (Tamper::Edit(6), 6),
        (Tamper::Delete(1), 1),
        (Tamper::Delete(3), 3),
        (Tamper::Delete(6), 6),
        (Tamper::Swap(2, 5), 2),
        (Tamper::Swap(5, 6), 5),
        (Tamper::Damage(4), 4),
    ];
    for (how, seq) in cases {
        let home = copy_of(&original);
        verifies(&home, RECORDS).await;
        tamper(&home, how);
        let out = home.cli(&["audit", "--verify"]).await;
        out.fails(1, &format!("record {seq}:"));
        assert!(!out.stdout.contains("intact"), "{how:?}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_before_the_chain_head_verifies_and_then_covers_its_last_record() {
    let home = recorded().await;
    // As an optin that kept no chain head left the store.
    with_store(&home, |db| {
        let meta = db.open_tree("meta").expect("the meta tree");
        meta.remove("audit_head").expect("remove").expect("this optin keeps a chain head");
    });
    verifies(&home, RECORDS).await;
    with_store(&home, |db| {
        let head = db.open_tree("meta").expect("tree").get("audit_head").expect("read").expect("the head, computed on open");
        let head = String::from_utf8(head.to_vec()).expect("UTF-8");
        assert!(head.starts_with(&format!("{RECORDS}:")), "{head}");
    });
    tamper(&home, Tamper::Edit(RECORDS));
    home.cli(&["audit", "--verify"]).await.fails(1, &format!("record {RECORDS}:"));
}
