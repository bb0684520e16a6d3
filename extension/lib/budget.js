// How much one site, and the browser as a whole, may add to the store, and the
// coalescing of cart snapshots. Pure functions over plain objects, which the
// worker keeps in chrome.storage so that a stopped worker (MV3 stops idle
// workers after 30 s) forgets no spending; the node tests drive them with a
// clock of their own.
//
// Why in the worker: the content scripts run in the page's process and the
// page can race or re-run them (a reload resets their memory), so a budget
// there bounds nothing. The worker sees every signal, whatever the page does.
//
// Windows are fixed: a site's hour is the UTC clock hour, the day the UTC day
// (the agent's quota uses the same day). A fixed window allows at most twice a
// budget across one boundary, which the documented bound in ../README.md says.

const HOUR_MS = 3600 * 1000;

/** The UTC day of `now` (ms), as the agent names it: `2026-11-27`. */
export function utcDay(now) {
  return new Date(now).toISOString().slice(0, 10);
}

/** An empty budget ledger. */
export function newLedger() {
  return { day: '', dayCount: 0, sites: {} };
}

/** The ledger read back from storage, or a new one when it is missing or malformed. */
export function normalizeLedger(raw) {
  if (!raw || typeof raw !== 'object' || typeof raw.day !== 'string' || !Number.isSafeInteger(raw.dayCount) || !raw.sites || typeof raw.sites !== 'object') {
    return newLedger();
  }
  return raw;
}

/**
 * Spends one signal of `site` at `now` from `ledger` (changed in place) if the
 * budgets `{signals_per_site_per_hour, signals_per_day}` allow it. Returns null
 * when it was spent, else which budget is exhausted: 'site' or 'day'.
 * Sites whose hour is over are forgotten, so the ledger stays small.
 */
export function spend(ledger, site, now, budgets) {
  const day = utcDay(now);
  if (ledger.day !== day) {
    ledger.day = day;
    ledger.dayCount = 0;
  }
  const hour = Math.floor(now / HOUR_MS);
  for (const [s, v] of Object.entries(ledger.sites)) if (v.hour !== hour) delete ledger.sites[s];
  const entry = ledger.sites[site] ?? { hour, count: 0 };
  if (ledger.dayCount >= budgets.signals_per_day) return 'day';
  if (entry.count >= budgets.signals_per_site_per_hour) return 'site';
  entry.count += 1;
  ledger.sites[site] = entry;
  ledger.dayCount += 1;
  return null;
}

/** The budget key of a host: lower case, without a leading `www.` or trailing dot. */
export function siteOf(host) {
  return String(host).toLowerCase().replace(/\.$/, '').replace(/^www\./, '');
}

/**
 * Cart snapshots: at most one per merchant per `intervalMs`. `gates` maps a
 * merchant to `{sentAt, dueAt}` (ms; `dueAt` null when nothing is held).
 *
 * A change after a quiet interval goes out at once. A change within the
 * interval is held, and only the latest state is sent when the interval
 * closes (the worker builds it from its current cart then), so nothing is lost
 * at the end and a page firing `add_to_cart` in a loop adds one snapshot per
 * interval. Returns 'send' (send now; recorded as sent) or 'hold'.
 */
export function cartChange(gates, merchant, now, intervalMs) {
  const g = gates[merchant];
  if (!g || (g.dueAt === null && now - g.sentAt >= intervalMs)) {
    gates[merchant] = { sentAt: now, dueAt: null };
    return 'send';
  }
  if (g.dueAt === null) g.dueAt = g.sentAt + intervalMs;
  return 'hold';
}

/**
 * The merchants whose held snapshot is due at `now`, each marked as sent.
 * Gates that are quiet and older than an interval are forgotten.
 */
export function dueCarts(gates, now, intervalMs) {
  const due = [];
  for (const [m, g] of Object.entries(gates)) {
    if (g.dueAt !== null && g.dueAt <= now) {
      due.push(m);
      gates[m] = { sentAt: now, dueAt: null };
    } else if (g.dueAt === null && now - g.sentAt >= intervalMs) {
      delete gates[m];
    }
  }
  return due;
}

/** The earliest time a held snapshot is due, or null. */
export function nextDue(gates) {
  let next = null;
  for (const g of Object.values(gates)) if (g.dueAt !== null && (next === null || g.dueAt < next)) next = g.dueAt;
  return next;
}

/** Drop counters: `{day, today: {reason: n}, total: {reason: n}}`. */
export function countDrop(counters, reason, n, now) {
  const c = counters && typeof counters === 'object' && counters.today && counters.total ? counters : { day: '', today: {}, total: {} };
  const day = utcDay(now);
  if (c.day !== day) {
    c.day = day;
    c.today = {};
  }
  c.today[reason] = (c.today[reason] ?? 0) + n;
  c.total[reason] = (c.total[reason] ?? 0) + n;
  return c;
}
