// Serialises async read-modify-write sections (chrome.storage has no
// transactions, and the worker handles events concurrently).

export function createMutex() {
  let tail = Promise.resolve();
  return function locked(fn) {
    const run = tail.then(() => fn());
    // Keep the chain going whether fn succeeded or failed.
    tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };
}
