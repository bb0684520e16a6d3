//! Partners: a marketer narrows its token offline with an `aud` caveat for a partner, and the
//! person cuts one partner off (`optin revoke --partner`) without ending the grant. A cut-off
//! partner's token is refused however it is narrowed further; the marketer and every other
//! partner are still served, across restarts and whether or not the agent ran when the
//! partner was cut off.

use std::path::PathBuf;
use std::process::Command;

use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::{Caveat, Granularity};
use optin_protocol::slice::{SliceClaims, SliceItem};
use optin_protocol::token::Token;
use serde_json::Value;
use time::Duration;

use optin_tests::{assert_unauthorized, fixture, now, Agent};

const PARTNER: &str = "partner.example";
const OTHER: &str = "other.example";

/// The bundle's token with `caveats` appended, as any holder can do offline.
fn narrowed(bundle: &GrantBundle, caveats: &[&str]) -> String {
    let mut token = Token::parse(&bundle.token).expect("the bundle's token parses");
    for caveat in caveats {
        token = token.attenuate(&caveat.parse::<Caveat>().expect("a caveat"));
    }
    token.encode()
}

/// Asserts `token` is served a slice addressed to `audience` that verifies with the bundle.
async fn assert_served(agent: &Agent, bundle: &GrantBundle, token: &str, audience: &str) {
    let response = agent.get("/v1/slice", Some(token)).await;
    assert_eq!(response.status.as_u16(), 200, "{audience}: {}", response.text());
    let claims = bundle.verify_slice_for(&response.text(), audience).unwrap_or_else(|e| panic!("{audience}: the slice does not verify: {e}"));
    assert_eq!(claims.aud, audience);
}

/// The audit log as `optin audit --json` prints it.
async fn audit(agent: &Agent) -> Vec<Value> {
    agent.cli(&["audit", "--json"]).await.json()["records"].as_array().expect("records").iter().map(|r| r["event"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cut_off_is_refused_however_its_token_is_narrowed_and_the_rest_are_served() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let partner = narrowed(&bundle, &["kinds=search", &format!("aud={PARTNER}")]);
    let other = narrowed(&bundle, &[&format!("aud={OTHER}")]);
    for (token, audience) in [(&bundle.token, "acme.example"), (&partner, PARTNER), (&other, OTHER)] {
        assert_served(&agent, &bundle, token, audience).await;
    }

    let out = agent.cli(&["revoke", "--partner", PARTNER, bundle.grant_id.as_str()]).await;
    assert!(out.ok().contains(&format!("{PARTNER} is cut off from {}", bundle.grant_id)), "{}", out.stdout);

    // The partner's own token, and the same token narrowed further by whoever holds it: the
    // audience stays the partner's, since a second, different `aud` is refused.
    let further = narrowed(&bundle, &["kinds=search", &format!("aud={PARTNER}"), "window=1d", "granularity=category"]);
    let renamed = narrowed(&bundle, &["kinds=search", &format!("aud={PARTNER}"), &format!("aud={OTHER}")]);
    for (token, what) in
        [(&partner, "the partner's token"), (&further, "the partner's token narrowed further"), (&renamed, "the partner's token renamed to another partner")]
    {
        assert_unauthorized(&agent.get("/v1/slice", Some(token)).await, what);
        assert_unauthorized(&agent.get("/v1/grant", Some(token)).await, &format!("{what} (GET /v1/grant)"));
    }
    assert_served(&agent, &bundle, &bundle.token, "acme.example").await;
    assert_served(&agent, &bundle, &other, OTHER).await;

    // The log says who was cut off and why each of the partner's requests was refused.
    let events = audit(&agent).await;
    let cut: Vec<&Value> = events.iter().filter(|e| e["type"] == "partner-revoked").collect();
    assert_eq!(cut.len(), 1, "{events:#?}");
    assert_eq!((cut[0]["grant_id"].as_str(), cut[0]["audience"].as_str()), (Some(bundle.grant_id.as_str()), Some(PARTNER)));
    let refused: Vec<&Value> = events.iter().filter(|e| e["type"] == "refused" && e["reason"] == "partner revoked").collect();
    assert_eq!(refused.len(), 4, "the two refused tokens of the partner, on two routes: {events:#?}");
    assert!(refused.iter().all(|e| e["audience"] == PARTNER && e["status"] == 401), "{refused:#?}");

    // Cutting the same partner off again changes nothing and says so.
    let again = agent.cli(&["revoke", "--partner", PARTNER, bundle.grant_id.as_str()]).await;
    assert!(again.ok().contains("was already cut off"), "{}", again.stdout);
    assert_eq!(audit(&agent).await.iter().filter(|e| e["type"] == "partner-revoked").count(), 1);

    // Kept with the grant: a restart still refuses it, and a partner cut off while no agent
    // runs is refused once one starts.
    let home = agent.stop();
    home.cli(&["revoke", "--partner", OTHER, bundle.grant_id.as_str()]).await.ok();
    let agent = home.serve(&[]).await;
    assert_unauthorized(&agent.get("/v1/slice", Some(&partner)).await, "the partner after a restart");
    assert_unauthorized(&agent.get("/v1/slice", Some(&other)).await, "a partner cut off while no agent ran");
    let bundle = GrantBundle { agent_url: Some(agent.url.clone()), cert_sha256: Some(agent.fingerprint.clone()), ..bundle };
    assert_served(&agent, &bundle, &bundle.token, "acme.example").await;
    let third = narrowed(&bundle, &["aud=third.example"]);
    assert_served(&agent, &bundle, &third, "third.example").await;

    // `optin grants` lists who the grant reached, and whom the person cut off.
    let grants = agent.cli(&["grants", "--json"]).await.json();
    let partners = grants[0]["partners_revoked"].as_array().expect("partners_revoked");
    assert_eq!(partners, &[Value::from(OTHER), Value::from(PARTNER)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_partner_revocations_and_changes_nothing() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let ended = agent.grant("shop.example", "search", "raw", "30d").await;
    agent.cli(&["revoke", ended.grant_id.as_str()]).await.ok();
    let partner = narrowed(&bundle, &[&format!("aud={PARTNER}")]);
    let grant = bundle.grant_id.as_str();
    let before = agent.cli(&["grants", "--json"]).await.json();

    // Names that are no `aud` caveat's: the command line is wrong (exit 2).
    for name in ["Partner.Example", "partner.example\u{1b}[2J", "partner.example\u{202e}", "", "partner example", "localhost"] {
        agent.cli(&["revoke", "--partner", name, grant]).await.fails(2, "a lowercase host name like partner.example");
    }
    // Names that are fine, of a grant that cannot take them (exit 1).
    agent.cli(&["revoke", "--partner", PARTNER, "g_000000000000000000000000"]).await.fails(1, "no grant g_000000000000000000000000");
    agent.cli(&["revoke", "--partner", "acme.example", grant]).await.fails(1, "is the grant's marketer, not a partner");
    agent.cli(&["revoke", "--partner", PARTNER, ended.grant_id.as_str()]).await.fails(1, "is revoked: it serves no partner already");

    let after = agent.cli(&["grants", "--json"]).await.json();
    assert_eq!(after, before, "nothing changed");
    assert!(after.as_array().expect("a list").iter().all(|g| g.get("partners_revoked").is_none()), "{after:#}");
    assert!(audit(&agent).await.iter().all(|e| e["type"] != "partner-revoked"));
    assert_served(&agent, &bundle, &partner, PARTNER).await;
}

/// The `partner` example program, built beside `optin` (`cargo build -p optin-examples
/// --examples`, which the test command's workspace build does).
fn partner_example() -> PathBuf {
    let bin = optin_tests::optin_bin().parent().expect("the profile directory").join("examples").join("partner");
    assert!(bin.is_file(), "{} not found: build it with cargo build -p optin-examples --examples", bin.display());
    bin
}

/// Runs the example with `args`: exit code, stdout, stderr.
fn run_partner(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(partner_example()).args(args).output().expect("run the partner example");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_fetches_and_verifies_a_narrower_slice_the_marketer_derived_offline() {
    let agent = Agent::start().await;
    let shoes = "Apparel & Accessories > Shoes";
    let days = |n| now() - Duration::days(n);
    let signals = [
        fixture::search("s-2", days(2), "trail running shoes", "duckduckgo.com", shoes),
        fixture::search("s-3", days(3), "ridgeline gtx review", "google.com", shoes),
        fixture::search("s-5", days(5), "wide fit sizes", "bing.com", shoes),
        fixture::search("s-tv", days(3), "oled television", "bing.com", "Electronics"),
        fixture::search("s-10", days(10), "winter boots", "bing.com", shoes),
        fixture::cart("c-2", days(2), "trailshoes.example", "Ridgeline GTX 44W", "139.00"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let marketer_file = agent.home().scratch("acme-bundle.json");
    std::fs::write(&marketer_file, serde_json::to_string(&bundle).expect("JSON")).expect("write the bundle");

    // The marketer, offline: searches only, a week, categories, in Apparel & Accessories.
    let (code, derived, stderr) = run_partner(&[
        "derive",
        marketer_file.to_str().expect("a UTF-8 path"),
        "--aud",
        PARTNER,
        "--kinds",
        "search",
        "--window",
        "7d",
        "--granularity",
        "category",
        "--category",
        "Apparel & Accessories",
    ]);
    assert_eq!(code, Some(0), "derive: {stderr}");
    let partner = GrantBundle::parse(&derived).expect("the partner's bundle parses");
    assert_eq!((partner.grant_id.clone(), partner.marketer.as_str(), partner.terms.audience.as_str()), (bundle.grant_id.clone(), "acme.example", PARTNER));
    assert_eq!(
        (partner.terms.kinds.to_string(), partner.terms.granularity, partner.terms.window.to_string()),
        ("search".to_owned(), Granularity::Category, "1w".to_owned())
    );
    assert_eq!(partner.terms.categories, Some(vec!["Apparel & Accessories".to_owned()]));
    assert!(partner.token.starts_with("optin_") && partner.token != bundle.token);
    let partner_file = agent.home().scratch("partner-bundle.json");
    std::fs::write(&partner_file, &derived).expect("write the partner's bundle");

    // The partner: every page fetched with the pinned certificate and verified as its own.
    let (code, stdout, stderr) = run_partner(&["fetch", partner_file.to_str().expect("a UTF-8 path"), "--json"]);
    assert_eq!(code, Some(0), "fetch: {stderr}");
    let pages: Vec<SliceClaims> = serde_json::from_str(&stdout).expect("the verified pages as JSON");
    let items: Vec<&SliceItem> = pages.iter().flat_map(|p| &p.items).collect();
    assert_eq!(items.len(), 3, "the three searches about shoes of the week, not the television, the old one or the cart: {items:#?}");
    for item in &items {
        let SliceItem::Category(c) = item else { panic!("a category item, got {item:?}") };
        assert_eq!((c.kind.as_str(), c.category.as_deref()), ("search", Some(shoes)));
    }
    assert!(pages.iter().all(|p| p.aud == PARTNER && p.scope.categories == partner.terms.categories), "{pages:#?}");

    // What the partner received is not the marketer's to pass as its own: addressed to the
    // partner, it fails the marketer's own check.
    let jws = agent.get("/v1/slice", Some(&partner.token)).await.text();
    assert!(bundle.verify_slice(&jws).is_err(), "a partner's slice verifies as the marketer's");

    // The person sees who received what through whom.
    let grants = agent.cli(&["grants", "--json"]).await.json();
    let usage = &grants[0]["usage"];
    assert_eq!((usage["slices"].as_u64(), usage["items"].as_u64()), (Some(2), Some(6)), "{usage:#}");
    assert_eq!(usage["partners"][0]["audience"], PARTNER);
    assert_eq!((usage["partners"][0]["slices"].as_u64(), usage["partners"][0]["items"].as_u64()), (Some(2), Some(6)));
    let listed = agent.cli(&["grants"]).await;
    assert!(listed.ok().contains(&format!("{} through acme.example to {PARTNER}: 2 slices of 6 items", bundle.grant_id)), "{}", listed.stdout);
    let served: Vec<Value> = audit(&agent).await.into_iter().filter(|e| e["type"] == "served").collect();
    assert!(served.len() == 2 && served.iter().all(|e| e["audience"] == PARTNER && e["marketer"] == "acme.example"), "{served:#?}");
    let summary = agent.cli(&["audit", "--summary"]).await;
    assert!(summary.ok().contains(&format!("acme.example passed on to {PARTNER}: 2 slices of 6 items")), "{}", summary.stdout);

    // Cut off, the partner's next fetch is refused; the marketer is still served.
    agent.cli(&["revoke", "--partner", PARTNER, bundle.grant_id.as_str()]).await.ok();
    let (code, _, stderr) = run_partner(&["fetch", partner_file.to_str().expect("a UTF-8 path")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("refused with 401"), "{stderr}");
    assert_served(&agent, &bundle, &bundle.token, "acme.example").await;
}
