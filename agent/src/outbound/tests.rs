//! The client against real servers on the loopback: a TLS site under a made-up name with a
//! certificate from a CA made here, reached through `--resolve`, and a real SOCKS5 proxy
//! (microsocks, which the test command installs).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

const NAME: &str = "marketer.test";
const LIMIT: usize = 64 * 1024;

const MICROSOCKS_MISSING: &str = "microsocks is not installed; run the test command, bash scripts/test, which installs it (apt-get install microsocks)";

/// A certificate authority made for one test, with its PEM in a file as `--ca-file` takes it.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    _dir: tempfile::TempDir,
    pem: PathBuf,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        // Each CA its own name: two of the same name would pass for one another's issuer,
        // and a certificate from the wrong one would fail on its signature, not its issuer.
        static MADE: AtomicUsize = AtomicUsize::new(0);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("optin test CA {}", MADE.fetch_add(1, Ordering::SeqCst)));
        let cert = params.self_signed(&key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write CA");
        TestCa { cert, key, _dir: dir, pem }
    }

    /// A server configuration whose certificate, signed by this CA, names `marketer.test`
    /// and `localhost`.
    fn server(&self) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params = rcgen::CertificateParams::new(vec![NAME.to_owned(), "localhost".to_owned()]).expect("leaf params");
        let leaf = params.signed_by(&key, &self.cert, &self.key).expect("leaf certificate");
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }
}

/// A marketer's site: answers by path (see [`answer`]), counts connections and records the
/// paths asked for.
struct Site {
    port: u16,
    connections: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Site {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Site {
    /// Listens on 127.0.0.1 and, where there is one, on ::1 on the same port, since a name
    /// like `localhost` may resolve to either for the proxy.
    async fn start(tls: Arc<rustls::ServerConfig>) -> Site {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = v4.local_addr().expect("address").port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        let connections = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![tokio::spawn(serve(v4, tls.clone(), connections.clone(), paths.clone()))];
        if let Some(v6) = v6 {
            tasks.push(tokio::spawn(serve(v6, tls, connections.clone(), paths.clone())));
        }
        Site { port, connections, paths, tasks }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{NAME}:{}{path}", self.port)
    }

    fn resolve(&self) -> Resolve {
        format!("{NAME}:{}:127.0.0.1", self.port).parse().expect("resolve")
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths").clone()
    }
}

async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, connections: Arc<AtomicUsize>, paths: Arc<Mutex<Vec<String>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Ok((tcp, _)) = listener.accept().await {
        connections.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let paths = paths.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request| answer(request, paths.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, body: impl Into<Bytes>) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response
}

async fn answer(request: hyper::Request<Incoming>, paths: Arc<Mutex<Vec<String>>>) -> Result<hyper::Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    paths.lock().expect("paths").push(path.clone());
    let response = match path.as_str() {
        "/ok" => full(200, "hello"),
        "/echo" => {
            let id = request.headers().get("webhook-id").cloned();
            let agent = request.headers().get("user-agent").cloned();
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut response = full(200, body);
            if let Some(id) = id {
                response.headers_mut().insert("x-webhook-id", id);
            }
            if let Some(agent) = agent {
                response.headers_mut().insert("x-user-agent", agent);
            }
            response
        }
        "/gone" => full(410, ""),
        "/missing" => full(404, ""),
        "/busy" => {
            let mut response = full(503, "");
            response.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("7"));
            response
        }
        "/limited" => full(429, ""),
        "/redirect" => {
            let mut response = full(302, "");
            response.headers_mut().insert("location", hyper::header::HeaderValue::from_static("/ok"));
            response
        }
        "/exact" => full(200, vec![b'x'; LIMIT]),
        "/declared" => full(200, vec![b'x'; LIMIT + 1]),
        "/endless" => hyper::Response::new(Endless.boxed()),
        "/silent" => std::future::pending().await,
        _ => full(404, ""),
    };
    Ok(response)
}

/// A body that never ends and declares no length: a client that reads it whole never
/// returns, so one that answers "too large" stopped reading.
struct Endless;

static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}

fn timeouts(bound: Duration) -> Timeouts {
    Timeouts { connect: bound, handshake: bound, request: bound }
}

fn client(ca_files: Vec<PathBuf>, resolve: Vec<Resolve>, proxy: Option<Proxy>) -> Client {
    Client::new(OutboundConfig { ca_files, resolve, proxy, timeouts: timeouts(Duration::from_secs(10)) }).expect("client")
}

#[tokio::test]
async fn trusts_a_ca_file_for_a_name_given_by_resolve() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], None);

    let got = client.get(&site.url("/ok"), LIMIT).await.expect("get");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));

    let headers = [("webhook-id", "msg_1"), ("content-type", "application/json")];
    let got = client.post(&site.url("/echo"), &headers, b"{\"a\":1}".to_vec(), LIMIT).await.expect("post");
    assert_eq!(got.body, b"{\"a\":1}");
    assert_eq!(got.header("x-webhook-id"), Some("msg_1"));
    assert_eq!(got.header("x-user-agent"), Some(USER_AGENT));
    // One connection per request: nothing carries from one to the next.
    assert_eq!(site.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_ca_file_alone_is_enough_on_a_machine_without_a_store() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let config = OutboundConfig { ca_files: vec![ca.pem.clone()], resolve: vec![site.resolve()], ..OutboundConfig::default() };
    let client = Client::with_system_certificates(config, Vec::new()).expect("client");
    assert_eq!(client.get(&site.url("/ok"), LIMIT).await.expect("get").body, b"hello");

    let nothing = Client::with_system_certificates(OutboundConfig::default(), Vec::new()).expect_err("nothing to trust");
    assert!(matches!(nothing, ConfigError::NoTrust), "{nothing}");
}

#[tokio::test]
async fn rejects_a_certificate_from_an_authority_not_given() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![other.pem.clone()], vec![site.resolve()], None);
    let error = client.get(&site.url("/ok"), LIMIT).await.expect_err("untrusted");
    assert!(matches!(&error, OutboundError::Tls { source: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer), .. }), "{error:?}");
    assert_eq!(error.retry(), Retry::Never);
    assert!(site.paths().is_empty(), "no request went out over the untrusted connection");
}

#[tokio::test]
async fn rejects_urls_other_than_https_before_connecting() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], None);
    let port = site.port;
    for url in [
        format!("http://{NAME}:{port}/ok"),
        format!("ftp://{NAME}:{port}/ok"),
        format!("//{NAME}:{port}/ok"),
        "/ok".to_owned(),
        format!("https://u:p@{NAME}:{port}/ok"),
    ] {
        let error = client.get(&url, LIMIT).await.expect_err(&url);
        assert!(matches!(error, OutboundError::Refused(_)), "{url}: {error:?}");
        assert_eq!(error.retry(), Retry::Never);
        assert!(!error.to_string().contains("/ok"), "the error does not repeat the URL: {error}");
    }
    let error = client.get(&format!("http://{NAME}:{port}/ok"), LIMIT).await.expect_err("http");
    assert_eq!(error.to_string(), "refused: only https:// URLs are fetched, not http://");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(site.connections.load(Ordering::SeqCst), 0, "nothing was connected");
}

#[tokio::test]
async fn rejects_headers_the_client_sets_or_cannot_send() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], None);
    for headers in [[("Host", "elsewhere.example")], [("content-length", "1")], [("bad header", "x")], [("x-ok", "line\nbreak")]] {
        let error = client.post(&site.url("/echo"), &headers, Vec::new(), LIMIT).await.expect_err("refused");
        assert!(matches!(error, OutboundError::Refused(_)), "{headers:?}: {error:?}");
    }
}

#[tokio::test]
async fn stops_reading_a_body_over_the_limit() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], None);

    assert_eq!(client.get(&site.url("/exact"), LIMIT).await.expect("at the limit").body.len(), LIMIT);
    let declared = client.get(&site.url("/declared"), LIMIT).await.expect_err("declared over the limit");
    assert!(matches!(declared, OutboundError::TooLarge { limit: LIMIT, .. }), "{declared:?}");

    // The endless body would keep a client that buffers it all until the request bound
    // (10 s here); this one gives up as soon as it has read past the limit.
    let started = Instant::now();
    let endless = client.get(&site.url("/endless"), LIMIT).await.expect_err("endless");
    assert!(matches!(endless, OutboundError::TooLarge { limit: LIMIT, .. }), "{endless:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(endless.retry(), Retry::Never);
}

#[tokio::test]
async fn a_silent_server_costs_at_most_the_bounds() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let bound = Duration::from_millis(500);
    let config = OutboundConfig { ca_files: vec![ca.pem.clone()], resolve: vec![site.resolve()], proxy: None, timeouts: timeouts(bound) };
    let client = Client::new(config).expect("client");

    // Connected and shaken hands, then no answer.
    let started = Instant::now();
    let error = client.get(&site.url("/silent"), LIMIT).await.expect_err("silent");
    assert!(matches!(error, OutboundError::Timeout { stage: Stage::Request, .. }), "{error:?}");
    assert!(started.elapsed() < bound + Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(error.retry(), Retry::Later);

    // A server that accepts the connection and never says a word of TLS.
    let mute = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let port = mute.local_addr().expect("address").port();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = mute.accept().await {
            held.push(tcp);
        }
    });
    let config = OutboundConfig {
        ca_files: vec![ca.pem.clone()],
        resolve: vec![format!("{NAME}:{port}:127.0.0.1").parse().expect("resolve")],
        proxy: None,
        timeouts: Timeouts { connect: bound, handshake: bound, request: Duration::from_secs(10) },
    };
    let started = Instant::now();
    let error = Client::new(config).expect("client").get(&format!("https://{NAME}:{port}/"), LIMIT).await.expect_err("mute");
    assert!(matches!(error, OutboundError::Timeout { stage: Stage::Handshake, .. }), "{error:?}");
    assert!(started.elapsed() < bound + Duration::from_secs(2), "took {:?}", started.elapsed());
    holding.abort();
}

#[tokio::test]
async fn statuses_are_errors_that_say_whether_to_retry() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], None);

    let gone = client.get(&site.url("/gone"), LIMIT).await.expect_err("gone");
    assert!(matches!(gone, OutboundError::Gone { .. }), "{gone:?}");
    assert_eq!(gone.retry(), Retry::Gone);

    let busy = client.get(&site.url("/busy"), LIMIT).await.expect_err("busy");
    assert!(matches!(busy, OutboundError::Status { status: 503, retry_after: Some(d), .. } if d == Duration::from_secs(7)), "{busy:?}");
    assert_eq!(busy.retry(), Retry::Later);

    let limited = client.get(&site.url("/limited"), LIMIT).await.expect_err("limited");
    assert_eq!(limited.retry(), Retry::Later, "{limited:?}");

    let missing = client.get(&site.url("/missing"), LIMIT).await.expect_err("missing");
    assert!(matches!(missing, OutboundError::Status { status: 404, .. }), "{missing:?}");
    assert_eq!(missing.retry(), Retry::Never);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], None);
    let error = client.get(&site.url("/redirect"), LIMIT).await.expect_err("redirect");
    assert!(matches!(error, OutboundError::Status { status: 302, .. }), "{error:?}");
    assert_eq!(error.retry(), Retry::Never);
    assert_eq!(site.paths(), ["/redirect"], "the Location was not asked for");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let ca = TestCa::new();
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let resolve = format!("{NAME}:{port}:127.0.0.1").parse().expect("resolve");
    let error = client(vec![ca.pem.clone()], vec![resolve], None).get(&format!("https://{NAME}:{port}/"), LIMIT).await.expect_err("closed");
    assert!(matches!(error, OutboundError::Connect { .. }), "{error:?}");
    assert_eq!(error.retry(), Retry::Later);
}

/// microsocks on a free loopback port, stopped by its PID when dropped.
struct Microsocks {
    child: std::process::Child,
    port: u16,
}

impl Microsocks {
    fn start() -> Microsocks {
        // The port is found free and then handed over, so another process can take it in
        // between; microsocks then exits, and another port is tried.
        for _ in 0..5 {
            let free = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let port = free.local_addr().expect("address").port();
            drop(free);
            let spawned = std::process::Command::new("microsocks")
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MICROSOCKS_MISSING}"),
                Err(e) => panic!("cannot start microsocks: {e}"),
            };
            let mut proxy = Microsocks { child, port };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(proxy.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    return proxy;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = proxy.child.kill();
        }
        panic!("microsocks did not start listening on the loopback");
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of the proxy that keeps the first bytes the client sends, so the
/// test can read the SOCKS5 request itself rather than trust the client's word.
struct Relay {
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(proxy) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await else { return };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_proxy, mut to_proxy) = proxy.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_proxy, &mut to_client).await;
                });
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from_client.read(&mut buf).await {
                        if n == 0 || to_proxy.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let mut kept = record.lock().expect("record");
                        let room = 1024usize.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    let _ = to_proxy.shutdown().await;
                });
            }
        });
        Relay { port, sent, task }
    }

    /// The destination of the first SOCKS5 CONNECT the client sent: its address type
    /// (1 IPv4, 3 a name, 4 IPv6), the address as text and the port.
    fn connect_request(&self) -> Option<(u8, String, u16)> {
        let sent = self.sent.lock().expect("sent").clone();
        // Greeting: version 5, the number of methods, the methods.
        let methods = usize::from(*sent.get(1)?);
        let request = sent.get(2 + methods..)?;
        let (&[5, 1, 0, kind], rest) = (<&[u8; 4]>::try_from(request.get(..4)?).ok()?, request.get(4..)?) else { return None };
        let (host, rest) = match kind {
            1 => (std::net::Ipv4Addr::from(<[u8; 4]>::try_from(rest.get(..4)?).ok()?).to_string(), rest.get(4..)?),
            3 => {
                let len = usize::from(*rest.first()?);
                (String::from_utf8(rest.get(1..1 + len)?.to_vec()).ok()?, rest.get(1 + len..)?)
            }
            4 => (std::net::Ipv6Addr::from(<[u8; 16]>::try_from(rest.get(..16)?).ok()?).to_string(), rest.get(16..)?),
            _ => return None,
        };
        Some((kind, host, u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)))
    }
}

#[tokio::test]
async fn through_socks5h_the_proxy_resolves_the_name() {
    let proxy = Microsocks::start();
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;

    // `localhost` is a name every machine's resolver knows, so the proxy can resolve it.
    // The client is given no override for it, and the relay shows it sent the name itself
    // (address type 3), not an address it looked up.
    let relay = Relay::start(proxy.port).await;
    let via: Proxy = format!("socks5h://127.0.0.1:{}", relay.port).parse().expect("proxy");
    let client = client(vec![ca.pem.clone()], Vec::new(), Some(via));
    let url = format!("https://localhost:{}/echo", site.port);
    let got = client.post(&url, &[("webhook-id", "msg_2")], b"through".to_vec(), LIMIT).await.expect("through the proxy");
    assert_eq!((got.body.as_slice(), got.header("x-webhook-id")), (&b"through"[..], Some("msg_2")));
    assert_eq!(relay.connect_request(), Some((3, "localhost".to_owned(), site.port)));
}

#[tokio::test]
async fn through_socks5h_an_override_is_sent_as_its_address() {
    let proxy = Microsocks::start();
    let ca = TestCa::new();
    let site = Site::start(ca.server()).await;
    // `marketer.test` resolves nowhere, the proxy included: the request only arrives
    // because the client handed the proxy the override's address.
    let relay = Relay::start(proxy.port).await;
    let via: Proxy = format!("socks5h://127.0.0.1:{}", relay.port).parse().expect("proxy");
    let client = client(vec![ca.pem.clone()], vec![site.resolve()], Some(via));
    assert_eq!(client.get(&site.url("/ok"), LIMIT).await.expect("through the proxy").body, b"hello");
    assert_eq!(relay.connect_request(), Some((1, "127.0.0.1".to_owned(), site.port)));
}

#[tokio::test]
async fn a_proxy_that_is_not_there_is_a_proxy_failure() {
    let ca = TestCa::new();
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let via: Proxy = format!("socks5h://127.0.0.1:{port}").parse().expect("proxy");
    let error = client(vec![ca.pem.clone()], Vec::new(), Some(via)).get("https://localhost:1/", LIMIT).await.expect_err("no proxy");
    assert!(matches!(error, OutboundError::Proxy { .. }), "{error:?}");
    assert_eq!(error.retry(), Retry::Later);
}

#[test]
fn resolve_values_parse_like_curls() {
    for (text, host, addr) in [
        ("marketer.test:443:127.0.0.1", "marketer.test", "127.0.0.1:443"),
        ("Marketer.Test:8443:[::1]", "marketer.test", "[::1]:8443"),
        ("inbox.example:1:::1", "inbox.example", "[::1]:1"),
    ] {
        let parsed: Resolve = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((parsed.host(), parsed.addr().to_string().as_str()), (host, addr), "{text}");
        assert!(parsed.matches(&host.to_ascii_uppercase(), parsed.port()), "names match in any case");
        assert!(!parsed.matches(host, parsed.port().wrapping_add(1)), "another port is not overridden");
    }
    for (text, expected) in [
        ("marketer.test", ResolveError::Shape),
        ("marketer.test:443", ResolveError::Shape),
        (":443:127.0.0.1", ResolveError::Host(String::new())),
        ("127.0.0.1:443:127.0.0.2", ResolveError::Host("127.0.0.1".to_owned())),
        ("bad_name!:443:127.0.0.1", ResolveError::Host("bad_name!".to_owned())),
        ("marketer.test:0:127.0.0.1", ResolveError::Port("0".to_owned())),
        ("marketer.test:+443:127.0.0.1", ResolveError::Port("+443".to_owned())),
        ("marketer.test:65536:127.0.0.1", ResolveError::Port("65536".to_owned())),
        ("marketer.test:443:", ResolveError::Addr(String::new())),
        ("marketer.test:443:localhost", ResolveError::Addr("localhost".to_owned())),
        ("marketer.test:443:[127.0.0.1]", ResolveError::Addr("[127.0.0.1]".to_owned())),
        ("marketer.test:443:[::1", ResolveError::Addr("[::1".to_owned())),
    ] {
        assert_eq!(text.parse::<Resolve>(), Err(expected), "{text}");
    }
}

#[test]
fn proxies_are_socks5h_only() {
    for (text, host, port) in
        [("socks5h://127.0.0.1:9050", "127.0.0.1", 9050), ("SOCKS5H://localhost:1080/", "localhost", 1080), ("socks5h://[::1]:9050", "::1", 9050)]
    {
        let parsed: Proxy = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((parsed.host(), parsed.port()), (host, port), "{text}");
    }
    for (text, expected) in [
        ("socks5://127.0.0.1:9050", ProxyError::LocalLookup),
        ("http://127.0.0.1:8080", ProxyError::Scheme("http".to_owned())),
        ("127.0.0.1:9050", ProxyError::Shape),
        ("socks5h://127.0.0.1", ProxyError::Shape),
        ("socks5h://user:secret@127.0.0.1:9050", ProxyError::Credentials),
        ("socks5h://127.0.0.1:x", ProxyError::Port("x".to_owned())),
        ("socks5h://:9050", ProxyError::Host(String::new())),
        ("socks5h://[nope]:9050", ProxyError::Host("[nope]".to_owned())),
    ] {
        assert_eq!(text.parse::<Proxy>(), Err(expected), "{text}");
    }
    let refused = "socks5h://user:secret@127.0.0.1:9050".parse::<Proxy>().expect_err("credentials").to_string();
    assert!(!refused.contains("secret"), "{refused}");
}

#[test]
fn rejects_ca_files_that_hold_no_usable_authority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let missing = dir.path().join("missing.pem");
    let empty = write("empty.pem", b"");
    let prose = write("prose.pem", b"not a certificate at all\n");
    let broken = write("broken.pem", b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    let garbage = write("garbage.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    for (path, kind) in [(&missing, "read"), (&empty, "empty"), (&prose, "empty"), (&broken, "pem"), (&garbage, "unusable")] {
        let error = config::trust(Vec::new(), std::slice::from_ref(path)).expect_err("refused");
        let matched = match kind {
            "read" => matches!(error, ConfigError::ReadCaFile { .. }),
            "empty" => matches!(error, ConfigError::CaEmpty { .. }),
            "pem" => matches!(error, ConfigError::CaNotPem { .. }),
            _ => matches!(error, ConfigError::CaUnusable { number: 1, .. }),
        };
        assert!(matched, "{}: {error:?}", path.display());
        assert!(error.to_string().contains(&path.display().to_string()), "the error names the file: {error}");
    }
}

#[test]
fn urls_become_targets() {
    let target = Target::parse("https://Marketer.Test/.well-known/optin-request.json").map_err(|e| e.to_string()).expect("parsed");
    assert_eq!((target.host.as_str(), target.port, target.path.as_str()), ("marketer.test", 443, "/.well-known/optin-request.json"));
    let target = Target::parse("https://[::1]:8443").map_err(|e| e.to_string()).expect("parsed");
    assert_eq!((target.host.as_str(), target.port, target.path.as_str(), target.authority.as_str()), ("::1", 8443, "/", "[::1]:8443"));
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    assert!(Target::parse(&format!("https://{addr}/inbox?grant=g")).is_ok());
}
