//! The person's own commands: ingest, signals, forget, grant, grants, revoke, preview, bundle,
//! audit, pause and status, and consent requests (in [`super::requests`]). [`Core::handle`] runs each [`Request`] the same way whether it
//! came over the admin socket, from the native host or from the offline CLI.

use std::collections::HashMap;

use optin_protocol::bundle::{self, GrantBundle};
use optin_protocol::rate::Per;
use optin_protocol::receipt::ConsentState;
use optin_protocol::request::{limits as request_limits, Choices, HttpsUrl, NarrowError, RequestedTerms};
use optin_protocol::scope::{self, Caveat, GrantId, SliceQuery, Terms};
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::token::Token;
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use super::audit::{self, AuditCheckpoint, AuditEvent, AuditRecord};
use super::command::{
    AuditEntry, CheckpointView, CountedRefusals, GrantFilters, GrantState, GrantUsage, GrantView, PushView, RateView, Request, Response, SignalView, Status,
    AUDIT_PAGE, AUDIT_PAGE_MAX,
};
use super::marketer::Refusal;
use super::{blocking, slicer, Core, CoreError};
use crate::store::{Forget, GrantRecord, PartnerCut, PushTo, Seal, StoredGrant};

/// Bounds on what the owner types.
const MARKETER_CHARS: usize = 128;
const PURPOSE_CHARS: usize = 1000;

impl Core {
    /// Executes an owner command. Store work runs off the async workers (see
    /// [`super::blocking`]); a revoke awaits its gate.
    pub async fn handle(&self, request: Request, now: OffsetDateTime) -> Result<Response, CoreError> {
        match request {
            Request::Revoke { grant_id } => self.revoke(&grant_id, now).await,
            other => blocking(|| self.handle_sync(other, now)),
        }
    }

    fn handle_sync(&self, request: Request, now: OffsetDateTime) -> Result<Response, CoreError> {
        match request {
            Request::Ingest { ndjson, dry_run: false } => self.ingest(&ndjson),
            Request::Ingest { ndjson, dry_run: true } => self.ingest_dry_run(&ndjson),
            Request::ExtensionSignals { signals } => self.ingest_extension(&signals, now),
            Request::Signals { kind } => Ok(Response::Signals { signals: self.list_signals(kind, now)? }),
            Request::Forget { what } => Ok(Response::Forgot { count: self.forget(what, now)? }),
            Request::Exclude { entry } => self.exclude(&entry),
            Request::Include { entry } => self.include(&entry),
            Request::NeverShare => self.exclusions(),
            Request::Grant { marketer, kinds, granularity, window, expires, purpose, push, filters, noise } => {
                let marketer = bounded("marketer", &marketer, MARKETER_CHARS)?;
                let purpose = bounded("purpose", &purpose, PURPOSE_CHARS)?;
                let push = push.map(checked_push).transpose()?;
                let terms = owner_terms(&marketer, kinds, granularity, window, expires, filters, now)?;
                let terms = Terms { noise: noise.decide(terms.granularity, push.is_some())?, ..terms };
                let record = GrantRecord {
                    v: 1,
                    id: new_grant_id()?,
                    terms,
                    marketer,
                    purpose,
                    created_at: now,
                    revoked_at: None,
                    request_id: None,
                    purpose_code: None,
                    push,
                    partners_revoked: Vec::new(),
                };
                let created = match record.push {
                    Some(_) => Some(self.created_event(&record, None, now)?),
                    None => None,
                };
                // Summed up before the grant is stored, so before anything of it can be shared.
                let would_share = self.share_summary(&record, now).map_err(|e| tracing::warn!(error = %e, "cannot sum up what a grant shares")).ok();
                self.store.put_grant_pushing(&record, created.as_ref())?;
                self.audit_granted(&record, now)?;
                self.store.flush()?;
                Ok(Response::Granted { bundle: Box::new(self.bundle(&record)?), would_share })
            }
            Request::Grants => {
                let mut usage = self.usage()?;
                let mut grants = Vec::new();
                for stored in self.store.grants()? {
                    let push = self.push_view(&stored.record)?;
                    let mut used = usage.remove(&stored.record.id).unwrap_or_default();
                    for cut in &stored.record.partners_revoked {
                        used.partner(cut).revoked = true;
                    }
                    grants.push(GrantView { push, usage: used, ..view_stored(stored, now) });
                }
                for g in &mut grants {
                    g.budget = self.budget_view(&g.grant_id, &g.terms)?;
                    g.rate = self.rate_view(&g.grant_id, &g.terms, now)?;
                }
                Ok(Response::Grants { grants })
            }
            Request::Revoke { .. } => Err(CoreError::Internal("revoke runs in `handle`".into())),
            Request::RevokePartner { grant_id, audience } => self.revoke_partner(&grant_id, &audience, now),
            Request::Preview { grant_id, limit, cursor } => {
                let record = self.intact_grant(&grant_id)?;
                // A preview shows what the marketer would receive now; for a revoked grant
                // that is nothing, whatever the store still holds.
                if record.revoked_at.is_some() {
                    return Err(CoreError::Invalid(format!("{grant_id} is revoked: it serves nothing")));
                }
                let keys = self.keys.grant(&grant_id).map_err(|e| CoreError::Internal(e.to_string()))?;
                if limit.is_some_and(|n| !(1..=scope::MAX_LIMIT).contains(&n)) {
                    return Err(CoreError::Invalid(format!("limit: a page holds 1 to {} items", scope::MAX_LIMIT)));
                }
                let query = SliceQuery { limit, cursor, ..SliceQuery::default() };
                let claims = self.claims(&record, &record.terms, &keys, &query, now).map_err(|r| match r {
                    Refusal::Exceeds { reason, .. } | Refusal::Invalid { reason, .. } => CoreError::Invalid(reason),
                    Refusal::Token(reason) => CoreError::Invalid(format!("the grant serves nothing: {reason}")),
                    Refusal::Paused => CoreError::Invalid("sharing is paused: the grant serves nothing until `optin resume`".into()),
                    // A preview takes no pass, so it is never turned away for want of one.
                    Refusal::Busy => CoreError::Internal("a preview found the grant busy".into()),
                    // A preview counts against no rate.
                    Refusal::RateLimited { .. } => CoreError::Internal("a preview found the grant rate-limited".into()),
                    // A preview counts exactly and spends nothing.
                    Refusal::BudgetExhausted => CoreError::Internal("a preview spent a budget".into()),
                    Refusal::Internal(e) => CoreError::Internal(e),
                })?;
                Ok(Response::Preview { claims: Box::new(claims) })
            }
            Request::Bundle { grant_id } => {
                let record = self.intact_grant(&grant_id)?;
                match view(record.clone(), now).state {
                    GrantState::Active => Ok(Response::Bundle { bundle: Box::new(self.bundle(&record)?) }),
                    GrantState::Revoked => Err(CoreError::Invalid(format!("{grant_id} is revoked: its bundle serves nothing"))),
                    GrantState::Expired => Err(CoreError::Invalid(format!("{grant_id} has expired: its bundle serves nothing"))),
                    GrantState::Damaged => Err(CoreError::Invalid(format!("{grant_id} is damaged: its bundle serves nothing"))),
                }
            }
            Request::Receipt { grant_id } => {
                // A damaged grant's record cannot be vouched for, and neither can a receipt
                // made of it.
                let record = self.intact_grant(&grant_id)?;
                let (jws, receipt) = self.receipt(&record, now)?;
                Ok(Response::Receipt { jws, receipt: Box::new(receipt) })
            }
            Request::Audit { since_seq, limit } => self.audit_page(since_seq, limit),
            Request::Sharing { paused } => {
                self.store.set_paused(paused)?;
                self.store.append_audit(now, AuditEvent::Sharing { paused })?;
                self.store.flush()?;
                Ok(Response::Sharing { paused })
            }
            Request::Status => Ok(Response::Status(Box::new(self.status(now)?))),
            Request::AddConsentRequest { jws, fetched_from } => self.add_request(&jws, fetched_from.as_deref(), now),
            Request::ConsentRequests => self.list_requests(now),
            Request::ConsentRequest { name } => self.show_request(&name, now),
            Request::Approve { name, choices } => self.approve(&name, choices, now),
            Request::Deny { name } => self.deny(&name, now),
        }
    }

    /// A page of the audit log, verified: each answer stays small however long the log, and
    /// the reader asks for the next until none follows.
    fn audit_page(&self, since_seq: u64, limit: Option<usize>) -> Result<Response, CoreError> {
        let limit = limit.unwrap_or(AUDIT_PAGE);
        if !(1..=AUDIT_PAGE_MAX).contains(&limit) {
            return Err(CoreError::Invalid(format!("limit: an audit page holds 1 to {AUDIT_PAGE_MAX} records")));
        }
        let page = self.store.audit_page(since_seq, limit)?;
        let counts = self.store.refusal_counts()?;
        let chain = audit::verify_page(since_seq, &page, &counts).map_err(|e| e.to_string());
        let checkpoint = page.checkpoint.map(|(checkpoint, seal)| Box::new(CheckpointView { checkpoint, intact: seal == Seal::Valid }));
        Ok(Response::Audit {
            checkpoint,
            records: page.records.into_iter().map(|r| AuditEntry { record: r.record, hash: optin_protocol::hex(&r.hash) }).collect(),
            chain,
            next: page.next,
            counted: counts.into_iter().map(|(count, seal)| CountedRefusals { count, intact: seal == Seal::Valid }).collect(),
            anonymous_refusals: self.anonymous_refusals(),
        })
    }

    fn list_signals(&self, kind: Option<Kind>, now: OffsetDateTime) -> Result<Vec<SignalView>, CoreError> {
        let mut out = Vec::new();
        for signal in self.store.all_signals(kind) {
            let signal = signal?;
            let state = slicer::cart_state(&self.store, &signal, self.config.abandon_after, now)?;
            out.push(SignalView { signal, state });
        }
        Ok(out)
    }

    fn forget(&self, what: Forget, now: OffsetDateTime) -> Result<usize, CoreError> {
        let label = match &what {
            // The id is the person's own handle on the signal, and the log is theirs.
            Forget::Id(id) => format!("id={id}"),
            Forget::Kind(k) => format!("kind={k}"),
            Forget::Before(t) => format!("before={}", optin_protocol::timestamp::format(*t)),
            Forget::All => "all".to_owned(),
        };
        let count = self.store.forget(&what)?;
        self.repeats.clear();
        if let (Forget::Id(id), 0) = (&what, count) {
            // Like revoking an unknown grant: the person typed an id that names nothing, and
            // saying "forgot 0 signals" would hide the typo.
            return Err(CoreError::NoSignal(id.chars().take(64).collect()));
        }
        self.store.append_audit(now, AuditEvent::Forgot { count, what: label })?;
        self.store.flush()?;
        Ok(count)
    }

    async fn revoke(&self, id: &GrantId, now: OffsetDateTime) -> Result<Response, CoreError> {
        let already = blocking(|| -> Result<bool, CoreError> {
            // A grant that fails its MAC serves nothing already; revoking it stores it revoked
            // and MACed, which is how the person settles it.
            let found = self.store.grant_as_found(id)?.ok_or_else(|| CoreError::NoGrant(id.clone()))?;
            let mut record = found.record;
            if record.revoked_at.is_some() && found.seal == Seal::Valid {
                return Ok(true);
            }
            record.revoked_at = Some(now);
            // Its queued events dropped and its `grant.revoked` queued with the revocation:
            // nothing queued before is sent once this returns. A damaged grant pushes nothing.
            let end = match found.seal {
                Seal::Valid => self.ended_event(&record, ConsentState::Withdrawn, now)?,
                Seal::Missing | Seal::Invalid => None,
            };
            self.store.revoke_grant(&record, end.as_ref())?;
            self.store.append_audit(now, AuditEvent::Revoked { grant_id: id.clone(), marketer: record.marketer.clone() })?;
            self.store.flush()?;
            Ok(false)
        })?;
        // Stored first, then the gate: a request that starts now reads the revocation from
        // the store, and one already past that check is waited for or cut off.
        self.gates.close(id).await;
        self.repeats.forget_grant(id);
        Ok(Response::Revoked { grant_id: id.clone(), already })
    }

    /// Cuts one partner of a grant off. Stored (and flushed) before the answer, and read by
    /// every token admission inside the grant's gate, so a request of the partner that
    /// starts after this returns is refused.
    fn revoke_partner(&self, id: &GrantId, audience: &str, now: OffsetDateTime) -> Result<Response, CoreError> {
        let audience = match format!("aud={audience}").parse::<Caveat>() {
            Ok(Caveat::Audience(a)) => a,
            _ => {
                return Err(CoreError::Invalid(
                    "partner: a partner is named as its tokens' aud caveat names it, a lowercase host name like partner.example".into(),
                ))
            }
        };
        // A grant's marketer never changes, so it is checked before anything is stored: a
        // marketer is never its own partner.
        let found = self.store.grant_as_found(id)?.ok_or_else(|| CoreError::NoGrant(id.clone()))?;
        if audience == found.record.marketer {
            return Err(CoreError::Invalid(format!("{audience} is the grant's marketer, not a partner: `optin revoke {id}` revokes the whole grant")));
        }
        let (record, already) = match self.store.revoke_partner(id, &audience)? {
            PartnerCut::Cut(record) => (record, false),
            PartnerCut::Already(record) => (record, true),
            PartnerCut::NoGrant => return Err(CoreError::NoGrant(id.clone())),
            PartnerCut::GrantRevoked => return Err(CoreError::Invalid(format!("{id} is revoked: it serves no partner already"))),
            PartnerCut::Damaged => {
                return Err(CoreError::Invalid(format!(
                    "{id} is damaged: its record was changed behind optin's back (it fails its MAC), so it serves no one; `optin revoke {id}` settles it"
                )))
            }
        };
        if !already {
            self.store.append_audit(now, AuditEvent::PartnerRevoked { grant_id: id.clone(), marketer: record.marketer.clone(), audience: audience.clone() })?;
            self.store.flush()?;
        }
        Ok(Response::PartnerRevoked { grant_id: id.clone(), audience, already })
    }

    fn status(&self, now: OffsetDateTime) -> Result<Status, CoreError> {
        let day_ago = now - time::Duration::DAY;
        let mut served_last_24h = 0;
        for record in self.store.audit_newest_first() {
            let record = record?;
            if record.at < day_ago {
                break;
            }
            served_last_24h += usize::from(matches!(record.event, AuditEvent::Served { .. }));
        }
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").into(),
            agent_url: self.config.agent_url.clone(),
            paused: self.store.paused()?,
            signals: self.store.signal_counts()?.into_iter().collect(),
            active_grants: self.store.grants()?.into_iter().filter(|g| view_stored(g.clone(), now).state == GrantState::Active).count(),
            served_last_24h,
        })
    }

    /// What each grant has served, from the `served` records of the audit log, the person's
    /// own account of every slice: what the checkpoint counts of the records pruned, and the
    /// records kept. Counted once per agent run and then taken up from the last record
    /// counted, so `optin grants` reads only what was appended since it last asked; counted
    /// again from the checkpoint when pruning went past that record. A checkpoint that fails
    /// its MAC counts nothing here (`optin audit --verify` names it).
    fn usage(&self) -> Result<HashMap<GrantId, GrantUsage>, CoreError> {
        // A poisoned lock guards a count another thread left half made: count again.
        let mut cached = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let mut counted = cached.take().unwrap_or_default();
        let served = |record: AuditRecord| match record.event {
            AuditEvent::Served { grant_id, audience, items, .. } => Some((grant_id, audience, items, record.at)),
            _ => None,
        };
        let mut read = self.store.audit_after(counted.through, served)?;
        let pruned = read.checkpoint.as_ref().map_or(0, |(c, _)| c.seq);
        if counted.through == 0 || pruned > counted.through {
            if counted.through != 0 {
                read = self.store.audit_after(0, served)?;
            }
            counted = Usage::default();
            if let Some((checkpoint, Seal::Valid)) = &read.checkpoint {
                counted.pruned(checkpoint);
            }
        }
        for (grant_id, audience, items, at) in read.kept {
            counted.grants.entry(grant_id).or_default().count(audience.as_deref(), items, at);
        }
        counted.through = read.last;
        let grants = counted.grants.clone();
        *cached = Some(counted);
        Ok(grants)
    }

    /// How a push grant's deliveries go; `None` for a grant that does not push.
    fn push_view(&self, record: &GrantRecord) -> Result<Option<PushView>, CoreError> {
        let Some(push) = &record.push else { return Ok(None) };
        let state = self.store.push_state(&record.id)?;
        Ok(Some(PushView {
            inbox: push.inbox.clone(),
            every: push.every,
            last: state.last,
            queued: self.store.queued_pushes(&record.id)?.len(),
            gone_at: state.gone_at,
        }))
    }

    /// A grant that carries its MAC; one that does not is named as damaged.
    fn intact_grant(&self, id: &GrantId) -> Result<GrantRecord, CoreError> {
        let found = self.store.grant_as_found(id)?.ok_or_else(|| CoreError::NoGrant(id.clone()))?;
        match found.seal {
            Seal::Valid => Ok(found.record),
            Seal::Missing | Seal::Invalid => Err(CoreError::Invalid(format!(
                "{id} is damaged: its record was changed behind optin's back (it fails its MAC), so it serves nothing; `optin revoke {id}` settles it"
            ))),
        }
    }

    /// Records a grant as agreed: its purpose and terms as they are now, whatever the grant
    /// record says later, and the request it was approved from, if any.
    pub(super) fn audit_granted(&self, record: &GrantRecord, now: OffsetDateTime) -> Result<(), CoreError> {
        let event = AuditEvent::Granted {
            grant_id: record.id.clone(),
            marketer: record.marketer.clone(),
            purpose: Some(record.purpose.clone()),
            terms: Some(record.terms.clone()),
            request_id: record.request_id.clone(),
            purpose_code: record.purpose_code.clone(),
        };
        self.store.append_audit(now, event)?;
        Ok(())
    }

    /// The bundle of a grant: what its marketer needs to fetch and verify slices.
    pub(super) fn bundle(&self, record: &GrantRecord) -> Result<GrantBundle, CoreError> {
        let keys = self.keys.grant(&record.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(GrantBundle {
            version: bundle::VERSION,
            grant_id: record.id.clone(),
            marketer: record.marketer.clone(),
            purpose: record.purpose.clone(),
            issuer: keys.issuer(),
            // A pushed grant's bundle names no address: see `GrantBundle::agent_url`.
            agent_url: record.push.is_none().then(|| self.config.agent_url.clone()),
            cert_sha256: record.push.is_none().then(|| self.config.cert_sha256.clone()),
            jwk: keys.jwk(),
            token: Token::mint(&keys.token_secret, &record.id).encode(),
            terms: record.terms.clone(),
            // A pushed grant's `grant.created` carries the receipt beside its bundle, once.
            // A receipt that cannot be made (its request no longer stored intact) leaves the
            // bundle without one, which readers take as a bundle of an older agent.
            receipt: match record.push {
                None => match self.given_receipt(record) {
                    Ok(receipt) => Some(receipt.sign(&keys.signing)),
                    Err(e) => {
                        tracing::warn!(grant = %record.id, error = %e, "a bundle without its receipt");
                        None
                    }
                },
                Some(_) => None,
            },
        })
    }
}

/// A new grant id: 96 random bits.
pub(super) fn new_grant_id() -> Result<GrantId, CoreError> {
    let mut id = [0u8; 12];
    SystemRandom::new().fill(&mut id).map_err(|_| CoreError::Internal("no randomness".into()))?;
    Ok(GrantId::from_bytes(id))
}

/// Where a grant made unasked pushes, held to the rules a request's delivery is: an `https`
/// inbox with a host name, and a slice at most once an hour.
fn checked_push(push: PushTo) -> Result<PushTo, CoreError> {
    let inbox = HttpsUrl::parse(&push.inbox).map_err(|e| CoreError::Invalid(format!("push: {e}")))?;
    if push.every.seconds() < request_limits::MIN_EVERY_SECONDS {
        return Err(CoreError::Invalid("push-every: a slice is pushed at most once an hour (1h or more)".into()));
    }
    Ok(PushTo { inbox: inbox.as_str().to_owned(), every: push.every })
}

fn bounded(field: &str, text: &str, max: usize) -> Result<String, CoreError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(optin_protocol::is_hidden_or_control) {
        return Err(CoreError::Invalid(format!("{field} must be 1 to {max} printable characters")));
    }
    Ok(text.to_owned())
}

impl Core {
    /// What `optin grants` shows of a grant's rate: the slices served in its current period.
    fn rate_view(&self, grant: &GrantId, terms: &Terms, now: OffsetDateTime) -> Result<Option<RateView>, CoreError> {
        let Some(rate) = terms.rate else { return Ok(None) };
        let (hour, day) = self.store.slices_used(grant, now.unix_timestamp())?;
        let used = match rate.per {
            Per::Hour => hour,
            Per::Day => day,
        };
        Ok(Some(RateView { rate, used }))
    }
}

/// A stored grant as the owner sees it: one that fails its MAC is damaged, whatever it says.
fn view_stored(g: StoredGrant, now: OffsetDateTime) -> GrantView {
    let damaged = g.seal != Seal::Valid;
    let mut view = view(g.record, now);
    if damaged {
        view.state = GrantState::Damaged;
    }
    view
}

fn view(g: GrantRecord, now: OffsetDateTime) -> GrantView {
    let state = if g.revoked_at.is_some() {
        GrantState::Revoked
    } else if now >= g.terms.expires_at {
        GrantState::Expired
    } else {
        GrantState::Active
    };
    GrantView {
        grant_id: g.id,
        marketer: g.marketer,
        purpose: g.purpose,
        terms: g.terms,
        created_at: g.created_at,
        state,
        revoked_at: g.revoked_at,
        request_id: g.request_id,
        push: None,
        usage: GrantUsage::default(),
        partners_revoked: g.partners_revoked,
        budget: None,
        rate: None,
    }
}

/// The terms of a grant the owner makes. Its filters, fields and rate are checked and
/// applied as the choices of an approval are, narrowing an open request for the same kinds,
/// granularity, window and lifetime: one set of rules for both ways of granting. The expiry is
/// rounded up to a UTC midnight, so that it does not tell marketers comparing bundles which
/// grants were made in the same second.
fn owner_terms(
    marketer: &str,
    kinds: Kinds,
    granularity: scope::Granularity,
    window: optin_protocol::span::Span,
    expires: optin_protocol::span::Span,
    filters: GrantFilters,
    now: OffsetDateTime,
) -> Result<Terms, CoreError> {
    let open = RequestedTerms { kinds, granularity, window, duration: expires, categories: None, merchants: None, fields: None, rate: None };
    let choices = Choices { categories: filters.categories, merchants: filters.merchants, fields: filters.fields, rate: filters.rate, ..Choices::default() };
    let approved = open.narrow(&choices).map_err(|e| match e {
        NarrowError::Invalid { term, reason } => CoreError::Invalid(format!("{term}: {reason}")),
        other => CoreError::Invalid(other.to_string()),
    })?;
    approved.terms(marketer, now).ok_or_else(|| CoreError::Invalid("expires: too far in the future".into()))
}

/// What each grant has served, counted up to an audit record ([`Core::usage`]).
#[derive(Debug, Default)]
pub(super) struct Usage {
    /// The last record counted; 0 before any.
    through: u64,
    grants: HashMap<GrantId, GrantUsage>,
}

impl Usage {
    /// Counts what a checkpoint says its pruned records served.
    fn pruned(&mut self, checkpoint: &AuditCheckpoint) {
        let wide = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        for g in &checkpoint.grants {
            let used = self.grants.entry(g.grant_id.clone()).or_default();
            (used.slices, used.items) = (used.slices + wide(g.slices), used.items + wide(g.items));
            used.last_used = used.last_used.max(g.last_served);
            for p in &g.partners {
                let partner = used.partner(&p.audience);
                (partner.slices, partner.items) = (partner.slices + wide(p.slices), partner.items + wide(p.items));
                partner.last_used = partner.last_used.max(p.last_served);
            }
        }
    }
}
