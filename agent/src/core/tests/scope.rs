//! Scope: what a slice holds is exactly what the query asks for within the grant's terms,
//! narrowed by the token's caveats; anything more is refused, naming the field.

use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::{Caveat, GrantId};
use optin_protocol::slice::SliceError;
use optin_protocol::token::Token;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::{hours, ts, week, World, T};
use crate::core::Refusal;

/// What a request must come to: these fixture signals, in this order, or a refusal with
/// this status naming this field (or, for 401, giving this reason to the audit log).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Items(Vec<String>),
    Refused(u16, String),
}

fn items(ids: &[&str]) -> Expect {
    Expect::Items(ids.iter().map(|id| id.to_string()).collect())
}

fn refused(status: u16, what: &str) -> Expect {
    Expect::Refused(status, what.to_owned())
}

fn outcome(refusal: &Refusal) -> Expect {
    let what = match refusal {
        Refusal::Token(reason) => reason.to_string(),
        Refusal::Exceeds { field, .. } => field.to_string(),
        Refusal::Invalid { field, .. } => field.clone(),
        Refusal::Paused => "paused".into(),
        Refusal::Busy => "busy".into(),
        Refusal::RateLimited { retry_after } => format!("rate-limited for {retry_after} s"),
        Refusal::BudgetExhausted => "budget exhausted".into(),
        Refusal::Internal(detail) => format!("internal: {detail}"),
    };
    Expect::Refused(refusal.status(), what)
}

/// Fetches a slice with `token` for `query` and compares what it holds with `expected`.
async fn check(world: &World, bundle: &GrantBundle, token: &str, query: &str, expected: &Expect, case: &str) {
    let got = match world.fetch(bundle, token, query).await {
        Ok(claims) => Expect::Items(world.seen(&claims, &week())),
        Err(refusal) => outcome(&refusal),
    };
    assert_eq!(&got, expected, "{case}");
}

/// The searches and carts of the last seven days, kind by kind in time order.
const DEFAULT: [&str; 4] = ["s-3d", "s-1h", "c-5d", "c-2d"];

/// The same at `category` granularity: whole days only, so not `s-1h`, which is today's.
const CATEGORIES: [&str; 3] = ["search 2026-11-17", "cart 2026-11-15", "cart 2026-11-18"];

#[tokio::test(flavor = "multi_thread")]
async fn slices_hold_what_the_query_asks_within_the_grant() {
    let world = World::new();
    world.ingest(&week()).await;
    let raw = world.grant("search,cart", "raw", "7d").await;
    let coarse = world.grant("search", "category", "30d").await;
    let at = |d: Duration| ts(T + d);
    let cases: Vec<(&GrantBundle, String, Expect)> = vec![
        (&raw, String::new(), items(&DEFAULT)),
        (&raw, "kinds=search".into(), items(&["s-3d", "s-1h"])),
        (&raw, "kinds=cart".into(), items(&["c-5d", "c-2d"])),
        (&raw, "kinds=purchase".into(), refused(403, "kinds")),
        (&raw, "kinds=search,purchase".into(), refused(403, "kinds")),
        // Categories show days, so they are cut to whole days: today (2026-11-20) is not over.
        (&raw, "granularity=category".into(), items(&CATEGORIES)),
        (&raw, format!("granularity=category&since={}", at(-Duration::days(3))), refused(400, "since")),
        (&raw, "granularity=category&since=2026-11-17T00:00:00Z".into(), items(&["search 2026-11-17", "cart 2026-11-18"])),
        (&raw, format!("since={}", at(-Duration::days(8))), refused(403, "since")),
        (&raw, format!("since={}", at(-Duration::days(7))), items(&DEFAULT)),
        // `since <= at`: the cart of exactly two days ago is in.
        (&raw, format!("since={}", at(-Duration::days(2))), items(&["s-1h", "c-2d"])),
        // `at < until`: the search of exactly an hour ago is out.
        (&raw, format!("until={}", at(-hours(1))), items(&["s-3d", "c-5d", "c-2d"])),
        // Nothing is known about the future: `until` is clamped to now.
        (&raw, format!("until={}", at(Duration::days(2))), items(&DEFAULT)),
        (&raw, format!("since={}&until={}", at(-Duration::days(1)), at(-Duration::days(2))), refused(400, "until")),
        (&raw, "limit=3".into(), items(&["s-3d", "s-1h", "c-5d"])),
        (&raw, "limit=1000".into(), items(&DEFAULT)),
        (&coarse, String::new(), items(&["search 2026-11-10", "search 2026-11-17"])),
        (&coarse, format!("until={}", at(Duration::days(2))), refused(400, "until")),
        (&coarse, "granularity=raw".into(), refused(403, "granularity")),
        (&coarse, "kinds=cart".into(), refused(403, "kinds")),
    ];
    for (bundle, query, expected) in &cases {
        let case = format!("grant {} {}, query {query:?}", bundle.terms.kinds, bundle.terms.granularity);
        check(&world, bundle, &bundle.token, query, expected, &case).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_serves_until_it_expires() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search", "raw", "30d").await;
    let expires = bundle.terms.expires_at;
    // 90 days from 2026-11-20 10:00, rounded up to the next UTC midnight.
    assert_eq!(expires, datetime!(2027-02-19 0:00 UTC));
    let cases: [(OffsetDateTime, bool); 3] = [(T, true), (expires - Duration::seconds(1), true), (expires, false)];
    for (now, serves) in cases {
        let got = world.slice(&bundle.token, "", now).await.map(|_| ()).map_err(|r| outcome(&r));
        let expected = if serves { Ok(()) } else { Err(refused(401, "grant expired")) };
        assert_eq!(got, expected, "at {}", ts(now));
    }
}

/// The grant's root token narrowed by `caveats`.
pub(super) fn narrowed(bundle: &GrantBundle, caveats: &[&str]) -> String {
    let mut token = Token::parse(&bundle.token).expect("the bundle's token");
    for caveat in caveats {
        let caveat: Caveat = caveat.parse().expect("a caveat");
        token = token.attenuate(&caveat);
    }
    token.encode()
}

#[tokio::test(flavor = "multi_thread")]
async fn caveats_only_narrow() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let soon = format!("expires={}", ts(T + hours(1)));
    let past = format!("expires={}", ts(T - Duration::seconds(1)));
    let cases: Vec<(Vec<&str>, String, Expect)> = vec![
        (vec!["kinds=search"], String::new(), items(&["s-3d", "s-1h"])),
        (vec!["kinds=search"], "kinds=cart".into(), refused(403, "kinds")),
        (vec!["kinds=search,purchase"], String::new(), items(&["s-3d", "s-1h"])),
        // Caveats that leave no kind make a token of nothing: refused like a forged one.
        (vec!["kinds=purchase"], String::new(), refused(401, "token does not verify")),
        (vec!["granularity=category"], String::new(), items(&CATEGORIES)),
        (vec!["granularity=category"], "granularity=raw".into(), refused(403, "granularity")),
        (vec!["window=1d"], String::new(), items(&["s-1h"])),
        (vec!["window=1d"], format!("since={}", ts(T - Duration::days(2))), refused(403, "since")),
        (vec!["window=30d"], String::new(), items(&DEFAULT)),
        (vec![&soon], String::new(), items(&DEFAULT)),
        (vec![&past], String::new(), refused(401, "grant expired")),
        (vec!["kinds=search", "window=1d"], String::new(), items(&["s-1h"])),
        (vec!["window=1d", "window=30d"], String::new(), items(&["s-1h"])),
        (vec!["aud=partner.example"], String::new(), items(&DEFAULT)),
        (vec!["aud=partner.example", "aud=partner.example"], String::new(), items(&DEFAULT)),
        (vec!["aud=partner.example", "aud=other.example"], String::new(), refused(401, "token does not verify")),
    ];
    for (caveats, query, expected) in &cases {
        let token = narrowed(&bundle, caveats);
        check(&world, &bundle, &token, query, expected, &format!("caveats {caveats:?}, query {query:?}")).await;
    }
    // A coarser granting grant is not made finer by a caveat.
    let coarse = world.grant("search", "category", "30d").await;
    let token = narrowed(&coarse, &["granularity=raw"]);
    check(&world, &coarse, &token, "", &items(&["search 2026-11-10", "search 2026-11-17"]), "granularity=raw on a category grant").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_token_is_served_to_the_partner_and_audited_so() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let token = narrowed(&bundle, &["aud=partner.example", "kinds=search"]);
    let claims = world.fetch(&bundle, &token, "").await.expect("served");
    assert_eq!(claims.aud, "partner.example");
    let (jws, _pass) = world.slice(&token, "", T).await.expect("served").deliver().expect("delivered");
    let refused = bundle.verify_slice(&super::text(jws)).expect_err("a partner's slice does not verify as the marketer's");
    assert_eq!(refused, SliceError::Claim { claim: "aud", expected: "acme.example".into(), found: "partner.example".into() });
    let (records, _) = world.audit().await;
    let served = records.last().expect("a record");
    assert!(
        matches!(&served.record.event, crate::store::AuditEvent::Served { audience: Some(a), marketer, .. } if a == "partner.example" && marketer == "acme.example"),
        "{served:?}"
    );
    let info = world.core.grant_info(Some(&token), "/v1/grant", T).await.expect("grant info");
    assert_eq!((info.terms.audience.as_str(), info.terms.kinds.to_string()), ("partner.example", "search".to_owned()), "the token's terms, narrowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_follow_the_cursor_without_repeating_or_skipping() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let other = world.grant_to("globex.example", "search,cart", "raw", "7d").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        assert!(page < 10, "pages never end");
        let query = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".to_owned(),
        };
        let claims = world.fetch(&bundle, &bundle.token, &query).await.expect("a page");
        seen.extend(world.seen(&claims, &week()));
        cursor = claims.next_cursor;
        if let Some(c) = &cursor {
            // A cursor is this grant's alone.
            let got = world.fetch(&other, &other.token, &format!("cursor={c}")).await.map(|_| ()).map_err(|r| outcome(&r));
            assert_eq!(got, Err(refused(400, "cursor")), "another grant's cursor");
        } else {
            break;
        }
    }
    assert_eq!(seen, DEFAULT);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_tokens_that_are_not_genuine_without_recording_them() {
    let world = World::new();
    world.ingest(&week()).await;
    let bundle = world.grant("search,cart", "raw", "7d").await;
    let attenuated = narrowed(&bundle, &["kinds=search"]);
    let (root_body, _) = bundle.token.split_once('.').expect("body.tag");
    let (_, attenuated_tag) = attenuated.split_once('.').expect("body.tag");
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "malformed token"),
        ("no prefix", bundle.token.trim_start_matches("optin_").to_owned(), "malformed token"),
        ("a caveat dropped", format!("{root_body}.{attenuated_tag}"), "token does not verify"),
        ("another secret", Token::mint(&[7; 32], &bundle.grant_id).encode(), "token does not verify"),
        ("an unknown grant", Token::mint(&[7; 32], &GrantId::from_bytes([1; 12])).encode(), "unknown grant"),
    ];
    let (before, _) = world.audit().await;
    for (what, token, reason) in &cases {
        let got = world.slice(token, "", T).await.map(|_| ()).map_err(|r| outcome(&r));
        assert_eq!(got, Err(refused(401, reason)), "{what}");
    }
    let (after, chain) = world.audit().await;
    assert_eq!(after.len(), before.len(), "refusals of tokens that are not genuine are not recorded");
    assert_eq!(chain, Ok(after.len() as u64));
    assert_eq!(world.core.anonymous_refusals(), cases.len() as u64, "but they are counted");
}
