//! Scope: a request may ask for less than its grant, never more; category slices hold only
//! kind, category and day, and their bounds are whole days, so no client learns more; two
//! grants cannot link their slices; pages.

use std::collections::BTreeSet;

use serde_json::Value;
use time::{Duration, OffsetDateTime, Time};

use optin_protocol::bundle::GrantBundle;
use optin_tests::fixture::{self, WALKTHROUGH_SHARED};
use optin_tests::{assert_problem, fetch, now, raw_items, ts, Agent};

/// The start of the UTC day of `at` (the harness's times are UTC).
fn midnight(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_time(Time::MIDNIGHT)
}

async fn started_with_signals() -> (Agent, Vec<Value>) {
    let agent = Agent::start().await;
    let signals = fixture::walkthrough(now());
    agent.ingest(&fixture::ndjson(&signals)).await;
    (agent, signals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_requests_beyond_the_grant_naming_the_field() {
    let (agent, _) = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart", "category", "7d").await;
    // A category grant's bounds are whole UTC days.
    let today = midnight(now());
    let before_window = ts(today - Duration::days(8));
    let inside = ts(today - Duration::days(3));
    let earlier = ts(today - Duration::days(4));
    let cases: Vec<(String, u16, &str)> = vec![
        // Beyond the grant: 403.
        ("kinds=purchase".into(), 403, "kinds"),
        ("kinds=search,purchase".into(), 403, "kinds"),
        (format!("since={before_window}"), 403, "since"),
        ("granularity=raw".into(), 403, "granularity"),
        // A bound inside a day, at category granularity: refused, not floored.
        (format!("since={}", ts(today - Duration::days(3) + Duration::hours(10))), 400, "since"),
        (format!("until={}", ts(today - Duration::days(1) + Duration::seconds(1))), 400, "until"),
        (format!("since={inside}&until={}", ts(today - Duration::seconds(1))), 400, "until"),
        // Malformed: 400.
        ("kinds=walks".into(), 400, "kinds"),
        ("kinds=".into(), 400, "kinds"),
        ("limit=0".into(), 400, "limit"),
        ("limit=1001".into(), 400, "limit"),
        ("limit=ten".into(), 400, "limit"),
        ("since=yesterday".into(), 400, "since"),
        ("until=soon".into(), 400, "until"),
        ("granularity=fine".into(), 400, "granularity"),
        ("kind=search".into(), 400, "kind"),
        ("limit=1&limit=2".into(), 400, "limit"),
        (format!("since={inside}&until={earlier}"), 400, "until"),
        ("cursor=".into(), 400, "cursor"),
    ];
    for (query, status, field) in cases {
        let response = agent.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
        assert_problem(&response, status, field, &query);
        assert_eq!(response.header("www-authenticate"), None, "{query}: not a token problem");
    }

    // Asking for less is fine, and the slice says what was applied.
    for (query, kinds) in [
        ("kinds=search".to_owned(), "search"),
        ("kinds=cart,search".to_owned(), "search,cart"),
        ("granularity=category".to_owned(), "search,cart"),
        (format!("since={inside}"), "search,cart"),
        ("limit=1000".to_owned(), "search,cart"),
    ] {
        let response = agent.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
        assert_eq!(response.status.as_u16(), 200, "{query}: {}", response.text());
        let claims = bundle.verify_slice(&response.text()).expect("verifies");
        assert_eq!(claims.scope.kinds.to_string(), kinds, "{query}");
        if query.starts_with("since=") {
            assert_eq!(ts(claims.scope.since), inside);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_slices_hold_only_kind_category_and_day() {
    let (agent, signals) = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart", "category", "30d").await;
    let response = agent.get("/v1/slice", Some(&bundle.token)).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    // Read the verified payload as plain JSON, so no field can hide behind a type.
    let payload = optin_protocol::jws::verify(&response.text(), &bundle.jwk).expect("verifies");
    let payload: Value = serde_json::from_slice(&payload).expect("JSON payload");
    // Today is not over, so it is not served: the slice ends at today's midnight.
    let until = payload["scope"]["until"].as_str().expect("until").to_owned();
    assert!(until.ends_with("T00:00:00Z"), "a category slice ends at a midnight: {until}");
    let mut got: Vec<(String, String, String)> = Vec::new();
    for item in payload["items"].as_array().expect("items") {
        let object = item.as_object().expect("an item is an object");
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert!(keys.is_subset(&BTreeSet::from(["kind", "category", "day"])), "extra fields in a category item: {item}");
        let day = item["day"].as_str().expect("day");
        assert_eq!(day.len(), 10, "{item}");
        got.push((item["kind"].as_str().expect("kind").into(), item["category"].as_str().unwrap_or("").into(), day.into()));
    }
    got.sort();
    let mut expected: Vec<(String, String, String)> = WALKTHROUGH_SHARED
        .iter()
        .map(|(id, _)| fixture::by_id(&signals, id))
        .filter(|s| s["at"].as_str().expect("at") < until.as_str())
        .map(|s| {
            let day = s["at"].as_str().expect("at")[..10].to_owned();
            (s["kind"].as_str().expect("kind").into(), s["category"].as_str().unwrap_or("").into(), day)
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(payload["scope"]["granularity"], "category");
}

/// What a probe of a category slice told the client: whether the signal was in it, or
/// nothing at all (a refusal).
enum Answer {
    In,
    Out,
    Refused,
}

async fn probe(agent: &Agent, bundle: &GrantBundle, query: &str) -> Answer {
    let response = agent.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
    if response.status.as_u16() != 200 {
        let problem = response.problem().unwrap_or_else(|| panic!("{query}: not problem+json: {}", response.text()));
        assert_eq!(problem.status, 400, "{query}: a bound inside a day is malformed: {problem:?}");
        let field = problem.field.unwrap_or_default();
        assert!(query.starts_with(&format!("{field}=")), "{query}: the refusal names the bound: {field}");
        return Answer::Refused;
    }
    let claims = bundle.verify_slice(&response.text()).expect("verifies");
    if claims.items.is_empty() {
        Answer::Out
    } else {
        Answer::In
    }
}

/// A client that wants the exact time of the one signal it can see, knowing it lies in
/// `[lo, hi)`: it halves that interval, asking "on or after `mid`?" with `since=mid` and
/// "before `mid`?" with `until=mid`, and when both are refused tries the midnights around
/// `mid` instead. Returns what it ends up knowing.
async fn bisect(agent: &Agent, bundle: &GrantBundle, mut lo: OffsetDateTime, mut hi: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    for _ in 0..64 {
        let mid = lo + Duration::seconds((hi - lo).whole_seconds() / 2);
        let candidates = [mid, midnight(mid), midnight(mid) + Duration::DAY];
        let mut narrowed = false;
        for at in candidates.into_iter().filter(|at| lo < *at && *at < hi) {
            match probe(agent, bundle, &format!("since={}", ts(at))).await {
                Answer::In => lo = at,
                Answer::Out => hi = at,
                Answer::Refused => match probe(agent, bundle, &format!("until={}", ts(at))).await {
                    Answer::In => hi = at,
                    Answer::Out => lo = at,
                    Answer::Refused => continue,
                },
            }
            narrowed = true;
            break;
        }
        if !narrowed {
            break;
        }
    }
    (lo, hi)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bisecting_client_learns_a_signals_day_and_nothing_finer() {
    let agent = Agent::start().await;
    let today = midnight(now());
    let day = today - Duration::days(3);
    let at = day + Duration::hours(13) + Duration::minutes(37) + Duration::seconds(11);
    let signal = fixture::search("secret-time", at, "trail running shoes", "bing.com", "Apparel & Accessories > Shoes");
    agent.ingest(&fixture::ndjson(&[signal])).await;
    let bundle = agent.grant("acme.example", "search", "category", "30d").await;
    // The client starts from the day the item shows, widened by a day on each side, so a
    // bisection by the second would end at the signal's exact time.
    let (lo, hi) = bisect(&agent, &bundle, day - Duration::DAY, day + Duration::days(2)).await;
    assert!(lo <= day && day + Duration::DAY <= hi, "the client narrowed the signal's time to [{}, {}), within its day {}", ts(lo), ts(hi), ts(day));
    assert_eq!((lo, hi), (day, day + Duration::DAY), "the day, which the item shows anyway, is what whole-day bounds find");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_slices_never_serve_the_day_that_is_not_over() {
    let agent = Agent::start().await;
    let today = midnight(now());
    let signals = [
        fixture::search("yesterday", today - Duration::seconds(1), "last night", "bing.com", "Home"),
        fixture::search("today", today, "this morning", "bing.com", "Home"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = agent.grant("acme.example", "search", "category", "30d").await;
    for query in ["", "until=9999-01-01T00:00:00Z"] {
        let response = agent.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
        assert_eq!(response.status.as_u16(), 200, "{query}: {}", response.text());
        let claims = bundle.verify_slice(&response.text()).expect("verifies");
        let cut = OffsetDateTime::from_unix_timestamp(claims.iat).expect("iat");
        // Both bounds are midnights: the window's edge is the first whole day inside it,
        // and the slice ends where the day it was cut began.
        assert_eq!(claims.scope.until, midnight(cut), "{query}: until");
        assert_eq!(claims.scope.since, midnight(claims.scope.since), "{query}: since is a midnight");
        assert!(claims.scope.since >= cut - Duration::days(30), "{query}: since stays inside the window");
        let days: Vec<String> = claims.items.iter().map(|i| serde_json::to_value(i).expect("item")["day"].as_str().unwrap_or("?").to_owned()).collect();
        let served_today = days.contains(&today.date().to_string());
        assert_eq!(served_today, claims.scope.until > today, "{query}: today's signal is served only once today is over: {days:?}");
    }
    // The person's preview shows what the marketer would get.
    let preview = agent.cli(&["preview", bundle.grant_id.as_str(), "--json"]).await.json();
    let until = preview[0]["scope"]["until"].as_str().expect("until");
    assert!(until.ends_with("T00:00:00Z"), "the preview is cut to whole days too: {until}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_grants_cannot_link_their_slices() {
    let (agent, _) = started_with_signals().await;
    let a = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let b = agent.grant("globex.example", "search,cart", "raw", "30d").await;
    assert_ne!(a.jwk.kid, b.jwk.kid, "each grant signs with its own key");
    assert_ne!(a.jwk.x, b.jwk.x);
    assert_ne!(a.issuer, b.issuer);
    let (_, ca) = fetch(&agent, &a, "").await.remove(0);
    let (_, cb) = fetch(&agent, &b, "").await.remove(0);
    assert_ne!(ca.iss, cb.iss);
    assert_ne!(ca.sub, cb.sub, "the person has a different pseudonym for each grant");
    assert_eq!(raw_items(&ca), raw_items(&cb), "both see the same signals");
    let ids = |c: &optin_protocol::slice::SliceClaims| -> BTreeSet<String> {
        c.items
            .iter()
            .map(|i| match i {
                optin_protocol::slice::SliceItem::Raw(r) => r.id.clone(),
                other => panic!("raw expected: {other:?}"),
            })
            .collect()
    };
    let (ia, ib) = (ids(&ca), ids(&cb));
    for claims in [&ca, &cb] {
        assert!(is_id(&claims.sub, "p_"), "sub is p_ and 32 hex digits: {}", claims.sub);
        assert!(is_id(&claims.jti, "s_"), "jti is s_ and 32 hex digits: {}", claims.jti);
        assert_eq!(claims.iss, format!("urn:optin:agent:{}", claims.sub));
    }
    assert!(ia.iter().chain(ib.iter()).all(|id| is_id(id, "i_")), "item ids are i_ and 32 hex digits: {ia:?}");
    assert_eq!(ia.len(), ca.items.len(), "item ids are unique within a slice");
    assert!(ia.is_disjoint(&ib), "item ids differ across grants: {ia:?} / {ib:?}");
    for id in ["s1", "s2", "c1", "c2", "c3"] {
        assert!(!ia.contains(id) && !ib.contains(id), "the store's own ids never leave the agent");
    }
    // The same grant sees the same id for the same signal every time.
    let (_, again) = fetch(&agent, &a, "").await.remove(0);
    assert_eq!(ids(&again), ia);
}

/// `prefix` and 32 lowercase hex digits.
fn is_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_next_cursor() {
    let (agent, signals) = started_with_signals().await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let pages = fetch(&agent, &bundle, "limit=2").await;
    assert_eq!(pages.len(), 3, "five items in pages of two");
    let mut seen = Vec::new();
    for (i, (_, claims)) in pages.iter().enumerate() {
        assert!(claims.items.len() <= 2, "page {i} holds {} items", claims.items.len());
        assert_eq!(claims.scope.limit, 2);
        assert_eq!(claims.next_cursor.is_some(), i + 1 < pages.len(), "only the last page lacks a cursor");
        seen.extend(raw_items(claims));
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no item on two pages: {seen:?}");
    // Kind by kind (search, cart, purchase), each in time order, across pages.
    let order: Vec<(usize, String)> = pages
        .iter()
        .flat_map(|(_, claims)| claims.items.iter().map(optin_tests::item_key))
        .map(|key| {
            let mut words = key.split(' ');
            let kind = words.next().expect("a kind");
            let rank = ["search", "cart", "purchase"].iter().position(|k| *k == kind).expect("a known kind");
            (rank, words.next().expect("a time").to_owned())
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "items are listed kind by kind, in time order");
    let mut expected: Vec<(String, Option<String>)> =
        WALKTHROUGH_SHARED.iter().map(|(id, state)| (fixture::key(fixture::by_id(&signals, id)), state.map(str::to_owned))).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
    assert_problem(&agent.get("/v1/slice?cursor=not-a-cursor", Some(&bundle.token)).await, 400, "cursor", "a made-up cursor");

    // The person's preview shows every one of those pages, not only the first.
    let preview = agent.cli(&["preview", bundle.grant_id.as_str(), "--limit", "2", "--json"]).await.json();
    let previewed: Vec<Vec<String>> =
        preview.as_array().expect("pages").iter().map(|page| page["items"].as_array().expect("items").iter().map(|item| item.to_string()).collect()).collect();
    let fetched: Vec<Vec<String>> =
        pages.iter().map(|(_, claims)| claims.items.iter().map(|item| serde_json::to_value(item).expect("an item").to_string()).collect()).collect();
    assert_eq!(previewed, fetched, "the preview's pages are the marketer's");
    let table = agent.cli(&["preview", bundle.grant_id.as_str(), "--limit", "2"]).await;
    let text = table.ok();
    assert!(text.contains("would receive 5 items in 3 pages"), "{text}");
    assert!(text.contains("page 3 of 3 (1 item):"), "{text}");
    agent.cli(&["preview", bundle.grant_id.as_str(), "--limit", "0"]).await.fails(2, "0 is not in 1..=1000");
}
