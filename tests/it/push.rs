//! Push delivery through the real binary: a marketer's inbox served over real TLS under its
//! own name, with a certificate authority made for the test, reached through `--ca-file` and
//! `--resolve`. The inbox verifies every POST as a marketer would, with the protocol crate:
//! `grant.created` on its own, every later event with the bundle's key.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use optin_protocol::bundle::GrantBundle;
use optin_protocol::push::{self, Data, Received};
use optin_protocol::webhook::{Headers, DEFAULT_TOLERANCE};
use ring::signature::Ed25519KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use optin_tests::fixture::{self, ago};
use optin_tests::proxy::{free_port, Microsocks};
use optin_tests::{now, ts, Agent, Home};

const MARKETER: &str = "acme.example";
const INBOX: &str = "inbox.acme.example";

/// What the inbox was sent, and what it answered.
#[derive(Clone, Debug)]
struct Got {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

/// A marketer's inbox on 127.0.0.1: answers each POST with the next status of its script
/// (200 once the script runs out) and keeps what it was sent.
struct Inbox {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    _ca: tempfile::TempDir,
    ca_pem: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inbox {
    async fn start(script: &[u16]) -> Inbox {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        static MADE: AtomicUsize = AtomicUsize::new(0);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("optin push test CA {}", MADE.fetch_add(1, Ordering::SeqCst)));
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write CA");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec![INBOX.to_owned()]).expect("leaf params").signed_by(&key, &ca, &ca_key).expect("leaf");
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let task = tokio::spawn(serve(listener, Arc::new(tls), got.clone(), script.clone()));
        Inbox { port, got, script, _ca: dir, ca_pem, task }
    }

    fn url(&self) -> String {
        format!("https://{INBOX}:{}/hook", self.port)
    }

    /// The flags that make the agent reach this inbox and trust its certificate.
    fn flags(&self) -> Vec<String> {
        vec!["--ca-file".into(), self.ca_pem.display().to_string(), "--resolve".into(), format!("{INBOX}:{}:127.0.0.1", self.port)]
    }

    fn answer_next(&self, statuses: &[u16]) {
        self.script.lock().expect("script").extend(statuses);
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    /// Waits until the inbox was sent `n` POSTs in all.
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "the inbox was sent {} POSTs, not {n}: {:?}", got.len(), kinds(&got));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, got: Arc<Mutex<Vec<Got>>>, script: Arc<Mutex<VecDeque<u16>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, got, script) = (acceptor.clone(), got.clone(), script.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request| answer(request, got.clone(), script.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(
    request: hyper::Request<Incoming>,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let headers = Headers { id: header("webhook-id"), timestamp: header("webhook-timestamp"), signature: header("webhook-signature") };
    let body = request.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let status = script.lock().expect("script").pop_front().unwrap_or(200);
    got.lock().expect("got").push(Got { status, headers, body });
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    Ok(response)
}

fn kinds(got: &[Got]) -> Vec<String> {
    got.iter()
        .map(|g| {
            let kind = serde_json::from_slice::<serde_json::Value>(&g.body).ok().and_then(|v| v["type"].as_str().map(str::to_owned)).unwrap_or_default();
            format!("{kind} {}", g.status)
        })
        .collect()
}

/// A POST verified as the marketer verifies it: `grant.created` on its own, anything else
/// with the bundle's key.
fn verified(got: &Got, bundle: Option<&GrantBundle>) -> Received {
    let now = now();
    match bundle {
        None => push::receive_new_grant(&got.headers, &got.body, now, DEFAULT_TOLERANCE).expect("grant.created verifies"),
        Some(b) => push::receive(&b.jwk, &got.headers, &got.body, now, DEFAULT_TOLERANCE).expect("the event verifies with the bundle"),
    }
}

/// A signed push request of acme.example to `inbox`, every hour.
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

async fn serve_with(home: Home, inbox: &Inbox) -> Agent {
    let flags = inbox.flags();
    home.serve(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// Adds and approves a push request; the bundle as the CLI prints it.
async fn approve(agent: &Agent, id: &str, inbox: &Inbox) -> GrantBundle {
    let file = agent.home().scratch(&format!("{id}.jws"));
    std::fs::write(&file, request(id, &inbox.url())).expect("write the request");
    agent.cli(&["requests", "add", file.to_str().expect("a UTF-8 path")]).await.ok();
    agent.cli(&["approve", id]).await.ok();
    let bundle = agent.cli(&["grants", "--json"]).await.json()[0]["grant_id"].as_str().expect("a grant").to_owned();
    GrantBundle::parse(agent.cli(&["bundle", &bundle]).await.ok()).expect("a bundle")
}

async fn grants_text(agent: &Agent) -> String {
    agent.cli(&["grants"]).await.ok().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_arrive_signed_survive_a_kill_and_stop_at_revoke() {
    // The first POST fails: the agent is then killed, and the event goes again after it
    // starts, under the same id.
    let inbox = Inbox::start(&[503]).await;
    let agent = serve_with(Home::new(), &inbox).await;
    let now = now();
    let signals = [fixture::search("s-1", ago(now, 5), "running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes")];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = approve(&agent, "push-1", &inbox).await;
    let first = inbox.wait_for(1).await;
    let created = verified(&first[0], None);
    let Data::GrantCreated { bundle: pushed, .. } = &created.event.data else { panic!("not grant.created first: {:?}", kinds(&first)) };
    assert_eq!(**pushed, bundle, "the bundle pushed is the person's");
    assert_eq!(first[0].status, 503);
    // No slice goes before the inbox has the grant: without the bundle it could verify none.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(inbox.got().len(), 1, "{:?}", kinds(&inbox.got()));

    // After the restart the grant goes through, and its slice fails, to be retried later.
    inbox.answer_next(&[200, 503]);
    let agent = serve_with(agent.kill_hard(), &inbox).await;
    let got = inbox.wait_for(3).await;
    assert_eq!(kinds(&got), ["grant.created 503", "grant.created 200", "slice.delivered 503"]);
    assert_eq!((&got[1].headers.id, &got[1].body), (&got[0].headers.id, &got[0].body), "the same event under the same id");
    verified(&got[1], None);
    let slice = verified(&got[2], Some(&bundle));
    let Data::SliceDelivered { slice: jws, jti, .. } = &slice.event.data else { panic!("not a slice") };
    let claims = bundle.verify_slice(jws).expect("the slice verifies with the bundle");
    assert_eq!((claims.jti.as_str(), claims.items.len()), (jti.as_str(), 1));
    assert_eq!(got[2].headers.id, claims.jti, "the webhook-id is the slice's jti");
    let shown = grants_text(&agent).await;
    assert!(shown.contains(&format!("pushes to {} every 1h: last slice.delivered retrying (503)", inbox.url())), "{shown}");
    assert!(shown.contains("1 queued"), "{shown}");

    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    let got = inbox.wait_for(4).await;
    let revoked = verified(&got[3], Some(&bundle));
    assert!(matches!(revoked.event.data, Data::GrantRevoked { .. }), "{:?}", kinds(&got));
    // Settled once the agent has read the answer; killed before that, it would send the
    // event again, under the same id.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !grants_text(&agent).await.contains("last grant.revoked delivered (200)") {
        assert!(Instant::now() < deadline, "grant.revoked is not settled: {}", grants_text(&agent).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The slice waiting for its retry went with the revocation: a restart, which retries
    // at once whatever waits, sends nothing more.
    let agent = serve_with(agent.kill_hard(), &inbox).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(inbox.got().len(), 4, "nothing after grant.revoked: {:?}", kinds(&inbox.got()));

    let audit = agent.cli(&["audit", "--json"]).await.json();
    let pushed: Vec<String> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["event"]["type"] == "pushed")
        .map(|r| {
            format!("{} {} {}", r["event"]["kind"].as_str().unwrap_or_default(), r["event"]["outcome"].as_str().unwrap_or_default(), r["event"]["attempts"])
        })
        .collect();
    assert_eq!(pushed, ["grant.created retrying 1", "grant.created delivered 2", "slice.delivered retrying 1", "grant.revoked delivered 1"]);
    // Each names the marketer, so the log narrowed to it lists the pushes too.
    let of_marketer = agent.cli(&["audit", "--json", "--marketer", MARKETER]).await.json();
    let pushed_to = of_marketer["records"].as_array().expect("records").iter().filter(|r| r["event"]["type"] == "pushed").count();
    assert_eq!(pushed_to, pushed.len(), "{of_marketer:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_that_answers_410_is_sent_nothing_more() {
    let inbox = Inbox::start(&[410]).await;
    let agent = serve_with(Home::new(), &inbox).await;
    agent.ingest(&fixture::ndjson(&[fixture::search("s-1", ago(now(), 5), "running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes")])).await;
    let bundle = approve(&agent, "push-2", &inbox).await;
    inbox.wait_for(1).await;
    inbox.answer_next(&[200, 200]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let shown = grants_text(&agent).await;
    assert!(shown.contains("stopped: the inbox answered 410 Gone"), "{shown}");
    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(kinds(&inbox.got()), ["grant.created 410"], "neither a slice nor the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_through_the_proxy_and_never_around_it() {
    let inbox = Inbox::start(&[]).await;
    let through = |proxy: String| {
        let mut flags = inbox.flags();
        flags.extend(["--push-proxy".to_owned(), proxy]);
        flags
    };
    // A proxy that is not there: the push waits, and nothing reaches the inbox around it.
    let flags = through(format!("socks5h://127.0.0.1:{}", free_port()));
    let agent = Home::new().serve(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    approve(&agent, "push-3", &inbox).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !grants_text(&agent).await.contains("last grant.created retrying at") {
        assert!(Instant::now() < deadline, "no failed attempt: {}", grants_text(&agent).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(inbox.got().is_empty(), "a push went around the proxy: {:?}", kinds(&inbox.got()));

    let proxy = Microsocks::start();
    let flags = through(format!("socks5h://127.0.0.1:{}", proxy.port));
    let agent = agent.stop().serve(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let got = inbox.wait_for(1).await;
    verified(&got[0], None);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_unasked_pushes_with_a_receipt_that_names_no_request() {
    let inbox = Inbox::start(&[]).await;
    let agent = serve_with(Home::new(), &inbox).await;
    // Two days back: a slice at category level reaches only to the start of today.
    agent.ingest(&fixture::ndjson(&[fixture::search("s-1", ago(now(), 48), "running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes")])).await;
    let url = inbox.url();
    let common = ["grant", MARKETER, "--kinds", "search", "--granularity", "category", "--window", "30d", "--expires", "30d", "--purpose", "offers"];

    // A wrong inbox or schedule is refused before anything is made: a usage error (2) where
    // the command line alone shows it, the agent's refusal (1) for a schedule too tight.
    for (args, code, says) in [
        (vec!["--push", "http://inbox.acme.example/hook"], 2, "--push"),
        (vec!["--push", "https://127.0.0.1/hook"], 2, "--push"),
        (vec!["--push-every", "1d"], 2, "--push"),
        (vec!["--push", url.as_str(), "--push-every", "30m"], 1, "push-every: a slice is pushed at most once an hour"),
    ] {
        agent.cli(&[&common[..], &args[..]].concat()).await.fails(code, says);
    }
    assert_eq!(agent.cli(&["grants", "--json"]).await.json(), json!([]), "nothing was granted");

    let made = agent.cli(&[&common[..], &["--push", url.as_str(), "--push-every", "1h"]].concat()).await;
    let out = made.ok();
    assert!(out.contains(&format!("pushed to {url} by `optin serve`")), "{out}");
    assert!(out.contains("the inbox receives this bundle"), "{out}");
    let bundle = GrantBundle::parse(&out[out.find('{').expect("the bundle")..]).expect("a bundle");
    let got = inbox.wait_for(2).await;
    let created = verified(&got[0], None);
    let Data::GrantCreated { bundle: pushed, receipt } = &created.event.data else { panic!("not grant.created first: {:?}", kinds(&got)) };
    assert_eq!(**pushed, bundle);
    assert_eq!(bundle.pull_from(), None, "a pushed grant's bundle names no address or certificate that would link it to the person's others");
    let receipt = optin_protocol::receipt::verify(receipt, &bundle.jwk).expect("the receipt verifies");
    assert_eq!(receipt.request, None, "a grant made unasked answers no request");
    assert_eq!((receipt.party_identification[0].party_id.as_str(), receipt.pii_processing.purposes[0].purpose.as_str()), (MARKETER, "offers"));
    let slice = verified(&got[1], Some(&bundle));
    let Data::SliceDelivered { slice: jws, .. } = &slice.event.data else { panic!("not a slice: {:?}", kinds(&got)) };
    assert_eq!(bundle.verify_slice(jws).expect("the slice verifies").items.len(), 1);

    agent.cli(&["revoke", bundle.grant_id.as_str()]).await.ok();
    let got = inbox.wait_for(3).await;
    let Data::GrantRevoked { receipt, .. } = &verified(&got[2], Some(&bundle)).event.data else { panic!("not grant.revoked: {:?}", kinds(&got)) };
    let withdrawn = optin_protocol::receipt::verify(receipt, &bundle.jwk).expect("the withdrawal verifies");
    assert_eq!(withdrawn.state(), Some(optin_protocol::receipt::ConsentState::Withdrawn));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_slice_holds_nothing_the_never_share_list_withholds() {
    let inbox = Inbox::start(&[]).await;
    let agent = serve_with(Home::new(), &inbox).await;
    let at = ago(now(), 5);
    let signals = [
        fixture::search("s-1", at, "running shoes", "duckduckgo.com", "Apparel & Accessories > Shoes"),
        fixture::search("s-2", at, "payday loans near me", "duckduckgo.com", "Apparel & Accessories > Shoes"),
    ];
    agent.ingest(&fixture::ndjson(&signals)).await;
    let bundle = approve(&agent, "push-sensitive", &inbox).await;
    let got = inbox.wait_for(2).await;
    let Data::SliceDelivered { slice: jws, .. } = &verified(&got[1], Some(&bundle)).event.data else { panic!("not a slice: {:?}", kinds(&got)) };
    let claims = bundle.verify_slice(jws).expect("the slice verifies");
    let queries: Vec<String> =
        claims.items.iter().map(|item| serde_json::to_value(item).expect("an item")["query"].as_str().unwrap_or("?").to_owned()).collect();
    assert_eq!(queries, ["running shoes"], "the search about a payday loan is not pushed");
}
