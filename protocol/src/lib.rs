//! # optin-protocol
//!
//! Everything two parties need to agree on, as pure functions over bytes: the agent that
//! serves slices and the marketer that verifies them both build on this crate.
//!
//! ## Codemap
//!
//! - [`signal`]: the shareable signals (search, cart, purchase), parsed and validated from
//!   NDJSON at the boundary into typed values.
//! - [`span`]: durations written like `30d` (windows, expiries).
//! - [`scope`]: grant terms, what a request asks for, and the one function that decides what
//!   a request may see ([`scope::Terms::evaluate`]). Caveats from tokens narrow terms here too.
//! - [`noise`] and [`rate`]: a grant's differential-privacy terms (epsilon, budget) and how
//!   often it may be answered, both with one spelling each.
//! - [`fields`]: which fields of a `raw` item a grant shares, and what leaving one out takes.
//! - [`sensitive`]: the shipped sensitive topics, how searches and categories match them,
//!   and the person's never-share list that every scope applies.
//! - [`token`]: bearer tokens, macaroon-style HMAC-SHA256 chains with caveats.
//! - [`jws`]: Ed25519 JWS compact serialization and JWKs with RFC 7638 thumbprints.
//! - [`slice`](mod@slice): the signed slice payload and its verification by its recipient.
//! - [`bundle`]: the grant bundle handed to a marketer.
//! - [`problem`]: RFC 9457 problem details, the one error shape of the HTTP API.
//! - [`hex`](mod@hex): hexadecimal both ways, for fingerprints, derived ids and test vectors.
//!
//! ## Invariants
//!
//! - No I/O: no sockets, no files, no clocks. Callers pass `now` in. This crate never depends
//!   on tokio, hyper or sled, so a marketer can embed it anywhere.
//! - Parse, don't validate: values of the types here are valid by construction.
//! - Secrets are compared in constant time (ring's HMAC verification).
//! - Modules depend one way, so each reads without its callers: [`bundle`] builds on
//!   [`slice`](mod@slice), [`token`] and [`jws`]; [`slice`](mod@slice) and [`token`] on
//!   [`scope`]; [`scope`] on [`signal`], [`span`], [`noise`], [`rate`] and [`sensitive`]
//!   (the never-share list every scope carries); [`sensitive`] on [`signal`];
//!   [`hex`](mod@hex) and the helpers in
//!   this file on nothing of ours. A check that needs a bundle's fields takes them as
//!   arguments ([`slice::Expected`]).

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))] // tests unwrap: a panic is their failure report

pub mod bundle;
pub mod fields;
#[doc(hidden)]
pub mod fuzz;
pub mod hex;
pub mod jws;
pub mod noise;
pub mod problem;
pub mod push;
pub mod rate;
pub mod receipt;
pub mod request;
pub mod scope;
pub mod sensitive;
pub mod signal;
pub mod slice;
pub mod span;
pub mod token;
pub mod webhook;

/// Base64url without padding, the encoding JOSE and our tokens use.
pub(crate) mod b64 {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text).ok()
    }
}

/// Lowercase hexadecimal of `bytes`, the way fingerprints and derived ids are written:
/// [`hex::encode`] under the short name its many callers use.
pub use self::hex::encode as hex;

/// Whether `c` is a control character or a bidirectional mark, override or isolate: a
/// character that changes how the text around it is shown. Signals holding one are refused,
/// so that what a person reads in a terminal or a popup is what was stored.
pub fn is_control_or_bidi(c: char) -> bool {
    c.is_control() || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// [`is_control_or_bidi`], or a character that shows nothing: zero-width and invisible
/// characters, line and paragraph separators. For short names a person types or reads as an
/// identity (a marketer, an audience), where a hidden character could make two look alike.
/// Page text (product names) often holds zero-width characters harmlessly, so signals are
/// held only to the narrower rule.
pub fn is_hidden_or_control(c: char) -> bool {
    is_control_or_bidi(c) || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// RFC 3339 timestamps in UTC, the only time format on the wire.
pub mod timestamp {
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    /// Formats `at` as RFC 3339 in UTC (`2026-11-20T10:00:00Z`).
    pub fn format(at: OffsetDateTime) -> String {
        // Formatting a UTC OffsetDateTime with a four-digit year as RFC 3339 cannot fail;
        // years outside 0..=9999 are refused by `parse`, the only way values get in.
        at.checked_to_offset(UtcOffset::UTC).and_then(|utc| utc.format(&Rfc3339).ok()).unwrap_or_else(|| String::from("invalid-time"))
    }

    /// Parses an RFC 3339 timestamp (any offset) into UTC.
    pub fn parse(text: &str) -> Option<OffsetDateTime> {
        let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        // Checked: converting `9999-12-31T23:59:59-01:00` to UTC leaves the representable years.
        let utc = at.checked_to_offset(UtcOffset::UTC)?;
        (1970..=9999).contains(&utc.year()).then_some(utc)
    }

    /// Serde adapter for RFC 3339 fields.
    pub mod serde {
        use serde::{de::Error, Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        /// Writes `at` as [`super::format`] does.
        pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&super::format(*at))
        }

        /// Reads a timestamp as [`super::parse`] does, refusing what it refuses.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text).ok_or_else(|| D::Error::custom("not an RFC 3339 timestamp"))
        }
    }
}

/// Every parser of untrusted input, fed hostile and mutated input: none may panic. A
/// deterministic stand-in for the fuzz targets, run on every test run.
#[cfg(test)]
mod layout;

#[cfg(test)]
mod text_tests {
    #[test]
    fn control_and_bidi_characters() {
        for c in ['\u{0}', '\u{1b}', '\u{85}', '\u{61c}', '\u{200e}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            assert!(super::is_control_or_bidi(c), "{:?}", c);
        }
        for c in ['a', '\u{200b}', '\u{feff}', '\u{2028}', '漢'] {
            assert!(!super::is_control_or_bidi(c), "{:?}", c);
        }
    }

    #[test]
    fn hidden_and_control_characters() {
        for c in ['\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{61c}', '\u{200b}', '\u{200e}', '\u{2028}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{feff}'] {
            assert!(super::is_hidden_or_control(c), "{:?}", c);
        }
        for c in ['a', ' ', 'é', '€', '>', '\u{3000}', '\u{2070}', '漢'] {
            assert!(!super::is_hidden_or_control(c), "{:?}", c);
        }
    }
}

#[cfg(test)]
mod hostile {
    use crate::{b64, bundle, hex, jws, push, request, scope, signal, span, timestamp, token, webhook};

    /// The regressions found so far, then seeds for mutation.
    const SEEDS: &[&str] = &[
        "window=1é",
        "expires=9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59-01:00",
        "0000-01-01T00:00:00+23:59",
        "1970-01-01T00:00:00+01:00",
        r#"{"kind":"cart","at":"9999-12-31T23:30:00Z","merchant":"s.example","currency":"EUR","items":[]}"#,
        r#"{"kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"bing.com"}"#,
        r#"{"kind":"purchase","at":"2026-11-21T09:00:00Z","merchant":"shop.example","currency":"EUR","total":"1","order_id":"A","items":[{"name":"x","price":"1","quantity":18446744073709551615}]}"#,
        "kinds=search,cart&since=2026-01-01T00:00:00Z&limit=4294967296&cursor=%FF",
        "30d",
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
        request::tests::PUSH,
        r#"{"type":"grant.revoked","timestamp":"2026-11-23T12:00:00Z","data":{"grant_id":"g_000102030405060708090a0b","receipt":"a.b.c"}}"#,
        "v1a,AAAA v1,x 1795392000 s_00",
    ];

    /// xorshift64*: reproducible, good enough to scramble bytes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const SPICE: &[&str] = &["é", "\u{10FFFF}", "\0", "-", "+", ":", "=", ",", ".", "9999", "-01:00", "\"", "{", "}", "[", "]", "%", "ff", "\\u0000"];

    fn mutate(rng: &mut Rng, seed: &str) -> String {
        let mut s: Vec<char> = seed.chars().collect();
        for _ in 0..=rng.below(4) {
            match rng.below(3) {
                0 if !s.is_empty() => {
                    let at = rng.below(s.len());
                    s.remove(at);
                }
                1 => {
                    let at = rng.below(s.len() + 1);
                    let spice: Vec<char> = SPICE[rng.below(SPICE.len())].chars().collect();
                    for (i, c) in spice.into_iter().enumerate() {
                        s.insert(at + i, c);
                    }
                }
                _ if !s.is_empty() => {
                    let at = rng.below(s.len());
                    s[at] = char::from_u32(rng.below(0x250) as u32).unwrap_or('?');
                }
                _ => {}
            }
        }
        s.into_iter().collect()
    }

    fn feed(input: &str) {
        let _ = input.parse::<span::Span>();
        let _ = timestamp::parse(input);
        let _ = hex::decode(input);
        let _ = input.parse::<scope::Caveat>();
        let _ = signal::parse_line(input, &signal::plain_domain);
        let _ = signal::parse_batch(input, &signal::plain_domain);
        let _ = signal::Signal::from_stored_json(input.as_bytes());
        let _ = bundle::GrantBundle::parse(input);
        let pairs: Vec<(&str, &str)> = input.split('&').map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
        let _ = scope::SliceQuery::from_pairs(pairs);
        let body = b64::encode(format!(r#"{{"v":1,"g":"g_000102030405060708090a0b","c":[{}]}}"#, serde_json::to_string(input).unwrap_or_default()));
        let _ = token::Token::parse(&format!("optin_{body}.{}", b64::encode([0u8; 32])));
        let _ = token::Token::parse(input);
        let jwk = jws::Jwk::ed25519(&[0u8; 32]);
        let _ = jws::verify(input, &jwk);
        let now = time::macros::datetime!(2026-11-23 12:00 UTC);
        let _ = request::Request::parse(input);
        let _ = request::verify(input, Some(input), now);
        let _ = request::verify(&format!("{}.{}.AAAA", b64::encode(input), b64::encode(request::tests::PUSH)), None, now);
        let _ = request::published(input);
        let _ = push::Event::parse(input.as_bytes());
        let _ = webhook::PublicKey::parse(input);
        let mut words = input.split(' ').map(String::from);
        let (id, timestamp) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let headers = webhook::Headers { id, timestamp, signature: input.into() };
        let key = webhook::PublicKey::parse("whpk_O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=").unwrap();
        let _ = webhook::verify(&key, &headers, input.as_bytes(), now, webhook::DEFAULT_TOLERANCE);
        let _ = push::receive_new_grant(&headers, input.as_bytes(), now, webhook::DEFAULT_TOLERANCE);
    }

    #[test]
    fn parsers_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for seed in SEEDS {
            feed(seed);
            for _ in 0..400 {
                feed(&mutate(&mut rng, seed));
            }
        }
    }
}
