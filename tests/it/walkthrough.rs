//! The README walk-through, end to end: serve, ingest, grant, fetch and verify as the
//! marketer, revoke, and read the audit.

use optin_protocol::scope::Granularity;
use serde_json::Value;

use optin_tests::fixture::{self, WALKTHROUGH_SHARED};
use optin_tests::{assert_unauthorized, fetch, now, raw_items, Agent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough() {
    let agent = Agent::start().await;
    let signals = fixture::walkthrough(now());
    assert_eq!(agent.ingest(&fixture::ndjson(&signals)).await.trim(), "stored 7 signals (0 already present)");

    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    assert_eq!(bundle.marketer, "acme.example");
    assert_eq!(bundle.terms.kinds.to_string(), "search,cart");
    assert_eq!(bundle.terms.granularity, Granularity::Raw);
    assert_eq!(bundle.terms.window.to_string(), "30d");

    // The marketer fetches and verifies: only granted kinds, only inside the window.
    let pages = fetch(&agent, &bundle, "").await;
    assert_eq!(pages.len(), 1, "seven signals fit one page");
    let (jws, claims) = &pages[0];
    assert_eq!(claims.aud, "acme.example");
    assert_eq!(claims.iss, bundle.issuer);
    assert_eq!(claims.grant.id, bundle.grant_id);
    assert_eq!(claims.grant.purpose, "show me relevant offers");
    assert_eq!(claims.scope.kinds.to_string(), "search,cart");
    assert_eq!(claims.next_cursor, None);
    let mut expected: Vec<(String, Option<String>)> =
        WALKTHROUGH_SHARED.iter().map(|(id, state)| (fixture::key(fixture::by_id(&signals, id)), state.map(str::to_owned))).collect();
    expected.sort();
    assert_eq!(raw_items(claims), expected);

    // Raw items carry the kind's fields, never the feeder's `source` or the store's id.
    let payload = optin_protocol::jws::verify(jws, &bundle.jwk).expect("verifies");
    let payload: Value = serde_json::from_slice(&payload).expect("JSON");
    for item in payload["items"].as_array().expect("items") {
        assert!(item.get("source").is_none(), "{item}");
        assert!(item["id"].as_str().is_some_and(|id| id.starts_with("i_")), "{item}");
    }

    // The same slice over the raw API: media type and no caching.
    let response = agent.get("/v1/slice", Some(&bundle.token)).await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.header("content-type"), Some("application/jose"));
    bundle.verify_slice(&response.text()).expect("a second slice verifies too");

    // GET /v1/grant states the effective terms and the key.
    let response = agent.get("/v1/grant", Some(&bundle.token)).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    let grant: Value = serde_json::from_slice(&response.body).expect("grant info is JSON");
    assert_eq!(grant["grant_id"], bundle.grant_id.as_str());
    assert_eq!(grant["marketer"], "acme.example");
    assert_eq!(grant["state"], "active");
    assert_eq!(grant["issuer"], bundle.issuer.as_str());
    assert_eq!(grant["jwk"], serde_json::to_value(&bundle.jwk).expect("jwk"));
    assert_eq!(grant["terms"]["kinds"], serde_json::json!(["search", "cart"]));

    // Revoke; the next request is refused with the bearer challenge.
    let revoked = agent.cli(&["revoke", bundle.grant_id.as_str()]).await;
    assert_eq!(revoked.ok().trim(), format!("revoked {}", bundle.grant_id));
    let response = agent.get("/v1/slice", Some(&bundle.token)).await;
    assert_unauthorized(&response, "slice after revoke");
    assert_unauthorized(&agent.get("/v1/grant", Some(&bundle.token)).await, "grant info after revoke");

    let grants = agent.cli(&["grants", "--json"]).await.json();
    let grants = grants.as_array().expect("grants is an array");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["grant_id"], bundle.grant_id.as_str());
    assert_eq!(grants[0]["state"], "revoked");
    assert!(grants[0]["revoked_at"].is_string(), "a revoked grant says when: {}", grants[0]);

    // The audit: granted, served (with the slice's id and digest), revoked, refused.
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let records = audit["records"].as_array().expect("the records are an array");
    check_chain(records);
    let events: Vec<&Value> = records.iter().map(|r| &r["event"]).collect();
    let of_type = |t: &str| events.iter().filter(|e| e["type"] == t).copied().collect::<Vec<_>>();
    let granted = of_type("granted");
    assert_eq!(granted.len(), 1, "{events:#?}");
    assert_eq!(granted[0]["grant_id"], bundle.grant_id.as_str());
    let served = of_type("served");
    assert_eq!(served.len(), 2, "two slices were served: {events:#?}");
    let first = served.iter().find(|e| e["slice_id"] == claims.jti.as_str()).unwrap_or_else(|| panic!("the audit names slice {}: {served:#?}", claims.jti));
    assert_eq!(first["grant_id"], bundle.grant_id.as_str());
    assert_eq!(first["marketer"], "acme.example");
    assert_eq!(first["items"], 5);
    assert_eq!(first["jws_sha256"], optin_protocol::hex(&optin_protocol::sha256(jws.as_bytes())));
    assert_eq!(of_type("revoked").len(), 1, "{events:#?}");
    // Both requests after revoke (slice and grant info) carried a genuine token of a revoked
    // grant: they are counted under the grant, not recorded one by one.
    assert_eq!(of_type("refused").len(), 0, "{events:#?}");
    let table = agent.cli(&["audit"]).await;
    let counted = table.ok().lines().find(|l| l.starts_with(bundle.grant_id.as_str()) && l.contains("401 grant revoked"));
    let counted = counted.unwrap_or_else(|| panic!("the refusals after revoke are counted: {table:?}"));
    assert_eq!(counted.split_whitespace().nth(5), Some("2"), "{counted}");
    let seq = |t: &str| records.iter().position(|r| r["event"]["type"] == t).expect("present");
    assert!(seq("granted") < seq("served") && seq("served") < seq("revoked"));

    let verified = agent.cli(&["audit", "--verify"]).await;
    assert_eq!(verified.ok().trim(), format!("audit chain intact ({} records)", records.len()));
}

/// Each record links to the one before it and sequence numbers count up from 1.
pub fn check_chain(records: &[Value]) {
    assert!(!records.is_empty());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], i + 1, "{record}");
        let hash = record["hash"].as_str().expect("hash");
        assert_eq!(hash.len(), 64, "{record}");
        if i > 0 {
            assert_eq!(record["prev"], records[i - 1]["hash"], "record {} links to its predecessor", i + 1);
        }
        assert!(record["at"].as_str().and_then(optin_protocol::timestamp::parse).is_some(), "{record}");
    }
}
