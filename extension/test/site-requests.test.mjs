// "Does this site ask?": which site is asked about, who may ask, how a
// marketer's request reads, and which narrowing choices go to the agent.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe as describeRequest, fromPopup, inert, MAX_SHOWN, narrowChoices, siteOfUrl, spanSeconds, wouldShareWords } from '../lib/site-requests.js';

const ID = 'lhpgmlppkjgekcmhgcolafkmameamoal';
const POPUP = `chrome-extension://${ID}/popup.html`;

test('the site is the tab URL host, with the port of an https page only', () => {
  const cases = [
    ['https://shop.example/product/1?q=x#top', 'shop.example'],
    ['https://shop.example:8443/', 'shop.example:8443'],
    ['https://shop.example:443/', 'shop.example'],
    ['http://shop.example:8080/', 'shop.example'],
    ['https://SHOP.Example/', 'shop.example'],
    ['https://bücher.example/', 'xn--bcher-kva.example'],
    ['chrome://extensions/', null],
    ['file:///etc/passwd', null],
    ['ftp://shop.example/', null],
    [`${POPUP}`, null],
    ['not a url', null],
    [undefined, null],
  ];
  for (const [url, site] of cases) assert.equal(siteOfUrl(url), site, String(url));
});

test('only the popup may ask: content scripts and other pages are refused', () => {
  const page = { id: ID, url: 'https://shop.example/', tab: { id: 3, url: 'https://shop.example/' }, frameId: 0 };
  const cases = [
    [{ id: ID, url: POPUP }, true],
    // The popup opened as a tab (the tests do so): its tab is the popup itself.
    [{ id: ID, url: POPUP, tab: { id: 4, url: POPUP } }, true],
    [{ id: ID, url: POPUP + '?x=1' }, true],
    // A content script: the page is its sender.tab and its URL.
    [page, false],
    // A content script cannot forge sender.url, but were it to, its tab still gives it away.
    [{ ...page, url: POPUP }, false],
    [{ id: ID, url: `chrome-extension://${ID}/other.html` }, false],
    [{ id: 'someone-else', url: POPUP }, false],
    [{ id: ID }, false],
    [null, false],
  ];
  for (const [sender, allowed] of cases) assert.equal(fromPopup(sender, ID, POPUP), allowed, JSON.stringify(sender));
});

test('text from a marketer is made inert and bounded', () => {
  assert.equal(inert('Acme Shoes'), 'Acme Shoes');
  assert.equal(inert('evil\u202Eexe.txt'), 'evil\\u{202e}exe.txt');
  assert.equal(inert('\u001b]0;pwned\u0007'), '\\u{1b}]0;pwned\\u{7}');
  assert.equal(inert('a\u200Bb\u2066c\uFEFFd\u2028e\u0085f'), 'a\\u{200b}b\\u{2066}c\\u{feff}d\\u{2028}e\\u{85}f');
  assert.equal(inert('🛒 café'), '🛒 café', 'ordinary text is left alone');
  assert.equal(inert(42), '');
  assert.equal(inert(null), '');
  const long = inert('x'.repeat(MAX_SHOWN + 10));
  assert.equal(Array.from(long).length, MAX_SHOWN + 1);
  assert.ok(long.endsWith('…'));
});

test('spans read as the agent writes them', () => {
  assert.equal(spanSeconds('30d'), 30 * 86400);
  assert.equal(spanSeconds('2w'), 14 * 86400);
  assert.equal(spanSeconds('12h'), 12 * 3600);
  for (const bad of ['', 'd', '0d', '-1d', '1.5d', '30 d', '30D', '30y', '4000w', 30, null]) assert.equal(spanSeconds(bad), null, String(bad));
});

const terms = { kinds: ['search', 'cart'], granularity: 'category', window: '30d', duration: '90d' };

test('narrowing sends only narrower choices, and refuses wider ones here already', () => {
  const cases = [
    [{ kinds: ['search', 'cart'], window: '30d', expires: '90d' }, { choices: {} }],
    [{ kinds: ['cart'], window: '7d', expires: '30d' }, { choices: { kinds: ['cart'], window: '7d', expires: '30d' } }],
    [{ kinds: ['cart', 'search'], window: ' 1w ', expires: '' }, { choices: { window: '1w' } }],
    [{ window: '720h' }, { choices: {} }],
    [{ kinds: [] }, { error: 'keep at least one kind, or deny the request' }],
    [{ kinds: ['purchase'] }, { error: 'kinds: purchase was not asked for' }],
    [{ window: '31d' }, { error: 'window: at most 30 days, as the request asks' }],
    [{ expires: '13w' }, { error: 'duration: at most 90 days, as the request asks' }],
    [{ window: 'a week' }, { error: 'window: write a span like 7d or 12h' }],
  ];
  for (const [picked, expected] of cases) assert.deepEqual(narrowChoices(terms, picked), expected, JSON.stringify(picked));
});

test('a request reads in plain words, every text inert', () => {
  const item = {
    name: 'shop.test/offers-1',
    key_changed: true,
    view: {
      state: 'pending',
      fetched_from: 'shop.test',
      request: {
        id: 'offers-1',
        expires_at: '2027-01-31T00:00:00Z',
        marketer: { name: 'The \u202EShop', domain: 'shop.test', contact: 'privacy@shop.test', privacy_policy: 'https://shop.test/privacy' },
        purpose: { code: 'dpv:PersonalisedAdvertising', text: 'Offers\u001b[2J that fit' },
        terms: { ...terms, categories: ['Apparel & Accessories > Shoes'], merchants: ['shoes.example'], fields: ['query', 'merchant'], rate: '2/day' },
        offer: '10% off',
        delivery: { method: 'push', inbox: 'https://inbox.shop.test/optin', every: '1d' },
      },
    },
    would_share: { result: 'items', items: 3, kinds: { search: 2, cart: 1 }, categories: { 'Apparel & Accessories > Shoes': 1 } },
  };
  const lines = Object.fromEntries(describeRequest(item));
  assert.deepEqual(lines, {
    'who asks': 'The \\u{202e}Shop (shop.test)',
    domain: 'checked: fetched from https://shop.test',
    warning: 'shop.test signed its earlier requests with another key',
    contact: 'privacy@shop.test; privacy policy https://shop.test/privacy',
    purpose: 'Offers\\u{1b}[2J that fit [dpv:PersonalisedAdvertising]',
    'asks for': 'searches and shopping carts, kind, category and day only, from the last 30 days, for 90 days',
    categories: 'Apparel & Accessories > Shoes',
    merchants: 'shoes.example',
    'only fields': 'query, merchant',
    'at most': '2/day slices',
    offer: '10% off',
    delivery: 'pushed to https://inbox.shop.test/optin every 1 day',
    expires: '2027-01-31T00:00:00Z',
    state: 'pending',
    'would share now': '2 searches and 1 cart in 1 category (3 items)',
  });
  const unchecked = Object.fromEntries(describeRequest({ view: { request: { delivery: { method: 'pull' } } } }));
  assert.equal(unchecked.domain, "not checked against the marketer's website");
  assert.equal(unchecked.delivery, 'pull: the marketer fetches slices with the bundle you hand over');
  assert.equal(unchecked['would share now'], 'nothing can be shared under it now');
});

test('what would be shared, in words', () => {
  assert.equal(wouldShareWords({ result: 'paused' }), 'nothing while sharing is paused');
  assert.equal(wouldShareWords({ result: 'items', items: 0, kinds: {} }), 'nothing yet: you have no signals these terms cover');
  assert.equal(wouldShareWords({ result: 'items', items: 1, kinds: { purchase: 1 } }), '1 purchase (1 item)');
});
