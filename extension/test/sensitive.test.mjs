// The sensitive-topics matcher, against the case table the agent's tests read too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { categoryTopics, parseTopics, queryTopics, signalTopics } from '../lib/sensitive.js';

const read = (name) => JSON.parse(readFileSync(new URL(`../${name}`, import.meta.url), 'utf8'));
const table = parseTopics(read('sensitive-topics.json'));
const CASES = read('sensitive-cases.json');

test('sensitive-cases.json is well formed', () => {
  assert.ok(CASES.length > 20);
  for (const c of CASES) {
    const keys = Object.keys(c).filter((k) => !['why', 'known'].includes(k)).sort();
    assert.ok(JSON.stringify(keys) === '["query","topics"]' || JSON.stringify(keys) === '["category","topics"]', JSON.stringify(c));
    for (const id of c.topics) assert.ok(table.topics.some((t) => t.id === id), `unknown topic ${id}`);
    if (c.known !== undefined) assert.ok(['false positive', 'false negative'].includes(c.known) && typeof c.why === 'string', JSON.stringify(c));
  }
});

for (const c of CASES) {
  const name = c.query !== undefined ? `query ${JSON.stringify(c.query)}` : `category ${JSON.stringify(c.category)}`;
  test(`matches ${name}`, () => {
    const got = c.query !== undefined ? queryTopics(c.query, table) : categoryTopics(c.category, table);
    assert.deepEqual(got, [...c.topics].sort());
  });
}

test('every term and category of the list matches its topic', () => {
  const file = read('sensitive-topics.json');
  for (const t of file.topics) {
    for (const term of t.terms) {
      const text = term.replace(/\*+$/, '');
      assert.ok(queryTopics(`about ${text} today`, table).includes(t.id), term);
      assert.ok(queryTopics(text.toUpperCase(), table).includes(t.id), `${term} in capitals`);
    }
    for (const c of t.categories) assert.ok(categoryTopics(c, table).includes(t.id), c);
  }
});

test('a captured signal matches by its query and every category it shows', () => {
  assert.deepEqual(signalTopics({ kind: 'search', query: 'payday loan', category: 'Health & Beauty > Health Care' }, table), ['financial-hardship', 'health']);
  const item = (category) => ({ name: 'n', price: '1', quantity: 1, category });
  assert.deepEqual(signalTopics({ kind: 'cart', items: [item('Toys'), item('Mature > Erotic')] }, table), ['sexual-orientation']);
  assert.deepEqual(signalTopics({ kind: 'cart', items: [{ name: 'hiv test', price: '1', quantity: 1 }] }, table), [], 'a product name is not a query');
  assert.deepEqual(signalTopics({ kind: 'search', query: 'hiv test' }, null), [], 'no table yet: no label');
});

test('rejects malformed lists', () => {
  for (const bad of [
    { version: 2, fold: {}, topics: [] },
    { version: 1, fold: { a: 'à', b: 'à' }, topics: [] },
    { version: 1, fold: {}, topics: [{ id: 'Health', label: 'x', categories: [], terms: [] }] },
    { version: 1, fold: {}, topics: [{ id: 'a', label: 'x', categories: [], terms: ['--'] }] },
  ]) {
    assert.throws(() => parseTopics(bad), JSON.stringify(bad));
  }
});
