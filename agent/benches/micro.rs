//! Micro-benchmarks of the steps a slice is made of, each on its own, on data like a real
//! agent's: what each costs, to read beside a profile of the whole request.
//!
//! The data, made once before the groups run:
//!
//! - a home in a temporary directory with a real identity key ([`Keys`]), one grant's keys
//!   derived from it (Ed25519 signing key, token secret, item-id and cursor keys);
//! - a real sled store ([`Store`], keyed like the agent's) holding 10,000 signals from a
//!   fixed seed, the mix of the slice benchmark (`tests/benches/slices.rs`): half searches,
//!   three tenths carts, a fifth purchases, over the last 29 days, stored as `optin ingest`
//!   stores them (parsed, marked with their sensitive topics, one transaction);
//! - a grant of every kind at `raw` over 30 days for `acme.example`, and the slice a
//!   marketer asks for with `kinds=search&limit=100`: 100 items, about 19.6 KB of JSON and
//!   26.3 KB of JWS (the run prints both first).
//!
//! The groups:
//!
//! - `token`: [`Token::parse`] then [`Token::verify`] of a token's text, as the agent admits
//!   it: the grant's root token, and a partner's token with four caveats (`aud`, `kinds`,
//!   `window`, `categories`), whose chain is four more HMACs and whose caveats narrow the
//!   terms.
//! - `scope`: [`Terms::evaluate`] of that query; [`Terms::narrow`] by the four caveats in
//!   turn; [`Applied::admits`] over all 10,000 signals in memory, for the grant as it is
//!   and for one with category and merchant filters (the default never-share list applies
//!   to both, as it does in the agent).
//! - `slice`: cutting a page from the store ([`slicer::cut`]: scan, scope, per-grant item
//!   ids, and for carts the purchase lookup that says what became of each), 100 searches and
//!   100 carts; then building the slice claims around 100 items and serialising them to JSON.
//! - `jws`: [`jws::sign`] of the slice's payload with the grant's Ed25519 key, [`jws::verify`]
//!   of the result, and [`slice::verify`], what a marketer runs (signature, claims, shape).
//! - `store`: [`Store::scan`] of the searches of the last 7 days, and of the first 100 of the
//!   30-day window (what a page reads), each with its decoding; and decoding 100 stored
//!   records alone ([`Signal::from_stored_json`]).
//! - `audit`: [`Store::append_audit`] of a `served` record (hash chain, MAC, one sled
//!   transaction), as the agent writes one per slice, without a flush as there; and the same
//!   followed by [`Store::flush`], what a durable record per slice would cost.
//!
//! Times depend on the machine; read them beside each other and beside the request-level
//! benchmarks, never alone. The whole run takes about two minutes:
//!
//! ```text
//! cargo bench -p optin-agent --bench micro
//! cargo bench -p optin-agent --bench micro -- token     # one group
//! cargo bench -p optin-agent --bench micro -- --test    # each benchmark once, seconds
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use optin_agent::core::{never_share, slicer, DEFAULT_ABANDON_AFTER};
use optin_agent::home::Home;
use optin_agent::keys::{GrantKeys, Keys};
use optin_agent::store::{AuditEvent, Store, StoreMac};
use optin_protocol::jws;
use optin_protocol::scope::{Applied, Caveat, GrantId, Granularity, SliceQuery, Terms};
use optin_protocol::signal::{self, Kind, Signal};
use optin_protocol::slice::{self, GrantClaim, SliceClaims, SliceItem};
use optin_protocol::span::Span;
use optin_protocol::token::Token;
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

/// Signals in the store.
const SIGNALS: usize = 10_000;
/// The query of the slice benchmark, and of the page every group here works on.
const QUERY: [(&str, &str); 2] = [("kinds", "search"), ("limit", "100")];
/// The partner's token: the grant's root token narrowed offline by its marketer.
const CAVEATS: [&str; 4] = ["aud=partner.example", "kinds=search,cart", "window=7d", "categories=Apparel & Accessories"];

/// Everything the groups read, made once. The store is declared before the directory so that
/// it is closed before the directory is removed.
struct Fixture {
    now: OffsetDateTime,
    store: Store,
    keys: GrantKeys,
    grant: GrantId,
    terms: Terms,
    abandon_after: Span,
    /// Every stored signal, decoded, in the store's order (kind, then time).
    signals: Vec<Signal>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = Home::open_or_create(&dir.path().join("home")).expect("a home");
        let keys = Keys::load_or_create(&home).expect("an identity key");
        let store = Store::open(&home.store()).expect("a store").keyed(StoreMac::new(keys.store_mac()));
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
        let ndjson: String = optin_tests::fixture::mixed(SIGNALS, now).iter().map(|s| format!("{s}\n")).collect();
        let mut batch = signal::parse_batch(&ndjson, &optin_agent::merchant::registrable).expect("the generated signals are valid");
        never_share::mark(&mut batch);
        let (stored, _) = store.insert_signals(&batch).expect("the signals are stored");
        assert_eq!(stored, SIGNALS, "every generated signal is new");
        let signals = store.all_signals(None).collect::<Result<Vec<_>, _>>().expect("the signals read back");
        let grant = GrantId::from_bytes(*b"micro-bench!");
        let terms = Terms {
            audience: "acme.example".into(),
            kinds: "search,cart,purchase".parse().expect("kinds"),
            granularity: Granularity::Raw,
            window: "30d".parse().expect("a span"),
            expires_at: now + time::Duration::days(30),
            categories: None,
            merchants: None,
            fields: None,
            rate: None,
            noise: None,
        };
        Fixture {
            now,
            keys: keys.grant(&grant).expect("the grant's keys"),
            grant,
            terms,
            abandon_after: DEFAULT_ABANDON_AFTER.parse().expect("a span"),
            signals,
            store,
            _dir: dir,
        }
    }

    /// The scope of `pairs` under the grant's terms, as the agent applies it (the default
    /// never-share list: the agent's until the person changes it).
    fn applied(&self, pairs: &[(&str, &str)]) -> Applied {
        let query = SliceQuery::from_pairs(pairs.iter().copied()).expect("a valid query");
        self.terms.evaluate(&query, self.now).expect("the query is within the grant")
    }

    /// One page of `pairs`, cut from the store.
    fn page(&self, pairs: &[(&str, &str)]) -> Vec<SliceItem> {
        let page = slicer::cut(&self.store, &self.applied(pairs), None, &self.keys, self.abandon_after, self.now).expect("a page");
        page.items
    }

    /// The claims of a slice of `items`, as `Core::slice` makes them: a fresh id, the grant's
    /// issuer and pseudonym, the scope applied, and the number of its audit record.
    fn claims(&self, applied: Applied, items: Vec<SliceItem>) -> SliceClaims {
        let mut jti = [0u8; 16];
        SystemRandom::new().fill(&mut jti).expect("randomness");
        SliceClaims {
            audit_seq: Some(1234),
            iss: self.keys.issuer(),
            sub: self.keys.pseudonym.clone(),
            aud: self.terms.audience.clone(),
            iat: self.now.unix_timestamp(),
            jti: format!("s_{}", optin_protocol::hex(&jti)),
            grant: GrantClaim { id: self.grant.clone(), purpose: "Recommend running gear in our newsletter".into(), expires_at: self.terms.expires_at },
            scope: applied,
            items,
            next_cursor: None,
            counts: None,
            noise: None,
        }
    }

    /// The payload of the slice `kinds=search&limit=100`, as signed.
    fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(&self.claims(self.applied(&QUERY), self.page(&QUERY))).expect("claims serialise")
    }
}

fn token(c: &mut Criterion, f: &Fixture) {
    let root = Token::mint(&f.keys.token_secret, &f.grant);
    let partner = CAVEATS.iter().fold(root.clone(), |t, c| t.attenuate(&c.parse().expect("a caveat")));
    let mut group = c.benchmark_group("token");
    for (name, text) in [("verify_root", root.encode()), ("verify_4_caveats", partner.encode())] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let token = Token::parse(black_box(&text)).expect("the token parses");
                token.verify(&f.keys.token_secret, &f.terms).expect("the token verifies")
            })
        });
    }
    group.finish();
}

fn scope(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("scope");
    let query = SliceQuery::from_pairs(QUERY).expect("a valid query");
    group.bench_function("evaluate", |b| b.iter(|| f.terms.evaluate(black_box(&query), f.now).expect("within the grant")));
    let caveats: Vec<Caveat> = CAVEATS.iter().map(|c| c.parse().expect("a caveat")).collect();
    group.bench_function("narrow_4_caveats", |b| {
        b.iter(|| black_box(&caveats).iter().try_fold(f.terms.clone(), |t, c| t.narrow(c)).expect("the caveats leave something"))
    });
    let everything = f.applied(&[]);
    let filtered = Applied {
        categories: Some(vec!["Apparel & Accessories".into(), "Sporting Goods > Outdoor Recreation".into()]),
        merchants: Some(vec!["trailshoes.example".into(), "outdoor-gear.example".into()]),
        ..everything.clone()
    };
    group.throughput(Throughput::Elements(f.signals.len() as u64));
    // Milliseconds an iteration: as many in every sample (criterion's advice for long
    // iterations), so that 20 samples fit the measurement time.
    group.sampling_mode(SamplingMode::Flat);
    for (name, applied) in [("admits_10k", everything), ("admits_10k_filtered", filtered)] {
        group.bench_function(name, |b| b.iter(|| f.signals.iter().filter(|s| applied.admits(black_box(s))).count()));
    }
    group.finish();
}

fn slice(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("slice");
    group.throughput(Throughput::Elements(100));
    for (name, kind) in [("cut_100_searches", "search"), ("cut_100_carts", "cart")] {
        let applied = f.applied(&[("kinds", kind), ("limit", "100")]);
        let items = slicer::cut(&f.store, &applied, None, &f.keys, f.abandon_after, f.now).expect("a page").items.len();
        assert_eq!(items, 100, "the store holds a full page of {kind}");
        group.bench_function(name, |b| b.iter(|| slicer::cut(&f.store, black_box(&applied), None, &f.keys, f.abandon_after, f.now).expect("a page")));
    }
    let (applied, items) = (f.applied(&QUERY), f.page(&QUERY));
    group.throughput(Throughput::Bytes(f.payload().len() as u64));
    group.bench_function("claims_json_100", |b| {
        b.iter_batched(
            || (applied.clone(), items.clone()),
            |(applied, items)| serde_json::to_vec(&f.claims(applied, items)).expect("claims serialise"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn signing(c: &mut Criterion, f: &Fixture) {
    let payload = f.payload();
    let signed = jws::sign(&f.keys.signing, &payload);
    let jwk = f.keys.jwk();
    let issuer = f.keys.issuer();
    let expected = slice::Expected { issuer: &issuer, audience: &f.terms.audience, grant_id: &f.grant, jwk: &jwk };
    let mut group = c.benchmark_group("jws");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("sign", |b| b.iter(|| jws::sign(&f.keys.signing, black_box(&payload))));
    group.throughput(Throughput::Bytes(signed.len() as u64));
    group.bench_function("verify", |b| b.iter(|| jws::verify(black_box(&signed), &jwk).expect("the slice verifies")));
    group.bench_function("slice_verify", |b| b.iter(|| slice::verify(black_box(&signed), expected).expect("the slice verifies")));
    group.finish();
}

fn store(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("store");
    let week = f.now - time::Duration::days(7);
    let in_week = f.store.scan(Kind::Search, week, f.now, None).count();
    group.throughput(Throughput::Elements(in_week as u64));
    group.bench_function("scan_7d_searches", |b| b.iter(|| drain(f.store.scan(Kind::Search, black_box(week), f.now, None))));
    let month = f.now - time::Duration::days(30);
    group.throughput(Throughput::Elements(100));
    group.bench_function("scan_100", |b| b.iter(|| drain(f.store.scan(Kind::Search, black_box(month), f.now, None).take(100))));
    // The stored record of a signal is its own serialisation (`Store::insert_signals`).
    let records: Vec<Vec<u8>> = f.signals.iter().take(100).map(|s| serde_json::to_vec(s).expect("a signal serialises")).collect();
    group.bench_function("decode_100", |b| b.iter(|| drain(black_box(&records).iter().map(|r| Signal::from_stored_json(r)))));
    group.finish();
}

/// Reads every row, each kept from the optimiser, and counts them; a failed row fails the run.
fn drain<T, E: std::fmt::Debug>(rows: impl Iterator<Item = Result<T, E>>) -> usize {
    rows.map(|row| black_box(row.expect("a row reads"))).fold(0, |n, _| n + 1)
}

/// Threads appending at once in `audit/append_served_8_threads`.
const APPENDERS: u64 = 8;

fn audit(c: &mut Criterion, f: &Fixture) {
    let signed = jws::sign(&f.keys.signing, &f.payload());
    let served = AuditEvent::Served {
        grant_id: f.grant.clone(),
        marketer: f.terms.audience.clone(),
        audience: None,
        asked: "/v1/slice?kinds=search&limit=100".into(),
        items: 100,
        slice_id: "s_3f0c2a9b8e7d6c5b4a3f2e1d0c9b8a7f".into(),
        jws_sha256: optin_protocol::hex(&optin_protocol::sha256(signed.as_bytes())),
        repeat_of: None,
    };
    let mut group = c.benchmark_group("audit");
    group.bench_function("append_served", |b| b.iter(|| f.store.append_audit(f.now, black_box(served.clone())).expect("appended")));
    // Slices are served by many threads at once: the time per record of 8 threads
    // appending together, as the blocking pool does under load.
    group.bench_function("append_served_8_threads", |b| {
        b.iter_custom(|records| {
            let started = std::time::Instant::now();
            std::thread::scope(|threads| {
                for n in 0..APPENDERS {
                    // Shared out so that `records` are appended in all.
                    let mine = records / APPENDERS + u64::from(n < records % APPENDERS);
                    let served = &served;
                    threads.spawn(move || {
                        for _ in 0..mine {
                            f.store.append_audit(f.now, black_box(served.clone())).expect("appended");
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    // The records appended above are written out first, so that the first flush measured
    // is one record's like the others, not all of theirs.
    f.store.flush().expect("flushed");
    // An fsync an iteration, uneven: as many iterations in every sample.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("append_served_flushed", |b| {
        b.iter(|| {
            f.store.append_audit(f.now, black_box(served.clone())).expect("appended");
            f.store.flush().expect("flushed")
        })
    });
    group.finish();
}

fn micro(c: &mut Criterion) {
    let f = Fixture::new();
    let payload = f.payload();
    eprintln!(
        "{SIGNALS} signals stored; the slice of kinds=search&limit=100: {} bytes of JSON, {} bytes of JWS",
        payload.len(),
        jws::sign(&f.keys.signing, &payload).len()
    );
    token(c, &f);
    scope(c, &f);
    slice(c, &f);
    signing(c, &f);
    store(c, &f);
    // Last: it grows the audit log, which the other groups do not read.
    audit(c, &f);
}

criterion_group! {
    name = benches;
    // Modest, so the whole target runs in about two minutes on a shared machine; flags on
    // the command line (`--measurement-time`, `--sample-size`) still override these.
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = micro
}
criterion_main!(benches);
