// The search-engine matcher and the engines.json data file it reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { matchSearch, parseRules } from '../lib/engines.js';

const engines = parseRules(JSON.parse(readFileSync(new URL('../engines.json', import.meta.url), 'utf8')));
const m = (url) => matchSearch(url, engines);

// The URL cases live in ../engine-cases.json, which the agent's tests read too,
// so the two matchers are held to one list. `expect` is null for URLs that are
// not searches.
const CASES = JSON.parse(readFileSync(new URL('../engine-cases.json', import.meta.url), 'utf8'));

test('engine-cases.json is well formed', () => {
  assert.ok(CASES.length > 0);
  const urls = new Set();
  for (const c of CASES) {
    assert.equal(typeof c.url, 'string');
    assert.ok(!urls.has(c.url), `duplicate case ${c.url}`);
    urls.add(c.url);
    const keys = Object.keys(c).filter((k) => k !== 'why');
    assert.deepEqual(keys.sort(), ['expect', 'url'], c.url);
    if (c.why !== undefined) assert.equal(typeof c.why, 'string', c.url);
    if (c.expect !== null) {
      assert.deepEqual(Object.keys(c.expect).sort(), ['engine', 'query'], c.url);
      assert.ok(engines.some((e) => e.domains.includes(c.expect.engine)), `unknown engine ${c.expect.engine}`);
    }
  }
});

for (const { url, expect } of CASES) {
  test(`matchSearch ${JSON.stringify(url)}`, () => {
    const got = m(url);
    assert.deepEqual(got && { engine: got.engine, query: got.query }, expect);
  });
}

test('queries are cut to 512 code points', () => {
  const long = 'ü'.repeat(600);
  assert.equal(Array.from(m(`https://www.google.com/search?q=${encodeURIComponent(long)}`).query).length, 512);
});

test('engines.json covers the required engines', () => {
  const ids = engines.map((e) => e.id);
  for (const id of ['google', 'bing', 'duckduckgo', 'ecosia', 'startpage', 'brave', 'yahoo', 'qwant', 'kagi', 'amazon', 'ebay']) {
    assert.ok(ids.includes(id), id);
  }
  assert.ok(engines.find((e) => e.id === 'google').domains.length >= 12);
  // No domain may belong to two engines: the first match would hide the other.
  const all = engines.flatMap((e) => e.domains);
  assert.equal(new Set(all).size, all.length);
});

test('parseRules rejects a malformed file', () => {
  assert.throws(() => parseRules({ version: 2, engines: [] }));
  assert.throws(() => parseRules({ version: 1, engines: [{ id: 'x', name: 'X', domains: ['X.com'], paths: ['/'], param: 'q' }] }));
  assert.throws(() => parseRules({ version: 1, engines: [{ id: 'x', name: 'X', domains: ['x.com'], paths: ['/'], param: 'q', params: ['p'] }] }));
});

// The shipped file never gives one host to two engines, so this needs rules of
// its own: the first rule whose host and path match decides, and when it finds
// no query no later rule may claim the URL.
test('the first rule whose host and path match decides', () => {
  const rules = parseRules({
    version: 1,
    engines: [
      { id: 'google', name: 'Google', domains: ['google.com'], paths: ['/search'], param: 'q' },
      { id: 'shadow', name: 'Shadowed', domains: ['google.com'], paths: ['/search', '/other'], param: 'x' },
    ],
  });
  const hit = (url) => {
    const got = matchSearch(url, rules);
    return got && { engine: got.engine, query: got.query };
  };
  assert.deepEqual(hit('https://www.google.com/search?x=shadow&q=g'), { engine: 'google.com', query: 'g' });
  assert.equal(hit('https://www.google.com/search?x=only-shadow'), null);
  assert.deepEqual(hit('https://www.google.com/other?x=later'), { engine: 'google.com', query: 'later' });
});
