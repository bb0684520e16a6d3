// Writes an in-memory state back to storage (chrome.storage has no
// transactions, and the worker handles events concurrently).
//
// The worker keeps its state in memory and changes it in synchronous steps, so
// no change can lose another. After a step it calls `persist(keys)`. Writes
// never overlap, and each one reads the current values of the keys changed
// since the last write began, so the last write always holds the newest state
// and changes made while a write runs share the next one.

/**
 * `set(update)` stores an object of key → value and must copy the values when
 * it is called (chrome.storage does); `read(key)` gives a key's current value;
 * `onError(e)` is told about a failed write. Returns `persist(...keys)`, which
 * resolves once everything changed so far is stored and rejects when that
 * write failed (the keys are then written again with the next call).
 */
export function createWriter(set, read, onError = () => {}) {
  const dirty = new Set();
  let writing = null;

  async function loop() {
    try {
      while (dirty.size) {
        const update = {};
        for (const k of dirty) update[k] = read(k);
        dirty.clear();
        try {
          await set(update);
        } catch (e) {
          for (const k of Object.keys(update)) if (!dirty.has(k)) dirty.add(k);
          onError(e);
          throw e;
        }
      }
    } finally {
      writing = null;
    }
  }

  return function persist(...keys) {
    for (const k of keys) dirty.add(k);
    if (!writing) {
      writing = loop();
      // A caller that does not wait must not leave an unhandled rejection;
      // onError has reported it.
      writing.catch(() => {});
    }
    return writing;
  };
}
