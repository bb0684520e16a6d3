// End to end, in headless Chromium with the real `optin native-host` and a
// running agent: what a hostile or careless page can do to the browser path.
// A forged event must cost only itself, a page firing events in a loop adds a
// bounded number of signals, an event fired as the page unloads still arrives,
// and the popup follows the agent being stopped and started.
// Skipped, with the reason, without OPTIN_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

const skip = h.e2eSkipReason();

// Budgets small enough to reach within seconds (the shipped ones: limits.json).
const CART_SECONDS = 2;
const SITE_PER_HOUR = 30;
const FLOOD_MS = 6000;

const html = (body) => `<!doctype html><html><head><meta charset="utf-8"><title>t</title></head><body>${body}</body></html>`;

const PAGES = {
  // Forged events: a lone surrogate and a control character in an item name, a cart whose
  // signal would be larger than the agent reads in one line, and raw forged DOM events.
  '/forge': `<script>
window.dataLayer = window.dataLayer || [];
dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items: [{ item_id: 'F-1', item_name: 'Bad\\ud800name\\u0007', price: 1 }] } });
const wide = '\\u6f22'.repeat(256);
dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items: Array.from({ length: 60 }, (_, i) => ({ item_id: 'G-' + i, item_name: wide, item_category: wide, price: 1 })) } });
document.dispatchEvent(new CustomEvent('optin:page-event', { detail: '{not json' }));
document.dispatchEvent(new CustomEvent('optin:page-event', { detail: JSON.stringify({ __optin_v1: true, type: 'ecommerce', event: 'purchase', ecommerce: { currency: 'EU\\u0000', value: 'lots', items: [{ item_name: '\\u202e', price: -1 }] } }) }));
</script>forged`,
  // A page that fires cart events (or, with ?purchases, orders with new numbers) in a
  // loop for FLOOD_MS.
  '/flood': `<script>
window.dataLayer = window.dataLayer || [];
const orders = location.search.includes('purchases');
let n = 0;
const end = Date.now() + ${FLOOD_MS};
(function burst() {
  for (let i = 0; i < 20; i++) {
    n++;
    const items = [{ item_id: 'X-' + n, item_name: 'Item ' + n, price: 1 }];
    if (orders) dataLayer.push({ event: 'purchase', ecommerce: { transaction_id: 'T-' + n, currency: 'EUR', value: 1, items } });
    else dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items } });
  }
  if (Date.now() < end) setTimeout(burst, 0); else document.title = 'done ' + n;
})();
</script>flooding`,
  // A cart change in the click that navigates away, and one in the pagehide handler.
  '/leave': `<script>
window.dataLayer = window.dataLayer || [];
const add = (id) => dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items: [{ item_id: id, item_name: id, price: 3 }] } });
addEventListener('pagehide', () => add('L-hide'));
</script><button id="go" onclick="add('L-click'); location.href = '/'">go</button>`,
};

describe('pages cannot break or flood the browser path (Chromium)', { skip: skip ?? false }, () => {
  let sites, root, home, agent, browser, page, popup;

  before(async () => {
    sites = await startSites({
      extra(req, res, host, url) {
        const body = PAGES[url.pathname];
        if (!body || host === 'www.google.com') return false;
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(html(body));
        return true;
      },
    });
    root = h.tempDir();
    home = h.makeHome(root);
    agent = await h.startAgent(home);
    const extDir = await h.extensionCopy(root, { extension: { cart_snapshot_seconds: CART_SECONDS, signals_per_site_per_hour: SITE_PER_HOUR } });
    browser = await h.launch({ root, home, extDir, resolverRules: sites.resolverRules });
    page = await browser.context.newPage();
    popup = await h.openPopup(browser.context);
  });

  after(async () => {
    await browser?.context.close();
    await sites?.close();
    await h.stopAgent(agent);
    if (root) h.cleanup(root);
  });

  const stored = () => h.readStoredSignals(home);
  const waitStored = (pred, what, timeout = 15000) =>
    h.waitFor(async () => (await stored()).find(pred), { what, timeout });

  test('forged events cost only themselves: the normal activity after them is stored', async () => {
    await page.goto('http://shop.example/forge');
    await h.sleep(300);
    await page.goto('http://shop.example/product/trail-runner');
    await page.click('#add');
    const q = 'after forgery ' + randomBytes(4).toString('hex');
    await page.goto(`http://www.google.com/search?q=${encodeURIComponent(q)}`);
    await waitStored((s) => s.kind === 'search' && s.query === q, 'the search after the forged events');
    const cart = await waitStored((s) => s.kind === 'cart' && s.merchant === 'shop.example' && s.items.some((i) => i.sku === 'TR-1'), 'the cart after the forged events');
    // The mended forged item may be in it; nothing holds a control character or a lone surrogate.
    for (const s of await stored()) {
      const text = JSON.stringify(s);
      assert.ok(!/[\u0000-\u001f\u007f\u202e]/.test(JSON.parse(text).items?.map((i) => i.name).join('') ?? ''), text);
      assert.ok(text.isWellFormed());
    }
    assert.ok(!cart.items.some((i) => i.sku?.startsWith('G-')), 'the oversized cart was not adopted');
    // The popup counts what was dropped as invalid.
    await popup.waitForSelector('[data-testid="drops"]:not([hidden])');
    assert.ok(Number(await popup.getAttribute('[data-testid="drops"]', 'data-invalid')) >= 1);
  });

  test(`a page firing events in a loop for ${FLOOD_MS / 1000} s stores at most the documented bound`, async () => {
    const from = async (merchant) => (await stored()).filter((s) => s.merchant === merchant);
    const flood = async (url) => {
      await page.goto(url);
      await page.waitForFunction(() => document.title.startsWith('done'), null, { timeout: FLOOD_MS + 10000 });
    };
    // Cart events: one snapshot at once, then one per interval (README, "Budgets").
    await flood('http://quiet.example/flood');
    // Past the end of the last interval, so a held snapshot has been sent too.
    await h.sleep(CART_SECONDS * 1000 + 1500);
    const carts = (await from('quiet.example')).length;
    assert.ok(carts >= 2 && carts <= 1 + Math.ceil(FLOOD_MS / 1000 / CART_SECONDS) + 1, `cart snapshots: ${carts}`);
    // Orders with new numbers each time: the site's hourly budget holds.
    await flood('http://store.example/flood?purchases');
    await h.sleep(1500);
    const orders = (await from('store.example')).length;
    assert.equal(orders, SITE_PER_HOUR, 'purchases from the site: exactly its hourly budget');
    await popup.waitForSelector('[data-testid="drops"][data-budget]:not([data-budget="0"])');
  });

  test('a cart change made as the page unloads is not lost', async () => {
    await page.goto('http://shop.example/leave');
    await Promise.all([page.waitForURL('http://shop.example/'), page.click('#go')]);
    const has = (s, sku) => s.items.some((i) => i.sku === sku);
    await waitStored((s) => s.kind === 'cart' && s.merchant === 'shop.example' && has(s, 'L-click') && has(s, 'L-hide'), 'a cart with both changes');
  });

  test('the popup follows the agent being stopped and started, and says what to do', async () => {
    const status = '[data-testid="agent-status"]';
    await popup.waitForSelector(`${status}[data-state="running"]`, { timeout: 10000 });
    await h.stopAgent(agent);
    agent = null;
    await popup.waitForSelector(`${status}[data-state="stopped"]`, { timeout: 8000 });
    assert.match(await popup.textContent('[data-testid="agent-advice"]'), /Start it with optin serve/);
    agent = await h.startAgent(home);
    await popup.waitForSelector(`${status}[data-state="running"]`, { timeout: 8000 });
    assert.equal(await popup.isHidden('[data-testid="agent-advice"]'), true);
  });
});
