"""Rerun the attack probe of issue 22 against a ``facetalk serve`` this script starts itself.

    PYTHONPATH=src python tools/probe.py            # ~2-3 minutes, loopback only
    PYTHONPATH=src python tools/probe.py --only verify_bomb,idle_sockets

Every attack is bounded (sizes, counts, durations) and goes to 127.0.0.1 only. Throughout,
three samplers run: the API process's resident memory (``/proc/PID/status``, the server
process only; its helpers are reported apart), the bytes under the storage folder and the
server's own temp folder (``TMPDIR`` is pointed inside the probe's folder), and ``/healthz``
on a fresh connection every ~50 ms. The server is given a free-disk reserve that leaves
``--headroom-mb`` of the real disk usable, so "disk over the configured limits" is measurable.

The table: attack, what came back (status codes), max API RSS, max disk written, max
/healthz latency, and the attack's own verdict. Exit status 1 when the API process passed
1 GB RSS, the disk passed the headroom, /healthz took more than 100 ms or failed, or an
attack's verdict is FAIL (attacks owned by other fixes of the issue say so in the table).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from facetalk.measure.procs import process_tree, rss_bytes

RSS_LIMIT = 1024**3
HEALTHZ_LIMIT_MS = 100.0
HOST = "127.0.0.1"


# -- HTTP over raw sockets (the attacks need control a client library hides) ----------------
def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 60.0) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body). Status 0 when the connection failed."""
    head = {"Host": f"{HOST}:{port}", "Connection": "close", "Content-Length": str(len(body)),
            **(headers or {})}
    raw = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items()) + b"\r\n" + body
    data = b""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(raw)  # a server refusing early may close before the body is all sent
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(65536):
                    data += chunk
    except OSError:
        return 0, b""
    if not data.startswith(b"HTTP/1."):
        return 0, data
    return int(data[9:12]), data.partition(b"\r\n\r\n")[2]


def multipart(parts: dict[str, tuple[str, bytes]], fields: dict[str, str] | None = None,
              boundary: str = "PROBE") -> tuple[bytes, str]:
    """A multipart body (files then fields) and its Content-Type."""
    out = io.BytesIO()
    for name, (filename, data) in parts.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                  f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode())
        out.write(data + b"\r\n")
    for name, value in (fields or {}).items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def stream_upload(port: int, path: str, part: str, total: int, stall_after: int | None = None,
                  wait: float = 60.0) -> tuple[int, int]:
    """Stream a chunked multipart upload of ``total`` bytes (stop early when the server
    answers; stop sending after ``stall_after`` bytes and wait); (status, bytes sent)."""
    import select

    s = socket.create_connection((HOST, port), timeout=wait)
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nTransfer-Encoding: chunked\r\n"
               "Content-Type: multipart/form-data; boundary=B\r\n\r\n").encode())
    start = f'--B\r\nContent-Disposition: form-data; name="{part}"; filename="x"\r\n\r\n'.encode()
    s.sendall(b"%x\r\n%s\r\n" % (len(start), start))
    block = bytes(256 * 1024)
    chunk = b"%x\r\n%s\r\n" % (len(block), block)
    sent = 0
    try:
        while sent < total and (stall_after is None or sent < stall_after):
            if select.select([s], [], [], 0)[0]:
                break  # the server answered (a refusal): stop sending
            s.sendall(chunk)
            sent += len(block)
        if stall_after is None and sent >= total:
            end = b"\r\n--B--\r\n"
            s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(end), end))
    except OSError:
        pass
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in data and (more := s.recv(4096)):
            data += more
    s.close()
    return (int(data[9:12]) if data.startswith(b"HTTP/1.") else 0), sent


# -- test inputs -------------------------------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    """A black PNG of ``width`` x ``height``: a few hundred KB declaring gigabytes of pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def short_wav(seconds: float = 0.6, rate: int = 16000) -> bytes:
    """A tone: enough audio for a job to be accepted."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8)))
                               for i in range(int(seconds * rate))))
    return buf.getvalue()


def portrait() -> bytes:
    return (resources.files("facetalk") / "assets" / "astronaut.png").read_bytes()


# -- the server and the samplers ------------------------------------------------------------
@dataclass
class Bucket:
    """What the samplers saw during one attack."""

    rss: int = 0
    helpers_rss: int = 0
    disk: int = 0
    healthz_ms: float = 0.0
    healthz_n: int = 0
    healthz_bad: int = 0
    control_ms: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def p99(self) -> float:
        """The 99th percentile /healthz latency (ms)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


@dataclass
class Probe:
    root: Path
    port: int
    headroom: int
    control_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    current: Bucket = field(default_factory=Bucket)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def tmpdir(self) -> Path:
        return self.root / "systmp"

    def start(self, extra: list[str]) -> None:
        self.storage.mkdir(parents=True)
        self.tmpdir.mkdir()
        free_mb = shutil.disk_usage(self.root).free // 2**20
        reserve = max(1, free_mb - self.headroom // 2**20)
        env = {**os.environ, "TMPDIR": str(self.tmpdir)}
        cmd = [sys.executable, "-m", "facetalk.cli", "serve", "--host", HOST, "--port", str(self.port),
               "--storage", str(self.storage), "--workers", "1", "--min-free-disk-mb", str(reserve), *extra]
        self.log = open(self.root / "server.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if request(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                break
            time.sleep(0.3)
        else:
            raise SystemExit("the server did not become ready in 120 s")
        for target in (self._sample_memory_disk, self._sample_healthz):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        for helper in getattr(self, "helpers", []):
            helper.kill()
            helper.wait(5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def errors_in_log(self) -> int:
        return (self.root / "server.log").read_text(errors="replace").count('"unhandled error"')

    def _sample_memory_disk(self) -> None:
        assert self.proc is not None
        while not self.stop.is_set():
            tree = process_tree(self.proc.pid)
            api = rss_bytes([self.proc.pid])
            helpers = rss_bytes(p for p in tree if p != self.proc.pid)
            disk = _du(self.storage) + _du(self.tmpdir)
            b = self.current
            b.rss, b.helpers_rss, b.disk = max(b.rss, api), max(b.helpers_rss, helpers), max(b.disk, disk)
            time.sleep(0.05)

    def _sample_healthz(self) -> None:
        """Read the timer process's lines (``status ms control_ms``). It runs apart, so the
        attacks' threads in this process do not inflate what it measures; each tick it also
        times a bare asyncio server (the control), whose latency is the box's own noise."""
        control = subprocess.Popen([sys.executable, "-c", CONTROL_SERVER, str(self.control_port)])
        timer = subprocess.Popen([sys.executable, "-c", TIMER, str(self.port), str(self.control_port),
                                  str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
        self.helpers = [control, timer]
        assert timer.stdout is not None
        for line in timer.stdout:
            if self.stop.is_set():
                break
            status, ms, control_ms = line.split()
            b = self.current
            b.healthz_ms, b.healthz_n = max(b.healthz_ms, float(ms)), b.healthz_n + 1
            b.healthz_bad += status != "200"
            b.latencies.append(float(ms))
            b.control_ms = max(b.control_ms, float(control_ms))


#: A bare asyncio HTTP responder: the control for /healthz latency on a busy box.
CONTROL_SERVER = """
import asyncio, sys
async def handle(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok")
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""
#: Times GET /healthz (and the control) on fresh connections every ~50 ms.
TIMER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from probe import request
def timed(port, path):
    t0 = time.perf_counter()
    status, _ = request(port, "GET", path, timeout=5)
    return status, (time.perf_counter() - t0) * 1000
while True:
    status, ms = timed(int(sys.argv[1]), "/healthz")
    _, control_ms = timed(int(sys.argv[2]), "/")
    print(status, round(ms, 2), round(control_ms, 2), flush=True)
    time.sleep(max(0.0, 0.05 - ms / 1000))
"""


def _du(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# -- the attacks -------------------------------------------------------------------------------
#: (name, owner item of issue 22, function(probe) -> (result text, passed?))
Attack = Callable[["Probe"], tuple[str, bool]]
ATTACKS: list[tuple[str, str, Attack]] = []


def attack(name: str, item: str) -> Callable[[Attack], Attack]:
    def register(fn: Attack) -> Attack:
        ATTACKS.append((name, item, fn))
        return fn
    return register


@attack("baseline", "-")
def baseline(p: Probe) -> tuple[str, bool]:
    """Nothing but the samplers for 5 s: the box's own noise (it may be shared)."""
    time.sleep(5)
    return f"idle 5 s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", True


@functools.cache
def verify_bomb_png() -> bytes:
    """Made once before the server starts: compressing it takes seconds of the probe's CPU."""
    return png_bomb(16000, 16000)


@attack("verify_bomb", "1")
def verify_bomb(p: Probe) -> tuple[str, bool]:
    bomb = verify_bomb_png()
    body, ctype = multipart({"video": ("bomb.png", bomb)})
    status, _ = request(p.port, "POST", "/v1/verify", body, {"Content-Type": ctype})
    return f"16000x16000 PNG ({len(bomb) // 1024} KB): {status}", 400 <= status < 500


@attack("huge_duration", "2")
def huge_duration(p: Probe) -> tuple[str, bool]:
    codes = []
    for value in ("36000", "1e308"):
        body, ctype = multipart({"portrait": ("p.png", portrait()), "audio": ("a.wav", short_wav())},
                                {"duration": value, "min_resolution": "256"})
        codes.append(request(p.port, "POST", "/v1/jobs", body, {"Content-Type": ctype})[0])
    return f"duration=36000: {codes[0]}, 1e308: {codes[1]}", all(400 <= c < 500 for c in codes)


@attack("idle_sockets", "3")
def idle_sockets(p: Probe, count: int = 300, tricklers: int = 20, seconds: float = 13.0) -> tuple[str, bool]:
    """300 silent sockets kept open (reopened when the server closes them) and 20 that send
    a header byte every 0.5 s, for longer than the default 10 s head deadline."""
    idle = [socket.create_connection((HOST, p.port)) for _ in range(count)]
    slow = [socket.create_connection((HOST, p.port)) for _ in range(tricklers)]
    for s in slow:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed_idle, cut_slow, statuses = 0, set(), []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for i, s in enumerate(slow):
            if i in cut_slow:
                continue
            try:
                s.sendall(b"X")
            except OSError:
                cut_slow.add(i)
        for i, s in enumerate(idle):
            s.setblocking(False)
            try:
                gone = s.recv(4096) is not None
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:  # closed by the server (408): keep 300 open
                closed_idle += 1
                s.close()
                idle[i] = socket.create_connection((HOST, p.port))
        statuses.append(request(p.port, "GET", "/v1/jobs?limit=1", timeout=10)[0])
        time.sleep(0.5)
    for s in idle + slow:
        s.close()
    ok_share = statuses.count(200) / max(1, len(statuses))
    text = (f"{count} idle held {seconds:.0f} s: {closed_idle} closed by server; "
            f"{len(cut_slow)}/{tricklers} tricklers cut; GET /v1/jobs 200 x{statuses.count(200)}"
            f"/{len(statuses)}")
    return text, ok_share == 1.0 and len(cut_slow) == tricklers and closed_idle >= count


@attack("avatar_big", "4")
def avatar_big(p: Probe) -> tuple[str, bool]:
    status, sent = stream_upload(p.port, "/v1/avatars", "portrait", 300 * 2**20)
    return f"300 MB portrait: {status} after {sent / 2**20:.0f} MB sent", 400 <= status < 500


@attack("say_big_body", "5")
def say_big_body(p: Probe) -> tuple[str, bool]:
    body = b'{"text": "' + b"a" * (64 * 2**20) + b'"}'
    status, _ = request(p.port, "POST", "/v1/say", body, {"Content-Type": "application/json"})
    return f"64 MB JSON body: {status}", status == 413


@attack("say_60_concurrent", "5")
def say_concurrent(p: Probe, n: int = 60) -> tuple[str, bool]:
    body = json.dumps({"text": "Maybe by Monday, if you can. Thank you, and goodbye."}).encode()
    status_ms: list[float] = []

    def one(_: int) -> int:
        return request(p.port, "POST", "/v1/say", body, {"Content-Type": "application/json"}, 120)[0]

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        while not all(f.done() for f in futures):
            t0 = time.perf_counter()
            request(p.port, "GET", "/v1/jobs?limit=1", timeout=30)
            status_ms.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.2)
        codes = [f.result() for f in futures]
    worst = max(status_ms, default=0.0)
    summary = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
    return f"{n} says: {summary}; GET /v1/jobs max {worst:.0f} ms", worst < 1000 and 0 not in codes


@attack("stalled_uploads", "6")
def stalled_uploads(p: Probe, n: int = 8) -> tuple[str, bool]:
    """8 uploads that send 16 MB each, then nothing (refused after --upload-idle-timeout)."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: stream_upload(p.port, "/v1/jobs", "portrait", 2**31,
                                                        stall_after=16 * 2**20, wait=90), range(n)))
    codes = [r[0] for r in results]
    left = _du(p.storage / "tmp")
    summary = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
    return (f"{n} stalled: {summary} after {time.monotonic() - t0:.0f} s; tmp left {left // 1024} KB",
            all(c == 408 for c in codes) and left == 0)


@attack("parallel_disk_fill", "6")
def parallel_disk_fill(p: Probe, n: int = 6, each: int = 150 * 2**20) -> tuple[str, bool]:
    """6 parallel 150 MB uploads (each under the 200 MB file limit) against the headroom."""
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: stream_upload(p.port, "/v1/jobs", "portrait", each), range(n)))
    codes = [r[0] for r in results]
    summary = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
    return (f"{n} x {each // 2**20} MB vs {p.headroom // 2**20} MB headroom: {summary}",
            507 in codes and 0 not in codes)


@attack("odd_inputs", "9")
def odd_inputs(p: Probe) -> tuple[str, bool]:
    files = {"portrait": ("p.png", portrait()), "audio": ("a.wav", short_wav())}
    deep, dctype = multipart(files, {"options": "[" * 100_000 + "]" * 100_000})
    bigint, bctype = multipart(files, {"options": '{"seed": ' + "9" * 5000 + "}"})
    charset, cctype = multipart(files, {"seed": "1"})
    checks = {
        "deep JSON": request(p.port, "POST", "/v1/jobs", deep, {"Content-Type": dctype})[0],
        "5000-digit int": request(p.port, "POST", "/v1/jobs", bigint, {"Content-Type": bctype})[0],
        "charset=rot13": request(p.port, "POST", "/v1/jobs", charset,
                                 {"Content-Type": cctype + "; charset=rot13"})[0],
        "huge cursor": request(p.port, "GET", "/v1/jobs?cursor=" + "9" * 40)[0],
        "lone surrogate say": request(p.port, "POST", "/v1/say", b'{"text": "\\ud800"}',
                                      {"Content-Type": "application/json"})[0],
    }
    text = "; ".join(f"{k} {v}" for k, v in checks.items())
    # An unknown charset falls back to UTF-8, so that request may be accepted (202): what
    # matters is that no odd input is an internal error.
    return text, all(400 <= v < 500 or (k == "charset=rot13" and v == 202) for k, v in checks.items())


@attack("paths_in_errors", "10")
def paths_in_errors(p: Probe) -> tuple[str, bool]:
    body, ctype = multipart({"portrait": ("p.png", b""), "audio": ("a.wav", short_wav())})
    status, resp = request(p.port, "POST", "/v1/jobs", body, {"Content-Type": ctype})
    leaked = str(p.root).encode() in resp
    return f"0-byte portrait: {status}, server path in message: {'yes' if leaked else 'no'}", not leaked


@attack("cross_site", "8")
def cross_site(p: Probe) -> tuple[str, bool]:
    body, ctype = multipart({"video": ("x.mp4", b"not a video")})
    post = request(p.port, "POST", "/v1/verify", body,
                   {"Content-Type": ctype, "Origin": "http://evil.example"})[0]
    rebind = request(p.port, "GET", "/v1/jobs", headers={"Host": "evil.example"})[0]
    return (f"POST with Origin evil.example: {post}; GET /v1/jobs with Host evil.example: {rebind}",
            post == 403 and rebind in (400, 403, 421))


@attack("docs_cdn_info", "11,13")
def docs_cdn_info(p: Probe) -> tuple[str, bool]:
    docs = request(p.port, "GET", "/docs")[1]
    cdn = b"cdn.jsdelivr" in docs or b"unpkg.com" in docs
    ready = request(p.port, "GET", "/readyz")[1]
    pids = b"worker_pids" in ready
    return (f"/docs loads a CDN: {'yes' if cdn else 'no'}; /readyz shows pids: {'yes' if pids else 'no'}",
            not cdn)


@attack("live_idle_sessions", "7")
def live_idle_sessions(p: Probe, n: int = 20) -> tuple[str, bool]:
    try:
        from websockets.sync.client import connect
    except ImportError:
        return "skipped (no websockets package)", True
    body, ctype = multipart({"portrait": ("p.png", portrait())})
    status, resp = request(p.port, "POST", "/v1/avatars", body, {"Content-Type": ctype}, 120)
    if status != 201:
        return f"avatar: {status}", False
    avatar = json.loads(resp)["id"]
    opened, refused = 0, 0
    with contextlib.ExitStack() as sessions:
        for _ in range(n + 5):
            try:
                ws = sessions.enter_context(
                    connect(f"ws://{HOST}:{p.port}/v1/stream?avatar={avatar}", open_timeout=10))
                ws.recv(timeout=5)  # the session's first message (or its close)
                opened += 1
            except Exception:
                refused += 1
        time.sleep(2)  # idle sessions held open: does the server keep rendering for them?
    return f"{n + 5} idle sessions: {opened} open, {refused} refused", refused > 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma separated attack names")
    ap.add_argument("--headroom-mb", type=int, default=300,
                    help="disk the server may fill above its free-disk reserve (default 300)")
    ap.add_argument("--keep", action="store_true", help="keep the probe's folder (server log)")
    ap.add_argument("serve_args", nargs="*", help="extra flags for facetalk serve (after --)")
    args = ap.parse_args()
    chosen = set(args.only.split(",")) if args.only else None
    root = Path(tempfile.mkdtemp(prefix="facetalk-probe-"))
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind((HOST, 0))
            ports.append(s.getsockname()[1])
    probe = Probe(root, ports[0], args.headroom_mb * 2**20, ports[1])
    rows = []
    failed = False
    t_start = time.monotonic()
    if not chosen or "verify_bomb" in chosen:
        verify_bomb_png()
    try:
        probe.start(args.serve_args)
        for name, item, fn in ATTACKS:
            if chosen and name not in chosen:
                continue
            probe.current = bucket = Bucket()
            errors_before = probe.errors_in_log()
            t0 = time.monotonic()
            try:
                text, ok = fn(probe)
            except Exception as exc:
                text, ok = f"probe error: {type(exc).__name__}: {exc}", False
            time.sleep(0.3)  # let the samplers see the aftermath
            bucket = probe.current
            errors = probe.errors_in_log() - errors_before
            limits_ok = (bucket.rss <= RSS_LIMIT and bucket.disk <= probe.headroom + 16 * 2**20
                         and bucket.healthz_ms <= HEALTHZ_LIMIT_MS and bucket.healthz_bad == 0)
            failed |= not limits_ok or not ok
            rows.append((name, item, text + (f"; {errors} server 500s" if errors else ""),
                         bucket, time.monotonic() - t0, ok, limits_ok))
            print(f"  done {name} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    finally:
        probe.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("| attack | item | result | API RSS MB | helpers MB | disk MB | /healthz max / p99 ms (n, bad) "
          "| control max ms | verdict |\n|---|---|---|---|---|---|---|---|---|")
    for name, item, text, b, _secs, ok, limits_ok in rows:
        verdict = ("ok" if ok else "FAIL") + ("" if limits_ok else " + LIMITS")
        print(f"| {name} | {item} | {text} | {b.rss / 2**20:.0f} | {b.helpers_rss / 2**20:.0f} | "
              f"{b.disk / 2**20:.0f} | {b.healthz_ms:.0f} / {b.p99():.0f} ({b.healthz_n}, {b.healthz_bad}) "
              f"| {b.control_ms:.0f} | {verdict} |")
    print(f"\nlimits: API RSS <= {RSS_LIMIT / 2**20:.0f} MB, disk <= {probe.headroom / 2**20:.0f} MB "
          f"headroom (+16 MB), /healthz <= {HEALTHZ_LIMIT_MS:.0f} ms; "
          f"total {time.monotonic() - t_start:.0f} s"
          + (f"; server log kept in {root}" if args.keep else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
