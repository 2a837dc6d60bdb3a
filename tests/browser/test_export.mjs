// Browser test of cohort export in the dashboard (issue 15), headless Debian
// Chromium driven by playwright-core. Backend: export_harness.py (a
// synthetic catalogue in a private database, served by metadb-api; it also
// runs `metadb export` on request, so credentials stay there).
// A researcher filters the series list (a study-level condition included),
// adds the study's patient as a column, downloads the table (Export ▸ CSV)
// and the file manifest: each download must equal `metadb export` of the same
// filter byte for byte. "Open as raw query" must carry the study-level
// condition (the raw editor returns the list's rows), and a condition with
// no JSON form must be refused with its reason shown.
// Screenshots: tests/artifacts/export_*.png.
import fs from 'node:fs';
import path from 'node:path';
import { ART, check, getJson as apiJson, launch, run, watchErrors } from './harness.mjs';

// `metadb export ARGS` run by the harness on its database → {rc, stdout, stderr}
function exportCli(session, args) {
  return session.h.request(args);
}

async function download(page, testid) {
  await page.click('[data-testid=export-btn]');
  const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 20000 }), page.click('[data-testid=' + testid + ']')]);
  const file = await dl.path();
  return { name: dl.suggestedFilename(), text: fs.readFileSync(file, 'utf8') };
}

run({ harness: 'export_harness.py', stopCode: true }, async (env, session) => {
  const pageErrors = [];
  console.log('# backend ' + env.base + ' database ' + env.db);
  session.browser = await launch(['--disable-gpu', '--disable-quic']);
  const context = await session.browser.newContext({ viewport: { width: 1440, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  watchErrors(page, pageErrors);

  // ---- a series cohort with a study-level condition
  const filter = 'modality=CT&study_date=2000-2001';
  await page.goto(env.base + '/#/series?' + filter);
  await page.waitForSelector('[data-testid=row]', { timeout: 20000 });
  const listTotal = (await apiJson(env, '/api/series?' + filter + '&limit=0')).body.total;
  check(listTotal > 25, 'the cohort is larger than one page (' + listTotal + ' series)');

  // ---- a parent column: the study's patient
  await page.click('[data-testid=columns-btn]');
  await page.waitForSelector('[data-testid="col-study.patient_id"]', { timeout: 10000 });
  await page.check('[data-testid="col-study.patient_id"]');
  await page.waitForSelector('[data-testid="th-study.patient_id"]', { timeout: 10000 });
  await page.click('h1'); // close the menu
  const cols = await page.evaluate(() => JSON.parse(localStorage.getItem('metadb.cols.series')));
  check(cols.includes('study.patient_id'), 'the column is remembered', cols);
  const idx = await page.locator('thead th').evaluateAll((ths) => ths.findIndex((t) => t.dataset.testid === 'th-study.patient_id'));
  const shown = await page.locator('[data-testid=row]').evaluateAll((rows, i) => rows.map((r) => [r.dataset.uid, r.children[i].textContent]), idx);
  const page1 = await apiJson(env, '/api/series?' + filter + '&sort=study_id,series_number&limit=25&fields=study.patient_id');
  const want = page1.body.items.map((d) => [d._id, d.study.patient_id]);
  check(JSON.stringify(shown) === JSON.stringify(want) && want.length === 25 && want.every((x) => /^LIDC-IDRI-/.test(x[1])),
    'the Patient column shows each series\' study patient (as the API joins it)', JSON.stringify(shown.slice(0, 3)) + ' vs ' + JSON.stringify(want.slice(0, 3)));
  await page.screenshot({ path: path.join(ART, 'export_parent_column.png') });

  // ---- Export ▸ CSV equals metadb export of the same filter
  const csv = await download(page, 'export-csv');
  check(/^metadb-series-\d{8}T\d{6}Z\.csv$/.test(csv.name), 'the download is named after the level and time: ' + csv.name);
  const lines = csv.text.split('\r\n');
  check(lines.length - 2 === listTotal, 'the CSV has every row of the cohort, not one page (' + (lines.length - 2) + ')');
  check(lines[0] === ['_id'].concat(cols).join(','), 'its columns are the table\'s (study.patient_id included)', lines[0]);
  const cli = await exportCli(session, ['series', '--where', 'modality=CT', '--where', 'study_date=2000-2001', '--fields', cols.join(','),
    '--sort', 'study_id,series_number']);
  check(cli.rc === 0 && cli.stdout === csv.text, 'the downloaded CSV equals `metadb export` of the same filter, byte for byte',
    cli.stderr + '\n' + cli.stdout.slice(0, 300) + '\n---\n' + csv.text.slice(0, 300));

  // ---- the file manifest and the sidecar
  const man = await download(page, 'export-manifest');
  const mcli = await exportCli(session, ['manifest', 'series', '--where', 'modality=CT', '--where', 'study_date=2000-2001']);
  check(mcli.rc === 0 && mcli.stdout === man.text && man.text.startsWith('path,sop_instance_uid,series_instance_uid,study_instance_uid,size\r\n'),
    'the downloaded manifest equals `metadb export manifest` (' + (man.text.split('\r\n').length - 2) + ' files)', mcli.stderr);
  const side = await download(page, 'export-sidecar');
  const sj = JSON.parse(side.text);
  check(sj.counts && sj.counts.rows === listTotal && sj.query.parents && sj.query.parents.studies && sj.metadb_version,
    'the sidecar describes the cohort (rows, parents, version)', side.text.slice(0, 400));

  // ---- Open as raw query carries the study-level condition
  await page.click('[data-testid=as-raw]');
  await page.waitForSelector('[data-testid=raw-editor]', { timeout: 10000 });
  const text = await page.inputValue('[data-testid=raw-editor]');
  const raw = JSON.parse(text);
  check(raw.parents && raw.parents.studies && JSON.stringify(raw.parents.studies).includes('20000101'),
    'the raw editor holds the study-level condition as parents.studies', text);
  check(raw.filter && raw.filter.modality === 'CT', 'and the series condition as its filter', text);
  await page.click('[data-testid=raw-run]');
  await page.waitForSelector('[data-testid=raw-count]', { timeout: 20000 });
  const countText = await page.textContent('[data-testid=raw-count]');
  check(new RegExp(' of ' + listTotal.toLocaleString('en-US') + ' in series').test(countText.replace(/\u202f|\u00a0/g, ',')),
    'the raw query matches the list\'s ' + listTotal + ' series, not more', countText);
  await page.screenshot({ path: path.join(ART, 'export_raw_query.png') });

  // ---- a condition with no JSON form: refused, with the reason shown
  await page.goto(env.base + '/#/series?series_description=' + encodeURIComponent('ne:Axial 1*,x'));
  await page.waitForSelector('[data-testid=row]', { timeout: 20000 });
  await page.click('[data-testid=as-raw]');
  await page.waitForSelector('#toast.show', { timeout: 5000 });
  const toast = await page.textContent('#toast');
  check(/Cannot open as a raw query: .*wildcard/.test(toast), 'refused with the reason shown', toast);
  check((await page.evaluate(() => location.hash)).startsWith('#/series'), 'and the list stays open');

  // ---- studies page has Export too
  await page.goto(env.base + '/#/studies?instance_count=gt:15&modality=CR');
  await page.waitForSelector('[data-testid=row]', { timeout: 20000 });
  const st = await download(page, 'export-csv');
  const scols = await page.evaluate(() => JSON.parse(localStorage.getItem('metadb.cols.studies') || 'null'));
  const studyCols = scols || ['patient_id', 'study_date', 'modalities', 'accession_number', 'study_description', 'collection_ids'];
  const scli = await exportCli(session, ['studies', '--where', 'instance_count=gt:15', '--where', 'modality=CR', '--fields', studyCols.join(','), '--sort', '-study_date']);
  check(scli.rc === 0 && scli.stdout === st.text && st.text.split('\r\n').length > 2,
    'studies page: Export ▸ CSV equals `metadb export studies`', scli.stderr + st.text.slice(0, 200));

  check(pageErrors.length === 0, 'no page errors', pageErrors.join('\n'));
});
