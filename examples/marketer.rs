//! A marketer's side of optin: fetch every page of a slice and verify it.
//!
//! ```text
//! cargo run -p optin-examples --example marketer -- BUNDLE.json [--json] [--query QUERY]
//! ```
//!
//! BUNDLE.json is what `optin grant … --json` printed. The program connects to the agent
//! named in the bundle, trusting only the pinned certificate, asks `GET /v1/slice` with the
//! bundle's token (following `next_cursor`), verifies every slice against the bundle's key,
//! and prints what it received. `--query` narrows the request (`kinds=search&granularity=category`);
//! asking beyond the grant is refused by the agent, and so is a revoked or expired token.
//!
//! Exit status: 0 when every slice verified, 1 when the agent refused or a slice did not
//! verify, 2 for a usage error.

use std::process::ExitCode;

use anyhow::{Context, Result};
use optin_examples::{fetch_slices, FetchError, PinnedClient};
use optin_protocol::bundle::GrantBundle;
use optin_protocol::signal::{Body, Item};
use optin_protocol::slice::{CartState, SliceClaims, SliceItem};
use optin_protocol::timestamp;

const USAGE: &str = "usage: marketer BUNDLE.json [--json] [--query QUERY]";

struct Args {
    bundle: String,
    json: bool,
    query: String,
}

fn parse_args() -> Result<Args, String> {
    let mut bundle = None;
    let mut json = false;
    let mut query = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--query" => query = args.next().ok_or("--query needs a value")?,
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            _ if bundle.is_some() => return Err("only one bundle, please".into()),
            _ => bundle = Some(arg),
        }
    }
    let bundle = bundle.ok_or("which bundle?")?;
    Ok(Args { bundle, json, query: query.trim_start_matches('?').to_owned() })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(reason) if reason.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(reason) => {
            eprintln!("error: {reason}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.bundle).with_context(|| format!("cannot read {}", args.bundle))?;
    let bundle = GrantBundle::parse(&text).with_context(|| format!("{} is not a usable grant bundle", args.bundle))?;
    let Some((url, cert)) = bundle.pull_from() else {
        anyhow::bail!("{} is the bundle of a grant pushed to your inbox: it names no agent to pull from", args.bundle);
    };
    let client = PinnedClient::new(url, cert)?;
    let pages = match fetch_slices(&client, &bundle, &args.query).await {
        Ok(pages) => pages,
        Err(FetchError::Refused(problem)) => {
            let field = problem.field.as_deref().map(|f| format!(" (field `{f}`)")).unwrap_or_default();
            anyhow::bail!("the agent refused with {} {}: {}{field}", problem.status, problem.type_, problem.detail);
        }
        Err(other) => return Err(other).context("fetching the slice failed"),
    };
    let claims: Vec<&SliceClaims> = pages.iter().map(|(_, c)| c).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&claims)?);
        return Ok(());
    }
    print_human(&bundle, &claims);
    Ok(())
}

fn print_human(bundle: &GrantBundle, pages: &[&SliceClaims]) {
    let Some(first) = pages.first() else { return };
    println!("grant     {} for {}", bundle.grant_id, first.aud);
    println!("purpose   {}", first.grant.purpose);
    println!("expires   {}", timestamp::format(first.grant.expires_at));
    println!(
        "scope     {} ({}) from {} to {}",
        first.scope.kinds,
        first.scope.granularity,
        timestamp::format(first.scope.since),
        timestamp::format(first.scope.until)
    );
    println!("issuer    {} (key {})", first.iss, bundle.jwk.thumbprint());
    println!();
    if let Some(counts) = &first.counts {
        // An aggregate slice is one answer: counts per kind and category, never an item.
        for c in counts {
            println!("{:<9} {:>5}  {}", c.kind.as_str(), c.count, c.category.as_deref().unwrap_or("(no category)"));
        }
        println!();
        match &first.noise {
            Some(n) => println!("{} buckets of noisy counts (epsilon {}, smaller than {} left out) in 1 verified slice", counts.len(), n.epsilon, n.min_count),
            None => println!("{} buckets of exact counts in 1 verified slice", counts.len()),
        }
        return;
    }
    let mut count = 0;
    for page in pages {
        for item in &page.items {
            count += 1;
            println!("{}", describe(item));
        }
    }
    println!();
    println!("{count} items in {} verified slices", pages.len());
}

fn describe(item: &SliceItem) -> String {
    match item {
        SliceItem::Category(c) => {
            format!("{}  {:<9} {}", c.day, c.kind.as_str(), c.category.as_deref().unwrap_or("(no category)"))
        }
        SliceItem::Raw(r) => {
            let when = timestamp::format(r.at);
            let category = r.category.as_deref().map(|c| format!("  [{c}]")).unwrap_or_default();
            let what = match &r.body {
                Body::Search { query, engine } => format!("search    \"{query}\" on {engine}"),
                Body::Cart { merchant, currency, items } => {
                    let state = match r.state {
                        Some(CartState::Open) => " (open)",
                        Some(CartState::Abandoned) => " (abandoned)",
                        Some(CartState::Purchased) => " (purchased)",
                        None => "",
                    };
                    format!("cart      {merchant}{state}: {}", list(items, currency))
                }
                Body::Purchase { merchant, currency, total, order_id, items } => {
                    let order = order_id.as_deref().map(|o| format!(" order {o}")).unwrap_or_default();
                    format!("purchase  {merchant}{order}, {currency} {}: {}", total.as_str(), list(items, currency))
                }
            };
            format!("{when}  {what}{category}")
        }
        SliceItem::Partial(p) => {
            // Only the fields the grant shares: shown as they came.
            let shared = serde_json::Value::Object(p.fields.clone());
            format!("{}  {:<9} {shared}", timestamp::format(p.at), p.kind.as_str())
        }
    }
}

fn list(items: &[Item], currency: &str) -> String {
    if items.is_empty() {
        return "no items".into();
    }
    let parts: Vec<String> = items.iter().map(|i| format!("{} x{} at {currency} {}", i.name, i.quantity, i.price.as_str())).collect();
    parts.join(", ")
}
