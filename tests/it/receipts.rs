//! Consent receipts both sides hold: a pull grant's bundle carries its receipt, `optin
//! receipt` shows the same receipt and, once the grant is revoked, its signed withdrawal,
//! whether or not an agent runs; an independent JOSE library verifies both.

use std::path::PathBuf;
use std::process::Command;

use optin_protocol::bundle::GrantBundle;
use optin_protocol::receipt::{self, ConsentState, Receipt};
use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};
use time::Duration;

use optin_tests::{fixture, now, ts, Agent, Home};

/// `optin receipt GRANT --json`: the JWS and its payload.
async fn receipt_json(home: &Home, grant: &str) -> (String, Value) {
    let out = home.cli(&["receipt", grant, "--json"]).await.json();
    (out["jws"].as_str().expect("a jws").to_owned(), out["receipt"].clone())
}

/// The receipt a JWS holds, verified with the bundle's key.
fn verified(bundle: &GrantBundle, jws: &str) -> Receipt {
    receipt::verify(jws, &bundle.jwk).unwrap_or_else(|e| panic!("the receipt does not verify with the bundle's key: {e}"))
}

/// A pull request of acme.example, signed by its key, valid for a month.
fn request(id: &str) -> String {
    let now = now();
    let document = json!({
        "version": 1, "id": id, "issued_at": ts(now - Duration::hours(1)), "expires_at": ts(now + Duration::days(30)),
        "marketer": {"name": "Acme Shoes", "domain": "acme.example", "contact": "privacy@acme.example", "privacy_policy": "https://acme.example/privacy"},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you running-shoe offers that fit what you look for."},
        "terms": {"kinds": ["search", "cart"], "granularity": "raw", "window": "30d", "duration": "90d", "categories": ["Apparel & Accessories > Shoes"]},
        "offer": "10% off your next pair",
        "delivery": {"method": "pull"},
    });
    let key = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a key");
    optin_protocol::request::sign(&key, document.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_bundle_carries_the_receipt_and_revoking_signs_its_withdrawal() {
    let agent = Agent::start().await;
    let bundle = agent.grant("acme.example", "search,cart", "category", "30d").await;
    let grant = bundle.grant_id.as_str();

    // The bundle's receipt: this grant's, given today, made unasked, signed with its key.
    let given = bundle.consent().expect("a pull bundle carries its receipt").expect("GrantBundle::parse verified it");
    assert_eq!(given.record.record_id, bundle.grant_id);
    assert_eq!(given.event.iter().map(|e| (e.event_time, e.state)).collect::<Vec<_>>(), [(now().date(), ConsentState::Given)]);
    assert!(given.request.is_none(), "a grant made with `optin grant` answers no request");
    let issued = bundle.receipt.clone().expect("a receipt");

    // The same bytes however it is asked for: the bundle printed again, and `optin receipt`.
    let again = GrantBundle::parse(agent.cli(&["bundle", grant]).await.ok()).expect("a bundle");
    assert_eq!(again.receipt.as_deref(), Some(issued.as_str()));
    let (jws, payload) = receipt_json(agent.home(), grant).await;
    assert_eq!(jws, issued);
    assert_eq!(payload, serde_json::to_value(&given).expect("JSON"), "--json prints the payload the JWS holds");
    let shown = agent.cli(&["receipt", grant]).await;
    for needle in [
        format!("consent receipt of grant {grant}: given"),
        format!("given on {}", now().date()),
        "acme.example (acme.example)".to_owned(),
        "no request: you made this grant yourself".to_owned(),
        "search,cart at category granularity, reaching 30d back".to_owned(),
    ] {
        assert!(shown.ok().contains(&needle), "should say {needle:?}:\n{}", shown.stdout);
    }

    // Revoked: the receipt is the same record with its consent withdrawn, signed again.
    agent.cli(&["revoke", grant]).await.ok();
    let (withdrawn_jws, _) = receipt_json(agent.home(), grant).await;
    let withdrawn = verified(&bundle, &withdrawn_jws);
    assert_eq!(withdrawn, given.ended(ConsentState::Withdrawn, now()), "the same record, its consent withdrawn today");
    assert!(agent.cli(&["receipt", grant]).await.ok().contains(&format!("consent receipt of grant {grant}: withdrawn")));

    // With no agent running, the same receipt from the store.
    let home = agent.stop();
    assert_eq!(receipt_json(&home, grant).await.0, withdrawn_jws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_grants_receipts_share_nothing_the_agent_made_but_the_day() {
    let agent = Agent::start().await;
    let first = agent.grant("acme.example", "search", "raw", "30d").await;
    let second = agent.grant("globex.example", "search", "raw", "30d").await;
    let [a, b] = [&first, &second].map(|bundle| bundle.consent().expect("a receipt").expect("verified"));
    // Each names its own grant and its own pseudonym, the bundle's `sub`, signed with its own key.
    for (bundle, receipt) in [(&first, &a), (&second, &b)] {
        assert_eq!(bundle.issuer, format!("urn:optin:agent:{}", receipt.record.pii_principal_id));
    }
    assert_ne!(a.record.pii_principal_id, b.record.pii_principal_id);
    assert!(receipt::verify(second.receipt.as_deref().expect("a receipt"), &first.jwk).is_err(), "one grant's key verifies another's receipt");
    // Neither receipt holds an identifier of the other grant: its id, pseudonym or key.
    let payload = serde_json::to_string(&a).expect("JSON");
    for other in [second.grant_id.as_str(), b.record.pii_principal_id.as_str(), second.jwk.thumbprint().as_str()] {
        assert!(!payload.contains(other), "the first grant's receipt names the second's {other}");
    }
    // The one time in each is the day of approval.
    assert_eq!(a.event.iter().map(|e| e.event_time).collect::<Vec<_>>(), b.event.iter().map(|e| e.event_time).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_of_an_approved_request_names_it_and_its_marketer() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    agent.home().command(&["requests", "add", "-"]).stdin(request("shoes-1").as_bytes()).run().await.ok();
    let approved = agent.cli(&["approve", "shoes-1", "--kinds", "cart"]).await;
    let out = approved.ok();
    // What the grant shares now, in one sentence, before the bundle is handed over.
    let sentence = "now it would share 1 abandoned cart, 1 open cart, 1 purchased cart in Apparel & Accessories > Shoes over 30d (";
    assert!(out.find(sentence).is_some_and(|at| at < out.find('{').expect("the bundle")), "{out}");
    let bundle = GrantBundle::parse(&out[out.find('{').expect("the bundle")..]).expect("a bundle");
    let given = bundle.consent().expect("a receipt").expect("verified");
    let answered = given.request.as_ref().expect("the request answered");
    assert_eq!((answered.id.as_str(), answered.marketer.as_str()), ("shoes-1", "acme.example"));
    assert_eq!(given.pii_processing.purposes[0].pii_information.to_string(), "cart", "the kinds approved, not asked");

    // The same sentence for a grant the person makes unasked, cut the same way.
    let granted =
        agent.cli(&["grant", "globex.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "30d", "--purpose", "p"]).await;
    let out = granted.ok();
    let sentence = "now it would share 2 searches in Apparel & Accessories > Shoes over 30d (";
    assert!(out.find(sentence).is_some_and(|at| at < out.find('{').expect("the bundle")), "{out}");

    let shown = agent.cli(&["receipt", bundle.grant_id.as_str()]).await;
    for needle in [
        "holder:    Acme Shoes (acme.example), contact privacy@acme.example",
        "answers:   request shoes-1 of acme.example",
        "dpv:PersonalisedAdvertising",
        "only in:   Apparel & Accessories > Shoes",
        "privacy:   https://acme.example/privacy",
    ] {
        assert!(shown.ok().contains(needle), "should say {needle:?}:\n{}", shown.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_receipts_of_grants_that_are_not_there() {
    let home = Home::new();
    home.cli(&["grant", "acme.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "30d", "--purpose", "p", "--json"])
        .await
        .ok();
    home.cli(&["receipt", "g_000000000000000000000000"]).await.fails(1, "no grant g_000000000000000000000000");
    let hostile = home.cli(&["receipt", "g_\u{1b}[2J"]).await;
    assert!(!hostile.fails(2, "is not a grant id").contains('\u{1b}'), "the escape never reaches the terminal");
    home.cli(&["receipt"]).await.fails(2, "GRANT_ID");
    let missing = Home::new();
    missing.cli(&["receipt", "g_000000000000000000000000"]).await.fails(1, "no optin home at");
    assert!(!missing.path().exists(), "asking for a receipt makes no home");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_request_fails_its_mac_keeps_a_bundle_without_a_receipt() {
    let home = Home::new();
    home.command(&["requests", "add", "-"]).stdin(request("shoes-1").as_bytes()).run().await.ok();
    let out = home.cli(&["approve", "shoes-1"]).await;
    let bundle = GrantBundle::parse(&out.ok()[out.stdout.find('{').expect("the bundle")..]).expect("a bundle");
    assert!(bundle.receipt.is_some());
    let grant = bundle.grant_id.as_str();

    // The request's stored record changed behind optin's back: it fails its MAC.
    let db = sled::open(home.path().join("store")).expect("the store");
    {
        let requests = db.open_tree("requests").expect("the requests tree");
        let (key, value) = requests.iter().next().expect("one request").expect("readable");
        let edited = String::from_utf8(value.to_vec()).expect("JSON").replace("10% off your next pair", "90% off your next pair");
        requests.insert(key, edited.as_bytes()).expect("write");
    }
    db.flush().expect("flush");
    drop(db);

    // The bundle is printed still, without a receipt nobody can vouch for; the receipt itself
    // is refused, saying why.
    let again = GrantBundle::parse(home.cli(&["bundle", grant]).await.ok()).expect("a bundle");
    assert_eq!((again.receipt.as_deref(), again.token.as_str()), (None, bundle.token.as_str()));
    home.cli(&["receipt", grant]).await.fails(1, "which is no longer stored intact: its receipt cannot be made");
}

/// Runs `tests/jose/receipt.py BUNDLE RECEIPT STATE`: its exit code, stdout and stderr.
fn jwcrypto(python: &PathBuf, home: &Home, bundle: &str, jws: &str, state: &str) -> (Option<i32>, String, String) {
    let name = state.trim_start_matches("dpv:");
    let (bundle_file, jws_file) = (home.scratch(&format!("bundle-{name}.json")), home.scratch(&format!("receipt-{name}.jws")));
    std::fs::write(&bundle_file, bundle).expect("write the bundle");
    std::fs::write(&jws_file, jws).expect("write the receipt");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jose").join("receipt.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&bundle_file)
        .arg(&jws_file)
        .arg(state)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", python.display(), optin_tests::PYTHON_SETUP));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_verify_with_jwcrypto() {
    let Some(python) = optin_tests::python("the jwcrypto receipt test") else { return };
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    // With fields and a rate, so the schema jwcrypto's side checks reaches the newer terms.
    let args = ["--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "90d", "--fields", "query", "--rate", "2/day"];
    let text = agent.cli(&[&["grant", "acme.example"][..], &args, &["--purpose", "offers", "--json"]].concat()).await.ok().to_owned();
    let bundle = GrantBundle::parse(&text).expect("a bundle");
    let grant = bundle.grant_id.as_str();
    let issued = bundle.receipt.clone().expect("a receipt");
    agent.cli(&["revoke", grant]).await.ok();
    let (withdrawn, ours) = receipt_json(agent.home(), grant).await;

    for (jws, state) in [(issued.as_str(), "dpv:ConsentGiven"), (withdrawn.as_str(), "dpv:ConsentWithdrawn")] {
        let (code, stdout, stderr) = jwcrypto(&python, agent.home(), &text, jws, state);
        assert_eq!(code, Some(0), "jwcrypto refused the {state} receipt: {stderr}");
        let theirs: Value = serde_json::from_str(&stdout).expect("receipt.py prints JSON");
        assert_eq!(theirs, serde_json::to_value(verified(&bundle, jws)).expect("JSON"), "both libraries read the same payload");
        let terms = &theirs["pii_processing"]["purposes"][0]["terms"];
        assert_eq!((&terms["fields"], &terms["rate"]), (&serde_json::json!(["query"]), &serde_json::json!("2/day")), "{theirs}");
    }
    assert_eq!(serde_json::to_value(verified(&bundle, &withdrawn)).expect("JSON"), ours);

    // The other side of the check: a receipt read under the wrong state, and one with a
    // byte changed, are refused by jwcrypto too, so its success above means something.
    let (code, _, stderr) = jwcrypto(&python, agent.home(), &text, &issued, "dpv:ConsentWithdrawn");
    assert_eq!(code, Some(1), "the given receipt is not a withdrawal: {stderr}");
    let (head, rest) = issued.split_at(issued.len() - 2);
    let flipped = format!("{head}{}{}", if rest.starts_with('A') { 'B' } else { 'A' }, &rest[1..]);
    let (code, _, stderr) = jwcrypto(&python, agent.home(), &text, &flipped, "dpv:ConsentGiven");
    assert_eq!(code, Some(1), "a changed signature verifies: {stderr}");
    assert!(stderr.contains("signature does not verify"), "{stderr}");
}

/// A receipt states every term its grant enforces: the fields it shares and its rate, and at
/// `aggregate` the noise and budget its counts are made with, as the bundle's terms hold
/// them, and `optin receipt` says them in words. A receipt without them would tell the
/// holder, and anyone it shows the receipt to, that the person agreed to every field at any
/// rate, or to exact counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_states_the_fields_rate_and_noise_its_grant_was_made_with() {
    let agent = Agent::start().await;
    let narrowed = ["--kinds", "cart", "--granularity", "raw", "--window", "30d", "--expires", "90d", "--fields", "merchant,items.name", "--rate", "2/day"];
    let raw = agent.grant_with("acme.example", &narrowed).await;
    let noisy = ["--kinds", "search", "--granularity", "aggregate", "--window", "30d", "--expires", "90d", "--epsilon", "0.25", "--budget", "1"];
    let counts = agent.grant_with("acme.example", &noisy).await;
    for bundle in [&raw, &counts] {
        let given = bundle.consent().expect("a pull bundle carries its receipt").expect("GrantBundle::parse verified it");
        let stated = serde_json::to_value(&given.pii_processing.purposes[0].terms).expect("JSON");
        let agreed = serde_json::to_value(&bundle.terms).expect("JSON");
        for term in ["granularity", "window", "expires_at", "fields", "rate", "noise"] {
            assert_eq!(stated.get(term), agreed.get(term), "{term} of {}", bundle.grant_id);
        }
        let (_, payload) = receipt_json(agent.home(), bundle.grant_id.as_str()).await;
        assert_eq!(payload, serde_json::to_value(&given).expect("JSON"), "optin receipt --json states the same terms");
    }
    let shown = agent.cli(&["receipt", raw.grant_id.as_str()]).await;
    for needle in ["items.name, merchant", "2/day slices"] {
        assert!(shown.ok().contains(needle), "should say {needle:?}:\n{}", shown.stdout);
    }
    let shown = agent.cli(&["receipt", counts.grant_id.as_str()]).await;
    assert!(shown.ok().contains("epsilon 0.25 per new answer, 1 in all"), "{}", shown.stdout);
}
