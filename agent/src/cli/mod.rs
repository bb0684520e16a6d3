//! The `optin` command line: flags defined once here, each command turned into a
//! [`Request`] and run through the admin socket of a running agent or, when none runs, on
//! the store directly.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 the command line
//! is wrong.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use optin_protocol::scope::{GrantId, Granularity};
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::span::Span;
use time::OffsetDateTime;

use crate::core::command::{AuditEntry, Forget, GrantView, Request, Response, SignalView};
use crate::home::Home;
use crate::keys::Keys;
use crate::serve::tls::TlsSource;
use crate::store::AuditEvent;
use optin_protocol::signal::Body;

/// optin: share chosen browsing signals with chosen marketers, signed, scoped and revocable.
#[derive(Parser, Debug)]
#[command(name = "optin", version, about)]
pub struct Cli {
    /// The agent's home: store, keys, certificate, admin socket.
    #[arg(long, global = true, env = "OPTIN_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: the HTTPS API for marketers and the admin socket for this CLI.
    Serve(ServeArgs),
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
    /// Add the searches in a browser's history.
    Import(ImportArgs),
    /// Connect the browser extension: native-messaging manifests.
    #[command(subcommand)]
    Browser(BrowserCommand),
    /// Serve the browser extension over native messaging (started by the browser).
    NativeHost {
        /// What the browser passes: the caller's origin (Chromium) or manifest and id (Firefox).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Print the owner's token for POST /v1/signals.
    IngestToken,
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
    /// List grants and their state.
    Grants {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant; returns once the agent no longer honours it.
    Revoke {
        /// The grant's id (g_…).
        grant_id: GrantId,
    },
    /// Show exactly what a grant's marketer would receive now.
    Preview {
        /// The grant's id (g_…).
        grant_id: GrantId,
        /// Print the slice's claims as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show who received what, when, and every refusal.
    Audit {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Check the hash chain; exit 1 if it is broken.
        #[arg(long)]
        verify: bool,
    },
    /// Stop all sharing at once.
    Pause,
    /// Share again after `pause`.
    Resume,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// chrome, chromium or firefox.
    browser: crate::import::Browser,
    /// The profile directory (default: the browser's default profile).
    #[arg(long, value_name = "DIR")]
    profile: Option<PathBuf>,
    /// Only visits this recent, like 30d.
    #[arg(long, value_name = "SPAN")]
    since: Option<Span>,
    /// Only say what would be added.
    #[arg(long)]
    dry_run: bool,
    /// Print the searches and counts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BrowserCommand {
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

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on; 127.0.0.1:0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7676", value_name = "ADDR")]
    listen: SocketAddr,
    /// Your own certificate chain (PEM) instead of the self-signed one.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM, mode 0600).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// How long a cart waits for a purchase before it counts as abandoned.
    #[arg(long, default_value = "24h", value_name = "SPAN")]
    abandon_after: Span,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct ForgetArgs {
    /// One signal by id.
    #[arg(long)]
    id: Option<String>,
    /// Every signal of a kind.
    #[arg(long, value_name = "KIND")]
    kind: Option<Kind>,
    /// Every signal before this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    before: Option<OffsetDateTime>,
    /// Everything.
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
struct GrantArgs {
    /// Who may receive slices (a name or domain the marketer knows itself by).
    marketer: String,
    /// Kinds to share: any of search,cart,purchase.
    #[arg(long, value_name = "KINDS")]
    kinds: Kinds,
    /// raw (every field) or category (kind, category and day only).
    #[arg(long, value_name = "LEVEL")]
    granularity: Granularity,
    /// How far back slices reach, like 30d.
    #[arg(long, value_name = "SPAN")]
    window: Span,
    /// How long the grant lasts, like 90d.
    #[arg(long, value_name = "SPAN")]
    expires: Span,
    /// What the marketer may use the data for, shown to both sides.
    #[arg(long, value_name = "TEXT")]
    purpose: String,
    /// Print only the bundle's JSON.
    #[arg(long)]
    json: bool,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    optin_protocol::timestamp::parse(text).ok_or_else(|| format!("`{text}` is not an RFC 3339 time like 2026-11-20T10:00:00Z"))
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPTIN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let home_dir = match cli.home {
        Some(h) => h,
        None => Home::default_dir()?,
    };
    match cli.command {
        Command::Serve(args) => {
            let tls = TlsSource { user: args.tls_cert.zip(args.tls_key) };
            crate::serve::run(crate::serve::ServeConfig { home: home_dir, listen: args.listen, tls, abandon_after: args.abandon_after, max_connections: 512 })
                .await
        }
        Command::IngestToken => {
            let home = Home::open(&home_dir)?;
            println!("{}", Keys::load_or_create(&home)?.ingest_token());
            Ok(())
        }
        Command::Ingest { file, dry_run, json } => {
            let ndjson = read_input(&file)?;
            match execute(&home_dir, Request::Ingest { ndjson, dry_run }).await? {
                Response::Ingested { stored, duplicates } if json => println!("{}", serde_json::json!({"stored": stored, "duplicates": duplicates})),
                Response::Ingested { stored, duplicates } if dry_run => println!("would store {stored} signals ({duplicates} already present)"),
                Response::Ingested { stored, duplicates } => println!("stored {stored} signals ({duplicates} already present)"),
                other => unexpected(other)?,
            }
            Ok(())
        }
        Command::Import(args) => import(&home_dir, args).await,
        Command::NativeHost { args } => crate::browser::native_host::run(&home_dir, &args).await,
        Command::Browser(cmd) => {
            let home = Home::open(&home_dir)?;
            match cmd {
                BrowserCommand::Install { browser, manifest_dir } => {
                    for path in crate::browser::manifest::install(&home, browser, manifest_dir.as_deref())? {
                        println!("installed {}", path.display());
                    }
                }
                BrowserCommand::Status { manifest_dir } => {
                    for line in crate::browser::manifest::status(&home, manifest_dir.as_deref())? {
                        println!("{line}");
                    }
                    let running = matches!(crate::session::call(&home.admin_socket(), &Request::Status).await, Ok(Some(_)));
                    println!("agent: {}", if running { "running" } else { "not running (signals wait in the extension until it starts)" });
                }
                BrowserCommand::Uninstall { browser, manifest_dir } => {
                    let removed = crate::browser::manifest::uninstall(&home, browser, manifest_dir.as_deref())?;
                    for path in &removed {
                        println!("removed {}", path.display());
                    }
                    if removed.is_empty() {
                        println!("nothing to remove");
                    }
                }
            }
            Ok(())
        }
        Command::Signals { kind, json } => {
            let Response::Signals { signals } = execute(&home_dir, Request::Signals { kind }).await? else { bail!("unexpected answer") };
            if json {
                println!("{}", serde_json::to_string_pretty(&signals)?);
            } else {
                print_signals(&signals);
            }
            Ok(())
        }
        Command::Forget(args) => {
            let what = match (args.id, args.kind, args.before, args.all) {
                (Some(id), ..) => Forget::Id(id),
                (_, Some(k), ..) => Forget::Kind(k),
                (_, _, Some(t), _) => Forget::Before(t),
                _ => Forget::All,
            };
            let Response::Forgot { count } = execute(&home_dir, Request::Forget { what }).await? else { bail!("unexpected answer") };
            println!("forgot {count} signals");
            Ok(())
        }
        Command::Grant(a) => {
            let request =
                Request::Grant { marketer: a.marketer, kinds: a.kinds, granularity: a.granularity, window: a.window, expires: a.expires, purpose: a.purpose };
            let Response::Granted { bundle } = execute(&home_dir, request).await? else { bail!("unexpected answer") };
            let json = serde_json::to_string_pretty(&bundle)?;
            if a.json {
                println!("{json}");
            } else {
                println!(
                    "granted {} to {}: {} at {} granularity, {} window, until {}",
                    bundle.grant_id,
                    bundle.marketer,
                    bundle.terms.kinds,
                    bundle.terms.granularity,
                    bundle.terms.window,
                    optin_protocol::timestamp::format(bundle.terms.expires_at)
                );
                println!("give this bundle to {} (it holds their token: send it privately):", bundle.marketer);
                println!("{json}");
            }
            Ok(())
        }
        Command::Grants { json } => {
            let Response::Grants { grants } = execute(&home_dir, Request::Grants).await? else { bail!("unexpected answer") };
            if json {
                println!("{}", serde_json::to_string_pretty(&grants)?);
            } else {
                print_grants(&grants);
            }
            Ok(())
        }
        Command::Revoke { grant_id } => {
            let Response::Revoked { grant_id, already } = execute(&home_dir, Request::Revoke { grant_id }).await? else { bail!("unexpected answer") };
            if already {
                println!("{grant_id} was already revoked");
            } else {
                println!("revoked {grant_id}");
            }
            Ok(())
        }
        Command::Preview { grant_id, json } => {
            let Response::Preview { claims } = execute(&home_dir, Request::Preview { grant_id }).await? else { bail!("unexpected answer") };
            if json {
                println!("{}", serde_json::to_string_pretty(&claims)?);
            } else {
                println!(
                    "{} would receive {} items ({} at {} granularity, {} to {}) for: {}",
                    claims.aud,
                    claims.items.len(),
                    claims.scope.kinds,
                    claims.scope.granularity,
                    optin_protocol::timestamp::format(claims.scope.since),
                    optin_protocol::timestamp::format(claims.scope.until),
                    claims.grant.purpose
                );
                for item in &claims.items {
                    println!("  {}", serde_json::to_string(item)?);
                }
            }
            Ok(())
        }
        Command::Audit { json, verify } => {
            let Response::Audit { records, chain, anonymous_refusals } = execute(&home_dir, Request::Audit).await? else { bail!("unexpected answer") };
            if verify {
                let n = chain.map_err(|e| anyhow::anyhow!(e))?;
                println!("audit chain intact ({n} records)");
            } else if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_audit(&records);
                if anonymous_refusals > 0 {
                    println!("and {anonymous_refusals} requests with unknown or forged tokens since the agent started (counted, not recorded one by one)");
                }
            }
            Ok(())
        }
        Command::Pause | Command::Resume => {
            let paused = matches!(cli.command, Command::Pause);
            execute(&home_dir, Request::Sharing { paused }).await?;
            println!("{}", if paused { "sharing paused: every slice is refused until `optin resume`" } else { "sharing resumed" });
            Ok(())
        }
    }
}

async fn import(home_dir: &Path, args: ImportArgs) -> Result<()> {
    let engines = crate::import::engines::Engines::builtin().context("the built-in engine rules do not load")?;
    let profile = match args.profile {
        Some(p) => p,
        None => {
            let user = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set; pass --profile")?;
            crate::import::default_profile(args.browser, &user)?
        }
    };
    let since = args.since.map(|s| crate::core::now() - s.duration());
    let searches = crate::import::read_searches(args.browser, &profile, since, &engines)?;
    let mut ndjson = String::new();
    let mut shown = Vec::new();
    for s in &searches {
        let line = serde_json::json!({
            "id": s.id,
            "kind": "search",
            "at": optin_protocol::timestamp::format(s.at),
            "query": s.query,
            "engine": s.engine,
            "source": s.source,
        });
        ndjson.push_str(&line.to_string());
        ndjson.push('\n');
        shown.push(line);
    }
    let Response::Ingested { stored, duplicates } = execute(home_dir, Request::Ingest { ndjson, dry_run: args.dry_run }).await? else {
        bail!("unexpected answer")
    };
    if args.json {
        println!("{}", serde_json::json!({ "found": searches.len(), "stored": stored, "duplicates": duplicates, "dry_run": args.dry_run, "searches": shown }));
    } else {
        if args.dry_run {
            for s in &searches {
                println!("{}  {:<20} {}", optin_protocol::timestamp::format(s.at), s.engine, s.query);
            }
        }
        let verb = if args.dry_run { "would add" } else { "added" };
        println!("found {} searches in {} history; {verb} {stored} ({duplicates} already present)", searches.len(), args.browser);
    }
    Ok(())
}

fn unexpected(response: Response) -> Result<()> {
    bail!("unexpected answer from the agent: {response:?}")
}

fn read_input(file: &Path) -> Result<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(text)
}

/// Runs a request through a session with the home at `home_dir`.
async fn execute(home_dir: &Path, request: Request) -> Result<Response> {
    let home = Home::open(home_dir)?;
    Ok(crate::session::execute(&home, request).await?)
}

fn print_signals(signals: &[SignalView]) {
    println!("{:<36} {:<9} {:<20} {:<10} WHAT", "ID", "KIND", "AT", "STATE");
    for view in signals {
        let s = &view.signal;
        let what = match &s.body {
            Body::Search { query, engine } => format!("\"{query}\" on {engine}"),
            Body::Purchase { total, currency, merchant, .. } => format!("{} {currency} at {merchant}", total.as_str()),
            Body::Cart { items, merchant, .. } => format!("{} items at {merchant}", items.len()),
        };
        let state = view.state.map(|st| serde_json::to_value(st).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()).unwrap_or_default();
        println!("{:<36} {:<9} {:<20} {:<10} {what}", s.id.as_str(), s.kind().to_string(), optin_protocol::timestamp::format(s.at), state);
    }
    println!("{} signals", signals.len());
}

fn print_grants(grants: &[GrantView]) {
    println!("{:<26} {:<8} {:<20} {:<22} {:<9} {:<6} EXPIRES", "GRANT", "STATE", "MARKETER", "KINDS", "LEVEL", "WINDOW");
    for g in grants {
        println!(
            "{:<26} {:<8} {:<20} {:<22} {:<9} {:<6} {}",
            g.grant_id,
            format!("{:?}", g.state).to_lowercase(),
            g.marketer,
            g.terms.kinds.to_string(),
            g.terms.granularity.to_string(),
            g.terms.window.to_string(),
            optin_protocol::timestamp::format(g.terms.expires_at)
        );
    }
}

fn print_audit(records: &[AuditEntry]) {
    println!("{:<5} {:<20} {:<8} {:<26} {:<20} DETAIL", "SEQ", "AT", "EVENT", "GRANT", "MARKETER");
    for entry in records {
        let r = &entry.record;
        let (event, grant, marketer, detail) = match &r.event {
            AuditEvent::Served { grant_id, marketer, items, asked, slice_id, .. } => {
                ("served", Some(grant_id), Some(marketer), format!("{items} items for {asked} (slice {slice_id})"))
            }
            AuditEvent::Refused { grant_id, marketer, asked, status, reason } => {
                ("refused", grant_id.as_ref(), marketer.as_ref(), format!("{status} {asked}: {reason}"))
            }
            AuditEvent::Granted { grant_id, marketer } => ("granted", Some(grant_id), Some(marketer), String::new()),
            AuditEvent::Revoked { grant_id, marketer } => ("revoked", Some(grant_id), Some(marketer), String::new()),
            AuditEvent::Forgot { count, what } => ("forgot", None, None, format!("{count} signals ({what})")),
            AuditEvent::Sharing { paused } => ("sharing", None, None, format!("paused={paused}")),
        };
        let grant = grant.map_or("-".to_owned(), ToString::to_string);
        println!(
            "{:<5} {:<20} {:<8} {:<26} {:<20} {detail}",
            r.seq,
            optin_protocol::timestamp::format(r.at),
            event,
            grant,
            marketer.map_or("-", String::as_str)
        );
    }
}
