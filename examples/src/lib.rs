//! # optin-examples
//!
//! What a marketer needs to talk to an optin agent: a small HTTPS client that trusts exactly
//! the certificate named in the grant bundle ([`PinnedClient`]), and [`fetch_slices`], which
//! follows `next_cursor` pages and verifies every slice against the bundle.
//!
//! ## Why pinning instead of the system trust store
//!
//! An agent runs on a person's own machine with a self-signed certificate; no public
//! authority vouches for it, and none should: the person hands the marketer a grant bundle
//! holding the SHA-256 of that exact certificate. Trusting that one certificate is stronger
//! than trusting every authority in a trust store: a certificate issued by anyone else, for
//! any name, is refused. The handshake is still checked in full: the server must prove it
//! holds the pinned certificate's private key by signing the handshake, verified here with
//! the ring provider. What pinning leaves out on purpose is the host name and the validity
//! period: the pin already names one key, wherever the agent listens, for as long as the
//! person keeps it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use optin_protocol::bundle::GrantBundle;
use optin_protocol::hex;
use optin_protocol::problem::Problem;
use optin_protocol::slice::{SliceClaims, SliceError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long one request may take, connection and handshake included, unless
/// [`PinnedClient::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Which HTTP version to offer in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 (`http/1.1`), the default.
    Http1,
    /// HTTP/2 (`h2`).
    Http2,
}

/// Why a request failed before an HTTP response arrived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent URL is not `https://host:port`.
    #[error("agent url `{0}`: expected https://host:port")]
    Url(String),
    /// The pin is not 64 hex digits.
    #[error("certificate pin: expected 64 hex digits")]
    Pin,
    /// A header value could not be sent (a token with control characters, say).
    #[error("invalid header value for {0}")]
    Header(&'static str),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The TLS handshake failed, including a certificate that is not the pinned one.
    #[error("TLS handshake with {addr} failed: {error}")]
    Tls {
        /// Where.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The server did not agree on the protocol asked for.
    #[error("the server negotiated {found}, not {expected}")]
    Alpn {
        /// What was offered.
        expected: &'static str,
        /// What came back.
        found: String,
    },
    /// The HTTP exchange failed (including a body cut off by the server).
    #[error("HTTP: {0}")]
    Http(hyper::Error),
    /// The request took longer than the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Setting up rustls failed.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

// The conversions are written out rather than derived with `#[from]`, which would also make
// the wrapped error the `source`: its text is already in the message, and error reports
// that print the chain would repeat it.
impl From<hyper::Error> for ClientError {
    fn from(error: hyper::Error) -> ClientError {
        ClientError::Http(error)
    }
}

impl From<rustls::Error> for ClientError {
    fn from(error: rustls::Error) -> ClientError {
        ClientError::Config(error)
    }
}

/// A response, read in full.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version it came over.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as a problem, if it is one.
    pub fn problem(&self) -> Option<Problem> {
        let is_problem = self.header(CONTENT_TYPE.as_str()).is_some_and(|ct| ct.starts_with(optin_protocol::problem::CONTENT_TYPE));
        if is_problem {
            serde_json::from_slice(&self.body).ok()
        } else {
            None
        }
    }
}

/// An HTTPS client that trusts exactly one certificate, named by its SHA-256.
///
/// Each request opens its own connection: marketers fetch a few pages now and then, and a
/// fresh connection per request keeps the client free of pool state.
#[derive(Clone)]
pub struct PinnedClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    addr: String,
    authority: String,
    protocol: Protocol,
    timeout: Duration,
}

impl std::fmt::Debug for PinnedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedClient").field("addr", &self.addr).field("protocol", &self.protocol).finish_non_exhaustive()
    }
}

/// The TLS client settings of a [`PinnedClient`]: only the certificate whose SHA-256 is
/// `cert_sha256_hex` is accepted, and only `protocol` is offered in ALPN. For callers that
/// bring their own socket.
pub fn pinned_tls_config(cert_sha256_hex: &str, protocol: Protocol) -> Result<rustls::ClientConfig, ClientError> {
    let pin = parse_pin(cert_sha256_hex).ok_or(ClientError::Pin)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate { sha256: pin, provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        // rustls calls every custom verifier "dangerous"; this one is stricter than the
        // default, see the module documentation.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn(protocol).as_bytes().to_vec()];
    Ok(config)
}

impl PinnedClient {
    /// A client for the agent at `agent_url` (`https://host:port`) that accepts only the
    /// certificate whose DER has SHA-256 `cert_sha256_hex`. Speaks HTTP/1.1.
    pub fn new(agent_url: &str, cert_sha256_hex: &str) -> Result<PinnedClient, ClientError> {
        PinnedClient::with_protocol(agent_url, cert_sha256_hex, Protocol::Http1)
    }

    /// Like [`PinnedClient::new`], offering only `protocol` in ALPN.
    pub fn with_protocol(agent_url: &str, cert_sha256_hex: &str, protocol: Protocol) -> Result<PinnedClient, ClientError> {
        let (host, port) = split_url(agent_url).ok_or_else(|| ClientError::Url(agent_url.chars().take(128).collect()))?;
        let config = pinned_tls_config(cert_sha256_hex, protocol)?;
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Url(agent_url.chars().take(128).collect()))?,
        };
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(PinnedClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            addr: authority.clone(),
            authority,
            protocol,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> PinnedClient {
        self.timeout = timeout;
        self
    }

    /// `GET path_and_query`, with `Authorization: Bearer` when a token is given.
    pub async fn get(&self, path_and_query: &str, bearer: Option<&str>) -> Result<Response, ClientError> {
        self.send(Method::GET, path_and_query, bearer, None).await
    }

    /// `POST path` with a body of `content_type`.
    pub async fn post(&self, path: &str, bearer: Option<&str>, content_type: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        self.send(Method::POST, path, bearer, Some((content_type, body))).await
    }

    /// A request with any `Authorization` header value, or none: for clients (and tests)
    /// that need to send something other than a bearer token.
    pub async fn get_with_authorization(&self, path_and_query: &str, authorization: Option<&str>) -> Result<Response, ClientError> {
        let value = authorization.map(|a| HeaderValue::from_str(a).map_err(|_| ClientError::Header("authorization"))).transpose()?;
        self.request(Method::GET, path_and_query, value, None).await
    }

    async fn send(&self, method: Method, path: &str, bearer: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Result<Response, ClientError> {
        let authorization = bearer.map(|t| HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| ClientError::Header("authorization"))).transpose()?;
        self.request(method, path, authorization, body).await
    }

    async fn request(&self, method: Method, path: &str, authorization: Option<HeaderValue>, body: Option<(&str, Vec<u8>)>) -> Result<Response, ClientError> {
        let mut builder = Request::builder().method(method);
        builder = match self.protocol {
            // HTTP/1.1 takes the origin form and a Host header; HTTP/2 the absolute form,
            // from which hyper makes the :authority pseudo-header.
            Protocol::Http1 => builder.uri(path).header(HOST, &self.authority),
            Protocol::Http2 => builder.uri(format!("https://{}{path}", self.authority)).version(Version::HTTP_2),
        };
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                let value = HeaderValue::from_str(content_type).map_err(|_| ClientError::Header("content-type"))?;
                builder = builder.header(CONTENT_TYPE, value);
                bytes
            }
            None => Vec::new(),
        };
        let request = builder.body(Full::new(Bytes::from(bytes))).map_err(|_| ClientError::Url(path.chars().take(128).collect()))?;
        tokio::time::timeout(self.timeout, self.exchange(request)).await.map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// A TLS connection to the pinned agent, before any HTTP: for programs that speak HTTP
    /// themselves (or, in tests, not at all).
    pub async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let tcp = TcpStream::connect(&self.addr).await.map_err(|error| ClientError::Connect { addr: self.addr.clone(), error })?;
        let _ = tcp.set_nodelay(true);
        self.connector.connect(self.server_name.clone(), tcp).await.map_err(|error| ClientError::Tls { addr: self.addr.clone(), error })
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let tls = self.connect().await?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
        let expected = alpn(self.protocol);
        if negotiated.as_deref() != Some(expected) {
            return Err(ClientError::Alpn { expected, found: negotiated.unwrap_or_else(|| "nothing".into()) });
        }
        let io = TokioIo::new(tls);
        let response = match self.protocol {
            Protocol::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                // The connection task ends when the response is read and the sender dropped.
                let driver = tokio::spawn(conn);
                let response = sender.send_request(request).await?;
                let response = read(response).await;
                drop(sender);
                driver.abort();
                response?
            }
            Protocol::Http2 => {
                let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                let driver = tokio::spawn(conn);
                let response = sender.send_request(request).await?;
                let response = read(response).await;
                drop(sender);
                driver.abort();
                response?
            }
        };
        Ok(response)
    }
}

async fn read(response: hyper::Response<hyper::body::Incoming>) -> Result<Response, ClientError> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    Ok(Response { status: parts.status, version: parts.version, headers: parts.headers, body })
}

fn alpn(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http1 => "http/1.1",
        Protocol::Http2 => "h2",
    }
}

/// `https://host:port[/]` into host and port; IPv6 hosts in brackets.
fn split_url(url: &str) -> Option<(&str, u16)> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return None;
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, port) = v6.split_once("]:")?;
            (host, port)
        }
        None => rest.rsplit_once(':')?,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

fn parse_pin(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Accepts exactly the certificate with a given SHA-256, and checks handshake signatures
/// with it. See the module documentation for why this is safe.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = optin_protocol::sha256(end_entity.as_ref());
        // Constant time, though the pin is not secret: no reason to leak how close a
        // certificate came.
        let difference = digest.iter().zip(self.sha256.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference == 0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why fetching slices failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No HTTP answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent refused, with a problem document.
    #[error("the agent refused ({}): {}", .0.status, .0.detail)]
    Refused(Problem),
    /// The agent answered something that is neither a slice nor a problem.
    #[error("unexpected answer {status}: {body}")]
    Unexpected {
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A slice did not verify against the bundle.
    #[error("a slice did not verify: {0}")]
    Slice(SliceError),
    /// The agent kept sending pages.
    #[error("more than {0} pages")]
    TooManyPages(usize),
}

/// Most pages [`fetch_slices`] follows.
pub const MAX_PAGES: usize = 10_000;

/// Fetches `GET /v1/slice?query` with the bundle's token and every following page, and
/// verifies each slice with [`GrantBundle::verify_slice`]. `query` is a query string
/// without `?` and without `cursor` (empty for everything the grant allows).
pub async fn fetch_slices(client: &PinnedClient, bundle: &GrantBundle, query: &str) -> Result<Vec<(String, SliceClaims)>, FetchError> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        if pages.len() == MAX_PAGES {
            return Err(FetchError::TooManyPages(MAX_PAGES));
        }
        let response = client.get(&slice_path(query, cursor.as_deref()), Some(&bundle.token)).await?;
        if response.status != StatusCode::OK {
            return Err(match response.problem() {
                Some(problem) => FetchError::Refused(problem),
                None => FetchError::Unexpected { status: response.status.as_u16(), body: response.text().chars().take(200).collect() },
            });
        }
        let jws = String::from_utf8(response.body).map_err(|_| FetchError::Unexpected { status: 200, body: "a body that is not UTF-8".into() })?;
        let claims = bundle.verify_slice(&jws).map_err(FetchError::Slice)?;
        cursor = claims.next_cursor.clone();
        pages.push((jws, claims));
        if cursor.is_none() {
            return Ok(pages);
        }
    }
}

/// The path and query of `GET /v1/slice`: the caller's `query` as given, then the cursor.
/// A cursor is opaque, so it is form-encoded whatever it holds: the agent reads the query as
/// `application/x-www-form-urlencoded`, where a bare `+` would come back as a space.
fn slice_path(query: &str, cursor: Option<&str>) -> String {
    let mut pairs = form_urlencoded::Serializer::for_suffix(query.to_owned(), 0);
    if let Some(cursor) = cursor {
        pairs.append_pair("cursor", cursor);
    }
    match pairs.finish() {
        all if all.is_empty() => "/v1/slice".to_owned(),
        all => format!("/v1/slice?{all}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_agent_urls() {
        for (url, expected) in [
            ("https://127.0.0.1:7676", Some(("127.0.0.1", 7676))),
            ("https://127.0.0.1:7676/", Some(("127.0.0.1", 7676))),
            ("https://[::1]:443", Some(("::1", 443))),
            ("https://agent.example:8443", Some(("agent.example", 8443))),
        ] {
            assert_eq!(split_url(url), expected, "{url}");
        }
    }

    #[test]
    fn rejects_bad_agent_urls() {
        for url in ["http://127.0.0.1:7676", "https://127.0.0.1", "https://127.0.0.1:0", "https://:1", "https://a:1/v1", "https://u@a:1"] {
            assert_eq!(split_url(url), None, "{url}");
        }
    }

    #[test]
    fn rejects_bad_pins() {
        for pin in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65), &"+a".repeat(32), &"é".repeat(32)] {
            assert!(parse_pin(pin).is_none(), "{pin}");
        }
        assert_eq!(parse_pin(&"ab".repeat(32)), Some([0xab; 32]));
    }

    #[test]
    fn slice_paths_carry_the_query_then_the_cursor() {
        for (query, cursor, path) in [
            ("", None, "/v1/slice"),
            ("kinds=search", None, "/v1/slice?kinds=search"),
            ("", Some("AAEC-_x"), "/v1/slice?cursor=AAEC-_x"),
            ("kinds=search&limit=2", Some("AAEC"), "/v1/slice?kinds=search&limit=2&cursor=AAEC"),
        ] {
            assert_eq!(slice_path(query, cursor), path, "{query:?} {cursor:?}");
        }
    }

    #[test]
    fn cursors_decode_back_to_themselves() {
        // The agent's cursors are base64url today, but a cursor is opaque: whatever it holds
        // must reach the agent unchanged through a form decoder. On the wire a space is `+`,
        // so a `+` of the cursor has to be escaped.
        for (cursor, on_the_wire) in
            [("a b+c/=", "a+b%2Bc%2F%3D"), ("AAEC-_.x", "AAEC-_.x"), ("a~b", "a%7Eb"), ("a&cursor=b", "a%26cursor%3Db"), ("%2B", "%252B"), ("é", "%C3%A9")]
        {
            let path = slice_path("kinds=search", Some(cursor));
            assert_eq!(path, format!("/v1/slice?kinds=search&cursor={on_the_wire}"), "{cursor:?}");
            let query = path.split_once('?').map_or("", |(_, query)| query);
            let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            assert_eq!(pairs, [("kinds".to_owned(), "search".to_owned()), ("cursor".to_owned(), cursor.to_owned())], "{path}");
        }
    }
}
