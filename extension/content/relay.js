// Isolated-world content script: receives the events page.js relays from the
// page's world, bounds them, adds what the page's JSON-LD says about products
// and orders, and hands them to the service worker. Everything coming from the
// page is untrusted: any script on it can post the same messages.
(() => {
  'use strict';

  const TAG = '__optin_v1';
  const MAX_MESSAGE = 64 * 1024; // bytes of JSON per message
  const RATE = 20; // messages per second per tab (token bucket)
  const MAX_LD = 64 * 1024; // characters of JSON-LD text read per page

  let tokens = RATE;
  let last = Date.now();
  function allow() {
    const now = Date.now();
    tokens = Math.min(RATE, tokens + ((now - last) / 1000) * RATE);
    last = now;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  }

  function send(message) {
    let json;
    try {
      json = JSON.stringify(message);
    } catch {
      return;
    }
    if (json.length > MAX_MESSAGE || !allow()) return;
    try {
      chrome.runtime.sendMessage(JSON.parse(json)).catch(() => {});
    } catch {
      // The extension was reloaded or removed: this script is orphaned.
    }
  }

  // Parsed JSON-LD blocks of the page, bounded in total size.
  function readJsonLd() {
    const blocks = [];
    let size = 0;
    for (const el of document.querySelectorAll('script[type="application/ld+json"]')) {
      const text = el.textContent || '';
      size += text.length;
      if (size > MAX_LD) break;
      try {
        blocks.push(JSON.parse(text));
      } catch {
        // Broken markup is common; skip the block.
      }
    }
    return blocks;
  }

  const mentionsOrder = (blocks) => /"@type"\s*:\s*(\[[^\]]*)?"(https?:\/\/schema\.org\/)?Order"/.test(JSON.stringify(blocks));

  // page.js dispatches this event synchronously inside the page's push (see
  // there why), and the message leaves for the worker in the same call. Any
  // script on the page can dispatch it too: its text is parsed, bounded and
  // rate-limited here, and the worker checks everything again.
  const EVENT = 'optin:page-event';
  document.addEventListener(EVENT, (event) => {
    const text = event.detail;
    if (typeof text !== 'string' || text.length > MAX_MESSAGE) return;
    let d;
    try {
      d = JSON.parse(text);
    } catch {
      return;
    }
    if (!d || typeof d !== 'object' || d[TAG] !== true || d.type !== 'ecommerce') return;
    if (typeof d.event !== 'string' || !d.ecommerce || typeof d.ecommerce !== 'object') return;
    const ld = readJsonLd(); // what is parsed so far, while the page loads
    send({ type: 'ecommerce', event: d.event, ecommerce: d.ecommerce, ld });
  });

  // Order confirmation pages describe the order in JSON-LD. Look once the DOM
  // is parsed and again after load (some pages insert it late); the worker's
  // stable purchase ids make repeated reports harmless.
  let lastSent = '';
  function scanOrders() {
    const blocks = readJsonLd();
    if (!blocks.length || !mentionsOrder(blocks)) return;
    const key = JSON.stringify(blocks);
    if (key === lastSent) return;
    lastSent = key;
    send({ type: 'jsonld', ld: blocks });
  }
  document.addEventListener('DOMContentLoaded', scanOrders, { once: true });
  window.addEventListener('load', () => setTimeout(scanOrders, 500), { once: true });
})();
