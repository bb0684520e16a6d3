//! Tokens: forged, altered, foreign, expired or missing tokens get the bearer challenge;
//! attenuated tokens narrow and never widen; a grant's token only ever yields its own grant.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use optin_protocol::jws::JwsError;
use optin_protocol::scope::{Caveat, GrantId};
use optin_protocol::slice::{SliceError, SliceItem};
use optin_protocol::token::Token;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::task::JoinSet;

use optin_tests::{assert_problem, assert_unauthorized, fetch, fixture, now, Agent};

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).expect("randomness");
    bytes
}

/// A token's body and tag as text.
fn split(token: &str) -> (&str, &str) {
    token.split_once('.').expect("a token has a tag")
}

async fn started_with_signals() -> Agent {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_forged_foreign_and_malformed_tokens() {
    let agent = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let real = bundle.token.as_str();
    let (body, _) = split(real);
    let narrowed = Token::parse(real).expect("the bundle's token parses").attenuate(&"kinds=search".parse().expect("caveat"));
    let narrowed = narrowed.encode();
    let (_, narrowed_tag) = split(&narrowed);
    let expired = Token::parse(real).expect("token").attenuate(&Caveat::Expires(now() - time::Duration::minutes(1))).encode();

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("basic credentials", Some("Basic dXNlcjpwYXNzd29yZA==".into())),
        ("wrong scheme", Some(format!("Token {real}"))),
        ("no scheme", Some(real.to_owned())),
        ("empty bearer", Some("Bearer".into())),
        ("garbage", Some("Bearer garbage".into())),
        ("prefix only", Some("Bearer optin_".into())),
        ("not base64", Some("Bearer optin_!!!.!!!".into())),
        ("random tag", Some(format!("Bearer {body}.{}", URL_SAFE_NO_PAD.encode(random::<32>())))),
        ("short tag", Some(format!("Bearer {body}.{}", URL_SAFE_NO_PAD.encode(random::<16>())))),
        ("minted with another secret", Some(format!("Bearer {}", Token::mint(&random::<32>(), &bundle.grant_id).encode()))),
        ("unknown grant", Some(format!("Bearer {}", Token::mint(&random::<32>(), &GrantId::from_bytes(random::<12>())).encode()))),
        ("caveat removed", Some(format!("Bearer {body}.{narrowed_tag}"))),
        ("expired by caveat", Some(format!("Bearer {expired}"))),
        ("overlong", Some(format!("Bearer {real}{}", "A".repeat(5000)))),
    ];
    for (what, authorization) in cases {
        let response = agent.client().get_with_authorization("/v1/slice", authorization.as_deref()).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_unauthorized(&response, what);
        let response = agent.client().get_with_authorization("/v1/grant", authorization.as_deref()).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_unauthorized(&response, &format!("{what} (GET /v1/grant)"));
    }
    // The real token still works: the refusals above changed nothing.
    assert_eq!(agent.get("/v1/slice", Some(real)).await.status.as_u16(), 200);
}

/// The next tag of a chain over `caveat` as written, which any holder can compute.
fn chain(tag: &[u8], caveat: &str) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag), caveat.as_bytes()).as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_real_token_spelled_another_way() {
    let agent = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let real = bundle.token.as_str();
    let (body, tag) = split(real);
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(body.trim_start_matches("optin_")).expect("base64url")).expect("UTF-8");
    let tag_bytes = URL_SAFE_NO_PAD.decode(tag).expect("base64url");
    // Each is the bundle's token, or one its holder made from it without any secret, with a
    // tag that verifies: only the spelling differs from what the agent writes.
    let spaced = format!("optin_{}.{tag}", URL_SAFE_NO_PAD.encode(json.replacen(':', ": ", 1)));
    let reordered = format!("optin_{}.{tag}", URL_SAFE_NO_PAD.encode(json.replacen(r#"{"v":1,"g":"#, r#"{"g":"#, 1).replacen('}', r#","v":1}"#, 1)));
    let fortnight = r#","c":["window=14d"]}"#;
    let respelled = format!("optin_{}.{}", URL_SAFE_NO_PAD.encode(json.replacen('}', fortnight, 1)), URL_SAFE_NO_PAD.encode(chain(&tag_bytes, "window=14d")));
    let cases = [
        ("a space in the body", spaced, "body is not compact JSON"),
        ("keys in another order", reordered, "keys v, g, c in that order"),
        ("a caveat not as it prints", respelled, "a caveat is not written as it prints"),
    ];
    for (what, token, reason) in cases {
        for path in ["/v1/slice", "/v1/grant"] {
            assert_unauthorized(&agent.get(path, Some(&token)).await, &format!("{what} ({path})"));
        }
        // The marketer's own copy of the protocol crate says why, without asking the agent.
        let refused = Token::parse(&token).expect_err(what).to_string();
        assert!(refused.contains(reason), "{what}: refused as `{refused}`");
    }
    // The canonical spelling of the same window serves.
    let canonical = Token::parse(real).expect("token").attenuate(&"window=2w".parse().expect("caveat")).encode();
    assert_eq!(agent.get("/v1/slice", Some(&canonical)).await.status.as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_every_sampled_bit_flip_of_a_real_token() {
    let agent = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let real = bundle.token.clone();
    let bytes = real.as_bytes();
    let mut variants = Vec::new();
    // Every third byte after the prefix and the last one, two bits each: the body (grant id,
    // version, caveats) and the tag are both covered.
    let positions = (0..bytes.len()).step_by(3).chain([bytes.len() - 1]);
    for i in positions {
        for bit in [0u8, 1] {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 1 << bit;
            let Ok(text) = String::from_utf8(flipped) else { continue };
            // Only values a client can put in a header at all.
            if text.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                variants.push((i, bit, text));
            }
        }
    }
    assert!(variants.len() > 40, "too few variants: {}", variants.len());
    let client = agent.client();
    let mut tasks = JoinSet::new();
    for chunk in variants.chunks(variants.len().div_ceil(6)) {
        let chunk = chunk.to_vec();
        let client = client.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for (i, bit, text) in chunk {
                let response = client.get("/v1/slice", Some(&text)).await.unwrap_or_else(|e| panic!("flip {i}/{bit}: {e}"));
                out.push((i, bit, response));
            }
            out
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (i, bit, response) in done.expect("task") {
            assert_unauthorized(&response, &format!("token with bit {bit} of byte {i} flipped"));
        }
    }
    assert_eq!(agent.get("/v1/slice", Some(&real)).await.status.as_u16(), 200);

    // No altered token is genuine, so none is pinned on the grant: forged tokens are counted,
    // not recorded one by one (else anyone could fill the person's disk with garbage).
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let refused: Vec<&serde_json::Value> = audit["records"].as_array().expect("array").iter().map(|r| &r["event"]).filter(|e| e["type"] == "refused").collect();
    assert!(refused.is_empty(), "forged tokens leave no record: {refused:?}");
    let human = agent.cli(&["audit"]).await;
    let counted = format!("\nand {} requests with unknown or forged tokens since the agent started (counted, not recorded one by one)\n", variants.len());
    assert!(human.ok().contains(&counted), "the count of forged requests is shown: {}", human.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unknown_token_is_counted_in_the_singular() {
    let agent = Agent::start().await;
    let unknown = Token::mint(&random::<32>(), &GrantId::from_bytes(random::<12>())).encode();
    assert_unauthorized(&agent.get("/v1/slice", Some(&unknown)).await, "a token of no grant");
    let audit = agent.cli(&["audit"]).await;
    assert_eq!(
        audit.ok(),
        "the audit log is empty: grants, slices served, refusals, revocations and forgetting are recorded here\n\
         and 1 request with unknown or forged tokens since the agent started (counted, not recorded one by one)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_only_ever_yields_its_own_grant() {
    let agent = started_with_signals().await;
    let a = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let b = agent.grant("globex.example", "search,cart", "raw", "30d").await;
    for (bundle, other) in [(&a, &b), (&b, &a)] {
        let pages = fetch(&agent, bundle, "").await;
        let (jws, claims) = &pages[0];
        assert_eq!(claims.aud, bundle.marketer);
        assert_eq!(claims.grant.id, bundle.grant_id);
        // Each grant signs with its own key: the other bundle's pinned key is not the one named.
        let refused = other.verify_slice(jws).expect_err("a slice of another grant");
        let named = SliceError::Jws(JwsError::KeyId { expected: other.jwk.thumbprint(), found: bundle.jwk.thumbprint() });
        assert_eq!(refused, named, "{}'s slice must not verify against {}'s bundle", bundle.marketer, other.marketer);
        let info: serde_json::Value = serde_json::from_slice(&agent.get("/v1/grant", Some(&bundle.token)).await.body).expect("JSON");
        assert_eq!(info["grant_id"], bundle.grant_id.as_str());
        assert_eq!(info["marketer"], bundle.marketer.as_str());
    }
    // Revoking one grant leaves the other working.
    agent.cli(&["revoke", a.grant_id.as_str()]).await.ok();
    assert_unauthorized(&agent.get("/v1/slice", Some(&a.token)).await, "revoked grant A");
    assert_eq!(agent.get("/v1/slice", Some(&b.token)).await.status.as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attenuated_tokens_narrow_and_never_widen() {
    let agent = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let root = Token::parse(&bundle.token).expect("token");

    // Fewer kinds: only searches come back, and asking for carts is beyond the token.
    let searches = root.attenuate(&"kinds=search".parse().expect("caveat")).encode();
    let response = agent.get("/v1/slice", Some(&searches)).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    let claims = bundle.verify_slice(&response.text()).expect("verifies");
    assert_eq!(claims.scope.kinds.to_string(), "search");
    assert!(!claims.items.is_empty());
    assert!(claims.items.iter().all(|i| matches!(i, SliceItem::Raw(r) if r.body.kind().as_str() == "search")), "{claims:?}");
    assert_problem(&agent.get("/v1/slice?kinds=cart", Some(&searches)).await, 403, "kinds", "carts through a search-only token");

    // Coarser: category items only, and raw is refused.
    let coarse = root.attenuate(&"granularity=category".parse().expect("caveat")).encode();
    let claims = bundle.verify_slice(&agent.get("/v1/slice", Some(&coarse)).await.text()).expect("verifies");
    assert!(claims.items.iter().all(|i| matches!(i, SliceItem::Category(_))), "{claims:?}");
    assert_problem(&agent.get("/v1/slice?granularity=raw", Some(&coarse)).await, 403, "granularity", "raw through a category token");

    // A partner audience: the slice names the partner and verifies for it.
    let partner = root.attenuate(&"aud=partner.example".parse().expect("caveat")).encode();
    let jws = agent.get("/v1/slice", Some(&partner)).await.text();
    let claims = bundle.verify_slice_for(&jws, "partner.example").expect("verifies for the partner");
    assert_eq!(claims.aud, "partner.example");
    let refused = bundle.verify_slice(&jws).expect_err("a partner's slice is not the marketer's");
    assert_eq!(refused, SliceError::Claim { claim: "aud", expected: bundle.marketer.clone(), found: "partner.example".into() });

    // A shorter window: asking before it is refused.
    let week = root.attenuate(&"window=7d".parse().expect("caveat")).encode();
    let since = optin_tests::ts(now() - time::Duration::days(10));
    assert_problem(&agent.get(&format!("/v1/slice?since={since}"), Some(&week)).await, 403, "since", "since beyond an attenuated window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_tokens_past_their_expiry() {
    let agent = started_with_signals().await;
    // A grant lasts to a UTC midnight, never less than asked: one of 2 s serves till midnight.
    let bundle = agent.grant_with("acme.example", &["--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "2s"]).await;
    let expires = bundle.terms.expires_at;
    assert_eq!(expires, expires.replace_time(time::Time::MIDNIGHT), "{expires}");
    // An `expires` caveat is the holder's own and is not rounded: the agent's clock ends it.
    let soon = now() + time::Duration::seconds(2);
    let caveat: Caveat = format!("expires={}", optin_tests::ts(soon)).parse().expect("caveat");
    let token = Token::parse(&bundle.token).expect("token").attenuate(&caveat).encode();
    assert_eq!(agent.get("/v1/slice", Some(&token)).await.status.as_u16(), 200, "before its expiry");
    let wait = soon - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
    if wait.is_positive() {
        tokio::time::sleep(std::time::Duration::from_millis(wait.whole_milliseconds() as u64)).await;
    }
    assert_unauthorized(&agent.get("/v1/slice", Some(&token)).await, "expired token");
    // (Unless this test ran into that midnight.)
    if now() + time::Duration::seconds(10) < expires {
        assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status.as_u16(), 200, "the grant itself serves until midnight");
        let grants = agent.cli(&["grants", "--json"]).await.json();
        assert_eq!(grants[0]["state"], "active", "{grants}");
    }
}
