// The one connection to `optin native-host` and the delivery of the outbox
// over it (the protocol is in ../README.md, "Native messaging protocol").
//
// Nothing here touches a browser API: the worker passes in how to open the
// native port and how to read and shrink its outbox, so the node tests can
// drive this module with a fake host and check what happens on every kind of
// reply, on a disconnect and on a silent host.
//
// What it guarantees: a signal leaves the outbox only once the host has
// acknowledged its batch (or refused the batch for good); a batch the host
// cannot store now stays and is sent again; a lost or silent connection fails
// the requests waiting on it and is opened again with backoff, after which the
// whole outbox is resent (signal ids make that idempotent in the agent).

export const BATCH = 100; // signals per native message (the host's limit)

const DEFAULT_TIMING = Object.freeze({
  requestTimeoutMs: 15000,
  retryMs: 10000, // when the host answers `retry: true`
  firstBackoffMs: 1000,
  maxBackoffMs: 60000,
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
 * - `onDelivered(signals)`: the host acknowledged these.
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

  function connect() {
    if (port) return;
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

  /** Sends one request; resolves with the host's reply to it. */
  function request(msg) {
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
      }, t.requestTimeoutMs);
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
    if (!msg || typeof msg.id !== 'number') return;
    const w = waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id);
    clearTimeout(w.timer);
    w.resolve(msg);
  }

  /**
   * A request on behalf of the popup: never throws, and answers at once with
   * an error (while starting to connect) when there is no working connection.
   */
  async function call(msg) {
    if (!port || !ready) {
      connect();
      return { ok: false, error: 'not connected to the optin agent' };
    }
    try {
      return await request(msg);
    } catch (e) {
      return { ok: false, error: e.message };
    }
  }

  let flushing = null;
  let flushAgain = false;
  let retryTimer = null;

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

  async function flushLoop() {
    while (flushAgain) {
      flushAgain = false;
      for (;;) {
        if (!port || !ready) return;
        // Only awaited before the outbox is loaded: once it is, a signal is
        // posted in the same step as the flush() that carries it.
        if (!outboxLoaded) await outbox.ready;
        const batch = outbox.peek(BATCH);
        if (!batch.length) break;
        let reply;
        try {
          reply = await request({ type: 'signals', signals: batch.map(toWire) });
        } catch {
          return; // disconnected or timed out: resent after reconnecting
        }
        if (!reply.ok && reply.retry === true) {
          // The host could not store now (the agent is down): keep the batch.
          await onStatus('stopped', String(reply.error ?? ''));
          clearTimeout(retryTimer);
          retryTimer = setTimeout(flush, t.retryMs);
          return;
        }
        if (reply.ok) {
          onDelivered(batch);
        } else {
          // Refused whole (a bad signal): dropped, so it cannot block the queue.
          onError(`the agent refused ${batch.length} signal(s): ${reply.error ?? 'no reason given'}`);
        }
        // Only now may the batch leave the outbox, and only the batch: signals
        // added while it was on its way are still waiting.
        outbox.remove(new Set(batch.map((s) => s.id)));
      }
    }
  }

  return {
    connect,
    flush,
    request,
    call,
    /** True while a port is open (answered or not). */
    get connected() {
      return port !== null;
    },
  };
}
