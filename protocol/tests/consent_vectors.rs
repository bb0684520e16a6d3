//! The test vectors of SPEC.md's consent requests, receipts and pushes, computed
//! independently in Python (`tests/jose/consent_vectors.py`, from SPEC.md alone): this crate
//! must verify each and reproduce its `expect:` line byte for byte (Ed25519 is deterministic).

#![allow(clippy::unwrap_used)] // a panic is a failed test

use std::collections::BTreeMap;

use optin_protocol::jws::Jwk;
use optin_protocol::push::{self, Data};
use optin_protocol::receipt::{self, Basis, Receipt};
use optin_protocol::request::{self, Choices};
use optin_protocol::scope::GrantId;
use optin_protocol::webhook::{self, Headers, PublicKey, WebhookId};
use optin_protocol::{hex, timestamp};
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

fn key(v: &BTreeMap<String, String>) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&hex::decode(&v["seed"]).unwrap()).unwrap()
}

#[test]
fn request_vector() {
    let v = vector("request-jws.txt");
    let key = key(&v);
    let jwk = Jwk::ed25519(key.public_key().as_ref());
    check("request x", &jwk.x, &v["jwk_x"]);
    check("request kid", &jwk.thumbprint(), &v["kid"]);
    check("request", &request::sign(&key, v["payload"].as_bytes()), &v["expect"]);
    let now = timestamp::parse(&v["now"]).unwrap();
    let signed = request::verify(&v["expect"], Some(&v["domain"]), now).unwrap();
    check("request document", &signed.request.to_json(), &v["payload"]);
    assert_eq!(signed.key.thumbprint(), v["kid"]);
    assert!(request::verify(&v["expect"], Some("other.example"), now).is_err());
}

#[test]
fn receipt_vector() {
    let v = vector("receipt-jws.txt");
    let key = key(&v);
    let jwk = Jwk::ed25519(key.public_key().as_ref());
    check("receipt kid", &jwk.thumbprint(), &v["kid"]);
    check("receipt", &receipt::sign_document(&key, v["payload"].as_bytes()), &v["expect"]);
    // The agent's own receipt for the same approval is the same document.
    let request = request::Request::parse(&vector("request-jws.txt")["payload"]).unwrap();
    let approved = request.terms.narrow(&Choices { kinds: Some(v["kinds"].parse().unwrap()), ..Choices::default() }).unwrap();
    let at = timestamp::parse(&v["approved_at"]).unwrap();
    let terms = approved.terms(&request.marketer.domain, at).unwrap();
    let ours = Receipt::given(Basis::Request(&request), &GrantId::parse(&v["grant_id"]).unwrap(), &v["principal"], &terms, at);
    check("receipt document", &ours.to_json(), &v["payload"]);
    check("receipt signed", &ours.sign(&key), &v["expect"]);
    assert_eq!(receipt::verify(&v["expect"], &jwk).unwrap(), ours);
}

#[test]
fn webhook_vector() {
    let v = vector("webhook-v1a.txt");
    let key = key(&v);
    check("whpk", &PublicKey::of(&key).to_string(), &v["whpk"]);
    let sent = timestamp::parse("2026-11-23T12:00:00Z").unwrap();
    check("sent at", &sent.unix_timestamp().to_string(), &v["timestamp"]);
    let headers = webhook::sign(&key, &WebhookId::parse(&v["id"]).unwrap(), sent, v["body"].as_bytes());
    check("webhook-signature", &headers.signature, &v["expect"]);
    let received = Headers { id: v["id"].clone(), timestamp: v["timestamp"].clone(), signature: v["expect"].clone() };
    let public = PublicKey::parse(&v["whpk"]).unwrap();
    let now = sent + time::Duration::seconds(90);
    assert!(webhook::verify(&public, &received, v["body"].as_bytes(), now, webhook::DEFAULT_TOLERANCE).is_ok());
    // The inbox's whole path: the push, the event inside, and the slice inside that.
    let jwk = Jwk::ed25519(key.public_key().as_ref());
    let got = push::receive(&jwk, &received, v["body"].as_bytes(), now, webhook::DEFAULT_TOLERANCE).unwrap();
    check("event", &got.event.to_json(), &v["body"]);
    let Data::SliceDelivered { slice, jti, .. } = &got.event.data else { panic!("a slice.delivered event") };
    let slice_vector = vector("slice-jws.txt");
    assert_eq!(*slice, slice_vector["expect"]);
    assert_eq!(optin_protocol::jws::verify(slice, &jwk).unwrap(), slice_vector["payload"].as_bytes());
    assert_eq!(jti.as_str(), v["id"]);
}

#[test]
fn unasked_receipt_vector() {
    let v = vector("receipt-unasked-jws.txt");
    let key = key(&v);
    let jwk = Jwk::ed25519(key.public_key().as_ref());
    check("unasked receipt", &receipt::sign_document(&key, v["payload"].as_bytes()), &v["expect"]);
    // The agent's own receipt for `optin grant` with the same terms is the same document.
    let at = timestamp::parse(&v["approved_at"]).unwrap();
    let terms = optin_protocol::scope::Terms {
        audience: "acme.example".into(),
        kinds: v["kinds"].parse().unwrap(),
        granularity: optin_protocol::scope::Granularity::Category,
        window: "30d".parse().unwrap(),
        expires_at: optin_protocol::scope::grant_expiry(at, "90d".parse().unwrap()).unwrap(),
        categories: None,
        merchants: None,
        fields: None,
        rate: None,
        noise: None,
    };
    let basis = Basis::Owner { marketer: "acme.example", purpose: &v["purpose"] };
    let ours = Receipt::given(basis, &GrantId::parse(&v["grant_id"]).unwrap(), &v["principal"], &terms, at);
    check("unasked receipt document", &ours.to_json(), &v["payload"]);
    assert_eq!(receipt::verify(&v["expect"], &jwk).unwrap(), ours);
}
