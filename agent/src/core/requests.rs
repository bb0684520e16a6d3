//! Consent requests the person keeps and decides (SPEC.md, "Consent requests", "How the
//! agent keeps and decides them").
//!
//! A request comes in as a signed JWS, from a file the person hands over or (later) from a
//! marketer's well-known URL; either way in, [`Core::add_request`] takes the JWS and the
//! domain it was fetched from, if any. It is verified whole before anything is stored, and
//! stored as it came, pending: nothing is ever approved without the person. Approval narrows
//! the request's terms by the person's choices (never widens them) and makes a grant bound
//! to the request; denial records that none was made. A request past its `expires_at` can no
//! longer be approved, and reads as expired.

use std::collections::BTreeMap;
use std::fmt;

use optin_protocol::rate::Rate;
use optin_protocol::request::{self, Choices, Request, RequestId};
use optin_protocol::scope::{GrantId, Granularity, SliceQuery, MAX_LIMIT};
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::slice::SliceItem;
use optin_protocol::span::Span;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::audit::AuditEvent;
use super::command::Response;
use super::marketer::Refusal;
use super::owner::new_grant_id;
use super::{Core, CoreError};
use crate::store::{Decision, GrantRecord, RequestRecord, Seal, StoredRequest};

/// Most requests that wait for a decision at once (expired ones count until denied): a
/// marketer, or a file, cannot fill the store with requests the person never asked for.
pub const MAX_PENDING: usize = 100;

/// Most requests kept at all, decided ones included.
pub const MAX_STORED: usize = 1000;

/// Most categories a preview names one by one; the rest are counted together.
const PREVIEW_CATEGORIES: usize = 32;

/// How the person names a request: its id (`shoes-2026-11`), or `DOMAIN/ID` when two
/// marketers chose the same id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestName {
    marketer: Option<String>,
    id: RequestId,
}

impl RequestName {
    /// Reads `ID` or `DOMAIN/ID`.
    pub fn parse(text: &str) -> Result<RequestName, String> {
        let shown = request::shown(text);
        let bad = || format!("`{shown}` is not a request: give its id, or DOMAIN/ID (as `optin requests` lists them)");
        let (marketer, id) = match text.split_once('/') {
            Some((domain, id)) => {
                let domain = optin_protocol::signal::plain_domain(domain).map_err(|_| bad())?;
                (Some(domain), id)
            }
            None => (None, text),
        };
        Ok(RequestName { marketer, id: RequestId::parse(id).ok_or_else(bad)? })
    }
}

impl fmt::Display for RequestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.marketer {
            Some(m) => write!(f, "{m}/{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

impl std::str::FromStr for RequestName {
    type Err = String;
    fn from_str(text: &str) -> Result<RequestName, String> {
        RequestName::parse(text)
    }
}

impl TryFrom<String> for RequestName {
    type Error = String;
    fn try_from(text: String) -> Result<RequestName, String> {
        RequestName::parse(&text)
    }
}

impl From<RequestName> for String {
    fn from(name: RequestName) -> String {
        name.to_string()
    }
}

/// What the person chose when approving, as it travels: each absent choice keeps what the
/// request asks ([`Choices`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalChoices {
    /// Fewer kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Kinds>,
    /// A coarser granularity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Granularity>,
    /// A shorter window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Span>,
    /// A shorter grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Span>,
    /// Fewer or narrower category paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Fewer merchants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// Fewer fields, at `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// A lower rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// At granularity `aggregate`, the noise; what is not chosen is the default.
    #[serde(default, skip_serializing_if = "super::aggregate::NoiseChoice::is_empty")]
    pub noise: super::aggregate::NoiseChoice,
}

impl From<ApprovalChoices> for Choices {
    fn from(c: ApprovalChoices) -> Choices {
        Choices {
            kinds: c.kinds,
            granularity: c.granularity,
            window: c.window,
            expires: c.expires,
            categories: c.categories,
            merchants: c.merchants,
            fields: c.fields,
            rate: c.rate,
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for the person.
    Pending,
    /// Past its `expires_at` without a decision: it can no longer be approved.
    Expired,
    /// Approved: a grant was made of it.
    Approved,
    /// Denied.
    Denied,
    /// Its record fails its MAC (changed behind optin's back): it can be neither shown as
    /// the marketer's nor approved.
    Damaged,
}

/// A request as the person sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestView {
    /// Where it stands.
    pub state: RequestState,
    /// The request document, read again whenever it is shown.
    #[serde(with = "crate::store::record::request_document")]
    pub request: Request,
    /// The thumbprint of the key that signed it.
    pub kid: String,
    /// The domain it was fetched from over HTTPS; `None` for a request handed over as a
    /// file, whose marketer domain nothing checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_from: Option<String>,
    /// When the agent took it.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub received_at: OffsetDateTime,
    /// The grant made of it, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<GrantId>,
    /// When it was approved or denied.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub decided_at: Option<OffsetDateTime>,
}

impl RequestView {
    fn of(stored: StoredRequest, now: OffsetDateTime) -> RequestView {
        let StoredRequest { record, seal } = stored;
        let (state, grant_id, decided_at) = match (&record.decision, seal) {
            (_, Seal::Missing | Seal::Invalid) => (RequestState::Damaged, None, None),
            (Decision::Approved { grant_id, at }, Seal::Valid) => (RequestState::Approved, Some(grant_id.clone()), Some(*at)),
            (Decision::Denied { at }, Seal::Valid) => (RequestState::Denied, None, Some(*at)),
            (Decision::Pending, Seal::Valid) if now >= record.request.expires_at => (RequestState::Expired, None, None),
            (Decision::Pending, Seal::Valid) => (RequestState::Pending, None, None),
        };
        RequestView {
            state,
            request: record.request,
            kid: record.kid,
            fetched_from: record.fetched_from,
            received_at: record.received_at,
            grant_id,
            decided_at,
        }
    }
}

/// What a request's terms, as asked, would share now: the same cut as a slice, counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum WouldShare {
    /// These items, summarised.
    Items(Box<ShareSummary>),
    /// Nothing while sharing is paused.
    Paused,
}

/// Items a slice would hold, counted by kind, cart state and category.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShareSummary {
    /// The granularity they would be shown at.
    pub granularity: Option<Granularity>,
    /// The earliest time included.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub since: Option<OffsetDateTime>,
    /// Everything before this time.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::store::record::opt_time")]
    pub until: Option<OffsetDateTime>,
    /// Every item.
    pub items: usize,
    /// Items of each kind.
    pub kinds: BTreeMap<Kind, usize>,
    /// Carts by what became of them, where the granularity shows it (`raw`).
    pub cart_states: BTreeMap<String, usize>,
    /// Items by category, at most [`PREVIEW_CATEGORIES`] of them.
    pub categories: BTreeMap<String, usize>,
    /// Items in categories beyond those.
    pub other_categories: usize,
    /// Items without a category.
    pub uncategorised: usize,
}

impl ShareSummary {
    /// Counts `bucket.count` signals of its kind and category, as that many items would be.
    fn count_bucket(&mut self, bucket: &optin_protocol::slice::Count) {
        let n = usize::try_from(bucket.count).unwrap_or(usize::MAX);
        self.items = self.items.saturating_add(n);
        *self.kinds.entry(bucket.kind).or_default() += n;
        match bucket.category.as_deref() {
            None => self.uncategorised += n,
            Some(c) if self.categories.contains_key(c) || self.categories.len() < PREVIEW_CATEGORIES => *self.categories.entry(c.to_owned()).or_default() += n,
            Some(_) => self.other_categories += n,
        }
    }

    fn count(&mut self, item: &SliceItem) {
        self.items += 1;
        let (kind, category, state) = match item {
            SliceItem::Raw(raw) => (raw.body.kind(), raw.category.as_deref(), raw.state),
            SliceItem::Category(c) => (c.kind, c.category.as_deref(), None),
            SliceItem::Partial(p) => (p.kind, p.category(), p.state()),
        };
        *self.kinds.entry(kind).or_default() += 1;
        if let Some(state) = state {
            // A state serializes to its lowercase name.
            let name = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            *self.cart_states.entry(name).or_default() += 1;
        }
        match category {
            None => self.uncategorised += 1,
            Some(c) if self.categories.contains_key(c) || self.categories.len() < PREVIEW_CATEGORIES => *self.categories.entry(c.to_owned()).or_default() += 1,
            Some(_) => self.other_categories += 1,
        }
    }
}

impl Core {
    /// Takes a signed request: from a file (`fetched_from` `None`) or fetched from
    /// `https://DOMAIN/.well-known/optin-request.json` (`fetched_from` the domain). Verified
    /// whole first; nothing is stored unless it verifies. Adding the same request again
    /// changes nothing (a file's request fetched later from its domain is then marked as
    /// checked); another request under the same marketer and id is refused.
    pub(super) fn add_request(&self, jws: &str, fetched_from: Option<&str>, now: OffsetDateTime) -> Result<Response, CoreError> {
        let signed =
            request::verify(jws.trim(), fetched_from, now).map_err(|e| CoreError::Invalid(format!("the request is refused, nothing was stored: {e}")))?;
        let domain = signed.request.marketer.domain.clone();
        let id = signed.request.id.clone();
        let kid = signed.key.thumbprint();
        // One add or decision at a time, so the bound and the "already there" check hold.
        let _one = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.store.requests()?;
        let same = |s: &&StoredRequest| s.record.request.marketer.domain == domain && s.record.request.id == id;
        if let Some(found) = all.iter().find(same) {
            if found.seal != Seal::Valid {
                return Err(CoreError::Invalid(format!(
                    "{domain}/{id} is stored but damaged (its record fails its MAC): `optin deny {domain}/{id}` settles it; nothing was stored"
                )));
            }
            if found.record.jws != jws.trim() {
                return Err(CoreError::Invalid(format!(
                    "{domain} already asked under the id {id} with another request; a marketer changes a request under a new id, so this one is refused and nothing was stored"
                )));
            }
            let mut record = found.record.clone();
            if record.fetched_from.is_none() && fetched_from.is_some() && record.decision == Decision::Pending {
                record.fetched_from = Some(domain.clone());
                self.store.put_request(&record)?;
            }
            let view = RequestView::of(StoredRequest { record, seal: Seal::Valid }, now);
            return Ok(Response::RequestAdded { request: Box::new(view), already: true, key_changed: false });
        }
        let waiting = all.iter().filter(|s| s.record.decision == Decision::Pending).count();
        if waiting >= MAX_PENDING {
            return Err(CoreError::Invalid(format!(
                "{MAX_PENDING} requests already wait for a decision: approve or deny some first (`optin requests` lists them); nothing was stored"
            )));
        }
        if all.len() >= MAX_STORED {
            return Err(CoreError::Invalid(format!("optin keeps at most {MAX_STORED} requests and has them all; nothing was stored")));
        }
        let key_changed = all.iter().any(|s| s.record.request.marketer.domain == domain && s.record.kid != kid);
        let record = RequestRecord {
            v: 1,
            jws: jws.trim().to_owned(),
            request: signed.request,
            kid,
            fetched_from: fetched_from.map(|_| domain.clone()),
            received_at: now,
            decision: Decision::Pending,
        };
        self.store.put_request(&record)?;
        let view = RequestView::of(StoredRequest { record, seal: Seal::Valid }, now);
        Ok(Response::RequestAdded { request: Box::new(view), already: false, key_changed })
    }

    /// Every request, pending first, then by when it came.
    pub(super) fn list_requests(&self, now: OffsetDateTime) -> Result<Response, CoreError> {
        let mut requests: Vec<RequestView> = self.store.requests()?.into_iter().map(|s| RequestView::of(s, now)).collect();
        requests.sort_by_key(|r| (r.state != RequestState::Pending, r.received_at));
        Ok(Response::ConsentRequests { requests })
    }

    /// One request, and what its terms as asked would share now while it can be approved.
    pub(super) fn show_request(&self, name: &RequestName, now: OffsetDateTime) -> Result<Response, CoreError> {
        let view = RequestView::of(self.find_request(name)?, now);
        let would_share = match view.state {
            RequestState::Pending => Some(self.would_share(&view.request, now)?),
            _ => None,
        };
        Ok(Response::ConsentRequest { request: Box::new(view), would_share })
    }

    /// Approves a pending request, narrowed by `choices`: a grant bound to the request, whose
    /// audience is the marketer's domain.
    pub(super) fn approve(&self, name: &RequestName, choices: ApprovalChoices, now: OffsetDateTime) -> Result<Response, CoreError> {
        let _one = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let found = self.find_request(name)?;
        let mut record = self.undecided(found, now, "approved")?;
        let asked = &record.request;
        let noise = choices.noise;
        let approved = asked.terms.narrow(&choices.into()).map_err(|e| CoreError::Invalid(format!("nothing was approved: {e}")))?;
        let mut terms = approved.terms(&asked.marketer.domain, now).ok_or_else(|| CoreError::Invalid("expires: too far in the future".into()))?;
        terms.noise = noise.decide(terms.granularity, Core::push_to(asked).is_some()).map_err(|e| CoreError::Invalid(format!("nothing was approved: {e}")))?;
        let grant = GrantRecord {
            v: 1,
            id: new_grant_id()?,
            marketer: asked.marketer.domain.clone(),
            purpose: asked.purpose.text.clone(),
            terms,
            created_at: now,
            revoked_at: None,
            request_id: Some(asked.id.clone()),
            purpose_code: Some(asked.purpose.code.as_str().to_owned()),
            push: Core::push_to(asked),
            partners_revoked: Vec::new(),
        };
        let created = match grant.push {
            Some(_) => Some(self.created_event(&grant, Some(asked), now)?),
            None => None,
        };
        // Summed up before the grant is stored, so before anything of it can be shared.
        let would_share = self.share_summary(&grant, now).map_err(|e| tracing::warn!(error = %e, "cannot sum up what a grant shares")).ok();
        record.decision = Decision::Approved { grant_id: grant.id.clone(), at: now };
        self.store.decide_request(&record, Some(&grant), created.as_ref())?;
        self.audit_granted(&grant, now)?;
        self.store.flush()?;
        let bundle = self.bundle(&grant)?;
        let view = RequestView::of(StoredRequest { record, seal: Seal::Valid }, now);
        Ok(Response::Approved { bundle: Box::new(bundle), request: Box::new(view), would_share })
    }

    /// Denies a request that waits for a decision (an expired one too, to settle it).
    pub(super) fn deny(&self, name: &RequestName, now: OffsetDateTime) -> Result<Response, CoreError> {
        let _one = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let found = self.find_request(name)?;
        let mut record = match found.seal {
            // A damaged record is settled by denying it, like a damaged grant by revoking it.
            Seal::Valid => match &found.record.decision {
                Decision::Pending => found.record,
                decided => return Err(already(&found.record, decided)),
            },
            Seal::Missing | Seal::Invalid => found.record,
        };
        record.decision = Decision::Denied { at: now };
        self.store.put_request(&record)?;
        let event = AuditEvent::Denied { marketer: record.request.marketer.domain.clone(), request_id: record.request.id.clone() };
        self.store.append_audit(now, event)?;
        self.store.flush()?;
        let view = RequestView::of(StoredRequest { record, seal: Seal::Valid }, now);
        Ok(Response::Denied { request: Box::new(view) })
    }

    /// The request a name names: exactly one, or an error that says what to type instead.
    fn find_request(&self, name: &RequestName) -> Result<StoredRequest, CoreError> {
        let mut found: Vec<StoredRequest> = self
            .store
            .requests()?
            .into_iter()
            .filter(|s| s.record.request.id == name.id && name.marketer.as_ref().map_or(true, |m| *m == s.record.request.marketer.domain))
            .collect();
        match found.len() {
            0 => Err(CoreError::NoRequest(name.to_string())),
            1 => Ok(found.remove(0)),
            _ => {
                let names: Vec<String> = found.iter().map(|s| format!("{}/{}", s.record.request.marketer.domain, s.record.request.id)).collect();
                Err(CoreError::Invalid(format!("{} marketers ask under the id {}: name one, as {}", found.len(), name.id, names.join(" or "))))
            }
        }
    }

    /// The record of a request that can still be decided `as_what`, or why not.
    fn undecided(&self, found: StoredRequest, now: OffsetDateTime, as_what: &str) -> Result<RequestRecord, CoreError> {
        let r = &found.record.request;
        if found.seal != Seal::Valid {
            return Err(CoreError::Invalid(format!(
                "{}/{} is damaged: its record was changed behind optin's back (it fails its MAC), so it cannot be {as_what}",
                r.marketer.domain, r.id
            )));
        }
        if found.record.decision != Decision::Pending {
            return Err(already(&found.record, &found.record.decision));
        }
        if now >= r.expires_at {
            return Err(CoreError::Invalid(format!(
                "{}/{} expired at {}: it cannot be {as_what}; the marketer can ask again with a new request",
                r.marketer.domain,
                r.id,
                optin_protocol::timestamp::format(r.expires_at)
            )));
        }
        Ok(found.record)
    }

    /// What `request`'s terms, as asked, would share now: cut as the preview of a grant is
    /// ([`Core::claims`]), page after page, under a grant id that is never stored.
    fn would_share(&self, request: &Request, now: OffsetDateTime) -> Result<WouldShare, CoreError> {
        let asked = request.terms.narrow(&Choices::default()).map_err(|e| CoreError::Internal(e.to_string()))?;
        let terms = asked.terms(&request.marketer.domain, now).ok_or_else(|| CoreError::Internal("the request's duration overflows".into()))?;
        let record = GrantRecord {
            v: 1,
            id: new_grant_id()?,
            marketer: request.marketer.domain.clone(),
            purpose: request.purpose.text.clone(),
            terms,
            created_at: now,
            revoked_at: None,
            request_id: Some(request.id.clone()),
            purpose_code: Some(request.purpose.code.as_str().to_owned()),
            push: None,
            partners_revoked: Vec::new(),
        };
        self.share_summary(&record, now)
    }

    /// What a grant `record` would share now, as its marketer would receive it: cut as a
    /// preview is ([`Core::claims`]), page after page, and counted. The record need not be
    /// stored, so a grant is summed up before it exists.
    pub(super) fn share_summary(&self, record: &GrantRecord, now: OffsetDateTime) -> Result<WouldShare, CoreError> {
        let (terms, keys) = (&record.terms, self.keys.grant(&record.id).map_err(|e| CoreError::Internal(e.to_string()))?);
        let mut summary = ShareSummary::default();
        let mut cursor = None;
        loop {
            let query = SliceQuery { limit: Some(MAX_LIMIT), cursor, ..SliceQuery::default() };
            let claims = match self.claims(record, terms, &keys, &query, now) {
                Ok(claims) => claims,
                Err(Refusal::Paused) => return Ok(WouldShare::Paused),
                Err(other) => return Err(CoreError::Internal(format!("cannot preview the request: {other:?}"))),
            };
            summary.granularity = Some(claims.scope.granularity);
            summary.since = Some(claims.scope.since);
            summary.until = Some(claims.scope.until);
            for item in &claims.items {
                summary.count(item);
            }
            // An aggregate grant's preview holds exact counts (the person's own view, never
            // served): each bucket stands for that many signals.
            for bucket in claims.counts.iter().flatten() {
                summary.count_bucket(bucket);
            }
            cursor = claims.next_cursor;
            if cursor.is_none() {
                return Ok(WouldShare::Items(Box::new(summary)));
            }
        }
    }
}

fn already(record: &RequestRecord, decision: &Decision) -> CoreError {
    let r = &record.request;
    match decision {
        Decision::Approved { grant_id, .. } => CoreError::Invalid(format!("{}/{} was already approved: grant {grant_id}", r.marketer.domain, r.id)),
        Decision::Denied { .. } => CoreError::Invalid(format!("{}/{} was already denied", r.marketer.domain, r.id)),
        Decision::Pending => CoreError::Internal("a pending request taken as decided".into()),
    }
}
