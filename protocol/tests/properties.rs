//! Properties of the scope and token rules, over random grants, caveat chains and signals.
//!
//! The unit tests show chosen cases; these check the promises themselves against an oracle
//! written here from SPEC.md, independent of `Terms::evaluate`:
//!
//! - every signal a grant admits is inside the grant: a granted kind, inside the reach of its
//!   window and granularity, through every filter;
//! - a caveat never widens: what a narrowed token admits, the token before it admitted too,
//!   and so did every caveat of the chain taken alone;
//! - a token's chain verifies as the fold of its caveats, and any change to its bytes makes
//!   it refused.

use std::collections::BTreeSet;

use optin_protocol::request::{Choices, RequestedTerms};
use optin_protocol::scope::{category_within, Caveat, GrantId, Granularity, SliceQuery, Terms};
use optin_protocol::sensitive::NeverShare;
use optin_protocol::signal::{parse_value, Kind, Kinds, Signal};
use optin_protocol::span::Span;
use optin_protocol::token::Token;
use proptest::prelude::*;
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-23 12:34:56 UTC);
const PATHS: [&str; 6] =
    ["Apparel & Accessories", "Apparel & Accessories > Shoes", "Apparel & Accessories > Shoes > Boots", "Electronics", "Electronics > Audio", "Home & Garden"];
const MERCHANTS: [&str; 3] = ["a.example", "b.example", "c.example"];
/// Paths of the shipped sensitive list, with their topic: withheld unless the person
/// included the topic.
const SENSITIVE_PATHS: [(&str, &str); 2] = [("Health & Beauty > Health Care", "health"), ("Religious & Ceremonial > Religious Items", "religion")];
/// Queries, with the shipped topic each matches.
const QUERIES: [(&str, Option<&str>); 5] = [
    ("trail running shoes", None),
    ("hiv test", Some("health")),
    ("payday loan", Some("financial-hardship")),
    ("church near me", Some("religion")),
    ("divorce lawyer", Some("personal-hardship")),
];
const TOPICS: [&str; 4] = ["health", "financial-hardship", "religion", "personal-hardship"];
const SECRET: &[u8] = b"a grant secret of thirty-two b.";

fn kinds() -> impl Strategy<Value = Kinds> {
    proptest::sample::subsequence(vec![Kind::Search, Kind::Cart, Kind::Purchase], 1..=3).prop_map(|k| Kinds::new(k).expect("non-empty"))
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![Just(Granularity::Raw), Just(Granularity::Category), Just(Granularity::Aggregate)]
}

/// Windows from an hour to 90 days, whole hours, so day edges fall anywhere.
fn window() -> impl Strategy<Value = Span> {
    (1u64..=90 * 24).prop_map(|h| Span::from_seconds(h * 3600).expect("in range"))
}

fn subset(pool: &'static [&'static str]) -> impl Strategy<Value = Option<Vec<String>>> {
    proptest::option::of(proptest::sample::subsequence(pool.to_vec(), 1..=pool.len()).prop_map(|v| v.into_iter().map(String::from).collect()))
}

prop_compose! {
    fn terms()(kinds in kinds(), granularity in granularity(), window in window(), days in 1i64..200,
               categories in subset(&PATHS), merchants in subset(&MERCHANTS)) -> Terms {
        Terms {
            audience: "acme.example".into(),
            kinds,
            granularity,
            window,
            expires_at: NOW + Duration::days(days),
            categories,
            merchants,
            fields: None,
            rate: None,
            noise: None,
        }
    }
}

prop_compose! {
    fn requested()(t in terms(), days in 1u64..200) -> RequestedTerms {
        RequestedTerms {
            kinds: t.kinds,
            granularity: t.granularity,
            window: t.window,
            duration: Span::from_seconds(days * 86_400).expect("in range"),
            categories: t.categories,
            merchants: t.merchants,
            fields: None,
            rate: None,
        }
    }
}

prop_compose! {
    /// What a person might choose when approving, inside the request or not.
    fn choices()(kinds in proptest::option::of(kinds()), granularity in proptest::option::of(granularity()),
                 window in proptest::option::of(window()), days in proptest::option::of(1u64..200),
                 categories in subset(&PATHS), merchants in subset(&MERCHANTS)) -> Choices {
        Choices {
            kinds,
            granularity,
            window,
            expires: days.map(|d| Span::from_seconds(d * 86_400).expect("in range")),
            categories,
            merchants,
            ..Choices::default()
        }
    }
}

fn caveat() -> impl Strategy<Value = Caveat> {
    prop_oneof![
        kinds().prop_map(Caveat::Kinds),
        granularity().prop_map(Caveat::Granularity),
        window().prop_map(Caveat::Window),
        (-2i64..200).prop_map(|h| Caveat::Expires(NOW + Duration::hours(h))),
        proptest::sample::select(vec!["partner.example", "other.example"]).prop_map(|a| Caveat::Audience(a.into())),
        proptest::sample::subsequence(PATHS.to_vec(), 1..=3).prop_map(|p| Caveat::Categories(p.into_iter().map(String::from).collect())),
        proptest::sample::subsequence(MERCHANTS.to_vec(), 1..=2).prop_map(|m| Caveat::Merchants(m.into_iter().map(String::from).collect())),
    ]
}

/// A signal of any kind, dated from 100 days back to a day ahead, in or out of the pools.
fn signal() -> impl Strategy<Value = Signal> {
    let paths: Vec<&str> = PATHS.iter().copied().chain(SENSITIVE_PATHS.iter().map(|(p, _)| *p)).collect();
    let category = proptest::option::of(proptest::sample::select(paths.clone()));
    let item_category = proptest::option::of(proptest::sample::select(paths));
    let items = proptest::collection::vec(item_category, 1..3);
    let query = proptest::sample::select(QUERIES.iter().map(|(q, _)| *q).collect::<Vec<_>>());
    let merchant = proptest::sample::select(MERCHANTS.to_vec());
    (0u8..3, -24 * 3600i64..100 * 86_400, category, merchant, items, query).prop_map(|(kind, back, category, merchant, items, query)| {
        let items: Vec<_> = items.iter().map(|c| json!({"name": "thing", "price": "1.00", "quantity": 1, "category": c})).collect();
        let mut v = match kind {
            0 => json!({"kind": "search", "query": query, "engine": "duckduckgo.com"}),
            1 => json!({"kind": "cart", "merchant": merchant, "currency": "EUR", "items": items}),
            _ => json!({"kind": "purchase", "merchant": merchant, "currency": "EUR", "total": "1.00", "items": items}),
        };
        v["id"] = json!(format!("s{back}"));
        v["at"] = json!(optin_protocol::timestamp::format(NOW - Duration::seconds(back)));
        if let Some(c) = category {
            v["category"] = json!(c);
        }
        // Items without a category are written without the member.
        if let Some(items) = v.get_mut("items").and_then(|i| i.as_array_mut()) {
            for item in items.iter_mut().filter(|i| i["category"].is_null()) {
                item.as_object_mut().expect("an object").remove("category");
            }
        }
        parse_value(&v, &|m| Ok(m.to_owned())).expect("a valid signal")
    })
}

/// A never-share list: some shipped topics switched off, some paths of the person's own.
fn never_share() -> impl Strategy<Value = NeverShare> {
    let set = |pool: &[&'static str]| proptest::sample::subsequence(pool.to_vec(), 0..=pool.len()).prop_map(|v| v.into_iter().map(String::from).collect());
    (set(&TOPICS), set(&PATHS)).prop_map(|(included, categories)| NeverShare { included, categories })
}

/// Which of `signals` (by place) `terms` admits in a slice cut now with the default query,
/// under the shipped never-share list as it stands by default.
fn admitted(terms: &Terms, signals: &[Signal]) -> Option<BTreeSet<usize>> {
    admitted_under(terms, &NeverShare::default(), signals)
}

fn admitted_under(terms: &Terms, never: &NeverShare, signals: &[Signal]) -> Option<BTreeSet<usize>> {
    let mut applied = terms.evaluate(&SliceQuery::default(), NOW).ok()?;
    applied.never_share = never.clone();
    Some(signals.iter().enumerate().filter(|(_, s)| applied.admits(s)).map(|(i, _)| i).collect())
}

/// The categories a signal shows: its own, and a cart's or purchase's items' (an item
/// without one shows its signal's).
fn shown(s: &Signal) -> Vec<Option<&str>> {
    match &s.body {
        optin_protocol::signal::Body::Search { .. } => vec![s.category.as_deref()],
        optin_protocol::signal::Body::Cart { items, .. } | optin_protocol::signal::Body::Purchase { items, .. } => {
            let mut shown = vec![];
            if s.category.is_some() {
                shown.push(s.category.as_deref());
            }
            shown.extend(items.iter().map(|i| i.category.as_deref().or(s.category.as_deref())));
            shown
        }
    }
}

/// SPEC.md "Sensitive topics", written out again for the pools above: whether the list
/// keeps `s` in the agent.
fn withheld(never: &NeverShare, s: &Signal) -> bool {
    let on = |topic: &str| !never.included.contains(topic);
    let query_topic = match &s.body {
        optin_protocol::signal::Body::Search { query, .. } => QUERIES.iter().find(|(q, _)| q == query).and_then(|(_, t)| *t),
        _ => None,
    };
    let categories = shown(s).into_iter().flatten().collect::<Vec<_>>();
    let sensitive_path = categories.iter().any(|c| SENSITIVE_PATHS.iter().any(|(p, topic)| category_within(c, p) && on(topic)));
    let own_path = categories.iter().any(|c| never.categories.iter().any(|p| category_within(c, p)));
    query_topic.is_some_and(on) || sensitive_path || own_path
}

/// SPEC.md "Grants and scope", written out again: whether `terms` may show `s` now, under the
/// default never-share list.
fn inside(terms: &Terms, s: &Signal) -> bool {
    inside_under(terms, &NeverShare::default(), s)
}

fn inside_under(terms: &Terms, never: &NeverShare, s: &Signal) -> bool {
    if NOW >= terms.expires_at || !terms.kinds.contains(s.kind()) {
        return false;
    }
    let edge = NOW - terms.window.duration();
    let (earliest, latest) = match terms.granularity {
        Granularity::Raw => (edge, NOW),
        // Whole days only: from the first midnight at or after the edge to the start of today.
        _ => {
            let midnight = |t: OffsetDateTime| t.replace_time(time::Time::MIDNIGHT);
            let first = if midnight(edge) == edge { edge } else { midnight(edge) + Duration::days(1) };
            (first, midnight(NOW))
        }
    };
    if s.at < earliest || s.at >= latest {
        return false;
    }
    let shown = shown(s);
    let categories_ok = terms.categories.as_ref().map_or(true, |paths| shown.iter().all(|c| c.is_some_and(|c| paths.iter().any(|p| category_within(c, p)))));
    let merchants_ok = terms.merchants.as_ref().map_or(true, |m| s.body.merchant().is_some_and(|x| m.iter().any(|y| y == x)));
    categories_ok && merchants_ok && !withheld(never, s)
}

proptest! {
    // No regression files: a failure prints its minimal case, which goes into a unit test.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_admitted_signal_is_inside_the_grant(t in terms(), signals in proptest::collection::vec(signal(), 0..24)) {
        let Some(ids) = admitted(&t, &signals) else { return Ok(()) };
        let expected: BTreeSet<usize> = signals.iter().enumerate().filter(|(_, s)| inside(&t, s)).map(|(i, _)| i).collect();
        prop_assert_eq!(ids, expected);
    }

    #[test]
    fn nothing_on_the_never_share_list_is_admitted(t in terms(), never in never_share(), signals in proptest::collection::vec(signal(), 0..24)) {
        let Some(ids) = admitted_under(&t, &never, &signals) else { return Ok(()) };
        let expected: BTreeSet<usize> = signals.iter().enumerate().filter(|(_, s)| inside_under(&t, &never, s)).map(|(i, _)| i).collect();
        prop_assert_eq!(ids, expected);
    }

    #[test]
    fn an_approval_never_shares_more_than_its_request(r in requested(), c in choices(), signals in proptest::collection::vec(signal(), 0..24)) {
        let asked = r.narrow(&Choices::default()).expect("the request's own terms").terms("acme.example", NOW).expect("an expiry");
        let Ok(approved) = r.narrow(&c) else { return Ok(()) };
        let approved = approved.terms("acme.example", NOW).expect("an expiry");
        prop_assert!(approved.kinds.is_subset(&asked.kinds));
        prop_assert!(!approved.granularity.is_finer_than(asked.granularity));
        prop_assert!(approved.window <= asked.window && approved.expires_at <= asked.expires_at);
        if let (Some(narrow), Some(wide)) = (admitted(&approved, &signals), admitted(&asked, &signals)) {
            prop_assert!(narrow.is_subset(&wide), "approving {c:?} widened the request");
        }
    }

    #[test]
    fn a_caveat_chain_never_widens(t in terms(), chain in proptest::collection::vec(caveat(), 1..6),
                                   signals in proptest::collection::vec(signal(), 0..24)) {
        let mut before = t.clone();
        for caveat in &chain {
            let Some(after) = before.narrow(caveat) else { return Ok(()) };
            prop_assert!(after.kinds.is_subset(&before.kinds));
            prop_assert!(!after.granularity.is_finer_than(before.granularity));
            prop_assert!(after.window <= before.window && after.expires_at <= before.expires_at);
            if let Some(narrow) = admitted(&after, &signals) {
                let expected: BTreeSet<usize> = signals.iter().enumerate().filter(|(_, s)| inside(&after, s)).map(|(i, _)| i).collect();
                prop_assert_eq!(&narrow, &expected, "narrowed by {}", caveat);
            }
            if let (Some(narrow), Some(wide)) = (admitted(&after, &signals), admitted(&before, &signals)) {
                prop_assert!(narrow.is_subset(&wide), "{caveat} widened {narrow:?} beyond {wide:?}");
            }
            // Inside every caveat on its own, too.
            if let (Some(narrow), Some(alone)) = (admitted(&after, &signals), t.narrow(caveat).and_then(|a| admitted(&a, &signals))) {
                prop_assert!(narrow.is_subset(&alone), "the chain shows more than {caveat} alone");
            }
            before = after;
        }
    }

    #[test]
    fn a_token_verifies_as_its_chain_and_no_other_bytes_do(t in terms(), chain in proptest::collection::vec(caveat(), 0..5),
                                                            at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let grant = GrantId::from_bytes([7; 12]);
        let token = chain.iter().fold(Token::mint(SECRET, &grant), |tok, c| tok.attenuate(c));
        let text = token.encode();
        let parsed = Token::parse(&text).expect("an encoded token parses");
        let audiences: BTreeSet<_> = chain.iter().filter_map(|c| if let Caveat::Audience(a) = c { Some(a) } else { None }).collect();
        let folded = chain.iter().try_fold(t.clone(), |acc, c| acc.narrow(c)).filter(|_| audiences.len() <= 1);
        prop_assert_eq!(parsed.verify(SECRET, &t).ok(), folded);

        // Any other byte anywhere: refused, whether as malformed, non-canonical or by its tag.
        let mut bytes = text.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        let changed = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert!(Token::parse(&changed).and_then(|tok| tok.verify(SECRET, &t)).is_err(), "{changed} verified");
    }
}
