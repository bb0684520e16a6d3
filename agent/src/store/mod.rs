//! The store: the only module that knows sled.
//!
//! Trees and keys (all integers big-endian, so byte order is numeric order):
//!
//! | tree          | key                                         | value                    |
//! |---------------|---------------------------------------------|--------------------------|
//! | `signals`     | kind tag (1) · time (8) · signal id         | signal JSON              |
//! | `signal_ids`  | signal id                                   | its `signals` key        |
//! | `purchases`   | merchant · 0x00 · time (8) · signal id      | empty                    |
//! | `grants`      | grant id                                    | [`GrantRecord`] JSON     |
//! | `audit`       | sequence number (8)                         | [`AuditRecord`] JSON     |
//! | `meta`        | name                                        | value                    |
//!
//! Time is microseconds since the Unix epoch with the sign bit flipped, so signals of one
//! kind range-scan in time order. `meta/schema` holds [`SCHEMA`]; a store of another
//! version is refused rather than misread. Writes the caller acknowledges are flushed
//! (fsync) before the call returns.

use std::path::Path;
use std::sync::Mutex;

use optin_protocol::scope::GrantId;
use optin_protocol::signal::{Kind, Signal};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;

pub mod key;
pub mod meta;
pub mod record;

pub use meta::Address;
pub use record::{AuditEvent, AuditHead, AuditRecord, GrantRecord};

/// The on-disk format version.
pub const SCHEMA: &str = "1";

/// The `meta` key of the audit chain's head ([`AuditHead`]).
const AUDIT_HEAD: &str = "audit_head";

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
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// The audit log as read at one moment ([`Store::audit_log`]).
#[derive(Clone, Debug)]
pub struct AuditLog {
    /// Every record in order, each with the SHA-256 of its stored bytes.
    pub records: Vec<(AuditRecord, [u8; 32])>,
    /// The head, which commits to the last record.
    pub head: AuditHead,
}

/// The agent's database.
pub struct Store {
    db: sled::Db,
    signals: sled::Tree,
    ids: sled::Tree,
    purchases: sled::Tree,
    grants: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    /// Serializes audit appends: each record names the hash of the one before it.
    audit_head: Mutex<AuditHead>,
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

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new().path(path).open().map_err(|e| match e {
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
        Ok(Store {
            signals: db.open_tree("signals")?,
            ids: db.open_tree("signal_ids")?,
            purchases: db.open_tree("purchases")?,
            grants: db.open_tree("grants")?,
            audit,
            meta,
            audit_head: Mutex::new(head),
            db,
        })
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
        let mut rows = Vec::with_capacity(batch.len());
        for s in batch {
            let value = serde_json::to_vec(s).map_err(|e| corrupt("signals", e))?;
            rows.push((s, key::signal(s.kind(), s.at, s.id.as_str()), value));
        }
        let counts = (&self.signals, &self.ids, &self.purchases)
            .transaction(|(signals, ids, purchases)| {
                let (mut stored, mut dups) = (0, 0);
                for (s, key, value) in &rows {
                    // An id whose signal is gone (an interrupted forget) counts as new.
                    if let Some(old) = ids.get(s.id.as_str())? {
                        if signals.get(&old)?.is_some() {
                            dups += 1;
                            continue;
                        }
                    }
                    signals.insert(key.as_slice(), value.as_slice())?;
                    ids.insert(s.id.as_str(), key.as_slice())?;
                    if let (Kind::Purchase, Some(m)) = (s.kind(), s.body.merchant()) {
                        purchases.insert(key::purchase(m, s.at, s.id.as_str()), &[][..])?;
                    }
                    stored += 1;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>((stored, dups))
            })
            .map_err(tx_error)?;
        self.flush()?;
        Ok(counts)
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

    /// Forgets signals; returns how many. Durable on return.
    pub fn forget(&self, what: &Forget) -> Result<usize> {
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
            forgotten += (&self.signals, &self.ids, &self.purchases)
                .transaction(|(signals, ids, purchases)| {
                    for (key, s) in &rows {
                        signals.remove(key)?;
                        ids.remove(s.id.as_str())?;
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

    /// Stores a grant (new or updated). Durable on return.
    pub fn put_grant(&self, grant: &GrantRecord) -> Result<()> {
        let value = serde_json::to_vec(grant).map_err(|e| corrupt("grants", e))?;
        self.grants.insert(grant.id.as_str(), value)?;
        self.flush()
    }

    /// One grant.
    pub fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>> {
        self.grants.get(id.as_str())?.map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("grants", e))).transpose()
    }

    /// Every grant, oldest first.
    pub fn grants(&self) -> Result<Vec<GrantRecord>> {
        let mut all: Vec<GrantRecord> =
            self.grants.iter().values().map(|v| serde_json::from_slice(&v?).map_err(|e| corrupt("grants", e))).collect::<Result<_>>()?;
        all.sort_by_key(|g| g.created_at);
        Ok(all)
    }

    /// Appends an audit record chained to the previous one.
    pub fn append_audit(&self, at: OffsetDateTime, event: AuditEvent) -> Result<AuditRecord> {
        // A poisoned lock only means another thread panicked mid-append; the head it guards
        // is still the last record written, so carry on with it.
        let mut head = self.audit_head.lock().unwrap_or_else(|p| p.into_inner());
        let seq = head.seq + 1;
        let record = AuditRecord { seq, at, prev: optin_protocol::hex(&head.hash), event };
        let bytes = serde_json::to_vec(&record).map_err(|e| corrupt("audit", e))?;
        let next = AuditHead { seq, hash: optin_protocol::sha256(&bytes) };
        // One transaction, so the head never names a record that is not there, nor lags
        // behind one that is.
        (&self.audit, &self.meta)
            .transaction(|(audit, meta)| {
                audit.insert(&key::audit(seq)[..], bytes.as_slice())?;
                meta.insert(AUDIT_HEAD, next.encode().as_str())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        *head = next;
        Ok(record)
    }

    /// The audit log as one consistent snapshot: appends wait while it is read.
    pub fn audit_log(&self) -> Result<AuditLog> {
        let _appends = self.audit_head.lock().unwrap_or_else(|p| p.into_inner());
        let head = stored_head(&self.meta)?.unwrap_or(AuditHead::EMPTY);
        let records = self.audit().collect::<Result<_>>()?;
        Ok(AuditLog { records, head })
    }

    /// Every audit record in order, each with the SHA-256 of its stored bytes.
    pub fn audit(&self) -> impl Iterator<Item = Result<(AuditRecord, [u8; 32])>> + '_ {
        self.audit.iter().map(|row| {
            let (k, v) = row?;
            let record = serde_json::from_slice(&v).map_err(|e| match key::decode_audit(&k) {
                Some(seq) => corrupt("audit", format!("record {seq}: {e}")),
                None => corrupt("audit", e),
            })?;
            Ok((record, optin_protocol::sha256(&v)))
        })
    }

    /// How many signals of each kind are stored, for every kind.
    pub fn signal_counts(&self) -> Result<Vec<(Kind, usize)>> {
        Kind::ALL.into_iter().map(|k| Ok((k, self.signals.scan_prefix(key::kind_prefix(k)).keys().try_fold(0, |n, found| found.map(|_| n + 1))?))).collect()
    }

    /// Audit records from the newest back (for "what happened lately" without reading the
    /// whole log).
    pub fn audit_newest_first(&self) -> impl Iterator<Item = Result<AuditRecord>> + '_ {
        self.audit.iter().values().rev().map(|v| serde_json::from_slice(&v?).map_err(|e| corrupt("audit", e)))
    }
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}
