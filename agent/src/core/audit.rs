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
//!
//! The log is kept within a bound ([`AuditKeep`]): the agent prunes its oldest records
//! ([`super::Core::prune_audit`]) behind a checkpoint ([`AuditCheckpoint`]) that names the
//! last record removed and its hash, and says per grant what the removed records held. The
//! checkpoint carries a MAC too, and verification starts from it: the first record kept
//! must chain to it, as record 1 chains to 64 zeros.

pub use crate::store::record::{AuditCheckpoint, AuditEvent, AuditHead, AuditRecord, GrantSummary, PartnerSummary};
pub use crate::store::{AuditKeep, AuditPage, KeepError, Pruned, RefusalCount, Seal, StoredRecord};

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
    /// The checkpoint that stands for the records pruned is not one this optin wrote.
    #[error("audit checkpoint at record {seq} broken: {reason}")]
    Checkpoint {
        /// The last record it stands for.
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
            ChainError::Record { seq, .. } | ChainError::Head { seq, .. } | ChainError::Checkpoint { seq, .. } => Some(*seq),
            ChainError::Count { .. } => None,
        }
    }
}

fn broken(seq: u64, reason: impl Into<String>) -> ChainError {
    ChainError::Record { seq, reason: reason.into() }
}

/// Checks one page of a log read in pages ([`crate::store::Store::audit_page`]), from
/// record `since_seq` on (or from the checkpoint, when that is later); returns how many
/// records are verified so far, counting those the checkpoint stands for. The last page
/// (`next` is `None`) also checks the head, and that every count of refusals carries its
/// MAC: its result is the verdict on the whole log.
pub fn verify_page(since_seq: u64, page: &AuditPage, counts: &[(RefusalCount, Seal)]) -> Result<u64, ChainError> {
    let floor = match &page.checkpoint {
        None => 0,
        Some((checkpoint, seal)) => checked(checkpoint, *seal)?.seq,
    };
    let mut chain = match (since_seq.max(floor), page.before) {
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
    verify_after(None, records, head)
}

/// [`verify`] for a log pruned behind `checkpoint`: the checkpoint must carry its MAC, and
/// the first record kept must be the one after it and chain to it.
pub fn verify_after(
    checkpoint: Option<(&AuditCheckpoint, Seal)>,
    records: impl IntoIterator<Item = StoredRecord>,
    head: (AuditHead, Seal),
) -> Result<u64, ChainError> {
    let mut chain = match checkpoint {
        None => Verifier::default(),
        Some((checkpoint, seal)) => {
            let checkpoint = checked(checkpoint, seal)?;
            Verifier::after(checkpoint.seq, checkpoint.hash)
        }
    };
    for record in records {
        chain.check(&record)?;
    }
    chain.finish(head)
}

/// The checkpoint, if it carries its MAC.
fn checked(checkpoint: &AuditCheckpoint, seal: Seal) -> Result<&AuditCheckpoint, ChainError> {
    let reason = match seal {
        Seal::Valid => return Ok(checkpoint),
        Seal::Missing => "it has no MAC: it was written behind optin's back, and the records it stands for may have been removed by hand",
        Seal::Invalid => "its MAC does not verify: it was written or changed without the identity key",
    };
    Err(ChainError::Checkpoint { seq: checkpoint.seq, reason: reason.into() })
}

impl super::Core {
    /// Prunes the oldest records beyond the bound the agent runs with, one batch of at most
    /// [`crate::store::audit::PRUNE_BATCH`]: what the agent does in the background
    /// (`serve::prune`), never on a slice's way out.
    pub fn prune_audit(&self, now: time::OffsetDateTime) -> Result<Pruned, super::CoreError> {
        Ok(self.store.prune_audit(&self.config.audit_keep, now, crate::store::audit::PRUNE_BATCH)?)
    }
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
