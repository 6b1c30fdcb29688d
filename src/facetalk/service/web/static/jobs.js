// Generate, follow (Server-Sent Events read with fetch), cancel, show the video.
import { $, FINAL, state } from './state.js';
import { has, t } from './i18n.js';
import { ApiError, api, apiJson, describe } from './api.js';
import { currentValues, formValid } from './settings.js';
import { noteStatus, rememberJob, updateHistory } from './history.js';

// -- generate, follow, cancel ---------------------------------------------------------
export function updateGenerate() {
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

export function formValidQuiet() {
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
export function jobOptions() {
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

export async function generate() {
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

export function setProgress(fraction, text) {
  $('progress').value = Math.max(0, Math.min(1, fraction || 0));
  $('progress-text').textContent = text;
}

export function fmtDuration(s) {
  if (s < 90) return t('time.s', { n: Math.max(1, Math.round(s)) });
  return t('time.min', { n: Math.round(s / 60) });
}

export function progressText(p) {
  if (p.status === 'queued') {
    return p.queue_position ? t('run.queued', { n: p.queue_position }) : t('run.queuedNext');
  }
  const stage = p.stage || 'running';
  let text = has(`stage.${stage}`) ? t(`stage.${stage}`, { done: p.frames_done, total: p.frames_total }) : stage;
  if (p.eta_s !== null && p.eta_s !== undefined && p.eta_s > 0) text += ' · ' + t('run.eta', { t: fmtDuration(p.eta_s) });
  return text;
}

export async function followJob(job) {
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
export async function readEvents(res, onEvent) {
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

export async function cancelJob() {
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

export function finishJob(doc) {
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

export function showJobError(text, calm) {
  const p = $('job-error');
  p.textContent = text;
  p.hidden = !text;
  p.className = calm ? 'status' : 'error';
}

export async function showVideo(doc) {
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

export function tookSeconds(doc) {
  if (doc.started_at && doc.finished_at) return (Date.parse(doc.finished_at) - Date.parse(doc.started_at)) / 1000;
  return doc.result && doc.result.wall_s ? doc.result.wall_s : 0;
}
