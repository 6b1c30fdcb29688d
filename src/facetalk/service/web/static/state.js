// The page's shared state and constants.

export const $ = (id) => document.getElementById(id);
export const KEY_STORE = 'facetalk.key';          // sessionStorage: gone when the tab closes
export const LANG_STORE = 'facetalk.lang';
export const HISTORY_STORE = 'facetalk.history';  // localStorage: ids and facts, never media
export const HISTORY_MAX = 30;
export const FINAL = new Set(['succeeded', 'failed', 'cancelled']);

export const state = {
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
