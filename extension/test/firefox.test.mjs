// The Firefox build: same files, a Firefox MV3 manifest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFirefox, GECKO_ID } from '../build-firefox.mjs';

test('build-firefox writes a Firefox MV3 extension', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'optin-ff-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  buildFirefox(dir);
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(m.manifest_version, 3);
  assert.equal(m.key, undefined);
  assert.deepEqual(m.background, { scripts: ['background.js'], type: 'module' });
  assert.equal(m.browser_specific_settings.gecko.id, GECKO_ID);
  assert.equal(GECKO_ID, 'optin@optin.dev');
  for (const f of ['background.js', 'engines.json', 'popup.html', 'popup.js', 'lib/signals.js', 'content/page.js', 'content/relay.js']) {
    assert.ok(existsSync(join(dir, f)), f);
  }
  assert.ok(!existsSync(join(dir, 'test')));
});
