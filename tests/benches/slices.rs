//! The agent's figures of issue 16 as one table, each against a ceiling measured in the same
//! run: how close slice serving comes to a bare signing HTTPS server, what ingest costs, how
//! much memory and disk the agent takes.
//!
//! Three loads, driven by the same load generator in turn:
//!
//! - **agent, cut afresh**: the real `optin serve` in a temporary home on `127.0.0.1:0`,
//!   holding generated signals, answering `GET /v1/slice` for a fresh grant's token, each
//!   request with its own `since` (a second later than the last request's), so that every
//!   answer is cut and signed;
//! - **agent, served again**: the same agent asked the same query over and over, which it
//!   answers with the slice it signed first while nothing in it changed (SPEC.md, "Repeated
//!   slices");
//! - **baseline**: a bare hyper + hyper-util + tokio-rustls server in this process (its own
//!   runtime, threads named `bench-baseline`), with the agent's TLS setup (rcgen self-signed
//!   certificate, ring provider, ALPN h2 and http/1.1, TLS 1.3 negotiated) and the agent's
//!   HTTP/1.1 settings, that answers every request with a compact JWS over a payload of the
//!   same bytes as the agent's slice, signed with Ed25519 per request. It does the crypto and
//!   the transport, but no store, scope, audit or token work.
//!
//! Before the load, the signals go in as the owner's feeder sends them, `POST /v1/signals`
//! in batches of 1,000 over a few connections; then the agent is killed with SIGKILL and
//! started again on the same home, and every signal acknowledged must be there (a run that
//! loses one fails). Memory under load is the restarted agent's; the one that ingested is
//! reported beside it.
//!
//! The load generator opens C keep-alive HTTP/1.1 connections over TLS (pinned to the
//! target's certificate) and loops requests on each for a fixed time after a warm-up. Loads
//! take turns in rounds, each round starting one later (baseline, afresh, again; afresh,
//! again, baseline; …), so a noisy neighbour hurts all alike, and each ratio is the median of the rounds' ratios. Over each measured stretch, the
//! server's CPU time is read from `/proc`: the agent's process, the baseline's threads. Every
//! agent answer must be 200; one in 100 is verified with `GrantBundle::verify_slice` (one in
//! 100 baseline answers with the baseline key, so the client does the same work for both).
//! Absolute numbers depend on the machine; the ratios are the result.
//!
//! ```text
//! cargo build --release -p optin-agent && cargo bench -p optin-tests --bench slices
//! ```
//!
//! The agent is `$OPTIN_BIN`, or `optin` next to this benchmark's target directory (the
//! release build under `cargo bench`); this package's library finds, starts and stops it as
//! it does for the end-to-end tests. Settings, by environment variable:
//!
//! | variable                         | default                 | meaning                                  |
//! |----------------------------------|-------------------------|------------------------------------------|
//! | `OPTIN_BENCH_SIGNALS`            | 10000                   | signals ingested (mixed kinds, 30 days)  |
//! | `OPTIN_BENCH_INGEST_CONNECTIONS` | 4                       | connections posting batches at once      |
//! | `OPTIN_BENCH_CONNECTIONS`        | 16                      | concurrent keep-alive connections        |
//! | `OPTIN_BENCH_SECONDS`            | 5                       | measured seconds per target and round    |
//! | `OPTIN_BENCH_WARMUP`             | 1                       | warm-up seconds before each measurement  |
//! | `OPTIN_BENCH_ROUNDS`             | 3                       | rounds (each runs both targets)          |
//! | `OPTIN_BENCH_QUERY`              | `kinds=search&limit=100`| the slice query string, without `since`  |
//! | `OPTIN_BENCH_AUDIT_KEEP`         | the agent's             | `--audit-keep-records` of the agent      |
//! | `OPTIN_BENCH_LOADS`              | `baseline,afresh,again` | the loads run, to profile or weigh one   |

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long one CLI command may take: a batch of 10,000 signals is more than a test sends.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one request may take before the run is declared broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// One answer in this many is verified.
const VERIFY_EVERY: u64 = 100;
/// Signals per `POST /v1/signals`.
const INGEST_BATCH: usize = 1_000;
/// The name of the baseline server's threads, whose CPU time is the ceiling's.
const BASELINE_THREADS: &str = "bench-baseline";

/// The loads of a round, in the order of the first round.
const LOADS: [Load; 3] = [Load::Baseline, Load::Afresh, Load::Again];

/// What the load generator drives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// The bare signing server.
    Baseline,
    /// The agent, every request with its own `since`, so every slice is cut and signed.
    Afresh,
    /// The agent, the same request every time, so an unchanged slice is served again.
    Again,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Baseline => "baseline",
            Load::Afresh => "afresh",
            Load::Again => "again",
        }
    }
}

/// The PID of the running agent, for the watchdog (0: none).
static AGENT_PID: AtomicU32 = AtomicU32::new(0);

struct Settings {
    signals: usize,
    connections: usize,
    seconds: f64,
    warmup: f64,
    rounds: usize,
    query: String,
    ingest_connections: usize,
    audit_keep: Option<u64>,
    /// The loads run, in the order of the first round.
    loads: Vec<Load>,
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
            rounds: var("OPTIN_BENCH_ROUNDS", 3)?,
            query: var("OPTIN_BENCH_QUERY", "kinds=search&limit=100".to_owned())?,
            ingest_connections: var("OPTIN_BENCH_INGEST_CONNECTIONS", 4)?,
            audit_keep: match std::env::var("OPTIN_BENCH_AUDIT_KEEP") {
                Ok(text) => Some(text.trim().parse().map_err(|_| format!("OPTIN_BENCH_AUDIT_KEEP={text:?} is not a number of records"))?),
                Err(_) => None,
            },
            loads: match std::env::var("OPTIN_BENCH_LOADS") {
                Ok(text) => text
                    .split(',')
                    .map(|name| LOADS.into_iter().find(|l| l.name() == name.trim()).ok_or(format!("OPTIN_BENCH_LOADS: no load {name:?}")))
                    .collect::<Result<_, _>>()?,
                Err(_) => LOADS.to_vec(),
            },
        };
        if settings.loads.is_empty() {
            return Err("OPTIN_BENCH_LOADS names no load".into());
        }
        if settings.ingest_connections == 0 || settings.ingest_connections > 64 {
            return Err("OPTIN_BENCH_INGEST_CONNECTIONS must be 1..=64".into());
        }
        if settings.connections == 0 || settings.connections > 256 {
            return Err("OPTIN_BENCH_CONNECTIONS must be 1..=256".into());
        }
        if !(0.1..=600.0).contains(&settings.seconds) || !(0.0..=60.0).contains(&settings.warmup) {
            return Err("OPTIN_BENCH_SECONDS must be 0.1..=600 and OPTIN_BENCH_WARMUP 0..=60".into());
        }
        if settings.query.split('&').any(|pair| pair.starts_with("since=")) {
            return Err("OPTIN_BENCH_QUERY must not set `since`: the load that cuts afresh sets its own".into());
        }
        if settings.rounds == 0 || settings.rounds > 20 {
            return Err("OPTIN_BENCH_ROUNDS must be 1..=20".into());
        }
        Ok(settings)
    }

    /// A generous bound on the whole run, for the watchdog.
    fn budget(&self) -> Duration {
        let measuring = (self.seconds + self.warmup + 1.0) * self.loads.len() as f64 * self.rounds as f64;
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
    let home_before = dir_size(agent.home().path());

    // Signals, as the owner's feeder sends them: `POST /v1/signals`, batches of 1,000 over a
    // few connections at once. A 200 means stored and flushed, which the kill below checks.
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).map_err(|e| e.to_string())?;
    let batches: Vec<String> =
        optin_tests::fixture::mixed(settings.signals, now).chunks(INGEST_BATCH).map(|chunk| chunk.iter().map(|s| format!("{s}\n")).collect()).collect();
    let ndjson_bytes: usize = batches.iter().map(String::len).sum();
    let token = cli(agent.home(), &["ingest-token"]).await?.trim().to_owned();
    let ingest_target = Target::new(agent.addr(), &agent.fingerprint, "/v1/signals", Some(&token), Check::Ingest)?;
    let ingested = ingest(&ingest_target, batches, settings.ingest_connections).await?;
    let pid = agent.pid().unwrap_or(0);
    let rss_ingested = optin_tests::proc_status_kib(pid, "VmRSS");
    let home_growth = dir_size(agent.home().path()).saturating_sub(home_before);
    println!(
        "ingested {} signals ({} bytes of NDJSON) in {:.2} s over {} connection(s): {:.0} signals/s; agent VmRSS {:.1} MiB",
        ingested.stored,
        ndjson_bytes,
        ingested.elapsed.as_secs_f64(),
        settings.ingest_connections,
        ingested.stored as f64 / ingested.elapsed.as_secs_f64(),
        mib(rss_ingested)
    );

    // Acknowledged means durable: SIGKILL, start again on the same home, count.
    let keep = settings.audit_keep.map(|n| n.to_string());
    let serve_args: Vec<&str> = keep.as_deref().map(|n| vec!["--audit-keep-records", n]).unwrap_or_default();
    let agent = agent.kill_hard().try_serve(&serve_args).await?;
    AGENT_PID.store(agent.pid().unwrap_or(0), Ordering::SeqCst);
    let status: Value = serde_json::from_str(&cli(agent.home(), &["status", "--json"]).await?)?;
    let kept: u64 = status["signals"].as_object().ok_or("`optin status --json` has no signal counts")?.values().filter_map(Value::as_u64).sum();
    if kept != ingested.stored {
        return Err(format!("{} signals were acknowledged, {kept} are stored after SIGKILL and a restart", ingested.stored).into());
    }
    let pid = agent.pid().unwrap_or(0);
    let home = agent.home();
    println!("after SIGKILL and a restart on {}: all {kept} acknowledged signals are stored", agent.url);

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
    // Cut afresh: every request's window starts a second after the last one's, from the
    // oldest signal on, so each is a new question over as many signals.
    let afresh_target = Arc::new(Target {
        since: Some((now - time::Duration::days(29), AtomicU64::new(0))),
        ..Target::build(agent.addr(), &agent.fingerprint, &path, Some(&bundle.token), Check::Agent(bundle.clone()))?
    });
    let sample = single(&afresh_target).await?;
    let afresh = bundle.verify_slice(&sample).map_err(|e| format!("the agent's slice does not verify: {e}"))?;
    println!("afresh: GET {path}&since=… -> {} items, body {} bytes", afresh.items.len(), sample.len());

    let baseline = Baseline::start(payload)?;
    let baseline_target = Target::new(baseline.addr, &baseline.fingerprint, &path, Some(&bundle.token), Check::Baseline(baseline.jwk.clone()))?;
    let baseline_sample = single(&baseline_target).await?;
    println!("baseline listening on https://{}: body {} bytes", baseline.addr, baseline_sample.len());

    let store_before = dir_size(&home.path().join("store"));
    let mut rounds: Vec<Round> = Vec::new();
    for round in 0..settings.rounds {
        // Each round starts one load later, so that none always follows another's load.
        let mut measured = Round::default();
        for turn in 0..settings.loads.len() {
            let load = settings.loads[(round + turn) % settings.loads.len()];
            let (target, cpu) = match load {
                Load::Baseline => (&baseline_target, Cpu::Threads(BASELINE_THREADS)),
                Load::Afresh => (&afresh_target, Cpu::Process(pid)),
                Load::Again => (&agent_target, Cpu::Process(pid)),
            };
            let m = drive(target, settings, cpu).await?;
            println!("round {} {:<8} {}", round + 1, load.name(), m.line());
            measured.set(load, m);
        }
        rounds.push(measured);
    }
    let store_after = dir_size(&home.path().join("store"));
    // The pruner runs once a second: give it the time to reach the bound.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let verified = cli(home, &["audit", "--verify"]).await?;
    let (rss_after, rss_peak) = (optin_tests::proc_status_kib(pid, "VmRSS"), optin_tests::proc_status_kib(pid, "VmHWM"));

    // The median over the rounds of `f` of a round's measurements.
    let median = |f: &dyn Fn(&Round) -> Option<f64>| {
        let mut all: Vec<f64> = rounds.iter().filter_map(f).collect();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied().unwrap_or(f64::NAN)
    };
    // Of a load against the baseline in the same round.
    let ratio = |load: Load, f: fn(&Measured) -> f64| median(&|r| Some(f(r.get(load)?) / f(r.get(Load::Baseline)?)));
    let middle = |load: Load, f: fn(&Measured) -> f64| median(&|r| r.get(load).map(f));
    let rate: fn(&Measured) -> f64 = Measured::rate;
    let cpu_us: fn(&Measured) -> f64 = |m| m.cpu_per_answer().as_secs_f64() * 1e6;
    let p99_ms: fn(&Measured) -> f64 = |m| m.percentile(0.99).as_secs_f64() * 1e3;
    let slices: u64 = rounds.iter().flat_map(|r| [r.get(Load::Afresh), r.get(Load::Again)]).flatten().map(|m| m.requests).sum();
    let audit_per_slice = store_after.saturating_sub(store_before) as f64 / slices.max(1) as f64;

    println!("---");
    println!(
        "{} signals, {}, {} connections, median of {} round(s), the ceiling and the agent's two loads in turn",
        ingested.stored, settings.query, settings.connections, settings.rounds
    );
    println!();
    println!("| figure | measured | target |");
    println!("|---|---|---|");
    // A load left out (`OPTIN_BENCH_LOADS`) has no row, rather than a row of NaN; without the
    // ceiling, there are no ratios at all.
    let ran = |load: Load| settings.loads.contains(&load) && settings.loads.contains(&Load::Baseline);
    for (load, what, target) in
        [(Load::Afresh, "each slice cut afresh", "≥ 0.8"), (Load::Again, "an unchanged slice served again", "≥ 1.0")].into_iter().filter(|l| ran(l.0))
    {
        println!(
            "| slice req/s ÷ sign-per-response ceiling req/s, {what} | {:.3} ({:.0} vs {:.0}) | {target} |",
            ratio(load, rate),
            middle(load, rate),
            middle(Load::Baseline, rate)
        );
    }
    for (load, what) in [(Load::Afresh, "cut afresh"), (Load::Again, "served again")].into_iter().filter(|l| ran(l.0)) {
        println!(
            "| server CPU per slice, {what} | {:.0} µs (ceiling {:.0} µs): {:.2}× | ≤ 1.25× the ceiling's |",
            middle(load, cpu_us),
            middle(Load::Baseline, cpu_us),
            ratio(load, cpu_us)
        );
    }
    for (load, what) in [(Load::Afresh, "cut afresh"), (Load::Again, "served again")].into_iter().filter(|l| ran(l.0)) {
        println!(
            "| slice p99 ÷ ceiling p99, {what} | {:.2} ({:.1} ms vs {:.1} ms) | ≤ 2 |",
            ratio(load, p99_ms),
            middle(load, p99_ms),
            middle(Load::Baseline, p99_ms)
        );
    }
    println!(
        "| agent VmRSS, {} signals stored, under that load | {:.1} MiB (peak {:.1} MiB; {:.1} MiB in the agent that ingested them, before the restart) | < 100 MB |",
        ingested.stored,
        mib(rss_after),
        mib(rss_peak),
        mib(rss_ingested)
    );
    println!(
        "| home directory growth ÷ NDJSON ingested | {:.2} ({:.1} MiB for {:.1} MiB) | ≤ 2 |",
        home_growth as f64 / ndjson_bytes.max(1) as f64,
        home_growth as f64 / 1048576.0,
        ndjson_bytes as f64 / 1048576.0
    );
    println!(
        "| durable ingest, POST batches of {INGEST_BATCH}, {} connection(s), all kept after SIGKILL | {:.0} signals/s | ≥ 100 k/s |",
        settings.ingest_connections,
        ingested.stored as f64 / ingested.elapsed.as_secs_f64()
    );
    let bound = settings.audit_keep.map_or("the default bound".to_owned(), |n| format!("a bound of {n} records"));
    println!(
        "| audit log after {slices} slices, {bound} | {} (store {audit_per_slice:.0} bytes a slice) | bounded |",
        verified.trim().trim_start_matches("audit chain intact (").trim_end_matches(')')
    );

    drop(baseline);
    agent.try_stop()?;
    AGENT_PID.store(0, Ordering::SeqCst);
    Ok(())
}

/// One round's measurements, by load.
#[derive(Default)]
struct Round {
    measured: [Option<Measured>; LOADS.len()],
}

impl Round {
    fn slot(load: Load) -> usize {
        LOADS.iter().position(|l| *l == load).unwrap_or(0)
    }

    fn set(&mut self, load: Load, measured: Measured) {
        self.measured[Round::slot(load)] = Some(measured);
    }

    fn get(&self, load: Load) -> Option<&Measured> {
        self.measured[Round::slot(load)].as_ref()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What an ingest did: signals the agent said it stored, and how long it took.
struct Ingested {
    stored: u64,
    elapsed: Duration,
}

/// Posts every batch, `connections` at a time, each connection taking the next batch as soon
/// as its last is answered.
async fn ingest(target: &Arc<Target>, batches: Vec<String>, connections: usize) -> Result<Ingested, String> {
    let queue = Arc::new(std::sync::Mutex::new(batches.into_iter().map(Bytes::from).collect::<std::collections::VecDeque<_>>()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (target, queue) = (target.clone(), queue.clone());
        tasks.spawn(async move {
            let mut sender = target.connect::<Full<Bytes>>().await?;
            let mut stored = 0;
            loop {
                let Some(batch) = queue.lock().map_err(|_| "the batch queue is poisoned".to_owned())?.pop_front() else { break };
                let body = target.exchange(&mut sender, target.post(batch)?).await?;
                let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("the answer to a batch is not JSON: {e}"))?;
                stored += answer["stored"].as_u64().ok_or_else(|| format!("the answer to a batch has no count: {answer}"))?;
            }
            Ok::<u64, String>(stored)
        });
    }
    let mut stored = 0;
    while let Some(joined) = tasks.join_next().await {
        stored += joined.map_err(|e| format!("an ingest task failed: {e}"))??;
    }
    Ok(Ingested { stored, elapsed: started.elapsed() })
}

/// Runs `optin --home HOME ARGS…` (bounded) and returns its standard output if it succeeded.
async fn cli(home: &Home, args: &[&str]) -> Result<String, HarnessError> {
    Ok(home.command(args).timeout(CLI_TIMEOUT).try_run().await?.succeeded()?.stdout)
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
            .thread_name(BASELINE_THREADS)
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
    /// An ingest's answer (its counts are read where it is sent).
    Ingest,
}

impl Check {
    fn verify(&self, jws: &str) -> Result<(), String> {
        match self {
            Check::Agent(bundle) => bundle.verify_slice(jws).map(drop).map_err(|e| format!("a slice does not verify: {e}")),
            Check::Baseline(jwk) => optin_protocol::jws::verify(jws, jwk).map(drop).map_err(|e| format!("a baseline answer does not verify: {e}")),
            Check::Ingest => Ok(()),
        }
    }
}

/// Where and what the load generator asks.
struct Target {
    addr: SocketAddr,
    client: optin_examples::PinnedClient,
    path: String,
    /// When set, every request asks `since` a second later than the last: the first
    /// moment, and the requests so far.
    since: Option<(time::OffsetDateTime, AtomicU64)>,
    authority: HeaderValue,
    authorization: Option<HeaderValue>,
    check: Check,
}

impl Target {
    fn new(addr: SocketAddr, fingerprint: &str, path: &str, token: Option<&str>, check: Check) -> Result<Arc<Target>, String> {
        Target::build(addr, fingerprint, path, token, check).map(Arc::new)
    }

    fn build(addr: SocketAddr, fingerprint: &str, path: &str, token: Option<&str>, check: Check) -> Result<Target, String> {
        // The marketer's own pinned client makes the TLS connections; this drives HTTP on them.
        let client = optin_examples::PinnedClient::new(&format!("https://{addr}"), fingerprint).map_err(|e| e.to_string())?;
        let authorization =
            token.map(|t| HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| "a token that is not a header value".to_owned())).transpose()?;
        Ok(Target {
            addr,
            client,
            path: path.to_owned(),
            since: None,
            authority: HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
            authorization,
            check,
        })
    }

    /// A TLS 1.3 + HTTP/1.1 connection, pinned.
    async fn connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn Error + Send + Sync>>,
    {
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
        let uri = match &self.since {
            None => self.path.clone(),
            Some((first, count)) => {
                let seconds = i64::try_from(count.fetch_add(1, Ordering::Relaxed)).unwrap_or(i64::MAX);
                format!("{}&since={}", self.path, optin_protocol::timestamp::format(*first + time::Duration::seconds(seconds)))
            }
        };
        let mut request = Request::builder().uri(uri).header(HOST, self.authority.clone());
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        request.body(Empty::new()).map_err(|e| format!("request: {e}"))
    }

    /// `POST` of an NDJSON batch.
    fn post(&self, batch: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::post(&self.path).header(HOST, self.authority.clone()).header(CONTENT_TYPE, "application/x-ndjson");
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        request.body(Full::new(batch)).map_err(|e| format!("request: {e}"))
    }

    /// One exchange on an open connection: the body, checked to be a 200.
    async fn exchange<B>(&self, sender: &mut hyper::client::conn::http1::SendRequest<B>, request: Request<B>) -> Result<Bytes, String>
    where
        B: hyper::body::Body + Send + 'static,
    {
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
    let body = target.exchange(&mut sender, target.request()?).await?;
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
    /// The server's CPU time over the measured stretch, in clock ticks.
    cpu_ticks: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The server's CPU time per answer.
    fn cpu_per_answer(&self) -> Duration {
        Duration::from_secs_f64(self.cpu_ticks as f64 / optin_tests::clock_ticks() as f64 / self.requests.max(1) as f64)
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
            "{:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  CPU {:>5.0} µs/answer  ({} requests in {:.2} s, {:.0} bytes/answer)",
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.cpu_per_answer().as_secs_f64() * 1e6,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.bytes as f64 / self.requests.max(1) as f64,
        )
    }
}

/// Whose CPU time a target's answers cost.
#[derive(Clone, Copy)]
enum Cpu {
    /// The agent's process.
    Process(u32),
    /// The threads of this process with this name: the baseline's runtime.
    Threads(&'static str),
}

impl Cpu {
    fn ticks(self) -> u64 {
        match self {
            Cpu::Process(pid) => optin_tests::cpu_ticks(&pid.to_string()),
            Cpu::Threads(name) => {
                let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
                tasks
                    .flatten()
                    .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
                    .map(|t| optin_tests::cpu_ticks(&format!("self/task/{}", t.file_name().to_string_lossy())))
                    .sum()
            }
        }
    }
}

/// C connections looping requests: a warm-up, then a measured stretch, over which `cpu` is
/// read too.
async fn drive(target: &Arc<Target>, settings: &Settings, cpu: Cpu) -> Result<Measured, String> {
    let mut senders = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        senders.push(target.connect().await?);
    }
    let start = tokio::time::Instant::now() + Duration::from_secs_f64(settings.warmup);
    let end = start + Duration::from_secs_f64(settings.seconds);
    let cpu_read = tokio::spawn(async move {
        tokio::time::sleep_until(start).await;
        let before = cpu.ticks();
        tokio::time::sleep_until(end).await;
        cpu.ticks().saturating_sub(before)
    });
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
                let body = target.exchange(&mut sender, target.request()?).await?;
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
    let mut measured = Measured { requests: 0, elapsed: end - start, latencies_us: Vec::new(), bytes: 0, cpu_ticks: 0 };
    while let Some(joined) = tasks.join_next().await {
        let (latencies, bytes) = joined.map_err(|e| format!("a connection task failed: {e}"))??;
        measured.requests += latencies.len() as u64;
        measured.bytes += bytes;
        measured.latencies_us.extend(latencies);
    }
    measured.latencies_us.sort_unstable();
    measured.cpu_ticks = cpu_read.await.map_err(|e| format!("the CPU reading failed: {e}"))?;
    Ok(measured)
}
