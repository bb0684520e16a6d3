//! Cart states: derived from the purchases at the cart's merchant and the time, the same in
//! the person's listing and in a marketer's slice.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::signal::Kind;
use optin_protocol::slice::{CartState, SliceItem};
use time::{Duration, OffsetDateTime};

use super::{cart, hours, purchase, World, T};
use crate::core::command::{Request, Response};
use crate::store::Forget;

/// When the cart was filled, long enough before [`T`] that every case lies in the past.
const CART: OffsetDateTime = time::macros::datetime!(2026-11-18 10:00 UTC);

/// The state of the one cart, as the listing and as a slice show it, at `now`.
async fn states(world: &World, bundle: &GrantBundle, now: OffsetDateTime) -> (Option<CartState>, Option<CartState>) {
    let Ok(Response::Signals { signals }) = world.try_run(Request::Signals { kind: Some(Kind::Cart) }, now).await else { panic!("no listing") };
    let [listed] = signals.as_slice() else { panic!("one cart, got {signals:?}") };
    let served = world.slice(&bundle.token, "kinds=cart", now).await.expect("served");
    let (jws, _pass) = served.deliver().expect("handed over");
    let claims = bundle.verify_slice(&super::text(jws)).expect("verifies");
    let [SliceItem::Raw(item)] = claims.items.as_slice() else { panic!("one raw item, got {:?}", claims.items) };
    (listed.state, item.state)
}

/// One cart at [`CART`] at `shop.example`, and what follows it.
struct Case {
    what: &'static str,
    /// Purchases: how long after the cart, and where.
    bought: Vec<(Duration, &'static str)>,
    /// When the state is asked for, after the cart.
    asked: Duration,
    state: CartState,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cart_is_purchased_abandoned_or_open_by_time_and_merchant() {
    let second = Duration::seconds(1);
    let day = hours(24);
    let case = |what, bought, asked, state| Case { what, bought, asked, state };
    let cases = [
        case("nothing bought, within the delay", vec![], hours(1), CartState::Open),
        case("nothing bought, a second before the delay ends", vec![], day - second, CartState::Open),
        case("nothing bought, the delay over", vec![], day, CartState::Abandoned),
        case("bought at the merchant soon after", vec![(hours(2), "shop.example")], hours(3), CartState::Purchased),
        case("bought at the merchant as the delay ends", vec![(day, "shop.example")], day * 2, CartState::Purchased),
        case("bought at the merchant a second too late", vec![(day + second, "shop.example")], day * 2, CartState::Abandoned),
        case("bought at the merchant at the very moment of the cart", vec![(Duration::ZERO, "shop.example")], day * 2, CartState::Abandoned),
        case("bought at the merchant before the cart", vec![(-hours(1), "shop.example")], day * 2, CartState::Abandoned),
        case("bought elsewhere, within the delay", vec![(hours(2), "other.example")], hours(3), CartState::Open),
        case("bought elsewhere, the delay over", vec![(hours(2), "other.example")], day, CartState::Abandoned),
        case("bought at another host of the same merchant", vec![(hours(2), "www.shop.example")], hours(3), CartState::Purchased),
        case("bought elsewhere, then at the merchant", vec![(hours(1), "other.example"), (hours(5), "shop.example")], day * 2, CartState::Purchased),
    ];
    for Case { what, bought, asked, state } in cases {
        let world = World::new();
        let mut signals = vec![cart("c", CART, "shop.example")];
        signals.extend(bought.iter().enumerate().map(|(i, (after, merchant))| purchase(&format!("p{i}"), CART + *after, merchant)));
        world.ingest(&signals).await;
        let bundle = world.grant("cart", "raw", "30d").await;
        assert_eq!(states(&world, &bundle, CART + asked).await, (Some(state), Some(state)), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forgetting_the_purchase_forgets_that_the_cart_was_bought() {
    let world = World::new();
    world.ingest(&[cart("c", CART, "shop.example"), purchase("p", CART + hours(2), "shop.example")]).await;
    let bundle = world.grant("cart", "raw", "30d").await;
    assert_eq!(states(&world, &bundle, T).await, (Some(CartState::Purchased), Some(CartState::Purchased)));
    world.run(Request::Forget { what: Forget::Id("p".into()) }).await;
    assert_eq!(states(&world, &bundle, T).await, (Some(CartState::Abandoned), Some(CartState::Abandoned)));
}
