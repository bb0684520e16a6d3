//! How each answer looks to a person: tables, summaries, and a hint where a table is empty.
//! (`--json` prints the answer itself instead; see [`super`].)

use std::collections::BTreeMap;
use std::io::{self, Write};

use optin_protocol::bundle::GrantBundle;
use optin_protocol::scope::{GrantId, Granularity, Terms};
use optin_protocol::signal::{Body, Kind};
use optin_protocol::slice::{CartState, SliceClaims};
use optin_protocol::span::Span;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use super::print::{count, inert, time, Cell, Printer, Style, Table};
use crate::browser::LastSeen;
use crate::core::command::{
    AuditEntry, CheckpointView, CountedRefusals, GrantState, GrantView, PartnerUsage, PushView, ShareSummary, SignalView, Status, WouldShare,
};
use crate::store::AuditEvent;

/// Widest a free-text column gets before it is cut with `…`.
const TEXT: usize = 60;
/// Widest a name column (marketer, merchant) gets.
const NAME: usize = 28;
/// Widest a signal id gets (ids are the feeder's; the full one is in `--json`).
const ID: usize = 36;
/// An RFC 3339 time in UTC.
const TIME: usize = 20;

fn kind_noun(kind: Kind, n: usize) -> String {
    match kind {
        Kind::Search => count(n, "search", "searches"),
        Kind::Cart => count(n, "cart", "carts"),
        Kind::Purchase => count(n, "purchase", "purchases"),
    }
}

fn cart_state(state: CartState) -> (&'static str, Option<Style>) {
    match state {
        CartState::Open => ("open", None),
        CartState::Abandoned => ("abandoned", Some(Style::Yellow)),
        CartState::Purchased => ("purchased", Some(Style::Green)),
    }
}

fn grant_state(state: GrantState) -> (&'static str, Option<Style>) {
    match state {
        GrantState::Active => ("active", Some(Style::Green)),
        GrantState::Revoked => ("revoked", Some(Style::Red)),
        GrantState::Expired => ("expired", Some(Style::Dim)),
        GrantState::Damaged => ("damaged", Some(Style::Red)),
    }
}

/// `optin signals`.
pub fn signals(p: &mut Printer, signals: &[SignalView], kind: Option<Kind>) -> io::Result<()> {
    if signals.is_empty() {
        return match kind {
            Some(kind) => writeln!(p, "no {kind} signals stored"),
            None => writeln!(p, "no signals yet: `optin browser install` connects the extension; `optin import chromium` or `optin ingest FILE` adds some"),
        };
    }
    let mut table = Table::new(&[("ID", ID), ("KIND", 8), ("AT", TIME), ("STATE", 9), ("WHAT", TEXT)]);
    for view in signals {
        let s = &view.signal;
        let what = match &s.body {
            Body::Search { query, engine } => format!("\"{query}\" on {engine}"),
            Body::Purchase { total, currency, merchant, .. } => format!("{} {currency} at {merchant}", total.as_str()),
            Body::Cart { items, merchant, .. } => format!("{} at {merchant}", count(items.len(), "item", "items")),
        };
        // Marked at ingest: the never-share list (`optin exclusions`) decides what leaves.
        let what = if s.sensitive.is_empty() { what } else { format!("{what} [sensitive: {}]", s.sensitive.join(", ")) };
        let (state, style) = view.state.map_or(("", None), cart_state);
        table.row(vec![Cell::new(s.id.as_str()), Cell::new(s.kind().as_str()), Cell::new(time(s.at)), Cell::styled(state, style), Cell::new(what)]);
    }
    table.write(p)?;
    writeln!(p, "{}", count(signals.len(), "signal", "signals"))
}

/// A column of `optin grants`: its header, its width, and what it shows of a grant.
type GrantColumn = (&'static str, usize, fn(&GrantView) -> Cell);

/// The columns of `optin grants`, in order. A new column (what a grant has left of a budget,
/// say) is one more line here, and its value one more member of [`GrantView`].
const GRANT_COLUMNS: &[GrantColumn] = &[
    ("GRANT", 26, |g| Cell::new(g.grant_id.as_str())),
    ("STATE", 7, |g| {
        let (state, style) = grant_state(g.state);
        Cell::styled(state, style)
    }),
    ("MARKETER", NAME, |g| Cell::new(&g.marketer)),
    ("KINDS", 21, |g| Cell::new(g.terms.kinds.to_string())),
    ("LEVEL", 9, |g| Cell::new(g.terms.granularity.to_string())),
    ("WINDOW", 6, |g| Cell::new(g.terms.window.to_string())),
    ("EXPIRES", TIME, |g| Cell::new(time(g.terms.expires_at))),
    ("LAST USED", TIME, |g| Cell::new(g.usage.last_used.map_or_else(|| "never".to_owned(), time))),
    ("SLICES", 6, |g| Cell::new(g.usage.slices.to_string())),
    ("ITEMS", 6, |g| Cell::new(g.usage.items.to_string())),
    ("PARTNERS", 8, |g| Cell::new(if g.usage.partners.is_empty() { "-".to_owned() } else { g.usage.partners.len().to_string() })),
    // What an aggregate grant has left of its privacy budget, in epsilon; `-` for a grant
    // without noise.
    // What a grant with a rate served in the rate's current hour or day.
    ("RATE USED", 11, |g| Cell::new(g.rate.map_or_else(|| "-".to_owned(), |r| format!("{} of {}", r.used, r.rate)))),
    ("BUDGET LEFT", 11, |g| Cell::new(g.budget.as_ref().map_or_else(|| "-".to_owned(), |b| format!("{} of {}", b.left, b.total)))),
    ("PURPOSE", 40, |g| Cell::new(&g.purpose)),
];

/// `optin grants`: oldest first.
pub fn grants(p: &mut Printer, grants: &[GrantView]) -> io::Result<()> {
    if grants.is_empty() {
        return writeln!(p, "no grants yet: optin grant MARKETER --kinds search,cart --granularity category --window 30d --expires 90d --purpose \"what for\"");
    }
    let headers: Vec<(&'static str, usize)> = GRANT_COLUMNS.iter().map(|(header, width, _)| (*header, *width)).collect();
    let mut table = Table::new(&headers);
    for g in grants {
        table.row(GRANT_COLUMNS.iter().map(|(_, _, cell)| cell(g)).collect());
    }
    table.write(p)?;
    for g in grants {
        for partner in &g.usage.partners {
            through(p, g, partner)?;
        }
        if let Some(push) = &g.push {
            pushes(p, g, push)?;
        }
    }
    let active = grants.iter().filter(|g| g.state == GrantState::Active).count();
    writeln!(p, "{}, {active} active", count(grants.len(), "grant", "grants"))
}

/// One line on what a grant's marketer passed on to a partner, and whether the person cut
/// the partner off. The partner's name is an `aud` caveat's, a plain host name.
fn through(p: &mut Printer, g: &GrantView, partner: &PartnerUsage) -> io::Result<()> {
    let received = match partner.last_used {
        Some(at) => format!("{} of {}, last at {}", count(partner.slices, "slice", "slices"), count(partner.items, "item", "items"), time(at)),
        None => "nothing received".to_owned(),
    };
    let cut = if partner.revoked { "; cut off: its tokens are refused" } else { "" };
    writeln!(p, "{} through {} to {}: {received}{cut}", g.grant_id, inert(&g.marketer), inert(&partner.audience))
}

/// One line on a push grant's deliveries: where to, the last attempt, what waits, and
/// whether the inbox said it is gone.
fn pushes(p: &mut Printer, g: &GrantView, push: &PushView) -> io::Result<()> {
    let last = match &push.last {
        Some(l) => {
            let status = l.status.map(|s| format!(" ({s})")).unwrap_or_default();
            format!("last {} {}{status} at {}", l.kind, l.outcome, time(l.at))
        }
        None => "nothing sent yet".into(),
    };
    let state = match (push.gone_at, &push.last) {
        (Some(at), Some(l)) if l.kind == "grant.created" && l.outcome == "failed" => {
            let status = l.status.map(|s| format!(" ({s})")).unwrap_or_default();
            format!("; stopped: the inbox refused the grant{status} at {}, nothing more is pushed", time(at))
        }
        (Some(at), _) => format!("; stopped: the inbox answered 410 Gone at {}, nothing more is pushed", time(at)),
        (None, _) => String::new(),
    };
    writeln!(p, "{} pushes to {} every {}: {last}; {} queued{state}", g.grant_id, push.inbox, push.every, push.queued)
}

/// `optin audit`.
pub fn audit(
    p: &mut Printer,
    checkpoint: Option<&CheckpointView>,
    records: &[AuditEntry],
    counted: &[CountedRefusals],
    anonymous_refusals: u64,
) -> io::Result<()> {
    if let Some(view) = checkpoint {
        let c = &view.checkpoint;
        let events = c.events.iter().map(|(name, n)| format!("{n} {name}")).collect::<Vec<_>>().join(", ");
        let span = format!("from {} to {}", time(c.first_at), time(c.last_at));
        writeln!(p, "records 1 to {} were pruned at {} ({span}: {events}); `optin audit --summary` still counts them", c.seq, time(c.pruned_at))?;
        if !view.intact {
            writeln!(p, "{}", p.paint("the checkpoint that stands for them fails its MAC: it was changed behind optin's back", Style::Red))?;
        }
    }
    if records.is_empty() {
        writeln!(p, "the audit log is empty: grants, slices served, refusals, revocations and forgetting are recorded here")?;
    } else {
        let mut table = Table::new(&[("SEQ", 8), ("AT", TIME), ("EVENT", 8), ("GRANT", 26), ("MARKETER", NAME), ("AUDIENCE", NAME), ("DETAIL", TEXT + 20)]);
        for entry in records {
            let r = &entry.record;
            // Who a slice went to: the marketer, or the partner a caveat named.
            let audience = match &r.event {
                AuditEvent::Served { marketer, audience, .. } => audience.as_deref().unwrap_or(marketer),
                AuditEvent::Refused { audience: Some(audience), .. } | AuditEvent::PartnerRevoked { audience, .. } => audience,
                _ => "-",
            };
            let (event, style, grant, marketer, detail) = match &r.event {
                AuditEvent::Served { grant_id, marketer, asked, items, slice_id, repeat_of, .. } => {
                    let again = repeat_of.map(|seq| format!(", again: first served at record {seq}")).unwrap_or_default();
                    let detail = format!("{} for {asked} (slice {slice_id}{again})", count(*items, "item", "items"));
                    ("served", Some(Style::Green), Some(grant_id), Some(marketer), detail)
                }
                AuditEvent::Refused { grant_id, marketer, slice_id, asked, status, reason, .. } => {
                    let slice = slice_id.as_ref().map(|s| format!(" (slice {s})")).unwrap_or_default();
                    ("refused", Some(Style::Red), grant_id.as_ref(), marketer.as_ref(), format!("{status} {asked}: {reason}{slice}"))
                }
                AuditEvent::Granted { grant_id, marketer, purpose, terms, request_id, purpose_code } => {
                    let terms = terms
                        .as_ref()
                        .map(|t| format!("{} at {} level, {} back, until {}{}", t.kinds, t.granularity, t.window, time(t.expires_at), filters(t)));
                    let purpose = purpose.as_ref().map(|p| format!("for: {p}"));
                    let request = request_id.as_ref().map(|r| format!("approving request {r} ({})", purpose_code.as_deref().unwrap_or("-")));
                    // The request first: the table cuts a long detail, and what was approved matters most.
                    let detail = request.into_iter().chain(terms).chain(purpose).collect::<Vec<_>>().join("; ");
                    ("granted", None, Some(grant_id), Some(marketer), detail)
                }
                AuditEvent::Revoked { grant_id, marketer } => ("revoked", None, Some(grant_id), Some(marketer), String::new()),
                AuditEvent::PartnerRevoked { grant_id, marketer, audience } => {
                    ("cut off", Some(Style::Red), Some(grant_id), Some(marketer), format!("partner {audience}: its tokens are refused from here on"))
                }
                AuditEvent::Pushed { grant_id, marketer, event_id, kind, outcome, status, attempts } => {
                    let status = status.map(|s| format!(" ({s})")).unwrap_or_default();
                    let style = if outcome == "delivered" { Some(Style::Green) } else { None };
                    (
                        "pushed",
                        style,
                        Some(grant_id),
                        marketer.as_ref(),
                        format!("{kind} {event_id}: {outcome}{status} after {}", count(*attempts as usize, "attempt", "attempts")),
                    )
                }
                AuditEvent::Denied { marketer, request_id } => ("denied", None, None, Some(marketer), format!("request {request_id}")),
                AuditEvent::Forgot { count: n, what } => ("forgot", None, None, None, format!("{} ({what})", count(*n, "signal", "signals"))),
                AuditEvent::Sharing { paused } => ("sharing", None, None, None, (if *paused { "paused" } else { "resumed" }).to_owned()),
                AuditEvent::Sealed { records, grants } => {
                    let found = format!("{} and {} taken as found, unchecked", count(*records, "record", "records"), count(*grants, "grant", "grants"));
                    ("sealed", Some(Style::Dim), None, None, format!("MACs from here on; {found}"))
                }
            };
            table.row(vec![
                Cell::new(r.seq.to_string()),
                Cell::new(time(r.at)),
                Cell::styled(event, style),
                Cell::new(grant.map_or("-", |g| g.as_str())),
                Cell::new(marketer.map_or("-", String::as_str)),
                Cell::new(audience),
                Cell::new(detail),
            ]);
        }
        table.write(p)?;
        writeln!(p, "{}", count(records.len(), "record", "records"))?;
    }
    if !counted.is_empty() {
        writeln!(p, "refusals counted rather than recorded one by one (revoked, expired, paused or busy grants, and refusals beyond the record rate):")?;
        let mut table = Table::new(&[("GRANT", 26), ("MARKETER", NAME), ("REASON", 22), ("COUNT", 8), ("FIRST", TIME), ("LAST", TIME)]);
        for c in counted {
            let n = &c.count;
            let reason = if c.intact { Cell::new(format!("{} {}", n.status, n.reason)) } else { Cell::styled("damaged: fails its MAC", Some(Style::Red)) };
            table.row(vec![
                Cell::new(n.grant_id.as_str()),
                Cell::new(&n.marketer),
                reason,
                Cell::new(n.count.to_string()),
                Cell::new(time(n.first)),
                Cell::new(time(n.last)),
            ]);
        }
        table.write(p)?;
    }
    if anonymous_refusals > 0 {
        let requests = count(usize::try_from(anonymous_refusals).unwrap_or(usize::MAX), "request", "requests");
        writeln!(p, "and {requests} with unknown or forged tokens since the agent started (counted, not recorded one by one)")?;
    }
    Ok(())
}

/// Whether a record concerns `grant` and `marketer` (each when given). Records of no grant
/// (forgetting, pausing, sealing) concern neither.
pub fn names(event: &AuditEvent, grant: Option<&GrantId>, marketer: Option<&str>) -> bool {
    let (of_grant, of_marketer) = match event {
        AuditEvent::Served { grant_id, marketer, .. }
        | AuditEvent::Granted { grant_id, marketer, .. }
        | AuditEvent::Revoked { grant_id, marketer }
        | AuditEvent::PartnerRevoked { grant_id, marketer, .. } => (Some(grant_id), Some(marketer.as_str())),
        AuditEvent::Refused { grant_id, marketer, .. } => (grant_id.as_ref(), marketer.as_deref()),
        AuditEvent::Pushed { grant_id, marketer, .. } => (Some(grant_id), marketer.as_deref()),
        AuditEvent::Denied { marketer, .. } => (None, Some(marketer.as_str())),
        AuditEvent::Forgot { .. } | AuditEvent::Sharing { .. } | AuditEvent::Sealed { .. } => (None, None),
    };
    grant.map_or(true, |g| of_grant == Some(g)) && marketer.map_or(true, |m| of_marketer == Some(m))
}

/// A grant's filters in words, after its other terms: empty when it has none.
pub fn filters(terms: &optin_protocol::scope::Terms) -> String {
    let mut out = String::new();
    if let Some(c) = &terms.categories {
        out.push_str(&format!(", only in {}", c.join(" | ")));
    }
    if let Some(m) = &terms.merchants {
        out.push_str(&format!(", only at {}", m.join(", ")));
    }
    match terms.fields.as_deref() {
        None => {}
        Some([]) => out.push_str(", no field but kind, time and id"),
        Some(f) => out.push_str(&format!(", only the fields {}", f.join(", "))),
    }
    if let Some(rate) = terms.rate {
        out.push_str(&format!(", at most {rate} slices"));
    }
    out
}

/// `filters: …` when a new grant has any filter, fields or rate.
pub fn filters_line(p: &mut Printer, terms: &optin_protocol::scope::Terms) -> io::Result<()> {
    let filters = filters(terms);
    match filters.strip_prefix(", ") {
        Some(words) => writeln!(p, "filters: {}", inert(words)),
        None => Ok(()),
    }
}

/// `optin audit --summary`: per marketer, what the records, the checkpoint of those pruned
/// and the counts say.
pub fn audit_summary(p: &mut Printer, records: &[AuditEntry], counted: &[CountedRefusals], checkpoint: Option<&CheckpointView>) -> io::Result<()> {
    #[derive(Default)]
    struct Marketer {
        grants: usize,
        slices: usize,
        items: usize,
        refused: u64,
        first: Option<OffsetDateTime>,
        last: Option<OffsetDateTime>,
    }
    let mut by: BTreeMap<&str, Marketer> = BTreeMap::new();
    // Slices and items a marketer's partners received through it, by marketer and partner.
    let mut through: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    let wide = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    for g in checkpoint.map_or(&[][..], |c| &c.checkpoint.grants[..]) {
        let m = by.entry(&g.marketer).or_default();
        m.grants += wide(g.granted);
        (m.slices, m.items, m.refused) = (m.slices + wide(g.slices), m.items + wide(g.items), m.refused + g.refused);
        m.first = match (m.first, g.first_served) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.last = m.last.max(g.last_served);
        for partner in &g.partners {
            let (slices, n) = through.entry((&g.marketer, &partner.audience)).or_default();
            (*slices, *n) = (*slices + wide(partner.slices), *n + wide(partner.items));
        }
    }
    for entry in records {
        let at = entry.record.at;
        match &entry.record.event {
            AuditEvent::Granted { marketer, .. } => by.entry(marketer).or_default().grants += 1,
            AuditEvent::Served { marketer, items, audience, .. } => {
                let m = by.entry(marketer).or_default();
                (m.slices, m.items) = (m.slices + 1, m.items + items);
                m.first = Some(m.first.map_or(at, |f| f.min(at)));
                m.last = Some(m.last.map_or(at, |l| l.max(at)));
                if let Some(partner) = audience {
                    let (slices, n) = through.entry((marketer, partner)).or_default();
                    (*slices, *n) = (*slices + 1, *n + items);
                }
            }
            AuditEvent::Refused { marketer: Some(marketer), .. } => by.entry(marketer).or_default().refused += 1,
            _ => {}
        }
    }
    for c in counted {
        by.entry(&c.count.marketer).or_default().refused += c.count.count;
    }
    if by.is_empty() {
        return writeln!(p, "no marketer in these records");
    }
    let mut table = Table::new(&[("MARKETER", NAME), ("GRANTS", 6), ("SLICES", 8), ("ITEMS", 8), ("REFUSED", 8), ("FIRST SLICE", TIME), ("LAST SLICE", TIME)]);
    for (marketer, m) in &by {
        let when = |t: Option<OffsetDateTime>| t.map_or_else(|| "-".to_owned(), time);
        table.row(vec![
            Cell::new(marketer),
            Cell::new(m.grants.to_string()),
            Cell::new(m.slices.to_string()),
            Cell::new(m.items.to_string()),
            Cell::new(m.refused.to_string()),
            Cell::new(when(m.first)),
            Cell::new(when(m.last)),
        ]);
    }
    table.write(p)?;
    for ((marketer, partner), (slices, items)) in &through {
        writeln!(p, "{} passed on to {}: {} of {}", inert(marketer), inert(partner), count(*slices, "slice", "slices"), count(*items, "item", "items"))?;
    }
    writeln!(p, "{}", count(by.len(), "marketer", "marketers"))
}

/// `optin preview` of an aggregate scope: the exact counts the marketer's answer would be
/// drawn from. The noise is drawn only when the marketer asks, so the person sees no draw
/// that the marketer does not.
fn aggregate_preview(p: &mut Printer, claims: &SliceClaims, counts: &[optin_protocol::slice::Count]) -> io::Result<()> {
    writeln!(
        p,
        "{} would receive counts of {} per category ({} to {}), each with the grant's noise added, for: {}",
        inert(&claims.aud),
        claims.scope.kinds,
        time(claims.scope.since),
        time(claims.scope.until),
        inert(&claims.grant.purpose)
    )?;
    if counts.is_empty() {
        return writeln!(p, "  nothing to count: no stored signal fits these terms now");
    }
    writeln!(p, "the exact counts beneath:")?;
    for bucket in counts {
        writeln!(p, "  {:<8} {:>6}  {}", bucket.kind.as_str(), bucket.count, inert(bucket.category.as_deref().unwrap_or("(no category)")))?;
    }
    Ok(())
}

/// `optin preview`: what the marketer would receive, page by page as it would fetch them.
pub fn preview(p: &mut Printer, pages: &[SliceClaims]) -> io::Result<()> {
    let Some(first) = pages.first() else { return writeln!(p, "nothing to preview") };
    if let Some(counts) = &first.counts {
        return aggregate_preview(p, first, counts);
    }
    let items: usize = pages.iter().map(|page| page.items.len()).sum();
    writeln!(
        p,
        "{} would receive {} in {} ({} at {} granularity, {} to {}) for: {}",
        inert(&first.aud),
        count(items, "item", "items"),
        count(pages.len(), "page", "pages"),
        first.scope.kinds,
        first.scope.granularity,
        time(first.scope.since),
        time(first.scope.until),
        inert(&first.grant.purpose)
    )?;
    for (n, page) in pages.iter().enumerate() {
        if pages.len() > 1 {
            writeln!(p, "page {} of {} ({}):", n + 1, pages.len(), count(page.items.len(), "item", "items"))?;
        }
        for item in &page.items {
            let line = serde_json::to_string(item).map_err(io::Error::other)?;
            write!(p, "  ")?;
            p.json(&line)?;
        }
    }
    Ok(())
}

/// The first line of `optin grant` and `optin bundle --output`: what was granted, without
/// the token.
pub fn grant_summary(p: &mut Printer, bundle: &GrantBundle) -> io::Result<()> {
    writeln!(
        p,
        "granted {} to {}: {} at {} granularity, {} window, until {}",
        bundle.grant_id,
        inert(&bundle.marketer),
        bundle.terms.kinds,
        bundle.terms.granularity,
        bundle.terms.window,
        time(bundle.terms.expires_at)
    )
}

/// How a new grant's slices reach the marketer: pushed to its inbox (`Some`), or pulled.
pub fn delivery(p: &mut Printer, push: Option<(&str, Span)>) -> io::Result<()> {
    match push {
        Some((inbox, every)) => writeln!(
            p,
            "pushed to {} by `optin serve`: this grant first, then a slice of what is new every {every}; `optin grants` shows each delivery and `optin revoke` stops them",
            inert(inbox)
        ),
        None => pull_links(p),
    }
}

/// What the person does with a new grant's bundle: hand it over, or nothing for a pushed
/// grant, whose inbox receives it in `grant.created`.
pub fn hand_over(p: &mut Printer, bundle: &GrantBundle) -> io::Result<()> {
    match bundle.pull_from() {
        Some(_) => writeln!(p, "give this bundle to {} (it holds their token: send it privately):", inert(&bundle.marketer)),
        None => writeln!(p, "the inbox receives this bundle; it holds the marketer's token, so keep it private:"),
    }
}

/// What a grant's terms would share now, in words: "12 searches, 1 abandoned cart in
/// Apparel > Shoes over 30d". `searches_filtered_out`: a merchant filter leaves out the
/// searches the terms name. Categories come from signals, so they are made inert.
pub fn shared(s: &ShareSummary, window: Span, searches_filtered_out: bool) -> String {
    let mut parts = Vec::new();
    for kind in Kind::ALL {
        let n = s.kinds.get(&kind).copied().unwrap_or(0);
        match kind {
            Kind::Search if n > 0 => parts.push(count(n, "search", "searches")),
            Kind::Cart if n > 0 && !s.cart_states.is_empty() => {
                for (state, n) in &s.cart_states {
                    parts.push(format!("{} {state} {}", n, if *n == 1 { "cart" } else { "carts" }));
                }
            }
            Kind::Cart if n > 0 => parts.push(count(n, "cart", "carts")),
            Kind::Purchase if n > 0 => parts.push(count(n, "purchase", "purchases")),
            _ => {}
        }
    }
    let mut words = if parts.is_empty() { "nothing (no stored signal fits these terms now)".to_owned() } else { parts.join(", ") };
    if !s.categories.is_empty() {
        let named: Vec<String> = if s.categories.len() == 1 {
            s.categories.keys().map(|c| inert(c).into_owned()).collect()
        } else {
            s.categories.iter().map(|(c, n)| format!("{} ({n})", inert(c))).collect()
        };
        words.push_str(&format!(" in {}", named.join(", ")));
    }
    if s.other_categories > 0 {
        words.push_str(&format!(", {} in other categories", s.other_categories));
    }
    if s.uncategorised > 0 {
        words.push_str(&format!(", {} without a category", s.uncategorised));
    }
    words.push_str(&format!(" over {}", window));
    if let (Some(since), Some(until)) = (s.since, s.until) {
        words.push_str(&format!(" ({} to {})", time(since), time(until)));
    }
    if searches_filtered_out {
        words.push_str("; searches name no merchant, so the merchant filter shares none");
    }
    words
}

/// What a grant would share the moment it is made, in one sentence, before its bundle is
/// handed over: the same cut as `optin preview`.
pub fn now_shares(p: &mut Printer, would_share: Option<&WouldShare>, terms: &Terms) -> io::Result<()> {
    let searches_filtered_out = terms.merchants.is_some() && terms.kinds.contains(Kind::Search);
    match would_share {
        // An aggregate grant shares counts of these, never the signals: the sentence says
        // so, and what each answer costs, or it would read as the signals themselves.
        Some(WouldShare::Items(summary)) if terms.granularity == Granularity::Aggregate => {
            let noise = terms.noise.map_or_else(String::new, |n| {
                format!("; each count with noise of epsilon {}, each answer spending it from a budget of {}", n.epsilon, n.budget)
            });
            writeln!(p, "now it would share counts, never the signals, of {}{noise}", shared(summary, terms.window, searches_filtered_out))
        }
        Some(WouldShare::Items(summary)) => writeln!(p, "now it would share {}", shared(summary, terms.window, searches_filtered_out)),
        Some(WouldShare::Paused) => writeln!(p, "now it would share nothing: sharing is paused until `optin resume`"),
        None => Ok(()),
    }
}

/// What a pull grant cannot hide, said when one is made (SPEC.md, "What pull mode links").
pub fn pull_links(p: &mut Printer) -> io::Result<()> {
    writeln!(
        p,
        "note: every marketer that pulls from this agent sees the same address and certificate, so marketers who compare them can tell their grants come from one person"
    )
}

/// What `optin status` shows, gathered.
pub struct StatusView<'a> {
    /// The home.
    pub home: &'a std::path::Path,
    /// Whether an agent answered on the admin socket.
    pub running: bool,
    /// What the agent (or the store) said.
    pub status: &'a Status,
    /// When the extension last connected.
    pub extension: LastSeen,
}

/// `optin status --json`: what the text shows, as JSON.
#[derive(Serialize)]
struct StatusJson<'a> {
    home: String,
    running: bool,
    version: &'a str,
    agent_url: &'a str,
    paused: bool,
    /// Every kind, zero included.
    signals: BTreeMap<Kind, usize>,
    active_grants: usize,
    served_last_24h: usize,
    /// `null` when the extension never connected, `"unknown"` when the record is damaged.
    #[serde(serialize_with = "last_seen")]
    extension_last_connected: LastSeen,
}

fn last_seen<S: Serializer>(seen: &LastSeen, s: S) -> Result<S::Ok, S::Error> {
    match seen {
        LastSeen::Never => s.serialize_none(),
        LastSeen::At(last) => last.serialize(s),
        LastSeen::Unknown => s.serialize_str("unknown"),
    }
}

impl StatusView<'_> {
    /// Every kind with its count, zero included, in the store's order.
    fn counts(&self) -> BTreeMap<Kind, usize> {
        Kind::ALL.into_iter().map(|k| (k, self.status.signals.get(&k).copied().unwrap_or(0))).collect()
    }

    /// `optin status --json`.
    pub fn json(&self) -> serde_json::Result<String> {
        let s = self.status;
        serde_json::to_string_pretty(&StatusJson {
            home: self.home.display().to_string(),
            running: self.running,
            version: &s.version,
            agent_url: &s.agent_url,
            paused: s.paused,
            signals: self.counts(),
            active_grants: s.active_grants,
            served_last_24h: s.served_last_24h,
            extension_last_connected: self.extension,
        })
    }

    /// `optin status`.
    pub fn write(&self, p: &mut Printer) -> io::Result<()> {
        let s = self.status;
        let agent = if self.running {
            format!("{} (optin {})", p.paint("running", Style::Green), inert(&s.version))
        } else {
            format!("{}: commands work on the store directly; `optin serve` starts it", p.paint("not running", Style::Yellow))
        };
        let url = if self.running { inert(&s.agent_url).into_owned() } else { format!("{} (when it last ran)", inert(&s.agent_url)) };
        let sharing = if s.paused { format!("{}: every slice is refused until `optin resume`", p.paint("paused", Style::Red)) } else { "on".to_owned() };
        let counts = self.counts();
        let total: usize = counts.values().sum();
        let signals = if total == 0 {
            "none yet".to_owned()
        } else {
            let parts: Vec<String> = counts.iter().filter(|(_, &n)| n > 0).map(|(&k, &n)| kind_noun(k, n)).collect();
            format!("{total} ({})", parts.join(", "))
        };
        let grants = if s.active_grants == 0 { "none active".to_owned() } else { format!("{} active", s.active_grants) };
        let served = format!("{} in the last 24 h", count(s.served_last_24h, "slice", "slices"));
        let extension = match self.extension {
            LastSeen::At(last) => format!("last connected {} ({})", time(last.at), last.browser),
            LastSeen::Never => "never connected: `optin browser install` connects it".to_owned(),
            LastSeen::Unknown => "unknown: the record of its last connection cannot be read".to_owned(),
        };
        let home = inert(&self.home.display().to_string()).into_owned();
        for (label, value) in [
            ("agent", agent),
            ("url", url),
            ("sharing", sharing),
            ("signals", signals),
            ("grants", grants),
            ("served", served),
            ("extension", extension),
            ("home", home),
        ] {
            let label = format!("{label}:");
            // Every value is built from inert parts and the colour codes of `paint`.
            writeln!(p, "{}{} {value}", p.paint(&label, Style::Bold), " ".repeat(10 - label.len()))?;
        }
        Ok(())
    }
}
