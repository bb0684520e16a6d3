// The person's capture settings and the one gate every signal passes through.

export const KINDS = ['search', 'cart', 'purchase'];

export const DEFAULT_SETTINGS = Object.freeze({
  enabled: true,
  kinds: { search: true, cart: true, purchase: true },
  excluded: [],
  masked: [],
  delayMinutes: 0,
});

export const MAX_DELAY_MINUTES = 24 * 60;

/** Fills in defaults and drops anything malformed (storage may hold an older shape). */
export function normalizeSettings(raw) {
  const s = raw && typeof raw === 'object' ? raw : {};
  const kinds = {};
  for (const k of KINDS) kinds[k] = s.kinds?.[k] !== false;
  const strings = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string' && x.trim() !== '') : []);
  const delay = Number(s.delayMinutes);
  return {
    enabled: s.enabled !== false,
    kinds,
    excluded: [...new Set(strings(s.excluded).map(normalizeSite).filter(Boolean))],
    masked: [...new Set(strings(s.masked).map((w) => w.trim()))],
    delayMinutes: Number.isFinite(delay) ? Math.min(Math.max(Math.round(delay), 0), MAX_DELAY_MINUTES) : 0,
  };
}

/**
 * The site a person means by a host or URL: lower-case host name without a
 * leading "www.", so excluding "shop.example" also covers www.shop.example.
 * Returns '' when the input has no usable host.
 */
export function normalizeSite(input) {
  if (typeof input !== 'string') return '';
  let s = input.trim().toLowerCase();
  if (!s) return '';
  if (s.includes('://')) {
    try {
      s = new URL(s).hostname;
    } catch {
      return '';
    }
  }
  s = s.replace(/\/.*$/, '').replace(/:\d+$/, '').replace(/\.$/, '');
  if (s.startsWith('www.')) s = s.slice(4);
  return /^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(s) ? s : '';
}

/** True when `host` is an excluded site or one of its subdomains. */
export function isExcluded(host, excluded) {
  const h = String(host).toLowerCase().replace(/\.$/, '');
  return excluded.some((site) => h === site || h.endsWith('.' + site));
}

/**
 * Why a signal of `kind` seen on `host` must not be captured, or null when it
 * may. Incognito tabs, a paused extension, excluded sites and switched-off
 * kinds all capture nothing.
 */
export function blockReason(settings, { kind, host, incognito }) {
  if (incognito) return 'incognito';
  if (!settings.enabled) return 'paused';
  if (isExcluded(host, settings.excluded)) return 'excluded';
  if (kind && !settings.kinds[kind]) return 'kind off';
  return null;
}
