//! The agent's operations on its store, shared by every way in: the HTTPS API (marketers
//! and the owner's feeders), the admin socket (the CLI and the native host while an agent
//! runs) and the offline session. Whatever the way in, the same function runs.
//!
//! - [`owner`]: the person's commands ([`Core::handle`] runs a [`command::Request`]);
//! - [`requests`]: consent requests kept, shown, approved into grants or denied;
//! - [`ingest`]: storing signals, the owner's batches whole and the extension's one by one;
//! - [`marketer`]: admitting a token and cutting a signed slice ([`Core::slice`]);
//! - [`push`]: the events of push grants, queued, scheduled and settled (the sender that
//!   posts them is [`crate::push`]);
//! - [`receipt`]: a grant's consent receipt as it stands, given, withdrawn or expired;
//! - [`never_share`]: the person's never-share list of sensitive topics, which every scope
//!   applies, and the topics signals are marked with at ingest;
//! - [`slicer`], [`gate`], [`audit`], `repeat` (a slice served again while unchanged): what
//!   those use.
//!
//! Work that blocks a thread (parsing a batch, an fsync, cutting and signing a page) is
//! moved off the async workers here, in one place ([`blocking`]), not by each caller.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use optin_protocol::scope::GrantId;
use optin_protocol::signal::BatchError;
use optin_protocol::span::Span;
use time::OffsetDateTime;

use crate::keys::{GrantKeys, Keys};
use crate::store::{Store, StoreError};
use command::ErrorKind;
use gate::Gates;

pub mod aggregate;
pub mod audit;
pub mod command;
pub mod gate;
pub mod ingest;
pub mod marketer;
pub mod never_share;
pub mod owner;
pub mod push;
mod receipt;
mod repeat;
pub mod requests;
pub mod slicer;

#[cfg(test)]
mod tests;

pub use marketer::{GrantInfo, Refusal, Served, SliceRequest};

/// Where `optin serve` listens unless told otherwise; also the address bundles name when
/// they are made before any agent ran.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7676";

/// How long a cart waits for a purchase before it counts as abandoned, unless told otherwise.
pub const DEFAULT_ABANDON_AFTER: &str = "24h";

/// Settings of the operations.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// How long a cart waits for a purchase before it counts as abandoned.
    pub abandon_after: Span,
    /// The URL marketers reach the agent at, for bundles.
    pub agent_url: String,
    /// Hex SHA-256 of the TLS certificate, for bundles.
    pub cert_sha256: String,
    /// How much of the audit log is kept ([`audit`]).
    pub audit_keep: crate::store::AuditKeep,
}

/// The store, the keys and the revocation gates.
pub struct Core {
    store: Store,
    keys: Keys,
    gates: Gates,
    config: CoreConfig,
    /// Derived grant keys, kept because deriving them (an Ed25519 key from its seed among
    /// them) is a fifth of a small slice's cost. Bounded by the number of grants: only grants
    /// found in the store are derived.
    grant_keys: Mutex<HashMap<GrantId, Arc<GrantKeys>>>,
    anonymous_refusals: AtomicU64,
    /// Per grant, how many more of its refusals get a record of their own.
    refusal_budgets: Mutex<HashMap<GrantId, marketer::RecordBudget>>,
    /// Serializes adding and deciding consent requests, so that a request is approved once
    /// and the bound on waiting requests holds.
    requests: Mutex<()>,
    /// What each grant has served, as of an audit record: `optin grants` reads only the
    /// records after it (see `owner::usage`).
    usage: Mutex<Option<owner::Usage>>,
    /// The slices last signed, served again while still current.
    repeats: repeat::Repeats,
    /// Taken in turn by slices waiting for their audit records to be on disk: the holder
    /// flushes every record appended by then ([`Core::slice`]).
    write_turn: tokio::sync::Mutex<()>,
}

/// A failed owner command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// No grant has this id.
    #[error("no grant {0}")]
    NoGrant(GrantId),
    /// No stored signal has this id.
    #[error("no signal with id {0:?}")]
    NoSignal(String),
    /// No stored consent request has this name.
    #[error("no request {0} (`optin requests` lists them)")]
    NoRequest(String),
    /// A batch was refused; nothing was stored.
    #[error("batch refused, nothing stored: {0}")]
    Batch(BatchError),
    /// An argument is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not fail did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// What kind of failure this is: the one place that decides whether a feeder should
    /// drop its input (it is wrong) or keep it and retry (optin cannot take it now).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoreError::NoGrant(_) | CoreError::NoSignal(_) | CoreError::NoRequest(_) => ErrorKind::NotFound,
            CoreError::Batch(_) | CoreError::Invalid(_) => ErrorKind::Invalid,
            CoreError::Store(StoreError::Locked(_) | StoreError::Sled(_) | StoreError::QueueFull(_)) => ErrorKind::Unavailable,
            CoreError::Store(_) | CoreError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<BatchError> for CoreError {
    // Not `#[from]`: that would also make the batch error the source, and `{:#}` would
    // print its message twice.
    fn from(e: BatchError) -> CoreError {
        CoreError::Batch(e)
    }
}

/// The current time, to the second: what grants and audit records keep.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

impl Core {
    /// Operations over an open store.
    pub fn new(store: Store, keys: Keys, config: CoreConfig) -> Core {
        // Grants and the audit are MACed under a key derived from the identity key.
        let store = store.keyed(crate::store::StoreMac::new(keys.store_mac()));
        Core {
            store,
            keys,
            gates: Gates::default(),
            config,
            grant_keys: Default::default(),
            anonymous_refusals: Default::default(),
            refusal_budgets: Default::default(),
            requests: Mutex::new(()),
            usage: Mutex::new(None),
            repeats: Default::default(),
            write_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Flushes the store (shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }
}

/// Runs blocking work in place, letting a multi-threaded runtime hand this worker's other
/// tasks to another thread first (a current-thread runtime, or no runtime, just runs it).
/// Borrowing, unlike `spawn_blocking`, so no caller has to clone its input to call in. The
/// core uses it for its own work; the ways in use it for theirs (opening a store, parsing
/// a request line), so no async worker waits on a disk or a large parse.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
