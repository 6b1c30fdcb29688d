"""Live mode: avatars analysed once, a WebSocket that turns streamed speech into frames.

Protocol of ``WS /v1/stream?avatar=ID`` (add ``&api_key=KEY`` when keys are set:
browsers cannot put headers on a WebSocket):

* server -> client, first: ``{"type": "ready", "fps", "width", "height",
  "sample_rate": 16000, "lookahead_ms", "max_lag_ms", "format": "jpeg"}``.
* client -> server: binary messages of 16 kHz mono PCM16 little-endian audio (20-100 ms
  each); text ``{"type": "say", "text": "..."}`` to have the server speak a sentence
  (espeak-ng) through the avatar; text ``{"type": "flush"}`` at the end of an utterance
  to get its last frames without waiting; text ``{"type": "stop"}`` to end.
* server -> client: binary ``b"F" + <u32 frame index> + <u64 time in microseconds> +
  JPEG`` per frame, where the time is the frame's place on the audio timeline (the audio
  received, plus silence the server added while nothing arrived); binary
  ``b"A" + <u64 start in microseconds> + PCM16`` echoes audio the server spoke (say);
  text ``{"type": "audio", "seq", "start_s"}`` tells where each client chunk landed on
  the timeline; text ``{"type": "stats", "frames", "dropped", "late", "lag_p95_ms",
  "audio_s"}`` once a second: frames sent, frames never drawn because they were more than
  ``max_lag_ms`` past due when their turn came (the stream catches up instead of falling
  behind), frames sent more than 100 ms past due, and the 95th percentile of that delay
  over the last two seconds. A frame is due when the audio that completes it arrived.
* Closes: 1000 after ``stop`` (a last ``stats`` comes first); 1003 for a message that
  breaks the protocol; 1007 for text that is not Unicode (a lone surrogate in ``say``);
  1013 when the server already runs its ``--live-sessions`` cap (try again later: one
  more would make every session late); 4401 without a valid key; 4404 for an unknown
  avatar.

Sessions share one render thread per core and take turns a few frames at a time
(``BATCH_S``), sessions that were sent audio in the last second before idle ones, so
under overload idle sessions drop frames first. A client that leaves is noticed by a
reader that never waits for drawing; its drawing stops after the frame in progress.

Why JPEG frames: each frame is independent (a dropped one costs nothing), encoding a
512 px frame takes ~3 ms on one core, decoding is native in every browser, and the
first frame needs no keyframe or buffering -- H.264 in fragmented MP4 would save
bandwidth (not scarce on a local network) at the price of encoder and player latency.
WebRTC (aiortc) would add a jitter buffer and congestion control built for the
internet; on a kiosk's LAN plain WebSocket frames keep latency lowest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import io
import itertools
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketDisconnected

from ...errors import FacetalkError, InvalidInput, LimitExceeded
from ...options import GenerationOptions
from ...stream import STREAM_RATE, Avatar, Stream
from ..errors import BadRequest, QueueFull, ServiceError, UnsupportedContentType, public_error
from ..web import HEADERS, PAGE_FILES, static_dir
from .auth import key_ok
from .uploads import options_from_form, read_capped, receive_form, upload_guard

_log = logging.getLogger("facetalk.service.live")

#: Options an avatar may set (the rest are per render and make no sense live).
AVATAR_OPTIONS = ("min_resolution", "framing", "expand_ratio", "dynamic_scale",
                  "motion_scale", "blink", "seed", "fps", "label", "label_position",
                  "watermark", "inference_steps")
#: Without audio for this long, the server adds silence so frames keep coming.
IDLE_AFTER_S = 0.15
#: How often a session with nothing to draw looks again (idle silence, stats).
IDLE_TICK_S = 0.04
#: A frame whose audio has waited this long is not drawn (counted in ``dropped``): the
#: stream catches up instead of falling further behind.
MAX_LAG_S = 0.5
#: A frame sent this long after it was due is counted ``late``.
LATE_S = 0.1
#: Audio drawn in one render turn (a session's frames are drawn a few at a time).
BATCH_S = 0.12
#: A session that received audio this recently is drawn before idle ones.
URGENT_FOR_S = 1.0
JPEG_QUALITY = 80
FRAME_HEADER = struct.Struct("<cIQ")
AUDIO_HEADER = struct.Struct("<cQ")


@dataclass
class AvatarEntry:
    """A prepared avatar and what it was made from."""

    id: str
    avatar: Avatar
    sha256: str
    created: float


class AvatarStore:
    """Prepared avatars in memory (LRU), their sources on disk to survive restarts.

    On disk an avatar is kept ``retention`` seconds after it was last used (the portrait
    file's modification time), and the folder holds at most ``max_count`` avatars and
    ``max_bytes`` of portraits: making a new one deletes the least recently used beyond
    that. Expired avatars are deleted when the store opens and whenever it is used.
    """

    #: Seconds between two sweeps of the folder when avatars are only read.
    SWEEP_EVERY_S = 60.0

    def __init__(self, folder: Path, capacity: int = 8, retention: float = 24 * 3600.0,
                 max_count: int = 100, max_bytes: int = 1024 << 20) -> None:
        self.folder = folder
        self.capacity = capacity
        self.retention = retention
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, AvatarEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._swept = 0.0
        self.sweep()

    def add(self, data: bytes, options: GenerationOptions) -> AvatarEntry:
        """Analyse a portrait (raises NoFaceFound etc.) and keep it under a new id."""
        if len(data) > self.max_bytes:
            raise LimitExceeded(f"the portrait is larger than the avatars' storage "
                                f"({self.max_bytes // (1 << 20)} MB)")
        avatar = Avatar.prepare(data, options)
        entry = AvatarEntry(uuid.uuid4().hex[:16], avatar, hashlib.sha256(data).hexdigest(),
                            time.time())
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep(room_for=len(data))
        tmp = self.folder / f".{entry.id}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        (self.folder / f"{entry.id}.json").write_text(json.dumps(options.to_dict()))
        tmp.replace(self.folder / f"{entry.id}.portrait")
        self._remember(entry)
        return entry

    def sweep(self, room_for: int | None = None) -> list[str]:
        """Delete expired avatars and, to make ``room_for`` bytes (a new avatar), the least
        recently used beyond the count and size caps; the ids deleted."""
        self._swept = time.monotonic()
        if not self.folder.is_dir():
            return []
        kept = []
        for path in self.folder.glob("*.portrait"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                kept.append((st.st_mtime, st.st_size, path.stem))
        kept.sort()
        gone = []
        now = time.time()
        count, size = len(kept), sum(n for _, n, _ in kept)
        extra = 0 if room_for is None else 1
        for used, n, avatar_id in kept:
            if (used >= now - self.retention and count + extra <= self.max_count
                    and size + (room_for or 0) <= self.max_bytes):
                continue
            self.delete(avatar_id)
            gone.append(avatar_id)
            count, size = count - 1, size - n
        if gone:
            _log.info("avatars deleted", extra={"count": len(gone)})
        return gone

    def _remember(self, entry: AvatarEntry) -> None:
        with self._lock:
            self._items[entry.id] = entry
            self._items.move_to_end(entry.id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, avatar_id: str) -> AvatarEntry | None:
        """The avatar, re-analysed from disk if it fell out of memory (or after a restart);
        None once it has expired. Using it restarts its retention."""
        if not avatar_id.isalnum() or len(avatar_id) > 64:
            return None
        if time.monotonic() - self._swept > self.SWEEP_EVERY_S:
            self.sweep()
        src = self.folder / f"{avatar_id}.portrait"
        meta = self.folder / f"{avatar_id}.json"
        try:
            used = src.stat().st_mtime
        except FileNotFoundError:
            self.delete(avatar_id)  # deleted or swept by another process
            return None
        if used < time.time() - self.retention:
            self.delete(avatar_id)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(src)
        with self._lock:
            entry = self._items.get(avatar_id)
            if entry is not None:
                self._items.move_to_end(avatar_id)
                return entry
        if not meta.is_file():
            return None
        data = src.read_bytes()
        options = GenerationOptions.from_mapping(json.loads(meta.read_text()))
        entry = AvatarEntry(avatar_id, Avatar.prepare(data, options),
                            hashlib.sha256(data).hexdigest(), used)
        self._remember(entry)
        return entry

    def delete(self, avatar_id: str) -> bool:
        """Forget an avatar and delete its files."""
        found = False
        with self._lock:
            found = self._items.pop(avatar_id, None) is not None
        for suffix in (".portrait", ".json"):
            path = self.folder / f"{avatar_id}{suffix}"
            if avatar_id.isalnum() and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                found = True
        return found


def _describe(entry: AvatarEntry) -> dict[str, Any]:
    av = entry.avatar
    width, height = av.size
    return {"id": entry.id, "width": width, "height": height, "fps": av.options.fps,
            "portrait_sha256": entry.sha256, "warnings": av.warnings,
            "options": av.options.to_dict(), "stream_url": f"/v1/stream?avatar={entry.id}"}


def _jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def speak_pcm16(text: str) -> bytes:
    """A sentence spoken by espeak-ng, as 16 kHz mono PCM16."""
    from scipy.signal import resample_poly

    from ...media import tts

    text = text.strip()
    if not text:
        raise InvalidInput("no text to speak")
    bad = _lone_surrogate(text)
    if bad is not None:
        raise InvalidInput(f"the text has a lone surrogate at {bad}, not a Unicode character")
    if len(text) > 1000:
        raise LimitExceeded("the text is longer than 1000 characters")
    speech = tts.speak(text, wpm=160)
    x = resample_poly(speech.samples, STREAM_RATE, speech.rate)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


class _Session:
    """One WebSocket's live stream: audio in, frames out, idle silence when quiet.

    Three tasks share it: the reader takes every client message as it comes (so a client
    that leaves is noticed at once, whatever is being drawn), the drawer plans and draws
    the audio queued since its last turn in a render thread, and the speaker plays
    ``say`` sentences onto the timeline at real-time pace.
    """

    def __init__(self, ws: WebSocket, entry: AvatarEntry, live: LiveState) -> None:
        self.ws = ws
        self.live = live
        self.stream = Stream(entry.avatar)
        self.started = time.monotonic()
        self.last_audio = self.started
        self.samples = 0  # on the timeline: drawn or queued
        self.queue: list[tuple[np.ndarray, float]] = []  # (samples, when they arrived)
        self.wake = asyncio.Event()
        self.says: asyncio.Queue[str] = asyncio.Queue()
        self.speaking = False
        self.frames_sent = 0
        self.dropped = 0  # frames never drawn: more than MAX_LAG_S past due at their turn
        self.late = 0  # frames sent more than LATE_S past due
        self.lags: deque[float] = deque(maxlen=int(2 * self.stream.fps))
        self.gone = False

    @property
    def timeline(self) -> float:
        """Seconds on the timeline: audio received or spoken, and silence added."""
        return self.samples / STREAM_RATE

    def enqueue(self, samples: np.ndarray, now: float) -> float:
        """Queue audio for the drawer; its start on the timeline."""
        start = self.timeline
        self.queue.append((samples, now))
        self.samples += len(samples)
        self.wake.set()
        return start

    def take(self) -> list[tuple[np.ndarray, float]]:
        """The next BATCH_S of queued audio (a longer message is split): one render turn
        is a few frames, so sessions take turns frame by frame, however much one sent."""
        batch, n = [], int(BATCH_S * STREAM_RATE)
        while self.queue and n > 0:
            samples, arrived = self.queue[0]
            if len(samples) > n:
                self.queue[0] = (samples[n:], arrived)
                samples = samples[:n]
            else:
                self.queue.pop(0)
            batch.append((samples, arrived))
            n -= len(samples)
        return batch

    def due(self, frame_time: float, arrived: float) -> float:
        """When a frame is due (monotonic): when the audio that completes it arrived, or,
        for audio sent ahead of real time, when the timeline reaches it."""
        return max(arrived, self.started + frame_time + self.stream.lookahead_s)

    def render(self, batch: list[tuple[np.ndarray, float]]) -> list[_Encoded]:
        """Plan every frame of ``batch``; draw and JPEG-encode those still on time (in a
        render thread).

        Every frame's motion is planned (it carries state), but a frame more than
        MAX_LAG_S past due is not drawn: it is counted in ``dropped`` and the stream
        catches up instead of falling further behind.
        """
        lengths = np.array([len(b) for b, _ in batch])
        ends = self.stream.audio_time + np.cumsum(lengths) / STREAM_RATE
        planned = self.stream.plan(np.concatenate([b for b, _ in batch]))
        out = []
        for n, p in enumerate(planned):
            if self.gone:
                self.dropped += len(planned) - n
                break
            # The chunk whose arrival completed the frame's look-ahead.
            k = min(int(np.searchsorted(ends, p.time + self.stream.lookahead_s - 1e-9)), len(batch) - 1)
            due = self.due(p.time, batch[k][1])
            if time.monotonic() - due > MAX_LAG_S:
                self.dropped += 1
                continue
            frame = self.stream.draw(p)
            out.append(_Encoded(frame.index, frame.time, _jpeg(frame.rgb), due))
        return out

    async def send_frames(self, frames: list[_Encoded]) -> None:
        for f in frames:
            header = FRAME_HEADER.pack(b"F", f.index, int(round(f.time * 1e6)))
            await self.ws.send_bytes(header + f.jpeg)
            lag = time.monotonic() - f.due
            self.late += lag > LATE_S
            self.lags.append(lag)
            self.frames_sent += 1

    @property
    def backlog(self) -> float:
        """Seconds of audio received but not yet planned (a server short of CPU)."""
        return sum(len(b) for b, _ in self.queue) / STREAM_RATE

    def stats(self) -> dict[str, Any]:
        """The per-second ``stats`` message (and the session's end in the log)."""
        lags = np.array(self.lags) if self.lags else np.zeros(1)
        return {"type": "stats", "frames": self.frames_sent, "dropped": self.dropped,
                "late": self.late, "lag_p95_ms": round(float(np.percentile(lags, 95)) * 1000, 1),
                "backlog_ms": round(self.backlog * 1000), "audio_s": round(self.stream.audio_time, 3)}

    def abandon_backlog(self) -> None:
        """At the end: the frames of audio never planned are dropped too, and counted."""
        self.dropped += int(self.backlog * self.stream.fps)
        self.queue.clear()

    async def draw_loop(self) -> None:
        """Draw what was queued, add idle silence when nothing comes, send stats."""
        last_stats = time.monotonic()
        while True:
            with anyio.move_on_after(IDLE_TICK_S):
                await self.wake.wait()
            self.wake.clear()
            now = time.monotonic()
            if not self.queue and not self.speaking and now - self.last_audio >= IDLE_AFTER_S:
                # Nothing arrived: keep the timeline moving with silence (idle motion).
                gap = (now - self.started) - self.timeline
                if gap > 0.04:
                    self.enqueue(np.zeros(int(gap * STREAM_RATE), np.float32), now)
            while self.queue and not self.gone:
                batch = self.take()
                # A session that is being spoken to goes before idle ones when the CPU is
                # short: idle sessions drop frames (counted) before a speaking one does.
                async with self.live.slots.slot(urgent=now - self.last_audio < URGENT_FOR_S):
                    # Cancelled (the client left): the session ends at once and the thread
                    # stops after the frame it is drawing (it reads ``gone``).
                    frames = await anyio.to_thread.run_sync(self.render, batch, abandon_on_cancel=True)
                await self.send_frames(frames)
                now = time.monotonic()
                if now - last_stats >= 1.0:
                    last_stats = now
                    await self.ws.send_json(self.stats())
            if now - last_stats >= 1.0:
                last_stats = now
                await self.ws.send_json(self.stats())

    async def say_loop(self) -> None:
        """Speak queued sentences one after the other, at real-time pace, echoing the audio."""
        while True:
            text = await self.says.get()
            try:
                async with self.live.say_slots:
                    pcm = await anyio.to_thread.run_sync(speak_pcm16, text)
            except FacetalkError as exc:
                await self.ws.send_json({"type": "error", **public_error(exc.to_dict())})
                continue
            self.speaking = True
            try:
                await self._play(pcm)
            finally:
                self.speaking = False
                self.last_audio = time.monotonic()

    async def _play(self, pcm: bytes) -> None:
        chunk = int(0.04 * STREAM_RATE) * 2
        begin = time.monotonic()
        base = self.timeline
        for i in range(0, len(pcm), chunk):
            part = pcm[i:i + chunk]
            now = time.monotonic()
            self.last_audio = now
            start = self.enqueue(np.frombuffer(part, "<i2").astype(np.float32) / 32768.0, now)
            await self.ws.send_bytes(AUDIO_HEADER.pack(b"A", int(round(start * 1e6))) + part)
            ahead = (self.timeline - base) - (time.monotonic() - begin)
            if ahead > 0.1:
                await asyncio.sleep(ahead - 0.1)


@dataclass(frozen=True)
class _Encoded:
    index: int
    time: float
    jpeg: bytes
    due: float  # when the frame was due (monotonic, see _Session.due)


class RenderGate:
    """The render threads every session shares: ``slots`` frames drawn at once, waiting
    sessions served first come first served, those being spoken to before idle ones.

    (anyio's CapacityLimiter has no priorities.) ``total_tokens``/``borrowed_tokens`` read
    as a CapacityLimiter's do.
    """

    def __init__(self, slots: int) -> None:
        self.total_tokens = slots
        self.borrowed_tokens = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, urgent: bool = True) -> AsyncIterator[None]:
        """Hold one render slot for the ``async with``."""
        if self.borrowed_tokens < self.total_tokens and not self._waiters:
            self.borrowed_tokens += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (0 if urgent else 1, next(self._seq), fut))
            try:
                await fut  # woken with the slot handed over (still counted as borrowed)
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()
                else:
                    fut.cancel()  # skipped when its turn comes
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self.borrowed_tokens -= 1


class LiveState:
    """What every live session shares: the session count, the render and speech limiters."""

    def __init__(self, max_sessions: int, render_slots: int | None = None) -> None:
        import cv2

        # Sessions are drawn in parallel, one thread per core: OpenCV splitting each remap
        # over every core on top of that would oversubscribe them (and its idle workers
        # spin). Frames are the same either way.
        cv2.setNumThreads(1)
        self.max_sessions = max_sessions
        self.sessions = 0
        #: Frames drawn at once (one thread per core: the drawing releases the GIL).
        self.slots = RenderGate(render_slots or LIVE_RENDER_SLOTS)
        #: New portraits analysed at once (each takes a core for a second or two).
        self.analysis = anyio.CapacityLimiter(1)
        #: Sentences synthesised at once, for /v1/say and the stream's ``say``.
        self.say_slots = anyio.CapacityLimiter(SAY_SLOTS)


def live_state(app: Any) -> LiveState:
    """The app's LiveState, made on first use from its settings."""
    state = getattr(app.state, "live", None)
    if state is None:
        state = app.state.live = LiveState(app.state.settings.live_sessions)
        app.state.live_slots = state.slots
    return state


class SpeechBusy(QueueFull):
    """Every speech synthesis slot is taken; retry shortly."""

    code = "busy"
    default_hint = "Sentences are being spoken for other clients; retry after Retry-After seconds."


#: Frames drawn at once across every session: one per core.
LIVE_RENDER_SLOTS = max(1, os.cpu_count() or 1)
#: Sentences synthesised at once (espeak-ng): more callers get 429 on /v1/say, or wait
#: their turn in a live session, instead of taking every thread of the server.
SAY_SLOTS = 2
#: /v1/say's JSON body (the text is at most 1000 characters).
SAY_MAX_BYTES = 64 * 1024
#: WebSocket close code for "the server is at its live session cap" (RFC 6455: try again later).
CLOSE_BUSY = 1013
router = APIRouter(tags=["live"])


@router.post("/v1/avatars", status_code=201,
             summary="Analyse a portrait once for live streaming")
async def create_avatar(request: Request) -> JSONResponse:
    """Multipart form: ``portrait`` (file), avatar options as fields or JSON ``options``.

    The upload goes through the job API's streaming parser: its size limit cuts an
    oversized portrait off while it arrives, and the options are parsed the same way.
    """
    settings = request.app.state.settings
    storage = request.app.state.queue.storage
    try:
        form = await receive_form(request.headers.get("content-type"), request.stream(),
                                  storage.new_upload, settings.limits, file_parts=("portrait",),
                                  guard=upload_guard(request))
    except (UnsupportedContentType, BadRequest):
        raise InvalidInput("send a multipart form with a 'portrait' file") from None
    except ClientDisconnect:
        raise BadRequest("the upload was interrupted by the client") from None
    try:
        if "portrait" not in form.files:
            raise InvalidInput("the form needs a 'portrait' file")
        opts = options_from_form(form.fields, allowed=AVATAR_OPTIONS, what="avatars")
        data = form.files["portrait"].path.read_bytes()
    finally:
        form.discard()
    entry = await anyio.to_thread.run_sync(request.app.state.avatars.add, data, opts,
                                           limiter=live_state(request.app).analysis)
    return JSONResponse(_describe(entry), status_code=201)


@router.get("/v1/avatars/{avatar_id}", summary="An avatar's details")
async def get_avatar(avatar_id: str, request: Request) -> dict[str, Any]:
    """The avatar's size, options and stream URL."""
    entry = await anyio.to_thread.run_sync(request.app.state.avatars.get, avatar_id)
    if entry is None:
        raise _NotFound(avatar_id)
    return _describe(entry)


@router.delete("/v1/avatars/{avatar_id}", status_code=204,
               summary="Delete an avatar and its portrait")
async def delete_avatar(avatar_id: str, request: Request) -> Response:
    """Forget the avatar and delete its portrait."""
    if not request.app.state.avatars.delete(avatar_id):
        raise _NotFound(avatar_id)
    return Response(status_code=204)


@router.post("/v1/say", summary="Speak a sentence (espeak-ng), as WAV")
async def say(request: Request) -> Response:
    """``{"text": "..."}`` -> 16 kHz mono WAV, as the live stream would speak it.

    At most SAY_SLOTS sentences are synthesised at once; beyond that the answer is 429
    with Retry-After, so a burst of calls cannot take the threads other requests need.
    """
    raw = await read_capped(request.stream(), SAY_MAX_BYTES, "request body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError, huge integers
        raise InvalidInput('send JSON: {"text": "..."}') from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise InvalidInput('send JSON: {"text": "..."}')
    slots = live_state(request.app).say_slots
    try:
        slots.acquire_nowait()
    except anyio.WouldBlock:
        raise SpeechBusy(f"{int(slots.total_tokens)} sentences are being spoken already",
                         retry_after=1) from None
    try:
        pcm = await anyio.to_thread.run_sync(speak_pcm16, body["text"])
    finally:
        slots.release()
    return Response(_wav(pcm), media_type="audio/wav")


@router.get("/live", include_in_schema=False)
async def live_page() -> FileResponse:
    """The live page, with the main page's headers (Content-Security-Policy included)."""
    return FileResponse(static_dir() / "live.html", media_type=PAGE_FILES["live.html"],
                        headers=HEADERS)


@router.websocket("/v1/stream")
async def stream(ws: WebSocket, avatar: str = "", api_key: str | None = None) -> None:
    """The live session (protocol in this module's docstring)."""
    store: AvatarStore = ws.app.state.avatars
    live = live_state(ws.app)
    # Refusals accept first, then close: a close before the handshake reaches the
    # client as a bare HTTP 403 (browsers report 1006), never as the 44xx code.
    header_key = ws.headers.get("x-api-key")
    if not key_ok(ws.app.state.settings.api_keys, api_key or header_key):
        await ws.accept()
        await ws.close(code=4401, reason="a valid api_key is required")
        return
    if live.sessions >= live.max_sessions:
        # Refused before any work: one more session would make every session late.
        await ws.accept()
        await ws.close(code=CLOSE_BUSY, reason=f"busy: all {live.max_sessions} live sessions are "
                                               "in use, try again later")
        _log.info("live session refused", extra={"sessions": live.sessions})
        return
    live.sessions += 1
    try:
        entry = await anyio.to_thread.run_sync(store.get, avatar) if avatar else None
        if entry is None:
            await ws.accept()
            await ws.close(code=4404, reason=f"no avatar {avatar[:64]!r}: POST /v1/avatars first")
            return
        await ws.accept()
        session = _Session(ws, entry, live)
        try:
            width, height = entry.avatar.size
            await ws.send_json({"type": "ready", "fps": session.stream.fps, "width": width,
                                "height": height, "sample_rate": STREAM_RATE, "format": "jpeg",
                                "lookahead_ms": round(session.stream.lookahead_s * 1000),
                                "max_lag_ms": round(MAX_LAG_S * 1000)})
            await _run_session(session)
        except* (WebSocketDisconnect, WebSocketDisconnected):
            pass  # the client left while a message was being sent
        finally:
            session.gone = True
        session.abandon_backlog()
        _log.info("live session ended", extra={"frames": session.frames_sent,
                                                "dropped": session.dropped, "late": session.late})
    finally:
        live.sessions -= 1


async def _run_session(session: _Session) -> None:
    """Run the reader, drawer and speaker until one ends (the client left, stopped or
    sent something wrong); the others are cancelled at once."""
    async with anyio.create_task_group() as tg:
        async def until_first_ends(loop: Callable[[], Awaitable[None]]) -> None:
            try:
                await loop()
            finally:
                session.gone = True  # a frame being drawn is the last one
                tg.cancel_scope.cancel()

        for loop in (partial(_read_loop, session), session.draw_loop, session.say_loop):
            tg.start_soon(until_first_ends, loop)


async def _read_loop(session: _Session) -> None:
    ws = session.ws
    seq = 0
    while True:
        message = await ws.receive()
        now = time.monotonic()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            pcm = message["bytes"]
            if len(pcm) % 2 or len(pcm) > 2 * STREAM_RATE * 2:
                await ws.close(code=1003, reason="audio must be 16 kHz mono PCM16, at most 2 s a message")
                return
            session.last_audio = now
            start = session.enqueue(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, now)
            await ws.send_json({"type": "audio", "seq": seq, "start_s": round(start, 4)})
            seq += 1
            continue
        try:
            command = json.loads(message.get("text") or "")
            kind = command["type"]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError):  # deep nesting
            await ws.close(code=1003, reason='text messages must be JSON {"type": ...}')
            return
        if kind == "stop":
            session.gone = True
            session.abandon_backlog()
            await ws.send_json(session.stats())  # the final counts
            await ws.close(code=1000, reason="stopped")
            return
        if kind == "flush":
            pad = np.zeros(int(session.stream.lookahead_s * STREAM_RATE) + 1, np.float32)
            session.enqueue(pad, now)
        elif kind == "say":
            text = str(command.get("text", ""))
            bad = _lone_surrogate(text)
            if bad is not None:
                await ws.close(code=1007, reason=f"say: the text has a lone surrogate at {bad}, "
                                                 "not a Unicode character")
                return
            session.says.put_nowait(text)
        else:
            await ws.close(code=1003, reason=f"unknown message type {str(kind)[:40]!r}")
            return


def _lone_surrogate(text: str) -> int | None:
    """Where ``text`` has a lone surrogate (JSON allows ``\\ud800``; UTF-8 does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _wav(pcm: bytes) -> bytes:
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(STREAM_RATE)
        w.writeframes(pcm)
    return out.getvalue()


class _NotFound(ServiceError):
    code = "not_found"
    status = 404

    def __init__(self, avatar_id: str) -> None:
        super().__init__(f"no avatar {avatar_id!r}", hint="POST /v1/avatars creates one.")
