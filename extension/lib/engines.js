// Search-engine URL matching. The rules live in ../engines.json, which the Rust
// history importer reads too; the matching algorithm below is specified in
// ../README.md ("Search-engine rules") and both consumers must stay identical.
// ../engine-cases.json holds the URL cases both consumers are tested against.

import { clip, LIMITS } from './signals.js';

/**
 * Checks the shape of a parsed engines.json and returns its engines list.
 * Throws on anything unexpected so a broken file fails loudly in tests.
 */
export function parseRules(json) {
  if (!json || json.version !== 1 || !Array.isArray(json.engines)) {
    throw new Error('engines.json: expected {"version":1,"engines":[...]}');
  }
  for (const e of json.engines) {
    const ok =
      typeof e.id === 'string' &&
      typeof e.name === 'string' &&
      Array.isArray(e.domains) && e.domains.every((d) => typeof d === 'string' && d === d.toLowerCase()) &&
      Array.isArray(e.paths) && e.paths.every((p) => typeof p === 'string' && p.startsWith('/')) &&
      typeof e.param === 'string' &&
      (e.params === undefined || (Array.isArray(e.params) && e.params[0] === e.param));
    if (!ok) throw new Error(`engines.json: bad entry ${JSON.stringify(e.id)}`);
  }
  return json.engines;
}

/** True when `host` is `domain` or a subdomain of it. */
export function hostMatches(host, domain) {
  return host === domain || host.endsWith('.' + domain);
}

/**
 * Matches one URL against the rules.
 * Returns {engine, query, engineId} (engine = the matched entry of `domains`)
 * or null when the URL is not a search on a known engine.
 */
export function matchSearch(urlString, engines) {
  let url;
  try {
    url = new URL(urlString);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  const host = url.hostname.toLowerCase();
  for (const e of engines) {
    const domain = e.domains.find((d) => hostMatches(host, d));
    if (!domain) continue;
    if (!e.paths.includes(url.pathname)) continue;
    // URLSearchParams decodes application/x-www-form-urlencoded: '+' is a
    // space and percent escapes are UTF-8. The first occurrence of a name wins.
    for (const name of e.params ?? [e.param]) {
      const raw = url.searchParams.get(name);
      const query = raw === null ? '' : raw.trim();
      if (query !== '') {
        return { engine: domain, engineId: e.id, query: clip(query, LIMITS.query) };
      }
    }
    // A matching host and path without a query is not a search, and no later
    // entry may claim the same host: stop here.
    return null;
  }
  return null;
}
