// Benchmark (not a test): a shop page's dataLayer.push → the cart signal
// acknowledged by `optin native-host`, i.e. durably stored by a running
// `optin serve` (the agent fsyncs before it answers), through the real
// extension in headless Chromium.
//
//   OPTIN_BIN=target/debug/optin node extension/test/bench.mjs [EVENTS]
//
// How it measures. Every time stamp is performance.timeOrigin +
// performance.now(), taken inside the browser (in the shop page or in the
// extension's worker), so all of them are on one clock, and the bench's own
// driving of the browser (a round trip over the DevTools protocol per call)
// happens outside every timed span:
//
//   total  the page stamps t0 and calls dataLayer.push in the same task. The
//          worker dispatches an `optin-delivered` event on its global scope
//          the moment the host's `ok` for a batch arrives; a listener the
//          bench adds there stamps t1 for each signal in the batch. The bench
//          then asks the worker for that stamp with a promise that resolves
//          when it exists: nothing polls, and the wait adds nothing to t1.
//   relay  the same t0 → the worker's onMessage receiving the event
//          (page.js → relay.js → worker): the browser's messaging share.
//   host   a baseline taken after each event, when the extension is idle: the
//          worker opens a second connectNative port of its own and times a
//          one-signal batch → `ok` (worker ↔ optin native-host ↔ admin socket
//          ↔ agent, with its fsync), with no extension code or storage at all.
//
// floor = median(relay) + median(host) is what an event costs with no
// extension overhead; the ratio median(total) / floor is the number to
// compare between runs, as shared machines are noisy.
//
// Earlier versions watched the outbox from an extension page and polled it
// every 1 ms over the DevTools protocol: that also timed the outbox clean-up
// write after the ack and a storage.onChanged hop to another page, and the
// polling took CPU from the browser. Their numbers are not comparable.
//
// Each event is a view_cart of one item with its own sku (view_cart replaces
// the cart), so every signal has the same size and names its event. Events are
// spaced 60 ms apart, under the content script's 20 messages/s per tab limit.

import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

const WARMUP = 10;

// Runs in the worker: stamps acknowledgements and arriving page events.
function installProbe() {
  if (globalThis.__bench) return;
  const now = () => performance.timeOrigin + performance.now();
  const acks = new Map(); // sku → time the host's ok arrived
  const relays = new Map(); // sku → time the worker received the page event
  const waiting = new Map(); // sku → resolve
  const skuOf = (items) => (Array.isArray(items) && items[0] ? items[0].sku ?? items[0].item_id : undefined);
  self.addEventListener('optin-delivered', (e) => {
    const t = now();
    for (const s of e.detail.signals) {
      const sku = skuOf(s.items);
      if (sku === undefined) continue;
      acks.set(sku, t);
      waiting.get(sku)?.(t);
      waiting.delete(sku);
    }
  });
  chrome.runtime.onMessage.addListener((msg) => {
    const sku = msg?.type === 'ecommerce' ? skuOf(msg.ecommerce?.items) : undefined;
    if (sku !== undefined && !relays.has(sku)) relays.set(sku, now());
    return false;
  });
  let port = null;
  let nextId = 1;
  const replies = new Map();
  const ask = (msg) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => reject(new Error('the baseline host did not answer')), 10000);
      replies.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      port.postMessage({ ...msg, id });
    });
  globalThis.__bench = {
    ack(sku) {
      if (acks.has(sku)) return acks.get(sku);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no acknowledgement for ${sku} in 10 s`)), 10000);
        waiting.set(sku, (t) => {
          clearTimeout(timer);
          resolve(t);
        });
      });
    },
    relay: (sku) => relays.get(sku) ?? null,
    // One signal straight to a host of its own: worker ↔ host ↔ agent.
    async host() {
      if (!port) {
        port = chrome.runtime.connectNative('dev.optin.agent');
        port.onMessage.addListener((m) => {
          replies.get(m.id)?.(m);
          replies.delete(m.id);
        });
        await ask({ type: 'hello', version: 'bench' });
      }
      const signal = {
        id: crypto.randomUUID(),
        kind: 'cart',
        at: new Date().toISOString(),
        merchant: 'baseline.example',
        currency: 'EUR',
        items: [{ name: 'Baseline item', sku: 'BASE', price: '1', quantity: 1 }],
        source: 'extension',
      };
      const t = now();
      const reply = await ask({ type: 'signals', signals: [signal] });
      const dt = now() - t;
      if (!reply.ok) throw new Error('baseline batch refused: ' + reply.error);
      return dt;
    },
  };
}

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
  return { median: at(50), p90: at(90), p99: at(99), max: s.at(-1) };
}

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
    await b.worker.evaluate(installProbe);
    const page = await b.context.newPage();
    await page.goto('http://shop.example/product/socks');
    const total = [];
    const relay = [];
    const host = [];
    for (let i = -WARMUP; i < events; i++) {
      const sku = `B-${i + WARMUP}`;
      const t0 = await page.evaluate((sku) => {
        const t = performance.timeOrigin + performance.now();
        dataLayer.push({ event: 'view_cart', ecommerce: { currency: 'EUR', items: [{ item_id: sku, item_name: 'Bench item', price: 1, quantity: 1 }] } });
        return t;
      }, sku);
      const t1 = await b.worker.evaluate((sku) => globalThis.__bench.ack(sku), sku);
      const tr = await b.worker.evaluate((sku) => globalThis.__bench.relay(sku), sku);
      const th = await b.worker.evaluate(() => globalThis.__bench.host());
      if (i < 0) continue;
      total.push(t1 - t0);
      if (tr !== null) relay.push(tr - t0);
      host.push(th);
      await h.sleep(60);
    }
    const fmt = (x) => x.toFixed(1).padStart(6) + ' ms';
    const line = (name, xs) => {
      const s = stats(xs);
      return `${name.padEnd(7)} median ${fmt(s.median)}  p90 ${fmt(s.p90)}  p99 ${fmt(s.p99)}  max ${fmt(s.max)}`;
    };
    console.log(`page event → signal acknowledged by the native host, ${events} events (${WARMUP} more as warm-up)`);
    console.log(line('total', total));
    console.log(line('relay', relay) + '   page → worker onMessage');
    console.log(line('host', host) + '   worker → optin native-host → agent → ok, no storage');
    const floor = stats(relay).median + stats(host).median;
    console.log(`floor (median relay + median host) ${floor.toFixed(1)} ms; total / floor = ${(stats(total).median / floor).toFixed(2)}`);
  } finally {
    await b.context.close();
    await sites.close();
    await h.stopAgent(agent);
    h.cleanup(root);
  }
}

// `node --test extension/test/` runs every file in this folder: do nothing there.
if (!process.env.NODE_TEST_CONTEXT) await main();
