//! The store's MACs: what tells a record this optin wrote from one written behind its back.
//!
//! The hash chain alone holds no secret: anyone who can write the database can rebuild it
//! whole, with new hashes and a new head. So every audit record, the chain head and every
//! grant also carries an HMAC-SHA256 under a key derived from the identity key
//! ([`StoreMac`]), which is not in the store. Each MAC names what it is for, so no MAC of
//! one kind passes for another:
//!
//! | what          | MAC input                                                          |
//! |---------------|--------------------------------------------------------------------|
//! | audit record  | `optin-audit-record-v1` 0x00 · seq (8) · SHA-256(stored bytes)     |
//! | chain head    | `optin-audit-head-v1` 0x00 · seq (8) · hash (32)                   |
//! | checkpoint    | `optin-audit-checkpoint-v1` 0x00 · stored bytes                    |
//! | grant         | `optin-grant-v1` 0x00 · grant id · 0x00 · stored bytes             |
//! | refusal count | `optin-refusal-count-v1` 0x00 · its key · 0x00 · stored bytes      |
//! | request       | `optin-request-v1` 0x00 · its key · 0x00 · stored bytes            |

use optin_protocol::scope::GrantId;
use ring::hmac;

use super::record::AuditHead;

/// Whether what was read carries the MAC this optin would have written for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// It does: this optin wrote it as it is.
    Valid,
    /// It has none: written by an older optin, or behind optin's back.
    Missing,
    /// It has one that does not match: written or changed without the identity key.
    Invalid,
}

/// The key of the store's MACs ([`crate::store::Store::keyed`] takes it; the agent derives
/// it from its identity key).
pub struct StoreMac {
    key: hmac::Key,
}

impl std::fmt::Debug for StoreMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreMac(..)")
    }
}

/// The bytes of a MAC as stored.
pub type Tag = [u8; 32];

impl StoreMac {
    /// The MACs under `key`.
    pub fn new(key: hmac::Key) -> StoreMac {
        StoreMac { key }
    }

    fn input(label: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut input = Vec::with_capacity(label.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>());
        input.extend_from_slice(label.as_bytes());
        input.push(0);
        for part in parts {
            input.extend_from_slice(part);
        }
        input
    }

    fn tag(&self, input: &[u8]) -> Tag {
        let mut tag = [0u8; 32];
        tag.copy_from_slice(hmac::sign(&self.key, input).as_ref());
        tag
    }

    fn check(&self, input: &[u8], stored: Option<&[u8]>) -> Seal {
        match stored {
            None => Seal::Missing,
            // Constant time, though a MAC stored beside its record is no secret.
            Some(tag) if hmac::verify(&self.key, input, tag).is_ok() => Seal::Valid,
            Some(_) => Seal::Invalid,
        }
    }

    fn record_input(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
        Self::input("optin-audit-record-v1", &[&seq.to_be_bytes(), hash])
    }

    fn head_input(head: &AuditHead) -> Vec<u8> {
        Self::input("optin-audit-head-v1", &[&head.seq.to_be_bytes(), &head.hash])
    }

    fn grant_input(id: &GrantId, bytes: &[u8]) -> Vec<u8> {
        Self::input("optin-grant-v1", &[id.as_str().as_bytes(), &[0], bytes])
    }

    /// The MAC of audit record `seq`, whose stored bytes hash to `hash`.
    pub fn record(&self, seq: u64, hash: &[u8; 32]) -> Tag {
        self.tag(&Self::record_input(seq, hash))
    }

    /// Checks the stored MAC of audit record `seq`.
    pub fn check_record(&self, seq: u64, hash: &[u8; 32], stored: Option<&[u8]>) -> Seal {
        self.check(&Self::record_input(seq, hash), stored)
    }

    /// The MAC of a chain head.
    pub fn head(&self, head: &AuditHead) -> Tag {
        self.tag(&Self::head_input(head))
    }

    /// Checks the stored MAC of a chain head.
    pub fn check_head(&self, head: &AuditHead, stored: Option<&[u8]>) -> Seal {
        self.check(&Self::head_input(head), stored)
    }

    fn checkpoint_input(bytes: &[u8]) -> Vec<u8> {
        Self::input("optin-audit-checkpoint-v1", &[bytes])
    }

    /// The MAC of the audit checkpoint stored as `bytes` (its JSON names its place: the
    /// record it stands in for).
    pub fn checkpoint(&self, bytes: &[u8]) -> Tag {
        self.tag(&Self::checkpoint_input(bytes))
    }

    /// Checks the stored MAC of the audit checkpoint.
    pub fn check_checkpoint(&self, bytes: &[u8], stored: Option<&[u8]>) -> Seal {
        self.check(&Self::checkpoint_input(bytes), stored)
    }

    fn count_input(key: &[u8], bytes: &[u8]) -> Vec<u8> {
        Self::input("optin-refusal-count-v1", &[key, &[0], bytes])
    }

    /// The MAC of the refusal count stored under `key` as `bytes`.
    pub fn count(&self, key: &[u8], bytes: &[u8]) -> Tag {
        self.tag(&Self::count_input(key, bytes))
    }

    /// Checks the stored MAC of a refusal count.
    pub fn check_count(&self, key: &[u8], bytes: &[u8], stored: Option<&[u8]>) -> Seal {
        self.check(&Self::count_input(key, bytes), stored)
    }

    fn request_input(key: &[u8], bytes: &[u8]) -> Vec<u8> {
        Self::input("optin-request-v1", &[key, &[0], bytes])
    }

    /// The MAC of the consent request stored under `key` as `bytes`.
    pub fn request(&self, key: &[u8], bytes: &[u8]) -> Tag {
        self.tag(&Self::request_input(key, bytes))
    }

    /// Checks the stored MAC of a consent request.
    pub fn check_request(&self, key: &[u8], bytes: &[u8], stored: Option<&[u8]>) -> Seal {
        self.check(&Self::request_input(key, bytes), stored)
    }

    fn push_input(key: &[u8], bytes: &[u8]) -> Vec<u8> {
        Self::input("optin-push-v1", &[key, &[0], bytes])
    }

    /// The MAC of the push event queued under `key` as `bytes`: the agent signs what the
    /// queue holds with the grant's key, so an event written into the store behind its back
    /// must not reach an inbox as the person's.
    pub fn push(&self, key: &[u8], bytes: &[u8]) -> Tag {
        self.tag(&Self::push_input(key, bytes))
    }

    /// Checks the MAC of a queued push event.
    pub fn check_push(&self, key: &[u8], bytes: &[u8], stored: Option<&[u8]>) -> Seal {
        self.check(&Self::push_input(key, bytes), stored)
    }

    /// The MAC of grant `id`, stored as `bytes`.
    pub fn grant(&self, id: &GrantId, bytes: &[u8]) -> Tag {
        self.tag(&Self::grant_input(id, bytes))
    }

    /// Checks the stored MAC of grant `id`.
    pub fn check_grant(&self, id: &GrantId, bytes: &[u8], stored: Option<&[u8]>) -> Seal {
        self.check(&Self::grant_input(id, bytes), stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(byte: u8) -> StoreMac {
        StoreMac::new(hmac::Key::new(hmac::HMAC_SHA256, &[byte; 32]))
    }

    #[test]
    fn a_mac_checks_only_what_it_was_made_for() {
        let (ours, theirs) = (mac(1), mac(2));
        let hash = [7u8; 32];
        let tag = ours.record(3, &hash);
        assert_eq!(ours.check_record(3, &hash, Some(&tag)), Seal::Valid);
        assert_eq!(ours.check_record(3, &hash, None), Seal::Missing);
        assert_eq!(theirs.check_record(3, &hash, Some(&tag)), Seal::Invalid, "another key");
        assert_eq!(ours.check_record(4, &hash, Some(&tag)), Seal::Invalid, "another place");
        assert_eq!(ours.check_record(3, &[8; 32], Some(&tag)), Seal::Invalid, "other bytes");
        let head = AuditHead { seq: 3, hash };
        assert_eq!(ours.check_head(&head, Some(&tag)), Seal::Invalid, "a record's MAC is no head's");
        assert_eq!(ours.check_head(&head, Some(&ours.head(&head))), Seal::Valid);
        let id = GrantId::from_bytes([1; 12]);
        let other = GrantId::from_bytes([2; 12]);
        let grant = ours.grant(&id, b"{}");
        assert_eq!(ours.check_grant(&id, b"{}", Some(&grant)), Seal::Valid);
        assert_eq!(ours.check_grant(&other, b"{}", Some(&grant)), Seal::Invalid, "another grant's");
        assert_eq!(ours.check_grant(&id, b"{ }", Some(&grant)), Seal::Invalid, "edited");
        assert_eq!(ours.check_grant(&id, b"{}", Some(&grant[..16])), Seal::Invalid, "cut short");
        let request = ours.request(b"acme.example\0r1", b"{}");
        assert_eq!(ours.check_request(b"acme.example\0r1", b"{}", Some(&request)), Seal::Valid);
        assert_eq!(ours.check_request(b"acme.example\0r2", b"{}", Some(&request)), Seal::Invalid, "another request's");
        assert_eq!(ours.check_count(b"acme.example\0r1", b"{}", Some(&request)), Seal::Invalid, "a request's MAC is no count's");
        let checkpoint = ours.checkpoint(b"{}");
        assert_eq!(ours.check_checkpoint(b"{}", Some(&checkpoint)), Seal::Valid);
        assert_eq!(ours.check_checkpoint(b"{ }", Some(&checkpoint)), Seal::Invalid, "an edited checkpoint");
        assert_eq!(theirs.check_checkpoint(b"{}", Some(&checkpoint)), Seal::Invalid, "another key");
        assert_eq!(ours.check_request(b"", b"{}", Some(&checkpoint)), Seal::Invalid, "a checkpoint's MAC is no request's");
        let push = ours.push(b"k1", b"{}");
        assert_eq!(ours.check_push(b"k1", b"{}", Some(&push)), Seal::Valid);
        assert_eq!(ours.check_push(b"k2", b"{}", Some(&push)), Seal::Invalid, "another place in the queue");
        assert_eq!(ours.check_request(b"k1", b"{}", Some(&push)), Seal::Invalid, "a push's MAC is no request's");
    }
}
