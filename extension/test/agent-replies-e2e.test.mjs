// End to end, in headless Chromium with the real `optin native-host` and a
// running agent: what the extension does with the agent's answers that only
// the agent can give. A signal the worker's checks let through but the agent
// rejects (a merchant that is a public suffix: the browser has no suffix list)
// costs only itself; signals over the agent's daily quota are counted apart and
// never sent again; and a browser without the host installed says what to do.
// Skipped, with the reason, without OPTIN_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { LIMITS_FILE } from '../lib/limits.js';
import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

const skip = h.e2eSkipReason();

// A shop served under `co.uk`: a public suffix, so the agent refuses it as a merchant.
const SUFFIX_SHOP = 'co.uk';
const SUFFIX_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>suffix shop</title></head><body><script>
window.dataLayer = window.dataLayer || [];
dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'GBP', items: [{ item_id: 'SX-1', item_name: 'Kettle', price: 20 }] } });
</script>kettle</body></html>`;

/**
 * Feeds `signals` to `optin native-host` as the browser would (a second host
 * beside the browser's, forwarding to the same running agent), in messages of
 * the host's largest size; resolves with the replies.
 */
async function feedHost(home, signals) {
  const host = spawn(resolve(process.env.OPTIN_BIN), ['native-host', `chrome-extension://${h.EXTENSION_ID}/`], {
    env: { ...process.env, OPTIN_HOME: home },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const per = LIMITS_FILE.native_messaging.signals_per_message;
  const messages = [];
  for (let i = 0; i < signals.length; i += per) messages.push({ type: 'signals', id: messages.length + 1, signals: signals.slice(i, i + per) });
  const replies = [];
  const done = new Promise((ok, fail) => {
    let buf = Buffer.alloc(0);
    host.stdout.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
        const len = buf.readUInt32LE(0);
        replies.push(JSON.parse(buf.subarray(4, 4 + len).toString('utf8')));
        buf = buf.subarray(4 + len);
        if (replies.length === messages.length) ok(replies);
      }
    });
    host.once('exit', (code) => fail(new Error(`the native host exited (${code}) after ${replies.length} replies`)));
  });
  for (const m of messages) {
    const body = Buffer.from(JSON.stringify(m), 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length); // native byte order on the machines this runs on
    host.stdin.write(Buffer.concat([len, body]));
  }
  try {
    return await done;
  } finally {
    host.stdin.end();
  }
}

describe('the agent rejects what the browser cannot check, and its quota (Chromium)', { skip: skip ?? false }, () => {
  let sites, root, home, agent, browser, page, popup;

  before(async () => {
    sites = await startSites({
      extra(req, res, host) {
        if (host !== SUFFIX_SHOP) return false;
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(SUFFIX_PAGE);
        return true;
      },
    });
    root = h.tempDir();
    home = h.makeHome(root);
    agent = await h.startAgent(home);
    const resolverRules = `${sites.resolverRules}, MAP ${SUFFIX_SHOP} 127.0.0.1:${sites.port}`;
    browser = await h.launch({ root, home, resolverRules });
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
  const outbox = async () => (await browser.worker.evaluate(() => chrome.storage.local.get('outbox'))).outbox ?? [];
  const drops = async (reason) => Number(await popup.getAttribute('[data-testid="drops"]', `data-${reason}`));
  const setDelay = async (minutes) => {
    await popup.fill('[data-testid="delay"]', String(minutes));
    await popup.locator('[data-testid="delay"]').blur();
    await h.sleep(200);
  };

  test('a batch with a signal only the agent rejects: the rest is stored, the bad one counted, nothing resent', async () => {
    const t = randomBytes(4).toString('hex');
    // Held for review, then released together: one message of three signals.
    await setDelay(5);
    await page.goto(`http://www.google.com/search?q=before+${t}`);
    await page.goto(`http://${SUFFIX_SHOP}/`);
    await popup.waitForSelector('[data-testid="pending"] li:has-text("co.uk")');
    await page.goto(`http://www.google.com/search?q=after+${t}`);
    await popup.waitForSelector(`[data-testid="pending"] li:has-text("after ${t}")`);
    assert.equal(await popup.locator('[data-testid="pending"] li[data-id]').count(), 3);
    await setDelay(0);

    const queries = await h.waitFor(async () => {
      const q = (await stored()).filter((s) => s.kind === 'search' && s.query.endsWith(t)).map((s) => s.query);
      return q.length === 2 && q.sort();
    }, { what: 'the two good searches of the batch', timeout: 10000 });
    assert.deepEqual(queries, [`after ${t}`, `before ${t}`]);
    await popup.waitForSelector('[data-testid="drops"][data-invalid="1"]');
    assert.match(await popup.textContent('[data-testid="drops"]'), /Not stored today: 1 invalid\./);
    // The agent's reason reaches the person, naming the field.
    assert.match(await popup.textContent('[data-testid="error"]'), /signals\[1\]\.merchant/);
    // Left the outbox, and is not sent again: the next tick and popup polls change nothing.
    await h.waitFor(async () => (await outbox()).length === 0, { what: 'an empty outbox', timeout: 5000 });
    await h.sleep(2500);
    assert.deepEqual(await outbox(), []);
    assert.equal(await drops('invalid'), 1);
    assert.equal(await popup.textContent('[data-testid="outbox"]'), '');
    assert.equal((await stored()).filter((s) => s.merchant === SUFFIX_SHOP).length, 0);
  });

  test("signals over the agent's daily quota are counted apart and not retried", async () => {
    const perDay = LIMITS_FILE.agent.extension_signals_per_day;
    // Every signal stored so far came from the extension today: fill the day up to one short.
    const now = new Date();
    const msToMidnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1) - now.getTime();
    if (msToMidnight < 120000) await h.sleep(msToMidnight + 1000); // the quota is per UTC day
    const room = perDay - (await stored()).length - 1;
    const at = new Date().toISOString();
    const seed = Array.from({ length: room }, (_, i) => ({ id: `seed-${i}`, kind: 'search', at, query: `seed ${i}`, engine: 'duckduckgo.com', source: 'extension' }));
    const replies = await feedHost(home, seed);
    assert.equal(replies.reduce((n, r) => n + r.stored, 0), room, JSON.stringify(replies.find((r) => !r.ok || r.rejected.length)));

    const t = randomBytes(4).toString('hex');
    for (const q of ['one', 'two', 'three']) {
      await page.goto(`http://www.google.com/search?q=${q}+${t}`);
      await h.sleep(100);
    }
    await popup.waitForSelector('[data-testid="drops"][data-quota="2"]', { timeout: 10000 });
    const kept = (await stored()).filter((s) => s.kind === 'search' && s.query.endsWith(t)).map((s) => s.query);
    assert.deepEqual(kept, [`one ${t}`], 'only the last signal the quota had room for');
    const text = await popup.textContent('[data-testid="drops"]');
    assert.match(text, /1 invalid, 2 over today's quota\./);
    // Not resent: the outbox is empty and stays so, and the counts do not grow.
    await h.waitFor(async () => (await outbox()).length === 0, { what: 'an empty outbox', timeout: 5000 });
    await h.sleep(2500);
    assert.deepEqual(await outbox(), []);
    assert.equal(await drops('quota'), 2);
    assert.equal(await drops('invalid'), 1);
  });
});

describe('a browser without the native host installed (Chromium)', { skip: skip ?? false }, () => {
  test('the popup says it is not installed and what to run', async (t) => {
    const root = h.tempDir();
    const home = h.makeHome(root);
    t.after(() => h.cleanup(root));
    const b = await h.launch({ root, home, nativeHost: false });
    t.after(() => b.context.close());
    const popup = await h.openPopup(b.context);
    const status = '[data-testid="agent-status"]';
    await popup.waitForSelector(`${status}[data-state="host missing"]`, { timeout: 10000 });
    assert.equal(await popup.textContent(status), 'not installed');
    assert.equal(await popup.textContent('[data-testid="agent-advice"]'), 'This browser cannot reach optin yet. Run optin browser install in a terminal, then reopen this window.');
    assert.equal(await popup.textContent('[data-testid="agent-advice"] code'), 'optin browser install');
  });
});
