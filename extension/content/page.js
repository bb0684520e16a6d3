// Runs in the page's own JavaScript world ("world": "MAIN") at document_start,
// because only there is the page's window.dataLayer visible. It sees GA4
// e-commerce events the page pushes (directly or through gtag) and relays a
// sanitised plain-JSON copy to relay.js (the isolated content script) as the
// text of a DOM event. Anything here can be forged by other scripts on the
// page; relay.js and the worker treat it as untrusted.
//
// Why a DOM event and not window.postMessage: dispatchEvent runs relay.js's
// listener at once, inside the page's push, so the event is on its way to the
// worker before the push returns. A posted message is delivered in a later
// task, which never runs when the page unloads first: a push in a `pagehide`
// handler, or just before `location.href = …`, was lost that way.
(() => {
  'use strict';

  const TAG = '__optin_v1';
  // The DOM event relay.js listens for; its detail is the message as JSON text
  // (text crosses from the page's world to the isolated one, objects do not).
  const EVENT = 'optin:page-event';
  // Only these events are relayed; everything else in the data layer stays in the page.
  const WANTED = new Set(['add_to_cart', 'remove_from_cart', 'view_cart', 'begin_checkout', 'purchase']);
  const MAX_DEPTH = 6;
  const MAX_KEYS = 64;
  const MAX_ARRAY = 200;
  const MAX_STRING = 1024;

  const toString = Object.prototype.toString;
  const isArguments = (v) => toString.call(v) === '[object Arguments]';

  // Copies a value into plain JSON data: no functions, DOM nodes, getters with
  // side effects or cycles survive (and the depth and size stay bounded).
  function sanitize(value, depth) {
    if (value === null) return null;
    switch (typeof value) {
      case 'string':
        return value.length > MAX_STRING ? value.slice(0, MAX_STRING) : value;
      case 'number':
        return Number.isFinite(value) ? value : undefined;
      case 'boolean':
        return value;
      case 'object':
        break;
      default:
        return undefined;
    }
    if (depth >= MAX_DEPTH) return undefined;
    if (typeof Node === 'function' && value instanceof Node) return undefined;
    if (Array.isArray(value)) {
      const out = [];
      for (let i = 0; i < value.length && i < MAX_ARRAY; i++) {
        const v = sanitize(value[i], depth + 1);
        out.push(v === undefined ? null : v);
      }
      return out;
    }
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null && !isArguments(value)) return undefined;
    const out = {};
    let n = 0;
    for (const key of Object.keys(value)) {
      if (n++ >= MAX_KEYS) break;
      let v;
      try {
        v = value[key];
      } catch {
        continue;
      }
      v = sanitize(v, depth + 1);
      if (v !== undefined) out[key] = v;
    }
    return out;
  }

  // A data-layer entry → {event, ecommerce} when it is a wanted GA4 event.
  // gtag('event', name, params) pushes its `arguments` object.
  function toEvent(entry) {
    if (!entry || typeof entry !== 'object') return null;
    if (isArguments(entry)) {
      if (entry[0] !== 'event' || !WANTED.has(entry[1])) return null;
      return { event: entry[1], ecommerce: entry[2] };
    }
    let name;
    try {
      name = entry.event;
    } catch {
      return null;
    }
    if (!WANTED.has(name)) return null;
    return { event: name, ecommerce: entry.ecommerce };
  }

  function report(entry) {
    const ev = toEvent(entry);
    if (!ev) return;
    try {
      const ecommerce = sanitize(ev.ecommerce, 0);
      if (!ecommerce || typeof ecommerce !== 'object') return;
      const detail = JSON.stringify({ [TAG]: true, type: 'ecommerce', event: ev.event, ecommerce });
      document.dispatchEvent(new CustomEvent(EVENT, { detail }));
    } catch {
      // A hostile object can still throw; never break the page's own push.
    }
  }

  // Tag managers replace dataLayer.push with their own function that calls the
  // push they found. Wrapping "the current push" once per assignment would then
  // report (or recurse) once per layer, so `push` becomes an accessor: every
  // function assigned to it is wrapped separately, and entries are reported only
  // when the outermost wrapped call returns (depth counter). Entries pushed
  // inside that call by the page's handlers are collected and reported too.
  let depth = 0;
  let collected = [];

  function wrap(fn) {
    return function optinPush(...args) {
      depth++;
      for (const a of args) if (!collected.includes(a)) collected.push(a);
      try {
        return fn.apply(this, args);
      } finally {
        depth--;
        if (depth === 0) {
          const batch = collected;
          collected = [];
          for (const a of batch) report(a);
        }
      }
    };
  }

  const hooked = new WeakSet();

  function hookArray(arr) {
    if (!Array.isArray(arr) || hooked.has(arr)) return;
    hooked.add(arr);
    // Entries pushed before this array was hooked (the backlog).
    for (const entry of Array.from(arr)) report(entry);
    let current = arr.push;
    let wrapped = wrap(current);
    try {
      Object.defineProperty(arr, 'push', {
        configurable: true,
        enumerable: false,
        get: () => wrapped,
        set: (fn) => {
          current = fn;
          wrapped = typeof fn === 'function' ? wrap(fn) : fn;
        },
      });
    } catch {
      // A frozen or exotic array: nothing to hook.
    }
  }

  // Pages do `window.dataLayer = window.dataLayer || []` and sometimes assign a
  // fresh array later; an accessor on window hooks every array assigned.
  let layer = window.dataLayer;
  try {
    Object.defineProperty(window, 'dataLayer', {
      configurable: true,
      enumerable: true,
      get: () => layer,
      set: (v) => {
        layer = v;
        hookArray(v);
      },
    });
  } catch {
    // Already defined non-configurable by the page: hook what is there.
  }
  hookArray(layer);
})();
