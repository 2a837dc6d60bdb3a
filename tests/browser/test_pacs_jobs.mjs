// Browser test of the dashboard's job page for PACS retrievals (api/web/app.js
// retrievalTable) in headless Debian Chromium driven by playwright-core.
// Backend: pacs_harness.py (a private Orthanc, the real pipeline with
// metadb-fetcher dropping some instances for good, metadb-api): one job that
// ended completed_with_errors with missing instances, one job waiting in
// `retrieving` while Orthanc is down. The jobs list shows both states; the job
// page of each shows its per-selector retrieval (selector, source, status,
// received/expected, missing SOP UIDs) equal to GET /api/jobs/{id}.
// Screenshot: tests/artifacts/dashboard_pacs_job.png.
import path from 'node:path';
import { ART, check, getJson, launch, run, watchErrors } from './harness.mjs';

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

run({ harness: 'pacs_harness.py' }, async (env, session) => {
  const pageErrors = [];
  console.log('# backend ' + env.base);
  session.browser = await launch(['--disable-gpu']);
  const page = await session.browser.newPage({ viewport: { width: 1440, height: 1000 } });
  watchErrors(page, pageErrors, false);

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
});
