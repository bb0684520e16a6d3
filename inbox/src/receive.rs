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
use optin_protocol::request::{shown, Choices};
use optin_protocol::webhook::{Headers, WebhookError};

use crate::requests::Catalog;
use crate::store::{Ending, GrantState, Insert, Keep, NewGrant, NewSlice, Refused, Store, StoreError};

/// What the inbox needs to decide a push.
pub struct Inbox<S> {
    /// The engine.
    pub store: S,
    /// This inbox's domain: the audience of every grant it takes.
    pub domain: String,
    /// The requests it publishes.
    pub requests: Catalog,
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
        // The bundle's key was checked when the body was read; were it not a key, the body is at fault.
        PushError::Webhook(e @ WebhookError::Key(_)) => Refusal::Body(e.to_string()),
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
        let requests = self.requests.current(now);
        let Some(request) = requests.live(&answering.id, now) else {
            return Err(Refusal::NotOurs(format!("request {} is not one this inbox publishes now (unknown or expired)", answering.id)));
        };
        // The agent narrows, never widens; a grant that claims more than was asked is not
        // the consent this inbox asked for, whoever made it.
        let wider = |term: &str| Refusal::NotOurs(format!("the grant's {term} are wider than request {} asks", answering.id));
        let terms = &bundle.terms;
        let choices = Choices {
            kinds: Some(terms.kinds.clone()),
            granularity: Some(terms.granularity),
            window: Some(terms.window),
            expires: None,
            categories: terms.categories.clone(),
            merchants: terms.merchants.clone(),
            fields: terms.fields.clone(),
            rate: terms.rate,
        };
        request.terms.narrow(&choices).map_err(|e| Refusal::NotOurs(format!("the grant's terms are not within request {}: {e}", answering.id)))?;
        // No filter where the request has one is any category or merchant: wider.
        if request.terms.categories.is_some() && terms.categories.is_none() {
            return Err(wider("categories"));
        }
        if request.terms.merchants.is_some() && terms.merchants.is_none() {
            return Err(wider("merchants"));
        }
        if request.terms.fields.is_some() && terms.fields.is_none() {
            return Err(wider("fields"));
        }
        if request.terms.rate.is_some() && terms.rate.is_none() {
            return Err(wider("rate"));
        }
        // Approved at the latest now, for at most the duration asked, ending at the next UTC midnight.
        if terms.expires_at > now + request.terms.duration.duration() + Duration::days(1) {
            return Err(wider("expiry terms"));
        }
        Ok(answering.id)
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use time::macros::datetime;

    use optin_protocol::jws::Jwk;
    use optin_protocol::push::Event;
    use optin_protocol::receipt::{Basis, ConsentState, Receipt};
    use optin_protocol::request::Request;
    use optin_protocol::scope::{Applied, GrantId, Granularity, Terms};
    use optin_protocol::slice::{GrantClaim, SliceClaims};
    use optin_protocol::webhook::{self, WebhookId};

    use super::*;
    use crate::home::Config;
    use crate::requests::{self, NewRequest, Published};
    use crate::store::{SliceQuery, Sqlite};

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);
    const PRINCIPAL: &str = "p_0123456789abcdef0123456789abcdef";

    fn request() -> (Request, String) {
        let config = Config::new("acme.example", None, "Acme".into(), "privacy@acme.example".into(), "https://acme.example/privacy".into()).unwrap();
        let new = NewRequest {
            id: "shoes-1".into(),
            purpose_code: "dpv:PersonalisedAdvertising".into(),
            purpose: "Shoe offers.".into(),
            kinds: vec!["search".into()],
            granularity: "raw".into(),
            window: "30d".into(),
            duration: "90d".into(),
            categories: None,
            merchants: None,
            offer: "10% off".into(),
            every: "1h".into(),
            expires: "30d".parse().unwrap(),
        };
        requests::build(&config, &Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap(), &new, NOW).unwrap()
    }

    fn inbox(keep: Keep) -> Inbox<Sqlite> {
        let (request, jws) = request();
        let mut published = Published::default();
        published.requests.insert(request.id.clone(), (request, jws));
        let requests = Catalog::fixed(published);
        Inbox { store: Sqlite::in_memory(), domain: "acme.example".into(), requests, tolerance: webhook::DEFAULT_TOLERANCE, keep }
    }

    /// A grant made by a key of its own, as an agent would make it.
    struct Grant {
        key: Ed25519KeyPair,
        bundle: GrantBundle,
        receipt: Receipt,
    }

    impl Grant {
        fn new(seed: u8, answering: Option<&Request>) -> Grant {
            let key = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
            let grant_id = GrantId::parse(&format!("g_{seed:024x}")).unwrap();
            let terms = Terms {
                audience: "acme.example".into(),
                kinds: "search".parse().unwrap(),
                granularity: Granularity::Raw,
                window: "30d".parse().unwrap(),
                expires_at: datetime!(2027-02-22 0:00 UTC),
                categories: None,
                merchants: None,
                fields: None,
                rate: None,
                noise: None,
            };
            let basis = answering.map_or(Basis::Owner { marketer: "acme.example", purpose: "offers" }, Basis::Request);
            let receipt = Receipt::given(basis, &grant_id, PRINCIPAL, &terms, NOW);
            let bundle = GrantBundle {
                version: optin_protocol::bundle::VERSION,
                token: optin_protocol::token::Token::mint(&[seed; 32], &grant_id).encode(),
                grant_id,
                marketer: "acme.example".into(),
                purpose: "Shoe offers.".into(),
                issuer: format!("urn:optin:agent:{PRINCIPAL}"),
                agent_url: None,
                cert_sha256: None,
                jwk: Jwk::ed25519(key.public_key().as_ref()),
                terms,
                receipt: None,
            };
            Grant { key, bundle, receipt }
        }

        fn event(&self, data: Data) -> Event {
            Event { timestamp: NOW, data }
        }

        fn created(&self) -> Event {
            self.event(Data::GrantCreated { bundle: Box::new(self.bundle.clone()), receipt: self.receipt.sign(&self.key) })
        }

        /// A slice with `jti` inside, pushed as `pushed_as`, signed by `signer`.
        fn slice_signed(&self, jti: u8, pushed_as: u8, signer: &Ed25519KeyPair) -> Event {
            let claims = SliceClaims {
                audit_seq: None,
                iss: self.bundle.issuer.clone(),
                sub: PRINCIPAL.into(),
                aud: "acme.example".into(),
                iat: NOW.unix_timestamp(),
                jti: format!("s_{jti:032x}"),
                grant: GrantClaim { id: self.bundle.grant_id.clone(), purpose: self.bundle.purpose.clone(), expires_at: self.bundle.terms.expires_at },
                scope: Applied {
                    kinds: self.bundle.terms.kinds.clone(),
                    granularity: Granularity::Raw,
                    since: NOW - Duration::days(30),
                    until: NOW,
                    limit: 1000,
                    categories: None,
                    merchants: None,
                    fields: None,
                    never_share: Default::default(),
                },
                items: Vec::new(),
                next_cursor: None,
                counts: None,
                noise: None,
            };
            let slice = optin_protocol::jws::sign(signer, &serde_json::to_vec(&claims).unwrap());
            let jti = WebhookId::parse(&format!("s_{pushed_as:032x}")).unwrap();
            self.event(Data::SliceDelivered { grant_id: self.bundle.grant_id.clone(), jti, slice })
        }

        fn slice(&self, n: u8) -> Event {
            self.slice_signed(n, n, &self.key)
        }

        fn ended(&self, state: ConsentState) -> Event {
            let receipt = self.receipt.ended(state, NOW).sign(&self.key);
            let grant_id = self.bundle.grant_id.clone();
            self.event(if state == ConsentState::Expired { Data::GrantExpired { grant_id, receipt } } else { Data::GrantRevoked { grant_id, receipt } })
        }

        fn headers(&self, event: &Event) -> Headers {
            webhook::sign(&self.key, &event.webhook_id(), NOW, event.to_json().as_bytes())
        }
    }

    /// What the inbox answers a push: the outcome, or the refusal's status and slug.
    type Answer = Result<Taken, (u16, &'static str)>;

    /// What the inbox answered.
    fn outcome(got: Result<Taken, Refusal>) -> Answer {
        got.map_err(|r| (r.status(), r.slug()))
    }

    #[tokio::test]
    async fn each_push_has_one_answer() {
        use Taken::{Duplicate, Stored};
        let (request, _) = request();
        let inbox = inbox(Keep::Erase);
        let a = Grant::new(1, Some(&request));
        let b = Grant::new(2, Some(&request));
        let unasked = Grant::new(3, None);
        let mut expired_request = Grant::new(4, Some(&request));
        expired_request.receipt.request.as_mut().unwrap().id = optin_protocol::request::RequestId::parse("shoes-0").unwrap();
        let stranger = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
        let mut more_kinds = Grant::new(5, Some(&request));
        more_kinds.bundle.terms.kinds = "search,cart".parse().unwrap();
        let mut longer = Grant::new(6, Some(&request));
        longer.bundle.terms.expires_at = NOW + Duration::days(92);
        let mut finer = Grant::new(7, Some(&request));
        finer.bundle.terms.window = "31d".parse().unwrap();
        let mismatched = a.ended(ConsentState::Withdrawn);
        let mismatched = a.event(match mismatched.data {
            Data::GrantRevoked { grant_id, .. } => Data::GrantExpired { grant_id, receipt: a.receipt.ended(ConsentState::Withdrawn, NOW).sign(&a.key) },
            _ => unreachable!(),
        });
        let table: Vec<(&str, &Grant, Event, Answer)> = vec![
            ("a slice before its grant", &a, a.slice(1), Err((404, "unknown-grant"))),
            ("an end before its grant", &a, a.ended(ConsentState::Withdrawn), Err((404, "unknown-grant"))),
            ("a grant made unasked", &unasked, unasked.created(), Err((403, "not-for-this-inbox"))),
            ("a grant of a request not published", &expired_request, expired_request.created(), Err((403, "not-for-this-inbox"))),
            ("a grant of more kinds than asked", &more_kinds, more_kinds.created(), Err((403, "not-for-this-inbox"))),
            ("a grant longer than asked", &longer, longer.created(), Err((403, "not-for-this-inbox"))),
            ("a grant reaching further back than asked", &finer, finer.created(), Err((403, "not-for-this-inbox"))),
            ("a grant", &a, a.created(), Ok(Stored)),
            ("the grant again", &a, a.created(), Ok(Duplicate)),
            ("another grant", &b, b.created(), Ok(Stored)),
            ("a slice", &a, a.slice(1), Ok(Stored)),
            ("the slice again", &a, a.slice(1), Ok(Duplicate)),
            ("a slice another key signed", &a, a.slice_signed(2, 2, &stranger), Err((422, "unverified"))),
            ("a slice pushed under another jti", &a, a.slice_signed(3, 4, &a.key), Err((422, "unverified"))),
            ("an expiry carrying a withdrawal", &a, mismatched, Err((422, "unverified"))),
            ("another grant's slice", &b, b.slice(5), Ok(Stored)),
            ("the grant expires", &b, b.ended(ConsentState::Expired), Ok(Stored)),
            ("the expiry again", &b, b.ended(ConsentState::Expired), Ok(Duplicate)),
            ("a revocation after the expiry", &b, b.ended(ConsentState::Withdrawn), Err((410, "grant-ended"))),
            ("a slice after the expiry", &b, b.slice(6), Err((410, "grant-ended"))),
        ];
        for (what, grant, event, expected) in table {
            let got = inbox.take(Ok(grant.headers(&event)), event.to_json().as_bytes(), NOW).await;
            assert_eq!(outcome(got), expected, "{what}");
        }
        let stored: Vec<String> = inbox.store.slices(SliceQuery::default()).await.unwrap().into_iter().map(|s| s.jti.to_string()).collect();
        assert_eq!(stored, [format!("s_{:032x}", 1)], "b's slice was erased with its expiry");
    }

    #[tokio::test]
    async fn a_request_that_expired_takes_no_grant() {
        let (request, _) = request();
        let inbox = inbox(Keep::Erase);
        let grant = Grant::new(1, Some(&request));
        let event = grant.created();
        let later = request.expires_at + Duration::seconds(1);
        let headers = webhook::sign(&grant.key, &event.webhook_id(), later, event.to_json().as_bytes());
        let got = inbox.take(Ok(headers), event.to_json().as_bytes(), later).await;
        assert_eq!(outcome(got), Err((403, "not-for-this-inbox")));
        assert_eq!(inbox.store.grants().await.unwrap(), []);
    }

    #[tokio::test]
    async fn rejects_headers_bodies_and_sizes_before_looking_further() {
        let inbox = inbox(Keep::Erase);
        let grant = Grant::new(1, None);
        let body = grant.created().to_json();
        let headers = grant.headers(&grant.created());
        let big = vec![b' '; optin_protocol::push::MAX_BODY_BYTES + 1];
        for (what, headers, body, expected) in [
            ("no headers", Err("webhook-id is missing".to_owned()), body.as_bytes(), (400, "invalid-header")),
            ("a malformed id", Ok(Headers { id: "a.b".into(), ..headers.clone() }), body.as_bytes(), (400, "invalid-header")),
            ("not JSON", Ok(headers.clone()), b"{".as_slice(), (400, "invalid-body")),
            ("too large", Ok(headers.clone()), big.as_slice(), (413, "too-large")),
            ("stale", Ok(Headers { timestamp: (NOW.unix_timestamp() - 301).to_string(), ..headers.clone() }), body.as_bytes(), (401, "stale")),
            ("no v1a entry", Ok(Headers { signature: "v1,AAAA".into(), ..headers.clone() }), body.as_bytes(), (401, "invalid-signature")),
        ] {
            assert_eq!(outcome(inbox.take(headers, body, NOW).await), Err(expected), "{what}");
        }
    }
}
