// Browser test of the dashboard's natural-language search box (api/web/nl.js)
// in headless Debian Chromium driven by playwright-core: ask a sentence, see
// the translation (explanation, filter) with the results, get the same rows
// as GET /api/nl, see words that were not understood (and the "partial"
// warning beside the results), corrections shown, a lone word refused, follow a row to the
// series page, open a translation in the raw-query editor. Screenshots go to
// $MDB_BUILD_DIR/test-artifacts/browser/.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SRC, check, chromium, finish } from './harness.mjs';

const BUILD = process.env.MDB_BUILD_DIR || path.join(SRC, 'build');
const MONGO = process.env.METADB_MONGO_URI || 'mongodb://127.0.0.1:27017';
const ART = path.join(BUILD, 'test-artifacts', 'browser');
const DB = 't_nlweb_' + process.pid;
const SUPPORT = path.join(SRC, 'tests', 'integration', 'nl_support.py');

function startApi() {
  return new Promise((resolve, reject) => {
    const p = spawn(path.join(BUILD, 'api', 'metadb-api'), ['--mongo.uri=' + MONGO, '--mongo.db=' + DB,
      '--api.listen=127.0.0.1:0', '--api.web_dir=' + path.join(SRC, 'api', 'web')],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error('metadb-api did not start:\n' + log)); }, 20000);
    const onData = (d) => {
      log += d.toString();
      const m = log.match(/listening on http:\/\/[^:]+:(\d+)\//);
      if (m) { clearTimeout(timer); resolve({ proc: p, port: Number(m[1]), log: () => log }); }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error('metadb-api exited (' + code + '):\n' + log)); });
  });
}

async function main() {
  fs.mkdirSync(ART, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'metadb-nlweb-'));
  const setup = spawnSync('/usr/bin/python3', [SUPPORT, 'setup', DB, path.join(tmp, 'archive'), '12', '11'], { encoding: 'utf8' });
  if (setup.status !== 0) throw new Error('setup failed: ' + setup.stderr);
  let api = null, browser = null;
  try {
    api = await startApi();
    const base = 'http://127.0.0.1:' + api.port;
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'], headless: true });
    const page = await browser.newPage({ viewport: { width: 1366, height: 850 } });
    await page.goto(base + '/#/studies');
    await page.waitForSelector('[data-testid=nl-input]', { timeout: 10000 });
    check(true, 'the search box is in the top bar');

    // focus without text: examples
    await page.click('[data-testid=nl-input]');
    await page.waitForSelector('.nl-chip');
    check((await page.locator('.nl-chip').count()) >= 3, 'an empty box offers example sentences');

    const q = 'thin-slice chest CT series from 2000 to 2004';
    await page.fill('[data-testid=nl-input]', q);
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-results]', { timeout: 15000 });
    const want = await (await fetch(base + '/api/nl?' + new URLSearchParams({ q, limit: '50' }))).json();
    const rows = await page.locator('[data-testid=nl-row]').evaluateAll((trs) => trs.map((t) => t.dataset.uid));
    check(want.total > 0 && rows.length === Math.min(want.total, 50) &&
      JSON.stringify([...rows].sort()) === JSON.stringify(want.items.map((d) => d._id).sort()),
      'the rows are those of GET /api/nl (' + want.total + ' series)', JSON.stringify({ rows: rows.length, total: want.total }));
    const expl = await page.textContent('[data-testid=nl-explanation]');
    const filt = await page.textContent('[data-testid=nl-filter]');
    check(/slice thickness/.test(expl) && /2\.5 mm/.test(expl), 'the explanation names the thin-slice default', expl);
    check(/"slice_thickness"/.test(filt) && /"study_date"/.test(filt) && /"joins"/.test(filt),
      'the translated filter (with its join) is shown', filt.slice(0, 300));
    await page.screenshot({ path: path.join(ART, 'nl_search_results.png'), fullPage: true });

    // a word that is not understood is shown
    await page.fill('[data-testid=nl-input]', 'CT studies with wombats');
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-ignored]', { timeout: 15000 });
    check(/wombats/.test(await page.textContent('[data-testid=nl-ignored]')), 'words not understood are listed');
    // ... and, the translation being partial, next to the results in a warning colour
    const partial = page.locator('[data-testid=nl-partial]');
    check((await partial.count()) === 1 && /wombats/.test(await partial.textContent()),
      'a partial translation is flagged next to the results with the ignored words');
    const look = await partial.evaluate((e) => {
      const cs = getComputedStyle(e);
      const near = e.parentElement.querySelector('[data-testid=nl-total]') !== null;
      return { color: cs.color, bg: cs.backgroundColor, visible: e.offsetWidth > 0 && e.offsetHeight > 0, near };
    });
    const [r, g, b] = (look.color.match(/\d+/g) || []).map(Number);
    check(look.visible && look.near && r > 100 && r > b + 60 && g < r, 'the partial warning is visible, beside the result count, in a warning (amber) colour',
      JSON.stringify(look));
    const api1 = await (await fetch(base + '/api/nl?' + new URLSearchParams({ q: 'CT studies with wombats' }))).json();
    check(api1.confidence === 'partial' && api1.ignored.includes('wombats'), 'GET /api/nl says confidence "partial"', JSON.stringify(api1).slice(0, 200));
    await page.screenshot({ path: path.join(ART, 'nl_search_ignored.png'), fullPage: true });

    // a complete translation shows no warning; a corrected spelling / German word is shown
    await page.fill('[data-testid=nl-input]', 'Siemmens CT Serien');
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-corrections]', { timeout: 15000 });
    const corr = await page.textContent('[data-testid=nl-corrections]');
    check(/Siemmens/.test(corr) && /siemens/i.test(corr) && /Serien/.test(corr) && /series/.test(corr),
      'corrections are shown ("Siemmens → siemens", "Serien → series")', corr);
    check((await page.locator('[data-testid=nl-partial]').count()) === 0, 'a complete translation shows no partial warning');
    await page.screenshot({ path: path.join(ART, 'nl_search_corrected.png'), fullPage: true });

    // a lone unknown word is refused, not answered with everything
    await page.fill('[data-testid=nl-input]', 'scanner');
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-error]', { timeout: 15000 });
    check(/nothing in the sentence was understood/.test(await page.textContent('[data-testid=nl-error]')),
      'a lone filler word is refused with the reason');

    // a row leads to the series page
    await page.fill('[data-testid=nl-input]', 'CT series');
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-row]', { timeout: 15000 });
    const uid = await page.locator('[data-testid=nl-row]').first().getAttribute('data-uid');
    await page.locator('[data-testid=nl-row]').first().click();
    await page.waitForFunction((u) => location.hash === '#/series/' + encodeURIComponent(u), uid, { timeout: 10000 });
    check((await page.locator('[data-testid=nl-panel]').count()) === 0, 'a result row opens its series page and closes the search panel');

    // a translation without joins opens in the raw-query editor
    await page.fill('[data-testid=nl-input]', 'Siemens CT series');
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-raw]', { timeout: 15000 });
    await page.click('[data-testid=nl-raw]');
    await page.waitForSelector('[data-testid=raw-editor]', { timeout: 10000 });
    const text = await page.inputValue('[data-testid=raw-editor]');
    check(/"manufacturer"/.test(text) && /"modality"/.test(text), 'the translation opens in the raw-query editor', text.slice(0, 200));
    await page.screenshot({ path: path.join(ART, 'nl_search_raw.png'), fullPage: true });

    // bad input shows the server's reason
    await page.fill('[data-testid=nl-input]', 'x'.repeat(2100));
    await page.press('[data-testid=nl-input]', 'Enter');
    await page.waitForSelector('[data-testid=nl-error]', { timeout: 15000 });
    check(/too long/.test(await page.textContent('[data-testid=nl-error]')), 'a refused sentence shows the reason');
  } finally {
    if (browser) await browser.close();
    if (api) { api.proc.kill('SIGTERM'); await new Promise((r) => api.proc.once('exit', r)); }
    spawnSync('/usr/bin/python3', [SUPPORT, 'drop', DB]);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  finish();
}

main().catch((e) => { console.log('FAIL - ' + (e.stack || e)); spawnSync('/usr/bin/python3', [SUPPORT, 'drop', DB]); process.exit(1); });
