//! The owner's commands, as one serializable type.
//!
//! The CLI turns its arguments into a [`Request`]. When an agent runs, the request travels
//! over the admin socket (one JSON line each way) and the agent executes it; when none runs,
//! the CLI opens the store and executes it itself. Both paths call the same
//! [`crate::core::Core::handle`], which is why the running-agent and the offline case behave
//! the same.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::{GrantId, Granularity, Terms};
use optin_protocol::signal::Signal;
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::slice::{CartState, SliceClaims};
use optin_protocol::span::Span;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::requests::{ApprovalChoices, RequestName, RequestState, RequestView, ShareSummary, WouldShare};
pub use crate::store::{AuditRecord, Forget, PushTo};
use time::OffsetDateTime;

/// Longest request line on the admin socket (an ingest batch travels in one).
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// Audit records in one page when a request does not say.
pub const AUDIT_PAGE: usize = 1000;

/// Most audit records in one page: with each record bounded (a request line is kept to 512
/// characters), a page stays far below [`MAX_LINE`].
pub const AUDIT_PAGE_MAX: usize = 10_000;

/// What a grant the owner makes may narrow besides kinds, granularity and window: each
/// `None` is any (every field, no rate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFilters {
    /// Only signals within these category paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Only carts and purchases at these merchants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// At `raw`, only these fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// At most this many slices per hour or day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<optin_protocol::rate::Rate>,
}

/// A command of the owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Store an NDJSON batch, all or nothing: the owner's own file or feeder, which names
    /// the line at fault so the person can fix it and feed the same batch again.
    Ingest {
        /// The batch.
        ndjson: String,
        /// Only count what would be stored.
        #[serde(default)]
        dry_run: bool,
    },
    /// Store what the browser extension captured from pages, signal by signal: a bad
    /// signal is rejected and the rest stored, since nobody can fix a page's data and
    /// sending the batch again would fail again; and new signals count against the
    /// extension's daily quota ([`crate::core::ingest::EXTENSION_SIGNALS_PER_DAY`]), so a
    /// page cannot flood the store. Only the native host sends this; the owner's `ingest`
    /// is neither split nor limited.
    ExtensionSignals {
        /// Each signal's JSON text as the extension sent it, one signal each.
        signals: Vec<String>,
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
        /// Where its events are pushed, for a grant whose marketer has an inbox; none serves
        /// slices to the marketer's pulls only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push: Option<PushTo>,
        /// At granularity `aggregate`, the noise the person chose; the rest is the default.
        #[serde(default, skip_serializing_if = "super::aggregate::NoiseChoice::is_empty")]
        noise: super::aggregate::NoiseChoice,
        /// Its filters, fields and rate, checked as an approval's choices are.
        #[serde(default)]
        filters: GrantFilters,
    },
    /// List grants.
    Grants,
    /// Revoke a grant; answered once the agent no longer honours it.
    Revoke {
        /// Which.
        grant_id: GrantId,
    },
    /// Cut one partner of a grant off: every token of the grant whose `aud` caveat names
    /// it is refused from then on; the grant serves its marketer and other partners still.
    RevokePartner {
        /// Which grant.
        grant_id: GrantId,
        /// The partner, as an `aud` caveat names it (a lowercase host name).
        audience: String,
    },
    /// A page of what a grant's marketer would receive now: the pages follow one another
    /// by cursor, as the marketer's do.
    Preview {
        /// Which grant.
        grant_id: GrantId,
        /// Items per page, as a marketer's `limit` (the default page size when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// The previous page's `next_cursor`; the first page when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// A grant's consent receipt as it stands: given, withdrawn or expired.
    Receipt {
        /// Which grant.
        grant_id: GrantId,
    },
    /// A page of the audit log; a long log is read page by page, each naming the next.
    Audit {
        /// Records after this sequence number; 0 for the first page.
        #[serde(default)]
        since_seq: u64,
        /// At most this many records: [`AUDIT_PAGE`] when absent, at most [`AUDIT_PAGE_MAX`].
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Stop all sharing, or start it again.
    Sharing {
        /// Whether sharing stops.
        paused: bool,
    },
    /// The state of optin: sharing, counts, grants, recent slices.
    Status,
    /// A grant's bundle again (it was lost, or goes to a new machine of the marketer's).
    Bundle {
        /// Which grant.
        grant_id: GrantId,
    },
    /// Keep a signed consent request, pending, once it verifies: handed over as a file
    /// (`fetched_from` absent) or fetched from the marketer's well-known URL.
    AddConsentRequest {
        /// The compact JWS, as received.
        jws: String,
        /// The domain whose `https://DOMAIN/.well-known/optin-request.json` it came from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fetched_from: Option<String>,
    },
    /// List the consent requests.
    ConsentRequests,
    /// One consent request, with what its terms would share now.
    ConsentRequest {
        /// Which.
        name: RequestName,
    },
    /// Approve a consent request, its terms narrowed by the choices: a grant bound to it.
    Approve {
        /// Which.
        name: RequestName,
        /// The person's narrowing; none keeps the request's terms.
        #[serde(default)]
        choices: ApprovalChoices,
    },
    /// Deny a consent request.
    Deny {
        /// Which.
        name: RequestName,
    },
    /// Withhold a sensitive topic from every grant again, or add a category path of the
    /// person's own to the never-share list.
    Exclude {
        /// A topic id or a category path, as typed.
        entry: String,
    },
    /// Let a sensitive topic be shared, or take a path of the person's own off the list.
    Include {
        /// A topic id or a category path, as typed.
        entry: String,
    },
    /// The never-share list.
    NeverShare,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// It worked.
    Ok(Response),
    /// It did not.
    Err {
        /// What kind of failure: whether sending the same request again can help.
        kind: ErrorKind,
        /// What went wrong, for the person.
        message: String,
    },
}

/// What kind of failure a command met, decided once ([`crate::core::CoreError::kind`]) and
/// carried over the admin socket, so that every feeder treats it the same: `invalid` and
/// `not_found` mean the request is wrong and sending it again will not help; `unavailable`
/// and `internal` mean it may work later, so a feeder keeps its data and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong (a bad signal, argument or state).
    Invalid,
    /// It names something that does not exist.
    NotFound,
    /// The store or the agent cannot do it now.
    Unavailable,
    /// Something that should not fail did.
    Internal,
}

impl ErrorKind {
    /// Whether the same request may succeed later.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Internal)
    }
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
    /// Signals of [`Request::ExtensionSignals`], taken one by one.
    Accepted {
        /// New signals stored.
        stored: usize,
        /// Signals already present.
        duplicates: usize,
        /// The signals not stored, in the order they were sent.
        rejected: Vec<Rejection>,
    },
    /// Signals listed.
    Signals {
        /// The signals, carts with their derived state.
        signals: Vec<SignalView>,
    },
    /// The never-share list, after the change asked for if any.
    NeverShare {
        /// The list.
        list: Box<crate::core::never_share::NeverShareView>,
        /// Whether the request changed it.
        changed: bool,
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
        /// What it would share now, summed up before it was stored; absent when that could
        /// not be worked out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        would_share: Option<WouldShare>,
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
    /// A partner of a grant was cut off.
    PartnerRevoked {
        /// Which grant.
        grant_id: GrantId,
        /// The partner.
        audience: String,
        /// Whether it had been cut off before.
        already: bool,
    },
    /// A preview.
    Preview {
        /// The claims the marketer would receive.
        claims: Box<SliceClaims>,
    },
    /// A grant's consent receipt.
    Receipt {
        /// The compact JWS, signed with the grant's key.
        jws: String,
        /// What it says.
        receipt: Box<optin_protocol::receipt::Receipt>,
    },
    /// A page of the audit log.
    Audit {
        /// Records, each with its hash.
        records: Vec<AuditEntry>,
        /// Where it breaks, if it does up to this page's end; otherwise how many records are
        /// verified so far, this page's and those before it. The verdict on the whole log is
        /// the last page's (the one without `next`), which also checks the chain head.
        chain: Result<u64, String>,
        /// The `since_seq` of the next page, when more records follow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
        /// Refusals counted per grant rather than recorded one by one (revoked or expired
        /// grants), each with whether it carries its MAC.
        #[serde(default)]
        counted: Vec<CountedRefusals>,
        /// Requests with unknown or forged tokens since the agent started: counted, not
        /// recorded one by one (see `Core::anonymous_refusals`).
        #[serde(default)]
        anonymous_refusals: u64,
        /// What stands for the records pruned from the front of the log, if any were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Box<CheckpointView>>,
    },
    /// Sharing state.
    Sharing {
        /// Whether sharing is paused.
        paused: bool,
    },
    /// The state of optin.
    Status(Box<Status>),
    /// A grant's bundle, printed again.
    Bundle {
        /// The bundle.
        bundle: Box<GrantBundle>,
    },
    /// A consent request is kept (or was already).
    RequestAdded {
        /// It, as kept.
        request: Box<RequestView>,
        /// Whether the same request was kept before: nothing changed.
        already: bool,
        /// Whether the marketer's domain signed earlier requests with another key.
        key_changed: bool,
    },
    /// The consent requests.
    ConsentRequests {
        /// Pending first, then by when each came.
        requests: Vec<RequestView>,
    },
    /// One consent request.
    ConsentRequest {
        /// It.
        request: Box<RequestView>,
        /// What its terms would share now, while it can be approved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        would_share: Option<WouldShare>,
    },
    /// A consent request was approved.
    Approved {
        /// The grant's bundle.
        bundle: Box<GrantBundle>,
        /// The request, approved.
        request: Box<RequestView>,
        /// What the grant would share now, summed up before it was stored; absent when that
        /// could not be worked out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        would_share: Option<WouldShare>,
    },
    /// A consent request was denied.
    Denied {
        /// The request, denied.
        request: Box<RequestView>,
    },
}

/// A signal of [`Request::ExtensionSignals`] that was not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Its place in the request's `signals`, from 0.
    pub index: usize,
    /// The id it was sent with, when that is a valid signal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was not stored.
    pub reason: RejectionReason,
}

/// Why a signal was not stored: the one difference a feeder acts on is whether the signal
/// is wrong or the day's quota is used up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    /// It is not a valid signal.
    Invalid {
        /// The JSON path of the field at fault within the signal (`items[0].name`), when one
        /// is to blame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        /// What is wrong, in words.
        error: String,
    },
    /// It is valid and new, but the feeder's signals of the day are used up.
    Quota {
        /// How many new signals a UTC day may bring.
        per_day: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The consent request it was approved from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<optin_protocol::request::RequestId>,
    /// Where its events are pushed and how that goes, for a push grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushView>,
    /// What it has served, from the audit log.
    #[serde(default)]
    pub usage: GrantUsage,
    /// Partners cut off with `optin revoke --partner`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners_revoked: Vec<String>,
    /// For an aggregate grant with noise: its privacy budget, spent and left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::aggregate::BudgetView>,
    /// For a grant with a rate: the slices it served in the rate's current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateView>,
}

/// What a grant with a rate has used of it: the slices served, pulled or pushed, in the
/// current UTC hour or day, the period the rate counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateView {
    /// The grant's rate.
    pub rate: optin_protocol::rate::Rate,
    /// Slices served in its current period.
    pub used: u64,
}

/// What a grant has served, counted from the `served` records of the audit log: who received
/// what, and through whom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantUsage {
    /// When it last served a slice, to anyone.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub last_used: Option<OffsetDateTime>,
    /// Slices served, pulled or pushed, to the marketer and its partners.
    pub slices: usize,
    /// Items in those slices.
    pub items: usize,
    /// The partners the marketer's tokens named, each with what it received, by name; a
    /// partner cut off before it received anything is listed too.
    pub partners: Vec<PartnerUsage>,
}

/// What one partner of a grant received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerUsage {
    /// The partner, as the token's `aud` caveat named it.
    pub audience: String,
    /// Slices it received.
    pub slices: usize,
    /// Items in them.
    pub items: usize,
    /// When it last received one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub last_used: Option<OffsetDateTime>,
    /// Whether the person cut it off.
    pub revoked: bool,
}

impl GrantUsage {
    /// Counts one `served` record of the grant, of `items` items, to `audience` (`None`: the
    /// marketer), at `at`.
    pub fn count(&mut self, audience: Option<&str>, items: usize, at: OffsetDateTime) {
        self.slices += 1;
        self.items += items;
        self.last_used = self.last_used.max(Some(at));
        if let Some(audience) = audience {
            let partner = self.partner(audience);
            partner.slices += 1;
            partner.items += items;
            partner.last_used = partner.last_used.max(Some(at));
        }
    }

    /// The partner named `audience`, added when it is not listed yet, the list kept sorted.
    pub fn partner(&mut self, audience: &str) -> &mut PartnerUsage {
        let at = match self.partners.binary_search_by(|p| p.audience.as_str().cmp(audience)) {
            Ok(at) => at,
            Err(at) => {
                self.partners.insert(at, PartnerUsage { audience: audience.to_owned(), slices: 0, items: 0, last_used: None, revoked: false });
                at
            }
        };
        &mut self.partners[at]
    }
}

/// A push grant's deliveries, as the person sees them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushView {
    /// The inbox.
    pub inbox: String,
    /// How often a slice is pushed.
    pub every: optin_protocol::span::Span,
    /// The last attempt and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<crate::store::LastPush>,
    /// Events waiting to be sent.
    pub queued: usize,
    /// When the inbox answered `410 Gone`, after which nothing more is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub gone_at: Option<OffsetDateTime>,
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
    /// Its stored record fails its MAC (changed behind optin's back): it serves nothing.
    Damaged,
}

/// A stored signal as the owner sees it: the signal's own JSON object, and for a cart its
/// derived `state` beside the signal's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalView {
    /// The signal.
    pub signal: Signal,
    /// What became of a cart; `None` for other kinds.
    pub state: Option<CartState>,
}

impl Serialize for SignalView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.signal).map_err(serde::ser::Error::custom)?;
        if let (Some(state), Some(object)) = (self.state, value.as_object_mut()) {
            object.insert("state".into(), serde_json::to_value(state).map_err(serde::ser::Error::custom)?);
        }
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SignalView {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SignalView, D::Error> {
        let mut value = serde_json::Value::deserialize(d)?;
        let state = match value.as_object_mut().and_then(|o| o.remove("state")) {
            Some(state) => Some(serde_json::from_value(state).map_err(serde::de::Error::custom)?),
            None => None,
        };
        // The agent wrote it from a stored, validated signal (see `Signal::from_stored_json`).
        let bytes = serde_json::to_vec(&value).map_err(serde::de::Error::custom)?;
        let signal = Signal::from_stored_json(&bytes).map_err(serde::de::Error::custom)?;
        Ok(SignalView { signal, state })
    }
}

/// Refusals of one grant for one reason, as counted, and whether the count carries its MAC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CountedRefusals {
    /// The count.
    #[serde(flatten)]
    pub count: crate::store::RefusalCount,
    /// Whether it is as the agent counted it (it carries its MAC).
    pub intact: bool,
}

/// An audit record with the SHA-256 of its stored bytes, which the next record's `prev`
/// names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// Hex SHA-256 of its stored bytes.
    pub hash: String,
}

/// The checkpoint of a pruned audit log, as the person sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointView {
    /// What the records pruned left behind.
    pub checkpoint: crate::store::AuditCheckpoint,
    /// Whether it carries its MAC: one that does not is not this optin's, and its counts
    /// are shown but not trusted.
    pub intact: bool,
}

/// The state of optin, for `optin status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The version of the optin that answered.
    pub version: String,
    /// Where marketers reach the agent (the last address when none runs).
    pub agent_url: String,
    /// Whether the person has paused all sharing.
    pub paused: bool,
    /// Stored signals of each kind.
    pub signals: BTreeMap<Kind, usize>,
    /// Grants in force (not revoked, not expired).
    pub active_grants: usize,
    /// Slices handed to marketers in the last 24 hours.
    pub served_last_24h: usize,
}
