//! The `optin` command line: each command turned into a [`Request`] and run through the
//! admin socket of a running agent or, when none runs, on the store directly
//! ([`crate::session`]).
//!
//! - [`args`]: every flag, defined once (help, man page and completions come from it);
//! - [`print`]: standard output that may close early, colour, tables, inert text;
//! - [`show`]: how each answer looks to a person.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 the command line
//! is wrong. A standard output closed early (`optin signals | head -1`) is success: the
//! reader has what it wanted. Errors go to standard error as `error: …`.
//!
//! Only `serve`, `ingest`, `import`, `grant`, `requests add`, `requests fetch`, `ingest-token`
//! and `browser install` (and the native host, which the browser starts) make a home that does
//! not exist: they start using optin, or set it up. Every other command looks at what is
//! there, and says so when there is no home rather than showing an empty one.

mod args;
mod never_share;
mod print;
mod receipt;
mod requests;
mod show;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ColorChoice, CommandFactory, FromArgMatches};
use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::GrantId;
use optin_protocol::slice::SliceClaims;

pub use args::Cli;
use args::{BrowserCommand, ColorWhen, Command, ForgetArgs, GrantArgs, ImportArgs, OutputArgs, ServeArgs};
use print::{count, inert, inert_lines, is_stdout_closed, paint, Printer, Style};
use show::StatusView;

use crate::browser::LastConnection;
use crate::core::command::{AuditEntry, CheckpointView, CountedRefusals, Forget, PushTo, Reply, Request, Response};
use crate::home::{self, Home, IfExists};
use crate::keys::Keys;
use crate::session::{self, Failed};
use crate::tls::TlsSource;

/// A command line that parsed but cannot be run as given (exit 2, like clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// Crates that log what they store or carry (sled its keys and values, h2 and hyper their
/// frames, rustls its records) at their finer levels: from them, nothing finer than `warn`
/// is ever written, whatever `OPTIN_LOG` asks for, so the person's signals and the tokens on
/// the wire never reach a log. A filter on targets rather than `OPTIN_LOG` directives, which a
/// more specific directive (`sled::tree=trace`) would override.
const CAPPED_TARGETS: [&str; 6] = ["sled", "h2", "hyper", "hyper_util", "rustls", "tokio_rustls"];

fn capped(target: &str) -> bool {
    CAPPED_TARGETS.iter().any(|c| target == *c || target.strip_prefix(c).is_some_and(|rest| rest.starts_with("::")))
}

/// Logging to standard error: `OPTIN_LOG` (default `warn`), with the caps above.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let asked = tracing_subscriber::EnvFilter::try_from_env("OPTIN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let layer = tracing_subscriber::fmt::layer().with_writer(io::stderr).with_filter(log_filter(asked));
    tracing_subscriber::registry().with(layer).init();
}

/// What `OPTIN_LOG` asked for, within the caps. The caps only take away, so they hint no
/// level of their own (`TRACE`): the filter's hint is then the asked one, and `init` sets the
/// `log` crate's maximum level from it. Without a hint it was `TRACE`, and every `trace!` of
/// sled's (several per store operation) was formatted into a record only to be dropped.
fn log_filter<S>(asked: tracing_subscriber::EnvFilter) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
    let caps = filter_fn(|meta| !capped(meta.target()) || *meta.level() <= tracing::Level::WARN).with_max_level_hint(LevelFilter::TRACE);
    asked.and(caps)
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version exit 0, a wrong command line 2. Printing is best effort: a
            // closed pipe after `optin --help | head -1` is no failure.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_logging();
    let stderr_color = use_color(cli.color, io::stderr().is_terminal());
    let mut out = Printer::stdout(use_color(cli.color, io::stdout().is_terminal()));
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli, &mut out)),
        Err(e) => Err(anyhow!(e).context("cannot start the runtime")),
    };
    let result = result.and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // What was printed before the failure still goes out, then why it stopped.
            let _ = out.flush();
            let message = format!("{}: {}", paint(stderr_color, "error", Style::Red), inert_lines(&format!("{e:#}")));
            let _ = writeln!(io::stderr().lock(), "{message}");
            ExitCode::from(if e.downcast_ref::<Usage>().is_some() { 2 } else { 1 })
        }
    }
}

/// Parses the command line, with clap's own help and errors coloured as `--color` says.
fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command().color(clap_color(&args));
    let mut matches = command.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// What `--color` asks of clap, which has to know before it parses the flag: the last
/// `--color WHEN` or `--color=WHEN` before `--`. A value clap refuses leaves its default,
/// `auto`, which like ours honours NO_COLOR.
fn clap_color(args: &[OsString]) -> ColorChoice {
    let mut choice = ColorChoice::Auto;
    let mut args = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = args.next() {
        let value = match arg {
            Some("--") => break,
            Some("--color") => args.next().flatten(),
            Some(arg) => arg.strip_prefix("--color="),
            None => None,
        };
        choice = match value {
            Some("always") => ColorChoice::Always,
            Some("never") => ColorChoice::Never,
            Some("auto") => ColorChoice::Auto,
            _ => choice,
        };
    }
    choice
}

/// Whether to colour a stream: `--color always|never` decides; `auto` colours a terminal
/// unless `NO_COLOR` is set to anything but the empty string (no-color.org).
fn use_color(when: ColorWhen, terminal: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => terminal && !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty()),
    }
}

async fn run(cli: Cli, p: &mut Printer) -> Result<()> {
    let Cli { home, command, .. } = cli;
    // Resolved only for the commands that use a home: `man` and `completions` work anywhere.
    let dir = || home.clone().map_or_else(Home::default_dir, Ok);
    match command {
        Command::Serve(args) => serve(dir()?, args).await,
        Command::Status { json } => status(&Home::open_existing(&dir()?)?, json, p).await,
        Command::Ingest { file, dry_run, json } => {
            let ndjson = read_input(&file)?;
            let home = Home::open_or_create(&dir()?)?;
            let Response::Ingested { stored, duplicates } = execute(&home, Request::Ingest { ndjson, dry_run }).await? else { return unexpected() };
            if json {
                p.json(&serde_json::to_string(&IngestCounts { stored, duplicates })?)?;
            } else {
                let verb = if dry_run { "would store" } else { "stored" };
                writeln!(p, "{verb} {} ({duplicates} already present)", count(stored, "signal", "signals"))?;
            }
            Ok(())
        }
        Command::IngestToken => {
            let home = Home::open_or_create(&dir()?)?;
            writeln!(p, "{}", Keys::load_or_create(&home)?.ingest_token())?;
            Ok(())
        }
        Command::Import(args) => import(&Home::open_or_create(&dir()?)?, args, p).await,
        Command::Signals { kind, json } => {
            let home = Home::open_existing(&dir()?)?;
            let Response::Signals { signals } = execute(&home, Request::Signals { kind }).await? else { return unexpected() };
            if json {
                p.json(&serde_json::to_string_pretty(&signals)?)?;
            } else {
                show::signals(p, &signals, kind)?;
            }
            Ok(())
        }
        Command::Forget(args) => forget(&Home::open_existing(&dir()?)?, args, p).await,
        Command::Grant(args) => grant(&dir()?, args, p).await,
        Command::Grants { json } => {
            let home = Home::open_existing(&dir()?)?;
            let Response::Grants { mut grants } = execute(&home, Request::Grants).await? else { return unexpected() };
            grants.sort_by(|a, b| (a.created_at, a.grant_id.as_str()).cmp(&(b.created_at, b.grant_id.as_str())));
            if json {
                p.json(&serde_json::to_string_pretty(&grants)?)?;
            } else {
                show::grants(p, &grants)?;
            }
            Ok(())
        }
        Command::Receipt { grant_id, json } => receipt::receipt(&Home::open_existing(&dir()?)?, grant_id, json, p).await,
        Command::Bundle { grant_id, output } => bundle(&Home::open_existing(&dir()?)?, grant_id, output, p).await,
        Command::Preview { grant_id, limit, json } => {
            let home = Home::open_existing(&dir()?)?;
            let pages = preview_pages(&home, grant_id, limit).await?;
            if json {
                p.json(&serde_json::to_string_pretty(&pages)?)?;
            } else {
                show::preview(p, &pages)?;
            }
            Ok(())
        }
        Command::Revoke { grant_id, partner: Some(audience) } => {
            let home = Home::open_existing(&dir()?)?;
            let Response::PartnerRevoked { grant_id, audience, already } = execute(&home, Request::RevokePartner { grant_id, audience }).await? else {
                return unexpected();
            };
            let verb = if already { "was already cut off" } else { "is cut off" };
            writeln!(p, "{audience} {verb} from {grant_id}: its tokens are refused; the grant still serves its marketer and other partners")?;
            Ok(())
        }
        Command::Revoke { grant_id, partner: None } => {
            let home = Home::open_existing(&dir()?)?;
            let Response::Revoked { grant_id, already } = execute(&home, Request::Revoke { grant_id }).await? else { return unexpected() };
            if already {
                writeln!(p, "{grant_id} was already revoked")?;
            } else {
                writeln!(p, "revoked {grant_id}")?;
            }
            Ok(())
        }
        Command::Requests(args) => requests::requests(&dir()?, args, p).await,
        Command::Approve(args) => requests::approve(&Home::open_existing(&dir()?)?, args, p).await,
        Command::Deny { name } => requests::deny(&Home::open_existing(&dir()?)?, name, p).await,
        Command::Audit { json, verify, summary, only } => {
            let home = Home::open_existing(&dir()?)?;
            let mut log = read_audit(&home, verify).await?;
            if verify {
                let n = log.chain.map_err(|broken| anyhow!("the audit chain is broken: {broken}"))?;
                let pruned = log.checkpoint.as_ref().map_or(0, |c| c.checkpoint.seq);
                let kept = count(usize::try_from(n - pruned.min(n)).unwrap_or(usize::MAX), "record", "records");
                match pruned {
                    0 => writeln!(p, "audit chain intact ({kept})")?,
                    seq => writeln!(p, "audit chain intact ({kept} after the checkpoint at record {seq})")?,
                }
                return Ok(());
            }
            let since = only.since.map(|m| m.resolve(crate::core::now()));
            log.records.retain(|e| show::names(&e.record.event, only.grant.as_ref(), only.marketer.as_deref()) && since.map_or(true, |t| e.record.at >= t));
            log.counted.retain(|c| {
                let n = &c.count;
                only.grant.as_ref().map_or(true, |g| *g == n.grant_id)
                    && only.marketer.as_ref().map_or(true, |m| *m == n.marketer)
                    && since.map_or(true, |t| n.last >= t)
            });
            // The checkpoint's counts are of records before it: they belong to what is shown
            // unless `--since` starts after its first record.
            if let Some(view) = &mut log.checkpoint {
                view.checkpoint.grants.retain(|g| {
                    only.grant.as_ref().map_or(true, |id| *id == g.grant_id)
                        && only.marketer.as_ref().map_or(true, |m| *m == g.marketer)
                        && since.map_or(true, |t| t <= view.checkpoint.first_at)
                });
            }
            if summary {
                show::audit_summary(p, &log.records, &log.counted, log.checkpoint.as_deref())?;
            } else if json {
                let checkpoint = log.checkpoint.as_ref().map(|c| CheckpointJson { checkpoint: &c.checkpoint, intact: c.intact });
                let all = AuditJson { checkpoint, records: &log.records, counted: &log.counted, anonymous_refusals: log.anonymous_refusals };
                p.json(&serde_json::to_string_pretty(&all)?)?;
            } else {
                show::audit(p, log.checkpoint.as_deref(), &log.records, &log.counted, log.anonymous_refusals)?;
            }
            Ok(())
        }
        Command::Exclude { entry } => never_share::change(&Home::open_or_create(&dir()?)?, Request::Exclude { entry }, p).await,
        Command::Include { entry } => never_share::change(&Home::open_or_create(&dir()?)?, Request::Include { entry }, p).await,
        Command::Exclusions { json } => never_share::list(&Home::open_or_create(&dir()?)?, json, p).await,
        Command::Pause | Command::Resume => {
            let paused = matches!(command, Command::Pause);
            execute(&Home::open_existing(&dir()?)?, Request::Sharing { paused }).await?;
            writeln!(p, "{}", if paused { "sharing paused: every slice is refused until `optin resume`" } else { "sharing resumed" })?;
            Ok(())
        }
        Command::Browser(cmd) => browser(&dir()?, cmd, p).await,
        Command::NativeHost { args } => crate::browser::native_host::run(&dir()?, &args).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "optin", &mut script);
            Ok(p.write_all(&script)?)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            Ok(p.write_all(&page)?)
        }
    }
}

/// `optin ingest --json`: what was stored, as `POST /v1/signals` answers it.
#[derive(serde::Serialize)]
struct IngestCounts {
    stored: usize,
    duplicates: usize,
}

/// Every page a marketer could fetch now, following the cursors as a marketer would. The
/// pages are cut one request at a time, so a signal stored or forgotten meanwhile shows as
/// it would to the marketer.
async fn preview_pages(home: &Home, grant_id: GrantId, limit: Option<u32>) -> Result<Vec<SliceClaims>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let request = Request::Preview { grant_id: grant_id.clone(), limit, cursor };
        let Response::Preview { claims } = execute(home, request).await? else { return unexpected() };
        cursor = claims.next_cursor.clone();
        pages.push(*claims);
        if cursor.is_none() {
            return Ok(pages);
        }
    }
}

/// `optin audit --json`: the records and the refusals counted rather than recorded, so
/// that a reader of the JSON misses nothing the table shows.
#[derive(serde::Serialize)]
struct AuditJson<'a> {
    /// What stands for the records pruned, when some were.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<CheckpointJson<'a>>,
    records: &'a [AuditEntry],
    counted: &'a [CountedRefusals],
    /// Refusals of unknown or forged tokens since the agent started.
    anonymous_refusals: u64,
}

/// The checkpoint as `optin audit --json` prints it: its own fields, and whether it carries
/// its MAC.
#[derive(serde::Serialize)]
struct CheckpointJson<'a> {
    #[serde(flatten)]
    checkpoint: &'a crate::store::AuditCheckpoint,
    intact: bool,
}

/// The audit log, read page by page and verified as it is read.
struct AuditRead {
    /// The checkpoint, as the last page read saw it.
    checkpoint: Option<Box<CheckpointView>>,
    records: Vec<AuditEntry>,
    /// The verdict: the first page that fails, or the last page's.
    chain: Result<u64, String>,
    counted: Vec<CountedRefusals>,
    anonymous_refusals: u64,
}

impl AuditRead {
    /// Takes in a page: its checkpoint, and the records to keep.
    fn page(&mut self, checkpoint: Option<Box<CheckpointView>>, records: Vec<AuditEntry>) {
        // Records pruned between pages are not read again: the next page starts after them.
        // Those pruned after an earlier page read them are counted by the page's checkpoint
        // now, so they go from what was read, or a summary would count them twice.
        if let Some(pruned) = checkpoint.as_ref().map(|c| c.checkpoint.seq) {
            self.records.retain(|e| e.record.seq > pruned);
        }
        self.checkpoint = checkpoint;
        self.records.extend(records);
    }
}

/// Reads the whole audit log a page at a time (one answer per page keeps each small however
/// long the log). With `verify_only`, records are checked but not kept, and reading stops at
/// the first break.
async fn read_audit(home: &Home, verify_only: bool) -> Result<AuditRead> {
    let mut read = AuditRead { checkpoint: None, records: Vec::new(), chain: Ok(0), counted: Vec::new(), anonymous_refusals: 0 };
    let mut since_seq = 0;
    loop {
        let Response::Audit { records, chain, next, counted, anonymous_refusals, checkpoint } =
            execute(home, Request::Audit { since_seq, limit: None }).await?
        else {
            return unexpected();
        };
        read.page(checkpoint, if verify_only { Vec::new() } else { records });
        if read.chain.is_ok() {
            read.chain = chain;
        }
        (read.counted, read.anonymous_refusals) = (counted, anonymous_refusals);
        match next {
            Some(after) if after > since_seq && !(verify_only && read.chain.is_err()) => since_seq = after,
            _ => return Ok(read),
        }
    }
}

/// Runs a request through a session with `home`.
async fn execute(home: &Home, request: Request) -> Result<Response> {
    Ok(session::execute(home, request).await?)
}

fn unexpected<T>() -> Result<T> {
    bail!("the agent answered with something other than this command's answer (is it another version of optin?)")
}

async fn serve(dir: PathBuf, args: ServeArgs) -> Result<()> {
    let tls = TlsSource { user: args.tls_cert.zip(args.tls_key) };
    let config = crate::serve::ServeConfig {
        home: dir,
        listen: args.listen,
        tls,
        abandon_after: args.abandon_after,
        max_connections: args.max_connections as usize,
        public_url: args.public_url,
        outbound: args.outbound.config(),
        audit_keep: crate::store::AuditKeep::new(args.audit_keep_records, args.audit_keep_age)?,
    };
    crate::serve::run(config).await
}

async fn status(home: &Home, json: bool, p: &mut Printer) -> Result<()> {
    // Asked on the admin socket first, so the answer says whether an agent is there.
    let (running, status) = match session::call(&home.admin_socket(), &Request::Status).await? {
        Some(Reply::Ok(Response::Status(status))) => (true, status),
        Some(Reply::Ok(_)) => return unexpected(),
        Some(Reply::Err { kind, message }) => return Err(Failed { kind, message }.into()),
        None => match execute(home, Request::Status).await? {
            Response::Status(status) => (false, status),
            _ => return unexpected(),
        },
    };
    let view = StatusView { home: home.root(), running, status: &status, extension: LastConnection::read(home) };
    if json {
        p.json(&view.json()?)?;
    } else {
        view.write(p)?;
    }
    Ok(())
}

async fn import(home: &Home, args: ImportArgs, p: &mut Printer) -> Result<()> {
    let engines = crate::import::engines::Engines::builtin().context("the built-in engine rules do not load")?;
    let profile = match args.profile {
        Some(profile) => profile,
        None => {
            let user = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set; pass --profile")?;
            crate::import::default_profile(args.browser, &user)?
        }
    };
    let since = args.since.map(|s| s.resolve(crate::core::now()));
    let found = crate::import::read_searches(args.browser, &profile, since, &engines)?;
    let searches = &found.searches;
    // The agent takes at most BATCH_SIGNALS signals a request, each request stored and
    // flushed before its answer: a history of any size goes in batches, and one that fails
    // leaves the batches before it stored (importing again skips them as duplicates).
    let (mut stored, mut duplicates) = (0, 0);
    for batch in searches.chunks(optin_protocol::signal::limits::BATCH_SIGNALS) {
        let ndjson: String = batch.iter().map(|s| s.ndjson() + "\n").collect();
        let answer = execute(home, Request::Ingest { ndjson, dry_run: args.dry_run })
            .await
            .with_context(|| format!("after {} of {} searches were added", stored + duplicates, searches.len()))?;
        let Response::Ingested { stored: s, duplicates: d } = answer else { return unexpected() };
        (stored, duplicates) = (stored + s, duplicates + d);
    }
    if args.json {
        let shown: Vec<serde_json::Value> = searches.iter().map(|s| serde_json::from_str(&s.ndjson())).collect::<Result<_, _>>()?;
        let skipped: serde_json::Map<String, serde_json::Value> = found.skipped.iter().map(|(why, n)| (why.key().to_owned(), n.into())).collect();
        let summary = serde_json::json!({ "found": searches.len(), "stored": stored, "duplicates": duplicates, "skipped": skipped, "dry_run": args.dry_run, "searches": shown });
        p.json(&summary.to_string())?;
        return Ok(());
    }
    if args.dry_run {
        let mut table = print::Table::new(&[("AT", 20), ("ENGINE", 24), ("QUERY", 60)]);
        for s in searches {
            table.row(vec![print::Cell::new(print::time(s.at)), print::Cell::new(&s.engine), print::Cell::new(&s.query)]);
        }
        if !searches.is_empty() {
            table.write(p)?;
        }
    }
    let verb = if args.dry_run { "would add" } else { "added" };
    writeln!(p, "found {} in {} history; {verb} {stored} ({duplicates} already present)", count(searches.len(), "search", "searches"), args.browser)?;
    if found.skipped.total() > 0 {
        // Reasons only: the rows themselves are text from another program.
        let reasons: Vec<String> = found.skipped.iter().map(|(why, n)| format!("{n} with {why}")).collect();
        writeln!(p, "skipped {} that could not be read: {}", count(found.skipped.total(), "row", "rows"), reasons.join(", "))?;
    }
    Ok(())
}

async fn forget(home: &Home, args: ForgetArgs, p: &mut Printer) -> Result<()> {
    let what = args.what;
    let what = match (what.id, what.kind, what.before, what.all) {
        (Some(id), ..) => Forget::Id(id),
        (_, Some(kind), ..) => Forget::Kind(kind),
        (_, _, Some(before), _) => Forget::Before(before.resolve(crate::core::now())),
        _ => Forget::All,
    };
    if matches!(what, Forget::All) && !args.yes {
        confirm_forget_all(home).await?;
    }
    let Response::Forgot { count: n } = execute(home, Request::Forget { what }).await? else { return unexpected() };
    writeln!(p, "forgot {}", count(n, "signal", "signals"))?;
    Ok(())
}

/// Asks before forgetting everything, on a terminal; elsewhere nobody can answer, so
/// `--yes` must say it (exit 2: the command line lacks it).
async fn confirm_forget_all(home: &Home) -> Result<()> {
    if !io::stdin().is_terminal() {
        return Err(Usage("forget --all forgets every signal for good: pass --yes to confirm it (standard input is not a terminal, so nobody can be asked); nothing was forgotten".into()).into());
    }
    let Response::Status(status) = execute(home, Request::Status).await? else { return unexpected() };
    let total: usize = status.signals.values().sum();
    if total == 0 {
        return Ok(());
    }
    let mut stderr = io::stderr().lock();
    write!(stderr, "forget all {} for good? [y/N] ", count(total, "signal", "signals"))
        .and_then(|()| stderr.flush())
        .context("cannot ask on standard error")?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer).context("cannot read the answer")?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("not confirmed: nothing was forgotten"),
    }
}

async fn grant(dir: &Path, args: GrantArgs, p: &mut Printer) -> Result<()> {
    // Checked before the grant is made, so a taken name or a missing directory does not
    // leave a grant whose bundle went nowhere.
    if let Some(path) = args.output.output.as_deref() {
        if !args.output.force && path.symlink_metadata().is_ok() {
            return Err(exists(path));
        }
        if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("cannot write {}: there is no directory {}", path.display(), parent.display());
        }
    }
    let home = Home::open_or_create(dir)?;
    let request = Request::Grant {
        marketer: args.marketer,
        kinds: args.kinds,
        granularity: args.granularity,
        window: args.window,
        expires: args.expires,
        purpose: args.purpose,
        push: args.push.clone().map(|inbox| PushTo { inbox, every: args.push_every }),
        noise: args.noise.into_choice(),
        filters: args.filters.into_filters(),
    };
    let Response::Granted { bundle, would_share } = execute(&home, request).await? else { return unexpected() };
    if let Some(path) = &args.output.output {
        write_bundle(path, &bundle, args.output.force)
            .with_context(|| format!("{} was granted, but its bundle was not written (`optin bundle {0} --output FILE` writes it)", bundle.grant_id))?;
        show::grant_summary(p, &bundle)?;
        show::filters_line(p, &bundle.terms)?;
        show::now_shares(p, would_share.as_ref(), &bundle.terms)?;
        show::delivery(p, args.push.as_deref().map(|inbox| (inbox, args.push_every)))?;
        return sent_privately(p, path, &bundle);
    }
    let json = serde_json::to_string_pretty(&bundle)?;
    if !args.json {
        show::grant_summary(p, &bundle)?;
        show::filters_line(p, &bundle.terms)?;
        show::now_shares(p, would_share.as_ref(), &bundle.terms)?;
        show::delivery(p, args.push.as_deref().map(|inbox| (inbox, args.push_every)))?;
        show::hand_over(p, &bundle)?;
    }
    p.json(&json)?;
    Ok(())
}

async fn bundle(home: &Home, grant_id: GrantId, output: OutputArgs, p: &mut Printer) -> Result<()> {
    let Response::Bundle { bundle } = execute(home, Request::Bundle { grant_id }).await? else { return unexpected() };
    match &output.output {
        Some(path) => {
            write_bundle(path, &bundle, output.force)?;
            sent_privately(p, path, &bundle)
        }
        None => Ok(p.json(&serde_json::to_string_pretty(&bundle)?)?),
    }
}

fn sent_privately(p: &mut Printer, path: &Path, bundle: &GrantBundle) -> Result<()> {
    let file = path.display().to_string();
    writeln!(p, "wrote the bundle to {}: give it to {} privately (it holds their token)", inert(&file), inert(&bundle.marketer))?;
    Ok(())
}

fn exists(path: &Path) -> anyhow::Error {
    anyhow!("{} already exists: choose another file, or pass --force to replace it", path.display())
}

/// Writes a bundle to a new 0600 file (see [`home::write_new_private`]).
fn write_bundle(path: &Path, bundle: &GrantBundle, force: bool) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(bundle)?;
    json.push(b'\n');
    let if_exists = if force { IfExists::Replace } else { IfExists::Refuse };
    home::write_new_private(path, &json, if_exists).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => exists(path),
        _ => anyhow!(e).context(format!("cannot write {}", path.display())),
    })
}

async fn browser(dir: &Path, command: BrowserCommand, p: &mut Printer) -> Result<()> {
    // Looking, or removing manifests, needs no home; one that is there is still checked.
    let existing = || if dir.exists() { Home::open_existing(dir) } else { Ok(Home::unopened(dir)) };
    match command {
        BrowserCommand::Install { browser, manifest_dir } => {
            let home = Home::open_or_create(dir)?;
            for path in crate::browser::manifest::install(&home, browser, manifest_dir.as_deref())? {
                writeln!(p, "installed {}", inert(&path.display().to_string()))?;
            }
        }
        BrowserCommand::Status { manifest_dir } => {
            let home = existing()?;
            for line in crate::browser::manifest::status(&home, manifest_dir.as_deref())? {
                writeln!(p, "{}", inert(&line))?;
            }
            let running = matches!(session::call(&home.admin_socket(), &Request::Status).await, Ok(Some(_)));
            writeln!(p, "agent: {}", if running { "running" } else { "not running (signals wait in the extension until it starts)" })?;
        }
        BrowserCommand::Uninstall { browser, manifest_dir } => {
            let home = existing()?;
            let removed = crate::browser::manifest::uninstall(&home, browser, manifest_dir.as_deref())?;
            for path in &removed {
                writeln!(p, "removed {}", inert(&path.display().to_string()))?;
            }
            if removed.is_empty() {
                writeln!(p, "nothing to remove")?;
            }
        }
    }
    Ok(())
}

fn read_input(file: &Path) -> Result<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn caps_apply_to_a_crate_and_its_modules_only() {
        let table =
            [("sled", true), ("rustls::common_state", true), ("h2::proto", true), ("hyper", true), ("sledgehammer", false), ("optin_agent::serve", false)];
        for (target, is_capped) in table {
            assert_eq!(super::capped(target), is_capped, "{target}");
        }
    }

    #[test]
    fn the_log_filter_hints_the_level_asked_for() {
        use tracing_subscriber::filter::LevelFilter;
        use tracing_subscriber::layer::Filter;
        use tracing_subscriber::EnvFilter;
        for (asked, hint) in
            [("warn", LevelFilter::WARN), ("info", LevelFilter::INFO), ("optin_agent=debug,warn", LevelFilter::DEBUG), ("off", LevelFilter::OFF)]
        {
            let filter = super::log_filter::<tracing_subscriber::Registry>(EnvFilter::new(asked));
            assert_eq!(Filter::max_level_hint(&filter), Some(hint), "{asked}");
        }
    }

    #[test]
    fn records_pruned_between_pages_are_counted_once() {
        use crate::core::command::{AuditEntry, CheckpointView};
        use crate::store::record::{AuditCheckpoint, AuditEvent, AuditRecord};
        let at = time::macros::datetime!(2026-11-20 10:00 UTC);
        let entry =
            |seq| AuditEntry { record: AuditRecord { seq, at, prev: "00".repeat(32), event: AuditEvent::Sharing { paused: false } }, hash: "00".repeat(32) };
        let pruned_to = |seq| {
            let mut checkpoint = AuditCheckpoint::start(&entry(1).record);
            for n in 1..=seq {
                checkpoint.fold(&entry(n).record, [0; 32]);
            }
            Some(Box::new(CheckpointView { checkpoint, intact: true }))
        };
        let mut read = super::AuditRead { checkpoint: None, records: Vec::new(), chain: Ok(0), counted: Vec::new(), anonymous_refusals: 0 };
        read.page(pruned_to(2), (3..=5).map(entry).collect());
        // Records up to 4 pruned before the next page was read: the checkpoint counts them.
        read.page(pruned_to(4), (6..=7).map(entry).collect());
        let seqs: Vec<u64> = read.records.iter().map(|e| e.record.seq).collect();
        assert_eq!(seqs, [5, 6, 7]);
        assert_eq!(read.checkpoint.map(|c| c.checkpoint.seq), Some(4));
    }

    use clap::ColorChoice;

    use super::clap_color;

    #[test]
    fn clap_colours_as_the_color_flag_says() {
        for (args, expected) in [
            (&["optin", "signals"][..], ColorChoice::Auto),
            (&["optin", "--color", "always", "signals"], ColorChoice::Always),
            (&["optin", "signals", "--color=never"], ColorChoice::Never),
            (&["optin", "--color", "never", "signals", "--color", "always"], ColorChoice::Always),
            (&["optin", "--color", "sometimes", "signals"], ColorChoice::Auto),
            (&["optin", "--color"], ColorChoice::Auto),
            (&["optin", "ingest", "--", "--color=always"], ColorChoice::Auto),
        ] {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            assert_eq!(clap_color(&args), expected, "{args:?}");
        }
    }
}
