//! Storage: what the inbox keeps of grants, slices and the deliveries it has taken, behind one
//! trait, [`Store`], so that the engine can change without the inbox's rules changing.
//!
//! The rules every engine keeps, and the table in `tests.rs` holds each engine to:
//!
//! - **Exactly once.** Every write names the delivery it comes from (its `webhook-id`), and
//!   the write and the id's record are one atomic step: a delivery seen before is answered
//!   [`Insert::Duplicate`] and changes nothing, however many times and on however many
//!   connections it arrives. (In SQLite: a `PRIMARY KEY` on the id and one transaction. In
//!   NATS JetStream: the message published with `Nats-Msg-Id` set to the id, and grant
//!   records in a key-value bucket written with `create` or a revision-checked `update`;
//!   with no transaction there, `nats.rs` orders the steps so that any of them left undone
//!   is finished by a retry, and says how.)
//! - **A grant's state decides.** A slice is stored only while its grant is live, checked in
//!   the same atomic step as the insert, so a slice racing a revocation is either stored
//!   before it (and erased with the grant's data) or refused after it.
//! - **Erase by grant.** Ending a grant marks it, and erases its slices unless asked to keep
//!   them (then they are flagged), and records the erasure: when, how many, why. (JetStream:
//!   purge the stream by the subject `optin.slices.<grant>`.)
//! - **Listing** is by grant and by time received, oldest first.
//!
//! Every method is `async` so that an engine on the network fits; the SQLite engine runs its
//! work on tokio's blocking threads.

pub mod nats;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::future::Future;

use time::OffsetDateTime;

use optin_protocol::request::RequestId;
use optin_protocol::scope::GrantId;
use optin_protocol::webhook::WebhookId;

pub use nats::{Nats, NatsTarget};
pub use sqlite::Sqlite;

/// The engine a command stores in or reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The SQLite database in the inbox's home.
    Sqlite,
    /// NATS JetStream, shared by every process given the same target.
    Nats(NatsTarget),
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(text: &str) -> Result<Engine, String> {
        if text == "sqlite" {
            return Ok(Engine::Sqlite);
        }
        NatsTarget::parse(text).map(Engine::Nats).ok_or_else(|| "expected sqlite or nats://HOST:PORT[/NAME], NAME 1-32 of a-z 0-9 _".into())
    }
}

/// Where a grant stands, as the inbox learned it from the grant's own events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantState {
    /// Taken with `grant.created`, no end yet.
    Live,
    /// `grant.revoked` was taken.
    Revoked,
    /// `grant.expired` was taken.
    Expired,
}

impl GrantState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Live => "live",
            GrantState::Revoked => "revoked",
            GrantState::Expired => "expired",
        }
    }

    /// Reads a stored state.
    pub fn parse(text: &str) -> Option<GrantState> {
        match text {
            "live" => Some(GrantState::Live),
            "revoked" => Some(GrantState::Revoked),
            "expired" => Some(GrantState::Expired),
            _ => None,
        }
    }
}

/// How a grant's end is recorded, with what happened to its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// [`GrantState::Revoked`] or [`GrantState::Expired`].
    pub state: GrantState,
    /// The delivery that ended it; the same delivery again is a duplicate, any other of the
    /// grant is answered `410 Gone`.
    pub by: WebhookId,
    /// When the inbox took it.
    pub at: OffsetDateTime,
    /// Slices erased then.
    pub erased: u64,
    /// Slices kept then, flagged, because the inbox runs with `--keep-after-revoke`.
    pub kept: u64,
}

/// A grant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    /// The grant.
    pub grant_id: GrantId,
    /// The request of this inbox it answers.
    pub request_id: RequestId,
    /// Its bundle, the JSON as the agent pushed it: the key pinned for every later event.
    pub bundle: String,
    /// The consent receipt of `grant.created`, a JWS.
    pub receipt: String,
    /// When the inbox took `grant.created`.
    pub created_at: OffsetDateTime,
    /// Its end, once taken.
    pub ended: Option<Ended>,
}

impl GrantRecord {
    /// Where it stands.
    pub fn state(&self) -> GrantState {
        self.ended.as_ref().map_or(GrantState::Live, |e| e.state)
    }
}

/// A `grant.created` that verified, for a request of this inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGrant {
    /// Its delivery, `<grant>-created`.
    pub delivery: WebhookId,
    /// The grant.
    pub grant_id: GrantId,
    /// The request it answers.
    pub request_id: RequestId,
    /// The bundle, as pushed.
    pub bundle: String,
    /// The receipt, as pushed.
    pub receipt: String,
    /// When the inbox took it.
    pub at: OffsetDateTime,
}

/// A `slice.delivered` that verified with the grant's pinned key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSlice {
    /// Its delivery: the slice's `jti`.
    pub delivery: WebhookId,
    /// The grant.
    pub grant_id: GrantId,
    /// The slice, the JWS as pushed: anyone can verify it again with the grant's bundle.
    pub jws: String,
    /// How many items it holds.
    pub items: u64,
    /// When the inbox took it.
    pub at: OffsetDateTime,
}

/// A `grant.revoked` or `grant.expired` that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    /// Its delivery, `<grant>-revoked` or `<grant>-expired`.
    pub delivery: WebhookId,
    /// The grant.
    pub grant_id: GrantId,
    /// [`GrantState::Revoked`] or [`GrantState::Expired`].
    pub state: GrantState,
    /// The receipt of the end, as pushed.
    pub receipt: String,
    /// Whether the grant's slices are kept (flagged) rather than erased.
    pub keep: Keep,
    /// When the inbox took it.
    pub at: OffsetDateTime,
}

/// What happens to a grant's data when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Erased: the default, since the person's consent is what the inbox held them under.
    Erase,
    /// Kept, each slice flagged as kept after the grant's end (`--keep-after-revoke`).
    Flagged,
}

/// A slice as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRecord {
    /// The slice's `jti`, its delivery id.
    pub jti: WebhookId,
    /// The grant.
    pub grant_id: GrantId,
    /// The JWS as pushed.
    pub jws: String,
    /// How many items.
    pub items: u64,
    /// When the inbox took it.
    pub received_at: OffsetDateTime,
    /// Kept after its grant ended (`--keep-after-revoke`).
    pub kept_after_end: bool,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Stored, with the delivery recorded.
    Stored,
    /// This delivery was taken before: nothing changed.
    Duplicate,
    /// The grant has ended (or, for a slice or an end, was never created): nothing changed.
    Refused(Refused),
}

/// Why a write changed nothing though its delivery is new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such grant.
    UnknownGrant,
    /// The grant ended, by this delivery.
    GrantEnded(GrantState, WebhookId),
}

/// Which slices to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceQuery {
    /// Only this grant's.
    pub grant: Option<GrantId>,
    /// Only those taken at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Only slices of live grants (what `export` writes).
    pub live_only: bool,
}

/// The store failed; the push is answered 500 and the agent tries again later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine failed.
    #[error("the store failed: {0}")]
    Engine(String),
    /// What the engine holds cannot be read back.
    #[error("the store holds a damaged record: {0}")]
    Damaged(String),
}

/// An inbox's storage engine. See the module documentation for the rules each keeps.
pub trait Store: Clone + Send + Sync + 'static {
    /// Records a new grant and its `grant.created` delivery, atomically. A grant id already
    /// recorded under another delivery is refused as a duplicate too: the grant exists.
    fn create_grant(&self, grant: NewGrant) -> impl Future<Output = Result<Insert, StoreError>> + Send;

    /// Stores a slice and its delivery, atomically, only while its grant is live.
    fn store_slice(&self, slice: NewSlice) -> impl Future<Output = Result<Insert, StoreError>> + Send;

    /// Ends a grant: marks it, erases or flags its slices, records the erasure, and records
    /// the delivery, atomically. Only a live grant ends.
    fn end_grant(&self, ending: Ending) -> impl Future<Output = Result<Insert, StoreError>> + Send;

    /// One grant.
    fn grant(&self, grant_id: GrantId) -> impl Future<Output = Result<Option<GrantRecord>, StoreError>> + Send;

    /// Every grant, oldest first.
    fn grants(&self) -> impl Future<Output = Result<Vec<GrantRecord>, StoreError>> + Send;

    /// The slices `query` asks for, oldest first.
    fn slices(&self, query: SliceQuery) -> impl Future<Output = Result<Vec<SliceRecord>, StoreError>> + Send;
}
