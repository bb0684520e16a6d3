// Signal building blocks shared by the service worker and the node tests:
// field normalisation (prices, quantities, currencies, bounded strings),
// signal constructors and word masking. No browser APIs here except the Web
// Crypto and randomUUID that both the worker and node provide.
//
// The agent rejects unknown fields and out-of-range values, so everything is
// normalised here and a value that cannot be made valid drops the item or the
// signal instead of being sent; lib/validate.js then checks each finished
// signal against the agent's rules before it is queued.

import { SIGNAL_LIMITS } from './limits.js';

/** The agent's limits on one signal, from ../limits.json (lib/limits.js). */
export const LIMITS = SIGNAL_LIMITS;

export const DECIMAL_RE = /^\d{1,12}(\.\d{1,4})?$/;

/** What a masked word is replaced with. */
export const MASKED = '[masked]';

const CURRENCY_RE = /^[A-Z]{3}$/;

/**
 * Control characters and bidirectional marks, overrides and isolates: the agent refuses a
 * signal holding one (they change how the text around them is shown), so text loses them
 * here instead of costing the signal. This is the rule the Rust history importer applies to
 * search queries too (engine-cases.json checks both agree).
 */
const UNSHOWABLE_RE = /[\p{Cc}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/gu;

/**
 * Every other format character, and line and paragraph separators: the agent accepts them,
 * but in text a page made up they only hide things (a zero-width space makes two names look
 * alike, a soft hyphen splits a word a person searches for). Zero-width joiner and non-joiner
 * stay: emoji sequences and Persian or Indic words need them.
 */
const INVISIBLE_RE = /(?![\u200C\u200D])[\p{Cf}\u2028\u2029]/gu;

function cut(s, max) {
  s = s.trim();
  if (s.length <= max) return s;
  return Array.from(s).slice(0, max).join('').trim();
}

/**
 * Makes text well formed (a lone surrogate becomes U+FFFD), drops the characters the agent
 * refuses, trims it and cuts it to at most `max` Unicode code points (never in the middle of
 * a surrogate pair). Non-strings give ''.
 */
export function clip(value, max) {
  if (typeof value !== 'string') return '';
  return cut(value.toWellFormed().replace(UNSHOWABLE_RE, ''), max);
}

/**
 * `clip` for text a page supplied (item names, skus, categories, order numbers), which also
 * loses the invisible characters (INVISIBLE_RE): page data is untrusted.
 */
export function clipPageText(value, max) {
  if (typeof value !== 'string') return '';
  return cut(value.toWellFormed().replace(UNSHOWABLE_RE, '').replace(INVISIBLE_RE, ''), max);
}

/**
 * Converts a GA4 / schema.org price (number or numeric string) to a decimal
 * string matching DECIMAL_RE, rounded to 4 decimals, with no exponent and no
 * trailing zeros. Returns null when the value is not a usable price.
 */
export function toDecimal(value) {
  let n;
  if (typeof value === 'number') {
    n = value;
  } else if (typeof value === 'string') {
    // Plain decimal text only: "19.99", " 5 ", "0.5". No thousands separators,
    // signs or exponents — a string like "1,299" is ambiguous across locales.
    const s = value.trim();
    if (!/^\d+(\.\d+)?$/.test(s) && !/^\.\d+$/.test(s)) return null;
    n = Number(s);
  } else {
    return null;
  }
  if (!Number.isFinite(n) || n < 0) return null;
  // toFixed never uses an exponent below 1e21, and the regex below caps the
  // integer part at 12 digits.
  // toFixed(4) always has a '.', so trailing zeros are all decimals.
  const s = n.toFixed(4).replace(/0+$/, '').replace(/\.$/, '');
  return DECIMAL_RE.test(s) ? s : null;
}

/** Quantity: missing → 1; fractional → rounded; < 1 or not a number → null; capped. */
export function toQuantity(value) {
  if (value === undefined || value === null || value === '') return 1;
  const n = typeof value === 'string' ? Number(value.trim()) : value;
  if (typeof n !== 'number' || !Number.isFinite(n)) return null;
  const q = Math.round(n);
  if (q < 1) return null;
  return Math.min(q, LIMITS.maxQuantity);
}

/** ISO 4217-looking code: three letters, upper-cased. Null otherwise. */
export function toCurrency(value) {
  if (typeof value !== 'string') return null;
  const c = value.trim().toUpperCase();
  return CURRENCY_RE.test(c) ? c : null;
}

/** Joins taxonomy levels with " > ", skipping empty ones. */
export function joinCategory(levels) {
  const parts = levels
    .filter((l) => typeof l === 'string' || typeof l === 'number')
    .map((l) => String(l).trim())
    .filter((l) => l !== '');
  return clipPageText(parts.join(' > '), LIMITS.category);
}

/**
 * Makes a signal item from loose fields; null when name or price is unusable.
 * The item only carries the fields the agent accepts.
 */
export function makeItem({ name, sku, category, price, quantity }) {
  const n = clipPageText(typeof name === 'number' ? String(name) : name, LIMITS.name);
  const p = toDecimal(price);
  const q = toQuantity(quantity);
  if (!n || p === null || q === null) return null;
  const item = { name: n };
  const s = clipPageText(typeof sku === 'number' ? String(sku) : sku, LIMITS.sku);
  if (s) item.sku = s;
  const c = clipPageText(category, LIMITS.category);
  if (c) item.category = c;
  item.price = p;
  item.quantity = q;
  return item;
}

/** Key under which cart lines merge: the sku when there is one, else the name. */
export function itemKey(item) {
  return item.sku ? 'sku:' + item.sku : 'name:' + item.name.toLowerCase();
}

const nowIso = (now) => new Date(now ?? Date.now()).toISOString();

export function buildSearch({ query, engine, now }) {
  const q = clip(query, LIMITS.query);
  if (!q || !engine) return null;
  return { id: crypto.randomUUID(), kind: 'search', at: nowIso(now), query: q, engine, source: 'extension' };
}

export function buildCart({ merchant, currency, items, now }) {
  const cur = toCurrency(currency);
  const list = (items ?? []).slice(0, LIMITS.items);
  if (!merchant || !cur || list.length === 0) return null;
  const signal = {
    id: crypto.randomUUID(),
    kind: 'cart',
    at: nowIso(now),
    merchant: clip(merchant, LIMITS.merchant),
    currency: cur,
    items: list,
    source: 'extension',
  };
  if (list[0].category) signal.category = list[0].category;
  return signal;
}

/** Hex SHA-256 of a UTF-8 string (Web Crypto, available in the worker and node). */
export async function sha256Hex(text) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Stable purchase id: the same order on the same site always gets the same id,
 * so reloading a confirmation page (or seeing the order both as GA4 and as
 * JSON-LD) counts it once. With an order number it is the id the agent derives
 * for a purchase given without one (SPEC.md, "Ids"), computed on the host
 * name; the agent computes it on the registrable domain, so for
 * `www.shop.example` the two differ and `wireSignal` leaves it to the agent.
 * Without an order number the page URL stands in, and this id is the one sent.
 */
export async function purchaseId(merchant, orderId, fallbackKey) {
  const basis = orderId ? 'purchase\n' + merchant + '\n' + orderId : merchant + '|url:' + fallbackKey;
  return 'p-' + (await sha256Hex(basis)).slice(0, 32);
}

/**
 * The signal as the native host gets it. A purchase with an order number goes
 * without its id: the agent then derives it from the merchant's registrable
 * domain and the order number, so one order seen on `www.shop.example` and on
 * `shop.example` is one purchase. Deriving that here would need the public
 * suffix list, which only the agent has. The extension keeps its own id for
 * the outbox and the popup; it never changes what the agent stores.
 *
 * A masked order number is no longer the order's own (two orders may mask to
 * the same text), so such a purchase keeps the id made from the real number.
 */
export function wireSignal(signal) {
  if (signal.kind !== 'purchase' || !signal.order_id || signal.order_id.includes(MASKED)) return signal;
  const sent = { ...signal };
  delete sent.id;
  return sent;
}

export async function buildPurchase({ merchant, currency, total, orderId, items, pageKey, now }) {
  const cur = toCurrency(currency);
  const list = (items ?? []).slice(0, LIMITS.items);
  if (!merchant || !cur || list.length === 0) return null;
  let t = toDecimal(total);
  if (t === null) t = sumItems(list);
  if (t === null) return null;
  const oid = clipPageText(typeof orderId === 'number' ? String(orderId) : orderId, LIMITS.orderId);
  const signal = {
    id: await purchaseId(merchant, oid, pageKey ?? ''),
    kind: 'purchase',
    at: nowIso(now),
    merchant: clip(merchant, LIMITS.merchant),
    currency: cur,
    total: t,
  };
  if (oid) signal.order_id = oid;
  signal.items = list;
  signal.source = 'extension';
  if (list[0].category) signal.category = list[0].category;
  return signal;
}

/** Sum of price × quantity in 1/10000 units, so no float drift. */
export function sumItems(items) {
  let units = 0n;
  for (const it of items) {
    const [i, f = ''] = it.price.split('.');
    units += (BigInt(i) * 10000n + BigInt((f + '0000').slice(0, 4))) * BigInt(it.quantity);
  }
  const whole = units / 10000n;
  const frac = (units % 10000n).toString().padStart(4, '0').replace(/0+$/, '');
  const s = frac ? `${whole}.${frac}` : `${whole}`;
  return DECIMAL_RE.test(s) ? s : null;
}

// Fields never masked: identifiers and machine values whose format the agent
// checks (masking digits inside a price would make the signal invalid).
const UNMASKED = new Set(['id', 'kind', 'at', 'source', 'currency', 'price', 'total', 'quantity', 'merchant', 'engine']);

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Compiles the configured masked words into one case-insensitive regex (or null). */
export function maskPattern(words) {
  const list = (words ?? [])
    .filter((w) => typeof w === 'string')
    .map((w) => w.trim())
    .filter((w) => w !== '')
    // Longest first so "john smith" wins over "john".
    .sort((a, b) => b.length - a.length)
    .map(escapeRegExp);
  return list.length ? new RegExp(list.join('|'), 'giu') : null;
}

// Site fields: a domain with "[masked]" in it would be invalid, and a person who
// masks a site's name does not want that site recorded, so the signal is dropped.
const SITE_FIELDS = ['merchant', 'engine'];

/**
 * Returns a copy of `signal` where every configured word (case-insensitive,
 * anywhere inside a string) in every text field — including item names, skus
 * and categories — is replaced by "[masked]". Bounded fields are re-clipped.
 * Returns null when a masked word appears in the merchant or engine domain.
 */
export function maskSignal(signal, words) {
  const re = maskPattern(words);
  if (!re) return signal;
  for (const f of SITE_FIELDS) {
    if (typeof signal[f] === 'string') {
      re.lastIndex = 0;
      if (re.test(signal[f])) return null;
    }
  }
  const limitFor = { query: LIMITS.query, name: LIMITS.name, sku: LIMITS.sku, category: LIMITS.category, order_id: LIMITS.orderId };
  const walk = (value, key) => {
    if (typeof value === 'string') {
      if (UNMASKED.has(key)) return value;
      const masked = value.replace(re, MASKED);
      return limitFor[key] ? clip(masked, limitFor[key]) : masked;
    }
    if (Array.isArray(value)) return value.map((v) => walk(v, key));
    if (value && typeof value === 'object') {
      const out = {};
      for (const [k, v] of Object.entries(value)) out[k] = walk(v, k);
      return out;
    }
    return value;
  };
  return walk(signal, '');
}

/** One-line description of a signal for the popup. */
export function summarize(signal) {
  switch (signal.kind) {
    case 'search':
      return `"${signal.query}" on ${signal.engine}`;
    case 'cart': {
      const n = signal.items.reduce((a, it) => a + it.quantity, 0);
      return `${n} item${n === 1 ? '' : 's'} at ${signal.merchant}`;
    }
    case 'purchase':
      return `${signal.total} ${signal.currency} at ${signal.merchant}`;
    default:
      return '';
  }
}
