// The search-engine matcher and the engines.json data file it reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { matchSearch, parseRules } from '../lib/engines.js';

const engines = parseRules(JSON.parse(readFileSync(new URL('../engines.json', import.meta.url), 'utf8')));
const m = (url) => matchSearch(url, engines);

// [url, expected engine, expected query] — null when the URL is not a search.
const CASES = [
  ['https://www.google.com/search?q=running+shoes&hl=en', 'google.com', 'running shoes'],
  ['https://www.google.co.uk/search?q=wellies', 'google.co.uk', 'wellies'],
  ['https://www.google.com.au/search?q=thongs', 'google.com.au', 'thongs'],
  ['https://google.de/search?q=%C3%BCber', 'google.de', 'über'],
  ['http://www.google.com/search?q=plain+http', 'google.com', 'plain http'],
  ['https://www.google.com/search?q=++padded++', 'google.com', 'padded'],
  ['https://www.google.com/search?q=', null],
  ['https://www.google.com/search?q=+++', null],
  ['https://www.google.com/search', null],
  ['https://www.google.com/?q=home+page', null],
  ['https://www.google.com/searchbyimage?q=x', null],
  ['https://notgoogle.com/search?q=x', null],
  ['https://google.com.evil.example/search?q=x', null],
  ['ftp://www.google.com/search?q=x', null],
  ['https://www.bing.com/search?q=bing+it&form=QBLH', 'bing.com', 'bing it'],
  ['https://duckduckgo.com/?q=duck&ia=web', 'duckduckgo.com', 'duck'],
  ['https://html.duckduckgo.com/html/?q=no+js', 'duckduckgo.com', 'no js'],
  ['https://duckduckgo.com/about', null],
  ['https://www.ecosia.org/search?q=trees', 'ecosia.org', 'trees'],
  ['https://www.startpage.com/sp/search?query=private', 'startpage.com', 'private'],
  ['https://www.startpage.com/do/search?q=older+form', 'startpage.com', 'older form'],
  ['https://www.startpage.com/sp/search?query=&q=second+param', 'startpage.com', 'second param'],
  ['https://search.brave.com/search?q=lion', 'search.brave.com', 'lion'],
  ['https://brave.com/search?q=lion', null],
  ['https://search.yahoo.com/search?p=yodel', 'search.yahoo.com', 'yodel'],
  ['https://search.yahoo.com/search?q=yodel', null],
  ['https://www.qwant.com/?q=qwant+it&t=web', 'qwant.com', 'qwant it'],
  ['https://kagi.com/search?q=paid', 'kagi.com', 'paid'],
  ['https://www.amazon.de/s?k=kaffeem%C3%BChle&ref=nb', 'amazon.de', 'kaffeemühle'],
  ['https://www.amazon.co.jp/s?k=%E3%81%8A%E8%8C%B6', 'amazon.co.jp', 'お茶'],
  ['https://www.amazon.com/dp/B000?k=x', null],
  ['https://www.ebay.co.uk/sch/i.html?_nkw=vintage+lamp', 'ebay.co.uk', 'vintage lamp'],
  ['not a url', null],
];

for (const [url, engine, query] of CASES) {
  test(`matchSearch ${url}`, () => {
    const got = m(url);
    if (engine === null) assert.equal(got, null);
    else assert.deepEqual({ engine: got?.engine, query: got?.query }, { engine, query });
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
