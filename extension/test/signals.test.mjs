// Field normalisation, signal construction and masking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildCart, buildPurchase, buildSearch, clip, joinCategory, makeItem, maskSignal, purchaseId, sha256Hex, sumItems, summarize, toCurrency, toDecimal, toQuantity, wireSignal, DECIMAL_RE } from '../lib/signals.js';

const SEARCH_FIELDS = ['id', 'kind', 'at', 'query', 'engine', 'source'];
const AT_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

test('toDecimal converts GA4 numbers and strings to plain decimals', () => {
  const cases = [
    [59.9, '59.9'],
    [7.5, '7.5'],
    [10, '10'],
    [0, '0'],
    [-0, '0'],
    [0.1 + 0.2, '0.3'],
    [19.999949, '19.9999'],
    [1.23456789, '1.2346'],
    [1e-7, '0'],
    [1e11, '100000000000'],
    [999999999999.9999, '999999999999.9999'],
    ['12.50', '12.5'],
    [' 3 ', '3'],
    ['.5', '0.5'],
    ['0003.10', '3.1'],
  ];
  for (const [input, want] of cases) {
    const got = toDecimal(input);
    assert.equal(got, want, `toDecimal(${input})`);
    assert.match(got, DECIMAL_RE);
  }
  for (const bad of [-1, NaN, Infinity, 1e13, 1e21, '1,299.00', '1e3', '-2', '', 'abc', null, undefined, {}, []]) {
    assert.equal(toDecimal(bad), null, `toDecimal(${JSON.stringify(bad)})`);
  }
});

test('toQuantity gives an integer 1..10000', () => {
  assert.equal(toQuantity(undefined), 1);
  assert.equal(toQuantity(3), 3);
  assert.equal(toQuantity('2'), 2);
  assert.equal(toQuantity(2.4), 2);
  assert.equal(toQuantity(50000), 10000);
  assert.equal(toQuantity(0), null);
  assert.equal(toQuantity(-1), null);
  assert.equal(toQuantity('x'), null);
});

test('toCurrency accepts three letters only', () => {
  assert.equal(toCurrency('eur'), 'EUR');
  assert.equal(toCurrency(' GBP '), 'GBP');
  for (const bad of ['EURO', 'E1R', '', null, 5]) assert.equal(toCurrency(bad), null);
});

test('clip trims and never splits a surrogate pair', () => {
  assert.equal(clip('  a  ', 10), 'a');
  assert.equal(clip('😀😀😀', 2), '😀😀');
  assert.equal(clip(5, 2), '');
});

test('clip drops what the agent would refuse a signal for, and mends lone surrogates', () => {
  // (page text, what is kept)
  const table = [
    ['cheap \u202eexe.tnet', 'cheap exe.tnet'],
    ['red\u001b[31m shoes', 'red[31m shoes'],
    ['tab\there\nnewline', 'tabherenewline'],
    ['isolate\u2066x\u2069', 'isolatex'],
    ['lone \ud800 surrogate', 'lone \ufffd surrogate'],
    ['zero\u200bwidth stays', 'zero\u200bwidth stays'],
  ];
  for (const [page, kept] of table) assert.equal(clip(page, 100), kept, JSON.stringify(page));
});

test('joinCategory builds a taxonomy path', () => {
  assert.equal(joinCategory(['Apparel & Accessories', ' Shoes ', '', undefined, 'Boots']), 'Apparel & Accessories > Shoes > Boots');
  assert.equal(joinCategory([]), '');
});

test('makeItem keeps only accepted fields and drops unusable items', () => {
  assert.deepEqual(makeItem({ name: ' Mug ', sku: 'M-1', category: 'Home', price: 4, quantity: 2, color: 'red' }), { name: 'Mug', sku: 'M-1', category: 'Home', price: '4', quantity: 2 });
  assert.deepEqual(makeItem({ name: 'Mug', price: '4.5' }), { name: 'Mug', price: '4.5', quantity: 1 });
  assert.equal(makeItem({ name: '', price: 4 }), null);
  assert.equal(makeItem({ name: 'Mug', price: 'free' }), null);
  assert.equal(makeItem({ name: 'Mug', price: 4, quantity: 0 }), null);
  assert.equal(makeItem({ name: 'x'.repeat(300), sku: 'y'.repeat(100), price: 1 }).name.length, 256);
  assert.equal(makeItem({ name: 'x', sku: 'y'.repeat(100), price: 1 }).sku.length, 64);
});

test('buildSearch has exactly the search fields', () => {
  const s = buildSearch({ query: 'shoes', engine: 'google.com' });
  assert.deepEqual(Object.keys(s).sort(), [...SEARCH_FIELDS].sort());
  assert.match(s.at, AT_RE);
  assert.match(s.id, /^[0-9a-f-]{36}$/);
  assert.equal(buildSearch({ query: '  ', engine: 'google.com' }), null);
});

const ITEMS = [
  { name: 'Trail Runner', sku: 'TR-1', category: 'Apparel & Accessories > Shoes', price: '59.9', quantity: 1 },
  { name: 'Wool Socks', sku: 'WS-2', price: '7.5', quantity: 2 },
];

test('buildCart needs a currency and items; category is the first item’s', () => {
  const c = buildCart({ merchant: 'shop.example', currency: 'eur', items: ITEMS });
  assert.deepEqual(Object.keys(c).sort(), ['at', 'category', 'currency', 'id', 'items', 'kind', 'merchant', 'source']);
  assert.equal(c.currency, 'EUR');
  assert.equal(c.category, 'Apparel & Accessories > Shoes');
  assert.equal(buildCart({ merchant: 'shop.example', currency: undefined, items: ITEMS }), null);
  assert.equal(buildCart({ merchant: 'shop.example', currency: 'EUR', items: [] }), null);
  assert.equal(buildCart({ merchant: 'shop.example', currency: 'EUR', items: Array(300).fill(ITEMS[1]) }).items.length, 200);
});

test('buildPurchase has a stable id from merchant and order id', async () => {
  const a = await buildPurchase({ merchant: 'shop.example', currency: 'EUR', total: 74.9, orderId: 'A-1', items: ITEMS });
  const b = await buildPurchase({ merchant: 'shop.example', currency: 'EUR', total: 74.9, orderId: 'A-1', items: ITEMS });
  assert.equal(a.id, b.id);
  // The id the agent derives for this order (SPEC.md, "Ids").
  assert.equal(a.id, 'p-' + (await sha256Hex('purchase\nshop.example\nA-1')).slice(0, 32));
  assert.match(a.id, /^p-[0-9a-f]{32}$/);
  assert.notEqual(a.id, await purchaseId('other.example', 'A-1'));
  assert.deepEqual(Object.keys(a).sort(), ['at', 'category', 'currency', 'id', 'items', 'kind', 'merchant', 'order_id', 'source', 'total']);
  assert.equal(a.total, '74.9');
  // Without a total the items are summed exactly.
  const c = await buildPurchase({ merchant: 'shop.example', currency: 'EUR', orderId: 7, items: ITEMS });
  assert.equal(c.total, '74.9');
  assert.equal(c.order_id, '7');
  // Without an order id the page stands in, and order_id is left out.
  const d = await buildPurchase({ merchant: 'shop.example', currency: 'EUR', total: 1, items: ITEMS, pageKey: 'https://shop.example/done' });
  assert.equal(d.order_id, undefined);
  assert.equal(d.id, await purchaseId('shop.example', '', 'https://shop.example/done'));
});

// What the agent stores as a signal's id (SPEC.md, "Merchants" and "Ids"): the
// id it was given, else for a purchase with an order number one made from the
// registrable merchant and the order number. `registrable` stands in for the
// public suffix list, for the hosts used here.
async function storedId(sent, registrable) {
  if (sent.id !== undefined) return sent.id;
  assert.equal(sent.kind, 'purchase');
  return 'p-' + (await sha256Hex(`purchase\n${registrable(sent.merchant)}\n${sent.order_id}`)).slice(0, 32);
}

test('one order seen on www.shop.example and on shop.example is one purchase in the agent', async () => {
  const registrable = (host) => ({ 'www.shop.example': 'shop.example', 'checkout.shop.example': 'shop.example' })[host] ?? host;
  const order = (merchant) => buildPurchase({ merchant, currency: 'EUR', total: 74.9, orderId: 'A-1001', items: ITEMS, pageKey: `https://${merchant}/done` });
  const ids = [];
  for (const host of ['www.shop.example', 'shop.example', 'checkout.shop.example']) {
    ids.push(await storedId(wireSignal(await order(host)), registrable));
  }
  assert.equal(new Set(ids).size, 1, `one order, one id: ${ids.join(', ')}`);
  // A different order at the same merchant stays a different purchase.
  const other = await buildPurchase({ merchant: 'www.shop.example', currency: 'EUR', total: 1, orderId: 'A-1002', items: ITEMS });
  assert.notEqual(await storedId(wireSignal(other), registrable), ids[0]);
});

test('wireSignal leaves ids alone except on purchases with a real order number', async () => {
  const p = await buildPurchase({ merchant: 'www.shop.example', currency: 'EUR', total: 5, orderId: 'A-1', items: ITEMS });
  const sent = wireSignal(p);
  assert.equal(sent.id, undefined);
  assert.deepEqual({ ...sent, id: p.id }, p, 'nothing else changes');
  assert.match(p.id, /^p-[0-9a-f]{32}$/, 'the extension keeps its own id');
  // Without an order number the agent would make an id from the time, so a
  // reloaded page would count twice: the page-based id is sent.
  const noOrder = await buildPurchase({ merchant: 'shop.example', currency: 'EUR', total: 5, items: ITEMS, pageKey: 'https://shop.example/done' });
  assert.equal(wireSignal(noOrder).id, noOrder.id);
  // Two orders whose numbers mask to the same text must not become one.
  const masked = [];
  for (const orderId of ['JANE-1', 'JOHN-1']) {
    const m = maskSignal(await buildPurchase({ merchant: 'shop.example', currency: 'EUR', total: 5, orderId, items: ITEMS }), ['jane', 'john']);
    assert.equal(m.order_id, '[masked]-1');
    masked.push(wireSignal(m).id);
  }
  assert.ok(masked[0] && masked[1] && masked[0] !== masked[1], 'masked order numbers keep their own ids');
  const search = buildSearch({ query: 'q', engine: 'bing.com' });
  const cart = buildCart({ merchant: 'shop.example', currency: 'EUR', items: ITEMS });
  assert.equal(wireSignal(search), search);
  assert.equal(wireSignal(cart), cart);
});

test('sumItems adds price × quantity without float drift', () => {
  assert.equal(sumItems([{ price: '0.1', quantity: 3 }, { price: '0.2', quantity: 1 }]), '0.5');
  assert.equal(sumItems([{ price: '19.9999', quantity: 10000 }]), '199999');
});

test('maskSignal replaces words in every text field, case-insensitively', async () => {
  const p = await buildPurchase({ merchant: 'shop.example', currency: 'EUR', total: 5, orderId: 'JANE-1', items: [{ name: 'Mug for jane DOE', sku: 'JD-1', category: 'Gifts > Jane', price: '5', quantity: 1 }] });
  const m = maskSignal(p, ['Jane Doe', 'jane', '  ', 'a.b']);
  assert.equal(m.items[0].name, 'Mug for [masked]');
  assert.equal(m.items[0].category, 'Gifts > [masked]');
  assert.equal(m.order_id, '[masked]-1');
  assert.equal(m.id, p.id, 'ids are never masked');
  assert.equal(m.total, '5');
  // Regex characters in a word are literal.
  assert.equal(maskSignal(buildSearch({ query: 'axb a.b', engine: 'google.com' }), ['a.b']).query, 'axb [masked]');
  // No words: unchanged.
  assert.equal(maskSignal(p, []), p);
});

test('maskSignal drops a signal whose site is masked', () => {
  const s = buildSearch({ query: 'anything', engine: 'google.com' });
  assert.equal(maskSignal(s, ['GOOGLE']), null);
});

test('summarize describes each kind', () => {
  assert.equal(summarize(buildSearch({ query: 'q', engine: 'bing.com' })), '"q" on bing.com');
  assert.equal(summarize(buildCart({ merchant: 'shop.example', currency: 'EUR', items: ITEMS })), '3 items at shop.example');
});
