// The limits shared with the agent (../limits.json, read by the Rust side too,
// as engines.json is): what one signal may hold, what one native message may
// carry, and the browser path's budgets. Imported as a module so that the
// worker, the content-free pure modules and the node tests all read the one
// file, synchronously. The numbers come from limits-file.js, a copy of
// limits.json that a test holds equal to it (why a copy: limits-file.js).

import file from './limits-file.js';

/**
 * Checks the file's shape: every number a positive integer. A broken file is a
 * build mistake, so it throws when the worker starts, where it is seen, rather
 * than letting a missing number read as "no limit".
 */
export function parseLimits(raw) {
  const sections = {
    signal: ['line_bytes', 'id_chars', 'query_chars', 'category_chars', 'name_chars', 'sku_chars', 'order_id_chars', 'source_chars', 'merchant_chars', 'items', 'quantity'],
    native_messaging: ['message_bytes', 'signals_per_message'],
    extension: ['signals_per_site_per_hour', 'signals_per_day', 'cart_snapshot_seconds'],
    agent: ['extension_signals_per_day'],
  };
  if (!raw || raw.version !== 1) throw new Error('limits.json: version 1 expected');
  const out = {};
  for (const [section, keys] of Object.entries(sections)) {
    const s = raw[section];
    if (!s || typeof s !== 'object') throw new Error(`limits.json: no "${section}" section`);
    out[section] = {};
    for (const k of keys) {
      if (!Number.isSafeInteger(s[k]) || s[k] < 1) throw new Error(`limits.json: ${section}.${k} must be a positive integer`);
      out[section][k] = s[k];
    }
    Object.freeze(out[section]);
  }
  return Object.freeze(out);
}

export const LIMITS_FILE = parseLimits(file);

/** The `signal` section under the names the capture code uses. */
export const SIGNAL_LIMITS = Object.freeze({
  lineBytes: LIMITS_FILE.signal.line_bytes,
  id: LIMITS_FILE.signal.id_chars,
  query: LIMITS_FILE.signal.query_chars,
  name: LIMITS_FILE.signal.name_chars,
  sku: LIMITS_FILE.signal.sku_chars,
  category: LIMITS_FILE.signal.category_chars,
  orderId: LIMITS_FILE.signal.order_id_chars,
  source: LIMITS_FILE.signal.source_chars,
  merchant: LIMITS_FILE.signal.merchant_chars,
  items: LIMITS_FILE.signal.items,
  maxQuantity: LIMITS_FILE.signal.quantity,
});
