// The render settings form, generated from GET /v1/options.
import { $, state } from './state.js';
import { has, t } from './i18n.js';
import { analyzePortrait, drawOverlay } from './portrait.js';
import { showAutoDuration } from './voice.js';
import { updateGenerate } from './jobs.js';

// -- the form, generated from the schema ------------------------------------------------
export function fieldLabel(f) {
  const key = `opt.${f.name}.label`;
  return has(key) ? t(key) : f.name.replace(/_/g, ' ');
}
export function fieldHelp(f) {
  const key = `opt.${f.name}.help`;
  return state.lang !== 'en' && key in state.strings[state.lang] ? t(key) : f.help;
}
export function choiceLabel(f, value) {
  const key = `choice.${f.name}.${value}`;
  return has(key) ? t(key) : value;
}
export function fmtNumber(v) {
  if (v === null || v === undefined) return '';
  if (Math.abs(v) >= 1e6) return String(v);
  return String(Math.round(v * 1000) / 1000);
}
export function rangeText(f) {
  const unit = f.unit ? ' ' + f.unit : '';
  if (f.choices) return f.choices.map((c) => choiceLabel(f, c)).join(', ');
  if (f.min !== null && f.max !== null) return `${fmtNumber(f.min)}–${fmtNumber(f.max)}${unit}`;
  if (f.min !== null) return `≥ ${fmtNumber(f.min)}${unit}`;
  if (f.max !== null) return `≤ ${fmtNumber(f.max)}${unit}`;
  return '';
}
export function emptyText(f) {
  const key = `opt.${f.name}.none`;
  return has(key) ? t(key) : t('field.auto');
}
export function defaultText(f) {
  if (f.type === 'bool') return f.default ? t('field.on') : t('field.off');
  if (f.default === null) return emptyText(f);
  if (f.choices) return choiceLabel(f, f.default);
  return fmtNumber(f.default) + (f.unit ? ' ' + f.unit : '');
}

export function el(tag, attrs = {}, children = []) {
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

export function buildForm() {
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

export function buildField(f) {
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

export function buildFraming() {
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

export function buildPresets() {
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

export function defaults() {
  const out = {};
  for (const f of state.schema.fields) out[f.name] = f.default;
  return out;
}

export function setValues(values) {
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
export function currentValues() {
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

export function validateField(f) {
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

export function formValid() {
  let ok = true;
  for (const f of state.schema.fields) ok = validateField(f) && ok;
  return ok;
}

export function applyPreset(name) {
  setValues(state.schema.presets[name]);
  refreshPresetState();
  updateGenerate();
  onOptionChanged('min_resolution');
}

export function refreshPresetState() {
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
export let reanalyzeTimer = null;
export function onOptionChanged(name) {
  if (name !== 'expand_ratio' && name !== 'min_resolution') return;
  if (!state.portrait || !state.portrait.analysis) return;
  clearTimeout(reanalyzeTimer);
  reanalyzeTimer = setTimeout(() => analyzePortrait(state.portrait.file, true), 350);
}
