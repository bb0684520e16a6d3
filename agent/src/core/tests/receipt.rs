//! A grant's receipt as it stands, at any moment: given while the grant is in force, then
//! expired from the day it ended or withdrawn from the day it was revoked, always the same
//! record signed with the grant's key.

use optin_protocol::receipt::{self, ConsentState};
use time::Duration;

use super::*;

/// The receipt `optin receipt` shows at `now`, verified with the bundle's key.
async fn receipt_at(world: &World, bundle: &GrantBundle, now: OffsetDateTime) -> (String, receipt::Receipt) {
    let request = Request::Receipt { grant_id: bundle.grant_id.clone() };
    let Ok(Response::Receipt { jws, receipt }) = world.try_run(request, now).await else { panic!("no receipt") };
    assert_eq!(receipt::verify(&jws, &bundle.jwk).as_ref(), Ok(receipt.as_ref()), "the JWS holds what is shown");
    (jws, *receipt)
}

fn states(receipt: &receipt::Receipt) -> Vec<(time::Date, ConsentState)> {
    receipt.event.iter().map(|e| (e.event_time, e.state)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receipt_is_given_then_expired_on_the_day_the_grant_ended() {
    let world = World::new();
    let bundle = world.grant("search", "raw", "30d").await;
    let (jws, given) = receipt_at(&world, &bundle, T).await;
    assert_eq!(Some(jws.as_str()), bundle.receipt.as_deref(), "the bundle's receipt, the same bytes");
    assert_eq!(states(&given), [(T.date(), ConsentState::Given)]);

    // Whenever it is asked for after the end, it names the day the grant ended.
    let end = bundle.terms.expires_at;
    for now in [end, end + Duration::days(40)] {
        let (_, expired) = receipt_at(&world, &bundle, now).await;
        assert_eq!(states(&expired), [(T.date(), ConsentState::Given), (end.date(), ConsentState::Expired)], "at {now}");
        assert_eq!(expired, given.ended(ConsentState::Expired, end));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_grants_receipt_is_withdrawn_on_the_day_of_the_revocation_whenever_asked() {
    let world = World::new();
    let bundle = world.grant("search", "raw", "30d").await;
    world.revoke(&bundle.grant_id).await;
    let (first, withdrawn) = receipt_at(&world, &bundle, T + Duration::days(3)).await;
    assert_eq!(states(&withdrawn), [(T.date(), ConsentState::Given), (T.date(), ConsentState::Withdrawn)]);
    // After its expiry too: it was withdrawn first, and a receipt ends once.
    let (later, _) = receipt_at(&world, &bundle, T + Duration::days(200)).await;
    assert_eq!(first, later);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_a_receipt_of_an_unknown_grant() {
    let world = World::new();
    let unknown = GrantId::from_bytes([7; 12]);
    let refused = world.try_run(Request::Receipt { grant_id: unknown.clone() }, T).await;
    assert!(matches!(refused, Err(CoreError::NoGrant(ref id)) if *id == unknown), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_whose_request_fails_its_mac_has_a_bundle_without_a_receipt_and_no_receipt() {
    let world = World::new();
    let jws = super::requests::signed("acme.example", "shoes-1", |_| {});
    world.try_run(Request::AddConsentRequest { jws, fetched_from: None }, T).await.expect("kept");
    let approve = Request::Approve { name: "shoes-1".parse().expect("a name"), choices: Default::default() };
    let Ok(Response::Approved { bundle, .. }) = world.try_run(approve, T).await else { panic!("not approved") };
    assert!(bundle.receipt.is_some(), "a pull grant's bundle carries its receipt");

    // The request's stored record changed behind optin's back: it fails its MAC.
    let path = world.store_path();
    let world = {
        let World { dir, core } = world;
        drop(Arc::into_inner(core).expect("no other handle on the core"));
        {
            // Every handle on the database goes at the end of this block, and its lock with them.
            let db = sled::open(&path).expect("the store");
            let requests = db.open_tree("requests").expect("the requests tree");
            let (key, value) = requests.iter().next().expect("one request").expect("readable");
            let edited = String::from_utf8(value.to_vec()).expect("JSON").replace("10% off your next pair", "90% off your next pair");
            requests.insert(key, edited.as_bytes()).expect("write");
            db.flush().expect("flush");
        }
        World { core: World::open(&dir), dir }
    };

    // The bundle is printed still, without the receipt nobody can vouch for; the receipt
    // itself is refused as an input error, not one to retry.
    let Ok(Response::Bundle { bundle: again }) = world.try_run(Request::Bundle { grant_id: bundle.grant_id.clone() }, T).await else { panic!("no bundle") };
    assert_eq!((again.receipt.as_deref(), again.token.as_str()), (None, bundle.token.as_str()));
    let refused = world.try_run(Request::Receipt { grant_id: bundle.grant_id.clone() }, T).await;
    assert!(matches!(&refused, Err(CoreError::Invalid(m)) if m.contains("no longer stored intact")), "{refused:?}");
}
