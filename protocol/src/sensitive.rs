//! Sensitive topics: what no grant reaches unless the person says so.
//!
//! The shipped list (`extension/sensitive-topics.json`, read by the browser extension too)
//! names topics such as health or religion, each with category paths and curated search
//! terms. A signal matches a topic when a category it shows lies within one of the topic's
//! paths, or when its search query holds one of the topic's terms as whole words. Text is
//! compared after [`Table::fold`], which undoes the evasions that cost nothing: case, runs
//! of spaces, punctuation between words, full-width letters, accents and invisible
//! characters. SPEC.md, "Sensitive topics", has the rules and the known misses.
//!
//! The person's never-share list ([`NeverShare`]) switches shipped topics off and adds their
//! own category paths. It is applied in the one scope decision, through
//! [`crate::scope::Applied::admits`], so a signal it withholds leaves by no way at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::signal::{category_within, limits, Body, Signal};

/// The shipped list, as the crate is built with it.
pub const SHIPPED: &str = include_str!("../../extension/sensitive-topics.json");

/// One shipped topic.
#[derive(Clone, Debug)]
pub struct Topic {
    /// Its id, like `health`: lowercase words joined by `-`.
    pub id: String,
    /// What a person reads.
    pub label: String,
    /// Category paths, as written in the list.
    pub categories: Vec<String>,
    /// The same paths, folded for comparison.
    folded_categories: Vec<String>,
    /// Search terms, each a sequence of folded words.
    terms: Vec<Vec<Word>>,
}

/// One word of a term: the whole word, or (written with a trailing `*`) any word that
/// begins with it.
#[derive(Clone, Debug)]
enum Word {
    Exact(String),
    Prefix(String),
}

impl Word {
    fn matches(&self, word: &str) -> bool {
        match self {
            Word::Exact(w) => w == word,
            Word::Prefix(p) => word.starts_with(p.as_str()),
        }
    }
}

/// The topics and the folding rule, read from a list in the shipped format.
#[derive(Debug)]
pub struct Table {
    topics: Vec<Topic>,
    fold: HashMap<char, String>,
    /// Terms by their first word, when it is an exact word: (topic, term).
    by_first: HashMap<String, Vec<(usize, usize)>>,
    /// Terms whose first word is a prefix.
    by_prefix: Vec<(usize, usize)>,
    /// Whether `fold` maps an ASCII character. Without, ASCII text folds to its lowercase,
    /// which is most text and the most of the time a slice spends here.
    folds_ascii: bool,
}

/// Why a list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sensitive topics list: {0}")]
pub struct TableError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[allow(dead_code)] // documentation for the people who read the file
    sources: Vec<String>,
    fold: BTreeMap<String, String>,
    topics: Vec<FileTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTopic {
    id: String,
    label: String,
    categories: Vec<String>,
    terms: Vec<String>,
}

/// Whether `text` is written as a topic id: lowercase letters and digits, in words joined by
/// single hyphens.
pub fn looks_like_topic_id(text: &str) -> bool {
    !text.is_empty() && text.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

impl Table {
    /// Reads a list. Refused: another version, an id that is not a topic id or is given
    /// twice, a term or category that folds to nothing.
    pub fn parse(json: &str) -> Result<Table, TableError> {
        let file: File = serde_json::from_str(json).map_err(|e| TableError(e.to_string()))?;
        if file.version != 1 {
            return Err(TableError(format!("version {} is not 1", file.version)));
        }
        let mut fold = HashMap::new();
        for (to, from) in &file.fold {
            for c in from.chars() {
                if fold.insert(c, to.clone()).is_some() {
                    return Err(TableError(format!("`{c}` is folded twice")));
                }
            }
        }
        let folds_ascii = fold.keys().any(char::is_ascii);
        let mut table = Table { topics: Vec::new(), fold, by_first: HashMap::new(), by_prefix: Vec::new(), folds_ascii };
        for t in file.topics {
            if !looks_like_topic_id(&t.id) || table.topic(&t.id).is_some() {
                return Err(TableError(format!("topic id `{}` is malformed or given twice", t.id)));
            }
            let mut terms = Vec::new();
            for term in &t.terms {
                let words: Vec<Word> = table.words(term.trim_end_matches('*')).into_iter().map(Word::Exact).collect();
                let mut words = words;
                if term.ends_with('*') {
                    if let Some(Word::Exact(last)) = words.pop() {
                        words.push(Word::Prefix(last));
                    }
                }
                if words.is_empty() {
                    return Err(TableError(format!("topic `{}`: term `{term}` has no word", t.id)));
                }
                terms.push(words);
            }
            let folded_categories = t.categories.iter().map(|c| table.fold_category(c)).collect::<Vec<_>>();
            if folded_categories.iter().any(String::is_empty) {
                return Err(TableError(format!("topic `{}`: an empty category", t.id)));
            }
            let index = table.topics.len();
            for (n, term) in terms.iter().enumerate() {
                match &term[0] {
                    Word::Exact(w) => table.by_first.entry(w.clone()).or_default().push((index, n)),
                    Word::Prefix(_) => table.by_prefix.push((index, n)),
                }
            }
            table.topics.push(Topic { id: t.id, label: t.label, categories: t.categories, folded_categories, terms });
        }
        Ok(table)
    }

    /// The shipped list ([`SHIPPED`]).
    pub fn shipped() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        // The file is compiled in and `the_shipped_list_parses` reads it whole, so it always
        // parses; were it ever broken, failing loudly beats sharing what it would withhold.
        #[allow(clippy::expect_used)]
        TABLE.get_or_init(|| Table::parse(SHIPPED).expect("the shipped sensitive-topics list parses"))
    }

    /// The topics, in the list's order.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// The topic with this id.
    pub fn topic(&self, id: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.id == id)
    }

    /// `text` as it is compared: lowercase, with full-width, mathematical and circled
    /// letters and digits read as ASCII ([`plain`]), invisible characters and combining
    /// marks removed, and accented letters folded to their base letters as the list's `fold`
    /// says. Nothing else is changed.
    pub fn fold(&self, text: &str) -> String {
        // ASCII has no styled, invisible or combining characters: only case is left to fold.
        if text.is_ascii() && !self.folds_ascii {
            return text.to_ascii_lowercase();
        }
        self.fold_each(text)
    }

    /// [`Table::fold`], a character at a time.
    fn fold_each(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            for c in plain(c).to_lowercase() {
                if is_invisible(c) || is_combining(c) {
                    continue;
                }
                match self.fold.get(&c) {
                    Some(to) => out.push_str(to),
                    None => out.push(c),
                }
            }
        }
        out
    }

    /// The words of `text` after [`Table::fold`]: its runs of letters and digits; anything
    /// else (spaces, punctuation, symbols) separates them.
    pub fn words(&self, text: &str) -> Vec<String> {
        split_words(&self.fold(text)).map(str::to_owned).collect()
    }

    /// A category path as it is compared: folded, each segment trimmed, joined by ` > `.
    /// An empty path, or one with an empty segment, folds to the empty string.
    pub fn fold_category(&self, path: &str) -> String {
        let segments: Vec<String> = self.fold(path).split('>').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        if segments.iter().any(String::is_empty) {
            return String::new();
        }
        segments.join(" > ")
    }

    /// The ids of the topics whose terms `query` holds.
    pub fn query_topics(&self, query: &str) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        let _ = self.each_query_topic(query, &mut |id| {
            found.insert(id);
            ControlFlow::<()>::Continue(())
        });
        found
    }

    /// Calls `visit` with the id of each topic whose terms `query` holds (a topic may come
    /// more than once), until it breaks.
    fn each_query_topic<'t, B>(&'t self, query: &str, visit: &mut impl FnMut(&'t str) -> ControlFlow<B>) -> ControlFlow<B> {
        let folded = self.fold(query);
        let words: Vec<&str> = split_words(&folded).collect();
        let holds = |at: usize, term: &[Word]| term.len() <= words.len() - at && term.iter().zip(&words[at..]).all(|(t, w)| t.matches(w));
        for (at, word) in words.iter().enumerate() {
            let exact = self.by_first.get(*word).into_iter().flatten();
            for &(topic, term) in exact.chain(&self.by_prefix) {
                if holds(at, &self.topics[topic].terms[term]) {
                    visit(self.topics[topic].id.as_str())?;
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// A category a signal shows, as it is compared: as [`Table::fold_category`], but a part
    /// left empty (a stray `>`, a part of spaces or invisible characters) is dropped rather
    /// than emptying the whole path. A signal's category is page data, not a list entry:
    /// read as nothing, it would match no topic and no path of the person's, so a trailing
    /// `>` would be enough to share what the list withholds. Empty when no part is left.
    pub fn fold_shown(&self, category: &str) -> String {
        let folded = self.fold(category);
        let mut out = String::with_capacity(folded.len());
        for part in folded.split('>') {
            let mut words = part.split_whitespace().peekable();
            if words.peek().is_some() && !out.is_empty() {
                out.push_str(" > ");
            }
            for (n, word) in words.enumerate() {
                if n > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out
    }

    /// The ids of the topics one of whose paths `category` lies within.
    pub fn category_topics(&self, category: &str) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        let _ = self.each_category_topic(&self.fold_shown(category), &mut |id| {
            found.insert(id);
            ControlFlow::<()>::Continue(())
        });
        found
    }

    /// Calls `visit` with the id of each topic one of whose paths the folded category
    /// `folded` lies within, until it breaks.
    fn each_category_topic<'t, B>(&'t self, folded: &str, visit: &mut impl FnMut(&'t str) -> ControlFlow<B>) -> ControlFlow<B> {
        if folded.is_empty() {
            return ControlFlow::Continue(());
        }
        for topic in self.topics.iter().filter(|t| t.folded_categories.iter().any(|p| category_within(folded, p))) {
            visit(topic.id.as_str())?;
        }
        ControlFlow::Continue(())
    }

    /// The ids of the topics `signal` matches, by its query and every category it shows,
    /// in order.
    pub fn signal_topics(&self, signal: &Signal) -> Vec<String> {
        let mut found = BTreeSet::new();
        let _ = self.each_signal_topic(signal, &mut |id| {
            found.insert(id);
            ControlFlow::<()>::Continue(())
        });
        found.into_iter().map(str::to_owned).collect()
    }

    /// Calls `visit` with the id of each topic `signal` matches, by every category it shows
    /// and then its query (a topic may come more than once), until it breaks: a slice asks
    /// only whether one topic still on matches, and most signals match none.
    fn each_signal_topic<'t, B>(&'t self, signal: &Signal, visit: &mut impl FnMut(&'t str) -> ControlFlow<B>) -> ControlFlow<B> {
        for c in categories(signal) {
            self.each_category_topic(&self.fold_shown(c), visit)?;
        }
        if let Body::Search { query, .. } = &signal.body {
            self.each_query_topic(query, visit)?;
        }
        ControlFlow::Continue(())
    }
}

/// The words of folded text: its runs of letters and digits.
fn split_words(folded: &str) -> impl Iterator<Item = &str> {
    folded.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// Every category `signal` shows: its own and its items'.
fn categories(signal: &Signal) -> impl Iterator<Item = &str> {
    let items = match &signal.body {
        Body::Search { .. } => &[][..],
        Body::Cart { items, .. } | Body::Purchase { items, .. } => &items[..],
    };
    signal.category.as_deref().into_iter().chain(items.iter().filter_map(|i| i.category.as_deref()))
}

/// `c` as the ASCII letter or digit it is drawn as, for the styled alphabets that text
/// generators offer to slip words past filters: full-width forms of ASCII `!` to `~`,
/// mathematical alphanumeric symbols (bold, italic, script, fraktur, double-struck,
/// sans-serif and monospace letters, U+1D400 to U+1D6A3, 13 alphabets of `A`–`Z` and
/// `a`–`z`; digits U+1D7CE to U+1D7FF) and circled letters (U+24B6 to U+24E9). Any other
/// character is itself.
fn plain(c: char) -> char {
    let n = c as u32;
    let from = |base: char, offset: u32| char::from_u32(base as u32 + offset);
    let mapped = match n {
        0xFF01..=0xFF5E => char::from_u32(n - 0xFEE0),
        0x1D400..=0x1D6A3 => match (n - 0x1D400) % 52 {
            i @ 0..=25 => from('A', i),
            i => from('a', i - 26),
        },
        0x1D7CE..=0x1D7FF => from('0', (n - 0x1D7CE) % 10),
        0x24B6..=0x24CF => from('A', n - 0x24B6),
        0x24D0..=0x24E9 => from('a', n - 0x24D0),
        _ => None,
    };
    mapped.unwrap_or(c)
}

/// Characters that show nothing and that a person could slip into a word unseen: Unicode's
/// default-ignorable code points (DerivedCoreProperties.txt), which a renderer draws as
/// nothing. Soft hyphen, zero-width and joiner characters, word joiners, bidirectional
/// marks and the byte order mark, and also variation selectors, tag characters, Hangul
/// fillers (letters that show nothing) and the other format characters of the property:
/// any one left in a word would split it from the term it spells.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Combining diacritical marks (U+0300 to U+036F), which put accents on the letter before.
fn is_combining(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}')
}

/// One entry the person gives `optin exclude` or `optin include`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A shipped topic, by id.
    Topic(String),
    /// A category path, its segments trimmed and joined by ` > `.
    Category(String),
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Nothing was given.
    #[error("an empty topic or category: name a topic ({known}) or a category like \"Health & Beauty > Health Care\"")]
    Empty {
        /// The known topic ids.
        known: String,
    },
    /// A control, bidirectional or invisible character.
    #[error("a topic or category may not hold control or invisible characters")]
    Hidden,
    /// Written as a topic id, but no topic has it.
    #[error("unknown topic `{id}`: the topics are {known}; a category is written as the taxonomy writes it, like \"Health & Beauty > Health Care\"")]
    UnknownTopic {
        /// What was given (truncated).
        id: String,
        /// The known topic ids.
        known: String,
    },
    /// A category with an empty segment, or too long.
    #[error("category `{path}`: {reason}")]
    Category {
        /// What was given (truncated).
        path: String,
        /// What was wrong.
        reason: String,
    },
}

impl Entry {
    /// Parses what the person typed, against `table`'s topics: a topic id when it is written
    /// like one (and then it must be known), else a category path.
    pub fn parse(text: &str, table: &Table) -> Result<Entry, EntryError> {
        let known = || table.topics().iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ");
        if text.chars().any(crate::is_hidden_or_control) {
            return Err(EntryError::Hidden);
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(EntryError::Empty { known: known() });
        }
        if looks_like_topic_id(text) {
            return match table.topic(text) {
                Some(t) => Ok(Entry::Topic(t.id.clone())),
                None => Err(EntryError::UnknownTopic { id: text.chars().take(64).collect(), known: known() }),
            };
        }
        let bad = |reason: &str| EntryError::Category { path: text.chars().take(64).collect(), reason: reason.into() };
        let segments: Vec<String> = text.split('>').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        if segments.iter().any(String::is_empty) {
            return Err(bad("every part between `>` must name something"));
        }
        let path = segments.join(" > ");
        // A part the matcher folds away (only marks or invisible characters) would be a path
        // that is listed and withholds nothing: refused, so the list shows only what it does.
        if table.fold_category(&path).is_empty() {
            return Err(bad("every part between `>` must name something visible"));
        }
        if path.chars().count() > limits::CATEGORY_CHARS {
            return Err(bad(&format!("longer than {} characters", limits::CATEGORY_CHARS)));
        }
        Ok(Entry::Category(path))
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Topic(id) => f.write_str(id),
            Entry::Category(path) => f.write_str(path),
        }
    }
}

/// The person's never-share list: the shipped topics they switched off, and their own
/// category paths. The default (nothing switched off, no paths of their own) withholds every
/// shipped topic, so a scope nobody filled in is the safe one.
/// It is no wire type: the agent's store keeps it in a versioned record of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeverShare {
    /// Shipped topics the person allowed to be shared (`optin include TOPIC`).
    pub included: BTreeSet<String>,
    /// The person's own category paths (`optin exclude "A > B"`), as [`Entry::Category`]
    /// writes them.
    pub categories: BTreeSet<String>,
}

/// Why a signal is withheld: the topics still on that it matches, and the person's paths
/// that a category of it lies within.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Withheld {
    /// Topic ids.
    pub topics: Vec<String>,
    /// The person's category paths.
    pub categories: Vec<String>,
}

impl Withheld {
    /// Whether nothing withholds the signal.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.categories.is_empty()
    }
}

impl NeverShare {
    /// Whether `topic` is withheld: on unless the person included it.
    pub fn topic_on(&self, topic: &str) -> bool {
        !self.included.contains(topic)
    }

    /// Why `signal` is withheld, against the shipped list. `marked` are the topics the signal
    /// was marked with when it was stored; they count as well as those it matches now, so a
    /// topic a later list no longer finds in it stays withheld.
    pub fn withheld(&self, signal: &Signal) -> Withheld {
        let table = Table::shipped();
        let mut topics: BTreeSet<String> = table.signal_topics(signal).into_iter().collect();
        topics.extend(signal.sensitive.iter().cloned());
        let topics = topics.into_iter().filter(|t| self.topic_on(t)).collect();
        let categories = self.categories.iter().filter(|path| self.path_holds(table, path, signal)).cloned().collect();
        Withheld { topics, categories }
    }

    /// Whether `signal` may not leave the agent: [`NeverShare::withheld`] is not empty.
    /// Answered at the first reason found, since every slice asks it of every signal it
    /// reads.
    pub fn withholds(&self, signal: &Signal) -> bool {
        if signal.sensitive.iter().any(|t| self.topic_on(t)) {
            return true;
        }
        let table = Table::shipped();
        let on = table.each_signal_topic(signal, &mut |id| if self.topic_on(id) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) });
        on.is_break() || self.categories.iter().any(|path| self.path_holds(table, path, signal))
    }

    /// Whether a category `signal` shows lies within the person's `path`.
    fn path_holds(&self, table: &Table, path: &str, signal: &Signal) -> bool {
        let folded = table.fold_category(path);
        categories(signal).any(|c| {
            let shown = table.fold_shown(c);
            !shown.is_empty() && category_within(&shown, &folded)
        })
    }

    /// The list as one line of text, the same for the same list: for a key of anything
    /// kept per scope (an aggregate's answer), which must not outlive a change of the list,
    /// since [`crate::scope::Applied`] does not serialize it. Topic ids and the person's
    /// paths hold no line break (paths are refused with control characters), so the two
    /// parts cannot run into each other.
    pub fn canonical(&self) -> String {
        let join = |set: &BTreeSet<String>| set.iter().map(String::as_str).collect::<Vec<_>>().join("\t");
        format!("included={}\ncategories={}", join(&self.included), join(&self.categories))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const CASES: &str = include_str!("../../extension/sensitive-cases.json");

    #[test]
    fn the_shipped_list_parses() {
        let table = Table::parse(SHIPPED).unwrap();
        assert!(table.topics().len() >= 9, "{} topics", table.topics().len());
        for id in ["health", "sexual-orientation", "religion", "politics", "trade-union", "ethnic-origin", "criminal", "financial-hardship"] {
            assert!(table.topic(id).is_some(), "{id}");
        }
    }

    /// Checks one case of the shared table: what the matcher finds is what the case expects
    /// (for a known false positive or negative, the wrong answer it documents).
    fn check(table: &Table, case: &Value) {
        let expected: BTreeSet<&str> = case["topics"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        for id in &expected {
            assert!(table.topic(id).is_some(), "unknown topic {id} in {case}");
        }
        let got = match (case.get("query"), case.get("category")) {
            (Some(q), None) => table.query_topics(q.as_str().unwrap()),
            (None, Some(c)) => table.category_topics(c.as_str().unwrap()),
            _ => panic!("a case has a query or a category: {case}"),
        };
        assert_eq!(got, expected, "{case}");
        // The same case as a stored search, through the never-share list that withholds
        // every shipped topic: the quick answer agrees with the reasons.
        let mut signal = json!({"id": "x-1", "at": "2026-11-20T10:00:00Z", "kind": "search", "query": "x", "engine": "bing.com"});
        match (case.get("query"), case.get("category")) {
            (Some(q), _) => signal["query"] = q.clone(),
            (_, c) => signal["category"] = c.cloned().unwrap_or_default(),
        }
        let signal = Signal::from_stored_json(signal.to_string().as_bytes()).unwrap();
        let list = NeverShare::default();
        let withheld: BTreeSet<String> = list.withheld(&signal).topics.into_iter().collect();
        let expected_from_query: BTreeSet<String> = table.signal_topics(&signal).into_iter().collect();
        assert_eq!(withheld, expected_from_query, "{case}");
        assert_eq!(list.withholds(&signal), !withheld.is_empty(), "{case}");
    }

    #[test]
    fn ascii_folds_as_each_character_does() {
        let table = Table::shipped();
        let every: String = (0u8..128).map(char::from).collect();
        assert_eq!(table.fold(&every), table.fold_each(&every));
        for c in every.chars() {
            assert_eq!(table.fold(&c.to_string()), table.fold_each(&c.to_string()), "{c:?}");
        }
    }

    #[test]
    fn the_shared_cases_hold() {
        let table = Table::shipped();
        let cases: Vec<Value> = serde_json::from_str(CASES).unwrap();
        assert!(cases.len() > 20);
        for case in &cases {
            let keys: BTreeSet<&str> = case.as_object().unwrap().keys().map(String::as_str).collect();
            let allowed: BTreeSet<&str> = ["query", "category", "topics", "why", "known"].into();
            assert!(keys.is_subset(&allowed), "{case}");
            if let Some(known) = case.get("known") {
                assert!(["false positive", "false negative"].contains(&known.as_str().unwrap()) && case.get("why").is_some(), "{case}");
            }
            check(table, case);
        }
    }

    #[test]
    fn every_term_matches_itself() {
        let table = Table::shipped();
        let file: Value = serde_json::from_str(SHIPPED).unwrap();
        for topic in file["topics"].as_array().unwrap() {
            let id = topic["id"].as_str().unwrap();
            for term in topic["terms"].as_array().unwrap() {
                let text = term.as_str().unwrap().trim_end_matches('*');
                assert!(table.query_topics(&format!("about {text} today")).contains(id), "{term}");
                assert!(table.query_topics(&text.to_uppercase()).contains(id), "{term} in capitals");
            }
            for path in topic["categories"].as_array().unwrap() {
                assert!(table.category_topics(path.as_str().unwrap()).contains(id), "{path}");
            }
        }
    }

    #[test]
    fn signals_match_by_query_and_by_every_category() {
        let table = Table::shipped();
        let read = |v: Value| {
            let mut v = v;
            v["id"] = "x-1".into();
            v["at"] = "2026-11-20T10:00:00Z".into();
            Signal::from_stored_json(v.to_string().as_bytes()).unwrap()
        };
        let search = read(json!({"kind": "search", "query": "payday loan", "engine": "bing.com", "category": "Health & Beauty > Health Care"}));
        assert_eq!(table.signal_topics(&search), ["financial-hardship", "health"]);
        let item = |c: &str| json!({"name": "n", "price": "1", "quantity": 1, "category": c});
        let cart = read(json!({"kind": "cart", "merchant": "shop.example", "currency": "EUR", "items": [item("Toys"), item("Mature > Erotic")]}));
        assert_eq!(table.signal_topics(&cart), ["sexual-orientation"]);
        // A product name is not a query: only categories say what a cart is about.
        let named = read(json!({"kind": "cart", "merchant": "shop.example", "currency": "EUR", "items": [{"name": "hiv test", "price": "1", "quantity": 1}]}));
        assert!(table.signal_topics(&named).is_empty());
    }

    #[test]
    fn the_persons_list_decides() {
        let read = |query: &str, category: Option<&str>, marked: &[&str]| {
            let mut v = json!({"id": "x-1", "at": "2026-11-20T10:00:00Z", "kind": "search", "query": query, "engine": "bing.com"});
            if let Some(c) = category {
                v["category"] = c.into();
            }
            if !marked.is_empty() {
                v["sensitive"] = json!(marked);
            }
            Signal::from_stored_json(v.to_string().as_bytes()).unwrap()
        };
        let none = NeverShare::default();
        let health_off = NeverShare { included: ["health".to_owned()].into(), ..NeverShare::default() };
        let toys = NeverShare { categories: ["Toys > Dolls".to_owned()].into(), ..NeverShare::default() };
        let cases: Vec<(&str, &NeverShare, Signal, bool)> = vec![
            ("a matching search is withheld by default", &none, read("hiv test", None, &[]), true),
            ("an ordinary search is not", &none, read("running shoes", None, &[]), false),
            ("including the topic lets it out", &health_off, read("hiv test", None, &[]), false),
            ("every topic matched must be included", &health_off, read("hiv test payday loan", None, &[]), true),
            ("a stored mark counts though the list no longer matches", &none, read("running shoes", None, &["health"]), true),
            ("a stored mark of an included topic does not", &health_off, read("running shoes", None, &["health"]), false),
            ("the person's own path withholds a category within it", &toys, read("gift", Some("Toys > Dolls > Houses"), &[]), true),
            ("their path compares folded", &toys, read("gift", Some("toys>dolls"), &[]), true),
            ("but not a category beside it", &toys, read("gift", Some("Toys > Dollshouses"), &[]), false),
            ("nor one above it", &toys, read("gift", Some("Toys"), &[]), false),
        ];
        for (name, list, signal, withheld) in cases {
            assert_eq!(list.withholds(&signal), withheld, "{name}");
            // The quick answer and the reasons say the same.
            assert_eq!(list.withheld(&signal).is_empty(), !withheld, "{name}");
        }
    }

    #[test]
    fn the_canonical_text_tells_lists_apart() {
        let list = |included: &[&str], categories: &[&str]| NeverShare {
            included: included.iter().map(|s| (*s).to_owned()).collect(),
            categories: categories.iter().map(|s| (*s).to_owned()).collect(),
        };
        let lists = [list(&[], &[]), list(&["health"], &[]), list(&[], &["health"]), list(&["health", "religion"], &[]), list(&["health"], &["A > B"])];
        let texts: BTreeSet<String> = lists.iter().map(NeverShare::canonical).collect();
        assert_eq!(texts.len(), lists.len(), "{texts:?}");
        assert_eq!(list(&["religion", "health"], &[]).canonical(), list(&["health", "religion"], &[]).canonical());
    }

    #[test]
    fn entries_are_topics_or_categories() {
        let table = Table::shipped();
        let cases: Vec<(&str, Result<Entry, &str>)> = vec![
            ("health", Ok(Entry::Topic("health".into()))),
            ("  health ", Ok(Entry::Topic("health".into()))),
            ("Some > Category", Ok(Entry::Category("Some > Category".into()))),
            ("Some>  Category ", Ok(Entry::Category("Some > Category".into()))),
            ("Toys", Ok(Entry::Category("Toys".into()))),
        ];
        for (text, expected) in cases {
            assert_eq!(Entry::parse(text, table).map_err(|e| e.to_string()).map_err(|_| "refused"), expected, "{text:?}");
        }
    }

    #[test]
    fn rejects_bad_entries() {
        let table = Table::shipped();
        for (text, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("healthy", "unknown topic `healthy`"),
            ("toys", "unknown topic `toys`"),
            ("Some > ", "every part between"),
            ("> Some", "every part between"),
            ("A >> B", "every part between"),
            ("Some\u{7}Thing", "control or invisible"),
            ("Some > Thing\n", "control or invisible"),
            ("Heal\u{200b}th", "control or invisible"),
            ("Some \u{202e}Thing", "control or invisible"),
            // Parts the matcher folds away: listed, they would withhold nothing.
            ("Toys > \u{FE0F}", "name something visible"),
            ("Toys > \u{301}", "name something visible"),
        ] {
            match Entry::parse(text, table) {
                Err(e) => assert!(e.to_string().contains(says), "{text:?}: {e}"),
                Ok(entry) => panic!("{text:?} taken as {entry:?}"),
            }
        }
        let long = format!("A > {}", "b".repeat(300));
        assert!(matches!(Entry::parse(&long, table), Err(EntryError::Category { .. })));
    }

    #[test]
    fn rejects_malformed_lists() {
        for (json, says) in [
            (r#"{"version":2,"sources":[],"fold":{},"topics":[]}"#, "version"),
            (r#"{"version":1,"sources":[],"fold":{"a":"à","b":"à"},"topics":[]}"#, "folded twice"),
            (r#"{"version":1,"sources":[],"fold":{},"topics":[{"id":"Health","label":"x","categories":[],"terms":[]}]}"#, "malformed"),
            (
                r#"{"version":1,"sources":[],"fold":{},"topics":[{"id":"a","label":"x","categories":[],"terms":[]},{"id":"a","label":"y","categories":[],"terms":[]}]}"#,
                "twice",
            ),
            (r#"{"version":1,"sources":[],"fold":{},"topics":[{"id":"a","label":"x","categories":[],"terms":["--"]}]}"#, "no word"),
            (r#"{"version":1,"sources":[],"fold":{},"topics":[{"id":"a","label":"x","categories":["A > "],"terms":[]}]}"#, "empty category"),
            (r#"{"version":1,"sources":[],"fold":{},"topics":[],"extra":1}"#, "unknown field"),
        ] {
            match Table::parse(json) {
                Err(e) => assert!(e.to_string().contains(says), "{json}: {e}"),
                Ok(_) => panic!("{json} was read"),
            }
        }
    }
}
