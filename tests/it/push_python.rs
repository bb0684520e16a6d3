//! Interoperability of push: a marketer's inbox written in Python from SPEC.md alone
//! (`tests/jose/inbox.py`: the standard library's TLS and HTTP, `cryptography`'s Ed25519,
//! jwcrypto) takes the real agent's pushes, and refuses what a forger could send it.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use optin_tests::fixture::{self, WALKTHROUGH_SHARED};
use optin_tests::site::TestCa;
use optin_tests::{now, ts, Home};

const MARKETER: &str = "acme.example";
const INBOX: &str = "inbox.acme.example";

/// `inbox.py` on a port of 127.0.0.1 it picked itself, with a certificate for [`INBOX`]
/// from the test's authority. Stopped by its PID when dropped.
struct PythonInbox {
    child: Child,
    port: u16,
    record: PathBuf,
    stderr: PathBuf,
}

impl PythonInbox {
    fn start(python: &Path, ca: &TestCa, dir: &Path) -> PythonInbox {
        let (cert, key) = ca.write_server_pem(&[INBOX], dir);
        let record = dir.join("events.jsonl");
        let stderr = dir.join("inbox.stderr");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jose").join("inbox.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--port", "0", "--marketer", MARKETER, "--record"])
            .arg(&record)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create the inbox's log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", python.display(), optin_tests::PYTHON_SETUP));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("a piped stdout");
        // Reads the ready line, then keeps draining so the inbox never blocks on its output.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut inbox = PythonInbox { child, port: 0, record, stderr };
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|e| panic!("inbox.py printed no ready line ({e}): {}", inbox.log()));
        inbox.port = line.strip_prefix("listening on 127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("not inbox.py's ready line: {line:?}"));
        inbox
    }

    fn url(&self) -> String {
        format!("https://{INBOX}:{}/optin", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The events the inbox took, one JSON object per line of its record.
    fn taken(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        // A line is written whole before the event is acknowledged; a last line without its
        // newline is still being written and is read on the next poll.
        text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    /// Waits until the inbox took `n` events.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let taken = self.taken();
            if taken.len() >= n {
                return taken;
            }
            assert!(Instant::now() < deadline, "the inbox took {:?}, not {n} events; its log:\n{}", summary(&taken), self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs `body` with the webhook headers of `delivery`, as anyone on the network could;
    /// returns the status and the reason the inbox gives.
    async fn post(&self, ca: &TestCa, delivery: &Delivery) -> (u16, String) {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await.expect("connect to the inbox");
            let name = rustls::pki_types::ServerName::try_from(INBOX).expect("a server name").to_owned();
            let mut tls = tokio_rustls::TlsConnector::from(ca.client()).connect(name, tcp).await.expect("a TLS handshake with the inbox");
            let head = format!(
                "POST /optin HTTP/1.1\r\nHost: {INBOX}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
                 webhook-id: {}\r\nwebhook-timestamp: {}\r\nwebhook-signature: {}\r\n\r\n",
                self.port,
                delivery.body.len(),
                delivery.id,
                delivery.timestamp,
                delivery.signature,
            );
            tls.write_all(head.as_bytes()).await.expect("send the head");
            tls.write_all(&delivery.body).await.expect("send the body");
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
}

impl Drop for PythonInbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A status line, headers and a body of `Content-Length` bytes, once all of it is in `got`.
fn parse_response(got: &[u8]) -> Option<(u16, String)> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&got[..end]).expect("a UTF-8 head");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim()))
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    let body = &got[end + 4..];
    (body.len() >= length).then(|| (status, String::from_utf8_lossy(&body[..length]).into_owned()))
}

/// One POST: the webhook headers and the body.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Delivery {
    /// The POST the inbox recorded, headers and body as it received them.
    fn recorded(line: &Value) -> Delivery {
        let header = |name: &str| line["headers"][name].as_str().expect("a recorded header").to_owned();
        Delivery {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: line["body"].as_str().expect("a recorded body").as_bytes().to_vec(),
        }
    }
}

/// Type, webhook-id, grant and, for a slice, its item count: what the inbox took of each event.
fn summary(taken: &[Value]) -> Vec<String> {
    taken
        .iter()
        .map(|l| {
            let items = l.get("items").map(|n| format!(" {n} items")).unwrap_or_default();
            format!("{} {} {}{items}", l["type"].as_str().unwrap_or("?"), l["webhook_id"].as_str().unwrap_or("?"), l["grant_id"].as_str().unwrap_or("?"))
        })
        .collect()
}

/// A signed push request of [`MARKETER`] to `inbox`: the walk-through's kinds and window, raw.
fn request(id: &str, inbox: &str) -> String {
    let now = now();
    let document = json!({
        "version": 1, "id": id, "issued_at": ts(now - time::Duration::hours(1)), "expires_at": ts(now + time::Duration::days(30)),
        "marketer": {"name": "Acme Shoes", "domain": MARKETER, "contact": "privacy@acme.example", "privacy_policy": "https://acme.example/privacy"},
        "purpose": {"code": "dpv:PersonalisedAdvertising", "text": "Show you running-shoe offers that fit what you look for."},
        "terms": {"kinds": ["search", "cart"], "granularity": "raw", "window": "30d", "duration": "90d"},
        "offer": "10% off your next pair",
        "delivery": {"method": "push", "inbox": inbox, "every": "1h"},
    });
    let key = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a key");
    optin_protocol::request::sign(&key, document.to_string().as_bytes())
}

/// `grant.created` of `created`'s grant, remade under `forger`: the bundle's key, the receipt
/// signed with it, and the webhook signature. Everything else is the body as the agent sent it.
fn forge_created(created: &Delivery, forger: &Ed25519KeyPair, timestamp: i64) -> Delivery {
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8(created.body.clone()).expect("a UTF-8 body");
    let event: Value = serde_json::from_str(&text).expect("JSON");
    let (jwk, receipt) = (&event["data"]["bundle"]["jwk"], event["data"]["receipt"].as_str().expect("a receipt"));
    let x = b64url.encode(forger.public_key().as_ref());
    let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = b64url.encode(ring::digest::digest(&ring::digest::SHA256, thumbprint.as_bytes()).as_ref());
    let payload = receipt.split('.').nth(1).expect("a compact JWS");
    let header = b64url.encode(format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"optin-receipt+jwt"}}"#));
    let input = format!("{header}.{payload}");
    let forged_receipt = format!("{input}.{}", b64url.encode(forger.sign(input.as_bytes()).as_ref()));
    // Replaced in the text, so the members stay in the order the inbox requires.
    let body = text.replace(receipt, &forged_receipt).replace(jwk["x"].as_str().expect("x"), &x).replace(jwk["kid"].as_str().expect("kid"), &kid).into_bytes();
    let signed = [format!("{}.{timestamp}.", created.id).as_bytes(), &body].concat();
    let signature = format!("v1a,{}", base64::engine::general_purpose::STANDARD.encode(forger.sign(&signed).as_ref()));
    Delivery { id: created.id.clone(), timestamp: timestamp.to_string(), signature, body }
}

fn unix_now() -> i64 {
    now().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_inbox_verifies_every_push_from_the_spec() {
    let Some(python) = optin_tests::python("the Python inbox test") else { return };
    let ca = TestCa::new();
    let home = Home::new();
    let inbox = PythonInbox::start(&python, &ca, &home.scratch(""));
    let resolve = format!("{INBOX}:{}:127.0.0.1", inbox.port);
    let agent = home.serve(&["--ca-file", ca.pem().to_str().expect("a UTF-8 path"), "--resolve", &resolve]).await;
    // The signals are in before the approval: the first slice is cut as soon as the inbox
    // has the grant, and holds what there is then.
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let file = agent.home().scratch("push-python.jws");
    std::fs::write(&file, request("push-python", &inbox.url())).expect("write the request");
    agent.cli(&["requests", "add", file.to_str().expect("a UTF-8 path")]).await.ok();
    agent.cli(&["approve", "push-python"]).await.ok();
    let grants = agent.cli(&["grants", "--json"]).await.json();
    let grant = grants[0]["grant_id"].as_str().expect("a grant").to_owned();

    let taken = inbox.wait_for(2).await;
    let jti = taken[1]["webhook_id"].as_str().expect("an id").to_owned();
    assert!(jti.starts_with("s_") && jti.len() == 34, "a slice's webhook-id is its jti: {jti}");
    assert_eq!(
        summary(&taken),
        [format!("grant.created {grant}-created {grant}"), format!("slice.delivered {jti} {grant} {} items", WALKTHROUGH_SHARED.len())]
    );
    // What the Python inbox pinned is the bundle the person would hand over.
    let created: Value = serde_json::from_str(taken[0]["body"].as_str().expect("a body")).expect("JSON");
    let bundle: Value = serde_json::from_str(agent.cli(&["bundle", &grant]).await.ok()).expect("the bundle as JSON");
    assert_eq!(created["data"]["bundle"], bundle);

    // What a forger could send, made from the slice the agent pushed.
    let slice = Delivery::recorded(&taken[1]);
    let mut flipped = slice.clone();
    let at = String::from_utf8_lossy(&flipped.body).find("\"slice\":\"").expect("a slice member") + 40;
    flipped.body[at] = if flipped.body[at] == b'A' { b'B' } else { b'A' };
    let (status, reason) = inbox.post(&ca, &flipped).await;
    assert_eq!((status, reason.as_str()), (401, "no v1a signature verifies with the grant's key\n"), "a byte of the body changed");

    let mut other_key = slice.clone();
    other_key.timestamp = unix_now().to_string();
    let forger = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).expect("a key");
    let signed = [format!("{}.{}.", other_key.id, other_key.timestamp).as_bytes(), &other_key.body].concat();
    other_key.signature = format!("v1a,{}", base64::engine::general_purpose::STANDARD.encode(forger.sign(&signed).as_ref()));
    let (status, reason) = inbox.post(&ca, &other_key).await;
    assert_eq!((status, reason.as_str()), (401, "no v1a signature verifies with the grant's key\n"), "signed by another key");

    // A grant.created for the same grant under the forger's key, consistent in itself: the
    // bundle names that key and the receipt is signed with it. The inbox verifies a grant it
    // knows with the key it pinned, never with one a push carries.
    let forged = forge_created(&Delivery::recorded(&taken[0]), &forger, unix_now());
    let (status, reason) = inbox.post(&ca, &forged).await;
    assert_eq!((status, reason.as_str()), (401, "no v1a signature verifies with the grant's key\n"), "a grant.created under another key");

    // Off by more than the 5 minutes' tolerance, either way: refused on the timestamp, before
    // any signature is looked at.
    for skew in [-600, 600] {
        let mut stale = slice.clone();
        stale.timestamp = (unix_now() + skew).to_string();
        let (status, reason) = inbox.post(&ca, &stale).await;
        assert_eq!(status, 401, "a timestamp {skew} s off: {reason}");
        assert!(reason.starts_with("webhook-timestamp is "), "refused for its timestamp, {skew} s off: {reason}");
    }

    // The same event again, as the agent retries it: acknowledged, and stored once.
    let (status, reason) = inbox.post(&ca, &slice).await;
    assert_eq!((status, reason.as_str()), (200, "already taken\n"), "a replayed slice");
    assert_eq!(inbox.taken().len(), 2, "{:?}", summary(&inbox.taken()));

    agent.cli(&["revoke", &grant]).await.ok();
    let taken = inbox.wait_for(3).await;
    assert_eq!(
        summary(&taken),
        [
            format!("grant.created {grant}-created {grant}"),
            format!("slice.delivered {jti} {grant} {} items", WALKTHROUGH_SHARED.len()),
            format!("grant.revoked {grant}-revoked {grant}"),
        ]
    );
    // Once revoked, the grant's other events are gone, even one taken before; the revocation
    // itself, sent again, is acknowledged and stored once.
    let (status, reason) = inbox.post(&ca, &slice).await;
    assert_eq!((status, reason.as_str()), (410, format!("grant {grant} has ended ({grant}-revoked)\n").as_str()), "a slice after the revocation");
    let (status, reason) = inbox.post(&ca, &Delivery::recorded(&taken[2])).await;
    assert_eq!((status, reason.as_str()), (200, "already taken\n"), "a replayed revocation");
    assert_eq!(summary(&inbox.taken()), summary(&taken), "nothing stored twice");
}
