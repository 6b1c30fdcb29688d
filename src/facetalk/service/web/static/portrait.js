// The portrait: choose, analyse (POST /v1/analyze), framing overlay.
import { $, state } from './state.js';
import { t } from './i18n.js';
import { ApiError, apiJson, describe } from './api.js';
import { currentValues, validateField } from './settings.js';
import { updateGenerate } from './jobs.js';

// -- portrait -------------------------------------------------------------------------
export function tooBig(file) {
  const limit = state.schema ? state.schema.limits.max_input_bytes : Infinity;
  if (file.size <= limit) return null;
  return t('error.tooBig', { mb: (file.size / 1e6).toFixed(1), limit: Math.round(limit / 1e6) });
}

export function setPortraitStatus(kind, text) {
  const p = $('portrait-status');
  p.className = 'status' + (kind ? ' ' + kind : '');
  p.textContent = text;
}

export function renderPortraitStatus() {
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

export async function choosePortrait(file) {
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

export async function analyzePortrait(file, quiet) {
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

export const SVG = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

export function drawOverlay() {
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
