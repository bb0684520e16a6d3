//! Signals to feed, written relative to the moment a test runs.

use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

/// Now, to the second: the wire format has no fractions, so fixtures never have them.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond")
}

/// RFC 3339 in UTC.
pub fn ts(at: OffsetDateTime) -> String {
    optin_protocol::timestamp::format(at)
}

/// `hours` before `now`.
pub fn ago(now: OffsetDateTime, hours: i64) -> OffsetDateTime {
    now - Duration::hours(hours)
}

/// A search.
pub fn search(id: &str, at: OffsetDateTime, query: &str, engine: &str, category: &str) -> Value {
    json!({"id": id, "kind": "search", "at": ts(at), "source": "test", "category": category, "query": query, "engine": engine})
}

/// A cart of one item.
pub fn cart(id: &str, at: OffsetDateTime, merchant: &str, item: &str, price: &str) -> Value {
    json!({
        "id": id, "kind": "cart", "at": ts(at), "source": "test", "category": "Apparel & Accessories > Shoes",
        "merchant": merchant, "currency": "EUR",
        "items": [{"name": item, "sku": format!("SKU-{id}"), "price": price, "quantity": 1}],
    })
}

/// A purchase of one item.
pub fn purchase(id: &str, at: OffsetDateTime, merchant: &str, item: &str, price: &str) -> Value {
    json!({
        "id": id, "kind": "purchase", "at": ts(at), "source": "test", "category": "Apparel & Accessories > Shoes",
        "merchant": merchant, "currency": "EUR", "total": price, "order_id": format!("order-{id}"),
        "items": [{"name": item, "price": price, "quantity": 1}],
    })
}

/// Lines of NDJSON.
pub fn ndjson(signals: &[Value]) -> String {
    signals.iter().map(|s| format!("{s}\n")).collect()
}

/// What identifies a signal across the store and slices, whatever id a grant gives it:
/// kind, time and what it was about (query or merchant).
pub fn key(signal: &Value) -> String {
    let kind = signal["kind"].as_str().unwrap_or("?");
    let about = match kind {
        "search" => &signal["query"],
        _ => &signal["merchant"],
    };
    format!("{kind} {} {}", signal["at"].as_str().unwrap_or("?"), about.as_str().unwrap_or("?"))
}

/// The walk-through's signals: what a week of shopping for running shoes leaves behind.
/// Granting `search,cart` over 30 days shares exactly [`WALKTHROUGH_SHARED`] of them.
pub fn walkthrough(now: OffsetDateTime) -> Vec<Value> {
    vec![
        search("s1", ago(now, 30), "trail running shoes wide fit", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        search("s2", ago(now, 20), "ridgeline gtx review", "google.com", "Apparel & Accessories > Shoes"),
        cart("c1", ago(now, 29), "trailshoes.example", "Ridgeline GTX 44W", "139.00"),
        purchase("p1", ago(now, 10), "trailshoes.example", "Ridgeline GTX 44W", "139.00"),
        cart("c2", ago(now, 50), "soundshop.example", "OpenRun headphones", "119.99"),
        search("s3", ago(now, 45 * 24), "winter boots", "bing.com", "Apparel & Accessories > Shoes"),
        cart("c3", ago(now, 3), "outdoor-gear.example", "Featherlite 2 tent", "289.00"),
    ]
}

/// The ids of [`walkthrough`] a `search,cart` grant over 30 days shares, with the state
/// of each cart.
pub const WALKTHROUGH_SHARED: [(&str, Option<&str>); 5] =
    [("s1", None), ("s2", None), ("c1", Some("purchased")), ("c2", Some("abandoned")), ("c3", Some("open"))];

/// The signal of `id` in `signals`.
pub fn by_id<'a>(signals: &'a [Value], id: &str) -> &'a Value {
    signals.iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no fixture signal {id}"))
}
