/* metadb dashboard: distribution charts above the study and series lists
 * (GET /api/facets, drawn with Chart.js from vendor/chart.umd.min.js, which
 * deploy/install.sh copies there from the pinned npm package).
 *
 * Self-contained: app.js calls window.MetadbFacets.panel({level, filters,
 * api, alive, addFilter}) while it builds a list page and puts the returned
 * element above the table. The charts count the list's current cohort (the
 * same filters, computed by the database); clicking a bar hands that bar's
 * filter (from the API's "filter" of each bin) to addFilter, which navigates
 * so that the filter bar, the table and the charts all update. Which charts
 * are shown is chosen from /api/fields (promoted fields with values) and
 * kept in localStorage "metadb.facets.<level>"; "Hide" is kept in
 * "metadb.facets.hidden". Without the chart library the panel says how to
 * install it instead of drawing anything. */
(function () {
  'use strict';

  const DEFAULTS = {
    studies: ['modality', 'study_date', 'collection_ids'],
    series: ['modality', 'manufacturer', 'body_part_examined', 'slice_thickness', 'series_date'],
  };
  const MAX_CHARTS = 8;
  const LIST_ONLY = new Set(['limit', 'offset', 'sort', 'fields', 'total', 'format', '_']);
  const COLORS = { bar: '#2f6fb3', hover: '#1f4f85', other: '#b8c2cf' };

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
    if (document.getElementById('facets-style')) return;
    const css = `
.facets { margin-bottom: 14px; }
.facets-head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; margin-bottom: 8px; }
.facets-head h2 { margin: 0; font-size: 15px; }
.facets-head .grow { flex: 1; }
.facets-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 12px; }
.facet-card { border: 1px solid var(--line, #dde3ea); border-radius: 8px; padding: 8px 10px 6px; background: #fff; min-width: 0; }
.facet-card h3 { margin: 0 0 2px; font-size: 13px; }
.facet-card .sub { color: var(--muted, #5f6b7a); font-size: 12px; min-height: 16px; }
.facet-canvas { position: relative; height: 170px; }
.facets-choose { display: flex; flex-wrap: wrap; gap: 4px 14px; padding: 8px 0; }
.facets-choose label { font-size: 13px; display: inline-flex; gap: 4px; align-items: center; }
.facets-note { color: var(--muted, #5f6b7a); font-size: 13px; padding: 6px 0; }
.facets.hidden-charts .facets-grid, .facets.hidden-charts .facets-choose { display: none; }`;
    document.head.appendChild(el('style', { id: 'facets-style' }, css));
  }

  function labelOf(name) {
    return name.replace(/^metadata\./, '').replace(/_ids$/, '').replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());
  }

  function fmtNum(v) {
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6);
  }

  function chosen(level) {
    try {
      const v = JSON.parse(localStorage.getItem('metadb.facets.' + level) || 'null');
      if (Array.isArray(v) && v.length) return v.slice(0, MAX_CHARTS);
    } catch (e) { /* fall back to the defaults */ }
    return (DEFAULTS[level] || []).slice();
  }

  /* Bars of one facet: [{label, count, filter (array of values) or null}]. */
  function barsOf(f) {
    if (f.kind === 'values') {
      const bars = f.values.map((v) => ({ label: String(v.value), count: v.count, filter: [v.filter] }));
      if (f.other > 0) bars.push({ label: 'other (' + (f.distinct - f.values.length) + ')', count: f.other, filter: null });
      return bars;
    }
    if (f.kind === 'dates') {
      return f.bins.map((b) => ({ label: b.value.length === 6 ? b.value.slice(0, 4) + '-' + b.value.slice(4) : b.value, count: b.count, filter: [b.filter] }));
    }
    const bars = f.bins.map((b) => ({ label: fmtNum(b.lo) + '–' + fmtNum(b.hi), count: b.count, filter: b.filter }));
    if (f.other > 0) bars.push({ label: 'outside', count: f.other, filter: null });
    return bars;
  }

  function subtitle(f) {
    const parts = [];
    if (f.kind === 'values') parts.push(f.distinct + ' distinct');
    if (f.kind === 'histogram' && f.min !== undefined) parts.push('min ' + fmtNum(f.min) + ', max ' + fmtNum(f.max));
    if (f.kind === 'dates') parts.push('per ' + f.interval);
    if (f.missing) parts.push(f.missing.toLocaleString() + ' without a value');
    return parts.join(' · ');
  }

  function drawChart(canvas, field, f, onPick) {
    const bars = barsOf(f);
    canvas.setAttribute('aria-label', labelOf(field) + ': ' + bars.map((b) => b.label + ' ' + b.count).join(', '));
    return new window.Chart(canvas, {
      type: 'bar',
      data: {
        labels: bars.map((b) => b.label),
        datasets: [{
          data: bars.map((b) => b.count),
          backgroundColor: bars.map((b) => (b.filter ? COLORS.bar : COLORS.other)),
          hoverBackgroundColor: bars.map((b) => (b.filter ? COLORS.hover : COLORS.other)),
          borderRadius: 2,
        }],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { footer: (items) => (items.length && bars[items[0].dataIndex].filter ? 'click to filter' : '') } },
        },
        scales: {
          x: { ticks: { autoSkip: true, maxRotation: 50, font: { size: 11 } }, grid: { display: false } },
          y: { beginAtZero: true, ticks: { precision: 0, font: { size: 11 } } },
        },
        onHover: (ev, els) => { canvas.style.cursor = els.length && bars[els[0].index].filter ? 'pointer' : 'default'; },
        onClick: (ev, els) => {
          if (!els.length) return;
          const b = bars[els[0].index];
          if (b.filter) onPick(field, b.filter);
        },
      },
    });
  }

  function panel(opts) {
    style();
    const level = opts.level;
    const root = el('div', { class: 'panel facets', 'data-testid': 'facets' });
    if (localStorage.getItem('metadb.facets.hidden') === '1') root.classList.add('hidden-charts');
    const title = el('h2', { text: 'Distributions' });
    const status = el('span', { class: 'muted', 'data-testid': 'facets-status' });
    const grid = el('div', { class: 'facets-grid', 'data-testid': 'facets-grid' });
    const chooser = el('div', { class: 'facets-choose hidden', 'data-testid': 'facets-choose' });
    const chooseBtn = el('button', { type: 'button', class: 'ghost small', 'data-testid': 'facets-choose-btn', onclick: () => { chooser.classList.toggle('hidden'); fillChooser(); } }, 'Charts ▾');
    const hideBtn = el('button', {
      type: 'button', class: 'ghost small', 'data-testid': 'facets-hide',
      onclick: () => {
        const hidden = root.classList.toggle('hidden-charts');
        localStorage.setItem('metadb.facets.hidden', hidden ? '1' : '0');
        hideBtn.textContent = hidden ? 'Show' : 'Hide';
        if (!hidden && !grid.childElementCount) load();
      },
    }, root.classList.contains('hidden-charts') ? 'Show' : 'Hide');
    root.append(el('div', { class: 'facets-head' }, title, status, el('span', { class: 'grow' }), chooseBtn, hideBtn), chooser, grid);

    if (!window.Chart) {
      grid.replaceWith(el('div', { class: 'facets-note', 'data-testid': 'facets-nolib' },
        'The chart library is not installed: run deploy/install.sh (it copies chart.js into api/web/vendor/).'));
      chooseBtn.disabled = true;
      return root;
    }

    let fields = chosen(level);
    const charts = [];

    function filterParams() {
      const p = new URLSearchParams();
      for (const [k, v] of opts.filters) if (!LIST_ONLY.has(k)) p.append(k, v);
      return p;
    }

    async function fillChooser() {
      if (chooser.dataset.filled) return;
      chooser.dataset.filled = '1';
      let info;
      try { info = await opts.api('/api/fields?collection=' + level); } catch (e) { chooser.textContent = 'cannot list fields: ' + e.message; return; }
      for (const f of info.promoted) {
        if (f.name === '_id' || !f.count || /_instance_uid$|^study_id$|^series_id$|^paths$/.test(f.name)) continue;
        const box = el('input', { type: 'checkbox', 'data-testid': 'facet-opt-' + f.name, checked: fields.includes(f.name) });
        box.addEventListener('change', () => {
          fields = box.checked ? fields.concat([f.name]).slice(-MAX_CHARTS) : fields.filter((x) => x !== f.name);
          localStorage.setItem('metadb.facets.' + level, JSON.stringify(fields));
          chooser.querySelectorAll('input[type=checkbox]').forEach((b) => { b.checked = fields.includes(b.dataset.testid.slice(10)); });
          load();
        });
        chooser.append(el('label', { title: f.help || '' }, box, labelOf(f.name) + (f.type === 'number' ? ' (histogram)' : f.type === 'date' ? ' (per year)' : '')));
      }
    }

    async function load() {
      charts.splice(0).forEach((c) => c.destroy());
      grid.textContent = '';
      if (root.classList.contains('hidden-charts')) return;
      if (!fields.length) { status.textContent = 'no charts chosen'; return; }
      status.textContent = 'counting…';
      const p = filterParams();
      p.set('level', level);
      p.set('fields', fields.join(','));
      let res;
      try {
        res = await opts.api('/api/facets?' + p.toString());
      } catch (e) {
        if (!opts.alive()) return;
        status.textContent = '';
        grid.append(el('div', { class: 'facets-note', 'data-testid': 'facets-error' }, (e.error || 'error') + ': ' + (e.detail || e.message)));
        return;
      }
      if (!opts.alive()) return;
      status.textContent = res.total.toLocaleString() + ' ' + level;
      for (const [field, f] of Object.entries(res.facets)) {
        const canvas = el('canvas', { 'data-testid': 'facet-chart-' + field, 'data-field': field, role: 'img' });
        const card = el('div', { class: 'facet-card', 'data-testid': 'facet-' + field },
          el('h3', { text: labelOf(field) }), el('div', { class: 'sub', text: subtitle(f) }), el('div', { class: 'facet-canvas' }, canvas));
        grid.append(card);
        charts.push(drawChart(canvas, field, f, opts.addFilter));
      }
    }

    load();
    return root;
  }

  window.MetadbFacets = { panel };
})();
