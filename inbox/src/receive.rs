//! Taking one push: everything is checked before anything is stored, and every refusal has
//! one status (SPEC.md, "Push events", "What an inbox answers").
//!
//! In order: the body's size; the body read only to learn which grant, and so which key, it
//! claims; the key pinned for a known grant, or the bundle's for a new grant's
//! `grant.created` (`optin_protocol::push::receive` and `receive_new_grant` check the
//! Standard Webhooks `v1a` signature, the timestamp's tolerance, the event and its `webhook-id`
//! and any receipt); a grant that ended answers 410 to all but its own end; then what the
//! event carries: a new grant must answer a live request of this inbox, addressed to its
//! domain; a slice must verify with the grant's bundle and carry the event's `jti`. The store
//! then takes the write and its delivery id in one step, so a retry is stored once.

use time::{Duration, OffsetDateTime};

use optin_protocol::bundle::GrantBundle;
use optin_protocol::push::{self, Data, PushError};
use optin_protocol::receipt;
use optin_protocol::request::shown;
use optin_protocol::webhook::{Headers, WebhookError};

use crate::requests::Published;
use crate::store::{Ending, GrantState, Insert, Keep, NewGrant, NewSlice, Refused, Store, StoreError};

/// What the inbox needs to decide a push.
pub struct Inbox<S> {
    /// The engine.
    pub store: S,
    /// This inbox's domain: the audience of every grant it takes.
    pub domain: String,
    /// The requests it published.
    pub requests: Published,
    /// How far a push's timestamp may be from this clock, either way.
    pub tolerance: Duration,
    /// What happens to a grant's slices when it ends.
    pub keep: Keep,
}

/// A push taken: answered 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Stored now.
    Stored,
    /// Taken before, and so not stored again.
    Duplicate,
}

/// A push refused: nothing was stored. Each has one status ([`Refusal::status`]).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A `webhook-*` header is missing or malformed (400).
    #[error("{0}")]
    Header(String),
    /// The body is not a push event (400).
    #[error("the body is not a push event: {0}")]
    Body(String),
    /// The timestamp is outside the tolerance (401).
    #[error("{0}")]
    Stale(String),
    /// No `v1a` signature verifies with the grant's key (401).
    #[error("no v1a signature verifies with the grant's key")]
    Signature,
    /// A `grant.created` this inbox does not take: no request of its own answered, or not
    /// addressed to its domain (403).
    #[error("{0}")]
    NotOurs(String),
    /// An event of a grant whose `grant.created` this inbox never took (404).
    #[error("no grant.created was taken for {0}, so nothing can verify this event")]
    UnknownGrant(String),
    /// The grant ended; the agent is to stop pushing it (410).
    #[error("grant {grant} has ended ({by})")]
    Ended {
        /// The grant.
        grant: String,
        /// The delivery that ended it.
        by: String,
    },
    /// The body is larger than the inbox takes (413).
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// Signed with the grant's key, but what it carries does not verify or does not match (422).
    #[error("{0}")]
    Unverified(String),
    /// The store failed (500); the agent sends it again later.
    #[error("the inbox could not store the push; send it again later")]
    Store(String),
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Header(_) | Refusal::Body(_) => 400,
            Refusal::Stale(_) | Refusal::Signature => 401,
            Refusal::NotOurs(_) => 403,
            Refusal::UnknownGrant(_) => 404,
            Refusal::Ended { .. } => 410,
            Refusal::TooLarge(_) => 413,
            Refusal::Unverified(_) => 422,
            Refusal::Store(_) => 500,
        }
    }

    /// The problem type's slug, after `urn:optin:inbox:problem:`.
    pub fn slug(&self) -> &'static str {
        match self {
            Refusal::Header(_) => "invalid-header",
            Refusal::Body(_) => "invalid-body",
            Refusal::Stale(_) => "stale",
            Refusal::Signature => "invalid-signature",
            Refusal::NotOurs(_) => "not-for-this-inbox",
            Refusal::UnknownGrant(_) => "unknown-grant",
            Refusal::Ended { .. } => "grant-ended",
            Refusal::TooLarge(_) => "too-large",
            Refusal::Unverified(_) => "unverified",
            Refusal::Store(_) => "internal",
        }
    }
}

fn from_push(error: PushError) -> Refusal {
    match error {
        PushError::TooLarge => Refusal::TooLarge(push::MAX_BODY_BYTES),
        PushError::Webhook(WebhookError::Signature) => Refusal::Signature,
        PushError::Webhook(e @ WebhookError::Stale { .. }) => Refusal::Stale(e.to_string()),
        PushError::Webhook(e) => Refusal::Header(e.to_string()),
        e @ (PushError::Field { .. } | PushError::Id { .. }) => Refusal::Body(e.to_string()),
        e => Refusal::Unverified(e.to_string()),
    }
}

fn store_failed(error: StoreError) -> Refusal {
    Refusal::Store(error.to_string())
}

impl<S: Store> Inbox<S> {
    /// Decides one push received at `now`. `headers` is the reason they could not be read when
    /// a `webhook-*` header is missing or not text.
    pub async fn take(&self, headers: Result<Headers, String>, body: &[u8], now: OffsetDateTime) -> Result<Taken, Refusal> {
        if body.len() > push::MAX_BODY_BYTES {
            return Err(Refusal::TooLarge(push::MAX_BODY_BYTES));
        }
        let headers = headers.map_err(Refusal::Header)?;
        // Read before the signature only to learn which grant the body claims; nothing in it
        // counts until the signature verifies with that grant's key.
        let claimed = push::Event::parse(body).map_err(from_push)?;
        let grant_id = claimed.data.grant_id().clone();
        let known = self.store.grant(grant_id.clone()).await.map_err(store_failed)?;
        let received = match (&known, &claimed.data) {
            (Some(grant), _) => {
                let bundle = GrantBundle::parse(&grant.bundle).map_err(|e| Refusal::Store(format!("grant {grant_id}'s stored bundle: {e}")))?;
                push::receive(&bundle.jwk, &headers, body, now, self.tolerance).map_err(from_push)?
            }
            (None, Data::GrantCreated { .. }) => push::receive_new_grant(&headers, body, now, self.tolerance).map_err(from_push)?,
            (None, _) => return Err(Refusal::UnknownGrant(grant_id.to_string())),
        };
        if let Some(ended) = known.as_ref().and_then(|g| g.ended.as_ref()) {
            if ended.by != received.id {
                return Err(Refusal::Ended { grant: grant_id.to_string(), by: ended.by.to_string() });
            }
        }
        let insert = match received.event.data {
            Data::GrantCreated { bundle, receipt } => {
                if known.is_some() {
                    // Verified with the pinned key: the same grant's first push again.
                    Insert::Duplicate
                } else {
                    let request_id = self.check_new_grant(&bundle, &receipt, now)?;
                    let bundle_json = serde_json::to_string(&*bundle).map_err(|e| Refusal::Store(e.to_string()))?;
                    let grant = NewGrant { delivery: received.id, grant_id, request_id, bundle: bundle_json, receipt, at: now };
                    self.store.create_grant(grant).await.map_err(store_failed)?
                }
            }
            Data::SliceDelivered { jti, slice, .. } => {
                let Some(grant) = known else { return Err(Refusal::UnknownGrant(grant_id.to_string())) };
                let bundle = GrantBundle::parse(&grant.bundle).map_err(|e| Refusal::Store(format!("grant {grant_id}'s stored bundle: {e}")))?;
                let claims = bundle.verify_slice(&slice).map_err(|e| Refusal::Unverified(format!("the slice does not verify with the grant's bundle: {e}")))?;
                if claims.jti != jti.as_str() {
                    return Err(Refusal::Unverified(format!("the slice's jti `{}` is not the event's `{jti}`", shown(&claims.jti))));
                }
                let items = u64::try_from(claims.items.len()).unwrap_or(u64::MAX);
                self.store.store_slice(NewSlice { delivery: received.id, grant_id, jws: slice, items, at: now }).await.map_err(store_failed)?
            }
            Data::GrantRevoked { receipt, .. } => {
                let ending = Ending { delivery: received.id, grant_id, state: GrantState::Revoked, receipt, keep: self.keep, at: now };
                self.store.end_grant(ending).await.map_err(store_failed)?
            }
            Data::GrantExpired { receipt, .. } => {
                let ending = Ending { delivery: received.id, grant_id, state: GrantState::Expired, receipt, keep: self.keep, at: now };
                self.store.end_grant(ending).await.map_err(store_failed)?
            }
            // A later version's event: the parser knows it, this inbox does not store it.
            other => return Err(Refusal::Body(format!("`{}` events are not taken here", other.type_name()))),
        };
        match insert {
            Insert::Stored => Ok(Taken::Stored),
            Insert::Duplicate => Ok(Taken::Duplicate),
            Insert::Refused(Refused::UnknownGrant) => Err(Refusal::UnknownGrant(claimed.data.grant_id().to_string())),
            Insert::Refused(Refused::GrantEnded(_, by)) => Err(Refusal::Ended { grant: claimed.data.grant_id().to_string(), by: by.to_string() }),
        }
    }

    /// A new grant is taken only for a live request of this inbox, and only addressed to
    /// this inbox's domain: the bundle's marketer and audience, and the receipt's request.
    /// Returns the request's id.
    fn check_new_grant(&self, bundle: &GrantBundle, receipt: &str, now: OffsetDateTime) -> Result<optin_protocol::request::RequestId, Refusal> {
        let domain = &self.domain;
        if bundle.marketer != *domain || bundle.terms.audience != *domain {
            return Err(Refusal::NotOurs(format!("the grant is for {} (audience {}), not {domain}", shown(&bundle.marketer), shown(&bundle.terms.audience))));
        }
        // `push::receive_new_grant` verified the receipt already; it is read again for what
        // it answers.
        let receipt = receipt::verify(receipt, &bundle.jwk).map_err(|e| Refusal::Unverified(format!("the receipt: {e}")))?;
        let Some(answering) = receipt.request else {
            return Err(Refusal::NotOurs("the grant answers no request (its receipt names none): this inbox takes grants of its own requests only".into()));
        };
        if answering.marketer != *domain {
            return Err(Refusal::NotOurs(format!("the receipt answers a request of {}, not {domain}", shown(&answering.marketer))));
        }
        if self.requests.live(&answering.id, now).is_none() {
            return Err(Refusal::NotOurs(format!("request {} is not one this inbox publishes now (unknown or expired)", answering.id)));
        }
        Ok(answering.id)
    }
}
