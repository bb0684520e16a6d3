//! What kind of failure each error is (whether a feeder keeps its data and retries), and the
//! one status of each refusal, both from tables and from real failures.

use optin_protocol::scope::GrantId;
use optin_protocol::signal::BatchError;

use super::{purchase, search, World, T};
use crate::core::command::{ErrorKind, Request, Response};
use crate::core::{CoreError, Refusal};
use crate::store::{Store, StoreError};

fn batch_error() -> BatchError {
    optin_protocol::signal::parse_batch("{\"kind\":\"walk\"}", &crate::merchant::registrable).expect_err("not a signal")
}

#[test]
fn every_core_error_has_its_kind() {
    let corrupt = || StoreError::Corrupt { tree: "audit", detail: "not JSON".into() };
    let cases: Vec<(CoreError, ErrorKind)> = vec![
        (CoreError::NoGrant(GrantId::from_bytes([1; 12])), ErrorKind::NotFound),
        (CoreError::NoSignal("s-1".into()), ErrorKind::NotFound),
        (CoreError::Batch(batch_error()), ErrorKind::Invalid),
        (CoreError::Invalid("marketer".into()), ErrorKind::Invalid),
        (CoreError::Store(StoreError::Locked("/store".into())), ErrorKind::Unavailable),
        (CoreError::Store(StoreError::Sled(std::io::Error::other("disk full").into())), ErrorKind::Unavailable),
        (CoreError::Store(corrupt()), ErrorKind::Internal),
        (CoreError::Store(StoreError::Schema("2".into())), ErrorKind::Internal),
        (CoreError::Internal("no randomness".into()), ErrorKind::Internal),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error:?}");
    }
    let retryable = [(ErrorKind::Invalid, false), (ErrorKind::NotFound, false), (ErrorKind::Unavailable, true), (ErrorKind::Internal, true)];
    for (kind, expected) in retryable {
        assert_eq!(kind.retryable(), expected, "{kind:?}");
    }
}

#[test]
fn every_refusal_has_its_status() {
    let cases = [
        (Refusal::Token("grant revoked"), 401),
        (Refusal::Exceeds { field: "kinds", reason: "not granted".into() }, 403),
        (Refusal::Paused, 403),
        (Refusal::BudgetExhausted, 403),
        (Refusal::Busy, 429),
        (Refusal::RateLimited { retry_after: 60 }, 429),
        (Refusal::Invalid { field: "limit".into(), reason: "too big".into() }, 400),
        (Refusal::Internal("disk".into()), 500),
    ];
    for (refusal, status) in cases {
        assert_eq!(refusal.status(), status, "{refusal:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_commands_that_name_nothing_or_are_wrong() {
    let world = World::new();
    world.ingest(&[search("s", T)]).await;
    let revoked = world.grant("search", "raw", "7d").await;
    world.revoke(&revoked.grant_id).await;
    let nobody = GrantId::from_bytes([9; 12]);
    let grant = |marketer: &str, purpose: &str| Request::Grant {
        marketer: marketer.into(),
        kinds: "search".parse().expect("kinds"),
        granularity: "raw".parse().expect("granularity"),
        window: super::span("7d"),
        expires: super::span("90d"),
        purpose: purpose.into(),
        push: None,
        filters: Default::default(),
        noise: Default::default(),
    };
    let cases: Vec<(&str, Request, ErrorKind)> = vec![
        ("revoke an unknown grant", Request::Revoke { grant_id: nobody.clone() }, ErrorKind::NotFound),
        ("preview an unknown grant", Request::Preview { grant_id: nobody.clone(), limit: None, cursor: None }, ErrorKind::NotFound),
        ("bundle of an unknown grant", Request::Bundle { grant_id: nobody }, ErrorKind::NotFound),
        ("bundle of a revoked grant", Request::Bundle { grant_id: revoked.grant_id.clone() }, ErrorKind::Invalid),
        ("forget an unknown id", Request::Forget { what: crate::store::Forget::Id("nope".into()) }, ErrorKind::NotFound),
        ("grant to nobody", grant("  ", "offers"), ErrorKind::Invalid),
        ("grant to a name with a newline", grant("acme\nexample", "offers"), ErrorKind::Invalid),
        ("grant to a name that reverses what follows", grant("acme\u{202e}elpmaxe", "offers"), ErrorKind::Invalid),
        ("grant for a purpose with a zero-width space", grant("acme.example", "off\u{200b}ers"), ErrorKind::Invalid),
        ("grant for a purpose too long", grant("acme.example", &"x".repeat(1001)), ErrorKind::Invalid),
    ];
    for (what, request, kind) in cases {
        let err = world.try_run(request, T).await.map(|_| ()).expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_a_bad_batch_whole() {
    let world = World::new();
    let good = purchase("p", T, "shop.example");
    let mut bad = purchase("q", T, "shop.example");
    bad["items"][0]["price"] = "cheap".into();
    let ndjson = format!("{good}\n{bad}\n");
    for dry_run in [true, false] {
        let err = world.try_run(Request::Ingest { ndjson: ndjson.clone(), dry_run }, T).await.map(|_| ()).expect_err("a bad line");
        let CoreError::Batch(batch) = &err else { panic!("not a batch error: {err:?}") };
        assert_eq!((batch.line(), batch.field()), (Some(2), Some("items[0].price")), "dry run {dry_run}");
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }
    let Response::Signals { signals } = world.run(Request::Signals { kind: None }).await else { panic!("no listing") };
    assert!(signals.is_empty(), "nothing of a refused batch is stored: {signals:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_held_by_another_is_unavailable() {
    let world = World::new();
    let err = Store::open(&world.store_path()).map(|_| ()).expect_err("the store is open already");
    assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
    assert_eq!(CoreError::from(err).kind(), ErrorKind::Unavailable);
}
