//! A marketer hands a partner less than it holds, and the partner fetches and verifies it.
//!
//! ```text
//! cargo run -p optin-examples --example partner -- derive BUNDLE.json --aud partner.example \
//!     [--kinds search] [--window 7d] [--granularity category] [--category PATH]… > PARTNER.json
//! cargo run -p optin-examples --example partner -- fetch PARTNER.json [--json]
//! ```
//!
//! `derive` is the marketer, offline: it appends caveats to the token of its grant bundle
//! (SPEC.md, "Tokens"), `aud=` naming the partner and any of fewer kinds, a shorter window, a
//! coarser granularity and category paths, each of which only narrows, and writes the bundle
//! for the partner: the narrower token, and the terms narrowed the same way. No secret and no
//! word with the agent is needed; the agent checks the whole chain when the partner asks.
//!
//! `fetch` is the partner: it connects to the agent named in its bundle, trusting only the
//! pinned certificate, asks for every page of its slice and verifies each one as addressed to
//! itself (`GrantBundle::verify_slice_for`): the grant's key, issuer and grant, the partner's
//! audience. The person sees in `optin grants` and `optin audit` what went to the partner
//! through the marketer, and can cut the partner off alone (`optin revoke --partner`).
//!
//! Exit status: 0 on success, 1 when the agent refused or a slice did not verify, 2 for a
//! usage error.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use optin_examples::PinnedClient;
use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::Caveat;
use optin_protocol::slice::SliceClaims;
use optin_protocol::timestamp;
use optin_protocol::token::Token;

const USAGE: &str =
    "usage: partner derive BUNDLE.json --aud HOST [--kinds K] [--window SPAN] [--granularity G] [--category PATH]…\n       partner fetch PARTNER.json [--json]";

/// Most pages `fetch` follows.
const MAX_PAGES: usize = 10_000;

enum Args {
    Derive { bundle: String, caveats: Vec<Caveat> },
    Fetch { bundle: String, json: bool },
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let command = args.next().ok_or("derive or fetch?")?;
    let file = args.next().filter(|f| !f.starts_with("--")).ok_or("which bundle?")?;
    let caveat = |text: String| text.parse::<Caveat>().map_err(|e| e.to_string());
    match command.as_str() {
        "derive" => {
            let (mut audience, mut caveats, mut categories) = (None, Vec::new(), BTreeSet::new());
            while let Some(flag) = args.next() {
                let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--aud" => audience = Some(caveat(format!("aud={value}"))?),
                    "--kinds" => caveats.push(caveat(format!("kinds={value}"))?),
                    "--window" => caveats.push(caveat(format!("window={value}"))?),
                    "--granularity" => caveats.push(caveat(format!("granularity={value}"))?),
                    // A path may hold commas, so each comes as it is, not in a list.
                    "--category" => drop(categories.insert(value)),
                    other => return Err(format!("unknown flag {other}")),
                }
            }
            if !categories.is_empty() {
                caveats.push(Caveat::Categories(categories));
            }
            // The audience last: whatever else the marketer adds, the slices are the partner's.
            caveats.push(audience.ok_or("--aud names the partner")?);
            Ok(Args::Derive { bundle: file, caveats })
        }
        "fetch" => {
            let json = match args.next().as_deref() {
                None => false,
                Some("--json") => true,
                Some(other) => return Err(format!("unknown flag {other}")),
            };
            Ok(Args::Fetch { bundle: file, json })
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(reason) => {
            eprintln!("error: {reason}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args {
        Args::Derive { bundle, caveats } => derive(&bundle, &caveats),
        Args::Fetch { bundle, json } => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(fetch(&bundle, json)),
            Err(e) => Err(anyhow::anyhow!(e).context("cannot start the runtime")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_bundle(path: &str) -> Result<GrantBundle> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    GrantBundle::parse(&text).with_context(|| format!("{path} is not a usable grant bundle"))
}

/// The marketer's side: the partner's bundle, printed. Its token is the marketer's with the
/// caveats appended, and its terms the grant's narrowed by them as the agent will narrow them.
fn derive(path: &str, caveats: &[Caveat]) -> Result<()> {
    let bundle = read_bundle(path)?;
    if bundle.pull_from().is_none() {
        bail!("{path} is the bundle of a grant pushed to your inbox: a partner has no agent to pull from");
    }
    let mut token = Token::parse(&bundle.token).context("the bundle's token")?;
    let mut terms = bundle.terms.clone();
    for caveat in caveats {
        token = token.attenuate(caveat);
        terms = terms.narrow(caveat).with_context(|| format!("`{caveat}` leaves the partner nothing of this grant"))?;
    }
    let partner = GrantBundle { token: token.encode(), terms, ..bundle };
    println!("{}", serde_json::to_string_pretty(&partner)?);
    Ok(())
}

/// The partner's side: every page of its slice, each verified as addressed to it.
async fn fetch(path: &str, json: bool) -> Result<()> {
    let bundle = read_bundle(path)?;
    let Some((url, cert)) = bundle.pull_from() else { bail!("{path} names no agent to pull from") };
    let audience = bundle.terms.audience.clone();
    let client = PinnedClient::new(url, cert)?;
    let mut pages: Vec<SliceClaims> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        if pages.len() == MAX_PAGES {
            bail!("the agent kept sending pages: more than {MAX_PAGES}");
        }
        let path = match &cursor {
            Some(c) => format!("/v1/slice?{}", form_urlencoded::Serializer::new(String::new()).append_pair("cursor", c).finish()),
            None => "/v1/slice".to_owned(),
        };
        let response = client.get(&path, Some(&bundle.token)).await?;
        if response.status.as_u16() != 200 {
            match response.problem() {
                Some(problem) => bail!("the agent refused with {} {}: {}", problem.status, problem.type_, problem.detail),
                None => bail!("the agent answered {}", response.status),
            }
        }
        let claims = bundle.verify_slice_for(&response.text(), &audience).context("a slice did not verify")?;
        cursor = claims.next_cursor.clone();
        pages.push(claims);
        if cursor.is_none() {
            break;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&pages)?);
        return Ok(());
    }
    let items: usize = pages.iter().map(|p| p.items.len()).sum();
    if let Some(first) = pages.first() {
        println!("grant     {} of {}, through {} to {}", bundle.grant_id, bundle.marketer, bundle.marketer, first.aud);
        let (since, until) = (timestamp::format(first.scope.since), timestamp::format(first.scope.until));
        println!("scope     {} ({}) from {since} to {until}", first.scope.kinds, first.scope.granularity);
        if let Some(categories) = &first.scope.categories {
            println!("only in   {}", categories.join(" | "));
        }
    }
    println!("{items} items in {} verified slices", pages.len());
    Ok(())
}
