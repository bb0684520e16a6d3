// End to end with Firefox ESR: the Firefox build of the extension in headless
// firefox-esr (started by web-ext), the native host installed by the real
// `optin browser install --browser firefox`, and assertions on what the
// running agent stored (`optin signals --json`). Skipped, with the reason,
// without OPTIN_BIN, firefox-esr or web-ext.
//
// Firefox sends every http request to the local sites server as its proxy, so
// www.google.com and shop.example reach it under their real names. web-ext
// opens the start page before it installs the add-on, so the start page is a
// small driver that waits until the add-on is installed and its background
// script has started the native host, then opens the pages in new tabs and
// clicks on the shop page (same origin as the driver).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { buildFirefox, GECKO_ID } from '../build-firefox.mjs';
import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const FIREFOX = process.env.FIREFOX_BIN ?? '/usr/bin/firefox-esr';
const WEB_EXT = join(here, 'node_modules', 'web-ext', 'bin', 'web-ext.js');

function skipReason() {
  if (!process.env.OPTIN_BIN) return 'OPTIN_BIN is not set: build optin (cargo build) and run with OPTIN_BIN=target/debug/optin';
  if (!existsSync(process.env.OPTIN_BIN)) return `OPTIN_BIN=${process.env.OPTIN_BIN} does not exist`;
  if (!existsSync(FIREFOX)) return `no Firefox at ${FIREFOX} (apt-get install firefox-esr, or set FIREFOX_BIN)`;
  if (!existsSync(WEB_EXT)) return 'web-ext is not installed (npm ci --prefix extension/test)';
  return null;
}

const skip = skipReason();

// The start page: waits until the test says the add-on is running, then
// opens each step's page in a new tab; same-origin steps can click.
function driverPage(steps) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>driver</title></head><body><pre id="log"></pre><script>
const steps = ${JSON.stringify(steps)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => { document.getElementById('log').textContent += s + '\\n'; fetch('/__driver/log?' + encodeURIComponent(s)).catch(() => {}); };
(async () => {
  while ((await fetch('/__driver/ready', { cache: 'no-store' })).status !== 200) await sleep(100);
  for (const step of steps) {
    const w = window.open(step.url, '_blank');
    if (!w) { log('window.open was blocked'); return; }
    if (step.click) {
      const path = new URL(step.url).pathname;
      for (;;) {
        await sleep(50);
        let d = null;
        try { d = w.location.pathname === path && w.document.readyState === 'complete' ? w.document : null; } catch (e) {}
        if (d) { d.querySelector(step.click).click(); break; }
      }
    }
    log('done ' + step.url);
    await sleep(300);
  }
  log('all done');
})().catch((e) => log('failed: ' + e));
</script></body></html>`;
}

// Every process started with HOME=home (web-ext, Firefox and its helpers, the
// native host), as [pid, command line]. Firefox's crash helper leaves the
// process group, so the group alone does not find everything.
function processesWithHome(home) {
  const mark = `HOME=${home}`;
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (!readFileSync(`/proc/${name}/environ`, 'latin1').split('\0').includes(mark)) continue;
      out.push([Number(name), readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ')]);
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return out;
}

describe('extension end to end (Firefox ESR)', { skip: skip ?? false }, () => {
  let sites, root, home, ffHome, agent, webExt, extDir;
  let installed = false; // web-ext says the add-on is installed
  let hostStarted = false; // the background script has started the native host
  let webExtOut = '';
  const driverLog = [];
  const token = randomBytes(4).toString('hex');
  const query = `trail shoes ${token}`;
  const order = `F-${token}`;
  const steps = [
    { url: `http://www.google.com/search?q=${encodeURIComponent(query)}` },
    { url: 'http://shop.example/product/trail-runner', click: '#add' },
    { url: `http://shop.example/checkout/done?order=${order}` },
  ];

  before(async () => {
    root = h.tempDir('optin-ff-');
    home = h.makeHome(root);
    ffHome = join(root, 'firefox-home');
    mkdirSync(ffHome, { mode: 0o700 });
    extDir = buildFirefox(join(root, 'extension'));

    sites = await startSites({
      extra(req, res, host, url) {
        if (host !== 'shop.example' || !url.pathname.startsWith('/__driver')) return false;
        const send = (status, type, body) => {
          res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
          res.end(body);
        };
        if (url.pathname === '/__driver') send(200, 'text/html; charset=utf-8', driverPage(steps));
        else if (url.pathname === '/__driver/ready') send(hostStarted ? 200 : 503, 'text/plain', String(hostStarted));
        else if (url.pathname === '/__driver/log') {
          driverLog.push(decodeURIComponent(url.search.slice(1)));
          send(204, 'text/plain', '');
        } else send(404, 'text/plain', 'not found');
        return true;
      },
    });

    agent = await h.startAgent(home);

    // The real installer, with HOME pointed at Firefox's temporary home.
    await run(resolve(process.env.OPTIN_BIN), ['--home', home, 'browser', 'install', '--browser', 'firefox'], {
      env: { ...process.env, HOME: ffHome, OPTIN_HOME: home },
    });
  });

  after(async () => {
    await stopWebExt();
    await sites?.close();
    await h.stopAgent(agent);
    if (root) h.cleanup(root);
  });

  // Stops web-ext and Firefox (web-ext's process group), then checks that no
  // process of this Firefox is left; stragglers are killed and reported.
  async function stopWebExt() {
    if (!webExt) return;
    const child = webExt;
    webExt = null;
    const exited = child.exitCode !== null || child.signalCode !== null ? null : new Promise((r) => child.once('exit', r));
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      // the group is gone already
    }
    await exited;
    const gone = await h.waitFor(() => processesWithHome(ffHome).length === 0, { what: 'Firefox to exit', timeout: 10000 }).catch(() => false);
    if (gone) return;
    const left = processesWithHome(ffHome);
    for (const [pid] of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited meanwhile
      }
    }
    throw new Error(`Firefox processes were still running 10 s after SIGTERM and were killed:\n${left.map((p) => p.join(' ')).join('\n')}`);
  }

  test('the installer writes a Firefox host manifest for the add-on id', () => {
    const manifestPath = join(ffHome, '.mozilla', 'native-messaging-hosts', `${h.HOST_NAME}.json`);
    const m = JSON.parse(readFileSync(manifestPath, 'utf8'));
    assert.equal(m.name, h.HOST_NAME);
    assert.equal(m.type, 'stdio');
    assert.deepEqual(m.allowed_extensions, [GECKO_ID]);
    assert.equal(m.allowed_origins, undefined);
    assert.ok(m.path.startsWith('/'), 'an absolute host path');
    assert.ok(statSync(m.path).mode & 0o100, 'the host is executable');
  });

  test('a search, a cart and a purchase reach the agent', async (t) => {
    const started = Date.now();
    let installedAt, storedAt;
    const args = [
      WEB_EXT,
      'run',
      '--no-config-discovery',
      '--source-dir', extDir,
      '--firefox', FIREFOX,
      '--no-input',
      '--no-reload',
      '--arg=--headless',
      '--start-url', 'http://shop.example/__driver',
      // Every http request goes to the local sites server, which routes by Host.
      '--pref', 'network.proxy.type=1',
      '--pref', 'network.proxy.http=127.0.0.1',
      '--pref', `network.proxy.http_port=${sites.port}`,
      // Plain http test hosts: no https upgrades.
      '--pref', 'dom.security.https_first=false',
      '--pref', 'dom.security.https_first_schemeless=false',
      '--pref', 'dom.security.https_only_mode=false',
      // The driver opens tabs without a click.
      '--pref', 'dom.disable_open_during_load=false',
    ];
    webExt = spawn(process.execPath, args, {
      detached: true, // its own process group, with Firefox in it
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HOME: ffHome, TMPDIR: root, NO_UPDATE_NOTIFIER: '1' },
    });
    webExt.stdout.on('data', (c) => {
      webExtOut += c;
      if (/Installed .* as a temporary add-on/.test(webExtOut)) installed = true;
    });
    webExt.stderr.on('data', (c) => (webExtOut += c));
    const exited = new Promise((r) => webExt.once('exit', (code, signal) => r(`web-ext exited (${code ?? signal})`)));

    // The id the agent derives for the order (SPEC.md, "Ids").
    const purchaseId = 'p-' + createHash('sha256').update(`purchase\nshop.example\n${order}`).digest('hex').slice(0, 32);
    const complete = (signals) =>
      signals.some((s) => s.kind === 'search' && s.query === query) &&
      signals.some((s) => s.kind === 'cart' && s.merchant === 'shop.example') &&
      signals.some((s) => s.id === purchaseId);
    const hostRunning = () => processesWithHome(ffHome).some(([, cmd]) => / native-host\b/.test(cmd));
    const signalsComplete = async () => {
      const got = await h.readStoredSignals(home);
      return complete(got) && got;
    };
    const phase = (fn, what, timeout) =>
      Promise.race([
        h.waitFor(fn, { what, timeout, interval: 100 }),
        exited.then((why) => {
          throw new Error(`${why} while waiting for ${what}`);
        }),
      ]);
    let signals;
    try {
      await phase(() => installed, 'web-ext to install the add-on', 20000);
      installedAt = Date.now();
      // The background script connects to the native host when it starts.
      hostStarted = await phase(hostRunning, 'the extension to start the native host', 10000);
      signals = await phase(signalsComplete, 'the search, the cart and the purchase', 20000);
      storedAt = Date.now();
      // Nothing more arrives.
      await h.sleep(1000);
      signals = await h.readStoredSignals(home);
    } catch (e) {
      e.message += `\n--- web-ext output ---\n${webExtOut}\n--- driver page ---\n${driverLog.join('\n')}`;
      throw e;
    }
    t.diagnostic(`add-on installed after ${installedAt - started} ms, all signals stored after ${storedAt - started} ms`);

    assert.equal(signals.length, 3, JSON.stringify(signals));
    const { id, at, ...search } = signals.find((s) => s.kind === 'search');
    assert.deepEqual(search, { kind: 'search', query, engine: 'google.com', source: 'extension' });
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.match(at, /^\d{4}-\d\d-\d\dT[\d:.]+Z$/);

    const cart = signals.find((s) => s.kind === 'cart');
    assert.equal(cart.merchant, 'shop.example');
    assert.equal(cart.currency, 'EUR');
    assert.equal(cart.source, 'extension');
    // The gtag item has no category: it comes from the page's JSON-LD Product.
    assert.deepEqual(cart.items, [{ name: 'Trail Runner', sku: 'TR-1', category: 'Apparel & Accessories > Shoes', price: '59.9', quantity: 1 }]);
    assert.equal(cart.category, 'Apparel & Accessories > Shoes');
    // `state` is derived by the agent, not sent by the extension.
    assert.deepEqual(Object.keys(cart).sort(), ['at', 'category', 'currency', 'id', 'items', 'kind', 'merchant', 'source', 'state']);

    const purchase = signals.find((s) => s.kind === 'purchase');
    assert.equal(purchase.id, purchaseId, 'GA4 and JSON-LD of one order are one purchase');
    assert.equal(purchase.order_id, order);
    assert.equal(purchase.merchant, 'shop.example');
    assert.equal(purchase.currency, 'EUR');
    assert.equal(purchase.total, '74.9');
    assert.deepEqual(
      purchase.items.map((i) => `${i.sku}×${i.quantity}@${i.price}`),
      ['TR-1×1@59.9', 'WS-2×2@7.5'],
    );
    // The page reports the order twice (GA4 with categories, JSON-LD without);
    // Firefox delivers the JSON-LD one first, and the worker lets GA4 win.
    assert.equal(purchase.category, 'Apparel & Accessories > Shoes');
  });
});
