//! What the outbound client is built from: the certificates it trusts, the names it
//! resolves by hand (curl's `--resolve`), the proxy it goes through and its time bounds.
//! Every value is parsed here, once, so the client only ever holds valid ones.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName};
use rustls::RootCertStore;

/// Everything the outbound client needs, passed in explicitly. The default trusts the
/// system store only, resolves every name with the system resolver and goes direct.
#[derive(Clone, Debug, Default)]
pub struct OutboundConfig {
    /// PEM files of certificate authorities to trust besides the system store.
    pub ca_files: Vec<PathBuf>,
    /// Addresses to use for given names and ports instead of looking them up.
    pub resolve: Vec<Resolve>,
    /// A SOCKS5 proxy that every connection goes through, names resolved by the proxy.
    pub proxy: Option<Proxy>,
    /// How long each part of a request may take.
    pub timeouts: Timeouts,
}

/// The time bounds of one request. A marketer's server that stalls at any point costs the
/// agent at most these, so a slow or hostile site cannot hold a fetch or a push queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Looking the name up and opening the TCP connection (through the proxy, if any).
    pub connect: Duration,
    /// The TLS handshake, once connected.
    pub handshake: Duration,
    /// The whole request, from the first lookup to the last byte of the body.
    pub request: Duration,
}

impl Default for Timeouts {
    /// Generous enough for a proxy like Tor, which takes seconds to build a circuit.
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(20), handshake: Duration::from_secs(10), request: Duration::from_secs(60) }
    }
}

/// One `HOST:PORT:ADDR` override, as curl's `--resolve`: a connection to `HOST` on `PORT`
/// goes to `ADDR`, and TLS still checks the certificate against `HOST`. Other ports of the
/// same host are looked up as usual.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolve {
    host: String,
    port: u16,
    addr: IpAddr,
}

impl Resolve {
    /// The name overridden, lowercase.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port overridden.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where connections to the name and port go.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// Whether a connection to `host` (any case) on `port` uses this override.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host.eq_ignore_ascii_case(host)
    }
}

/// Why a `--resolve` value was refused; each names the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("expected HOST:PORT:ADDR, like marketer.example:443:127.0.0.1")]
    Shape,
    #[error("HOST `{0}` is not a DNS name")]
    Host(String),
    #[error("PORT `{0}` is not a number from 1 to 65535")]
    Port(String),
    #[error("ADDR `{0}` is not an IP address (an IPv6 one may be in brackets, like [::1])")]
    Addr(String),
}

impl FromStr for Resolve {
    type Err = ResolveError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // HOST holds no colon (it is a DNS name), PORT holds none, so everything after the
        // second colon is ADDR, which may itself be an IPv6 address full of colons.
        let mut parts = text.splitn(3, ':');
        let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ResolveError::Shape);
        };
        let host = dns_name(host).ok_or_else(|| ResolveError::Host(host.to_owned()))?;
        let port = parse_port(port).ok_or_else(|| ResolveError::Port(port.to_owned()))?;
        let unbracketed = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']'));
        let parsed = match unbracketed {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).ok(),
            None => addr.parse::<IpAddr>().ok(),
        };
        let addr = parsed.ok_or_else(|| ResolveError::Addr(addr.to_owned()))?;
        Ok(Resolve { host, port, addr })
    }
}

impl fmt::Display for Resolve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{}:{}:{a}", self.host, self.port),
            IpAddr::V6(a) => write!(f, "{}:{}:[{a}]", self.host, self.port),
        }
    }
}

/// A SOCKS5 proxy given as `socks5h://HOST:PORT`. The `h` is the point: the proxy, not
/// this machine, looks the marketer's name up, so neither the marketer nor the local
/// resolver learns where the person is or whom the agent talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
}

impl Proxy {
    /// The proxy's name or address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Why a `--push-proxy` value was refused. The value is never repeated whole: a proxy URL
/// can carry a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("expected socks5h://HOST:PORT, like socks5h://127.0.0.1:9050")]
    Shape,
    #[error("socks5:// would look names up on this machine; use socks5h://, so the proxy resolves them")]
    LocalLookup,
    #[error("`{0}://` proxies are not supported; use socks5h://HOST:PORT")]
    Scheme(String),
    #[error("a user name or password in the proxy URL is not supported")]
    Credentials,
    #[error("HOST `{0}` is neither a DNS name nor an IP address")]
    Host(String),
    #[error("PORT `{0}` is not a number from 1 to 65535")]
    Port(String),
}

impl FromStr for Proxy {
    type Err = ProxyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = text.split_once("://").ok_or(ProxyError::Shape)?;
        match scheme.to_ascii_lowercase().as_str() {
            "socks5h" => {}
            "socks5" => return Err(ProxyError::LocalLookup),
            other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) => {
                return Err(ProxyError::Scheme(other.to_owned()))
            }
            _ => return Err(ProxyError::Shape),
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(ProxyError::Credentials);
        }
        let (host, port) = rest.rsplit_once(':').ok_or(ProxyError::Shape)?;
        let port = parse_port(port).ok_or_else(|| ProxyError::Port(port.to_owned()))?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().map(|a| a.to_string()).map_err(|_| ProxyError::Host(host.to_owned()))?
        } else if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
            v4.to_string()
        } else {
            dns_name(host).ok_or_else(|| ProxyError::Host(host.to_owned()))?
        };
        Ok(Proxy { host, port })
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "socks5h://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "socks5h://{}:{}", self.host, self.port)
        }
    }
}

/// Why the client could not be built. Each is a startup error naming what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCaFile { path: PathBuf, source: std::io::Error },
    #[error("CA file {} is not PEM", path.display())]
    CaNotPem { path: PathBuf },
    #[error("CA file {} holds no certificate", path.display())]
    CaEmpty { path: PathBuf },
    #[error("CA file {}: certificate {number} cannot be trusted as an authority: {source}", path.display())]
    CaUnusable { path: PathBuf, number: usize, source: rustls::Error },
    #[error("no certificate authority to trust: the system store has none and no CA file was given")]
    NoTrust,
    #[error("cannot configure TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// The authorities the client trusts: `system` (the machine's store, possibly empty) plus
/// every certificate of every CA file. A CA file that cannot be used is an error rather
/// than skipped, because the person named it to reach a server that needs it.
pub(super) fn trust(system: Vec<CertificateDer<'static>>, ca_files: &[PathBuf]) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    // The system store holds what the distribution ships; one certificate rustls cannot
    // parse there is no reason to refuse the rest, nor anything the person can fix.
    let (_, ignored) = roots.add_parsable_certificates(system);
    if ignored > 0 {
        tracing::debug!(ignored, "system certificates rustls cannot use were skipped");
    }
    for path in ca_files {
        for (index, cert) in read_ca_file(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|source| ConfigError::CaUnusable { path: path.clone(), number: index + 1, source })?;
        }
    }
    if roots.is_empty() {
        return Err(ConfigError::NoTrust);
    }
    Ok(roots)
}

/// The machine's trusted certificates, or none where it has no store: the CA files given
/// may then be all there is.
pub(super) fn system_certificates() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::debug!(errors = found.errors.len(), "parts of the system certificate store could not be read");
    }
    found.certs
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadCaFile { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, pem::Error>>().map_err(|_| ConfigError::CaNotPem { path: path.to_owned() })?;
    if certs.is_empty() {
        return Err(ConfigError::CaEmpty { path: path.to_owned() });
    }
    Ok(certs)
}

/// A DNS name as TLS checks it, lowercase; `None` for anything else (an IP address too).
fn dns_name(text: &str) -> Option<String> {
    if text.parse::<IpAddr>().is_ok() {
        return None;
    }
    DnsName::try_from(text).ok().map(|name| name.as_ref().to_ascii_lowercase())
}

/// A port from 1 to 65535, digits only (`u16` parsing also takes a leading `+`).
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}
