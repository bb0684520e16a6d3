//! Filters and consent requests: a grant's category and merchant filters hold in every slice
//! cut under it; a request is verified before anything is stored, kept once, approved only
//! narrowed, into a grant bound to it, or denied, and never once expired.

use optin_protocol::scope::Granularity;
use optin_protocol::signal::Kind;
use serde_json::{json, Value};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::{span, ts, World, T};
use crate::core::command::{ApprovalChoices, ErrorKind, GrantView, Request, RequestName, RequestState, RequestView, Response, WouldShare};
use crate::core::CoreError;
use crate::store::AuditEvent;

/// Signals of the last days: shoes and other things, at two merchants.
pub(super) fn mixed() -> Vec<Value> {
    let at = |days: i64| ts(T - Duration::days(days));
    vec![
        json!({"id": "s-shoes", "kind": "search", "at": at(1), "category": "Apparel > Shoes", "query": "trail shoes", "engine": "duckduckgo.com"}),
        json!({"id": "s-none", "kind": "search", "at": at(2), "query": "headache", "engine": "duckduckgo.com"}),
        json!({"id": "c-shoes", "kind": "cart", "at": at(3), "category": "Apparel > Shoes > Running", "merchant": "shoes.example", "currency": "EUR",
            "items": [{"name": "shoe", "price": "99.00"}]}),
        json!({"id": "c-mixed", "kind": "cart", "at": at(4), "merchant": "shoes.example", "currency": "EUR",
            "items": [{"name": "shoe", "price": "99.00", "category": "Apparel > Shoes"}, {"name": "pills", "price": "5.00", "category": "Health"}]}),
        json!({"id": "c-other", "kind": "cart", "at": at(5), "category": "Apparel > Shoes", "merchant": "other.example", "currency": "EUR",
            "items": [{"name": "shoe", "price": "79.00"}]}),
        json!({"id": "p-shoes", "kind": "purchase", "at": at(6), "category": "Apparel > Shoes", "merchant": "shoes.example", "currency": "EUR",
            "total": "99.00", "items": [{"name": "shoe", "price": "99.00"}]}),
    ]
}

/// A filter as terms hold it.
type Filter = Option<Vec<String>>;

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_grant_serves_only_what_its_filters_admit() {
    let world = World::new();
    world.ingest(&mixed()).await;
    let list = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let cases: Vec<(&str, Filter, Filter, &str, Vec<&str>)> = vec![
        ("no filter", None, None, "raw", vec!["s-none", "s-shoes", "c-other", "c-mixed", "c-shoes", "p-shoes"]),
        ("shoes", list(&["Apparel > Shoes"]), None, "raw", vec!["s-shoes", "c-other", "c-shoes", "p-shoes"]),
        ("running shoes", list(&["Apparel > Shoes > Running"]), None, "raw", vec!["c-shoes"]),
        ("one merchant", None, list(&["shoes.example"]), "raw", vec!["c-mixed", "c-shoes", "p-shoes"]),
        ("both", list(&["Apparel > Shoes"]), list(&["shoes.example"]), "raw", vec!["c-shoes", "p-shoes"]),
        ("both, by category", list(&["Apparel > Shoes"]), list(&["shoes.example"]), "category", vec!["cart 2026-11-17", "purchase 2026-11-14"]),
    ];
    for (name, categories, merchants, granularity, expected) in cases {
        let bundle = world.grant("search,cart,purchase", granularity, "30d").await;
        let mut record = world.core.store().grant(&bundle.grant_id).expect("the store").expect("the grant");
        record.terms.categories = categories.clone();
        record.terms.merchants = merchants.clone();
        world.core.store().put_grant(&record).expect("stored");
        // A page of one item at a time: a filtered-out signal never takes a place in a page,
        // and the last page names no next one.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(c) => format!("limit=1&cursor={c}"),
                None => "limit=1".to_owned(),
            };
            let claims = world.fetch(&bundle, &bundle.token, &query).await.unwrap_or_else(|r| panic!("{name}: {r:?}"));
            assert_eq!(
                (claims.scope.categories.clone(), claims.scope.merchants.clone()),
                (categories.clone(), merchants.clone()),
                "{name}: the slice states its filters"
            );
            assert!(claims.items.len() <= 1, "{name}");
            seen.extend(world.seen(&claims, &mixed()));
            cursor = claims.next_cursor;
            if cursor.is_none() {
                break;
            }
            assert!(seen.len() <= expected.len(), "{name}: a page promised more than the filters admit: {seen:?}");
        }
        assert_eq!(seen, expected, "{name}");
    }
}

/// A marketer's signing key.
fn marketer_key(seed: u8) -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a key")
}

/// A request document of `domain` with id `id`, as `edit` changes it.
fn document(domain: &str, id: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v = json!({
        "version": 1, "id": id, "issued_at": "2026-11-20T00:00:00Z", "expires_at": "2027-01-31T00:00:00Z",
        "marketer": {"name": "Acme Shoes", "domain": domain, "contact": format!("privacy@{domain}"), "privacy_policy": format!("https://{domain}/privacy")},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you running-shoe offers that fit what you look for."},
        "terms": {"kinds": ["search", "cart"], "granularity": "raw", "window": "30d", "duration": "90d",
                  "categories": ["Apparel > Shoes"], "merchants": ["shoes.example", "other.example"]},
        "offer": "10% off your next pair",
        "delivery": {"method": "pull"},
    });
    edit(&mut v);
    v.to_string()
}

pub(super) fn signed(domain: &str, id: &str, edit: impl FnOnce(&mut Value)) -> String {
    optin_protocol::request::sign(&marketer_key(5), document(domain, id, edit).as_bytes())
}

fn name(text: &str) -> RequestName {
    text.parse().expect("a request name")
}

impl World {
    async fn add(&self, jws: &str, fetched_from: Option<&str>) -> Result<Response, CoreError> {
        self.try_run(Request::AddConsentRequest { jws: jws.to_owned(), fetched_from: fetched_from.map(str::to_owned) }, T).await
    }

    async fn requests(&self) -> Vec<RequestView> {
        let Response::ConsentRequests { requests } = self.run(Request::ConsentRequests).await else { panic!("not a list of requests") };
        requests
    }

    async fn grants(&self) -> Vec<GrantView> {
        let Response::Grants { grants } = self.run(Request::Grants).await else { panic!("not a list of grants") };
        grants
    }

    async fn approve(&self, request: &str, choices: ApprovalChoices, now: OffsetDateTime) -> Result<Response, CoreError> {
        self.try_run(Request::Approve { name: name(request), choices }, now).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_requests_that_do_not_verify_and_stores_nothing() {
    let world = World::new();
    let good = signed("acme.example", "shoes-1", |_| {});
    // The good request's header and payload with the signature of another document.
    let (signed_part, _) = good.rsplit_once('.').expect("a JWS");
    let other = signed("acme.example", "shoes-1", |v| v["offer"] = "90% off".into());
    let tampered = format!("{signed_part}.{}", other.rsplit_once('.').expect("a JWS").1);
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("a signature over another document", tampered, None, "signature does not verify"),
        ("fetched from another domain", good.clone(), Some("evil.example"), "fetched from `evil.example`"),
        ("expired", signed("acme.example", "old", |v| v["expires_at"] = "2026-11-20T09:00:00Z".into()), None, "expired at"),
        ("an unknown field", signed("acme.example", "x", |v| v["logo"] = "x".into()), None, "field `logo`"),
        ("an escape in the purpose", signed("acme.example", "x", |v| v["purpose"]["text"] = "ads\u{1b}[2J".into()), None, "purpose.text"),
        ("not a JWS", "hello".into(), None, "not a signed request"),
        ("too large", "a".repeat(200 * 1024), None, "larger than"),
    ];
    for (case, jws, from, because) in cases {
        let err = world.add(&jws, from).await.expect_err(case);
        assert_eq!(err.kind(), ErrorKind::Invalid, "{case}");
        let message = err.to_string();
        assert!(message.contains("nothing was stored") && message.contains(because), "{case}: {message}");
        assert!(!message.chars().any(|c| c.is_control()), "{case}: the message is safe to print: {message:?}");
    }
    assert!(world.requests().await.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_the_same_request_again_changes_nothing() {
    let world = World::new();
    let jws = signed("acme.example", "shoes-1", |_| {});
    let Response::RequestAdded { request, already: false, key_changed: false } = world.add(&jws, None).await.expect("added") else { panic!("not added") };
    assert_eq!((request.state, request.fetched_from.as_deref()), (RequestState::Pending, None), "a file vouches for no domain");
    let Response::RequestAdded { already: true, .. } = world.add(&format!("{jws}\n"), None).await.expect("again") else { panic!("not idempotent") };
    // Fetched from its domain later: now checked against it.
    let Response::RequestAdded { request, already: true, .. } = world.add(&jws, Some("acme.example")).await.expect("fetched") else { panic!("not idempotent") };
    assert_eq!(request.fetched_from.as_deref(), Some("acme.example"));
    // Another request under the same marketer and id is refused, and the first stays.
    let other = signed("acme.example", "shoes-1", |v| v["offer"] = "20% off".into());
    let err = world.add(&other, None).await.expect_err("another request under the same id");
    assert!(err.to_string().contains("already asked under the id shoes-1"), "{err}");
    let listed = world.requests().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request.offer, "10% off your next pair");
    // The same id from another marketer is another request; named alone it is ambiguous.
    let key_changed = optin_protocol::request::sign(&marketer_key(6), document("acme.example", "shoes-2", |_| {}).as_bytes());
    let Response::RequestAdded { key_changed: true, .. } = world.add(&key_changed, None).await.expect("added") else { panic!("a new key goes unnoticed") };
    world.add(&signed("trail.example", "shoes-1", |_| {}), None).await.expect("another marketer");
    let err = world.try_run(Request::ConsentRequest { name: name("shoes-1") }, T).await.expect_err("ambiguous");
    assert!(err.to_string().contains("acme.example/shoes-1 or trail.example/shoes-1"), "{err}");
    world.try_run(Request::ConsentRequest { name: name("trail.example/shoes-1") }, T).await.expect("named in full");
    let err = world.try_run(Request::ConsentRequest { name: name("nothing") }, T).await.expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_requests_are_bounded() {
    let world = World::new();
    for i in 0..crate::core::requests::MAX_PENDING {
        world.add(&signed("acme.example", &format!("r{i}"), |_| {}), None).await.expect("under the bound");
    }
    let err = world.add(&signed("acme.example", "one-more", |_| {}), None).await.expect_err("over the bound");
    assert!(err.to_string().contains("approve or deny some first"), "{err}");
    world.try_run(Request::Deny { name: name("r0") }, T).await.expect("denied");
    world.add(&signed("acme.example", "one-more", |_| {}), None).await.expect("room again");
}

#[tokio::test(flavor = "multi_thread")]
async fn widening_any_term_is_refused_naming_it_and_changes_nothing() {
    let world = World::new();
    world.add(&signed("acme.example", "shoes-1", |v| v["terms"]["granularity"] = "category".into()), None).await.expect("added");
    let wider = |f: fn(&mut ApprovalChoices)| {
        let mut c = ApprovalChoices::default();
        f(&mut c);
        c
    };
    let cases: Vec<(ApprovalChoices, &str)> = vec![
        (wider(|c| c.kinds = Some("search,purchase".parse().expect("kinds"))), "kinds"),
        (wider(|c| c.granularity = Some(Granularity::Raw)), "granularity"),
        (wider(|c| c.window = Some(span("31d"))), "window"),
        (wider(|c| c.expires = Some(span("91d"))), "expires"),
        (wider(|c| c.categories = Some(vec!["Apparel".into()])), "categories"),
        (wider(|c| c.merchants = Some(vec!["shoes.example".into(), "evil.example".into()])), "merchants"),
    ];
    for (choices, term) in cases {
        let err = world.approve("shoes-1", choices, T).await.expect_err(term);
        assert!(err.to_string().contains(&format!("`{term}` would widen the request")), "{term}: {err}");
    }
    assert!(world.grants().await.is_empty(), "no grant was made");
    assert_eq!(world.requests().await[0].state, RequestState::Pending);
    let (records, _) = world.audit().await;
    assert!(records.is_empty(), "nothing was recorded: {records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_makes_a_grant_bound_to_the_request() {
    let world = World::new();
    world.ingest(&mixed()).await;
    world.add(&signed("acme.example", "shoes-1", |_| {}), None).await.expect("added");
    let choices = ApprovalChoices { window: Some(span("4d")), merchants: Some(vec!["shoes.example".into()]), ..ApprovalChoices::default() };
    let Response::Approved { bundle, request, .. } = world.approve("shoes-1", choices, T).await.expect("approved") else { panic!("not approved") };
    assert_eq!((request.state, request.grant_id.as_ref()), (RequestState::Approved, Some(&bundle.grant_id)));
    assert_eq!(bundle.marketer, "acme.example", "the audience is the marketer's domain");
    assert_eq!(bundle.purpose, "Show you running-shoe offers that fit what you look for.");
    let t = &bundle.terms;
    assert_eq!((t.audience.as_str(), t.kinds.to_string(), t.window.to_string()), ("acme.example", "search,cart".to_owned(), "4d".to_owned()));
    assert_eq!(t.expires_at, datetime!(2027-02-19 0:00 UTC), "90 days from approval, rounded up to a UTC midnight");
    assert_eq!((t.categories.clone(), t.merchants.clone()), (Some(vec!["Apparel > Shoes".to_owned()]), Some(vec!["shoes.example".to_owned()])));
    let grants = world.grants().await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].request_id.as_ref().map(|r| r.as_str()), Some("shoes-1"));
    let stored = world.core.store().grant(&bundle.grant_id).expect("the store").expect("the grant, intact");
    assert_eq!(stored.purpose_code.as_deref(), Some("dpv:PersonalisedAdvertising"));
    // The slice keeps the approved window and both filters: only the cart at shoes.example
    // within 4 days, and no search, which has no merchant.
    let claims = world.fetch(&bundle, &bundle.token, "").await.expect("a slice");
    assert_eq!(world.seen(&claims, &mixed()), vec!["c-shoes"]);
    // The audit keeps the request and its purpose code with the grant.
    let (records, chain) = world.audit().await;
    assert!(chain.is_ok());
    let granted = records.iter().find_map(|r| match &r.record.event {
        AuditEvent::Granted { request_id, purpose_code, terms, .. } => Some((request_id.clone(), purpose_code.clone(), terms.clone())),
        _ => None,
    });
    let (request_id, purpose_code, terms) = granted.expect("a granted record");
    assert_eq!((request_id.map(String::from).as_deref(), purpose_code.as_deref()), (Some("shoes-1"), Some("dpv:PersonalisedAdvertising")));
    assert_eq!(terms.and_then(|t| t.merchants), Some(vec!["shoes.example".to_owned()]));
    // Decided once: approving or denying again is refused, and changes nothing.
    let err = world.approve("shoes-1", ApprovalChoices::default(), T).await.expect_err("approved twice");
    assert!(err.to_string().contains("already approved"), "{err}");
    let err = world.try_run(Request::Deny { name: name("shoes-1") }, T).await.expect_err("denied after approval");
    assert!(err.to_string().contains("already approved"), "{err}");
    assert_eq!(world.grants().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_requests_cannot_be_approved() {
    let world = World::new();
    world.add(&signed("acme.example", "soon", |v| v["expires_at"] = "2026-11-21T00:00:00Z".into()), None).await.expect("added");
    let later = datetime!(2026-11-21 0:00 UTC);
    let err = world.approve("soon", ApprovalChoices::default(), later).await.expect_err("expired");
    assert!(err.to_string().contains("expired at 2026-11-21T00:00:00Z: it cannot be approved"), "{err}");
    let Response::ConsentRequests { requests } = world.try_run(Request::ConsentRequests, later).await.expect("a list") else { panic!("not a list") };
    assert_eq!(requests[0].state, RequestState::Expired);
    assert!(world.grants().await.is_empty());
    // Before it expires, the same request is approved.
    world.approve("soon", ApprovalChoices::default(), T).await.expect("approved in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn denial_is_recorded_and_final() {
    let world = World::new();
    world.add(&signed("acme.example", "shoes-1", |_| {}), None).await.expect("added");
    let Response::Denied { request } = world.try_run(Request::Deny { name: name("acme.example/shoes-1") }, T).await.expect("denied") else {
        panic!("not denied")
    };
    assert_eq!(request.state, RequestState::Denied);
    let err = world.approve("shoes-1", ApprovalChoices::default(), T).await.expect_err("approved after denial");
    assert!(err.to_string().contains("already denied"), "{err}");
    assert!(world.grants().await.is_empty());
    let (records, chain) = world.audit().await;
    assert!(chain.is_ok());
    assert!(
        matches!(&records[..], [r] if matches!(&r.record.event, AuditEvent::Denied { marketer, request_id } if marketer == "acme.example" && request_id.as_str() == "shoes-1"))
    );
    // It stays denied across a restart, and its record carries its MAC.
    let world = world.reopen();
    assert_eq!(world.requests().await[0].state, RequestState::Denied);
}

#[tokio::test(flavor = "multi_thread")]
async fn show_counts_what_the_terms_would_share_now() {
    let world = World::new();
    world.ingest(&mixed()).await;
    world.add(&signed("acme.example", "all", |v| _ = v["terms"].as_object_mut().map(|t| t.remove("merchants"))), None).await.expect("added");
    let Response::ConsentRequest { request, would_share } = world.run(Request::ConsentRequest { name: name("all") }).await else { panic!("not a request") };
    assert_eq!(request.state, RequestState::Pending);
    let Some(WouldShare::Items(summary)) = would_share else { panic!("no preview: {would_share:?}") };
    // Shoes only: the categorised search, and the carts whose every item is shoes.
    assert_eq!(summary.items, 3);
    assert_eq!(summary.kinds.get(&Kind::Search), Some(&1));
    assert_eq!(summary.kinds.get(&Kind::Cart), Some(&2));
    assert_eq!(summary.cart_states.get("abandoned"), Some(&2));
    assert_eq!(summary.categories.get("Apparel > Shoes"), Some(&2));
    assert_eq!(summary.categories.get("Apparel > Shoes > Running"), Some(&1));
    // Nothing was stored for the preview: no grant, no audit record.
    assert!(world.grants().await.is_empty());
    assert!(world.audit().await.0.is_empty());
    world.run(Request::Sharing { paused: true }).await;
    let Response::ConsentRequest { would_share, .. } = world.run(Request::ConsentRequest { name: name("all") }).await else { panic!("not a request") };
    assert!(matches!(would_share, Some(WouldShare::Paused)), "{would_share:?}");
}
