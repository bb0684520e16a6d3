//! The agent's operations on its store, shared by every way in: the HTTPS API (marketers
//! and the owner's ingest), the admin socket (the CLI while an agent runs) and the offline
//! CLI. Whatever the way in, the same function runs.

pub mod audit;
pub mod command;
pub mod gate;
pub mod slicer;

use optin_protocol::bundle::{self, GrantBundle};
use optin_protocol::scope::{GrantId, ScopeError, SliceQuery, Terms};
use optin_protocol::signal::{self, BatchError, Kind, Signal};
use optin_protocol::slice::SliceClaims;
use optin_protocol::span::Span;
use optin_protocol::token::Token;
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::keys::{GrantKeys, Keys};
use crate::store::{Forget, GrantRecord, Store, StoreError};
use audit::AuditEvent;
use command::{GrantState, GrantView, Request, Response};
use gate::{Gates, Pass};
use slicer::CutError;

/// Settings of the operations.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// How long a cart waits for a purchase before it counts as abandoned.
    pub abandon_after: Span,
    /// The URL marketers reach the agent at, for bundles.
    pub agent_url: String,
    /// Hex SHA-256 of the TLS certificate, for bundles.
    pub cert_sha256: String,
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
    grant_keys: std::sync::Mutex<std::collections::HashMap<GrantId, std::sync::Arc<GrantKeys>>>,
    anonymous_refusals: std::sync::atomic::AtomicU64,
}

/// A failed owner command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// No grant has this id.
    #[error("no grant {0}")]
    NoGrant(GrantId),
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

/// Why a marketer's request gets no slice. The HTTP layer maps each to a status.
#[derive(Debug)]
pub enum Refusal {
    /// 401: the token is missing, malformed, unknown, forged, expired or revoked. The
    /// reason goes to the audit log only: the client learns nothing about which.
    Token(&'static str),
    /// 403: asks for more than the grant allows.
    Exceeds {
        /// The parameter.
        field: &'static str,
        /// What the grant allows.
        reason: String,
    },
    /// 400: a malformed request.
    Invalid {
        /// The parameter.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// 403: the person paused all sharing.
    Paused,
    /// 500: the detail is logged, not sent.
    Internal(String),
}

/// A slice ready to send, holding its grant's gate open (see [`crate::core::gate`]).
pub struct Served {
    /// The compact JWS.
    pub jws: String,
    /// Dropped once the bytes are handed to the connection.
    pub pass: Pass,
    /// Recorded with [`Core::delivered`] when the bytes are handed over, or turned into a
    /// refusal with [`Core::cut_off`] if the grant is revoked first.
    pub audit: AuditEvent,
}

/// A verified token's grant.
pub struct Admitted {
    /// The stored grant.
    pub record: GrantRecord,
    /// Its terms narrowed by the token's caveats.
    pub terms: Terms,
    /// Its keys.
    pub keys: std::sync::Arc<GrantKeys>,
    /// Holds the gate open while the request is answered.
    pub pass: Pass,
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

/// Bounds on what the owner types.
const MARKETER_CHARS: usize = 128;
const PURPOSE_CHARS: usize = 1000;

impl Core {
    /// Operations over an open store.
    pub fn new(store: Store, keys: Keys, config: CoreConfig) -> Core {
        Core { store, keys, gates: Gates::default(), config, grant_keys: Default::default(), anonymous_refusals: Default::default() }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Executes an owner command.
    pub async fn handle(&self, request: Request, now: OffsetDateTime) -> Result<Response, CoreError> {
        match request {
            Request::Ingest { ndjson, dry_run: false } => {
                let (stored, duplicates) = self.ingest(&ndjson)?;
                Ok(Response::Ingested { stored, duplicates })
            }
            Request::Ingest { ndjson, dry_run: true } => {
                let batch = signal::parse_batch(&ndjson, &crate::merchant::registrable)?;
                let (stored, duplicates) = self.store.count_new(&batch)?;
                Ok(Response::Ingested { stored, duplicates })
            }
            Request::Signals { kind } => Ok(Response::Signals { signals: self.list_signals(kind, now)? }),
            Request::Forget { what } => {
                let label = match &what {
                    Forget::Id(_) => "id".to_owned(),
                    Forget::Kind(k) => format!("kind={k}"),
                    Forget::Before(t) => format!("before={}", optin_protocol::timestamp::format(*t)),
                    Forget::All => "all".to_owned(),
                };
                let forget = what;
                let count = self.store.forget(&forget)?;
                self.store.append_audit(now, AuditEvent::Forgot { count, what: label })?;
                self.store.flush()?;
                Ok(Response::Forgot { count })
            }
            Request::Grant { marketer, kinds, granularity, window, expires, purpose } => {
                let marketer = bounded("marketer", &marketer, MARKETER_CHARS)?;
                let purpose = bounded("purpose", &purpose, PURPOSE_CHARS)?;
                let mut id = [0u8; 12];
                SystemRandom::new().fill(&mut id).map_err(|_| CoreError::Internal("no randomness".into()))?;
                let record = GrantRecord {
                    v: 1,
                    id: GrantId::from_bytes(id),
                    terms: Terms { audience: marketer.clone(), kinds, granularity, window, expires_at: now + expires.duration() },
                    marketer,
                    purpose,
                    created_at: now,
                    revoked_at: None,
                };
                self.store.put_grant(&record)?;
                self.store.append_audit(now, AuditEvent::Granted { grant_id: record.id.clone(), marketer: record.marketer.clone() })?;
                self.store.flush()?;
                Ok(Response::Granted { bundle: Box::new(self.bundle(&record)?) })
            }
            Request::Grants => {
                let grants = self.store.grants()?.into_iter().map(|g| view(g, now)).collect();
                Ok(Response::Grants { grants })
            }
            Request::Revoke { grant_id } => self.revoke(&grant_id, now).await,
            Request::Preview { grant_id } => {
                let record = self.store.grant(&grant_id)?.ok_or_else(|| CoreError::NoGrant(grant_id.clone()))?;
                let keys = self.keys.grant(&grant_id).map_err(|e| CoreError::Internal(e.to_string()))?;
                let claims = self.claims(&record, &record.terms, &keys, &SliceQuery::default(), now).map_err(|r| match r {
                    Refusal::Exceeds { reason, .. } | Refusal::Invalid { reason, .. } => CoreError::Invalid(reason),
                    Refusal::Token(reason) => CoreError::Invalid(format!("the grant serves nothing: {reason}")),
                    Refusal::Paused => CoreError::Invalid("sharing is paused".into()),
                    Refusal::Internal(e) => CoreError::Internal(e),
                })?;
                Ok(Response::Preview { claims: Box::new(claims) })
            }
            Request::Audit => {
                let mut records = Vec::new();
                let mut chain = Vec::new();
                for row in self.store.audit() {
                    let (record, hash) = row?;
                    let mut json = serde_json::to_value(&record).map_err(|e| CoreError::Internal(e.to_string()))?;
                    json["hash"] = optin_protocol::hex(&hash).into();
                    records.push(json);
                    chain.push((record, hash));
                }
                Ok(Response::Audit { records, chain: audit::verify(chain).map_err(|e| e.to_string()), anonymous_refusals: self.anonymous_refusals() })
            }
            Request::Sharing { paused } => {
                self.store.set_meta("paused", if paused { "1" } else { "0" })?;
                self.store.append_audit(now, AuditEvent::Sharing { paused })?;
                self.store.flush()?;
                Ok(Response::Sharing { paused })
            }
            Request::Status => Ok(Response::Status { version: env!("CARGO_PKG_VERSION").into() }),
        }
    }

    /// Stores an NDJSON batch, all or nothing.
    pub fn ingest(&self, ndjson: &str) -> Result<(usize, usize), CoreError> {
        let batch = signal::parse_batch(ndjson, &crate::merchant::registrable)?;
        self.ingest_signals(&batch)
    }

    /// Stores parsed signals, all or nothing.
    pub fn ingest_signals(&self, batch: &[Signal]) -> Result<(usize, usize), CoreError> {
        Ok(self.store.insert_signals(batch)?)
    }

    fn list_signals(&self, kind: Option<Kind>, now: OffsetDateTime) -> Result<Vec<serde_json::Value>, CoreError> {
        let mut out = Vec::new();
        for s in self.store.all_signals(kind) {
            let s = s?;
            let mut json = serde_json::to_value(&s).map_err(|e| CoreError::Internal(e.to_string()))?;
            if let Some(state) = slicer::cart_state(&self.store, &s, self.config.abandon_after, now)? {
                json["state"] = serde_json::to_value(state).map_err(|e| CoreError::Internal(e.to_string()))?;
            }
            out.push(json);
        }
        Ok(out)
    }

    async fn revoke(&self, id: &GrantId, now: OffsetDateTime) -> Result<Response, CoreError> {
        let mut record = self.store.grant(id)?.ok_or_else(|| CoreError::NoGrant(id.clone()))?;
        let already = record.revoked_at.is_some();
        if !already {
            record.revoked_at = Some(now);
            self.store.put_grant(&record)?;
            self.store.append_audit(now, AuditEvent::Revoked { grant_id: id.clone(), marketer: record.marketer.clone() })?;
            self.store.flush()?;
        }
        // Stored first, then the gate: a request that starts now reads the revocation from
        // the store, and one already past that check is waited for or cut off.
        self.gates.close(id).await;
        Ok(Response::Revoked { grant_id: id.clone(), already })
    }

    /// The bundle of a grant.
    pub fn bundle(&self, record: &GrantRecord) -> Result<GrantBundle, CoreError> {
        let keys = self.keys.grant(&record.id).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(GrantBundle {
            version: bundle::VERSION,
            grant_id: record.id.clone(),
            marketer: record.marketer.clone(),
            purpose: record.purpose.clone(),
            issuer: keys.issuer(),
            agent_url: self.config.agent_url.clone(),
            cert_sha256: self.config.cert_sha256.clone(),
            jwk: keys.jwk(),
            token: Token::mint(&keys.token_secret, &record.id).encode(),
            terms: record.terms.clone(),
        })
    }

    fn grant_keys(&self, id: &GrantId) -> Result<std::sync::Arc<GrantKeys>, Refusal> {
        // The cache only grows with real grants; a poisoned lock still holds valid keys.
        let mut cache = self.grant_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = cache.get(id) {
            return Ok(keys.clone());
        }
        let keys = std::sync::Arc::new(self.keys.grant(id).map_err(|e| Refusal::Internal(e.to_string()))?);
        cache.insert(id.clone(), keys.clone());
        Ok(keys)
    }

    /// Checks a bearer token: well formed, of a known grant, untampered, not revoked.
    /// On refusal, the grant is returned too once the token is known to be genuine, so the
    /// audit can name whose token was refused (never for a forged one).
    pub async fn admit(&self, bearer: Option<&str>) -> Result<Admitted, (Refusal, Option<GrantRecord>)> {
        let text = bearer.ok_or((Refusal::Token("no bearer token"), None))?;
        let token = Token::parse(text).map_err(|_| (Refusal::Token("malformed token"), None))?;
        let id = token.grant().clone();
        let stored = self.store.grant(&id).map_err(|e| (internal(e), None))?.ok_or((Refusal::Token("unknown grant"), None))?;
        let keys = self.grant_keys(&id).map_err(|r| (r, None))?;
        let terms = token.verify(&keys.token_secret, &stored.terms).map_err(|_| (Refusal::Token("token does not verify"), None))?;
        // The gate is entered only for verified tokens of real grants (bounded memory), and
        // the grant is re-read inside it so a revoke that raced the first read is seen.
        let Some(pass) = self.gates.enter(&id).await else { return Err((Refusal::Token("grant revoked"), Some(stored))) };
        let record = self.store.grant(&id).map_err(|e| (internal(e), None))?.ok_or((Refusal::Token("unknown grant"), None))?;
        if record.revoked_at.is_some() {
            return Err((Refusal::Token("grant revoked"), Some(record)));
        }
        Ok(Admitted { record, terms, keys, pass })
    }

    /// Answers `GET /v1/slice`: admits the token, evaluates the query and cuts a signed slice.
    /// Every outcome is audited.
    pub async fn slice(&self, bearer: Option<&str>, query: &str, now: OffsetDateTime) -> Result<Served, Refusal> {
        let asked = format!("/v1/slice?{query}");
        let admitted = match self.admit(bearer).await {
            Ok(a) => a,
            Err((refusal, record)) => {
                self.audit_refusal(record.as_ref(), &asked, &refusal, now);
                return Err(refusal);
            }
        };
        // Cutting and signing a large page takes milliseconds of CPU and store reads: tell
        // the runtime, so it moves other connections off this worker meanwhile.
        let result = blocking(|| {
            let claims = parse_query(query).and_then(|q| self.claims(&admitted.record, &admitted.terms, &admitted.keys, &q, now))?;
            let payload = serde_json::to_vec(&claims).map_err(|e| Refusal::Internal(e.to_string()))?;
            Ok((optin_protocol::jws::sign(&admitted.keys.signing, &payload), claims))
        });
        match result {
            Ok((jws, claims)) => {
                let audience = (claims.aud != admitted.record.marketer).then(|| claims.aud.clone());
                let audit = AuditEvent::Served {
                    grant_id: admitted.record.id.clone(),
                    marketer: admitted.record.marketer.clone(),
                    audience,
                    asked,
                    items: claims.items.len(),
                    slice_id: claims.jti.clone(),
                    jws_sha256: optin_protocol::hex(&optin_protocol::sha256(jws.as_bytes())),
                };
                Ok(Served { jws, pass: admitted.pass, audit })
            }
            Err(refusal) => {
                self.audit_refusal(Some(&admitted.record), &asked, &refusal, now);
                Err(refusal)
            }
        }
    }

    /// Answers `GET /v1/grant`: the token's effective terms.
    pub async fn grant_info(&self, bearer: Option<&str>, now: OffsetDateTime) -> Result<serde_json::Value, Refusal> {
        let admitted = match self.admit(bearer).await {
            Ok(a) => a,
            Err((refusal, record)) => {
                self.audit_refusal(record.as_ref(), "/v1/grant", &refusal, now);
                return Err(refusal);
            }
        };
        if now >= admitted.terms.expires_at {
            let refusal = Refusal::Token("grant expired");
            self.audit_refusal(Some(&admitted.record), "/v1/grant", &refusal, now);
            return Err(refusal);
        }
        let paused = self.store.meta("paused").map_err(internal)?.as_deref() == Some("1");
        Ok(serde_json::json!({
            "grant_id": admitted.record.id,
            "marketer": admitted.record.marketer,
            "purpose": admitted.record.purpose,
            "issuer": admitted.keys.issuer(),
            "state": if paused { "paused" } else { "active" },
            "terms": admitted.terms,
            "jwk": admitted.keys.jwk(),
        }))
    }

    fn claims(&self, record: &GrantRecord, terms: &Terms, keys: &GrantKeys, query: &SliceQuery, now: OffsetDateTime) -> Result<SliceClaims, Refusal> {
        if self.store.meta("paused").map_err(internal)?.as_deref() == Some("1") {
            return Err(Refusal::Paused);
        }
        let applied = terms.evaluate(query, now).map_err(|e| match e {
            ScopeError::Expired(_) => Refusal::Token("grant expired"),
            ScopeError::Exceeds { field, reason } => Refusal::Exceeds { field, reason },
            ScopeError::Invalid { field, reason } => Refusal::Invalid { field, reason },
            other => Refusal::Invalid { field: String::new(), reason: other.to_string() },
        })?;
        let page = slicer::cut(&self.store, &applied, query.cursor.as_deref(), keys, self.config.abandon_after, now).map_err(|e| match e {
            CutError::Cursor(c) => Refusal::Invalid { field: "cursor".into(), reason: c.to_string() },
            CutError::Store(s) => internal(s),
            CutError::Seal => Refusal::Internal("cannot seal a cursor".into()),
        })?;
        let mut jti = [0u8; 16];
        SystemRandom::new().fill(&mut jti).map_err(|_| Refusal::Internal("no randomness".into()))?;
        Ok(SliceClaims {
            iss: keys.issuer(),
            sub: keys.pseudonym.clone(),
            aud: terms.audience.clone(),
            iat: now.unix_timestamp(),
            jti: format!("s_{}", optin_protocol::hex(&jti)),
            grant: optin_protocol::slice::GrantClaim { id: record.id.clone(), purpose: record.purpose.clone(), expires_at: terms.expires_at },
            scope: applied,
            items: page.items,
            next_cursor: page.next_cursor,
        })
    }

    /// Records a slice handed to its connection.
    pub fn delivered(&self, event: AuditEvent) {
        if let Err(e) = self.store.append_audit(now(), event) {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }

    /// Records a slice cut off in flight because its grant was revoked.
    pub fn cut_off(&self, event: AuditEvent) {
        if let AuditEvent::Served { grant_id, marketer, asked, .. } = event {
            let refused = AuditEvent::Refused {
                grant_id: Some(grant_id),
                marketer: Some(marketer),
                asked,
                status: 401,
                reason: "grant revoked while the slice was in flight".into(),
            };
            self.delivered(refused);
        }
    }

    /// Refusals of tokens that name no real grant, or are forged: counted, not recorded,
    /// so that nobody can fill the person's disk by sending garbage.
    pub fn anonymous_refusals(&self) -> u64 {
        self.anonymous_refusals.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn audit_refusal(&self, record: Option<&GrantRecord>, asked: &str, refusal: &Refusal, now: OffsetDateTime) {
        let Some(record) = record else {
            self.anonymous_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let (status, reason) = match refusal {
            Refusal::Token(r) => (401, (*r).to_owned()),
            Refusal::Exceeds { field, reason } => (403, format!("{field}: {reason}")),
            Refusal::Invalid { field, reason } => (400, format!("{field}: {reason}")),
            Refusal::Paused => (403, "sharing paused".to_owned()),
            Refusal::Internal(_) => (500, "internal error".to_owned()),
        };
        let event = AuditEvent::Refused {
            grant_id: Some(record.id.clone()),
            marketer: Some(record.marketer.clone()),
            asked: asked.chars().take(512).collect(),
            status,
            reason,
        };
        if let Err(e) = self.store.append_audit(now, event) {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }

    /// Flushes the store (shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }
}

/// Runs blocking work in place, letting a multi-threaded runtime hand this worker's other
/// tasks to another thread (a current-thread runtime just runs it).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn parse_query(query: &str) -> Result<SliceQuery, Refusal> {
    let pairs: Vec<(String, String)> = form_pairs(query).map_err(|reason| Refusal::Invalid { field: "query".into(), reason })?;
    SliceQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| match e {
        ScopeError::Invalid { field, reason } => Refusal::Invalid { field, reason },
        other => Refusal::Invalid { field: "query".into(), reason: other.to_string() },
    })
}

/// Splits an `application/x-www-form-urlencoded` query into decoded pairs.
pub fn form_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or("bad percent-encoding")?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "query is not UTF-8".to_owned())
}

fn bounded(field: &str, text: &str, max: usize) -> Result<String, CoreError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(CoreError::Invalid(format!("{field} must be 1 to {max} printable characters")));
    }
    Ok(text.to_owned())
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
        revoked_at: g.revoked_at.map(optin_protocol::timestamp::format),
    }
}

fn internal(e: StoreError) -> Refusal {
    Refusal::Internal(e.to_string())
}
