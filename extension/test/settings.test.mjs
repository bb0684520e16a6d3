// Settings normalisation and the capture gate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockReason, isExcluded, normalizeSettings, normalizeSite, DEFAULT_SETTINGS } from '../lib/settings.js';

test('normalizeSettings fills defaults and cleans values', () => {
  assert.deepEqual(normalizeSettings(undefined), { ...DEFAULT_SETTINGS, kinds: { ...DEFAULT_SETTINGS.kinds } });
  const s = normalizeSettings({ enabled: false, kinds: { cart: false }, excluded: ['https://www.Shop.example/x', '', 7], masked: [' Jane ', 'Jane'], delayMinutes: '5.4' });
  assert.deepEqual(s, { enabled: false, kinds: { search: true, cart: false, purchase: true }, excluded: ['shop.example'], masked: ['Jane'], delayMinutes: 5 });
  assert.equal(normalizeSettings({ delayMinutes: -3 }).delayMinutes, 0);
  assert.equal(normalizeSettings({ delayMinutes: 1e9 }).delayMinutes, 1440);
});

test('normalizeSite', () => {
  assert.equal(normalizeSite('WWW.Example.COM'), 'example.com');
  assert.equal(normalizeSite('https://shop.example:8443/cart'), 'shop.example');
  assert.equal(normalizeSite('localhost'), 'localhost');
  assert.equal(normalizeSite('not a site'), '');
  assert.equal(normalizeSite(''), '');
});

test('isExcluded covers subdomains but not look-alikes', () => {
  assert.ok(isExcluded('shop.example', ['shop.example']));
  assert.ok(isExcluded('www.shop.example', ['shop.example']));
  assert.ok(!isExcluded('myshop.example', ['shop.example']));
});

test('blockReason: incognito, paused, excluded and switched-off kinds capture nothing', () => {
  const s = normalizeSettings({ excluded: ['quiet.example'], kinds: { cart: false } });
  assert.equal(blockReason(s, { kind: 'search', host: 'www.google.com', incognito: false }), null);
  assert.equal(blockReason(s, { kind: 'search', host: 'www.google.com', incognito: true }), 'incognito');
  assert.equal(blockReason({ ...s, enabled: false }, { kind: 'search', host: 'www.google.com' }), 'paused');
  assert.equal(blockReason(s, { kind: 'purchase', host: 'www.quiet.example' }), 'excluded');
  assert.equal(blockReason(s, { kind: 'cart', host: 'shop.example' }), 'kind off');
  assert.equal(blockReason(s, { host: 'shop.example' }), null);
});
