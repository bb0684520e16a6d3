//! The grant bundle: everything a marketer needs, handed over once when the person grants.

use serde::{Deserialize, Serialize};

use crate::jws::Jwk;
use crate::scope::{GrantId, Terms};
use crate::slice::{self, SliceClaims, SliceError};

/// Version of the bundle format.
pub const VERSION: u32 = 1;

/// A grant bundle (SPEC.md, "Grant bundle").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBundle {
    /// Format version, 1.
    pub version: u32,
    /// The grant's id.
    pub grant_id: GrantId,
    /// Who the grant is for; slices name it as their audience.
    pub marketer: String,
    /// What the person agreed the data is for.
    pub purpose: String,
    /// The `iss` every slice of this grant carries.
    pub issuer: String,
    /// Where the agent answers, `https://host:port`.
    pub agent_url: String,
    /// SHA-256 of the agent's TLS certificate (DER), lowercase hex: pin it.
    pub cert_sha256: String,
    /// The grant's public signing key.
    pub jwk: Jwk,
    /// The bearer token. Keep it secret.
    pub token: String,
    /// What the grant allows.
    pub terms: Terms,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not JSON of the bundle's shape.
    #[error("not a grant bundle: {0}")]
    Json(String),
    /// A version this crate does not know.
    #[error("unsupported bundle version {0}")]
    Version(u32),
    /// A field is present but unusable.
    #[error("bundle field `{field}`: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl GrantBundle {
    /// Parses and checks a bundle.
    pub fn parse(json: &str) -> Result<GrantBundle, BundleError> {
        let bundle: GrantBundle = serde_json::from_str(json).map_err(|e| BundleError::Json(e.to_string()))?;
        if bundle.version != VERSION {
            return Err(BundleError::Version(bundle.version));
        }
        let field = |field, reason: &str| BundleError::Field { field, reason: reason.into() };
        bundle.jwk.public_key().map_err(|e| field("jwk", &e.to_string()))?;
        if bundle.jwk.kid.as_ref().is_some_and(|k| *k != bundle.jwk.thumbprint()) {
            return Err(field("jwk", "kid is not the key's RFC 7638 thumbprint"));
        }
        if bundle.cert_sha256.len() != 64 || !bundle.cert_sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(field("cert_sha256", "expected 64 lowercase hex digits"));
        }
        if !bundle.agent_url.starts_with("https://") {
            return Err(field("agent_url", "must be an https:// URL"));
        }
        crate::token::Token::parse(&bundle.token).map_err(|e| field("token", &e.to_string()))?;
        Ok(bundle)
    }

    /// Verifies a slice received for this grant (see [`slice::verify`]).
    pub fn verify_slice(&self, jws: &str) -> Result<SliceClaims, SliceError> {
        slice::verify(jws, self, None)
    }
}
