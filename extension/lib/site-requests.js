// "Does this site ask?": the pure parts, shared by the worker, the popup and
// the node tests. Which site is asked about (the active tab's, never a page's
// word), who may ask (the popup only), how a marketer's request reads in plain
// words with its text made inert, and which narrowing choices may be sent.
//
// A request is a stranger's text. The agent refuses one holding control,
// bidirectional or invisible characters, and the popup renders with
// textContent only; every text is made inert here all the same, as the CLI
// does on its side, so a character that slipped through could not reorder or
// hide what the person reads.

export const KIND_WORDS = { search: 'searches', cart: 'shopping carts', purchase: 'purchases' };

// The characters the agent refuses in a request's text (optin_protocol::
// is_hidden_or_control): C0 and C1 controls and DEL; bidirectional marks,
// embeddings, overrides and isolates; zero-width and invisible characters,
// line and paragraph separators.
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/gu;

/** Longest text shown from a request in one place; the agent bounds them tighter. */
export const MAX_SHOWN = 600;

/**
 * `text` made inert for display: each control, bidirectional or invisible
 * character written out as `\u{…}`, the way the agent writes it; anything
 * that is not a string shown as nothing; at most MAX_SHOWN characters.
 */
export function inert(text) {
  if (typeof text !== 'string') return '';
  const escaped = text.replace(HIDDEN, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
  const chars = Array.from(escaped);
  return chars.length > MAX_SHOWN ? chars.slice(0, MAX_SHOWN).join('') + '…' : escaped;
}

/**
 * The site the native host is asked about, from the active tab's URL: its
 * host name, with the port for an https page on another port than 443
 * (`shop.example:8443`). Null for anything but http and https. An http page's
 * port is not the https site's, so only its name is taken. Whether that is a
 * domain name the host fetches from is the host's decision.
 */
export function siteOfUrl(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.protocol === 'https:') return u.host || null;
  if (u.protocol === 'http:') return u.hostname || null;
  return null;
}

/**
 * Whether a runtime message comes from the extension's own popup page: the
 * extension itself, the popup's URL, and no web tab. Content scripts carry
 * `sender.tab` and the page's URL; a page cannot send runtime messages at all
 * without a content script. The popup opened as a tab (pinned, or by the
 * tests) carries a `sender.tab` that is itself the popup page.
 */
export function fromPopup(sender, extensionId, popupUrl) {
  if (!sender || sender.id !== extensionId) return false;
  if (typeof sender.url !== 'string' || sender.url.split(/[?#]/)[0] !== popupUrl) return false;
  if (sender.tab && (typeof sender.tab.url !== 'string' || sender.tab.url.split(/[?#]/)[0] !== popupUrl)) return false;
  return true;
}

const SPAN = /^([0-9]{1,12})([smhdw])$/;
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Seconds of a span as the agent writes it (`30d`, `12h`), or null. */
export function spanSeconds(text) {
  const m = typeof text === 'string' ? SPAN.exec(text) : null;
  if (!m) return null;
  const n = Number(m[1]) * UNIT_SECONDS[m[2]];
  return n > 0 && n <= 10 * 365 * 86400 ? n : null;
}

/** A span in words: `30d` as "30 days". */
export function spanWords(text) {
  const m = typeof text === 'string' ? SPAN.exec(text) : null;
  if (!m) return inert(text);
  const unit = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' }[m[2]];
  return `${Number(m[1])} ${unit}${m[1] === '1' ? '' : 's'}`;
}

function list(words) {
  if (words.length <= 1) return words.join('');
  return words.slice(0, -1).join(', ') + ' and ' + words[words.length - 1];
}

/** What a request's terms would share now (the agent's `would_share`), in words. */
export function wouldShareWords(would) {
  if (!would || typeof would !== 'object') return 'nothing can be shared under it now';
  if (would.result === 'paused') return 'nothing while sharing is paused';
  if (would.result !== 'items') return 'unknown';
  const items = Number(would.items) || 0;
  if (items === 0) return 'nothing yet: you have no signals these terms cover';
  const kinds = Object.entries(would.kinds ?? {})
    .filter(([, n]) => Number(n) > 0)
    .map(([k, n]) => `${Number(n)} ${Number(n) === 1 ? k : KIND_WORDS[k] ?? inert(k)}`);
  const cats = Object.keys(would.categories ?? {}).length;
  return `${list(kinds)}${cats ? ` in ${cats} categor${cats === 1 ? 'y' : 'ies'}` : ''} (${items} item${items === 1 ? '' : 's'})`;
}

/**
 * A request of the host's `site-requests` answer as lines of plain words:
 * `[label, text]` pairs, every text inert. The popup puts each in its own
 * element with textContent.
 */
export function describe(item) {
  const view = item?.view ?? {};
  const r = view.request ?? {};
  const marketer = r.marketer ?? {};
  const terms = r.terms ?? {};
  const delivery = r.delivery ?? {};
  const lines = [];
  lines.push(['who asks', `${inert(marketer.name)} (${inert(marketer.domain)})`]);
  lines.push([
    'domain',
    view.fetched_from ? `checked: fetched from https://${inert(view.fetched_from)}` : "not checked against the marketer's website",
  ]);
  if (item?.key_changed) lines.push(['warning', `${inert(marketer.domain)} signed its earlier requests with another key`]);
  lines.push(['contact', `${inert(marketer.contact)}; privacy policy ${inert(marketer.privacy_policy)}`]);
  lines.push(['purpose', `${inert(r.purpose?.text)} [${inert(r.purpose?.code)}]`]);
  const kinds = Array.isArray(terms.kinds) ? terms.kinds.map((k) => KIND_WORDS[k] ?? inert(k)) : [];
  const granularity = terms.granularity === 'raw' ? 'each one as it is' : terms.granularity === 'category' ? 'kind, category and day only' : inert(terms.granularity);
  lines.push(['asks for', `${list(kinds)}, ${granularity}, from the last ${spanWords(terms.window)}, for ${spanWords(terms.duration)}`]);
  if (Array.isArray(terms.categories)) lines.push(['categories', terms.categories.map(inert).join('; ')]);
  if (Array.isArray(terms.merchants)) lines.push(['merchants', terms.merchants.map(inert).join(', ')]);
  if (Array.isArray(terms.fields)) lines.push(['only fields', terms.fields.map(inert).join(', ')]);
  if (typeof terms.rate === 'string') lines.push(['at most', `${inert(terms.rate)} slices`]);
  lines.push(['offer', inert(r.offer)]);
  lines.push([
    'delivery',
    delivery.method === 'push'
      ? `pushed to ${inert(delivery.inbox)} every ${spanWords(delivery.every)}`
      : 'pull: the marketer fetches slices with the bundle you hand over',
  ]);
  lines.push(['expires', inert(r.expires_at)]);
  lines.push(['state', inert(view.state)]);
  lines.push(['would share now', wouldShareWords(item?.would_share)]);
  return lines;
}

/**
 * The `choices` of an `approve` message from what the person picked in the
 * popup: `kinds` (the ones kept), `window` and `expires` (spans). Each choice
 * may only narrow the request's term; a choice equal to the request's term is
 * left out. Returns `{choices}`, or `{error}` naming the choice that would
 * widen or is not a span. The agent checks all of this again.
 */
export function narrowChoices(terms, picked) {
  const choices = {};
  const asked = Array.isArray(terms?.kinds) ? terms.kinds : [];
  if (picked.kinds !== undefined) {
    const kinds = [...new Set(picked.kinds)];
    if (kinds.length === 0) return { error: 'keep at least one kind, or deny the request' };
    const extra = kinds.find((k) => !asked.includes(k));
    if (extra !== undefined) return { error: `kinds: ${inert(String(extra))} was not asked for` };
    if (kinds.length < asked.length) choices.kinds = asked.filter((k) => kinds.includes(k));
  }
  for (const [name, term, what] of [
    ['window', 'window', 'window'],
    ['expires', 'duration', 'duration'],
  ]) {
    const value = typeof picked[name] === 'string' ? picked[name].trim() : picked[name];
    if (value === undefined || value === '' || value === terms?.[term]) continue;
    const seconds = spanSeconds(value);
    if (seconds === null) return { error: `${what}: write a span like 7d or 12h` };
    const max = spanSeconds(terms?.[term]);
    if (max !== null && seconds > max) return { error: `${what}: at most ${spanWords(terms[term])}, as the request asks` };
    if (max === null || seconds < max) choices[name] = value;
  }
  return { choices };
}
