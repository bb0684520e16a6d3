#!/usr/bin/env node
// Measures what a page firing e-commerce events in a loop adds to the store,
// with the shipped limits.json, in headless Chromium with the real native host
// and a running agent:
//
//   OPTIN_BIN=target/debug/optin node extension/test/flood.mjs [SECONDS]
//
// One tab loads a local page that, for SECONDS (default 60), pushes
// add_to_cart events and purchases with new order numbers as fast as it can.
// It prints how many events the page pushed, how many reached the worker's
// budgets, and how many signals the agent stored from that site.

import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

// `node --test extension/test/` runs every file in this folder: do nothing
// there (a run takes a minute and measures, it checks nothing).
if (process.env.NODE_TEST_CONTEXT) process.exit(0);

const seconds = Number(process.argv[2] ?? 60);
const skip = h.e2eSkipReason();
if (skip) {
  console.error(skip);
  process.exit(2);
}

const page = `<!doctype html><meta charset="utf-8"><title>flooding</title><script>
window.dataLayer = window.dataLayer || [];
let n = 0;
const end = Date.now() + ${seconds * 1000};
(function burst() {
  for (let i = 0; i < 20; i++) {
    n++;
    const items = [{ item_id: 'X-' + n, item_name: 'Item ' + n, price: 1 }];
    dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items } });
    dataLayer.push({ event: 'purchase', ecommerce: { transaction_id: 'T-' + n, currency: 'EUR', value: 1, items } });
  }
  if (Date.now() < end) setTimeout(burst, 0); else document.title = 'done ' + 2 * n;
})();
</script>`;

const sites = await startSites({
  extra(req, res, host, url) {
    if (url.pathname !== '/flood') return false;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
    return true;
  },
});
const root = h.tempDir();
const home = h.makeHome(root);
const agent = await h.startAgent(home);
const browser = await h.launch({ root, home, resolverRules: sites.resolverRules });
try {
  const tab = await browser.context.newPage();
  await tab.goto('http://shop.example/flood');
  await tab.waitForFunction(() => document.title.startsWith('done'), null, { timeout: (seconds + 60) * 1000 });
  const pushed = Number((await tab.title()).split(' ')[1]);
  await h.sleep(3000);
  const stored = (await h.readStoredSignals(home)).filter((s) => s.merchant === 'shop.example');
  const { drops, ledger } = await browser.worker.evaluate(() => chrome.storage.local.get(['drops', 'ledger']));
  const kinds = (k) => stored.filter((s) => s.kind === k).length;
  console.log(`page pushed ${pushed} events in ${seconds} s`);
  console.log(`signals admitted by the worker's budgets: ${ledger?.dayCount ?? 0}; dropped over budget: ${drops?.total?.budget ?? 0}`);
  console.log(`stored by the agent: ${stored.length} (${kinds('cart')} carts, ${kinds('purchase')} purchases)`);
  console.log('(carts still held for the open interval are sent when it closes)');
} finally {
  await browser.context.close();
  await sites.close();
  await h.stopAgent(agent);
  h.cleanup(root);
}
