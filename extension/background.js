// The extension's service worker: turns navigations and page events into
// signals, applies the person's settings, keeps the outbox in chrome.storage
// and has lib/host-link.js deliver it to `optin native-host` over native
// messaging.
//
// MV3 workers are stopped when idle and lose their memory, so:
//  - every listener is registered synchronously at the top level (below);
//  - all state that matters lives in chrome.storage.local. The worker reads it
//    once when it starts and then keeps the truth in memory (`state`): every
//    change is a synchronous step on `state` (so concurrent events cannot lose
//    updates) followed by `persist(keys)`, which writes the changed keys in
//    order, one write at a time, coalescing changes made while a write runs;
//  - a captured signal is written to the outbox and sent to the host at the
//    same time, and leaves the outbox only once the host has acknowledged it
//    (or refused it for good). A worker stopped in between loses nothing: the
//    signal is in storage, in the agent, or both;
//  - the outbox is resent on every start and reconnect; signal ids make resends
//    idempotent on the agent's side.
//
// Page data is untrusted (any script on a page can forge its events), so
// before a signal is queued it is checked against the agent's rules
// (lib/validate.js) and against the budgets of limits.json (lib/budget.js):
// per site per hour, per day, and one cart snapshot per merchant per interval.
// What is dropped, here or by the agent, is counted for the popup (`drops`).

import { matchSearch, parseRules } from './lib/engines.js';
import { MASKED, buildCart, buildPurchase, buildSearch, maskPattern, maskSignal, summarize, wireSignal } from './lib/signals.js';
import { CART_EVENTS, PURCHASE_EVENT, ga4Currency, ga4Items } from './lib/ga4.js';
import { updateCart } from './lib/cart.js';
import { flattenNodes, ordersFrom, productsFrom } from './lib/jsonld.js';
import { blockReason, normalizeSettings, normalizeSite } from './lib/settings.js';
import { createWriter } from './lib/writer.js';
import { createHostLink, DROP } from './lib/host-link.js';
import { signalProblem } from './lib/validate.js';
import { parseTopics, signalTopics } from './lib/sensitive.js';
import { LIMITS_FILE } from './lib/limits.js';
import { cartChange, countDrop, dueCarts, normalizeLedger, nextDue, siteOf, spend } from './lib/budget.js';
import { fromPopup, siteOfUrl } from './lib/site-requests.js';

const HOST_NAME = 'dev.optin.agent';
const VERSION = chrome.runtime.getManifest().version;
const OUTBOX_MAX = 10000; // beyond this the oldest unsent signals are dropped
const RECENT_MAX = 20;
const SEARCH_DEDUPE_MS = 5000;
const PURCHASES_REMEMBERED = 500;
const MAX_MESSAGE_CHARS = 64 * 1024;
const TICK_ALARM = 'optin-tick';
const BUDGETS = LIMITS_FILE.extension;
const CART_INTERVAL_MS = BUDGETS.cart_snapshot_seconds * 1000;
// The host bounds a site fetch at 30 s (SPEC.md, native messaging); a little
// more here, so its own answer (a timeout named as such) arrives first.
const SITE_FETCH_TIMEOUT_MS = 40000;

const store = chrome.storage.local;

// ---- listeners (top level, synchronous) -------------------------------------

chrome.webNavigation.onCommitted.addListener((d) => onNavigation(d));
// Single-page searches (results replaced with history.pushState) commit nothing.
chrome.webNavigation.onHistoryStateUpdated.addListener((d) => onNavigation(d));
chrome.runtime.onMessage.addListener(onMessage);
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === TICK_ALARM) tick();
});
// Starting the worker is what matters on these events; start() below runs on
// every worker start anyway.
chrome.runtime.onStartup.addListener(() => {});
chrome.runtime.onInstalled.addListener(() => {});

// start() is called at the end of this module, once every module-level
// binding it uses is initialised.
function start() {
  // A safety net: promotes reviewed signals and retries delivery even when
  // nothing else wakes the worker. 30 s is the shortest period Chrome allows.
  chrome.alarms.create(TICK_ALARM, { periodInMinutes: 0.5 });
  link.connect();
}

async function tick() {
  await releaseDueCarts();
  await promotePending();
  // Asks the host again whether the agent runs, so the status stays true
  // while the connection stays open; connects when there is none.
  link.checkAgent();
  link.flush();
}

// ---- state and storage ------------------------------------------------------

// Keys of chrome.storage.local that only this worker writes, mirrored in `state`.
// (`status` and `lastError` are written directly: only the popup reads them.)
const STATE_KEYS = ['settings', 'carts', 'searchSeen', 'purchasesSeen', 'recent', 'pending', 'outbox', 'ledger', 'cartGates', 'drops'];

let state = null;
const stateReady = store.get(STATE_KEYS).then((raw) => {
  state = {
    settings: normalizeSettings(raw.settings),
    carts: raw.carts ?? {},
    searchSeen: raw.searchSeen ?? {},
    purchasesSeen: raw.purchasesSeen ?? [],
    recent: raw.recent ?? [],
    pending: raw.pending ?? [],
    outbox: raw.outbox ?? [],
    // Budgets spent (lib/budget.js), cart snapshots held back, drop counters.
    ledger: normalizeLedger(raw.ledger),
    cartGates: raw.cartGates && typeof raw.cartGates === 'object' ? raw.cartGates : {},
    drops: raw.drops ?? null,
  };
  // Signals queued by an older version, or changed since, that the agent
  // would refuse: dropped now rather than sent.
  const keep = state.outbox.filter((s) => !signalProblem(wireSignal(s)));
  if (keep.length !== state.outbox.length) {
    drop('invalid', state.outbox.length - keep.length);
    state.outbox = keep;
    persist('outbox', 'drops');
  }
  // Held cart snapshots whose interval closed while the worker was stopped.
  setTimeout(releaseDueCarts, 0);
});

// Writes the named keys of `state`, one write at a time (lib/writer.js);
// resolves once everything changed so far is stored.
const persist = createWriter(
  (update) => store.set(update),
  (key) => state[key],
  (e) => setLastError('storage: ' + e.message),
);

async function getSettings() {
  await stateReady;
  return state.settings;
}

// The last status written, so the hello the popup asks for every few seconds
// writes (and re-renders the popup) only when something changed.
let lastStatusKey = '';

async function setStatus(state, detail = '', version = '') {
  const key = JSON.stringify([state, detail, version]);
  if (key === lastStatusKey) return;
  lastStatusKey = key;
  await store.set({ status: { state, detail, version, at: new Date().toISOString() } });
}

/** Counts `n` signals dropped for `reason` (for the popup); written with the caller's changes. */
function drop(reason, n = 1) {
  state.drops = countDrop(state.drops, reason, n, Date.now());
}

async function setLastError(message) {
  await store.set({ lastError: { message: String(message).slice(0, 500), at: new Date().toISOString() } });
}

// ---- capture -----------------------------------------------------------------

const enginesReady = fetch(chrome.runtime.getURL('engines.json'))
  .then((r) => r.json())
  .then(parseRules)
  .catch((e) => {
    setLastError('engines.json: ' + e.message);
    return [];
  });

// The sensitive topics, to label what the popup lists; the agent decides what is shared.
// Until the file is read (or if it cannot be), signals are listed without a label.
let sensitiveTable = null;
fetch(chrome.runtime.getURL('sensitive-topics.json'))
  .then((r) => r.json())
  .then((json) => {
    sensitiveTable = parseTopics(json);
  })
  .catch((e) => setLastError('sensitive-topics.json: ' + e.message));

async function tabIncognito(tabId) {
  try {
    const tab = await chrome.tabs.get(tabId);
    return tab.incognito === true;
  } catch {
    return null; // not a real tab (prerendering, closed): capture nothing
  }
}

async function onNavigation(d) {
  if (d.frameId !== 0 || d.tabId < 0) return;
  // A reload or back/forward shows a search already made; it is not a new one.
  if (d.transitionType === 'reload') return;
  if ((d.transitionQualifiers ?? []).includes('forward_back')) return;
  const m = matchSearch(d.url, await enginesReady);
  if (!m) return;
  const incognito = await tabIncognito(d.tabId);
  if (incognito === null) return;
  const host = new URL(d.url).hostname;
  const settings = await getSettings();
  if (blockReason(settings, { kind: 'search', host, incognito })) return;
  const signal = maskSignal(buildSearch({ query: m.query, engine: m.engine }), settings.masked);
  if (!signal) return;
  // The same query on the same engine within a few seconds is one search
  // (a commit followed by a pushState, a double submit).
  const { searchSeen } = state;
  const now = Date.now();
  for (const [k, t] of Object.entries(searchSeen)) if (now - t > SEARCH_DEDUPE_MS) delete searchSeen[k];
  const key = m.engine + '|' + m.query.toLowerCase();
  if (searchSeen[key]) return;
  searchSeen[key] = now;
  enqueue(signal, settings, 'searchSeen');
}

// Where a content-script message comes from: the top frame of a normal web tab.
function pageOrigin(sender) {
  if (!sender.tab || sender.frameId !== 0) return null;
  let url;
  try {
    url = new URL(sender.url ?? sender.tab.url);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  return { host: url.hostname, pageKey: url.origin + url.pathname + url.search, incognito: sender.tab.incognito === true };
}

async function onEcommerce(msg, origin) {
  const { event, ecommerce } = msg;
  if (!CART_EVENTS.has(event) && event !== PURCHASE_EVENT) return;
  const settings = await getSettings();
  // Checked without a kind first: paused, excluded and incognito mean the cart
  // state is not touched either.
  if (blockReason(settings, { host: origin.host, incognito: origin.incognito })) return;
  const nodes = flattenNodes(Array.isArray(msg.ld) ? msg.ld : []);
  const items = ga4Items(ecommerce, productsFrom(nodes));
  const currency = ga4Currency(ecommerce);
  if (!currency) return; // a price without a currency means nothing
  if (event === PURCHASE_EVENT) {
    await onPurchase(settings, origin, {
      currency,
      total: ecommerce.value,
      orderId: ecommerce.transaction_id,
      items,
    });
    return;
  }
  if (!settings.kinds.cart) return;
  const { carts } = state;
  const cart = updateCart(carts[origin.host], event, currency, items);
  // A cart the agent would refuse (too large a line, say) is not adopted: the
  // event is dropped and the cart stays as it was, so one forged event cannot
  // spoil every later snapshot of this merchant.
  if (cart.items.length) {
    const candidate = buildCart({ merchant: origin.host, currency, items: cart.items });
    const problem = candidate && signalProblem(maskSignal(candidate, settings.masked) ?? candidate);
    if (problem) {
      drop('invalid');
      persist('drops');
      console.warn('optin: dropped a cart event the agent would refuse:', problem);
      return;
    }
  }
  if (cart.items.length) carts[origin.host] = cart;
  else delete carts[origin.host];
  // An emptied cart produces no signal: a cart signal always has items.
  if (!cart.items.length) {
    persist('carts');
    return;
  }
  // One snapshot per merchant per interval: the first change after a quiet
  // interval goes at once, later ones are held and the latest state is sent
  // when the interval closes (releaseDueCarts).
  if (cartChange(state.cartGates, origin.host, Date.now(), CART_INTERVAL_MS) === 'hold') {
    persist('carts', 'cartGates');
    scheduleDueCarts();
    return;
  }
  const signal = maskSignal(buildCart({ merchant: origin.host, currency, items: cart.items }), settings.masked);
  if (signal) enqueue(signal, settings, 'carts', 'cartGates');
  else persist('carts', 'cartGates');
}

let dueTimer = null;

// A timer for the next held snapshot. The worker may be stopped before it
// fires: the tick alarm and the next start release what is due then.
function scheduleDueCarts() {
  const next = nextDue(state.cartGates);
  clearTimeout(dueTimer);
  if (next !== null) dueTimer = setTimeout(releaseDueCarts, Math.max(0, next - Date.now()) + 20);
}

/** Sends the latest state of every merchant's cart whose held snapshot is due. */
async function releaseDueCarts() {
  await stateReady;
  const due = dueCarts(state.cartGates, Date.now(), CART_INTERVAL_MS);
  const { settings } = state;
  for (const merchant of due) {
    const cart = state.carts[merchant];
    // Emptied, bought or no longer wanted since it was held: nothing to send.
    if (!cart || !cart.items.length || !settings.kinds.cart || blockReason(settings, { host: merchant, incognito: false })) continue;
    const at = Date.parse(cart.updatedAt);
    const signal = maskSignal(buildCart({ merchant, currency: cart.currency, items: cart.items, now: Number.isNaN(at) ? undefined : at }), settings.masked);
    if (signal) enqueue(signal, settings, 'cartGates');
  }
  persist('cartGates');
  scheduleDueCarts();
}

// A confirmation page often reports one order twice: as a GA4 `purchase` event,
// which carries item categories, and as JSON-LD, which usually does not. Which
// arrives first differs between browsers (Firefox runs the JSON-LD scan before
// the page's tags), and the first report wins (the id is the same). So the
// JSON-LD report waits a moment and only counts when no GA4 report came.
const JSONLD_GRACE_MS = 1500;

async function onJsonLd(msg, origin) {
  await new Promise((resolve) => setTimeout(resolve, JSONLD_GRACE_MS));
  const settings = await getSettings();
  if (blockReason(settings, { host: origin.host, incognito: origin.incognito })) return;
  const orders = ordersFrom(flattenNodes(Array.isArray(msg.ld) ? msg.ld : []));
  for (const o of orders) {
    if (!o.currency) continue;
    await onPurchase(settings, origin, o);
  }
}

async function onPurchase(settings, origin, { currency, total, orderId, items }) {
  const built = await buildPurchase({
    merchant: origin.host,
    currency,
    total,
    orderId,
    items,
    pageKey: origin.pageKey,
  });
  // Settings may have changed while the id was computed: decide on the current ones.
  settings = state.settings;
  if (blockReason(settings, { host: origin.host, incognito: origin.incognito })) return;
  // The cart ends with the purchase, whether or not purchases are captured.
  const changed = [];
  if (state.carts[origin.host]) {
    delete state.carts[origin.host];
    changed.push('carts');
  }
  const signal = built && settings.kinds.purchase ? maskSignal(built, settings.masked) : null;
  if (!signal || state.purchasesSeen.includes(signal.id)) {
    if (changed.length) persist(...changed);
    return;
  }
  state.purchasesSeen.push(signal.id);
  if (state.purchasesSeen.length > PURCHASES_REMEMBERED) state.purchasesSeen.splice(0, state.purchasesSeen.length - PURCHASES_REMEMBERED);
  enqueue(signal, settings, 'purchasesSeen', ...changed);
}

// Whether `signal` may be queued: the agent would accept it (lib/validate.js)
// and its site's and the day's budgets allow it (lib/budget.js, spent here).
// A refusal is counted; the reason names a field, never page text.
function admit(signal) {
  const problem = signalProblem(wireSignal(signal));
  if (problem) {
    drop('invalid');
    console.warn('optin: dropped a', signal.kind, 'signal the agent would refuse:', problem);
    return false;
  }
  const site = siteOf(signal.merchant ?? signal.engine);
  const over = spend(state.ledger, site, Date.now(), BUDGETS);
  if (over) {
    drop('budget');
    return false;
  }
  return true;
}

// Adds a signal to the review list or the outbox, and to the popup's recent
// list, and stores that together with the other `changed` keys in one write.
// Synchronous: it runs in the same step as the caller's own changes. A signal
// for the outbox is sent at once, while it is being written. A signal that is
// invalid or over budget is dropped and counted instead.
function enqueue(signal, settings, ...changed) {
  if (!admit(signal)) {
    persist('drops', 'ledger', ...changed);
    return;
  }
  changed.push('ledger');
  state.recent.unshift({ id: signal.id, kind: signal.kind, at: signal.at, summary: summarize(signal), sensitive: signalTopics(signal, sensitiveTable) });
  if (state.recent.length > RECENT_MAX) state.recent.length = RECENT_MAX;
  if (settings.delayMinutes > 0) {
    state.pending.push({ signal, capturedAt: Date.now() });
    persist('recent', 'pending', ...changed);
    // The alarm promotes too, but only every 30 s.
    setTimeout(promotePending, settings.delayMinutes * 60000 + 50);
    return;
  }
  const { outbox } = state;
  outbox.push(signal);
  if (outbox.length > OUTBOX_MAX) {
    outbox.splice(0, outbox.length - OUTBOX_MAX);
    setLastError('outbox full: the oldest unsent signals were dropped');
  }
  // Sent first, then written, in the same step: the worker cannot stop in
  // between, and the host's answer is not waited for before the write.
  link.flush();
  persist('recent', 'outbox', ...changed);
}

// Moves reviewed signals whose delay is over to the outbox.
async function promotePending() {
  await stateReady;
  const { pending, settings } = state;
  if (!pending.length) return;
  const cutoff = Date.now() - settings.delayMinutes * 60000;
  const due = pending.filter((p) => p.capturedAt <= cutoff);
  if (!due.length) return;
  state.pending = pending.filter((p) => p.capturedAt > cutoff);
  state.outbox.push(...due.map((p) => p.signal));
  const written = persist('pending', 'outbox');
  link.flush();
  await written;
}

// ---- messages from content scripts and the popup ----------------------------

function onMessage(msg, sender, sendResponse) {
  if (!msg || typeof msg !== 'object' || sender.id !== chrome.runtime.id) return false;
  const fromExtensionPage = typeof sender.url === 'string' && sender.url.startsWith(chrome.runtime.getURL(''));
  if (typeof msg.type === 'string' && msg.type.startsWith('popup:')) {
    if (!fromExtensionPage) return false;
    handlePopup(msg, sender).then(
      (r) => sendResponse(r),
      (e) => sendResponse({ ok: false, error: e.message }),
    );
    return true; // the answer comes asynchronously
  }
  const origin = pageOrigin(sender);
  if (!origin) return false;
  // Content scripts bound their messages already; a second bound here costs little.
  let size;
  try {
    size = JSON.stringify(msg).length;
  } catch {
    return false;
  }
  if (size > MAX_MESSAGE_CHARS) return false;
  if (msg.type === 'ecommerce' && typeof msg.event === 'string' && msg.ecommerce && typeof msg.ecommerce === 'object') {
    onEcommerce(msg, origin).catch((e) => setLastError('capture: ' + e.message));
  } else if (msg.type === 'jsonld') {
    onJsonLd(msg, origin).catch((e) => setLastError('capture: ' + e.message));
  }
  return false;
}

// Applies `fn` to a copy of the settings; resolves once they are stored.
async function changeSettings(fn) {
  await stateReady;
  const settings = structuredClone(state.settings);
  fn(settings);
  state.settings = normalizeSettings(settings);
  const next = state.settings;
  await persist('settings');
  return next;
}

async function handlePopup(msg, sender) {
  switch (msg.type) {
    case 'popup:state': {
      await stateReady;
      const data = await store.get(['status', 'lastError']);
      return {
        ok: true,
        settings: state.settings,
        recent: state.recent,
        pending: state.pending.map((p) => ({
          id: p.signal.id,
          kind: p.signal.kind,
          capturedAt: p.capturedAt,
          summary: summarize(p.signal),
          sensitive: signalTopics(p.signal, sensitiveTable),
        })),
        outboxCount: state.outbox.length,
        drops: state.drops,
        status: data.status ?? { state: 'connecting' },
        lastError: data.lastError ?? null,
      };
    }
    case 'popup:set': {
      const settings = await changeSettings((s) => {
        if (typeof msg.enabled === 'boolean') s.enabled = msg.enabled;
        if (msg.kind && typeof msg.on === 'boolean' && msg.kind in s.kinds) s.kinds[msg.kind] = msg.on;
        if (msg.delayMinutes !== undefined) s.delayMinutes = msg.delayMinutes;
      });
      // A shorter delay may make reviewed signals due now.
      await promotePending();
      return { ok: true, settings };
    }
    case 'popup:exclude': {
      const site = normalizeSite(msg.site);
      if (!site) return { ok: false, error: 'not a site name' };
      return { ok: true, settings: await changeSettings((s) => s.excluded.push(site)) };
    }
    case 'popup:include':
      return { ok: true, settings: await changeSettings((s) => (s.excluded = s.excluded.filter((x) => x !== msg.site))) };
    case 'popup:mask': {
      const word = typeof msg.word === 'string' ? msg.word.trim() : '';
      if (!word) return { ok: false, error: 'empty word' };
      const settings = await changeSettings((s) => s.masked.push(word));
      await remaskUnsent(settings);
      return { ok: true, settings };
    }
    case 'popup:unmask':
      return { ok: true, settings: await changeSettings((s) => (s.masked = s.masked.filter((w) => w !== msg.word))) };
    case 'popup:discard':
      await stateReady;
      state.pending = state.pending.filter((p) => p.signal.id !== msg.id);
      state.recent = state.recent.filter((r) => r.id !== msg.id);
      await persist('pending', 'recent');
      return { ok: true };
    case 'popup:clear-error':
      await store.remove('lastError');
      return { ok: true };
    case 'popup:connect':
      // The popup asks every few seconds while it is open: a hello on the open
      // connection (or a new connection) brings the status up to date.
      link.checkAgent();
      return { ok: true };
    case 'popup:grants':
      return link.call({ type: 'grants' });
    case 'popup:revoke':
      if (typeof msg.grant_id !== 'string' || !msg.grant_id) return { ok: false, error: 'no grant id' };
      return link.call({ type: 'revoke', grant_id: msg.grant_id });
    // "Does this site ask?" connects to the site, so only the person may start
    // it: the popup, never a page (a content script's message carries the
    // page as sender.tab), and about the tab they are on, never a site a
    // message names.
    case 'popup:site-requests': {
      if (!fromPopup(sender, chrome.runtime.id, chrome.runtime.getURL('popup.html'))) return { ok: false, error: 'only the popup may ask a site' };
      const site = await activeSite();
      if (!site.ok) return site;
      const reply = await link.call({ type: 'site-requests', domain: site.domain }, { timeoutMs: SITE_FETCH_TIMEOUT_MS });
      return { ...reply, domain: site.domain };
    }
    case 'popup:approve':
    case 'popup:deny': {
      if (!fromPopup(sender, chrome.runtime.id, chrome.runtime.getURL('popup.html'))) return { ok: false, error: 'only the popup may decide a request' };
      if (typeof msg.name !== 'string' || !msg.name) return { ok: false, error: 'no request name' };
      if (msg.type === 'popup:deny') return link.call({ type: 'deny', name: msg.name });
      const choices = msg.choices && typeof msg.choices === 'object' && !Array.isArray(msg.choices) ? msg.choices : {};
      return link.call({ type: 'approve', name: msg.name, choices });
    }
    default:
      return { ok: false, error: 'unknown request' };
  }
}

// The site of the tab the person is on: the active tab of the window they used
// last. When the popup itself is open as a tab there, that tab is not a site,
// so the last site tab they looked at in that window is taken instead.
async function activeSite() {
  const popupUrl = chrome.runtime.getURL('popup.html');
  let tabs;
  try {
    tabs = await chrome.tabs.query({ lastFocusedWindow: true });
  } catch (e) {
    return { ok: false, error: 'cannot read the active tab: ' + e.message };
  }
  let tab = tabs.find((t) => t.active);
  if (tab && typeof tab.url === 'string' && tab.url.startsWith(popupUrl)) {
    tab = tabs.filter((t) => typeof t.url === 'string' && siteOfUrl(t.url)).sort((a, b) => (b.lastAccessed ?? 0) - (a.lastAccessed ?? 0))[0];
  }
  if (tab?.incognito) return { ok: false, error: 'not asked from a private window' };
  const domain = tab?.url ? siteOfUrl(tab.url) : null;
  if (!domain) return { ok: false, error: 'this tab is not a web page (http or https)' };
  return { ok: true, domain };
}

// A word masked now also applies to what has not left the browser yet.
async function remaskUnsent(settings) {
  const re = maskPattern(settings.masked);
  const remask = (s) => maskSignal(s, settings.masked);
  state.pending = state.pending.map((p) => ({ ...p, signal: remask(p.signal) })).filter((p) => p.signal);
  state.outbox = state.outbox.map(remask).filter(Boolean);
  state.recent = state.recent.map((r) => ({ ...r, summary: re ? r.summary.replace(re, MASKED) : r.summary }));
  await persist('pending', 'outbox', 'recent');
}

// ---- delivery to the native host (lib/host-link.js) ---------------------------

const link = createHostLink({
  connectNative: () => chrome.runtime.connectNative(HOST_NAME),
  // Chromium reports why a port closed in lastError; Firefox on the port.
  disconnectReason: (p) => chrome.runtime.lastError?.message ?? p.error?.message,
  version: VERSION,
  // Purchases with an order number go without an id: the agent derives one
  // from the registrable merchant (lib/signals.js, wireSignal).
  toWire: wireSignal,
  outbox: {
    ready: stateReady,
    peek: (n) => state.outbox.slice(0, n),
    remove(ids) {
      state.outbox = state.outbox.filter((s) => !ids.has(s.id));
      // Not awaited: the removal is written after (or with) any write still
      // adding these signals.
      persist('outbox');
    },
  },
  onStatus: setStatus,
  onError: setLastError,
  onReady: promotePending,
  onDelivered: announceDelivered,
  onDropped(reason, signals, detail) {
    // Rejected and refused signals were invalid in the agent's eyes.
    const counted = reason === DROP.QUOTA ? 'quota' : reason === DROP.UNDELIVERABLE ? 'undeliverable' : 'invalid';
    drop(counted, signals.length);
    persist('drops');
    console.warn(`optin: ${signals.length} signal(s) dropped (${reason}): ${detail}`);
  },
});

// Tells observers in the worker (the benchmark, extension/test/bench.mjs) that
// the host acknowledged `signals`. Costs nothing when nobody listens.
function announceDelivered(signals) {
  self.dispatchEvent(new CustomEvent('optin-delivered', { detail: { signals } }));
}

start();
