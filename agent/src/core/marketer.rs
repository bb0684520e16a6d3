//! What marketers may do: present a token ([`Core::admit`]), read its grant's terms
//! ([`Core::grant_info`]) and receive a signed slice ([`Core::slice`]). Every outcome with a
//! genuine token is audited; refusals of forged or unknown tokens are only counted.

use std::sync::Arc;

use bytes::Bytes;

use optin_protocol::jws::Jwk;
use optin_protocol::scope::{Applied, GrantId, Granularity, ScopeError, SliceQuery, Terms};
use optin_protocol::slice::{SliceClaims, SliceItem};
use optin_protocol::token::Token;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use time::OffsetDateTime;

use super::audit::AuditEvent;
use super::gate::{self, Carrier, Pass};
use super::repeat::{Asked, Slice};
use super::slicer::{self, CutError};
use super::{blocking, now, Core};
use crate::keys::GrantKeys;
use crate::store::{GrantRecord, StoreError};

/// Why a marketer's request gets no slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The token is missing, malformed, unknown, forged, expired or revoked. The reason goes
    /// to the audit log only: the client learns nothing about which.
    Token(&'static str),
    /// Asks for more than the grant allows.
    Exceeds {
        /// The parameter.
        field: &'static str,
        /// What the grant allows.
        reason: String,
    },
    /// A malformed request.
    Invalid {
        /// The parameter.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// The person paused all sharing.
    Paused,
    /// As many slices of the grant as the agent holds at once are in flight
    /// ([`gate::MAX_IN_FLIGHT`]); the client may try again shortly.
    Busy,
    /// The token's rate is used up for the current hour or day.
    RateLimited {
        /// Seconds until the next slice may be served.
        retry_after: u64,
    },
    /// The grant's privacy budget cannot pay for one more aggregate answer: it never will
    /// again (SPEC.md, "Aggregate slices").
    BudgetExhausted,
    /// The detail is logged, not sent.
    Internal(String),
}

impl Refusal {
    /// The HTTP status of this refusal: the one mapping, used by the response and by the
    /// audit record alike, so the log says what the marketer saw.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Token(_) => 401,
            Refusal::Exceeds { .. } | Refusal::Paused | Refusal::BudgetExhausted => 403,
            Refusal::Invalid { .. } => 400,
            Refusal::Busy | Refusal::RateLimited { .. } => 429,
            Refusal::Internal(_) => 500,
        }
    }

    /// What the audit log records as the reason (never an internal detail).
    fn audit_reason(&self) -> String {
        match self {
            Refusal::Token(r) => (*r).to_owned(),
            Refusal::Exceeds { field, reason } => format!("{field}: {reason}"),
            Refusal::Invalid { field, reason } => format!("{field}: {reason}"),
            Refusal::Paused => "sharing paused".to_owned(),
            Refusal::Busy => "too many slices of the grant in flight".to_owned(),
            Refusal::RateLimited { retry_after } => format!("rate limit reached; next slice in {retry_after} s"),
            Refusal::BudgetExhausted => "privacy budget exhausted".to_owned(),
            Refusal::Internal(_) => "internal error".to_owned(),
        }
    }
}

/// A marketer's request for a slice, as the HTTP layer parsed it.
pub struct SliceRequest<'a> {
    /// The bearer token, if one was presented.
    pub bearer: Option<&'a str>,
    /// The query. A malformed one is refused only after the token is checked, so that the
    /// refusal is audited under its grant, and an anonymous client learns nothing.
    pub query: Result<SliceQuery, Refusal>,
    /// What was asked (path and query), for the audit log.
    pub asked: &'a str,
    /// The connection that will carry the slice, which revoke cuts off; `None` where nothing
    /// can be cut (a test that takes the slice itself).
    pub carrier: Option<&'a Carrier>,
}

/// A signed slice ready to send, already on record as `served`. It holds its grant's gate open
/// (see [`super::gate`]); [`Served::deliver`] starts handing it over.
pub struct Served {
    jws: Bytes,
    pass: Pass,
    audit: AuditEvent,
    core: Arc<Core>,
}

impl Served {
    /// The size of the JWS in bytes.
    pub fn len(&self) -> usize {
        self.jws.len()
    }

    /// Whether the JWS is empty (never, for a signed slice).
    pub fn is_empty(&self) -> bool {
        self.jws.is_empty()
    }

    /// Starts handing the slice over, when the connection first asks for its bytes: if the
    /// grant was revoked since the slice was cut, nothing is handed over and the audit records
    /// the cut-off. Otherwise the JWS comes back with the [`Delivery`] that the connection
    /// asks before taking each part, and tells once it has written the slice out.
    pub fn deliver(self) -> Option<(Bytes, Delivery)> {
        let Served { jws, pass, audit, core } = self;
        let mut delivery = Delivery { pass: Some(pass), audit: Some(audit), core };
        delivery.take().ok()?;
        Some((jws, delivery))
    }
}

/// A slice being handed over, part by part. It keeps the gate open until the connection has
/// written the last byte out ([`Delivery::written`]). If the grant is revoked before that, the
/// slice is cut off: the part not yet taken never is, and the audit adds a `refused` record
/// naming the slice, whether the cut-off is seen at the next part or when revoke drops the
/// connection (and the delivery with it). A delivery dropped for another reason (the client
/// went away, the connection timed out) adds nothing: the marketer may have the slice.
pub struct Delivery {
    pass: Option<Pass>,
    audit: Option<AuditEvent>,
    core: Arc<Core>,
}

/// The grant was revoked while its slice was being handed over: the rest is not handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("grant revoked while the slice was in flight")]
pub struct CutOff;

impl Delivery {
    fn revoked(&self) -> bool {
        self.pass.as_ref().map_or(true, Pass::revoked)
    }

    /// The connection is about to take more of the slice: allowed unless the grant was
    /// revoked meanwhile (then the cut-off is recorded at once).
    pub fn take(&mut self) -> Result<(), CutOff> {
        if self.revoked() {
            self.finish(Outcome::CutOff);
            return Err(CutOff);
        }
        Ok(())
    }

    /// The connection has written the whole slice out: the gate is let go of.
    pub fn written(mut self) {
        self.finish(Outcome::Served);
    }

    /// Records what became of the slice, once, and lets go of the gate. Its `served` record
    /// was written when it was signed (the slice carries its number); a cut-off adds one.
    fn finish(&mut self, outcome: Outcome) {
        if let (Some(AuditEvent::Served { grant_id, marketer, asked, slice_id, audience, .. }), Outcome::CutOff) = (self.audit.take(), outcome) {
            let refusal = Refusal::Token("grant revoked while the slice was in flight");
            let (status, reason) = (refusal.status(), refusal.audit_reason());
            let refused = AuditEvent::Refused { grant_id: Some(grant_id), marketer: Some(marketer), slice_id: Some(slice_id), asked, status, reason, audience };
            self.core.record(refused);
        }
        self.pass = None;
    }
}

/// What the audit says became of a slice.
#[derive(Clone, Copy)]
enum Outcome {
    Served,
    CutOff,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let outcome = if self.revoked() { Outcome::CutOff } else { Outcome::Served };
        self.finish(outcome);
    }
}

/// A verified token's grant.
pub struct Admitted {
    /// The stored grant.
    pub record: GrantRecord,
    /// Its terms narrowed by the token's caveats.
    pub terms: Terms,
    /// Its keys.
    pub keys: Arc<GrantKeys>,
    /// Holds the gate open while the request is answered.
    pub pass: Pass,
}

/// A token turned away: why, and whose it was once it is known to be genuine (never for a
/// forged one), so the audit names the grant and the partner it was narrowed to.
pub struct Turned {
    /// Why.
    pub refusal: Refusal,
    /// The grant, when the token is genuine.
    pub record: Option<GrantRecord>,
    /// The partner an `aud` caveat named, when not the grant's marketer.
    pub audience: Option<String>,
}

impl Turned {
    fn anonymous(refusal: Refusal) -> Turned {
        Turned { refusal, record: None, audience: None }
    }
}

/// What `GET /v1/grant` answers: the token's effective terms.
#[derive(Clone, Debug, Serialize)]
pub struct GrantInfo {
    /// The grant.
    pub grant_id: GrantId,
    /// Its marketer.
    pub marketer: String,
    /// What for.
    pub purpose: String,
    /// The issuer named in its slices.
    pub issuer: String,
    /// Whether slices flow now.
    pub state: GrantInfoState,
    /// The terms after the token's caveats.
    pub terms: Terms,
    /// The key that signs its slices.
    pub jwk: Jwk,
}

/// Whether a live grant serves slices now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantInfoState {
    /// Slices flow.
    Active,
    /// The person paused all sharing.
    Paused,
}

impl Core {
    fn grant_keys(&self, id: &GrantId) -> Result<Arc<GrantKeys>, Refusal> {
        // The cache only grows with real grants; a poisoned lock still holds valid keys.
        let mut cache = self.grant_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = cache.get(id) {
            return Ok(keys.clone());
        }
        let keys = Arc::new(self.keys.grant(id).map_err(|e| Refusal::Internal(e.to_string()))?);
        cache.insert(id.clone(), keys.clone());
        Ok(keys)
    }

    /// Checks a bearer token: well formed, of a known grant, untampered, not revoked, not
    /// narrowed to a partner the person cut off, and with room in its grant's gate (the pass
    /// is taken on `carrier`, the connection that will carry the answer, if revoke should cut
    /// it off). On refusal, the grant is returned too once the token is known to be genuine,
    /// so the audit can name whose token was refused (never for a forged one).
    pub async fn admit(&self, bearer: Option<&str>, carrier: Option<&Carrier>) -> Result<Admitted, Turned> {
        let text = bearer.ok_or(Turned::anonymous(Refusal::Token("no bearer token")))?;
        let token = Token::parse(text).map_err(|_| Turned::anonymous(Refusal::Token("malformed token")))?;
        let id = token.grant().clone();
        let stored = self.store.grant(&id).map_err(|e| Turned::anonymous(internal(e)))?.ok_or(Turned::anonymous(Refusal::Token("unknown grant")))?;
        let keys = self.grant_keys(&id).map_err(Turned::anonymous)?;
        let terms = token.verify(&keys.token_secret, &stored.terms).map_err(|_| Turned::anonymous(Refusal::Token("token does not verify")))?;
        let audience = (terms.audience != stored.marketer).then(|| terms.audience.clone());
        let turned = |refusal, record| Turned { refusal, record: Some(record), audience: audience.clone() };
        // A filter caveat that reads a field the token's items do not show would tell it, item
        // by item, to a holder who tries one caveat after another (SPEC.md, "Tokens").
        let caveats = token.caveats().map_err(|_| Turned::anonymous(Refusal::Token("token does not verify")))?;
        if terms.unshown_filter_field(&caveats).is_some() {
            return Err(turned(Refusal::Token("a filter caveat reads a field the token's items do not show"), stored));
        }
        // The gate is entered only for verified tokens of real grants (bounded memory), and
        // the grant is re-read inside it so a revoke that raced the first read is seen.
        let pass = match self.gates.enter(&id, carrier) {
            Ok(pass) => pass,
            Err(gate::Closed::Revoked) => return Err(turned(Refusal::Token("grant revoked"), stored)),
            Err(gate::Closed::Full) => return Err(turned(Refusal::Busy, stored)),
        };
        let record = self.store.grant(&id).map_err(|e| Turned::anonymous(internal(e)))?.ok_or(Turned::anonymous(Refusal::Token("unknown grant")))?;
        if record.revoked_at.is_some() {
            return Err(turned(Refusal::Token("grant revoked"), record));
        }
        // Read inside the gate like the revocation, so a partner cut off before this request
        // began is refused. However the token was narrowed further, its audience stays the
        // partner's: a second, different `aud` caveat is refused by `Token::verify`.
        if audience.as_ref().is_some_and(|a| record.partners_revoked.contains(a)) {
            return Err(turned(Refusal::Token("partner revoked"), record));
        }
        Ok(Admitted { record, terms, keys, pass })
    }

    /// Answers `GET /v1/slice`: admits the token, evaluates the query and cuts a signed
    /// slice. Every outcome is audited (the delivery itself by [`Delivery`]).
    pub async fn slice(self: &Arc<Self>, request: SliceRequest<'_>, now: OffsetDateTime) -> Result<Served, Refusal> {
        let asked = request.asked;
        let admitted = match self.admit(request.bearer, request.carrier).await {
            Ok(a) => a,
            Err(turned) => {
                self.audit_refusal(turned.record.as_ref(), turned.audience.as_deref(), asked, &turned.refusal, now);
                return Err(turned.refusal);
            }
        };
        // Cutting and signing a large page takes milliseconds of CPU and store reads.
        let result = blocking(|| {
            let query = request.query?;
            // A request refused for its scope is no slice, and takes none of the rate; nor is
            // a new aggregate question the grant's budget cannot pay for.
            let applied = self.applied(&admitted.terms, &query, now)?;
            self.refuse_unaffordable(&admitted.record, &applied)?;
            self.take_rate(&admitted.record.id, &admitted.terms, now)?;
            let record = &admitted.record;
            let again = Asked { grant: &record.id, asked, applied: &applied, terms: &admitted.terms, purpose: &record.purpose, now };
            if let Some(kept) = self.repeats.find(&self.store, &again).map_err(internal)? {
                return self.repeat_on_record(&admitted, &kept, asked, now);
            }
            // Read before the cut: a signal stored while it runs makes the slice out of date.
            let version = self.store.signals_version();
            let claims = self.served_claims(record, &admitted.terms, &admitted.keys, &query, now)?;
            // A kept slice the cut holds the same as: served again, so that whether a slice is
            // new tells nothing its scope does not show (a signal stored outside it).
            if let Some(kept) = self.repeats.renewed(&again, &claims, version, self.config.abandon_after) {
                return self.repeat_on_record(&admitted, &kept, asked, now);
            }
            let (claims, jws, audit) = self.sign_on_record(&admitted, claims, asked, now)?;
            if let AuditEvent::Served { jws_sha256, .. } = &audit {
                self.repeats.keep(&again, (&claims, &jws, jws_sha256), version, self.config.abandon_after);
            }
            Ok((jws, audit))
        });
        // No byte leaves before the slice's record is on disk: a record lost to a crash would
        // leave the marketer holding a number (`audit_seq`) the log then gives to another.
        let result = match result {
            Ok(made) => self.records_on_disk().await.map(|()| made),
            Err(refusal) => Err(refusal),
        };
        match result {
            Ok((jws, audit)) => Ok(Served { jws, pass: admitted.pass, audit, core: self.clone() }),
            Err(refusal) => {
                self.audit_refusal(Some(&admitted.record), partner(&admitted), asked, &refusal, now);
                Err(refusal)
            }
        }
    }

    /// Returns once every audit record appended so far is on disk. Those who wait take turns;
    /// whoever has the turn flushes the store once, for every record appended by then, so
    /// that under load one flush serves many slices and the others find their records
    /// already written.
    async fn records_on_disk(&self) -> Result<(), Refusal> {
        // Ours, and any appended before it; not those appended while this one waits, or under
        // load no turn would ever find its records written.
        let (mine, written) = self.store.audit_through();
        if written >= mine {
            return Ok(());
        }
        let _turn = self.write_turn.lock().await;
        if self.store.audit_through().1 >= mine {
            return Ok(());
        }
        blocking(|| self.store.write_out()).map_err(internal)
    }

    /// Signs a slice and writes its `served` record, whose sequence number the slice carries
    /// (`audit_seq`), so that the marketer's copy names its place in the person's log. The
    /// number is the record's because both are made together, while other records wait: the
    /// record is written when the slice is signed, before any of it is handed over, and a
    /// slice then cut off by a revocation gets a second record saying so (see [`Delivery`]).
    /// Waiting instead until the slice is written out would hold every other record (the
    /// person's own among them) behind the slowest marketer's connection.
    fn sign_on_record(&self, admitted: &Admitted, claims: SliceClaims, asked: &str, now: OffsetDateTime) -> Result<(SliceClaims, Bytes, AuditEvent), Refusal> {
        let signed = self.store.append_audit_with(now, |seq| {
            let claims = SliceClaims { audit_seq: Some(seq), ..claims };
            let payload = serde_json::to_vec(&claims).map_err(|e| Refusal::Internal(e.to_string()))?;
            let jws = Bytes::from(optin_protocol::jws::sign(&admitted.keys.signing, &payload));
            let sha256 = optin_protocol::hex(&optin_protocol::sha256(&jws));
            let event = served_event(admitted, asked, (claims.items.len(), &claims.jti, sha256), None);
            Ok((event.clone(), (claims, jws, event)))
        });
        let (_, made) = signed.map_err(internal)??;
        Ok(made)
    }

    /// Serves a kept slice again ([`repeat`](super::repeat)): the same bytes, so the same
    /// `jti`, `iat` and `audit_seq`, and a `served` record of this delivery that names the
    /// record of the first. As with a slice signed now, no byte leaves before the record is
    /// written.
    fn repeat_on_record(&self, admitted: &Admitted, kept: &Slice, asked: &str, now: OffsetDateTime) -> Result<(Bytes, AuditEvent), Refusal> {
        let event = served_event(admitted, asked, (kept.items, &kept.slice_id, kept.jws_sha256.clone()), Some(kept.first_seq));
        self.store.append_audit(now, event.clone()).map_err(internal)?;
        Ok((kept.jws.clone(), event))
    }

    /// Answers `GET /v1/grant`: the token's effective terms.
    pub async fn grant_info(&self, bearer: Option<&str>, asked: &str, now: OffsetDateTime) -> Result<GrantInfo, Refusal> {
        let admitted = match self.admit(bearer, None).await {
            Ok(a) => a,
            Err(turned) => {
                self.audit_refusal(turned.record.as_ref(), turned.audience.as_deref(), asked, &turned.refusal, now);
                return Err(turned.refusal);
            }
        };
        if now >= admitted.terms.expires_at {
            let refusal = Refusal::Token("grant expired");
            self.audit_refusal(Some(&admitted.record), partner(&admitted), asked, &refusal, now);
            return Err(refusal);
        }
        let paused = self.store.paused().map_err(internal)?;
        Ok(GrantInfo {
            grant_id: admitted.record.id.clone(),
            marketer: admitted.record.marketer.clone(),
            purpose: admitted.record.purpose.clone(),
            issuer: admitted.keys.issuer(),
            state: if paused { GrantInfoState::Paused } else { GrantInfoState::Active },
            terms: admitted.terms,
            jwk: admitted.keys.jwk(),
        })
    }

    /// The claims a slice of `record` under `terms` holds now: the one place scope is
    /// evaluated for a slice (and for the owner's preview).
    pub(super) fn claims(
        &self,
        record: &GrantRecord,
        terms: &Terms,
        keys: &GrantKeys,
        query: &SliceQuery,
        now: OffsetDateTime,
    ) -> Result<SliceClaims, Refusal> {
        let applied = self.applied(terms, query, now)?;
        if applied.granularity == Granularity::Aggregate {
            // Only the person's previews reach here at aggregate: a marketer's answer is
            // cut by `served_claims`, which adds the noise and spends the budget.
            return self.exact_aggregate_claims(record, terms, keys, applied, now);
        }
        let page = slicer::cut(&self.store, &applied, query.cursor.as_deref(), keys, self.config.abandon_after, now).map_err(|e| match e {
            CutError::Cursor(c) => Refusal::Invalid { field: "cursor".into(), reason: c.to_string() },
            CutError::Store(s) => internal(s),
            CutError::Seal => Refusal::Internal("cannot seal a cursor".into()),
        })?;
        slice_claims(record, terms, keys, applied, page.items, page.next_cursor, now)
    }

    /// The scope a query gets under `terms` at `now`, or why it gets none: sharing is
    /// paused, the grant ended, or the query asks for more than the terms allow.
    pub(super) fn applied(&self, terms: &Terms, query: &SliceQuery, now: OffsetDateTime) -> Result<Applied, Refusal> {
        if self.store.paused().map_err(internal)? {
            return Err(Refusal::Paused);
        }
        let applied = terms.evaluate(query, now).map_err(|e| match e {
            ScopeError::Expired(_) => Refusal::Token("grant expired"),
            ScopeError::Exceeds { field, reason } => Refusal::Exceeds { field, reason },
            ScopeError::Invalid { field, reason } => Refusal::Invalid { field, reason },
            other => Refusal::Invalid { field: String::new(), reason: other.to_string() },
        })?;
        // The person's never-share list as it stands now, so a change applies to the next
        // cut of every grant; a list that cannot be read serves nothing.
        Ok(Applied { never_share: self.never_share().map_err(internal)?, ..applied })
    }

    /// Counts a slice against the rate of `terms` (the grant's, or a token's narrower one),
    /// or refuses it until the period ends. Every page counts, a cursor's included: a
    /// cursor can be presented again and again, and reads what arrived since, so pages that
    /// did not count would be slices without a limit. Counted per grant, whoever holds the
    /// token, so that tokens minted from one grant share its rate.
    pub(super) fn take_rate(&self, grant: &GrantId, terms: &Terms, now: OffsetDateTime) -> Result<(), Refusal> {
        let Some(rate) = terms.rate else { return Ok(()) };
        match self.store.take_slice(grant, rate, now.unix_timestamp()).map_err(internal)? {
            crate::store::rate::Take::Taken => Ok(()),
            crate::store::rate::Take::Limited { retry_after } => Err(Refusal::RateLimited { retry_after }),
        }
    }

    /// Appends an audit record now; a failure is logged, never shown to the marketer.
    fn record(&self, event: AuditEvent) {
        if let Err(e) = self.store.append_audit(now(), event) {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }

    /// Refusals of tokens that name no real grant, or are forged: counted, not recorded,
    /// so that nobody can fill the person's disk by sending garbage.
    pub fn anonymous_refusals(&self) -> u64 {
        self.anonymous_refusals.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn audit_refusal(&self, record: Option<&GrantRecord>, audience: Option<&str>, asked: &str, refusal: &Refusal, now: OffsetDateTime) {
        let Some(record) = record else {
            self.anonymous_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        if let Some(reason) = self.counted_reason(&record.id, refusal, now) {
            if let Err(e) = self.store.count_refusal(&record.id, &record.marketer, refusal.status(), reason, now) {
                tracing::error!(error = %e, "cannot count a refusal");
            }
            return;
        }
        let event = AuditEvent::Refused {
            grant_id: Some(record.id.clone()),
            marketer: Some(record.marketer.clone()),
            slice_id: None,
            asked: bounded_asked(asked),
            status: refusal.status(),
            reason: refusal.audit_reason(),
            audience: audience.map(str::to_owned),
        };
        if let Err(e) = self.store.append_audit(now, event) {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }

    /// The reason a refusal of a real grant is counted under, when it is counted rather than
    /// recorded; `None` when it gets a record of its own. A token holder can send requests as
    /// fast as a client likes, so the log must not grow with them:
    /// - a revoked or expired grant, paused sharing and a busy grant say nothing new after
    ///   the first time: always counted;
    /// - a request beyond the grant, or malformed, is worth reading (what was asked, why it
    ///   was refused), so it is recorded while the grant's [`RecordBudget`] lasts and
    ///   counted by its class after that.
    ///
    /// Counted reasons are a fixed set, never text from the request, so the counts stay a
    /// handful per grant whatever is sent.
    fn counted_reason(&self, grant: &GrantId, refusal: &Refusal, now: OffsetDateTime) -> Option<&'static str> {
        let class = match refusal {
            Refusal::Token(reason @ ("grant revoked" | "grant expired")) => return Some(reason),
            Refusal::Paused => return Some("sharing paused"),
            Refusal::Busy => return Some("too many slices of the grant in flight"),
            Refusal::BudgetExhausted => return Some("privacy budget exhausted"),
            Refusal::Token(reason) => *reason,
            Refusal::Exceeds { .. } => "asked beyond the grant",
            Refusal::RateLimited { .. } => "rate limit reached",
            Refusal::Invalid { .. } => "malformed request",
            Refusal::Internal(_) => "internal error",
        };
        // A poisoned lock guards only these budgets; carry on with what it holds.
        let mut budgets = self.refusal_budgets.lock().unwrap_or_else(|p| p.into_inner());
        let spent = !budgets.entry(grant.clone()).or_insert_with(|| RecordBudget::full(now)).take(now);
        spent.then_some(class)
    }
}

/// How many refusals of one grant get a record of their own: a burst of [`RecordBudget::BURST`],
/// then one every [`RecordBudget::EVERY`] seconds (a token bucket). Kept in memory: a restart
/// refills it, which costs at most one more burst.
#[derive(Debug)]
pub(super) struct RecordBudget {
    tokens: u32,
    /// When the bucket last gained a token.
    at: OffsetDateTime,
}

impl RecordBudget {
    const BURST: u32 = 20;
    const EVERY: i64 = 3;

    fn full(now: OffsetDateTime) -> RecordBudget {
        RecordBudget { tokens: Self::BURST, at: now }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: OffsetDateTime) -> bool {
        let earned = (now - self.at).whole_seconds() / Self::EVERY;
        if earned > 0 {
            self.tokens = u32::try_from(earned).unwrap_or(u32::MAX).saturating_add(self.tokens).min(Self::BURST);
            self.at += time::Duration::seconds(earned * Self::EVERY);
        }
        let Some(left) = self.tokens.checked_sub(1) else { return false };
        self.tokens = left;
        true
    }
}

/// What the audit keeps of a request line: bounded, so a marketer cannot grow the log with
/// long URLs.
fn bounded_asked(asked: &str) -> String {
    asked.chars().take(512).collect()
}

/// The `served` record of a delivery to `admitted` of a slice of (items, `jti`, hex SHA-256
/// of its JWS): signed now, or served again after the record `repeat_of`.
fn served_event(admitted: &Admitted, asked: &str, slice: (usize, &str, String), repeat_of: Option<u64>) -> AuditEvent {
    let (items, slice_id, jws_sha256) = slice;
    AuditEvent::Served {
        grant_id: admitted.record.id.clone(),
        marketer: admitted.record.marketer.clone(),
        audience: partner(admitted).map(str::to_owned),
        asked: bounded_asked(asked),
        items,
        slice_id: slice_id.to_owned(),
        jws_sha256,
        repeat_of,
    }
}

/// The partner an admitted token was narrowed to, when not the grant's marketer.
fn partner(admitted: &Admitted) -> Option<&str> {
    Some(admitted.terms.audience.as_str()).filter(|a| *a != admitted.record.marketer)
}

fn internal(e: StoreError) -> Refusal {
    Refusal::Internal(e.to_string())
}

/// The claims of a slice of `items` cut to `applied` for `record`'s marketer at `now`, with a
/// fresh id. Numbered when it is signed on record (`audit_seq`); a preview never is.
pub(super) fn slice_claims(
    record: &GrantRecord,
    terms: &Terms,
    keys: &GrantKeys,
    applied: Applied,
    items: Vec<SliceItem>,
    next_cursor: Option<String>,
    now: OffsetDateTime,
) -> Result<SliceClaims, Refusal> {
    let mut jti = [0u8; 16];
    SystemRandom::new().fill(&mut jti).map_err(|_| Refusal::Internal("no randomness".into()))?;
    Ok(SliceClaims {
        audit_seq: None,
        iss: keys.issuer(),
        sub: keys.pseudonym.clone(),
        aud: terms.audience.clone(),
        iat: now.unix_timestamp(),
        jti: format!("s_{}", optin_protocol::hex(&jti)),
        grant: optin_protocol::slice::GrantClaim { id: record.id.clone(), purpose: record.purpose.clone(), expires_at: terms.expires_at },
        scope: applied,
        items,
        next_cursor,
        counts: None,
        noise: None,
    })
}
