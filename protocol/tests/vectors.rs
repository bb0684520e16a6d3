//! The test vectors of SPEC.md, as files: each states its inputs and an `expect:` line that
//! this crate must reproduce byte for byte. Another implementation can check itself against
//! the same files.

#![allow(clippy::unwrap_used)] // a panic is a failed test

use std::collections::BTreeMap;

use optin_protocol::hex;
use optin_protocol::jws::{self, Jwk};
use optin_protocol::scope::GrantId;
use optin_protocol::token::Token;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Reads `name: value` lines; `#` starts a comment line.
fn vector(name: &str) -> BTreeMap<String, String> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("{path}: not `name: value`: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn check(name: &str, actual: &str, expected: &str) {
    assert_eq!(actual, expected, "vector {name}: got\n{actual}\nexpected\n{expected}");
}

#[test]
fn slice_jws_vector() {
    let v = vector("slice-jws.txt");
    let key = Ed25519KeyPair::from_seed_unchecked(&hex::decode(&v["seed"]).unwrap()).unwrap();
    let jwk = Jwk::ed25519(key.public_key().as_ref());
    check("slice-jws x", &jwk.x, &v["jwk_x"]);
    check("slice-jws kid", &jwk.thumbprint(), &v["kid"]);
    let jws = jws::sign(&key, v["payload"].as_bytes());
    check("slice-jws", &jws, &v["expect"]);
    assert_eq!(jws::verify(&v["expect"], &jwk).unwrap(), v["payload"].as_bytes());
}

#[test]
fn token_vectors() {
    for name in ["token-root.txt", "token-attenuated.txt", "token-filters.txt"] {
        let v = vector(name);
        let grant = GrantId::parse(&v["grant_id"]).unwrap();
        let mut token = Token::mint(&hex::decode(&v["secret"]).unwrap(), &grant);
        for caveat in v.get("caveats").map(|c| c.split(" | ").collect::<Vec<_>>()).unwrap_or_default() {
            token = token.attenuate(&caveat.parse().unwrap());
        }
        check(name, &token.encode(), &v["expect"]);
        assert_eq!(Token::parse(&v["expect"]).unwrap(), token, "{name}: parse(expect) differs");
    }
}

#[test]
fn filter_caveats_narrow_as_the_vector_says() {
    let v = vector("token-filters.txt");
    let grant = GrantId::parse(&v["grant_id"]).unwrap();
    let secret = hex::decode(&v["secret"]).unwrap();
    let terms: optin_protocol::scope::Terms = serde_json::from_str(&v["grant_terms"]).unwrap();
    let token = Token::parse(&v["expect"]).unwrap();
    assert_eq!(token.grant(), &grant);
    let narrowed = token.verify(&secret, &terms).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&v["narrowed"]).unwrap();
    let got = serde_json::json!({
        "categories": narrowed.categories,
        "merchants": narrowed.merchants,
        "fields": narrowed.fields,
        "rate": narrowed.rate.map(|r| r.to_string()),
    });
    assert_eq!(got, expected, "token-filters.txt: the grant's terms narrowed");
    // A token with the same caveats on a grant of another secret does not verify.
    assert!(token.verify(&[7u8; 32], &terms).is_err());
}

/// `refuse:` lines, each with the `because:` line after it, in file order.
fn refusals(name: &str) -> Vec<(String, String)> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(token) = line.strip_prefix("refuse: ") {
            let because = lines.next().and_then(|l| l.strip_prefix("because: ")).unwrap_or_else(|| panic!("{path}: `refuse:` without `because:`"));
            out.push((token.to_owned(), because.to_owned()));
        }
    }
    out
}

#[test]
fn rejects_non_canonical_token_vectors() {
    let cases = refusals("token-non-canonical.txt");
    assert!(cases.len() >= 10, "the file lists its cases: {}", cases.len());
    for (token, because) in cases {
        let refused = Token::parse(&token).expect_err(&format!("must be refused ({because}): {token}"));
        assert!(refused.to_string().contains(&because), "{token}: refused as `{refused}`, expected `{because}`");
    }
}
