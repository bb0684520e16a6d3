//! What each parser of untrusted input in the agent must hold to, whatever the bytes: one
//! function per parser, called by its fuzz target (`fuzz/fuzz_targets/`) and, for every file
//! of the committed corpus (`fuzz/corpus/<target>/`), by this module's test. The protocol's
//! parsers have theirs in `optin_protocol::fuzz`, for the same reasons given there.
//!
//! Like `cli`, this module sits above every other (it reaches `serve`, `browser` and
//! `import`), and nothing uses it but the fuzz targets and its test.

use std::sync::OnceLock;

use rusqlite::types::ValueRef;

use crate::browser::native_host::{read_frame, read_incoming, Incoming, MAX_MESSAGE};
use crate::browser::Browser;
use crate::import::engines::{Engines, MAX_QUERY_CHARS};
use crate::import::row::{self, Row};
use crate::serve::http::slice_query as parse_slice_query;

/// A fuzz target's invariant function: takes any bytes, panics only when an invariant fails.
pub type Check = fn(&[u8]);

/// The fuzz targets of this crate with their functions, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[("slice_query", slice_query), ("native_frame", native_frame), ("history_row", history_row)];

/// A slice request's query string: an accepted query, written back as a query string of its
/// fields, reads back the same.
pub fn slice_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(query) = parse_slice_query(text) else { return };
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Some(kinds) = &query.kinds {
        out.append_pair("kinds", &kinds.to_string());
    }
    if let Some(since) = query.since {
        out.append_pair("since", &optin_protocol::timestamp::format(since));
    }
    if let Some(until) = query.until {
        out.append_pair("until", &optin_protocol::timestamp::format(until));
    }
    if let Some(granularity) = query.granularity {
        out.append_pair("granularity", &granularity.to_string());
    }
    if let Some(limit) = query.limit {
        out.append_pair("limit", &limit.to_string());
    }
    if let Some(cursor) = &query.cursor {
        out.append_pair("cursor", cursor);
    }
    let written = out.finish();
    match parse_slice_query(&written) {
        Ok(again) => assert_eq!(again, query, "a query reads back as itself: {written}"),
        Err(e) => panic!("an accepted query, written out, is refused ({}): {written}", e.status()),
    }
}

/// A native-messaging frame (4-byte native-endian length, then the message): what is read
/// is exactly the bytes the length announced, never more than the limit; a clean end only
/// comes before a whole length.
pub fn native_frame(data: &[u8]) {
    // The host reads with `read_incoming`, which reads an oversized frame through instead of
    // failing; on frames within the limit both must agree.
    let incoming = read_incoming(&mut &data[..]);
    let mut input = data;
    let frame = read_frame(&mut input);
    match (&frame, &incoming) {
        (Ok(Some(body)), Ok(Some(Incoming::Message(message)))) => assert_eq!(body, message, "both readers read the same frame"),
        (Ok(Some(_)), other) => panic!("read_frame read a frame, read_incoming {other:?}"),
        (_, Ok(Some(Incoming::Oversized { bytes, .. }))) => assert!(*bytes > MAX_MESSAGE, "only a frame over the limit is oversized"),
        _ => {}
    }
    match frame {
        Ok(Some(body)) => {
            assert!(body.len() <= MAX_MESSAGE, "a frame holds at most the limit");
            let mut len = [0u8; 4];
            len.copy_from_slice(&data[..4]);
            assert_eq!(u32::from_ne_bytes(len) as usize, body.len(), "the frame is as long as announced");
            assert_eq!(&data[4..4 + body.len()], body.as_slice(), "the frame is the bytes after the length");
            assert_eq!(input.len(), data.len() - 4 - body.len(), "nothing past the frame is consumed");
        }
        Ok(None) => assert!(data.len() < 4, "a clean end comes only before a whole length"),
        Err(_) => {}
    }
}

/// One history row's values (see [`row_from_bytes`] for how bytes become a row): a row that
/// yields a search yields one the agent accepts, bounded and trimmed, the same every time.
pub fn history_row(data: &[u8]) {
    let Some((browser, row)) = row_from_bytes(data) else { return };
    let engines = engines();
    let found = row::search(browser, &row, engines);
    assert_eq!(found, row::search(browser, &row, engines), "the same row gives the same answer");
    let Ok(Some(search)) = found else { return };
    let query_chars = search.query.chars().count();
    assert!(query_chars > 0 && query_chars <= MAX_QUERY_CHARS, "the query is bounded: {query_chars}");
    assert_eq!(search.query.trim(), search.query, "the query is trimmed");
    assert!(!search.query.chars().any(optin_protocol::is_control_or_bidi), "the query holds nothing a terminal acts on");
    assert!(search.id.len() == 34 && search.id.starts_with("h-"), "the id is h- and 32 hex digits: {}", search.id);
    if let Err(e) = optin_protocol::signal::parse_line(&search.ndjson(), &crate::merchant::registrable) {
        panic!("a search found is refused by the agent: {e}");
    }
}

/// The rules shipped with the extension, parsed once.
fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Option<Engines>> = OnceLock::new();
    // The shipped rules are tested to parse (`import::engines` tests); were they not, the
    // importer could not run at all, and neither can this check.
    match ENGINES.get_or_init(|| Engines::builtin().ok()) {
        Some(engines) => engines,
        None => panic!("the built-in engine rules do not parse"),
    }
}

/// A row from fuzz bytes: byte 0 picks the browser (high bit: Firefox) and each value's
/// SQLite type (`% 5`, `/ 5 % 5`, `/ 25 % 5` for URL, time and term: NULL, integer, real,
/// text, blob); bytes 1..9 are the number (integer or real) of every numeric value; the rest
/// is the URL's bytes, then a 0x00, then the term's.
pub fn row_from_bytes(data: &[u8]) -> Option<(Browser, Row<'_>)> {
    let (&selector, rest) = data.split_first()?;
    let number: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    let tail = &rest[8..];
    let (url, term) = match tail.iter().position(|&b| b == 0) {
        Some(at) => (&tail[..at], &tail[at + 1..]),
        None => (tail, &[][..]),
    };
    let browser = if selector & 0x80 == 0 { Browser::Chromium } else { Browser::Firefox };
    let types = selector & 0x7F;
    let row = Row { url: value(types, number, url), time: value(types / 5, number, url), term: value(types / 25, number, term) };
    Some((browser, row))
}

/// One SQLite value of the type `kind % 5` picks, from the number or the bytes.
fn value(kind: u8, number: [u8; 8], bytes: &[u8]) -> ValueRef<'_> {
    match kind % 5 {
        0 => ValueRef::Null,
        1 => ValueRef::Integer(i64::from_le_bytes(number)),
        2 => ValueRef::Real(f64::from_le_bytes(number)),
        3 => ValueRef::Text(bytes),
        _ => ValueRef::Blob(bytes),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays the committed corpus through the same functions the fuzz targets call, on
    /// stable Rust, so each crash found once stays fixed.
    #[test]
    fn replays_the_fuzz_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, check) in super::TARGETS {
            let dir = root.join(target);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut replayed = 0;
            for entry in entries {
                let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // Printed before the check so that a failure names the input at fault.
                println!("{target}: {}", path.display());
                check(&bytes);
                replayed += 1;
            }
            assert!(replayed > 0, "{target}: the corpus is empty");
        }
    }
}
