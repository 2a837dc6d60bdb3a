// Browser test of the dashboard's job page for PACS retrievals (api/web/app.js
// retrievalTable) in headless Debian Chromium driven by playwright-core.
// Backend: pacs_harness.py (a private Orthanc, the real pipeline with
// metadb-fetcher dropping some instances for good, metadb-api): one job that
// ended completed_with_errors with missing instances, one job waiting in
// `retrieving` while Orthanc is down. The jobs list shows both states; the job
// page of each shows its per-selector retrieval (selector, source, status,
// received/expected, missing SOP UIDs) equal to GET /api/jobs/{id}.
// Screenshot: tests/artifacts/dashboard_pacs_job.png.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
let chromium;
try {
  ({ chromium } = require('playwright-core')); // NODE_PATH from tests/run.sh
} catch (e) {
  const home = process.env.METADB_HOME || path.join(os.homedir(), '.metadb');
  ({ chromium } = createRequire(path.join(home, 'cache', 'node', 'node_modules', 'x.js'))('playwright-core'));
}

const SRC = process.env.MDB_SOURCE_DIR || path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const ART = path.join(SRC, 'tests', 'artifacts');
const HARNESS = path.join(SRC, 'tests', 'browser', 'pacs_harness.py');

let passed = 0, failed = 0;
function check(cond, what, detail) {
  if (cond) { passed++; console.log('ok   - ' + what); } else { failed++; console.log('FAIL - ' + what + (detail !== undefined ? '\n       ' + String(detail).slice(0, 1500) : '')); }
  return cond;
}

function startHarness() {
  const p = spawn('/usr/bin/python3', [HARNESS], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => p.on('exit', (code) => resolve(code)));
  const ready = new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: p.stdout });
    rl.once('line', (line) => { try { resolve(JSON.parse(line)); } catch (e) { reject(new Error('harness said: ' + line)); } });
    p.on('exit', (code) => reject(new Error('harness exited with ' + code + ' before it was ready')));
  });
  return { proc: p, ready, exited };
}

async function getJson(env, p) {
  const r = await fetch(env.base + p);
  return { status: r.status, body: await r.json() };
}

/* Rows of the retrieval table in the open job modal, as arrays of cell texts. */
async function retrievalRows(page) {
  return page.evaluate(() => Array.from(document.querySelectorAll('[data-testid=job-retrievals] tbody tr'))
    .map((tr) => Array.from(tr.children).map((td) => td.textContent)));
}

async function openJob(page, env, id) {
  if (await page.locator('[data-testid=modal]').count()) await page.click('[data-testid=modal] .head button'); // Close
  await page.goto(env.base + '/#/jobs');
  const row = '[data-testid=job-row][data-job="' + id + '"]';
  await page.waitForSelector(row, { timeout: 20000 });
  const state = await page.textContent(row + ' [data-testid=job-state]');
  await page.click(row);
  await page.waitForSelector('[data-testid=modal] [data-testid=job-retrievals]', { timeout: 10000 });
  return state;
}

async function main() {
  fs.mkdirSync(ART, { recursive: true });
  const h = startHarness();
  let browser = null;
  const pageErrors = [];
  try {
    const env = await h.ready;
    console.log('# backend ' + env.base);
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium', headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));

    // ---- the job that lost instances for good
    const inc = env.jobs.incomplete;
    const doc = (await getJson(env, '/api/jobs/' + encodeURIComponent(inc))).body;
    let state = await openJob(page, env, inc);
    check(state === 'completed with errors', 'the jobs list shows the incomplete job as completed with errors', state);
    let rows = await retrievalRows(page);
    const want = Object.values(doc.retrievals || {}).sort((a, b) => a.index - b.index);
    check(rows.length === 2 && rows.length === want.length, 'one retrieval row per selector (2)', JSON.stringify(rows));
    check(rows.every((r, i) => r[0] === want[i].selector && r[1] === 'orthanc' && r[2] === want[i].status &&
      Number(r[4].replace(/,/g, '')) === want[i].landed && Number(r[5].replace(/,/g, '')) === want[i].expected &&
      Number(r[6].replace(/,/g, '')) === want[i].missing_count),
      'each row equals the API: selector, source, status, received, expected, missing', JSON.stringify(rows) + ' vs ' + JSON.stringify(want));
    const shown = rows.map((r) => r[7]).join(' ');
    check(env.dropped.every((s) => shown.includes(s)) || env.dropped.length > 10,
      'the missing SOP Instance UIDs are named on the page (' + env.dropped.length + ')', shown);
    check(rows.some((r) => r[2] === 'incomplete'), 'a selector is shown incomplete');
    const sels = await page.evaluate(() => {
      const hs = Array.from(document.querySelectorAll('[data-testid=modal] h2'));
      const t = hs.find((x) => x.textContent.startsWith('Selectors'));
      const tbl = t && t.nextElementSibling;
      return tbl ? Array.from(tbl.querySelectorAll('tbody tr')).map((tr) => Array.from(tr.children).map((td) => td.textContent)) : [];
    });
    check(sels.length === 2 && sels.every((r) => r[2] === 'found' && /retrieved from pacs:orthanc, 1 instance\(s\) missing|retrieved from pacs:orthanc/.test(r[4])),
      'the selectors table says found, retrieved from pacs:orthanc', JSON.stringify(sels));
    const errs = await page.evaluate(() => Array.from(document.querySelectorAll('[data-testid=modal] table'))
      .map((t) => t.textContent).join(' '));
    check(env.dropped.every((s) => errs.includes(s)), 'the errors table names each missing instance');
    await page.screenshot({ path: path.join(ART, 'dashboard_pacs_job.png') });

    // ---- the job waiting while Orthanc is down
    state = await openJob(page, env, env.jobs.waiting);
    check(state === 'retrieving', 'the jobs list shows the waiting job as retrieving', state);
    rows = await retrievalRows(page);
    check(rows.length === 1 && rows[0][0] === 'accession:' + env.accessions[2] && rows[0][2] === 'retrieving',
      'its retrieval row says retrieving for its accession', JSON.stringify(rows));

    check(pageErrors.length === 0, 'no page errors', pageErrors.join('\n'));
  } catch (e) {
    console.log('FAIL - ' + (e.stack || e));
    failed++;
  } finally {
    if (browser) await browser.close();
    h.proc.stdin.end('stop\n');
    await h.exited;
  }
  console.log(passed + ' passed, ' + failed + ' failed');
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

main();
