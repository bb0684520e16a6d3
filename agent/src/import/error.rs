//! Why a history could not be read.
//!
//! The error sits in a module of its own because every part of the importer reports it:
//! [`read_searches`](super::read_searches) re-exports it, and the parts below it use it
//! without depending on the module that calls them.

use std::io;
use std::path::PathBuf;

use crate::browser::Browser;

/// Why a history could not be read. Each variant names the file or directory at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error("no browser profile at {}", path.display())]
    ProfileNotFound { path: PathBuf },
    #[error("cannot pick a firefox profile from {}: {problem}", path.display())]
    FirefoxProfiles { path: PathBuf, problem: String },
    #[error("no history database at {}", path.display())]
    DatabaseNotFound { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a readable history database: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{} does not look like a {browser} history database: {detail}", path.display())]
    UnexpectedSchema { path: PathBuf, browser: Browser, detail: String },
    #[error("{} is locked by another program; close the browser and try again", path.display())]
    Locked { path: PathBuf },
}
