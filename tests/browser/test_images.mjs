// Browser test of the images in the dashboard and of the OHIF viewer, in
// headless Debian Chromium driven by playwright-core. The backend is real:
// dashboard_harness.py loads a generated archive through the pipeline and
// serves it with metadb-api, whose /dicomweb renders the archive's files and
// whose /viewer/ serves the OHIF build deploy/install.sh put in the cache.
//
//   - the series table shows a thumbnail per series (decoded images, loaded
//     lazily: with the thumbnails held back the table is already there), and
//     a failing thumbnail leaves a neutral placeholder;
//   - the series page's viewer shows the instances in instance order; the
//     arrow keys, the mouse wheel and the slider change the image; a window
//     preset changes the pixels; the instance's metadata is beside it;
//   - "Open in viewer" opens OHIF, which asks metadb's DICOMweb for the study
//     and draws a non-blank image.
// Screenshots: tests/artifacts/images_*.png.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ART, check, finish, getJson, launch, run, watchErrors } from './harness.mjs';

const HOME = process.env.METADB_HOME || path.join(os.homedir(), '.metadb');
const OHIF_INDEX = path.join(HOME, 'cache', 'ohif', 'viewer', 'index.html');

// The backend requires a read token (api.read_tokens): every read sends it.
async function api(env, p, token = env.read_token) {
  return getJson(env, p, { headers: token ? { Authorization: 'Bearer ' + token } : {} });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ART, 'images_' + name + '.png'), fullPage: false });
}

// Pixels of an <img> (same-origin blob: URL, so the canvas is not tainted):
// a short digest and the spread of grey levels.
async function imgPixels(page, sel) {
  return page.$eval(sel, (img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let h = 2166136261, min = 255, max = 0;
    for (let i = 0; i < d.length; i += 4) {
      h = Math.imul(h ^ d[i], 16777619) >>> 0;
      min = Math.min(min, d[i]); max = Math.max(max, d[i]);
    }
    return { w: c.width, h: c.height, digest: h.toString(16), min, max };
  });
}

// A PNG screenshot (Buffer) analysed in a page: how many distinct grey
// levels, and the share of pixels more than 8 levels away from the most
// common one (the background). The viewport's text overlays alone stay
// under 3 %; a drawn image covers far more.
async function screenshotStats(page, png) {
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const hist = new Array(256).fill(0);
    for (let i = 0; i < d.length; i += 4) hist[Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2])]++;
    const mode = hist.indexOf(Math.max(...hist));
    let away = 0;
    hist.forEach((n, y) => { if (Math.abs(y - mode) > 8) away += n; });
    return { w: c.width, h: c.height, levels: hist.filter((n) => n > 0).length, background: mode, image: away / (d.length / 4) };
  }, png.toString('base64'));
}

// Waits until OHIF's viewport shows a non-blank image (screenshots of the
// viewport analysed by screenshotStats in page `helper`). null after 90 s.
async function ohifDrawn(ohif, helper) {
  const t0 = Date.now();
  while (Date.now() - t0 < 90000) {
    await ohif.waitForTimeout(1500);
    const vp = ohif.locator('.cornerstone-viewport-element, [data-viewportid]').first();
    if (await vp.count() === 0) continue;
    const bb = await vp.boundingBox();
    if (!bb || bb.width < 50 || bb.height < 50) continue;
    const st = await screenshotStats(helper, await ohif.screenshot({ clip: bb }));
    if (st.levels > 8 && st.image > 0.1) return Object.assign(st, { ms: Date.now() - t0 });
  }
  return null;
}

async function viewportText(ohif) {
  return (await ohif.$$eval('[data-viewportid], .viewport-wrapper, .cornerstone-viewport-element', (els) => els.map((e) => e.innerText || ''))).join(' | ');
}

// Without the OHIF build there is nothing to start the backend for.
if (!check(fs.existsSync(OHIF_INDEX), 'the OHIF viewer is installed (' + OHIF_INDEX + ')', 'run deploy/install.sh (ohif_step)')) finish(false);

run({ harness: 'dashboard_harness.py', env: { DASH_PATIENTS: '8', DASH_READ_TOKEN: '1', DASH_COMPRESS: 'j2k' }, strict: true }, async (env, session) => {
  const pageErrors = [];
  console.log('# backend ' + env.base + ' database ' + env.db);
  session.browser = await launch(['--disable-quic', '--use-angle=swiftshader', '--enable-unsafe-swiftshader']);
  const ctx = await session.browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await ctx.newPage();
  watchErrors(page, pageErrors);
  const urls = [];
  ctx.on('request', (r) => urls.push(r.url()));

  // ---- reads need a token: the images too; the user saves it with the Token button
  check(!!env.read_token, 'the backend requires read tokens');
  const first = (await api(env, '/api/series?limit=1&fields=study_id')).body.items[0];
  const thumbPath = '/dicomweb/studies/' + first.study_id + '/series/' + first._id + '/thumbnail';
  const anon = await fetch(env.base + thumbPath);
  const withTok = await fetch(env.base + thumbPath, { headers: { Authorization: 'Bearer ' + env.read_token, Accept: 'image/png' } });
  check(anon.status === 401 && withTok.status === 200 && /^image\//.test(withTok.headers.get('content-type') || ''),
    'a thumbnail needs the read token (401 without, ' + withTok.status + ' ' + withTok.headers.get('content-type') + ' with)');
  await page.goto(env.base + '/#/studies');
  await page.click('#token-btn');
  await page.fill('[data-testid=token-input]', env.read_token);
  await page.click('[data-testid=token-save]');

  // ---- series table: the table first, thumbnails after
  const series = await api(env, '/api/series?limit=50&sort=study_id,series_number&fields=study_id,instance_count,series_number');
  check(series.body.total > 0, 'the catalogue has series (' + series.body.total + ')');
  let release;
  const held = new Promise((r) => { release = r; });
  let heldCount = 0;
  const failSeries = series.body.items[series.body.items.length - 1]._id;
  await page.route('**/dicomweb/studies/*/series/*/thumbnail*', async (route) => {
    heldCount++;
    await held;
    if (route.request().url().includes(encodeURIComponent(failSeries))) {
      await route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":"not_found","detail":"test: held back"}' });
    } else await route.continue();
  });
  // a short window with the first row at its bottom edge: the rows after it are below the fold
  await page.setViewportSize({ width: 1440, height: 300 });
  await page.goto(env.base + '/#/series?limit=50');
  await page.waitForSelector('[data-testid=row]', { timeout: 20000 });
  await page.$eval('[data-testid=row]', (tr) => tr.scrollIntoView({ block: 'end' }));
  const rows = await page.locator('[data-testid=row]').count();
  const pending = await page.locator('[data-testid=thumb]:not([data-state=loaded])').count();
  check(rows === series.body.items.length && pending === rows,
    'the series table is shown while its thumbnails are still loading (' + rows + ' rows, ' + pending + ' pending)');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=thumb][data-state=loading]').length > 0, null, { timeout: 10000 });
  const fold = await page.$$eval('[data-testid=thumb]', (ts) => ts.map((t) => ({ below: t.getBoundingClientRect().top > innerHeight + 200, state: t.dataset.state || '' })));
  const below = fold.filter((f) => f.below);
  check(below.length > 0 && below.every((f) => f.state === '') && fold.some((f) => !f.below && f.state === 'loading'),
    'thumbnails load lazily: rows in view ask, rows below the fold do not yet (' + below.length + ' below)', JSON.stringify(fold));
  release();
  const tRelease = Date.now();
  await page.locator('[data-testid=row]').last().scrollIntoViewIfNeeded(); // lazy: rows below the fold load when scrolled to
  await page.waitForFunction(() => Array.from(document.querySelectorAll('[data-testid=thumb]')).every((t) => t.dataset.state === 'loaded' || t.dataset.state === 'error'),
    null, { timeout: 60000 }).catch(async (e) => {
    throw new Error(e.message + ' states: ' + JSON.stringify(await page.$$eval('[data-testid=thumb]', (ts) => ts.map((t) => t.dataset.state || 'none'))));
  });
  console.log('# thumbnails of ' + rows + ' series loaded in ' + (Date.now() - tRelease) + ' ms after release');
  const thumbs = await page.$$eval('[data-testid=row]', (trs) => trs.map((tr) => {
    const box = tr.querySelector('[data-testid=thumb]');
    const img = box.querySelector('img');
    return { uid: tr.dataset.uid, state: box.dataset.state, w: img ? img.naturalWidth : 0, h: img ? img.naturalHeight : 0 };
  }));
  const damagedSeries = env.damaged.series;
  const good = thumbs.filter((t) => t.uid !== failSeries && t.uid !== damagedSeries);
  const bad = good.filter((t) => t.state !== 'loaded' || !(t.w > 0 && t.h > 0));
  check(good.length > 0 && bad.length === 0, 'every series row shows a decoded thumbnail (' + (good.length - bad.length) + '/' + good.length + ', naturalWidth > 0)',
    JSON.stringify(bad.slice(0, 5)));
  const failed404 = thumbs.find((t) => t.uid === failSeries);
  check(failed404 && failed404.state === 'error' && await page.locator('[data-testid=row][data-uid="' + failSeries + '"] .thumb.missing').count() === 1,
    'a thumbnail that fails leaves a neutral placeholder', JSON.stringify(failed404));
  check(heldCount >= Math.min(rows, 4), 'thumbnails are requested from /dicomweb/.../thumbnail (' + heldCount + ' requests)');
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.$eval('[data-testid=table]', (t) => t.scrollIntoView({ block: 'start' }));
  await shot(page, 'series_table');
  await page.unroute('**/dicomweb/studies/*/series/*/thumbnail*');

  // ---- study page: its series with thumbnails, and "Open in viewer" for the study
  const studyUid = series.body.items.find((x) => x._id !== damagedSeries && x._id !== failSeries).study_id;
  await page.goto(env.base + '/#/studies/' + encodeURIComponent(studyUid));
  await page.waitForSelector('[data-testid=study-series-row]', { timeout: 20000 });
  await page.waitForFunction(() => Array.from(document.querySelectorAll('[data-testid=study-series-row] [data-testid=thumb]')).every((t) => t.dataset.state === 'loaded' || t.dataset.state === 'error'),
    null, { timeout: 30000 });
  const studyThumbs = await page.$$eval('[data-testid=study-series-row]', (trs) => trs.map((tr) => {
    const img = tr.querySelector('[data-testid=thumb] img');
    return { uid: tr.dataset.uid, w: img ? img.naturalWidth : 0 };
  }));
  const studyOk = studyThumbs.filter((t) => t.uid !== damagedSeries);
  check(studyOk.length > 0 && studyOk.every((t) => t.w > 0), 'the study page shows a thumbnail per series (' + studyOk.length + ')', JSON.stringify(studyThumbs));
  const studyLink = await page.getAttribute('[data-testid=open-viewer]', 'href');
  check(studyLink === '/viewer/viewer?StudyInstanceUIDs=' + encodeURIComponent(studyUid), 'the study page links the study to the viewer', studyLink);

  // ---- series viewer: the series with the most instances (not the damaged one)
  // preferably not its study's first series, so that OHIF showing it proves the link's initialSeriesInstanceUID
  const firstOfStudy = new Set();
  for (const x of series.body.items) if (!series.body.items.some((y) => y.study_id === x.study_id && (y.series_number ?? 0) < (x.series_number ?? 0))) firstOfStudy.add(x._id);
  const usable = series.body.items.filter((x) => x._id !== damagedSeries && x._id !== failSeries).sort((a, b) => (b.instance_count || 0) - (a.instance_count || 0));
  const pick = usable.find((x) => !firstOfStudy.has(x._id) && x.instance_count >= 3) || usable[0];
  const pickNotFirst = !firstOfStudy.has(pick._id);
  const inst = await api(env, '/api/instances?series_id=' + encodeURIComponent(pick._id) + '&sort=instance_number,_id&fields=instance_number&limit=1000');
  const order = inst.body.items.map((d) => d._id);
  check(order.length >= 3, 'the picked series has several instances (' + order.length + ')');
  await page.goto(env.base + '/#/series/' + encodeURIComponent(pick._id));
  await page.waitForSelector('[data-testid=series-viewer] [data-testid=viewer-image][data-sop]', { timeout: 30000 });
  const viewer = page.locator('[data-testid=series-viewer]');
  const state = async () => page.$eval('[data-testid=viewer-image]', (i) => ({ sop: i.dataset.sop, index: Number(i.dataset.index), preset: i.dataset.preset }));
  const waitShown = async (pred, what) => {
    const t0 = Date.now();
    for (;;) {
      const s = await state();
      if (pred(s)) return s;
      if (Date.now() - t0 > 15000) throw new Error('viewer never showed ' + what + ': ' + JSON.stringify(s));
      await page.waitForTimeout(50);
    }
  };
  let s0 = await state();
  check(s0.sop === order[s0.index], 'the viewer opens on an instance in instance order (index ' + s0.index + ' of ' + order.length + ')', JSON.stringify(s0));
  await page.waitForFunction((sop) => document.querySelector('[data-testid=viewer-meta]').textContent.includes(sop), s0.sop, { timeout: 15000 }).catch(() => {});
  const metaText = await page.textContent('[data-testid=viewer-meta]');
  check(metaText.includes(s0.sop) && /Instance/.test(metaText), 'the instance\'s metadata is shown beside the image', metaText.slice(0, 300));
  await viewer.focus();
  await page.keyboard.press('Home');
  s0 = await waitShown((s) => s.index === 0, 'the first instance');
  const p0 = await imgPixels(page, '[data-testid=viewer-image]');
  check(s0.sop === order[0] && p0.w > 0, 'Home shows the first instance (' + p0.w + 'x' + p0.h + ')');
  await page.keyboard.press('ArrowDown');
  const s1 = await waitShown((s) => s.index === 1, 'the second instance');
  const p1 = await imgPixels(page, '[data-testid=viewer-image]');
  check(s1.sop === order[1] && p1.digest !== p0.digest, 'ArrowDown scrolls to the next instance and the image changes',
    JSON.stringify({ s1, p0: p0.digest, p1: p1.digest }));
  await page.keyboard.press('ArrowUp');
  await waitShown((s) => s.index === 0, 'the first instance again');
  // one step after another, timed in the page: key event to the new image loaded
  const steps = await page.evaluate(async (n) => {
    const root = document.querySelector('[data-testid=series-viewer]');
    const img = root.querySelector('[data-testid=viewer-image]');
    const out = [];
    for (let k = 1; k < n; k++) {
      const t = performance.now();
      const done = new Promise((resolve, reject) => {
        const mo = new MutationObserver(() => { if (img.dataset.index === String(k)) { mo.disconnect(); resolve(); } });
        mo.observe(img, { attributes: true, attributeFilter: ['data-index'] });
        setTimeout(() => { mo.disconnect(); reject(new Error('instance ' + k + ' not shown in 15 s')); }, 15000);
      });
      root.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
      await done;
      out.push(Math.round(performance.now() - t));
    }
    return out;
  }, order.length);
  const sorted = steps.slice().sort((x, y) => x - y);
  console.log('# viewer steps (key event to image loaded, ms): median ' + sorted[Math.floor(sorted.length / 2)] + ', max ' + sorted[sorted.length - 1] + ' (' + steps.join(', ') + ')');
  await page.keyboard.press('Home');
  await waitShown((s) => s.index === 0, 'the first instance (Home)');
  const box = await page.locator('[data-testid=viewer-stage]').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.wheel(0, 120);
  const sw = await waitShown((s) => s.index === 1, 'the instance after a wheel step');
  check(sw.sop === order[1], 'the mouse wheel scrolls through the instances');
  const last = order.length;
  await page.keyboard.press('End');
  const se = await waitShown((s) => s.index === last - 1, 'the last instance (End)');
  await page.keyboard.press('PageUp');
  const spu = await waitShown((s) => s.index === Math.max(0, last - 11), 'ten instances back (PageUp)');
  check(se.sop === order[last - 1] && spu.sop === order[Math.max(0, last - 11)], 'End and PageUp reach the expected instances');
  await page.locator('[data-testid=viewer-slider]').fill(String(Math.ceil(last / 2)));
  const smid = await waitShown((s) => s.index === Math.ceil(last / 2) - 1, 'the middle instance (slider)');
  check(smid.sop === order[Math.ceil(last / 2) - 1], 'the slider goes to the instance it points at');
  await page.locator('[data-testid=viewer-slider]').fill(String(last));
  const sl = await waitShown((s) => s.index === last - 1, 'the last instance');
  check(sl.sop === order[last - 1] && (await page.textContent('[data-testid=viewer-pos]')).trim() === last + ' / ' + last,
    'the slider goes to the last instance');
  await page.keyboard.press('Home');
  await waitShown((s) => s.index === 0 && s.preset === 'default', 'the first instance, default window');
  const pd = await imgPixels(page, '[data-testid=viewer-image]');
  await viewer.focus();
  await page.keyboard.press('2');
  await waitShown((s) => s.index === 0 && s.preset === 'lung', 'the lung window');
  const pl = await imgPixels(page, '[data-testid=viewer-image]');
  check(pl.digest !== pd.digest && (await page.getAttribute('[data-testid=preset-lung]', 'aria-pressed')) === 'true',
    'key 2 applies the lung window and the pixels change', JSON.stringify({ pd, pl }));
  await page.click('[data-testid=preset-bone]');
  await waitShown((s) => s.index === 0 && s.preset === 'bone', 'the bone window');
  const pb = await imgPixels(page, '[data-testid=viewer-image]');
  check(pb.digest !== pl.digest, 'the bone preset renders differently from the lung preset', JSON.stringify({ pl, pb }));
  await viewer.focus();
  await page.keyboard.press('1');
  await waitShown((s) => s.preset === 'default', 'the default window again');
  check((await imgPixels(page, '[data-testid=viewer-image]')).digest === pd.digest, 'key 1 goes back to the file\'s own window (same pixels as before)');
  await shot(page, 'series_viewer');

  // ---- "Open in viewer": OHIF loads the study from metadb's DICOMweb
  const dicomweb = [];
  ctx.on('response', (r) => { if (r.url().includes('/dicomweb/')) dicomweb.push({ url: r.url().replace(env.base, ''), status: r.status() }); });
  const [ohif] = await Promise.all([ctx.waitForEvent('page'), page.click('[data-testid=open-viewer]')]);
  const ohifErrors = [], ohifRequests = [];
  ohif.on('pageerror', (e) => ohifErrors.push(e.message));
  const cspViolations = [];
  ohif.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  ohif.on('request', (r) => ohifRequests.push({ url: r.url(), auth: r.headers().authorization || '' }));
  const ohifFailed = [];
  ohif.on('response', (r) => { if (r.status() >= 400) ohifFailed.push(r.status() + ' ' + r.url().replace(env.base, '')); });
  await ohif.waitForLoadState('domcontentloaded');
  check(new URL(ohif.url()).pathname.startsWith('/viewer/'), 'the link opens metadb\'s own /viewer/ (' + new URL(ohif.url()).pathname + ')');
  const drawn = await ohifDrawn(ohif, page);
  const pickDoc = (await api(env, '/api/series/' + encodeURIComponent(pick._id) + '?limit=1')).body;
  const vpText = drawn ? await viewportText(ohif) : '';
  check(!!pickDoc.series_description && vpText.includes(pickDoc.series_description),
    'OHIF shows the series the link named (initialSeriesInstanceUID: "' + pickDoc.series_description + '", ' +
    (pickNotFirst ? 'not' : 'also') + ' the study\'s first series)', vpText.slice(0, 300));
  const skipTour = ohif.getByText('Skip all'); // OHIF's first-visit tour
  if (await skipTour.count()) await skipTour.first().click().catch(() => {});
  await ohif.waitForTimeout(300);
  await ohif.screenshot({ path: path.join(ART, 'images_ohif.png') });
  const metaReq = dicomweb.filter((r) => /\/studies\/[^/]+\/series\/[^/]+\/metadata/.test(r.url));
  const frames = dicomweb.filter((r) => /\/frames\//.test(r.url));
  check(metaReq.length > 0 && metaReq.every((r) => r.status === 200), 'OHIF read the series metadata from metadb\'s WADO-RS (' + metaReq.length + ' requests)',
    JSON.stringify(dicomweb.slice(0, 12)));
  check(frames.length > 0 && frames.some((r) => r.status === 200), 'OHIF fetched pixel data from /frames/ (' + frames.length + ' requests)', JSON.stringify(dicomweb.filter((r) => r.status >= 400).slice(0, 8)));
  check(drawn !== null, 'OHIF draws a non-blank image (screenshot tests/artifacts/images_ohif.png)', JSON.stringify(drawn));
  if (drawn) console.log('# OHIF viewport ' + drawn.w + 'x' + drawn.h + ': ' + drawn.levels + ' grey levels, ' + (100 * drawn.image).toFixed(1) + ' % of pixels away from the background, seen ' + drawn.ms + ' ms after the click (1.5 s polling)');
  check(ohifErrors.length === 0, 'no script errors in OHIF', ohifErrors.join('\n'));
  check(ohifFailed.length === 0, 'every file and DICOMweb resource OHIF asked for was there (no 4xx/5xx)', ohifFailed.slice(0, 8).join('\n'));
  check(cspViolations.length === 0, 'OHIF runs within the /viewer/ Content-Security-Policy (no violation reported)', cspViolations.slice(0, 5).join('\n'));
  const authed = ohifRequests.filter((r) => r.url.includes('/dicomweb/'));
  check(authed.length > 0 && authed.every((r) => r.auth === 'Bearer ' + env.read_token),
    'OHIF sent the dashboard\'s token as Authorization with every DICOMweb request (' + authed.length + ')',
    JSON.stringify(authed.filter((r) => r.auth !== 'Bearer ' + env.read_token).slice(0, 3)));
  check(!urls.some((u) => u.includes(env.read_token)) && !ohif.url().includes('token='),
    'the token never appears in a URL sent to the server, nor stays in OHIF\'s address bar', ohif.url());

  // ---- a compressed series (the harness rewrote it with gdcmconv before indexing)
  const cz = env.compressed;
  const J2K = '1.2.840.10008.1.2.4.90'; // JPEG 2000 lossless
  if (check(!!cz && cz.transfer_syntax === J2K, 'the harness compressed a series with gdcmconv (' + (cz && cz.transfer_syntax) + ')', JSON.stringify(cz))) {
    const czDoc = (await api(env, '/api/series/' + encodeURIComponent(cz.series) + '?limit=1')).body;
    await page.goto(env.base + '/#/series/' + encodeURIComponent(cz.series));
    await page.waitForSelector('[data-testid=series-viewer] [data-testid=viewer-image][data-sop]', { timeout: 30000 });
    const pc = await imgPixels(page, '[data-testid=viewer-image]');
    check(pc.w > 0 && pc.max > pc.min, 'the dashboard viewer shows the ' + cz.how + ' series (rendered by the server, ' + pc.w + 'x' + pc.h + ', grey ' + pc.min + '–' + pc.max + ')', JSON.stringify(pc));
    const czPage = await ctx.newPage();
    const czErrors = [], czFailed = [], czCsp = [];
    czPage.on('pageerror', (e) => czErrors.push(e.message));
    czPage.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) czCsp.push(m.text()); });
    czPage.on('response', (r) => { if (r.status() >= 400) czFailed.push(r.status() + ' ' + r.url().replace(env.base, '')); });
    const czFrames = [];
    czPage.on('response', (r) => { if (/\/frames\//.test(r.url())) czFrames.push({ status: r.status(), type: (r.headers()['content-type'] || '').replace(/; boundary=[^;]*/, ''), accept: r.request().headers().accept || '' }); });
    await czPage.goto(env.base + '/viewer/viewer?StudyInstanceUIDs=' + encodeURIComponent(cz.study) + '&initialSeriesInstanceUID=' + encodeURIComponent(cz.series));
    const czDrawn = await ohifDrawn(czPage, page);
    const czText = czDrawn ? await viewportText(czPage) : '';
    await czPage.screenshot({ path: path.join(ART, 'images_ohif_' + cz.how + '.png') });
    check(czDrawn !== null && czText.includes(czDoc.series_description || '\u0000'),
      'OHIF draws the ' + cz.how + ' series "' + czDoc.series_description + '" (screenshot images_ohif_' + cz.how + '.png)', JSON.stringify({ czDrawn, czText: czText.slice(0, 200) }));
    check(czFrames.length > 0 && czFrames.every((f) => f.status === 200), 'its frames came from metadb (' + czFrames.length + ', asked ' + [...new Set(czFrames.map((f) => f.accept))].join(' | ') + ', got ' + [...new Set(czFrames.map((f) => f.type))].join(' | ') + ')', JSON.stringify(czFrames.slice(0, 4)));
    check(czErrors.length === 0 && czFailed.length === 0 && czCsp.length === 0, 'no script error, failed request or CSP violation while OHIF decodes it',
      JSON.stringify({ czErrors, czFailed, czCsp }).slice(0, 1200));
    await czPage.close();
  }

  check(pageErrors.length === 0, 'no script errors in the dashboard', pageErrors.join('\n'));
});
