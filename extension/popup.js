// The popup: shows and changes the settings, the review list, what was captured
// lately, the agent connection and the grants in force, and, when the person
// asks, the consent requests of the site they are on. Every change goes
// through the worker (messages "popup:*") so storage is only written there.
// Page data and marketers' text are rendered with textContent only, never as
// HTML, and marketers' text is made inert first (lib/site-requests.js).

import { normalizeSite } from './lib/settings.js';
import { KIND_WORDS, describe, inert, narrowChoices, spanWords } from './lib/site-requests.js';

const $ = (id) => document.getElementById(id);
const ask = (msg) => chrome.runtime.sendMessage(msg);

const STATUS_TEXT = {
  running: 'agent running',
  stopped: 'agent stopped',
  'host missing': 'not installed',
  disconnected: 'not connected',
  connecting: 'connecting…',
};

// What a person can do about each state, in words and the command to type.
// Pieces are [text, code] pairs so the command can be shown as code without
// building markup from strings.
const ADVICE = {
  stopped: [['The optin agent is not running, so nothing new is stored. Start it with '], ['optin serve', true], ['. Signals wait here until then.']],
  'host missing': [['This browser cannot reach optin yet. Run '], ['optin browser install', true], [' in a terminal, then reopen this window.']],
  disconnected: [['The connection to optin was lost. It is retried by itself; if this stays, check that '], ['optin', true], [' is still installed and run '], ['optin browser status', true], ['.']],
};

// How the popup names each reason a signal was dropped (background.js `drop`).
const DROP_TEXT = [
  ['invalid', 'invalid'],
  ['budget', "over this browser's budget"],
  ['quota', "over today's quota"],
  ['undeliverable', 'never answered'],
];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'testid') node.dataset.testid = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function when(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleDateString();
}

// A captured signal that matches a sensitive topic: the agent stores it marked and no grant
// shares it unless the person runs `optin include TOPIC`. Nothing when it matches none.
function sensitiveLabel(topics) {
  if (!Array.isArray(topics) || topics.length === 0) return '';
  const names = topics.join(', ');
  return el('span', { class: 'sensitive', testid: 'sensitive', title: `Sensitive (${names}): never shared unless you run "optin include" for it` }, 'sensitive: not shared');
}

function fillList(list, rows, emptyText) {
  list.replaceChildren(...(rows.length ? rows : [el('li', { class: 'empty' }, emptyText)]));
}

let currentSite = '';
let lastState = '';

function render(state) {
  const { settings, status } = state;
  const s = status?.state ?? 'connecting';
  // Grants need the host: load them again once it answers.
  if (s !== lastState && (s === 'running' || s === 'stopped')) loadGrants();
  lastState = s;
  const badge = $('agent');
  badge.textContent = STATUS_TEXT[s] ?? s;
  badge.className = 'badge ' + (s === 'host missing' ? 'missing' : s);
  badge.dataset.state = s;
  badge.title = [status?.version && 'agent ' + status.version, status?.detail].filter(Boolean).join(' — ');
  const advice = $('advice');
  const words = ADVICE[s];
  advice.hidden = !words;
  advice.dataset.state = s;
  advice.replaceChildren(...(words ?? []).map(([text, code]) => (code ? el('code', {}, text) : text)));

  $('enabled').checked = settings.enabled;
  $('enabled-label').textContent = settings.enabled ? 'On' : 'Paused';
  for (const box of document.querySelectorAll('input[data-kind]')) {
    box.checked = settings.kinds[box.dataset.kind];
  }

  const err = state.lastError;
  $('error').hidden = !err;
  $('error-text').textContent = err ? err.message : '';

  // Sites
  $('this-site-row').hidden = !currentSite || settings.excluded.includes(currentSite);
  $('this-site').textContent = currentSite;
  fillList(
    $('excluded'),
    settings.excluded.map((site) =>
      el(
        'li',
        {},
        el('span', { class: 'what' }, site),
        el('button', { type: 'button', class: 'x', title: 'Capture on this site again', testid: 'include', 'data-site': site, onclick: () => change({ type: 'popup:include', site }) }, '✕'),
      ),
    ),
    'No excluded sites.',
  );

  // Masked words
  $('masked').replaceChildren(
    ...settings.masked.map((word) =>
      el('li', {}, word, el('button', { type: 'button', class: 'x', title: 'Stop masking', testid: 'unmask', 'data-word': word, onclick: () => change({ type: 'popup:unmask', word }) }, '✕')),
    ),
  );

  // Review
  const delay = $('delay');
  if (document.activeElement !== delay) delay.value = String(settings.delayMinutes);
  const due = (p) => new Date(p.capturedAt + settings.delayMinutes * 60000).toISOString();
  fillList(
    $('pending'),
    state.pending.map((p) =>
      el(
        'li',
        { 'data-id': p.id },
        el('span', { class: 'kind' }, p.kind),
        el('span', { class: 'what' }, p.summary),
        sensitiveLabel(p.sensitive),
        el('span', { class: 'when' }, 'sends ' + when(due(p))),
        el('button', { type: 'button', class: 'danger', testid: 'discard', onclick: () => change({ type: 'popup:discard', id: p.id }) }, 'Discard'),
      ),
    ),
    settings.delayMinutes > 0 ? 'Nothing waiting for review.' : 'Signals are sent at once.',
  );

  // What was dropped today instead of stored, by reason (totals in the tooltip).
  const today = state.drops?.today ?? {};
  const total = state.drops?.total ?? {};
  const parts = DROP_TEXT.filter(([k]) => today[k] > 0).map(([k, text]) => `${today[k]} ${text}`);
  const drops = $('drops');
  drops.hidden = parts.length === 0;
  drops.textContent = parts.length ? 'Not stored today: ' + parts.join(', ') + '.' : '';
  drops.title = DROP_TEXT.filter(([k]) => total[k] > 0).map(([k, text]) => `${total[k]} ${text}`).join(', ') + (Object.keys(total).length ? ' since installed' : '');
  for (const [k] of DROP_TEXT) drops.dataset[k] = String(today[k] ?? 0);

  // Recent
  $('outbox').textContent = state.outboxCount ? `${state.outboxCount} waiting to be delivered to the agent.` : '';
  fillList(
    $('recent'),
    state.recent.map((r) =>
      el(
        'li',
        { 'data-id': r.id, 'data-kind': r.kind },
        el('span', { class: 'kind' }, r.kind),
        el('span', { class: 'what', title: r.summary }, r.summary),
        sensitiveLabel(r.sensitive),
        el('span', { class: 'when' }, when(r.at)),
      ),
    ),
    'Nothing captured yet.',
  );
}

// Bumped when the person changes something. A refresh whose answer was asked for before
// the latest change may show the old settings: it is dropped, and the change's own refresh
// renders instead (else a background refresh could undo a click on screen).
let generation = 0;

async function refresh() {
  const asked = generation;
  const state = await ask({ type: 'popup:state' });
  if (state?.ok && asked === generation) render(state);
}

/** Sends a change to the worker, then shows the result. */
async function change(message) {
  generation += 1;
  const reply = await ask(message);
  await refresh();
  return reply;
}

async function loadGrants() {
  const list = $('grants');
  const reply = await ask({ type: 'popup:grants' });
  if (!reply?.ok) {
    fillList(list, [], reply?.error ? 'Grants unavailable: ' + reply.error : 'Grants unavailable.');
    return;
  }
  // Active grants, and damaged ones: a damaged grant's record failed its
  // integrity check, so it serves nothing, but the person should know it exists.
  const shown = (reply.grants ?? []).filter((g) => g.state === 'active' || g.state === 'damaged');
  fillList(
    list,
    shown.map((g) =>
      el(
        'li',
        { 'data-grant': g.grant_id, 'data-state': g.state },
        el('span', { class: 'what', title: g.purpose ?? '' }, el('strong', {}, g.marketer), ' · ' + (g.kinds ?? []).join(', ') + (g.granularity ? ' · ' + g.granularity : '')),
        g.state === 'damaged'
          ? el('span', { class: 'state', testid: 'grant-damaged', title: 'Its stored record failed an integrity check, so it serves nothing. Revoke it and grant again if you still want to share.' }, 'damaged')
          : el('span', { class: 'when' }, g.expires_at ? 'until ' + when(g.expires_at) : ''),
        el(
          'button',
          {
            type: 'button',
            class: 'danger',
            testid: 'revoke',
            'data-grant': g.grant_id,
            onclick: async (e) => {
              e.target.disabled = true;
              const r = await ask({ type: 'popup:revoke', grant_id: g.grant_id });
              if (!r?.ok) {
                e.target.disabled = false;
                e.target.textContent = 'Retry';
                e.target.title = r?.error ?? '';
              }
              loadGrants();
            },
          },
          'Revoke',
        ),
      ),
    ),
    'No marketer has access.',
  );
}

async function findCurrentSite() {
  try {
    const [tab] = await chrome.tabs.query({ active: true, lastFocusedWindow: true });
    const url = tab?.url ? new URL(tab.url) : null;
    if (url && (url.protocol === 'http:' || url.protocol === 'https:')) currentSite = normalizeSite(url.hostname);
  } catch {
    currentSite = '';
  }
}

// ---- "Does this site ask?" ---------------------------------------------------

function siteError(text) {
  const p = $('site-error');
  p.hidden = !text;
  p.textContent = text ? inert(text) : '';
}

/** Asks the worker, which asks the host about the active tab's site. */
async function askSite() {
  const button = $('site-ask');
  button.disabled = true;
  $('site-ask-status').textContent = 'asking…';
  siteError('');
  $('site-refused').hidden = true;
  $('site-requests').replaceChildren();
  let reply;
  try {
    reply = await ask({ type: 'popup:site-requests' });
  } catch (e) {
    reply = { ok: false, error: e.message };
  }
  button.disabled = false;
  $('site-ask-status').textContent = reply?.domain ? inert(reply.domain) : '';
  if (!reply?.ok) {
    siteError(reply?.error ?? 'no answer');
    document.body.dataset.siteAsked = 'error';
    return;
  }
  const refused = Array.isArray(reply.refused) ? reply.refused : [];
  const refusedList = $('site-refused');
  refusedList.hidden = refused.length === 0;
  refusedList.replaceChildren(...refused.map((r) => el('li', { testid: 'site-refused-item' }, 'Refused, nothing stored: ' + inert(r.error))));
  const requests = Array.isArray(reply.requests) ? reply.requests : [];
  $('site-requests').replaceChildren(...(requests.length ? requests.map(requestCard) : [el('p', { class: 'muted small', testid: 'site-none' }, refused.length ? 'No request of this site could be taken.' : 'This site asks for nothing.')]));
  document.body.dataset.siteAsked = 'done';
}

/** One request: what it asks in plain words, and Approve, Narrow, Deny. */
function requestCard(item) {
  const name = typeof item.name === 'string' ? item.name : '';
  const terms = item.view?.request?.terms ?? {};
  const lines = describe(item);
  const outcome = el('p', { class: 'outcome', testid: 'request-outcome' });
  const show = (text, good) => {
    outcome.textContent = inert(text);
    outcome.className = 'outcome ' + (good ? 'good' : 'bad');
  };
  // Narrowing: fewer kinds, a shorter window, a shorter duration. The fields
  // start at what the request asks, and never offer more.
  const kindBoxes = (Array.isArray(terms.kinds) ? terms.kinds : []).map((k) =>
    el('label', { class: 'switch' }, el('input', { type: 'checkbox', 'data-kind': k, testid: 'narrow-kind', checked: '' }), ' ' + (KIND_WORDS[k] ?? inert(k))),
  );
  const windowInput = el('input', { type: 'text', testid: 'narrow-window', value: inert(terms.window), 'aria-label': 'How far back' });
  const durationInput = el('input', { type: 'text', testid: 'narrow-duration', value: inert(terms.duration), 'aria-label': 'For how long' });
  const narrow = el(
    'div',
    { class: 'narrow', hidden: '' },
    el('div', { class: 'row' }, ...kindBoxes),
    el('div', { class: 'row' }, 'from the last ', windowInput, ' for ', durationInput, el('span', { class: 'muted small' }, ' (at most what is asked)')),
    el('button', { type: 'button', testid: 'approve-narrowed', onclick: () => decide('approve', narrowed()) }, 'Approve narrowed'),
  );
  const narrowed = () => {
    const kinds = kindBoxes.map((l) => l.querySelector('input')).filter((b) => b.checked).map((b) => b.dataset.kind);
    return narrowChoices(terms, { kinds, window: windowInput.value, expires: durationInput.value });
  };
  const buttons = el(
    'div',
    { class: 'row' },
    el('button', { type: 'button', testid: 'approve', onclick: () => decide('approve', { choices: {} }) }, 'Approve'),
    el('button', { type: 'button', testid: 'narrow', onclick: () => (narrow.hidden = !narrow.hidden) }, 'Narrow'),
    el('button', { type: 'button', class: 'danger', testid: 'deny', onclick: () => decide('deny') }, 'Deny'),
  );
  const card = el(
    'div',
    { class: 'ask', testid: 'site-request', 'data-name': inert(name), 'data-state': inert(item.view?.state) },
    el('dl', {}, ...lines.flatMap(([label, text]) => [el('dt', {}, label), el('dd', { class: label === 'warning' ? 'warning' : '', 'data-line': label }, text)])),
    buttons,
    narrow,
    outcome,
  );
  const decided = item.view?.state !== 'pending';
  for (const b of [...buttons.querySelectorAll('button'), narrow.querySelector('button')]) b.disabled = decided;
  if (decided) show(`This request is ${inert(item.view?.state)}.`, item.view?.state === 'approved');

  async function decide(how, narrowing) {
    if (narrowing?.error) {
      show(narrowing.error, false);
      return;
    }
    const reply = await ask(how === 'deny' ? { type: 'popup:deny', name } : { type: 'popup:approve', name, choices: narrowing.choices });
    if (!reply?.ok) {
      show((how === 'deny' ? 'Not denied: ' : 'Not approved: ') + (reply?.error ?? 'no answer'), false);
      return;
    }
    for (const b of card.querySelectorAll('button')) b.disabled = true;
    card.dataset.state = how === 'deny' ? 'denied' : 'approved';
    if (how === 'deny') {
      show('Denied: no grant was made.', true);
      return;
    }
    const g = reply.grant ?? {};
    const t = g.terms ?? {};
    const kinds = (t.kinds ?? []).map((k) => KIND_WORDS[k] ?? inert(k)).join(', ');
    const push = item.view?.request?.delivery?.method === 'push';
    show(
      `Approved: ${inert(g.marketer)} may have ${kinds}, ${inert(t.granularity)}, from the last ${spanWords(t.window)}, until ${inert(t.expires_at)}. ` +
        (push ? 'optin serve sends it to their inbox.' : `Hand them the bundle: optin bundle ${inert(g.grant_id)}.`),
      true,
    );
    loadGrants();
  }
  return card;
}

function wire() {
  $('site-ask').addEventListener('click', askSite);
  $('enabled').addEventListener('change', (e) => change({ type: 'popup:set', enabled: e.target.checked }));
  for (const box of document.querySelectorAll('input[data-kind]')) {
    box.addEventListener('change', () => change({ type: 'popup:set', kind: box.dataset.kind, on: box.checked }));
  }
  $('exclude-this').addEventListener('click', () => change({ type: 'popup:exclude', site: currentSite }));
  $('exclude-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('exclude-input');
    const r = await change({ type: 'popup:exclude', site: input.value });
    if (r?.ok) input.value = '';
  });
  $('mask-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('mask-input');
    const r = await change({ type: 'popup:mask', word: input.value });
    if (r?.ok) input.value = '';
  });
  $('delay').addEventListener('change', (e) => change({ type: 'popup:set', delayMinutes: Number(e.target.value) || 0 }));
  $('error-clear').addEventListener('click', () => change({ type: 'popup:clear-error' }));

  // Re-render whenever the worker changes something (new signals, status).
  let pendingRefresh = null;
  chrome.storage.onChanged.addListener(() => {
    clearTimeout(pendingRefresh);
    pendingRefresh = setTimeout(refresh, 50);
  });
}

// While the popup is open the worker asks the host every few seconds whether the
// agent runs; the answer lands in storage and re-renders the popup (wire()).
const STATUS_POLL_MS = 2000;

async function main() {
  wire();
  await findCurrentSite();
  ask({ type: 'popup:connect' });
  setInterval(() => ask({ type: 'popup:connect' }).catch(() => {}), STATUS_POLL_MS);
  await refresh();
  await loadGrants();
  document.body.dataset.ready = 'true';
}

main();
