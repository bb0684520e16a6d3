// The agent's rules for one signal, checked in the worker before a signal is
// queued: the one place in the extension that mirrors protocol/src/signal.rs
// (`parse_value`) and agent/src/merchant.rs. A signal the agent would refuse is
// dropped here, where it costs only itself, instead of reaching the host.
//
// The builders in signals.js already normalise page data; this is the second,
// independent line: it never repairs, it only says what is wrong, naming the
// JSON path as the agent does (`items[2].price`). The one rule it cannot check
// is the agent's public-suffix test of merchants (that needs the public suffix
// list); such a signal is refused by the agent alone, which names it, and the
// worker drops just that signal (lib/host-link.js).

import { LIMITS } from './signals.js';

const ID_RE = /^[A-Za-z0-9._:-]+$/;
const DECIMAL_RE = /^\d{1,12}(\.\d{1,4})?$/;
const CURRENCY_RE = /^[A-Z]{3}$/;
// RFC 3339 as the agent's parser takes it; Date.parse then rejects impossible dates.
const AT_RE = /^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$/;
// What the agent refuses in any string: `is_control_or_bidi` in protocol/src/lib.rs.
const CONTROL_OR_BIDI_RE = /[\p{Cc}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/u;
const encoder = new TextEncoder();

const COMMON = ['id', 'kind', 'at', 'source', 'category'];
const FIELDS = {
  search: ['query', 'engine'],
  cart: ['merchant', 'currency', 'items'],
  purchase: ['merchant', 'currency', 'total', 'order_id', 'items'],
};
const ITEM_FIELDS = ['name', 'sku', 'category', 'price', 'quantity'];

class Invalid extends Error {
  constructor(path, reason) {
    super(path ? `${path}: ${reason}` : reason);
    this.path = path;
  }
}

function text(obj, path, name, max, required) {
  const v = obj[name];
  const at = path + name;
  if (v === undefined || v === null) {
    if (required) throw new Invalid(at, 'is required');
    return null;
  }
  if (typeof v !== 'string') throw new Invalid(at, 'must be a string');
  // JSON.stringify escapes a lone surrogate, which the host cannot decode.
  if (!v.isWellFormed()) throw new Invalid(at, 'holds a lone surrogate');
  const s = v.trim();
  if (!s) throw new Invalid(at, 'must not be empty');
  if (s.length > max && Array.from(s).length > max) throw new Invalid(at, `longer than ${max} characters`);
  if (CONTROL_OR_BIDI_RE.test(s)) throw new Invalid(at, 'contains control or bidirectional formatting characters');
  return s;
}

function only(obj, path, known) {
  for (const k of Object.keys(obj)) if (!known.includes(k)) throw new Invalid(path + k, 'unknown field');
}

/**
 * Host-name syntax as `plain_domain` checks it: dot-separated labels of 1–63
 * letters, digits and hyphens (not at either end), at least two labels, at
 * most 253 characters.
 */
export function isDomainSyntax(name) {
  if (typeof name !== 'string') return false;
  const host = name.replace(/\.+$/, '').toLowerCase();
  if (host.length > LIMITS.merchant || !host.includes('.')) return false;
  return host.split('.').every((l) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(l));
}

function domain(obj, name) {
  const s = text(obj, '', name, LIMITS.merchant, true);
  if (!isDomainSyntax(s)) throw new Invalid(name, 'not a domain name');
}

function decimal(obj, path, name) {
  if (typeof obj[name] === 'number') throw new Invalid(path + name, 'must be a decimal string like "89.90", not a number');
  const s = text(obj, path, name, 20, true);
  if (!DECIMAL_RE.test(s)) throw new Invalid(path + name, 'not a decimal amount like "89.90"');
}

function items(obj, allowEmpty) {
  const list = obj.items;
  if (list === undefined || list === null) {
    if (allowEmpty) return;
    throw new Invalid('items', 'is required');
  }
  if (!Array.isArray(list)) throw new Invalid('items', 'must be a list');
  if (list.length > LIMITS.items) throw new Invalid('items', `more than ${LIMITS.items} items`);
  if (!list.length && !allowEmpty) throw new Invalid('items', 'must not be empty');
  list.forEach((item, i) => {
    const path = `items[${i}].`;
    if (!item || typeof item !== 'object' || Array.isArray(item)) throw new Invalid(`items[${i}]`, 'must be an object');
    only(item, path, ITEM_FIELDS);
    const q = item.quantity;
    if (q !== undefined && !(Number.isSafeInteger(q) && q >= 1 && q <= LIMITS.maxQuantity)) {
      throw new Invalid(path + 'quantity', `must be a whole number from 1 to ${LIMITS.maxQuantity}`);
    }
    text(item, path, 'name', LIMITS.name, true);
    text(item, path, 'sku', LIMITS.sku, false);
    text(item, path, 'category', LIMITS.category, false);
    decimal(item, path, 'price');
  });
}

/**
 * Why the agent would refuse `signal` as it goes on the wire, or null when it
 * would accept it. The reason names the JSON path, like the agent's.
 */
export function signalProblem(signal) {
  try {
    check(signal);
    return null;
  } catch (e) {
    if (e instanceof Invalid) return e.message;
    throw e;
  }
}

function check(signal) {
  if (!signal || typeof signal !== 'object' || Array.isArray(signal)) throw new Invalid('', 'a signal must be a JSON object');
  const kind = text(signal, '', 'kind', 16, true);
  if (!(kind in FIELDS)) throw new Invalid('kind', 'expected search, cart or purchase');
  only(signal, '', [...COMMON, ...FIELDS[kind]]);
  const id = text(signal, '', 'id', LIMITS.id, false);
  if (id !== null && !ID_RE.test(id)) throw new Invalid('id', 'use 1 to 128 characters of A-Z a-z 0-9 . _ : -');
  const at = text(signal, '', 'at', 64, true);
  if (!AT_RE.test(at) || Number.isNaN(Date.parse(at))) throw new Invalid('at', 'not an RFC 3339 timestamp');
  text(signal, '', 'source', LIMITS.source, false);
  text(signal, '', 'category', LIMITS.category, false);
  if (kind === 'search') {
    text(signal, '', 'query', LIMITS.query, true);
    domain(signal, 'engine');
  } else {
    domain(signal, 'merchant');
    const cur = text(signal, '', 'currency', 3, true);
    if (!CURRENCY_RE.test(cur)) throw new Invalid('currency', 'not a three-letter ISO 4217 code like EUR');
    if (kind === 'purchase') {
      decimal(signal, '', 'total');
      text(signal, '', 'order_id', LIMITS.orderId, false);
    }
    items(signal, kind === 'cart');
  }
  // The agent reads signals as NDJSON lines of at most this many bytes.
  const bytes = encoder.encode(JSON.stringify(signal)).length;
  if (bytes > LIMITS.lineBytes) throw new Invalid('', `signal is ${bytes} bytes of JSON, more than ${LIMITS.lineBytes}`);
}
