//! Consent requests through the real binary: a marketer's signed request added from a file
//! or standard input, shown with what it would share now, approved narrowed into a grant
//! whose slices keep the narrowed terms and the category filter, or refused when an approval
//! would widen it; hostile text never reaches the terminal live, and a request that does not
//! verify leaves nothing behind.

use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};
use time::Duration;

use optin_protocol::bundle::GrantBundle;
use optin_tests::fixture::{self, ago};
use optin_tests::{assert_problem, fetch, now, raw_items, ts, Agent, Home};

/// The marketer's key.
fn key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a key")
}

/// A request of acme.example for shoes, valid for a month from now, as `edit` changes it.
fn document(id: &str, edit: impl FnOnce(&mut Value)) -> String {
    let now = now();
    let mut v = json!({
        "version": 1, "id": id, "issued_at": ts(now - Duration::hours(1)), "expires_at": ts(now + Duration::days(30)),
        "marketer": {"name": "Acme Shoes", "domain": "acme.example", "contact": "privacy@acme.example", "privacy_policy": "https://acme.example/privacy"},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you running-shoe offers that fit what you look for."},
        "terms": {"kinds": ["search", "cart"], "granularity": "raw", "window": "30d", "duration": "90d",
                  "categories": ["Apparel & Accessories > Shoes"]},
        "offer": "10% off your next pair",
        "delivery": {"method": "push", "inbox": "https://inbox.acme.example/optin", "every": "1d"},
    });
    edit(&mut v);
    v.to_string()
}

fn signed(id: &str, edit: impl FnOnce(&mut Value)) -> String {
    optin_protocol::request::sign(&key(), document(id, edit).as_bytes())
}

/// The walk-through's week of shopping, and a search and a cart outside shoes.
fn signals() -> Vec<Value> {
    let now = now();
    let mut all = fixture::walkthrough(now);
    all.push(fixture::search("s-health", ago(now, 5), "headache remedies", "duckduckgo.com", "Health"));
    let mut cart = fixture::cart("c-tv", ago(now, 6), "screens.example", "a television", "499.00");
    cart["category"] = "Electronics".into();
    all.push(cart);
    all
}

async fn grants(home: &Home) -> Vec<Value> {
    home.cli(&["grants", "--json"]).await.json().as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_adds_shows_and_approves_a_request_narrowed() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    let file = agent.home().scratch("request.jws");
    std::fs::write(&file, signed("shoes-1", |_| {})).expect("write the request");
    let path = file.to_str().expect("a UTF-8 path");

    let added = agent.cli(&["requests", "add", path]).await;
    let out = added.ok();
    assert!(out.contains("added request shoes-1 from Acme Shoes (acme.example)"), "{out}");
    assert!(out.contains("not checked against the marketer's website"), "{out}");
    // Nothing is approved by adding; adding again changes nothing.
    assert!(grants(agent.home()).await.is_empty());
    assert!(agent.cli(&["requests", "add", path]).await.ok().contains("was already added"));
    let listed = agent.cli(&["requests"]).await;
    assert!(listed.ok().contains("acme.example/shoes-1") && listed.ok().contains("pending"), "{}", listed.stdout);

    // Shown in plain words, with what the terms would share now: shoes only.
    let shown = agent.cli(&["requests", "show", "shoes-1"]).await;
    let out = shown.ok();
    for needle in [
        "who asks:",
        "Acme Shoes (acme.example)",
        "not checked against the marketer's website",
        "dpv:PersonalisedAdvertising",
        "search,cart at raw",
        "only in:",
        "10% off your next pair",
        "push to https://inbox.acme.example/optin every 1d: `optin serve` sends the grant",
        "2 searches, 1 abandoned cart, 1 open cart, 1 purchased cart in Apparel & Accessories > Shoes over 30d",
    ] {
        assert!(out.contains(needle), "show should say {needle:?}:\n{out}");
    }
    let json = agent.cli(&["requests", "show", "shoes-1", "--json"]).await.json();
    assert_eq!(json["would_share"]["items"], 5, "{json}");

    // Approved narrowed to a week: the grant is bound to the request and holds the filter.
    let approved = agent.cli(&["approve", "shoes-1", "--window", "7d"]).await;
    let out = approved.ok();
    assert!(out.contains("approved request shoes-1"), "{out}");
    assert!(out.contains("pushed to https://inbox.acme.example/optin by `optin serve`"), "the person is told where it goes: {out}");
    assert!(out.contains("the inbox receives this bundle"), "{out}");
    let bundle = GrantBundle::parse(&out[out.find('{').expect("the bundle")..]).expect("a bundle");
    assert_eq!((bundle.marketer.as_str(), bundle.terms.window.to_string()), ("acme.example", "1w".to_owned()));
    assert_eq!(bundle.terms.categories, Some(vec!["Apparel & Accessories > Shoes".to_owned()]));
    let listed = grants(agent.home()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["request_id"].as_str(), listed[0]["state"].as_str()), (Some("shoes-1"), Some("active")));
    assert!(agent.cli(&["requests"]).await.ok().contains("approved"));

    // The slice keeps the narrowed window and the category filter.
    let pages = fetch(&agent, &bundle, "").await;
    let items: Vec<String> = pages.iter().flat_map(|(_, c)| raw_items(c)).map(|(key, _)| key).collect();
    assert_eq!(items.len(), 5, "the week's shoes, and neither the health search nor the television: {items:?}");
    assert!(!items.iter().any(|k| k.contains("headache") || k.contains("screens.example")), "{items:?}");
    assert_eq!(pages[0].1.scope.categories, bundle.terms.categories);
    let response = agent.get(&format!("/v1/slice?since={}", ts(now() - Duration::days(8))), Some(&bundle.token)).await;
    assert_problem(&response, 403, "since", "beyond the narrowed window");

    // An approval that would widen a term is refused naming it, and nothing changes.
    let second = agent.home().command(&["requests", "add", "-"]).stdin(signed("shoes-2", |_| {}).as_bytes()).run().await;
    assert!(second.ok().contains("added request shoes-2"), "{}", second.stdout);
    for (args, term) in [
        (vec!["--window", "60d"], "window"),
        (vec!["--kinds", "search,purchase"], "kinds"),
        (vec!["--categories", "Apparel & Accessories"], "categories"),
        (vec!["--expires", "100d"], "expires"),
    ] {
        let mut all = vec!["approve", "shoes-2"];
        all.extend(args);
        agent.cli(&all).await.fails(1, &format!("`{term}` would widen the request"));
    }
    assert_eq!(grants(agent.home()).await.len(), 1, "no grant was made");
    assert!(agent.cli(&["requests", "show", "shoes-2"]).await.ok().contains("pending"));
    assert!(agent.cli(&["deny", "shoes-2"]).await.ok().contains("denied request shoes-2"));
    agent.cli(&["approve", "shoes-2"]).await.fails(1, "already denied");
    let audit = agent.cli(&["audit"]).await;
    assert!(audit.ok().contains("approving request shoes-1 (dpv:PersonalisedAdvertising)") && audit.ok().contains("denied"), "{}", audit.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_unsigned_requests_are_refused_and_nothing_is_stored() {
    let home = Home::new();
    let (signed_part, _) = signed("shoes-1", |_| {}).rsplit_once('.').map(|(a, b)| (a.to_owned(), b.to_owned())).expect("a JWS");
    let other = signed("shoes-1", |v| v["offer"] = "90% off".into());
    let forged = format!("{signed_part}.{}", other.rsplit_once('.').expect("a JWS").1);
    let escape = "Show you offers\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let cases: Vec<(&str, String, &str)> = vec![
        ("a forged signature", forged, "signature does not verify"),
        ("an escape sequence in the purpose", signed("x", |v| v["purpose"]["text"] = escape.into()), "purpose.text"),
        ("a bidi override in the name", signed("x", |v| v["marketer"]["name"] = "Acme \u{202e}seohS".into()), "marketer.name"),
        ("an escape in an unknown field's name", signed("x", |v| v["terms"]["\u{1b}[31mred"] = 1.into()), "terms.\\u{1b}[31mred"),
        ("expired", signed("x", |v| v["expires_at"] = ts(now() - Duration::minutes(1)).into()), "expired at"),
        ("not a request", "hello".into(), "not a signed request"),
    ];
    for (case, jws, because) in cases {
        let out = home.command(&["requests", "add", "-"]).stdin(jws.as_bytes()).run().await;
        let stderr = out.fails(1, because);
        assert!(stderr.contains("nothing was stored"), "{case}: {stderr}");
        assert!(!stderr.chars().any(|c| c == '\u{1b}' || c == '\u{7}' || c == '\u{202e}'), "{case}: live control text reached the terminal: {stderr:?}");
    }
    let listed = home.cli(&["requests", "--json"]).await.json();
    assert_eq!(listed, json!([]), "nothing was stored");
    // The store and home exist all the same (adding makes them), and a good request is taken.
    let out = home.command(&["requests", "add", "-"]).stdin(signed("shoes-1", |_| {}).as_bytes()).run().await;
    assert!(out.ok().contains("added request shoes-1"), "{}", out.stdout);
    home.cli(&["approve", "nothing"]).await.fails(1, "no request nothing");
    home.cli(&["approve", "bad id!"]).await.fails(2, "is not a request");
}
