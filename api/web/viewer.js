/* metadb dashboard: images. Loaded before app.js, which calls into
 * window.MetadbImages:
 *
 *   thumbCell(studyUid, seriesUid)   a table cell whose thumbnail loads lazily
 *   lazyThumbs(root)                 start loading the cells of root as they scroll into view
 *   seriesViewer(opts)               the series page's stack viewer (an element)
 *   viewerUrl(studyUid, seriesUid)   the OHIF viewer's address for "Open in viewer"
 *
 * Images come from metadb's own DICOMweb (PS3.18 rendered resources):
 *   /dicomweb/studies/{s}/series/{se}/thumbnail?viewport=w,h
 *   /dicomweb/studies/{s}/series/{se}/instances/{i}/rendered?window=c,w,linear&viewport=w,h
 * They are fetched (with the dashboard's token as "Authorization: Bearer",
 * which an <img src> cannot send) and shown as blob: URLs, revoked when they
 * leave the cache. The server renders and windows the pixels; nothing here
 * decodes DICOM.
 */
'use strict';
(function () {
  const TOKEN_KEY = 'metadb.token';
  const token = () => { try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } };
  const enc = encodeURIComponent;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) if (kid !== undefined && kid !== null && kid !== false) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }

  // ------------------------------------------------------------ fetching
  // At most LIMIT image requests in flight: a page of 250 series must not
  // open 250 connections (the API limits concurrent requests per client).
  const LIMIT = 4;
  let running = 0;
  const queue = [];
  function pump() {
    while (running < LIMIT && queue.length) {
      const job = queue.shift();
      // the page that asked is gone (new table page, another route): skip it
      if (job.owner && !job.owner.isConnected) { job.reject(new DOMException('page left', 'AbortError')); continue; }
      running++;
      fetchImage(job.url).then(job.resolve, job.reject).finally(() => { running--; pump(); });
    }
  }
  function queued(url, owner, urgent) {
    return new Promise((resolve, reject) => {
      const job = { url, owner, resolve, reject };
      if (urgent) queue.unshift(job); else queue.push(job);
      pump();
    });
  }

  async function fetchImage(url) {
    const headers = { Accept: 'image/png, image/jpeg;q=0.9' };
    if (token()) headers.Authorization = 'Bearer ' + token();
    const r = await fetch(url, { headers });
    if (!r.ok) {
      let why = 'HTTP ' + r.status;
      try { const b = await r.json(); if (b && b.error) why = b.error + (b.detail ? ': ' + b.detail : ''); } catch (e) { /* not JSON */ }
      const err = new Error(why);
      err.status = r.status;
      throw err;
    }
    const ct = r.headers.get('content-type') || '';
    if (!/^image\//.test(ct)) throw new Error('not an image: ' + ct);
    return URL.createObjectURL(await r.blob());
  }

  // --------------------------------------------------------- thumbnails
  const THUMB = 64;
  function thumbUrl(study, series) {
    return '/dicomweb/studies/' + enc(study) + '/series/' + enc(series) + '/thumbnail?viewport=' + (2 * THUMB) + ',' + (2 * THUMB);
  }

  function thumbCell(study, series) {
    const box = el('div', { class: 'thumb pending', 'data-testid': 'thumb', 'data-study': study || '', 'data-series': series || '' });
    return el('td', { class: 'thumbcell' }, box);
  }

  function placeholder(box, why) {
    box.className = 'thumb missing';
    box.title = 'no image: ' + why;
    box.setAttribute('data-state', 'error');
    box.textContent = '';
  }

  function loadThumb(box) {
    if (box.dataset.state) return;
    box.dataset.state = 'loading';
    if (!box.dataset.study || !box.dataset.series) { placeholder(box, 'the series has no study UID'); return; }
    queued(thumbUrl(box.dataset.study, box.dataset.series), box).then((src) => {
      const img = el('img', { alt: 'series thumbnail', width: THUMB, height: THUMB, 'data-testid': 'thumb-img', decoding: 'async' });
      img.onload = () => { box.className = 'thumb'; box.dataset.state = 'loaded'; };
      img.onerror = () => { URL.revokeObjectURL(src); placeholder(box, 'the image could not be decoded'); };
      img.src = src;
      // the blob lives as long as the element: revoke when the table is replaced
      img.dataset.blob = src;
      thumbImgs.add(img);
      box.textContent = '';
      box.append(img);
    }, (e) => placeholder(box, e.message));
  }

  let observer = null;
  function lazyThumbs(root) {
    sweep();
    const boxes = root.querySelectorAll('.thumb.pending:not([data-state])');
    if (!('IntersectionObserver' in window)) { boxes.forEach(loadThumb); return; }
    if (!observer) {
      observer = new IntersectionObserver((entries) => {
        for (const en of entries) {
          if (!en.isIntersecting) continue;
          observer.unobserve(en.target);
          loadThumb(en.target);
        }
      }, { rootMargin: '200px' });
    }
    boxes.forEach((b) => { observer.observe(b); observed.add(b); });
  }

  // Blob URLs of images whose page is gone (new table page, route change)
  // are revoked: thumbnails by their element, the viewer by its cache.
  const thumbImgs = new Set();
  const observed = new Set();
  let liveViewer = null;
  function sweep() {
    for (const b of observed) if (!b.isConnected || b.dataset.state) { if (observer) observer.unobserve(b); observed.delete(b); }
    for (const img of thumbImgs) if (!img.isConnected) { URL.revokeObjectURL(img.dataset.blob); thumbImgs.delete(img); }
    if (liveViewer && !liveViewer.isConnected) { liveViewer.destroy(); liveViewer = null; }
  }
  window.addEventListener('hashchange', () => setTimeout(sweep, 0));

  // -------------------------------------------------------- the viewer
  // Window presets: center/width in Hounsfield units (CT); "default" lets the
  // server use the file's WindowCenter/Width (or the pixel range).
  const PRESETS = [
    { id: 'default', label: 'Default', key: '1' },
    { id: 'lung', label: 'Lung', key: '2', c: -600, w: 1500 },
    { id: 'mediastinum', label: 'Mediastinum', key: '3', c: 50, w: 350 },
    { id: 'bone', label: 'Bone', key: '4', c: 400, w: 1800 },
    { id: 'brain', label: 'Brain', key: '5', c: 40, w: 80 },
  ];
  const VIEWPORT = 512;
  const CACHE_MAX = 48;
  const PREFETCH = 2;

  // Attributes shown beside the image, when the catalogue has them.
  const KEY_META = [
    ['InstanceNumber', 'Instance'], ['SliceLocation', 'Slice location'], ['ImagePositionPatient', 'Position (mm)'],
    ['SliceThickness', 'Slice thickness'], ['Rows', 'Rows'], ['Columns', 'Columns'], ['PixelSpacing', 'Pixel spacing'],
    ['WindowCenter', 'Window center'], ['WindowWidth', 'Window width'], ['RescaleIntercept', 'Rescale intercept'],
    ['RescaleSlope', 'Rescale slope'], ['PhotometricInterpretation', 'Photometric'], ['BitsStored', 'Bits stored'],
    ['KVP', 'kVp'], ['XRayTubeCurrent', 'Tube current'], ['ConvolutionKernel', 'Kernel'], ['ImageType', 'Image type'],
    ['AcquisitionTime', 'Acquisition time'], ['ContentTime', 'Content time'], ['TransferSyntaxUID', 'Transfer syntax'],
  ];

  function fmt(v) {
    if (v === undefined || v === null) return '';
    if (Array.isArray(v)) return v.map(fmt).join(' \\ ');
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  // opts: {study, series, api (the dashboard's JSON fetch), alive () => bool}
  function seriesViewer(opts) {
    const { study, series } = opts;
    let items = [];        // [{_id, instance_number}] in instance order
    let index = 0;
    let preset = PRESETS[0];
    let shownKey = '';
    const cache = new Map(); // key -> {promise, url}
    const meta = new Map();  // sop -> instance document (promise)

    const img = el('img', { class: 'stack-img', alt: 'instance image', 'data-testid': 'viewer-image' });
    const status = el('div', { class: 'stack-status muted', 'data-testid': 'viewer-status', text: 'loading instances…' });
    const stage = el('div', { class: 'stack-stage', 'data-testid': 'viewer-stage' }, img, status);
    const slider = el('input', { type: 'range', min: '1', max: '1', value: '1', 'aria-label': 'instance', 'data-testid': 'viewer-slider' });
    const pos = el('span', { class: 'stack-pos', 'data-testid': 'viewer-pos', text: '–' });
    const presetBtns = PRESETS.map((p) => el('button', {
      type: 'button', class: 'small ghost preset', 'data-testid': 'preset-' + p.id, 'data-preset': p.id, 'aria-pressed': 'false',
      title: p.c !== undefined ? 'window center ' + p.c + ', width ' + p.w + ' (key ' + p.key + ')' : "the file's own window (key " + p.key + ')',
      onclick: () => setPreset(p),
    }, p.label));
    const metaBox = el('dl', { class: 'kv stack-meta', 'data-testid': 'viewer-meta' });
    const help = el('div', { class: 'muted stack-help', text: 'Keys: ↑/↓ or ←/→ previous/next · PgUp/PgDn ±10 · Home/End first/last · 1–5 window presets · mouse wheel scrolls.' });
    const root = el('div', {
      class: 'panel stack', tabindex: '0', role: 'group', 'aria-label': 'series viewer (arrow keys scroll, 1 to 5 choose the window)',
      'data-testid': 'series-viewer',
    },
    el('div', { class: 'row stack-head' }, el('h2', { text: 'Images' }), el('div', { class: 'row presets', role: 'group', 'aria-label': 'window presets' }, presetBtns)),
    el('div', { class: 'stack-body' },
      el('div', { class: 'stack-left' }, stage,
        el('div', { class: 'row stack-nav' },
          el('button', { type: 'button', class: 'small ghost', 'aria-label': 'previous instance', 'data-testid': 'viewer-prev', onclick: () => go(index - 1) }, '‹'),
          slider,
          el('button', { type: 'button', class: 'small ghost', 'aria-label': 'next instance', 'data-testid': 'viewer-next', onclick: () => go(index + 1) }, '›'),
          pos),
        help),
      metaBox));

    slider.addEventListener('input', () => go(parseInt(slider.value, 10) - 1));
    stage.addEventListener('wheel', (ev) => {
      if (!items.length) return;
      ev.preventDefault();
      go(index + (ev.deltaY > 0 ? 1 : ev.deltaY < 0 ? -1 : 0));
    }, { passive: false });
    root.addEventListener('keydown', (ev) => {
      if (ev.target === slider && (ev.key.startsWith('Arrow') || ev.key === 'Home' || ev.key === 'End' || ev.key.startsWith('Page'))) return; // the slider moves itself
      if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const steps = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
      if (ev.key in steps) go(index + steps[ev.key]);
      else if (ev.key === 'Home') go(0);
      else if (ev.key === 'End') go(items.length - 1);
      else { const p = PRESETS.find((x) => x.key === ev.key); if (!p) return; setPreset(p); }
      ev.preventDefault();
    });

    function renderedUrl(sop, p) {
      let u = '/dicomweb/studies/' + enc(study) + '/series/' + enc(series) + '/instances/' + enc(sop) + '/rendered?viewport=' + VIEWPORT + ',' + VIEWPORT;
      if (p.c !== undefined) u += '&window=' + p.c + ',' + p.w + ',linear';
      return u;
    }

    function image(i, p, urgent) {
      const sop = items[i]._id;
      const key = sop + '|' + p.id;
      let hit = cache.get(key);
      if (hit) { cache.delete(key); cache.set(key, hit); return hit.promise; } // most recently used last
      hit = { url: null };
      hit.promise = queued(renderedUrl(sop, p), root, urgent).then((u) => { hit.url = u; return u; });
      hit.promise.catch(() => cache.delete(key));
      cache.set(key, hit);
      for (const [k, old] of cache) { // least recently used first; never the one on screen
        if (cache.size <= CACHE_MAX) break;
        if (k === shownKey || k === key) continue;
        cache.delete(k);
        old.promise.then((u) => URL.revokeObjectURL(u), () => {});
      }
      return hit.promise;
    }

    function prefetch() {
      for (let d = 1; d <= PREFETCH; d++) for (const j of [index + d, index - d]) if (j >= 0 && j < items.length) image(j, preset, false);
    }

    async function show() {
      if (!items.length) return;
      const i = index, p = preset, sop = items[i]._id, key = sop + '|' + p.id;
      slider.value = String(i + 1);
      pos.textContent = (i + 1) + ' / ' + items.length;
      root.dataset.index = String(i);
      img.alt = 'instance ' + fmt(items[i].instance_number) + ' (' + (i + 1) + ' of ' + items.length + '), ' + p.label.toLowerCase() + ' window';
      presetBtns.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.preset === p.id)));
      showMeta(i);
      try {
        const url = await image(i, p, true);
        if (i !== index || p !== preset || !opts.alive()) return; // the user moved on
        img.onload = () => {
          img.dataset.sop = sop;
          img.dataset.preset = p.id;
          img.dataset.index = String(i);
          status.textContent = '';
          stage.classList.remove('failed');
        };
        img.onerror = () => {
          stage.classList.add('failed');
          status.textContent = 'the image of instance ' + fmt(items[i].instance_number) + ' could not be decoded';
        };
        shownKey = key;
        img.src = url;
      } catch (e) {
        if (i !== index || p !== preset) return;
        stage.classList.add('failed');
        img.removeAttribute('src');
        img.dataset.sop = '';
        status.textContent = 'no image for instance ' + fmt(items[i].instance_number) + ': ' + e.message;
      }
      prefetch();
    }

    async function showMeta(i) {
      const sop = items[i]._id;
      if (!meta.has(sop)) meta.set(sop, opts.api('/api/instances/' + enc(sop)).catch((e) => { meta.delete(sop); throw e; }));
      let d;
      try { d = await meta.get(sop); } catch (e) { if (i === index) metaBox.replaceChildren(el('div', { class: 'muted', text: 'metadata: ' + e.message })); return; }
      if (i !== index) return;
      const m = d.metadata || {};
      const rows = [el('div', {}, el('dt', { text: 'SOP Instance UID' }), el('dd', { class: 'mono', text: sop }))];
      for (const [k, lab] of KEY_META) {
        const v = k === 'InstanceNumber' && m[k] === undefined ? d.instance_number : m[k];
        if (v === undefined || v === null || v === '') continue;
        rows.push(el('div', { 'data-k': k }, el('dt', { text: lab }), el('dd', { text: fmt(v) })));
      }
      if (d.integrity) rows.push(el('div', {}, el('dt', { text: 'Integrity' }), el('dd', { class: 'bad', text: 'damaged file: ' + JSON.stringify(d.integrity) })));
      metaBox.replaceChildren(...rows);
    }

    function go(i) {
      if (!items.length) return;
      const j = Math.max(0, Math.min(items.length - 1, i));
      if (j === index && img.dataset.sop) return;
      index = j;
      show();
    }

    function setPreset(p) {
      if (p === preset && img.dataset.sop) return;
      preset = p;
      show();
    }

    async function load() {
      const all = [];
      try {
        for (let off = 0; ; off += 1000) {
          const r = await opts.api('/api/instances?series_id=' + enc(series) + '&sort=instance_number,_id&fields=instance_number&limit=1000&offset=' + off);
          all.push(...r.items);
          if (!opts.alive()) return;
          if (all.length >= r.total || !r.items.length) break;
        }
      } catch (e) {
        status.textContent = 'cannot list the instances: ' + e.message;
        return;
      }
      items = all;
      if (!items.length) { status.textContent = 'this series has no instances'; return; }
      slider.max = String(items.length);
      status.textContent = '';
      index = Math.floor((items.length - 1) / 2); // start in the middle, like the thumbnail
      show();
    }

    root.destroy = () => {
      for (const v of cache.values()) v.promise.then((u) => URL.revokeObjectURL(u), () => {});
      cache.clear();
    };
    sweep();
    liveViewer = root;
    load();
    return root;
  }

  function viewerUrl(study, series) {
    let u = '/viewer/viewer?StudyInstanceUIDs=' + enc(study);
    if (series) u += '&initialSeriesInstanceUID=' + enc(series);
    return u;
  }

  window.MetadbImages = { thumbCell, lazyThumbs, seriesViewer, viewerUrl, PRESETS };
})();
