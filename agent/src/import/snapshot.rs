//! A private copy of a history database, and the only way the importer reads one.
//!
//! The browser's files are never opened by SQLite: a running browser holds locks on them,
//! and SQLite opening a file with a hot journal or WAL would write to it while recovering.
//! So [`Snapshot::take`] copies the database and its journal or WAL into a private
//! temporary directory, opens the copy, and reports every error against the original file.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use tempfile::TempDir;

use super::error::HistoryError;
use crate::browser::Browser;

/// An opened private copy of one history database.
pub(super) struct Snapshot {
    // Fields drop in order: the connection is closed before its directory is removed.
    conn: Connection,
    /// The browser's own file, which every error names.
    original: PathBuf,
    _dir: TempDir,
}

impl Snapshot {
    /// Copies `db` with its sidecars into a new private directory and opens the copy.
    pub(super) fn take(db: &Path) -> Result<Snapshot, HistoryError> {
        let dir = private_dir().map_err(|source| HistoryError::Io { path: std::env::temp_dir(), source })?;
        let copy = copy_database(db, dir.path())?;
        let conn = open_copy(db, &copy)?;
        Ok(Snapshot { conn, original: db.to_owned(), _dir: dir })
    }

    /// Fails with [`HistoryError::UnexpectedSchema`] unless `table` has all of `columns`.
    pub(super) fn require_columns(&self, browser: Browser, table: &str, columns: &[&str]) -> Result<(), HistoryError> {
        let sqlite = |e| sqlite_error(&self.original, e);
        let mut stmt = self.conn.prepare("SELECT name FROM pragma_table_info(?1)").map_err(sqlite)?;
        let present = stmt.query_map([table], |row| row.get::<_, String>(0)).map_err(sqlite)?.collect::<Result<HashSet<String>, _>>().map_err(sqlite)?;
        let schema = |detail: String| HistoryError::UnexpectedSchema { path: self.original.clone(), browser, detail };
        if present.is_empty() {
            return Err(schema(format!("table {table} is missing")));
        }
        let missing: Vec<&str> = columns.iter().copied().filter(|c| !present.contains(*c)).collect();
        if !missing.is_empty() {
            return Err(schema(format!("table {table} lacks column(s) {}", missing.join(", "))));
        }
        Ok(())
    }

    /// Runs `sql` with `since` as its one parameter and keeps what `read_row` makes of
    /// each row.
    ///
    /// SQLite does not enforce column types, so `read_row` reads the values as they are
    /// stored (`row::search`, [`integer`]) and makes a skipped row of one with an
    /// unexpected type, rather than failing the whole import; only an error of SQLite
    /// itself (a damaged page) ends the read.
    pub(super) fn rows<T>(&self, sql: &str, since: i64, mut read_row: impl FnMut(&Row<'_>) -> rusqlite::Result<Option<T>>) -> Result<Vec<T>, HistoryError> {
        let sqlite = |e| sqlite_error(&self.original, e);
        let mut stmt = self.conn.prepare(sql).map_err(sqlite)?;
        let mut rows = stmt.query([since]).map_err(sqlite)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite)? {
            if let Some(v) = read_row(row).map_err(sqlite)? {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// The value if it is stored as an integer.
pub(super) fn integer(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

/// Maps an SQLite error on the copy to an error about the original file.
fn sqlite_error(db: &Path, e: rusqlite::Error) -> HistoryError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) {
            return HistoryError::Locked { path: db.to_owned() };
        }
    }
    HistoryError::Corrupt { path: db.to_owned(), detail: e.to_string() }
}

/// Companion files that hold committed or half-written data the main file lacks: the
/// rollback journal (Chromium) and the write-ahead log (Firefox). Both are needed for a
/// consistent copy of a database in use. The WAL index (`-shm`) is not copied: SQLite
/// rebuilds it from the WAL, and a copy taken mid-write could be inconsistent.
const SIDECARS: [&str; 2] = ["-journal", "-wal"];

/// Copies `db` and its sidecars into `dir`; returns the copy's path.
///
/// A browser may write while we copy. The copy is retried a few times until the files'
/// sizes and modification times stay the same across it; after that the last copy is used
/// and SQLite's own checks catch what is torn.
fn copy_database(db: &Path, dir: &Path) -> Result<PathBuf, HistoryError> {
    let name = db.file_name().unwrap_or(db.as_os_str());
    let copy = dir.join(name);
    let files = |base: &Path| -> Vec<PathBuf> {
        let mut v = vec![base.to_owned()];
        for s in SIDECARS {
            let mut p = base.as_os_str().to_owned();
            p.push(s);
            v.push(PathBuf::from(p));
        }
        v
    };
    let sources = files(db);
    let targets = files(&copy);
    for _attempt in 0..3 {
        let before = stamps(&sources);
        for (src, dst) in sources.iter().zip(&targets) {
            match fs::copy(src, dst) {
                Ok(_) => {}
                // A sidecar that does not exist (or vanished since) is simply not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound && src != db => {
                    let _ = fs::remove_file(dst);
                }
                Err(source) => return Err(HistoryError::Io { path: src.clone(), source }),
            }
        }
        if stamps(&sources) == before {
            break;
        }
    }
    Ok(copy)
}

type Stamp = Option<(u64, Option<std::time::SystemTime>)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| fs::metadata(f).ok().map(|m| (m.len(), m.modified().ok()))).collect()
}

/// Opens the private copy, reporting errors against the original `db`.
fn open_copy(db: &Path, copy: &Path) -> Result<Connection, HistoryError> {
    let len = fs::metadata(copy).map_err(|source| HistoryError::Io { path: db.to_owned(), source })?.len();
    // SQLite treats an empty file as an empty database, which would surface as a confusing
    // "table missing" error.
    if len == 0 {
        return Err(HistoryError::Corrupt { path: db.to_owned(), detail: "the file is empty".into() });
    }
    // The copy is opened for writing although nothing is written to it: a browser killed
    // mid-transaction leaves a hot journal, and SQLite must roll it back into the copy before
    // the copy is consistent; a read-only connection fails there with "attempt to write a
    // readonly database". (WAL recovery likewise rebuilds the -shm index next to the copy.)
    // It is our private copy, so this never touches the browser's files, and `query_only`
    // refuses any other write.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(copy, flags).map_err(|e| sqlite_error(db, e))?;
    // Opening is lazy; reading the schema makes a non-database fail here, with a clear
    // error, rather than in the middle of a query. This first read also does the recovery.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(|e| sqlite_error(db, e))?;
    conn.execute_batch("PRAGMA query_only = ON").map_err(|e| sqlite_error(db, e))?;
    Ok(conn)
}

/// A new temporary directory only this user may enter, removed with everything in it when
/// dropped.
///
/// The copy holds the person's browsing history, so it gets mode 0700 as the profile it came
/// from does: `tempfile` would otherwise create it with the umask's default, typically
/// readable by every user of the machine. `tempfile` picks a random name and never reuses
/// an existing directory, so a directory planted by someone else is never used.
pub(super) fn private_dir() -> io::Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("optin-history-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o700));
    }
    builder.tempdir()
}
