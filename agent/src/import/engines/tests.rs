//! Tests of the engine rules and the URL matcher.

use serde::Deserialize;

use super::*;

/// The URL cases both matchers are held to; `extension/test/engines.test.mjs` reads the
/// same file.
const CASES: &str = include_str!("../../../../extension/engine-cases.json");

/// One entry of `engine-cases.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    url: String,
    /// `null` for a URL that is not a search; the field itself must be there.
    expect: Option<Expect>,
    why: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Expect {
    engine: String,
    query: String,
}

fn cases() -> Vec<Case> {
    let raw: Vec<serde_json::Value> = serde_json::from_str(CASES).expect("engine-cases.json is a JSON array");
    raw.into_iter()
        .map(|value| {
            assert!(value.get("expect").is_some(), "a case without expect: {value}");
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("a malformed case {value}: {e}"))
        })
        .collect()
}

#[test]
fn engine_cases_are_well_formed() {
    let engines = Engines::builtin().expect("the shipped engines.json is valid");
    let cases = cases();
    assert!(!cases.is_empty());
    let mut urls = HashSet::new();
    for case in &cases {
        assert!(urls.insert(case.url.as_str()), "duplicate case {:?}", case.url);
        if let Some(expect) = &case.expect {
            let known = engines.rules.iter().any(|r| r.domains.contains(&expect.engine));
            assert!(known, "unknown engine {:?} in {:?}", expect.engine, case.url);
        }
    }
}

/// The shipped rules against every case in `engine-cases.json`. All disagreements are
/// listed at once, each with the case's reason.
#[test]
fn builtin_rules_match_the_engine_cases() {
    let engines = Engines::builtin().expect("the shipped engines.json is valid");
    let wrong: Vec<String> = cases()
        .into_iter()
        .filter_map(|case| {
            let got = engines.match_url(&case.url).map(|hit| Expect { engine: hit.engine, query: hit.query });
            (got != case.expect).then(|| format!("{:?}: got {got:?}, want {:?} ({})", case.url, case.expect, case.why.as_deref().unwrap_or("no reason given")))
        })
        .collect();
    assert!(wrong.is_empty(), "the matcher disagrees with engine-cases.json:\n{}", wrong.join("\n"));
}

/// The shipped file never gives one host to two engines, so precedence needs rules of its
/// own, the same as the extension's test: the first rule whose host and path match
/// decides, and when it finds no query no later rule may claim the URL.
#[test]
fn the_first_rule_whose_host_and_path_match_decides() {
    let rules = Engines::parse(TEST_RULES).expect("test rules parse");
    let hit = |url: &str| rules.match_url(url).map(|h| (h.engine, h.query));
    assert_eq!(hit("https://www.google.com/search?x=shadow&q=g"), Some(("google.com".into(), "g".into())));
    assert_eq!(hit("https://www.google.com/search?x=only-shadow"), None);
    assert_eq!(hit("https://www.google.com/other?x=later"), Some(("google.com".into(), "later".into())));
}

/// A rule set of its own, so these tests do not change when the shipped file does.
const TEST_RULES: &str = r#"{"version":1,"engines":[
  {"id":"google","name":"Google","domains":["google.com"],"paths":["/search"],"param":"q"},
  {"id":"shadow","name":"Shadowed","domains":["google.com"],"paths":["/search","/other"],"param":"x"}
]}"#;

#[test]
fn truncates_long_queries_to_512_chars() {
    // 'é' is two bytes and '😀' four: the limit counts characters, not bytes.
    let long = "é😀".repeat(300);
    let url = format!("https://www.google.com/search?q={long}");
    let hit = Engines::parse(TEST_RULES).expect("test rules parse").match_url(&url).expect("a search");
    assert_eq!(hit.query.chars().count(), MAX_QUERY_CHARS);
    assert_eq!(hit.query, "é😀".repeat(256));

    let exact = "q".repeat(MAX_QUERY_CHARS);
    let spaced = format!("{} tail", "a".repeat(MAX_QUERY_CHARS - 1));
    let table: &[(&str, Option<&str>)] = &[
        ("  x  ", Some("x")),
        ("\u{FEFF}x\u{3000}", Some("x")),
        // U+0085 is a control character: dropped, like a bidirectional override, since the
        // agent refuses a signal holding one.
        ("\u{85}x", Some("x")),
        ("cheap \u{202e}exe.tnet", Some("cheap exe.tnet")),
        ("\u{202e}", None),
        ("", None),
        (" \t\n", None),
        (&exact, Some(&exact)),
        // Cut after 511 'a's and the space: the space is trimmed too.
        (&spaced, Some(&spaced[..MAX_QUERY_CHARS - 1])),
    ];
    for (raw, want) in table {
        assert_eq!(clean_query(raw).as_deref(), *want, "raw {raw:?}");
    }
}

#[test]
fn rejects_bad_rules() {
    let rule = |body: &str| format!(r#"{{"version":1,"engines":[{body}]}}"#);
    let good = r#"{"id":"a","name":"A","domains":["a.com"],"paths":["/s"],"param":"q"}"#;
    assert!(Engines::parse(&rule(good)).is_ok());
    let table: &[String] = &[
        String::new(),
        "[]".into(),
        r#"{"version":2,"engines":[]}"#.into(),
        r#"{"engines":[]}"#.into(),
        rule(&format!("{good},{good}")),
        rule(r#"{"id":"","name":"A","domains":["a.com"],"paths":["/s"],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":[],"paths":["/s"],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":["A.com"],"paths":["/s"],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":[""],"paths":["/s"],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":[".a.com"],"paths":["/s"],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":["a.com"],"paths":["s"],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":["a.com"],"paths":[],"param":"q"}"#),
        rule(r#"{"id":"a","name":"A","domains":["a.com"],"paths":["/s"],"param":""}"#),
        rule(r#"{"id":"a","name":"A","domains":["a.com"],"paths":["/s"],"param":"q","params":["x","q"]}"#),
        rule(r#"{"id":"a","name":"A","domains":["a.com"],"paths":["/s"],"param":"q","params":[]}"#),
        rule(r#"{"id":"a","name":"A","domains":["a.com"],"paths":["/s"]}"#),
        rule(r#"{"id":"a","name":"A","domains":"a.com","paths":["/s"],"param":"q"}"#),
    ];
    for text in table {
        assert!(Engines::parse(text).is_err(), "accepted {text:?}");
    }
}

#[test]
fn splits_urls() {
    // (url, expected (host, path, query))
    type Case<'a> = (&'a str, Option<(&'a str, &'a str, &'a str)>);
    let table: &[Case] = &[
        ("https://a.example/p?q=1#f", Some(("a.example", "/p", "q=1"))),
        ("http://A.Example:80", Some(("a.example", "/", ""))),
        ("https://u@a.example?x", Some(("a.example", "/", "x"))),
        ("https:\\\\a.example\\p\\q?x", Some(("a.example", "/p/q", "x"))),
        ("  https://a.example/  ", Some(("a.example", "/", ""))),
        ("https://a.example#?q=1", Some(("a.example", "/", ""))),
        ("mailto:x@a.example", None),
        ("https://", None),
        ("https://@:80/", None),
    ];
    for (url, want) in table {
        let got = UrlParts::parse(url).map(|p| (p.host, p.path, p.query.to_owned()));
        let want = want.map(|(h, p, q)| (h.to_owned(), p.to_owned(), q.to_owned()));
        assert_eq!(got, want, "url {url:?}");
    }
}

/// Query strings decoded as `new URLSearchParams(query).get(name)` decodes them in a
/// browser; each expected value was checked there.
#[test]
fn decodes_form_values_as_url_search_params() {
    let table: &[(&str, &str, Option<&str>)] = &[
        ("q=%C3%A9+%2b", "q", Some("é +")),
        ("q=%2", "q", Some("%2")),
        ("q=%2Z", "q", Some("%2Z")),
        ("q=%", "q", Some("%")),
        ("q=%e2%82", "q", Some("\u{FFFD}")),
        ("q=a=b", "q", Some("a=b")),
        ("&&q=x", "q", Some("x")),
        ("q", "q", Some("")),
        ("q&q=y", "q", Some("")),
        ("%71%3D=z&q=w", "q=", Some("z")),
        ("%71%3D=z&q=w", "q", Some("w")),
        ("qq=x&Q=y", "q", None),
        ("", "q", None),
    ];
    for (query, name, want) in table {
        assert_eq!(form_param(query, name).as_deref(), *want, "{name:?} in {query:?}");
    }
}
