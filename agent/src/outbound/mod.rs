//! Outbound HTTPS: the one client the agent uses to reach a marketer, to fetch a consent
//! request it publishes and to push signed slices to its inbox. The only module that knows
//! the client side of HTTP, SOCKS and the system's trust store. `core` never uses it: when
//! to connect is the business of the way in that the person asked through.
//!
//! What it does, and why:
//! - HTTPS only. An `http://` URL is refused before anything is sent, since whatever the
//!   agent sends or receives out there is about the person or decides what leaves.
//! - TLS by rustls, trusting the system store plus each CA file given (`--ca-file`), so a
//!   test or a private deployment adds its own authority without replacing the rest.
//! - Names are resolved by the system, by an override like curl's `--resolve`, or, through
//!   a `socks5h://` proxy, by the proxy alone: then no lookup of the marketer's name happens
//!   here at all. An override still wins through a proxy (the proxy is given its address),
//!   because the person set it; it makes no lookup either.
//! - Bounded: connecting, the TLS handshake and the whole request each have a time limit;
//!   a response body over the caller's limit stops the read at once (a declared length
//!   over it is refused before reading); the response head is capped too.
//! - Redirects are not followed: a 3xx is an error like any other status. The URLs this
//!   client is given are fixed by protocol (a domain's well-known request, an inbox a
//!   grant names); following one would let a site send the agent, and a pushed slice, to a
//!   place the person never saw.
//! - No cookies, no connection reuse: each request is one connection, closed afterwards,
//!   so nothing carries from one request, or one marketer, to the next.

mod config;

#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use config::{ConfigError, OutboundConfig, Proxy, ProxyError, Resolve, ResolveError, Timeouts};

/// The largest response head (status line and headers) read. Nothing this client fetches
/// needs more, and hyper's own default is far larger.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Sent on every request: the marketer knows an optin agent is calling anyway, and one
/// fixed value says nothing about which person's.
const USER_AGENT: &str = concat!("optin/", env!("CARGO_PKG_VERSION"));

/// A failed request. What the push queue does with each is [`OutboundError::retry`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// Nothing was sent: the URL is not an absolute `https://` URL, or a header is invalid.
    #[error("refused: {0}")]
    Refused(String),
    /// The name did not resolve, or no address of it accepted a connection.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect { host: String, port: u16, source: std::io::Error },
    /// The proxy could not be reached, or could not reach the marketer.
    #[error("through the proxy, cannot connect to {host}:{port}: {source}")]
    Proxy { host: String, port: u16, source: Box<dyn StdError + Send + Sync> },
    /// The TLS handshake failed: most often the certificate is not trusted or not for the
    /// name (`rustls::Error::InvalidCertificate`).
    #[error("TLS with {host} failed: {source}")]
    Tls { host: String, source: rustls::Error },
    /// A part of the request took longer than its bound.
    #[error("{host}: {stage} took longer than {waited:?}")]
    Timeout { host: String, stage: Stage, waited: Duration },
    /// The connection broke or the server spoke broken HTTP once connected.
    #[error("HTTP with {host} failed: {source}")]
    Http { host: String, source: Box<dyn StdError + Send + Sync> },
    /// The response body is over the caller's limit; reading stopped there.
    #[error("{host} sent more than {limit} bytes")]
    TooLarge { host: String, limit: usize },
    /// `410 Gone`: the marketer says this URL will never take anything again.
    #[error("{host} answered 410 Gone")]
    Gone { host: String },
    /// Any other status outside 2xx, a redirect included.
    #[error("{host} answered {status}")]
    Status {
        host: String,
        status: u16,
        /// The `Retry-After` the server sent, in its delta-seconds form.
        retry_after: Option<Duration>,
    },
}

/// The part of a request that ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Resolving and connecting (through the proxy, if any).
    Connect,
    /// The TLS handshake.
    Handshake,
    /// The whole request.
    Request,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Handshake => "the TLS handshake",
            Stage::Request => "the request",
        })
    }
}

/// What a sender does after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The failure may pass: send again later.
    Later,
    /// Sending the same thing again would fail the same way.
    Never,
    /// The receiver is gone for good: stop sending it anything.
    Gone,
}

impl OutboundError {
    /// Whether sending again can help. Connection, proxy and HTTP failures, timeouts, 5xx
    /// and 429 may pass, so they are retried. A TLS failure (an untrusted or wrong
    /// certificate) is a configuration or an attack and does not fix itself; a refused URL,
    /// a body over the limit and other statuses (4xx, redirects) would be answered the
    /// same again. 410 Gone is its own case: the receiver asks never to be sent anything
    /// more (Standard Webhooks), so a push queue drops everything queued for it.
    pub fn retry(&self) -> Retry {
        match self {
            OutboundError::Connect { .. } | OutboundError::Proxy { .. } | OutboundError::Timeout { .. } | OutboundError::Http { .. } => Retry::Later,
            OutboundError::Status { status, .. } if *status == 429 || (500..600).contains(status) => Retry::Later,
            OutboundError::Gone { .. } => Retry::Gone,
            OutboundError::Refused(_) | OutboundError::Tls { .. } | OutboundError::TooLarge { .. } | OutboundError::Status { .. } => Retry::Never,
        }
    }
}

/// A 2xx response, its body read in full within the limit.
#[derive(Debug)]
pub struct Response {
    /// The status, from 200 to 299.
    pub status: u16,
    headers: hyper::HeaderMap,
    /// The body, at most the limit the caller gave.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of a header, if present once or more (the first) and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The outbound HTTPS client. Built once at startup from an [`OutboundConfig`]; cheap to
/// share by reference.
pub struct Client {
    tls: TlsConnector,
    resolve: Vec<Resolve>,
    proxy: Option<Proxy>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("resolve", &self.resolve).field("proxy", &self.proxy).field("timeouts", &self.timeouts).finish_non_exhaustive()
    }
}

/// Where one request goes, parsed from its URL.
struct Target {
    /// The name or address, lowercase, an IPv6 address without brackets.
    host: String,
    port: u16,
    /// What the `Host` header says: the URL's authority as written.
    authority: String,
    /// The path and query, `/` when the URL has none.
    path: String,
    /// What the certificate must name.
    server_name: ServerName<'static>,
}

impl Target {
    /// Parses an absolute `https://` URL. Errors never repeat the URL: its path or query
    /// may hold a token.
    fn parse(url: &str) -> Result<Target, OutboundError> {
        let uri: Uri = url.parse().map_err(|_| OutboundError::Refused("not a URL".to_owned()))?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {}
            Some(scheme) => return Err(OutboundError::Refused(format!("only https:// URLs are fetched, not {scheme}://"))),
            None => return Err(OutboundError::Refused("not an absolute https:// URL".to_owned())),
        }
        let authority = uri.authority().ok_or_else(|| OutboundError::Refused("the URL has no host".to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(OutboundError::Refused("a user name or password in the URL is not supported".to_owned()));
        }
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_ascii_lowercase();
        if host.is_empty() {
            return Err(OutboundError::Refused("the URL has no host".to_owned()));
        }
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| OutboundError::Refused(format!("`{host}` is not a name a certificate can be checked against")))?;
        let port = authority.port_u16().unwrap_or(443);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target { host, port, authority: authority.as_str().to_owned(), path: path.to_owned(), server_name })
    }
}

/// Either kind of connection, so the TLS and HTTP steps are written once.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    /// Builds the client: loads the system's trusted certificates and each CA file.
    pub fn new(config: OutboundConfig) -> Result<Client, ConfigError> {
        Client::with_system_certificates(config, config::system_certificates())
    }

    /// Builds the client over the given system store, so a machine without one can be
    /// tried.
    fn with_system_certificates(config: OutboundConfig, system: Vec<CertificateDer<'static>>) -> Result<Client, ConfigError> {
        let roots = config::trust(system, &config.ca_files)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The HTTP side speaks HTTP/1.1 only: one request per connection needs nothing more.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session links this connection to an earlier one.
        tls.resumption = rustls::client::Resumption::disabled();
        Ok(Client { tls: TlsConnector::from(Arc::new(tls)), resolve: config.resolve, proxy: config.proxy, timeouts: config.timeouts })
    }

    /// `GET url`; the body of a 2xx response, at most `max_bytes` of it.
    pub async fn get(&self, url: &str, max_bytes: usize) -> Result<Response, OutboundError> {
        self.send(Method::GET, url, &[], Vec::new(), max_bytes).await
    }

    /// `POST url` with `headers` and `body`; the body of a 2xx response, at most
    /// `max_bytes` of it. `Host`, `Content-Length`, `Connection` and `User-Agent` are the
    /// client's to set.
    pub async fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>, max_bytes: usize) -> Result<Response, OutboundError> {
        self.send(Method::POST, url, headers, body, max_bytes).await
    }

    async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>, max_bytes: usize) -> Result<Response, OutboundError> {
        let target = Target::parse(url)?;
        let request = request(method, &target, headers, body)?;
        let bound = self.timeouts.request;
        match tokio::time::timeout(bound, self.exchange(&target, request, max_bytes)).await {
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout { host: target.host, stage: Stage::Request, waited: bound }),
        }
    }

    async fn exchange(&self, target: &Target, request: hyper::Request<Full<Bytes>>, max_bytes: usize) -> Result<Response, OutboundError> {
        let bound = self.timeouts.connect;
        let connecting = async {
            match &self.proxy {
                Some(proxy) => self.connect_through(proxy, target).await.map(|s| Box::new(s) as Box<dyn Io>),
                None => self.connect_direct(target).await.map(|s| Box::new(s) as Box<dyn Io>),
            }
        };
        let stream = tokio::time::timeout(bound, connecting).await.map_err(|_| OutboundError::Timeout {
            host: target.host.clone(),
            stage: Stage::Connect,
            waited: bound,
        })??;
        let tls = self.handshake(target, stream).await?;
        http_exchange(target, tls, request, max_bytes).await
    }

    /// The address an override gives `target`, if one does.
    fn overridden(&self, target: &Target) -> Option<SocketAddr> {
        self.resolve.iter().find(|r| r.matches(&target.host, target.port)).map(Resolve::addr)
    }

    async fn connect_direct(&self, target: &Target) -> Result<TcpStream, OutboundError> {
        let failed = |source| OutboundError::Connect { host: target.host.clone(), port: target.port, source };
        let addrs: Vec<SocketAddr> = if let Ok(ip) = target.host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, target.port)]
        } else if let Some(addr) = self.overridden(target) {
            vec![addr]
        } else {
            tokio::net::lookup_host((target.host.as_str(), target.port)).await.map_err(failed)?.collect()
        };
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(failed(last))
    }

    async fn connect_through(&self, proxy: &Proxy, target: &Target) -> Result<tokio_socks::tcp::Socks5Stream<TcpStream>, OutboundError> {
        let failed = |source: Box<dyn StdError + Send + Sync>| OutboundError::Proxy { host: target.host.clone(), port: target.port, source };
        // The proxy's own address is looked up here (it is usually a loopback address);
        // tokio-socks would do it with a blocking call.
        let proxy_addrs: Vec<SocketAddr> = tokio::net::lookup_host((proxy.host(), proxy.port())).await.map_err(|e| failed(Box::new(e)))?.collect();
        // A name goes to the proxy as a name (SOCKS5 address type 3), which it resolves.
        let to: tokio_socks::TargetAddr<'_> = match (target.host.parse::<IpAddr>(), self.overridden(target)) {
            (Ok(ip), _) => tokio_socks::TargetAddr::Ip(SocketAddr::new(ip, target.port)),
            (Err(_), Some(addr)) => tokio_socks::TargetAddr::Ip(addr),
            (Err(_), None) => tokio_socks::TargetAddr::Domain(target.host.as_str().into(), target.port),
        };
        tokio_socks::tcp::Socks5Stream::connect(proxy_addrs.as_slice(), to).await.map_err(|e| failed(Box::new(e)))
    }

    async fn handshake(&self, target: &Target, stream: Box<dyn Io>) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>, OutboundError> {
        let bound = self.timeouts.handshake;
        match tokio::time::timeout(bound, self.tls.connect(target.server_name.clone(), stream)).await {
            Err(_) => Err(OutboundError::Timeout { host: target.host.clone(), stage: Stage::Handshake, waited: bound }),
            Ok(Ok(tls)) => Ok(tls),
            // tokio-rustls carries rustls's own error inside the I/O error; anything else is
            // the connection itself failing mid-handshake.
            Ok(Err(e)) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(tls) => Err(OutboundError::Tls { host: target.host.clone(), source: tls.clone() }),
                None => Err(OutboundError::Connect { host: target.host.clone(), port: target.port, source: e }),
            },
        }
    }
}

/// The request as sent: origin-form path, `Host`, a closed connection afterwards, the
/// caller's headers checked.
fn request(method: Method, target: &Target, headers: &[(&str, &str)], body: Vec<u8>) -> Result<hyper::Request<Full<Bytes>>, OutboundError> {
    const OURS: [&str; 5] = ["host", "content-length", "transfer-encoding", "connection", "user-agent"];
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in headers {
        let bad = || OutboundError::Refused(format!("`{name}` is not a header this client can send"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        if OURS.contains(&name.as_str()) {
            return Err(bad());
        }
        // The value is not repeated in the error: it may be a signature or a token.
        let value = HeaderValue::from_str(value).map_err(|_| OutboundError::Refused(format!("the value of header `{name}` is not valid")))?;
        builder = builder.header(name, value);
    }
    builder.body(Full::new(Bytes::from(body))).map_err(|_| OutboundError::Refused("the request cannot be built".to_owned()))
}

/// Sends `request` over `io` with HTTP/1.1 and reads a 2xx body within `max_bytes`.
async fn http_exchange<S>(target: &Target, io: S, request: hyper::Request<Full<Bytes>>, max_bytes: usize) -> Result<Response, OutboundError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let broken = |e: hyper::Error| OutboundError::Http { host: target.host.clone(), source: Box::new(e) };
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new().max_buf_size(MAX_HEAD_BYTES).handshake(TokioIo::new(io)).await.map_err(broken)?;
    let asking = async {
        let response = sender.send_request(request).await.map_err(broken)?;
        read_response(target, response, max_bytes).await
    };
    // The connection is driven here, beside the request, rather than in a spawned task:
    // when the answer is read (or refused), returning drops both and closes the socket.
    tokio::pin!(asking, connection);
    tokio::select! {
        result = &mut asking => result,
        // The connection ended first (the server closed it after its answer, or broke it):
        // the answer, or hyper's error for its absence, is already in reach of `asking`.
        _ = &mut connection => asking.await,
    }
}

async fn read_response(target: &Target, response: hyper::Response<hyper::body::Incoming>, max_bytes: usize) -> Result<Response, OutboundError> {
    let host = || target.host.clone();
    let status = response.status();
    if status == StatusCode::GONE {
        return Err(OutboundError::Gone { host: host() });
    }
    if !status.is_success() {
        let retry_after = response.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(delta_seconds);
        return Err(OutboundError::Status { host: host(), status: status.as_u16(), retry_after });
    }
    let declared = response.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(OutboundError::TooLarge { host: host(), limit: max_bytes });
    }
    let (parts, mut body) = response.into_parts();
    let mut read = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OutboundError::Http { host: host(), source: Box::new(e) })?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > max_bytes {
                return Err(OutboundError::TooLarge { host: host(), limit: max_bytes });
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(Response { status: status.as_u16(), headers: parts.headers, body: read })
}

/// `Retry-After` in seconds; its HTTP-date form is not worth a date parser here.
fn delta_seconds(value: &str) -> Option<Duration> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().map(Duration::from_secs)
}
