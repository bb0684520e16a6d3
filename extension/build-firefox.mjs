#!/usr/bin/env node
// Writes the Firefox variant of the extension to OUTDIR:
//
//   node extension/build-firefox.mjs OUTDIR
//
// Same files; only the manifest differs: Firefox MV3 runs the worker code as a
// background script (background.scripts, not service_worker), needs a fixed
// add-on id (browser_specific_settings.gecko.id) and has no "key".

import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const GECKO_ID = 'optin@optin.dev';
const SRC = dirname(fileURLToPath(import.meta.url));
// What the browser loads; tests, docs and this script stay behind.
export const FILES = ['engines.json', 'sensitive-topics.json', 'limits.json', 'background.js', 'popup.html', 'popup.js', 'popup.css', 'lib', 'content'];

export function firefoxManifest(chromeManifest) {
  const m = structuredClone(chromeManifest);
  delete m.key;
  delete m.minimum_chrome_version;
  m.background = { scripts: [m.background.service_worker], type: 'module' };
  m.browser_specific_settings = {
    // 128 is the first ESR with "world": "MAIN" content scripts.
    gecko: { id: GECKO_ID, strict_min_version: '128.0' },
  };
  return m;
}

export function buildFirefox(outDir) {
  const out = resolve(outDir);
  mkdirSync(out, { recursive: true });
  for (const f of FILES) cpSync(join(SRC, f), join(out, f), { recursive: true });
  const manifest = JSON.parse(readFileSync(join(SRC, 'manifest.json'), 'utf8'));
  writeFileSync(join(out, 'manifest.json'), JSON.stringify(firefoxManifest(manifest), null, 2) + '\n');
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error('usage: node extension/build-firefox.mjs OUTDIR');
    process.exit(2);
  }
  console.log(buildFirefox(outDir));
}
