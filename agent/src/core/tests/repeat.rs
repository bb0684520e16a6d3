//! Repeated slices: the same request answered with the same signed bytes exactly while a cut
//! made now would hold the same items, and every delivery on record.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::slice::SliceClaims;
use serde_json::Value;
use time::Duration;

use optin_protocol::slice::{CartState, SliceItem};
use serde_json::json;

use super::scope::narrowed;
use super::{cart, hours, purchase, search, ts, World, T};
use crate::core::command::{Request, Response};
use crate::core::Refusal;
use crate::store::{AuditEvent, Forget};

const QUERY: &str = "kinds=search,cart";
const SEARCHES: &str = "kinds=search";

/// What happens between the first slice, at [`T`], and the second.
enum Change {
    Nothing,
    Store(Value),
    Forget(&'static str),
    /// A category path of the person's own added to the never-share list.
    Exclude(&'static str),
    /// The second request asks this instead.
    Query(&'static str),
    /// The second request presents the grant's token narrowed by these caveats.
    Narrowed(&'static [&'static str]),
}

struct Case {
    what: &'static str,
    signals: Vec<Value>,
    change: Change,
    /// When the second request comes, after [`T`].
    after: Duration,
    /// Whether it gets the first slice again.
    again: bool,
}

/// A slice handed over at `after` past [`T`]: its JWS and claims, verified as its marketer
/// would, and its `served` record.
async fn take(world: &World, bundle: &GrantBundle, token: &str, query: &str, after: Duration) -> (String, SliceClaims, Option<u64>) {
    let served = world.slice(token, query, T + after).await.expect("served");
    let (jws, _delivery) = served.deliver().expect("handed over");
    let jws = super::text(jws);
    let claims = bundle.verify_slice_for(&jws, &super::audience(token, bundle)).expect("the slice verifies with its bundle");
    let (records, chain) = world.audit().await;
    chain.expect("the audit chain verifies");
    let Some(AuditEvent::Served { slice_id, repeat_of, .. }) = records.last().map(|r| &r.record.event) else { panic!("the delivery is on record last") };
    assert_eq!(slice_id, &claims.jti, "the record names the slice handed over");
    (jws, claims, *repeat_of)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_is_served_again_exactly_while_a_new_cut_would_hold_the_same() {
    let second = Duration::seconds(1);
    let shoes = "Apparel & Accessories > Shoes";
    let case = |what, signals, change, after, again| Case { what, signals, change, after, again };
    let cases = [
        case("nothing changed, a second later", vec![search("b", T - hours(1))], Change::Nothing, second, true),
        case("nothing changed, a day later", vec![search("b", T - hours(1))], Change::Nothing, hours(24), true),
        case("the oldest search still at the window's start", vec![search("a", T - hours(24 * 7 - 1))], Change::Nothing, hours(1), true),
        case("the oldest search past the window's start", vec![search("a", T - hours(24 * 7 - 1))], Change::Nothing, hours(1) + second, false),
        case("a search dated ahead, not yet in the window", vec![search("b", T - hours(1)), search("c", T + hours(3))], Change::Nothing, hours(3), true),
        case("a search dated ahead, now in the window", vec![search("b", T - hours(1)), search("c", T + hours(3))], Change::Nothing, hours(3) + second, false),
        case("an open cart, a second before it is abandoned", vec![cart("k", T - hours(2), "shop.example")], Change::Nothing, hours(22) - second, true),
        case("an open cart, abandoned", vec![cart("k", T - hours(2), "shop.example")], Change::Nothing, hours(22), false),
        case(
            "a cart already purchased stays so",
            vec![cart("k", T - hours(30), "shop.example"), purchase("p", T - hours(20), "shop.example")],
            Change::Nothing,
            hours(48),
            true,
        ),
        case("a signal stored", vec![search("b", T - hours(1))], Change::Store(search("d", T - hours(2))), second, false),
        case("a signal stored again, a duplicate", vec![search("b", T - hours(1))], Change::Store(search("b", T - hours(1))), second, true),
        case("a signal forgotten", vec![search("b", T - hours(1)), search("d", T - hours(2))], Change::Forget("d"), second, false),
        case("the never-share list withholds a category", vec![search("b", T - hours(1))], Change::Exclude(shoes), second, false),
        case("another query", vec![search("b", T - hours(1))], Change::Query("kinds=search"), second, false),
        case("a token narrowed to a partner", vec![search("b", T - hours(1))], Change::Narrowed(&["aud=partner.example"]), second, false),
        case("a token narrowed to a shorter window", vec![search("b", T - hours(1))], Change::Narrowed(&["window=1d"]), second, false),
    ];
    for Case { what, signals, change, after, again } in cases {
        let world = World::new();
        world.ingest(&signals).await;
        let bundle = world.grant("search,cart", "raw", "7d").await;
        let (first, claims, repeat_of) = take(&world, &bundle, &bundle.token, QUERY, Duration::ZERO).await;
        assert_eq!(repeat_of, None, "{what}: the first delivery is no repeat");
        let (mut token, mut query) = (bundle.token.clone(), QUERY);
        match change {
            Change::Nothing => {}
            Change::Store(signal) => {
                let ndjson = format!("{signal}\n");
                world.run(Request::Ingest { ndjson, dry_run: false }).await;
            }
            Change::Forget(id) => {
                world.run(Request::Forget { what: Forget::Id(id.into()) }).await;
            }
            Change::Exclude(entry) => {
                world.run(Request::Exclude { entry: entry.into() }).await;
            }
            Change::Query(other) => query = other,
            Change::Narrowed(caveats) => token = narrowed(&bundle, caveats),
        }
        let (second_jws, second_claims, second_repeat) = take(&world, &bundle, &token, query, after).await;
        if again {
            assert_eq!(second_jws, first, "{what}: served again, byte for byte");
            assert_eq!(second_repeat, claims.audit_seq, "{what}: the repeat's record names the first's");
        } else {
            assert_ne!(second_claims.jti, claims.jti, "{what}: cut and signed again");
            assert_eq!(second_repeat, None, "{what}: a new slice is no repeat");
            assert_eq!(second_claims.iat, (T + after).unix_timestamp(), "{what}: cut when asked");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_cut_shows_the_change_that_made_it() {
    let world = World::new();
    world.ingest(&[search("b", T - hours(1)), search("d", T - hours(2))]).await;
    let bundle = world.grant("search", "raw", "7d").await;
    let (_, first, _) = take(&world, &bundle, &bundle.token, SEARCHES, Duration::ZERO).await;
    assert_eq!(first.items.len(), 2);
    world.run(Request::Forget { what: Forget::Id("d".into()) }).await;
    let (_, after_forget, _) = take(&world, &bundle, &bundle.token, SEARCHES, Duration::ZERO).await;
    assert_eq!(world.seen(&after_forget, &[search("b", T - hours(1))]), ["b"], "the forgotten search is in no slice after the forget");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_slice_is_never_served_once_its_grant_is_revoked_or_sharing_paused() {
    let world = World::new();
    world.ingest(&[search("b", T - hours(1))]).await;
    let bundle = world.grant("search", "raw", "7d").await;
    take(&world, &bundle, &bundle.token, SEARCHES, Duration::ZERO).await;
    world.run(Request::Sharing { paused: true }).await;
    assert_eq!(world.slice(&bundle.token, SEARCHES, T).await.err(), Some(Refusal::Paused), "paused: nothing, kept or not");
    world.run(Request::Sharing { paused: false }).await;
    let (_, _, repeat_of) = take(&world, &bundle, &bundle.token, SEARCHES, Duration::ZERO).await;
    assert!(repeat_of.is_some(), "resumed, the same slice is current again");
    world.revoke(&bundle.grant_id).await;
    assert_eq!(world.slice(&bundle.token, SEARCHES, T).await.err(), Some(Refusal::Token("grant revoked")));
    assert_eq!(world.core.repeats.len(), 0, "a revoked grant's slices are let go of");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_delivery_counts_as_a_slice_served() {
    let world = World::new();
    world.ingest(&[search("b", T - hours(1))]).await;
    let bundle = world.grant("search", "raw", "7d").await;
    for _ in 0..3 {
        take(&world, &bundle, &bundle.token, SEARCHES, Duration::ZERO).await;
    }
    let Response::Grants { grants } = world.run(Request::Grants).await else { panic!("not grants") };
    assert_eq!((grants[0].usage.slices, grants[0].usage.items), (3, 3), "three deliveries of one slice of one item");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_kept_is_bounded() {
    let world = World::new();
    world.ingest(&[search("b", T - hours(1))]).await;
    let bundle = world.grant("search", "raw", "7d").await;
    for limit in 1..=300 {
        world.slice(&bundle.token, &format!("kinds=search&limit={limit}"), T).await.expect("served");
    }
    assert_eq!(world.core.repeats.len(), 256, "the least recently asked are let go of");
}

/// A slice's `jti` and its items' JSON, handed over at `now`.
async fn jti_and_items(world: &World, bundle: &GrantBundle, query: &str, now: time::OffsetDateTime) -> (String, String) {
    let (jws, _delivery) = world.slice(&bundle.token, query, now).await.expect("served").deliver().expect("handed over");
    let claims = bundle.verify_slice(&super::text(jws)).expect("verifies");
    (claims.jti.clone(), serde_json::to_string(&claims.items).expect("items"))
}

/// Whether a slice is served again tells nothing a new cut would not: a signal stored that
/// the request's scope does not show makes no new slice, so a marketer polling one question
/// cannot tell from a new `jti` that the person did something it was not granted.
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_the_scope_does_not_show_makes_no_new_slice() {
    let withheld =
        json!({"id": "h", "kind": "search", "at": ts(T - hours(1)), "query": "payday loan", "engine": "bing.com", "category": "Health & Beauty > Health Care"});
    let cases = [
        ("a cart, where only searches are asked", SEARCHES, cart("k", T - hours(1), "shop.example")),
        ("a search the never-share list withholds", SEARCHES, withheld),
        ("a search after the last of a full page", "kinds=search&limit=1", search("d", T - hours(1))),
    ];
    for (what, query, unseen) in cases {
        let world = World::new();
        world.ingest(&[search("b", T - hours(3)), search("c", T - hours(2))]).await;
        let bundle = world.grant("search,cart", "raw", "7d").await;
        let (first, items) = jti_and_items(&world, &bundle, query, T).await;
        world.ingest(&[unseen]).await;
        let (after, after_items) = jti_and_items(&world, &bundle, query, T + Duration::seconds(2)).await;
        assert_eq!(after_items, items, "{what}: the same items");
        assert_eq!(after, first, "{what}: served again");
        // And from then on without cutting: kept again as of that cut.
        let (later, _) = jti_and_items(&world, &bundle, query, T + Duration::seconds(3)).await;
        assert_eq!(later, first, "{what}: still served again");
    }
}

/// A request dated before the slice was cut (a clock set back) cuts again, even where the
/// request fixes the window, so a cart's state is as a cut at that time shows it.
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_set_back_cuts_again_in_a_fixed_window() {
    let world = World::new();
    // Abandoned at T - 1h.
    world.ingest(&[cart("k", T - hours(25), "shop.example")]).await;
    let bundle = world.grant("cart", "raw", "7d").await;
    let query = format!("kinds=cart&since={}&until={}", ts(T - hours(48)), ts(T - hours(24)));
    let state = |items: &str| match &serde_json::from_str::<Vec<SliceItem>>(items).expect("items")[..] {
        [SliceItem::Raw(raw)] => raw.state,
        other => panic!("one raw cart, got {other:?}"),
    };
    let (first, items) = jti_and_items(&world, &bundle, &query, T).await;
    assert_eq!(state(&items), Some(CartState::Abandoned));
    let (again, earlier) = jti_and_items(&world, &bundle, &query, T - hours(2)).await;
    assert_ne!(again, first, "cut again");
    assert_eq!(state(&earlier), Some(CartState::Open), "as a cut at that time shows it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forget_lets_go_of_every_kept_slice() {
    let world = World::new();
    world.ingest(&[search("b", T - hours(2))]).await;
    let bundle = world.grant("search", "raw", "7d").await;
    jti_and_items(&world, &bundle, SEARCHES, T).await;
    assert_eq!(world.core.repeats.len(), 1);
    world.run(Request::Forget { what: Forget::Id("b".into()) }).await;
    assert_eq!(world.core.repeats.len(), 0, "nothing forgotten is held, even in memory");
}
