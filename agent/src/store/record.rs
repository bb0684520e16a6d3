//! The records the store keeps, as they are on disk (JSON values in sled trees; the layout
//! is in the parent module and in SPEC.md). These are versioned storage formats: change them
//! only with a schema version and a migration.

use optin_protocol::request::{Request, RequestId};
use optin_protocol::scope::{GrantId, Terms};
use optin_protocol::span::Span;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A grant as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Record version, 1.
    pub v: u32,
    /// Its id.
    pub id: GrantId,
    /// Who it is for.
    pub marketer: String,
    /// What for.
    pub purpose: String,
    /// What it allows.
    pub terms: Terms,
    /// When it was made.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The consent request it was approved from (its marketer is `marketer`); absent for a
    /// grant made with `optin grant`, and in every grant stored before requests existed, whose
    /// bytes, and so MACs, stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The request's DPV purpose code, kept as text: a code this optin no longer lists still
    /// reads back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_code: Option<String>,
    /// Where the grant's events are pushed, for a grant approved from a push request; absent
    /// for every other grant, whose bytes, and so MACs, stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTo>,
    /// Partners cut off with `optin revoke --partner`: every token of the grant whose `aud`
    /// caveat names one is refused. Sorted, each once; absent while there is none, so the
    /// bytes, and so MACs, of every other grant stay as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners_revoked: Vec<String>,
}

/// Where a grant's events go and how often a slice does (SPEC.md, "Push events").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTo {
    /// The marketer's inbox, an `https` URL checked as the request's was.
    pub inbox: String,
    /// How often a slice is pushed.
    pub every: Span,
}

/// An event waiting to be pushed (tree `push_queue`, key due time (8) · event id). The
/// event's bytes are made once, when it is queued, so every attempt sends the same event
/// under the same `webhook-id` and the marketer can drop repeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPush {
    /// Record version, 1.
    pub v: u32,
    /// The grant whose event it is.
    pub grant_id: GrantId,
    /// Its `webhook-id`.
    pub event_id: String,
    /// Its type (`grant.created`, `slice.delivered`, …).
    pub kind: String,
    /// The event as sent, JSON.
    pub body: String,
    /// How many attempts failed so far.
    pub attempts: u32,
    /// When it is due.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub next_at: OffsetDateTime,
    /// For a slice: the arrival number of the last signal it passed (`store::arrival`),
    /// which becomes the grant's watermark once the inbox takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
}

impl PendingPush {
    /// Whether this event ends the grant: the one kind still sent after the grant stops.
    pub fn ends_grant(&self) -> bool {
        matches!(self.kind.as_str(), "grant.revoked" | "grant.expired")
    }
}

/// Where a grant's pushes stand (tree `push_state`, key grant id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushState {
    /// The arrival number of the last signal the inbox took, or that the grant can never
    /// take: the next slice starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_through: Option<u64>,
    /// When the next slice is cut; absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub next_slice_at: Option<OffsetDateTime>,
    /// The last attempt and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastPush>,
    /// When the inbox answered `410 Gone`: nothing more is pushed for the grant.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub gone_at: Option<OffsetDateTime>,
    /// Whether the grant's end (`grant.revoked` or `grant.expired`) was queued.
    #[serde(default)]
    pub ended: bool,
}

/// One delivery attempt, as the person sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPush {
    /// When.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub at: OffsetDateTime,
    /// The event's type.
    pub kind: String,
    /// `delivered`, `retrying`, `failed` or `gone`.
    pub outcome: String,
    /// The HTTP status, when one came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// A consent request as stored (tree `requests`, key marketer domain · 0x00 · request id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Record version, 1.
    pub v: u32,
    /// The signed request exactly as received.
    pub jws: String,
    /// The document, as read from the JWS when it was added; read again, all or nothing,
    /// whenever the record is.
    #[serde(with = "request_document")]
    pub request: Request,
    /// The RFC 7638 thumbprint of the key that signed it.
    pub kid: String,
    /// The domain it was fetched from over HTTPS, which vouches for the key; absent for a
    /// request handed over as a file, which nothing but its key vouches for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_from: Option<String>,
    /// When the agent took it.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub received_at: OffsetDateTime,
    /// What the person decided. Expiry is not stored: a pending request is expired when it is
    /// read after its `expires_at`.
    pub decision: Decision,
}

/// What the person decided about a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Decision {
    /// Not yet.
    Pending,
    /// Approved: the grant made of it.
    Approved {
        /// The grant.
        grant_id: GrantId,
        /// When.
        #[serde(with = "optin_protocol::timestamp::serde")]
        at: OffsetDateTime,
    },
    /// Denied.
    Denied {
        /// When.
        #[serde(with = "optin_protocol::timestamp::serde")]
        at: OffsetDateTime,
    },
}

/// Serde of a request document: written as the document's JSON object, read back through
/// [`Request::parse`], so what comes out of the store is checked as what came in was.
pub mod request_document {
    use optin_protocol::request::Request;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes it.
    pub fn serialize<S: Serializer>(request: &Request, s: S) -> Result<S::Ok, S::Error> {
        request.serialize(s)
    }

    /// Reads it.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Request::parse(&value.to_string()).map_err(serde::de::Error::custom)
    }
}

/// Serde of an optional RFC 3339 timestamp.
pub mod opt_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Writes it.
    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&optin_protocol::timestamp::format(*at)),
            None => s.serialize_none(),
        }
    }

    /// Reads it.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(d)?.map(|t| optin_protocol::timestamp::parse(&t).ok_or_else(|| serde::de::Error::custom("bad timestamp"))).transpose()
    }
}

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
        /// The record that first served this slice, when this delivery served it again
        /// unchanged (SPEC.md, "Repeated slices"): the slice carries that record's number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repeat_of: Option<u64>,
    },
    /// A request was refused.
    Refused {
        /// The grant the token named, when it named a known one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_id: Option<GrantId>,
        /// The grant's marketer, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marketer: Option<String>,
        /// The slice, when one was signed and then cut off (its `served` record is before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slice_id: Option<String>,
        /// The request path and query.
        asked: String,
        /// The HTTP status answered.
        status: u16,
        /// Why.
        reason: String,
        /// The partner the token was narrowed to, when a genuine token named one; absent in
        /// records of older optins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
    },
    /// A grant was made.
    Granted {
        /// The grant.
        grant_id: GrantId,
        /// For whom.
        marketer: String,
        /// What for, as agreed (absent in records of older optins).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<String>,
        /// What it allows, as agreed: the terms at grant time, whatever the grant record
        /// says later (absent in records of older optins).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terms: Option<Terms>,
        /// The consent request approved, when the grant was made of one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<RequestId>,
        /// That request's DPV purpose code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose_code: Option<String>,
    },
    /// A consent request was denied: no grant was made of it.
    Denied {
        /// Who asked.
        marketer: String,
        /// The request.
        request_id: RequestId,
    },
    /// A grant was revoked.
    Revoked {
        /// The grant.
        grant_id: GrantId,
        /// Whose.
        marketer: String,
    },
    /// One partner of a grant was cut off (`optin revoke --partner`): every token of the
    /// grant narrowed to it is refused from then on, and the grant serves everyone else.
    #[serde(rename = "partner-revoked")]
    PartnerRevoked {
        /// The grant.
        grant_id: GrantId,
        /// Whose.
        marketer: String,
        /// The partner, as its tokens' `aud` caveat names it.
        audience: String,
    },
    /// A push event was delivered or given up on; retries are counted in `attempts`, not
    /// recorded one by one, so an inbox that is down does not grow the log.
    Pushed {
        /// The grant.
        grant_id: GrantId,
        /// Whose inbox, so that `optin audit --marketer` lists pushes too. Absent in records
        /// written before it was kept, and when the grant's record could not be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marketer: Option<String>,
        /// The event's `webhook-id`.
        event_id: String,
        /// Its type.
        kind: String,
        /// `delivered`, `retrying` (the first failure only), `failed`, `gone` or `dropped`
        /// (the grant stopped before it was sent).
        outcome: String,
        /// The HTTP status, when one came back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Attempts so far, this one included.
        attempts: u32,
    },
    /// Signals were forgotten.
    Forgot {
        /// How many.
        count: usize,
        /// Which selection (`id=…`, `kind=…`, `before=…`, `all`; older optins wrote a bare
        /// `id`).
        what: String,
    },
    /// Sharing was paused or resumed.
    Sharing {
        /// Whether sharing is now paused.
        paused: bool,
    },
    /// The store's records were MACed as they were found, by the first optin to MAC them:
    /// what came before this record was trusted as it was, not checked.
    Sealed {
        /// Audit records written before, without MACs.
        records: usize,
        /// Grants stored before, without MACs.
        grants: usize,
    },
}

impl AuditEvent {
    /// Its `type`, as the record's JSON names it.
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::Served { .. } => "served",
            AuditEvent::Refused { .. } => "refused",
            AuditEvent::Granted { .. } => "granted",
            AuditEvent::Denied { .. } => "denied",
            AuditEvent::Revoked { .. } => "revoked",
            AuditEvent::PartnerRevoked { .. } => "partner-revoked",
            AuditEvent::Pushed { .. } => "pushed",
            AuditEvent::Forgot { .. } => "forgot",
            AuditEvent::Sharing { .. } => "sharing",
            AuditEvent::Sealed { .. } => "sealed",
        }
    }
}

/// What the records pruned from the front of the audit log leave behind (`meta` key
/// `audit_checkpoint`, with its MAC beside it; see `store::audit`). Every record up to `seq`
/// is gone; the first record kept chains to `hash`, and verification starts here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// Record version, 1.
    pub v: u32,
    /// The last record pruned.
    pub seq: u64,
    /// The SHA-256 of its stored bytes, hex: the `prev` of the first record kept.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
    /// When the first record pruned (record 1, unless the log began otherwise) happened.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub first_at: OffsetDateTime,
    /// When the last record pruned happened.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub last_at: OffsetDateTime,
    /// When the log was last pruned up to here.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub pruned_at: OffsetDateTime,
    /// Records pruned, by event type.
    pub events: std::collections::BTreeMap<String, u64>,
    /// Per grant, what its records pruned said; sorted by grant id.
    pub grants: Vec<GrantSummary>,
}

/// What the pruned records of one grant said: enough for `optin grants` and
/// `optin audit --summary` to count what they no longer read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSummary {
    /// The grant.
    pub grant_id: GrantId,
    /// Its marketer, as the first of its records pruned named it.
    pub marketer: String,
    /// Its `granted` records pruned (0 or 1).
    pub granted: u64,
    /// Slices served, to the marketer and its partners.
    pub slices: u64,
    /// Items in them.
    pub items: u64,
    /// When the first of them was served.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub first_served: Option<OffsetDateTime>,
    /// When the last of them was served.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub last_served: Option<OffsetDateTime>,
    /// Its `refused` records.
    pub refused: u64,
    /// The partners a caveat named, each with what it received; sorted by name. At most
    /// [`MAX_PARTNERS_PER_GRANT`] are named; the rest are counted together as
    /// [`OTHER_PARTNERS`].
    pub partners: Vec<PartnerSummary>,
}

/// Most partners a grant's summary names, each with its own entry. A partner is whatever a
/// marketer writes in a token's `aud` caveat, so a marketer naming a new one per slice would
/// otherwise add an entry per slice to a checkpoint that is kept for ever, and written and
/// MACed again with every batch pruned. The partners beyond these are counted together in
/// one entry, [`OTHER_PARTNERS`], so the counts still add up.
pub const MAX_PARTNERS_PER_GRANT: usize = 256;

/// The `audience` of the entry that counts together the partners of a grant beyond
/// [`MAX_PARTNERS_PER_GRANT`]. Not a host name, so no `aud` caveat names it.
pub const OTHER_PARTNERS: &str = "(other partners)";

/// What the pruned records say one partner of a grant received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSummary {
    /// The partner, as the token's `aud` caveat named it.
    pub audience: String,
    /// Slices it received.
    pub slices: u64,
    /// Items in them.
    pub items: u64,
    /// When it last received one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub last_served: Option<OffsetDateTime>,
}

impl AuditCheckpoint {
    /// An empty checkpoint before `first`, the first record pruned.
    pub fn start(first: &AuditRecord) -> AuditCheckpoint {
        AuditCheckpoint {
            v: 1,
            seq: 0,
            hash: [0; 32],
            first_at: first.at,
            last_at: first.at,
            pruned_at: first.at,
            events: std::collections::BTreeMap::new(),
            grants: Vec::new(),
        }
    }

    /// Moves the checkpoint on over `record`, the next record pruned, whose stored bytes
    /// hash to `hash`.
    pub fn fold(&mut self, record: &AuditRecord, hash: [u8; 32]) {
        (self.seq, self.hash, self.last_at) = (record.seq, hash, record.at);
        *self.events.entry(record.event.name().to_owned()).or_default() += 1;
        match &record.event {
            AuditEvent::Served { grant_id, marketer, audience, items, .. } => {
                self.grant(grant_id, marketer).serve(audience.as_deref(), *items as u64, record.at);
            }
            AuditEvent::Granted { grant_id, marketer, .. } => self.grant(grant_id, marketer).granted += 1,
            AuditEvent::Refused { grant_id: Some(grant_id), marketer: Some(marketer), .. } => self.grant(grant_id, marketer).refused += 1,
            _ => {}
        }
    }

    /// The summary of `grant`, added when it is not listed yet, the list kept sorted.
    fn grant(&mut self, grant: &GrantId, marketer: &str) -> &mut GrantSummary {
        let at = match self.grants.binary_search_by(|g| g.grant_id.as_str().cmp(grant.as_str())) {
            Ok(at) => at,
            Err(at) => {
                let summary = GrantSummary {
                    grant_id: grant.clone(),
                    marketer: marketer.to_owned(),
                    granted: 0,
                    slices: 0,
                    items: 0,
                    first_served: None,
                    last_served: None,
                    refused: 0,
                    partners: Vec::new(),
                };
                self.grants.insert(at, summary);
                at
            }
        };
        &mut self.grants[at]
    }
}

impl GrantSummary {
    fn serve(&mut self, audience: Option<&str>, items: u64, at: OffsetDateTime) {
        (self.slices, self.items) = (self.slices + 1, self.items + items);
        self.first_served = Some(self.first_served.map_or(at, |f| f.min(at)));
        self.last_served = self.last_served.max(Some(at));
        let Some(mut audience) = audience else { return };
        let found = self.partners.binary_search_by(|p| p.audience.as_str().cmp(audience));
        // A partner not named yet, once the summary names as many as it keeps, is counted
        // with the rest.
        if found.is_err() && self.partners.iter().filter(|p| p.audience != OTHER_PARTNERS).count() >= MAX_PARTNERS_PER_GRANT {
            audience = OTHER_PARTNERS;
        }
        let found = if audience == OTHER_PARTNERS { self.partners.binary_search_by(|p| p.audience.as_str().cmp(audience)) } else { found };
        let at_place = match found {
            Ok(place) => place,
            Err(place) => {
                self.partners.insert(place, PartnerSummary { audience: audience.to_owned(), slices: 0, items: 0, last_served: None });
                place
            }
        };
        let partner = &mut self.partners[at_place];
        (partner.slices, partner.items) = (partner.slices + 1, partner.items + items);
        partner.last_served = partner.last_served.max(Some(at));
    }
}

/// Serde of a SHA-256 as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&optin_protocol::hex(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        optin_protocol::hex::decode(&text).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| serde::de::Error::custom("not 64 hex digits"))
    }
}

/// Refusals of one grant for one reason, counted rather than recorded one by one: a holder
/// of a revoked or expired grant's token could otherwise write a record per request, as fast
/// as it can send them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    /// The grant.
    pub grant_id: GrantId,
    /// Its marketer.
    pub marketer: String,
    /// The HTTP status answered.
    pub status: u16,
    /// Why (`grant revoked`, `grant expired`).
    pub reason: String,
    /// How many requests were refused so.
    pub count: u64,
    /// The first.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub first: OffsetDateTime,
    /// The last.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub last: OffsetDateTime,
}

/// What the audit chain has committed to so far: the last record's sequence number and the
/// SHA-256 of its stored bytes. Records commit to the one before them through `prev`; the
/// head commits to the last one, which no record follows yet. It is kept in `meta` as
/// `audit_head`, written in the same transaction as the record it names, beside its MAC
/// (`audit_head_mac`, see [`super::seal`]), so that it cannot be rebuilt over a shortened
/// log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// The last record's sequence number, 0 for an empty log.
    pub seq: u64,
    /// The SHA-256 of its stored bytes, zeros for an empty log.
    pub hash: [u8; 32],
}

impl AuditHead {
    /// The head of a log with no records.
    pub const EMPTY: AuditHead = AuditHead { seq: 0, hash: [0; 32] };

    /// The stored form: `SEQ:HEX`, like `7:3f2a…` (64 hex digits).
    pub fn encode(&self) -> String {
        format!("{}:{}", self.seq, optin_protocol::hex(&self.hash))
    }

    /// Reads the stored form; `None` if it is not one.
    pub fn decode(text: &str) -> Option<AuditHead> {
        let (seq, hex) = text.split_once(':')?;
        // `u64::from_str` takes a leading `+`; the stored form never has one.
        if !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hash = optin_protocol::hex::decode(hex).ok()?.try_into().ok()?;
        Some(AuditHead { seq: seq.parse().ok()?, hash })
    }
}
