import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createWriter } from '../lib/writer.js';

// A storage that copies values when set() is called, as chrome.storage does,
// and finishes each write only when the test says so.
function fakeStore() {
  const data = {};
  const writes = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let failNext = false;
  const set = (update) => {
    const copy = structuredClone(update);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    return new Promise((resolve, reject) => {
      const fail = failNext;
      failNext = false;
      writes.push({
        keys: Object.keys(copy).sort(),
        finish() {
          inFlight--;
          if (fail) return reject(new Error('disk full'));
          Object.assign(data, copy);
          resolve();
        },
      });
    });
  };
  return { data, writes, set, maxInFlight: () => maxInFlight, failNext: () => (failNext = true) };
}

const tick = () => new Promise((r) => setImmediate(r));

test('writes never overlap; changes made during a write share the next one; the store ends with the newest state', async () => {
  const store = fakeStore();
  const state = { outbox: [], recent: [] };
  const persist = createWriter(store.set, (k) => state[k]);
  state.outbox.push('a');
  const first = persist('outbox');
  for (const x of ['b', 'c', 'd']) {
    state.outbox.push(x);
    state.recent.unshift(x);
    persist('outbox', 'recent');
  }
  state.outbox = state.outbox.filter((x) => x !== 'a'); // 'a' acknowledged
  const last = persist('outbox');
  assert.equal(store.writes.length, 1, 'the second write waits for the first');
  assert.deepEqual(store.writes[0].keys, ['outbox']);
  store.writes[0].finish();
  await tick();
  assert.equal(store.writes.length, 2, 'everything changed meanwhile goes into one write');
  assert.deepEqual(store.writes[1].keys, ['outbox', 'recent']);
  store.writes[1].finish();
  await Promise.all([first, last]);
  assert.equal(store.maxInFlight(), 1);
  assert.deepEqual(store.data, { outbox: ['b', 'c', 'd'], recent: ['d', 'c', 'b'] });
});

test('persist resolves only once its change is stored', async () => {
  const store = fakeStore();
  const state = { settings: { enabled: true } };
  const persist = createWriter(store.set, (k) => state[k]);
  let done = false;
  persist('settings').then(() => (done = true));
  await tick();
  assert.equal(done, false);
  store.writes[0].finish();
  await tick();
  assert.equal(done, true);
  assert.deepEqual(store.data.settings, { enabled: true });
});

test('a failed write is reported, rejects its waiters and is written again with the next change', async () => {
  const store = fakeStore();
  const state = { outbox: ['a'], carts: {} };
  const errors = [];
  const persist = createWriter(store.set, (k) => state[k], (e) => errors.push(e.message));
  store.failNext();
  const failed = persist('outbox');
  store.writes[0].finish();
  await assert.rejects(failed, /disk full/);
  assert.deepEqual(errors, ['disk full']);
  assert.deepEqual(store.data, {});
  state.carts.x = 1;
  const retried = persist('carts');
  store.writes[1].finish();
  await retried;
  assert.deepEqual(store.writes[1].keys, ['carts', 'outbox']);
  assert.deepEqual(store.data, { outbox: ['a'], carts: { x: 1 } });
});
