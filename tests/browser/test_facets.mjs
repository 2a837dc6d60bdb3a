// Browser test of the dashboard's distribution charts (api/web/facets.js,
// Chart.js vendored by deploy/install.sh) in headless Debian Chromium driven
// by playwright-core. Backend: facets_harness.py (a synthetic catalogue in a
// private database, served by the real metadb-api).
// A researcher opens the series list, sees charts whose bars equal
// /api/facets for the list's cohort, clicks the CT bar of the modality chart
// (the filter is added, the table and the charts update), then a slice
// thickness bin (a range filter), and on the studies list a year of the
// study-date chart. Screenshot: tests/artifacts/dashboard_facets.png.
import path from 'node:path';
import { ART, check, getJson, launch, run, watchErrors } from './harness.mjs';

/* Labels and counts the chart on canvas [data-field=field] draws. */
async function chartData(page, field) {
  return page.evaluate((f) => {
    const c = document.querySelector('canvas[data-field="' + f + '"]');
    const ch = c && window.Chart.getChart(c);
    return ch ? { labels: ch.data.labels.map(String), counts: ch.data.datasets[0].data.slice() } : null;
  }, field);
}

/* Click the bar with this label: its centre, from the chart's own layout. */
async function clickBar(page, field, label) {
  const pt = await page.evaluate(([f, l]) => {
    const c = document.querySelector('canvas[data-field="' + f + '"]');
    const ch = window.Chart.getChart(c);
    const i = ch.data.labels.map(String).indexOf(l);
    if (i < 0) return null;
    const bar = ch.getDatasetMeta(0).data[i];
    const r = c.getBoundingClientRect();
    return { x: r.left + bar.x, y: r.top + (bar.y + bar.base) / 2 };
  }, [field, label]);
  if (!pt) throw new Error('no bar ' + label + ' in the ' + field + ' chart');
  await page.mouse.click(pt.x, pt.y);
}

/* Texts of one column of the table, found by its header. */
async function column(page, name) {
  return page.evaluate((n) => {
    const ths = Array.from(document.querySelectorAll('[data-testid=table] thead th'));
    const i = ths.findIndex((th) => th.dataset.testid === 'th-' + n);
    return Array.from(document.querySelectorAll('[data-testid=row]')).map((r) => (i >= 0 ? r.children[i].textContent : null));
  }, name);
}

/* Wait until the hash and the table both reflect the expected cohort. */
async function waitCohort(page, hashPart, total) {
  await page.waitForFunction((h) => decodeURIComponent(location.hash).includes(h), hashPart, { timeout: 10000 });
  await page.waitForFunction((t) => {
    const el = document.querySelector('[data-testid=count]');
    return el && new RegExp('of ' + t + ' ').test(el.textContent.replace(/,/g, ''));
  }, String(total), { timeout: 10000 });
}

run({ harness: 'facets_harness.py' }, async (env, session) => {
  const pageErrors = [];
  console.log('# backend ' + env.base + ' database ' + env.db);
  const lib = await fetch(env.base + '/vendor/chart.umd.min.js');
  check(lib.status === 200 && /javascript/.test(lib.headers.get('content-type') || ''),
    'the vendored chart library is served from the dashboard folder', lib.status + ' ' + lib.headers.get('content-type'));
  session.browser = await launch(['--disable-gpu']);
  const page = await session.browser.newPage({ viewport: { width: 1440, height: 1000 } });
  watchErrors(page, pageErrors);
  await page.addInitScript(() => { localStorage.removeItem('metadb.facets.series'); localStorage.removeItem('metadb.facets.studies'); localStorage.removeItem('metadb.facets.hidden'); });

  // ---- series list: charts visible, equal to /api/facets for the cohort
  await page.goto(env.base + '/#/series');
  await page.waitForSelector('canvas[data-field=modality]', { timeout: 20000 });
  await page.waitForSelector('[data-testid=row]', { timeout: 20000 });
  const box = await page.locator('canvas[data-field=modality]').boundingBox();
  check(box && box.width > 100 && box.height > 100, 'the modality chart is visible', JSON.stringify(box));
  const table = await page.locator('[data-testid=table]').boundingBox();
  check(box && table && box.y < table.y, 'the charts are above the table');
  const fields = 'modality,manufacturer,body_part_examined,slice_thickness,series_date';
  const all = await getJson(env, '/api/facets?level=series&fields=' + fields);
  check(all.status === 200, '/api/facets answers for the series list', JSON.stringify(all.body).slice(0, 300));
  const mod = await chartData(page, 'modality');
  const want = all.body.facets.modality.values;
  check(mod && JSON.stringify(mod.labels) === JSON.stringify(want.map((v) => v.value)) &&
    JSON.stringify(mod.counts) === JSON.stringify(want.map((v) => v.count)),
  'the modality bars are the API\'s counts', JSON.stringify(mod) + ' vs ' + JSON.stringify(want));
  const st = await chartData(page, 'slice_thickness');
  const bins = all.body.facets.slice_thickness.bins;
  check(st && JSON.stringify(st.counts.slice(0, bins.length)) === JSON.stringify(bins.map((b) => b.count)),
    'the slice thickness histogram is the API\'s bins', JSON.stringify(st) + ' vs ' + JSON.stringify(bins));
  check(await page.locator('[data-testid=facets-status]').textContent() === all.body.total.toLocaleString('en-US') + ' series' ||
    (await page.locator('[data-testid=facets-status]').textContent()).includes(String(all.body.total)), 'the charts name the cohort size');

  // ---- click the CT bar: the filter is added, table and charts update
  const ct = await getJson(env, '/api/series?modality=CT&limit=0');
  await clickBar(page, 'modality', 'CT');
  await waitCohort(page, 'modality=CT', ct.body.total);
  check(true, 'clicking the CT bar filters the table to ' + ct.body.total + ' CT series');
  check((await page.locator('[data-testid=filter-modality]').inputValue()) === 'CT', 'the filter bar shows modality = CT');
  const mods = await column(page, 'modality');
  check(mods.length > 0 && mods.every((m) => m === 'CT'), 'every row of the table is CT', mods.join(','));
  await page.waitForFunction(() => {
    const c = document.querySelector('canvas[data-field=modality]');
    const ch = c && window.Chart.getChart(c);
    return ch && ch.data.labels.length === 1 && String(ch.data.labels[0]) === 'CT';
  }, null, { timeout: 10000 });
  const ctFacets = await getJson(env, '/api/facets?level=series&modality=CT&fields=' + fields);
  const st2 = await chartData(page, 'slice_thickness');
  check(JSON.stringify(st2.counts.slice(0, ctFacets.body.facets.slice_thickness.bins.length)) ===
    JSON.stringify(ctFacets.body.facets.slice_thickness.bins.map((b) => b.count)), 'the charts now count the CT cohort', JSON.stringify(st2));

  // ---- click a slice thickness bin: a range filter (gte + lt) on top of modality
  const bin = ctFacets.body.facets.slice_thickness.bins.find((b) => b.count > 0);
  const fmt = (v) => (Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6));
  await clickBar(page, 'slice_thickness', fmt(bin.lo) + '–' + fmt(bin.hi));
  const q = new URLSearchParams([['modality', 'CT'], ['slice_thickness', bin.filter[0]], ['slice_thickness', bin.filter[1]], ['limit', '0']]);
  const thin = await getJson(env, '/api/series?' + q.toString());
  check(thin.body.total === bin.count, 'the bin\'s filter selects the bin\'s count', thin.body.total + ' vs ' + bin.count);
  await waitCohort(page, 'slice_thickness=' + bin.filter[1], bin.count);
  check(true, 'clicking a thickness bin narrows the table to ' + bin.count + ' series');
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(ART, 'dashboard_facets.png'), fullPage: false });
  // the range's second condition shows as a chip and survives "Search" from the filter bar
  const chip = await page.locator('.chip').allTextContents();
  check(chip.some((c) => c.includes('slice_thickness = ' + bin.filter[1])), 'the range\'s upper bound shows as a chip', chip.join(' | '));
  await page.click('[data-testid=apply]');
  await page.waitForTimeout(300);
  const hashNow = decodeURIComponent(await page.evaluate(() => location.hash));
  check(hashNow.includes('slice_thickness=' + bin.filter[0]) && hashNow.includes('slice_thickness=' + bin.filter[1]),
    'searching again from the filter bar keeps both bounds of the range', hashNow);

  // ---- studies list: a year of the study-date chart
  await page.goto(env.base + '/#/studies');
  await page.waitForSelector('canvas[data-field=study_date]', { timeout: 20000 });
  const sf = await getJson(env, '/api/facets?level=studies&fields=study_date');
  const year = sf.body.facets.study_date.bins.find((b) => b.count > 0 && b.value !== sf.body.facets.study_date.bins[0].value) ||
    sf.body.facets.study_date.bins[0];
  await clickBar(page, 'study_date', year.value);
  await waitCohort(page, 'study_date=' + year.value, year.count);
  check(true, 'clicking the year ' + year.value + ' shows its ' + year.count + ' studies');
  const dates = await column(page, 'study_date');
  check(dates.length === Math.min(year.count, 25) && dates.every((d) => (d || '').replace(/-/g, '').startsWith(year.value)),
    'the table lists the year\'s studies', dates.join(','));

  // ---- the chart chooser lists the promoted fields; adding kvp draws it
  await page.goto(env.base + '/#/series');
  await page.waitForSelector('canvas[data-field=modality]', { timeout: 20000 });
  await page.click('[data-testid=facets-choose-btn]');
  await page.waitForSelector('[data-testid=facet-opt-kvp]', { timeout: 10000 });
  await page.check('[data-testid=facet-opt-kvp]');
  await page.waitForSelector('canvas[data-field=kvp]', { timeout: 10000 });
  check(true, 'a chart chosen from /api/fields (kvp) is drawn');

  check(pageErrors.length === 0, 'no page errors', pageErrors.join('\n'));
});
