//! Bearer tokens: macaroon-style HMAC-SHA256 chains.
//!
//! ```text
//! token   = "optin_" b64url(body) "." b64url(tag)
//! body    = {"v":1,"g":"<grant id>","c":["<caveat>", ...]}
//! tag_0   = HMAC-SHA256(grant secret, "optin-token-v1" 0x00 grant id)
//! tag_i   = HMAC-SHA256(tag_(i-1), caveat_i)            (caveat text as written)
//! tag     = tag_n
//! ```
//!
//! Anyone holding a token can append a caveat and compute the next tag ([`Token::attenuate`]),
//! so a marketer narrows a token for a partner offline. Nobody can remove a caveat: that
//! would need the previous tag, which HMAC does not reveal. Only the agent, which knows the
//! grant secret, can check the chain ([`Token::verify`]); revoking the grant kills every token
//! derived from it. The fixed prefix lets secret scanners find leaked tokens.

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::b64;
use crate::scope::{Caveat, GrantId, Terms};

/// Every token starts with this.
pub const PREFIX: &str = "optin_";
/// Longest token accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Most caveats in one token.
pub const MAX_CAVEATS: usize = 32;
const DOMAIN: &[u8] = b"optin-token-v1\x00";

/// A parsed token. Parsing checks the shape; only [`Token::verify`] checks the tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    grant: GrantId,
    caveats: Vec<String>,
    tag: [u8; 32],
}

impl std::fmt::Debug for Token {
    // The tag is the bearer secret: keep it out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("grant", &self.grant).field("caveats", &self.caveats).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyJson {
    v: u32,
    g: GrantId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<String>,
}

/// Why a token was refused. Callers answer all of these with the same 401, so that a
/// guesser learns nothing; the variants exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the form `optin_BODY.TAG`.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A caveat could not be parsed.
    #[error(transparent)]
    Caveat(#[from] crate::scope::CaveatError),
    /// The tag does not match: forged, altered, or made for another grant secret.
    #[error("token signature does not verify")]
    BadTag,
    /// The caveats leave nothing to see.
    #[error("token caveats exclude everything")]
    Empty,
}

impl Token {
    /// Mints the root token of a grant.
    pub fn mint(secret: &[u8], grant: &GrantId) -> Token {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, &[DOMAIN, grant.as_str().as_bytes()].concat());
        Token { grant: grant.clone(), caveats: Vec::new(), tag: to_array(tag.as_ref()) }
    }

    /// A narrower token: this one plus `caveat`. Needs no secret.
    pub fn attenuate(&self, caveat: &Caveat) -> Token {
        let text = caveat.to_string();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.tag);
        let tag = hmac::sign(&key, text.as_bytes());
        let mut caveats = self.caveats.clone();
        caveats.push(text);
        Token { grant: self.grant.clone(), caveats, tag: to_array(tag.as_ref()) }
    }

    /// The grant this token claims to belong to (unverified until [`Token::verify`]).
    pub fn grant(&self) -> &GrantId {
        &self.grant
    }

    /// The caveats, parsed.
    pub fn caveats(&self) -> Result<Vec<Caveat>, TokenError> {
        self.caveats.iter().map(|c| c.parse().map_err(TokenError::Caveat)).collect()
    }

    /// Parses a token's text.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        if text.len() > MAX_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let rest = text.strip_prefix(PREFIX).ok_or(TokenError::Malformed("missing optin_ prefix"))?;
        let (body, tag) = rest.split_once('.').ok_or(TokenError::Malformed("missing tag"))?;
        let body = b64::decode(body).ok_or(TokenError::Malformed("body is not base64url"))?;
        let body: BodyJson = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed("body is not a token body"))?;
        if body.v != 1 {
            return Err(TokenError::Malformed("unknown version"));
        }
        if body.c.len() > MAX_CAVEATS {
            return Err(TokenError::Malformed("too many caveats"));
        }
        let tag = b64::decode(tag).filter(|t| t.len() == 32).ok_or(TokenError::Malformed("tag is not 32 bytes of base64url"))?;
        let token = Token { grant: body.g, caveats: body.c, tag: to_array(&tag) };
        token.caveats()?;
        Ok(token)
    }

    /// The token's text.
    pub fn encode(&self) -> String {
        let body = BodyJson { v: 1, g: self.grant.clone(), c: self.caveats.clone() };
        // Serializing a struct of strings to JSON cannot fail.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        format!("{PREFIX}{}.{}", b64::encode(json), b64::encode(self.tag))
    }

    /// Checks the chain against the grant's secret, in constant time, and returns the
    /// grant's terms narrowed by the caveats.
    pub fn verify(&self, secret: &[u8], terms: &Terms) -> Result<Terms, TokenError> {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let first = [DOMAIN, self.grant.as_str().as_bytes()].concat();
        let verified = match self.caveats.split_last() {
            None => hmac::verify(&root, &first, &self.tag),
            Some((last, earlier)) => {
                let mut tag = hmac::sign(&root, &first);
                for caveat in earlier {
                    tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()), caveat.as_bytes());
                }
                hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()), last.as_bytes(), &self.tag)
            }
        };
        verified.map_err(|_| TokenError::BadTag)?;
        let caveats = self.caveats()?;
        // A token names at most one partner: a holder may narrow who slices are for once,
        // never rename an audience someone else already set.
        let mut audiences = caveats.iter().filter_map(|c| match c {
            Caveat::Audience(a) => Some(a),
            _ => None,
        });
        if let Some(first) = audiences.next() {
            if audiences.any(|a| a != first) {
                return Err(TokenError::Empty);
            }
        }
        caveats.iter().try_fold(terms.clone(), |t, c| t.narrow(c)).ok_or(TokenError::Empty)
    }
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes[..32]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Granularity;
    use time::macros::datetime;

    fn terms() -> Terms {
        Terms {
            audience: "acme".into(),
            kinds: "search,cart,purchase".parse().unwrap(),
            granularity: Granularity::Raw,
            window: "30d".parse().unwrap(),
            expires_at: datetime!(2027-01-01 0:00 UTC),
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn grant() -> GrantId {
        GrantId::parse("g_000102030405060708090a0b").unwrap()
    }

    #[test]
    fn minted_and_attenuated_tokens_verify() {
        let root = Token::mint(SECRET, &grant());
        let parsed = Token::parse(&root.encode()).unwrap();
        assert_eq!(parsed.verify(SECRET, &terms()).unwrap(), terms());
        let narrow = parsed.attenuate(&"kinds=search".parse().unwrap()).attenuate(&"aud=partner.example".parse().unwrap());
        let t = Token::parse(&narrow.encode()).unwrap().verify(SECRET, &terms()).unwrap();
        assert_eq!(t.kinds.to_string(), "search");
        assert_eq!(t.audience, "partner.example");
    }

    #[test]
    fn rejects_other_secret_and_removed_caveats() {
        let root = Token::mint(SECRET, &grant());
        assert_eq!(root.verify(b"another secret", &terms()), Err(TokenError::BadTag));
        let narrow = root.attenuate(&"kinds=search".parse().unwrap());
        let widened = Token { caveats: Vec::new(), ..narrow.clone() };
        assert_eq!(widened.verify(SECRET, &terms()), Err(TokenError::BadTag));
        let swapped = Token { caveats: vec!["kinds=search,cart".into()], ..narrow };
        assert_eq!(swapped.verify(SECRET, &terms()), Err(TokenError::BadTag));
    }

    #[test]
    fn rejects_every_single_bit_flip() {
        let text = Token::mint(SECRET, &grant()).attenuate(&"window=7d".parse().unwrap()).encode();
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[i] ^= 1 << bit;
                let Ok(s) = std::str::from_utf8(&flipped) else { continue };
                if let Ok(t) = Token::parse(s) {
                    assert!(t.verify(SECRET, &terms()).is_err(), "flip at {i} bit {bit} verified: {s}");
                }
            }
        }
    }

    #[test]
    fn rejects_malformed_tokens() {
        let good = Token::mint(SECRET, &grant()).encode();
        let (body, tag) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            "optin_".into(),
            good.replacen("optin_", "optout_", 1),
            body.to_owned(),
            format!("{body}.{}", &tag[..10]),
            format!("{body}.!!!"),
            format!("optin_{}.{tag}", b64::encode(r#"{"v":2,"g":"g_000102030405060708090a0b"}"#)),
            format!("optin_{}.{tag}", b64::encode(r#"{"v":1,"g":"nope"}"#)),
            format!("optin_{}.{tag}", b64::encode(r#"{"v":1,"g":"g_000102030405060708090a0b","c":["colour=red"]}"#)),
            "x".repeat(MAX_LEN + 1),
        ] {
            assert!(Token::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_a_second_audience() {
        let t = Token::mint(SECRET, &grant()).attenuate(&"aud=partner.example".parse().unwrap());
        assert!(t.verify(SECRET, &terms()).is_ok());
        let renamed = t.attenuate(&"aud=acme.example".parse().unwrap());
        assert_eq!(renamed.verify(SECRET, &terms()), Err(TokenError::Empty));
    }

    #[test]
    fn caveats_excluding_everything_are_refused() {
        let narrow = Token::mint(SECRET, &grant()).attenuate(&"kinds=search".parse().unwrap());
        let t = Terms { kinds: "cart".parse().unwrap(), ..terms() };
        assert_eq!(narrow.verify(SECRET, &t), Err(TokenError::Empty));
    }
}
