// Marketers' websites for the "does this site ask?" tests: one HTTPS server on
// 127.0.0.1 that answers for several made-up names (shop.test, …) with a
// certificate from a test CA made with the openssl CLI, and publishes at
// /.well-known/optin-request.json consent requests signed with Ed25519 as
// SPEC.md "Consent requests" says: good ones, and hostile ones.

import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';

export const WELL_KNOWN = '/.well-known/optin-request.json';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * A test CA and a server certificate for `names`, written to `dir`. Returns
 * the paths and PEMs: `caFile` is what OPTIN_CA_FILE names.
 */
export function makeCertificates(dir, names) {
  const f = (name) => join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=optin extension test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('site.key'), '-out', f('site.csr'), '-subj', `/CN=${names[0]}`);
  writeFileSync(f('site.ext'), [`subjectAltName=${names.map((n) => 'DNS:' + n).join(',')}`, 'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=serverAuth', ''].join('\n'));
  openssl('x509', '-req', '-in', f('site.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-out', f('site.pem'), '-extfile', f('site.ext'));
  return { caFile: f('ca.pem'), key: readFileSync(f('site.key')), cert: readFileSync(f('site.pem')) };
}

/** A marketer's Ed25519 key, and how it signs a request document. */
export function marketerKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const x = publicKey.export({ format: 'jwk' }).x;
  // RFC 7638: the required members in lexicographic order, no white space.
  const kid = b64url(createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest());
  const header = { alg: 'EdDSA', kid, typ: 'optin-request+jwt', jwk: { kty: 'OKP', crv: 'Ed25519', x } };
  return {
    kid,
    /** The compact JWS of `doc` (an object, or the exact payload text). */
    sign(doc) {
      const input = `${b64url(JSON.stringify(header))}.${b64url(typeof doc === 'string' ? doc : JSON.stringify(doc))}`;
      return `${input}.${b64url(sign(null, Buffer.from(input), privateKey))}`;
    },
  };
}

/** A valid request document of `domain`, changed by `over`. */
export function requestDoc(domain, over = {}) {
  const now = Date.now();
  const iso = (ms) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
  return {
    version: 1,
    id: 'offers-1',
    issued_at: iso(now - 60000),
    expires_at: iso(now + 30 * 86400000),
    marketer: { name: 'The Shop', domain, contact: `privacy@${domain}`, privacy_policy: `https://${domain}/privacy` },
    purpose: { code: 'dpv:PersonalisedAdvertising', text: 'Show you offers that fit what you look for.' },
    terms: { kinds: ['search', 'cart'], granularity: 'category', window: '30d', duration: '90d' },
    offer: '10% off your next order',
    delivery: { method: 'pull' },
    ...over,
  };
}

/**
 * Starts the HTTPS server: `documents` maps a host name to the body of its
 * well-known document (a string). Every name also serves a page at `/`.
 * Returns its port, the hits of each name's well-known URL, and `close`.
 */
export async function startMarketerSites({ key, cert, documents }) {
  const hits = [];
  const server = https.createServer({ key, cert }, (req, res) => {
    const host = String(req.headers.host ?? '').replace(/:\d+$/, '');
    const path = new URL(req.url, 'https://x').pathname;
    if (path === WELL_KNOWN) {
      hits.push(host);
      const body = documents[host];
      if (body === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(`<!doctype html><title>${host}</title><h1>Welcome to ${host}</h1>`);
  });
  await new Promise((ready) => server.listen(0, '127.0.0.1', ready));
  return {
    port: server.address().port,
    hits,
    close: () => {
      // The browser keeps its connections alive; they would hold close() open.
      server.closeAllConnections();
      return new Promise((done) => server.close(done));
    },
  };
}
