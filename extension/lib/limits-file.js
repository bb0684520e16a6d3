// limits.json as a JavaScript module, for lib/limits.js. The worker cannot
// import limits.json as a JSON module: Chromium starts a module service worker
// whose imports include a JSON module right after it is installed, but after a
// browser restart that worker never runs again (no listener fires, the native
// host is never started), so the extension would stop working at the first
// restart. limits.json stays the file the agent reads; test/limits.test.mjs
// holds this copy equal to it, number for number.

export default {
  "version": 1,
  "signal": {
    "line_bytes": 65536,
    "id_chars": 128,
    "query_chars": 512,
    "category_chars": 256,
    "name_chars": 256,
    "sku_chars": 64,
    "order_id_chars": 128,
    "source_chars": 32,
    "merchant_chars": 253,
    "items": 200,
    "quantity": 10000
  },
  "native_messaging": {
    "message_bytes": 8388608,
    "signals_per_message": 100
  },
  "extension": {
    "signals_per_site_per_hour": 120,
    "signals_per_day": 1000,
    "cart_snapshot_seconds": 30
  },
  "agent": {
    "extension_signals_per_day": 2000
  }
};
