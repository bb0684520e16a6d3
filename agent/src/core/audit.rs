//! The audit log: who received what, when, and every refusal.
//!
//! Records are append-only and hash-chained: each names the SHA-256 of the stored bytes of
//! the one before it (`prev`), the first names 64 zeros, and the store's chain head
//! ([`AuditHead`]) names the last, written in the same transaction. So every record's bytes
//! are committed to by something stored after them, and changing, removing or reordering a
//! record is found by [`verify`], at that record. A served slice's record carries the
//! SHA-256 of the exact JWS sent, so the person can match a marketer's copy.
//!
//! The chain alone holds no secret, so each record and the head also carry a MAC under a key
//! derived from the identity key (see `store::seal`): a log rewritten whole, with new
//! hashes and a new head, fails at the first record the agent did not write as it is.

pub use crate::store::record::{AuditEvent, AuditHead, AuditRecord};
pub use crate::store::{AuditPage, RefusalCount, Seal, StoredRecord};

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A record is not as the chain committed to it.
    #[error("audit chain broken at record {seq}: {reason}")]
    Record {
        /// The first record that is not as the chain committed to it.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Every record holds, but the head that ends the log is not one this optin wrote.
    #[error("audit chain head broken at record {seq}: {reason}")]
    Head {
        /// The last record, which the head names.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A count of refusals is not as the agent counted it.
    #[error("refusals of {grant_id} counted as `{reason}` do not carry their MAC: the count was changed behind optin's back")]
    Count {
        /// The grant.
        grant_id: String,
        /// The refusals' reason.
        reason: String,
    },
}

impl ChainError {
    /// The record named.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ChainError::Record { seq, .. } | ChainError::Head { seq, .. } => Some(*seq),
            ChainError::Count { .. } => None,
        }
    }
}

fn broken(seq: u64, reason: impl Into<String>) -> ChainError {
    ChainError::Record { seq, reason: reason.into() }
}

/// Checks one page of a log read in pages ([`crate::store::Store::audit_page`]), from
/// record `since_seq` on; returns how many records are verified so far. The last page
/// (`next` is `None`) also checks the head, and that every count of refusals carries its
/// MAC: its result is the verdict on the whole log.
pub fn verify_page(since_seq: u64, page: &AuditPage, counts: &[(RefusalCount, Seal)]) -> Result<u64, ChainError> {
    let mut chain = match (since_seq, page.before) {
        (0, _) => Verifier::default(),
        (seq, Some(hash)) => Verifier::after(seq, hash),
        (seq, None) => return Err(broken(seq, "missing: the page was asked for after it, and it is not stored")),
    };
    for record in &page.records {
        chain.check(record)?;
    }
    if page.next.is_some() {
        return Ok(chain.checked());
    }
    let records = chain.finish(page.head)?;
    if let Some((count, _)) = counts.iter().find(|(_, seal)| *seal != Seal::Valid) {
        return Err(ChainError::Count { grant_id: count.grant_id.to_string(), reason: count.reason.clone() });
    }
    Ok(records)
}

/// Checks a log, the records in stored order, against the head that commits to its last
/// record; returns how many records.
///
/// Read in order, the record named is the first that is not as the chain committed to it:
/// a sequence number whose place holds another record or none (a record removed or moved),
/// a record without the MAC this optin wrote for it (written, changed or moved behind its
/// back), or a record whose bytes no longer hash to what commits to them (the next record's
/// `prev`, or the head for the last record). Then the head must carry its MAC, or records
/// after the last were removed and the head rebuilt.
pub fn verify(records: impl IntoIterator<Item = StoredRecord>, head: (AuditHead, Seal)) -> Result<u64, ChainError> {
    let mut chain = Verifier::default();
    for record in records {
        chain.check(&record)?;
    }
    chain.finish(head)
}

/// The chain checked record by record, so that a log read in pages is verified as it is
/// read: [`Verifier::check`] each record in order, then [`Verifier::finish`] with the head.
#[derive(Clone, Copy, Debug, Default)]
pub struct Verifier {
    /// The last record checked (the empty head before the first).
    last: Option<AuditHead>,
}

impl Verifier {
    /// Checks the log on from the record after `seq`, whose stored bytes hash to `hash`
    /// (already checked, as the last record of the page before).
    pub fn after(seq: u64, hash: [u8; 32]) -> Verifier {
        Verifier { last: Some(AuditHead { seq, hash }) }
    }

    /// How many records are checked so far, counting those before [`Verifier::after`].
    pub fn checked(&self) -> u64 {
        self.last.map_or(0, |l| l.seq)
    }

    /// Checks the next record.
    pub fn check(&mut self, stored: &StoredRecord) -> Result<(), ChainError> {
        let last = self.last.unwrap_or(AuditHead::EMPTY);
        let seq = last.seq + 1;
        let record = &stored.record;
        if record.seq != seq {
            return Err(broken(seq, format!("missing or moved: record {} is stored in its place", record.seq)));
        }
        match stored.seal {
            Seal::Valid => {}
            Seal::Missing => {
                return Err(broken(
                    seq,
                    "it has no MAC: it was written behind optin's back, by an older optin after this one sealed the store, \
                     or onto a chain head that did not verify (records before it were removed or rewritten)",
                ))
            }
            Seal::Invalid => return Err(broken(seq, "its MAC does not verify: it was written or changed without the identity key")),
        }
        if record.prev != optin_protocol::hex(&last.hash) {
            return Err(match last.seq {
                0 => broken(seq, "its prev is not 64 zeros, as the first record's must be"),
                before => broken(before, format!("its stored bytes do not hash to the prev of record {seq}")),
            });
        }
        self.last = Some(AuditHead { seq, hash: stored.hash });
        Ok(())
    }

    /// Checks that `head` ends the log at the last record checked and carries its MAC;
    /// returns how many records.
    pub fn finish(self, (head, seal): (AuditHead, Seal)) -> Result<u64, ChainError> {
        let last = self.last.unwrap_or(AuditHead::EMPTY);
        if head.seq > last.seq {
            return Err(broken(last.seq + 1, format!("missing: the chain head commits to {} records", head.seq)));
        }
        if head.seq < last.seq {
            return Err(broken(head.seq + 1, format!("not committed to: the chain head ends at record {}", head.seq)));
        }
        if last.seq > 0 && head.hash != last.hash {
            return Err(broken(last.seq, "its stored bytes do not hash to the chain head"));
        }
        match seal {
            Seal::Valid => Ok(last.seq),
            Seal::Missing => Err(ChainError::Head { seq: last.seq, reason: "the chain head has no MAC: records after it may have been removed".into() }),
            Seal::Invalid => Err(ChainError::Head {
                seq: last.seq,
                reason: "the chain head's MAC does not verify: records after it were removed, or the head rewritten without the identity key".into(),
            }),
        }
    }
}
