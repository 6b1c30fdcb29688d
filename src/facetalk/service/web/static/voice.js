// The recording: choose, decode in the browser or on the server, record.
import { $, state } from './state.js';
import { t } from './i18n.js';
import { apiJson, describe } from './api.js';
import { tooBig } from './portrait.js';
import { updateGenerate } from './jobs.js';

// -- audio ----------------------------------------------------------------------------
export function setAudioStatus(kind, text) {
  const p = $('audio-status');
  p.className = 'status' + (kind ? ' ' + kind : '');
  p.textContent = text;
}

export function renderAudioStatus() {
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

export async function chooseAudio(blob, name) {
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

export function showAutoDuration() {
  const c = state.controls.get('duration');
  if (!c) return;
  c.set(state.durationAuto);
  const help = $('opt-duration-help');
  if (help && !help.dataset.auto) {
    help.dataset.auto = '1';
    help.append(' ' + t('field.durationAuto'));
  }
}

export async function decodeInBrowser(blob) {
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
export async function toWav(blob) {
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

export function drawWaveform(peaks) {
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
export function renderRecordButton() {
  const b = $('record');
  const can = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  b.disabled = !can;
  b.setAttribute('aria-pressed', state.recorder ? 'true' : 'false');
  $('record-text').textContent = state.recorder ? t('audio.stop') : t('audio.record');
}

export async function toggleRecording() {
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
