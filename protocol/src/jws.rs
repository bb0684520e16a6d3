//! JWS compact serialization with Ed25519 (RFC 7515, RFC 8037) and JWKs (RFC 7517) with
//! RFC 7638 thumbprints.
//!
//! The header is fixed: `{"alg":"EdDSA","kid":"<thumbprint>","typ":"optin-slice+jwt"}`.
//! Verification checks `alg` and `kid` before the signature, and never lets the token choose
//! its algorithm: a slice signed any other way is refused. The other signed documents
//! (consent requests, receipts) carry headers of their own and share only `compact`'s
//! splitting, decoding and verifying.

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::b64;

/// The `typ` header of slices (explicit typing, RFC 8725 section 3.11).
pub const TYP: &str = "optin-slice+jwt";
/// Largest JWS accepted for verification, in bytes.
pub const MAX_LEN: usize = 32 * 1024 * 1024;

/// An Ed25519 public key as a JWK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, base64url.
    pub x: String,
    /// The RFC 7638 thumbprint of this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// Why a JWS or JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not three base64url parts, or a part does not decode.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than EdDSA.
    #[error("unexpected algorithm `{0}`: only EdDSA is accepted")]
    Algorithm(String),
    /// The header's `kid` is not the pinned key's thumbprint.
    #[error("the JWS names key `{found}`, expected `{expected}`")]
    KeyId {
        /// The thumbprint of the pinned key.
        expected: String,
        /// What the header said.
        found: String,
    },
    /// The header's `typ` is not [`TYP`].
    #[error("unexpected typ `{0}`")]
    Type(String),
    /// The JWK is not an Ed25519 public key.
    #[error("not an Ed25519 JWK: {0}")]
    Key(&'static str),
    /// The signature does not verify.
    #[error("signature does not verify")]
    Signature,
}

impl Jwk {
    /// The JWK of an Ed25519 public key, with its `kid`, `alg` and `use`.
    pub fn ed25519(public_key: &[u8]) -> Jwk {
        let mut jwk =
            Jwk { kty: "OKP".into(), crv: "Ed25519".into(), x: b64::encode(public_key), kid: None, alg: Some("EdDSA".into()), use_: Some("sig".into()) };
        jwk.kid = Some(jwk.thumbprint());
        jwk
    }

    /// The RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order,
    /// without whitespace, base64url.
    pub fn thumbprint(&self) -> String {
        // The members are serialized by hand because RFC 7638 fixes their order and form;
        // `serde_json::to_string` on a &str yields the JSON string with escaping.
        let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
        let canonical = format!(r#"{{"crv":{},"kty":{},"x":{}}}"#, s(&self.crv), s(&self.kty), s(&self.x));
        b64::encode(crate::sha256(canonical.as_bytes()))
    }

    /// The raw public key, after checking this is an Ed25519 JWK.
    pub fn public_key(&self) -> Result<Vec<u8>, JwsError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(JwsError::Key("kty must be OKP and crv Ed25519"));
        }
        if self.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return Err(JwsError::Key("alg must be EdDSA"));
        }
        b64::decode(&self.x).filter(|x| x.len() == 32).ok_or(JwsError::Key("x must be 32 bytes of base64url"))
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// Signs `payload` (JSON bytes) as a compact JWS with the fixed header.
pub fn sign(key: &Ed25519KeyPair, payload: &[u8]) -> String {
    let kid = Jwk::ed25519(key.public_key().as_ref()).thumbprint();
    let header = Header { alg: "EdDSA".into(), kid, typ: TYP.into() };
    // A struct of three strings always serializes.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let signing_input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64::encode(sig.as_ref()))
}

/// Verifies a compact JWS against a pinned key and returns its payload bytes.
pub fn verify(jws: &str, jwk: &Jwk) -> Result<Vec<u8>, JwsError> {
    if jws.len() > MAX_LEN {
        return Err(JwsError::Malformed("too long"));
    }
    let public = jwk.public_key()?;
    let mut parts = jws.trim_end().split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Malformed("expected three dot-separated parts"));
    };
    let header = b64::decode(h).ok_or(JwsError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header).map_err(|_| JwsError::Malformed("header is not JSON with alg, kid and typ"))?;
    if header.alg != "EdDSA" {
        return Err(JwsError::Algorithm(header.alg));
    }
    let expected = jwk.thumbprint();
    if header.kid != expected {
        return Err(JwsError::KeyId { expected, found: header.kid });
    }
    if header.typ != TYP {
        return Err(JwsError::Type(header.typ));
    }
    let sig = b64::decode(s).ok_or(JwsError::Malformed("signature is not base64url"))?;
    UnparsedPublicKey::new(&signature::ED25519, public).verify(format!("{h}.{p}").as_bytes(), &sig).map_err(|_| JwsError::Signature)?;
    b64::decode(p).ok_or(JwsError::Malformed("payload is not base64url"))
}

/// Compact JWS with a header of the caller's choosing, Ed25519 only, for the documents of
/// this crate that are not slices (requests, receipts). Each caller parses and checks its own
/// header; this module only splits, decodes and verifies.
pub(crate) mod compact {
    use super::*;

    /// The parts of a compact JWS, decoded.
    pub struct Opened<'a> {
        pub header: Vec<u8>,
        pub payload: Vec<u8>,
        pub signing_input: &'a str,
        pub signature: Vec<u8>,
    }

    /// `header` and `payload` signed with `key`.
    pub fn sign(key: &Ed25519KeyPair, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(sig.as_ref()))
    }

    /// Splits and decodes; says what is wrong otherwise.
    pub fn open(jws: &str) -> Result<Opened<'_>, &'static str> {
        let (signing_input, s) = jws.rsplit_once('.').ok_or("expected three dot-separated parts")?;
        let (h, p) = signing_input.split_once('.').ok_or("expected three dot-separated parts")?;
        if p.contains('.') {
            return Err("expected three dot-separated parts");
        }
        let header = b64::decode(h).ok_or("the header is not base64url")?;
        let payload = b64::decode(p).ok_or("the payload is not base64url")?;
        let signature = b64::decode(s).ok_or("the signature is not base64url")?;
        Ok(Opened { header, payload, signing_input, signature })
    }

    /// Whether the signature verifies with the 32-byte Ed25519 `public` key.
    pub fn verifies(public: &[u8], opened: &Opened<'_>) -> bool {
        UnparsedPublicKey::new(&signature::ED25519, public).verify(opened.signing_input.as_bytes(), &opened.signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap()
    }

    #[test]
    fn rfc8037_thumbprint() {
        // RFC 8037, appendix A.3: the thumbprint of the example public key.
        let jwk = Jwk { kty: "OKP".into(), crv: "Ed25519".into(), x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(), kid: None, alg: None, use_: None };
        assert_eq!(jwk.thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn rfc8037_signature() {
        // RFC 8037, appendix A.4: Ed25519 signing of "Example of Ed25519 signing" with the
        // example key gives this exact JWS (header {"alg":"EdDSA"}).
        let seed = b64::decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap();
        let key = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = b64::encode(key.sign(input.as_bytes()));
        assert_eq!(sig, "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg");
    }

    #[test]
    fn signs_and_verifies() {
        let key = key();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let jws = sign(&key, br#"{"hello":"world"}"#);
        assert_eq!(verify(&jws, &jwk).unwrap(), br#"{"hello":"world"}"#);
    }

    #[test]
    fn rejects_tampering_and_other_keys() {
        let key = key();
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let jws = sign(&key, br#"{"n":1}"#);
        let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
        let other_jwk = Jwk::ed25519(other.public_key().as_ref());
        assert!(matches!(verify(&jws, &other_jwk), Err(JwsError::KeyId { .. })));
        let (h, rest) = jws.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let forged = format!("{h}.{}.{s}", b64::encode(br#"{"n":2}"#));
        assert_eq!(verify(&forged, &jwk), Err(JwsError::Signature));
        let none = format!("{}.{}.", b64::encode(br#"{"alg":"none","kid":"x","typ":"optin-slice+jwt"}"#), b64::encode(b"{}"));
        assert!(matches!(verify(&none, &jwk), Err(JwsError::Algorithm(_))));
        for bad in ["", "a.b", "a.b.c.d", "!.!.!"] {
            assert!(matches!(verify(bad, &jwk), Err(JwsError::Malformed(_))), "{bad}");
        }
    }
}
