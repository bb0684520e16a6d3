//! `optin exclude`, `optin include` and `optin exclusions`: the never-share list of
//! sensitive topics and the person's own categories. Like every owner command, a change goes
//! to the running agent over its admin socket, or to the store when none runs, and holds
//! from the next slice of every grant.

use std::io::Write;

use anyhow::Result;
use optin_protocol::sensitive::{self, Entry};

use super::print::{inert, Cell, Printer, Style, Table};
use super::{execute, unexpected};
use crate::core::command::{Request, Response};
use crate::core::never_share::NeverShareView;
use crate::home::Home;

/// `optin exclude ENTRY` and `optin include ENTRY`: the change, in one sentence.
pub(super) async fn change(home: &Home, request: Request, p: &mut Printer) -> Result<()> {
    let (entry, excluding) = match &request {
        Request::Exclude { entry } => (entry.trim().to_owned(), true),
        Request::Include { entry } => (entry.trim().to_owned(), false),
        _ => return unexpected(),
    };
    let Response::NeverShare { list, changed } = execute(home, request).await? else { return unexpected() };
    let already = if changed { "" } else { " (it already was)" };
    let sentence = match list.topics.iter().find(|t| t.id == entry) {
        Some(topic) if excluding => format!("{} ({}) is withheld from every grant{already}", topic.id, topic.label),
        Some(topic) => format!("{} ({}) may be shared by the grants whose terms reach it{already}", topic.id, topic.label),
        None => {
            // The path as the list keeps it (the agent took it, so it parses).
            let path = Entry::parse(&entry, sensitive::Table::shipped()).map_or(entry.clone(), |e| e.to_string());
            let path = inert(&path).into_owned();
            if excluding {
                format!("\"{path}\" and every category below it are withheld from every grant{already}")
            } else {
                format!("\"{path}\" is off your never-share list")
            }
        }
    };
    writeln!(p, "{sentence}")?;
    Ok(())
}

/// `optin exclusions [--json]`.
pub(super) async fn list(home: &Home, json: bool, p: &mut Printer) -> Result<()> {
    let Response::NeverShare { list, .. } = execute(home, Request::NeverShare).await? else { return unexpected() };
    if json {
        p.json(&serde_json::to_string_pretty(&*list)?)?;
    } else {
        words(p, &list)?;
    }
    Ok(())
}

fn words(p: &mut Printer, list: &NeverShareView) -> std::io::Result<()> {
    let mut table = Table::new(&[("TOPIC", 24), ("SHARED", 8), ("COVERS", 60)]);
    for t in &list.topics {
        let shared = if t.withheld { Cell::styled("never", Some(Style::Green)) } else { Cell::styled("allowed", Some(Style::Red)) };
        table.row(vec![Cell::new(&t.id), shared, Cell::new(&t.label)]);
    }
    table.write(p)?;
    if list.categories.is_empty() {
        writeln!(p, "\nno categories of your own: `optin exclude \"Some > Category\"` adds one")?;
    } else {
        writeln!(p, "\nyour own categories, never shared with anything below them:")?;
        for path in &list.categories {
            writeln!(p, "  {}", inert(path))?;
        }
    }
    Ok(())
}
