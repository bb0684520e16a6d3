//! The extension's signals: each stands alone, and the day's quota counts new ones only.

use serde_json::{json, Value};
use time::macros::datetime;

use super::World;
use crate::core::command::{Rejection, RejectionReason, Request, Response};
use crate::core::ingest::EXTENSION_SIGNALS_PER_DAY;

const NOON: time::OffsetDateTime = datetime!(2026-11-20 12:00 UTC);

fn search(id: &str) -> Value {
    json!({"id": id, "kind": "search", "at": "2026-11-20T10:00:00Z", "query": "tent", "engine": "duckduckgo.com"})
}

fn texts(signals: &[Value]) -> Vec<String> {
    signals.iter().map(Value::to_string).collect()
}

async fn send(world: &World, signals: Vec<String>, now: time::OffsetDateTime) -> (usize, usize, Vec<Rejection>) {
    match world.try_run(Request::ExtensionSignals { signals }, now).await {
        Ok(Response::Accepted { stored, duplicates, rejected }) => (stored, duplicates, rejected),
        other => panic!("not an acceptance: {other:?}"),
    }
}

fn invalid(index: usize, id: Option<&str>, field: Option<&str>, error: &str) -> Rejection {
    Rejection { index, id: id.map(str::to_owned), reason: RejectionReason::Invalid { field: field.map(str::to_owned), error: error.to_owned() } }
}

#[tokio::test]
async fn good_signals_are_stored_and_bad_ones_named() {
    let world = World::new();
    let mut control = search("bad-1");
    control["query"] = json!("tent\u{7}");
    let batch = vec![
        search("ok-1").to_string(),
        control.to_string(),
        r#"{"id":"bad-2","kind":"cart","at":"2026-11-20T10:00:00Z","merchant":"shop.example","currency":"EUR","items":[{"name":"\udc00","price":"1"}]}"#
            .to_owned(),
        "not json".to_owned(),
        search("ok-2").to_string(),
    ];
    let (stored, duplicates, rejected) = send(&world, batch.clone(), NOON).await;
    assert_eq!((stored, duplicates), (2, 0));
    let expected = [
        invalid(1, Some("bad-1"), Some("query"), "contains control or bidirectional formatting characters"),
        invalid(2, Some("bad-2"), None, "not JSON: lone leading surrogate in hex escape at line 1 column 123"),
        invalid(3, None, None, "not JSON: expected ident at line 1 column 2"),
    ];
    assert_eq!(rejected, expected);
    // Sent again, as a worker that lost the answer would: nothing new, the same rejections.
    let (stored, duplicates, rejected) = send(&world, batch, NOON).await;
    assert_eq!((stored, duplicates, rejected), (0, 2, expected.to_vec()));
}

#[tokio::test]
async fn the_quota_counts_new_signals_of_the_day_only() {
    let world = World::new();
    let day: Vec<Value> = (0..EXTENSION_SIGNALS_PER_DAY).map(|i| search(&format!("q-{i}"))).collect();
    let (stored, _, rejected) = send(&world, texts(&day[..EXTENSION_SIGNALS_PER_DAY as usize - 1]), NOON).await;
    assert_eq!((stored, rejected.len()), (EXTENSION_SIGNALS_PER_DAY as usize - 1, 0));
    // Duplicates count nothing; the last new signal of the day fits, the next does not.
    let last = [day[0].clone(), day[EXTENSION_SIGNALS_PER_DAY as usize - 1].clone(), search("one-too-many"), day[1].clone()];
    let (stored, duplicates, rejected) = send(&world, texts(&last), NOON).await;
    assert_eq!((stored, duplicates), (1, 2));
    assert_eq!(rejected, [Rejection { index: 2, id: Some("one-too-many".into()), reason: RejectionReason::Quota { per_day: EXTENSION_SIGNALS_PER_DAY } }]);
    assert_eq!(world.core.store().extension_signals(NOON.date()).expect("the count"), EXTENSION_SIGNALS_PER_DAY);
    // The owner's own batches are not limited.
    let owner = search("owner-1").to_string();
    assert!(matches!(world.try_run(Request::Ingest { ndjson: owner, dry_run: false }, NOON).await, Ok(Response::Ingested { stored: 1, .. })));
    // A new UTC day starts from nothing.
    let tomorrow = NOON + time::Duration::DAY;
    let (stored, _, rejected) = send(&world, texts(&[search("one-too-many")]), tomorrow).await;
    assert_eq!((stored, rejected), (1, vec![]));
    assert_eq!(world.core.store().extension_signals(tomorrow.date()).expect("the count"), 1);
}
