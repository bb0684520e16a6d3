//! Aggregate grants: noisy counts per kind and category, never a signal, within a privacy
//! budget that a repeated query does not spend, that ends in 403 `budget-exhausted` and that
//! no restart, SIGKILL included, refunds.

use std::collections::BTreeMap;

use serde_json::Value;

use optin_protocol::bundle::GrantBundle;
use optin_protocol::slice::SliceClaims;
use optin_tests::fixture::{self, ago, cart, search};
use optin_tests::{fetch, now, Agent, Home};

const SHOES: &str = "Apparel & Accessories > Shoes";
const GARDEN: &str = "Home & Garden";

/// 20 searches about shoes, 4 about the garden and 6 carts, all dated before today (an
/// aggregate slice, like a category one, ends at the start of the UTC day).
fn signals() -> Vec<Value> {
    let t = now();
    let mut all = Vec::new();
    for i in 0..20 {
        all.push(search(&format!("agg-shoe-{i}"), ago(t, 30 + i), &format!("trail runner size {i}"), "duckduckgo.com", SHOES));
    }
    for i in 0..4 {
        all.push(search(&format!("agg-garden-{i}"), ago(t, 26 + i), &format!("rose pruning shears {i}"), "bing.com", GARDEN));
    }
    for i in 0..6 {
        all.push(cart(&format!("agg-cart-{i}"), ago(t, 40 + i), "shoes.example", &format!("Peak boot {i}"), "120.00"));
    }
    all
}

/// The exact count of every bucket [`signals`] fills.
fn exact() -> BTreeMap<(String, Option<String>), u64> {
    BTreeMap::from([
        (("search".to_owned(), Some(SHOES.to_owned())), 20),
        (("search".to_owned(), Some(GARDEN.to_owned())), 4),
        (("cart".to_owned(), Some(SHOES.to_owned())), 6),
    ])
}

/// The slice's counts by bucket.
fn counts(claims: &SliceClaims) -> BTreeMap<(String, Option<String>), u64> {
    let counts = claims.counts.as_ref().expect("an aggregate slice states counts");
    counts.iter().map(|c| ((c.kind.as_str().to_owned(), c.category.clone()), c.count)).collect()
}

/// An aggregate grant of acme.example over 30 days, with no minimum count, and `extra`
/// options.
async fn aggregate_grant(agent: &Agent, kinds: &str, epsilon: &str, budget: &str, extra: &[&str]) -> GrantBundle {
    let mut args = vec!["--kinds", kinds, "--granularity", "aggregate", "--window", "30d", "--expires", "90d"];
    args.extend_from_slice(&["--epsilon", epsilon, "--budget", budget, "--min-count", "0"]);
    args.extend_from_slice(extra);
    agent.grant_with("acme.example", &args).await
}

/// One verified aggregate answer to `query`, and its JWS.
async fn answer(agent: &Agent, bundle: &GrantBundle, query: &str) -> (String, SliceClaims) {
    let mut pages = fetch(agent, bundle, query).await;
    assert_eq!(pages.len(), 1, "counts come in one answer, never paged");
    pages.remove(0)
}

/// `optin grants --json`'s budget of the grant: spent, left, answers left.
async fn budget(home: &Home, grant: &GrantBundle) -> (String, String, u64) {
    let grants = home.cli(&["grants", "--json"]).await.json();
    let g = grants.as_array().expect("array").iter().find(|g| g["grant_id"] == grant.grant_id.as_str()).expect("the grant is listed");
    let b = &g["budget"];
    (b["spent"].as_str().expect("spent").to_owned(), b["left"].as_str().expect("left").to_owned(), b["answers_left"].as_u64().expect("answers_left"))
}

/// Takes the JWS's payload JSON as text, to look for what must not be there.
fn payload_text(jws: &str) -> String {
    use base64::Engine as _;
    let payload = jws.split('.').nth(1).expect("a compact JWS");
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_grant_serves_noisy_counts_spends_once_per_query_and_then_refuses() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    // epsilon 2 twice is 4: a third new answer would pass the budget of 5.
    let bundle = aggregate_grant(&agent, "search,cart", "2", "5", &[]).await;
    assert_eq!(budget(agent.home(), &bundle).await, ("0".into(), "5".into(), 2), "nothing spent before the first answer");
    // The person's preview shows the exact counts the noise will be added to, and spends nothing.
    let preview = agent.cli(&["preview", bundle.grant_id.as_str()]).await;
    for line in
        ["would receive counts of search,cart per category", "search       20  Apparel & Accessories > Shoes", "cart          6  Apparel & Accessories > Shoes"]
    {
        assert!(preview.ok().contains(line), "preview shows {line:?}: {}", preview.stdout);
    }
    assert_eq!(budget(agent.home(), &bundle).await, ("0".into(), "5".into(), 2), "a preview spends nothing");

    let (jws, first) = answer(&agent, &bundle, "").await;
    assert!(first.items.is_empty() && first.next_cursor.is_none(), "no items and no cursor: {first:?}");
    let noise = serde_json::to_value(first.noise.as_ref().expect("the noise is stated")).expect("JSON");
    assert_eq!(noise, serde_json::json!({"mechanism": "two-sided-geometric", "epsilon": "2", "min_count": 0}));
    let got = counts(&first);
    assert_eq!(got.keys().collect::<Vec<_>>(), exact().keys().collect::<Vec<_>>(), "with a minimum of 0, every bucket that holds a signal is there");
    for (bucket, count) in &exact() {
        // At epsilon 2 the noise passes 10 with a chance of about 10^-9.
        assert!(got[bucket].abs_diff(*count) <= 10, "{bucket:?}: {} for {count}", got[bucket]);
    }
    let text = payload_text(&jws);
    for leak in ["agg-shoe-", "agg-cart-", "trail runner", "rose pruning", "Peak boot", "shoes.example", "duckduckgo", "\"i_", "\"at\"", "\"day\""] {
        assert!(!text.contains(leak), "the slice shows `{leak}`: {text}");
    }
    for bound in [first.scope.since, first.scope.until] {
        assert_eq!((bound.hour(), bound.minute(), bound.second(), bound.nanosecond()), (0, 0, 0, 0), "the scope's bounds are whole days");
    }
    assert_eq!(budget(agent.home(), &bundle).await, ("2".into(), "3".into(), 1));

    // The same query again: the same noisy counts, nothing spent, even across a SIGKILL.
    let (_, again) = answer(&agent, &bundle, "").await;
    assert_eq!((again.counts.as_ref(), again.noise.as_ref()), (first.counts.as_ref(), first.noise.as_ref()), "the kept answer, not fresh noise");
    assert_ne!(again.jti, first.jti, "a new slice of the same answer");
    let agent = agent.kill_hard().serve(&[]).await;
    assert_eq!(budget(agent.home(), &bundle).await, ("2".into(), "3".into(), 1), "the spend survives SIGKILL");
    let (_, after_kill) = answer(&agent, &bundle, "").await;
    assert_eq!(after_kill.counts, first.counts, "and so does the answer");

    // Another query (kinds narrowed) is a new answer and spends; the next new one is refused.
    let (_, searches) = answer(&agent, &bundle, "kinds=search").await;
    assert!(counts(&searches).keys().all(|(kind, _)| kind == "search"), "{searches:?}");
    assert_eq!(budget(agent.home(), &bundle).await, ("4".into(), "1".into(), 0));
    let refused = agent.get("/v1/slice?kinds=cart", Some(&bundle.token)).await;
    assert_eq!(refused.status.as_u16(), 403, "{}", refused.text());
    let problem = refused.problem().expect("problem+json");
    assert_eq!(problem.type_, "urn:optin:problem:budget-exhausted", "{problem:?}");
    assert_eq!(budget(agent.home(), &bundle).await, ("4".into(), "1".into(), 0), "a refused answer spends nothing");

    // Answers already given stay free, and the same, after the budget is spent.
    let (_, kept) = answer(&agent, &bundle, "").await;
    assert_eq!(kept.counts, first.counts);
    let human = agent.cli(&["grants"]).await;
    let row = human.ok().lines().find(|l| l.contains(bundle.grant_id.as_str())).unwrap_or_else(|| panic!("no row: {}", human.stdout));
    assert!(row.contains("1 of 5"), "the budget left: {row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_allows_items_answers_aggregate_queries_with_exact_counts_for_free() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    let bundle = agent.grant("acme.example", "search,cart", "category", "30d").await;
    let (_, claims) = answer(&agent, &bundle, "granularity=aggregate").await;
    assert_eq!(counts(&claims), exact(), "exact counts: the grant already shows every item");
    assert_eq!(claims.noise, None, "and says so by stating no noise");
    let grants = agent.cli(&["grants", "--json"]).await.json();
    assert_eq!(grants[0].get("budget"), None, "a grant without noise has no budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_noise_that_cannot_hold_and_grants_nothing() {
    let home = Home::new();
    let base = ["grant", "acme.example", "--kinds", "search", "--window", "30d", "--expires", "90d", "--purpose", "p"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    for (extra, code, needle) in [
        (with(&["--granularity", "aggregate", "--epsilon", "2", "--budget", "1"]), 1, "epsilon (--epsilon) 2 is more than the budget (--budget) 1"),
        (with(&["--granularity", "aggregate", "--epsilon", "4"]), 1, "more than the budget (--budget) 3"),
        (with(&["--granularity", "aggregate", "--epsilon", "0", "--budget", "1"]), 2, "--epsilon"),
        (with(&["--granularity", "aggregate", "--epsilon", "0.5e1", "--budget", "1"]), 2, "--epsilon"),
        (with(&["--granularity", "aggregate", "--epsilon", "0.1", "--budget=-1"]), 2, "--budget"),
        (with(&["--granularity", "aggregate", "--min-count", "2000000"]), 1, "--min-count"),
        (with(&["--granularity", "category", "--epsilon", "0.5"]), 1, "apply only to granularity aggregate"),
        (with(&["--granularity", "aggregate", "--push", "https://inbox.acme.example/optin"]), 1, "an aggregate grant is not pushed"),
    ] {
        home.cli(&extra).await.fails(code, needle);
    }
    assert_eq!(home.cli(&["grants", "--json"]).await.json(), serde_json::json!([]), "nothing was granted");
    // The defaults, as the help states them.
    let granted = home.cli(&with(&["--granularity", "aggregate", "--json"])).await;
    let bundle = GrantBundle::parse(granted.ok()).expect("a bundle");
    let noise = serde_json::to_value(bundle.terms.noise.expect("an aggregate grant always has noise")).expect("JSON");
    assert_eq!(noise, serde_json::json!({"epsilon": "0.5", "min_count": 5, "budget": "3"}));
    let help = home.cli(&["grant", "--help"]).await;
    for default in ["[default: 0.5]", "[default: 3]", "[default: 5]"] {
        assert!(help.ok().contains(default), "help shows {default}: {}", help.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_excluded_after_an_answer_makes_the_same_query_a_new_one_without_it() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    let bundle = aggregate_grant(&agent, "search", "1", "5", &[]).await;
    let (_, before) = answer(&agent, &bundle, "").await;
    let garden = ("search".to_owned(), Some(GARDEN.to_owned()));
    assert!(counts(&before).contains_key(&garden), "{before:?}");
    agent.cli(&["exclude", GARDEN]).await.ok();
    let (_, after) = answer(&agent, &bundle, "").await;
    assert!(!counts(&after).contains_key(&garden), "the kept answer is not served past the exclusion: {after:?}");
    assert!(counts(&after).contains_key(&("search".to_owned(), Some(SHOES.to_owned()))), "{after:?}");
    assert_eq!(budget(agent.home(), &bundle).await, ("2".into(), "3".into(), 3), "a new question, so a new spend");
}

/// A consent request of acme.example for counts, signed, as `edit` changes it.
fn request(id: &str, edit: impl FnOnce(&mut Value)) -> String {
    let now = now();
    let mut v = serde_json::json!({
        "version": 1, "id": id, "issued_at": optin_tests::ts(now - time::Duration::hours(1)), "expires_at": optin_tests::ts(now + time::Duration::days(30)),
        "marketer": {"name": "Acme Shoes", "domain": "acme.example", "contact": "privacy@acme.example", "privacy_policy": "https://acme.example/privacy"},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Know how much interest there is in shoes."},
        "terms": {"kinds": ["search", "cart"], "granularity": "aggregate", "window": "30d", "duration": "90d"},
        "offer": "10% off your next pair",
        "delivery": {"method": "pull"},
    });
    edit(&mut v);
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a key");
    optin_protocol::request::sign(&key, v.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_counts_is_approved_with_the_noise_the_person_chooses_and_never_pushed() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    let add = |id: &str, jws: String| {
        let file = agent.home().scratch(&format!("{id}.jws"));
        std::fs::write(&file, jws).expect("write the request");
        file
    };
    let counts_file = add("counts-1", request("counts-1", |_| {}));
    agent.cli(&["requests", "add", counts_file.to_str().expect("UTF-8")]).await.ok();
    let pushed_file = add(
        "pushed-1",
        request("pushed-1", |v| v["delivery"] = serde_json::json!({"method": "push", "inbox": "https://inbox.acme.example/optin", "every": "1d"})),
    );
    agent.cli(&["requests", "add", pushed_file.to_str().expect("UTF-8")]).await.ok();

    agent.cli(&["approve", "counts-1", "--epsilon", "3", "--budget", "2"]).await.fails(1, "epsilon (--epsilon) 3 is more than the budget (--budget) 2");
    agent.cli(&["approve", "pushed-1"]).await.fails(1, "an aggregate grant is not pushed");
    assert_eq!(agent.cli(&["grants", "--json"]).await.json(), serde_json::json!([]), "nothing was approved");

    let approved = agent.cli(&["approve", "counts-1", "--epsilon", "1", "--budget", "2"]).await;
    let out = approved.ok();
    let bundle = GrantBundle::parse(&out[out.find('{').expect("the bundle")..]).expect("a bundle");
    let noise = serde_json::to_value(bundle.terms.noise.expect("noise")).expect("JSON");
    assert_eq!(noise, serde_json::json!({"epsilon": "1", "min_count": 5, "budget": "2"}), "the person's epsilon and budget, the default minimum");
    let (_, claims) = answer(&agent, &bundle, "").await;
    assert_eq!(claims.noise.as_ref().map(|n| n.epsilon.to_string()), Some("1".to_owned()));
    assert_eq!(budget(agent.home(), &bundle).await, ("1".into(), "1".into(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_counts_says_they_are_counts_and_what_each_answer_costs() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    let made = agent
        .cli(&[
            "grant",
            "acme.example",
            "--kinds",
            "search",
            "--granularity",
            "aggregate",
            "--window",
            "30d",
            "--epsilon",
            "0.5",
            "--budget",
            "2",
            "--expires",
            "30d",
            "--purpose",
            "which categories sell",
        ])
        .await;
    // The person reads counts of what is stored, not "24 searches" as if they were sent.
    let out = made.ok();
    let sentence = "now it would share counts, never the signals, of 24 searches in Apparel & Accessories > Shoes (20), Home & Garden (4) over 30d (";
    assert!(out.contains(sentence), "{out}");
    assert!(out.contains("; each count with noise of epsilon 0.5, each answer spending it from a budget of 2\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_query_the_budget_cannot_pay_for_takes_none_of_the_rate() {
    // Every answer and refusal below must fall in one UTC day: not in its last minute.
    let t = now();
    let midnight = (t.date() + time::Duration::days(1)).midnight().assume_utc();
    if (midnight - t).whole_seconds() < 60 {
        tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    }
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&signals())).await;
    let bundle = aggregate_grant(&agent, "search,cart", "1", "1", &["--rate", "2/day"]).await;
    let (_, first) = answer(&agent, &bundle, "").await;
    // A new question past the budget is refused for what it asks: it is no slice, and
    // SPEC.md ("Rate") counts nothing against the rate for it.
    let refused = agent.get("/v1/slice?kinds=search", Some(&bundle.token)).await;
    assert_eq!(refused.problem().map(|p| p.type_), Some("urn:optin:problem:budget-exhausted".to_owned()), "{}", refused.text());
    let (_, again) = answer(&agent, &bundle, "").await;
    assert_eq!(again.counts, first.counts, "the kept answer, the grant's second slice today");
    let third = agent.get("/v1/slice", Some(&bundle.token)).await;
    assert_eq!(third.status.as_u16(), 429, "the rate still holds: {}", third.text());
}
