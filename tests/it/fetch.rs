//! `optin requests fetch DOMAIN` through the real binary, against a marketer's site served
//! over real TLS on the loopback under the name `shop.test`, reached with `--resolve` and
//! trusted with `--ca-file`: a fetched request waits for the person, checked against the
//! domain; a site that is not trusted, a request signed for another domain, a missing,
//! redirected, oversized or unreadable document are each refused naming the domain, and
//! nothing is stored; hostile text in what a site sends never reaches the terminal live;
//! `--push-proxy` carries the fetch too (through microsocks, which the test command installs).

use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};
use time::Duration;

use optin_protocol::request::limits::PUBLISHED_BYTES;
use optin_tests::proxy::{free_port, Microsocks};
use optin_tests::site::{Page, Site, TestCa};
use optin_tests::{now, ts, Agent, Home, Out};

const SHOP: &str = "shop.test";
const WELL_KNOWN: &str = "/.well-known/optin-request.json";

/// A request of `domain`, signed with that marketer's key, valid for a month from now.
fn signed(domain: &str, id: &str, edit: impl FnOnce(&mut Value)) -> String {
    let now = now();
    let mut v = json!({
        "version": 1, "id": id, "issued_at": ts(now - Duration::hours(1)), "expires_at": ts(now + Duration::days(30)),
        "marketer": {"name": "The Shop", "domain": domain, "contact": format!("privacy@{domain}"), "privacy_policy": format!("https://{domain}/privacy")},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you offers that fit what you look for."},
        "terms": {"kinds": ["search"], "granularity": "category", "window": "30d", "duration": "90d"},
        "offer": "5% off",
        "delivery": {"method": "pull"},
    });
    edit(&mut v);
    let key = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).expect("a key");
    optin_protocol::request::sign(&key, v.to_string().as_bytes())
}

/// The well-known document publishing `requests`.
fn published(requests: &[String]) -> Page {
    Page::ok(json!({ "requests": requests }).to_string()).header("content-type", "application/json")
}

/// `optin requests fetch shop.test:PORT --resolve …`, trusting `ca` if given.
async fn fetch(home: &Home, site: &Site, ca: Option<&TestCa>) -> Out {
    let (authority, resolve) = (site.authority(), site.resolve());
    let mut args = vec!["requests", "fetch", authority.as_str(), "--resolve", resolve.as_str()];
    let pem = ca.map(|ca| ca.pem().to_str().expect("a UTF-8 path").to_owned());
    if let Some(pem) = &pem {
        args.extend(["--ca-file", pem.as_str()]);
    }
    home.cli(&args).await
}

/// What a terminal would act on: nothing of it may reach one.
fn live(text: &str) -> bool {
    text.chars().any(|c| c == '\u{1b}' || c == '\u{7}' || c == '\u{9b}' || c == '\u{202e}')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_request_waits_checked_against_its_domain() {
    let ca = TestCa::new();
    let site = Site::start(&ca, SHOP).await;
    site.put(WELL_KNOWN, published(&[signed(SHOP, "offers-1", |_| {}), signed(SHOP, "offers-2", |v| v["offer"] = "10% off".into())]));
    let agent = Agent::start().await;

    let out = fetch(agent.home(), &site, Some(&ca)).await;
    let stdout = out.ok();
    assert!(stdout.contains(&format!("fetched https://{}{WELL_KNOWN}: 2 requests", site.authority())), "{stdout}");
    for id in ["offers-1", "offers-2"] {
        assert!(stdout.contains(&format!("added request {id} from The Shop (shop.test)")), "{stdout}");
    }
    assert!(stdout.contains("checked: fetched from https://shop.test"), "{stdout}");
    let hits = site.hits();
    assert_eq!(hits.iter().map(|h| (h.method.as_str(), h.path.as_str())).collect::<Vec<_>>(), [("GET", WELL_KNOWN)]);
    let agent_header = hits[0].headers.iter().find(|(k, _)| k == "user-agent").map(|(_, v)| v.as_str());
    assert!(agent_header.is_some_and(|v| v.starts_with("optin/")), "{hits:?}");

    // Pending, shown as checked, and nothing approved.
    let shown = agent.cli(&["requests", "show", "shop.test/offers-1"]).await;
    assert!(shown.ok().contains("pending") && shown.ok().contains("checked: fetched from https://shop.test"), "{}", shown.stdout);
    let listed = agent.cli(&["requests", "--json"]).await.json();
    let states: Vec<(&str, &str)> =
        listed.as_array().expect("a list").iter().map(|r| (r["state"].as_str().unwrap_or(""), r["fetched_from"].as_str().unwrap_or(""))).collect();
    assert_eq!(states, [("pending", SHOP), ("pending", SHOP)], "{listed}");
    assert_eq!(agent.cli(&["grants", "--json"]).await.json(), json!([]), "nothing is approved by fetching");

    // Fetching again changes nothing.
    let again = fetch(agent.home(), &site, Some(&ca)).await;
    assert!(again.ok().contains("request offers-1 from The Shop (shop.test) was already added; it is pending"), "{}", again.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_is_not_trusted_is_refused_and_nothing_is_stored() {
    let ca = TestCa::new();
    let site = Site::start(&ca, SHOP).await;
    site.put(WELL_KNOWN, published(&[signed(SHOP, "offers-1", |_| {})]));
    let home = Home::new();

    // Neither without the site's authority, nor with another one.
    let other = TestCa::new();
    for trusted in [None, Some(&other)] {
        let out = fetch(&home, &site, trusted).await;
        let stderr = out.fails(1, "cannot fetch the consent requests of shop.test: its certificate is not trusted");
        assert!(stderr.contains("--ca-file") && stderr.contains("nothing was stored"), "{stderr}");
    }
    // A certificate for another name, from the trusted authority, is no better.
    let elsewhere = Site::start_with(ca.server(&["other.test"]), SHOP).await;
    elsewhere.put(WELL_KNOWN, published(&[signed(SHOP, "offers-1", |_| {})]));
    fetch(&home, &elsewhere, Some(&ca)).await.fails(1, "its certificate is not trusted for shop.test");

    assert!(site.connections() >= 2 && site.hits().is_empty() && elsewhere.hits().is_empty(), "nothing was asked over an untrusted connection");
    assert!(!home.path().exists(), "a fetch that failed makes no home");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_domain_is_refused_naming_both() {
    let ca = TestCa::new();
    let site = Site::start(&ca, SHOP).await;
    let home = Home::new();

    site.put(WELL_KNOWN, published(&[signed("other.test", "offers-1", |_| {})]));
    let out = fetch(&home, &site, Some(&ca)).await;
    let stderr = out.fails(1, "request 1 of 1 from shop.test: the request is refused, nothing was stored");
    assert!(stderr.contains("names marketer `other.test` but was fetched from `shop.test`"), "{stderr}");
    assert_eq!(home.cli(&["requests", "--json"]).await.json(), json!([]), "nothing was stored");

    // One bad request does not hide a good one beside it, nor does it pass with it.
    site.put(WELL_KNOWN, published(&[signed("other.test", "offers-1", |_| {}), signed(SHOP, "offers-2", |_| {})]));
    let out = fetch(&home, &site, Some(&ca)).await;
    out.fails(1, "request 1 of 2 from shop.test: the request is refused");
    assert!(out.stdout.contains("added request offers-2 from The Shop (shop.test)"), "{}", out.stdout);
    let listed = home.cli(&["requests", "--json"]).await.json();
    let names: Vec<String> =
        listed.as_array().expect("a list").iter().map(|r| format!("{}/{}", r["request"]["marketer"]["domain"], r["request"]["id"])).collect();
    assert_eq!(names, [r#""shop.test"/"offers-2""#], "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_redirected_oversized_or_unreadable_documents_are_refused() {
    let ca = TestCa::new();
    let site = Site::start(&ca, SHOP).await;
    let redirect = Page::status(301).header("location", "https://shop.test/elsewhere.json");
    site.put("/elsewhere.json", published(&[signed(SHOP, "offers-1", |_| {})]));
    let oversized = {
        // A valid document, padded past the bound with spaces JSON allows.
        let mut body = json!({ "requests": [signed(SHOP, "offers-1", |_| {})] }).to_string().into_bytes();
        body.resize(PUBLISHED_BYTES + 1, b' ');
        Page::ok(body)
    };
    let cases: Vec<(&str, Option<Page>, &str)> = vec![
        ("no document", None, "it publishes no consent requests"),
        ("gone", Some(Page::status(410)), "it publishes no consent requests"),
        ("a redirect", Some(redirect), "answered 301, a redirect, which is not followed"),
        ("too large", Some(oversized), "is larger than 1048576 bytes, the most a document of requests may be"),
        ("not JSON", Some(Page::ok("<html>hello</html>")), "is not a document of consent requests (field `.`: not JSON"),
        ("a bare request", Some(Page::ok(signed(SHOP, "offers-1", |_| {}))), "is not a document of consent requests"),
        ("no requests", Some(Page::ok(r#"{"requests":[]}"#)), "must hold 1 to 8 signed requests"),
        ("not UTF-8", Some(Page::ok(vec![0xff, 0xfe])), "is not UTF-8 text"),
        ("a server error", Some(Page::status(500)), "answered 500"),
    ];
    for (case, page, because) in cases {
        match page {
            Some(page) => site.put(WELL_KNOWN, page),
            None => site.put(WELL_KNOWN, Page::status(404)),
        }
        let home = Home::new();
        let out = fetch(&home, &site, Some(&ca)).await;
        let stderr = out.fails(1, because);
        assert!(stderr.contains("shop.test") && stderr.contains("nothing was stored"), "{case}: {stderr}");
        assert!(!home.path().exists(), "{case}: a fetch that failed makes no home");
    }
    assert!(!site.hits().iter().any(|h| h.path == "/elsewhere.json"), "the redirect was not followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_from_a_site_is_shown_inert() {
    let ca = TestCa::new();
    let site = Site::start(&ca, SHOP).await;
    let home = Home::new();
    let escape = "\u{1b}]0;pwned\u{7}\u{1b}[2J";

    // In the document around the requests: an unknown member named with an escape.
    let document = json!({ "requests": [signed(SHOP, "offers-1", |_| {})], escape: 1 }).to_string();
    site.put(WELL_KNOWN, Page::ok(document));
    let out = fetch(&home, &site, Some(&ca)).await;
    let stderr = out.fails(1, "is not a document of consent requests");
    assert!(stderr.contains("\\u{1b}]0;pwned\\u{7}"), "the escape is shown as text: {stderr:?}");
    assert!(!live(&out.stderr) && !live(&out.stdout), "live control text reached the terminal: {out:?}");

    // In a request's purpose, and in the name of a field it should not have.
    let requests = [
        signed(SHOP, "offers-1", |v| v["purpose"]["text"] = format!("Offers{escape}").into()),
        signed(SHOP, "offers-2", |v| v["terms"][format!("\u{202e}{escape}")] = 1.into()),
    ];
    site.put(WELL_KNOWN, published(&requests));
    let out = fetch(&home, &site, Some(&ca)).await;
    let stderr = out.fails(1, "2 of the 2 requests from shop.test were refused");
    assert!(stderr.contains("purpose.text") && stderr.contains("terms.\\u{202e}\\u{1b}]0;pwned"), "{stderr:?}");
    assert!(!live(&out.stderr) && !live(&out.stdout), "live control text reached the terminal: {out:?}");
    assert_eq!(home.cli(&["requests", "--json"]).await.json(), json!([]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_carries_the_fetch_too() {
    let ca = TestCa::new();
    let site = Site::start(&ca, SHOP).await;
    site.put(WELL_KNOWN, published(&[signed(SHOP, "offers-1", |_| {})]));
    let (authority, resolve, pem) = (site.authority(), site.resolve(), ca.pem().to_str().expect("a UTF-8 path").to_owned());
    let through = |proxy: String| {
        let args: Vec<String> = ["requests", "fetch", &authority, "--resolve", &resolve, "--ca-file", &pem, "--push-proxy", &proxy].map(String::from).into();
        args
    };
    let home = Home::new();

    // A proxy that is not there: the fetch does not go around it.
    let args = through(format!("socks5h://127.0.0.1:{}", free_port()));
    let out = home.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    out.fails(1, "cannot fetch the consent requests of shop.test: through the proxy, cannot connect");
    assert_eq!(site.connections(), 0, "nothing reached the site but through the proxy");
    assert!(!home.path().exists());

    let proxy = Microsocks::start();
    let args = through(format!("socks5h://127.0.0.1:{}", proxy.port));
    let out = home.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(out.ok().contains("added request offers-1 from The Shop (shop.test)"), "{}", out.stdout);
    assert_eq!(site.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_lowercase_domain_name_is_fetched() {
    let home = Home::new();
    for domain in
        ["127.0.0.1", "[::1]", "Shop.test", "shop.test.", "localhost", "shop.test/x", "user@shop.test", "shop.test:0", "https://shop.test", "shop.test:443x"]
    {
        let out = home.cli(&["requests", "fetch", domain]).await;
        out.fails(2, "is not a lowercase domain name");
    }
    assert!(!home.path().exists());
}
