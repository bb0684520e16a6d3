// lib/limits-file.js is the copy of limits.json the extension runs on (a JSON
// module would stop the worker after a browser restart); limits.json is the
// file the agent reads. They must hold the same numbers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import file from '../lib/limits-file.js';

test('lib/limits-file.js holds exactly what limits.json holds', () => {
  const json = JSON.parse(readFileSync(new URL('../limits.json', import.meta.url), 'utf8'));
  assert.deepEqual(file, json);
});
