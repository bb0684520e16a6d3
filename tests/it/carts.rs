//! Abandoned carts: the agent derives each cart's state from the purchases that follow it at
//! the same merchant, within `--abandon-after`.

use std::collections::BTreeMap;

use serde_json::Value;

use optin_tests::fixture::{self, ago, cart, purchase};
use optin_tests::{fetch_raw, now, Home};

/// Carts and purchases, hours before now:
///
/// - `bought`: cart at 30h, purchase at the same merchant (another host of it) at 28h.
/// - `left`: cart at 30h, no purchase at that merchant ever.
/// - `late`: cart at 60h, purchase at 24h: 36 hours later.
/// - `recent`: cart at 2h, no purchase.
/// - `elsewhere`: cart at 40h, a purchase right after, but at another merchant.
fn signals() -> Vec<Value> {
    let t = now();
    vec![
        cart("bought", ago(t, 30), "shoes-direct.example", "Trail X", "89.90"),
        purchase("p-bought", ago(t, 28), "checkout.shoes-direct.example", "Trail X", "89.90"),
        cart("left", ago(t, 30), "left-behind.example", "Lamp", "40.00"),
        cart("late", ago(t, 60), "slow-decider.example", "Sofa", "899.00"),
        purchase("p-late", ago(t, 24), "slow-decider.example", "Sofa", "899.00"),
        cart("recent", ago(t, 2), "left-behind.example", "Shade", "15.00"),
        cart("elsewhere", ago(t, 40), "first-shop.example", "Kettle", "30.00"),
        purchase("p-elsewhere", ago(t, 39), "second-shop.example", "Kettle", "28.00"),
    ]
}

type Case = (Option<&'static str>, [(&'static str, &'static str); 5]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_states_follow_the_abandonment_delay() {
    // Each abandonment delay (`None`: the default, 24h) and the state of every cart under it.
    let cases: [Case; 3] = [
        (None, [("bought", "purchased"), ("left", "abandoned"), ("late", "abandoned"), ("recent", "open"), ("elsewhere", "abandoned")]),
        (Some("1h"), [("bought", "abandoned"), ("left", "abandoned"), ("late", "abandoned"), ("recent", "abandoned"), ("elsewhere", "abandoned")]),
        (Some("72h"), [("bought", "purchased"), ("left", "open"), ("late", "purchased"), ("recent", "open"), ("elsewhere", "open")]),
    ];
    for (delay, expected) in cases {
        let extra: Vec<&str> = delay.map(|d| vec!["--abandon-after", d]).unwrap_or_default();
        let agent = Home::new().serve(&extra).await;
        let signals = signals();
        agent.ingest(&fixture::ndjson(&signals)).await;
        let expected: BTreeMap<String, String> = expected.iter().map(|(id, s)| (id.to_string(), s.to_string())).collect();

        // As the person sees them.
        let listed = agent.cli(&["signals", "--kind", "cart", "--json"]).await.json();
        let got: BTreeMap<String, String> = listed
            .as_array()
            .expect("array")
            .iter()
            .map(|s| (s["id"].as_str().expect("id").to_owned(), s["state"].as_str().unwrap_or("(none)").to_owned()))
            .collect();
        assert_eq!(got, expected, "signals --json with --abandon-after {delay:?}");

        // As a marketer receives them.
        let bundle = agent.grant("acme.example", "cart", "raw", "30d").await;
        let served: BTreeMap<String, String> =
            fetch_raw(&agent, &bundle).await.into_iter().map(|(key, state)| (key, state.unwrap_or_else(|| "(none)".into()))).collect();
        let expected_served: BTreeMap<String, String> = expected.iter().map(|(id, s)| (fixture::key(fixture::by_id(&signals, id)), s.clone())).collect();
        assert_eq!(served, expected_served, "slice with --abandon-after {delay:?}");

        // Purchases and searches carry no state.
        let purchases = agent.cli(&["signals", "--kind", "purchase", "--json"]).await.json();
        for p in purchases.as_array().expect("array") {
            assert!(p.get("state").is_none(), "{p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_bad_abandonment_delay() {
    for delay in ["0h", "soon", "-1h"] {
        let home = Home::new();
        // A wrong command line, and the error names the value at fault.
        home.cli(&["serve", "--listen", "127.0.0.1:0", "--abandon-after", delay]).await.fails(2, delay);
    }
}
