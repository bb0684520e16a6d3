//! `optin receipt GRANT`: the grant's consent receipt, as the marketer holds it, in plain
//! words, or with `--json` the signed JWS and what it says. Like `optin bundle`, it works
//! whether or not an agent runs: the receipt is made again from the grant, the same bytes
//! each time.
//!
//! A receipt's texts come from the marketer's request (name, purpose, contact), so every one
//! is made inert before it reaches the terminal.

use std::io::Write;

use anyhow::Result;
use optin_protocol::receipt::{ConsentState, Receipt};
use optin_protocol::scope::GrantId;
use serde::Serialize;

use super::print::{inert, Printer, Style};
use super::{execute, unexpected};
use crate::core::command::{Request, Response};
use crate::home::Home;

/// `optin receipt --json`: the JWS as the marketer holds it, and its payload.
#[derive(Serialize)]
struct ReceiptJson<'a> {
    jws: &'a str,
    receipt: &'a Receipt,
}

/// `optin receipt GRANT [--json]`.
pub(super) async fn receipt(home: &Home, grant_id: GrantId, json: bool, p: &mut Printer) -> Result<()> {
    let Response::Receipt { jws, receipt } = execute(home, Request::Receipt { grant_id }).await? else { return unexpected() };
    if json {
        p.json(&serde_json::to_string_pretty(&ReceiptJson { jws: &jws, receipt: &receipt })?)?;
    } else {
        words(p, &receipt)?;
    }
    Ok(())
}

/// What the receipt says, a line per part, in the order a person reads it: where the
/// consent stands, who holds it, what for, and what it lets them have.
fn words(p: &mut Printer, r: &Receipt) -> std::io::Result<()> {
    let (state, style) = match r.state() {
        Some(ConsentState::Given) => ("given", Style::Green),
        Some(ConsentState::Withdrawn) => ("withdrawn", Style::Red),
        Some(ConsentState::Expired) => ("expired", Style::Dim),
        None => ("of no state", Style::Red),
    };
    writeln!(p, "consent receipt of grant {}: {}", r.record.record_id, p.paint(state, style))?;
    let mut lines: Vec<(&str, String)> = Vec::new();
    let history: Vec<String> = r.event.iter().map(|e| format!("{} on {}", event(e.state), e.event_time)).collect();
    lines.push(("consent", history.join(", then ")));
    for party in &r.party_identification {
        let contact = party.party_contact.as_deref().map(|c| format!(", contact {}", inert(c))).unwrap_or_default();
        lines.push(("holder", format!("{} ({}){contact}", inert(&party.party_name), inert(&party.party_id))));
    }
    if let Some(notice) = &r.pii_processing.privacy_notice {
        lines.push(("privacy", inert(notice).into_owned()));
    }
    match &r.request {
        Some(request) => lines.push(("answers", format!("request {} of {}", inert(request.id.as_str()), inert(&request.marketer)))),
        None => lines.push(("answers", "no request: you made this grant yourself with `optin grant`".to_owned())),
    }
    for purpose in &r.pii_processing.purposes {
        let code = purpose.purpose_type.as_ref().map(|c| format!(" [{}: {}]", inert(c.as_str()), inert(c.label()))).unwrap_or_default();
        lines.push(("purpose", format!("{}{code}", inert(&purpose.purpose))));
        let t = &purpose.terms;
        lines.push((
            "shares",
            format!("{} at {} granularity, reaching {} back, until {}", purpose.pii_information, t.granularity, t.window, super::print::time(t.expires_at)),
        ));
        if let Some(c) = &t.categories {
            lines.push(("only in", c.iter().map(|c| inert(c).into_owned()).collect::<Vec<_>>().join(" | ")));
        }
        if let Some(m) = &t.merchants {
            lines.push(("only at", m.iter().map(|m| inert(m).into_owned()).collect::<Vec<_>>().join(", ")));
        }
        match t.fields.as_deref() {
            None => {}
            Some([]) => lines.push(("fields", "none but kind, time and id".to_owned())),
            Some(f) => lines.push(("fields", f.iter().map(|f| inert(f).into_owned()).collect::<Vec<_>>().join(", "))),
        }
        if let Some(rate) = t.rate {
            lines.push(("at most", format!("{rate} slices")));
        }
        if let Some(n) = &t.noise {
            let words = format!("counts only, epsilon {} per new answer, {} in all, a count under {} left out", n.epsilon, n.budget, n.min_count);
            lines.push(("noise", words));
        }
        lines.push(("basis", format!("{} ({})", inert(&purpose.lawful_basis), inert(&r.event[0].type_))));
    }
    lines.push(("you are", format!("{} to this holder, a name no other grant of yours shares", inert(&r.record.pii_principal_id))));
    for (label, value) in lines {
        let label = format!("{label}:");
        writeln!(p, "  {}{} {value}", p.paint(&label, Style::Bold), " ".repeat(10usize.saturating_sub(label.len())))?;
    }
    writeln!(p, "signed with the grant's key; `optin receipt {} --json` prints the JWS the holder can verify", r.record.record_id)
}

fn event(state: ConsentState) -> &'static str {
    match state {
        ConsentState::Given => "given",
        ConsentState::Withdrawn => "withdrawn",
        ConsentState::Expired => "expired",
    }
}
