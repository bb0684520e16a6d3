//! The table every engine must pass: a run of writes, each with what the engine must answer,
//! then what it must list. A new engine adds one line to `engines()`'s callers.

use time::macros::datetime;
use time::OffsetDateTime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

fn grant_id(n: u8) -> GrantId {
    GrantId::parse(&format!("g_{n:024x}")).unwrap()
}

fn id(text: &str) -> WebhookId {
    WebhookId::parse(text).unwrap()
}

fn jti(n: u8) -> WebhookId {
    id(&format!("s_{n:032x}"))
}

/// One write.
#[derive(Clone)]
enum Op {
    Create(u8),
    Slice(u8, u8, i64),
    End(u8, GrantState, Keep),
    /// A delivery seen before, under a write of another kind: still a duplicate.
    SliceUnderId(u8, &'static str),
}

fn created_id(g: u8) -> WebhookId {
    id(&format!("{}-created", grant_id(g)))
}

async fn apply<S: Store>(store: &S, op: &Op) -> Insert {
    match op {
        Op::Create(g) => store
            .create_grant(NewGrant {
                delivery: created_id(*g),
                grant_id: grant_id(*g),
                request_id: RequestId::parse("shoes-2026-11").unwrap(),
                bundle: format!("{{\"bundle\":{g}}}"),
                receipt: "r.e.c".into(),
                at: T0,
            })
            .await
            .unwrap(),
        Op::Slice(g, n, minutes) => store
            .store_slice(NewSlice {
                delivery: jti(*n),
                grant_id: grant_id(*g),
                jws: format!("slice.{n}.sig"),
                items: u64::from(*n),
                at: T0 + time::Duration::minutes(*minutes),
            })
            .await
            .unwrap(),
        Op::SliceUnderId(g, delivery) => {
            store.store_slice(NewSlice { delivery: id(delivery), grant_id: grant_id(*g), jws: "x.y.z".into(), items: 1, at: T0 }).await.unwrap()
        }
        Op::End(g, state, keep) => {
            let what = if *state == GrantState::Revoked { "revoked" } else { "expired" };
            store
                .end_grant(Ending {
                    delivery: id(&format!("{}-{what}", grant_id(*g))),
                    grant_id: grant_id(*g),
                    state: *state,
                    receipt: "e.n.d".into(),
                    keep: *keep,
                    at: T0 + time::Duration::hours(1),
                })
                .await
                .unwrap()
        }
    }
}

fn revoked_by(g: u8) -> Insert {
    Insert::Refused(Refused::GrantEnded(GrantState::Revoked, id(&format!("{}-revoked", grant_id(g)))))
}

/// Runs the table against `store`, which must be empty.
pub async fn check_engine<S: Store>(store: S) {
    use GrantState::*;
    let table: Vec<(Op, Insert)> = vec![
        (Op::Slice(1, 1, 0), Insert::Refused(Refused::UnknownGrant)),
        (Op::End(1, Revoked, Keep::Erase), Insert::Refused(Refused::UnknownGrant)),
        (Op::Create(1), Insert::Stored),
        (Op::Create(1), Insert::Duplicate),
        (Op::Create(2), Insert::Stored),
        (Op::Create(3), Insert::Stored),
        (Op::Slice(1, 1, 0), Insert::Stored),
        (Op::Slice(1, 1, 0), Insert::Duplicate),
        (Op::Slice(1, 2, 10), Insert::Stored),
        (Op::Slice(2, 3, 20), Insert::Stored),
        (Op::Slice(3, 4, 30), Insert::Stored),
        // The grant's created delivery sent as a slice: seen, so nothing is stored.
        (Op::SliceUnderId(2, "g_000000000000000000000002-created"), Insert::Duplicate),
        (Op::End(1, Revoked, Keep::Erase), Insert::Stored),
        (Op::End(1, Revoked, Keep::Erase), Insert::Duplicate),
        (Op::End(1, Expired, Keep::Erase), revoked_by(1)),
        (Op::Slice(1, 5, 40), revoked_by(1)),
        // A slice taken before the end, sent again after it: the grant's end answers it, so the
        // agent hears 410 and stops.
        (Op::Slice(1, 1, 0), revoked_by(1)),
        (Op::End(3, Expired, Keep::Flagged), Insert::Stored),
        (Op::Slice(3, 6, 50), Insert::Refused(Refused::GrantEnded(Expired, id("g_000000000000000000000003-expired")))),
    ];
    for (i, (op, expected)) in table.iter().enumerate() {
        assert_eq!(&apply(&store, op).await, expected, "step {i}");
    }

    let grants = store.grants().await.unwrap();
    let states: Vec<(GrantId, GrantState, u64, u64)> =
        grants.iter().map(|g| (g.grant_id.clone(), g.state(), g.ended.as_ref().map_or(0, |e| e.erased), g.ended.as_ref().map_or(0, |e| e.kept))).collect();
    assert_eq!(states, [(grant_id(1), Revoked, 2, 0), (grant_id(2), Live, 0, 0), (grant_id(3), Expired, 0, 1)]);
    let one = store.grant(grant_id(2)).await.unwrap().unwrap();
    assert_eq!((one.request_id.as_str(), one.bundle.as_str(), one.created_at), ("shoes-2026-11", "{\"bundle\":2}", T0));
    assert_eq!(store.grant(grant_id(9)).await.unwrap(), None);

    let listed = |query: SliceQuery| {
        let store = store.clone();
        async move { store.slices(query).await.unwrap().into_iter().map(|s| (s.jti.to_string(), s.items, s.kept_after_end)).collect::<Vec<_>>() }
    };
    // Grant 1's slices were erased; grant 3's kept, flagged, and never exported.
    assert_eq!(listed(SliceQuery::default()).await, [(jti(3).to_string(), 3, false), (jti(4).to_string(), 4, true)]);
    assert_eq!(listed(SliceQuery { live_only: true, ..SliceQuery::default() }).await, [(jti(3).to_string(), 3, false)]);
    assert_eq!(listed(SliceQuery { grant: Some(grant_id(3)), ..SliceQuery::default() }).await, [(jti(4).to_string(), 4, true)]);
    assert_eq!(listed(SliceQuery { since: Some(T0 + time::Duration::minutes(25)), ..SliceQuery::default() }).await, [(jti(4).to_string(), 4, true)]);
    let slice = &store.slices(SliceQuery { grant: Some(grant_id(2)), ..SliceQuery::default() }).await.unwrap()[0];
    assert_eq!((slice.jws.as_str(), slice.received_at), ("slice.3.sig", T0 + time::Duration::minutes(20)));
}

#[tokio::test]
async fn sqlite_in_memory_passes_the_table() {
    check_engine(Sqlite::in_memory()).await;
}

#[tokio::test]
async fn sqlite_on_disk_passes_the_table_and_keeps_it_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.sqlite3");
    check_engine(Sqlite::open(&path).unwrap()).await;
    let again = Sqlite::open(&path).unwrap();
    assert_eq!(again.grants().await.unwrap().len(), 3);
    assert_eq!(apply(&again, &Op::Slice(2, 3, 20)).await, Insert::Duplicate);
}

/// Sends one delivery on 16 connections at once, through `stores` in turn (for NATS, two
/// connections standing for two inbox processes); exactly one is stored.
async fn one_delivery_at_once_is_stored_once<S: Store>(stores: &[S]) {
    assert_eq!(apply(&stores[0], &Op::Create(1)).await, Insert::Stored);
    let tries: Vec<_> = (0..16)
        .map(|i| {
            tokio::spawn({
                let store = stores[i % stores.len()].clone();
                async move { apply(&store, &Op::Slice(1, 7, 0)).await }
            })
        })
        .collect();
    let mut stored = 0;
    for t in tries {
        match t.await.unwrap() {
            Insert::Stored => stored += 1,
            other => assert_eq!(other, Insert::Duplicate),
        }
    }
    assert_eq!(stored, 1);
    for store in stores {
        assert_eq!(store.slices(SliceQuery::default()).await.unwrap().len(), 1);
    }
}

/// Slices sent while the grant is revoked, through `stores` in turn: each is stored before the
/// revocation (and erased with it) or refused after it, so nothing of the grant is left.
async fn slices_racing_a_revocation_are_erased_or_refused<S: Store>(stores: &[S]) {
    assert_eq!(apply(&stores[0], &Op::Create(1)).await, Insert::Stored);
    let slices: Vec<_> = (10..26u8)
        .map(|n| {
            tokio::spawn({
                let store = stores[usize::from(n) % stores.len()].clone();
                async move { apply(&store, &Op::Slice(1, n, 0)).await }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(apply(stores.last().unwrap(), &Op::End(1, GrantState::Revoked, Keep::Erase)).await, Insert::Stored);
    let mut stored = 0;
    for slice in slices {
        match slice.await.unwrap() {
            Insert::Stored => stored += 1,
            other => assert_eq!(other, revoked_by(1)),
        }
    }
    for store in stores {
        assert_eq!(store.slices(SliceQuery::default()).await.unwrap(), []);
        let grant = store.grant(grant_id(1)).await.unwrap().unwrap();
        assert_eq!(grant.ended.map(|e| e.erased), Some(stored), "each slice taken before the end was erased by it");
    }
}

#[tokio::test]
async fn sqlite_slices_racing_a_revocation_are_erased_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    slices_racing_a_revocation_are_erased_or_refused(&[Sqlite::open(&dir.path().join("inbox.sqlite3")).unwrap()]).await;
}

#[tokio::test]
async fn one_delivery_sent_on_many_connections_at_once_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    one_delivery_at_once_is_stored_once(&[Sqlite::open(&dir.path().join("inbox.sqlite3")).unwrap()]).await;
}

const NATS_SETUP: &str = "set OPTIN_NATS_URL to a NATS server with JetStream: \
    python3 -m venv .venv && .venv/bin/pip install -r tests/nats/requirements.txt, \
    .venv/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd \"$(mktemp -d)\" &, \
    then OPTIN_NATS_URL=nats://127.0.0.1:4222 (or OPTIN_SKIP_NATS=1 to skip the NATS tests)";

/// A NATS engine under a name of its own, so tests running at once, and runs before, never
/// meet; `None` when the NATS tests are explicitly skipped.
async fn fresh_nats(window: std::time::Duration) -> Option<(Nats, NatsTarget)> {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let url = match std::env::var("OPTIN_NATS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("OPTIN_SKIP_NATS").is_ok_and(|v| v == "1") => {
            eprintln!("skipping a NATS test: OPTIN_SKIP_NATS=1");
            return None;
        }
        _ => panic!("{NATS_SETUP}"),
    };
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000;
    let name = format!("t{:x}_{nanos:x}_{n}", std::process::id());
    let target = NatsTarget::parse(&format!("{url}/{name}")).unwrap_or_else(|| panic!("OPTIN_NATS_URL={url}: expected nats://HOST:PORT"));
    let store = Nats::connect_with(&target, window).await.unwrap_or_else(|e| panic!("{e}; {NATS_SETUP}"));
    Some((store, target))
}

#[tokio::test]
async fn nats_passes_the_table_and_another_process_reads_it() {
    let Some((store, target)) = fresh_nats(nats::DUPLICATE_WINDOW).await else { return };
    check_engine(store.clone()).await;
    // A second connection, as a second inbox process would have.
    let again = Nats::connect(&target).await.unwrap();
    assert_eq!(again.grants().await.unwrap().len(), 3);
    assert_eq!(again.slices(SliceQuery::default()).await.unwrap().len(), 2);
    assert_eq!(apply(&again, &Op::Slice(2, 3, 20)).await, Insert::Duplicate);
    store.danger_delete_all().await;
}

#[tokio::test]
async fn nats_one_delivery_sent_to_two_processes_at_once_is_stored_once() {
    let Some((store, target)) = fresh_nats(nats::DUPLICATE_WINDOW).await else { return };
    let other = Nats::connect(&target).await.unwrap();
    one_delivery_at_once_is_stored_once(&[store.clone(), other]).await;
    assert_eq!(store.messages_held().await, 1, "the stream dropped the copies within its duplicate window");
    store.danger_delete_all().await;
}

#[tokio::test]
async fn nats_slices_racing_a_revocation_on_another_process_are_erased_or_refused() {
    let Some((store, target)) = fresh_nats(nats::DUPLICATE_WINDOW).await else { return };
    let other = Nats::connect(&target).await.unwrap();
    slices_racing_a_revocation_are_erased_or_refused(&[store.clone(), other]).await;
    assert_eq!(store.messages_held().await, 0, "no slice published past the end is left in the stream");
    store.danger_delete_all().await;
}

#[tokio::test]
async fn nats_a_replay_after_the_duplicate_window_is_still_stored_once() {
    let window = std::time::Duration::from_millis(500);
    let Some((store, target)) = fresh_nats(window).await else { return };
    assert_eq!(apply(&store, &Op::Create(1)).await, Insert::Stored);
    assert_eq!(apply(&store, &Op::Slice(1, 1, 0)).await, Insert::Stored);
    // The stream has forgotten the message id by now; the recorded delivery has not.
    tokio::time::sleep(window * 2).await;
    let other = Nats::connect_with(&target, window).await.unwrap();
    assert_eq!(apply(&other, &Op::Slice(1, 1, 0)).await, Insert::Duplicate);
    assert_eq!(store.slices(SliceQuery::default()).await.unwrap().len(), 1);
    assert_eq!(store.messages_held().await, 1, "nothing was published again");
    store.danger_delete_all().await;
}

#[test]
fn engines_are_named_sqlite_or_a_nats_url() {
    assert_eq!("sqlite".parse::<Engine>(), Ok(Engine::Sqlite));
    let target = |server: &str, name: &str| Ok(Engine::Nats(NatsTarget { server: server.into(), name: name.into() }));
    assert_eq!("nats://127.0.0.1:4222".parse::<Engine>(), target("127.0.0.1:4222", "optin"));
    assert_eq!("nats://nats.internal:4222/acme_2".parse::<Engine>(), target("nats.internal:4222", "acme_2"));
    for refused in [
        "",
        "SQLite",
        "nats://",
        "nats://host",
        "nats://host:port",
        "nats://host:4222/",
        "nats://host:4222/Acme",
        "nats://host:4222/a.b",
        "nats://host:4222/a/b",
        "tls://host:4222",
    ] {
        assert!(refused.parse::<Engine>().is_err(), "{refused:?}");
    }
}
