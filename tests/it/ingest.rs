//! Ingest is all or nothing, through the CLI and `POST /v1/signals`; re-ingesting adds
//! nothing; merchants are stored as registrable domains.

use serde_json::{json, Value};

use optin_tests::fixture::{self, ago, cart, purchase, search};
use optin_tests::{assert_unauthorized, now, Agent};

/// Batches with one bad line: the line and field the error must name.
fn bad_batches() -> Vec<(&'static str, String, usize, &'static str)> {
    let t = now();
    let good = |i: i64| search(&format!("ok-{i}"), ago(t, i), &format!("query {i}"), "duckduckgo.com", "Home");
    let mut bad_price = cart("bad", ago(t, 1), "shop.example", "x", "1.00");
    bad_price["items"][0]["price"] = json!(89.9);
    let mut bad_kind = good(9);
    bad_kind["kind"] = json!("walk");
    let mut bad_at = good(9);
    bad_at["at"] = json!("yesterday");
    let mut unknown = good(9);
    unknown["colour"] = json!("red");
    let mut bad_merchant = purchase("bad", ago(t, 1), "co.uk", "x", "1.00");
    bad_merchant["id"] = json!("bad-merchant");
    let line = |v: &Value| v.to_string();
    vec![
        ("price as a number", [line(&good(1)), line(&good(2)), line(&bad_price)].join("\n"), 3, "items[0].price"),
        ("unknown kind", [line(&bad_kind), line(&good(1))].join("\n"), 1, "kind"),
        ("bad time", [line(&good(1)), line(&bad_at)].join("\n"), 2, "at"),
        ("unknown field", [line(&good(1)), String::new(), line(&unknown)].join("\n"), 3, "colour"),
        ("public suffix as merchant", [line(&good(1)), line(&bad_merchant)].join("\n"), 2, "merchant"),
    ]
}

async fn listing(agent: &Agent) -> Value {
    agent.cli(&["signals", "--json"]).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_batch_with_one_bad_line_via_the_cli() {
    let agent = Agent::start().await;
    let t = now();
    agent.ingest(&fixture::ndjson(&[search("first", ago(t, 1), "first", "bing.com", "Home")])).await;
    let before = listing(&agent).await;
    for (what, batch, line, field) in bad_batches() {
        let file = agent.home().scratch("bad.ndjson");
        std::fs::write(&file, &batch).expect("write");
        let out = agent.cli(&["ingest", file.to_str().expect("utf-8")]).await;
        let stderr = out.fails(1, &format!("line {line}"));
        assert!(stderr.contains(&format!("`{field}`")), "{what}: stderr names field `{field}`: {stderr}");
        assert!(stderr.starts_with("error: "), "{what}: {stderr}");
        assert_eq!(listing(&agent).await, before, "{what}: nothing stored");

        // The same through standard input.
        let out = agent.home().command(&["ingest", "-"]).stdin(batch.as_bytes()).run().await;
        out.fails(1, &format!("line {line}"));
        assert_eq!(listing(&agent).await, before, "{what} (stdin): nothing stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_batch_with_one_bad_line_via_http() {
    let agent = Agent::start().await;
    let token = agent.cli(&["ingest-token"]).await.ok().trim().to_owned();
    assert!(token.starts_with("optin_"), "{token}");
    let client = agent.client();
    for (what, batch, line, field) in bad_batches() {
        let response = client.post("/v1/signals", Some(&token), "application/x-ndjson", batch.into_bytes()).await.expect("an answer");
        assert_eq!(response.status.as_u16(), 400, "{what}: {}", response.text());
        let problem = response.problem().expect("problem+json");
        assert_eq!(problem.line, Some(line), "{what}: {problem:?}");
        assert_eq!(problem.field.as_deref(), Some(field), "{what}: {problem:?}");
    }
    assert_eq!(listing(&agent).await, json!([]), "nothing stored");

    // Not the ingest token: refused, nothing stored.
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let good = fixture::ndjson(&[search("s1", ago(now(), 1), "q", "bing.com", "Home")]);
    for (what, bearer) in [("no token", None), ("a grant's token", Some(bundle.token.as_str())), ("garbage", Some("optin_x.y"))] {
        let response = client.post("/v1/signals", bearer, "application/x-ndjson", good.clone().into_bytes()).await.expect("answer");
        assert_unauthorized(&response, what);
    }
    assert_eq!(listing(&agent).await, json!([]), "nothing stored");

    // The right token: stored, then counted as duplicates.
    for expected in [json!({"stored": 1, "duplicates": 0}), json!({"stored": 0, "duplicates": 1})] {
        let response = client.post("/v1/signals", Some(&token), "application/x-ndjson", good.clone().into_bytes()).await.expect("answer");
        assert_eq!(response.status.as_u16(), 200, "{}", response.text());
        let body: Value = serde_json::from_slice(&response.body).expect("JSON");
        assert_eq!(body, expected);
    }
    assert_eq!(listing(&agent).await.as_array().expect("array").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reingesting_counts_duplicates_and_stores_nothing_twice() {
    let agent = Agent::start().await;
    let t = now();
    let with_ids = fixture::walkthrough(t);
    // Signals without ids get one derived from their content, so they deduplicate too.
    let mut without_ids: Vec<Value> =
        vec![search("x", ago(t, 3), "anonymous search", "duckduckgo.com", "Home"), purchase("x", ago(t, 2), "shop.example", "thing", "9.99")];
    for s in &mut without_ids {
        s.as_object_mut().expect("object").remove("id");
    }
    let all: Vec<Value> = with_ids.iter().chain(without_ids.iter()).cloned().collect();
    let batch = fixture::ndjson(&all);
    let file = agent.home().scratch("batch.ndjson");
    std::fs::write(&file, &batch).expect("write");
    let path = file.to_str().expect("utf-8");
    assert_eq!(agent.cli(&["ingest", path]).await.ok().trim(), "stored 9 signals (0 already present)");
    assert_eq!(agent.cli(&["ingest", path]).await.ok().trim(), "stored 0 signals (9 already present)");
    assert_eq!(agent.cli(&["ingest", path, "--json"]).await.json(), json!({"stored": 0, "duplicates": 9}));
    let listed = listing(&agent).await;
    assert_eq!(listed.as_array().expect("array").len(), 9);
    assert!(listed.as_array().expect("array").iter().all(|s| s["id"].is_string()), "every signal lists its id");

    // A batch mixing old and new stores only the new.
    let extra = search("s-extra", ago(t, 1), "one more", "bing.com", "Home");
    let mixed = fixture::ndjson(&[with_ids[0].clone(), extra]);
    let out = agent.home().command(&["ingest", "-", "--json"]).stdin(mixed.as_bytes()).run().await;
    assert_eq!(out.json(), json!({"stored": 1, "duplicates": 1}));
    assert_eq!(listing(&agent).await.as_array().expect("array").len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_are_stored_as_registrable_domains() {
    let agent = Agent::start().await;
    let t = now();
    let cases = [
        ("m1", "www.shoes-direct.co.uk", "shoes-direct.co.uk"),
        ("m2", "checkout.Shoes-Direct.CO.UK", "shoes-direct.co.uk"),
        ("m3", "www.shop.example.co.uk", "example.co.uk"),
        ("m4", "WWW.Amazon.DE", "amazon.de"),
        ("m5", "foo.github.io", "foo.github.io"),
        ("m6", "shop.example.", "shop.example"),
    ];
    let signals: Vec<Value> = cases.iter().enumerate().map(|(i, (id, host, _))| cart(id, ago(t, i as i64 + 1), host, "x", "1.00")).collect();
    agent.ingest(&fixture::ndjson(&signals)).await;
    let listed = listing(&agent).await;
    for (id, host, merchant) in cases {
        let signal = listed.as_array().expect("array").iter().find(|s| s["id"] == id).expect("listed");
        assert_eq!(signal["merchant"], merchant, "{host}");
    }
}
