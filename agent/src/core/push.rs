//! Push delivery, all but the network (SPEC.md, "Push events"): which events a push grant
//! makes and when, how each is signed, and what each answer of the inbox does to the queue.
//! The sender that posts them lives outside the core ([`crate::push`]), since the core knows
//! no network.
//!
//! A grant's events are made when what they announce happens, in the same transaction
//! (`grant.created` with the approval, `grant.revoked` with the revocation), or when the
//! schedule says so (a slice every `every`, `grant.expired` once the grant ends). Each is
//! queued as the bytes that will be sent, so every attempt sends the same event under the
//! same `webhook-id`. Before each attempt the sender takes a pass of the grant's gate, as a
//! slice served over HTTPS does, and the grant and the event are read again inside it: once
//! `revoke` returns, nothing the grant queued before is sent, and an attempt under way was
//! waited for or cut off.

use optin_protocol::push::{Data, Event};
use optin_protocol::receipt::{Basis, ConsentState, Receipt};
use optin_protocol::request::{Delivery, Request};
use optin_protocol::scope::{SliceQuery, MAX_LIMIT};
use optin_protocol::slice::SliceClaims;
use optin_protocol::webhook::{self, Headers, WebhookId};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use super::gate::{self, Carrier, Pass};
use super::marketer::{slice_claims, Refusal};
use super::{slicer, Core, CoreError};
use crate::keys::GrantKeys;
use crate::store::{AuditEvent, Decision, GrantRecord, LastPush, PendingPush, PushTo, Seal, MAX_QUEUED};

/// The first retry waits this long; each next one twice as long as the one before.
pub const FIRST_RETRY: Duration = Duration::seconds(30);

/// The longest wait between two attempts.
pub const LONGEST_RETRY: Duration = Duration::hours(1);

/// Attempts after which an event is given up on: at the longest wait, about four days.
pub const MAX_ATTEMPTS: u32 = 100;

/// How an attempt went, as the sender saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The inbox answered 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// It may pass: try again later.
    Later {
        /// The status, when one came back.
        status: Option<u16>,
        /// The wait the inbox asked for.
        retry_after: Option<std::time::Duration>,
    },
    /// Sending the same again would fail the same way.
    Never {
        /// The status, when one came back.
        status: Option<u16>,
    },
    /// `410 Gone`: the inbox takes nothing more of this grant.
    Gone,
}

/// An event ready to post, with the pass of its grant held until the attempt is settled.
pub struct PushSend {
    /// Where to.
    pub inbox: String,
    /// The Standard Webhooks headers.
    pub headers: Headers,
    /// The event.
    pub body: Vec<u8>,
    /// The grant's pass; `None` for the event that ends a grant, the one sent after it stops.
    pass: Option<Pass>,
}

impl PushSend {
    /// Whether the grant was revoked since the pass was taken.
    pub fn revoked(&self) -> bool {
        self.pass.as_ref().is_some_and(Pass::revoked)
    }
}

impl Core {
    /// Where a grant approved from `request` pushes, when it does.
    pub(super) fn push_to(request: &Request) -> Option<PushTo> {
        match &request.delivery {
            Delivery::Push { inbox, every } => Some(PushTo { inbox: inbox.to_string(), every: *every }),
            Delivery::Pull => None,
        }
    }

    /// The `grant.created` of a push grant just approved from `request`, or made unasked
    /// (`None`): its bundle and its receipt, signed with the grant's key.
    pub(super) fn created_event(&self, grant: &GrantRecord, request: Option<&Request>, now: OffsetDateTime) -> Result<PendingPush, CoreError> {
        let keys = self.keys.grant(&grant.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        let receipt = given(grant, request, &keys).sign(&keys.signing);
        let event = Event { timestamp: now, data: Data::GrantCreated { bundle: Box::new(self.bundle(grant)?), receipt } };
        Ok(pending(grant, &event, now, None))
    }

    /// The event that ends a push grant (`grant.revoked` or `grant.expired`): its receipt with
    /// the consent ended. `None` for a grant that does not push, whose inbox said it is gone,
    /// or whose request is no longer stored to make the receipt of. A grant made unasked has
    /// no request, and its receipt says so.
    pub(super) fn ended_event(&self, grant: &GrantRecord, state: ConsentState, now: OffsetDateTime) -> Result<Option<PendingPush>, CoreError> {
        if grant.push.is_none() || self.store.push_state(&grant.id)?.gone_at.is_some() {
            return Ok(None);
        }
        let request = match &grant.request_id {
            None => None,
            Some(_) => match self.request_of(grant)? {
                Some(request) => Some(request),
                None => {
                    tracing::error!(grant = %grant.id, "a push grant's request is not stored: its end cannot be pushed");
                    return Ok(None);
                }
            },
        };
        let keys = self.keys.grant(&grant.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        // Ended on the day the grant reached its end, not the day an agent noticed, so the
        // inbox holds the same receipt as `optin receipt` shows (`core/receipt.rs`).
        let on = if state == ConsentState::Expired { grant.terms.expires_at } else { now };
        let receipt = given(grant, request.as_ref(), &keys).ended(state, on).sign(&keys.signing);
        let data = match state {
            ConsentState::Expired => Data::GrantExpired { grant_id: grant.id.clone(), receipt },
            _ => Data::GrantRevoked { grant_id: grant.id.clone(), receipt },
        };
        Ok(Some(pending(grant, &Event { timestamp: now, data }, now, None)))
    }

    /// The request a grant was approved from, as stored.
    pub(super) fn request_of(&self, grant: &GrantRecord) -> Result<Option<Request>, CoreError> {
        let found = self
            .store
            .requests()?
            .into_iter()
            .find(|s| s.seal == Seal::Valid && matches!(&s.record.decision, Decision::Approved { grant_id, .. } if *grant_id == grant.id));
        Ok(found.map(|s| s.record.request))
    }

    /// Queues what the schedule makes due at `now`: for every push grant in force, a slice
    /// of the signals since the inbox last took one, every `every` (none when there is
    /// nothing new, one still waits, or the grant's `grant.created` does); for a grant that reached its end, `grant.expired`.
    pub fn push_schedule(&self, now: OffsetDateTime) -> Result<(), CoreError> {
        for stored in self.store.grants()? {
            if stored.seal != Seal::Valid || stored.record.revoked_at.is_some() {
                continue;
            }
            // One grant's failure is logged and leaves the others on schedule.
            if let Err(e) = self.schedule(&stored.record, now) {
                tracing::error!(grant = %stored.record.id, error = %e, "cannot run a push grant's schedule");
            }
        }
        Ok(())
    }

    fn schedule(&self, grant: &GrantRecord, now: OffsetDateTime) -> Result<(), CoreError> {
        let Some(push) = &grant.push else { return Ok(()) };
        let state = self.store.push_state(&grant.id)?;
        if state.gone_at.is_some() || state.ended {
            return Ok(());
        }
        if now >= grant.terms.expires_at {
            match self.ended_event(grant, ConsentState::Expired, now)? {
                Some(end) => self.store.queue_push(&end, |s| s.ended = true)?,
                // Settled all the same, so a grant whose end cannot be pushed is not looked at
                // again every round.
                None => self.store.queue_push_state(&grant.id, |s| s.ended = true)?,
            }
            return Ok(());
        }
        if state.next_slice_at.is_some_and(|at| at > now) {
            return Ok(());
        }
        // A slice waits while one is queued (the next would cover the same signals), while
        // the grant's `grant.created` is (without the bundle, the marketer could not verify
        // it), and while the queue is full: it stays due, and is cut once there is room, so
        // no slice is signed and recorded as served that could not be queued.
        let waiting = self.store.queued_pushes(&grant.id)?.iter().any(|e| matches!(e.kind.as_str(), "slice.delivered" | "grant.created"));
        if waiting || self.store.push_queue_len() >= MAX_QUEUED {
            return Ok(());
        }
        let next = now + push.every.duration();
        match self.pushed_slice(grant, state.acked_through, now)? {
            // A full page with more behind it: the next is cut as soon as the inbox takes
            // this one, not a period later.
            Cut::Slice { item, more: true } => self.store.queue_push(&item, |_| {})?,
            Cut::Slice { item, more: false } => self.store.queue_push(&item, |s| s.next_slice_at = Some(next))?,
            // Only signals the grant never takes arrived: the watermark passes them.
            Cut::Nothing { through: Some(through) } => self.store.queue_push_state(&grant.id, |s| {
                s.acked_through = Some(through);
                s.next_slice_at = Some(next);
            })?,
            Cut::Nothing { through: None } => self.store.queue_push_state(&grant.id, |s| s.next_slice_at = Some(next))?,
            // The signals wait, watermark and all, for the period that allows the next slice.
            Cut::Limited { until } => self.store.queue_push_state(&grant.id, |s| s.next_slice_at = Some(until))?,
        }
        Ok(())
    }

    /// A slice of `grant`'s signals that arrived after the number `after`, signed and
    /// recorded as served, as a queued `slice.delivered`; nothing when none of them goes in
    /// a slice now or sharing is paused.
    fn pushed_slice(&self, grant: &GrantRecord, after: Option<u64>, now: OffsetDateTime) -> Result<Cut, CoreError> {
        let keys = self.keys.grant(&grant.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        let query = SliceQuery { limit: Some(MAX_LIMIT), ..SliceQuery::default() };
        let applied = match self.applied(&grant.terms, &query, now) {
            Ok(applied) => applied,
            Err(Refusal::Paused) => return Ok(Cut::Nothing { through: None }),
            Err(refusal) => return Err(CoreError::Internal(format!("cannot cut a pushed slice: {}", refusal.status()))),
        };
        let page = slicer::cut_arrived(&self.store, &applied, after, &keys, self.config.abandon_after, now)?;
        if page.items.is_empty() {
            return Ok(Cut::Nothing { through: page.through });
        }
        // A pushed slice counts against the grant's rate as a pulled one does, so a push
        // grant is sent no more slices per hour or day than its rate, pages included.
        match self.take_rate(&grant.id, &grant.terms, now) {
            Ok(()) => {}
            Err(Refusal::RateLimited { retry_after }) => {
                return Ok(Cut::Limited { until: now + time::Duration::seconds(i64::try_from(retry_after).unwrap_or(i64::MAX)) })
            }
            Err(refusal) => return Err(CoreError::Internal(format!("cannot count a pushed slice: {}", refusal.status()))),
        }
        let more = page.more;
        let claims = slice_claims(grant, &grant.terms, &keys, applied, page.items, None, now)
            .map_err(|refusal| CoreError::Internal(format!("cannot cut a pushed slice: {}", refusal.status())))?;
        let signed = self.store.append_audit_with(now, |seq| {
            let claims = SliceClaims { audit_seq: Some(seq), ..claims };
            let payload = serde_json::to_vec(&claims).map_err(|e| CoreError::Internal(e.to_string()))?;
            let jws = optin_protocol::jws::sign(&keys.signing, &payload);
            let event = AuditEvent::Served {
                grant_id: grant.id.clone(),
                marketer: grant.marketer.clone(),
                audience: None,
                asked: "push".into(),
                items: claims.items.len(),
                slice_id: claims.jti.clone(),
                jws_sha256: optin_protocol::hex(&optin_protocol::sha256(jws.as_bytes())),
                repeat_of: None,
            };
            Ok::<_, CoreError>((event, (jws, claims.jti)))
        });
        let (_, (jws, jti)) = signed??;
        let jti = WebhookId::parse(&jti).ok_or_else(|| CoreError::Internal("a slice id is not a webhook id".into()))?;
        let event = Event { timestamp: now, data: Data::SliceDelivered { grant_id: grant.id.clone(), jti, slice: jws } };
        Ok(Cut::Slice { item: pending(grant, &event, now, page.through), more })
    }

    /// Events due at `now`, the earliest first.
    pub fn push_due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<PendingPush>, CoreError> {
        Ok(self.store.due_pushes(now, limit)?)
    }

    /// Makes `item` ready to post at `now`, or says why not (`None`): its grant stopped, so
    /// it was dropped; or its grant's gate is full, so it waits. The pass is taken on
    /// `carrier`, which a revocation cuts: the sender stops posting when it is.
    pub async fn push_admit(&self, item: &PendingPush, carrier: &Carrier, now: OffsetDateTime) -> Result<Option<PushSend>, CoreError> {
        let pass = if item.ends_grant() {
            None
        } else {
            match self.gates.enter(&item.grant_id, Some(carrier)) {
                Ok(pass) => Some(pass),
                Err(gate::Closed::Full) => return Ok(None),
                Err(gate::Closed::Revoked) => {
                    self.push_drop(item, now)?;
                    return Ok(None);
                }
            }
        };
        // Read again inside the gate: a revocation stores itself before it closes the gate,
        // so either it is seen here or it waits for this pass.
        let grant = self.store.grant(&item.grant_id)?;
        let in_force = grant.as_ref().is_some_and(|g| g.revoked_at.is_none() && now < g.terms.expires_at);
        let Some(push) = grant.as_ref().and_then(|g| g.push.clone()) else {
            self.push_drop(item, now)?;
            return Ok(None);
        };
        if !item.ends_grant() && !in_force {
            self.push_drop(item, now)?;
            return Ok(None);
        }
        if !self.store.queued_pushes(&item.grant_id)?.iter().any(|e| e.event_id == item.event_id) {
            return Ok(None);
        }
        let keys = self.keys.grant(&item.grant_id).map_err(|e| CoreError::Internal(e.to_string()))?;
        let id = WebhookId::parse(&item.event_id).ok_or_else(|| CoreError::Internal("a queued event id is not a webhook id".into()))?;
        let headers = webhook::sign(&keys.signing, &id, now, item.body.as_bytes());
        Ok(Some(PushSend { inbox: push.inbox, headers, body: item.body.clone().into_bytes(), pass }))
    }

    /// Settles an attempt of `item`: delivered, it leaves the queue (a slice moves the
    /// grant's watermark); failed for now, it is tried again after a backoff; failed for good,
    /// it is dropped; gone, every event of the grant is and its pushes stop. The first
    /// failure and the outcome are audited, not every retry.
    pub fn push_settle(&self, item: &PendingPush, outcome: PushOutcome, now: OffsetDateTime) -> Result<(), CoreError> {
        let attempts = item.attempts.saturating_add(1);
        let (word, status) = match outcome {
            PushOutcome::Delivered { status } => ("delivered", Some(status)),
            PushOutcome::Later { status, .. } if attempts < MAX_ATTEMPTS => ("retrying", status),
            PushOutcome::Later { status, .. } | PushOutcome::Never { status } => ("failed", status),
            PushOutcome::Gone => ("gone", Some(410)),
        };
        let next = match outcome {
            PushOutcome::Later { retry_after, .. } if word == "retrying" => {
                Some(PendingPush { attempts, next_at: now + backoff(attempts, retry_after), ..item.clone() })
            }
            _ => None,
        };
        let last = LastPush { at: now, kind: item.kind.clone(), outcome: word.into(), status };
        // An inbox that will never take the grant could verify none of its slices: pushing
        // them would only hand the person's signals, period after period, to an inbox that
        // refuses them. The grant stops as after a 410.
        let refused = word == "failed" && item.kind == "grant.created";
        let gone = outcome == PushOutcome::Gone || refused;
        let acked = matches!(outcome, PushOutcome::Delivered { .. }).then_some(item.through).flatten();
        let settled = self.store.settle_push(item, next.as_ref(), gone, |s| {
            s.last = Some(last.clone());
            if gone {
                s.gone_at = Some(now);
            }
            if let Some(through) = acked {
                s.acked_through = Some(through);
            }
        })?;
        if settled && (word != "retrying" || attempts == 1) {
            self.push_audit(item, word, status, attempts, now)?;
        }
        if gone {
            tracing::warn!(grant = %item.grant_id, status, "the inbox will not take the grant: its pushes stop");
        }
        // An inbox that answers a slice 404 does not know the grant: it lost its state, or was
        // restored from before the grant. It is sent the grant again, and the slice's signals,
        // whose watermark did not move, go in the next slice after it.
        if settled && item.kind == "slice.delivered" && outcome == (PushOutcome::Never { status: Some(404) }) {
            self.push_grant_again(&item.grant_id, now)?;
        }
        Ok(())
    }

    /// Queues a grant's `grant.created` again, unless the grant stopped or one already waits.
    fn push_grant_again(&self, grant_id: &optin_protocol::scope::GrantId, now: OffsetDateTime) -> Result<(), CoreError> {
        let Some(grant) = self.store.grant(grant_id)? else { return Ok(()) };
        let state = self.store.push_state(grant_id)?;
        if grant.revoked_at.is_some() || now >= grant.terms.expires_at || state.gone_at.is_some() || state.ended {
            return Ok(());
        }
        if self.store.queued_pushes(grant_id)?.iter().any(|e| e.kind == "grant.created") {
            return Ok(());
        }
        let request = match &grant.request_id {
            None => None,
            Some(_) => match self.request_of(&grant)? {
                Some(request) => Some(request),
                // Its receipt cannot be made again: the grant stays as it is.
                None => return Ok(()),
            },
        };
        let created = self.created_event(&grant, request.as_ref(), now)?;
        tracing::warn!(grant = %grant_id, "the inbox does not know the grant: it is sent again");
        // The slice follows as soon as the inbox takes the grant, not a period later.
        self.store.queue_push(&created, |s| s.next_slice_at = None)?;
        Ok(())
    }

    /// Drops an event whose grant stopped before it was sent.
    fn push_drop(&self, item: &PendingPush, now: OffsetDateTime) -> Result<(), CoreError> {
        if self.store.settle_push(item, None, false, |_| {})? {
            self.push_audit(item, "dropped", None, item.attempts, now)?;
        }
        Ok(())
    }

    fn push_audit(&self, item: &PendingPush, outcome: &str, status: Option<u16>, attempts: u32, now: OffsetDateTime) -> Result<(), CoreError> {
        // The marketer is looked up rather than kept in the queue, so queued events keep the
        // bytes they were stored with; a grant that cannot be read leaves it out.
        let marketer = self.store.grant(&item.grant_id).ok().flatten().map(|g| g.marketer);
        let event = AuditEvent::Pushed {
            grant_id: item.grant_id.clone(),
            marketer,
            event_id: item.event_id.clone(),
            kind: item.kind.clone(),
            outcome: outcome.into(),
            status,
            attempts,
        };
        self.store.append_audit(now, event)?;
        // Flushed like the settlement before it, so a kill right after leaves both.
        self.store.flush()?;
        Ok(())
    }
}

/// The receipt of a grant as given: what the request asked, narrowed to the grant's terms,
/// or for a grant the person made unasked, its marketer and purpose as the person typed them.
pub(super) fn given(grant: &GrantRecord, request: Option<&Request>, keys: &GrantKeys) -> Receipt {
    let basis = match request {
        Some(request) => Basis::Request(request),
        None => Basis::Owner { marketer: &grant.marketer, purpose: &grant.purpose },
    };
    Receipt::given(basis, &grant.id, &keys.pseudonym, &grant.terms, grant.created_at)
}

/// What the schedule cut for a grant.
enum Cut {
    /// A slice to queue; `more` when the page stopped full with more to cut now.
    Slice { item: PendingPush, more: bool },
    /// No slice, the watermark moved past `through` if given.
    Nothing { through: Option<u64> },
    /// A slice is due but the grant's rate allows none before `until`.
    Limited { until: OffsetDateTime },
}

fn pending(grant: &GrantRecord, event: &Event, now: OffsetDateTime, through: Option<u64>) -> PendingPush {
    PendingPush {
        v: 1,
        grant_id: grant.id.clone(),
        event_id: event.webhook_id().to_string(),
        kind: event.data.type_name().into(),
        body: event.to_json(),
        attempts: 0,
        next_at: now,
        through,
    }
}

/// The wait before attempt `attempts + 1`: 30 s doubling up to an hour, or what the inbox
/// asked for if longer (within the hour), less up to a tenth at random so that grants that
/// failed together do not all try again together.
pub fn backoff(attempts: u32, retry_after: Option<std::time::Duration>) -> Duration {
    let doubled = FIRST_RETRY.checked_mul(1 << attempts.saturating_sub(1).min(16)).unwrap_or(LONGEST_RETRY);
    let asked = retry_after.and_then(|d| Duration::try_from(d).ok()).unwrap_or(Duration::ZERO);
    let wait = doubled.max(asked).min(LONGEST_RETRY);
    let mut byte = [0u8; 1];
    let jitter = if SystemRandom::new().fill(&mut byte).is_ok() { wait * (f64::from(byte[0]) / 2550.0) } else { Duration::ZERO };
    wait - jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_from_half_a_minute_to_an_hour() {
        for (attempts, at_least, at_most) in [(1, 27, 30), (2, 54, 60), (3, 108, 120), (8, 3240, 3600), (40, 3240, 3600)] {
            let wait = backoff(attempts, None).whole_seconds();
            assert!((at_least..=at_most).contains(&wait), "{attempts}: {wait}");
        }
        let asked = backoff(1, Some(std::time::Duration::from_secs(600))).whole_seconds();
        assert!((540..=600).contains(&asked), "{asked}");
        assert!(backoff(1, Some(std::time::Duration::from_secs(86_400))).whole_seconds() <= 3600);
    }
}
