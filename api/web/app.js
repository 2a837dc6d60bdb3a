/* metadb dashboard: a small single-page app over the metadb-api JSON
 * endpoints. No external resources (the server's CSP forbids them): DOM
 * built with h(), charts drawn as inline SVG; the lists' distribution charts
 * (facets.js) use Chart.js, vendored into vendor/ by deploy/install.sh.
 *
 * Routes (location.hash):
 *   #/studies?<filters>   studies table with filter bar, sorting, column chooser, expandable series
 *   #/series?<filters>    series table
 *   #/series/<uid>        series detail: fields, all metadata, instances
 *   #/query               raw-query editor (validated by the server's whitelist)
 *   #/jobs                job submission and live progress
 *   #/ops                 consumer lag per group and partition over time, throughput
 */
'use strict';
(function () {
  // ---------------------------------------------------------------- helpers
  const SVGNS = 'http://www.w3.org/2000/svg';

  function h(tag, attrs, ...kids) {
    const el = tag.startsWith('svg:') ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else if (k === 'value' && 'value' in el) el.value = v;
      else if (k === 'checked') el.checked = !!v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

  function fmt(v) {
    if (v === undefined || v === null) return '';
    if (Array.isArray(v)) return v.map(fmt).join(', ');
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  function fmtDate(d) {
    if (typeof d !== 'string' || !/^\d{8}$/.test(d)) return fmt(d);
    return d.slice(0, 4) + '-' + d.slice(4, 6) + '-' + d.slice(6, 8);
  }

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function num(n) { return typeof n === 'number' ? n.toLocaleString() : fmt(n); }

  let toastTimer = null;
  function toast(msg, bad) {
    const t = document.getElementById('toast');
    t.textContent = msg;
    t.className = 'toast show' + (bad ? ' bad' : '');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.className = 'toast'; }, bad ? 6000 : 3000);
  }

  // ------------------------------------------------------------------- API
  const store = {
    get token() { return localStorage.getItem('metadb.token') || ''; },
    set token(v) { if (v) localStorage.setItem('metadb.token', v); else localStorage.removeItem('metadb.token'); },
  };

  class ApiError extends Error {
    constructor(status, error, detail) { super(detail || error); this.status = status; this.error = error; this.detail = detail; }
  }

  async function api(path, opts) {
    const o = Object.assign({ headers: {} }, opts || {});
    if (store.token) o.headers.Authorization = 'Bearer ' + store.token;
    if (o.json !== undefined) {
      o.method = o.method || 'POST';
      o.body = typeof o.json === 'string' ? o.json : JSON.stringify(o.json);
      o.headers['Content-Type'] = 'application/json';
    }
    let r;
    try { r = await fetch(path, o); } catch (e) { throw new ApiError(0, 'network', 'cannot reach the server: ' + e.message); }
    const ct = r.headers.get('content-type') || '';
    const body = ct.includes('json') ? await r.json().catch(() => null) : await r.text();
    if (!r.ok) {
      if (body && body.error) throw new ApiError(r.status, body.error, body.detail);
      throw new ApiError(r.status, 'http_' + r.status, typeof body === 'string' ? body.slice(0, 200) : 'HTTP ' + r.status);
    }
    return body;
  }

  function errorBox(e) {
    if (e instanceof ApiError) {
      const hint = e.status === 401 ? ' — set an API token with the Token button.' : '';
      return h('div', { class: 'error', 'data-testid': 'error' }, h('b', { text: e.error }), ' (' + e.status + '): ', e.detail || '', hint);
    }
    return h('div', { class: 'error', 'data-testid': 'error' }, String(e));
  }

  // ------------------------------------------------------ page life cycle
  const page = { timers: [], gen: 0 };
  function every(ms, fn) { const id = setInterval(fn, ms); page.timers.push(id); return id; }
  function resetPage() {
    page.timers.forEach(clearInterval);
    page.timers = [];
    page.gen++;
    document.querySelectorAll('.modal-back').forEach((m) => m.remove());
  }
  function alive(gen) { return gen === page.gen; }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const q = raw.indexOf('?');
    const path = (q >= 0 ? raw.slice(0, q) : raw).split('/').filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
    return { path, params };
  }

  function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }

  function route() {
    resetPage();
    const { path, params } = parseHash();
    const main = clear(document.getElementById('main'));
    const top = path[0] || 'studies';
    document.querySelectorAll('.tabs a').forEach((a) => a.classList.toggle('active', a.dataset.route === top));
    if ((top === 'series' || top === 'studies') && path[1]) {
      if (top === 'series') seriesDetail(main, path[1]);
      else studyDetail(main, path[1]);
    } else if (top === 'studies' || top === 'series') listView(main, top, params);
    else if (top === 'query') rawQuery(main, params);
    else if (top === 'jobs') jobsView(main);
    else if (top === 'ops') opsView(main);
    else main.appendChild(h('div', { class: 'panel empty', text: 'No such page.' }));
  }

  // ---------------------------------------------------------- field info
  const fieldCache = {};
  async function fieldsOf(level) {
    if (!fieldCache[level]) fieldCache[level] = api('/api/fields?collection=' + level).catch((e) => { delete fieldCache[level]; throw e; });
    return fieldCache[level];
  }

  // ------------------------------------------------------------ list views
  const LEVELS = {
    studies: {
      title: 'Studies',
      filters: [
        { p: 'modality', label: 'Modality', kind: 'select', values: 'modality' },
        { p: 'study_date', label: 'Study date', ph: '2000-2001 or 20000101-20011231' , wide: true },
        { p: 'patient_id', label: 'Patient ID', ph: 'LIDC-IDRI-00*' },
        { p: 'accession_number', label: 'Accession', ph: 'e.g. 12345' },
        { p: 'study_description', label: 'Description', ph: '*chest*' },
        { p: 'collection', label: 'Collection', kind: 'select', values: 'collection_ids' },
      ],
      columns: ['patient_id', 'study_date', 'modalities', 'accession_number', 'study_description', 'collection_ids'],
      sort: '-study_date',
    },
    series: {
      title: 'Series',
      filters: [
        { p: 'modality', label: 'Modality', kind: 'select', values: 'modality' },
        { p: 'body_part_examined', label: 'Body part', kind: 'select', values: 'body_part_examined' },
        { p: 'slice_thickness', label: 'Slice thickness (mm)', ph: 'lt:2.5 or 1-3' },
        { p: 'study_date', label: 'Study date', ph: '2000-2001', wide: true },
        { p: 'manufacturer', label: 'Manufacturer', kind: 'select', values: 'manufacturer' },
        { p: 'series_description', label: 'Description', ph: '*axial*' },
      ],
      columns: ['series_description', 'modality', 'body_part_examined', 'slice_thickness', 'series_number', 'instance_count', 'manufacturer', 'study_id'],
      sort: 'study_id,series_number',
    },
  };
  const LABELS = {
    _id: 'UID', patient_id: 'Patient', study_date: 'Study date', modality: 'Modality', modalities: 'Modalities',
    accession_number: 'Accession', study_description: 'Description', collection_ids: 'Collections', job_ids: 'Jobs',
    series_description: 'Description', body_part_examined: 'Body part', slice_thickness: 'Thickness (mm)',
    series_number: 'No.', instance_count: 'Images', manufacturer: 'Manufacturer', study_id: 'Study UID',
    series_date: 'Series date', kvp: 'kVp', manufacturer_model_name: 'Model', protocol_name: 'Protocol',
    series_time: 'Series time', acquisition_datetime: 'Acquired', created_at: 'Loaded', updated_at: 'Updated',
    files_flagged: 'Files flagged (damaged)',
  };
  const label = (c) => LABELS[c] || (c.startsWith('study.') ? 'Study: ' + label(c.slice(6)) : c.replace(/^metadata\./, ''));
  const NUMERIC = new Set(['slice_thickness', 'series_number', 'instance_count', 'kvp', 'instance_number']);
  const PAGE_PARAMS = new Set(['limit', 'offset', 'sort']);

  function columnsFor(level) {
    try {
      const saved = JSON.parse(localStorage.getItem('metadb.cols.' + level) || 'null');
      if (Array.isArray(saved) && saved.length) return saved;
    } catch (e) { /* ignore */ }
    return LEVELS[level].columns.slice();
  }

  // A damaged file's instance (its "integrity" object, e.g. Pixel Data cut
  // short): catalogued, but not usable as an image.
  function integrityText(ig) {
    if (!ig) return '';
    if (ig.pixel_data_truncated) {
      return 'Pixel Data truncated: ' + num(ig.pixel_data_bytes_present || 0) + ' of ' +
        (ig.pixel_data_bytes_expected !== undefined ? num(ig.pixel_data_bytes_expected) : '?') + ' bytes present';
    }
    return 'damaged: ' + JSON.stringify(ig);
  }
  function integrityFlag(ig) {
    return h('span', { class: 'badge damaged', 'data-testid': 'integrity-flag', title: integrityText(ig), text: '⚠ truncated' });
  }

  function cell(col, v) {
    if (col.startsWith('study.')) col = col.slice(6); // a parent's field renders as the field itself
    if (col === 'integrity') return v ? integrityFlag(v) : '';
    if (col === 'study_date' || col === 'series_date' || col === 'metadata.StudyDate') return fmtDate(v);
    if ((col === 'modality' || col === 'modalities') && v) {
      return [].concat(v).map((m) => h('span', { class: 'badge ' + m, text: m }));
    }
    return fmt(v);
  }

  function listView(main, level, params) {
    const cfg = LEVELS[level];
    const gen = page.gen;
    const filters = new URLSearchParams(params);
    const sort = filters.get('sort') || cfg.sort;
    const limit = Math.min(1000, Math.max(1, parseInt(filters.get('limit') || '25', 10) || 25));
    const offset = Math.max(0, parseInt(filters.get('offset') || '0', 10) || 0);
    let cols = columnsFor(level);

    function navigate(mut) {
      const p = new URLSearchParams(filters);
      mut(p);
      go('#/' + level + (p.toString() ? '?' + p.toString() : ''));
    }

    // filter bar
    const inputs = {};
    const bar = h('form', { class: 'filterbar', 'data-testid': 'filterbar', onsubmit: (ev) => { ev.preventDefault(); apply(); } });
    for (const f of cfg.filters) {
      let input;
      if (f.kind === 'select') {
        input = h('select', { name: f.p, 'data-testid': 'filter-' + f.p }, h('option', { value: '', text: 'any' }));
        const cur = filters.get(f.p);
        if (cur) input.appendChild(h('option', { value: cur, text: cur }));
        input.value = cur || '';
        input.addEventListener('change', apply);
      } else {
        input = h('input', { name: f.p, placeholder: f.ph || '', value: filters.get(f.p) || '', 'data-testid': 'filter-' + f.p, autocomplete: 'off' });
      }
      inputs[f.p] = input;
      bar.appendChild(h('label', { class: f.wide ? 'wide' : '' }, f.label, input));
    }
    const addField = h('select', { 'data-testid': 'add-field' }, h('option', { value: '', text: 'more fields…' }));
    const addValue = h('input', { placeholder: 'value', 'data-testid': 'add-value' });
    bar.appendChild(h('label', {}, 'Add filter', h('div', { class: 'row' }, addField, addValue)));
    bar.appendChild(h('div', { class: 'actions' },
      h('button', { type: 'submit', 'data-testid': 'apply' }, 'Search'),
      h('button', { type: 'button', class: 'ghost', onclick: () => go('#/' + level) }, 'Reset')));

    function apply() {
      navigate((p) => {
        for (const f of cfg.filters) {
          const extra = filters.getAll(f.p).slice(1); // a repeated field (a chart's range: gte + lt) keeps its other conditions, shown as chips
          p.delete(f.p);
          const v = inputs[f.p].value.trim();
          if (v) p.set(f.p, v);
          extra.forEach((x) => p.append(f.p, x));
        }
        if (addField.value && addValue.value.trim()) p.append(addField.value, addValue.value.trim());
        p.delete('offset');
      });
    }

    // chips for parameters not shown in the bar
    const barParams = new Set(cfg.filters.map((f) => f.p));
    const chips = h('div', { class: 'chips' });
    for (const [k, v] of filters) {
      if ((barParams.has(k) && filters.get(k) === v) || PAGE_PARAMS.has(k)) continue;
      chips.appendChild(h('span', { class: 'chip' }, k + ' = ' + v,
        h('button', { type: 'button', title: 'remove', onclick: () => navigate((p) => { const all = p.getAll(k).filter((x) => x !== v); p.delete(k); all.forEach((x) => p.append(k, x)); p.delete('offset'); }) }, '×')));
    }

    const head = h('div', { class: 'pagehead' },
      h('div', {}, h('h1', { text: cfg.title }),
        h('div', { class: 'muted', text: level === 'series' ? 'Filter series by their own fields; study fields such as the study date filter through their studies.' : 'Each row expands to the study\'s series.' })),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'ghost', 'data-testid': 'as-raw', onclick: () => openAsRaw() }, 'Open as raw query'),
        exportMenu(),
        columnChooser()));
    main.appendChild(head);
    main.appendChild(h('div', { class: 'panel' }, bar, chips,
      h('div', { class: 'hint' }, 'Values: ', h('code', { text: 'CT,MR' }), ' any of · ', h('code', { text: '2000-2001' }), ' range · ',
        h('code', { text: 'lt:2.5' }), ' / ', h('code', { text: 'gte:' }), ' / ', h('code', { text: 'ne:' }), ' comparisons · ',
        h('code', { text: 'LIDC-IDRI-00*' }), ' wildcards (* and ?) · ', h('code', { text: 'metadata.Keyword' }), ' for any extracted attribute')));
    const tablePanel = h('div', { class: 'panel flush', 'data-testid': 'results' }, h('div', { class: 'empty' }, h('span', { class: 'spinner' }), ' Loading…'));
    if (window.MetadbFacets) { // distribution charts above the table (facets.js); a click adds that bar's filter
      main.appendChild(window.MetadbFacets.panel({ level, filters, api, alive: () => alive(gen),
        addFilter: (k, vals) => navigate((p) => { p.delete(k); vals.forEach((v) => p.append(k, v)); p.delete('offset'); }) }));
    }
    main.appendChild(tablePanel);

    let lastExplain = null;
    // The API answers each list with the raw query that matches exactly the
    // same rows (parents = the study-level conditions, "study.x" sorts and
    // columns), or with the reason there is none: carried whole or refused.
    function openAsRaw() {
      if (!lastExplain) return;
      if (!lastExplain.raw) {
        toast('Cannot open as a raw query: ' + (lastExplain.raw_refused || 'the API gave no raw form'), true);
        return;
      }
      const q = Object.assign({}, lastExplain.raw);
      delete q.collection;
      sessionStorage.setItem('metadb.raw', JSON.stringify({ collection: level, text: JSON.stringify(q, null, 2) }));
      go('#/query');
    }

    // fill selects and the "more fields" list from /api/fields
    fieldsOf(level).then((info) => {
      if (!alive(gen)) return;
      const byName = {};
      for (const f of info.promoted) byName[f.name] = f;
      for (const f of cfg.filters) {
        if (f.kind !== 'select') continue;
        const meta = byName[f.values];
        const sel = inputs[f.p];
        const cur = filters.get(f.p) || '';
        for (const v of (meta && meta.values) || []) {
          if (v.value === cur) continue;
          sel.appendChild(h('option', { value: v.value, text: v.value + ' (' + v.count + ')' }));
        }
        sel.value = cur;
      }
      for (const f of info.promoted) {
        if (barParams.has(f.name) || f.name === '_id' || f.count === 0) continue;
        addField.appendChild(h('option', { value: f.name === 'collection_ids' ? 'collection' : f.name === 'job_ids' ? 'job' : f.name, text: label(f.name) }));
      }
      for (const m of info.metadata.slice().sort((a, b) => a.keyword.localeCompare(b.keyword))) {
        addField.appendChild(h('option', { value: 'metadata.' + m.keyword, text: m.keyword + ' (' + m.count + ')' }));
      }
    }).catch(() => {});

    // Export: every matching row (not the page) through the API's streaming
    // export, the same builder as `metadb export`; the file list of the
    // cohort and its description (query, counts, catalogue state, version).
    function exportMenu() {
      const menu = h('div', { class: 'menu hidden', 'data-testid': 'export-menu' });
      const btn = h('button', { type: 'button', class: 'ghost', 'data-testid': 'export-btn', onclick: (ev) => { ev.stopPropagation(); menu.classList.toggle('hidden'); } }, 'Export ▾');
      document.addEventListener('click', (ev) => { if (!menu.contains(ev.target)) menu.classList.add('hidden'); });
      const filterParams = () => {
        const p = new URLSearchParams();
        for (const [k, v] of filters) if (!PAGE_PARAMS.has(k)) p.append(k, v);
        return p;
      };
      const item = (id, text, make) => h('button', { type: 'button', class: 'ghost small', 'data-testid': 'export-' + id, style: { display: 'block', width: '100%', textAlign: 'left' },
        onclick: () => { menu.classList.add('hidden'); download(make()); } }, text);
      const table = (format) => () => { const p = filterParams(); p.set('sort', sort); p.set('fields', cols.join(',')); p.set('format', format); return '/api/' + level + '?' + p; };
      const cohort = (what) => () => { const p = filterParams(); p.set('level', level); return '/api/export/' + what + '?' + p; };
      menu.appendChild(item('csv', 'Table as CSV (every row, shown columns)', table('csv')));
      menu.appendChild(item('json', 'Table as JSON', table('json')));
      menu.appendChild(item('manifest', 'File manifest (CSV: path, UIDs, size)', cohort('manifest')));
      menu.appendChild(item('sidecar', 'Cohort description (JSON sidecar)', cohort('sidecar')));
      return h('div', { class: 'dropdown' }, btn, menu);
    }
    async function download(url) {
      toast('Exporting…');
      const headers = store.token ? { Authorization: 'Bearer ' + store.token } : {};
      let r;
      try { r = await fetch(url, { headers }); } catch (e) { toast('Export failed: ' + e.message, true); return; }
      if (!r.ok) {
        const b = await r.json().catch(() => null);
        toast('Export failed: ' + ((b && (b.detail || b.error)) || 'HTTP ' + r.status), true);
        return;
      }
      const blob = await r.blob();
      const m = /filename="([^"]+)"/.exec(r.headers.get('content-disposition') || '');
      const a = h('a', { href: URL.createObjectURL(blob), download: m ? m[1] : 'metadb-' + level + '-sidecar.json' });
      document.body.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      toast('Exported ' + num(blob.size) + ' bytes');
    }

    function columnChooser() {
      const menu = h('div', { class: 'menu hidden', 'data-testid': 'column-menu' });
      const btn = h('button', { type: 'button', class: 'ghost', 'data-testid': 'columns-btn', onclick: (ev) => { ev.stopPropagation(); menu.classList.toggle('hidden'); if (!menu.dataset.filled) fillMenu(); } }, 'Columns ▾');
      document.addEventListener('click', (ev) => { if (!menu.contains(ev.target)) menu.classList.add('hidden'); });
      function toggle(name, on) {
        cols = on ? cols.concat([name]).filter((c, i, a) => a.indexOf(c) === i) : cols.filter((c) => c !== name);
        localStorage.setItem('metadb.cols.' + level, JSON.stringify(cols));
        load();
      }
      function fillMenu() {
        menu.dataset.filled = '1';
        const search = h('input', { type: 'search', placeholder: 'find a field…' });
        const list = h('div');
        menu.appendChild(search);
        menu.appendChild(list);
        fieldsOf(level).then((info) => {
          const mk = (name, text) => h('label', { class: 'check', 'data-name': name },
            h('input', { type: 'checkbox', checked: cols.includes(name), 'data-testid': 'col-' + name, onchange: (ev) => toggle(name, ev.target.checked) }), text);
          list.appendChild(h('h3', { text: 'Promoted fields' }));
          for (const f of info.promoted) if (f.name !== '_id' && f.count > 0) list.appendChild(mk(f.name, label(f.name)));
          if (level === 'series') {
            // the study's fields as columns (joined by the API: fields=study.<name>)
            const studyHead = h('h3', { text: 'Study fields' });
            list.appendChild(studyHead);
            fieldsOf('studies').then((si) => {
              let at = studyHead;
              for (const f of si.promoted) {
                if (f.name === '_id' || f.count === 0) continue;
                const el = mk('study.' + f.name, 'Study: ' + label(f.name));
                at.after(el);
                at = el;
              }
            }).catch(() => {});
          }
          list.appendChild(h('h3', { text: 'Metadata (' + info.metadata.length + ')' }));
          for (const m of info.metadata.slice().sort((a, b) => a.keyword.localeCompare(b.keyword))) list.appendChild(mk('metadata.' + m.keyword, m.keyword));
          list.appendChild(h('div', { class: 'row', style: { marginTop: '8px' } }, h('button', { type: 'button', class: 'small ghost', onclick: () => { localStorage.removeItem('metadb.cols.' + level); cols = LEVELS[level].columns.slice(); menu.classList.add('hidden'); menu.dataset.filled = ''; clear(menu); load(); } }, 'Reset columns')));
        });
        search.addEventListener('input', () => {
          const q = search.value.toLowerCase();
          list.querySelectorAll('label[data-name]').forEach((l) => l.classList.toggle('hidden', q && !l.dataset.name.toLowerCase().includes(q)));
        });
      }
      return h('div', { class: 'dropdown' }, btn, menu);
    }

    async function load() {
      const p = new URLSearchParams();
      for (const [k, v] of filters) if (!PAGE_PARAMS.has(k)) p.append(k, v);
      p.set('limit', limit);
      p.set('offset', offset);
      p.set('sort', sort);
      const need = new Set(cols);
      if (level === 'studies') need.add('modalities');
      if (level === 'series') need.add('study_id'); // images: thumbnail column (viewer.js)
      p.set('fields', Array.from(need).join(','));
      let res;
      try {
        res = await api('/api/' + level + '?' + p.toString());
      } catch (e) {
        if (!alive(gen)) return;
        clear(tablePanel).appendChild(h('div', { style: { padding: '12px' } }, errorBox(e)));
        return;
      }
      if (!alive(gen)) return;
      lastExplain = Object.assign({}, res.explain, { raw: res.raw, raw_refused: res.raw_refused });
      renderTable(res);
    }

    function sortState(col) {
      const first = sort.split(',')[0] || '';
      if (first === col) return 1;
      if (first === '-' + col) return -1;
      return 0;
    }

    function renderTable(res) {
      clear(tablePanel);
      const ths = [level === 'studies' ? h('th', {}) : null, level === 'series' ? h('th', { class: 'thumbcell', text: 'Image' }) : null, h('th', { text: level === 'studies' ? 'Study UID' : 'Series UID' })];
      for (const c of cols) {
        const s = sortState(c);
        ths.push(h('th', {
          class: 'sortable' + (NUMERIC.has(c) ? ' num' : ''), 'data-testid': 'th-' + c, title: 'sort by ' + label(c),
          onclick: () => navigate((p) => { p.set('sort', (s === 1 ? '-' : '') + c); p.delete('offset'); }),
        }, label(c), s ? h('span', { class: 'arrow', text: s === 1 ? '▲' : '▼' }) : null));
      }
      const tbody = h('tbody');
      for (const doc of res.items) {
        const tr = h('tr', { class: 'clickable', 'data-uid': doc._id, 'data-testid': 'row' });
        if (level === 'studies') {
          const exp = h('td', { class: 'expander', 'data-testid': 'expand', title: 'show series', text: '▸' });
          exp.addEventListener('click', (ev) => { ev.stopPropagation(); toggleStudy(tr, exp, doc._id); });
          tr.appendChild(exp);
          tr.addEventListener('click', () => toggleStudy(tr, exp, doc._id));
        } else {
          tr.addEventListener('click', () => go('#/series/' + encodeURIComponent(doc._id)));
        }
        if (level === 'series') tr.appendChild(window.MetadbImages.thumbCell(doc.study_id, doc._id));
        tr.appendChild(h('td', { class: 'mono', title: doc._id, text: doc._id }));
        for (const c of cols) {
          const v = c.includes('.') ? c.split('.').reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), doc) : doc[c];
          const shown = c === 'modalities' && v === undefined ? doc.modality : v;
          tr.appendChild(h('td', { class: NUMERIC.has(c) ? 'num' : '', title: fmt(shown) }, cell(c, shown)));
        }
        tbody.appendChild(tr);
      }
      const table = h('table', { 'data-testid': 'table' }, h('thead', {}, h('tr', {}, ths)), tbody);
      tablePanel.appendChild(h('div', { class: 'tablewrap' }, res.items.length ? table : h('div', { class: 'empty', text: 'Nothing matches these filters.' })));
      if (level === 'series') window.MetadbImages.lazyThumbs(tablePanel); // after the table is in: thumbnails load as rows scroll in
      const total = res.total;
      const from = total ? offset + 1 : 0, to = offset + res.items.length;
      const sizeSel = h('select', { onchange: (ev) => navigate((p) => { p.set('limit', ev.target.value); p.delete('offset'); }) },
        [10, 25, 50, 100, 250].map((n) => h('option', { value: String(n), text: n + ' per page' })));
      sizeSel.value = String(limit);
      tablePanel.appendChild(h('div', { class: 'pager' },
        h('span', { class: 'count', 'data-testid': 'count', text: from + '–' + to + ' of ' + num(total) + ' ' + level }),
        sizeSel,
        h('button', { type: 'button', class: 'ghost small', disabled: offset === 0, onclick: () => navigate((p) => p.set('offset', Math.max(0, offset - limit))) }, '‹ Prev'),
        h('button', { type: 'button', class: 'ghost small', disabled: to >= total, 'data-testid': 'next', onclick: () => navigate((p) => p.set('offset', offset + limit)) }, 'Next ›')));
    }

    async function toggleStudy(tr, exp, uid) {
      const next = tr.nextElementSibling;
      if (next && next.classList.contains('subrow')) { next.remove(); exp.textContent = '▸'; return; }
      exp.textContent = '▾';
      const td = h('td', { colspan: String(cols.length + 2) }, h('span', { class: 'spinner' }), ' loading series…');
      const sub = h('tr', { class: 'subrow', 'data-testid': 'subrow' }, td);
      tr.after(sub);
      try {
        const st = await api('/api/studies/' + encodeURIComponent(uid));
        clear(td);
        td.appendChild(h('div', { class: 'muted', style: { marginBottom: '6px' } },
          (st.patient_id || '') + ' · ' + fmtDate(st.study_date) + ' · ' + (st.study_description || '') + ' · ' + num(st.series_total) + ' series · ',
          h('a', { href: '#/studies/' + encodeURIComponent(uid), text: 'study details' })));
        const rows = (st.series || []).map((s) => h('tr', { class: 'clickable', 'data-testid': 'series-row', 'data-uid': s._id, onclick: () => go('#/series/' + encodeURIComponent(s._id)) },
          h('td', { class: 'num', text: fmt(s.series_number) }), h('td', {}, cell('modality', s.modality)),
          h('td', { text: fmt(s.series_description) }), h('td', { text: fmt(s.body_part_examined) }),
          h('td', { class: 'num', text: fmt(s.slice_thickness) }), h('td', { class: 'num', text: num(s.instance_count) }),
          h('td', { class: 'mono', text: s._id })));
        td.appendChild(h('table', {}, h('thead', {}, h('tr', {}, ['No.', 'Modality', 'Description', 'Body part', 'Thickness (mm)', 'Images', 'Series UID'].map((t, i) => h('th', { class: [0, 4, 5].includes(i) ? 'num' : '', text: t })))), h('tbody', {}, rows)));
      } catch (e) { clear(td).appendChild(errorBox(e)); }
    }

    load();
  }

  // ---------------------------------------------------------- detail views
  function kvGrid(doc, keys) {
    return h('dl', { class: 'kv' }, keys.filter((k) => doc[k] !== undefined).map((k) => h('div', {}, h('dt', { text: label(k) }), h('dd', {}, cell(k, doc[k])))));
  }

  function metadataTable(meta) {
    const search = h('input', { type: 'search', placeholder: 'filter keywords…', style: { width: '220px' } });
    const keys = Object.keys(meta || {}).sort();
    const tbody = h('tbody', {}, keys.map((k) => h('tr', { 'data-k': k.toLowerCase() }, h('td', { text: k }), h('td', { class: 'mono', text: fmt(meta[k]) }))));
    search.addEventListener('input', () => {
      const q = search.value.toLowerCase();
      tbody.querySelectorAll('tr').forEach((tr) => tr.classList.toggle('hidden', q && !tr.dataset.k.includes(q)));
    });
    return h('div', {}, h('div', { class: 'row', style: { justifyContent: 'space-between', marginBottom: '8px' } }, h('h2', { text: 'Metadata (' + keys.length + ' attributes)' }), search),
      keys.length ? h('table', { class: 'metatable', 'data-testid': 'metadata' }, tbody) : h('div', { class: 'empty', text: 'No metadata extracted.' }));
  }

  function modal(title, body) {
    const back = h('div', { class: 'modal-back', onclick: (ev) => { if (ev.target === back) back.remove(); } },
      h('div', { class: 'modal', role: 'dialog', 'data-testid': 'modal' },
        h('div', { class: 'head' }, h('h2', { text: title }), h('button', { type: 'button', class: 'ghost small', onclick: () => back.remove() }, 'Close')), body));
    document.body.appendChild(back);
    return back;
  }

  async function seriesDetail(main, uid) {
    const gen = page.gen;
    main.appendChild(h('div', { class: 'empty' }, h('span', { class: 'spinner' }), ' Loading series…'));
    let se, st = null;
    try {
      se = await api('/api/series/' + encodeURIComponent(uid) + '?limit=50');
      if (se.study_id) st = await api('/api/studies/' + encodeURIComponent(se.study_id)).catch(() => null);
    } catch (e) { if (alive(gen)) clear(main).appendChild(errorBox(e)); return; }
    if (!alive(gen)) return;
    clear(main);
    main.appendChild(h('div', { class: 'crumbs' }, h('a', { href: '#/series', text: 'Series' }), ' / ',
      st ? h('a', { href: '#/studies/' + encodeURIComponent(st._id), text: (st.patient_id || 'study') + ' · ' + fmtDate(st.study_date) }) : 'study', ' / ', se.series_description || uid));
    main.appendChild(h('div', { class: 'pagehead' }, h('div', {},
      h('h1', { 'data-testid': 'series-title', text: (se.series_description || 'Series') + (se.series_number !== undefined ? ' (#' + se.series_number + ')' : '') }),
      h('div', { class: 'mono muted', text: uid })),
      se.study_id ? h('a', { class: 'btn', href: window.MetadbImages.viewerUrl(se.study_id, uid), target: '_blank', rel: 'noopener', 'data-testid': 'open-viewer' }, 'Open in viewer') : null));
    const fields = ['modality', 'body_part_examined', 'slice_thickness', 'instance_count', 'series_date', 'series_time', 'manufacturer', 'manufacturer_model_name', 'protocol_name', 'kvp', 'collection_ids', 'study_id'];
    const studyPart = st ? kvGrid(st, ['patient_id', 'study_date', 'accession_number', 'study_description']) : null;
    main.appendChild(h('div', { class: 'panel' }, kvGrid(se, fields), studyPart ? h('hr', { style: { border: 0, borderTop: '1px solid var(--line)', margin: '12px 0' } }) : null, studyPart));
    if (se.study_id) main.appendChild(window.MetadbImages.seriesViewer({ study: se.study_id, series: uid, api, alive: () => alive(gen) }));
    // damaged instances of the series: one indexed query, shown as a note and on their rows
    const damaged = new Map();
    const dmg = await api('/api/instances?series_id=' + encodeURIComponent(uid) + '&integrity=exists:true&fields=integrity&limit=1000').catch(() => null);
    if (!alive(gen)) return;
    (dmg && dmg.items || []).forEach((d) => damaged.set(d._id, d.integrity));
    if (dmg && dmg.total > 0) {
      main.appendChild(h('div', { class: 'panel damaged-note', 'data-testid': 'series-integrity' },
        integrityFlag(null), ' ', num(dmg.total) + ' of ' + num(se.instance_count) +
        ' instances from damaged files (Pixel Data cut short): metadata catalogued, images not usable.'));
    }
    const instPanel = h('div', { class: 'panel flush', 'data-testid': 'instances' });
    main.appendChild(h('div', { class: 'split' }, h('div', { class: 'panel' }, metadataTable(se.metadata)), instPanel));
    renderInstances(se.instances, 0);

    async function renderInstances(page0, offset) {
      clear(instPanel);
      instPanel.appendChild(h('div', { style: { padding: '12px 14px 4px' } }, h('h2', { text: 'Instances (' + num(page0.total) + ')' })));
      const rows = page0.items.map((d) => h('tr', { class: 'clickable', 'data-testid': 'instance-row', onclick: () => showInstance(d._id) },
        h('td', { class: 'num', text: fmt(d.instance_number) }),
        h('td', { class: 'mono', title: d._id }, damaged.has(d._id) ? [integrityFlag(damaged.get(d._id)), ' '] : null, d._id),
        h('td', { class: 'mono', title: fmt(d.paths), text: fmt(d.paths) })));
      instPanel.appendChild(h('div', { class: 'tablewrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', { class: 'num', text: 'No.' }), h('th', { text: 'SOP Instance UID' }), h('th', { text: 'Path' }))), h('tbody', {}, rows))));
      const to = offset + page0.items.length;
      instPanel.appendChild(h('div', { class: 'pager' }, h('span', { class: 'count', text: (page0.total ? offset + 1 : 0) + '–' + to + ' of ' + num(page0.total) }),
        h('button', { type: 'button', class: 'ghost small', disabled: offset === 0, onclick: () => more(Math.max(0, offset - 50)) }, '‹ Prev'),
        h('button', { type: 'button', class: 'ghost small', disabled: to >= page0.total, onclick: () => more(offset + 50) }, 'Next ›')));
    }
    async function more(off) {
      try {
        const r = await api('/api/series/' + encodeURIComponent(uid) + '?limit=50&offset=' + off);
        if (alive(gen)) renderInstances(r.instances, off);
      } catch (e) { toast(e.message, true); }
    }
    async function showInstance(iuid) {
      try {
        const d = await api('/api/instances/' + encodeURIComponent(iuid));
        modal('Instance ' + (d.instance_number !== undefined ? '#' + d.instance_number : ''), h('div', {},
          h('div', { class: 'mono muted', style: { marginBottom: '10px' }, text: iuid }),
          d.integrity ? h('div', { class: 'damaged-note', 'data-testid': 'instance-integrity', style: { marginBottom: '10px' } },
            integrityFlag(d.integrity), ' ', integrityText(d.integrity) + ' — metadata catalogued, image not usable.') : null,
          kvGrid(d, ['sop_class_uid', 'acquisition_datetime', 'paths', 'job_ids']), h('div', { style: { height: '12px' } }), metadataTable(d.metadata)));
      } catch (e) { toast(e.message, true); }
    }
  }

  async function studyDetail(main, uid) {
    const gen = page.gen;
    let st;
    try { st = await api('/api/studies/' + encodeURIComponent(uid)); } catch (e) { if (alive(gen)) main.appendChild(errorBox(e)); return; }
    if (!alive(gen)) return;
    main.appendChild(h('div', { class: 'crumbs' }, h('a', { href: '#/studies', text: 'Studies' }), ' / ', st.patient_id || uid));
    main.appendChild(h('div', { class: 'pagehead' }, h('div', {}, h('h1', { text: (st.study_description || 'Study') + ' — ' + (st.patient_id || '') }), h('div', { class: 'mono muted', text: uid })),
      h('a', { class: 'btn', href: window.MetadbImages.viewerUrl(uid), target: '_blank', rel: 'noopener', 'data-testid': 'open-viewer' }, 'Open in viewer')));
    main.appendChild(h('div', { class: 'panel' }, kvGrid(st, ['patient_id', 'study_date', 'accession_number', 'modalities', 'study_description', 'collection_ids', 'job_ids', 'created_at', 'updated_at'])));
    const rows = (st.series || []).map((s) => h('tr', { class: 'clickable', 'data-testid': 'study-series-row', 'data-uid': s._id, onclick: () => go('#/series/' + encodeURIComponent(s._id)) },
      window.MetadbImages.thumbCell(uid, s._id), h('td', { class: 'num', text: fmt(s.series_number) }), h('td', {}, cell('modality', s.modality)), h('td', { text: fmt(s.series_description) }),
      h('td', { text: fmt(s.body_part_examined) }), h('td', { class: 'num', text: fmt(s.slice_thickness) }), h('td', { class: 'num', text: num(s.instance_count) }), h('td', { class: 'mono', text: s._id })));
    main.appendChild(h('div', { class: 'split' },
      h('div', { class: 'panel flush' }, h('div', { style: { padding: '12px 14px 4px' } }, h('h2', { text: 'Series (' + num(st.series_total) + ')' })),
        h('div', { class: 'tablewrap' }, h('table', {}, h('thead', {}, h('tr', {}, ['', 'No.', 'Modality', 'Description', 'Body part', 'Thickness (mm)', 'Images', 'UID'].map((t, i) => h('th', { class: [1, 5, 6].includes(i) ? 'num' : '', text: t })))), h('tbody', {}, rows)))),
      h('div', { class: 'panel' }, metadataTable(st.metadata))));
    window.MetadbImages.lazyThumbs(main); // the series' thumbnails (viewer.js)
  }

  // ------------------------------------------------------------- raw query
  const EXAMPLES = [
    { name: 'CT chest series thinner than 2.5 mm, 2000–2001', collection: 'series',
      q: { filter: { modality: 'CT', body_part_examined: 'CHEST', slice_thickness: { $lt: 2.5 }, series_date: { $gte: '20000101', $lte: '20011231' } }, sort: { series_date: 1 }, limit: 50 } },
    { name: 'Studies of patients LIDC-IDRI-00*', collection: 'studies',
      q: { filter: { patient_id: { $regex: '^LIDC-IDRI-00' } }, projection: { patient_id: 1, study_date: 1, modalities: 1 }, limit: 50 } },
    { name: 'Instances with 512 columns', collection: 'instances', q: { filter: { 'metadata.Columns': 512 }, limit: 20 } },
    { name: 'Running jobs', collection: 'jobs', q: { filter: { state: { $in: ['resolving', 'retrieving', 'running'] } }, sort: { submitted_at: -1 } } },
    { name: 'Refused: $where (JavaScript)', collection: 'series', q: { filter: { $where: 'this.slice_thickness < 2.5' } } },
  ];

  function rawQuery(main) {
    const gen = page.gen;
    const saved = JSON.parse(sessionStorage.getItem('metadb.raw') || 'null');
    sessionStorage.removeItem('metadb.raw');
    const coll = h('select', { 'data-testid': 'raw-collection' }, ['studies', 'series', 'instances', 'jobs', 'collections', 'conflicts'].map((c) => h('option', { value: c, text: c })));
    const editor = h('textarea', { class: 'editor', spellcheck: 'false', 'data-testid': 'raw-editor' });
    const status = h('span', { class: 'muted' });
    const out = h('div', { 'data-testid': 'raw-result' });
    const ex = h('select', { onchange: () => { const e = EXAMPLES[ex.value]; if (e) { coll.value = e.collection; editor.value = JSON.stringify(e.q, null, 2); check(); } ex.value = ''; } },
      h('option', { value: '', text: 'Examples…' }), EXAMPLES.map((e, i) => h('option', { value: String(i), text: e.name })));
    if (saved) { coll.value = saved.collection; editor.value = saved.text; } else { coll.value = 'series'; editor.value = JSON.stringify(EXAMPLES[0].q, null, 2); }
    function check() {
      try { JSON.parse(editor.value); editor.classList.remove('invalid'); status.textContent = 'valid JSON · Ctrl+Enter runs'; return true; }
      catch (e) { editor.classList.add('invalid'); status.textContent = 'JSON: ' + e.message; return false; }
    }
    editor.addEventListener('input', check);
    editor.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); } });
    const runBtn = h('button', { type: 'button', 'data-testid': 'raw-run', onclick: () => run() }, 'Run query');
    main.appendChild(h('div', { class: 'pagehead' }, h('div', {}, h('h1', { text: 'Raw query' }),
      h('div', { class: 'muted', text: 'A MongoDB filter with sort, projection, limit and skip. Operators are whitelisted on the server; JavaScript ($where, $function, $accumulator), $out/$merge and unknown operators are refused.' }))));
    main.appendChild(h('div', { class: 'panel' },
      h('div', { class: 'row', style: { marginBottom: '10px' } }, h('label', {}, 'Collection', coll), h('label', {}, 'Example', ex), h('div', { style: { marginLeft: 'auto' } }, status)),
      saved && saved.note ? h('div', { class: 'hint', text: 'Note: ' + saved.note }) : null,
      editor, h('div', { class: 'row', style: { marginTop: '10px' } }, runBtn)));
    main.appendChild(out);
    check();

    let view = 'table', last = null;
    async function run() {
      if (!check()) { clear(out).appendChild(h('div', { class: 'error', 'data-testid': 'error' }, 'The query is not valid JSON: ' + status.textContent)); return; }
      let body;
      try { body = JSON.parse(editor.value); } catch (e) { return; }
      if (body && typeof body === 'object' && !Array.isArray(body)) body.collection = coll.value;
      runBtn.disabled = true;
      const t0 = performance.now();
      try {
        last = await api('/api/query', { json: body });
        last.ms = Math.round(performance.now() - t0);
        if (alive(gen)) show();
      } catch (e) { if (alive(gen)) clear(out).appendChild(errorBox(e)); }
      runBtn.disabled = false;
    }
    function show() {
      clear(out);
      const tabs = h('div', { class: 'row' },
        h('button', { type: 'button', class: view === 'table' ? 'small' : 'small ghost', onclick: () => { view = 'table'; show(); } }, 'Table'),
        h('button', { type: 'button', class: view === 'json' ? 'small' : 'small ghost', onclick: () => { view = 'json'; show(); } }, 'JSON'));
      const head = h('div', { class: 'pager' }, h('span', { class: 'count', 'data-testid': 'raw-count', text: num(last.items.length) + ' shown of ' + num(last.total) + ' in ' + last.collection + ' · ' + last.ms + ' ms' }), tabs);
      let body;
      if (view === 'json') body = h('pre', { class: 'json' }, JSON.stringify(last.items, null, 2));
      else {
        // the level's usual columns first, then other top-level fields; internal ones (_src ...) stay out
        const preferred = { studies: LEVELS.studies.columns, series: LEVELS.series.columns,
          instances: ['series_id', 'instance_number', 'sop_class_uid', 'paths'],
          jobs: ['state', 'researcher_id', 'collection', 'files_total', 'files_done', 'files_failed', 'submitted_at'] }[last.collection] || [];
        const present = new Set();
        for (const d of last.items) for (const k of Object.keys(d)) present.add(k);
        const keys = ['_id'].filter((k) => present.has(k));
        for (const k of preferred) if (present.has(k) && !keys.includes(k)) keys.push(k);
        for (const k of present) if (keys.length < 10 && !keys.includes(k) && !k.startsWith('_') && !['metadata', 'series', 'selectors', 'errors'].includes(k)) keys.push(k);
        const link = (d) => (last.collection === 'series' ? '#/series/' : last.collection === 'studies' ? '#/studies/' : null);
        body = last.items.length ? h('div', { class: 'tablewrap' }, h('table', { 'data-testid': 'raw-table' }, h('thead', {}, h('tr', {}, keys.map((k) => h('th', { text: label(k) })))),
          h('tbody', {}, last.items.map((d) => h('tr', { class: link(d) ? 'clickable' : '', onclick: () => { if (link(d)) go(link(d) + encodeURIComponent(d._id)); } },
            keys.map((k) => h('td', { class: k === '_id' ? 'mono' : '', title: fmt(d[k]) }, cell(k, d[k])))))))) : h('div', { class: 'empty', text: 'No documents match.' });
      }
      out.appendChild(h('div', { class: 'panel flush' }, head, body));
    }
  }

  // ------------------------------------------------------------------ jobs
  const FINAL = new Set(['completed', 'completed_with_errors', 'failed']);

  function pending() { try { return JSON.parse(localStorage.getItem('metadb.pending') || '[]'); } catch (e) { return []; } }
  function setPending(list) { localStorage.setItem('metadb.pending', JSON.stringify(list.slice(-50))); }

  function progressBar(job) {
    const p = typeof job.progress === 'number' ? job.progress : 0;
    const cls = job.state === 'failed' ? ' failed' : job.state === 'completed_with_errors' ? ' errors' : FINAL.has(job.state) ? ' done' : '';
    const done = (job.files_done || 0) + (job.files_failed || 0);
    const text = (p >= 100 ? '100' : p.toFixed(p < 10 ? 1 : 0)) + ' %' + (job.files_total ? ' · ' + num(done) + '/' + num(job.files_total) : '');
    const bar = h('div', { class: 'bar' });
    bar.style.width = Math.max(0, Math.min(100, p)) + '%';
    return h('div', { class: 'progress' + cls, role: 'progressbar', 'aria-valuenow': String(Math.round(p * 10) / 10), 'aria-valuemin': '0', 'aria-valuemax': '100', 'data-testid': 'job-progress', 'data-job': job._id }, bar, h('span', { text: text }));
  }

  function jobsView(main) {
    const gen = page.gen;
    const f = {};
    const area = (name, ph) => (f[name] = h('textarea', { name, placeholder: ph, 'data-testid': 'job-' + name }));
    const inp = (name, ph) => (f[name] = h('input', { name, placeholder: ph, 'data-testid': 'job-' + name }));
    const allCases = h('input', { type: 'checkbox', 'data-testid': 'job-all_cases' });
    const token = h('input', { type: 'password', placeholder: store.token ? '(saved)' : 'Bearer token', 'data-testid': 'job-token', autocomplete: 'off' });
    const msg = h('div');
    const form = h('form', { class: 'panel', 'data-testid': 'job-form', onsubmit: (ev) => { ev.preventDefault(); submit(); } },
      h('h2', { text: 'Submit a job' }),
      h('div', { class: 'jobform' },
        h('label', {}, 'Researcher', inp('researcher_id', 'e.g. jdoe')),
        h('label', {}, 'Collection', inp('collection', 'e.g. LIDC-IDRI')),
        h('label', {}, 'Feature set', inp('feature_set', 'default')),
        h('label', {}, 'Accession numbers (one per line or comma-separated)', area('accession_numbers', '')),
        h('label', {}, 'Patient IDs', area('patient_ids', 'LIDC-IDRI-0001')),
        h('label', {}, 'Study / series UIDs', area('uids', 'study or series UIDs (prefix series UIDs with "series:")')),
        h('div', { class: 'full row' }, h('label', { class: 'check' }, allCases, 'every case of the collection'),
          h('label', { style: { marginLeft: 'auto' } }, 'API token', token), h('button', { type: 'submit', 'data-testid': 'job-submit' }, 'Submit job'))),
      msg);
    main.appendChild(h('div', { class: 'pagehead' }, h('div', {}, h('h1', { text: 'Jobs' }), h('div', { class: 'muted', text: 'Submitted jobs are published to Kafka; the producer resolves them to files and the bars follow the linker\'s exact counts.' }))));
    main.appendChild(form);
    const listPanel = h('div', { class: 'panel flush', 'data-testid': 'jobs-list' }, h('div', { class: 'empty' }, h('span', { class: 'spinner' })));
    main.appendChild(listPanel);

    const split = (s) => s.split(/[\s,;]+/).map((x) => x.trim()).filter(Boolean);
    async function submit() {
      const body = {};
      for (const k of ['researcher_id', 'collection', 'feature_set']) if (f[k].value.trim()) body[k] = f[k].value.trim();
      for (const k of ['accession_numbers', 'patient_ids']) { const v = split(f[k].value); if (v.length) body[k] = v; }
      const uids = split(f.uids.value);
      const series = uids.filter((u) => u.startsWith('series:')).map((u) => u.slice(7));
      const studies = uids.filter((u) => !u.startsWith('series:'));
      if (studies.length) body.study_uids = studies;
      if (series.length) body.series_uids = series;
      if (allCases.checked) body.all_cases = true;
      if (token.value.trim()) store.token = token.value.trim();
      clear(msg);
      try {
        const r = await api('/api/jobs', { json: body });
        setPending(pending().concat([{ _id: r.job_id, submitted_at: r.submitted_at, researcher_id: body.researcher_id, collection: body.collection }]));
        toast('Job ' + r.job_id.slice(0, 8) + ' submitted');
        msg.appendChild(h('div', { class: 'hint', 'data-testid': 'job-submitted', 'data-job': r.job_id, text: 'Submitted job ' + r.job_id + '.' }));
        load();
      } catch (e) { msg.appendChild(errorBox(e)); }
    }

    async function load() {
      let res;
      try { res = await api('/api/jobs?limit=50'); } catch (e) { if (alive(gen)) clear(listPanel).appendChild(h('div', { style: { padding: '12px' } }, errorBox(e))); return; }
      if (!alive(gen)) return;
      const known = new Set(res.items.map((j) => j._id));
      const waiting = pending().filter((p) => !known.has(p._id));
      setPending(waiting);
      const jobs = waiting.map((p) => Object.assign({ state: 'queued', progress: 0 }, p)).concat(res.items);
      clear(listPanel);
      if (!jobs.length) { listPanel.appendChild(h('div', { class: 'empty', text: 'No jobs yet.' })); return; }
      listPanel.appendChild(h('div', { class: 'tablewrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Job', 'Researcher', 'Collection', 'State', 'Progress', 'Failed', 'Instances', 'Submitted'].map((t, i) => h('th', { class: i === 5 || i === 6 ? 'num' : '', text: t })))),
        h('tbody', {}, jobs.map((j) => h('tr', { class: 'clickable', 'data-testid': 'job-row', 'data-job': j._id, onclick: () => showJob(j._id) },
          h('td', { class: 'mono', title: j._id, text: j._id.slice(0, 8) }), h('td', { text: fmt(j.researcher_id) }), h('td', { text: fmt(j.collection) }),
          h('td', {}, h('span', { class: 'state ' + j.state, 'data-testid': 'job-state', text: j.state.replace(/_/g, ' ') })),
          h('td', {}, progressBar(j)), h('td', { class: 'num', text: num(j.files_failed || 0) }), h('td', { class: 'num', text: num(j.instances_linked || 0) }),
          h('td', { text: fmtTime(j.submitted_at) })))))));
    }
    // PACS retrievals of a job (state "retrieving"): per selector, studies found and instances received.
    function retrievalTable(j) {
      const rs = Object.values(j.retrievals || {}).sort((a, b) => (a.index || 0) - (b.index || 0));
      if (!rs.length) return h('span', {});
      return h('div', { 'data-testid': 'job-retrievals' },
        h('h2', { style: { marginTop: '14px' }, text: 'Retrieval from PACS (' + rs.length + ' of ' + num(j.retrieve_total || rs.length) + ')' }),
        h('table', {}, h('thead', {}, h('tr', {}, ['Selector', 'Source', 'Status', 'Studies', 'Received', 'Expected', 'Missing', 'Reason'].map((t, i) => h('th', { class: i >= 3 && i <= 6 ? 'num' : '', text: t })))),
          h('tbody', {}, rs.map((r) => h('tr', {}, h('td', { class: 'mono', text: r.selector }), h('td', { text: r.source }),
            h('td', { text: r.status }), h('td', { class: 'num', text: num(r.studies || 0) }), h('td', { class: 'num', text: num(r.landed || 0) }),
            h('td', { class: 'num', text: num(r.expected || 0) }), h('td', { class: 'num', text: num(r.missing_count || 0) }),
            h('td', { text: (r.reason || '') + ((r.missing || []).length ? ' — ' + r.missing.slice(0, 5).join(', ') + (r.missing.length > 5 ? ' …' : '') : '') }))))));
    }
    async function showJob(id) {
      try {
        const j = await api('/api/jobs/' + encodeURIComponent(id));
        const sel = (j.selectors || []).map((s) => h('tr', {}, h('td', { text: s.kind }), h('td', { class: 'mono', text: s.value }), h('td', { text: s.status }), h('td', { class: 'num', text: num(s.files) }), h('td', { text: s.reason || '' })));
        const errs = (j.errors || []).map((e) => h('tr', {}, h('td', { text: e.stage }), h('td', { text: e.error }), h('td', { class: 'mono', text: e.path || '' }), h('td', { text: e.message || '' })));
        modal('Job ' + id, h('div', {}, progressBar(j), h('div', { style: { height: '10px' } }),
          kvGrid(j, ['state', 'researcher_id', 'collection', 'feature_set', 'files_total', 'files_done', 'files_failed', 'files_flagged', 'instances_linked', 'submitted_at', 'completed_at']),
          h('h2', { style: { marginTop: '14px' }, text: 'Selectors (' + sel.length + ')' }),
          sel.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Kind', 'Value', 'Status', 'Files', 'Reason'].map((t, i) => h('th', { class: i === 3 ? 'num' : '', text: t })))), h('tbody', {}, sel)) : h('div', { class: 'muted', text: 'none recorded yet' }),
          retrievalTable(j),
          h('h2', { style: { marginTop: '14px' }, text: 'Errors (' + errs.length + ')' }),
          errs.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Stage', 'Error', 'Path', 'Message'].map((t) => h('th', { text: t })))), h('tbody', {}, errs)) : h('div', { class: 'muted', text: 'none' })));
      } catch (e) { toast(e.detail || e.message, true); }
    }
    load();
    every(2000, load);
  }

  // ------------------------------------------------------------ operations
  const COLORS = ['#2f7ed8', '#e4572e', '#17a673', '#8e44ad', '#f0a202', '#1abc9c', '#c0392b', '#34495e', '#7f8c8d', '#d35400', '#2c3e50', '#16a085'];

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function lineChart(series, opts) {
    const W = 720, H = 240, L = 56, R = 12, T = 10, B = 26;
    const svg = h('svg:svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', 'data-testid': opts.testid || 'chart', role: 'img', 'aria-label': opts.title || 'chart' });
    const pts = series.flatMap((s) => s.points);
    if (pts.length < 1) {
      svg.appendChild(h('svg:text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'collecting samples…' }));
      return svg;
    }
    let t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
    if (t1 - t0 < 20000) t0 = t1 - 20000;
    const ymax = niceMax(Math.max(...pts.map((p) => p[1]), 0));
    const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0 || 1);
    const y = (v) => T + (H - T - B) * (1 - v / ymax);
    for (let i = 0; i <= 4; i++) {
      const v = ymax * i / 4, yy = y(v);
      svg.appendChild(h('svg:line', { class: 'grid', x1: L, x2: W - R, y1: yy, y2: yy }));
      svg.appendChild(h('svg:text', { x: L - 6, y: yy + 4, 'text-anchor': 'end', text: v >= 1000 ? (v / 1000).toFixed(v % 1000 ? 1 : 0) + 'k' : String(Math.round(v * 100) / 100) }));
    }
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (t1 - t0) * i / 4;
      svg.appendChild(h('svg:text', { x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', text: new Date(t).toLocaleTimeString() }));
    }
    svg.appendChild(h('svg:line', { class: 'axis', x1: L, x2: W - R, y1: y(0), y2: y(0) }));
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const d = s.points.map((p, k) => (k ? 'L' : 'M') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' ');
      svg.appendChild(h('svg:path', { d, fill: 'none', stroke: s.color || COLORS[i % COLORS.length], 'stroke-width': '2', 'vector-effect': 'non-scaling-stroke', 'stroke-linejoin': 'round' }));
      const last = s.points[s.points.length - 1];
      svg.appendChild(h('svg:circle', { cx: x(last[0]), cy: y(last[1]), r: '3', fill: s.color || COLORS[i % COLORS.length] }));
    });
    return svg;
  }

  function legend(series) {
    return h('div', { class: 'legend' }, series.map((s, i) => h('span', {}, h('i', { style: { background: s.color || COLORS[i % COLORS.length] } }), s.name)));
  }

  function opsView(main) {
    const gen = page.gen;
    let focus = '';
    main.appendChild(h('div', { class: 'pagehead' }, h('div', {}, h('h1', { text: 'Operations' }),
      h('div', { class: 'muted', text: 'Consumer lag per group and partition (committed offset behind the high watermark) and consumption throughput, sampled every few seconds.' }))));
    const cards = h('div', { class: 'cards', 'data-testid': 'lag-cards' });
    const focusSel = h('select', { 'data-testid': 'lag-focus', onchange: () => { focus = focusSel.value; render(); } }, h('option', { value: '', text: 'all groups (totals)' }));
    const lagChart = h('div');
    const tpChart = h('div');
    const table = h('div', { class: 'tablewrap' });
    const err = h('div');
    main.appendChild(err);
    main.appendChild(cards);
    main.appendChild(h('div', { class: 'split' },
      h('div', { class: 'panel' }, h('div', { class: 'row', style: { justifyContent: 'space-between', marginBottom: '6px' } }, h('h2', { text: 'Consumer lag over time' }), focusSel), lagChart),
      h('div', { class: 'panel' }, h('h2', { text: 'Throughput (messages committed per second)' }), tpChart)));
    main.appendChild(h('div', { class: 'panel flush', 'data-testid': 'lag-table' }, h('div', { style: { padding: '12px 14px 4px' } }, h('h2', { text: 'Lag per group and partition' })), table));

    let data = null;
    async function load() {
      try {
        const r = await api('/api/lag?history=true');
        if (!alive(gen)) return;
        data = r;
        clear(err);
        render();
      } catch (e) { if (alive(gen)) clear(err).appendChild(errorBox(e)); }
    }

    function render() {
      if (!data) return;
      const keys = [];
      for (const s of data.history || []) for (const k of Object.keys(s.groups)) if (!keys.includes(k)) keys.push(k);
      const have = new Set(Array.from(focusSel.options).map((o) => o.value));
      for (const k of keys) if (!have.has(k)) focusSel.appendChild(h('option', { value: k, text: k.replace('|', ' → ') }));
      focusSel.value = focus;

      clear(cards);
      cards.appendChild(h('div', { class: 'card' }, h('div', { class: 'label', text: 'Total lag' }), h('div', { class: 'value', 'data-testid': 'total-lag', text: num(data.total_lag) }), h('div', { class: 'sub', text: 'messages behind' })));
      for (const g of data.groups) {
        cards.appendChild(h('div', { class: 'card' }, h('div', { class: 'label', text: g.group }), h('div', { class: 'value', text: num(g.total_lag) }),
          h('div', { class: 'sub', text: (g.topic || 'no topic') + ' · ' + (g.state || '?') + ' · ' + num(g.members || 0) + ' members' })));
      }

      const hist = data.history || [];
      let series;
      if (!focus) {
        series = keys.map((k) => ({ name: k.replace('|', ' → '), points: hist.filter((s) => s.groups[k]).map((s) => [s.t, s.groups[k].lag || 0]) }));
      } else {
        const parts = new Set();
        for (const s of hist) if (s.groups[focus]) for (const p of Object.keys(s.groups[focus].partitions)) parts.add(p);
        series = Array.from(parts).sort((a, b) => a - b).map((p) => ({ name: 'partition ' + p, points: hist.filter((s) => s.groups[focus] && s.groups[focus].partitions[p] != null).map((s) => [s.t, s.groups[focus].partitions[p]]) }));
      }
      clear(lagChart).appendChild(lineChart(series, { testid: 'lag-chart', title: 'lag over time' }));
      lagChart.appendChild(legend(series));

      const tp = keys.map((k) => {
        const pts = [];
        let prev = null;
        for (const s of hist) {
          const g = s.groups[k];
          if (!g) continue;
          if (prev && s.t > prev.t) pts.push([s.t, Math.max(0, (g.committed - prev.c) * 1000 / (s.t - prev.t))]);
          prev = { t: s.t, c: g.committed };
        }
        return { name: k.replace('|', ' → '), points: pts };
      });
      clear(tpChart).appendChild(lineChart(tp, { testid: 'throughput-chart', title: 'throughput' }));
      tpChart.appendChild(legend(tp));

      const maxLag = Math.max(1, ...data.groups.flatMap((g) => (g.partitions || []).map((p) => p.lag || 0)));
      const rows = [];
      for (const g of data.groups) {
        if (!g.partitions || !g.partitions.length) {
          rows.push(h('tr', {}, h('td', { text: g.group }), h('td', { text: g.topic || '—' }), h('td', { class: 'muted', colspan: '6', text: 'no partitions (no commits yet)' })));
          continue;
        }
        for (const p of g.partitions) {
          const bar = h('span', { class: 'lagbar' });
          bar.style.width = Math.round(120 * (p.lag || 0) / maxLag) + 'px';
          rows.push(h('tr', { 'data-testid': 'lag-row' }, h('td', { text: g.group }), h('td', { text: g.topic }), h('td', { class: 'num', text: p.partition }),
            h('td', { class: 'num', text: p.committed == null ? '—' : num(p.committed) }), h('td', { class: 'num', text: num(p.high_watermark) }),
            h('td', { class: 'num', text: p.lag == null ? 'error' : num(p.lag) }), h('td', {}, bar), h('td', { class: 'muted', text: p.host || '' })));
        }
      }
      clear(table).appendChild(h('table', {}, h('thead', {}, h('tr', {}, ['Group', 'Topic', 'Partition', 'Committed', 'High watermark', 'Lag', '', 'Consumer host'].map((t, i) => h('th', { class: [2, 3, 4, 5].includes(i) ? 'num' : '', text: t })))), h('tbody', {}, rows)));
    }
    load();
    every(3000, load);
  }

  // --------------------------------------------------------------- chrome
  function tokenDialog() {
    const input = h('input', { type: 'password', value: store.token, placeholder: 'token from api.tokens / api.read_tokens', style: { width: '100%' }, 'data-testid': 'token-input' });
    const back = modal('API token', h('div', {},
      h('p', { class: 'muted', text: 'Sent as "Authorization: Bearer …" with every request. Stored in this browser only.' }), input,
      h('div', { class: 'row', style: { marginTop: '12px' } },
        h('button', { type: 'button', 'data-testid': 'token-save', onclick: () => { store.token = input.value.trim(); back.remove(); toast(store.token ? 'Token saved' : 'Token cleared'); route(); } }, 'Save'),
        h('button', { type: 'button', class: 'ghost', onclick: () => { store.token = ''; back.remove(); toast('Token cleared'); route(); } }, 'Clear'))));
    input.focus();
  }

  async function health() {
    const el = document.getElementById('health');
    try {
      const r = await fetch('/healthz');
      const b = await r.json();
      el.className = 'health ' + (r.ok ? 'ok' : 'bad');
      el.textContent = r.ok ? b.database : 'database unavailable';
    } catch (e) { el.className = 'health bad'; el.textContent = 'server unreachable'; }
  }

  document.getElementById('token-btn').addEventListener('click', tokenDialog);
  window.addEventListener('hashchange', route);
  window.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') document.querySelectorAll('.modal-back').forEach((m) => m.remove()); });
  health();
  setInterval(health, 15000);
  route();
})();
