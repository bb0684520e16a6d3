//! The marketer's inbox, `optin-inbox`, with the real agent: the inbox publishes a signed
//! request over HTTPS with its own certificate, the person fetches and approves it narrowed,
//! the agent pushes the grant and a slice, the inbox stores and exports them re-verifiable,
//! and a revocation erases them. Then what anyone on the network could send the inbox:
//! each refused with its status, and nothing stored.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::signature::Ed25519KeyPair;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use optin_protocol::jws::Jwk;
use optin_protocol::receipt::{Basis, Receipt};
use optin_protocol::request::Request;
use optin_protocol::scope::GrantId;
use optin_protocol::slice::{self, Expected};

use optin_tests::fixture;
use optin_tests::inbox::{self as harness, sign, Push, Stranger, PRINCIPAL};
use optin_tests::proxy::free_port;
use optin_tests::{now, Home};

const DOMAIN: &str = "acme.example";

/// An inbox home and, once started, its `serve` process, stopped by its PID when dropped.
struct Inbox {
    dir: tempfile::TempDir,
    port: u16,
    serving: Option<Child>,
}

impl Inbox {
    /// `init` for [`DOMAIN`] on a free loopback port, and one push request, `shoes-1`.
    fn init() -> Inbox {
        let dir = tempfile::Builder::new().prefix("optin-inbox-it-").tempdir().expect("a temporary directory");
        let port = free_port();
        let inbox = Inbox { dir, port, serving: None };
        let public = format!("https://{DOMAIN}:{port}");
        inbox.run(&["init", "--domain", DOMAIN, "--public-url", &public, "--name", "Acme Shoes"]).ok();
        inbox.run(&harness::push_request("shoes-1")).ok();
        inbox
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn cert(&self) -> PathBuf {
        self.home().join("tls").join("cert.pem")
    }

    fn resolve(&self) -> String {
        format!("{DOMAIN}:{}:127.0.0.1", self.port)
    }

    /// `optin-inbox --home HOME ARGS…`, bounded.
    fn run(&self, args: &[&str]) -> Ran {
        let ran = harness::run(&self.home(), None, args).unwrap_or_else(|e| panic!("{e}"));
        Ran { args: args.join(" "), code: ran.code, stdout: ran.stdout, stderr: ran.stderr }
    }

    /// The lines of `optin-inbox WHAT --format ndjson`.
    fn ndjson(&self, what: &str) -> Vec<Value> {
        self.run(&[what, "--format", "ndjson"]).ok().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    /// `serve` on its port, waiting for its ready line.
    fn serve(&mut self, extra: &[&str]) {
        let listen = format!("127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("serve.log")).expect("the log file");
        let (child, line) = harness::serve(&self.home(), None, &listen, extra, log, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}: {}", self.log()));
        self.serving = Some(child);
        assert!(line.starts_with(&format!("optin-inbox listening on https://{listen} for https://{DOMAIN}:{}/optin/inbox", self.port)), "{line}");
    }

    /// Sends SIGTERM to `serve` by its PID and checks it exits 0 within 15 s.
    fn stop(&mut self) {
        let child = self.serving.take().expect("a serving inbox");
        optin_tests::inbox::stop(child, || self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Waits until `optin-inbox WHAT` lists what `done` accepts.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = self.ndjson(what);
            if done(&listed) {
                return listed;
            }
            assert!(Instant::now() < deadline, "optin-inbox {what} lists {listed:?}; the inbox's log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs `push` to the inbox path as anyone could, over TLS that trusts the inbox's
    /// certificate; returns the status and the answer's body.
    async fn post(&self, push: &Push) -> (u16, Value) {
        let headers: Vec<(String, String)> = [("webhook-id", &push.id), ("webhook-timestamp", &push.timestamp), ("webhook-signature", &push.signature)]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.clone()))
            .collect();
        self.post_raw(&headers, &push.body, push.body.len()).await
    }

    async fn post_raw(&self, headers: &[(String, String)], body: &[u8], content_length: usize) -> (u16, Value) {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.cert()).expect("the inbox's certificate");
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
            let mut head = format!(
                "POST /optin/inbox HTTP/1.1\r\nHost: {DOMAIN}:{}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\nConnection: close\r\n",
                self.port
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            tls.write_all(head.as_bytes()).await.expect("send the head");
            // A body declared larger than the inbox takes is answered before it is sent.
            if body.len() == content_length {
                tls.write_all(body).await.expect("send the body");
            }
            tls.flush().await.expect("flush");
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(answer) = parse_response(&got) {
                    return answer;
                }
                match tls.read(&mut chunk).await {
                    Ok(0) => panic!("the inbox closed before a whole answer: {:?}", String::from_utf8_lossy(&got)),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) => panic!("reading the inbox's answer: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("the inbox answers within 10 s")
    }

    /// How many grants and slices the inbox holds, as its CLI lists them.
    fn counts(&self) -> (usize, usize) {
        (self.ndjson("grants").len(), self.ndjson("slices").len())
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(mut child) = self.serving.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one `optin-inbox` command did.
struct Ran {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "optin-inbox {} failed: {}", self.args, self.stderr);
        &self.stdout
    }
}

/// A status line, headers and a body of `Content-Length` bytes, once all of it is in `got`.
fn parse_response(got: &[u8]) -> Option<(u16, Value)> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&got[..end]).expect("a UTF-8 head");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim()))
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    let body = &got[end + 4..];
    (body.len() >= length).then(|| (status, serde_json::from_slice(&body[..length]).expect("a JSON answer")))
}

/// The request the inbox publishes, as an agent reads it.
fn published(inbox: &Inbox) -> Request {
    let jws = std::fs::read_to_string(inbox.home().join("requests").join("shoes-1.jws")).expect("the request file");
    optin_protocol::request::verify(jws.trim_end(), Some(DOMAIN), now()).expect("a request that verifies").request
}

fn problem_type(answer: &Value) -> &str {
    answer["type"].as_str().unwrap_or_else(|| panic!("not a problem: {answer}"))
}

/// The inbox serving, an agent that fetched its request and approved it narrowed to
/// searches, and the grant's id, once the grant and its first slice are in the inbox.
async fn approved_through_an_agent() -> (Inbox, optin_tests::Agent, String) {
    let mut inbox = Inbox::init();
    inbox.serve(&[]);
    let cert = inbox.cert();
    let cert = cert.to_str().expect("a UTF-8 path");
    let resolve = inbox.resolve();
    let agent = Home::new().serve(&["--ca-file", cert, "--resolve", &resolve]).await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;

    // The person fetches the inbox's requests from its domain, certificate checked, and
    // approves the one there, narrowed to searches.
    let site = format!("{DOMAIN}:{}", inbox.port);
    agent.cli(&["requests", "fetch", &site, "--ca-file", cert, "--resolve", &resolve]).await.ok();
    agent.cli(&["approve", "shoes-1", "--kinds", "search"]).await.ok();
    let grants = agent.cli(&["grants", "--json"]).await.json();
    let grant = grants[0]["grant_id"].as_str().expect("a grant").to_owned();
    inbox.wait_for("slices", |s| s.len() == 1).await;
    (inbox, agent, grant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_takes_an_agents_pushes_end_to_end_and_erases_them_on_revocation() {
    let (mut inbox, agent, grant) = approved_through_an_agent().await;
    // grant.created, then at once a slice of the two searches of the last 30 days.
    let slices = inbox.ndjson("slices");
    assert_eq!(
        (slices[0]["grant_id"].as_str(), slices[0]["items"].as_u64(), slices[0]["kept_after_end"].as_bool()),
        (Some(grant.as_str()), Some(2), Some(false))
    );
    let grants = inbox.ndjson("grants");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        (grants[0]["grant_id"].as_str(), grants[0]["request_id"].as_str(), grants[0]["state"].as_str()),
        (Some(grant.as_str()), Some("shoes-1"), Some("live"))
    );
    let table = inbox.run(&["slices"]).ok().to_owned();
    assert!(table.contains(slices[0]["jti"].as_str().expect("a jti")) && table.contains(&grant), "{table}");

    // The export holds what anyone needs to verify the slice again: the JWS, the key,
    // the issuer and the audience. Checked here with the protocol crate alone.
    let export = inbox.ndjson("export");
    assert_eq!(export.len(), 1, "{export:?}");
    let line = &export[0];
    let jwk: Jwk = serde_json::from_value(line["jwk"].clone()).expect("a JWK");
    let grant_id = GrantId::parse(&grant).expect("a grant id");
    let claims = slice::verify(
        line["slice"].as_str().expect("a slice"),
        Expected { issuer: line["issuer"].as_str().expect("an issuer"), audience: DOMAIN, grant_id: &grant_id, jwk: &jwk },
    )
    .expect("the exported slice verifies");
    assert_eq!((claims.jti.as_str(), claims.items.len()), (line["jti"].as_str().expect("a jti"), 2));
    let csv = inbox.run(&["export", "--format", "csv"]).ok().to_owned();
    assert_eq!(csv.lines().count(), 2, "a header and one slice: {csv}");

    // The person revokes: the agent pushes grant.revoked, and the inbox erases the slice.
    agent.cli(&["revoke", &grant]).await.ok();
    let grants = inbox.wait_for("grants", |g| g.first().is_some_and(|g| g["state"] == "revoked")).await;
    assert_eq!(grants[0]["erased_slices"].as_u64(), Some(1), "{grants:?}");
    assert_eq!(inbox.counts(), (1, 0));
    assert_eq!(inbox.run(&["export"]).ok(), "");
    // The agent heard 2xx for every event of the grant, none refused.
    let listed = agent.cli(&["grants", "--json"]).await.json();
    assert_eq!(listed[0]["state"].as_str(), Some("revoked"), "{listed}");
    drop(agent);
    inbox.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_refuses_what_it_did_not_ask_for_and_stores_nothing_of_it() {
    let mut inbox = Inbox::init();
    inbox.serve(&[]);
    let request = published(&inbox);
    let at = now();

    // A grant of the inbox's own live request, from a key nobody vouches for but its first
    // push: taken, as SPEC.md's trust model has it, and the baseline the refusals change
    // one thing of.
    let good = Stranger::new(1, DOMAIN, Some(&request));
    let created = good.push(&good.created());
    let slice = good.push(&good.slice(1));

    let mut other_key = created.clone();
    other_key.signature = sign(&Ed25519KeyPair::from_seed_unchecked(&[99; 32]).expect("a key"), &created.id, "x", at).signature;
    let mut flipped = created.clone();
    let last = String::from_utf8_lossy(&flipped.body).find("\"receipt\":\"").expect("a receipt member") + 40;
    flipped.body[last] = if flipped.body[last] == b'A' { b'B' } else { b'A' };
    let stale = sign(&good.key, &created.id, std::str::from_utf8(&created.body).expect("UTF-8"), at - time::Duration::minutes(10));
    let renamed = sign(&good.key, "s_ffffffffffffffffffffffffffffffff", std::str::from_utf8(&slice.body).expect("UTF-8"), at);
    let wrong_audience = Stranger::new(2, "other.example", None);
    let unasked = Stranger::new(3, DOMAIN, None);
    let mut other_request = request.clone();
    other_request.id = optin_protocol::request::RequestId::parse("not-ours").expect("an id");
    let unknown_request = Stranger::new(4, DOMAIN, Some(&other_request));
    let no_grant = Stranger::new(5, DOMAIN, Some(&request));
    let malformed = sign(&good.key, &created.id, "{\"type\":\"grant.created\",", at);

    let table: Vec<(&str, Push, u16, &str)> = vec![
        ("signed by another key", other_key, 401, "invalid-signature"),
        ("a byte of the body changed", flipped, 401, "invalid-signature"),
        ("sent ten minutes ago", stale, 401, "stale"),
        ("a slice of a grant never created", no_grant.push(&no_grant.slice(2)), 404, "unknown-grant"),
        ("a grant for another marketer", wrong_audience.push(&wrong_audience.created()), 403, "not-for-this-inbox"),
        ("a grant made unasked", unasked.push(&unasked.created()), 403, "not-for-this-inbox"),
        ("a grant of a request the inbox never made", unknown_request.push(&unknown_request.created()), 403, "not-for-this-inbox"),
        ("malformed JSON", malformed, 400, "invalid-body"),
    ];
    for (what, push, status, slug) in &table {
        let (got, answer) = inbox.post(push).await;
        assert_eq!((got, problem_type(&answer)), (*status, format!("urn:optin:inbox:problem:{slug}").as_str()), "{what}: {answer}");
        assert_eq!(inbox.counts(), (0, 0), "{what}: nothing stored");
    }
    let (got, answer) = inbox.post_raw(&[], b"", 0).await;
    assert_eq!((got, problem_type(&answer)), (400, "urn:optin:inbox:problem:invalid-header"), "no webhook headers: {answer}");
    let headers = [
        ("webhook-id".to_owned(), created.id.clone()),
        ("webhook-timestamp".to_owned(), created.timestamp.clone()),
        ("webhook-signature".to_owned(), created.signature.clone()),
    ];
    let (got, answer) = inbox.post_raw(&headers, b"", 40 * 1024 * 1024).await;
    assert_eq!((got, problem_type(&answer)), (413, "urn:optin:inbox:problem:too-large"), "a 40 MiB body: {answer}");
    assert_eq!(inbox.counts(), (0, 0), "nothing stored");

    // The baseline: taken once, however often it comes.
    for (what, push, taken) in
        [("the grant", &created, "stored"), ("the grant again", &created, "duplicate"), ("a slice", &slice, "stored"), ("the slice again", &slice, "duplicate")]
    {
        let (got, answer) = inbox.post(push).await;
        assert_eq!((got, answer["taken"].as_str()), (200, Some(taken)), "{what}: {answer}");
    }
    assert_eq!(inbox.counts(), (1, 1));
    // The slice's body under another webhook-id is refused, not stored twice.
    let (got, answer) = inbox.post(&renamed).await;
    assert_eq!((got, problem_type(&answer)), (400, "urn:optin:inbox:problem:invalid-body"), "a slice under a fresh id: {answer}");
    // A grant.created for the same grant under another key, consistent in itself: the inbox
    // verifies a grant it knows with the key it pinned.
    let mut impostor = Stranger::new(6, DOMAIN, Some(&request));
    impostor.bundle.grant_id = good.bundle.grant_id.clone();
    impostor.receipt = Receipt::given(Basis::Request(&request), &good.bundle.grant_id, PRINCIPAL, &impostor.bundle.terms, at);
    let (got, answer) = inbox.post(&impostor.push(&impostor.created())).await;
    assert_eq!((got, problem_type(&answer)), (401, "urn:optin:inbox:problem:invalid-signature"), "a new key for a known grant: {answer}");
    assert_eq!(inbox.counts(), (1, 1));

    // Revoked: the slice is erased, the revocation taken once, and every other event of the
    // grant, the slice taken before included, answered 410 Gone.
    let revoked = good.push(&good.revoked());
    let (got, answer) = inbox.post(&revoked).await;
    assert_eq!((got, answer["taken"].as_str()), (200, Some("stored")), "the revocation: {answer}");
    assert_eq!(inbox.counts(), (1, 0));
    let (got, answer) = inbox.post(&revoked).await;
    assert_eq!((got, answer["taken"].as_str()), (200, Some("duplicate")), "the revocation again: {answer}");
    for (what, push) in
        [("the slice taken before", good.push(&good.slice(1))), ("a new slice", good.push(&good.slice(2))), ("the grant again", good.push(&good.created()))]
    {
        let (got, answer) = inbox.post(&push).await;
        assert_eq!((got, problem_type(&answer)), (410, "urn:optin:inbox:problem:grant-ended"), "{what}: {answer}");
    }
    assert_eq!(inbox.counts(), (1, 0));
    let grants = inbox.ndjson("grants");
    assert_eq!((grants[0]["state"].as_str(), grants[0]["erased_slices"].as_u64()), (Some("revoked"), Some(1)), "{grants:?}");
    // The log names what was refused and why, never what a slice held or a signature.
    let log = inbox.log();
    assert!(log.contains("push refused") && !log.contains(&slice.signature) && !log.contains(good.slice(1).to_json().as_str()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_after_revoke_keeps_the_slices_flagged_and_out_of_the_export() {
    let mut inbox = Inbox::init();
    inbox.serve(&["--keep-after-revoke"]);
    let request = published(&inbox);
    let grant = Stranger::new(7, DOMAIN, Some(&request));
    for event in [grant.created(), grant.slice(1), grant.revoked()] {
        let (got, answer) = inbox.post(&grant.push(&event)).await;
        assert_eq!((got, answer["taken"].as_str()), (200, Some("stored")), "{}: {answer}", event.data.type_name());
    }
    let slices = inbox.ndjson("slices");
    assert_eq!((slices.len(), slices[0]["kept_after_end"].as_bool()), (1, Some(true)), "{slices:?}");
    let grants = inbox.ndjson("grants");
    assert_eq!((grants[0]["grant_id"].as_str(), grants[0]["kept_slices"].as_u64()), (Some(grant.grant_id().as_str()), Some(1)), "{grants:?}");
    assert_eq!(inbox.run(&["export"]).ok(), "", "a revoked grant's data is never exported");
}

#[test]
fn init_and_request_new_refuse_bad_input_and_write_nothing() {
    let inbox = Inbox::init();
    let again = inbox.run(&["init", "--domain", DOMAIN]);
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert!(again.stderr.contains("is an optin-inbox home already"), "{}", again.stderr);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(inbox.home().join("request-signing.pk8")).expect("the key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let refused = inbox.run(&[
        "request",
        "new",
        "--id",
        "shoes-2",
        "--purpose-code",
        "dpv:PersonalisedAdvertising",
        "--purpose",
        "Offers.",
        "--kinds",
        "search",
        "--granularity",
        "raw",
        "--window",
        "30d",
        "--duration",
        "90d",
        "--offer",
        "A\u{202e}gift",
        "--push-every",
        "1h",
    ]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("--offer: ") && refused.stderr.contains("bidirectional") && !refused.stderr.contains('\u{202e}'), "{}", refused.stderr);
    let files: Vec<String> = std::fs::read_dir(inbox.home().join("requests"))
        .expect("the requests")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["shoes-1.jws"]);
    let missing = Inbox::run(&Inbox { dir: tempfile::tempdir().expect("a directory"), port: 0, serving: None }, &["grants"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("no optin-inbox home at"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_slice_verifies_with_jwcrypto_from_the_export_alone() {
    let Some(python) = optin_tests::python("the jwcrypto check of the inbox's export") else { return };
    let (inbox, _agent, grant) = approved_through_an_agent().await;
    let export = inbox.ndjson("export");
    assert_eq!(export.len(), 1, "{export:?}");
    let line = &export[0];
    // verify.py reads a bundle's key, issuer, marketer and grant: all of it is in the line.
    let bundle = serde_json::json!({"jwk": line["jwk"], "issuer": line["issuer"], "marketer": line["audience"], "grant_id": line["grant_id"]});
    let (bundle_file, jws_file) = (inbox.dir.path().join("export-bundle.json"), inbox.dir.path().join("export-slice.jws"));
    std::fs::write(&bundle_file, bundle.to_string()).expect("write the key");
    std::fs::write(&jws_file, line["slice"].as_str().expect("a slice")).expect("write the slice");
    let verify = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jose").join("verify.py");
    let out = Command::new(&python)
        .arg(verify)
        .arg(&bundle_file)
        .arg(&jws_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", python.display(), optin_tests::PYTHON_SETUP));
    assert_eq!(out.status.code(), Some(0), "jwcrypto refused the exported slice: {}", String::from_utf8_lossy(&out.stderr));
    let payload: Value = serde_json::from_slice(&out.stdout).expect("verify.py prints the payload");
    assert_eq!((payload["grant"]["id"].as_str(), payload["jti"].as_str()), (Some(grant.as_str()), line["jti"].as_str()));
    assert_eq!(payload["items"].as_array().map(Vec::len), Some(2), "{payload}");
}
