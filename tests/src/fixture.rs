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

/// `n` signals from a fixed seed, for the benchmarks: half searches, three tenths carts and a
/// fifth purchases, at times spread over the 29 days before `now` (inside a 30-day window for
/// a whole run), over a few categories, merchants and engines.
pub fn mixed(n: usize, now: OffsetDateTime) -> Vec<Value> {
    const QUERIES: [&str; 8] = [
        "trail running shoes wide fit",
        "ridgeline gtx review",
        "winter boots waterproof",
        "noise cancelling headphones",
        "ultralight tent two person",
        "espresso machine under 300",
        "merino base layer",
        "headlamp rechargeable",
    ];
    const ENGINES: [&str; 4] = ["duckduckgo.com", "google.com", "bing.com", "search.brave.com"];
    const CATEGORIES: [&str; 4] =
        ["Apparel & Accessories > Shoes", "Electronics > Audio", "Sporting Goods > Outdoor Recreation", "Home & Garden > Kitchen & Dining"];
    const MERCHANTS: [&str; 6] = ["trailshoes.example", "soundshop.example", "outdoor-gear.example", "kitchen.example", "basecamp.example", "lumen.example"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: deterministic and good enough to spread fixtures.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let span = 29 * 24 * 3600 - 120;
    (0..n)
        .map(|i| {
            let r = next();
            let at = now - Duration::seconds(60 + (next() % span) as i64);
            let at = optin_protocol::timestamp::format(at);
            let category = CATEGORIES[(r >> 8) as usize % CATEGORIES.len()];
            let merchant = MERCHANTS[(r >> 16) as usize % MERCHANTS.len()];
            let price = format!("{}.{:02}", 10 + (r >> 24) % 300, (r >> 40) % 100);
            match r % 10 {
                0..=4 => json!({
                    "id": format!("bench-s-{i}"), "kind": "search", "at": at, "source": "bench", "category": category,
                    "query": format!("{} {}", QUERIES[(r >> 32) as usize % QUERIES.len()], i % 97),
                    "engine": ENGINES[(r >> 48) as usize % ENGINES.len()],
                }),
                5..=7 => json!({
                    "id": format!("bench-c-{i}"), "kind": "cart", "at": at, "source": "bench", "category": category,
                    "merchant": merchant, "currency": "EUR",
                    "items": [{"name": format!("item {}", i % 113), "sku": format!("SKU-{i}"), "price": price, "quantity": 1}],
                }),
                _ => json!({
                    "id": format!("bench-p-{i}"), "kind": "purchase", "at": at, "source": "bench", "category": category,
                    "merchant": merchant, "currency": "EUR", "total": price, "order_id": format!("order-{i}"),
                    "items": [{"name": format!("item {}", i % 113), "price": price, "quantity": 1}],
                }),
            }
        })
        .collect()
}
