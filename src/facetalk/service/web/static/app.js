/* facetalk web page: plain browser JavaScript, no build step, no outside assets.
 *
 * The form's parameters come from GET /v1/options (the engine's field_info()), the
 * portrait preview from POST /v1/analyze, jobs from the /v1/jobs API and their
 * progress from its Server-Sent Events, read with fetch() so an API key can be sent.
 */
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const KEY_STORE = 'facetalk.key';          // sessionStorage: gone when the tab closes
  const LANG_STORE = 'facetalk.lang';
  const HISTORY_STORE = 'facetalk.history';  // localStorage: ids and facts, never media
  const HISTORY_MAX = 30;
  const FINAL = new Set(['succeeded', 'failed', 'cancelled']);

  const state = {
    lang: 'en',
    strings: { en: {}, zh: {} },
    key: sessionStorage.getItem(KEY_STORE) || '',
    schema: null,            // {fields, presets, limits, version}
    fields: new Map(),       // name -> field info
    controls: new Map(),     // name -> {get(), set(v), el}
    framing: 'crop',
    portrait: null,          // {file, analysis}
    portraitBusy: false,
    portraitSeq: 0,
    audio: null,             // {blob, name, duration}
    audioSeq: 0,
    durationAuto: null,      // the recording's length, shown in the duration field
    durationEdited: false,
    job: null,               // {id, abort: AbortController, cancelled}
    videoUrl: null,          // object URL to revoke
    recorder: null,
  };

  // -- strings -----------------------------------------------------------------------
  function t(key, vars) {
    let s = state.strings[state.lang][key];
    if (s === undefined) s = state.strings.en[key];
    if (s === undefined) return key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return s;
  }
  function has(key) { return key in state.strings[state.lang] || key in state.strings.en; }

  function applyStrings() {
    document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-aria]')) el.setAttribute('aria-label', t(el.dataset.i18nAria));
    for (const el of document.querySelectorAll('[data-i18n-alt]')) el.alt = t(el.dataset.i18nAlt);
    $('footer-text').textContent = t('footer', { v: state.schema ? state.schema.version : '' });
    if (state.schema) { buildForm(); }
    renderPortraitStatus();
    renderAudioStatus();
    renderRecordButton();
    renderHistory();
    updateGenerate();
  }

  // -- HTTP ----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.detail ? body.detail : `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  /** fetch() with the API key; a 401 asks for the key (once for all requests) and retries. */
  async function api(path, options = {}) {
    for (;;) {
      const sent = state.key;
      const headers = new Headers(options.headers || {});
      if (sent) headers.set('Authorization', 'Bearer ' + sent);
      let res;
      try {
        res = await fetch(path, { ...options, headers });
      } catch (err) {
        if (err.name === 'AbortError') throw err;
        throw new ApiError(0, { error: 'network', detail: t('error.network'), hint: '' });
      }
      if (res.status !== 401) return res;
      if (state.key && state.key !== sent) continue;  // another request already got a new key
      await askKey(Boolean(sent));
    }
  }

  async function apiJson(path, options) {
    const res = await api(path, options);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }

  function describe(err) {
    if (err instanceof ApiError) {
      const b = err.body;
      return [b.detail || err.message, b.hint].filter(Boolean).join(' ');
    }
    return String(err && err.message ? err.message : err);
  }

  // -- API key: asked once, kept in sessionStorage --------------------------------------
  let keyPrompt = null;
  function forgetKey() { state.key = ''; sessionStorage.removeItem(KEY_STORE); }
  function askKey(wrong) {
    if (keyPrompt) return keyPrompt;  // several requests failing at once: one dialog
    forgetKey();
    const dialog = $('key-dialog');
    const input = $('key-input');
    const error = $('key-error');
    error.hidden = !wrong;
    error.textContent = wrong ? t('key.wrong') : '';
    input.value = '';
    keyPrompt = new Promise((resolve) => {
      const onSubmit = (ev) => {
        const value = input.value.trim();
        if (!value) { ev.preventDefault(); return; }
        state.key = value;
        sessionStorage.setItem(KEY_STORE, value);
        $('key-form').removeEventListener('submit', onSubmit);
        dialog.removeEventListener('cancel', onCancel);
        keyPrompt = null;
        resolve();
      };
      const onCancel = (ev) => ev.preventDefault();  // without a key nothing works
      $('key-form').addEventListener('submit', onSubmit);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  // -- the form, generated from the schema ------------------------------------------------
  function fieldLabel(f) {
    const key = `opt.${f.name}.label`;
    return has(key) ? t(key) : f.name.replace(/_/g, ' ');
  }
  function fieldHelp(f) {
    const key = `opt.${f.name}.help`;
    return state.lang !== 'en' && key in state.strings[state.lang] ? t(key) : f.help;
  }
  function choiceLabel(f, value) {
    const key = `choice.${f.name}.${value}`;
    return has(key) ? t(key) : value;
  }
  function fmtNumber(v) {
    if (v === null || v === undefined) return '';
    if (Math.abs(v) >= 1e6) return String(v);
    return String(Math.round(v * 1000) / 1000);
  }
  function rangeText(f) {
    const unit = f.unit ? ' ' + f.unit : '';
    if (f.choices) return f.choices.map((c) => choiceLabel(f, c)).join(', ');
    if (f.min !== null && f.max !== null) return `${fmtNumber(f.min)}–${fmtNumber(f.max)}${unit}`;
    if (f.min !== null) return `≥ ${fmtNumber(f.min)}${unit}`;
    if (f.max !== null) return `≤ ${fmtNumber(f.max)}${unit}`;
    return '';
  }
  function emptyText(f) {
    const key = `opt.${f.name}.none`;
    return has(key) ? t(key) : t('field.auto');
  }
  function defaultText(f) {
    if (f.type === 'bool') return f.default ? t('field.on') : t('field.off');
    if (f.default === null) return emptyText(f);
    if (f.choices) return choiceLabel(f, f.default);
    return fmtNumber(f.default) + (f.unit ? ' ' + f.unit : '');
  }

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = v;
      else if (k === 'class') node.className = v;
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) node.append(c);
    return node;
  }

  function buildForm() {
    // Keep the values across a rebuild (a language switch rebuilds the labels).
    const values = state.controls.size ? currentValues() : null;
    const box = $('advanced-fields');
    box.replaceChildren();
    state.controls.clear();
    for (const f of state.schema.fields) {
      if (f.name === 'framing') continue;  // chosen beside the portrait preview
      box.append(buildField(f));
    }
    buildFraming();
    buildPresets();
    setValues(values || defaults());
    if (state.durationAuto !== null && !state.durationEdited) showAutoDuration();
    refreshPresetState();
  }

  function buildField(f) {
    const id = `opt-${f.name}`;
    const help = el('p', { class: 'help', id: `${id}-help` });
    const range = rangeText(f);
    help.textContent = [fieldHelp(f), range ? t(f.choices ? 'field.choices' : 'field.range', { range }) : '',
      t('field.default', { value: defaultText(f) })].filter(Boolean).join(' ');
    const error = el('p', { class: 'field-error', id: `${id}-err`, hidden: true });
    const described = `${id}-help ${id}-err`;
    const wrap = el('div', { class: 'field', 'data-field': f.name });
    let control;
    if (f.type === 'bool') {
      const input = el('input', { type: 'checkbox', id, name: f.name, 'aria-describedby': described });
      const label = el('label', { class: 'check', for: id }, [input, fieldLabel(f), ' ', el('code', { text: f.name })]);
      wrap.append(label, help, error);
      control = { el: input, get: () => input.checked, set: (v) => { input.checked = Boolean(v); } };
    } else if (f.choices) {
      const select = el('select', { id, name: f.name, 'aria-describedby': described });
      for (const c of f.choices) select.append(el('option', { value: c, text: choiceLabel(f, c) }));
      wrap.append(el('label', { for: id }, [fieldLabel(f), ' ', el('code', { text: f.name })]), select, help, error);
      control = { el: select, get: () => select.value, set: (v) => { select.value = v; } };
    } else {
      const numeric = f.type === 'int' || f.type === 'float';
      const input = el('input', {
        id, name: f.name, 'aria-describedby': described,
        type: numeric ? 'number' : 'text',
        inputmode: numeric ? (f.type === 'int' ? 'numeric' : 'decimal') : null,
        min: f.min, max: f.max, step: f.type === 'int' ? 1 : (numeric ? 'any' : null),
        placeholder: f.default === null ? emptyText(f) : null,
        maxlength: f.type === 'str' ? 64 : null,
      });
      wrap.append(el('label', { for: id }, [fieldLabel(f), ' ', el('code', { text: f.name })]), input, help, error);
      control = {
        el: input,
        get: () => input.value.trim(),
        set: (v) => { input.value = v === null || v === undefined ? '' : (numeric ? fmtNumber(v) : String(v)); },
      };
      if (f.name === 'duration') {
        input.addEventListener('input', () => { state.durationEdited = true; });
      }
    }
    control.el.addEventListener('input', () => { validateField(f); refreshPresetState(); updateGenerate(); onOptionChanged(f.name); });
    control.el.addEventListener('change', () => { validateField(f); refreshPresetState(); updateGenerate(); });
    state.controls.set(f.name, control);
    return wrap;
  }

  function buildFraming() {
    const f = state.fields.get('framing');
    const box = $('framing-choices');
    box.replaceChildren();
    if (!f) return;
    for (const c of f.choices) {
      const input = el('input', { type: 'radio', name: 'framing', value: c, id: `framing-${c}` });
      input.checked = c === state.framing;
      input.addEventListener('change', () => { state.framing = c; drawOverlay(); refreshPresetState(); });
      box.append(el('label', { for: `framing-${c}` }, [input, choiceLabel(f, c)]));
    }
    $('framing-help').textContent = fieldHelp(f);
  }

  function buildPresets() {
    const box = $('preset-buttons');
    box.replaceChildren();
    for (const [name, values] of Object.entries(state.schema.presets)) {
      const desc = Object.entries(values).map(([k, v]) => `${k} ${v}`).join(', ');
      const b = el('button', { type: 'button', 'data-preset': name, 'aria-pressed': 'false', title: desc },
        [has(`preset.${name}`) ? t(`preset.${name}`) : name]);
      b.addEventListener('click', () => applyPreset(name));
      box.append(b);
    }
  }

  function defaults() {
    const out = {};
    for (const f of state.schema.fields) out[f.name] = f.default;
    return out;
  }

  function setValues(values) {
    for (const [name, v] of Object.entries(values)) {
      if (name === 'framing') { state.framing = v || 'crop'; continue; }
      const c = state.controls.get(name);
      if (c) c.set(v);
    }
    for (const r of document.querySelectorAll('input[name="framing"]')) r.checked = r.value === state.framing;
    for (const f of state.schema.fields) validateField(f);
    if (state.portrait && state.portrait.analysis) drawOverlay();
  }

  /** Typed values of every field; raw text when a field does not parse (validation says so). */
  function currentValues() {
    const out = { framing: state.framing };
    for (const [name, c] of state.controls) {
      const f = state.fields.get(name);
      const raw = c.get();
      if (f.type === 'bool') out[name] = raw;
      else if (f.type === 'int' || f.type === 'float') out[name] = raw === '' ? null : Number(raw);
      else out[name] = raw === '' ? null : raw;
    }
    return out;
  }

  function validateField(f) {
    const c = state.controls.get(f.name);
    if (!c) return true;
    const err = $(`opt-${f.name}-err`);
    let message = '';
    if (f.type === 'int' || f.type === 'float') {
      const raw = c.get();
      if (raw === '') {
        if (!f.optional) message = t('field.number');
      } else {
        const v = Number(raw);
        if (!Number.isFinite(v)) message = t('field.number');
        else if (f.type === 'int' && !Number.isInteger(v)) message = t('field.whole');
        else if ((f.min !== null && v < f.min) || (f.max !== null && v > f.max)) message = t('field.invalid', { range: rangeText(f) });
      }
    }
    err.textContent = message;
    err.hidden = !message;
    c.el.setAttribute('aria-invalid', message ? 'true' : 'false');
    return !message;
  }

  function formValid() {
    let ok = true;
    for (const f of state.schema.fields) ok = validateField(f) && ok;
    return ok;
  }

  function applyPreset(name) {
    setValues(state.schema.presets[name]);
    refreshPresetState();
    updateGenerate();
    onOptionChanged('min_resolution');
  }

  function refreshPresetState() {
    if (!state.schema) return;
    const values = currentValues();
    let active = null;
    for (const [name, preset] of Object.entries(state.schema.presets)) {
      const match = Object.entries(preset).every(([k, v]) => values[k] === v);
      const button = document.querySelector(`[data-preset="${name}"]`);
      if (button) button.setAttribute('aria-pressed', match ? 'true' : 'false');
      if (match && !active) active = name;
    }
    const d = defaults();
    const isDefault = Object.keys(d).every((k) => k === 'duration' || values[k] === d[k]);
    $('preset-note').textContent = active ? '' : (isDefault ? t('preset.default') : t('preset.custom'));
  }

  // Changing the margin or the size re-plans the framing with the engine's own code.
  let reanalyzeTimer = null;
  function onOptionChanged(name) {
    if (name !== 'expand_ratio' && name !== 'min_resolution') return;
    if (!state.portrait || !state.portrait.analysis) return;
    clearTimeout(reanalyzeTimer);
    reanalyzeTimer = setTimeout(() => analyzePortrait(state.portrait.file, true), 350);
  }

  // -- portrait -------------------------------------------------------------------------
  function tooBig(file) {
    const limit = state.schema ? state.schema.limits.max_input_bytes : Infinity;
    if (file.size <= limit) return null;
    return t('error.tooBig', { mb: (file.size / 1e6).toFixed(1), limit: Math.round(limit / 1e6) });
  }

  function setPortraitStatus(kind, text) {
    const p = $('portrait-status');
    p.className = 'status' + (kind ? ' ' + kind : '');
    p.textContent = text;
  }

  function renderPortraitStatus() {
    const p = state.portrait;
    if (!p) { setPortraitStatus('', ''); return; }
    if (state.portraitBusy) { setPortraitStatus('', t('portrait.checking')); return; }
    if (p.error) { setPortraitStatus('bad', p.error); return; }
    if (p.analysis) {
      const fr = p.analysis.framings[state.framing];
      const warn = p.analysis.warnings.length ? ' ' + p.analysis.warnings.join('; ') : '';
      setPortraitStatus(warn ? 'warn' : 'ok', t('portrait.ok', { w: fr.out_width, h: fr.out_height }) + warn);
    }
  }

  async function choosePortrait(file) {
    if (!file) return;
    if (state.portrait && state.portrait.localUrl) URL.revokeObjectURL(state.portrait.localUrl);
    const localUrl = URL.createObjectURL(file);
    state.portrait = { file, analysis: null, error: null, localUrl };
    $('portrait-card').classList.add('has-file');
    $('portrait-preview').hidden = false;
    $('portrait-img').src = localUrl;  // at once; replaced by the engine's upright copy
    $('portrait-overlay').replaceChildren();
    const big = tooBig(file);
    if (big) { state.portrait.error = big; renderPortraitStatus(); updateGenerate(); return; }
    await analyzePortrait(file, false);
  }

  async function analyzePortrait(file, quiet) {
    const seq = ++state.portraitSeq;
    state.portraitBusy = !quiet;
    $('portrait-stage').classList.toggle('busy', !quiet);
    renderPortraitStatus();
    updateGenerate();
    const form = new FormData();
    form.append('portrait', file, 'portrait');
    const values = currentValues();
    for (const name of ['expand_ratio', 'min_resolution']) {
      const f = state.fields.get(name);
      if (f && validateField(f) && values[name] !== null) form.append(name, String(values[name]));
    }
    let analysis = null;
    let error = null;
    try {
      analysis = await apiJson('/v1/analyze', { method: 'POST', body: form });
    } catch (err) {
      error = err instanceof ApiError && err.body.error === 'no_face_found'
        ? `${t('portrait.noface')} ${describe(err)}` : describe(err);
    }
    if (seq !== state.portraitSeq || !state.portrait || state.portrait.file !== file) return;  // superseded
    state.portraitBusy = false;
    $('portrait-stage').classList.remove('busy');
    state.portrait.analysis = analysis;
    state.portrait.error = error;
    if (analysis) {
      $('portrait-img').src = analysis.preview.src;
      $('framing-group').hidden = false;
    }
    drawOverlay();
    renderPortraitStatus();
    updateGenerate();
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function drawOverlay() {
    const overlay = $('portrait-overlay');
    overlay.replaceChildren();
    const a = state.portrait && state.portrait.analysis;
    $('portrait-preview').classList.toggle('analyzed', Boolean(a));
    if (!a) return;
    const W = a.width;
    const H = a.height;
    overlay.setAttribute('viewBox', `0 0 ${W} ${H}`);
    overlay.setAttribute('preserveAspectRatio', 'none');
    const fr = a.framings[state.framing];
    // Dim what the video will not show, outline what it will.
    overlay.append(svg('path', {
      class: 'mask',
      d: `M0 0H${W}V${H}H0Z M${fr.x} ${fr.y}v${fr.height}h${fr.width}v${-fr.height}Z`,
    }));
    overlay.append(svg('rect', { class: 'frame', x: fr.x, y: fr.y, width: fr.width, height: fr.height, 'vector-effect': 'non-scaling-stroke' }));
    const [x0, y0, x1, y1] = a.face.box;
    overlay.append(svg('rect', { class: 'facebox', x: x0, y: y0, width: x1 - x0, height: y1 - y0, 'vector-effect': 'non-scaling-stroke', 'data-testid': 'facebox' }));
    renderPortraitStatus();
  }

  // -- audio ----------------------------------------------------------------------------
  function setAudioStatus(kind, text) {
    const p = $('audio-status');
    p.className = 'status' + (kind ? ' ' + kind : '');
    p.textContent = text;
  }

  function renderAudioStatus() {
    const a = state.audio;
    if (state.recorder) { setAudioStatus('', t('audio.recording', { s: state.recorder.elapsed.toFixed(0) })); return; }
    if (!a) {
      const canRecord = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
      setAudioStatus('', canRecord ? '' : t('audio.nomic'));
      return;
    }
    if (a.busy) { setAudioStatus('', t('audio.reading')); return; }
    if (a.error) { setAudioStatus('bad', a.error); return; }
    setAudioStatus('ok', t('audio.ok', { s: a.duration.toFixed(2) }));
  }

  async function chooseAudio(blob, name) {
    if (!blob) return;
    const seq = ++state.audioSeq;
    if (state.audio && state.audio.url) URL.revokeObjectURL(state.audio.url);
    const url = URL.createObjectURL(blob);
    state.audio = { blob, name: name || 'audio', url, duration: null, busy: true, error: null };
    $('audio-card').classList.add('has-file');
    $('audio-player').src = url;
    renderAudioStatus();
    updateGenerate();
    const big = tooBig(blob);
    let result = null;
    let error = big;
    if (!big) {
      try {
        result = await decodeInBrowser(blob);
      } catch (e) {
        // Not a format this browser decodes: let the engine's decoder read it.
        try {
          const form = new FormData();
          form.append('audio', blob, 'audio');
          const r = await apiJson('/v1/analyze', { method: 'POST', body: form });
          result = { duration: r.duration_s, peaks: r.peaks };
        } catch (err) { error = describe(err); }
      }
    }
    if (seq !== state.audioSeq) return;
    const limit = state.schema ? state.schema.limits.max_audio_seconds : Infinity;
    if (result && result.duration > limit) {
      error = t('error.tooLong', { s: result.duration.toFixed(0), limit: Math.round(limit) });
    }
    state.audio.busy = false;
    state.audio.error = error;
    if (result && !error) {
      state.audio.duration = result.duration;
      state.audio.peaks = result.peaks;
      $('audio-info').hidden = false;
      $('audio-duration').textContent = `${result.duration.toFixed(2)} s`;
      drawWaveform(result.peaks);
      state.durationAuto = Math.round(result.duration * 100) / 100;
      state.durationEdited = false;
      showAutoDuration();
    } else {
      $('audio-info').hidden = true;
    }
    renderAudioStatus();
    updateGenerate();
  }

  function showAutoDuration() {
    const c = state.controls.get('duration');
    if (!c) return;
    c.set(state.durationAuto);
    const help = $('opt-duration-help');
    if (help && !help.dataset.auto) {
      help.dataset.auto = '1';
      help.append(' ' + t('field.durationAuto'));
    }
  }

  async function decodeInBrowser(blob) {
    const bytes = await blob.arrayBuffer();
    const Ctx = window.OfflineAudioContext || window.webkitOfflineAudioContext;
    const ctx = new Ctx(1, 1, 44100);
    const buffer = await ctx.decodeAudioData(bytes);
    const data = buffer.getChannelData(0);
    const bars = 240;
    const peaks = [];
    const step = data.length / bars;
    for (let i = 0; i < bars; i++) {
      let m = 0;
      const end = Math.min(data.length, Math.floor((i + 1) * step));
      for (let j = Math.floor(i * step); j < end; j++) { const v = Math.abs(data[j]); if (v > m) m = v; }
      peaks.push(Math.min(1, m));
    }
    return { duration: buffer.duration, peaks };
  }

  /** A recording as 16-bit mono WAV. Browsers record in different codecs (WebM/Opus,
   *  Ogg, MP4/AAC) with incomplete headers; a WAV is lossless, small for speech and
   *  read the same way by every decoder. */
  async function toWav(blob) {
    const Ctx = window.OfflineAudioContext || window.webkitOfflineAudioContext;
    const buffer = await new Ctx(1, 1, 48000).decodeAudioData(await blob.arrayBuffer());
    const n = buffer.length;
    const mono = new Float32Array(n);
    for (let c = 0; c < buffer.numberOfChannels; c++) {
      const data = buffer.getChannelData(c);
      for (let i = 0; i < n; i++) mono[i] += data[i] / buffer.numberOfChannels;
    }
    const out = new DataView(new ArrayBuffer(44 + 2 * n));
    const text = (at, s) => { for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i)); };
    text(0, 'RIFF'); out.setUint32(4, 36 + 2 * n, true); text(8, 'WAVE');
    text(12, 'fmt '); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
    out.setUint32(24, buffer.sampleRate, true); out.setUint32(28, 2 * buffer.sampleRate, true);
    out.setUint16(32, 2, true); out.setUint16(34, 16, true);
    text(36, 'data'); out.setUint32(40, 2 * n, true);
    for (let i = 0; i < n; i++) {
      const v = Math.max(-1, Math.min(1, mono[i]));
      out.setInt16(44 + 2 * i, Math.round(v * 32767), true);
    }
    return new Blob([out.buffer], { type: 'audio/wav' });
  }

  function drawWaveform(peaks) {
    const canvas = $('waveform');
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = w;
    canvas.height = h;
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, w, h);
    if (!peaks || !peaks.length) return;
    const top = Math.max(...peaks) || 1;
    const bar = w / peaks.length;
    g.fillStyle = '#7cc4ff';
    for (let i = 0; i < peaks.length; i++) {
      const v = Math.max(peaks[i] / top, 0.02) * (h * 0.9);
      g.fillRect(i * bar, (h - v) / 2, Math.max(1, bar * 0.7), v);
    }
  }

  // Recording from the microphone (needs a secure context: https or localhost).
  function renderRecordButton() {
    const b = $('record');
    const can = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
    b.disabled = !can;
    b.setAttribute('aria-pressed', state.recorder ? 'true' : 'false');
    $('record-text').textContent = state.recorder ? t('audio.stop') : t('audio.record');
  }

  async function toggleRecording() {
    if (state.recorder) { state.recorder.rec.stop(); return; }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      setAudioStatus('bad', t('audio.micdenied', { detail: err.message || err.name }));
      return;
    }
    const rec = new MediaRecorder(stream);
    const chunks = [];
    const started = performance.now();
    const r = { rec, elapsed: 0, timer: null };
    r.timer = setInterval(() => { r.elapsed = (performance.now() - started) / 1000; renderAudioStatus(); }, 250);
    rec.addEventListener('dataavailable', (ev) => { if (ev.data.size) chunks.push(ev.data); });
    rec.addEventListener('stop', async () => {
      clearInterval(r.timer);
      for (const track of stream.getTracks()) track.stop();
      state.recorder = null;
      renderRecordButton();
      const recorded = new Blob(chunks, { type: rec.mimeType || 'audio/webm' });
      let blob = recorded;
      try { blob = await toWav(recorded); } catch (e) { /* send what the browser made */ }
      chooseAudio(blob, t('audio.recorded'));
    });
    state.recorder = r;
    rec.start(250);
    renderRecordButton();
    renderAudioStatus();
  }

  // -- generate, follow, cancel ---------------------------------------------------------
  function updateGenerate() {
    const button = $('generate');
    const hint = $('generate-hint');
    let why = '';
    if (!state.portrait || !state.portrait.analysis || state.portraitBusy) why = t('run.needPortrait');
    else if (!state.audio || state.audio.busy || state.audio.error || state.audio.duration === null) why = t('run.needAudio');
    else if (state.schema && !formValidQuiet()) why = t('run.fixFields');
    const running = Boolean(state.job && !state.job.final);
    button.disabled = Boolean(why) || running || !state.schema;
    hint.textContent = running ? '' : (why || t('run.ready'));
  }

  function formValidQuiet() {
    const values = currentValues();
    for (const f of state.schema.fields) {
      const v = values[f.name];
      if (f.type !== 'int' && f.type !== 'float') continue;
      if (v === null) { if (!f.optional) return false; continue; }
      if (!Number.isFinite(v) || (f.type === 'int' && !Number.isInteger(v))) return false;
      if ((f.min !== null && v < f.min) || (f.max !== null && v > f.max)) return false;
    }
    return true;
  }

  /** The options the job is sent with: every field, except the duration while it is
   *  still the recording's own length (the engine reads that exactly from the file). */
  function jobOptions() {
    const values = currentValues();
    const out = {};
    for (const f of state.schema.fields) {
      const v = values[f.name];
      if (v === null || v === undefined) continue;
      if (f.name === 'duration' && !state.durationEdited) continue;
      out[f.name] = v;
    }
    return out;
  }

  async function generate() {
    if (!formValid()) { updateGenerate(); return; }
    const form = new FormData();
    form.append('portrait', state.portrait.file, 'portrait');
    form.append('audio', state.audio.blob, 'audio');
    form.append('options', JSON.stringify(jobOptions()));
    showJobError('');
    $('result').hidden = true;
    $('progress-box').hidden = false;
    setProgress(0, t('run.uploading'));
    state.job = { id: null, final: false, abort: new AbortController() };
    updateGenerate();
    let job;
    try {
      job = await apiJson('/v1/jobs', { method: 'POST', body: form });
    } catch (err) {
      state.job = null;
      $('progress-box').hidden = true;
      showJobError(describe(err));
      updateGenerate();
      return;
    }
    state.job.id = job.id;
    rememberJob(job);
    followJob(job);
  }

  function setProgress(fraction, text) {
    $('progress').value = Math.max(0, Math.min(1, fraction || 0));
    $('progress-text').textContent = text;
  }

  function fmtDuration(s) {
    if (s < 90) return t('time.s', { n: Math.max(1, Math.round(s)) });
    return t('time.min', { n: Math.round(s / 60) });
  }

  function progressText(p) {
    if (p.status === 'queued') {
      return p.queue_position ? t('run.queued', { n: p.queue_position }) : t('run.queuedNext');
    }
    const stage = p.stage || 'running';
    let text = has(`stage.${stage}`) ? t(`stage.${stage}`, { done: p.frames_done, total: p.frames_total }) : stage;
    if (p.eta_s !== null && p.eta_s !== undefined && p.eta_s > 0) text += ' · ' + t('run.eta', { t: fmtDuration(p.eta_s) });
    return text;
  }

  async function followJob(job) {
    const current = state.job;
    $('progress-box').hidden = false;
    $('cancel').disabled = false;
    $('cancel').textContent = t('run.cancel');
    setProgress(job.progress, progressText(job));
    // The SSE stream through fetch (EventSource cannot send an API key). If it drops,
    // read the job once and open it again.
    for (let attempt = 0; attempt < 1000 && state.job === current && !current.final; attempt++) {
      try {
        const res = await api(`/v1/jobs/${job.id}/events`, { signal: current.abort.signal });
        if (!res.ok) {
          let body = null;
          try { body = await res.json(); } catch (e) { body = null; }
          throw new ApiError(res.status, body);
        }
        const end = await readEvents(res, (ev, data) => {
          if (ev === 'progress') {
            setProgress(data.progress, progressText(data));
            noteStatus(data.id, data.status);
          }
        });
        if (end) { finishJob(end); return; }
      } catch (err) {
        if (err.name === 'AbortError') return;
        if (err instanceof ApiError && err.status === 404) { finishJob({ id: job.id, status: 'gone' }); return; }
      }
      await new Promise((r) => setTimeout(r, 1000));
      try {
        const doc = await apiJson(`/v1/jobs/${job.id}`);
        if (FINAL.has(doc.status)) { finishJob(doc); return; }
      } catch (err) { /* try the stream again */ }
    }
  }

  /** Reads `event:`/`data:` blocks until the `end` event; returns its job, or null. */
  async function readEvents(res, onEvent) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let ev = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) ev = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue;
        const doc = JSON.parse(data.join('\n'));
        if (ev === 'end') { reader.cancel().catch(() => {}); return doc; }
        onEvent(ev, doc);
      }
    }
  }

  async function cancelJob() {
    const job = state.job;
    if (!job || !job.id || job.final) return;
    $('cancel').disabled = true;
    setProgress($('progress').value, t('run.cancelling'));
    try {
      const res = await api(`/v1/jobs/${job.id}`, { method: 'DELETE' });
      if (res.status === 200) {
        const doc = await res.json();
        if (FINAL.has(doc.status)) { job.abort.abort(); finishJob(doc); }
      }
      // 202: still stopping; the event stream brings the end.
    } catch (err) {
      $('cancel').disabled = false;
      showJobError(describe(err));
    }
  }

  function finishJob(doc) {
    const job = state.job;
    if (job && job.id === doc.id) job.final = true;
    $('progress-box').hidden = true;
    updateHistory(doc);
    if (doc.status === 'succeeded') {
      setProgress(1, t('run.done'));
      showVideo(doc);
    } else if (doc.status === 'cancelled') {
      showJobError(t('run.cancelled'), true);
    } else if (doc.status === 'failed') {
      const e = doc.error || {};
      showJobError(t('run.failed', { detail: [e.detail, e.hint].filter(Boolean).join(' ') }));
    } else {
      showJobError(t('status.gone'));
    }
    updateGenerate();
  }

  function showJobError(text, calm) {
    const p = $('job-error');
    p.textContent = text;
    p.hidden = !text;
    p.className = calm ? 'status' : 'error';
  }

  async function showVideo(doc) {
    const video = $('video');
    const link = $('download');
    if (state.videoUrl) { URL.revokeObjectURL(state.videoUrl); state.videoUrl = null; }
    let src = doc.links.video;
    if (state.key) {
      // A <video> cannot send the key: fetch the file and play it from memory.
      try {
        const res = await api(doc.links.video);
        if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
        state.videoUrl = URL.createObjectURL(await res.blob());
        src = state.videoUrl;
      } catch (err) { showJobError(describe(err)); return; }
    }
    video.src = src;
    link.href = src;
    link.setAttribute('download', `facetalk-${doc.id}.mp4`);
    const r = doc.result || {};
    $('result-facts').textContent = t('run.facts', {
      d: (r.duration || 0).toFixed(2), w: r.width, h: r.height, t: tookSeconds(doc).toFixed(1),
    });
    $('result-warnings').textContent = (doc.warnings || []).join(' ');
    $('result').hidden = false;
    $('result').scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  }

  function tookSeconds(doc) {
    if (doc.started_at && doc.finished_at) return (Date.parse(doc.finished_at) - Date.parse(doc.started_at)) / 1000;
    return doc.result && doc.result.wall_s ? doc.result.wall_s : 0;
  }

  // -- history (ids and facts in localStorage; media stay on the server) -------------------
  function loadHistory() {
    try {
      const items = JSON.parse(localStorage.getItem(HISTORY_STORE) || '[]');
      return Array.isArray(items) ? items : [];
    } catch (e) { return []; }
  }
  function saveHistory(items) { localStorage.setItem(HISTORY_STORE, JSON.stringify(items.slice(0, HISTORY_MAX))); }

  function rememberJob(doc) {
    const items = loadHistory().filter((h) => h.id !== doc.id);
    items.unshift(historyEntry(doc));
    saveHistory(items);
    renderHistory();
  }
  function historyEntry(doc) {
    const r = doc.result || {};
    return {
      id: doc.id, status: doc.status, created_at: doc.created_at,
      duration: r.duration || null, took: FINAL.has(doc.status) ? tookSeconds(doc) : null,
      size: r.width ? `${r.width}×${r.height}` : null,
    };
  }
  function updateHistory(doc) {
    const items = loadHistory();
    const i = items.findIndex((h) => h.id === doc.id);
    if (i < 0) return;
    items[i] = doc.status === 'gone' ? { ...items[i], status: 'gone' } : historyEntry(doc);
    saveHistory(items);
    renderHistory();
  }

  /** Keep a history entry's status current while its job is followed (queued -> running). */
  function noteStatus(id, status) {
    const items = loadHistory();
    const item = items.find((h) => h.id === id);
    if (!item || item.status === status) return;
    item.status = status;
    saveHistory(items);
    renderHistory();
  }

  function renderHistory() {
    const list = $('history');
    list.replaceChildren();
    const items = loadHistory();
    $('history-empty').hidden = items.length > 0;
    $('history-clear').hidden = items.length === 0;
    const fmt = new Intl.DateTimeFormat(state.lang === 'zh' ? 'zh-CN' : 'en', { dateStyle: 'medium', timeStyle: 'short' });
    for (const h of items) {
      const when = h.created_at ? fmt.format(new Date(h.created_at)) : h.id.slice(0, 8);
      const meta = [];
      if (h.duration) meta.push(`${h.duration.toFixed(1)} s`);
      if (h.size) meta.push(h.size);
      if (h.took) meta.push(t('history.took', { t: h.took.toFixed(1) }));
      const actions = el('span', { class: 'actions' });
      if (h.status === 'succeeded') {
        const show = el('button', { type: 'button', class: 'secondary', 'aria-label': t('history.showLabel', { time: when }) }, [t('history.show')]);
        show.addEventListener('click', () => openHistory(h.id));
        actions.append(show);
      }
      if (h.status !== 'gone') {
        const del = el('button', { type: 'button', class: 'secondary', 'aria-label': t('history.deleteLabel', { time: when }) }, [t('history.delete')]);
        del.addEventListener('click', () => deleteHistory(h.id));
        actions.append(del);
      }
      list.append(el('li', { 'data-job': h.id }, [
        el('span', { class: `badge ${h.status}`, text: t(`status.${h.status}`) }),
        el('span', { class: 'when', text: when }),
        el('span', { class: 'meta', text: meta.join(' · ') }),
        actions,
      ]));
    }
  }

  async function openHistory(id) {
    try {
      const doc = await apiJson(`/v1/jobs/${id}`);
      updateHistory(doc);
      if (doc.status === 'succeeded' && !doc.output_deleted) { showJobError(''); showVideo(doc); }
      else showJobError(t('history.gone'), true);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) { updateHistory({ id, status: 'gone' }); showJobError(t('history.gone'), true); }
      else showJobError(describe(err));
    }
  }

  async function deleteHistory(id) {
    try {
      const res = await api(`/v1/jobs/${id}`, { method: 'DELETE' });
      if (!res.ok && res.status !== 404) {
        throw new ApiError(res.status, await res.json().catch(() => null));
      }
    } catch (err) { showJobError(describe(err)); return; }
    if (state.job && state.job.id === id) { $('result').hidden = true; }
    saveHistory(loadHistory().filter((h) => h.id !== id));
    renderHistory();
  }

  /** On load: refresh entries that were still running, and follow the newest such job. */
  async function refreshHistory() {
    let follow = null;
    for (const h of loadHistory()) {
      if (FINAL.has(h.status) || h.status === 'gone') continue;
      try {
        const doc = await apiJson(`/v1/jobs/${h.id}`);
        updateHistory(doc);
        if (!FINAL.has(doc.status) && !follow) follow = doc;
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) updateHistory({ id: h.id, status: 'gone' });
      }
    }
    if (follow && !state.job) {
      state.job = { id: follow.id, final: false, abort: new AbortController() };
      updateGenerate();
      followJob(follow);
    }
  }

  // -- wiring ---------------------------------------------------------------------------
  function wireDrop(zone, input, onFile) {
    input.addEventListener('change', () => { if (input.files[0]) onFile(input.files[0]); input.value = ''; });
    for (const ev of ['dragenter', 'dragover']) {
      zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add('dragging'); });
    }
    for (const ev of ['dragleave', 'drop']) {
      zone.addEventListener(ev, () => zone.classList.remove('dragging'));
    }
    zone.addEventListener('drop', (e) => {
      e.preventDefault();
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) onFile(file);
    });
  }

  async function start() {
    try {
      const res = await fetch('/web/i18n.json');
      state.strings = await res.json();
    } catch (e) { /* the English text in the HTML stays */ }
    const saved = localStorage.getItem(LANG_STORE);
    state.lang = saved || ((navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en');
    $('lang').value = state.lang;
    $('lang').addEventListener('change', () => {
      state.lang = $('lang').value;
      localStorage.setItem(LANG_STORE, state.lang);
      applyStrings();
    });
    wireDrop($('portrait-drop'), $('portrait-input'), choosePortrait);
    wireDrop($('audio-drop'), $('audio-input'), (f) => chooseAudio(f, f.name));
    $('record').addEventListener('click', toggleRecording);
    $('generate').addEventListener('click', generate);
    $('cancel').addEventListener('click', cancelJob);
    $('reset').addEventListener('click', () => {
      setValues(defaults());
      if (state.durationAuto !== null) { state.durationEdited = false; showAutoDuration(); }
      refreshPresetState(); updateGenerate(); onOptionChanged('min_resolution');
    });
    $('history-clear').addEventListener('click', () => { saveHistory([]); renderHistory(); });
    window.addEventListener('resize', () => { if (state.audio && state.audio.peaks) drawWaveform(state.audio.peaks); });
    applyStrings();
    try {
      state.schema = await apiJson('/v1/options');
    } catch (err) {
      const banner = $('banner');
      banner.textContent = describe(err);
      banner.hidden = false;
      return;
    }
    for (const f of state.schema.fields) state.fields.set(f.name, f);
    state.framing = state.fields.get('framing') ? state.fields.get('framing').default : 'crop';
    applyStrings();
    document.body.dataset.ready = 'true';
    refreshHistory();
  }

  start();
})();
