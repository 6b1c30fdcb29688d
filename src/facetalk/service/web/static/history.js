// Recent jobs: ids and facts in localStorage (the media stay on the server).
import { $, FINAL, HISTORY_MAX, HISTORY_STORE, state } from './state.js';
import { t } from './i18n.js';
import { ApiError, api, apiJson, describe } from './api.js';
import { el } from './settings.js';
import { followJob, showJobError, showVideo, tookSeconds, updateGenerate } from './jobs.js';

// -- history (ids and facts in localStorage; media stay on the server) -------------------
export function loadHistory() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_STORE) || '[]');
    return Array.isArray(items) ? items : [];
  } catch (e) { return []; }
}
export function saveHistory(items) { localStorage.setItem(HISTORY_STORE, JSON.stringify(items.slice(0, HISTORY_MAX))); }

export function rememberJob(doc) {
  const items = loadHistory().filter((h) => h.id !== doc.id);
  items.unshift(historyEntry(doc));
  saveHistory(items);
  renderHistory();
}
export function historyEntry(doc) {
  const r = doc.result || {};
  return {
    id: doc.id, status: doc.status, created_at: doc.created_at,
    duration: r.duration || null, took: FINAL.has(doc.status) ? tookSeconds(doc) : null,
    size: r.width ? `${r.width}×${r.height}` : null,
  };
}
export function updateHistory(doc) {
  const items = loadHistory();
  const i = items.findIndex((h) => h.id === doc.id);
  if (i < 0) return;
  items[i] = doc.status === 'gone' ? { ...items[i], status: 'gone' } : historyEntry(doc);
  saveHistory(items);
  renderHistory();
}

/** Keep a history entry's status current while its job is followed (queued -> running). */
export function noteStatus(id, status) {
  const items = loadHistory();
  const item = items.find((h) => h.id === id);
  if (!item || item.status === status) return;
  item.status = status;
  saveHistory(items);
  renderHistory();
}

export function renderHistory() {
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

export async function openHistory(id) {
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

export async function deleteHistory(id) {
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
export async function refreshHistory() {
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
