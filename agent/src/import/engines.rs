//! Search-engine URL rules: which page addresses are searches, and what was searched.
//!
//! The rules are data, kept in `extension/engines.json`, because the browser extension and
//! the history importer must agree on what counts as a search: a search seen live and the
//! same search found later in the browser's history should produce the same signal. The
//! matching algorithm here mirrors `extension/lib/engines.js` step by step; change both or
//! neither. Both are tested against the one list of URL cases in
//! `extension/engine-cases.json`.
//!
//! URLs are parsed by a small hand-written parser rather than the `url` crate. It only has
//! to find the scheme, host, path and query of addresses a browser has already normalised
//! (history databases store canonical URLs), and it follows the WHATWG URL rules the
//! extension's `new URL()` uses for those parts, so the two sides stay in step. What it
//! leaves out cannot make a URL match wrongly, only not match: international host names
//! (no IDNA mapping), percent-escapes in hosts, and `.`/`..` segments in paths.

use std::collections::HashSet;

use serde::Deserialize;

/// The rules file shared with the browser extension.
const BUILTIN_RULES: &str = include_str!("../../../extension/engines.json");

/// The only version of the rules file this module understands.
const RULES_VERSION: u64 = 1;

/// Longest query kept, in Unicode code points (Rust `char`s), as the extension's `clip`
/// counts (`LIMITS.query` in `extension/lib/signals.js`).
pub const MAX_QUERY_CHARS: usize = 512;

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnginesError {
    /// The text is not JSON of the expected shape.
    #[error("engine rules are not valid: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The file declares a version this build does not know.
    #[error("engine rules have version {found}, expected {RULES_VERSION}")]
    UnsupportedVersion { found: u64 },
    /// One entry breaks a rule the matcher relies on.
    #[error("engine rule {id:?}: {problem}")]
    InvalidRule { id: String, problem: String },
}

/// One search engine as written in the rules file.
///
/// Unknown fields are ignored so the extension can add presentation fields without
/// breaking older agents.
#[derive(Debug, Deserialize)]
struct RawRule {
    id: String,
    name: String,
    domains: Vec<String>,
    paths: Vec<String>,
    param: String,
    params: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawRules {
    version: u64,
    engines: Vec<RawRule>,
}

/// A validated engine rule.
#[derive(Debug, Clone)]
struct Rule {
    domains: Vec<String>,
    paths: Vec<String>,
    /// Query parameter names in order of preference; never empty.
    params: Vec<String>,
}

/// A parsed, validated set of search-engine rules.
#[derive(Debug, Clone)]
pub struct Engines {
    rules: Vec<Rule>,
}

/// A search found in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The entry of the engine's `domains` that the host matched, e.g. `google.co.uk`.
    pub engine: String,
    /// The search text, trimmed, non-empty, at most [`MAX_QUERY_CHARS`] characters.
    pub query: String,
}

impl Engines {
    /// The rules shipped with the extension, compiled into this binary.
    pub fn builtin() -> Result<Engines, EnginesError> {
        Engines::parse(BUILTIN_RULES)
    }

    /// Parses and checks a rules file (`{"version":1,"engines":[...]}`).
    pub fn parse(text: &str) -> Result<Engines, EnginesError> {
        let raw: RawRules = serde_json::from_str(text)?;
        if raw.version != RULES_VERSION {
            return Err(EnginesError::UnsupportedVersion { found: raw.version });
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(raw.engines.len());
        for r in raw.engines {
            let invalid = |problem: String| EnginesError::InvalidRule { id: r.id.clone(), problem };
            if r.id.is_empty() {
                return Err(invalid("empty id".into()));
            }
            if !seen.insert(r.id.clone()) {
                return Err(invalid("duplicate id".into()));
            }
            if r.name.is_empty() {
                return Err(invalid("empty name".into()));
            }
            if r.domains.is_empty() {
                return Err(invalid("no domains".into()));
            }
            for d in &r.domains {
                // Hosts are compared after lowercasing, so an uppercase domain could never
                // match; a leading dot or an empty domain would match far too much.
                if d.is_empty() || d.starts_with('.') || d.ends_with('.') {
                    return Err(invalid(format!("bad domain {d:?}")));
                }
                if *d != d.to_lowercase() {
                    return Err(invalid(format!("domain {d:?} is not lowercase")));
                }
            }
            if r.paths.is_empty() {
                return Err(invalid("no paths".into()));
            }
            if let Some(p) = r.paths.iter().find(|p| !p.starts_with('/')) {
                return Err(invalid(format!("path {p:?} does not start with '/'")));
            }
            if r.param.is_empty() {
                return Err(invalid("empty param".into()));
            }
            let params = match r.params {
                None => vec![r.param],
                Some(list) => {
                    // The extension requires `params` to start with `param`, so `param`
                    // alone stays a correct description for readers that ignore `params`.
                    if list.first() != Some(&r.param) {
                        return Err(invalid("params must start with param".into()));
                    }
                    if list.iter().any(String::is_empty) {
                        return Err(invalid("empty name in params".into()));
                    }
                    list
                }
            };
            rules.push(Rule { domains: r.domains, paths: r.paths, params });
        }
        Ok(Engines { rules })
    }

    /// The search in `url`, if it is one on a known engine.
    ///
    /// Rules are tried in file order. The first rule whose domain and path match decides:
    /// if none of its parameters holds a non-blank query the URL is not a search, and no
    /// later rule may claim it.
    pub fn match_url(&self, url: &str) -> Option<SearchHit> {
        let parts = UrlParts::parse(url)?;
        for rule in &self.rules {
            let Some(domain) = rule.domains.iter().find(|d| host_matches(&parts.host, d)) else {
                continue;
            };
            if !rule.paths.contains(&parts.path) {
                continue;
            }
            for name in &rule.params {
                if let Some(query) = form_param(parts.query, name).and_then(|q| clean_query(&q)) {
                    return Some(SearchHit { engine: domain.clone(), query });
                }
            }
            return None;
        }
        None
    }
}

/// Trims `raw` and cuts it to [`MAX_QUERY_CHARS`]; `None` when nothing is left.
///
/// Used for queries from URLs and for search terms a browser stored itself, so both kinds
/// are bounded and trimmed the same way.
pub fn clean_query(raw: &str) -> Option<String> {
    // As the extension's `clip`: characters the agent refuses a signal for are dropped, so
    // one of them costs that character, not the search.
    let shown: String = raw.chars().filter(|c| !optin_protocol::is_control_or_bidi(*c)).collect();
    let trimmed = shown.trim_matches(is_js_whitespace);
    let end = trimmed.char_indices().nth(MAX_QUERY_CHARS).map_or(trimmed.len(), |(i, _)| i);
    // Cutting may expose inner whitespace at the end; trim it again, as `clip` does.
    // `end` comes from `char_indices` (or is the length), so it is a char boundary.
    let cut = trimmed[..end].trim_end_matches(is_js_whitespace);
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// The characters JavaScript's `String.prototype.trim` removes (ECMAScript WhiteSpace and
/// LineTerminator). Rust's `char::is_whitespace` differs in two places (U+0085, U+FEFF),
/// and the extension trims with JavaScript.
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// The host of an http(s) URL, lowercased, with a leading `www.` removed; used to name
/// the engine of a search the rules do not know (e.g. a browser's custom search engine).
pub(crate) fn search_host(url: &str) -> Option<String> {
    let parts = UrlParts::parse(url)?;
    let host = parts.host.strip_prefix("www.").unwrap_or(&parts.host);
    (!host.is_empty()).then(|| host.to_owned())
}

/// True when `host` is `domain` or a subdomain of it.
fn host_matches(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// The parts of an http(s) URL the rules look at.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts<'a> {
    /// ASCII-lowercased host name, without port or user info.
    host: String,
    /// Path with backslashes turned into slashes; `/` when empty.
    path: String,
    /// Raw query, without `?` and fragment; empty when absent.
    query: &'a str,
}

impl<'a> UrlParts<'a> {
    /// Splits an absolute http or https URL; `None` for anything else.
    fn parse(input: &'a str) -> Option<UrlParts<'a>> {
        // WHATWG URL parsing strips leading and trailing C0 controls and spaces. (It also
        // drops tabs and newlines inside the URL; stored history URLs never have them, and
        // a URL that did would simply not match.)
        let s = input.trim_matches(|c: char| c <= ' ');
        let (scheme, rest) = s.split_once(':')?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        // For special schemes any run of slashes or backslashes before the host is
        // accepted.
        let rest = rest.trim_start_matches(['/', '\\']);
        let authority_end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // User info ends at the last '@'.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if host_port.starts_with('[') {
            // An IPv6 literal never matches an engine domain; keep it whole so the port
            // split below does not cut it.
            host_port
        } else {
            host_port.split_once(':').map_or(host_port, |(h, _)| h)
        };
        // `new URL()` refuses hosts with these characters; refuse them too, so a malformed
        // host such as "evil.example .google.com" does not pass as a subdomain.
        if host.is_empty() || host.chars().any(|c| c <= ' ' || matches!(c, '<' | '>' | '^' | '|' | '\u{7F}')) {
            return None;
        }
        let tail = tail.split_once('#').map_or(tail, |(t, _)| t);
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let path = if path.is_empty() { "/".to_owned() } else { path.replace('\\', "/") };
        Some(UrlParts { host: host.to_ascii_lowercase(), path, query })
    }
}

/// The first value of parameter `name` in an application/x-www-form-urlencoded string,
/// decoded as `URLSearchParams.get` does: names are decoded before they are compared, `+`
/// is a space, percent escapes are UTF-8, a `%` without two hex digits stays as it is, and
/// invalid UTF-8 becomes U+FFFD. `form_urlencoded` implements the WHATWG parser that
/// `URLSearchParams` follows.
fn form_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests;
