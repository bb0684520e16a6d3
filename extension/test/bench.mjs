// Benchmark (not a test): a page's dataLayer.push → the cart signal
// acknowledged by `optin native-host` (removed from the extension's outbox).
// Both ends are timed with performance.timeOrigin + performance.now(), in the
// shop page and in an extension page, on the same clock.
//
//   OPTIN_BIN=target/debug/optin node extension/test/bench.mjs [EVENTS]

import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

async function main() {
  const reason = h.e2eSkipReason();
  if (reason) {
    console.error(reason);
    process.exit(2);
  }
  const events = Number(process.argv[2] ?? 200);
  const sites = await startSites();
  const root = h.tempDir();
  const home = h.makeHome(root);
  const agent = await h.startAgent(home);
  const b = await h.launch({ root, home, resolverRules: sites.resolverRules });
  try {
    // An extension page watches the outbox: a signal id leaving it = acknowledged.
    const watcher = await b.context.newPage();
    await watcher.goto(`chrome-extension://${h.EXTENSION_ID}/popup.html`);
    await watcher.evaluate(() => {
      window.acks = [];
      chrome.storage.onChanged.addListener((changes) => {
        const c = changes.outbox;
        if (!c) return;
        const now = new Set((c.newValue ?? []).map((s) => s.id));
        for (const s of c.oldValue ?? []) if (!now.has(s.id)) window.acks.push(performance.timeOrigin + performance.now());
      });
    });
    const page = await b.context.newPage();
    await page.goto('http://shop.example/product/socks');
    const latencies = [];
    for (let i = 0; i < events; i++) {
      const seen = await watcher.evaluate(() => window.acks.length);
      const t0 = await page.evaluate((n) => {
        const t = performance.timeOrigin + performance.now();
        dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items: [{ item_id: 'B-' + n, item_name: 'Bench item ' + n, price: 1, quantity: 1 }] } });
        return t;
      }, i);
      const t1 = await h.waitFor(() => watcher.evaluate((k) => window.acks[k], seen), { interval: 1, timeout: 10000, what: `ack of event ${i}` });
      latencies.push(t1 - t0);
      await h.sleep(60); // stay under the 20 messages/s per tab limit
    }
    latencies.sort((a, b) => a - b);
    const at = (p) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)];
    const fmt = (x) => x.toFixed(1) + ' ms';
    console.log(`page event → signal acknowledged by the native host, ${events} events`);
    console.log(`median ${fmt(at(50))}  p90 ${fmt(at(90))}  p99 ${fmt(at(99))}  max ${fmt(latencies.at(-1))}`);
  } finally {
    await b.context.close();
    await sites.close();
    await h.stopAgent(agent);
    h.cleanup(root);
  }
}

// `node --test extension/test/` runs every file in this folder: do nothing there.
if (!process.env.NODE_TEST_CONTEXT) await main();
