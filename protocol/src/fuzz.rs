//! What each parser of untrusted input in this crate must hold to, whatever the bytes: one
//! function per parser, called by its fuzz target (`fuzz/fuzz_targets/`) and, for every file
//! of the committed corpus (`fuzz/corpus/<target>/`), by `cargo test` (`tests/corpus.rs`).
//!
//! The functions live in the crate, not in the fuzz crate, so that the tests replay the
//! corpus on stable Rust through exactly the checks the fuzzer ran: a crash found once stays
//! found. They are public for those two callers only and are no part of the crate's API.
//!
//! Each never panics on input the parser refuses; a panic is a failed invariant. Where a
//! parser accepts, its value written back out must read back the same.

use ring::signature::{Ed25519KeyPair, KeyPair};
use time::macros::datetime;

use crate::bundle::GrantBundle;
use crate::jws;
use crate::scope::{Granularity, Terms};
use crate::signal::{self, limits, plain_domain};
use crate::span::Span;
use crate::token::Token;

/// A fuzz target's invariant function: takes any bytes, panics only when an invariant fails.
pub type Check = fn(&[u8]);

/// The fuzz targets of this crate with their functions, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[("token", token), ("batch", batch), ("bundle", bundle), ("jws", jws)];

/// The grant secret and the slice-signing key's seed of the test vectors (bytes 0x00..0x1f),
/// so that the vectors' tokens and slices, which verify, can seed the corpus.
const SECRET: [u8; 32] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31];

/// A token's text: accepted only in its canonical form, which it must write back byte for
/// byte; verifying it never panics; narrowing it gives a token that parses to itself.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(token) = Token::parse(text) else { return };
    assert_eq!(token.encode(), text, "an accepted token is its own canonical text");
    let caveats = match token.caveats() {
        Ok(c) => c,
        Err(e) => panic!("an accepted token's caveats parse: {e}"),
    };
    let Some(window) = Span::from_seconds(30 * 86_400) else { return };
    let terms = Terms {
        audience: "acme.example".into(),
        kinds: signal::Kinds::all(),
        granularity: Granularity::Raw,
        window,
        expires_at: datetime!(2027-01-01 0:00 UTC),
        categories: None,
        merchants: None,
    };
    let _ = token.verify(&SECRET, &terms);
    for caveat in caveats.iter().take(2) {
        let narrower = token.attenuate(caveat);
        match Token::parse(&narrower.encode()) {
            Ok(again) => assert_eq!(again, narrower, "a narrowed token reads back as itself"),
            // One caveat more than the most a token may carry is refused; nothing else is.
            Err(e) => assert!(caveats.len() + 1 > crate::token::MAX_CAVEATS || narrower.encode().len() > crate::token::MAX_LEN, "a narrowed token parses: {e}"),
        }
    }
}

/// An NDJSON batch: never more than the batch limit; every signal accepted writes out as a
/// line that parses to the same signal.
pub fn batch(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(signals) = signal::parse_batch(text, &plain_domain) else { return };
    assert!(signals.len() <= limits::BATCH_SIGNALS, "a batch holds at most the limit");
    for s in signals {
        let line = match serde_json::to_string(&s) {
            Ok(line) => line,
            Err(e) => panic!("an accepted signal serializes: {e}"),
        };
        match signal::parse_line(&line, &plain_domain) {
            Ok(again) => assert_eq!(again, s, "a signal reads back as itself: {line}"),
            Err(e) => panic!("an accepted signal, written out, is refused: {e}: {line}"),
        }
    }
}

/// A grant bundle: an accepted one writes out as JSON that parses to the same bundle, and its
/// token parses.
pub fn bundle(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(bundle) = GrantBundle::parse(text) else { return };
    let json = match serde_json::to_string(&bundle) {
        Ok(json) => json,
        Err(e) => panic!("an accepted bundle serializes: {e}"),
    };
    match GrantBundle::parse(&json) {
        Ok(again) => assert_eq!(again, bundle, "a bundle reads back as itself"),
        Err(e) => panic!("an accepted bundle, written out, is refused: {e}"),
    }
    assert!(Token::parse(&bundle.token).is_ok(), "an accepted bundle's token parses");
}

/// A compact JWS on the verify path, against the pinned key of the vectors' seed: what verifies
/// returns the payload its middle part encodes, and that payload signed again verifies to
/// the same bytes.
pub fn jws(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(key) = Ed25519KeyPair::from_seed_unchecked(&SECRET) else { return };
    let jwk = jws::Jwk::ed25519(key.public_key().as_ref());
    let Ok(payload) = jws::verify(text, &jwk) else { return };
    let middle = text.trim_end().split('.').nth(1).unwrap_or_default();
    assert_eq!(crate::b64::encode(&payload), middle, "the payload is the middle part, in canonical base64url");
    let again = jws::sign(&key, &payload);
    match jws::verify(&again, &jwk) {
        Ok(p) => assert_eq!(p, payload, "a payload signed again verifies to itself"),
        Err(e) => panic!("a payload signed again does not verify: {e}"),
    }
}
