"""Helpers for the service tests (a real server process, media, polling) and unit tests
of the pieces without HTTP: settings, the SQLite job store, import hygiene.

The other ``test_service_*`` files import the helpers from here.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from facetalk.errors import InvalidInput
from facetalk.service.settings import ServiceSettings, parse_duration
from facetalk.service.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, NewJob

TINY = {"min_resolution": "256", "inference_steps": "5"}


# -- helpers --------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def rss_bytes(pids: list[int]) -> int:
    """Summed resident memory of ``pids`` (those still alive)."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


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




# -- settings ------------------------------------------------------------------------------
def test_parse_duration_units() -> None:
    assert parse_duration("90", "x") == 90
    assert parse_duration("1.5m", "x") == 90
    assert parse_duration("24h", "x") == 86400
    assert parse_duration("7d", "x") == 7 * 86400
    assert parse_duration("250ms", "x") == pytest.approx(0.25)
    assert parse_duration(0, "x") == 0
    for bad in ("soon", "-5", "5 weeks", ""):
        with pytest.raises(InvalidInput):
            parse_duration(bad, "x")


def test_settings_precedence_cli_over_env_over_default(tmp_path: Path) -> None:
    env = {"FACETALK_PORT": "9001", "FACETALK_WORKERS": "3", "FACETALK_RETENTION": "2h",
           "FACETALK_API_KEYS": "key-one-123, key-two-456", "FACETALK_MAX_INPUT_BYTES": "1000"}
    s = ServiceSettings.load({"port": 9002, "storage": tmp_path}, env)
    assert s.port == 9002 and s.workers == 3 and s.retention == 7200
    assert s.api_keys == ("key-one-123", "key-two-456")
    assert s.limits.max_input_bytes == 1000  # the engine's own limits, from the same env
    assert s.host == "127.0.0.1"  # loopback unless told otherwise
    d = ServiceSettings.load({}, {})
    assert d.job_timeout is None and d.max_queued == 50 and d.retention == 86400


def test_settings_refuse_nonsense() -> None:
    for bad in ({"workers": 0}, {"port": 70000}, {"max_queued": 0}, {"api_keys": ("short",)},
                {"job_timeout": "-1"}, {"workers": "many"}):
        with pytest.raises(InvalidInput):
            ServiceSettings.load(bad, {})


def test_auto_timeout_grows_with_length_and_pixels() -> None:
    s = ServiceSettings()
    assert s.timeout_for(10, 512) < s.timeout_for(60, 512) < s.timeout_for(60, 1024)
    assert ServiceSettings(job_timeout=5).timeout_for(600, 2048) == 5


# -- the job store --------------------------------------------------------------------------
def _new(i: int) -> NewJob:
    return NewJob(id=f"{i:032x}", options={"min_resolution": 256}, inputs={}, video_seconds=1.0,
                  timeout_s=60.0, client="127.0.0.1")


def test_store_bounded_under_concurrent_inserts(tmp_path: Path) -> None:
    """20 threads race to insert 100 jobs into a queue of 30: exactly 30 get in."""
    store = JobStore(tmp_path / "jobs.db")
    accepted, refused = [], []
    lock = threading.Lock()

    def run(k: int) -> None:
        for i in range(5):
            try:
                store.insert(_new(k * 100 + i), max_queued=30)
                with lock:
                    accepted.append(1)
            except OverflowError:
                with lock:
                    refused.append(1)
        store.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 30 and len(refused) == 70
    assert store.counts()[QUEUED] == 30


def test_store_fifo_attempts_and_audit(tmp_path: Path) -> None:
    events: list[tuple[str, str | None, str]] = []
    store = JobStore(tmp_path / "jobs.db", on_change=lambda j, prev, _: events.append(
        (j.id, prev, j.status)))
    for i in range(3):
        store.insert(_new(i), 10)
    assert store.get(_new(2).id).queue_position == 2
    first = store.claim_next()
    assert first is not None and first.id == _new(0).id and first.attempts == 1
    assert store.get(_new(2).id).queue_position == 1
    store.requeue(first.id, reason="crash")
    again = store.claim_next()
    assert again is not None and again.id == first.id and again.attempts == 2
    done = store.finish(again.id, SUCCEEDED, result={"frames": 7})
    assert done is not None and done.frames_done == 7 and done.progress == 1.0
    assert store.finish(again.id, FAILED) is None  # a final job never changes again
    assert [e[2] for e in events] == [QUEUED, QUEUED, QUEUED, RUNNING, QUEUED, RUNNING, SUCCEEDED]
    assert store.delete(again.id) and store.get(again.id) is None
    assert not store.delete(_new(1).id)  # queued: not deletable, only cancellable


def test_store_finish_drops_inputs_in_the_same_transaction(tmp_path: Path) -> None:
    """Retention 0: readers see either (running, inputs kept) or (final, inputs deleted)."""
    store = JobStore(tmp_path / "jobs.db")
    store.insert(_new(0), 10)
    job = store.claim_next()
    assert job is not None
    seen: list[tuple[str, float | None]] = []

    def drop() -> None:  # a second connection reads while the files are being deleted
        other = JobStore(tmp_path / "jobs.db")
        mid = other.get(job.id)
        assert mid is not None
        seen.append((mid.status, mid.inputs_deleted_at))
        other.close()

    done = store.finish(job.id, SUCCEEDED, result={"frames": 3}, drop_inputs=drop)
    assert seen == [(RUNNING, None)]
    assert done is not None and done.status == SUCCEEDED and done.inputs_deleted_at is not None
    called: list[int] = []
    assert store.finish(job.id, FAILED, drop_inputs=lambda: called.append(1)) is None
    assert called == []  # a job that does not move keeps its files


def test_importing_facetalk_does_not_import_the_web_stack() -> None:
    code = ("import sys, facetalk, facetalk.options, facetalk.settings; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'prometheus_client', "
            "'facetalk.service.app') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_worker_module_does_not_import_the_web_stack() -> None:
    """Render processes import facetalk.service.worker: it must stay free of the web stack."""
    code = ("import sys, facetalk.service.worker; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validator_pool_survives_a_dead_helper(tmp_path: Path, astronaut_path: Path,
                                               short_speech: Path) -> None:
    """A decoder process that dies mid-request costs that request a 415, nothing more."""
    from facetalk.errors import UnsupportedMedia
    from facetalk.service.validator import ValidatorPool
    from facetalk.settings import Limits

    pool = ValidatorPool(1, Limits())
    pool.start()
    try:
        facts = pool.inspect(astronaut_path, short_speech)
        assert facts["portrait"] == {"width": 512, "height": 512}
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(UnsupportedMedia):
            pool.inspect(astronaut_path, short_speech)
        assert pool.pids() != [pid] and not alive(pid)
        assert pool.inspect(astronaut_path, short_speech) == facts  # the new helper works
    finally:
        helpers = pool.pids()
        pool.stop()
    assert wait_gone(helpers, 5.0) == []
