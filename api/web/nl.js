/* metadb dashboard: natural-language search box (GET /api/nl).
 *
 * Self-contained: adds an "Ask" box to the top bar and a results panel above
 * the page. The translation (level, filter, joins, explanation, words not
 * understood, LLM fallback message) is always shown with the results, so the
 * user sees how the sentence was read before trusting the answer. Rows link
 * to the dashboard's own study/series pages; a translation without joins can
 * be opened in the raw-query editor. Uses the token saved by the dashboard
 * (localStorage "metadb.token"). Include with <script src="nl.js" defer>. */
(function () {
  'use strict';

  const EXAMPLES = [
    'thin-slice chest CT series from 2000 to 2001, Siemens scanners',
    'studies of female patients older than 60',
    'non-contrast CT series in the last 5 years',
    'x-ray studies excluding Agfa',
    'images of patient LIDC-IDRI-0001',
  ];
  const COLUMNS = {
    studies: ['_id', 'patient_id', 'study_date', 'modality', 'accession_number', 'study_description'],
    series: ['_id', 'modality', 'body_part_examined', 'manufacturer', 'slice_thickness', 'series_description'],
    instances: ['_id', 'series_id', 'instance_number', 'sop_class_uid'],
  };
  const PAGE = 50;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }

  function style() {
    const css = `
.nl-box { display: flex; align-items: center; flex: 1 1 360px; max-width: 560px; }
.nl-box input { flex: 1; font: inherit; padding: 6px 10px; border-radius: 6px 0 0 6px; border: 1px solid #3a5476;
  background: #1d3250; color: #fff; min-width: 120px; }
.nl-box input::placeholder { color: #9fb3cc; }
.nl-box button { border-radius: 0 6px 6px 0; }
.nl-panel { max-width: 1500px; margin: 14px auto 0; padding: 0 20px; }
.nl-panel .panel { margin-bottom: 0; }
.nl-head { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; }
.nl-head h2 { margin: 0; }
.nl-level { display: inline-block; padding: 1px 8px; border-radius: 10px; background: var(--accent-soft, #e7f0fb);
  color: var(--accent, #1f5fa8); font-size: 12px; font-weight: 600; }
.nl-expl { margin: 8px 0; line-height: 1.45; }
.nl-ignored { color: var(--warn, #b7791f); }
.nl-partial { display: inline-block; padding: 2px 8px; border-radius: 6px; background: #fff3d6; color: #8a5a00;
  border: 1px solid #e9b949; font-size: 12.5px; font-weight: 600; }
.nl-corrections { margin: 4px 0; font-size: 13px; color: var(--muted, #5f6b7a); }
.nl-corrections b { color: inherit; font-weight: 600; }
.nl-msg { margin: 6px 0; padding: 6px 10px; border-radius: 6px; background: #fff6e5; color: #7a4f00; font-size: 13px; }
.nl-filter { margin: 6px 0 0; padding: 8px 10px; background: #f3f5f8; border-radius: 6px; max-height: 220px; overflow: auto;
  font-family: var(--mono, monospace); font-size: 12.5px; white-space: pre-wrap; word-break: break-all; }
.nl-table { width: 100%; border-collapse: collapse; margin-top: 10px; font-size: 13px; }
.nl-table th, .nl-table td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line, #dde3ea);
  max-width: 340px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.nl-table th { color: var(--muted, #5f6b7a); font-weight: 600; }
.nl-table tr.nl-row { cursor: pointer; }
.nl-table tr.nl-row:hover { background: var(--accent-soft, #e7f0fb); }
.nl-actions { display: flex; gap: 8px; align-items: center; margin-top: 10px; flex-wrap: wrap; }
.nl-chip { font-size: 12px; padding: 3px 9px; border-radius: 12px; border: 1px solid var(--line, #dde3ea);
  background: #fff; color: var(--ink, #1d2633); cursor: pointer; }
.nl-error { color: var(--bad, #c0392b); }`;
    document.head.append(el('style', { 'data-nl': '' }, css));
  }

  async function ask(q, offset) {
    const headers = { Accept: 'application/json' };
    const token = localStorage.getItem('metadb.token');
    if (token) headers.Authorization = 'Bearer ' + token;
    const url = '/api/nl?' + new URLSearchParams({ q, limit: String(PAGE), offset: String(offset || 0) });
    let r;
    try { r = await fetch(url, { headers }); } catch (e) { throw new Error('cannot reach the server: ' + e.message); }
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error(body && body.detail ? body.detail : 'HTTP ' + r.status);
      err.translation = body && body.translation;
      err.status = r.status;
      throw err;
    }
    return body;
  }

  function cellText(v) {
    if (v === null || v === undefined) return '';
    if (Array.isArray(v)) return v.map(cellText).join(', ');
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  function rowLink(level, doc) {
    if (level === 'studies') return '#/studies/' + encodeURIComponent(doc._id);
    if (level === 'series') return '#/series/' + encodeURIComponent(doc._id);
    return doc.series_id ? '#/series/' + encodeURIComponent(doc.series_id) : null;
  }

  function translationView(t) {
    const box = el('div', { 'data-testid': 'nl-translation' });
    box.append(el('div', { class: 'nl-expl', 'data-testid': 'nl-explanation', text: t.explanation || '' }));
    if (t.ignored && t.ignored.length)
      box.append(el('div', { class: 'nl-ignored', 'data-testid': 'nl-ignored' }, 'Not understood: ', t.ignored.map((w) => '“' + w + '”').join(', ')));
    if (t.corrections && t.corrections.length)
      box.append(el('div', { class: 'nl-corrections', 'data-testid': 'nl-corrections' }, 'Read as: ',
        t.corrections.map((c, i) => el('span', { 'data-kind': c.kind },
          i ? ', ' : '', el('b', { text: c.from }), ' → ', el('b', { text: c.to })))));
    if (t.message) box.append(el('div', { class: 'nl-msg', 'data-testid': 'nl-message', text: t.message }));
    const shown = { level: t.level, filter: t.filter };
    if (t.joins && t.joins.length) shown.joins = t.joins;
    const pre = el('pre', { class: 'nl-filter', 'data-testid': 'nl-filter', text: JSON.stringify(shown, null, 2) });
    const det = el('details', {}, el('summary', { text: 'Translated query (' + (t.backend || 'offline') + ')' }), pre);
    det.open = true;
    box.append(det);
    return box;
  }

  function panel() {
    let p = document.getElementById('nl-panel');
    if (!p) {
      p = el('section', { id: 'nl-panel', class: 'nl-panel', 'data-testid': 'nl-panel' });
      const main = document.getElementById('main');
      main.parentNode.insertBefore(p, main);
    }
    return p;
  }

  function close() {
    const p = document.getElementById('nl-panel');
    if (p) p.remove();
  }

  function openRaw(t) {
    sessionStorage.setItem('metadb.raw', JSON.stringify({
      collection: t.level, text: JSON.stringify({ filter: t.filter, limit: PAGE }, null, 2),
      note: 'translated from “' + t.query + '”',
    }));
    close();
    if (location.hash === '#/query') window.dispatchEvent(new HashChangeEvent('hashchange'));
    else location.hash = '#/query';
  }

  async function run(q) {
    const p = panel();
    p.replaceChildren(el('div', { class: 'panel muted', text: 'Translating “' + q + '”…' }));
    let res;
    try {
      res = await ask(q, 0);
    } catch (e) {
      const inner = el('div', { class: 'panel' },
        el('div', { class: 'nl-head' }, el('h2', { text: 'Search' }), el('button', { type: 'button', class: 'ghost', onclick: close }, 'Close')),
        el('div', { class: 'nl-error', 'data-testid': 'nl-error', text: e.message }));
      if (e.translation) inner.append(translationView(e.translation));
      p.replaceChildren(inner);
      return;
    }
    const cols = COLUMNS[res.level] || ['_id'];
    const tbody = el('tbody');
    const countEl = el('span', { class: 'muted', 'data-testid': 'nl-total' });
    let shown = 0;
    const more = el('button', { type: 'button', class: 'ghost', 'data-testid': 'nl-more' }, 'Load more');
    function add(items) {
      for (const doc of items) {
        const link = rowLink(res.level, doc);
        tbody.append(el('tr', { class: link ? 'nl-row' : null, 'data-testid': 'nl-row', 'data-uid': doc._id,
          onclick: link ? () => { close(); location.hash = link; } : null },
        cols.map((c) => el('td', { title: cellText(doc[c]), text: cellText(doc[c]) }))));
      }
      shown += items.length;
      countEl.textContent = shown + ' of ' + res.total + ' ' + res.level;
      more.hidden = shown >= res.total;
    }
    more.addEventListener('click', async () => {
      more.disabled = true;
      try { add((await ask(q, shown)).items); } catch (e) { countEl.textContent = e.message; }
      more.disabled = false;
    });
    /* a partial translation covers more than the sentence asked for: say so next to the results */
    const partial = res.confidence === 'partial'
      ? el('span', { class: 'nl-partial', 'data-testid': 'nl-partial', role: 'status',
        title: 'Some words were not understood; the results may include more than asked.' },
      'Partial translation — not understood: ',
      (res.ignored && res.ignored.length ? res.ignored : ['(see the notes above)']).map((w) => '“' + w + '”').join(', '))
      : null;
    const actions = el('div', { class: 'nl-actions' }, countEl, partial, more,
      !res.joins || !res.joins.length
        ? el('button', { type: 'button', class: 'ghost', 'data-testid': 'nl-raw', onclick: () => openRaw(res) }, 'Open in raw-query editor')
        : null,
      el('button', { type: 'button', class: 'ghost', onclick: close }, 'Close'));
    p.replaceChildren(el('div', { class: 'panel' },
      el('div', { class: 'nl-head' }, el('h2', { text: 'Search' }), el('span', { class: 'nl-level', text: res.level }),
        el('span', { class: 'muted', text: '“' + q + '”' })),
      translationView(res),
      el('table', { class: 'nl-table', 'data-testid': 'nl-results' },
        el('thead', {}, el('tr', {}, cols.map((c) => el('th', { text: c })))), tbody),
      actions));
    add(res.items || []);
  }

  function examples(input) {
    const p = panel();
    p.replaceChildren(el('div', { class: 'panel' },
      el('div', { class: 'nl-head' }, el('h2', { text: 'Ask in plain words' }), el('button', { type: 'button', class: 'ghost', onclick: close }, 'Close')),
      el('div', { class: 'nl-expl muted', text: 'Modalities, body parts (chest, lung, head…), manufacturers seen in the data, “thin slice” (≤ 2.5 mm), sizes with mm or kV, dates and ranges (“2000 to 2001”, “after March 2001”, “last 5 years”), negation (“not”, “without”, “excluding”), patients, accessions, descriptions in quotes, and the level (studies, series, images).' }),
      el('div', { class: 'nl-actions' }, EXAMPLES.map((x) => el('button', { type: 'button', class: 'nl-chip',
        onclick: () => { input.value = x; run(x); } }, x)))));
  }

  function mount() {
    const bar = document.querySelector('.topbar');
    if (!bar || document.getElementById('nl-input')) return;
    style();
    const input = el('input', { id: 'nl-input', type: 'search', 'data-testid': 'nl-input', autocomplete: 'off',
      placeholder: 'Ask: thin-slice chest CT series from 2000 to 2001…', 'aria-label': 'natural-language search' });
    const form = el('form', { class: 'nl-box', role: 'search', 'data-testid': 'nl-form' }, input,
      el('button', { type: 'submit', 'data-testid': 'nl-ask' }, 'Ask'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const q = input.value.trim();
      if (q) run(q); else examples(input);
    });
    input.addEventListener('focus', () => { if (!input.value.trim() && !document.getElementById('nl-panel')) examples(input); });
    input.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { close(); input.blur(); } });
    const right = bar.querySelector('.topright');
    bar.insertBefore(form, right || null);
    window.addEventListener('hashchange', close);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount);
  else mount();
})();
