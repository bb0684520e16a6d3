//! The audit chain as the person checks it: `optin audit --verify` passes on the log the
//! agent wrote, and once a record is edited, removed or moved in the database behind
//! optin's back, it fails and names the first record that is not as the chain committed
//! to it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use optin_protocol::bundle::GrantBundle;
use optin_tests::{fixture, now, Agent, Home};

/// Records the log of [`recorded`] holds.
const RECORDS: u64 = 6;

/// A stopped agent's home whose log holds [`RECORDS`] records: granted, served, refused,
/// sharing paused, sharing resumed, revoked.
async fn recorded() -> Home {
    recorded_with_bundle().await.0
}

/// [`recorded`], with the bundle of its grant (revoked by the last record).
async fn recorded_with_bundle() -> (Home, GrantBundle) {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200);
    assert_eq!(agent.get("/v1/slice?kinds=purchase", Some(&bundle.token)).await.status.as_u16(), 403);
    agent.cli(&["pause"]).await.ok();
    agent.cli(&["resume"]).await.ok();
    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    let home = agent.stop();
    let events: Vec<String> =
        home.cli(&["audit", "--json"]).await.json()["records"].as_array().expect("records").iter().map(|r| r["event"]["type"].to_string()).collect();
    assert_eq!(events, [r#""granted""#, r#""served""#, r#""refused""#, r#""sharing""#, r#""sharing""#, r#""revoked""#]);
    (home, bundle)
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
    let plural = if records == 1 { "" } else { "s" };
    assert_eq!(out.ok().trim(), format!("audit chain intact ({records} record{plural})"));
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

/// Leaves the store as an optin that kept neither a chain head nor MACs left it.
fn as_an_older_optin_left_it(home: &Home) {
    with_store(home, |db| {
        let meta = db.open_tree("meta").expect("the meta tree");
        meta.remove("audit_head").expect("remove").expect("this optin keeps a chain head");
        meta.remove("audit_head_mac").expect("remove").expect("this optin MACs the chain head");
        for tree in ["audit_macs", "grant_macs"] {
            db.drop_tree(tree).expect("drop");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_macs_is_sealed_as_found_once_and_then_covered() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200);
    let home = agent.stop();
    as_an_older_optin_left_it(&home);
    // The upgrade trusts what it finds: the grant still serves, the log verifies, and a
    // record says what was taken as found.
    let agent = home.serve(&[]).await;
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200, "a grant from before still serves");
    let records = agent.cli(&["audit", "--json"]).await.json();
    let events: Vec<&Value> = records["records"].as_array().expect("records").iter().map(|r| &r["event"]).collect();
    assert_eq!(events[2], &serde_json::json!({"type": "sealed", "records": 2, "grants": 1}), "{records:#}");
    assert_eq!(events.len(), 4, "granted, served, sealed, served: {records:#}");
    let table = agent.cli(&["audit"]).await;
    assert!(table.ok().contains("2 records and 1 grant taken as found"), "{table:?}");
    agent.cli(&["audit", "--verify"]).await.ok();
    let home = agent.stop();
    verifies(&home, 4).await;
    // Once sealed, a store is checked, not sealed again.
    tamper(&home, Tamper::Edit(4));
    home.cli(&["audit", "--verify"]).await.fails(1, "record 4: its MAC does not verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_appended_onto_a_shortened_log_keeps_the_break_in_view() {
    let home = recorded().await;
    attack(&home, Attack::Truncate(2));
    // The agent runs on the shortened log and records more: the break stays where it was.
    let agent = home.serve(&[]).await;
    agent.cli(&["pause"]).await.ok();
    agent.cli(&["resume"]).await.ok();
    let home = agent.stop();
    home.cli(&["audit", "--verify"]).await.fails(1, "record 5: it has no MAC");
}

/// Rewrites the whole log as someone who read SPEC.md would: `rewrite` gets the records in
/// order and returns the ones to keep, which are then renumbered from 1, chained by the
/// SHA-256 of their bytes and committed to by a new chain head. Nothing else is touched.
fn rewrite_log(home: &Home, rewrite: impl FnOnce(Vec<Value>) -> Vec<Value>) {
    with_store(home, |db| {
        let log = db.open_tree("audit").expect("the audit tree");
        let stored: Vec<Vec<u8>> = log.iter().values().map(|v| v.expect("read").to_vec()).collect();
        let parse = |bytes: &[u8]| -> Value { serde_json::from_slice(bytes).expect("a JSON record") };
        let kept = rewrite(stored.iter().map(|b| parse(b)).collect());
        log.clear().expect("clear");
        let mut prev = [0u8; 32];
        for (seq, mut record) in (1u64..).zip(kept) {
            record["seq"] = seq.into();
            record["prev"] = optin_protocol::hex(&prev).into();
            // A record left as it was keeps its bytes, and so its hash.
            let unchanged = stored.iter().find(|b| parse(b) == record);
            let bytes = unchanged.cloned().unwrap_or_else(|| serde_json::to_vec(&record).expect("JSON"));
            prev = optin_protocol::sha256(&bytes);
            log.insert(key(seq), bytes).expect("write");
        }
        let head = format!("{}:{}", log.len(), optin_protocol::hex(&prev));
        db.open_tree("meta").expect("the meta tree").insert("audit_head", head.as_bytes()).expect("write");
    });
}

/// Attacks on the log by someone who can write the database but does not hold the identity
/// key: each rewrites the log consistently, hashes and chain head included.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Removes the last records and commits the head to the one before them.
    Truncate(usize),
    /// Leaves out every `served` record.
    DropServed,
    /// Names another marketer in every record.
    RenameMarketer,
    /// Reverses the order of the records.
    Reverse,
}

fn attack(home: &Home, how: Attack) {
    rewrite_log(home, |mut records| {
        match how {
            Attack::Truncate(n) => records.truncate(records.len() - n),
            Attack::DropServed => records.retain(|r| r["event"]["type"] != "served"),
            Attack::RenameMarketer => {
                for r in &mut records {
                    if r["event"]["marketer"] == "acme.example" {
                        r["event"]["marketer"] = "globex.example".into();
                    }
                }
            }
            Attack::Reverse => records.reverse(),
        }
        records
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_log_rewritten_whole_without_the_identity_key() {
    let original = recorded().await;
    let cases =
        [(Attack::Truncate(2), "the chain head"), (Attack::DropServed, "record 2:"), (Attack::RenameMarketer, "record 1:"), (Attack::Reverse, "record 1:")];
    for (how, named) in cases {
        let home = copy_of(&original);
        attack(&home, how);
        let out = home.cli(&["audit", "--verify"]).await;
        let said = out.fails(1, named);
        assert!(said.contains("MAC"), "{how:?} is named as a record or head the agent did not write: {said}");
        assert!(!out.stdout.contains("intact"), "{how:?}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_edited_in_the_store_serves_nothing_and_shows_as_damaged() {
    let (home, bundle) = recorded_with_bundle().await;
    with_store(&home, |db| {
        let grants = db.open_tree("grants").expect("the grants tree");
        let stored = grants.get(bundle.grant_id.as_str()).expect("read").expect("the grant");
        let mut grant: Value = serde_json::from_slice(&stored).expect("a JSON grant");
        grant.as_object_mut().expect("an object").remove("revoked_at").expect("the grant was revoked");
        grants.insert(bundle.grant_id.as_str(), serde_json::to_vec(&grant).expect("JSON")).expect("write");
    });
    let agent = home.serve(&[]).await;
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 401, "the un-revoked grant serves nothing");
    let grants = agent.cli(&["grants", "--json"]).await.json();
    assert_eq!(grants[0]["state"], "damaged", "{grants}");
    let listed = agent.cli(&["grants"]).await;
    assert!(listed.ok().contains("damaged"), "{listed:?}");
    // Revoking it again is how the person settles it: it is then revoked, and intact.
    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    assert_eq!(agent.cli(&["grants", "--json"]).await.json()[0]["state"], "revoked");
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 401);
}

/// The record of `seq` in `optin audit --json`, if the log holds one.
async fn record_at(home: &Home, seq: u64) -> Option<Value> {
    let records = home.cli(&["audit", "--json"]).await.json();
    records["records"].as_array().expect("records").iter().find(|r| r["seq"] == seq).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketers_slice_witnesses_the_log_even_against_a_rollback() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let snapshot = copy_of(&agent.stop());
    let agent = copy_of(&snapshot).serve(&[]).await;
    let answer = agent.get("/v1/slice", Some(&bundle.token)).await;
    let jws = String::from_utf8(answer.body).expect("a JWS is ASCII");
    let claims = bundle.verify_slice(&jws).expect("the slice verifies");
    let seq = claims.audit_seq.expect("a served slice names its record");
    let home = agent.stop();
    let record = record_at(&home, seq).await.expect("the log holds the slice's record");
    assert_eq!(record["event"]["type"], "served");
    assert_eq!(record["event"]["slice_id"], claims.jti.as_str());
    assert_eq!(record["event"]["jws_sha256"], optin_protocol::hex(&optin_protocol::sha256(jws.as_bytes())));
    // Put back whole as it was before the slice, the store verifies (optin wrote all of it),
    // but the marketer's copy names a record the log does not hold.
    verifies(&snapshot, 1).await;
    assert_eq!(record_at(&snapshot, seq).await, None, "the rolled-back log lacks the record the slice names");
}

/// Sends `count` requests for `path` with `token` over one kept-alive HTTP/1.1 connection
/// and returns their statuses.
async fn flood(agent: &Agent, path: &str, token: &str, count: usize) -> Vec<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = agent.client().connect().await.expect("a TLS connection");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n", agent.addr());
    let mut statuses = Vec::with_capacity(count);
    let mut read = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..count {
        tls.write_all(request.as_bytes()).await.expect("send a request");
        // One response: its head, then as many body bytes as it says.
        let (status, end, length) = loop {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
                let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
                let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).expect("a length");
                if read.len() >= end + 4 + length {
                    break (status, end, length);
                }
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(15), tls.read(&mut buf)).await.expect("an answer in time").expect("read");
            assert!(n > 0, "the agent closed the connection after {} requests", statuses.len());
            read.extend_from_slice(&buf[..n]);
        };
        read.drain(..end + 4 + length);
        statuses.push(status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_with_a_revoked_token_is_counted_not_recorded() {
    /// Requests sent over each of four connections at once, all to 127.0.0.1.
    const EACH: usize = 750;
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    let started = std::time::Instant::now();
    let token = bundle.token.as_str();
    let floods = tokio::join!(
        flood(&agent, "/v1/slice", token, EACH),
        flood(&agent, "/v1/slice", token, EACH),
        flood(&agent, "/v1/slice", token, EACH),
        flood(&agent, "/v1/slice", token, EACH)
    );
    for statuses in [floods.0, floods.1, floods.2, floods.3] {
        assert!(statuses.iter().all(|s| *s == 401), "a revoked token is refused");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "the flood is bounded in time");
    let records = agent.cli(&["audit", "--json"]).await.json();
    let events: Vec<&Value> = records["records"].as_array().expect("records").iter().map(|r| &r["event"]).collect();
    assert_eq!(events.len(), 2, "granted and revoked only: the refusals are counted: {:?}", &events[..events.len().min(5)]);
    let table = agent.cli(&["audit"]).await;
    let line = table.ok().lines().find(|l| l.contains(bundle.grant_id.as_str()) && l.contains("grant revoked")).unwrap_or_else(|| panic!("{table:?}"));
    assert!(line.contains(&(4 * EACH).to_string()), "the count is shown: {line}");
    let home = agent.stop();
    verifies(&home, 2).await;
    // A count lowered behind optin's back fails its MAC.
    with_store(&home, |db| {
        let counts = db.open_tree("refusal_counts").expect("the counts");
        let (key, value) = counts.iter().next().expect("one count").expect("read");
        let mut count: Value = serde_json::from_slice(&value).expect("a JSON count");
        count["count"] = 1.into();
        counts.insert(key, serde_json::to_vec(&count).expect("JSON")).expect("write");
    });
    home.cli(&["audit", "--verify"]).await.fails(1, "counted as `grant revoked` do not carry their MAC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_with_a_live_token_is_recorded_in_part_and_counted() {
    /// Refused requests of each kind, over one connection each.
    const EACH: usize = 300;
    /// The records a grant's refusals get at once (`RecordBudget::BURST`), and the seconds
    /// each further one waits for (`RecordBudget::EVERY`).
    const BURST: u64 = 20;
    const EVERY: u64 = 3;
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let started = std::time::Instant::now();
    let malformed = flood(&agent, "/v1/slice?since=yesterday", &bundle.token, EACH).await;
    let beyond = flood(&agent, "/v1/slice?kinds=purchase", &bundle.token, EACH).await;
    agent.cli(&["pause"]).await.ok();
    let paused = flood(&agent, "/v1/slice", &bundle.token, EACH).await;
    let elapsed = started.elapsed().as_secs();
    for (statuses, status) in [(&malformed, 400), (&beyond, 403), (&paused, 403)] {
        assert!(statuses.iter().all(|s| *s == status), "every request refused with {status}");
    }

    let audit = agent.cli(&["audit", "--json"]).await.json();
    let refused: Vec<&Value> = audit["records"].as_array().expect("records").iter().map(|r| &r["event"]).filter(|e| e["type"] == "refused").collect();
    let recorded = refused.len() as u64;
    assert!(recorded >= BURST, "the first refusals are recorded in full: {recorded}");
    assert!(recorded <= BURST + elapsed / EVERY + 1, "{recorded} refusals recorded in {elapsed} s");
    assert!(refused.iter().all(|e| e["reason"] != "sharing paused"), "paused refusals are counted, not recorded");
    let counted: Vec<(String, u64)> = audit["counted"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| (c["reason"].as_str().expect("a reason").to_owned(), c["count"].as_u64().expect("a count")))
        .collect();
    let of = |reason: &str| counted.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n);
    let recorded_with = |status: u64| refused.iter().filter(|e| e["status"] == status).count() as u64;
    assert_eq!(of("sharing paused"), EACH as u64, "{counted:?}");
    assert_eq!(recorded_with(400) + of("malformed request"), EACH as u64, "every malformed request is recorded or counted: {counted:?}");
    assert_eq!(recorded_with(403) + of("asked beyond the grant"), EACH as u64, "every request beyond the grant is recorded or counted: {counted:?}");
    let table = agent.cli(&["audit"]).await;
    assert!(table.ok().contains("403 sharing paused"), "{table:?}");
    let home = agent.stop();
    verifies(&home, 2 + recorded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_longer_than_a_page_is_read_and_verified_page_by_page() {
    /// More than the 1000 records of one page.
    const SLICES: usize = 1100;
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search", "category", "30d").await;
    let statuses = flood(&agent, "/v1/slice", &bundle.token, SLICES).await;
    assert!(statuses.iter().all(|s| *s == 200), "every slice is served");
    let records = SLICES as u64 + 1;
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let seqs: Vec<u64> = audit["records"].as_array().expect("records").iter().map(|r| r["seq"].as_u64().expect("a seq")).collect();
    assert_eq!(seqs, (1..=records).collect::<Vec<_>>(), "every record once, in order, across pages");
    let home = agent.stop();
    verifies(&home, records).await;
    // A break in a later page is found there.
    let late = records - 5;
    tamper(&home, Tamper::Edit(late));
    home.cli(&["audit", "--verify"]).await.fails(1, &format!("record {late}: its MAC does not verify"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_who_a_slice_went_to_what_was_granted_and_which_signal_was_forgotten() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let root = optin_protocol::token::Token::parse(&bundle.token).expect("a token");
    let partner = root.attenuate(&"aud=partner.example".parse().expect("a caveat")).encode();
    assert_eq!(agent.get("/v1/slice", Some(&partner)).await.status.as_u16(), 200);
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200);
    agent.cli(&["forget", "--id", "s2"]).await.ok();

    let records = agent.cli(&["audit", "--json"]).await.json();
    let events: Vec<&Value> = records["records"].as_array().expect("records").iter().map(|r| &r["event"]).collect();
    assert_eq!(events[0]["terms"], serde_json::to_value(&bundle.terms).expect("terms"), "the terms as granted");
    assert_eq!(events[0]["purpose"], "show me relevant offers");
    assert_eq!((&events[1]["type"], &events[1]["audience"]), (&"served".into(), &"partner.example".into()));
    assert_eq!(events[3]["what"], "id=s2", "{:#}", events[3]);

    let table = agent.cli(&["audit"]).await;
    let text = table.ok();
    let line = |event: &str, n: usize| text.lines().filter(|l| l.contains(&format!(" {event} "))).nth(n).unwrap_or_else(|| panic!("{event} {n}:\n{text}"));
    let cells = |l: &str| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(cells(line("served", 0))[5], "partner.example", "the audience has its own column");
    assert_eq!(cells(line("served", 1))[5], "acme.example");
    let granted = line("granted", 0);
    assert!(granted.contains("search,cart at raw level, 30d back, until "), "{granted}");
    assert!(line("forgot", 0).contains("(id=s2)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_can_be_narrowed_to_a_grant_a_marketer_or_a_time_and_summed_up_per_marketer() {
    let agent = Agent::start().await;
    // Dated from before today: a category slice reaches only to the start of today, so the
    // counts below would otherwise depend on the hour the test runs.
    let yesterday = now().replace_time(time::Time::MIDNIGHT) - time::Duration::hours(1);
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(yesterday))).await;
    let acme = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let globex = agent.grant("globex.example", "search", "category", "30d").await;
    for _ in 0..2 {
        assert_eq!(agent.get("/v1/slice", Some(&acme.token)).await.status.as_u16(), 200);
    }
    assert_eq!(agent.get("/v1/slice?kinds=purchase", Some(&acme.token)).await.status.as_u16(), 403);
    assert_eq!(agent.get("/v1/slice", Some(&globex.token)).await.status.as_u16(), 200);
    agent.cli(&["revoke", globex.grant_id.as_str()]).await.ok();
    assert_eq!(agent.get("/v1/slice", Some(&globex.token)).await.status.as_u16(), 401);
    agent.cli(&["pause"]).await.ok();

    let types = |out: &Value| -> Vec<String> {
        out["records"].as_array().expect("records").iter().map(|r| r["event"]["type"].as_str().expect("a type").to_owned()).collect()
    };
    let all = agent.cli(&["audit", "--json"]).await.json();
    assert_eq!(types(&all), ["granted", "granted", "served", "served", "refused", "served", "revoked", "sharing"]);
    let of_acme = agent.cli(&["audit", "--json", "--grant", acme.grant_id.as_str()]).await.json();
    assert_eq!(types(&of_acme), ["granted", "served", "served", "refused"]);
    let of_globex = agent.cli(&["audit", "--json", "--marketer", "globex.example"]).await.json();
    assert_eq!(types(&of_globex), ["granted", "served", "revoked"]);
    let later = optin_tests::ts(now() + time::Duration::hours(1));
    assert_eq!(types(&agent.cli(&["audit", "--json", "--since", &later]).await.json()), Vec::<String>::new());
    assert_eq!(types(&agent.cli(&["audit", "--json", "--since", "1h"]).await.json()).len(), 8, "a span back from now");

    let summary = agent.cli(&["audit", "--summary"]).await;
    let rows: Vec<Vec<&str>> = summary.ok().lines().skip(1).take(2).map(|l| l.split_whitespace().take(5).collect()).collect();
    assert_eq!(rows, [["acme.example", "1", "2", "10", "1"], ["globex.example", "1", "1", "2", "1"]], "{summary:?}");
    let only_globex = agent.cli(&["audit", "--summary", "--marketer", "globex.example"]).await;
    assert!(only_globex.ok().ends_with("1 marketer\n"), "{only_globex:?}");
    agent.cli(&["audit", "--verify", "--grant", acme.grant_id.as_str()]).await.fails(2, "cannot be used with");
}

/// The records a log pruned to `--audit-keep-records 50` keeps.
const KEPT: u64 = 50;

/// Slices served through an agent that keeps [`KEPT`] records: far more than it keeps.
const SERVED: u64 = 400;

/// The records of `optin audit --json`, and its checkpoint.
async fn log_of(agent: &Agent) -> (Vec<u64>, Value) {
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let seqs = audit["records"].as_array().expect("records").iter().map(|r| r["seq"].as_u64().expect("a seq")).collect();
    (seqs, audit["checkpoint"].clone())
}

/// A stopped agent's home whose log was pruned to its last [`KEPT`] records, after a grant
/// and [`SERVED`] slices, with the bundle of that grant.
async fn pruned() -> (Home, GrantBundle) {
    let agent = Home::new().serve(&["--audit-keep-records", &KEPT.to_string()]).await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search", "category", "30d").await;
    let statuses = flood(&agent, "/v1/slice", &bundle.token, SERVED as usize).await;
    assert!(statuses.iter().all(|s| *s == 200), "every slice is served");
    // The agent prunes in the background, in batches: wait for it to reach the bound.
    let head = SERVED + 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (seqs, checkpoint) = loop {
        let (seqs, checkpoint) = log_of(&agent).await;
        if seqs.len() as u64 == KEPT || std::time::Instant::now() > deadline {
            break (seqs, checkpoint);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(seqs, (head - KEPT + 1..=head).collect::<Vec<_>>(), "the last {KEPT} records are kept, in order");
    assert_eq!(checkpoint["seq"], head - KEPT, "the checkpoint stands for every record before them: {checkpoint:#}");
    (agent.stop(), bundle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_log_stays_bounded_and_still_verifies_and_counts_every_slice() {
    let (home, bundle) = pruned().await;
    let first_kept = SERVED + 1 - KEPT + 1;
    let out = home.cli(&["audit", "--verify"]).await;
    assert_eq!(out.ok().trim(), format!("audit chain intact ({KEPT} records after the checkpoint at record {})", first_kept - 1));
    // What was pruned still counts: the grant's slices, and the summary per marketer.
    let grants = home.cli(&["grants", "--json"]).await.json();
    assert_eq!(grants[0]["usage"]["slices"], SERVED, "{grants:#}");
    let summary = home.cli(&["audit", "--summary"]).await;
    let line = summary.ok().lines().find(|l| l.starts_with("acme.example")).unwrap_or_else(|| panic!("{summary:?}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[1..3], ["1", &SERVED.to_string()], "one grant and every slice: {line}");
    let table = home.cli(&["audit"]).await;
    assert!(table.ok().contains(&format!("records 1 to {} were pruned", first_kept - 1)), "{table:?}");
    let of_grant = home.cli(&["audit", "--json", "--grant", bundle.grant_id.as_str()]).await.json();
    assert_eq!(of_grant["checkpoint"]["grants"][0]["slices"], SERVED - KEPT, "{of_grant:#}");
    // And the log keeps its bound as the agent serves on, across a restart.
    let agent = home.serve(&["--audit-keep-records", &KEPT.to_string()]).await;
    let statuses = flood(&agent, "/v1/slice", &bundle.token, 100).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log_of(&agent).await.0.len() as u64 > KEPT && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(log_of(&agent).await.0.len() as u64, KEPT);
    assert_eq!(agent.cli(&["grants", "--json"]).await.json()[0]["usage"]["slices"], SERVED + 100);
    let home = agent.stop();
    home.cli(&["audit", "--verify"]).await.ok();
}

/// A change to a pruned log, made with no agent running.
#[derive(Clone, Copy, Debug)]
enum Prune {
    /// Lowers the slices the checkpoint counts for the grant.
    EditCheckpoint,
    /// Moves the checkpoint on past the first kept record, as if it were pruned too.
    ForgeCheckpoint,
    /// Removes the checkpoint's MAC.
    UnsealCheckpoint,
    /// Removes the checkpoint.
    RemoveCheckpoint,
    /// Removes the first record kept.
    RemoveFirstKept,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_pruned_log_whose_checkpoint_or_first_record_was_changed() {
    let (original, _) = pruned().await;
    let first = SERVED + 1 - KEPT + 1;
    let cases = [
        (Prune::EditCheckpoint, "checkpoint".to_owned()),
        (Prune::ForgeCheckpoint, "checkpoint".to_owned()),
        (Prune::UnsealCheckpoint, "checkpoint".to_owned()),
        (Prune::RemoveCheckpoint, "record 1:".to_owned()),
        (Prune::RemoveFirstKept, format!("record {first}:")),
    ];
    for (how, named) in cases {
        let home = copy_of(&original);
        with_store(&home, |db| {
            let meta = db.open_tree("meta").expect("the meta tree");
            let log = db.open_tree("audit").expect("the audit tree");
            let stored = meta.get("audit_checkpoint").expect("read").expect("a checkpoint");
            let mut checkpoint: Value = serde_json::from_slice(&stored).expect("a JSON checkpoint");
            match how {
                Prune::EditCheckpoint => {
                    checkpoint["grants"][0]["slices"] = 1.into();
                    meta.insert("audit_checkpoint", serde_json::to_vec(&checkpoint).expect("JSON")).expect("write");
                }
                Prune::ForgeCheckpoint => {
                    let bytes = log.remove(key(first)).expect("remove").expect("the first kept record");
                    checkpoint["seq"] = first.into();
                    checkpoint["hash"] = optin_protocol::hex(&optin_protocol::sha256(&bytes)).into();
                    meta.insert("audit_checkpoint", serde_json::to_vec(&checkpoint).expect("JSON")).expect("write");
                }
                Prune::UnsealCheckpoint => {
                    meta.remove("audit_checkpoint_mac").expect("remove").expect("the checkpoint's MAC");
                }
                Prune::RemoveCheckpoint => {
                    meta.remove("audit_checkpoint").expect("remove");
                    meta.remove("audit_checkpoint_mac").expect("remove");
                }
                Prune::RemoveFirstKept => {
                    log.remove(key(first)).expect("remove").expect("the first kept record");
                }
            }
        });
        let out = home.cli(&["audit", "--verify"]).await;
        out.fails(1, &named);
        assert!(!out.stdout.contains("intact"), "{how:?}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_an_audit_bound_that_keeps_nothing() {
    let home = Home::new();
    home.cli(&["serve", "--audit-keep-records", "0"]).await.fails(2, "--audit-keep-records <N>': the audit log keeps at least 1 record");
    home.cli(&["serve", "--audit-keep-age", "23h"]).await.fails(2, "--audit-keep-age <SPAN>': the audit log keeps records for at least 1d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_served_again_unchanged_is_on_record_once_per_delivery() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let fetch = || async {
        let answer = agent.get("/v1/slice?kinds=search", Some(&bundle.token)).await;
        assert_eq!(answer.status.as_u16(), 200);
        String::from_utf8(answer.body).expect("a JWS is ASCII")
    };
    let (first, again) = (fetch().await, fetch().await);
    assert_eq!(again, first, "nothing changed: the same signed bytes");
    let claims = bundle.verify_slice(&again).expect("a repeat verifies as the first did");
    let newer = serde_json::json!({"kind": "search", "at": optin_protocol::timestamp::format(now() - time::Duration::minutes(5)), "query": "one more", "engine": "duckduckgo.com"});
    agent.ingest(&format!("{newer}\n")).await;
    let third = fetch().await;
    let cut = bundle.verify_slice(&third).expect("the new cut verifies");
    assert_ne!(cut.jti, claims.jti, "a signal stored since: cut and signed again");
    assert_eq!(cut.items.len(), claims.items.len() + 1, "holding the signal stored");

    let home = agent.stop();
    verifies(&home, 4).await;
    let records = home.cli(&["audit", "--json"]).await.json();
    let served: Vec<(Value, Value)> = records["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["event"]["type"] == "served")
        .map(|r| (r["event"]["slice_id"].clone(), r["event"]["repeat_of"].clone()))
        .collect();
    let first_seq = claims.audit_seq.expect("numbered");
    assert_eq!(
        served,
        [(claims.jti.as_str().into(), Value::Null), (claims.jti.as_str().into(), first_seq.into()), (cut.jti.as_str().into(), Value::Null)],
        "three deliveries, the second naming the first's record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_off_by_sigkill_while_slices_are_served_still_verifies() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    // Four marketers' clients at once, asking the same slice again and new ones, so that
    // records are appended one by one and several together; SIGKILL lands mid-stream.
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for n in 0..4usize {
        let (client, token, served) = (agent.client(), bundle.token.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            for i in 0usize.. {
                let limit = if n % 2 == 0 { 5 } else { 1 + i % 5 };
                match client.get(&format!("/v1/slice?kinds=search&limit={limit}"), Some(&token)).await {
                    Ok(r) if r.status.as_u16() == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => break,
                };
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while served.load(Ordering::Relaxed) < 200 {
        assert!(std::time::Instant::now() < deadline, "200 slices served within a minute");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let home = agent.kill_hard();
    for client in clients {
        client.await.expect("a client task");
    }
    // What sled kept is a prefix of what was written, and the next use of the store
    // completes an append cut short: the chain verifies, head and all, and holds the record
    // of every slice a client received.
    let out = home.cli(&["audit", "--verify"]).await;
    let said = out.ok().trim().to_owned();
    let records: u64 = said
        .strip_prefix("audit chain intact (")
        .and_then(|rest| rest.strip_suffix(" records)").or_else(|| rest.strip_suffix(" record)")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an intact chain: {said}"));
    // No slice leaves before its record is on disk: every answer received has its record
    // (and the grant has one).
    let delivered = served.load(Ordering::Relaxed) as u64;
    assert!(records > delivered, "{records} records for {delivered} slices delivered and the grant");
    // And the agent carries on from there.
    let agent = home.serve(&[]).await;
    assert_eq!(agent.get("/v1/slice?kinds=search&limit=5", Some(&bundle.token)).await.status.as_u16(), 200);
    let home = agent.stop();
    verifies(&home, records + 1).await;
}
