//! The grant bundle: everything a marketer needs, handed over once when the person grants.

use serde::{Deserialize, Serialize};

use crate::jws::Jwk;
use crate::receipt::{self, ConsentState, Receipt};
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
    /// Where the agent answers, `https://host:port`. Absent, with `cert_sha256`, in the bundle
    /// of a grant pushed to the marketer's inbox: the address and certificate are one for all
    /// of a person's grants, so a bundle that named them would link the person's pushed
    /// grants across marketers, and tell each where the person is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
    /// SHA-256 of the agent's TLS certificate (DER), lowercase hex: pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// The grant's public signing key.
    pub jwk: Jwk,
    /// The bearer token. Keep it secret.
    pub token: String,
    /// What the grant allows.
    pub terms: Terms,
    /// The grant's consent receipt (SPEC.md, "Consent receipts"): a compact JWS signed with
    /// [`GrantBundle::jwk`], the same bytes whenever the bundle is printed. Absent in the
    /// bundles of older agents, and in a pushed grant's, whose `grant.created` carries the
    /// receipt beside the bundle. [`GrantBundle::parse`] verifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
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
        match (&bundle.agent_url, &bundle.cert_sha256) {
            (Some(url), Some(cert)) => {
                if cert.len() != 64 || !cert.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(field("cert_sha256", "expected 64 lowercase hex digits"));
                }
                if !url.starts_with("https://") {
                    return Err(field("agent_url", "must be an https:// URL"));
                }
            }
            (None, None) => {}
            (Some(_), None) => return Err(field("cert_sha256", "missing: an agent_url comes with the certificate to pin")),
            (None, Some(_)) => return Err(field("agent_url", "missing: a cert_sha256 comes with the address it is served at")),
        }
        crate::token::Token::parse(&bundle.token).map_err(|e| field("token", &e.to_string()))?;
        if let Some(jws) = &bundle.receipt {
            bundle.check_receipt(jws).map_err(|reason| field("receipt", &reason))?;
        }
        Ok(bundle)
    }

    /// The grant's consent receipt, verified with the bundle's key; `None` when the bundle
    /// carries none. [`GrantBundle::parse`] has checked it already.
    pub fn consent(&self) -> Option<Result<Receipt, String>> {
        self.receipt.as_deref().map(|jws| self.check_receipt(jws))
    }

    /// A receipt of this bundle's grant, as the bundle is made: signed with its key, naming
    /// its grant and marketer, and not ended (a bundle is printed only while its grant is in
    /// force).
    fn check_receipt(&self, jws: &str) -> Result<Receipt, String> {
        let receipt = receipt::verify(jws, &self.jwk).map_err(|e| e.to_string())?;
        if receipt.record.record_id != self.grant_id {
            return Err("it is the receipt of another grant".into());
        }
        if receipt.party_identification.iter().map(|p| p.party_id.as_str()).ne([self.marketer.as_str()]) {
            return Err("its party is not the bundle's marketer".into());
        }
        if receipt.state() != Some(ConsentState::Given) {
            return Err("its consent is not in force (dpv:ConsentGiven)".into());
        }
        Ok(receipt)
    }

    /// Where to pull this grant's slices and the certificate to pin there; `None` for a grant
    /// whose slices are pushed to the marketer.
    pub fn pull_from(&self) -> Option<(&str, &str)> {
        self.agent_url.as_deref().zip(self.cert_sha256.as_deref())
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
            agent_url: Some("https://127.0.0.1:7676".into()),
            cert_sha256: Some("0".repeat(64)),
            jwk: Jwk::ed25519(key.public_key().as_ref()),
            terms: Terms {
                audience: "acme.example".into(),
                kinds: "search".parse().unwrap(),
                granularity: Granularity::Raw,
                window: "30d".parse().unwrap(),
                expires_at: datetime!(2027-02-21 0:00 UTC),
                categories: None,
                merchants: None,
                fields: None,
                rate: None,
                noise: None,
            },
            receipt: None,
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

    #[test]
    fn a_pushed_grants_bundle_names_no_address_and_half_of_one_is_refused() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[3u8; 32]).unwrap();
        let pushed = GrantBundle { agent_url: None, cert_sha256: None, ..bundle(&key) };
        let json = serde_json::to_string(&pushed).unwrap();
        assert!(!json.contains("agent_url") && !json.contains("cert_sha256"), "{json}");
        assert_eq!(GrantBundle::parse(&json).unwrap().pull_from(), None);
        for (half, field) in
            [(GrantBundle { agent_url: None, ..bundle(&key) }, "agent_url"), (GrantBundle { cert_sha256: None, ..bundle(&key) }, "cert_sha256")]
        {
            let refused = GrantBundle::parse(&serde_json::to_string(&half).unwrap());
            assert!(matches!(refused, Err(BundleError::Field { field: f, .. }) if f == field), "{field}: {refused:?}");
        }
    }

    #[test]
    fn a_bundle_carries_its_grants_receipt_and_old_bundles_still_parse() {
        let (given, key) = crate::receipt::tests::receipt();
        let with = GrantBundle { receipt: Some(given.sign(&key)), ..bundle(&key) };
        let json = serde_json::to_string(&with).unwrap();
        let parsed = GrantBundle::parse(&json).unwrap();
        assert_eq!(parsed.consent(), Some(Ok(given)));
        // A bundle written before receipts, and one that names none, read as before.
        let old = serde_json::to_string(&bundle(&key)).unwrap();
        assert!(!old.contains("receipt"), "{old}");
        assert_eq!(GrantBundle::parse(&old).unwrap().consent(), None);
    }

    #[test]
    fn rejects_a_receipt_that_is_not_this_grants_in_force() {
        let (given, key) = crate::receipt::tests::receipt();
        let other_key = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
        let mut of_another_grant = given.clone();
        of_another_grant.record.record_id = GrantId::parse("g_ffffffffffffffffffffffff").unwrap();
        let withdrawn = given.ended(crate::receipt::ConsentState::Withdrawn, datetime!(2026-12-01 8:00 UTC));
        for (name, receipt) in [
            ("signed with another key", given.sign(&other_key)),
            ("of another grant", of_another_grant.sign(&key)),
            ("withdrawn", withdrawn.sign(&key)),
            ("not a JWS", "receipt".to_owned()),
        ] {
            let json = serde_json::to_string(&GrantBundle { receipt: Some(receipt), ..bundle(&key) }).unwrap();
            let refused = GrantBundle::parse(&json);
            assert!(matches!(refused, Err(BundleError::Field { field: "receipt", .. })), "{name}: {refused:?}");
        }
        let for_another_marketer = GrantBundle { marketer: "globex.example".into(), receipt: Some(given.sign(&key)), ..bundle(&key) };
        let refused = GrantBundle::parse(&serde_json::to_string(&for_another_marketer).unwrap());
        assert!(matches!(refused, Err(BundleError::Field { field: "receipt", .. })), "another marketer: {refused:?}");
    }
}
