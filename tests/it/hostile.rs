//! What a hostile or careless client may try: cursors taken to another grant or read for
//! what they hide, silent connections holding slots, times at the edge of the calendar.

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::AsyncReadExt;

use optin_tests::{now, ts, Agent};

#[tokio::test]
async fn rejects_cursors_of_another_grant_and_hides_positions() {
    let agent = Agent::start().await;
    let mut ndjson = String::new();
    for i in 0..5 {
        // Whole days back: a category grant serves no signal of today, which is not over.
        let at = ts(now() - time::Duration::days(i + 1));
        ndjson.push_str(&format!("{{\"id\":\"secret-id-{i}\",\"kind\":\"search\",\"at\":\"{at}\",\"query\":\"q{i}\",\"engine\":\"bing.com\"}}\n"));
    }
    agent.ingest(&ndjson).await;
    let a = agent.grant("a.example", "search", "category", "30d").await;
    let b = agent.grant("b.example", "search", "category", "30d").await;

    let first = agent.get("/v1/slice?limit=1", Some(&a.token)).await;
    assert_eq!(first.status, 200);
    let claims = a.verify_slice(&first.text()).expect("a verified slice");
    let cursor = claims.next_cursor.clone().expect("more pages");
    // The cursor is sealed: no signal id, no exact time, nothing a category grant may not see.
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cursor).expect("base64url");
    assert!(!String::from_utf8_lossy(&raw).contains("secret-id"), "the cursor shows a signal id");
    // Two cuts ending at the same position get different cursors, so they cannot be compared
    // across pages. (Asked in the same words again, the slice is served again whole, its
    // cursor with it: SPEC.md, "Repeated slices".)
    let recut = a.verify_slice(&agent.get("/v1/slice?kinds=search&limit=1", Some(&a.token)).await.text()).expect("verified");
    assert_ne!(recut.jti, claims.jti, "asked in other words: cut again");
    assert_ne!(recut.next_cursor.as_deref(), Some(cursor.as_str()));
    let repeated = a.verify_slice(&agent.get("/v1/slice?limit=1", Some(&a.token)).await.text()).expect("verified");
    assert_eq!((repeated.jti.as_str(), repeated.next_cursor.as_deref()), (claims.jti.as_str(), Some(cursor.as_str())), "served again whole");

    let next = agent.get(&format!("/v1/slice?limit=1&cursor={cursor}"), Some(&a.token)).await;
    assert_eq!(next.status, 200, "the cursor works for its own grant");
    let stolen = agent.get(&format!("/v1/slice?limit=1&cursor={cursor}"), Some(&b.token)).await;
    assert_eq!(stolen.status, 400, "another grant's cursor is refused");
    assert_eq!(stolen.problem().and_then(|p| p.field).as_deref(), Some("cursor"));
}

#[tokio::test]
async fn silent_connections_are_closed() {
    let agent = Agent::start().await;
    let started = Instant::now();
    let mut tls = agent.client().connect().await.expect("a TLS connection");
    // Say nothing: the agent must hang up within its first-request timeout (10 s), freeing
    // the connection slot, instead of waiting forever.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.expect("the agent hangs up within 20 s");
    // The agent says goodbye with a TLS close_notify (RFC 8446, section 6.1), which reads as
    // the end of the stream; a connection dropped without one reads as an error, which a
    // client cannot tell from a cut line.
    assert!(matches!(read, Ok(0)), "the agent should close the connection cleanly: {read:?}");
    assert!(started.elapsed() >= Duration::from_secs(5), "not before a fair wait: {:?}", started.elapsed());
}

#[tokio::test]
async fn times_at_the_edge_of_the_calendar_break_nothing() {
    let agent = Agent::start().await;
    let edge = r#"{"id":"edge-cart","kind":"cart","at":"9999-12-31T23:30:00Z","merchant":"s.example","currency":"EUR","items":[{"name":"x","price":"1"}]}"#;
    agent.ingest(&format!("{edge}\n")).await;
    let listed = agent.cli(&["signals", "--json"]).await.json();
    assert_eq!(listed[0]["state"], "open", "{listed}");
    let bundle = agent.grant("a.example", "cart", "raw", "30d").await;
    for query in ["since=9999-12-31T23:59:59-01:00", "until=9999-12-31T23:59:59-01:00", "since=0000-01-01T00:00:00%2B23:59"] {
        let response = agent.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
        assert_eq!(response.status, 400, "{query}: {}", response.text());
    }
    let bad_at = r#"{"kind":"search","at":"9999-12-31T23:59:59-01:00","query":"q","engine":"bing.com"}"#;
    let file = agent.home().scratch("edge.ndjson");
    std::fs::write(&file, format!("{bad_at}\n")).expect("write");
    let out = agent.cli(&["ingest", file.to_str().expect("utf-8")]).await;
    out.fails(1, "line 1: field `at`");
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status, 200, "the agent is still serving");
}
