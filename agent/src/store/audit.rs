//! The audit log as stored: appends, pages, and pruning behind a checkpoint.
//!
//! Records are appended under the chain's lock, each with its MAC, then the new chain head
//! with its MAC (`core::audit` describes the chain). Appends that arrive while the lock is
//! held wait in a queue, and whoever takes the lock next writes all of them, with one head
//! ([`Store::append_audit`]). The writes are made in an order that a crash can only cut
//! short, never reorder, and an append cut short is completed when the store is next used
//! ([`Store::complete_append`]): what a transaction gave, without its cost. Left alone, the log
//! grows by a record per slice served, for ever, so the agent prunes it
//! ([`Store::prune_audit`]): once it holds more records than [`AuditKeep::records`], or
//! records older than [`AuditKeep::age`], the oldest go, at most [`PRUNE_BATCH`] at a time.
//! Each batch is removed in the transaction that writes the checkpoint that stands for it
//! and every record removed before ([`AuditCheckpoint`], kept in `meta` with its MAC):
//!
//! - the sequence number and hash of the last record removed, so the first record kept
//!   still verifies against what it chains to, and verification starts from there;
//! - per grant, what the removed records said (slices and items served, to whom, refusals),
//!   so `optin grants` and `optin audit --summary` stay true.
//!
//! Its MAC names what it is for (`store::seal`), so a checkpoint edited, moved on past
//! records removed behind optin's back, or taken from another store fails it; one removed
//! leaves the first record kept where record 1 should be, which verification names.
//!
//! Pruning never removes what it cannot vouch for: each record is checked against its MAC
//! and the chain before it goes, and pruning stops at the first that fails, so a break stays
//! in view instead of being folded into a checkpoint this optin MACs. Nor does it prune at
//! all unless the head, which says how many records there are, and the record it names carry
//! their MACs. The last record is never removed, so the first record kept always has a
//! predecessor that was checked.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use time::OffsetDateTime;

use super::record::{AuditCheckpoint, AuditEvent, AuditHead, AuditRecord};
use super::seal::{Seal, StoreMac};
use super::{corrupt, key, stored_head, tx_error, Chain, Result, Store, StoreError, AUDIT_HEAD, AUDIT_HEAD_MAC};

/// The `meta` key of the checkpoint ([`AuditCheckpoint`] JSON).
const AUDIT_CHECKPOINT: &str = "audit_checkpoint";

/// The `meta` key of the checkpoint's MAC, in hex.
const AUDIT_CHECKPOINT_MAC: &str = "audit_checkpoint_mac";

/// Most records one call of [`Store::prune_audit`] removes: appends wait while a batch is
/// removed, so a batch is kept to a few milliseconds.
pub const PRUNE_BATCH: usize = 128;

/// Records kept unless the person says otherwise: at about 0.6 KB a record, some 60 MB.
pub const DEFAULT_KEEP_RECORDS: u64 = 100_000;

/// How long a record is kept unless the person says otherwise.
pub const DEFAULT_KEEP_AGE: &str = "90d";

/// The shortest time a record may be kept: the person must have a day at least to read
/// what was served.
pub const MIN_KEEP_AGE_SECONDS: u64 = 24 * 3600;

/// How much of the audit log is kept: at most `records` records, none older than `age`.
/// Made through [`AuditKeep::new`], so a bound that keeps nothing cannot exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditKeep {
    records: u64,
    age: time::Duration,
}

/// A bound on the audit log that cannot be kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeepError {
    /// No record would be kept.
    #[error("the audit log keeps at least 1 record")]
    NoRecords,
    /// Records would go before the person could read them.
    #[error("the audit log keeps records for at least 1d")]
    TooShort,
}

impl AuditKeep {
    /// At most `records` records (1 or more), none older than `age` (a day or more).
    pub fn new(records: u64, age: optin_protocol::span::Span) -> Result<AuditKeep, KeepError> {
        if records == 0 {
            return Err(KeepError::NoRecords);
        }
        if age.seconds() < MIN_KEEP_AGE_SECONDS {
            return Err(KeepError::TooShort);
        }
        Ok(AuditKeep { records, age: age.duration() })
    }

    /// Most records kept.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The oldest a record kept may be.
    pub fn age(&self) -> time::Duration {
        self.age
    }
}

impl Default for AuditKeep {
    fn default() -> AuditKeep {
        AuditKeep { records: DEFAULT_KEEP_RECORDS, age: time::Duration::days(90) }
    }
}

/// What one call of [`Store::prune_audit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pruned {
    /// This many records were removed (0: the log is within its bound).
    Records(usize),
    /// Nothing: the record named (or the checkpoint, at its number) is not as the chain
    /// committed to it, and it stays in view.
    Broken(u64),
}

/// The audit log as read at one moment ([`Store::audit_log`]).
#[derive(Clone, Debug)]
pub struct AuditLog {
    /// The checkpoint that stands for the records pruned, if any were, and whether it
    /// carries its MAC.
    pub checkpoint: Option<(AuditCheckpoint, Seal)>,
    /// Every record kept, in stored order.
    pub records: Vec<StoredRecord>,
    /// The head, which commits to the last record, and whether it carries its MAC.
    pub head: (AuditHead, Seal),
}

/// A page of the audit log as read at one moment ([`Store::audit_page`]).
#[derive(Clone, Debug)]
pub struct AuditPage {
    /// The checkpoint that stands for the records pruned, if any were, and whether it
    /// carries its MAC. A page asked for from before it starts at it.
    pub checkpoint: Option<(AuditCheckpoint, Seal)>,
    /// The SHA-256 of the stored bytes of the record the page follows (`since_seq`, or the
    /// checkpoint's record when that is later), or `None` when the page starts at the first
    /// record or that record is not stored.
    pub before: Option<[u8; 32]>,
    /// The records after `since_seq`, in stored order, at most the limit.
    pub records: Vec<StoredRecord>,
    /// The `since_seq` of the next page, when more records are stored after these: the key
    /// of the last record read (not the number it says it has, which could send a reader
    /// round in circles).
    pub next: Option<u64>,
    /// The head, which commits to the last record, and whether it carries its MAC.
    pub head: (AuditHead, Seal),
}

/// The log as [`Store::audit_after`] reads it.
#[derive(Clone, Debug)]
pub struct SinceCheckpoint<T> {
    /// The checkpoint, if records were pruned, and whether it carries its MAC.
    pub checkpoint: Option<(AuditCheckpoint, Seal)>,
    /// What was kept of each record read.
    pub kept: Vec<T>,
    /// The last record read: the `after` of a later read that takes up from here.
    pub last: u64,
}

/// An audit record as read: the record, the SHA-256 of its stored bytes and whether its MAC
/// holds for its place in the log.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// The record.
    pub record: AuditRecord,
    /// SHA-256 of its stored bytes.
    pub hash: [u8; 32],
    /// Whether its MAC holds.
    pub seal: Seal,
}

/// Appends waiting for the chain's lock ([`Store::append_audit`]).
#[derive(Default)]
pub(super) struct Queue {
    waiting: Mutex<Vec<Waiting>>,
}

/// An append waiting to be written, and where its outcome goes.
struct Waiting {
    at: OffsetDateTime,
    event: AuditEvent,
    outcome: Arc<Outcome>,
}

/// What became of a waiting append: `None` until it is written or fails.
type Outcome = Mutex<Option<Result<AuditRecord>>>;

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // Only pushes and takes happen under it: a panic cannot leave it half changed.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn settled(outcome: &Outcome) -> Option<Result<AuditRecord>> {
    outcome.lock().unwrap_or_else(PoisonError::into_inner).take()
}

impl Store {
    /// Appends an audit record chained to the previous one, with its MAC; returns once it is
    /// written. The record waits in the queue while the chain's lock is held; whoever holds
    /// it next (this caller, or one before it in line) writes every record waiting then, in
    /// the order they came, in one transaction.
    pub fn append_audit(&self, at: OffsetDateTime, event: AuditEvent) -> Result<AuditRecord> {
        // The lock free (the common case when slices are few): no queue to go through.
        if let Some((mut chain, mac)) = self.chain_if_free()? {
            return self.append(&mut chain, mac, at, event);
        }
        let outcome = Arc::new(Outcome::default());
        self.queue.lock().push(Waiting { at, event, outcome: outcome.clone() });
        let (mut chain, mac) = match self.chain() {
            Ok(locked) => locked,
            Err(e) => {
                // Not written, and not to be written by another: out of the queue, unless
                // someone took it already, in which case its outcome is theirs to tell.
                self.queue.lock().retain(|w| !Arc::ptr_eq(&w.outcome, &outcome));
                return settled(&outcome).unwrap_or(Err(e));
            }
        };
        if let Some(written) = settled(&outcome) {
            return written;
        }
        // Not written yet, so still waiting: only holders of the lock take from the queue,
        // and they settle all they take before letting go of it.
        self.append_waiting(&mut chain, mac, None)?;
        settled(&outcome).unwrap_or_else(|| Err(corrupt("audit", "an append was taken from the queue and not written")))
    }

    /// Appends the record that `make` returns for the sequence number it will have, so that
    /// what the record commits to can name the record (a slice carries the number of its
    /// `served` record). Other appends wait while `make` runs; if it fails, nothing is
    /// appended and the number stays free.
    pub fn append_audit_with<T, E>(&self, at: OffsetDateTime, make: impl FnOnce(u64) -> Result<(AuditEvent, T), E>) -> Result<Result<(AuditRecord, T), E>> {
        let (mut chain, mac) = self.chain()?;
        let (event, made) = match make(chain.head.seq + 1) {
            Ok(made) => made,
            Err(e) => return Ok(Err(e)),
        };
        // Its record first, with the number it was made for; those waiting after it.
        Ok(Ok((self.append(&mut chain, mac, at, event)?, made)))
    }

    /// The chain's lock, if no one holds it, as [`Store::chain`] takes it.
    fn chain_if_free(&self) -> Result<Option<(std::sync::MutexGuard<'_, Chain>, &StoreMac)>> {
        // Sealed once `mac` returns: it seals the store the first time, as `chain` does.
        let mac = self.mac()?;
        match self.chain.try_lock() {
            Ok(chain) => Ok(Some((chain, mac))),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(Some((p.into_inner(), mac))),
            Err(std::sync::TryLockError::WouldBlock) => Ok(None),
        }
    }

    /// Appends a record under the chain's lock, and every append waiting after it.
    pub(super) fn append(&self, chain: &mut Chain, mac: &StoreMac, at: OffsetDateTime, event: AuditEvent) -> Result<AuditRecord> {
        let written = self.append_waiting(chain, mac, Some((at, event)))?;
        written.ok_or_else(|| corrupt("audit", "a record was not written"))
    }

    /// Writes `first`, if given, and every append waiting in the queue, in that order, in one
    /// transaction, and settles the waiting ones; returns the record of `first`.
    fn append_waiting(&self, chain: &mut Chain, mac: &StoreMac, first: Option<(OffsetDateTime, AuditEvent)>) -> Result<Option<AuditRecord>> {
        let waiting = std::mem::take(&mut *self.queue.lock());
        let mine = usize::from(first.is_some());
        let mut events: Vec<_> = first.into_iter().collect();
        let mut outcomes = Vec::with_capacity(waiting.len());
        for w in waiting {
            events.push((w.at, w.event));
            outcomes.push(w.outcome);
        }
        let settle = |outcome: &Outcome, result| *outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        match self.append_all(chain, mac, events) {
            Ok(mut records) => {
                let theirs = records.split_off(mine);
                for (outcome, record) in outcomes.iter().zip(theirs) {
                    settle(outcome, Ok(record));
                }
                Ok(records.pop())
            }
            Err(e) => {
                for outcome in &outcomes {
                    settle(outcome, Err(StoreError::Audit(e.to_string())));
                }
                Err(e)
            }
        }
    }

    /// Writes `events` as the next records, each chained to the one before, with their MACs
    /// and the new head, in one transaction.
    fn append_all(&self, chain: &mut Chain, mac: &StoreMac, events: Vec<(OffsetDateTime, AuditEvent)>) -> Result<Vec<AuditRecord>> {
        let (mut head, mut seal) = (chain.head, chain.seal);
        let mut rows = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        for (at, event) in events {
            let seq = head.seq + 1;
            let record = AuditRecord { seq, at, prev: optin_protocol::hex(&head.hash), event };
            let bytes = serde_json::to_vec(&record).map_err(|e| corrupt("audit", e))?;
            let next = AuditHead { seq, hash: optin_protocol::sha256(&bytes) };
            // Onto a head that does not carry its MAC (records after it removed, or the log
            // rewritten while optin was stopped), the record goes without one: MACing it
            // would vouch for what it chains to, and verification names it as the first
            // record this optin cannot vouch for. The records after it chain to it as
            // written, and carry theirs.
            let tag = (seal == Seal::Valid).then(|| mac.record(seq, &next.hash));
            rows.push((key::audit(seq), bytes, tag));
            records.push(record);
            (head, seal) = (next, Seal::Valid);
        }
        if records.is_empty() {
            return Ok(records);
        }
        // Plain writes in this order, not a sled transaction: each transaction costs sled two
        // writes of its log buffer, and on the slices served again they were half the agent's
        // CPU (BENCHMARKS.md). sled recovers a prefix of the writes made, so after a crash
        // every MAC kept is for a record kept or the one after, and the head's MAC for the
        // head kept or one of the records after it; [`Store::complete_append`] moves the
        // head on over those records when the store is next used. Verification and pruning
        // read under the chain's lock, so they never see an append half made.
        for (key, bytes, tag) in &rows {
            match tag {
                Some(tag) => self.audit_macs.insert(&key[..], &tag[..])?,
                // Not even a MAC left there by what was removed.
                None => self.audit_macs.remove(&key[..])?,
            };
            self.audit.insert(&key[..], bytes.as_slice())?;
        }
        self.meta.insert(AUDIT_HEAD_MAC, optin_protocol::hex(&mac.head(&head)).as_str())?;
        self.meta.insert(AUDIT_HEAD, head.encode().as_str())?;
        *chain = Chain { head, seal: Seal::Valid };
        self.appended_through.fetch_max(head.seq, Ordering::Release);
        Ok(records)
    }

    /// The sequence numbers of the last audit record appended since the store was opened,
    /// and of the last one [`Store::write_out`] put on disk (0 for none).
    pub fn audit_through(&self) -> (u64, u64) {
        (self.appended_through.load(Ordering::Acquire), self.written_through.load(Ordering::Acquire))
    }

    /// Puts every audit record appended so far on disk, with one flush of the store; the
    /// caller makes those who wait for their records take turns (`core::marketer`), so that
    /// under load one flush covers the records of many slices.
    pub fn write_out(&self) -> Result<()> {
        let through = self.appended_through.load(Ordering::Acquire);
        self.flush()?;
        self.written_through.fetch_max(through, Ordering::Release);
        Ok(())
    }

    /// Completes an append that a crash cut short, the first time the store is used after
    /// it, so that the head is again the last record ([`Store::append_all`] gives the order of
    /// the writes): the records after the stored head that chain on from it, each with its
    /// MAC, were written by this optin, and the head moves on to the last of them, when the
    /// head's MAC is for the stored head or for one of them. Returns whether the head then
    /// carries its MAC. Nothing else is mended: a record after the head without its MAC, or
    /// a head's MAC for anything else, stays for verification to name.
    pub(super) fn complete_append(&self, chain: &mut Chain, mac: &StoreMac, head_tag: Option<&[u8]>) -> Result<Seal> {
        let stored = chain.head;
        let mut vouched = mac.check_head(&stored, head_tag) == Seal::Valid;
        let mut last = stored;
        for row in stored.seq.checked_add(1).map(key::audit).into_iter().flat_map(|from| self.audit.range(from..)) {
            let (k, v) = row?;
            let seq = key::decode_audit(&k);
            let hash = optin_protocol::sha256(&v);
            let chained = serde_json::from_slice::<AuditRecord>(&v).is_ok_and(|r| r.prev == optin_protocol::hex(&last.hash));
            if seq != last.seq.checked_add(1) || !chained || mac.check_record(last.seq + 1, &hash, self.audit_macs.get(&k)?.as_deref()) != Seal::Valid {
                break;
            }
            last = AuditHead { seq: last.seq + 1, hash };
            vouched |= mac.check_head(&last, head_tag) == Seal::Valid;
        }
        if !vouched {
            return Ok(mac.check_head(&stored, head_tag));
        }
        if last != stored {
            tracing::warn!(from = stored.seq, to = last.seq, "completing an audit append cut short");
            self.meta.insert(AUDIT_HEAD_MAC, optin_protocol::hex(&mac.head(&last)).as_str())?;
            self.meta.insert(AUDIT_HEAD, last.encode().as_str())?;
            self.flush()?;
            chain.head = last;
        }
        Ok(Seal::Valid)
    }

    /// The audit log as one consistent snapshot (appends and pruning wait while it is read),
    /// each record, the checkpoint and the head checked against their MACs.
    pub fn audit_log(&self) -> Result<AuditLog> {
        let page = self.audit_page(0, usize::MAX)?;
        Ok(AuditLog { checkpoint: page.checkpoint, records: page.records, head: page.head })
    }

    /// At most `limit` records after record `since_seq` (or after the checkpoint, when that
    /// is later), read with the head and the checkpoint as one consistent snapshot (appends
    /// and pruning wait while it is read), each checked against its MAC. A log too long for
    /// one answer is read in pages, and verified as it is read (see
    /// `core::audit::Verifier`).
    pub fn audit_page(&self, since_seq: u64, limit: usize) -> Result<AuditPage> {
        // Pruning first: a pruner waiting for the lock holds up readers that come after it,
        // and one of them holding the chain's lock meanwhile would hold up every append.
        let _pruning = self.pruning.read().unwrap_or_else(PoisonError::into_inner);
        let (_appends, mac) = self.chain()?;
        let head = stored_head(&self.meta)?.unwrap_or(AuditHead::EMPTY);
        let head_tag = self.meta.get(AUDIT_HEAD_MAC)?;
        let head_tag = head_tag.as_deref().and_then(|t| std::str::from_utf8(t).ok()).and_then(|hex| optin_protocol::hex::decode(hex).ok());
        let checkpoint = self.checkpoint_as_found(mac)?;
        let floor = checkpoint.as_ref().map(|(c, _)| c.seq);
        let from = since_seq.max(floor.unwrap_or(0));
        let before = match (from, &checkpoint) {
            (0, _) => None,
            (seq, Some((c, _))) if seq == c.seq => Some(c.hash),
            (seq, _) => self.audit.get(key::audit(seq))?.map(|v| optin_protocol::sha256(&v)),
        };
        let start = from.checked_add(1).map(key::audit);
        let mut records = Vec::new();
        let (mut last, mut next) = (from, None);
        for row in start.into_iter().flat_map(|start| self.audit.range(start..)) {
            if records.len() == limit {
                next = Some(last);
                break;
            }
            let (k, v) = row?;
            let seq = key::decode_audit(&k).ok_or_else(|| corrupt("audit", "a key that is not a sequence number"))?;
            last = seq;
            let record = serde_json::from_slice(&v).map_err(|e| corrupt("audit", format!("record {seq}: {e}")))?;
            let hash = optin_protocol::sha256(&v);
            let seal = mac.check_record(seq, &hash, self.audit_macs.get(&k)?.as_deref());
            records.push(StoredRecord { record, hash, seal });
        }
        Ok(AuditPage { checkpoint, before, records, next, head: (head, mac.check_head(&head, head_tag.as_deref())) })
    }

    /// Audit records from the newest back (for "what happened lately" without reading the
    /// whole log).
    pub fn audit_newest_first(&self) -> impl Iterator<Item = Result<AuditRecord>> + '_ {
        self.audit.iter().values().rev().map(|v| serde_json::from_slice(&v?).map_err(|e| corrupt("audit", e)))
    }

    /// The checkpoint that stands for the records pruned, if any were, with whether it
    /// carries its MAC.
    pub fn audit_checkpoint(&self) -> Result<Option<(AuditCheckpoint, Seal)>> {
        let mac = self.mac()?;
        self.checkpoint_as_found(mac)
    }

    /// The checkpoint, and the records kept after it and after record `after` for which
    /// `keep` returns something, read as one snapshot: pruning waits while it is read,
    /// appends do not. So what the checkpoint counts and the records read are never both
    /// missing a record, nor both holding one.
    pub fn audit_after<T>(&self, after: u64, mut keep: impl FnMut(AuditRecord) -> Option<T>) -> Result<SinceCheckpoint<T>> {
        let mac = self.mac()?;
        let _pruning = self.pruning.read().unwrap_or_else(PoisonError::into_inner);
        let checkpoint = self.checkpoint_as_found(mac)?;
        let mut last = after.max(checkpoint.as_ref().map_or(0, |(c, _)| c.seq));
        let mut kept = Vec::new();
        for row in self.audit.range(key::audit(last.saturating_add(1))..) {
            let (k, value) = row?;
            last = key::decode_audit(&k).ok_or_else(|| corrupt("audit", "a key that is not a sequence number"))?;
            let record = serde_json::from_slice(&value).map_err(|e| corrupt("audit", e))?;
            kept.extend(keep(record));
        }
        Ok(SinceCheckpoint { checkpoint, kept, last })
    }

    fn checkpoint_as_found(&self, mac: &StoreMac) -> Result<Option<(AuditCheckpoint, Seal)>> {
        self.checkpoint_of(mac, self.meta.get(AUDIT_CHECKPOINT)?.as_deref())
    }

    /// The checkpoint stored as `bytes`, checked against the MAC stored beside it.
    fn checkpoint_of(&self, mac: &StoreMac, bytes: Option<&[u8]>) -> Result<Option<(AuditCheckpoint, Seal)>> {
        let Some(bytes) = bytes else { return Ok(None) };
        let tag = self.meta.get(AUDIT_CHECKPOINT_MAC)?;
        let tag = tag.as_deref().and_then(|t| std::str::from_utf8(t).ok()).and_then(|hex| optin_protocol::hex::decode(hex).ok());
        let checkpoint = serde_json::from_slice(bytes).map_err(|e| corrupt("meta", format!("`{AUDIT_CHECKPOINT}`: {e}")))?;
        Ok(Some((checkpoint, mac.check_checkpoint(bytes, tag.as_deref()))))
    }

    /// The stored head, when it carries its MAC and the record it names is stored and
    /// carries its: what pruning counts the records beyond the bound from, and so must not
    /// take on trust. `None` when it fails, or names no record after `floor` (the
    /// checkpoint's record) while records are stored there.
    fn vouched_head(&self, floor: AuditHead) -> Result<Option<AuditHead>> {
        // Read under the chain's lock, so the head, its MAC and the record it names are all
        // from before an append or all from after it.
        let (_appends, mac) = self.chain()?;
        let head = stored_head(&self.meta)?.unwrap_or(AuditHead::EMPTY);
        if head.seq <= floor.seq {
            // Nothing after the checkpoint, as the head says; or the head is not as stored.
            let more = self.audit.range(key::audit(floor.seq + 1)..).next().is_some();
            return Ok((head == floor && !more).then_some(head));
        }
        let head_tag = self.meta.get(AUDIT_HEAD_MAC)?;
        let head_tag = head_tag.as_deref().and_then(|t| std::str::from_utf8(t).ok()).and_then(|hex| optin_protocol::hex::decode(hex).ok());
        if mac.check_head(&head, head_tag.as_deref()) != Seal::Valid {
            return Ok(None);
        }
        let k = key::audit(head.seq);
        let Some(bytes) = self.audit.get(k)? else { return Ok(None) };
        let hash = optin_protocol::sha256(&bytes);
        let sealed = mac.check_record(head.seq, &hash, self.audit_macs.get(k)?.as_deref()) == Seal::Valid;
        Ok((hash == head.hash && sealed).then_some(head))
    }

    /// Removes the oldest records beyond `keep` at `now`, at most `batch`, and moves the
    /// checkpoint on over them in the same transaction. Records are checked before they go:
    /// pruning stops at the first that is not as the chain committed to it, or at a
    /// checkpoint that fails its MAC, and removes nothing from there on; nor anything when the
    /// head, or the record it names, fails its MAC.
    pub fn prune_audit(&self, keep: &AuditKeep, now: OffsetDateTime, batch: usize) -> Result<Pruned> {
        let mac = self.mac()?;
        // Read once: the transaction below checks that it is still what was stored.
        let stored = self.meta.get(AUDIT_CHECKPOINT)?;
        let (mut checkpoint, floor) = match self.checkpoint_of(mac, stored.as_deref())? {
            None => (None, AuditHead::EMPTY),
            Some((c, Seal::Valid)) => {
                let floor = AuditHead { seq: c.seq, hash: c.hash };
                (Some(c), floor)
            }
            Some((c, Seal::Missing | Seal::Invalid)) => return Ok(Pruned::Broken(c.seq)),
        };
        let Some(head) = self.vouched_head(floor)? else {
            return Ok(Pruned::Broken(stored_head(&self.meta)?.map_or(floor.seq + 1, |h| h.seq)));
        };
        let over = head.seq.saturating_sub(floor.seq).saturating_sub(keep.records);
        let cutoff = now - keep.age;
        // The batch and the record after it, which must chain to the last one removed.
        let mut read = Vec::new();
        let mut last = floor;
        let mut broken = None;
        for row in self.audit.range(key::audit(floor.seq + 1)..).take(batch.saturating_add(1)) {
            let (k, v) = row?;
            let seq = key::decode_audit(&k).ok_or_else(|| corrupt("audit", "a key that is not a sequence number"))?;
            let hash = optin_protocol::sha256(&v);
            let record: Option<AuditRecord> = serde_json::from_slice(&v).ok();
            let sealed = mac.check_record(seq, &hash, self.audit_macs.get(&k)?.as_deref()) == Seal::Valid;
            match record {
                Some(record) if seq == last.seq + 1 && record.seq == seq && sealed && record.prev == optin_protocol::hex(&last.hash) => {
                    last = AuditHead { seq, hash };
                    read.push((record, hash));
                }
                _ => {
                    broken = Some(last.seq + 1);
                    break;
                }
            }
        }
        // The last record read stays: it is the one the next record chains to.
        let removable = read.len().saturating_sub(1);
        let going = read[..removable].iter().enumerate().take_while(|(n, (record, _))| (*n as u64) < over || record.at < cutoff).count();
        if going == 0 {
            // Due to go, but not past a record that cannot be vouched for.
            let due = over > 0 || read.first().is_some_and(|(r, _)| r.at < cutoff);
            return Ok(match broken {
                Some(seq) if due => Pruned::Broken(seq),
                _ => Pruned::Records(0),
            });
        }
        let mut next = checkpoint.take().unwrap_or_else(|| AuditCheckpoint::start(&read[0].0));
        for (record, hash) in &read[..going] {
            next.fold(record, *hash);
        }
        next.pruned_at = now;
        let bytes = serde_json::to_vec(&next).map_err(|e| corrupt("meta", e))?;
        let tag = optin_protocol::hex(&mac.checkpoint(&bytes));
        let keys: Vec<[u8; 8]> = read[..going].iter().map(|(r, _)| key::audit(r.seq)).collect();
        // Readers of the log see it before or after the batch, never halfway.
        let _pruning = self.pruning.write().unwrap_or_else(PoisonError::into_inner);
        let done = (&self.audit, &self.audit_macs, &self.meta)
            .transaction(|(audit, macs, meta)| {
                // Another pruning got here first: this one's batch is stale.
                if meta.get(AUDIT_CHECKPOINT)? != stored {
                    return Ok(0);
                }
                for k in &keys {
                    audit.remove(&k[..])?;
                    macs.remove(&k[..])?;
                }
                meta.insert(AUDIT_CHECKPOINT, bytes.as_slice())?;
                meta.insert(AUDIT_CHECKPOINT_MAC, tag.as_str())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(keys.len())
            })
            .map_err(tx_error)?;
        Ok(Pruned::Records(done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::GrantSummary;
    use optin_protocol::scope::GrantId;
    use ring::hmac;

    const T: OffsetDateTime = time::macros::datetime!(2026-11-20 10:00 UTC);

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store")).expect("a store");
        let mac = StoreMac::new(hmac::Key::new(hmac::HMAC_SHA256, &[5; 32]));
        (dir, store.keyed(mac))
    }

    fn keep(records: u64) -> AuditKeep {
        AuditKeep::new(records, "90d".parse().expect("a span")).expect("a bound")
    }

    fn served(store: &Store, grant: &GrantId, audience: Option<&str>, at: OffsetDateTime) {
        let event = AuditEvent::Served {
            grant_id: grant.clone(),
            marketer: "acme.example".into(),
            audience: audience.map(str::to_owned),
            asked: "/v1/slice?".into(),
            items: 3,
            slice_id: "s_1".into(),
            jws_sha256: "00".repeat(32),
            repeat_of: None,
        };
        store.append_audit(at, event).expect("appended");
    }

    /// Prunes until nothing more goes; returns how many calls it took.
    fn prune_all(store: &Store, keep: &AuditKeep, now: OffsetDateTime) -> usize {
        let mut calls = 0;
        while let Pruned::Records(1..) = store.prune_audit(keep, now, 10).expect("pruned") {
            calls += 1;
            assert!(calls < 1000, "pruning ends");
        }
        calls
    }

    fn seqs(store: &Store) -> Vec<u64> {
        store.audit_log().expect("the log").records.iter().map(|r| r.record.seq).collect()
    }

    #[test]
    fn rejects_a_bound_that_keeps_nothing() {
        assert_eq!(AuditKeep::new(0, "90d".parse().expect("a span")), Err(KeepError::NoRecords));
        assert_eq!(AuditKeep::new(1, "23h".parse().expect("a span")), Err(KeepError::TooShort));
        assert!(AuditKeep::new(1, "1d".parse().expect("a span")).is_ok());
    }

    #[test]
    fn pruning_keeps_the_newest_records_in_batches_and_counts_the_rest() {
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([1; 12]);
        for n in 0..45 {
            served(&store, &grant, (n % 3 == 0).then_some("partner.example"), T + time::Duration::seconds(n));
        }
        assert_eq!(store.prune_audit(&keep(20), T, 10).expect("pruned"), Pruned::Records(10), "a batch at a time");
        assert_eq!(prune_all(&store, &keep(20), T), 2);
        assert_eq!(seqs(&store), (26..=45).collect::<Vec<_>>());
        let (checkpoint, seal) = store.audit_checkpoint().expect("read").expect("a checkpoint");
        assert_eq!(seal, Seal::Valid);
        assert_eq!((checkpoint.seq, checkpoint.first_at, checkpoint.last_at, checkpoint.pruned_at), (25, T, T + time::Duration::seconds(24), T));
        assert_eq!(checkpoint.events.get("served"), Some(&25));
        let GrantSummary { slices, items, partners, last_served, .. } = &checkpoint.grants[0];
        assert_eq!((*slices, *items, *last_served), (25, 75, Some(T + time::Duration::seconds(24))));
        assert_eq!((partners[0].audience.as_str(), partners[0].slices), ("partner.example", 9));
        // The checkpoint and the records kept account for every record, read together.
        let found = store.audit_after(0, |r| Some(r.seq)).expect("read");
        assert_eq!((found.checkpoint.map(|(c, _)| c.seq), found.kept, found.last), (Some(25), (26..=45).collect::<Vec<_>>(), 45));
        let found = store.audit_after(40, |r| Some(r.seq)).expect("read");
        assert_eq!((found.kept, found.last), ((41..=45).collect::<Vec<_>>(), 45), "taken up after a record");
        let found = store.audit_after(45, |r| Some(r.seq)).expect("read");
        assert_eq!((found.kept, found.last), (Vec::new(), 45), "nothing new");
    }

    #[test]
    fn a_grant_keeps_a_bounded_number_of_partners_and_counts_the_rest_together() {
        use crate::store::record::{MAX_PARTNERS_PER_GRANT, OTHER_PARTNERS};
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([4; 12]);
        let asked = MAX_PARTNERS_PER_GRANT + 40;
        for n in 0..asked {
            served(&store, &grant, Some(&format!("p{n:04}.example")), T + time::Duration::seconds(n as i64));
        }
        served(&store, &grant, None, T + time::Duration::seconds(asked as i64));
        prune_all(&store, &keep(1), T);
        let (checkpoint, _) = store.audit_checkpoint().expect("read").expect("a checkpoint");
        let g = &checkpoint.grants[0];
        assert_eq!((g.slices, g.items), (asked as u64, 3 * asked as u64), "the grant's totals stay exact");
        assert_eq!(g.partners.len(), MAX_PARTNERS_PER_GRANT + 1, "the partners named, and one entry for the rest");
        let other = g.partners.iter().find(|p| p.audience == OTHER_PARTNERS).expect("the rest, together");
        assert_eq!((other.slices, other.items, other.last_served), (40, 120, Some(T + time::Duration::seconds(asked as i64 - 1))));
        let slices: u64 = g.partners.iter().map(|p| p.slices).sum();
        assert_eq!(slices, asked as u64, "every partner's slice is counted once");
        // A partner already named keeps its own entry.
        assert!(g.partners.iter().any(|p| p.audience == "p0000.example" && p.slices == 1));
    }

    #[test]
    fn pruning_stops_at_a_head_it_cannot_vouch_for() {
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([5; 12]);
        for n in 0..30 {
            served(&store, &grant, None, T + time::Duration::seconds(n));
        }
        // The head's MAC replaced behind optin's back.
        let tag = store.meta.get(AUDIT_HEAD_MAC).expect("read").expect("the head's MAC");
        store.meta.insert(AUDIT_HEAD_MAC, "00".repeat(32).as_str()).expect("write");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Broken(30));
        assert_eq!(seqs(&store).first(), Some(&1), "nothing pruned");
        store.meta.insert(AUDIT_HEAD_MAC, tag).expect("write");
        // The last record's MAC removed: the head names a record it cannot vouch for.
        let record_tag = store.audit_macs.remove(key::audit(30)).expect("write").expect("record 30's MAC");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Broken(30));
        assert_eq!(seqs(&store).first(), Some(&1), "nothing pruned");
        // The last record replaced: the head no longer names it.
        let last = store.audit.get(key::audit(30)).expect("read").expect("record 30");
        store.audit_macs.insert(key::audit(30), record_tag).expect("write");
        store.audit.insert(key::audit(30), store.audit.get(key::audit(29)).expect("read").expect("record 29")).expect("write");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Broken(30));
        assert_eq!(seqs(&store).first(), Some(&1), "nothing pruned");
        store.audit.insert(key::audit(30), last).expect("write");
        // The head removed, records still stored.
        let head = store.meta.remove(AUDIT_HEAD).expect("write").expect("the head");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Broken(1));
        assert_eq!(seqs(&store).first(), Some(&1), "nothing pruned");
        store.meta.insert(AUDIT_HEAD, head).expect("write");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Records(10), "as stored, it is pruned");
    }

    #[test]
    fn a_page_waiting_on_pruning_does_not_hold_up_appends() {
        use std::sync::mpsc;
        use std::time::Duration;
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([6; 12]);
        served(&store, &grant, None, T);
        // A long read of the log, a pruner waiting for it (so later readers wait behind the
        // pruner), and a page asked for meanwhile.
        let (store, grant) = (&store, &grant);
        let reading = store.pruning.read().expect("the lock");
        let appended = std::thread::scope(|s| {
            s.spawn(move || drop(store.pruning.write().expect("the lock")));
            std::thread::sleep(Duration::from_millis(100));
            s.spawn(move || store.audit_page(0, 10).expect("a page"));
            std::thread::sleep(Duration::from_millis(100));
            let (done, appended) = mpsc::channel();
            s.spawn(move || {
                served(store, grant, None, T);
                // The test may have stopped waiting.
                let _ = done.send(());
            });
            // Unblocked, the append takes milliseconds; blocked, it waits for the read below
            // that the test holds until then. The bound only has to be far from both.
            let waited = appended.recv_timeout(Duration::from_secs(10));
            drop(reading);
            waited
        });
        assert!(appended.is_ok(), "a slice's record is appended while the page waits");
    }

    #[test]
    fn records_older_than_the_bound_go_and_the_last_record_stays() {
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([2; 12]);
        for n in 0..5 {
            served(&store, &grant, None, T + time::Duration::days(n));
        }
        // On day 94, every record is older than 90 days.
        let later = T + time::Duration::days(94) + time::Duration::hours(1);
        prune_all(&store, &keep(100), later);
        assert_eq!(seqs(&store), [5]);
        // A year on, the last record still stays: the first record kept is checked against
        // what came before it.
        prune_all(&store, &keep(100), later + time::Duration::days(365));
        assert_eq!(seqs(&store), [5]);
    }

    #[test]
    fn pruning_stops_at_a_record_it_cannot_vouch_for() {
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([3; 12]);
        for n in 0..30 {
            served(&store, &grant, None, T + time::Duration::seconds(n));
        }
        // Record 8 edited behind optin's back: it fails its MAC.
        let mut record: serde_json::Value = serde_json::from_slice(&store.audit.get(key::audit(8)).expect("read").expect("record 8")).expect("JSON");
        record["event"]["items"] = 0.into();
        store.audit.insert(key::audit(8), serde_json::to_vec(&record).expect("JSON")).expect("write");
        prune_all(&store, &keep(5), T);
        assert_eq!(seqs(&store).first(), Some(&7), "record 7 stays, as what record 8 chains to");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Broken(8));
        // And a checkpoint changed behind optin's back stops pruning too.
        store.meta.insert(AUDIT_CHECKPOINT_MAC, "00".repeat(32).as_str()).expect("write");
        assert_eq!(store.prune_audit(&keep(5), T, 10).expect("pruned"), Pruned::Broken(6));
    }

    fn labelled(label: String) -> AuditEvent {
        AuditEvent::Served {
            grant_id: GrantId::from_bytes([9; 12]),
            marketer: "acme.example".into(),
            audience: None,
            asked: label,
            items: 1,
            slice_id: "s_1".into(),
            jws_sha256: "00".repeat(32),
            repeat_of: None,
        }
    }

    /// How many records the log holds, each with its MAC and naming the hash of the one
    /// before, the head naming the last with its MAC; panics where that fails.
    fn chained(store: &Store) -> usize {
        let log = store.audit_log().expect("the log");
        let mut before = [0; 32];
        for stored in &log.records {
            assert_eq!(stored.seal, Seal::Valid, "record {} carries its MAC", stored.record.seq);
            assert_eq!(stored.record.prev, optin_protocol::hex(&before), "record {} names the one before", stored.record.seq);
            before = stored.hash;
        }
        let (head, seal) = log.head;
        assert_eq!((head.seq, head.hash, seal), (log.records.len() as u64, before, Seal::Valid), "the head names the last record");
        log.records.len()
    }

    fn label(record: &AuditRecord) -> &str {
        match &record.event {
            AuditEvent::Served { asked, .. } => asked,
            other => panic!("not a test record: {other:?}"),
        }
    }

    #[test]
    fn appends_waiting_for_the_lock_are_written_by_its_next_holder_in_the_order_they_came() {
        let (_dir, store) = store();
        let store = std::sync::Arc::new(store);
        let held = store.chain().expect("the lock").0;
        let mut appends = Vec::new();
        for n in 0..5 {
            let appender = store.clone();
            appends.push(std::thread::spawn(move || appender.append_audit(T, labelled(format!("waited {n}"))).expect("appended")));
            // One at a time into the queue, so the order they came in is known.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.queue.lock().len() < n + 1 {
                assert!(std::time::Instant::now() < deadline, "append {n} never queued");
                std::thread::yield_now();
            }
        }
        drop(held);
        let written: Vec<AuditRecord> = appends.into_iter().map(|a| a.join().expect("an append thread")).collect();
        let order: Vec<(u64, &str)> = written.iter().map(|r| (r.seq, label(r))).collect();
        assert_eq!(order, [(1, "waited 0"), (2, "waited 1"), (3, "waited 2"), (4, "waited 3"), (5, "waited 4")]);
        assert_eq!(chained(&store), 5);
    }

    #[test]
    fn appends_from_many_threads_each_get_their_own_record_and_the_chain_holds() {
        let (_dir, store) = store();
        let store = std::sync::Arc::new(store);
        let mut threads = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            threads.push(std::thread::spawn(move || {
                let mut mine = Vec::new();
                for n in 0..40 {
                    let label = format!("{t}/{n}");
                    let record = if n % 4 == 0 {
                        // Made for its number under the lock, as a slice is signed.
                        let made = store.append_audit_with(T, |seq| Ok::<_, ()>((labelled(format!("{label}@{seq}")), seq))).expect("appended");
                        let (record, seq) = made.expect("made");
                        assert_eq!(record.seq, seq, "the record has the number it was made for");
                        record
                    } else {
                        store.append_audit(T, labelled(label)).expect("appended")
                    };
                    mine.push(record);
                }
                mine
            }));
        }
        let mut returned: Vec<(u64, String)> = Vec::new();
        for thread in threads {
            returned.extend(thread.join().expect("an append thread").iter().map(|r| (r.seq, label(r).to_owned())));
        }
        returned.sort();
        let log = store.audit_log().expect("the log");
        let stored: Vec<(u64, String)> = log.records.iter().map(|r| (r.record.seq, label(&r.record).to_owned())).collect();
        assert_eq!(returned, stored, "every append got the record stored at its number");
        assert_eq!(chained(&store), 320);
    }

    /// A keyed store at `path`, as the agent opens it after a restart.
    fn reopened(path: &std::path::Path) -> Store {
        let mac = StoreMac::new(hmac::Key::new(hmac::HMAC_SHA256, &[5; 32]));
        Store::open(path).expect("a store").keyed(mac)
    }

    /// The head and records 1 to `n` as audit_log reads them: (head seq, head seal, every
    /// record sealed).
    fn as_read(store: &Store) -> (u64, Seal, Vec<(u64, Seal)>) {
        let log = store.audit_log().expect("the log");
        (log.head.0.seq, log.head.1, log.records.iter().map(|r| (r.record.seq, r.seal)).collect())
    }

    /// A store at `path` holding five records of `grant`, with the head and its MAC as they
    /// were after record 3.
    fn five_records(path: &std::path::Path, grant: &GrantId) -> (Store, [(&'static str, sled::IVec); 2]) {
        let store = reopened(path);
        for n in 0..3 {
            served(&store, grant, None, T + time::Duration::seconds(n));
        }
        let meta = |k: &str| store.meta.get(k).expect("read").expect("stored");
        let after3 = [(AUDIT_HEAD_MAC, meta(AUDIT_HEAD_MAC)), (AUDIT_HEAD, meta(AUDIT_HEAD))];
        for n in 3..5 {
            served(&store, grant, None, T + time::Duration::seconds(n));
        }
        (store, after3)
    }

    #[test]
    fn an_append_cut_short_by_a_crash_is_completed_when_the_store_is_next_used() {
        use Seal::Valid;
        // An append of records 4 and 5 together makes six writes, in this order: record 4's
        // MAC, record 4, record 5's MAC, record 5, the head's MAC, the head. sled keeps a
        // prefix of them after a crash: how many were kept, and the head the store has then.
        let cases = [(0, 3), (1, 3), (2, 4), (3, 4), (4, 5), (5, 5), (6, 5)];
        let grant = GrantId::from_bytes([7; 12]);
        for (kept, head) in cases {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("store");
            let (store, before) = five_records(&path, &grant);
            let meta = |k: &str| store.meta.get(k).expect("read").expect("stored");
            let row = |tree: &sled::Tree, seq| (tree.clone(), key::audit(seq).to_vec(), tree.get(key::audit(seq)).expect("read").expect("stored"));
            let mut writes = vec![row(&store.audit_macs, 4), row(&store.audit, 4), row(&store.audit_macs, 5), row(&store.audit, 5)];
            writes.extend([AUDIT_HEAD_MAC, AUDIT_HEAD].map(|k| (store.meta.clone(), k.as_bytes().to_vec(), meta(k))));
            // Back to the store as it was after record 3, then the writes that were kept.
            for (tree, key, _) in &writes[..4] {
                tree.remove(key).expect("write");
            }
            for (k, v) in &before {
                store.meta.insert(k, v).expect("write");
            }
            for (tree, key, value) in &writes[..kept] {
                tree.insert(key, value).expect("write");
            }
            store.flush().expect("flushed");
            // The trees hold the database open too.
            drop((writes, store));

            let store = reopened(&path);
            let records: Vec<(u64, Seal)> = (1..=head).map(|seq| (seq, Valid)).collect();
            assert_eq!(as_read(&store), (head, Valid, records), "{kept} of the append's writes kept");
            served(&store, &grant, None, T + time::Duration::seconds(9));
            assert_eq!(as_read(&store).0, head + 1, "{kept} kept: the next record follows on");
            assert!(as_read(&store).2.iter().all(|(_, seal)| *seal == Valid), "{kept} kept: every record vouched for");
        }
    }

    #[test]
    fn only_records_this_optin_wrote_move_the_head_on() {
        use Seal::{Invalid, Missing, Valid};
        let grant = GrantId::from_bytes([8; 12]);
        let mac = StoreMac::new(hmac::Key::new(hmac::HMAC_SHA256, &[5; 32]));
        let drop_record = |store: &Store, seq: u64| {
            store.audit.remove(key::audit(seq)).expect("write");
            store.audit_macs.remove(key::audit(seq)).expect("write");
        };
        // Done behind optin's back to a log of five records, given the head and its MAC as
        // they were after record 3; then the head as the store has it, the head's seal, the
        // fourth record kept (sequence number and seal), and the seal of the next record
        // appended: one without its MAC when the head cannot be vouched for.
        type Tamper<'a> = Box<dyn Fn(&Store, &[(&str, sled::IVec)]) + 'a>;
        let head3 = |store: &Store, head3: &[(&str, sled::IVec)]| head3.iter().for_each(|(k, v)| drop(store.meta.insert(k, v).expect("write")));
        type Case<'a> = (&'a str, Tamper<'a>, u64, Seal, (u64, Seal), Seal);
        let cases: Vec<Case> = vec![
            (
                "record 4 left after the head without its MAC",
                Box::new(|store, h| {
                    drop_record(store, 5);
                    store.audit_macs.remove(key::audit(4)).expect("write");
                    head3(store, h);
                }),
                3,
                Valid,
                (4, Missing),
                Valid,
            ),
            (
                "record 4 left after the head with the MAC of another",
                Box::new(|store, h| {
                    drop_record(store, 5);
                    let other = store.audit_macs.get(key::audit(3)).expect("read").expect("stored");
                    store.audit_macs.insert(key::audit(4), other).expect("write");
                    head3(store, h);
                }),
                3,
                Valid,
                (4, Invalid),
                Valid,
            ),
            (
                "record 4 left after the head with its MAC, but naming another before it",
                Box::new(|store, h| {
                    drop_record(store, 5);
                    let bytes = store.audit.get(key::audit(4)).expect("read").expect("stored");
                    let mut record: serde_json::Value = serde_json::from_slice(&bytes).expect("a record");
                    record["prev"] = "00".repeat(32).into();
                    let bytes = serde_json::to_vec(&record).expect("JSON");
                    store.audit_macs.insert(key::audit(4), &mac.record(4, &optin_protocol::sha256(&bytes))[..]).expect("write");
                    store.audit.insert(key::audit(4), bytes).expect("write");
                    head3(store, h);
                }),
                3,
                Valid,
                (4, Valid),
                Valid,
            ),
            (
                "record 5 left after the head, record 4 gone",
                Box::new(|store, h| {
                    drop_record(store, 4);
                    head3(store, h);
                }),
                3,
                Valid,
                (5, Valid),
                Valid,
            ),
            (
                "the head's MAC of the head after record 3",
                Box::new(|store, h| drop(store.meta.insert(AUDIT_HEAD_MAC, h[0].1.clone()).expect("write"))),
                5,
                Invalid,
                (4, Valid),
                Missing,
            ),
        ];
        for (what, tamper, head, head_seal, fourth, next) in cases {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("store");
            let (store, after3) = five_records(&path, &grant);
            tamper(&store, &after3);
            store.flush().expect("flushed");
            drop(store);

            let store = reopened(&path);
            let (seq, seal, records) = as_read(&store);
            assert_eq!((seq, seal, records.get(3).copied()), (head, head_seal, Some(fourth)), "{what}");
            served(&store, &grant, None, T + time::Duration::seconds(9));
            let appended = store.audit_log().expect("the log").records.into_iter().find(|r| r.record.seq == head + 1).map(|r| r.seal);
            assert_eq!(appended, Some(next), "{what}: the next record");
        }
    }
}
