// The Chromium manifest and the fixed extension id derived from its key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const read = (f) => readFileSync(new URL('../' + f, import.meta.url), 'utf8');
const manifest = JSON.parse(read('manifest.json'));

test('EXTENSION_ID is derived from the manifest key', () => {
  const der = Buffer.from(manifest.key, 'base64');
  const hex = createHash('sha256').update(der).digest('hex').slice(0, 32);
  const id = [...hex].map((c) => String.fromCharCode(97 + parseInt(c, 16))).join('');
  assert.equal(read('EXTENSION_ID'), id + '\n');
});

test('manifest: MV3 module worker, permissions, both content scripts', () => {
  assert.equal(manifest.manifest_version, 3);
  assert.deepEqual(manifest.background, { service_worker: 'background.js', type: 'module' });
  for (const p of ['storage', 'nativeMessaging', 'webNavigation']) assert.ok(manifest.permissions.includes(p), p);
  assert.deepEqual(manifest.host_permissions, ['http://*/*', 'https://*/*']);
  const [main, isolated] = manifest.content_scripts;
  assert.equal(main.world, 'MAIN');
  assert.equal(main.run_at, 'document_start');
  assert.equal(isolated.world, undefined);
  // Every file the manifest names exists.
  for (const f of [manifest.background.service_worker, manifest.action.default_popup, ...main.js, ...isolated.js]) read(f);
});
