// Budgets and cart coalescing (lib/budget.js) and the page-text sanitiser,
// driven by a clock of the test's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cartChange, countDrop, dueCarts, newLedger, nextDue, siteOf, spend } from '../lib/budget.js';
import { clipPageText } from '../lib/signals.js';
import { LIMITS_FILE } from '../lib/limits.js';

const T0 = Date.parse('2026-11-27T10:00:00Z');
const S = 1000;

test('the shipped budgets are the ones the README documents', () => {
  assert.deepEqual(LIMITS_FILE.extension, { signals_per_site_per_hour: 120, signals_per_day: 1000, cart_snapshot_seconds: 30 });
  assert.equal(LIMITS_FILE.agent.extension_signals_per_day, 2000);
});

test('spend: per site per clock hour and per UTC day', () => {
  const budgets = { signals_per_site_per_hour: 3, signals_per_day: 5 };
  const ledger = newLedger();
  // (site, time, expected answer)
  const table = [
    ['a.example', T0, null],
    ['a.example', T0 + 1 * S, null],
    ['a.example', T0 + 2 * S, null],
    ['a.example', T0 + 3 * S, 'site'],
    ['b.example', T0 + 4 * S, null],
    ['a.example', T0 + 3600 * S, null], // a new hour for a.example
    ['c.example', T0 + 3601 * S, 'day'], // 5 spent today
    ['c.example', Date.parse('2026-11-28T00:00:00Z'), null], // a new UTC day
  ];
  for (const [site, now, want] of table) assert.equal(spend(ledger, site, now, budgets), want, `${site} at ${new Date(now).toISOString()}`);
});

test('spend: the ledger survives a round trip through storage', () => {
  const budgets = { signals_per_site_per_hour: 2, signals_per_day: 100 };
  let ledger = newLedger();
  spend(ledger, 'a.example', T0, budgets);
  spend(ledger, 'a.example', T0, budgets);
  ledger = JSON.parse(JSON.stringify(ledger)); // the worker was stopped and started
  assert.equal(spend(ledger, 'a.example', T0 + S, budgets), 'site');
});

test('siteOf: www. and a trailing dot do not make another site', () => {
  for (const [host, site] of [['www.Shop.example', 'shop.example'], ['shop.example.', 'shop.example'], ['m.shop.example', 'm.shop.example']]) {
    assert.equal(siteOf(host), site);
  }
});

test('cart snapshots: one at once after a quiet interval, the rest held until it closes', () => {
  const interval = 30 * S;
  const gates = {};
  // (seconds since T0, what the change does)
  const changes = [
    [0, 'send'],
    [1, 'hold'],
    [5, 'hold'],
    [29, 'hold'],
  ];
  for (const [sec, want] of changes) assert.equal(cartChange(gates, 'shop.example', T0 + sec * S, interval), want, `t=${sec}`);
  assert.equal(nextDue(gates), T0 + 30 * S, 'due when the interval closes');
  assert.deepEqual(dueCarts(gates, T0 + 29 * S, interval), []);
  assert.deepEqual(dueCarts(gates, T0 + 30 * S, interval), ['shop.example']);
  assert.deepEqual(dueCarts(gates, T0 + 31 * S, interval), [], 'sent once');
  // Sent at 30 s: a change at 40 s is held until 60 s, one at 61 s after that goes at once.
  assert.equal(cartChange(gates, 'shop.example', T0 + 40 * S, interval), 'hold');
  assert.deepEqual(dueCarts(gates, T0 + 60 * S, interval), ['shop.example']);
  assert.equal(cartChange(gates, 'shop.example', T0 + 95 * S, interval), 'send');
  // Another merchant has its own interval.
  assert.equal(cartChange(gates, 'other.example', T0 + 96 * S, interval), 'send');
});

test('cart snapshots: a loop of changes for a minute gives at most 1 + 60/interval snapshots', () => {
  const interval = 30 * S;
  const gates = {};
  let sent = 0;
  for (let t = 0; t <= 60 * S; t += 10) {
    if (cartChange(gates, 'shop.example', T0 + t, interval) === 'send') sent++;
    sent += dueCarts(gates, T0 + t, interval).length;
  }
  sent += dueCarts(gates, T0 + 120 * S, interval).length; // the worker wakes later
  assert.ok(sent <= 1 + 60 / 30 + 1, `snapshots: ${sent}`);
  assert.equal(nextDue(gates), null, 'nothing left held');
});

test('countDrop counts per reason, today and in total', () => {
  let c = countDrop(null, 'invalid', 1, T0);
  c = countDrop(c, 'budget', 3, T0);
  c = countDrop(c, 'invalid', 2, Date.parse('2026-11-28T01:00:00Z'));
  assert.deepEqual(c, { day: '2026-11-28', today: { invalid: 2 }, total: { invalid: 3, budget: 3 } });
});

test('clipPageText: well-formed, no control or format characters, bounded', () => {
  // (page text, max, what is kept)
  const table = [
    ['Bad\ud800name\u0007', 100, 'Bad\ufffdname'],
    ['\udc00lone low', 100, '\ufffdlone low'],
    ['zero\u200bwidth\u00adsoft\ufeffbom', 100, 'zerowidthsoftbom'],
    ['line\u2028break\u2029para', 100, 'linebreakpara'],
    ['rlo \u202eevil', 100, 'rlo evil'],
    ['tag \u{E0041}chars', 100, 'tag chars'],
    ['family 👨\u200d👩\u200d👧 kept', 100, 'family 👨\u200d👩\u200d👧 kept'],
    ['می\u200cخواهم', 100, 'می\u200cخواهم'],
    ['😀😀😀', 2, '😀😀'],
    ['\u0000\u0001', 10, ''],
  ];
  for (const [page, max, kept] of table) assert.equal(clipPageText(page, max), kept, JSON.stringify(page));
});
