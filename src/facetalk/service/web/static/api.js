// HTTP to /v1 (the API key sent when one is set), and asking for the key.
import { $, KEY_STORE, state } from './state.js';
import { t } from './i18n.js';

// -- HTTP ----------------------------------------------------------------------------
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** fetch() with the API key; a 401 asks for the key (once for all requests) and retries. */
export async function api(path, options = {}) {
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

export async function apiJson(path, options) {
  const res = await api(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export function describe(err) {
  if (err instanceof ApiError) {
    const b = err.body;
    return [b.detail || err.message, b.hint].filter(Boolean).join(' ');
  }
  return String(err && err.message ? err.message : err);
}

// -- API key: asked once, kept in sessionStorage --------------------------------------
export let keyPrompt = null;
export function forgetKey() { state.key = ''; sessionStorage.removeItem(KEY_STORE); }
export function askKey(wrong) {
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
