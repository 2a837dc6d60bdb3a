// Browser test of the metadb dashboard (api/web) in headless Debian Chromium
// driven by playwright-core. The backend is real: dashboard_harness.py loads
// half of a generated archive through index -> producer -> worker -> linker
// and serves it with metadb-api, all on private names. The test then does
// what a researcher does: filter studies by modality, sort, choose a column,
// expand a study, open a series, see a damaged instance flagged, run a raw query (and see a refused one),
// submit a job for the other half and watch its bar reach 100 %, and look at
// the operations page. Every view is compared with the API's own answer.
// Screenshots: tests/artifacts/dashboard_*.png.
import path from 'node:path';
import { ART, check, getJson as api, launch, run, watchErrors } from './harness.mjs';

async function shot(page, name) {
  await page.screenshot({ path: path.join(ART, 'dashboard_' + name + '.png'), fullPage: false });
}

async function rowUids(page, sel = '[data-testid=row]') {
  return page.locator(sel).evaluateAll((rows) => rows.map((r) => r.dataset.uid));
}

run({ harness: 'dashboard_harness.py', strict: true }, async (env, session) => {
  const pageErrors = [];
  console.log('# backend ' + env.base + ' database ' + env.db);
  session.browser = await launch(['--disable-gpu', '--disable-quic']);
  const page = await session.browser.newPage({ viewport: { width: 1440, height: 900 } });
  watchErrors(page, pageErrors);

  // ---- studies table
  await page.goto(env.base + '/#/studies');
  await page.waitForSelector('[data-testid=row]', { timeout: 20000 });
  const all = await api(env, '/api/studies?limit=25&sort=-study_date');
  check(all.body.total > 0, 'the loaded studies are listed (' + all.body.total + ')', JSON.stringify(all.body).slice(0, 300));
  check(JSON.stringify(await rowUids(page)) === JSON.stringify(all.body.items.map((d) => d._id)),
    'the first page equals GET /api/studies (newest first)');
  const countText = await page.textContent('[data-testid=count]');
  check(countText.includes('of ' + all.body.total.toLocaleString('en-US')) || countText.includes('of ' + all.body.total),
    'the pager shows the total', countText);

  // ---- filter by modality (select filled from /api/fields)
  await page.waitForSelector('[data-testid=filter-modality] option[value=CT]', { state: 'attached', timeout: 15000 });
  await page.selectOption('[data-testid=filter-modality]', 'CT');
  await page.waitForFunction(() => location.hash.includes('modality=CT'));
  await page.waitForSelector('[data-testid=row]');
  await page.waitForTimeout(300);
  const ct = await api(env, '/api/studies?modality=CT&limit=25&sort=-study_date');
  const ctRows = await rowUids(page);
  check(ct.body.total > 0 && JSON.stringify(ctRows) === JSON.stringify(ct.body.items.map((d) => d._id)),
    'filtering by modality CT shows the studies of GET /api/studies?modality=CT', JSON.stringify({ ui: ctRows.length, api: ct.body.total }));
  const badges = await page.locator('[data-testid=row] .badge').allTextContents();
  check(badges.includes('CT'), 'CT rows carry a CT badge');
  await shot(page, 'studies_ct');

  // ---- sort by a column and choose a column
  await page.click('[data-testid=th-patient_id]');
  await page.waitForFunction(() => location.hash.includes('sort=patient_id'));
  await page.waitForSelector('[data-testid=row]');
  await page.waitForTimeout(300);
  const byPatient = await api(env, '/api/studies?modality=CT&limit=25&sort=patient_id');
  check(JSON.stringify(await rowUids(page)) === JSON.stringify(byPatient.body.items.map((d) => d._id)),
    'clicking the Patient header sorts by patient');
  await page.click('[data-testid=columns-btn]');
  await page.waitForSelector('[data-testid="col-metadata.PatientSex"]', { timeout: 10000 });
  await page.check('[data-testid="col-metadata.PatientSex"]');
  await page.waitForSelector('[data-testid="th-metadata.PatientSex"]', { timeout: 10000 });
  check(true, 'the column chooser adds a metadata column');
  await page.keyboard.press('Escape');
  await page.mouse.click(5, 860);

  // ---- expand a study
  const firstUid = (await rowUids(page))[0];
  await page.click('[data-testid=row][data-uid="' + firstUid + '"] [data-testid=expand]');
  await page.waitForSelector('[data-testid=subrow] [data-testid=series-row]', { timeout: 15000 });
  const study = await api(env, '/api/studies/' + firstUid);
  const seriesRows = await page.locator('[data-testid=subrow] [data-testid=series-row]').evaluateAll((r) => r.map((x) => x.dataset.uid));
  check(study.body.series_total > 0 && JSON.stringify(seriesRows) === JSON.stringify(study.body.series.map((s) => s._id)),
    'expanding a study lists its series (' + seriesRows.length + ')', JSON.stringify(seriesRows));
  await shot(page, 'study_expanded');

  // ---- open a series
  await page.click('[data-testid=subrow] [data-testid=series-row] >> nth=0');
  await page.waitForSelector('[data-testid=series-title]', { timeout: 15000 });
  await page.waitForSelector('[data-testid=instance-row]', { timeout: 15000 });
  const se = await api(env, '/api/series/' + seriesRows[0] + '?limit=50');
  const nInst = await page.locator('[data-testid=instance-row]').count();
  check(nInst === Math.min(50, se.body.instances.total) && nInst > 0, 'the series page lists its instances (' + nInst + ')');
  const metaRows = await page.locator('[data-testid=metadata] tr').count();
  check(metaRows === Object.keys(se.body.metadata || {}).length && metaRows > 0,
    'the series page shows all its metadata (' + metaRows + ' attributes)');
  await page.click('[data-testid=instance-row] >> nth=0');
  await page.waitForSelector('[data-testid=modal] [data-testid=metadata]', { timeout: 15000 });
  check(true, 'an instance opens with its metadata');
  await shot(page, 'series');
  await page.keyboard.press('Escape');

  // ---- a damaged file's instance (Pixel Data cut short) is flagged
  await page.goto(env.base + '/#/series/' + encodeURIComponent(env.damaged.series));
  await page.waitForSelector('[data-testid=series-integrity]', { timeout: 15000 });
  await page.waitForSelector('[data-testid=instance-row]', { timeout: 15000 });
  const dmg = await api(env, '/api/instances?series_id=' + encodeURIComponent(env.damaged.series) + '&integrity=exists:true');
  check(dmg.status === 200 && dmg.body.total === 1 && dmg.body.items[0]._id === env.damaged.sop,
    'GET /api/instances?integrity=exists:true finds the damaged instance', JSON.stringify(dmg.body).slice(0, 300));
  const note = await page.textContent('[data-testid=series-integrity]');
  check(/\b1 of \d+ instance/.test(note), 'the series page says how many of its instances are damaged', note);
  const flaggedRows = await page.locator('[data-testid=instance-row]:has([data-testid=integrity-flag])').count();
  check(flaggedRows === 1, 'exactly the damaged instance\'s row carries the flag (' + flaggedRows + ')');
  await page.click('[data-testid=instance-row]:has([data-testid=integrity-flag])');
  await page.waitForSelector('[data-testid=modal] [data-testid=instance-integrity]', { timeout: 15000 });
  const itext = await page.textContent('[data-testid=modal] [data-testid=instance-integrity]');
  check(/Pixel Data truncated: [\d,]+ of [\d,]+ bytes present/.test(itext), 'the instance view says what is missing', itext);
  await shot(page, 'series_damaged');
  await page.keyboard.press('Escape');

  // ---- raw query
  await page.goto(env.base + '/#/query');
  await page.waitForSelector('[data-testid=raw-editor]');
  await page.selectOption('[data-testid=raw-collection]', 'series');
  const rawq = { filter: { modality: 'CT', slice_thickness: { $lte: 2.5 } }, sort: { slice_thickness: 1 }, limit: 100 };
  await page.fill('[data-testid=raw-editor]', JSON.stringify(rawq, null, 2));
  await page.click('[data-testid=raw-run]');
  await page.waitForSelector('[data-testid=raw-count]', { timeout: 15000 });
  const raw = await api(env, '/api/query', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(Object.assign({ collection: 'series' }, rawq)) });
  const rawText = await page.textContent('[data-testid=raw-count]');
  check(raw.status === 200 && rawText.includes('of ' + raw.body.total.toLocaleString('en-US') + ' in series'),
    'a raw query shows the server total (' + raw.body.total + ')', rawText);
  const rawRows = await page.locator('[data-testid=raw-table] tbody tr').count();
  check(rawRows === raw.body.items.length, 'the raw result table has every returned document');
  await shot(page, 'raw_query');
  await page.fill('[data-testid=raw-editor]', '{"filter": {"$where": "this.slice_thickness < 2.5"}}');
  await page.click('[data-testid=raw-run]');
  await page.waitForSelector('[data-testid=raw-result] [data-testid=error]', { timeout: 10000 });
  const refusal = await page.textContent('[data-testid=raw-result] [data-testid=error]');
  check(/bad_query/.test(refusal) && /JavaScript/.test(refusal), 'a $where query is refused with the reason', refusal);
  await page.fill('[data-testid=raw-editor]', '{"filter": ');
  check(await page.locator('[data-testid=raw-editor].invalid').count() === 1, 'malformed JSON is flagged while typing');

  // ---- submit a job and watch it reach 100 %
  await page.goto(env.base + '/#/jobs');
  await page.waitForSelector('[data-testid=job-form]');
  await page.fill('[data-testid=job-researcher_id]', env.researcher);
  await page.fill('[data-testid=job-collection]', env.collection);
  await page.fill('[data-testid=job-patient_ids]', env.remaining_patients.join('\n'));
  await page.fill('[data-testid=job-token]', env.token);
  await page.click('[data-testid=job-submit]');
  await page.waitForSelector('[data-testid=job-submitted]', { timeout: 20000 });
  const jobId = await page.getAttribute('[data-testid=job-submitted]', 'data-job');
  check(/^[0-9a-f-]{36}$/.test(jobId || ''), 'the job was accepted (' + jobId + ')');
  const bar = '[data-testid=job-progress][data-job="' + jobId + '"]';
  await page.waitForSelector(bar, { timeout: 20000 });
  let seen = new Set(), shotTaken = false;
  const t0 = Date.now();
  let value = 0;
  while (Date.now() - t0 < 300000) {
    value = Number(await page.getAttribute(bar, 'aria-valuenow'));
    seen.add(value);
    if (!shotTaken && value > 0 && value < 100) { await shot(page, 'job_running'); shotTaken = true; }
    if (value >= 100) break;
    await page.waitForTimeout(250);
  }
  const state = await page.textContent('[data-testid=job-row][data-job="' + jobId + '"] [data-testid=job-state]');
  check(value === 100 && state === 'completed', 'the job bar reaches 100 % and the job completes (' + ((Date.now() - t0) / 1000).toFixed(0) + ' s)',
    'value ' + value + ' state ' + state + ' seen ' + [...seen].join(','));
  const job = await api(env, '/api/jobs/' + jobId);
  check(job.body.files_total > 0 && job.body.files_done === job.body.files_total && job.body.files_failed === 0,
    'the job document agrees (' + job.body.files_done + '/' + job.body.files_total + ' files)', JSON.stringify(job.body).slice(0, 400));
  await shot(page, 'job_done');
  const after = await api(env, '/api/studies?limit=1');
  check(after.body.total === env.manifest.studies, 'every study of the archive is in the catalogue now (' + after.body.total + ')');

  // ---- operations page
  await page.goto(env.base + '/#/ops');
  await page.waitForSelector('[data-testid=lag-row]', { timeout: 30000 });
  // two samples (the page polls every 3 s) make lines, and a throughput point
  await page.waitForFunction(() => Array.from(document.querySelectorAll('[data-testid=lag-chart] path')).some((p) => p.getAttribute('d').includes('L')) &&
    document.querySelectorAll('[data-testid=throughput-chart] path').length > 0, null, { timeout: 30000 });
  const lagRows = await page.locator('[data-testid=lag-row]').count();
  const lag = await api(env, '/api/lag');
  const parts = lag.body.groups.reduce((n, g) => n + (g.partitions || []).length, 0);
  check(lagRows === parts && parts > 0, 'the lag table has one row per group and partition (' + parts + ')');
  const groups = await page.locator('[data-testid=lag-cards] .card .label').allTextContents();
  check(groups.some((g) => g.endsWith('.workers')) && groups.some((g) => g.endsWith('.linkers')),
    'the test\'s worker and linker groups are shown', groups.join(', '));
  await page.selectOption('[data-testid=lag-focus]', { index: 1 });
  await page.waitForTimeout(500);
  check(await page.locator('[data-testid=lag-chart] path').count() > 0, 'lag per partition of one group is drawn');
  await shot(page, 'operations');

  check(pageErrors.length === 0, 'no script errors in the page', pageErrors.join('\n'));
});
