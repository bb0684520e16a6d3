//! The audit log: who received what, when, and every refusal.
//!
//! Records are append-only and hash-chained: each names the SHA-256 of the stored bytes of
//! the one before it (`prev`), the first names 64 zeros. Changing, removing or reordering a
//! record breaks the chain at that point, which [`verify`] finds. A served slice's record
//! carries the SHA-256 of the exact JWS sent, so the person can match a marketer's copy.

use optin_protocol::scope::GrantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One audit record (a versioned storage record; the JSON is also what `optin audit --json`
/// shows, plus its `hash`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// When it happened.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub at: OffsetDateTime,
    /// Hex SHA-256 of the previous record's stored bytes.
    pub prev: String,
    /// What happened.
    pub event: AuditEvent,
}

/// What an audit record records.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AuditEvent {
    /// A slice was served.
    Served {
        /// The grant.
        grant_id: GrantId,
        /// The grant's marketer.
        marketer: String,
        /// The partner the token was narrowed to, when not the marketer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
        /// The request's query string.
        asked: String,
        /// How many items it held.
        items: usize,
        /// Its `jti`.
        slice_id: String,
        /// Hex SHA-256 of the JWS as sent.
        jws_sha256: String,
    },
    /// A request was refused.
    Refused {
        /// The grant the token named, when it named a known one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_id: Option<GrantId>,
        /// The grant's marketer, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marketer: Option<String>,
        /// The request path and query.
        asked: String,
        /// The HTTP status answered.
        status: u16,
        /// Why.
        reason: String,
    },
    /// A grant was made.
    Granted {
        /// The grant.
        grant_id: GrantId,
        /// For whom.
        marketer: String,
    },
    /// A grant was revoked.
    Revoked {
        /// The grant.
        grant_id: GrantId,
        /// Whose.
        marketer: String,
    },
    /// Signals were forgotten.
    Forgot {
        /// How many.
        count: usize,
        /// Which selection (`id`, `kind=…`, `before=…`, `all`).
        what: String,
    },
    /// Sharing was paused or resumed.
    Sharing {
        /// Whether sharing is now paused.
        paused: bool,
    },
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainError {
    /// The first record that does not follow.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// Checks a sequence of (record, hash of its stored bytes); returns how many records.
pub fn verify(records: impl IntoIterator<Item = (AuditRecord, [u8; 32])>) -> Result<u64, ChainError> {
    let mut expected_prev = [0u8; 32];
    let mut count = 0;
    for (record, hash) in records {
        count += 1;
        if record.seq != count {
            return Err(ChainError { seq: record.seq, reason: format!("expected sequence number {count}") });
        }
        if record.prev != optin_protocol::hex(&expected_prev) {
            return Err(ChainError { seq: record.seq, reason: "prev does not match the previous record's hash".into() });
        }
        expected_prev = hash;
    }
    Ok(count)
}
