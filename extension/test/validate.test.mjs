// lib/validate.js: the agent's rules for one signal (protocol/src/signal.rs),
// as a table of signals and the path each refusal must name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDomainSyntax, signalProblem } from '../lib/validate.js';
import { buildCart, buildSearch, makeItem, wireSignal } from '../lib/signals.js';

const AT = '2026-11-27T10:00:00.000Z';
const search = { id: 's-1', kind: 'search', at: AT, query: 'tent', engine: 'duckduckgo.com', source: 'extension' };
const item = { name: 'Mug', price: '4.5', quantity: 1 };
const cart = { id: 'c-1', kind: 'cart', at: AT, merchant: 'shop.example', currency: 'EUR', items: [item], source: 'extension' };
const purchase = { kind: 'purchase', at: AT, merchant: 'shop.example', currency: 'EUR', total: '4.5', order_id: 'A-1', items: [item], source: 'extension' };
const withItem = (fields) => ({ ...cart, items: [{ ...item, ...fields }] });

test('valid signals pass, including what the builders make', () => {
  for (const s of [search, cart, purchase, { ...cart, items: [] }, { ...search, category: 'A > B' }]) assert.equal(signalProblem(s), null, JSON.stringify(s));
  const built = [
    buildSearch({ query: 'q', engine: 'google.com' }),
    buildCart({ merchant: 'shop.example', currency: 'EUR', items: [makeItem({ name: 'x\u0007\ud800', price: 1 })] }),
  ];
  for (const s of built) assert.equal(signalProblem(wireSignal(s)), null, JSON.stringify(s));
});

test('rejects what the agent refuses, naming the path', () => {
  const huge = '\u6f22'.repeat(256);
  // (signal, the start of the problem)
  const table = [
    [[], 'a signal must be a JSON object'],
    [{ ...search, kind: 'walk' }, 'kind:'],
    [{ ...search, x: 1 }, 'x: unknown field'],
    [{ ...search, merchant: 'shop.example' }, 'merchant: unknown field'],
    [{ ...search, id: 'has space' }, 'id:'],
    [{ ...search, id: 'x'.repeat(129) }, 'id: longer than 128'],
    [{ ...search, at: 'yesterday' }, 'at:'],
    [{ ...search, at: '2026-13-40T10:00:00Z' }, 'at:'],
    [{ ...search, query: '' }, 'query: must not be empty'],
    [{ ...search, query: '   ' }, 'query: must not be empty'],
    [{ ...search, query: 'a'.repeat(513) }, 'query: longer than 512'],
    [{ ...search, query: 'shoes \u202egnp.exe' }, 'query: contains control'],
    [{ ...search, query: 'lone \ud800' }, 'query: holds a lone surrogate'],
    [{ ...search, engine: 'not a host' }, 'engine: not a domain name'],
    [{ ...search, engine: 'localhost' }, 'engine: not a domain name'],
    [{ ...search, source: 'x'.repeat(33) }, 'source: longer than 32'],
    [{ ...cart, merchant: 'my_shop.example' }, 'merchant: not a domain name'],
    [{ ...cart, merchant: '-x.example' }, 'merchant: not a domain name'],
    [{ ...cart, currency: 'eur' }, 'currency:'],
    [{ ...cart, currency: 'EURO' }, 'currency: longer than 3'],
    [{ ...cart, items: 'all' }, 'items: must be a list'],
    [{ ...cart, items: Array(201).fill(item) }, 'items: more than 200'],
    [{ ...cart, items: [null] }, 'items[0]: must be an object'],
    [withItem({ color: 'red' }), 'items[0].color: unknown field'],
    [withItem({ name: 'x\u2066y' }), 'items[0].name: contains control'],
    [withItem({ name: 'n'.repeat(257) }), 'items[0].name: longer than 256'],
    [withItem({ sku: 's'.repeat(65) }), 'items[0].sku: longer than 64'],
    [withItem({ category: 'c'.repeat(257) }), 'items[0].category: longer than 256'],
    [withItem({ price: 89.9 }), 'items[0].price: must be a decimal string'],
    [withItem({ price: '1,5' }), 'items[0].price: not a decimal'],
    [withItem({ price: '1234567890123' }), 'items[0].price: not a decimal'],
    [withItem({ quantity: 0 }), 'items[0].quantity:'],
    [withItem({ quantity: 10001 }), 'items[0].quantity:'],
    [withItem({ quantity: 1.5 }), 'items[0].quantity:'],
    [{ ...purchase, items: [] }, 'items: must not be empty'],
    [{ ...purchase, total: undefined }, 'total: is required'],
    [{ ...purchase, order_id: 'o'.repeat(129) }, 'order_id: longer than 128'],
    [{ ...cart, items: Array.from({ length: 60 }, (_, i) => ({ name: huge, sku: 'G-' + i, category: huge, price: '1', quantity: 1 })) }, 'signal is'],
  ];
  for (const [signal, start] of table) {
    const problem = signalProblem(signal);
    assert.ok(problem?.startsWith(start), `${JSON.stringify(signal).slice(0, 120)} → ${problem}`);
  }
});

test('domain syntax as plain_domain checks it', () => {
  for (const ok of ['shop.example', 'WWW.Amazon.DE', 'a.b.shoes.example.', '192.168.1.20', 'xn--bcher-kva.example']) assert.ok(isDomainSyntax(ok), ok);
  for (const bad of ['localhost', '', 'shop..example', '-x.example', 'x-.example', 'sh op.example', '[::1]', 'a'.repeat(64) + '.example']) assert.ok(!isDomainSyntax(bad), bad);
});
