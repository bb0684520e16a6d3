//! The identity key and every secret derived from it.
//!
//! One Ed25519 key in `identity.pk8` is the root. Each grant's signing key, token secret,
//! pseudonym and item-id key are derived from it by HMAC-SHA256 under distinct labels, so:
//! the store holds no secret (a copy of the database alone forges nothing), two grants share
//! no key or id (marketers cannot link their slices), and nothing has to be stored per grant
//! to keep tokens and keys stable across restarts.

use anyhow::{Context, Result};
use base64::Engine;
use optin_protocol::jws::Jwk;
use optin_protocol::scope::GrantId;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use ring::{aead, hmac};

use crate::home::{write_private, Home};

/// Longest store position a cursor holds: kind (1), time (8) and the longest signal id.
const CURSOR_POSITION_MAX: usize = 1 + 8 + optin_protocol::signal::limits::ID_CHARS;
/// What is sealed in every cursor: the position's length (1), the position, zeros to fill.
const CURSOR_PLAIN: usize = 1 + CURSOR_POSITION_MAX;
/// Bytes of every cursor: nonce, sealed position, and AES-256-GCM's 16-byte tag.
const CURSOR_BYTES: usize = aead::NONCE_LEN + CURSOR_PLAIN + 16;
/// Characters of every cursor: its bytes in base64url without padding (SPEC.md says 222).
const CURSOR_CHARS: usize = (4 * CURSOR_BYTES).div_ceil(3);

/// The agent's root of secrets.
pub struct Keys {
    master: hmac::Key,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// What one grant uses: its signing key, its token secret and its pseudonyms.
pub struct GrantKeys {
    /// Signs this grant's slices.
    pub signing: Ed25519KeyPair,
    /// The HMAC root of this grant's tokens.
    pub token_secret: [u8; 32],
    /// The person, as this grant knows them.
    pub pseudonym: String,
    item_ids: hmac::Key,
    cursors: aead::LessSafeKey,
}

impl GrantKeys {
    /// The public key as a JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(self.signing.public_key().as_ref())
    }

    /// The `iss` of this grant's slices.
    pub fn issuer(&self) -> String {
        format!("urn:optin:agent:{}", self.pseudonym)
    }

    /// Seals a position in the store into an opaque cursor. The store key names the signal's
    /// internal id and exact time, which a marketer must not see (the id could be linked
    /// across grants, the time is finer than a `category` grant shows); sealing also makes a
    /// cursor useless to any other grant. The position is padded to the longest there can be
    /// first, so every cursor has the same length and its length says nothing about the id
    /// inside. `None` for an empty or longer position, or when there is no randomness.
    pub fn seal_cursor(&self, position: &[u8]) -> Option<String> {
        let len = u8::try_from(position.len()).ok().filter(|n| (1..=CURSOR_POSITION_MAX).contains(&usize::from(*n)))?;
        let mut nonce = [0u8; aead::NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(CURSOR_BYTES);
        sealed.push(len);
        sealed.extend_from_slice(position);
        sealed.resize(CURSOR_PLAIN, 0);
        self.cursors.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::empty(), &mut sealed).ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a cursor sealed by [`GrantKeys::seal_cursor`] and strips its padding; `None` if
    /// it is not one of this grant's, or not of the one length every cursor has (a cursor
    /// sealed before cursors were padded included: cursors are short-lived).
    pub fn open_cursor(&self, cursor: &str) -> Option<Vec<u8>> {
        if cursor.len() != CURSOR_CHARS {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let (nonce, sealed) = bytes.split_at_checked(aead::NONCE_LEN)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self.cursors.open_in_place(nonce, aead::Aad::empty(), &mut sealed).ok()?;
        // Authenticated, so made by this agent; checked all the same, as parsing should be.
        let (&len, rest) = plain.split_first()?;
        let (position, padding) = rest.split_at_checked(usize::from(len))?;
        (plain.len() == CURSOR_PLAIN && len >= 1 && padding.iter().all(|b| *b == 0)).then(|| position.to_vec())
    }

    /// A signal's id as this grant sees it.
    pub fn item_id(&self, signal_id: &str) -> String {
        let tag = hmac::sign(&self.item_ids, signal_id.as_bytes());
        format!("i_{}", &optin_protocol::hex(tag.as_ref())[..32])
    }
}

impl Keys {
    /// Loads the identity key of `home`, making one (0600) on first use.
    pub fn load_or_create(home: &Home) -> Result<Keys> {
        let path = home.identity_key();
        let pkcs8 = if path.exists() {
            crate::home::check_private(&path)?;
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        } else {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| anyhow::anyhow!("cannot generate an Ed25519 key"))?;
            write_private(&path, doc.as_ref())?;
            doc.as_ref().to_vec()
        };
        Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key: {e}", path.display()))?;
        // The PKCS#8 document holds the private seed, so its digest is as secret as the key.
        let digest = ring::digest::digest(&ring::digest::SHA256, &[b"optin-master-v1\x00".as_slice(), &pkcs8].concat());
        Ok(Keys { master: hmac::Key::new(hmac::HMAC_SHA256, digest.as_ref()) })
    }

    fn derive(&self, label: &str, context: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.master, format!("{label}\x00{context}").as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The keys of one grant.
    pub fn grant(&self, id: &GrantId) -> Result<GrantKeys> {
        let seed = self.derive("grant-signing-key", id.as_str());
        let signing = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| anyhow::anyhow!("cannot derive a signing key"))?;
        Ok(GrantKeys {
            signing,
            token_secret: self.derive("grant-token-secret", id.as_str()),
            pseudonym: format!("p_{}", &optin_protocol::hex(&self.derive("grant-pseudonym", id.as_str()))[..32]),
            item_ids: hmac::Key::new(hmac::HMAC_SHA256, &self.derive("grant-item-ids", id.as_str())),
            cursors: aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &self.derive("grant-cursor-key", id.as_str()))
                    .map_err(|_| anyhow::anyhow!("cannot derive a cursor key"))?,
            ),
        })
    }

    /// The key of the store's MACs (grants, audit records, the audit chain's head): with it
    /// out of the store, a database edited behind optin's back cannot pass for one it wrote.
    pub fn store_mac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.derive("store-mac-key", ""))
    }

    /// The owner's ingest token (for `POST /v1/signals`).
    pub fn ingest_token(&self) -> String {
        format!("optin_ingest_{}", optin_protocol::hex(&self.derive("owner-ingest-token", "")))
    }

    /// Checks a presented ingest token in constant time.
    pub fn check_ingest_token(&self, presented: &str) -> bool {
        // Comparing HMACs of both sides under a fresh key keeps the comparison constant-time
        // whatever their lengths.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.derive("ingest-compare", ""));
        let expected = hmac::sign(&key, self.ingest_token().as_bytes());
        hmac::verify(&key, presented.as_bytes(), expected.as_ref()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn grant_keys(seed: u8) -> GrantKeys {
        let keys = Keys { master: hmac::Key::new(hmac::HMAC_SHA256, &[seed; 32]) };
        keys.grant(&GrantId::from_bytes([seed; 12])).expect("grant keys")
    }

    /// A store position of a search with an id of `id_chars` characters.
    fn position(id_chars: usize) -> Vec<u8> {
        let mut key = vec![1, 0x80, 0, 0, 0, 0, 0, 0, 1];
        key.resize(9 + id_chars, b'x');
        key
    }

    /// `plain` sealed as a cursor is, whatever it holds.
    fn sealed(keys: &GrantKeys, plain: &[u8]) -> String {
        let nonce = [7u8; aead::NONCE_LEN];
        let mut sealed = plain.to_vec();
        keys.cursors.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::empty(), &mut sealed).expect("seal");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([nonce.as_slice(), &sealed].concat())
    }

    #[test]
    fn cursors_have_one_length_whatever_the_signals_id() {
        let keys = grant_keys(1);
        let ids = [1, 2, 34, 127, optin_protocol::signal::limits::ID_CHARS];
        let lengths: BTreeSet<usize> = ids.iter().map(|n| keys.seal_cursor(&position(*n)).expect("a cursor").len()).collect();
        assert_eq!(lengths, BTreeSet::from([222]), "SPEC.md gives every cursor 222 characters");
        assert_eq!(CURSOR_CHARS, 222);
        for n in ids {
            let cursor = keys.seal_cursor(&position(n)).expect("a cursor");
            assert_eq!(keys.open_cursor(&cursor), Some(position(n)), "an id of {n} characters");
        }
    }

    #[test]
    fn rejects_cursors_that_are_not_this_grants_padded_positions() {
        let keys = grant_keys(1);
        let cursor = keys.seal_cursor(&position(5)).expect("a cursor");
        let padded = |len: u8, position: &[u8], fill: u8| {
            let mut plain = vec![len];
            plain.extend_from_slice(position);
            plain.resize(CURSOR_PLAIN, fill);
            plain
        };
        let mut flipped = cursor.clone().into_bytes();
        flipped[100] = if flipped[100] == b'A' { b'B' } else { b'A' };
        let cases: Vec<(&str, String)> = vec![
            ("another grant's", grant_keys(2).seal_cursor(&position(5)).expect("a cursor")),
            ("cut short", cursor[..CURSOR_CHARS - 1].to_owned()),
            ("one character more", format!("{cursor}A")),
            ("altered", String::from_utf8(flipped).expect("base64 is ASCII")),
            ("empty", String::new()),
            ("sealed before cursors were padded", sealed(&keys, &position(5))),
            ("with a zero length", sealed(&keys, &padded(0, &position(5), 0))),
            ("with a length past the end", sealed(&keys, &padded(u8::MAX, &position(5), 0))),
            ("with padding that is not zeros", sealed(&keys, &padded(14, &position(5), 1))),
        ];
        for (what, cursor) in cases {
            assert_eq!(keys.open_cursor(&cursor), None, "a cursor {what}");
        }
        assert_eq!(keys.open_cursor(&sealed(&keys, &padded(14, &position(5), 0))), Some(position(5)), "the same, well made");
    }

    #[test]
    fn rejects_sealing_positions_no_signal_has() {
        let keys = grant_keys(1);
        assert_eq!(keys.seal_cursor(&[]), None);
        assert_eq!(keys.seal_cursor(&position(optin_protocol::signal::limits::ID_CHARS + 1)), None);
    }
}
