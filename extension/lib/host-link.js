// The one connection to `optin native-host` and the delivery of the outbox
// over it (the protocol is in ../README.md, "Native messaging protocol").
//
// Nothing here touches a browser API: the worker passes in how to open the
// native port and how to read and shrink its outbox, so the node tests can
// drive this module with a fake host and check what happens on every kind of
// reply, on a disconnect and on a silent host.
//
// What it guarantees: a signal leaves the outbox only once the host has
// answered for it: stored (or already there), rejected by the agent (the reply
// names it by its index in the batch; the others are stored), or refused with
// its whole batch. A batch the host cannot store now (`retry: true`) stays and
// is sent again with backoff. A lost or silent connection fails the requests
// waiting on it and is opened again with backoff, after which the outbox is
// resent (signal ids make that idempotent in the agent).
//
// Refused and unavailable are different answers: refused (`ok: false`) means
// the input is wrong and sending it again cannot help, so it is dropped and
// counted; unavailable (`retry: true`) means try later. A batch that is never
// answered at all (the host dies or goes silent on it) is not retried forever:
// after two such attempts its signals go one at a time, so one poisonous signal
// cannot hold back the rest, and a signal sent `maxAttempts` times without an
// answer is dropped and counted.

import { LIMITS_FILE } from './limits.js';

/** Signals per native message (the host's limit, limits.json). */
export const BATCH = LIMITS_FILE.native_messaging.signals_per_message;

/** After this many unanswered attempts a batch's signals are sent one at a time. */
const SPLIT_AFTER = 2;

const DEFAULT_TIMING = Object.freeze({
  requestTimeoutMs: 15000,
  retryMs: 10000, // first wait after `retry: true`, doubling to maxBackoffMs
  firstBackoffMs: 1000,
  maxBackoffMs: 60000,
  maxAttempts: 5, // unanswered sends of one signal before it is dropped
});

/** Why an outbox signal left without being stored, as `onDropped` reports it. */
export const DROP = Object.freeze({
  REJECTED: 'rejected', // the agent named it as invalid; the rest of its batch was stored
  QUOTA: 'quota', // the agent's daily quota for extension signals is spent
  REFUSED: 'refused', // the host refused its whole message
  UNDELIVERABLE: 'undeliverable', // never answered after maxAttempts sends
});

/**
 * Options:
 * - `connectNative()`: opens the native port (a `runtime.Port`); may throw.
 * - `disconnectReason(port)`: why a port closed, read inside its onDisconnect.
 * - `version`: sent in `hello`.
 * - `outbox`: `{ ready, peek(n), remove(ids) }`; `ready` resolves once `peek`
 *   may be called, `peek(n)` gives the first n waiting signals as a new array
 *   (the batch must not change while it is on its way), `remove(ids)` deletes
 *   the signals with these ids (a Set).
 * - `toWire(signal)`: the signal as the host gets it (default: unchanged).
 * - `onStatus(state, detail, version)`: connection state for the popup
 *   (`connecting`, `running`, `stopped`, `disconnected`, `host missing`).
 * - `onError(message)`: a refusal the person should see.
 * - `onReady()`: runs after each successful `hello`, before the outbox is sent.
 * - `onDelivered(signals)`: the host acknowledged these as stored.
 * - `onDropped(reason, signals, detail)`: these left the outbox unstored; `reason`
 *   is one of DROP, `detail` the host's words.
 * - `timing`: overrides of DEFAULT_TIMING (the tests use short ones).
 */
export function createHostLink({
  connectNative,
  disconnectReason = (port) => port.error?.message,
  version,
  outbox,
  toWire = (signal) => signal,
  onStatus = async () => {},
  onError = () => {},
  onReady = async () => {},
  onDelivered = () => {},
  onDropped = () => {},
  timing = {},
}) {
  const t = { ...DEFAULT_TIMING, ...timing };
  let port = null; // the one long-lived connection
  let ready = false; // hello answered on this port
  let nextId = 1;
  const waiting = new Map(); // request id → {resolve, reject, timer}
  let backoffMs = t.firstBackoffMs;
  let reconnectTimer = null;
  let outboxLoaded = false;
  // A failed load is reported where `ready` is awaited, not here.
  outbox.ready.then(() => (outboxLoaded = true), () => {});

  let closed = false;

  function connect() {
    if (port || closed) return;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    let p;
    try {
      p = connectNative();
    } catch (e) {
      onStatus('host missing', e.message);
      scheduleReconnect();
      return;
    }
    port = p;
    ready = false;
    onStatus('connecting');
    p.onMessage.addListener(onHostMessage);
    p.onDisconnect.addListener(() => {
      const reason = disconnectReason(p) ?? 'the native host closed the connection';
      dropPort(p, reason);
      // "not found" and "forbidden" mean the host is not installed for this
      // browser profile (or its manifest is wrong): `optin browser install`.
      onStatus(/not found|forbidden/i.test(reason) ? 'host missing' : 'disconnected', reason);
      scheduleReconnect();
    });
    request({ type: 'hello', version })
      .then(async (reply) => {
        if (port !== p) return;
        if (!reply.ok) throw new Error(reply.error ?? 'hello refused');
        ready = true;
        backoffMs = t.firstBackoffMs;
        await onStatus(reply.agent === 'running' ? 'running' : 'stopped', '', String(reply.version ?? ''));
        await onReady();
        flush();
      })
      .catch((e) => {
        if (port === p) {
          onStatus('disconnected', e.message);
          p.disconnect();
          dropPort(p, e.message);
          scheduleReconnect();
        }
      });
  }

  // Forgets port `p` (if it is still the current one) and fails every request
  // waiting on it. A port closed from this side fires no onDisconnect, so the
  // callers that close it call this themselves.
  function dropPort(p, reason) {
    if (port !== p) return;
    port = null;
    ready = false;
    for (const [, w] of waiting) {
      clearTimeout(w.timer);
      w.reject(new Error(reason));
    }
    waiting.clear();
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, backoffMs);
    backoffMs = Math.min(backoffMs * 2, t.maxBackoffMs);
  }

  // When the slowest request still unanswered may be answered. The host answers
  // one message at a time, in order, so nothing sent after a slow request (a
  // site fetch) can be answered before it: each later request's wait starts
  // from there.
  let slowUntil = 0;

  /** Sends one request; resolves with the host's reply to it. */
  function request(msg, timeoutMs = t.requestTimeoutMs) {
    const now = Date.now();
    const wait = Math.max(timeoutMs, slowUntil - now + t.requestTimeoutMs);
    if (timeoutMs > t.requestTimeoutMs) slowUntil = Math.max(slowUntil, now + wait);
    return new Promise((resolve, reject) => {
      if (!port) {
        reject(new Error('not connected'));
        return;
      }
      const id = nextId++;
      const p = port;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error('the native host did not answer'));
        // A host that stops answering is restarted; unacknowledged signals stay queued.
        p.disconnect();
        dropPort(p, 'timeout');
        onStatus('disconnected', 'the native host did not answer');
        scheduleReconnect();
      }, wait);
      waiting.set(id, { resolve, reject, timer });
      try {
        p.postMessage({ ...msg, id });
      } catch (e) {
        clearTimeout(timer);
        waiting.delete(id);
        reject(e);
      }
    });
  }

  function onHostMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    let id = msg.id;
    if (id === undefined) {
      // A host that could not read a message's id (an older host, or a frame it
      // could not parse) answers without one. It answers in order, so this is the
      // answer to the oldest request still waiting; matching it there stops that
      // request from timing out and being sent again forever.
      const oldest = waiting.keys().next();
      if (oldest.done) return;
      id = oldest.value;
    }
    if (typeof id !== 'number') return;
    const w = waiting.get(id);
    if (!w) return;
    waiting.delete(id);
    clearTimeout(w.timer);
    w.resolve(msg);
  }

  /**
   * Asks the host again whether the agent runs (a `hello` on the open port) and
   * reports it, so the popup follows an agent started or stopped while the
   * browser stays connected. Connects first when there is no port.
   */
  async function checkAgent() {
    if (!port) {
      connect();
      return;
    }
    if (!ready) return; // the first hello is on its way
    const p = port;
    let reply;
    try {
      reply = await request({ type: 'hello', version });
    } catch {
      return; // the request's own failure handling reported it
    }
    if (port !== p || !reply.ok) return;
    await onStatus(reply.agent === 'running' ? 'running' : 'stopped', '', String(reply.version ?? ''));
    // An agent that came back takes what waited for it now, not at the next retry.
    if (reply.agent === 'running') flush();
  }

  /**
   * A request on behalf of the popup: never throws, and answers at once with
   * an error (while starting to connect) when there is no working connection.
   * `timeoutMs` is for a request the host takes long over (a site fetch).
   */
  async function call(msg, { timeoutMs } = {}) {
    if (!port || !ready) {
      connect();
      return { ok: false, error: 'not connected to the optin agent' };
    }
    try {
      return await request(msg, timeoutMs);
    } catch (e) {
      return { ok: false, error: e.message };
    }
  }

  let flushing = null;
  let flushAgain = false;
  let retryTimer = null;
  let retryDelayMs = t.retryMs;
  // Unanswered sends per signal id. In memory: a stopped worker forgets them,
  // which only means a few more attempts.
  const attempts = new Map();

  /** Sends the outbox in batches; safe to call any time, runs one loop at a time. */
  function flush() {
    flushAgain = true;
    if (!flushing) {
      flushing = flushLoop().finally(() => {
        flushing = null;
      });
    }
    return flushing;
  }

  // The indices the host rejected, with its reasons; entries that do not name a
  // signal of this batch are ignored (they cannot be matched to anything).
  function rejectedOf(reply, size) {
    const out = new Map();
    if (!Array.isArray(reply.rejected)) return out;
    for (const r of reply.rejected) {
      if (r && Number.isSafeInteger(r.index) && r.index >= 0 && r.index < size && !out.has(r.index)) {
        out.set(r.index, typeof r.error === 'string' ? r.error : 'no reason given');
      }
    }
    return out;
  }

  async function flushLoop() {
    while (flushAgain) {
      flushAgain = false;
      for (;;) {
        if (!port || !ready) return;
        // Only awaited before the outbox is loaded: once it is, a signal is
        // posted in the same step as the flush() that carries it.
        if (!outboxLoaded) await outbox.ready;
        const [head] = outbox.peek(1);
        if (!head) break;
        const split = (attempts.get(head.id) ?? 0) >= SPLIT_AFTER;
        const batch = outbox.peek(split ? 1 : BATCH);
        let reply;
        try {
          reply = await request({ type: 'signals', signals: batch.map(toWire) });
        } catch {
          // Disconnected or timed out: resent after reconnecting, a bounded number of times.
          const dead = [];
          for (const s of batch) {
            const n = (attempts.get(s.id) ?? 0) + 1;
            attempts.set(s.id, n);
            if (n >= t.maxAttempts) dead.push(s);
          }
          if (dead.length) {
            for (const s of dead) attempts.delete(s.id);
            onDropped(DROP.UNDELIVERABLE, dead, 'the native host never answered');
            onError(`${dead.length} signal(s) dropped: the native host never answered for them`);
            outbox.remove(new Set(dead.map((s) => s.id)));
          }
          return;
        }
        for (const s of batch) attempts.delete(s.id);
        if (!reply.ok && reply.retry === true) {
          // Unavailable: nothing is wrong with the batch, it cannot be stored now.
          await onStatus('stopped', String(reply.error ?? ''));
          clearTimeout(retryTimer);
          retryTimer = setTimeout(flush, retryDelayMs);
          retryDelayMs = Math.min(retryDelayMs * 2, Math.max(t.maxBackoffMs, t.retryMs));
          return;
        }
        retryDelayMs = t.retryMs;
        if (reply.ok) {
          const rejected = rejectedOf(reply, batch.length);
          const stored = batch.filter((_, i) => !rejected.has(i));
          const quota = [];
          const invalid = [];
          let firstError = '';
          for (const [i, error] of rejected) {
            if (error.startsWith('quota:')) quota.push(batch[i]);
            else {
              invalid.push(batch[i]);
              firstError ||= error;
            }
          }
          if (invalid.length) {
            onDropped(DROP.REJECTED, invalid, firstError);
            onError(`the agent refused ${invalid.length} signal(s): ${firstError}`);
          }
          if (quota.length) onDropped(DROP.QUOTA, quota, rejected.get(batch.indexOf(quota[0])));
          if (stored.length) onDelivered(stored);
        } else {
          // Refused whole (the message is wrong): dropped, so it cannot block the queue.
          const error = String(reply.error ?? 'no reason given');
          onDropped(DROP.REFUSED, batch, error);
          onError(`the agent refused ${batch.length} signal(s): ${error}`);
        }
        // Only now may the batch leave the outbox, and only the batch: signals
        // added while it was on its way are still waiting.
        outbox.remove(new Set(batch.map((s) => s.id)));
      }
    }
  }

  /** Closes the connection and cancels every timer (tests; nothing reconnects after). */
  function close() {
    clearTimeout(retryTimer);
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const p = port;
    if (p) {
      p.disconnect();
      dropPort(p, 'closed');
    }
    closed = true;
  }

  return {
    connect,
    close,
    checkAgent,
    flush,
    request,
    call,
    /** True while a port is open (answered or not). */
    get connected() {
      return port !== null;
    },
  };
}
