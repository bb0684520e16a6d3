//! The audit log: who received what, when, and every refusal.
//!
//! Records are append-only and hash-chained: each names the SHA-256 of the stored bytes of
//! the one before it (`prev`), the first names 64 zeros. Changing, removing or reordering a
//! record breaks the chain at that point, which [`verify`] finds. A served slice's record
//! carries the SHA-256 of the exact JWS sent, so the person can match a marketer's copy.

pub use crate::store::record::{AuditEvent, AuditRecord};

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainError {
    /// The first record that does not follow.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// Checks a sequence of (record, hash of its stored bytes); returns how many records.
pub fn verify(records: impl IntoIterator<Item = (AuditRecord, [u8; 32])>) -> Result<u64, ChainError> {
    let mut expected_prev = [0u8; 32];
    let mut count = 0;
    for (record, hash) in records {
        count += 1;
        if record.seq != count {
            return Err(ChainError { seq: record.seq, reason: format!("expected sequence number {count}") });
        }
        if record.prev != optin_protocol::hex(&expected_prev) {
            return Err(ChainError { seq: record.seq, reason: "prev does not match the previous record's hash".into() });
        }
        expected_prev = hash;
    }
    Ok(count)
}
