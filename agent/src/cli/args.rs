//! Every flag of `optin`, defined once: what `--help`, the man page and the shell
//! completions show, and what the commands in [`super`] receive, already parsed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use optin_protocol::scope::{GrantId, Granularity};
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::span::Span;
use time::OffsetDateTime;

/// What `--help` and the man page say about exit codes.
const EXIT_CODES: &str = "Exit codes: 0 success, 1 the command failed (it says why), 2 the command line is wrong.";

/// optin: share chosen browsing signals with chosen marketers, signed, scoped and revocable.
#[derive(Parser, Debug)]
#[command(name = "optin", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The agent's home: store, keys, certificate, admin socket [default: ~/.local/share/optin].
    #[arg(long, global = true, env = "OPTIN_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Colour the output: auto (on a terminal, unless NO_COLOR is set), always (even with
    /// NO_COLOR) or never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output (the `--color` help says what each means; doc comments here would
/// repeat it as a list under every command's help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// The commands, in the order `--help` lists them.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: the HTTPS API for marketers and the admin socket for this CLI.
    Serve(ServeArgs),
    /// Say whether the agent runs, whether sharing is paused, and what is stored and shared.
    Status {
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Store signals from an NDJSON file (or - for standard input), all or nothing.
    Ingest {
        /// The NDJSON file, or - for standard input.
        file: PathBuf,
        /// Only say what would be stored.
        #[arg(long)]
        dry_run: bool,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the owner's token for POST /v1/signals.
    IngestToken,
    /// Add the searches in a browser's history.
    Import(ImportArgs),
    /// List stored signals.
    Signals {
        /// Only signals of this kind.
        #[arg(long, value_name = "KIND")]
        kind: Option<Kind>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Forget signals: they never appear in any later slice.
    Forget(ForgetArgs),
    /// Allow a marketer to receive slices, and print the bundle to hand them.
    Grant(GrantArgs),
    /// List grants and their state, oldest first.
    Grants {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Print a grant's bundle again, for a marketer who lost it.
    Bundle {
        /// The grant's id (g_…).
        grant_id: GrantId,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show a grant's consent receipt, the signed record its marketer holds: given,
    /// withdrawn or expired.
    Receipt {
        /// The grant's id (g_…).
        grant_id: GrantId,
        /// Print the JWS and its payload as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show exactly what a grant's marketer would receive now: every page of it.
    Preview {
        /// The grant's id (g_…).
        grant_id: GrantId,
        /// Items per page, as a marketer asking with `limit` would get them (1 to 1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(optin_protocol::scope::MAX_LIMIT)))]
        limit: Option<u32>,
        /// Print each page's claims as JSON, in a list.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant; returns once the agent no longer honours it. With --partner, cut
    /// off only the partner a token's aud caveat names, and keep the grant.
    Revoke {
        /// The grant's id (g_…).
        grant_id: GrantId,
        /// Only this partner (as its tokens' aud caveat names it, like partner.example):
        /// every token of the grant narrowed to it is refused from now on.
        #[arg(long, value_name = "AUD", value_parser = parse_partner)]
        partner: Option<String>,
    },
    /// Consent requests from marketers: list them, add one, show one with what it would share.
    Requests(super::requests::RequestsArgs),
    /// Approve a consent request, narrowing any of its terms: a grant bound to it.
    Approve(super::requests::ApproveArgs),
    /// Deny a consent request: no grant is made.
    Deny {
        /// The request: its id, or DOMAIN/ID.
        name: crate::core::command::RequestName,
    },
    /// Show who received what, when, and every refusal.
    Audit {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Check the hash chain; exit 1 if it is broken. Always checks the whole log.
        #[arg(long, conflicts_with_all = ["json", "summary", "since", "grant", "marketer"])]
        verify: bool,
        /// Per marketer: slices served, items, refusals, first and last slice.
        #[arg(long, conflicts_with = "json")]
        summary: bool,
        #[command(flatten)]
        only: AuditFilter,
    },
    /// Never share a sensitive topic (its id, like health) or a category and all below it
    /// (like "Health & Beauty > Health Care") with any grant, however broad.
    Exclude {
        /// A topic id (`optin exclusions` lists them) or a category path.
        entry: String,
    },
    /// Let a sensitive topic be shared by the grants whose terms reach it, or take a
    /// category of your own off the never-share list.
    Include {
        /// A topic id or a category path you excluded.
        entry: String,
    },
    /// List the never-share list: every sensitive topic, whether it is withheld, and your
    /// own categories.
    Exclusions {
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stop all sharing at once.
    Pause,
    /// Share again after `pause`.
    Resume,
    /// Connect the browser extension: native-messaging manifests.
    #[command(subcommand)]
    Browser(BrowserCommand),
    /// Serve the browser extension over native messaging (started by the browser).
    #[command(hide = true)]
    NativeHost {
        /// What the browser passes: the caller's origin (Chromium) or manifest and id (Firefox).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Print a shell's completion script for optin.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print optin's man page (roff), for `man -l -` or a man1 directory.
    Man,
}

/// `optin serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT; a name resolves to its loopback address if it has
    /// one. 127.0.0.1:0 picks a free port.
    #[arg(long, default_value = crate::core::DEFAULT_LISTEN, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Your own certificate chain (PEM) instead of the self-signed one.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM, mode 0600).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// How long a cart waits for a purchase before it counts as abandoned.
    #[arg(long, default_value = crate::core::DEFAULT_ABANDON_AFTER, value_name = "SPAN", allow_hyphen_values = true)]
    pub abandon_after: Span,
    /// Most marketer connections open at once. Beyond it, new connections wait to be
    /// accepted; connections already open are never closed to make room.
    #[arg(long, default_value_t = crate::serve::DEFAULT_MAX_CONNECTIONS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// The address marketers reach this agent at, when it is not the one it listens on (a
    /// port forwarded on a router, a host's public name): bundles name it from now on, and
    /// `optin bundle GRANT` prints a grant's bundle again with it. https://HOST[:PORT] only.
    #[arg(long, value_name = "URL", value_parser = crate::serve::parse_public_url)]
    pub public_url: Option<String>,
    /// How pushes reach marketers' inboxes.
    #[command(flatten)]
    pub outbound: OutboundArgs,
    /// Most audit records kept. Beyond it the oldest are pruned, behind a checkpoint that
    /// keeps what they counted per grant and from which the rest of the log verifies.
    #[arg(long, default_value_t = crate::store::audit::DEFAULT_KEEP_RECORDS, value_name = "N", value_parser = parse_keep_records)]
    pub audit_keep_records: u64,
    /// How long audit records are kept (1d or more); older ones are pruned the same way.
    #[arg(long, default_value = crate::store::audit::DEFAULT_KEEP_AGE, value_name = "SPAN", value_parser = parse_keep_age)]
    pub audit_keep_age: Span,
}

fn parse_keep_records(text: &str) -> Result<u64, String> {
    let records: u64 = text.parse().map_err(|_| format!("`{text}` is not a number of records"))?;
    match records {
        0 => Err(crate::store::KeepError::NoRecords.to_string()),
        n => Ok(n),
    }
}

fn parse_keep_age(text: &str) -> Result<Span, String> {
    let age: Span = text.parse().map_err(|e: optin_protocol::span::SpanError| e.to_string())?;
    if age.seconds() < crate::store::audit::MIN_KEEP_AGE_SECONDS {
        return Err(crate::store::KeepError::TooShort.to_string());
    }
    Ok(age)
}

/// How optin reaches a marketer's site and inbox over HTTPS, for the commands that connect
/// out (`requests fetch`, and pushes). Each applies to every connection such a command
/// makes: a fetch tells the marketer the person's address as surely as a push does.
#[derive(Args, Debug, Default)]
pub struct OutboundArgs {
    // Each also reads an OPTIN_* variable (`crate::site`), so the native host, which the
    // browser starts with no flags, and a command given none connect out alike.
    /// Also trust the certificate authorities in this PEM file, besides the system's. Repeatable;
    /// OPTIN_CA_FILE names one file (which may hold many certificates).
    #[arg(long = "ca-file", value_name = "PEM", env = crate::site::CA_FILE_ENV)]
    pub ca_files: Vec<PathBuf>,
    /// Connect to ADDR for HOST on PORT instead of looking HOST up, as curl's --resolve;
    /// the certificate is still checked against HOST. Repeatable; OPTIN_RESOLVE holds
    /// rules separated by commas.
    #[arg(long, value_name = "HOST:PORT:ADDR", env = crate::site::RESOLVE_ENV, value_delimiter = crate::site::LIST_DELIMITER)]
    pub resolve: Vec<crate::outbound::Resolve>,
    /// Connect to marketers through this SOCKS5 proxy (Tor, for one), which also looks
    /// their names up, so they do not learn your address: every connection, fetches and
    /// pushes alike.
    #[arg(long, value_name = "socks5h://HOST:PORT", env = crate::site::PUSH_PROXY_ENV)]
    pub push_proxy: Option<crate::outbound::Proxy>,
}

impl OutboundArgs {
    /// The client's configuration, with the default time bounds.
    pub fn config(self) -> crate::outbound::OutboundConfig {
        crate::outbound::OutboundConfig { ca_files: self.ca_files, resolve: self.resolve, proxy: self.push_proxy, ..Default::default() }
    }
}

/// `optin import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// chrome, chromium or firefox.
    pub browser: crate::import::Browser,
    /// The profile directory (default: the browser's default profile).
    #[arg(long, value_name = "DIR")]
    pub profile: Option<PathBuf>,
    /// Only visits since then: a span back from now like 30d, or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_moment, allow_hyphen_values = true)]
    pub since: Option<Moment>,
    /// Only say what would be added.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the searches and counts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `optin browser …`.
#[derive(Subcommand, Debug)]
pub enum BrowserCommand {
    /// Write the native-messaging manifests where browsers look for them.
    Install {
        /// Only this browser: chromium, chrome or firefox.
        #[arg(long)]
        browser: Option<crate::browser::Browser>,
        /// Write into this directory instead (a browser's --user-data-dir/NativeMessagingHosts).
        #[arg(long, value_name = "DIR")]
        manifest_dir: Option<PathBuf>,
    },
    /// Say what is installed and when the extension last connected.
    Status {
        /// Look in this directory instead.
        #[arg(long, value_name = "DIR")]
        manifest_dir: Option<PathBuf>,
    },
    /// Remove the manifests.
    Uninstall {
        /// Only this browser.
        #[arg(long)]
        browser: Option<crate::browser::Browser>,
        /// Remove from this directory instead.
        #[arg(long, value_name = "DIR")]
        manifest_dir: Option<PathBuf>,
    },
}

/// `optin forget`.
#[derive(Args, Debug)]
#[command(after_help = "--all asks first on a terminal; elsewhere it needs --yes, and without it refuses with exit 2.")]
pub struct ForgetArgs {
    /// Which signals.
    #[command(flatten)]
    pub what: ForgetWhat,
    /// Forget everything without asking (required for --all when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Which signals `optin forget` forgets: exactly one of these.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ForgetWhat {
    /// One signal by id.
    #[arg(long)]
    pub id: Option<String>,
    /// Every signal of a kind.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<Kind>,
    /// Every signal before then: a span back from now like 30d, or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_moment, allow_hyphen_values = true)]
    pub before: Option<Moment>,
    /// Everything.
    #[arg(long)]
    pub all: bool,
}

/// Which records `optin audit` shows (the whole log is read and verified all the same).
#[derive(Args, Debug, Default)]
pub struct AuditFilter {
    /// Only records from then on: a span back from now like 7d, or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_moment, allow_hyphen_values = true)]
    pub since: Option<Moment>,
    /// Only records of this grant.
    #[arg(long, value_name = "GRANT_ID")]
    pub grant: Option<GrantId>,
    /// Only records naming this marketer.
    #[arg(long, value_name = "NAME")]
    pub marketer: Option<String>,
}

/// `optin grant`.
#[derive(Args, Debug)]
pub struct GrantArgs {
    /// Who may receive slices (a name or domain the marketer knows itself by).
    pub marketer: String,
    /// Kinds to share: any of search,cart,purchase.
    #[arg(long, value_name = "KINDS")]
    pub kinds: Kinds,
    /// raw (every field), category (kind, category and day only) or aggregate (noisy
    /// counts per kind and category, within a privacy budget: see --epsilon).
    #[arg(long, value_name = "LEVEL")]
    pub granularity: Granularity,
    /// How far back slices reach, like 30d.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    pub window: Span,
    /// How long the grant lasts, like 90d.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    pub expires: Span,
    /// What the marketer may use the data for, shown to both sides.
    #[arg(long, value_name = "TEXT")]
    pub purpose: String,
    /// Push this grant and then its slices to the marketer's HTTPS inbox, from `optin serve`:
    /// nothing on your side listens.
    #[arg(long, value_name = "URL", value_parser = parse_inbox)]
    pub push: Option<String>,
    /// With --push: how often a slice of what is new is pushed, at least 1h.
    #[arg(long, value_name = "SPAN", requires = "push", default_value = "1d")]
    pub push_every: Span,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub noise: NoiseArgs,
    /// Print only the bundle's JSON.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What a grant may narrow besides kinds, granularity and window. Checked by the agent as an
/// approval's choices are, so a bad one is refused naming it and nothing is granted.
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only signals within these category paths, each with what lies below it, like
    /// "Apparel > Shoes" (a search only when it carries such a category). Give each path
    /// quoted after the flag: paths may hold commas.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub categories: Option<Vec<String>>,
    /// Only carts and purchases at these merchants (registrable domains), like
    /// shoes.example,trail.example: what you did at those shops. Searches name no merchant,
    /// so a grant with merchants shares no searches.
    #[arg(long, value_name = "DOMAINS", value_delimiter = ',')]
    pub merchants: Option<Vec<String>>,
    /// With raw granularity: only these fields of each signal, like merchant,items.name
    /// (default: all). Each item always has its kind, time and id. Fields: category,
    /// currency, engine, items.category, items.name, items.price, items.quantity, items.sku,
    /// merchant, order_id, query, state, total (total only with items.price and
    /// items.quantity, which it tells).
    #[arg(long, value_name = "FIELDS", value_delimiter = ',')]
    pub fields: Option<Vec<String>>,
    /// At most this many slices per UTC day or clock hour, like 2/day or 1/hour, pulled or
    /// pushed; beyond it the marketer is told when to come back.
    #[arg(long, value_name = "N/day|N/hour")]
    pub rate: Option<optin_protocol::rate::Rate>,
}

impl FilterArgs {
    /// The filters as the agent takes them.
    pub fn into_filters(self) -> crate::core::command::GrantFilters {
        crate::core::command::GrantFilters { categories: self.categories, merchants: self.merchants, fields: self.fields, rate: self.rate }
    }
}

/// An inbox URL, checked as a consent request's is, so a mistyped one is refused before a
/// grant is made.
fn parse_inbox(text: &str) -> Result<String, String> {
    optin_protocol::request::HttpsUrl::parse(text).map(|url| url.as_str().to_owned())
}

/// A partner's name as an `aud` caveat writes it, so a mistyped one is refused before
/// anything is stored.
fn parse_partner(text: &str) -> Result<String, String> {
    match format!("aud={text}").parse::<optin_protocol::scope::Caveat>() {
        Ok(optin_protocol::scope::Caveat::Audience(a)) => Ok(a),
        _ => Err("a partner is named as its tokens' aud caveat names it: a lowercase host name like partner.example".into()),
    }
}

/// The noise of an aggregate grant: two-sided geometric noise on every count, and a budget
/// that never resets. Checked by the agent, so a bad choice is refused naming its flag and
/// nothing is granted.
#[derive(Args, Debug, Default)]
pub struct NoiseArgs {
    /// With --granularity aggregate: the privacy loss each new answer spends from the budget,
    /// from 0.001 to 100 (smaller: more noise) [default: 0.5].
    #[arg(long, value_name = "E")]
    pub epsilon: Option<optin_protocol::noise::Epsilon>,
    /// With --granularity aggregate: what the grant may spend in all, ever; once spent it
    /// answers nothing new [default: 3].
    #[arg(long, value_name = "B")]
    pub budget: Option<optin_protocol::noise::Epsilon>,
    /// With --granularity aggregate: leave out counts below K after noise [default: 5].
    #[arg(long, value_name = "K")]
    pub min_count: Option<u32>,
}

impl NoiseArgs {
    /// The choice as the agent takes it.
    pub fn into_choice(self) -> crate::core::aggregate::NoiseChoice {
        crate::core::aggregate::NoiseChoice { epsilon: self.epsilon, budget: self.budget, min_count: self.min_count }
    }
}

/// Where a bundle goes instead of standard output.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Write the bundle to this new file, readable only by you (0600), instead of printing it.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// With --output: replace the file if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

/// A moment on the command line: an RFC 3339 time, or a span back from now (`30d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// This time.
    At(OffsetDateTime),
    /// This long before now.
    Ago(Span),
}

impl Moment {
    /// The time this names, with `now` as now.
    pub fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Moment::At(at) => at,
            // A span is at most ten years, so this stays far inside the representable range.
            Moment::Ago(span) => now.checked_sub(span.duration()).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        }
    }
}

/// Reads a span (`30d`) or an RFC 3339 time.
pub fn parse_moment(text: &str) -> Result<Moment, String> {
    if let Ok(span) = text.parse::<Span>() {
        return Ok(Moment::Ago(span));
    }
    optin_protocol::timestamp::parse(text)
        .map(Moment::At)
        .ok_or_else(|| format!("`{text}` is neither a span back from now like 30d nor an RFC 3339 time like 2026-11-20T10:00:00Z"))
}

/// Reads `HOST:PORT`: an address as it is, or a name resolved, its loopback address first
/// (`localhost` resolves to both 127.0.0.1 and ::1; listening on the loopback keeps the
/// agent off the network unless the person names another address).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(format!("`{text}` is not HOST:PORT, like 127.0.0.1:7676 or localhost:7676"));
    }
    let resolved = text.to_socket_addrs().map_err(|e| format!("`{text}` does not resolve: {e}"))?;
    resolved.min_by_key(|a| (!a.ip().is_loopback(), !a.is_ipv4())).ok_or_else(|| format!("`{text}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn moments_are_spans_or_times() {
        let now = optin_protocol::timestamp::parse("2026-11-20T10:00:00Z").expect("a time");
        for (text, expected) in [("30d", "2026-10-21T10:00:00Z"), ("1h", "2026-11-20T09:00:00Z"), ("2026-01-02T03:04:05+01:00", "2026-01-02T02:04:05Z")] {
            let at = parse_moment(text).map(|m| m.resolve(now)).map(optin_protocol::timestamp::format);
            assert_eq!(at.as_deref(), Ok(expected), "{text}");
        }
        for text in ["", "yesterday", "-1d", "0d", "2026-13-01T00:00:00Z"] {
            let refused = parse_moment(text).expect_err(text);
            assert!(refused.contains(&format!("`{text}`")), "the message names the value: {refused}");
        }
    }

    #[test]
    fn listen_addresses_resolve_to_the_loopback() {
        for (text, expected) in [("127.0.0.1:7676", "127.0.0.1:7676"), ("localhost:7676", "127.0.0.1:7676"), ("[::1]:0", "[::1]:0")] {
            assert_eq!(parse_listen(text).map(|a| a.to_string()).as_deref(), Ok(expected), "{text}");
        }
        for text in ["localhost", "7676", "localhost:not-a-port", "127.0.0.1:99999"] {
            assert!(parse_listen(text).is_err(), "{text} should be refused");
        }
    }

    /// `OutboundArgs` as a command will take them.
    #[derive(Parser, Debug)]
    struct WithOutbound {
        #[command(flatten)]
        outbound: OutboundArgs,
    }

    #[test]
    fn outbound_flags_parse_into_the_client_config() {
        let parsed = WithOutbound::try_parse_from([
            "optin",
            "--ca-file",
            "a.pem",
            "--ca-file",
            "b.pem",
            "--resolve",
            "marketer.test:443:127.0.0.1",
            "--resolve",
            "inbox.test:8443:[::1]",
            "--push-proxy",
            "socks5h://127.0.0.1:9050",
        ])
        .expect("valid flags");
        let config = parsed.outbound.config();
        assert_eq!(config.ca_files, [PathBuf::from("a.pem"), PathBuf::from("b.pem")]);
        assert_eq!(config.resolve.iter().map(ToString::to_string).collect::<Vec<_>>(), ["marketer.test:443:127.0.0.1", "inbox.test:8443:[::1]"]);
        assert_eq!(config.proxy.map(|p| p.to_string()).as_deref(), Some("socks5h://127.0.0.1:9050"));
        let none = WithOutbound::try_parse_from(["optin"]).expect("no flags").outbound.config();
        assert!(none.ca_files.is_empty() && none.resolve.is_empty() && none.proxy.is_none());
    }

    #[test]
    fn outbound_flag_errors_name_the_flag_and_the_part() {
        for (args, flag, part) in [
            (["--resolve", "marketer.test:https:127.0.0.1"], "--resolve", "PORT `https`"),
            (["--resolve", "marketer.test:443:nowhere"], "--resolve", "ADDR `nowhere`"),
            (["--resolve", "marketer.test"], "--resolve", "HOST:PORT:ADDR"),
            (["--push-proxy", "socks5://127.0.0.1:9050"], "--push-proxy", "use socks5h://"),
            (["--push-proxy", "https://proxy.example:443"], "--push-proxy", "`https://` proxies are not supported"),
        ] {
            let error = WithOutbound::try_parse_from(std::iter::once("optin").chain(args)).expect_err("refused");
            let text = error.to_string();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{text}");
            assert!(text.contains(flag) && text.contains(part), "{args:?}: {text}");
        }
    }

    #[test]
    fn hyphen_values_reach_the_value_parser() {
        let error = Cli::try_parse_from(["optin", "serve", "--abandon-after", "-1h"]).expect_err("-1h is not a span");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{error}");
        assert!(error.to_string().contains("--abandon-after"), "{error}");
    }
}
