//! A website under a made-up name, over real TLS on the loopback: a marketer's site that
//! `optin` fetches from, or an inbox it pushes to. Its certificate comes from a certificate
//! authority made for the test ([`TestCa`]), which `optin` trusts through `--ca-file`, and
//! `optin` reaches it through `--resolve NAME:PORT:127.0.0.1` ([`Site::resolve`]), so the
//! name is checked by TLS exactly as a real one would be and no DNS is involved.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::unique;

/// A certificate authority made for one test, its certificate in a PEM file as `--ca-file`
/// takes it. Every authority has its own name, so a certificate from another one fails as
/// untrusted rather than on a signature under the same issuer name.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    _dir: tempfile::TempDir,
    pem: PathBuf,
}

impl TestCa {
    /// A new authority; panics if it cannot be made.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("optin test CA {}-{}", std::process::id(), unique()));
        let cert = params.self_signed(&key).expect("a CA certificate");
        let dir = tempfile::Builder::new().prefix("optin-ca-").tempdir().expect("a temporary directory");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write the CA certificate");
        TestCa { cert, key, _dir: dir, pem }
    }

    /// The authority's certificate, PEM, for `--ca-file`.
    pub fn pem(&self) -> &Path {
        &self.pem
    }

    /// A server configuration whose certificate, issued by this authority, names `names`.
    pub fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("a leaf key");
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf parameters");
        let leaf = params.signed_by(&key, &self.cert, &self.key).expect("a leaf certificate");
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a server configuration");
        Arc::new(config)
    }

    /// A certificate for `names` issued by this authority and its private key (PKCS #8),
    /// written as PEM files `server.pem` and `server.key` in `dir`, for a server that is
    /// another program (a marketer's inbox in Python, say). Returns their paths.
    pub fn write_server_pem(&self, names: &[&str], dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("a leaf key");
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf parameters");
        let leaf = params.signed_by(&key, &self.cert, &self.key).expect("a leaf certificate");
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert_path, leaf.pem()).expect("write the server certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the server key");
        (cert_path, key_path)
    }

    /// A client configuration that trusts this authority and no other, to talk to a server
    /// whose certificate it issued.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.cert.der().to_vec())).expect("the CA certificate as a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

/// What the site answers on a path.
#[derive(Clone, Debug)]
pub struct Page {
    /// The status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Page {
    /// `200` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Page {
        Page { status: 200, headers: Vec::new(), body: body.into() }
    }

    /// `status` with an empty body.
    pub fn status(status: u16) -> Page {
        Page { status, headers: Vec::new(), body: Vec::new() }
    }

    /// This page with a header added.
    pub fn header(mut self, name: &str, value: &str) -> Page {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// One request the site received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lowercase, values as UTF-8 (lossy).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

type Pages = Arc<Mutex<HashMap<String, Page>>>;

/// A site serving [`Page`]s by path (404 elsewhere) over TLS on `127.0.0.1`, under `name`.
/// It records every request; dropping it stops it and every connection it has open.
pub struct Site {
    name: String,
    port: u16,
    pages: Pages,
    hits: Arc<Mutex<Vec<Hit>>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Site {
    /// Starts a site for `name` with a certificate from `ca`, on a free port of 127.0.0.1.
    /// Must be called inside a multi-threaded tokio runtime, which serves it while the test
    /// waits for `optin`.
    pub async fn start(ca: &TestCa, name: &str) -> Site {
        Site::start_with(ca.server(&[name]), name).await
    }

    /// Starts a site for `name` with the given TLS configuration (a certificate for another
    /// name, say).
    pub async fn start_with(tls: Arc<rustls::ServerConfig>, name: &str) -> Site {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("the bound address").port();
        let pages = Pages::default();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(listener, tls, pages.clone(), hits.clone(), connections.clone()));
        Site { name: name.to_owned(), port, pages, hits, connections, task }
    }

    /// Serves `page` at `path` from now on.
    pub fn put(&self, path: &str, page: Page) {
        self.pages.lock().expect("the pages").insert(path.to_owned(), page);
    }

    /// The name the site answers for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `NAME:PORT`, as a URL's authority.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }

    /// `https://NAME:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }

    /// `NAME:PORT:127.0.0.1`, for `--resolve`.
    pub fn resolve(&self) -> String {
        format!("{}:127.0.0.1", self.authority())
    }

    /// Every request received so far, in order.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("the hits").clone()
    }

    /// How many connections were accepted, handshakes that failed included.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Accepts connections until the site is dropped. Each connection's task lives in a
/// [`JoinSet`] owned here, so aborting this task ends them all.
async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, pages: Pages, hits: Arc<Mutex<Vec<Hit>>>, connections: Arc<AtomicUsize>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut open = JoinSet::new();
    while let Ok((tcp, _)) = listener.accept().await {
        connections.fetch_add(1, Ordering::SeqCst);
        while open.try_join_next().is_some() {}
        let (acceptor, pages, hits) = (acceptor.clone(), pages.clone(), hits.clone());
        open.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request| answer(request, pages.clone(), hits.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(request: hyper::Request<Incoming>, pages: Pages, hits: Arc<Mutex<Vec<Hit>>>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let headers = parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    hits.lock().expect("the hits").push(Hit { method: parts.method.to_string(), path: path.clone(), headers, body });
    let page = pages.lock().expect("the pages").get(parts.uri.path()).cloned().unwrap_or_else(|| Page::status(404));
    let mut response = hyper::Response::new(Full::new(Bytes::from(page.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(page.status).expect("a status");
    for (name, value) in &page.headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        response.headers_mut().append(name, hyper::header::HeaderValue::from_str(value).expect("a header value"));
    }
    Ok(response)
}
