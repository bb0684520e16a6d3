//! The grant bundle: everything a marketer needs, handed over once when the person grants.

use serde::{Deserialize, Serialize};

use crate::jws::Jwk;
use crate::scope::{GrantId, Terms};
use crate::slice::{self, Expected, SliceClaims, SliceError};

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

    /// Verifies a slice received for this grant by its marketer: the audience must be
    /// [`GrantBundle::marketer`] (see [`slice::verify`]).
    pub fn verify_slice(&self, jws: &str) -> Result<SliceClaims, SliceError> {
        self.verify_slice_for(jws, &self.marketer)
    }

    /// Verifies a slice of this grant addressed to `audience`, such as the partner named by
    /// an `aud` caveat of an attenuated token: same key, issuer and grant, another recipient.
    pub fn verify_slice_for(&self, jws: &str, audience: &str) -> Result<SliceClaims, SliceError> {
        slice::verify(jws, Expected { issuer: &self.issuer, audience, grant_id: &self.grant_id, jwk: &self.jwk })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Granularity;
    use crate::token::Token;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use time::macros::datetime;

    fn bundle(key: &Ed25519KeyPair) -> GrantBundle {
        let grant_id = GrantId::parse("g_000102030405060708090a0b").unwrap();
        GrantBundle {
            version: VERSION,
            token: Token::mint(&[1u8; 32], &grant_id).encode(),
            grant_id,
            marketer: "acme.example".into(),
            purpose: "shoe ads".into(),
            issuer: "urn:optin:agent:p_00000000000000000000000000000000".into(),
            agent_url: "https://127.0.0.1:7676".into(),
            cert_sha256: "0".repeat(64),
            jwk: Jwk::ed25519(key.public_key().as_ref()),
            terms: Terms {
                audience: "acme.example".into(),
                kinds: "search".parse().unwrap(),
                granularity: Granularity::Raw,
                window: "30d".parse().unwrap(),
                expires_at: datetime!(2027-02-21 0:00 UTC),
                categories: None,
                merchants: None,
            },
        }
    }

    /// A slice of the bundle's grant addressed to `audience`.
    fn slice_for(key: &Ed25519KeyPair, audience: &str) -> String {
        let payload = serde_json::json!({
            "iss": "urn:optin:agent:p_00000000000000000000000000000000",
            "sub": "p_00000000000000000000000000000000",
            "aud": audience,
            "iat": 1_795_392_000,
            "jti": "s_00000000000000000000000000000000",
            "grant": {"id": "g_000102030405060708090a0b", "purpose": "shoe ads", "expires_at": "2027-02-21T00:00:00Z"},
            "scope": {"kinds": ["search"], "granularity": "raw", "since": "2026-10-24T00:00:00Z", "until": "2026-11-23T00:00:00Z", "limit": 100},
            "items": [],
        });
        crate::jws::sign(key, payload.to_string().as_bytes())
    }

    #[test]
    fn a_marketer_verifies_its_own_slices_and_a_partner_its_own() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[3u8; 32]).unwrap();
        let bundle = bundle(&key);
        assert_eq!(GrantBundle::parse(&serde_json::to_string(&bundle).unwrap()).unwrap(), bundle);
        assert_eq!(bundle.verify_slice(&slice_for(&key, "acme.example")).unwrap().aud, "acme.example");
        assert_eq!(bundle.verify_slice_for(&slice_for(&key, "partner.example"), "partner.example").unwrap().aud, "partner.example");
    }

    #[test]
    fn rejects_a_slice_addressed_to_someone_else() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[3u8; 32]).unwrap();
        let bundle = bundle(&key);
        for (audience, verified) in [
            ("partner.example", bundle.verify_slice(&slice_for(&key, "partner.example"))),
            ("acme.example", bundle.verify_slice_for(&slice_for(&key, "acme.example"), "partner.example")),
        ] {
            assert!(matches!(verified, Err(SliceError::Claim { claim: "aud", .. })), "a slice for {audience}: {verified:?}");
        }
    }
}
