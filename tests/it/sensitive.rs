//! Sensitive topics: what matches a shipped topic, or a category the person excluded, is
//! never served by any grant however broad, in slices and previews alike, until the person
//! includes it; signals are marked at ingest; bad entries are refused and change nothing.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use time::Duration;

use optin_protocol::bundle::GrantBundle;
use optin_protocol::slice::SliceItem;
use optin_protocol::token::Token;
use optin_tests::fixture::{self, now, ts};
use optin_tests::{fetch, Agent};

/// What a marketer can tell apart in raw items: a search by its query, a cart by its merchant.
fn label(item: &SliceItem) -> String {
    let value = serde_json::to_value(item).expect("slice items serialize");
    match value["kind"].as_str() {
        Some("search") => format!("search:{}", value["query"].as_str().unwrap_or("?")),
        Some(kind) => format!("{kind}:{}", value["merchant"].as_str().unwrap_or("?")),
        None => panic!("a raw item without a kind: {value}"),
    }
}

/// Everything the grant's marketer receives now, every page.
async fn served(agent: &Agent, bundle: &GrantBundle) -> BTreeSet<String> {
    fetch(agent, bundle, "").await.iter().flat_map(|(_, claims)| claims.items.iter().map(label)).collect()
}

/// Everything `optin preview` says the grant would serve now.
async fn previewed(agent: &Agent, bundle: &GrantBundle) -> BTreeSet<String> {
    let pages = agent.cli(&["preview", bundle.grant_id.as_str(), "--json"]).await.json();
    let pages = pages.as_array().expect("a list of pages");
    pages
        .iter()
        .flat_map(|page| page["items"].as_array().expect("items").clone())
        .map(|item| label(&serde_json::from_value(item).expect("a slice item")))
        .collect()
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

/// A cart of one item in `category`.
fn cart(id: &str, merchant: &str, category: &str) -> Value {
    json!({
        "id": id, "kind": "cart", "at": ts(now() - Duration::hours(5)), "merchant": merchant, "currency": "EUR",
        "items": [{"name": "an item", "price": "9.90", "quantity": 1, "category": category}]
    })
}

async fn agent_with_signals() -> Agent {
    let agent = Agent::start().await;
    let at = now() - Duration::hours(3);
    let signals = vec![
        fixture::search("s-hiv", at, "HIV  test near me", "duckduckgo.com", "Apparel & Accessories"),
        fixture::search("s-shoes", at, "running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        fixture::search("s-doll", at, "dollhouse", "duckduckgo.com", "Toys & Games > Toys > Dolls > Dollhouses"),
        cart("c-pharmacy", "pharmacy.example", "Health & Beauty > Health Care > Medicine & Drugs"),
        cart("c-toys", "toys.example", "Toys & Games > Toys > Dolls"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    agent
}

/// What `optin exclusions --json` says now.
async fn exclusions(agent: &Agent) -> Value {
    agent.cli(&["exclusions", "--json"]).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_reaches_a_sensitive_topic_until_the_person_includes_it() {
    let agent = agent_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart,purchase", "raw", "30d").await;
    let ordinary = ["search:running shoes", "search:dollhouse", "cart:toys.example"];

    // The search and the cart matching `health` are stored marked, and withheld from the
    // broadest grant, in its slices and its preview alike.
    let listed = agent.cli(&["signals", "--json"]).await.json();
    let marks: BTreeSet<(String, String)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .flat_map(|s| s["sensitive"].as_array().cloned().unwrap_or_default().into_iter().map(|t| (s["id"].as_str().unwrap_or("?").to_owned(), t.to_string())))
        .collect();
    let expected: BTreeSet<(String, String)> =
        [("c-pharmacy", "\"health\""), ("s-hiv", "\"health\"")].iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    assert_eq!(marks, expected);
    let text = agent.cli(&["signals", "--kind", "search"]).await;
    assert!(text.ok().contains("\"HIV  test near me\" on duckduckgo.com [sensitive: health]"), "{}", text.stdout);
    assert!(!text.ok().contains("\"running shoes\" on duckduckgo.com [sensitive"), "{}", text.stdout);
    assert_eq!(served(&agent, &bundle).await, set(&ordinary));
    assert_eq!(previewed(&agent, &bundle).await, set(&ordinary));

    // Switching the topic off lets the grant share both, at once, from the running agent.
    agent.cli(&["include", "health"]).await.ok();
    let all = ["search:running shoes", "search:dollhouse", "cart:toys.example", "search:HIV  test near me", "cart:pharmacy.example"];
    assert_eq!(served(&agent, &bundle).await, set(&all));
    assert_eq!(previewed(&agent, &bundle).await, set(&all));

    // A category of the person's own hides what is already stored within it: the cart in
    // it and the search below it, not the search beside it.
    let out = agent.cli(&["exclude", "Toys  & Games > Toys >Dolls"]).await;
    assert!(out.ok().contains("\"Toys & Games > Toys > Dolls\" and every category below it are withheld"), "{}", out.stdout);
    let without_dolls = ["search:running shoes", "search:HIV  test near me", "cart:pharmacy.example"];
    assert_eq!(served(&agent, &bundle).await, set(&without_dolls));
    assert_eq!(previewed(&agent, &bundle).await, set(&without_dolls));

    // The topic on again withholds again; the list says both.
    agent.cli(&["exclude", "health"]).await.ok();
    assert_eq!(served(&agent, &bundle).await, set(&["search:running shoes"]));
    let list = exclusions(&agent).await;
    assert_eq!(list["categories"], json!(["Toys & Games > Toys > Dolls"]));
    let health = list["topics"].as_array().expect("topics").iter().find(|t| t["id"] == "health").cloned();
    assert_eq!(health.map(|t| t["withheld"].clone()), Some(json!(true)));

    // Taking the category off the list shares it again.
    agent.cli(&["include", "Toys & Games > Toys > Dolls"]).await.ok();
    assert_eq!(served(&agent, &bundle).await, set(&ordinary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_grant_and_a_token_narrowed_from_it_are_held_to_the_list_too() {
    let agent = Agent::start().await;
    // Signals of yesterday, so that a category slice (whole days before today) holds them.
    let yesterday = now() - Duration::days(1);
    let signals = vec![
        fixture::search("s-loan", yesterday, "payday loans", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        fixture::search("s-boots", yesterday, "boots", "duckduckgo.com", "Apparel & Accessories > Shoes"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = agent.grant("acme.example", "search", "category", "30d").await;
    let count = |pages: &[(String, optin_protocol::slice::SliceClaims)]| pages.iter().map(|(_, c)| c.items.len()).sum::<usize>();
    // A token the marketer narrowed offline, as it would for a partner, cuts through the
    // same scope.
    let narrowed = Token::parse(&bundle.token).expect("the bundle's token parses").attenuate(&"window=7d".parse().expect("a caveat")).encode();
    let narrowed_count = || async {
        let response = agent.get("/v1/slice", Some(&narrowed)).await;
        assert_eq!(response.status.as_u16(), 200, "{}", response.text());
        bundle.verify_slice(&response.text()).expect("verifies").items.len()
    };
    assert_eq!(count(&fetch(&agent, &bundle, "").await), 1, "only the search for boots");
    assert_eq!(narrowed_count().await, 1, "only the search for boots, with the narrowed token");
    agent.cli(&["include", "financial-hardship"]).await.ok();
    assert_eq!(count(&fetch(&agent, &bundle, "").await), 2, "both, once the topic is included");
    assert_eq!(narrowed_count().await, 2, "both, with the narrowed token too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_entries_and_changes_nothing() {
    let agent = agent_with_signals().await;
    agent.cli(&["exclude", "Some > Category"]).await.ok();
    let before = exclusions(&agent).await;
    for (args, needle) in [
        (vec!["exclude", "healthy"], "unknown topic `healthy`"),
        (vec!["include", "healthy"], "unknown topic `healthy`"),
        (vec!["exclude", ""], "an empty topic or category"),
        (vec!["exclude", "   "], "an empty topic or category"),
        (vec!["exclude", "Some > "], "every part between `>` must name something"),
        (vec!["exclude", "Toys\u{1b}[2J > Dolls"], "control or invisible characters"),
        (vec!["exclude", "Toys\u{202e} > Dolls"], "control or invisible characters"),
        (vec!["include", "Other > Category"], "is not one of your own categories"),
        (vec!["include", "Health & Beauty > Health Care"], "is part of the topic `health`"),
    ] {
        agent.cli(&args).await.fails(1, needle);
        assert_eq!(exclusions(&agent).await, before, "{args:?} changed the list");
    }
    // The list is the same after a restart: it is in the store. With no agent running, a
    // change goes to the store itself, and the agent started next applies it.
    let home = agent.stop();
    home.cli(&["include", "religion"]).await.ok();
    let agent = home.serve(&[]).await;
    let after = exclusions(&agent).await;
    assert_eq!(after["categories"], before["categories"]);
    let religion = after["topics"].as_array().expect("topics").iter().find(|t| t["id"] == "religion").cloned();
    assert_eq!(religion.map(|t| t["withheld"].clone()), Some(json!(false)));
    let text = agent.cli(&["exclusions"]).await;
    let lines: Vec<&str> = text.ok().lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("health ") && l.contains("never") && l.contains("Health and medical conditions")), "{}", text.stdout);
    assert!(lines.iter().any(|l| l.starts_with("religion ") && l.contains("allowed")), "{}", text.stdout);
    assert!(lines.contains(&"  Some > Category"), "{}", text.stdout);
}

/// A request of acme.example for searches and carts with no filter, signed.
fn request(id: &str) -> String {
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).expect("a key");
    let document = json!({
        "version": 1, "id": id, "issued_at": ts(now() - Duration::hours(1)), "expires_at": ts(now() + Duration::days(30)),
        "marketer": {"name": "Acme", "domain": "acme.example", "contact": "privacy@acme.example", "privacy_policy": "https://acme.example/privacy"},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Offers that fit what you look for."},
        "terms": {"kinds": ["search", "cart"], "granularity": "raw", "window": "30d", "duration": "90d"},
        "offer": "10% off",
        "delivery": {"method": "pull"},
    });
    optin_protocol::request::sign(&key, document.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_live_preview_counts_only_what_may_be_shared() {
    let agent = agent_with_signals().await;
    let file = agent.home().scratch("request.jws");
    std::fs::write(&file, request("all-1")).expect("write the request");
    agent.cli(&["requests", "add", file.to_str().expect("a UTF-8 path")]).await.ok();
    let items = |json: Value| json["would_share"]["items"].clone();
    // Five signals stored; the search and the cart about health are not counted.
    assert_eq!(items(agent.cli(&["requests", "show", "all-1", "--json"]).await.json()), json!(3));
    agent.cli(&["include", "health"]).await.ok();
    assert_eq!(items(agent.cli(&["requests", "show", "all-1", "--json"]).await.json()), json!(5));
}

/// A category with a part left empty (a trailing `>`, two in a row, a part of only an
/// invisible character) is compared as the path its other parts name: stored as the owner
/// or a page wrote it, it is withheld and marked as the plain path would be, by the shipped
/// topics and by the person's own paths, rather than read as no category at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_with_an_empty_part_is_withheld_as_the_path_it_names() {
    let agent = Agent::start().await;
    let at = now() - Duration::hours(3);
    let signals = vec![
        cart("c-trailing", "pharmacy.example", "Health & Beauty > Health Care >"),
        cart("c-doubled", "clinic.example", "Health & Beauty >> Health Care > Medicine & Drugs"),
        cart("c-invisible", "drugs.example", "Health & Beauty > Health Care > \u{200b}"),
        fixture::search("s-doll", at, "dollhouse", "duckduckgo.com", "Toys & Games > Toys > Dolls >"),
        fixture::search("s-shoes", at, "running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    agent.cli(&["exclude", "Toys & Games > Toys > Dolls"]).await.ok();
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    assert_eq!(served(&agent, &bundle).await, set(&["search:running shoes"]));
    assert_eq!(previewed(&agent, &bundle).await, set(&["search:running shoes"]));
    let listed = agent.cli(&["signals", "--json"]).await.json();
    let marked: BTreeSet<String> =
        listed.as_array().expect("a list").iter().filter(|s| s["sensitive"] == json!(["health"])).map(|s| s["id"].as_str().unwrap_or("?").to_owned()).collect();
    assert_eq!(marked, set(&["c-doubled", "c-invisible", "c-trailing"]));
}
