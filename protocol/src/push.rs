//! Push events: what an agent posts to a marketer's inbox for a grant made from a `push`
//! request (SPEC.md, "Push events").
//!
//! Each event is a JSON body `{"type","timestamp","data"}` as Standard Webhooks recommends,
//! posted with the headers of [`crate::webhook`] and signed with the grant's own key, the key
//! of its bundle. The first event of a grant, `grant.created`, carries that bundle: the inbox
//! learns the key from it and pins it, and every later event of the grant must verify with
//! it. Event ids are fixed by the event (a slice's `jti`; the grant id and what happened), so
//! a retry after a crash carries the same id and the inbox stores the event once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::bundle::GrantBundle;
use crate::jws::Jwk;
use crate::receipt::{self, ConsentState, ReceiptError};
use crate::request::shown;
use crate::scope::GrantId;
use crate::timestamp;
use crate::webhook::{self, Headers, PublicKey, WebhookError, WebhookId};

/// Largest event body, in bytes: a slice of the largest size a JWS may have, and room around it.
pub const MAX_BODY_BYTES: usize = crate::jws::MAX_LEN + 64 * 1024;

/// What happened, and what `data` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Data {
    /// The person approved a request: the grant's bundle and the receipt of the consent.
    GrantCreated {
        /// The grant bundle, as a pull grant's marketer would get it.
        bundle: Box<GrantBundle>,
        /// The consent receipt, a JWS ([`crate::receipt`]).
        receipt: String,
    },
    /// A slice, cut on the grant's schedule.
    SliceDelivered {
        /// The grant.
        grant_id: GrantId,
        /// The slice's `jti`, also the push's id.
        jti: WebhookId,
        /// The slice, a compact JWS ([`crate::slice`]).
        slice: String,
    },
    /// The person revoked the grant: nothing more follows.
    GrantRevoked {
        /// The grant.
        grant_id: GrantId,
        /// The receipt, its last event `dpv:ConsentWithdrawn`.
        receipt: String,
    },
    /// The grant reached its end: nothing more follows.
    GrantExpired {
        /// The grant.
        grant_id: GrantId,
        /// The receipt, its last event `dpv:ConsentExpired`.
        receipt: String,
    },
}

/// One push event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When it happened.
    pub timestamp: OffsetDateTime,
    /// What happened.
    pub data: Data,
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The signature headers do not verify.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// The body is not an event.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The JSON path at fault.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// The `webhook-id` is not the id the event must have.
    #[error("webhook-id `{found}` is not the event's id `{expected}`")]
    Id {
        /// The event's id.
        expected: String,
        /// The header's.
        found: String,
    },
    /// The receipt inside does not verify, or says something else than the event.
    #[error("the receipt: {0}")]
    Receipt(ReceiptError),
    /// The receipt belongs to another grant or state than the event.
    #[error("the receipt does not match the event: {0}")]
    Mismatch(&'static str),
}

fn at(field: impl Into<String>, reason: impl Into<String>) -> PushError {
    PushError::Field { field: field.into(), reason: reason.into() }
}

impl Data {
    /// The event type, as `type` writes it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::GrantCreated { .. } => "grant.created",
            Data::SliceDelivered { .. } => "slice.delivered",
            Data::GrantRevoked { .. } => "grant.revoked",
            Data::GrantExpired { .. } => "grant.expired",
        }
    }

    /// The grant the event is about.
    pub fn grant_id(&self) -> &GrantId {
        match self {
            Data::GrantCreated { bundle, .. } => &bundle.grant_id,
            Data::SliceDelivered { grant_id, .. } | Data::GrantRevoked { grant_id, .. } | Data::GrantExpired { grant_id, .. } => grant_id,
        }
    }
}

/// An event body as written: a struct, so that its members keep this order whatever
/// features serde_json is built with.
#[derive(Serialize)]
struct Body<T: Serialize> {
    #[serde(rename = "type")]
    type_: &'static str,
    timestamp: String,
    data: T,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatedData {
    bundle: GrantBundle,
    receipt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SliceData {
    grant_id: GrantId,
    jti: String,
    slice: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndedData {
    grant_id: GrantId,
    receipt: String,
}

impl Event {
    /// The push's `webhook-id`: the slice's `jti`, or the grant id and what happened
    /// (`g_…-created`, `g_…-revoked`, `g_…-expired`), each the same on every retry.
    pub fn webhook_id(&self) -> WebhookId {
        let grant = self.data.grant_id().as_str();
        let id = match &self.data {
            Data::SliceDelivered { jti, .. } => return jti.clone(),
            Data::GrantCreated { .. } => format!("{grant}-created"),
            Data::GrantRevoked { .. } => format!("{grant}-revoked"),
            Data::GrantExpired { .. } => format!("{grant}-expired"),
        };
        // A grant id is `g_` and 24 hex digits, so these ids always have the allowed form.
        WebhookId::from_trusted(id)
    }

    /// The body to post, compact JSON, members in the order `type`, `timestamp`, `data`.
    pub fn to_json(&self) -> String {
        let (type_, timestamp) = (self.data.type_name(), timestamp::format(self.timestamp));
        let body = match &self.data {
            Data::GrantCreated { bundle, receipt } => {
                serde_json::to_string(&Body { type_, timestamp, data: CreatedData { bundle: (**bundle).clone(), receipt: receipt.clone() } })
            }
            Data::SliceDelivered { grant_id, jti, slice } => {
                serde_json::to_string(&Body { type_, timestamp, data: SliceData { grant_id: grant_id.clone(), jti: jti.to_string(), slice: slice.clone() } })
            }
            Data::GrantRevoked { grant_id, receipt } | Data::GrantExpired { grant_id, receipt } => {
                serde_json::to_string(&Body { type_, timestamp, data: EndedData { grant_id: grant_id.clone(), receipt: receipt.clone() } })
            }
        };
        // Strings, numbers and lists of them: serializing cannot fail.
        body.unwrap_or_default()
    }

    /// Reads an event body, all or nothing. It checks nothing a signature vouches for: see
    /// [`receive`] and [`receive_new_grant`].
    pub fn parse(body: &[u8]) -> Result<Event, PushError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(PushError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| at(".", "not UTF-8"))?;
        let (value, duplicate) = crate::signal::read_json_once(text).map_err(|e| at(".", format!("not JSON: {e}")))?;
        if let Some(path) = duplicate {
            return Err(at(shown(&path), "given more than once"));
        }
        let Value::Object(mut top) = value else { return Err(at(".", "an event must be a JSON object")) };
        if let Some(k) = top.keys().filter(|k| !["type", "timestamp", "data"].contains(&k.as_str())).min() {
            return Err(at(shown(k), "unknown field"));
        }
        let kind = match top.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(at("type", "must be a string")),
            None => return Err(at("type", "is required")),
        };
        let timestamp = match top.get("timestamp") {
            Some(Value::String(s)) => timestamp::parse(s).ok_or_else(|| at("timestamp", "not an RFC 3339 timestamp"))?,
            Some(_) => return Err(at("timestamp", "must be a string")),
            None => return Err(at("timestamp", "is required")),
        };
        let data = top.remove("data").ok_or_else(|| at("data", "is required"))?;
        let field = |e: serde_json::Error| at("data", shown(&e.to_string()));
        let data = match kind.as_str() {
            "grant.created" => {
                let d: CreatedData = serde_json::from_value(data).map_err(field)?;
                // The bundle's own checks (its key, token, pinned certificate's form).
                let bundle = GrantBundle::parse(&serde_json::to_string(&d.bundle).unwrap_or_default()).map_err(|e| at("data.bundle", e.to_string()))?;
                Data::GrantCreated { bundle: Box::new(bundle), receipt: d.receipt }
            }
            "slice.delivered" => {
                let d: SliceData = serde_json::from_value(data).map_err(field)?;
                let jti = WebhookId::parse(&d.jti).ok_or_else(|| at("data.jti", "not a slice id"))?;
                Data::SliceDelivered { grant_id: d.grant_id, jti, slice: d.slice }
            }
            "grant.revoked" | "grant.expired" => {
                let d: EndedData = serde_json::from_value(data).map_err(field)?;
                if kind == "grant.revoked" {
                    Data::GrantRevoked { grant_id: d.grant_id, receipt: d.receipt }
                } else {
                    Data::GrantExpired { grant_id: d.grant_id, receipt: d.receipt }
                }
            }
            other => return Err(at("type", format!("unknown event type `{}`", shown(other)))),
        };
        Ok(Event { timestamp, data })
    }
}

/// A push that verified and was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its `webhook-id`, to de-duplicate on.
    pub id: WebhookId,
    /// Its `webhook-timestamp`.
    pub sent_at: OffsetDateTime,
    /// The event.
    pub event: Event,
}

/// Receives a push for a grant whose key the inbox pinned from its `grant.created` (the
/// bundle's `jwk`): the signature headers first, then the body, the id, and for an ended
/// grant its receipt. A slice inside is the caller's to verify with the bundle
/// ([`GrantBundle::verify_slice`]), and its `jti` to compare with the event's.
pub fn receive(key: &Jwk, headers: &Headers, body: &[u8], now: OffsetDateTime, tolerance: Duration) -> Result<Received, PushError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PushError::TooLarge);
    }
    let public = PublicKey::from_jwk(key)?;
    let verified = webhook::verify(&public, headers, body, now, tolerance)?;
    let event = Event::parse(body)?;
    check(&event, &verified.id, key)?;
    Ok(Received { id: verified.id, sent_at: verified.timestamp, event })
}

/// Receives the first push of a grant, `grant.created`, whose key is the one its bundle
/// carries. Nothing vouches for that key but the push itself: what it proves is that every
/// later event of the grant comes from whoever made this one, so pin the bundle's key and
/// receive the grant's later events with [`receive`].
pub fn receive_new_grant(headers: &Headers, body: &[u8], now: OffsetDateTime, tolerance: Duration) -> Result<Received, PushError> {
    let event = Event::parse(body)?;
    let Data::GrantCreated { bundle, .. } = &event.data else {
        return Err(at("type", "a grant's first push is grant.created"));
    };
    let key = bundle.jwk.clone();
    let verified = webhook::verify(&PublicKey::from_jwk(&key)?, headers, body, now, tolerance)?;
    check(&event, &verified.id, &key)?;
    Ok(Received { id: verified.id, sent_at: verified.timestamp, event })
}

/// The id is the event's, and a receipt inside verifies with the grant's key and matches.
fn check(event: &Event, id: &WebhookId, key: &Jwk) -> Result<(), PushError> {
    let expected = event.webhook_id();
    if *id != expected {
        return Err(PushError::Id { expected: expected.to_string(), found: id.to_string() });
    }
    let (receipt, state) = match &event.data {
        Data::GrantCreated { receipt, .. } => (receipt, ConsentState::Given),
        Data::GrantRevoked { receipt, .. } => (receipt, ConsentState::Withdrawn),
        Data::GrantExpired { receipt, .. } => (receipt, ConsentState::Expired),
        Data::SliceDelivered { .. } => return Ok(()),
    };
    let receipt = receipt::verify(receipt, key).map_err(PushError::Receipt)?;
    if receipt.record.record_id != *event.data.grant_id() {
        return Err(PushError::Mismatch("it is the record of another grant"));
    }
    if receipt.state() != Some(state) {
        return Err(PushError::Mismatch("its last event is not the one the push announces"));
    }
    // The receipt is the consent of the marketer the bundle is for, not of another.
    if let Data::GrantCreated { bundle, .. } = &event.data {
        if receipt.party_identification.iter().any(|p| p.party_id != bundle.marketer) {
            return Err(PushError::Mismatch("its controller is not the marketer of the bundle"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use time::macros::datetime;

    use super::*;
    use crate::webhook::DEFAULT_TOLERANCE;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn bundle(key: &Ed25519KeyPair) -> GrantBundle {
        let grant_id = GrantId::parse("g_000102030405060708090a0b").unwrap();
        GrantBundle {
            version: crate::bundle::VERSION,
            token: crate::token::Token::mint(&[1u8; 32], &grant_id).encode(),
            grant_id,
            marketer: "acme.example".into(),
            purpose: "Show you running-shoe offers that fit what you look for.".into(),
            issuer: "urn:optin:agent:p_00000000000000000000000000000000".into(),
            agent_url: None,
            cert_sha256: None,
            jwk: Jwk::ed25519(key.public_key().as_ref()),
            terms: crate::scope::Terms {
                audience: "acme.example".into(),
                kinds: "cart".parse().unwrap(),
                granularity: crate::scope::Granularity::Category,
                window: "30d".parse().unwrap(),
                expires_at: datetime!(2027-02-22 0:00 UTC),
                categories: None,
                merchants: None,
                fields: None,
                rate: None,
                noise: None,
            },
            receipt: None,
        }
    }

    fn events(key: &Ed25519KeyPair) -> Vec<Event> {
        let (receipt, _) = crate::receipt::tests::receipt();
        let grant_id = GrantId::parse("g_000102030405060708090a0b").unwrap();
        vec![
            Event { timestamp: NOW, data: Data::GrantCreated { bundle: Box::new(bundle(key)), receipt: receipt.sign(key) } },
            Event {
                timestamp: NOW,
                data: Data::SliceDelivered {
                    grant_id: grant_id.clone(),
                    jti: WebhookId::parse("s_000102030405060708090a0b0c0d0e0f").unwrap(),
                    slice: "a.b.c".into(),
                },
            },
            Event { timestamp: NOW, data: Data::GrantRevoked { grant_id: grant_id.clone(), receipt: receipt.ended(ConsentState::Withdrawn, NOW).sign(key) } },
            Event { timestamp: NOW, data: Data::GrantExpired { grant_id, receipt: receipt.ended(ConsentState::Expired, NOW).sign(key) } },
        ]
    }

    #[test]
    fn every_event_round_trips_and_is_received() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        for event in events(&key) {
            let body = event.to_json();
            assert!(body.starts_with(&format!(r#"{{"type":"{}","timestamp":"2026-11-23T12:00:00Z","data":{{"#, event.data.type_name())), "{body}");
            assert_eq!(Event::parse(body.as_bytes()).unwrap(), event);
            let headers = webhook::sign(&key, &event.webhook_id(), NOW, body.as_bytes());
            let got = receive(&jwk, &headers, body.as_bytes(), NOW, DEFAULT_TOLERANCE).unwrap();
            assert_eq!((got.id, got.event), (event.webhook_id(), event.clone()));
            let first = receive_new_grant(&headers, body.as_bytes(), NOW, DEFAULT_TOLERANCE);
            assert_eq!(first.is_ok(), matches!(event.data, Data::GrantCreated { .. }), "{}", event.data.type_name());
        }
    }

    #[test]
    fn rejects_pushes_that_do_not_hold_together() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let [created, slice, revoked, expired] = <[Event; 4]>::try_from(events(&key)).unwrap();
        let send = |event: &Event, id: &str| {
            let body = event.to_json();
            (webhook::sign(&key, &WebhookId::parse(id).unwrap(), NOW, body.as_bytes()), body)
        };
        // An id that is not the event's: a replayed slice under a fresh id would be stored twice.
        let (headers, body) = send(&slice, "s_ffffffffffffffffffffffffffffffff");
        assert!(matches!(receive(&jwk, &headers, body.as_bytes(), NOW, DEFAULT_TOLERANCE), Err(PushError::Id { .. })));
        // A revocation carrying the grant's first receipt, or an expiry carrying a withdrawal.
        let Data::GrantCreated { receipt: given, .. } = &created.data else { unreachable!() };
        let Data::GrantRevoked { receipt: withdrawn, .. } = &revoked.data else { unreachable!() };
        for (event, receipt) in [(&revoked, given), (&expired, withdrawn)] {
            let mut event = event.clone();
            match &mut event.data {
                Data::GrantRevoked { receipt: r, .. } | Data::GrantExpired { receipt: r, .. } => *r = receipt.clone(),
                _ => unreachable!(),
            }
            let (headers, body) = send(&event, event.webhook_id().as_str());
            assert!(matches!(receive(&jwk, &headers, body.as_bytes(), NOW, DEFAULT_TOLERANCE), Err(PushError::Mismatch(_))), "{}", event.data.type_name());
        }
        // A grant.created whose receipt another key signed.
        let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
        let mut forged = created.clone();
        if let Data::GrantCreated { receipt, .. } = &mut forged.data {
            *receipt = crate::receipt::tests::receipt().0.sign(&other);
        }
        let (headers, body) = send(&forged, forged.webhook_id().as_str());
        assert!(matches!(receive_new_grant(&headers, body.as_bytes(), NOW, DEFAULT_TOLERANCE), Err(PushError::Receipt(_))));
        // A grant.created whose bundle is for one marketer and whose receipt is another's.
        let mut elsewhere = created.clone();
        if let Data::GrantCreated { bundle, .. } = &mut elsewhere.data {
            bundle.marketer = "globex.example".into();
        }
        let (headers, body) = send(&elsewhere, elsewhere.webhook_id().as_str());
        assert!(matches!(receive_new_grant(&headers, body.as_bytes(), NOW, DEFAULT_TOLERANCE), Err(PushError::Mismatch(_))));
        for (name, body, field) in [
            ("unknown type", r#"{"type":"grant.paused","timestamp":"2026-11-23T12:00:00Z","data":{}}"#, "type"),
            ("unknown member", r#"{"type":"grant.revoked","timestamp":"2026-11-23T12:00:00Z","data":{},"x":1}"#, "x"),
            ("repeated type", r#"{"type":"grant.revoked","type":"grant.expired","timestamp":"2026-11-23T12:00:00Z","data":{}}"#, "type"),
            (
                "unknown data member",
                r#"{"type":"grant.revoked","timestamp":"2026-11-23T12:00:00Z","data":{"grant_id":"g_000102030405060708090a0b","receipt":"a.b.c","why":"x"}}"#,
                "data",
            ),
            ("bad time", r#"{"type":"grant.revoked","timestamp":"now","data":{}}"#, "timestamp"),
        ] {
            match Event::parse(body.as_bytes()) {
                Err(PushError::Field { field: f, .. }) => assert_eq!(f, field, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
