//! What the CLI writes, and how: standard output that may close early, colour only where it
//! is wanted, tables measured by display width, and text from others made inert.
//!
//! Signal contents, marketer names, purposes and refusal reasons come from other people and
//! programs. Before any of it reaches the terminal, [`inert`] escapes what a terminal would
//! act on instead of showing: control characters (ESC starts a colour or a title change,
//! C1 controls do the same in one byte) and the invisible characters that reorder or hide
//! text (bidi overrides, line separators).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Stdout, Write};

use time::OffsetDateTime;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Standard output closed before the command finished writing (`optin signals | head -1`):
/// the reader has what it wanted, so this is not a failure. Carried inside the
/// [`io::Error`] of the write, so [`is_stdout_closed`] tells it from any other broken pipe.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct StdoutClosed;

/// Whether `error` is (caused by) writing to a closed standard output.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.downcast_ref::<io::Error>().and_then(|e| e.get_ref()).is_some_and(|inner| inner.is::<StdoutClosed>()))
}

/// Standard output, buffered, with the colour decision made once.
pub struct Printer {
    out: BufWriter<Stdout>,
    color: bool,
}

impl Printer {
    /// Standard output, coloured or not.
    pub fn stdout(color: bool) -> Printer {
        Printer { out: BufWriter::new(io::stdout()), color }
    }

    /// `text` in `style`, when colour is on.
    pub fn paint<'a>(&self, text: &'a str, style: Style) -> Cow<'a, str> {
        paint(self.color, text, style)
    }

    /// Writes JSON text, made inert (see [`json_inert`]), and a newline.
    pub fn json(&mut self, json: &str) -> io::Result<()> {
        writeln!(self, "{}", json_inert(json))
    }
}

impl Write for Printer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).map_err(closed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(closed)
    }
}

fn closed(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        error
    }
}

/// A way to show a piece of text; the terminal's own colours, nothing fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Headers and labels.
    Bold,
    /// What no longer counts (expired grants).
    Dim,
    /// What stopped or failed (revoked grants, refusals, paused sharing, errors).
    Red,
    /// What is in force or went well (active grants, a running agent, purchases).
    Green,
    /// What needs a look (abandoned carts, an agent that is not running).
    Yellow,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Red => "31",
            Style::Green => "32",
            Style::Yellow => "33",
        }
    }
}

/// `text` wrapped in the escape sequence of `style` when `color`, else as it is.
pub fn paint(color: bool, text: &str, style: Style) -> Cow<'_, str> {
    if color && !text.is_empty() {
        Cow::Owned(format!("\x1b[{}m{text}\x1b[0m", style.code()))
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether a terminal would act on `c` or hide it instead of showing it.
fn unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}'                      // Arabic letter mark
            | '\u{200b}'                    // zero-width space
            | '\u{200e}' | '\u{200f}'       // left-to-right and right-to-left marks
            | '\u{2028}'..='\u{202e}'       // line and paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'       // word joiner and invisible operators
            | '\u{2066}'..='\u{2069}'       // bidi isolates
            | '\u{feff}'                    // zero-width no-break space
            | '\u{fff9}'..='\u{fffb}') // interlinear annotation
}

/// `text` with everything a terminal would act on written out as an escape (`\n`, `\t`,
/// `\u{1b}`, `\u{202e}`), so it shows as text and does nothing.
pub fn inert(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_for_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_for_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Like [`inert`], keeping line breaks: for messages of several lines.
pub fn inert_lines(text: &str) -> String {
    text.split('\n').map(inert).collect::<Vec<_>>().join("\n")
}

/// JSON text with every character [`inert`] would escape written as a JSON `\uXXXX`
/// escape: the same JSON value, safe on a terminal. serde_json escapes C0 controls in
/// strings itself, so the only ones left are the whitespace between tokens; it does not
/// escape DEL, C1 controls or bidi overrides, which can only be inside strings (outside,
/// JSON is ASCII), where an escape means the same character.
pub fn json_inert(json: &str) -> Cow<'_, str> {
    let escaped = |c: char| unsafe_for_terminal(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(escaped) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if escaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `n` and the noun that goes with it: `1 signal`, `2 signals`, `0 signals`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The one way the CLI writes a time: RFC 3339 in UTC, what every time argument accepts.
pub fn time(at: OffsetDateTime) -> String {
    optin_protocol::timestamp::format(at)
}

/// `text` cut to at most `max` columns, ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.width() <= max {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut width = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if width + w + 1 > max {
            break;
        }
        out.push(c);
        width += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// One cell of a [`Table`]: inert text, maybe styled.
pub struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    /// A plain cell showing `text`, made inert.
    pub fn new(text: impl AsRef<str>) -> Cell {
        Cell { text: inert(text.as_ref()).into_owned(), style: None }
    }

    /// A cell showing `text` in `style`.
    pub fn styled(text: impl AsRef<str>, style: Option<Style>) -> Cell {
        Cell { style, ..Cell::new(text) }
    }
}

/// Columns of text lined up by display width (a CJK character takes two columns, a
/// combining accent none), each cut to its own maximum.
pub struct Table {
    headers: Vec<&'static str>,
    max: Vec<usize>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these columns, each `(header, most columns a value may take)`.
    pub fn new(columns: &[(&'static str, usize)]) -> Table {
        Table { headers: columns.iter().map(|c| c.0).collect(), max: columns.iter().map(|c| c.1).collect(), rows: Vec::new() }
    }

    /// Adds a row, one cell per column.
    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// Writes the header and the rows.
    pub fn write(&self, p: &mut Printer) -> io::Result<()> {
        let rows: Vec<Vec<(Cow<'_, str>, Option<Style>)>> =
            self.rows.iter().map(|row| row.iter().zip(&self.max).map(|(cell, &max)| (cut(&cell.text, max), cell.style)).collect()).collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| rows.iter().map(|row| row.get(i).map_or(0, |c| c.0.width())).chain([self.headers[i].width()]).max().unwrap_or(0))
            .collect();
        let header: Vec<(Cow<'_, str>, Option<Style>)> = self.headers.iter().map(|h| (Cow::Borrowed(*h), Some(Style::Bold))).collect();
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, (text, style)) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                match style {
                    Some(style) => line.push_str(&p.paint(text, *style)),
                    None => line.push_str(text),
                }
                if !last {
                    line.push_str(&" ".repeat(widths[i].saturating_sub(text.width()) + 2));
                }
            }
            // An empty last cell would leave the padding of the one before it.
            writeln!(p, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inert_escapes_what_a_terminal_acts_on() {
        for (text, shown) in [
            ("plain query", "plain query"),
            ("\x1b[31mred", "\\u{1b}[31mred"),
            ("a\u{9b}31mb", "a\\u{9b}31mb"),
            ("evil\u{202e}gpj.exe", "evil\\u{202e}gpj.exe"),
            ("two\nlines\tand\rtab", "two\\nlines\\tand\\rtab"),
            ("bell\x07 del\x7f", "bell\\u{7} del\\u{7f}"),
            ("isolate\u{2066}x\u{2069}", "isolate\\u{2066}x\\u{2069}"),
            ("日本語 café 👩\u{200d}💻", "日本語 café 👩\u{200d}💻"),
        ] {
            assert_eq!(inert(text), shown, "{text:?}");
        }
        assert_eq!(inert_lines("one\x1b]0;title\x07\ntwo"), "one\\u{1b}]0;title\\u{7}\ntwo");
    }

    #[test]
    fn inert_json_is_the_same_value() {
        let value = serde_json::json!({"query": "a\u{202e}b\u{7f}c\u{85}d\x1be\nf", "list": [1, 2]});
        for text in [serde_json::to_string(&value), serde_json::to_string_pretty(&value)] {
            let text = text.expect("serializes");
            let safe = json_inert(&text);
            assert!(!safe.chars().any(|c| unsafe_for_terminal(c) && c != '\n'), "{safe}");
            assert_eq!(safe.lines().count(), text.lines().count(), "the layout stays: {safe}");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).expect("still JSON"), value);
        }
    }

    #[test]
    fn cuts_by_display_width() {
        for (text, max, expected) in [
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("a bit too long", 10, "a bit too…"),
            ("日本語のテキスト", 7, "日本語…"),
            ("日本語", 6, "日本語"),
        ] {
            assert_eq!(cut(text, max), expected, "{text} in {max}");
            assert!(cut(text, max).width() <= max, "{text} in {max}");
        }
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        for (n, expected) in [(0, "0 signals"), (1, "1 signal"), (2, "2 signals")] {
            assert_eq!(count(n, "signal", "signals"), expected);
        }
        assert_eq!(count(1, "search", "searches"), "1 search");
    }

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(paint(false, "x", Style::Red), "x");
        assert_eq!(paint(true, "x", Style::Red), "\x1b[31mx\x1b[0m");
    }
}
