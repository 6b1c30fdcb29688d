// English/中文 strings: t(), and applying them to the page.
import { $, state } from './state.js';
import { buildForm, el } from './settings.js';
import { renderPortraitStatus } from './portrait.js';
import { renderAudioStatus, renderRecordButton } from './voice.js';
import { updateGenerate } from './jobs.js';
import { renderHistory } from './history.js';

// -- strings -----------------------------------------------------------------------
export function t(key, vars) {
  let s = state.strings[state.lang][key];
  if (s === undefined) s = state.strings.en[key];
  if (s === undefined) return key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}
export function has(key) { return key in state.strings[state.lang] || key in state.strings.en; }

export function applyStrings() {
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
