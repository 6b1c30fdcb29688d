"""Live mode's latency and frame rate of live mode, measured end to end.

Starts ``facetalk serve`` on a free loopback port (or targets ``--url``), creates an
avatar from the bundled portrait, then for each session streams a speech WAV over
``/v1/stream`` at real-time pace in 20 ms chunks and records, for every frame, the
time from sending the audio chunk that contains the frame's timestamp to receiving
the frame. Also counts dropped frames (indices never received), late ones (over
``LATE_MS``), sessions the server refused (its session cap), the server's own dropped and
late counts, and the server's CPU use (from /proc when it started the server). To
overload on purpose, raise the cap: ``FACETALK_LIVE_SESSIONS=8 facetalk stream-bench
--sessions 8`` (the server it starts inherits the environment).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import click
import numpy as np

CHUNK_S = 0.02
RATE = 16000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise click.ClickException("the server exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise click.ClickException(f"{url} did not become ready in {timeout:.0f} s")


def _create_avatar(url: str, key: str | None, size: int) -> str:
    import httpx

    portrait = (resources.files("facetalk") / "assets" / "astronaut.png").read_bytes()
    headers = {"X-API-Key": key} if key else {}
    r = httpx.post(f"{url}/v1/avatars", files={"portrait": ("p.png", portrait)},
                   data={"min_resolution": str(size)}, headers=headers, timeout=120)
    if r.status_code != 201:
        raise click.ClickException(f"creating the avatar failed: {r.status_code} {r.text}")
    return str(r.json()["id"])


#: A frame later than this (from sending its audio to receiving it) counts as late.
LATE_MS = 150.0


async def _session(url: str, avatar: str, key: str | None, pcm: np.ndarray) -> dict[str, Any]:
    import websockets

    ws_url = url.replace("http", "ws", 1) + f"/v1/stream?avatar={avatar}"
    if key:
        ws_url += f"&api_key={key}"
    chunk = int(CHUNK_S * RATE)
    sent: list[float] = []
    starts: dict[int, float] = {}
    frames: dict[int, tuple[float, float]] = {}  # index -> (time on timeline, received)
    stats: dict[str, Any] = {}
    async with websockets.connect(ws_url, max_size=None) as ws:
        try:
            ready = json.loads(await ws.recv())
        except websockets.ConnectionClosed as exc:
            # Refused (1013: the server's session cap): reported, not measured.
            rcvd = exc.rcvd
            return {"refused": True, "close_code": rcvd.code if rcvd else None,
                    "reason": rcvd.reason if rcvd else ""}
        fps = ready["fps"]

        async def receive() -> None:
            async for msg in ws:
                now = time.perf_counter()
                if isinstance(msg, bytes) and msg[:1] == b"F":
                    _, index, t_us = struct.unpack("<cIQ", msg[:13])
                    frames[index] = (t_us / 1e6, now)
                elif isinstance(msg, str):
                    m = json.loads(msg)
                    if m.get("type") == "audio":
                        starts[m["seq"]] = m["start_s"]
                    elif m.get("type") == "stats":
                        stats.update(m)

        reader = asyncio.create_task(receive())
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(pcm), chunk)):
            due = t0 + k * CHUNK_S
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(pcm[i:i + chunk].tobytes())
            sent.append(time.perf_counter())
        await ws.send(json.dumps({"type": "flush"}))
        await asyncio.sleep(1.0)
        await ws.send(json.dumps({"type": "stop"}))
        try:
            await asyncio.wait_for(reader, timeout=5)
        except (TimeoutError, websockets.ConnectionClosed):
            reader.cancel()
    # Where each chunk landed on the server's timeline (it adds silence while none
    # arrives, e.g. before a late first chunk): frames are matched to chunks by that. A
    # server too busy to echo a chunk before the end gets it placed right after the one
    # before, and its frames count as dropped.
    lengths = np.diff(np.arange(0, len(pcm) + chunk, chunk).clip(max=len(pcm))) / RATE
    at = np.array([starts.get(k, np.nan) for k in range(len(sent))])
    unechoed = int(np.isnan(at).sum())
    for k in range(len(at)):
        if np.isnan(at[k]):
            at[k] = at[k - 1] + lengths[k - 1] if k else 0.0
    ends = at + lengths

    def chunk_of(t: float) -> int | None:
        """The chunk holding moment ``t`` of the timeline (None: silence the server added)."""
        k = int(np.searchsorted(at, t + 1e-6, side="right")) - 1
        return k if 0 <= k < len(sent) and t < ends[k] else None

    latencies = []
    for t, received in frames.values():
        k = chunk_of(t)
        if k is not None:
            latencies.append((received - sent[k]) * 1000)
    lo, hi = int(np.ceil(at[0] * fps - 1e-6)), int(np.ceil(ends[-1] * fps - 1e-6))
    wanted = [i for i in range(lo, hi) if chunk_of(i / fps) is not None]
    got = [i for i in wanted if i in frames]
    expected = len(wanted)
    span = (frames[got[-1]][1] - frames[got[0]][1]) if len(got) > 1 else 1.0
    return {"refused": False, "frames": len(got), "expected": expected,
            "dropped": expected - len(got), "unechoed": unechoed,
            "late": int(sum(x > LATE_MS for x in latencies)),
            "fps": (len(got) - 1) / span if len(got) > 1 else 0.0,
            "latencies_ms": latencies, "server": stats}


def _summary(results: list[dict[str, Any]], cpu: float | None, wall: float) -> dict[str, Any]:
    served = [r for r in results if not r["refused"]]
    lat = np.concatenate([r["latencies_ms"] for r in served]) if served else np.zeros(0)
    out = {
        "sessions": len(results),
        "served": len(served),
        "refused": len(results) - len(served),
        "refusals": sorted({f"{r['close_code']} {r['reason']}" for r in results if r["refused"]}),
        "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
        "latency_max_ms": float(lat.max()) if lat.size else None,
        "fps": float(min(r["fps"] for r in served)) if served else 0.0,
        "expected": int(sum(r["expected"] for r in served)),
        "frames": int(sum(r["frames"] for r in served)),
        # Frames of the speech never received, and received later than LATE_MS.
        "dropped": int(sum(r["dropped"] for r in served)),
        "late": int(sum(r["late"] for r in served)),
        "unechoed_chunks": int(sum(r["unechoed"] for r in served)),
        # The server's own counts (its last stats message of each session): frames it
        # skipped to catch up, and frames it sent more than 100 ms past due.
        "server_dropped": int(sum(r["server"].get("dropped", 0) for r in served)),
        "server_late": int(sum(r["server"].get("late", 0) for r in served)),
        "server_frames": int(sum(r["server"].get("frames", 0) for r in served)),
        "server_cpu_percent": (100.0 * cpu / wall) if cpu is not None else None,
    }
    return out


def run_stream_bench(audio: Path | None, seconds: float, sessions: int, size: int,
                     url: str | None, api_key: str | None) -> tuple[dict[str, Any], float]:
    """Stream speech through live mode in real time; the figures and the seconds streamed.

    Starts a server on a free loopback port unless ``url`` is given."""
    from ..media.audio import load_audio
    from .bench import speech_clip

    with tempfile.TemporaryDirectory() as tmp:
        wav = audio or speech_clip(seconds, Path(tmp) / "speech.wav")
        sound = load_audio(wav)
        pcm = (np.clip(sound.samples, -1, 1) * 32767).astype("<i2")
        proc = None
        if url is None:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "facetalk.cli", "serve", "--port", str(port),
                 "--storage", str(Path(tmp) / "store"), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(url, proc)
            avatar = _create_avatar(url, api_key, size)
            cpu0 = _cpu_seconds(proc.pid) if proc else None
            t0 = time.perf_counter()

            async def run_all() -> list[dict[str, Any]]:
                return await asyncio.gather(*(_session(url, avatar, api_key, pcm)
                                              for _ in range(sessions)))

            results = asyncio.run(run_all())
            wall = time.perf_counter() - t0
            cpu = (_cpu_seconds(proc.pid) - cpu0) if proc and cpu0 is not None else None
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return _summary(results, cpu, wall), len(pcm) / RATE
