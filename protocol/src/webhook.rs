//! Signed pushes: Standard Webhooks 1.0.0, asymmetric scheme `v1a` (Ed25519), both ways.
//!
//! A push is an HTTPS POST whose body is an event ([`crate::push`]) and whose headers are
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`. The signed bytes
//! are `{webhook-id}.{webhook-timestamp}.{body}`, exactly as sent; the signature header is a
//! space-separated list of `scheme,base64` entries, and one `v1a` entry that verifies is
//! enough (a sender rotating keys sends one per key). Base64 here is the standard alphabet
//! with padding, as the Standard Webhooks examples write it, not JOSE's base64url.
//!
//! Ids and timestamps are checked before any signature, and ids may not hold a `.`, so the
//! signed bytes split one way only. A timestamp outside the tolerance is refused: a push
//! recorded and replayed later verifies forever otherwise. Nothing secret is compared here:
//! verification is ring's Ed25519, and an inbox de-duplicates on the id it returns.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use time::{Duration, OffsetDateTime};

use crate::jws::Jwk;

/// The signature scheme of Standard Webhooks' asymmetric signatures.
pub const SCHEME: &str = "v1a";
/// The prefix of a public key written for a consumer.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// How far a push's timestamp may lie from the receiver's clock, either way, unless the
/// receiver says otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::minutes(5);

/// Limits on the headers, checked before anything is decoded.
pub mod limits {
    /// Longest `webhook-id`.
    pub const ID_CHARS: usize = 128;
    /// Most digits of `webhook-timestamp`: Unix seconds up to the year 9999.
    pub const TIMESTAMP_DIGITS: usize = 12;
    /// Longest `webhook-signature` header.
    pub const SIGNATURE_HEADER_BYTES: usize = 1024;
    /// Most entries in `webhook-signature`.
    pub const SIGNATURES: usize = 8;
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A header is malformed or too long.
    #[error("header `{header}`: {reason}")]
    Header {
        /// The header at fault.
        header: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The timestamp is outside the tolerance.
    #[error("webhook-timestamp is {seconds} s away from now, more than the {tolerance} s allowed")]
    Stale {
        /// How far from now, in seconds.
        seconds: i64,
        /// The tolerance, in seconds.
        tolerance: i64,
    },
    /// No `v1a` signature verifies with the key.
    #[error("no v1a signature verifies")]
    Signature,
    /// The public key is malformed.
    #[error("not a whpk_ Ed25519 public key: {0}")]
    Key(&'static str),
}

/// A push's unique id, `webhook-id`: 1 to 128 characters of `A-Z a-z 0-9 _ -`. The same
/// event keeps its id on every retry, so the receiver's de-duplication holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WebhookId(String);

impl WebhookId {
    /// Parses an id.
    pub fn parse(text: &str) -> Option<WebhookId> {
        let ok = (1..=limits::ID_CHARS).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        ok.then(|| WebhookId(text.to_owned()))
    }

    /// An id the caller built of characters the form allows (a grant id and a suffix).
    pub(crate) fn from_trusted(text: String) -> WebhookId {
        debug_assert!(WebhookId::parse(&text).is_some(), "{text}");
        WebhookId(text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ed25519 public key that verifies pushes, written `whpk_` and the 32 bytes in base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The public half of `key`.
    pub fn of(key: &Ed25519KeyPair) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(key.public_key().as_ref());
        PublicKey(bytes)
    }

    /// The key of a JWK, such as a grant bundle's: the key that signs a grant's slices signs
    /// its pushes.
    pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey, WebhookError> {
        let raw = jwk.public_key().map_err(|_| WebhookError::Key("the JWK is not an Ed25519 public key"))?;
        PublicKey::from_bytes(&raw)
    }

    fn from_bytes(raw: &[u8]) -> Result<PublicKey, WebhookError> {
        let bytes: [u8; 32] = raw.try_into().map_err(|_| WebhookError::Key("an Ed25519 public key is 32 bytes"))?;
        Ok(PublicKey(bytes))
    }

    /// Parses `whpk_…`.
    pub fn parse(text: &str) -> Result<PublicKey, WebhookError> {
        let body = text.strip_prefix(PUBLIC_KEY_PREFIX).ok_or(WebhookError::Key("expected the whpk_ prefix"))?;
        if body.len() > 64 {
            return Err(WebhookError::Key("too long"));
        }
        let raw = STANDARD.decode(body).map_err(|_| WebhookError::Key("not base64 with padding"))?;
        PublicKey::from_bytes(&raw)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(self.0))
    }
}

/// The three headers of a push, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`, Unix seconds.
    pub timestamp: String,
    /// `webhook-signature`: `v1a,` and the signature in base64.
    pub signature: String,
}

/// A push that verified: its id (to de-duplicate on) and when it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The push's id.
    pub id: WebhookId,
    /// Its `webhook-timestamp`.
    pub timestamp: OffsetDateTime,
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The headers of a push of `body` with id `id`, sent at `at`, signed with `key`.
pub fn sign(key: &Ed25519KeyPair, id: &WebhookId, at: OffsetDateTime, body: &[u8]) -> Headers {
    let timestamp = at.unix_timestamp().to_string();
    let sig = key.sign(&signed_content(id.as_str(), &timestamp, body));
    Headers { id: id.0.clone(), signature: format!("{SCHEME},{}", STANDARD.encode(sig.as_ref())), timestamp }
}

/// Verifies a push received at `now`: the id's form, the timestamp within `tolerance` of
/// `now` either way ([`DEFAULT_TOLERANCE`] unless there is reason), and one `v1a` signature
/// over `{id}.{timestamp}.{body}` that verifies with `key`. Entries of other schemes are
/// skipped, as Standard Webhooks asks.
pub fn verify(key: &PublicKey, headers: &Headers, body: &[u8], now: OffsetDateTime, tolerance: Duration) -> Result<Verified, WebhookError> {
    let header = |header, reason| WebhookError::Header { header, reason };
    let id = WebhookId::parse(&headers.id).ok_or(header("webhook-id", "expected 1 to 128 characters of A-Z a-z 0-9 _ -"))?;
    let ts = &headers.timestamp;
    if ts.is_empty() || ts.len() > limits::TIMESTAMP_DIGITS || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(header("webhook-timestamp", "expected Unix seconds, digits only"));
    }
    let timestamp = ts
        .parse::<i64>()
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(header("webhook-timestamp", "expected Unix seconds, digits only"))?;
    let away = (timestamp - now).abs();
    if away > tolerance.abs() {
        return Err(WebhookError::Stale { seconds: away.whole_seconds(), tolerance: tolerance.abs().whole_seconds() });
    }
    if headers.signature.len() > limits::SIGNATURE_HEADER_BYTES {
        return Err(header("webhook-signature", "too long"));
    }
    let entries: Vec<&str> = headers.signature.split(' ').filter(|e| !e.is_empty()).collect();
    if entries.len() > limits::SIGNATURES {
        return Err(header("webhook-signature", "too many signatures"));
    }
    let content = signed_content(&headers.id, ts, body);
    let public = UnparsedPublicKey::new(&signature::ED25519, key.as_bytes());
    let verified = entries
        .iter()
        .filter_map(|e| e.strip_prefix("v1a,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| sig.len() == 64 && public.verify(&content, &sig).is_ok());
    if verified {
        Ok(Verified { id, timestamp })
    } else {
        Err(WebhookError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn id() -> WebhookId {
        WebhookId::parse("s_00000000000000000000000000000000").unwrap()
    }

    #[test]
    fn signs_and_verifies() {
        let key = key(1);
        let headers = sign(&key, &id(), NOW, b"{}");
        assert!(headers.signature.starts_with("v1a,") && headers.signature.len() == 4 + 88, "{}", headers.signature);
        let ok = verify(&PublicKey::of(&key), &headers, b"{}", NOW + Duration::minutes(4), DEFAULT_TOLERANCE).unwrap();
        assert_eq!((ok.id, ok.timestamp), (id(), NOW));
    }

    #[test]
    fn public_keys_round_trip_and_match_the_jwk() {
        let key = key(1);
        let public = PublicKey::of(&key);
        let text = public.to_string();
        assert!(text.starts_with("whpk_") && text.ends_with('='), "{text}");
        assert_eq!(PublicKey::parse(&text).unwrap(), public);
        assert_eq!(PublicKey::from_jwk(&Jwk::ed25519(key.public_key().as_ref())).unwrap(), public);
        for bad in ["", "whpk_", "whsk_AAAA", &text.replace("whpk_", "whpk_A"), text.trim_end_matches('='), &text.replace('=', "")] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_one_v1a_signature_suffices_and_other_schemes_are_skipped() {
        let (old, new) = (key(1), key(2));
        let a = sign(&old, &id(), NOW, b"body").signature;
        let b = sign(&new, &id(), NOW, b"body").signature;
        let both = Headers { signature: format!("v1,{} {a} {b}", STANDARD.encode([7u8; 32])), ..sign(&new, &id(), NOW, b"body") };
        for key in [&old, &new] {
            assert!(verify(&PublicKey::of(key), &both, b"body", NOW, DEFAULT_TOLERANCE).is_ok());
        }
        assert_eq!(verify(&PublicKey::of(&key(3)), &both, b"body", NOW, DEFAULT_TOLERANCE), Err(WebhookError::Signature));
    }

    #[test]
    fn rejects_bad_pushes() {
        let key = key(1);
        let public = PublicKey::of(&key);
        let good = sign(&key, &id(), NOW, b"body");
        let with = |f: &dyn Fn(&mut Headers)| {
            let mut h = good.clone();
            f(&mut h);
            h
        };
        let other_sig = sign(&key, &id(), NOW, b"other").signature;
        let cases: Vec<(&str, Headers, &[u8], OffsetDateTime, &str)> = vec![
            ("another body", good.clone(), b"body ", NOW, "no v1a signature verifies"),
            ("another id", with(&|h| h.id = "s_1".into()), b"body", NOW, "no v1a signature verifies"),
            ("an id with a dot", with(&|h| h.id = "a.b".into()), b"body", NOW, "webhook-id"),
            ("an empty id", with(&|h| h.id = String::new()), b"body", NOW, "webhook-id"),
            ("a long id", with(&|h| h.id = "a".repeat(129)), b"body", NOW, "webhook-id"),
            ("another timestamp", with(&|h| h.timestamp = (NOW.unix_timestamp() + 1).to_string()), b"body", NOW, "no v1a signature verifies"),
            ("a signed timestamp", with(&|h| h.timestamp = format!("+{}", NOW.unix_timestamp())), b"body", NOW, "webhook-timestamp"),
            ("a fractional timestamp", with(&|h| h.timestamp = format!("{}.5", NOW.unix_timestamp())), b"body", NOW, "webhook-timestamp"),
            ("a huge timestamp", with(&|h| h.timestamp = "9".repeat(13)), b"body", NOW, "webhook-timestamp"),
            ("too old", good.clone(), b"body", NOW + Duration::seconds(301), "more than the 300 s allowed"),
            ("too new", good.clone(), b"body", NOW - Duration::seconds(301), "more than the 300 s allowed"),
            ("the v1 scheme only", with(&|h| h.signature = h.signature.replace("v1a,", "v1,")), b"body", NOW, "no v1a signature verifies"),
            ("base64url instead of base64", with(&|h| h.signature = h.signature.replace('+', "-").replace('/', "_")), b"body", NOW, "no v1a"),
            ("no padding", with(&|h| h.signature = h.signature.trim_end_matches('=').into()), b"body", NOW, "no v1a signature verifies"),
            ("another body's signature", with(&|h| h.signature = other_sig.clone()), b"body", NOW, "no v1a signature verifies"),
            ("an empty signature header", with(&|h| h.signature = String::new()), b"body", NOW, "no v1a signature verifies"),
            ("a long signature header", with(&|h| h.signature = format!("{} {}", "x".repeat(1024), h.signature)), b"body", NOW, "too long"),
            ("too many signatures", with(&|h| h.signature = format!("{} {}", "v1a,x ".repeat(8), h.signature)), b"body", NOW, "too many"),
        ];
        for (name, headers, body, now, because) in cases {
            let err = verify(&public, &headers, body, now, DEFAULT_TOLERANCE).expect_err(name);
            assert!(err.to_string().contains(because), "{name}: refused as `{err}`, expected `{because}`");
        }
        assert!(verify(&public, &good, b"body", NOW + Duration::seconds(300), DEFAULT_TOLERANCE).is_ok(), "the tolerance is inclusive");
    }
}
