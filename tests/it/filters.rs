//! Filters, fields and rate: a grant made with `--merchants`, `--categories`, `--fields` or
//! `--rate` serves only what they let through, a token's caveats narrow them further and never
//! widen them, and a bad one is refused before anything is granted.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::slice::{SliceClaims, SliceItem};
use optin_protocol::token::Token;
use serde_json::{json, Value};
use time::OffsetDateTime;

use optin_tests::{fetch, fixture, now, raw_items, Agent};

/// An agent holding the walk-through's signals.
async fn started(signals: &[Value]) -> Agent {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(signals)).await;
    agent
}

/// `optin grant acme.example --window 30d --expires 90d ARGS…`.
async fn grant(agent: &Agent, args: &[&str]) -> GrantBundle {
    let mut all = vec!["--window", "30d", "--expires", "90d"];
    all.extend_from_slice(args);
    agent.grant_with("acme.example", &all).await
}

/// Every item of every page, as JSON without its per-grant id.
async fn items(agent: &Agent, bundle: &GrantBundle) -> Vec<Value> {
    let mut out: Vec<Value> = fetch(agent, bundle, "")
        .await
        .iter()
        .flat_map(|(_, c)| c.items.iter().map(|i| serde_json::to_value(i).expect("items serialize")))
        .map(|mut v| {
            v.as_object_mut().expect("an item is an object").remove("id");
            v
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

/// The first page of a slice for `token`.
async fn first_page(agent: &Agent, bundle: &GrantBundle, token: &str) -> SliceClaims {
    let with = GrantBundle { token: token.to_owned(), ..bundle.clone() };
    fetch(agent, &with, "").await.remove(0).1
}

/// `bundle`'s token narrowed by `caveats`, as its holder makes it offline.
fn narrowed(bundle: &GrantBundle, caveats: &[&str]) -> String {
    let mut token = Token::parse(&bundle.token).expect("the bundle's token parses");
    for caveat in caveats {
        token = token.attenuate(&caveat.parse().unwrap_or_else(|e| panic!("{caveat}: {e}")));
    }
    token.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_grant_serves_only_that_merchants_carts_and_purchases() {
    let signals = fixture::walkthrough(now());
    let agent = started(&signals).await;
    let bundle = grant(&agent, &["--kinds", "search,cart,purchase", "--granularity", "raw", "--merchants", "trailshoes.example"]).await;
    assert_eq!(bundle.terms.merchants, Some(vec!["trailshoes.example".to_string()]));
    // Searches name no merchant: none of the three is shared, nor the other shops' carts.
    let mut expected =
        vec![(fixture::key(fixture::by_id(&signals, "c1")), Some("purchased".to_string())), (fixture::key(fixture::by_id(&signals, "p1")), None)];
    expected.sort();
    let pages = fetch(&agent, &bundle, "").await;
    let got: Vec<_> = pages.iter().flat_map(|(_, c)| raw_items(c)).collect();
    assert_eq!(got, expected);
    assert_eq!(pages[0].1.scope.merchants, Some(vec!["trailshoes.example".to_string()]), "the slice states its filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_grant_serves_only_what_lies_within() {
    let at = now() - time::Duration::hours(5);
    let signals = vec![
        fixture::search("in", at, "trail running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes > Running"),
        fixture::search("same", at, "shoe shop", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        fixture::search("above", at, "accessories", "duckduckgo.com", "Apparel & Accessories"),
        fixture::search("look-alike", at, "shoeshine", "duckduckgo.com", "Apparel & Accessories > Shoes2"),
        fixture::search("health", at, "blister plasters", "duckduckgo.com", "Health > Pharmacy"),
        fixture::cart("cart", at, "trailshoes.example", "Ridgeline GTX", "139.00"),
    ];
    let agent = started(&signals).await;
    let bundle = grant(&agent, &["--kinds", "search,cart", "--granularity", "raw", "--categories", "Apparel & Accessories > Shoes"]).await;
    let mut expected: Vec<_> = ["in", "same", "cart"].iter().map(|id| fixture::key(fixture::by_id(&signals, id))).collect();
    expected.sort();
    let got: Vec<String> = fetch(&agent, &bundle, "").await.iter().flat_map(|(_, c)| raw_items(c)).map(|(k, _)| k).collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_leave_prices_and_order_ids_out_of_purchases() {
    let signals = fixture::walkthrough(now());
    let p1 = fixture::by_id(&signals, "p1").clone();
    let agent = started(&signals).await;
    let bundle = grant(&agent, &["--kinds", "purchase", "--granularity", "raw", "--fields", "merchant,items.name,currency"]).await;
    assert_eq!(bundle.terms.fields, Some(vec!["currency".to_string(), "items.name".into(), "merchant".into()]), "the terms hold the fields sorted");
    let claims = first_page(&agent, &bundle, &bundle.token).await;
    assert_eq!(claims.scope.fields, bundle.terms.fields, "the slice states the fields it holds");
    assert!(claims.items.iter().all(|i| matches!(i, SliceItem::Partial(_))), "{:?}", claims.items);
    let expected = json!({
        "kind": "purchase", "at": p1["at"], "merchant": "trailshoes.example", "currency": "EUR",
        "items": [{"name": "Ridgeline GTX 44W"}],
    });
    assert_eq!(items(&agent, &bundle).await, vec![expected]);
    // The owner's preview shows exactly what the marketer gets.
    let preview = agent.cli(&["preview", bundle.grant_id.as_str(), "--json"]).await.json();
    let shown = &preview[0]["items"][0];
    assert!(shown.get("total").is_none() && shown.get("order_id").is_none() && shown["items"][0].get("price").is_none(), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caveats_narrow_a_tokens_filters_and_fields_and_never_widen_them() {
    let at = now() - time::Duration::hours(5);
    let signals = vec![
        fixture::search("shoes", at, "trail running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        fixture::search("bags", at, "hip bag", "duckduckgo.com", "Apparel & Accessories > Handbags"),
        fixture::cart("cart", at, "trailshoes.example", "Ridgeline GTX", "139.00"),
    ];
    let agent = started(&signals).await;
    // The category is shared: a categories caveat reads it (and the items' too).
    let bundle = grant(
        &agent,
        &[
            "--kinds",
            "search,cart",
            "--granularity",
            "raw",
            "--categories",
            "Apparel & Accessories",
            "--fields",
            "category,items.category,query,merchant,items.name",
        ],
    )
    .await;
    let only = |claims: &SliceClaims| -> Vec<Value> {
        let mut v: Vec<Value> = claims.items.iter().map(|i| serde_json::to_value(i).expect("serializes")).collect();
        for item in &mut v {
            let object = item.as_object_mut().expect("object");
            object.remove("id");
            object.remove("at");
        }
        v.sort_by_key(|x| x.to_string());
        v
    };
    // (caveats, the slice's categories and fields, what its items hold)
    const SHOES: &str = "Apparel & Accessories > Shoes";
    let cases: Vec<(&[&str], Value, Vec<Value>)> = vec![
        (
            &["categories=Apparel & Accessories > Shoes"],
            json!([[SHOES], ["category", "items.category", "items.name", "merchant", "query"]]),
            vec![
                json!({"kind": "cart", "category": SHOES, "merchant": "trailshoes.example", "items": [{"name": "Ridgeline GTX"}]}),
                json!({"kind": "search", "category": SHOES, "query": "trail running shoes"}),
            ],
        ),
        (
            &["categories=Apparel & Accessories > Shoes", "fields=category,items.category,query"],
            json!([[SHOES], ["category", "items.category", "query"]]),
            vec![json!({"kind": "cart", "category": SHOES, "items": [{}]}), json!({"kind": "search", "category": SHOES, "query": "trail running shoes"})],
        ),
        // A wider path keeps the grant's; fields the grant never shared stay out.
        (
            &["categories=Apparel & Accessories,Health", "fields=category,engine,items.category,order_id,query"],
            json!([["Apparel & Accessories"], ["category", "items.category", "query"]]),
            vec![
                json!({"kind": "cart", "category": SHOES, "items": [{}]}),
                json!({"kind": "search", "category": "Apparel & Accessories > Handbags", "query": "hip bag"}),
                json!({"kind": "search", "category": SHOES, "query": "trail running shoes"}),
            ],
        ),
    ];
    for (caveats, scope, mut expected) in cases {
        let claims = first_page(&agent, &bundle, &narrowed(&bundle, caveats)).await;
        assert_eq!(json!([claims.scope.categories, claims.scope.fields]), scope, "{caveats:?}");
        expected.sort_by_key(|x| x.to_string());
        assert_eq!(only(&claims), expected, "{caveats:?}");
    }
    // Caveats that leave no category or merchant in common serve nothing at all.
    for caveats in [&["categories=Health"][..], &["merchants=trailshoes.example", "merchants=other.example"]] {
        let response = agent.get("/v1/slice", Some(&narrowed(&bundle, caveats))).await;
        optin_tests::assert_unauthorized(&response, &format!("{caveats:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_left_out_is_told_by_no_coarser_slice_and_no_filter_caveat() {
    // Two days ago, so that category slices and counts, which end at the start of today, reach them.
    let at = now() - time::Duration::days(2);
    let signals = vec![
        fixture::search("shoes", at, "trail running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        fixture::search("plasters", at, "blister plasters", "duckduckgo.com", "Health > Pharmacy"),
        fixture::cart("cart", at, "trailshoes.example", "Ridgeline GTX", "139.00"),
    ];
    let agent = started(&signals).await;
    // The person shares queries and item names: no category, no merchant.
    let bundle = grant(&agent, &["--kinds", "search,cart", "--granularity", "raw", "--fields", "query,items.name"]).await;
    let raw = first_page(&agent, &bundle, &bundle.token).await;
    assert_eq!(raw.items.len(), 3, "{:?}", raw.items);
    let shown = serde_json::to_string(&raw.items).expect("items serialize");
    assert!(!shown.contains("Apparel") && !shown.contains("Health") && !shown.contains("trailshoes"), "{shown}");

    // A category item and a count show each signal's category: asked for, or by a caveat.
    for (what, token, path) in [
        ("granularity=category", bundle.token.clone(), "/v1/slice?granularity=category"),
        ("granularity=aggregate", bundle.token.clone(), "/v1/slice?granularity=aggregate"),
        ("a granularity=category caveat", narrowed(&bundle, &["granularity=category"]), "/v1/slice"),
        ("a granularity=aggregate caveat", narrowed(&bundle, &["granularity=aggregate"]), "/v1/slice"),
    ] {
        optin_tests::assert_problem(&agent.get(path, Some(&token)).await, 403, "granularity", what);
    }
    // A filter caveat keeps the items that pass it, under the ids every token of the grant
    // sees: tried one after another, they would tell each item's category or merchant.
    for caveats in [&["categories=Health"][..], &["categories=Apparel & Accessories"], &["merchants=trailshoes.example"]] {
        optin_tests::assert_unauthorized(&agent.get("/v1/slice", Some(&narrowed(&bundle, caveats))).await, &format!("{caveats:?}"));
    }

    // A grant that shares the category serves it coarser, and a filter caveat on it.
    let shared = grant(&agent, &["--kinds", "search", "--granularity", "raw", "--fields", "category,query"]).await;
    let response = agent.get("/v1/slice?granularity=category", Some(&shared.token)).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    let health = first_page(&agent, &shared, &narrowed(&shared, &["categories=Health"])).await;
    assert_eq!(health.items.len(), 1, "{:?}", health.items);
}

/// Seconds from `at` to the next UTC midnight.
fn to_midnight(at: OffsetDateTime) -> i64 {
    let next = (at.date() + time::Duration::days(1)).midnight().assume_utc();
    (next - at).whole_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_of_two_a_day_answers_429_with_retry_after_and_still_does_after_a_restart() {
    // Two slices and the third must fall in one UTC day: not in its last minute.
    if to_midnight(now()) < 60 {
        tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    }
    let agent = started(&fixture::walkthrough(now())).await;
    let bundle = grant(&agent, &["--kinds", "search", "--granularity", "raw", "--rate", "2/day"]).await;
    assert_eq!(bundle.terms.rate.map(|r| r.to_string()).as_deref(), Some("2/day"));
    for n in 1..=2 {
        assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200, "slice {n}");
    }
    let check_limited = |response: &optin_examples::Response, before: i64, after: i64, what: &str| {
        assert_eq!(response.status.as_u16(), 429, "{what}: {}", response.text());
        let retry: i64 = response.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what}: a Retry-After in seconds"));
        assert!((after..=before).contains(&retry), "{what}: Retry-After {retry} is not the time to midnight ({after}..={before})");
        let problem = response.problem().unwrap_or_else(|| panic!("{what}: a problem"));
        assert_eq!((problem.type_.as_str(), problem.retry_after.map(|n| i64::from(n.get()))), ("urn:optin:problem:rate-limited", Some(retry)), "{what}");
    };
    let before = to_midnight(now());
    let third = agent.get("/v1/slice", Some(&bundle.token)).await;
    check_limited(&third, before, to_midnight(now()), "the third slice");
    // A token narrowed to a higher rate gets no more: the grant's is the ceiling.
    let wider = narrowed(&bundle, &["rate=100/day"]);
    let before = to_midnight(now());
    check_limited(&agent.get("/v1/slice", Some(&wider)).await, before, to_midnight(now()), "a token with a higher rate");

    // The count is on disk: a restart gives nothing back.
    let home = agent.stop();
    let agent = home.serve(&[]).await;
    let before = to_midnight(now());
    check_limited(&agent.get("/v1/slice", Some(&bundle.token)).await, before, to_midnight(now()), "after a restart");
    // The person sees the rate used up: two slices served today, the refusals not counted.
    let grants = agent.cli(&["grants", "--json"]).await.json();
    assert_eq!(grants[0]["rate"], json!({"rate": "2/day", "used": 2}), "{grants:#}");
    let table = agent.cli(&["grants"]).await;
    assert!(table.ok().contains(" 2 of 2/day "), "{}", table.stdout);

    // Each refusal is audited under the grant, with its status.
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let limited = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["event"]["type"] == "refused" && r["event"]["status"] == 429 && r["event"]["grant_id"] == bundle.grant_id.as_str())
        .count();
    assert_eq!(limited, 3, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_filters_fields_and_rates_naming_them_and_grants_nothing() {
    let agent = Agent::start().await;
    let base = ["grant", "acme.example", "--kinds", "search,cart,purchase", "--window", "30d", "--expires", "90d", "--purpose", "offers"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    for (extra, code, needle) in [
        (with(&["--granularity", "raw", "--fields", "price"]), 1, "fields: unknown field `price`: the fields are category, currency"),
        (with(&["--granularity", "raw", "--fields", "total"]), 1, "fields: `total` tells the items' prices and quantities"),
        (with(&["--granularity", "raw", "--fields", "query,at"]), 1, "fields: `at` is always shared"),
        (with(&["--granularity", "raw", "--fields", "query,query"]), 1, "fields: `query` is named more than once"),
        (with(&["--granularity", "category", "--fields", "query"]), 1, "fields: fields are chosen only at raw granularity, not at category"),
        (with(&["--granularity", "raw", "--merchants", "Shoes.Example"]), 1, "merchants: `Shoes.Example` is not a lowercase domain name"),
        (with(&["--granularity", "raw", "--categories", "Apparel >"]), 1, "categories: `Apparel >` is not a taxonomy path"),
        (with(&["--granularity", "raw", "--rate", "3/week"]), 2, "`3/week` is not a rate"),
        (with(&["--granularity", "raw", "--rate", "0/day"]), 2, "`0/day` is not a rate"),
    ] {
        agent.cli(&extra).await.fails(code, needle);
    }
    assert_eq!(agent.cli(&["grants", "--json"]).await.json(), json!([]), "nothing was granted");
    // A good one is granted, and the person reads what narrows it.
    let granted = agent.cli(&with(&["--granularity", "raw", "--merchants", "trailshoes.example", "--fields", "merchant,items.name", "--rate", "2/day"])).await;
    assert!(granted.ok().contains("\nfilters: only at trailshoes.example, only the fields items.name, merchant, at most 2/day slices\n"), "{}", granted.stdout);
}

/// A consent request of acme.example for raw searches and carts, asking for `fields` and
/// `rate`, signed by the marketer's key.
fn request(id: &str, fields: &[&str], rate: &str) -> String {
    let now = now();
    let document = json!({
        "version": 1, "id": id, "issued_at": fixture::ts(now - time::Duration::hours(1)), "expires_at": fixture::ts(now + time::Duration::days(30)),
        "marketer": {"name": "Acme Shoes", "domain": "acme.example", "contact": "privacy@acme.example", "privacy_policy": "https://acme.example/privacy"},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you running-shoe offers that fit what you look for."},
        "terms": {"kinds": ["search", "cart"], "granularity": "raw", "window": "30d", "duration": "90d", "fields": fields, "rate": rate},
        "offer": "10% off your next pair",
        "delivery": {"method": "pull"},
    });
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a key");
    optin_protocol::request::sign(&key, document.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_narrows_a_requests_fields_and_rate_and_never_widens_them() {
    let agent = started(&fixture::walkthrough(now())).await;
    let file = agent.home().scratch("request.jws");
    std::fs::write(&file, request("fields-1", &["query", "merchant", "items.name"], "2/day")).expect("write the request");
    agent.cli(&["requests", "add", file.to_str().expect("a UTF-8 path")]).await.ok();
    let shown = agent.cli(&["requests", "show", "fields-1"]).await;
    assert!(shown.ok().contains("query, merchant, items.name") && shown.ok().contains("2 slices a day"), "{}", shown.stdout);
    // (choices, the term a refusal names)
    for (choices, refused) in [
        (&["--fields", "query,order_id"][..], "`fields` would widen the request"),
        (&["--rate", "3/day"], "`rate` would widen the request"),
        // One an hour is 24 a day: not within two a day.
        (&["--rate", "1/hour"], "`rate` would widen the request"),
        (&["--fields", "price"], "`fields`: unknown field `price`"),
    ] {
        let mut args = vec!["approve", "fields-1"];
        args.extend_from_slice(choices);
        agent.cli(&args).await.fails(1, refused);
    }
    assert_eq!(agent.cli(&["grants", "--json"]).await.json(), json!([]), "nothing was granted");
    let approved = agent.cli(&["approve", "fields-1", "--fields", "query", "--rate", "1/day"]).await;
    let out = approved.ok();
    let bundle = GrantBundle::parse(&out[out.find('{').expect("the bundle")..]).expect("a bundle");
    assert_eq!((bundle.terms.fields.clone(), bundle.terms.rate.map(|r| r.to_string())), (Some(vec!["query".to_string()]), Some("1/day".to_string())));
    let claims = first_page(&agent, &bundle, &bundle.token).await;
    let kept: Vec<Vec<String>> =
        claims.items.iter().map(|i| serde_json::to_value(i).expect("serializes").as_object().expect("object").keys().cloned().collect()).collect();
    assert!(kept.iter().all(|k| k.iter().all(|f| ["id", "kind", "at", "query"].contains(&f.as_str()))), "{kept:?}");
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 429, "one slice a day: the first page was it");
}
