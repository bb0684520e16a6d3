//! What `grants`, `slices` and `export` print. Everything that came in a push (a bundle's
//! purpose, a marketer's name) is made inert before a terminal sees it: control,
//! bidirectional and invisible characters are written as escapes, in tables and in JSON alike.

use std::io::Write;

use serde_json::{json, Value};

use optin_protocol::bundle::GrantBundle;

use crate::store::{GrantRecord, SliceRecord};

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a person (not for `export`).
    Table,
    /// One JSON object a line.
    Ndjson,
    /// Comma-separated values with a header line (RFC 4180).
    Csv,
}

/// `text` with every control, bidirectional or invisible character written `\u{…}`.
pub fn inert(text: &str) -> String {
    text.chars().map(|c| if optin_protocol::is_hidden_or_control(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// A JSON value as one line in which those characters are JSON escapes (`\u202e`): the same
/// value to a JSON reader, nothing a terminal acts on.
pub fn inert_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if optin_protocol::is_hidden_or_control(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One CSV field, quoted when it must be, and inert.
fn csv_field(text: &str) -> String {
    let text = inert(text);
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(['=', '+', '-', '@']) {
        // A leading formula character is quoted with a `'` as well, so that a spreadsheet
        // opening the export does not run what a push carried.
        let text = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text };
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(fields: &[String]) -> String {
    fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
}

fn ts(at: time::OffsetDateTime) -> String {
    optin_protocol::timestamp::format(at)
}

fn grant_json(g: &GrantRecord) -> Value {
    let bundle = GrantBundle::parse(&g.bundle).ok();
    let mut value = json!({
        "grant_id": g.grant_id.as_str(),
        "request_id": g.request_id.as_str(),
        "state": g.state().as_str(),
        "created_at": ts(g.created_at),
        "purpose": bundle.as_ref().map(|b| b.purpose.clone()),
        "kinds": bundle.as_ref().map(|b| b.terms.kinds.to_string()),
        "expires_at": bundle.as_ref().map(|b| ts(b.terms.expires_at)),
    });
    if let Some(ended) = &g.ended {
        value["ended_at"] = json!(ts(ended.at));
        value["erased_slices"] = json!(ended.erased);
        value["kept_slices"] = json!(ended.kept);
    }
    value
}

/// Writes the grants.
pub fn grants(out: &mut impl Write, grants: &[GrantRecord], format: Format) -> std::io::Result<()> {
    match format {
        Format::Ndjson => {
            for g in grants {
                writeln!(out, "{}", inert_json(&grant_json(g)))?;
            }
        }
        Format::Csv => {
            writeln!(out, "grant_id,request_id,state,created_at,ended_at,erased_slices,kept_slices,purpose")?;
            for g in grants {
                let v = grant_json(g);
                let field = |k: &str| match &v[k] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                let fields: Vec<String> =
                    ["grant_id", "request_id", "state", "created_at", "ended_at", "erased_slices", "kept_slices", "purpose"].map(field).into();
                writeln!(out, "{}", csv_line(&fields))?;
            }
        }
        Format::Table => {
            if grants.is_empty() {
                return writeln!(out, "no grants");
            }
            writeln!(out, "{:<26}  {:<20}  {:<8}  {:<20}  ENDED", "GRANT", "REQUEST", "STATE", "CREATED")?;
            for g in grants {
                let ended = match &g.ended {
                    None => String::new(),
                    Some(e) if e.kept > 0 => format!("{} ({} slices kept, flagged)", ts(e.at), e.kept),
                    Some(e) => format!("{} ({} erased)", ts(e.at), if e.erased == 1 { "1 slice".to_owned() } else { format!("{} slices", e.erased) }),
                };
                writeln!(out, "{:<26}  {:<20}  {:<8}  {:<20}  {ended}", g.grant_id.as_str(), g.request_id.as_str(), g.state().as_str(), ts(g.created_at))?;
            }
        }
    }
    Ok(())
}

/// Writes the slices, without their JWS (`export` has it).
pub fn slices(out: &mut impl Write, slices: &[SliceRecord], format: Format) -> std::io::Result<()> {
    match format {
        Format::Ndjson => {
            for s in slices {
                let value = json!({"jti": s.jti.as_str(), "grant_id": s.grant_id.as_str(), "received_at": ts(s.received_at), "items": s.items, "kept_after_end": s.kept_after_end});
                writeln!(out, "{}", inert_json(&value))?;
            }
        }
        Format::Csv => {
            writeln!(out, "jti,grant_id,received_at,items,kept_after_end")?;
            for s in slices {
                let fields = [s.jti.to_string(), s.grant_id.to_string(), ts(s.received_at), s.items.to_string(), s.kept_after_end.to_string()];
                writeln!(out, "{}", csv_line(&fields))?;
            }
        }
        Format::Table => {
            if slices.is_empty() {
                return writeln!(out, "no slices");
            }
            writeln!(out, "{:<34}  {:<26}  {:<20}  {:>6}", "SLICE", "GRANT", "RECEIVED", "ITEMS")?;
            for s in slices {
                let flag = if s.kept_after_end { "  kept after its grant ended" } else { "" };
                writeln!(out, "{:<34}  {:<26}  {:<20}  {:>6}{flag}", s.jti.as_str(), s.grant_id.as_str(), ts(s.received_at), s.items)?;
            }
        }
    }
    Ok(())
}

/// The grants whose data `export` writes: live, and not past their end even when the agent
/// has not said so yet (it pushes `grant.expired` only while it runs).
pub fn exportable(grants: Vec<GrantRecord>, now: time::OffsetDateTime) -> Vec<GrantRecord> {
    grants
        .into_iter()
        .filter(|g| g.state() == crate::store::GrantState::Live)
        .filter(|g| GrantBundle::parse(&g.bundle).is_ok_and(|b| b.terms.expires_at > now))
        .collect()
}

/// Writes live grants' slices with what re-verifies each: the JWS, and the grant's key,
/// issuer and audience from its bundle. `grants` holds the slices' grants.
pub fn export(out: &mut impl Write, grants: &[GrantRecord], slices: &[SliceRecord], format: Format) -> std::io::Result<()> {
    if format == Format::Csv {
        writeln!(out, "grant_id,request_id,jti,received_at,items,issuer,audience,jwk,slice")?;
    }
    for s in slices {
        let Some(grant) = grants.iter().find(|g| g.grant_id == s.grant_id) else { continue };
        let Ok(bundle) = GrantBundle::parse(&grant.bundle) else { continue };
        let jwk = serde_json::to_value(&bundle.jwk).unwrap_or(Value::Null);
        match format {
            Format::Csv => {
                let fields = [
                    s.grant_id.to_string(),
                    grant.request_id.to_string(),
                    s.jti.to_string(),
                    ts(s.received_at),
                    s.items.to_string(),
                    bundle.issuer.clone(),
                    bundle.marketer.clone(),
                    jwk.to_string(),
                    s.jws.clone(),
                ];
                writeln!(out, "{}", csv_line(&fields))?;
            }
            _ => {
                let value = json!({
                    "grant_id": s.grant_id.as_str(), "request_id": grant.request_id.as_str(), "jti": s.jti.as_str(),
                    "received_at": ts(s.received_at), "items": s.items,
                    "issuer": bundle.issuer, "audience": bundle.marketer, "jwk": jwk, "slice": s.jws,
                });
                writeln!(out, "{}", inert_json(&value))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_inert_in_every_format() {
        for (text, table, json_line) in [
            ("plain", "plain", r#""plain""#),
            ("\u{1b}[31mred", "\\u{1b}[31mred", r#""\u001b[31mred""#),
            ("abc\u{202e}fed", "abc\\u{202e}fed", r#""abc\u202efed""#),
            ("zero\u{200b}width", "zero\\u{200b}width", r#""zero\u200bwidth""#),
        ] {
            assert_eq!(inert(text), table, "{text:?}");
            let line = inert_json(&json!(text));
            assert_eq!(line, json_line, "{text:?}");
            assert_eq!(serde_json::from_str::<String>(&line).unwrap(), text, "the JSON still reads back as sent");
        }
    }

    #[test]
    fn only_live_grants_before_their_end_are_exported() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        use time::macros::datetime;

        use optin_protocol::scope::{GrantId, Granularity, Terms};
        use optin_protocol::webhook::WebhookId;

        use crate::store::{Ended, GrantState};

        let now = datetime!(2026-11-23 12:00 UTC);
        let record = |n: u8, expires_at, ended: Option<GrantState>| {
            let grant_id = GrantId::parse(&format!("g_{n:024x}")).unwrap();
            let key = Ed25519KeyPair::from_seed_unchecked(&[n; 32]).unwrap();
            let bundle = GrantBundle {
                version: optin_protocol::bundle::VERSION,
                token: optin_protocol::token::Token::mint(&[n; 32], &grant_id).encode(),
                grant_id: grant_id.clone(),
                marketer: "acme.example".into(),
                purpose: "offers".into(),
                issuer: "urn:optin:agent:p_0123456789abcdef0123456789abcdef".into(),
                agent_url: None,
                cert_sha256: None,
                jwk: optin_protocol::jws::Jwk::ed25519(key.public_key().as_ref()),
                terms: Terms {
                    audience: "acme.example".into(),
                    kinds: "search".parse().unwrap(),
                    granularity: Granularity::Raw,
                    window: "30d".parse().unwrap(),
                    expires_at,
                    categories: None,
                    merchants: None,
                    fields: None,
                    rate: None,
                    noise: None,
                },
                receipt: None,
            };
            GrantRecord {
                grant_id: grant_id.clone(),
                request_id: optin_protocol::request::RequestId::parse("shoes-1").unwrap(),
                bundle: serde_json::to_string(&bundle).unwrap(),
                receipt: "r.e.c".into(),
                created_at: now,
                ended: ended.map(|state| Ended { state, by: WebhookId::parse(&format!("{grant_id}-revoked")).unwrap(), at: now, erased: 0, kept: 1 }),
            }
        };
        let grants = vec![
            record(1, datetime!(2027-01-01 0:00 UTC), None),
            record(2, datetime!(2026-11-23 0:00 UTC), None),
            record(3, datetime!(2027-01-01 0:00 UTC), Some(GrantState::Revoked)),
            record(4, now, None),
        ];
        let kept: Vec<String> = exportable(grants, now).into_iter().map(|g| g.grant_id.to_string()).collect();
        assert_eq!(kept, [format!("g_{:024x}", 1)]);
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        for (text, field) in [
            ("g_1", "g_1"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("line\nbreak", "line\\u{a}break"),
        ] {
            assert_eq!(csv_field(text), field, "{text:?}");
        }
    }
}
