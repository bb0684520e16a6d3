//! The owner's commands, as one serializable type.
//!
//! The CLI turns its arguments into a [`Request`]. When an agent runs, the request travels
//! over the admin socket (one JSON line each way) and the agent executes it; when none runs,
//! the CLI opens the store and executes it itself. Both paths call the same
//! [`crate::core::Core::handle`], which is why the running-agent and the offline case behave
//! the same.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::{GrantId, Granularity, Terms};
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::slice::SliceClaims;
use optin_protocol::span::Span;
use serde::{Deserialize, Serialize};

pub use crate::store::Forget;
use time::OffsetDateTime;

/// Longest request line on the admin socket (an ingest batch travels in one).
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// A command of the owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Store an NDJSON batch, all or nothing.
    Ingest {
        /// The batch.
        ndjson: String,
        /// Only count what would be stored.
        #[serde(default)]
        dry_run: bool,
    },
    /// List signals.
    Signals {
        /// Only this kind.
        kind: Option<Kind>,
    },
    /// Forget signals.
    Forget {
        /// Which.
        what: Forget,
    },
    /// Make a grant.
    Grant {
        /// For whom.
        marketer: String,
        /// Which kinds.
        kinds: Kinds,
        /// How much of each signal.
        granularity: Granularity,
        /// Look-back window.
        window: Span,
        /// Lifetime from now.
        expires: Span,
        /// What for.
        purpose: String,
    },
    /// List grants.
    Grants,
    /// Revoke a grant; answered once the agent no longer honours it.
    Revoke {
        /// Which.
        grant_id: GrantId,
    },
    /// What a grant's marketer would receive now.
    Preview {
        /// Which grant.
        grant_id: GrantId,
    },
    /// The audit log.
    Audit,
    /// Stop all sharing, or start it again.
    Sharing {
        /// Whether sharing stops.
        paused: bool,
    },
    /// Whether an agent answers (only meaningful over the socket).
    Status,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// It worked.
    Ok(Response),
    /// It did not; the message says why.
    Err {
        /// What went wrong, for the person.
        error: String,
    },
}

/// What a successful command returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Signals stored.
    Ingested {
        /// New signals.
        stored: usize,
        /// Signals already present.
        duplicates: usize,
    },
    /// Signals listed (JSON objects; carts carry their derived `state`).
    Signals {
        /// The signals.
        signals: Vec<serde_json::Value>,
    },
    /// Signals forgotten.
    Forgot {
        /// How many.
        count: usize,
    },
    /// A grant was made.
    Granted {
        /// Its bundle.
        bundle: Box<GrantBundle>,
    },
    /// The grants.
    Grants {
        /// Each grant with its state.
        grants: Vec<GrantView>,
    },
    /// A grant was revoked.
    Revoked {
        /// Which.
        grant_id: GrantId,
        /// Whether it had been revoked before.
        already: bool,
    },
    /// A preview.
    Preview {
        /// The claims the marketer would receive.
        claims: Box<SliceClaims>,
    },
    /// The audit log.
    Audit {
        /// Records, each with its `hash`.
        records: Vec<serde_json::Value>,
        /// Whether the hash chain verifies, or where it breaks.
        chain: Result<u64, String>,
        /// Requests with unknown or forged tokens since the agent started: counted, not
        /// recorded one by one (see `Core::anonymous_refusals`).
        #[serde(default)]
        anonymous_refusals: u64,
    },
    /// Sharing state.
    Sharing {
        /// Whether sharing is paused.
        paused: bool,
    },
    /// An agent is running.
    Status {
        /// Its version.
        version: String,
    },
}

/// A grant as the owner sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantView {
    /// Its id.
    pub grant_id: GrantId,
    /// For whom.
    pub marketer: String,
    /// What for.
    pub purpose: String,
    /// What it allows.
    pub terms: Terms,
    /// When it was made.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub created_at: OffsetDateTime,
    /// `active`, `revoked` or `expired`.
    pub state: GrantState,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// Whether a grant is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    /// Serving.
    Active,
    /// Revoked by the person.
    Revoked,
    /// Past its expiry.
    Expired,
}
