//! `optin requests`, `optin approve` and `optin deny`: consent requests from marketers, shown
//! in plain words with what the person would share now, and decided by the person.
//!
//! A request is a stranger's text. The agent refuses one holding control, bidirectional or
//! invisible characters, and everything from it is made inert here all the same before it
//! reaches the terminal.
//!
//! `requests fetch` is the one command that reaches out to a marketer, and only when the
//! person runs it: [`crate::site`] reads the domain's well-known document, here in the CLI
//! rather than in the agent, so a running agent never connects anywhere on its own to learn
//! of a request. What it fetched goes through the session like `requests add`, with the
//! domain it came from, and the agent verifies it there; the extension's "does this site
//! ask?" goes through the same code from the native host.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use optin_protocol::request::{Delivery, Request as ConsentRequest};
use optin_protocol::scope::Granularity;
use optin_protocol::signal::{Kind, Kinds};
use optin_protocol::span::Span;

use super::args::OutboundArgs;
use super::print::{count, inert, time, Cell, Printer, Style, Table};
use super::{execute, read_input, show, unexpected};
use crate::core::command::{ApprovalChoices, Request, RequestName, RequestState, RequestView, Response, ShareSummary, WouldShare};
use crate::home::Home;
use crate::outbound::Client;
use crate::site::Site;

/// `optin requests`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RequestsArgs {
    /// Add or show one; without a command, list them all.
    #[command(subcommand)]
    pub command: Option<RequestsCommand>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `optin requests …`.
#[derive(Subcommand, Debug)]
pub enum RequestsCommand {
    /// Add a signed request from a file (or - for standard input); it waits for your decision.
    Add {
        /// The file holding the request (one JWS), or - for standard input.
        file: PathBuf,
    },
    /// Fetch a marketer's requests from https://DOMAIN/.well-known/optin-request.json and
    /// check each against DOMAIN; they wait for your decision. Nothing is fetched otherwise.
    #[command(after_help = FETCH_HELP)]
    Fetch {
        /// The marketer's domain, lowercase, like shop.example; DOMAIN:PORT for a site
        /// served on another port than 443 (the certificate must name DOMAIN all the same).
        domain: Site,
        #[command(flatten)]
        outbound: OutboundArgs,
    },
    /// Show a request in plain words, with what you would share now under its terms.
    Show {
        /// The request: its id, or DOMAIN/ID.
        name: RequestName,
        /// Print the request and the preview as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `requests fetch --help` adds about how it reads the site.
const FETCH_HELP: &str = "The document is read over HTTPS only, at most 1 MiB, within a minute, with no redirect \
followed and no cookie kept; the site's certificate must be valid for DOMAIN under the system's trusted authorities \
or a --ca-file. --push-proxy applies to this fetch too: without it, the marketer sees your address. \
A request that does not verify, or that names another domain, is refused and nothing of it is stored; \
the others are added, pending until you approve or deny them.";

/// `optin approve`: every option narrows the request's term; none may widen it.
#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The request: its id, or DOMAIN/ID.
    pub name: RequestName,
    /// Share fewer kinds: any of the requested ones, like search,cart.
    #[arg(long, value_name = "KINDS")]
    pub kinds: Option<Kinds>,
    /// How far back slices reach, at most the requested window, like 7d.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    pub window: Option<Span>,
    /// category (kind, category and day only), aggregate (noisy counts: see --epsilon), or
    /// raw if the request asks for raw.
    #[arg(long, value_name = "LEVEL")]
    pub granularity: Option<Granularity>,
    /// How long the grant lasts, at most the requested duration, like 30d.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    pub expires: Option<Span>,
    /// Only these category paths (each within a requested one), like "Apparel > Shoes".
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub categories: Option<Vec<String>>,
    /// Only these merchants (among the requested ones), like shoes.example,trail.example.
    #[arg(long, value_name = "DOMAINS", num_args = 1.., value_delimiter = ',')]
    pub merchants: Option<Vec<String>>,
    /// With raw granularity: only these fields (among the requested ones), like
    /// merchant,items.name; `optin grant --help` lists them.
    #[arg(long, value_name = "FIELDS", value_delimiter = ',')]
    pub fields: Option<Vec<String>>,
    /// At most this many slices per UTC day or clock hour (no more than the request's), like
    /// 1/day.
    #[arg(long, value_name = "N/day|N/hour")]
    pub rate: Option<optin_protocol::rate::Rate>,
    /// With aggregate granularity (asked, or chosen with --granularity aggregate): the noise.
    #[command(flatten)]
    pub noise: super::args::NoiseArgs,
}

/// `optin requests [add FILE | show ID]`.
pub(super) async fn requests(dir: &std::path::Path, args: RequestsArgs, p: &mut Printer) -> Result<()> {
    match args.command {
        None => {
            let home = Home::open_existing(dir)?;
            let Response::ConsentRequests { requests } = execute(&home, Request::ConsentRequests).await? else { return unexpected() };
            if args.json {
                p.json(&serde_json::to_string_pretty(&requests)?)?;
            } else {
                list(p, &requests)?;
            }
            Ok(())
        }
        Some(RequestsCommand::Add { file }) => {
            let jws = read_input(&file)?;
            // Adding one starts using optin, like `ingest`: a home that is not there is made.
            let home = Home::open_or_create(dir)?;
            let Response::RequestAdded { request, already, key_changed } = execute(&home, Request::AddConsentRequest { jws, fetched_from: None }).await? else {
                return unexpected();
            };
            added(p, &request, already, key_changed)
        }
        Some(RequestsCommand::Fetch { domain, outbound }) => fetch(dir, &domain, outbound, p).await,
        Some(RequestsCommand::Show { name, json }) => {
            let home = Home::open_existing(dir)?;
            let Response::ConsentRequest { request, would_share } = execute(&home, Request::ConsentRequest { name }).await? else { return unexpected() };
            if json {
                let shown = serde_json::json!({ "request": request, "would_share": would_share });
                p.json(&serde_json::to_string_pretty(&shown)?)?;
            } else {
                detail(p, &request, would_share.as_ref())?;
            }
            Ok(())
        }
    }
}

/// `optin requests fetch DOMAIN`: the domain's published requests, each verified against
/// the domain and added on its own, so one bad request does not hide the others.
async fn fetch(dir: &std::path::Path, site: &Site, outbound: OutboundArgs, p: &mut Printer) -> Result<()> {
    let client = Client::new(outbound.config()).context("cannot set up HTTPS")?;
    let published = crate::site::fetch(&client, site).await?;
    // Made only now, like `requests add` would: a fetch that failed leaves no home behind.
    let home = Home::open_or_create(dir)?;
    let total = published.len();
    writeln!(p, "fetched {}: {}", published.url(), count(total, "request", "requests"))?;
    let mut outcomes = match published.add(&home).await {
        Ok(outcomes) => outcomes,
        Err(mut stopped) => {
            for a in std::mem::take(&mut stopped.added) {
                added(p, &a.request, a.already, a.key_changed)?;
            }
            return Err(stopped.into());
        }
    };
    for a in &outcomes.added {
        added(p, &a.request, a.already, a.key_changed)?;
    }
    match outcomes.refused.len() {
        0 => Ok(()),
        1 => Err(anyhow!("{}", outcomes.refused.remove(0))),
        n => {
            let lines: Vec<String> = outcomes.refused.iter().map(ToString::to_string).collect();
            Err(anyhow!("{n} of the {total} requests from {} were refused:\n{}", site.domain(), lines.join("\n")))
        }
    }
}

/// `optin approve`.
pub(super) async fn approve(home: &Home, args: ApproveArgs, p: &mut Printer) -> Result<()> {
    let choices = ApprovalChoices {
        kinds: args.kinds,
        granularity: args.granularity,
        window: args.window,
        expires: args.expires,
        categories: args.categories,
        merchants: args.merchants,
        fields: args.fields,
        rate: args.rate,
        noise: args.noise.into_choice(),
    };
    let Response::Approved { bundle, request, would_share } = execute(home, Request::Approve { name: args.name, choices }).await? else { return unexpected() };
    let r = &request.request;
    writeln!(p, "approved request {} of {} ({})", inert(r.id.as_str()), inert(&r.marketer.name), inert(&r.marketer.domain))?;
    show::grant_summary(p, &bundle)?;
    let filters = show::filters(&bundle.terms);
    if !filters.is_empty() {
        writeln!(p, "filters: {}", inert(filters.trim_start_matches(", ")))?;
    }
    show::now_shares(p, would_share.as_ref(), &bundle.terms)?;
    let push = match &r.delivery {
        Delivery::Push { inbox, every } => Some((inbox.as_str(), *every)),
        Delivery::Pull => None,
    };
    show::delivery(p, push)?;
    show::hand_over(p, &bundle)?;
    p.json(&serde_json::to_string_pretty(&bundle)?)?;
    Ok(())
}

/// `optin deny`.
pub(super) async fn deny(home: &Home, name: RequestName, p: &mut Printer) -> Result<()> {
    let Response::Denied { request } = execute(home, Request::Deny { name }).await? else { return unexpected() };
    let r = &request.request;
    writeln!(p, "denied request {} of {} ({}): no grant was made", inert(r.id.as_str()), inert(&r.marketer.name), inert(&r.marketer.domain))?;
    Ok(())
}

fn state(state: RequestState) -> (&'static str, Option<Style>) {
    match state {
        RequestState::Pending => ("pending", Some(Style::Yellow)),
        RequestState::Expired => ("expired", Some(Style::Dim)),
        RequestState::Approved => ("approved", Some(Style::Green)),
        RequestState::Denied => ("denied", Some(Style::Red)),
        RequestState::Damaged => ("damaged", Some(Style::Red)),
    }
}

/// Whether the marketer's domain was checked, in words.
fn checked(view: &RequestView) -> String {
    match &view.fetched_from {
        Some(domain) => format!("checked: fetched from https://{}", inert(domain)),
        None => "not checked against the marketer's website (handed over as a file: anyone could have signed it in that name)".to_owned(),
    }
}

fn list(p: &mut Printer, requests: &[RequestView]) -> std::io::Result<()> {
    if requests.is_empty() {
        return writeln!(p, "no consent requests: `optin requests fetch DOMAIN` fetches a marketer's, `optin requests add FILE` adds one handed to you");
    }
    let mut table = Table::new(&[("REQUEST", 48), ("STATE", 8), ("MARKETER", 28), ("DOMAIN", 8), ("EXPIRES", 20), ("PURPOSE", 40)]);
    for v in requests {
        let r = &v.request;
        let (text, style) = state(v.state);
        table.row(vec![
            Cell::new(format!("{}/{}", r.marketer.domain, r.id)),
            Cell::styled(text, style),
            Cell::new(&r.marketer.name),
            Cell::new(if v.fetched_from.is_some() { "checked" } else { "file" }),
            Cell::new(time(r.expires_at)),
            Cell::new(&r.purpose.text),
        ]);
    }
    table.write(p)?;
    let pending = requests.iter().filter(|v| v.state == RequestState::Pending).count();
    writeln!(p, "{}, {pending} pending: `optin requests show ID` shows one", count(requests.len(), "request", "requests"))
}

fn added(p: &mut Printer, view: &RequestView, already: bool, key_changed: bool) -> Result<()> {
    let r = &view.request;
    let what = format!("request {} from {} ({})", inert(r.id.as_str()), inert(&r.marketer.name), inert(&r.marketer.domain));
    if already {
        writeln!(p, "{what} was already added; it is {}", state(view.state).0)?;
    } else {
        writeln!(p, "added {what}: it waits for your decision, nothing is shared until you approve it")?;
    }
    writeln!(p, "domain: {}", checked(view))?;
    if key_changed {
        writeln!(p, "warning: {} signed its earlier requests with another key", inert(&r.marketer.domain))?;
    }
    writeln!(p, "see it with: optin requests show {}/{}", inert(&r.marketer.domain), inert(r.id.as_str()))?;
    Ok(())
}

/// `optin requests show`: what a person needs to decide.
fn detail(p: &mut Printer, view: &RequestView, would_share: Option<&WouldShare>) -> std::io::Result<()> {
    let r = &view.request;
    let (text, style) = state(view.state);
    writeln!(p, "request {} from {}: {}", inert(r.id.as_str()), inert(&r.marketer.domain), p.paint(text, style.unwrap_or(Style::Bold)))?;
    let mut lines: Vec<(&str, String)> = vec![
        ("who asks", format!("{} ({})", inert(&r.marketer.name), inert(&r.marketer.domain))),
        ("domain", checked(view)),
        ("contact", format!("{}; privacy policy {}", inert(&r.marketer.contact), inert(r.marketer.privacy_policy.as_str()))),
        ("purpose", format!("{} [{}: {}]", inert(&r.purpose.text), inert(r.purpose.code.as_str()), inert(r.purpose.code.label()))),
        ("asks for", asked(r)),
    ];
    if let Some(c) = &r.terms.categories {
        lines.push(("only in", c.iter().map(|c| inert(c).into_owned()).collect::<Vec<_>>().join(" | ")));
    }
    if let Some(m) = &r.terms.merchants {
        lines.push(("only at", m.iter().map(|m| inert(m).into_owned()).collect::<Vec<_>>().join(", ")));
    }
    if let Some(f) = &r.terms.fields {
        lines.push(("only fields", f.join(", ")));
    }
    if let Some(rate) = r.terms.rate {
        lines.push(("at most", format!("{} slices a {}", rate.count, if rate.per == optin_protocol::rate::Per::Day { "day" } else { "hour" })));
    }
    lines.push(("offers", inert(&r.offer).into_owned()));
    lines.push((
        "delivery",
        match &r.delivery {
            Delivery::Pull => "pull: the marketer fetches slices with the bundle you hand over".to_owned(),
            Delivery::Push { inbox, every } => {
                format!(
                    "push to {} every {every}: `optin serve` sends the grant and then a signed slice of what is new, over HTTPS from your side; nothing listens on yours",
                    inert(inbox.as_str())
                )
            }
        },
    ));
    lines.push(("issued", time(r.issued_at)));
    lines.push(("expires", format!("{} (after this it cannot be approved)", time(r.expires_at))));
    lines.push(("received", time(view.received_at)));
    if let (Some(grant), Some(at)) = (&view.grant_id, view.decided_at) {
        lines.push(("approved", format!("{} as grant {grant}", time(at))));
    } else if let (RequestState::Denied, Some(at)) = (view.state, view.decided_at) {
        lines.push(("denied", time(at)));
    }
    match would_share {
        Some(WouldShare::Items(summary)) => lines.push(("shares now", shared(r, summary))),
        Some(WouldShare::Paused) => lines.push(("shares now", "nothing while sharing is paused (`optin resume`)".to_owned())),
        None => {}
    }
    for (label, value) in lines {
        let label = format!("{label}:");
        writeln!(p, "  {}{} {value}", p.paint(&label, Style::Bold), " ".repeat(12usize.saturating_sub(label.len())))?;
    }
    if view.state == RequestState::Pending {
        let name = format!("{}/{}", inert(&r.marketer.domain), inert(r.id.as_str()));
        writeln!(
            p,
            "decide: optin approve {name} [--kinds …] [--window …] [--granularity …] [--expires …] [--categories …] [--merchants …] [--fields …] [--rate …], or optin deny {name}"
        )?;
    }
    Ok(())
}

/// The terms asked, in words.
fn asked(r: &ConsentRequest) -> String {
    let level = match r.terms.granularity {
        Granularity::Raw => "raw (every field: queries, items, prices)",
        Granularity::Category => "category (kind, category and day only)",
        Granularity::Aggregate => "aggregate (counts per kind and category, never a signal)",
    };
    format!("{} at {level} granularity, reaching {} back, for {} after approval", r.terms.kinds, r.terms.window, r.terms.duration)
}

/// What the request's terms would share now, in words: "12 searches, 1 abandoned cart in
/// Apparel > Shoes over 30d".
fn shared(r: &ConsentRequest, s: &ShareSummary) -> String {
    show::shared(s, r.terms.window, r.terms.merchants.is_some() && r.terms.kinds.contains(Kind::Search))
}
