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
