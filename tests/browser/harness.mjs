// What the browser tests (tests/browser/test_*.mjs) share: playwright-core's
// chromium, the checks and the "N passed, N failed" summary, the Python
// backend harness (*_harness.py: one JSON line when ready, "stop" or EOF on
// stdin to end) and a run that starts it, runs the test's body and tears
// everything down. Not a test itself: CMake registers test_*.mjs only.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
export let chromium;
try {
  ({ chromium } = require('playwright-core')); // NODE_PATH from tests/run.sh
} catch (e) {
  const home = process.env.METADB_HOME || path.join(os.homedir(), '.metadb');
  ({ chromium } = createRequire(path.join(home, 'cache', 'node', 'node_modules', 'x.js'))('playwright-core'));
}

export const SRC = process.env.MDB_SOURCE_DIR || path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
export const ART = path.join(SRC, 'tests', 'artifacts');

// The counts behind the summary; a test may count a failure of its own.
export const tally = { passed: 0, failed: 0 };

export function check(cond, what, detail) {
  if (cond) { tally.passed++; console.log('ok   - ' + what); } else { tally.failed++; console.log('FAIL - ' + what + (detail !== undefined ? '\n       ' + String(detail).slice(0, 1500) : '')); }
  return cond;
}

// Prints the summary and exits: 0 only if the run got through (ok), nothing
// failed and something passed.
export function finish(ok = true) {
  console.log(tally.passed + ' passed, ' + tally.failed + ' failed');
  process.exit(ok && tally.failed === 0 && tally.passed > 0 ? 0 : 1);
}

// Headless Debian Chromium with the flags every test wants, plus `extra`.
export function launch(extra = []) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'].concat(extra),
  });
}

// Collects the page's script errors (and, with consoleErrors, console errors
// other than the browser's own "status of 4xx" lines) into `errors`.
export function watchErrors(page, errors, consoleErrors = true) {
  page.on('pageerror', (e) => errors.push(e.message));
  if (consoleErrors) page.on('console', (m) => { if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) errors.push(m.text()); });
}

// GET (or `opts`) env.base + p → {status, body: parsed JSON}.
export async function getJson(env, p, opts) {
  const r = await fetch(env.base + p, opts);
  return { status: r.status, body: await r.json() };
}

// Starts tests/browser/<script> with `defaults` under the environment.
// ready: its first line, parsed; request(obj): writes obj as a JSON line and
// resolves to the next line, parsed; exited: its exit code.
export function startHarness(script, defaults) {
  const p = spawn('/usr/bin/python3', [path.join(SRC, 'tests', 'browser', script)],
    { stdio: ['pipe', 'pipe', 'inherit'], env: defaults ? Object.assign({}, defaults, process.env) : undefined });
  const lines = [], waiters = [];
  let code = null;
  readline.createInterface({ input: p.stdout }).on('line', (l) => { if (waiters.length) waiters.shift().resolve(l); else lines.push(l); });
  const exited = new Promise((resolve) => p.on('exit', (c) => {
    code = c;
    for (const w of waiters.splice(0)) w.reject(new Error('harness exited with ' + c + w.when));
    resolve(c);
  }));
  const next = (when = '') => new Promise((resolve, reject) => {
    if (lines.length) resolve(lines.shift());
    else if (code !== null) reject(new Error('harness exited with ' + code + when));
    else waiters.push({ resolve, reject, when });
  });
  const ready = next(' before it was ready').then((line) => {
    try { return JSON.parse(line); } catch (e) { throw new Error('harness said: ' + line); }
  });
  return {
    proc: p, ready, exited,
    async request(obj) { p.stdin.write(JSON.stringify(obj) + '\n'); return JSON.parse(await next()); },
  };
}

// Runs a test against the backend opts.harness (started with opts.env as
// defaults) and exits with the summary. body(env, session): env is the
// harness's ready line, session.h the harness; session.browser, once the
// body has launched it, is closed at the end. A throw is a failure. With
// opts.strict it is reported as the check "browser test ran to the end" and
// the backend must stop cleanly within 2 min (a check of its own); with
// opts.stopCode a non-zero exit of the harness fails the run (a FAIL line).
export async function run(opts, body) {
  fs.mkdirSync(ART, { recursive: true });
  const h = startHarness(opts.harness, opts.env);
  const session = { h, browser: null };
  let ok = false;
  try {
    const env = await h.ready;
    await body(env, session);
    ok = true;
  } catch (e) {
    if (opts.strict) check(false, 'browser test ran to the end', e.stack || e);
    else { console.log('FAIL - ' + (e.stack || e)); tally.failed++; }
  } finally {
    if (session.browser) await session.browser.close().catch(() => {});
    h.proc.stdin.end('stop\n');
    if (opts.strict) {
      const hc = await Promise.race([h.exited, new Promise((r) => setTimeout(() => r('timeout'), 120000))]);
      if (hc === 'timeout') h.proc.kill('SIGKILL');
      check(hc === 0, 'the backend stopped cleanly', 'harness exit ' + hc);
    } else {
      const hc = await h.exited;
      if (opts.stopCode && hc !== 0) { console.log('FAIL - harness exited ' + hc); ok = false; }
    }
  }
  finish(ok);
}
