"""Live mode: avatars analysed once, a WebSocket that turns streamed speech into frames.

Protocol of ``WS /v1/stream?avatar=ID`` (add ``&api_key=KEY`` when keys are set:
browsers cannot put headers on a WebSocket):

* server -> client, first: ``{"type": "ready", "fps", "width", "height",
  "sample_rate": 16000, "lookahead_ms", "format": "jpeg"}``.
* client -> server: binary messages of 16 kHz mono PCM16 little-endian audio (20-100 ms
  each); text ``{"type": "say", "text": "..."}`` to have the server speak a sentence
  (espeak-ng) through the avatar; text ``{"type": "flush"}`` at the end of an utterance
  to get its last frames without waiting; text ``{"type": "stop"}`` to end.
* server -> client: binary ``b"F" + <u32 frame index> + <u64 time in microseconds> +
  JPEG`` per frame, where the time is the frame's place on the audio timeline (the audio
  received, plus silence the server added while nothing arrived); binary
  ``b"A" + <u64 start in microseconds> + PCM16`` echoes audio the server spoke (say);
  text ``{"type": "audio", "seq", "start_s"}`` tells where each client chunk landed on
  the timeline; text ``{"type": "stats", ...}`` once a second (frames, dropped, lag).

Why JPEG frames: each frame is independent (a dropped one costs nothing), encoding a
512 px frame takes ~3 ms on one core, decoding is native in every browser, and the
first frame needs no keyframe or buffering -- H.264 in fragmented MP4 would save
bandwidth (not scarce on a local network) at the price of encoder and player latency.
WebRTC (aiortc) would add a jitter buffer and congestion control built for the
internet; on a kiosk's LAN plain WebSocket frames keep latency lowest.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import struct
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from ...errors import FacetalkError, InvalidInput, LimitExceeded
from ...options import GenerationOptions
from ...stream import STREAM_RATE, Avatar, Stream
from ..errors import BadRequest, ServiceError, UnsupportedContentType
from ..web import HEADERS, PAGE_FILES, static_dir
from .auth import key_ok
from .uploads import options_from_form, read_capped, receive_form

_log = logging.getLogger("facetalk.service.live")

#: Options an avatar may set (the rest are per render and make no sense live).
AVATAR_OPTIONS = ("min_resolution", "framing", "expand_ratio", "dynamic_scale",
                  "motion_scale", "blink", "seed", "fps", "label", "label_position",
                  "watermark", "inference_steps")
#: Without audio for this long, the server adds silence so frames keep coming.
IDLE_AFTER_S = 0.15
#: Audio waiting to be rendered beyond this is skipped (frames dropped) to stay live.
MAX_BACKLOG_S = 0.5
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
    """Prepared avatars in memory (LRU), their sources on disk to survive restarts."""

    def __init__(self, folder: Path, capacity: int = 8) -> None:
        self.folder = folder
        self.capacity = capacity
        self._items: OrderedDict[str, AvatarEntry] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, options: GenerationOptions) -> AvatarEntry:
        """Analyse a portrait (raises NoFaceFound etc.) and keep it under a new id."""
        avatar = Avatar.prepare(data, options)
        entry = AvatarEntry(uuid.uuid4().hex[:16], avatar, hashlib.sha256(data).hexdigest(),
                            time.time())
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{entry.id}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(self.folder / f"{entry.id}.portrait")
        (self.folder / f"{entry.id}.json").write_text(json.dumps(options.to_dict()))
        self._remember(entry)
        return entry

    def _remember(self, entry: AvatarEntry) -> None:
        with self._lock:
            self._items[entry.id] = entry
            self._items.move_to_end(entry.id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, avatar_id: str) -> AvatarEntry | None:
        """The avatar, re-analysed from disk if it fell out of memory (or after a restart)."""
        if not avatar_id.isalnum() or len(avatar_id) > 64:
            return None
        with self._lock:
            entry = self._items.get(avatar_id)
            if entry is not None:
                self._items.move_to_end(avatar_id)
                return entry
        src = self.folder / f"{avatar_id}.portrait"
        meta = self.folder / f"{avatar_id}.json"
        if not src.is_file() or not meta.is_file():
            return None
        data = src.read_bytes()
        options = GenerationOptions.from_mapping(json.loads(meta.read_text()))
        entry = AvatarEntry(avatar_id, Avatar.prepare(data, options),
                            hashlib.sha256(data).hexdigest(), src.stat().st_mtime)
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
    if len(text) > 1000:
        raise LimitExceeded("the text is longer than 1000 characters")
    speech = tts.speak(text, wpm=160)
    x = resample_poly(speech.samples, STREAM_RATE, speech.rate)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


class _Session:
    """One WebSocket's live stream: audio in, frames out, idle silence when quiet."""

    def __init__(self, ws: WebSocket, entry: AvatarEntry) -> None:
        self.ws = ws
        self.stream = Stream(entry.avatar)
        self.started = time.monotonic()
        self.last_audio = self.started
        self.frames_sent = 0
        self.dropped = 0
        self.backlog: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.closed = False

    async def send_frames(self, frames: list[Any]) -> None:
        for f in frames:
            header = FRAME_HEADER.pack(b"F", f.index, int(round(f.time * 1e6)))
            await self.ws.send_bytes(header + f.jpeg)
            self.frames_sent += 1

    def render(self, pcm: bytes | np.ndarray) -> list[Any]:
        """Push audio through the stream and JPEG-encode the frames (worker thread)."""
        frames = self.stream.push_audio(pcm)
        behind = self.stream.audio_time - (time.monotonic() - self.started)
        out = []
        for i, f in enumerate(frames):
            # Stay live: if rendering fell behind the audio, send only the newest frames.
            if len(frames) - i > int(MAX_BACKLOG_S * self.stream.fps) and behind < 0:
                self.dropped += 1
                continue
            f_jpeg = _jpeg(f.rgb)
            out.append(_Encoded(f.index, f.time, f_jpeg))
        return out


@dataclass(frozen=True)
class _Encoded:
    index: int
    time: float
    jpeg: bytes


#: Renders (avatar analyses and live frames) at once across every session.
LIVE_RENDER_SLOTS = 4
#: /v1/say's JSON body (the text is at most 1000 characters).
SAY_MAX_BYTES = 64 * 1024
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
                                  storage.new_upload, settings.limits, file_parts=("portrait",))
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
                                           limiter=request.app.state.live_slots)
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
    """``{"text": "..."}`` -> 16 kHz mono WAV, as the live stream would speak it."""
    raw = await read_capped(request.stream(), SAY_MAX_BYTES, "request body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput('send JSON: {"text": "..."}') from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise InvalidInput('send JSON: {"text": "..."}')
    pcm = await anyio.to_thread.run_sync(speak_pcm16, body["text"])
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
    # Refusals accept first, then close: a close before the handshake reaches the
    # client as a bare HTTP 403 (browsers report 1006), never as the 44xx code.
    header_key = ws.headers.get("x-api-key")
    if not key_ok(ws.app.state.settings.api_keys, api_key or header_key):
        await ws.accept()
        await ws.close(code=4401, reason="a valid api_key is required")
        return
    entry = await anyio.to_thread.run_sync(store.get, avatar) if avatar else None
    if entry is None:
        await ws.accept()
        await ws.close(code=4404, reason=f"no avatar {avatar[:64]!r}: POST /v1/avatars first")
        return
    await ws.accept()
    session = _Session(ws, entry)
    width, height = entry.avatar.size
    await ws.send_json({"type": "ready", "fps": session.stream.fps, "width": width,
                        "height": height, "sample_rate": STREAM_RATE, "format": "jpeg",
                        "lookahead_ms": round(session.stream.lookahead_s * 1000)})
    try:
        await _run_session(session, ws.app.state.live_slots)
    except WebSocketDisconnect:
        pass
    finally:
        session.closed = True
    _log.info("live session ended", extra={"frames": session.frames_sent,
                                            "dropped": session.dropped})


async def _run_session(session: _Session, slots: anyio.CapacityLimiter) -> None:
    ws = session.ws
    seq = 0
    last_stats = time.monotonic()
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), timeout=IDLE_AFTER_S)
        except TimeoutError:
            message = None
        now = time.monotonic()
        if message is not None and message["type"] == "websocket.disconnect":
            return
        if message is not None and message.get("bytes") is not None:
            pcm = message["bytes"]
            if len(pcm) % 2 or len(pcm) > 2 * STREAM_RATE * 2:
                await ws.close(code=1003, reason="audio must be 16 kHz mono PCM16, at most 2 s a message")
                return
            start = session.stream.audio_time
            await ws.send_json({"type": "audio", "seq": seq, "start_s": round(start, 4)})
            seq += 1
            session.last_audio = now
            frames = await anyio.to_thread.run_sync(session.render, pcm, limiter=slots)
            await session.send_frames(frames)
        elif message is not None and message.get("text") is not None:
            try:
                command = json.loads(message["text"])
                kind = command["type"]
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError):  # deep nesting
                await ws.close(code=1003, reason='text messages must be JSON {"type": ...}')
                return
            if kind == "stop":
                await ws.close(code=1000, reason="stopped")
                return
            if kind == "flush":
                pad = np.zeros(int(session.stream.lookahead_s * STREAM_RATE) + 1, np.float32)
                frames = await anyio.to_thread.run_sync(session.render, pad, limiter=slots)
                await session.send_frames(frames)
            elif kind == "say":
                try:
                    pcm = await anyio.to_thread.run_sync(speak_pcm16, str(command.get("text", "")))
                except FacetalkError as exc:
                    await ws.send_json({"type": "error", **exc.to_dict()})
                    continue
                await _say(session, pcm, slots)
            else:
                await ws.close(code=1003, reason=f"unknown message type {kind!r}")
                return
        else:
            # Nothing arrived: keep the timeline moving with silence (idle motion).
            elapsed = now - session.started
            gap = elapsed - session.stream.audio_time
            if now - session.last_audio >= IDLE_AFTER_S and gap > 0.04:
                silence = np.zeros(int(gap * STREAM_RATE), np.float32)
                frames = await anyio.to_thread.run_sync(session.render, silence, limiter=slots)
                await session.send_frames(frames)
        if now - last_stats >= 1.0:
            last_stats = now
            await ws.send_json({"type": "stats", "frames": session.frames_sent,
                                "dropped": session.dropped,
                                "audio_s": round(session.stream.audio_time, 3)})


async def _say(session: _Session, pcm: bytes, slots: anyio.CapacityLimiter) -> None:
    """Play server-spoken audio through the avatar at real-time pace, echoing the audio."""
    chunk = int(0.04 * STREAM_RATE) * 2
    begin = time.monotonic()
    base = session.stream.audio_time
    for i in range(0, len(pcm), chunk):
        part = pcm[i:i + chunk]
        start = session.stream.audio_time
        await session.ws.send_bytes(AUDIO_HEADER.pack(b"A", int(round(start * 1e6))) + part)
        frames = await anyio.to_thread.run_sync(session.render, part, limiter=slots)
        await session.send_frames(frames)
        ahead = (session.stream.audio_time - base) - (time.monotonic() - begin)
        if ahead > 0.1:
            await asyncio.sleep(ahead - 0.1)
    session.last_audio = time.monotonic()


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
