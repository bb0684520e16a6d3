//! Restarts keep everything; the CLI gives the same answers with the agent stopped; what
//! the agent acknowledged survives a kill -9.

use serde_json::{json, Value};

use optin_protocol::bundle::GrantBundle;
use optin_tests::fixture::{self, ago, search};
use optin_tests::{assert_unauthorized, fetch, now, raw_items, Agent, Home};

/// The answers of read-only commands, with what legitimately changes between two runs
/// (the moment a preview is cut, its id) taken out. The audit is compared on its own: a
/// preview may well be audited.
async fn answers(home: &Home, grant: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for args in [vec!["signals", "--json"], vec!["signals", "--kind", "cart", "--json"], vec!["grants", "--json"], vec!["preview", grant, "--json"]] {
        let mut value = home.cli(&args).await.json();
        if args[0] == "preview" {
            for page in value.as_array_mut().expect("pages") {
                let object = page.as_object_mut().expect("claims");
                for moving in ["iat", "jti", "scope"] {
                    object.remove(moving);
                }
            }
        }
        out.push((args.join(" "), value));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_grants_keys_certificate_and_data() {
    let agent = Agent::start().await;
    let signals = fixture::walkthrough(now());
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let revoked = agent.grant("globex.example", "search", "raw", "30d").await;
    agent.cli(&["revoke", revoked.grant_id.as_str()]).await.ok();
    let (_, first) = fetch(&agent, &bundle, "").await.remove(0);
    let fingerprint = agent.fingerprint.clone();
    let online = answers(agent.home(), bundle.grant_id.as_str()).await;
    let online_audit = agent.cli(&["audit", "--json"]).await.json();

    // Stopped: the CLI reads the store directly and says the same.
    let home = agent.stop();
    assert_eq!(home.cli(&["audit", "--json"]).await.json(), online_audit, "`optin audit --json` differs between online and offline");
    let offline = answers(&home, bundle.grant_id.as_str()).await;
    for ((what, a), (_, b)) in online.iter().zip(offline.iter()) {
        assert_eq!(a, b, "`optin {what}` differs between online and offline");
    }
    let verify = home.cli(&["audit", "--verify"]).await;
    assert!(verify.ok().starts_with("audit chain intact"), "{verify:?}");

    // Started again: same certificate, same grant key, same data, same revocations.
    let agent = home.serve(&[]).await;
    assert_eq!(agent.fingerprint, fingerprint, "the certificate survives a restart");
    let (jws, again) = fetch(&agent, &bundle, "").await.remove(0);
    assert_eq!(raw_items(&again), raw_items(&first), "the data survives a restart");
    assert_eq!(again.iss, first.iss);
    assert_eq!(again.sub, first.sub);
    bundle.verify_slice(&jws).expect("the old bundle's key still verifies: same kid");
    assert_unauthorized(&agent.get("/v1/slice", Some(&revoked.token)).await, "a grant revoked before the restart");
    let grants = agent.cli(&["grants", "--json"]).await.json();
    let states: Vec<(&str, &str)> =
        grants.as_array().expect("array").iter().map(|g| (g["marketer"].as_str().expect("m"), g["state"].as_str().expect("s"))).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&("acme.example", "active")) && states.contains(&("globex.example", "revoked")), "{states:?}");
    // A new grant names the new address.
    let fresh = agent.grant("initech.example", "search", "category", "7d").await;
    assert_ne!(fresh.jwk.kid, bundle.jwk.kid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_on_the_store_with_no_agent_running() {
    let agent = Agent::start().await;
    let url = agent.url.clone();
    let fingerprint = agent.fingerprint.clone();
    let home = agent.stop();

    let t = now();
    let batch = fixture::ndjson(&[search("s1", ago(t, 2), "offline search", "bing.com", "Home"), search("s2", ago(t, 1), "another", "bing.com", "Home")]);
    let out = home.command(&["ingest", "-"]).stdin(batch.as_bytes()).run().await;
    assert_eq!(out.ok().trim(), "stored 2 signals (0 already present)");
    let out = home
        .cli(&["grant", "acme.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "90d", "--purpose", "p", "--json"])
        .await;
    let bundle = optin_protocol::bundle::GrantBundle::parse(out.ok()).expect("a bundle, offline");
    assert_eq!(bundle.pull_from(), Some((url.as_str(), fingerprint.as_str())), "offline grants name the address the agent last listened on");
    let other = home
        .cli(&["grant", "globex.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "90d", "--purpose", "p", "--json"])
        .await;
    let other = optin_protocol::bundle::GrantBundle::parse(other.ok()).expect("bundle");
    assert_eq!(home.cli(&["revoke", other.grant_id.as_str()]).await.ok().trim(), format!("revoked {}", other.grant_id));
    assert_eq!(home.cli(&["forget", "--id", "s2"]).await.ok().trim(), "forgot 1 signal");
    let preview = home.cli(&["preview", bundle.grant_id.as_str(), "--json"]).await.json();
    assert_eq!(preview[0]["items"].as_array().expect("items").len(), 1);
    home.cli(&["pause"]).await.ok();
    home.cli(&["resume"]).await.ok();

    // The agent, started on that store, serves exactly that.
    let agent = home.serve(&[]).await;
    let client = optin_examples::PinnedClient::new(&agent.url, &fingerprint).expect("client");
    let pages = optin_examples::fetch_slices(&client, &bundle, "").await.expect("served");
    let items = raw_items(&pages[0].1);
    assert_eq!(items, vec![(format!("search {} offline search", optin_tests::ts(ago(t, 2))), None)]);
    assert_unauthorized(&agent.get("/v1/slice", Some(&other.token)).await, "revoked offline");
    let audit = agent.cli(&["audit", "--json"]).await.json();
    crate::walkthrough::check_chain(audit["records"].as_array().expect("array"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let agent = Agent::start().await;
    let token = agent.cli(&["ingest-token"]).await.ok().trim().to_owned();
    let t = now();
    let batch = fixture::ndjson(&[search("k1", ago(t, 2), "before the crash", "bing.com", "Home")]);
    let response = agent.client().post("/v1/signals", Some(&token), "application/x-ndjson", batch.into_bytes()).await.expect("answer");
    assert_eq!(serde_json::from_slice::<Value>(&response.body).expect("JSON"), json!({"stored": 1, "duplicates": 0}));
    let granted = agent
        .cli(&["grant", "acme.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "30d", "--purpose", "p", "--json"])
        .await;
    let bundle = GrantBundle::parse(granted.ok()).expect("a bundle");
    let revoked = agent.grant("globex.example", "search", "raw", "30d").await;
    agent.cli(&["revoke", revoked.grant_id.as_str()]).await.ok();
    agent.cli(&["forget", "--id", "nothing-like-this"]).await.fails(1, "no signal with id");

    let home = agent.kill_hard();
    // With the agent dead and its socket left behind, the CLI still works.
    let listed = home.cli(&["signals", "--json"]).await.json();
    assert_eq!(listed.as_array().expect("array").len(), 1, "{listed}");
    let agent = home.serve(&[]).await;
    let pages = fetch(&agent, &bundle, "").await;
    assert_eq!(pages[0].1.items.len(), 1);
    assert_unauthorized(&agent.get("/v1/slice", Some(&revoked.token)).await, "revoked before the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_name_the_public_url_and_are_printed_again_after_a_move() {
    let home = Home::new();
    // A public address that is not an origin is refused before the agent starts.
    for (url, says) in [
        ("http://optin.example.net", "not https"),
        ("https://optin.example.net/optin", "a path or query has no place in it"),
        ("https://optin.example.net?x=1", "a path or query has no place in it"),
        ("https://me@optin.example.net", "a user name has no place in it"),
        ("https://optin.example.net:0", "port 0"),
        ("optin.example.net", "not https"),
    ] {
        home.cli(&["serve", "--listen", "127.0.0.1:0", "--public-url", url]).await.fails(2, says);
    }

    // Behind a forwarded port, bundles name the public address, with the agent's certificate;
    // written in one form whatever was typed.
    let agent = home.serve(&["--public-url", "https://Optin.Example.NET:443/"]).await;
    let granted = agent
        .cli(&["grant", "acme.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "30d", "--purpose", "p", "--json"])
        .await;
    let bundle = GrantBundle::parse(granted.ok()).expect("a bundle");
    assert_eq!(bundle.pull_from(), Some(("https://optin.example.net:443", agent.fingerprint.as_str())));
    let home = agent.stop();
    let offline = GrantBundle::parse(home.cli(&["bundle", bundle.grant_id.as_str()]).await.ok()).expect("a bundle");
    assert_eq!(offline.agent_url.as_deref(), Some("https://optin.example.net:443"), "the store keeps the address bundles name");

    // Started again on its own address, the same grant's bundle is printed with it.
    let agent = home.serve(&[]).await;
    let again = GrantBundle::parse(agent.cli(&["bundle", bundle.grant_id.as_str()]).await.ok()).expect("a bundle");
    assert_eq!((again.agent_url.as_deref(), again.token.as_str()), (Some(agent.url.as_str()), bundle.token.as_str()));
    let slice = agent.get("/v1/slice", Some(&again.token)).await;
    assert_eq!(slice.status, 200, "the bundle printed again works: {}", String::from_utf8_lossy(&slice.body));
}
