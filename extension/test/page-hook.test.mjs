// content/page.js (the MAIN-world data-layer hook) run in a bare JavaScript
// context that plays the page: gtag, tag-manager push overrides, reassigned
// layers and unclonable values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const HOOK = readFileSync(new URL('../content/page.js', import.meta.url), 'utf8');

// A fresh "page" with the hook installed at document_start; returns the page
// context and the list of messages the hook posted.
function newPage(before = '') {
  const posted = [];
  const ctx = vm.createContext({});
  vm.runInContext('globalThis.window = globalThis; class Node {}; globalThis.Node = Node;', ctx);
  // The hook hands each event to relay.js as the JSON text of a DOM event.
  vm.runInContext('globalThis.CustomEvent = class { constructor(type, init) { this.type = type; this.detail = init.detail; } };', ctx);
  ctx.document = { dispatchEvent: (e) => posted.push(e.type === 'optin:page-event' ? JSON.parse(e.detail) : null) };
  vm.runInContext(before, ctx);
  vm.runInContext(HOOK, ctx);
  return { run: (code) => vm.runInContext(code, ctx), posted };
}

const events = (posted) => posted.map((m) => m.event);

test('gtag events are relayed as {event, ecommerce}; config calls are not', () => {
  const page = newPage();
  page.run(`
    window.dataLayer = window.dataLayer || [];
    function gtag(){ dataLayer.push(arguments); }
    gtag('js', new Date()); gtag('config', 'G-1');
    gtag('event', 'page_view');
    gtag('event', 'add_to_cart', { currency: 'EUR', items: [{ item_id: 'A', price: 1 }] });
  `);
  assert.equal(page.posted.length, 1);
  assert.equal(page.posted[0].__optin_v1, true);
  assert.equal(page.posted[0].event, 'add_to_cart');
  assert.deepEqual(page.posted[0].ecommerce, { currency: 'EUR', items: [{ item_id: 'A', price: 1 }] });
});

test('tag-manager push overrides report each event exactly once', () => {
  const page = newPage();
  page.run(`
    window.dataLayer = window.dataLayer || [];
    for (let n = 0; n < 3; n++) {
      const previous = dataLayer.push;
      dataLayer.push = function () { return previous.apply(dataLayer, arguments); };
    }
    dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR', items: [] } });
    dataLayer.push({ event: 'purchase', ecommerce: { transaction_id: 'T1', currency: 'EUR', items: [] } });
  `);
  assert.deepEqual(events(page.posted), ['add_to_cart', 'purchase']);
  assert.equal(page.run('dataLayer.length'), 2);
});

test('an event pushed by a handler inside another push is reported too', () => {
  const page = newPage();
  page.run(`
    window.dataLayer = [];
    const previous = dataLayer.push;
    let inner = false;
    dataLayer.push = function () {
      const r = previous.apply(dataLayer, arguments);
      if (!inner) { inner = true; dataLayer.push({ event: 'begin_checkout', ecommerce: { currency: 'EUR' } }); }
      return r;
    };
    dataLayer.push({ event: 'view_cart', ecommerce: { currency: 'EUR' } });
  `);
  assert.deepEqual(events(page.posted).sort(), ['begin_checkout', 'view_cart']);
});

test('a layer present before the hook and a reassigned layer report their backlog', () => {
  const page = newPage(`window.dataLayer = [{ event: 'view_cart', ecommerce: { currency: 'EUR' } }];`);
  assert.deepEqual(events(page.posted), ['view_cart']);
  page.run(`window.dataLayer = [{ event: 'purchase', ecommerce: { transaction_id: 'X', currency: 'EUR' } }, { event: 'gtm.js' }];`);
  page.run(`dataLayer.push({ event: 'add_to_cart', ecommerce: { currency: 'EUR' } });`);
  assert.deepEqual(events(page.posted), ['view_cart', 'purchase', 'add_to_cart']);
  // Assigning the same array again does not report it again.
  page.run('window.dataLayer = dataLayer;');
  assert.equal(page.posted.length, 3);
});

test('functions, DOM nodes and odd objects are stripped before posting', () => {
  const page = newPage();
  page.run(`
    window.dataLayer = [];
    const cyclic = { currency: 'EUR' }; cyclic.self = cyclic;
    dataLayer.push({ event: 'add_to_cart', eventCallback() {}, ecommerce: {
      currency: 'EUR', node: new Node(), when: new Date(), fn: () => 1, nan: NaN,
      items: [{ item_id: 'A', price: 2, extra: { deep: { deeper: { deepest: { gone: { away: 1 } } } } } }],
      cyclic,
      get boom() { throw new Error('no'); },
    } });
  `);
  assert.equal(page.posted.length, 1);
  const e = page.posted[0].ecommerce;
  assert.equal(e.currency, 'EUR');
  for (const k of ['node', 'when', 'fn', 'nan', 'boom']) assert.ok(!(k in e), k);
  assert.equal(e.items[0].item_id, 'A');
});

test('the page still gets push return values and its own callbacks', () => {
  const page = newPage();
  assert.equal(page.run(`window.dataLayer = []; dataLayer.push({ a: 1 }, { b: 2 });`), 2);
  assert.equal(page.posted.length, 0);
});
