//! Consent receipts: the person's consent to one request, as a record a marketer can keep
//! and show (SPEC.md, "Consent receipts").
//!
//! The record follows the structure of ISO/IEC TS 27560 (consent record information
//! structure) with terms of the W3C Data Privacy Vocabulary: a record header, the processing
//! consented to, the parties, and the consent's events. It holds only what the agent knows to
//! be true: what the request said, what the person approved, and on which day. It is a
//! compact JWS signed with the grant's own key, so a marketer verifies it with the key of
//! the grant bundle, and a receipt can pass for neither a slice nor a request (`typ`).
//!
//! Events carry a day, not an instant. A receipt is a document a marketer keeps and may pass
//! on; the second at which a person approved two requests would tell two marketers comparing
//! receipts that one person made both grants, as expiry instants would (SPEC.md, "Grants
//! and scope").

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::jws::compact;
use crate::jws::{Jwk, JwsError};
use crate::request::{self, PurposeCode, Request, RequestId};
use crate::scope::{GrantId, Granularity, Terms};
use crate::signal::Kinds;
use crate::span::Span;

/// The `typ` header of a receipt.
pub const TYP: &str = "optin-receipt+jwt";
/// The version of this record format, in `record.schema_version`.
pub const SCHEMA_VERSION: &str = "optin-receipt/1";
/// The DPV lawful basis of every grant.
pub const LAWFUL_BASIS: &str = "dpv:Consent";
/// The DPV kind of consent optin records: the person acts (`optin approve`) on a request
/// shown to them.
pub const CONSENT_TYPE: &str = "dpv:ExplicitlyExpressedConsent";
/// The DPV role of the marketer.
pub const CONTROLLER_ROLE: &str = "dpv:DataController";
/// Largest receipt accepted for verification, in bytes.
pub const MAX_LEN: usize = 64 * 1024;

/// Where a consent stands, as a DPV consent status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsentState {
    /// The person approved the request.
    #[serde(rename = "dpv:ConsentGiven")]
    Given,
    /// The person revoked the grant.
    #[serde(rename = "dpv:ConsentWithdrawn")]
    Withdrawn,
    /// The grant reached its end.
    #[serde(rename = "dpv:ConsentExpired")]
    Expired,
}

/// The record header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordHeader {
    /// [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// The record's id: the grant's id, one record per grant whose events grow.
    pub record_id: GrantId,
    /// The person, by the grant's own pseudonym (a slice's `sub`): never the same for two
    /// grants.
    pub pii_principal_id: String,
}

/// The processing consented to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    /// The marketer's privacy policy, as the request gave it; absent when there was no
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_notice: Option<String>,
    /// The one purpose of the grant.
    pub purposes: Vec<ProcessingPurpose>,
}

/// One purpose and what it covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingPurpose {
    /// The purpose in the marketer's words.
    pub purpose: String,
    /// Its DPV purpose code, from the request; absent when there was none, since the person
    /// who types a grant states its purpose in words only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_type: Option<PurposeCode>,
    /// [`LAWFUL_BASIS`].
    pub lawful_basis: String,
    /// The kinds of signal shared.
    pub pii_information: Kinds,
    /// The marketer's domain (a `party_id`).
    pub pii_controllers: Vec<String>,
    /// The terms approved.
    pub terms: ConsentedTerms,
}

/// The terms the person approved, as the grant enforces them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentedTerms {
    /// How much of each signal.
    pub granularity: Granularity,
    /// How far back a slice may reach.
    pub window: Span,
    /// When the grant ends (a UTC midnight).
    #[serde(with = "crate::timestamp::serde")]
    pub expires_at: OffsetDateTime,
    /// Category prefixes, if the approval had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Merchants, if the approval had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// At `raw`, the only fields of each signal shared, if the approval named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// At most this many slices an hour or a day, if the approval set a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<crate::rate::Rate>,
    /// At `aggregate`, the noise each count is made with and the budget the grant spends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<crate::noise::Noise>,
}

/// A party: the marketer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Its domain.
    pub party_id: String,
    /// Its name.
    pub party_name: String,
    /// [`CONTROLLER_ROLE`].
    pub party_role: String,
    /// Its contact, as the request gave it; absent when there was no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party_contact: Option<String>,
}

/// One event of the consent's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentEvent {
    /// The UTC day it happened, `YYYY-MM-DD`.
    #[serde(with = "day")]
    pub event_time: Date,
    /// [`CONSENT_TYPE`].
    #[serde(rename = "type")]
    pub type_: String,
    /// The state it led to.
    pub state: ConsentState,
}

/// The request a receipt answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answering {
    /// The request's id.
    pub id: RequestId,
    /// The marketer's domain, which names the request together with its id.
    pub marketer: String,
}

/// A consent receipt (the JWS payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The record header.
    pub record: RecordHeader,
    /// The request answered; absent for a grant the person made with `optin grant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Answering>,
    /// What is processed, and why.
    pub pii_processing: Processing,
    /// Who processes it.
    pub party_identification: Vec<Party>,
    /// What happened to the consent, oldest first: given, then withdrawn or expired.
    pub event: Vec<ConsentEvent>,
}

/// What a grant was made on: a marketer's request the person approved, or the person's own
/// `optin grant`, which names the marketer and the purpose in the person's words.
#[derive(Clone, Copy, Debug)]
pub enum Basis<'a> {
    /// The request approved.
    Request(&'a Request),
    /// A grant the person made unasked.
    Owner {
        /// The marketer, as the person named it (the grant's audience).
        marketer: &'a str,
        /// The purpose, in the person's words.
        purpose: &'a str,
    },
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not a receipt JWS signed by the pinned key.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The payload is not a receipt.
    #[error("not a consent receipt: {0}")]
    Payload(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

impl Receipt {
    /// The receipt of a grant `grant_id` made on `basis` with `terms`, for the person known to
    /// this grant as `principal`, on the day of `now`.
    pub fn given(basis: Basis<'_>, grant_id: &GrantId, principal: &str, terms: &Terms, now: OffsetDateTime) -> Receipt {
        let (request, privacy_notice, purpose, purpose_type, party) = match basis {
            Basis::Request(request) => {
                let m = &request.marketer;
                (
                    Some(Answering { id: request.id.clone(), marketer: m.domain.clone() }),
                    Some(m.privacy_policy.to_string()),
                    request.purpose.text.clone(),
                    Some(request.purpose.code.clone()),
                    Party {
                        party_id: m.domain.clone(),
                        party_name: m.name.clone(),
                        party_role: CONTROLLER_ROLE.into(),
                        party_contact: Some(m.contact.clone()),
                    },
                )
            }
            // The person named the marketer once; it is the party's id and name alike.
            Basis::Owner { marketer, purpose } => (
                None,
                None,
                purpose.to_owned(),
                None,
                Party { party_id: marketer.to_owned(), party_name: marketer.to_owned(), party_role: CONTROLLER_ROLE.into(), party_contact: None },
            ),
        };
        Receipt {
            record: RecordHeader { schema_version: SCHEMA_VERSION.into(), record_id: grant_id.clone(), pii_principal_id: principal.to_owned() },
            request,
            pii_processing: Processing {
                privacy_notice,
                purposes: vec![ProcessingPurpose {
                    purpose,
                    purpose_type,
                    lawful_basis: LAWFUL_BASIS.into(),
                    pii_information: terms.kinds.clone(),
                    pii_controllers: vec![party.party_id.clone()],
                    terms: ConsentedTerms {
                        granularity: terms.granularity,
                        window: terms.window,
                        expires_at: terms.expires_at,
                        categories: terms.categories.clone(),
                        merchants: terms.merchants.clone(),
                        fields: terms.fields.clone(),
                        rate: terms.rate,
                        noise: terms.noise,
                    },
                }],
            },
            party_identification: vec![party],
            event: vec![ConsentEvent { event_time: now.date(), type_: CONSENT_TYPE.into(), state: ConsentState::Given }],
        }
    }

    /// The same record with the consent ended (`Withdrawn` or `Expired`) on the day of `now`.
    pub fn ended(&self, state: ConsentState, now: OffsetDateTime) -> Receipt {
        let mut next = self.clone();
        next.event.truncate(1);
        next.event.push(ConsentEvent { event_time: now.date(), type_: CONSENT_TYPE.into(), state });
        next
    }

    /// The state the last event led to.
    pub fn state(&self) -> Option<ConsentState> {
        self.event.last().map(|e| e.state)
    }

    /// The receipt as compact JSON, the bytes signed.
    pub fn to_json(&self) -> String {
        // Strings, numbers and lists of them: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Signs the receipt with the grant's key.
    pub fn sign(&self, key: &Ed25519KeyPair) -> String {
        sign_document(key, self.to_json().as_bytes())
    }
}

/// Signs receipt bytes as they are, for test vectors and for receipts written elsewhere.
pub fn sign_document(key: &Ed25519KeyPair, document: &[u8]) -> String {
    let kid = Jwk::ed25519(key.public_key().as_ref()).thumbprint();
    let header = Header { alg: "EdDSA".into(), kid, typ: TYP.into() };
    compact::sign(key, &serde_json::to_vec(&header).unwrap_or_default(), document)
}

/// Verifies a receipt with the grant's pinned key (the bundle's `jwk`) and reads it, checking
/// that it is a record this version writes: one purpose and one party, the marketer, the
/// purpose code accepted, the events in order.
pub fn verify(jws: &str, jwk: &Jwk) -> Result<Receipt, ReceiptError> {
    if jws.len() > MAX_LEN {
        return Err(JwsError::Malformed("too long").into());
    }
    let public = jwk.public_key()?;
    let opened = compact::open(jws).map_err(JwsError::Malformed)?;
    let header: Header = serde_json::from_slice(&opened.header).map_err(|_| JwsError::Malformed("header is not JSON with exactly alg, kid and typ"))?;
    if header.alg != "EdDSA" {
        return Err(JwsError::Algorithm(request::shown(&header.alg)).into());
    }
    let expected = jwk.thumbprint();
    if header.kid != expected {
        return Err(JwsError::KeyId { expected, found: request::shown(&header.kid) }.into());
    }
    if header.typ != TYP {
        return Err(JwsError::Type(request::shown(&header.typ)).into());
    }
    if !compact::verifies(&public, &opened) {
        return Err(JwsError::Signature.into());
    }
    let text = std::str::from_utf8(&opened.payload).map_err(|_| ReceiptError::Payload("not UTF-8".into()))?;
    let (value, duplicate) = crate::signal::read_json_once(text).map_err(|e| ReceiptError::Payload(e.to_string()))?;
    if let Some(path) = duplicate {
        return Err(ReceiptError::Payload(format!("`{}` is given more than once", request::shown(&path))));
    }
    let receipt: Receipt = serde_json::from_value(value).map_err(|e| ReceiptError::Payload(request::shown(&e.to_string())))?;
    receipt.check().map_err(|r| ReceiptError::Payload(r.into()))?;
    Ok(receipt)
}

impl Receipt {
    fn check(&self) -> Result<(), &'static str> {
        if self.record.schema_version != SCHEMA_VERSION {
            return Err("unknown schema_version");
        }
        let [purpose] = self.pii_processing.purposes.as_slice() else { return Err("expected exactly one purpose") };
        let [party] = self.party_identification.as_slice() else { return Err("expected exactly one party") };
        if purpose.lawful_basis != LAWFUL_BASIS || party.party_role != CONTROLLER_ROLE {
            return Err("unexpected lawful basis or party role");
        }
        if purpose.pii_controllers != [party.party_id.clone()] {
            return Err("the controller is not the party named");
        }
        // A request brings the notice, code and contact; without one there are none, so a
        // receipt never holds a part of a request that it does not name.
        let from_request = [self.pii_processing.privacy_notice.is_some(), purpose.purpose_type.is_some(), party.party_contact.is_some()];
        match &self.request {
            Some(request) if party.party_id != request.marketer => return Err("the controller is not the marketer the request names"),
            Some(_) if from_request.contains(&false) => return Err("a receipt of a request holds its privacy notice, purpose code and contact"),
            None if from_request.contains(&true) => return Err("a receipt of no request holds no privacy notice, purpose code or contact"),
            _ => {}
        }
        // A marketer shows a receipt's text, as the person was shown the request's: nothing in
        // it may hide or steer what a screen or terminal displays.
        if self.texts().any(|t| t.chars().any(crate::is_hidden_or_control)) {
            return Err("a text holds a control, bidirectional or invisible character");
        }
        let states: Vec<ConsentState> = self.event.iter().map(|e| e.state).collect();
        let ordered = self.event.windows(2).all(|w| w[0].event_time <= w[1].event_time);
        let known = matches!(states.as_slice(), [ConsentState::Given] | [ConsentState::Given, ConsentState::Withdrawn | ConsentState::Expired]);
        if !known || !ordered || self.event.iter().any(|e| e.type_ != CONSENT_TYPE) {
            return Err("events must be given, then at most one of withdrawn or expired, in order");
        }
        Ok(())
    }
}

impl Receipt {
    /// Every text of the record a person or a marketer may read.
    fn texts(&self) -> impl Iterator<Item = &str> {
        let purposes = self.pii_processing.purposes.iter().flat_map(|p| {
            let filters = p.terms.categories.iter().chain(&p.terms.merchants).chain(&p.terms.fields).flatten();
            [p.purpose.as_str()].into_iter().chain(p.pii_controllers.iter().map(String::as_str)).chain(filters.map(String::as_str))
        });
        let parties = self
            .party_identification
            .iter()
            .flat_map(|p| [Some(p.party_id.as_str()), Some(p.party_name.as_str()), p.party_contact.as_deref()].into_iter().flatten());
        let request = self.request.iter().map(|r| r.marketer.as_str());
        [self.record.pii_principal_id.as_str()].into_iter().chain(self.pii_processing.privacy_notice.as_deref()).chain(request).chain(purposes).chain(parties)
    }
}

/// `YYYY-MM-DD` both ways.
mod day {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use time::macros::format_description;
    use time::Date;

    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

    pub fn serialize<S: Serializer>(day: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&day.format(FORMAT).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        let day = Date::parse(&text, FORMAT).map_err(|_| D::Error::custom("not a day like 2026-11-23"))?;
        // Four-digit years only, as timestamps elsewhere.
        if (1970..=9999).contains(&day.year()) {
            Ok(day)
        } else {
            Err(D::Error::custom("not a day like 2026-11-23"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::request::Choices;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:34:56 UTC);

    impl Receipt {
        /// The terms a receipt states, as a grant holds them.
        fn consented_terms(&self) -> Terms {
            let p = &self.pii_processing.purposes[0];
            let t = &p.terms;
            Terms {
                audience: self.party_identification[0].party_id.clone(),
                kinds: p.pii_information.clone(),
                granularity: t.granularity,
                window: t.window,
                expires_at: t.expires_at,
                categories: t.categories.clone(),
                merchants: t.merchants.clone(),
                fields: t.fields.clone(),
                rate: t.rate,
                noise: t.noise,
            }
        }
    }

    pub(crate) fn receipt() -> (Receipt, Ed25519KeyPair) {
        let request = Request::parse(crate::request::tests::PUSH).unwrap();
        let approved = request.terms.narrow(&Choices { kinds: Some("cart".parse().unwrap()), ..Choices::default() }).unwrap();
        let now = datetime!(2026-11-23 12:34:56 UTC);
        let terms = approved.terms(&request.marketer.domain, now).unwrap();
        let grant = GrantId::parse("g_000102030405060708090a0b").unwrap();
        let key = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        (Receipt::given(Basis::Request(&request), &grant, "p_00000000000000000000000000000000", &terms, now), key)
    }

    #[test]
    fn signs_verifies_and_ends() {
        let (given, key) = receipt();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        assert_eq!(verify(&given.sign(&key), &jwk).unwrap(), given);
        assert!(given.to_json().contains(r#""event":[{"event_time":"2026-11-23","type":"dpv:ExplicitlyExpressedConsent","state":"dpv:ConsentGiven"}]"#));
        let withdrawn = given.ended(ConsentState::Withdrawn, datetime!(2026-12-01 8:00 UTC));
        assert_eq!(verify(&withdrawn.sign(&key), &jwk).unwrap().state(), Some(ConsentState::Withdrawn));
    }

    #[test]
    fn a_grant_made_unasked_has_a_receipt_without_a_request() {
        let (of_request, key) = receipt();
        let terms = Terms { audience: "Acme".into(), ..of_request.consented_terms() };
        let grant = of_request.record.record_id.clone();
        let given = Receipt::given(Basis::Owner { marketer: "Acme", purpose: "offers" }, &grant, "p_00000000000000000000000000000000", &terms, NOW);
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        assert_eq!(verify(&given.sign(&key), &jwk).unwrap(), given);
        let json = given.to_json();
        assert!(
            !json.contains(r#""request""#) && !json.contains("privacy_notice") && !json.contains("purpose_type") && !json.contains("party_contact"),
            "{json}"
        );
        assert!(json.contains(r#""party_identification":[{"party_id":"Acme","party_name":"Acme","party_role":"dpv:DataController"}]"#), "{json}");
        // The parts of a request come all together or not at all.
        let code = r#""purpose_type":"dpv:PersonalisedAdvertising","lawful_basis""#;
        for (name, text) in [
            ("a code without a request", json.replace(r#""lawful_basis""#, code)),
            ("a request without its code", of_request.to_json().replace(code, r#""lawful_basis""#)),
        ] {
            assert!(matches!(verify(&sign_document(&key, text.as_bytes()), &jwk), Err(ReceiptError::Payload(_))), "{name}");
        }
    }

    #[test]
    fn rejects_receipts_that_do_not_verify_or_do_not_hold_together() {
        let (given, key) = receipt();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let slice_key_jws = crate::jws::sign(&key, given.to_json().as_bytes());
        assert!(matches!(verify(&slice_key_jws, &jwk), Err(ReceiptError::Jws(JwsError::Type(_)))), "a slice's header");
        let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
        assert!(matches!(verify(&given.sign(&other), &jwk), Err(ReceiptError::Jws(JwsError::KeyId { .. }))));
        let json = given.to_json();
        for (name, text) in [
            ("an unknown field", json.replacen(r#""record":{"#, r#""record":{"x":1,"#, 1)),
            ("a repeated key", json.replacen(r#""record_id":"#, r#""record_id":"g_ffffffffffffffffffffffff","record_id":"#, 1)),
            ("withdrawn first", json.replace("dpv:ConsentGiven", "dpv:ConsentWithdrawn")),
            ("another lawful basis", json.replace(r#""lawful_basis":"dpv:Consent""#, r#""lawful_basis":"dpv:LegitimateInterest""#)),
            ("an unknown purpose", json.replace("dpv:PersonalisedAdvertising", "dpv:Profiling")),
            ("another controller", json.replace(r#""pii_controllers":["acme.example"]"#, r#""pii_controllers":["evil.example"]"#)),
            ("an instant for a day", json.replace(r#""event_time":"2026-11-23""#, r#""event_time":"2026-11-23T12:34:56Z""#)),
            ("a bidi override in the party's name", json.replace(r#""party_name":"Acme Shoes""#, r#""party_name":"Acme \u202eseohS""#)),
            ("an escape in the purpose", json.replacen(r#""purpose":"Show"#, r#""purpose":"\u001b[2JShow"#, 1)),
        ] {
            assert!(matches!(verify(&sign_document(&key, text.as_bytes()), &jwk), Err(ReceiptError::Payload(_))), "{name}");
        }
    }
}
