"""Helpers for tests of live mode: an app client, a uvicorn server, a WebSocket session."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from facetalk.service.api import create_app
from facetalk.service.settings import ServiceSettings
from helpers.service import LocalClient

KEY = "live-test-key-0123456789"
RATE = 16000
CHUNK = 640  # 40 ms of 16 kHz audio per message
SIZE = 320  # frame size asked for (short side): small to keep the test quick
FRAME = struct.Struct("<cIQ")
AUDIO = struct.Struct("<cQ")


# -- servers and clients -------------------------------------------------------------------
@contextlib.contextmanager
def app_client(storage: Path, **settings: Any) -> Iterator[TestClient]:
    """The service in-process, with one render worker, on ``storage``."""
    s = ServiceSettings(storage=storage, workers=1, **settings)
    with LocalClient(create_app(s), raise_server_exceptions=False) as client:
        yield client


class LiveServer:
    """The service under a real uvicorn on a free loopback port, in a thread."""

    def __init__(self, storage: Path, **settings: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        app = create_app(ServiceSettings(storage=storage, workers=1, **settings))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, avatar: str, key: str | None = KEY) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream?avatar={avatar}" + (
            f"&api_key={key}" if key is not None else "")

    def __enter__(self) -> LiveServer:
        self.thread.start()
        end = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


class Session:
    """A WebSocket client of /v1/stream; a reader thread records every message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ready = json.loads(self.ws.recv(timeout=30))
        self.frames: list[tuple[int, float, bytes]] = []  # index, time (s), JPEG
        self.arrived: list[float] = []  # time.monotonic() when each frame arrived
        self.sent: list[float] = []  # time.monotonic() when each send_paced chunk was sent
        self.acks: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.spoken: list[tuple[float, bytes]] = []  # start (s), PCM16 the server spoke
        self.ended = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for msg in self.ws:
                now = time.monotonic()
                if isinstance(msg, bytes) and msg[:1] == b"F":
                    _, index, t_us = FRAME.unpack_from(msg)
                    self.frames.append((index, t_us / 1e6, msg[FRAME.size:]))
                    self.arrived.append(now)
                elif isinstance(msg, bytes) and msg[:1] == b"A":
                    _, start_us = AUDIO.unpack_from(msg)
                    self.spoken.append((start_us / 1e6, msg[AUDIO.size:]))
                elif isinstance(msg, str):
                    m = json.loads(msg)
                    {"audio": self.acks, "stats": self.stats}.get(m["type"], self.errors).append(m)
        except ConnectionClosed:
            pass
        finally:
            self.ended.set()

    def wait(self, pred: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while not pred():
            assert not self.ended.is_set() or pred(), f"connection closed while waiting for {what}"
            assert time.monotonic() < end, f"timed out waiting for {what}"
            time.sleep(0.02)

    def send_paced(self, pcm: bytes, chunk: int = CHUNK) -> list[float]:
        """Send PCM16 in ``chunk``-sample messages at real-time pace, as a microphone
        would; the length of each message in seconds."""
        t0 = time.monotonic()
        lengths = []
        for k, i in enumerate(range(0, len(pcm), 2 * chunk)):
            delay = t0 + k * chunk / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            part = pcm[i:i + 2 * chunk]
            self.sent.append(time.monotonic())
            self.ws.send(part)
            lengths.append(len(part) / 2 / RATE)
        return lengths


@contextlib.contextmanager
def session(url: str, **headers: str) -> Iterator[Session]:
    """A connected :class:`Session` (its first message, ``ready``, already read)."""
    with connect(url, open_timeout=30, max_size=None, additional_headers=headers or None) as ws:
        s = Session(ws)
        yield s
    s.reader.join(10)


def refusal(url: str, **headers: str) -> tuple[int, str]:
    """Open ``url``; the close code and reason the server answered with (fails if it streams)."""
    try:
        with connect(url, open_timeout=30, additional_headers=headers or None) as ws:
            msg = ws.recv(timeout=30)
    except InvalidStatus as exc:
        raise AssertionError(f"refused at the handshake with HTTP {exc.response.status_code}, "
                             "not with a WebSocket close code") from None
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame"
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError(f"the stream opened: {msg!r}")


def create_avatar(post: Callable[..., httpx.Response], portrait: bytes,
                  **headers: str) -> httpx.Response:
    return post("/v1/avatars", files={"portrait": ("me.png", portrait, "image/png")},
                data={"min_resolution": str(SIZE)}, headers=headers)


def decode(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))
