/* facetalk web page: ES modules the browser loads directly, no build step, no outside assets.
 *
 * The form's parameters come from GET /v1/options (the engine's field_info()), the
 * portrait preview from POST /v1/analyze, jobs from the /v1/jobs API and their
 * progress from its Server-Sent Events, read with fetch() so an API key can be sent.
 */
// Entry point: wires the page up and loads the schema and strings.
import { $, LANG_STORE, state } from './state.js';
import { applyStrings } from './i18n.js';
import { apiJson, describe } from './api.js';
import { defaults, onOptionChanged, refreshPresetState, setValues } from './settings.js';
import { choosePortrait } from './portrait.js';
import { chooseAudio, drawWaveform, showAutoDuration, toggleRecording } from './voice.js';
import { cancelJob, generate, updateGenerate } from './jobs.js';
import { refreshHistory, renderHistory, saveHistory } from './history.js';

// -- wiring ---------------------------------------------------------------------------
export function wireDrop(zone, input, onFile) {
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

export async function start() {
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
