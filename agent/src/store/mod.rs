//! The store: the only module that knows sled.
//!
//! Trees and keys (all integers big-endian, so byte order is numeric order):
//!
//! | tree          | key                                         | value                    |
//! |---------------|---------------------------------------------|--------------------------|
//! | `signals`     | kind tag (1) · time (8) · signal id         | signal JSON              |
//! | `signal_ids`  | signal id                                   | its `signals` key        |
//! | `arrivals`    | arrival number (8)                          | its `signals` key        |
//! | `arrival_of`  | `signals` key                               | its arrival number (8)   |
//! | `purchases`   | merchant · 0x00 · time (8) · signal id      | empty                    |
//! | `grants`      | grant id                                    | [`GrantRecord`] JSON     |
//! | `grant_macs`  | grant id                                    | its MAC (32)             |
//! | `audit`       | sequence number (8)                         | [`AuditRecord`] JSON     |
//! | `audit_macs`  | sequence number (8)                         | its MAC (32)             |
//! | `refusal_counts` | grant id · 0x00 · reason                 | [`RefusalCount`] JSON    |
//! | `refusal_macs`| grant id · 0x00 · reason                    | its MAC (32)             |
//! | `requests`    | marketer domain · 0x00 · request id         | [`RequestRecord`] JSON   |
//! | `request_macs`| marketer domain · 0x00 · request id         | its MAC (32)             |
//! | `push_queue`  | due time (8) · event id                     | [`PendingPush`] JSON     |
//! | `push_state`  | grant id                                    | [`PushState`] JSON       |
//! | `budgets`     | grant id                                    | epsilon spent ([`budget`]) |
//! | `answers`     | grant id · 0x00 · query hash                | [`budget::Answer`] JSON  |
//! | `rates`       | grant id                                    | slices this hour and day ([`rate`]) |
//! | `meta`        | name                                        | value                    |
//!
//! Time is microseconds since the Unix epoch with the sign bit flipped, so signals of one
//! kind range-scan in time order. `meta/schema` holds [`SCHEMA`]; a store of another
//! version is refused rather than misread. Writes the caller acknowledges are flushed
//! (fsync) before the call returns.
//!
//! The audit log is pruned behind a checkpoint kept in `meta` ([`audit`]), so it stays
//! within the bound the person sets however many slices are served.
//!
//! Grants, audit records and the audit chain's head carry MACs ([`seal`]) under a key the
//! store is given ([`Store::keyed`]) and does not keep: a grant that fails its MAC serves
//! nothing, and the audit names the first record that fails its own. A store written by an
//! optin that made no MACs is MACed as it is found, once ([`Store::seal_as_found`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use optin_protocol::scope::GrantId;
use optin_protocol::signal::{Kind, Signal};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;

pub mod arrival;
pub mod audit;
pub mod budget;
pub mod key;
pub mod meta;
pub mod push;
pub mod rate;
pub mod record;
pub mod seal;

pub use audit::{AuditKeep, AuditLog, AuditPage, KeepError, Pruned, StoredRecord};
pub use meta::{Address, Quota};
pub use push::{MAX_QUEUED, MAX_QUEUED_PER_GRANT};
pub use record::{
    AuditCheckpoint, AuditEvent, AuditHead, AuditRecord, Decision, GrantRecord, LastPush, PendingPush, PushState, PushTo, RefusalCount, RequestRecord,
};
pub use seal::{Seal, StoreMac};

/// The on-disk format version.
pub const SCHEMA: &str = "1";

/// The `meta` key of the audit chain's head ([`AuditHead`]).
const AUDIT_HEAD: &str = "audit_head";

/// The `meta` key of the head's MAC, in hex. Its presence says the store is sealed: its
/// records carry MACs.
const AUDIT_HEAD_MAC: &str = "audit_head_mac";

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the database.
    #[error("the store at {0} is in use by another process (is `optin serve` running without its admin socket?)")]
    Locked(String),
    /// sled failed.
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    /// A record did not decode: the store is damaged or from another version.
    #[error("damaged store record in `{tree}`: {detail}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// What failed.
        detail: String,
    },
    /// The store was written by another version of optin.
    #[error("the store has schema version {0}, this optin reads version {SCHEMA}")]
    Schema(String),
    /// The transaction that held an audit record, among others appended with it, failed:
    /// the record was not written.
    #[error("writing the audit log failed: {0}")]
    Audit(String),
    /// Grants or the audit were used before the store was given its MAC key: nothing is
    /// trusted or written unMACed.
    #[error("the store was opened without its MAC key")]
    Unkeyed,
    /// The push queue holds as many events as it may: nothing more is queued until inboxes
    /// take some.
    #[error("the push queue is full ({0} events wait for their inboxes): `optin grants` shows which inboxes do not answer")]
    QueueFull(usize),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What became of one signal given to [`Store::insert_signals_metered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It is stored now.
    Stored,
    /// A signal with its id was stored before: nothing changed.
    Duplicate,
    /// It is new, but the quota of the day is used up: not stored.
    OverQuota,
}

/// Which signals to forget: the owner's `forget` request as it travels and as the store
/// executes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forget {
    /// One signal by id.
    Id(String),
    /// Every signal of a kind.
    Kind(Kind),
    /// Every signal before a time.
    Before(#[serde(with = "optin_protocol::timestamp::serde")] OffsetDateTime),
    /// Everything.
    All,
}

/// A grant as read, and whether it carries its MAC.
#[derive(Clone, Debug)]
pub struct StoredGrant {
    /// The grant as stored (trust it only when `seal` is [`Seal::Valid`]).
    pub record: GrantRecord,
    /// Its MAC, checked.
    pub seal: Seal,
}

/// A consent request as read, and whether it carries its MAC.
#[derive(Clone, Debug)]
pub struct StoredRequest {
    /// The request as stored (trust it only when `seal` is [`Seal::Valid`]).
    pub record: RequestRecord,
    /// Its MAC, checked (and [`Seal::Invalid`] for a record stored under another's key).
    pub seal: Seal,
}

/// The audit chain as appends see it.
struct Chain {
    /// The last record written.
    head: AuditHead,
    /// Whether the stored head carries its MAC. A record appended onto a head that does not
    /// is written without a MAC of its own, so the break stays where it happened instead of
    /// being MACed over by the next record.
    seal: Seal,
}

/// The agent's database.
pub struct Store {
    db: sled::Db,
    signals: sled::Tree,
    ids: sled::Tree,
    /// The order signals arrived in ([`arrival`]), and each signal's place in it.
    arrivals: sled::Tree,
    arrival_of: sled::Tree,
    purchases: sled::Tree,
    grants: sled::Tree,
    grant_macs: sled::Tree,
    audit: sled::Tree,
    audit_macs: sled::Tree,
    refusal_counts: sled::Tree,
    refusal_macs: sled::Tree,
    requests: sled::Tree,
    request_macs: sled::Tree,
    push_queue: sled::Tree,
    push_state: sled::Tree,
    /// Serializes refusal counts: each is read, counted up and written back with its MAC.
    counting: Mutex<()>,
    meta: sled::Tree,
    /// The MAC key ([`Store::keyed`]); without it, grants and the audit are not used.
    mac: Option<StoreMac>,
    /// Whether the records an older optin wrote have been MACed ([`Store::seal_as_found`]).
    sealed: AtomicBool,
    /// Counts changes to the signals since the store was opened ([`Store::signals_version`]).
    signals_version: AtomicU64,
    /// Serializes audit appends: each record names the hash of the one before it.
    chain: Mutex<Chain>,
    /// Audit appends waiting for the chain's lock, written together by its next holder.
    queue: audit::Queue,
    /// The last audit record appended, and the last one a finished [`Store::write_out`]
    /// put on disk.
    appended_through: AtomicU64,
    written_through: AtomicU64,
    /// Held to read while the audit log is read with its checkpoint, and to write while a
    /// batch is pruned, so no reader sees a batch half gone ([`audit`]).
    pruning: RwLock<()>,
}

fn corrupt(tree: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { tree, detail: detail.to_string() }
}

fn stored_head(meta: &sled::Tree) -> Result<Option<AuditHead>> {
    let Some(value) = meta.get(AUDIT_HEAD)? else { return Ok(None) };
    let head = std::str::from_utf8(&value).ok().and_then(AuditHead::decode);
    head.map(Some).ok_or_else(|| corrupt("meta", format!("`{AUDIT_HEAD}` is not SEQ:HEX")))
}

fn decode_signal(bytes: &[u8]) -> Result<Signal> {
    // Records were validated on the way in; reading them back is on every slice's hot path.
    Signal::from_stored_json(bytes).map_err(|e| corrupt("signals", e))
}

/// The most sled keeps of the store in memory. Its default, 1 GiB, is for a database server:
/// the agent runs on the person's laptop beside their browser, and what a slice reads is the
/// recent end of a few trees, so a small cache serves it (BENCHMARKS.md, "Agent memory").
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new().path(path).cache_capacity(CACHE_BYTES).open().map_err(|e| match e {
            sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => StoreError::Locked(path.display().to_string()),
            other => StoreError::Sled(other),
        })?;
        // sled makes its directory with the process umask; the data is the person's own.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        }
        let meta = db.open_tree("meta")?;
        match meta.get("schema")? {
            None => {
                meta.insert("schema", SCHEMA)?;
            }
            Some(v) if v.as_ref() == SCHEMA.as_bytes() => {}
            Some(v) => return Err(StoreError::Schema(String::from_utf8_lossy(&v).into_owned())),
        }
        let audit = db.open_tree("audit")?;
        let head = match stored_head(&meta)? {
            Some(head) => head,
            None => {
                // A new store, or one written by an optin that kept no head: the last record
                // is taken as it is, once, and the head is committed from now on.
                let head = match audit.last()? {
                    None => AuditHead::EMPTY,
                    Some((k, v)) => AuditHead { seq: key::decode_audit(&k).ok_or_else(|| corrupt("audit", "bad key"))?, hash: optin_protocol::sha256(&v) },
                };
                meta.insert(AUDIT_HEAD, head.encode().as_str())?;
                head
            }
        };
        let store = Store {
            signals: db.open_tree("signals")?,
            ids: db.open_tree("signal_ids")?,
            arrivals: db.open_tree("arrivals")?,
            arrival_of: db.open_tree("arrival_of")?,
            purchases: db.open_tree("purchases")?,
            grants: db.open_tree("grants")?,
            grant_macs: db.open_tree("grant_macs")?,
            audit,
            audit_macs: db.open_tree("audit_macs")?,
            refusal_counts: db.open_tree("refusal_counts")?,
            refusal_macs: db.open_tree("refusal_macs")?,
            requests: db.open_tree("requests")?,
            request_macs: db.open_tree("request_macs")?,
            push_queue: db.open_tree("push_queue")?,
            push_state: db.open_tree("push_state")?,
            counting: Mutex::new(()),
            meta,
            mac: None,
            sealed: AtomicBool::new(false),
            signals_version: AtomicU64::new(0),
            // Checked against its MAC once the store is keyed.
            chain: Mutex::new(Chain { head, seal: Seal::Missing }),
            queue: Default::default(),
            appended_through: AtomicU64::new(0),
            written_through: AtomicU64::new(0),
            pruning: RwLock::new(()),
            db,
        };
        store.number_unnumbered()?;
        Ok(store)
    }

    /// The store, with the key of its MACs. Grants and the audit are used only through a
    /// keyed store.
    pub fn keyed(self, mac: StoreMac) -> Store {
        Store { mac: Some(mac), ..self }
    }

    /// The chain, locked, with the MAC key; seals the store first if it is not yet.
    fn chain(&self) -> Result<(MutexGuard<'_, Chain>, &StoreMac)> {
        let mac = self.mac.as_ref().ok_or(StoreError::Unkeyed)?;
        // A poisoned lock only means another thread panicked mid-append; the head it guards
        // is still the last record written, so carry on with it.
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        if !self.sealed.load(Ordering::Acquire) {
            self.seal_as_found(&mut chain, mac)?;
            self.sealed.store(true, Ordering::Release);
        }
        Ok((chain, mac))
    }

    /// The MAC key, once the store is sealed.
    fn mac(&self) -> Result<&StoreMac> {
        if self.sealed.load(Ordering::Acquire) {
            return self.mac.as_ref().ok_or(StoreError::Unkeyed);
        }
        Ok(self.chain()?.1)
    }

    /// Makes sure the store's records carry MACs, the first time a keyed store is used.
    ///
    /// A store with a MACed chain head is sealed: its head is checked against its MAC, once an
    /// append that a crash cut short is completed ([`Store::complete_append`]). A
    /// store without one was written by an optin that made no MACs, and every audit record,
    /// grant and the head are MACed as they are found: this trusts the store as it is at the
    /// upgrade, once. If it held anything, a `sealed` record says so in the log, so that a
    /// store stripped of its MACs to be trusted again shows a second one.
    fn seal_as_found(&self, chain: &mut Chain, mac: &StoreMac) -> Result<()> {
        if let Some(stored) = self.meta.get(AUDIT_HEAD_MAC)? {
            let tag = std::str::from_utf8(&stored).ok().and_then(|hex| optin_protocol::hex::decode(hex).ok());
            chain.seal = self.complete_append(chain, mac, tag.as_deref())?;
            return Ok(());
        }
        let mut records = 0;
        for row in self.audit.iter() {
            let (k, v) = row?;
            let seq = key::decode_audit(&k).ok_or_else(|| corrupt("audit", "a key that is not a sequence number"))?;
            self.audit_macs.insert(&k, &mac.record(seq, &optin_protocol::sha256(&v))[..])?;
            records += 1;
        }
        let mut grants = 0;
        for row in self.grants.iter() {
            let (k, v) = row?;
            let id = grant_key(&k)?;
            self.grant_macs.insert(&k, &mac.grant(&id, &v)[..])?;
            grants += 1;
        }
        // The head's MAC last: until it is written, the store is not sealed, and an
        // interrupted sealing starts again.
        self.meta.insert(AUDIT_HEAD_MAC, optin_protocol::hex(&mac.head(&chain.head)).as_str())?;
        chain.seal = Seal::Valid;
        if records > 0 || grants > 0 {
            let at = OffsetDateTime::now_utc();
            self.append(chain, mac, at.replace_nanosecond(0).unwrap_or(at), AuditEvent::Sealed { records, grants })?;
        }
        self.flush()
    }

    /// Opens the store, waiting up to `patience` while another short-lived process (a CLI
    /// command, a native host writing one batch) holds it: those let go within milliseconds.
    pub fn open_waiting(path: &Path, patience: std::time::Duration) -> Result<Store> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Store::open(path) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores a batch atomically: either every new signal is stored or none is. Signals
    /// whose id is already stored are skipped. Returns (stored, duplicates). Durable on return.
    pub fn insert_signals(&self, batch: &[Signal]) -> Result<(usize, usize)> {
        let outcomes = self.insert(batch, None)?;
        let stored = outcomes.iter().filter(|o| **o == Outcome::Stored).count();
        Ok((stored, outcomes.len() - stored))
    }

    /// Stores each signal of `batch` that is new, while `quota` allows, and counts what it
    /// stored against the quota in the same transaction. One outcome per signal, in order.
    /// Durable on return.
    pub fn insert_signals_metered(&self, batch: &[Signal], quota: Quota) -> Result<Vec<Outcome>> {
        self.insert(batch, Some(quota))
    }

    fn insert(&self, batch: &[Signal], quota: Option<Quota>) -> Result<Vec<Outcome>> {
        let mut rows = Vec::with_capacity(batch.len());
        for s in batch {
            let value = serde_json::to_vec(s).map_err(|e| corrupt("signals", e))?;
            rows.push((s, key::signal(s.kind(), s.at, s.id.as_str()), value));
        }
        let outcomes = (&self.signals, &self.ids, &self.purchases, &self.meta, &self.arrivals, &self.arrival_of)
            .transaction(|(signals, ids, purchases, meta, arrivals, arrival_of)| {
                let mut used = match &quota {
                    Some(q) => q.used(meta)?,
                    None => 0,
                };
                let mut number = arrival::next(meta)?;
                let mut outcomes = Vec::with_capacity(rows.len());
                for (s, key, value) in &rows {
                    // An id whose signal is gone (an interrupted forget) counts as new.
                    if let Some(old) = ids.get(s.id.as_str())? {
                        if signals.get(&old)?.is_some() {
                            outcomes.push(Outcome::Duplicate);
                            continue;
                        }
                    }
                    if let Some(q) = &quota {
                        if used >= q.per_day {
                            outcomes.push(Outcome::OverQuota);
                            continue;
                        }
                        used += 1;
                    }
                    signals.insert(key.as_slice(), value.as_slice())?;
                    ids.insert(s.id.as_str(), key.as_slice())?;
                    arrival::record(arrivals, arrival_of, number, key)?;
                    number += 1;
                    if let (Kind::Purchase, Some(m)) = (s.kind(), s.body.merchant()) {
                        purchases.insert(key::purchase(m, s.at, s.id.as_str()), &[][..])?;
                    }
                    outcomes.push(Outcome::Stored);
                }
                if let Some(q) = &quota {
                    q.record(meta, used)?;
                }
                arrival::set_next(meta, number)?;
                Ok::<_, ConflictableTransactionError<StoreError>>(outcomes)
            })
            .map_err(tx_error)?;
        if outcomes.contains(&Outcome::Stored) {
            self.signals_changed();
        }
        self.flush()?;
        Ok(outcomes)
    }

    /// A number that changes whenever the signals do (stored, forgotten), in this process: a
    /// slice cut while it read `n` holds what a cut would hold now only while it still reads
    /// `n`. It moves after a batch is stored, before it is acknowledged, and both before and
    /// after a forget, so that nothing cut before a forget ended passes for current after it.
    pub fn signals_version(&self) -> u64 {
        self.signals_version.load(Ordering::Acquire)
    }

    fn signals_changed(&self) {
        self.signals_version.fetch_add(1, Ordering::AcqRel);
    }

    /// What [`Store::insert_signals`] would do with `batch`: (new, duplicates). Writes nothing.
    pub fn count_new(&self, batch: &[Signal]) -> Result<(usize, usize)> {
        let mut seen = std::collections::HashSet::new();
        let mut dups = 0;
        for s in batch {
            let stored = match self.ids.get(s.id.as_str())? {
                Some(key) => self.signals.get(key)?.is_some(),
                None => false,
            };
            if stored || !seen.insert(s.id.as_str()) {
                dups += 1;
            }
        }
        Ok((batch.len() - dups, dups))
    }

    /// Signals of `kind` with `since <= at < until`, in time order, each with its position,
    /// starting after the position `after` when given.
    pub fn scan(
        &self,
        kind: Kind,
        since: OffsetDateTime,
        until: OffsetDateTime,
        after: Option<&key::Position>,
    ) -> impl Iterator<Item = Result<(key::Position, Signal)>> + '_ {
        let mut start = key::signal_prefix(kind, since);
        if let Some(next) = after.map(key::Position::successor) {
            start = start.max(next);
        }
        let end = key::signal_prefix(kind, until);
        let range = if start < end { Some(self.signals.range(start..end)) } else { None };
        range.into_iter().flatten().map(|row| {
            let (k, v) = row?;
            let position = key::Position::stored(&k).ok_or_else(|| corrupt("signals", "a key that is not a signal key"))?;
            Ok((position, decode_signal(&v)?))
        })
    }

    /// Every signal, optionally of one kind, in kind then time order.
    pub fn all_signals(&self, kind: Option<Kind>) -> impl Iterator<Item = Result<Signal>> + '_ {
        let iter = match kind {
            Some(k) => self.signals.scan_prefix(key::kind_prefix(k)),
            None => self.signals.iter(),
        };
        iter.map(|row| decode_signal(&row?.1))
    }

    /// Whether a purchase at `merchant` happened with `after < at <= until`.
    pub fn purchase_between(&self, merchant: &str, after: OffsetDateTime, until: OffsetDateTime) -> Result<bool> {
        // (after, until]: from past every purchase at `after` to past every one at `until`.
        let range = key::purchase_after(merchant, after)..key::purchase_after(merchant, until);
        Ok(self.purchases.range(range).next().transpose()?.is_some())
    }

    /// Forgets signals; returns how many. Durable on return. Slices queued for a push are
    /// dropped before and after, so none cut before the forget carries a forgotten signal
    /// out, and none cut while it ran either.
    pub fn forget(&self, what: &Forget) -> Result<usize> {
        if self.mac.is_some() {
            self.drop_queued_slices()?;
        }
        let forgotten = self.forget_signals(what)?;
        if self.mac.is_some() {
            self.drop_queued_slices()?;
        }
        self.flush()?;
        Ok(forgotten)
    }

    fn forget_signals(&self, what: &Forget) -> Result<usize> {
        self.signals_changed();
        let forgotten = self.remove_signals(what);
        self.signals_changed();
        forgotten
    }

    fn remove_signals(&self, what: &Forget) -> Result<usize> {
        let keys: Vec<sled::IVec> = match what {
            Forget::Id(id) => self.ids.get(id.as_bytes())?.into_iter().collect(),
            Forget::Kind(k) => self.signals.scan_prefix(key::kind_prefix(*k)).keys().collect::<Result<_, _>>()?,
            Forget::Before(t) => {
                let mut keys = Vec::new();
                for k in Kind::ALL {
                    for found in self.signals.range(key::kind_prefix(k).to_vec()..key::signal_prefix(k, *t)).keys() {
                        keys.push(found?);
                    }
                }
                keys
            }
            Forget::All => self.signals.iter().keys().collect::<Result<_, _>>()?,
        };
        let mut forgotten = 0;
        // Chunks keep each transaction small; each chunk is atomic and a signal is removed
        // from the main tree first, so a crash never leaves a servable signal half-forgotten.
        for chunk in keys.chunks(1000) {
            let mut rows = Vec::new();
            for key in chunk {
                if let Some(v) = self.signals.get(key)? {
                    rows.push((key.clone(), decode_signal(&v)?));
                }
            }
            forgotten += (&self.signals, &self.ids, &self.purchases, &self.arrivals, &self.arrival_of)
                .transaction(|(signals, ids, purchases, arrivals, arrival_of)| {
                    for (key, s) in &rows {
                        signals.remove(key)?;
                        ids.remove(s.id.as_str())?;
                        arrival::forget(arrivals, arrival_of, key)?;
                        if let Some(m) = s.body.merchant() {
                            purchases.remove(key::purchase(m, s.at, s.id.as_str()))?;
                        }
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(rows.len())
                })
                .map_err(tx_error)?;
        }
        self.flush()?;
        Ok(forgotten)
    }

    /// Stores a grant (new or updated) with its MAC. Durable on return.
    pub fn put_grant(&self, grant: &GrantRecord) -> Result<()> {
        self.put_grant_pushing(grant, None)
    }

    /// Stores a new grant with its MAC and, for a push grant, queues its first event in the
    /// same transaction, so the grant and its `grant.created` exist together. Durable on
    /// return.
    pub fn put_grant_pushing(&self, grant: &GrantRecord, push: Option<&PendingPush>) -> Result<()> {
        let mac = self.mac()?;
        let value = serde_json::to_vec(grant).map_err(|e| corrupt("grants", e))?;
        let tag = mac.grant(&grant.id, &value);
        let push = push.map(|p| push::Queued::of(mac, p)).transpose()?;
        if push.is_some() {
            self.room_for_one()?;
        }
        (&self.grants, &self.grant_macs, &self.push_queue)
            .transaction(|(grants, macs, queue)| {
                grants.insert(grant.id.as_str(), value.as_slice())?;
                macs.insert(grant.id.as_str(), &tag[..])?;
                if let Some(queued) = &push {
                    queue.insert(queued.key.as_slice(), queued.bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Adds `audience` to the partners a grant refuses, in one transaction that reads the
    /// grant as stored: a grant revoked meanwhile, or one that fails its MAC, is left as it
    /// is, and two partners cut off at once are both kept. Durable on return.
    pub fn revoke_partner(&self, id: &GrantId, audience: &str) -> Result<PartnerCut> {
        let mac = self.mac()?;
        let cut = (&self.grants, &self.grant_macs)
            .transaction(|(grants, macs)| {
                let Some(value) = grants.get(id.as_str())? else { return Ok(PartnerCut::NoGrant) };
                if mac.check_grant(id, &value, macs.get(id.as_str())?.as_deref()) != Seal::Valid {
                    return Ok(PartnerCut::Damaged);
                }
                let mut record: GrantRecord =
                    serde_json::from_slice(&value).map_err(|e| ConflictableTransactionError::Abort(corrupt("grants", format!("{id}: {e}"))))?;
                if record.revoked_at.is_some() {
                    return Ok(PartnerCut::GrantRevoked);
                }
                if record.partners_revoked.iter().any(|p| p == audience) {
                    return Ok(PartnerCut::Already(record));
                }
                record.partners_revoked.push(audience.to_owned());
                record.partners_revoked.sort();
                let value = serde_json::to_vec(&record).map_err(|e| ConflictableTransactionError::Abort(corrupt("grants", e)))?;
                grants.insert(id.as_str(), value.as_slice())?;
                macs.insert(id.as_str(), &mac.grant(id, &value)[..])?;
                Ok::<_, ConflictableTransactionError<StoreError>>(PartnerCut::Cut(record))
            })
            .map_err(tx_error)?;
        self.flush()?;
        Ok(cut)
    }

    /// One grant, if it is stored and carries its MAC: a grant that fails its MAC is as good
    /// as unknown, so it serves nothing.
    pub fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>> {
        Ok(self.grant_as_found(id)?.filter(|g| g.seal == Seal::Valid).map(|g| g.record))
    }

    /// One grant as it is stored, MAC or not, for the person to see and settle.
    pub fn grant_as_found(&self, id: &GrantId) -> Result<Option<StoredGrant>> {
        let mac = self.mac()?;
        let Some(value) = self.grants.get(id.as_str())? else { return Ok(None) };
        read_grant(mac, id, &value, self.grant_macs.get(id.as_str())?.as_deref()).map(Some)
    }

    /// Every grant as stored, oldest first, each with whether it carries its MAC.
    pub fn grants(&self) -> Result<Vec<StoredGrant>> {
        let mac = self.mac()?;
        let mut all = Vec::new();
        for row in self.grants.iter() {
            let (k, v) = row?;
            let id = grant_key(&k)?;
            all.push(read_grant(mac, &id, &v, self.grant_macs.get(&k)?.as_deref())?);
        }
        all.sort_by_key(|g| g.record.created_at);
        Ok(all)
    }

    /// Counts one more refusal of `grant_id` for `reason` at `at`, with its MAC. Not flushed:
    /// a count is what a flood of requests updates, and losing the last moments of one in a
    /// crash loses no consent.
    pub fn count_refusal(&self, grant_id: &GrantId, marketer: &str, status: u16, reason: &str, at: OffsetDateTime) -> Result<()> {
        let mac = self.mac()?;
        // A poisoned lock guards nothing but the order of counts; carry on.
        let _counting = self.counting.lock().unwrap_or_else(|p| p.into_inner());
        let k = key::refusal_count(grant_id.as_str(), reason);
        let count = match self.refusal_counts.get(&k)? {
            // A damaged count starts again rather than vouching for what it said.
            Some(v) if mac.check_count(&k, &v, self.refusal_macs.get(&k)?.as_deref()) == Seal::Valid => {
                let mut count: RefusalCount = serde_json::from_slice(&v).map_err(|e| corrupt("refusal_counts", e))?;
                count.count += 1;
                count.last = count.last.max(at);
                count
            }
            _ => RefusalCount { grant_id: grant_id.clone(), marketer: marketer.to_owned(), status, reason: reason.to_owned(), count: 1, first: at, last: at },
        };
        let value = serde_json::to_vec(&count).map_err(|e| corrupt("refusal_counts", e))?;
        let tag = mac.count(&k, &value);
        (&self.refusal_counts, &self.refusal_macs)
            .transaction(|(counts, macs)| {
                counts.insert(k.as_slice(), value.as_slice())?;
                macs.insert(k.as_slice(), &tag[..])?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        Ok(())
    }

    /// Every refusal count, each with whether it carries its MAC.
    pub fn refusal_counts(&self) -> Result<Vec<(RefusalCount, Seal)>> {
        let mac = self.mac()?;
        let mut all = Vec::new();
        for row in self.refusal_counts.iter() {
            let (k, v) = row?;
            let count = serde_json::from_slice(&v).map_err(|e| corrupt("refusal_counts", e))?;
            all.push((count, mac.check_count(&k, &v, self.refusal_macs.get(&k)?.as_deref())));
        }
        Ok(all)
    }

    /// Every consent request as stored, in key order (by marketer, then id), each with
    /// whether it carries its MAC.
    pub fn requests(&self) -> Result<Vec<StoredRequest>> {
        let mac = self.mac()?;
        let mut all = Vec::new();
        for row in self.requests.iter() {
            let (k, v) = row?;
            let record: RequestRecord = serde_json::from_slice(&v).map_err(|e| corrupt("requests", e))?;
            // A record moved under another request's key is not that request, whatever its MAC.
            let placed = k.as_ref() == key::request(&record.request.marketer.domain, record.request.id.as_str()).as_slice();
            let seal = if placed { mac.check_request(&k, &v, self.request_macs.get(&k)?.as_deref()) } else { Seal::Invalid };
            all.push(StoredRequest { record, seal });
        }
        Ok(all)
    }

    /// How many consent requests are stored, whatever their state.
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// Stores a consent request (new, or its record updated) with its MAC. Durable on return.
    pub fn put_request(&self, record: &RequestRecord) -> Result<()> {
        self.decide_request(record, None, None)
    }

    /// Stores a request's record and, when given, the grant made of it, in one transaction
    /// with their MACs: an approval leaves either both or neither, so a crash never leaves a
    /// grant whose request still waits to be approved again. A push grant's first event is
    /// queued in the same transaction, so the grant and its `grant.created` exist together.
    /// Durable on return.
    pub fn decide_request(&self, record: &RequestRecord, grant: Option<&GrantRecord>, push: Option<&PendingPush>) -> Result<()> {
        let mac = self.mac()?;
        let k = key::request(&record.request.marketer.domain, record.request.id.as_str());
        let value = serde_json::to_vec(record).map_err(|e| corrupt("requests", e))?;
        let tag = mac.request(&k, &value);
        let grant = match grant {
            Some(g) => {
                let bytes = serde_json::to_vec(g).map_err(|e| corrupt("grants", e))?;
                Some((g.id.as_str(), mac.grant(&g.id, &bytes), bytes))
            }
            None => None,
        };
        let push = push.map(|p| push::Queued::of(mac, p)).transpose()?;
        if push.is_some() {
            self.room_for_one()?;
        }
        (&self.requests, &self.request_macs, &self.grants, &self.grant_macs, &self.push_queue)
            .transaction(|(requests, request_macs, grants, grant_macs, queue)| {
                requests.insert(k.as_slice(), value.as_slice())?;
                request_macs.insert(k.as_slice(), &tag[..])?;
                if let Some((id, tag, bytes)) = &grant {
                    grants.insert(*id, bytes.as_slice())?;
                    grant_macs.insert(*id, &tag[..])?;
                }
                if let Some(queued) = &push {
                    queue.insert(queued.key.as_slice(), queued.bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// How many signals of each kind are stored, for every kind.
    pub fn signal_counts(&self) -> Result<Vec<(Kind, usize)>> {
        Kind::ALL.into_iter().map(|k| Ok((k, self.signals.scan_prefix(key::kind_prefix(k)).keys().try_fold(0, |n, found| found.map(|_| n + 1))?))).collect()
    }
}

/// What [`Store::revoke_partner`] found and did.
#[derive(Debug)]
pub enum PartnerCut {
    /// The partner is cut off from now on; the grant as stored now.
    Cut(GrantRecord),
    /// It was cut off before; nothing changed.
    Already(GrantRecord),
    /// No grant has this id.
    NoGrant,
    /// The grant is revoked: it serves no one already.
    GrantRevoked,
    /// The grant fails its MAC: it serves no one, and `revoke` settles it.
    Damaged,
}

fn grant_key(key: &[u8]) -> Result<GrantId> {
    std::str::from_utf8(key).ok().and_then(GrantId::parse).ok_or_else(|| corrupt("grants", "a key that is not a grant id"))
}

fn read_grant(mac: &StoreMac, id: &GrantId, value: &[u8], tag: Option<&[u8]>) -> Result<StoredGrant> {
    let record: GrantRecord = serde_json::from_slice(value).map_err(|e| corrupt("grants", format!("{id}: {e}")))?;
    // A record moved under another grant's id is not that grant, whatever its MAC.
    let seal = if record.id == *id { mac.check_grant(id, value, tag) } else { Seal::Invalid };
    Ok(StoredGrant { record, seal })
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}
