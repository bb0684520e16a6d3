//! The embedded engine: one SQLite database in the inbox's home. The only module that
//! imports rusqlite.
//!
//! Settings, and why:
//! - `journal_mode=WAL`: the CLI's listings read while `serve` writes, without waiting.
//! - `synchronous=FULL`: a push is answered 2xx only after its transaction commits, and the
//!   agent moves its watermark on that answer and never sends the slice again. Under WAL,
//!   `NORMAL` may lose the last commits on a power cut, which would lose slices the inbox
//!   acknowledged; `FULL` syncs the log at each commit, so an acknowledged push is on disk.
//! - `busy_timeout`: a CLI reading and `serve` writing wait for each other briefly instead
//!   of failing.
//! - One connection behind a mutex: SQLite writes one transaction at a time anyway, and a
//!   single writer makes "check the grant, then insert" one step with no lock upgrades.
//!
//! Schema (version 1, in `meta`): `deliveries(webhook_id PRIMARY KEY, …)` is the
//! exactly-once record; `grants`, `slices` (the JWS as pushed) and `erasures`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::OffsetDateTime;

use optin_protocol::request::RequestId;
use optin_protocol::scope::GrantId;
use optin_protocol::webhook::WebhookId;

use super::{Ended, Ending, GrantRecord, GrantState, Insert, Keep, NewGrant, NewSlice, Refused, SliceQuery, SliceRecord, Store, StoreError};

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    received_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    bundle TEXT NOT NULL,
    receipt TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'revoked', 'expired')),
    ended_by TEXT,
    ended_at INTEGER,
    end_receipt TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS slices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    jti TEXT NOT NULL UNIQUE,
    grant_id TEXT NOT NULL REFERENCES grants (grant_id),
    jws TEXT NOT NULL,
    items INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    kept_after_end INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS slices_by_grant ON slices (grant_id, seq);
CREATE TABLE IF NOT EXISTS erasures (
    grant_id TEXT NOT NULL REFERENCES grants (grant_id),
    at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    erased INTEGER NOT NULL,
    kept INTEGER NOT NULL
) STRICT;
";

/// The SQLite engine. Cloning shares the connection.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

impl Sqlite {
    /// Opens (or makes) the database at `path`.
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::Engine(format!("cannot open {}: {e}", path.display())))?;
        Sqlite::setup(conn).map_err(|e| StoreError::Engine(format!("{}: {e}", path.display())))
    }

    /// A database in memory, for tests.
    #[cfg(test)]
    pub fn in_memory() -> Sqlite {
        Sqlite::setup(Connection::open_in_memory().expect("an in-memory database")).expect("the schema")
    }

    fn setup(conn: Connection) -> Result<Sqlite, StoreError> {
        let engine = |e: rusqlite::Error| StoreError::Engine(e.to_string());
        conn.busy_timeout(Duration::from_secs(5)).map_err(engine)?;
        // journal_mode answers with the mode it settled on, so it is read, not executed.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(engine)?;
        if mode != "wal" && mode != "memory" {
            return Err(StoreError::Engine(format!("the database would not use WAL (journal mode {mode})")));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;").map_err(engine)?;
        conn.execute_batch(SCHEMA).map_err(engine)?;
        let version: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional().map_err(engine)?;
        match version.as_deref() {
            None => {
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION]).map_err(engine)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => return Err(StoreError::Engine(format!("schema version {other} is not one this optin-inbox reads ({SCHEMA_VERSION})"))),
        }
        Ok(Sqlite { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `work` on the connection, on a blocking thread: SQLite's fsync would otherwise
    /// stall the async workers that answer other connections.
    async fn with<T: Send + 'static>(&self, work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || work(&mut lock(&conn))).await.map_err(|e| StoreError::Engine(format!("the store's worker stopped: {e}")))?
    }
}

/// The connection. A panic while it was held leaves no transaction open (rusqlite rolls back
/// a transaction it drops), so a poisoned lock still guards a usable connection.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn engine(e: rusqlite::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// Records the delivery; `false` when it was recorded before.
fn record_delivery(tx: &rusqlite::Transaction<'_>, id: &WebhookId, grant: &GrantId, kind: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
    let added = tx
        .execute(
            "INSERT INTO deliveries (webhook_id, grant_id, type, received_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (webhook_id) DO NOTHING",
            params![id.as_str(), grant.as_str(), kind, at.unix_timestamp()],
        )
        .map_err(engine)?;
    Ok(added == 1)
}

fn grant_state(tx: &rusqlite::Transaction<'_>, grant: &GrantId) -> Result<Option<(GrantState, Option<String>)>, StoreError> {
    let row: Option<(String, Option<String>)> =
        tx.query_row("SELECT state, ended_by FROM grants WHERE grant_id = ?1", [grant.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(engine)?;
    row.map(|(state, by)| GrantState::parse(&state).map(|s| (s, by)).ok_or_else(|| StoreError::Damaged(format!("grant {grant} has state `{state}`"))))
        .transpose()
}

fn ended_refusal(grant: &GrantId, state: GrantState, by: Option<String>) -> Result<Insert, StoreError> {
    let by = by.as_deref().and_then(WebhookId::parse).ok_or_else(|| StoreError::Damaged(format!("grant {grant} ended by no delivery")))?;
    Ok(Insert::Refused(Refused::GrantEnded(state, by)))
}

fn time(seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| StoreError::Damaged(format!("a time of {seconds} s")))
}

const GRANT_COLUMNS: &str = "g.grant_id, g.request_id, g.bundle, g.receipt, g.created_at, g.state, g.ended_by, g.ended_at, \
     (SELECT COALESCE(SUM(erased), 0) FROM erasures e WHERE e.grant_id = g.grant_id), \
     (SELECT COALESCE(SUM(kept), 0) FROM erasures e WHERE e.grant_id = g.grant_id)";

type GrantRow = (String, String, String, String, i64, String, Option<String>, Option<i64>, i64, i64);

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn grant_record(row: GrantRow) -> Result<GrantRecord, StoreError> {
    let (grant_id, request_id, bundle, receipt, created_at, state, ended_by, ended_at, erased, kept) = row;
    let damaged = |what: &str| StoreError::Damaged(format!("grant {}: {what}", optin_protocol::request::shown(&grant_id)));
    let state = GrantState::parse(&state).ok_or_else(|| damaged("unknown state"))?;
    let ended = match state {
        GrantState::Live => None,
        _ => Some(Ended {
            state,
            by: ended_by.as_deref().and_then(WebhookId::parse).ok_or_else(|| damaged("ended by no delivery"))?,
            at: time(ended_at.ok_or_else(|| damaged("ended at no time"))?)?,
            erased: u64::try_from(erased).unwrap_or(0),
            kept: u64::try_from(kept).unwrap_or(0),
        }),
    };
    Ok(GrantRecord {
        grant_id: GrantId::parse(&grant_id).ok_or_else(|| damaged("not a grant id"))?,
        request_id: RequestId::parse(&request_id).ok_or_else(|| damaged("not a request id"))?,
        bundle,
        receipt,
        created_at: time(created_at)?,
        ended,
    })
}

impl Store for Sqlite {
    async fn create_grant(&self, grant: NewGrant) -> Result<Insert, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(engine)?;
            if !record_delivery(&tx, &grant.delivery, &grant.grant_id, "grant.created", grant.at)? {
                return Ok(Insert::Duplicate);
            }
            let added = tx
                .execute(
                    "INSERT INTO grants (grant_id, request_id, bundle, receipt, created_at, state) VALUES (?1, ?2, ?3, ?4, ?5, 'live') \
                     ON CONFLICT (grant_id) DO NOTHING",
                    params![grant.grant_id.as_str(), grant.request_id.as_str(), grant.bundle, grant.receipt, grant.at.unix_timestamp()],
                )
                .map_err(engine)?;
            if added == 0 {
                // Dropping the transaction rolls back the delivery recorded above.
                return Ok(Insert::Duplicate);
            }
            tx.commit().map_err(engine)?;
            Ok(Insert::Stored)
        })
        .await
    }

    async fn store_slice(&self, slice: NewSlice) -> Result<Insert, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(engine)?;
            match grant_state(&tx, &slice.grant_id)? {
                None => return Ok(Insert::Refused(Refused::UnknownGrant)),
                Some((GrantState::Live, _)) => {}
                Some((state, by)) => return ended_refusal(&slice.grant_id, state, by),
            }
            if !record_delivery(&tx, &slice.delivery, &slice.grant_id, "slice.delivered", slice.at)? {
                return Ok(Insert::Duplicate);
            }
            let items = i64::try_from(slice.items).map_err(|_| StoreError::Engine("too many items".into()))?;
            tx.execute(
                "INSERT INTO slices (jti, grant_id, jws, items, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![slice.delivery.as_str(), slice.grant_id.as_str(), slice.jws, items, slice.at.unix_timestamp()],
            )
            .map_err(engine)?;
            tx.commit().map_err(engine)?;
            Ok(Insert::Stored)
        })
        .await
    }

    async fn end_grant(&self, ending: Ending) -> Result<Insert, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(engine)?;
            // A replay of the end itself is a duplicate, not a refusal: checked first.
            let seen: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM deliveries WHERE webhook_id = ?1)", [ending.delivery.as_str()], |r| r.get(0)).map_err(engine)?;
            if seen {
                return Ok(Insert::Duplicate);
            }
            match grant_state(&tx, &ending.grant_id)? {
                None => return Ok(Insert::Refused(Refused::UnknownGrant)),
                Some((GrantState::Live, _)) => {}
                Some((state, by)) => return ended_refusal(&ending.grant_id, state, by),
            }
            let kind = match ending.state {
                GrantState::Revoked => "grant.revoked",
                GrantState::Expired => "grant.expired",
                GrantState::Live => return Err(StoreError::Engine("a grant cannot end as live".into())),
            };
            record_delivery(&tx, &ending.delivery, &ending.grant_id, kind, ending.at)?;
            let at = ending.at.unix_timestamp();
            let id = ending.grant_id.as_str();
            tx.execute(
                "UPDATE grants SET state = ?2, ended_by = ?3, ended_at = ?4, end_receipt = ?5 WHERE grant_id = ?1",
                params![id, ending.state.as_str(), ending.delivery.as_str(), at, ending.receipt],
            )
            .map_err(engine)?;
            let (erased, kept) = match ending.keep {
                Keep::Erase => (tx.execute("DELETE FROM slices WHERE grant_id = ?1", [id]).map_err(engine)?, 0),
                Keep::Flagged => (0, tx.execute("UPDATE slices SET kept_after_end = 1 WHERE grant_id = ?1", [id]).map_err(engine)?),
            };
            tx.execute("INSERT INTO erasures (grant_id, at, reason, erased, kept) VALUES (?1, ?2, ?3, ?4, ?5)", params![id, at, kind, erased, kept])
                .map_err(engine)?;
            tx.commit().map_err(engine)?;
            Ok(Insert::Stored)
        })
        .await
    }

    async fn grant(&self, grant_id: GrantId) -> Result<Option<GrantRecord>, StoreError> {
        self.with(move |conn| {
            let row = conn
                .query_row(&format!("SELECT {GRANT_COLUMNS} FROM grants g WHERE g.grant_id = ?1"), [grant_id.as_str()], grant_row)
                .optional()
                .map_err(engine)?;
            row.map(grant_record).transpose()
        })
        .await
    }

    async fn grants(&self) -> Result<Vec<GrantRecord>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn.prepare(&format!("SELECT {GRANT_COLUMNS} FROM grants g ORDER BY g.created_at, g.grant_id")).map_err(engine)?;
            let rows = statement.query_map([], grant_row).map_err(engine)?;
            rows.map(|row| row.map_err(engine).and_then(grant_record)).collect()
        })
        .await
    }

    async fn slices(&self, query: SliceQuery) -> Result<Vec<SliceRecord>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn
                .prepare(
                    "SELECT s.jti, s.grant_id, s.jws, s.items, s.received_at, s.kept_after_end FROM slices s JOIN grants g ON g.grant_id = s.grant_id \
                     WHERE (?1 IS NULL OR s.grant_id = ?1) AND (?2 IS NULL OR s.received_at >= ?2) AND (?3 = 0 OR g.state = 'live') ORDER BY s.seq",
                )
                .map_err(engine)?;
            let grant = query.grant.as_ref().map(|g| g.as_str().to_owned());
            let since = query.since.map(|t| t.unix_timestamp());
            let rows = statement
                .query_map(params![grant, since, query.live_only], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?, r.get::<_, bool>(5)?))
                })
                .map_err(engine)?;
            rows.map(|row| {
                let (jti, grant_id, jws, items, received_at, kept_after_end) = row.map_err(engine)?;
                let damaged = |what: &str| StoreError::Damaged(format!("slice {}: {what}", optin_protocol::request::shown(&jti)));
                Ok(SliceRecord {
                    jti: WebhookId::parse(&jti).ok_or_else(|| damaged("not a slice id"))?,
                    grant_id: GrantId::parse(&grant_id).ok_or_else(|| damaged("not a grant id"))?,
                    jws,
                    items: u64::try_from(items).map_err(|_| damaged("a negative item count"))?,
                    received_at: time(received_at)?,
                    kept_after_end,
                })
            })
            .collect()
        })
        .await
    }
}
