//! What two marketers comparing notes may learn about their grants: nothing the agent makes
//! per grant links them. Expiry is a day, not a second; cursors all have one length. What
//! pull mode does link (one agent, one address, one certificate) is stated, not hidden.

use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime, Time};

use optin_protocol::bundle::GrantBundle;
use optin_protocol::signal::limits;
use optin_tests::{fixture, now, ts, Agent};

/// Characters of every cursor (SPEC.md, "Order and pages").
const CURSOR_CHARS: usize = 222;

fn is_midnight(at: OffsetDateTime) -> bool {
    at == at.replace_time(Time::MIDNIGHT)
}

/// The grant's expiry as the marketer sees it everywhere: bundle, `/v1/grant` and a slice.
async fn expiries(agent: &Agent, bundle: &GrantBundle) -> Vec<(&'static str, String)> {
    let info: serde_json::Value = serde_json::from_slice(&agent.get("/v1/grant", Some(&bundle.token)).await.body).expect("JSON");
    let slice = agent.get("/v1/slice", Some(&bundle.token)).await;
    let claims = bundle.verify_slice(&slice.text()).expect("a verified slice");
    vec![
        ("bundle", ts(bundle.terms.expires_at)),
        ("/v1/grant", info["terms"]["expires_at"].as_str().expect("expires_at").to_owned()),
        ("slice", ts(claims.grant.expires_at)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_made_a_second_apart_share_no_finer_expiry_than_the_day() {
    let agent = Agent::start().await;
    let before = now();
    let a = agent.grant("acme.example", "search", "raw", "30d").await;
    tokio::time::sleep(StdDuration::from_millis(1100)).await;
    let b = agent.grant("globex.example", "search", "raw", "30d").await;
    let after = now();
    for bundle in [&a, &b] {
        let expires = bundle.terms.expires_at;
        assert!(is_midnight(expires), "{}: expires at a UTC midnight, not to the second: {}", bundle.marketer, ts(expires));
        // Rounded up: never less than the 90 days asked, at most a day more.
        assert!(expires >= before + Duration::days(90) && expires <= after + Duration::days(91), "{}: {}", bundle.marketer, ts(expires));
        for (where_, seen) in expiries(&agent, bundle).await {
            assert_eq!(seen, ts(expires), "{}: the expiry in the {where_}", bundle.marketer);
        }
    }
    // The same day, unless a midnight fell between the two grants.
    let apart = b.terms.expires_at - a.terms.expires_at;
    assert!(apart == Duration::ZERO || apart == Duration::DAY, "{} and {}", ts(a.terms.expires_at), ts(b.terms.expires_at));
    let listed = agent.cli(&["grants", "--json"]).await.json();
    for grant in listed.as_array().expect("array") {
        let expires = grant["terms"]["expires_at"].as_str().expect("expires_at");
        assert!(expires.ends_with("T00:00:00Z"), "the stored grant holds the rounded expiry: {grant}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_have_one_length_whatever_the_signals_id() {
    let agent = Agent::start().await;
    let t = now();
    let long_id = "L".repeat(limits::ID_CHARS);
    let signals = [
        fixture::search("s", t - Duration::days(3), "short id", "bing.com", "Home"),
        fixture::search(&long_id, t - Duration::days(2), "longest id", "bing.com", "Home"),
        fixture::search("a-medium-length-id", t - Duration::days(1), "medium id", "bing.com", "Home"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let pages = optin_tests::fetch(&agent, &bundle, "limit=1").await;
    assert_eq!(pages.len(), 3, "one signal a page");
    let cursors: Vec<&str> = pages.iter().filter_map(|(_, claims)| claims.next_cursor.as_deref()).collect();
    assert_eq!(cursors.len(), 2, "the first two pages point past a 1- and a {}-character id", limits::ID_CHARS);
    for cursor in &cursors {
        assert_eq!(cursor.len(), CURSOR_CHARS, "every cursor is {CURSOR_CHARS} characters, whatever the id it points past: {cursors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_grants_name_the_same_agent_as_the_spec_says() {
    // Pull mode links what SPEC.md says it links, and nothing the agent makes per grant.
    let agent = Agent::start().await;
    let a = agent.grant("acme.example", "search", "raw", "30d").await;
    let b = agent.grant("globex.example", "search", "raw", "30d").await;
    assert_eq!(a.pull_from(), b.pull_from(), "one agent, one address and certificate");
    assert!(a.pull_from().is_some(), "pull grants name where to pull");
    assert_ne!(a.issuer, b.issuer);
    assert_ne!(a.jwk.kid, b.jwk.kid);
    assert_ne!(a.token, b.token);
}
