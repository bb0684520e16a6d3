//! The audit log: who received what, when, and every refusal.
//!
//! Records are append-only and hash-chained: each names the SHA-256 of the stored bytes of
//! the one before it (`prev`), the first names 64 zeros, and the store's chain head
//! ([`AuditHead`]) names the last, written in the same transaction. So every record's bytes
//! are committed to by something stored after them, and changing, removing or reordering a
//! record is found by [`verify`], at that record. A served slice's record carries the
//! SHA-256 of the exact JWS sent, so the person can match a marketer's copy.

pub use crate::store::record::{AuditEvent, AuditHead, AuditRecord};

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainError {
    /// The first record that is not as the chain committed to it.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// Checks a log, the records in stored order each with the hash of its stored bytes, against
/// the head that commits to its last record; returns how many records.
///
/// Read in order, the record named is the first that is not as the chain committed to it:
/// a sequence number whose place holds another record or none (a record removed or moved),
/// or a record whose bytes no longer hash to what commits to them (the next record's `prev`,
/// or the head for the last record). A record whose own `prev` was changed breaks the
/// commitment to the one before it, so that one is named: from there on the log cannot be
/// trusted.
pub fn verify(records: impl IntoIterator<Item = (AuditRecord, [u8; 32])>, head: AuditHead) -> Result<u64, ChainError> {
    let mut last = AuditHead::EMPTY;
    for (record, hash) in records {
        let seq = last.seq + 1;
        if record.seq != seq {
            return Err(ChainError { seq, reason: format!("missing or moved: record {} is stored in its place", record.seq) });
        }
        if record.prev != optin_protocol::hex(&last.hash) {
            return Err(match last.seq {
                0 => ChainError { seq, reason: "its prev is not 64 zeros, as the first record's must be".into() },
                before => ChainError { seq: before, reason: format!("its stored bytes do not hash to the prev of record {seq}") },
            });
        }
        last = AuditHead { seq, hash };
    }
    if head.seq > last.seq {
        return Err(ChainError { seq: last.seq + 1, reason: format!("missing: the chain head commits to {} records", head.seq) });
    }
    if head.seq < last.seq {
        return Err(ChainError { seq: head.seq + 1, reason: format!("not committed to: the chain head ends at record {}", head.seq) });
    }
    if last.seq > 0 && head.hash != last.hash {
        return Err(ChainError { seq: last.seq, reason: "its stored bytes do not hash to the chain head".into() });
    }
    Ok(last.seq)
}
