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
//! - [`token`]: bearer tokens, macaroon-style HMAC-SHA256 chains with caveats.
//! - [`jws`]: Ed25519 JWS compact serialization and JWKs with RFC 7638 thumbprints.
//! - [`slice`]: the signed slice payload and its verification by a marketer.
//! - [`bundle`]: the grant bundle handed to a marketer.
//! - [`problem`]: RFC 9457 problem details, the one error shape of the HTTP API.
//!
//! ## Invariants
//!
//! - No I/O: no sockets, no files, no clocks. Callers pass `now` in. This crate never depends
//!   on tokio, hyper or sled, so a marketer can embed it anywhere.
//! - Parse, don't validate: values of the types here are valid by construction.
//! - Secrets are compared in constant time (ring's HMAC verification).

#![cfg_attr(test, allow(clippy::unwrap_used))] // tests unwrap: a panic is their failure report

pub mod bundle;
pub mod jws;
pub mod problem;
pub mod scope;
pub mod signal;
pub mod slice;
pub mod span;
pub mod token;

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

/// Lowercase hexadecimal, used for fingerprints and derived ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
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
        at.to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_else(|_| String::from("invalid-time"))
    }

    /// Parses an RFC 3339 timestamp (any offset) into UTC.
    pub fn parse(text: &str) -> Option<OffsetDateTime> {
        let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        (1970..=9999)
            .contains(&at.year())
            .then(|| at.to_offset(UtcOffset::UTC))
    }

    /// Serde adapter for RFC 3339 fields.
    pub mod serde {
        use serde::{de::Error, Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&super::format(*at))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text).ok_or_else(|| D::Error::custom("not an RFC 3339 timestamp"))
        }
    }
}
