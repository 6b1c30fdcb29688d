"""Helpers for tests of the HTTP service: server and worker processes, job submission and polling."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import httpx
from starlette.testclient import TestClient

from facetalk.measure.procs import process_tree
from facetalk.service.jobs.store import CANCELLED, FAILED, SUCCEEDED

TINY = {"min_resolution": "256", "inference_steps": "5"}
#: The in-process clients' base URL: a Host the service answers to ("testserver" is not one).
LOCAL = "http://127.0.0.1"


class LocalClient(TestClient):
    """Starlette's TestClient addressing the service as ``127.0.0.1``: the service refuses
    other Host names without API keys (DNS rebinding), and ``websocket_connect`` ignores
    ``base_url`` (it always says ``testserver``), so its Host is set here too."""

    def __init__(self, app: Any, **kw: Any) -> None:
        kw.setdefault("base_url", LOCAL)
        super().__init__(app, **kw)

    def websocket_connect(self, url: str, *args: Any, **kw: Any) -> Any:
        kw["headers"] = {"host": "127.0.0.1", **(kw.get("headers") or {})}
        return super().websocket_connect(url, *args, **kw)


# -- helpers --------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs; returns the ones still alive at the timeout."""
    end = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


class ChildProcess:
    """A facetalk command run as a child process, its output in a log file."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path

    def start(self) -> ChildProcess:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> int | None:
        raise NotImplementedError

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tree(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def _end(self, timeout: float, force: Any) -> int:
        """SIGTERM and wait; ``force()`` if it does not stop; every descendant is gone after."""
        assert self.proc is not None
        tree = self.tree()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            force()
            code = self.proc.wait(10)
        for pid in wait_gone(tree, 10.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return code

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Server(ChildProcess):
    """``facetalk serve`` as a real process on a free loopback port."""

    def __init__(self, storage: Path, *args: str, port: int | None = None,
                 env: dict[str, str] | None = None, api_key: str | None = None) -> None:
        self.storage = storage
        self.args = args
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.env.pop("FACETALK_DEBUG", None)
        self.api_key = api_key
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = storage.parent / f"server-{storage.name}-{self.port}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kw: Any) -> httpx.Client:
        """An HTTP client for this server (with the API key, if any)."""
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=60.0, **kw)

    def start(self, timeout: float = 90.0) -> Server:
        cmd = [sys.executable, "-m", "facetalk.cli", "serve", "--port", str(self.port),
               "--storage", str(self.storage), *self.args]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.base + "/readyz", headers=self.headers, timeout=2.0)
                if r.status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def kill9(self) -> list[int]:
        """SIGKILL the server process only (its workers are left to notice); their pids."""
        assert self.proc is not None
        children = [p for p in self.tree() if p != self.proc.pid]
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return children

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop; every descendant is gone after."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        return self._end(timeout, self.proc.kill)


def submit(client: httpx.Client, portrait: bytes, audio: bytes, **fields: str) -> httpx.Response:
    """POST /v1/jobs with the two files and form fields."""
    return client.post("/v1/jobs", files={"portrait": ("face.png", portrait, "image/png"),
                                          "audio": ("speech.wav", audio, "audio/wav")},
                       data=fields)


def wait_for(client: Any, job_id: str, states: tuple[str, ...] = (SUCCEEDED, FAILED, CANCELLED),
             timeout: float = 120.0, pred: Any = None) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until its status is in ``states`` (and ``pred(job)`` holds)."""
    end = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < end:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in states and (pred is None or pred(job)):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s: {job}")


def decode_mp4(data: bytes) -> dict[str, Any]:
    """Decode every video frame and report what the MP4 holds."""
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        has_audio = bool(c.streams.audio)
        meta = dict(c.metadata)
        return {"frames": frames, "width": v.codec_context.width,
                "height": v.codec_context.height, "audio": has_audio, "metadata": meta}


def stream_until_refused(port: int, path: str, part: str, total: int,
                         headers: dict[str, str] | None = None) -> tuple[bytes, int]:
    """POST a chunked multipart body to ``path`` whose file part ``part`` would be ``total``
    bytes, sending until the server answers; return (response, bytes of file data sent)."""
    import select

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
            "Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    start = (f"--BOUNDARY\r\nContent-Disposition: form-data; name=\"{part}\"; "
             "filename=\"huge.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    sock.sendall(head + b"%x\r\n%s\r\n" % (len(start), start))
    block = b"\0" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(block), block)
    sent, response = 0, b""
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return response, sent
