// Sensitive topics: which shipped topics a captured signal matches, so the popup can say
// it will not be shared. The list lives in ../sensitive-topics.json, which the agent reads
// too (optin-protocol's `sensitive` module); the rules are in SPEC.md, "Sensitive topics",
// and ../sensitive-cases.json holds the cases both matchers are tested against. The agent
// decides what is shared; this only shows it.

/** Checks the shape of a parsed sensitive-topics.json and returns the table to match with. */
export function parseTopics(json) {
  if (!json || json.version !== 1 || !Array.isArray(json.topics) || typeof json.fold !== 'object') {
    throw new Error('sensitive-topics.json: expected {"version":1,"fold":{...},"topics":[...]}');
  }
  const fold = new Map();
  for (const [to, from] of Object.entries(json.fold)) {
    for (const c of from) {
      if (fold.has(c)) throw new Error(`sensitive-topics.json: ${c} is folded twice`);
      fold.set(c, to);
    }
  }
  const table = { fold, topics: [] };
  for (const t of json.topics) {
    const ok = typeof t.id === 'string' && /^[a-z0-9]+(-[a-z0-9]+)*$/.test(t.id) && typeof t.label === 'string' &&
      Array.isArray(t.categories) && Array.isArray(t.terms);
    if (!ok) throw new Error(`sensitive-topics.json: bad topic ${JSON.stringify(t.id)}`);
    const terms = t.terms.map((term) => {
      const words = wordsOf(term.replace(/\*+$/, ''), table);
      if (words.length === 0) throw new Error(`sensitive-topics.json: term ${JSON.stringify(term)} has no word`);
      return { words, prefix: term.endsWith('*') };
    });
    table.topics.push({ id: t.id, label: t.label, categories: t.categories.map((c) => foldCategory(c, table)), terms });
  }
  return table;
}

// Characters that show nothing: Unicode's default-ignorable code points (soft hyphen,
// zero-width and joiner characters, word joiners, bidirectional marks, the byte order mark,
// variation selectors, tag characters, Hangul fillers, …), the same set as the agent's
// `is_invisible`. Combining accents (U+0300 to U+036F).
const INVISIBLE =
  /[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\u{1bca0}-\u{1bca3}\u{1d173}-\u{1d17a}\u{e0000}-\u{e0fff}]/u;
const COMBINING = /[\u0300-\u036f]/u;

/**
 * `c` as the ASCII letter or digit it is drawn as: full-width forms, mathematical
 * alphanumeric symbols (13 alphabets of A-Z a-z from U+1D400, digits from U+1D7CE) and
 * circled letters. Any other character is itself. The same ranges as the agent's `plain`.
 */
function plain(c) {
  const n = c.codePointAt(0);
  if (n >= 0xff01 && n <= 0xff5e) return String.fromCodePoint(n - 0xfee0);
  if (n >= 0x1d400 && n <= 0x1d6a3) {
    const i = (n - 0x1d400) % 52;
    return String.fromCodePoint(i < 26 ? 0x41 + i : 0x61 + i - 26);
  }
  if (n >= 0x1d7ce && n <= 0x1d7ff) return String.fromCodePoint(0x30 + ((n - 0x1d7ce) % 10));
  if (n >= 0x24b6 && n <= 0x24cf) return String.fromCodePoint(0x41 + n - 0x24b6);
  if (n >= 0x24d0 && n <= 0x24e9) return String.fromCodePoint(0x61 + n - 0x24d0);
  return c;
}

/** `text` as compared: styled letters as ASCII, lowercase, invisible characters and accents removed, letters folded. */
export function foldText(text, table) {
  let out = '';
  for (const c of text) {
    for (const l of plain(c).toLowerCase()) {
      if (INVISIBLE.test(l) || COMBINING.test(l)) continue;
      out += table.fold.get(l) ?? l;
    }
  }
  return out;
}

/** The words of `text`, folded: runs of letters and digits. */
export function wordsOf(text, table) {
  return foldText(text, table).split(/[^\p{Alphabetic}\p{N}]+/u).filter((w) => w !== '');
}

/** A category path as compared: folded, each part trimmed, joined by ` > `; '' if a part is empty. */
export function foldCategory(path, table) {
  const parts = foldText(path, table).split('>').map((s) => s.split(/\s+/u).filter((w) => w !== '').join(' '));
  return parts.some((p) => p === '') ? '' : parts.join(' > ');
}

/**
 * A category a signal shows, as compared: as foldCategory, but a part left empty (a stray `>`,
 * a part of spaces or invisible characters) is dropped rather than emptying the whole path;
 * '' when no part is left. The same rule as the agent's `fold_shown`.
 */
export function foldShown(path, table) {
  return foldText(path, table).split('>').map((s) => s.split(/\s+/u).filter((w) => w !== '').join(' ')).filter((p) => p !== '').join(' > ');
}

function within(inner, outer) {
  return inner === outer || (inner.startsWith(outer) && inner.slice(outer.length).startsWith(' > '));
}

/** The ids of the topics whose terms `query` holds as whole words, sorted. */
export function queryTopics(query, table) {
  const words = wordsOf(query, table);
  const found = new Set();
  for (const topic of table.topics) {
    for (const { words: term, prefix } of topic.terms) {
      for (let at = 0; at + term.length <= words.length; at++) {
        const hit = term.every((w, i) => (prefix && i === term.length - 1 ? words[at + i].startsWith(w) : words[at + i] === w));
        if (hit) {
          found.add(topic.id);
          break;
        }
      }
    }
  }
  return [...found].sort();
}

/** The ids of the topics one of whose paths `category` lies within, sorted. */
export function categoryTopics(category, table) {
  const folded = foldShown(category, table);
  if (folded === '') return [];
  return table.topics.filter((t) => t.categories.some((p) => within(folded, p))).map((t) => t.id).sort();
}

/** The topics a captured signal matches: its query, its category and its items' categories. */
export function signalTopics(signal, table) {
  if (!table) return [];
  const found = new Set();
  const categories = [signal.category, ...(signal.items ?? []).map((i) => i.category)].filter((c) => typeof c === 'string');
  for (const c of categories) for (const id of categoryTopics(c, table)) found.add(id);
  if (signal.kind === 'search' && typeof signal.query === 'string') for (const id of queryTopics(signal.query, table)) found.add(id);
  return [...found].sort();
}
