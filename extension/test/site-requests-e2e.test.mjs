// End to end, "does this site ask?": real headless Chromium with the unpacked
// extension, a marketer's real HTTPS site on 127.0.0.1 under made-up names
// with a test CA, consent requests signed with Ed25519, the real
// `optin native-host` (told how to reach the site by OPTIN_CA_FILE and
// OPTIN_RESOLVE) and a running agent. The person clicks the popup's button on
// the site's page, narrows and approves one request, denies another; hostile
// sites are refused with a message in the popup and nothing stored; and
// neither a page nor a content script can make the extension fetch.
// Skipped, with the reason, without OPTIN_BIN.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as h from './support/harness.mjs';
import { makeCertificates, marketerKey, requestDoc, startMarketerSites } from './support/marketer-sites.mjs';

// The test CA is made with the openssl CLI.
function opensslMissing() {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'no openssl command to make the test CA (apt-get install openssl)';
  }
}

const skip = h.e2eSkipReason() ?? opensslMissing();

// shop.test asks well; the others are hostile, each in one way.
const NAMES = ['shop.test', 'badsig.test', 'other.test', 'escape.test', 'big.test', 'quiet.test', 'malformed.test'];

describe('does this site ask? (Chromium)', { skip: skip ?? false }, () => {
  let root, home, agent, sites, browser, page, popup;

  before(async () => {
    root = h.tempDir();
    home = h.makeHome(root);
    const certs = makeCertificates(root, NAMES);
    const key = marketerKey();
    const doc = (...requests) => JSON.stringify({ requests });
    const good = requestDoc('shop.test');
    // The signature of another payload: the bytes shown are not what was signed.
    const [head, , signature] = key.sign(requestDoc('badsig.test')).split('.');
    const forged = `${head}.${Buffer.from(JSON.stringify(requestDoc('badsig.test', { offer: '100% off' }))).toString('base64url')}.${signature}`;
    sites = await startMarketerSites({
      key: certs.key,
      cert: certs.cert,
      documents: {
        'shop.test': doc(key.sign(good), key.sign(requestDoc('shop.test', { id: 'offers-2', terms: { kinds: ['search', 'purchase'], granularity: 'raw', window: '14d', duration: '30d' } }))),
        'badsig.test': doc(forged),
        // Signed well, but by a marketer naming another domain than the one it is served from.
        'other.test': doc(key.sign(requestDoc('shop.test', { id: 'elsewhere-1' }))),
        // Signed well, with a terminal escape and a bidi override in its text.
        'escape.test': doc(key.sign(requestDoc('escape.test', { purpose: { code: 'dpv:Marketing', text: 'Deals \u001b]0;pwned\u0007 for \u202Eyou' } }))),
        // Not a document of requests at all.
        'malformed.test': '{"requests": "please approve everything"}',
        // Over the 1 MiB a document may be.
        'big.test': JSON.stringify({ requests: [key.sign(requestDoc('big.test'))], padding: 'x'.repeat(1100 * 1024) }),
      },
    });
    // One search of today: what a raw request would share now (a category one never shares today).
    const signals = join(root, 'signals.ndjson');
    writeFileSync(signals, JSON.stringify({ id: 's-today', kind: 'search', at: new Date().toISOString(), source: 'extension', query: 'trail shoes', engine: 'duckduckgo.com' }) + '\n');
    await h.optin(home, ['ingest', signals]);
    agent = await h.startAgent(home);
    browser = await h.launch({
      root,
      home,
      resolverRules: NAMES.map((n) => `MAP ${n} 127.0.0.1`).join(','),
      ignoreCertificateErrors: true,
      hostEnv: {
        OPTIN_CA_FILE: certs.caFile,
        OPTIN_RESOLVE: NAMES.map((n) => `${n}:${sites.port}:127.0.0.1`).join(','),
      },
    });
    page = await browser.context.newPage();
    popup = await h.openPopup(browser.context);
  });

  after(async () => {
    await browser?.context.close();
    await sites?.close();
    await h.stopAgent(agent);
    if (root) h.cleanup(root);
  });

  const requests = async () => JSON.parse(await h.optin(home, ['requests', '--json']));
  const url = (name, path = '/') => `https://${name}:${sites.port}${path}`;

  /** Opens `name`'s page, brings it to the front and clicks "Does this site ask?". */
  async function askOn(name) {
    await page.goto(url(name));
    await page.bringToFront();
    await popup.evaluate(() => delete document.body.dataset.siteAsked);
    await popup.click('[data-testid="site-ask"]');
    await popup.waitForSelector('body[data-site-asked]', { timeout: 45000 });
  }

  const text = (testid) => popup.locator(`[data-testid="${testid}"]`).innerText();

  test('hostile sites are refused with a message in the popup, and nothing is stored', async () => {
    const cases = [
      ['badsig.test', 'site-refused', /request 1 of 1 from badsig\.test: the request is refused, nothing was stored: .*signature/],
      ['other.test', 'site-refused', /names marketer `shop\.test` but was fetched from `other\.test`/],
      ['escape.test', 'site-refused', /request 1 of 1 from escape\.test: the request is refused, nothing was stored: field `purpose\.text`: contains control, bidirectional or invisible characters/],
      ['big.test', 'site-error', /cannot fetch the consent requests of big\.test: .* is larger than 1048576 bytes.*; nothing was stored/],
      ['quiet.test', 'site-error', /it publishes no consent requests \(.* answered 404\)/],
      ['malformed.test', 'site-error', /^https:\/\/malformed\.test:\d+\/\.well-known\/optin-request\.json is not a document of consent requests \(.*\); nothing was stored$/],
    ];
    for (const [name, where, message] of cases) {
      await askOn(name);
      const shown = await text(where);
      assert.match(shown, message, name);
      assert.equal(await popup.locator('[data-testid="site-request"]').count(), 0, `${name}: no request shown`);
      // Whatever the site sent, no live control or bidi character reaches the page.
      assert.doesNotMatch(await popup.locator('body').innerText(), /[\u0000-\u0008\u000b-\u001f\u007f\u202a-\u202e\u2066-\u2069]/u, name);
      assert.deepEqual(await requests(), [], `${name}: nothing stored`);
    }
    assert.ok(sites.hits.includes('big.test') && sites.hits.includes('escape.test'), 'each was fetched');
  });

  test("the site's requests are shown in plain words, and one is narrowed and approved", async () => {
    await askOn('shop.test');
    const cards = popup.locator('[data-testid="site-request"]');
    assert.equal(await cards.count(), 2);
    const card = popup.locator('[data-testid="site-request"][data-name="shop.test/offers-1"]');
    const line = (l) => card.locator(`dd[data-line="${l}"]`).innerText();
    assert.equal(await line('who asks'), 'The Shop (shop.test)');
    assert.equal(await line('domain'), 'checked: fetched from https://shop.test');
    assert.equal(await line('contact'), 'privacy@shop.test; privacy policy https://shop.test/privacy');
    assert.equal(await line('purpose'), 'Show you offers that fit what you look for. [dpv:PersonalisedAdvertising]');
    assert.equal(await line('asks for'), 'searches and shopping carts, kind, category and day only, from the last 30 days, for 90 days');
    assert.equal(await line('offer'), '10% off your next order');
    assert.equal(await line('delivery'), 'pull: the marketer fetches slices with the bundle you hand over');
    assert.equal(await line('state'), 'pending');
    assert.equal(await line('would share now'), 'nothing yet: you have no signals these terms cover');
    const other = popup.locator('[data-testid="site-request"][data-name="shop.test/offers-2"]');
    assert.equal(await other.locator('dd[data-line="asks for"]').innerText(), 'searches and purchases, each one as it is, from the last 2 weeks, for 30 days');
    assert.equal(await other.locator('dd[data-line="would share now"]').innerText(), '1 search (1 item)');

    // Narrow: carts only, the last 7 days, for 30 days.
    await card.locator('[data-testid="narrow"]').click();
    await card.locator('[data-testid="narrow-kind"][data-kind="search"]').uncheck();
    // Wider than asked is refused in the popup already.
    await card.locator('[data-testid="narrow-window"]').fill('60d');
    await card.locator('[data-testid="approve-narrowed"]').click();
    assert.equal(await card.locator('[data-testid="request-outcome"]').innerText(), 'window: at most 30 days, as the request asks');
    await card.locator('[data-testid="narrow-window"]').fill('7d');
    await card.locator('[data-testid="narrow-duration"]').fill('30d');
    await card.locator('[data-testid="approve-narrowed"]').click();
    await h.waitFor(async () => (await card.getAttribute('data-state')) === 'approved', { what: 'the approval', timeout: 10000 });
    assert.match(await card.locator('[data-testid="request-outcome"]').innerText(), /^Approved: shop\.test may have shopping carts, category, from the last 1 week, until .*Hand them the bundle: optin bundle g_[0-9a-f]{24}\.$/);

    const grants = await h.listGrants(home);
    assert.equal(grants.length, 1);
    const g = grants[0];
    assert.equal(g.marketer, 'shop.test');
    // The agent writes a span in its largest whole unit: 7d is 1w.
    assert.deepEqual([g.terms.kinds, g.terms.granularity, g.terms.window], [['cart'], 'category', '1w']);
    // 30 days from now, rounded up to a UTC midnight.
    const days = (Date.parse(g.terms.expires_at) - Date.now()) / 86400000;
    assert.ok(days > 29.9 && days <= 31, `expires in ${days} days`);
    const stored = await requests();
    const state = Object.fromEntries(stored.map((r) => [r.request.id, r.state]));
    assert.deepEqual(state, { 'offers-1': 'approved', 'offers-2': 'pending' });
    assert.ok(stored.every((r) => r.fetched_from === 'shop.test'));
  });

  test("the agent refuses a wider choice, and the popup shows its message; then deny", async () => {
    // Sent as the popup would, past its own check: the agent is the one that decides.
    const reply = await popup.evaluate(() => chrome.runtime.sendMessage({ type: 'popup:approve', name: 'shop.test/offers-2', choices: { window: '400d' } }));
    assert.equal(reply.ok, false);
    assert.match(reply.error, /window/);
    assert.deepEqual((await h.listGrants(home)).length, 1, 'no grant made');

    const card = popup.locator('[data-testid="site-request"][data-name="shop.test/offers-2"]');
    await card.locator('[data-testid="deny"]').click();
    await h.waitFor(async () => (await card.getAttribute('data-state')) === 'denied', { what: 'the denial', timeout: 10000 });
    assert.equal(await card.locator('[data-testid="request-outcome"]').innerText(), 'Denied: no grant was made.');
    const state = Object.fromEntries((await requests()).map((r) => [r.request.id, r.state]));
    assert.deepEqual(state, { 'offers-1': 'approved', 'offers-2': 'denied' });
    assert.equal((await h.listGrants(home)).length, 1);
  });

  test('neither a page nor a content script can make the extension fetch', async () => {
    await page.goto(url('shop.test', '/page'));
    const before = sites.hits.length;
    // A page has no way to the extension at all.
    assert.equal(await page.evaluate(() => typeof globalThis.chrome?.runtime?.sendMessage), 'undefined');
    // The extension's content script (its isolated world on this page) asks as the popup would.
    const cdp = await browser.context.newCDPSession(page);
    const worlds = [];
    cdp.on('Runtime.executionContextCreated', (e) => worlds.push(e.context));
    await cdp.send('Runtime.enable');
    const world = await h.waitFor(() => worlds.find((c) => c.auxData?.type === 'isolated' && c.origin === `chrome-extension://${h.EXTENSION_ID}`), { what: "the content script's world", timeout: 5000 });
    const asked = await cdp.send('Runtime.evaluate', {
      contextId: world.id,
      awaitPromise: true,
      returnByValue: true,
      expression: `Promise.all([
        chrome.runtime.sendMessage({ type: 'popup:site-requests' }).then((r) => r ?? 'no answer', (e) => 'refused: ' + e.message),
        chrome.runtime.sendMessage({ type: 'popup:approve', name: 'shop.test/offers-1', choices: {} }).then((r) => r ?? 'no answer', (e) => 'refused: ' + e.message),
      ])`,
    });
    const answers = asked.result.value;
    assert.ok(Array.isArray(answers) && answers.every((a) => a?.ok !== true), JSON.stringify(asked));
    await h.sleep(500);
    assert.equal(sites.hits.length, before, 'nothing was fetched');
    await cdp.detach();
  });
});
