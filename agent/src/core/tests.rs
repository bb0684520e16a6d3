//! Tests of the core over a temporary store: no network, no binary.
//!
//! Each test opens a real sled store and a real identity key in a temporary home
//! ([`World`]) and drives the core the way its callers do: the person's commands through
//! [`Core::handle`], marketers through [`Core::slice`]. Time is fixed at [`T`], so windows,
//! expiries and cart states come out exact; fixtures are written relative to it.

mod audit;
mod carts;
mod errors;
mod forget;
mod ingest;
mod pause;
mod push;
mod receipt;
mod repeat;
mod requests;
mod revoke;
mod scope;

use std::path::PathBuf;
use std::sync::Arc;

use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::{GrantId, SliceQuery};
use optin_protocol::slice::{SliceClaims, SliceItem};
use serde_json::{json, Value};
use tempfile::TempDir;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::command::{AuditEntry, Request, Response};
use super::{Core, CoreConfig, CoreError, Refusal, Served, SliceRequest};
use crate::home::Home;
use crate::keys::Keys;
use crate::store::Store;

/// The moment every test runs at.
const T: OffsetDateTime = datetime!(2026-11-20 10:00 UTC);

/// A home in a temporary directory, with its store open under a core.
struct World {
    dir: TempDir,
    core: Arc<Core>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let core = World::open(&dir);
        World { dir, core }
    }

    fn open(dir: &TempDir) -> Arc<Core> {
        let home = Home::open_or_create(&dir.path().join("home")).expect("a home");
        let keys = Keys::load_or_create(&home).expect("an identity key");
        // sled's own threads may hold a closed store's file, and its lock, a moment longer;
        // a reopen waits for it, as every way in does.
        let store = Store::open_waiting(&home.store(), std::time::Duration::from_secs(10)).expect("a store");
        let config =
            CoreConfig { abandon_after: span("24h"), agent_url: "https://127.0.0.1:7676".into(), cert_sha256: "ab".repeat(32), audit_keep: Default::default() };
        Arc::new(Core::new(store, keys, config))
    }

    /// The store's directory.
    fn store_path(&self) -> PathBuf {
        self.dir.path().join("home").join("store")
    }

    /// Closes the store and opens it again, as a restart does.
    fn reopen(self) -> World {
        let World { dir, core } = self;
        drop(Arc::into_inner(core).expect("no other handle on the core"));
        let core = World::open(&dir);
        World { dir, core }
    }

    /// Runs a command at `now`.
    async fn try_run(&self, request: Request, now: OffsetDateTime) -> Result<Response, CoreError> {
        self.core.handle(request, now).await
    }

    /// Runs a command at [`T`] that must succeed.
    async fn run(&self, request: Request) -> Response {
        let what = format!("{request:?}");
        self.try_run(request, T).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn ingest(&self, signals: &[Value]) {
        let ndjson: String = signals.iter().map(|s| format!("{s}\n")).collect();
        let Response::Ingested { stored, .. } = self.run(Request::Ingest { ndjson, dry_run: false }).await else { panic!("not an ingest answer") };
        assert_eq!(stored, signals.len(), "every fixture signal is new");
    }

    /// A grant to `marketer`, for 90 days from [`T`].
    async fn grant_to(&self, marketer: &str, kinds: &str, granularity: &str, window: &str) -> GrantBundle {
        let request = Request::Grant {
            marketer: marketer.into(),
            kinds: kinds.parse().expect("kinds"),
            granularity: granularity.parse().expect("granularity"),
            window: span(window),
            expires: span("90d"),
            purpose: "show me relevant offers".into(),
            push: None,
            filters: Default::default(),
            noise: Default::default(),
        };
        let Response::Granted { bundle, .. } = self.run(request).await else { panic!("not a grant answer") };
        *bundle
    }

    async fn grant(&self, kinds: &str, granularity: &str, window: &str) -> GrantBundle {
        self.grant_to("acme.example", kinds, granularity, window).await
    }

    async fn revoke(&self, grant_id: &GrantId) -> Response {
        self.run(Request::Revoke { grant_id: grant_id.clone() }).await
    }

    /// A slice request with `token` for `query` (a query string, well formed), cut at `now`.
    async fn slice(&self, token: &str, query: &str, now: OffsetDateTime) -> Result<Served, Refusal> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let parsed = SliceQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("a well-formed query");
        let asked = format!("/v1/slice?{query}");
        self.core.slice(SliceRequest { bearer: Some(token), query: Ok(parsed), asked: &asked, carrier: None }, now).await
    }

    /// A slice handed over, verified with the bundle as its marketer would.
    async fn fetch(&self, bundle: &GrantBundle, token: &str, query: &str) -> Result<SliceClaims, Refusal> {
        let served = self.slice(token, query, T).await?;
        let (jws, _pass) = served.deliver().expect("not revoked");
        Ok(bundle.verify_slice_for(&text(jws), &audience(token, bundle)).expect("the slice verifies with its bundle"))
    }

    /// The audit log, read in pages as the CLI reads it, and whether its chain verifies.
    async fn audit(&self) -> (Vec<AuditEntry>, Result<u64, String>) {
        self.audit_in_pages_of(None).await
    }

    /// The audit log read in pages of `limit` records (the default when `None`).
    async fn audit_in_pages_of(&self, limit: Option<usize>) -> (Vec<AuditEntry>, Result<u64, String>) {
        let (mut all, mut verdict, mut since_seq) = (Vec::new(), Ok(0), 0);
        loop {
            let Response::Audit { records, chain, next, .. } = self.run(Request::Audit { since_seq, limit }).await else { panic!("not an audit answer") };
            all.extend(records);
            if verdict.is_ok() {
                verdict = chain;
            }
            match next {
                Some(after) => since_seq = after,
                None => return (all, verdict),
            }
        }
    }

    /// What each item of a slice is, in fixture terms: the fixture id of a raw item (found
    /// through the grant's item ids), or `kind day` of a category item.
    fn seen(&self, claims: &SliceClaims, fixture: &[Value]) -> Vec<String> {
        let keys = self.core.keys().grant(&claims.grant.id).expect("grant keys");
        claims
            .items
            .iter()
            .map(|item| match item {
                SliceItem::Raw(raw) => {
                    let id = fixture.iter().map(|s| s["id"].as_str().expect("fixture id")).find(|id| keys.item_id(id) == raw.id);
                    id.unwrap_or("an item of no fixture signal").to_owned()
                }
                SliceItem::Category(c) => format!("{} {}", c.kind, c.day),
                SliceItem::Partial(p) => {
                    let id = fixture.iter().map(|s| s["id"].as_str().expect("fixture id")).find(|id| keys.item_id(id) == p.id);
                    id.unwrap_or("an item of no fixture signal").to_owned()
                }
            })
            .collect()
    }
}

/// A JWS handed over, as text.
fn text(jws: bytes::Bytes) -> String {
    String::from_utf8(jws.to_vec()).expect("a JWS is ASCII")
}

/// The audience a token's slices are addressed to: a caveat's partner, or the marketer.
fn audience(token: &str, bundle: &GrantBundle) -> String {
    let token = optin_protocol::token::Token::parse(token).expect("a token");
    let caveats = token.caveats().expect("caveats");
    caveats
        .iter()
        .rev()
        .find_map(|c| match c {
            optin_protocol::scope::Caveat::Audience(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap_or_else(|| bundle.marketer.clone())
}

fn span(text: &str) -> optin_protocol::span::Span {
    text.parse().expect("a span")
}

fn ts(at: OffsetDateTime) -> String {
    optin_protocol::timestamp::format(at)
}

fn hours(n: i64) -> Duration {
    Duration::hours(n)
}

fn search(id: &str, at: OffsetDateTime) -> Value {
    json!({"id": id, "kind": "search", "at": ts(at), "category": "Apparel & Accessories > Shoes", "query": format!("query {id}"), "engine": "duckduckgo.com"})
}

fn cart(id: &str, at: OffsetDateTime, merchant: &str) -> Value {
    json!({"id": id, "kind": "cart", "at": ts(at), "merchant": merchant, "currency": "EUR", "items": [{"name": "shoe", "price": "99.00"}]})
}

fn purchase(id: &str, at: OffsetDateTime, merchant: &str) -> Value {
    json!({"id": id, "kind": "purchase", "at": ts(at), "merchant": merchant, "currency": "EUR", "total": "99.00", "items": [{"name": "shoe", "price": "99.00"}]})
}

/// A week and more of one person's shopping, relative to [`T`].
fn week() -> Vec<Value> {
    vec![
        search("s-old", T - Duration::days(10)),
        search("s-3d", T - Duration::days(3)),
        search("s-1h", T - hours(1)),
        search("s-later", T + hours(1)),
        cart("c-2d", T - Duration::days(2), "shop.example"),
        cart("c-5d", T - Duration::days(5), "other.example"),
        purchase("p-1d", T - Duration::days(1), "shop.example"),
    ]
}
