// Writes docs/popup.png: the popup with real captured signals, a grant and the
// agent connection. Not a test (it does nothing when run by `node --test`).
//
//   OPTIN_BIN=target/debug/optin node extension/test/screenshot.mjs [OUT.png]

import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as h from './support/harness.mjs';
import { startSites } from './support/sites.mjs';

async function main() {
  const reason = h.e2eSkipReason();
  if (reason) {
    console.error(reason);
    process.exit(2);
  }
  const out = resolve(process.argv[2] ?? resolve(dirname(fileURLToPath(import.meta.url)), '../../docs/popup.png'));
  const sites = await startSites();
  const root = h.tempDir();
  const home = h.makeHome(root);
  const agent = await h.startAgent(home);
  const b = await h.launch({ root, home, resolverRules: sites.resolverRules });
  try {
    const page = await b.context.newPage();
    await page.goto('http://www.google.com/search?q=waterproof+trail+running+shoes');
    await page.goto('http://duckduckgo.com/?q=merino+wool+socks');
    await page.goto('http://shop.example/product/trail-runner');
    await page.click('#add');
    await page.goto('http://shop.example/product/socks');
    await page.click('#add');
    await page.goto('http://shop.example/checkout/done?order=A-1001');
    await page.goto('http://store.example/thanks?order=S-77');
    await h.waitFor(async () => (await h.readStoredSignals(home)).length >= 6, { what: 'six stored signals' });
    await h.createGrant(home, 'Acme Outdoor', ['search', 'cart']);
    const popup = await b.context.newPage();
    await popup.setViewportSize({ width: 380, height: 600 });
    await popup.goto(`chrome-extension://${h.EXTENSION_ID}/popup.html`);
    await popup.waitForSelector('body[data-ready="true"]');
    await popup.waitForSelector('[data-testid="agent-status"][data-state="running"]');
    await popup.waitForSelector('[data-testid="grants"] [data-testid="revoke"]');
    // Settings a person would have: one excluded site, one masked word.
    await popup.fill('[data-testid="exclude-input"]', 'bank.example');
    await popup.click('[data-testid="exclude-add"]');
    await popup.fill('[data-testid="mask-input"]', 'Jane Roe');
    await popup.click('[data-testid="mask-add"]');
    await popup.waitForSelector('[data-testid="masked"] [data-word="Jane Roe"]');
    await popup.screenshot({ path: out, fullPage: true });
    console.log(out);
  } finally {
    await b.context.close();
    await sites.close();
    await h.stopAgent(agent);
    h.cleanup(root);
  }
}

// `node --test extension/test/` runs every file in this folder: do nothing there.
if (!process.env.NODE_TEST_CONTEXT) await main();
