// The connection to the native host and the outbox's delivery over it
// (lib/host-link.js), driven by a fake host that answers, refuses, asks for a
// retry, goes silent or drops the connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BATCH, DROP, createHostLink } from '../lib/host-link.js';

// A native port as the worker sees it. Messages from the host arrive
// asynchronously, as they do in a browser; a port closed from the worker's side
// fires no onDisconnect there, also as in a browser.
class FakePort {
  constructor(host) {
    this.host = host;
    this.sent = [];
    this.closed = false;
    this.closedByWorker = false;
    this.messageListeners = [];
    this.disconnectListeners = [];
    this.onMessage = { addListener: (f) => this.messageListeners.push(f) };
    this.onDisconnect = { addListener: (f) => this.disconnectListeners.push(f) };
  }

  postMessage(msg) {
    if (this.closed) throw new Error('Attempting to use a disconnected port object');
    const copy = structuredClone(msg);
    this.sent.push(copy);
    this.host.received(this, copy);
  }

  disconnect() {
    this.closed = true;
    this.closedByWorker = true;
  }

  // The host's side.
  reply(msg) {
    setImmediate(() => {
      if (!this.closed) for (const f of this.messageListeners) f(structuredClone(msg));
    });
  }

  drop(reason) {
    this.closed = true;
    if (reason) this.error = { message: reason };
    for (const f of this.disconnectListeners) f(this);
  }
}

// A host that answers `hello` by itself and hands every other request to
// `onRequest(msg, port)`, which by default leaves it unanswered (the test
// answers from `requests`).
function fakeHost({ agent = 'running' } = {}) {
  const host = {
    ports: [],
    requests: [],
    failConnects: 0,
    onRequest: null,
    connectNative() {
      if (host.failConnects > 0) {
        host.failConnects--;
        throw new Error('Specified native messaging host not found.');
      }
      const p = new FakePort(host);
      host.ports.push(p);
      return p;
    },
    received(port, msg) {
      if (msg.type === 'hello') port.reply({ id: msg.id, ok: true, agent, version: '9.9.9' });
      else if (host.onRequest) host.onRequest(msg, port);
      else host.requests.push({ msg, port });
    },
    get port() {
      return host.ports.at(-1);
    },
  };
  return host;
}

// An outbox of `n` signals in memory, shrunk only through `remove`.
function fakeOutbox(n) {
  const box = {
    list: Array.from({ length: n }, (_, i) => ({ id: `s-${i}`, kind: 'search' })),
    removed: [],
    ready: Promise.resolve(),
    peek: (count) => box.list.slice(0, count),
    remove(ids) {
      box.removed.push([...ids]);
      box.list = box.list.filter((s) => !ids.has(s.id));
    },
  };
  return box;
}

// Timings short enough for a test; the request timeout stays long unless a
// test is about it, so a slow machine cannot make a reply look late.
const QUICK = { requestTimeoutMs: 5000, retryMs: 20, firstBackoffMs: 5, maxBackoffMs: 20 };

function makeLink(host, outbox, timing = {}) {
  const log = { status: [], errors: [], delivered: [], dropped: [] };
  const link = createHostLink({
    connectNative: host.connectNative,
    version: '0.1.0',
    outbox,
    onStatus: async (state, detail = '') => log.status.push(detail ? `${state}: ${detail}` : state),
    onError: (message) => log.errors.push(message),
    onDelivered: (signals) => log.delivered.push(signals.map((s) => s.id)),
    onDropped: (reason, signals) => log.dropped.push([reason, signals.map((s) => s.id)]),
    timing: { ...QUICK, ...timing },
  });
  return { link, log };
}

async function until(condition, what, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('replies are matched to their requests by id, in any order', async () => {
  const host = fakeHost();
  const { link } = makeLink(host, fakeOutbox(0));
  link.connect();
  await until(() => host.port.sent.length === 1, 'hello');
  assert.deepEqual(host.port.sent[0], { type: 'hello', version: '0.1.0', id: 1 });
  const grants = link.request({ type: 'grants' });
  const revoke = link.request({ type: 'revoke', grant_id: 'g_1' });
  await until(() => host.requests.length === 2, 'both requests');
  const [g, r] = host.requests;
  assert.notEqual(g.msg.id, r.msg.id);
  // Answered backwards, with a stray reply first: each caller gets its own.
  host.port.reply({ id: 999, ok: true, stray: true });
  host.port.reply({ id: r.msg.id, ok: true, which: 'revoke' });
  host.port.reply({ id: g.msg.id, ok: true, which: 'grants' });
  assert.equal((await grants).which, 'grants');
  assert.equal((await revoke).which, 'revoke');
});

test('the outbox goes out in batches of 100 once hello is answered', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(BATCH + 30);
  host.onRequest = (msg, port) => port.reply({ id: msg.id, ok: true, stored: msg.signals.length, duplicates: 0 });
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => outbox.list.length === 0, 'the outbox to empty');
  const batches = host.port.sent.filter((m) => m.type === 'signals').map((m) => m.signals.length);
  assert.deepEqual(batches, [BATCH, 30]);
  assert.deepEqual(log.status, ['connecting', 'running']);
  assert.deepEqual(log.delivered.map((ids) => ids.length), [BATCH, 30]);
});

test('acks remove exactly the acknowledged signals, not those added meanwhile', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(3);
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => host.requests.length === 1, 'the first batch');
  const first = host.requests[0];
  assert.deepEqual(first.msg.signals.map((s) => s.id), ['s-0', 's-1', 's-2']);
  // Captured while the batch is on its way.
  outbox.list.push({ id: 'late', kind: 'search' });
  link.flush();
  first.port.reply({ id: first.msg.id, ok: true, stored: 3, duplicates: 0 });
  await until(() => host.requests.length === 2, 'the second batch');
  assert.deepEqual(outbox.removed, [['s-0', 's-1', 's-2']]);
  assert.deepEqual(outbox.list.map((s) => s.id), ['late']);
  const second = host.requests[1];
  assert.deepEqual(second.msg.signals.map((s) => s.id), ['late']);
  second.port.reply({ id: second.msg.id, ok: true, stored: 1, duplicates: 0 });
  await until(() => outbox.list.length === 0, 'the late signal to leave');
  assert.deepEqual(log.delivered, [['s-0', 's-1', 's-2'], ['late']]);
});

test('retry: true keeps the batch and sends it again later', async () => {
  const host = fakeHost({ agent: 'stopped' });
  const outbox = fakeOutbox(2);
  let answers = 0;
  host.onRequest = (msg, port) => {
    answers++;
    if (answers < 3) port.reply({ id: msg.id, ok: false, retry: true, error: 'the agent is not running' });
    else port.reply({ id: msg.id, ok: true, stored: 2, duplicates: 0 });
  };
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => answers === 1, 'the first attempt');
  await until(() => log.status.includes('stopped: the agent is not running'), 'the stopped status');
  assert.equal(outbox.list.length, 2, 'the batch stays after a retry answer');
  assert.deepEqual(outbox.removed, []);
  assert.deepEqual(log.errors, [], 'a retry is no refusal');
  await until(() => outbox.list.length === 0, 'the third attempt to store it');
  assert.equal(answers, 3);
  assert.equal(host.ports.length, 1, 'retried on the same connection');
  const sent = host.port.sent.filter((m) => m.type === 'signals');
  assert.ok(sent.every((m) => m.signals.map((s) => s.id).join() === 's-0,s-1'));
});

test('ok: false without retry drops the batch and records the error', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(BATCH + 1);
  let calls = 0;
  host.onRequest = (msg, port) => {
    calls++;
    if (calls === 1) port.reply({ id: msg.id, ok: false, error: 'signal 7: `at` is not an RFC 3339 timestamp' });
    else port.reply({ id: msg.id, ok: true, stored: msg.signals.length, duplicates: 0 });
  };
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => outbox.list.length === 0, 'the outbox to empty');
  assert.deepEqual(log.errors, [`the agent refused ${BATCH} signal(s): signal 7: \`at\` is not an RFC 3339 timestamp`]);
  assert.equal(outbox.removed[0].length, BATCH, 'the refused batch is dropped whole');
  assert.deepEqual(log.delivered, [[`s-${BATCH}`]], 'the next batch still goes through');
});

test('a refusal without a reason still says so', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(1);
  host.onRequest = (msg, port) => port.reply({ id: msg.id, ok: false });
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => outbox.list.length === 0, 'the batch to be dropped');
  assert.deepEqual(log.errors, ['the agent refused 1 signal(s): no reason given']);
});

test('a disconnect fails the waiting request, reconnects with backoff and resends', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(2);
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => host.requests.length === 1, 'the batch');
  const grants = link.request({ type: 'grants' });
  await until(() => host.requests.length === 2, 'the grants request');
  const first = host.port;
  first.drop('Native host has exited.');
  await assert.rejects(grants, /Native host has exited/);
  assert.equal(link.connected, false);
  assert.ok(log.status.includes('disconnected: Native host has exited.'));
  assert.equal(outbox.list.length, 2, 'nothing acknowledged, nothing removed');
  assert.deepEqual(await link.call({ type: 'grants' }), { ok: false, error: 'not connected to the optin agent' });
  // call() started a connection at once; either way a new port resends the batch.
  await until(() => host.ports.length === 2 && host.requests.length === 3, 'the resend on a new port');
  const resent = host.requests[2];
  assert.equal(resent.port, host.ports[1]);
  assert.deepEqual(resent.msg.signals.map((s) => s.id), ['s-0', 's-1']);
  resent.port.reply({ id: resent.msg.id, ok: true, stored: 2, duplicates: 0 });
  await until(() => outbox.list.length === 0, 'the outbox to empty');
  assert.equal(host.ports.length, 2);
});

test('a dropped connection is opened again by itself', async () => {
  const host = fakeHost();
  const { link, log } = makeLink(host, fakeOutbox(0));
  link.connect();
  await until(() => log.status.includes('running'), 'the first hello');
  host.port.drop();
  assert.ok(log.status.includes('disconnected: the native host closed the connection'));
  await until(() => host.ports.length === 2 && log.status.filter((s) => s === 'running').length === 2, 'a second hello');
});

test('a host that does not answer in time is disconnected and reconnected', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(0);
  let silent = true;
  const signalPorts = [];
  host.onRequest = (msg, port) => {
    if (msg.type === 'signals') signalPorts.push(port);
    if (!silent) port.reply({ id: msg.id, ok: true, stored: msg.signals.length, duplicates: 0 });
  };
  const { link, log } = makeLink(host, outbox, { requestTimeoutMs: 40 });
  link.connect();
  await until(() => log.status.includes('running'), 'hello');
  await assert.rejects(link.request({ type: 'grants' }), /did not answer/);
  assert.ok(host.ports[0].closedByWorker, 'the silent port is closed');
  assert.ok(log.status.includes('disconnected: the native host did not answer'));
  // A batch the host never answers stays until a later connection acknowledges it.
  outbox.list.push({ id: 'x', kind: 'search' });
  link.flush();
  await until(() => signalPorts.length > 0 && signalPorts[0].closedByWorker, 'the batch to time out');
  assert.deepEqual(outbox.list.map((s) => s.id), ['x']);
  silent = false;
  await until(() => outbox.list.length === 0, 'the batch on a new connection');
  assert.ok(signalPorts.length >= 2);
  assert.ok(host.ports.length >= 3);
  assert.deepEqual(outbox.removed, [['x']]);
});

test('a missing host is reported and tried again', async () => {
  const host = fakeHost();
  host.failConnects = 2;
  const { link, log } = makeLink(host, fakeOutbox(0));
  link.connect();
  assert.deepEqual(log.status, ['host missing: Specified native messaging host not found.']);
  await until(() => log.status.includes('running'), 'the third attempt');
  assert.equal(log.status.filter((s) => s.startsWith('host missing')).length, 2);
});

test('a host that refuses hello is disconnected', async () => {
  const host = fakeHost();
  let refuse = true;
  host.received = (port, msg) => {
    if (msg.type !== 'hello') return;
    if (refuse) port.reply({ id: msg.id, ok: false, error: 'unsupported version' });
    else port.reply({ id: msg.id, ok: true, agent: 'running' });
    refuse = false;
  };
  const { link, log } = makeLink(host, fakeOutbox(0));
  link.connect();
  await until(() => log.status.includes('disconnected: unsupported version'), 'the refusal');
  assert.ok(host.ports[0].closedByWorker);
  await until(() => log.status.includes('running'), 'the second hello');
});

test('nothing is sent before hello is answered, and popup calls wait for it too', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(1);
  let helloPort = null;
  let helloId = null;
  host.received = (port, msg) => {
    if (msg.type === 'hello') {
      helloPort = port;
      helloId = msg.id;
    } else host.requests.push({ msg, port });
  };
  const { link } = makeLink(host, outbox);
  link.connect();
  await link.flush();
  assert.deepEqual(await link.call({ type: 'grants' }), { ok: false, error: 'not connected to the optin agent' });
  assert.equal(host.requests.length, 0);
  helloPort.reply({ id: helloId, ok: true, agent: 'running' });
  await until(() => host.requests.length === 1, 'the batch after hello');
  const { msg, port } = host.requests[0];
  port.reply({ id: msg.id, ok: true, stored: 1, duplicates: 0 });
  await until(() => outbox.list.length === 0, 'the ack');
});

test('toWire shapes what is sent; the outbox keeps its own copy and ids', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(1);
  host.onRequest = (msg, port) => port.reply({ id: msg.id, ok: true, stored: 1, duplicates: 0 });
  const link = createHostLink({
    connectNative: host.connectNative,
    version: '0.1.0',
    outbox,
    toWire: ({ id, ...rest }) => ({ ...rest, wire: true }),
    timing: QUICK,
  });
  link.connect();
  await until(() => outbox.list.length === 0, 'the ack');
  const [sent] = host.port.sent.filter((m) => m.type === 'signals');
  assert.deepEqual(sent.signals, [{ kind: 'search', wire: true }]);
  assert.deepEqual(outbox.removed, [['s-0']]);
});

test('a partial acceptance stores the good signals and drops only the rejected ones, quota apart', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(5);
  host.onRequest = (msg, port) =>
    port.reply({
      id: msg.id,
      ok: true,
      stored: 2,
      duplicates: 0,
      rejected: [
        { index: 1, id: 's-1', error: 'items[0].name: contains control or bidirectional formatting characters' },
        { index: 3, id: 's-3', error: 'quota: 2000 extension signals a day' },
        { index: 4, error: 'quota: 2000 extension signals a day' },
        { index: 99, error: 'names no signal of the batch: ignored' },
      ],
    });
  const { link, log } = makeLink(host, outbox);
  link.connect();
  await until(() => outbox.list.length === 0, 'the outbox to empty');
  assert.deepEqual(log.delivered, [['s-0', 's-2']]);
  assert.deepEqual(log.dropped, [
    [DROP.REJECTED, ['s-1']],
    [DROP.QUOTA, ['s-3', 's-4']],
  ]);
  assert.deepEqual(log.errors, ['the agent refused 1 signal(s): items[0].name: contains control or bidirectional formatting characters']);
  assert.equal(host.port.sent.filter((m) => m.type === 'signals').length, 1, 'nothing is sent twice');
});

test('a reply without an id answers the oldest request waiting, which is then not resent', async () => {
  // An older host cannot read a frame with a lone surrogate and answers without an id.
  const host = fakeHost();
  const outbox = fakeOutbox(1);
  host.onRequest = (msg, port) => {
    if (msg.signals.some((s) => s.id === 's-0')) port.reply({ ok: false, error: 'message is not JSON' });
    else port.reply({ id: msg.id, ok: true, stored: msg.signals.length, duplicates: 0 });
  };
  const { link, log } = makeLink(host, outbox, { requestTimeoutMs: 200 });
  link.connect();
  await until(() => outbox.list.length === 0, 'the refused batch to leave');
  outbox.list.push({ id: 'next', kind: 'search' });
  link.flush();
  await until(() => log.delivered.length === 1, 'the next signal');
  assert.deepEqual(log.dropped, [[DROP.REFUSED, ['s-0']]]);
  assert.deepEqual(log.delivered, [['next']]);
  assert.equal(host.ports.length, 1, 'no timeout, no reconnect');
  assert.equal(host.port.sent.filter((m) => m.type === 'signals' && m.signals[0].id === 's-0').length, 1);
});

test('a signal the host dies on is isolated and dropped after a bounded number of attempts', async () => {
  const host = fakeHost();
  const outbox = fakeOutbox(4);
  host.onRequest = (msg, port) => {
    if (msg.signals.some((s) => s.id === 's-2')) port.drop('Native host has exited.');
    else port.reply({ id: msg.id, ok: true, stored: msg.signals.length, duplicates: 0 });
  };
  const { link, log } = makeLink(host, outbox, { maxAttempts: 4 });
  link.connect();
  await until(() => outbox.list.length === 0, 'the outbox to empty', 5000);
  assert.deepEqual(log.delivered.flat().sort(), ['s-0', 's-1', 's-3']);
  assert.deepEqual(log.dropped, [[DROP.UNDELIVERABLE, ['s-2']]]);
  const sends = host.ports.flatMap((p) => p.sent).filter((m) => m.type === 'signals' && m.signals.some((s) => s.id === 's-2'));
  assert.equal(sends.length, 4, 'sent exactly maxAttempts times');
});

test('retry: true backs off, doubling the wait', async () => {
  const host = fakeHost({ agent: 'stopped' });
  const outbox = fakeOutbox(1);
  const times = [];
  host.onRequest = (msg, port) => {
    times.push(Date.now());
    port.reply({ id: msg.id, ok: false, retry: true, error: 'the agent is not running' });
  };
  const { link } = makeLink(host, outbox, { retryMs: 40, maxBackoffMs: 1000 });
  link.connect();
  await until(() => times.length === 4, 'four attempts');
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.ok(gaps[1] >= 75 && gaps[2] >= 155, `waits double: ${gaps}`);
  assert.equal(outbox.list.length, 1, 'kept while the agent is unavailable');
  link.close();
});

test('checkAgent asks the host again, so the status follows the agent', async () => {
  const host = fakeHost();
  let agent = 'stopped';
  host.received = (port, msg) => {
    if (msg.type === 'hello') port.reply({ id: msg.id, ok: true, agent, version: '9.9.9' });
  };
  const { link, log } = makeLink(host, fakeOutbox(0));
  link.connect();
  await until(() => log.status.includes('stopped'), 'the first hello');
  agent = 'running';
  await link.checkAgent();
  assert.equal(log.status.at(-1), 'running');
  assert.equal(host.ports.length, 1, 'on the same connection');
});

test('a slow request (a site fetch) gets its own time, and what is sent behind it waits for it', async () => {
  const host = fakeHost();
  const { link, log } = makeLink(host, fakeOutbox(0), { requestTimeoutMs: 40 });
  link.connect();
  await until(() => log.status.includes('running'), 'hello');
  // The host takes 120 ms over the fetch and answers in order, as the real one does.
  const slow = link.call({ type: 'site-requests', domain: 'shop.example' }, { timeoutMs: 200 });
  const behind = link.call({ type: 'grants' });
  await until(() => host.requests.length === 2, 'both requests');
  await new Promise((r) => setTimeout(r, 120));
  const [fetch, grants] = host.requests;
  fetch.port.reply({ id: fetch.msg.id, ok: true, requests: [], refused: [] });
  grants.port.reply({ id: grants.msg.id, ok: true, grants: [] });
  assert.deepEqual(await slow, { id: fetch.msg.id, ok: true, requests: [], refused: [] });
  assert.deepEqual(await behind, { id: grants.msg.id, ok: true, grants: [] });
  assert.ok(!host.ports[0].closedByWorker, 'the connection stayed up');
  // A request that is never answered still times out.
  await assert.rejects(link.request({ type: 'grants' }), /did not answer/);
});
