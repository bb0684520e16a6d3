//! Tests of the HTTPS API's router, [`http::app`], with no socket: each request is answered
//! by `tower::ServiceExt::oneshot` over a core on a temporary store, and checked as a
//! marketer or a feeder would read the answer: status, headers, problem, verified slice.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request as HttpRequest};
use optin_protocol::bundle::GrantBundle;
use optin_protocol::problem::Problem;
use optin_protocol::scope::GrantId;
use optin_protocol::token::Token;
use serde_json::{json, Value};
use tempfile::TempDir;
use time::OffsetDateTime;
use tower::ServiceExt;

use super::http::{self, MAX_INGEST_BYTES};
use crate::core::command::{Request, Response};
use crate::core::{now, Core, CoreConfig};
use crate::home::Home;
use crate::keys::Keys;
use crate::store::{AuditEvent, Store};

/// A core on a temporary store, and its router.
struct Api {
    _dir: TempDir,
    core: Arc<Core>,
}

/// What the router answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header"))
    }

    /// The problem of an error answer, checked to be `status` of type `slug` and sent as
    /// problem+json with its status in the body too.
    #[track_caller]
    fn problem(&self, status: u16, slug: &str) -> Problem {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{text}");
        assert_eq!(self.header(header::CONTENT_TYPE), Some("application/problem+json"), "{text}");
        let problem: Problem = serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not a problem ({e}): {text}"));
        assert_eq!((problem.status, problem.type_.as_str()), (status, format!("urn:optin:problem:{slug}").as_str()), "{text}");
        problem
    }

    /// A 401 with the bearer challenge.
    #[track_caller]
    fn unauthorized(&self) -> Problem {
        let problem = self.problem(401, "invalid-token");
        assert_eq!(self.header(header::WWW_AUTHENTICATE), Some(r#"Bearer error="invalid_token""#));
        problem
    }

    fn json(&self) -> Value {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = Home::open_or_create(&dir.path().join("home")).expect("a home");
        let keys = Keys::load_or_create(&home).expect("an identity key");
        let store = Store::open(&home.store()).expect("a store");
        let config = CoreConfig {
            abandon_after: "24h".parse().expect("a span"),
            agent_url: "https://127.0.0.1:7676".into(),
            cert_sha256: "ab".repeat(32),
            audit_keep: Default::default(),
        };
        Api { _dir: dir, core: Arc::new(Core::new(store, keys, config)) }
    }

    /// Sends a request through a fresh router, as each connection gets one.
    async fn send(&self, request: HttpRequest<Body>) -> Answer {
        let response = http::app(self.core.clone()).oneshot(request).await.expect("the router answers");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("the body arrives whole");
        Answer { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = HttpRequest::get(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::empty()).expect("a request")).await
    }

    async fn post_signals(&self, token: &str, body: impl Into<Body>) -> Answer {
        let request = HttpRequest::post("/v1/signals")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(body.into())
            .expect("a request");
        self.send(request).await
    }

    async fn run(&self, request: Request) -> Response {
        self.core.handle(request, now()).await.expect("the command succeeds")
    }

    async fn grant(&self, kinds: &str, granularity: &str, window: &str) -> GrantBundle {
        let request = Request::Grant {
            marketer: "acme.example".into(),
            kinds: kinds.parse().expect("kinds"),
            granularity: granularity.parse().expect("granularity"),
            window: window.parse().expect("window"),
            expires: "90d".parse().expect("expires"),
            purpose: "offers".into(),
            push: None,
            filters: Default::default(),
            noise: Default::default(),
        };
        let Response::Granted { bundle, .. } = self.run(request).await else { panic!("not a grant answer") };
        *bundle
    }

    fn stored(&self) -> usize {
        self.core.store().signal_counts().expect("counts").iter().map(|(_, n)| n).sum()
    }

    fn ingest_token(&self) -> String {
        self.core.keys().ingest_token()
    }
}

fn ts(at: OffsetDateTime) -> String {
    optin_protocol::timestamp::format(at)
}

/// Three signals of the last hours: a search, a cart and a purchase.
fn batch() -> String {
    let t = now();
    let hour = time::Duration::hours(1);
    [
        json!({"id": "s1", "kind": "search", "at": ts(t - hour * 3), "query": "trail shoes", "engine": "duckduckgo.com"}),
        json!({"id": "c1", "kind": "cart", "at": ts(t - hour * 2), "merchant": "shop.example", "currency": "EUR", "items": [{"name": "shoe", "price": "99.00"}]}),
        json!({"id": "p1", "kind": "purchase", "at": ts(t - hour), "merchant": "shop.example", "currency": "EUR", "total": "99.00", "items": [{"name": "shoe", "price": "99.00"}]}),
    ]
    .iter()
    .map(|s| format!("{s}\n"))
    .collect()
}

/// An agent with [`batch`] stored.
async fn with_signals() -> Api {
    let api = Api::new();
    let answer = api.post_signals(&api.ingest_token(), batch()).await;
    assert_eq!(answer.json(), json!({"stored": 3, "duplicates": 0}));
    api
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_is_a_jws_that_verifies_with_the_bundle() {
    let api = with_signals().await;
    let bundle = api.grant("search,cart", "raw", "7d").await;
    let answer = api.get("/v1/slice", Some(&bundle.token)).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header(header::CONTENT_TYPE), Some("application/jose"));
    assert_eq!(answer.header(header::CACHE_CONTROL), Some("no-store"));
    let claims = bundle.verify_slice(std::str::from_utf8(&answer.body).expect("UTF-8")).expect("the slice verifies with its bundle");
    assert_eq!(claims.items.len(), 2, "the search and the cart");
    assert_eq!(claims.grant.id, bundle.grant_id);

    let info = api.get("/v1/grant", Some(&bundle.token)).await;
    assert_eq!(info.header(header::CACHE_CONTROL), Some("no-store"));
    let info = info.json();
    assert_eq!((&info["grant_id"], &info["state"], &info["terms"]["kinds"]), (&json!(bundle.grant_id), &json!("active"), &json!(["search", "cart"])));
    assert_eq!(info["jwk"], serde_json::to_value(&bundle.jwk).expect("a JWK"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_requests_without_a_genuine_token() {
    let api = with_signals().await;
    let bundle = api.grant("search,cart", "raw", "7d").await;
    let revoked = api.grant("search", "raw", "7d").await;
    api.run(Request::Revoke { grant_id: revoked.grant_id.clone() }).await;
    let forged = Token::mint(&[7; 32], &bundle.grant_id).encode();
    let unknown = Token::mint(&[7; 32], &GrantId::from_bytes([1; 12])).encode();
    let bearer = |token: &str| vec![format!("Bearer {token}").into_bytes()];
    let cases: Vec<(&str, Method, &str, Vec<Vec<u8>>)> = vec![
        ("no token", Method::GET, "/v1/slice", vec![]),
        ("another scheme", Method::GET, "/v1/slice", vec![b"Basic dXNlcjpwYXNz".to_vec()]),
        ("a genuine token under another scheme", Method::GET, "/v1/slice", vec![format!("Token {}", bundle.token).into_bytes()]),
        ("a scheme alone", Method::GET, "/v1/slice", vec![b"Bearer".to_vec()]),
        ("not a token", Method::GET, "/v1/slice", bearer("optin_garbage")),
        ("forged", Method::GET, "/v1/slice", bearer(&forged)),
        ("of an unknown grant", Method::GET, "/v1/slice", bearer(&unknown)),
        ("of a revoked grant", Method::GET, "/v1/slice", bearer(&revoked.token)),
        ("given twice", Method::GET, "/v1/slice", [bearer(&bundle.token), bearer(&bundle.token)].concat()),
        ("not ASCII", Method::GET, "/v1/slice", vec![[b"Bearer ".as_slice(), &[0xFF]].concat()]),
        ("no token, for the grant", Method::GET, "/v1/grant", vec![]),
        ("forged, for the grant", Method::GET, "/v1/grant", bearer(&forged)),
        ("no token, to ingest", Method::POST, "/v1/signals", vec![]),
        ("a grant's token, to ingest", Method::POST, "/v1/signals", bearer(&bundle.token)),
        ("the ingest token and more", Method::POST, "/v1/signals", bearer(&format!("{}0", api.ingest_token()))),
    ];
    let mut details = std::collections::BTreeSet::new();
    for (what, method, path, authorization) in cases {
        let mut request = HttpRequest::builder().method(method).uri(path);
        for value in authorization {
            request = request.header(header::AUTHORIZATION, HeaderValue::from_bytes(&value).expect("a header value"));
        }
        let answer = api.send(request.body(Body::from(batch())).expect("a request")).await;
        assert_eq!(answer.status, 401, "{what}: {}", String::from_utf8_lossy(&answer.body));
        details.insert(answer.unauthorized().detail);
    }
    assert_eq!(details.len(), 1, "every token refusal reads the same, so a guesser learns nothing: {details:?}");
    assert_eq!(api.stored(), 3, "nothing was ingested without the ingest token");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_bad_query_values_naming_the_field() {
    let api = with_signals().await;
    let bundle = api.grant("search,cart", "raw", "7d").await;
    let cases = [
        ("kinds=walks", "kinds"),
        ("kinds=", "kinds"),
        ("kind=search", "kind"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=1&limit=2", "limit"),
        ("since=yesterday", "since"),
        ("until=soon", "until"),
        ("granularity=fine", "granularity"),
        ("cursor=", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
        // Percent-encoding that is not UTF-8 is refused, not decoded lossily.
        ("kinds=%FF", "query"),
        ("%FF=search", "query"),
        ("kinds=search%FE%FF", "query"),
    ];
    for (query, field) in cases {
        let answer = api.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
        let problem = answer.problem(400, "invalid-request");
        assert_eq!(problem.field.as_deref(), Some(field), "{query}");
        assert_eq!(answer.header(header::WWW_AUTHENTICATE), None, "{query}: not a token problem");
    }
    // A bad query with no token is a token problem first: an anonymous client learns nothing.
    api.get("/v1/slice?limit=0", None).await.unauthorized();
    // A genuine token's bad query is audited under its grant.
    let Response::Audit { records, .. } = api.run(Request::Audit { since_seq: 0, limit: None }).await else { panic!("not an audit answer") };
    let refused = records.iter().filter(|r| matches!(r.record.event, AuditEvent::Refused { status: 400, .. })).count();
    assert_eq!(refused, cases.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_requests_beyond_the_grant() {
    let api = with_signals().await;
    let bundle = api.grant("search,cart", "category", "7d").await;
    let before_window = ts(now() - time::Duration::days(8));
    let cases = [("kinds=purchase".to_owned(), "kinds"), ("granularity=raw".to_owned(), "granularity"), (format!("since={before_window}"), "since")];
    for (query, field) in cases {
        let answer = api.get(&format!("/v1/slice?{query}"), Some(&bundle.token)).await;
        assert_eq!(answer.problem(403, "exceeds-grant").field.as_deref(), Some(field), "{query}");
        assert_eq!(answer.header(header::WWW_AUTHENTICATE), None);
    }
    api.run(Request::Sharing { paused: true }).await;
    let paused = api.get("/v1/slice", Some(&bundle.token)).await;
    assert_eq!(paused.problem(403, "paused").field, None);
    assert_eq!(api.get("/v1/grant", Some(&bundle.token)).await.json()["state"], "paused");
    api.run(Request::Sharing { paused: false }).await;
    assert_eq!(api.get("/v1/slice", Some(&bundle.token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_unknown_paths_and_methods_with_problems() {
    let api = Api::new();
    let cases = [
        (Method::POST, "/v1/slice", 405, "method-not-allowed"),
        (Method::PUT, "/v1/grant", 405, "method-not-allowed"),
        (Method::GET, "/v1/signals", 405, "method-not-allowed"),
        (Method::DELETE, "/v1/signals", 405, "method-not-allowed"),
        (Method::GET, "/", 404, "not-found"),
        (Method::GET, "/v1/slices", 404, "not-found"),
        (Method::GET, "/v2/slice", 404, "not-found"),
        (Method::POST, "/v1/signal", 404, "not-found"),
    ];
    for (method, path, status, slug) in cases {
        let request = HttpRequest::builder().method(method.clone()).uri(path).body(Body::empty()).expect("a request");
        let answer = api.send(request).await;
        let problem = answer.problem(status, slug);
        assert!(problem.detail.contains(path), "{method} {path}: the detail names the path: {}", problem.detail);
        assert_eq!(answer.header(header::WWW_AUTHENTICATE), None, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_counts_what_it_stored() {
    let api = Api::new();
    let token = api.ingest_token();
    assert_eq!(api.post_signals(&token, batch()).await.json(), json!({"stored": 3, "duplicates": 0}));
    assert_eq!(api.post_signals(&token, batch()).await.json(), json!({"stored": 0, "duplicates": 3}));
    assert_eq!(api.post_signals(&token, "\n\n").await.json(), json!({"stored": 0, "duplicates": 0}), "blank lines are skipped");
    assert_eq!(api.stored(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_a_bad_batch_naming_line_and_field_and_storing_nothing() {
    let api = Api::new();
    let token = api.ingest_token();
    let good: Vec<String> = batch().lines().map(str::to_owned).collect();
    let mut bad_price: Value = serde_json::from_str(&good[2]).expect("JSON");
    bad_price["items"][0]["price"] = "cheap".into();
    let mut unknown_field: Value = serde_json::from_str(&good[0]).expect("JSON");
    unknown_field["mood"] = "happy".into();
    let cases: Vec<(String, usize, Option<&str>)> = vec![
        (format!("{}\n{}\n{bad_price}\n", good[0], good[1]), 3, Some("items[0].price")),
        (format!("{}\n{unknown_field}\n", good[1]), 2, Some("mood")),
        (format!("{}\n\nnot json\n", good[0]), 3, None),
    ];
    for (body, line, field) in cases {
        let problem = api.post_signals(&token, body).await.problem(400, "invalid-signal");
        assert_eq!((problem.line, problem.field.as_deref()), (Some(line), field), "{}", problem.detail);
        assert_eq!(api.stored(), 0, "nothing of a refused batch is stored");
    }
    let not_utf8 = [good[0].as_bytes(), b"\n\xFF\n"].concat();
    assert!(api.post_signals(&token, not_utf8).await.problem(400, "invalid-body").detail.contains("not UTF-8"));
    assert_eq!(api.stored(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_bodies_that_are_not_ndjson_by_their_content_type() {
    let api = Api::new();
    // (Content-Type, accepted)
    let table: &[(Option<&str>, bool)] = &[
        (Some("application/x-ndjson"), true),
        (Some("application/x-ndjson; charset=utf-8"), true),
        (Some("Application/JSONL"), true),
        (None, false),
        (Some("application/json"), false),
        (Some("application/x-www-form-urlencoded"), false),
        (Some("text/plain"), false),
    ];
    for (content_type, accepted) in table {
        let mut request = HttpRequest::post("/v1/signals").header(header::AUTHORIZATION, format!("Bearer {}", api.ingest_token()));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, *content_type);
        }
        let answer = api.send(request.body(Body::from(batch())).expect("a request")).await;
        if *accepted {
            assert_eq!(answer.status, 200, "{content_type:?}: {}", String::from_utf8_lossy(&answer.body));
        } else {
            assert!(answer.problem(415, "unsupported-media-type").detail.contains("application/x-ndjson"), "{content_type:?}");
        }
    }
    assert_eq!(api.stored(), 3, "only the accepted posts stored (the same three signals)");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_a_body_over_the_limit() {
    let api = Api::new();
    let mut body = batch().into_bytes();
    body.resize(MAX_INGEST_BYTES + 1, b'\n');
    api.post_signals(&api.ingest_token(), body).await.problem(413, "too-large");
    assert_eq!(api.stored(), 0);
    // At the limit, it is read (and the blank lines after the batch skipped).
    let mut body = batch().into_bytes();
    body.resize(MAX_INGEST_BYTES, b'\n');
    assert_eq!(api.post_signals(&api.ingest_token(), body).await.json(), json!({"stored": 3, "duplicates": 0}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_whose_grant_is_revoked_before_its_body_is_sent_is_cut_off() {
    let api = with_signals().await;
    let bundle = api.grant("search,cart", "raw", "7d").await;
    let request = HttpRequest::get("/v1/slice").header(header::AUTHORIZATION, format!("Bearer {}", bundle.token)).body(Body::empty()).expect("a request");
    let response = http::app(api.core.clone()).oneshot(request).await.expect("the router answers");
    assert_eq!(response.status().as_u16(), 200, "the head is out before the body");

    let core = api.core.clone();
    let grant_id = bundle.grant_id.clone();
    let revoke = tokio::spawn(async move { core.handle(Request::Revoke { grant_id }, now()).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.core.store().grant(&bundle.grant_id).expect("read").expect("the grant").revoked_at.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the revocation was never stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!revoke.is_finished(), "revoke waits for the body that holds the grant's gate");

    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    assert!(body.is_err(), "the slice's bytes are never handed over: {body:?}");
    let revoked = tokio::time::timeout(Duration::from_secs(5), revoke).await.expect("revoke returns once the body is gone").expect("task");
    assert!(matches!(revoked, Ok(Response::Revoked { already: false, .. })), "{revoked:?}");
    api.get("/v1/slice", Some(&bundle.token)).await.unauthorized();
}

/// `serve` runs in-process on listeners it is given: the person's command over the admin
/// socket, a marketer's slice over real TLS on loopback, then a clean stop when the shutdown
/// future completes, after which neither listener answers and the delivery is on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_in_process_until_its_shutdown_future() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let home = Home::open_or_create(&dir.path().join("home")).expect("a home");
    let identity = crate::tls::load(&home, &crate::tls::TlsSource::default()).expect("a certificate");
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("https://{}", https.local_addr().expect("an address"));
    let admin = super::admin::bind(&home).expect("the admin socket");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(home.root()).expect("the home"));
    let config =
        CoreConfig { abandon_after: "24h".parse().expect("a span"), agent_url: url, cert_sha256: identity.sha256.clone(), audit_keep: Default::default() };
    let core = Arc::new(Core::new(Store::open(&home.store()).expect("a store"), Keys::load_or_create(&home).expect("a key"), config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = super::Listeners { https, tls: identity.config, max_connections: 4, admin: Some((admin, owner)), pushes: None };
    let server = tokio::spawn(super::serve(listeners, core.clone(), async {
        let _ = stopped.await;
    }));

    // The person grants over the admin socket: one JSON line each way.
    let socket = tokio::net::UnixStream::connect(home.admin_socket()).await.expect("the admin socket answers");
    let (read, mut write) = socket.into_split();
    let grant =
        json!({"op": "grant", "marketer": "acme.example", "kinds": ["search"], "granularity": "raw", "window": "30d", "expires": "90d", "purpose": "p"});
    write.write_all(format!("{grant}\n").as_bytes()).await.expect("send");
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.expect("an answer");
    let reply: Value = serde_json::from_str(&line).expect("a JSON reply");
    let bundle: GrantBundle = serde_json::from_value(reply["ok"]["bundle"].clone()).unwrap_or_else(|e| panic!("a bundle ({e}): {reply}"));

    // The marketer fetches a slice over TLS, pinning the certificate from the bundle.
    let (url, cert) = bundle.pull_from().expect("a pull grant names the agent");
    let client = optin_examples::PinnedClient::new(url, cert).expect("a pinned client");
    let response = client.get("/v1/slice", Some(&bundle.token)).await.expect("the agent answers");
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    bundle.verify_slice(&response.text()).expect("the slice verifies");

    // The admin connection above is still open and idle: it must not hold up the stop (it
    // used to, for the 15 s that commands in progress are given).
    stop.send(()).expect("serve is still running");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("serve returns once told to stop").expect("no panic").expect("a clean stop");
    assert!(client.get("/v1/slice", Some(&bundle.token)).await.is_err(), "the HTTPS listener is closed");
    assert!(tokio::net::UnixStream::connect(home.admin_socket()).await.is_err(), "the admin socket is closed");
    let Response::Audit { records, chain, .. } = core.handle(Request::Audit { since_seq: 0, limit: None }, now()).await.expect("the audit") else {
        panic!("not an audit")
    };
    assert!(chain.is_ok(), "{chain:?}");
    assert!(records.iter().any(|r| matches!(r.record.event, AuditEvent::Served { .. })), "the delivery is on record");
}

/// A file of the repository, read as it is now (not as it was when the agent was built).
fn repo_file(path: &str) -> String {
    let at = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()))
}

/// The OpenAPI document in the repository, parsed.
fn openapi() -> Value {
    serde_json::from_str(&repo_file("openapi.json")).expect("agent/openapi.json is JSON")
}

/// The rows of SPEC.md's table of problems, "Errors": (status, slug), in its order.
fn spec_problems() -> Vec<(u16, String)> {
    let spec = repo_file("../SPEC.md");
    let (_, errors) = spec.split_once("### Errors").expect("SPEC.md has an Errors section");
    let section = errors.split("\n#").next().unwrap_or_default();
    let rows: Vec<(u16, String)> = section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let status = cells.get(1)?.parse().ok()?;
            let slug = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((status, slug.to_owned()))
        })
        .collect();
    assert!(!rows.is_empty(), "SPEC.md's Errors table has no rows");
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_served_as_written_to_anyone() {
    let api = Api::new();
    for token in [None, Some("optin_garbage")] {
        let answer = api.get("/openapi.json", token).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header(header::CONTENT_TYPE), Some("application/json"));
        assert_eq!(answer.header(header::CACHE_CONTROL), Some("public, max-age=3600"));
        assert!(answer.body == repo_file("openapi.json").as_bytes(), "the served document is agent/openapi.json, byte for byte");
    }
    let document = openapi();
    assert_eq!(document["openapi"], "3.1.0");
}

/// The document's paths are the router's, each with exactly the methods the router takes
/// there (a GET route answers HEAD too, which HTTP implies and the document leaves out).
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_paths_are_the_routers_routes() {
    let api = Api::new();
    let document = openapi();
    let paths = document["paths"].as_object().expect("paths");
    let documented: std::collections::BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let routed: std::collections::BTreeSet<&str> = http::paths().into_iter().collect();
    assert_eq!(documented, routed);
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS, Method::TRACE];
    for (path, operations) in paths {
        let listed: std::collections::BTreeSet<String> = operations.as_object().expect("operations").keys().map(|m| m.to_uppercase()).collect();
        let mut taken = std::collections::BTreeSet::new();
        for method in &methods {
            let request = HttpRequest::builder().method(method.clone()).uri(path.as_str()).body(Body::empty()).expect("a request");
            let answer = api.send(request).await;
            assert_ne!(answer.status, 404, "{method} {path}");
            if answer.status == 405 {
                answer.problem(405, "method-not-allowed");
                assert!(answer.header(header::ALLOW).is_some(), "{method} {path}: a 405 says what is allowed");
            } else {
                taken.insert(method.to_string());
            }
        }
        assert_eq!(listed, taken, "{path}");
    }
}

/// Every problem type the agent can send is one SPEC.md lists, with the status it lists, and
/// the document lists the same: in the schema of problems, and per response.
#[tokio::test(flavor = "multi_thread")]
async fn every_problem_type_is_listed_in_the_spec_and_the_document() {
    use optin_protocol::problem::ProblemType;
    let spec = spec_problems();
    let slugs: Vec<&str> = ProblemType::ALL.iter().map(|t| t.slug()).collect();
    assert_eq!(slugs, spec.iter().map(|(_, slug)| slug.as_str()).collect::<Vec<_>>(), "ProblemType::ALL and SPEC.md, in order");

    let document = openapi();
    let urns: Vec<String> = ProblemType::ALL.iter().map(|t| t.urn()).collect();
    assert_eq!(document["components"]["schemas"]["Problem"]["properties"]["type"]["enum"], json!(urns));

    // Each response of the document narrows the problem to a status and its types.
    let mut documented = std::collections::BTreeSet::new();
    for (name, response) in document["components"]["responses"].as_object().expect("responses") {
        let narrowed = &response["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"];
        let status = narrowed["status"]["const"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or_else(|| panic!("{name}: no status"));
        for urn in narrowed["type"]["enum"].as_array().unwrap_or_else(|| panic!("{name}: no types")) {
            let kind = ProblemType::from_urn(urn.as_str().unwrap_or_default()).unwrap_or_else(|| panic!("{name}: unknown type {urn}"));
            documented.insert((status, kind.slug().to_owned()));
        }
    }
    assert_eq!(documented, spec.iter().cloned().collect(), "the document's responses and SPEC.md's table");

    // An operation's response under a status is the one for that status.
    for (path, operations) in document["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let Some(name) = response["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/responses/")) else { continue };
                let narrowed = &document["components"]["responses"][name]["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"];
                assert_eq!(narrowed["status"]["const"].to_string(), *status, "{method} {path} {status}: {name}");
            }
        }
    }

    // Each refusal of a marketer's request is sent with a status and type SPEC.md pairs.
    use crate::core::Refusal;
    let refusals = [
        Refusal::Token("no bearer token"),
        Refusal::Exceeds { field: "kinds", reason: "not granted".into() },
        Refusal::Invalid { field: "limit".into(), reason: "not a number".into() },
        Refusal::Paused,
        Refusal::BudgetExhausted,
        Refusal::Busy,
        Refusal::RateLimited { retry_after: 61 },
        Refusal::Internal("a detail".into()),
    ];
    for refusal in refusals {
        let response = axum::response::IntoResponse::into_response(http::ApiError::from(refusal.clone()));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        let problem: Problem = serde_json::from_slice(&body).expect("a problem");
        let kind = ProblemType::from_urn(&problem.type_).expect("a known type");
        assert_eq!(problem.status, refusal.status(), "{refusal:?}");
        assert!(spec.contains(&(problem.status, kind.slug().to_owned())), "{refusal:?}: {} {} is not in SPEC.md", problem.status, kind.slug());
    }
}

/// A body that sends some bytes and then breaks off, as hyper reports a malformed chunk or a
/// connection closed before its `Content-Length`.
struct BrokenBody {
    sent: bool,
}

impl hyper::body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the body broke off"))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(batch())))))
    }
}

/// A body that breaks off is the client's fault (400), not one too large (413, as it once
/// was), and nothing of it is stored.
#[tokio::test(flavor = "multi_thread")]
async fn rejects_a_body_that_breaks_off() {
    let api = Api::new();
    let answer = api.post_signals(&api.ingest_token(), Body::new(BrokenBody { sent: false })).await;
    assert!(answer.problem(400, "invalid-body").detail.contains("could not be read"));
    assert_eq!(api.stored(), 0);
}

#[test]
fn public_urls_are_written_in_one_form() {
    for (typed, written) in [
        ("https://Optin.Example.NET", "https://optin.example.net:443"),
        ("https://optin.example.net:8443/", "https://optin.example.net:8443"),
        ("https://203.0.113.7:7676", "https://203.0.113.7:7676"),
        ("https://[2001:db8::1]:7676", "https://[2001:db8::1]:7676"),
    ] {
        assert_eq!(super::parse_public_url(typed).as_deref(), Ok(written), "{typed}");
    }
    for (typed, why) in [
        ("https://a!$&'()*+,;=b.example", "not a host name or IP address"),
        ("https://[::1%25eth0]:7", "not a host name or IP address"),
        ("https://a.example.", "not a host name or IP address"),
        ("https://localhost:7676", "not a host name or IP address"),
        ("https://a.example#frag", "a fragment has no place in it"),
    ] {
        let refused = super::parse_public_url(typed).expect_err(typed);
        assert!(refused.starts_with(why), "{typed}: {refused}");
    }
}
