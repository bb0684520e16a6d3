//! A fleet of agents pushing to the marketer's inbox, `optin-inbox`, measured beside the
//! machine's own Ed25519 verify ceiling in the same run.
//!
//! Every grant has its own Ed25519 key and answers a request the inbox made with
//! `optin-inbox request new`; its `grant.created` is pushed first, then `slice.delivered`
//! events whose slice is a `raw` JWS of `OPTIN_FLEET_ITEMS` search items, each event signed
//! per Standard Webhooks `v1a` as the agent signs it. Pushes are signed before a round
//! starts (the fleet's signing is not the inbox's work) and sent over keep-alive HTTP/1.1
//! on TLS 1.3 connections that trust the inbox's own certificate, C at once.
//!
//! Targets, in alternating rounds so a noisy neighbour hurts each alike:
//!
//! - **sqlite**: one `optin-inbox serve` on its home's SQLite database;
//! - **nats**: two `optin-inbox serve --engine nats://…` processes on one NATS server, the
//!   connections split between them. The server is `$OPTIN_NATS_URL`, or one started here
//!   from `nats-server` in the test virtualenv (`target/jose-venv`, as scripts/test makes it)
//!   or at `$OPTIN_NATS_SERVER`; without either this target is skipped, with a line saying so.
//!
//! The ceiling is the pushes per second this process verifies with ring alone, on every core,
//! over the same bodies: the two Ed25519 signatures the inbox checks per push (the webhook
//! signature over `id.timestamp.body`, and the slice's JWS). ring has no batch verification,
//! so each signature is verified on its own, as the inbox does.
//!
//! Then memory: the inboxes' resident set (`VmRSS`) once `OPTIN_FLEET_GRANTS` grants are
//! registered. Then, for NATS, one of the two processes is killed with SIGKILL half-way
//! through a stream of pushes while the fleet keeps pushing to both, retrying a push that
//! got no answer on the other process. Afterwards, for every target, `optin-inbox slices
//! --format ndjson` must list every acknowledged push exactly once; the run fails otherwise.
//!
//! ```text
//! cargo build --release -p optin-inbox && cargo bench -p optin-tests --bench fleet
//! ```
//!
//! | variable                  | default | meaning                                             |
//! |---------------------------|---------|-----------------------------------------------------|
//! | `OPTIN_FLEET_AGENTS`      | 1000    | N: agents, one grant each, that push slices         |
//! | `OPTIN_FLEET_GRANTS`      | 10000   | grants registered in all for the memory figure      |
//! | `OPTIN_FLEET_ITEMS`       | 100     | items per slice                                     |
//! | `OPTIN_FLEET_CONNECTIONS` | 16      | concurrent keep-alive connections                   |
//! | `OPTIN_FLEET_SECONDS`     | 5       | most seconds per target and round                   |
//! | `OPTIN_FLEET_PUSHES`      | 4000    | pushes signed for each round (a round ends sooner   |
//! |                           |         | when they are all acknowledged)                     |
//! | `OPTIN_FLEET_ROUNDS`      | 3       | rounds (each runs every target)                     |
//!
//! Numbers depend on the machine; the ratios to the ceiling are the result. Without
//! `--bench` (`cargo test --benches`) it only says how to run it.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request as HttpRequest;
use hyper_util::rt::TokioIo;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde_json::{json, Value};

use optin_protocol::bundle::GrantBundle;
use optin_protocol::jws::Jwk;
use optin_protocol::push::{Data, Event};
use optin_protocol::receipt::{Basis, Receipt};
use optin_protocol::request::Request;
use optin_protocol::scope::{GrantId, Granularity, Terms};
use optin_protocol::slice::SliceItem;
use optin_protocol::webhook::{self, WebhookId};
use optin_tests::inbox as harness;
use optin_tests::inbox::PRINCIPAL;
use optin_tests::proxy::free_port;
use optin_tests::{now, optin_inbox_bin};

const DOMAIN: &str = "acme.example";
const REQUEST_ID: &str = "fleet-1";
/// How long one push may take before it counts as unanswered.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Most attempts at one push while an inbox process is down.
const ATTEMPTS: usize = 40;

/// The PID of the NATS server this run started (0: none, or one given), for its memory and CPU.
static NATS_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// PIDs this run started, for the watchdog to stop by PID.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

struct Settings {
    agents: usize,
    grants: usize,
    items: usize,
    connections: usize,
    seconds: f64,
    pushes: usize,
    rounds: usize,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
            match std::env::var(name) {
                Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a valid value")),
                Err(_) => Ok(default),
            }
        }
        let s = Settings {
            agents: var("OPTIN_FLEET_AGENTS", 1000)?,
            grants: var("OPTIN_FLEET_GRANTS", 10_000)?,
            items: var("OPTIN_FLEET_ITEMS", 100)?,
            connections: var("OPTIN_FLEET_CONNECTIONS", 16)?,
            seconds: var("OPTIN_FLEET_SECONDS", 5.0)?,
            pushes: var("OPTIN_FLEET_PUSHES", 4000)?,
            rounds: var("OPTIN_FLEET_ROUNDS", 3)?,
        };
        if !(1..=100_000).contains(&s.agents) || s.grants > 1_000_000 || !(1..=1000).contains(&s.items) {
            return Err("OPTIN_FLEET_AGENTS must be 1..=100000, OPTIN_FLEET_GRANTS at most 1000000, OPTIN_FLEET_ITEMS 1..=1000".into());
        }
        if !(2..=200).contains(&s.connections) || !(1..=200_000).contains(&s.pushes) || !(1..=20).contains(&s.rounds) {
            return Err("OPTIN_FLEET_CONNECTIONS must be 2..=200, OPTIN_FLEET_PUSHES 1..=200000, OPTIN_FLEET_ROUNDS 1..=20".into());
        }
        if !(0.1..=600.0).contains(&s.seconds) {
            return Err("OPTIN_FLEET_SECONDS must be 0.1..=600".into());
        }
        Ok(s)
    }

    /// A generous bound on the whole run, for the watchdog.
    fn budget(&self) -> Duration {
        let rounds = (self.seconds + 30.0) * 2.0 * self.rounds as f64;
        let setup = 120.0 + (self.agents + self.grants) as f64 / 50.0;
        Duration::from_secs_f64(rounds + setup + self.seconds + 60.0)
    }
}

fn main() -> ExitCode {
    if !std::env::args().skip(1).any(|a| a == "--bench") {
        println!("fleet: a benchmark; run it with `cargo bench -p optin-tests --bench fleet`");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    start_watchdog(settings.budget());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("fleet").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&settings));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ends a run that overstays its budget: SIGKILL to every process it started, then exit.
fn start_watchdog(budget: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("fleet bench: still running after {budget:?}; stopping what it started and exiting");
        let pids = CHILDREN.lock().map(|p| p.clone()).unwrap_or_default();
        for pid in pids {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        std::process::exit(3);
    });
}

fn started(child: &Child) {
    if let Ok(mut pids) = CHILDREN.lock() {
        pids.push(child.id());
    }
}

/// A process of this run, killed and reaped by its PID when dropped.
struct Owned(Option<Child>);

impl Owned {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, as a crash or an OOM killer would end it.
    fn kill_hard(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and its exit within 15 s.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.0.take() else { return Ok(()) };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() { Ok(()) } else { Err(format!("a process exited {status} on SIGTERM")) };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("a process did not exit within 15 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// The NATS server for the `nats` target: given, started here, or none.
enum NatsServer {
    Given(String),
    Started { url: String, _process: Owned, _dir: tempfile::TempDir },
}

impl NatsServer {
    fn find() -> Result<Option<NatsServer>, String> {
        if let Ok(url) = std::env::var("OPTIN_NATS_URL") {
            if !url.is_empty() {
                return Ok(Some(NatsServer::Given(url)));
            }
        }
        let bin = match std::env::var_os("OPTIN_NATS_SERVER") {
            Some(path) => PathBuf::from(path),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("jose-venv").join("bin").join("nats-server"),
        };
        if !bin.is_file() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("optin-fleet-nats-").tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        started(&child);
        NATS_PID.store(child.id(), Ordering::SeqCst);
        let process = Owned(Some(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(NatsServer::Started { url: format!("nats://127.0.0.1:{port}"), _process: process, _dir: dir }))
    }

    fn url(&self) -> &str {
        match self {
            NatsServer::Given(url) | NatsServer::Started { url, .. } => url,
        }
    }
}

/// An inbox home and its `serve` processes.
struct Inbox {
    name: &'static str,
    dir: tempfile::TempDir,
    engine: String,
    request: Request,
    tls: tokio_rustls::TlsConnector,
    procs: Vec<(SocketAddr, Owned)>,
}

impl Inbox {
    /// `init`, `request new` (its id read back from what it prints), and `processes` serving.
    fn start(name: &'static str, engine: String, processes: usize) -> Result<Inbox, String> {
        let dir = tempfile::Builder::new().prefix("optin-fleet-").tempdir().map_err(|e| e.to_string())?;
        let public = format!("https://{DOMAIN}:{}", free_port());
        let home = dir.path().join("home");
        cli(&home, &engine, &["init", "--domain", DOMAIN, "--public-url", &public, "--name", "Acme Shoes"])?;
        let said = cli(&home, &engine, &harness::push_request(REQUEST_ID))?;
        let id = said.split_whitespace().nth(2).filter(|_| said.starts_with("signed request ")).ok_or(format!("request new said {said:?}"))?;
        let jws = std::fs::read_to_string(home.join("requests").join(format!("{id}.jws"))).map_err(|e| format!("the request file: {e}"))?;
        let request = optin_protocol::request::verify(jws.trim_end(), Some(DOMAIN), now()).map_err(|e| format!("the request: {e}"))?.request;

        // The connector trusts the certificate the first `serve` makes; until then, none.
        let empty = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut inbox = Inbox { name, dir, engine, request, tls: tokio_rustls::TlsConnector::from(Arc::new(empty)), procs: Vec::new() };
        for n in 0..processes {
            inbox.serve(n)?;
        }
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(home.join("tls").join("cert.pem")).map_err(|e| format!("the inbox's certificate: {e}"))?;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        inbox.tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok(inbox)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn serve(&mut self, n: usize) -> Result<(), String> {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(self.dir.path().join(format!("serve-{n}.log"))).map_err(|e| e.to_string())?;
        let (child, line) =
            harness::serve(&self.home(), Some(&self.engine), &listen, &[], log, Duration::from_secs(30)).map_err(|e| format!("{e}: {}", self.log(n)))?;
        started(&child);
        let owned = Owned(Some(child));
        if !line.starts_with(&format!("optin-inbox listening on https://{listen}")) {
            return Err(format!("optin-inbox serve said {line:?}"));
        }
        self.procs.push((listen.parse().map_err(|e| format!("{e}"))?, owned));
        Ok(())
    }

    fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("serve-{n}.log"))).unwrap_or_default()
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.procs.iter().map(|(a, _)| *a).collect()
    }

    /// The resident memory of each serving process, in KiB.
    fn rss_kib(&self) -> Vec<u64> {
        self.procs.iter().filter(|(_, p)| p.pid() != 0).map(|(_, p)| vm_rss_kib(p.pid())).collect()
    }

    /// Every stored slice's jti, as `optin-inbox slices --format ndjson` lists them.
    fn listed_slices(&self) -> Result<Vec<String>, String> {
        let out = cli(&self.home(), &self.engine, &["slices", "--format", "ndjson"])?;
        out.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).map_err(|e| format!("a slices line that is not JSON ({e}): {l}"))?;
                v["jti"].as_str().map(str::to_owned).ok_or(format!("a slices line without a jti: {l}"))
            })
            .collect()
    }
}

/// `optin-inbox --home HOME --engine ENGINE ARGS…`, bounded; its standard output.
fn cli(home: &Path, engine: &str, args: &[&str]) -> Result<String, String> {
    let ran = harness::run_within(home, Some(engine), args, CLI_TIMEOUT)?;
    if ran.code != Some(0) {
        return Err(format!("optin-inbox {args:?} failed: {}", ran.stderr));
    }
    Ok(ran.stdout)
}

/// CPU ticks of the inbox's processes, of this fleet, and of the NATS server if started here.
fn cpu_split(inbox: &Inbox) -> [u64; 3] {
    let nats = NATS_PID.load(Ordering::SeqCst);
    [
        inbox.procs.iter().filter(|(_, p)| p.pid() != 0).map(|(_, p)| optin_tests::cpu_ticks(&p.pid().to_string())).sum(),
        optin_tests::cpu_ticks("self"),
        if nats == 0 { 0 } else { optin_tests::cpu_ticks(&nats.to_string()) },
    ]
}

fn vm_rss_kib(pid: u32) -> u64 {
    optin_tests::proc_status_kib(pid, "VmRSS")
}

/// One agent's grant: its key, its bundle and its receipt, answering the inbox's request.
struct Grant {
    key: Ed25519KeyPair,
    bundle: GrantBundle,
    receipt: Receipt,
    items: Vec<SliceItem>,
}

impl Grant {
    /// Grant `n` of this run; `run` keeps the grants of two runs on one NATS server apart.
    fn new(run: u64, n: usize, request: &Request, items: usize) -> Result<Grant, String> {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&run.to_le_bytes());
        seed[8..16].copy_from_slice(&(n as u64).to_le_bytes());
        // A key from a seed: real Ed25519, and cheap to make by the thousand.
        let seed = optin_protocol::sha256(&seed);
        let key = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| "an Ed25519 key")?;
        let grant_id = GrantId::parse(&format!("g_{:012x}{:012x}", run & 0xffff_ffff_ffff, n)).ok_or("a grant id")?;
        let at = now();
        let terms = Terms {
            audience: DOMAIN.into(),
            kinds: "search".parse().map_err(|e| format!("kinds: {e}"))?,
            granularity: Granularity::Raw,
            window: "30d".parse().map_err(|e| format!("a span: {e}"))?,
            expires_at: (at + time::Duration::days(90)).replace_time(time::Time::MIDNIGHT),
            categories: None,
            merchants: None,
            fields: None,
            rate: None,
            noise: None,
        };
        let receipt = Receipt::given(Basis::Request(request), &grant_id, PRINCIPAL, &terms, at);
        let bundle = GrantBundle {
            version: optin_protocol::bundle::VERSION,
            token: optin_protocol::token::Token::mint(&seed, &grant_id).encode(),
            grant_id,
            marketer: DOMAIN.into(),
            purpose: request.purpose.text.clone(),
            issuer: format!("urn:optin:agent:{PRINCIPAL}"),
            agent_url: None,
            cert_sha256: None,
            jwk: Jwk::ed25519(key.public_key().as_ref()),
            terms,
            receipt: None,
        };
        Ok(Grant { key, bundle, receipt, items: searches(n, items, at)? })
    }

    fn created(&self) -> Push {
        let event = Event { timestamp: now(), data: Data::GrantCreated { bundle: Box::new(self.bundle.clone()), receipt: self.receipt.sign(&self.key) } };
        self.push(&event, None)
    }

    /// A `raw` slice of this grant's items under the fresh id `jti`, as the agent pushes it.
    fn slice(&self, jti: &str) -> Result<Push, String> {
        let at = now();
        let claims = optin_tests::inbox::raw_slice_claims(&self.bundle, jti, self.items.clone(), at);
        let payload = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
        let jws = optin_protocol::jws::sign(&self.key, &payload);
        let id = WebhookId::parse(jti).ok_or("a slice id")?;
        let event = Event { timestamp: at, data: Data::SliceDelivered { grant_id: self.bundle.grant_id.clone(), jti: id, slice: jws.clone() } };
        Ok(self.push(&event, Some(jws)))
    }

    fn push(&self, event: &Event, slice: Option<String>) -> Push {
        let body = event.to_json();
        let headers = webhook::sign(&self.key, &event.webhook_id(), now(), body.as_bytes());
        Push {
            id: headers.id,
            timestamp: headers.timestamp,
            signature: headers.signature,
            body: Bytes::from(body),
            public: self.key.public_key().as_ref().to_vec(),
            slice,
        }
    }
}

/// `count` search items over the last 29 days, as a `raw` slice carries them.
fn searches(grant: usize, count: usize, at: time::OffsetDateTime) -> Result<Vec<SliceItem>, String> {
    const QUERIES: [&str; 6] =
        ["trail running shoes wide fit", "ridgeline gtx review", "winter boots waterproof", "merino base layer", "headlamp rechargeable", "ultralight tent"];
    const ENGINES: [&str; 3] = ["duckduckgo.com", "google.com", "search.brave.com"];
    (0..count)
        .map(|i| {
            let when = at - time::Duration::minutes(17 * (i as i64 + 1) + (grant % 60) as i64);
            let item = json!({
                "id": format!("i_{:016x}{:016x}", grant, i),
                "at": optin_protocol::timestamp::format(when),
                "category": "Apparel & Accessories > Shoes",
                "kind": "search",
                "query": format!("{} {}", QUERIES[(grant + i) % QUERIES.len()], i % 41),
                "engine": ENGINES[(grant * 7 + i) % ENGINES.len()],
            });
            serde_json::from_value(item).map_err(|e| format!("a raw search item: {e}"))
        })
        .collect()
}

/// One signed POST, and what the ceiling verifies of it.
struct Push {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
    public: Vec<u8>,
    slice: Option<String>,
}

/// Pushes `make(i)` for `0..count`, made on every core (signing is the fleet's work, done
/// before a round).
fn make_pushes(count: usize, make: impl Fn(usize) -> Result<Push, String> + Sync) -> Result<Vec<Push>, String> {
    let threads = cores().max(1);
    let chunk = count.div_ceil(threads).max(1);
    let make = &make;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..count).step_by(chunk).map(|from| s.spawn(move || (from..(from + chunk).min(count)).map(make).collect::<Result<Vec<_>, _>>())).collect();
        let mut all = Vec::with_capacity(count);
        for h in handles {
            all.extend(h.join().map_err(|_| "a signing thread panicked")??);
        }
        Ok(all)
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pushes per second this process verifies on every core: the webhook signature and the
/// slice's JWS of each push, one ring verification each (ring has no batch verification).
fn ceiling(pushes: &[Push]) -> Result<f64, String> {
    let threads = cores().max(1);
    let chunk = pushes.len().div_ceil(threads).max(1);
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = pushes.chunks(chunk).map(|part| s.spawn(move || part.iter().try_for_each(verify_push))).collect();
        for h in handles {
            h.join().map_err(|_| "a verifying thread panicked")??;
        }
        Ok::<_, String>(())
    })?;
    Ok(pushes.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

fn verify_push(push: &Push) -> Result<(), String> {
    let key = UnparsedPublicKey::new(&ED25519, &push.public);
    let mut content = Vec::with_capacity(push.id.len() + push.timestamp.len() + push.body.len() + 2);
    content.extend_from_slice(push.id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(push.timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(&push.body);
    let sig = push.signature.strip_prefix("v1a,").and_then(|s| STANDARD.decode(s).ok()).ok_or("a webhook signature that is not v1a")?;
    key.verify(&content, &sig).map_err(|_| "a webhook signature that does not verify")?;
    if let Some(jws) = &push.slice {
        let (input, sig) = jws.rsplit_once('.').ok_or("a JWS without a signature")?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "a JWS signature that is not base64url")?;
        key.verify(input.as_bytes(), &sig).map_err(|_| "a slice that does not verify")?;
    }
    Ok(())
}

/// What a stream of pushes got.
struct Drove {
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// Index of each acknowledged push, and whether it was `stored` (else `duplicate`).
    acked: Vec<(usize, bool)>,
    /// Attempts that got no answer and were sent again.
    retries: usize,
}

impl Drove {
    fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p(&self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len());
        Duration::from_micros(u64::from(self.latencies_us[rank - 1]))
    }
}

/// One keep-alive connection to `addr`.
async fn connect(tls: &tokio_rustls::TlsConnector, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).map_err(|e| e.to_string())?.to_owned();
    let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS with {addr}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("HTTP/1.1 with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The status and the body's `taken` (or problem `type`) of one push.
async fn post(sender: &mut SendRequest<Full<Bytes>>, push: &Push) -> Result<(u16, String), String> {
    let request = HttpRequest::post("/optin/inbox")
        .header(HOST, DOMAIN)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", &push.id)
        .header("webhook-timestamp", &push.timestamp)
        .header("webhook-signature", &push.signature)
        .body(Full::new(push.body.clone()))
        .map_err(|e| e.to_string())?;
    let work = async {
        sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let said = answer["taken"].as_str().or(answer["type"].as_str()).unwrap_or("?").to_owned();
        Ok((status, said))
    };
    tokio::time::timeout(PUSH_TIMEOUT, work).await.map_err(|_| format!("no answer within {PUSH_TIMEOUT:?}"))?
}

/// `pushes` over `connections` keep-alive connections spread over `addrs`, until all are
/// acknowledged or `seconds` pass. With `retry`, a push that gets no answer (or a 5xx) is
/// sent again to the next process; without, that fails the run, as does any refusal.
async fn drive(
    tls: &tokio_rustls::TlsConnector,
    addrs: &[SocketAddr],
    pushes: Arc<Vec<Push>>,
    next: Arc<AtomicUsize>,
    connections: usize,
    seconds: f64,
    retry: bool,
) -> Result<Drove, String> {
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..connections {
        let (tls, addrs, pushes, next) = (tls.clone(), addrs.to_vec(), pushes.clone(), next.clone());
        tasks.spawn(async move {
            let mut target = w % addrs.len();
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let (mut latencies, mut acked, mut retries) = (Vec::new(), Vec::new(), 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= pushes.len() || tokio::time::Instant::now() >= end {
                    break;
                }
                let began = tokio::time::Instant::now();
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let outcome = match sender.as_mut() {
                        Some(s) => post(s, &pushes[i]).await,
                        None => match connect(&tls, addrs[target]).await {
                            Ok(mut s) => {
                                let got = post(&mut s, &pushes[i]).await;
                                sender = Some(s);
                                got
                            }
                            Err(e) => Err(e),
                        },
                    };
                    match outcome {
                        Ok((200, taken)) if taken == "stored" || taken == "duplicate" => {
                            latencies.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                            acked.push((i, taken == "stored"));
                            break;
                        }
                        Ok((status, said)) if !(retry && status >= 500) => {
                            return Err(format!("push {} to {}: {status} {said}", pushes[i].id, addrs[target]));
                        }
                        Ok(_) | Err(_) if retry && attempt < ATTEMPTS => {
                            // No answer: the process may be gone. The same push, to the next one.
                            sender = None;
                            retries += 1;
                            target = (target + 1) % addrs.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok((status, said)) => return Err(format!("push {} to {}: {status} {said}", pushes[i].id, addrs[target])),
                        Err(e) => return Err(format!("push {} to {}: {e}", pushes[i].id, addrs[target])),
                    }
                }
            }
            Ok::<_, String>((latencies, acked, retries))
        });
    }
    let mut drove = Drove { elapsed: Duration::ZERO, latencies_us: Vec::new(), acked: Vec::new(), retries: 0 };
    while let Some(joined) = tasks.join_next().await {
        let (latencies, acked, retries) = joined.map_err(|e| format!("a connection task failed: {e}"))??;
        drove.latencies_us.extend(latencies);
        drove.acked.extend(acked);
        drove.retries += retries;
    }
    drove.elapsed = started.elapsed();
    drove.latencies_us.sort_unstable();
    Ok(drove)
}

/// A target's fleet: its inbox and the agents' grants.
struct Fleet {
    inbox: Inbox,
    grants: Arc<Vec<Grant>>,
    /// Slice ids each push was acknowledged under, and how often it was `stored`.
    acked: HashMap<String, usize>,
    rounds: Vec<Round>,
}

struct Round {
    rate: f64,
    ceiling: f64,
    p50: Duration,
    p99: Duration,
    /// CPU milliseconds per push: the inbox's processes, the fleet, the NATS server.
    cpu_ms: [f64; 3],
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A run-wide counter for slice ids no two pushes share.
static JTI: AtomicUsize = AtomicUsize::new(0);

fn run_id() -> u64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64) ^ u64::from(std::process::id()) << 40
}

impl Fleet {
    /// The inbox, and `agents` grants made and their `grant.created` pushed.
    async fn start(inbox: Inbox, run: u64, settings: &Settings) -> Result<Fleet, String> {
        let started = Instant::now();
        let request = &inbox.request;
        let grants: Vec<Grant> = {
            let made = std::sync::Mutex::new(Vec::new());
            let threads = cores();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let made = &made;
                    s.spawn(move || {
                        let mine: Result<Vec<_>, String> =
                            (t..settings.agents).step_by(threads).map(|n| Grant::new(run, n, request, settings.items).map(|g| (n, g))).collect();
                        if let Ok(mut all) = made.lock() {
                            all.push(mine);
                        }
                    });
                }
            });
            let mut all = Vec::new();
            for part in made.into_inner().map_err(|_| "a grant thread panicked")? {
                all.extend(part?);
            }
            all.sort_by_key(|(n, _)| *n);
            all.into_iter().map(|(_, g)| g).collect()
        };
        let grants = Arc::new(grants);
        let created = {
            let grants = grants.clone();
            make_pushes(grants.len(), move |i| Ok(grants[i].created()))?
        };
        let drove = drive(&inbox.tls, &inbox.addrs(), Arc::new(created), Arc::new(AtomicUsize::new(0)), settings.connections, 600.0, false).await?;
        if drove.acked.len() != settings.agents || drove.acked.iter().any(|(_, stored)| !stored) {
            return Err(format!("{}: {} of {} grants stored", inbox.name, drove.acked.iter().filter(|(_, s)| *s).count(), settings.agents));
        }
        println!("{}: {} grants created in {:.2} s ({:.0}/s)", inbox.name, settings.agents, started.elapsed().as_secs_f64(), drove.rate());
        Ok(Fleet { inbox, grants, acked: HashMap::new(), rounds: Vec::new() })
    }

    /// The NATS server's share, known only for a server this run started and only for NATS.
    fn nats_cpu(&self, ms: f64) -> String {
        if self.inbox.procs.len() > 1 && NATS_PID.load(Ordering::SeqCst) != 0 {
            format!("{ms:.2}")
        } else {
            "-".to_owned()
        }
    }

    /// `count` fresh slices, one per grant in turn.
    fn slices(&self, count: usize) -> Result<Vec<Push>, String> {
        let first = JTI.fetch_add(count, Ordering::SeqCst);
        let grants = self.grants.clone();
        make_pushes(count, move |i| grants[(first + i) % grants.len()].slice(&format!("s_{:032x}", first + i)))
    }

    fn note(&mut self, pushes: &[Push], drove: &Drove) {
        for (i, stored) in &drove.acked {
            *self.acked.entry(pushes[*i].id.clone()).or_default() += usize::from(*stored);
        }
    }

    async fn round(&mut self, n: usize, settings: &Settings) -> Result<(), String> {
        let pushes = self.slices(settings.pushes)?;
        let pushes = Arc::new(pushes);
        let ceiling_of = pushes.clone();
        let ceiling = tokio::task::spawn_blocking(move || ceiling(&ceiling_of)).await.map_err(|e| e.to_string())??;
        let next = Arc::new(AtomicUsize::new(0));
        let cpu_before = cpu_split(&self.inbox);
        let drove = drive(&self.inbox.tls, &self.inbox.addrs(), pushes.clone(), next, settings.connections, settings.seconds, false).await?;
        let cpu_after = cpu_split(&self.inbox);
        if let Some((i, _)) = drove.acked.iter().find(|(_, stored)| !stored) {
            return Err(format!("{}: a fresh slice {} was answered duplicate", self.inbox.name, pushes[*i].id));
        }
        self.note(&pushes, &drove);
        let ticks = optin_tests::clock_ticks() as f64;
        let cpu_ms = [0, 1, 2].map(|k| cpu_after[k].saturating_sub(cpu_before[k]) as f64 / ticks * 1e3 / drove.acked.len().max(1) as f64);
        let round = Round { rate: drove.rate(), ceiling, p50: drove.p(0.5), p99: drove.p(0.99), cpu_ms };
        println!(
            "round {n} {:<6} {:>7.0} pushes/s stored  ceiling {:>7.0}/s  ratio {:.3}  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} pushes in {:.2} s, body {} bytes; CPU ms a push: inbox {:.2}, fleet {:.2}, nats-server {})",
            self.inbox.name,
            round.rate,
            round.ceiling,
            round.rate / round.ceiling,
            round.p50.as_secs_f64() * 1e3,
            round.p99.as_secs_f64() * 1e3,
            drove.acked.len(),
            drove.elapsed.as_secs_f64(),
            pushes[0].body.len(),
            round.cpu_ms[0],
            round.cpu_ms[1],
            self.nats_cpu(round.cpu_ms[2]),
        );
        self.rounds.push(round);
        Ok(())
    }

    /// Grants up to `total`, pushed in batches; the processes' resident memory before and after.
    async fn memory(&mut self, run: u64, total: usize, settings: &Settings) -> Result<(Vec<u64>, Vec<u64>, usize), String> {
        let nats = NATS_PID.load(Ordering::SeqCst);
        let nats_rss = || if self.inbox.procs.len() > 1 && nats != 0 { vm_rss_kib(nats) } else { 0 };
        let nats_before = nats_rss();
        let before = self.inbox.rss_kib();
        let mut registered = self.grants.len();
        let started = Instant::now();
        while registered < total {
            let batch = (total - registered).min(5000);
            let request = &self.inbox.request;
            let from = registered;
            // Extra grants with no items: only their registration matters here.
            let pushes = make_pushes(batch, |i| Grant::new(run, from + i, request, 1).map(|g| g.created()))?;
            let drove =
                drive(&self.inbox.tls, &self.inbox.addrs(), Arc::new(pushes), Arc::new(AtomicUsize::new(0)), settings.connections, 600.0, false).await?;
            if drove.acked.len() != batch {
                return Err(format!("{}: {} of {batch} grants acknowledged", self.inbox.name, drove.acked.len()));
            }
            registered += batch;
        }
        if registered > self.grants.len() {
            println!("{}: {registered} grants registered in all ({:.1} s for the extra ones)", self.inbox.name, started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let nats_after = nats_rss();
        if nats_after != 0 {
            println!("nats-server VmRSS: {:.1} MiB before, {:.1} MiB with {registered} grants", nats_before as f64 / 1024.0, nats_after as f64 / 1024.0);
        }
        Ok((before, self.inbox.rss_kib(), registered))
    }

    /// Slices pushed to every process while the last one is killed half-way; a push with no
    /// answer is retried on another.
    async fn kill_one(&mut self, settings: &Settings) -> Result<(Drove, Option<usize>), String> {
        let pushes = Arc::new(self.slices(settings.pushes)?);
        let next = Arc::new(AtomicUsize::new(0));
        let victim = self.inbox.procs.last().map(|(_, p)| p.pid()).ok_or("no process")?;
        let half = pushes.len() / 2;
        let watch = next.clone();
        let killed_at = Arc::new(AtomicUsize::new(usize::MAX));
        let at = killed_at.clone();
        let killer = tokio::spawn(async move {
            while watch.load(Ordering::SeqCst) < half {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // SIGKILL by PID: no drain, no goodbye, as a crash ends it.
            let _ = Command::new("kill").arg("-KILL").arg(victim.to_string()).status();
            at.store(watch.load(Ordering::SeqCst), Ordering::SeqCst);
        });
        let drove = drive(&self.inbox.tls, &self.inbox.addrs(), pushes.clone(), next, settings.connections, settings.seconds.max(10.0) * 3.0, true).await;
        killer.abort();
        let drove = drove?;
        if let Some((_, owned)) = self.inbox.procs.last_mut() {
            owned.kill_hard();
        }
        self.note(&pushes, &drove);
        let at = killed_at.load(Ordering::SeqCst);
        Ok((drove, (at != usize::MAX).then_some(at.min(pushes.len()))))
    }

    /// Every acknowledged push listed once, nothing listed twice: (listed, acknowledged).
    fn check_stored(&self) -> Result<(usize, usize), String> {
        let listed = self.inbox.listed_slices()?;
        let unique: HashSet<&String> = listed.iter().collect();
        if unique.len() != listed.len() {
            return Err(format!("{}: {} slices listed, {} distinct: one was stored twice", self.inbox.name, listed.len(), unique.len()));
        }
        if let Some(lost) = self.acked.keys().find(|jti| !unique.contains(jti)) {
            return Err(format!("{}: slice {lost} was acknowledged and is not stored", self.inbox.name));
        }
        if let Some((jti, n)) = self.acked.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{}: slice {jti} was answered `stored` {n} times", self.inbox.name));
        }
        Ok((listed.len(), self.acked.len()))
    }
}

async fn run(settings: &Settings) -> Result<(), Box<dyn Error>> {
    println!(
        "optin-inbox fleet benchmark: {} agents, {} items a slice, {} connections, {} round(s) of at most {} s or {} pushes per target, {} grants for memory, {} CPU(s)",
        settings.agents,
        settings.items,
        settings.connections,
        settings.rounds,
        settings.seconds,
        settings.pushes,
        settings.grants,
        cores(),
    );
    println!("inbox: {}", optin_inbox_bin().display());
    let run = run_id();
    let nats = NatsServer::find()?;

    let mut fleets = vec![Fleet::start(Inbox::start("sqlite", "sqlite".into(), 1)?, run, settings).await?];
    match &nats {
        Some(server) => {
            let engine = format!("{}/fleet_{:x}", server.url(), run & 0xffff_ffff);
            println!("nats: {} (two serve processes)", server.url());
            fleets.push(Fleet::start(Inbox::start("nats", engine, 2)?, run ^ 1, settings).await?);
        }
        None => {
            println!("nats: skipped (set OPTIN_NATS_URL to a NATS server with JetStream, or have target/jose-venv/bin/nats-server as scripts/test installs it)")
        }
    }

    for round in 1..=settings.rounds {
        // Alternating order: the first target of a round is not always the same.
        let order: Vec<usize> = if round % 2 == 1 { (0..fleets.len()).collect() } else { (0..fleets.len()).rev().collect() };
        for f in order {
            fleets[f].round(round, settings).await?;
        }
    }

    let mut memory = Vec::new();
    for (f, fleet) in fleets.iter_mut().enumerate() {
        memory.push(fleet.memory(run ^ (f as u64) ^ 0xf00d, settings.grants, settings).await?);
    }

    let mut killed = None;
    if let Some(fleet) = fleets.iter_mut().find(|f| f.inbox.procs.len() > 1) {
        let (drove, at) = fleet.kill_one(settings).await?;
        println!(
            "nats, one of two processes SIGKILLed at push {}: {} pushes acknowledged in {:.2} s, {} retried, p99 {:.2} ms",
            at.map_or("- (after the last)".to_owned(), |a| a.to_string()),
            drove.acked.len(),
            drove.elapsed.as_secs_f64(),
            drove.retries,
            drove.p(0.99).as_secs_f64() * 1e3
        );
        killed = Some((drove, at));
    }

    let mut checked = Vec::new();
    for fleet in &fleets {
        let (listed, acked) = fleet.check_stored()?;
        println!("{}: {acked} slices acknowledged, {listed} listed by optin-inbox slices, none lost, none twice", fleet.inbox.name);
        checked.push((listed, acked));
    }

    println!("---");
    println!(
        "| target | stored pushes/s | verify ceiling, pushes/s | ratio | p50 ack | p99 ack | one push's verification on one core | VmRSS after the rounds ({} grants) | VmRSS with all grants registered | per extra grant |",
        settings.agents
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (fleet, (before, after, registered)) in fleets.iter().zip(&memory) {
        let rate = median(fleet.rounds.iter().map(|r| r.rate).collect());
        let ceiling = median(fleet.rounds.iter().map(|r| r.ceiling).collect());
        let ratio = median(fleet.rounds.iter().map(|r| r.rate / r.ceiling).collect());
        let p50 = median(fleet.rounds.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect());
        let p99 = median(fleet.rounds.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect());
        // The least a push's answer can take here: its two verifications on one core.
        let floor = cores() as f64 / ceiling.max(1e-9) * 1e3;
        let mib = |kib: &[u64]| kib.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(" + ");
        let extra = registered.saturating_sub(settings.agents);
        let grown = after.iter().sum::<u64>().saturating_sub(before.iter().sum::<u64>());
        let per_grant = if extra == 0 { "-".to_owned() } else { format!("{:.2} KiB", grown as f64 / extra as f64) };
        println!(
            "| {} ({} process{}) | {rate:.0} | {ceiling:.0} | {ratio:.3} | {p50:.2} ms | {p99:.2} ms | {floor:.2} ms | {} MiB | {} MiB at {registered} grants | {per_grant} |",
            fleet.inbox.name,
            fleet.inbox.procs.len(),
            if fleet.inbox.procs.len() == 1 { "" } else { "es" },
            mib(before),
            mib(after),
        );
    }
    let cpu_table = fleets
        .iter()
        .map(|f| {
            let m = |k: usize| median(f.rounds.iter().map(|r| r.cpu_ms[k]).collect());
            format!("| {} | {:.2} | {:.2} | {} |", f.inbox.name, m(0), m(1), f.nats_cpu(m(2)))
        })
        .collect::<Vec<_>>();
    if let Some((drove, killed_at)) = killed {
        let nats = fleets.iter().position(|f| f.inbox.name == "nats").unwrap_or(0);
        println!(
            "| nats, one process SIGKILLed {} | {:.0} | | | {:.2} ms | {:.2} ms | | {} retried; {} slices acknowledged in all, {} listed: none lost, none twice | | |",
            killed_at.map_or("after the last push (none retried)".to_owned(), |at| format!("at push {at} of {}", settings.pushes)),
            drove.rate(),
            drove.p(0.5).as_secs_f64() * 1e3,
            drove.p(0.99).as_secs_f64() * 1e3,
            drove.retries,
            checked[nats].1,
            checked[nats].0,
        );
    }
    println!(
        "(medians of {} round(s); ceiling: ring Ed25519 on {} thread(s), the push's two signatures each verified alone, ring having no batch verification)",
        settings.rounds,
        cores()
    );
    println!();
    println!("| target | inbox CPU ms a push | fleet CPU ms a push | nats-server CPU ms a push |");
    println!("|---|---|---|---|");
    for line in cpu_table {
        println!("{line}");
    }

    for fleet in &mut fleets {
        for (_, process) in &mut fleet.inbox.procs {
            process.stop()?;
        }
    }
    Ok(())
}
