//! Push grants without the network: approving a push request queues `grant.created`, the
//! schedule queues slices of what is new, each attempt is signed so the marketer's side of
//! the protocol verifies it, the inbox's answers settle the queue, and revoking drops what
//! waits and queues `grant.revoked`.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::push::{self, Data};
use optin_protocol::webhook::{Headers, DEFAULT_TOLERANCE};
use serde_json::json;
use time::Duration;

use super::requests::{mixed, signed};
use super::{World, T};
use crate::core::command::{ApprovalChoices, Request, RequestName, Response};
use crate::core::gate::Carrier;
use crate::core::push::{PushOutcome, PushSend};
use crate::store::{AuditEvent, PendingPush};

impl World {
    /// Approves a push request of acme.example that pushes every hour.
    async fn push_grant(&self) -> GrantBundle {
        self.push_grant_of(|_| {}).await
    }

    /// Approves that push request with its document edited by `edit` first.
    async fn push_grant_of(&self, edit: impl FnOnce(&mut serde_json::Value)) -> GrantBundle {
        let jws = signed("acme.example", "push-1", |v| {
            v["delivery"] = json!({"method": "push", "inbox": "https://inbox.acme.example/hook", "every": "1h"});
            edit(v);
        });
        self.run(Request::AddConsentRequest { jws, fetched_from: None }).await;
        let name: RequestName = "push-1".parse().expect("a request name");
        let Response::Approved { bundle, .. } = self.run(Request::Approve { name, choices: ApprovalChoices::default() }).await else { panic!("not approved") };
        *bundle
    }

    fn due(&self, at: time::OffsetDateTime) -> Vec<PendingPush> {
        self.core.push_due(at, 100).expect("the queue")
    }

    async fn send(&self, item: &PendingPush) -> Option<PushSend> {
        self.core.push_admit(item, &Carrier::new(), T).await.expect("admitted or not")
    }

    fn pushed(&self) -> Vec<String> {
        let log = self.core.store().audit_log().expect("the log");
        log.records
            .into_iter()
            .filter_map(|r| match r.record.event {
                AuditEvent::Pushed { kind, outcome, attempts, .. } => Some(format!("{kind} {outcome} {attempts}")),
                _ => None,
            })
            .collect()
    }
}

fn headers(send: &PushSend) -> Headers {
    send.headers.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_of_a_push_grant_verifies_as_the_marketer_receives_it() {
    let world = World::new();
    world.ingest(&mixed()).await;
    let bundle = world.push_grant().await;
    // Approved: the grant and its grant.created, nothing else yet.
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one event");
    let send = world.send(&created).await.expect("sent");
    assert_eq!(send.inbox, "https://inbox.acme.example/hook");
    let got = push::receive_new_grant(&headers(&send), &send.body, T, DEFAULT_TOLERANCE).expect("grant.created verifies");
    let Data::GrantCreated { bundle: pushed, .. } = &got.event.data else { panic!("not grant.created") };
    assert_eq!(**pushed, bundle);
    world.core.push_settle(&created, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    // The schedule runs at once: a slice of what is there, verified with the bundle.
    world.core.push_schedule(T).expect("scheduled");
    let [slice] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one slice");
    let send = world.send(&slice).await.expect("sent");
    let got = push::receive(&bundle.jwk, &headers(&send), &send.body, T, DEFAULT_TOLERANCE).expect("slice.delivered verifies");
    let Data::SliceDelivered { slice: jws, jti, .. } = &got.event.data else { panic!("not a slice") };
    let claims = bundle.verify_slice(jws).expect("the slice verifies with the bundle");
    assert_eq!((claims.jti.as_str(), claims.items.is_empty()), (jti.as_str(), false));
    assert_eq!(got.id.as_str(), claims.jti, "the webhook-id is the slice's jti");
    // Sent again, the same event goes under the same id.
    let again = world.send(&slice).await.expect("sent");
    assert_eq!((again.headers.id.as_str(), &again.body), (send.headers.id.as_str(), &send.body));
    world.core.push_settle(&slice, PushOutcome::Delivered { status: 204 }, T).expect("settled");
    // Nothing new and not yet due: nothing more is queued.
    world.core.push_schedule(T + Duration::minutes(59)).expect("scheduled");
    world.core.push_schedule(T + Duration::hours(2)).expect("scheduled");
    assert!(world.due(T + Duration::hours(3)).is_empty(), "the watermark leaves nothing new");
    // Revoked: grant.revoked, with the consent withdrawn.
    world.revoke(&bundle.grant_id).await;
    let [revoked] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one event");
    let send = world.send(&revoked).await.expect("sent after the revocation");
    let got = push::receive(&bundle.jwk, &headers(&send), &send.body, T, DEFAULT_TOLERANCE).expect("grant.revoked verifies");
    assert!(matches!(got.event.data, Data::GrantRevoked { .. }));
    world.core.push_settle(&revoked, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    assert_eq!(world.pushed(), ["grant.created delivered 1", "slice.delivered delivered 1", "grant.revoked delivered 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_drops_what_waits_and_an_attempt_under_way_is_not_settled_back() {
    let world = World::new();
    world.ingest(&mixed()).await;
    let bundle = world.push_grant().await;
    // A slice waits until the inbox has the grant, whose bundle it needs to verify one.
    world.core.push_schedule(T).expect("scheduled");
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("grant.created alone");
    world.core.push_settle(&created, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    world.core.push_schedule(T).expect("scheduled");
    let due = world.due(T);
    assert_eq!(due.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["slice.delivered"]);
    world.revoke(&bundle.grant_id).await;
    let after: Vec<String> = world.due(T).into_iter().map(|e| e.kind).collect();
    assert_eq!(after, ["grant.revoked"], "what waited is dropped");
    // An attempt taken from the queue before the revocation is refused by the gate.
    assert!(world.send(&due[0]).await.is_none());
    world.core.push_settle(&due[0], PushOutcome::Later { status: Some(503), retry_after: None }, T).expect("settled");
    assert_eq!(world.due(T + Duration::hours(2)).len(), 1, "a late failure does not put the slice back");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_back_off_with_one_record_and_410_stops_the_grant() {
    let world = World::new();
    let bundle = world.push_grant().await;
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one event");
    let later = PushOutcome::Later { status: Some(503), retry_after: None };
    world.core.push_settle(&created, later, T).expect("settled");
    assert!(world.due(T + Duration::seconds(26)).is_empty(), "waits about 30 s");
    let [retry] = <[PendingPush; 1]>::try_from(world.due(T + Duration::seconds(30))).expect("due again");
    assert_eq!((retry.attempts, &retry.event_id, &retry.body), (1, &created.event_id, &created.body));
    world.core.push_settle(&retry, later, T + Duration::seconds(30)).expect("settled");
    let [retry] = <[PendingPush; 1]>::try_from(world.due(T + Duration::minutes(2))).expect("due again");
    assert_eq!(world.pushed(), ["grant.created retrying 1"], "retries are counted, not recorded");
    world.core.push_settle(&retry, PushOutcome::Gone, T + Duration::minutes(2)).expect("settled");
    assert_eq!(world.pushed(), ["grant.created retrying 1", "grant.created gone 3"]);
    world.core.push_schedule(T + Duration::hours(5)).expect("scheduled");
    world.revoke(&bundle.grant_id).await;
    assert!(world.due(T + Duration::days(1)).is_empty(), "a gone inbox is sent nothing more, not even the revocation");
    let Response::Grants { grants } = world.run(Request::Grants).await else { panic!("not grants") };
    let push = grants[0].push.as_ref().expect("a push grant");
    assert_eq!((push.gone_at.is_some(), push.queued), (true, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_that_refuses_the_grant_is_sent_none_of_its_slices() {
    let world = World::new();
    world.ingest(&mixed()).await;
    let bundle = world.push_grant().await;
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one event");
    // The inbox will never take this grant (an inbox refuses a grant made unasked, 403).
    world.core.push_settle(&created, PushOutcome::Never { status: Some(403) }, T).expect("settled");
    for hours in [0, 1, 5, 30] {
        world.core.push_schedule(T + Duration::hours(hours)).expect("scheduled");
    }
    assert!(world.due(T + Duration::days(2)).is_empty(), "no slice goes to an inbox that could verify none");
    assert_eq!(world.pushed(), ["grant.created failed 1"]);
    let Response::Grants { grants } = world.run(Request::Grants).await else { panic!("not grants") };
    assert!(grants[0].push.as_ref().expect("a push grant").gone_at.is_some(), "{:?}", bundle.grant_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_that_ends_pushes_grant_expired_once() {
    let world = World::new();
    let bundle = world.push_grant().await;
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one event");
    world.core.push_settle(&created, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    let end = bundle.terms.expires_at;
    world.core.push_schedule(end).expect("scheduled");
    world.core.push_schedule(end + Duration::hours(2)).expect("scheduled again");
    let [expired] = <[PendingPush; 1]>::try_from(world.due(end + Duration::hours(2))).expect("grant.expired, once");
    let send = world.core.push_admit(&expired, &Carrier::new(), end).await.expect("admitted or not").expect("sent after the end");
    let got = push::receive(&bundle.jwk, &send.headers, &send.body, end, DEFAULT_TOLERANCE).expect("grant.expired verifies");
    assert!(matches!(got.event.data, Data::GrantExpired { .. }));
}

impl World {
    /// Delivers `grant.created` and then the slices the schedule cuts at `at`, one after the
    /// other, as a fast inbox would; each slice's items, verified with the bundle.
    async fn deliver_all(&self, bundle: &GrantBundle, at: time::OffsetDateTime) -> Vec<Vec<String>> {
        let mut slices = Vec::new();
        for _ in 0..10 {
            self.core.push_schedule(at).expect("scheduled");
            let due = self.due(at);
            if due.is_empty() {
                break;
            }
            for item in due {
                let send = self.core.push_admit(&item, &Carrier::new(), at).await.expect("admitted").expect("sent");
                if item.kind == "slice.delivered" {
                    let got = push::receive(&bundle.jwk, &headers(&send), &send.body, at, DEFAULT_TOLERANCE).expect("verifies");
                    let Data::SliceDelivered { slice, .. } = &got.event.data else { panic!("not a slice") };
                    let claims = bundle.verify_slice(slice).expect("the slice verifies");
                    slices.push(claims.items.iter().map(|i| serde_json::to_value(i).expect("JSON")["id"].as_str().unwrap_or_default().to_owned()).collect());
                }
                self.core.push_settle(&item, PushOutcome::Delivered { status: 200 }, at).expect("settled");
            }
        }
        slices
    }
}

/// The request without its merchant filter, which only carts and purchases can pass.
fn searches_too(request: &mut serde_json::Value) {
    request["terms"].as_object_mut().expect("terms").remove("merchants");
}

fn shoe_search(id: &str, at: time::OffsetDateTime) -> serde_json::Value {
    json!({"id": id, "kind": "search", "at": super::ts(at), "category": "Apparel > Shoes", "query": "trail shoes", "engine": "duckduckgo.com"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_that_arrives_after_younger_ones_were_pushed_goes_in_the_next_slice() {
    let world = World::new();
    world.ingest(&[shoe_search("s-new", T - Duration::hours(1))]).await;
    let bundle = world.push_grant_of(searches_too).await;
    assert_eq!(world.deliver_all(&bundle, T).await.iter().map(Vec::len).collect::<Vec<_>>(), [1]);
    // Held for review, or imported from history: older than what was pushed, it arrives now.
    world.ingest(&[shoe_search("s-held", T - Duration::hours(5)), search_elsewhere("s-other", T - Duration::hours(4))]).await;
    let later = world.deliver_all(&bundle, T + Duration::hours(1)).await;
    assert_eq!(later.len(), 1, "one slice of what arrived: {later:?}");
    assert_eq!(later[0].len(), 1, "the held search, not the one the grant's filter leaves out");
    // Nothing arrived since: nothing more, however late.
    assert!(world.deliver_all(&bundle, T + Duration::hours(3)).await.is_empty());
}

fn search_elsewhere(id: &str, at: time::OffsetDateTime) -> serde_json::Value {
    json!({"id": id, "kind": "search", "at": super::ts(at), "category": "Health", "query": "headache", "engine": "duckduckgo.com"})
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_a_page_goes_page_after_page_without_waiting_for_the_schedule() {
    let world = World::new();
    let many: Vec<serde_json::Value> = (0..2_500).map(|n| shoe_search(&format!("s-{n}"), T - Duration::minutes(n + 1))).collect();
    world.ingest(&many).await;
    let bundle = world.push_grant_of(searches_too).await;
    let slices = world.deliver_all(&bundle, T).await;
    assert_eq!(slices.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 500], "pages cut as the inbox takes each");
    let ids: std::collections::BTreeSet<&String> = slices.iter().flatten().collect();
    assert_eq!(ids.len(), 2_500, "no signal twice, none left out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_signal_leaves_nothing_to_push() {
    let world = World::new();
    world.ingest(&[shoe_search("s-1", T - Duration::hours(2)), shoe_search("s-2", T - Duration::hours(1))]).await;
    world.run(Request::Forget { what: crate::store::Forget::Id("s-1".into()) }).await;
    let bundle = world.push_grant_of(searches_too).await;
    assert_eq!(world.deliver_all(&bundle, T).await.iter().map(Vec::len).collect::<Vec<_>>(), [1]);
    assert_eq!(world.core.store().arrived_after(None).count(), 1, "the forgotten signal's place in the arrivals went with it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_dated_far_ahead_holds_back_no_other() {
    let world = World::new();
    let bundle = world.push_grant_of(searches_too).await;
    world.deliver_all(&bundle, T).await;
    // A mistyped year: waiting for it would hold every later search until then.
    world.ingest(&[shoe_search("s-ahead", T + Duration::days(30)), shoe_search("s-now", T - Duration::minutes(30))]).await;
    let slices = world.deliver_all(&bundle, T + Duration::hours(1)).await;
    assert_eq!(slices.iter().map(Vec::len).collect::<Vec<_>>(), [1], "the search of now goes, the one dated ahead is passed over");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_signal_leaves_in_no_slice_already_queued() {
    let world = World::new();
    world.ingest(&[shoe_search("s-secret", T - Duration::hours(2)), shoe_search("s-kept", T - Duration::hours(1))]).await;
    let bundle = world.push_grant_of(searches_too).await;
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("grant.created");
    world.core.push_settle(&created, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    world.core.push_schedule(T).expect("scheduled");
    let [slice] = <[PendingPush; 1]>::try_from(world.due(T)).expect("a slice");
    let event: serde_json::Value = serde_json::from_str(&slice.body).expect("an event");
    let claims = bundle.verify_slice(event["data"]["slice"].as_str().expect("a slice")).expect("verifies");
    assert_eq!(claims.items.len(), 2, "the slice holds both searches");
    // The inbox is down; meanwhile the person forgets one search.
    world.core.push_settle(&slice, PushOutcome::Later { status: Some(503), retry_after: None }, T).expect("settled");
    world.run(Request::Forget { what: crate::store::Forget::Id("s-secret".into()) }).await;
    assert!(world.due(T + Duration::days(1)).is_empty(), "the slice cut before the forget is not sent");
    let slices = world.deliver_all(&bundle, T + Duration::hours(1)).await;
    assert_eq!(slices.iter().map(Vec::len).collect::<Vec<_>>(), [1], "cut again, without the forgotten search");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_that_lost_the_grant_is_sent_it_again_and_then_the_slice() {
    let world = World::new();
    world.ingest(&[shoe_search("s-1", T - Duration::hours(2))]).await;
    let bundle = world.push_grant_of(searches_too).await;
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("grant.created");
    world.core.push_settle(&created, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    world.core.push_schedule(T).expect("scheduled");
    let [slice] = <[PendingPush; 1]>::try_from(world.due(T)).expect("a slice");
    // Restored from a backup older than the grant, the inbox knows it no more.
    world.core.push_settle(&slice, PushOutcome::Never { status: Some(404) }, T).expect("settled");
    let [again] = <[PendingPush; 1]>::try_from(world.due(T)).expect("the grant again");
    assert_eq!((again.kind.as_str(), again.event_id.as_str()), ("grant.created", created.event_id.as_str()), "under its own id");
    let send = world.send(&again).await.expect("sent");
    push::receive_new_grant(&headers(&send), &send.body, T, DEFAULT_TOLERANCE).expect("verifies as a new grant");
    world.core.push_settle(&again, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    // The slice's signal was not acknowledged, so it goes in the next slice, at once.
    let slices = world.deliver_all(&bundle, T).await;
    assert_eq!(slices.iter().map(Vec::len).collect::<Vec<_>>(), [1]);
    assert_eq!(world.pushed(), ["grant.created delivered 1", "slice.delivered failed 1", "grant.created delivered 1", "slice.delivered delivered 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_grant_is_sent_no_more_slices_than_its_rate() {
    let world = World::new();
    world.ingest(&mixed()).await;
    world.push_grant_of(|v| v["terms"]["rate"] = "1/day".into()).await;
    let [created] = <[PendingPush; 1]>::try_from(world.due(T)).expect("one event");
    world.core.push_settle(&created, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    world.core.push_schedule(T).expect("scheduled");
    let [slice] = <[PendingPush; 1]>::try_from(world.due(T)).expect("the day's slice");
    world.core.push_settle(&slice, PushOutcome::Delivered { status: 200 }, T).expect("settled");
    // Something new arrives, and the schedule is due again an hour later: the day's one
    // slice is spent, so nothing is cut, and the signal waits for the next day.
    let new = json!({"id": "c-new", "kind": "cart", "at": "2026-11-20T10:30:00Z", "category": "Apparel > Shoes", "merchant": "shoes.example",
        "currency": "EUR", "items": [{"name": "shoe", "price": "99.00"}]});
    world.ingest(&[new]).await;
    let later = T + Duration::hours(1);
    world.core.push_schedule(later).expect("scheduled");
    assert_eq!(world.due(later).len(), 0, "no second slice the same UTC day");
    let midnight = time::macros::datetime!(2026-11-21 0:00 UTC);
    world.core.push_schedule(midnight - Duration::seconds(1)).expect("scheduled");
    assert_eq!(world.due(midnight - Duration::seconds(1)).len(), 0, "not before the day ends");
    world.core.push_schedule(midnight).expect("scheduled");
    let [next] = <[PendingPush; 1]>::try_from(world.due(midnight)).expect("the next day's slice");
    assert_eq!(next.kind, "slice.delivered");
}
