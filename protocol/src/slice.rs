//! Slices: the signed answer to a marketer's request, and its verification.
//!
//! A slice is a JWS ([`crate::jws`]) whose payload is [`SliceClaims`]. It is both the data
//! and the marketer's proof of the person's consent: it names the grant, its purpose and the
//! scope actually applied, signed with the grant's own key.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::jws::{self, Jwk, JwsError};
use crate::noise::{Epsilon, Noise};
use crate::scope::{Applied, GrantId, Granularity};
use crate::signal::{Body, Kind};

/// The payload of a slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceClaims {
    /// The sequence number of the agent's audit record of this slice, the `served` record
    /// that names its `jti` and the SHA-256 of its JWS: the marketer's copy witnesses the
    /// person's log. Absent in slices from agents that did not number them (and in the
    /// owner's previews, which are never served). First, so that it is the first member
    /// of the payload's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
    /// The agent, as this grant knows it: `urn:optin:agent:<pseudonym>`.
    pub iss: String,
    /// The person, by a pseudonym that differs for every grant.
    pub sub: String,
    /// Who the slice is for.
    pub aud: String,
    /// When it was cut, in seconds since the Unix epoch.
    pub iat: i64,
    /// A unique id for this slice.
    pub jti: String,
    /// The consent it was cut under.
    pub grant: GrantClaim,
    /// The scope actually applied.
    pub scope: Applied,
    /// The signals, as the granularity allows.
    pub items: Vec<SliceItem>,
    /// Present when more items follow: pass it as `cursor` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// At granularity `aggregate`, and only there: the counts per kind and category over the
    /// whole scope, in place of items (which are then empty). One answer, never paged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<Count>>,
    /// How the counts were made private; absent from an aggregate slice whose counts are
    /// exact (cut under a grant that allows items, which tell more than counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseClaim>,
}

/// One bucket of an `aggregate` slice: how many signals of a kind, with one category, the
/// scope admitted. A bucket left out was below the noise's `min_count`, or held none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// The kind.
    pub kind: Kind,
    /// The signals' own taxonomy path; absent: signals without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The count, after noise when the slice states some.
    pub count: u64,
}

/// The noise an `aggregate` slice's counts carry, as the slice states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseClaim {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// Its privacy-loss parameter, which this answer spent of the grant's budget.
    pub epsilon: Epsilon,
    /// Buckets below this after noise were left out.
    pub min_count: u32,
}

/// A noise mechanism a slice may state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mechanism {
    /// The two-sided geometric (discrete Laplace) distribution of parameter `exp(-epsilon)`,
    /// added to each count, clamped at zero ([`crate::noise::two_sided_geometric`]).
    #[serde(rename = "two-sided-geometric")]
    TwoSidedGeometric,
}

impl NoiseClaim {
    /// How a slice states `noise`.
    pub fn of(noise: &Noise) -> NoiseClaim {
        NoiseClaim { mechanism: Mechanism::TwoSidedGeometric, epsilon: noise.epsilon, min_count: noise.min_count }
    }
}

/// The grant a slice was cut under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaim {
    /// The grant's id.
    pub id: GrantId,
    /// The purpose the person agreed to.
    pub purpose: String,
    /// When the grant ends.
    #[serde(with = "crate::timestamp::serde")]
    pub expires_at: OffsetDateTime,
}

/// One signal in a slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SliceItem {
    /// Every field (granularity `raw`).
    Raw(RawItem),
    /// Kind, category and day only (granularity `category`).
    Category(CategoryItem),
    /// A `raw` item of a grant that shares fewer than all fields ([`crate::fields`]).
    Partial(PartialItem),
}

/// A `raw` item holding only the fields its grant shares: always its per-grant `id`, `kind`
/// and `at`, and of the others ([`crate::fields::NAMES`]) those the slice's `scope.fields`
/// lists. Read back, it holds nothing that is not one of those fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PartialJson", into = "PartialJson")]
pub struct PartialItem {
    /// Per-grant id of the signal.
    pub id: String,
    /// The kind.
    pub kind: Kind,
    /// When it happened.
    pub at: OffsetDateTime,
    /// The shared fields, named as in a raw item (`items` holding the shared item fields).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl PartialItem {
    /// The category, when shared.
    pub fn category(&self) -> Option<&str> {
        self.fields.get("category").and_then(|c| c.as_str())
    }

    /// A cart's state, when shared.
    pub fn state(&self) -> Option<CartState> {
        self.fields.get("state").and_then(|s| serde_json::from_value(s.clone()).ok())
    }
}

/// A partial item as JSON.
#[derive(Serialize, Deserialize)]
struct PartialJson {
    id: String,
    kind: Kind,
    #[serde(with = "crate::timestamp::serde")]
    at: OffsetDateTime,
    #[serde(flatten)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<PartialJson> for PartialItem {
    type Error = String;
    fn try_from(j: PartialJson) -> Result<PartialItem, String> {
        let top = |key: &str| key == "items" || crate::fields::NAMES.contains(&key);
        if let Some(key) = j.fields.keys().find(|k| !top(k)) {
            return Err(format!("`{}` is not a field of an item", key.chars().take(32).collect::<String>()));
        }
        if let Some(items) = j.fields.get("items") {
            let lines = items.as_array().ok_or("`items` is not a list")?;
            for line in lines {
                let line = line.as_object().ok_or("an item line is not an object")?;
                if let Some(key) = line.keys().find(|k| !crate::fields::NAMES.iter().any(|n| n.strip_prefix("items.") == Some(k.as_str()))) {
                    return Err(format!("`{}` is not a field of an item line", key.chars().take(32).collect::<String>()));
                }
            }
        }
        Ok(PartialItem { id: j.id, kind: j.kind, at: j.at, fields: j.fields })
    }
}

impl From<PartialItem> for PartialJson {
    fn from(p: PartialItem) -> PartialJson {
        PartialJson { id: p.id, kind: p.kind, at: p.at, fields: p.fields }
    }
}

/// A signal with all its fields. Its `id` is the signal's id as this grant sees it, so two
/// marketers cannot join their slices on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawItem {
    /// Per-grant id of the signal.
    pub id: String,
    /// When it happened.
    #[serde(with = "crate::timestamp::serde")]
    pub at: OffsetDateTime,
    /// Taxonomy path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The kind and its fields.
    #[serde(flatten)]
    pub body: Body,
    /// For carts: what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CartState>,
}

/// A signal reduced to kind, category and day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryItem {
    /// The kind.
    pub kind: Kind,
    /// Taxonomy path, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
}

/// What became of a cart, derived by the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CartState {
    /// No purchase at the merchant yet, and the abandonment delay has not passed.
    Open,
    /// No purchase at the merchant followed within the abandonment delay.
    Abandoned,
    /// A purchase at the same merchant followed within the delay.
    Purchased,
}

/// Why a slice was refused by its recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SliceError {
    /// The JWS does not verify against the pinned key.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The payload is not a slice.
    #[error("payload is not a slice: {0}")]
    Payload(String),
    /// A claim is not what the recipient expected.
    #[error("claim `{claim}` is `{found}`, expected `{expected}`")]
    Claim {
        /// `iss`, `aud` or `grant.id`.
        claim: &'static str,
        /// What the recipient expected.
        expected: String,
        /// What the slice says.
        found: String,
    },
    /// The slice's shape does not match its granularity: items in an `aggregate` slice,
    /// counts in another, a cursor on counts.
    #[error("slice shape: {0}")]
    Shape(&'static str),
}

/// What a recipient holds a slice to: the grant's pinned key and the claims it must carry.
///
/// A marketer fills it from its grant bundle ([`crate::bundle::GrantBundle::verify_slice`]
/// does); a partner that a token caveat names keeps its own audience. Only the recipient's own
/// expectation decides: nothing in the slice says which key or issuer to trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The `iss` the grant's slices carry.
    pub issuer: &'a str,
    /// The recipient's own name, which the slice's `aud` must equal.
    pub audience: &'a str,
    /// The grant the slice must have been cut under.
    pub grant_id: &'a GrantId,
    /// The grant's public key, pinned when the grant was handed over.
    pub jwk: &'a Jwk,
}

/// Verifies a slice: signature and `kid` against `expected.jwk`, then issuer, audience and
/// grant id.
pub fn verify(jws: &str, expected: Expected<'_>) -> Result<SliceClaims, SliceError> {
    let payload = jws::verify(jws, expected.jwk)?;
    let claims: SliceClaims = serde_json::from_slice(&payload).map_err(|e| SliceError::Payload(e.to_string()))?;
    for (claim, wanted, found) in [
        ("iss", expected.issuer, claims.iss.as_str()),
        ("aud", expected.audience, claims.aud.as_str()),
        ("grant.id", expected.grant_id.as_str(), claims.grant.id.as_str()),
    ] {
        if wanted != found {
            return Err(SliceError::Claim { claim, expected: wanted.into(), found: found.into() });
        }
    }
    check_shape(&claims)?;
    Ok(claims)
}

/// An `aggregate` slice holds counts and nothing else; any other holds items and no counts.
/// A recipient that read items from a slice stating counts, or the reverse, would misread
/// what the person agreed to share.
fn check_shape(claims: &SliceClaims) -> Result<(), SliceError> {
    if claims.scope.granularity == Granularity::Aggregate {
        if claims.counts.is_none() {
            return Err(SliceError::Shape("an aggregate slice without counts"));
        }
        if !claims.items.is_empty() {
            return Err(SliceError::Shape("an aggregate slice with items"));
        }
        if claims.next_cursor.is_some() {
            return Err(SliceError::Shape("an aggregate slice with a cursor"));
        }
    } else if claims.counts.is_some() || claims.noise.is_some() {
        return Err(SliceError::Shape("counts in a slice that is not aggregate"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// The slice vector of SPEC.md: a key, a payload cut for `acme.example`, and its JWS.
    const VECTOR: &str = include_str!("../tests/vectors/slice-jws.txt");
    const ISSUER: &str = "urn:optin:agent:p_00000000000000000000000000000000";
    const GRANT: &str = "g_000102030405060708090a0b";

    fn field(name: &str) -> &'static str {
        VECTOR.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")).unwrap()
    }

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&crate::hex::decode(field("seed")).unwrap()).unwrap()
    }

    fn check(jws: &str, issuer: &str, audience: &str, grant: &str, jwk: &Jwk) -> Result<SliceClaims, SliceError> {
        verify(jws, Expected { issuer, audience, grant_id: &GrantId::parse(grant).unwrap(), jwk })
    }

    #[test]
    fn verifies_the_vector_for_its_recipient() {
        let jwk = Jwk::ed25519(key().public_key().as_ref());
        let claims = check(field("expect"), ISSUER, "acme.example", GRANT, &jwk).unwrap();
        assert_eq!((claims.aud.as_str(), claims.grant.id.as_str(), claims.items.len()), ("acme.example", GRANT, 1));
    }

    #[test]
    fn rejects_claims_other_than_expected() {
        let jwk = Jwk::ed25519(key().public_key().as_ref());
        for (issuer, audience, grant, claim) in [
            ("urn:optin:agent:p_11111111111111111111111111111111", "acme.example", GRANT, "iss"),
            (ISSUER, "partner.example", GRANT, "aud"),
            (ISSUER, "acme.example", "g_0c0b0a090807060504030201", "grant.id"),
        ] {
            match check(field("expect"), issuer, audience, grant, &jwk) {
                Err(SliceError::Claim { claim: found, .. }) => assert_eq!(found, claim),
                other => panic!("{claim}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_audit_seq_is_optional_and_comes_first() {
        let jwk = Jwk::ed25519(key().public_key().as_ref());
        let claims = check(field("expect"), ISSUER, "acme.example", GRANT, &jwk).unwrap();
        assert_eq!(claims.audit_seq, None, "a slice from before audit numbers verifies");
        let payload = field("payload");
        assert_eq!(serde_json::to_string(&claims).unwrap(), payload, "and is written back as it was");
        let numbered = SliceClaims { audit_seq: Some(42), ..claims };
        let json = serde_json::to_string(&numbered).unwrap();
        assert_eq!(json, format!("{{\"audit_seq\":42,{}", &payload[1..]));
        let signed = jws::sign(&key(), json.as_bytes());
        assert_eq!(check(&signed, ISSUER, "acme.example", GRANT, &jwk).unwrap().audit_seq, Some(42));
    }

    #[test]
    fn items_missing_fields_their_grant_left_out_are_read() {
        let cases: [(&str, Result<&str, ()>); 5] = [
            (r#"{"id":"i_1","kind":"purchase","at":"2026-11-20T10:00:00Z","merchant":"shoes.example","items":[{"name":"Trail shoe"}]}"#, Ok("partial")),
            (r#"{"id":"i_1","kind":"search","at":"2026-11-20T10:00:00Z"}"#, Ok("partial")),
            (r#"{"id":"i_1","kind":"search","at":"2026-11-20T10:00:00Z","query":"q","engine":"duckduckgo.com"}"#, Ok("raw")),
            (r#"{"id":"i_1","kind":"search","at":"2026-11-20T10:00:00Z","price":"1.00"}"#, Err(())),
            (r#"{"id":"i_1","kind":"cart","at":"2026-11-20T10:00:00Z","items":[{"name":"n","colour":"red"}]}"#, Err(())),
        ];
        for (json, expected) in cases {
            let got = serde_json::from_str::<SliceItem>(json).map(|item| match item {
                SliceItem::Raw(_) => "raw",
                SliceItem::Partial(p) => {
                    let read: serde_json::Value = serde_json::from_str(json).unwrap();
                    assert_eq!(serde_json::to_value(&p).unwrap(), read, "written back as read");
                    "partial"
                }
                _ => "other",
            });
            assert_eq!(got.map_err(|_| ()), expected, "{json}");
        }
    }

    #[test]
    fn rejects_other_keys_and_payloads_that_are_not_slices() {
        let other = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let other_jwk = Jwk::ed25519(other.public_key().as_ref());
        assert!(matches!(check(field("expect"), ISSUER, "acme.example", GRANT, &other_jwk), Err(SliceError::Jws(JwsError::KeyId { .. }))));
        let key = key();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let not_a_slice = jws::sign(&key, br#"{"iss":"x"}"#);
        assert!(matches!(check(&not_a_slice, ISSUER, "acme.example", GRANT, &jwk), Err(SliceError::Payload(_))));
    }

    /// The aggregate slice vector, computed from SPEC.md in Python by
    /// tests/jose/slice_aggregate_vector.py.
    const AGGREGATE: &str = include_str!("../tests/vectors/slice-aggregate-jws.txt");

    #[test]
    fn reproduces_and_reads_the_aggregate_vector() {
        let field = |name: &str| AGGREGATE.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")).unwrap();
        let payload = field("payload");
        assert_eq!(jws::sign(&key(), payload.as_bytes()), field("expect"), "the same JWS, byte for byte");
        let jwk = Jwk::ed25519(key().public_key().as_ref());
        assert_eq!(jwk.kid.as_deref(), Some(field("kid")));
        let claims = check(field("expect"), ISSUER, "acme.example", GRANT, &jwk).unwrap();
        assert_eq!(serde_json::to_string(&claims).unwrap(), payload, "written back as the agent writes it");
        let counts: Vec<_> = claims.counts.iter().flatten().map(|c| (c.kind, c.category.as_deref(), c.count)).collect();
        assert_eq!(counts, [(Kind::Search, Some("Apparel & Accessories > Shoes"), 12), (Kind::Cart, None, 7)]);
        assert_eq!(claims.noise.map(|n| (n.mechanism, n.epsilon.milli(), n.min_count)), Some((Mechanism::TwoSidedGeometric, 500, 5)));
    }

    /// An aggregate slice's payload for the vector's grant, with `edit` applied to its JSON.
    fn aggregate(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(field("payload")).unwrap();
        v["scope"]["granularity"] = "aggregate".into();
        v["items"] = serde_json::json!([]);
        v["counts"] = serde_json::json!([{"kind": "search", "category": "Apparel & Accessories > Shoes", "count": 12}, {"kind": "cart", "count": 3}]);
        v["noise"] = serde_json::json!({"mechanism": "two-sided-geometric", "epsilon": "0.5", "min_count": 5});
        edit(&mut v);
        jws::sign(&key(), v.to_string().as_bytes())
    }

    #[test]
    fn verifies_an_aggregate_slice_and_reads_its_counts_and_noise() {
        let jwk = Jwk::ed25519(key().public_key().as_ref());
        let claims = check(&aggregate(|_| ()), ISSUER, "acme.example", GRANT, &jwk).unwrap();
        let counts = claims.counts.unwrap();
        assert_eq!(
            counts.iter().map(|c| (c.kind, c.category.as_deref(), c.count)).collect::<Vec<_>>(),
            [(Kind::Search, Some("Apparel & Accessories > Shoes"), 12), (Kind::Cart, None, 3)]
        );
        let noise = claims.noise.unwrap();
        assert_eq!((noise.mechanism, noise.epsilon.milli(), noise.min_count), (Mechanism::TwoSidedGeometric, 500, 5));
        let exact = check(&aggregate(|v| v.as_object_mut().unwrap().remove("noise").map(drop).unwrap()), ISSUER, "acme.example", GRANT, &jwk);
        assert_eq!(exact.unwrap().noise, None, "exact counts state no noise");
    }

    #[test]
    fn rejects_slices_whose_shape_is_not_their_granularity() {
        let jwk = Jwk::ed25519(key().public_key().as_ref());
        let item = serde_json::json!({"kind": "search", "day": "2026-01-01"});
        for (what, jws) in [
            ("items in an aggregate slice", aggregate(|v| v["items"] = serde_json::json!([item]))),
            ("an aggregate slice without counts", aggregate(|v| v.as_object_mut().unwrap().remove("counts").map(drop).unwrap())),
            ("a cursor on counts", aggregate(|v| v["next_cursor"] = "c_1".into())),
            (
                "counts at category",
                aggregate(|v| {
                    v["scope"]["granularity"] = "category".into();
                    v["items"] = serde_json::json!([item]);
                }),
            ),
        ] {
            assert!(matches!(check(&jws, ISSUER, "acme.example", GRANT, &jwk), Err(SliceError::Shape(_))), "{what}");
        }
        for (what, jws) in [
            ("another mechanism", aggregate(|v| v["noise"]["mechanism"] = "laplace".into())),
            ("a float epsilon", aggregate(|v| v["noise"]["epsilon"] = 0.5.into())),
            ("a negative count", aggregate(|v| v["counts"][0]["count"] = (-1).into())),
            ("an id in a count", aggregate(|v| v["counts"][0]["id"] = "i_1".into())),
        ] {
            assert!(matches!(check(&jws, ISSUER, "acme.example", GRANT, &jwk), Err(SliceError::Payload(_))), "{what}");
        }
    }
}
