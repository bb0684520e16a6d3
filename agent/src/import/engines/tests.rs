//! Tests of the engine rules and the URL matcher.

use super::*;

/// Rules used by the table tests, independent of the shipped file so these tests do
/// not change when an engine is added there.
const TEST_RULES: &str = r#"{"version":1,"engines":[
  {"id":"google","name":"Google","domains":["google.com","google.co.uk"],"paths":["/search"],"param":"q"},
  {"id":"ddg","name":"DuckDuckGo","domains":["duckduckgo.com"],"paths":["/","/html/"],"param":"q"},
  {"id":"startpage","name":"Startpage","domains":["startpage.com"],"paths":["/sp/search"],"param":"query","params":["query","q"]},
  {"id":"yahoo","name":"Yahoo","domains":["search.yahoo.com"],"paths":["/search"],"param":"p"},
  {"id":"shadow","name":"Shadowed","domains":["google.com"],"paths":["/search","/other"],"param":"x"}
]}"#;

fn check(url: &str, expect: Option<(&str, &str)>) {
    let engines = Engines::parse(TEST_RULES).expect("test rules parse");
    let got = engines.match_url(url);
    let want = expect.map(|(engine, query)| SearchHit { engine: engine.to_owned(), query: query.to_owned() });
    assert_eq!(got, want, "url {url:?}");
}

#[test]
fn matches_search_urls() {
    let table: &[(&str, Option<(&str, &str)>)] = &[
        ("https://www.google.com/search?q=red+shoes", Some(("google.com", "red shoes"))),
        ("http://google.com/search?q=a", Some(("google.com", "a"))),
        ("https://www.google.co.uk/search?client=x&q=caf%C3%A9&oq=c", Some(("google.co.uk", "café"))),
        ("HTTPS://WWW.GOOGLE.COM/search?q=Upper", Some(("google.com", "Upper"))),
        ("https://user:pw@www.google.com:8443/search?q=port#frag", Some(("google.com", "port"))),
        ("https://www.google.com/search?q=%20%20trim%20me+&q=second", Some(("google.com", "trim me"))),
        ("https://www.google.com/search?q=a%2Bb%26c", Some(("google.com", "a+b&c"))),
        ("https://www.google.com/search?q=100%", Some(("google.com", "100%"))),
        ("https://www.google.com/search?q=%ZZ", Some(("google.com", "%ZZ"))),
        ("https://www.google.com/search?q=%FF", Some(("google.com", "\u{FFFD}"))),
        ("https://duckduckgo.com/?q=rust&t=h_", Some(("duckduckgo.com", "rust"))),
        ("https://duckduckgo.com?q=no+slash", Some(("duckduckgo.com", "no slash"))),
        ("https://html.duckduckgo.com/html/?q=x", Some(("duckduckgo.com", "x"))),
        ("https://www.startpage.com/sp/search?query=first&q=second", Some(("startpage.com", "first"))),
        ("https://www.startpage.com/sp/search?q=fallback", Some(("startpage.com", "fallback"))),
        ("https://www.startpage.com/sp/search?query=+&q=blank+first", Some(("startpage.com", "blank first"))),
        ("https://search.yahoo.com/search?p=tents", Some(("search.yahoo.com", "tents"))),
        // The first matching rule decides, even when a later one would also match.
        ("https://www.google.com/search?x=shadow&q=g", Some(("google.com", "g"))),
        ("https://www.google.com/other?x=later", Some(("google.com", "later"))),
    ];
    for (url, expect) in table {
        check(url, *expect);
    }
}

#[test]
fn rejects_non_searches() {
    let table: &[&str] = &[
        "",
        "not a url",
        "ftp://www.google.com/search?q=x",
        "file:///search?q=x",
        "https://www.google.com/search",
        "https://www.google.com/search?q=",
        "https://www.google.com/search?q=+++",
        "https://www.google.com/search?oq=x",
        "https://www.google.com/search/?q=x",
        "https://www.google.com/Search?q=x",
        "https://www.google.com/webhp?q=x",
        "https://www.google.com/#q=x",
        "https://notgoogle.com/search?q=x",
        "https://google.com.evil.example/search?q=x",
        "https://evil.example/search?q=x&u=google.com",
        "https://evil.example/?u=https://www.google.com/search?q=x",
        "https://[::1]:80/search?q=x",
        "https://evil.example .google.com/search?q=x",
        "https://evil|x.google.com/search?q=x",
        "https:///search?q=x",
        "https://search.yahoo.com/search?q=wrong-param",
        "https://yahoo.com/search?p=wrong-host",
        // Matched host and path without a query: later rules may not claim it.
        "https://www.google.com/search?x=only-shadow-param",
    ];
    for url in table {
        check(url, None);
    }
}

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
        // U+0085 is whitespace to Rust but not to JavaScript's trim.
        ("\u{85}x", Some("\u{85}x")),
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
fn builtin_rules_parse_and_match() {
    let engines = Engines::builtin().expect("the shipped engines.json is valid");
    let hit = engines.match_url("https://www.google.com/search?q=hiking+boots").expect("google is a known engine");
    assert_eq!(hit.engine, "google.com");
    assert_eq!(hit.query, "hiking boots");
    assert_eq!(engines.match_url("https://example.com/search?q=x"), None);
}

/// The shipped rules against the same cases as the extension's own test
/// (`extension/test/engines.test.mjs`), so the two matchers cannot drift apart.
#[test]
fn builtin_rules_agree_with_the_extension() {
    let engines = Engines::builtin().expect("the shipped engines.json is valid");
    let table: &[(&str, Option<(&str, &str)>)] = &[
        ("https://www.google.com/search?q=running+shoes&hl=en", Some(("google.com", "running shoes"))),
        ("https://www.google.co.uk/search?q=wellies", Some(("google.co.uk", "wellies"))),
        ("https://www.google.com.au/search?q=thongs", Some(("google.com.au", "thongs"))),
        ("https://google.de/search?q=%C3%BCber", Some(("google.de", "über"))),
        ("http://www.google.com/search?q=plain+http", Some(("google.com", "plain http"))),
        ("https://www.google.com/search?q=++padded++", Some(("google.com", "padded"))),
        ("https://www.google.com/search?q=", None),
        ("https://www.google.com/search?q=+++", None),
        ("https://www.google.com/search", None),
        ("https://www.google.com/?q=home+page", None),
        ("https://www.google.com/searchbyimage?q=x", None),
        ("https://notgoogle.com/search?q=x", None),
        ("https://google.com.evil.example/search?q=x", None),
        ("ftp://www.google.com/search?q=x", None),
        ("https://www.bing.com/search?q=bing+it&form=QBLH", Some(("bing.com", "bing it"))),
        ("https://duckduckgo.com/?q=duck&ia=web", Some(("duckduckgo.com", "duck"))),
        ("https://html.duckduckgo.com/html/?q=no+js", Some(("duckduckgo.com", "no js"))),
        ("https://duckduckgo.com/about", None),
        ("https://www.ecosia.org/search?q=trees", Some(("ecosia.org", "trees"))),
        ("https://www.startpage.com/sp/search?query=private", Some(("startpage.com", "private"))),
        ("https://www.startpage.com/do/search?q=older+form", Some(("startpage.com", "older form"))),
        ("https://www.startpage.com/sp/search?query=&q=second+param", Some(("startpage.com", "second param"))),
        ("https://search.brave.com/search?q=lion", Some(("search.brave.com", "lion"))),
        ("https://brave.com/search?q=lion", None),
        ("https://search.yahoo.com/search?p=yodel", Some(("search.yahoo.com", "yodel"))),
        ("https://search.yahoo.com/search?q=yodel", None),
        ("https://www.qwant.com/?q=qwant+it&t=web", Some(("qwant.com", "qwant it"))),
        ("https://kagi.com/search?q=paid", Some(("kagi.com", "paid"))),
        ("https://www.amazon.de/s?k=kaffeem%C3%BChle&ref=nb", Some(("amazon.de", "kaffeemühle"))),
        ("https://www.amazon.co.jp/s?k=%E3%81%8A%E8%8C%B6", Some(("amazon.co.jp", "お茶"))),
        ("https://www.amazon.com/dp/B000?k=x", None),
        ("https://www.ebay.co.uk/sch/i.html?_nkw=vintage+lamp", Some(("ebay.co.uk", "vintage lamp"))),
        ("not a url", None),
    ];
    for (url, want) in table {
        let got = engines.match_url(url);
        let got = got.as_ref().map(|h| (h.engine.as_str(), h.query.as_str()));
        assert_eq!(got, *want, "url {url:?}");
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
