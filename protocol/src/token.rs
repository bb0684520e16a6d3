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
//!
//! A token has exactly one text: [`Token::parse`] refuses any body that is not byte for byte
//! what [`Token::encode`] writes for the parsed value (base64url without padding or stray
//! trailing bits, JSON without whitespace or escapes, keys in the order `v`, `g`, `c`, no
//! empty `c`, every caveat as [`Caveat`] prints it). Otherwise one token would have many
//! spellings, and anything that compares, counts or revokes tokens by their text (a leak
//! scanner, a marketer's cache, a log) would see different tokens where there is one.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
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
    /// A well-formed token written in another way than its one canonical text. Anyone can
    /// check this without a secret, so the reason may be told to the client.
    #[error("token is not in canonical form: {0}")]
    NonCanonical(&'static str),
}

/// Decodes what the strict decoder refuses but a lenient one reads: padding, and bits after
/// the last whole byte that are not zero. Used only to say why a token was refused.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_decode_allow_trailing_bits(true),
);

/// Decodes one base64url part of a token, telling a non-canonical spelling of valid bytes
/// (`non_canonical`) from text that is not base64url at all (`malformed`).
fn decode_part(text: &str, non_canonical: &'static str, malformed: &'static str) -> Result<Vec<u8>, TokenError> {
    match b64::decode(text) {
        Some(bytes) => Ok(bytes),
        None if LENIENT.decode(text).is_ok() => Err(TokenError::NonCanonical(non_canonical)),
        None => Err(TokenError::Malformed(malformed)),
    }
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

    /// Parses a token's text, refusing every spelling but the canonical one.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        if text.len() > MAX_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let rest = text.strip_prefix(PREFIX).ok_or(TokenError::Malformed("missing optin_ prefix"))?;
        let (body_text, tag_text) = rest.split_once('.').ok_or(TokenError::Malformed("missing tag"))?;
        let body_bytes = decode_part(body_text, "body is base64url with padding or non-zero trailing bits", "body is not base64url")?;
        let body: BodyJson = serde_json::from_slice(&body_bytes)
            .map_err(|_| TokenError::Malformed("body is not a token body (a JSON object with v, g and c, each at most once)"))?;
        if body.v != 1 {
            return Err(TokenError::Malformed("unknown version"));
        }
        if body.c.len() > MAX_CAVEATS {
            return Err(TokenError::Malformed("too many caveats"));
        }
        let tag = decode_part(tag_text, "tag is base64url with padding or non-zero trailing bits", "tag is not base64url")?;
        if tag.len() != 32 {
            return Err(TokenError::Malformed("tag is not 32 bytes"));
        }
        let token = Token { grant: body.g, caveats: body.c, tag: to_array(&tag) };
        // The tag covers each caveat's bytes, so a holder could MAC `window=14d` where the
        // encoder writes `window=2w`: same meaning, another token. Only the printed form counts.
        for (text, caveat) in token.caveats.iter().zip(token.caveats()?) {
            if *text != caveat.to_string() {
                return Err(TokenError::NonCanonical("a caveat is not written as it prints (e.g. `window=2w`, not `window=14d`)"));
            }
        }
        if token.body_json() != body_bytes {
            return Err(TokenError::NonCanonical("body is not compact JSON with keys v, g, c in that order, no escapes and no empty c"));
        }
        Ok(token)
    }

    /// The body's JSON bytes as [`Token::encode`] writes them.
    fn body_json(&self) -> Vec<u8> {
        let body = BodyJson { v: 1, g: self.grant.clone(), c: self.caveats.clone() };
        // Serializing a struct of strings to JSON cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The token's text.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}.{}", b64::encode(self.body_json()), b64::encode(self.tag))
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
            categories: None,
            merchants: None,
            fields: None,
            rate: None,
            noise: None,
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

    /// The token of `token-attenuated.txt`, with caveats written as given (canonical or not)
    /// and a tag that verifies: what a holder can make offline from the root token.
    fn chained(caveats: &[&str]) -> Token {
        let mut token = Token::mint(SECRET, &grant());
        for text in caveats {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &token.tag), text.as_bytes());
            token.caveats.push((*text).to_owned());
            token.tag = to_array(tag.as_ref());
        }
        token
    }

    /// `optin_` + the body's bytes + the tag, each part base64url as given.
    fn spelled(body: &str, tag: &str) -> String {
        format!("{PREFIX}{body}.{tag}")
    }

    /// Flips the lowest unused bit of the last base64url character, so the text decodes to
    /// the same bytes with a non-zero trailing bit.
    fn with_trailing_bit(b64: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (head, last) = b64.split_at(b64.len() - 1);
        let index = ALPHABET.iter().position(|&c| c == last.as_bytes()[0]).unwrap();
        format!("{head}{}", ALPHABET[index ^ 1] as char)
    }

    #[test]
    fn rejects_non_canonical_spellings() {
        let caveats = ["kinds=search", "aud=partner.example"];
        let good = chained(&caveats);
        let body = String::from_utf8(good.body_json()).unwrap();
        let tag = b64::encode(good.tag);
        assert!(tag.contains(['-', '_']), "the tag differs between the base64 alphabets: {tag}");
        let padded = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE.encode(bytes);
        // The body of `good` re-encoded with every spelling but the one the encoder writes;
        // each with the reason expected (`Ok` for the canonical text, which must parse).
        let root = Token::mint(SECRET, &grant());
        let root_tag = b64::encode(root.tag);
        let g = grant();
        let g = g.as_str();
        // A body whose length is not a multiple of 3, so its last character has spare bits.
        let odd = format!(r#"{{"v":1,"g":"{g}","c":["kinds=search","aud=partner.exampl"]}}"#);
        assert_ne!(odd.len() % 3, 0);
        let odd_token = chained(&["kinds=search", "aud=partner.exampl"]);
        assert_eq!(String::from_utf8(odd_token.body_json()).unwrap(), odd);
        let table: Vec<(&str, String, Result<(), &str>)> = vec![
            ("canonical", good.encode(), Ok(())),
            ("canonical, spelled by hand", spelled(&b64::encode(&body), &tag), Ok(())),
            ("tag with padding", spelled(&b64::encode(&body), &padded(&good.tag)), Err("tag is base64url with padding")),
            (
                "tag with a trailing bit set",
                spelled(&b64::encode(&body), &with_trailing_bit(&tag)),
                Err("tag is base64url with padding or non-zero trailing bits"),
            ),
            ("body with padding", spelled(&padded(odd.as_bytes()), &b64::encode(odd_token.tag)), Err("body is base64url with padding")),
            (
                "body with a trailing bit set",
                spelled(&with_trailing_bit(&b64::encode(&odd)), &b64::encode(odd_token.tag)),
                Err("body is base64url with padding or non-zero trailing bits"),
            ),
            ("tag in standard base64", spelled(&b64::encode(&body), &tag.replace('-', "+").replace('_', "/")), Err("tag is not base64url")),
            ("a space after a colon", spelled(&b64::encode(body.replacen(":", ": ", 1)), &tag), Err("body is not compact JSON")),
            ("a trailing newline", spelled(&b64::encode(format!("{body}\n")), &tag), Err("body is not compact JSON")),
            (
                "pretty-printed",
                spelled(&b64::encode(serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&body).unwrap()).unwrap()), &tag),
                Err("body is not compact JSON"),
            ),
            (
                "keys in another order",
                spelled(&b64::encode(format!(r#"{{"g":"{g}","v":1,"c":["kinds=search","aud=partner.example"]}}"#)), &tag),
                Err("keys v, g, c in that order"),
            ),
            ("an escaped character", spelled(&b64::encode(body.replacen("g_", "g\\u005f", 1)), &tag), Err("no escapes")),
            ("an escaped character in a caveat", spelled(&b64::encode(body.replacen("kinds=", "kinds\\u003d", 1)), &tag), Err("no escapes")),
            ("an empty caveat list", spelled(&b64::encode(format!(r#"{{"v":1,"g":"{g}","c":[]}}"#)), &root_tag), Err("no empty c")),
            ("a duplicate key", spelled(&b64::encode(body.replacen(r#"{"v":1,"#, r#"{"v":1,"v":1,"#, 1)), &tag), Err("each at most once")),
            ("version as a float", spelled(&b64::encode(body.replacen(r#""v":1"#, r#""v":1.0"#, 1)), &tag), Err("body is not a token body")),
            ("a span not in its largest unit", chained(&["window=14d"]).encode(), Err("a caveat is not written as it prints")),
            ("kinds in another order", chained(&["kinds=cart,search"]).encode(), Err("a caveat is not written as it prints")),
            ("a repeated kind", chained(&["kinds=search,search"]).encode(), Err("a caveat is not written as it prints")),
            ("a space in a caveat", chained(&["kinds= search"]).encode(), Err("a caveat is not written as it prints")),
            ("an expiry with an offset", chained(&["expires=2027-01-01T01:00:00+01:00"]).encode(), Err("a caveat is not written as it prints")),
            ("an expiry in lowercase", chained(&["expires=2027-01-01t00:00:00z"]).encode(), Err("a caveat is not written as it prints")),
            ("categories out of order", chained(&["categories=Toys,Apparel"]).encode(), Err("a caveat is not written as it prints")),
            ("a repeated category", chained(&["categories=Toys,Toys"]).encode(), Err("a caveat is not written as it prints")),
            ("a comma escaped in lowercase", chained(&["categories=Food%2c Drink"]).encode(), Err("`%` is written only as")),
            ("an escape that needs none", chained(&["categories=Food%20Drink"]).encode(), Err("`%` is written only as")),
            ("merchants out of order", chained(&["merchants=b.example,a.example"]).encode(), Err("a caveat is not written as it prints")),
            ("a repeated merchant", chained(&["merchants=a.example,a.example"]).encode(), Err("a caveat is not written as it prints")),
            ("fields out of order", chained(&["fields=query,merchant"]).encode(), Err("a caveat is not written as it prints")),
            ("a rate with a leading zero", chained(&["rate=02/day"]).encode(), Err("is not a rate")),
            (
                "filters canonical",
                chained(&["categories=Apparel,Food%2C Drink", "merchants=a.example,b.example", "fields=merchant,query", "rate=2/day"]).encode(),
                Ok(()),
            ),
        ];
        for (what, text, expected) in table {
            match (Token::parse(&text), expected) {
                (Ok(token), Ok(())) => {
                    assert_eq!(token.encode(), text, "{what}: the canonical text round-trips");
                    assert!(token.verify(SECRET, &terms()).is_ok(), "{what}: verifies");
                }
                (Err(e), Err(says)) => {
                    let message = e.to_string();
                    assert!(message.contains(says), "{what}: refused for another reason: {message}");
                }
                (got, want) => panic!("{what}: {text}\n got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn non_canonical_spellings_still_carry_a_valid_tag() {
        // The variants above are refused for their spelling alone: with the old, lenient
        // parse, each would verify as the same grant's token.
        for caveats in [&["window=14d"][..], &["kinds=cart,search"], &["expires=2027-01-01T01:00:00+01:00"]] {
            let token = chained(caveats);
            assert!(token.verify(SECRET, &terms()).is_ok(), "{caveats:?}");
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
