//! The audit log: every command that changes what is shared appends its event, and the
//! chain names the first record that was edited, removed or moved behind the store's back.

use optin_protocol::scope::GrantId;
use serde_json::{json, Value};
use time::Duration;

use super::{search, week, CoreError, World, T};
use crate::core::audit::{self, AuditHead, AuditKeep, ChainError, Pruned, Seal, StoredRecord};
use crate::core::command::{AuditEntry, Request, Response};
use crate::core::Refusal;
use crate::store::AuditRecord;
use crate::store::{AuditEvent, Forget};

/// An event as the table below writes it.
fn event(e: &AuditEvent) -> Value {
    let mut value = serde_json::to_value(e).expect("an event serializes");
    // Grant ids are random; the table names no grant.
    if let Some(object) = value.as_object_mut() {
        object.remove("grant_id");
        object.remove("slice_id");
        object.remove("jws_sha256");
        // The terms and purpose agreed are checked against the bundle below.
        object.remove("terms");
        object.remove("purpose");
    }
    value
}

/// What one step does: a command, or a marketer's slice request.
enum Step {
    Command(Request),
    Slice(&'static str, &'static str),
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_appends_its_event() {
    let world = World::new();
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let other = world.grant_to("globex.example", "search", "raw", "7d").await;
    let grant_id = |g: &GrantId| g.clone();
    let forged = optin_protocol::token::Token::mint(&[7; 32], &bundle.grant_id).encode();
    let tokens = [("acme", bundle.token.clone()), ("forged", forged)];
    let ndjson: String = week().iter().map(|s| format!("{s}\n")).collect();
    let steps: Vec<(Step, Option<Value>)> = vec![
        (Step::Command(Request::Ingest { ndjson: ndjson.clone(), dry_run: true }), None),
        (Step::Command(Request::Ingest { ndjson, dry_run: false }), None),
        (Step::Command(Request::Signals { kind: None }), None),
        (Step::Command(Request::Grants), None),
        (Step::Command(Request::Status), None),
        (Step::Command(Request::Preview { grant_id: grant_id(&bundle.grant_id), limit: None, cursor: None }), None),
        (Step::Command(Request::Bundle { grant_id: grant_id(&bundle.grant_id) }), None),
        (Step::Command(Request::Audit { since_seq: 0, limit: None }), None),
        (Step::Slice("acme", "kinds=search"), Some(json!({"type": "served", "marketer": "acme.example", "asked": "/v1/slice?kinds=search", "items": 2}))),
        (
            Step::Slice("acme", "kinds=purchase"),
            Some(json!({"type": "refused", "marketer": "acme.example", "asked": "/v1/slice?kinds=purchase", "status": 403,
                "reason": "kinds: kind `purchase` is not granted; granted: search,cart"})),
        ),
        (Step::Slice("forged", ""), None),
        (Step::Command(Request::Sharing { paused: true }), Some(json!({"type": "sharing", "paused": true}))),
        // Counted, not recorded: `live_grants_refusals_are_recorded_while_their_budget_lasts`.
        (Step::Slice("acme", ""), None),
        (Step::Command(Request::Sharing { paused: false }), Some(json!({"type": "sharing", "paused": false}))),
        (Step::Command(Request::Forget { what: Forget::Id("s-1h".into()) }), Some(json!({"type": "forgot", "count": 1, "what": "id=s-1h"}))),
        (
            Step::Command(Request::Forget { what: Forget::Kind("cart".parse().expect("kind")) }),
            Some(json!({"type": "forgot", "count": 2, "what": "kind=cart"})),
        ),
        (
            Step::Command(Request::Forget { what: Forget::Before(T - Duration::days(4)) }),
            Some(json!({"type": "forgot", "count": 1, "what": "before=2026-11-16T10:00:00Z"})),
        ),
        (Step::Command(Request::Forget { what: Forget::All }), Some(json!({"type": "forgot", "count": 3, "what": "all"}))),
        (Step::Command(Request::Revoke { grant_id: grant_id(&other.grant_id) }), Some(json!({"type": "revoked", "marketer": "globex.example"}))),
        (Step::Command(Request::Revoke { grant_id: grant_id(&other.grant_id) }), None),
        (Step::Slice("acme", ""), Some(json!({"type": "served", "marketer": "acme.example", "asked": "/v1/slice?", "items": 0}))),
    ];
    let (records, _) = world.audit().await;
    let granted: Vec<Value> = records.iter().map(|r| event(&r.record.event)).collect();
    assert_eq!(granted, [json!({"type": "granted", "marketer": "acme.example"}), json!({"type": "granted", "marketer": "globex.example"})]);
    for (record, bundle) in records.iter().zip([&bundle, &other]) {
        let AuditEvent::Granted { terms, purpose, .. } = &record.record.event else { panic!("not a grant: {record:?}") };
        assert_eq!(terms.as_ref(), Some(&bundle.terms), "the grant's terms as agreed are on record");
        assert_eq!(purpose.as_deref(), Some(bundle.purpose.as_str()));
    }
    let mut count = records.len();
    for (step, expected) in steps {
        let what = match step {
            Step::Command(request) => {
                let what = format!("{request:?}").chars().take(60).collect::<String>();
                world.run(request).await;
                what
            }
            Step::Slice(who, query) => {
                let token = &tokens.iter().find(|(name, _)| *name == who).expect("a token").1;
                if let Ok(served) = world.slice(token, query, T).await {
                    served.deliver().expect("handed over");
                }
                format!("a slice for {who} {query:?}")
            }
        };
        let (records, chain) = world.audit().await;
        match expected {
            None => assert_eq!(records.len(), count, "{what} appends nothing"),
            Some(expected) => {
                assert_eq!(records.len(), count + 1, "{what} appends one record");
                let last = &records[count].record;
                assert_eq!(event(&last.event), expected, "{what}");
                assert_eq!(last.seq, count as u64 + 1);
            }
        }
        count = records.len();
        assert_eq!(chain, Ok(count as u64), "the chain verifies after {what}");
    }
}

/// A change made to the stored log behind the store's back, as a person with a database
/// editor but without the identity key would make it. (The same changes made to the
/// database itself, and seen by `optin audit --verify`, are in the end-to-end tests.)
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Backdates a record by a day: it still reads.
    Edit(u64),
    /// Points a record's `prev` elsewhere.
    Relink(u64),
    Delete(u64),
    Swap(u64, u64),
    /// Appends a record that names the last one as its `prev`, but that the head never saw.
    Append,
    /// Leaves out a record and chains the rest again, hashes and head included.
    Rebuild(u64),
}

/// Records as stored, each at its place (the key it is stored under), with the hash of its
/// bytes; the MACs are those the store holds for each place.
type Log = Vec<(u64, AuditRecord, [u8; 32])>;

/// The hash of a record's stored bytes: the store keeps records as their JSON.
fn stored_hash(record: &AuditRecord) -> [u8; 32] {
    optin_protocol::sha256(&serde_json::to_vec(record).expect("a record serializes"))
}

/// Changes the log; returns the head the tamperer leaves.
fn tamper(log: &mut Log, head: AuditHead, how: Tamper) -> AuditHead {
    let at = |seq: u64| usize::try_from(seq - 1).expect("a small sequence number");
    match how {
        Tamper::Edit(seq) => {
            let (_, record, hash) = &mut log[at(seq)];
            record.at -= Duration::days(1);
            *hash = stored_hash(record);
        }
        Tamper::Relink(seq) => {
            let (_, record, hash) = &mut log[at(seq)];
            record.prev = "ab".repeat(32);
            *hash = stored_hash(record);
        }
        Tamper::Delete(seq) => {
            log.remove(at(seq));
        }
        Tamper::Swap(a, b) => {
            // The values trade places; the MACs stay at theirs.
            let (x, y) = (log[at(a)].clone(), log[at(b)].clone());
            log[at(a)] = (x.0, y.1, y.2);
            log[at(b)] = (y.0, x.1, x.2);
        }
        Tamper::Append => {
            let (place, last, hash) = log.last().expect("a record").clone();
            let record = AuditRecord { seq: last.seq + 1, at: last.at, prev: optin_protocol::hex(&hash), event: AuditEvent::Sharing { paused: false } };
            let hash = stored_hash(&record);
            log.push((place + 1, record, hash));
        }
        Tamper::Rebuild(seq) => {
            log.remove(at(seq));
            let mut prev = [0u8; 32];
            for (n, (place, record, hash)) in (1u64..).zip(log.iter_mut()) {
                (*place, record.seq, record.prev) = (n, n, optin_protocol::hex(&prev));
                *hash = stored_hash(record);
                prev = *hash;
            }
            return AuditHead { seq: log.len() as u64, hash: prev };
        }
    }
    head
}

/// The log as the store would read it back: each record's MAC checked for its place, as the
/// store holds MACs only for what the agent wrote there.
fn read_back(log: Log, written: &[StoredRecord]) -> Vec<StoredRecord> {
    log.into_iter()
        .map(|(place, record, hash)| {
            let seal = match written.get(usize::try_from(place - 1).expect("a small place")) {
                Some(w) if w.hash == hash => Seal::Valid,
                Some(_) => Seal::Invalid,
                None => Seal::Missing,
            };
            StoredRecord { record, hash, seal }
        })
        .collect()
}

/// A world whose log holds five records: granted, served, refused, sharing, sharing.
async fn five_records() -> World {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    world.slice(&bundle.token, "", T).await.expect("served").deliver().expect("handed over");
    world.slice(&bundle.token, "kinds=purchase", T).await.map(|_| ()).expect_err("refused");
    world.run(Request::Sharing { paused: true }).await;
    world.run(Request::Sharing { paused: false }).await;
    world
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_tampered_logs_naming_the_first_bad_record() {
    let world = five_records().await.reopen();
    let crate::store::AuditLog { records: written, head, .. } = world.core.store().audit_log().expect("the log reads");
    assert_eq!(audit::verify(written.clone(), head), Ok(5), "the log verifies before it is tampered with");
    assert_eq!(head, (AuditHead { seq: 5, hash: written[4].hash }, Seal::Valid), "the head names the last record, across a reopen");
    for r in &written {
        assert_eq!(stored_hash(&r.record), r.hash, "record {} is stored as its JSON", r.record.seq);
        assert_eq!(r.seal, Seal::Valid, "record {} carries its MAC", r.record.seq);
    }
    let log: Log = written.iter().map(|r| (r.record.seq, r.record.clone(), r.hash)).collect();
    let cases = [
        (Tamper::Edit(1), 1),
        (Tamper::Edit(3), 3),
        (Tamper::Edit(5), 5),
        (Tamper::Delete(1), 1),
        (Tamper::Delete(3), 3),
        (Tamper::Delete(5), 5),
        (Tamper::Swap(2, 4), 2),
        (Tamper::Swap(1, 2), 1),
        (Tamper::Swap(4, 5), 4),
        (Tamper::Append, 6),
        (Tamper::Relink(1), 1),
        (Tamper::Relink(4), 4),
        // Chained again without a record, hashes and head rebuilt: the first record moved
        // into another's place fails its MAC.
        (Tamper::Rebuild(2), 2),
        (Tamper::Rebuild(1), 1),
    ];
    for (how, seq) in cases {
        let mut tampered = log.clone();
        let (head_hash, head_seal) = head;
        let head_left = tamper(&mut tampered, head_hash, how);
        let seal = if head_left == head_hash { head_seal } else { Seal::Invalid };
        let broken = audit::verify(read_back(tampered, &written), (head_left, seal)).expect_err("tampering is found");
        assert_eq!(broken.seq(), Some(seq), "{how:?}: {broken}");
        assert!(broken.to_string().starts_with(&format!("audit chain broken at record {seq}: ")), "{broken}");
    }
    // The head itself, changed; and records removed from the end under a rebuilt head.
    let (h, _) = head;
    let heads = [
        ((AuditHead { seq: 6, ..h }, Seal::Invalid), 6),
        ((AuditHead { seq: 4, ..h }, Seal::Invalid), 5),
        ((AuditHead { hash: [0; 32], ..h }, Seal::Invalid), 5),
    ];
    for (changed, seq) in heads {
        assert_eq!(audit::verify(written.clone(), changed).map_err(|e| e.seq()), Err(Some(seq)), "{changed:?}");
    }
    let truncated = written[..3].to_vec();
    let rebuilt = AuditHead { seq: 3, hash: written[2].hash };
    for seal in [Seal::Invalid, Seal::Missing] {
        let broken = audit::verify(truncated.clone(), (rebuilt, seal)).expect_err("a shortened log is found");
        assert!(matches!(broken, ChainError::Head { seq: 3, .. }), "{broken}");
        assert!(broken.to_string().contains("MAC"), "{broken}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_log_verifies_and_survives_reopening() {
    let world = World::new();
    assert_eq!(world.audit().await.1, Ok(0));
    let world = world.reopen();
    assert_eq!(world.audit().await.1, Ok(0));
    world.ingest(&[search("s", T)]).await;
    assert_eq!(world.audit().await.1, Ok(0), "ingest is not audited");
    let gone = (AuditHead { seq: 1, ..AuditHead::EMPTY }, Seal::Valid);
    assert_eq!(audit::verify(Vec::new(), gone).map_err(|e| e.seq()), Err(Some(1)), "a head names a record that is gone");
}

#[test]
fn chain_heads_round_trip() {
    let cases = [AuditHead::EMPTY, AuditHead { seq: 1, hash: [0xab; 32] }, AuditHead { seq: u64::MAX, hash: [0xff; 32] }];
    for head in cases {
        assert_eq!(AuditHead::decode(&head.encode()), Some(head), "{}", head.encode());
    }
}

#[test]
fn rejects_malformed_chain_heads() {
    let hash = "ab".repeat(32);
    let cases = [
        ("empty", String::new()),
        ("no separator", format!("7{hash}")),
        ("no number", format!(":{hash}")),
        ("a sign", format!("+7:{hash}")),
        ("a negative number", format!("-7:{hash}")),
        ("a number too large", format!("18446744073709551616:{hash}")),
        ("a short hash", format!("7:{}", &hash[..62])),
        ("a long hash", format!("7:{hash}00")),
        ("not hex", format!("7:{}", "zz".repeat(32))),
    ];
    for (what, text) in cases {
        assert_eq!(AuditHead::decode(&text), None, "{what}: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_slice_carries_the_number_of_its_served_record() {
    let world = World::new();
    world.ingest(&week()).await;
    let acme = world.grant("search,cart", "raw", "7d").await;
    let globex = world.grant_to("globex.example", "search", "raw", "7d").await;
    // Slices cut at once, and records of other kinds among them: each slice still names its
    // own record.
    let mut cuts = Vec::new();
    for n in 0..12 {
        let (core, bundle) = (world.core.clone(), if n % 2 == 0 { acme.clone() } else { globex.clone() });
        cuts.push(tokio::spawn(async move {
            // Each asked differently, so that none is served again as another's repeat.
            let asked = format!("/v1/slice?n={n}");
            let request = crate::core::SliceRequest { bearer: Some(&bundle.token), query: Ok(Default::default()), asked: &asked, carrier: None };
            let (jws, delivery) = core.slice(request, T).await.expect("served").deliver().expect("handed over");
            delivery.written();
            (bundle, super::text(jws))
        }));
        if n % 4 == 0 {
            world.run(Request::Sharing { paused: false }).await;
        }
    }
    let mut slices = Vec::new();
    for cut in cuts {
        slices.push(cut.await.expect("a slice"));
    }
    let (records, chain) = world.audit().await;
    assert_eq!(chain, Ok(records.len() as u64));
    let mut seen = std::collections::BTreeSet::new();
    for (bundle, jws) in slices {
        let claims = bundle.verify_slice(&jws).expect("the slice verifies");
        let seq = claims.audit_seq.expect("a served slice is numbered");
        assert!(seen.insert(seq), "two slices name record {seq}");
        let record = &records[usize::try_from(seq - 1).expect("a small number")].record;
        assert_eq!(record.seq, seq);
        match &record.event {
            AuditEvent::Served { grant_id, slice_id, jws_sha256, .. } => {
                assert_eq!((grant_id, slice_id), (&bundle.grant_id, &claims.jti), "record {seq}");
                assert_eq!(*jws_sha256, optin_protocol::hex(&optin_protocol::sha256(jws.as_bytes())), "record {seq} commits to the JWS as sent");
            }
            other => panic!("record {seq} is {other:?}, not the slice's"),
        }
    }
    assert_eq!(seen.len(), 12);
    // A preview is never served, so it names no record.
    let Response::Preview { claims } = world.run(Request::Preview { grant_id: acme.grant_id.clone(), limit: None, cursor: None }).await else {
        panic!("not a preview")
    };
    assert_eq!(claims.audit_seq, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_read_in_pages_is_the_log_verified_page_by_page() {
    let world = five_records().await;
    let (whole, chain) = world.audit().await;
    assert_eq!(chain, Ok(5));
    for limit in [1, 2, 3, 5, 10_000] {
        let (paged, chain) = world.audit_in_pages_of(Some(limit)).await;
        assert_eq!(chain, Ok(5), "pages of {limit}");
        let seqs = |r: &[crate::core::command::AuditEntry]| r.iter().map(|e| (e.record.seq, e.hash.clone())).collect::<Vec<_>>();
        assert_eq!(seqs(&paged), seqs(&whole), "pages of {limit}");
    }
    // A page that is not the last says how far the chain holds so far, and where to go on.
    let Response::Audit { records, chain, next, .. } = world.run(Request::Audit { since_seq: 1, limit: Some(2) }).await else { panic!("not an audit") };
    assert_eq!((records.len(), chain, next), (2, Ok(3), Some(3)));
    let Response::Audit { records, chain, next, .. } = world.run(Request::Audit { since_seq: 3, limit: Some(2) }).await else { panic!("not an audit") };
    assert_eq!((records.len(), chain, next), (2, Ok(5), None), "the last page checks the head");
    for limit in [0, 10_001] {
        let refused = world.try_run(Request::Audit { since_seq: 0, limit: Some(limit) }, T).await.map(|_| ()).expect_err("no such page");
        assert!(matches!(refused, CoreError::Invalid(_)), "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_of_revoked_and_expired_grants_are_counted_not_recorded() {
    let world = World::new();
    world.ingest(&week()).await;
    let revoked = world.grant("search", "raw", "7d").await;
    let expiring = world.grant_to("globex.example", "search", "raw", "7d").await;
    world.revoke(&revoked.grant_id).await;
    let (before, _) = world.audit().await;
    let later = T + Duration::days(365);
    for n in 0..50 {
        let at = T + Duration::seconds(n);
        assert_eq!(world.slice(&revoked.token, "", at).await.map(|_| ()), Err(crate::core::Refusal::Token("grant revoked")));
        assert_eq!(world.slice(&expiring.token, "", later + Duration::seconds(n)).await.map(|_| ()), Err(crate::core::Refusal::Token("grant expired")));
    }
    let (after, chain) = world.audit().await;
    assert_eq!(after.len(), before.len(), "no record per refusal");
    assert_eq!(chain, Ok(after.len() as u64));
    let world = world.reopen();
    let Response::Audit { counted, .. } = world.run(Request::Audit { since_seq: 0, limit: None }).await else { panic!("not an audit") };
    let mut counts: Vec<(String, &str, u16, u64, _, _, bool)> = counted
        .iter()
        .map(|c| (c.count.marketer.clone(), c.count.reason.as_str(), c.count.status, c.count.count, c.count.first, c.count.last, c.intact))
        .collect();
    counts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        counts,
        [
            ("acme.example".to_owned(), "grant revoked", 401, 50, T, T + Duration::seconds(49), true),
            ("globex.example".to_owned(), "grant expired", 401, 50, later, later + Duration::seconds(49), true),
        ],
        "one count per grant and reason, with the first and last time, across a restart"
    );
}

/// The refusals a grant's counts hold, by reason.
async fn counted(world: &World) -> Vec<(String, u16, u64)> {
    let Response::Audit { counted, .. } = world.run(Request::Audit { since_seq: 0, limit: None }).await else { panic!("not an audit") };
    let mut counts: Vec<_> = counted.iter().map(|c| (c.count.reason.clone(), c.count.status, c.count.count)).collect();
    counts.sort();
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn live_grants_refusals_are_recorded_while_their_budget_lasts() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search", "raw", "7d").await;
    let refused = |records: &[AuditEntry]| records.iter().filter(|r| matches!(r.record.event, AuditEvent::Refused { .. })).count();
    // A burst of 20 records, then counts by class, never by the text of the request.
    for n in 0..25 {
        let query = if n % 2 == 0 { format!("cursor=nonsense-{n}") } else { "kinds=purchase".to_owned() };
        assert!(world.slice(&bundle.token, &query, T).await.is_err(), "{query} is refused");
    }
    assert_eq!(refused(&world.audit().await.0), 20);
    assert_eq!(counted(&world).await, [("asked beyond the grant".to_owned(), 403, 2), ("malformed request".to_owned(), 400, 3)]);
    // One more record every 3 seconds.
    let later = T + Duration::seconds(3);
    assert!(world.slice(&bundle.token, "cursor=x", later).await.is_err());
    assert!(world.slice(&bundle.token, "cursor=x", later).await.is_err());
    assert_eq!(refused(&world.audit().await.0), 21);
    assert_eq!(counted(&world).await, [("asked beyond the grant".to_owned(), 403, 2), ("malformed request".to_owned(), 400, 4)]);
    // Paused sharing and a busy grant say nothing new each time: counted from the first.
    world.run(Request::Sharing { paused: true }).await;
    let much_later = T + Duration::hours(1);
    for _ in 0..3 {
        assert_eq!(world.slice(&bundle.token, "", much_later).await.map(|_| ()), Err(Refusal::Paused));
    }
    assert_eq!(refused(&world.audit().await.0), 21, "paused refusals get no record");
    assert!(counted(&world).await.contains(&("sharing paused".to_owned(), 403, 3)));
    // A refilled budget records again, and the chain holds every record.
    world.run(Request::Sharing { paused: false }).await;
    assert!(world.slice(&bundle.token, "cursor=x", much_later).await.is_err());
    let (records, chain) = world.audit().await;
    assert_eq!(refused(&records), 22);
    assert_eq!(chain, Ok(records.len() as u64));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pruned_log_verifies_from_its_checkpoint_and_still_counts_every_slice() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    for _ in 0..30 {
        world.slice(&bundle.token, "", T).await.expect("served").deliver().expect("handed over");
    }
    let keep = AuditKeep::new(10, "90d".parse().expect("a span")).expect("a bound");
    while let Pruned::Records(1..) = world.core.store().prune_audit(&keep, T, 7).expect("pruned") {}
    // Granted, then 30 served: records 1 to 21 pruned, 22 to 31 kept.
    for limit in [1, 3, 10_000] {
        let (records, chain) = world.audit_in_pages_of(Some(limit)).await;
        assert_eq!(chain, Ok(31), "pages of {limit}");
        assert_eq!(records.iter().map(|r| r.record.seq).collect::<Vec<_>>(), (22..=31).collect::<Vec<_>>(), "pages of {limit}");
    }
    let Response::Grants { grants } = world.run(Request::Grants).await else { panic!("not grants") };
    assert_eq!((grants[0].usage.slices, grants[0].usage.last_used), (30, Some(T)), "the pruned slices still count");

    let log = world.core.store().audit_log().expect("the log");
    let (checkpoint, seal) = log.checkpoint.clone().expect("a checkpoint");
    assert_eq!((checkpoint.seq, seal), (21, Seal::Valid));
    assert_eq!(audit::verify_after(Some((&checkpoint, seal)), log.records.clone(), log.head), Ok(31));
    for forged in [Seal::Missing, Seal::Invalid] {
        let broken = audit::verify_after(Some((&checkpoint, forged)), log.records.clone(), log.head).expect_err("a forged checkpoint is found");
        assert!(matches!(broken, ChainError::Checkpoint { seq: 21, .. }), "{broken}");
    }
    // The checkpoint removed, the first record kept stands where record 1 should.
    assert_eq!(audit::verify_after(None, log.records.clone(), log.head).map_err(|e| e.seq()), Err(Some(1)));
    // The first record kept removed, the checkpoint names a record that is not there.
    assert_eq!(audit::verify_after(Some((&checkpoint, seal)), log.records[1..].to_vec(), log.head).map_err(|e| e.seq()), Err(Some(22)));
    // A checkpoint moved on by one, over the first record kept: it no longer chains.
    let moved = crate::store::AuditCheckpoint { seq: 22, ..checkpoint.clone() };
    assert_eq!(audit::verify_after(Some((&moved, seal)), log.records[1..].to_vec(), log.head).map_err(|e| e.seq()), Err(Some(22)));
    // Counted on from the last record counted, across pruning that stays behind it and
    // pruning that goes past it.
    let later = T + Duration::minutes(1);
    let slices = |world: &World| {
        let world = world.core.clone();
        async move {
            let Response::Grants { grants } = world.handle(Request::Grants, later).await.expect("grants") else { panic!("not grants") };
            (grants[0].usage.slices, grants[0].usage.last_used)
        }
    };
    for (served, prune_to, expected) in [(5, 10, 35), (3, 1, 38), (0, 1, 38)] {
        for _ in 0..served {
            world.slice(&bundle.token, "", later).await.expect("served").deliver().expect("handed over");
        }
        let keep = AuditKeep::new(prune_to, "90d".parse().expect("a span")).expect("a bound");
        while let Pruned::Records(1..) = world.core.store().prune_audit(&keep, later, 7).expect("pruned") {}
        assert_eq!(slices(&world).await, (expected, Some(later)), "{served} more served, pruned to {prune_to}");
    }
    // And from scratch, by an agent that counted nothing yet.
    let world = world.reopen();
    assert_eq!(slices(&world).await, (38, Some(later)));
}
