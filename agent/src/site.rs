//! A marketer's site as the person asks about it: the [`Site`] they name (`optin requests
//! fetch DOMAIN`, or the page the extension's popup is on), fetching the consent requests it
//! publishes at its well-known URL through [`crate::outbound`], and adding each through the
//! [`crate::session`], where the agent verifies it against the domain.
//!
//! The CLI and the native host both call this, so a request fetched from the browser meets
//! exactly the checks of one fetched from a terminal, and neither can skip one. It connects
//! only when one of them calls it, because the person asked: the running agent never reaches
//! out on its own to learn of a request, since a fetch tells the marketer the person's
//! address and that they are looking.
//!
//! How the client is set up is the caller's: flags for the CLI, the `OPTIN_*` variables
//! below for the native host, which the browser starts with no flags. Both read the same
//! values with the same parsers.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use optin_protocol::request::{self as protocol_request, limits, shown, HttpsUrl, WELL_KNOWN_PATH};

use crate::core::command::{Request, RequestView, Response};
use crate::home::Home;
use crate::outbound::{Client, OutboundConfig, OutboundError, Proxy, Resolve};
use crate::session::{self, Failed};

/// The variable holding a PEM file of certificate authorities to trust besides the
/// system's (`--ca-file`). One file: a PEM file holds as many certificates as needed, and a
/// path may hold any character a list could be split on.
pub const CA_FILE_ENV: &str = "OPTIN_CA_FILE";
/// The variable holding `HOST:PORT:ADDR` rules (`--resolve`), separated by
/// [`LIST_DELIMITER`].
pub const RESOLVE_ENV: &str = "OPTIN_RESOLVE";
/// The variable holding the `socks5h://HOST:PORT` proxy (`--push-proxy`).
pub const PUSH_PROXY_ENV: &str = "OPTIN_PUSH_PROXY";
/// What separates the rules of [`RESOLVE_ENV`]: a comma, which no host name, port or
/// address holds.
pub const LIST_DELIMITER: char = ',';

/// The outbound configuration from the `OPTIN_*` variables, as `lookup` reads them (the
/// environment, in the native host), parsed exactly as the flags they stand for, and as the
/// CLI reads the same variables: an unset variable sets nothing, a set one is read even when
/// empty, and a bad one is an error naming it.
pub fn config_from(lookup: impl Fn(&str) -> Option<String>) -> Result<OutboundConfig, String> {
    let ca_files = lookup(CA_FILE_ENV).map(PathBuf::from).into_iter().collect();
    let mut resolve = Vec::new();
    if let Some(rules) = lookup(RESOLVE_ENV) {
        for rule in rules.split(LIST_DELIMITER) {
            resolve.push(Resolve::from_str(rule).map_err(|e| format!("{RESOLVE_ENV}: {e}"))?);
        }
    }
    let proxy = lookup(PUSH_PROXY_ENV).map(|p| Proxy::from_str(&p).map_err(|e| format!("{PUSH_PROXY_ENV}: {e}"))).transpose()?;
    Ok(OutboundConfig { ca_files, resolve, proxy, ..Default::default() })
}

/// The site whose requests are fetched: a lowercase domain name, never an IP address (the
/// Web PKI vouches for names, and a request names its marketer by domain), with a port when
/// the site is not on 443. The domain a request is checked against is the name alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    domain: String,
    port: Option<u16>,
}

impl Site {
    /// The URL of the domain's well-known document.
    pub fn url(&self) -> String {
        format!("https://{self}{WELL_KNOWN_PATH}")
    }

    /// The domain every request fetched from the site must name.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.domain),
            None => f.write_str(&self.domain),
        }
    }
}

impl FromStr for Site {
    type Err = String;

    fn from_str(text: &str) -> Result<Site, String> {
        let refused = || format!("`{}` is not a lowercase domain name like shop.example (or shop.example:8443)", shown(text));
        // The protocol's own reading of an https URL decides what a host name is, so the
        // domain fetched from is one a request could name; what is left must be the name
        // and the port alone, not a path, query or user smuggled in with them.
        let url = HttpsUrl::parse(&format!("https://{text}{WELL_KNOWN_PATH}")).map_err(|_| refused())?;
        let domain = url.host().to_owned();
        let port = match text.strip_prefix(domain.as_str()) {
            Some("") => None,
            Some(rest) => Some(rest.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).ok_or_else(refused)?),
            None => return Err(refused()),
        };
        let site = Site { domain, port };
        if site.to_string() == text {
            Ok(site)
        } else {
            Err(refused())
        }
    }
}

/// Why a site's document could not be read; nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotFetched {
    /// The site did not give it: the connection, the certificate or the answer failed.
    #[error("cannot fetch the consent requests of {domain}: {why}; nothing was stored")]
    Unreachable {
        /// The domain asked.
        domain: String,
        /// In the person's terms.
        why: String,
    },
    /// The body is not UTF-8.
    #[error("{url} is not UTF-8 text, so not a document of consent requests; nothing was stored")]
    NotText {
        /// Where it was read.
        url: String,
    },
    /// The body is not the document of SPEC.md, "Consent requests".
    #[error("{url} is not a document of consent requests ({why}); nothing was stored")]
    NotDocument {
        /// Where it was read.
        url: String,
        /// The protocol's reason, its quotes of the body inert.
        why: String,
    },
}

/// A site's document of requests, fetched and read, before any request is verified.
#[derive(Debug)]
pub struct Published {
    site: Site,
    url: String,
    requests: Vec<String>,
}

/// Fetches `site`'s well-known document with `client` and reads it into its requests (1 to
/// 8 compact JWS), verifying none yet: the agent does, one by one, in [`Published::add`].
pub async fn fetch(client: &Client, site: &Site) -> Result<Published, NotFetched> {
    let url = site.url();
    let response = client.get(&url, limits::PUBLISHED_BYTES).await.map_err(|e| not_fetched(site, &url, &e))?;
    let Ok(text) = std::str::from_utf8(&response.body) else { return Err(NotFetched::NotText { url }) };
    let requests = protocol_request::published(text).map_err(|e| NotFetched::NotDocument { url: url.clone(), why: e.to_string() })?;
    Ok(Published { site: site.clone(), url, requests })
}

/// Why the well-known document could not be read, in the person's terms and naming the
/// domain, with what to do about it where there is something.
fn not_fetched(site: &Site, url: &str, error: &OutboundError) -> NotFetched {
    let why = match error {
        OutboundError::Tls { .. } => {
            format!("its certificate is not trusted for {} ({error}); a site with a private certificate authority needs --ca-file PEM", site.domain)
        }
        OutboundError::Gone { .. } => format!("it publishes no consent requests ({url} answered 410 Gone)"),
        OutboundError::Status { status: 404, .. } => format!("it publishes no consent requests ({url} answered 404)"),
        OutboundError::Status { status: status @ 300..=399, .. } => {
            format!("{url} answered {status}, a redirect, which is not followed: a site publishes its requests at this address itself")
        }
        OutboundError::TooLarge { limit, .. } => format!("{url} is larger than {limit} bytes, the most a document of requests may be"),
        _ => format!("{error}"),
    };
    NotFetched::Unreachable { domain: site.domain.clone(), why }
}

/// A request the agent kept (or had kept already).
#[derive(Debug)]
pub struct Added {
    /// It, as kept.
    pub request: Box<RequestView>,
    /// Whether the same request was kept before: nothing changed.
    pub already: bool,
    /// Whether the domain signed earlier requests with another key.
    pub key_changed: bool,
}

/// A request of the document that the agent refused, by its place: nothing in a request
/// that did not verify can be trusted to name it.
#[derive(Debug)]
pub struct Refused {
    /// Its place in the document, from 0.
    pub index: usize,
    /// How many requests the document held.
    pub total: usize,
    /// The domain it was fetched from.
    pub domain: String,
    /// The agent's reason.
    pub message: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {} of {} from {}: {}", self.index + 1, self.total, self.domain, self.message)
    }
}

/// What became of each request of a document, in its order.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// The requests kept.
    pub added: Vec<Added>,
    /// The requests refused.
    pub refused: Vec<Refused>,
}

/// The agent or its store could not take a request now: nor would it take the next, so
/// adding stopped there. The requests before it were added.
#[derive(Debug, thiserror::Error)]
#[error("after {index} of the {total} requests from {domain} were added")]
pub struct Stopped {
    /// What was added before.
    pub added: Vec<Added>,
    /// The place of the request that could not be added, from 0.
    pub index: usize,
    /// How many requests the document held.
    pub total: usize,
    /// The domain.
    pub domain: String,
    /// Why.
    #[source]
    pub failed: Failed,
}

impl Published {
    /// The URL the document was read from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests it holds.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether it holds none (never, once read: a document holds 1 to 8).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Hands each request to the agent with the domain it was fetched from, which verifies
    /// it whole and keeps it or refuses it: each on its own, so one bad request does not
    /// hide the others.
    pub async fn add(self, home: &Home) -> Result<Outcomes, Stopped> {
        let total = self.requests.len();
        let domain = self.site.domain;
        let mut outcomes = Outcomes::default();
        for (index, jws) in self.requests.into_iter().enumerate() {
            let request = Request::AddConsentRequest { jws, fetched_from: Some(domain.clone()) };
            match session::execute(home, request).await {
                Ok(Response::RequestAdded { request, already, key_changed }) => outcomes.added.push(Added { request, already, key_changed }),
                Ok(_) => {
                    let failed =
                        Failed { kind: crate::core::command::ErrorKind::Internal, message: "the agent answered adding a request with something else".into() };
                    return Err(Stopped { added: outcomes.added, index, total, domain, failed });
                }
                // Refused for what it is: the next one may be fine.
                Err(failed) if !failed.kind.retryable() => outcomes.refused.push(Refused { index, total, domain: domain.clone(), message: failed.message }),
                Err(failed) => return Err(Stopped { added: outcomes.added, index, total, domain, failed }),
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{config_from, Site, CA_FILE_ENV, PUSH_PROXY_ENV, RESOLVE_ENV};

    #[test]
    fn a_site_is_a_lowercase_domain_name_and_perhaps_a_port() {
        for (text, url, domain) in [
            ("shop.example", "https://shop.example/.well-known/optin-request.json", "shop.example"),
            ("shop.example:8443", "https://shop.example:8443/.well-known/optin-request.json", "shop.example"),
            ("xn--bcher-kva.example", "https://xn--bcher-kva.example/.well-known/optin-request.json", "xn--bcher-kva.example"),
        ] {
            let site: Site = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((site.url().as_str(), site.domain()), (url, domain), "{text}");
        }
    }

    #[test]
    fn rejects_addresses_and_anything_but_a_name_and_a_port() {
        for text in [
            "",
            "127.0.0.1",
            "[::1]",
            "Shop.example",
            "shop.example.",
            "localhost",
            "shop.example/x",
            "shop.example?x",
            "shop.example#x",
            "user@shop.example",
            "https://shop.example",
            "shop.example:0",
            "shop.example:0443",
            "shop.example:65536",
            "shop.example:",
            "shop .example",
            "sh\u{1b}op.example",
        ] {
            let refused = text.parse::<Site>().expect_err(text);
            assert!(refused.contains("is not a lowercase domain name"), "{text}: {refused}");
            assert!(!refused.contains('\u{1b}'), "the value is shown inert: {refused:?}");
        }
    }

    #[test]
    fn the_variables_read_as_the_flags_do() {
        let vars = |pairs: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            move |name: &str| map.get(name).cloned()
        };
        let config = config_from(vars(&[
            (CA_FILE_ENV, "/etc/ca, with a comma.pem"),
            (RESOLVE_ENV, "shop.test:443:127.0.0.1,inbox.test:8443:[::1]"),
            (PUSH_PROXY_ENV, "socks5h://127.0.0.1:9050"),
        ]))
        .expect("valid variables");
        assert_eq!(config.ca_files, [std::path::PathBuf::from("/etc/ca, with a comma.pem")]);
        assert_eq!(config.resolve.iter().map(ToString::to_string).collect::<Vec<_>>(), ["shop.test:443:127.0.0.1", "inbox.test:8443:[::1]"]);
        assert_eq!(config.proxy.map(|p| p.to_string()).as_deref(), Some("socks5h://127.0.0.1:9050"));
        let none = config_from(vars(&[])).expect("nothing set");
        assert!(none.ca_files.is_empty() && none.resolve.is_empty() && none.proxy.is_none());
        // Set but empty is read, and refused, as the flags' parsers refuse an empty value.
        for (name, value) in [
            (RESOLVE_ENV, "shop.test:https:127.0.0.1"),
            (RESOLVE_ENV, "shop.test:443:127.0.0.1,"),
            (RESOLVE_ENV, ""),
            (PUSH_PROXY_ENV, "socks5://127.0.0.1:9050"),
            (PUSH_PROXY_ENV, ""),
        ] {
            let error = config_from(vars(&[(name, value)])).expect_err(value);
            assert!(error.starts_with(&format!("{name}: ")), "{error}");
        }
    }
}
