// Shared helpers of the end-to-end tests: a real headless Chromium with the
// unpacked extension, the real `optin native-host` behind native messaging,
// and reads of what the agent stored. Imported by the *.test.mjs files; it
// defines no tests itself.

import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

export const EXT_DIR = resolve(here, '..', '..');
export const EXTENSION_ID = readFileSync(join(EXT_DIR, 'EXTENSION_ID'), 'utf8').trim();
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/lib/chromium/chromium';
export const HOST_NAME = 'dev.optin.agent';

/**
 * Why the browser tests cannot run here, or null when they can. They need the
 * optin binary (OPTIN_BIN, e.g. target/debug/optin) and Debian's chromium.
 */
export function e2eSkipReason() {
  if (!process.env.OPTIN_BIN) {
    return 'OPTIN_BIN is not set: build optin (cargo build) and run with OPTIN_BIN=target/debug/optin';
  }
  if (!existsSync(process.env.OPTIN_BIN)) return `OPTIN_BIN=${process.env.OPTIN_BIN} does not exist`;
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`;
  return null;
}

/** A fresh temporary directory (removed by `cleanup`). */
export function tempDir(prefix = 'optin-ext-') {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * A fresh optin home (OPTIN_HOME) in `root`: private, as the agent requires.
 */
export function makeHome(root) {
  const home = join(root, 'home');
  mkdirSync(home, { recursive: true, mode: 0o700 });
  return home;
}

function optinEnv(home) {
  return { ...process.env, OPTIN_HOME: home };
}

/** Runs `$OPTIN_BIN args…` with OPTIN_HOME=home and returns stdout. */
export async function optin(home, args) {
  const { stdout } = await run(resolve(process.env.OPTIN_BIN), args, { env: optinEnv(home), maxBuffer: 64 << 20 });
  return stdout;
}

/**
 * Starts `$OPTIN_BIN serve` in `home` on a free loopback port and waits for its
 * ready line, so the native host forwards to a running agent over the admin
 * socket, as it does for a person.
 */
export async function startAgent(home, extraArgs = []) {
  const child = spawn(resolve(process.env.OPTIN_BIN), ['serve', '--listen', '127.0.0.1:0', ...extraArgs], {
    env: optinEnv(home),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((ready, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error('optin serve printed no ready line in 20 s')), 20000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('listening on https://')) {
        clearTimeout(timer);
        ready();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`optin serve exited with ${code}`));
    });
  });
  return child;
}

/** Stops what startAgent started (by its own process handle). */
export async function stopAgent(child) {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/**
 * Every signal the agent holds, as the array of signal objects that
 * `optin signals --json` prints (an object with a `signals` array is accepted too).
 */
export async function readStoredSignals(home) {
  const out = JSON.parse(await optin(home, ['signals', '--json']));
  return Array.isArray(out) ? out : out.signals;
}

/** Creates a grant for `marketer` and returns its id (from `optin grant … --json`). */
export async function createGrant(home, marketer, kinds = ['search']) {
  const out = JSON.parse(
    await optin(home, ['grant', marketer, '--kinds', kinds.join(','), '--granularity', 'raw', '--window', '30d', '--expires', '30d', '--purpose', 'e2e test', '--json']),
  );
  return out.grant_id ?? out.grant?.grant_id ?? out.id;
}

/** The grants as `optin grants --json` lists them. */
export async function listGrants(home) {
  const out = JSON.parse(await optin(home, ['grants', '--json']));
  return Array.isArray(out) ? out : out.grants;
}

/**
 * Installs the native messaging host for one Chromium profile. The host is
 * OPTIN_NATIVE_HOST when set, else a wrapper script written to `root` that
 * runs `$OPTIN_BIN native-host` with OPTIN_HOME=home and the variables of
 * `hostEnv` (OPTIN_CA_FILE, OPTIN_RESOLVE: how the host reaches a test
 * marketer's site, since the browser starts it with no flags). While the file
 * `<root>/host-blocked` exists the wrapper exits at once, which lets a test
 * make the agent unreachable.
 */
export function installNativeHost(userDataDir, root, home, hostEnv = {}) {
  let hostPath = process.env.OPTIN_NATIVE_HOST;
  if (!hostPath) {
    hostPath = join(root, 'optin-native-host');
    const q = (s) => "'" + s.replaceAll("'", "'\\''") + "'";
    writeFileSync(
      hostPath,
      [
        '#!/bin/sh',
        `[ -e ${q(join(root, 'host-blocked'))} ] && exit 1`,
        `OPTIN_HOME=${q(home)}`,
        'export OPTIN_HOME',
        ...Object.entries(hostEnv).flatMap(([name, value]) => [`${name}=${q(value)}`, `export ${name}`]),
        `exec ${q(resolve(process.env.OPTIN_BIN))} native-host "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
  }
  const dir = join(userDataDir, 'NativeMessagingHosts');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, HOST_NAME + '.json'),
    JSON.stringify({
      name: HOST_NAME,
      description: 'optin agent',
      path: resolve(hostPath),
      type: 'stdio',
      allowed_origins: [`chrome-extension://${EXTENSION_ID}/`],
    }),
  );
}

export function blockHost(root, blocked) {
  const f = join(root, 'host-blocked');
  if (blocked) writeFileSync(f, '');
  else rmSync(f, { force: true });
}

/**
 * A copy of the extension in `root/ext` whose limits.json has `overrides`
 * (`{extension: {cart_snapshot_seconds: 2}}`) merged in, so a test can shorten
 * an interval without a knob in the product. The manifest's fixed key keeps
 * the extension id, so the native host manifest still lets it in.
 */
export async function extensionCopy(root, overrides = {}) {
  const { FILES } = await import('../../build-firefox.mjs');
  const dir = join(root, 'ext');
  for (const f of [...FILES, 'manifest.json']) cpSync(join(EXT_DIR, f), join(dir, f), { recursive: true });
  const limits = JSON.parse(readFileSync(join(EXT_DIR, 'limits.json'), 'utf8'));
  for (const [section, values] of Object.entries(overrides)) Object.assign(limits[section], values);
  writeFileSync(join(dir, 'limits.json'), JSON.stringify(limits, null, 2));
  // The worker reads the numbers from lib/limits-file.js (why: that file).
  writeFileSync(join(dir, 'lib', 'limits-file.js'), `export default ${JSON.stringify(limits, null, 2)};\n`);
  return dir;
}

/**
 * Starts headless Chromium with the extension (`extDir`, else the checkout's)
 * and its native host (none with `nativeHost: false`, as in a browser where
 * `optin browser install` was never run), started with `hostEnv`.
 * `resolverRules` maps real-looking host names to the local test server;
 * `ignoreCertificateErrors` lets the browser show pages of a test CA's sites
 * (what the agent trusts is OPTIN_CA_FILE's business).
 */
export async function launch({ root, home, userDataDir = join(root, 'profile'), resolverRules = '', extDir = EXT_DIR, nativeHost = true, hostEnv = {}, ignoreCertificateErrors = false }) {
  mkdirSync(userDataDir, { recursive: true });
  if (nativeHost) installNativeHost(userDataDir, root, home, hostEnv);
  const args = [
    // Playwright adds --disable-extensions by default; this re-enables ours.
    `--disable-extensions-except=${extDir}`,
    `--load-extension=${extDir}`,
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ];
  if (resolverRules) args.push(`--host-resolver-rules=${resolverRules}`);
  if (ignoreCertificateErrors) args.push('--ignore-certificate-errors');
  // Imported here so the pure tests run even before `npm ci --prefix extension/test`.
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
  });
  const worker = context.serviceWorkers().find((w) => w.url().startsWith(`chrome-extension://${EXTENSION_ID}/`)) ?? (await context.waitForEvent('serviceworker', { timeout: 10000 }));
  // Events that fire before the worker's first run has registered its
  // listeners are lost on a fresh install: wait until it has started.
  // A worker that never starts never answers evaluate: each ask is bounded, so
  // this fails with a reason instead of hanging the suite.
  const started = () => worker.evaluate(async () => (await chrome.storage.local.get('status')).status !== undefined);
  await waitFor(() => Promise.race([started(), sleep(2000).then(() => false)]), { what: 'the extension worker to start', timeout: 15000 });
  return { context, worker, userDataDir };
}

/** Opens the popup as a tab and waits until it has rendered its state. */
export async function openPopup(context) {
  const page = await context.newPage();
  await page.goto(`chrome-extension://${EXTENSION_ID}/popup.html`);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

/** Polls `fn` until it returns a truthy value; throws after `timeout` ms. */
export async function waitFor(fn, { timeout = 30000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function cleanup(root) {
  rmSync(root, { recursive: true, force: true });
}
