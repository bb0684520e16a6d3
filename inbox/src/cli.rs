//! The flags of `optin-inbox` and what each command does. Exit codes: 0 success, 1 the
//! command failed (it says why), 2 a wrong command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;

use optin_protocol::scope::GrantId;
use optin_protocol::span::Span;

use crate::home::{Config, Home};
use crate::listing::{self, Format};
use crate::receive::Inbox;
use crate::requests::{self, Catalog, NewRequest};
use crate::serve::{self, TlsSource};
use crate::store::{Engine, Keep, Nats, SliceQuery, Sqlite, Store};

/// A marketer's inbox for optin: publishes consent requests, takes the pushes of the grants
/// people make from them, verified, and keeps them in SQLite or NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "optin-inbox", version)]
pub struct Cli {
    /// The inbox's home [default: $XDG_DATA_HOME/optin-inbox or ~/.local/share/optin-inbox].
    #[arg(long, global = true, env = "OPTIN_INBOX_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Where grants and slices are kept: sqlite, the home's database, or
    /// nats://HOST:PORT[/NAME], NATS JetStream shared by every inbox process given it (NAME
    /// names the stream, its subjects and the bucket; optin by default).
    #[arg(long, global = true, env = "OPTIN_INBOX_ENGINE", value_name = "ENGINE", default_value = "sqlite")]
    pub engine: Engine,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a home: the request-signing key (0600), the configuration and the database.
    Init(InitArgs),
    /// Consent requests.
    #[command(subcommand)]
    Request(RequestCommand),
    /// Publish the requests and take pushes, over HTTPS.
    Serve(ServeArgs),
    /// The grants taken, oldest first.
    Grants(ListArgs),
    /// The slices stored, oldest first.
    Slices(ListArgs),
    /// Live grants' slices with their JWS and the grant's key, so anyone can verify them again.
    Export(ListArgs),
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The marketer's domain, like acme.example: requests name it, grants are addressed to it.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// Where agents reach this inbox, https://HOST[:PORT] with HOST the domain or a name
    /// under it [default: https://DOMAIN].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The marketer's name as people read it [default: DOMAIN].
    #[arg(long)]
    pub name: Option<String>,
    /// How people reach the marketer about their data: an e-mail address or an https URL
    /// [default: privacy@DOMAIN].
    #[arg(long)]
    pub contact: Option<String>,
    /// The marketer's privacy policy [default: https://DOMAIN/privacy].
    #[arg(long, value_name = "URL")]
    pub privacy_policy: Option<String>,
}

/// `request …`.
#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Sign a new request and add it to what `serve` publishes.
    New(RequestArgs),
}

/// `request new`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The request's id, 1-64 of A-Z a-z 0-9 . _ - (people type it to approve).
    #[arg(long)]
    pub id: String,
    /// A DPV purpose code, like dpv:PersonalisedAdvertising.
    #[arg(long, value_name = "CODE")]
    pub purpose_code: String,
    /// The purpose in your words.
    #[arg(long, value_name = "TEXT")]
    pub purpose: String,
    /// Kinds of signal, like search,cart.
    #[arg(long, value_delimiter = ',', required = true)]
    pub kinds: Vec<String>,
    /// raw or category.
    #[arg(long, value_name = "LEVEL")]
    pub granularity: String,
    /// How far back a slice may reach, like 30d.
    #[arg(long, value_name = "SPAN")]
    pub window: String,
    /// How long a grant lasts once approved, like 90d.
    #[arg(long, value_name = "SPAN")]
    pub duration: String,
    /// Only these category paths, like "Apparel & Accessories > Shoes".
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub categories: Option<Vec<String>>,
    /// Only these merchants, like shoes.example,trail.example.
    #[arg(long, value_name = "DOMAINS", num_args = 1.., value_delimiter = ',')]
    pub merchants: Option<Vec<String>>,
    /// What people get in return.
    #[arg(long, value_name = "TEXT")]
    pub offer: String,
    /// How often agents push a slice, at least 1h.
    #[arg(long, value_name = "SPAN", default_value = "1d")]
    pub push_every: String,
    /// How long the request may be approved.
    #[arg(long, value_name = "SPAN", default_value = "30d")]
    pub expires: Span,
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// A certificate chain to serve (PEM) instead of the home's own.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM, readable by its owner only).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep a grant's slices, flagged, when it is revoked or expires, instead of erasing them.
    #[arg(long)]
    pub keep_after_revoke: bool,
    /// Most connections served at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Most bytes of push bodies held in memory at once, in MiB (at least one largest push).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub body_budget: usize,
}

/// `grants`, `slices`, `export`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this grant.
    #[arg(long, value_name = "ID")]
    pub grant: Option<String>,
    /// Only what was taken since: an RFC 3339 time or a span back from now, like 7d.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// table (not for export), ndjson or csv [default: table, ndjson for export].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// Runs a command line.
pub async fn run(cli: Cli) -> Result<()> {
    let home = Home::at(match cli.home {
        Some(dir) => dir,
        None => Home::default_dir()?,
    });
    match cli.command {
        Command::Init(args) => init(&home, args),
        Command::Request(RequestCommand::New(args)) => request_new(&home, args),
        Command::Serve(args) => match cli.engine {
            Engine::Sqlite => serve(&home, args, || async { Ok(Sqlite::open(&home.database())?) }).await,
            Engine::Nats(target) => serve(&home, args, || async move { Ok(Nats::connect(&target).await?) }).await,
        },
        Command::Grants(args) => list(&home, &cli.engine, args, Listed::Grants).await,
        Command::Slices(args) => list(&home, &cli.engine, args, Listed::Slices).await,
        Command::Export(args) => list(&home, &cli.engine, args, Listed::Export).await,
    }
}

fn init(home: &Home, args: InitArgs) -> Result<()> {
    if home.config_file().exists() {
        bail!("{} is an optin-inbox home already; nothing was changed", home.dir().display());
    }
    let domain = args.domain;
    let config = Config::new(
        &domain,
        args.public_url.as_deref(),
        args.name.unwrap_or_else(|| domain.clone()),
        args.contact.unwrap_or_else(|| format!("privacy@{domain}")),
        args.privacy_policy.unwrap_or_else(|| format!("https://{domain}/privacy")),
    )?;
    std::fs::create_dir_all(home.dir()).with_context(|| format!("cannot create {}", home.dir().display()))?;
    // A key left by an init that failed later is kept: a signing key is never replaced.
    if !home.signing_key().exists() {
        requests::make_key(home)?;
    }
    requests::load_key(home)?;
    Sqlite::open(&home.database())?;
    // Written last: a home is one once its configuration exists, so an init that failed
    // before can be run again.
    home.write_config(&config)?;
    println!("made an optin-inbox home for {} at {}", config.domain, home.dir().display());
    println!("agents will push to {}", config.inbox_url());
    Ok(())
}

fn request_new(home: &Home, args: RequestArgs) -> Result<()> {
    let config = home.config()?;
    let key = requests::load_key(home)?;
    let new = NewRequest {
        id: args.id,
        purpose_code: args.purpose_code,
        purpose: args.purpose,
        kinds: args.kinds,
        granularity: args.granularity,
        window: args.window,
        duration: args.duration,
        categories: args.categories,
        merchants: args.merchants,
        offer: args.offer,
        every: args.push_every,
        expires: args.expires,
    };
    let now = OffsetDateTime::now_utc();
    let (request, jws) = requests::build(&config, &key, &new, now).context("the request is refused, nothing was written")?;
    let path = requests::write(home, &request, &jws, now)?;
    println!("signed request {} written to {}", request.id, path.display());
    // Agents fetch DOMAIN[:PORT]: the public URL's port when it names the domain itself.
    let own = format!("https://{}", config.domain);
    let site = match config.public_url.strip_prefix(&own) {
        Some(rest) if rest.is_empty() || rest.starts_with(':') => config.public_url.clone(),
        _ => own,
    };
    println!("published at {site}{} while optin-inbox serve runs", optin_protocol::request::WELL_KNOWN_PATH);
    Ok(())
}

/// `serve` with the store `open` makes, once the home is known to be one.
async fn serve<S: Store, F: std::future::Future<Output = Result<S>>>(home: &Home, args: ServeArgs, open: impl FnOnce() -> F) -> Result<()> {
    let config = home.config()?;
    let now = OffsetDateTime::now_utc();
    let published = Catalog::watching(home, &config.domain, now)?;
    if published.current(now).requests.is_empty() {
        tracing::warn!("no live request to publish: make one with optin-inbox request new");
    }
    let store = open().await?;
    let source = TlsSource { user: args.tls_cert.zip(args.tls_key) };
    let (tls, cert) = serve::load_tls(home, &config.domain, &source)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("the listening address")?;
    let keep = if args.keep_after_revoke { Keep::Flagged } else { Keep::Erase };
    let inbox = Arc::new(Inbox { store, domain: config.domain.clone(), requests: published, tolerance: optin_protocol::webhook::DEFAULT_TOLERANCE, keep });
    let limits = serve::Limits::new(args.max_connections, args.body_budget.saturating_mul(1024 * 1024));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve::serve(listener, tls, inbox, limits, stop_rx));
    println!("optin-inbox listening on https://{addr} for {} (certificate {})", config.inbox_url(), cert.display());
    std::io::stdout().flush().context("standard output")?;
    shutdown_signal().await;
    tracing::info!("stopping: finishing the requests under way");
    let _ = stop_tx.send(true);
    server.await.context("the server stopped")??;
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

enum Listed {
    Grants,
    Slices,
    Export,
}

/// A time the flags name: RFC 3339, or a span back from `now`.
fn since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if let Some(at) = optin_protocol::timestamp::parse(text) {
        return Ok(at);
    }
    let span: Span = text.parse().map_err(|_| anyhow::anyhow!("--since {}: expected an RFC 3339 time or a span like 7d", crate::home::shown(text)))?;
    Ok(now - span.duration())
}

async fn list(home: &Home, engine: &Engine, args: ListArgs, what: Listed) -> Result<()> {
    home.check_exists()?;
    match engine {
        Engine::Sqlite => list_from(Sqlite::open(&home.database())?, args, what).await,
        Engine::Nats(target) => list_from(Nats::connect(target).await?, args, what).await,
    }
}

async fn list_from<S: Store>(store: S, args: ListArgs, what: Listed) -> Result<()> {
    let grant = args
        .grant
        .as_deref()
        .map(|g| GrantId::parse(g).ok_or_else(|| anyhow::anyhow!("--grant {}: expected g_ and 24 hex digits", crate::home::shown(g))))
        .transpose()?;
    let since = args.since.as_deref().map(|s| since(s, OffsetDateTime::now_utc())).transpose()?;
    let mut out = std::io::stdout().lock();
    let written = match what {
        Listed::Grants => {
            let mut grants = store.grants().await?;
            grants.retain(|g| grant.as_ref().map_or(true, |id| g.grant_id == *id) && since.map_or(true, |s| g.created_at >= s));
            listing::grants(&mut out, &grants, args.format.unwrap_or(Format::Table))
        }
        Listed::Slices => {
            let slices = store.slices(SliceQuery { grant, since, live_only: false }).await?;
            listing::slices(&mut out, &slices, args.format.unwrap_or(Format::Table))
        }
        Listed::Export => {
            let format = match args.format {
                Some(Format::Table) => bail!("--format table: export writes ndjson or csv"),
                Some(f) => f,
                None => Format::Ndjson,
            };
            let grants = listing::exportable(store.grants().await?, OffsetDateTime::now_utc());
            let slices = store.slices(SliceQuery { grant, since, live_only: true }).await?;
            listing::export(&mut out, &grants, &slices, format)
        }
    };
    match written.and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn since_reads_a_time_or_a_span_back_from_now() {
        let now = datetime!(2026-11-23 12:00 UTC);
        for (text, expected) in [
            ("2026-11-20T00:00:00Z", datetime!(2026-11-20 0:00 UTC)),
            ("2026-11-20T02:00:00+02:00", datetime!(2026-11-20 0:00 UTC)),
            ("7d", datetime!(2026-11-16 12:00 UTC)),
            ("12h", datetime!(2026-11-23 0:00 UTC)),
        ] {
            assert_eq!(since(text, now).unwrap(), expected, "{text}");
        }
        for text in ["yesterday", "7", "-7d", "2026-11-20", "\u{1b}[2J"] {
            let error = format!("{:#}", since(text, now).unwrap_err());
            assert!(error.starts_with("--since ") && !error.contains('\u{1b}'), "{text:?}: {error}");
        }
    }
}
