"use strict";
const RATE = 16000, CHUNK = 320;  // 20 ms of 16 kHz audio per message
const $ = (id) => document.getElementById(id);
const state = { ws: null, avatar: null, sendTimes: new Map(), chunkStarts: [], frameTimes: [],
                latencies: [], audioCtx: null, playStart: null, source: null, pending: [],
                dropped: 0, frameDelay: 0, fileAnchor: null };

function status(msg, isError = false) { $("status").textContent = msg; $("status").className = isError ? "error" : ""; }
function apiKey() { return sessionStorage.getItem("facetalk-key") || ""; }
function authHeaders() { const k = apiKey(); return k ? { "X-API-Key": k } : {}; }
async function askKey() {
  const k = prompt("This server needs an API key:");
  if (k) sessionStorage.setItem("facetalk-key", k.trim());
  return !!k;
}

$("portrait").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("portrait", file);
  status("Analysing the portrait…");
  for (;;) {
    const r = await fetch("/v1/avatars", { method: "POST", body: form, headers: authHeaders() });
    if (r.status === 401 && await askKey()) continue;
    const body = await r.json();
    if (!r.ok) { status(`${body.detail} ${body.hint || ""}`, true); return; }
    state.avatar = body;
    $("avatar-info").textContent = `Avatar ${body.id} (${body.width}×${body.height})`;
    break;
  }
  connect();
});

function connect() {
  if (state.ws) state.ws.close();
  // Until the new socket is ready; its timeline starts again at 0 (seq and times too).
  for (const id of ["mic", "file", "text", "say"]) $(id).disabled = true;
  seq = 0; state.sendTimes.clear(); state.chunkStarts = []; state.playStart = null; state.fileAnchor = null;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey() ? `&api_key=${encodeURIComponent(apiKey())}` : "";
  const ws = new WebSocket(`${proto}://${location.host}/v1/stream?avatar=${state.avatar.id}${key}`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  // A replaced socket's late events (its close above all, which can come after the new
  // socket enabled the controls) must not touch the page: only the current one's count.
  ws.onmessage = (ev) => { if (ws === state.ws) onMessage(ev); };
  ws.onclose = (ev) => {
    if (ws !== state.ws) return;
    if (ev.code === 4401) { askKey().then((ok) => ok && connect()); return; }
    if (ev.code !== 1000 && ev.code !== 1005) status(`Connection closed: ${ev.reason || ev.code}`, true);
    for (const id of ["mic", "file", "text", "say", "stop"]) $(id).disabled = true;
  };
  ws.onopen = () => { if (ws === state.ws) status("Connected. Speak, play a file or type a sentence."); };
}

function onMessage(ev) {
  if (typeof ev.data === "string") {
    const m = JSON.parse(ev.data);
    if (m.type === "ready") {
      state.frameDelay = (m.lookahead_ms + 60) / 1000;
      for (const id of ["mic", "file", "text", "say"]) $(id).disabled = false;
    } else if (m.type === "audio") {
      const sent = state.sendTimes.get(m.seq);
      if (state.fileAnchor && m.seq === state.fileAnchor.seq) {
        // The file's first sample landed at start_s on the server's timeline.
        state.playStart = state.fileAnchor.at - m.start_s;
        state.fileAnchor = null;
      }
      if (sent !== undefined) state.chunkStarts.push([m.start_s, m.start_s + CHUNK / RATE, sent]);
      if (state.chunkStarts.length > 400) state.chunkStarts.splice(0, 200);
    } else if (m.type === "stats") {
      state.dropped = m.dropped; $("drop").textContent = m.dropped;
    } else if (m.type === "error") {
      status(`${m.detail} ${m.hint || ""}`, true);
    }
    return;
  }
  const view = new DataView(ev.data);
  const kind = String.fromCharCode(view.getUint8(0));
  if (kind === "A") {  // speech the server spoke for us: play it on the timeline
    const start = Number(view.getBigUint64(1, true)) / 1e6;
    playPcm(new Int16Array(ev.data.slice(9)), start);
    return;
  }
  const index = view.getUint32(1, true);
  const t = Number(view.getBigUint64(5, true)) / 1e6;
  const now = performance.now();
  const chunk = state.chunkStarts.find(([a, b]) => t >= a && t < b);
  if (chunk) { state.latencies.push(now - chunk[2]); if (state.latencies.length > 50) state.latencies.shift(); }
  state.frameTimes.push(now);
  const blob = new Blob([ev.data.slice(13)], { type: "image/jpeg" });
  createImageBitmap(blob).then((img) => schedule(img, t, index));
}

function schedule(img, t, index) {
  // With local playback (file, spoken text), show each frame when its audio plays.
  if (state.playStart !== null && state.audioCtx) {
    const wait = (state.playStart + t - state.audioCtx.currentTime) * 1000;
    if (wait > 0) { setTimeout(() => draw(img), wait); return; }
  }
  draw(img);
}

function draw(img) {
  const c = $("view");
  if (c.width !== img.width) { c.width = img.width; c.height = img.height; }
  c.getContext("2d").drawImage(img, 0, 0);
}

setInterval(() => {
  const now = performance.now();
  state.frameTimes = state.frameTimes.filter((x) => now - x < 1000);
  $("fps").textContent = state.frameTimes.length;
  if (state.latencies.length) {
    const s = [...state.latencies].sort((a, b) => a - b);
    $("lat").textContent = `${Math.round(s[Math.floor(s.length / 2)])} ms`;
  }
}, 500);

let seq = 0;
function sendPcm(int16) {
  if (!state.ws || state.ws.readyState !== 1) return;
  state.sendTimes.set(seq, performance.now());
  if (state.sendTimes.size > 600) state.sendTimes.delete(seq - 600);
  seq += 1;
  state.ws.send(int16.buffer);
}

function toInt16(f32) {
  const out = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) out[i] = Math.max(-1, Math.min(1, f32[i])) * 32767;
  return out;
}

async function context() {
  if (!state.audioCtx) state.audioCtx = new AudioContext({ sampleRate: RATE });
  await state.audioCtx.resume();
  return state.audioCtx;
}

$("mic").addEventListener("click", async () => {
  try {
    const ctx = await context();
    const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    await ctx.audioWorklet.addModule("/web/live-tap.js");  // a file: the CSP allows no blob: scripts
    const node = new AudioWorkletNode(ctx, "tap");
    let buf = new Float32Array(0);
    node.port.onmessage = (e) => {
      const joined = new Float32Array(buf.length + e.data.length);
      joined.set(buf); joined.set(e.data, buf.length); buf = joined;
      while (buf.length >= CHUNK) { sendPcm(toInt16(buf.subarray(0, CHUNK))); buf = buf.slice(CHUNK); }
    };
    ctx.createMediaStreamSource(media).connect(node);
    state.source = { stop: () => { node.disconnect(); media.getTracks().forEach((x) => x.stop()); } };
    state.playStart = null; state.fileAnchor = null;
    $("stop").disabled = false;
    status("Listening… speak now.");
  } catch (err) { status(`Microphone unavailable: ${err.message}`, true); }
});

$("stop").addEventListener("click", () => {
  if (state.source) state.source.stop();
  state.source = null;
  if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "flush" }));
  $("stop").disabled = true;
  status("Stopped.");
});

$("file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  const ctx = await context();
  let audio;
  try { audio = await ctx.decodeAudioData(await file.arrayBuffer()); }
  catch (err) { status("That file is not audio this browser can decode.", true); return; }
  const pcm = audio.getChannelData(0);
  // Play it locally a little late, so each frame can be shown with its sound.
  const src = ctx.createBufferSource(); src.buffer = audio; src.connect(ctx.destination);
  const begin = performance.now();
  let sent = 0, stopped = false;
  // The server's timeline runs on with silence while nothing is sent, so where the file
  // lands is known only from the echo of its first chunk (see onMessage).
  const at = ctx.currentTime + state.frameDelay;
  state.playStart = null;
  state.fileAnchor = { seq, at };
  src.start(at);
  state.source = { stop: () => { stopped = true; src.stop(); } };
  $("stop").disabled = false;
  status(`Playing ${file.name}…`);
  const timer = setInterval(() => {
    const due = Math.min(pcm.length, Math.floor((performance.now() - begin) / 1000 * RATE) + CHUNK);
    while (!stopped && sent + CHUNK <= due) { sendPcm(toInt16(pcm.subarray(sent, sent + CHUNK))); sent += CHUNK; }
    if (stopped || sent + CHUNK > pcm.length) {
      clearInterval(timer);
      state.ws.send(JSON.stringify({ type: "flush" }));
      $("stop").disabled = true;
    }
  }, 10);
});

function playPcm(int16, start) {
  const ctx = state.audioCtx;
  if (!ctx) return;
  const buf = ctx.createBuffer(1, int16.length, RATE);
  const ch = buf.getChannelData(0);
  for (let i = 0; i < int16.length; i++) ch[i] = int16[i] / 32768;
  const src = ctx.createBufferSource(); src.buffer = buf; src.connect(ctx.destination);
  if (state.playStart === null) state.playStart = ctx.currentTime + state.frameDelay - start;
  src.start(Math.max(ctx.currentTime, state.playStart + start));
}

$("say").addEventListener("click", async () => {
  const text = $("text").value.trim();
  if (!text || !state.ws) return;
  await context();
  state.playStart = null; state.fileAnchor = null;
  state.ws.send(JSON.stringify({ type: "say", text }));
  status("Speaking…");
});
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter") $("say").click(); });
