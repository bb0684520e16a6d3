//! Slices: the signed answer to a marketer's request, and its verification.
//!
//! A slice is a JWS ([`crate::jws`]) whose payload is [`SliceClaims`]. It is both the data
//! and the marketer's proof of the person's consent: it names the grant, its purpose and the
//! scope actually applied, signed with the grant's own key.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bundle::GrantBundle;
use crate::jws::{self, JwsError};
use crate::scope::{Applied, GrantId};
use crate::signal::{Body, Kind};

/// The payload of a slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceClaims {
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
    /// A claim does not match the bundle.
    #[error("claim `{claim}` is `{found}`, expected `{expected}`")]
    Claim {
        /// `iss`, `aud` or `grant.id`.
        claim: &'static str,
        /// What the bundle says.
        expected: String,
        /// What the slice says.
        found: String,
    },
}

/// Verifies a slice against a grant bundle: signature and `kid` against the bundle's JWK,
/// then issuer, audience (`audience`, or the bundle's marketer) and grant id.
pub fn verify(jws: &str, bundle: &GrantBundle, audience: Option<&str>) -> Result<SliceClaims, SliceError> {
    let payload = jws::verify(jws, &bundle.jwk)?;
    let claims: SliceClaims = serde_json::from_slice(&payload).map_err(|e| SliceError::Payload(e.to_string()))?;
    let audience = audience.unwrap_or(&bundle.marketer);
    for (claim, expected, found) in [
        ("iss", bundle.issuer.as_str(), claims.iss.as_str()),
        ("aud", audience, claims.aud.as_str()),
        ("grant.id", bundle.grant_id.as_str(), claims.grant.id.as_str()),
    ] {
        if expected != found {
            return Err(SliceError::Claim { claim, expected: expected.into(), found: found.into() });
        }
    }
    Ok(claims)
}
