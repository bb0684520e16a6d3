//! How close slice serving comes to a bare signing HTTPS server, as a ratio measured in one
//! run.
//!
//! Two targets, driven by the same load generator in turn:
//!
//! - **agent**: the real `optin serve` in a temporary home on `127.0.0.1:0`, holding
//!   generated signals, answering `GET /v1/slice` for a fresh grant's token;
//! - **baseline**: a bare hyper + hyper-util + tokio-rustls server in this process, with the
//!   agent's TLS setup (rcgen self-signed certificate, ring provider, ALPN h2 and http/1.1,
//!   TLS 1.3 negotiated) and the agent's HTTP/1.1 settings, that answers every request with a
//!   compact JWS over a payload of the same bytes as the agent's slice, signed with Ed25519
//!   per request. It does the crypto and the transport, but no store, scope, audit or token
//!   work.
//!
//! The load generator opens C keep-alive HTTP/1.1 connections over TLS (pinned to the
//! target's certificate) and loops requests on each for a fixed time after a warm-up. Targets
//! alternate in rounds (baseline, agent, baseline, agent, …) so a noisy neighbour hurts both
//! alike. Every agent answer must be 200; one in 100 is verified with
//! `GrantBundle::verify_slice` (one in 100 baseline answers with the baseline key, so the
//! client does the same work for both). Absolute numbers depend on the machine; the ratios
//! are the result.
//!
//! ```text
//! cargo build --release -p optin-agent && cargo bench -p optin-tests --bench slices
//! ```
//!
//! The agent is `$OPTIN_BIN`, or `optin` next to this benchmark's target directory (the
//! release build under `cargo bench`); this package's library finds, starts and stops it as
//! it does for the end-to-end tests. Settings, by environment variable:
//!
//! | variable                  | default                 | meaning                                  |
//! |---------------------------|-------------------------|------------------------------------------|
//! | `OPTIN_BENCH_SIGNALS`     | 10000                   | signals ingested (mixed kinds, 30 days)  |
//! | `OPTIN_BENCH_CONNECTIONS` | 16                      | concurrent keep-alive connections        |
//! | `OPTIN_BENCH_SECONDS`     | 5                       | measured seconds per target and round    |
//! | `OPTIN_BENCH_WARMUP`      | 1                       | warm-up seconds before each measurement  |
//! | `OPTIN_BENCH_ROUNDS`      | 2                       | rounds (each runs both targets)          |
//! | `OPTIN_BENCH_QUERY`       | `kinds=search&limit=100`| the slice query string                   |

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use optin_protocol::bundle::GrantBundle;
use optin_protocol::jws::Jwk;
use optin_tests::{find_optin_bin, HarnessError, Home};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long one CLI command may take: a batch of 10,000 signals is more than a test sends.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one request may take before the run is declared broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// One answer in this many is verified.
const VERIFY_EVERY: u64 = 100;
/// Most signals per ingested file (the agent's batch limit).
const BATCH: usize = 10_000;

/// The PID of the running agent, for the watchdog (0: none).
static AGENT_PID: AtomicU32 = AtomicU32::new(0);

struct Settings {
    signals: usize,
    connections: usize,
    seconds: f64,
    warmup: f64,
    rounds: usize,
    query: String,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
            match std::env::var(name) {
                Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a valid value")),
                Err(_) => Ok(default),
            }
        }
        let settings = Settings {
            signals: var("OPTIN_BENCH_SIGNALS", 10_000)?,
            connections: var("OPTIN_BENCH_CONNECTIONS", 16)?,
            seconds: var("OPTIN_BENCH_SECONDS", 5.0)?,
            warmup: var("OPTIN_BENCH_WARMUP", 1.0)?,
            rounds: var("OPTIN_BENCH_ROUNDS", 2)?,
            query: var("OPTIN_BENCH_QUERY", "kinds=search&limit=100".to_owned())?,
        };
        if settings.connections == 0 || settings.connections > 256 {
            return Err("OPTIN_BENCH_CONNECTIONS must be 1..=256".into());
        }
        if !(0.1..=600.0).contains(&settings.seconds) || !(0.0..=60.0).contains(&settings.warmup) {
            return Err("OPTIN_BENCH_SECONDS must be 0.1..=600 and OPTIN_BENCH_WARMUP 0..=60".into());
        }
        if settings.rounds == 0 || settings.rounds > 20 {
            return Err("OPTIN_BENCH_ROUNDS must be 1..=20".into());
        }
        Ok(settings)
    }

    /// A generous bound on the whole run, for the watchdog.
    fn budget(&self) -> Duration {
        let measuring = (self.seconds + self.warmup + 1.0) * 2.0 * self.rounds as f64;
        let setup = 60.0 + self.signals as f64 / 1000.0;
        Duration::from_secs_f64(2.0 * (measuring + setup))
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`. Without it (`cargo test --benches`, `--list`) there is
    // nothing to check quickly: a measurement takes half a minute.
    if !std::env::args().skip(1).any(|a| a == "--bench") {
        println!("slices: a benchmark; run it with `cargo bench -p optin-tests --bench slices`");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slices bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    start_watchdog(settings.budget());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bench-client").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slices bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&settings));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slices bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ends a run that overstays its budget: SIGTERM to the agent, then exit.
fn start_watchdog(budget: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("slices bench: still running after {budget:?}; stopping the agent and exiting");
        let pid = AGENT_PID.load(Ordering::SeqCst);
        if pid != 0 {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            std::thread::sleep(Duration::from_secs(3));
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        std::process::exit(3);
    });
}

async fn run(settings: &Settings) -> Result<(), Box<dyn Error>> {
    let bin = find_optin_bin()?;

    println!(
        "optin slice benchmark: {} signals, {} connections, {} round(s) of {} s per target after {} s warm-up, {} CPU(s)",
        settings.signals,
        settings.connections,
        settings.rounds,
        settings.seconds,
        settings.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("agent: {}", bin.display());

    let agent = Home::try_new()?.try_serve(&[]).await?;
    AGENT_PID.store(agent.pid().unwrap_or(0), Ordering::SeqCst);
    println!("agent listening on {}", agent.url);
    let home = agent.home();

    // Signals, through the CLI as a feeder would (the running agent takes them over its
    // admin socket), in batches the agent accepts.
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).map_err(|e| e.to_string())?;
    let signals = generate(settings.signals, now);
    let started = Instant::now();
    for (n, chunk) in signals.chunks(BATCH).enumerate() {
        let file = home.scratch(&format!("batch-{n}.ndjson"));
        let text: String = chunk.iter().map(|s| format!("{s}\n")).collect();
        std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
        let path = file.to_str().ok_or("a temporary path that is not UTF-8")?;
        cli(home, &["ingest", path, "--json"]).await?;
    }
    println!("ingested {} signals in {:.2} s", signals.len(), started.elapsed().as_secs_f64());
    let pid = agent.pid().unwrap_or(0);
    let rss_ingested = optin_tests::proc_status_kib(pid, "VmRSS");

    let out = cli(
        home,
        &[
            "grant",
            "bench.example",
            "--kinds",
            "search,cart,purchase",
            "--granularity",
            "raw",
            "--window",
            "30d",
            "--expires",
            "90d",
            "--purpose",
            "benchmark",
            "--json",
        ],
    )
    .await?;
    let bundle = GrantBundle::parse(&out).map_err(|e| format!("not a grant bundle ({e}): {out}"))?;
    if bundle.pull_from() != Some((agent.url.as_str(), agent.fingerprint.as_str())) {
        return Err("the bundle does not name the running agent".into());
    }
    let bundle = Arc::new(bundle);
    let path = format!("/v1/slice?{}", settings.query);

    let agent_target = Target::new(agent.addr(), &agent.fingerprint, &path, Some(&bundle.token), Check::Agent(bundle.clone()))?;
    // One answer, verified, sets the size of the baseline's payload.
    let sample = single(&agent_target).await?;
    let claims = bundle.verify_slice(&sample).map_err(|e| format!("the agent's slice does not verify: {e}"))?;
    let payload = sample.split('.').nth(1).and_then(|p| URL_SAFE_NO_PAD.decode(p).ok()).ok_or("the agent's slice has no payload")?;
    println!("request: GET {path} -> {} items, body {} bytes (payload {} bytes)", claims.items.len(), sample.len(), payload.len());

    let baseline = Baseline::start(payload)?;
    let baseline_target = Target::new(baseline.addr, &baseline.fingerprint, &path, Some(&bundle.token), Check::Baseline(baseline.jwk.clone()))?;
    let baseline_sample = single(&baseline_target).await?;
    println!("baseline listening on https://{}: body {} bytes", baseline.addr, baseline_sample.len());

    let store_before = dir_size(&home.path().join("store"));
    let mut results: Vec<(&str, Measured)> = Vec::new();
    for round in 1..=settings.rounds {
        for (name, target) in [("baseline", &baseline_target), ("agent", &agent_target)] {
            let measured = drive(target, settings).await?;
            println!("round {round} {name:<8} {}", measured.line());
            results.push((name, measured));
        }
    }
    let store_after = dir_size(&home.path().join("store"));
    let (rss_after, rss_peak) = (optin_tests::proc_status_kib(pid, "VmRSS"), optin_tests::proc_status_kib(pid, "VmHWM"));

    let total = |name: &str| Measured::merge(results.iter().filter(|(n, _)| *n == name).map(|(_, m)| m));
    let (base, agent_total) = (total("baseline"), total("agent"));
    println!("---");
    println!("baseline {}", base.line());
    println!("agent    {}", agent_total.line());
    println!(
        "ratio agent/baseline: throughput {:.3}, p50 latency {:.3}, p99 latency {:.3}",
        agent_total.rate() / base.rate(),
        agent_total.percentile(0.50).as_secs_f64() / base.percentile(0.50).as_secs_f64(),
        agent_total.percentile(0.99).as_secs_f64() / base.percentile(0.99).as_secs_f64(),
    );
    println!(
        "agent store: {:.1} MiB before the load, {:.1} MiB after {} slices (each one audited)",
        store_before as f64 / 1048576.0,
        store_after as f64 / 1048576.0,
        agent_total.requests,
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "agent memory: VmRSS {:.1} MiB with {} signals stored, {:.1} MiB after the load, peak (VmHWM) {:.1} MiB",
        mib(rss_ingested),
        signals.len(),
        mib(rss_after),
        mib(rss_peak),
    );

    drop(baseline);
    agent.try_stop()?;
    AGENT_PID.store(0, Ordering::SeqCst);
    Ok(())
}

/// Runs `optin --home HOME ARGS…` (bounded) and returns its standard output if it succeeded.
async fn cli(home: &Home, args: &[&str]) -> Result<String, HarnessError> {
    Ok(home.command(args).timeout(CLI_TIMEOUT).try_run().await?.succeeded()?.stdout)
}

/// `n` signals, half searches, three tenths carts and a fifth purchases, at times spread
/// over the last 29 days (inside a 30-day window for the whole run), from a fixed seed.
fn generate(n: usize, now: time::OffsetDateTime) -> Vec<Value> {
    const QUERIES: [&str; 8] = [
        "trail running shoes wide fit",
        "ridgeline gtx review",
        "winter boots waterproof",
        "noise cancelling headphones",
        "ultralight tent two person",
        "espresso machine under 300",
        "merino base layer",
        "headlamp rechargeable",
    ];
    const ENGINES: [&str; 4] = ["duckduckgo.com", "google.com", "bing.com", "search.brave.com"];
    const CATEGORIES: [&str; 4] =
        ["Apparel & Accessories > Shoes", "Electronics > Audio", "Sporting Goods > Outdoor Recreation", "Home & Garden > Kitchen & Dining"];
    const MERCHANTS: [&str; 6] = ["trailshoes.example", "soundshop.example", "outdoor-gear.example", "kitchen.example", "basecamp.example", "lumen.example"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: deterministic and good enough to spread fixtures.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let span = 29 * 24 * 3600 - 120;
    (0..n)
        .map(|i| {
            let r = next();
            let at = now - time::Duration::seconds(60 + (next() % span) as i64);
            let at = optin_protocol::timestamp::format(at);
            let category = CATEGORIES[(r >> 8) as usize % CATEGORIES.len()];
            let merchant = MERCHANTS[(r >> 16) as usize % MERCHANTS.len()];
            let price = format!("{}.{:02}", 10 + (r >> 24) % 300, (r >> 40) % 100);
            match r % 10 {
                0..=4 => json!({
                    "id": format!("bench-s-{i}"), "kind": "search", "at": at, "source": "bench", "category": category,
                    "query": format!("{} {}", QUERIES[(r >> 32) as usize % QUERIES.len()], i % 97),
                    "engine": ENGINES[(r >> 48) as usize % ENGINES.len()],
                }),
                5..=7 => json!({
                    "id": format!("bench-c-{i}"), "kind": "cart", "at": at, "source": "bench", "category": category,
                    "merchant": merchant, "currency": "EUR",
                    "items": [{"name": format!("item {}", i % 113), "sku": format!("SKU-{i}"), "price": price, "quantity": 1}],
                }),
                _ => json!({
                    "id": format!("bench-p-{i}"), "kind": "purchase", "at": at, "source": "bench", "category": category,
                    "merchant": merchant, "currency": "EUR", "total": price, "order_id": format!("order-{i}"),
                    "items": [{"name": format!("item {}", i % 113), "price": price, "quantity": 1}],
                }),
            }
        })
        .collect()
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The bare server: TLS and HTTP like the agent's, and an Ed25519 JWS per answer.
struct Baseline {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    fingerprint: String,
    jwk: Jwk,
}

struct Signer {
    key: Ed25519KeyPair,
    payload: Vec<u8>,
}

impl Baseline {
    fn start(payload: Vec<u8>) -> Result<Baseline, String> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
            .map_err(|e| format!("self-signed certificate: {e}"))?;
        let cert = made.cert.der().clone();
        let fingerprint = optin_protocol::hex(&optin_protocol::sha256(cert.as_ref()));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot make an Ed25519 key")?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| "cannot load the Ed25519 key")?;
        let jwk = Jwk::ed25519(key.public_key().as_ref());
        let signer = Arc::new(Signer { key, payload });

        // Its own runtime, as the agent has its own process: the load generator's threads
        // are not the server's.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-baseline")
            .build()
            .map_err(|e| format!("the baseline's runtime: {e}"))?;
        // Bound here, made a tokio listener inside its runtime (this function runs inside
        // the load generator's, which must not block on another).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("the baseline cannot listen: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let signer = signer.clone();
                tokio::spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).max_buf_size(64 * 1024);
                    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64);
                    let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                        let signer = signer.clone();
                        async move { Ok::<_, Infallible>(signed(&signer)) }
                    });
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Ok(Baseline { runtime: Some(runtime), addr, fingerprint, jwk })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        // Dropped inside the load generator's runtime, where blocking is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn signed(signer: &Signer) -> Response<Full<Bytes>> {
    let jws = optin_protocol::jws::sign(&signer.key, &signer.payload);
    let mut response = Response::new(Full::new(Bytes::from(jws)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/jose"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How answers of a target are checked.
#[derive(Clone)]
enum Check {
    /// A slice of this grant.
    Agent(Arc<GrantBundle>),
    /// A JWS by the baseline's key.
    Baseline(Jwk),
}

impl Check {
    fn verify(&self, jws: &str) -> Result<(), String> {
        match self {
            Check::Agent(bundle) => bundle.verify_slice(jws).map(drop).map_err(|e| format!("a slice does not verify: {e}")),
            Check::Baseline(jwk) => optin_protocol::jws::verify(jws, jwk).map(drop).map_err(|e| format!("a baseline answer does not verify: {e}")),
        }
    }
}

/// Where and what the load generator asks.
struct Target {
    addr: SocketAddr,
    client: optin_examples::PinnedClient,
    path: String,
    authority: HeaderValue,
    authorization: Option<HeaderValue>,
    check: Check,
}

impl Target {
    fn new(addr: SocketAddr, fingerprint: &str, path: &str, token: Option<&str>, check: Check) -> Result<Arc<Target>, String> {
        // The marketer's own pinned client makes the TLS connections; this drives HTTP on them.
        let client = optin_examples::PinnedClient::new(&format!("https://{addr}"), fingerprint).map_err(|e| e.to_string())?;
        let authorization =
            token.map(|t| HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| "a token that is not a header value".to_owned())).transpose()?;
        Ok(Arc::new(Target {
            addr,
            client,
            path: path.to_owned(),
            authority: HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
            authorization,
            check,
        }))
    }

    /// A TLS 1.3 + HTTP/1.1 connection, pinned.
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
        let tls = self.client.connect().await.map_err(|e| format!("TLS with {}: {e}", self.addr))?;
        let (_, session) = tls.get_ref();
        if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) || session.alpn_protocol() != Some(b"http/1.1") {
            return Err(format!("{} negotiated {:?} / {:?}, not TLS 1.3 / http/1.1", self.addr, session.protocol_version(), session.alpn_protocol()));
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(&self) -> Result<Request<Empty<Bytes>>, String> {
        let mut request = Request::builder().uri(&self.path).header(HOST, self.authority.clone());
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        request.body(Empty::new()).map_err(|e| format!("request: {e}"))
    }

    /// One exchange on an open connection: the body, checked to be a 200.
    async fn exchange(&self, sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> Result<Bytes, String> {
        let request = self.request()?;
        let work = async {
            sender.ready().await.map_err(|e| format!("connection: {e}"))?;
            let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
            if status != StatusCode::OK {
                return Err(format!("answer {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
            }
            Ok(body)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work).await.map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// One request on a fresh connection; the body as text, verified.
async fn single(target: &Target) -> Result<String, String> {
    let mut sender = target.connect().await?;
    let body = target.exchange(&mut sender).await?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| "a body that is not UTF-8".to_owned())?;
    target.check.verify(&text)?;
    Ok(text)
}

/// What one target did in one measurement (or several, merged).
struct Measured {
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    bytes: u64,
}

impl Measured {
    fn merge<'a>(all: impl Iterator<Item = &'a Measured>) -> Measured {
        let mut out = Measured { requests: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), bytes: 0 };
        for m in all {
            out.requests += m.requests;
            out.elapsed += m.elapsed;
            out.bytes += m.bytes;
            out.latencies_us.extend_from_slice(&m.latencies_us);
        }
        out.latencies_us.sort_unstable();
        out
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latencies must be sorted.
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len());
        Duration::from_micros(u64::from(self.latencies_us[rank - 1]))
    }

    fn line(&self) -> String {
        format!(
            "{:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests in {:.2} s, {:.0} bytes/answer)",
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.bytes as f64 / self.requests.max(1) as f64,
        )
    }
}

/// C connections looping requests: a warm-up, then a measured stretch.
async fn drive(target: &Arc<Target>, settings: &Settings) -> Result<Measured, String> {
    let mut senders = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        senders.push(target.connect().await?);
    }
    let start = tokio::time::Instant::now() + Duration::from_secs_f64(settings.warmup);
    let end = start + Duration::from_secs_f64(settings.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, mut sender) in senders.into_iter().enumerate() {
        let target = target.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 14);
            let (mut bytes, mut answered) = (0u64, n as u64);
            loop {
                let began = tokio::time::Instant::now();
                if began >= end {
                    break;
                }
                let body = target.exchange(&mut sender).await?;
                let finished = tokio::time::Instant::now();
                answered += 1;
                if answered % VERIFY_EVERY == 0 {
                    let text = std::str::from_utf8(&body).map_err(|_| "a body that is not UTF-8".to_owned())?;
                    target.check.verify(text)?;
                }
                if began >= start && finished <= end {
                    latencies.push(u32::try_from((finished - began).as_micros()).unwrap_or(u32::MAX));
                    bytes += body.len() as u64;
                }
            }
            Ok::<_, String>((latencies, bytes))
        });
    }
    let mut measured = Measured { requests: 0, elapsed: end - start, latencies_us: Vec::new(), bytes: 0 };
    while let Some(joined) = tasks.join_next().await {
        let (latencies, bytes) = joined.map_err(|e| format!("a connection task failed: {e}"))??;
        measured.requests += latencies.len() as u64;
        measured.bytes += bytes;
        measured.latencies_us.extend(latencies);
    }
    measured.latencies_us.sort_unstable();
    Ok(measured)
}
